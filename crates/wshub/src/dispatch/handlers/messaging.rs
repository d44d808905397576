//! Messages between clients: to a room, to one client, to everyone.
//!
//! Each publication is encoded and framed once; the hub queues the same bytes to every
//! recipient. The sender is excluded from its own room message and broadcast (GoHub).

use std::sync::Arc;

use wshub_protocol::MessageType;
use wshub_protocol::messages::{
    BroadcastRequest, DirectMessageRequest, Published, RoomMessageOut, RoomMessageRequest,
};

use crate::conn::ConnHandle;
use crate::dispatch::{HandlerResult, Reply};
use crate::hub::HubError;
use crate::node::Node;
use crate::webhooks::EventKind;

/// Only members may post to a room (3003 otherwise): a room's traffic is for its members.
/// Servers publish to rooms they are not in through the HTTP API or the SDK.
pub(super) async fn room_message(
    node: &Arc<Node>,
    conn: &Arc<ConnHandle>,
    req: RoomMessageRequest<'_>,
    request_id: Option<i64>,
) -> HandlerResult {
    match node.hub.is_member(&req.room_id, conn) {
        Ok(true) => {}
        Ok(false) => return Err(HubError::NotInRoom.into()),
        Err(e) => return Err(node.not_here(&req.room_id, e).await.into()),
    }
    let published = node
        .publish_room_message(
            &req.room_id,
            MessageType::RoomMessage.as_str(),
            &RoomMessageOut {
                content: req.content,
                room_id: &req.room_id,
                sender_id: conn.client_id.as_str(),
                timestamp: wshub_protocol::now_millis(),
            },
            Some(conn),
            req.idempotency_key.as_deref(),
        )
        .await?;
    node.webhook(EventKind::RoomMessage, conn.client_id.as_str(), |mut e| {
        e.content = serde_json::value::to_raw_value(&req.content).ok();
        e.offset = published.position.as_ref().map(|p| p.offset);
        e.in_room(&req.room_id)
    });
    // GoHub sends nothing back for a room message; a client that sets `request_id` gets an
    // ack once the publication is stored (with its offset when the room keeps history).
    if request_id.is_none() {
        return Ok(None);
    }
    let (offset, epoch) = published
        .position
        .map_or((None, None), |p| (Some(p.offset), Some(p.epoch)));
    Reply::of(
        MessageType::Published,
        &Published {
            room_id: req.room_id,
            offset,
            epoch,
        },
    )
    .map(Some)
}

pub(super) async fn direct_message(
    node: &Node,
    conn: &ConnHandle,
    req: DirectMessageRequest<'_>,
) -> HandlerResult {
    let frame = node.hub.sender_frame(
        MessageType::DirectMessage,
        req.content,
        conn.client_id.as_str(),
    )?;
    node.publish_direct(&req.target_id, frame).await?;
    Ok(None)
}

pub(super) async fn broadcast(
    node: &Node,
    conn: &ConnHandle,
    req: BroadcastRequest<'_>,
) -> HandlerResult {
    let frame =
        node.hub
            .sender_frame(MessageType::Broadcast, req.content, conn.client_id.as_str())?;
    node.publish_broadcast(frame, Some(conn)).await?;
    Ok(None)
}

//! Room membership and the room registry: join, leave, create, delete, list, members.

use std::sync::Arc;

use wshub_protocol::MessageType;
use wshub_protocol::messages::{
    CreateRoomRequest, RoomCreated, RoomDeleted, RoomList, RoomMembers, RoomRequest, RoomStatus,
};

use crate::conn::ConnHandle;
use crate::dispatch::{HandlerResult, Reply};
use crate::ids::RoomId;
use crate::node::Node;
use crate::sdk::Client;

pub(super) async fn join(
    node: &Arc<Node>,
    conn: &Arc<ConnHandle>,
    req: RoomRequest,
) -> HandlerResult {
    let room = RoomId::from(req.room_id);
    // Subscribed to the room's traffic before the reply: the member gets everything published
    // after `room_joined`.
    node.join_room(&room, conn).await?;
    node.hooks
        .join(&Client::new(node.clone(), conn.clone()), room.as_str());
    status(MessageType::RoomJoined, room, "joined")
}

pub(super) async fn leave(
    node: &Arc<Node>,
    conn: &Arc<ConnHandle>,
    req: RoomRequest,
) -> HandlerResult {
    node.leave_room(&req.room_id, conn).await?;
    node.hooks
        .leave(&Client::new(node.clone(), conn.clone()), &req.room_id);
    status(MessageType::RoomLeft, RoomId::from(req.room_id), "left")
}

fn status(t: MessageType, room: RoomId, status: &str) -> HandlerResult {
    Reply::of(
        t,
        &RoomStatus {
            room_id: room.to_string(),
            status: status.to_owned(),
        },
    )
    .map(Some)
}

pub(super) async fn create(node: &Node, req: CreateRoomRequest) -> HandlerResult {
    let info = node
        .create_room(RoomId::from(req.room_id), req.name, req.max_clients)
        .await?;
    Reply::of(
        MessageType::RoomCreated,
        &RoomCreated {
            room_id: info.id,
            name: info.name,
            max_clients: info.max_clients,
        },
    )
    .map(Some)
}

pub(super) async fn delete(node: &Node, conn: &ConnHandle, req: RoomRequest) -> HandlerResult {
    node.delete_room(&req.room_id, Some(conn)).await?;
    Reply::of(
        MessageType::RoomDeleted,
        &RoomDeleted {
            room_id: req.room_id,
        },
    )
    .map(Some)
}

pub(super) async fn list(node: &Node) -> HandlerResult {
    Reply::of(
        MessageType::RoomList,
        &RoomList {
            rooms: node.list_rooms().await?,
        },
    )
    .map(Some)
}

pub(super) async fn members(node: &Node, req: RoomRequest) -> HandlerResult {
    let members = node.room_members(&req.room_id).await?;
    Reply::of(
        MessageType::RoomMembers,
        &RoomMembers {
            room_id: req.room_id,
            members,
        },
    )
    .map(Some)
}

/// Removes another member from a room (`admin:room`), on whatever node it is; the member
/// gets `kicked`.
pub(super) async fn kick(
    node: &Arc<Node>,
    conn: &ConnHandle,
    req: wshub_protocol::messages::KickRequest,
) -> HandlerResult {
    let notice = node.hub.frame(
        MessageType::Kicked.as_str(),
        &wshub_protocol::messages::KickedNotice {
            room_id: req.room_id.clone(),
            by: conn.client_id.to_string(),
        },
        None,
    )?;
    node.kick(&req.room_id, &req.client_id, notice).await?;
    Reply::of(
        MessageType::Kicked,
        &serde_json::json!({ "room_id": req.room_id, "client_id": req.client_id }),
    )
    .map(Some)
}

//! Room membership and the room registry: join, leave, create, delete, list, members.

use std::sync::Arc;

use wshub_protocol::messages::{
    CreateRoomRequest, HistoryRequest, JoinRoomRequest, RoomCreated, RoomDeleted, RoomJoined,
    RoomList, RoomMembers, RoomRequest, RoomStatus,
};
use wshub_protocol::{ErrorCode, MessageType};

use crate::conn::ConnHandle;
use crate::dispatch::{HandlerError, HandlerResult, Reply};
use crate::history::Recovery;
use crate::ids::RoomId;
use crate::node::Node;
use crate::sdk::Client;
use crate::webhooks::{EventKind, JoinDecision};

pub(super) async fn join(
    node: &Arc<Node>,
    conn: &Arc<ConnHandle>,
    req: JoinRoomRequest,
) -> HandlerResult {
    let room = RoomId::from(req.room_id);
    let max_rooms = node.config().limits.max_rooms_per_client;
    if max_rooms > 0 && conn.room_list().len() >= max_rooms {
        node.hub
            .metrics
            .limited(crate::limits::Limit::RoomsPerClient);
        return Err(
            HandlerError::new(ErrorCode::Forbidden, "in too many rooms: leave one first")
                .with_details(serde_json::json!({ "max_rooms_per_client": max_rooms })),
        );
    }
    authorize_join(node, conn, room.as_str()).await?;
    let history = node.history_for_rooms();
    let recovering = history.is_some() && req.since.is_some();
    if recovering {
        // Live publications that arrive from now on wait until the missed ones are queued.
        conn.begin_recovery(room.as_str());
    }
    // Subscribed to the room's traffic before the reply: the member gets everything published
    // after `room_joined`.
    if let Err(e) = node.join_room(&room, conn).await {
        conn.abort_recovery(room.as_str());
        return Err(e.into());
    }
    node.hooks
        .join(&Client::new(node.clone(), conn.clone()), room.as_str());
    node.webhook(EventKind::Join, conn.client_id.as_str(), |e| {
        e.in_room(room.as_str())
    });
    let mut joined = RoomJoined {
        room_id: room.to_string(),
        status: "joined".to_owned(),
        recovered: None,
        epoch: None,
        offset: None,
    };
    if let Some(history) = history {
        let (epoch, latest) = match history.latest(room.as_str()).await {
            Ok(p) => (p.epoch, p.offset),
            Err(e) => {
                conn.abort_recovery(room.as_str());
                return Err(crate::fanout::PublishError::from(e).into());
            }
        };
        joined.epoch = Some(epoch);
        joined.offset = Some(latest);
        // What was published before the room's first member here is not this node's to
        // deliver (a `since` replays it per connection): the position check starts there.
        node.hub.start_position(room.as_str(), latest);
        if let Some(since) = req.since {
            let started = std::time::Instant::now();
            let recovered = history
                .recover(room.as_str(), since.offset, &since.epoch)
                .await;
            node.hub.metrics.history(
                crate::metrics::HistoryOp::Read,
                started.elapsed(),
                recovered.is_ok(),
            );
            match recovered {
                Ok(Recovery::Complete { publications, .. }) => {
                    let last = publications.last().map_or(since.offset, |p| p.offset);
                    let position = |offset| crate::history::Position {
                        offset,
                        epoch: joined.epoch.clone().unwrap_or_default(),
                    };
                    let frames: Vec<_> = publications
                        .iter()
                        .filter_map(|p| {
                            node.history_frame(&p.message_type, &p.data, &position(p.offset))
                                .ok()
                        })
                        .collect();
                    if let Some(first) = frames.first() {
                        node.hub.metrics.sent(first, frames.len());
                    }
                    conn.set_replay(room.as_str(), frames, last);
                    joined.recovered = Some(true);
                }
                Ok(Recovery::Impossible { .. }) | Err(_) => {
                    // Nothing to replay: live publications flow from the join on.
                    conn.set_replay(room.as_str(), Vec::new(), 0);
                    joined.recovered = Some(false);
                }
            }
        }
    } else if recovering {
        conn.abort_recovery(room.as_str());
    }
    Reply::of(MessageType::RoomJoined, &joined).map(Some)
}

/// Asks the application's `webhooks.authorize_join`, when there is one.
async fn authorize_join(node: &Node, conn: &ConnHandle, room: &str) -> Result<(), HandlerError> {
    let Some(webhooks) = node.webhooks.get() else {
        return Ok(());
    };
    match webhooks
        .authorize_join(conn.client_id.as_str(), room, conn.info())
        .await
    {
        None | Some(JoinDecision::Allow) => Ok(()),
        Some(JoinDecision::Deny(reason)) => Err(HandlerError::new(ErrorCode::Forbidden, reason)
            .with_details(serde_json::json!({ "room_id": room, "by": "authorize_join" }))),
        Some(JoinDecision::Unavailable(why)) => Err(HandlerError::new(
            ErrorCode::Timeout,
            "join authorization is unavailable; try again",
        )
        .with_details(why.into())),
    }
}

/// Stored publications of a room (`history {room_id, since?, limit?}`).
pub(super) async fn history(node: &Node, req: HistoryRequest) -> HandlerResult {
    let Some(history) = node.history_for_rooms() else {
        return Err(crate::dispatch::HandlerError::new(
            wshub_protocol::ErrorCode::Unknown,
            "this server keeps no room history (rooms.history.size is 0)",
        ));
    };
    if node
        .state()
        .room(&req.room_id)
        .await
        .map_err(crate::fanout::PublishError::from)?
        .is_none()
    {
        return Err(crate::hub::HubError::RoomNotFound.into());
    }
    let limit = req.limit.unwrap_or(100).min(1000);
    let (epoch, publications) = node
        .read_history(history, &req.room_id, req.since, limit)
        .await
        .map_err(crate::fanout::PublishError::from)?;
    let list: Vec<serde_json::Value> = publications
        .iter()
        .map(|p| {
            let position = crate::history::Position {
                offset: p.offset,
                epoch: epoch.clone(),
            };
            let data: serde_json::Value =
                serde_json::from_slice(&crate::history::with_position(&p.data, &position))
                    .unwrap_or_default();
            serde_json::json!({ "offset": p.offset, "message_type": p.message_type, "data": data })
        })
        .collect();
    Reply::of(
        MessageType::History,
        &serde_json::json!({ "room_id": req.room_id, "epoch": epoch, "publications": list }),
    )
    .map(Some)
}

pub(super) async fn leave(
    node: &Arc<Node>,
    conn: &Arc<ConnHandle>,
    req: RoomRequest,
) -> HandlerResult {
    node.leave_room(&req.room_id, conn).await?;
    node.hooks
        .leave(&Client::new(node.clone(), conn.clone()), &req.room_id);
    node.webhook(EventKind::Leave, conn.client_id.as_str(), |e| {
        e.in_room(&req.room_id)
    });
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

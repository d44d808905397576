//! The built-in handlers, one module per concern. Each declares the permission it needs;
//! [`run`] parses `data`, checks it (scoped to the request's room), then calls the handler.

mod authenticate;
mod messaging;
mod ping;
mod rooms;

pub(super) use authenticate::{AuthOutcome, authenticate};

use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;
use wshub_protocol::messages::{
    BroadcastRequest, CreateRoomRequest, DirectMessageRequest, HistoryRequest, JoinRoomRequest,
    KickRequest, PingRequest, RoomMessageRequest, RoomRequest,
};
use wshub_protocol::{ErrorCode, MessageType};

use super::{HandlerError, HandlerResult};
use crate::auth::{self, Permission};
use crate::conn::ConnHandle;
use crate::node::Node;

/// Runs the built-in handler of `t`; `None` when `t` is not something a client sends.
pub(super) async fn builtin(
    node: &Arc<Node>,
    conn: &Arc<ConnHandle>,
    t: MessageType,
    data: Option<&RawValue>,
    request_id: Option<i64>,
) -> Option<HandlerResult> {
    use MessageType as T;
    use Permission as P;
    // Parse `data` as the type, check the permission, then run the body.
    macro_rules! handle {
        ($perm:expr, |$r:ident: $ty:ty| $body:expr) => {
            match parse::<$ty>(conn, t, data, $perm) {
                Ok($r) => $body,
                Err(e) => Err(e),
            }
        };
    }
    let result = match t {
        T::Ping => handle!(None, |r: PingRequest| ping::ping(r)),
        T::JoinRoom => handle!(Some(P::JoinRoom), |r: JoinRoomRequest| rooms::join(node, conn, r).await),
        T::LeaveRoom => handle!(Some(P::LeaveRoom), |r: RoomRequest| rooms::leave(node, conn, r).await),
        T::CreateRoom => handle!(Some(P::CreateRoom), |r: CreateRoomRequest| rooms::create(node, r).await),
        T::DeleteRoom => handle!(Some(P::DeleteRoom), |r: RoomRequest| rooms::delete(node, conn, r).await),
        T::ListRooms => handle!(Some(P::ReadMessage), |_r: Empty| rooms::list(node).await),
        T::RoomMembers => handle!(Some(P::ReadMessage), |r: RoomRequest| rooms::members(node, r).await),
        T::History => handle!(Some(P::ReadMessage), |r: HistoryRequest| rooms::history(node, r).await),
        T::Kick => handle!(Some(P::AdminRoom), |r: KickRequest| rooms::kick(node, conn, r).await),
        T::RoomMessage => handle!(Some(P::SendMessage), |r: RoomMessageRequest| {
            messaging::room_message(node, conn, r, request_id).await
        }),
        T::DirectMessage => handle!(Some(P::SendMessage), |r: DirectMessageRequest| {
            messaging::direct_message(node, conn, r).await
        }),
        T::Broadcast => handle!(Some(P::BroadcastMessage), |r: BroadcastRequest| {
            messaging::broadcast(node, conn, r).await
        }),
        T::Pong
        | T::RoomJoined
        | T::RoomLeft
        | T::Error
        | T::Connected
        | T::RoomCreated
        | T::RoomDeleted
        | T::RoomList
        | T::Authenticated
        | T::Kicked
        | T::PresenceJoin
        | T::PresenceLeave
        | T::Published
        // Handled by dispatch itself: it can change who the connection is.
        | T::Authenticate => return None,
    };
    Some(result)
}

/// The request types, and the room each targets (for room-scoped permissions).
pub(super) trait Request {
    fn room(&self) -> Option<&str> {
        None
    }
}

#[derive(Deserialize)]
struct Empty {}

impl Request for Empty {}
impl Request for PingRequest {}
impl Request for DirectMessageRequest<'_> {}
impl Request for BroadcastRequest<'_> {}
impl Request for RoomRequest {
    fn room(&self) -> Option<&str> {
        Some(&self.room_id)
    }
}
impl Request for JoinRoomRequest {
    fn room(&self) -> Option<&str> {
        Some(&self.room_id)
    }
}
impl Request for HistoryRequest {
    fn room(&self) -> Option<&str> {
        Some(&self.room_id)
    }
}
impl Request for KickRequest {
    fn room(&self) -> Option<&str> {
        Some(&self.room_id)
    }
}
impl Request for CreateRoomRequest {
    fn room(&self) -> Option<&str> {
        Some(&self.room_id)
    }
}
impl Request for RoomMessageRequest<'_> {
    fn room(&self) -> Option<&str> {
        Some(&self.room_id)
    }
}

/// Parses `data` as `R` (error 1001 naming the problem) and checks `permission` for the
/// request's room (error 2001).
fn parse<'a, R: Deserialize<'a> + Request>(
    conn: &ConnHandle,
    t: MessageType,
    data: Option<&'a RawValue>,
    permission: Option<Permission>,
) -> Result<R, HandlerError> {
    let raw = data.map_or("{}", |d| d.get());
    let request: R = serde_json::from_str(raw).map_err(|e| {
        HandlerError::new(ErrorCode::InvalidFormat, format!("invalid data for {t}"))
            .with_details(wshub_protocol::json_error::describe(&e).into())
    })?;
    if let Some(room) = request.room() {
        super::validate_room_id(room)?;
    }
    if let Some(p) = permission {
        auth::authorize(&conn.permissions(), p, request.room())?;
    }
    Ok(request)
}

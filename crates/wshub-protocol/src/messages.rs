//! The `data` payload of each built-in message type.
//!
//! Inbound types (`*Request`) deny nothing unknown (clients may add fields); outbound types
//! serialize their fields in GoHub's order (Go marshals `map[string]any` with sorted keys, so
//! for GoHub's map payloads that is alphabetical order).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// `ping` in.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PingRequest {
    #[serde(default)]
    pub ts: i64,
}

/// `pong` out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pong {
    pub ts: i64,
    pub server_ts: i64,
    pub rtt: i64,
}

/// `join_room`, `leave_room`, `delete_room`, `room_members` in.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoomRequest {
    pub room_id: String,
}

/// `room_joined` / `room_left` out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomStatus {
    pub room_id: String,
    pub status: String,
}

/// `room_message` in. `content` is any JSON, kept raw.
#[derive(Debug, Serialize, Deserialize)]
pub struct RoomMessageRequest<'a> {
    pub room_id: String,
    #[serde(borrow)]
    pub content: &'a RawValue,
    /// Retries with the same key within `rooms.idempotency_window` are applied once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// A position in a room's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamPosition {
    pub offset: u64,
    pub epoch: String,
}

/// `join_room` in: `since` asks for the publications missed after that position.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinRoomRequest {
    pub room_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<StreamPosition>,
}

/// `room_joined` out. GoHub's two fields, then (for rooms with history) where the room is and
/// (with `since`) whether the missed publications follow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomJoined {
    pub room_id: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    /// The room's latest offset when joined (before any replay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

/// `published` out: the ack of a `room_message` sent with a `request_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Published {
    pub room_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
}

/// `history` in.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryRequest {
    pub room_id: String,
    #[serde(default)]
    pub since: Option<u64>,
    #[serde(default)]
    pub limit: Option<usize>,
}

/// `room_message` out.
#[derive(Debug, Serialize)]
pub struct RoomMessageOut<'a> {
    pub content: &'a RawValue,
    pub room_id: &'a str,
    pub sender_id: &'a str,
    pub timestamp: i64,
}

/// `direct_message` in.
#[derive(Debug, Serialize, Deserialize)]
pub struct DirectMessageRequest<'a> {
    pub target_id: String,
    #[serde(borrow)]
    pub content: &'a RawValue,
}

/// `direct_message` and `broadcast` out.
#[derive(Debug, Serialize)]
pub struct SenderContent<'a> {
    pub content: &'a RawValue,
    pub sender_id: &'a str,
    pub timestamp: i64,
}

/// `broadcast` in.
#[derive(Debug, Serialize, Deserialize)]
pub struct BroadcastRequest<'a> {
    #[serde(borrow)]
    pub content: &'a RawValue,
}

/// `connected` out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Connected {
    pub client_id: String,
    pub node_id: String,
}

/// `create_room` in.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateRoomRequest {
    pub room_id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub max_clients: Option<u32>,
}

/// `room_created` out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomCreated {
    pub room_id: String,
    pub name: String,
    pub max_clients: u32,
}

/// `room_deleted` out (to the requester and to every member).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomDeleted {
    pub room_id: String,
}

/// One room in `room_list`. `max_clients` 0 means unlimited.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomInfo {
    pub id: String,
    pub name: String,
    pub max_clients: u32,
    pub members: usize,
}

/// `room_list` out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomList {
    pub rooms: Vec<RoomInfo>,
}

/// One member in `room_members`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub client_id: String,
    /// The `info` claim of the member's token, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<serde_json::Value>,
}

/// `room_members` out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomMembers {
    pub room_id: String,
    pub members: Vec<Member>,
}

/// `authenticate` in.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthenticateRequest {
    pub token: String,
}

/// `authenticated` out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Authenticated {
    pub client_id: String,
    /// Unix seconds; `None` when the token has no `exp`.
    pub expires_at: Option<u64>,
}

/// `kick` in.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KickRequest {
    pub room_id: String,
    pub client_id: String,
}

/// `kicked` to the removed member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KickedNotice {
    pub room_id: String,
    pub by: String,
}

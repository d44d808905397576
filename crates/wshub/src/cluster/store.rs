//! The cluster state store: rooms, memberships (presence and cluster-wide `max_clients`),
//! which node each client is on, and live nodes.
//!
//! Three implementations: [`MemoryStateStore`](super::MemoryStateStore) (a single node, or
//! the nodes of one process on the local bus), [`RedisStateStore`](super::RedisStateStore)
//! (hashes + Lua), [`NatsStateStore`](super::NatsStateStore) (JetStream key-value buckets).
//!
//! Consistency: every write is atomic on its own in the store (a Lua script, a KV
//! create/compare-and-set, a mutex), so `join` with a limit admits exactly `max_clients`
//! clients however many nodes race. Reads are eventually consistent with other nodes' writes
//! only by the store's own replication (a single Redis or NATS server: immediately).

use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

/// A room as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomRecord {
    pub id: String,
    pub name: String,
    /// 0 = unlimited.
    pub max_clients: u32,
    /// Created by a join; removed when its last member leaves.
    pub auto_created: bool,
}

/// One member of a room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub client_id: String,
    pub node_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<serde_json::Value>,
}

/// A live node and its load, as its heartbeat last said.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub node_id: String,
    pub addr: String,
    pub version: String,
    pub clients: usize,
    pub rooms: usize,
    pub started_at_ms: i64,
    pub heartbeat_at_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinOutcome {
    Joined,
    AlreadyMember,
    Full,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("state store unavailable: {0}")]
    Unavailable(String),
    #[error("state store timed out")]
    Timeout,
    #[error("state store: {0}")]
    Other(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub trait StateStore: Send + Sync + 'static {
    /// Creates `room`; false when a room with its id exists.
    fn create_room(&self, room: RoomRecord) -> BoxFuture<'_, StoreResult<bool>>;
    fn room(&self, id: &str) -> BoxFuture<'_, StoreResult<Option<RoomRecord>>>;
    fn rooms(&self) -> BoxFuture<'_, StoreResult<Vec<RoomRecord>>>;
    /// Deletes a room and its memberships; returns the members it had (false/empty when there
    /// was no such room).
    fn delete_room(&self, id: &str) -> BoxFuture<'_, StoreResult<Option<Vec<MemberRecord>>>>;

    /// Deletes an auto-created room if it has no members, atomically with respect to joins
    /// (a join racing the deletion either keeps the room or finds it gone and recreates it).
    fn delete_room_if_empty(&self, id: &str) -> BoxFuture<'_, StoreResult<bool>>;

    /// Adds a member unless the room already has `max_clients` (0 = no limit), atomically.
    /// If the room was deleted meanwhile as empty, it is recreated from `room`.
    fn join<'a>(
        &'a self,
        room: &'a RoomRecord,
        member: MemberRecord,
    ) -> BoxFuture<'a, StoreResult<JoinOutcome>>;
    /// Removes `client`'s membership if it is held by `node`; false if it held none.
    ///
    /// It does not say whether the room is now empty: counting is a scan of the room on some
    /// stores, and the node knows without asking whether it still has members there itself
    /// (then the room is not empty). [`delete_room_if_empty`](Self::delete_room_if_empty)
    /// decides the rest.
    fn leave(&self, room: &str, client: &str, node: &str) -> BoxFuture<'_, StoreResult<bool>>;
    fn members(&self, room: &str) -> BoxFuture<'_, StoreResult<Vec<MemberRecord>>>;
    fn member_count(&self, room: &str) -> BoxFuture<'_, StoreResult<usize>>;

    /// Records that `client` is on `node`; returns the node it was on before, if another.
    fn register_client(
        &self,
        client: &str,
        node: &str,
    ) -> BoxFuture<'_, StoreResult<Option<String>>>;
    /// Forgets `client` if it is still recorded on `node`.
    fn unregister_client(&self, client: &str, node: &str) -> BoxFuture<'_, StoreResult<()>>;
    fn client_node(&self, client: &str) -> BoxFuture<'_, StoreResult<Option<String>>>;

    /// Publishes this node's heartbeat; the record lives `ttl`.
    fn heartbeat(
        &self,
        node: NodeRecord,
        ttl: std::time::Duration,
    ) -> BoxFuture<'_, StoreResult<()>>;
    /// Nodes whose last heartbeat is younger than `ttl`.
    fn nodes(&self, ttl: std::time::Duration) -> BoxFuture<'_, StoreResult<Vec<NodeRecord>>>;
    /// Removes everything `node` held: its record, its clients, its memberships (returned, so
    /// the caller can announce them gone).
    fn remove_node(&self, node: &str) -> BoxFuture<'_, StoreResult<Vec<(String, MemberRecord)>>>;
    /// Node ids that hold memberships or clients (to find dead nodes' leftovers).
    fn nodes_with_state(&self) -> BoxFuture<'_, StoreResult<Vec<String>>>;
}

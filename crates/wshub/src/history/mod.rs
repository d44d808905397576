//! Per-room history: every publication to a room that keeps history gets a monotonically
//! increasing `offset` in that room and the room's `epoch` (which changes whenever the history
//! was lost or reset), carried in the delivered `data`. A client that reconnects asks for what
//! it missed (`join_room` with `since {offset, epoch}`) and gets exactly that, or is told it
//! can't (`recovered: false`) and must reload its state.
//!
//! Backends: [`MemoryHistory`] (one node, or the nodes of one process; lost on restart, which
//! changes the epoch) and [`RedisHistory`] (Redis Streams, shared by every node; survives node
//! restarts).

mod jetstream;
mod memory;
mod redis;

use bytes::Bytes;
use futures_util::future::BoxFuture;

pub use jetstream::JetStreamHistory;
pub use memory::MemoryHistory;
pub use redis::RedisHistory;

/// One stored publication.
#[derive(Debug, Clone, PartialEq)]
pub struct Publication {
    pub offset: u64,
    pub message_type: String,
    /// The `data` JSON object, without `offset`/`epoch` (added when it is sent).
    pub data: Bytes,
}

/// Where a publication landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub offset: u64,
    pub epoch: String,
}

/// The result of an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub position: Position,
    /// The idempotency key was seen within the window: nothing was appended, `position` is the
    /// first publication's.
    pub duplicate: bool,
}

/// What a client asked for after reconnecting.
#[derive(Debug, Clone, PartialEq)]
pub enum Recovery {
    /// Every publication after the client's offset, in order (possibly none).
    Complete {
        epoch: String,
        publications: Vec<Publication>,
    },
    /// The epoch changed, or publications after the offset were already dropped.
    Impossible { epoch: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    #[error("history unavailable: {0}")]
    Unavailable(String),
}

pub trait HistoryStore: Send + Sync + 'static {
    /// Appends a publication; with `idempotency_key`, a repeat within the window returns the
    /// first one's position and appends nothing.
    fn append<'a>(
        &'a self,
        room: &'a str,
        idempotency_key: Option<&'a str>,
        message_type: &'a str,
        data: Bytes,
    ) -> BoxFuture<'a, Result<Appended, HistoryError>>;

    /// Publications after `offset` if the epoch matches and none was dropped.
    fn recover<'a>(
        &'a self,
        room: &'a str,
        offset: u64,
        epoch: &'a str,
    ) -> BoxFuture<'a, Result<Recovery, HistoryError>>;

    /// The room's epoch and latest offset (0 when nothing was published yet).
    fn latest<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<Position, HistoryError>>;

    /// Up to `limit` publications after `offset` (from the oldest kept when `None`).
    fn read<'a>(
        &'a self,
        room: &'a str,
        offset: Option<u64>,
        limit: usize,
    ) -> BoxFuture<'a, Result<(String, Vec<Publication>), HistoryError>>;
}

/// `{...}` -> `{...,"offset":N,"epoch":"E"}`: positions are added to the stored `data` object
/// when it is sent, so the stored bytes never need re-serializing.
pub(crate) fn with_position(data: &[u8], position: &Position) -> Vec<u8> {
    let body = data.trim_ascii();
    let inner = body
        .strip_prefix(b"{")
        .and_then(|b| b.strip_suffix(b"}"))
        .unwrap_or(b"");
    let mut out = Vec::with_capacity(body.len() + 48 + position.epoch.len());
    out.push(b'{');
    out.extend_from_slice(inner);
    if !inner.trim_ascii().is_empty() {
        out.push(b',');
    }
    out.extend_from_slice(b"\"offset\":");
    out.extend_from_slice(position.offset.to_string().as_bytes());
    out.extend_from_slice(b",\"epoch\":");
    out.extend_from_slice(
        serde_json::to_string(&position.epoch)
            .unwrap_or_default()
            .as_bytes(),
    );
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_appended_to_the_object() {
        let p = Position {
            offset: 7,
            epoch: "e1".into(),
        };
        let v: serde_json::Value =
            serde_json::from_slice(&with_position(br#"{"content":{"a":1},"room_id":"r"}"#, &p))
                .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"content":{"a":1},"room_id":"r","offset":7,"epoch":"e1"})
        );
        let v: serde_json::Value = serde_json::from_slice(&with_position(b"{}", &p)).unwrap();
        assert_eq!(v, serde_json::json!({"offset":7,"epoch":"e1"}));
    }
}

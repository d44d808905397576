//! Entry points into crate-private hot paths for `benches/hot_paths.rs` (criterion).
//!
//! Not part of the API: hidden from the docs and free to change. Each function is a thin
//! wrapper so the benchmark measures exactly the code the server runs.

use bytes::Bytes;

use crate::bus::{BusMessage, DedupWindow, Kind};

/// One outbound envelope encoded and framed (what every reply and publication costs once).
pub fn envelope_frame<D: serde::Serialize + ?Sized>(
    message_id: u64,
    message_type: &str,
    data: &D,
) -> Bytes {
    crate::wire::envelope_frame(message_id, message_type, data, None)
        .unwrap_or_else(|_| Bytes::new())
}

/// A room publication as it crosses the bus: encoded by the origin.
pub fn bus_encode(seq: u64, frame: Bytes) -> Bytes {
    BusMessage {
        kind: Kind::Room,
        origin: "node-1".into(),
        boot: 42,
        seq,
        offset: seq,
        published_at_us: 1_700_000_000_000_000,
        traceparent: String::new(),
        target: "lobby".into(),
        extra: "sender".into(),
        frame,
    }
    .encode()
}

/// ...and decoded by every other node; returns the frame's length.
pub fn bus_decode(bytes: Bytes) -> usize {
    BusMessage::decode(bytes).map_or(0, |m| m.frame.len())
}

/// The bus duplicate filter.
pub struct Dedup(DedupWindow);

impl Dedup {
    pub fn new() -> Dedup {
        Dedup(DedupWindow::default())
    }

    pub fn first_time(&mut self, origin: &str, boot: u64, seq: u64) -> bool {
        self.0.first_time(origin, boot, seq)
    }
}

impl Default for Dedup {
    fn default() -> Self {
        Dedup::new()
    }
}

/// The JSON nesting scan run on every inbound message before parsing.
pub fn json_too_deep(bytes: &[u8], max: usize) -> bool {
    crate::limits::json_too_deep(bytes, max)
}

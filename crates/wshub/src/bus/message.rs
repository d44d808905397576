//! The message format between nodes.
//!
//! Binary and small, because every cross-node publication pays for it:
//!
//! ```text
//! u8  version (2; version 1, without the two fields marked v2, is still read)
//! u8  kind
//! u8  origin node id length, then the id
//! u64 origin boot id (random per process start)
//! u64 sequence (per origin boot, from 1)
//! u64 room history offset (0 = none)
//! u64 when the origin accepted the publication, µs since the Unix epoch (0 = unknown)  [v2]
//! u8  length of the W3C traceparent (0 = not traced), then it                         [v2]
//! u16 length of `target`, then target   (room id, or client id for direct/kick)
//! u16 length of `extra`, then extra     (client id to exclude, or who kicked)
//! ... the rest: the WebSocket frame, already encoded by the origin
//! ```
//!
//! Carrying the finished frame means a receiving node re-encodes nothing: it hands a slice
//! of the received buffer to every local recipient.

use bytes::{Buf, BufMut, Bytes, BytesMut};

const VERSION: u8 = 2;
/// The first version, still decoded (from nodes not yet upgraded).
const VERSION_1: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    /// A frame for every local member of room `target` but client `extra`.
    Room = 1,
    /// A frame for every local client but `extra`.
    Broadcast = 2,
    /// A frame for client `target`, if it is local.
    Direct = 3,
    /// Room `target` was deleted: drop it locally and send `frame` to its members.
    RoomDeleted = 4,
    /// Remove client `target` from room `extra` and send it `frame` (the `kicked` notice).
    Kick = 5,
    /// Disconnect client `target` if it is local.
    Disconnect = 6,
    /// Client `target` connected elsewhere: node `extra` closes its connection (4409).
    Replaced = 7,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::Room,
            2 => Kind::Broadcast,
            3 => Kind::Direct,
            4 => Kind::RoomDeleted,
            5 => Kind::Kick,
            6 => Kind::Disconnect,
            7 => Kind::Replaced,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BusMessage {
    pub(crate) kind: Kind,
    pub(crate) origin: String,
    pub(crate) boot: u64,
    pub(crate) seq: u64,
    /// The publication's offset in the room's history (0 = the room keeps none).
    pub(crate) offset: u64,
    /// When the origin accepted the publication (µs since the epoch; 0 = unknown): what the
    /// delivery latency metric measures from.
    pub(crate) published_at_us: u64,
    /// The W3C `traceparent` of the publishing span (empty = not traced).
    pub(crate) traceparent: String,
    pub(crate) target: String,
    pub(crate) extra: String,
    pub(crate) frame: Bytes,
}

impl BusMessage {
    pub(crate) fn encode(&self) -> Bytes {
        let origin = &self.origin.as_bytes()[..self.origin.len().min(255)];
        let target = &self.target.as_bytes()[..self.target.len().min(u16::MAX as usize)];
        let extra = &self.extra.as_bytes()[..self.extra.len().min(u16::MAX as usize)];
        // A traceparent is 55 bytes; anything that does not fit is not one.
        let trace = Some(self.traceparent.as_bytes())
            .filter(|t| t.len() <= 255)
            .unwrap_or(b"");
        let mut b = BytesMut::with_capacity(
            2 + 1
                + origin.len()
                + 32
                + 1
                + trace.len()
                + 4
                + target.len()
                + extra.len()
                + self.frame.len(),
        );
        b.put_u8(VERSION);
        b.put_u8(self.kind as u8);
        b.put_u8(origin.len() as u8);
        b.put_slice(origin);
        b.put_u64(self.boot);
        b.put_u64(self.seq);
        b.put_u64(self.offset);
        b.put_u64(self.published_at_us);
        b.put_u8(trace.len() as u8);
        b.put_slice(trace);
        b.put_u16(target.len() as u16);
        b.put_slice(target);
        b.put_u16(extra.len() as u16);
        b.put_slice(extra);
        b.put_slice(&self.frame);
        b.freeze()
    }

    /// Decodes without copying the frame. `None` for anything malformed (logged by the caller
    /// and dropped: a bad message from the bus must not take a node down).
    pub(crate) fn decode(mut buf: Bytes) -> Option<BusMessage> {
        fn string(buf: &mut Bytes, len: usize) -> Option<String> {
            if buf.remaining() < len {
                return None;
            }
            String::from_utf8(buf.split_to(len).to_vec()).ok()
        }
        if buf.remaining() < 3 {
            return None;
        }
        let version = buf.get_u8();
        if version != VERSION && version != VERSION_1 {
            return None;
        }
        let kind = Kind::from_u8(buf.get_u8())?;
        let origin_len = buf.get_u8() as usize;
        let origin = string(&mut buf, origin_len)?;
        if buf.remaining() < 26 {
            return None;
        }
        let boot = buf.get_u64();
        let seq = buf.get_u64();
        let offset = buf.get_u64();
        let (mut published_at_us, mut traceparent) = (0, String::new());
        if version == VERSION {
            if buf.remaining() < 9 {
                return None;
            }
            published_at_us = buf.get_u64();
            let trace_len = buf.get_u8() as usize;
            traceparent = string(&mut buf, trace_len)?;
            if buf.remaining() < 2 {
                return None;
            }
        }
        let target_len = buf.get_u16() as usize;
        let target = string(&mut buf, target_len)?;
        if buf.remaining() < 2 {
            return None;
        }
        let extra_len = buf.get_u16() as usize;
        let extra = string(&mut buf, extra_len)?;
        Some(BusMessage {
            kind,
            origin,
            boot,
            seq,
            offset,
            published_at_us,
            traceparent,
            target,
            extra,
            frame: buf,
        })
    }

    /// `Nats-Msg-Id` for broker-side dedup of retried publishes.
    pub(crate) fn msg_id(&self) -> String {
        format!("{}:{:x}:{}", self.origin, self.boot, self.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_garbage() {
        let m = BusMessage {
            kind: Kind::Room,
            origin: "node-1".into(),
            boot: 42,
            seq: 7,
            offset: 3,
            published_at_us: 1_700_000_000_000_000,
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
            target: "lobby".into(),
            extra: "alice".into(),
            frame: Bytes::from_static(b"\x81\x02hi"),
        };
        let bytes = m.encode();
        assert_eq!(BusMessage::decode(bytes.clone()), Some(m));
        for cut in 0..bytes.len() - 4 {
            // Every truncation that cuts into the header is refused (never panics).
            let _ = BusMessage::decode(bytes.slice(..cut));
        }
        assert_eq!(BusMessage::decode(Bytes::from_static(b"\x09garbage")), None);
        // Version 1 (no timestamp, no traceparent) still decodes.
        let mut v1 = vec![1u8, Kind::Room as u8, 1, b'n'];
        v1.extend_from_slice(&[0; 24]);
        v1.extend_from_slice(&[0, 1, b'r', 0, 0]);
        v1.extend_from_slice(b"frame");
        let old = BusMessage::decode(Bytes::from(v1)).expect("v1 decodes");
        assert_eq!(
            (old.target.as_str(), &old.frame[..], old.published_at_us),
            ("r", &b"frame"[..], 0)
        );
        assert_eq!(BusMessage::decode(Bytes::new()), None);
        assert_eq!(
            BusMessage::decode(Bytes::from_static(b"\x01\x63\x00")),
            None
        );
    }
}

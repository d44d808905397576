//! Outbound frames: an envelope serialized and framed as a WebSocket frame, once.
//!
//! Server frames are unmasked, so the bytes on the wire are the same for every recipient:
//! header + payload is built once into one allocation, and each recipient's queue gets a
//! clone of the same [`Bytes`] (a reference count, no copy). The header is written in front
//! of the JSON after the JSON is known: [`MAX_HEADER`] bytes are reserved up front and the
//! unused ones are sliced off, so nothing is moved.

use bytes::Bytes;
use serde::Serialize;

/// Largest server frame header: 2 bytes + 8-byte extended length (no mask).
const MAX_HEADER: usize = 10;

pub(crate) const OP_TEXT: u8 = 0x1;
pub(crate) const OP_CLOSE: u8 = 0x8;
pub(crate) const OP_PING: u8 = 0x9;
pub(crate) const OP_PONG: u8 = 0xA;

/// Builds a final text frame whose payload is what `write_payload` appends.
pub(crate) fn text_frame_with<E>(
    capacity_hint: usize,
    write_payload: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
) -> Result<Bytes, E> {
    let mut buf = Vec::with_capacity(MAX_HEADER + capacity_hint);
    buf.resize(MAX_HEADER, 0);
    write_payload(&mut buf)?;
    let payload_len = buf.len() - MAX_HEADER;
    let (header, len) = header(OP_TEXT, payload_len);
    let start = MAX_HEADER - len;
    buf[start..MAX_HEADER].copy_from_slice(&header[..len]);
    Ok(Bytes::from(buf).slice(start..))
}

/// The frame of one envelope (see `wshub_protocol::encode_envelope`).
pub(crate) fn envelope_frame<D: Serialize + ?Sized>(
    message_id: u64,
    message_type: &str,
    data: &D,
    request_id: Option<i64>,
) -> Result<Bytes, serde_json::Error> {
    text_frame_with(128, |buf| {
        wshub_protocol::encode_envelope(
            buf,
            message_id,
            message_type,
            data,
            wshub_protocol::now_millis(),
            request_id,
        )
    })
}

/// A control frame (ping, pong, close); `payload` must be at most 125 bytes.
pub(crate) fn control_frame(opcode: u8, payload: &[u8]) -> Bytes {
    control_frame_of(opcode, &[&payload[..payload.len().min(125)]])
}

/// A control frame whose payload is `parts` one after the other (at most 125 bytes in all).
fn control_frame_of(opcode: u8, parts: &[&[u8]]) -> Bytes {
    let payload_len = parts.iter().map(|p| p.len()).sum();
    let (header, len) = header(opcode, payload_len);
    let mut out = Vec::with_capacity(len + payload_len);
    out.extend_from_slice(&header[..len]);
    for part in parts {
        out.extend_from_slice(part);
    }
    Bytes::from(out)
}

/// A close frame with `code` and `reason` (truncated to fit 125 bytes).
pub(crate) fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    control_frame_of(OP_CLOSE, &[&code.to_be_bytes(), &reason.as_bytes()[..end]])
}

/// The `message_type` of a frame built by [`envelope_frame`] (for metrics: read once per
/// fan-out, so the hot path needs no type passed alongside every frame). `None` for control
/// frames and anything else.
pub(crate) fn frame_message_type(frame: &[u8]) -> Option<&str> {
    const KEY: &[u8] = b"\"message_type\":\"";
    let (&first, rest) = frame.split_first()?;
    if first & 0x0f != OP_TEXT {
        return None;
    }
    let skip = match rest.first()? & 0x7f {
        126 => 3,
        127 => 9,
        _ => 1,
    };
    // `{"message_id":<u64>,` comes first: the key is within the first few dozen bytes.
    let head = rest.get(skip..)?;
    let head = &head[..head.len().min(64)];
    let start = head.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let tail = rest.get(skip + start..)?;
    let end = tail.iter().take(64).position(|&b| b == b'"')?;
    std::str::from_utf8(&tail[..end]).ok()
}

/// A server frame's header (final, unmasked) for a payload of `len` bytes: the bytes, and how
/// many of them are used. On the stack: every frame built would otherwise allocate it.
fn header(opcode: u8, len: usize) -> ([u8; MAX_HEADER], usize) {
    let mut h = [0; MAX_HEADER];
    h[0] = 0x80 | opcode;
    let used = if len < 126 {
        h[1] = len as u8;
        2
    } else if len <= 0xffff {
        h[1] = 126;
        h[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        h[1] = 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    (h, used)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_server_frame(f: &[u8]) -> (u8, &[u8]) {
        assert_eq!(f[0] & 0x80, 0x80, "final");
        assert_eq!(f[1] & 0x80, 0, "unmasked");
        let (len, off) = match f[1] & 0x7f {
            126 => (u16::from_be_bytes([f[2], f[3]]) as usize, 4),
            127 => (
                u64::from_be_bytes(f[2..10].try_into().unwrap()) as usize,
                10,
            ),
            n => (n as usize, 2),
        };
        assert_eq!(f.len(), off + len);
        (f[0] & 0x0f, &f[off..])
    }

    #[test]
    fn frames_every_length_form() {
        for len in [0usize, 1, 125, 126, 65_535, 65_536, 100_000] {
            let body = "x".repeat(len);
            let f = text_frame_with(0, |b| {
                b.extend_from_slice(body.as_bytes());
                Ok::<_, ()>(())
            })
            .unwrap();
            let (op, payload) = parse_server_frame(&f);
            assert_eq!(op, OP_TEXT);
            assert_eq!(payload, body.as_bytes());
        }
    }

    #[test]
    fn envelope_frame_holds_gohub_json() {
        let f = envelope_frame(3, "pong", &serde_json::json!({"ts": 1}), Some(9)).unwrap();
        let (_, payload) = parse_server_frame(&f);
        let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
        assert_eq!(v["message_id"], 3);
        assert_eq!(v["request_id"], 9);
        assert_eq!(v["data"]["ts"], 1);
    }

    #[test]
    fn reads_the_message_type_back_from_a_frame() {
        for (t, body) in [
            ("pong", "x".repeat(3)),
            ("room_message", "y".repeat(70_000)),
        ] {
            let f = envelope_frame(u64::MAX, t, &body, Some(9)).unwrap();
            assert_eq!(frame_message_type(&f), Some(t));
        }
        assert_eq!(frame_message_type(&close_frame(1000, "")), None);
        assert_eq!(frame_message_type(b""), None);
        assert_eq!(frame_message_type(b"\x81"), None);
    }

    #[test]
    fn close_frame_truncates_on_char_boundary() {
        let f = close_frame(1008, &"é".repeat(100));
        let (op, payload) = parse_server_frame(&f);
        assert_eq!(op, OP_CLOSE);
        assert!(payload.len() <= 125);
        assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1008);
        assert!(std::str::from_utf8(&payload[2..]).is_ok());
    }
}

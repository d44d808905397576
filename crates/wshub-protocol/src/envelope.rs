//! The JSON envelope around every message.
//!
//! Inbound, [`InboundEnvelope::decode`] borrows from the frame: `data` stays a
//! [`RawValue`] slice until a handler parses it into its own type, so a room message's
//! `content` is never parsed into a tree and re-serialized. Outbound,
//! [`encode_envelope`] writes GoHub's `Message` struct field order exactly:
//! `message_id, message_type, data, timestamp, request_id` (`client_id` and `request_id`
//! are `omitempty` in GoHub, so they are left out when unset).

use std::borrow::Cow;
use std::io::Write;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Why an inbound frame could not be read as an envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Not JSON, not an object, or a field of the wrong type. Maps to error 1001.
    InvalidFormat(String),
    /// `message_id` or `request_id` is not an integer. Maps to error 1002.
    InvalidMessageId(String),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::InvalidFormat(why) => write!(f, "invalid message format: {why}"),
            DecodeError::InvalidMessageId(why) => write!(f, "invalid message id: {why}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// An envelope as a client sends it, borrowing from the received frame.
#[derive(Debug)]
pub struct InboundEnvelope<'a> {
    /// The client's id for this message (often `Date.now()`); 0 when absent.
    pub message_id: i64,
    pub message_type: Cow<'a, str>,
    /// The raw `data` JSON, `None` when absent or `null`.
    pub data: Option<&'a RawValue>,
    pub request_id: Option<i64>,
}

#[derive(Deserialize)]
struct RawInbound<'a> {
    #[serde(default, borrow)]
    message_id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    message_type: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
    #[serde(default, borrow)]
    request_id: Option<&'a RawValue>,
}

impl<'a> InboundEnvelope<'a> {
    /// Decodes one envelope. `timestamp` and `client_id` are ignored inbound.
    pub fn decode(bytes: &'a [u8]) -> Result<InboundEnvelope<'a>, DecodeError> {
        let raw: RawInbound<'a> = serde_json::from_slice(bytes)
            .map_err(|e| DecodeError::InvalidFormat(crate::json_error::describe(&e)))?;
        let message_type = match raw.message_type {
            Some(t) if !t.is_empty() => t,
            _ => {
                return Err(DecodeError::InvalidFormat(
                    "message_type is missing or empty".into(),
                ));
            }
        };
        let message_id = parse_id("message_id", raw.message_id)?.unwrap_or(0);
        let request_id = parse_id("request_id", raw.request_id)?;
        let data = raw.data.filter(|d| d.get() != "null");
        Ok(InboundEnvelope {
            message_id,
            message_type,
            data,
            request_id,
        })
    }

    /// The id a reply to this envelope carries (see [`correlation_id`]).
    pub fn correlation_id(&self) -> Option<i64> {
        correlation_id(self.request_id, self.message_id)
    }
}

/// A reply carries the request's `request_id` when it had a non-zero one, else the request's
/// non-zero `message_id` (GoHub's README rule), so both styles of client can match replies.
pub fn correlation_id(request_id: Option<i64>, message_id: i64) -> Option<i64> {
    match request_id {
        Some(r) if r != 0 => Some(r),
        _ if message_id != 0 => Some(message_id),
        _ => None,
    }
}

fn parse_id(field: &str, raw: Option<&RawValue>) -> Result<Option<i64>, DecodeError> {
    let Some(raw) = raw else { return Ok(None) };
    let text = raw.get();
    if text == "null" {
        return Ok(None);
    }
    // Integers only; `Date.now()` fits easily. A float that is integral ("7.0") is refused:
    // a client sending it would fail to match the integer we echo back.
    text.parse::<i64>().map(Some).map_err(|_| {
        DecodeError::InvalidMessageId(format!(
            "{field} must be an integer, got {}",
            crate::json_error::kind_of(text)
        ))
    })
}

/// Writes one outbound envelope in GoHub's field order into `out`.
///
/// `message_type` is escaped as a JSON string; `data` is serialized in place.
pub fn encode_envelope<D: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    message_id: u64,
    message_type: &str,
    data: &D,
    timestamp: i64,
    request_id: Option<i64>,
) -> Result<(), serde_json::Error> {
    // Writing into a Vec cannot fail with an I/O error; `write!` results are unwrapped into
    // the serde error type only to keep one error type.
    let io = |e: std::io::Error| serde_json::Error::io(e);
    write!(out, "{{\"message_id\":{message_id},\"message_type\":").map_err(io)?;
    serde_json::to_writer(&mut *out, message_type)?;
    out.extend_from_slice(b",\"data\":");
    serde_json::to_writer(&mut *out, data)?;
    write!(out, ",\"timestamp\":{timestamp}").map_err(io)?;
    if let Some(r) = request_id.filter(|r| *r != 0) {
        write!(out, ",\"request_id\":{r}").map_err(io)?;
    }
    out.push(b'}');
    Ok(())
}

/// An envelope as the server sends it, owned; what clients decode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    #[serde(default)]
    pub message_id: i64,
    pub message_type: String,
    #[serde(default)]
    pub data: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default)]
    pub timestamp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<i64>,
}

impl Envelope {
    /// A client request of `message_type` with `data`.
    pub fn request(message_type: &str, data: serde_json::Value, request_id: Option<i64>) -> Self {
        Envelope {
            message_id: 0,
            message_type: message_type.to_owned(),
            data,
            client_id: None,
            timestamp: crate::now_millis(),
            request_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_gohub_envelope_borrowing_data() {
        let frame = br#"{"message_id":1717000000000,"message_type":"room_message","data":{"room_id":"a","content":{"x":[1,2]}},"timestamp":1,"request_id":7}"#;
        let env = InboundEnvelope::decode(frame).unwrap();
        assert_eq!(env.message_id, 1717000000000);
        assert_eq!(env.message_type, "room_message");
        assert_eq!(
            env.data.unwrap().get(),
            r#"{"room_id":"a","content":{"x":[1,2]}}"#
        );
        assert_eq!(env.correlation_id(), Some(7));
    }

    #[test]
    fn correlation_falls_back_to_message_id() {
        assert_eq!(correlation_id(None, 5), Some(5));
        assert_eq!(correlation_id(Some(0), 5), Some(5));
        assert_eq!(correlation_id(Some(3), 5), Some(3));
        assert_eq!(correlation_id(None, 0), None);
    }

    #[test]
    fn rejects_bad_input_with_the_right_kind() {
        assert!(matches!(
            InboundEnvelope::decode(b"{not json"),
            Err(DecodeError::InvalidFormat(_))
        ));
        assert!(matches!(
            InboundEnvelope::decode(b"[1,2]"),
            Err(DecodeError::InvalidFormat(_))
        ));
        assert!(matches!(
            InboundEnvelope::decode(br#"{"data":{}}"#),
            Err(DecodeError::InvalidFormat(_))
        ));
        assert!(matches!(
            InboundEnvelope::decode(br#"{"message_type":"ping","message_id":"x"}"#),
            Err(DecodeError::InvalidMessageId(_))
        ));
        assert!(matches!(
            InboundEnvelope::decode(br#"{"message_type":"ping","message_id":1.5}"#),
            Err(DecodeError::InvalidMessageId(_))
        ));
        let env = InboundEnvelope::decode(br#"{"message_type":"ping","data":null}"#).unwrap();
        assert!(env.data.is_none());
    }

    #[test]
    fn encodes_gohub_field_order() {
        let mut out = Vec::new();
        let data = serde_json::json!({"room_id": "r", "status": "joined"});
        encode_envelope(&mut out, 9, "room_joined", &data, 1000, Some(7)).unwrap();
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"message_id":9,"message_type":"room_joined","data":{"room_id":"r","status":"joined"},"timestamp":1000,"request_id":7}"#
        );
        out.clear();
        encode_envelope(&mut out, 1, "pong", &data, 5, None).unwrap();
        assert!(!std::str::from_utf8(&out).unwrap().contains("request_id"));
        let back: Envelope = serde_json::from_slice(&out).unwrap();
        assert_eq!(back.message_type, "pong");
    }
}

//! The wshub wire protocol: GoHub-compatible JSON envelopes, message types and error codes.
//!
//! This crate does no I/O. Both the server (`wshub`) and the clients (`wshub-client`) use it,
//! so the bytes a client sends and the bytes the server writes are defined in one place.
//!
//! - [`envelope`]: decoding an inbound envelope without copying `data`, and encoding an
//!   outbound one in GoHub's exact field order.
//! - [`types`]: the message types with their wire names.
//! - [`error`]: [`ErrorCode`] and the `error` frame payload.
//! - [`messages`]: the `data` payloads of every built-in message type.
//! - [`json_error`]: describing a JSON error without echoing the input back.
//! - [`close`]: the WebSocket close codes the server uses, and what a client should do on each.

pub mod close;
pub mod envelope;
pub mod error;
pub mod json_error;
pub mod messages;
pub mod types;

pub use envelope::{DecodeError, Envelope, InboundEnvelope, correlation_id, encode_envelope};
pub use error::{ErrorCode, ErrorData};
pub use types::MessageType;

/// Milliseconds since the Unix epoch, as GoHub puts in `timestamp`.
pub fn now_millis() -> i64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

//! `message_type` -> handler. Decodes each inbound envelope once, checks the permission the
//! handler declares, runs the handler, and frames its reply or error with the request's
//! correlation id. Handlers never frame errors or check permissions themselves.
//!
//! Built-in types are matched on [`MessageType`]; anything else goes to the custom handlers
//! registered through the SDK; an unknown type gets error 1000 and the connection stays
//! open. Handlers run inline in the connection's read loop, so one client's messages are
//! handled in the order it sent them.

pub(crate) mod handlers;

use std::borrow::Cow;
use std::sync::Arc;

use serde::Serialize;
use serde_json::value::RawValue;
use wshub_protocol::{DecodeError, ErrorCode, ErrorData, InboundEnvelope, MessageType};

use crate::conn::ConnHandle;
use crate::hub::HubError;
use crate::ids::RoomId;
use crate::node::Node;
use crate::sdk::Client;

/// A failure a handler reports to the client as an `error` frame.
#[derive(Debug, Clone, PartialEq)]
pub struct HandlerError {
    pub code: ErrorCode,
    pub message: Cow<'static, str>,
    pub details: Option<serde_json::Value>,
}

impl HandlerError {
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        HandlerError {
            code,
            message: message.into(),
            details: None,
        }
    }

    /// The code with its default message.
    pub fn code(code: ErrorCode) -> Self {
        HandlerError::new(code, code.default_message())
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }
}

impl std::fmt::Display for HandlerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_u16(), self.message)
    }
}

impl std::error::Error for HandlerError {}

impl From<HubError> for HandlerError {
    fn from(e: HubError) -> Self {
        HandlerError::code(e.code())
    }
}

impl From<DecodeError> for HandlerError {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::InvalidFormat(why) => {
                HandlerError::code(ErrorCode::InvalidFormat).with_details(why.into())
            }
            DecodeError::InvalidMessageId(why) => {
                HandlerError::code(ErrorCode::InvalidMessageId).with_details(why.into())
            }
        }
    }
}

impl From<serde_json::Error> for HandlerError {
    /// Serializing a reply failed: the server's fault, not the client's.
    fn from(e: serde_json::Error) -> Self {
        tracing::error!(error = %e, "failed to encode a reply");
        HandlerError::code(ErrorCode::ServerError)
    }
}

/// A handler's reply: sent back to the requester with its correlation id.
#[derive(Debug, Clone)]
pub struct Reply {
    message_type: Cow<'static, str>,
    data: Box<RawValue>,
}

impl Reply {
    pub fn new(
        message_type: impl Into<Cow<'static, str>>,
        data: &impl Serialize,
    ) -> Result<Self, HandlerError> {
        Ok(Reply {
            message_type: message_type.into(),
            data: serde_json::value::to_raw_value(data)?,
        })
    }

    pub(crate) fn of(t: MessageType, data: &impl Serialize) -> Result<Self, HandlerError> {
        Reply::new(t.as_str(), data)
    }
}

pub type HandlerResult = Result<Option<Reply>, HandlerError>;

/// What the connection must do after a message.
pub(crate) enum Dispatched {
    Done,
    /// An anonymous connection authenticated as `identity`: the connection re-registers
    /// under the token's client id and then replies.
    Reidentify {
        identity: crate::auth::Identity,
        correlation: Option<i64>,
    },
}

/// Handles one inbound text or binary message of `conn`.
pub(crate) async fn dispatch(node: &Arc<Node>, conn: &Arc<ConnHandle>, frame: &[u8]) -> Dispatched {
    let env = match InboundEnvelope::decode(frame) {
        Ok(env) => env,
        Err(e) => {
            node.hub.metrics.received(None, frame.len());
            tracing::debug!(client_id = %conn.client_id, error = %e, "undecodable message");
            send_error(node, conn, &HandlerError::from(e), None);
            return Dispatched::Done;
        }
    };
    node.hub
        .metrics
        .received(Some(&env.message_type), frame.len());
    tracing::Span::current().record("message_type", &*env.message_type);
    let correlation = env.correlation_id();
    let client = Client::new(node.clone(), conn.clone());
    node.hooks.message(&client, &env.message_type, env.data);

    let message_type = MessageType::parse(&env.message_type);
    if message_type == Some(MessageType::Authenticate) {
        return match handlers::authenticate(node, conn, env.data) {
            Ok(handlers::AuthOutcome::Refreshed(reply)) => {
                send_reply(node, conn, reply, correlation);
                Dispatched::Done
            }
            Ok(handlers::AuthOutcome::Reidentify(identity)) => Dispatched::Reidentify {
                identity,
                correlation,
            },
            Err(e) => {
                send_error(node, conn, &e, correlation);
                Dispatched::Done
            }
        };
    }
    let builtin = match message_type {
        Some(t) => handlers::builtin(node, conn, t, env.data, env.request_id).await,
        None => None,
    };
    let result = match builtin {
        Some(result) => result,
        None => match node.custom_handlers.get(env.message_type.as_ref()) {
            Some(handler) => {
                let data = match env.data {
                    Some(raw) => serde_json::from_str(raw.get()).unwrap_or_default(),
                    None => serde_json::Value::Null,
                };
                handler(client, data).await
            }
            None => Err(unknown_type()),
        },
    };
    match result {
        Ok(Some(reply)) => send_reply(node, conn, reply, correlation),
        Ok(None) => {}
        Err(e) => send_error(node, conn, &e, correlation),
    }
    // A `join_room` with `since` queues what was missed after its reply (and only then the
    // live publications that arrived meanwhile).
    conn.complete_recoveries(node.limits.write_timeout()).await;
    Dispatched::Done
}

fn send_reply(node: &Node, conn: &ConnHandle, reply: Reply, correlation: Option<i64>) {
    match node
        .hub
        .frame(&reply.message_type, &*reply.data, correlation)
    {
        Ok(frame) => {
            node.hub.send_to(conn, frame);
        }
        Err(e) => send_error(node, conn, &HandlerError::from(e), correlation),
    }
}

/// The type is not echoed back: error replies never quote client input (see
/// `wshub_protocol::json_error`); the client knows what it sent from `request_id`.
fn unknown_type() -> HandlerError {
    HandlerError::new(ErrorCode::Unknown, "unknown message type")
}

/// Queues an `error` frame to `conn`.
pub(crate) fn send_error(
    node: &Node,
    conn: &ConnHandle,
    error: &HandlerError,
    correlation: Option<i64>,
) {
    node.hub.metrics.error(error.code);
    // One line per error (inside the `conn` span, so with the client's id and address).
    tracing::info!(code = error.code.as_u16(), error = %error.message, request_id = correlation, "error sent to client");
    let data = ErrorData {
        code: error.code,
        message: error.message.to_string(),
        request_id: correlation.unwrap_or(0),
        details: error.details.clone(),
    };
    match node
        .hub
        .frame(MessageType::Error.as_str(), &data, correlation)
    {
        Ok(frame) => {
            node.hub.send_to(conn, frame);
        }
        Err(e) => tracing::error!(error = %e, "failed to encode an error frame"),
    }
}

/// Longest room id accepted, in bytes.
pub(crate) const MAX_ROOM_ID_LEN: usize = 256;

/// Room ids are 1..=256 bytes without control characters.
pub(crate) fn validate_room_id(id: &str) -> Result<RoomId, HandlerError> {
    let why = if id.is_empty() {
        "room_id must not be empty"
    } else if id.len() > MAX_ROOM_ID_LEN {
        "room_id is longer than 256 bytes"
    } else if id.chars().any(char::is_control) {
        "room_id must not contain control characters"
    } else {
        return Ok(RoomId::from(id));
    };
    Err(HandlerError::new(ErrorCode::InvalidFormat, why))
}

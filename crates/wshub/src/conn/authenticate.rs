//! In-band authentication: a connection that arrived without a token (when auth requires
//! one) must send `authenticate {token}` first, within `auth.handshake_timeout` (the
//! connection's task keeps that deadline). Anything else gets an error frame and close 4401.

use wshub_protocol::messages::AuthenticateRequest;
use wshub_protocol::{ErrorCode, InboundEnvelope, MessageType, close};

use super::ConnHandle;
use crate::auth::Identity;
use crate::dispatch::{self, HandlerError};
use crate::node::Node;

/// Checks the first message of `pending` (a placeholder handle, not registered): the
/// identity its token proves and the request's correlation id, or `None` after refusing it.
pub(super) fn first(
    node: &Node,
    pending: &ConnHandle,
    frame: &[u8],
) -> Option<(Identity, Option<i64>)> {
    let env = match InboundEnvelope::decode(frame) {
        Ok(env) => env,
        Err(e) => return fail(node, pending, &e.into(), None),
    };
    let correlation = env.correlation_id();
    if MessageType::parse(&env.message_type) != Some(MessageType::Authenticate) {
        let error = HandlerError::new(
            ErrorCode::Unauthorized,
            "authenticate first: send authenticate {token}",
        );
        return fail(node, pending, &error, correlation);
    }
    let token = env
        .data
        .and_then(|d| serde_json::from_str::<AuthenticateRequest>(d.get()).ok());
    let Some(req) = token else {
        let error = HandlerError::new(ErrorCode::InvalidFormat, "authenticate needs data {token}");
        return fail(node, pending, &error, correlation);
    };
    let verified = node.verifier().verify(&req.token);
    node.hub
        .metrics
        .auth(crate::metrics::AuthSource::InBand, verified.is_ok());
    match verified {
        Ok(identity) => Some((identity, correlation)),
        Err(e) => fail(
            node,
            pending,
            &HandlerError::new(e.code(), e.to_string()),
            correlation,
        ),
    }
}

/// Refuses the connection: an error frame, then close 4401.
pub(super) fn fail<T>(
    node: &Node,
    pending: &ConnHandle,
    error: &HandlerError,
    correlation: Option<i64>,
) -> Option<T> {
    tracing::info!(code = error.code.as_u16(), reason = %error.message, "in-band authentication failed");
    dispatch::send_error(node, pending, error, correlation);
    pending.close(close::UNAUTHORIZED, "authentication failed");
    None
}

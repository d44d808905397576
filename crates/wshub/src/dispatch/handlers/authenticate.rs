//! `authenticate {token}` on an open connection: token refresh, or an anonymous connection
//! proving who it is.

use serde_json::value::RawValue;
use wshub_protocol::messages::{AuthenticateRequest, Authenticated};
use wshub_protocol::{ErrorCode, MessageType};

use crate::auth::Identity;
use crate::conn::ConnHandle;
use crate::dispatch::{HandlerError, Reply};
use crate::node::Node;

pub(crate) enum AuthOutcome {
    /// Same client, fresh claims: applied; this is the reply.
    Refreshed(Reply),
    /// An anonymous connection is now this client (the connection re-registers).
    Reidentify(Identity),
}

/// A failed refresh leaves the connection as it was (its current token still counts until
/// it expires). A token for another user than an authenticated connection's is refused:
/// identity is fixed once proven.
pub(crate) fn authenticate(
    node: &Node,
    conn: &ConnHandle,
    data: Option<&RawValue>,
) -> Result<AuthOutcome, HandlerError> {
    let req: AuthenticateRequest =
        serde_json::from_str(data.map_or("{}", |d| d.get())).map_err(|e| {
            HandlerError::new(ErrorCode::InvalidFormat, "authenticate needs data {token}")
                .with_details(wshub_protocol::json_error::describe(&e).into())
        })?;
    let verified = node.verifier().verify(&req.token);
    node.hub
        .metrics
        .auth(crate::metrics::AuthSource::Refresh, verified.is_ok());
    let identity = verified.map_err(|e| HandlerError::new(e.code(), e.to_string()))?;
    if identity.client_id != conn.client_id {
        if conn.is_authenticated() {
            return Err(HandlerError::new(
                ErrorCode::Forbidden,
                "token is for another user; a connection's identity cannot change once authenticated",
            ));
        }
        return Ok(AuthOutcome::Reidentify(identity));
    }
    conn.refresh(identity);
    tracing::info!(expires_at = ?conn.expires_at(), "token refreshed");
    Ok(AuthOutcome::Refreshed(Reply::of(
        MessageType::Authenticated,
        &Authenticated {
            client_id: conn.client_id.to_string(),
            expires_at: conn.expires_at(),
        },
    )?))
}

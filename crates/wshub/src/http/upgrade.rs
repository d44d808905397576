//! `GET /ws`: validates the RFC 6455 handshake, answers 101, and hands the raw socket to
//! `conn` once hyper gives it back.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use sha1::{Digest, Sha1};

use super::RemoteAddr;
use crate::auth::{Identity, Permissions};
use crate::conn::{self, Start};
use crate::ids::ClientId;
use crate::limits::Limit;
use crate::metrics::AuthSource;
use crate::node::Node;

/// RFC 6455 §1.3.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Longest client id accepted from `?client_id=`, in bytes.
const MAX_CLIENT_ID_LEN: usize = 256;

pub(super) async fn ws_handler(
    State(node): State<Arc<Node>>,
    Query(query): Query<HashMap<String, String>>,
    mut req: Request,
) -> Response {
    let key = match handshake_key(req.headers()) {
        Ok(key) => key,
        Err(rejection) => return rejection,
    };
    if node.draining.is_cancelled() || node.shutdown.is_cancelled() {
        let mut res = (
            StatusCode::SERVICE_UNAVAILABLE,
            "Service Unavailable: this node is shutting down; connect to another one",
        )
            .into_response();
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return res;
    }
    let config = node.config();
    if !origin_allowed(req.headers(), &config.server.allowed_origins) {
        return (StatusCode::FORBIDDEN, "Forbidden: origin not allowed").into_response();
    }
    let requested_id = match query.get("client_id").map(String::as_str) {
        None | Some("") => None,
        Some(id) if id.len() > MAX_CLIENT_ID_LEN || id.chars().any(char::is_control) => {
            return (
                StatusCode::BAD_REQUEST,
                "Bad Request: client_id must be at most 256 bytes without control characters",
            )
                .into_response();
        }
        Some(id) => Some(ClientId::from(id)),
    };
    let (token, source) = find_token(&query, req.headers());
    let via_subprotocol = source == AuthSource::Subprotocol;
    let start = match start(&node, &config.auth, token.as_deref(), source, requested_id) {
        Ok(start) => start,
        Err(rejection) => return rejection,
    };
    let Some(remote) = req.extensions().get::<RemoteAddr>().map(|r| r.0) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let slot = match node.admission.admit(remote.ip(), &config.limits) {
        Ok(slot) => slot,
        Err(limit) => {
            node.hub.metrics.limited(limit);
            tracing::info!(%remote, limit = limit.as_str(), "upgrade refused by a limit");
            let (status, text) = match limit {
                Limit::Connections => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Service Unavailable: this node is at limits.max_connections",
                ),
                Limit::ConnectionsPerIp => (
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too Many Requests: too many connections from this address",
                ),
                _ => (
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too Many Requests: connecting too fast from this address",
                ),
            };
            let mut res = (status, text).into_response();
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return res;
        }
    };
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return (
            StatusCode::BAD_REQUEST,
            "Bad Request: connection cannot be upgraded",
        )
            .into_response();
    };

    node.tasks
        .spawn(conn::serve(node.clone(), on_upgrade, start, remote, slot));

    let mut res = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = res.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept_key(key.as_bytes())) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if via_subprotocol {
        // Browsers fail the handshake unless one of their offered protocols is selected.
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(BEARER_SUBPROTOCOL),
        );
    }
    res
}

/// Subprotocol marking the other offered subprotocol as a bearer token, for browsers (which
/// cannot set headers): `new WebSocket(url, ["wshub.bearer", token])`.
pub(crate) const BEARER_SUBPROTOCOL: &str = "wshub.bearer";

/// The token, from `?token=`, `Authorization: Bearer`, or `Sec-WebSocket-Protocol`, in that
/// order, and where it came from (the subprotocol header must be answered).
fn find_token(
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> (Option<String>, AuthSource) {
    if let Some(t) = query.get("token").filter(|t| !t.is_empty()) {
        return (Some(t.clone()), AuthSource::Query);
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty());
    if bearer.is_some() {
        return (bearer, AuthSource::Header);
    }
    let offered: Vec<String> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect();
    if offered.iter().any(|p| p == BEARER_SUBPROTOCOL) {
        let token = offered.into_iter().find(|p| p != BEARER_SUBPROTOCOL);
        return (token, AuthSource::Subprotocol);
    }
    (None, AuthSource::Query)
}

/// Decides who the connection is, or refuses the upgrade with GoHub's 401 texts.
#[allow(clippy::result_large_err)]
fn start(
    node: &Node,
    auth: &crate::config::AuthConfig,
    token: Option<&str>,
    source: AuthSource,
    requested_id: Option<ClientId>,
) -> Result<Start, Response> {
    let client_id = || {
        requested_id
            .clone()
            .unwrap_or_else(|| ClientId::from(uuid::Uuid::new_v4().to_string()))
    };
    if !auth.enabled {
        // Auth off: the open developer default, every client anonymous with every permission.
        return Ok(Start::Ready(Identity::anonymous(
            client_id(),
            Permissions::all(),
        )));
    }
    if let Some(token) = token {
        let verified = node.verifier().verify(token);
        node.hub.metrics.auth(source, verified.is_ok());
        return match verified {
            Ok(identity) => Ok(Start::Ready(identity)),
            Err(e) => {
                tracing::info!(error = %e, "upgrade refused: bad token");
                Err((StatusCode::UNAUTHORIZED, "Unauthorized: Invalid token").into_response())
            }
        };
    }
    if auth.allow_anonymous {
        let perms = Permissions::parse_lenient(&auth.anonymous_permissions);
        return Ok(Start::Ready(Identity::anonymous(client_id(), perms)));
    }
    if auth.in_band {
        return Ok(Start::AuthenticateFirst);
    }
    Err((StatusCode::UNAUTHORIZED, "Unauthorized: Token required").into_response())
}

/// No `Origin` (not a browser) always passes; otherwise it must be listed, or the list empty.
fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return true;
    };
    allowed.is_empty()
        || allowed
            .iter()
            .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin))
}

/// Checks the upgrade headers; returns the `Sec-WebSocket-Key`.
#[allow(clippy::result_large_err)]
fn handshake_key(headers: &HeaderMap) -> Result<String, Response> {
    let bad = |why: &'static str| Err((StatusCode::BAD_REQUEST, why).into_response());
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
                .unwrap_or(false)
        })
    };
    if !has_token(header::UPGRADE, "websocket") || !has_token(header::CONNECTION, "upgrade") {
        return bad("Bad Request: expected a WebSocket upgrade (Upgrade: websocket)");
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        let mut res = (
            StatusCode::UPGRADE_REQUIRED,
            "Upgrade Required: Sec-WebSocket-Version must be 13",
        )
            .into_response();
        res.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return Err(res);
    }
    let Some(key) = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|k| k.to_str().ok())
    else {
        return bad("Bad Request: missing Sec-WebSocket-Key");
    };
    // The key must be 16 random bytes, base64-encoded (RFC 6455 §4.1).
    match base64::engine::general_purpose::STANDARD.decode(key.trim()) {
        Ok(raw) if raw.len() == 16 => Ok(key.trim().to_owned()),
        _ => bad("Bad Request: Sec-WebSocket-Key must be 16 bytes, base64-encoded"),
    }
}

fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(ACCEPT_GUID);
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_rfc_example() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}

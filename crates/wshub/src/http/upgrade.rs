//! `GET /ws`: validates the RFC 6455 handshake, answers 101, and hands the raw socket to
//! `conn` once hyper gives it back.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use hyper_util::rt::TokioIo;
use sha1::{Digest, Sha1};
use tokio::net::TcpStream;

use super::RemoteAddr;
use crate::conn;
use crate::ids::ClientId;
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
    let client_id = match query.get("client_id").map(String::as_str) {
        None | Some("") => ClientId::from(uuid::Uuid::new_v4().to_string()),
        Some(id) if id.len() > MAX_CLIENT_ID_LEN || id.chars().any(char::is_control) => {
            return (
                StatusCode::BAD_REQUEST,
                "Bad Request: client_id must be at most 256 bytes without control characters",
            )
                .into_response();
        }
        Some(id) => ClientId::from(id),
    };
    let Some(remote) = req.extensions().get::<RemoteAddr>().map(|r| r.0) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return (
            StatusCode::BAD_REQUEST,
            "Bad Request: connection cannot be upgraded",
        )
            .into_response();
    };

    let task_node = node.clone();
    node.tasks.spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed");
                return;
            }
        };
        match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => {
                conn::serve(
                    task_node,
                    parts.io.into_inner(),
                    parts.read_buf,
                    client_id,
                    remote,
                )
                .await;
            }
            Err(_) => tracing::error!("upgraded connection is not a TcpStream"),
        }
    });

    let mut res = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = res.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept_key(key.as_bytes())) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    res
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

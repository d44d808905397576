//! The WebSocket upgrade of `GET /ws`: validates the RFC 6455 handshake, applies auth and
//! the admission limits, and either refuses (with the status and text a client can act on)
//! or accepts with the 101 response.
//!
//! Two paths lead here. Nearly every upgrade arrives on a fresh TCP connection and is read
//! directly ([`super::handshake`]); one made on a kept-alive HTTP connection after other
//! requests comes through hyper and axum ([`ws_handler`]). Both decide with [`decide`].

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use sha1::{Digest, Sha1};

use super::RemoteAddr;
use crate::auth::{Identity, Permissions};
use crate::conn::{self, Start, Upgraded};
use crate::ids::ClientId;
use crate::limits::{Limit, Slot};
use crate::metrics::AuthSource;
use crate::node::Node;

/// RFC 6455 §1.3.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Longest client id accepted from `?client_id=`, in bytes.
const MAX_CLIENT_ID_LEN: usize = 256;

/// The request headers an upgrade decision reads: a parsed head on the direct path, hyper's
/// `HeaderMap` on the routed one.
pub(super) trait RequestHeaders {
    /// Every value of the header `name` (given in lowercase), in order.
    fn values<'a>(&'a self, name: &'static str) -> impl Iterator<Item = &'a [u8]>;

    fn first(&self, name: &'static str) -> Option<&[u8]> {
        self.values(name).next()
    }
}

impl RequestHeaders for HeaderMap {
    fn values<'a>(&'a self, name: &'static str) -> impl Iterator<Item = &'a [u8]> {
        self.get_all(name).iter().map(HeaderValue::as_bytes)
    }
}

impl RequestHeaders for [httparse::Header<'_>] {
    fn values<'a>(&'a self, name: &'static str) -> impl Iterator<Item = &'a [u8]> {
        self.iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }
}

/// An accepted upgrade: who the connection is, its admission slot, and what the 101 says.
pub(super) struct Accepted {
    pub(super) start: Start,
    pub(super) slot: Slot,
    accept_key: String,
    /// The token came as a subprotocol, which the 101 must select.
    via_subprotocol: bool,
}

impl Accepted {
    /// The 101 response as bytes, for the direct path (sent in one write with the first
    /// frames).
    pub(super) fn response_bytes(&self) -> Bytes {
        let protocol = if self.via_subprotocol {
            "sec-websocket-protocol: wshub.bearer\r\n"
        } else {
            ""
        };
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
             sec-websocket-accept: {}\r\n{protocol}\r\n",
            self.accept_key
        )
        .into()
    }

    /// The 101 response for hyper to send.
    fn response(&self) -> Response {
        let mut res = StatusCode::SWITCHING_PROTOCOLS.into_response();
        let h = res.headers_mut();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        if let Ok(v) = HeaderValue::from_str(&self.accept_key) {
            h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
        }
        if self.via_subprotocol {
            // Browsers fail the handshake unless one of their offered protocols is selected.
            h.insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(BEARER_SUBPROTOCOL),
            );
        }
        res
    }
}

/// A refused upgrade: the status, a text saying why, and the headers that tell the client
/// what to do instead.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Refusal {
    pub(super) status: StatusCode,
    pub(super) text: &'static str,
    /// `Retry-After: 1` (draining, or a limit).
    retry_after: bool,
    /// `Sec-WebSocket-Version: 13` (426 for another version).
    version_13: bool,
}

impl Refusal {
    pub(super) const fn new(status: StatusCode, text: &'static str) -> Self {
        Refusal {
            status,
            text,
            retry_after: false,
            version_13: false,
        }
    }

    const fn retry_after(mut self) -> Self {
        self.retry_after = true;
        self
    }

    /// The whole HTTP/1.1 response, for the direct path (which then closes the connection).
    pub(super) fn response_bytes(&self) -> Vec<u8> {
        let mut extra = String::new();
        if self.retry_after {
            extra.push_str("retry-after: 1\r\n");
        }
        if self.version_13 {
            extra.push_str("sec-websocket-version: 13\r\n");
        }
        format!(
            "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n\
             connection: close\r\n{extra}\r\n{}",
            self.status.as_str(),
            self.status.canonical_reason().unwrap_or(""),
            self.text.len(),
            self.text
        )
        .into_bytes()
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut res = (self.status, self.text).into_response();
        if self.retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.version_13 {
            res.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
        }
        res
    }
}

/// Decides an upgrade request of `remote` with these headers and query string.
pub(super) fn decide(
    node: &Node,
    headers: &(impl RequestHeaders + ?Sized),
    query: Option<&str>,
    remote: SocketAddr,
) -> Result<Accepted, Refusal> {
    let key = handshake_key(headers)?;
    if node.draining.is_cancelled() || node.shutdown.is_cancelled() {
        return Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service Unavailable: this node is shutting down; connect to another one",
        )
        .retry_after());
    }
    let config = node.config();
    if !origin_allowed(headers, &config.server.allowed_origins) {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "Forbidden: origin not allowed",
        ));
    }
    let params = QueryParams::parse(query.unwrap_or(""));
    let requested_id = match params.client_id.as_deref() {
        None | Some("") => None,
        Some(id) if id.len() > MAX_CLIENT_ID_LEN || id.chars().any(char::is_control) => {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "Bad Request: client_id must be at most 256 bytes without control characters",
            ));
        }
        Some(id) => Some(ClientId::from(id)),
    };
    let (token, source) = find_token(params.token, headers);
    let via_subprotocol = source == AuthSource::Subprotocol;
    let start = start(node, &config.auth, token.as_deref(), source, requested_id)?;
    let slot = match node.admission.admit(remote.ip(), &config.limits) {
        Ok(slot) => slot,
        Err(limit) => {
            node.hub.metrics.limited(limit);
            tracing::info!(%remote, limit = limit.as_str(), "upgrade refused by a limit");
            let refusal = match limit {
                Limit::Connections => Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Service Unavailable: this node is at limits.max_connections",
                ),
                Limit::ConnectionsPerIp => Refusal::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too Many Requests: too many connections from this address",
                ),
                _ => Refusal::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too Many Requests: connecting too fast from this address",
                ),
            };
            return Err(refusal.retry_after());
        }
    };
    Ok(Accepted {
        start,
        slot,
        accept_key: accept_key(key),
        via_subprotocol,
    })
}

/// The query parameters an upgrade reads (the last of each wins, as with a map).
#[derive(Default)]
struct QueryParams {
    token: Option<String>,
    client_id: Option<String>,
}

impl QueryParams {
    fn parse(query: &str) -> Self {
        let mut params = QueryParams::default();
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*name {
                "token" => params.token = Some(value.into_owned()),
                "client_id" => params.client_id = Some(value.into_owned()),
                _ => {}
            }
        }
        params
    }
}

/// `GET /ws` on a kept-alive HTTP connection (hyper's path): the socket comes back from
/// hyper after the 101 and the connection's task takes it from there.
pub(super) async fn ws_handler(State(node): State<Arc<Node>>, mut req: Request) -> Response {
    let Some(remote) = req.extensions().get::<RemoteAddr>().map(|r| r.0) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let accepted = match decide(&node, req.headers(), req.uri().query(), remote) {
        Ok(accepted) => accepted,
        Err(refusal) => return refusal.into_response(),
    };
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return Refusal::new(
            StatusCode::BAD_REQUEST,
            "Bad Request: connection cannot be upgraded",
        )
        .into_response();
    };
    let response = accepted.response();
    let Accepted { start, slot, .. } = accepted;
    let opening = Box::pin(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed");
                return None;
            }
        };
        let Ok(parts) = upgraded.downcast::<hyper_util::rt::TokioIo<super::Prefixed>>() else {
            tracing::error!("upgraded connection is not the listener's socket");
            return None;
        };
        let (unread, stream) = parts.io.into_inner().into_parts();
        // hyper read ahead of the request (`read_buf`); whatever it had not read yet of the
        // bytes the direct path read first (`unread`) comes after.
        let leftover = if unread.is_empty() {
            parts.read_buf
        } else {
            [parts.read_buf, unread].concat().into()
        };
        Some(Upgraded {
            stream,
            leftover,
            start,
            slot,
            greeting: None,
        })
    });
    node.tasks.spawn(conn::serve(node.clone(), remote, opening));
    response
}
/// Subprotocol marking the other offered subprotocol as a bearer token, for browsers (which
/// cannot set headers): `new WebSocket(url, ["wshub.bearer", token])`.
pub(crate) const BEARER_SUBPROTOCOL: &str = "wshub.bearer";

/// The token, from `?token=`, `Authorization: Bearer`, or `Sec-WebSocket-Protocol`, in that
/// order, and where it came from (the subprotocol header must be answered).
fn find_token(
    query_token: Option<String>,
    headers: &(impl RequestHeaders + ?Sized),
) -> (Option<String>, AuthSource) {
    if let Some(t) = query_token.filter(|t| !t.is_empty()) {
        return (Some(t), AuthSource::Query);
    }
    let bearer = headers
        .first("authorization")
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty());
    if let Some(bearer) = bearer {
        return (Some(bearer.to_owned()), AuthSource::Header);
    }
    let offered = || {
        headers
            .values("sec-websocket-protocol")
            .filter_map(|v| std::str::from_utf8(v).ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|p| !p.is_empty())
    };
    if offered().any(|p| p == BEARER_SUBPROTOCOL) {
        let token = offered()
            .find(|p| *p != BEARER_SUBPROTOCOL)
            .map(str::to_owned);
        return (token, AuthSource::Subprotocol);
    }
    (None, AuthSource::Query)
}

/// Decides who the connection is, or refuses the upgrade with GoHub's 401 texts.
fn start(
    node: &Node,
    auth: &crate::config::AuthConfig,
    token: Option<&str>,
    source: AuthSource,
    requested_id: Option<ClientId>,
) -> Result<Start, Refusal> {
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
                Err(Refusal::new(
                    StatusCode::UNAUTHORIZED,
                    "Unauthorized: Invalid token",
                ))
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
    Err(Refusal::new(
        StatusCode::UNAUTHORIZED,
        "Unauthorized: Token required",
    ))
}

/// No `Origin` (not a browser) always passes; otherwise it must be listed, or the list empty.
fn origin_allowed(headers: &(impl RequestHeaders + ?Sized), allowed: &[String]) -> bool {
    let Some(origin) = headers
        .first("origin")
        .and_then(|o| std::str::from_utf8(o).ok())
    else {
        return true;
    };
    allowed.is_empty()
        || allowed
            .iter()
            .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin))
}

/// Checks the upgrade headers; returns the `Sec-WebSocket-Key`.
fn handshake_key(headers: &(impl RequestHeaders + ?Sized)) -> Result<&[u8], Refusal> {
    let bad = |why: &'static str| Err(Refusal::new(StatusCode::BAD_REQUEST, why));
    let has_token = |name: &'static str, token: &str| {
        headers.values(name).any(|v| {
            std::str::from_utf8(v)
                .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
                .unwrap_or(false)
        })
    };
    if !has_token("upgrade", "websocket") || !has_token("connection", "upgrade") {
        return bad("Bad Request: expected a WebSocket upgrade (Upgrade: websocket)");
    }
    if headers.first("sec-websocket-version") != Some(b"13") {
        let mut refusal = Refusal::new(
            StatusCode::UPGRADE_REQUIRED,
            "Upgrade Required: Sec-WebSocket-Version must be 13",
        );
        refusal.version_13 = true;
        return Err(refusal);
    }
    let Some(key) = headers.first("sec-websocket-key") else {
        return bad("Bad Request: missing Sec-WebSocket-Key");
    };
    let key = key.trim_ascii();
    // The key must be 16 random bytes, base64-encoded (RFC 6455 §4.1).
    let mut raw = [0u8; 32];
    match base64::engine::general_purpose::STANDARD.decode_slice(key, &mut raw) {
        Ok(16) => Ok(key),
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

//! One WebSocket connection: one task that reads, handles and writes, and its bounded
//! outbound queue.
//!
//! ```text
//! socket --FrameReader--> task --dispatch--> hub --ConnHandle::send--> queue --> task --> socket
//! ```
//!
//! The task ([`live`]) is a hand-written future, so an idle connection costs only the fields
//! it needs (memory per connection is what this server competes on). Each poll it finishes a
//! handler in flight, writes what is queued ([`outbound`]), then reads and handles the next
//! message. Handlers run one at a time, so a client's messages are handled in order. Read
//! deadlines, pings and token expiry are one node-wide sweeper's job ([`sweeper`]), so a
//! connection owns no timers. Everything that ends a connection goes through
//! [`ConnControl::close`], which records the close code once and wakes the task.
//!
//! A connection that arrived without a token (when auth requires one) is not registered,
//! and nothing but `authenticate` is accepted, until a valid token arrives within
//! `auth.handshake_timeout` ([`authenticate`]).

mod authenticate;
mod handle;
mod live;
mod outbound;
mod queue;
mod reader;
pub(crate) mod sweeper;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpStream;
use tracing::Instrument;
use wshub_protocol::messages::{Authenticated, Connected};
use wshub_protocol::{ErrorCode, InboundEnvelope, MessageType, close};

pub(crate) use handle::{ConnControl, ConnHandle, SendOutcome};
pub(crate) use reader::poll_read_sized;

use crate::auth::Identity;
use crate::dispatch::{self, HandlerError};
use crate::limits::{Limit, MessageRate, Slot, Verdict, json_too_deep};
use crate::node::Node;
use crate::sdk::Client;
use crate::webhooks::EventKind;

/// How long, after we sent our close frame, we keep reading for the client's reply before
/// dropping the socket (closing with unread data would send a RST and can destroy the close
/// frame in the client's receive buffer). Not when the client closed first: it sends
/// nothing more after its close frame.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Who the connection is when the upgrade completes.
pub(crate) enum Start {
    /// Identified at upgrade (token, or anonymous).
    Ready(Identity),
    /// No token yet: the first message must be `authenticate`.
    AuthenticateFirst,
}

/// A socket whose WebSocket upgrade was accepted: what a connection starts from.
pub(crate) struct Upgraded {
    pub(crate) stream: TcpStream,
    /// Bytes read past the upgrade request (frames the client sent without waiting).
    pub(crate) leftover: Bytes,
    pub(crate) start: Start,
    /// The admission limits' place, held until the task ends.
    pub(crate) slot: Slot,
    /// Sent before any frame: the 101 response, when the HTTP layer left it to us (so it
    /// goes out in one write with `connected`).
    pub(crate) greeting: Option<Bytes>,
}

/// How a connection's task begins: the HTTP layer's handshake, `None` if it did not end in a
/// WebSocket (a refused upgrade, or the connection was HTTP).
pub(crate) type Opening = Pin<Box<dyn Future<Output = Option<Upgraded>> + Send>>;

/// The task of one connection, from its handshake to the end.
pub(crate) fn serve(
    node: Arc<Node>,
    remote: SocketAddr,
    opening: Opening,
) -> impl Future<Output = ()> + Send {
    // `client_id` is recorded once the handshake says who the client is.
    let span = tracing::info_span!("conn", client_id = tracing::field::Empty, node_id = %node.hub.node_id(), %remote);
    live::Lifecycle::new(node, remote, opening).instrument(span)
}

/// Queues `connected`, registers the client (here and cluster-wide), fires `on_connect`.
async fn connect(node: &Arc<Node>, conn: &Arc<ConnHandle>) {
    // `connected` is queued before the client is reachable, so nothing can overtake it.
    send_frame(
        node,
        conn,
        MessageType::Connected,
        &Connected {
            client_id: conn.client_id.to_string(),
            node_id: node.hub.node_id().to_string(),
        },
        None,
    );
    if let Some((old, left)) = node.hub.register(conn.clone()) {
        tracing::info!(old_remote = %old.remote, "connection replaced an older one with the same client id");
        for room in left {
            node.forget_membership(room.as_str(), conn.client_id.as_str())
                .await;
        }
    }
    node.register_client(conn).await;
    tracing::info!(authenticated = conn.is_authenticated(), "client connected");
    node.hooks.connect(&Client::new(node.clone(), conn.clone()));
    node.webhook(EventKind::Connect, conn.client_id.as_str(), |e| e);
}

/// Unregisters the client (leaving its rooms) and fires the leave and disconnect hooks; the
/// cluster state follows in the background.
fn disconnect(node: &Arc<Node>, conn: &Arc<ConnHandle>, code: u16, reason: &str) {
    let left = disconnect_here(node, conn, code, reason);
    // The cluster state: memberships, registration, and the bus subscriptions that follow.
    let cleanup = node.clone();
    let client_id = conn.client_id.to_string();
    node.tasks
        .spawn(async move { cleanup.unregister_client(&client_id, left).await });
}

/// [`disconnect`] on this node only: returns the rooms left, whose cluster memberships the
/// caller must forget (`Node::unregister_client`).
fn disconnect_here(
    node: &Arc<Node>,
    conn: &Arc<ConnHandle>,
    code: u16,
    reason: &str,
) -> Vec<crate::ids::RoomId> {
    let client = Client::new(node.clone(), conn.clone());
    let left = node.hub.unregister(conn);
    for room in &left {
        node.hooks.leave(&client, room.as_str());
        node.webhook(EventKind::Leave, conn.client_id.as_str(), |e| {
            e.in_room(room.as_str())
        });
    }
    tracing::info!(code, reason, rooms_left = left.len(), "client disconnected");
    node.hooks.disconnect(&client, code, reason);
    node.webhook(EventKind::Disconnect, conn.client_id.as_str(), |mut e| {
        e.code = Some(code);
        e.reason = Some(reason.to_owned());
        e
    });
    left
}

fn send_frame(
    node: &Node,
    conn: &ConnHandle,
    t: MessageType,
    data: &impl serde::Serialize,
    correlation: Option<i64>,
) {
    match node.hub.frame(t.as_str(), data, correlation) {
        Ok(frame) => {
            node.hub.send_to(conn, frame);
        }
        Err(e) => tracing::error!(error = %e, "failed to encode {t}"),
    }
}

fn reply_authenticated(node: &Node, conn: &ConnHandle, correlation: Option<i64>) {
    send_frame(
        node,
        conn,
        MessageType::Authenticated,
        &Authenticated {
            client_id: conn.client_id.to_string(),
            expires_at: conn.expires_at(),
        },
        correlation,
    );
}

/// Applies `limits.messages_per_second` and `limits.max_json_depth` to one inbound message;
/// false = it was answered with an error (or the connection is closing) and must not be
/// handled.
fn admit_message(node: &Node, conn: &ConnHandle, rate: &mut MessageRate, msg: &[u8]) -> bool {
    let limit = node.limits.message_rate();
    let refused = match rate.check(limit) {
        Verdict::Accept => {
            let max_depth = node.limits.max_json_depth();
            if !json_too_deep(msg, max_depth) {
                return true;
            }
            node.hub.metrics.limited(Limit::JsonDepth);
            HandlerError::new(ErrorCode::InvalidFormat, "message nested too deeply")
                .with_details(serde_json::json!({ "max_json_depth": max_depth }))
        }
        Verdict::Refuse => {
            node.hub.metrics.limited(Limit::MessageRate);
            HandlerError::new(ErrorCode::RateLimited, "too many messages: slow down")
                .with_details(serde_json::json!({ "messages_per_second": limit.per_second }))
        }
        Verdict::Close => {
            node.hub.metrics.limited(Limit::MessageRate);
            tracing::info!("closing: kept sending over the message rate limit");
            conn.close(close::POLICY, "rate limit exceeded");
            return false;
        }
    };
    // The request id, if the message has one, so the client can match the refusal.
    let correlation = InboundEnvelope::decode(msg)
        .ok()
        .and_then(|e| e.correlation_id());
    dispatch::send_error(node, conn, &refused, correlation);
    false
}

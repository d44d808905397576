//! One WebSocket connection: its read loop, its bounded outbound queue, its writer task.
//!
//! ```text
//! socket --FrameReader--> read loop --dispatch--> hub --ConnHandle::send--> queue --> writer --> socket
//! ```
//!
//! The read loop reads like mini-redis's `Handler::run`: select over the next frame and the
//! close signal; decode; hand off. (Read deadlines, pings and token expiry are one node-wide
//! sweeper's job, see [`sweeper`], so a connection owns no timers.) Handlers run
//! inline, so a client's messages are handled in order. Everything that ends a connection
//! goes through [`ConnControl::close`], which records the close code once and wakes both
//! tasks.
//!
//! A connection that arrived without a token (when auth requires one) first goes through
//! [`authenticate_first`]: it is not registered, and nothing but `authenticate` is accepted,
//! until a valid token arrives within `auth.handshake_timeout`.

mod handle;
mod queue;
mod reader;
pub(crate) mod sweeper;
mod writer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::time::{Instant, sleep_until, timeout};
use tracing::Instrument;
use wshub_protocol::messages::{AuthenticateRequest, Authenticated, Connected};
use wshub_protocol::{ErrorCode, InboundEnvelope, MessageType, close};

pub(crate) use handle::{ConnControl, ConnHandle, SendOutcome};
use reader::{FrameReader, Incoming, ReadError};

use crate::auth::{Identity, Permissions};
use crate::dispatch::{self, Dispatched, HandlerError};
use crate::ids::ClientId;
use crate::limits::{Limit, MessageRate, Verdict, json_too_deep};
use crate::node::Node;
use crate::sdk::Client;
use crate::webhooks::EventKind;
use crate::wire;

/// How long, after we sent our close frame, we keep reading for the client's reply before
/// dropping the socket (closing with unread data would send a RST and can destroy the close
/// frame in the client's receive buffer).
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Who the connection is when the upgrade completes.
pub(crate) enum Start {
    /// Identified at upgrade (token, or anonymous).
    Ready(Identity),
    /// No token yet: the first message must be `authenticate`.
    AuthenticateFirst,
}

/// Runs a connection from right after the upgrade to the end.
///
/// Not an `async fn`: its arguments would be stored in the future a second time (next to
/// `run`'s), for the whole life of the connection. The span is made here and wraps `run`.
pub(crate) fn serve(
    node: Arc<Node>,
    stream: TcpStream,
    leftover: Bytes,
    start: Start,
    remote: SocketAddr,
) -> impl std::future::Future<Output = ()> + Send {
    let span = match &start {
        Start::Ready(id) => {
            tracing::info_span!("conn", client_id = %id.client_id, node_id = %node.hub.node_id(), %remote)
        }
        Start::AuthenticateFirst => {
            tracing::info_span!("conn", client_id = tracing::field::Empty, node_id = %node.hub.node_id(), %remote)
        }
    };
    run(node, stream, leftover, start, remote).instrument(span)
}

async fn run(
    node: Arc<Node>,
    stream: TcpStream,
    leftover: Bytes,
    start: Start,
    remote: SocketAddr,
) {
    let config = node.config();
    let cfg = &config.server.hub;
    let (mut rd, wr) = stream.into_split();
    let queue = Arc::new(queue::OutQueue::bounded(
        cfg.message_buffer_cap.max(1),
        cfg.max_queued_bytes,
        (cfg.slow_consumer_policy == crate::config::SlowConsumerPolicy::DropOldest)
            .then(|| node.hub.metrics.dropped_frames.clone()),
    ));
    let control = Arc::new(ConnControl::new(queue.clone()));
    let writer = node.tasks.spawn(writer::run(
        wr,
        queue.clone(),
        control.clone(),
        writer::WriterConfig {
            write_timeout: cfg.write_timeout,
            max_batch_bytes: cfg.write_buffer_size.max(1024),
            bytes_out: node.hub.metrics.bytes_out.clone(),
        },
    ));
    let mut reader = FrameReader::new(leftover, cfg.max_message_size, cfg.read_buffer_size);

    let (identity, auth_reply) = match start {
        Start::Ready(identity) => (identity, None),
        Start::AuthenticateFirst => {
            // Not registered yet: replies go straight into the queue.
            let pending = ConnHandle::new(
                0,
                Identity::anonymous(ClientId::from(""), Permissions::none()),
                remote,
                queue.clone(),
                control.clone(),
            );
            match Box::pin(authenticate_first(&node, &pending, &mut reader, &mut rd)).await {
                Some((identity, correlation)) => {
                    tracing::Span::current().record("client_id", identity.client_id.as_str());
                    (identity, Some(correlation))
                }
                None => {
                    Box::pin(finish(&node, &control, writer, &mut reader, &mut rd)).await;
                    return;
                }
            }
        }
    };
    let mut conn = Arc::new(ConnHandle::new(
        node.next_conn_id(),
        identity,
        remote,
        queue,
        control.clone(),
    ));
    if let Some(correlation) = auth_reply {
        reply_authenticated(&node, &conn, correlation);
    }
    Box::pin(connect(&node, &conn)).await;
    let metrics = node.hub.metrics.clone();
    metrics.connections_opened.inc();
    metrics.connections.inc();

    loop {
        match read_loop(&node, &conn, &mut reader, &mut rd).await {
            Ended::Closed => break,
            Ended::Reidentify {
                identity,
                correlation,
            } => {
                // An anonymous connection proved who it is: it leaves as the anonymous client
                // and comes back as the token's user, on the same socket.
                disconnect(&node, &conn, close::NORMAL, "re-authenticated");
                conn = Arc::new(conn.reidentified(node.next_conn_id(), identity));
                tracing::Span::current().record("client_id", conn.client_id.as_str());
                reply_authenticated(&node, &conn, correlation);
                Box::pin(connect(&node, &conn)).await;
            }
        }
    }

    let (code, reason) = control.close_reason().unwrap_or((close::NORMAL, ""));
    disconnect(&node, &conn, code, reason);
    metrics.connections.dec();
    metrics.closed(code, reason);
    Box::pin(finish(&node, &control, writer, &mut reader, &mut rd)).await;
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

/// Unregisters the client (leaving its rooms) and fires the leave and disconnect hooks.
fn disconnect(node: &Arc<Node>, conn: &Arc<ConnHandle>, code: u16, reason: &str) {
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
    // The cluster state: memberships, registration, and the bus subscriptions that follow.
    let cleanup = node.clone();
    let client_id = conn.client_id.to_string();
    node.tasks
        .spawn(async move { cleanup.unregister_client(&client_id, left).await });
}

/// Waits for our close frame to go out, then briefly for the client's.
async fn finish(
    node: &Node,
    control: &ConnControl,
    writer: tokio::task::JoinHandle<()>,
    reader: &mut FrameReader,
    rd: &mut OwnedReadHalf,
) {
    control.close(close::NORMAL, "");
    let _ = timeout(CLOSE_LINGER, writer).await;
    let _ = timeout(CLOSE_LINGER, async {
        while reader.next(rd, &node.limits.max_message_size).await.is_ok() {}
    })
    .await;
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

/// The first message must be a valid `authenticate` within `auth.handshake_timeout`.
/// Anything else gets an error frame and close 4401. Returns the identity and the request's
/// correlation id.
async fn authenticate_first(
    node: &Node,
    pending: &ConnHandle,
    reader: &mut FrameReader,
    rd: &mut OwnedReadHalf,
) -> Option<(Identity, Option<i64>)> {
    let deadline = Instant::now() + node.config().auth.handshake_timeout;
    let fail = |error: HandlerError, correlation: Option<i64>| {
        tracing::info!(code = error.code.as_u16(), reason = %error.message, "in-band authentication failed");
        dispatch::send_error(node, pending, &error, correlation);
        pending.close(close::UNAUTHORIZED, "authentication failed");
        None
    };
    loop {
        let next = tokio::select! {
            next = reader.next(rd, &node.limits.max_message_size) => next,
            _ = sleep_until(deadline) => {
                return fail(HandlerError::new(ErrorCode::Unauthorized, "authentication timed out: send authenticate {token} first"), None);
            }
        };
        let frame = match next {
            Ok(Incoming::Text(f) | Incoming::Binary(f)) => f,
            Ok(Incoming::Ping(payload)) => {
                pending.send(wire::control_frame(wire::OP_PONG, &payload));
                continue;
            }
            Ok(Incoming::Pong) => continue,
            Ok(Incoming::Close(_)) | Err(_) => return None,
        };
        let env = match InboundEnvelope::decode(&frame) {
            Ok(env) => env,
            Err(e) => return fail(e.into(), None),
        };
        let correlation = env.correlation_id();
        if MessageType::parse(&env.message_type) != Some(MessageType::Authenticate) {
            return fail(
                HandlerError::new(
                    ErrorCode::Unauthorized,
                    "authenticate first: send authenticate {token}",
                ),
                correlation,
            );
        }
        let token = env
            .data
            .and_then(|d| serde_json::from_str::<AuthenticateRequest>(d.get()).ok());
        let Some(req) = token else {
            return fail(
                HandlerError::new(ErrorCode::InvalidFormat, "authenticate needs data {token}"),
                correlation,
            );
        };
        let verified = node.verifier().verify(&req.token);
        node.hub
            .metrics
            .auth(crate::metrics::AuthSource::InBand, verified.is_ok());
        return match verified {
            Ok(identity) => Some((identity, correlation)),
            Err(e) => fail(HandlerError::new(e.code(), e.to_string()), correlation),
        };
    }
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

enum Ended {
    Closed,
    /// The anonymous connection authenticated as another client id.
    Reidentify {
        identity: Identity,
        correlation: Option<i64>,
    },
}

async fn read_loop(
    node: &Arc<Node>,
    conn: &Arc<ConnHandle>,
    reader: &mut FrameReader,
    rd: &mut OwnedReadHalf,
) -> Ended {
    // No timers here: the node's sweeper (`conn::sweeper`) handles the read timeout, pings and
    // token expiry for every connection, so an idle connection's task is just this select.
    let mut rate = MessageRate::new();
    loop {
        tokio::select! {
            biased;
            _ = conn.cancelled() => return Ended::Closed,
            next = reader.next(rd, &node.limits.max_message_size) => {
                conn.last_seen_ms.store(handle::now_ms(), std::sync::atomic::Ordering::Relaxed);
                match next {
                    Ok(Incoming::Text(msg) | Incoming::Binary(msg)) => {
                        if !admit_message(node, conn, &mut rate, &msg) {
                            continue;
                        }
                        // A trace per message: the exporter does not see the `conn` span (see
                        // `telemetry`), so this is a root there, while logs keep `conn`'s fields.
                        let span = tracing::debug_span!(
                            "ws.message",
                            message_type = tracing::field::Empty,
                            client_id = %conn.client_id,
                            node_id = %node.hub.node_id()
                        );
                        // Boxed: the handler futures are large, and an idle connection should not
                        // carry their space in its task (allocated only while a message is handled).
                        if let Dispatched::Reidentify { identity, correlation } =
                            Box::pin(dispatch::dispatch(node, conn, &msg).instrument(span)).await
                        {
                            return Ended::Reidentify { identity, correlation };
                        }
                    }
                    Ok(Incoming::Ping(payload)) => {
                        conn.send(wire::control_frame(wire::OP_PONG, &payload));
                    }
                    Ok(Incoming::Pong) => {}
                    Ok(Incoming::Close(_)) => {
                        conn.close(close::NORMAL, "");
                        return Ended::Closed;
                    }
                    Err(e) => {
                        let (code, reason) = match e {
                            ReadError::Eof => (close::NORMAL, "connection closed"),
                            ReadError::TooBig => (close::TOO_BIG, close::reason::TOO_BIG),
                            ReadError::InvalidUtf8 => (close::INVALID_PAYLOAD, "invalid utf-8"),
                            ReadError::Protocol(why) => (close::PROTOCOL_ERROR, why),
                        };
                        conn.close(code, reason);
                        return Ended::Closed;
                    }
                }
            }
        }
    }
}

//! A connection's task, written as a state machine by hand.
//!
//! Why not an `async fn`: a task's future is allocated once, at its largest, and lives as
//! long as the connection. An `async fn` that sets a connection up, serves it and tears it
//! down keeps a slot for every local that lives across any of its awaits, and its arguments
//! twice; ours came to about 1.4 KB, plus a second task for the writer (640 bytes), for
//! every idle socket. Here the task is one [`Lifecycle`] value: while the connection is live
//! it holds exactly the fields of [`Connection`], and the short phases (a handler waiting on
//! the cluster, the closing handshake) are boxed only while they run.
//!
//! One task reads and writes. Each poll: finish the handler in flight, if any (its replies
//! are queued); write what is queued; read and handle the next message, unless a handler is
//! still in flight (a client's messages are handled in order). Writing goes on while a
//! handler waits, so a handler that waits for queue space (a long replay) makes progress.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::time::{Sleep, sleep};
use tracing::Instrument;
use wshub_protocol::{ErrorCode, close};

use super::outbound::{Outbound, Progress, WriteSettings};
use super::reader::{FrameReader, Incoming, ReadError};
use super::{
    CLOSE_LINGER, ConnControl, ConnHandle, Opening, Start, Upgraded, admit_message, authenticate,
    connect, disconnect, disconnect_here, reply_authenticated,
};
use crate::auth::{Identity, Permissions};
use crate::dispatch::{self, Dispatched, HandlerError};
use crate::ids::ClientId;
use crate::limits::{MessageRate, Slot};
use crate::node::Node;
use crate::wire;

/// Messages handled in one poll before the task yields to others.
const MESSAGES_PER_POLL: u32 = 32;

/// A handler (or `connect`) while it waits, boxed: its future is large and short-lived.
pub(super) type InFlight = Pin<Box<dyn Future<Output = Step> + Send>>;

/// What an in-flight future finished with.
pub(super) enum Step {
    Handled,
    /// `connect` finished: the client is registered here and in the cluster.
    Connected,
    /// An anonymous connection authenticated as another client id.
    Reidentify {
        identity: Identity,
        correlation: Option<i64>,
    },
}

/// The whole life of a connection's task.
pub(super) enum Lifecycle {
    /// The HTTP handshake, boxed: it is short and its buffers go with it.
    Opening {
        node: Arc<Node>,
        remote: SocketAddr,
        opening: Opening,
    },
    Live(Connection),
    /// The closing handshake and the cleanup.
    Ending(Pin<Box<dyn Future<Output = ()> + Send>>),
    Done,
}

impl Lifecycle {
    pub(super) fn new(node: Arc<Node>, remote: SocketAddr, opening: Opening) -> Self {
        Lifecycle::Opening {
            node,
            remote,
            opening,
        }
    }
}

impl Future for Lifecycle {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            match this {
                Lifecycle::Opening { opening, .. } => {
                    let upgraded = match opening.as_mut().poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(upgraded) => upgraded,
                    };
                    let Lifecycle::Opening { node, remote, .. } =
                        std::mem::replace(this, Lifecycle::Done)
                    else {
                        unreachable!("matched above");
                    };
                    let Some(upgraded) = upgraded else {
                        return Poll::Ready(());
                    };
                    if let Start::Ready(identity) = &upgraded.start {
                        tracing::Span::current().record("client_id", identity.client_id.as_str());
                    }
                    *this = Lifecycle::Live(Connection::new(node, upgraded, remote));
                }
                Lifecycle::Live(conn) => {
                    if conn.poll_live(cx).is_pending() {
                        return Poll::Pending;
                    }
                    let Lifecycle::Live(conn) = std::mem::replace(this, Lifecycle::Done) else {
                        unreachable!("matched above");
                    };
                    *this = Lifecycle::Ending(Box::pin(conn.end()));
                }
                Lifecycle::Ending(ending) => {
                    if ending.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    *this = Lifecycle::Done;
                }
                Lifecycle::Done => return Poll::Ready(()),
            }
        }
    }
}

/// Everything a live connection holds.
pub(super) struct Connection {
    node: Arc<Node>,
    /// Who the socket is now (a placeholder, not registered, until an `authenticate_first`
    /// connection has authenticated).
    conn: Arc<ConnHandle>,
    stream: TcpStream,
    reader: FrameReader,
    outbound: Outbound,
    rate: MessageRate,
    in_flight: Option<InFlight>,
    /// While the first message must be `authenticate` (`auth.handshake_timeout`).
    auth_deadline: Option<Pin<Box<Sleep>>>,
    /// The client is registered (its first `connect` finished), so ending must unregister it.
    registered: bool,
    /// The client sent its close frame or ended its stream: it sends nothing more, so ending
    /// need not wait for it.
    peer_done: bool,
    /// The admission slot (`limits.max_connections`, per IP), given back when the task ends.
    _slot: Slot,
}

impl Connection {
    fn new(node: Arc<Node>, upgraded: Upgraded, remote: SocketAddr) -> Self {
        let Upgraded {
            stream,
            leftover,
            start,
            slot,
            greeting,
        } = upgraded;
        let config = node.config();
        let cfg = &config.server.hub;
        let queue = Arc::new(super::queue::OutQueue::bounded(
            cfg.message_buffer_cap.max(1),
            cfg.max_queued_bytes,
            (cfg.slow_consumer_policy == crate::config::SlowConsumerPolicy::DropOldest)
                .then(|| node.hub.metrics.dropped_frames.clone()),
        ));
        let control = Arc::new(ConnControl::new(queue.clone()));
        let reader = FrameReader::new(leftover, cfg.max_message_size, cfg.read_buffer_size);
        let (conn_id, identity, auth_deadline) = match start {
            Start::Ready(identity) => (node.next_conn_id(), identity, None),
            Start::AuthenticateFirst => (
                // A placeholder, not registered: replies to it go straight into the queue.
                0,
                Identity::anonymous(ClientId::from(""), Permissions::none()),
                Some(Box::pin(sleep(config.auth.handshake_timeout))),
            ),
        };
        let conn = Arc::new(ConnHandle::new(conn_id, identity, remote, queue, control));
        let in_flight = auth_deadline
            .is_none()
            .then(|| connect_in_flight(&node, &conn));
        Connection {
            node,
            conn,
            stream,
            reader,
            outbound: Outbound::new(greeting),
            rate: MessageRate::new(),
            in_flight,
            auth_deadline,
            registered: false,
            peer_done: false,
            _slot: slot,
        }
    }

    /// Ready when the connection is closing (the close reason is recorded).
    fn poll_live(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        // Running: the replies queued below need no wake-up (we write them before sleeping).
        self.conn.control.queue().unpark();
        let mut handled = 0;
        loop {
            if let Some(in_flight) = self.in_flight.as_mut()
                && let Poll::Ready(step) = in_flight.as_mut().poll(cx)
            {
                self.in_flight = None;
                self.after(step);
                // It may have started another (`connect` after re-authentication), which must
                // be polled to be woken.
                continue;
            }
            let progress = self.write(cx);
            match progress {
                Progress::Failed => self.conn.close(close::GOING_AWAY, "write failed"),
                // The queue closed without the connection closing: only a poisoned queue lock
                // does that. End rather than spin.
                Progress::Closing => self.conn.close(close::INTERNAL, "internal error"),
                Progress::Drained | Progress::Blocked => {}
            }
            if self.conn.control.is_closing() {
                return Poll::Ready(());
            }
            if self.in_flight.is_none() {
                if let Some(deadline) = self.auth_deadline.as_mut()
                    && deadline.as_mut().poll(cx).is_ready()
                {
                    self.auth_deadline = None;
                    let error = HandlerError::new(
                        ErrorCode::Unauthorized,
                        "authentication timed out: send authenticate {token} first",
                    );
                    authenticate::fail::<()>(&self.node, &self.conn, &error, None);
                    continue;
                }
                if handled == MESSAGES_PER_POLL {
                    // Let other connections run; come back at once.
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                let limit = &self.node.limits.max_message_size;
                if let Poll::Ready(next) = self.reader.poll_next(cx, &mut self.stream, limit) {
                    handled += 1;
                    self.peer_done |= matches!(next, Ok(Incoming::Close(_)) | Err(ReadError::Eof));
                    self.on_incoming(next);
                    continue;
                }
            }
            // About to sleep: from here on closing, and a queued frame unless the socket is
            // full, must wake us (the socket's readiness wakes us for the rest). A frame
            // queued between the write above and this registration is handled now.
            let drained = progress == Progress::Drained;
            if self.conn.control.queue().park(cx, drained) {
                continue;
            }
            return Poll::Pending;
        }
    }

    fn write(&mut self, cx: &mut Context<'_>) -> Progress {
        let node = &self.node;
        let settings = WriteSettings {
            write_timeout: node.limits.write_timeout(),
            max_batch_bytes: node.limits.write_batch_bytes(),
            bytes_out: &node.hub.metrics.bytes_out,
        };
        self.outbound
            .poll_write(cx, &mut self.stream, &self.conn.control, &settings)
    }

    fn on_incoming(&mut self, next: Result<Incoming, ReadError>) {
        if self.auth_deadline.is_some() {
            return self.on_incoming_unauthenticated(next);
        }
        let conn = &self.conn;
        conn.last_seen_ms.store(
            super::handle::now_ms(),
            std::sync::atomic::Ordering::Relaxed,
        );
        match next {
            Ok(Incoming::Text(msg) | Incoming::Binary(msg)) => {
                if admit_message(&self.node, conn, &mut self.rate, &msg) {
                    self.in_flight = Some(handle_message(&self.node, conn, msg));
                }
            }
            Ok(Incoming::Ping(payload)) => {
                conn.send(wire::control_frame(wire::OP_PONG, &payload));
            }
            Ok(Incoming::Pong) => {}
            Ok(Incoming::Close(_)) => conn.close(close::NORMAL, ""),
            Err(e) => {
                let (code, reason) = match e {
                    ReadError::Eof => (close::NORMAL, "connection closed"),
                    ReadError::TooBig => (close::TOO_BIG, close::reason::TOO_BIG),
                    ReadError::InvalidUtf8 => (close::INVALID_PAYLOAD, "invalid utf-8"),
                    ReadError::Protocol(why) => (close::PROTOCOL_ERROR, why),
                };
                conn.close(code, reason);
            }
        }
    }

    /// The first message of an `authenticate_first` connection.
    fn on_incoming_unauthenticated(&mut self, next: Result<Incoming, ReadError>) {
        let frame = match next {
            Ok(Incoming::Text(f) | Incoming::Binary(f)) => f,
            Ok(Incoming::Ping(payload)) => {
                self.conn.send(wire::control_frame(wire::OP_PONG, &payload));
                return;
            }
            Ok(Incoming::Pong) => return,
            Ok(Incoming::Close(_)) | Err(_) => {
                self.conn.close(close::NORMAL, "");
                return;
            }
        };
        self.auth_deadline = None;
        let Some((identity, correlation)) = authenticate::first(&self.node, &self.conn, &frame)
        else {
            return;
        };
        tracing::Span::current().record("client_id", identity.client_id.as_str());
        self.conn = Arc::new(self.conn.reidentified(self.node.next_conn_id(), identity));
        reply_authenticated(&self.node, &self.conn, correlation);
        self.in_flight = Some(connect_in_flight(&self.node, &self.conn));
    }

    fn after(&mut self, step: Step) {
        match step {
            Step::Handled => {}
            Step::Connected => count_registered(&self.node, &mut self.registered),
            Step::Reidentify {
                identity,
                correlation,
            } => {
                // An anonymous connection proved who it is: it leaves as the anonymous client
                // and comes back as the token's user, on the same socket.
                // The anonymous client's cluster memberships are gone before the user
                // connects, so nothing it does next sees the anonymous client.
                let node = &self.node;
                let left = disconnect_here(node, &self.conn, close::NORMAL, "re-authenticated");
                let old_id = self.conn.client_id.to_string();
                self.conn = Arc::new(self.conn.reidentified(node.next_conn_id(), identity));
                tracing::Span::current().record("client_id", self.conn.client_id.as_str());
                reply_authenticated(node, &self.conn, correlation);
                let (node, conn) = (node.clone(), self.conn.clone());
                self.in_flight = Some(Box::pin(async move {
                    node.unregister_client(&old_id, left).await;
                    connect(&node, &conn).await;
                    Step::Connected
                }));
            }
        }
    }

    /// Closing: lets a handler in flight finish, unregisters the client, and meanwhile sends
    /// what is queued and the close frame; then waits briefly for the client's close frame
    /// (dropping a socket with unread data sends a RST, which can destroy our close frame in
    /// the client's receive buffer).
    async fn end(self) {
        let Connection {
            node,
            conn,
            mut stream,
            mut reader,
            outbound,
            in_flight,
            mut registered,
            peer_done,
            _slot,
            ..
        } = self;
        let control = conn.control.clone();
        let reason = control.close_reason().unwrap_or((close::NORMAL, ""));
        let cleanup = async {
            if let Some(in_flight) = in_flight
                && let Step::Connected = in_flight.await
            {
                count_registered(&node, &mut registered);
            }
            if registered {
                let (code, why) = reason;
                disconnect(&node, &conn, code, why);
                node.hub.metrics.connections.dec();
                node.hub.metrics.closed(code, why);
            }
        };
        let write_timeout = node.limits.write_timeout();
        let closing = outbound.close(&mut stream, control.queue(), reason, write_timeout);
        tokio::join!(cleanup, closing);
        if peer_done {
            // The closing handshake is complete (RFC 6455 §7.1.1: the server closes the TCP
            // connection first), or the client already ended its stream. Whatever is left
            // to read is its FIN, which the kernel handles without us: waiting for it cost
            // a read, often a wake-up and a poll per connection.
            return;
        }
        let limit = &node.limits.max_message_size;
        let _ = tokio::time::timeout(CLOSE_LINGER, async {
            while reader.next(&mut stream, limit).await.is_ok() {}
        })
        .await;
    }
}

/// Handles one message; boxed with what it needs, so it can wait without borrowing the
/// connection.
fn handle_message(node: &Arc<Node>, conn: &Arc<ConnHandle>, msg: Bytes) -> InFlight {
    // A trace per message: the exporter does not see the `conn` span (see `telemetry`), so
    // this is a root there, while logs keep `conn`'s fields.
    let span = tracing::debug_span!(
        "ws.message",
        message_type = tracing::field::Empty,
        client_id = %conn.client_id,
        node_id = %node.hub.node_id()
    );
    let (node, conn) = (node.clone(), conn.clone());
    Box::pin(
        async move {
            match dispatch::dispatch(&node, &conn, &msg).await {
                Dispatched::Done => Step::Handled,
                Dispatched::Reidentify {
                    identity,
                    correlation,
                } => Step::Reidentify {
                    identity,
                    correlation,
                },
            }
        }
        .instrument(span),
    )
}

/// Counts the connection as open the first time its client is registered (not again after a
/// re-authentication).
fn count_registered(node: &Node, registered: &mut bool) {
    if !*registered {
        *registered = true;
        node.hub.metrics.connections_opened.inc();
        node.hub.metrics.connections.inc();
    }
}

fn connect_in_flight(node: &Arc<Node>, conn: &Arc<ConnHandle>) -> InFlight {
    let (node, conn) = (node.clone(), conn.clone());
    Box::pin(async move {
        connect(&node, &conn).await;
        Step::Connected
    })
}

//! One WebSocket connection: its read loop, its bounded outbound queue, its writer task.
//!
//! ```text
//! socket --FrameReader--> read loop --dispatch--> hub --ConnHandle::send--> queue --> writer --> socket
//! ```
//!
//! The read loop reads like mini-redis's `Handler::run`: select over the next frame, the
//! read deadline and the close signal; decode; hand off. Handlers run inline, so a client's
//! messages are handled in order. Everything that ends a connection goes through
//! [`ConnHandle::close`], which records the close code once and wakes both tasks.

mod handle;
mod reader;
mod writer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until, timeout};
use tracing::Instrument;
use wshub_protocol::messages::Connected;
use wshub_protocol::{MessageType, close};

pub(crate) use handle::{ConnHandle, SendOutcome};
use reader::{FrameReader, Incoming, ReadError};

use crate::auth::Permissions;
use crate::dispatch;
use crate::ids::ClientId;
use crate::node::Node;
use crate::sdk::Client;
use crate::wire;

/// How long, after we sent our close frame, we keep reading for the client's reply before
/// dropping the socket (closing with unread data would send a RST and can destroy the close
/// frame in the client's receive buffer).
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Runs a connection from right after the upgrade to the end.
pub(crate) async fn serve(
    node: Arc<Node>,
    stream: TcpStream,
    leftover: Bytes,
    client_id: ClientId,
    remote: SocketAddr,
) {
    let cfg = node.config().server.hub.clone();
    let (rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::channel(cfg.message_buffer_cap.max(1));
    let conn = Arc::new(ConnHandle::new(
        node.next_conn_id(),
        client_id,
        remote,
        Permissions::all(),
        tx,
    ));
    let span = tracing::info_span!("conn", client_id = %conn.client_id, node_id = %node.hub.node_id(), %remote);
    run(node, conn, rd, wr, rx, leftover).instrument(span).await;
}

async fn run(
    node: Arc<Node>,
    conn: Arc<ConnHandle>,
    mut rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    rx: mpsc::Receiver<Bytes>,
    leftover: Bytes,
) {
    let cfg = node.config().server.hub.clone();

    let writer = node.tasks.spawn(writer::run(
        wr,
        rx,
        conn.clone(),
        writer::WriterConfig {
            ping_interval: cfg.ping_interval,
            write_timeout: cfg.write_timeout,
            max_batch_bytes: cfg.write_buffer_size.max(1024),
        },
    ));

    // `connected` is queued before the client is reachable, so it is always the first frame.
    if let Ok(frame) = node.hub.frame(
        MessageType::Connected.as_str(),
        &Connected {
            client_id: conn.client_id.to_string(),
            node_id: node.hub.node_id().to_string(),
        },
        None,
    ) {
        conn.send(frame);
    }
    if let Some(old) = node.hub.register(conn.clone()) {
        tracing::info!(old_remote = %old.remote, "connection replaced an older one with the same client id");
    }
    tracing::info!("client connected");
    let client = Client::new(node.clone(), conn.clone());
    node.hooks.connect(&client);

    let mut reader = FrameReader::new(leftover, cfg.max_message_size, cfg.read_buffer_size);
    read_loop(&node, &conn, &mut reader, &mut rd).await;

    let left = node.hub.unregister(&conn);
    for room in &left {
        node.hooks.leave(&client, room.as_str());
    }
    let (code, reason) = conn.close_reason().unwrap_or((close::NORMAL, ""));
    tracing::info!(code, reason, rooms_left = left.len(), "client disconnected");
    node.hooks.disconnect(&client, code, reason);

    // Wait for our close frame to go out, then briefly for the client's.
    let _ = timeout(CLOSE_LINGER, writer).await;
    let _ = timeout(CLOSE_LINGER, async {
        while reader
            .next(&mut rd, &node.limits.max_message_size)
            .await
            .is_ok()
        {}
    })
    .await;
}

async fn read_loop(
    node: &Arc<Node>,
    conn: &Arc<ConnHandle>,
    reader: &mut FrameReader,
    rd: &mut OwnedReadHalf,
) {
    let mut last_seen = Instant::now();
    let mut deadline = last_seen + node.limits.read_timeout();
    loop {
        tokio::select! {
            biased;
            _ = conn.cancelled() => return,
            next = reader.next(rd, &node.limits.max_message_size) => {
                last_seen = Instant::now();
                match next {
                    Ok(Incoming::Text(msg) | Incoming::Binary(msg)) => {
                        dispatch::dispatch(node, conn, &msg).await;
                    }
                    Ok(Incoming::Ping(payload)) => {
                        conn.send(wire::control_frame(wire::OP_PONG, &payload));
                    }
                    Ok(Incoming::Pong) => {}
                    Ok(Incoming::Close(_)) => {
                        conn.close(close::NORMAL, "");
                        return;
                    }
                    Err(e) => {
                        let (code, reason) = match e {
                            ReadError::Eof => (close::NORMAL, "connection closed"),
                            ReadError::TooBig => (close::TOO_BIG, close::reason::TOO_BIG),
                            ReadError::InvalidUtf8 => (close::INVALID_PAYLOAD, "invalid utf-8"),
                            ReadError::Protocol(why) => (close::PROTOCOL_ERROR, why),
                        };
                        conn.close(code, reason);
                        return;
                    }
                }
            }
            _ = sleep_until(deadline) => {
                let read_timeout = node.limits.read_timeout();
                if last_seen + read_timeout <= Instant::now() {
                    conn.close(close::IDLE_TIMEOUT, close::reason::IDLE_TIMEOUT);
                    return;
                }
                deadline = last_seen + read_timeout;
            }
        }
    }
}

//! One task per node keeps every connection's timers: the read timeout (close 4408), the
//! periodic WebSocket ping, and token expiry (error 2002, then close 4401 after the grace).
//!
//! Why not a timer per connection: a tokio `Sleep` or `Interval` lives in the connection's
//! task for its whole life (a few hundred bytes each, two or three per connection), and
//! memory per idle connection is what this server competes on. A sweep over the hub costs a
//! few atomic loads per connection, every `tick` (a quarter of the shortest timer, between
//! 20 ms and 1 s), and it is where reloaded values take effect at once.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use wshub_protocol::{ErrorCode, close};

use super::handle::now_ms;
use crate::dispatch::{self, HandlerError};
use crate::node::Node;
use crate::wire;

/// Runs until the node shuts down.
pub(crate) fn start(node: &Arc<Node>) {
    let node_for_task = node.clone();
    node.tasks.spawn(async move {
        let node = node_for_task;
        let ping = wire::control_frame(wire::OP_PING, b"");
        loop {
            let config = node.config();
            let hub = &config.server.hub;
            let tick = (hub.ping_interval.min(hub.read_timeout) / 4)
                .clamp(Duration::from_millis(20), Duration::from_secs(1));
            tokio::select! {
                _ = node.shutdown.cancelled() => break,
                _ = tokio::time::sleep(tick) => {}
            }
            sweep(&node, &ping);
        }
    });
}

fn sweep(node: &Node, ping: &bytes::Bytes) {
    let config = node.config();
    let read_timeout = node.limits.read_timeout().as_millis() as u64;
    let ping_every = config.server.hub.ping_interval.as_millis() as u64;
    let grace_ms = config.auth.expiry_grace.as_millis() as u64;
    // The same clock skew verification allows (`auth.leeway`).
    let leeway_ms = config.auth.leeway.as_millis() as u64;
    let now = now_ms();
    let unix_ms = crate::cluster::now_ms().max(0) as u64;
    let (mut queued, mut deepest) = (0, 0);
    for conn in node.hub.clients_snapshot() {
        let depth = conn.queue_len();
        queued += depth;
        deepest = deepest.max(depth);
        if now.saturating_sub(conn.last_seen_ms.load(Ordering::Relaxed)) > read_timeout {
            conn.close(close::IDLE_TIMEOUT, close::reason::IDLE_TIMEOUT);
            continue;
        }
        if now.saturating_sub(conn.last_ping_ms.load(Ordering::Relaxed)) >= ping_every {
            conn.last_ping_ms.store(now, Ordering::Relaxed);
            conn.send(ping.clone());
        }
        if let Some(exp) = conn.expires_at() {
            let exp_ms = exp.saturating_mul(1000).saturating_add(leeway_ms);
            if unix_ms < exp_ms {
                continue;
            }
            if conn.expiry_warned.load(Ordering::Relaxed) != exp {
                conn.expiry_warned.store(exp, Ordering::Relaxed);
                dispatch::send_error(
                    node,
                    &conn,
                    &HandlerError::new(
                        ErrorCode::TokenExpired,
                        "token expired: send authenticate {token} with a fresh token",
                    )
                    .with_details(serde_json::json!({ "grace_seconds": grace_ms / 1000 })),
                    None,
                );
            } else if unix_ms >= exp_ms + grace_ms {
                tracing::info!(client_id = %conn.client_id, "token expired and was not refreshed");
                conn.close(close::UNAUTHORIZED, "token expired");
            }
        }
    }
    node.admission.forget_idle(&config.limits);
    node.hub.metrics.queue_frames.set(queued as i64);
    node.hub.metrics.queue_max.set(deepest as i64);
}

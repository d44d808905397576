//! The writer task: the only owner of a socket's write half.
//!
//! It drains the connection's bounded queue and writes whatever is waiting in one vectored
//! write (up to `write_buffer_size` bytes), so a burst of fan-out costs one syscall instead
//! of one per frame. It also sends the periodic WebSocket ping, and the close frame when the
//! connection is closing. A write that takes longer than `write_timeout` ends the connection.

use std::io::IoSlice;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior, interval_at, timeout};
use wshub_protocol::close;

use super::ConnControl;
use crate::wire;

/// Most frames gathered into one vectored write (Linux accepts 1024 iovecs).
const MAX_BATCH: usize = 64;

pub(super) struct WriterConfig {
    pub(super) ping_interval: Duration,
    pub(super) write_timeout: Duration,
    pub(super) max_batch_bytes: usize,
}

pub(super) async fn run(
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Bytes>,
    conn: Arc<ConnControl>,
    cfg: WriterConfig,
) {
    let mut ping = interval_at(Instant::now() + cfg.ping_interval, cfg.ping_interval);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = conn.cancelled() => break,
            frame = rx.recv() => {
                let Some(first) = frame else { break };
                let ok = match rx.try_recv() {
                    // Common case when idle-ish: one frame, no batch allocation.
                    Err(_) => write_with_timeout(&mut wr, &first, cfg.write_timeout).await,
                    Ok(second) => {
                        let mut batch = Vec::with_capacity(8);
                        let mut bytes = first.len() + second.len();
                        batch.push(first);
                        batch.push(second);
                        while batch.len() < MAX_BATCH && bytes < cfg.max_batch_bytes {
                            match rx.try_recv() {
                                Ok(f) => {
                                    bytes += f.len();
                                    batch.push(f);
                                }
                                Err(_) => break,
                            }
                        }
                        timeout(cfg.write_timeout, write_all_vectored(&mut wr, &mut batch))
                            .await
                            .is_ok_and(|r| r.is_ok())
                    }
                };
                if !ok {
                    conn.close(close::GOING_AWAY, "write failed");
                    return;
                }
            }
            _ = ping.tick() => {
                let frame = wire::control_frame(wire::OP_PING, b"");
                if !write_with_timeout(&mut wr, &frame, cfg.write_timeout).await {
                    conn.close(close::GOING_AWAY, "write failed");
                    return;
                }
            }
        }
    }
    // Closing. What was queued before the close goes out first (an error frame explaining the
    // close, say), except for a slow consumer: its backlog is exactly what must not be waited
    // for. Then the close frame, then our side of the TCP stream ends.
    let (code, reason) = conn
        .close_reason()
        .unwrap_or((close::GOING_AWAY, close::reason::SHUTDOWN));
    let _ = timeout(cfg.write_timeout.min(Duration::from_secs(2)), async {
        if code != close::POLICY {
            let mut backlog = Vec::new();
            while let Ok(frame) = rx.try_recv() {
                backlog.push(frame);
            }
            write_all_vectored(&mut wr, &mut backlog).await?;
        }
        wr.write_all(&wire::close_frame(code, reason)).await?;
        wr.shutdown().await
    })
    .await;
}

async fn write_with_timeout(wr: &mut OwnedWriteHalf, frame: &[u8], limit: Duration) -> bool {
    timeout(limit, wr.write_all(frame))
        .await
        .is_ok_and(|r| r.is_ok())
}

/// Writes every frame of `batch`, resuming after short writes.
async fn write_all_vectored(wr: &mut OwnedWriteHalf, batch: &mut [Bytes]) -> std::io::Result<()> {
    let mut start = 0;
    while start < batch.len() {
        let slices: Vec<IoSlice<'_>> = batch[start..].iter().map(|b| IoSlice::new(b)).collect();
        let mut written = wr.write_vectored(&slices).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while start < batch.len() && written >= batch[start].len() {
            written -= batch[start].len();
            start += 1;
        }
        if written > 0 {
            batch[start].advance(written);
        }
    }
    Ok(())
}

//! The writer task: the only owner of a socket's write half.
//!
//! It drains the connection's bounded queue and writes whatever is waiting in one vectored
//! write (up to `write_buffer_size` bytes), so a burst of fan-out costs one syscall instead
//! of one per frame. It also sends the close frame when the connection is closing. (Pings are
//! queued like any frame by the node's sweeper.) A write that takes longer than `write_timeout` ends the connection.

use std::io::IoSlice;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::time::timeout;
use wshub_protocol::close;

use super::ConnControl;
use super::queue::OutQueue;
use crate::wire;

/// Most frames gathered into one vectored write (Linux accepts 1024 iovecs).
const MAX_BATCH: usize = 64;

pub(super) struct WriterConfig {
    pub(super) write_timeout: Duration,
    pub(super) max_batch_bytes: usize,
    /// `wshub_bytes_out_total`: counted once per write, not per frame.
    pub(super) bytes_out: prometheus::IntCounter,
}

pub(super) async fn run(
    mut wr: OwnedWriteHalf,
    queue: Arc<OutQueue>,
    conn: Arc<ConnControl>,
    cfg: WriterConfig,
) {
    let mut batch: Vec<Bytes> = Vec::new();
    // `pop_batch` returns false once the queue is closed and empty; closing the connection
    // closes the queue, so this loop needs no second thing to wait on.
    while queue
        .pop_batch(MAX_BATCH, cfg.max_batch_bytes, &mut batch)
        .await
    {
        if conn.is_closing() {
            // Keep `batch` for the close path below.
            break;
        }
        let bytes: usize = batch.iter().map(Bytes::len).sum();
        let ok = if batch.len() == 1 {
            write_with_timeout(&mut wr, &batch[0], cfg.write_timeout).await
        } else {
            timeout(cfg.write_timeout, write_all_vectored(&mut wr, &mut batch))
                .await
                .is_ok_and(|r| r.is_ok())
        };
        // Not kept: an idle connection holds no batch buffer.
        batch = Vec::new();
        if ok {
            cfg.bytes_out.inc_by(bytes as u64);
        } else {
            conn.close(close::GOING_AWAY, "write failed");
            return;
        }
    }
    // Closing. What was queued before the close goes out first (an error frame explaining the
    // close, say), except for a slow consumer: its backlog is exactly what must not be waited
    // for. Then the close frame, then our side of the TCP stream ends.
    let (code, reason) = conn
        .close_reason()
        .unwrap_or((close::GOING_AWAY, close::reason::SHUTDOWN));
    let _ = timeout(cfg.write_timeout.min(Duration::from_secs(2)), async {
        queue.close();
        if reason != close::reason::SLOW_CONSUMER {
            let mut backlog = batch;
            backlog.extend(queue.drain());
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

//! The outbound half of a connection's task: drains the bounded queue into the socket.
//!
//! Whatever is waiting goes out in one vectored write (up to `write_buffer_size` bytes), so
//! a burst of fan-out costs one syscall instead of one per frame. The state of a write in
//! progress (the batch and how far into it we are) lives here, not in a future, so the
//! connection's task can stop polling at any point and lose nothing.
//!
//! A write that stays blocked longer than `write_timeout` ends the connection; the timer
//! exists only while a write is blocked (a full socket buffer), never on an idle connection.

use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Sleep, sleep, timeout};
use wshub_protocol::close;

use super::ConnControl;
use super::queue::{OutQueue, Popped};
use crate::wire;

/// Most frames gathered into one vectored write (Linux accepts 1024 iovecs).
const MAX_BATCH: usize = 64;

/// Longest the closing writes (backlog, close frame) may take, whatever `write_timeout` is.
const CLOSE_WRITE_LIMIT: Duration = Duration::from_secs(2);

/// What [`Outbound::poll_write`] left behind.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Progress {
    /// Everything popped was written and the queue is empty.
    Drained,
    /// The socket is full; waiting for it to drain (the task is registered with it).
    Blocked,
    /// The connection is closing: the batch in hand is kept for [`Outbound::close`].
    Closing,
    /// The socket failed, or a write stayed blocked past `write_timeout`.
    Failed,
}

/// Per-write settings, read from the node on each call so a reload applies at once.
pub(super) struct WriteSettings<'a> {
    pub(super) write_timeout: Duration,
    pub(super) max_batch_bytes: usize,
    /// `wshub_bytes_out_total`.
    pub(super) bytes_out: &'a prometheus::IntCounter,
}

pub(super) struct Outbound {
    /// Frames popped from the queue and not yet fully written; `batch[next..]` remain (the
    /// first of them possibly advanced past what a short write sent). Empty, and without an
    /// allocation, while the connection is idle.
    batch: Vec<Bytes>,
    next: usize,
    /// Set when a write blocks; cleared when the batch is out.
    stalled: Option<Pin<Box<Sleep>>>,
    /// `batch[next]` was partly written.
    mid_frame: bool,
    failed: bool,
    /// The batch holds only the greeting, which takes the first frames with it.
    top_up: bool,
    /// Bytes of the greeting not written yet (`wshub_bytes_out_total` counts WebSocket
    /// bytes, as when hyper wrote the 101).
    greeting_left: u32,
}

impl Outbound {
    /// `greeting` (the 101 response) goes out first, in one write with the first frames.
    pub(super) fn new(greeting: Option<Bytes>) -> Self {
        Outbound {
            top_up: greeting.is_some(),
            greeting_left: greeting
                .as_ref()
                .map_or(0, |g| u32::try_from(g.len()).unwrap_or(u32::MAX)),
            batch: greeting.into_iter().collect(),
            next: 0,
            stalled: None,
            mid_frame: false,
            failed: false,
        }
    }

    /// Writes queued frames until the queue is empty, the socket is full, or the connection
    /// is closing.
    pub(super) fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        stream: &mut TcpStream,
        control: &ConnControl,
        settings: &WriteSettings<'_>,
    ) -> Progress {
        if self.failed {
            return Progress::Failed;
        }
        loop {
            let written_out = self.next == self.batch.len();
            if written_out || std::mem::take(&mut self.top_up) {
                if written_out {
                    self.batch.clear();
                    self.next = 0;
                    self.stalled = None;
                }
                match control.queue().pop_batch(
                    MAX_BATCH,
                    settings.max_batch_bytes,
                    &mut self.batch,
                ) {
                    Popped::Frames => {}
                    Popped::Closed => return Progress::Closing,
                    // The greeting goes alone.
                    Popped::Empty if !written_out => {}
                    Popped::Empty => {
                        // Not kept: an idle connection holds no batch buffer.
                        self.batch = Vec::new();
                        return Progress::Drained;
                    }
                }
                if control.is_closing() {
                    return Progress::Closing;
                }
            }
            let (slices, n) = io_slices(&self.batch[self.next..]);
            match Pin::new(&mut *stream).poll_write_vectored(cx, &slices[..n]) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return self.fail(),
                Poll::Ready(Ok(written)) => {
                    let greeting = written.min(self.greeting_left as usize);
                    self.greeting_left -= greeting as u32;
                    settings.bytes_out.inc_by((written - greeting) as u64);
                    self.advance(written);
                }
                Poll::Pending => {
                    let limit = settings.write_timeout;
                    let timer = self.stalled.get_or_insert_with(|| Box::pin(sleep(limit)));
                    if timer.as_mut().poll(cx).is_ready() {
                        return self.fail();
                    }
                    return Progress::Blocked;
                }
            }
        }
    }

    fn fail(&mut self) -> Progress {
        self.failed = true;
        self.batch = Vec::new();
        self.next = 0;
        self.stalled = None;
        Progress::Failed
    }

    /// Marks `written` bytes of the batch as sent.
    fn advance(&mut self, written: usize) {
        self.mid_frame = consume(&mut self.batch, &mut self.next, written);
    }

    /// The connection is closing with `code`: what was queued before the close goes out first
    /// (an error frame explaining it, say), except a slow consumer's backlog, which is exactly
    /// what must not be waited for; then the close frame; then our side of the TCP stream
    /// ends. Bounded by `write_timeout` (at most two seconds). Nothing is written after a
    /// failed write.
    pub(super) async fn close(
        mut self,
        stream: &mut TcpStream,
        queue: &OutQueue,
        (code, reason): (u16, &'static str),
        write_timeout: Duration,
    ) {
        queue.close();
        if self.failed {
            return;
        }
        let _ = timeout(write_timeout.min(CLOSE_WRITE_LIMIT), async {
            // A frame already partly written must be finished, or the close frame would land
            // inside it.
            let mut backlog = self.batch.split_off(self.next);
            if reason != close::reason::SLOW_CONSUMER {
                backlog.extend(queue.drain());
            } else {
                backlog.truncate(usize::from(self.mid_frame));
            }
            backlog.push(wire::close_frame(code, reason));
            write_last(stream, &mut backlog).await
        })
        .await;
    }
}

/// Writes every frame of `batch` and ends our side of the stream, so that (when it fits)
/// the last frames and the FIN leave in one TCP segment: each write says more is coming
/// (`MSG_MORE`), so the kernel holds the data, and the shutdown sends it with the FIN.
/// Without that, a close costs two segments (close frame, then FIN), each processed by both
/// ends' kernels.
async fn write_last(stream: &mut TcpStream, batch: &mut [Bytes]) -> std::io::Result<()> {
    let mut start = 0;
    while start < batch.len() {
        let written = send_more(stream, &batch[start..]).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        consume(batch, &mut start, written);
    }
    stream.shutdown().await
}

/// Up to [`MAX_BATCH`] frames as the slices of one vectored write, on the stack, and how many.
fn io_slices(frames: &[Bytes]) -> ([IoSlice<'_>; MAX_BATCH], usize) {
    let mut slices = [IoSlice::new(&[]); MAX_BATCH];
    for (slot, frame) in slices.iter_mut().zip(frames) {
        *slot = IoSlice::new(frame);
    }
    (slices, frames.len().min(MAX_BATCH))
}

/// One vectored `sendmsg` of (up to [`MAX_BATCH`] of) `frames` with `MSG_MORE` (Linux;
/// elsewhere a plain write). The slices are built in each attempt, not kept across the wait
/// for writability: that would put them in every closing connection's future.
async fn send_more(stream: &TcpStream, frames: &[Bytes]) -> std::io::Result<usize> {
    #[cfg(target_os = "linux")]
    const FLAGS: libc::c_int = libc::MSG_MORE | libc::MSG_NOSIGNAL;
    #[cfg(not(target_os = "linux"))]
    const FLAGS: libc::c_int = 0;
    let socket = socket2::SockRef::from(stream);
    stream
        .async_io(tokio::io::Interest::WRITABLE, || {
            let (slices, n) = io_slices(frames);
            socket.send_vectored_with_flags(&slices[..n], FLAGS)
        })
        .await
}

/// Marks `written` bytes of `batch[*next..]` as sent: moves `next` past the frames that went
/// out whole and advances the one cut short, if any (then true).
fn consume(batch: &mut [Bytes], next: &mut usize, mut written: usize) -> bool {
    while *next < batch.len() && written >= batch[*next].len() {
        written -= batch[*next].len();
        *next += 1;
    }
    if written > 0 {
        batch[*next].advance(written);
    }
    written > 0
}

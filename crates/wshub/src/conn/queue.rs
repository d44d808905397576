//! A connection's bounded outbound queue.
//!
//! Instead of a tokio `mpsc` channel, whose first block of slots (about a kilobyte) is
//! allocated when the channel is made, this is a `VecDeque` that allocates on the first frame
//! and gives its memory back when a burst has drained, so an idle connection's queue is a few
//! words. One producer side (anyone: `try_push` never waits), one consumer (the connection's task, which writes to the socket).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use std::task::Context;
#[cfg(test)]
use std::task::Poll;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use tokio::sync::Notify;

/// What [`OutQueue::pop_batch`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Popped {
    Frames,
    Empty,
    /// Closed, and nothing left.
    Closed,
}

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushError {
    Full,
    Closed,
}

pub(crate) struct OutQueue {
    inner: Mutex<Inner>,
    cap: usize,
    /// Most bytes queued (frames with headers).
    max_bytes: usize,
    /// Full queue: drop the oldest frames for the new one instead of refusing it; counted
    /// here (`wshub_dropped_frames_total`).
    drop_oldest: Option<prometheus::IntCounter>,
    /// The connection's task, woken by a new frame or by closing. One consumer, so a waker
    /// slot is enough (a `Notify` is a waiter list and several words more).
    readable: AtomicWaker,
    /// Whether a new frame should wake the task: not while its socket is full (it could not
    /// write the frame anyway; a fan-out would wake a stalled client on every publication).
    /// Closing always wakes it.
    wants_frames: AtomicBool,
    /// Wakes a producer waiting for room (`push`).
    writable: Notify,
}

struct Inner {
    frames: VecDeque<Bytes>,
    bytes: usize,
    closed: bool,
}

/// Capacity kept after a burst drains; beyond it the buffer is given back.
const KEEP: usize = 8;

impl OutQueue {
    #[cfg(test)]
    pub(crate) fn new(cap: usize) -> Self {
        OutQueue::bounded(cap, usize::MAX, None)
    }

    /// A queue of at most `cap` frames and `max_bytes` bytes; when full, `drop_oldest`
    /// makes room by dropping the oldest frames (a lossy feed) instead of refusing.
    pub(crate) fn bounded(
        cap: usize,
        max_bytes: usize,
        drop_oldest: Option<prometheus::IntCounter>,
    ) -> Self {
        OutQueue {
            inner: Mutex::new(Inner {
                frames: VecDeque::new(),
                bytes: 0,
                closed: false,
            }),
            cap: cap.max(1),
            max_bytes: max_bytes.max(1),
            drop_oldest,
            readable: AtomicWaker::new(),
            wants_frames: AtomicBool::new(true),
            writable: Notify::new(),
        }
    }

    /// Frames waiting.
    pub(crate) fn len(&self) -> usize {
        self.inner.lock().map_or(0, |i| i.frames.len())
    }

    fn full(&self, inner: &Inner, incoming: usize) -> bool {
        inner.frames.len() >= self.cap
            || (!inner.frames.is_empty() && inner.bytes + incoming > self.max_bytes)
    }

    /// Queues a frame if there is room; never waits. Returns how many old frames were
    /// dropped to make room (always 0 unless the queue drops oldest).
    pub(crate) fn try_push(&self, frame: Bytes) -> Result<usize, PushError> {
        let mut dropped = 0;
        {
            let mut inner = self.inner.lock().map_err(|_| PushError::Closed)?;
            if inner.closed {
                return Err(PushError::Closed);
            }
            while self.full(&inner, frame.len()) {
                if self.drop_oldest.is_none() {
                    return Err(PushError::Full);
                }
                match inner.frames.pop_front() {
                    Some(old) => {
                        inner.bytes -= old.len();
                        dropped += 1;
                    }
                    None => break,
                }
            }
            inner.bytes += frame.len();
            inner.frames.push_back(frame);
        }
        self.wake_for_frame();
        if let Some(counter) = self.drop_oldest.as_ref().filter(|_| dropped > 0) {
            counter.inc_by(dropped as u64);
        }
        Ok(dropped)
    }

    /// Queues a frame, waiting for room (used for recovery replays, with a timeout around it).
    pub(crate) async fn push(&self, frame: Bytes) -> Result<(), PushError> {
        let mut frame = Some(frame);
        loop {
            match frame.take().map(|f| self.try_push_returning(f)) {
                Some(Ok(())) | None => return Ok(()),
                Some(Err((PushError::Closed, _))) => return Err(PushError::Closed),
                Some(Err((PushError::Full, f))) => {
                    frame = Some(f);
                    self.writable.notified().await;
                }
            }
        }
    }

    fn try_push_returning(&self, frame: Bytes) -> Result<(), (PushError, Bytes)> {
        {
            let Ok(mut inner) = self.inner.lock() else {
                return Err((PushError::Closed, frame));
            };
            if inner.closed {
                return Err((PushError::Closed, frame));
            }
            if self.full(&inner, frame.len()) {
                return Err((PushError::Full, frame));
            }
            inner.bytes += frame.len();
            inner.frames.push_back(frame);
        }
        self.wake_for_frame();
        Ok(())
    }

    /// Wakes `cx`'s task on closing and, if `wants_frames`, on the next frame. True if there
    /// is already something to do (a frame it wants, or the queue is closed), so the task
    /// must not sleep.
    ///
    /// The task registers only when it is about to sleep, and [`unpark`](Self::unpark)s when
    /// it wakes: the replies it queues itself while it runs then cost no wake-up.
    pub(crate) fn park(&self, cx: &Context<'_>, wants_frames: bool) -> bool {
        self.wants_frames.store(wants_frames, Ordering::SeqCst);
        self.readable.register(cx.waker());
        self.inner
            .lock()
            .map_or(true, |i| i.closed || (wants_frames && !i.frames.is_empty()))
    }

    fn wake_for_frame(&self) {
        if self.wants_frames.load(Ordering::SeqCst) {
            self.readable.wake();
        }
    }

    /// Takes the task's registration back (it is running).
    pub(crate) fn unpark(&self) {
        drop(self.readable.take());
    }

    /// Moves up to `max_frames` frames (and about `max_bytes`, at least one frame) into `out`.
    pub(crate) fn pop_batch(
        &self,
        max_frames: usize,
        max_bytes: usize,
        out: &mut Vec<Bytes>,
    ) -> Popped {
        let Ok(mut inner) = self.inner.lock() else {
            return Popped::Closed;
        };
        if inner.frames.is_empty() {
            return if inner.closed {
                Popped::Closed
            } else {
                Popped::Empty
            };
        }
        let mut bytes = 0;
        while out.len() < max_frames && (out.is_empty() || bytes < max_bytes) {
            let Some(f) = inner.frames.pop_front() else {
                break;
            };
            bytes += f.len();
            inner.bytes -= f.len();
            out.push(f);
        }
        if inner.frames.is_empty() && inner.frames.capacity() > KEEP {
            inner.frames = VecDeque::new();
        }
        drop(inner);
        self.writable.notify_one();
        Popped::Frames
    }

    /// [`pop_batch`](Self::pop_batch), registering `cx` when there is nothing yet;
    /// `Ready(false)` once the queue is closed and empty.
    #[cfg(test)]
    pub(crate) fn poll_pop_batch(
        &self,
        cx: &Context<'_>,
        max_frames: usize,
        max_bytes: usize,
        out: &mut Vec<Bytes>,
    ) -> Poll<bool> {
        loop {
            match self.pop_batch(max_frames, max_bytes, out) {
                Popped::Frames => return Poll::Ready(true),
                Popped::Closed => return Poll::Ready(false),
                Popped::Empty if self.park(cx, true) => continue,
                Popped::Empty => return Poll::Pending,
            }
        }
    }

    /// Everything still queued (the writer flushing before a close frame).
    pub(crate) fn drain(&self) -> Vec<Bytes> {
        self.inner
            .lock()
            .map(|mut i| {
                i.bytes = 0;
                i.frames.drain(..).collect()
            })
            .unwrap_or_default()
    }

    /// No more frames are accepted; a waiting writer or producer wakes up.
    pub(crate) fn close(&self) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.closed = true;
        }
        self.readable.wake();
        self.writable.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_bound_and_drop_oldest() {
        let q = OutQueue::bounded(100, 25, None);
        q.try_push(Bytes::from(vec![1; 10])).unwrap();
        q.try_push(Bytes::from(vec![2; 10])).unwrap();
        assert_eq!(q.try_push(Bytes::from(vec![3; 10])), Err(PushError::Full));

        let dropped = prometheus::IntCounter::new("d", "d").unwrap();
        let q = OutQueue::bounded(2, usize::MAX, Some(dropped.clone()));
        for i in 0..5u8 {
            q.try_push(Bytes::from(vec![i])).unwrap();
        }
        assert_eq!(dropped.get(), 3);
        let kept: Vec<u8> = q.drain().iter().map(|b| b[0]).collect();
        assert_eq!(kept, [3, 4], "the newest frames are kept, in order");
        // One frame larger than the byte bound still goes through an empty queue.
        let q = OutQueue::bounded(2, 4, None);
        assert_eq!(q.try_push(Bytes::from(vec![0; 10])), Ok(0));
    }

    async fn pop_batch(q: &OutQueue, max: usize, out: &mut Vec<Bytes>) -> bool {
        std::future::poll_fn(|cx| q.poll_pop_batch(cx, max, usize::MAX, out)).await
    }

    #[tokio::test]
    async fn bounded_batched_and_shrinks() {
        let q = OutQueue::new(3);
        for i in 0..3 {
            q.try_push(Bytes::from(vec![i; 10])).unwrap();
        }
        assert_eq!(q.try_push(Bytes::new()), Err(PushError::Full));
        let mut out = Vec::new();
        assert!(pop_batch(&q, 2, &mut out).await);
        assert_eq!(out.len(), 2);
        out.clear();
        assert!(pop_batch(&q, 10, &mut out).await);
        assert_eq!(out.len(), 1);
        // A waiting producer gets in once there is room.
        let q = std::sync::Arc::new(OutQueue::new(1));
        q.try_push(Bytes::from_static(b"a")).unwrap();
        let q2 = q.clone();
        let pusher = tokio::spawn(async move { q2.push(Bytes::from_static(b"b")).await });
        let mut out = Vec::new();
        assert!(pop_batch(&q, 1, &mut out).await);
        pusher.await.unwrap().unwrap();
        out.clear();
        assert!(pop_batch(&q, 1, &mut out).await);
        assert_eq!(out, vec![Bytes::from_static(b"b")]);
        q.close();
        assert!(!pop_batch(&q, 1, &mut out).await || !out.is_empty());
        assert_eq!(q.try_push(Bytes::new()), Err(PushError::Closed));
    }
}

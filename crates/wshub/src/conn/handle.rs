//! The shared half of a connection: what the hub and handlers hold to reach a socket.
//!
//! Nobody but the connection's writer task touches the socket. Everyone else pushes ready
//! frames into its bounded queue with [`ConnHandle::send`], which never waits: a full queue
//! means the client does not keep up, and it is disconnected (close 1008) rather than
//! letting it slow down the room that is fanning out to it.

use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wshub_protocol::close;

use crate::auth::Permissions;
use crate::ids::{ClientId, RoomId};

/// What happened to a frame handed to [`ConnHandle::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendOutcome {
    Queued,
    /// The queue was full: the connection is being closed as a slow consumer.
    SlowConsumer,
    /// The connection is already gone or closing.
    Closed,
}

pub(crate) struct ConnHandle {
    /// Unique per node for the process lifetime; distinguishes a replaced connection from the
    /// one that replaced it (both have the same client id).
    pub(crate) conn_id: u64,
    pub(crate) client_id: ClientId,
    pub(crate) remote: SocketAddr,
    pub(crate) permissions: Permissions,
    tx: mpsc::Sender<Bytes>,
    cancel: CancellationToken,
    close: OnceLock<(u16, &'static str)>,
    /// Rooms this connection is in, for cleanup on disconnect. Locked briefly, never across
    /// an `.await`; lock order is always room members first, then this.
    pub(crate) rooms: Mutex<Vec<RoomId>>,
}

impl ConnHandle {
    pub(crate) fn new(
        conn_id: u64,
        client_id: ClientId,
        remote: SocketAddr,
        permissions: Permissions,
        tx: mpsc::Sender<Bytes>,
    ) -> Self {
        ConnHandle {
            conn_id,
            client_id,
            remote,
            permissions,
            tx,
            cancel: CancellationToken::new(),
            close: OnceLock::new(),
            rooms: Mutex::new(Vec::new()),
        }
    }

    /// Queues a ready frame without waiting.
    pub(crate) fn send(&self, frame: Bytes) -> SendOutcome {
        if self.cancel.is_cancelled() {
            return SendOutcome::Closed;
        }
        match self.tx.try_send(frame) {
            Ok(()) => SendOutcome::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(client_id = %self.client_id, "slow consumer: outbound queue full, disconnecting");
                self.close(close::POLICY, close::reason::SLOW_CONSUMER);
                SendOutcome::SlowConsumer
            }
            Err(mpsc::error::TrySendError::Closed(_)) => SendOutcome::Closed,
        }
    }

    /// Starts closing the connection with `code`. The first reason given wins.
    pub(crate) fn close(&self, code: u16, reason: &'static str) {
        let _ = self.close.set((code, reason));
        self.cancel.cancel();
    }

    /// The close code and reason, once closing has started.
    pub(crate) fn close_reason(&self) -> Option<(u16, &'static str)> {
        self.close.get().copied()
    }

    pub(crate) fn cancelled(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.cancel.cancelled()
    }

    pub(crate) fn add_room(&self, room: RoomId) {
        if let Ok(mut rooms) = self.rooms.lock() {
            rooms.push(room);
        }
    }

    pub(crate) fn remove_room(&self, room: &str) {
        if let Ok(mut rooms) = self.rooms.lock() {
            rooms.retain(|r| r.as_str() != room);
        }
    }

    pub(crate) fn take_rooms(&self) -> Vec<RoomId> {
        self.rooms
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default()
    }

    pub(crate) fn room_list(&self) -> Vec<RoomId> {
        self.rooms.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

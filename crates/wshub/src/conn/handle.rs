//! The shared half of a connection: what the hub and handlers hold to reach a socket.
//!
//! Nobody but the connection's writer task touches the socket. Everyone else pushes ready
//! frames into its bounded queue with [`ConnHandle::send`], which never waits: a full queue
//! means the client does not keep up, and it is disconnected (close 1008) rather than
//! letting it slow down the room that is fanning out to it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wshub_protocol::close;

use crate::auth::{Identity, Permissions};
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

/// The close signal of one socket, shared by its read loop, its writer, and every handle
/// (a connection that re-authenticates as another client keeps its socket and its control).
pub(crate) struct ConnControl {
    cancel: CancellationToken,
    close: OnceLock<(u16, &'static str)>,
}

impl ConnControl {
    pub(crate) fn new() -> Self {
        ConnControl {
            cancel: CancellationToken::new(),
            close: OnceLock::new(),
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

    pub(crate) fn is_closing(&self) -> bool {
        self.cancel.is_cancelled()
    }
}

/// What a token (or anonymity) grants, replaced when the client refreshes its token.
#[derive(Clone)]
struct AuthState {
    permissions: Permissions,
    expires_at: Option<u64>,
    authenticated: bool,
    info: Option<serde_json::Value>,
}

pub(crate) struct ConnHandle {
    /// Unique per node for the process lifetime; distinguishes a replaced connection from the
    /// one that replaced it (both have the same client id).
    pub(crate) conn_id: u64,
    pub(crate) client_id: ClientId,
    pub(crate) remote: SocketAddr,
    tx: mpsc::Sender<Bytes>,
    pub(crate) control: Arc<ConnControl>,
    auth: RwLock<AuthState>,
    /// Rooms this connection is in, for cleanup on disconnect. Locked briefly, never across
    /// an `.await`; lock order is always room members first, then this.
    pub(crate) rooms: Mutex<Vec<RoomId>>,
    /// Rooms being recovered (`join_room` with `since`): their live publications wait here
    /// until the missed ones have been queued, so nothing is lost or doubled between the two.
    recovering: Mutex<HashMap<String, Recovering>>,
    any_recovering: AtomicBool,
}

#[derive(Default)]
struct Recovering {
    /// Live publications that arrived meanwhile: (offset, frame).
    live: Vec<(u64, Bytes)>,
    /// The missed publications, and the offset they end at, once known.
    replay: Option<(Vec<Bytes>, u64)>,
}

impl ConnHandle {
    pub(crate) fn new(
        conn_id: u64,
        identity: Identity,
        remote: SocketAddr,
        tx: mpsc::Sender<Bytes>,
        control: Arc<ConnControl>,
    ) -> Self {
        ConnHandle {
            conn_id,
            client_id: identity.client_id,
            remote,
            tx,
            control,
            auth: RwLock::new(AuthState {
                permissions: identity.permissions,
                expires_at: identity.expires_at,
                authenticated: identity.authenticated,
                info: identity.info,
            }),
            rooms: Mutex::new(Vec::new()),
            recovering: Mutex::new(HashMap::new()),
            any_recovering: AtomicBool::new(false),
        }
    }

    /// A handle for the same socket under another identity (in-band authentication of an
    /// anonymous connection). Rooms are not carried over.
    pub(crate) fn reidentified(&self, conn_id: u64, identity: Identity) -> Self {
        ConnHandle::new(
            conn_id,
            identity,
            self.remote,
            self.tx.clone(),
            self.control.clone(),
        )
    }

    /// Queues a ready frame without waiting.
    pub(crate) fn send(&self, frame: Bytes) -> SendOutcome {
        if self.control.is_closing() {
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

    /// Queues a room publication, or holds it while the room is being recovered.
    pub(crate) fn send_room(&self, room: &str, offset: Option<u64>, frame: Bytes) -> SendOutcome {
        if self.any_recovering.load(Ordering::Acquire)
            && let Ok(mut rec) = self.recovering.lock()
            && let Some(r) = rec.get_mut(room)
        {
            r.live.push((offset.unwrap_or(0), frame));
            return SendOutcome::Queued;
        }
        self.send(frame)
    }

    /// Starts holding live publications of `room` (before joining it).
    pub(crate) fn begin_recovery(&self, room: &str) {
        if let Ok(mut rec) = self.recovering.lock() {
            rec.insert(room.to_owned(), Recovering::default());
            self.any_recovering.store(true, Ordering::Release);
        }
    }

    /// The missed publications of `room`, which end at offset `last`.
    pub(crate) fn set_replay(&self, room: &str, frames: Vec<Bytes>, last: u64) {
        if let Ok(mut rec) = self.recovering.lock()
            && let Some(r) = rec.get_mut(room)
        {
            r.replay = Some((frames, last));
        }
    }

    /// Gives up recovering `room` (the join failed); held publications are dropped.
    pub(crate) fn abort_recovery(&self, room: &str) {
        if let Ok(mut rec) = self.recovering.lock() {
            rec.remove(room);
            self.any_recovering
                .store(!rec.is_empty(), Ordering::Release);
        }
    }

    /// Queues, for every room whose replay is ready, the missed publications and then the
    /// held live ones that are newer (a publication both fetched and received live is sent
    /// once). Called after the `room_joined` reply is queued.
    pub(crate) fn complete_recoveries(&self) {
        if !self.any_recovering.load(Ordering::Acquire) {
            return;
        }
        let Ok(mut rec) = self.recovering.lock() else {
            return;
        };
        let ready: Vec<String> = rec
            .iter()
            .filter(|(_, r)| r.replay.is_some())
            .map(|(k, _)| k.clone())
            .collect();
        for room in ready {
            let Some(r) = rec.remove(&room) else { continue };
            let Some((replay, last)) = r.replay else {
                continue;
            };
            for frame in replay {
                self.send(frame);
            }
            for (offset, frame) in r.live {
                if offset > last {
                    self.send(frame);
                }
            }
        }
        self.any_recovering
            .store(!rec.is_empty(), Ordering::Release);
    }

    pub(crate) fn close(&self, code: u16, reason: &'static str) {
        self.control.close(code, reason);
    }

    pub(crate) fn cancelled(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.control.cancelled()
    }

    fn auth(&self) -> AuthState {
        match self.auth.read() {
            Ok(a) => a.clone(),
            Err(e) => e.into_inner().clone(),
        }
    }

    pub(crate) fn permissions(&self) -> Permissions {
        self.auth().permissions
    }

    /// `exp` of the current token, Unix seconds.
    pub(crate) fn expires_at(&self) -> Option<u64> {
        self.auth().expires_at
    }

    pub(crate) fn is_authenticated(&self) -> bool {
        self.auth().authenticated
    }

    pub(crate) fn info(&self) -> Option<serde_json::Value> {
        self.auth().info
    }

    /// A refreshed token for the same client: new permissions and expiry.
    pub(crate) fn refresh(&self, identity: Identity) {
        if let Ok(mut a) = self.auth.write() {
            *a = AuthState {
                permissions: identity.permissions,
                expires_at: identity.expires_at,
                authenticated: identity.authenticated,
                info: identity.info,
            };
        }
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

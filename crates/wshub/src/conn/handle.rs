//! The shared half of a connection: what the hub and handlers hold to reach a socket.
//!
//! Nobody but the connection's own task touches the socket. Everyone else pushes ready
//! frames into its bounded queue with [`ConnHandle::send`], which never waits: a full queue
//! means the client does not keep up, and it is disconnected (close 1008) rather than
//! letting it slow down the room that is fanning out to it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use bytes::Bytes;
use wshub_protocol::close;

use super::queue::{OutQueue, PushError};
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

/// The close signal of one socket, shared by its task and every handle (a connection that
/// re-authenticates as another client keeps its socket and its control).
///
/// Closing records the code once, sets a flag and closes the outbound queue, which wakes the
/// connection's task (its one waker slot is the queue's). The hot paths read only the flag.
/// (A `CancellationToken` was here before: its `is_cancelled` takes a mutex, and profiling a
/// 5,000-member fan-out showed 9% of the server's CPU there; it is also a 112-byte
/// allocation per connection.)
pub(crate) struct ConnControl {
    close: OnceLock<(u16, &'static str)>,
    closing: AtomicBool,
    queue: Arc<OutQueue>,
}

impl ConnControl {
    pub(crate) fn new(queue: Arc<OutQueue>) -> Self {
        ConnControl {
            close: OnceLock::new(),
            closing: AtomicBool::new(false),
            queue,
        }
    }

    /// Starts closing the connection with `code`. The first reason given wins.
    pub(crate) fn close(&self, code: u16, reason: &'static str) {
        let _ = self.close.set((code, reason));
        self.closing.store(true, Ordering::Release);
        self.queue.close();
    }

    /// The close code and reason, once closing has started.
    pub(crate) fn close_reason(&self) -> Option<(u16, &'static str)> {
        self.close.get().copied()
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// The socket's outbound queue.
    pub(crate) fn queue(&self) -> &OutQueue {
        &self.queue
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
    queue: Arc<OutQueue>,
    pub(crate) control: Arc<ConnControl>,
    auth: RwLock<AuthState>,
    /// Rooms this connection is in, for cleanup on disconnect. Locked briefly, never across
    /// an `.await`; lock order is always room members first, then this.
    pub(crate) rooms: Mutex<Vec<RoomId>>,
    /// Rooms being recovered (`join_room` with `since`): their live publications wait here
    /// until the missed ones have been queued, so nothing is lost or doubled between the two.
    recovering: Mutex<HashMap<String, Recovering>>,
    any_recovering: AtomicBool,
    /// Milliseconds (node clock, see [`now_ms`]) of the last inbound frame, the last ping
    /// sent, and the token `exp` already warned about: read by the node's sweeper, which
    /// keeps these timers for every connection instead of each connection owning timers.
    pub(crate) last_seen_ms: AtomicU64,
    pub(crate) last_ping_ms: AtomicU64,
    pub(crate) expiry_warned: AtomicU64,
}

/// Milliseconds since an arbitrary process-wide start (monotonic).
pub(crate) fn now_ms() -> u64 {
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
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
        queue: Arc<OutQueue>,
        control: Arc<ConnControl>,
    ) -> Self {
        ConnHandle {
            conn_id,
            client_id: identity.client_id,
            remote,
            queue,
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
            last_seen_ms: AtomicU64::new(now_ms()),
            last_ping_ms: AtomicU64::new(now_ms()),
            expiry_warned: AtomicU64::new(0),
        }
    }

    /// A handle for the same socket under another identity (in-band authentication of an
    /// anonymous connection). Rooms are not carried over.
    pub(crate) fn reidentified(&self, conn_id: u64, identity: Identity) -> Self {
        ConnHandle::new(
            conn_id,
            identity,
            self.remote,
            self.queue.clone(),
            self.control.clone(),
        )
    }

    /// Queues a ready frame without waiting.
    pub(crate) fn send(&self, frame: Bytes) -> SendOutcome {
        if self.control.is_closing() {
            return SendOutcome::Closed;
        }
        match self.queue.try_push(frame) {
            Ok(_) => SendOutcome::Queued,
            Err(PushError::Full) => {
                tracing::warn!(client_id = %self.client_id, "slow consumer: outbound queue full, disconnecting");
                self.close(close::POLICY, close::reason::SLOW_CONSUMER);
                SendOutcome::SlowConsumer
            }
            Err(PushError::Closed) => SendOutcome::Closed,
        }
    }

    /// Frames waiting in the outbound queue.
    pub(crate) fn queue_len(&self) -> usize {
        self.queue.len()
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
    ///
    /// The replay can be far longer than the outbound queue, so it is sent with back-pressure
    /// (waiting for the socket to drain, up to `limit` per frame) rather than as a burst that would
    /// trip the slow-consumer check. Live publications keep being held while that happens;
    /// the room is released only when its held list is empty, under the lock that senders
    /// take, so no publication can slip in out of order.
    pub(crate) async fn complete_recoveries(&self, limit: std::time::Duration) {
        if !self.any_recovering.load(Ordering::Acquire) {
            return;
        }
        let ready: Vec<(String, Vec<Bytes>, u64)> = match self.recovering.lock() {
            Ok(mut rec) => rec
                .iter_mut()
                .filter_map(|(room, r)| r.replay.take().map(|(f, last)| (room.clone(), f, last)))
                .collect(),
            Err(_) => return,
        };
        for (room, replay, last) in ready {
            if !self.send_waiting(replay, limit).await {
                return;
            }
            loop {
                let held = match self.recovering.lock() {
                    Ok(mut rec) => {
                        let Some(r) = rec.get_mut(&room) else { break };
                        if r.live.is_empty() {
                            rec.remove(&room);
                            self.any_recovering
                                .store(!rec.is_empty(), Ordering::Release);
                            break;
                        }
                        std::mem::take(&mut r.live)
                    }
                    Err(_) => return,
                };
                let newer = held
                    .into_iter()
                    .filter(|(offset, _)| *offset > last)
                    .map(|(_, f)| f)
                    .collect();
                if !self.send_waiting(newer, limit).await {
                    return;
                }
            }
        }
    }

    /// Queues frames, waiting for room in the queue; false (and the connection closing as a
    /// slow consumer) if a frame can't be queued within `limit`.
    async fn send_waiting(&self, frames: Vec<Bytes>, limit: std::time::Duration) -> bool {
        for frame in frames {
            match tokio::time::timeout(limit, self.queue.push(frame)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return false,
                Err(_) => {
                    self.close(close::POLICY, close::reason::SLOW_CONSUMER);
                    return false;
                }
            }
        }
        true
    }

    pub(crate) fn close(&self, code: u16, reason: &'static str) {
        self.control.close(code, reason);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(cap: usize) -> (ConnHandle, Arc<OutQueue>) {
        let queue = Arc::new(OutQueue::new(cap));
        let identity = Identity::anonymous(ClientId::from("c"), Permissions::all());
        let addr = "127.0.0.1:1".parse().unwrap();
        (
            ConnHandle::new(
                1,
                identity,
                addr,
                queue.clone(),
                Arc::new(ConnControl::new(queue.clone())),
            ),
            queue,
        )
    }

    fn frame(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn drain(rx: &mut Arc<OutQueue>) -> Vec<String> {
        rx.drain()
            .into_iter()
            .map(|f| String::from_utf8(f.to_vec()).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn recovery_gate_orders_replay_before_live_and_drops_overlap() {
        let (conn, mut rx) = handle(64);
        conn.begin_recovery("r");
        // Live publications arrive while the history is being read: held, not queued.
        conn.send_room("r", Some(5), frame("live5"));
        conn.send_room("r", Some(6), frame("live6"));
        // Other rooms and other messages are not held.
        conn.send_room("other", Some(1), frame("other1"));
        conn.send(frame("reply"));
        assert_eq!(drain(&mut rx), vec!["other1", "reply"]);
        // The history read covered up to offset 5 (so live5 is a duplicate).
        conn.set_replay("r", vec![frame("old4"), frame("old5")], 5);
        conn.complete_recoveries(std::time::Duration::from_secs(1))
            .await;
        assert_eq!(drain(&mut rx), vec!["old4", "old5", "live6"]);
        // Released: live ones flow directly again.
        conn.send_room("r", Some(7), frame("live7"));
        assert_eq!(drain(&mut rx), vec!["live7"]);
    }

    #[tokio::test]
    async fn a_replay_longer_than_the_queue_waits_instead_of_tripping_the_slow_consumer_check() {
        let (conn, rx) = handle(4);
        conn.begin_recovery("r");
        let replay: Vec<Bytes> = (1..=20).map(|i| frame(&format!("old{i}"))).collect();
        conn.set_replay("r", replay, 20);
        let reader = tokio::spawn(async move {
            let mut got = 0;
            while got < 20 {
                let mut batch = Vec::new();
                let popped =
                    std::future::poll_fn(|cx| rx.poll_pop_batch(cx, 1, usize::MAX, &mut batch));
                assert!(popped.await);
                got += batch.len();
            }
            got
        });
        conn.complete_recoveries(std::time::Duration::from_secs(5))
            .await;
        assert_eq!(reader.await.unwrap(), 20);
        assert!(conn.control.close_reason().is_none());
    }
}

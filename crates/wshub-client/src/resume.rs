//! A client that survives disconnects: it reconnects (to the next URL, with jittered
//! exponential backoff), rejoins its rooms with `since` their last offset, and drops any room
//! publication at or below the offset it already delivered, so the application sees each
//! room publication once — within the room's history window. When the server can't recover
//! (the epoch changed, or the window was exceeded) the application sees the `room_joined`
//! reply with `recovered: false` and must reload its state.
//!
//! A gap can also open while the connection stays up: a room's offsets are contiguous, but a
//! publication made on another node while this node was cut off from the broker (a broker
//! restart, a dropped subscription), or one whose node stored it and then failed to publish
//! it on the bus, never arrives live. When a publication arrives more than one offset after
//! the last delivered one, the client first fetches the ones in between from the room's
//! history (`history`) and delivers them in order; if that fails, it reconnects and lets the
//! rejoin's recovery replay them. (A gap is only visible once a later publication arrives.)
//! Publications this client sent itself are skipped when filling a gap, as the server skips
//! them live.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{RwLock, mpsc};

use super::{Client, ClientOptions, Envelope, Error, ErrorCode, Event};

#[derive(Debug, Clone)]
pub struct ResumeOptions {
    pub client: ClientOptions,
    /// First reconnect delay; doubles per failed attempt up to `max_backoff`. Default 100 ms.
    pub min_backoff: Duration,
    /// Default 5 s.
    pub max_backoff: Duration,
    /// Give up after this long without a connection. Default 60 s.
    pub give_up_after: Duration,
}

impl Default for ResumeOptions {
    fn default() -> Self {
        ResumeOptions {
            client: ClientOptions {
                event_buffer: 65_536,
                ..ClientOptions::default()
            },
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            give_up_after: Duration::from_secs(60),
        }
    }
}

/// Where the application is in each room it joined.
#[derive(Debug, Clone, Default)]
struct RoomPosition {
    offset: u64,
    epoch: String,
    /// The first `join_room` is in flight: publications can arrive before its reply (the
    /// server subscribes first), so the position follows them but gaps are not looked for.
    joining: bool,
}

type Rooms = Arc<Mutex<HashMap<String, RoomPosition>>>;

/// What a [`ResumingClient`] did to keep the application's view of its rooms whole; a
/// handle that stays readable after the client is gone ([`ResumingClient::stats`]).
#[derive(Debug, Clone, Default)]
pub struct ResumeStats(Arc<StatsInner>);

#[derive(Debug, Default)]
struct StatsInner {
    duplicates_dropped: AtomicU64,
    reconnects: AtomicU64,
    gaps: AtomicU64,
    gap_filled: AtomicU64,
}

impl ResumeStats {
    /// Room publications not passed to the application because it already had them (at
    /// or below the room's delivered offset: a replay overlapping live traffic).
    pub fn duplicates_dropped(&self) -> u64 {
        self.0.duplicates_dropped.load(Ordering::Relaxed)
    }

    /// Connections made again after the previous one ended.
    pub fn reconnects(&self) -> u64 {
        self.0.reconnects.load(Ordering::Relaxed)
    }

    /// Gaps in live traffic that the room's history filled: a publication arrived more
    /// than one offset past the last one, and publications in between were stored.
    pub fn gaps(&self) -> u64 {
        self.0.gaps.load(Ordering::Relaxed)
    }

    /// Publications fetched from the room's history to fill those gaps, and delivered.
    pub fn gap_filled(&self) -> u64 {
        self.0.gap_filled.load(Ordering::Relaxed)
    }
}

pub struct ResumingClient {
    current: Arc<RwLock<Arc<Client>>>,
    rooms: Rooms,
    stats: ResumeStats,
    events: mpsc::Receiver<Event>,
    supervisor: tokio::task::JoinHandle<()>,
}

impl Drop for ResumingClient {
    fn drop(&mut self) {
        self.supervisor.abort();
    }
}

impl ResumingClient {
    /// Connects to the first URL that answers; later reconnects rotate through all of them.
    pub async fn connect(urls: Vec<String>, options: ResumeOptions) -> Result<Self, Error> {
        let (mut client, start) = connect_any(&urls, 0, &options.client).await?;
        let inbound = client.take_events();
        let current = Arc::new(RwLock::new(Arc::new(client)));
        let rooms: Rooms = Arc::default();
        let (tx, events) = mpsc::channel(options.client.event_buffer.max(1));
        let stats = ResumeStats::default();
        let supervisor = tokio::spawn(supervise(
            Supervisor {
                urls,
                index: start,
                options,
                current: current.clone(),
                rooms: rooms.clone(),
                stats: stats.clone(),
                out: tx,
            },
            inbound,
        ));
        Ok(ResumingClient {
            current,
            rooms,
            stats,
            events,
            supervisor,
        })
    }

    async fn client(&self) -> Arc<Client> {
        self.current.read().await.clone()
    }

    pub async fn client_id(&self) -> String {
        self.client().await.client_id().to_owned()
    }

    /// Counters of drops and reconnects (a handle: it keeps counting after this call).
    pub fn stats(&self) -> ResumeStats {
        self.stats.clone()
    }

    /// The node of the current connection.
    pub async fn node_id(&self) -> String {
        self.client().await.node_id().to_owned()
    }

    /// Joins a room and starts tracking its position.
    pub async fn join_room(&self, room_id: &str) -> Result<Envelope, Error> {
        let fresh = match self.rooms.lock() {
            Ok(mut rooms) if !rooms.contains_key(room_id) => {
                rooms.insert(
                    room_id.to_owned(),
                    RoomPosition {
                        joining: true,
                        ..RoomPosition::default()
                    },
                );
                true
            }
            _ => false,
        };
        let reply = match self.client().await.join_room(room_id).await {
            Ok(reply) => reply,
            Err(e) => {
                if fresh && let Ok(mut rooms) = self.rooms.lock() {
                    rooms.remove(room_id);
                }
                return Err(e);
            }
        };
        if let Ok(mut rooms) = self.rooms.lock() {
            let pos = rooms.entry(room_id.to_owned()).or_default();
            pos.offset = pos.offset.max(reply.data["offset"].as_u64().unwrap_or(0));
            pos.epoch = reply.data["epoch"].as_str().unwrap_or_default().to_owned();
            pos.joining = false;
        }
        Ok(reply)
    }

    pub async fn leave_room(&self, room_id: &str) -> Result<Envelope, Error> {
        if let Ok(mut rooms) = self.rooms.lock() {
            rooms.remove(room_id);
        }
        self.client().await.leave_room(room_id).await
    }

    pub async fn request(&self, message_type: &str, data: Value) -> Result<Envelope, Error> {
        self.client().await.request(message_type, data).await
    }

    pub async fn room_message(&self, room_id: &str, content: Value) -> Result<(), Error> {
        self.client().await.room_message(room_id, content).await
    }

    /// The next event: server pushes (room publications deduplicated across reconnects),
    /// and each rejoin's `room_joined` reply. `Event::Closed` only when reconnecting gave up.
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
    }
}

async fn connect_any(
    urls: &[String],
    start: usize,
    options: &ClientOptions,
) -> Result<(Client, usize), Error> {
    let mut last = Error::Closed;
    for i in 0..urls.len() {
        let index = (start + i) % urls.len();
        match Client::connect_with(&urls[index], options.clone()).await {
            Ok(c) => return Ok((c, index)),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// What to do with an event.
#[derive(Debug, PartialEq)]
enum Verdict {
    /// Pass it on (recorded as the room's position when it is a room publication).
    Deliver,
    /// A room publication at or below the room's position: already delivered.
    Seen,
    /// A room publication past the next expected offset: offsets `after + 1 .. offset` are
    /// missing. Nothing was recorded.
    Gap {
        room: String,
        after: u64,
        epoch: String,
    },
}

/// Classifies `event` against the rooms' positions, and records a publication to deliver.
fn classify(rooms: &Rooms, event: &Event, look_for_gaps: bool) -> Verdict {
    let Event::Message(env) = event else {
        return Verdict::Deliver;
    };
    if env.message_type != "room_message" {
        return Verdict::Deliver;
    }
    let (Some(room), Some(offset)) = (env.data["room_id"].as_str(), env.data["offset"].as_u64())
    else {
        return Verdict::Deliver;
    };
    let Ok(mut rooms) = rooms.lock() else {
        return Verdict::Deliver;
    };
    let Some(pos) = rooms.get_mut(room) else {
        return Verdict::Deliver;
    };
    let epoch = env.data["epoch"].as_str();
    if pos.joining {
        pos.offset = pos.offset.max(offset);
        return Verdict::Deliver;
    }
    let same_epoch = epoch.is_none_or(|e| e == pos.epoch);
    if same_epoch && offset <= pos.offset {
        return Verdict::Seen;
    }
    if look_for_gaps && same_epoch && offset > pos.offset + 1 {
        return Verdict::Gap {
            room: room.to_owned(),
            after: pos.offset,
            epoch: pos.epoch.clone(),
        };
    }
    pos.offset = offset;
    if let Some(epoch) = epoch {
        pos.epoch = epoch.to_owned();
    }
    Verdict::Deliver
}

/// The publications of `room` with offsets in `after + 1 .. before`, from its history,
/// oldest first, as the envelopes a live delivery would have been. Fails when the history
/// is of another epoch or could not be read.
async fn fetch_gap(
    client: &Client,
    room: &str,
    after: u64,
    before: u64,
    epoch: &str,
) -> Result<Vec<Envelope>, Error> {
    let mut out = Vec::new();
    let mut cursor = after;
    while cursor + 1 < before {
        let limit = (before - cursor - 1).min(1000);
        let reply = client
            .request(
                "history",
                json!({"room_id": room, "since": cursor, "limit": limit}),
            )
            .await?;
        if reply.data["epoch"].as_str() != Some(epoch) {
            return Err(Error::Protocol(format!(
                "history of {room} is of epoch {}, not {epoch}",
                reply.data["epoch"]
            )));
        }
        let publications = reply.data["publications"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut advanced = false;
        for p in publications {
            let Some(offset) = p["offset"].as_u64() else {
                continue;
            };
            if offset <= cursor {
                continue;
            }
            if offset >= before {
                return Ok(out);
            }
            cursor = offset;
            advanced = true;
            let message_type = p["message_type"].as_str().unwrap_or("room_message");
            out.push(Envelope::request(message_type, p["data"].clone(), None));
        }
        // Nothing newer stored below `before` (trimmed, or offsets that jump: a room that
        // started again above the stream's old offsets): what there was is all there is.
        if !advanced {
            break;
        }
    }
    Ok(out)
}

struct Supervisor {
    urls: Vec<String>,
    index: usize,
    options: ResumeOptions,
    current: Arc<RwLock<Arc<Client>>>,
    rooms: Rooms,
    stats: ResumeStats,
    out: mpsc::Sender<Event>,
}

/// Why forwarding stopped.
enum Forwarding {
    /// The connection ended, or a gap could not be filled on it: reconnect and recover.
    Reconnect,
    /// The application dropped the client.
    Done,
}

impl Supervisor {
    /// Passes events on until the connection ends, dropping what was delivered already and
    /// filling gaps from the history.
    async fn forward(&self, inbound: &mut mpsc::Receiver<Event>) -> Forwarding {
        while let Some(event) = inbound.recv().await {
            if matches!(event, Event::Closed(_)) {
                break;
            }
            let mut verdict = classify(&self.rooms, &event, true);
            if let Verdict::Gap { room, after, epoch } = verdict {
                let before = match &event {
                    Event::Message(env) => env.data["offset"].as_u64().unwrap_or(0),
                    Event::Closed(_) => 0,
                };
                let client = self.current.read().await.clone();
                let missed = match fetch_gap(&client, &room, after, before, &epoch).await {
                    Ok(missed) => missed,
                    Err(e) => {
                        // The rejoin's recovery replays from the last delivered offset.
                        tracing::warn!(room, after, before, error = %e, "could not fill a gap from the history; reconnecting");
                        return Forwarding::Reconnect;
                    }
                };
                if !missed.is_empty() {
                    self.stats.0.gaps.fetch_add(1, Ordering::Relaxed);
                }
                for env in missed {
                    if env.data["sender_id"].as_str() == Some(client.client_id()) {
                        // Our own publication: the server does not send it back live either.
                        let _ = classify(&self.rooms, &Event::Message(env), false);
                        continue;
                    }
                    let missed = Event::Message(env);
                    if classify(&self.rooms, &missed, false) != Verdict::Deliver {
                        continue;
                    }
                    self.stats.0.gap_filled.fetch_add(1, Ordering::Relaxed);
                    if self.out.send(missed).await.is_err() {
                        return Forwarding::Done;
                    }
                }
                verdict = classify(&self.rooms, &event, false);
            }
            match verdict {
                Verdict::Seen => {
                    self.stats
                        .0
                        .duplicates_dropped
                        .fetch_add(1, Ordering::Relaxed);
                }
                _ => {
                    if self.out.send(event).await.is_err() {
                        return Forwarding::Done;
                    }
                }
            }
        }
        Forwarding::Reconnect
    }
}

async fn supervise(mut sv: Supervisor, mut inbound: mpsc::Receiver<Event>) {
    loop {
        // Forward until the connection ends.
        if let Forwarding::Done = sv.forward(&mut inbound).await {
            return;
        }
        // Reconnect, starting with the next URL (the last one just failed us), and rejoin
        // every room; a rejoin that fails (the node cannot reach the cluster state, say)
        // counts as a failed attempt: the room must not be silently left behind.
        let started = tokio::time::Instant::now();
        let mut delay = sv.options.min_backoff;
        loop {
            sv.index = (sv.index + 1) % sv.urls.len().max(1);
            let error = match connect_any(&sv.urls, sv.index, &sv.options.client).await {
                Ok((client, i)) => {
                    sv.index = i;
                    match sv.resume(client).await {
                        Ok(Some(events)) => {
                            inbound = events;
                            break;
                        }
                        Ok(None) => return,
                        Err(e) => e,
                    }
                }
                Err(e) => e,
            };
            if started.elapsed() > sv.options.give_up_after {
                let _ = sv.out.send(Event::Closed(None)).await;
                tracing::warn!(%error, "giving up reconnecting");
                return;
            }
            // Full jitter: spread reconnecting clients out.
            let jitter = rand_fraction();
            tokio::time::sleep(delay.mul_f64(0.5 + jitter / 2.0)).await;
            delay = (delay * 2).min(sv.options.max_backoff);
        }
    }
}

impl Supervisor {
    /// Makes `client` the current connection and rejoins every room on it with `since` its
    /// position; passes each rejoin's reply to the application. Returns the connection's
    /// events, or `None` when the application is gone.
    async fn resume(&self, mut client: Client) -> Result<Option<mpsc::Receiver<Event>>, Error> {
        self.stats.0.reconnects.fetch_add(1, Ordering::Relaxed);
        let inbound = client.take_events();
        let client = Arc::new(client);
        *self.current.write().await = client.clone();
        // Rooms whose first join is still in flight are left to it (it fails with the old
        // connection, and the application joins again).
        let positions: Vec<(String, RoomPosition)> = self
            .rooms
            .lock()
            .map(|r| {
                r.iter()
                    .filter(|(_, v)| !v.joining)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        for (room, pos) in positions {
            let since =
                json!({"room_id": room, "since": {"offset": pos.offset, "epoch": pos.epoch}});
            let reply = match client.request("join_room", since).await {
                Ok(reply) => reply,
                // Refused for good (forbidden, room full or gone): as before, the room stays
                // tracked and is tried again after the next reconnect.
                Err(e) if !transient(&e) => {
                    tracing::warn!(room, error = %e, "rejoin after reconnect refused");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(room, error = %e, "rejoin after reconnect failed; reconnecting");
                    return Err(e);
                }
            };
            if reply.data["recovered"] != Value::Bool(true)
                && let Ok(mut r) = self.rooms.lock()
            {
                // Not recoverable: continue from where the room is now.
                r.insert(
                    room.clone(),
                    RoomPosition {
                        offset: reply.data["offset"].as_u64().unwrap_or(0),
                        epoch: reply.data["epoch"].as_str().unwrap_or_default().to_owned(),
                        joining: false,
                    },
                );
            }
            if self.out.send(Event::Message(reply)).await.is_err() {
                return Ok(None);
            }
        }
        Ok(Some(inbound))
    }
}

/// A failure that another attempt (or another node) may not have: the connection, a
/// timeout, the server's 1003/1004 (its broker or store is unavailable).
fn transient(e: &Error) -> bool {
    match e {
        Error::Server(d) => matches!(d.code, ErrorCode::ServerError | ErrorCode::Timeout),
        Error::Protocol(_) => false,
        Error::WebSocket(_) | Error::Timeout | Error::Closed => true,
    }
}

fn rand_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    (h.finish() % 10_000) as f64 / 10_000.0
}

//! A client that survives disconnects: it reconnects (to the next URL, with jittered
//! exponential backoff), rejoins its rooms with `since` their last offset, and drops any room
//! publication at or below the offset it already delivered, so the application sees each
//! room publication once — within the room's history window. When the server can't recover
//! (the epoch changed, or the window was exceeded) the application sees the `room_joined`
//! reply with `recovered: false` and must reload its state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{RwLock, mpsc};

use super::{Client, ClientOptions, Envelope, Error, Event};

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
}

type Rooms = Arc<Mutex<HashMap<String, RoomPosition>>>;

pub struct ResumingClient {
    current: Arc<RwLock<Arc<Client>>>,
    rooms: Rooms,
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
        let supervisor = tokio::spawn(supervise(
            urls,
            start,
            options,
            current.clone(),
            rooms.clone(),
            inbound,
            tx,
        ));
        Ok(ResumingClient {
            current,
            rooms,
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

    /// The node of the current connection.
    pub async fn node_id(&self) -> String {
        self.client().await.node_id().to_owned()
    }

    /// Joins a room and starts tracking its position.
    pub async fn join_room(&self, room_id: &str) -> Result<Envelope, Error> {
        let reply = self.client().await.join_room(room_id).await?;
        if let Ok(mut rooms) = self.rooms.lock() {
            rooms.insert(
                room_id.to_owned(),
                RoomPosition {
                    offset: reply.data["offset"].as_u64().unwrap_or(0),
                    epoch: reply.data["epoch"].as_str().unwrap_or_default().to_owned(),
                },
            );
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

/// True when the event is a room publication already delivered (offset at or below the
/// room's position); otherwise records it.
fn seen_before(rooms: &Rooms, event: &Event) -> bool {
    let Event::Message(env) = event else {
        return false;
    };
    if env.message_type != "room_message" {
        return false;
    }
    let (Some(room), Some(offset)) = (env.data["room_id"].as_str(), env.data["offset"].as_u64())
    else {
        return false;
    };
    let Ok(mut rooms) = rooms.lock() else {
        return false;
    };
    let Some(pos) = rooms.get_mut(room) else {
        return false;
    };
    if offset <= pos.offset {
        return true;
    }
    pos.offset = offset;
    if let Some(epoch) = env.data["epoch"].as_str() {
        pos.epoch = epoch.to_owned();
    }
    false
}

async fn supervise(
    urls: Vec<String>,
    mut index: usize,
    options: ResumeOptions,
    current: Arc<RwLock<Arc<Client>>>,
    rooms: Rooms,
    mut inbound: mpsc::Receiver<Event>,
    out: mpsc::Sender<Event>,
) {
    loop {
        // Forward until the connection ends.
        while let Some(event) = inbound.recv().await {
            if matches!(event, Event::Closed(_)) {
                break;
            }
            if !seen_before(&rooms, &event) && out.send(event).await.is_err() {
                return;
            }
        }
        // Reconnect, starting with the next URL (the last one just failed us).
        let started = tokio::time::Instant::now();
        let mut delay = options.min_backoff;
        let mut client = loop {
            index = (index + 1) % urls.len().max(1);
            match connect_any(&urls, index, &options.client).await {
                Ok((c, i)) => {
                    index = i;
                    break c;
                }
                Err(e) => {
                    if started.elapsed() > options.give_up_after {
                        let _ = out.send(Event::Closed(None)).await;
                        tracing::warn!(error = %e, "giving up reconnecting");
                        return;
                    }
                    // Full jitter: spread reconnecting clients out.
                    let jitter = rand_fraction();
                    tokio::time::sleep(delay.mul_f64(0.5 + jitter / 2.0)).await;
                    delay = (delay * 2).min(options.max_backoff);
                }
            }
        };
        inbound = client.take_events();
        let client = Arc::new(client);
        *current.write().await = client.clone();
        let positions: Vec<(String, RoomPosition)> = rooms
            .lock()
            .map(|r| r.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        for (room, pos) in positions {
            let since =
                json!({"room_id": room, "since": {"offset": pos.offset, "epoch": pos.epoch}});
            match client.request("join_room", since).await {
                Ok(reply) => {
                    if reply.data["recovered"] != Value::Bool(true)
                        && let Ok(mut r) = rooms.lock()
                    {
                        // Not recoverable: continue from where the room is now.
                        r.insert(
                            room.clone(),
                            RoomPosition {
                                offset: reply.data["offset"].as_u64().unwrap_or(0),
                                epoch: reply.data["epoch"].as_str().unwrap_or_default().to_owned(),
                            },
                        );
                    }
                    if out.send(Event::Message(reply)).await.is_err() {
                        return;
                    }
                }
                Err(e) => tracing::warn!(room, error = %e, "rejoin after reconnect failed"),
            }
        }
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

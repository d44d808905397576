//! Fan-out across the cluster: every publication is delivered locally through the hub and
//! published once on the bus for the other nodes; and the receiving side, which turns bus
//! messages into the same hub operations.
//!
//! Handlers, the admin API and the SDK all publish through here, so a message reaches the
//! same clients whichever door it came in by. With `cluster.enabled: false` there is no bus
//! and everything here is the hub alone.
//!
//! Interest: a node subscribes to a room's subject only while it has local members of the
//! room. Subscribing happens before `room_joined` is sent, so a member receives everything
//! published after its join reply; unsubscribing follows the last local member out.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::Instrument;
use wshub_protocol::{ErrorCode, close};

use crate::bus::{
    BusError, BusMessage, BusState, DedupWindow, Inbound, Kind, LocalBroker, LocalBus, NatsBus,
    RedisBus, SharedBus, Subjects,
};
use crate::cluster::{NatsStateStore, RedisStateStore, StateStore};
use crate::config::{BusType, Config};
use crate::conn::ConnHandle;
use crate::dispatch::HandlerError;
use crate::hub::{Delivery, Exclude, HubError};
use crate::node::Node;
use crate::sdk::Client;

/// Messages the node can hold from the bus before the broker connection waits on it.
const INBOUND_CAPACITY: usize = 16_384;

/// Why a publication did not reach everyone it should have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Hub(#[from] HubError),
    /// Local delivery happened; other nodes did not get it.
    #[error("not delivered to other nodes: {0}")]
    Bus(#[from] BusError),
    /// The cluster state (rooms, memberships) could not be read or written.
    #[error(transparent)]
    Store(#[from] crate::cluster::StoreError),
    /// The room's history could not be written: nothing was delivered.
    #[error(transparent)]
    History(#[from] crate::history::HistoryError),
    #[error("encoding failed: {0}")]
    Encode(String),
}

impl From<serde_json::Error> for PublishError {
    fn from(e: serde_json::Error) -> Self {
        PublishError::Encode(e.to_string())
    }
}

/// Where a room publication went.
#[derive(Debug, Clone)]
pub(crate) struct Published {
    pub delivery: Delivery,
    /// Its position in the room's history, when the room keeps one.
    pub position: Option<crate::history::Position>,
}

impl From<PublishError> for HandlerError {
    fn from(e: PublishError) -> Self {
        match e {
            PublishError::Hub(h) => h.into(),
            PublishError::Bus(b) => HandlerError::new(
                ErrorCode::Timeout,
                "the cluster bus is unavailable: delivered on this node only",
            )
            .with_details(b.to_string().into()),
            PublishError::History(e) => {
                tracing::warn!(error = %e, "history unavailable");
                HandlerError::new(
                    ErrorCode::Timeout,
                    "the room history is unavailable; not published",
                )
                .with_details(e.to_string().into())
            }
            PublishError::Encode(e) => {
                tracing::error!(error = %e, "encoding failed");
                HandlerError::code(ErrorCode::ServerError)
            }
            PublishError::Store(e) => {
                tracing::warn!(error = %e, "cluster state unavailable");
                HandlerError::new(
                    ErrorCode::Timeout,
                    "the cluster state is unavailable; try again",
                )
                .with_details(e.to_string().into())
            }
        }
    }
}

/// This node's link to the others.
pub(crate) struct ClusterLink {
    bus: SharedBus,
    subjects: Subjects,
    origin: String,
    /// Random per process start: a restarted node with the same id starts a new sequence.
    boot: u64,
    seq: AtomicU64,
    dedup: Mutex<DedupWindow>,
    /// Rooms whose subject this node is subscribed to. Changes are serialized by this lock so
    /// a join racing the last leave can't end unsubscribed.
    rooms: tokio::sync::Mutex<HashSet<String>>,
    metrics: Arc<crate::metrics::Metrics>,
    /// The NATS server answered without JetStream: the cluster state cannot work, so the node
    /// is not ready (see [`watch_jetstream`]).
    jetstream_missing: Arc<AtomicBool>,
}

impl ClusterLink {
    fn message(&self, kind: Kind, target: &str, extra: &str, frame: Bytes) -> BusMessage {
        BusMessage {
            kind,
            origin: self.origin.clone(),
            boot: self.boot,
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
            offset: 0,
            published_at_us: unix_micros(),
            traceparent: String::new(),
            target: target.to_owned(),
            extra: extra.to_owned(),
            frame,
        }
    }

    async fn send(&self, subject: String, msg: BusMessage, durable: bool) -> Result<(), BusError> {
        let msg_id = durable.then(|| msg.msg_id());
        let result = self.bus.publish(subject, msg.encode(), msg_id).await;
        match result {
            Ok(()) => self.metrics.bus.published.inc(),
            Err(_) => self.metrics.bus.publish_errors.inc(),
        }
        result
    }
}

impl Node {
    /// Connects the bus (when `cluster.enabled`) and starts consuming it. Returns at once even
    /// if the broker is down: the node serves local traffic and the bus keeps reconnecting.
    pub(crate) async fn start_cluster(
        self: &Arc<Self>,
        config: &Config,
        local_broker: Option<Arc<LocalBroker>>,
    ) -> Result<(), BusError> {
        let history_cfg = &config.rooms.history;
        if history_cfg.size > 0 {
            let memory = || {
                Arc::new(crate::history::MemoryHistory::new(
                    history_cfg.size,
                    history_cfg.ttl,
                    config.rooms.idempotency_window,
                ))
            };
            let store: Option<Arc<dyn crate::history::HistoryStore>> =
                match (config.cluster.enabled, config.cluster.bus_type) {
                    // JetStream: set up with the NATS connection, below.
                    (true, BusType::Nats) => None,
                    // Shared by every node, survives node restarts.
                    (true, BusType::Redis) => Some(Arc::new(
                        crate::history::RedisHistory::connect(
                            &config.cluster.redis,
                            history_cfg.size,
                            history_cfg.ttl,
                            config.rooms.idempotency_window,
                        )
                        .await
                        .map_err(|e| BusError::Other(e.to_string()))?,
                    )),
                    // The in-process cluster's shared memory history.
                    (true, _) => Some(match &local_broker {
                        Some(broker) => broker.history.get_or_init(memory).clone(),
                        None => memory(),
                    }),
                    (false, _) => Some(memory()),
                };
            if let Some(store) = store {
                let _ = self.history.set(store);
            }
        }
        if !config.cluster.enabled {
            let _ = self
                .state
                .set(Arc::new(crate::cluster::MemoryStateStore::default()));
            self.join_state().await;
            return Ok(());
        }
        let (tx, mut rx) = mpsc::channel::<Inbound>(INBOUND_CAPACITY);
        let jetstream_missing = Arc::new(AtomicBool::new(false));
        let (bus, subjects, state): (SharedBus, Subjects, Arc<dyn StateStore>) =
            match config.cluster.bus_type {
                BusType::Local | BusType::Noop => {
                    let broker = local_broker.unwrap_or_default();
                    let state = broker.state.clone();
                    (
                        Arc::new(LocalBus::new(broker, tx)),
                        Subjects::new("wshub."),
                        state,
                    )
                }
                BusType::Nats => {
                    let subjects = Subjects::new(&config.cluster.nats.subject_prefix);
                    let bus = NatsBus::connect(
                        &config.cluster.nats,
                        &subjects,
                        tx,
                        self.hub.metrics.bus.reconnects.clone(),
                    )
                    .await?;
                    let state = NatsStateStore::new(
                        bus.client(),
                        &config.cluster.nats,
                        config.cluster.node_ttl,
                    );
                    watch_jetstream(
                        bus.client(),
                        jetstream_missing.clone(),
                        self.shutdown.clone(),
                    );
                    if config.rooms.history.size > 0 {
                        let _ = self
                            .history
                            .set(Arc::new(crate::history::JetStreamHistory::new(
                                bus.client(),
                                &config.cluster.nats,
                                config.rooms.history.size,
                                config.rooms.history.ttl,
                                config.rooms.idempotency_window,
                            )));
                    }
                    (Arc::new(bus), subjects, Arc::new(state))
                }
                BusType::Redis => {
                    let subjects = Subjects::new(&config.cluster.redis.key_prefix);
                    let bus = RedisBus::connect(
                        &config.cluster.redis,
                        tx,
                        self.hub.metrics.bus.reconnects.clone(),
                    )
                    .await?;
                    let state = RedisStateStore::connect(&config.cluster.redis)
                        .await
                        .map_err(|e| BusError::Other(e.to_string()))?;
                    (Arc::new(bus), subjects, Arc::new(state))
                }
            };
        let _ = self.state.set(state);
        bus.subscribe(subjects.node(self.hub.node_id().as_str()))
            .await?;
        bus.subscribe(subjects.broadcast()).await?;
        tracing::info!(bus = bus.kind(), "cluster bus started");
        let link = ClusterLink {
            bus,
            subjects,
            origin: self.hub.node_id().to_string(),
            boot: rand_u64(),
            seq: AtomicU64::new(0),
            dedup: Mutex::new(DedupWindow::default()),
            rooms: tokio::sync::Mutex::new(HashSet::new()),
            metrics: self.hub.metrics.clone(),
            jetstream_missing,
        };
        if self.cluster.set(link).is_err() {
            return Err(BusError::Other("cluster already started".into()));
        }
        let node = self.clone();
        self.tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = node.shutdown.cancelled() => break,
                    msg = rx.recv() => match msg {
                        Some(msg) => node.on_bus_message(msg),
                        None => break,
                    },
                }
            }
        });
        self.join_state().await;
        self.start_position_check();
        Ok(())
    }

    /// First heartbeat (so this node is listed at once), then the heartbeat task.
    async fn join_state(self: &Arc<Self>) {
        let config = self.config();
        let _ = self
            .state()
            .heartbeat(
                crate::cluster::NodeRecord {
                    node_id: self.hub.node_id().to_string(),
                    addr: config.server.addr.clone(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    clients: 0,
                    rooms: 0,
                    started_at_ms: self.started_at_ms,
                    heartbeat_at_ms: crate::cluster::now_ms(),
                },
                config.cluster.node_ttl,
            )
            .await;
        self.start_heartbeat();
    }

    /// The history store, when rooms keep history (`rooms.history.size > 0`).
    pub(crate) fn history_for_rooms(&self) -> Option<&dyn crate::history::HistoryStore> {
        self.history.get().map(|h| &**h)
    }

    /// `"local"`/`"nats"`/... and its state; `None` for a single node without a bus.
    pub(crate) fn bus_status(&self) -> Option<(&'static str, BusState)> {
        self.cluster.get().map(|c| (c.bus.kind(), c.bus.state()))
    }

    /// Why the cluster cannot serve joins although the broker is connected, if it cannot.
    pub(crate) fn cluster_problem(&self) -> Option<&'static str> {
        self.cluster
            .get()
            .filter(|c| c.jetstream_missing.load(Ordering::Relaxed))
            .map(|_| "the NATS server has no JetStream")
    }

    pub(crate) fn bus_subscriptions(&self) -> Vec<String> {
        self.cluster
            .get()
            .map(|c| c.bus.subscriptions())
            .unwrap_or_default()
    }

    pub(crate) async fn stop_cluster(&self) {
        if let Some(c) = self.cluster.get() {
            c.bus.close().await;
        }
    }

    // ---- publishing ----

    /// To every member of a room on every node but the sender: a frame that is not part of
    /// the room's history (presence events, custom SDK pushes without history).
    pub(crate) async fn publish_room(
        &self,
        room: &str,
        frame: Bytes,
        sender: Option<&ConnHandle>,
    ) -> Result<Delivery, PublishError> {
        self.fan_out_room(room, frame, sender, None, Instant::now())
            .await
    }

    /// A publication to a room: stored in the room's history first when it keeps one (which
    /// gives it its offset and epoch, added to `data`), then encoded once and fanned out.
    /// A repeat of an `idempotency_key` within the window is not delivered again; its first
    /// position is returned.
    pub(crate) async fn publish_room_message(
        &self,
        room: &str,
        message_type: &str,
        data: &impl serde::Serialize,
        sender: Option<&ConnHandle>,
        idempotency_key: Option<&str>,
    ) -> Result<Published, PublishError> {
        let accepted = Instant::now();
        // Before anything is stored: a publication to a room that does not exist fails
        // without leaving a trace in the history (and a room with no member on this node is
        // still a room).
        self.ensure_room(room).await?;
        let Some(history) = self.history_for_rooms() else {
            let frame = self.hub.frame(message_type, data, None)?;
            let delivery = self
                .fan_out_room(room, frame, sender, None, accepted)
                .await?;
            return Ok(Published {
                delivery,
                position: None,
            });
        };
        let data = Bytes::from(serde_json::to_vec(data)?);
        let appended = history
            .append(room, idempotency_key, message_type, data.clone())
            .await;
        self.hub.metrics.history(
            crate::metrics::HistoryOp::Append,
            accepted.elapsed(),
            appended.is_ok(),
        );
        let appended = appended?;
        if appended.duplicate {
            // A retry: not delivered again, acknowledged with the first one's position.
            return Ok(Published {
                delivery: Delivery::default(),
                position: Some(appended.position),
            });
        }
        let frame = self.history_frame(message_type, &data, &appended.position)?;
        let delivery = self
            .fan_out_room(
                room,
                frame,
                sender,
                Some(appended.position.offset),
                accepted,
            )
            .await?;
        Ok(Published {
            delivery,
            position: Some(appended.position),
        })
    }

    /// Up to `limit` stored publications of a room after `offset`, timed and counted as a
    /// history read.
    pub(crate) async fn read_history(
        &self,
        history: &dyn crate::history::HistoryStore,
        room: &str,
        offset: Option<u64>,
        limit: usize,
    ) -> Result<(String, Vec<crate::history::Publication>), crate::history::HistoryError> {
        let started = Instant::now();
        let read = history.read(room, offset, limit).await;
        self.hub.metrics.history(
            crate::metrics::HistoryOp::Read,
            started.elapsed(),
            read.is_ok(),
        );
        read
    }

    /// The frame of a stored publication, with its position in `data`.
    pub(crate) fn history_frame(
        &self,
        message_type: &str,
        data: &[u8],
        position: &crate::history::Position,
    ) -> Result<Bytes, serde_json::Error> {
        let with_position = crate::history::with_position(data, position);
        let raw: Box<serde_json::value::RawValue> = serde_json::from_slice(&with_position)?;
        self.hub.frame(message_type, &*raw, None)
    }

    /// `RoomNotFound` unless the room has local members or is in the registry.
    async fn ensure_room(&self, room: &str) -> Result<(), PublishError> {
        if self.hub.has_local_members(room) || self.state().room(room).await?.is_some() {
            Ok(())
        } else {
            Err(HubError::RoomNotFound.into())
        }
    }

    async fn fan_out_room(
        &self,
        room: &str,
        frame: Bytes,
        sender: Option<&ConnHandle>,
        offset: Option<u64>,
        accepted: Instant,
    ) -> Result<Delivery, PublishError> {
        let exclude = sender.map_or(Exclude::Nobody, |c| Exclude::Conn(c.conn_id));
        let local = self.deliver_room(room, &frame, exclude, offset, Some(accepted.elapsed()));
        let Some(link) = self.cluster.get() else {
            return match local {
                // A registered room without members here: delivered to nobody, not an error.
                Err(HubError::RoomNotFound) => {
                    self.ensure_room(room).await?;
                    Ok(Delivery::default())
                }
                other => Ok(other?),
            };
        };
        // In a cluster the room may have members only elsewhere: "not found here" is not an
        // error (the shared room registry decides existence).
        let local = local.unwrap_or_default();
        let sender_id = sender.map_or("", |c| c.client_id.as_str());
        let span = tracing::debug_span!("bus.publish", room_id = room, bus = link.bus.kind());
        let mut msg = link.message(Kind::Room, room, sender_id, frame);
        msg.offset = offset.unwrap_or(0);
        msg.published_at_us = msg
            .published_at_us
            .saturating_sub(accepted.elapsed().as_micros() as u64);
        msg.traceparent = crate::telemetry::traceparent(&span);
        link.send(link.subjects.room(room), msg, true)
            .instrument(span)
            .await?;
        Ok(local)
    }

    /// Local fan-out of a room frame, counted and traced (`deliver` span).
    pub(crate) fn deliver_room(
        &self,
        room: &str,
        frame: &Bytes,
        exclude: Exclude<'_>,
        offset: Option<u64>,
        since_accepted: Option<Duration>,
    ) -> Result<Delivery, HubError> {
        let span = tracing::debug_span!(
            "deliver",
            room_id = room,
            node_id = %self.hub.node_id(),
            recipients = tracing::field::Empty
        );
        let _entered = span.enter();
        let delivery = self.hub.publish_room(room, frame, exclude, offset)?;
        span.record("recipients", delivery.queued);
        self.hub.metrics.fanned_out(delivery.queued, since_accepted);
        Ok(delivery)
    }

    /// To every client on every node but the sender.
    pub(crate) async fn publish_broadcast(
        &self,
        frame: Bytes,
        sender: Option<&ConnHandle>,
    ) -> Result<Delivery, PublishError> {
        let exclude = sender.map_or(Exclude::Nobody, |c| Exclude::Conn(c.conn_id));
        let local = self.hub.broadcast(&frame, exclude);
        self.hub.metrics.fanned_out(local.queued, None);
        if let Some(link) = self.cluster.get() {
            let sender_id = sender.map_or("", |c| c.client_id.as_str());
            let msg = link.message(Kind::Broadcast, "", sender_id, frame);
            link.send(link.subjects.broadcast(), msg, false).await?;
        }
        Ok(local)
    }

    /// To one client, wherever it is connected.
    pub(crate) async fn publish_direct(
        &self,
        target: &str,
        frame: Bytes,
    ) -> Result<(), PublishError> {
        match self.hub.send_to_client(target, frame.clone()) {
            Ok(()) => Ok(()),
            Err(e) => {
                let Some(link) = self.cluster.get() else {
                    return Err(e.into());
                };
                // Not here: sent to the node that has it, per the client registry.
                let Some(node) = self.state().client_node(target).await? else {
                    return Err(HubError::ClientNotFound.into());
                };
                let msg = link.message(Kind::Direct, target, "", frame);
                link.send(link.subjects.node(&node), msg, false).await?;
                Ok(())
            }
        }
    }

    /// Deletes a room from the registry and on every node; members everywhere get
    /// `room_deleted`.
    pub(crate) async fn delete_room(
        &self,
        room: &str,
        requester: Option<&ConnHandle>,
    ) -> Result<Delivery, PublishError> {
        if self.state().delete_room(room).await?.is_none() {
            return Err(HubError::RoomNotFound.into());
        }
        let exclude = requester.map_or(Exclude::Nobody, |c| Exclude::Conn(c.conn_id));
        let local = self.hub.delete_room(room, exclude).unwrap_or_default();
        self.room_interest(room).await;
        tracing::info!(room_id = room, "room deleted");
        if let Some(link) = self.cluster.get() {
            let msg = link.message(Kind::RoomDeleted, room, "", Bytes::new());
            link.send(link.subjects.room(room), msg, false).await?;
        }
        Ok(local)
    }

    /// Removes `target` from `room` on whatever node it is, and sends it `notice`.
    pub(crate) async fn kick(
        self: &Arc<Self>,
        room: &str,
        target: &str,
        notice: Bytes,
    ) -> Result<(), PublishError> {
        if let Some(conn) = self.hub.client(target) {
            self.kick_local(room, &conn, notice)?;
            return Ok(());
        }
        let Some(link) = self.cluster.get() else {
            return Err(HubError::ClientNotFound.into());
        };
        let Some(node) = self.state().client_node(target).await? else {
            return Err(HubError::ClientNotFound.into());
        };
        let msg = link.message(Kind::Kick, target, room, notice);
        link.send(link.subjects.node(&node), msg, false).await?;
        Ok(())
    }

    fn kick_local(
        self: &Arc<Self>,
        room: &str,
        conn: &Arc<ConnHandle>,
        notice: Bytes,
    ) -> Result<(), HubError> {
        self.hub.leave(room, conn)?;
        self.hub.send_to(conn, notice);
        self.hooks
            .leave(&Client::new(self.clone(), conn.clone()), room);
        self.webhook(
            crate::webhooks::EventKind::Leave,
            conn.client_id.as_str(),
            |e| e.in_room(room),
        );
        let node = self.clone();
        let (room, client) = (room.to_owned(), conn.client_id.to_string());
        self.tasks
            .spawn(async move { node.forget_membership(&room, &client).await });
        Ok(())
    }

    /// Disconnects a client wherever it is connected.
    pub(crate) async fn disconnect_client(&self, target: &str) -> Result<(), PublishError> {
        if let Some(conn) = self.hub.client(target) {
            conn.close(close::NORMAL, close::reason::KICKED);
            return Ok(());
        }
        let Some(link) = self.cluster.get() else {
            return Err(HubError::ClientNotFound.into());
        };
        let Some(node) = self.state().client_node(target).await? else {
            return Err(HubError::ClientNotFound.into());
        };
        let msg = link.message(Kind::Disconnect, target, "", Bytes::new());
        link.send(link.subjects.node(&node), msg, false).await?;
        Ok(())
    }

    /// Tells `node` to close its connection of `client`, which reconnected here.
    pub(crate) async fn send_replaced(&self, client: &str, node: &str) -> Result<(), PublishError> {
        let Some(link) = self.cluster.get() else {
            return Ok(());
        };
        let msg = link.message(Kind::Replaced, client, node, Bytes::new());
        link.send(link.subjects.node(node), msg, false).await?;
        Ok(())
    }

    // ---- interest ----

    /// Subscribes to or unsubscribes from `room`'s subject to match whether this node has
    /// members of it. A broker error is logged, not returned: the bus re-applies wanted
    /// subscriptions when it reconnects, and local delivery does not depend on it.
    pub(crate) async fn room_interest(&self, room: &str) {
        let Some(link) = self.cluster.get() else {
            return;
        };
        let mut subscribed = link.rooms.lock().await;
        let wanted = self.hub.has_local_members(room);
        let have = subscribed.contains(room);
        let result = match (wanted, have) {
            (true, false) => {
                subscribed.insert(room.to_owned());
                link.bus.subscribe(link.subjects.room(room)).await
            }
            (false, true) => {
                subscribed.remove(room);
                link.bus.unsubscribe(link.subjects.room(room)).await
            }
            _ => Ok(()),
        };
        if let Err(e) = result {
            tracing::warn!(room_id = room, error = %e, "room subscription change failed; retried on reconnect");
        }
    }

    // ---- receiving ----

    fn on_bus_message(self: &Arc<Self>, inbound: Inbound) {
        let Some(link) = self.cluster.get() else {
            return;
        };
        link.metrics.bus.received.inc();
        let Some(msg) = BusMessage::decode(inbound.payload) else {
            link.metrics.bus.malformed.inc();
            tracing::warn!(subject = %inbound.subject, "undecodable bus message dropped");
            return;
        };
        // Our own publication echoed back: delivered locally already.
        if msg.origin == link.origin && msg.boot == link.boot {
            link.metrics.bus.echoes.inc();
            return;
        }
        let fresh = link
            .dedup
            .lock()
            .map(|mut d| d.first_time(&msg.origin, msg.boot, msg.seq))
            .unwrap_or(true);
        if !fresh {
            link.metrics.bus.duplicates.inc();
            tracing::debug!(origin = %msg.origin, seq = msg.seq, "duplicate bus message dropped");
            return;
        }
        // Unknown for messages from nodes of the first bus format.
        let since_published = (msg.published_at_us > 0)
            .then(|| Duration::from_micros(unix_micros().saturating_sub(msg.published_at_us)));
        match msg.kind {
            Kind::Room => {
                let span = tracing::debug_span!(
                    "bus.receive",
                    room_id = %msg.target,
                    origin = %msg.origin,
                    node_id = %self.hub.node_id()
                );
                crate::telemetry::set_remote_parent(&span, &msg.traceparent);
                let _entered = span.enter();
                let offset = (msg.offset > 0).then_some(msg.offset);
                let _ = self.deliver_room(
                    &msg.target,
                    &msg.frame,
                    Exclude::Client(&msg.extra),
                    offset,
                    since_published,
                );
            }
            Kind::Broadcast => {
                let d = self.hub.broadcast(&msg.frame, Exclude::Client(&msg.extra));
                self.hub.metrics.fanned_out(d.queued, since_published);
            }
            Kind::Direct => {
                let _ = self.hub.send_to_client(&msg.target, msg.frame);
            }
            Kind::RoomDeleted => {
                if self.hub.delete_room(&msg.target, Exclude::Nobody).is_ok() {
                    let node = self.clone();
                    let room = msg.target.clone();
                    self.tasks
                        .spawn(async move { node.room_interest(&room).await });
                }
            }
            Kind::Kick => {
                if let Some(conn) = self.hub.client(&msg.target) {
                    let _ = self.kick_local(&msg.extra, &conn, msg.frame);
                }
            }
            Kind::Disconnect => {
                if let Some(conn) = self.hub.client(&msg.target) {
                    conn.close(close::NORMAL, close::reason::KICKED);
                }
            }
            Kind::Replaced => {
                if msg.extra == link.origin
                    && let Some(conn) = self.hub.client(&msg.target)
                {
                    conn.close(close::REPLACED, close::reason::REPLACED);
                }
            }
        }
    }
}

/// The cluster state and history live in JetStream: a NATS server without it (`-js`) would
/// let the node start and then fail every join with 1004. Once the broker answers, say so in
/// the log and mark the node not ready (`/health/ready` 503) until JetStream shows up (the
/// broker restarted with `-js`). Runs in the background: the broker may still be down.
fn watch_jetstream(
    client: async_nats::Client,
    missing: Arc<AtomicBool>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    use async_nats::RequestErrorKind;
    tokio::spawn(async move {
        loop {
            // A raw `$JS.API.INFO` request rather than `query_account`: any answer means
            // JetStream is there (async-nats 0.42 cannot parse nats-server 2.9's account info,
            // so the typed call fails even when it is); "no responders" means it is not.
            let pause = match client.request("$JS.API.INFO", Bytes::new()).await {
                Ok(_) => {
                    if missing.swap(false, Ordering::Relaxed) {
                        tracing::info!("the NATS server has JetStream now: ready");
                    }
                    return;
                }
                Err(e) if e.kind() == RequestErrorKind::NoResponders => {
                    if !missing.swap(true, Ordering::Relaxed) {
                        tracing::error!(
                            "the NATS server has no JetStream (start it with -js): cluster state and history need it; joins fail with 1004 and /health/ready answers 503 until it has"
                        );
                    }
                    Duration::from_secs(2)
                }
                // Not connected yet, or a timeout: try again.
                Err(_) => Duration::from_secs(1),
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    });
}

/// Wall-clock microseconds since the Unix epoch (comparable across nodes, unlike `Instant`).
fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn rand_u64() -> u64 {
    let id = uuid::Uuid::new_v4();
    let b = id.as_bytes();
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

//! The bus between nodes: how a publication on one node reaches the others.
//!
//! [`Bus`] has three implementations, picked once at start from `cluster.bus_type`:
//! [`LocalBus`] (in-process; what a single node runs on, and what in-process test clusters
//! share), [`NatsBus`] (core NATS subjects, JetStream-acknowledged for room traffic when
//! `cluster.nats.use_jetstream`), and [`RedisBus`] (pub/sub, or sharded pub/sub in cluster
//! mode).
//!
//! The bus never delivers to sockets: what it receives goes to the node, which hands it to
//! the hub exactly like a local publish (the socketioxide "adapter wraps the local one"
//! shape). Local delivery never goes through the bus: a publication is fanned out locally by
//! its node, and published once to the bus for the others; the echo a broker sends back is
//! dropped by origin.
//!
//! Semantics every implementation keeps (see `docs/bus.md`):
//! - at-most-once per subscription; ordered per publisher and subject;
//! - `subscribe`/`unsubscribe` are idempotent, and subscriptions survive broker reconnects
//!   (the implementation resubscribes);
//! - `publish` fails fast with [`BusError::Unavailable`] or [`BusError::Timeout`] while the
//!   broker is unreachable, instead of queueing without bound.

mod dedup;
mod local;
mod message;
mod nats;
mod redis;
mod subject;

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tokio::sync::mpsc;

pub(crate) use dedup::DedupWindow;
pub use local::{LocalBroker, LocalBus};
pub(crate) use message::{BusMessage, Kind};
pub use nats::NatsBus;
pub use redis::RedisBus;
pub(crate) use redis::fred_config as redis_config;
pub(crate) use subject::Subjects;

/// Connection state of a bus, as `/health` and metrics report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusState {
    Connected,
    /// The broker is unreachable: local traffic still flows, cross-node traffic does not.
    Degraded,
}

impl BusState {
    pub fn as_str(self) -> &'static str {
        match self {
            BusState::Connected => "connected",
            BusState::Degraded => "degraded",
        }
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    #[error("bus operation timed out")]
    Timeout,
    #[error("bus error: {0}")]
    Other(String),
}

/// One message as it arrived from the broker, before decoding.
#[derive(Debug)]
pub struct Inbound {
    pub subject: String,
    pub payload: Bytes,
}

/// Where a bus implementation pushes what it receives. Bounded: a node that cannot keep up
/// with the bus applies back-pressure to its broker connection rather than growing memory.
pub type InboundSender = mpsc::Sender<Inbound>;

/// The bus a node publishes to and subscribes on.
pub trait Bus: Send + Sync + 'static {
    /// `"local"`, `"nats"`, `"nats+jetstream"` or `"redis"`.
    fn kind(&self) -> &'static str;

    fn state(&self) -> BusState;

    /// Publishes `payload` on `subject`. `durable` asks for a broker acknowledgement where the
    /// implementation has one (JetStream); `msg_id` lets the broker drop a retried duplicate.
    fn publish(
        &self,
        subject: String,
        payload: Bytes,
        durable: Option<String>,
    ) -> BoxFuture<'_, Result<(), BusError>>;

    /// Starts delivering `subject` to the inbound channel (idempotent).
    fn subscribe(&self, subject: String) -> BoxFuture<'_, Result<(), BusError>>;

    /// Stops delivering `subject` (idempotent).
    fn unsubscribe(&self, subject: String) -> BoxFuture<'_, Result<(), BusError>>;

    /// Subjects currently subscribed, sorted.
    fn subscriptions(&self) -> Vec<String>;

    /// Releases broker connections.
    fn close(&self) -> BoxFuture<'_, ()>;
}

pub type SharedBus = Arc<dyn Bus>;

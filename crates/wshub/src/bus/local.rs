//! The in-process bus. With `cluster.bus_type: local` the nodes that share one
//! [`LocalBroker`] form a cluster inside one process (embedding several nodes, and the fast
//! in-process cluster tests); a node alone on its broker is a single node.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::future::BoxFuture;

use super::{Bus, BusError, BusState, Inbound, InboundSender};

/// Routes publications between the [`LocalBus`]es of one process, and holds their shared
/// cluster state.
#[derive(Default)]
pub struct LocalBroker {
    subscribers: Mutex<HashMap<String, Vec<(u64, InboundSender)>>>,
    next_id: AtomicU64,
    losing: AtomicBool,
    pub(crate) state: Arc<crate::cluster::MemoryStateStore>,
    pub(crate) history: std::sync::OnceLock<Arc<crate::history::MemoryHistory>>,
}

impl LocalBroker {
    pub fn new() -> Arc<LocalBroker> {
        Arc::new(LocalBroker::default())
    }

    /// Fault injection for tests of an in-process cluster: while on, every publication is
    /// lost on its way to the other nodes, as a broker outage would lose it (publishers are
    /// not told, and each node still delivers to its own members).
    pub fn lose_publications(&self, on: bool) {
        self.losing.store(on, Ordering::Relaxed);
    }
}

pub struct LocalBus {
    id: u64,
    broker: Arc<LocalBroker>,
    inbound: InboundSender,
    subscribed: Mutex<BTreeSet<String>>,
}

impl LocalBus {
    pub fn new(broker: Arc<LocalBroker>, inbound: InboundSender) -> LocalBus {
        let id = broker.next_id.fetch_add(1, Ordering::Relaxed);
        LocalBus {
            id,
            broker,
            inbound,
            subscribed: Mutex::new(BTreeSet::new()),
        }
    }
}

impl Bus for LocalBus {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn state(&self) -> BusState {
        BusState::Connected
    }

    fn publish(
        &self,
        subject: String,
        payload: Bytes,
        _durable: Option<String>,
    ) -> BoxFuture<'_, Result<(), BusError>> {
        if self.broker.losing.load(Ordering::Relaxed) {
            return Box::pin(async { Ok(()) });
        }
        // Every other bus subscribed to the subject; the publisher delivered locally itself.
        let targets: Vec<InboundSender> = self
            .broker
            .subscribers
            .lock()
            .map(|subs| {
                subs.get(&subject)
                    .map(|v| {
                        v.iter()
                            .filter(|(id, _)| *id != self.id)
                            .map(|(_, tx)| tx.clone())
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .unwrap_or_default();
        Box::pin(async move {
            for tx in targets {
                let _ = tx
                    .send(Inbound {
                        subject: subject.clone(),
                        payload: payload.clone(),
                    })
                    .await;
            }
            Ok(())
        })
    }

    fn subscribe(&self, subject: String) -> BoxFuture<'_, Result<(), BusError>> {
        if let (Ok(mut mine), Ok(mut subs)) =
            (self.subscribed.lock(), self.broker.subscribers.lock())
            && mine.insert(subject.clone())
        {
            subs.entry(subject)
                .or_default()
                .push((self.id, self.inbound.clone()));
        }
        Box::pin(async { Ok(()) })
    }

    fn unsubscribe(&self, subject: String) -> BoxFuture<'_, Result<(), BusError>> {
        if let (Ok(mut mine), Ok(mut subs)) =
            (self.subscribed.lock(), self.broker.subscribers.lock())
            && mine.remove(&subject)
            && let Some(list) = subs.get_mut(&subject)
        {
            list.retain(|(id, _)| *id != self.id);
            if list.is_empty() {
                subs.remove(&subject);
            }
        }
        Box::pin(async { Ok(()) })
    }

    fn subscriptions(&self) -> Vec<String> {
        self.subscribed
            .lock()
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        let subjects = self.subscriptions();
        Box::pin(async move {
            for s in subjects {
                let _ = self.unsubscribe(s).await;
            }
        })
    }
}

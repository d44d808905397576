//! Several nodes on one backend (local bus, NATS, NATS + JetStream, Redis).

use std::sync::Arc;
use std::time::Duration;

use super::brokers::Broker;
use super::{TestServer, eventually};
use wshub::Config;
use wshub::bus::LocalBroker;
use wshub::config::BusType;
use wshub::{Server, ServerBuilder};

#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Local,
    Nats,
    JetStream,
    Redis,
}

/// A backend's broker (if any) and how to configure nodes for it.
pub struct Cluster {
    pub backend: Backend,
    pub broker: Option<Broker>,
    pub local: Arc<LocalBroker>,
}

impl Cluster {
    pub fn new(backend: Backend) -> Cluster {
        let broker = match backend {
            Backend::Local => None,
            Backend::Nats | Backend::JetStream => Some(Broker::nats()),
            Backend::Redis => Some(Broker::redis()),
        };
        Cluster {
            backend,
            broker,
            local: LocalBroker::new(),
        }
    }

    pub fn config(&self, node: &str) -> Config {
        let mut c = Config::default();
        c.cluster.enabled = true;
        c.cluster.node_id = node.into();
        match self.backend {
            Backend::Local => c.cluster.bus_type = BusType::Local,
            Backend::Nats | Backend::JetStream => {
                c.cluster.bus_type = BusType::Nats;
                c.cluster.nats.urls = vec![self.broker.as_ref().unwrap().url()];
                c.cluster.nats.use_jetstream = matches!(self.backend, Backend::JetStream);
                c.cluster.nats.reconnect_wait = Duration::from_millis(300);
                c.cluster.nats.op_timeout = Duration::from_millis(1000);
            }
            Backend::Redis => {
                c.cluster.bus_type = BusType::Redis;
                c.cluster.redis.addrs = vec![self.broker.as_ref().unwrap().url()];
                c.cluster.redis.op_timeout = Duration::from_millis(1000);
                c.cluster.redis.retry_interval = Duration::from_millis(300);
            }
        }
        c
    }

    pub fn builder(&self, node: &str) -> ServerBuilder {
        Server::builder()
            .config(self.config(node))
            .local_broker(self.local.clone())
    }

    pub async fn nodes(&self) -> [TestServer; 3] {
        [
            TestServer::start_with(self.builder("node-a")).await,
            TestServer::start_with(self.builder("node-b")).await,
            TestServer::start_with(self.builder("node-c")).await,
        ]
    }
}

pub async fn wait_connected(nodes: &[&TestServer]) {
    for n in nodes {
        let h = n.running.handle();
        eventually("bus connected", || {
            h.bus_status().map(|s| s.1) == Some("connected")
        })
        .await;
    }
}

pub async fn metric(node: &TestServer, name: &str) -> u64 {
    super::scrape::Scrape::fetch(&node.http_url("/metrics"))
        .await
        .get(name, &[]) as u64
}

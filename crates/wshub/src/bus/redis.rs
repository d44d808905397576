//! Redis bus (fred): PUBLISH/SUBSCRIBE, or SPUBLISH/SSUBSCRIBE (sharded pub/sub, so a
//! room's traffic stays on the shard that owns its channel) when `cluster.redis.mode` is
//! `cluster`.
//!
//! Two connections: one publishes, one subscribes (a subscribed RESP2 connection can do
//! nothing else). The subjects this node wants are kept here, not only in the client, so a
//! subscription requested while Redis is down is applied when it comes back, and every one is
//! re-applied after a reconnect.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fred::clients::SubscriberClient;
use fred::prelude::*;
use futures_util::future::BoxFuture;

use super::{Bus, BusError, BusState, Inbound, InboundSender};
use crate::config::RedisConfig;

pub struct RedisBus {
    publisher: Client,
    subscriber: SubscriberClient,
    sharded: bool,
    wanted: Arc<Mutex<BTreeSet<String>>>,
    op_timeout: Duration,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    connections: Vec<fred::types::ConnectHandle>,
}

/// The fred client configuration for `cluster.redis` (shared with the state store).
pub(crate) fn fred_config(cfg: &RedisConfig) -> Result<Config, BusError> {
    let hosts: Vec<(String, u16)> = cfg
        .addrs
        .iter()
        .map(|a| {
            let (host, port) = a.rsplit_once(':').unwrap_or((a.as_str(), "6379"));
            port.parse()
                .map(|p| (host.to_owned(), p))
                .map_err(|_| BusError::Other(format!("cluster.redis.addrs: bad address {a}")))
        })
        .collect::<Result<_, _>>()?;
    let server = match (cfg.mode.as_str(), hosts.first()) {
        ("cluster", _) => fred::types::config::ServerConfig::new_clustered(hosts.clone()),
        (_, Some((host, port))) => {
            fred::types::config::ServerConfig::new_centralized(host.clone(), *port)
        }
        (_, None) => return Err(BusError::Other("cluster.redis.addrs is empty".into())),
    };
    Ok(Config {
        server,
        password: (!cfg.password.is_empty()).then(|| cfg.password.clone()),
        database: (cfg.mode != "cluster").then_some(cfg.db as u8),
        ..Default::default()
    })
}

impl RedisBus {
    /// Starts connecting; returns at once even if Redis is down (the node runs degraded and
    /// fred reconnects with exponential backoff).
    pub(crate) async fn connect(
        cfg: &RedisConfig,
        inbound: InboundSender,
        reconnect_count: prometheus::IntCounter,
    ) -> Result<RedisBus, BusError> {
        let config = fred_config(cfg)?;
        let max_delay = cfg.retry_interval.as_millis().max(1000) as u32;
        let mut builder = Builder::from_config(config);
        builder
            .set_policy(ReconnectPolicy::new_exponential(0, 100, max_delay, 2))
            .with_connection_config(|c| {
                c.connection_timeout = cfg.dial_timeout;
                c.internal_command_timeout = cfg.op_timeout.max(Duration::from_secs(1));
            })
            .with_performance_config(|p| {
                p.default_command_timeout = cfg.op_timeout;
                // The subscriber's broadcast channel: deep enough for bursts between two
                // polls of the forwarding task.
                p.broadcast_channel_capacity = 16_384;
            });
        let publisher = builder
            .build()
            .map_err(|e| BusError::Other(e.to_string()))?;
        let subscriber = builder
            .build_subscriber_client()
            .map_err(|e| BusError::Other(e.to_string()))?;
        // The connection tasks run until `quit` (in `close`).
        let connections = vec![publisher.connect(), subscriber.connect()];

        let sharded = cfg.mode == "cluster";
        let wanted: Arc<Mutex<BTreeSet<String>>> = Arc::default();
        let mut tasks = Vec::new();

        // Forward messages to the node.
        let mut messages = subscriber.message_rx();
        tasks.push(tokio::spawn(async move {
            loop {
                match messages.recv().await {
                    Ok(msg) => {
                        let Some(payload) = msg.value.into_bytes() else {
                            continue;
                        };
                        let inbound_msg = Inbound {
                            subject: msg.channel.to_string(),
                            payload,
                        };
                        if inbound.send(inbound_msg).await.is_err() {
                            break;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(dropped = n, "redis bus fell behind; messages dropped");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        }));

        // Re-apply every wanted subscription after each (re)connect, and log transitions.
        let mut reconnects = subscriber.reconnect_rx();
        let resub = subscriber.clone();
        let resub_wanted = wanted.clone();
        tasks.push(tokio::spawn(async move {
            let mut first = true;
            while reconnects.recv().await.is_ok() {
                tracing::info!("redis bus connected");
                if !std::mem::take(&mut first) {
                    reconnect_count.inc();
                }
                let channels: Vec<String> = resub_wanted
                    .lock()
                    .map(|w| w.iter().cloned().collect())
                    .unwrap_or_default();
                for channel in channels {
                    let result = if sharded {
                        resub.ssubscribe(channel.clone()).await
                    } else {
                        resub.subscribe(channel.clone()).await
                    };
                    if let Err(e) = result {
                        tracing::warn!(%channel, error = %e, "redis resubscribe failed");
                    }
                }
            }
        }));
        let mut errors = subscriber.error_rx();
        tasks.push(tokio::spawn(async move {
            let mut last_logged: Option<tokio::time::Instant> = None;
            while let Ok((error, _)) = errors.recv().await {
                // One line per outage, not one per retry.
                let now = tokio::time::Instant::now();
                if last_logged.is_none_or(|t| now.duration_since(t) > Duration::from_secs(30)) {
                    tracing::warn!(error = %error, "redis bus connection lost; serving local traffic only until it is back");
                    last_logged = Some(now);
                }
            }
        }));

        Ok(RedisBus {
            publisher,
            subscriber,
            sharded,
            wanted,
            op_timeout: cfg.op_timeout,
            tasks,
            connections,
        })
    }

    fn connected(&self) -> bool {
        self.publisher.is_connected() && self.subscriber.is_connected()
    }
}

impl Bus for RedisBus {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn state(&self) -> BusState {
        if self.connected() {
            BusState::Connected
        } else {
            BusState::Degraded
        }
    }

    fn publish(
        &self,
        subject: String,
        payload: Bytes,
        _durable: Option<String>,
    ) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async move {
            if !self.publisher.is_connected() {
                return Err(BusError::Unavailable("not connected to Redis".into()));
            }
            let publish = async {
                if self.sharded {
                    self.publisher.spublish::<(), _, _>(subject, payload).await
                } else {
                    self.publisher.publish::<(), _, _>(subject, payload).await
                }
            };
            tokio::time::timeout(self.op_timeout, publish)
                .await
                .map_err(|_| BusError::Timeout)?
                .map_err(|e| BusError::Unavailable(e.to_string()))
        })
    }

    fn subscribe(&self, subject: String) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async move {
            let new = self
                .wanted
                .lock()
                .map(|mut w| w.insert(subject.clone()))
                .unwrap_or(false);
            if !new || !self.subscriber.is_connected() {
                // Already wanted, or applied on reconnect.
                return Ok(());
            }
            let result = if self.sharded {
                tokio::time::timeout(self.op_timeout, self.subscriber.ssubscribe(subject)).await
            } else {
                tokio::time::timeout(self.op_timeout, self.subscriber.subscribe(subject)).await
            };
            result
                .map_err(|_| BusError::Timeout)?
                .map_err(|e| BusError::Unavailable(e.to_string()))
        })
    }

    fn unsubscribe(&self, subject: String) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async move {
            let was = self
                .wanted
                .lock()
                .map(|mut w| w.remove(&subject))
                .unwrap_or(false);
            if !was || !self.subscriber.is_connected() {
                return Ok(());
            }
            let result = if self.sharded {
                tokio::time::timeout(self.op_timeout, self.subscriber.sunsubscribe(subject)).await
            } else {
                tokio::time::timeout(self.op_timeout, self.subscriber.unsubscribe(subject)).await
            };
            result
                .map_err(|_| BusError::Timeout)?
                .map_err(|e| BusError::Unavailable(e.to_string()))
        })
    }

    fn subscriptions(&self) -> Vec<String> {
        self.wanted
            .lock()
            .map(|w| w.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            for t in &self.tasks {
                t.abort();
            }
            let _ = tokio::time::timeout(Duration::from_secs(2), self.subscriber.quit()).await;
            let _ = tokio::time::timeout(Duration::from_secs(2), self.publisher.quit()).await;
            for c in &self.connections {
                c.abort();
            }
        })
    }
}

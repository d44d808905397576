//! NATS bus (async-nats).
//!
//! Every subject is a core NATS subscription; async-nats resubscribes them all after a
//! reconnect. With `use_jetstream`, room publications go through JetStream: the stream
//! (`stream_name`, subjects `{prefix}room.>`) stores them for `message_retention` and the
//! publish waits for the broker's acknowledgement, with `Nats-Msg-Id` so a retried publish
//! is stored once. Subscribers still receive them on their core subscriptions (a JetStream
//! publish is a core publish the stream also records), so delivery latency is the same.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;

use super::{Bus, BusError, BusState, Inbound, InboundSender, Subjects};
use crate::config::NatsConfig;

/// Nobody subscribes here, and no stream captures it: a request to it is a round trip.
const SYNC_SUBJECT: &str = "_WSHUB_SYNC";

pub struct NatsBus {
    client: async_nats::Client,
    jetstream: Option<JetStream>,
    inbound: InboundSender,
    subscriptions: Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
    op_timeout: Duration,
}

struct JetStream {
    context: jetstream::Context,
    stream: jetstream::stream::Config,
    /// The stream exists (created lazily: the broker may be down when the node starts).
    ready: tokio::sync::OnceCell<()>,
}

impl NatsBus {
    /// Starts connecting; returns at once even if the broker is down (the node runs degraded
    /// and the client keeps retrying with `reconnect_wait` backoff).
    pub(crate) async fn connect(
        cfg: &NatsConfig,
        subjects: &Subjects,
        inbound: InboundSender,
        reconnects: prometheus::IntCounter,
    ) -> Result<NatsBus, BusError> {
        // The first `Connected` is the initial connection; later ones are reconnects.
        let ever_connected = Arc::new(AtomicBool::new(false));
        let connected = Arc::new(AtomicBool::new(false));
        let flag = connected.clone();
        let reconnect_wait = cfg.reconnect_wait;
        let mut options = async_nats::ConnectOptions::new()
            .name(&cfg.name)
            .connection_timeout(cfg.connect_timeout)
            .retry_on_initial_connect()
            .max_reconnects(usize::try_from(cfg.max_reconnects).ok())
            // Exponential from 100 ms, capped at reconnect_wait.
            .reconnect_delay_callback(move |attempts| {
                let exp = 100u64.saturating_mul(1 << attempts.min(10));
                Duration::from_millis(exp).min(reconnect_wait)
            })
            .event_callback(move |event| {
                let flag = flag.clone();
                let ever_connected = ever_connected.clone();
                let reconnects = reconnects.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            if ever_connected.swap(true, Ordering::Relaxed) {
                                reconnects.inc();
                            }
                            if !flag.swap(true, Ordering::Relaxed) {
                                tracing::info!("nats bus connected");
                            }
                        }
                        async_nats::Event::Disconnected => {
                            if flag.swap(false, Ordering::Relaxed) {
                                tracing::warn!("nats bus disconnected; serving local traffic only until it is back");
                            }
                        }
                        other => tracing::debug!(event = %other, "nats event"),
                    }
                }
            });
        if !cfg.username.is_empty() {
            options = options.user_and_password(cfg.username.clone(), cfg.password.clone());
        } else if !cfg.token.is_empty() {
            options = options.token(cfg.token.clone());
        }
        let client = options
            .connect(cfg.urls.join(","))
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))?;
        let jetstream = cfg.use_jetstream.then(|| JetStream {
            context: jetstream::new(client.clone()),
            stream: jetstream::stream::Config {
                name: cfg.stream_name.clone(),
                subjects: vec![subjects.all_rooms()],
                max_age: cfg.message_retention,
                duplicate_window: cfg.message_retention.min(Duration::from_secs(120)),
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            },
            ready: tokio::sync::OnceCell::new(),
        });
        Ok(NatsBus {
            client,
            jetstream,
            inbound,
            subscriptions: Mutex::new(HashMap::new()),
            op_timeout: cfg.op_timeout,
        })
    }

    fn connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }

    /// The connection, shared with the state store (KV buckets).
    pub(crate) fn client(&self) -> async_nats::Client {
        self.client.clone()
    }

    async fn publish_durable(
        &self,
        js: &JetStream,
        subject: String,
        payload: Bytes,
        msg_id: String,
    ) -> Result<(), BusError> {
        let work = async {
            js.ready
                .get_or_try_init(|| async {
                    js.context
                        .get_or_create_stream(js.stream.clone())
                        .await
                        .map(|_| ())
                        .map_err(|e| BusError::Other(format!("creating stream: {e}")))
                })
                .await?;
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", msg_id.as_str());
            let ack = js
                .context
                .publish_with_headers(subject, headers, payload)
                .await
                .map_err(|e| BusError::Unavailable(e.to_string()))?;
            ack.await
                .map(|_| ())
                .map_err(|e| BusError::Unavailable(e.to_string()))
        };
        tokio::time::timeout(self.op_timeout, work)
            .await
            .map_err(|_| BusError::Timeout)?
    }
}

impl Bus for NatsBus {
    fn kind(&self) -> &'static str {
        if self.jetstream.is_some() {
            "nats+jetstream"
        } else {
            "nats"
        }
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
        durable: Option<String>,
    ) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async move {
            // async-nats would buffer while disconnected; fail fast instead, so the sender
            // learns now that other nodes will not get this.
            if !self.connected() {
                return Err(BusError::Unavailable("not connected to NATS".into()));
            }
            match (&self.jetstream, durable) {
                (Some(js), Some(msg_id)) => {
                    self.publish_durable(js, subject, payload, msg_id).await
                }
                _ => tokio::time::timeout(self.op_timeout, self.client.publish(subject, payload))
                    .await
                    .map_err(|_| BusError::Timeout)?
                    .map_err(|e| BusError::Unavailable(e.to_string())),
            }
        })
    }

    fn subscribe(&self, subject: String) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(async move {
            if self
                .subscriptions
                .lock()
                .map(|s| s.contains_key(&subject))
                .unwrap_or(false)
            {
                return Ok(());
            }
            // Registered with the client even while disconnected; sent on (re)connect.
            let mut sub = self
                .client
                .subscribe(subject.clone())
                .await
                .map_err(|e| BusError::Other(e.to_string()))?;
            let inbound = self.inbound.clone();
            let task = tokio::spawn(async move {
                while let Some(msg) = sub.next().await {
                    let inbound_msg = Inbound {
                        subject: msg.subject.to_string(),
                        payload: msg.payload,
                    };
                    if inbound.send(inbound_msg).await.is_err() {
                        break;
                    }
                }
            });
            {
                let mut subs = self
                    .subscriptions
                    .lock()
                    .map_err(|_| BusError::Other("poisoned".into()))?;
                if let Some(previous) = subs.insert(subject, task) {
                    // Lost a race with a concurrent subscribe: keep one.
                    previous.abort();
                }
            }
            // SUB is only queued so far (and `flush` only writes it out). The server handles a
            // connection's operations in order, so once it has answered a request sent after
            // the SUB (no one listens on the sync subject: the answer is "no responders"), the
            // subscription is in place and what others publish from now on reaches us.
            // Skipped while disconnected: the subscription is sent on reconnect.
            if self.connected() {
                let _ = tokio::time::timeout(
                    self.op_timeout,
                    self.client.request(SYNC_SUBJECT, Bytes::new()),
                )
                .await;
            }
            Ok(())
        })
    }

    fn unsubscribe(&self, subject: String) -> BoxFuture<'_, Result<(), BusError>> {
        // Dropping the subscriber (by ending its task) sends UNSUB.
        if let Ok(mut subs) = self.subscriptions.lock()
            && let Some(task) = subs.remove(&subject)
        {
            task.abort();
        }
        Box::pin(async { Ok(()) })
    }

    fn subscriptions(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .subscriptions
            .lock()
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Ok(mut subs) = self.subscriptions.lock() {
                for (_, task) in subs.drain() {
                    task.abort();
                }
            }
            let _ = tokio::time::timeout(Duration::from_secs(2), self.client.flush()).await;
        })
    }
}

//! Webhooks: connection and room events POSTed to the application's backend, and the optional
//! synchronous join authorization.
//!
//! Events never wait on the backend: [`Webhooks::emit`] is a `try_send` into a bounded queue
//! (full = the event is dropped and counted), and one task per node batches the queue into
//! POSTs (`batch_size` events or `flush_interval`, whichever comes first), retrying a failed
//! batch with exponential backoff up to `max_retries` before dropping it. Delivery is
//! therefore at least once per batch while the backend recovers, and best-effort beyond.
//!
//! Every request is signed like Stripe's: header
//! `X-Wshub-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, so the
//! backend can check both the sender and the age of the request.
//!
//! `authorize_join` is the one synchronous call: a `join_room` waits for the backend's
//! `{"allow": bool, "reason"?: string}` (within `authorize_timeout`).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::WebhooksConfig;
use crate::metrics::Metrics;

/// Header carrying the request's signature.
pub const SIGNATURE_HEADER: &str = "x-wshub-signature";

/// Longest wait between retries of a failed batch.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The events a backend can subscribe to (`webhooks.events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventKind {
    Connect,
    Disconnect,
    Join,
    Leave,
    RoomMessage,
}

impl EventKind {
    pub(crate) const ALL: [EventKind; 5] = [
        EventKind::Connect,
        EventKind::Disconnect,
        EventKind::Join,
        EventKind::Leave,
        EventKind::RoomMessage,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EventKind::Connect => "connect",
            EventKind::Disconnect => "disconnect",
            EventKind::Join => "join",
            EventKind::Leave => "leave",
            EventKind::RoomMessage => "room_message",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One event as POSTed (inside `{"node_id", "events": [...]}`).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Event {
    pub(crate) event: &'static str,
    pub(crate) client_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) room_id: Option<String>,
    /// `disconnect`: the close code and reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<String>,
    /// `room_message`: the published content, and its offset when the room keeps history.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) content: Option<Box<serde_json::value::RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) offset: Option<u64>,
    /// Milliseconds since the Unix epoch.
    pub(crate) timestamp: i64,
}

impl Event {
    pub(crate) fn new(kind: EventKind, client_id: &str) -> Event {
        Event {
            event: kind.as_str(),
            client_id: client_id.to_owned(),
            room_id: None,
            code: None,
            reason: None,
            content: None,
            offset: None,
            timestamp: wshub_protocol::now_millis(),
        }
    }

    pub(crate) fn in_room(mut self, room: &str) -> Event {
        self.room_id = Some(room.to_owned());
        self
    }
}

#[derive(Serialize)]
struct Batch<'a> {
    node_id: &'a str,
    events: &'a [Event],
}

/// What the join authorizer decided.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum JoinDecision {
    Allow,
    Deny(String),
    /// The backend could not be asked (and `authorize_fail_open` is off).
    Unavailable(String),
}

pub(crate) struct Webhooks {
    subscribed: Vec<EventKind>,
    queue: Option<mpsc::Sender<Event>>,
    authorize: Option<String>,
    cfg: WebhooksConfig,
    http: reqwest::Client,
    node_id: String,
    metrics: Arc<Metrics>,
}

impl Webhooks {
    /// Starts the sender task (when `webhooks.url` is set); it stops with `shutdown`, after a
    /// last flush of what is queued.
    pub(crate) fn start(
        cfg: &WebhooksConfig,
        node_id: &str,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
        tasks: &tokio_util::task::TaskTracker,
    ) -> Webhooks {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .build()
            .unwrap_or_default();
        let queue = (!cfg.url.is_empty()).then(|| {
            let (tx, rx) = mpsc::channel(cfg.queue_size.max(1));
            let sender = Sender {
                cfg: cfg.clone(),
                http: http.clone(),
                node_id: node_id.to_owned(),
                metrics: metrics.clone(),
            };
            tasks.spawn(sender.run(rx, shutdown));
            tx
        });
        Webhooks {
            subscribed: cfg
                .events
                .iter()
                .filter_map(|e| EventKind::parse(e))
                .collect(),
            queue,
            authorize: (!cfg.authorize_join.is_empty()).then(|| cfg.authorize_join.clone()),
            cfg: cfg.clone(),
            http,
            node_id: node_id.to_owned(),
            metrics,
        }
    }

    /// Whether `kind` events are wanted (so callers can skip building them).
    pub(crate) fn wants(&self, kind: EventKind) -> bool {
        self.queue.is_some() && self.subscribed.contains(&kind)
    }

    /// Queues an event; never waits.
    pub(crate) fn emit(&self, event: Event) {
        let Some(queue) = &self.queue else {
            return;
        };
        if queue.try_send(event).is_err() {
            self.metrics.webhooks.dropped.inc();
        }
    }

    /// Asks `authorize_join` whether `client_id` may join `room_id`. `None` when no
    /// authorizer is configured.
    pub(crate) async fn authorize_join(
        &self,
        client_id: &str,
        room_id: &str,
        info: Option<serde_json::Value>,
    ) -> Option<JoinDecision> {
        let url = self.authorize.as_ref()?;
        let body = serde_json::json!({
            "node_id": self.node_id,
            "client_id": client_id,
            "room_id": room_id,
            "info": info,
        })
        .to_string();
        let started = std::time::Instant::now();
        let answer = async {
            let res = signed(&self.http, url, &self.cfg.secret, body)
                .timeout(self.cfg.authorize_timeout)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if !res.status().is_success() {
                return Err(format!("authorizer answered {}", res.status()));
            }
            res.json::<serde_json::Value>()
                .await
                .map_err(|e| format!("authorizer answer is not JSON: {e}"))
        }
        .await;
        self.metrics
            .webhooks
            .authorize_latency
            .observe(started.elapsed().as_secs_f64());
        Some(match answer {
            Ok(v) if v["allow"] == true => JoinDecision::Allow,
            Ok(v) => JoinDecision::Deny(
                v["reason"]
                    .as_str()
                    .unwrap_or("join refused by the application")
                    .to_owned(),
            ),
            Err(e) if self.cfg.authorize_fail_open => {
                tracing::warn!(error = %e, room_id, "join authorizer unavailable; allowed (authorize_fail_open)");
                JoinDecision::Allow
            }
            Err(e) => {
                tracing::warn!(error = %e, room_id, "join authorizer unavailable; join refused");
                JoinDecision::Unavailable(e)
            }
        })
    }
}

/// A POST of `body` with its signature header.
fn signed(
    http: &reqwest::Client,
    url: &str,
    secret: &str,
    body: String,
) -> reqwest::RequestBuilder {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    http.post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, signature(secret, t, body.as_bytes()))
        .body(body)
}

/// `t=<t>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn signature(secret: &str, t: u64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("t={t},v1={hex}")
}

/// The batching sender task.
struct Sender {
    cfg: WebhooksConfig,
    http: reqwest::Client,
    node_id: String,
    metrics: Arc<Metrics>,
}

impl Sender {
    async fn run(self, mut rx: mpsc::Receiver<Event>, shutdown: CancellationToken) {
        let batch_size = self.cfg.batch_size.max(1);
        let mut batch = Vec::with_capacity(batch_size);
        loop {
            // Wait for the first event, then give the batch `flush_interval` to fill.
            let first = tokio::select! {
                e = rx.recv() => e,
                _ = shutdown.cancelled() => None,
            };
            let Some(first) = first else {
                break;
            };
            batch.push(first);
            let deadline = tokio::time::Instant::now() + self.cfg.flush_interval;
            while batch.len() < batch_size {
                tokio::select! {
                    e = rx.recv() => match e {
                        Some(e) => batch.push(e),
                        None => break,
                    },
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
            self.deliver(&batch, &shutdown).await;
            batch.clear();
        }
        // Shutting down: one attempt for whatever is still queued.
        while let Ok(e) = rx.try_recv() {
            batch.push(e);
        }
        if !batch.is_empty() {
            let _ = self.post(&batch).await;
        }
    }

    /// Posts a batch, retrying with exponential backoff; drops it after `max_retries`.
    async fn deliver(&self, batch: &[Event], shutdown: &CancellationToken) {
        let mut backoff = self.cfg.retry_backoff;
        for attempt in 0..=self.cfg.max_retries {
            match self.post(batch).await {
                Ok(()) => {
                    self.metrics.webhooks.sent.inc_by(batch.len() as u64);
                    return;
                }
                Err(e) => {
                    self.metrics.webhooks.request_errors.inc();
                    tracing::warn!(error = %e, attempt, events = batch.len(), "webhook delivery failed");
                }
            }
            if attempt == self.cfg.max_retries {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.cancelled() => break,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        self.metrics.webhooks.failed.inc_by(batch.len() as u64);
        tracing::error!(events = batch.len(), "webhook batch dropped after retries");
    }

    async fn post(&self, batch: &[Event]) -> Result<(), String> {
        let body = serde_json::to_string(&Batch {
            node_id: &self.node_id,
            events: batch,
        })
        .map_err(|e| e.to_string())?;
        let res = signed(&self.http, &self.cfg.url, &self.cfg.secret, body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if res.status().is_success() {
            Ok(())
        } else {
            Err(format!("backend answered {}", res.status()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_time_and_body() {
        // Computed independently: printf '1700000000.{}' | openssl dgst -sha256 -hmac s3cret
        assert_eq!(
            signature("s3cret", 1_700_000_000, b"{}"),
            "t=1700000000,v1=97926816e98fbb41ccb1673225ff29a2f35369099990e1b1561651e7bd097ebf"
        );
    }
}

//! The node's Prometheus metrics: `wshub_*` (labelled) and GoHub's `gohub_*` names.
//!
//! Each node has its own [`Registry`] (an in-process cluster of nodes must not share counts).
//! Everything on the hot path is a pre-resolved counter: label values are looked up once at
//! start (message types, error codes, close reasons are closed sets), so counting is one
//! relaxed atomic add. Fan-outs are counted once per fan-out with the number of recipients,
//! never once per recipient.
//!
//! GoHub's metric names are not a second set of counters: [`GohubAliases`] is a collector
//! that reads the `wshub_*` values at scrape time and exposes them under GoHub's names, so
//! the two can never disagree and the hot path pays once.
//!
//! Gauges that describe state (rooms, members, queue depths, bus state) are set when scraped
//! or by the node's sweeper, not maintained on every change.

use std::collections::HashMap;
use std::time::Duration;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};
use wshub_protocol::{ErrorCode, MessageType, close};

/// Label value for message types that are not built in (SDK custom handlers, unknown types).
const OTHER: &str = "other";
/// Label value for inbound messages that could not be decoded.
const INVALID: &str = "invalid";

/// Why connections closed, as the `reason` label of `wshub_connections_closed_total`.
const CLOSE_REASONS: &[&str] = &[
    "normal",
    "kicked",
    "shutdown",
    "protocol_error",
    "invalid_payload",
    "slow_consumer",
    "policy",
    "too_big",
    "unauthorized",
    "read_timeout",
    "replaced",
    "other",
];

/// Where a token came from, as the `source` label of `wshub_auth_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthSource {
    /// `?token=` in the upgrade URL.
    Query,
    /// `Authorization: Bearer`.
    Header,
    /// `Sec-WebSocket-Protocol: wshub.bearer, <jwt>`.
    Subprotocol,
    /// The first message was `authenticate`.
    InBand,
    /// `authenticate` on an open connection (refresh or late login).
    Refresh,
}

impl AuthSource {
    const ALL: [AuthSource; 5] = [
        AuthSource::Query,
        AuthSource::Header,
        AuthSource::Subprotocol,
        AuthSource::InBand,
        AuthSource::Refresh,
    ];

    fn as_str(self) -> &'static str {
        match self {
            AuthSource::Query => "query",
            AuthSource::Header => "header",
            AuthSource::Subprotocol => "subprotocol",
            AuthSource::InBand => "in_band",
            AuthSource::Refresh => "refresh",
        }
    }
}

/// History store operations, as the `op` label of `wshub_history_latency_seconds`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum HistoryOp {
    Append,
    Read,
}

pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) connections: IntGauge,
    pub(crate) connections_opened: IntCounter,
    connections_closed: Vec<IntCounter>,
    /// Indexed by [`type_slot`]; the last two are `other` and `invalid`.
    messages_in: Vec<IntCounter>,
    messages_out: Vec<IntCounter>,
    pub(crate) bytes_in: IntCounter,
    pub(crate) bytes_out: IntCounter,
    message_size: Histogram,
    fanout_recipients: Histogram,
    delivery_latency: Histogram,
    pub(crate) queue_frames: IntGauge,
    pub(crate) queue_max: IntGauge,
    slow_consumers: IntCounter,
    pub(crate) dropped_frames: IntCounter,
    /// Indexed like `ErrorCode::ALL`.
    errors: Vec<IntCounter>,
    /// `[source][success, failure]`.
    auth: Vec<[IntCounter; 2]>,
    room_joins: IntCounter,
    room_leaves: IntCounter,
    pub(crate) rooms: IntGauge,
    pub(crate) room_members: IntGauge,
    history_latency: [Histogram; 2],
    history_errors: IntCounter,
    pub(crate) history_redelivered: IntCounter,
    pub(crate) bus: BusMetrics,
    pub(crate) webhooks: WebhookMetrics,
    /// Indexed like `Limit::ALL`.
    rate_limited: Vec<IntCounter>,
    pub(crate) config_reloads: IntCounter,
    pub(crate) config_reload_failures: IntCounter,
    pub(crate) dead_node_cleanups: IntCounter,
}

/// `wshub_bus_*`: what crossed the bus, and its state.
pub(crate) struct BusMetrics {
    pub(crate) published: IntCounter,
    pub(crate) publish_errors: IntCounter,
    pub(crate) received: IntCounter,
    pub(crate) duplicates: IntCounter,
    pub(crate) echoes: IntCounter,
    pub(crate) malformed: IntCounter,
    pub(crate) reconnects: IntCounter,
    pub(crate) up: IntGauge,
    pub(crate) subscriptions: IntGauge,
}

/// `wshub_webhook_*`.
pub(crate) struct WebhookMetrics {
    pub(crate) sent: IntCounter,
    pub(crate) failed: IntCounter,
    pub(crate) dropped: IntCounter,
    pub(crate) request_errors: IntCounter,
    pub(crate) authorize_latency: Histogram,
}

/// The `type` label value of slot `i` (see [`type_slot`]).
fn slot_name(i: usize) -> &'static str {
    MessageType::ALL.get(i).map_or(
        if i == MessageType::ALL.len() {
            OTHER
        } else {
            INVALID
        },
        |t| t.as_str(),
    )
}

/// Counter slot of a message type: built-in types by declaration order, then `other`.
fn type_slot(message_type: &str) -> usize {
    MessageType::parse(message_type)
        .and_then(|t| MessageType::ALL.iter().position(|x| *x == t))
        .unwrap_or(MessageType::ALL.len())
}

fn close_reason_label(code: u16, reason: &str) -> &'static str {
    match code {
        close::NORMAL if reason == close::reason::KICKED => "kicked",
        close::NORMAL => "normal",
        close::GOING_AWAY => "shutdown",
        close::PROTOCOL_ERROR => "protocol_error",
        close::INVALID_PAYLOAD => "invalid_payload",
        close::POLICY if reason == close::reason::SLOW_CONSUMER => "slow_consumer",
        close::POLICY => "policy",
        close::TOO_BIG => "too_big",
        close::UNAUTHORIZED => "unauthorized",
        close::IDLE_TIMEOUT => "read_timeout",
        close::REPLACED => "replaced",
        _ => "other",
    }
}

/// Latency buckets in seconds: 50 µs to 5 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];

/// GoHub's message size buckets, in bytes.
const SIZE_BUCKETS: &[f64] = &[64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0];

impl Metrics {
    pub(crate) fn new(node_id: &str) -> Metrics {
        let mut labels = HashMap::new();
        labels.insert("node_id".to_owned(), node_id.to_owned());
        let registry = Registry::new_custom(None, Some(labels)).unwrap_or_default();
        let r = Registrar(&registry);

        let slots = MessageType::ALL.len() + 2;
        let messages_in = r.counter_vec(
            "wshub_messages_in_total",
            "Messages received from clients, by message type (other = not built in, invalid = undecodable).",
            &["type"],
        );
        let messages_out = r.counter_vec(
            "wshub_messages_out_total",
            "Messages queued to clients, by message type (a fan-out to n members counts n).",
            &["type"],
        );
        let closed = r.counter_vec(
            "wshub_connections_closed_total",
            "Connections closed, by reason.",
            &["reason"],
        );
        let errors = r.counter_vec(
            "wshub_errors_total",
            "Error frames sent to clients, by protocol error code.",
            &["code"],
        );
        let auth = r.counter_vec(
            "wshub_auth_total",
            "Token verifications, by where the token came from and the result.",
            &["source", "result"],
        );
        let history = r.histogram_vec(
            "wshub_history_latency_seconds",
            "History store latency, by operation.",
            &["op"],
            LATENCY_BUCKETS,
        );
        let metrics = Metrics {
            connections: r.gauge("wshub_connections", "Open WebSocket connections."),
            connections_opened: r.counter(
                "wshub_connections_opened_total",
                "WebSocket connections accepted (registered clients).",
            ),
            connections_closed: CLOSE_REASONS
                .iter()
                .map(|reason| closed.with_label_values(&[reason]))
                .collect(),
            messages_in: (0..slots)
                .map(|i| messages_in.with_label_values(&[slot_name(i)]))
                .collect(),
            messages_out: (0..slots - 1)
                .map(|i| messages_out.with_label_values(&[slot_name(i)]))
                .collect(),
            bytes_in: r.counter(
                "wshub_bytes_in_total",
                "Payload bytes of data frames received from clients.",
            ),
            bytes_out: r.counter(
                "wshub_bytes_out_total",
                "Bytes written to client sockets (frames with headers).",
            ),
            message_size: r.histogram(
                "wshub_message_in_size_bytes",
                "Size of messages received from clients.",
                SIZE_BUCKETS,
            ),
            fanout_recipients: r.histogram(
                "wshub_fanout_recipients",
                "Local recipients of one room or broadcast fan-out on this node.",
                &[0.0, 1.0, 10.0, 100.0, 1000.0, 10_000.0, 100_000.0],
            ),
            delivery_latency: r.histogram(
                "wshub_delivery_latency_seconds",
                "From the publishing node accepting a publication to its frames being queued \
                 to every local recipient (includes the bus hop for publications from other nodes).",
                LATENCY_BUCKETS,
            ),
            queue_frames: r.gauge(
                "wshub_outbound_queue_frames",
                "Frames waiting in outbound queues, all connections (sampled by the sweeper).",
            ),
            queue_max: r.gauge(
                "wshub_outbound_queue_max_frames",
                "Deepest outbound queue of any connection (sampled by the sweeper).",
            ),
            slow_consumers: r.counter(
                "wshub_slow_consumer_disconnects_total",
                "Connections closed because their outbound queue was full (close 1008).",
            ),
            dropped_frames: r.counter(
                "wshub_dropped_frames_total",
                "Old frames dropped from full queues (slow_consumer_policy: drop_oldest).",
            ),
            errors: ErrorCode::ALL
                .iter()
                .map(|c| errors.with_label_values(&[&c.as_u16().to_string()]))
                .collect(),
            auth: AuthSource::ALL
                .iter()
                .map(|s| {
                    [
                        auth.with_label_values(&[s.as_str(), "success"]),
                        auth.with_label_values(&[s.as_str(), "failure"]),
                    ]
                })
                .collect(),
            room_joins: r.counter("wshub_room_joins_total", "Room joins on this node."),
            room_leaves: r.counter(
                "wshub_room_leaves_total",
                "Room leaves on this node (including disconnects and kicks).",
            ),
            rooms: r.gauge("wshub_rooms", "Rooms with members on this node."),
            room_members: r.gauge(
                "wshub_room_members",
                "Room memberships of this node's connections.",
            ),
            history_latency: [
                history.with_label_values(&["append"]),
                history.with_label_values(&["read"]),
            ],
            history_errors: r.counter(
                "wshub_history_errors_total",
                "History store operations that failed.",
            ),
            history_redelivered: r.counter(
                "wshub_history_redelivered_total",
                "Publications this node delivered from the history because they never arrived live (rooms.history.position_check).",
            ),
            bus: BusMetrics {
                published: r.counter("wshub_bus_published_total", "Messages published to the bus."),
                publish_errors: r.counter(
                    "wshub_bus_publish_errors_total",
                    "Bus publishes that failed or timed out.",
                ),
                received: r.counter("wshub_bus_received_total", "Messages received from the bus."),
                duplicates: r.counter(
                    "wshub_bus_duplicates_dropped_total",
                    "Bus messages dropped as duplicates.",
                ),
                echoes: r.counter(
                    "wshub_bus_echoes_dropped_total",
                    "This node's own publications dropped on return.",
                ),
                malformed: r.counter(
                    "wshub_bus_malformed_total",
                    "Undecodable bus messages dropped.",
                ),
                reconnects: r.counter(
                    "wshub_bus_reconnects_total",
                    "Times the bus connection came back after being lost.",
                ),
                up: r.gauge(
                    "wshub_bus_up",
                    "1 while the cluster bus is connected (or there is none), 0 while degraded.",
                ),
                subscriptions: r.gauge(
                    "wshub_bus_subscriptions",
                    "Bus subjects this node is subscribed to.",
                ),
            },
            webhooks: WebhookMetrics {
                sent: r.counter(
                    "wshub_webhook_events_sent_total",
                    "Webhook events delivered to the backend.",
                ),
                failed: r.counter(
                    "wshub_webhook_events_failed_total",
                    "Webhook events dropped after every retry failed.",
                ),
                dropped: r.counter(
                    "wshub_webhook_events_dropped_total",
                    "Webhook events dropped because the queue was full.",
                ),
                request_errors: r.counter(
                    "wshub_webhook_request_errors_total",
                    "Webhook POSTs that failed (each retry counts).",
                ),
                authorize_latency: r.histogram(
                    "wshub_webhook_authorize_seconds",
                    "Time join authorization took.",
                    LATENCY_BUCKETS,
                ),
            },
            rate_limited: {
                let v = r.counter_vec(
                    "wshub_rate_limited_total",
                    "Connections and messages refused by a limit (limits.*), by limit.",
                    &["limit"],
                );
                crate::limits::Limit::ALL
                    .iter()
                    .map(|l| v.with_label_values(&[l.as_str()]))
                    .collect()
            },
            config_reloads: r.counter(
                "wshub_config_reloads_total",
                "Configuration reloads applied.",
            ),
            config_reload_failures: r.counter(
                "wshub_config_reload_failures_total",
                "Configuration reloads rejected (the running configuration stayed).",
            ),
            dead_node_cleanups: r.counter(
                "wshub_dead_node_cleanups_total",
                "Dead nodes whose clients and memberships this node removed.",
            ),
            registry: registry.clone(),
        };
        metrics.bus.up.set(1);
        #[cfg(target_os = "linux")]
        let _ = registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));
        let _ = registry.register(Box::new(GohubAliases::new(&metrics)));
        metrics
    }

    /// A message received from a client (`message_type` as sent; `None` if undecodable).
    pub(crate) fn received(&self, message_type: Option<&str>, size: usize) {
        let slot = message_type.map_or(self.messages_in.len() - 1, type_slot);
        self.messages_in[slot].inc();
        self.bytes_in.inc_by(size as u64);
        self.message_size.observe(size as f64);
    }

    /// `count` copies of `frame` queued (a reply: 1; a fan-out: its recipients).
    pub(crate) fn sent(&self, frame: &[u8], count: usize) {
        if count == 0 {
            return;
        }
        let slot =
            crate::wire::frame_message_type(frame).map_or(self.messages_out.len() - 1, type_slot);
        self.messages_out[slot].inc_by(count as u64);
    }

    /// One room or broadcast fan-out on this node: its size, and how long since the
    /// publication was accepted.
    pub(crate) fn fanned_out(&self, recipients: usize, since_accepted: Option<Duration>) {
        self.fanout_recipients.observe(recipients as f64);
        if let Some(latency) = since_accepted {
            self.delivery_latency.observe(latency.as_secs_f64());
        }
    }

    pub(crate) fn closed(&self, code: u16, reason: &str) {
        let label = close_reason_label(code, reason);
        if label == "slow_consumer" {
            self.slow_consumers.inc();
        }
        if let Some(i) = CLOSE_REASONS.iter().position(|r| *r == label) {
            self.connections_closed[i].inc();
        }
    }

    pub(crate) fn limited(&self, limit: crate::limits::Limit) {
        if let Some(i) = crate::limits::Limit::ALL.iter().position(|l| *l == limit) {
            self.rate_limited[i].inc();
        }
    }

    pub(crate) fn error(&self, code: ErrorCode) {
        if let Some(i) = ErrorCode::ALL.iter().position(|c| *c == code) {
            self.errors[i].inc();
        }
    }

    pub(crate) fn auth(&self, source: AuthSource, ok: bool) {
        if let Some(i) = AuthSource::ALL.iter().position(|s| *s == source) {
            self.auth[i][usize::from(!ok)].inc();
        }
    }

    pub(crate) fn joined(&self) {
        self.room_joins.inc();
    }

    pub(crate) fn left(&self, rooms: usize) {
        self.room_leaves.inc_by(rooms as u64);
    }

    pub(crate) fn history(&self, op: HistoryOp, took: Duration, ok: bool) {
        self.history_latency[op as usize].observe(took.as_secs_f64());
        if !ok {
            self.history_errors.inc();
        }
    }

    /// The Prometheus text exposition of everything.
    pub(crate) fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Registers metrics, logging (not failing) on a duplicate name: metrics must never take a
/// node down.
struct Registrar<'a>(&'a Registry);

impl Registrar<'_> {
    fn register<C: Collector + Clone + 'static>(&self, c: C) -> C {
        if let Err(e) = self.0.register(Box::new(c.clone())) {
            tracing::error!(error = %e, "metric registration failed");
        }
        c
    }

    fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.register(IntCounter::with_opts(Opts::new(name, help)).expect("valid metric name"))
    }

    fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.register(IntGauge::with_opts(Opts::new(name, help)).expect("valid metric name"))
    }

    fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.register(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric name"))
    }

    fn histogram(&self, name: &str, help: &str, buckets: &[f64]) -> Histogram {
        self.register(
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
                .expect("valid metric name"),
        )
    }

    fn histogram_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        buckets: &[f64],
    ) -> HistogramVec {
        self.register(
            HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                labels,
            )
            .expect("valid metric name"),
        )
    }
}

/// How a GoHub metric is computed from ours.
enum Source {
    Counters(Vec<IntCounter>),
    Gauge(IntGauge),
    Histogram(Histogram, f64),
}

/// GoHub's metric names (its `internal/metrics` and the names its docs promise), read from
/// the `wshub_*` metrics at scrape time.
struct GohubAliases {
    descs: Vec<Desc>,
    sources: Vec<(MetricType, Source)>,
}

impl GohubAliases {
    fn new(m: &Metrics) -> Self {
        let all = |v: &[IntCounter]| Source::Counters(v.to_vec());
        let one = |c: &IntCounter| Source::Counters(vec![c.clone()]);
        let room_message = m.messages_out[type_slot(MessageType::RoomMessage.as_str())].clone();
        let auth_ok: Vec<IntCounter> = m.auth.iter().map(|a| a[0].clone()).collect();
        let auth_failed: Vec<IntCounter> = m.auth.iter().map(|a| a[1].clone()).collect();
        let server_errors = m.errors[ErrorCode::ALL
            .iter()
            .position(|c| *c == ErrorCode::ServerError)
            .unwrap_or(0)]
        .clone();
        use MetricType::{COUNTER, GAUGE, HISTOGRAM};
        let table: Vec<(&str, &str, MetricType, Source)> = vec![
            (
                "gohub_connections_total",
                "Connections accepted.",
                COUNTER,
                one(&m.connections_opened),
            ),
            (
                "gohub_connection_rate",
                "Connections accepted (GoHub's name).",
                COUNTER,
                one(&m.connections_opened),
            ),
            (
                "gohub_disconnection_rate",
                "Connections closed.",
                COUNTER,
                all(&m.connections_closed),
            ),
            (
                "gohub_active_connections",
                "Open connections.",
                GAUGE,
                Source::Gauge(m.connections.clone()),
            ),
            (
                "gohub_connected_clients",
                "Open connections (GoHub's name).",
                GAUGE,
                Source::Gauge(m.connections.clone()),
            ),
            (
                "gohub_messages_total",
                "Messages received from clients.",
                COUNTER,
                all(&m.messages_in),
            ),
            (
                "gohub_messages_received_total",
                "Messages received from clients.",
                COUNTER,
                all(&m.messages_in),
            ),
            (
                "gohub_messages_sent_total",
                "Messages queued to clients.",
                COUNTER,
                all(&m.messages_out),
            ),
            (
                "gohub_message_rate_in",
                "Messages received from clients (GoHub's name).",
                COUNTER,
                all(&m.messages_in),
            ),
            (
                "gohub_message_rate_out",
                "Messages queued to clients (GoHub's name).",
                COUNTER,
                all(&m.messages_out),
            ),
            (
                "gohub_message_size",
                "Size of messages received, bytes.",
                HISTOGRAM,
                Source::Histogram(m.message_size.clone(), 1.0),
            ),
            (
                "gohub_message_latency",
                "Delivery latency in milliseconds.",
                HISTOGRAM,
                Source::Histogram(m.delivery_latency.clone(), 1000.0),
            ),
            (
                "gohub_rooms_total",
                "Rooms with members on this node.",
                GAUGE,
                Source::Gauge(m.rooms.clone()),
            ),
            (
                "gohub_active_rooms",
                "Rooms with members on this node (GoHub's name).",
                GAUGE,
                Source::Gauge(m.rooms.clone()),
            ),
            (
                "gohub_room_joins",
                "Room joins.",
                COUNTER,
                one(&m.room_joins),
            ),
            (
                "gohub_room_leaves",
                "Room leaves.",
                COUNTER,
                one(&m.room_leaves),
            ),
            (
                "gohub_room_messages",
                "Room messages queued to members.",
                COUNTER,
                Source::Counters(vec![room_message]),
            ),
            (
                "gohub_errors_total",
                "Error frames sent.",
                COUNTER,
                all(&m.errors),
            ),
            (
                "gohub_critical_errors_total",
                "Server-side errors (code 1003).",
                COUNTER,
                Source::Counters(vec![server_errors]),
            ),
            (
                "gohub_auth_success",
                "Successful token verifications.",
                COUNTER,
                Source::Counters(auth_ok),
            ),
            (
                "gohub_auth_failure",
                "Failed token verifications.",
                COUNTER,
                Source::Counters(auth_failed),
            ),
        ];
        let mut descs = Vec::new();
        let mut sources = Vec::new();
        for (name, help, kind, source) in table {
            if let Ok(d) = Desc::new(name.to_owned(), help.to_owned(), vec![], HashMap::new()) {
                descs.push(d);
                sources.push((kind, source));
            }
        }
        GohubAliases { descs, sources }
    }
}

impl Collector for GohubAliases {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.descs
            .iter()
            .zip(&self.sources)
            .map(|(desc, (kind, source))| {
                let mut metric = proto::Metric::default();
                match source {
                    Source::Counters(cs) => {
                        let mut c = proto::Counter::default();
                        c.set_value(cs.iter().map(IntCounter::get).sum::<u64>() as f64);
                        metric.set_counter(c);
                    }
                    Source::Gauge(g) => {
                        let mut v = proto::Gauge::default();
                        v.set_value(g.get() as f64);
                        metric.set_gauge(v);
                    }
                    Source::Histogram(h, scale) => {
                        let mut hist = h
                            .collect()
                            .first()
                            .and_then(|f| f.get_metric().first())
                            .map(|m| (**m.get_histogram()).clone())
                            .unwrap_or_default();
                        hist.sample_sum = Some(hist.get_sample_sum() * scale);
                        let buckets = hist
                            .get_bucket()
                            .iter()
                            .map(|b| {
                                let mut b = b.clone();
                                b.set_upper_bound(b.upper_bound() * scale);
                                b
                            })
                            .collect();
                        hist.set_bucket(buckets);
                        metric.set_histogram(hist);
                    }
                }
                let mut family = MetricFamily::default();
                family.set_name(desc.fq_name.clone());
                family.set_help(desc.help.clone());
                family.set_field_type(*kind);
                family.set_metric(vec![metric]);
                family
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gohub_names_follow_the_wshub_counters() {
        let m = Metrics::new("n1");
        m.connections_opened.inc_by(3);
        m.received(Some("room_message"), 100);
        m.received(Some("my_custom"), 10);
        m.received(None, 5);
        m.auth(AuthSource::Query, true);
        m.auth(AuthSource::InBand, false);
        m.closed(close::POLICY, close::reason::SLOW_CONSUMER);
        m.fanned_out(5, Some(Duration::from_millis(2)));
        let text = m.render();
        for line in [
            "gohub_connections_total{node_id=\"n1\"} 3",
            "gohub_messages_total{node_id=\"n1\"} 3",
            "wshub_messages_in_total{type=\"room_message\",node_id=\"n1\"} 1",
            "wshub_messages_in_total{type=\"other\",node_id=\"n1\"} 1",
            "wshub_messages_in_total{type=\"invalid\",node_id=\"n1\"} 1",
            "gohub_auth_success{node_id=\"n1\"} 1",
            "gohub_auth_failure{node_id=\"n1\"} 1",
            "wshub_slow_consumer_disconnects_total{node_id=\"n1\"} 1",
            "wshub_connections_closed_total{reason=\"slow_consumer\",node_id=\"n1\"} 1",
            "gohub_message_latency_bucket{node_id=\"n1\",le=\"2.5\"} 1",
            "gohub_message_latency_bucket{node_id=\"n1\",le=\"1\"} 0",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}

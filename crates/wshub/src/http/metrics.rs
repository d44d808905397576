//! `GET /metrics`: Prometheus text exposition. A handful of gauges and counters for now; the
//! observability work replaces this with the full GoHub-compatible metric set.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::response::IntoResponse;

use crate::node::Node;

pub(super) async fn metrics(State(node): State<Arc<Node>>) -> impl IntoResponse {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    metric(
        "wshub_connections",
        "gauge",
        "Open WebSocket connections on this node.",
        node.hub.client_count() as u64,
    );
    metric(
        "wshub_rooms",
        "gauge",
        "Rooms on this node.",
        node.hub.list_rooms().len() as u64,
    );
    metric(
        "wshub_config_reloads_total",
        "counter",
        "Configuration reloads applied.",
        node.reloads.load(Ordering::Relaxed),
    );
    metric(
        "wshub_config_reload_failures_total",
        "counter",
        "Configuration reloads rejected (the running configuration stayed).",
        node.reload_failures.load(Ordering::Relaxed),
    );
    if let Some(link) = node.cluster.get() {
        let stats = &link.stats;
        let up = node
            .bus_status()
            .is_some_and(|(_, s)| s == crate::bus::BusState::Connected);
        metric(
            "wshub_bus_up",
            "gauge",
            "1 while the cluster bus is connected, 0 while degraded.",
            u64::from(up),
        );
        metric(
            "wshub_bus_subscriptions",
            "gauge",
            "Bus subjects this node is subscribed to.",
            node.bus_subscriptions().len() as u64,
        );
        for (name, help, counter) in [
            (
                "wshub_bus_published_total",
                "Messages published to the bus.",
                &stats.published,
            ),
            (
                "wshub_bus_publish_errors_total",
                "Bus publishes that failed or timed out.",
                &stats.publish_errors,
            ),
            (
                "wshub_bus_received_total",
                "Messages received from the bus.",
                &stats.received,
            ),
            (
                "wshub_bus_duplicates_dropped_total",
                "Bus messages dropped as duplicates.",
                &stats.duplicates,
            ),
            (
                "wshub_bus_echoes_dropped_total",
                "This node's own publications dropped on return.",
                &stats.echoes,
            ),
            (
                "wshub_bus_malformed_total",
                "Undecodable bus messages dropped.",
                &stats.malformed,
            ),
        ] {
            metric(name, "counter", help, counter.load(Ordering::Relaxed));
        }
    }
    (
        [(
            http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
}

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
    (
        [(
            http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
}

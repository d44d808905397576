//! `GET /metrics`: the node's Prometheus text exposition (see `crate::metrics`).

use std::sync::Arc;

use axum::extract::State;
use axum::response::IntoResponse;

use crate::node::Node;

pub(super) async fn metrics(State(node): State<Arc<Node>>) -> impl IntoResponse {
    let m = &node.hub.metrics;
    // State gauges are read now rather than maintained on every change.
    let (rooms, members) = node.hub.room_and_member_counts();
    m.rooms.set(rooms as i64);
    m.room_members.set(members as i64);
    if let Some((_, state)) = node.bus_status() {
        m.bus
            .up
            .set(i64::from(state == crate::bus::BusState::Connected));
    }
    m.bus
        .subscriptions
        .set(node.bus_subscriptions().len() as i64);
    (
        [(
            http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        m.render(),
    )
}

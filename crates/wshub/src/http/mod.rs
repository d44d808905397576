//! The HTTP side: one listener serves `/ws` (the WebSocket upgrade), `/health` and, later,
//! the admin API, through one axum router.
//!
//! We accept connections ourselves instead of `axum::serve`: a WebSocket upgrade is read
//! and answered directly ([`handshake`]), and only other requests go through hyper, which
//! then serves a [`Prefixed`] stream (the bytes already read, then the socket).

mod api;
mod handshake;
mod metrics;
mod prefixed;
mod upgrade;

use prefixed::Prefixed;

pub use api::ApiDoc;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use serde::Serialize;
use tokio::net::TcpListener;

use crate::node::Node;

/// The remote address of the HTTP connection a request came on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RemoteAddr(pub(crate) SocketAddr);

pub(crate) fn router(node: Arc<Node>) -> Router {
    let config = node.config();
    let max_body = config.admin.max_body_size;
    let router = Router::new()
        .route("/ws", get(upgrade::ws_handler))
        .route("/health", get(health))
        .route("/health/ready", get(ready))
        .nest("/api", api::routes(node.clone()))
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .with_state(node.clone());
    // `/metrics` here unless `metrics.listen` gives it its own (private) address.
    let router = if config.metrics.listen.is_empty() {
        router.route("/metrics", get(metrics::metrics).with_state(node))
    } else {
        router
    };
    if config.server.static_dir.is_empty() {
        router
    } else {
        // Files for whatever no route above takes (`/` -> index.html).
        router.fallback_service(tower_http::services::ServeDir::new(
            &config.server.static_dir,
        ))
    }
}

/// Serves `/metrics` (and `/health`) alone on `addr` until the node shuts down; returns the
/// bound address.
pub(crate) async fn serve_metrics(node: Arc<Node>, addr: &str) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics::metrics))
        .route("/health", get(health))
        .with_state(node.clone());
    let shutdown = node.shutdown.clone();
    node.tasks.spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "metrics listener failed");
        }
    });
    tracing::info!(addr = %bound, "metrics listening");
    Ok(bound)
}

/// Accepts until the node shuts down. Each TCP connection gets a task of its own, which reads
/// the request head ([`handshake`]) and goes on as a WebSocket connection or as HTTP.
pub(crate) async fn accept_loop(node: Arc<Node>, listener: TcpListener) {
    let router = router(node.clone());
    loop {
        let (tcp, remote) = tokio::select! {
            _ = node.shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let opening = handshake::open(node.clone(), router.clone(), tcp, remote);
        node.tasks
            .spawn(crate::conn::serve(node.clone(), remote, opening));
    }
    tracing::info!("listener stopped accepting");
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    time: String,
    version: &'static str,
    node_id: String,
    bus: BusHealth,
    uptime_seconds: u64,
    clients: usize,
}

#[derive(Serialize)]
struct BusHealth {
    /// `local` (also a single node without a cluster), `nats`, `nats+jetstream`, `redis`.
    #[serde(rename = "type")]
    kind: &'static str,
    /// `connected` or `degraded` (broker unreachable: local traffic only).
    state: &'static str,
}

#[derive(Serialize)]
struct Readiness {
    ready: bool,
    /// Shutting down: stop sending new connections here.
    draining: bool,
    /// `connected` or `degraded`.
    bus: &'static str,
    /// Why the node is not ready although connected (a NATS server without JetStream).
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<&'static str>,
}

/// Readiness for load balancers and Kubernetes: 200 while this node should get new
/// connections (bus connected, or no bus; not draining), 503 otherwise. A degraded node still
/// serves the connections it has (that is `/health`, liveness).
async fn ready(State(node): State<Arc<Node>>) -> impl IntoResponse {
    let draining = node.draining.is_cancelled() || node.shutdown.is_cancelled();
    let bus = node
        .bus_status()
        .map_or(crate::bus::BusState::Connected, |(_, s)| s);
    let problem = node.cluster_problem();
    let ready = !draining && bus == crate::bus::BusState::Connected && problem.is_none();
    let code = if ready {
        http::StatusCode::OK
    } else {
        http::StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(Readiness {
            ready,
            draining,
            bus: bus.as_str(),
            problem,
        }),
    )
}

/// Liveness plus a summary: 200 while serving (`status` is `degraded` when the bus is down,
/// since local traffic still flows), 503 once draining.
async fn health(State(node): State<Arc<Node>>) -> impl IntoResponse {
    let draining = node.draining.is_cancelled() || node.shutdown.is_cancelled();
    let (kind, bus_state) = node
        .bus_status()
        .map_or(("local", crate::bus::BusState::Connected), |(k, s)| (k, s));
    let status = if draining {
        "draining"
    } else if bus_state == crate::bus::BusState::Degraded {
        "degraded"
    } else {
        "ok"
    };
    let body = Health {
        status,
        time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        version: env!("CARGO_PKG_VERSION"),
        node_id: node.hub.node_id().to_string(),
        bus: BusHealth {
            kind,
            state: bus_state.as_str(),
        },
        uptime_seconds: node.started.elapsed().as_secs(),
        clients: node.hub.client_count(),
    };
    let code = if draining {
        http::StatusCode::SERVICE_UNAVAILABLE
    } else {
        http::StatusCode::OK
    };
    (code, Json(body))
}

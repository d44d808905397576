//! The HTTP side: one listener serves `/ws` (the WebSocket upgrade), `/health` and, later,
//! the admin API, through one axum router.
//!
//! We run hyper's HTTP/1 connection ourselves instead of `axum::serve` so that the upgraded
//! connection can be downcast back to the plain `TcpStream` (no wrapper in between): the
//! socket is then split into owned halves with no lock, and the upgrade costs no buffers
//! beyond what `conn` allocates itself.

mod api;
mod metrics;
mod upgrade;

pub use api::ApiDoc;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpListener;
use tower::ServiceExt;

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

/// Accepts until the node shuts down. Each TCP connection gets its own hyper HTTP/1 task.
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
        let handshake_timeout = node.config().limits.handshake_timeout;
        let router = router.clone();
        let shutdown = node.shutdown.clone();
        node.tasks.spawn(async move {
            let service = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(RemoteAddr(remote));
                    router.clone().oneshot(req)
                },
            );
            let conn = hyper::server::conn::http1::Builder::new()
                // A client that opens a socket and never finishes its request is dropped.
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(handshake_timeout)
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, %remote, "http connection error");
                    }
                }
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
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

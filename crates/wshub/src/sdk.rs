//! The embedding API: build a server, register handlers for your own message types, hook
//! into connection events, and push messages to clients, rooms or everyone.
//!
//! ```no_run
//! use wshub::{Config, HandlerError, Reply, Server};
//!
//! # async fn run() -> std::io::Result<()> {
//! let server = Server::builder()
//!     .config(Config::default())
//!     .handler("echo", |client, data| async move {
//!         tracing::info!(client = %client.id(), "echo");
//!         Ok(Some(Reply::new("echo_reply", &data)?))
//!     })
//!     .on_connect(|client| tracing::info!(client = %client.id(), "hello"))
//!     .build()
//!     .expect("valid handler names");
//! let running = server.bind().await?;
//! running.wait().await;
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::value::RawValue;
use tokio::net::TcpListener;
use wshub_protocol::MessageType;
use wshub_protocol::messages::RoomInfo;

use crate::config::Config;
use crate::conn::{ConnHandle, SendOutcome};
use crate::dispatch::HandlerResult;
use crate::hub::{Delivery, Hub, HubError};
use crate::ids::{NodeId, RoomId};
use crate::node::{Node, ReloadReport};

pub(crate) type CustomHandler = Arc<
    dyn Fn(Client, serde_json::Value) -> Pin<Box<dyn Future<Output = HandlerResult> + Send>>
        + Send
        + Sync,
>;

type ClientHook = Arc<dyn Fn(&Client) + Send + Sync>;
type RoomHook = Arc<dyn Fn(&Client, &str) + Send + Sync>;
type DisconnectHook = Arc<dyn Fn(&Client, u16, &str) + Send + Sync>;
type MessageHook = Arc<dyn Fn(&Client, &str, Option<&RawValue>) + Send + Sync>;

/// Event hooks. They run inline on the connection's task: keep them short, and spawn for
/// anything slow.
#[derive(Default)]
pub(crate) struct Hooks {
    on_connect: Vec<ClientHook>,
    on_disconnect: Vec<DisconnectHook>,
    on_join: Vec<RoomHook>,
    on_leave: Vec<RoomHook>,
    on_message: Vec<MessageHook>,
}

impl Hooks {
    pub(crate) fn connect(&self, c: &Client) {
        self.on_connect.iter().for_each(|h| h(c));
    }
    pub(crate) fn disconnect(&self, c: &Client, code: u16, reason: &str) {
        self.on_disconnect.iter().for_each(|h| h(c, code, reason));
    }
    pub(crate) fn join(&self, c: &Client, room: &str) {
        self.on_join.iter().for_each(|h| h(c, room));
    }
    pub(crate) fn leave(&self, c: &Client, room: &str) {
        self.on_leave.iter().for_each(|h| h(c, room));
    }
    pub(crate) fn message(&self, c: &Client, message_type: &str, data: Option<&RawValue>) {
        self.on_message
            .iter()
            .for_each(|h| h(c, message_type, data));
    }
}

/// Why [`ServerBuilder::build`] refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BuildError {
    #[error("message type {0:?} is built in and cannot be replaced by a custom handler")]
    BuiltinType(String),
    #[error("message type must not be empty")]
    EmptyType,
    #[error("{0}")]
    Auth(String),
}

/// Why sending to a client from the SDK failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("client not found")]
    ClientNotFound,
    #[error("room not found")]
    RoomNotFound,
    #[error("the client's outbound queue is full; it is being disconnected")]
    SlowConsumer,
    #[error("delivered on this node only: {0}")]
    Bus(crate::bus::BusError),
    /// The cluster state or the room's history could not be reached: nothing was sent.
    #[error("not sent: {0}")]
    Unavailable(String),
    #[error("encoding the message failed: {0}")]
    Encode(#[from] serde_json::Error),
}

impl From<crate::fanout::PublishError> for SendError {
    fn from(e: crate::fanout::PublishError) -> Self {
        match e {
            crate::fanout::PublishError::Hub(HubError::RoomNotFound) => SendError::RoomNotFound,
            crate::fanout::PublishError::Hub(_) => SendError::ClientNotFound,
            crate::fanout::PublishError::Bus(b) => SendError::Bus(b),
            crate::fanout::PublishError::History(e) => SendError::Unavailable(e.to_string()),
            crate::fanout::PublishError::Store(e) => SendError::Unavailable(e.to_string()),
            crate::fanout::PublishError::Encode(e) => {
                SendError::Unavailable(format!("encoding failed: {e}"))
            }
        }
    }
}

/// Builds a [`Server`].
#[derive(Default)]
pub struct ServerBuilder {
    config: Config,
    handlers: HashMap<String, CustomHandler>,
    hooks: Hooks,
    errors: Vec<BuildError>,
    log_level_reloader: Option<crate::node::LogLevelReloader>,
    local_broker: Option<Arc<crate::bus::LocalBroker>>,
}

impl ServerBuilder {
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Handles `message_type` with `handler(client, data)`. Returning `Ok(Some(reply))` sends
    /// the reply to the client with the request's correlation id; `Err(e)` sends an `error`
    /// frame with `e`'s code.
    pub fn handler<F, Fut>(mut self, message_type: &str, handler: F) -> Self
    where
        F: Fn(Client, serde_json::Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult> + Send + 'static,
    {
        if message_type.is_empty() {
            self.errors.push(BuildError::EmptyType);
        } else if MessageType::parse(message_type).is_some() {
            self.errors
                .push(BuildError::BuiltinType(message_type.to_owned()));
        } else {
            let handler: CustomHandler = Arc::new(move |c, d| Box::pin(handler(c, d)));
            self.handlers.insert(message_type.to_owned(), handler);
        }
        self
    }

    pub fn on_connect(mut self, f: impl Fn(&Client) + Send + Sync + 'static) -> Self {
        self.hooks.on_connect.push(Arc::new(f));
        self
    }

    /// `f(client, close_code, reason)` once the client is gone from every room.
    pub fn on_disconnect(mut self, f: impl Fn(&Client, u16, &str) + Send + Sync + 'static) -> Self {
        self.hooks.on_disconnect.push(Arc::new(f));
        self
    }

    pub fn on_join(mut self, f: impl Fn(&Client, &str) + Send + Sync + 'static) -> Self {
        self.hooks.on_join.push(Arc::new(f));
        self
    }

    /// Also called for each room a client was in when it disconnects.
    pub fn on_leave(mut self, f: impl Fn(&Client, &str) + Send + Sync + 'static) -> Self {
        self.hooks.on_leave.push(Arc::new(f));
        self
    }

    /// `f(client, message_type, data)` for every decoded inbound message, before its handler.
    pub fn on_message(
        mut self,
        f: impl Fn(&Client, &str, Option<&RawValue>) + Send + Sync + 'static,
    ) -> Self {
        self.hooks.on_message.push(Arc::new(f));
        self
    }

    /// With `cluster.bus_type: local`, joins the nodes built with the same broker into one
    /// in-process cluster (several nodes embedded in one process; fast cluster tests).
    pub fn local_broker(mut self, broker: Arc<crate::bus::LocalBroker>) -> Self {
        self.local_broker = Some(broker);
        self
    }

    /// Lets config reloads change the log level: `f` applies a new `log.level` (the binary
    /// passes its `tracing_subscriber` reload handle).
    pub fn log_level_reloader(
        mut self,
        f: impl Fn(&str) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.log_level_reloader = Some(Box::new(f));
        self
    }

    pub fn build(mut self) -> Result<Server, BuildError> {
        if let Some(e) = self.errors.pop() {
            return Err(e);
        }
        let node_id = match self.config.cluster.node_id.as_str() {
            "" => {
                let id = uuid::Uuid::new_v4().simple().to_string();
                NodeId::from(format!("node-{}", &id[..8]))
            }
            id => NodeId::from(id),
        };
        let verifier =
            crate::auth::Verifier::from_config(&self.config.auth).map_err(BuildError::Auth)?;
        if self.config.auth.enabled && self.config.server.allowed_origins.is_empty() {
            tracing::warn!(
                "auth is on but server.allowed_origins is empty: any web page may open connections with its visitors' tokens"
            );
        }
        if self.config.admin.api_key.is_empty()
            && !self.config.auth.enabled
            && !listens_on_loopback_only(&self.config.server.addr)
        {
            tracing::warn!(
                addr = %self.config.server.addr,
                "the admin API (/api/*) is open to anyone who can reach this address: set admin.api_key"
            );
        }
        let hub = Hub::new(node_id);
        let mut node = Node::new(hub, verifier, self.config, self.handlers, self.hooks);
        node.log_level_reloader = self.log_level_reloader;
        Ok(Server {
            node: Arc::new(node),
            local_broker: self.local_broker,
        })
    }
}

/// A configured node, not yet listening.
pub struct Server {
    node: Arc<Node>,
    local_broker: Option<Arc<crate::bus::LocalBroker>>,
}

impl Server {
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            node: self.node.clone(),
        }
    }

    /// Binds `server.addr` and starts serving.
    pub async fn bind(self) -> std::io::Result<RunningServer> {
        let addr = self
            .node
            .config()
            .server
            .socket_addr()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let listener = TcpListener::bind(addr).await?;
        self.serve(listener).await
    }

    /// Starts the cluster bus (when configured) and serves on `listener` (tests bind
    /// `127.0.0.1:0`). A broker that is down does not stop the start: the node serves local
    /// traffic and reconnects in the background.
    pub async fn serve(self, listener: TcpListener) -> std::io::Result<RunningServer> {
        let local_addr = listener.local_addr()?;
        let node = self.node;
        let config = node.config();
        node.start_cluster(&config, self.local_broker)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        crate::conn::sweeper::start(&node);
        let _ = node.webhooks.set(crate::webhooks::Webhooks::start(
            &config.webhooks,
            node.hub.node_id().as_str(),
            node.hub.metrics.clone(),
            node.shutdown.clone(),
            &node.tasks,
        ));
        let metrics_addr = match config.metrics.listen.as_str() {
            "" => None,
            addr => Some(crate::http::serve_metrics(node.clone(), addr).await?),
        };
        let accept = tokio::spawn(crate::http::accept_loop(node.clone(), listener));
        tracing::info!(addr = %local_addr, node_id = %node.hub.node_id(), "wshub listening");
        Ok(RunningServer {
            local_addr,
            metrics_addr,
            handle: ServerHandle { node },
            accept,
        })
    }
}

/// A serving node.
pub struct RunningServer {
    local_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    handle: ServerHandle,
    accept: tokio::task::JoinHandle<()>,
}

impl RunningServer {
    /// Where `/metrics` is served when `metrics.listen` moves it off the main listener.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// Runs until [`ServerHandle::shutdown`] is called.
    pub async fn wait(self) {
        let _ = self.accept.await;
    }

    /// Stops accepting, closes every connection with 1001, and waits (up to `timeout`) for
    /// connection tasks to finish.
    /// Graceful drain, then shutdown: `/health/ready` turns 503 and new upgrades are refused
    /// at once; open connections are closed with 1001 and a reconnect hint a few at a time,
    /// spread evenly over `drain_period` so they do not all land on the other nodes in the
    /// same instant; then the node leaves the cluster and its bus connection is flushed and
    /// closed. Everything is cut short at `timeout` after the start.
    pub async fn drain(self, drain_period: Duration, timeout: Duration) {
        let node = self.handle.node.clone();
        let started = tokio::time::Instant::now();
        node.draining.cancel();
        let clients = node.hub.clients_snapshot();
        tracing::info!(clients = clients.len(), drain_period = ?drain_period, "draining");
        let spread = drain_period.min(timeout.mul_f64(0.8));
        let n = clients.len().max(1) as u32;
        for (i, conn) in clients.iter().enumerate() {
            let due = started + spread * i as u32 / n;
            if due > tokio::time::Instant::now() {
                tokio::time::sleep_until(due).await;
            }
            conn.close(
                wshub_protocol::close::GOING_AWAY,
                wshub_protocol::close::reason::DRAINING,
            );
        }
        let left = timeout.saturating_sub(started.elapsed());
        self.shutdown(left.max(Duration::from_millis(100))).await;
        tracing::info!(took = ?started.elapsed(), "drained");
    }

    pub async fn shutdown(self, timeout: Duration) {
        let node = self.handle.node.clone();
        self.handle.shutdown();
        let _ = self.accept.await;
        node.tasks.close();
        let waited = tokio::time::timeout(timeout, node.tasks.wait()).await;
        node.leave_cluster().await;
        node.stop_cluster().await;
        if waited.is_err() {
            tracing::warn!(
                remaining = node.tasks.len(),
                "shutdown timed out with tasks still running"
            );
        }
    }
}

/// Sends to clients, rooms or everyone on this node, from anywhere. Cheap to clone.
#[derive(Clone)]
pub struct ServerHandle {
    node: Arc<Node>,
}

impl ServerHandle {
    pub fn node_id(&self) -> &str {
        self.node.hub.node_id().as_str()
    }

    /// Sends an envelope of `message_type` with `data` to one client, on whatever node.
    pub async fn send_to_client(
        &self,
        client_id: &str,
        message_type: &str,
        data: &impl Serialize,
    ) -> Result<(), SendError> {
        let frame = self.node.hub.frame(message_type, data, None)?;
        Ok(self.node.publish_direct(client_id, frame).await?)
    }

    /// Sends an envelope to every member of a room on every node (encoded once).
    pub async fn send_to_room(
        &self,
        room_id: &str,
        message_type: &str,
        data: &impl Serialize,
    ) -> Result<Delivery, SendError> {
        // Stored in the room's history (and given an offset) when the room keeps one.
        Ok(self
            .node
            .publish_room_message(room_id, message_type, data, None, None)
            .await?
            .delivery)
    }

    /// Sends an envelope to every client on every node (encoded once).
    pub async fn broadcast(
        &self,
        message_type: &str,
        data: &impl Serialize,
    ) -> Result<Delivery, SendError> {
        let frame = self.node.hub.frame(message_type, data, None)?;
        Ok(self.node.publish_broadcast(frame, None).await?)
    }

    /// The bus kind and state (`("nats", "connected")`), `None` for a single node.
    pub fn bus_status(&self) -> Option<(&'static str, &'static str)> {
        self.node.bus_status().map(|(k, s)| (k, s.as_str()))
    }

    /// Bus subjects this node is subscribed to (sorted).
    pub fn bus_subscriptions(&self) -> Vec<String> {
        self.node.bus_subscriptions()
    }

    pub fn client_count(&self) -> usize {
        self.node.hub.client_count()
    }

    pub fn client_ids(&self) -> Vec<String> {
        self.node
            .hub
            .client_ids()
            .into_iter()
            .map(|c| c.to_string())
            .collect()
    }

    pub fn rooms(&self) -> Vec<RoomInfo> {
        self.node.hub.list_rooms()
    }

    pub fn room_members(&self, room_id: &str) -> Result<Vec<String>, HubError> {
        Ok(self
            .node
            .hub
            .members(room_id)?
            .into_iter()
            .map(|m| m.client_id)
            .collect())
    }

    /// Creates a room in the cluster registry (`max_clients` 0 = unlimited).
    pub async fn create_room(
        &self,
        room_id: &str,
        name: Option<String>,
        max_clients: Option<u32>,
    ) -> Result<RoomInfo, crate::fanout::PublishError> {
        self.node
            .create_room(RoomId::from(room_id), name, max_clients)
            .await
    }

    /// Rooms of the whole cluster, with member counts.
    pub async fn cluster_rooms(&self) -> Result<Vec<RoomInfo>, crate::fanout::PublishError> {
        self.node.list_rooms().await
    }

    /// Members of a room on every node.
    pub async fn cluster_members(
        &self,
        room_id: &str,
    ) -> Result<Vec<String>, crate::fanout::PublishError> {
        Ok(self
            .node
            .room_members(room_id)
            .await?
            .into_iter()
            .map(|m| m.client_id)
            .collect())
    }

    /// Live nodes of the cluster (this one included).
    pub async fn nodes(&self) -> Vec<crate::cluster::NodeRecord> {
        self.node.live_nodes().await
    }

    /// Disconnects a client (close 1000), on whatever node it is.
    pub async fn disconnect(&self, client_id: &str) -> Result<(), SendError> {
        Ok(self.node.disconnect_client(client_id).await?)
    }

    /// The configuration in effect.
    pub fn config(&self) -> Arc<Config> {
        self.node.config()
    }

    /// Applies a new configuration: live keys now, restart keys reported (see
    /// [`crate::config::RESTART_KEYS`]). Validate it first ([`Config::validate`]).
    pub fn reload(&self, config: Config) -> Result<ReloadReport, crate::config::ConfigError> {
        self.node.reload(config)
    }

    /// Reloads from `path` whenever it changes, and on SIGHUP (which then no longer
    /// terminates the process), until shutdown. A file that fails to load or validate is
    /// logged and ignored.
    pub fn watch_config(&self, path: impl Into<std::path::PathBuf>) -> notify::Result<()> {
        crate::reload::watch(self.node.clone(), path.into())
    }

    /// Successful and rejected reloads so far.
    pub fn reload_counts(&self) -> (u64, u64) {
        (
            self.node.hub.metrics.config_reloads.get(),
            self.node.hub.metrics.config_reload_failures.get(),
        )
    }

    /// Whether a drain or shutdown has started.
    pub fn is_draining(&self) -> bool {
        self.node.draining.is_cancelled() || self.node.shutdown.is_cancelled()
    }

    /// Starts shutting down: stop accepting, close every connection with 1001.
    pub fn shutdown(&self) {
        self.node.shutdown.cancel();
        self.node.hub.close_all(
            wshub_protocol::close::GOING_AWAY,
            wshub_protocol::close::reason::SHUTDOWN,
        );
    }
}

/// One connected client, as handlers and hooks see it. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    node: Arc<Node>,
    conn: Arc<ConnHandle>,
}

impl Client {
    pub(crate) fn new(node: Arc<Node>, conn: Arc<ConnHandle>) -> Self {
        Client { node, conn }
    }

    pub fn id(&self) -> &str {
        self.conn.client_id.as_str()
    }

    pub fn remote_addr(&self) -> SocketAddr {
        self.conn.remote
    }

    /// Rooms this connection is in.
    pub fn rooms(&self) -> Vec<String> {
        self.conn
            .room_list()
            .into_iter()
            .map(|r| r.to_string())
            .collect()
    }

    /// Sends an envelope to this client.
    pub fn send(&self, message_type: &str, data: &impl Serialize) -> Result<(), SendError> {
        let frame = self.node.hub.frame(message_type, data, None)?;
        match self.node.hub.send_to(&self.conn, frame) {
            SendOutcome::Queued => Ok(()),
            SendOutcome::SlowConsumer => Err(SendError::SlowConsumer),
            SendOutcome::Closed => Err(SendError::ClientNotFound),
        }
    }

    /// Joins this client to a room, as `join_room` would (without the permission check).
    pub async fn join(&self, room_id: &str) -> Result<(), crate::fanout::PublishError> {
        self.node
            .join_room(&RoomId::from(room_id), &self.conn)
            .await?;
        self.node.hooks.join(self, room_id);
        Ok(())
    }

    pub async fn leave(&self, room_id: &str) -> Result<(), crate::fanout::PublishError> {
        self.node.leave_room(room_id, &self.conn).await?;
        self.node.hooks.leave(self, room_id);
        Ok(())
    }

    /// Closes this client's connection (close 1000).
    pub fn disconnect(&self) {
        self.conn.close(
            wshub_protocol::close::NORMAL,
            wshub_protocol::close::reason::KICKED,
        );
    }

    pub fn server(&self) -> ServerHandle {
        ServerHandle {
            node: self.node.clone(),
        }
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("id", &self.id())
            .field("remote", &self.conn.remote)
            .finish()
    }
}

/// `127.0.0.1:8080`, `[::1]:8080`, `localhost:8080`: nothing outside this machine can connect.
fn listens_on_loopback_only(addr: &str) -> bool {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::listens_on_loopback_only as lo;

    #[test]
    fn loopback_addresses() {
        assert!(lo("127.0.0.1:8080") && lo("[::1]:80") && lo("localhost:1"));
        assert!(!lo("0.0.0.0:8080") && !lo(":8080") && !lo("10.0.0.1:80") && !lo("[::]:80"));
    }
}

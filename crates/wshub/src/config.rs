//! Configuration: defaults <- YAML file <- `WSHUB_*` environment <- command-line flags.
//!
//! The structs mirror the YAML keys (`server.hub.*` -> [`HubConfig`]); defaults live in each
//! `Default` impl and units are documented per field. GoHub's `config.yaml` keys load
//! unchanged. Unknown keys are errors (a typo must not silently fall back to a default), and
//! every error names the key it is about. Durations accept `"60s"`, `"500ms"`, `"1h"`.
//!
//! Environment variables use `__` for nesting: `WSHUB_SERVER__ADDR=127.0.0.1:9000`,
//! `WSHUB_SERVER__HUB__MESSAGE_BUFFER_CAP=512`.
//!
//! [`reload`](crate::sdk::ServerHandle::reload) applies what can change live and names the
//! keys that need a restart; [`RESTART_KEYS`] lists those.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Yaml};
use serde::{Deserialize, Serialize};

use crate::auth::Permissions;

/// The whole configuration of one node.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// GoHub's `version` key; informational only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub server: ServerConfig,
    pub rooms: RoomsConfig,
    pub cluster: ClusterConfig,
    pub auth: AuthConfig,
    pub admin: AdminConfig,
    pub log: LogConfig,
    pub tracing: TracingConfig,
    pub webhooks: WebhooksConfig,
    pub limits: LimitsConfig,
    pub shutdown: ShutdownConfig,
    pub metrics: MetricsConfig,
}

/// `server.*`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Listen address, `host:port`; GoHub's `":8080"` form means all interfaces.
    /// Default `0.0.0.0:8080`. Needs a restart.
    pub addr: String,
    /// Browser origins allowed to open WebSockets (`https://app.example.com`, or `*`).
    /// Empty = any origin (logged as a warning when auth is on). Requests without an `Origin`
    /// header (non-browser clients) are not affected. Live-reloadable.
    pub allowed_origins: Vec<String>,
    /// A directory served at `/` for paths no other route takes (a demo page, a small app).
    /// Empty = none. Needs a restart.
    pub static_dir: String,
    pub hub: HubConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            addr: "0.0.0.0:8080".into(),
            allowed_origins: Vec::new(),
            static_dir: String::new(),
            hub: HubConfig::default(),
        }
    }
}

impl ServerConfig {
    /// `addr` as a socket address (`":8080"` -> `0.0.0.0:8080`).
    pub fn socket_addr(&self) -> Result<SocketAddr, String> {
        let addr = if self.addr.starts_with(':') {
            format!("0.0.0.0{}", self.addr)
        } else {
            self.addr.clone()
        };
        addr.to_socket_addrs()
            .map_err(|e| e.to_string())?
            .next()
            .ok_or_else(|| "resolves to no address".to_owned())
    }
}

/// `server.hub.*`: per-connection limits and timers. All live-reloadable; `read_timeout` and
/// `max_message_size` apply to open connections too, the others to new connections.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HubConfig {
    /// Close a client from which nothing (not even a pong) arrived for this long. Default 60 s.
    #[serde(with = "humantime_serde")]
    pub read_timeout: Duration,
    /// Give up on a socket write that takes longer than this. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// Interval of server WebSocket pings. Default 25 s.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// Largest inbound message in bytes; bigger ones close the socket with 1009. Default 64 KiB.
    pub max_message_size: usize,
    /// Outbound queue length per connection, in frames. A client whose queue is full is
    /// disconnected with close 1008 (slow consumer). Default 256.
    pub message_buffer_cap: usize,
    /// Bytes read from the socket per read call. No buffer is held while a connection is
    /// idle; this is the size of the one allocated when data arrives. Default 4 KiB.
    /// (GoHub key; GoHub allocated it per connection for its whole life.)
    pub read_buffer_size: usize,
    /// Most bytes coalesced into one vectored write. Default 64 KiB. (GoHub key.)
    pub write_buffer_size: usize,
    /// Most bytes waiting in one connection's outbound queue (with `message_buffer_cap`,
    /// whichever is reached first). Default 4 MiB.
    pub max_queued_bytes: usize,
    /// A full queue: `disconnect` the client (close 1008, the default: it would miss
    /// messages) or `drop_oldest` frames to make room (for lossy feeds such as tickers).
    pub slow_consumer_policy: SlowConsumerPolicy,
}

/// What a full outbound queue does.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SlowConsumerPolicy {
    #[default]
    Disconnect,
    DropOldest,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            read_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(25),
            max_message_size: 64 * 1024,
            message_buffer_cap: 256,
            read_buffer_size: 4 * 1024,
            write_buffer_size: 64 * 1024,
            max_queued_bytes: 4 * 1024 * 1024,
            slow_consumer_policy: SlowConsumerPolicy::Disconnect,
        }
    }
}

/// `rooms.*` (live-reloadable).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RoomsConfig {
    /// Create a room on first `join_room` when it does not exist. Default true.
    /// Auto-created rooms are removed when their last member leaves.
    pub auto_create: bool,
    /// `max_clients` of rooms created without one (auto-created included); 0 = unlimited.
    pub default_max_clients: u32,
    /// Send `presence_join` / `presence_leave` to a room's members when someone joins or
    /// leaves (on any node). Default false (GoHub clients don't expect them).
    pub presence_events: bool,
    pub history: HistoryConfig,
    /// A `room_message` with an `idempotency_key` seen within this window is applied once;
    /// the retry gets the first one's `offset`. Default 5 min. Needs history.
    #[serde(with = "humantime_serde")]
    pub idempotency_window: Duration,
}

/// `rooms.history.*`: per-room history for recovery after a reconnect.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HistoryConfig {
    /// Publications kept per room; 0 disables history (no offsets, no recovery). Default 0.
    pub size: usize,
    /// Publications older than this are dropped. Default 10 min.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// How often a cluster node compares, for each room it has members in, the room's latest
    /// offset in the history with the latest it delivered, and delivers from the history what
    /// never arrived live and was still missing an interval later. 0 turns it off. Default
    /// 10 s. See docs/history.md.
    #[serde(with = "humantime_serde")]
    pub position_check: Duration,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            size: 0,
            ttl: Duration::from_secs(600),
            position_check: Duration::from_secs(10),
        }
    }
}

impl Default for RoomsConfig {
    fn default() -> Self {
        RoomsConfig {
            auto_create: true,
            default_max_clients: 0,
            presence_events: false,
            history: HistoryConfig::default(),
            idempotency_window: Duration::from_secs(300),
        }
    }
}

/// Which bus joins the nodes of a cluster.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BusType {
    /// In-process: a single node, no broker.
    #[default]
    Local,
    Nats,
    Redis,
    /// GoHub's name for "no bus".
    Noop,
}

/// `cluster.*` (needs a restart).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// GoHub key: false runs a single node on the in-process bus. Default false.
    pub enabled: bool,
    /// `local`, `nats` or `redis` (GoHub's `noop` = `local`). Default `local`.
    pub bus_type: BusType,
    /// This node's id; generated (`node-<8 hex>`) when empty.
    pub node_id: String,
    /// How often this node publishes its heartbeat (address and load). Default 2 s.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// A node silent this long is dead: its clients and memberships are removed. Default 6 s.
    #[serde(with = "humantime_serde")]
    pub node_ttl: Duration,
    /// The address other nodes and `/api/nodes` show for this node; `server.addr` when empty.
    pub advertise_addr: String,
    pub nats: NatsConfig,
    pub redis: RedisConfig,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            enabled: false,
            bus_type: BusType::Local,
            node_id: String::new(),
            heartbeat_interval: Duration::from_secs(2),
            node_ttl: Duration::from_secs(6),
            advertise_addr: String::new(),
            nats: NatsConfig::default(),
            redis: RedisConfig::default(),
        }
    }
}

/// `cluster.nats.*` (GoHub's keys).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    pub urls: Vec<String>,
    /// Connection name shown by the NATS server.
    pub name: String,
    pub username: String,
    pub password: String,
    pub token: String,
    #[serde(with = "humantime_serde")]
    pub reconnect_wait: Duration,
    /// -1 = forever.
    pub max_reconnects: i64,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Publishes that take longer fail with error 1004.
    #[serde(with = "humantime_serde")]
    pub op_timeout: Duration,
    pub use_jetstream: bool,
    /// Prefix of every subject, with its separator. Default `wshub.`.
    pub subject_prefix: String,
    pub stream_name: String,
    pub consumer_name: String,
    #[serde(with = "humantime_serde")]
    pub message_retention: Duration,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            urls: vec!["nats://127.0.0.1:4222".into()],
            name: "wshub".into(),
            username: String::new(),
            password: String::new(),
            token: String::new(),
            reconnect_wait: Duration::from_secs(2),
            max_reconnects: -1,
            connect_timeout: Duration::from_secs(5),
            op_timeout: Duration::from_millis(500),
            use_jetstream: false,
            subject_prefix: "wshub.".into(),
            stream_name: "WSHUB".into(),
            consumer_name: "wshub-consumer".into(),
            message_retention: Duration::from_secs(3600),
        }
    }
}

/// `cluster.redis.*` (GoHub's keys).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    pub addrs: Vec<String>,
    pub password: String,
    pub db: i64,
    /// `single`, or `cluster` (Redis Cluster, sharded pub/sub).
    pub mode: String,
    pub master_name: String,
    pub key_prefix: String,
    pub pool_size: usize,
    pub min_idle_conns: usize,
    #[serde(with = "humantime_serde")]
    pub dial_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub read_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_interval: Duration,
    pub max_retries: i64,
    /// Publishes that take longer fail with error 1004.
    #[serde(with = "humantime_serde")]
    pub op_timeout: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            addrs: vec!["127.0.0.1:6379".into()],
            password: String::new(),
            db: 0,
            mode: "single".into(),
            master_name: String::new(),
            key_prefix: "wshub:".into(),
            pool_size: 10,
            min_idle_conns: 2,
            dial_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(3),
            write_timeout: Duration::from_secs(3),
            retry_interval: Duration::from_millis(200),
            max_retries: 3,
            op_timeout: Duration::from_millis(500),
        }
    }
}

/// `auth.*` (live-reloadable).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Require a JWT to connect. Default false: every client is anonymous with all
    /// permissions (the single-node developer default).
    pub enabled: bool,
    /// HMAC key for HS256/384/512 tokens (also what `wshub token` signs with). Secret.
    pub secret_key: String,
    /// PEM public key (RSA -> RS*/PS*, EC -> ES256/384, Ed25519 -> EdDSA).
    pub public_key_file: String,
    /// JWK set file; each key is used for its own `alg` (and `kid`). Re-read on reload.
    pub jwks_file: String,
    /// Required `iss` claim; empty = not checked. Default "gohub", for GoHub compatibility.
    pub issuer: String,
    /// Required `aud` claim when set.
    pub audience: String,
    /// Refuse tokens without `exp`. Default true.
    pub require_exp: bool,
    /// Clock skew allowed on `exp`/`nbf`. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// With auth on, accept clients without a token (they get `anonymous_permissions`).
    pub allow_anonymous: bool,
    /// Permissions of anonymous clients when auth is on. Default `["join:room"]`.
    pub anonymous_permissions: Vec<String>,
    /// Accept a connection without a token and wait this long for an in-band
    /// `authenticate` as its first message (browsers cannot set headers). Default 5 s.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Without a token at upgrade (and anonymous not allowed): true waits for in-band
    /// `authenticate`; false refuses the upgrade with 401 `Unauthorized: Token required`
    /// (GoHub's behaviour). Default true.
    pub in_band: bool,
    /// After a token expires the client gets error 2002 and this long to send a fresh token
    /// (`authenticate`) before it is closed with 4401. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub expiry_grace: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            enabled: false,
            secret_key: String::new(),
            public_key_file: String::new(),
            jwks_file: String::new(),
            issuer: "gohub".into(),
            audience: String::new(),
            require_exp: true,
            leeway: Duration::from_secs(5),
            allow_anonymous: true,
            anonymous_permissions: vec!["join:room".into()],
            handshake_timeout: Duration::from_secs(5),
            in_band: true,
            expiry_grace: Duration::from_secs(30),
        }
    }
}

/// `admin.*`: the HTTP admin API (live-reloadable).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// When set, `/api/*` requires `Authorization: Bearer <api_key>`. Secret. Default empty
    /// (the API is open: set it anywhere but a developer machine).
    pub api_key: String,
    /// `sender_id` of messages sent through the API. Default "server".
    pub sender_id: String,
    /// Largest request body accepted, in bytes; bigger ones get 413. Default 1 MiB.
    /// Needs a restart.
    pub max_body_size: usize,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            api_key: String::new(),
            sender_id: "server".into(),
            max_body_size: 1024 * 1024,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (GoHub's `text`).
    #[default]
    Text,
    Json,
}

/// `log.*`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `error`, `warn`, `info`, `debug`, `trace`, or an `EnvFilter` directive such as
    /// `info,wshub=debug`. Live-reloadable. Default `info`.
    pub level: String,
    /// `text` or `json`. Needs a restart.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// `tracing.*`: OpenTelemetry span export (see `docs/observability.md`). Needs a restart.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TracingConfig {
    /// Base URL of an OTLP/HTTP collector (`http://otel-collector:4318`; `/v1/traces` is
    /// appended unless the URL has a path). Empty = no tracing. Default empty.
    pub otlp_endpoint: String,
    /// `service.name` of the exported spans. Default `wshub`.
    pub service_name: String,
    /// Fraction of new traces kept, 0.0..=1.0 (a trace continued from another node follows
    /// that node's decision). Default 0.1.
    pub sample_ratio: f64,
    /// How often batched spans are sent. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub export_interval: Duration,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig {
            otlp_endpoint: String::new(),
            service_name: "wshub".into(),
            sample_ratio: 0.1,
            export_interval: Duration::from_secs(5),
        }
    }
}

/// `metrics.*`. Needs a restart.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `/metrics` (and `/health`) on this separate `host:port` only, e.g. an address
    /// the public load balancer does not reach. Empty = on the main listener. Default empty.
    pub listen: String,
}

/// `shutdown.*`: the graceful drain on SIGTERM/SIGINT. Live-reloadable.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// Connections are closed (1001, "reconnect") evenly over this period, so they do not
    /// all reconnect to the other nodes at once. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub drain_period: Duration,
    /// Hard stop this long after the signal, whatever is left. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            drain_period: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
        }
    }
}

/// `limits.*`: admission and rate limits (see `docs/limits.md`). Live-reloadable; 0 = no
/// limit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Sockets per node; an upgrade beyond it gets HTTP 503. Default 0.
    pub max_connections: usize,
    /// Sockets per client IP; beyond it HTTP 429. Default 0.
    pub max_connections_per_ip: usize,
    /// New connections per second per client IP (bursts of twice that); beyond it HTTP 429.
    /// Default 0.
    pub connects_per_second_per_ip: u32,
    /// Messages per second per connection; a message beyond it gets error 1005 and is
    /// dropped. Default 0.
    pub messages_per_second: u32,
    /// Messages a connection may send at once before the rate applies. Default 0 (= the rate).
    pub messages_burst: u32,
    /// Refused messages in a row after which the connection is closed (1008). Default 10.
    pub rate_limit_strikes: u32,
    /// Rooms one connection may be in; a join beyond it gets error 2001. Default 0.
    pub max_rooms_per_client: usize,
    /// Deepest nesting of objects/arrays in a message; deeper gets error 1001. Default 32.
    pub max_json_depth: usize,
    /// How long a client may take to send its HTTP upgrade request. Default `10s`.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 0,
            max_connections_per_ip: 0,
            connects_per_second_per_ip: 0,
            messages_per_second: 0,
            messages_burst: 0,
            rate_limit_strikes: 10,
            max_rooms_per_client: 0,
            max_json_depth: 32,
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// `webhooks.*`: events POSTed to the application, and join authorization (see
/// `docs/webhooks.md`). Needs a restart.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Where event batches are POSTed. Empty = no event webhooks. Default empty.
    pub url: String,
    /// HMAC-SHA256 key of the `X-Wshub-Signature` header. Secret. Default empty.
    pub secret: String,
    /// Events sent: `connect`, `disconnect`, `join`, `leave`, `room_message`. Default all.
    pub events: Vec<String>,
    /// Most events in one POST. Default 100.
    pub batch_size: usize,
    /// Longest an event waits for its batch to fill. Default `200ms`.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Events held while the backend is slow or down; beyond it new events are dropped (and
    /// counted). Default 10000.
    pub queue_size: usize,
    /// Timeout of one POST. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Retries of a failed batch before it is dropped. Default 5.
    pub max_retries: u32,
    /// First wait before a retry; doubles each time up to 30 s. Default `500ms`.
    #[serde(with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// When set, every `join_room` asks this URL first (`{"allow": bool, "reason"?}`).
    /// Default empty.
    pub authorize_join: String,
    /// How long a join waits for the authorizer. Default `2s`.
    #[serde(with = "humantime_serde")]
    pub authorize_timeout: Duration,
    /// Allow joins when the authorizer cannot be reached (default false: refuse, error 1004).
    pub authorize_fail_open: bool,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            url: String::new(),
            secret: String::new(),
            events: ["connect", "disconnect", "join", "leave", "room_message"]
                .map(String::from)
                .to_vec(),
            batch_size: 100,
            flush_interval: Duration::from_millis(200),
            queue_size: 10_000,
            timeout: Duration::from_secs(5),
            max_retries: 5,
            retry_backoff: Duration::from_millis(500),
            authorize_join: String::new(),
            authorize_timeout: Duration::from_secs(2),
            authorize_fail_open: false,
        }
    }
}

/// The top-level keys of [`Config`].
const SECTIONS: &[&str] = &[
    "version", "server", "rooms", "cluster", "auth", "admin", "log", "tracing", "webhooks",
    "limits", "shutdown", "metrics",
];

/// Keys (and key prefixes ending in `.`) whose change needs a restart.
pub const RESTART_KEYS: &[&str] = &[
    "server.addr",
    "server.static_dir",
    "cluster.",
    "tracing.",
    "webhooks.",
    "metrics.",
    "log.format",
    "admin.max_body_size",
    "rooms.history.",
    "version",
];

/// Why a configuration could not be used. Each line names a key and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration:\n  {}", .problems.join("\n  "))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl ConfigError {
    fn one(problem: impl Into<String>) -> Self {
        ConfigError {
            problems: vec![problem.into()],
        }
    }
}

impl Config {
    /// Loads defaults <- `file` (when given) <- `WSHUB_*` environment, then validates.
    ///
    /// Only variables naming a section (`WSHUB_SERVER__…`, `WSHUB_AUTH__…`, …) are read:
    /// others with the prefix are not ours (Kubernetes injects `WSHUB_PORT`,
    /// `WSHUB_SERVICE_HOST` into every pod when a Service is named `wshub`; scripts set
    /// `WSHUB_BIN`). Unknown keys inside a section are still errors.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Config::load_from(
            file,
            Env::prefixed("WSHUB_").split("__").filter(|key| {
                let section = key.as_str().split('.').next().unwrap_or("");
                SECTIONS.iter().any(|s| section.eq_ignore_ascii_case(s))
            }),
        )
    }

    /// As [`Config::load`] with an explicit environment provider (tests).
    pub fn load_from(file: Option<&Path>, env: Env) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError::one(format!(
                    "config file {} does not exist",
                    file.display()
                )));
            }
            figment = figment.merge(Yaml::file_exact(file));
        }
        let config: Config = figment.merge(env).extract().map_err(figment_problems)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values serde cannot: ranges, addresses, permission strings, combinations.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, key: &str, why: &str| {
            if !ok {
                problems.push(format!("{key}: {why}"));
            }
        };
        if let Err(e) = self.server.socket_addr() {
            check(
                false,
                "server.addr",
                &format!("not a host:port address ({e})"),
            );
        }
        check(
            self.server.static_dir.is_empty() || Path::new(&self.server.static_dir).is_dir(),
            "server.static_dir",
            "is not a directory",
        );
        let hub = &self.server.hub;
        check(
            hub.message_buffer_cap >= 1,
            "server.hub.message_buffer_cap",
            "must be at least 1",
        );
        check(
            hub.max_message_size >= 128,
            "server.hub.max_message_size",
            "must be at least 128 bytes",
        );
        check(
            hub.read_buffer_size >= 256,
            "server.hub.read_buffer_size",
            "must be at least 256 bytes",
        );
        check(
            hub.write_buffer_size >= 1024,
            "server.hub.write_buffer_size",
            "must be at least 1024 bytes",
        );
        check(
            !hub.ping_interval.is_zero(),
            "server.hub.ping_interval",
            "must be more than 0",
        );
        check(
            !hub.write_timeout.is_zero(),
            "server.hub.write_timeout",
            "must be more than 0",
        );
        check(
            hub.read_timeout > hub.ping_interval,
            "server.hub.read_timeout",
            "must be longer than server.hub.ping_interval (pongs are what keeps a quiet client alive)",
        );
        if let Err(bad) = Permissions::parse(&self.auth.anonymous_permissions) {
            check(
                false,
                "auth.anonymous_permissions",
                &format!("unknown permission {bad:?}"),
            );
        }
        check(
            !self.auth.enabled
                || !self.auth.secret_key.is_empty()
                || !self.auth.public_key_file.is_empty()
                || !self.auth.jwks_file.is_empty(),
            "auth.secret_key",
            "auth.enabled needs a key: auth.secret_key, auth.public_key_file or auth.jwks_file",
        );
        check(
            !self.auth.handshake_timeout.is_zero(),
            "auth.handshake_timeout",
            "must be more than 0",
        );
        check(
            valid_log_level(&self.log.level),
            "log.level",
            "not a level (error, warn, info, debug, trace) or filter directive",
        );
        check(
            !self.admin.sender_id.is_empty(),
            "admin.sender_id",
            "must not be empty",
        );
        check(
            self.admin.max_body_size >= 1024,
            "admin.max_body_size",
            "must be at least 1024 bytes",
        );
        check(
            matches!(self.cluster.redis.mode.as_str(), "single" | "cluster"),
            "cluster.redis.mode",
            "must be single or cluster",
        );
        check(
            self.cluster.node_ttl > self.cluster.heartbeat_interval
                && !self.cluster.heartbeat_interval.is_zero(),
            "cluster.node_ttl",
            "must be longer than cluster.heartbeat_interval (which must be more than 0)",
        );
        check(
            !self.cluster.nats.urls.is_empty(),
            "cluster.nats.urls",
            "must list at least one server",
        );
        check(
            !self.cluster.redis.addrs.is_empty(),
            "cluster.redis.addrs",
            "must list at least one server",
        );
        check(
            !self.cluster.nats.op_timeout.is_zero() && !self.cluster.redis.op_timeout.is_zero(),
            "cluster.*.op_timeout",
            "must be more than 0",
        );
        check(
            (0.0..=1.0).contains(&self.tracing.sample_ratio),
            "tracing.sample_ratio",
            "must be between 0.0 and 1.0",
        );
        check(
            self.tracing.otlp_endpoint.is_empty()
                || self.tracing.otlp_endpoint.starts_with("http://"),
            "tracing.otlp_endpoint",
            "must be an http:// URL of an OTLP/HTTP collector (https is not built in: use a local collector)",
        );
        for event in &self.webhooks.events {
            check(
                crate::webhooks::EventKind::parse(event).is_some(),
                "webhooks.events",
                &format!(
                    "unknown event {event:?} (connect, disconnect, join, leave, room_message)"
                ),
            );
        }
        for (key, url) in [
            ("webhooks.url", &self.webhooks.url),
            ("webhooks.authorize_join", &self.webhooks.authorize_join),
        ] {
            check(
                url.is_empty() || url.starts_with("http://") || url.starts_with("https://"),
                key,
                "must be an http:// or https:// URL",
            );
        }
        check(
            (self.webhooks.url.is_empty() && self.webhooks.authorize_join.is_empty())
                || !self.webhooks.secret.is_empty(),
            "webhooks.secret",
            "must be set when webhooks are on (requests are signed with it)",
        );
        check(
            self.webhooks.batch_size >= 1 && self.webhooks.queue_size >= 1,
            "webhooks.batch_size",
            "batch_size and queue_size must be at least 1",
        );
        check(
            self.shutdown.timeout > self.shutdown.drain_period,
            "shutdown.timeout",
            "must be longer than shutdown.drain_period",
        );
        check(
            self.limits.max_json_depth >= 2,
            "limits.max_json_depth",
            "must be at least 2 (an envelope with an object in data)",
        );
        check(
            !self.limits.handshake_timeout.is_zero(),
            "limits.handshake_timeout",
            "must be more than 0",
        );
        check(
            !self.tracing.export_interval.is_zero(),
            "tracing.export_interval",
            "must be more than 0",
        );
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems })
        }
    }

    /// This configuration as YAML-like JSON with secrets replaced by `"***"` (for
    /// `check-config` and logs).
    pub fn masked(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        for path in [
            &["auth", "secret_key"][..],
            &["admin", "api_key"],
            &["cluster", "nats", "password"],
            &["cluster", "nats", "token"],
            &["cluster", "redis", "password"],
            &["webhooks", "secret"],
        ] {
            let mut cur = &mut v;
            for key in path {
                cur = &mut cur[*key];
            }
            if cur.as_str().is_some_and(|s| !s.is_empty()) {
                *cur = serde_json::Value::String("***".into());
            }
        }
        // Credentials written into URLs (`nats://user:pass@host`) are secrets too.
        for path in [
            &["cluster", "nats", "urls"][..],
            &["webhooks", "url"],
            &["webhooks", "authorize_join"],
            &["tracing", "otlp_endpoint"],
        ] {
            let mut cur = &mut v;
            for key in path {
                cur = &mut cur[*key];
            }
            match cur {
                serde_json::Value::String(url) => *url = mask_userinfo(url),
                serde_json::Value::Array(urls) => {
                    for url in urls.iter_mut() {
                        if let serde_json::Value::String(u) = url {
                            *u = mask_userinfo(u);
                        }
                    }
                }
                _ => {}
            }
        }
        v
    }
}

/// `scheme://user:pass@host/…` -> `scheme://***@host/…`; anything else unchanged.
pub fn mask_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***{}", &rest[at..]),
        None => url.to_owned(),
    }
}

/// A bare level name, or a filter directive (`info,wshub=debug`). A bare word that is not a
/// level would be read by `EnvFilter` as a target name and silently log nothing useful.
fn valid_log_level(level: &str) -> bool {
    const LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];
    let is_directive = level.contains('=') || level.contains(',');
    if is_directive {
        tracing_subscriber::EnvFilter::try_new(level).is_ok()
    } else {
        LEVELS.contains(&level.to_ascii_lowercase().as_str())
    }
}

/// Dotted paths of every leaf whose value differs between `old` and `new`.
pub fn changed_keys(old: &Config, new: &Config) -> Vec<String> {
    fn walk(prefix: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
        match (a, b) {
            (serde_json::Value::Object(x), serde_json::Value::Object(y)) => {
                let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
                keys.sort();
                keys.dedup();
                for k in keys {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    let null = serde_json::Value::Null;
                    walk(
                        &path,
                        x.get(k).unwrap_or(&null),
                        y.get(k).unwrap_or(&null),
                        out,
                    );
                }
            }
            _ if a != b => out.push(prefix.to_owned()),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(
        "",
        &serde_json::to_value(old).unwrap_or_default(),
        &serde_json::to_value(new).unwrap_or_default(),
        &mut out,
    );
    out
}

/// Whether a change of `key` needs a restart.
pub fn needs_restart(key: &str) -> bool {
    RESTART_KEYS.iter().any(|r| {
        if r.ends_with('.') {
            key.starts_with(r)
        } else {
            key == *r
        }
    })
}

fn figment_problems(err: figment::Error) -> ConfigError {
    ConfigError {
        problems: err
            .into_iter()
            .map(|e| {
                let key = e.path.join(".");
                let source = e
                    .metadata
                    .as_ref()
                    .map(|m| match &m.source {
                        Some(src) => format!(" (from {src})"),
                        None => format!(" (from {})", m.name),
                    })
                    .unwrap_or_default();
                if key.is_empty() {
                    format!("{}{source}", e.kind)
                } else {
                    format!("{key}: {}{source}", e.kind)
                }
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env() -> Env {
        Env::prefixed("WSHUB_TEST_NOTHING_")
    }

    fn yaml(text: &str) -> tempfile::NamedTempFile {
        use std::io::Write;
        let mut f = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
        assert_eq!(
            Config::load_from(None, no_env()).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn gohub_config_yaml_loads() {
        let f = yaml(
            r#"
version: "1.0.0"
server:
  addr: ":8080"
  hub:
    read_timeout: 60s
    write_timeout: 10s
    read_buffer_size: 4096
    write_buffer_size: 4096
    message_buffer_cap: 256
cluster:
  enabled: false
  bus_type: nats
  nats:
    urls: ["nats://localhost:4222"]
    name: gohub-client
    reconnect_wait: 2s
    max_reconnects: -1
    connect_timeout: 5s
    op_timeout: 10ms
    use_jetstream: false
    stream_name: GOHUB
    consumer_name: gohub-consumer
    message_retention: 1h
  redis:
    addrs: ["localhost:6379"]
    password: ""
    db: 0
    key_prefix: "gohub:"
    mode: single
    pool_size: 10
    op_timeout: 500ms
auth:
  enabled: true
  secret_key: "your-secret-key-change-this"
  issuer: "gohub"
  allow_anonymous: true
log:
  level: "debug"
  format: "json"
"#,
        );
        let c = Config::load_from(Some(f.path()), no_env()).unwrap();
        assert_eq!(c.server.socket_addr().unwrap().port(), 8080);
        assert_eq!(c.server.hub.write_buffer_size, 4096);
        assert_eq!(c.cluster.nats.op_timeout, Duration::from_millis(10));
        assert_eq!(c.cluster.nats.message_retention, Duration::from_secs(3600));
        assert_eq!(c.cluster.redis.key_prefix, "gohub:");
        assert!(c.auth.enabled);
        assert_eq!(c.log.format, LogFormat::Json);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let f = yaml("server:\n  hub:\n    mesage_buffer_cap: 5\n");
        let e = Config::load_from(Some(f.path()), no_env()).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("server.hub"), "{text}");
        assert!(text.contains("mesage_buffer_cap"), "{text}");

        let f = yaml("server:\n  hub:\n    read_timeout: soon\n");
        let text = Config::load_from(Some(f.path()), no_env())
            .unwrap_err()
            .to_string();
        assert!(text.contains("server.hub.read_timeout"), "{text}");

        let f = yaml(
            "server:\n  hub:\n    message_buffer_cap: 0\nauth:\n  anonymous_permissions: [fly]\n",
        );
        let e = Config::load_from(Some(f.path()), no_env()).unwrap_err();
        assert!(
            e.problems
                .iter()
                .any(|p| p.starts_with("server.hub.message_buffer_cap:"))
        );
        assert!(
            e.problems
                .iter()
                .any(|p| p.starts_with("auth.anonymous_permissions:"))
        );
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn env_overrides_file() {
        let f = yaml("server:\n  addr: 127.0.0.1:1111\n  hub:\n    message_buffer_cap: 7\n");
        figment::Jail::expect_with(|jail| {
            jail.set_env("WSHUB_SERVER__ADDR", "127.0.0.1:2222");
            // Not ours: a Kubernetes service link and a script's variable.
            jail.set_env("WSHUB_PORT", "tcp://10.0.0.1:80");
            jail.set_env("WSHUB_BIN", "/usr/bin/wshub");
            let c = Config::load(Some(f.path())).map_err(|e| e.to_string())?;
            assert_eq!(c.server.addr, "127.0.0.1:2222");
            assert_eq!(c.server.hub.message_buffer_cap, 7);
            // A typo inside a section is still refused, by name.
            jail.set_env("WSHUB_SERVER__ADRR", "x");
            let err = Config::load(Some(f.path())).unwrap_err().to_string();
            assert!(err.contains("adrr"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn changed_keys_and_restart_classification() {
        let a = Config::default();
        let mut b = a.clone();
        b.server.hub.max_message_size = 10;
        b.server.addr = "127.0.0.1:1".into();
        b.cluster.nats.name = "x".into();
        let keys = changed_keys(&a, &b);
        assert_eq!(
            keys,
            vec![
                "cluster.nats.name",
                "server.addr",
                "server.hub.max_message_size"
            ]
        );
        assert!(needs_restart("server.addr"));
        assert!(needs_restart("cluster.nats.name"));
        assert!(!needs_restart("server.hub.max_message_size"));
    }

    #[test]
    fn masked_hides_secrets() {
        let mut c = Config::default();
        c.auth.secret_key = "s3cret".into();
        c.admin.api_key = "k".into();
        c.webhooks.secret = "w".into();
        let m = c.masked();
        assert_eq!(m["auth"]["secret_key"], "***");
        assert_eq!(m["admin"]["api_key"], "***");
        assert_eq!(m["webhooks"]["secret"], "***");
        assert_eq!(m["cluster"]["redis"]["password"], "");
        assert!(!m.to_string().contains("s3cret"));

        c.cluster.nats.urls = vec![
            "nats://u:s3cret@n1:4222".into(),
            "nats://n2:4222/x@y".into(),
        ];
        c.webhooks.url = "https://hook:s3cret@example.com/in?x=1".into();
        let m = c.masked();
        assert_eq!(m["cluster"]["nats"]["urls"][0], "nats://***@n1:4222");
        assert_eq!(m["cluster"]["nats"]["urls"][1], "nats://n2:4222/x@y");
        assert_eq!(m["webhooks"]["url"], "https://***@example.com/in?x=1");
        assert!(!m.to_string().contains("s3cret"));
    }
}

//! Everything one running node shares between its connections: the hub, the live config,
//! the handler registry and hooks, and the shutdown machinery.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Verifier;
use crate::config::{Config, ConfigError, changed_keys, needs_restart};
use crate::hub::Hub;
use crate::limits::RateLimit;
use crate::sdk::{CustomHandler, Hooks};

pub(crate) struct Node {
    pub(crate) hub: Hub,
    /// The bus to the other nodes; unset for a single node (`cluster.enabled: false`).
    pub(crate) cluster: OnceLock<crate::fanout::ClusterLink>,
    /// Rooms, memberships, client locations, live nodes (in memory for a single node).
    pub(crate) state: OnceLock<Arc<dyn crate::cluster::StateStore>>,
    /// Event webhooks and join authorization (started with the node).
    pub(crate) webhooks: OnceLock<crate::webhooks::Webhooks>,
    /// Sockets held per node and per IP, and connect rates (`limits.*`).
    pub(crate) admission: Arc<crate::limits::Admission>,
    /// Room history (`rooms.history.size > 0`).
    pub(crate) history: OnceLock<Arc<dyn crate::history::HistoryStore>>,
    pub(crate) started_at_ms: i64,
    config: RwLock<Arc<Config>>,
    verifier: RwLock<Arc<Verifier>>,
    pub(crate) custom_handlers: HashMap<String, CustomHandler>,
    pub(crate) hooks: Hooks,
    /// Cancelled when the node shuts down: the accept loop stops, connections close (1001).
    pub(crate) shutdown: CancellationToken,
    /// Cancelled when a graceful drain starts: `/health/ready` says 503 and new WebSocket
    /// upgrades are refused while the open connections are closed a few at a time.
    pub(crate) draining: CancellationToken,
    /// Every task the node spawns, so shutdown can wait for them.
    pub(crate) tasks: TaskTracker,
    pub(crate) started: Instant,
    next_conn_id: AtomicU64,
    /// Limits that open connections re-read on every frame, so a reload reaches them.
    pub(crate) limits: LiveLimits,
    /// Applies a new `log.level` (set by the binary, which owns the subscriber).
    pub(crate) log_level_reloader: Option<LogLevelReloader>,
}

pub(crate) type LogLevelReloader = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Limits that open connections apply to every frame or message, kept in atomics so the hot
/// path reads them without touching the config lock, and a reload still reaches them.
pub(crate) struct LiveLimits {
    pub(crate) max_message_size: AtomicUsize,
    read_timeout_ms: AtomicU64,
    write_timeout_ms: AtomicU64,
    write_batch_bytes: AtomicUsize,
    messages_per_second: AtomicU32,
    messages_burst: AtomicU32,
    rate_limit_strikes: AtomicU32,
    max_json_depth: AtomicUsize,
}

impl LiveLimits {
    fn new(config: &Config) -> Self {
        let l = LiveLimits {
            max_message_size: AtomicUsize::new(0),
            read_timeout_ms: AtomicU64::new(0),
            write_timeout_ms: AtomicU64::new(0),
            write_batch_bytes: AtomicUsize::new(0),
            messages_per_second: AtomicU32::new(0),
            messages_burst: AtomicU32::new(0),
            rate_limit_strikes: AtomicU32::new(0),
            max_json_depth: AtomicUsize::new(0),
        };
        l.set(config);
        l
    }

    fn set(&self, config: &Config) {
        let hub = &config.server.hub;
        let limits = &config.limits;
        let r = Ordering::Relaxed;
        self.max_message_size.store(hub.max_message_size, r);
        self.read_timeout_ms
            .store(hub.read_timeout.as_millis() as u64, r);
        self.write_timeout_ms
            .store(hub.write_timeout.as_millis() as u64, r);
        self.write_batch_bytes
            .store(hub.write_buffer_size.max(1024), r);
        self.messages_per_second
            .store(limits.messages_per_second, r);
        self.messages_burst.store(limits.messages_burst, r);
        self.rate_limit_strikes.store(limits.rate_limit_strikes, r);
        self.max_json_depth.store(limits.max_json_depth, r);
    }

    pub(crate) fn message_rate(&self) -> RateLimit {
        RateLimit {
            per_second: self.messages_per_second.load(Ordering::Relaxed),
            burst: self.messages_burst.load(Ordering::Relaxed),
            strikes: self.rate_limit_strikes.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn max_json_depth(&self) -> usize {
        self.max_json_depth.load(Ordering::Relaxed)
    }

    pub(crate) fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms.load(Ordering::Relaxed))
    }

    /// Most bytes gathered into one write (`server.hub.write_buffer_size`, at least 1 KiB).
    pub(crate) fn write_batch_bytes(&self) -> usize {
        self.write_batch_bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn read_timeout(&self) -> Duration {
        Duration::from_millis(self.read_timeout_ms.load(Ordering::Relaxed))
    }
}

/// What a reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Changed keys now in effect.
    pub applied: Vec<String>,
    /// Changed keys that keep their old value until a restart.
    pub needs_restart: Vec<String>,
}

impl Node {
    pub(crate) fn new(
        hub: Hub,
        verifier: Verifier,
        config: Config,
        custom_handlers: HashMap<String, CustomHandler>,
        hooks: Hooks,
    ) -> Self {
        Node {
            hub,
            cluster: OnceLock::new(),
            state: OnceLock::new(),
            history: OnceLock::new(),
            webhooks: OnceLock::new(),
            admission: Arc::default(),
            started_at_ms: crate::cluster::now_ms(),
            limits: LiveLimits::new(&config),
            log_level_reloader: None,
            config: RwLock::new(Arc::new(config)),
            verifier: RwLock::new(Arc::new(verifier)),
            custom_handlers,
            hooks,
            shutdown: CancellationToken::new(),
            draining: CancellationToken::new(),
            tasks: TaskTracker::new(),
            started: Instant::now(),
            next_conn_id: AtomicU64::new(1),
        }
    }

    /// The current configuration (read once per use; a reload swaps it whole).
    pub(crate) fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// The token verifier for the current `auth.*` keys.
    pub(crate) fn verifier(&self) -> Arc<Verifier> {
        self.verifier
            .read()
            .map(|v| v.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Queues a webhook event if the backend subscribed to `kind` (built only then).
    pub(crate) fn webhook(
        &self,
        kind: crate::webhooks::EventKind,
        client_id: &str,
        build: impl FnOnce(crate::webhooks::Event) -> crate::webhooks::Event,
    ) {
        if let Some(w) = self.webhooks.get().filter(|w| w.wants(kind)) {
            w.emit(build(crate::webhooks::Event::new(kind, client_id)));
        }
    }

    pub(crate) fn next_conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }
}

impl Node {
    /// Applies a validated configuration: live keys take effect now (open connections
    /// included, for `read_timeout` and `max_message_size`); restart keys keep their running
    /// value and are reported.
    ///
    /// Key files (`auth.public_key_file`, `auth.jwks_file`) are read again; if they fail to
    /// load, nothing is applied.
    pub(crate) fn reload(&self, mut new: Config) -> Result<ReloadReport, ConfigError> {
        let verifier =
            Verifier::from_config(&new.auth).map_err(|e| ConfigError { problems: vec![e] })?;
        let old = self.config();
        let changed = changed_keys(&old, &new);
        let (restart, live): (Vec<String>, Vec<String>) =
            changed.into_iter().partition(|k| needs_restart(k));
        // Keep the running values of restart-only sections, so what `config()` reports is
        // what is actually in effect.
        new.server.addr = old.server.addr.clone();
        new.server.static_dir = old.server.static_dir.clone();
        new.cluster = old.cluster.clone();
        new.log.format = old.log.format;
        new.tracing = old.tracing.clone();
        new.webhooks = old.webhooks.clone();
        new.metrics = old.metrics.clone();
        new.admin.max_body_size = old.admin.max_body_size;
        new.version = old.version.clone();
        if let (true, Some(reload)) = (
            live.iter().any(|k| k == "log.level"),
            &self.log_level_reloader,
        ) && let Err(e) = reload(&new.log.level)
        {
            tracing::warn!(error = %e, "log.level could not be applied");
        }
        self.limits.set(&new);
        if let Ok(mut v) = self.verifier.write() {
            *v = Arc::new(verifier);
        }
        if let Ok(mut c) = self.config.write() {
            *c = Arc::new(new);
        }
        self.hub.metrics.config_reloads.inc();
        Ok(ReloadReport {
            applied: live,
            needs_restart: restart,
        })
    }
}

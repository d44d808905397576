//! Everything one running node shares between its connections: the hub, the live config,
//! the handler registry and hooks, and the shutdown machinery.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::hub::Hub;
use crate::sdk::{CustomHandler, Hooks};

pub(crate) struct Node {
    pub(crate) hub: Hub,
    config: RwLock<Arc<Config>>,
    pub(crate) custom_handlers: HashMap<String, CustomHandler>,
    pub(crate) hooks: Hooks,
    /// Cancelled when the node shuts down: the accept loop stops, connections close (1001).
    pub(crate) shutdown: CancellationToken,
    /// Every task the node spawns, so shutdown can wait for them.
    pub(crate) tasks: TaskTracker,
    pub(crate) started: Instant,
    next_conn_id: AtomicU64,
}

impl Node {
    pub(crate) fn new(
        hub: Hub,
        config: Config,
        custom_handlers: HashMap<String, CustomHandler>,
        hooks: Hooks,
    ) -> Self {
        Node {
            hub,
            config: RwLock::new(Arc::new(config)),
            custom_handlers,
            hooks,
            shutdown: CancellationToken::new(),
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

    pub(crate) fn next_conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }
}

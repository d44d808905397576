//! Hot reload: watch the config file (and SIGHUP) and apply what can change live.
//!
//! The file's directory is watched rather than the file, because editors and config-map
//! updates replace the file (rename over it) instead of writing in place. Events are
//! debounced, the whole configuration is loaded and validated again (file + environment),
//! and only a valid one is applied: a broken file is logged and the running config stays.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::node::Node;

/// Quiet period after a file event before reloading (editors write in several steps).
const DEBOUNCE: Duration = Duration::from_millis(150);

/// Starts watching `path`; reloads on change and on SIGHUP until the node shuts down.
pub(crate) fn watch(node: Arc<Node>, path: PathBuf) -> notify::Result<()> {
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let file_name = path.file_name().map(|n| n.to_owned());
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(event) = res {
            // The file itself, or Kubernetes' `..data` symlink: a mounted ConfigMap is
            // updated by swapping that link, and the file (a link through it) sees no event.
            let ours = event.paths.iter().any(|p| {
                let name = p.file_name().map(|n| n.to_owned());
                name == file_name || name.as_deref() == Some(std::ffi::OsStr::new("..data"))
            });
            if ours && !event.kind.is_access() {
                let _ = tx.try_send(());
            }
        }
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    let task_node = node.clone();
    node.tasks.spawn(async move {
        let node = task_node;
        // Dropping the watcher stops it, so the task owns it.
        let _watcher = watcher;
        let mut hangup = hangup_signal();
        loop {
            tokio::select! {
                _ = node.shutdown.cancelled() => break,
                Some(()) = rx.recv() => {
                    tokio::time::sleep(DEBOUNCE).await;
                    while rx.try_recv().is_ok() {}
                    reload_file(&node, &path, "file changed");
                }
                Some(()) = recv_hangup(&mut hangup) => reload_file(&node, &path, "SIGHUP"),
            }
        }
    });
    Ok(())
}

/// Loads and applies `path`; logs the outcome once.
pub(crate) fn reload_file(node: &Node, path: &Path, why: &str) {
    match Config::load(Some(path)).and_then(|config| node.reload(config)) {
        Ok(report) => {
            tracing::info!(trigger = why, applied = ?report.applied, "configuration reloaded");
            if !report.needs_restart.is_empty() {
                tracing::warn!(
                    keys = ?report.needs_restart,
                    "changed keys need a restart to take effect; they keep their running values"
                );
            }
        }
        Err(e) => {
            node.hub.metrics.config_reload_failures.inc();
            tracing::error!(trigger = why, error = %e, "configuration reload rejected; the running configuration stays");
        }
    }
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = Option<()>;

#[cfg(unix)]
fn hangup_signal() -> Hangup {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}

#[cfg(not(unix))]
fn hangup_signal() -> Hangup {
    None
}

#[cfg(unix)]
async fn recv_hangup(h: &mut Hangup) -> Option<()> {
    match h {
        Some(sig) => sig.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn recv_hangup(_: &mut Hangup) -> Option<()> {
    std::future::pending().await
}

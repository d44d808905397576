//! Real `wshub` processes and a durable Redis, for tests that crash, pause and restart them
//! (the chaos test). A node keeps its port and config across restarts, so clients that know
//! its URL find it again; its output (the log) goes to a file that outlives the process.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("local addr")
        .port()
}

fn wait_listening(port: u16, what: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} not listening on {port} after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_closed(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "{what} still accepting on {port} after being killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `sig` (`-KILL`, `-STOP`, `-CONT`, ...) to a process.
pub fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("running kill");
    assert!(status.success(), "kill {sig} {} failed", child.id());
}

/// One `wshub serve` process with its own config file, port and log file.
pub struct NodeProc {
    pub node_id: String,
    pub port: u16,
    child: Option<Child>,
    config: PathBuf,
    log: PathBuf,
    starts: u32,
}

impl NodeProc {
    /// Writes `server.addr` plus `yaml` to `dir/<node_id>.yaml` and starts the node; its
    /// output (the log) goes to `dir/<node_id>.log`, appended to across restarts.
    pub fn start(dir: &Path, node_id: &str, yaml: &str) -> NodeProc {
        let port = free_port();
        let config = dir.join(format!("{node_id}.yaml"));
        std::fs::write(
            &config,
            format!("server:\n  addr: 127.0.0.1:{port}\n{yaml}"),
        )
        .expect("writing the node config");
        let log = dir.join(format!("{node_id}.log"));
        let _ = std::fs::remove_file(&log);
        let mut node = NodeProc {
            node_id: node_id.to_owned(),
            port,
            child: None,
            config,
            log,
            starts: 0,
        };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("opening the node log");
        let child = Command::new(env!("CARGO_BIN_EXE_wshub"))
            .args(["serve", "--config"])
            .arg(&self.config)
            .env_remove("RUST_LOG")
            .stdout(log.try_clone().expect("log file handle"))
            .stderr(log)
            .spawn()
            .expect("starting wshub");
        self.child = Some(child);
        self.starts += 1;
        wait_listening(self.port, &self.node_id, Duration::from_secs(20));
    }

    pub fn ws_url(&self, client_id: &str) -> String {
        format!("ws://127.0.0.1:{}/ws?client_id={client_id}", self.port)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    fn child(&self) -> &Child {
        self.child
            .as_ref()
            .unwrap_or_else(|| panic!("{} is not running", self.node_id))
    }

    /// `kill -9`, as a crash would; returns once the port is closed.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, "-KILL");
            let _ = child.wait();
        }
        wait_closed(self.port, &self.node_id);
    }

    /// Starts the node again on the same port with the same config (a fresh boot).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "{} is still running", self.node_id);
        self.spawn();
    }

    /// SIGSTOP: the process freezes with its sockets open (a stall, or a partition).
    pub fn pause(&self) {
        signal(self.child(), "-STOP");
    }

    pub fn resume(&self) {
        signal(self.child(), "-CONT");
    }

    /// Waits until `/health` reports the bus connected.
    pub async fn wait_bus_connected(&self, limit: Duration) {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("http client");
        let deadline = tokio::time::Instant::now() + limit;
        let mut last = String::new();
        loop {
            if let Ok(r) = client.get(self.http_url("/health")).send().await
                && let Ok(health) = r.json::<serde_json::Value>().await
            {
                if health["bus"]["state"] == "connected" {
                    return;
                }
                last = health.to_string();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}: bus not connected within {limit:?} (last /health: {last}); log: {}",
                self.node_id,
                self.log.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Node ids `/api/nodes` lists as alive.
    pub async fn live_nodes(&self) -> Option<Vec<String>> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .ok()?;
        let v: serde_json::Value = client
            .get(self.http_url("/api/nodes"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        Some(
            v["nodes"]
                .as_array()?
                .iter()
                .filter_map(|n| n["node_id"].as_str().map(str::to_owned))
                .collect(),
        )
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A stopped process must be continued to die promptly on some systems.
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A Redis that keeps what it acknowledged across `kill -9`: append-only file, fsynced on
/// every write (`appendfsync always`). The history in Redis Streams survives a broker
/// restart only with persistence; `brokers::Broker::redis()` runs without any.
pub struct DurableRedis {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl DurableRedis {
    pub fn start() -> DurableRedis {
        let mut r = DurableRedis {
            port: free_port(),
            child: None,
            dir: tempfile::tempdir().expect("tempdir"),
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let binary = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
            .into_iter()
            .find(|p| Path::new(p).is_file())
            .unwrap_or("redis-server");
        let child = Command::new(binary)
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
            ])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server: run scripts/test.sh, which installs it");
        self.child = Some(child);
        wait_listening(self.port, "redis", Duration::from_secs(15));
    }

    pub fn url(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGKILL, as a crash would; returns once the port is closed.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, "-KILL");
            let _ = child.wait();
        }
        wait_closed(self.port, "redis");
    }

    /// A new process on the same port and data directory (killing the running one first).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for DurableRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

//! Brokers started by the tests themselves, on free ports, so a test can kill and restart
//! them. A missing binary fails the test with a pointer to `scripts/test.sh` (which installs
//! them); it never skips silently.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    Nats,
    Redis,
}

pub struct Broker {
    pub kind: BrokerKind,
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// NATS only: start with JetStream (`-js`); takes effect at the next (re)start.
    pub jetstream: bool,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn find(binary: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':').chain([
        "/usr/sbin",
        "/usr/bin",
        "/usr/local/bin",
    ]) {
        let p = PathBuf::from(dir).join(binary);
        if p.is_file() {
            return p;
        }
    }
    panic!("{binary} not found: run scripts/test.sh, which installs it (apt-get install {binary})");
}

impl Broker {
    pub fn nats() -> Broker {
        Broker::start(BrokerKind::Nats)
    }

    /// A NATS server without JetStream: the misconfiguration a node must report.
    pub fn nats_without_jetstream() -> Broker {
        let mut b = Broker::new(BrokerKind::Nats);
        b.jetstream = false;
        b.spawn();
        b
    }

    pub fn redis() -> Broker {
        Broker::start(BrokerKind::Redis)
    }

    fn start(kind: BrokerKind) -> Broker {
        let mut b = Broker::new(kind);
        b.spawn();
        b
    }

    fn new(kind: BrokerKind) -> Broker {
        Broker {
            kind,
            port: free_port(),
            child: None,
            dir: tempfile::tempdir().unwrap(),
            jetstream: true,
        }
    }

    fn spawn(&mut self) {
        let port = self.port.to_string();
        let dir = self.dir.path().to_string_lossy().into_owned();
        let mut cmd = match self.kind {
            BrokerKind::Nats => {
                let mut c = Command::new(find("nats-server"));
                c.args(["-a", "127.0.0.1", "-p", &port]);
                if self.jetstream {
                    c.args(["-js", "-sd", &dir]);
                }
                c
            }
            BrokerKind::Redis => {
                let mut c = Command::new(find("redis-server"));
                c.args([
                    "--port",
                    &port,
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    &dir,
                ]);
                c
            }
        };
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the broker");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "{:?} did not start on {}",
                self.kind,
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `nats://127.0.0.1:port` or `127.0.0.1:port`.
    pub fn url(&self) -> String {
        match self.kind {
            BrokerKind::Nats => format!("nats://127.0.0.1:{}", self.port),
            BrokerKind::Redis => format!("127.0.0.1:{}", self.port),
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(
                Instant::now() < deadline,
                "broker still accepting after kill"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts again on the same port with the same data directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

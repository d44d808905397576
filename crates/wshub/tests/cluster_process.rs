//! The real binary clusters: two `wshub serve` processes, one config file each, a client on
//! each, over a harness NATS and over a harness Redis.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::WAIT;
use common::brokers::Broker;
use serde_json::json;
use wshub_client::Client;

struct Node {
    child: Child,
    port: u16,
    _config: tempfile::NamedTempFile,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(config: &str) -> Node {
    use std::io::Write;
    let port = free_port();
    let mut file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    write!(file, "server:\n  addr: 127.0.0.1:{port}\n{config}").unwrap();
    let child = Command::new(assert_cmd::cargo::cargo_bin("wshub"))
        .args(["serve", "--config"])
        .arg(file.path())
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let node = Node {
        child,
        port,
        _config: file,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "wshub did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    node
}

async fn wait_bus_connected(port: u16) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let health: serde_json::Value = reqwest::get(format!("http://127.0.0.1:{port}/health"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if health["bus"]["state"] == "connected" {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "bus not connected: {health}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn two_processes(cluster_yaml: impl Fn(&str) -> String) {
    let one = spawn(&cluster_yaml("proc-1"));
    let two = spawn(&cluster_yaml("proc-2"));
    wait_bus_connected(one.port).await;
    wait_bus_connected(two.port).await;
    let alice = Client::connect(&format!("ws://127.0.0.1:{}/ws?client_id=alice", one.port))
        .await
        .unwrap();
    let mut bob = Client::connect(&format!("ws://127.0.0.1:{}/ws?client_id=bob", two.port))
        .await
        .unwrap();
    assert_eq!((alice.node_id(), bob.node_id()), ("proc-1", "proc-2"));
    alice.join_room("across").await.unwrap();
    bob.join_room("across").await.unwrap();
    alice
        .room_message("across", json!("hello from 1"))
        .await
        .unwrap();
    let m = bob.expect("room_message", WAIT).await.unwrap();
    assert_eq!(
        (m.data["content"].clone(), m.data["sender_id"].clone()),
        (json!("hello from 1"), json!("alice"))
    );
    alice.direct_message("bob", json!("dm")).await.unwrap();
    assert_eq!(
        bob.expect("direct_message", WAIT).await.unwrap().data["content"],
        "dm"
    );
}

#[tokio::test]
async fn two_binaries_cluster_over_nats() {
    let nats = Broker::nats();
    let url = nats.url();
    two_processes(|node| {
        format!("cluster:\n  enabled: true\n  bus_type: nats\n  node_id: {node}\n  nats:\n    urls: [\"{url}\"]\n    use_jetstream: true\n")
    })
    .await;
}

#[tokio::test]
async fn two_binaries_cluster_over_redis() {
    let redis = Broker::redis();
    let url = redis.url();
    two_processes(|node| {
        format!("cluster:\n  enabled: true\n  bus_type: redis\n  node_id: {node}\n  redis:\n    addrs: [\"{url}\"]\n")
    })
    .await;
}

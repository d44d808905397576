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

fn signal(node: &Node, sig: &str) {
    let pid = node.child.id().to_string();
    assert!(
        Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success()
    );
}

async fn members(port: u16, room: &str) -> Vec<String> {
    let v: serde_json::Value =
        reqwest::get(format!("http://127.0.0.1:{port}/api/rooms/{room}/members"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    v["members"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|x| x["client_id"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

async fn live_nodes(port: u16) -> Vec<String> {
    let v: serde_json::Value = reqwest::get(format!("http://127.0.0.1:{port}/api/nodes"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node_id"].as_str().unwrap().to_owned())
        .collect()
}

async fn until(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

/// Kill -9 a node: the survivors drop its clients within node_ttl + a heartbeat and announce
/// them gone. Then pause another node past the TTL (a partition): it is dropped too, and
/// when it resumes it puts its clients back.
async fn node_failure(cluster_yaml: impl Fn(&str) -> String) {
    let a = spawn(&cluster_yaml("fail-a"));
    let b = spawn(&cluster_yaml("fail-b"));
    let c = spawn(&cluster_yaml("fail-c"));
    for n in [&a, &b, &c] {
        wait_bus_connected(n.port).await;
    }
    let connect = |port: u16, id: &str| {
        let url = format!("ws://127.0.0.1:{port}/ws?client_id={id}");
        async move { Client::connect(&url).await.unwrap() }
    };
    let mut a1 = connect(a.port, "a1").await;
    let b1 = connect(b.port, "b1").await;
    let c1 = connect(c.port, "c1").await;
    for cl in [&a1, &b1, &c1] {
        cl.join_room("p").await.unwrap();
    }
    assert_eq!(members(a.port, "p").await, vec!["a1", "b1", "c1"]);
    until("three nodes listed", WAIT, async || {
        live_nodes(a.port).await.len() == 3
    })
    .await;
    while a1
        .expect("presence_join", Duration::from_millis(200))
        .await
        .is_ok()
    {}

    // node_ttl 1 s, heartbeat 200 ms: cleanup is due within ~1.2 s of the kill (allow load).
    signal(&c, "-KILL");
    let took = until(
        "c1 removed after kill -9",
        Duration::from_secs(5),
        async || members(a.port, "p").await == vec!["a1", "b1"],
    )
    .await;
    let left = a1.expect("presence_leave", WAIT).await.unwrap();
    assert_eq!(left.data["client_id"], "c1");
    assert!(!live_nodes(a.port).await.contains(&"fail-c".to_owned()));
    eprintln!("dead node cleaned up {} ms after kill -9", took.as_millis());

    // Partition: B stops (SIGSTOP) past its TTL, then comes back.
    signal(&b, "-STOP");
    until(
        "b1 removed while B is paused",
        Duration::from_secs(5),
        async || members(a.port, "p").await == vec!["a1"],
    )
    .await;
    assert_eq!(
        a1.expect("presence_leave", WAIT).await.unwrap().data["client_id"],
        "b1"
    );
    signal(&b, "-CONT");
    until(
        "b1 restored after B resumes",
        Duration::from_secs(10),
        async || members(a.port, "p").await == vec!["a1", "b1"],
    )
    .await;
    until("B listed again", Duration::from_secs(5), async || {
        live_nodes(a.port).await.contains(&"fail-b".to_owned())
    })
    .await;
    // And it works end to end again: a message from A reaches b1 on B.
    a1.room_message("p", json!("after the partition"))
        .await
        .unwrap();
    let mut b1 = b1;
    loop {
        let m = b1.expect("room_message", WAIT).await.unwrap();
        if m.data["content"] == "after the partition" {
            break;
        }
    }
    drop(c1);
}

#[tokio::test]
async fn node_failure_and_partition_over_nats() {
    let nats = Broker::nats();
    let url = nats.url();
    node_failure(|node| {
        format!("rooms:\n  presence_events: true\ncluster:\n  enabled: true\n  bus_type: nats\n  node_id: {node}\n  heartbeat_interval: 200ms\n  node_ttl: 1s\n  nats:\n    urls: [\"{url}\"]\n")
    })
    .await;
}

#[tokio::test]
async fn node_failure_and_partition_over_redis() {
    let redis = Broker::redis();
    let url = redis.url();
    node_failure(|node| {
        format!("rooms:\n  presence_events: true\ncluster:\n  enabled: true\n  bus_type: redis\n  node_id: {node}\n  heartbeat_interval: 200ms\n  node_ttl: 1s\n  redis:\n    addrs: [\"{url}\"]\n")
    })
    .await;
}

/// The node a resuming client is on dies (`kill -9`) while a publisher on another node keeps
/// publishing: the client reconnects to the survivor, recovers from the shared history
/// (Redis Streams or JetStream), and the application sees every publication exactly once, in
/// order.
async fn resuming_client_survives_its_node_being_killed(yaml: impl Fn(&str) -> String) {
    use wshub_client::{Event, ResumeOptions, ResumingClient};
    let n1 = spawn(&yaml("resume-1"));
    let n2 = spawn(&yaml("resume-2"));
    wait_bus_connected(n1.port).await;
    wait_bus_connected(n2.port).await;

    let publisher = Client::connect(&format!("ws://127.0.0.1:{}/ws?client_id=pub", n2.port))
        .await
        .unwrap();
    publisher.join_room("stream").await.unwrap();
    let urls = vec![
        format!("ws://127.0.0.1:{}/ws?client_id=app", n1.port),
        format!("ws://127.0.0.1:{}/ws?client_id=app", n2.port),
    ];
    let mut app = ResumingClient::connect(urls, ResumeOptions::default())
        .await
        .unwrap();
    assert_eq!(app.node_id().await, "resume-1");
    app.join_room("stream").await.unwrap();

    const N: u64 = 1500;
    let pump = tokio::spawn(async move {
        for i in 0..N {
            publisher
                .room_message("stream", json!({ "i": i }))
                .await
                .unwrap();
            if i % 10 == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        publisher.ping().await.unwrap();
    });

    let mut seen: Vec<u64> = Vec::new();
    let mut recovered = 0;
    let mut n1 = Some(n1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while (seen.len() as u64) < N {
        let event = tokio::time::timeout_at(deadline, app.next_event())
            .await
            .expect("all publications within a minute")
            .expect("event stream ended");
        match event {
            Event::Message(m) if m.message_type == "room_message" => {
                seen.push(m.data["content"]["i"].as_u64().unwrap());
                if seen.len() == 300
                    && let Some(node) = n1.take()
                {
                    signal(&node, "-KILL");
                    drop(node);
                }
            }
            Event::Message(m) if m.message_type == "room_joined" => {
                assert_eq!(m.data["recovered"], true, "{m:?}");
                recovered += 1;
            }
            Event::Message(_) => {}
            Event::Closed(c) => panic!("gave up: {c:?}"),
        }
    }
    pump.await.unwrap();
    assert_eq!(
        seen,
        (0..N).collect::<Vec<u64>>(),
        "every publication exactly once, in order"
    );
    assert_eq!(recovered, 1, "one reconnect, recovered");
    assert_eq!(app.node_id().await, "resume-2");
}

#[tokio::test]
async fn resuming_client_survives_its_node_being_killed_redis() {
    let redis = Broker::redis();
    let url = redis.url();
    resuming_client_survives_its_node_being_killed(|node| {
        format!("rooms:\n  history:\n    size: 100000\ncluster:\n  enabled: true\n  bus_type: redis\n  node_id: {node}\n  heartbeat_interval: 200ms\n  node_ttl: 1s\n  redis:\n    addrs: [\"{url}\"]\n")
    })
    .await;
}

#[tokio::test]
async fn resuming_client_survives_its_node_being_killed_jetstream() {
    let nats = Broker::nats();
    let url = nats.url();
    resuming_client_survives_its_node_being_killed(|node| {
        format!("rooms:\n  history:\n    size: 100000\ncluster:\n  enabled: true\n  bus_type: nats\n  node_id: {node}\n  heartbeat_interval: 200ms\n  node_ttl: 1s\n  nats:\n    urls: [\"{url}\"]\n")
    })
    .await;
}

/// A span as the in-test OTLP collector received it.
#[derive(Debug, Clone)]
struct SpanRec {
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    attributes: std::collections::HashMap<String, String>,
}

/// A minimal OTLP/HTTP collector: decodes `POST /v1/traces` (protobuf) into [`SpanRec`]s.
async fn otlp_collector() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<SpanRec>>>) {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use prost::Message;

    let spans = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let sink = sink.clone();
            async move {
                let Ok(req) = ExportTraceServiceRequest::decode(body) else {
                    return axum::http::StatusCode::BAD_REQUEST;
                };
                let mut got = sink.lock().unwrap();
                for span in req
                    .resource_spans
                    .into_iter()
                    .flat_map(|r| r.scope_spans)
                    .flat_map(|s| s.spans)
                {
                    let attributes = span
                        .attributes
                        .iter()
                        .map(|kv| {
                            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                                Some(Value::StringValue(s)) => s.clone(),
                                Some(Value::IntValue(i)) => i.to_string(),
                                other => format!("{other:?}"),
                            };
                            (kv.key.clone(), v)
                        })
                        .collect();
                    got.push(SpanRec {
                        name: span.name,
                        trace_id: span.trace_id,
                        span_id: span.span_id,
                        parent_span_id: span.parent_span_id,
                        attributes,
                    });
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, spans)
}

/// One trace covers client -> node A -> bus -> node B -> recipient: the spans each process
/// exports link up through the traceparent carried in the bus message.
#[tokio::test]
async fn one_trace_spans_both_nodes_over_the_bus() {
    let nats = Broker::nats();
    let url = nats.url();
    let (collector, spans) = otlp_collector().await;
    let yaml = |node: &str| {
        format!(
            "cluster:\n  enabled: true\n  bus_type: nats\n  node_id: {node}\n  nats:\n    urls: [\"{url}\"]\n\
             tracing:\n  otlp_endpoint: http://127.0.0.1:{collector}\n  sample_ratio: 1.0\n  export_interval: 100ms\n"
        )
    };
    let a = spawn(&yaml("trace-a"));
    let b = spawn(&yaml("trace-b"));
    wait_bus_connected(a.port).await;
    wait_bus_connected(b.port).await;
    let alice = Client::connect(&format!("ws://127.0.0.1:{}/ws?client_id=alice", a.port))
        .await
        .unwrap();
    let mut bob = Client::connect(&format!("ws://127.0.0.1:{}/ws?client_id=bob", b.port))
        .await
        .unwrap();
    alice.join_room("traced").await.unwrap();
    bob.join_room("traced").await.unwrap();
    alice.room_message("traced", json!("hi")).await.unwrap();
    bob.expect("room_message", WAIT).await.unwrap();

    // Wait for node B's receive span, then find its whole trace.
    let deadline = Instant::now() + Duration::from_secs(20);
    let trace = loop {
        let got = spans.lock().unwrap().clone();
        let receive = got.iter().find(|s| {
            s.name == "bus.receive" && s.attributes.get("room_id").is_some_and(|r| r == "traced")
        });
        if let Some(receive) = receive {
            let trace: Vec<SpanRec> = got
                .iter()
                .filter(|s| s.trace_id == receive.trace_id)
                .cloned()
                .collect();
            // Both nodes export on their own schedule: wait for all five.
            if trace.len() >= 5 {
                break trace;
            }
        }
        assert!(
            Instant::now() < deadline,
            "trace incomplete; spans so far: {got:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let one = |name: &str, node: &str| {
        let found: Vec<&SpanRec> = trace
            .iter()
            .filter(|s| s.name == name && s.attributes.get("node_id").is_none_or(|n| n == node))
            .collect();
        assert!(!found.is_empty(), "no {name} on {node} in {trace:#?}");
        found[0].clone()
    };
    let message = one("ws.message", "trace-a");
    assert_eq!(message.attributes["node_id"], "trace-a");
    assert_eq!(message.attributes["message_type"], "room_message");
    assert_eq!(message.attributes["client_id"], "alice");
    assert!(
        message.parent_span_id.is_empty(),
        "ws.message starts the trace"
    );
    let publish = one("bus.publish", "trace-a");
    assert_eq!(publish.parent_span_id, message.span_id);
    let receive = one("bus.receive", "trace-b");
    assert_eq!(receive.attributes["node_id"], "trace-b");
    assert_eq!(
        receive.parent_span_id, publish.span_id,
        "B continues A's span across the bus"
    );
    let delivered_b = trace
        .iter()
        .find(|s| s.name == "deliver" && s.parent_span_id == receive.span_id)
        .unwrap_or_else(|| panic!("no deliver under bus.receive in {trace:#?}"));
    assert_eq!(delivered_b.attributes["node_id"], "trace-b");
    assert_eq!(delivered_b.attributes["recipients"], "1");
    let delivered_a = trace
        .iter()
        .find(|s| s.name == "deliver" && s.parent_span_id == message.span_id)
        .unwrap_or_else(|| panic!("no local deliver under ws.message in {trace:#?}"));
    assert_eq!(delivered_a.attributes["node_id"], "trace-a");
}

/// SIGTERM drains: readiness turns 503 and new upgrades are refused at once, open
/// connections get 1001 with a reconnect hint spread over `drain_period`, the process exits
/// 0 and leaves the cluster registry; the other node keeps serving.
#[tokio::test]
async fn sigterm_drains_gracefully() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;

    let nats = Broker::nats();
    let url = nats.url();
    let yaml = |node: &str| {
        format!(
            "cluster:\n  enabled: true\n  bus_type: nats\n  node_id: {node}\n  nats:\n    urls: [\"{url}\"]\n\
             shutdown:\n  drain_period: 2s\n  timeout: 10s\n"
        )
    };
    let mut a = spawn(&yaml("drain-a"));
    let b = spawn(&yaml("drain-b"));
    wait_bus_connected(a.port).await;
    wait_bus_connected(b.port).await;
    until("both nodes listed", WAIT, async || {
        live_nodes(b.port).await.len() == 2
    })
    .await;

    // 20 clients on A, each recording when and how it was closed.
    let mut closes = Vec::new();
    for i in 0..20 {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!(
            "ws://127.0.0.1:{}/ws?client_id=d{i}",
            a.port
        ))
        .await
        .unwrap();
        closes.push(tokio::spawn(async move {
            while let Some(msg) = ws.next().await {
                if let Ok(Message::Close(frame)) = msg {
                    let frame = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
                    return (Instant::now(), frame);
                }
            }
            (Instant::now(), None)
        }));
    }
    let ready = |port: u16| async move {
        reqwest::get(format!("http://127.0.0.1:{port}/health/ready"))
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    assert_eq!(ready(a.port).await, 200);

    let signalled = Instant::now();
    let pid = a.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    until("A reports not ready", WAIT, async || {
        ready(a.port).await == 503
    })
    .await;
    let refused = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/ws", a.port)).await;
    assert!(
        matches!(&refused, Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 503),
        "a new upgrade during the drain must be refused with 503: {refused:?}"
    );

    let mut times = Vec::new();
    for c in closes {
        let (at, frame) = c.await.unwrap();
        let (code, reason) = frame.expect("a close frame, not a dropped socket");
        assert_eq!(code, 1001);
        assert!(reason.contains("reconnect"), "{reason}");
        times.push(at.duration_since(signalled));
    }
    times.sort();
    // Spread over the 2 s drain period rather than all at once.
    let spread = times[times.len() - 1] - times[0];
    assert!(
        spread >= Duration::from_millis(1000),
        "closes not spread: {times:?}"
    );

    let status = tokio::task::spawn_blocking(move || a.child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "exit status {status}");
    // Left the registry on the way out (not by TTL expiry: node_ttl is 30 s by default).
    until("B no longer lists A", Duration::from_secs(5), async || {
        live_nodes(b.port).await == vec!["drain-b".to_owned()]
    })
    .await;
    assert_eq!(ready(b.port).await, 200);
}

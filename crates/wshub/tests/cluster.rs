//! Three nodes joined by a bus: local (in-process), NATS, NATS + JetStream, Redis. One test
//! body per behaviour, run against every backend; brokers are started by the test.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::cluster::{Backend, Cluster, metric, wait_connected};
use common::{TestServer, WAIT, eventually};
use serde_json::json;
use wshub_client::Client;

/// No second copy arrives.
async fn no_more(client: &mut Client, message_type: &str) {
    assert!(
        client
            .expect(message_type, Duration::from_millis(300))
            .await
            .is_err(),
        "{} got a duplicate {message_type}",
        client.client_id()
    );
}

async fn delivery_across_nodes(backend: Backend) {
    let cluster = Cluster::new(backend);
    let [a, b, c] = cluster.nodes().await;
    wait_connected(&[&a, &b, &c]).await;
    let mut a1 = a.client("a1").await;
    let mut b1 = b.client("b1").await;
    let mut c1 = c.client("c1").await;
    let mut b2 = b.client("b2").await; // in no room
    for cl in [&a1, &b1, &c1] {
        cl.join_room("lobby").await.unwrap();
    }

    // Room message from A reaches B and C exactly once, not the sender.
    a1.room_message("lobby", json!({"n": 1})).await.unwrap();
    for cl in [&mut b1, &mut c1] {
        let m = cl.expect("room_message", WAIT).await.unwrap();
        assert_eq!(m.data["content"], json!({"n": 1}));
        assert_eq!(m.data["sender_id"], "a1");
        assert_eq!(m.data["room_id"], "lobby");
    }
    no_more(&mut b1, "room_message").await;
    no_more(&mut c1, "room_message").await;
    no_more(&mut a1, "room_message").await;
    no_more(&mut b2, "room_message").await;

    // Direct message A -> C.
    a1.direct_message("c1", json!("psst")).await.unwrap();
    let dm = c1.expect("direct_message", WAIT).await.unwrap();
    assert_eq!(
        (dm.data["content"].clone(), dm.data["sender_id"].clone()),
        (json!("psst"), json!("a1"))
    );
    no_more(&mut c1, "direct_message").await;

    // Broadcast from B's HTTP API reaches everyone on every node.
    let res = reqwest::Client::new()
        .post(b.http_url("/api/broadcast"))
        .json(&json!({"message": "all hands"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    for cl in [&mut a1, &mut b1, &mut c1, &mut b2] {
        let m = cl.expect("broadcast", WAIT).await.unwrap();
        assert_eq!(m.data["content"], "all hands");
        assert_eq!(m.data["sender_id"], "server");
    }

    // A room message through B's API reaches members on A and C (and B's member).
    let res = reqwest::Client::new()
        .post(b.http_url("/api/broadcast/room"))
        .json(&json!({"room_id": "lobby", "message": "from api"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    for cl in [&mut a1, &mut b1, &mut c1] {
        assert_eq!(
            cl.expect("room_message", WAIT).await.unwrap().data["content"],
            "from api"
        );
    }

    // Interest: a node subscribes to a room's subject only while it has members.
    let subject_of = |n: &TestServer| n.running.handle().bus_subscriptions();
    let has_lobby = |subs: Vec<String>| subs.iter().any(|s| s.ends_with("room.lobby"));
    assert!(has_lobby(subject_of(&c)));
    c1.leave_room("lobby").await.unwrap();
    assert!(
        !has_lobby(subject_of(&c)),
        "C left its last lobby member: {:?}",
        subject_of(&c)
    );
    assert!(has_lobby(subject_of(&a)));
    let c_received = metric(&c, "wshub_bus_received_total").await;
    let b_received = metric(&b, "wshub_bus_received_total").await;
    a1.room_message("lobby", json!({"n": 2})).await.unwrap();
    assert_eq!(
        b1.expect("room_message", WAIT).await.unwrap().data["content"]["n"],
        2
    );
    no_more(&mut c1, "room_message").await;
    // C, with no member left, did not even receive the room's traffic from the bus.
    assert_eq!(metric(&c, "wshub_bus_received_total").await, c_received);
    assert!(metric(&b, "wshub_bus_received_total").await > b_received);

    // Kick across nodes, then deletion across nodes.
    c1.join_room("lobby").await.unwrap();
    let kicked = a1
        .request("kick", json!({"room_id": "lobby", "client_id": "c1"}))
        .await
        .unwrap();
    assert_eq!(kicked.message_type, "kicked");
    assert_eq!(c1.expect("kicked", WAIT).await.unwrap().data["by"], "a1");
    let ch = c.running.handle();
    eventually("c1 removed from lobby", || {
        ch.room_members("lobby").is_err()
    })
    .await;

    a1.request("delete_room", json!({"room_id": "lobby"}))
        .await
        .unwrap();
    assert_eq!(
        b1.expect("room_deleted", WAIT).await.unwrap().data["room_id"],
        "lobby"
    );
    let bh = b.running.handle();
    eventually("lobby gone on B", || bh.room_members("lobby").is_err()).await;
    eventually("B unsubscribed", || !has_lobby(bh.bus_subscriptions())).await;

    // Disconnect through the API of a node that does not hold the client.
    let res = reqwest::Client::new()
        .delete(a.http_url("/api/clients/b2"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(common::expect_closed(&mut b2).await, Some(1000));
}

#[tokio::test]
async fn local_bus_delivery_across_nodes() {
    delivery_across_nodes(Backend::Local).await;
}

#[tokio::test]
async fn nats_delivery_across_nodes() {
    delivery_across_nodes(Backend::Nats).await;
}

#[tokio::test]
async fn jetstream_delivery_across_nodes() {
    delivery_across_nodes(Backend::JetStream).await;
}

#[tokio::test]
async fn redis_delivery_across_nodes() {
    delivery_across_nodes(Backend::Redis).await;
}

async fn broker_outage(backend: Backend) {
    let mut cluster = Cluster::new(backend);
    let [a, b, _c] = cluster.nodes().await;
    wait_connected(&[&a, &b]).await;
    let a1 = a.client("a1").await;
    let mut a2 = a.client("a2").await;
    let mut b1 = b.client("b1").await;
    for cl in [&a1, &a2, &b1] {
        cl.join_room("r").await.unwrap();
    }
    a1.room_message("r", json!("before")).await.unwrap();
    assert_eq!(
        b1.expect("room_message", WAIT).await.unwrap().data["content"],
        "before"
    );
    a2.expect("room_message", WAIT).await.unwrap();

    cluster.broker.as_mut().unwrap().kill();
    let ah = a.running.handle();
    eventually("A sees the bus degraded", || {
        ah.bus_status().map(|s| s.1) == Some("degraded")
    })
    .await;
    let health: serde_json::Value = reqwest::get(a.http_url("/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["bus"]["state"], "degraded");
    assert_eq!(metric(&a, "wshub_bus_up").await, 0);
    // Not ready for new connections while degraded (liveness above stays 200).
    let ready = reqwest::get(a.http_url("/health/ready")).await.unwrap();
    assert_eq!(ready.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    let ready: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(ready["ready"], false);
    assert_eq!(ready["bus"], "degraded");
    let errors_before = metric(&a, "wshub_bus_publish_errors_total").await;

    // Local delivery keeps working; the sender learns the other nodes were not reached (1004),
    // quickly rather than hanging.
    let started = std::time::Instant::now();
    let err = a1
        .request("room_message", json!({"room_id": "r", "content": "during"}))
        .await
        .unwrap_err();
    // At least this publish failed and was counted (a JetStream publish still waiting for its
    // acknowledgement when the broker died fails too).
    assert!(metric(&a, "wshub_bus_publish_errors_total").await > errors_before);
    assert_eq!(err.code().map(|c| c.as_u16()), Some(1004), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        a2.expect("room_message", WAIT).await.unwrap().data["content"],
        "during"
    );

    // The broker comes back: cross-node delivery resumes without reconnecting clients.
    cluster.broker.as_mut().unwrap().restart();
    wait_connected(&[&a, &b]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut n = 0;
    loop {
        n += 1;
        let _ = a1.room_message("r", json!({"after": n})).await;
        match b1.expect("room_message", Duration::from_millis(500)).await {
            Ok(m) if m.data["content"].get("after").is_some() => break,
            _ => assert!(
                tokio::time::Instant::now() < deadline,
                "no cross-node delivery after restart"
            ),
        }
    }
    assert_eq!(metric(&a, "wshub_bus_up").await, 1);
    assert!(metric(&a, "wshub_bus_reconnects_total").await >= 1);
    let ready = reqwest::get(a.http_url("/health/ready")).await.unwrap();
    assert_eq!(ready.status(), reqwest::StatusCode::OK);
}

#[tokio::test]
async fn nats_outage_and_recovery() {
    broker_outage(Backend::Nats).await;
}

#[tokio::test]
async fn jetstream_outage_and_recovery() {
    broker_outage(Backend::JetStream).await;
}

#[tokio::test]
async fn redis_outage_and_recovery() {
    broker_outage(Backend::Redis).await;
}

/// A NATS server without JetStream cannot hold the cluster state: the node says it is not
/// ready (and why) instead of taking connections whose joins would all fail, and becomes
/// ready once the broker comes back with JetStream.
#[tokio::test]
async fn nats_without_jetstream_is_not_ready_until_it_has_it() {
    let mut cluster = Cluster::new(Backend::Local);
    cluster.backend = Backend::Nats;
    cluster.broker = Some(common::brokers::Broker::nats_without_jetstream());
    let a = TestServer::start_with(cluster.builder("a")).await;
    wait_connected(&[&a]).await;
    let ready_state = || async {
        let res = reqwest::get(a.http_url("/health/ready")).await.unwrap();
        let status = res.status();
        (status, res.json::<serde_json::Value>().await.unwrap())
    };
    let mut last = None;
    for _ in 0..100 {
        let (status, body) = ready_state().await;
        if status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
            last = Some(body);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let body = last.expect("/health/ready stayed 200 on a NATS server without JetStream");
    assert_eq!(body["bus"], "connected");
    assert_eq!(body["problem"], "the NATS server has no JetStream");
    let client = a.client("a1").await;
    let err = client.join_room("lobby").await.unwrap_err();
    assert!(err.to_string().contains("1004"), "{err}");

    // The operator restarts the broker with -js: the node becomes ready by itself.
    let broker = cluster.broker.as_mut().unwrap();
    broker.jetstream = true;
    broker.restart();
    let mut ok = false;
    for _ in 0..200 {
        if ready_state().await.0 == reqwest::StatusCode::OK {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        ok,
        "not ready 20 s after JetStream came up: {:?}",
        ready_state().await
    );
}

//! Room history in Redis Streams and in JetStream: shared by every node, survives node
//! restarts. One test body per behaviour, run on both.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::cluster::{Backend, Cluster, wait_connected};
use common::history::{collect, join_since, publish_n};
use common::{TestServer, WAIT};
use serde_json::json;
use wshub::Server;
use wshub_client::Client;

async fn node(cluster: &Cluster, name: &str, size: usize, ttl: Duration) -> TestServer {
    let mut config = cluster.config(name);
    config.rooms.history.size = size;
    config.rooms.history.ttl = ttl;
    let server = TestServer::start_with(Server::builder().config(config)).await;
    wait_connected(&[&server]).await;
    server
}

async fn recovered_on_another_node_and_after_a_restart(backend: Backend) {
    let cluster = Cluster::new(backend);
    let ttl = Duration::from_secs(600);
    let a = node(&cluster, "hist-a", 5000, ttl).await;
    let b = node(&cluster, "hist-b", 5000, ttl).await;
    let publisher = a.client("pub").await;
    publisher.join_room("feed").await.unwrap();
    let mut sub = a.client("sub").await;
    let joined = sub.join_room("feed").await.unwrap();
    let epoch = joined.data["epoch"].as_str().unwrap().to_owned();
    publish_n(&publisher, "feed", 0, 5).await;
    let last = collect(&mut sub, 5).await.last().unwrap().1;
    drop(sub);

    // 1,000 while away; back on the other node.
    publish_n(&publisher, "feed", 5, 1000).await;
    let mut sub = Client::connect(&b.ws_url(Some("sub"))).await.unwrap();
    assert_eq!(
        join_since(&sub, "feed", last, &epoch).await["recovered"],
        true
    );
    publish_n(&publisher, "feed", 1005, 2).await;
    let got = collect(&mut sub, 1002).await;
    assert_eq!(
        got.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        (5..1007).collect::<Vec<u64>>()
    );
    assert!(
        sub.expect("room_message", Duration::from_millis(200))
            .await
            .is_err()
    );
    let last = got.last().unwrap().1;
    drop(sub);

    // Node B restarts (a new process would too): the history, and its epoch, survive.
    b.running.shutdown(Duration::from_secs(5)).await;
    publish_n(&publisher, "feed", 1007, 3).await;
    let b2 = node(&cluster, "hist-b", 5000, ttl).await;
    let mut sub = Client::connect(&b2.ws_url(Some("sub"))).await.unwrap();
    assert_eq!(
        join_since(&sub, "feed", last, &epoch).await["recovered"],
        true
    );
    let got: Vec<u64> = collect(&mut sub, 3).await.iter().map(|(i, _)| *i).collect();
    assert_eq!(got, vec![1007, 1008, 1009]);
}

async fn idempotency_is_cluster_wide(backend: Backend) {
    let cluster = Cluster::new(backend);
    let a = node(&cluster, "idem-a", 100, Duration::from_secs(1)).await;
    let b = node(&cluster, "idem-b", 100, Duration::from_secs(1)).await;
    let pa = a.client("pa").await;
    pa.join_room("r").await.unwrap();
    let pb = b.client("pb").await;
    pb.join_room("r").await.unwrap();
    let mut m = b.client("m").await;
    let epoch = m.join_room("r").await.unwrap().data["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = json!({"room_id": "r", "content": "once", "idempotency_key": "pay-7"});
    let first = pa.request("room_message", body.clone()).await.unwrap();
    // The retry lands on another node.
    let retry = pb.request("room_message", body).await.unwrap();
    assert_eq!(first.data["offset"], retry.data["offset"]);
    assert_eq!(
        m.expect("room_message", WAIT).await.unwrap().data["content"],
        "once"
    );
    assert!(
        m.expect("room_message", Duration::from_millis(300))
            .await
            .is_err()
    );

    // History kept for 1 s: after that a client that was away gets recovered: false (Redis:
    // the room's history and its epoch expired; JetStream: the messages expired and the room
    // starts again above every offset it used).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let late = a.client("late").await;
    let joined = join_since(&late, "r", 1, &epoch).await;
    assert_eq!(joined["recovered"], false, "{joined}");
    let pa2 = b.client("pa2").await;
    pa2.join_room("r").await.unwrap();
    let ack = pa2
        .request("room_message", json!({"room_id": "r", "content": "new"}))
        .await
        .unwrap();
    // A new publication can't be taken for an old one: its epoch changed, or its offset moved
    // past every offset the room used.
    assert!(
        ack.data["epoch"] != epoch.as_str() || ack.data["offset"].as_u64().unwrap() > 1,
        "{ack:?}"
    );
}

#[tokio::test]
async fn redis_recovered_on_another_node_and_after_a_restart() {
    recovered_on_another_node_and_after_a_restart(Backend::Redis).await;
}

#[tokio::test]
async fn jetstream_recovered_on_another_node_and_after_a_restart() {
    recovered_on_another_node_and_after_a_restart(Backend::JetStream).await;
}

#[tokio::test]
async fn redis_idempotency_is_cluster_wide() {
    idempotency_is_cluster_wide(Backend::Redis).await;
}

#[tokio::test]
async fn jetstream_idempotency_is_cluster_wide() {
    idempotency_is_cluster_wide(Backend::JetStream).await;
}

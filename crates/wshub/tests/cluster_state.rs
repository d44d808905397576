//! Cluster state across three nodes, on the in-process store, on NATS KV and on Redis:
//! the room registry, the cluster-wide `max_clients`, presence, the client registry.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::cluster::{Backend, Cluster, metric, wait_connected};
use common::{TestServer, WAIT, eventually};
use futures_util::future::join_all;
use serde_json::{Value, json};
use wshub::Server;
use wshub_client::{Client, ErrorCode};

async fn three(cluster: &Cluster, tweak: impl Fn(&mut wshub::Config)) -> [TestServer; 3] {
    let start = |node: &str| {
        let mut config = cluster.config(node);
        tweak(&mut config);
        TestServer::start_with(
            Server::builder()
                .config(config)
                .local_broker(cluster.local.clone()),
        )
    };
    let nodes = [
        start("node-a").await,
        start("node-b").await,
        start("node-c").await,
    ];
    wait_connected(&[&nodes[0], &nodes[1], &nodes[2]]).await;
    nodes
}

async fn get_json(node: &TestServer, path: &str) -> Value {
    reqwest::get(node.http_url(path))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn registry_and_presence(backend: Backend) {
    let cluster = Cluster::new(backend);
    let [a, b, c] = three(&cluster, |c| c.rooms.presence_events = true).await;

    // A room created on A (socket) is visible on B (socket) and C (API), with its settings.
    let a1 = a.client("a1").await;
    a1.request(
        "create_room",
        json!({"room_id": "ops", "name": "Operations", "max_clients": 7}),
    )
    .await
    .unwrap();
    let b1 = b.client("b1").await;
    let list = b1.request("list_rooms", json!({})).await.unwrap();
    assert_eq!(
        list.data["rooms"],
        json!([{"id": "ops", "name": "Operations", "max_clients": 7, "members": 0}])
    );
    let rooms = get_json(&c, "/api/rooms").await;
    assert_eq!(rooms["rooms"][0]["name"], "Operations");
    // Creating it again anywhere is 3001.
    let err = b1
        .request("create_room", json!({"room_id": "ops"}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::RoomAlreadyExists));

    // Presence across nodes, with join events to the members already there.
    let mut c1 = c.client("c1").await;
    c1.join_room("ops").await.unwrap();
    a1.join_room("ops").await.unwrap();
    let joined = c1.expect("presence_join", WAIT).await.unwrap();
    assert_eq!(joined.data["client_id"], "a1");
    assert_eq!(joined.data["room_id"], "ops");
    b1.join_room("ops").await.unwrap();
    let members = a1
        .request("room_members", json!({"room_id": "ops"}))
        .await
        .unwrap();
    assert_eq!(
        members.data["members"],
        json!([{"client_id": "a1"}, {"client_id": "b1"}, {"client_id": "c1"}])
    );
    let api_members = get_json(&b, "/api/rooms/ops/members").await;
    assert_eq!(api_members["members"].as_array().unwrap().len(), 3);
    assert_eq!(get_json(&c, "/api/rooms/ops").await["members"], 3);

    // A leave on B is announced on C.
    b1.leave_room("ops").await.unwrap();
    let left = c1.expect("presence_leave", WAIT).await.unwrap();
    assert_eq!(left.data, json!({"room_id": "ops", "client_id": "b1"}));

    // Deleting on B removes it everywhere; members on every node are told.
    let b_api = reqwest::Client::new();
    let res = b_api
        .delete(b.http_url("/api/rooms/ops"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(
        c1.expect("room_deleted", WAIT).await.unwrap().data["room_id"],
        "ops"
    );
    let list = a1.request("list_rooms", json!({})).await.unwrap();
    assert_eq!(list.data["rooms"], json!([]));
    let err = c1
        .request("room_members", json!({"room_id": "ops"}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::RoomNotFound));

    // Auto-created rooms go away cluster-wide when their last member (on any node) leaves.
    // A leaves it while a member is still on A (the room is not empty: no question asked), then
    // A's last one leaves while C still has one (the store says the room is not empty).
    let a2 = a.client("a2").await;
    a1.join_room("temp").await.unwrap();
    a2.join_room("temp").await.unwrap();
    c1.join_room("temp").await.unwrap();
    a1.leave_room("temp").await.unwrap();
    assert_eq!(get_json(&b, "/api/rooms/temp").await["members"], 2);
    a2.leave_room("temp").await.unwrap();
    assert_eq!(get_json(&b, "/api/rooms/temp").await["members"], 1);
    drop(c1);
    let mut gone = false;
    for _ in 0..200 {
        if reqwest::get(b.http_url("/api/rooms/temp"))
            .await
            .unwrap()
            .status()
            == 404
        {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        gone,
        "auto-created room left behind after its last member disconnected"
    );

    // Stats and nodes are cluster-wide.
    let stats = get_json(&a, "/api/stats").await;
    assert_eq!(stats["nodes"], 3);
    let per_node: Vec<&str> = stats["per_node"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node_id"].as_str().unwrap())
        .collect();
    assert_eq!(per_node, vec!["node-a", "node-b", "node-c"]);
    let nodes = get_json(&c, "/api/nodes").await;
    assert_eq!(nodes["nodes"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn local_registry_and_presence() {
    registry_and_presence(Backend::Local).await;
}

#[tokio::test]
async fn nats_registry_and_presence() {
    registry_and_presence(Backend::Nats).await;
}

#[tokio::test]
async fn redis_registry_and_presence() {
    registry_and_presence(Backend::Redis).await;
}

/// Clients on three nodes race to join a room with `max_clients`; exactly that many get in.
async fn max_clients_race(backend: Backend) {
    const MAX: usize = 4;
    const PER_NODE: usize = 6;
    const ROUNDS: usize = 5;
    let cluster = Cluster::new(backend);
    let nodes = three(&cluster, |_| {}).await;
    let mut clients = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for i in 0..PER_NODE {
            clients.push(node.client(&format!("n{n}-c{i}")).await);
        }
    }
    for round in 0..ROUNDS {
        let room = format!("race-{round}");
        clients[0]
            .request("create_room", json!({"room_id": room, "max_clients": MAX}))
            .await
            .unwrap();
        let results = join_all(clients.iter().map(|c| c.join_room(&room))).await;
        let joined = results.iter().filter(|r| r.is_ok()).count();
        let full = results
            .iter()
            .filter(|r| matches!(r, Err(e) if e.code() == Some(ErrorCode::RoomFull)))
            .count();
        assert_eq!(
            (joined, full),
            (MAX, clients.len() - MAX),
            "round {round}: {results:?}"
        );
        let members = clients[1]
            .request("room_members", json!({"room_id": room}))
            .await
            .unwrap();
        assert_eq!(members.data["members"].as_array().unwrap().len(), MAX);
    }
}

#[tokio::test]
async fn local_max_clients_race() {
    max_clients_race(Backend::Local).await;
}

#[tokio::test]
async fn nats_max_clients_race() {
    max_clients_race(Backend::Nats).await;
}

#[tokio::test]
async fn redis_max_clients_race() {
    max_clients_race(Backend::Redis).await;
}

async fn client_registry(backend: Backend) {
    let cluster = Cluster::new(backend);
    let [a, b, c] = three(&cluster, |_| {}).await;

    // A direct message to an id connected nowhere is 4000, even in a cluster.
    let a1 = a.client("a1").await;
    let err = a1
        .request(
            "direct_message",
            json!({"target_id": "ghost", "content": 1}),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::ClientNotFound));
    let res = reqwest::Client::new()
        .delete(a.http_url("/api/clients/ghost"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);

    // The same id on B replaces the connection on A (4409), cluster-wide.
    let mut first = a.client("dup").await;
    first.join_room("r").await.unwrap();
    let mut second = Client::connect(&b.ws_url(Some("dup"))).await.unwrap();
    assert_eq!(common::expect_closed(&mut first).await, Some(4409));
    a1.direct_message("dup", json!("to the new one"))
        .await
        .unwrap();
    let dm = second.expect("direct_message", WAIT).await.unwrap();
    assert_eq!(dm.data["content"], "to the new one");
    // The old connection's membership went with it; the new one can join.
    let ah = a.running.handle();
    eventually("old membership removed", || ah.room_members("r").is_err()).await;
    second.join_room("r").await.unwrap();
    let members = second
        .request("room_members", json!({"room_id": "r"}))
        .await
        .unwrap();
    assert_eq!(members.data["members"], json!([{"client_id": "dup"}]));

    // A clean shutdown removes a node's clients at once (not after node_ttl).
    let c1 = c.client("c1").await;
    c1.join_room("r").await.unwrap();
    let bh = b.running.handle();
    assert_eq!(bh.cluster_members("r").await.unwrap(), vec!["c1", "dup"]);
    c.running.shutdown(Duration::from_secs(5)).await;
    assert_eq!(bh.cluster_members("r").await.unwrap(), vec!["dup"]);
    let nodes: Vec<String> = bh.nodes().await.into_iter().map(|n| n.node_id).collect();
    assert_eq!(nodes, vec!["node-a", "node-b"]);
}

#[tokio::test]
async fn local_client_registry() {
    client_registry(Backend::Local).await;
}

#[tokio::test]
async fn nats_client_registry() {
    client_registry(Backend::Nats).await;
}

#[tokio::test]
async fn redis_client_registry() {
    client_registry(Backend::Redis).await;
}

/// The last member leaving an auto-created room (whose node then deletes the empty room) while
/// another joins it on another node: the room must survive with the joiner in it, every time.
async fn join_racing_the_last_leave_keeps_the_room(backend: Backend) {
    const ROUNDS: usize = 15;
    let cluster = Cluster::new(backend);
    let [a, b, c] = three(&cluster, |_| {}).await;
    let leaver = a.client("leaver").await;
    let joiner = b.client("joiner").await;
    let observer = c.client("observer").await;
    for round in 0..ROUNDS {
        let room = format!("relay-{round}");
        leaver.join_room(&room).await.unwrap();
        let (left, joined) = tokio::join!(leaver.leave_room(&room), joiner.join_room(&room));
        left.unwrap();
        joined.unwrap();
        // Whatever order the deletion and the join took, the room ends up listed with its one
        // member, and stays so.
        let listed = async || {
            let list = observer.request("list_rooms", json!({})).await.unwrap();
            list.data["rooms"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["id"] == room.as_str() && r["members"] == 1)
        };
        let deadline = tokio::time::Instant::now() + WAIT;
        while !listed().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "round {round}: the room was lost"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(listed().await, "round {round}: the room was deleted later");
        joiner.leave_room(&room).await.unwrap();
    }
}

#[tokio::test]
async fn local_join_racing_the_last_leave_keeps_the_room() {
    join_racing_the_last_leave_keeps_the_room(Backend::Local).await;
}

#[tokio::test]
async fn nats_join_racing_the_last_leave_keeps_the_room() {
    join_racing_the_last_leave_keeps_the_room(Backend::Nats).await;
}

#[tokio::test]
async fn redis_join_racing_the_last_leave_keeps_the_room() {
    join_racing_the_last_leave_keeps_the_room(Backend::Redis).await;
}

/// A node of `cluster` that heartbeats every `heartbeat_ms` and takes others for dead after
/// `ttl_ms`.
async fn with_heartbeat(
    cluster: &Cluster,
    node: &str,
    heartbeat_ms: u64,
    ttl_ms: u64,
) -> TestServer {
    let mut config = cluster.config(node);
    config.cluster.heartbeat_interval = Duration::from_millis(heartbeat_ms);
    config.cluster.node_ttl = Duration::from_millis(ttl_ms);
    TestServer::start_with(
        Server::builder()
            .config(config)
            .local_broker(cluster.local.clone()),
    )
    .await
}

/// A node presumed dead by another (here: the other's `node_ttl` is shorter than this node's
/// heartbeat interval) while its own clock saw no silence: it finds its clients missing from
/// the cluster state and writes them back.
async fn reaped_node_restores_its_clients(backend: Backend) {
    let cluster = Cluster::new(backend);
    let start = |node, heartbeat_ms, ttl_ms| with_heartbeat(&cluster, node, heartbeat_ms, ttl_ms);
    let reaper = start("node-a", 100, 300).await;
    let slow = start("node-b", 1000, 10_000).await;
    wait_connected(&[&reaper, &slow]).await;
    let b1 = slow.client("b1").await;
    b1.join_room("r").await.unwrap();
    let seen = reaper.running.handle();
    let members = || async { seen.cluster_members("r").await.unwrap_or_default() };
    let deadline = tokio::time::Instant::now() + WAIT;
    while members().await.contains(&"b1".to_owned()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "node-b never reaped"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Reaped. node-b's next heartbeats (every second) must notice and restore `b1`; node-a
    // may reap it again 300 ms later, so look often.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !members().await.contains(&"b1".to_owned()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "node-b did not restore its client after being reaped"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One survivor cleans up after a dead node, the one with the smallest id, even when another
/// checks more often (and, were every survivor to clean up, would nearly always be first).
async fn one_node_reaps(backend: Backend) {
    let cluster = Cluster::new(backend);
    let start = |node, heartbeat_ms, ttl_ms| with_heartbeat(&cluster, node, heartbeat_ms, ttl_ms);
    let a = start("node-a", 1_000, 3_000).await;
    let b = start("node-b", 100, 3_000).await;
    // Its heartbeats are 10 s apart: the others find it dead 3 s after the first.
    let c = start("node-c", 10_000, 20_000).await;
    wait_connected(&[&a, &b, &c]).await;
    let c1 = c.client("c1").await;
    c1.join_room("r").await.unwrap();
    let seen = a.running.handle();
    let deadline = tokio::time::Instant::now() + WAIT;
    while seen
        .cluster_members("r")
        .await
        .unwrap_or_default()
        .contains(&"c1".to_owned())
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "node-c never reaped"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // node-a cleans up at its next heartbeat; node-b, checking ten times as often, left it.
    let deadline = tokio::time::Instant::now() + WAIT;
    while metric(&a, "wshub_dead_node_cleanups_total").await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "node-a never cleaned up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(metric(&b, "wshub_dead_node_cleanups_total").await, 0);
}

#[tokio::test]
async fn local_one_node_reaps() {
    one_node_reaps(Backend::Local).await;
}

#[tokio::test]
async fn nats_one_node_reaps() {
    one_node_reaps(Backend::Nats).await;
}

#[tokio::test]
async fn redis_one_node_reaps() {
    one_node_reaps(Backend::Redis).await;
}

#[tokio::test]
async fn local_reaped_node_restores_its_clients() {
    reaped_node_restores_its_clients(Backend::Local).await;
}

#[tokio::test]
async fn nats_reaped_node_restores_its_clients() {
    reaped_node_restores_its_clients(Backend::Nats).await;
}

#[tokio::test]
async fn redis_reaped_node_restores_its_clients() {
    reaped_node_restores_its_clients(Backend::Redis).await;
}

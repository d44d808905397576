//! Room history: offsets, recovery after a reconnect with nothing lost or doubled, the
//! publish ack, idempotent publishes. Memory history (one node, and an in-process cluster
//! sharing it).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::cluster::{Backend, Cluster, metric, wait_connected};
use common::history::{collect, publish_n};
use common::{TestServer, WAIT};
use serde_json::{Value, json};
use wshub::{Config, Server};
use wshub_client::Client;

fn history_config(size: usize) -> Config {
    let mut c = Config::default();
    c.rooms.history.size = size;
    c
}

#[tokio::test]
async fn deliveries_carry_offset_and_epoch_and_the_ack_returns_them() {
    let server = TestServer::start(history_config(100)).await;
    let publisher = server.client("pub").await;
    let mut member = server.client("m").await;
    let joined = member.join_room("r").await.unwrap();
    assert_eq!(joined.data["offset"], 0);
    let epoch = joined.data["epoch"].as_str().unwrap().to_owned();
    publisher.join_room("r").await.unwrap();
    let ack = publisher
        .request("room_message", json!({"room_id": "r", "content": "a"}))
        .await
        .unwrap();
    assert_eq!(ack.message_type, "published");
    assert_eq!(
        ack.data,
        json!({"room_id": "r", "offset": 1, "epoch": epoch})
    );
    let m = member.expect("room_message", WAIT).await.unwrap();
    assert_eq!(m.data["offset"], 1);
    assert_eq!(m.data["epoch"], epoch.as_str());
    assert_eq!(m.data["content"], "a");
    // GoHub's fields are still there, in place.
    assert_eq!(m.data["sender_id"], "pub");

    // `history` returns what is stored.
    publish_n(&publisher, "r", 0, 3).await;
    let h = member
        .request("history", json!({"room_id": "r", "since": 1, "limit": 2}))
        .await
        .unwrap();
    let offsets: Vec<u64> = h.data["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, vec![2, 3]);
    assert_eq!(h.data["publications"][0]["data"]["content"]["i"], 0);
}

#[tokio::test]
async fn reconnect_recovers_exactly_the_missed_publications_then_live_ones() {
    let server = TestServer::start(history_config(2000)).await;
    let publisher = server.client("pub").await;
    publisher.join_room("feed").await.unwrap();
    let mut sub = server.client("sub").await;
    let joined = sub.join_room("feed").await.unwrap();
    let epoch = joined.data["epoch"].as_str().unwrap().to_owned();
    publish_n(&publisher, "feed", 0, 5).await;
    let seen = collect(&mut sub, 5).await;
    let last_offset = seen.last().unwrap().1;
    sub.close().await;

    // 1,000 publications while the subscriber is away.
    publish_n(&publisher, "feed", 5, 1000).await;

    let mut sub = server.client("sub").await;
    let joined = sub
        .request(
            "join_room",
            json!({"room_id": "feed", "since": {"offset": last_offset, "epoch": epoch}}),
        )
        .await
        .unwrap();
    assert_eq!(joined.data["recovered"], true);
    publish_n(&publisher, "feed", 1005, 3).await;
    let got = collect(&mut sub, 1003).await;
    let contents: Vec<u64> = got.iter().map(|(i, _)| *i).collect();
    assert_eq!(
        contents,
        (5..1008).collect::<Vec<u64>>(),
        "every missed one, in order, then live"
    );
    let offsets: Vec<u64> = got.iter().map(|(_, o)| *o).collect();
    assert!(
        offsets.windows(2).all(|w| w[1] == w[0] + 1),
        "contiguous offsets"
    );
    assert!(
        sub.expect("room_message", Duration::from_millis(200))
            .await
            .is_err(),
        "nothing doubled"
    );
}

#[tokio::test]
async fn recovery_while_publishing_has_no_gap_and_no_duplicate() {
    let mut config = history_config(100_000);
    // The publisher runs flat out: give the subscriber's queue room for the bursts, so this
    // tests recovery, not the slow-consumer policy.
    config.server.hub.message_buffer_cap = 16_384;
    let server = TestServer::start(config).await;
    let publisher = server.client("pub").await;
    publisher.join_room("busy").await.unwrap();
    let mut sub = server.client("sub").await;
    let joined = sub.join_room("busy").await.unwrap();
    let epoch = joined.data["epoch"].as_str().unwrap().to_owned();

    // A publisher that never stops while the subscriber drops and rejoins, ten times.
    let total = 3000u64;
    let pump = tokio::spawn(async move {
        for i in 0..total {
            publisher
                .room_message("busy", json!({ "i": i }))
                .await
                .unwrap();
            if i % 50 == 0 {
                tokio::task::yield_now().await;
            }
        }
        publisher
    });
    let mut seen: Vec<u64> = Vec::new();
    let mut last_offset = 0;
    for round in 0..10 {
        let batch = collect(&mut sub, 100).await;
        seen.extend(batch.iter().map(|(i, _)| *i));
        last_offset = batch.last().unwrap().1;
        sub.close().await;
        sub = server.client("sub").await;
        let joined = sub
            .request(
                "join_room",
                json!({"room_id": "busy", "since": {"offset": last_offset, "epoch": epoch}}),
            )
            .await
            .unwrap();
        assert_eq!(joined.data["recovered"], true, "round {round}");
    }
    let _publisher = pump.await.unwrap();
    let rest = total as usize - seen.len();
    seen.extend(collect(&mut sub, rest).await.iter().map(|(i, _)| *i));
    assert_eq!(seen, (0..total).collect::<Vec<u64>>());
    let _ = last_offset;
}

#[tokio::test]
async fn recovery_is_refused_on_a_new_epoch_or_beyond_the_window() {
    let server = TestServer::start(history_config(10)).await;
    let publisher = server.client("pub").await;
    publisher.join_room("r").await.unwrap();
    let sub = server.client("sub").await;
    let epoch = sub.join_room("r").await.unwrap().data["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    publish_n(&publisher, "r", 0, 30).await;
    let sub2 = server.client("sub2").await;
    // Offset 5 was dropped long ago (the room keeps 10).
    let joined = sub2
        .request(
            "join_room",
            json!({"room_id": "r", "since": {"offset": 5, "epoch": epoch}}),
        )
        .await
        .unwrap();
    assert_eq!(joined.data["recovered"], false);
    assert_eq!(joined.data["offset"], 30);
    // A restarted (memory) node has a new epoch.
    let restarted = TestServer::start(history_config(10)).await;
    let c = restarted.client("sub").await;
    let joined = c
        .request(
            "join_room",
            json!({"room_id": "r", "since": {"offset": 29, "epoch": epoch}}),
        )
        .await
        .unwrap();
    assert_eq!(joined.data["recovered"], false);
    assert_ne!(joined.data["epoch"], Value::from(epoch));
}

#[tokio::test]
async fn idempotent_publish_is_applied_once() {
    let server = TestServer::start(history_config(100)).await;
    let publisher = server.client("pub").await;
    publisher.join_room("r").await.unwrap();
    let mut member = server.client("m").await;
    member.join_room("r").await.unwrap();
    let send = || {
        publisher.request(
            "room_message",
            json!({"room_id": "r", "content": "once", "idempotency_key": "order-42"}),
        )
    };
    let first = send().await.unwrap();
    let retry = send().await.unwrap();
    assert_eq!(first.data["offset"], retry.data["offset"]);
    assert_eq!(
        member.expect("room_message", WAIT).await.unwrap().data["content"],
        "once"
    );
    assert!(
        member
            .expect("room_message", Duration::from_millis(200))
            .await
            .is_err()
    );
    // Through the API too.
    let http = reqwest::Client::new();
    let body = json!({"room_id": "r", "message": "api", "idempotency_key": "k2"});
    let a: Value = http
        .post(server.http_url("/api/broadcast/room"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let b: Value = http
        .post(server.http_url("/api/broadcast/room"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(a["offset"], b["offset"]);
    assert_eq!(b["delivered"], 0);
    assert_eq!(
        member.expect("room_message", WAIT).await.unwrap().data["content"],
        "api"
    );
    assert!(
        member
            .expect("room_message", Duration::from_millis(200))
            .await
            .is_err()
    );
}

/// Two connected nodes of an in-process cluster, configured by `configure`.
async fn two_nodes(
    cluster: &Cluster,
    names: [&str; 2],
    configure: impl Fn(&mut Config),
) -> [TestServer; 2] {
    let start = |node: &str| {
        let mut config = cluster.config(node);
        configure(&mut config);
        TestServer::start_with(
            Server::builder()
                .config(config)
                .local_broker(cluster.local.clone()),
        )
    };
    let nodes = [start(names[0]).await, start(names[1]).await];
    wait_connected(&[&nodes[0], &nodes[1]]).await;
    nodes
}

#[tokio::test]
async fn recovery_on_another_node_of_an_in_process_cluster() {
    let cluster = Cluster::new(Backend::Local);
    let [a, b] = two_nodes(&cluster, ["node-a", "node-b"], |c| {
        c.rooms.history.size = 1000;
    })
    .await;
    let publisher = a.client("pub").await;
    publisher.join_room("x").await.unwrap();
    let mut sub = a.client("sub").await;
    let epoch = sub.join_room("x").await.unwrap().data["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    publish_n(&publisher, "x", 0, 10).await;
    let last = collect(&mut sub, 10).await.last().unwrap().1;
    drop(sub);
    publish_n(&publisher, "x", 10, 20).await;
    // Back on the other node.
    let mut sub = Client::connect(&b.ws_url(Some("sub"))).await.unwrap();
    let joined = sub
        .request(
            "join_room",
            json!({"room_id": "x", "since": {"offset": last, "epoch": epoch}}),
        )
        .await
        .unwrap();
    assert_eq!(joined.data["recovered"], true);
    let got: Vec<u64> = collect(&mut sub, 20)
        .await
        .iter()
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(got, (10..30).collect::<Vec<u64>>());
}

/// A publication lost on its way to another node, the last before the room goes quiet: no
/// later one shows the gap to that node's members, so the node's position check delivers it
/// from the history, once, and not to its sender (who moved to that node meanwhile). With the
/// check off it never arrives there.
#[tokio::test]
async fn a_lost_last_publication_is_delivered_by_the_position_check() {
    for check in [Duration::from_secs(1), Duration::ZERO] {
        let cluster = Cluster::new(Backend::Local);
        let [a, b] = two_nodes(&cluster, ["pc-a", "pc-b"], |c| {
            c.rooms.history.size = 100;
            c.rooms.history.position_check = check;
        })
        .await;
        let publisher = a.client("pub").await;
        publisher.join_room("r").await.unwrap();
        let mut near = a.client("near").await;
        near.join_room("r").await.unwrap();
        let mut far = b.client("far").await;
        far.join_room("r").await.unwrap();
        let send =
            |n: u64| publisher.request("room_message", json!({"room_id": "r", "content": n}));
        send(1).await.unwrap();
        for member in [&mut near, &mut far] {
            let m = member.expect("room_message", WAIT).await.unwrap();
            assert_eq!(m.data["offset"], 1);
        }

        cluster.local.lose_publications(true);
        assert_eq!(send(2).await.unwrap().data["offset"], 2);
        cluster.local.lose_publications(false);
        // The sender moves to the other node before a check there can deliver it (one check
        // sees it missing, one at least a second later delivers it).
        drop(publisher);
        let mut moved = b.client("pub").await;
        moved.join_room("r").await.unwrap();
        // The publisher's node delivered it to its own members.
        let m = near.expect("room_message", WAIT).await.unwrap();
        assert_eq!(
            (m.data["content"].as_u64(), m.data["offset"].as_u64()),
            (Some(2), Some(2))
        );

        if check.is_zero() {
            assert!(
                far.expect("room_message", Duration::from_millis(2500))
                    .await
                    .is_err(),
                "without the position check the lost publication must not arrive"
            );
            assert_eq!(metric(&b, "wshub_history_redelivered_total").await, 0);
            continue;
        }
        let m = far.expect("room_message", WAIT).await.unwrap();
        assert_eq!(m.data["content"], 2);
        assert_eq!(m.data["offset"], 2);
        assert_eq!(m.data["sender_id"], "pub");
        // Once, to the members that missed it only.
        for member in [&mut far, &mut near, &mut moved] {
            assert!(
                member
                    .expect("room_message", Duration::from_millis(700))
                    .await
                    .is_err(),
                "{} got a room_message it should not",
                member.client_id()
            );
        }
        assert_eq!(metric(&b, "wshub_history_redelivered_total").await, 1);
        assert_eq!(metric(&a, "wshub_history_redelivered_total").await, 0);
    }
}

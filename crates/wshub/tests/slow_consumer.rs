//! A reader that stops reading must not change what the others get: same count, in order,
//! nothing lost; and what the server holds for it stays bounded (it is disconnected, or its
//! oldest frames are dropped, per `slow_consumer_policy`).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::scrape::Scrape;
use common::{RawClient, TestServer};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use wshub::Config;
use wshub::config::SlowConsumerPolicy;

const MESSAGES: usize = 4000;

/// A member whose socket has a tiny receive buffer and who never reads.
async fn stalled_member(
    server: &TestServer,
) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(server.running.local_addr()).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(server.ws_url(Some("stalled")), tcp)
        .await
        .unwrap();
    use futures_util::{SinkExt, StreamExt};
    ws.send(Message::text(
        r#"{"message_type":"join_room","data":{"room_id":"feed"},"request_id":1}"#,
    ))
    .await
    .unwrap();
    // connected, room_joined: then it stops reading.
    for _ in 0..2 {
        ws.next().await.unwrap().unwrap();
    }
    ws
}

async fn member(server: &TestServer, id: &str) -> RawClient {
    let mut c = server.raw(id).await;
    c.send_text(r#"{"message_type":"join_room","data":{"room_id":"feed"},"request_id":1}"#)
        .await;
    assert_eq!(c.next_json().await["message_type"], "room_joined");
    c
}

/// Publishes `MESSAGES` 2 KB messages while the healthy members read, and checks every one
/// of them got all, in order. The publisher never runs more than `LEAD` messages ahead of
/// the slowest healthy reader, so only the stalled one can fill its queue.
async fn publish_and_check(server: &TestServer, members: Vec<RawClient>) {
    const LEAD: usize = 100;
    let progress: Vec<Arc<AtomicUsize>> = members
        .iter()
        .map(|_| Arc::new(AtomicUsize::new(0)))
        .collect();
    let readers: Vec<_> = members
        .into_iter()
        .zip(progress.clone())
        .map(|(mut m, done)| {
            tokio::spawn(async move {
                for i in 0..MESSAGES {
                    let msg = m.next_json().await;
                    assert_eq!(
                        msg["data"]["content"]["i"], i,
                        "a healthy member lost or reordered"
                    );
                    done.store(i + 1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let mut publisher = member(server, "publisher").await;
    let filler = "x".repeat(2048);
    for i in 0..MESSAGES {
        while progress
            .iter()
            .any(|p| p.load(Ordering::Relaxed) + LEAD < i)
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        publisher
            .send_text(&json!({"message_type": "room_message", "data": {"room_id": "feed", "content": {"i": i, "pad": filler}}}).to_string())
            .await;
    }
    for r in readers {
        r.await.unwrap();
    }
}

fn config(policy: SlowConsumerPolicy) -> Config {
    let mut config = Config::default();
    config.server.hub.message_buffer_cap = 256;
    config.server.hub.max_queued_bytes = 1024 * 1024;
    config.server.hub.slow_consumer_policy = policy;
    config
}

#[tokio::test]
async fn a_stalled_reader_is_disconnected_and_the_others_lose_nothing() {
    let server = TestServer::start(config(SlowConsumerPolicy::Disconnect)).await;
    let _stalled = stalled_member(&server).await;
    let members = vec![member(&server, "m1").await, member(&server, "m2").await];
    publish_and_check(&server, members).await;
    let m = Scrape::fetch(&server.http_url("/metrics")).await;
    assert_eq!(m.get("wshub_slow_consumer_disconnects_total", &[]), 1.0);
    assert_eq!(
        m.get(
            "wshub_connections_closed_total",
            &[("reason", "slow_consumer")]
        ),
        1.0
    );
    // Gone from the node (the healthy ones were not touched: they got everything above).
    let handle = server.running.handle();
    common::eventually("the stalled client is unregistered", || {
        !handle.client_ids().contains(&"stalled".to_owned())
    })
    .await;
}

#[tokio::test]
async fn drop_oldest_keeps_a_stalled_reader_with_bounded_memory() {
    use futures_util::StreamExt;
    let server = TestServer::start(config(SlowConsumerPolicy::DropOldest)).await;
    let mut stalled = stalled_member(&server).await;
    let members = vec![member(&server, "m1").await];
    publish_and_check(&server, members).await;
    let m = Scrape::fetch(&server.http_url("/metrics")).await;
    assert!(m.get("wshub_dropped_frames_total", &[]) > 0.0);
    assert_eq!(m.get("wshub_slow_consumer_disconnects_total", &[]), 0.0);
    // Its queue never held more than the cap.
    assert!(m.get("wshub_outbound_queue_max_frames", &[]) <= 256.0);
    // It reads again: a gap, then the newest messages, in order, ending with the last one.
    let mut seen = Vec::new();
    while seen.last() != Some(&(MESSAGES - 1)) {
        let msg = tokio::time::timeout(Duration::from_secs(10), stalled.next())
            .await
            .expect("stalled reader got nothing more")
            .unwrap()
            .unwrap();
        if let Message::Text(t) = msg {
            let v: serde_json::Value = serde_json::from_str(&t).unwrap();
            seen.push(v["data"]["content"]["i"].as_u64().unwrap() as usize);
        }
    }
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "out of order: {seen:?}"
    );
    assert!(
        seen.len() < MESSAGES,
        "nothing was dropped for the stalled reader"
    );
}

/// A socket that stays full longer than `write_timeout` ends the connection, even when the
/// queue policy (drop_oldest) would keep it forever; the others are not affected.
#[tokio::test]
async fn a_write_blocked_past_write_timeout_closes_the_connection() {
    let mut config = config(SlowConsumerPolicy::DropOldest);
    config.server.hub.write_timeout = Duration::from_millis(300);
    let server = TestServer::start(config).await;
    let _stalled = stalled_member(&server).await;
    let members = vec![member(&server, "m1").await];
    publish_and_check(&server, members).await;
    let handle = server.running.handle();
    common::eventually("the stalled client is closed by the write timeout", || {
        !handle.client_ids().contains(&"stalled".to_owned())
    })
    .await;
    let m = Scrape::fetch(&server.http_url("/metrics")).await;
    assert_eq!(m.get("wshub_slow_consumer_disconnects_total", &[]), 0.0);
}

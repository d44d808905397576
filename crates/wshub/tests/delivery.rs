//! Fan-out under load: slow consumers are cut off without hurting the room, and large rooms
//! get every message in order.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{TestServer, WAIT};
use futures_util::future::join_all;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use wshub::{Config, Server};
use wshub_client::{Client, Event};

/// Completes a WebSocket handshake by hand and then never reads again.
async fn stalled_client(server: &TestServer, id: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncReadExt;
    let mut s = tokio::net::TcpStream::connect(server.running.local_addr())
        .await
        .unwrap();
    let req = format!(
        "GET /ws?client_id={id} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 101");
    s
}

/// A masked client text frame.
fn masked_text(payload: &str) -> Vec<u8> {
    let p = payload.as_bytes();
    let mut out = vec![0x81];
    if p.len() < 126 {
        out.push(0x80 | p.len() as u8);
    } else {
        out.push(0x80 | 126);
        out.extend_from_slice(&(p.len() as u16).to_be_bytes());
    }
    let mask = [1, 2, 3, 4];
    out.extend_from_slice(&mask);
    out.extend(p.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

#[tokio::test]
async fn slow_consumer_is_disconnected_and_the_room_keeps_receiving() {
    let mut config = Config::default();
    config.server.hub.message_buffer_cap = 8;
    let (closed_tx, mut closed_rx) = mpsc::unbounded_channel();
    let server = TestServer::start_with(Server::builder().config(config).on_disconnect(
        move |client, code, reason| {
            let _ = closed_tx.send((client.id().to_owned(), code, reason.to_owned()));
        },
    ))
    .await;

    let mut stalled = stalled_client(&server, "stalled").await;
    stalled
        .write_all(&masked_text(
            r#"{"message_type":"join_room","data":{"room_id":"feed"}}"#,
        ))
        .await
        .unwrap();
    let mut fast = server.client("fast").await;
    fast.join_room("feed").await.unwrap();
    let publisher = server.client("publisher").await;
    publisher.join_room("feed").await.unwrap();
    common::eventually("stalled joined", || {
        server
            .running
            .handle()
            .room_members("feed")
            .map(|m| m.len())
            == Ok(3)
    })
    .await;

    // ~20 MB through the room: far more than the loopback socket buffers hold, so the stalled
    // client's queue (8 frames) must fill. The publisher waits for the fast member to receive
    // each message before sending the next, so only the stalled client falls behind.
    const N: u64 = 650;
    let pad = "x".repeat(30_000);
    for seq in 0..N {
        publisher
            .room_message("feed", json!({"seq": seq, "pad": pad}))
            .await
            .unwrap();
        let msg = fast.expect("room_message", WAIT).await.unwrap();
        assert_eq!(
            msg.data["content"]["seq"], seq,
            "fast member gets every message in order"
        );
    }

    let (id, code, reason) = tokio::time::timeout(WAIT, closed_rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (id.as_str(), code, reason.as_str()),
        ("stalled", 1008, "slow consumer")
    );
    let members = server.running.handle().room_members("feed").unwrap();
    assert_eq!(members, vec!["fast", "publisher"]);
    drop(stalled);
}

#[tokio::test]
async fn thousand_members_each_receive_every_message_in_order() {
    const MEMBERS: usize = 1000;
    const MESSAGES: u64 = 100;
    let server = TestServer::start(Config::default()).await;
    let url = server.ws_url(None);
    let mut members = Vec::with_capacity(MEMBERS);
    for chunk in (0..MEMBERS).collect::<Vec<_>>().chunks(100) {
        let joined = join_all(chunk.iter().map(|i| {
            let url = format!("{url}?client_id=m{i}");
            async move {
                let c = Client::connect(&url).await.unwrap();
                c.join_room("big").await.unwrap();
                c
            }
        }))
        .await;
        members.extend(joined);
    }
    assert_eq!(
        server.running.handle().room_members("big").unwrap().len(),
        MEMBERS
    );
    let publisher = server.client("publisher").await;
    let receivers: Vec<_> = members
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                let mut next = 0u64;
                while next < MESSAGES {
                    match tokio::time::timeout(Duration::from_secs(30), c.next_event()).await {
                        Ok(Some(Event::Message(m))) if m.message_type == "room_message" => {
                            assert_eq!(m.data["content"]["n"], next, "in order");
                            assert_eq!(m.data["sender_id"], "publisher");
                            next += 1;
                        }
                        Ok(Some(Event::Message(_))) => {}
                        other => panic!("member {} stopped at {next}: {other:?}", c.client_id()),
                    }
                }
                next
            })
        })
        .collect();
    publisher.join_room("big").await.unwrap();
    for n in 0..MESSAGES {
        publisher
            .room_message("big", json!({ "n": n }))
            .await
            .unwrap();
    }
    let counts = join_all(receivers).await;
    let total: u64 = counts.into_iter().map(|c| c.unwrap()).sum();
    assert_eq!(total, MEMBERS as u64 * MESSAGES);
}

//! Helpers for the history tests: publishing numbered messages and collecting them.

use serde_json::json;
use wshub_client::{Client, Event};

use super::WAIT;

/// Publishes `n` messages `{ "i": from.. }`; returns once the server has handled them (a
/// connection's messages are handled in order, so the pong comes after them).
pub async fn publish_n(publisher: &Client, room: &str, from: u64, n: u64) {
    for i in from..from + n {
        publisher
            .room_message(room, json!({ "i": i }))
            .await
            .unwrap();
    }
    publisher.ping().await.unwrap();
}

/// Reads room messages until `n` arrived; returns (content.i, offset) pairs.
pub async fn collect(client: &mut Client, n: usize) -> Vec<(u64, u64)> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match tokio::time::timeout(WAIT, client.next_event()).await {
            Ok(Some(Event::Message(m))) if m.message_type == "room_message" => out.push((
                m.data["content"]["i"].as_u64().unwrap(),
                m.data["offset"].as_u64().unwrap(),
            )),
            Ok(Some(Event::Message(_))) => {}
            other => panic!("stopped after {} messages: {other:?}", out.len()),
        }
    }
    out
}

/// `join_room` with `since`; the reply's data.
pub async fn join_since(
    client: &Client,
    room: &str,
    offset: u64,
    epoch: &str,
) -> serde_json::Value {
    client
        .request(
            "join_room",
            json!({"room_id": room, "since": {"offset": offset, "epoch": epoch}}),
        )
        .await
        .unwrap()
        .data
}

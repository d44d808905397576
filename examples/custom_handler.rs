//! A wshub node with a custom message type, event hooks and server-side pushes.
//!
//! Run: `cargo run --example custom_handler`, then connect, e.g. with websocat:
//!
//! ```text
//! $ websocat 'ws://127.0.0.1:8080/ws?client_id=alice'
//! > {"message_type":"shout","data":{"text":"hello"},"request_id":1}
//! < {"message_id":..,"message_type":"shouted","data":{"text":"HELLO","by":"alice"},..,"request_id":1}
//! > {"message_type":"shout","data":{},"request_id":2}
//! < {"message_id":..,"message_type":"error","data":{"code":1001,"message":"data.text must be a string","request_id":2},..}
//! ```
//!
//! Watch the log: every join is announced, and the `clock` room gets a tick every 5 seconds
//! (join it with `{"message_type":"join_room","data":{"room_id":"clock"}}`).

use std::time::Duration;

use serde_json::json;
use wshub::protocol::ErrorCode;
use wshub::{Config, HandlerError, Reply, Server};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("info").init();

    let mut config = Config::default();
    config.server.addr = "127.0.0.1:8080".into();

    let server = Server::builder()
        .config(config)
        // A custom message type: the returned reply goes back to the sender with its
        // request_id; an error becomes an `error` frame with that code.
        .handler("shout", |client, data| async move {
            let text = data["text"].as_str().ok_or_else(|| {
                HandlerError::new(ErrorCode::InvalidFormat, "data.text must be a string")
            })?;
            Ok(Some(Reply::new(
                "shouted",
                &json!({ "text": text.to_uppercase(), "by": client.id() }),
            )?))
        })
        .on_connect(|client| tracing::info!(client = client.id(), "hook: connected"))
        .on_join(|client, room| {
            // Hooks run inline on the connection's task: anything that waits (a publish may
            // cross the cluster bus) goes to a task of its own.
            let server = client.server();
            let text = format!("{} joined {room}", client.id());
            let room = room.to_owned();
            tokio::spawn(async move {
                let _ = server
                    .send_to_room(&room, "announcement", &json!({ "text": text }))
                    .await;
            });
        })
        .on_disconnect(|client, code, reason| {
            tracing::info!(client = client.id(), code, reason, "hook: disconnected")
        })
        .build()?;

    let running = server.bind().await?;

    // The `clock` room exists from the start; a task pushes into it from outside any handler.
    let handle = running.handle();
    handle
        .create_room("clock", Some("Clock".into()), None)
        .await?;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            let _ = handle
                .send_to_room(
                    "clock",
                    "tick",
                    &json!({ "now": wshub::protocol::now_millis() }),
                )
                .await;
        }
    });
    tracing::info!(addr = %running.local_addr(), "example running; ctrl-c to stop");
    tokio::signal::ctrl_c().await?;
    running.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

//! The embedding API: custom handlers, hooks, pushes from the server, shutdown.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{TestServer, WAIT, expect_closed};
use serde_json::json;
use tokio::sync::mpsc;
use wshub::protocol::ErrorCode;
use wshub::sdk::BuildError;
use wshub::{Config, HandlerError, Reply, Server};

fn shout_server() -> wshub::ServerBuilder {
    Server::builder()
        .config(Config::default())
        .handler("shout", |client, data| async move {
            let text = data["text"].as_str().ok_or_else(|| {
                HandlerError::new(ErrorCode::InvalidFormat, "data.text must be a string")
            })?;
            if text == "join" {
                // Handlers get a client handle that can act on the hub.
                client
                    .join("via-handler")
                    .await
                    .map_err(HandlerError::from)?;
                return Ok(None);
            }
            Ok(Some(Reply::new(
                "shouted",
                &json!({ "text": text.to_uppercase(), "by": client.id() }),
            )?))
        })
}

#[tokio::test]
async fn custom_handler_replies_and_errors_with_correlation() {
    let server = TestServer::start_with(shout_server()).await;
    let a = server.client("a").await;
    let reply = a.request("shout", json!({"text": "hey"})).await.unwrap();
    assert_eq!(reply.message_type, "shouted");
    assert_eq!(reply.data, json!({"text": "HEY", "by": "a"}));
    assert!(reply.request_id.is_some());
    let err = a.request("shout", json!({})).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidFormat));
    a.send("shout", json!({"text": "join"})).await.unwrap();
    common::eventually("joined from handler", || {
        server.running.handle().room_members("via-handler") == Ok(vec!["a".to_owned()])
    })
    .await;
}

#[test]
fn builtin_types_cannot_be_overridden() {
    let err = Server::builder()
        .handler("join_room", |_, _| async { Ok(None) })
        .build()
        .err();
    assert_eq!(err, Some(BuildError::BuiltinType("join_room".into())));
    assert_eq!(
        Server::builder()
            .handler("", |_, _| async { Ok(None) })
            .build()
            .err(),
        Some(BuildError::EmptyType)
    );
}

#[derive(Debug, PartialEq)]
enum Hook {
    Connect(String),
    Join(String, String),
    Leave(String, String),
    Message(String, String),
    Disconnect(String, u16),
}

#[tokio::test]
async fn hooks_fire_in_order() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (t1, t2, t3, t4, t5) = (tx.clone(), tx.clone(), tx.clone(), tx.clone(), tx);
    let builder = Server::builder()
        .on_connect(move |c| {
            let _ = t1.send(Hook::Connect(c.id().into()));
        })
        .on_join(move |c, r| {
            let _ = t2.send(Hook::Join(c.id().into(), r.into()));
        })
        .on_leave(move |c, r| {
            let _ = t3.send(Hook::Leave(c.id().into(), r.into()));
        })
        .on_message(move |c, t, _| {
            let _ = t4.send(Hook::Message(c.id().into(), t.into()));
        })
        .on_disconnect(move |c, code, _| {
            let _ = t5.send(Hook::Disconnect(c.id().into(), code));
        });
    let server = TestServer::start_with(builder).await;
    let mut a = server.client("a").await;
    a.join_room("r1").await.unwrap();
    a.join_room("r2").await.unwrap();
    a.leave_room("r1").await.unwrap();
    a.close().await;
    let mut seen = Vec::new();
    while seen.len() < 9 {
        seen.push(
            tokio::time::timeout(WAIT, rx.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let s = |x: &str| x.to_owned();
    assert_eq!(
        seen,
        vec![
            Hook::Connect(s("a")),
            Hook::Message(s("a"), s("join_room")),
            Hook::Join(s("a"), s("r1")),
            Hook::Message(s("a"), s("join_room")),
            Hook::Join(s("a"), s("r2")),
            Hook::Message(s("a"), s("leave_room")),
            Hook::Leave(s("a"), s("r1")),
            // Disconnecting leaves the remaining rooms, then the disconnect hook runs.
            Hook::Leave(s("a"), s("r2")),
            Hook::Disconnect(s("a"), 1000),
        ]
    );
}

#[tokio::test]
async fn server_handle_pushes_to_client_room_and_everyone() {
    let server = TestServer::start(Config::default()).await;
    let handle = server.running.handle();
    let mut a = server.client("a").await;
    let mut b = server.client("b").await;
    b.join_room("news").await.unwrap();

    handle
        .send_to_client("a", "hello", &json!({"x": 1}))
        .await
        .unwrap();
    assert_eq!(a.expect("hello", WAIT).await.unwrap().data, json!({"x": 1}));

    let d = handle
        .send_to_room("news", "headline", &json!("rust"))
        .await
        .unwrap();
    assert_eq!(d.queued, 1);
    assert_eq!(
        b.expect("headline", WAIT).await.unwrap().data,
        json!("rust")
    );

    let d = handle
        .broadcast("notice", &json!({"all": true}))
        .await
        .unwrap();
    assert_eq!(d.queued, 2);
    for c in [&mut a, &mut b] {
        assert_eq!(
            c.expect("notice", WAIT).await.unwrap().data,
            json!({"all": true})
        );
    }
    assert!(matches!(
        handle.send_to_client("ghost", "x", &json!(null)).await,
        Err(wshub::sdk::SendError::ClientNotFound)
    ));
    assert!(matches!(
        handle.send_to_room("nowhere", "x", &json!(null)).await,
        Err(wshub::sdk::SendError::RoomNotFound)
    ));
}

#[tokio::test]
async fn shutdown_closes_clients_with_1001() {
    let server = TestServer::start(Config::default()).await;
    let mut a = server.client("a").await;
    let mut b = server.client("b").await;
    let addr = server.running.local_addr();
    server.running.shutdown(Duration::from_secs(5)).await;
    assert_eq!(expect_closed(&mut a).await, Some(1001));
    assert_eq!(expect_closed(&mut b).await, Some(1001));
    // The listener is gone.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

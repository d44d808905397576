//! The GoHub wire protocol and its extensions, over real sockets against a real server.
#![allow(clippy::unwrap_used)]

mod common;

use common::{TestServer, WAIT, eventually, expect_closed};
use serde_json::{Value, json};
use wshub::Config;
use wshub_client::{ErrorCode, Event};

fn error_code(reply: &Result<wshub_client::Envelope, wshub_client::Error>) -> Option<u16> {
    match reply {
        Err(e) => e.code().map(|c| c.as_u16()),
        Ok(_) => None,
    }
}

#[tokio::test]
async fn connected_carries_client_and_node_id() {
    let server = TestServer::start(Config::default()).await;
    let alice = server.client("alice").await;
    assert_eq!(alice.client_id(), "alice");
    assert_eq!(alice.node_id(), server.running.handle().node_id());
    assert!(alice.node_id().starts_with("node-"));

    // Without ?client_id= the server assigns a UUIDv4.
    let anon = wshub_client::Client::connect(&server.ws_url(None))
        .await
        .unwrap();
    assert_eq!(anon.client_id().len(), 36);
    assert_eq!(anon.client_id().chars().nth(14), Some('4'));
}

#[tokio::test]
async fn ping_without_ts_reports_no_rtt() {
    let server = TestServer::start(Config::default()).await;
    let mut raw = server.raw("p").await;
    raw.send_text(r#"{"message_type":"ping","request_id":8}"#)
        .await;
    let pong = raw.next_json().await;
    assert_eq!(pong["data"]["ts"], 0);
    assert_eq!(pong["data"]["rtt"], 0, "{pong}");
    assert!(pong["data"]["server_ts"].as_i64().unwrap() > 0);
}

#[tokio::test]
async fn ping_pong_with_exact_envelope_shape() {
    let server = TestServer::start(Config::default()).await;
    let mut raw = server.raw("p").await;
    raw.send_text(r#"{"message_id":0,"message_type":"ping","data":{"ts":1000},"request_id":42}"#)
        .await;
    let text = raw.next_text().await;
    // GoHub's field order: message_id, message_type, data, timestamp, request_id.
    let keys: Vec<&str> = [
        "\"message_id\"",
        "\"message_type\"",
        "\"data\"",
        "\"timestamp\"",
        "\"request_id\"",
    ]
    .into_iter()
    .collect();
    let positions: Vec<usize> = keys.iter().map(|k| text.find(k).expect(k)).collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "field order in {text}"
    );
    let pong: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(pong["message_type"], "pong");
    assert_eq!(pong["request_id"], 42);
    assert!(pong["message_id"].as_u64().unwrap() > 0);
    assert_eq!(pong["data"]["ts"], 1000);
    let server_ts = pong["data"]["server_ts"].as_i64().unwrap();
    assert_eq!(pong["data"]["rtt"].as_i64().unwrap(), server_ts - 1000);
    let data_text = &text[text.find("\"data\":").unwrap()..];
    assert!(data_text.find("\"ts\"").unwrap() < data_text.find("\"server_ts\"").unwrap());
    assert!(data_text.find("\"server_ts\"").unwrap() < data_text.find("\"rtt\"").unwrap());
    let ts = pong["timestamp"].as_i64().unwrap();
    assert!(
        (ts - wshub_protocol::now_millis()).abs() < 60_000,
        "timestamp in ms"
    );

    // GoHub README style: no request_id, the reply correlates on message_id.
    raw.send_text(r#"{"message_id":1717000000123,"message_type":"ping","data":{"ts":1}}"#)
        .await;
    let pong = raw.next_json().await;
    assert_eq!(pong["request_id"], 1717000000123i64);

    // Binary frames are parsed the same way.
    raw.send_binary(br#"{"message_type":"ping","data":{"ts":5},"request_id":9}"#)
        .await;
    let pong = raw.next_json().await;
    assert_eq!(pong["message_type"], "pong");
    assert_eq!(pong["request_id"], 9);
}

#[tokio::test]
async fn bad_input_gets_error_frames_and_the_socket_stays_open() {
    let server = TestServer::start(Config::default()).await;
    let mut raw = server.raw("bad").await;

    let cases: &[(&str, u16)] = &[
        ("{not json", 1001),
        ("[1,2,3]", 1001),
        (r#"{"data":{}}"#, 1001),
        (r#"{"message_type":"fly_to_moon","request_id":3}"#, 1000),
        (
            r#"{"message_type":"join_room","data":{"room":"x"},"request_id":4}"#,
            1001,
        ),
        (
            r#"{"message_type":"join_room","data":{"room_id":""},"request_id":5}"#,
            1001,
        ),
        (
            r#"{"message_type":"room_message","data":{"room_id":"x"},"request_id":6}"#,
            1001,
        ),
        (r#"{"message_type":"ping","message_id":"abc"}"#, 1002),
        (r#"{"message_type":"ping","request_id":1.5}"#, 1002),
        // A type the server sends but a client may not.
        (r#"{"message_type":"pong","request_id":7}"#, 1000),
    ];
    for (input, code) in cases {
        raw.send_text(input).await;
        let err = raw.next_json().await;
        assert_eq!(err["message_type"], "error", "for {input}");
        assert_eq!(err["data"]["code"], *code, "for {input}: {err}");
        assert!(
            err["data"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    // The error frame carries the correlation id in data.request_id and the envelope.
    // The unknown type is not echoed back: error replies never quote client input.
    raw.send_text(r#"{"message_type":"<img src=x>","request_id":77}"#)
        .await;
    let text = raw.next_text().await;
    assert!(!text.contains("img"), "input reflected: {text}");
    let err: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(err["request_id"], 77);
    assert_eq!(err["data"]["request_id"], 77);
    assert_eq!(err["data"]["code"], 1000);
    // Neither are wrong values inside data, nor a bad id.
    for bad in [
        r#"{"message_type":"join_room","data":{"room_id":"<b>x</b>","extra":1,"room_id2":7}}"#,
        r#"{"message_type":"join_room","data":{"room_id":["<b>x</b>"]}}"#,
        r#"{"message_type":"ping","request_id":"<b>x</b>"}"#,
        r#"{"message_type":"ping","data":{"ts":"<b>x</b>"}}"#,
        r#"{"message_type":"<b>x</b>"#,
    ] {
        raw.send_text(bad).await;
        let text = raw.next_text().await;
        if bad.contains("extra") {
            // Unknown fields are ignored: a reply, not an error.
            assert!(text.contains("room_joined"), "{text}");
            continue;
        }
        assert!(
            text.contains(r#""message_type":"error""#),
            "{bad} -> {text}"
        );
        assert!(!text.contains("<b>"), "input reflected: {bad} -> {text}");
    }

    // Still open and working.
    raw.send_text(r#"{"message_type":"ping","data":{"ts":1},"request_id":8}"#)
        .await;
    assert_eq!(raw.next_json().await["message_type"], "pong");
}

#[tokio::test]
async fn room_message_reaches_every_other_member_in_gohub_shape() {
    let server = TestServer::start(Config::default()).await;
    let mut a = server.raw("a").await;
    let mut b = server.raw("b").await;
    let mut c = server.raw("c").await;
    let mut outsider = server.client("outsider").await;
    for (raw, id) in [(&mut a, 1), (&mut b, 2), (&mut c, 3)] {
        raw.send_text(&format!(
            r#"{{"message_type":"join_room","data":{{"room_id":"lobby"}},"request_id":{id}}}"#
        ))
        .await;
        let joined = raw.next_json().await;
        assert_eq!(joined["message_type"], "room_joined");
        assert_eq!(
            joined["data"],
            json!({"room_id": "lobby", "status": "joined"})
        );
        assert_eq!(joined["request_id"], id);
    }
    a.send_text(r#"{"message_type":"room_message","data":{"room_id":"lobby","content":{"text":"hi","n":[1,2]}}}"#)
        .await;
    for raw in [&mut b, &mut c] {
        let text = raw.next_text().await;
        let data = &text[text.find("\"data\":").unwrap()..];
        let order = [
            "\"content\"",
            "\"room_id\"",
            "\"sender_id\"",
            "\"timestamp\"",
        ]
        .map(|k| data.find(k).expect(k));
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "data field order: {text}"
        );
        let msg: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(msg["message_type"], "room_message");
        assert_eq!(msg["data"]["content"], json!({"text": "hi", "n": [1, 2]}));
        assert_eq!(msg["data"]["room_id"], "lobby");
        assert_eq!(msg["data"]["sender_id"], "a");
        assert!(msg["data"]["timestamp"].as_i64().unwrap() > 0);
        assert!(msg.get("request_id").is_none());
    }
    // The sender got nothing: its next frame is the pong to this ping.
    a.send_text(r#"{"message_type":"ping","data":{"ts":1},"request_id":99}"#)
        .await;
    assert_eq!(a.next_json().await["message_type"], "pong");
    // Nor did the outsider.
    assert!(
        outsider
            .expect("room_message", std::time::Duration::from_millis(300))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn room_message_requires_membership() {
    let server = TestServer::start(Config::default()).await;
    let a = server.client("a").await;
    let b = server.client("b").await;
    b.join_room("r").await.unwrap();
    let reply = a
        .request("room_message", json!({"room_id": "r", "content": "x"}))
        .await;
    assert_eq!(error_code(&reply), Some(3003));
    let reply = a
        .request(
            "room_message",
            json!({"room_id": "nowhere", "content": "x"}),
        )
        .await;
    assert_eq!(error_code(&reply), Some(3000));
}

#[tokio::test]
async fn direct_message_reaches_its_target_only() {
    let server = TestServer::start(Config::default()).await;
    let a = server.client("a").await;
    let mut b = server.client("b").await;
    let mut c = server.client("c").await;
    a.direct_message("b", json!("psst")).await.unwrap();
    let dm = b.expect("direct_message", WAIT).await.unwrap();
    assert_eq!(dm.data["content"], "psst");
    assert_eq!(dm.data["sender_id"], "a");
    assert!(dm.data["timestamp"].as_i64().unwrap() > 0);
    assert!(
        c.expect("direct_message", std::time::Duration::from_millis(200))
            .await
            .is_err()
    );
    let reply = a
        .request(
            "direct_message",
            json!({"target_id": "ghost", "content": 1}),
        )
        .await;
    assert_eq!(error_code(&reply), Some(4000));
    if let Err(e) = reply {
        assert_eq!(e.code(), Some(ErrorCode::ClientNotFound));
    }
}

#[tokio::test]
async fn join_leave_errors() {
    let mut config = Config::default();
    config.rooms.auto_create = false;
    let server = TestServer::start(config).await;
    let a = server.client("a").await;
    assert_eq!(error_code(&a.join_room("missing").await), Some(3000));
    a.request("create_room", json!({"room_id": "r", "name": "Room R"}))
        .await
        .unwrap();
    a.join_room("r").await.unwrap();
    assert_eq!(error_code(&a.join_room("r").await), Some(3004));
    let left = a.leave_room("r").await.unwrap();
    assert_eq!(left.message_type, "room_left");
    assert_eq!(left.data, json!({"room_id": "r", "status": "left"}));
    assert_eq!(error_code(&a.leave_room("r").await), Some(3003));
    assert_eq!(error_code(&a.leave_room("missing").await), Some(3000));
    // An explicitly created room survives being emptied.
    let list = a.request("list_rooms", json!({})).await.unwrap();
    assert_eq!(list.data["rooms"][0]["id"], "r");
    assert_eq!(list.data["rooms"][0]["name"], "Room R");
}

#[tokio::test]
async fn room_registry_create_delete_list_members() {
    let server = TestServer::start(Config::default()).await;
    let admin = server.client("admin").await;
    let mut m1 = server.client("m1").await;
    let created = admin
        .request("create_room", json!({"room_id": "ops", "max_clients": 5}))
        .await
        .unwrap();
    assert_eq!(created.message_type, "room_created");
    assert_eq!(
        created.data,
        json!({"room_id": "ops", "name": "ops", "max_clients": 5})
    );
    assert_eq!(
        error_code(
            &admin
                .request("create_room", json!({"room_id": "ops"}))
                .await
        ),
        Some(3001)
    );
    m1.join_room("ops").await.unwrap();
    admin.join_room("ops").await.unwrap();
    let members = admin
        .request("room_members", json!({"room_id": "ops"}))
        .await
        .unwrap();
    assert_eq!(
        members.data,
        json!({"room_id": "ops", "members": [{"client_id": "admin"}, {"client_id": "m1"}]})
    );
    let list = admin.request("list_rooms", json!({})).await.unwrap();
    assert_eq!(
        list.data["rooms"],
        json!([{"id": "ops", "name": "ops", "max_clients": 5, "members": 2}])
    );
    let deleted = admin
        .request("delete_room", json!({"room_id": "ops"}))
        .await
        .unwrap();
    assert_eq!(deleted.data, json!({"room_id": "ops"}));
    let notice = m1.expect("room_deleted", WAIT).await.unwrap();
    assert_eq!(notice.data, json!({"room_id": "ops"}));
    assert_eq!(
        error_code(
            &admin
                .request("room_members", json!({"room_id": "ops"}))
                .await
        ),
        Some(3000)
    );
    assert_eq!(
        error_code(
            &admin
                .request("delete_room", json!({"room_id": "ops"}))
                .await
        ),
        Some(3000)
    );
    // Membership went with the room: posting to it now fails.
    let reply = m1
        .request("room_message", json!({"room_id": "ops", "content": 1}))
        .await;
    assert_eq!(error_code(&reply), Some(3000));
}

#[tokio::test]
async fn broadcast_reaches_every_other_client() {
    let server = TestServer::start(Config::default()).await;
    let a = server.client("a").await;
    let mut b = server.client("b").await;
    let mut c = server.client("c").await;
    a.send("broadcast", json!({"content": {"alert": true}}))
        .await
        .unwrap();
    for client in [&mut b, &mut c] {
        let msg = client.expect("broadcast", WAIT).await.unwrap();
        assert_eq!(msg.data["content"], json!({"alert": true}));
        assert_eq!(msg.data["sender_id"], "a");
    }
}

#[tokio::test]
async fn max_clients_is_enforced() {
    let server = TestServer::start(Config::default()).await;
    let owner = server.client("owner").await;
    owner
        .request("create_room", json!({"room_id": "small", "max_clients": 2}))
        .await
        .unwrap();
    let a = server.client("a").await;
    let b = server.client("b").await;
    let c = server.client("c").await;
    a.join_room("small").await.unwrap();
    b.join_room("small").await.unwrap();
    let full = c.join_room("small").await;
    assert_eq!(error_code(&full), Some(3002));
    if let Err(wshub_client::Error::Server(e)) = full {
        assert_eq!(e.message, "room is full");
    }
    // A place frees up when a member leaves.
    a.leave_room("small").await.unwrap();
    c.join_room("small").await.unwrap();
}

#[tokio::test]
async fn disconnect_removes_members_and_empty_auto_rooms() {
    let server = TestServer::start(Config::default()).await;
    let handle = server.running.handle();
    let mut a = server.client("a").await;
    let b = server.client("b").await;
    a.join_room("temp").await.unwrap();
    b.join_room("temp").await.unwrap();
    assert_eq!(handle.room_members("temp").unwrap(), vec!["a", "b"]);
    a.close().await;
    eventually("a removed from temp", || {
        handle
            .room_members("temp")
            .map(|m| m == vec!["b"])
            .unwrap_or(false)
    })
    .await;
    drop(b); // dropped without a close frame: the TCP connection just goes away
    eventually("auto-created room removed once empty", || {
        handle.rooms().is_empty() && handle.client_count() == 0
    })
    .await;
}

#[tokio::test]
async fn duplicate_client_id_replaces_the_first_connection() {
    let server = TestServer::start(Config::default()).await;
    let handle = server.running.handle();
    let mut first = server.client("dup").await;
    first.join_room("r").await.unwrap();
    let second = server.client("dup").await;
    assert_eq!(expect_closed(&mut first).await, Some(4409));
    // The first connection's membership is gone; the second can join and is reachable.
    second.join_room("r").await.unwrap();
    assert_eq!(handle.room_members("r").unwrap(), vec!["dup"]);
    assert_eq!(handle.client_count(), 1);
    let sender = server.client("s").await;
    sender
        .direct_message("dup", json!("to second"))
        .await
        .unwrap();
    let mut second = second;
    let dm = second.expect("direct_message", WAIT).await.unwrap();
    assert_eq!(dm.data["content"], "to second");
    // Late cleanup of the first never removes the second.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(handle.room_members("r").unwrap(), vec!["dup"]);
}

#[tokio::test]
async fn oversize_message_closes_with_1009() {
    let mut config = Config::default();
    config.server.hub.max_message_size = 1024;
    let server = TestServer::start(config).await;
    let mut raw = server.raw("big").await;
    let big = format!(
        r#"{{"message_type":"ping","data":{{"pad":"{}"}}}}"#,
        "x".repeat(2000)
    );
    raw.send_text(&big).await;
    assert_eq!(raw.expect_close().await, 1009);
    // Just under the limit is fine for another client.
    let mut ok = server.raw("ok").await;
    let fits = format!(
        r#"{{"message_type":"ping","data":{{"ts":1,"pad":"{}"}},"request_id":1}}"#,
        "x".repeat(900)
    );
    ok.send_text(&fits).await;
    assert_eq!(ok.next_json().await["message_type"], "pong");
}

#[tokio::test]
async fn server_pings_and_closes_silent_clients() {
    let mut config = Config::default();
    config.server.hub.ping_interval = std::time::Duration::from_millis(100);
    config.server.hub.read_timeout = std::time::Duration::from_millis(600);
    let server = TestServer::start(config).await;
    let mut raw = server.raw("pinged").await;
    use futures_util::StreamExt;
    let msg = tokio::time::timeout(WAIT, raw.ws.next()).await.unwrap();
    assert!(matches!(
        msg,
        Some(Ok(tokio_tungstenite::tungstenite::Message::Ping(_)))
    ));
    // tungstenite answers pings with pongs when it flushes; this client keeps reading (which
    // flushes), so it is never silent for 600 ms and stays connected past the timeout.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(1500);
    while tokio::time::Instant::now() < deadline {
        match tokio::time::timeout_at(deadline, raw.ws.next()).await {
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Close(f)))) => {
                panic!("a responsive client was closed: {f:?}")
            }
            Ok(Some(Ok(_))) => continue,
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) => break,
        }
    }
    // A client that never reads never answers the pings: closed with 4408 (read timeout).
    let mut silent = server.raw("silent").await;
    tokio::time::sleep(std::time::Duration::from_millis(900)).await;
    assert_eq!(silent.expect_close().await, 4408);
}

#[tokio::test]
async fn health_reports_node() {
    let server = TestServer::start(Config::default()).await;
    let body = http_get(&server, "/health").await;
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    let json: Value = serde_json::from_str(body.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(json["status"], "ok");
    assert_eq!(json["node_id"], server.running.handle().node_id());
    assert_eq!(
        json["bus"],
        serde_json::json!({"type": "local", "state": "connected"})
    );
    assert!(json["time"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn bad_upgrades_are_refused_with_reasons() {
    let server = TestServer::start(Config::default()).await;
    let plain = http_get(&server, "/ws").await;
    assert!(plain.starts_with("HTTP/1.1 400"), "{plain}");
    let old_version = raw_request(
        &server,
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
    )
    .await;
    assert!(old_version.starts_with("HTTP/1.1 426"), "{old_version}");
    assert!(
        old_version
            .to_lowercase()
            .contains("sec-websocket-version: 13")
    );
    let bad_key = raw_request(
        &server,
        "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await;
    assert!(bad_key.starts_with("HTTP/1.1 400"), "{bad_key}");
}

async fn http_get(server: &TestServer, path: &str) -> String {
    raw_request(
        server,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    )
    .await
}

async fn raw_request(server: &TestServer, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(server.running.local_addr())
        .await
        .unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    // Read until the response is complete (close, or headers + a short body).
    loop {
        match tokio::time::timeout(std::time::Duration::from_millis(500), s.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Ok(Err(_)) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn closed_event_after_server_side_disconnect() {
    let server = TestServer::start(Config::default()).await;
    let mut a = server.client("kick-me").await;
    server.running.handle().disconnect("kick-me").await.unwrap();
    assert_eq!(expect_closed(&mut a).await, Some(1000));
    match a.next_event().await {
        None | Some(Event::Closed(_)) => {}
        other => panic!("nothing after close, got {other:?}"),
    }
}

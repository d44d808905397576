//! `limits.*` over real sockets: each limit answers clearly (HTTP status, error frame, close
//! code), the connection or node goes on, and every refusal is counted.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::TestServer;
use common::scrape::Scrape;
use serde_json::json;
use tokio_tungstenite::tungstenite;
use wshub::Config;

async fn limited(server: &TestServer, limit: &str) -> f64 {
    Scrape::fetch(&server.http_url("/metrics"))
        .await
        .get("wshub_rate_limited_total", &[("limit", limit)])
}

/// The HTTP status an upgrade got (101 = accepted), keeping the socket open when accepted.
async fn upgrade(
    server: &TestServer,
    id: &str,
) -> Result<common::RawClient, (u16, Option<String>)> {
    match tokio_tungstenite::connect_async(server.ws_url(Some(id))).await {
        Ok((ws, _)) => Ok(common::RawClient { ws }),
        Err(tungstenite::Error::Http(res)) => Err((
            res.status().as_u16(),
            res.headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned()),
        )),
        Err(e) => panic!("unexpected upgrade error: {e}"),
    }
}

#[tokio::test]
async fn connection_limits_per_node_and_per_ip() {
    let mut config = Config::default();
    config.limits.max_connections_per_ip = 2;
    let server = TestServer::start(config).await;
    let a = upgrade(&server, "a").await.unwrap();
    let _b = upgrade(&server, "b").await.unwrap();
    let refused = upgrade(&server, "c").await.err().unwrap();
    assert_eq!(refused, (429, Some("1".into())));
    assert_eq!(limited(&server, "connections_per_ip").await, 1.0);
    // A closed connection gives its place back.
    let mut a = a;
    a.ws.close(None).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match upgrade(&server, "c").await {
            Ok(_) => break,
            Err((429, _)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("place not given back: {e:?}"),
        }
    }

    let mut config = Config::default();
    config.limits.max_connections = 1;
    let full = TestServer::start(config).await;
    let _only = upgrade(&full, "x").await.unwrap();
    assert_eq!(upgrade(&full, "y").await.err().unwrap().0, 503);
    assert_eq!(limited(&full, "connections").await, 1.0);
    // The node still serves HTTP and its one client.
    assert!(
        reqwest::get(full.http_url("/health"))
            .await
            .unwrap()
            .status()
            .is_success()
    );
}

#[tokio::test]
async fn connect_rate_per_ip() {
    let mut config = Config::default();
    config.limits.connects_per_second_per_ip = 2;
    let server = TestServer::start(config).await;
    let mut refused = 0;
    for i in 0..12 {
        match upgrade(&server, &format!("c{i}")).await {
            Ok(mut c) => c.ws.close(None).await.unwrap(),
            Err((status, _)) => {
                assert_eq!(status, 429);
                refused += 1;
            }
        }
    }
    // A burst of 4 plus 2/s: most of 12 quick connects are refused, and each is counted.
    assert!(refused >= 6, "only {refused} of 12 refused");
    assert_eq!(limited(&server, "connect_rate").await, f64::from(refused));
}

#[tokio::test]
async fn message_rate_answers_1005_then_closes_1008() {
    let mut config = Config::default();
    config.limits.messages_per_second = 5;
    config.limits.rate_limit_strikes = 3;
    let server = TestServer::start(config).await;
    let mut c = server.raw("fast").await;
    let mut bystander = server.raw("calm").await;
    for i in 1..=20 {
        c.send_text(
            &json!({"message_type": "ping", "data": {"ts": 1}, "request_id": i}).to_string(),
        )
        .await;
    }
    // A burst of 5 (the rate) is served, the next 3 are refused by request id, then the
    // connection is closed.
    for i in 1..=5 {
        let pong = c.next_json().await;
        assert_eq!(
            (pong["message_type"].as_str(), pong["request_id"].as_i64()),
            (Some("pong"), Some(i))
        );
    }
    for i in 6..=8 {
        let err = c.next_json().await;
        assert_eq!(err["data"]["code"], 1005, "{err}");
        assert_eq!(err["request_id"], i);
    }
    assert_eq!(c.expect_close().await, 1008);
    assert_eq!(limited(&server, "message_rate").await, 4.0);
    // Others are not affected.
    bystander
        .send_text(r#"{"message_type":"ping","data":{"ts":1},"request_id":1}"#)
        .await;
    assert_eq!(bystander.next_json().await["message_type"], "pong");
}

#[tokio::test]
async fn nesting_and_room_count_limits_keep_the_connection() {
    let mut config = Config::default();
    config.limits.max_json_depth = 8;
    config.limits.max_rooms_per_client = 2;
    let server = TestServer::start(config).await;
    let mut c = server.raw("c").await;
    let deep = format!(
        r#"{{"message_type":"ping","data":{{"x":{}1{}}},"request_id":1}}"#,
        "[".repeat(20),
        "]".repeat(20)
    );
    c.send_text(&deep).await;
    let err = c.next_json().await;
    assert_eq!(err["data"]["code"], 1001, "{err}");
    assert_eq!(err["data"]["details"]["max_json_depth"], 8);
    assert_eq!(err["request_id"], 1, "the refusal names the request");
    for (i, room) in ["r1", "r2", "r3"].iter().enumerate() {
        c.send_text(
            &json!({"message_type": "join_room", "data": {"room_id": room}, "request_id": 10 + i})
                .to_string(),
        )
        .await;
    }
    assert_eq!(c.next_json().await["message_type"], "room_joined");
    assert_eq!(c.next_json().await["message_type"], "room_joined");
    let err = c.next_json().await;
    assert_eq!(err["data"]["code"], 2001, "{err}");
    assert_eq!(err["data"]["details"]["max_rooms_per_client"], 2);
    // Still connected and served.
    c.send_text(r#"{"message_type":"ping","data":{"ts":1},"request_id":99}"#)
        .await;
    assert_eq!(c.next_json().await["message_type"], "pong");
    assert_eq!(limited(&server, "json_depth").await, 1.0);
    assert_eq!(limited(&server, "rooms_per_client").await, 1.0);
}

#[tokio::test]
async fn handshake_timeout_drops_a_silent_socket() {
    let mut config = Config::default();
    config.limits.handshake_timeout = Duration::from_millis(300);
    let server = TestServer::start(config).await;
    let addr = server.running.local_addr();
    let ended_by_server = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        // Far beyond the server's timeout: if this fires, the server held the socket.
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // Half a request, then nothing.
        s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n").unwrap();
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) => {
                    return !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    );
                }
            }
        }
    })
    .await
    .unwrap();
    assert!(
        ended_by_server,
        "the server kept a silent half-open handshake"
    );
}

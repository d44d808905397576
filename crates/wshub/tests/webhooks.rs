//! Webhooks against a real HTTP receiver in the test: event payloads, signatures, batching,
//! retry after a 500, and join authorization (allow, deny, unreachable).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use common::scrape::Scrape;
use common::{TestServer, WAIT};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use wshub::Config;

const SECRET: &str = "webhook-test-secret";

/// What the receiver saw: each request's status answered, signature check, and body.
#[derive(Default)]
struct Receiver {
    requests: Mutex<Vec<(u16, bool, Value)>>,
    /// Requests to fail with 500 before answering 200.
    fail_first: AtomicUsize,
}

/// Checks `t=<t>,v1=<hex>` against HMAC-SHA256(secret, "<t>.<body>") and a fresh `t`.
fn signature_ok(headers: &HeaderMap, body: &[u8]) -> bool {
    let Some(header) = headers
        .get("x-wshub-signature")
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mut t = "";
    let mut v1 = "";
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = v,
            Some(("v1", v)) => v1 = v,
            _ => {}
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let fresh = t.parse::<u64>().is_ok_and(|t| now.abs_diff(t) < 60);
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    fresh && expected == v1
}

async fn receiver() -> (String, Arc<Receiver>) {
    let state = Arc::new(Receiver::default());
    let events = state.clone();
    let app = axum::Router::new()
        .route(
            "/events",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let state = events.clone();
                async move {
                    let failing = state
                        .fail_first
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok();
                    let status = if failing { 500 } else { 200 };
                    let body_json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    state.requests.lock().unwrap().push((
                        status,
                        signature_ok(&headers, &body),
                        body_json,
                    ));
                    StatusCode::from_u16(status).unwrap()
                }
            }),
        )
        .route(
            "/authorize",
            axum::routing::post(|headers: HeaderMap, body: axum::body::Bytes| async move {
                if !signature_ok(&headers, &body) {
                    return (StatusCode::UNAUTHORIZED, axum::Json(json!({})));
                }
                let req: Value = serde_json::from_slice(&body).unwrap();
                let room = req["room_id"].as_str().unwrap_or("");
                let answer = if room.starts_with("open") && req["client_id"] == "alice" {
                    json!({"allow": true})
                } else {
                    json!({"allow": false, "reason": format!("{} may not join {room}", req["client_id"])})
                };
                (StatusCode::OK, axum::Json(answer))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), state)
}

fn webhook_config(base: &str) -> Config {
    let mut config = Config::default();
    config.webhooks.url = format!("{base}/events");
    config.webhooks.secret = SECRET.into();
    config.webhooks.flush_interval = Duration::from_millis(50);
    config.webhooks.retry_backoff = Duration::from_millis(50);
    config
}

/// The events delivered (answered 200), in the order the receiver got them.
fn delivered(state: &Receiver) -> Vec<Value> {
    state
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|(status, _, _)| *status == 200)
        .flat_map(|(_, _, body)| body["events"].as_array().cloned().unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn events_arrive_signed_batched_and_retried_after_a_500() {
    let (base, state) = receiver().await;
    state.fail_first.store(1, Ordering::SeqCst);
    let server = TestServer::start(webhook_config(&base)).await;

    let alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    alice.join_room("r").await.unwrap();
    bob.join_room("r").await.unwrap();
    alice
        .room_message("r", json!({"text": "hi"}))
        .await
        .unwrap();
    bob.expect("room_message", WAIT).await.unwrap();
    bob.leave_room("r").await.unwrap();
    bob.close().await;

    let deadline = tokio::time::Instant::now() + WAIT;
    let events = loop {
        let events = delivered(&state);
        if events
            .iter()
            .any(|e| e["event"] == "disconnect" && e["client_id"] == "bob")
        {
            break events;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no disconnect event: {events:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    {
        let requests = state.requests.lock().unwrap();
        assert_eq!(requests[0].0, 500, "the first POST was failed on purpose");
        assert!(
            requests.iter().all(|(_, signed, _)| *signed),
            "every request carries a valid, fresh signature"
        );
        assert!(
            requests
                .iter()
                .all(|(_, _, body)| body["node_id"].is_string())
        );
    }

    let of = |client: &str| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["client_id"] == client)
            .map(|e| match e["room_id"].as_str() {
                Some(room) => format!("{} {room}", e["event"].as_str().unwrap()),
                None => e["event"].as_str().unwrap().to_owned(),
            })
            .collect()
    };
    // Each event once, in order per client, the failed batch included (it was retried).
    assert_eq!(of("alice"), ["connect", "join r", "room_message r"]);
    assert_eq!(of("bob"), ["connect", "join r", "leave r", "disconnect"]);
    let message = events
        .iter()
        .find(|e| e["event"] == "room_message")
        .unwrap();
    assert_eq!(message["content"], json!({"text": "hi"}));
    let disconnect = events.iter().find(|e| e["event"] == "disconnect").unwrap();
    assert_eq!(disconnect["code"], 1000);
    assert!(events.iter().all(|e| e["timestamp"].as_i64().unwrap() > 0));

    let m = Scrape::fetch(&server.http_url("/metrics")).await;
    assert_eq!(m.get("wshub_webhook_request_errors_total", &[]), 1.0);
    assert_eq!(m.get("wshub_webhook_events_sent_total", &[]), 7.0);
    assert_eq!(m.get("wshub_webhook_events_failed_total", &[]), 0.0);
}

#[tokio::test]
async fn only_subscribed_events_are_sent() {
    let (base, state) = receiver().await;
    let mut config = webhook_config(&base);
    config.webhooks.events = vec!["room_message".into()];
    let server = TestServer::start(config).await;
    let alice = server.client("alice").await;
    alice.join_room("r").await.unwrap();
    alice.room_message("r", json!(1)).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while delivered(&state).is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no event delivered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Give a stray connect/join event time to show up, then check there is none.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let events = delivered(&state);
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["event"], "room_message");
}

#[tokio::test]
async fn joins_ask_the_authorizer() {
    let (base, _state) = receiver().await;
    let mut config = Config::default();
    config.webhooks.authorize_join = format!("{base}/authorize");
    config.webhooks.secret = SECRET.into();
    let server = TestServer::start(config).await;
    let alice = server.client("alice").await;
    let mallory = server.client("mallory").await;

    alice.join_room("open-1").await.unwrap();
    let err = alice.join_room("secret").await.unwrap_err();
    assert_eq!(err.code().map(|c| c.as_u16()), Some(2001), "{err}");
    assert!(err.to_string().contains("may not join secret"), "{err}");
    let err = mallory.join_room("open-1").await.unwrap_err();
    assert_eq!(err.code().map(|c| c.as_u16()), Some(2001), "{err}");

    // The authorizer unreachable: refused with 1004, not allowed.
    let mut config = Config::default();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    config.webhooks.authorize_join = format!("http://127.0.0.1:{port}/authorize");
    config.webhooks.secret = SECRET.into();
    config.webhooks.authorize_timeout = Duration::from_millis(500);
    let down = TestServer::start(config).await;
    let carol = down.client("carol").await;
    let err = carol.join_room("open-1").await.unwrap_err();
    assert_eq!(err.code().map(|c| c.as_u16()), Some(1004), "{err}");
}

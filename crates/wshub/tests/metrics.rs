//! `/metrics` after scripted traffic: every counter moved by exactly what the script did,
//! GoHub's names agree with ours, and the Grafana dashboard only uses metrics that exist.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::scrape::Scrape;
use common::{RawClient, TestServer};
use serde_json::json;
use wshub::Config;

async fn scrape(server: &TestServer) -> Scrape {
    Scrape::fetch(&server.http_url("/metrics")).await
}

/// Sends `text` and returns its length (what `wshub_bytes_in_total` must count).
async fn send(c: &mut RawClient, text: &str) -> usize {
    c.send_text(text).await;
    text.len()
}

/// Reads the next text frame; returns it and its size on the wire (header included).
async fn recv(c: &mut RawClient) -> (serde_json::Value, usize) {
    let text = c.next_text().await;
    let header = if text.len() < 126 { 2 } else { 4 };
    (serde_json::from_str(&text).unwrap(), text.len() + header)
}

#[tokio::test]
async fn counters_follow_scripted_traffic_exactly() {
    let mut config = Config::default();
    config.rooms.presence_events = true;
    let server = TestServer::start(config).await;
    let base = scrape(&server).await;
    assert_eq!(base.get("wshub_connections", &[]), 0.0);

    let mut bytes_in = 0;
    let mut bytes_out = 0;
    let (mut a, mut b) = (server.raw("a").await, server.raw("b").await);
    // `raw` read each `connected` frame: 2 frames of known shape, counted below via the
    // scrape instead (their size depends on the ids).
    bytes_in += send(
        &mut a,
        r#"{"message_type":"create_room","data":{"room_id":"r"},"request_id":1}"#,
    )
    .await;
    bytes_out += recv(&mut a).await.1;
    bytes_in += send(
        &mut a,
        r#"{"message_type":"join_room","data":{"room_id":"r"},"request_id":2}"#,
    )
    .await;
    bytes_out += recv(&mut a).await.1;
    bytes_in += send(
        &mut b,
        r#"{"message_type":"join_room","data":{"room_id":"r"},"request_id":3}"#,
    )
    .await;
    bytes_out += recv(&mut b).await.1;
    // a hears b join.
    let (joined, n) = recv(&mut a).await;
    assert_eq!(joined["message_type"], "presence_join");
    bytes_out += n;
    for i in 0..3 {
        bytes_in += send(
            &mut a,
            &json!({"message_type": "room_message", "data": {"room_id": "r", "content": i}})
                .to_string(),
        )
        .await;
        let (msg, n) = recv(&mut b).await;
        assert_eq!(msg["data"]["content"], i);
        bytes_out += n;
    }
    bytes_in += send(&mut a, "this is not json").await;
    let (err, n) = recv(&mut a).await;
    assert_eq!(err["data"]["code"], 1001);
    bytes_out += n;
    bytes_in += send(&mut a, r#"{"message_type":"no_such_type"}"#).await;
    let (err, n) = recv(&mut a).await;
    assert_eq!(err["data"]["code"], 1000);
    bytes_out += n;

    let m = scrape(&server).await;
    let get = |name: &str, labels: &[(&str, &str)]| m.get(name, labels);
    let typed = |name: &str, t: &str| m.get(name, &[("type", t)]);
    assert_eq!(get("wshub_connections", &[]), 2.0);
    assert_eq!(get("wshub_connections_opened_total", &[]), 2.0);
    assert_eq!(typed("wshub_messages_in_total", "create_room"), 1.0);
    assert_eq!(typed("wshub_messages_in_total", "join_room"), 2.0);
    assert_eq!(typed("wshub_messages_in_total", "room_message"), 3.0);
    assert_eq!(typed("wshub_messages_in_total", "invalid"), 1.0);
    assert_eq!(typed("wshub_messages_in_total", "other"), 1.0);
    assert_eq!(get("wshub_messages_in_total", &[]), 8.0);
    assert_eq!(get("wshub_bytes_in_total", &[]), bytes_in as f64);
    assert_eq!(typed("wshub_messages_out_total", "connected"), 2.0);
    assert_eq!(typed("wshub_messages_out_total", "room_created"), 1.0);
    assert_eq!(typed("wshub_messages_out_total", "room_joined"), 2.0);
    assert_eq!(typed("wshub_messages_out_total", "presence_join"), 1.0);
    // Each of the 3 publications reached b only (the sender is excluded).
    assert_eq!(typed("wshub_messages_out_total", "room_message"), 3.0);
    assert_eq!(typed("wshub_messages_out_total", "error"), 2.0);
    assert_eq!(get("wshub_messages_out_total", &[]), 11.0);
    assert_eq!(get("wshub_errors_total", &[("code", "1001")]), 1.0);
    assert_eq!(get("wshub_errors_total", &[("code", "1000")]), 1.0);
    assert_eq!(get("wshub_errors_total", &[]), 2.0);
    assert_eq!(get("wshub_room_joins_total", &[]), 2.0);
    // Five fan-outs: a's presence_join (to nobody yet), b's (to a), three publications (to b).
    assert_eq!(get("wshub_fanout_recipients_count", &[]), 5.0);
    assert_eq!(get("wshub_fanout_recipients_sum", &[]), 4.0);
    assert_eq!(get("wshub_delivery_latency_seconds_count", &[]), 5.0);
    assert_eq!(get("wshub_message_in_size_bytes_count", &[]), 8.0);
    assert_eq!(get("wshub_rooms", &[]), 1.0);
    assert_eq!(get("wshub_room_members", &[]), 2.0);
    // What the two clients read, plus the two `connected` frames `raw` consumed.
    let connected_frames = m.get("wshub_bytes_out_total", &[]) - bytes_out as f64;
    assert!(
        (2.0 * 60.0..2.0 * 125.0).contains(&connected_frames),
        "bytes out beyond what the clients read: {connected_frames}"
    );

    // GoHub's names read the same counters.
    assert_eq!(get("gohub_connections_total", &[]), 2.0);
    assert_eq!(get("gohub_active_connections", &[]), 2.0);
    assert_eq!(get("gohub_connected_clients", &[]), 2.0);
    assert_eq!(get("gohub_messages_total", &[]), 8.0);
    assert_eq!(get("gohub_message_rate_in", &[]), 8.0);
    assert_eq!(get("gohub_messages_sent_total", &[]), 11.0);
    assert_eq!(get("gohub_room_joins", &[]), 2.0);
    assert_eq!(get("gohub_room_messages", &[]), 3.0);
    assert_eq!(get("gohub_errors_total", &[]), 2.0);
    assert_eq!(get("gohub_rooms_total", &[]), 1.0);
    assert_eq!(get("gohub_message_latency_count", &[]), 5.0);
    assert_eq!(get("gohub_disconnection_rate", &[]), 0.0);

    // b leaves by closing: one normal close, its membership gone.
    b.ws.close(None).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let m = loop {
        let m = scrape(&server).await;
        if m.get("wshub_connections", &[]) == 1.0 {
            break m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "b never counted as closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        m.get("wshub_connections_closed_total", &[("reason", "normal")]),
        1.0
    );
    assert_eq!(m.get("wshub_connections_closed_total", &[]), 1.0);
    assert_eq!(m.get("gohub_disconnection_rate", &[]), 1.0);
    assert_eq!(m.get("wshub_room_leaves_total", &[]), 1.0);
    assert_eq!(m.get("wshub_room_members", &[]), 1.0);
}

#[tokio::test]
async fn auth_results_are_counted_by_source() {
    let mut config = Config::default();
    config.auth.enabled = true;
    config.auth.secret_key = "metrics-test-secret".into();
    config.auth.allow_anonymous = false;
    let server = TestServer::start(config).await;
    let token = |user: &str| {
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 60;
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &json!({"user_id": user, "sub": user, "permissions": ["join:room"], "iss": "gohub", "exp": exp}),
            &jsonwebtoken::EncodingKey::from_secret(b"metrics-test-secret"),
        )
        .unwrap()
    };
    let url = server.ws_url(None);

    // A bad token in the query: refused at upgrade.
    let refused = tokio_tungstenite::connect_async(format!("{url}?token=garbage")).await;
    assert!(refused.is_err());
    // A good one in the header.
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        url.as_str(),
    )
    .unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", token("alice")).parse().unwrap(),
    );
    let (_alice, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    // In band: a good token, then a refresh with a bad one.
    let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    let mut bob = RawClient { ws };
    bob.send_text(
        &json!({"message_type": "authenticate", "data": {"token": token("bob")}, "request_id": 1})
            .to_string(),
    )
    .await;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        seen.push(
            bob.next_json().await["message_type"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert!(seen.contains(&"authenticated".to_owned()), "{seen:?}");
    bob.send_text(r#"{"message_type":"authenticate","data":{"token":"bad"},"request_id":2}"#)
        .await;
    assert_eq!(bob.next_json().await["data"]["code"], 2003);

    let m = scrape(&server).await;
    let auth = |source: &str, result: &str| {
        m.get(
            "wshub_auth_total",
            &[("source", source), ("result", result)],
        )
    };
    assert_eq!(auth("query", "failure"), 1.0);
    assert_eq!(auth("header", "success"), 1.0);
    assert_eq!(auth("in_band", "success"), 1.0);
    assert_eq!(auth("refresh", "failure"), 1.0);
    assert_eq!(m.get("wshub_auth_total", &[]), 4.0);
    assert_eq!(m.get("gohub_auth_success", &[]), 2.0);
    assert_eq!(m.get("gohub_auth_failure", &[]), 2.0);
    assert_eq!(m.get("wshub_errors_total", &[("code", "2003")]), 1.0);
}

/// Every metric a dashboard panel queries exists in a scrape (histograms by their
/// `_bucket`/`_sum`/`_count` series), so the dashboard cannot silently show "No data".
#[tokio::test]
async fn dashboard_queries_only_existing_metrics() {
    let server = TestServer::start(Config::default()).await;
    let m = scrape(&server).await;
    let names = m.names();
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/grafana/wshub-dashboard.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(
        exprs.len() >= 10,
        "dashboard has only {} queries",
        exprs.len()
    );
    let mut checked = 0;
    for expr in &exprs {
        for name in metric_names(expr) {
            assert!(
                names.contains(name.as_str()),
                "dashboard query {expr:?} uses {name}, which /metrics does not have"
            );
            checked += 1;
        }
    }
    assert!(
        checked >= exprs.len(),
        "every query names at least one metric"
    );
}

fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| collect_exprs(i, out)),
        _ => {}
    }
}

/// Identifiers in a PromQL expression that name our metrics.
fn metric_names(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| t.starts_with("wshub_") || t.starts_with("gohub_") || t.starts_with("process_"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn history_operations_are_timed() {
    let mut config = Config::default();
    config.rooms.history.size = 10;
    let server = TestServer::start(config).await;
    let mut a = server.raw("a").await;
    a.send_text(r#"{"message_type":"join_room","data":{"room_id":"h"},"request_id":1}"#)
        .await;
    assert_eq!(a.next_json().await["message_type"], "room_joined");
    for i in 0..2 {
        a.send_text(&json!({"message_type": "room_message", "data": {"room_id": "h", "content": i}, "request_id": 10 + i}).to_string())
            .await;
        assert_eq!(a.next_json().await["message_type"], "published");
    }
    a.send_text(r#"{"message_type":"history","data":{"room_id":"h"},"request_id":3}"#)
        .await;
    let history = a.next_json().await;
    assert_eq!(history["data"]["publications"].as_array().unwrap().len(), 2);

    let m = scrape(&server).await;
    let ops = |op: &str| m.get("wshub_history_latency_seconds_count", &[("op", op)]);
    assert_eq!(ops("append"), 2.0);
    assert_eq!(ops("read"), 1.0);
    assert_eq!(m.get("wshub_history_errors_total", &[]), 0.0);
}

/// `metrics.listen` moves `/metrics` off the public listener.
#[tokio::test]
async fn metrics_can_listen_on_a_separate_address() {
    let mut config = Config::default();
    config.metrics.listen = "127.0.0.1:0".into();
    let server = TestServer::start(config).await;
    let public = reqwest::get(server.http_url("/metrics")).await.unwrap();
    assert_eq!(public.status(), reqwest::StatusCode::NOT_FOUND);
    let private = server.running.metrics_addr().expect("metrics address");
    let m = Scrape::fetch(&format!("http://{private}/metrics")).await;
    assert_eq!(m.get("wshub_connections", &[]), 0.0);
    let _c = server.raw("x").await;
    let m = Scrape::fetch(&format!("http://{private}/metrics")).await;
    assert_eq!(m.get("wshub_connections", &[]), 1.0);
    assert!(
        reqwest::get(format!("http://{private}/health"))
            .await
            .unwrap()
            .status()
            .is_success()
    );
}

//! The admin HTTP API over a real socket: every route with good and bad input.
#![allow(clippy::unwrap_used)]

mod common;

use common::{TestServer, WAIT};
use reqwest::StatusCode;
use serde_json::{Value, json};
use wshub::Config;

const KEY: &str = "test-admin-key";

struct Api {
    http: reqwest::Client,
    server: TestServer,
}

impl Api {
    async fn start(config: Config) -> Api {
        Api {
            http: reqwest::Client::new(),
            server: TestServer::start(config).await,
        }
    }

    async fn keyed() -> Api {
        let mut config = Config::default();
        config.admin.api_key = KEY.into();
        config.admin.max_body_size = 4096;
        Api::start(config).await
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.server.http_url(path))
            .bearer_auth(KEY)
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.req(method, path);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        let text = res.text().await.unwrap();
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
        };
        (status, json)
    }
}

use reqwest::Method as M;

fn error_code(body: &Value) -> u64 {
    body["error"]["code"]
        .as_u64()
        .unwrap_or_else(|| panic!("no error code in {body}"))
}

#[tokio::test]
async fn admin_key_is_required_when_set() {
    let api = Api::keyed().await;
    let url = api.server.http_url("/api/stats");
    let res = api.http.get(&url).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let body: Value = res.json().await.unwrap();
    assert_eq!(error_code(&body), 2000);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Bearer")
    );
    let res = api
        .http
        .get(&url)
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(error_code(&res.json().await.unwrap()), 2001);
    let res = api.http.get(&url).bearer_auth(KEY).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // /health and /metrics stay open.
    let res = api
        .http
        .get(api.server.http_url("/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = api
        .http
        .get(api.server.http_url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let scrape = common::scrape::Scrape::parse(res.text().await.unwrap());
    assert_eq!(scrape.get("wshub_connections", &[]), 0.0);
}

#[tokio::test]
async fn open_api_without_a_key() {
    let api = Api::start(Config::default()).await;
    let res = api
        .http
        .get(api.server.http_url("/api/nodes"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn rooms_routes() {
    let api = Api::keyed().await;
    let (s, body) = api
        .call(
            M::POST,
            "/api/rooms",
            Some(json!({"id": "ops", "name": "Ops", "max_clients": 3})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(
        body,
        json!({"id": "ops", "name": "Ops", "max_clients": 3, "members": 0})
    );
    let (s, body) = api
        .call(M::POST, "/api/rooms", Some(json!({"id": "ops"})))
        .await;
    assert_eq!((s, error_code(&body)), (StatusCode::CONFLICT, 3001));
    let (s, body) = api
        .call(M::POST, "/api/rooms", Some(json!({"name": "no id"})))
        .await;
    assert_eq!((s, error_code(&body)), (StatusCode::BAD_REQUEST, 1001));
    assert!(
        body["error"]["message"].as_str().unwrap().contains("id"),
        "{body}"
    );
    let (s, body) = api
        .call(M::POST, "/api/rooms", Some(json!({"id": ""})))
        .await;
    assert_eq!((s, error_code(&body)), (StatusCode::BAD_REQUEST, 1001));
    let res = api
        .req(M::POST, "/api/rooms")
        .header("content-type", "application/json")
        .body("{broken")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    // A wrong value is named by its kind and position, never quoted back.
    let (s, body) = api
        .call(
            M::POST,
            "/api/rooms",
            Some(json!({"id": ["<script>x</script>"]})),
        )
        .await;
    assert_eq!((s, error_code(&body)), (StatusCode::BAD_REQUEST, 1001));
    let message = body["error"]["message"].as_str().unwrap();
    assert!(!body.to_string().contains("script"), "{body}");
    assert!(message.contains("invalid type: sequence"), "{message}");
    let res = api
        .req(M::POST, "/api/rooms")
        .body(r#"{"id":"r"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let mut member = api.server.client("m1").await;
    member.join_room("ops").await.unwrap();

    let (s, body) = api.call(M::GET, "/api/rooms", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        body["rooms"],
        json!([{"id": "ops", "name": "Ops", "max_clients": 3, "members": 1}])
    );
    let (s, body) = api.call(M::GET, "/api/rooms/ops", None).await;
    assert_eq!((s, body["members"].as_u64()), (StatusCode::OK, Some(1)));
    let (s, body) = api.call(M::GET, "/api/rooms/nope", None).await;
    assert_eq!((s, error_code(&body)), (StatusCode::NOT_FOUND, 3000));
    let (s, body) = api.call(M::GET, "/api/rooms/ops/members", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        body,
        json!({"room_id": "ops", "members": [{"client_id": "m1"}]})
    );
    let (s, body) = api.call(M::GET, "/api/rooms/nope/members", None).await;
    assert_eq!((s, error_code(&body)), (StatusCode::NOT_FOUND, 3000));

    let (s, _) = api.call(M::DELETE, "/api/rooms/ops", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(
        member.expect("room_deleted", WAIT).await.unwrap().data,
        json!({"room_id": "ops"})
    );
    let (s, body) = api.call(M::DELETE, "/api/rooms/ops", None).await;
    assert_eq!((s, error_code(&body)), (StatusCode::NOT_FOUND, 3000));
}

#[tokio::test]
async fn messages_reach_clients_as_if_a_client_sent_them() {
    let api = Api::keyed().await;
    let mut a = api.server.client("a").await;
    let mut b = api.server.client("b").await;
    b.join_room("news").await.unwrap();

    let (s, body) = api
        .call(
            M::POST,
            "/api/broadcast",
            Some(json!({"message": {"alert": 1}})),
        )
        .await;
    assert_eq!((s, body), (StatusCode::OK, json!({"delivered": 2})));
    for c in [&mut a, &mut b] {
        let m = c.expect("broadcast", WAIT).await.unwrap();
        assert_eq!(m.data["content"], json!({"alert": 1}));
        assert_eq!(m.data["sender_id"], "server");
        assert!(m.data["timestamp"].as_i64().unwrap() > 0);
    }

    let (s, body) = api
        .call(
            M::POST,
            "/api/broadcast/room",
            Some(json!({"room_id": "news", "message": "headline"})),
        )
        .await;
    assert_eq!((s, body), (StatusCode::OK, json!({"delivered": 1})));
    let m = b.expect("room_message", WAIT).await.unwrap();
    assert_eq!(
        (
            m.data["content"].clone(),
            m.data["room_id"].clone(),
            m.data["sender_id"].clone()
        ),
        (json!("headline"), json!("news"), json!("server"))
    );
    let (s, body) = api
        .call(
            M::POST,
            "/api/broadcast/room",
            Some(json!({"room_id": "nope", "message": 1})),
        )
        .await;
    assert_eq!((s, error_code(&body)), (StatusCode::NOT_FOUND, 3000));
    let (s, body) = api
        .call(
            M::POST,
            "/api/broadcast/room",
            Some(json!({"room_id": "news"})),
        )
        .await;
    assert_eq!((s, error_code(&body)), (StatusCode::BAD_REQUEST, 1001));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("message"),
        "{body}"
    );

    let (s, body) = api
        .call(
            M::POST,
            "/api/clients/a/messages",
            Some(json!({"message": {"dm": true}})),
        )
        .await;
    assert_eq!((s, body), (StatusCode::OK, json!({"delivered": 1})));
    let m = a.expect("direct_message", WAIT).await.unwrap();
    assert_eq!(
        (m.data["content"].clone(), m.data["sender_id"].clone()),
        (json!({"dm": true}), json!("server"))
    );
    let (s, body) = api
        .call(
            M::POST,
            "/api/clients/ghost/messages",
            Some(json!({"message": 1})),
        )
        .await;
    assert_eq!((s, error_code(&body)), (StatusCode::NOT_FOUND, 4000));
    let (s, body) = api
        .call(M::POST, "/api/broadcast", Some(json!({"msg": 1})))
        .await;
    assert_eq!((s, error_code(&body)), (StatusCode::BAD_REQUEST, 1001));

    // Bodies over admin.max_body_size (4 KiB here) get 413.
    let big = json!({"message": "x".repeat(5000)});
    let (s, body) = api.call(M::POST, "/api/broadcast", Some(big)).await;
    assert_eq!(
        (s, error_code(&body)),
        (StatusCode::PAYLOAD_TOO_LARGE, 4002)
    );
}

#[tokio::test]
async fn sender_id_is_configurable() {
    let mut config = Config::default();
    config.admin.sender_id = "ops-bot".into();
    let api = Api::start(config).await;
    let mut a = api.server.client("a").await;
    api.call(M::POST, "/api/broadcast", Some(json!({"message": 1})))
        .await;
    assert_eq!(
        a.expect("broadcast", WAIT).await.unwrap().data["sender_id"],
        "ops-bot"
    );
}

#[tokio::test]
async fn clients_stats_nodes() {
    let api = Api::keyed().await;
    let mut a = api.server.client("a").await;
    a.join_room("r").await.unwrap();
    let _b = api.server.client("b").await;
    let (s, body) = api.call(M::GET, "/api/clients", None).await;
    assert_eq!(s, StatusCode::OK);
    let clients = body["clients"].as_array().unwrap();
    assert_eq!(clients.len(), 2);
    assert_eq!(clients[0]["client_id"], "a");
    assert_eq!(clients[0]["rooms"], json!(["r"]));
    assert!(
        clients[0]["remote_addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );

    let node_id = api.server.running.handle().node_id().to_owned();
    let (s, body) = api.call(M::GET, "/api/stats", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (
            body["clients"].as_u64(),
            body["rooms"].as_u64(),
            body["nodes"].as_u64()
        ),
        (Some(2), Some(1), Some(1))
    );
    assert_eq!(body["per_node"][0]["node_id"], node_id.as_str());
    let (s, body) = api.call(M::GET, "/api/nodes", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["nodes"][0]["node_id"], node_id.as_str());
    assert_eq!(body["nodes"][0]["clients"], 2);

    let (s, _) = api.call(M::DELETE, "/api/clients/a", None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(common::expect_closed(&mut a).await, Some(1000));
    let (s, body) = api.call(M::DELETE, "/api/clients/a", None).await;
    assert_eq!((s, error_code(&body)), (StatusCode::NOT_FOUND, 4000));
    let (s, body) = api.call(M::GET, "/api/nope", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(body["error"]["code"].is_u64());
}

/// Every route the API serves, as (method, OpenAPI path, concrete path).
const ROUTES: &[(&str, &str, &str)] = &[
    ("post", "/api/broadcast", "/api/broadcast"),
    ("post", "/api/broadcast/room", "/api/broadcast/room"),
    (
        "post",
        "/api/clients/{id}/messages",
        "/api/clients/x/messages",
    ),
    ("get", "/api/stats", "/api/stats"),
    ("get", "/api/rooms", "/api/rooms"),
    ("post", "/api/rooms", "/api/rooms"),
    ("get", "/api/rooms/{id}", "/api/rooms/x"),
    ("delete", "/api/rooms/{id}", "/api/rooms/x"),
    ("get", "/api/rooms/{id}/members", "/api/rooms/x/members"),
    ("get", "/api/clients", "/api/clients"),
    ("delete", "/api/clients/{id}", "/api/clients/x"),
    ("get", "/api/nodes", "/api/nodes"),
    ("get", "/api/openapi.json", "/api/openapi.json"),
];

#[tokio::test]
async fn openapi_lists_every_route_and_only_real_ones() {
    let api = Api::keyed().await;
    let (s, doc) = api.call(M::GET, "/api/openapi.json", None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    let mut documented = 0;
    for (path, item) in paths {
        documented += item.as_object().unwrap().len();
        for method in item.as_object().unwrap().keys() {
            assert!(
                ROUTES.iter().any(|(m, p, _)| m == method && p == path),
                "documented but not in the route list: {method} {path}"
            );
        }
    }
    assert_eq!(documented, ROUTES.len());
    for (method, path, concrete) in ROUTES {
        assert!(
            paths[*path][*method].is_object(),
            "{method} {path} undocumented"
        );
        // The route exists: whatever it answers, it is not "no such route" or "wrong method".
        let res = api
            .req(method.to_uppercase().parse().unwrap(), concrete)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_ne!(
            res.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {concrete}"
        );
        let body: Value = res.json().await.unwrap_or(Value::Null);
        assert_ne!(
            body["error"]["message"], "no such API route",
            "{method} {concrete}"
        );
    }
    assert!(doc["components"]["securitySchemes"]["admin"].is_object());
}

#[tokio::test]
async fn static_dir_serves_files_beside_the_routes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), "<h1>chat</h1>").unwrap();
    std::fs::write(dir.path().join("app.js"), "console.log(1)").unwrap();
    let mut config = Config::default();
    config.server.static_dir = dir.path().to_string_lossy().into_owned();
    let api = Api::start(config).await;
    let get = |path: &str| api.http.get(api.server.http_url(path)).send();
    let index = get("/").await.unwrap();
    assert_eq!(index.status(), StatusCode::OK);
    assert_eq!(index.text().await.unwrap(), "<h1>chat</h1>");
    let js = get("/app.js").await.unwrap();
    assert_eq!(js.headers()["content-type"], "text/javascript");
    assert_eq!(
        get("/missing.css").await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    // Routes win over files.
    assert_eq!(get("/health").await.unwrap().status(), StatusCode::OK);
    assert_eq!(get("/api/stats").await.unwrap().status(), StatusCode::OK);

    let mut bad = Config::default();
    bad.server.static_dir = "/definitely/not/here".into();
    let err = bad.validate().unwrap_err();
    assert!(err.to_string().contains("server.static_dir"), "{err}");
}

/// A publication to a room that does not exist is refused before it is stored; one to a
/// registered room without members on this node is stored and acknowledged.
#[tokio::test]
async fn room_publication_checks_the_registry_before_the_history() {
    let mut config = Config::default();
    config.admin.api_key = KEY.into();
    config.rooms.history.size = 10;
    let api = Api::start(config).await;
    let (status, body) = api
        .call(
            M::POST,
            "/api/broadcast/room",
            Some(json!({"room_id": "ghost", "message": "m1"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(error_code(&body), 3000);
    let (status, _) = api
        .call(M::POST, "/api/rooms", Some(json!({"id": "kept"})))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = api
        .call(
            M::POST,
            "/api/broadcast/room",
            Some(json!({"room_id": "kept", "message": "k1"})),
        )
        .await;
    assert!(status.is_success(), "{status} {body}");

    // The refused one left nothing behind; the accepted one is offset 1.
    let mut c = api.server.raw("reader").await;
    c.send_text(r#"{"message_type":"join_room","data":{"room_id":"ghost"},"request_id":1}"#)
        .await;
    let joined = c.next_json().await;
    assert_eq!(joined["data"]["offset"], 0, "{joined}");
    c.send_text(r#"{"message_type":"history","data":{"room_id":"kept"},"request_id":2}"#)
        .await;
    let history = c.next_json().await;
    let publications = history["data"]["publications"].as_array().unwrap();
    assert_eq!(publications.len(), 1, "{history}");
    assert_eq!(publications[0]["offset"], 1);
}

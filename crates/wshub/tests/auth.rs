//! Authentication and permissions over real sockets, with tokens made in the test.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{TestServer, WAIT};
use futures_util::StreamExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use wshub::Config;
use wshub_client::{Client, ClientOptions, ErrorCode};

const SECRET: &str = "auth-test-secret";

fn keys_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keys")
}

fn key_file(name: &str) -> String {
    keys_dir().join(name).to_string_lossy().into_owned()
}

fn now() -> i64 {
    wshub_protocol::now_millis() / 1000
}

fn claims(user: &str, perms: &[&str]) -> Value {
    json!({"user_id": user, "permissions": perms, "iss": "gohub", "iat": now(), "exp": now() + 3600})
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).unwrap()
}

fn hs(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        claims,
    )
}

fn auth_config() -> Config {
    let mut c = Config::default();
    c.auth.enabled = true;
    c.auth.secret_key = SECRET.into();
    c.auth.allow_anonymous = false;
    c.auth.leeway = Duration::ZERO;
    c
}

async fn connect_token(server: &TestServer, token: &str) -> Result<Client, wshub_client::Error> {
    Client::connect(&format!("{}?token={token}", server.ws_url(None))).await
}

/// Status and body of a refused upgrade.
async fn refused(server: &TestServer, token: Option<&str>) -> (u16, String) {
    let url = match token {
        Some(t) => format!("{}?token={t}", server.ws_url(None)),
        None => server.ws_url(None),
    };
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => (
            res.status().as_u16(),
            String::from_utf8_lossy(res.body().as_deref().unwrap_or_default()).into_owned(),
        ),
        Ok(_) => panic!("upgrade unexpectedly accepted"),
        Err(e) => panic!("unexpected error {e}"),
    }
}

#[tokio::test]
async fn each_algorithm_is_accepted_with_its_key() {
    // HMAC secret.
    let server = TestServer::start(auth_config()).await;
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        let t = sign(
            alg,
            &EncodingKey::from_secret(SECRET.as_bytes()),
            &claims("hs-user", &[]),
        );
        let c = connect_token(&server, &t).await.unwrap();
        assert_eq!(c.client_id(), "hs-user", "{alg:?}");
    }

    // PEM public keys of each family.
    let cases: &[(&str, &str, &[Algorithm])] = &[
        (
            "rsa_public.pem",
            "rsa_private.pem",
            &[Algorithm::RS256, Algorithm::RS512, Algorithm::PS256],
        ),
        ("ec_public.pem", "ec_private.pem", &[Algorithm::ES256]),
        ("ed_public.pem", "ed_private.pem", &[Algorithm::EdDSA]),
    ];
    for (public, private, algs) in cases {
        let mut config = auth_config();
        config.auth.secret_key.clear();
        config.auth.public_key_file = key_file(public);
        let server = TestServer::start(config).await;
        let pem = std::fs::read(keys_dir().join(private)).unwrap();
        for alg in *algs {
            let key = match alg {
                Algorithm::ES256 => EncodingKey::from_ec_pem(&pem).unwrap(),
                Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem).unwrap(),
                _ => EncodingKey::from_rsa_pem(&pem).unwrap(),
            };
            let c = connect_token(&server, &sign(*alg, &key, &claims("pk-user", &[])))
                .await
                .unwrap_or_else(|e| panic!("{alg:?} with {public}: {e}"));
            assert_eq!(c.client_id(), "pk-user");
        }
    }
}

#[tokio::test]
async fn jwks_file_keys_are_matched_by_kid_and_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let pem = std::fs::read(keys_dir().join("rsa_private.pem")).unwrap();
    let key = EncodingKey::from_rsa_pem(&pem).unwrap();
    let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&key, Algorithm::RS256).unwrap();
    jwk.common.key_id = Some("k1".into());
    let jwks_path = dir.path().join("jwks.json");
    std::fs::write(&jwks_path, json!({"keys": [jwk]}).to_string()).unwrap();

    let mut config = auth_config();
    config.auth.secret_key.clear();
    config.auth.jwks_file = jwks_path.to_string_lossy().into_owned();
    let server = TestServer::start(config.clone()).await;
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("k1".into());
    let token = jsonwebtoken::encode(&header, &claims("jwks-user", &[]), &key).unwrap();
    assert_eq!(
        connect_token(&server, &token).await.unwrap().client_id(),
        "jwks-user"
    );
    let mut other_kid = Header::new(Algorithm::RS256);
    other_kid.kid = Some("k2".into());
    let wrong = jsonwebtoken::encode(&other_kid, &claims("jwks-user", &[]), &key).unwrap();
    assert_eq!(refused(&server, Some(&wrong)).await.0, 401);

    // The set is re-read on reload: with the key renamed to k2 the k2 token passes.
    let mut jwk2 = jsonwebtoken::jwk::Jwk::from_encoding_key(&key, Algorithm::RS256).unwrap();
    jwk2.common.key_id = Some("k2".into());
    std::fs::write(&jwks_path, json!({"keys": [jwk2]}).to_string()).unwrap();
    server.running.handle().reload(config).unwrap();
    assert_eq!(
        connect_token(&server, &wrong).await.unwrap().client_id(),
        "jwks-user"
    );
}

#[tokio::test]
async fn every_rejection_case_gets_401_invalid_token() {
    let mut config = auth_config();
    config.auth.audience = "wshub-tests".into();
    let server = TestServer::start(config).await;
    let good = |extra: Value| {
        let mut c = claims("u", &[]);
        c["aud"] = json!("wshub-tests");
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    // Sanity: the well-formed token passes.
    connect_token(&server, &hs(&good(json!({})))).await.unwrap();

    let rsa_public = std::fs::read(keys_dir().join("rsa_public.pem")).unwrap();
    let cases: Vec<(&str, String)> = vec![
        (
            "bad signature",
            sign(
                Algorithm::HS256,
                &EncodingKey::from_secret(b"other"),
                &good(json!({})),
            ),
        ),
        ("expired", hs(&good(json!({"exp": now() - 60})))),
        ("not yet valid", hs(&good(json!({"nbf": now() + 600})))),
        ("wrong issuer", hs(&good(json!({"iss": "someone-else"})))),
        (
            "wrong audience",
            hs(&good(json!({"aud": "another-service"}))),
        ),
        ("no exp", {
            let mut c = good(json!({}));
            c.as_object_mut().unwrap().remove("exp");
            hs(&c)
        }),
        ("no user", {
            let mut c = good(json!({}));
            c.as_object_mut().unwrap().remove("user_id");
            hs(&c)
        }),
        ("alg none", {
            use base64::Engine;
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            format!(
                "{}.{}.",
                b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
                b64.encode(good(json!({})).to_string())
            )
        }),
        (
            "HS256 signed with the RSA public key",
            sign(
                Algorithm::HS256,
                &EncodingKey::from_secret(&rsa_public),
                &good(json!({})),
            ),
        ),
        ("garbage", "not.a.jwt".to_owned()),
    ];
    for (case, token) in cases {
        let (status, body) = refused(&server, Some(&token)).await;
        assert_eq!(
            (status, body.as_str()),
            (401, "Unauthorized: Invalid token"),
            "{case}"
        );
    }

    // A server with only the RSA public key refuses the HS256-with-public-key confusion too.
    let mut rsa_only = auth_config();
    rsa_only.auth.secret_key.clear();
    rsa_only.auth.public_key_file = key_file("rsa_public.pem");
    let server = TestServer::start(rsa_only).await;
    let forged = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(&rsa_public),
        &claims("evil", &["admin:system"]),
    );
    assert_eq!(
        refused(&server, Some(&forged)).await,
        (401, "Unauthorized: Invalid token".into())
    );
}

#[tokio::test]
async fn token_required_without_in_band() {
    let mut config = auth_config();
    config.auth.in_band = false;
    let server = TestServer::start(config).await;
    assert_eq!(
        refused(&server, None).await,
        (401, "Unauthorized: Token required".into())
    );
}

#[tokio::test]
async fn each_token_source_works() {
    let server = TestServer::start(auth_config()).await;
    let token = hs(&claims("src-user", &[]));
    // Query.
    assert_eq!(
        connect_token(&server, &token).await.unwrap().client_id(),
        "src-user"
    );
    // Authorization header.
    let c = Client::connect_with(
        &server.ws_url(None),
        ClientOptions {
            bearer_token: Some(token.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(c.client_id(), "src-user");
    // In-band `authenticate` as the first message.
    let c = Client::connect_with(
        &server.ws_url(None),
        ClientOptions {
            in_band_token: Some(token.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(c.client_id(), "src-user");
    c.ping().await.unwrap();
    // Sec-WebSocket-Protocol, as a browser sends it; the server selects wshub.bearer.
    let mut req = server.ws_url(None).into_client_request().unwrap();
    req.headers_mut().insert(
        "sec-websocket-protocol",
        format!("wshub.bearer, {token}").parse().unwrap(),
    );
    let (mut ws, res) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(res.headers()["sec-websocket-protocol"], "wshub.bearer");
    let first = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let env: Value = serde_json::from_str(first.to_text().unwrap()).unwrap();
    assert_eq!(env["data"]["client_id"], "src-user");
}

/// A raw client that waits for an error frame and then the close code.
async fn error_then_close(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> (u64, u16) {
    let mut code = None;
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next()).await.unwrap();
        match msg {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                assert_eq!(v["message_type"], "error", "{v}");
                code = v["data"]["code"].as_u64();
            }
            Some(Ok(Message::Close(Some(f)))) => return (code.unwrap(), f.code.into()),
            Some(Ok(_)) => {}
            other => panic!("{other:?}"),
        }
    }
}

type RawWs =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn send(ws: &mut RawWs, v: Value) {
    use futures_util::SinkExt;
    ws.send(Message::text(v.to_string())).await.unwrap();
}

#[tokio::test]
async fn in_band_auth_failures_close_with_4401() {
    let mut config = auth_config();
    config.auth.handshake_timeout = Duration::from_millis(300);
    let server = TestServer::start(config).await;
    // Silence past the handshake timeout.
    let (mut ws, _) = tokio_tungstenite::connect_async(server.ws_url(None))
        .await
        .unwrap();
    assert_eq!(error_then_close(&mut ws).await, (2000, 4401));
    // A bad token.
    let (mut ws, _) = tokio_tungstenite::connect_async(server.ws_url(None))
        .await
        .unwrap();
    send(
        &mut ws,
        json!({"message_type": "authenticate", "data": {"token": "garbage"}, "request_id": 1}),
    )
    .await;
    assert_eq!(error_then_close(&mut ws).await, (2003, 4401));
    // An expired token.
    let (mut ws, _) = tokio_tungstenite::connect_async(server.ws_url(None))
        .await
        .unwrap();
    let mut expired = claims("late", &[]);
    expired["exp"] = json!(now() - 100);
    send(
        &mut ws,
        json!({"message_type": "authenticate", "data": {"token": hs(&expired)}}),
    )
    .await;
    assert_eq!(error_then_close(&mut ws).await, (2002, 4401));
    // Anything but authenticate first.
    let (mut ws, _) = tokio_tungstenite::connect_async(server.ws_url(None))
        .await
        .unwrap();
    send(
        &mut ws,
        json!({"message_type": "join_room", "data": {"room_id": "r"}}),
    )
    .await;
    assert_eq!(error_then_close(&mut ws).await, (2000, 4401));
    assert_eq!(server.running.handle().client_count(), 0);
}

#[tokio::test]
async fn refresh_keeps_an_expiring_connection_and_expiry_closes_the_others() {
    let mut config = auth_config();
    config.auth.expiry_grace = Duration::from_secs(1);
    let server = TestServer::start(config).await;
    let short = |user: &str| {
        let mut c = claims(user, &["join:room"]);
        c["exp"] = json!(now() + 2);
        hs(&c)
    };
    let mut refreshing = connect_token(&server, &short("fresh")).await.unwrap();
    let mut lapsing = connect_token(&server, &short("lapse")).await.unwrap();

    for c in [&mut refreshing, &mut lapsing] {
        let e = c.expect("error", Duration::from_secs(6)).await.unwrap();
        assert_eq!(e.data["code"], 2002);
        assert_eq!(e.data["details"]["grace_seconds"], 1);
    }
    // Another user's token is refused, the right user's accepted.
    let err = refreshing
        .authenticate(&hs(&claims("someone-else", &[])))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Forbidden));
    let reply = refreshing
        .authenticate(&hs(&claims("fresh", &["join:room", "send:message"])))
        .await
        .unwrap();
    assert_eq!(reply.data["client_id"], "fresh");
    assert!(reply.data["expires_at"].as_i64().unwrap() > now() + 3000);

    assert_eq!(common::expect_closed(&mut lapsing).await, Some(4401));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    refreshing.ping().await.unwrap();
    // The refreshed permissions apply: the room message is accepted (no error comes back).
    refreshing.join_room("r").await.unwrap();
    refreshing
        .send("room_message", json!({"room_id": "r", "content": 1}))
        .await
        .unwrap();
    refreshing.ping().await.unwrap();
    assert!(
        refreshing
            .expect("error", Duration::from_millis(200))
            .await
            .is_err()
    );
}

fn denied(result: Result<wshub_client::Envelope, wshub_client::Error>) -> Option<String> {
    match result {
        Err(wshub_client::Error::Server(e)) if e.code == ErrorCode::Forbidden => e
            .details
            .and_then(|d| d["permission"].as_str().map(str::to_owned)),
        other => panic!("expected 2001, got {other:?}"),
    }
}

#[tokio::test]
async fn every_permission_is_enforced_where_it_belongs() {
    let server = TestServer::start(auth_config()).await;
    let none = connect_token(&server, &hs(&claims("nobody", &[])))
        .await
        .unwrap();
    let all = connect_token(&server, &hs(&claims("root", &["admin:system"])))
        .await
        .unwrap();
    all.request("create_room", json!({"room_id": "r"}))
        .await
        .unwrap();
    all.join_room("r").await.unwrap();

    let r = json!({"room_id": "r"});
    assert_eq!(
        denied(none.join_room("r").await).as_deref(),
        Some("join:room:r")
    );
    assert_eq!(
        denied(none.leave_room("r").await).as_deref(),
        Some("leave:room:r")
    );
    assert_eq!(
        denied(none.request("create_room", json!({"room_id": "x"})).await).as_deref(),
        Some("create:room:x")
    );
    assert_eq!(
        denied(none.request("delete_room", r.clone()).await).as_deref(),
        Some("delete:room:r")
    );
    assert_eq!(
        denied(
            none.request("room_message", json!({"room_id": "r", "content": 1}))
                .await
        )
        .as_deref(),
        Some("send:message:r")
    );
    assert_eq!(
        denied(
            none.request("direct_message", json!({"target_id": "root", "content": 1}))
                .await
        )
        .as_deref(),
        Some("send:message")
    );
    assert_eq!(
        denied(none.request("broadcast", json!({"content": 1})).await).as_deref(),
        Some("broadcast:message")
    );
    assert_eq!(
        denied(none.request("list_rooms", json!({})).await).as_deref(),
        Some("read:message")
    );
    assert_eq!(
        denied(none.request("room_members", r.clone()).await).as_deref(),
        Some("read:message:r")
    );
    assert_eq!(
        denied(
            none.request("kick", json!({"room_id": "r", "client_id": "root"}))
                .await
        )
        .as_deref(),
        Some("admin:room:r")
    );

    // Each permission granted on its own allows exactly its operation.
    let mut member = connect_token(
        &server,
        &hs(&claims(
            "member",
            &["join:room", "leave:room", "send:message", "read:message"],
        )),
    )
    .await
    .unwrap();
    member.join_room("r").await.unwrap();
    member.request("room_members", r.clone()).await.unwrap();
    member.request("list_rooms", json!({})).await.unwrap();
    member.leave_room("r").await.unwrap();
    member.join_room("r").await.unwrap();
    let creator = connect_token(
        &server,
        &hs(&claims("creator", &["create:room", "delete:room"])),
    )
    .await
    .unwrap();
    creator
        .request("create_room", json!({"room_id": "made"}))
        .await
        .unwrap();
    creator
        .request("delete_room", json!({"room_id": "made"}))
        .await
        .unwrap();
    let caster = connect_token(&server, &hs(&claims("caster", &["broadcast:message"])))
        .await
        .unwrap();
    caster
        .send("broadcast", json!({"content": "hi"}))
        .await
        .unwrap();
    assert_eq!(
        member.expect("broadcast", WAIT).await.unwrap().data["content"],
        "hi"
    );
    let moderator = connect_token(&server, &hs(&claims("mod", &["admin:room"])))
        .await
        .unwrap();
    let kicked = moderator
        .request("kick", json!({"room_id": "r", "client_id": "member"}))
        .await
        .unwrap();
    assert_eq!(kicked.data, json!({"room_id": "r", "client_id": "member"}));
    let notice = member.expect("kicked", WAIT).await.unwrap();
    assert_eq!(notice.data, json!({"room_id": "r", "by": "mod"}));
    assert_eq!(
        server.running.handle().room_members("r").unwrap(),
        vec!["root"]
    );
}

#[tokio::test]
async fn room_scoped_globs() {
    let server = TestServer::start(auth_config()).await;
    let c = connect_token(
        &server,
        &hs(&claims("g", &["join:room:chat-*", "send:message:chat-1"])),
    )
    .await
    .unwrap();
    c.join_room("chat-1").await.unwrap();
    c.join_room("chat-2").await.unwrap();
    assert_eq!(
        denied(c.join_room("ops").await).as_deref(),
        Some("join:room:ops")
    );
    // send:message:chat-1 allows chat-1 only (accepted: no error comes back).
    let mut c = c;
    c.send("room_message", json!({"room_id": "chat-1", "content": 1}))
        .await
        .unwrap();
    c.ping().await.unwrap();
    assert!(c.expect("error", Duration::from_millis(200)).await.is_err());
    assert_eq!(
        denied(
            c.request("room_message", json!({"room_id": "chat-2", "content": 1}))
                .await
        )
        .as_deref(),
        Some("send:message:chat-2")
    );
}

#[tokio::test]
async fn anonymous_clients_get_the_anonymous_set_and_can_authenticate_later() {
    let mut config = auth_config();
    config.auth.allow_anonymous = true;
    config.auth.anonymous_permissions = vec!["join:room".into()];
    let server = TestServer::start(config).await;
    let mut anon = server.client("guest-1").await;
    anon.join_room("lobby").await.unwrap();
    assert_eq!(
        denied(
            anon.request("room_message", json!({"room_id": "lobby", "content": 1}))
                .await
        )
        .as_deref(),
        Some("send:message:lobby")
    );
    // Proving who it is turns the anonymous connection into the token's user.
    let reply = anon
        .authenticate(&hs(&claims(
            "alice",
            &["join:room", "send:message", "read:message"],
        )))
        .await
        .unwrap();
    assert_eq!(reply.data["client_id"], "alice");
    let connected = anon.expect("connected", WAIT).await.unwrap();
    assert_eq!(connected.data["client_id"], "alice");
    assert_eq!(anon.client_id(), "alice");
    let handle = server.running.handle();
    assert_eq!(handle.client_ids(), vec!["alice"]);
    assert!(
        handle.room_members("lobby").is_err(),
        "the anonymous client left its rooms"
    );
    anon.join_room("lobby").await.unwrap();
    // Cluster-wide too: the anonymous membership was forgotten before the user connected.
    let members = anon
        .request("room_members", json!({"room_id": "lobby"}))
        .await
        .unwrap();
    assert_eq!(members.data["members"], json!([{"client_id": "alice"}]));
}

#[tokio::test]
async fn origin_allow_list() {
    let mut config = auth_config();
    config.auth.allow_anonymous = true;
    config.server.allowed_origins = vec!["https://app.example.com".into()];
    let server = TestServer::start(config).await;
    let with_origin = |origin: &str| {
        let mut req = server.ws_url(None).into_client_request().unwrap();
        req.headers_mut().insert("origin", origin.parse().unwrap());
        req
    };
    match tokio_tungstenite::connect_async(with_origin("https://evil.example.com")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => assert_eq!(res.status(), 403),
        other => panic!("disallowed origin accepted: {other:?}"),
    }
    tokio_tungstenite::connect_async(with_origin("https://app.example.com"))
        .await
        .unwrap();
    // No Origin header: not a browser, not affected.
    tokio_tungstenite::connect_async(server.ws_url(None))
        .await
        .unwrap();
}

#[tokio::test]
async fn admin_api_accepts_an_admin_jwt() {
    let server = TestServer::start(auth_config()).await;
    let http = reqwest::Client::new();
    let url = server.http_url("/api/stats");
    assert_eq!(http.get(&url).send().await.unwrap().status(), 401);
    let admin = hs(&claims("ops", &["admin:system"]));
    assert_eq!(
        http.get(&url)
            .bearer_auth(admin)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let user = hs(&claims("user", &["join:room"]));
    assert_eq!(
        http.get(&url)
            .bearer_auth(user)
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
}

#[tokio::test]
async fn presence_shows_token_info() {
    let server = TestServer::start(auth_config()).await;
    let mut c = claims("ann", &["join:room", "read:message"]);
    c["info"] = json!({"name": "Ann"});
    let ann = connect_token(&server, &hs(&c)).await.unwrap();
    ann.join_room("r").await.unwrap();
    let members = ann
        .request("room_members", json!({"room_id": "r"}))
        .await
        .unwrap();
    assert_eq!(
        members.data["members"],
        json!([{"client_id": "ann", "info": {"name": "Ann"}}])
    );
}

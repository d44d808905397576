//! The `wshub` binary: subcommands, help, config checking, tokens, and `serve` itself.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::{Child, Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use predicates::prelude::*;

fn wshub() -> Command {
    let mut cmd = Command::cargo_bin("wshub").unwrap();
    // The tests' own environment must not leak WSHUB_* settings into the binary.
    for (k, _) in std::env::vars() {
        if k.starts_with("WSHUB_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

fn config_file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

#[test]
fn version_and_help() {
    wshub()
        .arg("--version")
        .assert()
        .success()
        .stdout(predicate::str::starts_with(format!(
            "wshub {}",
            env!("CARGO_PKG_VERSION")
        )));
    wshub().arg("--help").assert().success().stdout(
        predicate::str::contains("serve")
            .and(predicate::str::contains("check-config"))
            .and(predicate::str::contains("token")),
    );
    wshub()
        .args(["serve", "--help"])
        .assert()
        .success()
        .stdout(predicate::str::contains("--config").and(predicate::str::contains("--addr")));
    wshub().args(["token", "--help"]).assert().success().stdout(
        predicate::str::contains("--user")
            .and(predicate::str::contains("--perm"))
            .and(predicate::str::contains("--ttl")),
    );
    wshub()
        .args(["check-config", "--help"])
        .assert()
        .success()
        .stdout(predicate::str::contains("masked"));
}

#[test]
fn check_config_prints_effective_config_with_secrets_masked() {
    let f = config_file(
        "server:\n  addr: \":9000\"\nauth:\n  enabled: true\n  secret_key: hunter2-secret\nadmin:\n  api_key: admin-secret\n",
    );
    let out = wshub()
        .args(["check-config"])
        .arg(f.path())
        .env("WSHUB_SERVER__HUB__MESSAGE_BUFFER_CAP", "99")
        .assert()
        .success()
        .stdout(predicate::str::contains("hunter2-secret").not())
        .stdout(predicate::str::contains("admin-secret").not())
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["auth"]["secret_key"], "***");
    assert_eq!(v["admin"]["api_key"], "***");
    assert_eq!(v["server"]["addr"], ":9000");
    // Environment overrides the file.
    assert_eq!(v["server"]["hub"]["message_buffer_cap"], 99);
}

#[test]
fn check_config_reports_unknown_keys_and_bad_values() {
    let f = config_file("server:\n  hub:\n    mesage_buffer_cap: 5\n");
    wshub()
        .arg("check-config")
        .arg(f.path())
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("server.hub")
                .and(predicate::str::contains("mesage_buffer_cap")),
        );
    let f = config_file("server:\n  hub:\n    read_timeout: whenever\n");
    wshub()
        .arg("check-config")
        .arg(f.path())
        .assert()
        .code(1)
        .stderr(predicate::str::contains("server.hub.read_timeout"));
    let f = config_file("server:\n  hub:\n    message_buffer_cap: -3\n");
    wshub()
        .arg("check-config")
        .arg(f.path())
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "server.hub.message_buffer_cap: invalid value",
        ));
    let f = config_file("server:\n  addr: nowhere\nlog:\n  level: loud\n");
    wshub()
        .arg("check-config")
        .arg(f.path())
        .assert()
        .code(1)
        .stderr(
            predicate::str::contains("server.addr:").and(predicate::str::contains("log.level:")),
        );
    wshub()
        .args(["check-config", "/does/not/exist.yaml"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("does not exist"));
}

#[derive(serde::Deserialize)]
struct Claims {
    user_id: String,
    sub: String,
    permissions: Vec<String>,
    iss: String,
    iat: u64,
    exp: u64,
}

#[test]
fn token_is_signed_with_the_configured_key() {
    let f = config_file("auth:\n  secret_key: token-test-key\n  issuer: gohub\n");
    let out = wshub()
        .args([
            "token",
            "--user",
            "alice",
            "--perm",
            "join:room",
            "--perm",
            "send:message:lobby",
            "--ttl",
            "2h",
            "--config",
        ])
        .arg(f.path())
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let token = String::from_utf8(out).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_issuer(&["gohub"]);
    let data = jsonwebtoken::decode::<Claims>(
        token.trim(),
        &jsonwebtoken::DecodingKey::from_secret(b"token-test-key"),
        &validation,
    )
    .unwrap();
    let c = data.claims;
    assert_eq!(
        (c.user_id.as_str(), c.sub.as_str(), c.iss.as_str()),
        ("alice", "alice", "gohub")
    );
    assert_eq!(c.permissions, vec!["join:room", "send:message:lobby"]);
    assert_eq!(c.exp - c.iat, 7200);

    wshub()
        .args(["token", "--user", "bob"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("auth.secret_key"));
    wshub()
        .args(["token", "--user", "bob", "--perm", "fly:away", "--config"])
        .arg(f.path())
        .assert()
        .code(1)
        .stderr(predicate::str::contains("fly:away"));
}

/// The spawned `wshub serve`; killed on drop.
struct Served {
    child: Child,
    port: u16,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn serve(config: &std::path::Path, env: &[(&str, &str)]) -> Served {
    serve_logging_to(config, env, Stdio::null())
}

/// [`serve`] with the node's log output (stdout) going to `logs`.
fn serve_logging_to(config: &std::path::Path, env: &[(&str, &str)], logs: Stdio) -> Served {
    let port = free_port();
    let mut cmd = StdCommand::new(assert_cmd::cargo::cargo_bin("wshub"));
    cmd.args(["serve", "--config"])
        .arg(config)
        .args(["--addr", &format!("127.0.0.1:{port}")])
        .env_remove("RUST_LOG")
        .stdout(logs)
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let served = Served {
        child: cmd.spawn().unwrap(),
        port,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(port, "/health").is_none() {
        assert!(Instant::now() < deadline, "wshub serve did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    served
}

fn get(port: u16, path: &str) -> Option<String> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn reloads(port: u16) -> Option<u64> {
    let body = get(port, "/metrics")?;
    // `wshub_config_reloads_total{node_id="..."} 1`
    body.lines()
        .filter(|l| l.starts_with("wshub_config_reloads_total"))
        .find_map(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.trim().parse().ok())
}

#[test]
fn serve_uses_config_env_and_flags_reloads_on_sighup_and_stops_on_sigterm() {
    let f = config_file("cluster:\n  node_id: file-node\nserver:\n  addr: 127.0.0.1:1\n");
    let mut served = serve(f.path(), &[("WSHUB_CLUSTER__NODE_ID", "env-node")]);
    let health = get(served.port, "/health").unwrap();
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    // --addr beat the file (we reached it on the flag's port); the env beat the file.
    assert!(health.contains("\"node_id\":\"env-node\""), "{health}");

    assert_eq!(reloads(served.port), Some(0));
    let pid = served.child.id().to_string();
    assert!(
        StdCommand::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while reloads(served.port) != Some(1) {
        assert!(Instant::now() < deadline, "SIGHUP did not reload");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        served.child.try_wait().unwrap().is_none(),
        "SIGHUP must not stop the server"
    );

    assert!(
        StdCommand::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = served.child.try_wait().unwrap() {
            assert!(status.success(), "clean exit on SIGTERM: {status}");
            break;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serve_refuses_a_bad_config_with_the_reason() {
    let f = config_file("server:\n  hub:\n    message_buffer_cap: 0\n");
    wshub()
        .args(["serve", "--config"])
        .arg(f.path())
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "server.hub.message_buffer_cap: must be at least 1",
        ));
}

#[test]
fn log_level_reloads_live() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wshub.yaml");
    std::fs::write(&config, "log:\n  level: warn\n").unwrap();
    // Logs go to stdout (the container convention).
    let log_path = dir.path().join("stdout.log");
    let port = free_port();
    let mut child = StdCommand::new(assert_cmd::cargo::cargo_bin("wshub"))
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--addr", &format!("127.0.0.1:{port}")])
        .env_remove("RUST_LOG")
        .stdout(std::fs::File::create(&log_path).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let served = Served {
        child: child_take(&mut child),
        port,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(port, "/health").is_none() {
        assert!(Instant::now() < deadline, "wshub serve did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    // /ws without an upgrade is a 400 and logs nothing; an info line we can trigger is a reload.
    std::fs::write(
        &config,
        "log:\n  level: warn\nrooms:\n  default_max_clients: 3\n",
    )
    .unwrap();
    wait_for(|| reloads(port) == Some(1));
    let before = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        !before.contains("configuration reloaded"),
        "info is filtered at warn: {before}"
    );

    std::fs::write(&config, "log:\n  level: info\n").unwrap();
    wait_for(|| reloads(port) == Some(2));
    std::fs::write(
        &config,
        "log:\n  level: info\nrooms:\n  default_max_clients: 4\n",
    )
    .unwrap();
    wait_for(|| reloads(port) == Some(3));
    wait_for(|| {
        std::fs::read_to_string(&log_path)
            .unwrap()
            .contains("configuration reloaded")
    });
    drop(served);
}

fn child_take(child: &mut Child) -> Child {
    // Move the child out of `child` so `Served` owns (and kills) it.
    std::mem::replace(child, StdCommand::new("true").spawn().unwrap())
}

fn wait_for(mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "condition not reached in time");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `log.format: json`: every line is JSON; a connection's lifecycle and its errors are one
/// line each, carrying the connection's fields; its messages log nothing at info.
#[test]
fn json_logs_one_line_per_lifecycle_event_and_error() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let log = tempfile::NamedTempFile::new().unwrap();
    let f = config_file("log:\n  format: json\ncluster:\n  node_id: log-node\n");
    let served = serve_logging_to(f.path(), &[], Stdio::from(log.reopen().unwrap()));
    let url = format!("ws://127.0.0.1:{}/ws?client_id=logger", served.port);
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let join = r#"{"message_type":"join_room","data":{"room_id":"r"},"request_id":1}"#;
        ws.send(Message::text(join)).await.unwrap();
        for i in 0..20 {
            let msg = format!(
                r#"{{"message_type":"room_message","data":{{"room_id":"r","content":{i}}}}}"#
            );
            ws.send(Message::text(msg)).await.unwrap();
        }
        ws.send(Message::text("not json")).await.unwrap();
        // connected, room_joined, then the error (the room has no other member to echo to).
        let mut seen = 0;
        while seen < 3 {
            if let Some(Ok(Message::Text(_))) = ws.next().await {
                seen += 1;
            }
        }
        ws.close(None).await.unwrap();
    });

    let deadline = Instant::now() + Duration::from_secs(10);
    let lines: Vec<serde_json::Value> = loop {
        let text = std::fs::read_to_string(log.path()).unwrap();
        if text.contains("client disconnected") {
            break text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
                .collect();
        }
        assert!(Instant::now() < deadline, "no disconnect logged:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let of_client: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["span"]["client_id"] == "logger")
        .collect();
    let with_message = |m: &str| of_client.iter().filter(|l| l["message"] == m).count();
    assert_eq!(with_message("client connected"), 1, "{of_client:#?}");
    assert_eq!(with_message("client disconnected"), 1, "{of_client:#?}");
    assert_eq!(with_message("error sent to client"), 1, "{of_client:#?}");
    let connected = of_client
        .iter()
        .find(|l| l["message"] == "client connected")
        .unwrap();
    assert_eq!(connected["level"], "INFO");
    assert_eq!(connected["span"]["node_id"], "log-node");
    assert!(
        connected["span"]["remote"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    let error = of_client
        .iter()
        .find(|l| l["message"] == "error sent to client")
        .unwrap();
    assert_eq!(error["code"], 1001);
    // 22 messages in, and nothing per message: only the lines above (and room bookkeeping).
    assert!(
        of_client.len() <= 5,
        "too many lines for one connection: {of_client:#?}"
    );
}

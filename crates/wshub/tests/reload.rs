//! Hot reload of the config file while clients stay connected.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::{TestServer, eventually};
use wshub::{Config, Server};

fn write(path: &Path, text: &str) {
    // Write then rename, as editors and config-map updates do.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn start(path: &Path) -> TestServer {
    let config = Config::load(Some(path)).unwrap();
    let server = TestServer::start_with(Server::builder().config(config)).await;
    server.running.handle().watch_config(path).unwrap();
    server
}

/// `limits.*` read per message (rate, JSON depth) reach connections opened before the reload.
#[tokio::test]
async fn message_limits_reach_open_connections() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wshub.yaml");
    write(&path, "server:\n  addr: 127.0.0.1:0\n");
    let server = start(&path).await;
    let handle = server.running.handle();
    let mut raw = server.raw("raw").await;
    let deep = r#"{"message_type":"ping","data":{"ts":1,"a":[[[[1]]]]},"request_id":1}"#;
    raw.send_text(deep).await;
    assert_eq!(raw.next_json().await["message_type"], "pong");

    write(
        &path,
        "server:\n  addr: 127.0.0.1:0\nlimits:\n  max_json_depth: 3\n  messages_per_second: 2\n  messages_burst: 2\n  rate_limit_strikes: 100\n",
    );
    eventually("reload applied", || handle.reload_counts().0 == 1).await;
    raw.send_text(deep).await;
    let err = raw.next_json().await;
    assert_eq!(err["data"]["details"]["max_json_depth"], 3, "{err}");
    for i in 2..=6 {
        raw.send_text(&format!(
            r#"{{"message_type":"ping","data":{{"ts":1}},"request_id":{i}}}"#
        ))
        .await;
    }
    let mut refused = 0;
    for _ in 2..=6 {
        let reply = raw.next_json().await;
        if reply["data"]["code"] == 1005 {
            assert_eq!(reply["data"]["details"]["messages_per_second"], 2);
            refused += 1;
        }
    }
    assert!(refused >= 3, "only {refused} of 5 pings refused at 2/s");
}

#[tokio::test]
async fn limit_change_applies_to_open_connections() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wshub.yaml");
    write(
        &path,
        "server:\n  addr: 127.0.0.1:0\n  hub:\n    max_message_size: 65536\n",
    );
    let server = start(&path).await;
    let handle = server.running.handle();
    let mut raw = server.raw("raw").await;
    let other = server.client("other").await;
    other.join_room("r").await.unwrap();
    let big = format!(
        r#"{{"message_type":"ping","data":{{"ts":1,"pad":"{}"}},"request_id":1}}"#,
        "x".repeat(2000)
    );
    raw.send_text(&big).await;
    assert_eq!(raw.next_json().await["message_type"], "pong");

    // Lower the limit and change a restart-only key in the same edit.
    write(
        &path,
        "server:\n  addr: 127.0.0.1:1\n  hub:\n    max_message_size: 1024\nrooms:\n  default_max_clients: 7\n",
    );
    eventually("reload applied", || handle.reload_counts().0 == 1).await;
    let config = handle.config();
    assert_eq!(config.server.hub.max_message_size, 1024);
    assert_eq!(config.rooms.default_max_clients, 7);
    assert_eq!(
        config.server.addr, "127.0.0.1:0",
        "restart-only key keeps its running value"
    );

    // The connection opened before the reload now has the new limit...
    raw.send_text(&big).await;
    assert_eq!(raw.expect_close().await, 1009);
    // ...and the other client never noticed the reload.
    other.ping().await.unwrap();
    assert_eq!(handle.room_members("r").unwrap(), vec!["other"]);
    // New rooms get the new default.
    let c = server.client("c").await;
    c.join_room("fresh").await.unwrap();
    assert_eq!(
        handle
            .rooms()
            .iter()
            .find(|r| r.id == "fresh")
            .unwrap()
            .max_clients,
        7
    );
}

#[tokio::test]
async fn broken_file_is_rejected_and_the_running_config_stays() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wshub.yaml");
    write(&path, "server:\n  hub:\n    message_buffer_cap: 100\n");
    let server = start(&path).await;
    let handle = server.running.handle();
    let client = server.client("stays").await;

    write(&path, "server:\n  hub: [this is: not valid\n");
    eventually("broken reload rejected", || {
        handle.reload_counts() == (0, 1)
    })
    .await;
    write(&path, "server:\n  hub:\n    message_buffer_cap: 0\n");
    eventually("invalid value rejected", || {
        handle.reload_counts() == (0, 2)
    })
    .await;
    write(&path, "server:\n  hub:\n    mesage_buffer_cap: 5\n");
    eventually("unknown key rejected", || handle.reload_counts() == (0, 3)).await;

    assert_eq!(handle.config().server.hub.message_buffer_cap, 100);
    client.ping().await.unwrap();
    assert_eq!(handle.client_count(), 1);
}

#[test]
fn example_config_documents_every_key_with_its_default() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/wshub.example.yaml");
    let loaded = Config::load_from(
        Some(&path),
        figment::providers::Env::prefixed("WSHUB_NONE_"),
    )
    .unwrap();
    assert_eq!(loaded, Config::default(), "example values are the defaults");

    use figment::providers::Format;
    let raw: serde_json::Value =
        figment::Figment::from(figment::providers::Yaml::file_exact(&path))
            .extract()
            .unwrap();
    let defaults = serde_json::to_value(Config::default()).unwrap();
    let mut missing = Vec::new();
    fn walk(
        prefix: &str,
        d: &serde_json::Value,
        raw: &serde_json::Value,
        missing: &mut Vec<String>,
    ) {
        if let serde_json::Value::Object(map) = d {
            for (k, v) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match raw.get(k) {
                    None => missing.push(path),
                    Some(r) => walk(&path, v, r, missing),
                }
            }
        }
    }
    walk("", &defaults, &raw, &mut missing);
    assert!(
        missing.is_empty(),
        "keys missing from configs/wshub.example.yaml: {missing:?}"
    );
}

/// A Kubernetes ConfigMap volume: `wshub.yaml -> ..data/wshub.yaml`, `..data -> ..<version>`;
/// an update writes a new version directory and swaps `..data` atomically.
#[cfg(unix)]
#[tokio::test]
async fn configmap_symlink_swap_is_seen() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let version = |name: &str, text: &str| {
        let v = dir.path().join(name);
        std::fs::create_dir(&v).unwrap();
        std::fs::write(v.join("wshub.yaml"), text).unwrap();
    };
    version("..v1", "rooms:\n  default_max_clients: 3\n");
    symlink("..v1", dir.path().join("..data")).unwrap();
    symlink("..data/wshub.yaml", dir.path().join("wshub.yaml")).unwrap();
    let path = dir.path().join("wshub.yaml");
    let server = start(&path).await;
    let handle = server.running.handle();
    assert_eq!(handle.config().rooms.default_max_clients, 3);

    version("..v2", "rooms:\n  default_max_clients: 9\n");
    symlink("..v2", dir.path().join("..data_tmp")).unwrap();
    std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
    eventually("reload after the ..data swap", || {
        handle.config().rooms.default_max_clients == 9
    })
    .await;
}

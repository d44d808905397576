//! Deployment files: `Dockerfile`, `.dockerignore`, `deploy/docker-compose.yml`, `deploy/k8s/`,
//! `deploy/config/wshub.yaml`, `deploy/prometheus.yml` and the Grafana provisioning.
//!
//! There is no Docker engine or Kubernetes cluster here, so these tests check what can be
//! checked without one: the files parse, every path they name exists (and is in the Docker build
//! context), they agree with each other (ports, probe paths, names, labels, uids), and the real
//! binary's `wshub check-config` accepts the node config with exactly the environment compose
//! and the Deployment give it.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_yaml::Value;

// ---------------------------------------------------------------------------------------------
// Helpers

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn deploy_dir() -> PathBuf {
    repo().join("deploy")
}

fn read(rel: &str) -> String {
    let path = repo().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every YAML document of a file (`---` separated), with `<<` merge keys applied (compose
/// uses anchors and merges, as docker compose does).
fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let mut value = Value::deserialize(doc)
            .unwrap_or_else(|e| panic!("{}: not valid YAML: {e}", path.display()));
        value
            .apply_merge()
            .unwrap_or_else(|e| panic!("{}: bad merge key: {e}", path.display()));
        if !value.is_null() {
            docs.push(value);
        }
    }
    docs
}

fn yaml(rel: &str) -> Value {
    let mut docs = yaml_docs(&repo().join(rel));
    assert_eq!(docs.len(), 1, "{rel}: expected one YAML document");
    docs.remove(0)
}

fn s(v: &Value) -> &str {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string, got {v:?}"))
}

fn seq(v: &Value) -> &Vec<Value> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("expected a list, got {v:?}"))
}

/// A scalar as the string compose / Kubernetes would see (`8080` and `"8080"` alike).
fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("expected a scalar, got {other:?}"),
    }
}

/// The node config the deployment uses.
const CONFIG: &str = "deploy/config/wshub.yaml";

/// Runs the real binary's `wshub check-config FILE` with exactly `env` as its `WSHUB_*`
/// environment; returns success, the effective (masked) config it printed, and stderr.
fn check_config(file: &Path, env: &BTreeMap<String, String>) -> (bool, serde_json::Value, String) {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("wshub"));
    cmd.arg("check-config").arg(file);
    for (k, _) in std::env::vars() {
        if k.starts_with("WSHUB_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env);
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let printed = if out.status.success() {
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "check-config printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    } else {
        serde_json::Value::Null
    };
    (out.status.success(), printed, stderr)
}

fn assert_valid(what: &str, file: &Path, env: &BTreeMap<String, String>) -> serde_json::Value {
    let (ok, effective, stderr) = check_config(file, env);
    assert!(
        ok,
        "{what}: `wshub check-config {}` with env {env:?} failed:\n{stderr}",
        file.display()
    );
    effective
}

/// The production choices the deployment relies on, read from the effective config.
fn assert_production_shape(what: &str, c: &serde_json::Value) {
    assert_eq!(c["server"]["addr"], "0.0.0.0:8080", "{what}: server.addr");
    assert_eq!(c["log"]["format"], "json", "{what}: log.format");
    assert_eq!(c["log"]["level"], "info", "{what}: log.level");
    assert_eq!(c["cluster"]["enabled"], true, "{what}: cluster.enabled");
    assert_eq!(c["cluster"]["bus_type"], "nats", "{what}: cluster.bus_type");
    assert_eq!(
        c["cluster"]["nats"]["use_jetstream"], true,
        "{what}: cluster.nats.use_jetstream"
    );
    assert_eq!(
        c["cluster"]["nats"]["urls"],
        serde_json::json!(["nats://nats:4222"]),
        "{what}: cluster.nats.urls must name the compose `nats` service / Helm release"
    );
    assert!(
        c["rooms"]["history"]["size"].as_u64().unwrap() > 0,
        "{what}: rooms.history.size must be on"
    );
}

/// The port of a `host:port` address.
fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':').unwrap().1.parse().unwrap()
}

/// The port every node listens on, from deploy/config/wshub.yaml.
fn config_port() -> u16 {
    let config = yaml(CONFIG);
    port_of(s(&config["server"]["addr"]))
}

// ---------------------------------------------------------------------------------------------
// deploy/config/wshub.yaml

#[test]
fn config_file_passes_check_config_and_auth_without_key_is_refused() {
    let file = repo().join(CONFIG);
    // The file alone (the bare image's default): valid, with the production choices.
    let effective = assert_valid(CONFIG, &file, &BTreeMap::new());
    assert_production_shape(CONFIG, &effective);
    assert_eq!(
        effective["cluster"]["node_id"], "",
        "node ids come from the environment (or are generated), not from the shared file"
    );
    assert_eq!(
        effective["auth"]["secret_key"], "",
        "no secret may be written in the config file (it is baked into the image)"
    );

    // The comments promise that enabling auth without a key fails closed.
    let env = BTreeMap::from([("WSHUB_AUTH__ENABLED".to_owned(), "true".to_owned())]);
    let (ok, _, stderr) = check_config(&file, &env);
    assert!(!ok, "auth enabled without a key must be refused");
    assert!(stderr.contains("auth.secret_key"), "{stderr}");
}

// ---------------------------------------------------------------------------------------------
// Dockerfile and .dockerignore

#[derive(Debug)]
struct Instruction {
    op: String,
    args: String,
}

#[derive(Debug)]
struct Stage {
    image: String,
    name: Option<String>,
    body: Vec<Instruction>,
}

/// Parses the Dockerfile into stages (line continuations joined, comments dropped).
fn dockerfile() -> Vec<Stage> {
    let text = read("Dockerfile");
    let mut logical = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && cur.is_empty()) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            cur.push_str(head);
            cur.push(' ');
        } else {
            cur.push_str(trimmed);
            logical.push(std::mem::take(&mut cur));
        }
    }
    assert!(cur.is_empty(), "Dockerfile ends inside a line continuation");
    let mut stages: Vec<Stage> = Vec::new();
    for line in logical {
        let (op, args) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let op = op.to_ascii_uppercase();
        let args = args.trim().to_owned();
        if op == "FROM" {
            let words: Vec<&str> = args.split_whitespace().collect();
            let name = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some((*name).to_owned()),
                [_] => None,
                _ => panic!("FROM {args}: unexpected form"),
            };
            stages.push(Stage {
                image: words[0].to_owned(),
                name,
                body: Vec::new(),
            });
        } else {
            stages
                .last_mut()
                .unwrap_or_else(|| panic!("{op} before the first FROM"))
                .body
                .push(Instruction { op, args });
        }
    }
    stages
}

/// `COPY [--flag=value...] src... dst` (shell or JSON form): (flags, sources, destination).
fn copy_parts(args: &str) -> (BTreeMap<String, String>, Vec<String>, String) {
    let mut flags = BTreeMap::new();
    let mut rest = args.trim();
    while let Some(flag) = rest.strip_prefix("--") {
        let (word, tail) = flag.split_once(char::is_whitespace).unwrap();
        let (k, v) = word.split_once('=').unwrap_or((word, ""));
        flags.insert(k.to_owned(), v.to_owned());
        rest = tail.trim_start();
    }
    let mut words: Vec<String> = if rest.starts_with('[') {
        serde_json::from_str(rest).unwrap()
    } else {
        rest.split_whitespace().map(str::to_owned).collect()
    };
    assert!(
        words.len() >= 2,
        "COPY {args}: needs a source and a destination"
    );
    let dst = words.pop().unwrap();
    (flags, words, dst)
}

/// A JSON-form (exec) instruction argument: `["a", "b"]`.
fn exec_form(args: &str) -> Vec<String> {
    serde_json::from_str(args)
        .unwrap_or_else(|e| panic!("{args}: expected the exec (JSON) form: {e}"))
}

/// `.dockerignore` as Docker applies it: patterns relative to the context root, `**` for any
/// number of directories, `!` re-includes, the last matching pattern wins, and a pattern that
/// matches a directory excludes everything below it.
struct DockerIgnore {
    patterns: Vec<(bool, Vec<String>)>,
}

impl DockerIgnore {
    fn load() -> Self {
        let mut patterns = Vec::new();
        for line in read(".dockerignore").lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (include, pat) = match line.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, line),
            };
            let segs = pat
                .trim_start_matches('/')
                .trim_end_matches('/')
                .split('/')
                .filter(|s| !s.is_empty() && *s != ".")
                .map(str::to_owned)
                .collect();
            patterns.push((include, segs));
        }
        DockerIgnore { patterns }
    }

    fn excluded(&self, rel: &str) -> bool {
        let path: Vec<&str> = rel.split('/').filter(|s| !s.is_empty()).collect();
        let mut excluded = false;
        for (include, pat) in &self.patterns {
            // The path itself or one of its parent directories.
            let hit = (1..=path.len()).any(|n| glob_segments(pat, &path[..n]));
            if hit {
                excluded = !include;
            }
        }
        excluded
    }
}

fn glob_segments(pat: &[String], path: &[&str]) -> bool {
    match pat.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first == "**" => {
            (0..=path.len()).any(|skip| glob_segments(rest, &path[skip..]))
        }
        Some((first, rest)) => match path.split_first() {
            Some((seg, path_rest)) => {
                glob_one(first.as_bytes(), seg.as_bytes()) && glob_segments(rest, path_rest)
            }
            None => false,
        },
    }
}

/// `*` and `?` within one path segment.
fn glob_one(pat: &[u8], name: &[u8]) -> bool {
    match pat.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|i| glob_one(rest, &name[i..])),
        Some((b'?', rest)) => !name.is_empty() && glob_one(rest, &name[1..]),
        Some((c, rest)) => name.first() == Some(c) && glob_one(rest, &name[1..]),
    }
}

/// Files below `dir` (relative to the repository), recursively.
fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn rel_to_repo(path: &Path) -> String {
    path.strip_prefix(repo())
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn dockerignore_matcher_follows_docker_rules() {
    // The matcher used below must itself be right, or the checks that use it prove nothing.
    let ignore = DockerIgnore {
        patterns: vec![
            (false, vec!["**".into(), "target".into()]),
            (false, vec!["deploy".into()]),
            (
                true,
                vec!["deploy".into(), "config".into(), "*.yaml".into()],
            ),
            (false, vec!["*.md".into()]),
        ],
    };
    assert!(ignore.excluded("target/debug/wshub"));
    assert!(ignore.excluded("crates/wshub/target/x"));
    assert!(ignore.excluded("deploy/k8s/service.yaml"));
    assert!(!ignore.excluded("deploy/config/wshub.yaml"));
    assert!(ignore.excluded("README.md"));
    assert!(
        !ignore.excluded("docs/bus.md"),
        "*.md is anchored at the root"
    );
    assert!(!ignore.excluded("crates/wshub/src/main.rs"));
}

#[test]
fn dockerignore_keeps_the_build_context_small() {
    let ignore = DockerIgnore::load();
    for heavy in [
        "target/debug/wshub",
        "crates/wshub/target/debug/x",
        ".git/HEAD",
        "node_modules/x/index.js",
        "clients/js/node_modules/x/index.js",
        "examples/node_modules/x/index.js",
        "deploy/k8s/secret.yaml",
    ] {
        assert!(ignore.excluded(heavy), ".dockerignore must exclude {heavy}");
    }
}

#[test]
fn dockerfile_copies_existing_files_and_runs_as_non_root() {
    let stages = dockerfile();
    assert!(
        stages.len() >= 2,
        "multi-stage: a build and a runtime stage"
    );
    let ignore = DockerIgnore::load();
    let root = repo();

    // Every COPY from the build context names files that exist and are not .dockerignored.
    let mut context_sources = 0;
    for stage in &stages {
        for ins in stage
            .body
            .iter()
            .filter(|i| i.op == "COPY" || i.op == "ADD")
        {
            let (flags, sources, _) = copy_parts(&ins.args);
            if flags.contains_key("from") {
                continue;
            }
            for src in sources {
                context_sources += 1;
                let path = root.join(&src);
                assert!(
                    path.exists(),
                    "Dockerfile: COPY {src}: no such file in the repo"
                );
                assert!(
                    !ignore.excluded(&src),
                    "Dockerfile: COPY {src}: excluded by .dockerignore"
                );
                if path.is_dir() {
                    let mut files = Vec::new();
                    files_under(&path, &mut files);
                    for f in files.iter().filter(|f| {
                        f.extension().is_some_and(|e| e == "rs")
                            || f.file_name().is_some_and(|n| n == "Cargo.toml")
                    }) {
                        let rel = rel_to_repo(f);
                        assert!(
                            !ignore.excluded(&rel),
                            "Dockerfile: COPY {src}: {rel} is excluded by .dockerignore"
                        );
                    }
                }
            }
        }
    }
    assert!(
        context_sources >= 4,
        "Dockerfile: expected COPYs from the build context"
    );

    // Final stage: debian slim with CA certificates, only the binary and the config, non-root.
    let last = stages.last().unwrap();
    assert!(
        last.image.starts_with("debian:") && last.image.contains("slim"),
        "runtime stage: {}",
        last.image
    );
    assert!(
        last.body
            .iter()
            .any(|i| i.op == "RUN" && i.args.contains("ca-certificates")),
        "runtime stage must install ca-certificates"
    );
    let user = last
        .body
        .iter()
        .rev()
        .find(|i| i.op == "USER")
        .expect("the final stage must set USER (else it runs as root)");
    let uid = user.args.split(':').next().unwrap();
    let uid: u32 = uid.parse().unwrap_or_else(|_| {
        panic!(
            "USER {}: use a numeric uid so runAsNonRoot can verify it",
            user.args
        )
    });
    assert_ne!(uid, 0, "the final stage must not run as root");
    assert_eq!(uid, 10001);

    let copies: Vec<_> = last
        .body
        .iter()
        .filter(|i| i.op == "COPY" || i.op == "ADD")
        .map(|i| copy_parts(&i.args))
        .collect();
    assert_eq!(
        copies.len(),
        2,
        "the runtime stage copies the binary and the config, nothing else"
    );
    let (_, config_src, config_dst) = copies
        .iter()
        .find(|(flags, _, _)| !flags.contains_key("from"))
        .unwrap();
    assert_eq!(config_src, &vec![CONFIG.to_owned()]);
    assert_eq!(config_dst, "/etc/wshub/wshub.yaml");
    let (flags, bin_src, bin_dst) = copies
        .iter()
        .find(|(flags, _, _)| flags.contains_key("from"))
        .unwrap();
    let from = &flags["from"];
    let build = stages
        .iter()
        .find(|st| st.name.as_deref() == Some(from.as_str()))
        .unwrap_or_else(|| panic!("COPY --from={from}: no such stage"));
    // The path copied out of the build stage is where it puts cargo's release binary.
    let produced = format!("target/release/wshub {}", bin_src[0]);
    assert!(
        build
            .body
            .iter()
            .any(|i| i.op == "RUN" && i.args.contains(&produced)),
        "COPY --from={from} {}: the build stage never copies its binary there",
        bin_src[0]
    );
    assert!(
        bin_dst.starts_with("/usr/local/bin/"),
        "the binary must be on PATH: {bin_dst}"
    );

    // Entry point and command: the copied binary, serving the copied config.
    let entry = last
        .body
        .iter()
        .rev()
        .find(|i| i.op == "ENTRYPOINT")
        .unwrap();
    assert_eq!(exec_form(&entry.args), ["wshub"]);
    assert_eq!(Path::new(bin_dst).file_name().unwrap(), "wshub");
    let cmd = last.body.iter().rev().find(|i| i.op == "CMD").unwrap();
    assert_eq!(
        exec_form(&cmd.args),
        ["serve", "--config", config_dst.as_str()]
    );

    // EXPOSE is the port server.addr listens on.
    let expose = last.body.iter().find(|i| i.op == "EXPOSE").unwrap();
    assert_eq!(
        expose.args.trim_end_matches("/tcp"),
        config_port().to_string()
    );
}

/// `(major, minor)` of a `1.91` / `1.91.0` version.
fn major_minor(v: &str) -> (u32, u32) {
    let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap());
    (parts.next().unwrap(), parts.next().unwrap_or(0))
}

/// The newest `rust-version` among the `wshub` binary's locked (non-dev) dependencies.
fn locked_msrv() -> ((u32, u32), String) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(repo())
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--filter-platform",
            "x86_64-unknown-linux-gnu",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages: BTreeMap<&str, &serde_json::Value> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p))
        .collect();
    let nodes: BTreeMap<&str, &serde_json::Value> = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap(), n))
        .collect();
    let wshub = packages
        .values()
        .find(|p| {
            p["name"] == "wshub"
                && p["manifest_path"]
                    .as_str()
                    .unwrap()
                    .starts_with(repo().to_str().unwrap())
        })
        .unwrap()["id"]
        .as_str()
        .unwrap();
    let mut seen = BTreeSet::new();
    let mut todo = vec![wshub];
    let mut newest = ((0, 0), String::new());
    while let Some(id) = todo.pop() {
        if !seen.insert(id) {
            continue;
        }
        if let Some(rv) = packages[id]["rust_version"].as_str() {
            let v = major_minor(rv);
            if v > newest.0 {
                newest = (
                    v,
                    format!("{} {}", packages[id]["name"], packages[id]["version"]),
                );
            }
        }
        for dep in nodes[id]["deps"].as_array().unwrap() {
            let build_or_normal = dep["dep_kinds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kind"] != "dev");
            if build_or_normal {
                todo.push(dep["pkg"].as_str().unwrap());
            }
        }
    }
    newest
}

#[test]
fn dockerfile_build_stage_is_cached_locked_and_new_enough() {
    let stages = dockerfile();
    let build = &stages[0];
    let tag = build
        .image
        .strip_prefix("rust:")
        .unwrap_or_else(|| panic!("build stage: {} is not the rust image", build.image));
    assert!(
        tag.ends_with("-bookworm"),
        "build on bookworm like the runtime stage (glibc): {tag}"
    );
    let version = major_minor(tag.trim_end_matches("-bookworm"));
    let (needed, by) = locked_msrv();
    assert!(
        version >= needed,
        "build stage rust:{tag} is older than Rust {}.{}, required by {by} in Cargo.lock",
        needed.0,
        needed.1
    );

    // The cargo builds: --locked --release, just the binary.
    let builds: Vec<usize> = build
        .body
        .iter()
        .enumerate()
        .filter(|(_, i)| i.op == "RUN" && i.args.contains("cargo build"))
        .map(|(n, _)| n)
        .collect();
    assert!(
        builds.len() >= 2,
        "a dependency-caching build, then the real one"
    );
    for &n in &builds {
        let args = &build.body[n].args;
        for flag in ["--locked", "--release", "--bin wshub"] {
            assert!(args.contains(flag), "`{args}` lacks {flag}");
        }
    }

    // The caching build sees only manifests: nothing before it copies sources, and it has
    // every workspace member's Cargo.toml (cargo loads the whole workspace).
    let copied_before: Vec<String> = build.body[..builds[0]]
        .iter()
        .filter(|i| i.op == "COPY")
        .flat_map(|i| copy_parts(&i.args).1)
        .collect();
    for src in &copied_before {
        assert!(
            src.ends_with("Cargo.toml") || src.ends_with("Cargo.lock"),
            "COPY {src} before the dependency build invalidates its cache on every change"
        );
    }
    let members = workspace_members();
    assert!(!members.is_empty());
    for member in members {
        let manifest = format!("{member}/Cargo.toml");
        assert!(
            copied_before.contains(&manifest),
            "the dependency step must COPY {manifest} (a workspace member)"
        );
    }
    assert!(copied_before.contains(&"Cargo.lock".to_owned()));
}

/// The workspace members, from the root Cargo.toml's `members = [...]` line.
fn workspace_members() -> Vec<String> {
    let text = read("Cargo.toml");
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("members"))
        .expect("[workspace] members");
    let list = line.split_once('=').unwrap().1.trim();
    list.trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .map(|m| m.trim().trim_matches('"').to_owned())
        .filter(|m| !m.is_empty())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// deploy/docker-compose.yml

fn compose() -> Value {
    yaml("deploy/docker-compose.yml")
}

/// The compose services running wshub (built from the repository's Dockerfile).
fn wshub_services(compose: &Value) -> BTreeMap<String, Value> {
    compose["services"]
        .as_mapping()
        .unwrap()
        .iter()
        .filter(|(_, svc)| !svc["build"].is_null())
        .map(|(name, svc)| (s(name).to_owned(), svc.clone()))
        .collect()
}

/// `${VAR:-default}`, `${VAR-default}`, `${VAR}`, `$VAR` as compose interpolates them, with
/// every variable unset (the defaults are what `docker compose up` uses out of the box).
fn interpolate(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body.find('}').expect("unterminated ${");
            let expr = &body[..end];
            if let Some((_, default)) = expr.split_once(":-").or_else(|| expr.split_once('-')) {
                out.push_str(default);
            }
            rest = &body[end + 1..];
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            rest = &after[end..];
        }
    }
    out.push_str(rest);
    out
}

/// A service's environment (map or `KEY=value` list form), interpolated.
fn compose_env(svc: &Value) -> BTreeMap<String, String> {
    match &svc["environment"] {
        Value::Mapping(m) => m
            .iter()
            .map(|(k, v)| (s(k).to_owned(), interpolate(&scalar(v))))
            .collect(),
        Value::Sequence(list) => list
            .iter()
            .map(|item| {
                let (k, v) = s(item).split_once('=').unwrap();
                (k.to_owned(), interpolate(v))
            })
            .collect(),
        Value::Null => BTreeMap::new(),
        other => panic!("environment: {other:?}"),
    }
}

/// A compose volume: (host source or volume name, container target, is a bind mount).
fn volume_parts(v: &Value) -> (String, String, bool) {
    match v {
        Value::String(short) => {
            let mut parts = short.split(':');
            let src = parts.next().unwrap().to_owned();
            let dst = parts
                .next()
                .unwrap_or_else(|| panic!("volume {short}: no target"))
                .to_owned();
            let bind = src.starts_with('.') || src.starts_with('/') || src.starts_with('~');
            (src, dst, bind)
        }
        Value::Mapping(_) => (
            s(&v["source"]).to_owned(),
            s(&v["target"]).to_owned(),
            v["type"] == "bind",
        ),
        other => panic!("volume: {other:?}"),
    }
}

/// The host path a bind mount source names (relative to the compose file's directory).
fn host_path(src: &str) -> PathBuf {
    deploy_dir().join(src)
}

/// The host file a container path resolves to through `svc`'s bind mounts, if any.
fn host_file_for(svc: &Value, container_path: &str) -> Option<PathBuf> {
    let mut best: Option<(usize, PathBuf)> = None;
    for v in svc["volumes"].as_sequence().into_iter().flatten() {
        let (src, dst, bind) = volume_parts(v);
        if !bind {
            continue;
        }
        let dst = dst.trim_end_matches('/');
        let rest = if container_path == dst {
            Some("")
        } else {
            container_path
                .strip_prefix(dst)
                .and_then(|r| r.strip_prefix('/'))
        };
        if let Some(rest) = rest
            && best.as_ref().is_none_or(|(len, _)| dst.len() > *len)
        {
            let host = host_path(&src);
            best = Some((
                dst.len(),
                if rest.is_empty() {
                    host
                } else {
                    host.join(rest)
                },
            ));
        }
    }
    best.map(|(_, p)| p)
}

#[test]
fn compose_paths_exist() {
    let compose = compose();
    let named: BTreeSet<String> = compose["volumes"]
        .as_mapping()
        .map(|m| m.keys().map(|k| s(k).to_owned()).collect())
        .unwrap_or_default();
    let mut binds = 0;
    let mut builds = 0;
    for (name, svc) in compose["services"].as_mapping().unwrap() {
        let name = s(name);
        if !svc["build"].is_null() {
            builds += 1;
            let (context, dockerfile) = match &svc["build"] {
                Value::String(ctx) => (ctx.clone(), "Dockerfile".to_owned()),
                b => (
                    s(&b["context"]).to_owned(),
                    b["dockerfile"].as_str().unwrap_or("Dockerfile").to_owned(),
                ),
            };
            let ctx = host_path(&context);
            assert!(
                ctx.is_dir(),
                "{name}: build context {context} is not a directory"
            );
            assert!(
                ctx.join(&dockerfile).is_file(),
                "{name}: {context}/{dockerfile} does not exist"
            );
            assert_eq!(
                ctx.canonicalize().unwrap(),
                repo(),
                "{name}: the image is built from the repository root"
            );
        }
        for v in svc["volumes"].as_sequence().into_iter().flatten() {
            let (src, dst, bind) = volume_parts(v);
            if bind {
                binds += 1;
                assert!(
                    host_path(&src).exists(),
                    "{name}: mounts {src} (-> {dst}), which does not exist under deploy/"
                );
            } else {
                assert!(named.contains(&src), "{name}: volume {src} is not declared");
            }
        }
    }
    assert_eq!(builds, 3, "three wshub nodes built from the Dockerfile");
    assert!(
        binds >= 7,
        "expected the config, prometheus and grafana mounts, found {binds}"
    );
}

#[test]
fn compose_runs_three_wshub_nodes_on_nats_jetstream() {
    let compose = compose();
    let nodes = wshub_services(&compose);
    assert_eq!(
        nodes.keys().cloned().collect::<Vec<_>>(),
        ["wshub-1", "wshub-2", "wshub-3"]
    );
    let port = config_port();
    let mut ids = BTreeSet::new();
    for (i, (name, svc)) in nodes.iter().enumerate() {
        let env = compose_env(svc);
        let id = env
            .get("WSHUB_CLUSTER__NODE_ID")
            .unwrap_or_else(|| panic!("{name}: no WSHUB_CLUSTER__NODE_ID"));
        assert_eq!(id, name, "{name}: node id");
        ids.insert(id.clone());
        assert!(
            env.get("WSHUB_AUTH__SECRET_KEY")
                .is_some_and(|k| !k.is_empty()),
            "{name}: auth secret"
        );
        assert_eq!(
            env.get("WSHUB_AUTH__ENABLED").map(String::as_str),
            Some("true")
        );
        let ports: Vec<String> = seq(&svc["ports"]).iter().map(scalar).collect();
        assert_eq!(
            ports,
            [format!("{}:{port}", 8081 + i)],
            "{name}: published port"
        );
        assert_eq!(
            svc["depends_on"]["nats"]["condition"], "service_started",
            "{name}: depends_on nats"
        );
        assert_eq!(svc["image"], "wshub:latest", "{name}: image name");
    }
    assert_eq!(ids.len(), 3, "node ids must differ");

    let nats = &compose["services"]["nats"];
    assert!(
        s(&nats["image"]).starts_with("nats:2.10"),
        "{:?}",
        nats["image"]
    );
    let command: Vec<String> = match &nats["command"] {
        Value::String(c) => c.split_whitespace().map(str::to_owned).collect(),
        c => seq(c).iter().map(scalar).collect(),
    };
    assert!(
        command.iter().any(|a| a == "-js" || a == "--jetstream"),
        "nats must run JetStream: {command:?}"
    );
    assert!(s(&compose["services"]["redis"]["image"]).starts_with("redis:7"));
}

#[test]
fn compose_nodes_config_passes_check_config() {
    let compose = compose();
    let image_config = "/etc/wshub/wshub.yaml";
    for (name, svc) in wshub_services(&compose) {
        // The config the node reads is the repository's deploy/config/wshub.yaml (mounted
        // over the baked copy, which is the same file).
        let host = host_file_for(&svc, image_config)
            .unwrap_or_else(|| panic!("{name}: nothing mounted at {image_config}"));
        assert_eq!(
            host.canonicalize().unwrap(),
            repo().join(CONFIG).canonicalize().unwrap(),
            "{name}: {image_config} must come from {CONFIG}"
        );
        let env = compose_env(&svc);
        let effective = assert_valid(&name, &host, &env);
        assert_production_shape(&name, &effective);
        assert_eq!(effective["cluster"]["node_id"], name.as_str());
        assert_eq!(effective["auth"]["enabled"], true, "{name}: auth on");
        assert_eq!(
            effective["auth"]["secret_key"], "***",
            "{name}: a key is set (masked)"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// deploy/prometheus.yml and Grafana

#[test]
fn prometheus_targets_are_the_compose_nodes() {
    let compose = compose();
    let port = config_port();
    let expected: BTreeSet<String> = wshub_services(&compose)
        .keys()
        .map(|name| format!("{name}:{port}"))
        .collect();
    let prom = yaml("deploy/prometheus.yml");
    let job = seq(&prom["scrape_configs"])
        .iter()
        .find(|j| j["job_name"] == "wshub")
        .expect("a wshub scrape job");
    assert_eq!(job["metrics_path"], "/metrics");
    let targets: BTreeSet<String> = seq(&job["static_configs"])
        .iter()
        .flat_map(|c| seq(&c["targets"]).iter().map(|t| s(t).to_owned()))
        .collect();
    assert_eq!(
        targets, expected,
        "prometheus.yml targets vs compose wshub services"
    );

    // Compose's Prometheus reads exactly this file.
    let svc = &compose["services"]["prometheus"];
    let flag = seq(&svc["command"])
        .iter()
        .map(s)
        .find_map(|a| a.strip_prefix("--config.file="))
        .expect("prometheus --config.file");
    let host = host_file_for(svc, flag).expect("prometheus config is mounted");
    assert_eq!(
        host.canonicalize().unwrap(),
        deploy_dir().join("prometheus.yml").canonicalize().unwrap()
    );
}

#[test]
fn grafana_provisioning_points_at_existing_files() {
    let compose = compose();
    let grafana = &compose["services"]["grafana"];

    // Datasources: the provisioning directory Grafana reads, and in it a Prometheus with uid
    // `prometheus` at the compose Prometheus service.
    let ds_dir = host_file_for(grafana, "/etc/grafana/provisioning/datasources")
        .expect("datasource provisioning is mounted");
    let ds_file = ds_dir.join("prometheus.yml");
    assert!(ds_file.is_file(), "{}", ds_file.display());
    assert_eq!(
        ds_file.canonicalize().unwrap(),
        deploy_dir()
            .join("grafana/provisioning/datasources/prometheus.yml")
            .canonicalize()
            .unwrap()
    );
    let ds = yaml("deploy/grafana/provisioning/datasources/prometheus.yml");
    let prom = seq(&ds["datasources"])
        .iter()
        .find(|d| d["uid"] == "prometheus")
        .expect("a datasource with uid prometheus");
    assert_eq!(prom["type"], "prometheus");
    let prom_port = seq(&compose["services"]["prometheus"]["ports"])
        .iter()
        .map(scalar)
        .next()
        .unwrap();
    let prom_port = prom_port.rsplit(':').next().unwrap();
    assert_eq!(
        prom["url"],
        format!("http://prometheus:{prom_port}").as_str()
    );

    // Dashboards: the provider's path is mounted, and holds the repository's dashboard.
    let dash_dir = host_file_for(grafana, "/etc/grafana/provisioning/dashboards")
        .expect("dashboard provisioning is mounted");
    assert!(dash_dir.join("wshub.yml").is_file());
    let providers = yaml("deploy/grafana/provisioning/dashboards/wshub.yml");
    let provider = &seq(&providers["providers"])[0];
    assert_eq!(provider["type"], "file");
    let path = s(&provider["options"]["path"]);
    let dashboard = host_file_for(grafana, &format!("{path}/wshub-dashboard.json"))
        .unwrap_or_else(|| panic!("nothing mounted at the provider path {path}"));
    assert_eq!(
        dashboard.canonicalize().unwrap(),
        deploy_dir()
            .join("grafana/wshub-dashboard.json")
            .canonicalize()
            .unwrap()
    );
    // Every file the provider would load there is mounted from an existing file.
    for v in seq(&grafana["volumes"]) {
        let (src, dst, _) = volume_parts(v);
        if dst.starts_with(path) {
            assert!(host_path(&src).exists(), "{src}");
        }
    }

    // The dashboard picks its data source through a `datasource` variable of the type the
    // provisioned one has.
    let json: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/wshub-dashboard.json")).unwrap();
    let var = json["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "datasource")
        .expect("dashboard variable `datasource`");
    assert_eq!(var["type"], "datasource");
    assert_eq!(var["query"], s(&prom["type"]));
}

// ---------------------------------------------------------------------------------------------
// deploy/k8s

/// Every object in deploy/k8s/*.yaml, by kind.
fn k8s() -> BTreeMap<String, Vec<Value>> {
    let mut by_kind: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut files = Vec::new();
    files_under(&deploy_dir().join("k8s"), &mut files);
    files.sort();
    let mut count = 0;
    for f in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "yaml" || e == "yml"))
    {
        for doc in yaml_docs(f) {
            count += 1;
            assert!(
                doc["apiVersion"].is_string(),
                "{}: object without apiVersion",
                f.display()
            );
            assert!(
                doc["metadata"]["name"].is_string(),
                "{}: object without a name",
                f.display()
            );
            by_kind
                .entry(s(&doc["kind"]).to_owned())
                .or_default()
                .push(doc);
        }
    }
    assert!(
        count >= 4,
        "deploy/k8s: expected ConfigMap, Secret, Deployment, Service"
    );
    by_kind
}

fn one<'a>(objects: &'a BTreeMap<String, Vec<Value>>, kind: &str) -> &'a Value {
    let list = objects
        .get(kind)
        .unwrap_or_else(|| panic!("deploy/k8s: no {kind}"));
    assert_eq!(list.len(), 1, "deploy/k8s: one {kind}");
    &list[0]
}

/// The wshub container of the Deployment.
fn container(deployment: &Value) -> &Value {
    let containers = seq(&deployment["spec"]["template"]["spec"]["containers"]);
    containers
        .iter()
        .find(|c| c["name"] == "wshub")
        .expect("a container named wshub")
}

/// Whether `port` (a number or a port name) is the container's port `number`.
fn names_port(container: &Value, port: &Value, number: u64) -> bool {
    match port {
        Value::Number(n) => n.as_u64() == Some(number),
        Value::String(name) => seq(&container["ports"])
            .iter()
            .any(|p| p["name"] == name.as_str() && p["containerPort"].as_u64() == Some(number)),
        _ => false,
    }
}

#[test]
fn k8s_objects_are_consistent() {
    let objects = k8s();
    let deployment = one(&objects, "Deployment");
    let service = one(&objects, "Service");
    let secret = one(&objects, "Secret");
    let configmap = one(&objects, "ConfigMap");

    // One namespace for everything, the one namespace.yaml creates.
    let ns = objects
        .get("Namespace")
        .map(|n| s(&n[0]["metadata"]["name"]).to_owned())
        .unwrap_or_else(|| "wshub".into());
    for (kind, list) in &objects {
        for obj in list.iter().filter(|_| kind != "Namespace") {
            assert_eq!(
                obj["metadata"]["namespace"],
                ns.as_str(),
                "{kind} namespace"
            );
        }
    }

    let spec = &deployment["spec"];
    let pod = &spec["template"]["spec"];
    let c = container(deployment);
    assert_eq!(spec["replicas"], 3);
    assert_eq!(c["image"], "wshub:latest");

    // Labels: the Deployment selects its pods, the Service selects the same pods.
    let pod_labels = spec["template"]["metadata"]["labels"].as_mapping().unwrap();
    for (k, v) in spec["selector"]["matchLabels"].as_mapping().unwrap() {
        assert_eq!(pod_labels.get(k), Some(v), "Deployment selector {k:?}");
    }
    for (k, v) in service["spec"]["selector"].as_mapping().unwrap() {
        assert_eq!(pod_labels.get(k), Some(v), "Service selector {k:?}");
    }

    // Ports: the container port is server.addr's, the Service targets it on port 80.
    let port = u64::from(config_port());
    assert!(
        seq(&c["ports"]).iter().any(|p| p["containerPort"] == port),
        "container port {port}"
    );
    let svc_ports = seq(&service["spec"]["ports"]);
    assert_eq!(svc_ports.len(), 1);
    assert_eq!(svc_ports[0]["port"], 80);
    assert!(
        names_port(c, &svc_ports[0]["targetPort"], port),
        "Service targetPort {:?} is not the container's port {port}",
        svc_ports[0]["targetPort"]
    );
    assert_eq!(service["spec"]["type"], "ClusterIP");
    let ann = &service["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/scrape"], "true");
    assert_eq!(ann["prometheus.io/port"], port.to_string().as_str());
    assert_eq!(ann["prometheus.io/path"], "/metrics");

    // Probes.
    let ready = &c["readinessProbe"]["httpGet"];
    let live = &c["livenessProbe"]["httpGet"];
    assert_eq!(ready["path"], "/health/ready", "readiness probe");
    assert_eq!(live["path"], "/health", "liveness probe");
    assert!(names_port(c, &ready["port"], port), "readiness probe port");
    assert!(names_port(c, &live["port"], port), "liveness probe port");

    // Shutdown: preStop sleeps through a shell the image has, and the grace period covers
    // it plus wshub's own drain (10 s in main.rs).
    let pre_stop: Vec<String> = seq(&c["lifecycle"]["preStop"]["exec"]["command"])
        .iter()
        .map(scalar)
        .collect();
    assert_eq!(pre_stop[..2], ["sh", "-c"]);
    let sleep: u64 = pre_stop[2]
        .strip_prefix("sleep ")
        .expect("preStop runs sleep")
        .parse()
        .unwrap();
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert_eq!(grace, 30);
    assert!(
        grace >= sleep + 10 + 5,
        "grace {grace}s < preStop {sleep}s + drain 10s + margin"
    );

    // Node id from the pod name.
    let env = seq(&c["env"]);
    let node_id = env
        .iter()
        .find(|e| e["name"] == "WSHUB_CLUSTER__NODE_ID")
        .expect("WSHUB_CLUSTER__NODE_ID");
    assert_eq!(
        node_id["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );

    // Secrets referenced exist in the Secret.
    let secret_name = s(&secret["metadata"]["name"]);
    let secret_keys: BTreeSet<&str> = ["stringData", "data"]
        .iter()
        .filter_map(|f| secret[*f].as_mapping())
        .flat_map(|m| m.keys().map(s))
        .collect();
    let mut refs = 0;
    for e in env {
        let r = &e["valueFrom"]["secretKeyRef"];
        if !r.is_null() {
            refs += 1;
            assert_eq!(r["name"], secret_name, "{:?}", e["name"]);
            assert!(
                secret_keys.contains(s(&r["key"])),
                "Secret has no key {:?}",
                r["key"]
            );
        }
    }
    assert!(refs >= 1, "the auth key comes from the Secret");

    // Security.
    let psc = &pod["securityContext"];
    let csc = &c["securityContext"];
    assert!(
        psc["runAsNonRoot"] == true || csc["runAsNonRoot"] == true,
        "runAsNonRoot"
    );
    assert_eq!(csc["readOnlyRootFilesystem"], true);
    assert_eq!(csc["allowPrivilegeEscalation"], false);
    assert!(
        seq(&csc["capabilities"]["drop"]).iter().any(|d| d == "ALL"),
        "drop ALL"
    );
    let uid = if psc["runAsUser"].is_null() {
        &csc["runAsUser"]
    } else {
        &psc["runAsUser"]
    };
    let image_user = dockerfile()
        .last()
        .unwrap()
        .body
        .iter()
        .rev()
        .find(|i| i.op == "USER")
        .unwrap()
        .args
        .split(':')
        .next()
        .unwrap()
        .parse::<u64>()
        .unwrap();
    assert_eq!(
        uid.as_u64(),
        Some(image_user),
        "runAsUser is the image's USER"
    );

    // Resources.
    for side in ["requests", "limits"] {
        for what in ["cpu", "memory"] {
            assert!(
                !c["resources"][side][what].is_null(),
                "resources.{side}.{what}"
            );
        }
    }

    // The config: the ConfigMap mounted where --config points.
    let args: Vec<String> = seq(&c["args"]).iter().map(scalar).collect();
    assert_eq!(args[..2], ["serve", "--config"]);
    let config_path = Path::new(&args[2]);
    let mount = seq(&c["volumeMounts"])
        .iter()
        .find(|m| config_path.starts_with(s(&m["mountPath"])))
        .expect("a volume mounted where --config points");
    let volume = seq(&pod["volumes"])
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mounted volume");
    assert_eq!(volume["configMap"]["name"], configmap["metadata"]["name"]);
    let in_volume = config_path
        .strip_prefix(s(&mount["mountPath"]))
        .unwrap()
        .to_str()
        .unwrap();
    let key = match volume["configMap"]["items"].as_sequence() {
        Some(items) => s(&items
            .iter()
            .find(|i| i["path"] == in_volume)
            .unwrap_or_else(|| panic!("no ConfigMap item at {in_volume}"))["key"])
        .to_owned(),
        None => in_volume.to_owned(),
    };
    assert!(
        configmap["data"][key.as_str()].is_string(),
        "ConfigMap has no key {key}"
    );
}

#[test]
fn configmap_embeds_the_config_and_passes_check_config_with_the_pod_env() {
    let objects = k8s();
    let configmap = one(&objects, "ConfigMap");
    let deployment = one(&objects, "Deployment");
    let secret = one(&objects, "Secret");
    let c = container(deployment);

    let embedded = s(&configmap["data"]["wshub.yaml"]);
    assert_eq!(
        embedded,
        read(CONFIG),
        "deploy/k8s/configmap.yaml must embed {CONFIG} verbatim"
    );

    // The environment the kubelet gives the container, with made-up pod facts.
    let pod_name = "wshub-6f7c9d8b5-x2k4p";
    let mut env = BTreeMap::new();
    for e in seq(&c["env"]) {
        let name = s(&e["name"]).to_owned();
        let value = if !e["value"].is_null() {
            scalar(&e["value"])
        } else if let Some(path) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            match path {
                "metadata.name" => pod_name.to_owned(),
                "status.podIP" => "10.1.2.3".to_owned(),
                "metadata.namespace" => "wshub".to_owned(),
                other => panic!("fieldRef {other}: add it to this test"),
            }
        } else if let Some(key) = e["valueFrom"]["secretKeyRef"]["key"].as_str() {
            scalar(&secret["stringData"][key])
        } else {
            panic!("env {name}: unsupported source");
        };
        env.insert(name, value);
    }
    // $(VAR) references to earlier variables, as the kubelet expands them.
    let snapshot = env.clone();
    for value in env.values_mut() {
        for (k, v) in &snapshot {
            *value = value.replace(&format!("$({k})"), v);
        }
        assert!(!value.contains("$("), "unexpanded reference in {value}");
    }

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wshub.yaml");
    std::fs::write(&file, embedded).unwrap();
    let effective = assert_valid("ConfigMap + Deployment env", &file, &env);
    assert_production_shape("ConfigMap", &effective);
    assert_eq!(effective["cluster"]["node_id"], pod_name);
    assert_eq!(effective["cluster"]["advertise_addr"], "10.1.2.3:8080");
    assert_eq!(effective["auth"]["enabled"], true);
    assert_eq!(effective["auth"]["secret_key"], "***");
    assert_eq!(effective["admin"]["api_key"], "***");
}

#[test]
fn example_secret_is_marked_for_replacement() {
    let objects = k8s();
    let secret = one(&objects, "Secret");
    let text = read("deploy/k8s/secret.yaml");
    assert!(
        text.contains("REPLACE"),
        "secret.yaml must say its values are examples"
    );
    for (k, v) in secret["stringData"].as_mapping().unwrap() {
        assert!(
            s(v).contains("REPLACE"),
            "Secret value {:?} must be an obvious placeholder",
            k
        );
    }
}

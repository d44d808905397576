//! A few-second run of the load generator against a real wshub on loopback: it must deliver
//! every publication to every member, in order, with nothing lost or doubled. No timing
//! assertions (this machine's timings are noise); the numbers belong in BENCHMARKS.md.
#![allow(clippy::unwrap_used)]

use std::process::Command;

fn run(args: &[&str]) -> serde_json::Value {
    let out = Command::new(assert_cmd::cargo::cargo_bin("wshub-bench"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap();
    serde_json::from_str(line).unwrap()
}

/// A node on a free loopback port, and its address.
async fn start(config: wshub::Config) -> (wshub::RunningServer, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = wshub::Server::builder()
        .config(config)
        .build()
        .unwrap()
        .serve(listener)
        .await
        .unwrap();
    let server = running.local_addr().to_string();
    (running, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_and_echo_smoke_run_loses_nothing() {
    let (_running, server) = start(wshub::Config::default()).await;
    // The server runs in this process: its CPU time is ours.
    let pid = std::process::id().to_string();
    let result = tokio::task::spawn_blocking(move || {
        let fan = run(&[
            "fanout",
            "--server",
            &server,
            "--n",
            "200",
            "--messages",
            "50",
            "--window",
            "4",
            "--timeout",
            "60",
            "--pid",
            &pid,
        ]);
        let echo = run(&[
            "echo",
            "--server",
            &server,
            "--clients",
            "10",
            "--round-trips",
            "20",
            "--timeout",
            "60",
        ]);
        (fan, echo)
    })
    .await
    .unwrap();
    let (fan, echo) = result;
    assert_eq!(fan["delivered"], 200 * 50);
    assert_eq!(fan["lost"], 0);
    assert_eq!(fan["out_of_order_or_duplicate"], 0);
    // Measured (10 ms ticks: a short run may count none, so no lower bound).
    assert!(
        fan["server_cpu_us_per_delivery"].as_f64().unwrap() >= 0.0,
        "{fan}"
    );
    assert_eq!(echo["round_trips"], 200.0);
}

#[test]
fn refuses_a_non_loopback_target() {
    let out = Command::new(assert_cmd::cargo::cargo_bin("wshub-bench"))
        .args(["fanout", "--server", "10.0.0.1:80"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
}

/// Open-loop fan-out and JWT churn against a node with auth on: every publication delivered
/// once in order, every connect/join/close cycle completed without an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_and_jwt_churn_smoke_run_loses_nothing() {
    let mut config = wshub::Config::default();
    config.auth.enabled = true;
    config.auth.secret_key = "smoke-secret".into();
    let (_running, server) = start(config).await;
    let (fan, churn) = tokio::task::spawn_blocking(move || {
        let fan = run(&[
            "fanout",
            "--server",
            &server,
            "--jwt-secret",
            "smoke-secret",
            "--n",
            "100",
            "--messages",
            "40",
            "--rate",
            "200",
            "--timeout",
            "60",
        ]);
        let churn = run(&[
            "churn",
            "--server",
            &server,
            "--jwt-secret",
            "smoke-secret",
            "--workers",
            "4",
            "--duration",
            "1",
            "--max-connects",
            "2000",
            "--timeout",
            "60",
        ]);
        (fan, churn)
    })
    .await
    .unwrap();
    assert_eq!(fan["rate"], 200.0);
    assert_eq!(fan["delivered"], 100 * 40);
    assert_eq!(fan["lost"], 0);
    assert_eq!(fan["out_of_order_or_duplicate"], 0);
    assert_eq!(churn["errors"], 0, "{churn}");
    assert_eq!(churn["jwt"], true);
    assert!(churn["cycles"].as_u64().unwrap() > 0, "{churn}");
}

/// A wrong secret is refused at the upgrade, and churn says so instead of counting cycles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_reports_refused_tokens_as_errors() {
    let mut config = wshub::Config::default();
    config.auth.enabled = true;
    config.auth.secret_key = "right".into();
    let (_running, server) = start(config).await;
    let churn = tokio::task::spawn_blocking(move || {
        run(&[
            "churn",
            "--server",
            &server,
            "--jwt-secret",
            "wrong",
            "--workers",
            "2",
            "--duration",
            "1",
            "--max-connects",
            "20",
        ])
    })
    .await
    .unwrap();
    assert_eq!(churn["cycles"], 0);
    assert_eq!(churn["errors"], 20);
    assert!(
        churn["first_error"].as_str().unwrap().contains("401"),
        "{churn}"
    );
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_and_echo_smoke_run_loses_nothing() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = wshub::Server::builder()
        .build()
        .unwrap()
        .serve(listener)
        .await
        .unwrap();
    let server = running.local_addr().to_string();
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

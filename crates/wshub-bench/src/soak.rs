//! `wshub-bench soak`: hours-long (or 60-second) load with churn, watching the server's memory.
//!
//! ```text
//! wshub-bench soak --server 127.0.0.1:8080 --pid <server pid> --duration 1800 --warmup 120 \
//!     --steady 200 --rooms 10 --msgs-per-s 100 --churn-per-s 20 --plot rss.svg --csv rss.csv
//! ```
//!
//! - A steady population of `--steady` connections, each joined to one of `--rooms` rooms,
//!   publishes `--msgs-per-s` room messages in total (round robin over the members); every
//!   steady member drains its socket and checks that it gets each steady sender's messages in
//!   order, none lost or doubled.
//! - Churn: `--churn-per-s` new connections a second, each joining 1..=`--churn-rooms` of the
//!   shared rooms plus a room of its own (created and removed again), sending `--churn-msgs`
//!   acknowledged room messages, then going: `--abrupt-percent` of them drop the TCP socket
//!   without leaving or a close frame, the others leave every room and close cleanly. Both
//!   server cleanup paths run all the time; churn messages to shared rooms are checked too.
//! - Every `--sample-every` seconds: the server's VmRSS and open fds (from /proc/PID) and its
//!   `/metrics` `wshub_connections` / `wshub_rooms`. The first `--warmup` seconds are left out
//!   of the growth numbers (allocator arenas and caches fill up there).
//!
//! At the end the load stops, deliveries and the server's connection count settle (bounded
//! waits), the steady population closes, and one `RESULT {json}` line is printed. Growth is
//! `rss_end_kb - rss_start_kb`, each the mean of the first / last three samples after warm-up,
//! and `growth_per_min_kb` is the least-squares slope over all samples after warm-up.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

use super::{Common, Target, Ws, connect, request, rss_kb};
use crate::plot::{LinePlot, Series};

/// Longest a churn connection may take from connect to gone.
const CHURN_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest each end-of-run settling wait takes.
const SETTLE: Duration = Duration::from_secs(20);
/// Error messages kept for the result (all of them are counted).
const MAX_ERROR_SAMPLES: usize = 10;

#[derive(clap::Args, Clone, Debug)]
pub(crate) struct SoakArgs {
    /// The wshub server (loopback only).
    #[arg(long, default_value = "127.0.0.1:8080")]
    server: SocketAddr,
    /// Where `/metrics` is served when `metrics.listen` is set; default: --server.
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// The server's pid, to read its VmRSS and open fds.
    #[arg(long)]
    pid: u32,
    /// Seconds of load, warm-up included.
    #[arg(long, default_value_t = 300)]
    duration: u64,
    /// Seconds at the start left out of the growth numbers.
    #[arg(long, default_value_t = 60)]
    warmup: u64,
    /// Seconds between samples.
    #[arg(long, default_value_t = 5.0)]
    sample_every: f64,
    /// Connections held for the whole run.
    #[arg(long, default_value_t = 200)]
    steady: usize,
    /// New (short-lived) connections per second.
    #[arg(long, default_value_t = 20.0)]
    churn_per_s: f64,
    /// Shared rooms; steady member i is in room i % rooms.
    #[arg(long, default_value_t = 10)]
    rooms: usize,
    /// Room messages per second published by the steady population (in total).
    #[arg(long, default_value_t = 100.0)]
    msgs_per_s: f64,
    /// Room messages each churn connection sends.
    #[arg(long, default_value_t = 3)]
    churn_msgs: usize,
    /// Most shared rooms a churn connection joins (it joins 1..=this, varying).
    #[arg(long, default_value_t = 3)]
    churn_rooms: usize,
    /// Percent of churn connections that drop the socket without leaving or closing.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(0..=100))]
    abrupt_percent: u64,
    /// Most churn connections in flight; a churn tick finding none free is skipped (counted).
    #[arg(long, default_value_t = 64)]
    churn_concurrency: usize,
    /// Bytes of padding in each room message.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Parallel connection attempts while the steady population connects.
    #[arg(long, default_value_t = 100)]
    concurrency: usize,
    /// Write the RSS plot here (SVG).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Write every sample here (CSV).
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Hard wall-clock limit, seconds; default: duration + 180.
    #[arg(long)]
    timeout: Option<u64>,
}

/// Counters shared by every task of the run.
#[derive(Default)]
struct Counters {
    connects: AtomicU64,
    disconnects_clean: AtomicU64,
    disconnects_abrupt: AtomicU64,
    churn_skipped: AtomicU64,
    /// Room messages sent (steady and churn).
    sent: AtomicU64,
    /// Deliveries the steady population must see for what was sent.
    expected: AtomicU64,
    /// Deliveries the steady population saw.
    received: AtomicU64,
    /// Steady senders' messages that arrived out of sequence (lost, doubled or reordered).
    out_of_order: AtomicU64,
    /// Steady connections that ended before the end of the run.
    steady_dropped: AtomicU64,
    errors: AtomicU64,
    error_samples: Mutex<Vec<String>>,
}

impl Counters {
    fn error(&self, what: impl std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut s) = self.error_samples.lock()
            && s.len() < MAX_ERROR_SAMPLES
        {
            s.push(what.to_string());
        }
    }

    fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// One look at the server.
#[derive(Clone, Debug)]
struct Sample {
    t_s: f64,
    rss_kb: u64,
    fds: Option<u64>,
    connections: Option<f64>,
    rooms: Option<f64>,
    connects: u64,
    disconnects: u64,
    sent: u64,
    received: u64,
    errors: u64,
}

/// What the run is set up with, shared by its tasks.
struct Plan {
    common: Common,
    rooms: usize,
    /// Steady members of each shared room.
    members: Vec<u64>,
    churn_rooms: usize,
    churn_msgs: usize,
    abrupt_percent: u64,
    pad: String,
}

fn room_name(r: usize) -> String {
    format!("soak-{r}")
}

/// splitmix64: a deterministic spread of the churn index (which rooms, clean or abrupt).
fn mix(k: u64) -> u64 {
    let mut z = k.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

pub(crate) fn run(args: SoakArgs) -> anyhow::Result<()> {
    let metrics = args.metrics.unwrap_or(args.server);
    if !args.server.ip().is_loopback() || !metrics.ip().is_loopback() {
        bail!(
            "--server and --metrics must be loopback addresses: this tool only loads the local machine"
        );
    }
    if args.warmup >= args.duration {
        bail!("--warmup must be shorter than --duration");
    }
    for (name, v) in [
        ("--sample-every", args.sample_every),
        ("--msgs-per-s", args.msgs_per_s),
        ("--churn-per-s", args.churn_per_s),
    ] {
        if !(v.is_finite() && v >= 0.0) {
            bail!("{name} must be a non-negative number");
        }
    }
    if args.sample_every < 0.1 {
        bail!("--sample-every must be at least 0.1");
    }
    if args.steady == 0 || args.rooms == 0 || args.churn_concurrency == 0 {
        bail!("--steady, --rooms and --churn-concurrency must be at least 1");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let limit = Duration::from_secs(args.timeout.unwrap_or(args.duration + 180));
    let result = runtime.block_on(async move {
        tokio::time::timeout(limit, soak(args, metrics))
            .await
            .context("soak exceeded --timeout")?
    })?;
    println!("RESULT {result}");
    Ok(())
}

async fn soak(args: SoakArgs, metrics: SocketAddr) -> anyhow::Result<serde_json::Value> {
    let common = Common {
        target: Target::Wshub,
        server: args.server,
        concurrency: args.concurrency,
        timeout: args.timeout.unwrap_or(0),
        jwt_secret: None,
        also: Vec::new(),
    };
    let mut members = vec![0u64; args.rooms];
    for i in 0..args.steady {
        members[i % args.rooms] += 1;
    }
    let plan = Arc::new(Plan {
        common,
        rooms: args.rooms,
        members,
        churn_rooms: args.churn_rooms.clamp(1, args.rooms),
        churn_msgs: args.churn_msgs,
        abrupt_percent: args.abrupt_percent,
        pad: "x".repeat(args.size),
    });
    let counters = Arc::new(Counters::default());
    let closing = Arc::new(AtomicBool::new(false));
    let pid = args.pid;
    let rss_before_kb = rss_kb(pid).context("reading the server's VmRSS (is --pid right?)")?;
    let fds_before = count_fds(pid);

    // The steady population.
    let started = Instant::now();
    let steady = connect_steady(&plan, args.steady, args.concurrency).await?;
    counters
        .connects
        .fetch_add(args.steady as u64, Ordering::Relaxed);
    eprintln!(
        "soak: {} steady connections in {} rooms ready in {:.1}s; {}s of load ({}s warm-up)",
        args.steady,
        args.rooms,
        started.elapsed().as_secs_f64(),
        args.duration,
        args.warmup
    );
    let mut sinks = Vec::with_capacity(steady.len());
    let mut receivers = Vec::with_capacity(steady.len());
    for ws in steady {
        let (sink, stream) = ws.split();
        sinks.push(sink);
        receivers.push(tokio::spawn(receive(
            stream,
            counters.clone(),
            closing.clone(),
        )));
    }

    let start = Instant::now();
    let load_end = start + Duration::from_secs(args.duration);
    let bar = progress_bar(args.duration);
    let sampler = tokio::spawn(sample_loop(
        pid,
        metrics,
        start,
        load_end,
        Duration::from_secs_f64(args.sample_every),
        counters.clone(),
        bar.clone(),
    ));
    let publisher = tokio::spawn(publish_loop(
        sinks,
        plan.clone(),
        counters.clone(),
        args.msgs_per_s,
        load_end,
    ));
    let semaphore = Arc::new(Semaphore::new(args.churn_concurrency));
    let churner = tokio::spawn(churn_loop(
        plan.clone(),
        counters.clone(),
        semaphore.clone(),
        args.churn_per_s,
        load_end,
    ));

    let samples = sampler.await?;
    let mut sinks = publisher.await?;
    churner.await?;
    bar.finish_and_clear();
    eprintln!(
        "soak: load stopped after {:.1}s",
        start.elapsed().as_secs_f64()
    );

    // Settle: churn connections finish, deliveries arrive, the server counts its connections.
    let all = u32::try_from(args.churn_concurrency).unwrap_or(u32::MAX);
    if tokio::time::timeout(CHURN_TIMEOUT + SETTLE, semaphore.acquire_many(all))
        .await
        .is_err()
    {
        counters.error("churn connections still running after the load stopped");
    }
    let settle_deadline = Instant::now() + SETTLE;
    while Counters::get(&counters.received) < Counters::get(&counters.expected)
        && Instant::now() < settle_deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let end_server = wait_connections(metrics, args.steady as f64).await;
    let settled_rss_kb = rss_kb(pid).ok();
    let settled_fds = count_fds(pid);

    // The steady population goes, cleanly; then the server should have nobody.
    closing.store(true, Ordering::Relaxed);
    for sink in &mut sinks {
        let _ = tokio::time::timeout(Duration::from_secs(5), sink.close()).await;
    }
    for r in receivers {
        if tokio::time::timeout(SETTLE, r).await.is_err() {
            counters.error("a steady connection did not close");
        }
    }
    drop(sinks);
    let closed_server = wait_connections(metrics, 0.0).await;
    let closed_fds = count_fds(pid);

    let summary = summarize(&samples, args.warmup as f64)?;
    if let Some(path) = &args.csv {
        write_csv(path, &samples)?;
    }
    if let Some(path) = &args.plot {
        let points: Vec<(f64, f64)> = samples
            .iter()
            .map(|s| (s.t_s / 60.0, s.rss_kb as f64 / 1024.0))
            .collect();
        LinePlot {
            title: &format!(
                "wshub soak: server RSS ({} steady, {}/s churn, {}/s messages)",
                args.steady, args.churn_per_s, args.msgs_per_s
            ),
            x_label: "elapsed (minutes)",
            y_label: "VmRSS (MiB)",
            series: vec![Series {
                name: "server VmRSS",
                points: &points,
            }],
            markers: vec![(args.warmup as f64 / 60.0, "end of warm-up")],
            y_from_zero: true,
        }
        .write_svg(path, 960, 540)?;
    }

    let c = &counters;
    let expected = Counters::get(&c.expected);
    let received = Counters::get(&c.received);
    let error_samples = c
        .error_samples
        .lock()
        .map(|s| s.clone())
        .unwrap_or_default();
    let last = samples.last();
    Ok(json!({
        "scenario": "soak",
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "elapsed_s": (start.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        "steady": args.steady,
        "rooms": args.rooms,
        "churn_per_s": args.churn_per_s,
        "msgs_per_s": args.msgs_per_s,
        "samples": samples.len(),
        "samples_after_warmup": summary.n,
        "rss_before_kb": rss_before_kb,
        "rss_start_kb": summary.start_kb,
        "rss_end_kb": summary.end_kb,
        "rss_max_kb": summary.max_kb,
        "growth_kb": summary.end_kb - summary.start_kb,
        "growth_per_min_kb": (summary.slope_kb_per_s * 60.0 * 10.0).round() / 10.0,
        "rss_settled_kb": settled_rss_kb,
        "fds_before": fds_before,
        "fds_end": last.and_then(|s| s.fds),
        "fds_settled": settled_fds,
        "fds_after_close": closed_fds,
        "server_connections_end": end_server.connections,
        "server_rooms_end": end_server.rooms,
        "server_connections_after_close": closed_server.connections,
        "server_rooms_after_close": closed_server.rooms,
        "connects": Counters::get(&c.connects),
        "disconnects_clean": Counters::get(&c.disconnects_clean),
        "disconnects_abrupt": Counters::get(&c.disconnects_abrupt),
        "churn_skipped": Counters::get(&c.churn_skipped),
        "messages_sent": Counters::get(&c.sent),
        "messages_expected": expected,
        "messages_received": received,
        "lost": expected.saturating_sub(received),
        "unexpected": received.saturating_sub(expected),
        "out_of_order": Counters::get(&c.out_of_order),
        "steady_dropped": Counters::get(&c.steady_dropped),
        "errors": Counters::get(&c.errors),
        "error_samples": error_samples,
    }))
}

async fn connect_steady(plan: &Arc<Plan>, n: usize, concurrency: usize) -> anyhow::Result<Vec<Ws>> {
    futures_util::stream::iter(0..n)
        .map(|i| {
            let plan = plan.clone();
            async move {
                let mut ws = connect(&plan.common, &format!("soak-s{i}")).await?;
                let room = room_name(i % plan.rooms);
                request(&mut ws, "join_room", json!({ "room_id": room }), 1)
                    .await
                    .with_context(|| format!("steady {i} joining {room}"))?;
                anyhow::Ok(ws)
            }
        })
        .buffered(concurrency.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// A steady member's reader: counts deliveries, checks each steady sender's sequence.
async fn receive(mut stream: SplitStream<Ws>, counters: Arc<Counters>, closing: Arc<AtomicBool>) {
    // Next sequence number expected from each steady sender.
    let mut next: HashMap<u64, u64> = HashMap::new();
    loop {
        let msg = match stream.next().await {
            Some(Ok(msg)) => msg,
            Some(Err(e)) => {
                if !closing.load(Ordering::Relaxed) {
                    counters.steady_dropped.fetch_add(1, Ordering::Relaxed);
                    counters.error(format!("steady connection failed: {e}"));
                }
                return;
            }
            None => break,
        };
        let text = match msg {
            Message::Text(t) => t,
            Message::Close(frame) => {
                if !closing.load(Ordering::Relaxed) {
                    counters.steady_dropped.fetch_add(1, Ordering::Relaxed);
                    counters.error(format!("server closed a steady connection: {frame:?}"));
                }
                continue;
            }
            _ => continue,
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            counters.error("undecodable frame");
            continue;
        };
        match v["message_type"].as_str() {
            Some("room_message") => {
                counters.received.fetch_add(1, Ordering::Relaxed);
                let c = &v["data"]["content"];
                if c["k"] == "s"
                    && let (Some(sender), Some(seq)) = (c["i"].as_u64(), c["s"].as_u64())
                {
                    let want = next.entry(sender).or_insert(0);
                    if seq != *want {
                        counters.out_of_order.fetch_add(1, Ordering::Relaxed);
                    }
                    *want = seq + 1;
                }
            }
            Some("error") => counters.error(format!("error frame: {}", v["data"])),
            _ => {}
        }
    }
    if !closing.load(Ordering::Relaxed) {
        counters.steady_dropped.fetch_add(1, Ordering::Relaxed);
        counters.error("steady connection ended");
    }
}

/// Publishes round robin over the steady members at `rate` a second until `end`; gives the
/// sinks back for the clean close.
async fn publish_loop(
    mut sinks: Vec<SplitSink<Ws, Message>>,
    plan: Arc<Plan>,
    counters: Arc<Counters>,
    rate: f64,
    end: Instant,
) -> Vec<SplitSink<Ws, Message>> {
    if rate <= 0.0 || sinks.is_empty() {
        tokio::time::sleep_until(end.into()).await;
        return sinks;
    }
    let mut seq = vec![0u64; sinks.len()];
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut k = 0usize;
    while Instant::now() < end {
        tick.tick().await;
        let i = k % sinks.len();
        k += 1;
        let r = i % plan.rooms;
        let env = json!({"message_type": "room_message", "data": {"room_id": room_name(r),
            "content": {"k": "s", "i": i, "s": seq[i], "p": plan.pad}}});
        match sinks[i].send(Message::text(env.to_string())).await {
            Ok(()) => {
                seq[i] += 1;
                counters.sent.fetch_add(1, Ordering::Relaxed);
                counters
                    .expected
                    .fetch_add(plan.members[r].saturating_sub(1), Ordering::Relaxed);
            }
            Err(e) => counters.error(format!("steady {i} send: {e}")),
        }
    }
    sinks
}

/// Starts `rate` churn connections a second until `end`, at most the semaphore's permits at once.
async fn churn_loop(
    plan: Arc<Plan>,
    counters: Arc<Counters>,
    semaphore: Arc<Semaphore>,
    rate: f64,
    end: Instant,
) {
    if rate <= 0.0 {
        tokio::time::sleep_until(end.into()).await;
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut k = 0u64;
    while Instant::now() < end {
        tick.tick().await;
        let Ok(permit) = semaphore.clone().try_acquire_owned() else {
            counters.churn_skipped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let (plan, counters) = (plan.clone(), counters.clone());
        let id = k;
        k += 1;
        tokio::spawn(async move {
            match tokio::time::timeout(CHURN_TIMEOUT, churn_one(id, &plan, &counters)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => counters.error(format!("churn {id}: {e:#}")),
                Err(_) => counters.error(format!("churn {id}: timed out")),
            }
            drop(permit);
        });
    }
}

/// One short-lived connection: join, publish (acknowledged), leave and close, or just vanish.
async fn churn_one(k: u64, plan: &Plan, counters: &Counters) -> anyhow::Result<()> {
    let spread = mix(k);
    let mut ws = connect(&plan.common, &format!("soak-c{k}")).await?;
    counters.connects.fetch_add(1, Ordering::Relaxed);
    let shared = 1 + (spread % plan.churn_rooms as u64) as usize;
    let first = ((spread >> 8) % plan.rooms as u64) as usize;
    let mut rooms: Vec<(String, u64)> = (0..shared)
        .map(|j| {
            let r = (first + j) % plan.rooms;
            (room_name(r), plan.members[r])
        })
        .collect();
    // A room of its own: created by the join, removed when the connection goes.
    rooms.push((format!("soak-own-{k}"), 0));
    let mut rid = 0i64;
    for (room, _) in &rooms {
        rid += 1;
        request(&mut ws, "join_room", json!({ "room_id": room }), rid).await?;
    }
    for m in 0..plan.churn_msgs {
        let (room, steady_members) = &rooms[m % rooms.len()];
        rid += 1;
        let data = json!({"room_id": room, "content": {"k": "c", "c": k, "p": plan.pad}});
        // With a request_id the server acknowledges (`published`) once it has fanned out.
        request(&mut ws, "room_message", data, rid).await?;
        counters.sent.fetch_add(1, Ordering::Relaxed);
        counters
            .expected
            .fetch_add(*steady_members, Ordering::Relaxed);
    }
    if (spread >> 32) % 100 < plan.abrupt_percent {
        // No leave, no close frame: the socket just goes (FIN, or RST with unread data).
        drop(ws);
        counters.disconnects_abrupt.fetch_add(1, Ordering::Relaxed);
        return Ok(());
    }
    for (room, _) in &rooms {
        rid += 1;
        request(&mut ws, "leave_room", json!({ "room_id": room }), rid).await?;
    }
    ws.close(None).await?;
    // Until the server's close frame and the end of the stream.
    while let Some(msg) = ws.next().await {
        if msg.is_err() {
            break;
        }
    }
    counters.disconnects_clean.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

fn progress_bar(secs: u64) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(secs), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("soak [{bar:20}] {pos}/{len}s {wide_msg}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

async fn sample_loop(
    pid: u32,
    metrics: SocketAddr,
    start: Instant,
    end: Instant,
    every: Duration,
    counters: Arc<Counters>,
    bar: ProgressBar,
) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut progress = tokio::time::interval(Duration::from_millis(500));
    loop {
        let last = Instant::now() + every > end;
        if last {
            // The last sample right at the end of the load.
            tokio::time::sleep_until(end.into()).await;
        } else {
            tokio::select! {
                _ = tick.tick() => {}
                _ = progress.tick() => {
                    bar.set_position(start.elapsed().as_secs().min(bar.length().unwrap_or(0)));
                    continue;
                }
            }
        }
        let Some(s) = take_sample(pid, metrics, start, &counters).await else {
            counters.error("the server is gone (no /proc/PID/status)");
            break;
        };
        let line = format!(
            "rss {:.1} MiB, fds {}, conns {}, sent {}, errors {}",
            s.rss_kb as f64 / 1024.0,
            s.fds.map_or("?".into(), |f| f.to_string()),
            s.connections.map_or("?".into(), |c| c.to_string()),
            s.sent,
            s.errors
        );
        if bar.is_hidden() {
            eprintln!("soak t={:.0}s {line}", s.t_s);
        }
        bar.set_message(line);
        samples.push(s);
        if last {
            break;
        }
    }
    samples
}

async fn take_sample(
    pid: u32,
    metrics: SocketAddr,
    start: Instant,
    c: &Counters,
) -> Option<Sample> {
    let t_s = start.elapsed().as_secs_f64();
    let rss_kb = rss_kb(pid).ok()?;
    let server = scrape(metrics).await.unwrap_or_default();
    Some(Sample {
        t_s,
        rss_kb,
        fds: count_fds(pid),
        connections: server.connections,
        rooms: server.rooms,
        connects: Counters::get(&c.connects),
        disconnects: Counters::get(&c.disconnects_clean) + Counters::get(&c.disconnects_abrupt),
        sent: Counters::get(&c.sent),
        received: Counters::get(&c.received),
        errors: Counters::get(&c.errors),
    })
}

fn count_fds(pid: u32) -> Option<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.count() as u64)
}

#[derive(Default, Clone, Copy)]
struct ServerGauges {
    connections: Option<f64>,
    rooms: Option<f64>,
}

/// `wshub_connections` and `wshub_rooms` from `/metrics` (HTTP/1.0, so no chunked body).
async fn scrape(addr: SocketAddr) -> anyhow::Result<ServerGauges> {
    let body = tokio::time::timeout(Duration::from_secs(3), async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await?;
        let mut buf = Vec::new();
        s.take(16 << 20).read_to_end(&mut buf).await?;
        anyhow::Ok(String::from_utf8_lossy(&buf).into_owned())
    })
    .await??;
    Ok(ServerGauges {
        connections: gauge(&body, "wshub_connections"),
        rooms: gauge(&body, "wshub_rooms"),
    })
}

/// The value of an unlabelled (but for constant labels) series in Prometheus text.
fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.trim().parse().ok())
}

/// Polls the server's connection gauge until it reads `want` or `SETTLE` passes.
async fn wait_connections(metrics: SocketAddr, want: f64) -> ServerGauges {
    let deadline = Instant::now() + SETTLE;
    loop {
        let g = scrape(metrics).await.unwrap_or_default();
        if g.connections == Some(want) || Instant::now() >= deadline {
            return g;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Summary {
    n: usize,
    start_kb: i64,
    end_kb: i64,
    max_kb: i64,
    slope_kb_per_s: f64,
}

/// Growth numbers over the samples taken after the warm-up.
fn summarize(samples: &[Sample], warmup_s: f64) -> anyhow::Result<Summary> {
    let after: Vec<&Sample> = samples.iter().filter(|s| s.t_s >= warmup_s).collect();
    if after.len() < 2 {
        bail!(
            "only {} samples after the warm-up: lengthen --duration or shorten --sample-every",
            after.len()
        );
    }
    let k = (after.len() / 3).clamp(1, 3);
    let mean = |s: &[&Sample]| s.iter().map(|s| s.rss_kb as f64).sum::<f64>() / s.len() as f64;
    let start_kb = mean(&after[..k]).round() as i64;
    let end_kb = mean(&after[after.len() - k..]).round() as i64;
    let max_kb = after.iter().map(|s| s.rss_kb as i64).max().unwrap_or(0);
    let n = after.len() as f64;
    let mx = after.iter().map(|s| s.t_s).sum::<f64>() / n;
    let my = after.iter().map(|s| s.rss_kb as f64).sum::<f64>() / n;
    let sxy: f64 = after
        .iter()
        .map(|s| (s.t_s - mx) * (s.rss_kb as f64 - my))
        .sum();
    let sxx: f64 = after.iter().map(|s| (s.t_s - mx).powi(2)).sum();
    let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    Ok(Summary {
        n: after.len(),
        start_kb,
        end_kb,
        max_kb,
        slope_kb_per_s: slope,
    })
}

fn write_csv(path: &std::path::Path, samples: &[Sample]) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    writeln!(
        out,
        "t_s,rss_kb,fds,server_connections,server_rooms,connects,disconnects,messages_sent,messages_received,errors"
    )?;
    let opt = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
    for s in samples {
        writeln!(
            out,
            "{:.1},{},{},{},{},{},{},{},{},{}",
            s.t_s,
            s.rss_kb,
            s.fds.map_or(String::new(), |f| f.to_string()),
            opt(s.connections),
            opt(s.rooms),
            s.connects,
            s.disconnects,
            s.sent,
            s.received,
            s.errors
        )?;
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sample(t_s: f64, rss_kb: u64) -> Sample {
        Sample {
            t_s,
            rss_kb,
            fds: None,
            connections: None,
            rooms: None,
            connects: 0,
            disconnects: 0,
            sent: 0,
            received: 0,
            errors: 0,
        }
    }

    #[test]
    fn growth_leaves_the_warm_up_out() {
        let samples: Vec<Sample> = (0..=20)
            .map(|i| {
                let t = i as f64 * 6.0;
                // Warm-up (t < 30) climbs fast, then 1 KiB per 6 s.
                let rss = if t < 30.0 { 1000 + i * 500 } else { 4000 + i };
                sample(t, rss)
            })
            .collect();
        let s = summarize(&samples, 30.0).unwrap();
        assert_eq!(s.n, 16);
        assert_eq!(s.start_kb, 4006);
        assert_eq!(s.end_kb, 4019);
        assert_eq!(s.max_kb, 4020);
        assert!((s.slope_kb_per_s * 60.0 - 10.0).abs() < 1e-6);
        assert!(summarize(&samples[..5], 30.0).is_err());
    }

    #[test]
    fn reads_gauges_with_constant_labels() {
        let text = "# HELP wshub_connections Open.\n# TYPE wshub_connections gauge\n\
            wshub_connections_opened_total{node_id=\"n\"} 9\n\
            wshub_connections{node_id=\"n\"} 3\nwshub_rooms 2\n";
        assert_eq!(gauge(text, "wshub_connections"), Some(3.0));
        assert_eq!(gauge(text, "wshub_rooms"), Some(2.0));
        assert_eq!(gauge(text, "wshub_room_members"), None);
    }

    #[test]
    fn churn_spread_is_deterministic_and_mixed() {
        let abrupt = (0..1000).filter(|&k| (mix(k) >> 32) % 100 < 50).count();
        assert!((400..600).contains(&abrupt), "{abrupt}");
        assert_eq!(mix(7), mix(7));
    }
}

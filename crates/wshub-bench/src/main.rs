//! `wshub-bench`: a load generator for side-by-side runs of wshub and its peers.
//!
//! Scenarios (each prints one `RESULT {json}` line on stdout, progress on stderr):
//!
//! ```text
//! wshub-bench idle   --target wshub|bare|socketio --server 127.0.0.1:8080 --n 10000 --pid <server pid>
//! wshub-bench fanout --target wshub|bare|socketio --server ... --n 1000 --messages 200 --window 10
//! wshub-bench echo   --target wshub|bare|socketio --server ... --clients 50 --round-trips 200
//! wshub-bench soak   --server ... --pid <server pid> --duration 1800 --plot rss.svg  (soak.rs)
//! wshub-bench churn  --target wshub|bare --server ... --jwt-secret S --duration 10   (churn.rs)
//! ```
//!
//! `--jwt-secret` (wshub) connects every client with an HS256 token for that secret, as a
//! server started with `auth.enabled` requires. `fanout --rate R` runs open loop (R
//! publications per second whatever the deliveries; latency counted from the scheduled send
//! time) instead of closed loop; `fanout --also A,B` spreads the receivers over more servers
//! (a cluster), the publisher staying on `--server`. `fanout --pid P1,P2,..` and `churn --pid P`
//! also report the server processes' CPU time per delivery (per connect) and the rate one
//! whole core of them would sustain (`server_cpu.rs`): on this 2-core machine the load
//! generator's core is often what limits the rate, and then only that says what the server
//! can do.
//!
//! `wshub` speaks the wshub protocol (`/ws`, rooms, `room_message`, `ping`); `bare` speaks the
//! reference servers of `shared/bench-peers` (echo every frame; a frame starting with `B:` goes
//! to every client); `socketio` speaks Engine.IO v4 / Socket.IO v5 over the raw WebSocket
//! transport to the peers of `bench/peers/` (Node socket.io and socketioxide: events `join`,
//! `publish`, `echo`; see `engineio.rs`). Every loop is bounded by counts and by `--timeout`,
//! and only loopback addresses are accepted: this tool never loads anything but the local
//! machine.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

mod churn;
mod engineio;
mod plot;
mod progress;
mod server_cpu;
mod soak;
mod token;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

#[derive(Parser)]
#[command(
    name = "wshub-bench",
    about = "Loopback load generator for wshub and peers"
)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum Target {
    /// wshub: rooms, JSON envelopes.
    Wshub,
    /// The bare reference servers: echo, `B:` broadcast.
    Bare,
    /// Socket.IO servers (Node socket.io 4, socketioxide): Engine.IO v4 over WebSocket.
    Socketio,
}

#[derive(clap::Args, Clone)]
struct Common {
    #[arg(long, value_enum, default_value = "wshub")]
    target: Target,
    #[arg(long, default_value = "127.0.0.1:8080")]
    server: SocketAddr,
    /// Parallel connection attempts.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// Hard wall-clock limit, seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// wshub with auth on: sign each client's token with this HS256 secret.
    #[arg(long)]
    jwt_secret: Option<String>,
    /// More servers of the same cluster: receivers are spread round-robin over `--server`
    /// and these (fan-out, idle).
    #[arg(long, value_delimiter = ',')]
    also: Vec<SocketAddr>,
}

#[derive(Subcommand)]
enum Scenario {
    /// Open N connections (each joined to one room on wshub), hold them, report the server's
    /// RSS growth per connection.
    Idle {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 1000)]
        n: usize,
        /// The server's pid, to read its VmRSS.
        #[arg(long)]
        pid: u32,
        #[arg(long, default_value_t = 3)]
        settle_secs: u64,
    },
    /// N receivers in one room, one publisher, closed loop with at most `window` publications
    /// not yet delivered to everyone.
    Fanout {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 1000)]
        n: usize,
        #[arg(long, default_value_t = 100)]
        messages: u64,
        #[arg(long, default_value_t = 8)]
        window: u64,
        /// Bytes of padding in each publication.
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Open loop: publish at this many publications per second (0 = closed loop).
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        /// The server's processes (a cluster's nodes and its broker): also report their CPU
        /// time per delivery from the first publication to the last delivery, and so the
        /// deliveries/s one whole core of them would sustain.
        #[arg(long, value_delimiter = ',')]
        pid: Vec<u32>,
    },
    /// Clients doing request/response round trips one at a time.
    Echo {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 50)]
        clients: usize,
        #[arg(long, default_value_t = 200)]
        round_trips: usize,
    },
    /// Steady rooms traffic plus connection churn for `--duration` seconds, sampling the
    /// server's RSS (and fds, connection count) to show it does not leak; CSV and SVG plot.
    Soak(soak::SoakArgs),
    /// Render a `series,x,y` CSV as an SVG line chart (used by bench/run.sh).
    Plot(plot::PlotArgs),
    /// Connections that open (with a JWT), join a room and close, back to back from
    /// `--workers` loops, for `--duration` seconds: connects per second.
    Churn {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 32)]
        workers: usize,
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// At most this many connections (tokens are minted up front).
        #[arg(long, default_value_t = 400_000)]
        max_connects: usize,
        /// The server's pid: also report its CPU time per connection (and so the rate one
        /// full core would sustain, whichever side limits this run).
        #[arg(long)]
        pid: Option<u32>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.scenario {
        Scenario::Soak(args) => return soak::run(args),
        Scenario::Plot(args) => return plot::from_csv(&args),
        _ => {}
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let common = match &cli.scenario {
        Scenario::Idle { common, .. }
        | Scenario::Fanout { common, .. }
        | Scenario::Echo { common, .. }
        | Scenario::Churn { common, .. } => common.clone(),
        Scenario::Soak(_) | Scenario::Plot(_) => unreachable!("returned above"),
    };
    if !common.server.ip().is_loopback() || common.also.iter().any(|a| !a.ip().is_loopback()) {
        bail!("--server must be a loopback address: this tool only loads the local machine");
    }
    let limit = Duration::from_secs(common.timeout);
    let result = runtime.block_on(async move {
        tokio::time::timeout(limit, async move {
            match cli.scenario {
                Scenario::Idle {
                    common,
                    n,
                    pid,
                    settle_secs,
                } => idle(&common, n, pid, settle_secs).await,
                Scenario::Fanout {
                    common,
                    n,
                    messages,
                    window,
                    size,
                    rate,
                    pid,
                } => fanout(&common, n, messages, window, size, rate, &pid).await,
                Scenario::Echo {
                    common,
                    clients,
                    round_trips,
                } => echo(&common, clients, round_trips).await,
                Scenario::Churn {
                    common,
                    workers,
                    duration,
                    max_connects,
                    pid,
                } => {
                    churn::churn(churn::ChurnArgs {
                        target: common.target,
                        server: common.server,
                        secret: common.jwt_secret,
                        workers,
                        duration: Duration::from_secs(duration),
                        max_connects,
                        server_pid: pid,
                    })
                    .await
                }
                Scenario::Soak(_) | Scenario::Plot(_) => unreachable!("returned above"),
            }
        })
        .await
        .context("scenario exceeded --timeout")?
    })?;
    println!("RESULT {result}");
    Ok(())
}

fn url(common: &Common, server: SocketAddr, id: &str) -> anyhow::Result<String> {
    Ok(match (common.target, &common.jwt_secret) {
        (Target::Wshub, Some(secret)) => format!(
            "ws://{server}/ws?token={}",
            token::Minter::new(secret).token(id)?
        ),
        (Target::Wshub, None) => format!("ws://{server}/ws?client_id={id}"),
        (Target::Bare, _) => format!("ws://{server}/"),
        (Target::Socketio, _) => engineio::url(server),
    })
}

/// `--server`, then `--also`.
fn servers(common: &Common) -> Vec<SocketAddr> {
    std::iter::once(common.server)
        .chain(common.also.iter().copied())
        .collect()
}

async fn connect(common: &Common, id: &str) -> anyhow::Result<Ws> {
    connect_to(common, common.server, id).await
}

async fn connect_to(common: &Common, server: SocketAddr, id: &str) -> anyhow::Result<Ws> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url(common, server, id)?).await?;
    if common.target == Target::Wshub {
        // `connected` first.
        while let Some(msg) = ws.next().await {
            if let Message::Text(_) = msg? {
                break;
            }
        }
    }
    if common.target == Target::Socketio {
        engineio::handshake(&mut ws).await?;
    }
    Ok(ws)
}

/// Sends a wshub request and waits for its reply (ignoring anything else).
async fn request(
    ws: &mut Ws,
    message_type: &str,
    data: serde_json::Value,
    id: i64,
) -> anyhow::Result<serde_json::Value> {
    let env = json!({"message_type": message_type, "data": data, "request_id": id});
    ws.send(Message::text(env.to_string())).await?;
    while let Some(msg) = ws.next().await {
        if let Message::Text(t) = msg? {
            let v: serde_json::Value = serde_json::from_str(&t)?;
            if v["request_id"] == id {
                if v["message_type"] == "error" {
                    bail!("server error: {}", v["data"]);
                }
                return Ok(v);
            }
        }
    }
    bail!("connection closed")
}

/// `join_room`, retried like a real client would when the node answers 1003/1004 (its
/// cluster state timed out: thousands of joins at once against a cluster sharing one core).
async fn join_with_retry(ws: &mut Ws, room: &str) -> anyhow::Result<()> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match request(ws, "join_room", json!({ "room_id": room }), attempt).await {
            Ok(_) => return Ok(()),
            Err(e) if attempt < 8 && is_transient(&e) => {
                tokio::time::sleep(Duration::from_millis(50 << attempt.min(5))).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// A server error with code 1003 (timeout) or 1004 (temporarily unavailable).
fn is_transient(e: &anyhow::Error) -> bool {
    let text = e.to_string();
    text.contains(r#""code":1003"#) || text.contains(r#""code":1004"#)
}

async fn connect_many(
    common: &Common,
    n: usize,
    prefix: &str,
    room: Option<&str>,
) -> anyhow::Result<Vec<Ws>> {
    let started = Instant::now();
    let bar = progress::bar(n as u64, "connections");
    let servers = servers(common);
    let results: Vec<anyhow::Result<Ws>> = futures_util::stream::iter(0..n)
        .map(|i| {
            let bar = bar.clone();
            let common = common.clone();
            let room = room.map(str::to_owned);
            let id = format!("{prefix}{i}");
            let server = servers[i % servers.len()];
            async move {
                let mut ws = connect_to(&common, server, &id).await?;
                match (common.target, room) {
                    (Target::Wshub, Some(room)) => join_with_retry(&mut ws, &room).await?,
                    (Target::Socketio, Some(room)) => {
                        engineio::call(&mut ws, 1, "join", &json!(room).to_string()).await?;
                    }
                    _ => {}
                }
                bar.inc(1);
                Ok(ws)
            }
        })
        .buffer_unordered(common.concurrency.max(1))
        .collect()
        .await;
    let ws: Vec<Ws> = results.into_iter().collect::<anyhow::Result<_>>()?;
    bar.finish_and_clear();
    eprintln!("connected {n} in {:.2}s", started.elapsed().as_secs_f64());
    Ok(ws)
}

/// The kernel's slab memory (`Slab:` of /proc/meminfo), KiB.
fn slab_kb() -> anyhow::Result<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo")?;
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("Slab:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no Slab in /proc/meminfo")
}

fn rss_kb(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")
}

async fn idle(
    common: &Common,
    n: usize,
    pid: u32,
    settle: u64,
) -> anyhow::Result<serde_json::Value> {
    let before = rss_kb(pid)?;
    let slab_before = slab_kb()?;
    let mut conns = connect_many(common, n, "idle", Some("idle")).await?;
    // Socket.IO servers drop a client that leaves their pings unanswered.
    let keepers: Vec<_> = if common.target == Target::Socketio {
        conns
            .drain(..)
            .map(|ws| tokio::spawn(engineio::keep_alive(ws)))
            .collect()
    } else {
        Vec::new()
    };
    tokio::time::sleep(Duration::from_secs(settle)).await;
    let after = rss_kb(pid)?;
    let slab_after = slab_kb()?;
    let per_conn = (after.saturating_sub(before)) as f64 * 1024.0 / n as f64;
    // Machine-wide, and on loopback both ends' sockets are in this kernel: per connection
    // *pair*, an upper bound for the server's share.
    let slab_per_conn = (slab_after.saturating_sub(slab_before)) as f64 * 1024.0 / n as f64;
    drop(conns);
    keepers.iter().for_each(|k| k.abort());
    Ok(
        json!({"scenario": "idle", "target": format!("{:?}", common.target).to_lowercase(), "n": n,
        "rss_before_kb": before, "rss_after_kb": after, "bytes_per_conn": per_conn.round(),
        "kernel_slab_per_conn_pair": slab_per_conn.round()}),
    )
}

/// A publication carrying its sequence number and `sent` (µs since the epoch).
fn payload(target: Target, seq: u64, sent: u64, size: usize) -> String {
    let pad = "x".repeat(size);
    match target {
        Target::Wshub => json!({"message_type": "room_message",
            "data": {"room_id": "fan", "content": {"s": seq, "t": sent, "p": pad}}})
        .to_string(),
        Target::Bare => format!("B:{seq}:{sent}:{pad}"),
        Target::Socketio => engineio::publication("fan", seq, sent, &pad),
    }
}

/// (seq, sent micros) of a received publication, or None for anything else.
fn parse_publication(target: Target, text: &str) -> Option<(u64, u64)> {
    match target {
        // Scanned, not parsed: the receivers share one load-generator core, and a full JSON
        // parse per delivery would make the generator, not the server, the bottleneck (the
        // other targets' formats are split as cheaply). The content object is relayed
        // verbatim by the server, so its keys are where the publisher put them.
        Target::Wshub => {
            // `{"message_id":N,"message_type":"room_message",...}` (GoHub's field order).
            let head = text.get(..72).unwrap_or(text);
            if !head.contains(r#""message_type":"room_message""#) {
                return None;
            }
            let content = &text[text.find(r#""content":{"#)?..];
            Some((
                number_after(content, r#""s":"#)?,
                number_after(content, r#""t":"#)?,
            ))
        }
        Target::Bare => {
            let rest = text.strip_prefix("B:")?;
            let mut parts = rest.splitn(3, ':');
            Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
        }
        Target::Socketio => engineio::parse_message(text),
    }
}

/// The unsigned integer right after the first `key` in `text`.
fn number_after(text: &str, key: &str) -> Option<u64> {
    let rest = &text[text.find(key)? + key.len()..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

async fn fanout(
    common: &Common,
    n: usize,
    messages: u64,
    window: u64,
    size: usize,
    rate: f64,
    server_pids: &[u32],
) -> anyhow::Result<serde_json::Value> {
    let receivers = connect_many(common, n, "rx", Some("fan")).await?;
    let mut publisher = connect(common, "publisher").await?;
    if common.target == Target::Wshub {
        request(&mut publisher, "join_room", json!({"room_id": "fan"}), 1).await?;
    }
    // Per sequence number: how many receivers have it. The publisher waits on the oldest.
    let delivered: Arc<Vec<AtomicU64>> =
        Arc::new((0..messages).map(|_| AtomicU64::new(0)).collect());
    let lost_or_dup = Arc::new(AtomicU64::new(0));
    let hist = Arc::new(std::sync::Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let target = common.target;
    let mut tasks = Vec::with_capacity(n);
    for ws in receivers {
        let delivered = delivered.clone();
        let bad = lost_or_dup.clone();
        let hist = hist.clone();
        tasks.push(tokio::spawn(async move {
            let (mut sink, mut stream): (SplitSink<Ws, Message>, SplitStream<Ws>) = ws.split();
            let mut next = 0u64;
            // Latencies in a plain vector, into the shared histogram at the end: a histogram
            // per receiver (~140 KB each at these bounds) made the generator's own cache
            // misses, not the server, the limit of the fan-out runs.
            let mut latencies: Vec<u32> = Vec::with_capacity(messages as usize);
            while next < messages {
                let Some(Ok(msg)) = stream.next().await else {
                    break;
                };
                let Message::Text(t) = msg else { continue };
                if target == Target::Socketio && t.as_str() == engineio::PING {
                    let _ = sink.send(Message::text(engineio::PONG)).await;
                    continue;
                }
                // The bare peers echo the publisher only; receivers see every `B:` frame.
                let Some((seq, sent)) = parse_publication(target, &t) else {
                    continue;
                };
                if seq != next {
                    // Out of order, lost or doubled: a correctness failure, counted.
                    bad.fetch_add(1, Ordering::Relaxed);
                }
                next = seq + 1;
                if let Some(h) = delivered.get(seq as usize) {
                    h.fetch_add(1, Ordering::Relaxed);
                }
                let latency = now_micros().saturating_sub(sent).max(1);
                latencies.push(u32::try_from(latency).unwrap_or(u32::MAX));
            }
            if let Ok(mut h) = hist.lock() {
                for latency in latencies {
                    let _ = h.record(u64::from(latency));
                }
            }
            // The socket stays open until every receiver is done: one that closed as soon as
            // it had its last message would put its disconnect (on a cluster, state store
            // writes) into the others' fan-out and into the measured CPU.
            (next, sink, stream)
        }));
    }
    let (sink, mut own) = publisher.split();
    let sink = Arc::new(tokio::sync::Mutex::new(sink));
    // Drain whatever comes back to the publisher (echo, acks) so its socket never stalls, and
    // answer Socket.IO pings.
    let pong_sink = sink.clone();
    let drain = tokio::spawn(async move {
        while let Some(Ok(msg)) = own.next().await {
            if target == Target::Socketio
                && let Message::Text(t) = msg
                && t.as_str() == engineio::PING
            {
                let _ = pong_sink
                    .lock()
                    .await
                    .send(Message::text(engineio::PONG))
                    .await;
            }
        }
    });
    // From here: the connects and joins before are not the fan-out's cost.
    let meter = server_cpu::Meter::start(server_pids)?;
    let started = Instant::now();
    let started_us = now_micros();
    let bar = progress::bar(messages, "published");
    for seq in 0..messages {
        let sent = if rate > 0.0 {
            // Open loop: publication `seq` is due at `seq / rate`, however the deliveries go;
            // its latency counts from then, so a server that falls behind pays for the
            // backlog (no coordinated omission).
            let due_us = (seq as f64 * 1e6 / rate) as u64;
            let now = now_micros().saturating_sub(started_us);
            if due_us > now {
                tokio::time::sleep(Duration::from_micros(due_us - now)).await;
            }
            started_us + due_us
        } else {
            // Closed loop: at most `window` publications in flight.
            if seq >= window {
                let wait_for = (seq - window) as usize;
                while delivered[wait_for].load(Ordering::Relaxed) < n as u64 {
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
            }
            now_micros()
        };
        sink.lock()
            .await
            .send(Message::text(payload(target, seq, sent, size)))
            .await?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let mut total = 0u64;
    let mut open = Vec::with_capacity(tasks.len());
    for t in tasks {
        let (received, sink, stream) = t.await?;
        total += received;
        open.push((sink, stream));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let used = meter.map(|m| m.used()).transpose()?;
    drop(open);
    let (cpu_per_delivery, per_core) = server_cpu::per_unit(used, total);
    drain.abort();
    let h = hist.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let expected = n as u64 * messages;
    Ok(
        json!({"scenario": "fanout", "target": format!("{:?}", target).to_lowercase(), "n": n,
        "servers": servers(common).len(), "rate": rate,
        "messages": messages, "window": window, "delivered": total, "expected": expected,
        "lost": expected.saturating_sub(total), "out_of_order_or_duplicate": lost_or_dup.load(Ordering::Relaxed),
        "elapsed_s": elapsed, "delivered_per_s": (total as f64 / elapsed).round(),
        "p50_us": h.value_at_quantile(0.5), "p99_us": h.value_at_quantile(0.99), "max_us": h.max(),
        "server_cpu_us_per_delivery": cpu_per_delivery, "server_deliveries_per_core_s": per_core}),
    )
}

async fn echo(
    common: &Common,
    clients: usize,
    round_trips: usize,
) -> anyhow::Result<serde_json::Value> {
    let conns = connect_many(common, clients, "echo", None).await?;
    let target = common.target;
    let started = Instant::now();
    let bar = progress::bar((clients * round_trips) as u64, "round trips");
    let mut tasks = Vec::new();
    for (c, mut ws) in conns.into_iter().enumerate() {
        let bar = bar.clone();
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            for i in 0..round_trips {
                let t0 = Instant::now();
                match target {
                    Target::Wshub => {
                        request(&mut ws, "ping", json!({"ts": 0}), (i + 1) as i64).await?;
                    }
                    Target::Socketio => {
                        let arg = format!(r#""e{c}:{i}""#);
                        engineio::call(&mut ws, (i + 1) as u64, "echo", &arg).await?;
                    }
                    Target::Bare => {
                        let text = format!("e{c}:{i}");
                        ws.send(Message::text(text.clone())).await?;
                        loop {
                            let Some(msg) = ws.next().await else {
                                bail!("closed")
                            };
                            if let Message::Text(t) = msg?
                                && t.as_str() == text
                            {
                                break;
                            }
                        }
                    }
                }
                let _ = h.record(t0.elapsed().as_micros().max(1) as u64);
                bar.inc(1);
            }
            anyhow::Ok(h)
        }));
    }
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for t in tasks {
        all.add(t.await??)?;
    }
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    let total = (clients * round_trips) as f64;
    Ok(
        json!({"scenario": "echo", "target": format!("{:?}", target).to_lowercase(), "clients": clients,
        "round_trips": total, "round_trips_per_s": (total / elapsed).round(),
        "p50_us": all.value_at_quantile(0.5), "p99_us": all.value_at_quantile(0.99), "p999_us": all.value_at_quantile(0.999)}),
    )
}

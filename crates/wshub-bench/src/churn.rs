//! `churn`: connections that open (with a JWT on wshub), join a room and close, back to back,
//! from `workers` concurrent loops: the connection-rate ceiling of a server.
//!
//! The client side is hand-rolled on purpose: a fixed upgrade request, pre-built masked
//! frames and a minimal frame scanner, so the single load-generator core spends its time on
//! TCP rather than on a WebSocket library, and the number measures the server. Each worker
//! joins its own room (`churn-<worker>`), so a join never fans presence out to others: this is
//! the cost of connect + verify + join + disconnect, nothing else. Tokens are minted before the
//! clock starts (one per connection, so no connection replaces another).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::token::Minter;
use crate::{Target, server_cpu};

pub(crate) struct ChurnArgs {
    pub(crate) target: Target,
    pub(crate) server: SocketAddr,
    /// HS256 secret of a wshub started with auth on; `None` connects without a token.
    pub(crate) secret: Option<String>,
    pub(crate) workers: usize,
    pub(crate) duration: Duration,
    /// Upper bound on connections (and tokens minted up front).
    pub(crate) max_connects: usize,
    /// The server process, whose CPU time is read before and after.
    pub(crate) server_pid: Option<u32>,
}

/// Any 16 bytes, base64: the server checks the form, not uniqueness.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

pub(crate) async fn churn(args: ChurnArgs) -> anyhow::Result<serde_json::Value> {
    if args.target == Target::Socketio {
        bail!("churn drives wshub or the bare servers");
    }
    let minted = Instant::now();
    let tokens: Vec<Option<String>> = match &args.secret {
        Some(secret) => {
            let minter = Minter::new(secret);
            (0..args.max_connects)
                .map(|i| minter.token(&format!("churn-{i}")).map(Some))
                .collect::<anyhow::Result<_>>()?
        }
        None => vec![None; args.max_connects],
    };
    eprintln!(
        "minted {} tokens in {:.2}s",
        tokens.iter().flatten().count(),
        minted.elapsed().as_secs_f64()
    );
    let tokens = Arc::new(tokens);
    let next = Arc::new(AtomicUsize::new(0));
    let meter = server_cpu::Meter::start(args.server_pid.as_slice())?;
    let started = Instant::now();
    let deadline = started + args.duration;
    let bar = crate::progress::counter("cycles");
    let mut tasks = Vec::new();
    for w in 0..args.workers.max(1) {
        let (tokens, next, bar) = (tokens.clone(), next.clone(), bar.clone());
        let (target, server) = (args.target, args.server);
        tasks.push(tokio::spawn(async move {
            let join = masked_text(&format!(
                r#"{{"message_type":"join_room","data":{{"room_id":"churn-{w}"}},"request_id":1}}"#
            ));
            let mut hist = Histogram::<u64>::new(3)?;
            let mut errors = 0u64;
            let mut first_error = None;
            let mut buf = vec![0u8; 4096];
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(token) = tokens.get(i) else { break };
                let t0 = Instant::now();
                match cycle(target, server, token.as_deref(), &join, &mut buf).await {
                    Ok(()) => {
                        hist.record(t0.elapsed().as_micros() as u64)?;
                        bar.inc(1);
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            anyhow::Ok((hist, errors, first_error))
        }));
    }
    let mut hist = Histogram::<u64>::new(3)?;
    let mut errors = 0;
    let mut first_error = None;
    for t in tasks {
        let (h, e, f) = t.await??;
        hist.add(&h)?;
        errors += e;
        if first_error.is_none() {
            first_error = f;
        }
    }
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    let cycles = hist.len();
    // Server CPU per connection, and the connects/s a whole core of it would give.
    let used = meter.map(|m| m.used()).transpose()?;
    let (server_cpu_us, server_core_capacity) = server_cpu::per_unit(used, cycles);
    Ok(json!({
        "scenario": "churn",
        "target": format!("{:?}", args.target).to_lowercase(),
        "jwt": args.secret.is_some(),
        "workers": args.workers,
        "cycles": cycles,
        "errors": errors,
        "first_error": first_error,
        "elapsed_s": elapsed,
        "connects_per_s": (cycles as f64 / elapsed).round(),
        "server_cpu_us_per_connect": server_cpu_us,
        "server_connects_per_core_s": server_core_capacity,
        "p50_us": hist.value_at_quantile(0.5),
        "p99_us": hist.value_at_quantile(0.99),
        "max_us": hist.max(),
    }))
}

/// One connection: upgrade (token in the query), `connected`, `join_room` -> `room_joined`,
/// close frame, FIN. On the bare servers: upgrade, close.
async fn cycle(
    target: Target,
    server: SocketAddr,
    token: Option<&str>,
    join: &[u8],
    buf: &mut [u8],
) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect(server).await?;
    stream.set_nodelay(true)?;
    let path = match (target, token) {
        (Target::Wshub, Some(t)) => format!("/ws?token={t}"),
        (Target::Wshub, None) => "/ws".to_owned(),
        _ => "/".to_owned(),
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {server}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut have = 0;
    let head_end = loop {
        let n = stream.read(&mut buf[have..]).await?;
        if n == 0 {
            bail!("closed during the handshake");
        }
        have += n;
        if let Some(p) = find(&buf[..have], b"\r\n\r\n") {
            break p + 4;
        }
        if have == buf.len() {
            bail!("handshake response too large");
        }
    };
    if !buf.starts_with(b"HTTP/1.1 101") {
        let line = String::from_utf8_lossy(&buf[..head_end.min(80)]).into_owned();
        bail!("upgrade refused: {}", line.lines().next().unwrap_or(""));
    }
    if target == Target::Wshub {
        buf.copy_within(head_end..have, 0);
        have -= head_end;
        // `connected`, then the reply to the join (anything else in between is skipped).
        wait_for(&mut stream, buf, &mut have, b"\"connected\"").await?;
        stream.write_all(join).await?;
        wait_for(&mut stream, buf, &mut have, b"\"room_joined\"").await?;
    }
    stream.write_all(&close_frame()).await?;
    stream.shutdown().await?;
    Ok(())
}

/// Reads server frames until one whose payload contains `needle`; an `error` frame fails.
async fn wait_for(
    stream: &mut TcpStream,
    buf: &mut [u8],
    have: &mut usize,
    needle: &[u8],
) -> anyhow::Result<()> {
    loop {
        while let Some((start, end)) = frame_at(&buf[..*have])? {
            let payload = &buf[start..end];
            let found = find(payload, needle).is_some();
            if !found && find(payload, b"\"message_type\":\"error\"").is_some() {
                bail!("error frame: {}", String::from_utf8_lossy(payload));
            }
            buf.copy_within(end..*have, 0);
            *have -= end;
            if found {
                return Ok(());
            }
        }
        if *have == buf.len() {
            bail!("frame larger than the read buffer");
        }
        let n = stream
            .read(&mut buf[*have..])
            .await
            .context("reading a frame")?;
        if n == 0 {
            bail!(
                "connection closed before {}",
                String::from_utf8_lossy(needle)
            );
        }
        *have += n;
    }
}

/// The payload range of the first complete (unmasked, server) frame in `b`, if any.
fn frame_at(b: &[u8]) -> anyhow::Result<Option<(usize, usize)>> {
    if b.len() < 2 {
        return Ok(None);
    }
    if b[0] & 0x0f == 0x8 {
        bail!("server closed the connection");
    }
    let (len, header) = match b[1] & 0x7f {
        126 if b.len() >= 4 => (usize::from(u16::from_be_bytes([b[2], b[3]])), 4),
        127 if b.len() >= 10 => {
            let mut n = [0u8; 8];
            n.copy_from_slice(&b[2..10]);
            (usize::try_from(u64::from_be_bytes(n))?, 10)
        }
        126 | 127 => return Ok(None),
        n => (usize::from(n), 2),
    };
    Ok((b.len() >= header + len).then_some((header, header + len)))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A client text frame (masked, as clients must), payload under 64 KiB.
fn masked_text(text: &str) -> Vec<u8> {
    let payload = text.as_bytes();
    let mut out = vec![0x81];
    if payload.len() < 126 {
        out.push(0x80 | payload.len() as u8);
    } else {
        out.push(0x80 | 126);
        out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    out
}

/// Close 1000, masked.
fn close_frame() -> [u8; 8] {
    let code = 1000u16.to_be_bytes();
    [
        0x88,
        0x82,
        MASK[0],
        MASK[1],
        MASK[2],
        MASK[3],
        code[0] ^ MASK[0],
        code[1] ^ MASK[1],
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames() {
        let f = masked_text("hi");
        assert_eq!(f[..2], [0x81, 0x82]);
        assert_eq!(f[6] ^ MASK[0], b'h');
        let server = [0x81, 3, b'a', b'b', b'c', 0x81];
        assert_eq!(frame_at(&server).unwrap(), Some((2, 5)));
        assert_eq!(frame_at(&server[..4]).unwrap(), None);
        assert!(frame_at(&[0x88, 0]).is_err());
        let mut long = vec![0x81, 126, 0x01, 0x00];
        long.extend(std::iter::repeat_n(b'x', 256));
        assert_eq!(frame_at(&long).unwrap(), Some((4, 260)));
    }
}

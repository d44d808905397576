//! The least of an Engine.IO v4 + Socket.IO v5 client that the benchmark needs, over the raw
//! WebSocket transport (no polling, no upgrade), on the default namespace `/` only. It speaks to
//! Node's socket.io 4 and to socketioxide alike (`bench/peers/`).
//!
//! ```text
//! GET /socket.io/?EIO=4&transport=websocket
//! server: 0{"sid":…,"pingInterval":25000,…}   engine.io open
//! client: 40                                   socket.io connect to "/"
//! server: 40{"sid":…}                          connected
//! server: 2   client: 3                        engine.io ping (from the server) / pong
//! client: 42<id>["event",arg,…]                event asking for an ack
//! server: 43<id>[…]                            its ack
//! server: 42["message",payload]                event
//! ```
//!
//! A client that leaves a ping unanswered for `pingTimeout` (20 s on both servers) is dropped, so
//! every connection that lives longer than a moment must be read and answered: [`call`] does it
//! while it waits, [`keep_alive`] holds an otherwise idle connection, and the fan-out receivers
//! answer [`PING`] in their own loop.

use std::net::SocketAddr;

use anyhow::bail;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::Ws;

/// Engine.IO ping, sent by the server.
pub(crate) const PING: &str = "2";
/// Engine.IO pong, the client's answer to [`PING`].
pub(crate) const PONG: &str = "3";

/// Prefix of a `message` event carrying a string payload.
const MESSAGE_EVENT: &str = r#"42["message",""#;

pub(crate) fn url(server: SocketAddr) -> String {
    format!("ws://{server}/socket.io/?EIO=4&transport=websocket")
}

/// After the WebSocket handshake: the engine.io open packet, then the socket.io connect to `/`.
pub(crate) async fn handshake(ws: &mut Ws) -> anyhow::Result<()> {
    let open = next_text(ws).await?;
    if !open.starts_with('0') {
        bail!(
            "expected an engine.io open packet, got {:?}",
            open.chars().take(60).collect::<String>()
        );
    }
    ws.send(Message::text("40")).await?;
    loop {
        let t = next_text(ws).await?;
        if t.starts_with("40") {
            return Ok(());
        }
        if t.starts_with("44") {
            bail!("namespace connect refused: {t}");
        }
        if t == PING {
            ws.send(Message::text(PONG)).await?;
        }
    }
}

async fn next_text(ws: &mut Ws) -> anyhow::Result<String> {
    while let Some(msg) = ws.next().await {
        match msg? {
            Message::Text(t) => return Ok(t.as_str().to_owned()),
            Message::Close(c) => bail!("closed by the server: {c:?}"),
            _ => {}
        }
    }
    bail!("connection closed")
}

/// `42<id>["event",args]`: `args` is the JSON text of the arguments after the event name,
/// comma-separated (e.g. `"room"` or `"room","payload"`).
pub(crate) fn event_with_ack(id: u64, event: &str, args: &str) -> String {
    format!(r#"42{id}["{event}",{args}]"#)
}

/// Emits `event` asking for ack `id` and waits for that ack (answering pings, ignoring other
/// packets).
pub(crate) async fn call(ws: &mut Ws, id: u64, event: &str, args: &str) -> anyhow::Result<()> {
    ws.send(Message::text(event_with_ack(id, event, args)))
        .await?;
    while let Some(msg) = ws.next().await {
        let Message::Text(t) = msg? else { continue };
        let t = t.as_str();
        if t == PING {
            ws.send(Message::text(PONG)).await?;
        } else if let Some(rest) = t.strip_prefix("43")
            && ack_id(rest) == Some(id)
        {
            return Ok(());
        } else if t.starts_with('1') || t.starts_with("41") {
            bail!("disconnected by the server ({t})");
        }
    }
    bail!("connection closed while waiting for ack {id}")
}

/// The id of an ack whose `43` prefix was removed: the digits before its `[`.
fn ack_id(rest: &str) -> Option<u64> {
    let end = rest.find('[')?;
    rest[..end].parse().ok()
}

/// The fan-out publication: `42["publish","<room>","<seq>:<sent>:<pad>"]`. `room` and `pad`
/// must need no JSON escaping (the bench's are ASCII letters).
pub(crate) fn publication(room: &str, seq: u64, sent: u64, pad: &str) -> String {
    format!(r#"42["publish","{room}","{seq}:{sent}:{pad}"]"#)
}

/// (seq, sent micros) of a `42["message","<seq>:<sent>:…"]` event, or None for anything else.
/// Only the prefix and the two numbers are looked at.
pub(crate) fn parse_message(text: &str) -> Option<(u64, u64)> {
    let rest = text.strip_prefix(MESSAGE_EVENT)?;
    let mut parts = rest.splitn(3, ':');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Reads `ws` until it ends, answering pings: holds an idle connection open.
pub(crate) async fn keep_alive(mut ws: Ws) {
    while let Some(Ok(msg)) = ws.next().await {
        if let Message::Text(t) = msg
            && t.as_str() == PING
            && ws.send(Message::text(PONG)).await.is_err()
        {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        assert_eq!(
            event_with_ack(7, "join", r#""fan""#),
            r#"427["join","fan"]"#
        );
        assert_eq!(ack_id("7[]"), Some(7));
        assert_eq!(ack_id(r#"12["e0:1"]"#), Some(12));
        assert_eq!(ack_id("x"), None);
        let p = publication("fan", 3, 1234, "xx");
        assert_eq!(p, r#"42["publish","fan","3:1234:xx"]"#);
        // What the servers send for it: io.to(room).emit("message", payload).
        assert_eq!(
            parse_message(r#"42["message","3:1234:xx"]"#),
            Some((3, 1234))
        );
        assert_eq!(parse_message(r#"42["other","3:1234:xx"]"#), None);
        assert_eq!(parse_message("2"), None);
    }
}

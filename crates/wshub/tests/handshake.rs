//! The upgrade read directly off the socket (not through hyper), over real sockets: heads
//! split anywhere, frames sent right behind the request, an upgrade after other requests on
//! a kept-alive connection (hyper's path), oversized and stalled heads, and the closing
//! handshake's last bytes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, WAIT};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use wshub::Config;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn upgrade_request(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// A masked client text frame (payload under 126 bytes).
fn text_frame(text: &str) -> Vec<u8> {
    frame(0x1, text.as_bytes())
}

fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [0x11, 0x22, 0x33, 0x44];
    let mut out = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Reads a server's bytes: the response head, then unmasked frames.
struct Peer {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Peer {
    fn new(stream: TcpStream) -> Self {
        Peer {
            stream,
            buf: Vec::new(),
        }
    }

    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        let n = timeout(WAIT, self.stream.read(&mut chunk))
            .await
            .expect("server went quiet")
            .expect("read");
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// The response head, through its blank line.
    async fn head(&mut self) -> String {
        loop {
            if let Some(at) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..at + 4).collect();
                return String::from_utf8(head).expect("utf-8 head");
            }
            assert!(self.fill().await, "closed before a response head");
        }
    }

    /// The next `len` bytes (a response body).
    async fn body(&mut self, len: usize) -> Vec<u8> {
        while self.buf.len() < len {
            assert!(self.fill().await, "closed inside a body");
        }
        self.buf.drain(..len).collect()
    }

    /// The next frame: (opcode, payload).
    async fn frame(&mut self) -> (u8, Vec<u8>) {
        loop {
            if self.buf.len() >= 2 {
                assert_eq!(self.buf[1] & 0x80, 0, "server frames are not masked");
                let (len, at) = match self.buf[1] & 0x7f {
                    126 if self.buf.len() >= 4 => {
                        (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
                    }
                    126 | 127 => (usize::MAX, 0),
                    n => (n as usize, 2),
                };
                if len != usize::MAX && self.buf.len() >= at + len {
                    let opcode = self.buf[0] & 0x0f;
                    let payload = self.buf[at..at + len].to_vec();
                    self.buf.drain(..at + len);
                    return (opcode, payload);
                }
            }
            assert!(self.fill().await, "closed inside a frame");
        }
    }

    async fn json(&mut self) -> Value {
        let (opcode, payload) = self.frame().await;
        assert_eq!(opcode, 0x1, "expected a text frame");
        serde_json::from_slice(&payload).expect("json frame")
    }

    /// True once the server has closed its side (after all its bytes were read).
    async fn ends(&mut self) -> bool {
        self.buf.is_empty() && !self.fill().await
    }
}

async fn connect(server: &TestServer) -> TcpStream {
    TcpStream::connect(server.running.local_addr())
        .await
        .expect("connect")
}

/// A client that has sent `bytes` on a new connection.
async fn sent(server: &TestServer, bytes: &[u8]) -> Peer {
    let mut stream = connect(server).await;
    stream.write_all(bytes).await.unwrap();
    Peer::new(stream)
}

/// A client past the 101 and the `connected` frame.
async fn upgraded(server: &TestServer, client_id: &str) -> Peer {
    let request = upgrade_request(&format!("/ws?client_id={client_id}"));
    let mut peer = sent(server, request.as_bytes()).await;
    assert!(peer.head().await.starts_with("HTTP/1.1 101 "));
    assert_eq!(peer.json().await["message_type"], "connected");
    peer
}

/// A masked close frame with `code` and `reason`.
fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    frame(0x8, &payload)
}

#[tokio::test]
async fn a_head_in_pieces_with_frames_right_behind_it() {
    let server = TestServer::start(Config::default()).await;
    let mut stream = connect(&server).await;
    let request = upgrade_request("/ws?client_id=pieces");
    // The head in three writes, cut inside a header and inside the final blank line, and
    // two messages sent without waiting for the 101.
    let cut1 = 20;
    let cut2 = request.len() - 1;
    stream.write_all(&request.as_bytes()[..cut1]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    stream
        .write_all(&request.as_bytes()[cut1..cut2])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    let mut tail = request.as_bytes()[cut2..].to_vec();
    tail.extend(text_frame(r#"{"message_type":"ping","request_id":1}"#));
    tail.extend(text_frame(r#"{"message_type":"ping","request_id":2}"#));
    stream.write_all(&tail).await.unwrap();

    let mut peer = Peer::new(stream);
    let head = peer.head().await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(
        head.to_lowercase()
            .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    let connected = peer.json().await;
    assert_eq!(connected["message_type"], "connected");
    assert_eq!(connected["data"]["client_id"], "pieces");
    for id in [1, 2] {
        let pong = peer.json().await;
        assert_eq!(pong["message_type"], "pong", "{pong}");
        assert_eq!(pong["request_id"], id, "{pong}");
    }
}

#[tokio::test]
async fn an_upgrade_after_other_requests_on_a_kept_alive_connection() {
    let server = TestServer::start(Config::default()).await;
    let mut peer = sent(&server, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let head = peer.head().await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_lowercase()
                .strip_prefix("content-length: ")
                .map(str::to_owned)
        })
        .expect("content-length")
        .trim()
        .parse()
        .unwrap();
    let health: Value = serde_json::from_slice(&peer.body(length).await).unwrap();
    assert_eq!(health["status"], "ok");

    // Same socket: the upgrade and a ping in one write.
    let mut request = upgrade_request("/ws?client_id=kept-alive").into_bytes();
    request.extend(text_frame(r#"{"message_type":"ping","request_id":5}"#));
    peer.stream.write_all(&request).await.unwrap();
    let head = peer.head().await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let connected = peer.json().await;
    assert_eq!(connected["data"]["client_id"], "kept-alive");
    let pong = peer.json().await;
    assert_eq!(pong["request_id"], 5, "{pong}");
}

#[tokio::test]
async fn other_requests_still_reach_the_router() {
    let server = TestServer::start(Config::default()).await;
    // A path under /ws is not the upgrade endpoint; neither is a POST to it.
    for request in [
        "GET /wsx HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "POST /ws HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    ] {
        let head = sent(&server, request.as_bytes()).await.head().await;
        assert!(
            head.starts_with("HTTP/1.1 404") || head.starts_with("HTTP/1.1 405"),
            "{request}: {head}"
        );
    }
}

#[tokio::test]
async fn an_oversized_head_gets_431() {
    let server = TestServer::start(Config::default()).await;
    let mut stream = connect(&server).await;
    let mut request = "GET /ws HTTP/1.1\r\nHost: x\r\n".to_owned();
    while request.len() < 20 * 1024 {
        request
            .push_str("X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    // The server may answer (and close) before it has read all of it.
    let _ = stream.write_all(request.as_bytes()).await;
    let mut peer = Peer::new(stream);
    let head = peer.head().await;
    assert!(head.starts_with("HTTP/1.1 431"), "{head}");
    // The server is fine afterwards.
    let mut ok = sent(&server, upgrade_request("/ws").as_bytes()).await;
    assert!(ok.head().await.starts_with("HTTP/1.1 101 "));
}

#[tokio::test]
async fn a_head_that_never_ends_is_dropped_after_the_handshake_timeout() {
    let mut config = Config::default();
    config.limits.handshake_timeout = Duration::from_millis(300);
    let server = TestServer::start(config).await;
    let mut peer = sent(&server, b"GET /ws HTTP/1.1\r\nHost: x\r\n").await;
    let started = std::time::Instant::now();
    assert!(peer.ends().await, "the server sent something");
    assert!(started.elapsed() >= Duration::from_millis(250));
}

#[tokio::test]
async fn refusals_are_whole_responses_and_close() {
    let mut config = Config::default();
    config.auth.enabled = true;
    config.auth.secret_key = "s3cret-s3cret-s3cret-s3cret-s3cret".into();
    let server = TestServer::start(config).await;
    let mut peer = sent(&server, upgrade_request("/ws?token=not-a-jwt").as_bytes()).await;
    let head = peer.head().await;
    assert!(head.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{head}");
    assert!(head.to_lowercase().contains("connection: close"), "{head}");
    let body = "Unauthorized: Invalid token";
    assert!(
        head.to_lowercase()
            .contains(&format!("content-length: {}", body.len())),
        "{head}"
    );
    assert_eq!(String::from_utf8_lossy(&peer.body(body.len()).await), body);
    assert!(peer.ends().await);
}

#[tokio::test]
async fn the_close_reply_is_followed_by_the_end_of_the_stream() {
    let server = TestServer::start(Config::default()).await;
    let mut peer = upgraded(&server, "closer").await;
    // Close 1000 "bye"; the server echoes a close and then ends the stream (the last frame
    // and the FIN leave together: nothing may be lost in between).
    peer.stream
        .write_all(&close_frame(1000, "bye"))
        .await
        .unwrap();
    let (opcode, reply) = peer.frame().await;
    assert_eq!(opcode, 0x8);
    assert_eq!(u16::from_be_bytes([reply[0], reply[1]]), 1000);
    assert!(peer.ends().await, "bytes after the close frame");
}

#[tokio::test]
async fn a_completed_close_handshake_ends_the_connection_without_waiting_for_the_fin() {
    // One connection per address: a second client gets in once the first connection has
    // ended on the server (its admission place is held until then).
    let mut config = Config::default();
    config.limits.max_connections_per_ip = 1;
    let server = TestServer::start(config).await;
    let mut first = upgraded(&server, "first").await;
    first
        .stream
        .write_all(&close_frame(1000, "bye"))
        .await
        .unwrap();
    assert_eq!(first.frame().await.0, 0x8);
    assert!(first.ends().await);
    // `first` keeps its socket open and never sends its FIN. With the closing handshake done
    // the server has nothing to wait for (it used to read on for up to 2 s, holding the
    // place).
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let request = upgrade_request("/ws?client_id=second");
        let head = sent(&server, request.as_bytes()).await.head().await;
        if head.starts_with("HTTP/1.1 101 ") {
            break;
        }
        assert!(head.starts_with("HTTP/1.1 429 "), "{head}");
        assert!(
            Instant::now() < deadline,
            "the closed connection still holds its place"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(first);
}

#[tokio::test]
async fn a_server_side_close_sends_what_was_queued_then_close_and_fin() {
    let server = TestServer::start(Config::default()).await;
    let mut peer = upgraded(&server, "kicked").await;
    server.running.handle().disconnect("kicked").await.unwrap();
    // Whatever was queued (text frames), then the close.
    loop {
        let (opcode, payload) = peer.frame().await;
        if opcode == 0x8 {
            assert!(payload.len() >= 2);
            break;
        }
        assert_eq!(opcode, 0x1, "only text frames before the close");
    }
    // We have not answered the close: the server's side has ended all the same, and it
    // still reads ours.
    assert!(peer.ends().await);
    peer.stream
        .write_all(&close_frame(1000, "ok"))
        .await
        .unwrap();
}

//! Fixtures: a real server on 127.0.0.1:0 and real WebSocket clients.
#![allow(dead_code, unreachable_pub)]

pub mod brokers;
pub mod cluster;
pub mod history;
pub mod procs;
pub mod scrape;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use wshub::{Config, RunningServer, Server, ServerBuilder};
use wshub_client::{Client, Event};

pub const WAIT: Duration = Duration::from_secs(10);

pub struct TestServer {
    pub running: RunningServer,
}

impl TestServer {
    pub async fn start(config: Config) -> TestServer {
        TestServer::start_with(Server::builder().config(config)).await
    }

    pub async fn start_with(builder: ServerBuilder) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let server = builder.build().expect("build");
        TestServer {
            running: server.serve(listener).await.expect("serve"),
        }
    }

    pub fn ws_url(&self, client_id: Option<&str>) -> String {
        let addr = self.running.local_addr();
        match client_id {
            Some(id) => format!("ws://{addr}/ws?client_id={id}"),
            None => format!("ws://{addr}/ws"),
        }
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.running.local_addr())
    }

    pub async fn client(&self, id: &str) -> Client {
        Client::connect(&self.ws_url(Some(id)))
            .await
            .expect("connect")
    }

    pub async fn raw(&self, id: &str) -> RawClient {
        let (ws, _) = tokio_tungstenite::connect_async(self.ws_url(Some(id)))
            .await
            .expect("connect");
        let mut raw = RawClient { ws };
        let first = raw.next_json().await;
        assert_eq!(first["message_type"], "connected");
        raw
    }
}

pub fn small_config() -> Config {
    Config::default()
}

/// A bare tokio-tungstenite client, for asserting exact frames.
pub struct RawClient {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl RawClient {
    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    pub async fn send_binary(&mut self, bytes: &[u8]) {
        self.ws
            .send(Message::binary(bytes.to_vec()))
            .await
            .expect("send");
    }

    /// The next text frame, as received.
    pub async fn next_text(&mut self) -> String {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for a frame")
                .expect("stream ended")
                .expect("websocket error");
            match msg {
                Message::Text(t) => return t.to_string(),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected text, got {other:?}"),
            }
        }
    }

    pub async fn next_json(&mut self) -> serde_json::Value {
        serde_json::from_str(&self.next_text().await).expect("json")
    }

    /// Waits for the server's close frame; returns its code.
    pub async fn expect_close(&mut self) -> u16 {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for close");
            match msg {
                Some(Ok(Message::Close(Some(frame)))) => return frame.code.into(),
                Some(Ok(Message::Close(None))) => return 1005,
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    }
}

/// Waits for the close event of an SDK client; returns the close code.
pub async fn expect_closed(client: &mut Client) -> Option<u16> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, client.next_event()).await {
            Ok(Some(Event::Closed(frame))) => return frame.map(|(code, _)| code),
            Ok(Some(Event::Message(_))) => continue,
            Ok(None) => return None,
            Err(_) => panic!("timed out waiting for the connection to close"),
        }
    }
}

/// Polls `cond` until it holds (state that changes asynchronously on the server).
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

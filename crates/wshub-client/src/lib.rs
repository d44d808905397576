//! Rust client SDK for wshub.
//!
//! ```no_run
//! # async fn run() -> Result<(), wshub_client::Error> {
//! use serde_json::json;
//! let mut client = wshub_client::Client::connect("ws://127.0.0.1:8080/ws?client_id=alice").await?;
//! client.join_room("lobby").await?;
//! client.room_message("lobby", json!({"text": "hi"})).await?;
//! while let Some(event) = client.next_event().await {
//!     println!("{event:?}");
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Requests ([`Client::request`] and the typed helpers) carry a fresh `request_id` and wait
//! for the reply or `error` frame with the same id. Everything else the server pushes
//! (room messages, direct messages, `room_deleted`, ...) arrives through
//! [`Client::next_event`]. Events are buffered up to [`ClientOptions::event_buffer`]; a
//! client that stops reading events stops reading the socket too (back-pressure), and the
//! server will eventually drop it as a slow consumer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};
use wshub_protocol::messages::Connected;

mod resume;
pub use resume::{ResumeOptions, ResumeStats, ResumingClient};
pub use wshub_protocol::{Envelope, ErrorCode, ErrorData};

type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Pending = Arc<Mutex<HashMap<i64, oneshot::Sender<Envelope>>>>;

/// What can go wrong talking to a server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("websocket: {0}")]
    WebSocket(#[from] Box<tokio_tungstenite::tungstenite::Error>),
    #[error("server error {}: {}", .0.code.as_u16(), .0.message)]
    Server(ErrorData),
    #[error("timed out waiting for the server")]
    Timeout,
    #[error("connection closed")]
    Closed,
    #[error("unexpected message from the server: {0}")]
    Protocol(String),
}

impl Error {
    /// The server's error code, when the server answered with an `error` frame.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Server(e) => Some(e.code),
            _ => None,
        }
    }
}

/// Something the server pushed that is not a reply to a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Message(Envelope),
    /// The connection ended; the close code and reason when the server sent a close frame.
    Closed(Option<(u16, String)>),
}

#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// How long a request waits for its reply. Default 10 s.
    pub request_timeout: Duration,
    /// Events buffered before the client stops reading the socket. Default 4096.
    pub event_buffer: usize,
    /// Sent as `Authorization: Bearer <token>` with the upgrade.
    pub bearer_token: Option<String>,
    /// Sent in-band as the first message (`authenticate {token}`), for servers that accept
    /// the connection first and the token after.
    pub in_band_token: Option<String>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            request_timeout: Duration::from_secs(10),
            event_buffer: 4096,
            bearer_token: None,
            in_band_token: None,
        }
    }
}

/// A connection to a wshub server.
pub struct Client {
    sink: Arc<tokio::sync::Mutex<SplitSink<WsStream, Message>>>,
    pending: Pending,
    events: mpsc::Receiver<Event>,
    next_request_id: AtomicI64,
    client_id: String,
    node_id: String,
    options: ClientOptions,
    /// The task reading the socket; aborted on drop so dropping the client closes the socket.
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Client {
    /// Connects and waits for the server's `connected` message.
    pub async fn connect(url: &str) -> Result<Client, Error> {
        Client::connect_with(url, ClientOptions::default()).await
    }

    pub async fn connect_with(url: &str, options: ClientOptions) -> Result<Client, Error> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = url.into_client_request().map_err(Box::new)?;
        if let Some(token) = &options.bearer_token {
            let value = format!("Bearer {token}")
                .parse()
                .map_err(|_| Error::Protocol("token is not a valid header value".into()))?;
            request.headers_mut().insert("authorization", value);
        }
        let (ws, _) = connect_async(request).await.map_err(Box::new)?;
        let (mut sink, mut stream) = ws.split();
        let (client_id, node_id) = tokio::time::timeout(
            options.request_timeout,
            handshake(&mut sink, &mut stream, &options),
        )
        .await
        .map_err(|_| Error::Timeout)??;
        let pending: Pending = Arc::default();
        let (tx, events) = mpsc::channel(options.event_buffer.max(1));
        let reader = tokio::spawn(read_loop(stream, pending.clone(), tx));
        Ok(Client {
            sink: Arc::new(tokio::sync::Mutex::new(sink)),
            pending,
            events,
            // Id 1 is the in-band `authenticate` of the handshake.
            next_request_id: AtomicI64::new(2),
            client_id,
            node_id,
            options,
            reader,
        })
    }

    /// The id the server gave this client.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The node this client is connected to.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Sends `message_type` with `data` and waits for the reply (or the `error` frame,
    /// returned as [`Error::Server`]).
    pub async fn request(&self, message_type: &str, data: Value) -> Result<Envelope, Error> {
        let id = self.next_request_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if let Ok(mut p) = self.pending.lock() {
            p.insert(id, tx);
        }
        let env = Envelope::request(message_type, data, Some(id));
        if let Err(e) = self.send_envelope(&env).await {
            self.forget(id);
            return Err(e);
        }
        let reply = match tokio::time::timeout(self.options.request_timeout, rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => return Err(Error::Closed),
            Err(_) => {
                self.forget(id);
                return Err(Error::Timeout);
            }
        };
        if reply.message_type == "error" {
            let data =
                serde_json::from_value(reply.data).map_err(|e| Error::Protocol(e.to_string()))?;
            return Err(Error::Server(data));
        }
        Ok(reply)
    }

    fn forget(&self, id: i64) {
        if let Ok(mut p) = self.pending.lock() {
            p.remove(&id);
        }
    }

    /// Sends without waiting for a reply (room and direct messages have none).
    pub async fn send(&self, message_type: &str, data: Value) -> Result<(), Error> {
        self.send_envelope(&Envelope::request(message_type, data, None))
            .await
    }

    async fn send_envelope(&self, env: &Envelope) -> Result<(), Error> {
        let text = serde_json::to_string(env).map_err(|e| Error::Protocol(e.to_string()))?;
        self.send_raw(Message::text(text)).await
    }

    /// Sends any WebSocket message as is (for tests of malformed input).
    pub async fn send_raw(&self, message: Message) -> Result<(), Error> {
        self.sink
            .lock()
            .await
            .send(message)
            .await
            .map_err(|e| Error::WebSocket(Box::new(e)))
    }

    /// The next pushed event; `None` after [`Event::Closed`] was returned.
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// Takes the event stream out of the client (the client keeps serving requests).
    fn take_events(&mut self) -> mpsc::Receiver<Event> {
        let (_, empty) = mpsc::channel(1);
        std::mem::replace(&mut self.events, empty)
    }

    /// The next pushed message of `message_type`, skipping others, within `timeout`.
    pub async fn expect(
        &mut self,
        message_type: &str,
        timeout: Duration,
    ) -> Result<Envelope, Error> {
        tokio::time::timeout(timeout, async {
            loop {
                match self.events.recv().await {
                    Some(Event::Message(env)) if env.message_type == message_type => {
                        return Ok(env);
                    }
                    Some(Event::Message(_)) => continue,
                    Some(Event::Closed(_)) | None => return Err(Error::Closed),
                }
            }
        })
        .await
        .map_err(|_| Error::Timeout)?
    }

    /// Sends a fresh token (refresh before `exp`, or prove who an anonymous connection is).
    pub async fn authenticate(&mut self, token: &str) -> Result<Envelope, Error> {
        let reply = self
            .request("authenticate", json!({ "token": token }))
            .await?;
        if let Some(id) = reply.data["client_id"].as_str() {
            self.client_id = id.to_owned();
        }
        Ok(reply)
    }

    pub async fn ping(&self) -> Result<Envelope, Error> {
        self.request("ping", json!({ "ts": wshub_protocol::now_millis() }))
            .await
    }

    pub async fn join_room(&self, room_id: &str) -> Result<Envelope, Error> {
        self.request("join_room", json!({ "room_id": room_id }))
            .await
    }

    pub async fn leave_room(&self, room_id: &str) -> Result<Envelope, Error> {
        self.request("leave_room", json!({ "room_id": room_id }))
            .await
    }

    pub async fn room_message(&self, room_id: &str, content: Value) -> Result<(), Error> {
        self.send(
            "room_message",
            json!({ "room_id": room_id, "content": content }),
        )
        .await
    }

    pub async fn direct_message(&self, target_id: &str, content: Value) -> Result<(), Error> {
        self.send(
            "direct_message",
            json!({ "target_id": target_id, "content": content }),
        )
        .await
    }

    /// Sends a close frame and waits (briefly) for the server to end the connection.
    pub async fn close(&mut self) {
        let _ = self.send_raw(Message::Close(None)).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(ev) = self.events.recv().await {
                if matches!(ev, Event::Closed(_)) {
                    break;
                }
            }
        })
        .await;
    }
}

/// Waits for `connected` (after `authenticated`, when a token is sent in-band); returns the
/// client and node ids.
async fn handshake(
    sink: &mut SplitSink<WsStream, Message>,
    stream: &mut SplitStream<WsStream>,
    options: &ClientOptions,
) -> Result<(String, String), Error> {
    let mut authenticated = options.in_band_token.is_none();
    if let Some(token) = &options.in_band_token {
        let env = Envelope::request("authenticate", json!({ "token": token }), Some(1));
        let text = serde_json::to_string(&env).map_err(|e| Error::Protocol(e.to_string()))?;
        sink.send(Message::text(text))
            .await
            .map_err(|e| Error::WebSocket(Box::new(e)))?;
    }
    loop {
        let env = first_envelope(stream).await?;
        match env.message_type.as_str() {
            "error" => {
                let data =
                    serde_json::from_value(env.data).map_err(|e| Error::Protocol(e.to_string()))?;
                return Err(Error::Server(data));
            }
            "authenticated" => authenticated = true,
            "connected" if authenticated => {
                let Connected { client_id, node_id } =
                    serde_json::from_value(env.data).map_err(|e| Error::Protocol(e.to_string()))?;
                return Ok((client_id, node_id));
            }
            // An anonymous `connected` before our in-band token was applied.
            "connected" => continue,
            other => return Err(Error::Protocol(format!("expected connected, got {other}"))),
        }
    }
}

async fn first_envelope(stream: &mut SplitStream<WsStream>) -> Result<Envelope, Error> {
    while let Some(msg) = stream.next().await {
        match msg.map_err(Box::new)? {
            Message::Text(t) => {
                return serde_json::from_str(&t).map_err(|e| Error::Protocol(e.to_string()));
            }
            Message::Close(_) => return Err(Error::Closed),
            _ => continue,
        }
    }
    Err(Error::Closed)
}

async fn read_loop(
    mut stream: SplitStream<WsStream>,
    pending: Pending,
    events: mpsc::Sender<Event>,
) {
    let mut close: Option<(u16, String)> = None;
    while let Some(msg) = stream.next().await {
        let text = match msg {
            Ok(Message::Text(t)) => t.to_string(),
            Ok(Message::Binary(b)) => String::from_utf8_lossy(&b).into_owned(),
            Ok(Message::Close(frame)) => {
                close =
                    frame.map(|CloseFrame { code, reason }| (u16::from(code), reason.to_string()));
                break;
            }
            Ok(_) => continue,
            Err(_) => break,
        };
        let Ok(env) = serde_json::from_str::<Envelope>(&text) else {
            tracing::warn!("undecodable message from server");
            continue;
        };
        let waiter = env
            .request_id
            .and_then(|id| pending.lock().ok().and_then(|mut p| p.remove(&id)));
        match waiter {
            Some(waiter) => {
                let _ = waiter.send(env);
            }
            None => {
                if events.send(Event::Message(env)).await.is_err() {
                    return;
                }
            }
        }
    }
    if let Ok(mut p) = pending.lock() {
        p.clear();
    }
    let _ = events.send(Event::Closed(close)).await;
}

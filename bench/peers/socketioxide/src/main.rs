//! socketioxide peer for `wshub-bench --target socketio`: the same events as
//! `bench/peers/socketio/server.js` (Node socket.io), on namespace `/`, WebSocket transport only.
//!
//! ```text
//! socketioxide-peer HOST PORT   # env: WORKERS=1 (one thread), REDIS_URL=redis://… (redis adapter)
//! ```
//!
//! Events: `join` (room) → joins, acks with no value; `publish` (room, payload) → `message`
//! (payload) to every member of the room, the sender included if it is one; `echo` (value) →
//! acks with the value. Nothing is logged per message.
//!
//! `WORKERS=1` runs a current-thread runtime, which keeps each client's events in order; with
//! more workers socketioxide may handle (and so broadcast) one client's events out of order.

use std::convert::Infallible;
use std::net::SocketAddr;

use socketioxide::adapter::{Adapter, LocalAdapter};
use socketioxide::extract::{AckSender, Data, SocketRef};
use socketioxide::handler::ConnectHandler;
use socketioxide::{SocketIo, SocketIoBuilder, TransportType};
use socketioxide_redis::{RedisAdapter, RedisAdapterCtr};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Registers the handlers on namespace `/` for either adapter (`DefinedAdapter`, which `ns`
/// needs, is not re-exported, hence a macro rather than a generic fn).
macro_rules! register {
    ($io:expr, $a:ty) => {
        $io.ns("/", (async || ()).with(add_handlers::<$a>))
    };
}

/// Adds the event handlers. This runs as a connect *middleware*, i.e. before socketioxide sends
/// the client its `40{"sid":…}`: the connect handler proper is spawned as a task after that
/// packet goes out, so on a multi-threaded runtime a client that emits right after connecting
/// (the bench joins at once) can be read before handlers registered there exist, and its event
/// is dropped without a word.
async fn add_handlers<A: Adapter>(s: SocketRef<A>) -> Result<(), Infallible> {
    s.on("join", on_join::<A>);
    s.on("publish", on_publish::<A>);
    s.on("echo", on_echo::<A>);
    Ok(())
}

async fn on_join<A: Adapter>(s: SocketRef<A>, Data(room): Data<String>, ack: AckSender<A>) {
    s.join(room);
    let _ = ack.send(&());
}

async fn on_publish<A: Adapter>(
    io: SocketIo<A>,
    Data((room, payload)): Data<(String, serde_json::Value)>,
) {
    let _ = io.to(room).emit("message", &payload).await;
}

async fn on_echo<A: Adapter>(Data(value): Data<serde_json::Value>, ack: AckSender<A>) {
    let _ = ack.send(&value);
}

fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let host = args.next().unwrap_or_else(|| "127.0.0.1".into());
    let port: u16 = args.next().unwrap_or_else(|| "9001".into()).parse()?;
    let addr: SocketAddr = format!("{host}:{port}").parse()?;
    let workers: Option<usize> = std::env::var("WORKERS").ok().and_then(|w| w.parse().ok());
    let mut rt = match workers {
        // One thread: a current-thread runtime. socketioxide spawns a task per incoming event;
        // the multi-thread scheduler (its LIFO slot, work stealing) runs them out of arrival
        // order, which re-orders one client's publications (measured: ~40 % of deliveries at
        // 1000 members × 50 with 1 or 2 workers); the current-thread scheduler runs them FIFO.
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    rt.enable_all().build()?.block_on(run(addr))
}

fn builder() -> SocketIoBuilder {
    SocketIo::builder().transports([TransportType::Websocket])
}

async fn run(addr: SocketAddr) -> Result<(), BoxError> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let (app, adapter) = match std::env::var("REDIS_URL") {
        Ok(url) if !url.is_empty() => {
            // The driver speaks RESP3 (redis >= 7).
            let url = if url.contains("protocol=") {
                url
            } else if url.contains('?') {
                format!("{url}&protocol=resp3")
            } else {
                format!("{url}?protocol=resp3")
            };
            let client = redis::Client::open(url)?;
            let ctr = RedisAdapterCtr::new_with_redis(&client).await?;
            let (layer, io) = builder().with_adapter::<RedisAdapter<_>>(ctr).build_layer();
            register!(io, RedisAdapter<_>).await?;
            (axum::Router::new().layer(layer), "redis")
        }
        _ => {
            let (layer, io) = builder().build_layer();
            register!(io, LocalAdapter);
            (axum::Router::new().layer(layer), "memory")
        }
    };
    eprintln!(
        "socketioxide listening on {addr} ({adapter} adapter) pid={}",
        std::process::id()
    );
    axum::serve(listener, app).await?;
    Ok(())
}

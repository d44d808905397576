//! `ping` -> `pong {ts, server_ts, rtt}` (application-level, as GoHub; WebSocket pings are
//! the connection's business).

use wshub_protocol::MessageType;
use wshub_protocol::messages::{PingRequest, Pong};

use crate::dispatch::{HandlerResult, Reply};

pub(super) fn ping(req: PingRequest) -> HandlerResult {
    let now = wshub_protocol::now_millis();
    let pong = Pong {
        ts: req.ts,
        server_ts: now,
        rtt: now - req.ts,
    };
    Reply::of(MessageType::Pong, &pong).map(Some)
}

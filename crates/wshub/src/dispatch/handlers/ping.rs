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
        // Without the client's `ts` there is nothing to measure (GoHub answered with the
        // server's clock as the "rtt").
        rtt: if req.ts > 0 { (now - req.ts).max(0) } else { 0 },
    };
    Reply::of(MessageType::Pong, &pong).map(Some)
}

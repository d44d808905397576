//! WebSocket close codes sent by the server.
//!
//! Standard codes (RFC 6455 §7.4.1) where one fits; 4xxx codes (application range) for
//! wshub-specific reasons, numbered after the HTTP status they resemble. A client decides
//! from the code whether to reconnect: everything but [`POLICY`] for abuse and 44xx auth codes
//! is worth a reconnect with backoff.

/// Normal closure (the client asked, or an admin disconnected the client).
pub const NORMAL: u16 = 1000;
/// The node is shutting down or draining: reconnect, preferably to another node.
pub const GOING_AWAY: u16 = 1001;
/// The peer broke the WebSocket protocol (unmasked frame, bad opcode, ...).
pub const PROTOCOL_ERROR: u16 = 1002;
/// A text frame was not valid UTF-8.
pub const INVALID_PAYLOAD: u16 = 1007;
/// Policy violation. Used for slow consumers: the outbound queue filled up.
pub const POLICY: u16 = 1008;
/// An inbound message exceeded `server.hub.max_message_size`.
pub const TOO_BIG: u16 = 1009;
/// The server failed internally.
pub const INTERNAL: u16 = 1011;
/// Authentication failed or expired (in-band auth).
pub const UNAUTHORIZED: u16 = 4401;
/// No frame (not even a pong) arrived within `server.hub.read_timeout`.
pub const IDLE_TIMEOUT: u16 = 4408;
/// Another connection with the same client id replaced this one.
pub const REPLACED: u16 = 4409;

/// Reason texts sent with each close code.
pub mod reason {
    pub const SLOW_CONSUMER: &str = "slow consumer";
    pub const TOO_BIG: &str = "message too large";
    pub const IDLE_TIMEOUT: &str = "read timeout";
    pub const REPLACED: &str = "replaced by a newer connection";
    pub const SHUTDOWN: &str = "server shutting down";
    /// Graceful drain: the client should reconnect (to another node, through the balancer).
    pub const DRAINING: &str = "server shutting down: reconnect";
    pub const KICKED: &str = "disconnected by server";
}

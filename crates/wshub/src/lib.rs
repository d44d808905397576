//! wshub: a distributed WebSocket hub, wire-compatible with GoHub.
//!
//! Data flows one way (see `docs/DESIGN.md`):
//!
//! ```text
//! socket -> conn (frames, limits) -> dispatch (decode, permission, handler)
//!        -> hub (local fan-out) -> conn queues -> socket
//! ```
//!
//! | module | owns |
//! |---|---|
//! | [`config`] | the configuration structs and their defaults |
//! | `http` | the listener, the `/ws` upgrade, `/health` |
//! | `conn` | one connection: one hand-written task (frame reader, outbound writer), bounded queue |
//! | `dispatch` | `message_type` -> handler; built-in handlers in `dispatch::handlers` |
//! | `hub` | connected clients, rooms, local fan-out |
//! | `auth` | permissions and the one permission check |
//! | `wire` | outbound frames, encoded once and shared |
//! | [`sdk`] | the embedding API: [`Server::builder`], handlers, hooks |

pub mod auth;
#[doc(hidden)]
pub mod bench_api;
pub mod bus;
pub mod cluster;
pub mod config;
mod conn;
mod dispatch;
mod fanout;
pub mod history;
mod http;
mod hub;
pub mod ids;
mod limits;
mod metrics;
mod node;
mod position_check;
mod reload;
mod rooms;
pub mod sdk;
pub mod telemetry;
pub mod webhooks;
mod wire;

pub use config::Config;
pub use dispatch::{HandlerError, HandlerResult, Reply};
pub use fanout::PublishError;
pub use http::ApiDoc;
pub use hub::{Delivery, HubError};
pub use node::ReloadReport;
pub use sdk::{Client, RunningServer, Server, ServerBuilder, ServerHandle};
pub use wshub_protocol as protocol;

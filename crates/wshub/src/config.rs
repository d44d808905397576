//! Configuration: the structs mirror the YAML keys (`server.hub.*` -> [`HubConfig`]), with
//! their defaults in `Default` and units documented per field. GoHub's keys keep their names.
//!
//! Durations accept humantime strings (`"60s"`, `"500ms"`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The whole configuration of one node.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub rooms: RoomsConfig,
    pub cluster: ClusterConfig,
}

/// `server.*`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Listen address, `host:port`. Default `0.0.0.0:8080`.
    pub addr: String,
    pub hub: HubConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            addr: "0.0.0.0:8080".into(),
            hub: HubConfig::default(),
        }
    }
}

/// `server.hub.*`: per-connection limits and timers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HubConfig {
    /// Close a client from which nothing (not even a pong) arrived for this long. Default 60 s.
    #[serde(with = "humantime_serde")]
    pub read_timeout: Duration,
    /// Give up on a socket write that takes longer than this. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// Interval of server WebSocket pings. Default 25 s.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// Largest inbound message in bytes; bigger ones close the socket with 1009. Default 64 KiB.
    pub max_message_size: usize,
    /// Outbound queue length per connection, in frames. A client whose queue is full is
    /// disconnected with close 1008 (slow consumer). Default 256.
    pub message_buffer_cap: usize,
    /// Bytes read from the socket per read call. No buffer is held while a connection is
    /// idle; this is the size of the one allocated when data arrives. Default 4 KiB.
    /// (GoHub key; GoHub allocated it per connection for its whole life.)
    pub read_buffer_size: usize,
    /// Most bytes coalesced into one vectored write. Default 64 KiB. (GoHub key.)
    pub write_buffer_size: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            read_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(25),
            max_message_size: 64 * 1024,
            message_buffer_cap: 256,
            read_buffer_size: 4 * 1024,
            write_buffer_size: 64 * 1024,
        }
    }
}

/// `rooms.*`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RoomsConfig {
    /// Create a room on first `join_room` when it does not exist. Default true.
    /// Auto-created rooms are removed when their last member leaves.
    pub auto_create: bool,
    /// `max_clients` of rooms created without one (auto-created included); 0 = unlimited.
    pub default_max_clients: u32,
}

impl Default for RoomsConfig {
    fn default() -> Self {
        RoomsConfig {
            auto_create: true,
            default_max_clients: 0,
        }
    }
}

/// `cluster.*` (the parts a single node uses).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's id; generated (`node-<8 hex>`) when empty.
    pub node_id: String,
}

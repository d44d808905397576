//! Cluster state: which rooms exist, who is in them on which node, which node each client is
//! on, and which nodes are alive. Built on the broker the cluster already runs (Redis hashes +
//! Lua, NATS JetStream key-value), not on a consensus of our own; a single node keeps it in
//! memory. See `docs/cluster-state.md` for the model and its guarantees.

mod memory;
mod nats;
mod redis;
mod store;

pub use memory::MemoryStateStore;
pub use nats::NatsStateStore;
pub use redis::RedisStateStore;
pub(crate) use store::now_ms;
pub use store::{
    JoinOutcome, MemberRecord, NodeRecord, RoomRecord, StateStore, StoreError, StoreResult,
};

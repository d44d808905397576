//! This node's copy of one room: its settings and its local members.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::conn::ConnHandle;
use crate::ids::{ClientId, RoomId};

pub(crate) struct Room {
    pub(crate) id: RoomId,
    pub(crate) name: String,
    /// 0 = unlimited.
    pub(crate) max_clients: u32,
    /// Local members. Read-locked for fan-out (pushing into queues never blocks), write-locked
    /// for join/leave. Never held across an `.await`.
    pub(crate) members: RwLock<HashMap<ClientId, Arc<ConnHandle>>>,
}

impl Room {
    pub(crate) fn new(id: RoomId, name: String, max_clients: u32) -> Self {
        Room {
            id,
            name,
            max_clients,
            members: RwLock::new(HashMap::new()),
        }
    }

    pub(crate) fn member_count(&self) -> usize {
        self.members.read().map(|m| m.len()).unwrap_or(0)
    }

    /// Members sorted by client id.
    pub(crate) fn member_handles(&self) -> Vec<Arc<ConnHandle>> {
        let mut members: Vec<Arc<ConnHandle>> = self
            .members
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        members.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        members
    }
}

//! This node's copy of one room: its settings and its local members.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    /// The highest history offset delivered to this node's members (live, or by the position
    /// check), or known at a join to be already published: what the position check compares
    /// with the room's latest offset.
    delivered: AtomicU64,
    position_started: AtomicBool,
}

impl Room {
    pub(crate) fn new(id: RoomId, name: String, max_clients: u32) -> Self {
        Room {
            id,
            name,
            max_clients,
            members: RwLock::new(HashMap::new()),
            delivered: AtomicU64::new(0),
            position_started: AtomicBool::new(false),
        }
    }

    /// Records that publications up to `offset` reached this node (or were there before).
    pub(crate) fn mark_delivered(&self, offset: u64) {
        self.delivered.fetch_max(offset, Ordering::Relaxed);
    }

    /// The first member's join: publications up to `offset` were made before this node had
    /// members in the room, so they are not this node's to deliver. Later joins leave the
    /// position alone (a publication this node's members missed is still missed).
    pub(crate) fn start_position(&self, offset: u64) {
        if !self.position_started.swap(true, Ordering::Relaxed) {
            self.mark_delivered(offset);
        }
    }

    pub(crate) fn position_started(&self) -> bool {
        self.position_started.load(Ordering::Relaxed)
    }

    pub(crate) fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
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

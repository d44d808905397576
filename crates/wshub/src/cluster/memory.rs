//! In-process state: a single node, or every node of one process on the local bus.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::store::{
    JoinOutcome, MemberRecord, NodeRecord, RoomRecord, StateStore, StoreError, StoreResult, now_ms,
};

#[derive(Default)]
pub struct MemoryStateStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    rooms: HashMap<String, RoomRecord>,
    members: HashMap<String, BTreeMap<String, MemberRecord>>,
    clients: HashMap<String, String>,
    nodes: HashMap<String, NodeRecord>,
}

impl MemoryStateStore {
    /// Runs `f` on the state now (it may borrow its arguments: it never outlives the call) and
    /// returns its result as the trait's future.
    fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Inner) -> T,
    ) -> BoxFuture<'_, StoreResult<T>> {
        let result = self
            .inner
            .lock()
            .map(|mut i| f(&mut i))
            .map_err(|_| StoreError::Other("poisoned".into()));
        Box::pin(async move { result })
    }
}

impl StateStore for MemoryStateStore {
    fn create_room(&self, room: RoomRecord) -> BoxFuture<'_, StoreResult<bool>> {
        self.with(move |i| {
            if i.rooms.contains_key(&room.id) {
                return false;
            }
            i.rooms.insert(room.id.clone(), room);
            true
        })
    }

    fn room(&self, id: &str) -> BoxFuture<'_, StoreResult<Option<RoomRecord>>> {
        self.with(|i| i.rooms.get(id).cloned())
    }

    fn rooms(&self) -> BoxFuture<'_, StoreResult<Vec<RoomRecord>>> {
        self.with(|i| {
            let mut v: Vec<RoomRecord> = i.rooms.values().cloned().collect();
            v.sort_by(|a, b| a.id.cmp(&b.id));
            v
        })
    }

    fn delete_room(&self, id: &str) -> BoxFuture<'_, StoreResult<Option<Vec<MemberRecord>>>> {
        self.with(|i| {
            i.rooms.remove(id)?;
            Some(
                i.members
                    .remove(id)
                    .map(|m| m.into_values().collect())
                    .unwrap_or_default(),
            )
        })
    }

    fn delete_room_if_empty(&self, id: &str) -> BoxFuture<'_, StoreResult<bool>> {
        self.with(|i| {
            let empty = i.members.get(id).is_none_or(|m| m.is_empty());
            if empty && i.rooms.get(id).is_some_and(|r| r.auto_created) {
                i.rooms.remove(id);
                i.members.remove(id);
                return true;
            }
            false
        })
    }

    fn join<'a>(
        &'a self,
        room: &'a RoomRecord,
        member: MemberRecord,
    ) -> BoxFuture<'a, StoreResult<JoinOutcome>> {
        self.with(move |i| {
            // Looked up before inserting: the entry API would copy the id on every join.
            if !i.rooms.contains_key(&room.id) {
                i.rooms.insert(room.id.clone(), room.clone());
            }
            let members = match i.members.get_mut(&room.id) {
                Some(members) => members,
                None => i.members.entry(room.id.clone()).or_default(),
            };
            if members.contains_key(&member.client_id) {
                JoinOutcome::AlreadyMember
            } else if room.max_clients > 0 && members.len() >= room.max_clients as usize {
                JoinOutcome::Full
            } else {
                members.insert(member.client_id.clone(), member);
                JoinOutcome::Joined
            }
        })
    }

    fn leave(&self, room: &str, client: &str, node: &str) -> BoxFuture<'_, StoreResult<bool>> {
        self.with(|i| {
            let Some(members) = i.members.get_mut(room) else {
                return false;
            };
            if members.get(client).is_none_or(|m| m.node_id != node) {
                return false;
            }
            members.remove(client);
            if members.is_empty() {
                i.members.remove(room);
            }
            true
        })
    }

    fn members(&self, room: &str) -> BoxFuture<'_, StoreResult<Vec<MemberRecord>>> {
        self.with(|i| {
            i.members
                .get(room)
                .map(|m| m.values().cloned().collect())
                .unwrap_or_default()
        })
    }

    fn member_count(&self, room: &str) -> BoxFuture<'_, StoreResult<usize>> {
        self.with(|i| i.members.get(room).map_or(0, |m| m.len()))
    }

    fn register_client(
        &self,
        client: &str,
        node: &str,
    ) -> BoxFuture<'_, StoreResult<Option<String>>> {
        self.with(|i| {
            i.clients
                .insert(client.to_owned(), node.to_owned())
                .filter(|prev| prev != node)
        })
    }

    fn unregister_client(&self, client: &str, node: &str) -> BoxFuture<'_, StoreResult<()>> {
        self.with(|i| {
            if i.clients.get(client).is_some_and(|n| n == node) {
                i.clients.remove(client);
            }
        })
    }

    fn client_node(&self, client: &str) -> BoxFuture<'_, StoreResult<Option<String>>> {
        self.with(|i| i.clients.get(client).cloned())
    }

    fn heartbeat(&self, node: NodeRecord, _ttl: Duration) -> BoxFuture<'_, StoreResult<()>> {
        self.with(move |i| {
            i.nodes.insert(node.node_id.clone(), node);
        })
    }

    fn nodes(&self, ttl: Duration) -> BoxFuture<'_, StoreResult<Vec<NodeRecord>>> {
        let cutoff = now_ms() - ttl.as_millis() as i64;
        self.with(move |i| {
            let mut v: Vec<NodeRecord> = i
                .nodes
                .values()
                .filter(|n| n.heartbeat_at_ms >= cutoff)
                .cloned()
                .collect();
            v.sort_by(|a, b| a.node_id.cmp(&b.node_id));
            v
        })
    }

    fn remove_node(&self, node: &str) -> BoxFuture<'_, StoreResult<Vec<(String, MemberRecord)>>> {
        self.with(|i| {
            i.nodes.remove(node);
            i.clients.retain(|_, n| *n != node);
            let mut removed = Vec::new();
            for (room, members) in i.members.iter_mut() {
                members.retain(|_, m| {
                    if m.node_id == node {
                        removed.push((room.clone(), m.clone()));
                        false
                    } else {
                        true
                    }
                });
            }
            i.members.retain(|_, m| !m.is_empty());
            removed
        })
    }

    fn nodes_with_state(&self) -> BoxFuture<'_, StoreResult<Vec<String>>> {
        self.with(|i| {
            let mut v: Vec<String> = i
                .clients
                .values()
                .cloned()
                .chain(
                    i.members
                        .values()
                        .flat_map(|m| m.values().map(|r| r.node_id.clone())),
                )
                .collect();
            v.sort();
            v.dedup();
            v
        })
    }
}

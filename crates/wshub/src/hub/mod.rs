//! One node's state: its connected clients and its rooms, and local fan-out.
//!
//! The hub only pushes ready frames into connection queues ([`ConnHandle::send`]); it never
//! touches a socket and never waits. Maps are sharded (`DashMap`) so joins and publishes in
//! different rooms do not contend, and no lock is held across an `.await`.
//!
//! Invariants:
//! - A client id maps to at most one connection; registering a second replaces the first,
//!   whose room memberships are removed at once (before it is closed).
//! - Cleanup compares connection ids, so a replaced connection's late cleanup never removes
//!   the membership of the connection that replaced it.
//! - A room's local copy is removed when its last local member leaves; the check and the
//!   removal happen under the room map's shard lock, and joins insert under the same lock, so
//!   a join can't land in a copy that is being removed. Which rooms exist cluster-wide, and
//!   how many members they have, is the state store's business (`cluster`).

mod room;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use dashmap::DashMap;
use serde::Serialize;
use wshub_protocol::messages::{Member, RoomDeleted, RoomInfo};
use wshub_protocol::{ErrorCode, MessageType, close};

use crate::cluster::RoomRecord;
use crate::conn::{ConnHandle, SendOutcome};
use crate::ids::{ClientId, NodeId, RoomId};
use crate::metrics::Metrics;
use crate::wire;

pub(crate) use room::Room;

/// Why a hub operation failed; each maps to one protocol error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HubError {
    #[error("room not found")]
    RoomNotFound,
    #[error("room already exists")]
    RoomExists,
    #[error("room is full")]
    RoomFull,
    #[error("client not in room")]
    NotInRoom,
    #[error("client already in room")]
    AlreadyInRoom,
    #[error("client not found")]
    ClientNotFound,
}

impl HubError {
    pub fn code(self) -> ErrorCode {
        match self {
            HubError::RoomNotFound => ErrorCode::RoomNotFound,
            HubError::RoomExists => ErrorCode::RoomAlreadyExists,
            HubError::RoomFull => ErrorCode::RoomFull,
            HubError::NotInRoom => ErrorCode::NotInRoom,
            HubError::AlreadyInRoom => ErrorCode::AlreadyInRoom,
            HubError::ClientNotFound => ErrorCode::ClientNotFound,
        }
    }
}

/// Who a fan-out skips: the sender. Locally that is its connection (a second connection
/// with the same id elsewhere still gets it); a message from another node names the client.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Exclude<'a> {
    Nobody,
    Conn(u64),
    Client(&'a str),
}

impl Exclude<'_> {
    fn skips(&self, conn: &ConnHandle) -> bool {
        match self {
            Exclude::Nobody => false,
            Exclude::Conn(id) => conn.conn_id == *id,
            Exclude::Client(id) => conn.client_id.as_str() == *id,
        }
    }
}

/// Counts from one fan-out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Frames queued.
    pub queued: usize,
    /// Recipients disconnected because their queue was full.
    pub slow_consumers: usize,
}

impl Delivery {
    fn record(&mut self, outcome: SendOutcome) {
        match outcome {
            SendOutcome::Queued => self.queued += 1,
            SendOutcome::SlowConsumer => self.slow_consumers += 1,
            SendOutcome::Closed => {}
        }
    }
}

pub(crate) struct Hub {
    node_id: NodeId,
    clients: DashMap<ClientId, Arc<ConnHandle>>,
    /// This node's copies of the rooms it has members in (the cluster-wide registry is the
    /// state store).
    rooms: DashMap<RoomId, Arc<Room>>,
    next_message_id: AtomicU64,
    /// Counted here, where frames meet queues: once per fan-out, not per recipient.
    pub(crate) metrics: Arc<Metrics>,
}

impl Hub {
    pub(crate) fn new(node_id: NodeId) -> Self {
        Hub {
            metrics: Arc::new(Metrics::new(node_id.as_str())),
            node_id,
            clients: DashMap::new(),
            rooms: DashMap::new(),
            next_message_id: AtomicU64::new(1),
        }
    }

    pub(crate) fn node_id(&self) -> &NodeId {
        &self.node_id
    }

    /// The frame of a `direct_message` or `broadcast`: `{content, sender_id, timestamp}`.
    pub(crate) fn sender_frame(
        &self,
        t: MessageType,
        content: &serde_json::value::RawValue,
        sender_id: &str,
    ) -> Result<Bytes, serde_json::Error> {
        self.frame(
            t.as_str(),
            &wshub_protocol::messages::SenderContent {
                content,
                sender_id,
                timestamp: wshub_protocol::now_millis(),
            },
            None,
        )
    }

    /// Encodes and frames one envelope with a fresh node-unique message id.
    pub(crate) fn frame<D: Serialize + ?Sized>(
        &self,
        message_type: &str,
        data: &D,
        request_id: Option<i64>,
    ) -> Result<Bytes, serde_json::Error> {
        let id = self.next_message_id.fetch_add(1, Ordering::Relaxed);
        wire::envelope_frame(id, message_type, data, request_id)
    }

    // ---- clients ----

    /// Registers a connection. Returns the connection it replaced, already removed from its
    /// rooms (returned too) and told to close.
    pub(crate) fn register(&self, conn: Arc<ConnHandle>) -> Option<(Arc<ConnHandle>, Vec<RoomId>)> {
        let old = self.clients.insert(conn.client_id.clone(), conn)?;
        let left = self.leave_all(&old);
        old.close(close::REPLACED, close::reason::REPLACED);
        Some((old, left))
    }

    /// Removes a connection that ended, and its room memberships. Returns the rooms it left.
    pub(crate) fn unregister(&self, conn: &Arc<ConnHandle>) -> Vec<RoomId> {
        self.clients
            .remove_if(&conn.client_id, |_, c| c.conn_id == conn.conn_id);
        self.leave_all(conn)
    }

    pub(crate) fn client(&self, id: &str) -> Option<Arc<ConnHandle>> {
        self.clients.get(id).map(|c| c.value().clone())
    }

    /// Rooms with members on this node.
    pub(crate) fn local_room_count(&self) -> usize {
        self.rooms.len()
    }

    pub(crate) fn client_count(&self) -> usize {
        self.clients.len()
    }

    /// Rooms with local members, and the local memberships in them.
    pub(crate) fn room_and_member_counts(&self) -> (usize, usize) {
        let members = self.rooms.iter().map(|r| r.member_count()).sum();
        (self.rooms.len(), members)
    }

    /// Every connection on this node (for sweeps: no lock is held while they are used).
    pub(crate) fn clients_snapshot(&self) -> Vec<Arc<ConnHandle>> {
        self.clients.iter().map(|c| c.value().clone()).collect()
    }

    pub(crate) fn client_ids(&self) -> Vec<ClientId> {
        let mut ids: Vec<ClientId> = self.clients.iter().map(|c| c.key().clone()).collect();
        ids.sort();
        ids
    }

    // ---- rooms ----

    /// Drops this node's copy of a room; every local member is removed and gets
    /// `room_deleted` (but `exclude`: the requester, who gets the reply instead).
    pub(crate) fn delete_room(&self, id: &str, exclude: Exclude<'_>) -> Result<Delivery, HubError> {
        let (_, room) = self.rooms.remove(id).ok_or(HubError::RoomNotFound)?;
        let members: Vec<Arc<ConnHandle>> = room
            .members
            .write()
            .map(|mut m| m.drain().map(|(_, c)| c).collect())
            .unwrap_or_default();
        let mut delivery = Delivery::default();
        if let Ok(frame) = self.frame(
            MessageType::RoomDeleted.as_str(),
            &RoomDeleted {
                room_id: id.to_owned(),
            },
            None,
        ) {
            for m in &members {
                m.remove_room(id);
                if !exclude.skips(m) {
                    delivery.record(m.send(frame.clone()));
                }
            }
            self.metrics.sent(&frame, delivery.queued);
        }
        self.metrics.left(members.len());
        tracing::info!(room_id = %id, members = members.len(), "room deleted");
        Ok(delivery)
    }

    /// Adds `conn` to this node's copy of a room, creating the copy from `spec` if this is
    /// the room's first local member. Whether the room exists and has space cluster-wide was
    /// decided by the state store before this is called.
    pub(crate) fn join(
        &self,
        room_id: &RoomId,
        conn: &Arc<ConnHandle>,
        spec: &RoomRecord,
    ) -> Result<(), HubError> {
        // The shard guard is held while the member is inserted, so the room can't be removed
        // by `leave` in between (see the module invariants).
        let guard = self
            .rooms
            .entry(room_id.clone())
            .or_insert_with(|| {
                Arc::new(Room::new(
                    room_id.clone(),
                    spec.name.clone(),
                    spec.max_clients,
                ))
            })
            .downgrade();
        let room = guard.value();
        let mut members = room.members.write().map_err(|_| HubError::RoomNotFound)?;
        if members.contains_key(&conn.client_id) {
            return Err(HubError::AlreadyInRoom);
        }
        members.insert(conn.client_id.clone(), conn.clone());
        conn.add_room(room_id.clone());
        self.metrics.joined();
        Ok(())
    }

    /// Removes `conn` from this node's copy of a room; the copy goes when it empties.
    pub(crate) fn leave(&self, room_id: &str, conn: &Arc<ConnHandle>) -> Result<(), HubError> {
        self.remove_member(room_id, conn)?;
        conn.remove_room(room_id);
        Ok(())
    }

    /// The room side of leaving: `conn`'s own room list is the caller's business.
    fn remove_member(&self, room_id: &str, conn: &ConnHandle) -> Result<(), HubError> {
        let room = self
            .rooms
            .get(room_id)
            .map(|r| r.value().clone())
            .ok_or(HubError::RoomNotFound)?;
        let removed = room
            .members
            .write()
            .map(|mut m| {
                // Only this connection's membership: a newer connection with the same client
                // id may already be a member.
                let mine = m
                    .get(&conn.client_id)
                    .is_some_and(|c| c.conn_id == conn.conn_id);
                if mine {
                    m.remove(&conn.client_id);
                }
                mine
            })
            .unwrap_or(false);
        if !removed {
            return Err(HubError::NotInRoom);
        }
        self.metrics.left(1);
        self.rooms.remove_if(room_id, |_, r| {
            Arc::ptr_eq(r, &room) && r.member_count() == 0
        });
        Ok(())
    }

    fn leave_all(&self, conn: &ConnHandle) -> Vec<RoomId> {
        let mut rooms = conn.take_rooms();
        rooms.retain(|room| self.remove_member(room.as_str(), conn).is_ok());
        rooms
    }

    pub(crate) fn is_member(&self, room_id: &str, conn: &ConnHandle) -> Result<bool, HubError> {
        let room = self.rooms.get(room_id).ok_or(HubError::RoomNotFound)?;
        Ok(room
            .members
            .read()
            .map(|m| {
                m.get(&conn.client_id)
                    .is_some_and(|c| c.conn_id == conn.conn_id)
            })
            .unwrap_or(false))
    }

    pub(crate) fn room_info(&self, room_id: &str) -> Option<RoomInfo> {
        self.rooms.get(room_id).map(|r| RoomInfo {
            id: r.id.to_string(),
            name: r.name.clone(),
            max_clients: r.max_clients,
            members: r.member_count(),
        })
    }

    pub(crate) fn list_rooms(&self) -> Vec<RoomInfo> {
        let ids: Vec<RoomId> = self.rooms.iter().map(|r| r.key().clone()).collect();
        let mut rooms: Vec<RoomInfo> = ids
            .iter()
            .filter_map(|id| self.room_info(id.as_str()))
            .collect();
        rooms.sort_by(|a, b| a.id.cmp(&b.id));
        rooms
    }

    pub(crate) fn members(&self, room_id: &str) -> Result<Vec<Member>, HubError> {
        let room = self
            .rooms
            .get(room_id)
            .map(|r| r.value().clone())
            .ok_or(HubError::RoomNotFound)?;
        Ok(room
            .member_handles()
            .into_iter()
            .map(|c| Member {
                client_id: c.client_id.to_string(),
                info: c.info(),
            })
            .collect())
    }

    // ---- history positions ----

    /// Rooms with members here.
    pub(crate) fn rooms_with_members(&self) -> Vec<RoomId> {
        self.rooms
            .iter()
            .filter(|r| r.member_count() > 0)
            .map(|r| r.key().clone())
            .collect()
    }

    /// The highest offset delivered in a room here, `None` before its position started
    /// (see [`Room::start_position`]) or when the room has no members here.
    pub(crate) fn delivered(&self, room_id: &str) -> Option<u64> {
        self.rooms
            .get(room_id)
            .and_then(|r| r.position_started().then(|| r.delivered()))
    }

    /// Records that a room's publications up to `offset` need no (more) delivery here.
    pub(crate) fn mark_delivered(&self, room_id: &str, offset: u64) {
        if let Some(room) = self.rooms.get(room_id) {
            room.mark_delivered(offset);
        }
    }

    /// A member joined a room whose latest offset was `latest`: see [`Room::start_position`].
    pub(crate) fn start_position(&self, room_id: &str, latest: u64) {
        if let Some(room) = self.rooms.get(room_id) {
            room.start_position(latest);
        }
    }

    // ---- fan-out ----

    /// Whether any connection on this node is in the room (the node then needs the room's
    /// bus subject).
    pub(crate) fn has_local_members(&self, room_id: &str) -> bool {
        self.rooms
            .get(room_id)
            .is_some_and(|r| r.member_count() > 0)
    }

    /// Queues `frame` to every member of a room but `exclude`.
    pub(crate) fn publish_room(
        &self,
        room_id: &str,
        frame: &Bytes,
        exclude: Exclude<'_>,
        offset: Option<u64>,
    ) -> Result<Delivery, HubError> {
        let room = self
            .rooms
            .get(room_id)
            .map(|r| r.value().clone())
            .ok_or(HubError::RoomNotFound)?;
        if let Some(offset) = offset {
            room.mark_delivered(offset);
        }
        let mut delivery = Delivery::default();
        if let Ok(members) = room.members.read() {
            for conn in members.values() {
                if !exclude.skips(conn) {
                    delivery.record(conn.send_room(room_id, offset, frame.clone()));
                }
            }
        }
        self.metrics.sent(frame, delivery.queued);
        Ok(delivery)
    }

    /// Queues `frame` to one client.
    pub(crate) fn send_to_client(&self, client_id: &str, frame: Bytes) -> Result<(), HubError> {
        let conn = self.client(client_id).ok_or(HubError::ClientNotFound)?;
        match self.send_to(&conn, frame) {
            SendOutcome::Queued | SendOutcome::SlowConsumer => Ok(()),
            SendOutcome::Closed => Err(HubError::ClientNotFound),
        }
    }

    /// Queues `frame` to every client on this node but `exclude`.
    pub(crate) fn broadcast(&self, frame: &Bytes, exclude: Exclude<'_>) -> Delivery {
        let mut delivery = Delivery::default();
        for conn in self.clients.iter() {
            if !exclude.skips(&conn) {
                delivery.record(conn.send(frame.clone()));
            }
        }
        self.metrics.sent(frame, delivery.queued);
        delivery
    }

    /// Queues `frame` to `conn` and counts it (replies, errors, direct messages, events).
    pub(crate) fn send_to(&self, conn: &ConnHandle, frame: Bytes) -> SendOutcome {
        let outcome = conn.send(frame.clone());
        if outcome == SendOutcome::Queued {
            self.metrics.sent(&frame, 1);
        }
        outcome
    }

    /// Closes every connection (shutdown).
    pub(crate) fn close_all(&self, code: u16, reason: &'static str) {
        for conn in self.clients.iter() {
            conn.close(code, reason);
        }
    }
}

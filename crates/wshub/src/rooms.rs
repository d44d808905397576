//! Rooms, membership and presence across the cluster.
//!
//! The state store decides: whether a room exists, whether a join fits under `max_clients`
//! (atomically, cluster-wide), who is in a room on which node, and which node a client is on.
//! The hub then keeps this node's copy for fan-out. Handlers, the admin API and the SDK go
//! through these functions, never the hub directly, for anything that is cluster-wide.
//!
//! Every node heartbeats into the store; every node also looks for nodes that stopped
//! heartbeating for `cluster.node_ttl` and removes what they held, announcing
//! `presence_leave` for each of their members. A node that finds it was itself silent for that
//! long (paused, partitioned) writes its clients and memberships back.

use std::sync::Arc;
use std::time::Duration;

use wshub_protocol::messages::{Member, RoomInfo};
use wshub_protocol::{MessageType, close};

use crate::cluster::{JoinOutcome, MemberRecord, NodeRecord, RoomRecord, StateStore, now_ms};
use crate::conn::ConnHandle;
use crate::fanout::PublishError;
use crate::hub::HubError;
use crate::ids::RoomId;
use crate::node::Node;

/// `presence_join` / `presence_leave` data.
#[derive(serde::Serialize)]
struct Presence<'a> {
    room_id: &'a str,
    client_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    info: Option<&'a serde_json::Value>,
}

impl Node {
    pub(crate) fn state(&self) -> &dyn StateStore {
        &**self
            .state
            .get_or_init(|| Arc::new(crate::cluster::MemoryStateStore::default()))
    }

    fn member_record(&self, conn: &ConnHandle) -> MemberRecord {
        MemberRecord {
            client_id: conn.client_id.to_string(),
            node_id: self.hub.node_id().to_string(),
            info: conn.info(),
        }
    }

    /// Joins `conn` to a room: the room must exist (or is created when `rooms.auto_create`),
    /// and the store admits the member only under the room's `max_clients`.
    pub(crate) async fn join_room(
        &self,
        room: &RoomId,
        conn: &Arc<ConnHandle>,
    ) -> Result<(), PublishError> {
        if self.hub.is_member(room.as_str(), conn).unwrap_or(false) {
            return Err(HubError::AlreadyInRoom.into());
        }
        let rooms_cfg = self.config().rooms.clone();
        let state = self.state();
        let record = match state.room(room.as_str()).await? {
            Some(r) => r,
            None if rooms_cfg.auto_create => {
                let record = RoomRecord {
                    id: room.to_string(),
                    name: room.to_string(),
                    max_clients: rooms_cfg.default_max_clients,
                    auto_created: true,
                };
                state.create_room(record.clone()).await?;
                // Whoever created it first, its settings are the room's.
                state.room(room.as_str()).await?.unwrap_or(record)
            }
            None => return Err(HubError::RoomNotFound.into()),
        };
        let mut outcome = state.join(&record, self.member_record(conn)).await?;
        if outcome == JoinOutcome::AlreadyMember {
            // Not a member here (checked above), yet recorded as one: a membership left behind
            // by this client's previous connection on another node (a client id is connected
            // once cluster-wide, so that one is gone or going). It is replaced.
            // It may also be gone already: the old node removes it when it closes the
            // replaced connection, which races with this join. Either way, join again. The
            // stale record can be this node's own, too: a previous connection whose leave
            // could not reach the cluster state (broker down) before this one rejoined.
            if let Some(stale) = state
                .members(room.as_str())
                .await?
                .into_iter()
                .find(|m| m.client_id == conn.client_id.as_str())
            {
                state
                    .leave(room.as_str(), &stale.client_id, &stale.node_id)
                    .await?;
            }
            outcome = state.join(&record, self.member_record(conn)).await?;
        }
        match outcome {
            JoinOutcome::Joined => {}
            JoinOutcome::Full => return Err(HubError::RoomFull.into()),
            JoinOutcome::AlreadyMember => return Err(HubError::AlreadyInRoom.into()),
        }
        if let Err(e) = self.hub.join(room, conn, &record) {
            let _ = state
                .leave(
                    room.as_str(),
                    conn.client_id.as_str(),
                    self.hub.node_id().as_str(),
                )
                .await;
            return Err(e.into());
        }
        self.room_interest(room.as_str()).await;
        if rooms_cfg.presence_events {
            self.announce(
                MessageType::PresenceJoin,
                room.as_str(),
                conn.client_id.as_str(),
                conn.info().as_ref(),
                Some(conn),
            )
            .await;
        }
        Ok(())
    }

    /// Removes `conn` from a room (local copy and store), and the room itself when it was
    /// auto-created and is now empty everywhere.
    pub(crate) async fn leave_room(
        &self,
        room: &str,
        conn: &Arc<ConnHandle>,
    ) -> Result<(), PublishError> {
        if let Err(e) = self.hub.leave(room, conn) {
            return Err(self.not_here(room, e).await);
        }
        self.forget_membership(room, conn.client_id.as_str()).await;
        Ok(())
    }

    /// A local "room not found" means no member *here*: the registry says whether the room
    /// exists at all (then the client is just not in it, 3003).
    pub(crate) async fn not_here(&self, room: &str, e: HubError) -> PublishError {
        if e == HubError::RoomNotFound
            && let Ok(Some(_)) = self.state().room(room).await
        {
            return HubError::NotInRoom.into();
        }
        e.into()
    }

    /// The store side of a member leaving this node (leave, kick, disconnect, replacement).
    pub(crate) async fn forget_membership(&self, room: &str, client: &str) {
        let state = self.state();
        let node = self.hub.node_id().as_str();
        match state.leave(room, client, node).await {
            // The last member here: whether it was the last anywhere is the store's to say.
            // (The client left the hub first, so members still here are others.)
            Ok(true) if !self.hub.has_local_members(room) => {
                let _ = state.delete_room_if_empty(room).await;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(room_id = room, error = %e, "could not remove a membership from the cluster state")
            }
        }
        self.room_interest(room).await;
        if self.config().rooms.presence_events {
            self.announce(MessageType::PresenceLeave, room, client, None, None)
                .await;
        }
    }

    /// Sends a presence event to a room's members on every node.
    async fn announce(
        &self,
        t: MessageType,
        room: &str,
        client: &str,
        info: Option<&serde_json::Value>,
        subject: Option<&ConnHandle>,
    ) {
        let data = Presence {
            room_id: room,
            client_id: client,
            info,
        };
        if let Ok(frame) = self.hub.frame(t.as_str(), &data, None) {
            // Not found locally is fine: members may be elsewhere only.
            let _ = self.publish_room(room, frame, subject).await;
        }
    }

    pub(crate) async fn create_room(
        &self,
        id: RoomId,
        name: Option<String>,
        max_clients: Option<u32>,
    ) -> Result<RoomInfo, PublishError> {
        let record = RoomRecord {
            name: name.unwrap_or_else(|| id.to_string()),
            max_clients: max_clients.unwrap_or(self.config().rooms.default_max_clients),
            id: id.to_string(),
            auto_created: false,
        };
        if !self.state().create_room(record.clone()).await? {
            return Err(HubError::RoomExists.into());
        }
        tracing::info!(room_id = %id, max_clients = record.max_clients, "room created");
        Ok(RoomInfo {
            id: record.id,
            name: record.name,
            max_clients: record.max_clients,
            members: 0,
        })
    }

    pub(crate) async fn room_info(&self, id: &str) -> Result<RoomInfo, PublishError> {
        let state = self.state();
        let record = state.room(id).await?.ok_or(HubError::RoomNotFound)?;
        Ok(RoomInfo {
            members: state.member_count(id).await?,
            id: record.id,
            name: record.name,
            max_clients: record.max_clients,
        })
    }

    pub(crate) async fn list_rooms(&self) -> Result<Vec<RoomInfo>, PublishError> {
        let state = self.state();
        let mut out = Vec::new();
        for record in state.rooms().await? {
            out.push(RoomInfo {
                members: state.member_count(&record.id).await?,
                id: record.id,
                name: record.name,
                max_clients: record.max_clients,
            });
        }
        Ok(out)
    }

    /// Members of a room on every node, with their `info`.
    pub(crate) async fn room_members(&self, id: &str) -> Result<Vec<Member>, PublishError> {
        let state = self.state();
        if state.room(id).await?.is_none() {
            return Err(HubError::RoomNotFound.into());
        }
        Ok(state
            .members(id)
            .await?
            .into_iter()
            .map(|m| Member {
                client_id: m.client_id,
                info: m.info,
            })
            .collect())
    }

    // ---- clients ----

    /// Records a new connection cluster-wide; an older connection with the same id on another
    /// node is told to close (4409).
    pub(crate) async fn register_client(&self, conn: &ConnHandle) {
        let node = self.hub.node_id().as_str();
        match self
            .state()
            .register_client(conn.client_id.as_str(), node)
            .await
        {
            Ok(Some(previous)) => {
                tracing::info!(previous_node = %previous, "client id moved here from another node; closing the old connection");
                let _ = self.send_replaced(conn.client_id.as_str(), &previous).await;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "could not record the client in the cluster state")
            }
        }
    }

    /// Forgets a connection that ended: its memberships, and its registration unless a newer
    /// connection with the same id is already here.
    pub(crate) async fn unregister_client(&self, client: &str, left: Vec<RoomId>) {
        for room in &left {
            self.forget_membership(room.as_str(), client).await;
        }
        if self.hub.client(client).is_none()
            && let Err(e) = self
                .state()
                .unregister_client(client, self.hub.node_id().as_str())
                .await
        {
            tracing::warn!(error = %e, "could not remove the client from the cluster state");
        }
    }

    // ---- nodes ----

    fn node_record(&self, started_at_ms: i64) -> NodeRecord {
        let config = self.config();
        let addr = if config.cluster.advertise_addr.is_empty() {
            config.server.addr.clone()
        } else {
            config.cluster.advertise_addr.clone()
        };
        NodeRecord {
            node_id: self.hub.node_id().to_string(),
            addr,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            clients: self.hub.client_count(),
            rooms: self.hub.local_room_count(),
            started_at_ms,
            heartbeat_at_ms: now_ms(),
        }
    }

    /// Live nodes: this one with its current load, the others as their last heartbeat said.
    pub(crate) async fn live_nodes(&self) -> Vec<NodeRecord> {
        let me = self.node_record(self.started_at_ms);
        let ttl = self.config().cluster.node_ttl;
        let mut nodes: Vec<NodeRecord> = self
            .state()
            .nodes(ttl)
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|n| n.node_id != me.node_id)
            .collect();
        nodes.push(me);
        nodes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        nodes
    }

    /// Heartbeats and dead-node cleanup, until shutdown.
    pub(crate) fn start_heartbeat(self: &Arc<Self>) {
        let node = self.clone();
        self.tasks.spawn(async move {
            let interval = node.config().cluster.heartbeat_interval;
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The stamp of our last heartbeat that landed (the first was written just before
            // this task started): what the other nodes judge us by.
            let mut last_stamp_ms = now_ms();
            loop {
                tokio::select! {
                    _ = node.shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let ttl = node.config().cluster.node_ttl;
                let record = node.node_record(node.started_at_ms);
                let stamp_ms = record.heartbeat_at_ms;
                let mut restore = false;
                match node.state().heartbeat(record, ttl).await {
                    Ok(()) => {
                        if presumed_dead(last_stamp_ms, now_ms(), ttl) {
                            // Others will have declared us dead and removed our clients.
                            tracing::warn!("this node's heartbeat was older than cluster.node_ttl before a new one landed; restoring its clients in the cluster state");
                            restore = true;
                        }
                        last_stamp_ms = stamp_ms;
                    }
                    Err(e) => tracing::debug!(error = %e, "heartbeat failed"),
                }
                // However it came about (another node's shorter `node_ttl`, a clock jump), our
                // clients missing from the cluster state says we were reaped.
                if node.reap_dead_nodes(ttl).await == Some(false) && node.hub.client_count() > 0 {
                    tracing::warn!("this node's clients are missing from the cluster state (another node presumed it dead); restoring them");
                    restore = true;
                }
                if restore {
                    node.restore_state().await;
                }
            }
        });
    }

    /// Removes what dead nodes held and announces their members gone, when this node is the
    /// reaper. Returns whether this node holds clients in the cluster state (`None` when the
    /// store could not say).
    async fn reap_dead_nodes(&self, ttl: Duration) -> Option<bool> {
        let state = self.state();
        let (Ok(live), Ok(holders)) = (state.nodes(ttl).await, state.nodes_with_state().await)
        else {
            return None;
        };
        let me = self.hub.node_id().as_str();
        let holding = holders.iter().any(|n| n.as_str() == me);
        if !is_reaper(me, &live) {
            return Some(holding);
        }
        for dead in holders
            .iter()
            .filter(|n| n.as_str() != me && !live.iter().any(|l| &l.node_id == *n))
        {
            match state.remove_node(dead).await {
                Ok(removed) => {
                    if !removed.is_empty() {
                        tracing::warn!(node = %dead, members = removed.len(), "node is dead; removed its clients from rooms");
                    }
                    self.hub.metrics.dead_node_cleanups.inc();
                    let presence = self.config().rooms.presence_events;
                    let mut rooms = std::collections::BTreeSet::new();
                    for (room, member) in removed {
                        if presence {
                            self.announce(
                                MessageType::PresenceLeave,
                                &room,
                                &member.client_id,
                                None,
                                None,
                            )
                            .await;
                        }
                        rooms.insert(room);
                    }
                    // Once per room, not per member: on NATS the check lists the room.
                    for room in rooms {
                        let _ = state.delete_room_if_empty(&room).await;
                    }
                }
                Err(e) => {
                    tracing::debug!(node = %dead, error = %e, "dead node cleanup failed; retried")
                }
            }
        }
        Some(holding)
    }

    /// Writes this node's clients and memberships back after it was presumed dead.
    async fn restore_state(&self) {
        let state = self.state();
        let node = self.hub.node_id().to_string();
        for client in self.hub.client_ids() {
            let Some(conn) = self.hub.client(client.as_str()) else {
                continue;
            };
            if let Ok(Some(previous)) = state.register_client(client.as_str(), &node).await {
                // The client reconnected elsewhere meanwhile: that connection wins.
                let _ = state.register_client(client.as_str(), &previous).await;
                conn.close(close::REPLACED, close::reason::REPLACED);
                continue;
            }
            for room in conn.room_list() {
                // The room as it is, or recreated as it was known here; no limit check: the
                // member was admitted before.
                let mut record =
                    state
                        .room(room.as_str())
                        .await
                        .ok()
                        .flatten()
                        .unwrap_or(RoomRecord {
                            id: room.to_string(),
                            name: room.to_string(),
                            max_clients: 0,
                            auto_created: true,
                        });
                record.max_clients = 0;
                let _ = state.join(&record, self.member_record(&conn)).await;
            }
        }
    }

    /// On clean shutdown: everything this node held goes at once, not after `node_ttl`.
    pub(crate) async fn leave_cluster(&self) {
        let node = self.hub.node_id().to_string();
        match self.state().remove_node(&node).await {
            Ok(removed) => {
                if self.config().rooms.presence_events {
                    for (room, member) in removed {
                        self.announce(
                            MessageType::PresenceLeave,
                            &room,
                            &member.client_id,
                            None,
                            None,
                        )
                        .await;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not remove this node from the cluster state")
            }
        }
    }
}

/// Whether `me` cleans up after dead nodes: the live node with the smallest id, so one node
/// scans a dead node's records instead of every survivor racing the others for them (every
/// node reads the same registry, so they agree but for a heartbeat's worth of skew; two
/// reapers for a moment are harmless: the removals are conditional). Should the reaper die
/// too, the next smallest takes over once it is past `node_ttl`. `me` counts even when its
/// own heartbeat is missing from `live`.
fn is_reaper(me: &str, live: &[NodeRecord]) -> bool {
    live.iter().all(|n| n.node_id.as_str() >= me)
}

/// Whether the other nodes may have presumed this node dead before its heartbeat landed at
/// `landed_ms`: the last one that had landed (stamped `last_stamp_ms`, which is what they
/// compare with their clock) was then older than `ttl`. A heartbeat slow to land shows here,
/// not in the time between our own attempts.
fn presumed_dead(last_stamp_ms: i64, landed_ms: i64, ttl: Duration) -> bool {
    landed_ms - last_stamp_ms > ttl.as_millis() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presumed_dead_counts_from_the_last_landed_stamp() {
        let ttl = Duration::from_secs(6);
        // Every 2 s, each landing at once.
        assert!(!presumed_dead(100_000, 102_000, ttl));
        // Attempted on time (2 s after the last), but the write took 5 s to land: the stored
        // stamp was 7 s old by then, and the others may have reaped us meanwhile.
        assert!(presumed_dead(100_000, 107_000, ttl));
        assert!(!presumed_dead(100_000, 106_000, ttl));
    }

    #[test]
    fn the_live_node_with_the_smallest_id_reaps() {
        let node = |id: &str| NodeRecord {
            node_id: id.into(),
            addr: String::new(),
            version: String::new(),
            clients: 0,
            rooms: 0,
            started_at_ms: 0,
            heartbeat_at_ms: 0,
        };
        let live = [node("node-b"), node("node-a"), node("node-c")];
        assert!(is_reaper("node-a", &live));
        assert!(!is_reaper("node-b", &live));
        assert!(!is_reaper("node-c", &live));
        // node-a is gone: node-b takes over.
        assert!(is_reaper("node-b", &live[..1]));
        assert!(is_reaper("node-b", &[node("node-b"), node("node-c")]));
        // Our own heartbeat missing from the registry does not make us the reaper of others.
        assert!(!is_reaper("node-b", &[node("node-a")]));
        assert!(is_reaper("node-b", &[]));
    }
}

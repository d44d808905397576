//! The position check: publications that never arrived live are delivered from the history.
//!
//! Across a cluster, live delivery of a room publication is at most once: a bus publish is
//! lost while a node is cut off from the broker, a node can store a publication and die
//! before publishing it, and an append that timed out here can still land in the store (the
//! publisher's retry then finds it stored, and a retry is not delivered again). The history
//! holds every one of them. A client sees such a loss as a gap in the offsets when the room's
//! next publication arrives, and fills it from the history itself; the last publications
//! before a room goes quiet have no next one.
//!
//! So every `rooms.history.position_check`, a cluster node asks the history for the latest
//! offset of each room it has members in, and compares it with the highest offset it
//! delivered there (or that was already published when its first member here joined). A
//! difference that is still there at a check at least one interval later (a publication can
//! be on its way over the bus) is delivered from the history to the room's members on this node, in order, each one skipping
//! its sender as live delivery does. Clients drop what they already have by offset, so a
//! publication that was only late is not shown twice by a client that tracks offsets.
//!
//! This repairs the tail of a room. A hole below the highest delivered offset is left to the
//! clients: a later publication arrived, so they see the gap. (Centrifugo's position check
//! covers the same case per connection, by disconnecting a client that fell behind so that
//! it recovers on reconnect.)

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::history::{HistoryStore, Position};
use crate::hub::Exclude;
use crate::ids::RoomId;
use crate::node::Node;

/// Most publications read from the history at once while delivering a room's missing tail.
const READ_PAGE: u64 = 1000;

/// Rooms that were behind: the latest offset seen then, and when.
#[derive(Default)]
struct Behind {
    rooms: HashMap<RoomId, (u64, Instant)>,
}

impl Behind {
    /// The offsets to deliver from the history, `(after, through]`: those that were already
    /// published at least `grace` ago and have still not been delivered.
    fn judge(
        &mut self,
        room: &RoomId,
        delivered: u64,
        latest: u64,
        now: Instant,
        grace: Duration,
    ) -> Option<(u64, u64)> {
        if latest <= delivered {
            self.rooms.remove(room);
            return None;
        }
        match self.rooms.get(room).copied() {
            Some((before, seen)) if before > delivered => {
                if now.duration_since(seen) < grace {
                    return None;
                }
                if latest > before {
                    // The newer ones get their own grace.
                    self.rooms.insert(room.clone(), (latest, now));
                }
                Some((delivered, before.min(latest)))
            }
            _ => {
                self.rooms.insert(room.clone(), (latest, now));
                None
            }
        }
    }

    fn forget(&mut self, room: &RoomId) {
        self.rooms.remove(room);
    }

    /// Forgets rooms this node no longer has members in.
    fn retain(&mut self, rooms: &[RoomId]) {
        self.rooms.retain(|room, _| rooms.contains(room));
    }
}

/// `sender_id` of a stored publication's `data`, which live delivery skipped. (A publication
/// made through the admin API or the SDK names a sender but skipped nobody live; a client
/// whose id is that name does not get it from here. The SDKs' gap filling skips by the same
/// field.)
fn sender_of(data: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Sender {
        sender_id: Option<String>,
    }
    serde_json::from_slice::<Sender>(data)
        .ok()
        .and_then(|s| s.sender_id)
}

impl Node {
    /// Starts the position check when this node is in a cluster and rooms keep history.
    pub(crate) fn start_position_check(self: &Arc<Self>) {
        let every = self.config().rooms.history.position_check;
        if every.is_zero() || self.history_for_rooms().is_none() {
            return;
        }
        let node = self.clone();
        self.tasks.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut behind = Behind::default();
            loop {
                tokio::select! {
                    _ = node.shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                // A pass can wait on a slow history: shutdown does not wait for it.
                tokio::select! {
                    _ = node.shutdown.cancelled() => break,
                    _ = node.check_positions(&mut behind, every) => {}
                }
            }
        });
    }

    async fn check_positions(&self, behind: &mut Behind, grace: Duration) {
        let Some(history) = self.history_for_rooms() else {
            return;
        };
        let rooms = self.hub.rooms_with_members();
        behind.retain(&rooms);
        for room in rooms {
            let latest = match history.latest(room.as_str()).await {
                Ok(position) => position.offset,
                Err(e) => {
                    tracing::debug!(room_id = %room, error = %e, "position check: no latest offset");
                    continue;
                }
            };
            // Read after `latest`: whatever arrived while it was read counts.
            let Some(delivered) = self.hub.delivered(room.as_str()) else {
                // A room whose join set no start (an SDK join, a failed history read, or a
                // join still under way): it starts here, with nothing owed from before.
                self.hub.start_position(room.as_str(), latest);
                behind.forget(&room);
                continue;
            };
            if let Some((after, through)) =
                behind.judge(&room, delivered, latest, Instant::now(), grace)
            {
                self.deliver_missed(history, &room, after, through).await;
            }
        }
    }

    /// Delivers the room's publications `(after, through]` from the history to its members
    /// here, but those that arrived live meanwhile.
    async fn deliver_missed(
        &self,
        history: &dyn HistoryStore,
        room: &RoomId,
        after: u64,
        through: u64,
    ) {
        let mut next = after;
        let mut delivered = 0u64;
        while next < through {
            let read = self
                .read_history(
                    history,
                    room.as_str(),
                    Some(next),
                    (through - next).min(READ_PAGE) as usize,
                )
                .await;
            let (epoch, publications) = match read {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(room_id = %room, error = %e, "position check: could not read the publications that never arrived; the next check tries again");
                    return;
                }
            };
            let before = next;
            for p in publications.iter().filter(|p| p.offset <= through) {
                next = p.offset;
                // Arrived live while the history was read (then newer ones did too: what is
                // left below is the clients' to fill, as a gap).
                if self
                    .hub
                    .delivered(room.as_str())
                    .is_none_or(|d| d >= p.offset)
                {
                    continue;
                }
                let position = Position {
                    offset: p.offset,
                    epoch: epoch.clone(),
                };
                let Ok(frame) = self.history_frame(&p.message_type, &p.data, &position) else {
                    continue;
                };
                let sender = sender_of(&p.data).unwrap_or_default();
                if self
                    .deliver_room(
                        room.as_str(),
                        &frame,
                        Exclude::Client(&sender),
                        Some(p.offset),
                        None,
                    )
                    .is_ok()
                {
                    self.hub.metrics.history_redelivered.inc();
                    delivered += 1;
                }
            }
            if next == before {
                // Nothing newer left in the history (trimmed meanwhile): nothing to deliver.
                break;
            }
        }
        // Publications the history no longer holds are not looked for again.
        self.hub.mark_delivered(room.as_str(), through);
        if delivered == 0 {
            // All of them arrived live while they were read, or had left the history.
            return;
        }
        tracing::warn!(
            room_id = %room,
            after,
            through,
            delivered,
            "publications that never arrived live were delivered from the history"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(10);

    #[test]
    fn a_room_is_caught_up_only_with_what_was_missing_a_grace_ago() {
        let mut behind = Behind::default();
        let room = RoomId::from("r");
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        // Up to date.
        assert_eq!(behind.judge(&room, 5, 5, at(0), GRACE), None);
        // Behind: maybe in flight, so wait.
        assert_eq!(behind.judge(&room, 5, 7, at(0), GRACE), None);
        // Arrived meanwhile: nothing to do, and forgotten.
        assert_eq!(behind.judge(&room, 7, 7, at(10), GRACE), None);
        assert_eq!(behind.judge(&room, 7, 8, at(20), GRACE), None);
        // A pass that comes too soon (the one before ran long) waits for the grace.
        assert_eq!(behind.judge(&room, 7, 9, at(21), GRACE), None);
        // Still missing a grace later: deliver what was missing then (8), not what is newer.
        assert_eq!(behind.judge(&room, 7, 9, at(30), GRACE), Some((7, 8)));
        // 9 was newer: it gets its own grace.
        assert_eq!(behind.judge(&room, 8, 9, at(35), GRACE), None);
        assert_eq!(behind.judge(&room, 8, 9, at(40), GRACE), Some((8, 9)));
        assert_eq!(behind.judge(&room, 9, 9, at(50), GRACE), None);
        // Half arrived: only the rest.
        assert_eq!(behind.judge(&room, 9, 12, at(60), GRACE), None);
        assert_eq!(behind.judge(&room, 10, 12, at(70), GRACE), Some((10, 12)));
        // A history that was reset (lower offsets) is never "behind".
        assert_eq!(behind.judge(&room, 12, 3, at(80), GRACE), None);
        assert_eq!(behind.judge(&room, 12, 3, at(90), GRACE), None);
    }

    #[test]
    fn rooms_without_members_are_forgotten() {
        let mut behind = Behind::default();
        let (a, b) = (RoomId::from("a"), RoomId::from("b"));
        let t0 = Instant::now();
        let later = t0 + GRACE;
        behind.judge(&a, 1, 2, t0, GRACE);
        behind.judge(&b, 1, 2, t0, GRACE);
        behind.retain(std::slice::from_ref(&b));
        assert_eq!(behind.judge(&a, 1, 2, later, GRACE), None);
        assert_eq!(behind.judge(&b, 1, 2, later, GRACE), Some((1, 2)));
        behind.forget(&b);
        assert_eq!(behind.judge(&b, 1, 2, later, GRACE), None);
    }

    #[test]
    fn the_sender_is_read_from_the_stored_data() {
        assert_eq!(
            sender_of(br#"{"content":"hi","sender_id":"a1"}"#).as_deref(),
            Some("a1")
        );
        assert_eq!(sender_of(br#"{"content":"hi"}"#), None);
        assert_eq!(sender_of(b"not json"), None);
    }
}

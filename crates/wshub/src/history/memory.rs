//! History in memory: one node only, lost when the process stops. Its epoch is random per
//! process start, so clients of a restarted node learn that they can't recover.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::BoxFuture;

use super::{Appended, HistoryError, HistoryStore, Position, Publication, Recovery};

pub struct MemoryHistory {
    epoch: String,
    size: usize,
    ttl: Duration,
    idempotency_window: Duration,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    rooms: HashMap<String, Ring>,
    /// (room, key) -> (offset, when)
    keys: HashMap<(String, String), (u64, Instant)>,
}

#[derive(Default)]
struct Ring {
    last: u64,
    entries: VecDeque<(Instant, Publication)>,
}

impl MemoryHistory {
    pub fn new(size: usize, ttl: Duration, idempotency_window: Duration) -> Self {
        MemoryHistory {
            epoch: uuid::Uuid::new_v4().simple().to_string()[..12].to_owned(),
            size,
            ttl,
            idempotency_window,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn expire(&self, ring: &mut Ring) {
        let now = Instant::now();
        while ring
            .entries
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > self.ttl)
        {
            ring.entries.pop_front();
        }
    }

    fn position(&self, offset: u64) -> Position {
        Position {
            offset,
            epoch: self.epoch.clone(),
        }
    }
}

impl HistoryStore for MemoryHistory {
    fn append<'a>(
        &'a self,
        room: &'a str,
        idempotency_key: Option<&'a str>,
        message_type: &'a str,
        data: Bytes,
    ) -> BoxFuture<'a, Result<Appended, HistoryError>> {
        let result = self
            .inner
            .lock()
            .map_err(|_| HistoryError::Unavailable("poisoned".into()))
            .map(|mut inner| {
                let now = Instant::now();
                if let Some(key) = idempotency_key {
                    let window = self.idempotency_window;
                    inner
                        .keys
                        .retain(|_, (_, at)| now.duration_since(*at) <= window);
                    if let Some((offset, _)) = inner.keys.get(&(room.to_owned(), key.to_owned())) {
                        return Appended {
                            position: self.position(*offset),
                            duplicate: true,
                        };
                    }
                }
                let ring = inner.rooms.entry(room.to_owned()).or_default();
                ring.last += 1;
                let offset = ring.last;
                ring.entries.push_back((
                    now,
                    Publication {
                        offset,
                        message_type: message_type.to_owned(),
                        data,
                    },
                ));
                while ring.entries.len() > self.size.max(1) {
                    ring.entries.pop_front();
                }
                if let Some(key) = idempotency_key {
                    inner
                        .keys
                        .insert((room.to_owned(), key.to_owned()), (offset, now));
                }
                Appended {
                    position: self.position(offset),
                    duplicate: false,
                }
            });
        Box::pin(async move { result })
    }

    fn recover<'a>(
        &'a self,
        room: &'a str,
        offset: u64,
        epoch: &'a str,
    ) -> BoxFuture<'a, Result<Recovery, HistoryError>> {
        let result = self
            .inner
            .lock()
            .map_err(|_| HistoryError::Unavailable("poisoned".into()))
            .map(|mut inner| {
                let impossible = Recovery::Impossible {
                    epoch: self.epoch.clone(),
                };
                if epoch != self.epoch {
                    return impossible;
                }
                let ring = inner.rooms.entry(room.to_owned()).or_default();
                self.expire(ring);
                if offset > ring.last {
                    return impossible;
                }
                // Everything after `offset` must still be here: the first kept entry must be
                // at most offset + 1 (or nothing was published since).
                let first_kept = ring
                    .entries
                    .front()
                    .map_or(ring.last + 1, |(_, p)| p.offset);
                if offset < ring.last && first_kept > offset + 1 {
                    return impossible;
                }
                Recovery::Complete {
                    epoch: self.epoch.clone(),
                    publications: ring
                        .entries
                        .iter()
                        .filter(|(_, p)| p.offset > offset)
                        .map(|(_, p)| p.clone())
                        .collect(),
                }
            });
        Box::pin(async move { result })
    }

    fn latest<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<Position, HistoryError>> {
        let result = self
            .inner
            .lock()
            .map_err(|_| HistoryError::Unavailable("poisoned".into()))
            .map(|inner| self.position(inner.rooms.get(room).map_or(0, |r| r.last)));
        Box::pin(async move { result })
    }

    fn read<'a>(
        &'a self,
        room: &'a str,
        offset: Option<u64>,
        limit: usize,
    ) -> BoxFuture<'a, Result<(String, Vec<Publication>), HistoryError>> {
        let result = self
            .inner
            .lock()
            .map_err(|_| HistoryError::Unavailable("poisoned".into()))
            .map(|mut inner| {
                let ring = inner.rooms.entry(room.to_owned()).or_default();
                self.expire(ring);
                let after = offset.unwrap_or(0);
                (
                    self.epoch.clone(),
                    ring.entries
                        .iter()
                        .filter(|(_, p)| p.offset > after)
                        .take(limit)
                        .map(|(_, p)| p.clone())
                        .collect(),
                )
            });
        Box::pin(async move { result })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<T>(f: BoxFuture<'_, T>) -> T {
        futures_util::FutureExt::now_or_never(f).unwrap()
    }

    #[test]
    fn offsets_recovery_window_and_idempotency() {
        let h = MemoryHistory::new(3, Duration::from_secs(60), Duration::from_secs(60));
        let add = |k: Option<&str>| {
            run(h.append("r", k, "room_message", Bytes::from_static(b"{}"))).unwrap()
        };
        let a = add(None);
        assert_eq!(a.position.offset, 1);
        let epoch = a.position.epoch.clone();
        assert_eq!(add(Some("k")).position.offset, 2);
        let again = add(Some("k"));
        assert!(again.duplicate);
        assert_eq!(again.position.offset, 2);
        add(None);
        add(None); // offsets 1..=4, ring keeps 2..=4
        match run(h.recover("r", 1, &epoch)).unwrap() {
            Recovery::Complete { publications, .. } => {
                assert_eq!(
                    publications.iter().map(|p| p.offset).collect::<Vec<_>>(),
                    vec![2, 3, 4]
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            run(h.recover("r", 0, &epoch)).unwrap(),
            Recovery::Impossible { .. }
        ));
        assert!(matches!(
            run(h.recover("r", 2, "other")).unwrap(),
            Recovery::Impossible { .. }
        ));
        assert!(matches!(
            run(h.recover("r", 9, &epoch)).unwrap(),
            Recovery::Impossible { .. }
        ));
        match run(h.recover("r", 4, &epoch)).unwrap() {
            Recovery::Complete { publications, .. } => assert!(publications.is_empty()),
            other => panic!("{other:?}"),
        }
    }
}

//! Cluster state in NATS JetStream key-value buckets.
//!
//! ```text
//! {b}_rooms     r.{room}                      -> RoomRecord
//! {b}_members   m.{room}.{client}             -> Membership (member + slot)
//!               s.{room}.{i}                  -> claimed slot i of a room with max_clients
//! {b}_clients   c.{client}                    -> node id
//!               n.{node}                      -> marker: the node holds state
//! {b}_nodes     {node}                        -> NodeRecord (bucket max_age = 2 x node_ttl)
//! ```
//!
//! Ids are base64url-encoded (KV keys allow only `[-/_=.a-zA-Z0-9]`). `max_clients` is exact
//! without a counter: a member of a limited room must first *create* one of the room's
//! `max_clients` slot keys, and KV create is atomic (it fails if the key exists), so exactly
//! `max_clients` creates can succeed cluster-wide. Listing scans the bucket's keys: fine for
//! thousands of members, not for millions (use Redis then).

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use base64::Engine;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::store::{
    JoinOutcome, MemberRecord, NodeRecord, RoomRecord, StateStore, StoreError, StoreResult, now_ms,
};
use crate::config::NatsConfig;

pub struct NatsStateStore {
    js: jetstream::Context,
    bucket: String,
    node_ttl: Duration,
    op_timeout: Duration,
    stores: tokio::sync::OnceCell<Buckets>,
}

struct Buckets {
    rooms: Bucket,
    members: Bucket,
    clients: Bucket,
    nodes: Bucket,
}

/// A KV bucket and the stream behind it (listing goes through the stream).
struct Bucket {
    kv: kv::Store,
    stream: jetstream::stream::Stream,
    name: String,
}

impl std::ops::Deref for Bucket {
    type Target = kv::Store;
    fn deref(&self) -> &kv::Store {
        &self.kv
    }
}

impl Bucket {
    /// `key`'s value and revision, unless it is absent or deleted (a KV delete or purge
    /// marker is an entry too).
    async fn live(&self, key: &str) -> StoreResult<Option<Live>> {
        Ok(self
            .entry(key.to_owned())
            .await
            .map_err(other)?
            .filter(|e| e.operation == kv::Operation::Put)
            .map(|e| Live {
                key: key.to_owned(),
                revision: e.revision,
                value: e.value,
            }))
    }

    /// Removes `key`: its messages up to `revision` (all of them without one). A newer value
    /// written meanwhile stays, so with the revision read this is a compare-and-delete.
    ///
    /// Unlike a KV delete or purge this leaves no marker: keys that come and go with every
    /// client (memberships, slots, client records) would each leave one for good, the stream
    /// would grow with every client id ever seen, and every listing would walk them.
    async fn remove(&self, key: &str, revision: Option<u64>) -> StoreResult<()> {
        let purge = self
            .stream
            .purge()
            .filter(format!("$KV.{}.{key}", self.name));
        match revision {
            Some(r) => purge.sequence(r + 1).await,
            None => purge.await,
        }
        .map(|_| ())
        .map_err(other)
    }
}

/// A key's current value and its revision.
struct Live {
    key: String,
    revision: u64,
    value: Bytes,
}

#[derive(Serialize, Deserialize)]
struct Membership {
    member: MemberRecord,
    slot: Option<u32>,
}

fn enc(s: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

fn dec(s: &str) -> Option<String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
}

fn other(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn parse<T: serde::de::DeserializeOwned>(b: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(b).map_err(|e| StoreError::Other(format!("bad record: {e}")))
}

fn bytes<T: Serialize>(v: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

impl NatsStateStore {
    pub(crate) fn new(client: async_nats::Client, cfg: &NatsConfig, node_ttl: Duration) -> Self {
        let bucket: String = cfg
            .subject_prefix
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect::<String>()
            .trim_matches('_')
            .to_owned();
        NatsStateStore {
            js: jetstream::new(client),
            bucket: if bucket.is_empty() {
                "wshub".into()
            } else {
                bucket
            },
            node_ttl,
            // A state operation is several KV round trips (a scan for listings): it gets more
            // time than one publish.
            op_timeout: (cfg.op_timeout * 4).max(Duration::from_secs(5)),
            stores: tokio::sync::OnceCell::new(),
        }
    }

    /// The buckets, created on first use (the broker may be down when the node starts).
    async fn buckets(&self) -> StoreResult<&Buckets> {
        self.stores
            .get_or_try_init(|| async {
                // A KV bucket is a stream `KV_<bucket>` on `$KV.<bucket>.>` keeping one message
                // per key. It is created here as that stream rather than with
                // `create_key_value`, which first reads the account info in a shape Debian's
                // nats-server 2.9 does not send; `get_key_value` then opens it as a bucket.
                // Several nodes may race to create it: `get_or_create_stream` tolerates that.
                let open = |name: &str, max_age: Duration| {
                    let bucket = format!("{}_{name}", self.bucket);
                    let config = jetstream::stream::Config {
                        name: format!("KV_{bucket}"),
                        subjects: vec![format!("$KV.{bucket}.>")],
                        max_messages_per_subject: 1,
                        max_age,
                        discard: jetstream::stream::DiscardPolicy::New,
                        allow_rollup: true,
                        deny_delete: true,
                        allow_direct: true,
                        duplicate_window: Duration::from_secs(120).min(if max_age.is_zero() {
                            Duration::from_secs(120)
                        } else {
                            max_age
                        }),
                        storage: jetstream::stream::StorageType::File,
                        ..Default::default()
                    };
                    async move {
                        let stream = self.js.get_or_create_stream(config).await.map_err(other)?;
                        let kv = self.js.get_key_value(bucket.clone()).await.map_err(other)?;
                        Ok::<_, StoreError>(Bucket {
                            kv,
                            stream,
                            name: bucket,
                        })
                    }
                };
                Ok(Buckets {
                    rooms: open("rooms", Duration::ZERO).await?,
                    members: open("members", Duration::ZERO).await?,
                    clients: open("clients", Duration::ZERO).await?,
                    nodes: open("nodes", self.node_ttl * 2).await?,
                })
            })
            .await
    }

    async fn timed<T>(
        &self,
        f: impl std::future::Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        tokio::time::timeout(self.op_timeout, f)
            .await
            .map_err(|_| StoreError::Timeout)?
    }

    /// Keys starting with `prefix` (which ends with `.`, or is empty), live or deleted.
    ///
    /// Listed from the stream's subjects with a server-side filter rather than with
    /// `kv::Store::keys`, which in async-nats 0.42 can wait forever when the newest message is
    /// a delete marker. Deleted keys still have a marker subject: `get` tells them apart.
    async fn keys(bucket: &Bucket, prefix: &str) -> StoreResult<Vec<String>> {
        let root = format!("$KV.{}.", bucket.name);
        let stream = bucket.stream.clone();
        let mut subjects = stream
            .info_with_subjects(format!("{root}{prefix}>"))
            .await
            .map_err(other)?;
        let mut keys = Vec::new();
        while let Some(item) = subjects.next().await {
            let (subject, _) = item.map_err(other)?;
            if let Some(key) = subject.strip_prefix(&root) {
                keys.push(key.to_owned());
            }
        }
        Ok(keys)
    }

    /// Live keys starting with `prefix`, their values and revisions: one read per key.
    async fn entries(bucket: &Bucket, prefix: &str) -> StoreResult<Vec<Live>> {
        let mut out = Vec::new();
        for key in Self::keys(bucket, prefix).await? {
            out.extend(bucket.live(&key).await?);
        }
        Ok(out)
    }

    /// Whether any key starting with `prefix` is live: reads stop at the first one.
    async fn any_live(bucket: &Bucket, prefix: &str) -> StoreResult<bool> {
        for key in Self::keys(bucket, prefix).await? {
            if bucket.get(key).await.map_err(other)?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Memberships (of one room, or all) with their keys and revisions.
    async fn memberships(&self, room: Option<&str>) -> StoreResult<Vec<(Live, Membership)>> {
        let b = self.buckets().await?;
        let prefix = match room {
            Some(r) => format!("m.{}.", enc(r)),
            None => "m.".into(),
        };
        Self::entries(&b.members, &prefix)
            .await?
            .into_iter()
            .map(|live| {
                let m = parse(&live.value)?;
                Ok((live, m))
            })
            .collect()
    }

    // Deleting an empty auto-created room, in steps (`delete_room_if_empty`; the unit tests
    // interleave a join between them). First the record is marked, then the members are
    // counted, then it is purged expecting the mark's revision: a join that created its
    // membership before the mark is counted; one after it sees the mark and clears it (see
    // `join`), which makes the purge fail.

    /// Marks the room's record `deleting`; the mark's revision and the record as it was, or
    /// `None` if there is nothing to delete (gone, not auto-created, or changed meanwhile).
    async fn mark_for_deletion(&self, id: &str) -> StoreResult<Option<(u64, StoredRoom)>> {
        let b = self.buckets().await?;
        let Some(entry) = b.rooms.live(&format!("r.{}", enc(id))).await? else {
            return Ok(None);
        };
        let stored: StoredRoom = parse(&entry.value)?;
        if !stored.record.auto_created {
            return Ok(None);
        }
        let marked = StoredRoom {
            deleting: true,
            ..stored.clone()
        };
        Ok(b.rooms
            .update(entry.key, bytes(&marked), entry.revision)
            .await
            .ok()
            .map(|revision| (revision, stored)))
    }

    /// No member is left in the room.
    async fn members_gone(&self, id: &str) -> StoreResult<bool> {
        let b = self.buckets().await?;
        Ok(!Self::any_live(&b.members, &format!("m.{}.", enc(id))).await?)
    }

    /// Takes the mark back (unless a join already cleared it).
    async fn unmark(&self, id: &str, (revision, stored): (u64, StoredRoom)) -> StoreResult<()> {
        let b = self.buckets().await?;
        let _ = b
            .rooms
            .update(format!("r.{}", enc(id)), bytes(&stored), revision)
            .await;
        Ok(())
    }

    /// Deletes the marked record; false if a join cleared the mark since.
    async fn purge_marked(&self, id: &str, (revision, _): (u64, StoredRoom)) -> StoreResult<bool> {
        let b = self.buckets().await?;
        Ok(b.rooms
            .purge_expect_revision(format!("r.{}", enc(id)), Some(revision))
            .await
            .is_ok())
    }

    /// Purges a room's record, read as `seen`; false if another deletion got there first.
    ///
    /// Only one deleter wins the revision check. A revision that moved on without a deletion
    /// is no reason to give up, though: an empty-room check on another node marks and unmarks
    /// the record, and a join clears a mark, while the room stays. Then the record is read
    /// again and the purge retried (the caller's time limit bounds the retries).
    async fn purge_room(&self, mut seen: Live) -> StoreResult<bool> {
        let b = self.buckets().await?;
        loop {
            match b
                .rooms
                .purge_expect_revision(&seen.key, Some(seen.revision))
                .await
            {
                Ok(()) => return Ok(true),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    match b.rooms.live(&seen.key).await? {
                        Some(now) => seen = now,
                        None => return Ok(false),
                    }
                }
                Err(e) => return Err(other(e)),
            }
        }
    }

    /// Removes a membership as read (a newer one under the same key stays), and its slot.
    async fn drop_membership(
        &self,
        key: &str,
        revision: u64,
        room_enc: &str,
        slot: Option<u32>,
    ) -> StoreResult<()> {
        let b = self.buckets().await?;
        b.members.remove(key, Some(revision)).await?;
        if let Some(slot) = slot {
            b.members
                .remove(&format!("s.{room_enc}.{slot}"), None)
                .await?;
        }
        Ok(())
    }
}

/// A room record as this store keeps it: the record, and the mark an empty-room deletion puts
/// on it while it checks the members (readers that parse a plain [`RoomRecord`] ignore it).
#[derive(Clone, Serialize, Deserialize)]
struct StoredRoom {
    #[serde(flatten)]
    record: RoomRecord,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    deleting: bool,
}

impl StateStore for NatsStateStore {
    fn create_room(&self, room: RoomRecord) -> BoxFuture<'_, StoreResult<bool>> {
        Box::pin(self.timed(async move {
            let b = self.buckets().await?;
            match b
                .rooms
                .create(format!("r.{}", enc(&room.id)), bytes(&room))
                .await
            {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(other(e)),
            }
        }))
    }

    fn room(&self, id: &str) -> BoxFuture<'_, StoreResult<Option<RoomRecord>>> {
        let id = id.to_owned();
        Box::pin(self.timed(async move {
            let b = self.buckets().await?;
            match b
                .rooms
                .get(format!("r.{}", enc(&id)))
                .await
                .map_err(other)?
            {
                Some(v) => Ok(Some(parse(&v)?)),
                None => Ok(None),
            }
        }))
    }

    fn rooms(&self) -> BoxFuture<'_, StoreResult<Vec<RoomRecord>>> {
        Box::pin(self.timed(async move {
            let b = self.buckets().await?;
            let mut rooms = Self::entries(&b.rooms, "r.")
                .await?
                .iter()
                .map(|live| parse::<RoomRecord>(&live.value))
                .collect::<StoreResult<Vec<_>>>()?;
            rooms.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(rooms)
        }))
    }

    fn delete_room(&self, id: &str) -> BoxFuture<'_, StoreResult<Option<Vec<MemberRecord>>>> {
        let id = id.to_owned();
        Box::pin(self.timed(async move {
            let b = self.buckets().await?;
            let Some(entry) = b.rooms.live(&format!("r.{}", enc(&id))).await? else {
                return Ok(None);
            };
            if !self.purge_room(entry).await? {
                return Ok(None);
            }
            let mut members = Vec::new();
            for (live, m) in self.memberships(Some(&id)).await? {
                self.drop_membership(&live.key, live.revision, &enc(&id), m.slot)
                    .await?;
                members.push(m.member);
            }
            Ok(Some(members))
        }))
    }

    fn delete_room_if_empty(&self, id: &str) -> BoxFuture<'_, StoreResult<bool>> {
        let id = id.to_owned();
        Box::pin(self.timed(async move {
            let Some(mark) = self.mark_for_deletion(&id).await? else {
                return Ok(false);
            };
            if !self.members_gone(&id).await? {
                self.unmark(&id, mark).await?;
                return Ok(false);
            }
            self.purge_marked(&id, mark).await
        }))
    }

    fn join<'a>(
        &'a self,
        room: &'a RoomRecord,
        member: MemberRecord,
    ) -> BoxFuture<'a, StoreResult<JoinOutcome>> {
        let max_clients = room.max_clients;
        Box::pin(self.timed(async move {
            let b = self.buckets().await?;
            let room_enc = enc(&room.id);
            let key = format!("m.{room_enc}.{}", enc(&member.client_id));
            if b.members.get(key.clone()).await.map_err(other)?.is_some() {
                return Ok(JoinOutcome::AlreadyMember);
            }
            let mut slot = None;
            if max_clients > 0 {
                for i in 0..max_clients {
                    match b
                        .members
                        .create(format!("s.{room_enc}.{i}"), bytes(&member))
                        .await
                    {
                        Ok(_) => {
                            slot = Some(i);
                            break;
                        }
                        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => continue,
                        Err(e) => return Err(other(e)),
                    }
                }
                if slot.is_none() {
                    return Ok(JoinOutcome::Full);
                }
            }
            let record = Membership {
                member: member.clone(),
                slot,
            };
            match b.members.create(key, bytes(&record)).await {
                Ok(_) => {}
                Err(e) => {
                    if let Some(i) = slot {
                        let _ = b.members.remove(&format!("s.{room_enc}.{i}"), None).await;
                    }
                    return if e.kind() == kv::CreateErrorKind::AlreadyExists {
                        Ok(JoinOutcome::AlreadyMember)
                    } else {
                        Err(other(e))
                    };
                }
            }
            b.clients
                .put(format!("n.{}", enc(&member.node_id)), Bytes::new())
                .await
                .map_err(other)?;
            // The room must exist, and not be on its way out, once our membership does. In the
            // common case that is one read: an empty-room deletion first marks the record
            // (`deleting`) and only then looks at the members, so either it sees ours and backs
            // off, or we see its mark here and clear it (compare-and-set), which makes its purge
            // fail; if the purge went through first, the room is recreated here. (Every join
            // used to write the record with a compare-and-set: joins into one room serialised
            // on that key, and 10,000 at once timed out.)
            let room_key = format!("r.{room_enc}");
            loop {
                match b.rooms.live(&room_key).await? {
                    Some(e) => {
                        let stored: StoredRoom = parse(&e.value)?;
                        if !stored.deleting {
                            break;
                        }
                        let live = StoredRoom {
                            deleting: false,
                            ..stored
                        };
                        if b.rooms
                            .update(room_key.clone(), bytes(&live), e.revision)
                            .await
                            .is_ok()
                        {
                            break;
                        }
                    }
                    None => {
                        if b.rooms.create(room_key.clone(), bytes(room)).await.is_ok() {
                            break;
                        }
                    }
                }
            }
            Ok(JoinOutcome::Joined)
        }))
    }

    fn leave(&self, room: &str, client: &str, node: &str) -> BoxFuture<'_, StoreResult<bool>> {
        let (room, client, node) = (room.to_owned(), client.to_owned(), node.to_owned());
        Box::pin(self.timed(async move {
            let b = self.buckets().await?;
            let room_enc = enc(&room);
            let key = format!("m.{room_enc}.{}", enc(&client));
            let Some(entry) = b.members.live(&key).await? else {
                return Ok(false);
            };
            let m: Membership = parse(&entry.value)?;
            if m.member.node_id != node {
                return Ok(false);
            }
            self.drop_membership(&key, entry.revision, &room_enc, m.slot)
                .await?;
            Ok(true)
        }))
    }

    fn members(&self, room: &str) -> BoxFuture<'_, StoreResult<Vec<MemberRecord>>> {
        let room = room.to_owned();
        Box::pin(self.timed(async move {
            let mut v: Vec<MemberRecord> = self
                .memberships(Some(&room))
                .await?
                .into_iter()
                .map(|(_, m)| m.member)
                .collect();
            v.sort_by(|a, b| a.client_id.cmp(&b.client_id));
            Ok(v)
        }))
    }

    fn member_count(&self, room: &str) -> BoxFuture<'_, StoreResult<usize>> {
        let room = room.to_owned();
        Box::pin(self.timed(async move {
            let b = self.buckets().await?;
            Ok(Self::entries(&b.members, &format!("m.{}.", enc(&room)))
                .await?
                .len())
        }))
    }

    fn register_client(
        &self,
        client: &str,
        node: &str,
    ) -> BoxFuture<'_, StoreResult<Option<String>>> {
        let (client, node) = (client.to_owned(), node.to_owned());
        Box::pin(self.timed(async move {
            let b = self.buckets().await?;
            let key = format!("c.{}", enc(&client));
            let prev = b
                .clients
                .get(key.clone())
                .await
                .map_err(other)?
                .map(|v| String::from_utf8_lossy(&v).into_owned());
            b.clients
                .put(key, Bytes::from(node.clone()))
                .await
                .map_err(other)?;
            b.clients
                .put(format!("n.{}", enc(&node)), Bytes::new())
                .await
                .map_err(other)?;
            Ok(prev.filter(|p| *p != node))
        }))
    }

    fn unregister_client(&self, client: &str, node: &str) -> BoxFuture<'_, StoreResult<()>> {
        let (client, node) = (client.to_owned(), node.to_owned());
        Box::pin(self.timed(async move {
            let b = self.buckets().await?;
            let key = format!("c.{}", enc(&client));
            if let Some(entry) = b.clients.live(&key).await?
                && entry.value.as_ref() == node.as_bytes()
            {
                // Compare-and-delete: a newer registration elsewhere is kept.
                b.clients.remove(&key, Some(entry.revision)).await?;
            }
            Ok(())
        }))
    }

    fn client_node(&self, client: &str) -> BoxFuture<'_, StoreResult<Option<String>>> {
        let client = client.to_owned();
        Box::pin(self.timed(async move {
            let b = self.buckets().await?;
            Ok(b.clients
                .get(format!("c.{}", enc(&client)))
                .await
                .map_err(other)?
                .map(|v| String::from_utf8_lossy(&v).into_owned()))
        }))
    }

    fn heartbeat(&self, node: NodeRecord, _ttl: Duration) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(self.timed(async move {
            let b = self.buckets().await?;
            b.nodes
                .put(enc(&node.node_id), bytes(&node))
                .await
                .map_err(other)?;
            Ok(())
        }))
    }

    fn nodes(&self, ttl: Duration) -> BoxFuture<'_, StoreResult<Vec<NodeRecord>>> {
        Box::pin(self.timed(async move {
            let b = self.buckets().await?;
            let cutoff = now_ms() - ttl.as_millis() as i64;
            let mut out: Vec<NodeRecord> = Self::entries(&b.nodes, "")
                .await?
                .iter()
                .filter_map(|live| parse::<NodeRecord>(&live.value).ok())
                .filter(|n| n.heartbeat_at_ms >= cutoff)
                .collect();
            out.sort_by(|a, b| a.node_id.cmp(&b.node_id));
            Ok(out)
        }))
    }

    fn remove_node(&self, node: &str) -> BoxFuture<'_, StoreResult<Vec<(String, MemberRecord)>>> {
        let node = node.to_owned();
        Box::pin(async move {
            let b = self.buckets().await?;
            let _ = b.nodes.purge(enc(&node)).await;
            for live in Self::entries(&b.clients, "c.").await? {
                if live.value.as_ref() == node.as_bytes() {
                    // A registration since then (on another node) is kept.
                    b.clients.remove(&live.key, Some(live.revision)).await?;
                }
            }
            let mut removed = Vec::new();
            for (live, m) in self.memberships(None).await? {
                if m.member.node_id != node {
                    continue;
                }
                let room_enc = live.key.split('.').nth(1).unwrap_or_default().to_owned();
                self.drop_membership(&live.key, live.revision, &room_enc, m.slot)
                    .await?;
                if let Some(room) = dec(&room_enc) {
                    removed.push((room, m.member));
                }
            }
            b.clients.remove(&format!("n.{}", enc(&node)), None).await?;
            Ok(removed)
        })
    }

    fn nodes_with_state(&self) -> BoxFuture<'_, StoreResult<Vec<String>>> {
        Box::pin(self.timed(async move {
            let b = self.buckets().await?;
            let mut v: Vec<String> = Self::entries(&b.clients, "n.")
                .await?
                .iter()
                .filter_map(|live| dec(&live.key[2..]))
                .collect();
            v.sort();
            Ok(v)
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::process::{Child, Command, Stdio};

    use super::*;

    /// A nats-server with JetStream on a free port, killed on drop.
    struct NatsServer {
        child: Child,
        port: u16,
        _dir: tempfile::TempDir,
    }

    impl NatsServer {
        async fn start() -> Option<Self> {
            let dir = tempfile::tempdir().ok()?;
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .ok()?
                .local_addr()
                .ok()?
                .port();
            let child = Command::new("nats-server")
                .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
                .arg(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .ok()?;
            let server = NatsServer {
                child,
                port,
                _dir: dir,
            };
            for _ in 0..100 {
                if tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
                {
                    return Some(server);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            None
        }
    }

    impl Drop for NatsServer {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// A store on a fresh nats-server (kept running while the server value lives).
    async fn store() -> (NatsServer, NatsStateStore) {
        let server = NatsServer::start()
            .await
            .expect("nats-server (scripts/test.sh installs it)");
        let client = async_nats::connect(format!("127.0.0.1:{}", server.port))
            .await
            .unwrap();
        let store = NatsStateStore::new(client, &NatsConfig::default(), Duration::from_secs(10));
        (server, store)
    }

    fn member(client: &str) -> MemberRecord {
        MemberRecord {
            client_id: client.into(),
            node_id: "node-a".into(),
            info: None,
        }
    }

    fn lobby(max_clients: u32, auto_created: bool) -> RoomRecord {
        RoomRecord {
            id: "lobby".into(),
            name: "lobby".into(),
            max_clients,
            auto_created,
        }
    }

    /// The interleaving that a join into a live room, being one read, must still survive: the
    /// deletion marked the record and counted no members, then a join lands, then the
    /// deletion purges. The join cleared the mark, so the purge fails and the room stays.
    #[tokio::test]
    async fn a_join_between_the_member_count_and_the_purge_keeps_the_room() {
        let (_server, store) = store().await;
        let room = lobby(0, true);
        assert_eq!(
            store.join(&room, member("first")).await.unwrap(),
            JoinOutcome::Joined
        );
        store.leave("lobby", "first", "node-a").await.unwrap();

        let mark = store.mark_for_deletion("lobby").await.unwrap().unwrap();
        assert!(store.members_gone("lobby").await.unwrap());
        assert_eq!(
            store.join(&room, member("second")).await.unwrap(),
            JoinOutcome::Joined
        );
        assert!(!store.purge_marked("lobby", mark).await.unwrap());
        assert_eq!(store.room("lobby").await.unwrap(), Some(room.clone()));
        let members = store.members("lobby").await.unwrap();
        assert_eq!(members.len(), 1);
        assert_eq!(members[0].client_id, "second");

        // Without a join in between, the deletion goes through.
        store.leave("lobby", "second", "node-a").await.unwrap();
        assert!(store.delete_room_if_empty("lobby").await.unwrap());
        assert_eq!(store.room("lobby").await.unwrap(), None);
    }

    /// An explicit deletion that read the record just before an empty-room check on another
    /// node marked it (and took the mark back, the room not being empty) still deletes it:
    /// the revision moved on, the room did not go.
    #[tokio::test]
    async fn a_deletion_survives_an_empty_room_check_in_between() {
        let (_server, store) = store().await;
        let room = lobby(0, true);
        store.create_room(room.clone()).await.unwrap();
        store.join(&room, member("a1")).await.unwrap();
        let b = store.buckets().await.unwrap();
        let seen = b.rooms.live(&format!("r.{}", enc("lobby"))).await.unwrap();

        assert!(!store.delete_room_if_empty("lobby").await.unwrap());
        assert_eq!(store.room("lobby").await.unwrap(), Some(room.clone()));
        assert!(store.purge_room(seen.unwrap()).await.unwrap());
        assert_eq!(store.room("lobby").await.unwrap(), None);

        // A deletion that really lost the race says so.
        store.create_room(room.clone()).await.unwrap();
        let seen = b.rooms.live(&format!("r.{}", enc("lobby"))).await.unwrap();
        assert!(store.delete_room("lobby").await.unwrap().is_some());
        assert!(!store.purge_room(seen.unwrap()).await.unwrap());
    }

    /// Clients that come and go leave nothing behind: no membership, slot or client record,
    /// and no delete marker either (a KV delete or purge leaves one per key for good). And a
    /// removal is a compare-and-delete: a registration that replaced the one read stays.
    #[tokio::test]
    async fn departed_clients_leave_no_keys_behind() {
        let (_server, store) = store().await;
        let room = lobby(5, false);
        store.create_room(room.clone()).await.unwrap();
        for i in 0..3 {
            let id = format!("c{i}");
            store.register_client(&id, "node-a").await.unwrap();
            assert_eq!(
                store.join(&room, member(&id)).await.unwrap(),
                JoinOutcome::Joined
            );
        }
        let b = store.buckets().await.unwrap();
        assert_eq!(
            NatsStateStore::keys(&b.members, "m.").await.unwrap().len(),
            3
        );
        assert_eq!(
            NatsStateStore::keys(&b.members, "s.").await.unwrap().len(),
            3
        );

        for i in 0..3 {
            let id = format!("c{i}");
            assert!(store.leave("lobby", &id, "node-a").await.unwrap());
            assert!(!store.leave("lobby", &id, "node-a").await.unwrap());
            store.unregister_client(&id, "node-a").await.unwrap();
        }
        assert_eq!(
            NatsStateStore::keys(&b.members, "").await.unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(
            NatsStateStore::keys(&b.clients, "c.").await.unwrap(),
            Vec::<String>::new()
        );
        // The slots are free again.
        for i in 0..5 {
            assert_eq!(
                store.join(&room, member(&format!("d{i}"))).await.unwrap(),
                JoinOutcome::Joined
            );
        }

        // c9 moved to node-b after node-a read its record: node-a's removal keeps node-b's.
        store.register_client("c9", "node-a").await.unwrap();
        let read = b
            .clients
            .entry(format!("c.{}", enc("c9")))
            .await
            .unwrap()
            .unwrap();
        store.register_client("c9", "node-b").await.unwrap();
        b.clients
            .remove(&read.key, Some(read.revision))
            .await
            .unwrap();
        assert_eq!(
            store.client_node("c9").await.unwrap().as_deref(),
            Some("node-b")
        );
    }
}

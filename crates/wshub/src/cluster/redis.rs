//! Cluster state in Redis: hashes, updated by Lua scripts so each operation is atomic.
//!
//! ```text
//! {prefix}rooms               hash  room id -> RoomRecord
//! {prefix}members:{room}      hash  client id -> MemberRecord
//! {prefix}noderooms:{node}    set   rooms where the node has (or had) members
//! {prefix}clients             hash  client id -> node id
//! {prefix}nodes               hash  node id -> NodeRecord (readers skip stale heartbeats)
//! {prefix}statenodes          set   node ids that hold clients or memberships
//! ```
//!
//! The prefix is `{<key_prefix>}`: braces make it a hash tag, so in Redis Cluster every key
//! lands in one slot and the multi-key scripts stay legal.

use std::time::Duration;

use fred::prelude::*;
use futures_util::future::BoxFuture;

use super::store::{
    JoinOutcome, MemberRecord, NodeRecord, RoomRecord, StateStore, StoreError, StoreResult, now_ms,
};
use crate::config::RedisConfig;

pub struct RedisStateStore {
    client: Client,
    prefix: String,
    op_timeout: Duration,
}

const JOIN: &str = r#"
redis.call('HSETNX', KEYS[4], ARGV[4], ARGV[6])
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 'already' end
local max = tonumber(ARGV[3])
if max > 0 and redis.call('HLEN', KEYS[1]) >= max then return 'full' end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[4])
redis.call('SADD', KEYS[3], ARGV[5])
return 'joined'
"#;

const LEAVE: &str = r#"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return -1 end
if cjson.decode(v)['node_id'] ~= ARGV[2] then return -1 end
return redis.call('HDEL', KEYS[1], ARGV[1])
"#;

/// KEYS: rooms, members:{room}; ARGV: room.
const DELETE_IF_EMPTY: &str = r#"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return 0 end
if not cjson.decode(v)['auto_created'] then return 0 end
if redis.call('HLEN', KEYS[2]) > 0 then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
"#;

const DELETE_ROOM: &str = r#"
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return false end
local members = redis.call('HVALS', KEYS[2])
redis.call('DEL', KEYS[2])
return cjson.encode(members)
"#;

const REGISTER: &str = r#"
local prev = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[2])
if prev and prev ~= ARGV[2] then return prev end
return false
"#;

const UNREGISTER: &str = r#"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then redis.call('HDEL', KEYS[1], ARGV[1]) end
return 1
"#;

/// KEYS: clients, nodes, noderooms:{node}, statenodes; ARGV: node, members-key prefix.
/// Returns a JSON list of [room, member] removed.
const REMOVE_NODE: &str = r#"
local node = ARGV[1]
redis.call('HDEL', KEYS[2], node)
local clients = redis.call('HGETALL', KEYS[1])
for i = 1, #clients, 2 do
  if clients[i + 1] == node then redis.call('HDEL', KEYS[1], clients[i]) end
end
local removed = {}
for _, room in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  local key = ARGV[2] .. room
  local members = redis.call('HGETALL', key)
  for i = 1, #members, 2 do
    if cjson.decode(members[i + 1])['node_id'] == node then
      redis.call('HDEL', key, members[i])
      table.insert(removed, {room, members[i + 1]})
    end
  end
end
redis.call('DEL', KEYS[3])
redis.call('SREM', KEYS[4], node)
if #removed == 0 then return '[]' end
return cjson.encode(removed)
"#;

fn err(e: fred::error::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn parse<T: serde::de::DeserializeOwned>(s: &str) -> StoreResult<T> {
    serde_json::from_str(s).map_err(|e| StoreError::Other(format!("bad record: {e}")))
}

impl RedisStateStore {
    pub(crate) async fn connect(cfg: &RedisConfig) -> StoreResult<RedisStateStore> {
        let config = crate::bus::redis_config(cfg).map_err(|e| StoreError::Other(e.to_string()))?;
        let max_delay = cfg.retry_interval.as_millis().max(1000) as u32;
        let mut builder = Builder::from_config(config);
        builder
            .set_policy(ReconnectPolicy::new_exponential(0, 100, max_delay, 2))
            .with_connection_config(|c| c.connection_timeout = cfg.dial_timeout)
            .with_performance_config(|p| p.default_command_timeout = cfg.op_timeout);
        let client = builder.build().map_err(err)?;
        drop(client.connect());
        // Give the first connection a moment, so the node registers itself at once; a Redis
        // that is down does not hold the start up for longer than this.
        let _ = tokio::time::timeout(
            cfg.dial_timeout.min(Duration::from_secs(2)),
            client.wait_for_connect(),
        )
        .await;
        Ok(RedisStateStore {
            client,
            prefix: format!("{{{}}}", cfg.key_prefix),
            op_timeout: cfg.op_timeout,
        })
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn members_key(&self, room: &str) -> String {
        format!("{}members:{room}", self.prefix)
    }

    async fn timed<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, fred::error::Error>>,
    ) -> StoreResult<T> {
        if !self.client.is_connected() {
            return Err(StoreError::Unavailable("not connected to Redis".into()));
        }
        tokio::time::timeout(self.op_timeout, f)
            .await
            .map_err(|_| StoreError::Timeout)?
            .map_err(err)
    }
}

impl StateStore for RedisStateStore {
    fn create_room(&self, room: RoomRecord) -> BoxFuture<'_, StoreResult<bool>> {
        Box::pin(async move {
            let key = self.key("rooms");
            let created: i64 = self
                .timed(self.client.hsetnx(key, room.id.clone(), json(&room)))
                .await?;
            Ok(created == 1)
        })
    }

    fn room(&self, id: &str) -> BoxFuture<'_, StoreResult<Option<RoomRecord>>> {
        let id = id.to_owned();
        Box::pin(async move {
            let v: Option<String> = self.timed(self.client.hget(self.key("rooms"), id)).await?;
            v.map(|s| parse(&s)).transpose()
        })
    }

    fn rooms(&self) -> BoxFuture<'_, StoreResult<Vec<RoomRecord>>> {
        Box::pin(async move {
            let vals: Vec<String> = self.timed(self.client.hvals(self.key("rooms"))).await?;
            let mut rooms = vals
                .iter()
                .map(|s| parse(s))
                .collect::<StoreResult<Vec<RoomRecord>>>()?;
            rooms.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(rooms)
        })
    }

    fn delete_room(&self, id: &str) -> BoxFuture<'_, StoreResult<Option<Vec<MemberRecord>>>> {
        let id = id.to_owned();
        Box::pin(async move {
            let keys = vec![self.key("rooms"), self.members_key(&id)];
            let v: Option<String> = self
                .timed(self.client.eval(DELETE_ROOM, keys, vec![id]))
                .await?;
            let Some(list) = v else { return Ok(None) };
            // An empty Lua table encodes as `{}`.
            let raw: Vec<String> = serde_json::from_str(&list).unwrap_or_default();
            Ok(Some(
                raw.iter().map(|s| parse(s)).collect::<StoreResult<_>>()?,
            ))
        })
    }

    fn delete_room_if_empty(&self, id: &str) -> BoxFuture<'_, StoreResult<bool>> {
        let id = id.to_owned();
        Box::pin(async move {
            let keys = vec![self.key("rooms"), self.members_key(&id)];
            let deleted: i64 = self
                .timed(self.client.eval(DELETE_IF_EMPTY, keys, vec![id]))
                .await?;
            Ok(deleted == 1)
        })
    }

    fn join<'a>(
        &'a self,
        room: &'a RoomRecord,
        member: MemberRecord,
    ) -> BoxFuture<'a, StoreResult<JoinOutcome>> {
        Box::pin(async move {
            // The room record is (re)created in the same script: a join can't land in a room
            // that an empty-room deletion removed a moment before.
            let keys = vec![
                self.members_key(&room.id),
                self.key(&format!("noderooms:{}", member.node_id)),
                self.key("statenodes"),
                self.key("rooms"),
            ];
            let args = vec![
                member.client_id.clone(),
                json(&member),
                room.max_clients.to_string(),
                room.id.clone(),
                member.node_id.clone(),
                json(room),
            ];
            let outcome: String = self.timed(self.client.eval(JOIN, keys, args)).await?;
            Ok(match outcome.as_str() {
                "joined" => JoinOutcome::Joined,
                "full" => JoinOutcome::Full,
                _ => JoinOutcome::AlreadyMember,
            })
        })
    }

    fn leave(&self, room: &str, client: &str, node: &str) -> BoxFuture<'_, StoreResult<bool>> {
        let (room, client, node) = (room.to_owned(), client.to_owned(), node.to_owned());
        Box::pin(async move {
            let removed: i64 = self
                .timed(
                    self.client
                        .eval(LEAVE, vec![self.members_key(&room)], vec![client, node]),
                )
                .await?;
            Ok(removed == 1)
        })
    }

    fn members(&self, room: &str) -> BoxFuture<'_, StoreResult<Vec<MemberRecord>>> {
        let room = room.to_owned();
        Box::pin(async move {
            let vals: Vec<String> = self
                .timed(self.client.hvals(self.members_key(&room)))
                .await?;
            let mut v = vals
                .iter()
                .map(|s| parse(s))
                .collect::<StoreResult<Vec<MemberRecord>>>()?;
            v.sort_by(|a, b| a.client_id.cmp(&b.client_id));
            Ok(v)
        })
    }

    fn member_count(&self, room: &str) -> BoxFuture<'_, StoreResult<usize>> {
        let room = room.to_owned();
        Box::pin(async move {
            let n: i64 = self
                .timed(self.client.hlen(self.members_key(&room)))
                .await?;
            Ok(n as usize)
        })
    }

    fn register_client(
        &self,
        client: &str,
        node: &str,
    ) -> BoxFuture<'_, StoreResult<Option<String>>> {
        let (client, node) = (client.to_owned(), node.to_owned());
        Box::pin(async move {
            let keys = vec![self.key("clients"), self.key("statenodes")];
            self.timed(self.client.eval(REGISTER, keys, vec![client, node]))
                .await
        })
    }

    fn unregister_client(&self, client: &str, node: &str) -> BoxFuture<'_, StoreResult<()>> {
        let (client, node) = (client.to_owned(), node.to_owned());
        Box::pin(async move {
            let _: i64 = self
                .timed(
                    self.client
                        .eval(UNREGISTER, vec![self.key("clients")], vec![client, node]),
                )
                .await?;
            Ok(())
        })
    }

    fn client_node(&self, client: &str) -> BoxFuture<'_, StoreResult<Option<String>>> {
        let client = client.to_owned();
        Box::pin(async move {
            self.timed(self.client.hget(self.key("clients"), client))
                .await
        })
    }

    fn heartbeat(&self, node: NodeRecord, _ttl: Duration) -> BoxFuture<'_, StoreResult<()>> {
        Box::pin(async move {
            let _: i64 = self
                .timed(
                    self.client
                        .hset(self.key("nodes"), (node.node_id.clone(), json(&node))),
                )
                .await?;
            Ok(())
        })
    }

    fn nodes(&self, ttl: Duration) -> BoxFuture<'_, StoreResult<Vec<NodeRecord>>> {
        Box::pin(async move {
            let vals: Vec<String> = self.timed(self.client.hvals(self.key("nodes"))).await?;
            let cutoff = now_ms() - ttl.as_millis() as i64;
            let mut v: Vec<NodeRecord> = vals
                .iter()
                .filter_map(|s| parse::<NodeRecord>(s).ok())
                .filter(|n| n.heartbeat_at_ms >= cutoff)
                .collect();
            v.sort_by(|a, b| a.node_id.cmp(&b.node_id));
            Ok(v)
        })
    }

    fn remove_node(&self, node: &str) -> BoxFuture<'_, StoreResult<Vec<(String, MemberRecord)>>> {
        let node = node.to_owned();
        Box::pin(async move {
            let keys = vec![
                self.key("clients"),
                self.key("nodes"),
                self.key(&format!("noderooms:{node}")),
                self.key("statenodes"),
            ];
            let args = vec![node, self.members_key("")];
            let list: String = self
                .timed(self.client.eval(REMOVE_NODE, keys, args))
                .await?;
            let raw: Vec<(String, String)> = serde_json::from_str(&list).unwrap_or_default();
            raw.into_iter()
                .map(|(room, m)| Ok((room, parse(&m)?)))
                .collect()
        })
    }

    fn nodes_with_state(&self) -> BoxFuture<'_, StoreResult<Vec<String>>> {
        Box::pin(async move {
            let mut v: Vec<String> = self
                .timed(self.client.smembers(self.key("statenodes")))
                .await?;
            v.sort();
            Ok(v)
        })
    }
}

//! History in Redis Streams: one stream per room (`{prefix}hist:{room}`), trimmed to
//! `rooms.history.size` entries; offsets come from a per-room counter incremented in the same
//! script as the append, so they are contiguous and shared by every node. The epoch is a
//! random id stored beside them; all three expire together `rooms.history.ttl` after the
//! room's last publication, and a room that comes back gets a new epoch.

use std::time::Duration;

use bytes::Bytes;
use fred::prelude::*;
use futures_util::future::BoxFuture;

use super::{Appended, HistoryError, HistoryStore, Position, Publication, Recovery};
use crate::config::RedisConfig;

pub struct RedisHistory {
    client: Client,
    prefix: String,
    size: usize,
    ttl: Duration,
    idempotency_window: Duration,
    op_timeout: Duration,
}

/// KEYS: stream, counter, epoch, idempotency key.
/// ARGV: size, ttl ms, message type, data, idempotency window ms, new epoch, use key (1/0).
const APPEND: &str = r#"
local epoch = redis.call('GET', KEYS[3])
if not epoch then
  epoch = ARGV[6]
  redis.call('SET', KEYS[3], epoch)
end
if ARGV[7] == '1' then
  local prev = redis.call('GET', KEYS[4])
  if prev then return {tonumber(prev), epoch, 1} end
end
local off = redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[1], off .. '-1', 't', ARGV[3], 'd', ARGV[4])
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
if ARGV[7] == '1' then redis.call('SET', KEYS[4], off, 'PX', ARGV[5]) end
return {off, epoch, 0}
"#;

/// KEYS: counter, epoch; ARGV: new epoch. Returns {latest, epoch}.
const LATEST: &str = r#"
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  redis.call('SET', KEYS[2], ARGV[1], 'NX')
  epoch = redis.call('GET', KEYS[2])
end
return {tonumber(redis.call('GET', KEYS[1]) or '0'), epoch}
"#;

fn unavailable(e: impl std::fmt::Display) -> HistoryError {
    HistoryError::Unavailable(e.to_string())
}

type Entries = Vec<(String, Vec<(String, Bytes)>)>;

impl RedisHistory {
    pub(crate) async fn connect(
        cfg: &RedisConfig,
        size: usize,
        ttl: Duration,
        idempotency_window: Duration,
    ) -> Result<RedisHistory, HistoryError> {
        let config = crate::bus::redis_config(cfg).map_err(unavailable)?;
        let mut builder = Builder::from_config(config);
        builder
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 2000, 2))
            .with_connection_config(|c| c.connection_timeout = cfg.dial_timeout)
            .with_performance_config(|p| p.default_command_timeout = cfg.op_timeout);
        let client = builder.build().map_err(unavailable)?;
        drop(client.connect());
        let _ = tokio::time::timeout(
            cfg.dial_timeout.min(Duration::from_secs(2)),
            client.wait_for_connect(),
        )
        .await;
        Ok(RedisHistory {
            client,
            prefix: format!("{{{}}}", cfg.key_prefix),
            size,
            ttl,
            idempotency_window,
            op_timeout: cfg.op_timeout.max(Duration::from_secs(2)),
        })
    }

    fn keys(&self, room: &str) -> [String; 3] {
        [
            format!("{}hist:{room}", self.prefix),
            format!("{}histseq:{room}", self.prefix),
            format!("{}histepoch:{room}", self.prefix),
        ]
    }

    async fn timed<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, fred::error::Error>>,
    ) -> Result<T, HistoryError> {
        tokio::time::timeout(self.op_timeout, f)
            .await
            .map_err(|_| HistoryError::Unavailable("Redis timed out".into()))?
            .map_err(unavailable)
    }

    async fn range(
        &self,
        room: &str,
        after: u64,
        count: Option<usize>,
    ) -> Result<Vec<Publication>, HistoryError> {
        let [stream, ..] = self.keys(room);
        let start = format!("{}-1", after + 1);
        let entries: Entries = self
            .timed(
                self.client
                    .xrange(stream, start, "+", count.map(|c| c as u64)),
            )
            .await?;
        Ok(entries
            .into_iter()
            .filter_map(|(id, fields)| {
                let offset = id.split('-').next()?.parse().ok()?;
                let mut message_type = String::new();
                let mut data = Bytes::new();
                for (k, v) in fields {
                    match k.as_str() {
                        "t" => message_type = String::from_utf8_lossy(&v).into_owned(),
                        "d" => data = v,
                        _ => {}
                    }
                }
                Some(Publication {
                    offset,
                    message_type,
                    data,
                })
            })
            .collect())
    }
}

fn new_epoch() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

impl HistoryStore for RedisHistory {
    fn append<'a>(
        &'a self,
        room: &'a str,
        idempotency_key: Option<&'a str>,
        message_type: &'a str,
        data: Bytes,
    ) -> BoxFuture<'a, Result<Appended, HistoryError>> {
        Box::pin(async move {
            let [stream, counter, epoch] = self.keys(room);
            let idem = format!(
                "{}idem:{room}:{}",
                self.prefix,
                idempotency_key.unwrap_or_default()
            );
            let args: Vec<Value> = vec![
                Value::from(self.size.max(1) as i64),
                Value::from(self.ttl.as_millis() as i64),
                Value::from(message_type),
                Value::Bytes(data),
                Value::from(self.idempotency_window.as_millis() as i64),
                Value::from(new_epoch()),
                Value::from(if idempotency_key.is_some() { "1" } else { "0" }),
            ];
            let (offset, epoch, duplicate): (u64, String, i64) = self
                .timed(
                    self.client
                        .eval(APPEND, vec![stream, counter, epoch, idem], args),
                )
                .await?;
            Ok(Appended {
                position: Position { offset, epoch },
                duplicate: duplicate == 1,
            })
        })
    }

    fn recover<'a>(
        &'a self,
        room: &'a str,
        offset: u64,
        epoch: &'a str,
    ) -> BoxFuture<'a, Result<Recovery, HistoryError>> {
        Box::pin(async move {
            let current = self.latest(room).await?;
            let impossible = Recovery::Impossible {
                epoch: current.epoch.clone(),
            };
            if current.epoch != epoch || offset > current.offset {
                return Ok(impossible);
            }
            let publications = self.range(room, offset, None).await?;
            // Contiguous offsets: everything after `offset` must still be there.
            if offset < current.offset
                && publications.first().is_none_or(|p| p.offset != offset + 1)
            {
                return Ok(impossible);
            }
            Ok(Recovery::Complete {
                epoch: current.epoch,
                publications,
            })
        })
    }

    fn latest<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<Position, HistoryError>> {
        Box::pin(async move {
            let [_, counter, epoch] = self.keys(room);
            let (offset, epoch): (u64, String) = self
                .timed(
                    self.client
                        .eval(LATEST, vec![counter, epoch], vec![new_epoch()]),
                )
                .await?;
            Ok(Position { offset, epoch })
        })
    }

    fn read<'a>(
        &'a self,
        room: &'a str,
        offset: Option<u64>,
        limit: usize,
    ) -> BoxFuture<'a, Result<(String, Vec<Publication>), HistoryError>> {
        Box::pin(async move {
            let epoch = self.latest(room).await?.epoch;
            Ok((
                epoch,
                self.range(room, offset.unwrap_or(0), Some(limit)).await?,
            ))
        })
    }
}

//! History in a JetStream stream: `{stream_name}_HISTORY` on `{prefix}hist.>`, one subject per
//! room, at most `rooms.history.size` messages per subject, kept `rooms.history.ttl`.
//!
//! A room's offsets are contiguous and shared by every node without a counter: each stored
//! message carries its offset `n`, the next one is the last one's `n + 1`, and the append is
//! conditional on the subject's last sequence (`Nats-Expected-Last-Subject-Sequence`), so two
//! nodes racing for the same offset can't both win: the loser reads the new last and retries.
//! A room whose history expired starts again above every offset it ever used (at the stream's
//! last sequence + 1), so an old offset can never be mistaken for a new one. The epoch is the
//! stream's creation time: recreating the stream (losing all history) changes it.
//! Idempotency keys are the stream's `Nats-Msg-Id`, deduplicated by the server within the
//! stream's duplicate window (`rooms.idempotency_window`).

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use base64::Engine;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{Appended, HistoryError, HistoryStore, Position, Publication, Recovery};
use crate::config::NatsConfig;

pub struct JetStreamHistory {
    js: jetstream::Context,
    config: stream::Config,
    prefix: String,
    op_timeout: Duration,
    stream: tokio::sync::OnceCell<(stream::Stream, String)>,
    /// One append at a time per room on this node (other nodes are handled by the
    /// conditional publish).
    locks: std::sync::Mutex<HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>>,
}

#[derive(Serialize, Deserialize)]
struct Stored<'a> {
    n: u64,
    t: &'a str,
    #[serde(borrow)]
    d: &'a RawValue,
}

fn unavailable(e: impl std::fmt::Display) -> HistoryError {
    HistoryError::Unavailable(e.to_string())
}

fn token(room: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(room)
}

impl JetStreamHistory {
    pub(crate) fn new(
        client: async_nats::Client,
        nats: &NatsConfig,
        size: usize,
        ttl: Duration,
        idempotency_window: Duration,
    ) -> Self {
        let prefix = format!("{}hist.", nats.subject_prefix);
        JetStreamHistory {
            js: jetstream::new(client),
            config: stream::Config {
                name: format!("{}_HISTORY", nats.stream_name),
                subjects: vec![format!("{prefix}>")],
                max_messages_per_subject: size.max(1) as i64,
                max_age: ttl,
                duplicate_window: idempotency_window.min(ttl).max(Duration::from_secs(1)),
                allow_direct: true,
                storage: stream::StorageType::File,
                ..Default::default()
            },
            prefix,
            op_timeout: (nats.op_timeout * 4).max(Duration::from_secs(5)),
            stream: tokio::sync::OnceCell::new(),
            locks: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The stream and its epoch (creation time), created on first use.
    async fn stream(&self) -> Result<&(stream::Stream, String), HistoryError> {
        self.stream
            .get_or_try_init(|| async {
                let mut s = self
                    .js
                    .get_or_create_stream(self.config.clone())
                    .await
                    .map_err(unavailable)?;
                let created = s.info().await.map_err(unavailable)?.created;
                Ok((s, format!("{:x}", created.unix_timestamp_nanos())))
            })
            .await
    }

    fn subject(&self, room: &str) -> String {
        format!("{}{}", self.prefix, token(room))
    }

    /// The room's last stored (offset, stream sequence).
    async fn last(
        &self,
        stream: &stream::Stream,
        room: &str,
    ) -> Result<Option<(u64, u64)>, HistoryError> {
        match stream.direct_get_last_for_subject(self.subject(room)).await {
            Ok(m) => {
                let stored: Stored = serde_json::from_slice(&m.payload).map_err(unavailable)?;
                Ok(Some((stored.n, m.sequence)))
            }
            Err(e) if e.kind() == jetstream::stream::DirectGetErrorKind::NotFound => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn timed<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, HistoryError>>,
    ) -> Result<T, HistoryError> {
        tokio::time::timeout(self.op_timeout, f)
            .await
            .map_err(|_| HistoryError::Unavailable("JetStream timed out".into()))?
    }

    /// Stored publications of a room with offset > `after`, oldest first.
    async fn after(
        &self,
        room: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Publication>, HistoryError> {
        let (stream, _) = self.stream().await?;
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: self.subject(room),
                deliver_policy: consumer::DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .map_err(unavailable)?;
        let mut pending = consumer.cached_info().num_pending;
        let mut out = Vec::new();
        if pending == 0 {
            return Ok(out);
        }
        let mut messages = consumer.messages().await.map_err(unavailable)?;
        while let Some(m) = messages.next().await {
            let m = m.map_err(unavailable)?;
            let stored: Stored = serde_json::from_slice(&m.payload).map_err(unavailable)?;
            if stored.n > after {
                out.push(Publication {
                    offset: stored.n,
                    message_type: stored.t.to_owned(),
                    data: Bytes::copy_from_slice(stored.d.get().as_bytes()),
                });
                if out.len() >= limit {
                    break;
                }
            }
            pending = m.info().map(|i| i.pending).unwrap_or(0);
            if pending == 0 {
                break;
            }
        }
        Ok(out)
    }
}

impl HistoryStore for JetStreamHistory {
    fn append<'a>(
        &'a self,
        room: &'a str,
        idempotency_key: Option<&'a str>,
        message_type: &'a str,
        data: Bytes,
    ) -> BoxFuture<'a, Result<Appended, HistoryError>> {
        Box::pin(self.timed(async move {
            let lock = self
                .locks
                .lock()
                .map_err(unavailable)?
                .entry(room.to_owned())
                .or_default()
                .clone();
            let _serial = lock.lock().await;
            let (stream, epoch) = self.stream().await?;
            let raw: &RawValue = serde_json::from_slice(&data).map_err(unavailable)?;
            loop {
                let last = self.last(stream, room).await?;
                let n = match last {
                    Some((n, _)) => n + 1,
                    // A new (or expired) room starts above every offset the stream has used.
                    None => {
                        let mut s = stream.clone();
                        s.info().await.map_err(unavailable)?.state.last_sequence + 1
                    }
                };
                let payload = serde_json::to_vec(&Stored {
                    n,
                    t: message_type,
                    d: raw,
                })
                .map_err(unavailable)?;
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(
                    "Nats-Expected-Last-Subject-Sequence",
                    last.map_or(0, |(_, seq)| seq).to_string().as_str(),
                );
                if let Some(key) = idempotency_key {
                    headers.insert("Nats-Msg-Id", format!("{room}\u{1f}{key}").as_str());
                }
                let ack = self
                    .js
                    .publish_with_headers(self.subject(room), headers, payload.into())
                    .await
                    .map_err(unavailable)?
                    .await;
                match ack {
                    Ok(ack) if ack.duplicate => {
                        // The first publication with this key: its offset is in the message.
                        let m = stream.direct_get(ack.sequence).await.map_err(unavailable)?;
                        let stored: Stored =
                            serde_json::from_slice(&m.payload).map_err(unavailable)?;
                        return Ok(Appended {
                            position: Position {
                                offset: stored.n,
                                epoch: epoch.clone(),
                            },
                            duplicate: true,
                        });
                    }
                    Ok(_) => {
                        return Ok(Appended {
                            position: Position {
                                offset: n,
                                epoch: epoch.clone(),
                            },
                            duplicate: false,
                        });
                    }
                    // Another node appended first: read its offset and try again.
                    Err(e)
                        if e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence =>
                    {
                        continue;
                    }
                    Err(e) => return Err(unavailable(e)),
                }
            }
        }))
    }

    fn recover<'a>(
        &'a self,
        room: &'a str,
        offset: u64,
        epoch: &'a str,
    ) -> BoxFuture<'a, Result<Recovery, HistoryError>> {
        Box::pin(self.timed(async move {
            let current = self.latest(room).await?;
            let impossible = Recovery::Impossible {
                epoch: current.epoch.clone(),
            };
            if current.epoch != epoch || offset > current.offset {
                return Ok(impossible);
            }
            if offset == current.offset {
                return Ok(Recovery::Complete {
                    epoch: current.epoch,
                    publications: Vec::new(),
                });
            }
            let publications = self.after(room, offset, usize::MAX).await?;
            if publications.first().is_none_or(|p| p.offset != offset + 1) {
                return Ok(impossible);
            }
            Ok(Recovery::Complete {
                epoch: current.epoch,
                publications,
            })
        }))
    }

    fn latest<'a>(&'a self, room: &'a str) -> BoxFuture<'a, Result<Position, HistoryError>> {
        Box::pin(self.timed(async move {
            let (stream, epoch) = self.stream().await?;
            Ok(Position {
                offset: self.last(stream, room).await?.map_or(0, |(n, _)| n),
                epoch: epoch.clone(),
            })
        }))
    }

    fn read<'a>(
        &'a self,
        room: &'a str,
        offset: Option<u64>,
        limit: usize,
    ) -> BoxFuture<'a, Result<(String, Vec<Publication>), HistoryError>> {
        Box::pin(self.timed(async move {
            let epoch = self.stream().await?.1.clone();
            Ok((epoch, self.after(room, offset.unwrap_or(0), limit).await?))
        }))
    }
}

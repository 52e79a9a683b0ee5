//! [`Store`]: where sessions and progress records live — the Raft cluster (the default),
//! or an external Redis in compatibility mode (DESIGN §7). Both apply the same rules
//! (`shoal_raft::rules`, `shoal_raft::transition`) to the same records, so every request
//! gets the same answer in either mode.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use shoal_raft::{
    rules, transition, unix_millis, Cluster, ClusterError, Command, NodeId, ProgressCommand,
    ProgressRecord, ProgressUpdate, Rejection, Response, SessionRecord, Toucher,
};
use shoal_storage::{BlobError, Redis};

/// How many times a Redis read-modify-write retries after losing a race.
const CAS_TRIES: usize = 32;
/// How long background writes (a search's milestones) retry while the store is unavailable.
const PATIENCE: Duration = Duration::from_secs(15);

/// The state store of a node.
#[derive(Debug, Clone)]
pub enum Store {
    /// Raft: linearizable, replicated, fsynced on a majority.
    Cluster { cluster: Cluster, toucher: Toucher },
    /// Compatibility mode: one Redis shared by independent nodes.
    Redis(RedisState),
}

impl Store {
    /// Returns `cluster` or `redis`, as `/api/health` says.
    pub fn mode(&self) -> &'static str {
        match self {
            Store::Cluster { .. } => "cluster",
            Store::Redis(_) => "redis",
        }
    }

    /// Returns the Redis state of compatibility mode, if this is it.
    pub fn redis(&self) -> Option<&RedisState> {
        match self {
            Store::Cluster { .. } => None,
            Store::Redis(redis) => Some(redis),
        }
    }

    /// Applies `command`; answers once it is durable (Raft) or stored (Redis).
    pub async fn write(&self, command: Command) -> Result<Response, ClusterError> {
        match self {
            Store::Cluster { cluster, .. } => cluster.write(command).await,
            Store::Redis(redis) => match redis.write(command).await? {
                Response::Rejected(rejection) => Err(ClusterError::Rejected(rejection)),
                response => Ok(response),
            },
        }
    }

    /// Like [`Store::write`], but retries for a while when the store cannot answer (no
    /// leader, Redis restarting): for background work that has no client to retry it.
    pub async fn write_patiently(&self, command: Command) -> Result<Response, ClusterError> {
        let started = tokio::time::Instant::now();
        let mut delay = Duration::from_millis(100);
        loop {
            match self.write(command.clone()).await {
                Err(
                    error @ (ClusterError::Unavailable(_)
                    | ClusterError::NoLeader
                    | ClusterError::Unreachable(_)
                    | ClusterError::Timeout(_)),
                ) if started.elapsed() < PATIENCE => {
                    tracing::debug!(%error, "the state store cannot take a write yet; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                other => return other,
            }
        }
    }

    /// Reads session `id` as of now (linearizably in a cluster) and slides its expiry.
    pub async fn session(&self, id: &str) -> Result<Option<SessionRecord>, ClusterError> {
        match self {
            Store::Cluster { cluster, toucher } => {
                cluster.read_barrier().await?;
                let record = cluster.reader().session(id, unix_millis())?;
                if record.is_some() {
                    toucher.touch(id);
                }
                Ok(record)
            }
            Store::Redis(redis) => redis.session(id).await,
        }
    }

    /// Reads progress record `id` as of now (linearizably in a cluster).
    pub async fn progress(&self, id: &str) -> Result<Option<ProgressRecord>, ClusterError> {
        match self {
            Store::Cluster { cluster, .. } => {
                cluster.read_barrier().await?;
                Ok(cluster.reader().progress(id, unix_millis())?)
            }
            Store::Redis(redis) => redis.progress(id).await,
        }
    }

    /// Returns which of `ids` have a live (unexpired) progress record now: linearizably in
    /// a cluster, with one read barrier for all of them.
    pub async fn progress_alive(&self, ids: &[String]) -> Result<Vec<bool>, ClusterError> {
        match self {
            Store::Cluster { cluster, .. } => {
                cluster.read_barrier().await?;
                let (reader, now_ms) = (cluster.reader(), unix_millis());
                ids.iter().map(|id| Ok(reader.progress(id, now_ms)?.is_some())).collect()
            }
            Store::Redis(redis) => {
                let mut alive = Vec::with_capacity(ids.len());
                for id in ids {
                    alive.push(redis.progress(id).await?.is_some());
                }
                Ok(alive)
            }
        }
    }

    /// Reads progress record `id` cheaply: this replica's copy, which may lag.
    pub async fn progress_local(&self, id: &str) -> Option<ProgressRecord> {
        match self {
            Store::Cluster { cluster, .. } => {
                cluster.reader().progress(id, unix_millis()).ok().flatten()
            }
            Store::Redis(redis) => redis.progress(id).await.ok().flatten(),
        }
    }

    /// Succeeds when this node can serve reads and writes now.
    pub async fn ready(&self) -> Result<(), ClusterError> {
        match self {
            Store::Cluster { cluster, .. } => {
                if cluster.status().leader_id.is_none() {
                    return Err(ClusterError::NoLeader);
                }
                cluster.read_barrier().await
            }
            Store::Redis(redis) => redis.redis.ping().await.map_err(unavailable),
        }
    }
}

fn unavailable(error: BlobError) -> ClusterError {
    match error {
        BlobError::Unavailable(reason) => ClusterError::Unavailable(reason),
        BlobError::Failed(reason) => ClusterError::Storage(reason),
    }
}

/// A session as stored in Redis under `session:{id}`: readable JSON, `data` inline.
#[derive(Debug, Serialize, Deserialize)]
struct StoredSession {
    data: Box<RawValue>,
    version: u64,
    ttl_ms: u64,
    created_at_ms: u64,
}

fn encode_session(record: &SessionRecord) -> Result<Vec<u8>, ClusterError> {
    let data = RawValue::from_string(record.data.clone())
        .map_err(|error| ClusterError::Storage(format!("session data: {error}")))?;
    let stored = StoredSession {
        data,
        version: record.version,
        ttl_ms: record.ttl_ms,
        created_at_ms: record.created_at_ms,
    };
    serde_json::to_vec(&stored).map_err(|error| ClusterError::Storage(error.to_string()))
}

/// Decodes a stored session; Redis expires it, so its deadline is one TTL from `now_ms`
/// (the read that returned it slid the expiry) or as given.
fn decode_session(bytes: &[u8], now_ms: u64) -> Result<SessionRecord, ClusterError> {
    let stored: StoredSession = serde_json::from_slice(bytes)
        .map_err(|error| ClusterError::Storage(format!("unreadable session in redis: {error}")))?;
    Ok(SessionRecord {
        data: stored.data.get().to_string(),
        version: stored.version,
        ttl_ms: stored.ttl_ms,
        created_at_ms: stored.created_at_ms,
        expires_at_ms: now_ms.saturating_add(stored.ttl_ms),
    })
}

/// State kept in Redis, under the classic setup's key names (DESIGN §7).
#[derive(Debug, Clone)]
pub struct RedisState {
    pub redis: Redis,
    pub prefix: String,
    pub node_id: NodeId,
}

impl RedisState {
    /// `session:{id}`.
    pub fn session_key(id: &str) -> String {
        format!("session:{id}")
    }

    /// `{prefix}:progress:{id}`.
    pub fn progress_key(&self, id: &str) -> String {
        format!("{}:progress:{id}", self.prefix)
    }

    /// `{prefix}:progress:{id}:events`: where each event of search or tracker `id` goes.
    pub fn events_channel(&self, id: &str) -> String {
        format!("{}:progress:{id}:events", self.prefix)
    }

    /// Returns the id of an events channel, if `channel` is one.
    pub fn channel_id<'a>(&self, channel: &'a str) -> Option<&'a str> {
        channel
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(":progress:")?
            .strip_suffix(":events")
    }

    /// `{prefix}:control:cancel`: the ids of searches to cancel, for whichever node runs them.
    pub fn cancel_channel(&self) -> String {
        format!("{}:control:cancel", self.prefix)
    }

    async fn session(&self, id: &str) -> Result<Option<SessionRecord>, ClusterError> {
        let bytes = self.redis.get_and_touch(&Self::session_key(id)).await.map_err(unavailable)?;
        bytes.map(|bytes| decode_session(&bytes, unix_millis())).transpose()
    }

    async fn progress(&self, id: &str) -> Result<Option<ProgressRecord>, ClusterError> {
        let Some(bytes) = self.redis.get(&self.progress_key(id)).await.map_err(unavailable)? else {
            return Ok(None);
        };
        let record: ProgressRecord = serde_json::from_slice(&bytes).map_err(|error| {
            ClusterError::Storage(format!("unreadable progress record in redis: {error}"))
        })?;
        Ok(Some(record).filter(|record| record.expires_at_ms > unix_millis()))
    }

    /// Changes `key` with `change`, a pure function of the stored bytes (`None`: absent)
    /// giving the answer and the write to make; retries when another writer changed the
    /// key in between. A rejection writes nothing.
    async fn read_modify_write<T>(
        &self,
        key: &str,
        mut change: impl FnMut(Option<&[u8]>) -> Result<(T, Write), ClusterError>,
    ) -> Result<T, ClusterError> {
        for _ in 0..CAS_TRIES {
            let current = self.redis.get(key).await.map_err(unavailable)?;
            let (answer, write) = change(current.as_deref())?;
            let new = match &write {
                Write::Keep => return Ok(answer),
                Write::Set(bytes, ttl) => Some((bytes.as_slice(), *ttl)),
                Write::Delete => None,
            };
            if self
                .redis
                .compare_and_set(key, current.as_deref(), new)
                .await
                .map_err(unavailable)?
            {
                return Ok(answer);
            }
        }
        Err(ClusterError::Unavailable(format!("{key} is changing too often; retry")))
    }

    async fn write(&self, command: Command) -> Result<Response, ClusterError> {
        let now_ms = unix_millis();
        match command {
            Command::CreateSession { id, data, ttl_ms } => {
                let record = rules::create_session(None, now_ms, data, ttl_ms)?;
                let bytes = encode_session(&record)?;
                let ttl = Duration::from_millis(ttl_ms);
                let key = Self::session_key(&id);
                if !self.redis.set_new(&key, &bytes, ttl).await.map_err(unavailable)? {
                    return Ok(Response::Rejected(Rejection::AlreadyExists));
                }
                Ok(Response::Session { id, record })
            }
            Command::UpdateSession { id, change, if_version, max_data_bytes } => {
                let answer = self
                    .read_modify_write(&Self::session_key(&id), |current| {
                        let existing =
                            current.map(|bytes| decode_session(bytes, now_ms)).transpose()?;
                        let record = match rules::update_session(
                            existing,
                            now_ms,
                            change.clone(),
                            if_version,
                            max_data_bytes,
                        ) {
                            Ok(record) => record,
                            Err(rejection) => return Ok((Err(rejection), Write::Keep)),
                        };
                        let bytes = encode_session(&record)?;
                        let ttl = Duration::from_millis(record.ttl_ms);
                        Ok((Ok(record), Write::Set(bytes, ttl)))
                    })
                    .await?;
                Ok(match answer {
                    Ok(record) => Response::Session { id, record },
                    Err(rejection) => Response::Rejected(rejection),
                })
            }
            Command::DeleteSession { id, if_version } => {
                let answer = self
                    .read_modify_write(&Self::session_key(&id), |current| {
                        let existing =
                            current.map(|bytes| decode_session(bytes, now_ms)).transpose()?;
                        Ok(match rules::live_session(existing, now_ms, if_version) {
                            Ok(_) => (Ok(()), Write::Delete),
                            Err(rejection) => (Err(rejection), Write::Keep),
                        })
                    })
                    .await?;
                match answer {
                    Ok(()) => Ok(Response::Deleted),
                    Err(rejection) => Ok(Response::Rejected(rejection)),
                }
            }
            // Redis expires keys by itself and reads slide session TTLs.
            Command::Touch { .. } | Command::Expire => Ok(Response::Count(0)),
            Command::Progress(command) => self.write_progress(now_ms, command).await,
            Command::Batch(_) | Command::Once { .. } => Err(ClusterError::Raft(
                "batches and keyed writes are made by the Raft layer; Redis takes commands one by one"
                    .to_string(),
            )),
            Command::Blob(_) => Err(ClusterError::Raft(
                "reports are stored by the Redis blob store in compatibility mode".to_string(),
            )),
        }
    }

    async fn write_progress(
        &self,
        now_ms: u64,
        command: ProgressCommand,
    ) -> Result<Response, ClusterError> {
        let id = match &command {
            ProgressCommand::Create { id, .. }
            | ProgressCommand::Update { id, .. }
            | ProgressCommand::Takeover { id, .. } => id.clone(),
        };
        let answer = self
            .read_modify_write(&self.progress_key(&id), |current| {
                let existing = decode_progress(current)?;
                progress_change(existing, now_ms, command.clone())
            })
            .await?;
        Ok(match answer {
            Ok(record) => Response::Progress { id, record },
            Err(rejection) => Response::Rejected(rejection),
        })
    }

    /// Records the next event of tracker `id` (attempt `attempt`): its number is the
    /// record's last one plus one, taken atomically, so that events posted on any node
    /// get distinct numbers. Returns the number and the record after it.
    pub async fn next_tracker_event(
        &self,
        id: &str,
        attempt: u32,
        update: ProgressUpdate,
    ) -> Result<(u64, ProgressRecord), ClusterError> {
        let now_ms = unix_millis();
        let answer = self
            .read_modify_write(&self.progress_key(id), |current| {
                let existing = decode_progress(current)?;
                let seq = existing.as_ref().map_or(0, |record| record.last_seq) + 1;
                let command = ProgressCommand::Update {
                    id: id.to_string(),
                    attempt,
                    seq,
                    update: update.clone(),
                };
                progress_change(existing, now_ms, command)
            })
            .await?;
        let record = answer?;
        Ok((record.last_seq, record))
    }
}

fn decode_progress(current: Option<&[u8]>) -> Result<Option<ProgressRecord>, ClusterError> {
    current
        .map(serde_json::from_slice::<ProgressRecord>)
        .transpose()
        .map_err(|error| ClusterError::Storage(format!("unreadable progress record: {error}")))
}

/// What a read-modify-write stores.
enum Write {
    /// Nothing (a rejection).
    Keep,
    /// These bytes, for this long.
    Set(Vec<u8>, Duration),
    Delete,
}

/// The record after `command` and how to store it: JSON with the record's own TTL from
/// its last change, like the classic setup's `EX 300` on every tracker update.
fn progress_change(
    existing: Option<ProgressRecord>,
    now_ms: u64,
    command: ProgressCommand,
) -> Result<(Result<ProgressRecord, Rejection>, Write), ClusterError> {
    let mut record = match transition(existing, now_ms, command) {
        Ok((_, record)) => record,
        Err(rejection) => return Ok((Err(rejection), Write::Keep)),
    };
    record.expires_at_ms = now_ms.saturating_add(record.ttl_ms);
    let bytes =
        serde_json::to_vec(&record).map_err(|error| ClusterError::Storage(error.to_string()))?;
    let ttl = Duration::from_millis(record.ttl_ms);
    Ok((Ok(record), Write::Set(bytes, ttl)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_stored_as_readable_json() {
        let record = SessionRecord {
            data: r#"{"user":"ana"}"#.to_string(),
            version: 2,
            ttl_ms: 60_000,
            created_at_ms: 5,
            expires_at_ms: 60_005,
        };
        let bytes = encode_session(&record).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert_eq!(text, r#"{"data":{"user":"ana"},"version":2,"ttl_ms":60000,"created_at_ms":5}"#);
        let decoded = decode_session(&bytes, 10).unwrap();
        assert_eq!((decoded.data, decoded.expires_at_ms), (record.data, 60_010));
    }
}

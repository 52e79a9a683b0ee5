//! [`RedisStore`]: the state in one Redis shared by independent nodes (compatibility
//! mode), under the classic setup's key names (DESIGN §7). Each change is a
//! read-modify-write of one key, checked and set atomically, applying the same rules as
//! the Raft state machine.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use shoal_raft::{
    rules, transition, unix_millis, NodeId, ProgressCommand, ProgressRecord, ProgressUpdate,
    Rejection, SessionChange, SessionRecord,
};
use shoal_storage::Redis;

use super::{Mode, Result, StateStore, StoreError, Unavailable};

/// How many times a read-modify-write retries after losing a race.
const CAS_TRIES: usize = 32;

/// The key and channel names of compatibility mode.
#[derive(Debug, Clone)]
pub struct RedisKeys {
    /// `--redis-prefix` (`bidiq` by default).
    pub prefix: String,
}

impl RedisKeys {
    /// `session:{id}`.
    pub fn session(id: &str) -> String {
        format!("session:{id}")
    }

    /// `{prefix}:progress:{id}`.
    pub fn progress(&self, id: &str) -> String {
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
}

/// The state in Redis.
#[derive(Debug, Clone)]
pub struct RedisStore {
    pub redis: Redis,
    pub keys: RedisKeys,
}

/// A session as stored in Redis under `session:{id}`: readable JSON, `data` inline.
#[derive(Debug, Serialize, Deserialize)]
struct StoredSession {
    data: Box<RawValue>,
    version: u64,
    ttl_ms: u64,
    created_at_ms: u64,
}

/// Returns the JSON `session:{id}` holds in Redis mode (and shows over RESP in cluster mode).
pub(crate) fn encode_session(record: &SessionRecord) -> Result<Vec<u8>> {
    let data = RawValue::from_string(record.data.clone())
        .map_err(|error| StoreError::Failed(format!("session data: {error}")))?;
    let stored = StoredSession {
        data,
        version: record.version,
        ttl_ms: record.ttl_ms,
        created_at_ms: record.created_at_ms,
    };
    serde_json::to_vec(&stored).map_err(|error| StoreError::Failed(error.to_string()))
}

/// Decodes a stored session; Redis expires it, so its deadline is one TTL from `now_ms`
/// (the read that returned it slid the expiry) or as given.
fn decode_session(bytes: &[u8], now_ms: u64) -> Result<SessionRecord> {
    let stored: StoredSession = serde_json::from_slice(bytes)
        .map_err(|error| StoreError::Failed(format!("unreadable session in redis: {error}")))?;
    Ok(SessionRecord {
        data: stored.data.get().to_string(),
        version: stored.version,
        ttl_ms: stored.ttl_ms,
        created_at_ms: stored.created_at_ms,
        expires_at_ms: now_ms.saturating_add(stored.ttl_ms),
    })
}

fn decode_progress(current: Option<&[u8]>) -> Result<Option<ProgressRecord>> {
    current
        .map(serde_json::from_slice::<ProgressRecord>)
        .transpose()
        .map_err(|error| StoreError::Failed(format!("unreadable progress record: {error}")))
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
) -> Result<(std::result::Result<ProgressRecord, Rejection>, Write)> {
    let mut record = match transition(existing, now_ms, command) {
        Ok((_, record)) => record,
        Err(rejection) => return Ok((Err(rejection), Write::Keep)),
    };
    record.expires_at_ms = now_ms.saturating_add(record.ttl_ms);
    let bytes =
        serde_json::to_vec(&record).map_err(|error| StoreError::Failed(error.to_string()))?;
    let ttl = Duration::from_millis(record.ttl_ms);
    Ok((Ok(record), Write::Set(bytes, ttl)))
}

impl RedisStore {
    /// Changes `key` with `change`, a pure function of the stored bytes (`None`: absent)
    /// giving the answer and the write to make; retries when another writer changed the
    /// key in between. A rejection writes nothing.
    async fn read_modify_write<T>(
        &self,
        key: &str,
        mut change: impl FnMut(Option<&[u8]>) -> Result<(T, Write)>,
    ) -> Result<T> {
        for _ in 0..CAS_TRIES {
            let current = self.redis.get(key).await?;
            let (answer, write) = change(current.as_deref())?;
            let new = match &write {
                Write::Keep => return Ok(answer),
                Write::Set(bytes, ttl) => Some((bytes.as_slice(), *ttl)),
                Write::Delete => None,
            };
            if self.redis.compare_and_set(key, current.as_deref(), new).await? {
                return Ok(answer);
            }
        }
        Err(Unavailable::Redis(format!("{key} is changing too often; retry")).into())
    }

    /// Applies `command` to the progress record it names.
    async fn change_progress(&self, id: &str, command: ProgressCommand) -> Result<ProgressRecord> {
        let now_ms = unix_millis();
        let answer = self
            .read_modify_write(&self.keys.progress(id), |current| {
                progress_change(decode_progress(current)?, now_ms, command.clone())
            })
            .await?;
        Ok(answer?)
    }

    /// Records the next event of tracker `id` (attempt `attempt`): its number is the
    /// record's last one plus one, taken atomically, so that events posted on any node
    /// get distinct numbers. Returns the number and the record after it.
    pub async fn next_tracker_event(
        &self,
        id: &str,
        attempt: u32,
        update: ProgressUpdate,
    ) -> Result<(u64, ProgressRecord)> {
        let now_ms = unix_millis();
        let answer = self
            .read_modify_write(&self.keys.progress(id), |current| {
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

#[async_trait]
impl StateStore for RedisStore {
    fn mode(&self) -> Mode {
        Mode::Redis
    }

    async fn create_session(&self, id: &str, data: String, ttl_ms: u64) -> Result<SessionRecord> {
        let record = rules::create_session(None, unix_millis(), data, ttl_ms)?;
        let bytes = encode_session(&record)?;
        let ttl = Duration::from_millis(ttl_ms);
        if !self.redis.set_new(&RedisKeys::session(id), &bytes, ttl).await? {
            return Err(Rejection::AlreadyExists.into());
        }
        Ok(record)
    }

    async fn update_session(
        &self,
        id: &str,
        change: SessionChange,
        if_version: Option<u64>,
        max_data_bytes: u64,
    ) -> Result<SessionRecord> {
        let now_ms = unix_millis();
        let answer = self
            .read_modify_write(&RedisKeys::session(id), |current| {
                let existing = current.map(|bytes| decode_session(bytes, now_ms)).transpose()?;
                let change = change.clone();
                let record = match rules::update_session(
                    existing,
                    now_ms,
                    change,
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
        Ok(answer?)
    }

    async fn delete_session(&self, id: &str, if_version: Option<u64>) -> Result<()> {
        let now_ms = unix_millis();
        let answer = self
            .read_modify_write(&RedisKeys::session(id), |current| {
                let existing = current.map(|bytes| decode_session(bytes, now_ms)).transpose()?;
                Ok(match rules::live_session(existing, now_ms, if_version) {
                    Ok(_) => (Ok(()), Write::Delete),
                    Err(rejection) => (Err(rejection), Write::Keep),
                })
            })
            .await?;
        Ok(answer?)
    }

    async fn session(&self, id: &str) -> Result<Option<SessionRecord>> {
        let bytes = self.redis.get_and_touch(&RedisKeys::session(id)).await?;
        bytes.map(|bytes| decode_session(&bytes, unix_millis())).transpose()
    }

    async fn create_progress(&self, id: &str, record: ProgressRecord) -> Result<ProgressRecord> {
        self.change_progress(id, ProgressCommand::Create { id: id.to_string(), record }).await
    }

    async fn record_milestone(
        &self,
        id: &str,
        attempt: u32,
        seq: u64,
        update: ProgressUpdate,
    ) -> Result<ProgressRecord> {
        let command = ProgressCommand::Update { id: id.to_string(), attempt, seq, update };
        self.change_progress(id, command).await
    }

    async fn take_over(&self, id: &str, attempt: u32, owner: NodeId) -> Result<ProgressRecord> {
        let command = ProgressCommand::Takeover { id: id.to_string(), attempt, owner };
        self.change_progress(id, command).await
    }

    async fn progress(&self, id: &str) -> Result<Option<ProgressRecord>> {
        let Some(bytes) = self.redis.get(&self.keys.progress(id)).await? else {
            return Ok(None);
        };
        let record: ProgressRecord = serde_json::from_slice(&bytes).map_err(|error| {
            StoreError::Failed(format!("unreadable progress record in redis: {error}"))
        })?;
        Ok(Some(record).filter(|record| record.expires_at_ms > unix_millis()))
    }

    async fn progress_alive(&self, ids: &[String]) -> Result<Vec<bool>> {
        let mut alive = Vec::with_capacity(ids.len());
        for id in ids {
            alive.push(self.progress(id).await?.is_some());
        }
        Ok(alive)
    }

    async fn progress_local(&self, id: &str) -> Option<ProgressRecord> {
        self.progress(id).await.ok().flatten()
    }

    fn progress_on_replica(&self, _id: &str) -> Option<Result<Option<ProgressRecord>>> {
        None
    }

    async fn ready(&self) -> Result<()> {
        Ok(self.redis.ping().await?)
    }
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

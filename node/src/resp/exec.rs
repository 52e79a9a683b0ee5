//! [`Keyspace`]: runs the ops of `commands.rs` against the Raft state, with the same
//! guarantees as the HTTP API: a write is answered once a majority has it fsynced, a read
//! waits on the read barrier (linearizable on every node), and a cluster that cannot
//! answer says so with `-TRYAGAIN`, never with a stale value.
//!
//! One key space, two doors: sessions and searches made over HTTP show under the classic
//! key names (`classic.rs`), next to the plain keys Redis clients write.

use bytes::Bytes;
use shoal_raft::{
    Cluster, ClusterError, Command, KvCommand, KvRecord, KvReply, Namespace, Rejection, Response,
    POSITION_BYTES,
};

use super::classic::{Classic, Native};
use super::commands::{Read, Render, TtlUnit};
use super::glob;
use super::reply::Reply;
use crate::store::{StoreError, Unavailable};

/// The key space of the Redis protocol endpoint.
#[derive(Debug, Clone)]
pub struct Keyspace {
    pub cluster: Cluster,
    pub classic: Classic,
    /// Whether every member can apply plain keys' commands (see `watch_format_levels`).
    pub format_ready: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// How long a command waits for the cluster to have a leader again before it answers
/// `TRYAGAIN`: a leader change (an election takes about a second) then costs clients a
/// slow reply, not an error. (redis-py raises `TRYAGAIN` as a plain `ResponseError`,
/// which its retry settings cannot single out.)
const PATIENCE: std::time::Duration = std::time::Duration::from_secs(3);

/// The namespaces a `SCAN` walks, in cursor order (the top byte of a cursor).
const NAMESPACES: [Namespace; 3] = [Namespace::Kv, Namespace::Sessions, Namespace::Progress];
const POSITION_BITS: u32 = 8 * POSITION_BYTES as u32;

impl Keyspace {
    /// Waits until this node has applied everything committed before the call.
    pub async fn barrier(&self) -> Result<(), Reply> {
        self.cluster.read_barrier_patiently(PATIENCE).await.map_err(cluster_error)
    }

    /// Proposes `command` through Raft and renders its answer.
    pub async fn write(&self, command: KvCommand, render: Render) -> Reply {
        if !self.format_ready.load(std::sync::atomic::Ordering::Relaxed) {
            return Reply::error(
                "TRYAGAIN a member of the cluster runs a build without Redis keys (mid-upgrade?) \
                 or has not been heard from yet; writes wait until every member is upgraded",
            );
        }
        if let Some(refused) = self.refuse_native_write(&command).await {
            return refused;
        }
        match self.cluster.write_patiently(Command::Kv(command), PATIENCE).await {
            Ok(Response::Kv(reply)) => rendered(reply, render),
            Ok(other) => {
                tracing::error!(?other, "a kv write got an answer of another kind");
                Reply::error("ERR internal error; see the node's log")
            }
            Err(error) => cluster_error(error),
        }
    }

    /// Deletes `keys`, the sessions among them included (a session made over HTTP is
    /// logged out by `DEL session:{id}`, as in the classic setup).
    pub async fn delete(&self, keys: Vec<Vec<u8>>) -> Reply {
        let (mut deleted, mut plain) = (0, Vec::new());
        for key in keys {
            let Some(id) = self.classic.session_id(&key) else {
                plain.push(key);
                continue;
            };
            if let Err(reply) = self.barrier().await {
                return reply;
            }
            if self.classic.native(&self.cluster, &key).is_none() {
                plain.push(key);
                continue;
            }
            let command = Command::DeleteSession { id: id.to_string(), if_version: None };
            match self.cluster.write_patiently(command, PATIENCE).await {
                Ok(_) => deleted += 1,
                Err(ClusterError::Rejected(Rejection::NotFound)) => {}
                Err(error) => return cluster_error(error),
            }
        }
        if plain.is_empty() {
            return Reply::Integer(deleted);
        }
        match self.write(KvCommand::Delete { keys: plain }, Render::Integer).await {
            Reply::Integer(count) => Reply::Integer(count + deleted),
            other => other,
        }
    }

    /// Refuses a change to a key that names a session or search made over HTTP: those
    /// change through the HTTP API (their rules, versions and events live there).
    async fn refuse_native_write(&self, command: &KvCommand) -> Option<Reply> {
        let keys: Vec<&[u8]> = match command {
            KvCommand::SetMany { pairs, .. } => pairs.iter().map(|(key, _)| &key[..]).collect(),
            KvCommand::Delete { keys } => keys.iter().map(Vec::as_slice).collect(),
            other => other.single_key().into_iter().collect(),
        };
        if !keys.iter().any(|key| self.classic.is_classic(key)) {
            return None;
        }
        if let Err(reply) = self.barrier().await {
            return Some(reply);
        }
        let native = keys.iter().find(|key| self.classic.native(&self.cluster, key).is_some())?;
        Some(Reply::error(format!(
            "ERR {} was made over shoal's HTTP API: change it there (DEL logs a session out)",
            String::from_utf8_lossy(native)
        )))
    }

    /// Answers `read` from this replica: call [`Self::barrier`] first.
    pub fn read(&self, read: &Read) -> Reply {
        match self.try_read(read) {
            Ok(reply) => reply,
            Err(error) => {
                tracing::error!(%error, "reading the state failed");
                Reply::error("ERR internal error; see the node's log")
            }
        }
    }

    fn try_read(&self, read: &Read) -> shoal_storage::Result<Reply> {
        Ok(match read {
            Read::Get(key) => match self.value(key)? {
                Some(entry) => Reply::Bulk(entry.value),
                None => Reply::Null,
            },
            Read::MGet(keys) => Reply::Array(
                keys.iter()
                    .map(|key| {
                        Ok(self.value(key)?.map_or(Reply::Null, |entry| Reply::Bulk(entry.value)))
                    })
                    .collect::<shoal_storage::Result<_>>()?,
            ),
            Read::Exists(keys) => {
                let mut found = 0;
                for key in keys {
                    found += i64::from(self.value(key)?.is_some());
                }
                Reply::Integer(found)
            }
            Read::StrLen(key) => {
                Reply::Integer(self.value(key)?.map_or(0, |entry| entry.value.len() as i64))
            }
            Read::Type(key) => {
                Reply::Simple(if self.value(key)?.is_some() { "string" } else { "none" }.into())
            }
            Read::Ttl(key, unit) => Reply::Integer(match self.value(key)? {
                None => -2,
                Some(Entry { expires_at_ms: None, .. }) => -1,
                Some(Entry { expires_at_ms: Some(deadline), .. }) => self.ttl(deadline, *unit),
            }),
            Read::Keys(pattern) => {
                Reply::Array(self.matching(pattern)?.into_iter().map(Reply::Bulk).collect())
            }
            Read::Scan { cursor, pattern, count, strings_only } => {
                let (next, keys) = self.scan(*cursor, pattern.as_deref(), *count, *strings_only)?;
                Reply::Array(vec![
                    Reply::bulk(next.to_string()),
                    Reply::Array(keys.into_iter().map(Reply::Bulk).collect()),
                ])
            }
            Read::DbSize => {
                let reader = self.cluster.reader();
                let progress = reader.progress_records(shoal_raft::unix_millis())?.len() as u64;
                let total = reader.num_kv() + reader.num_sessions() + progress;
                Reply::Integer(i64::try_from(total).unwrap_or(i64::MAX))
            }
        })
    }

    /// The value under `key`: a session or search made over HTTP, else a plain key.
    fn value(&self, key: &[u8]) -> shoal_storage::Result<Option<Entry>> {
        if let Some(native) = self.classic.native(&self.cluster, key) {
            return Ok(Some(Entry::from(native)));
        }
        Ok(self.cluster.reader().kv(key)?.map(Entry::from))
    }

    fn ttl(&self, deadline_ms: u64, unit: TtlUnit) -> i64 {
        // The remaining time is told by this node's clock; whether the key still exists is
        // decided by the state's (the leader's) clock alone.
        let now_ms = shoal_raft::unix_millis().max(self.cluster.reader().clock_ms());
        let remaining = deadline_ms.saturating_sub(now_ms) as i64;
        match unit {
            TtlUnit::Seconds => (remaining + 500) / 1000,
            TtlUnit::Millis => remaining,
            TtlUnit::AtSeconds => (deadline_ms / 1000) as i64,
            TtlUnit::AtMillis => deadline_ms as i64,
        }
    }

    /// Every live key matching `pattern` (`KEYS`).
    fn matching(&self, pattern: &[u8]) -> shoal_storage::Result<Vec<Bytes>> {
        let mut keys = Vec::new();
        let (mut cursor, mut first) = (0, true);
        while first || cursor != 0 {
            first = false;
            let (next, page) = self.scan(cursor, Some(pattern), 1024, None)?;
            keys.extend(page);
            cursor = next;
        }
        Ok(keys)
    }

    /// One `SCAN` step: the next cursor (0: done) and the keys found. A cursor is the
    /// namespace's index in its top byte and a position in that namespace below it.
    fn scan(
        &self,
        cursor: u64,
        pattern: Option<&[u8]>,
        count: usize,
        strings_only: Option<bool>,
    ) -> shoal_storage::Result<(u64, Vec<Bytes>)> {
        let mut index = (cursor >> POSITION_BITS) as usize;
        let mut position = cursor & ((1 << POSITION_BITS) - 1);
        let mut keys = Vec::new();
        if strings_only == Some(false) {
            return Ok((0, keys));
        }
        let reader = self.cluster.reader();
        let now_ms = shoal_raft::unix_millis();
        while index < NAMESPACES.len() && keys.len() < count {
            let namespace = NAMESPACES[index];
            let page = reader.page(namespace, position, count - keys.len())?;
            for (suffix, value) in page.entries {
                let Some(name) =
                    self.classic.name_of(namespace, &suffix, &value, reader, now_ms)?
                else {
                    continue;
                };
                if pattern.is_none_or(|pattern| glob::matches(pattern, &name)) {
                    keys.push(name);
                }
            }
            match page.next {
                Some(next) => position = next,
                None => (index, position) = (index + 1, 0),
            }
        }
        let next = if index >= NAMESPACES.len() {
            0
        } else {
            ((index as u64) << POSITION_BITS) | position
        };
        Ok((next, keys))
    }
}

/// A value as a read sees it.
struct Entry {
    value: Bytes,
    expires_at_ms: Option<u64>,
}

impl From<KvRecord> for Entry {
    fn from(record: KvRecord) -> Self {
        Entry { value: Bytes::from(record.value), expires_at_ms: record.expires_at_ms }
    }
}

impl From<Native> for Entry {
    fn from(native: Native) -> Self {
        Entry { value: native.value, expires_at_ms: Some(native.expires_at_ms) }
    }
}

/// Renders the state machine's answer to a write as the command's reply.
fn rendered(reply: KvReply, render: Render) -> Reply {
    let value = |value: Option<Vec<u8>>| value.map_or(Reply::Null, |v| Reply::Bulk(Bytes::from(v)));
    match (reply, render) {
        (KvReply::Written { previous, .. }, Render::Set { get: true }) => value(previous),
        (KvReply::Written { written: true, .. }, Render::Set { .. } | Render::Ok) => Reply::ok(),
        (KvReply::Written { written: false, .. }, Render::Set { .. }) => Reply::Null,
        (KvReply::Written { written, .. }, _) => Reply::Integer(i64::from(written)),
        (KvReply::Count(count), _) => Reply::Integer(i64::try_from(count).unwrap_or(i64::MAX)),
        (KvReply::Integer(integer), _) => Reply::Integer(integer),
        (KvReply::Value(found), _) => value(found),
    }
}

/// The reply to a write or read the cluster could not do. Clients retry `TRYAGAIN`;
/// nothing changed unless the text says the outcome is unknown.
pub fn cluster_error(error: ClusterError) -> Reply {
    match StoreError::from(error) {
        StoreError::Rejected(Rejection::NotAnInteger) => {
            Reply::error("ERR value is not an integer or out of range")
        }
        StoreError::Rejected(Rejection::Overflow) => {
            Reply::error("ERR increment or decrement would overflow")
        }
        StoreError::Rejected(other) => Reply::error(format!("ERR {other}")),
        StoreError::Unavailable(Unavailable::Timeout(timeout)) => Reply::error(format!(
            "TRYAGAIN the cluster did not confirm within {timeout:?}; a write may still apply"
        )),
        StoreError::Unavailable(Unavailable::TooLate) => Reply::error(
            "TRYAGAIN the write reached the leader too late to tell whether it applied; read, then retry",
        ),
        StoreError::Unavailable(Unavailable::NoQuorum) => Reply::error(
            "TRYAGAIN this node is cut off from a quorum of the cluster; retry on another node \
             (a write may still apply)",
        ),
        StoreError::Unavailable(unavailable) => {
            tracing::info!(%unavailable, "a RESP command found no leader to serve it");
            Reply::error("TRYAGAIN the cluster has no reachable leader right now; retry shortly")
        }
        StoreError::Failed(reason) => {
            tracing::error!(%reason, "a RESP command failed");
            Reply::error("ERR internal error; see the node's log")
        }
    }
}

//! The classic key names (DESIGN §7) over the Raft state: a session made over HTTP reads
//! as `session:{id}` holding the JSON Redis mode stores, a search or tracker as
//! `{prefix}:progress:{id}` holding its record's JSON, and their live events go out on
//! `{prefix}:progress:{id}:events` (see `mod.rs`). The verification commands of the
//! classic guides (`KEYS "session:*"`, `GET session:{id}`, `PSUBSCRIBE
//! bidiq:progress:*:events`) work unchanged.
//!
//! What a Redis client writes under those names: a plain key, unless a session or search
//! made over HTTP has that name, which the client may read and `DEL` (a session; logs it
//! out) but not change otherwise (docs/decisions.md, "Speak Redis").

use bytes::Bytes;
use shoal_raft::{
    unix_millis, Cluster, KvRecord, Namespace, ProgressRecord, SessionRecord, StateReader,
    KV_HASH_BYTES,
};
use shoal_storage::codec;

use crate::store::{encode_session, RedisKeys};

/// The classic names, under the `--redis-prefix`: Redis mode's own ([`RedisKeys`]).
#[derive(Debug, Clone)]
pub struct Classic {
    keys: RedisKeys,
    /// `session:`, what a session's name starts with.
    session_prefix: String,
    /// `{prefix}:progress:`, what a search's or tracker's name starts with.
    progress_prefix: String,
}

/// A session or search made over HTTP, as a read of its classic key sees it.
#[derive(Debug, Clone)]
pub struct Native {
    pub value: Bytes,
    pub expires_at_ms: u64,
}

impl Classic {
    /// Returns the classic names under `prefix` (`bidiq`).
    pub fn new(prefix: &str) -> Self {
        let keys = RedisKeys { prefix: prefix.to_string() };
        Self { session_prefix: RedisKeys::session(""), progress_prefix: keys.progress(""), keys }
    }

    /// The channel the events of search or tracker `id` go out on.
    pub fn events_channel(&self, id: &str) -> Bytes {
        Bytes::from(self.keys.events_channel(id))
    }

    /// Returns the session id `key` names, if it is `session:{id}`.
    pub fn session_id<'a>(&self, key: &'a [u8]) -> Option<&'a str> {
        std::str::from_utf8(key.strip_prefix(self.session_prefix.as_bytes())?).ok()
    }

    /// Returns the search or tracker id `key` names, if it is `{prefix}:progress:{id}`.
    fn progress_id<'a>(&self, key: &'a [u8]) -> Option<&'a str> {
        std::str::from_utf8(key.strip_prefix(self.progress_prefix.as_bytes())?).ok()
    }

    /// Returns whether `key` has the shape of a classic name (whether or not a record of
    /// that name exists).
    pub fn is_classic(&self, key: &[u8]) -> bool {
        self.session_id(key).is_some() || self.progress_id(key).is_some()
    }

    /// Returns the session or search `key` names on this replica, if one is live.
    pub fn native(&self, cluster: &Cluster, key: &[u8]) -> Option<Native> {
        let reader = cluster.reader();
        let now_ms = unix_millis();
        if let Some(id) = self.session_id(key) {
            let record = reader.session(id, now_ms).ok()??;
            return session_value(&record);
        }
        let id = self.progress_id(key)?;
        let record = reader.progress(id, now_ms).ok()??;
        progress_value(&record)
    }

    /// Returns the name a scan shows for the entry `suffix` → `value` of `namespace`,
    /// or `None` if it has expired.
    pub fn name_of(
        &self,
        namespace: Namespace,
        suffix: &[u8],
        value: &[u8],
        reader: &StateReader,
        now_ms: u64,
    ) -> shoal_storage::Result<Option<Bytes>> {
        Ok(match namespace {
            Namespace::Kv => {
                let record: KvRecord = codec::decode(value, "kv record")?;
                let key = suffix.get(KV_HASH_BYTES..).unwrap_or_default();
                (!record.is_expired(reader.clock_ms())).then(|| Bytes::copy_from_slice(key))
            }
            Namespace::Sessions => {
                let record: SessionRecord = codec::decode(value, "session")?;
                let name = [self.session_prefix.as_bytes(), suffix].concat();
                (!record.is_expired(now_ms)).then(|| Bytes::from(name))
            }
            Namespace::Progress => {
                let record: ProgressRecord = codec::decode(value, "progress")?;
                let name = [self.progress_prefix.as_bytes(), suffix].concat();
                (record.expires_at_ms > now_ms).then(|| Bytes::from(name))
            }
        })
    }
}

fn session_value(record: &SessionRecord) -> Option<Native> {
    let value = encode_session(record).ok()?;
    Some(Native { value: Bytes::from(value), expires_at_ms: record.expires_at_ms })
}

fn progress_value(record: &ProgressRecord) -> Option<Native> {
    let value = serde_json::to_vec(record).ok()?;
    Some(Native { value: Bytes::from(value), expires_at_ms: record.expires_at_ms })
}

//! [`StateReader`]: read access to the applied state, shared with the HTTP handlers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use shoal_storage::{codec, Tree};

use std::ops::Bound;

use crate::types::{BlobMeta, KvRecord, ProgressRecord, SessionRecord};
use crate::{blob, keys, kv, once, progress};

/// Read access to the applied state, shared with the HTTP handlers.
///
/// Reads see everything applied so far; callers that need linearizability wait on the
/// read barrier of [`crate::Cluster`] first.
#[derive(Debug, Clone)]
pub struct StateReader {
    pub(super) state: Arc<dyn Tree>,
    pub(super) num_sessions: Arc<AtomicU64>,
    pub(super) kv: Arc<super::KvCounters>,
    /// Held for writing while a snapshot replaces the state, so reads never see it half
    /// replaced.
    pub(super) gate: Arc<RwLock<()>>,
}

impl StateReader {
    /// Returns session `id` unless it is missing or expired at `now_ms`.
    pub fn session(&self, id: &str, now_ms: u64) -> shoal_storage::Result<Option<SessionRecord>> {
        let _reading = self.gate.read().unwrap_or_else(PoisonError::into_inner);
        Ok(read_session(&*self.state, id)?.filter(|record| !record.is_expired(now_ms)))
    }

    /// Returns search or tracker `id` unless it is missing or expired at `now_ms`.
    pub fn progress(&self, id: &str, now_ms: u64) -> shoal_storage::Result<Option<ProgressRecord>> {
        let _reading = self.gate.read().unwrap_or_else(PoisonError::into_inner);
        Ok(progress::read(&*self.state, id)?.filter(|record| record.expires_at_ms > now_ms))
    }

    /// Returns committed blob `id` whole, unless it is missing or expired at `now_ms`.
    pub fn blob(
        &self,
        id: &str,
        now_ms: u64,
    ) -> shoal_storage::Result<Option<(BlobMeta, Vec<u8>)>> {
        let _reading = self.gate.read().unwrap_or_else(PoisonError::into_inner);
        blob::read(&*self.state, id, now_ms)
    }

    /// Returns every unexpired search and tracker.
    pub fn progress_records(
        &self,
        now_ms: u64,
    ) -> shoal_storage::Result<Vec<(String, ProgressRecord)>> {
        let _reading = self.gate.read().unwrap_or_else(PoisonError::into_inner);
        let mut records = Vec::new();
        for pair in self.state.scan_prefix(keys::PROGRESS_PREFIX) {
            let (key, bytes) = pair?;
            let record: ProgressRecord = codec::decode(&bytes, "progress")?;
            if record.expires_at_ms > now_ms {
                let id = String::from_utf8_lossy(&key[keys::PROGRESS_PREFIX.len()..]).into_owned();
                records.push((id, record));
            }
        }
        Ok(records)
    }

    /// Returns the state's clock: the largest leader clock (Unix ms) of an applied
    /// command. Plain keys live or not by this clock, never by this node's: replicas at
    /// the same applied index answer the same.
    pub fn clock_ms(&self) -> u64 {
        self.kv.clock_ms.load(Ordering::Relaxed)
    }

    /// Returns plain key `key` unless it is missing or expired by [`Self::clock_ms`].
    pub fn kv(&self, key: &[u8]) -> shoal_storage::Result<Option<KvRecord>> {
        let _reading = self.gate.read().unwrap_or_else(PoisonError::into_inner);
        kv::read_live(&*self.state, key, self.clock_ms())
    }

    /// Returns the number of stored plain keys (expired ones count until the next expiry).
    pub fn num_kv(&self) -> u64 {
        self.kv.keys.load(Ordering::Relaxed)
    }

    /// Returns up to about `count` entries of `namespace` from `position` on, in tree
    /// order, and the position to go on from (`None`: the namespace is done). See
    /// [`ScanPage`].
    pub fn page(
        &self,
        namespace: Namespace,
        position: u64,
        count: usize,
    ) -> shoal_storage::Result<ScanPage> {
        let _reading = self.gate.read().unwrap_or_else(PoisonError::into_inner);
        let prefix = namespace.prefix();
        let start = [prefix, &position.to_be_bytes()[8 - POSITION_BYTES..]].concat();
        let mut page = ScanPage { entries: Vec::new(), next: None };
        let mut last_position = None;
        for pair in self.state.range(Bound::Included(&start[..]), Bound::Unbounded) {
            let (key, value) = pair?;
            let Some(suffix) = key.strip_prefix(prefix) else { break };
            let here = position_of(suffix);
            if page.entries.len() >= count.max(1) && last_position != Some(here) {
                page.next = Some(here);
                break;
            }
            last_position = Some(here);
            page.entries.push((suffix.to_vec(), value));
        }
        Ok(page)
    }

    /// Returns the number of stored sessions (expired ones count until the next expiry).
    pub fn num_sessions(&self) -> u64 {
        self.num_sessions.load(Ordering::Relaxed)
    }

    /// Returns the earliest deadline of anything `Expire` removes: the expiry index and
    /// the answers of keyed writes.
    pub fn next_deadline_ms(&self) -> shoal_storage::Result<Option<u64>> {
        let _reading = self.gate.read().unwrap_or_else(PoisonError::into_inner);
        let indexed = match self.state.scan_prefix(keys::EXPIRY_PREFIX).next() {
            Some(pair) => keys::parse_expiry(&pair?.0).map(|(deadline_ms, _, _)| deadline_ms),
            None => None,
        };
        let answers = once::next_deadline(&*self.state)?;
        let plain = self.next_kv_deadline_ms()?;
        Ok(indexed.into_iter().chain(answers).chain(plain).min())
    }

    /// Returns the earliest deadline of a plain key: the one the leader watches closely,
    /// as Redis clients expect keys to go on time.
    pub fn next_kv_deadline_ms(&self) -> shoal_storage::Result<Option<u64>> {
        let _reading = self.gate.read().unwrap_or_else(PoisonError::into_inner);
        match self.state.scan_prefix(keys::KV_EXPIRY_PREFIX).next() {
            Some(pair) => Ok(keys::parse_kv_expiry(&pair?.0).map(|(deadline_ms, _)| deadline_ms)),
            None => Ok(None),
        }
    }
}

/// The bytes of a key's position in a [`StateReader::page`]: a `SCAN` cursor holds a
/// namespace and a position, in 64 bits.
pub const POSITION_BYTES: usize = 7;

/// The position of the entry whose key, after its namespace's prefix, is `suffix`: its
/// first [`POSITION_BYTES`] bytes as a number (padded with zeros). Positions rise with
/// tree order, so a scan that goes on from a position misses nothing.
fn position_of(suffix: &[u8]) -> u64 {
    let mut bytes = [0_u8; 8];
    let taken = suffix.len().min(POSITION_BYTES);
    bytes[8 - POSITION_BYTES..8 - POSITION_BYTES + taken].copy_from_slice(&suffix[..taken]);
    u64::from_be_bytes(bytes)
}

/// The kinds of entries a scan of the key space walks, one after another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespace {
    /// Plain keys; an entry's suffix is the key's hash, then the key.
    Kv,
    /// Sessions; an entry's suffix is the session id.
    Sessions,
    /// Searches and trackers; an entry's suffix is the id.
    Progress,
}

impl Namespace {
    fn prefix(self) -> &'static [u8] {
        match self {
            Namespace::Kv => keys::KV_PREFIX,
            Namespace::Sessions => keys::SESSION_PREFIX,
            Namespace::Progress => keys::PROGRESS_PREFIX,
        }
    }
}

/// One page of a scan: the entries (key after the namespace's prefix, stored value) and
/// where the next page starts. A page ends only between two positions, never inside
/// the entries of one position, so it may hold a few more than asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanPage {
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
    pub next: Option<u64>,
}

pub(super) fn read_session(
    state: &dyn Tree,
    id: &str,
) -> shoal_storage::Result<Option<SessionRecord>> {
    state.get(&keys::session(id))?.map(|bytes| codec::decode(&bytes, "session")).transpose()
}

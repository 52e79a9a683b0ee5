//! [`StateReader`]: read access to the applied state, shared with the HTTP handlers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use shoal_storage::{codec, Tree};

use crate::types::{BlobMeta, ProgressRecord, SessionRecord};
use crate::{blob, keys, once, progress};

/// Read access to the applied state, shared with the HTTP handlers.
///
/// Reads see everything applied so far; callers that need linearizability wait on the
/// read barrier of [`crate::Cluster`] first.
#[derive(Debug, Clone)]
pub struct StateReader {
    pub(super) state: Arc<dyn Tree>,
    pub(super) num_sessions: Arc<AtomicU64>,
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
        Ok(indexed.into_iter().chain(answers).min())
    }
}

pub(super) fn read_session(
    state: &dyn Tree,
    id: &str,
) -> shoal_storage::Result<Option<SessionRecord>> {
    state.get(&keys::session(id))?.map(|bytes| codec::decode(&bytes, "session")).transpose()
}

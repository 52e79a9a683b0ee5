//! openraft's [`RaftLogStorage`] on an [`Engine`].
//!
//! Contract: the vote is fsynced before `save_vote` returns, and appended entries are
//! fsynced before openraft's [`LogFlushed`] callback fires. (openraft 0.9 waits for that
//! callback before its next append, so writes are batched by openraft, which appends
//! every client write queued during one fsync as one call.)
//!
//! Purging never runs ahead of the state machine: with a purge guard set, `purge(upto)`
//! first waits until the state machine has applied `upto`, so that a crash can never
//! leave a state machine behind the start of the log.

use std::fmt::Debug;
use std::io;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{LogId, OptionalSend, RaftLogId, RaftTypeConfig, StorageIOError, Vote};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::watch;

use crate::{codec, Engine, Tree, WriteBatch};

const LOG_TREE: &str = "raft_log";
const META_TREE: &str = "raft_meta";
const VOTE_KEY: &[u8] = b"vote";
const COMMITTED_KEY: &[u8] = b"committed";
const LAST_PURGED_KEY: &[u8] = b"last_purged";
/// How long `purge` waits for the state machine before leaving the entries in place.
const PURGE_GUARD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

type RaftStorageError<C> = openraft::StorageError<<C as RaftTypeConfig>::NodeId>;

/// The Raft log and vote, stored in two trees of an [`Engine`].
pub struct LogStore<C: RaftTypeConfig> {
    engine: Arc<dyn Engine>,
    log: Arc<dyn Tree>,
    meta: Arc<dyn Tree>,
    /// The state machine's applied index plus one; `purge` waits on it.
    purge_guard: Option<watch::Receiver<u64>>,
    /// The committed index plus one, 0 while nothing is committed; for metrics.
    committed: Arc<AtomicU64>,
    /// Bytes of entries appended by this process.
    appended: Arc<AtomicU64>,
    _config: PhantomData<C>,
}

impl<C: RaftTypeConfig> Clone for LogStore<C> {
    fn clone(&self) -> Self {
        Self {
            engine: self.engine.clone(),
            log: self.log.clone(),
            meta: self.meta.clone(),
            purge_guard: self.purge_guard.clone(),
            committed: self.committed.clone(),
            appended: self.appended.clone(),
            _config: PhantomData,
        }
    }
}

impl<C: RaftTypeConfig> Debug for LogStore<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").field("engine", &self.engine).finish_non_exhaustive()
    }
}

impl<C> LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
{
    /// Opens the log store on `engine`.
    pub fn open(engine: Arc<dyn Engine>) -> crate::Result<Self> {
        let log = engine.open_tree(LOG_TREE)?;
        let meta = engine.open_tree(META_TREE)?;
        Ok(Self {
            engine,
            log,
            meta,
            purge_guard: None,
            committed: Arc::default(),
            appended: Arc::default(),
            _config: PhantomData,
        })
    }

    /// Makes `purge(upto)` wait until `applied` (the state machine's applied index plus
    /// one, in the same engine) exceeds `upto`. Both live in one engine whose writes
    /// become durable in order, so the purge can never be durable before the state it
    /// discards the log of.
    pub fn with_purge_guard(mut self, applied: watch::Receiver<u64>) -> Self {
        self.purge_guard = Some(applied);
        self
    }

    /// Returns the last index openraft reported committed to this store.
    pub fn committed_index(&self) -> Option<u64> {
        self.committed.load(Ordering::Relaxed).checked_sub(1)
    }

    /// Returns the bytes of the entries this process has appended so far.
    pub fn appended_bytes(&self) -> u64 {
        self.appended.load(Ordering::Relaxed)
    }

    fn read_meta<T: DeserializeOwned>(
        &self,
        key: &[u8],
        what: &'static str,
    ) -> crate::Result<Option<T>> {
        self.meta.get(key)?.map(|bytes| codec::decode(&bytes, what)).transpose()
    }

    async fn flush(&self) -> crate::Result<()> {
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || engine.flush())
            .await
            .map_err(|join_error| io::Error::other(join_error.to_string()))?
    }
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn key_bound(bound: Bound<&u64>) -> Bound<[u8; 8]> {
    match bound {
        Bound::Included(index) => Bound::Included(index_key(*index)),
        Bound::Excluded(index) => Bound::Excluded(index_key(*index)),
        Bound::Unbounded => Bound::Unbounded,
    }
}

fn as_slice(bound: &Bound<[u8; 8]>) -> Bound<&[u8]> {
    match bound {
        Bound::Included(key) => Bound::Included(key.as_slice()),
        Bound::Excluded(key) => Bound::Excluded(key.as_slice()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

impl<C> RaftLogReader<C> for LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, RaftStorageError<C>> {
        let from = key_bound(range.start_bound());
        let to = key_bound(range.end_bound());
        self.log
            .range(as_slice(&from), as_slice(&to))
            .map(|pair| {
                let (_, bytes) = pair.map_err(|e| StorageIOError::read_logs(&e))?;
                codec::decode(&bytes, "raft log entry")
                    .map_err(|e| StorageIOError::read_logs(&e).into())
            })
            .collect()
    }
}

impl<C> RaftLogStorage<C> for LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
{
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, RaftStorageError<C>> {
        let last_purged_log_id: Option<LogId<C::NodeId>> = self
            .read_meta(LAST_PURGED_KEY, "last purged log id")
            .map_err(|e| StorageIOError::read_logs(&e))?;
        let last_entry = self.log.last().map_err(|e| StorageIOError::read_logs(&e))?;
        let last_entry_id = match last_entry {
            Some((_, bytes)) => {
                let entry: C::Entry = codec::decode(&bytes, "raft log entry")
                    .map_err(|e| StorageIOError::read_logs(&e))?;
                Some(entry.get_log_id().clone())
            }
            None => None,
        };
        // Entries left below the purge point by an interrupted purge do not count.
        let last_log_id = std::cmp::max(last_entry_id, last_purged_log_id.clone());
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<C::NodeId>) -> Result<(), RaftStorageError<C>> {
        self.meta
            .insert(VOTE_KEY, &codec::encode(vote))
            .map_err(|e| StorageIOError::write_vote(&e))?;
        self.flush().await.map_err(|e| StorageIOError::write_vote(&e))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<C::NodeId>>, RaftStorageError<C>> {
        Ok(self.read_meta(VOTE_KEY, "vote").map_err(|e| StorageIOError::read_vote(&e))?)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<C::NodeId>>,
    ) -> Result<(), RaftStorageError<C>> {
        // Not fsynced: openraft only uses it to re-apply sooner after a restart.
        let stored_index = committed.as_ref().map_or(0, |log_id| log_id.index + 1);
        self.committed.store(stored_index, Ordering::Relaxed);
        self.meta
            .insert(COMMITTED_KEY, &codec::encode(&committed))
            .map_err(|e| StorageIOError::write(&e))?;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<C::NodeId>>, RaftStorageError<C>> {
        let committed: Option<Option<LogId<C::NodeId>>> = self
            .read_meta(COMMITTED_KEY, "committed log id")
            .map_err(|e| StorageIOError::read(&e))?;
        Ok(committed.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<C>,
    ) -> Result<(), RaftStorageError<C>>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::new();
        let mut bytes = 0;
        for entry in entries {
            let encoded = codec::encode(&entry);
            bytes += encoded.len() as u64;
            batch.put(index_key(entry.get_log_id().index).to_vec(), encoded);
        }
        self.appended.fetch_add(bytes, Ordering::Relaxed);
        self.log.apply(batch).map_err(|e| StorageIOError::write_logs(&e))?;
        let flushed = self.flush().await;
        if let Err(error) = &flushed {
            tracing::error!(%error, "raft log fsync failed");
        }
        callback.log_io_completed(flushed.map_err(|error| io::Error::other(error.to_string())));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<C::NodeId>) -> Result<(), RaftStorageError<C>> {
        let from = index_key(log_id.index);
        let mut batch = WriteBatch::new();
        for pair in self.log.range(Bound::Included(&from), Bound::Unbounded) {
            let (key, _) = pair.map_err(|e| StorageIOError::write_logs(&e))?;
            batch.delete(key);
        }
        self.log.apply(batch).map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<C::NodeId>) -> Result<(), RaftStorageError<C>> {
        if let Some(applied) = &mut self.purge_guard {
            // A follower installing a snapshot is told to purge before the state machine
            // has finished the install; the install runs in another task and needs
            // nothing from the caller, so waiting here cannot deadlock.
            let waited = tokio::time::timeout(
                PURGE_GUARD_TIMEOUT,
                applied.wait_for(|applied| *applied > log_id.index),
            )
            .await;
            if !matches!(waited, Ok(Ok(_))) {
                // Keeping entries openraft considers purged is harmless: it never reads
                // them, and the next purge removes them.
                tracing::warn!(%log_id, "state machine has not applied the purge point; purge skipped");
                return Ok(());
            }
        }
        // Record the purge point first: if a crash interrupts the deletes, the leftover
        // entries sit below it and are never read.
        self.meta
            .insert(LAST_PURGED_KEY, &codec::encode(&log_id))
            .map_err(|e| StorageIOError::write_logs(&e))?;
        let to = index_key(log_id.index);
        let mut batch = WriteBatch::new();
        for pair in self.log.range(Bound::Unbounded, Bound::Included(&to)) {
            let (key, _) = pair.map_err(|e| StorageIOError::write_logs(&e))?;
            batch.delete(key);
        }
        self.log.apply(batch).map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;
    use std::time::Duration;

    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::SledEngine;

    openraft::declare_raft_types!(TestConfig);

    fn log_id(index: u64) -> LogId<u64> {
        LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    #[tokio::test]
    async fn purge_waits_for_the_state_machine_to_apply_the_purge_point() {
        let engine: Arc<dyn Engine> = Arc::new(SledEngine::temporary().unwrap());
        let (applied, guard) = watch::channel(0_u64);
        let mut store =
            LogStore::<TestConfig>::open(engine.clone()).unwrap().with_purge_guard(guard);
        let log = engine.open_tree(LOG_TREE).unwrap();
        for index in 1..=10 {
            let entry = openraft::Entry::<TestConfig> {
                log_id: log_id(index),
                payload: EntryPayload::Blank,
            };
            log.insert(&index_key(index), &codec::encode(&entry)).unwrap();
        }

        let mut purging = store.clone();
        let purge = tokio::spawn(async move { purging.purge(log_id(5)).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!purge.is_finished(), "purged before the state machine applied index 5");
        assert_eq!(store.try_get_log_entries(1..=10).await.unwrap().len(), 10);

        applied.send_replace(6); // index 5 applied
        purge.await.unwrap().unwrap();
        let left = store.try_get_log_entries(0..100).await.unwrap();
        assert_eq!(left.first().map(|entry| entry.log_id.index), Some(6));
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(5)));
        assert_eq!(state.last_log_id, Some(log_id(10)));
    }
}

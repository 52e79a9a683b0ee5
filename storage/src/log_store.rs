//! openraft's [`RaftLogStorage`] on an [`Engine`], with group commit.
//!
//! Contract: the vote is fsynced before `save_vote` returns, and an appended entry is
//! fsynced before openraft's [`LogFlushed`] callback fires. Appends return as soon as
//! the entries are written; one flusher task fsyncs for every append queued while the
//! previous fsync ran, so concurrent writes share one disk flush.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{LogId, OptionalSend, RaftLogId, RaftTypeConfig, StorageIOError, Vote};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::{codec, Engine, Tree, WriteBatch};

const LOG_TREE: &str = "raft_log";
const META_TREE: &str = "raft_meta";
const VOTE_KEY: &[u8] = b"vote";
const COMMITTED_KEY: &[u8] = b"committed";
const LAST_PURGED_KEY: &[u8] = b"last_purged";

type RaftStorageError<C> = openraft::StorageError<<C as RaftTypeConfig>::NodeId>;

/// The Raft log and vote, stored in two trees of an [`Engine`].
pub struct LogStore<C: RaftTypeConfig> {
    engine: Arc<dyn Engine>,
    log: Arc<dyn Tree>,
    meta: Arc<dyn Tree>,
    flush_requests: mpsc::UnboundedSender<LogFlushed<C>>,
    /// The committed index plus one, 0 while nothing is committed; for metrics.
    committed: Arc<AtomicU64>,
}

impl<C: RaftTypeConfig> Clone for LogStore<C> {
    fn clone(&self) -> Self {
        Self {
            engine: self.engine.clone(),
            log: self.log.clone(),
            meta: self.meta.clone(),
            flush_requests: self.flush_requests.clone(),
            committed: self.committed.clone(),
        }
    }
}

impl<C: RaftTypeConfig> Debug for LogStore<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

impl<C> LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
{
    /// Opens the log store on `engine` and starts its flusher task on the current runtime.
    pub fn open(engine: Arc<dyn Engine>) -> crate::Result<Self> {
        let log = engine.open_tree(LOG_TREE)?;
        let meta = engine.open_tree(META_TREE)?;
        let (flush_requests, pending) = mpsc::unbounded_channel();
        tokio::spawn(run_flusher::<C>(engine.clone(), pending));
        Ok(Self {
            engine,
            log,
            meta,
            flush_requests,
            committed: Arc::default(),
        })
    }

    /// Returns the last index openraft reported committed to this store.
    pub fn committed_index(&self) -> Option<u64> {
        self.committed.load(Ordering::Relaxed).checked_sub(1)
    }

    fn read_meta<T: DeserializeOwned>(
        &self,
        key: &[u8],
        what: &'static str,
    ) -> crate::Result<Option<T>> {
        self.meta
            .get(key)?
            .map(|bytes| codec::decode(&bytes, what))
            .transpose()
    }

    async fn flush(&self) -> crate::Result<()> {
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || engine.flush())
            .await
            .map_err(|join_error| io::Error::other(join_error.to_string()))?
    }
}

/// Fsyncs on behalf of every append queued since the last fsync, then reports them
/// persisted in the order they were appended.
async fn run_flusher<C: RaftTypeConfig>(
    engine: Arc<dyn Engine>,
    mut pending: mpsc::UnboundedReceiver<LogFlushed<C>>,
) {
    let mut callbacks = Vec::new();
    while let Some(first) = pending.recv().await {
        callbacks.push(first);
        while let Ok(next) = pending.try_recv() {
            callbacks.push(next);
        }
        let engine = engine.clone();
        let outcome = match tokio::task::spawn_blocking(move || engine.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(join_error) => Err(join_error.to_string()),
        };
        if let Err(reason) = &outcome {
            tracing::error!(%reason, "raft log fsync failed");
        }
        for callback in callbacks.drain(..) {
            callback.log_io_completed(outcome.clone().map_err(io::Error::other));
        }
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
        let last_log_id = match last_entry {
            Some((_, bytes)) => {
                let entry: C::Entry = codec::decode(&bytes, "raft log entry")
                    .map_err(|e| StorageIOError::read_logs(&e))?;
                Some(entry.get_log_id().clone())
            }
            None => last_purged_log_id.clone(),
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<C::NodeId>) -> Result<(), RaftStorageError<C>> {
        self.meta
            .insert(VOTE_KEY, &codec::encode(vote))
            .map_err(|e| StorageIOError::write_vote(&e))?;
        self.flush()
            .await
            .map_err(|e| StorageIOError::write_vote(&e))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<C::NodeId>>, RaftStorageError<C>> {
        Ok(self
            .read_meta(VOTE_KEY, "vote")
            .map_err(|e| StorageIOError::read_vote(&e))?)
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
        for entry in entries {
            batch.put(
                index_key(entry.get_log_id().index).to_vec(),
                codec::encode(&entry),
            );
        }
        self.log
            .apply(batch)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        // The flusher fsyncs and then fires the callback; if it is gone, the runtime is
        // shutting down and nothing may be reported persisted.
        if let Err(mpsc::error::SendError(callback)) = self.flush_requests.send(callback) {
            callback.log_io_completed(Err(io::Error::other("raft log flusher stopped")));
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<C::NodeId>) -> Result<(), RaftStorageError<C>> {
        let from = index_key(log_id.index);
        let mut batch = WriteBatch::new();
        for pair in self.log.range(Bound::Included(&from), Bound::Unbounded) {
            let (key, _) = pair.map_err(|e| StorageIOError::write_logs(&e))?;
            batch.delete(key);
        }
        self.log
            .apply(batch)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<C::NodeId>) -> Result<(), RaftStorageError<C>> {
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
        self.log
            .apply(batch)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }
}

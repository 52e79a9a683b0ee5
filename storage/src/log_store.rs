//! openraft's [`RaftLogStorage`] on a [`Wal`] of its own directory.
//!
//! Contract: the vote is fsynced before `save_vote` returns, and appended entries are
//! fsynced before openraft's [`LogFlushed`] callback fires. (openraft 0.9 waits for that
//! callback before its next append, so writes are batched by openraft, which appends
//! every client write queued during one fsync as one call.)
//!
//! Purging never runs ahead of the state machine: with a purge guard set, `purge(upto)`
//! first waits until the state machine's state at `upto` or later is durable, so that a
//! crash can never leave a state machine behind the start of the log.
//!
//! Opening never loses acknowledged entries silently. The [`Wal`] refuses what its files
//! show to be damaged; what they cannot show is checked here, before the log is repaired
//! (a torn append cut): the log must still hold every index openraft recorded as
//! committed (the commit hint; an older hint only checks less), and must start right
//! after its purge point. Either failing is a [`StorageError::Damaged`]; without it
//! openraft would stop with an error of its own, or carry on without the entries.

use std::fmt::Debug;
use std::io;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{LogId, OptionalSend, RaftLogId, RaftTypeConfig, StorageIOError, Vote};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::wal::{CheckedWal, Wal};
use crate::{codec, Engine, StorageError, WriteBatch};

/// Where builds before the segment log kept the log and the vote, in the engine.
const LEGACY_LOG_TREE: &str = "raft_log";
const LEGACY_META_TREE: &str = "raft_meta";
const LEGACY_VOTE_KEY: &[u8] = b"vote";
const LEGACY_COMMITTED_KEY: &[u8] = b"committed";
const LEGACY_LAST_PURGED_KEY: &[u8] = b"last_purged";
/// Entries copied per append while importing a legacy log.
const IMPORT_CHUNK: usize = 1024;
/// How long `purge` waits for the state machine before leaving the entries in place.
const PURGE_GUARD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

type RaftStorageError<C> = openraft::StorageError<<C as RaftTypeConfig>::NodeId>;

/// What the log keeps durably beside its entries.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
struct Meta<C: RaftTypeConfig> {
    vote: Option<Vote<C::NodeId>>,
    last_purged: Option<LogId<C::NodeId>>,
}

impl<C: RaftTypeConfig> Clone for Meta<C> {
    fn clone(&self) -> Self {
        Self { vote: self.vote.clone(), last_purged: self.last_purged.clone() }
    }
}

/// The Raft log and vote, in a [`Wal`].
pub struct LogStore<C: RaftTypeConfig> {
    wal: Arc<Wal>,
    meta: Arc<Mutex<Meta<C>>>,
    /// The state machine's durable applied index plus one; `purge` waits on it.
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
            wal: self.wal.clone(),
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
        f.debug_struct("LogStore").field("wal", &self.wal).finish_non_exhaustive()
    }
}

impl<C> LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
{
    /// Opens the log store in `dir`. A log that an older build kept in `legacy` (the
    /// engine's `raft_log` and `raft_meta` trees) is moved into `dir` first.
    pub fn open(dir: &Path, legacy: Option<&dyn Engine>) -> crate::Result<Self> {
        if let Some(engine) = legacy {
            import_legacy_log::<C>(engine, dir)?;
        }
        let checked = Wal::check(dir)?;
        let meta = read_meta::<C>(&checked)?;
        check_holds_what_was_acknowledged(&checked, &meta)?;
        let (wal, _) = checked.open()?;
        Ok(Self {
            wal: Arc::new(wal),
            meta: Arc::new(Mutex::new(meta)),
            purge_guard: None,
            committed: Arc::default(),
            appended: Arc::default(),
            _config: PhantomData,
        })
    }

    /// Makes `purge(upto)` wait until `durable` (the state machine's durable applied
    /// index plus one) exceeds `upto`.
    pub fn with_purge_guard(mut self, durable: watch::Receiver<u64>) -> Self {
        self.purge_guard = Some(durable);
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

    /// Returns the bytes the log's files hold.
    pub fn size_on_disk(&self) -> u64 {
        self.wal.size_on_disk()
    }

    fn meta(&self) -> Meta<C> {
        self.meta.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Writes the metadata changed by `change` durably, then keeps it.
    async fn update_meta(&self, change: impl FnOnce(&mut Meta<C>)) -> crate::Result<()> {
        let mut meta = self.meta();
        change(&mut meta);
        let bytes = codec::encode(&meta);
        let wal = self.wal.clone();
        blocking(move || wal.write_meta(&bytes)).await?;
        *self.meta.lock().unwrap_or_else(PoisonError::into_inner) = meta;
        Ok(())
    }
}

/// Reads the vote and purge point, as kept beside the log.
fn read_meta<C: RaftTypeConfig>(checked: &CheckedWal) -> crate::Result<Meta<C>> {
    let Some(bytes) = checked.read_meta()? else {
        return Ok(Meta { vote: None, last_purged: None });
    };
    codec::decode(&bytes, "raft log meta").map_err(|error| match error {
        // Passed its checksum, yet is not a Meta.
        StorageError::Corrupt { reason, .. } => {
            StorageError::Damaged { path: checked.meta_path(), reason }
        }
        other => other,
    })
}

/// Refuses a log that lost entries at its end or its front, by what openraft recorded.
///
/// The commit hint is written only after the entries it covers were appended and
/// fsynced (openraft awaits `append`, which returns after the fsync, before it commits),
/// and committed entries are never truncated, only purged; so a hint above both the last
/// entry and the purge point means entries were lost. (openraft 0.9 does not save the
/// committed index when it installs a snapshot, so a hint never runs ahead of the log
/// that way.) openraft reads the log from the purge point on: a log that starts later
/// lost its front.
fn check_holds_what_was_acknowledged<C>(checked: &CheckedWal, meta: &Meta<C>) -> crate::Result<()>
where
    C: RaftTypeConfig,
{
    let held = checked.bounds();
    let purged = meta.last_purged.as_ref().map(|log_id| log_id.index);
    let committed = checked
        .read_hint()
        .and_then(|bytes| codec::decode::<Option<LogId<C::NodeId>>>(&bytes, "commit hint").ok())
        .flatten()
        .map(|log_id| log_id.index);
    let describe = |index: Option<u64>| index.map_or("nothing".to_string(), |i| i.to_string());
    if let Some(committed) = committed {
        if Some(committed) > held.map(|(_, last)| last).max(purged) {
            let path = checked.newest_segment_path().unwrap_or_else(|| checked.dir().to_path_buf());
            let reason = format!(
                "openraft recorded index {committed} as committed, but the log holds entries \
                 only up to {} and is purged up to {}: acknowledged entries are missing",
                describe(held.map(|(_, last)| last)),
                describe(purged)
            );
            return Err(StorageError::Damaged { path, reason });
        }
    }
    if let Some((first, _)) = held {
        let expected_first = purged.map_or(0, |purged| purged + 1);
        if first > expected_first {
            let path = checked.first_segment_path().expect("a log holding entries has one");
            let reason = format!(
                "the log starts at index {first}, but it is purged only up to {}: entries \
                 {expected_first} to {} are missing",
                describe(purged),
                first - 1
            );
            return Err(StorageError::Damaged { path, reason });
        }
    }
    Ok(())
}

/// Runs `work` on the blocking threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> crate::Result<T> + Send + 'static,
) -> crate::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|join_error| Err(io::Error::other(join_error.to_string()).into()))
}

/// Moves a log kept in the engine by an older build into `dir`: copied into a new
/// directory, which is renamed into place once complete; the engine's trees are
/// cleared afterwards. A crash at any point leaves one whole copy to start from.
fn import_legacy_log<C: RaftTypeConfig>(engine: &dyn Engine, dir: &Path) -> crate::Result<()> {
    let log = engine.open_tree(LEGACY_LOG_TREE)?;
    let meta = engine.open_tree(LEGACY_META_TREE)?;
    let has_legacy = log.last()?.is_some() || meta.get(LEGACY_VOTE_KEY)?.is_some();
    if !has_legacy {
        return Ok(());
    }
    if !dir.exists() {
        let importing = importing_dir(dir);
        if importing.exists() {
            std::fs::remove_dir_all(&importing)?;
        }
        let (wal, _) = Wal::open(&importing)?;
        let mut chunk = Vec::with_capacity(IMPORT_CHUNK);
        let mut num_entries = 0_u64;
        for pair in log.range(Bound::Unbounded, Bound::Unbounded) {
            let (key, entry) = pair?;
            let index = u64::from_be_bytes(key.as_slice().try_into().map_err(|_| {
                crate::StorageError::Corrupt { what: "raft log", reason: "bad key".into() }
            })?);
            chunk.push((index, entry));
            if chunk.len() == IMPORT_CHUNK {
                num_entries += chunk.len() as u64;
                wal.append(&chunk)?;
                chunk.clear();
            }
        }
        num_entries += chunk.len() as u64;
        wal.append(&chunk)?;
        let vote =
            meta.get(LEGACY_VOTE_KEY)?.map(|bytes| codec::decode(&bytes, "vote")).transpose()?;
        let last_purged = meta
            .get(LEGACY_LAST_PURGED_KEY)?
            .map(|bytes| codec::decode(&bytes, "last purged log id"))
            .transpose()?;
        let imported = codec::encode(&Meta::<C> { vote, last_purged });
        wal.write_meta(&imported)?;
        if let Some(committed) = meta.get(LEGACY_COMMITTED_KEY)? {
            wal.write_hint(&committed)?;
        }
        drop(wal);
        std::fs::rename(&importing, dir)?;
        if let Some(parent) = dir.parent() {
            std::fs::File::open(parent)?.sync_all()?;
        }
        tracing::info!(num_entries, dir = %dir.display(), "moved the raft log out of the database");
    }
    // Either just imported or imported before a crash: the engine's copy goes.
    log.clear()?;
    let mut clear_meta = WriteBatch::new();
    for key in [LEGACY_VOTE_KEY, LEGACY_COMMITTED_KEY, LEGACY_LAST_PURGED_KEY] {
        clear_meta.delete(key);
    }
    meta.apply(clear_meta)?;
    engine.flush()
}

fn importing_dir(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".importing");
    dir.with_file_name(name)
}

/// The indexes `range` asks for, as `from..to`, within what the log holds.
fn index_range(range: &impl RangeBounds<u64>, held: (u64, u64)) -> (u64, u64) {
    let from = match range.start_bound() {
        Bound::Included(index) => *index,
        Bound::Excluded(index) => index.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let to = match range.end_bound() {
        Bound::Included(index) => index.saturating_add(1),
        Bound::Excluded(index) => *index,
        Bound::Unbounded => u64::MAX,
    };
    (from.max(held.0), to.min(held.1.saturating_add(1)))
}

impl<C> RaftLogReader<C> for LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Serialize + DeserializeOwned,
{
    /// Returns the entries held in `range`; those below the purge point count as gone.
    ///
    /// Reads run on the calling thread: they are `pread`s of recently appended entries,
    /// which the page cache holds.
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, RaftStorageError<C>> {
        let Some((first, last)) = self.wal.bounds() else { return Ok(Vec::new()) };
        let after_purge = self.meta().last_purged.map_or(0, |log_id| log_id.index + 1);
        let (from, to) = index_range(&range, (first.max(after_purge), last));
        let records = self.wal.read(from, to).map_err(|e| StorageIOError::read_logs(&e))?;
        records
            .iter()
            .map(|(_, bytes)| {
                codec::decode(bytes, "raft log entry")
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
        let last_purged_log_id = self.meta().last_purged;
        let last_entry_id = match self.wal.bounds() {
            Some((_, last)) => {
                let records =
                    self.wal.read(last, last + 1).map_err(|e| StorageIOError::read_logs(&e))?;
                let entry: C::Entry = codec::decode(&records[0].1, "raft log entry")
                    .map_err(|e| StorageIOError::read_logs(&e))?;
                Some(entry.get_log_id().clone())
            }
            None => None,
        };
        // Entries left below the purge point (in a segment that also holds later ones,
        // or by an interrupted purge) do not count.
        let last_log_id = std::cmp::max(last_entry_id, last_purged_log_id.clone());
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<C::NodeId>) -> Result<(), RaftStorageError<C>> {
        let vote = vote.clone();
        self.update_meta(|meta| meta.vote = Some(vote))
            .await
            .map_err(|e| StorageIOError::write_vote(&e))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<C::NodeId>>, RaftStorageError<C>> {
        Ok(self.meta().vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<C::NodeId>>,
    ) -> Result<(), RaftStorageError<C>> {
        // Not fsynced (a hint): openraft only uses it to re-apply sooner after a restart,
        // and an older committed index is still a committed one.
        let stored_index = committed.as_ref().map_or(0, |log_id| log_id.index + 1);
        self.committed.store(stored_index, Ordering::Relaxed);
        self.wal.write_hint(&codec::encode(&committed)).map_err(|e| StorageIOError::write(&e))?;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<C::NodeId>>, RaftStorageError<C>> {
        let committed: Option<Option<LogId<C::NodeId>>> =
            self.wal.read_hint().and_then(|bytes| codec::decode(&bytes, "committed log id").ok());
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
        let records: Vec<(u64, Vec<u8>)> = entries
            .into_iter()
            .map(|entry| (entry.get_log_id().index, codec::encode(&entry)))
            .collect();
        let bytes: u64 = records.iter().map(|(_, encoded)| encoded.len() as u64).sum();
        self.appended.fetch_add(bytes, Ordering::Relaxed);
        let wal = self.wal.clone();
        if let Err(error) = blocking(move || wal.append(&records)).await {
            tracing::error!(%error, "raft log append failed");
            return Err(StorageIOError::write_logs(&error).into());
        }
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<C::NodeId>) -> Result<(), RaftStorageError<C>> {
        let wal = self.wal.clone();
        blocking(move || wal.truncate(log_id.index))
            .await
            .map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<C::NodeId>) -> Result<(), RaftStorageError<C>> {
        if let Some(durable) = &mut self.purge_guard {
            // A follower installing a snapshot is told to purge before the state machine
            // has finished the install; the install runs in another task and needs
            // nothing from the caller, so waiting here cannot deadlock.
            let waited = tokio::time::timeout(
                PURGE_GUARD_TIMEOUT,
                durable.wait_for(|durable| *durable > log_id.index),
            )
            .await;
            if !matches!(waited, Ok(Ok(_))) {
                // Keeping entries openraft considers purged is harmless: it never reads
                // them, and the next purge removes them.
                tracing::warn!(%log_id, "state machine has not made the purge point durable; purge skipped");
                return Ok(());
            }
        }
        // Record the purge point first: if a crash comes before the files are deleted,
        // the leftover entries sit below it and are never read.
        let purged = log_id.clone();
        self.update_meta(|meta| meta.last_purged = Some(purged))
            .await
            .map_err(|e| StorageIOError::write_logs(&e))?;
        let wal = self.wal.clone();
        blocking(move || wal.purge(log_id.index))
            .await
            .map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;
    use std::time::Duration;

    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::{RedbEngine, SledEngine};

    openraft::declare_raft_types!(TestConfig);

    fn log_id(index: u64) -> LogId<u64> {
        LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    fn blank(index: u64) -> openraft::Entry<TestConfig> {
        openraft::Entry::<TestConfig> { log_id: log_id(index), payload: EntryPayload::Blank }
    }

    #[tokio::test]
    async fn purge_waits_until_the_state_machine_made_the_purge_point_durable() {
        let dir = tempfile::tempdir().unwrap();
        let (durable, guard) = watch::channel(0_u64);
        let mut store =
            LogStore::<TestConfig>::open(dir.path(), None).unwrap().with_purge_guard(guard);
        let records: Vec<_> = (1..=10).map(|index| (index, codec::encode(&blank(index)))).collect();
        store.wal.append(&records).unwrap();

        let mut purging = store.clone();
        let purge = tokio::spawn(async move { purging.purge(log_id(5)).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!purge.is_finished(), "purged before the state machine made index 5 durable");
        assert_eq!(store.try_get_log_entries(1..=10).await.unwrap().len(), 10);

        durable.send_replace(6); // index 5 durable
        purge.await.unwrap().unwrap();
        let left = store.try_get_log_entries(0..100).await.unwrap();
        assert_eq!(left.first().map(|entry| entry.log_id.index), Some(6));
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(5)));
        assert_eq!(state.last_log_id, Some(log_id(10)));
    }

    /// A data dir written by a build that kept the log in the engine starts with the same
    /// log, vote and purge point, and the engine's copy is gone.
    fn imports_a_legacy_log(engine: Arc<dyn Engine>, dir: &Path) {
        let log = engine.open_tree(LEGACY_LOG_TREE).unwrap();
        let meta = engine.open_tree(LEGACY_META_TREE).unwrap();
        for index in 3..=2_100_u64 {
            log.insert(&index.to_be_bytes(), &codec::encode(&blank(index))).unwrap();
        }
        let vote = Vote::new_committed(4, 2);
        meta.insert(LEGACY_VOTE_KEY, &codec::encode(&vote)).unwrap();
        meta.insert(LEGACY_LAST_PURGED_KEY, &codec::encode(&log_id(2))).unwrap();
        meta.insert(LEGACY_COMMITTED_KEY, &codec::encode(&Some(log_id(2_000)))).unwrap();
        engine.flush().unwrap();

        let log_dir = dir.join("raft-log");
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let mut store = LogStore::<TestConfig>::open(&log_dir, Some(&*engine)).unwrap();
            assert_eq!(store.read_vote().await.unwrap(), Some(vote));
            assert_eq!(store.read_committed().await.unwrap(), Some(log_id(2_000)));
            let state = store.get_log_state().await.unwrap();
            assert_eq!(state.last_purged_log_id, Some(log_id(2)));
            assert_eq!(state.last_log_id, Some(log_id(2_100)));
            let entries = store.try_get_log_entries(..).await.unwrap();
            assert_eq!(entries.len(), 2_098);
            assert_eq!(entries[0].log_id, log_id(3));
        });
        assert!(log.last().unwrap().is_none(), "the engine's copy is cleared");
        assert!(meta.get(LEGACY_VOTE_KEY).unwrap().is_none());
        // A second start finds nothing left to import and the same log.
        let store = LogStore::<TestConfig>::open(&log_dir, Some(&*engine)).unwrap();
        assert_eq!(store.wal.bounds(), Some((3, 2_100)));
        assert!(!importing_dir(&log_dir).exists());
    }

    #[test]
    fn imports_a_legacy_log_from_redb() {
        let dir = tempfile::tempdir().unwrap();
        let engine =
            Arc::new(RedbEngine::open_with_cache(&dir.path().join("redb"), 1 << 20).unwrap());
        imports_a_legacy_log(engine, dir.path());
    }

    #[test]
    fn imports_a_legacy_log_from_sled() {
        let dir = tempfile::tempdir().unwrap();
        let engine =
            Arc::new(SledEngine::open_with_cache(&dir.path().join("db"), 1 << 20).unwrap());
        imports_a_legacy_log(engine, dir.path());
    }

    /// Returns every file of `dir` with its bytes.
    fn dir_contents(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .map(|path| (path.clone(), std::fs::read(&path).unwrap()))
            .collect()
    }

    /// Opens the store in `dir`, which must be refused as damaged, naming `file`, with
    /// every file left as it was; returns the message.
    fn assert_refused(dir: &Path, file: &Path) -> String {
        let before = dir_contents(dir);
        let error = LogStore::<TestConfig>::open(dir, None).expect_err("must be refused");
        let StorageError::Damaged { path, .. } = &error else { panic!("not damage: {error}") };
        assert_eq!(path, file, "{error}");
        assert_eq!(dir_contents(dir), before, "a refused open changed the files");
        error.to_string()
    }

    fn encoded(range: std::ops::Range<u64>) -> Vec<(u64, Vec<u8>)> {
        range.map(|index| (index, codec::encode(&blank(index)))).collect()
    }

    /// Writes entries 0..=9 in two appends, 0..=4 and 5..=9, into one segment, with
    /// `committed` recorded as committed; returns the segment and where its first append
    /// ends.
    async fn ten_entries(dir: &Path, committed: u64) -> (PathBuf, u64) {
        let mut store = LogStore::<TestConfig>::open(dir, None).unwrap();
        store.wal.append(&encoded(0..5)).unwrap();
        let segment = dir.join(format!("{:020}.seg", 0));
        let first_append_end = std::fs::metadata(&segment).unwrap().len();
        store.wal.append(&encoded(5..10)).unwrap();
        store.save_committed(Some(log_id(committed))).await.unwrap();
        (segment, first_append_end)
    }

    #[tokio::test]
    async fn entries_lost_from_the_end_are_refused_by_the_commit_hint_before_any_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (segment, first_append_end) = ten_entries(dir.path(), 9).await;
        let whole = std::fs::read(&segment).unwrap();

        // The segment cut at the end of its first append: its own bytes cannot show it.
        std::fs::write(&segment, &whole[..first_append_end as usize]).unwrap();
        assert_eq!(Wal::check(dir.path()).unwrap().bounds(), Some((0, 4)));
        let message = assert_refused(dir.path(), &segment);
        assert!(message.contains("openraft recorded index 9 as committed"), "{message}");
        assert!(message.contains("holds entries only up to 4 and is purged up to nothing"));

        // A byte of the last append flipped: to the log alone, a torn append to cut.
        let mut damaged = whole.clone();
        let last_byte_of_entry_9 = whole.len() - 28 - 1;
        damaged[last_byte_of_entry_9] ^= 1;
        std::fs::write(&segment, &damaged).unwrap();
        let checked = Wal::check(dir.path()).unwrap();
        assert_eq!(checked.bounds(), Some((0, 4)));
        assert_eq!(checked.recovery().torn_bytes, whole.len() as u64 - first_append_end);
        drop(checked);
        assert_refused(dir.path(), &segment);

        std::fs::write(&segment, &whole).unwrap();
        let mut store = LogStore::<TestConfig>::open(dir.path(), None).unwrap();
        assert_eq!(store.get_log_state().await.unwrap().last_log_id, Some(log_id(9)));
    }

    #[tokio::test]
    async fn a_torn_append_above_the_commit_hint_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (segment, first_append_end) = ten_entries(dir.path(), 4).await;
        let whole = std::fs::read(&segment).unwrap();
        std::fs::write(&segment, &whole[..first_append_end as usize + 40]).unwrap();
        let mut store = LogStore::<TestConfig>::open(dir.path(), None).unwrap();
        assert_eq!(store.get_log_state().await.unwrap().last_log_id, Some(log_id(4)));
        assert_eq!(std::fs::metadata(&segment).unwrap().len(), first_append_end);
    }

    #[tokio::test]
    async fn entries_missing_at_the_front_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let big = |index: u64| openraft::Entry::<TestConfig> {
            log_id: log_id(index),
            payload: EntryPayload::Normal("x".repeat(3 << 20)),
        };
        let first = dir.path().join(format!("{:020}.seg", 0));
        let second = dir.path().join(format!("{:020}.seg", 2));
        {
            let store = LogStore::<TestConfig>::open(dir.path(), None).unwrap();
            for index in 0..2 {
                store.wal.append(&[(index, codec::encode(&big(index)))]).unwrap();
            }
            store.wal.append(&encoded(2..5)).unwrap();
            assert!(first.exists() && second.exists());
        }
        // The first segment (entries 0 and 1) deleted; nothing was purged.
        let kept = std::fs::read(&first).unwrap();
        std::fs::remove_file(&first).unwrap();
        let message = assert_refused(dir.path(), &second);
        assert!(message.contains("starts at index 2, but it is purged only up to nothing"));
        assert!(message.contains("entries 0 to 1 are missing"), "{message}");

        // Purged up to 1, the same files are a whole log.
        std::fs::write(&first, kept).unwrap();
        let mut store = LogStore::<TestConfig>::open(dir.path(), None).unwrap();
        store.purge(log_id(1)).await.unwrap();
        assert!(!first.exists());
        drop(store);
        let mut store = LogStore::<TestConfig>::open(dir.path(), None).unwrap();
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id(1)));
        assert_eq!(state.last_log_id, Some(log_id(4)));
    }

    #[test]
    fn index_ranges_are_clamped_to_what_is_held() {
        assert_eq!(index_range(&(..), (5, 9)), (5, 10));
        assert_eq!(index_range(&(6..8), (5, 9)), (6, 8));
        assert_eq!(index_range(&(6..=20), (5, 9)), (6, 10));
        assert_eq!(index_range(&(0..3), (5, 9)), (5, 3));
    }
}

//! The redb implementation of [`Engine`]: a copy-on-write B-tree in one file, whose freed
//! pages are reused, so the file stays near the size of the live data under
//! insert-then-delete churn (a Raft log, expiring sessions).
//!
//! Writes go to a write-back buffer ([`overlay`](super::overlay)) that reads look at
//! first; a committer thread writes what is buffered to redb as one transaction without
//! fsync ([`Durability::None`]) every [`COMMIT_INTERVAL`], or sooner when
//! [`COMMIT_BYTES`] wait. [`Engine::flush`] commits what is buffered with
//! [`Durability::Immediate`], which makes it and every commit before it durable. Commits
//! go one at a time, each with every write buffered before it, and redb recovers to the
//! last durable commit: a crash loses a suffix of the writes, never reorders them, and a
//! batch is all or none.

use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock};

use redb::{Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::overlay::{
    buffered_range, Merged, Overlay, COMMIT_BYTES, COMMIT_INTERVAL, WRITER_COMMITS_BYTES,
};
use super::{Engine, KeyValue, Tree, WriteBatch};
use crate::{Result, StorageError};

/// The database file inside the engine's directory.
const FILE_NAME: &str = "shoal.redb";
/// Pairs a range iterator reads per read transaction (ranges are not point-in-time
/// snapshots, as with sled: each chunk sees the writes committed before it, and the
/// buffered writes as they were when the range began).
const RANGE_CHUNK: usize = 512;

/// An [`Engine`] on one redb database file. Clones share the database; when the last
/// one goes, what is buffered is committed (without fsync) and the file is closed.
#[derive(Clone)]
pub struct RedbEngine {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for RedbEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbEngine").field("path", &self.handle.shared.path).finish()
    }
}

/// Owns the committer thread: dropping it commits what is buffered and ends the thread.
struct Handle {
    shared: Arc<Shared>,
    committer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.signal(|signal| signal.stop = true);
        if let Some(committer) = self.committer.take() {
            let _ = committer.join();
        }
    }
}

struct Shared {
    db: redb::Database,
    path: std::path::PathBuf,
    buffer: RwLock<Buffer>,
    /// Held while a commit writes: commits go one at a time, in the order of their writes.
    commit_lock: Mutex<()>,
    signal: Mutex<Signal>,
    woken: Condvar,
}

/// Writes not in redb yet: `pending` takes new ones; `committing` is being written.
#[derive(Default)]
struct Buffer {
    pending: Overlay,
    committing: Option<Arc<Overlay>>,
}

#[derive(Default)]
struct Signal {
    wake: bool,
    stop: bool,
}

impl RedbEngine {
    /// Opens (creating if needed) the database in directory `dir`, caching at most
    /// `cache_bytes` of pages in memory.
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(FILE_NAME);
        let cache = usize::try_from(cache_bytes).unwrap_or(usize::MAX);
        let db = redb::Database::builder().set_cache_size(cache).create(&path).map_err(engine)?;
        let shared = Arc::new(Shared {
            db,
            path,
            buffer: RwLock::default(),
            commit_lock: Mutex::default(),
            signal: Mutex::default(),
            woken: Condvar::new(),
        });
        let committer = std::thread::Builder::new().name("redb-commit".to_string()).spawn({
            let shared = shared.clone();
            move || shared.run_committer()
        })?;
        Ok(Self { handle: Arc::new(Handle { shared, committer: Some(committer) }) })
    }

    fn shared(&self) -> &Shared {
        &self.handle.shared
    }
}

impl Shared {
    fn signal(&self, change: impl FnOnce(&mut Signal)) {
        change(&mut self.signal.lock().unwrap_or_else(PoisonError::into_inner));
        self.woken.notify_one();
    }

    /// Commits what is buffered every [`COMMIT_INTERVAL`] or when woken, until stopped.
    fn run_committer(&self) {
        loop {
            let stop = {
                let mut signal = self.signal.lock().unwrap_or_else(PoisonError::into_inner);
                if !signal.wake && !signal.stop {
                    signal = self
                        .woken
                        .wait_timeout(signal, COMMIT_INTERVAL)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
                signal.wake = false;
                signal.stop
            };
            if let Err(error) = self.commit(Durability::None, None) {
                // The writes stay buffered, and the next commit tries them again.
                tracing::error!(%error, "cannot commit buffered writes to the storage engine");
            }
            if stop {
                return;
            }
        }
    }

    fn read_buffer(&self) -> std::sync::RwLockReadGuard<'_, Buffer> {
        self.buffer.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_buffer(&self) -> std::sync::RwLockWriteGuard<'_, Buffer> {
        self.buffer.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Buffers `batch` for `tree`; commits at once when the buffer is past its bound.
    fn apply(&self, tree: &str, batch: WriteBatch) -> Result<()> {
        let bytes = {
            let mut buffer = self.write_buffer();
            buffer.pending.apply(tree, batch);
            buffer.pending.bytes()
        };
        if bytes >= WRITER_COMMITS_BYTES {
            self.commit(Durability::None, None)?;
        } else if bytes >= COMMIT_BYTES {
            self.signal(|signal| signal.wake = true);
        }
        Ok(())
    }

    /// Returns what is buffered for `key` of `tree` (`Some(None)`: removed), if anything.
    fn lookup(&self, tree: &str, key: &[u8]) -> Option<Option<Vec<u8>>> {
        let buffer = self.read_buffer();
        let slot =
            buffer.pending.get(tree, key).or_else(|| buffer.committing.as_ref()?.get(tree, key));
        slot.map(|value| value.map(<[u8]>::to_vec))
    }

    /// Writes everything buffered to redb in one transaction with `durability` (an empty
    /// one too when durable: it makes every commit before it durable), and empties
    /// `clear` in it afterwards.
    fn commit(&self, durability: Durability, clear: Option<&str>) -> Result<()> {
        let _one_at_a_time = self.commit_lock.lock().unwrap_or_else(PoisonError::into_inner);
        let overlay = {
            let mut buffer = self.write_buffer();
            if buffer.pending.is_empty()
                && matches!(durability, Durability::None)
                && clear.is_none()
            {
                return Ok(());
            }
            let overlay = Arc::new(std::mem::take(&mut buffer.pending));
            buffer.committing = Some(overlay.clone());
            overlay
        };
        let written = self.write(&overlay, durability, clear);
        drop(overlay);
        let mut buffer = self.write_buffer();
        let committed = buffer.committing.take();
        if written.is_err() {
            // Not in redb: keep the writes, under the ones buffered since.
            if let Some(older) = committed.and_then(Arc::into_inner) {
                buffer.pending.absorb_older(older);
            }
        }
        written
    }

    fn write(&self, overlay: &Overlay, durability: Durability, clear: Option<&str>) -> Result<()> {
        let mut txn = self.db.begin_write().map_err(engine)?;
        txn.set_durability(durability).map_err(engine)?;
        for (tree, slots) in overlay.trees() {
            let mut table = txn.open_table(definition(tree)).map_err(engine)?;
            for (key, slot) in slots {
                match slot {
                    Some(value) => table.insert(key.as_slice(), value.as_slice()).map(drop),
                    None => table.remove(key.as_slice()).map(drop),
                }
                .map_err(engine)?;
            }
        }
        if let Some(tree) = clear {
            let mut table = txn.open_table(definition(tree)).map_err(engine)?;
            table.retain(|_, _| false).map_err(engine)?;
        }
        txn.commit().map_err(engine)
    }

    fn read_table(&self, name: &str) -> Result<redb::ReadOnlyTable<&'static [u8], &'static [u8]>> {
        let txn = self.db.begin_read().map_err(engine)?;
        txn.open_table(definition(name)).map_err(engine)
    }
}

fn definition(name: &str) -> TableDefinition<'_, &'static [u8], &'static [u8]> {
    TableDefinition::new(name)
}

fn engine(error: impl std::fmt::Display) -> StorageError {
    StorageError::Engine(error.to_string())
}

impl Engine for RedbEngine {
    fn open_tree(&self, name: &str) -> Result<Arc<dyn Tree>> {
        // Created now, so that reads of a tree nothing was written to find it empty.
        let shared = self.shared();
        {
            let _one_at_a_time = shared.commit_lock.lock().unwrap_or_else(PoisonError::into_inner);
            let txn = shared.db.begin_write().map_err(engine)?;
            txn.open_table(definition(name)).map_err(engine)?;
            txn.commit().map_err(engine)?;
        }
        Ok(Arc::new(RedbTree { engine: self.clone(), name: name.to_string() }))
    }

    fn flush(&self) -> Result<()> {
        self.shared().commit(Durability::Immediate, None)
    }

    fn size_on_disk(&self) -> Result<u64> {
        Ok(std::fs::metadata(&self.shared().path)?.len())
    }
}

#[derive(Debug)]
struct RedbTree {
    engine: RedbEngine,
    name: String,
}

impl RedbTree {
    /// Returns up to `limit` pairs in `(from, to)` as redb holds them, in key order.
    fn chunk(&self, from: Bound<&[u8]>, to: Bound<&[u8]>, limit: usize) -> Result<Vec<KeyValue>> {
        let table = self.engine.shared().read_table(&self.name)?;
        let range = table.range::<&[u8]>((from, to)).map_err(engine)?;
        range
            .take(limit)
            .map(|pair| {
                let (key, value) = pair.map_err(engine)?;
                Ok((key.value().to_vec(), value.value().to_vec()))
            })
            .collect()
    }
}

impl Tree for RedbTree {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let shared = self.engine.shared();
        if let Some(buffered) = shared.lookup(&self.name, key) {
            return Ok(buffered);
        }
        let table = shared.read_table(&self.name)?;
        let value = table.get(key).map_err(engine)?;
        Ok(value.map(|value| value.value().to_vec()))
    }

    fn insert(&self, key: &[u8], value: &[u8]) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.put(key, value);
        self.apply(batch)
    }

    fn apply(&self, batch: WriteBatch) -> Result<()> {
        self.engine.shared().apply(&self.name, batch)
    }

    fn range(
        &self,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
    ) -> Box<dyn Iterator<Item = Result<KeyValue>> + Send> {
        let buffered = {
            let buffer = self.engine.shared().read_buffer();
            buffered_range(&buffer.pending, buffer.committing.as_deref(), &self.name, from, to)
        };
        let stored = Chunked {
            tree: RedbTree { engine: self.engine.clone(), name: self.name.clone() },
            next: owned(from),
            to: owned(to),
            buffered: Vec::new().into_iter(),
            done: false,
        };
        Box::new(Merged { buffered: buffered.into_iter().peekable(), engine: stored.peekable() })
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Box<dyn Iterator<Item = Result<KeyValue>> + Send> {
        let to = prefix_end(prefix);
        let to = to.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        self.range(Bound::Included(prefix), to)
    }

    fn last(&self) -> Result<Option<KeyValue>> {
        // Rare (a log's end at start-up): commit what is buffered rather than merge.
        let shared = self.engine.shared();
        shared.commit(Durability::None, None)?;
        let table = shared.read_table(&self.name)?;
        let last = table.last().map_err(engine)?;
        Ok(last.map(|(key, value)| (key.value().to_vec(), value.value().to_vec())))
    }

    fn clear(&self) -> Result<()> {
        self.engine.shared().commit(Durability::None, Some(&self.name))
    }
}

fn owned(bound: Bound<&[u8]>) -> Bound<Vec<u8>> {
    bound.map(<[u8]>::to_vec)
}

/// The first key after every key starting with `prefix` (`None`: there is none).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// A range of what redb holds, read in chunks of [`RANGE_CHUNK`], each in its own read
/// transaction, so that no transaction stays open while the caller works through a long
/// range.
struct Chunked {
    tree: RedbTree,
    next: Bound<Vec<u8>>,
    to: Bound<Vec<u8>>,
    buffered: std::vec::IntoIter<KeyValue>,
    done: bool,
}

impl Iterator for Chunked {
    type Item = Result<KeyValue>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(pair) = self.buffered.next() {
            return Some(Ok(pair));
        }
        if self.done {
            return None;
        }
        let from = self.next.as_ref().map(Vec::as_slice);
        let to = self.to.as_ref().map(Vec::as_slice);
        let chunk = match self.tree.chunk(from, to, RANGE_CHUNK) {
            Ok(chunk) => chunk,
            Err(error) => {
                self.done = true;
                return Some(Err(error));
            }
        };
        self.done = chunk.len() < RANGE_CHUNK;
        if let Some((key, _)) = chunk.last() {
            self.next = Bound::Excluded(key.clone());
        }
        self.buffered = chunk.into_iter();
        self.buffered.next().map(Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads racing the writer and the committer never see a key go back to an older
    /// value, whether it is buffered, being committed or in redb; a range sees removals
    /// laid over what redb holds; a reopen finds every write.
    #[test]
    fn reads_racing_commits_never_go_back() {
        let dir = tempfile::tempdir().unwrap();
        let rounds = 3_000_u64;
        {
            let engine = RedbEngine::open_with_cache(dir.path(), 1 << 20).unwrap();
            let tree = engine.open_tree("t").unwrap();
            let done = std::sync::atomic::AtomicBool::new(false);
            std::thread::scope(|scope| {
                for _ in 0..2 {
                    scope.spawn(|| {
                        let mut last = 0;
                        while !done.load(std::sync::atomic::Ordering::Acquire) {
                            let seen = tree
                                .get(b"counter")
                                .unwrap()
                                .map_or(0, |bytes| u64::from_be_bytes(bytes.try_into().unwrap()));
                            assert!(seen >= last, "read {seen} after {last}");
                            last = seen;
                        }
                    });
                }
                scope.spawn(|| {
                    while !done.load(std::sync::atomic::Ordering::Acquire) {
                        engine.flush().unwrap();
                        std::thread::sleep(std::time::Duration::from_millis(3));
                    }
                });
                for round in 1..=rounds {
                    let mut batch = WriteBatch::new();
                    batch.put(b"counter".to_vec(), round.to_be_bytes().to_vec());
                    batch.put(format!("item-{round:05}").into_bytes(), vec![0; 64]);
                    if round % 2 == 0 {
                        batch.delete(format!("item-{:05}", round - 1).into_bytes());
                    }
                    tree.apply(batch).unwrap();
                    if round % 500 == 0 {
                        std::thread::sleep(COMMIT_INTERVAL / 4);
                    }
                }
                done.store(true, std::sync::atomic::Ordering::Release);
            });
            let items = tree.scan_prefix(b"item-").count();
            assert_eq!(items as u64, rounds / 2);
        }
        let engine = RedbEngine::open_with_cache(dir.path(), 1 << 20).unwrap();
        let tree = engine.open_tree("t").unwrap();
        assert_eq!(tree.get(b"counter").unwrap(), Some(rounds.to_be_bytes().to_vec()));
        assert_eq!(tree.scan_prefix(b"item-").count() as u64, rounds / 2);
    }

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 255]), Some(vec![2]));
        assert_eq!(prefix_end(&[255, 255]), None);
    }
}

//! The redb implementation of [`Engine`]: a copy-on-write B-tree in one file, whose freed
//! pages are reused, so the file stays near the size of the live data under
//! insert-then-delete churn (a Raft log, expiring sessions).
//!
//! Every write is a redb transaction committed without fsync ([`Durability::None`]);
//! [`Engine::flush`] commits an empty transaction with [`Durability::Immediate`], which
//! makes it and every commit before it durable, and [`Tree::apply_durably`] commits its
//! batch that way. redb recovers to the last durable commit,
//! so a crash loses a suffix of the writes, never reorders them.

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use redb::{Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::{Engine, KeyValue, Tree, WriteBatch, WriteOp};
use crate::{Result, StorageError};

/// The database file inside the engine's directory.
const FILE_NAME: &str = "shoal.redb";
/// Pairs a range iterator reads per read transaction (ranges are not point-in-time
/// snapshots, as with sled: each chunk sees the writes committed before it).
const RANGE_CHUNK: usize = 512;

/// An [`Engine`] on one redb database file.
#[derive(Debug, Clone)]
pub struct RedbEngine {
    db: Arc<redb::Database>,
    path: std::path::PathBuf,
}

impl RedbEngine {
    /// Opens (creating if needed) the database in directory `dir`, caching at most
    /// `cache_bytes` of pages in memory.
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(FILE_NAME);
        let cache = usize::try_from(cache_bytes).unwrap_or(usize::MAX);
        let db = redb::Database::builder().set_cache_size(cache).create(&path).map_err(engine)?;
        Ok(Self { db: Arc::new(db), path })
    }

    fn write<T>(
        &self,
        name: &str,
        work: impl FnOnce(&mut redb::Table<&[u8], &[u8]>) -> Result<T>,
    ) -> Result<T> {
        self.write_with(name, Durability::None, work)
    }

    fn write_with<T>(
        &self,
        name: &str,
        durability: Durability,
        work: impl FnOnce(&mut redb::Table<&[u8], &[u8]>) -> Result<T>,
    ) -> Result<T> {
        let mut txn = self.db.begin_write().map_err(engine)?;
        txn.set_durability(durability).map_err(engine)?;
        let outcome = {
            let mut table = txn.open_table(definition(name)).map_err(engine)?;
            work(&mut table)?
        };
        txn.commit().map_err(engine)?;
        Ok(outcome)
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
        self.write(name, |_| Ok(()))?;
        Ok(Arc::new(RedbTree { engine: self.clone(), name: name.to_string() }))
    }

    fn flush(&self) -> Result<()> {
        let mut txn = self.db.begin_write().map_err(engine)?;
        txn.set_durability(Durability::Immediate).map_err(engine)?;
        txn.commit().map_err(engine)
    }

    fn size_on_disk(&self) -> Result<u64> {
        Ok(std::fs::metadata(&self.path)?.len())
    }
}

fn write_batch(table: &mut redb::Table<&[u8], &[u8]>, batch: WriteBatch) -> Result<()> {
    for op in batch.into_ops() {
        match op {
            WriteOp::Put(key, value) => table.insert(key.as_slice(), value.as_slice()),
            WriteOp::Delete(key) => table.remove(key.as_slice()),
        }
        .map_err(engine)?;
    }
    Ok(())
}

#[derive(Debug)]
struct RedbTree {
    engine: RedbEngine,
    name: String,
}

impl RedbTree {
    /// Returns up to `limit` pairs in `(from, to)`, in key order.
    fn chunk(&self, from: Bound<&[u8]>, to: Bound<&[u8]>, limit: usize) -> Result<Vec<KeyValue>> {
        let table = self.engine.read_table(&self.name)?;
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
        let table = self.engine.read_table(&self.name)?;
        let value = table.get(key).map_err(engine)?;
        Ok(value.map(|value| value.value().to_vec()))
    }

    fn insert(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.engine.write(&self.name, |table| {
            table.insert(key, value).map_err(engine)?;
            Ok(())
        })
    }

    fn apply(&self, batch: WriteBatch) -> Result<()> {
        self.engine.write(&self.name, |table| write_batch(table, batch))
    }

    fn apply_durably(&self, batch: WriteBatch) -> Result<()> {
        self.engine.write_with(&self.name, Durability::Immediate, |table| write_batch(table, batch))
    }

    fn range(
        &self,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
    ) -> Box<dyn Iterator<Item = Result<KeyValue>> + Send> {
        Box::new(Chunked {
            tree: RedbTree { engine: self.engine.clone(), name: self.name.clone() },
            next: owned(from),
            to: owned(to),
            buffered: Vec::new().into_iter(),
            done: false,
        })
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Box<dyn Iterator<Item = Result<KeyValue>> + Send> {
        let to = prefix_end(prefix);
        let to = to.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        self.range(Bound::Included(prefix), to)
    }

    fn last(&self) -> Result<Option<KeyValue>> {
        let table = self.engine.read_table(&self.name)?;
        let last = table.last().map_err(engine)?;
        Ok(last.map(|(key, value)| (key.value().to_vec(), value.value().to_vec())))
    }

    fn clear(&self) -> Result<()> {
        self.engine.write(&self.name, |table| table.retain(|_, _| false).map_err(engine))
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

/// A range read in chunks of [`RANGE_CHUNK`], each in its own read transaction, so that
/// no transaction stays open while the caller works through a long range.
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

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 255]), Some(vec![2]));
        assert_eq!(prefix_end(&[255, 255]), None);
    }
}

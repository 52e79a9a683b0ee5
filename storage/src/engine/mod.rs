//! The [`Engine`] trait: ordered key-value trees with atomic batches and `flush`.

mod overlay;
mod redb_engine;
mod sled_engine;

use std::fmt::Debug;
use std::ops::Bound;
use std::sync::Arc;

pub use redb_engine::RedbEngine;
pub use sled_engine::SledEngine;

use crate::Result;

/// A key and its value, as stored.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// A storage engine: named, ordered key-value trees in one durable store.
///
/// Writes become visible at once and durable at the next [`Engine::flush`]; a crash
/// loses at most the writes made since the last flush, never reorders them.
pub trait Engine: Send + Sync + Debug + 'static {
    /// Opens (creating if needed) the tree called `name`.
    fn open_tree(&self, name: &str) -> Result<Arc<dyn Tree>>;

    /// Makes every write made so far durable (fsync). Blocks: call it off the async threads.
    fn flush(&self) -> Result<()>;

    /// Returns the bytes the engine occupies on disk.
    fn size_on_disk(&self) -> Result<u64>;
}

/// One ordered key-value tree of an [`Engine`].
pub trait Tree: Send + Sync + Debug + 'static {
    /// Returns the value stored under `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Stores `value` under `key`.
    fn insert(&self, key: &[u8], value: &[u8]) -> Result<()>;

    /// Applies every operation of `batch` atomically: after a crash, all or none.
    fn apply(&self, batch: WriteBatch) -> Result<()>;

    /// Returns the pairs with keys in the range, in key order.
    fn range(
        &self,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
    ) -> Box<dyn Iterator<Item = Result<KeyValue>> + Send>;

    /// Returns the pairs whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, prefix: &[u8]) -> Box<dyn Iterator<Item = Result<KeyValue>> + Send>;

    /// Returns the pair with the greatest key.
    fn last(&self) -> Result<Option<KeyValue>>;

    /// Removes every pair.
    fn clear(&self) -> Result<()>;
}

/// One operation of a [`WriteBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// Stores a value under a key.
    Put(Vec<u8>, Vec<u8>),
    /// Removes a key.
    Delete(Vec<u8>),
}

/// Operations applied to one tree atomically, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<WriteOp>,
}

impl WriteBatch {
    /// Returns an empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues storing `value` under `key`.
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push(WriteOp::Put(key.into(), value.into()));
    }

    /// Queues removing `key`.
    pub fn delete(&mut self, key: impl Into<Vec<u8>>) {
        self.ops.push(WriteOp::Delete(key.into()));
    }

    /// Returns whether the batch holds no operation.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Returns the queued operations, in order.
    pub fn into_ops(self) -> Vec<WriteOp> {
        self.ops
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// Writes, reads, ranges (longer than redb's chunk), a durable batch and a reopen, on any
    /// engine.
    fn exercise(open: impl Fn(&Path) -> Arc<dyn Engine>) {
        let dir = tempfile::tempdir().unwrap();
        {
            let engine = open(dir.path());
            let tree = engine.open_tree("t").unwrap();
            assert!(tree.last().unwrap().is_none());
            let mut batch = WriteBatch::new();
            for key in [b"a1", b"a2", b"b1", b"c1"] {
                batch.put(key.to_vec(), key.to_vec());
            }
            batch.delete(b"c1".to_vec());
            tree.apply(batch).unwrap();
            let keys: Vec<Vec<u8>> = tree.scan_prefix(b"a").map(|pair| pair.unwrap().0).collect();
            assert_eq!(keys, vec![b"a1".to_vec(), b"a2".to_vec()]);
            let ranged: Vec<Vec<u8>> = tree
                .range(Bound::Excluded(b"a1"), Bound::Unbounded)
                .map(|pair| pair.unwrap().0)
                .collect();
            assert_eq!(ranged, vec![b"a2".to_vec(), b"b1".to_vec()]);
            assert_eq!(tree.last().unwrap().unwrap().0, b"b1".to_vec());

            let many = engine.open_tree("many").unwrap();
            let mut batch = WriteBatch::new();
            for index in 0u32..1_207 {
                batch.put(index.to_be_bytes().to_vec(), vec![1]);
            }
            // A durable batch after plain ones: the reopen below finds both. (A clean close
            // keeps plain writes too: crash durability is checked by the process tests that SIGKILL
            // nodes after acknowledged writes.)
            many.apply(batch).unwrap();
            engine.flush().unwrap();
            let keys: Vec<u32> = many
                .range(Bound::Unbounded, Bound::Unbounded)
                .map(|pair| u32::from_be_bytes(pair.unwrap().0.try_into().unwrap()))
                .collect();
            assert_eq!(keys, (0..1_207).collect::<Vec<_>>());
        }
        let engine = open(dir.path());
        let tree = engine.open_tree("t").unwrap();
        assert_eq!(tree.get(b"a2").unwrap(), Some(b"a2".to_vec()));
        assert_eq!(tree.get(b"c1").unwrap(), None);
        tree.clear().unwrap();
        assert!(tree.last().unwrap().is_none());
        assert!(engine.size_on_disk().unwrap() > 0);
    }

    #[test]
    fn sled_batches_ranges_and_reopen() {
        exercise(|path| Arc::new(SledEngine::open_with_cache(path, 1 << 20).unwrap()));
    }

    #[test]
    fn redb_batches_ranges_and_reopen() {
        exercise(|path| Arc::new(RedbEngine::open_with_cache(path, 1 << 20).unwrap()));
    }
}

//! The sled implementation of [`Engine`].

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use super::{Engine, KeyValue, Tree, WriteBatch, WriteOp};
use crate::Result;

/// The page cache of [`SledEngine::open`]: sled's default.
pub const DEFAULT_CACHE_BYTES: u64 = 1024 * 1024 * 1024;

/// An [`Engine`] on one sled database.
#[derive(Debug, Clone)]
pub struct SledEngine {
    db: sled::Db,
}

impl SledEngine {
    /// Opens (creating if needed) the database in `path`, with sled's default page cache.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// Opens the database in `path`, caching at most `cache_bytes` of pages in memory
    /// (sled's own default is 1 GiB, which a node fills while it catches up).
    pub fn open_with_cache(path: &Path, cache_bytes: u64) -> Result<Self> {
        // shoal fsyncs explicitly before acknowledging (see `Engine::flush`), so sled's
        // periodic background flush only bounds how much unacknowledged work a crash loses.
        let db = sled::Config::new()
            .path(path)
            .flush_every_ms(Some(1000))
            .cache_capacity(cache_bytes)
            .open()?;
        Ok(Self { db })
    }

    /// Opens a database in a fresh temporary directory, deleted when dropped.
    pub fn temporary() -> Result<Self> {
        let db = sled::Config::new().temporary(true).open()?;
        Ok(Self { db })
    }
}

impl Engine for SledEngine {
    fn open_tree(&self, name: &str) -> Result<Arc<dyn Tree>> {
        Ok(Arc::new(SledTree { tree: self.db.open_tree(name)? }))
    }

    fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64> {
        Ok(self.db.size_on_disk()?)
    }
}

#[derive(Debug)]
struct SledTree {
    tree: sled::Tree,
}

fn owned_bound(bound: Bound<&[u8]>) -> Bound<Vec<u8>> {
    match bound {
        Bound::Included(key) => Bound::Included(key.to_vec()),
        Bound::Excluded(key) => Bound::Excluded(key.to_vec()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

fn to_pair(item: sled::Result<(sled::IVec, sled::IVec)>) -> Result<KeyValue> {
    let (key, value) = item?;
    Ok((key.to_vec(), value.to_vec()))
}

impl Tree for SledTree {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.tree.get(key)?.map(|value| value.to_vec()))
    }

    fn insert(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.tree.insert(key, value)?;
        Ok(())
    }

    fn apply(&self, batch: WriteBatch) -> Result<()> {
        let mut sled_batch = sled::Batch::default();
        for op in batch.into_ops() {
            match op {
                WriteOp::Put(key, value) => sled_batch.insert(key, value),
                WriteOp::Delete(key) => sled_batch.remove(key),
            }
        }
        self.tree.apply_batch(sled_batch)?;
        Ok(())
    }

    fn range(
        &self,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
    ) -> Box<dyn Iterator<Item = Result<KeyValue>> + Send> {
        let range = (owned_bound(from), owned_bound(to));
        Box::new(self.tree.range::<Vec<u8>, _>(range).map(to_pair))
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Box<dyn Iterator<Item = Result<KeyValue>> + Send> {
        Box::new(self.tree.scan_prefix(prefix).map(to_pair))
    }

    fn last(&self) -> Result<Option<KeyValue>> {
        Ok(self.tree.last()?.map(|(key, value)| (key.to_vec(), value.to_vec())))
    }

    fn clear(&self) -> Result<()> {
        self.tree.clear()?;
        Ok(())
    }
}

//! shoal's storage layer: an [`Engine`] of ordered key-value trees (redb by default, or
//! sled), the versioned record [`codec`], openraft's log store on a segment log of its
//! own, and the [`BlobStore`] trait for reports with its Redis and S3 adapters.
//!
//! Nothing above this crate touches sled directly, so the engine can be swapped if
//! measurements demand it.

mod blob;
pub mod codec;
mod engine;
mod error;
/// The format-fixture check the crates share in their tests (the `testsuite` feature).
#[cfg(feature = "testsuite")]
pub mod fixtures;
mod log_store;
mod redis;
mod s3;
mod wal;

pub use blob::{Blob, BlobError, BlobStore, BoxFuture};
pub use engine::{Engine, KeyValue, RedbEngine, SledEngine, Tree, WriteBatch, WriteOp};
pub use error::{Result, StorageError};
pub use log_store::LogStore;
pub use redis::{Redis, RedisBlobStore, RedisMessage, RedisResult};
pub use s3::{S3BlobStore, S3Settings};
pub use wal::{CheckedWal, Recovery, Wal};

/// Entry points of the fuzz targets in `fuzz/` (the `fuzzing` feature).
#[cfg(feature = "fuzzing")]
pub mod fuzzing {
    pub use crate::wal::fuzzing::{wal_recovery, wal_scan};
}

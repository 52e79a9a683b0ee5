//! shoal's storage layer: an [`Engine`] of ordered key-value trees (sled by default),
//! the versioned record [`codec`], and openraft's log store built on the engine.
//!
//! Nothing above this crate touches sled directly, so the engine can be swapped if
//! measurements demand it.

pub mod codec;
mod engine;
mod error;
mod log_store;

pub use engine::{Engine, KeyValue, SledEngine, Tree, WriteBatch, WriteOp};
pub use error::{Result, StorageError};
pub use log_store::LogStore;

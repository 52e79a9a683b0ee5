//! Report blobs' records and the commands that store them (applied by `crate::blob`).

use serde::{Deserialize, Serialize};

/// What a stored blob is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobMeta {
    /// The file name offered to browsers.
    pub name: String,
    pub content_type: String,
    pub size: u64,
    pub chunks: u32,
}

/// A blob's bookkeeping: its meta once committed, and its deadline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRecord {
    pub meta: Option<BlobMeta>,
    pub expires_at_ms: u64,
}

/// Changes to blobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlobCommand {
    /// Stores chunk `index`; chunk 0 starts the blob and sets its deadline.
    Chunk { id: String, index: u32, bytes: Vec<u8>, ttl_ms: u64 },
    /// Makes the blob visible once all its chunks are stored.
    Commit { id: String, meta: BlobMeta },
}

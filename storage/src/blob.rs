//! [`BlobStore`]: where generated reports live until their TTL runs out.
//!
//! Implementations: the cluster store (Raft-replicated chunks, in `shoal-raft`), and the
//! S3 and Redis adapters for teams that run those already.

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A boxed future, so that blob stores can be used as trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A stored file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// The file name offered to browsers.
    pub name: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// Why a blob store failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlobError {
    /// The store cannot answer right now; retrying later may work.
    #[error("blob store unavailable: {0}")]
    Unavailable(String),
    /// The store failed.
    #[error("blob store failed: {0}")]
    Failed(String),
}

/// Stores blobs under ids for a time.
pub trait BlobStore: Send + Sync + Debug + 'static {
    /// Names the store in logs and `/api/health`: `cluster`, `s3` or `redis`.
    fn kind(&self) -> &'static str;

    /// Stores `blob` under `id` for `ttl`; once this returns, every node can read it.
    fn put<'a>(
        &'a self,
        id: &'a str,
        blob: Blob,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), BlobError>>;

    /// Returns blob `id`, unless it is unknown or expired.
    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Blob>, BlobError>>;
}

//! Report blobs replicated through Raft: written in chunks, visible once committed,
//! removed by the expiry index when their TTL runs out.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_storage::{codec, Blob, BlobError, BlobStore, BoxFuture, Tree, WriteBatch};

use crate::keys;
use crate::types::{Command, Rejection, Response};
use crate::{unix_millis, Cluster, ClusterError};

/// The largest chunk one log entry carries.
pub const CHUNK_BYTES: usize = 256 * 1024;

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

pub(crate) fn read_record(state: &dyn Tree, id: &str) -> shoal_storage::Result<Option<BlobRecord>> {
    state.get(&keys::blob_meta(id))?.map(|bytes| codec::decode(&bytes, "blob")).transpose()
}

/// Reads committed blob `id` whole, unless it is missing, uncommitted or expired.
pub(crate) fn read(
    state: &dyn Tree,
    id: &str,
    now_ms: u64,
) -> shoal_storage::Result<Option<(BlobMeta, Vec<u8>)>> {
    let Some(BlobRecord { meta: Some(meta), expires_at_ms }) = read_record(state, id)? else {
        return Ok(None);
    };
    if expires_at_ms <= now_ms {
        return Ok(None);
    }
    let mut bytes = Vec::with_capacity(meta.size as usize);
    for pair in state.scan_prefix(&keys::blob_chunk_prefix(id)) {
        bytes.extend_from_slice(&pair?.1);
    }
    Ok(Some((meta, bytes)))
}

/// Removes blob `id`: its record, its chunks and its expiry-index entry.
pub(crate) fn delete(
    state: &dyn Tree,
    batch: &mut WriteBatch,
    id: &str,
    record: &BlobRecord,
) -> shoal_storage::Result<()> {
    for pair in state.scan_prefix(&keys::blob_chunk_prefix(id)) {
        batch.delete(pair?.0);
    }
    batch.delete(keys::blob_meta(id));
    batch.delete(keys::expiry(record.expires_at_ms, keys::EXPIRY_KIND_BLOB, id));
    Ok(())
}

pub(crate) fn apply(
    state: &dyn Tree,
    now_ms: u64,
    command: BlobCommand,
    batch: &mut WriteBatch,
) -> shoal_storage::Result<Response> {
    match command {
        BlobCommand::Chunk { id, index, bytes, ttl_ms } => {
            let existing = read_record(state, &id)?;
            if index == 0 {
                if let Some(existing) = existing {
                    if existing.expires_at_ms > now_ms {
                        return Ok(Response::Rejected(Rejection::AlreadyExists));
                    }
                    delete(state, batch, &id, &existing)?;
                }
                let record =
                    BlobRecord { meta: None, expires_at_ms: now_ms.saturating_add(ttl_ms) };
                batch.put(keys::blob_meta(&id), codec::encode(&record));
                batch.put(
                    keys::expiry(record.expires_at_ms, keys::EXPIRY_KIND_BLOB, &id),
                    Vec::new(),
                );
            } else if !matches!(existing, Some(BlobRecord { meta: None, .. })) {
                return Ok(Response::Rejected(Rejection::BlobNotPending));
            }
            batch.put(keys::blob_chunk(&id, index), bytes);
            Ok(Response::Empty)
        }
        BlobCommand::Commit { id, meta } => {
            let Some(mut record) = read_record(state, &id)?.filter(|record| record.meta.is_none())
            else {
                return Ok(Response::Rejected(Rejection::BlobNotPending));
            };
            let stored = state.scan_prefix(&keys::blob_chunk_prefix(&id)).count();
            if stored != meta.chunks as usize {
                return Ok(Response::Rejected(Rejection::BlobNotPending));
            }
            record.meta = Some(meta);
            batch.put(keys::blob_meta(&id), codec::encode(&record));
            Ok(Response::Empty)
        }
    }
}

/// The [`BlobStore`] of cluster mode: blobs as chunks in the replicated state.
#[derive(Debug, Clone)]
pub struct ClusterBlobStore {
    cluster: Cluster,
}

impl ClusterBlobStore {
    /// Returns the blob store on `cluster`.
    pub fn new(cluster: Cluster) -> Self {
        Self { cluster }
    }
}

fn blob_error(error: ClusterError) -> BlobError {
    if error.is_retryable() {
        BlobError::Unavailable(error.to_string())
    } else {
        BlobError::Failed(error.to_string())
    }
}

impl BlobStore for ClusterBlobStore {
    fn kind(&self) -> &'static str {
        "cluster"
    }

    fn put<'a>(
        &'a self,
        id: &'a str,
        blob: Blob,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), BlobError>> {
        Box::pin(async move {
            let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
            let size = blob.bytes.len() as u64;
            // An empty blob still has one (empty) chunk, which starts it.
            let chunks: Vec<&[u8]> = if blob.bytes.is_empty() {
                vec![&[]]
            } else {
                blob.bytes.chunks(CHUNK_BYTES).collect()
            };
            for (index, chunk) in chunks.iter().enumerate() {
                let command = BlobCommand::Chunk {
                    id: id.to_string(),
                    index: index as u32,
                    bytes: chunk.to_vec(),
                    ttl_ms,
                };
                self.cluster.write(Command::Blob(command)).await.map_err(blob_error)?;
            }
            let meta = BlobMeta {
                name: blob.name,
                content_type: blob.content_type,
                size,
                chunks: chunks.len() as u32,
            };
            let commit = BlobCommand::Commit { id: id.to_string(), meta };
            self.cluster.write(Command::Blob(commit)).await.map_err(blob_error)?;
            Ok(())
        })
    }

    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Blob>, BlobError>> {
        Box::pin(async move {
            self.cluster.read_barrier().await.map_err(blob_error)?;
            let stored = self
                .cluster
                .reader()
                .blob(id, unix_millis())
                .map_err(|error| BlobError::Failed(error.to_string()))?;
            Ok(stored.map(|(meta, bytes)| Blob {
                name: meta.name,
                content_type: meta.content_type,
                bytes,
            }))
        })
    }
}

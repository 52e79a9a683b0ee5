//! [`ClusterBlobStore`]: report blobs stored through the cluster, in chunks of at most
//! [`CHUNK_BYTES`] per log entry, read back linearizably.

use std::time::Duration;

use shoal_storage::{Blob, BlobError, BlobStore, BoxFuture};

use crate::types::{BlobCommand, BlobMeta, Command};
use crate::{unix_millis, Cluster, ClusterError};

/// The largest chunk one log entry carries.
pub const CHUNK_BYTES: usize = 256 * 1024;

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

/// Says whether waiting may mend `error`: a node cut off from the quorum is unavailable
/// (downloads answer 503, so load balancers try another node; reports wait for it).
fn blob_error(error: ClusterError) -> BlobError {
    if error.is_unavailable() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_cut_off_is_unavailable_not_failed() {
        // Downloads answer 503 for it (a load balancer tries another node) and reports
        // wait for it; before, it was a failure: 500, and the search failed.
        for error in [
            ClusterError::NoQuorum,
            ClusterError::NoLeader,
            ClusterError::Timeout(Duration::from_secs(1)),
        ] {
            assert!(matches!(blob_error(error), BlobError::Unavailable(_)));
        }
        assert!(matches!(blob_error(ClusterError::Raft("broken".into())), BlobError::Failed(_)));
    }
}

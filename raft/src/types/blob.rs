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
    Chunk {
        id: String,
        index: u32,
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
        ttl_ms: u64,
    },
    /// Makes the blob visible once all its chunks are stored.
    Commit { id: String, meta: BlobMeta },
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_storage::codec;

    /// `Chunk` as every build before `serde_bytes` described it: its bytes one element
    /// at a time.
    #[derive(Serialize, Deserialize)]
    enum ChunkAsSequence {
        Chunk { id: String, index: u32, bytes: Vec<u8>, ttl_ms: u64 },
    }

    #[test]
    fn chunk_bytes_encode_as_they_always_did() {
        let bytes: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
        let new = BlobCommand::Chunk { id: "r".into(), index: 2, bytes: bytes.clone(), ttl_ms: 9 };
        let old = ChunkAsSequence::Chunk { id: "r".into(), index: 2, bytes, ttl_ms: 9 };
        let encoded = codec::encode(&new);
        assert_eq!(encoded, codec::encode(&old), "logs, snapshots and peers keep one format");
        let back: BlobCommand = codec::decode(&codec::encode(&old), "chunk").unwrap();
        assert_eq!(back, new);
    }
}

//! Report blobs in the replicated state: written in chunks, visible once committed,
//! removed by the expiry index when their TTL runs out (the store over it is
//! `blob_store.rs`).

use shoal_storage::{codec, Tree, WriteBatch};

use crate::keys;
use crate::types::{BlobCommand, BlobMeta, BlobRecord, Rejection, Response};

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

//! The key layout of the state machine's tree.
//!
//! Everything the state machine keeps lives in one tree so that each applied entry is
//! one atomic batch: the change, the expiry index and `last_applied` move together.

/// `s/{id}` → [`crate::SessionRecord`].
pub const SESSION_PREFIX: &[u8] = b"s/";
/// `p/{id}` → [`crate::ProgressRecord`]: searches and trackers.
pub const PROGRESS_PREFIX: &[u8] = b"p/";
/// `x/{deadline_ms: u64 BE}{kind}{id}` → empty: the expiry index, oldest first.
pub const EXPIRY_PREFIX: &[u8] = b"x/";
/// `r/{deadline_ms: u64 BE}{key: u128 BE}` → the encoded [`crate::Response`] of a
/// [`crate::Command::Once`], kept until its deadline.
pub const ONCE_PREFIX: &[u8] = b"r/";
/// `m/…` → bookkeeping of the state machine itself; not part of snapshot data.
pub const META_PREFIX: &[u8] = b"m/";
pub const LAST_APPLIED: &[u8] = b"m/last_applied";
pub const MEMBERSHIP: &[u8] = b"m/membership";
pub const NUM_SESSIONS: &[u8] = b"m/num_sessions";

/// The kind byte of a session in the expiry index.
pub const EXPIRY_KIND_SESSION: u8 = b's';

/// `b/{id}/m` → [`crate::BlobRecord`]; `b/{id}/c/{index: u32 BE}` → chunk bytes.
pub const BLOB_PREFIX: &[u8] = b"b/";

/// The kind byte of a blob in the expiry index.
pub const EXPIRY_KIND_BLOB: u8 = b'b';

/// Returns the key of blob `id`'s record.
pub fn blob_meta(id: &str) -> Vec<u8> {
    [BLOB_PREFIX, id.as_bytes(), b"/m"].concat()
}

/// Returns the prefix of blob `id`'s chunks.
pub fn blob_chunk_prefix(id: &str) -> Vec<u8> {
    [BLOB_PREFIX, id.as_bytes(), b"/c/"].concat()
}

/// Returns the key of chunk `index` of blob `id`.
pub fn blob_chunk(id: &str, index: u32) -> Vec<u8> {
    [blob_chunk_prefix(id).as_slice(), &index.to_be_bytes()].concat()
}

/// `k/{sha256(key)[..8]}{key}` → [`crate::KvRecord`]: plain keys (the Redis protocol
/// endpoint), ordered by a hash of the key so that a `SCAN` cursor is a number.
pub const KV_PREFIX: &[u8] = b"k/";
/// The bytes of a kv key after [`KV_PREFIX`] that come before the key: its hash.
pub const KV_HASH_BYTES: usize = 8;
/// `y/{deadline_ms: u64 BE}{hash}{key}` → empty: the expiry index of plain keys, oldest
/// first, apart from the other records' so that the leader can find the next one due
/// with one read and expire it on time (see `maintenance.rs`).
pub const KV_EXPIRY_PREFIX: &[u8] = b"y/";
/// `c/clock` → the largest leader clock (Unix ms) of an applied command: what the state
/// machine's reads of plain keys take as "now", so that every replica at the same applied
/// index answers the same (part of snapshot data, unlike `m/`).
pub const CLOCK: &[u8] = b"c/clock";
pub const NUM_KV: &[u8] = b"m/num_kv";

/// Returns the tree key of plain key `key`.
pub fn kv(key: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(key);
    let mut stored = Vec::with_capacity(KV_PREFIX.len() + KV_HASH_BYTES + key.len());
    stored.extend_from_slice(KV_PREFIX);
    stored.extend_from_slice(&hash[..KV_HASH_BYTES]);
    stored.extend_from_slice(key);
    stored
}

/// The kind byte of a progress record in the expiry index.
pub const EXPIRY_KIND_PROGRESS: u8 = b'p';

/// Returns the key of progress record `id`.
pub fn progress(id: &str) -> Vec<u8> {
    [PROGRESS_PREFIX, id.as_bytes()].concat()
}

/// Returns the key of the answer to the write with idempotency key `key`.
pub fn once(deadline_ms: u64, key: u128) -> Vec<u8> {
    [ONCE_PREFIX, &deadline_ms.to_be_bytes()[..], &key.to_be_bytes()[..]].concat()
}

/// Returns the deadline of a [`once`] key.
pub fn once_deadline(key: &[u8]) -> Option<u64> {
    let rest = key.strip_prefix(ONCE_PREFIX)?;
    Some(u64::from_be_bytes(rest.get(..8)?.try_into().ok()?))
}

/// Returns the key of session `id`.
pub fn session(id: &str) -> Vec<u8> {
    [SESSION_PREFIX, id.as_bytes()].concat()
}

/// Returns the expiry-index key of the entry `id` of `kind` due at `deadline_ms`.
pub fn expiry(deadline_ms: u64, kind: u8, id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(EXPIRY_PREFIX.len() + 9 + id.len());
    key.extend_from_slice(EXPIRY_PREFIX);
    key.extend_from_slice(&deadline_ms.to_be_bytes());
    key.push(kind);
    key.extend_from_slice(id.as_bytes());
    key
}

/// Returns the expiry-index key of plain key `stored` (a [`kv`] key) due at `deadline_ms`.
pub fn kv_expiry(deadline_ms: u64, stored: &[u8]) -> Vec<u8> {
    let suffix = stored.strip_prefix(KV_PREFIX).unwrap_or(stored);
    [KV_EXPIRY_PREFIX, &deadline_ms.to_be_bytes()[..], suffix].concat()
}

/// Splits a [`kv_expiry`] key into its deadline and the plain key's tree key.
pub fn parse_kv_expiry(key: &[u8]) -> Option<(u64, Vec<u8>)> {
    let rest = key.strip_prefix(KV_EXPIRY_PREFIX)?;
    let deadline_ms = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
    Some((deadline_ms, [KV_PREFIX, &rest[8..]].concat()))
}

/// Splits an expiry-index key into its deadline, kind and id.
pub fn parse_expiry(key: &[u8]) -> Option<(u64, u8, &str)> {
    let rest = key.strip_prefix(EXPIRY_PREFIX)?;
    if rest.len() < 9 {
        return None;
    }
    let deadline_ms = u64::from_be_bytes(rest[..8].try_into().ok()?);
    let id = std::str::from_utf8(&rest[9..]).ok()?;
    Some((deadline_ms, rest[8], id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_keys_sort_by_deadline_and_parse_back() {
        let early = expiry(5, EXPIRY_KIND_SESSION, "zzz");
        let late = expiry(256, EXPIRY_KIND_SESSION, "aaa");
        assert!(early < late);
        assert_eq!(parse_expiry(&late), Some((256, EXPIRY_KIND_SESSION, "aaa")));
        assert_eq!(parse_expiry(b"x/short"), None);
    }
}

//! `Expire`: everything whose deadline is at or before the leader's clock goes, by the
//! expiry index (sessions, progress records, blobs, plain keys), and so do expired write answers.

use std::ops::Bound;

use shoal_storage::Tree;

use super::reader::read_session;
use super::Change;
use crate::types::Response;
use crate::{blob, keys, kv, once, progress};

/// Deletes what expired at `now_ms`; answers how many records went.
pub(super) fn expire(
    state: &dyn Tree,
    change: &mut Change,
    now_ms: u64,
) -> shoal_storage::Result<Response> {
    let mut expired = 0;
    let end = keys::expiry(now_ms, u8::MAX, "");
    let due = state.range(Bound::Included(keys::EXPIRY_PREFIX), Bound::Excluded(&end));
    for pair in due {
        let (key, _) = pair?;
        let Some((deadline_ms, kind, id)) = keys::parse_expiry(&key) else {
            continue;
        };
        if deadline_ms > now_ms {
            continue;
        }
        if kind == keys::EXPIRY_KIND_BLOB {
            match blob::read_record(state, id)? {
                Some(record) if record.expires_at_ms == deadline_ms => {
                    blob::delete(state, &mut change.batch, id, &record)?;
                    expired += 1;
                }
                _ => change.batch.delete(key.clone()),
            }
            continue;
        }
        if kind == keys::EXPIRY_KIND_PROGRESS {
            match progress::read(state, id)? {
                Some(record) if record.expires_at_ms == deadline_ms => {
                    progress::delete(&mut change.batch, id, &record);
                    expired += 1;
                }
                _ => change.batch.delete(key.clone()),
            }
            continue;
        }
        match read_session(state, id)? {
            Some(record) if record.expires_at_ms == deadline_ms => {
                change.delete_session(id, &record);
                expired += 1;
            }
            // An index entry without its record: drop it.
            _ => change.batch.delete(key.clone()),
        }
    }
    expired += expire_kv(state, change, now_ms)?;
    expired += once::forget_expired(state, now_ms, &mut change.batch)?;
    Ok(Response::Count(expired))
}

/// Deletes the plain keys due at `now_ms` by their own expiry index; answers how many.
fn expire_kv(state: &dyn Tree, change: &mut Change, now_ms: u64) -> shoal_storage::Result<u64> {
    let mut expired = 0;
    let end = [keys::KV_EXPIRY_PREFIX, &now_ms.saturating_add(1).to_be_bytes()[..]].concat();
    for pair in state.range(Bound::Included(keys::KV_EXPIRY_PREFIX), Bound::Excluded(&end)) {
        let (key, _) = pair?;
        let Some((deadline_ms, stored)) = keys::parse_kv_expiry(&key) else { continue };
        if let Some(record) = kv::read_stored(state, &stored)? {
            if record.expires_at_ms == Some(deadline_ms) {
                change.batch.delete(stored);
                change.kv_delta -= 1;
                expired += 1;
            }
        }
        change.batch.delete(key);
    }
    Ok(expired)
}

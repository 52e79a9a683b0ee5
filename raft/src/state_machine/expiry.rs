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
        if let Some((deadline_ms, keys::EXPIRY_KIND_KV, suffix)) = keys::parse_expiry_raw(&key) {
            let stored = [keys::KV_PREFIX, suffix].concat();
            match kv::read_stored(state, &stored)? {
                Some(record) if record.expires_at_ms == Some(deadline_ms) => {
                    change.batch.delete(stored);
                    change.kv_delta -= 1;
                    expired += 1;
                }
                _ => {}
            }
            change.batch.delete(key.clone());
            continue;
        }
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
    expired += once::forget_expired(state, now_ms, &mut change.batch)?;
    Ok(Response::Count(expired))
}

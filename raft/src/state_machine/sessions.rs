//! Sessions in the replicated state: create, update, delete and touch, each decided by
//! the rule book (`crate::rules`) shared with Redis mode, and kept in the expiry index.

use std::collections::BTreeSet;

use shoal_storage::Tree;

use super::reader::read_session;
use super::Change;
use crate::types::{Response, SessionChange};
use crate::{keys, rules};

/// Creates session `id`, unless a live one has that id.
pub(super) fn create(
    state: &dyn Tree,
    change: &mut Change,
    now_ms: u64,
    id: String,
    data: String,
    ttl_ms: u64,
) -> shoal_storage::Result<Response> {
    let existing = read_session(state, &id)?;
    let record = match rules::create_session(existing.as_ref(), now_ms, data, ttl_ms) {
        Ok(record) => record,
        Err(rejection) => return Ok(Response::Rejected(rejection)),
    };
    match &existing {
        Some(existing) => change.batch.delete(keys::expiry(
            existing.expires_at_ms,
            keys::EXPIRY_KIND_SESSION,
            &id,
        )),
        None => change.session_delta += 1,
    }
    change.put_session(&id, &record);
    Ok(Response::Session { id, record })
}

/// Changes the data of live session `id`: `(change, if_version, max_data_bytes)`.
pub(super) fn update(
    state: &dyn Tree,
    change: &mut Change,
    now_ms: u64,
    id: String,
    (session_change, if_version, max_data_bytes): (SessionChange, Option<u64>, u64),
) -> shoal_storage::Result<Response> {
    let existing = read_session(state, &id)?;
    let old_deadline = existing.as_ref().map(|record| record.expires_at_ms);
    let record =
        match rules::update_session(existing, now_ms, session_change, if_version, max_data_bytes) {
            Ok(record) => record,
            Err(rejection) => return Ok(Response::Rejected(rejection)),
        };
    if let Some(old_deadline) = old_deadline {
        change.batch.delete(keys::expiry(old_deadline, keys::EXPIRY_KIND_SESSION, &id));
    }
    change.put_session(&id, &record);
    Ok(Response::Session { id, record })
}

/// Deletes live session `id`, if it is at `if_version` (when given).
pub(super) fn delete(
    state: &dyn Tree,
    change: &mut Change,
    now_ms: u64,
    id: String,
    if_version: Option<u64>,
) -> shoal_storage::Result<Response> {
    let existing = read_session(state, &id)?;
    let record = match rules::live_session(existing, now_ms, if_version) {
        Ok(record) => record,
        Err(rejection) => return Ok(Response::Rejected(rejection)),
    };
    change.delete_session(&id, &record);
    Ok(Response::Deleted)
}

/// Slides the deadline of each live session of `ids` by its TTL.
pub(super) fn touch(
    state: &dyn Tree,
    change: &mut Change,
    now_ms: u64,
    ids: Vec<String>,
) -> shoal_storage::Result<Response> {
    let mut touched = 0;
    for id in ids.into_iter().collect::<BTreeSet<_>>() {
        let Some(mut record) = read_session(state, &id)? else {
            continue;
        };
        let deadline = now_ms.saturating_add(record.ttl_ms);
        if record.is_expired(now_ms) || deadline <= record.expires_at_ms {
            continue;
        }
        change.batch.delete(keys::expiry(record.expires_at_ms, keys::EXPIRY_KIND_SESSION, &id));
        record.expires_at_ms = deadline;
        change.put_session(&id, &record);
        touched += 1;
    }
    Ok(Response::Count(touched))
}

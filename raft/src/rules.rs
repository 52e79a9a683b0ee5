//! The rules of sessions as pure functions of the record before a command: the state
//! machine applies them to its replica, and the Redis adapter applies the same rules
//! to the records it keeps in Redis, so both modes answer every request alike.

use serde_json::Value;

use crate::merge_patch;
use crate::types::{Rejection, SessionChange, SessionRecord};

/// Returns new session at `now_ms`, unless an unexpired one exists already.
pub fn create_session(
    existing: Option<&SessionRecord>,
    now_ms: u64,
    data: String,
    ttl_ms: u64,
) -> Result<SessionRecord, Rejection> {
    if existing.is_some_and(|existing| !existing.is_expired(now_ms)) {
        return Err(Rejection::AlreadyExists);
    }
    Ok(SessionRecord {
        data,
        version: 1,
        ttl_ms,
        created_at_ms: now_ms,
        expires_at_ms: now_ms.saturating_add(ttl_ms),
    })
}

/// Returns the unexpired session, or why a command on it must be refused.
pub fn live_session(
    existing: Option<SessionRecord>,
    now_ms: u64,
    if_version: Option<u64>,
) -> Result<SessionRecord, Rejection> {
    let record = existing.filter(|record| !record.is_expired(now_ms)).ok_or(Rejection::NotFound)?;
    match if_version {
        Some(expected) if expected != record.version => {
            Err(Rejection::VersionMismatch { current: record.version })
        }
        _ => Ok(record),
    }
}

/// Returns session `existing` after `change` at `now_ms`: new data (a new version if it
/// differs) and a deadline one TTL from now.
pub fn update_session(
    existing: Option<SessionRecord>,
    now_ms: u64,
    change: SessionChange,
    if_version: Option<u64>,
    max_data_bytes: u64,
) -> Result<SessionRecord, Rejection> {
    let mut record = live_session(existing, now_ms, if_version)?;
    let data = match change {
        SessionChange::Replace(data) => data,
        SessionChange::MergePatch(patch) => {
            let mut data: Value = serde_json::from_str(&record.data).unwrap_or(Value::Null);
            let patch: Value = serde_json::from_str(&patch).unwrap_or(Value::Null);
            merge_patch::apply(&mut data, &patch);
            if !data.is_object() {
                return Err(Rejection::NotAnObject);
            }
            data.to_string()
        }
    };
    if data.len() as u64 > max_data_bytes {
        return Err(Rejection::TooLarge { size: data.len() as u64, limit: max_data_bytes });
    }
    // A change that leaves the data as it was keeps the version (so that `If-Match`
    // holders are not invalidated) but still counts as a use.
    if data != record.data {
        record.data = data;
        record.version += 1;
    }
    record.expires_at_ms = now_ms.saturating_add(record.ttl_ms);
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(version: u64, expires_at_ms: u64) -> SessionRecord {
        SessionRecord {
            data: r#"{"a":1}"#.to_string(),
            version,
            ttl_ms: 1000,
            created_at_ms: 0,
            expires_at_ms,
        }
    }

    #[test]
    fn create_refuses_a_live_session_and_replaces_an_expired_one() {
        let live = session(3, 500);
        let refused = create_session(Some(&live), 100, "{}".into(), 1000);
        assert_eq!(refused, Err(Rejection::AlreadyExists));
        let created = create_session(Some(&live), 500, "{}".into(), 1000).unwrap();
        assert_eq!((created.version, created.expires_at_ms), (1, 1500));
    }

    /// Found by fuzzing (fuzz/regressions/merge_patch/): without exact float parsing,
    /// `1.2534678901234565e+20` read back as `1.2534678901234563e+20`, so a patch of
    /// another member changed it, and an empty patch made a new version.
    #[test]
    fn a_patch_leaves_other_numbers_as_they_were() {
        let mut record = session(2, 5000);
        // As the API stores data: written by serde_json, members in order.
        record.data = r#"{"f":0.30000000000000004,"n":1.2534678901234565e+20}"#.to_string();
        let patch = |text: &str| SessionChange::MergePatch(text.to_string());
        let same = update_session(Some(record.clone()), 10, patch("{}"), None, 1000).unwrap();
        assert_eq!((same.version, same.data.as_str()), (2, record.data.as_str()));
        let other = update_session(Some(record), 10, patch(r#"{"x":1}"#), None, 1000).unwrap();
        assert_eq!(other.data, r#"{"f":0.30000000000000004,"n":1.2534678901234565e+20,"x":1}"#);
    }

    #[test]
    fn update_checks_version_size_and_shape() {
        let record = || Some(session(2, 5000));
        let patch = |text: &str| SessionChange::MergePatch(text.to_string());
        assert_eq!(
            update_session(record(), 10, patch(r#"{"b":2}"#), Some(1), 100),
            Err(Rejection::VersionMismatch { current: 2 })
        );
        assert_eq!(
            update_session(record(), 10, patch(r#"{"b":"xxxxxxxx"}"#), None, 10),
            Err(Rejection::TooLarge { size: 22, limit: 10 })
        );
        assert_eq!(update_session(None, 10, patch("{}"), None, 100), Err(Rejection::NotFound));
        let same = update_session(record(), 10, patch(r#"{"a":1}"#), Some(2), 100).unwrap();
        assert_eq!((same.version, same.expires_at_ms), (2, 1010));
        let changed = update_session(record(), 10, patch(r#"{"a":null}"#), None, 100).unwrap();
        assert_eq!((changed.version, changed.data.as_str()), (3, "{}"));
        let expired = update_session(Some(session(2, 10)), 10, patch("{}"), None, 100);
        assert_eq!(expired, Err(Rejection::NotFound));
    }
}

//! At-most-once writes: every write that enters the cluster gets an idempotency key where
//! it enters ([`Command::Once`]), and the state machine keeps the answer of its first
//! application under that key until the write's deadline. A copy proposed again (after a
//! leader change, when the first copy may still commit) or replayed finds the first
//! answer and changes nothing.
//!
//! The deadline travels in the command and is checked against the leader's clock, so
//! every replica decides the same: past it, a copy is refused ([`Rejection::RequestExpired`])
//! and the key may be forgotten.

use std::ops::Bound;
use std::time::Duration;

use shoal_storage::{codec, Tree, WriteBatch};

use crate::keys;
use crate::types::{Command, Rejection, Response, SessionRecord};
use crate::unix_millis;

/// How long after a write entered the cluster a copy of it may still reach the leader:
/// the time it may be retried for, plus room for the nodes' clocks to differ.
pub(crate) fn window(request_timeout: Duration) -> Duration {
    request_timeout * 2 + Duration::from_secs(10)
}

/// Returns `command` with a fresh key and a deadline `window` from now. Commands that
/// are idempotent by nature (touches, expiry) and ones already keyed stay as they are.
pub(crate) fn keyed(command: Command, window: Duration) -> Command {
    match command {
        Command::Touch { .. } | Command::Expire | Command::Once { .. } => command,
        command => {
            let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
            Command::Once {
                key: rand::random(),
                deadline_ms: unix_millis().saturating_add(window_ms),
                command: Box::new(command),
            }
        }
    }
}

/// What is kept of a first application's answer.
///
/// A session's answer is its record after the write: rather than a copy of the record
/// (as large as the session, for every write), only its version is kept, and the record
/// is read again when a copy comes. While the session is still at that version, that is
/// the first answer (its deadline may have slid since, as any read would show); once a
/// later write has changed it, the first answer is gone and the copy is told that its
/// outcome cannot be known, never given another write's record.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) enum Remembered {
    Answer(Response),
    Session { version: u64 },
}

/// Returns the answer of the first application of the write with `key`, if it applied;
/// `session` reads a session's current record.
pub(crate) fn answered(
    state: &dyn Tree,
    deadline_ms: u64,
    key: u128,
    session: impl FnOnce(&str) -> shoal_storage::Result<Option<SessionRecord>>,
    command: &Command,
) -> shoal_storage::Result<Option<Response>> {
    let Some(bytes) = state.get(&keys::once(deadline_ms, key))? else { return Ok(None) };
    Ok(Some(match codec::decode(&bytes, "write answer")? {
        Remembered::Answer(answer) => answer,
        Remembered::Session { version } => {
            let id = match command {
                Command::CreateSession { id, .. } | Command::UpdateSession { id, .. } => id,
                _ => return Ok(Some(Response::Rejected(Rejection::RequestExpired))),
            };
            match session(id)? {
                Some(record) if record.version == version => {
                    Response::Session { id: id.clone(), record }
                }
                _ => Response::Rejected(Rejection::RequestExpired),
            }
        }
    }))
}

/// Keeps what [`answered`] needs of `answer` until the write's deadline.
pub(crate) fn remember(batch: &mut WriteBatch, deadline_ms: u64, key: u128, answer: &Response) {
    let remembered = match answer {
        Response::Session { record, .. } => Remembered::Session { version: record.version },
        other => Remembered::Answer(other.clone()),
    };
    batch.put(keys::once(deadline_ms, key), codec::encode(&remembered));
}

/// Returns the answer to a copy of a keyed write whose deadline has passed at `now_ms`.
pub(crate) fn expired(now_ms: u64, deadline_ms: u64) -> Option<Response> {
    (now_ms > deadline_ms).then_some(Response::Rejected(Rejection::RequestExpired))
}

/// Forgets the answers whose deadline is before `now_ms`; returns how many.
pub(crate) fn forget_expired(
    state: &dyn Tree,
    now_ms: u64,
    batch: &mut WriteBatch,
) -> shoal_storage::Result<u64> {
    let end = keys::once(now_ms, 0);
    let mut forgotten = 0;
    for pair in state.range(Bound::Included(keys::ONCE_PREFIX), Bound::Excluded(&end)) {
        let (key, _) = pair?;
        batch.delete(key);
        forgotten += 1;
    }
    Ok(forgotten)
}

/// Returns the earliest deadline of a kept answer.
pub(crate) fn next_deadline(state: &dyn Tree) -> shoal_storage::Result<Option<u64>> {
    match state.scan_prefix(keys::ONCE_PREFIX).next() {
        Some(pair) => Ok(keys::once_deadline(&pair?.0)),
        None => Ok(None),
    }
}

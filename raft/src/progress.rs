//! Replicated progress records: searches and trackers for external workers.
//!
//! Only durable milestones go through Raft (creation, start, each part's completion and
//! the final outcome); per-page progress events live on the owner node. Every milestone
//! carries the event sequence number the owner gave it, so that a record read from Raft
//! says which events it already reflects.

use shoal_storage::{codec, Tree, WriteBatch};

use crate::keys;
use crate::types::{
    PartState, ProgressCommand, ProgressRecord, ProgressStatus, ProgressUpdate, Rejection, Response,
};

/// How long an unfinished search lives at least after its last milestone: parts may
/// wait in the queue or read a slow source for longer than the TTL, which counts from
/// the end (as the classic setup's `EX 300` did for a finished tracker).
pub const UNFINISHED_GRACE_MS: u64 = 3_600_000;

/// Returns the deadline of `record` after a change at `now_ms`.
///
/// An unfinished tracker lives its TTL and a tenth: its events are not milestones, and
/// its owner records one (a `Started` update) whenever an event finds less than the TTL
/// left, so a tracker nobody feeds expires about a TTL after its last event, as the
/// classic `EX 300` refreshed by every update did, rather than lingering for the grace.
fn deadline(record: &ProgressRecord, now_ms: u64) -> u64 {
    let ttl_ms = if record.status.is_terminal() {
        record.ttl_ms
    } else if record.kind == "tracker" {
        record.ttl_ms.saturating_add(record.ttl_ms / 10)
    } else {
        record.ttl_ms.max(UNFINISHED_GRACE_MS)
    };
    now_ms.saturating_add(ttl_ms)
}

/// Reads progress record `id`, expired or not.
pub(crate) fn read(state: &dyn Tree, id: &str) -> shoal_storage::Result<Option<ProgressRecord>> {
    state.get(&keys::progress(id))?.map(|bytes| codec::decode(&bytes, "progress")).transpose()
}

fn put(batch: &mut WriteBatch, id: &str, record: &ProgressRecord) {
    batch.put(keys::progress(id), codec::encode(record));
    batch.put(keys::expiry(record.expires_at_ms, keys::EXPIRY_KIND_PROGRESS, id), Vec::new());
}

/// Removes record `id` and its expiry-index entry.
pub(crate) fn delete(batch: &mut WriteBatch, id: &str, record: &ProgressRecord) {
    batch.delete(keys::progress(id));
    batch.delete(keys::expiry(record.expires_at_ms, keys::EXPIRY_KIND_PROGRESS, id));
}

/// Returns `existing` if it is live at `now_ms`, at `attempt` and unfinished; else why not.
fn unfinished(
    existing: Option<ProgressRecord>,
    attempt: u32,
    now_ms: u64,
) -> Result<ProgressRecord, Rejection> {
    let record = existing
        .filter(|record| record.expires_at_ms > now_ms)
        .ok_or(Rejection::ProgressNotFound)?;
    if attempt != record.attempt {
        Err(Rejection::StaleAttempt { current: record.attempt })
    } else if record.status.is_terminal() {
        Err(Rejection::ProgressFinished)
    } else {
        Ok(record)
    }
}

/// The record after `command` at the leader's `now_ms`, as a pure function of the one
/// before: the state machine and the Redis adapter both apply progress changes with it.
pub fn transition(
    existing: Option<ProgressRecord>,
    now_ms: u64,
    command: ProgressCommand,
) -> Result<(String, ProgressRecord), Rejection> {
    match command {
        ProgressCommand::Create { id, mut record } => {
            if existing.is_some_and(|existing| existing.expires_at_ms > now_ms) {
                return Err(Rejection::AlreadyExists);
            }
            record.created_at_ms = now_ms;
            record.updated_at_ms = now_ms;
            record.expires_at_ms = deadline(&record, now_ms);
            Ok((id, record))
        }
        ProgressCommand::Takeover { id, attempt, owner } => {
            let mut record = unfinished(existing, attempt, now_ms)?;
            record.attempt += 1;
            record.owner = owner;
            // A search runs again from its queue; a tracker carries on taking events.
            if record.kind != "tracker" {
                record.status = ProgressStatus::Queued;
            }
            for part in &mut record.parts {
                *part = PartState {
                    name: std::mem::take(&mut part.name),
                    status: ProgressStatus::Queued,
                    pages: 0,
                    records: 0,
                };
            }
            record.last_seq = 0;
            record.updated_at_ms = now_ms;
            record.expires_at_ms = deadline(&record, now_ms);
            Ok((id, record))
        }
        ProgressCommand::Update { id, attempt, seq, update } => {
            let mut record = unfinished(existing, attempt, now_ms)?;
            match update {
                ProgressUpdate::Started => record.status = ProgressStatus::Running,
                ProgressUpdate::PartCompleted { part, pages, records } => {
                    record.status = ProgressStatus::Running;
                    let state = record
                        .parts
                        .iter_mut()
                        .find(|state| state.name == part)
                        .ok_or(Rejection::UnknownPart)?;
                    state.status = ProgressStatus::Completed;
                    state.pages = pages;
                    state.records = records;
                }
                ProgressUpdate::Finished { status, result, error } => {
                    record.status = status;
                    record.result = result;
                    record.error = error;
                    for part in &mut record.parts {
                        if !part.status.is_terminal() && status != ProgressStatus::Completed {
                            part.status = status;
                        }
                    }
                }
            }
            record.last_seq = record.last_seq.max(seq);
            record.updated_at_ms = now_ms;
            record.expires_at_ms = deadline(&record, now_ms);
            Ok((id, record))
        }
    }
}

/// Applies `command` at the leader's `now_ms`, adding its writes to `batch`.
pub(crate) fn apply(
    state: &dyn Tree,
    now_ms: u64,
    command: ProgressCommand,
    batch: &mut WriteBatch,
) -> shoal_storage::Result<Response> {
    let id = match &command {
        ProgressCommand::Create { id, .. }
        | ProgressCommand::Takeover { id, .. }
        | ProgressCommand::Update { id, .. } => id.clone(),
    };
    let existing = read(state, &id)?;
    let old_deadline = existing.as_ref().map(|record| record.expires_at_ms);
    match transition(existing, now_ms, command) {
        Ok((id, record)) => {
            // Only now that the change is known to apply does the old index entry go.
            if let Some(old_deadline) = old_deadline {
                batch.delete(keys::expiry(old_deadline, keys::EXPIRY_KIND_PROGRESS, &id));
            }
            put(batch, &id, &record);
            Ok(Response::Progress { id, record })
        }
        Err(rejection) => Ok(Response::Rejected(rejection)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: &str, status: ProgressStatus) -> ProgressRecord {
        ProgressRecord {
            kind: kind.to_string(),
            params: "{}".to_string(),
            status,
            owner: 1,
            attempt: 1,
            created_at_ms: 0,
            updated_at_ms: 0,
            total_parts: 1,
            parts: Vec::new(),
            result: None,
            error: None,
            last_seq: 0,
            ttl_ms: 300_000,
            expires_at_ms: 0,
        }
    }

    #[test]
    fn unfinished_trackers_live_their_ttl_and_a_tenth_searches_the_grace() {
        let now = 1_000;
        let tracker = record("tracker", ProgressStatus::Running);
        assert_eq!(deadline(&tracker, now), now + 330_000);
        let search = record("search", ProgressStatus::Running);
        assert_eq!(deadline(&search, now), now + UNFINISHED_GRACE_MS);
        for kind in ["tracker", "search"] {
            assert_eq!(deadline(&record(kind, ProgressStatus::Completed), now), now + 300_000);
        }
        // A `Started` milestone (the owner's refresh) slides an unfinished tracker and
        // leaves its events' numbering alone.
        let (_, created) = transition(
            None,
            now,
            ProgressCommand::Create { id: "t".into(), record: tracker.clone() },
        )
        .unwrap();
        let mut created = created;
        created.last_seq = 7;
        let refresh = ProgressCommand::Update {
            id: "t".into(),
            attempt: 1,
            seq: 0,
            update: ProgressUpdate::Started,
        };
        let (_, refreshed) = transition(Some(created), now + 100_000, refresh).unwrap();
        assert_eq!((refreshed.expires_at_ms, refreshed.last_seq), (now + 430_000, 7));
        assert_eq!(refreshed.status, ProgressStatus::Running);
    }
}

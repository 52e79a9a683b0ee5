//! Tracker events: what a worker posts, what each kind changes, and how the node that
//! numbers a tracker's events publishes one (its topic, and Raft for the terminal one).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use shoal_raft::{unix_millis, ProgressRecord, ProgressStatus, ProgressUpdate, Rejection};

use crate::sse::{terminal_data, EventKind, Hub};
use crate::store::{Store, StoreError};

/// How long a finished tracker's events stay in memory for reconnecting clients.
const FINISHED_LINGER: Duration = Duration::from_secs(120);

/// The kinds of event a worker may post.
const POSTED_KINDS: [EventKind; 3] = [EventKind::Progress, EventKind::Completed, EventKind::Failed];

/// An event as a worker posts it, and as it is forwarded to the tracker's owner. Fields
/// a later build adds carry `#[serde(default)]` (`docs/formats.md`); unknown ones are
/// refused on the public route only (`api/trackers.rs`), never between nodes.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct TrackerEvent {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub data: Value,
}

/// What a tracker event changes: its status (`None` for progress), and for a terminal
/// one the record's result and error.
#[derive(Debug, Clone)]
pub struct Effect {
    pub kind: EventKind,
    pub status: Option<ProgressStatus>,
    pub result: Option<String>,
    pub error: Option<String>,
}

/// A posted event of a kind workers may not post.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("type: {0:?} is not one of progress, completed, failed")]
pub struct InvalidEvent(pub String);

impl Effect {
    /// Returns what `event` changes, or why it cannot be taken.
    pub fn of(event: &TrackerEvent) -> Result<Self, InvalidEvent> {
        let Some(kind) = EventKind::parse(&event.kind).filter(|kind| POSTED_KINDS.contains(kind))
        else {
            return Err(InvalidEvent(event.kind.clone()));
        };
        let Some(status) = kind.terminal_status() else {
            return Ok(Effect { kind, status: None, result: None, error: None });
        };
        let data = &event.data;
        let (result, error) = match status {
            ProgressStatus::Completed => (Some(data.to_string()), None),
            _ => (
                None,
                Some(
                    data.get("error")
                        .and_then(Value::as_str)
                        .map_or_else(|| data.to_string(), str::to_string),
                ),
            ),
        };
        Ok(Effect { kind, status: Some(status), result, error })
    }

    /// Returns the milestone a tracker's record takes for this event: progress changes
    /// nothing but the count (and the deadline, as the classic setup's `EX 300` did).
    pub fn update(&self) -> ProgressUpdate {
        match self.status {
            None => ProgressUpdate::Started,
            Some(status) => ProgressUpdate::Finished {
                status,
                result: self.result.clone(),
                error: self.error.clone(),
            },
        }
    }

    /// Returns the data of the published event for posted `data`.
    pub fn data(&self, data: Value) -> Value {
        match self.status {
            None => data,
            Some(status) => terminal_data(status, Some(data), self.error.as_deref()),
        }
    }
}

/// A published tracker event: its number, and the tracker's status once it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackerPosted {
    pub seq: u64,
    pub status: Option<ProgressStatus>,
}

/// Publishes `event` of tracker `id`, whose events this node numbers: progress on its
/// topic alone, a terminal event once Raft has recorded it.
pub async fn publish_here(
    hub: &std::sync::Arc<Hub>,
    store: &Store,
    id: &str,
    record: &ProgressRecord,
    event: TrackerEvent,
    effect: Effect,
) -> Result<TrackerPosted, StoreError> {
    let topic = hub.get_or_open(id, record.attempt, record.last_seq);
    let Some(status) = effect.status else {
        refresh_deadline(store, id, record).await?;
        let seq =
            topic.publish(effect.kind, event.data).await.ok_or(Rejection::ProgressFinished)?;
        return Ok(TrackerPosted { seq, status: None });
    };
    let data = effect.data(event.data);
    let update = effect.update();
    let attempt = record.attempt;
    let seq = topic
        .publish_durable(effect.kind, |seq| async move {
            store.record_milestone(id, attempt, seq, update).await?;
            Ok::<_, StoreError>(data)
        })
        .await?
        .ok_or(Rejection::ProgressFinished)?;
    hub.retire(id, &topic, FINISHED_LINGER);
    Ok(TrackerPosted { seq, status: Some(status) })
}

/// Slides the deadline of unfinished tracker `record` when less than its TTL is left.
///
/// A tracker's `progress` events are not recorded through Raft, so they would not move
/// its deadline; the replicated rule gives an unfinished tracker its TTL and a tenth
/// after its last milestone, and this refresh (a `Started` milestone that changes nothing
/// else) restores that whenever an event finds less than the TTL left. So a tracker lives
/// at least `--progress-ttl` after its last event, as the classic setup's `EX 300`
/// refreshed by every update, with one Raft write per tenth of the TTL at most.
async fn refresh_deadline(
    store: &Store,
    id: &str,
    record: &ProgressRecord,
) -> Result<(), StoreError> {
    if record.expires_at_ms >= unix_millis().saturating_add(record.ttl_ms) {
        return Ok(());
    }
    store.record_milestone(id, record.attempt, 0, ProgressUpdate::Started).await?;
    Ok(())
}

//! What searches and trackers share: the state view and the SSE event stream.

use std::convert::Infallible;
use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::stream::{self, Stream, StreamExt};
use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use shoal_raft::{NodeId, ProgressRecord, ProgressStatus, Rejection};
use utoipa::ToSchema;

use super::error::{ApiError, ApiResult};
use super::AppState;
use crate::sse::follow::{follow, Followed};
use crate::sse::ProgressEvent;
use crate::time::rfc3339_millis;

/// How long a resuming client waits for this node's relay to reach its resume point.
const RELAY_CATCH_UP: Duration = Duration::from_secs(2);
/// How often a stream without a local topic re-reads the replicated record.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Where a search, a tracker or one part of a search stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StatusView {
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl From<ProgressStatus> for StatusView {
    fn from(status: ProgressStatus) -> Self {
        match status {
            ProgressStatus::Queued => StatusView::Queued,
            ProgressStatus::Running => StatusView::Running,
            ProgressStatus::Completed => StatusView::Completed,
            ProgressStatus::Failed => StatusView::Failed,
            ProgressStatus::Cancelled => StatusView::Cancelled,
        }
    }
}

/// `search` or `tracker`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KindView {
    Search,
    Tracker,
}

/// One part of a search (one UF).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PartView {
    pub status: StatusView,
    /// Result pages fetched so far.
    pub pages: u32,
    /// Records kept so far.
    pub records: u64,
}

/// A search or a tracker, as replicated (DESIGN §6).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProgressView {
    pub id: String,
    pub kind: KindView,
    pub status: StatusView,
    /// The node that runs it (a search) or publishes its events (a tracker).
    pub owner: NodeId,
    /// Counts takeovers: another node resumed it after its owner died.
    pub attempt: u32,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    pub total_parts: u32,
    pub completed_parts: u32,
    /// A search's parts by UF (a tracker has none).
    pub parts: BTreeMap<String, PartView>,
    /// What it ended with once completed: for a search, `total_records` and the
    /// report's `download` (`id`, signed `url`, `expires_at`); for a tracker, the data of
    /// its `completed` event (any JSON).
    pub result: Option<Value>,
    /// Why it failed.
    pub error: Option<String>,
    /// A tracker's `label` and `total`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub params: Option<Value>,
    /// Where its events stream (in the answer that creates a tracker).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events_url: Option<String>,
}

/// One event of a stream of `…/events` (the schema of each event, as OpenAPI 3.2's
/// `itemSchema` and schemathesis read `text/event-stream`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct SseEvent {
    /// `<attempt>:<seq>`, for `Last-Event-ID`.
    #[schema(pattern = "^[0-9]+:[0-9]+$", example = "1:17")]
    id: String,
    event: SseEventName,
    /// JSON: the state (`snapshot`), `{uf, page, pages, records}` (`progress`),
    /// `{uf, pages, records, completed_parts, total_parts}` (`part_completed`), a
    /// tracker's posted data, or `{status, result, error}` (terminal events).
    data: String,
    /// Milliseconds a client waits before reconnecting (on the `snapshot`).
    retry: Option<u64>,
}

/// The events of a stream.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
enum SseEventName {
    Snapshot,
    Progress,
    PartCompleted,
    Completed,
    Failed,
    Cancelled,
}

/// Returns the API view of progress record `id` (DESIGN §6).
pub fn view(id: &str, record: &ProgressRecord) -> ProgressView {
    let parts = record
        .parts
        .iter()
        .map(|part| {
            let state =
                PartView { status: part.status.into(), pages: part.pages, records: part.records };
            (part.name.clone(), state)
        })
        .collect();
    let parse = |text: &str| serde_json::from_str::<Value>(text).ok();
    let kind = if record.kind == "tracker" { KindView::Tracker } else { KindView::Search };
    ProgressView {
        id: id.to_string(),
        kind,
        status: record.status.into(),
        owner: record.owner,
        attempt: record.attempt,
        created_at: rfc3339_millis(record.created_at_ms),
        updated_at: rfc3339_millis(record.updated_at_ms),
        total_parts: record.total_parts,
        completed_parts: record.completed_parts(),
        parts,
        result: record.result.as_deref().and_then(parse),
        error: record.error.clone(),
        params: (kind == KindView::Tracker).then(|| parse(&record.params)).flatten(),
        events_url: None,
    }
}

/// Reads record `id` linearizably.
pub async fn read(app: &AppState, id: &str) -> ApiResult<ProgressRecord> {
    app.store.progress(id).await?.ok_or(ApiError::from(Rejection::ProgressNotFound))
}

/// Reads record `id` linearizably, as a record of `kind` (`search` or `tracker`).
pub async fn read_kind(app: &AppState, id: &str, kind: &str) -> ApiResult<ProgressRecord> {
    let record = read(app, id).await?;
    if record.kind != kind {
        return Err(Rejection::ProgressNotFound.into());
    }
    Ok(record)
}

fn parse_last_event_id(headers: &HeaderMap) -> Option<(u32, u64)> {
    let text = headers.get("last-event-id")?.to_str().ok()?;
    let (attempt, seq) = text.trim().split_once(':')?;
    Some((attempt.parse().ok()?, seq.parse().ok()?))
}

fn sse_event(event: &ProgressEvent) -> Event {
    Event::default().id(event.id()).event(event.kind.as_str()).data(event.data.to_string())
}

fn snapshot_event(id: &str, attempt: u32, seq: u64, record: &ProgressRecord) -> Event {
    Event::default()
        .id(format!("{attempt}:{seq}"))
        .event("snapshot")
        .retry(Duration::from_millis(2000))
        .data(serde_json::to_string(&view(id, record)).expect("views serialize"))
}

/// The terminal event of finished `record`, as its owner published it.
fn terminal_from_record(record: &ProgressRecord) -> Option<Event> {
    ProgressEvent::ending_of(record).map(|event| sse_event(&event))
}

type EventStream = std::pin::Pin<Box<dyn Stream<Item = Event> + Send>>;

/// The stream of a finished record: its snapshot and terminal event, or `None` when the
/// client's `Last-Event-ID` shows it saw the end (answered 204, which tells EventSource
/// to stop reconnecting).
fn finished_events(
    id: &str,
    record: &ProgressRecord,
    resume: Option<(u32, u64)>,
) -> Option<EventStream> {
    if resume.is_some_and(|(_, seq)| seq >= record.last_seq) {
        return None;
    }
    let head = snapshot_event(id, record.attempt, record.last_seq.saturating_sub(1), record);
    Some(Box::pin(stream::iter(std::iter::once(head).chain(terminal_from_record(record)))))
}

/// `GET …/{id}/events`: a `snapshot` (unless resuming), the events after it, one
/// terminal event, then the stream ends. `Last-Event-ID: <attempt>:<seq>` resumes.
pub async fn events(app: AppState, id: String, headers: HeaderMap) -> ApiResult<Response> {
    let mut record = read(&app, &id).await?;
    let resume = parse_last_event_id(&headers).filter(|(attempt, _)| *attempt == record.attempt);
    let topic = match app.hub.get(&id).filter(|topic| topic.attempt == record.attempt) {
        Some(topic) => Some(topic),
        // Published elsewhere: the fabric relays the events here.
        None if !record.status.is_terminal() => {
            let resume_seq = resume.map(|(_, seq)| seq);
            app.events.relay_topic(&id, &mut record, resume_seq).await?
        }
        None => None,
    };
    let events: EventStream = match topic {
        Some(topic) => {
            // The state under the topic's lock: this replica's copy, or in Redis mode the
            // record read above (Redis cannot be read under a lock held across awaits).
            let read_now = record.clone();
            // A new client starts from the record read above (after a read barrier),
            // labelled with the last event it reflects, then the events after it: snapshot
            // and events agree even when this replica lags the owner's numbering.
            let start = resume.map(|(_, seq)| seq).unwrap_or(record.last_seq);
            // A client may have seen, through another node, events this node's relay has
            // not received yet: give the relay a moment rather than start over.
            let caught_up = async {
                while topic.last_seq().await < start {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            };
            let _ = tokio::time::timeout(RELAY_CATCH_UP, caught_up).await;
            let snapshot_from_record = resume.is_none().then(|| record.clone());
            let subscription = topic
                .subscribe(Some(start), || {
                    app.store.progress_on_replica(&id).unwrap_or(Ok(Some(read_now)))
                })
                .await;
            let record = match subscription.state {
                Ok(Some(record)) => record,
                Ok(None) => return Err(Rejection::ProgressNotFound.into()),
                Err(error) => return Err(ApiError::internal(error)),
            };
            let replay_done = subscription.replay.iter().any(|event| event.is_terminal());
            if record.attempt != topic.attempt {
                // A takeover moved the record on while this topic relayed the attempt
                // that is over: show the record under its own attempt and end, so that
                // the client reconnects to the new attempt (a snapshot labelled with the
                // old attempt would send its Last-Event-ID backwards).
                match finished_events(&id, &record, None) {
                    Some(events) if record.status.is_terminal() => events,
                    _ => {
                        let head = snapshot_event(&id, record.attempt, record.last_seq, &record);
                        Box::pin(stream::iter([head]))
                    }
                }
            } else if subscription.finished && !replay_done && record.status.is_terminal() {
                // Ended before this request: answer from the record, like any node would.
                match finished_events(&id, &record, resume) {
                    Some(events) => events,
                    None => return Ok(StatusCode::NO_CONTENT.into_response()),
                }
            } else if subscription.finished && !replay_done {
                // Ended with a terminal event the record could not take (see
                // `Searches::finish`): that event is the end, from the topic.
                let terminal = topic.since(subscription.seq.saturating_sub(1)).await;
                let Some(terminal) = terminal.last() else {
                    return Err(ApiError::internal("a finished topic without its terminal event"));
                };
                if resume.is_some_and(|(_, seq)| seq >= terminal.seq) {
                    return Ok(StatusCode::NO_CONTENT.into_response());
                }
                let head = snapshot_event(&id, topic.attempt, terminal.seq - 1, &record);
                Box::pin(stream::iter([head, sse_event(terminal)]))
            } else {
                // A point the topic cannot replay from starts over with a snapshot now.
                // A client ahead of a relayed topic (its relay has not caught up: the
                // owner is away) keeps its place: the snapshot carries its point, and the
                // owner's events up to it, which it has seen, are not sent again. Not on
                // the owner: a tracker's owner that restarted numbers anew from its last
                // milestone, and those are other events (docs/upgrades.md).
                let ahead = resume
                    .map(|(_, seq)| seq)
                    .filter(|seq| *seq > subscription.seq && topic.is_relayed());
                let seq = if subscription.resumed {
                    subscription.seq
                } else {
                    ahead.unwrap_or(subscription.seq)
                };
                let head = match (&snapshot_from_record, subscription.resumed) {
                    (None, true) => None,
                    (Some(first), true) => {
                        Some(snapshot_event(&id, topic.attempt, first.last_seq, first))
                    }
                    (_, false) => Some(snapshot_event(&id, topic.attempt, seq, &record)),
                };
                let (replay, live) = (subscription.replay, subscription.live);
                let events =
                    follow(topic, seq, replay, live, None).filter_map(|followed| async move {
                        match followed {
                            Followed::Event(event) => Some(sse_event(&event)),
                            Followed::Idle => None,
                        }
                    });
                Box::pin(stream::iter(head).chain(events))
            }
        }
        None if record.status.is_terminal() => match finished_events(&id, &record, resume) {
            Some(events) => events,
            None => return Ok(StatusCode::NO_CONTENT.into_response()),
        },
        None => {
            // Nobody here publishes this record's events: follow its replicated state.
            let head = snapshot_event(&id, record.attempt, record.last_seq, &record);
            Box::pin(stream::iter([head]).chain(poll_until_terminal(app.clone(), id.clone())))
        }
    };
    let stream = events.map(Ok::<_, Infallible>);
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(app.config.sse_keep_alive))
        .into_response();
    let headers = response.headers_mut();
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// Re-reads the replicated record until it is terminal, then yields its terminal event.
fn poll_until_terminal(app: AppState, id: String) -> impl Stream<Item = Event> + Send {
    stream::once(async move {
        loop {
            tokio::time::sleep(POLL_INTERVAL).await;
            match app.store.progress_local(&id).await {
                Some(record) if record.status.is_terminal() => {
                    return terminal_from_record(&record)
                }
                Some(_) => continue,
                None => return None,
            }
        }
    })
    .filter_map(|event| async move { event })
}

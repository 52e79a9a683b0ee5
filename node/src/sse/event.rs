//! The events of searches and trackers: their kinds, and the payload that ends a stream.
//! A leaf module: the hub, the relays, the jobs and the API all speak these types.

use serde_json::{json, Value};
use shoal_raft::{ProgressRecord, ProgressStatus};

/// What an event says. The names are the SSE `event:` field, the relay's `kind` and the
/// Redis message's `event`; a new kind is a format change (`docs/formats.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A page of a part was read (not recorded through Raft).
    Progress,
    /// A part finished (a milestone).
    PartCompleted,
    /// The search or tracker finished with a result (terminal).
    Completed,
    /// The search or tracker failed (terminal).
    Failed,
    /// The search was cancelled (terminal).
    Cancelled,
}

impl EventKind {
    /// Every kind, for parsing names received from other nodes.
    pub const ALL: [EventKind; 5] = [
        EventKind::Progress,
        EventKind::PartCompleted,
        EventKind::Completed,
        EventKind::Failed,
        EventKind::Cancelled,
    ];

    /// Returns the kind's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Progress => "progress",
            EventKind::PartCompleted => "part_completed",
            EventKind::Completed => "completed",
            EventKind::Failed => "failed",
            EventKind::Cancelled => "cancelled",
        }
    }

    /// Returns the kind named `name`, if this build knows it.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    /// Returns the status a stream ends in after this event, for terminal kinds.
    pub fn terminal_status(self) -> Option<ProgressStatus> {
        match self {
            EventKind::Progress | EventKind::PartCompleted => None,
            EventKind::Completed => Some(ProgressStatus::Completed),
            EventKind::Failed => Some(ProgressStatus::Failed),
            EventKind::Cancelled => Some(ProgressStatus::Cancelled),
        }
    }

    /// Returns whether this event ends the stream.
    pub fn is_terminal(self) -> bool {
        self.terminal_status().is_some()
    }

    /// Returns the event that ends a stream in `status`, if it is terminal.
    pub fn ending_in(status: ProgressStatus) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.terminal_status() == Some(status))
    }
}

/// Fails to compile when a kind is added without a look at [`EventKind::ALL`]: add the
/// new kind there too (and a fixture, `docs/formats.md`).
const _: fn(EventKind) = |kind| match kind {
    EventKind::Progress
    | EventKind::PartCompleted
    | EventKind::Completed
    | EventKind::Failed
    | EventKind::Cancelled => {}
};

/// Returns the kind named `name` in an event received from `source` (another node, or
/// Redis); logs and skips kinds this build does not know, which a newer build may send
/// only once every node knows them (`docs/formats.md`).
pub fn parse_received(name: &str, source: &'static str) -> Option<EventKind> {
    let kind = EventKind::parse(name);
    if kind.is_none() {
        tracing::warn!(kind = name, source, "skipped an event of a kind this build does not know");
    }
    kind
}

/// One event of a search or tracker.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgressEvent {
    pub attempt: u32,
    pub seq: u64,
    pub kind: EventKind,
    pub data: Value,
}

impl ProgressEvent {
    /// Returns whether this event ends the stream.
    pub fn is_terminal(&self) -> bool {
        self.kind.is_terminal()
    }

    /// Returns the SSE id: `<attempt>:<seq>`.
    pub fn id(&self) -> String {
        format!("{}:{}", self.attempt, self.seq)
    }

    /// Returns the terminal event of finished `record`, as its owner published it.
    pub fn ending_of(record: &ProgressRecord) -> Option<Self> {
        let kind = EventKind::ending_in(record.status)?;
        let result = record.result.as_deref().and_then(|text| serde_json::from_str(text).ok());
        let data = terminal_data(record.status, result, record.error.as_deref());
        Some(ProgressEvent { attempt: record.attempt, seq: record.last_seq, kind, data })
    }
}

/// The data of a terminal event: `{"status","result","error"}`, built here only.
pub fn terminal_data(status: ProgressStatus, result: Option<Value>, error: Option<&str>) -> Value {
    json!({ "status": status.as_str(), "result": result, "error": error })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_parses_from_its_name_and_terminal_kinds_match_statuses() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
            if let Some(status) = kind.terminal_status() {
                assert!(status.is_terminal());
                assert_eq!(EventKind::ending_in(status), Some(kind));
            }
        }
        assert_eq!(EventKind::parse("snapshot"), None);
        assert_eq!(EventKind::ending_in(ProgressStatus::Running), None);
    }
}

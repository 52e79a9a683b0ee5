//! The progress records of searches and trackers, and the commands that change them
//! (applied by `crate::progress`).

use serde::{Deserialize, Serialize};

use super::NodeId;

/// Where a progress record stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProgressStatus {
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl ProgressStatus {
    /// Returns the name the API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            ProgressStatus::Queued => "queued",
            ProgressStatus::Running => "running",
            ProgressStatus::Completed => "completed",
            ProgressStatus::Failed => "failed",
            ProgressStatus::Cancelled => "cancelled",
        }
    }

    /// Returns the status the API names `name`.
    pub fn parse(name: &str) -> Option<Self> {
        use ProgressStatus::*;
        [Queued, Running, Completed, Failed, Cancelled].into_iter().find(|s| s.as_str() == name)
    }

    /// Returns whether nothing can change any more.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ProgressStatus::Completed | ProgressStatus::Failed | ProgressStatus::Cancelled
        )
    }
}

/// One part of a search (one UF).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartState {
    pub name: String,
    pub status: ProgressStatus,
    pub pages: u32,
    pub records: u64,
}

/// A search or tracker, as replicated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressRecord {
    /// `search` or `tracker`.
    pub kind: String,
    /// The request that created it, as JSON text (search parameters, tracker label).
    pub params: String,
    pub status: ProgressStatus,
    /// The node that runs it.
    pub owner: NodeId,
    /// Starts at 1; a takeover after the owner died runs it again as attempt + 1.
    pub attempt: u32,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    pub total_parts: u32,
    pub parts: Vec<PartState>,
    /// The final result as JSON text, once completed.
    pub result: Option<String>,
    pub error: Option<String>,
    /// The sequence number of the last event this record reflects.
    pub last_seq: u64,
    pub ttl_ms: u64,
    pub expires_at_ms: u64,
}

impl ProgressRecord {
    /// Returns how many parts have completed.
    pub fn completed_parts(&self) -> u32 {
        self.parts.iter().filter(|part| part.status == ProgressStatus::Completed).count() as u32
    }
}

/// A milestone of a progress record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProgressUpdate {
    /// The owner started working.
    Started,
    /// One part finished with these totals.
    PartCompleted { part: String, pages: u32, records: u64 },
    /// The record reached a terminal status.
    Finished { status: ProgressStatus, result: Option<String>, error: Option<String> },
}

/// Changes to progress records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProgressCommand {
    /// Creates record `id`.
    Create { id: String, record: ProgressRecord },
    /// Records a milestone of attempt `attempt`, as event `seq`.
    Update { id: String, attempt: u32, seq: u64, update: ProgressUpdate },
    /// Hands an unfinished record at attempt `attempt` to `owner` as attempt + 1, which
    /// runs it again from the start (its owner died or restarted).
    Takeover { id: String, attempt: u32, owner: NodeId },
}

//! The openraft type configuration and the commands replicated through the log.

use std::io::Cursor;

use serde::{Deserialize, Serialize};

mod blob;
mod kv;
mod progress;

pub use blob::{BlobCommand, BlobMeta, BlobRecord};
pub use kv::{ExpireCondition, KvCommand, KvRecord, KvReply, SetCondition, Ttl};
pub use progress::{PartState, ProgressCommand, ProgressRecord, ProgressStatus, ProgressUpdate};

/// A node's Raft id: `--node-id`, or generated once and kept in the data dir.
pub type NodeId = u64;

/// What the cluster knows of a member: the address of its HTTP API.
pub type Node = openraft::BasicNode;

openraft::declare_raft_types!(
    /// shoal's openraft type configuration.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = Node,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A log entry of shoal's Raft log.
pub type Entry = openraft::Entry<TypeConfig>;

/// The shoal Raft handle.
pub type Raft = openraft::Raft<TypeConfig>;

/// A command plus the leader's clock when it was proposed.
///
/// Every time-dependent decision of the state machine (expiry, TTL deadlines) uses
/// `now_ms`, never the applying node's clock, so every replica decides the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Unix milliseconds on the leader that proposed the command.
    pub now_ms: u64,
    /// What to change.
    pub command: Command,
}

/// A change to the replicated state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Creates session `id` holding `data` (a JSON object, as text).
    CreateSession { id: String, data: String, ttl_ms: u64 },
    /// Changes the data of an existing, unexpired session.
    UpdateSession {
        id: String,
        change: SessionChange,
        /// Applies only if the session is at this version (HTTP `If-Match`).
        if_version: Option<u64>,
        /// Rejects the change if the resulting data is larger than this.
        max_data_bytes: u64,
    },
    /// Deletes a session.
    DeleteSession { id: String, if_version: Option<u64> },
    /// Extends the deadline of each listed, unexpired session by its TTL.
    Touch { ids: Vec<String> },
    /// Deletes everything whose deadline is at or before `now_ms`.
    Expire,
    /// Creates or advances a search or tracker.
    Progress(ProgressCommand),
    /// Stores report blobs.
    Blob(BlobCommand),
    /// Session and progress commands on distinct records, applied together (group
    /// commit by the leader; see `batch.rs`).
    Batch(Vec<Command>),
    /// `command`, applied at most once however often it is proposed: a write forwarded
    /// again after a leader change, or a replayed request, finds the answer of the first
    /// application under `key` (see `once.rs`). Refused once the leader's clock is past
    /// `deadline_ms`, after which the key is forgotten.
    Once { key: RequestKey, deadline_ms: u64, command: Box<Command> },
    /// Changes plain keys (the Redis protocol endpoint). Since format level 2.
    Kv(KvCommand),
}

/// The idempotency key of a write: 128 random bits drawn where the write entered the
/// cluster.
pub type RequestKey = u128;

/// How [`Command::UpdateSession`] changes the data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionChange {
    /// Replaces the data with this JSON object (as text).
    Replace(String),
    /// Applies this RFC 7396 JSON merge patch (as text) to the data.
    MergePatch(String),
}

/// A stored session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The session data: a JSON object, as text.
    pub data: String,
    /// Starts at 1 and grows by one with every change of the data.
    pub version: u64,
    /// How long the session lives without being used.
    pub ttl_ms: u64,
    /// Unix milliseconds of creation, on the leader's clock.
    pub created_at_ms: u64,
    /// Unix milliseconds after which the session no longer exists.
    pub expires_at_ms: u64,
}

impl SessionRecord {
    /// Returns whether the session has expired at `now_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms <= now_ms
    }
}

/// The state machine's answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The entry changed nothing that has an answer (blank and membership entries).
    Empty,
    /// The session as it is after the command.
    Session { id: String, record: SessionRecord },
    /// The session was deleted.
    Deleted,
    /// How many sessions a touch extended or an expiry removed.
    Count(u64),
    /// The progress record as it is after the command.
    Progress { id: String, record: ProgressRecord },
    /// The command was refused and changed nothing.
    Rejected(Rejection),
    /// The answers to the commands of a [`Command::Batch`], in order.
    Batch(Vec<Response>),
    /// The answer to a [`Command::Kv`]. Since format level 2.
    Kv(KvReply),
}

/// Why the state machine refused a command. Every replica refuses the same way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    /// No unexpired session has that id.
    #[error("session not found")]
    NotFound,
    /// A session with that id already exists.
    #[error("session already exists")]
    AlreadyExists,
    /// `If-Match` named another version than the current one.
    #[error("session is at version {current}, not the one in If-Match")]
    VersionMismatch { current: u64 },
    /// The resulting data would exceed the size limit.
    #[error("session data is {size} bytes, more than the limit of {limit}")]
    TooLarge { size: u64, limit: u64 },
    /// The resulting data is not a JSON object.
    #[error("session data must be a JSON object")]
    NotAnObject,
    /// No unexpired search or tracker has that id.
    #[error("search or tracker not found")]
    ProgressNotFound,
    /// The search or tracker has finished; nothing about it changes any more.
    #[error("search or tracker has already finished")]
    ProgressFinished,
    /// A milestone of an earlier attempt arrived after a takeover.
    #[error("attempt is stale; the current attempt is {current}")]
    StaleAttempt { current: u32 },
    /// A milestone named a part the search does not have.
    #[error("no such part")]
    UnknownPart,
    /// A blob chunk or commit arrived for a blob that is not being written.
    #[error("blob is not being written")]
    BlobNotPending,
    /// A write reached the leader after its deadline: whether an earlier copy of it
    /// applied can no longer be told, so this one does not.
    #[error("the write arrived after its deadline")]
    RequestExpired,
    /// An increment found a value that is not a signed 64-bit decimal. Since format level 2.
    #[error("value is not an integer or out of range")]
    NotAnInteger,
    /// An increment would leave the signed 64-bit range. Since format level 2.
    #[error("increment or decrement would overflow")]
    Overflow,
}

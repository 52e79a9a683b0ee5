//! [`StoreError`]: why the state store did not do what was asked, in the terms of the
//! domain; the API maps it to a status in one place (`api/error.rs`).

use std::time::Duration;

use shoal_raft::{ClusterError, NodeId, Rejection};
use shoal_storage::BlobError;

/// Why the state store did not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The rules refused the change (or found nothing); nothing changed.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The store cannot answer right now; the same request may well succeed shortly.
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
    /// The store failed in a way that retrying does not mend (a storage failure, a
    /// damaged replica, Raft stopped): the details are for the node's log.
    #[error("{0}")]
    Failed(String),
}

/// Why the state store cannot answer right now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    /// No leader is known (an election, or quorum lost).
    #[error("no raft leader is known right now")]
    NoLeader,
    /// The leader this node knows of leads no more or is changing.
    #[error("node {leader_id} leads the cluster")]
    NotLeader { leader_id: NodeId },
    /// The leader (or another node a request needs) could not be reached.
    #[error("{0}")]
    Unreachable(String),
    /// The cluster did not answer in time.
    #[error("the cluster did not answer within {0:?}")]
    Timeout(Duration),
    /// This node is cut off from a quorum.
    #[error("this node is cut off from a quorum of the cluster")]
    NoQuorum,
    /// The write reached the leader after its deadline: whether an earlier copy applied
    /// cannot be told; read the state, then retry.
    #[error("the write arrived after its deadline")]
    TooLate,
    /// Redis (compatibility mode) cannot answer.
    #[error("{0}")]
    Redis(String),
}

/// The result type of the state store.
pub type Result<T> = std::result::Result<T, StoreError>;

impl StoreError {
    /// Returns whether the same request, made again here shortly, may succeed: the
    /// cluster is between leaders or slow, or Redis is away. Not a node cut off from the
    /// quorum (it fails fast, and clients go to another node), nor a write that arrived
    /// too late (whether it applied must be read first).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable(
                Unavailable::NoLeader
                    | Unavailable::NotLeader { .. }
                    | Unavailable::Unreachable(_)
                    | Unavailable::Timeout(_)
                    | Unavailable::Redis(_)
            )
        )
    }

    /// Returns whether background work (a search's milestones, which have no client that
    /// would go to another node) may succeed by trying again here: it is retryable, or
    /// this node is cut off from a quorum, which it finds again when an election ends.
    pub fn mends_with_time(&self) -> bool {
        self.is_retryable() || matches!(self, StoreError::Unavailable(Unavailable::NoQuorum))
    }
}

impl From<ClusterError> for StoreError {
    fn from(error: ClusterError) -> Self {
        match error {
            ClusterError::Rejected(Rejection::RequestExpired) => Unavailable::TooLate.into(),
            ClusterError::Rejected(rejection) => StoreError::Rejected(rejection),
            ClusterError::NoLeader => Unavailable::NoLeader.into(),
            ClusterError::NotLeader { leader_id, .. } => {
                Unavailable::NotLeader { leader_id }.into()
            }
            ClusterError::Unreachable(reason) => Unavailable::Unreachable(reason).into(),
            ClusterError::Timeout(timeout) => Unavailable::Timeout(timeout).into(),
            ClusterError::NoQuorum => Unavailable::NoQuorum.into(),
            ClusterError::Unavailable(reason) => Unavailable::Redis(reason).into(),
            ClusterError::Membership(_)
            | ClusterError::Storage(_)
            | ClusterError::Raft(_)
            | ClusterError::Damaged(_) => StoreError::Failed(error.to_string()),
        }
    }
}

impl From<shoal_storage::StorageError> for StoreError {
    fn from(error: shoal_storage::StorageError) -> Self {
        ClusterError::from(error).into()
    }
}

impl From<BlobError> for StoreError {
    fn from(error: BlobError) -> Self {
        match error {
            BlobError::Unavailable(reason) => Unavailable::Redis(reason).into(),
            BlobError::Failed(reason) => StoreError::Failed(reason),
        }
    }
}

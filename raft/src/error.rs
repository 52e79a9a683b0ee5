use openraft::error::ForwardToLeader;

use crate::types::{Node, NodeId, Rejection};

/// Errors of the Raft layer, as callers need to tell them apart.
#[derive(Debug, Clone, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum ClusterError {
    /// No leader is known right now (election in progress or quorum lost).
    #[error("no raft leader is known right now")]
    NoLeader,
    /// Another node leads; the request must go there.
    #[error("node {leader_id} leads the cluster")]
    NotLeader { leader_id: NodeId, leader_addr: String },
    /// Another node could not be reached (the leader, for a forwarded request).
    #[error("{0}")]
    Unreachable(String),
    /// A membership change was refused (for example, one is already in progress).
    #[error("membership change refused: {0}")]
    Membership(String),
    /// The cluster did not answer in time (for example, quorum is lost).
    #[error("the cluster did not answer within {0:?}")]
    Timeout(std::time::Duration),
    /// The state machine refused the command; nothing changed.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// Storage failed.
    #[error("storage failed: {0}")]
    Storage(String),
    /// Raft stopped or failed in a way that needs an operator.
    #[error("raft failed: {0}")]
    Raft(String),
    /// Never produced: builds before the domain layer carried Redis failures in it (never
    /// between nodes); kept because the variants are a wire format.
    #[error("{0}")]
    Unavailable(String),
    /// This node is cut off from a quorum of the cluster (a partition, or most nodes down).
    #[error("this node is cut off from a quorum of the cluster")]
    NoQuorum,
    /// The local replica is damaged (the message names the file): it must be rebuilt
    /// from the cluster or restored, never used.
    #[error("{0}")]
    Damaged(String),
}

impl ClusterError {
    /// Returns whether the same request, made again here shortly, may succeed: the
    /// cluster is between leaders or slow. A node cut off from the quorum fails fast
    /// instead. (The variants are a wire format, `docs/formats.md`: new ones go at the end.)
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ClusterError::NoLeader
                | ClusterError::NotLeader { .. }
                | ClusterError::Unreachable(_)
                | ClusterError::Timeout(_)
        )
    }

    /// Returns whether the cluster may take the same request later: it is retryable, or
    /// this node is cut off from the quorum (which it finds again when an election ends
    /// or a partition heals). A client goes to another node instead; background work,
    /// which has no client, waits for it.
    pub fn is_unavailable(&self) -> bool {
        self.is_retryable() || matches!(self, ClusterError::NoQuorum)
    }
}

/// Returns the error of a request that reached a node that does not lead: where the
/// leader is, if it knows.
pub(crate) fn not_leader(forward: ForwardToLeader<NodeId, Node>) -> ClusterError {
    match (forward.leader_id, forward.leader_node) {
        (Some(leader_id), Some(node)) => {
            ClusterError::NotLeader { leader_id, leader_addr: node.addr }
        }
        _ => ClusterError::NoLeader,
    }
}

/// The result type of this crate.
pub type Result<T> = std::result::Result<T, ClusterError>;

impl From<shoal_storage::StorageError> for ClusterError {
    fn from(error: shoal_storage::StorageError) -> Self {
        if error.is_damaged() {
            ClusterError::Damaged(error.to_string())
        } else {
            ClusterError::Storage(error.to_string())
        }
    }
}

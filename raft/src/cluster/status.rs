//! A node's view of the cluster, for health, metrics and `shoal status`.

use std::collections::{BTreeMap, BTreeSet};

use openraft::ServerState;

use super::Cluster;
use crate::types::NodeId;

/// A node's view of the cluster, for health, metrics and `shoal status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterStatus {
    /// This node's id.
    pub node_id: NodeId,
    /// This node's role: leader, follower, candidate or learner.
    pub role: &'static str,
    /// The leader this node knows of.
    pub leader_id: Option<NodeId>,
    /// The current Raft term.
    pub term: u64,
    /// Voting members.
    pub voters: Vec<NodeId>,
    /// Non-voting members.
    pub learners: Vec<NodeId>,
    /// Every member with its advertised address.
    pub members: Vec<(NodeId, String)>,
    /// The index of the last log entry.
    pub last_log_index: Option<u64>,
    /// The index of the last entry known committed.
    pub committed_index: Option<u64>,
    /// The index of the last applied entry.
    pub last_applied_index: Option<u64>,
    /// The last entry covered by the current snapshot.
    pub snapshot_index: Option<u64>,
    /// The last purged entry.
    pub purged_index: Option<u64>,
    /// Why this node's Raft core stopped, if it did (it then serves nothing until a
    /// restart).
    pub stopped: Option<String>,
}

impl Cluster {
    /// Returns this node's view of the cluster.
    pub fn status(&self) -> ClusterStatus {
        let metrics = self.inner.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let learners = membership.learner_ids().collect();
        let members = membership.nodes().map(|(id, node)| (*id, node.addr.clone())).collect();
        let role = match metrics.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        ClusterStatus {
            node_id: self.node_id(),
            role,
            leader_id: metrics.current_leader,
            term: metrics.current_term,
            voters: voters.into_iter().collect(),
            learners,
            members,
            last_log_index: metrics.last_log_index,
            committed_index: self.inner.log_store.committed_index(),
            last_applied_index: metrics.last_applied.map(|log_id| log_id.index),
            snapshot_index: metrics.snapshot.map(|log_id| log_id.index),
            purged_index: metrics.purged.map(|log_id| log_id.index),
            stopped: metrics.running_state.as_ref().err().map(ToString::to_string),
        }
    }

    /// Returns, on the leader, the last log index each member has replicated.
    pub fn replication(&self) -> BTreeMap<NodeId, Option<u64>> {
        let metrics = self.inner.raft.metrics().borrow().clone();
        metrics
            .replication
            .unwrap_or_default()
            .into_iter()
            .map(|(node_id, matched)| (node_id, matched.map(|log_id| log_id.index)))
            .collect()
    }

    /// Returns whether this node leads the cluster right now (by its own metrics).
    pub fn is_leader(&self) -> bool {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        metrics.current_leader == Some(self.node_id()) && metrics.state == ServerState::Leader
    }
}

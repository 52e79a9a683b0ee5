//! Membership changes: who votes, who learns, who leaves, and where each is reached.
//! The leader applies them one at a time; a follower forwards them to it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::ChangeMembers;

use super::{call_error, Cluster};
use crate::error::not_leader;
use crate::network::{CallError, MEMBERSHIP_PATH};
use crate::types::{Node, NodeId};
use crate::{ClusterError, Result};

/// A change of who is in the cluster.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MembershipChange {
    /// Adds a node as a learner: it receives the log but does not vote.
    AddLearner { node_id: NodeId, addr: String },
    /// Makes learners voters.
    Promote { node_ids: BTreeSet<NodeId> },
    /// Removes a voter or learner.
    Remove { node_id: NodeId },
    /// Makes learner `new` a voter in place of voter `old`, in one change (a member
    /// whose replica was dropped and rebuilt rejoins under a new id).
    Replace { old: NodeId, new: NodeId },
    /// Removes a member that is stopping for good, unless it is a voter and fewer than
    /// `keep_voters` voters would remain: the leader decides, one leave at a time, so
    /// that members stopping together never shrink the cluster below its floor.
    Leave { node_id: NodeId, keep_voters: usize },
    /// Records the address a member is reached at now (it came back elsewhere: a new
    /// container or pod IP). Requests are bound to the node id they are for, so a wrong
    /// address reaches no other member.
    SetAddress { node_id: NodeId, addr: String },
}

impl Cluster {
    /// Changes the membership (on the leader; forwarded there from a follower) and waits
    /// until the change is committed.
    pub async fn change_membership(&self, change: MembershipChange) -> Result<()> {
        match self.change_membership_local(change.clone()).await {
            Err(ClusterError::NotLeader { leader_id, leader_addr }) => {
                let timeout = self.inner.options.request_timeout;
                let forwarded: std::result::Result<Result<()>, CallError> = self
                    .inner
                    .options
                    .client
                    .call(&leader_addr, leader_id, MEMBERSHIP_PATH, &change, timeout)
                    .await;
                forwarded.map_err(call_error)?
            }
            outcome => outcome,
        }
    }

    /// Changes the membership if this node leads; never forwards.
    pub async fn change_membership_local(&self, change: MembershipChange) -> Result<()> {
        // openraft 0.9 keeps a leader that lost its quorum waiting on a change forever.
        let timeout = self.inner.options.request_timeout;
        let changed = async {
            loop {
                match self.apply_membership_change(change.clone()).await {
                    // The second step of the previous change (a joint configuration) is
                    // still committing: this one follows it.
                    Err(None) => tokio::time::sleep(Duration::from_millis(50)).await,
                    Err(Some(error)) => return Err(error),
                    Ok(()) => return Ok(()),
                }
            }
        };
        tokio::time::timeout(timeout, changed).await.map_err(|_| ClusterError::Timeout(timeout))?
    }

    /// Applies `change`; `Err(None)` when another change is still in progress.
    async fn apply_membership_change(
        &self,
        change: MembershipChange,
    ) -> std::result::Result<(), Option<ClusterError>> {
        let raft = &self.inner.raft;
        // One leave at a time, checked and committed under the lock: each sees the
        // voters the one before it left.
        let _leaving = match &change {
            MembershipChange::Leave { node_id, keep_voters } => {
                let guard = self.inner.leaving.lock().await;
                let status = self.status();
                if !status.members.iter().any(|(member, _)| member == node_id) {
                    return Ok(());
                }
                let remaining = status.voters.iter().filter(|voter| *voter != node_id).count();
                if status.voters.contains(node_id) && remaining < *keep_voters {
                    return Err(Some(ClusterError::Membership(format!(
                        "node {node_id} stays a member: {remaining} voters would remain, fewer \
                         than the {keep_voters} the cluster keeps (--bootstrap-expect)"
                    ))));
                }
                Some(guard)
            }
            _ => None,
        };
        let outcome = match change {
            MembershipChange::SetAddress { node_id, addr } => {
                let mut nodes: BTreeMap<NodeId, Node> = BTreeMap::new();
                nodes.insert(node_id, Node { addr });
                raft.change_membership(ChangeMembers::SetNodes(nodes), true).await
            }
            MembershipChange::AddLearner { node_id, addr } => {
                raft.add_learner(node_id, Node { addr }, false).await
            }
            MembershipChange::Promote { node_ids } => {
                raft.change_membership(ChangeMembers::AddVoterIds(node_ids), true).await
            }
            MembershipChange::Replace { old, new } => {
                let mut voters: BTreeSet<NodeId> = self.status().voters.into_iter().collect();
                if !voters.remove(&old) {
                    let reason = format!("node {old} is not a voter");
                    return Err(Some(ClusterError::Membership(reason)));
                }
                voters.insert(new);
                // `retain = false`: the replaced member leaves the node list too.
                raft.change_membership(ChangeMembers::ReplaceAllVoters(voters), false).await
            }
            MembershipChange::Remove { node_id } | MembershipChange::Leave { node_id, .. } => {
                let ids = BTreeSet::from([node_id]);
                // One change either way: `retain = false` drops a removed voter from the
                // node list too. A second change right after the leader removed itself
                // would reach openraft 0.9 while it leads from outside the membership,
                // which it does not handle (openraft issue #923).
                if self.status().voters.contains(&node_id) {
                    raft.change_membership(ChangeMembers::RemoveVoters(ids), false).await
                } else {
                    raft.change_membership(ChangeMembers::RemoveNodes(ids), false).await
                }
            }
        };
        match outcome {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                openraft::error::ChangeMembershipError::InProgress(_),
            ))) => Err(None),
            Err(error) => Err(Some(membership_error(error))),
        }
    }
}

fn membership_error(error: RaftError<NodeId, ClientWriteError<NodeId, Node>>) -> ClusterError {
    match error {
        RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => not_leader(forward),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(error)) => {
            ClusterError::Membership(error.to_string())
        }
        RaftError::Fatal(fatal) => ClusterError::Raft(fatal.to_string()),
    }
}

//! Leaving the cluster for good on SIGTERM (`--leave-on-shutdown`): what a scale-in
//! (`docker compose up --scale shoal=3` after 5, a StatefulSet scaled down) needs, so that
//! the cluster does not keep voters that will never come back.
//!
//! A stop cannot tell a scale-in from a restart: both are SIGTERM. The floor decides: a
//! voter leaves only while at least `--bootstrap-expect` voters remain without it, and the
//! leader checks that, one leave at a time (`MembershipChange::Leave`), so nodes stopping
//! together (`docker compose down`) never shrink the cluster below it. A node at the floor
//! keeps its membership and its replica, as on any restart.
//!
//! A leader that leaves commits a configuration without itself; openraft 0.9 keeps it
//! leading until that entry commits, then it steps down and the remaining voters elect
//! one of themselves (openraft 0.9 has no leadership transfer). Writes in that gap get
//! the retryable 503 of any election.

use std::time::Duration;

use shoal_raft::{Cluster, ClusterError, MembershipChange};

use crate::gossip::Gossip;

/// What a node needs to leave its cluster.
#[derive(Debug, Clone)]
pub struct Leave {
    pub cluster: Cluster,
    pub gossip: std::sync::Arc<Gossip>,
    /// The fewest voters the cluster keeps (`--bootstrap-expect`).
    pub keep_voters: usize,
}

/// How long a leave may take; a node that cannot leave by then stops as a member.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(20);
const RETRY: Duration = Duration::from_millis(200);

impl Leave {
    /// Leaves the cluster if it may; returns whether this node is no longer a member (its
    /// replica can then be forgotten).
    pub async fn run(&self) -> bool {
        let node_id = self.cluster.node_id();
        let status = self.cluster.status();
        if !status.members.iter().any(|(member, _)| *member == node_id) {
            return false;
        }
        if status.voters.contains(&node_id) {
            let remaining: Vec<_> =
                status.voters.iter().copied().filter(|voter| *voter != node_id).collect();
            if remaining.len() < self.keep_voters {
                tracing::info!(
                    voters = status.voters.len(),
                    keep = self.keep_voters,
                    "stopping as a member: the cluster keeps at least --bootstrap-expect voters"
                );
                return false;
            }
            // The removal commits through a joint configuration that needs a live majority
            // of the voters that remain as well.
            let members = self.gossip.members().await;
            let alive = remaining
                .iter()
                .filter(|voter| members.iter().any(|m| m.node_id == **voter && m.alive))
                .count();
            if alive * 2 <= remaining.len() {
                tracing::warn!(
                    alive,
                    remaining = remaining.len(),
                    "stopping as a member: without this node the live voters are no majority"
                );
                return false;
            }
        }
        let leads = self.cluster.is_leader();
        tracing::info!(node_id, leads, "leaving the cluster (--leave-on-shutdown)");
        let change = MembershipChange::Leave { node_id, keep_voters: self.keep_voters };
        let deadline = tokio::time::Instant::now() + LEAVE_TIMEOUT;
        loop {
            match self.cluster.change_membership(change.clone()).await {
                Ok(()) => {
                    tracing::info!(node_id, "left the cluster; this replica is forgotten on exit");
                    return true;
                }
                Err(ClusterError::Membership(reason)) => {
                    tracing::info!("{reason}");
                    return false;
                }
                // No leader right now (another member left just before, an election runs):
                // ask again.
                Err(error) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(%error, "leaving the cluster: retrying");
                    tokio::time::sleep(RETRY).await;
                }
                Err(error) => {
                    tracing::warn!(%error, "leaving the cluster failed; stopping as a member");
                    return false;
                }
            }
        }
    }
}

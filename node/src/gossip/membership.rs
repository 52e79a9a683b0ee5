//! The membership loop: publishes this node's state in gossip, bootstraps a new cluster
//! from the peer list (DESIGN §8), and on the leader runs the autopilot.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_raft::{Cluster, ClusterStatus, MembershipChange, Node as RaftNode, NodeId};
use tokio::sync::watch;

use super::{
    Gossip, Member, KEY_LOAD, KEY_RAFT, KEY_READY, KEY_REPLACES, RAFT_REMOVED, RAFT_UNINITIALIZED,
};

/// How a node takes part in forming and keeping the cluster.
#[derive(Debug, Clone)]
pub struct MembershipSettings {
    /// How many uninitialized nodes form a new cluster (0: never bootstrap; join only).
    pub bootstrap_expect: usize,
    /// Voters the autopilot keeps at most (kept odd).
    pub max_voters: usize,
    /// A voter dead in gossip this long is removed, when quorum stays safe.
    pub dead_node_timeout: Duration,
    pub interval: Duration,
    /// A learner this close to the leader's last log index counts as caught up.
    pub caught_up_lag: u64,
    /// The member this node rejoins in place of, after `shoal reset-replica`, and the
    /// data dir that records it (forgotten once the cluster no longer has that member).
    pub replaces: Option<(NodeId, std::path::PathBuf)>,
}

/// Returns what a node gossips as its `raft` key.
pub fn raft_state(status: &ClusterStatus) -> &'static str {
    if status.voters.contains(&status.node_id) {
        "voter"
    } else if status.learners.contains(&status.node_id) {
        "learner"
    } else if status.members.is_empty() {
        RAFT_UNINITIALIZED
    } else {
        // Removed from (or left) its cluster: never bootstrapped or re-added by itself.
        RAFT_REMOVED
    }
}

/// Runs the membership loop until `shutdown` turns true; `load` says how busy this node
/// is (searches running and queued), which it gossips.
pub async fn run(
    cluster: Cluster,
    gossip: Arc<Gossip>,
    load: impl Fn() -> u64 + Send + 'static,
    settings: MembershipSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(settings.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut autopilot = Autopilot::default();
    let mut bootstrap = Bootstrap::default();
    let mut replaces = settings.replaces.clone();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let status = cluster.status();
        gossip.set(KEY_RAFT, raft_state(&status)).await;
        gossip.set(KEY_READY, status.leader_id.is_some()).await;
        gossip.set(KEY_LOAD, load()).await;

        if let Some((old, data_dir)) = &replaces {
            let in_place = status.voters.contains(&status.node_id)
                && !status.members.iter().any(|(node_id, _)| node_id == old);
            if in_place {
                tracing::info!(
                    old_node_id = old,
                    "this node has taken the place of the member it replaces"
                );
                match crate::data_dir::replaced(data_dir) {
                    Ok(()) => {
                        gossip.set(KEY_REPLACES, "").await;
                        replaces = None;
                    }
                    Err(error) => tracing::warn!(%error, "cannot forget the replaced member"),
                }
            }
        }

        let members = gossip.members().await;
        // Calls go where each node is now, even before the membership records it.
        cluster.client().learn_addresses(
            members
                .iter()
                .filter(|member| member.alive)
                .filter_map(|member| Some((member.node_id, member.api_addr.clone()?))),
        );
        if status.members.is_empty() {
            bootstrap.run(&cluster, &members, settings.bootstrap_expect).await;
        } else if cluster.is_leader() && status.voters.contains(&status.node_id) {
            // A leader that removed itself leads on for a moment outside the membership;
            // it must not change the membership any more.
            autopilot.run(&cluster, &members, &settings).await;
        } else {
            // Timers of a past leadership would remove members at once if it leads again.
            autopilot = Autopilot::default();
        }
    }
}

/// How many consecutive ticks the same set of nodes must be seen before it bootstraps.
const STABLE_TICKS: u32 = 3;
/// How long a node may take to prove who it is.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the autopilot repeats its warning about the same unproven newcomer.
const UNPROVEN_WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// Decides, on a node without a cluster, when to initialize one (DESIGN §8): at least
/// `expect` uninitialized live nodes, none initialized or undecided, the same set for
/// several ticks; then the lowest id initializes Raft with the `expect` lowest ids, the
/// others wait for it (and are added by its autopilot). A node that sees an initialized
/// cluster waits for its leader to add it.
#[derive(Debug, Default)]
struct Bootstrap {
    last_view: Vec<NodeId>,
    stable_ticks: u32,
}

impl Bootstrap {
    async fn run(&mut self, cluster: &Cluster, members: &[Member], expect: usize) {
        let alive: Vec<&Member> = members.iter().filter(|member| member.alive).collect();
        let waiting = |member: &&Member| {
            member.raft.as_deref() == Some(RAFT_UNINITIALIZED) && member.api_addr.is_some()
        };
        // Any live node that is in a cluster, or whose state is not known yet, blocks:
        // forming a second cluster next to it would split the brain.
        let view: Vec<NodeId> = if expect > 0 && alive.iter().all(waiting) {
            alive.iter().map(|member| member.node_id).collect()
        } else {
            Vec::new()
        };
        if view.is_empty() || view != self.last_view {
            self.last_view = view;
            self.stable_ticks = 0;
            return;
        }
        self.stable_ticks += 1;
        if self.stable_ticks < STABLE_TICKS || view.len() < expect {
            return;
        }
        // More nodes than expected is what a peer name resolving to every replica gives
        // (`docker compose up --scale shoal=5` on a new cluster): the `expect` lowest ids
        // form it, and the autopilot adds the others. Only the lowest id of a view that
        // held still for several rounds acts (as with exactly `expect`).
        if view[0] != cluster.node_id() {
            return;
        }
        let founders: BTreeSet<NodeId> = view.iter().copied().take(expect).collect();
        let voters: BTreeMap<NodeId, RaftNode> = alive
            .iter()
            .filter(|member| founders.contains(&member.node_id))
            .map(|member| {
                (member.node_id, RaftNode { addr: member.api_addr.clone().expect("waiting") })
            })
            .collect();
        // Gossip is sealed under the secret already; each founder also proves, at the
        // address it will be reached at, that it is the node it says it is.
        for (node_id, node) in voters.iter().filter(|(node_id, _)| **node_id != cluster.node_id()) {
            if let Err(error) = cluster.client().identify(&node.addr, *node_id, PROBE_TIMEOUT).await
            {
                tracing::warn!(node_id, addr = %node.addr, %error, "not bootstrapping: a peer did not prove who it is");
                self.stable_ticks = 0;
                return;
            }
        }
        match cluster.initialize(voters).await {
            Ok(()) => {
                tracing::info!(ids = ?founders, "bootstrapped a new cluster from the peer list")
            }
            Err(error) => tracing::warn!(%error, "bootstrapping the cluster failed; retrying"),
        }
    }
}

/// The leader's membership decisions.
#[derive(Debug, Default)]
struct Autopilot {
    /// When each member was first seen dead, for `--dead-node-timeout`.
    dead_since: HashMap<NodeId, Instant>,
    /// When the autopilot last warned of a newcomer that did not prove who it is.
    unproven: HashMap<NodeId, Instant>,
}

impl Autopilot {
    async fn run(&mut self, cluster: &Cluster, members: &[Member], settings: &MembershipSettings) {
        let status = cluster.status();
        let in_cluster: BTreeSet<NodeId> =
            status.members.iter().map(|(node_id, _)| *node_id).collect();
        let alive: BTreeSet<NodeId> =
            members.iter().filter(|member| member.alive).map(|member| member.node_id).collect();

        // Newcomers: alive, not in a cluster, and not already here.
        for member in
            members.iter().filter(|member| member.alive && member.node_id != status.node_id)
        {
            let fresh = member.raft.as_deref() == Some(RAFT_UNINITIALIZED);
            if let (true, false, Some(addr)) =
                (fresh, in_cluster.contains(&member.node_id), &member.api_addr)
            {
                // Only a node that proves, at that address, that it holds the secret and
                // is that node joins: the membership rests on nothing else.
                let identified = cluster.client().identify(addr, member.node_id, PROBE_TIMEOUT);
                if let Err(error) = identified.await {
                    let warned = self.unproven.get(&member.node_id);
                    if warned.is_none_or(|at| at.elapsed() >= UNPROVEN_WARNING_INTERVAL) {
                        tracing::warn!(node_id = member.node_id, %addr, %error, "a newcomer did not prove who it is at its address; not adding it");
                        self.unproven.insert(member.node_id, Instant::now());
                    }
                    continue;
                }
                let change =
                    MembershipChange::AddLearner { node_id: member.node_id, addr: addr.clone() };
                match cluster.change_membership_local(change).await {
                    Ok(()) => {
                        tracing::info!(node_id = member.node_id, %addr, "autopilot added a learner")
                    }
                    Err(error) => tracing::debug!(%error, "adding a learner failed; retrying"),
                }
                return;
            }
        }

        // A member that came back at another address (a new container or pod IP) is
        // recorded there, once it proves who it is at it.
        for member in members.iter().filter(|member| member.alive) {
            let recorded = status.members.iter().find(|(node_id, _)| *node_id == member.node_id);
            let (Some((_, recorded)), Some(addr)) = (recorded, &member.api_addr) else {
                continue;
            };
            if recorded == addr
                || cluster.client().identify(addr, member.node_id, PROBE_TIMEOUT).await.is_err()
            {
                continue;
            }
            let change =
                MembershipChange::SetAddress { node_id: member.node_id, addr: addr.clone() };
            match cluster.change_membership_local(change).await {
                Ok(()) => tracing::info!(
                    node_id = member.node_id,
                    from = %recorded,
                    to = %addr,
                    "autopilot recorded a member's new address"
                ),
                Err(error) => tracing::debug!(%error, "recording an address failed; retrying"),
            }
            return;
        }

        let last_index = status.last_log_index.unwrap_or(0);
        let replication = cluster.replication();
        let is_caught_up = |node_id: &NodeId| {
            // No replication data yet: not known to be caught up.
            let matched = replication.get(node_id).copied().flatten();
            matched.is_some_and(|matched| matched + settings.caught_up_lag >= last_index)
        };

        // A rebuilt replica takes the place of the member it was, once it has caught up
        // and that member is gone from gossip: one change, so the voter count holds.
        for member in members.iter().filter(|member| status.learners.contains(&member.node_id)) {
            let Some(old) = member.replaces.filter(|old| in_cluster.contains(old)) else {
                continue;
            };
            if alive.contains(&old)
                || !alive.contains(&member.node_id)
                || !is_caught_up(&member.node_id)
            {
                continue;
            }
            let change = if status.voters.contains(&old) {
                MembershipChange::Replace { old, new: member.node_id }
            } else {
                MembershipChange::Remove { node_id: old }
            };
            match cluster.change_membership_local(change).await {
                Ok(()) => tracing::info!(
                    old,
                    new = member.node_id,
                    "autopilot put a rebuilt replica in place of the member it was"
                ),
                Err(error) => tracing::debug!(%error, "replacing a member failed; retrying"),
            }
            return;
        }

        // Promotion: caught-up live learners, keeping the voter count odd.
        let caught_up: Vec<NodeId> = status
            .learners
            .iter()
            .copied()
            .filter(|node_id| alive.contains(node_id))
            .filter(is_caught_up)
            .collect();
        let voters = status.voters.len();
        let wanted = if voters % 2 == 1 { 2 } else { 1 };
        if voters + wanted <= settings.max_voters && caught_up.len() >= wanted {
            let node_ids: BTreeSet<NodeId> = caught_up.into_iter().take(wanted).collect();
            match cluster
                .change_membership_local(MembershipChange::Promote { node_ids: node_ids.clone() })
                .await
            {
                Ok(()) => tracing::info!(?node_ids, "autopilot promoted learners to voters"),
                Err(error) => tracing::debug!(%error, "promotion failed; retrying"),
            }
            return;
        }

        // Removal: a member dead longer than the timeout, if the rest keep a live quorum.
        let now = Instant::now();
        self.dead_since
            .retain(|node_id, _| !alive.contains(node_id) && in_cluster.contains(node_id));
        for node_id in in_cluster.iter().filter(|node_id| !alive.contains(node_id)) {
            self.dead_since.entry(*node_id).or_insert(now);
        }
        let expired: Vec<NodeId> = self
            .dead_since
            .iter()
            .filter(|(_, since)| now.duration_since(**since) >= settings.dead_node_timeout)
            .map(|(node_id, _)| *node_id)
            .collect();
        for node_id in expired {
            let remaining: Vec<NodeId> =
                status.voters.iter().copied().filter(|voter| *voter != node_id).collect();
            let alive_remaining = remaining.iter().filter(|voter| alive.contains(voter)).count();
            let alive_now = status.voters.iter().filter(|voter| alive.contains(voter)).count();
            // The change commits through a joint config: it needs a live majority of the
            // current voters as well as of the remaining ones.
            let safe = !remaining.is_empty()
                && alive_remaining * 2 > remaining.len()
                && alive_now * 2 > status.voters.len();
            if !safe {
                tracing::warn!(
                    node_id,
                    "a dead member stays: removing it would leave no live quorum"
                );
                continue;
            }
            match cluster.change_membership_local(MembershipChange::Remove { node_id }).await {
                Ok(()) => {
                    tracing::warn!(
                        node_id,
                        "autopilot removed a member dead longer than --dead-node-timeout"
                    );
                    self.dead_since.remove(&node_id);
                }
                Err(error) => tracing::debug!(%error, "removing a dead member failed; retrying"),
            }
            return;
        }
    }
}

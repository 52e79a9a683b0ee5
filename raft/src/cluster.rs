//! [`Cluster`]: the handle the API uses to write through Raft and to read linearizably.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, VoteRequest, VoteResponse};
use openraft::{ChangeMembers, ServerState, SnapshotPolicy};
use shoal_storage::{Engine, LogStore};
use tokio::sync::{oneshot, watch};

use crate::error::not_leader;
use crate::lease::{LeaderView, Leases};
use crate::network::{
    CallError, InternalClient, Network, FORWARD_PATH, MEMBERSHIP_PATH, READ_INDEX_PATH,
};
use crate::state_machine::{StateMachineStore, StateReader};
use crate::types::{Command, Node, NodeId, Raft, Response, TypeConfig};
use crate::{batch, contact, once, ClusterError, Result};

/// How many times a write follows the leader to another node before it gives up.
const MAX_LEADER_HOPS: usize = 3;

/// The log growth that asks for a snapshot (see [`Cluster::snapshot_if_log_grew`]).
pub const SNAPSHOT_LOG_BYTES: u64 = 4 * 1024 * 1024;

/// How a node takes part in Raft. Timings are settings so tests can run a cluster fast.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// This node's Raft id.
    pub node_id: NodeId,
    /// The `host:port` other nodes reach this node's HTTP API at.
    pub advertise_addr: String,
    /// How often the leader sends heartbeats.
    pub heartbeat_interval: Duration,
    /// The election timeout is drawn from `[min, max)`.
    pub election_timeout: (Duration, Duration),
    /// A snapshot is built after this many entries since the last one.
    pub snapshot_after_logs: u64,
    /// How many entries below the snapshot the log keeps for slow followers.
    pub logs_kept_after_snapshot: u64,
    /// How long a write or a read barrier may take before the API answers 503.
    pub request_timeout: Duration,
    /// How long a quorum's acknowledgement lets the leader answer reads without a new
    /// quorum round (at most half the shortest election timeout); `None`: a round for
    /// every read (shared by concurrent ones). See `lease.rs`.
    pub read_lease: Option<Duration>,
    /// Signed calls to other nodes (Raft RPCs, forwarded writes, read indexes).
    pub client: InternalClient,
}

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

/// The Raft node of this process and the state it replicates.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    raft: Raft,
    options: ClusterOptions,
    reader: StateReader,
    log_store: LogStore<TypeConfig>,
    leases: Arc<Leases>,
    /// Linearizable reads of this node waiting for a read barrier.
    read_rounds: Rounds<Result<()>>,
    /// Callers of the leader's quorum confirmation (its own read barriers and followers'
    /// read-index requests alike).
    index_rounds: Rounds<Result<Option<u64>>>,
    /// The group-commit queue of session and progress writes.
    batches: tokio::sync::mpsc::UnboundedSender<batch::Pending>,
    /// Session and progress writes a follower hands to the leader, in batches.
    forwards: tokio::sync::mpsc::UnboundedSender<batch::Forward>,
    /// The log's appended bytes and snapshot index when a snapshot was last asked for or
    /// seen.
    snapshot_mark: std::sync::Mutex<(u64, Option<u64>)>,
    /// How long a keyed write's copies may reach the leader (`once.rs`).
    once_window: Duration,
    /// When this node last heard from the leader it follows.
    contact: Arc<contact::Contact>,
    /// Whether this node is in contact with the cluster (`contact.rs`).
    in_contact: watch::Receiver<bool>,
    /// Held while a leave is checked against its floor and committed.
    leaving: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.inner.options.node_id)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Starts the Raft node on `engine`, recovering whatever state the engine holds.
    /// The Raft log lives in `log_dir`, beside the engine (a log an older build kept in
    /// the engine is moved there first).
    pub async fn start(
        engine: Arc<dyn Engine>,
        log_dir: &Path,
        options: ClusterOptions,
    ) -> Result<Self> {
        let (election_min, election_max) = options.election_timeout;
        let config = openraft::Config {
            cluster_name: "shoal".to_string(),
            heartbeat_interval: millis(options.heartbeat_interval),
            election_timeout_min: millis(election_min),
            election_timeout_max: millis(election_max),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(options.snapshot_after_logs),
            max_in_snapshot_log_to_keep: options.logs_kept_after_snapshot,
            ..Default::default()
        }
        .validate()
        .map_err(|error| ClusterError::Raft(format!("invalid raft settings: {error}")))?;

        let state_machine = StateMachineStore::open(engine.clone())
            .await
            .map_err(|error| ClusterError::Raft(error.to_string()))?;
        let log_store = {
            let (log_dir, engine) = (log_dir.to_path_buf(), engine.clone());
            tokio::task::spawn_blocking(move || {
                LogStore::<TypeConfig>::open(&log_dir, Some(&*engine))
            })
            .await
            .map_err(|error| ClusterError::Raft(error.to_string()))??
        }
        .with_purge_guard(state_machine.durable_index());
        let reader = state_machine.reader();
        let leases = Arc::new(Leases::new(options.read_lease, election_max));
        let network = Network::new(options.client.clone(), leases.clone());
        let raft =
            Raft::new(options.node_id, Arc::new(config), network, log_store.clone(), state_machine)
                .await
                .map_err(|error| ClusterError::Raft(error.to_string()))?;
        let (batches, queue) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(batch::run(raft.clone(), options.request_timeout, queue));
        let (forwards, queue) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(batch::run_forwards(options.client.clone(), options.request_timeout, queue));
        let (read_rounds, index_rounds) = (Rounds::default(), Rounds::default());
        let contact = Arc::new(contact::Contact::default());
        let in_contact = contact::spawn_monitor(
            raft.clone(),
            contact.clone(),
            election_max,
            options.heartbeat_interval,
        );
        let once_window = once::window(options.request_timeout);
        let inner = Inner {
            raft,
            options,
            reader,
            log_store,
            leases,
            read_rounds,
            index_rounds,
            batches,
            forwards,
            snapshot_mark: std::sync::Mutex::new((0, None)),
            once_window,
            leaving: tokio::sync::Mutex::new(()),
            contact,
            in_contact,
        };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// Returns this node's id.
    pub fn node_id(&self) -> NodeId {
        self.inner.options.node_id
    }

    /// Returns the openraft handle, for the internal RPC endpoints.
    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    /// Returns the signed client for calls to other nodes.
    pub fn client(&self) -> &InternalClient {
        &self.inner.options.client
    }

    /// Returns the address of member `node_id`, as the membership records it.
    pub fn member_addr(&self, node_id: NodeId) -> Option<String> {
        self.status().members.into_iter().find(|(id, _)| *id == node_id).map(|(_, addr)| addr)
    }

    /// Returns read access to the applied state.
    pub fn reader(&self) -> &StateReader {
        &self.inner.reader
    }

    /// Returns whether this node has a Raft state (a vote or a log) already.
    pub async fn is_initialized(&self) -> Result<bool> {
        self.inner
            .raft
            .is_initialized()
            .await
            .map_err(|error| ClusterError::Raft(error.to_string()))
    }

    /// Initializes a new cluster whose voters are `members`. Call it on exactly one node.
    pub async fn initialize(&self, members: BTreeMap<NodeId, Node>) -> Result<()> {
        self.inner
            .raft
            .initialize(members)
            .await
            .map_err(|error| ClusterError::Raft(error.to_string()))
    }

    /// Proposes `command` and returns the state machine's answer once the entry is
    /// committed by a majority (fsynced on each) and applied on the leader. On a
    /// follower the command is forwarded to the leader, which stamps it with its clock;
    /// when leadership moves meanwhile, it follows the new leader. The command gets an
    /// idempotency key first (`once.rs`), so however often it is proposed it applies at
    /// most once.
    ///
    /// A node cut off from the cluster answers within about an election timeout
    /// ([`ClusterError::NoQuorum`]). On a timeout the outcome is unknown: the entry may
    /// still commit later (once).
    pub async fn write(&self, command: Command) -> Result<Response> {
        let command = once::keyed(command, self.inner.once_window);
        let timeout = self.inner.options.request_timeout;
        let written = tokio::time::timeout(timeout, self.write_following_leader(command));
        self.unless_cut_off(async { written.await.map_err(|_| ClusterError::Timeout(timeout))? })
            .await
    }

    async fn write_following_leader(&self, command: Command) -> Result<Response> {
        let mut outcome = self.write_local(command.clone()).await;
        for _ in 0..MAX_LEADER_HOPS {
            let Err(ClusterError::NotLeader { leader_id, leader_addr }) = outcome else {
                break;
            };
            outcome = self.forward(leader_id, leader_addr, command.clone()).await;
        }
        outcome
    }

    /// Hands `command` to the leader: batched with other forwards when it may share an
    /// entry, alone otherwise.
    async fn forward(
        &self,
        leader_id: NodeId,
        leader_addr: String,
        command: Command,
    ) -> Result<Response> {
        let timeout = self.inner.options.request_timeout;
        if batch::batch_key(&command).is_none() {
            let forwarded: std::result::Result<Result<Response>, CallError> = self
                .inner
                .options
                .client
                .call(&leader_addr, leader_id, FORWARD_PATH, &command, timeout)
                .await;
            return forwarded.map_err(call_error)?;
        }
        let (reply, answer) = oneshot::channel();
        let pending = batch::Pending { command, reply };
        self.inner
            .forwards
            .send(batch::Forward { addr: leader_addr, leader_id, pending })
            .map_err(|_| ClusterError::Raft("the forward queue stopped".into()))?;
        let answer = tokio::time::timeout(timeout, answer)
            .await
            .map_err(|_| ClusterError::Timeout(timeout))?
            .map_err(|_| ClusterError::Raft("the forward task stopped".into()))?;
        match answer? {
            Response::Rejected(rejection) => Err(ClusterError::Rejected(rejection)),
            response => Ok(response),
        }
    }

    /// Runs `work` unless this node is cut off from the cluster, and gives up on it when
    /// the node gets cut off meanwhile: load balancers then move on within about an
    /// election timeout instead of waiting for `request_timeout`.
    async fn unless_cut_off<T>(&self, work: impl Future<Output = Result<T>>) -> Result<T> {
        let mut in_contact = self.inner.in_contact.clone();
        if !*in_contact.borrow_and_update() {
            return Err(ClusterError::NoQuorum);
        }
        tokio::select! {
            outcome = work => outcome,
            _ = in_contact.wait_for(|in_contact| !*in_contact) => Err(ClusterError::NoQuorum),
        }
    }

    /// Proposes `command` if this node leads; never forwards. The forward endpoint calls
    /// this, so a request is forwarded at most once.
    ///
    /// Session and progress commands go through the group-commit queue (`batch.rs`) and
    /// share entries with other clients' commands; the rest are proposed alone.
    pub async fn write_local(&self, command: Command) -> Result<Response> {
        self.unless_cut_off(self.propose_local(command)).await
    }

    async fn propose_local(&self, command: Command) -> Result<Response> {
        let timeout = self.inner.options.request_timeout;
        let response = if batch::batch_key(&command).is_some() {
            let (reply, answer) = oneshot::channel();
            self.inner
                .batches
                .send(batch::Pending { command, reply })
                .map_err(|_| ClusterError::Raft("the batch queue stopped".into()))?;
            tokio::time::timeout(timeout, answer)
                .await
                .map_err(|_| ClusterError::Timeout(timeout))?
                .map_err(|_| ClusterError::Raft("the batch task stopped".into()))??
        } else {
            batch::propose(&self.inner.raft, command, timeout).await?
        };
        match response {
            Response::Rejected(rejection) => Err(ClusterError::Rejected(rejection)),
            response => Ok(response),
        }
    }

    /// Waits until this node has applied everything committed before the call, as
    /// confirmed by a quorum: reads made afterwards are linearizable.
    ///
    /// Concurrent callers share rounds: a caller joins the next round to start, never
    /// one already under way (whose read index may predate the caller's write).
    pub async fn read_barrier(&self) -> Result<()> {
        self.unless_cut_off(share_round(&self.inner, |inner| &inner.read_rounds, barrier_round))
            .await
    }

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

    /// Returns the index a linearizable read must wait for, as the leader sees it: the
    /// leader confirms its leadership by its lease or with a quorum first. Followers call
    /// this on the leader through `/internal/raft/read-index`.
    pub async fn read_index(&self) -> Result<Option<u64>> {
        self.unless_cut_off(read_index(&self.inner)).await
    }

    /// Answers the leader's append-entries, noting that the leader was heard from.
    pub async fn append_entries(
        &self,
        request: AppendEntriesRequest<TypeConfig>,
    ) -> std::result::Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>> {
        let answer = self.inner.raft.append_entries(request).await;
        if matches!(&answer, Ok(response) if !matches!(response, AppendEntriesResponse::HigherVote(_)))
        {
            // The sender's vote is at least ours: it is the leader this node follows.
            self.inner.contact.heard_from_leader();
        }
        answer
    }

    /// Answers a candidate's vote request. With leases on, a node that started less than
    /// the followers' lease ago refuses: it cannot know whether it acknowledged a leader
    /// whose lease still counts on it.
    pub async fn vote(
        &self,
        request: VoteRequest<NodeId>,
    ) -> std::result::Result<VoteResponse<NodeId>, RaftError<NodeId>> {
        if self.inner.leases.refuses_votes() {
            let vote = self.inner.raft.metrics().borrow().vote;
            tracing::debug!(candidate = %request.vote, "vote refused: this node started too recently");
            return Ok(VoteResponse::new(vote, None, false));
        }
        self.inner.raft.vote(request).await
    }

    /// Asks Raft for a snapshot once the log has grown by [`SNAPSHOT_LOG_BYTES`] since the
    /// last one. The entry-count policy alone lets the log of large batched entries grow
    /// far past the state it rebuilds; a snapshot only records its point (the applied
    /// state is the snapshot), so taking them often costs little.
    pub async fn snapshot_if_log_grew(&self) {
        let appended = self.inner.log_store.appended_bytes();
        let snapshot_index = self.inner.raft.metrics().borrow().snapshot.map(|id| id.index);
        let due = {
            let mut mark = self.inner.snapshot_mark.lock().expect("snapshot mark lock");
            if mark.1 != snapshot_index {
                // A snapshot was taken (by the entry-count policy, or as asked): count anew.
                *mark = (appended, snapshot_index);
            }
            let due = appended.saturating_sub(mark.0) >= SNAPSHOT_LOG_BYTES;
            if due {
                mark.0 = appended;
            }
            due
        };
        if due {
            tracing::debug!(
                appended,
                "log grew past the snapshot threshold; asking for a snapshot"
            );
            if let Err(error) = self.inner.raft.trigger().snapshot().await {
                tracing::warn!(%error, "could not ask raft for a snapshot");
            }
        }
    }

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

    /// Returns whether this node leads the cluster right now (by its own metrics).
    pub fn is_leader(&self) -> bool {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        metrics.current_leader == Some(self.node_id()) && metrics.state == ServerState::Leader
    }

    /// Waits up to `timeout` for this node to know a leader.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<NodeId> {
        let mut metrics = self.inner.raft.metrics();
        let wait = async {
            let metrics = metrics.wait_for(|metrics| metrics.current_leader.is_some()).await;
            metrics.map(|metrics| metrics.current_leader.expect("waited for a leader"))
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(leader_id)) => Ok(leader_id),
            Ok(Err(_)) => Err(ClusterError::Raft("raft stopped".to_string())),
            Err(_) => Err(ClusterError::NoLeader),
        }
    }

    /// Stops the Raft node.
    pub async fn shutdown(&self) {
        if let Err(error) = self.inner.raft.shutdown().await {
            tracing::warn!(%error, "raft did not shut down cleanly");
        }
    }
}

/// The callers of one kind of round (a quorum confirmation): concurrent callers share a
/// round, and a caller joins the next round to start, never one already under way (whose
/// result may predate the caller's write).
struct Rounds<T> {
    state: std::sync::Mutex<RoundsState<T>>,
}

struct RoundsState<T> {
    running: bool,
    waiting: Vec<oneshot::Sender<T>>,
}

impl<T> Default for Rounds<T> {
    fn default() -> Self {
        Self { state: std::sync::Mutex::new(RoundsState { running: false, waiting: Vec::new() }) }
    }
}

impl<T> Rounds<T> {
    /// Adds a caller to the next round; returns whether rounds must be started.
    fn join(&self, done: oneshot::Sender<T>) -> bool {
        let mut state = self.state.lock().expect("rounds lock");
        state.waiting.push(done);
        !std::mem::replace(&mut state.running, true)
    }

    /// Takes the callers of the next round, or stops the rounds when nobody waits.
    fn next(&self) -> Option<Vec<oneshot::Sender<T>>> {
        let mut state = self.state.lock().expect("rounds lock");
        if state.waiting.is_empty() {
            state.running = false;
            return None;
        }
        Some(std::mem::take(&mut state.waiting))
    }
}

/// Waits for the outcome of the next round of `rounds`, running rounds of `round` one
/// after another while callers wait.
async fn share_round<T, Fut>(
    inner: &Arc<Inner>,
    rounds: fn(&Inner) -> &Rounds<Result<T>>,
    round: fn(Arc<Inner>) -> Fut,
) -> Result<T>
where
    T: Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<T>> + Send + 'static,
{
    let (done, wait) = oneshot::channel();
    if rounds(inner).join(done) {
        let inner = inner.clone();
        tokio::spawn(async move {
            while let Some(waiters) = rounds(&inner).next() {
                let outcome = round(inner.clone()).await;
                for waiter in waiters {
                    let _ = waiter.send(outcome.clone());
                }
            }
        });
    }
    wait.await.unwrap_or_else(|_| Err(ClusterError::Raft("a read round task stopped".into())))
}

/// One read barrier, with one deadline for asking the leader and waiting to apply.
async fn barrier_round(inner: Arc<Inner>) -> Result<()> {
    let timeout = inner.options.request_timeout;
    tokio::time::timeout(timeout, linearize(&inner))
        .await
        .unwrap_or(Err(ClusterError::Timeout(timeout)))
}

/// The read index as this node sees it (the leader; others are told who leads), from a
/// quorum round shared with every concurrent caller.
async fn read_index(inner: &Arc<Inner>) -> Result<Option<u64>> {
    share_round(
        inner,
        |inner| &inner.index_rounds,
        |inner| async move { linearize_locally(&inner).await },
    )
    .await
}

/// Confirms leadership by the lease, else with a quorum, and waits until the read index
/// is applied here; returns the read index.
async fn linearize_locally(inner: &Inner) -> Result<Option<u64>> {
    let timeout = inner.options.request_timeout;
    if let Some(index) = lease_read_index(inner).await {
        inner
            .raft
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "lease read")
            .await
            .map_err(|_| ClusterError::Timeout(timeout))?;
        return Ok(Some(index));
    }
    match tokio::time::timeout(timeout, inner.raft.ensure_linearizable()).await {
        Err(_) => Err(ClusterError::Timeout(timeout)),
        Ok(Ok(read_log_id)) => Ok(read_log_id.map(|log_id| log_id.index)),
        Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward)))) => {
            Err(not_leader(forward))
        }
        Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)))) => {
            Err(ClusterError::NoLeader)
        }
        Ok(Err(RaftError::Fatal(fatal))) => Err(ClusterError::Raft(fatal.to_string())),
    }
}

/// Returns the committed index if this node leads and its lease holds now. The leader's
/// side is read inside openraft's core, so a leader that stepped down has no lease.
async fn lease_read_index(inner: &Inner) -> Option<u64> {
    if !inner.leases.enabled() {
        return None;
    }
    let me = inner.options.node_id;
    let view = inner
        .raft
        .with_raft_state(move |state| {
            let vote = *state.vote_ref();
            let leads = state.server_state == ServerState::Leader
                && vote.is_committed()
                && vote.leader_id().voted_for() == Some(me);
            leads.then(|| LeaderView {
                vote,
                voters: state.membership_state.effective().membership().get_joint_config().clone(),
                committed_in_term: state
                    .committed
                    .filter(|committed| committed.leader_id == *vote.leader_id())
                    .map(|committed| committed.index),
            })
        })
        .await
        .ok()??;
    inner.leases.holds(me, &view, std::time::Instant::now())
}

/// Makes reads on this node linearizable: on the leader by a quorum round, on a follower
/// by asking the leader for its read index and waiting until this node applied it.
async fn linearize(inner: &Arc<Inner>) -> Result<()> {
    let (leader_id, leader_addr) = match read_index(inner).await {
        Err(ClusterError::NotLeader { leader_id, leader_addr }) => (leader_id, leader_addr),
        outcome => return outcome.map(|_| ()),
    };
    let timeout = inner.options.request_timeout;
    let asked: std::result::Result<Result<Option<u64>>, CallError> =
        inner.options.client.call(&leader_addr, leader_id, READ_INDEX_PATH, &(), timeout).await;
    let Some(index) = asked.map_err(call_error)?? else { return Ok(()) };
    inner
        .raft
        .wait(Some(timeout))
        .applied_index_at_least(Some(index), "read index")
        .await
        .map(|_| ())
        .map_err(|_| ClusterError::Timeout(timeout))
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

fn call_error(error: CallError) -> ClusterError {
    ClusterError::Unreachable(error.to_string())
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

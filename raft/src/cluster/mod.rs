//! [`Cluster`]: the handle the API uses to write through Raft and to read linearizably.

mod membership;
mod reads;
mod status;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::RaftError;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, VoteRequest, VoteResponse};
use openraft::SnapshotPolicy;
use shoal_storage::{Engine, LogStore};
use tokio::sync::{oneshot, watch};

use crate::lease::Leases;
use crate::network::{CallError, InternalClient, Network, FORWARD_PATH};
use crate::state_machine::{StateMachineStore, StateReader};
use crate::types::{Command, Node, NodeId, Raft, Response, TypeConfig};
use crate::{batch, contact, once, ClusterError, Result};

pub use membership::MembershipChange;
use reads::Rounds;
pub use status::ClusterStatus;

/// How many times a write follows the leader to another node before it gives up.
const MAX_LEADER_HOPS: usize = 3;

/// The most entries in one append request.
const MAX_PAYLOAD_ENTRIES: u64 = 64;

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
            // Entries are at most about a MiB (a batch's bound, or one large value): an
            // append of this many stays within what a node takes in one request.
            max_payload_entries: MAX_PAYLOAD_ENTRIES,
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

    /// [`Cluster::write`], tried again with the same idempotency key while the cluster is
    /// between leaders (no leader known, the leader unreachable or changing) for up to
    /// `patience`: a client whose write meets a leader change gets its answer a moment
    /// later instead of an error, and the write still applies at most once. A node cut
    /// off from the quorum answers at once, so that clients move to another node.
    pub async fn write_patiently(&self, command: Command, patience: Duration) -> Result<Response> {
        let command = once::keyed(command, self.inner.once_window);
        patiently(patience, || self.write(command.clone())).await
    }

    /// [`Cluster::read_barrier`], tried again while the cluster is between leaders for up
    /// to `patience`, as [`Cluster::write_patiently`] does.
    pub async fn read_barrier_patiently(&self, patience: Duration) -> Result<()> {
        patiently(patience, || self.read_barrier()).await
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

/// Runs `attempt` until it succeeds, fails in a way waiting does not mend, or `patience`
/// runs out.
async fn patiently<T, Fut>(patience: Duration, mut attempt: impl FnMut() -> Fut) -> Result<T>
where
    Fut: Future<Output = Result<T>>,
{
    let started = tokio::time::Instant::now();
    let mut delay = Duration::from_millis(25);
    loop {
        match attempt().await {
            Err(error) if error.is_retryable() && started.elapsed() + delay < patience => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(400));
            }
            outcome => return outcome,
        }
    }
}

fn call_error(error: CallError) -> ClusterError {
    ClusterError::Unreachable(error.to_string())
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

//! Linearizable reads: the read barrier and the read index, each a round that
//! concurrent callers share (by the leader's lease, or a quorum's confirmation).

use std::sync::Arc;

use openraft::error::{CheckIsLeaderError, RaftError};
use openraft::ServerState;
use tokio::sync::oneshot;

use super::{call_error, Cluster, Inner};
use crate::error::not_leader;
use crate::lease::LeaderView;
use crate::network::{CallError, READ_INDEX_PATH};
use crate::{ClusterError, Result};

impl Cluster {
    /// Waits until this node has applied everything committed before the call, as
    /// confirmed by a quorum: reads made afterwards are linearizable.
    ///
    /// Concurrent callers share rounds: a caller joins the next round to start, never
    /// one already under way (whose read index may predate the caller's write).
    pub async fn read_barrier(&self) -> Result<()> {
        self.unless_cut_off(share_round(&self.inner, |inner| &inner.read_rounds, barrier_round))
            .await
    }

    /// Returns the index a linearizable read must wait for, as the leader sees it: the
    /// leader confirms its leadership by its lease or with a quorum first. Followers call
    /// this on the leader through `/internal/raft/read-index`.
    pub async fn read_index(&self) -> Result<Option<u64>> {
        self.unless_cut_off(read_index(&self.inner)).await
    }
}

/// The callers of one kind of round (a quorum confirmation): concurrent callers share a
/// round, and a caller joins the next round to start, never one already under way (whose
/// result may predate the caller's write).
pub(super) struct Rounds<T> {
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

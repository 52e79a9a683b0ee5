//! Whether this node is in contact with its cluster, so that a node cut off answers 503
//! within about an election timeout instead of letting requests wait for
//! `request_timeout` (load balancers then move on to a node that can serve).
//!
//! A leader is in contact while a quorum acknowledged it within the longest election
//! timeout (openraft's `millis_since_quorum_ack`, refreshed on every tick of its core);
//! a follower, learner or candidate while a leader's appends reached it within that time
//! (a candidate's election may end within moments; one that cannot win stays cut off).

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use openraft::ServerState;
use tokio::sync::watch;

use crate::types::Raft;

/// When the leader was last heard from (set by the append-entries endpoint).
#[derive(Debug)]
pub(crate) struct Contact {
    heard_at: Mutex<Instant>,
}

impl Default for Contact {
    /// Counts a start as contact: the leader's next heartbeat is due within moments.
    fn default() -> Self {
        Self { heard_at: Mutex::new(Instant::now()) }
    }
}

impl Contact {
    /// Notes that the leader this node follows reached it now.
    pub(crate) fn heard_from_leader(&self) {
        *self.heard_at.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
    }

    /// Notes that this node, leading, was last acknowledged by a quorum `at`.
    fn heard_at(&self, at: Instant) {
        *self.heard_at.lock().unwrap_or_else(PoisonError::into_inner) = at;
    }

    fn since_heard(&self) -> Duration {
        self.heard_at.lock().unwrap_or_else(PoisonError::into_inner).elapsed()
    }
}

/// Starts the task that decides, every `tick`, whether this node is in contact (see the
/// module docs), with `limit` the longest election timeout; returns its verdicts. The
/// task ends when every receiver is gone.
pub(crate) fn spawn_monitor(
    raft: Raft,
    contact: std::sync::Arc<Contact>,
    limit: Duration,
    tick: Duration,
) -> watch::Receiver<bool> {
    let (verdicts, in_contact) = watch::channel(true);
    tokio::spawn(async move {
        // Wakes on changes of state, leader or membership only, not on every append.
        let mut server = raft.server_metrics();
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut leading_since: Option<Instant> = None;
        while !verdicts.is_closed() {
            // A verdict is due on every tick (time passes) and as soon as the node's
            // state changes: a node just elected, or just following a new leader, must
            // not be refused by a verdict from before the election.
            tokio::select! {
                _ = ticker.tick() => {}
                changed = server.changed() => if changed.is_err() { break },
            }
            server.borrow_and_update();
            let (state, millis_since_quorum_ack) = {
                let metrics = raft.metrics();
                let metrics = metrics.borrow();
                (metrics.state, metrics.millis_since_quorum_ack)
            };
            let now = Instant::now();
            let verdict = match state {
                ServerState::Leader => {
                    let since = *leading_since.get_or_insert(now);
                    match millis_since_quorum_ack {
                        Some(millis) => {
                            let acknowledged = Duration::from_millis(millis);
                            // Kept for when it steps down: its last contact is its quorum's.
                            contact.heard_at(now.checked_sub(acknowledged).unwrap_or(now));
                            acknowledged <= limit
                        }
                        // Not acknowledged by a quorum yet: fine for a newly elected leader.
                        None => now.duration_since(since) <= limit,
                    }
                }
                // A candidate is in an election that may end within moments: it is cut
                // off, as a follower is, only once no leader has reached it for `limit`.
                ServerState::Follower | ServerState::Learner | ServerState::Candidate => {
                    leading_since = None;
                    contact.since_heard() <= limit
                }
                ServerState::Shutdown => {
                    leading_since = None;
                    false
                }
            };
            verdicts.send_if_modified(|current| std::mem::replace(current, verdict) != verdict);
        }
    });
    in_contact
}

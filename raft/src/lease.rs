//! Leader leases: linearizable reads on the leader without a quorum round per read.
//!
//! openraft 0.9 makes a follower that accepted an append-entries from the leader refuse
//! vote requests for `election_timeout_max` after it received it. So once a quorum of
//! voters has acknowledged requests the leader sent at time `t`, no other leader can be
//! elected before `t + election_timeout_max`, and the leader may answer reads from its
//! committed index until `t + lease`, with the lease well below that (half the shortest
//! election timeout: a quarter of the followers' refusal window, a margin for clocks
//! that run at different rates).
//!
//! A restarted node has forgotten when it last heard from the leader, which would let it
//! vote at once: with leases on, a node refuses votes for `election_timeout_max` after it
//! starts (see [`Leases::refuses_votes`]).
//!
//! The leader's own part (is it still the leader, in which term, what is committed) is
//! read inside openraft's core, so it is never stale; a leader that stepped down, even
//! by granting a vote, no longer has a lease.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use openraft::Vote;

use crate::types::NodeId;

/// What the leader's core says at the moment of a read (see [`Leases::holds`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderView {
    /// The leader's vote (term and node).
    pub vote: Vote<NodeId>,
    /// The voter sets of the effective membership (two while it changes).
    pub voters: Vec<BTreeSet<NodeId>>,
    /// The committed index, when the entry there is of the leader's own term (before
    /// that, the leader may not know everything committed yet).
    pub committed_in_term: Option<u64>,
}

/// The acknowledgements a leader's lease is made of, kept by the Raft network.
#[derive(Debug)]
pub struct Leases {
    /// How long an acknowledgement keeps the lease; `None` turns leases off.
    lease: Option<Duration>,
    /// How long a node refuses votes after its start, while leases are on.
    refuse_votes_for: Duration,
    started: Instant,
    /// Per follower: the vote it accepted and the send time of the latest request it
    /// acknowledged under that vote.
    acks: Mutex<HashMap<NodeId, (Vote<NodeId>, Instant)>>,
}

impl Leases {
    /// Returns leases of `lease` (none when `None`), for a cluster whose followers refuse
    /// votes for `election_timeout_max` after hearing from the leader.
    pub fn new(lease: Option<Duration>, election_timeout_max: Duration) -> Self {
        if let Some(lease) = lease {
            assert!(
                lease * 2 <= election_timeout_max,
                "a read lease of {lease:?} leaves no margin under the followers' {election_timeout_max:?}"
            );
        }
        Self {
            lease,
            refuse_votes_for: election_timeout_max,
            started: Instant::now(),
            acks: Mutex::default(),
        }
    }

    /// Records that `target` accepted `vote` in answer to a request sent at `sent_at`.
    pub fn acknowledged(&self, target: NodeId, vote: &Vote<NodeId>, sent_at: Instant) {
        if self.lease.is_none() {
            return;
        }
        let mut acks = self.acks.lock().unwrap_or_else(PoisonError::into_inner);
        match acks.get_mut(&target) {
            Some((acked, at)) if acked == vote => *at = (*at).max(sent_at),
            _ => {
                acks.insert(target, (*vote, sent_at));
            }
        }
    }

    /// Returns the index a read on the leader `me` may be answered at, if its lease holds
    /// at `now`: every voter set has a majority that acknowledged the leader's vote within
    /// the lease (the leader counts for itself).
    pub fn holds(&self, me: NodeId, view: &LeaderView, now: Instant) -> Option<u64> {
        let lease = self.lease?;
        let committed = view.committed_in_term?;
        let acks = self.acks.lock().unwrap_or_else(PoisonError::into_inner);
        let fresh = |node: &NodeId| {
            *node == me
                || acks.get(node).is_some_and(|(vote, sent_at)| {
                    *vote == view.vote && now.saturating_duration_since(*sent_at) < lease
                })
        };
        let quorum_in_each = !view.voters.is_empty()
            && view
                .voters
                .iter()
                .all(|voters| voters.iter().filter(|node| fresh(node)).count() * 2 > voters.len());
        quorum_in_each.then_some(committed)
    }

    /// Returns whether this node must refuse vote requests now: it started too recently to
    /// know whether a leader's lease still counts on it.
    pub fn refuses_votes(&self) -> bool {
        self.lease.is_some() && self.started.elapsed() < self.refuse_votes_for
    }

    /// Returns whether leases are on.
    pub fn enabled(&self) -> bool {
        self.lease.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(voters: &[&[NodeId]], committed_in_term: Option<u64>) -> LeaderView {
        LeaderView {
            vote: Vote::new_committed(3, 1),
            voters: voters.iter().map(|set| set.iter().copied().collect()).collect(),
            committed_in_term,
        }
    }

    #[test]
    fn a_lease_needs_a_fresh_quorum_under_the_current_vote() {
        let leases = Leases::new(Some(Duration::from_millis(150)), Duration::from_millis(600));
        let start = Instant::now();
        let three = view(&[&[1, 2, 3]], Some(40));
        assert_eq!(leases.holds(1, &three, start), None, "no acknowledgement yet");

        leases.acknowledged(2, &Vote::new_committed(3, 1), start);
        assert_eq!(leases.holds(1, &three, start + Duration::from_millis(100)), Some(40));
        assert_eq!(leases.holds(1, &three, start + Duration::from_millis(150)), None, "expired");

        // An acknowledgement of an older vote does not count for this one.
        leases.acknowledged(3, &Vote::new_committed(2, 1), start + Duration::from_millis(140));
        assert_eq!(leases.holds(1, &three, start + Duration::from_millis(160)), None);
        // An older send time never shortens a newer acknowledgement.
        leases.acknowledged(2, &Vote::new_committed(3, 1), start + Duration::from_millis(100));
        leases.acknowledged(2, &Vote::new_committed(3, 1), start);
        assert_eq!(leases.holds(1, &three, start + Duration::from_millis(200)), Some(40));

        // Before the leader committed an entry of its own term: no lease reads.
        assert_eq!(leases.holds(1, &view(&[&[1, 2, 3]], None), start), None);
        // Five voters need two followers; a joint membership needs a quorum in both.
        assert_eq!(leases.holds(1, &view(&[&[1, 2, 3, 4, 5]], Some(1)), start), None);
        leases.acknowledged(4, &Vote::new_committed(3, 1), start);
        let now = start + Duration::from_millis(50);
        assert_eq!(leases.holds(1, &view(&[&[1, 2, 3, 4, 5]], Some(1)), now), Some(1));
        assert_eq!(leases.holds(1, &view(&[&[1, 2, 3], &[5, 6, 7]], Some(1)), now), None);
        // A leader that is not a voter counts only its followers.
        assert_eq!(leases.holds(9, &view(&[&[2, 3, 5]], Some(1)), now), None);
    }

    #[test]
    fn without_leases_nothing_holds_and_votes_are_not_refused() {
        let leases = Leases::new(None, Duration::from_millis(600));
        leases.acknowledged(2, &Vote::new_committed(3, 1), Instant::now());
        assert_eq!(leases.holds(1, &view(&[&[1, 2, 3]], Some(5)), Instant::now()), None);
        assert!(!leases.refuses_votes());

        let on = Leases::new(Some(Duration::from_millis(1)), Duration::from_millis(300));
        assert!(on.refuses_votes(), "a node just started refuses votes");
    }

    #[test]
    #[should_panic(expected = "no margin")]
    fn a_lease_must_stay_well_under_the_followers_refusal() {
        Leases::new(Some(Duration::from_millis(400)), Duration::from_millis(600));
    }
}

//! Nemeses: faults injected into a running [`System`] while clients work, each bounded
//! (it says how long it holds) and undone by [`Nemesis::heal`], or at the latest when it
//! drops.
//!
//! A new nemesis is one type implementing [`Nemesis`]: it picks what to break (reserving
//! nodes with [`System::reserve`] so that two faults do not fight over one node), breaks
//! it, and says how long to hold; [`Schedule`] decides when, from the run's seed.

mod churn;
mod kill;
mod partition;
mod pause;
mod schedule;
mod skew;
mod stranger;

use std::time::Duration;

use futures::future::BoxFuture;

pub use churn::Churn;
pub use kill::Kill;
pub use partition::Partition;
pub use pause::Pause;
pub use schedule::{Schedule, ScheduleReport};
pub use skew::ClockSkew;
pub use stranger::Stranger;

use crate::random::Random;
use crate::system::System;

/// One fault in force, as a nemesis injected it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// What was done, for the run's notes ("SIGKILL node 2 (leader)").
    pub description: String,
    /// How long to keep it before healing.
    pub hold: Duration,
}

/// A kind of fault.
pub trait Nemesis: Send {
    /// Returns the name schedules and reports use.
    fn name(&self) -> &'static str;

    /// Injects one fault, its details chosen with `random`; `None` when it cannot now
    /// (every node it could act on is held by another fault).
    fn inject<'a>(
        &'a mut self,
        system: &'a mut System,
        random: &'a mut Random,
    ) -> BoxFuture<'a, anyhow::Result<Option<Fault>>>;

    /// Undoes the fault in force; does nothing when none is.
    fn heal<'a>(&'a mut self, system: &'a mut System) -> BoxFuture<'a, anyhow::Result<()>>;

    /// Returns whether the nemesis needs to be the only fault in force (a membership
    /// change waits on a cluster that works).
    fn is_exclusive(&self) -> bool {
        false
    }
}

/// The election timeout robustness clusters run with ([`crate::CLUSTER_ARGS`]): the
/// longest is twice this, and the leader's lease half of it.
pub const ELECTION_TIMEOUT_MS: u64 = 300;

/// Returns "node 1 (leader), node 2" for notes.
fn describe_nodes(nodes: &[usize], leader: Option<usize>) -> String {
    let names: Vec<String> = nodes
        .iter()
        .map(|node| {
            if Some(*node) == leader {
                format!("node {node} (leader)")
            } else {
                format!("node {node}")
            }
        })
        .collect();
    names.join(", ")
}

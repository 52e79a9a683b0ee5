//! A linearizability checker: Wing & Gong's search for a linearization, with Lowe's
//! memoization of the configurations already explored (the set of operations linearized
//! and the model's state), as porcupine does it.
//!
//! Operations are intervals `[call, ret]` of one clock. An operation whose outcome is
//! unknown has no return: it may take effect at any moment after its call, or never
//! (placing it after every other operation is the same as never). The search walks the
//! calls and returns in time order; at a call it tries to take the operation's effect
//! now, at a return of an operation not yet linearized it backtracks; once only
//! operations of unknown outcome are left, it is done. A configuration
//! seen before is not explored again, which bounds the work by the number of distinct
//! configurations, and a step budget bounds it for good: past it the answer is
//! [`Verdict::Unknown`], never a pass.
//!
//! Models with a measure of progress no step decreases (a version) can say, per
//! operation, the furthest state it can still happen in; the search then drops a
//! configuration as soon as it has gone past an operation it has yet to place, instead
//! of finding out at that operation's return.
//!
//! Two more prunings, for histories with many operations of unknown outcome. Such an
//! operation is never tried where it would leave the state as it is: kept pending
//! instead, it can still go at the end, so nothing is lost. And operations
//! the caller marks with the same [`Entry::class`] must be interchangeable (no return,
//! and the same effect on every state). Any linearization can then be rearranged so that
//! they take effect in call order, so the search only tries them in that order.

mod events;
mod memo;

use std::collections::HashSet;
use std::fmt::Debug;
use std::hash::Hash;

use events::EventList;
use memo::{Bounds, ClassOrder, Configuration, TakenSet};

/// A sequential specification: which operations a state allows, and what they leave.
pub trait Model {
    type State: Clone + Eq + Hash + Debug;
    type Op: Debug;

    /// Returns the state after `op` takes effect in `state`, or `None` when `op` (with
    /// the outcome its client saw) cannot happen in `state`.
    fn step(&self, state: &Self::State, op: &Self::Op) -> Option<Self::State>;

    /// Returns how far `state` has come by a measure no step decreases (a version), for
    /// models that have one; see [`Model::latest`].
    fn progress(&self, _state: &Self::State) -> u64 {
        0
    }

    /// Returns the largest [`Model::progress`] of a state `op` can still take effect in,
    /// if there is one (a read that saw version 3 needs a state at version 3). The search
    /// gives up on a configuration that has gone past an operation it has yet to place.
    fn latest(&self, _op: &Self::Op) -> Option<u64> {
        None
    }
}

/// One operation to place: its model operation and its interval.
#[derive(Debug, Clone)]
pub struct Entry<Op> {
    pub op: Op,
    pub call: u64,
    /// `None`: the outcome is unknown, so the operation may take effect any time after
    /// `call`, or never.
    pub ret: Option<u64>,
    /// Operations with the same class are interchangeable (see the module notes); only
    /// operations with `ret: None` may have one.
    pub class: Option<u32>,
}

/// Why no linearization exists, from the deepest attempt the search made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counterexample<State> {
    /// Indexes of the entries that attempt linearized, in order.
    pub linearized: Vec<usize>,
    /// The model's state after them.
    pub state: State,
    /// The entry that returned before it could take effect there: no order of the
    /// operations concurrent with it lets it.
    pub stuck: usize,
    /// The entry that taking `stuck` there would have left behind for good (a read of
    /// the state `stuck` changes), when that is what stopped it.
    pub behind: Option<usize>,
}

/// What the checker found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict<State> {
    Linearizable,
    NotLinearizable(Box<Counterexample<State>>),
    /// The search ran out of its step budget after this many steps.
    Unknown {
        steps: u64,
    },
}

/// Returns whether `entries` have a linearization from `init` under `model`, taking at
/// most `budget` search steps.
pub fn check<M: Model>(
    model: &M,
    init: M::State,
    entries: &[Entry<M::Op>],
    budget: u64,
) -> Verdict<M::State> {
    let mut list = EventList::new(entries);
    let mut classes = ClassOrder::new(entries);
    let latest: Vec<Option<u64>> = entries.iter().map(|entry| model.latest(&entry.op)).collect();
    let mut bounds = Bounds::new(&latest);
    let mut taken = TakenSet::new(entries.len());
    let mut seen: HashSet<Configuration<M::State>> = HashSet::new();
    let mut stack: Vec<(usize, M::State)> = Vec::new();
    let mut state = init;
    let mut deepest: Option<Counterexample<M::State>> = None;
    let mut steps = 0_u64;
    let mut cursor = list.first();
    while let Some(node) = cursor {
        steps += 1;
        if steps > budget {
            return Verdict::Unknown { steps };
        }
        let entry = list.events[node].entry;
        if list.events[node].is_call {
            if classes.allows(entry) {
                let next = model.step(&state, &entries[entry].op);
                // An unknown outcome that changes nothing now is never needed now: left
                // pending, it can still be placed at the end, where it changes nothing.
                let next = next.filter(|next| entries[entry].ret.is_some() || *next != state);
                let next =
                    next.filter(|next| bounds.left_behind(entry, model.progress(next)).is_none());
                if let Some(next) = next {
                    taken.insert(entry);
                    if seen.insert(taken.configuration(&next)) {
                        stack.push((node, std::mem::replace(&mut state, next)));
                        classes.took(entry);
                        bounds.remove(entry, latest[entry]);
                        list.lift(node);
                        cursor = list.first();
                        continue;
                    }
                    taken.remove(entry);
                }
            }
            cursor = list.next(node);
        } else if entries[entry].ret.is_none() {
            // Returns of unknown outcomes come last: only such operations are left, and
            // they may never have taken effect.
            return Verdict::Linearizable;
        } else {
            if deepest.as_ref().is_none_or(|best| stack.len() > best.linearized.len()) {
                let linearized = stack.iter().map(|(call, _)| list.events[*call].entry).collect();
                let behind = model
                    .step(&state, &entries[entry].op)
                    .and_then(|next| bounds.left_behind(entry, model.progress(&next)));
                deepest =
                    Some(Counterexample { linearized, state: state.clone(), stuck: entry, behind });
            }
            let Some((call, previous)) = stack.pop() else {
                let found = deepest.expect("a return with an empty stack is recorded first");
                return Verdict::NotLinearizable(Box::new(found));
            };
            state = previous;
            let undone = list.events[call].entry;
            taken.remove(undone);
            classes.untook(undone);
            bounds.add(undone, latest[undone]);
            list.unlift(call);
            cursor = list.next(call);
        }
    }
    Verdict::Linearizable
}

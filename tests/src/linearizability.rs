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

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Debug;
use std::hash::{Hash, Hasher};

use crate::random::Random;

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

/// A call or a return, in a doubly linked list in time order (slot 0 is the head).
#[derive(Debug, Clone)]
struct Event {
    entry: usize,
    is_call: bool,
    /// The other event of the same entry.
    partner: usize,
    prev: usize,
    next: usize,
}

struct EventList {
    events: Vec<Event>,
}

impl EventList {
    fn new<Op>(entries: &[Entry<Op>]) -> Self {
        // Times, with calls before returns at equal times: two operations that touch are
        // taken as concurrent, which never rejects a valid history.
        let mut order: Vec<(u64, bool, usize)> = Vec::with_capacity(entries.len() * 2);
        for (index, entry) in entries.iter().enumerate() {
            order.push((entry.call, false, index));
            order.push((entry.ret.unwrap_or(u64::MAX), true, index));
        }
        order.sort_unstable();
        let head = Event { entry: usize::MAX, is_call: false, partner: 0, prev: 0, next: 0 };
        let mut events = vec![head];
        let mut slots = vec![[0_usize; 2]; entries.len()];
        for (position, (_, is_return, entry)) in order.into_iter().enumerate() {
            let slot = position + 1;
            slots[entry][usize::from(is_return)] = slot;
            events.push(Event { entry, is_call: !is_return, partner: 0, prev: slot - 1, next: 0 });
        }
        let count = events.len();
        for (slot, event) in events.iter_mut().enumerate() {
            event.next = if slot + 1 < count { slot + 1 } else { 0 };
        }
        events[0].prev = count - 1;
        for [call, ret] in slots {
            events[call].partner = ret;
            events[ret].partner = call;
        }
        Self { events }
    }

    fn first(&self) -> Option<usize> {
        self.next(0)
    }

    fn next(&self, slot: usize) -> Option<usize> {
        Some(self.events[slot].next).filter(|next| *next != 0)
    }

    fn unlink(&mut self, slot: usize) {
        let Event { prev, next, .. } = self.events[slot];
        self.events[prev].next = next;
        self.events[next].prev = prev;
    }

    fn relink(&mut self, slot: usize) {
        let Event { prev, next, .. } = self.events[slot];
        self.events[prev].next = slot;
        self.events[next].prev = slot;
    }

    /// Takes a call and its return out of the list.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        self.unlink(self.events[call].partner);
    }

    /// Puts back what [`EventList::lift`] took out, in reverse order.
    fn unlift(&mut self, call: usize) {
        self.relink(self.events[call].partner);
        self.relink(call);
    }
}

/// The order interchangeable entries are taken in: per class, its entries by call time,
/// and how many of them are linearized.
struct ClassOrder {
    /// Per entry: its class and its rank in it.
    rank: Vec<Option<(usize, usize)>>,
    taken: Vec<usize>,
}

impl ClassOrder {
    fn new<Op>(entries: &[Entry<Op>]) -> Self {
        let mut classes: HashMap<u32, Vec<usize>> = HashMap::new();
        for (index, entry) in entries.iter().enumerate() {
            if let Some(class) = entry.class {
                assert!(entry.ret.is_none(), "entry {index}: only unknown outcomes have a class");
                classes.entry(class).or_default().push(index);
            }
        }
        let mut rank = vec![None; entries.len()];
        for (number, (_, mut members)) in classes.into_iter().enumerate() {
            members.sort_by_key(|index| (entries[*index].call, *index));
            for (position, index) in members.into_iter().enumerate() {
                rank[index] = Some((number, position));
            }
        }
        let count = rank.iter().flatten().map(|(class, _)| class + 1).max().unwrap_or(0);
        Self { rank, taken: vec![0; count] }
    }

    fn allows(&self, entry: usize) -> bool {
        self.rank[entry].is_none_or(|(class, position)| self.taken[class] == position)
    }

    fn took(&mut self, entry: usize) {
        if let Some((class, _)) = self.rank[entry] {
            self.taken[class] += 1;
        }
    }

    fn untook(&mut self, entry: usize) {
        if let Some((class, _)) = self.rank[entry] {
            self.taken[class] -= 1;
        }
    }
}

/// The [`Model::latest`] bounds of the entries not linearized yet.
struct Bounds(BTreeSet<(u64, usize)>);

impl Bounds {
    fn new(latest: &[Option<u64>]) -> Self {
        Self(
            latest
                .iter()
                .enumerate()
                .filter_map(|(entry, bound)| Some(((*bound)?, entry)))
                .collect(),
        )
    }

    fn add(&mut self, entry: usize, bound: Option<u64>) {
        if let Some(bound) = bound {
            self.0.insert((bound, entry));
        }
    }

    fn remove(&mut self, entry: usize, bound: Option<u64>) {
        if let Some(bound) = bound {
            self.0.remove(&(bound, entry));
        }
    }

    /// Returns the entry other than `entry` that a step to `progress` would leave behind
    /// for good, if any.
    fn left_behind(&self, entry: usize, progress: u64) -> Option<usize> {
        let (bound, other) = *self.0.iter().find(|(_, other)| *other != entry)?;
        (progress > bound).then_some(other)
    }
}

/// The set of linearized entries, with a hash kept up to date as entries come and go
/// (one random word per entry, XORed in and out).
struct TakenSet {
    words: Vec<u64>,
    keys: Vec<u64>,
    hash: u64,
}

impl TakenSet {
    fn new(count: usize) -> Self {
        let mut random = Random::new(0x5EED_0F5E_7000);
        let keys = (0..count).map(|_| random.next_u64()).collect();
        Self { words: vec![0; count.div_ceil(64)], keys, hash: 0 }
    }

    fn insert(&mut self, entry: usize) {
        self.words[entry / 64] |= 1 << (entry % 64);
        self.hash ^= self.keys[entry];
    }

    fn remove(&mut self, entry: usize) {
        self.words[entry / 64] &= !(1 << (entry % 64));
        self.hash ^= self.keys[entry];
    }

    fn configuration<State: Hash + Clone>(&self, state: &State) -> Configuration<State> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        state.hash(&mut hasher);
        Configuration {
            hash: self.hash ^ hasher.finish(),
            taken: self.words.clone().into_boxed_slice(),
            state: state.clone(),
        }
    }
}

/// A point of the search: which entries are linearized and the state they left.
#[derive(PartialEq, Eq)]
struct Configuration<State> {
    hash: u64,
    taken: Box<[u64]>,
    state: State,
}

impl<State> Hash for Configuration<State> {
    fn hash<H: Hasher>(&self, hasher: &mut H) {
        hasher.write_u64(self.hash);
    }
}

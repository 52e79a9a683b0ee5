//! What the search keeps about where it has been: the set of linearized entries and the
//! configurations seen (Lowe's memoization), the order interchangeable entries go in,
//! and the bounds of the entries not placed yet.

use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};

use super::Entry;
use crate::random::Random;

/// The order interchangeable entries are taken in: per class, its entries by call time,
/// and how many of them are linearized.
pub(super) struct ClassOrder {
    /// Per entry: its class and its rank in it.
    rank: Vec<Option<(usize, usize)>>,
    taken: Vec<usize>,
}

impl ClassOrder {
    pub(super) fn new<Op>(entries: &[Entry<Op>]) -> Self {
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

    pub(super) fn allows(&self, entry: usize) -> bool {
        self.rank[entry].is_none_or(|(class, position)| self.taken[class] == position)
    }

    pub(super) fn took(&mut self, entry: usize) {
        if let Some((class, _)) = self.rank[entry] {
            self.taken[class] += 1;
        }
    }

    pub(super) fn untook(&mut self, entry: usize) {
        if let Some((class, _)) = self.rank[entry] {
            self.taken[class] -= 1;
        }
    }
}

/// The [`Model::latest`] bounds of the entries not linearized yet.
pub(super) struct Bounds(BTreeSet<(u64, usize)>);

impl Bounds {
    pub(super) fn new(latest: &[Option<u64>]) -> Self {
        Self(
            latest
                .iter()
                .enumerate()
                .filter_map(|(entry, bound)| Some(((*bound)?, entry)))
                .collect(),
        )
    }

    pub(super) fn add(&mut self, entry: usize, bound: Option<u64>) {
        if let Some(bound) = bound {
            self.0.insert((bound, entry));
        }
    }

    pub(super) fn remove(&mut self, entry: usize, bound: Option<u64>) {
        if let Some(bound) = bound {
            self.0.remove(&(bound, entry));
        }
    }

    /// Returns the entry other than `entry` that a step to `progress` would leave behind
    /// for good, if any.
    pub(super) fn left_behind(&self, entry: usize, progress: u64) -> Option<usize> {
        let (bound, other) = *self.0.iter().find(|(_, other)| *other != entry)?;
        (progress > bound).then_some(other)
    }
}

/// The set of linearized entries, with a hash kept up to date as entries come and go
/// (one random word per entry, XORed in and out).
pub(super) struct TakenSet {
    words: Vec<u64>,
    keys: Vec<u64>,
    hash: u64,
}

impl TakenSet {
    pub(super) fn new(count: usize) -> Self {
        let mut random = Random::new(0x5EED_0F5E_7000);
        let keys = (0..count).map(|_| random.next_u64()).collect();
        Self { words: vec![0; count.div_ceil(64)], keys, hash: 0 }
    }

    pub(super) fn insert(&mut self, entry: usize) {
        self.words[entry / 64] |= 1 << (entry % 64);
        self.hash ^= self.keys[entry];
    }

    pub(super) fn remove(&mut self, entry: usize) {
        self.words[entry / 64] &= !(1 << (entry % 64));
        self.hash ^= self.keys[entry];
    }

    pub(super) fn configuration<State: Hash + Clone>(&self, state: &State) -> Configuration<State> {
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
pub(super) struct Configuration<State> {
    hash: u64,
    taken: Box<[u64]>,
    state: State,
}

impl<State> Hash for Configuration<State> {
    fn hash<H: Hasher>(&self, hasher: &mut H) {
        hasher.write_u64(self.hash);
    }
}

//! Writes applied but not yet committed to redb, per tree: the write-back buffer of
//! [`super::RedbEngine`]. Reads look here first; a range merges what is here with the
//! engine's pairs ([`Merged`]).
//!
//! One redb commit copies every page a write touched, so with keys spread over the tree
//! (hashed names) a commit per Raft entry costs a page per write; one commit every
//! [`COMMIT_INTERVAL`] for everything applied meanwhile takes that off every entry's
//! way, as etcd's backend does with its batch interval.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::time::Duration;

use super::{KeyValue, WriteBatch, WriteOp};
use crate::Result;

/// How long applied writes wait at most before the committer writes them to redb.
pub(super) const COMMIT_INTERVAL: Duration = Duration::from_millis(100);
/// Buffered bytes that wake the committer before the interval is over.
pub(super) const COMMIT_BYTES: usize = 1 << 20;
/// Buffered bytes past which the writer commits itself (waiting for a commit under
/// way first): what bounds the buffer, and the time a writer can be held, when commits
/// fall behind or values are large (a progress record of a million parts is megabytes).
/// The state machine applies on an async thread, as it committed every entry before the
/// buffer: a writer's own commit stays near the size of the entry it commits.
pub(super) const WRITER_COMMITS_BYTES: usize = 4 << 20;

/// A key's buffered state: its new value, or `None` when it was removed.
type Slot = Option<Vec<u8>>;

/// Writes per tree, the newest for each key.
#[derive(Debug, Default)]
pub(super) struct Overlay {
    trees: HashMap<String, BTreeMap<Vec<u8>, Slot>>,
    bytes: usize,
}

impl Overlay {
    /// Records `batch`'s operations on `tree`, in order.
    pub(super) fn apply(&mut self, tree: &str, batch: WriteBatch) {
        if !self.trees.contains_key(tree) {
            self.trees.insert(tree.to_string(), BTreeMap::new());
        }
        let slots = self.trees.get_mut(tree).expect("just inserted");
        for op in batch.into_ops() {
            let (key, slot) = match op {
                WriteOp::Put(key, value) => (key, Some(value)),
                WriteOp::Delete(key) => (key, None),
            };
            let key_len = key.len();
            self.bytes += key_len + slot.as_ref().map_or(0, Vec::len);
            if let Some(replaced) = slots.insert(key, slot) {
                // The slot it replaced is gone: count each key's newest slot only.
                self.bytes -= key_len + replaced.map_or(0, |value| value.len());
            }
        }
    }

    /// Returns what is buffered for `key` (`Some(None)`: removed), if anything.
    pub(super) fn get(&self, tree: &str, key: &[u8]) -> Option<Option<&[u8]>> {
        self.trees.get(tree)?.get(key).map(Option::as_deref)
    }

    /// Returns the buffered slots of `tree` with keys in the range, in key order.
    fn range<'a>(
        &'a self,
        tree: &str,
        from: Bound<&'a [u8]>,
        to: Bound<&'a [u8]>,
    ) -> impl Iterator<Item = (&'a Vec<u8>, &'a Slot)> + 'a {
        self.trees.get(tree).into_iter().flat_map(move |slots| slots.range::<[u8], _>((from, to)))
    }

    /// Returns how many bytes of keys and values are buffered.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(super) fn is_empty(&self) -> bool {
        self.trees.values().all(BTreeMap::is_empty)
    }

    /// Returns the buffered slots, tree by tree.
    pub(super) fn trees(&self) -> impl Iterator<Item = (&str, &BTreeMap<Vec<u8>, Slot>)> {
        self.trees.iter().map(|(name, slots)| (name.as_str(), slots))
    }

    /// Puts `older` (writes made before this overlay's) under this one's: a commit that
    /// failed gives its writes back this way.
    pub(super) fn absorb_older(&mut self, older: Overlay) {
        for (tree, slots) in older.trees {
            let newer = self.trees.entry(tree).or_default();
            for (key, slot) in slots {
                if let std::collections::btree_map::Entry::Vacant(vacant) = newer.entry(key) {
                    self.bytes += vacant.key().len() + slot.as_ref().map_or(0, Vec::len);
                    vacant.insert(slot);
                }
            }
        }
    }
}

/// Returns the slots of `tree` in the range that `newer` and then `older` buffer (the
/// newer one's slot for a key both hold), in key order.
pub(super) fn buffered_range(
    newer: &Overlay,
    older: Option<&Overlay>,
    tree: &str,
    from: Bound<&[u8]>,
    to: Bound<&[u8]>,
) -> Vec<(Vec<u8>, Slot)> {
    let mut slots: BTreeMap<&Vec<u8>, &Slot> = BTreeMap::new();
    if let Some(older) = older {
        slots.extend(older.range(tree, from, to));
    }
    slots.extend(newer.range(tree, from, to));
    slots.into_iter().map(|(key, slot)| (key.clone(), slot.clone())).collect()
}

/// A range over the engine's pairs with buffered slots laid over them: a buffered value
/// replaces the engine's, a buffered removal hides it.
pub(super) struct Merged<E: Iterator<Item = Result<KeyValue>>> {
    pub(super) buffered: std::iter::Peekable<std::vec::IntoIter<(Vec<u8>, Slot)>>,
    pub(super) engine: std::iter::Peekable<E>,
}

impl<E: Iterator<Item = Result<KeyValue>>> Iterator for Merged<E> {
    type Item = Result<KeyValue>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let order = match (self.buffered.peek(), self.engine.peek()) {
                (None, None) => return None,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) | (Some(_), Some(Err(_))) => Ordering::Greater,
                (Some((buffered, _)), Some(Ok((stored, _)))) => buffered.cmp(stored),
            };
            match order {
                Ordering::Greater => return self.engine.next(),
                // The buffer's slot replaces the engine's pair.
                Ordering::Equal => drop(self.engine.next()),
                Ordering::Less => {}
            }
            if let Some((key, Some(value))) = self.buffered.next() {
                return Some(Ok((key, value)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(ops: &[(&str, Option<&str>)]) -> WriteBatch {
        let mut batch = WriteBatch::new();
        for (key, value) in ops {
            match value {
                Some(value) => batch.put(key.as_bytes(), value.as_bytes()),
                None => batch.delete(key.as_bytes()),
            }
        }
        batch
    }

    #[test]
    fn the_newest_write_of_a_key_wins_and_removals_are_kept() {
        let mut overlay = Overlay::default();
        overlay.apply("t", batch(&[("a", Some("1")), ("b", Some("2")), ("a", Some("3"))]));
        overlay.apply("t", batch(&[("b", None)]));
        assert_eq!(overlay.get("t", b"a"), Some(Some(&b"3"[..])));
        assert_eq!(overlay.get("t", b"b"), Some(None));
        assert_eq!(overlay.get("t", b"c"), None);
        assert_eq!(overlay.get("other", b"a"), None);
        // "a" and "3", "b" and nothing: a key counts with its newest slot only.
        assert_eq!(overlay.bytes(), 3);

        let mut newer = Overlay::default();
        newer.apply("t", batch(&[("b", Some("4"))]));
        newer.absorb_older(overlay);
        assert_eq!(newer.get("t", b"a"), Some(Some(&b"3"[..])));
        assert_eq!(newer.get("t", b"b"), Some(Some(&b"4"[..])));
    }

    #[test]
    fn a_merged_range_lays_the_buffer_over_the_engine() {
        let mut older = Overlay::default();
        older.apply("t", batch(&[("b", Some("old")), ("d", None), ("e", Some("5"))]));
        let mut newer = Overlay::default();
        newer.apply("t", batch(&[("b", Some("new")), ("c", None), ("f", Some("6"))]));
        newer.apply("u", batch(&[("a", Some("other tree"))]));
        let engine: Vec<Result<KeyValue>> = ["a", "c", "d", "g"]
            .into_iter()
            .map(|key| Ok((key.as_bytes().to_vec(), b"stored".to_vec())))
            .collect();
        let merged = Merged {
            buffered: buffered_range(&newer, Some(&older), "t", Bound::Unbounded, Bound::Unbounded)
                .into_iter()
                .peekable(),
            engine: engine.into_iter().peekable(),
        };
        let pairs: Vec<(String, String)> = merged
            .map(|pair| {
                let (key, value) = pair.unwrap();
                (String::from_utf8(key).unwrap(), String::from_utf8(value).unwrap())
            })
            .collect();
        let expected = [("a", "stored"), ("b", "new"), ("e", "5"), ("f", "6"), ("g", "stored")];
        let expected: Vec<(String, String)> =
            expected.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect();
        assert_eq!(pairs, expected);

        let bounded =
            buffered_range(&newer, Some(&older), "t", Bound::Excluded(b"b"), Bound::Included(b"e"));
        let keys: Vec<&[u8]> = bounded.iter().map(|(key, _)| key.as_slice()).collect();
        assert_eq!(keys, vec![&b"c"[..], b"d", b"e"]);
    }
}

//! The key order of a table, for range scans.
//!
//! A table's entries live in a hash map, so point reads and writes cost one hash probe rather
//! than a walk down a tree of a million keys. Only scans need the keys in order; [`KeyOrder`]
//! provides it, worked out on the first scan and then kept up to date by writes cheaply.
//!
//! Invariant, between any two calls: the table's keys are exactly
//! `(sorted ∩ present) ∪ added`, where `present` is the set of keys the table holds; `added`
//! and `sorted` are disjoint, and every key of `added` is present. `sorted` is strictly
//! increasing. `deleted` counts the keys of `sorted` that are not present.
//!
//! When `added` or `deleted` grows past a quarter of `sorted` (plus a constant, so small
//! tables are not rebuilt over and over) the order is dropped, and the next scan rebuilds it:
//! O(n log n), paid once per at least n/4 writes that changed the key set. A write of a key
//! already present (the common case: updating state) never touches the order.

use super::Key;
use std::collections::BTreeSet;
use std::ops::Bound;

/// Writes that change the key set which a built order absorbs before it is dropped, beyond a
/// quarter of its size.
const SLACK: usize = 1024;

pub(super) struct KeyOrder {
    sorted: Vec<Key>,
    added: BTreeSet<Key>,
    deleted: usize,
}

impl KeyOrder {
    /// The order of `keys` (each once, any order).
    pub(super) fn build<'k>(keys: impl Iterator<Item = &'k Key>) -> Self {
        let mut sorted: Vec<Key> = keys.cloned().collect();
        sorted.sort_unstable();
        KeyOrder { sorted, added: BTreeSet::new(), deleted: 0 }
    }

    fn worn_out(&self) -> bool {
        self.added.len() + self.deleted > SLACK + self.sorted.len() / 4
    }

    /// `key` was not present and now is. Returns `false` if the order is worn out and must be
    /// dropped.
    pub(super) fn inserted(&mut self, key: &[u8]) -> bool {
        if self.sorted.binary_search_by(|k| k.as_slice().cmp(key)).is_ok() {
            // Deleted earlier and back again: `sorted` still has it.
            self.deleted = self.deleted.saturating_sub(1);
        } else {
            self.added.insert(Key::from(key));
        }
        !self.worn_out()
    }

    /// `key` was present and now is not. Returns `false` if the order is worn out and must be
    /// dropped.
    pub(super) fn removed(&mut self, key: &[u8]) -> bool {
        if !self.added.remove(key) {
            self.deleted += 1;
        }
        !self.worn_out()
    }

    /// The keys within the bounds, in order, possibly with some no longer present (the
    /// caller looks each up anyway and skips those). The bounds must not be inverted.
    pub(super) fn range<'a>(&'a self, lower: Bound<&'a [u8]>, upper: Bound<&'a [u8]>) -> impl Iterator<Item = &'a Key> {
        let start = match lower {
            Bound::Unbounded => 0,
            Bound::Included(l) => self.sorted.partition_point(|k| k.as_slice() < l),
            Bound::Excluded(l) => self.sorted.partition_point(|k| k.as_slice() <= l),
        };
        let below_upper = move |k: &&Key| match upper {
            Bound::Unbounded => true,
            Bound::Included(u) => k.as_slice() <= u,
            Bound::Excluded(u) => k.as_slice() < u,
        };
        let from_sorted = self.sorted.get(start..).unwrap_or_default().iter().take_while(below_upper);
        let from_added = self.added.range::<[u8], _>((lower, upper));
        Merge { a: from_sorted.peekable(), b: from_added.peekable() }
    }
}

/// Two increasing iterators over disjoint keys, merged into one increasing iterator.
struct Merge<A: Iterator, B: Iterator> {
    a: std::iter::Peekable<A>,
    b: std::iter::Peekable<B>,
}

impl<'k, A: Iterator<Item = &'k Key>, B: Iterator<Item = &'k Key>> Iterator for Merge<A, B> {
    type Item = &'k Key;

    fn next(&mut self) -> Option<&'k Key> {
        match (self.a.peek(), self.b.peek()) {
            (Some(a), Some(b)) if b < a => self.b.next(),
            (Some(_), _) => self.a.next(),
            (None, _) => self.b.next(),
        }
    }
}

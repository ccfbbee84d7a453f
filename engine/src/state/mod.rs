//! The working state: in-memory tables and the dirty set since the last checkpoint.
//!
//! Invariant: for every key that is *not* in a table's dirty set, the table's value equals the
//! value in the checkpoint the working state is based on. The dirty set remembers, for each
//! dirty key, whether that checkpoint had the key, so that put-then-delete of a key the
//! checkpoint never had writes nothing, and of a key it had writes a tombstone.

mod key;

pub(crate) use key::Key;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

/// One table of the working state.
#[derive(Default)]
pub(crate) struct TableState {
    data: BTreeMap<Key, Vec<u8>>,
    /// Dirty key -> whether the base checkpoint had it.
    dirty: HashMap<Key, bool>,
}

/// Entries captured from one table for a checkpoint: unsorted, each key once; `None` is a
/// tombstone.
pub(crate) type CapturedEntries = Vec<(Vec<u8>, Option<Vec<u8>>)>;

impl TableState {
    /// A table holding `data` as its checkpointed state (nothing dirty).
    pub(crate) fn restored(data: BTreeMap<Key, Vec<u8>>) -> Self {
        TableState { data, dirty: HashMap::new() }
    }

    pub(crate) fn get(&self, key: &[u8]) -> Option<&Vec<u8>> {
        self.data.get(key)
    }

    pub(crate) fn len(&self) -> usize {
        self.data.len()
    }

    pub(crate) fn dirty_len(&self) -> usize {
        self.dirty.len()
    }

    pub(crate) fn put(&mut self, key: &[u8], value: &[u8]) {
        match self.data.get_mut(key) {
            Some(slot) => {
                if !self.dirty.contains_key(key) {
                    self.dirty.insert(Key::from(key), true);
                }
                slot.clear();
                slot.extend_from_slice(value);
            }
            None => {
                if !self.dirty.contains_key(key) {
                    self.dirty.insert(Key::from(key), false);
                }
                self.data.insert(Key::from(key), value.to_vec());
            }
        }
    }

    /// Delete `key`; returns whether it was present.
    pub(crate) fn delete(&mut self, key: &[u8]) -> bool {
        let present = self.data.remove(key).is_some();
        if present && !self.dirty.contains_key(key) {
            self.dirty.insert(Key::from(key), true);
        }
        present
    }

    pub(crate) fn range(&self, lower: Bound<&[u8]>, upper: Bound<&[u8]>) -> Vec<(Vec<u8>, Vec<u8>)> {
        if let (Bound::Included(l) | Bound::Excluded(l), Bound::Included(u) | Bound::Excluded(u)) = (lower, upper) {
            // BTreeMap::range panics on an inverted range; an empty answer is the honest one.
            if l > u || (l == u && (matches!(lower, Bound::Excluded(_)) || matches!(upper, Bound::Excluded(_)))) {
                return Vec::new();
            }
        }
        self.data.range::<[u8], _>((lower, upper)).map(|(k, v)| (k.as_slice().to_vec(), v.clone())).collect()
    }

    /// Take the dirty set: every key written since the base checkpoint with its current value,
    /// or a tombstone if the base had it and it is now gone. O(dirty).
    pub(crate) fn capture(&mut self) -> CapturedEntries {
        let dirty = std::mem::take(&mut self.dirty);
        let mut out = Vec::with_capacity(dirty.len());
        for (key, base_had_it) in dirty {
            match self.data.get(key.as_slice()) {
                Some(v) => out.push((key.as_slice().to_vec(), Some(v.clone()))),
                None if base_had_it => out.push((key.as_slice().to_vec(), None)),
                None => {}
            }
        }
        out
    }
}

/// All tables of the working state, by name.
#[derive(Default)]
pub(crate) struct Tables {
    pub(crate) tables: BTreeMap<String, TableState>,
}

impl Tables {
    pub(crate) fn dirty_len(&self) -> usize {
        self.tables.values().map(TableState::dirty_len).sum()
    }
}

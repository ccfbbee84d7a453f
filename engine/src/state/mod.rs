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
    dirty: HashMap<Key, Dirty>,
    /// Key and value bytes of the dirty set (tombstones count their key).
    dirty_bytes: usize,
}

/// A table's dirty set, taken whole for a checkpoint: O(1) on the caller's thread; turned
/// into entries ([`DirtySet::into_entries`]) by the background pipeline.
#[derive(Default)]
pub(crate) struct DirtySet(HashMap<Key, Dirty>);

impl DirtySet {
    /// Every key written since the base checkpoint with its current value, or a tombstone if
    /// the base had it and it is now gone (a key put then deleted that the base never had
    /// writes nothing).
    pub(crate) fn into_entries(self) -> CapturedEntries {
        let mut out = Vec::with_capacity(self.0.len());
        for (key, d) in self.0 {
            match d.value {
                Some(v) => out.push((key.as_slice().to_vec(), Some(v))),
                None if d.base_had_it => out.push((key.as_slice().to_vec(), None)),
                None => {}
            }
        }
        out
    }
}

/// A key written since the base checkpoint.
struct Dirty {
    /// Whether the base checkpoint had the key.
    base_had_it: bool,
    /// Its current value (`None`: deleted). Kept here so capture needs no lookup in `data`:
    /// `put` pays for the tree lookup anyway, capture then only drains this map.
    value: Option<Vec<u8>>,
}

/// Entries captured from one table for a checkpoint: unsorted, each key once; `None` is a
/// tombstone.
pub(crate) type CapturedEntries = Vec<(Vec<u8>, Option<Vec<u8>>)>;

impl TableState {
    /// A table holding `data` as its checkpointed state (nothing dirty).
    pub(crate) fn restored(data: BTreeMap<Key, Vec<u8>>) -> Self {
        TableState { data, dirty: HashMap::new(), dirty_bytes: 0 }
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

    pub(crate) fn dirty_bytes(&self) -> usize {
        self.dirty_bytes
    }

    /// Record that `key` now has `value` (`None`: deleted); `present_before` says whether the
    /// working state had it just before this write, which for a key not yet dirty is whether
    /// the base checkpoint had it.
    fn mark_dirty(&mut self, key: &[u8], present_before: bool, value: Option<&[u8]>) {
        let new_len = value.map_or(0, <[u8]>::len);
        match self.dirty.get_mut(key) {
            Some(d) => {
                self.dirty_bytes = self.dirty_bytes - d.value.as_ref().map_or(0, Vec::len) + new_len;
                match (&mut d.value, value) {
                    (Some(buf), Some(v)) => {
                        buf.clear();
                        buf.extend_from_slice(v);
                    }
                    (slot, v) => *slot = v.map(<[u8]>::to_vec),
                }
            }
            None => {
                self.dirty_bytes += key.len() + new_len;
                self.dirty
                    .insert(Key::from(key), Dirty { base_had_it: present_before, value: value.map(<[u8]>::to_vec) });
            }
        }
    }

    pub(crate) fn put(&mut self, key: &[u8], value: &[u8]) {
        let present = match self.data.get_mut(key) {
            Some(slot) => {
                slot.clear();
                slot.extend_from_slice(value);
                true
            }
            None => {
                self.data.insert(Key::from(key), value.to_vec());
                false
            }
        };
        self.mark_dirty(key, present, Some(value));
    }

    /// Delete `key`; returns whether it was present.
    pub(crate) fn delete(&mut self, key: &[u8]) -> bool {
        let present = self.data.remove(key).is_some();
        if present || self.dirty.contains_key(key) {
            self.mark_dirty(key, present, None);
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

    /// Take the dirty set whole (O(1)). From now on the working state's base is the state at
    /// this instant, which the checkpoint taking the set will commit.
    pub(crate) fn take_dirty(&mut self) -> DirtySet {
        self.dirty_bytes = 0;
        DirtySet(std::mem::take(&mut self.dirty))
    }

    /// Put the keys of a dirty set taken by a checkpoint that did not commit back into the
    /// dirty set, so the next checkpoint writes them. Their current values are written (a
    /// later write already is); each is marked as possibly in the base, so a key now absent
    /// gets a tombstone (a tombstone for a key the base never had is harmless).
    pub(crate) fn restore_dirty<'k>(&mut self, keys: impl Iterator<Item = &'k [u8]>) {
        for key in keys {
            match self.dirty.get_mut(key) {
                Some(d) => d.base_had_it = true,
                None => {
                    let value = self.data.get(key).cloned();
                    self.dirty_bytes += key.len() + value.as_ref().map_or(0, Vec::len);
                    self.dirty.insert(Key::from(key), Dirty { base_had_it: true, value });
                }
            }
        }
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

    pub(crate) fn dirty_bytes(&self) -> usize {
        self.tables.values().map(TableState::dirty_bytes).sum()
    }
}

//! The working state: in-memory tables and the dirty set since the last checkpoint.
//!
//! Invariant: for every key that is *not* in a table's dirty set, the table's value equals the
//! value in the checkpoint the working state is based on. The dirty set remembers, for each
//! dirty key, whether that checkpoint had the key, so that put-then-delete of a key the
//! checkpoint never had writes nothing, and of a key it had writes a tombstone. A table of
//! which that checkpoint holds no entry is *whole dirty*: all its keys are dirty and none was
//! in the base, so it keeps no separate dirty set until its first capture.

mod data;
mod key;
mod order;
mod value;

pub(crate) use data::{shard_of, TableData, SHARDS};
use key::upsert;
pub(crate) use key::Key;
use order::KeyOrder;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Mutex, PoisonError};
pub(crate) use value::Value;

/// One table of the working state.
///
/// Entries are in hash maps (`TableData`): a put or get costs one hash probe, not a walk down a tree.
/// The key order that range scans need is worked out on the first scan and kept up to date
/// by writes that add or remove keys (see `order.rs`); updates of existing keys never touch
/// it. It sits behind its own lock so scans can build it through a shared reference (a
/// checkpoint view's tables are shared between threads); writers have `&mut` and never wait
/// for that lock.
pub(crate) struct TableState {
    data: TableData,
    /// `None` until the first scan, and again whenever writes wore it out.
    order: Mutex<Option<KeyOrder>>,
    /// The base checkpoint holds no entry of this table (a new table, or one restored
    /// empty), so every entry is dirty and no delete needs a tombstone: `dirty` stays empty
    /// and writes track nothing but `dirty_bytes`. A table being loaded thus holds its keys
    /// once, not a second time in the dirty set. Cleared by the first capture.
    whole_dirty: bool,
    /// The dirty keys when `whole_dirty` is false.
    dirty: HashMap<Key, Dirty>,
    /// Key and value bytes of the dirty set (tombstones count their key; when `whole_dirty`,
    /// the bytes of the table's entries).
    dirty_bytes: usize,
}

impl Default for TableState {
    /// A new table: empty, and so are its entries in the base checkpoint.
    fn default() -> Self {
        TableState::restored(TableData::default())
    }
}

/// A table's dirty set, taken for a checkpoint and turned into entries
/// ([`DirtySet::into_entries`]) by the background pipeline.
pub(crate) enum DirtySet {
    /// The dirty keys, taken whole: O(1) on the caller's thread.
    Keys(HashMap<Key, Dirty>),
    /// Every entry of a whole-dirty table, captured as it was: O(entries) on the caller's
    /// thread, which here is O(dirty). Values are shared, not copied.
    Whole(CapturedEntries),
}

impl DirtySet {
    /// Every key written since the base checkpoint with its current value, or a tombstone if
    /// the base had it and it is now gone (a key put then deleted that the base never had
    /// writes nothing).
    pub(crate) fn into_entries(self) -> CapturedEntries {
        let keys = match self {
            DirtySet::Whole(entries) => return entries,
            DirtySet::Keys(keys) => keys,
        };
        let mut out = Vec::with_capacity(keys.len());
        for (key, d) in keys {
            match d.value {
                Some(v) => out.push((key, Some(v))),
                None if d.base_had_it => out.push((key, None)),
                None => {}
            }
        }
        out
    }
}

/// A key written since the base checkpoint.
pub(crate) struct Dirty {
    /// Whether the base checkpoint had the key.
    base_had_it: bool,
    /// Its current value (`None`: deleted), shared with the table. Kept here so capture
    /// needs no lookup in `data`: `put` pays for the table lookup anyway, capture then only
    /// drains this map.
    value: Option<Value>,
}

/// Entries captured from one table for a checkpoint (or read back to be merged): each key
/// once, in no particular order; `None` is a tombstone.
pub(crate) type CapturedEntries = Vec<(Key, Option<Value>)>;

impl TableState {
    /// A table holding `data` as its checkpointed state (nothing dirty).
    pub(crate) fn restored(data: TableData) -> Self {
        let whole_dirty = data.len() == 0;
        TableState { data, order: Mutex::new(None), whole_dirty, dirty: HashMap::new(), dirty_bytes: 0 }
    }

    pub(crate) fn get(&self, key: &[u8]) -> Option<&Value> {
        self.data.get(key)
    }

    pub(crate) fn len(&self) -> usize {
        self.data.len()
    }

    pub(crate) fn dirty_len(&self) -> usize {
        if self.whole_dirty {
            self.data.len()
        } else {
            self.dirty.len()
        }
    }

    pub(crate) fn dirty_bytes(&self) -> usize {
        self.dirty_bytes
    }

    /// Record that `key` now has `value` (`None`: deleted); `present_before` says whether the
    /// working state had it just before this write, which for a key not yet dirty is whether
    /// the base checkpoint had it.
    fn mark_dirty(&mut self, key: &[u8], present_before: bool, value: Option<Value>) {
        let new_len = value.as_ref().map_or(0, |v| v.len());
        // Whichever of the two closures runs takes the value.
        let value = std::cell::Cell::new(value);
        self.dirty_bytes = upsert(
            &mut self.dirty,
            key,
            |d| {
                let old_len = d.value.as_ref().map_or(0, |v| v.len());
                d.value = value.take();
                self.dirty_bytes - old_len + new_len
            },
            || (Dirty { base_had_it: present_before, value: value.take() }, self.dirty_bytes + key.len() + new_len),
        );
    }

    pub(crate) fn put(&mut self, key: &[u8], value: &[u8]) {
        // A whole-dirty table tracks no value, so it takes no extra reference to one.
        let share = !self.whole_dirty;
        let (old_len, shared) = upsert(
            self.data.shard_mut(key),
            key,
            |slot| {
                let old_len = slot.len();
                match Value::get_mut(slot) {
                    // Held by nothing else (not dirty, not captured): overwrite in place.
                    Some(buf) if buf.len() == value.len() => buf.copy_from_slice(value),
                    _ => *slot = Value::from(value),
                }
                (Some(old_len), share.then(|| slot.clone()))
            },
            || {
                let shared = Value::from(value);
                let tracked = share.then(|| shared.clone());
                (shared, (None, tracked))
            },
        );
        if old_len.is_none() {
            self.keys_changed(|order| order.inserted(key));
        }
        match shared {
            Some(shared) => self.mark_dirty(key, old_len.is_some(), Some(shared)),
            None => {
                self.dirty_bytes = match old_len {
                    Some(old) => self.dirty_bytes.saturating_sub(old) + value.len(),
                    None => self.dirty_bytes + key.len() + value.len(),
                }
            }
        }
    }

    /// Delete `key`; returns whether it was present.
    pub(crate) fn delete(&mut self, key: &[u8]) -> bool {
        let removed = self.data.remove(key);
        let present = removed.is_some();
        if present {
            self.keys_changed(|order| order.removed(key));
        }
        if self.whole_dirty {
            // The base never had it: nothing to write.
            self.dirty_bytes = self.dirty_bytes.saturating_sub(removed.map_or(0, |v| key.len() + v.len()));
        } else if present || self.dirty.contains_key(key) {
            self.mark_dirty(key, present, None);
        }
        present
    }

    /// Tell a built key order that the key set changed; drop it if it says it is worn out.
    fn keys_changed(&mut self, change: impl FnOnce(&mut KeyOrder) -> bool) {
        let order = self.order.get_mut().unwrap_or_else(PoisonError::into_inner);
        if order.as_mut().is_some_and(|o| !change(o)) {
            *order = None;
        }
    }

    /// The pairs with keys within the bounds, in key order.
    pub(crate) fn range(&self, lower: Bound<&[u8]>, upper: Bound<&[u8]>) -> Vec<(Vec<u8>, Vec<u8>)> {
        if let (Bound::Included(l) | Bound::Excluded(l), Bound::Included(u) | Bound::Excluded(u)) = (lower, upper) {
            // An inverted range holds nothing (and would make a BTreeSet range panic).
            if l > u || (l == u && (matches!(lower, Bound::Excluded(_)) || matches!(upper, Bound::Excluded(_)))) {
                return Vec::new();
            }
        }
        // The lock only guards building the order; a panic cannot leave it half built
        // (it is assigned whole), so a poisoned lock is still sound to use.
        let mut order = self.order.lock().unwrap_or_else(PoisonError::into_inner);
        let order = order.get_or_insert_with(|| KeyOrder::build(self.data.keys()));
        order
            .range(lower, upper)
            .filter_map(|k| self.data.get(k.as_slice()).map(|v| (k.as_slice().to_vec(), v.to_vec())))
            .collect()
    }

    /// Take the dirty set whole (O(1)). From now on the working state's base is the state at
    /// this instant, which the checkpoint taking the set will commit.
    pub(crate) fn take_dirty(&mut self) -> DirtySet {
        self.dirty_bytes = 0;
        if std::mem::take(&mut self.whole_dirty) {
            return DirtySet::Whole(share_every_entry(&self.data));
        }
        DirtySet::Keys(std::mem::take(&mut self.dirty))
    }

    /// Put the keys of a dirty set taken by a checkpoint that did not commit back into the
    /// dirty set, so the next checkpoint writes them. Their current values are written (a
    /// later write already is); each is marked as possibly in the base, so a key now absent
    /// gets a tombstone (a tombstone for a key the base never had is harmless).
    pub(crate) fn restore_dirty<'k>(&mut self, keys: impl Iterator<Item = &'k [u8]>) {
        if self.whole_dirty {
            // Every key is dirty already, and the base has none of them.
            return;
        }
        for key in keys {
            match self.dirty.get_mut(key) {
                Some(d) => d.base_had_it = true,
                None => {
                    let value = self.data.get(key).cloned();
                    self.dirty_bytes += key.len() + value.as_ref().map_or(0, |v| v.len());
                    self.dirty.insert(Key::from(key), Dirty { base_had_it: true, value });
                }
            }
        }
    }
}

/// Every entry of `data`, each value shared (not copied): a whole-dirty table's capture.
///
/// Sharing a value increments its count, an atomic write to wherever the table allocated it:
/// a cache miss each, and one at a time, since an atomic write waits for every memory access
/// before it (the capture of a 1M-key load took 131-185 ms here that way, 62-73 ms with
/// groups of 32). So the values of a group are first read with plain loads, whose misses are
/// in flight together, and then shared.
fn share_every_entry(data: &TableData) -> CapturedEntries {
    let mut out = Vec::with_capacity(data.len());
    let mut entries = data.iter();
    let mut group = Vec::with_capacity(SHARE_AHEAD);
    loop {
        group.extend(entries.by_ref().take(SHARE_AHEAD));
        if group.is_empty() {
            return out;
        }
        let mut touched = 0u8;
        for (_, value) in &group {
            touched = touched.wrapping_add(value.first().copied().unwrap_or(0));
        }
        std::hint::black_box(touched);
        out.extend(group.drain(..).map(|(k, v): (&Key, &Value)| (k.clone(), Some(v.clone()))));
    }
}

/// Values read ahead together by [`share_every_entry`].
const SHARE_AHEAD: usize = 32;

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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        Put(u16, u8),
        Delete(u16),
        Range(Option<(u16, bool)>, Option<(u16, bool)>),
    }

    fn key(k: u16) -> Vec<u8> {
        k.to_be_bytes().to_vec()
    }

    fn bound(b: &Option<(u16, bool)>) -> Bound<Vec<u8>> {
        match b {
            None => Bound::Unbounded,
            Some((k, true)) => Bound::Included(key(*k)),
            Some((k, false)) => Bound::Excluded(key(*k)),
        }
    }

    fn op(keys: u16) -> impl Strategy<Value = Op> {
        let b = proptest::option::of((0..keys, any::<bool>()));
        prop_oneof![
            4 => (0..keys, any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
            3 => (0..keys).prop_map(Op::Delete),
            1 => (b.clone(), b).prop_map(|(l, u)| Op::Range(l, u)),
        ]
    }

    /// Run `ops` against a table and a BTreeMap model; every scan must agree with the model.
    fn check(ops: &[Op]) {
        let mut table = TableState::default();
        let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Put(k, v) => {
                    table.put(&key(*k), &[*v]);
                    model.insert(key(*k), vec![*v]);
                }
                Op::Delete(k) => assert_eq!(table.delete(&key(*k)), model.remove(&key(*k)).is_some()),
                Op::Range(l, u) => {
                    let (l, u) = (bound(l), bound(u));
                    let got = table.range(l.as_ref().map(Vec::as_slice), u.as_ref().map(Vec::as_slice));
                    let inverted = match (&l, &u) {
                        (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) => {
                            a > b || (a == b && !(matches!(l, Bound::Included(_)) && matches!(u, Bound::Included(_))))
                        }
                        _ => false,
                    };
                    let want: Vec<(Vec<u8>, Vec<u8>)> = if inverted {
                        Vec::new()
                    } else {
                        model.range((l, u)).map(|(k, v)| (k.clone(), v.clone())).collect()
                    };
                    assert_eq!(got, want);
                }
            }
            assert_eq!(table.len(), model.len());
        }
        let all = table.range(Bound::Unbounded, Bound::Unbounded);
        assert_eq!(all, model.into_iter().collect::<Vec<_>>());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Few keys: scans see deletes and re-inserts of keys the built order already holds.
        #[test]
        fn scans_agree_with_an_ordered_model(ops in proptest::collection::vec(op(24), 1..200)) {
            check(&ops);
        }
    }

    #[test]
    fn writes_of_short_and_long_keys_keep_the_table_and_the_dirty_set_exact() {
        // Keys on both sides of the inline limit (30 bytes), which take different paths.
        let keys: Vec<Vec<u8>> =
            [1usize, 16, 29, 30, 31, 64].iter().flat_map(|&len| (0u8..3).map(move |i| vec![i; len])).collect();
        let mut table = TableState::default();
        let in_base = |i: usize| i % 3 != 2;
        for (i, k) in keys.iter().enumerate().filter(|(i, _)| in_base(*i)) {
            table.put(k, &[i as u8; 4]);
        }
        let _base = table.take_dirty();
        assert_eq!(table.dirty_bytes(), 0);
        for (i, k) in keys.iter().enumerate() {
            table.put(k, &[i as u8; 3]);
            // A second write of a dirty key, of another length: no in-place overwrite.
            table.put(k, &[i as u8 + 100; 5]);
        }
        for k in keys.iter().step_by(2) {
            assert!(table.delete(k));
        }
        let mut expected_bytes = 0;
        let mut expected: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let deleted = i % 2 == 0;
            assert_eq!(table.get(k).map(|v| v.to_vec()), (!deleted).then(|| vec![i as u8 + 100; 5]), "key {i}");
            expected_bytes += k.len() + if deleted { 0 } else { 5 };
            match (deleted, in_base(i)) {
                (false, _) => expected.push((k.clone(), Some(vec![i as u8 + 100; 5]))),
                (true, true) => expected.push((k.clone(), None)),
                (true, false) => {}
            }
        }
        assert_eq!(table.len(), keys.len() / 2);
        assert_eq!(table.dirty_len(), keys.len());
        assert_eq!(table.dirty_bytes(), expected_bytes);
        let mut got: Vec<(Vec<u8>, Option<Vec<u8>>)> = table
            .take_dirty()
            .into_entries()
            .into_iter()
            .map(|(k, v)| (k.as_slice().to_vec(), v.map(|v| v.to_vec())))
            .collect();
        got.sort();
        expected.sort();
        assert_eq!(got, expected);
    }

    fn captured(set: DirtySet) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        let mut got: Vec<_> =
            set.into_entries().into_iter().map(|(k, v)| (k.as_slice().to_vec(), v.map(|v| v.to_vec()))).collect();
        got.sort();
        got
    }

    #[test]
    fn a_new_table_is_whole_dirty_until_its_first_capture() {
        let mut table = TableState::default();
        table.put(b"a", b"1");
        table.put(b"b", b"22");
        table.put(b"b", b"333"); // overwrite: counts its new length
        table.put(b"c", b"4");
        assert!(table.delete(b"c")); // the base never had it: nothing to write
        assert!(!table.delete(b"zz"));
        assert!(table.dirty.is_empty(), "a whole-dirty table keeps no dirty set");
        assert_eq!(table.dirty_len(), 2);
        assert_eq!(table.dirty_bytes(), (1 + 1) + (1 + 3));
        let first = table.take_dirty();
        assert!(matches!(first, DirtySet::Whole(_)));
        assert_eq!(captured(first), vec![(b"a".to_vec(), Some(b"1".to_vec())), (b"b".to_vec(), Some(b"333".to_vec()))]);
        // The base now has "a" and "b": dirty tracking as usual, tombstones included.
        assert_eq!((table.dirty_len(), table.dirty_bytes()), (0, 0));
        assert!(table.delete(b"a"));
        table.put(b"d", b"5");
        table.put(b"e", b"6");
        assert!(table.delete(b"e"));
        let second = table.take_dirty();
        assert!(matches!(second, DirtySet::Keys(_)));
        assert_eq!(captured(second), vec![(b"a".to_vec(), None), (b"d".to_vec(), Some(b"5".to_vec()))]);
        // A failed capture of a whole-dirty table comes back as ordinary dirty keys.
        let mut again = TableState::restored(TableData::default());
        again.put(b"x", b"7");
        let lost = again.take_dirty();
        again.restore_dirty(captured(lost).iter().map(|(k, _)| k.as_slice()));
        assert!(again.delete(b"x"));
        assert_eq!(captured(again.take_dirty()), vec![(b"x".to_vec(), None)]);
    }

    #[test]
    fn a_whole_dirty_capture_shares_every_entry_whatever_the_group_fill() {
        // Sizes around the read-ahead group: none, part of one, one, one and one more, many.
        for n in [0usize, 1, SHARE_AHEAD - 1, SHARE_AHEAD, SHARE_AHEAD + 1, 3 * SHARE_AHEAD + 5] {
            let mut table = TableState::default();
            let pair = |i: usize| (format!("key{i:04}").into_bytes(), format!("value{i:04}").into_bytes());
            for i in 0..n {
                let (k, v) = pair(i);
                table.put(&k, &v);
            }
            let set = table.take_dirty();
            // Overwritten after the capture with a value of the same length: written in place
            // only if the captured value were not shared.
            for i in 0..n {
                table.put(&pair(i).0, format!("later{i:04}").as_bytes());
            }
            let expected: Vec<_> = (0..n).map(|i| (pair(i).0, Some(pair(i).1))).collect();
            assert_eq!(captured(set), expected, "{n} entries");
        }
    }

    #[test]
    fn a_restored_table_with_entries_tracks_dirty_keys() {
        let mut data = TableData::default();
        data.insert(Key::from(&b"k"[..]), Value::from(&b"v"[..]));
        let mut table = TableState::restored(data);
        assert_eq!(table.dirty_len(), 0);
        assert!(table.delete(b"k"));
        assert_eq!(captured(table.take_dirty()), vec![(b"k".to_vec(), None)]);
    }

    #[test]
    fn the_order_survives_being_worn_out_and_rebuilt() {
        // Enough inserts and deletes between scans to pass the slack and drop the order.
        let mut ops = Vec::new();
        let mut x = 7u32;
        for round in 0..6u16 {
            for _ in 0..3_000 {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                let k = (x >> 8) as u16 % 5_000;
                ops.push(if (x >> 4).is_multiple_of(3) { Op::Delete(k) } else { Op::Put(k, round as u8) });
            }
            ops.push(Op::Range(Some((round * 500, true)), Some((round * 500 + 900, false))));
            ops.push(Op::Range(None, None));
        }
        check(&ops);
    }
}

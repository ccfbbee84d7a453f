//! `TableData`: a table's entries, in a few hash maps (shards) chosen by a cheap hash of the
//! key, so that a restore can fill the shards on separate threads (see
//! `version::materialize_table`). Every other operation touches exactly one shard.
//!
//! The shard hash only spreads keys between shards; each shard is a `HashMap` with the
//! standard randomly seeded hasher, so keys chosen to collide in the shard hash cost
//! parallelism at restore, never the maps' lookup time.

use super::{Key, Value};
use std::collections::HashMap;

/// Number of shards: one per core of the machine class cairn is tuned on (two).
pub(crate) const SHARDS: usize = 2;

/// The shard that holds `key` (always below [`SHARDS`]): a multiply-xor hash over its 8-byte
/// words.
pub(crate) fn shard_of(key: &[u8]) -> usize {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = key.len() as u64;
    let mut words = key.chunks_exact(8);
    for w in &mut words {
        let mut word = [0u8; 8];
        word.copy_from_slice(w);
        h = (h ^ u64::from_le_bytes(word)).wrapping_mul(K);
    }
    let mut tail = [0u8; 8];
    tail[..words.remainder().len()].copy_from_slice(words.remainder());
    h = (h ^ u64::from_le_bytes(tail)).wrapping_mul(K);
    h ^= h >> 29;
    (h.wrapping_mul(K) >> 32) as usize % SHARDS
}

/// A table's entries, unordered: key -> value, split over [`SHARDS`] maps by [`shard_of`].
#[derive(Default)]
pub(crate) struct TableData {
    shards: [HashMap<Key, Value>; SHARDS],
}

impl TableData {
    /// Room for about `entries` keys in all, without growing.
    pub(crate) fn with_capacity(entries: usize) -> Self {
        TableData { shards: std::array::from_fn(|_| HashMap::with_capacity(entries.div_ceil(SHARDS))) }
    }

    pub(crate) fn get(&self, key: &[u8]) -> Option<&Value> {
        self.shards[shard_of(key)].get(key)
    }

    /// The shard that holds or would hold `key`.
    pub(crate) fn shard_mut(&mut self, key: &[u8]) -> &mut HashMap<Key, Value> {
        &mut self.shards[shard_of(key)]
    }

    pub(crate) fn insert(&mut self, key: Key, value: Value) -> Option<Value> {
        self.shard_mut(key.as_slice()).insert(key, value)
    }

    pub(crate) fn remove(&mut self, key: &[u8]) -> Option<Value> {
        self.shard_mut(key).remove(key)
    }

    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(HashMap::len).sum()
    }

    /// Keys it can hold without growing.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.shards.iter().map(HashMap::capacity).sum()
    }

    /// Every entry, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Key, &Value)> {
        self.shards.iter().flat_map(HashMap::iter)
    }

    /// Every key, in no particular order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &Key> {
        self.shards.iter().flat_map(HashMap::keys)
    }

    /// The shards themselves, in shard order, for filling them in parallel: the map of shard
    /// `i` must only ever receive keys with `shard_of(key) == i`.
    pub(crate) fn shards_mut(&mut self) -> &mut [HashMap<Key, Value>; SHARDS] {
        &mut self.shards
    }
}

impl IntoIterator for TableData {
    type Item = (Key, Value);
    type IntoIter = std::iter::Flatten<std::array::IntoIter<HashMap<Key, Value>, SHARDS>>;

    fn into_iter(self) -> Self::IntoIter {
        self.shards.into_iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_spread_over_every_shard_and_stay_where_they_hash() {
        let mut counts = [0usize; SHARDS];
        let mut data = TableData::default();
        for i in 0u32..10_000 {
            let key = i.to_be_bytes();
            counts[shard_of(&key)] += 1;
            data.insert(Key::from(&key[..]), Value::from(&key[..]));
        }
        // Sequential integer keys, as a stream processor's ids often are, are spread evenly.
        assert!(counts.iter().all(|&c| c > 10_000 / SHARDS * 9 / 10), "{counts:?}");
        assert_eq!(data.len(), 10_000);
        for i in 0u32..10_000 {
            let key = i.to_be_bytes();
            assert_eq!(data.get(&key).map(|v| &v[..]), Some(&key[..]));
        }
        for (i, shard) in data.shards_mut().iter().enumerate() {
            assert!(shard.keys().all(|k| shard_of(k.as_slice()) == i));
        }
        assert_eq!(data.remove(&7u32.to_be_bytes()).as_deref(), Some(&7u32.to_be_bytes()[..]));
        assert_eq!(data.len(), 9_999);
        assert_eq!(data.into_iter().count(), 9_999);
    }

    #[test]
    fn the_shard_hash_reads_every_byte_of_short_and_long_keys() {
        // Keys differing only in their first byte, their last, or a byte of a partial word.
        for len in [1usize, 7, 8, 9, 16, 17, 40] {
            let spread: std::collections::HashSet<usize> = (0u8..64)
                .flat_map(|b| {
                    let mut first = vec![0u8; len];
                    first[0] = b;
                    let mut last = vec![0u8; len];
                    last[len - 1] = b;
                    [shard_of(&first), shard_of(&last)]
                })
                .collect();
            assert_eq!(spread.len(), SHARDS, "keys of {len} bytes all land in one shard");
        }
    }
}

//! `Key`: a table key stored inline when short.
//!
//! A `Vec<u8>` key lives in its own allocation, so every comparison during a lookup follows a
//! pointer (a cache miss in a large table) and every key costs an allocation. Keys of up to
//! [`INLINE_LEN`] bytes (the standard workload's are 16) live inside the hash map's slots
//! (and the dirty set's, and the key order's) instead.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::hash_map::{Entry, HashMap};
use std::hash::{Hash, Hasher};

/// Longest key stored inline.
pub(crate) const INLINE_LEN: usize = 30;

#[derive(Clone)]
pub(crate) enum Key {
    Inline { len: u8, bytes: [u8; INLINE_LEN] },
    Heap(Box<[u8]>),
}

const _: () = assert!(INLINE_LEN <= u8::MAX as usize);

impl Key {
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => bytes.get(..usize::from(*len)).unwrap_or_default(),
            Key::Heap(b) => b,
        }
    }
}

impl From<&[u8]> for Key {
    fn from(key: &[u8]) -> Self {
        if key.len() <= INLINE_LEN {
            let mut bytes = [0u8; INLINE_LEN];
            bytes[..key.len()].copy_from_slice(key);
            Key::Inline { len: key.len() as u8, bytes }
        } else {
            Key::Heap(key.into())
        }
    }
}

/// Update `key`'s slot in `map` with `present`, or fill a new one from `absent`: one hash and
/// one probe either way for an inline key (the common case), where a lookup then an insert
/// would cost two. A longer key is looked up first, so updating it allocates nothing.
pub(crate) fn upsert<V, R>(
    map: &mut HashMap<Key, V>,
    key: &[u8],
    present: impl FnOnce(&mut V) -> R,
    absent: impl FnOnce() -> (V, R),
) -> R {
    if key.len() <= INLINE_LEN {
        return match map.entry(Key::from(key)) {
            Entry::Occupied(mut slot) => present(slot.get_mut()),
            Entry::Vacant(slot) => {
                let (value, r) = absent();
                slot.insert(value);
                r
            }
        };
    }
    if let Some(slot) = map.get_mut(key) {
        return present(slot);
    }
    let (value, r) = absent();
    map.insert(Key::from(key), value);
    r
}

// Equality, order and hash are those of the byte slice, so `[u8]` can look keys up (Borrow).
impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_slice().fmt(f)
    }
}

impl Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Key {}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_slice().cmp(other.as_slice())
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn order_and_lookup_match_byte_slices_across_the_inline_limit() {
        let keys: Vec<Vec<u8>> =
            vec![vec![], vec![0], vec![0; 30], vec![0; 31], vec![1], vec![0xff; 40], vec![0xff; 29]];
        let mut map = BTreeMap::new();
        for k in &keys {
            map.insert(Key::from(k.as_slice()), k.clone());
        }
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(map.values().cloned().collect::<Vec<_>>(), sorted);
        for k in &keys {
            assert_eq!(map.get(k.as_slice()), Some(k));
        }
        assert!(matches!(Key::from(&[7u8; 30][..]), Key::Inline { .. }));
        assert!(matches!(Key::from(&[7u8; 31][..]), Key::Heap(_)));
    }
}

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

/// Longest key stored inline: as many bytes as fit with the length and the tag in three
/// words (a `u64` id behind a 14-byte prefix still does). It was 30 (a four-word key) until
/// the table's slots were shrunk to half a cache line; longer keys cost an allocation and a
/// pointer to follow per comparison.
pub(crate) const INLINE_LEN: usize = 22;

#[derive(Clone)]
pub(crate) enum Key {
    /// `bytes[..len]` is the key; every byte past `len` is zero (the order relies on it).
    Inline {
        len: u8,
        bytes: [u8; INLINE_LEN],
    },
    Heap(Box<[u8]>),
}

// `len` fits a byte, and `inline_words` covers the inline bytes with two 16-byte words.
const _: () = assert!(INLINE_LEN >= 16 && INLINE_LEN <= 32);
// With the tag, the inline variant fills three words: a table slot (key and a one-word
// `Value`) is 32 bytes, two to a cache line.
const _: () = assert!(std::mem::size_of::<Key>() == 24);

impl Key {
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => bytes.get(..usize::from(*len)).unwrap_or_default(),
            Key::Heap(b) => b,
        }
    }

    /// The key's first 8 bytes, zero-padded, as a big-endian integer: keys with smaller
    /// prefixes are smaller keys (equal prefixes decide nothing), so a sort can bucket by it.
    pub(crate) fn prefix(&self) -> u64 {
        let mut first = [0u8; 8];
        match self {
            Key::Inline { bytes, .. } => first.copy_from_slice(&bytes[..8]),
            Key::Heap(b) => {
                let n = b.len().min(8);
                first[..n].copy_from_slice(&b[..n]);
            }
        }
        u64::from_be_bytes(first)
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
    /// The order of the byte slices. Two inline keys compare as their zero-padded arrays, then
    /// by length: where the padded arrays first differ, either both keys have a real byte
    /// there (the slices differ there too) or the one with the padding zero has ended, which
    /// makes it the smaller slice; equal padded arrays mean one key is the other followed by
    /// zero bytes, so the shorter is smaller. Comparing them as two big-endian integers each
    /// costs no call and no branch per byte (a checkpoint's sort is mostly these compares).
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Key::Inline { len: a_len, bytes: a }, Key::Inline { len: b_len, bytes: b }) => {
                inline_words(a).cmp(&inline_words(b)).then(a_len.cmp(b_len))
            }
            _ => self.as_slice().cmp(other.as_slice()),
        }
    }
}

/// An inline key's zero-padded bytes as two big-endian integers, in the slices' order.
fn inline_words(bytes: &[u8; INLINE_LEN]) -> (u128, u128) {
    let mut high = [0u8; 16];
    let mut low = [0u8; 16];
    let (first, rest) = bytes.split_at(16);
    high.copy_from_slice(first);
    low[..rest.len()].copy_from_slice(rest);
    (u128::from_be_bytes(high), u128::from_be_bytes(low))
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
            vec![vec![], vec![0], vec![0; 22], vec![0; 23], vec![1], vec![0xff; 40], vec![0xff; 21]];
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
        assert!(matches!(Key::from(&[7u8; INLINE_LEN][..]), Key::Inline { .. }));
        assert!(matches!(Key::from(&[7u8; INLINE_LEN + 1][..]), Key::Heap(_)));
    }

    #[test]
    fn key_order_is_the_byte_order_around_zeros_and_word_edges() {
        // Keys made of few distinct bytes (zero among them), of every length around the word
        // edge (16) and the inline limit, so prefixes, trailing zeros and ties all occur.
        let mut keys: Vec<Vec<u8>> = vec![vec![]];
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for len in 0usize..=34 {
            for _ in 0..24 {
                let key: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        [0u8, 0, 1, 0xff][(x % 4) as usize]
                    })
                    .collect();
                // The key followed by a zero: equal padded bytes, a different length.
                let mut longer = key.clone();
                longer.push(0);
                keys.extend([key, longer]);
            }
            keys.push(vec![0; len]);
        }
        for a in &keys {
            for b in &keys {
                let (ka, kb) = (Key::from(a.as_slice()), Key::from(b.as_slice()));
                assert_eq!(ka.cmp(&kb), a.cmp(b), "{a:?} vs {b:?}");
                assert_eq!(ka == kb, a == b);
            }
        }
    }
}

//! Sorting a run's entries by key: into buckets by a few bits of each key's first bytes,
//! then each bucket by comparison.
//!
//! Why: a comparison sort of a checkpoint's entries mispredicts about every other comparison
//! (random keys), and it was most of a half's cutting time (about 0.5 of 0.9 ms for 5,000
//! entries of the standard workload). Bucketing is two linear passes; with about one bucket
//! per entry, the buckets left to sort hold one or two entries each. Keys that share their
//! first bytes fall into few buckets, which are then sorted by comparison as before: never
//! much slower than sorting them whole, and the result is the same order.
//!
//! Measured (`cairn bench --rounds 100`, five interleaved pairs): encode p50 1.23-1.31 ms
//! (median 1.28) against 1.51-1.86 ms (median 1.71) with the comparison sort, the run sorted
//! whole before its split instead of split by selection then sorted by halves.

use super::by_key;
use crate::state::{CapturedEntries, Key};

/// Below this many entries a comparison sort is as quick.
const BUCKETS_MIN_ENTRIES: usize = 64;

/// Above this many (a load's run) the comparison sort is kept: the bucketing's moves go to
/// random places in the whole run, and that case was not measured. A checkpoint's run up
/// to the split bound (`SPLIT_MAX_ENTRIES`) is bucketed.
const BUCKETS_MAX_ENTRIES: usize = 1 << 18;

/// Most bits a bucket number takes (65,536 buckets).
const BUCKET_BITS_MAX: u32 = 16;

/// Sort `entries` by key (each key once), into the order `entries.sort_unstable_by(by_key)`
/// gives.
pub(super) fn sort_by_key(entries: &mut CapturedEntries) {
    let n = entries.len();
    if !(BUCKETS_MIN_ENTRIES..=BUCKETS_MAX_ENTRIES).contains(&n) {
        entries.sort_unstable_by(by_key);
        return;
    }
    let first = entries.first().map_or(0, |(key, _)| key.prefix());
    // The bits where some prefix differs from the first: above the highest of them every
    // prefix is the same.
    let varying = entries.iter().fold(0, |acc, (key, _)| acc | (key.prefix() ^ first));
    // Bits down to and including the highest varying one.
    let top = u64::BITS - varying.leading_zeros();
    // About one bucket per entry, from the highest varying bit down.
    let bits = (usize::BITS - n.leading_zeros()).min(BUCKET_BITS_MAX).min(top);
    if bits == 0 {
        // Every prefix the same: nothing to bucket by.
        entries.sort_unstable_by(by_key);
        return;
    }
    let shift = top - bits;
    let mask = (1u64 << bits) - 1;
    // Prefixes agree above bit `top`, so a smaller bucket number means a smaller prefix, which
    // means a smaller key (`Key::prefix`).
    let bucket = |(key, _): &(Key, _)| ((key.prefix() >> shift) & mask) as usize;
    // `starts[b]`: where bucket b begins in the sorted order; the last, the number of entries.
    let mut starts = vec![0usize; (1 << bits) + 1];
    for entry in entries.iter() {
        starts[bucket(entry) + 1] += 1;
    }
    for b in 1..starts.len() {
        starts[b] += starts[b - 1];
    }
    // `sources[i]`: which entry goes to position i.
    let mut next = starts.clone();
    let mut sources = vec![0usize; n];
    for (i, entry) in entries.iter().enumerate() {
        let at = &mut next[bucket(entry)];
        sources[*at] = i;
        *at += 1;
    }
    permute(entries, &mut sources);
    for bounds in starts.windows(2) {
        if let [start, end] = *bounds {
            if end - start > 1 {
                entries[start..end].sort_unstable_by(by_key);
            }
        }
    }
}

/// Move entry `sources[i]` to position i, for every i, in place (`sources` is a permutation;
/// it is used up). Each cycle of the permutation is followed from its first position: the
/// entry first there travels along the cycle by swaps, every other lands where it belongs.
fn permute(entries: &mut CapturedEntries, sources: &mut [usize]) {
    for start in 0..sources.len() {
        let mut i = start;
        // `sources[i] == i`: in place already, or placed by an earlier cycle.
        while sources[i] != i {
            let from = sources[i];
            sources[i] = i;
            if from == start {
                // The entry first at `start` has travelled to `i`: it belongs here.
                break;
            }
            entries.swap(i, from);
            i = from;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Value;
    use proptest::prelude::*;

    /// `keys` (duplicates dropped) as entries in reverse order, each valued with its own
    /// bytes: the bucketed sort must give the byte order of the keys, each value still
    /// with its key.
    fn check(keys: &[Vec<u8>]) {
        let mut unique = keys.to_vec();
        unique.sort();
        unique.dedup();
        let entries = || -> CapturedEntries {
            unique.iter().rev().map(|k| (Key::from(k.as_slice()), Some(Value::from(k.as_slice())))).collect()
        };
        let mut bucketed = entries();
        sort_by_key(&mut bucketed);
        let got: Vec<(Vec<u8>, Vec<u8>)> = bucketed
            .iter()
            .map(|(k, v)| (k.as_slice().to_vec(), v.as_ref().map(|v| v.to_vec()).unwrap_or_default()))
            .collect();
        let want: Vec<(Vec<u8>, Vec<u8>)> = unique.iter().map(|k| (k.clone(), k.clone())).collect();
        assert_eq!(got, want);
    }

    fn xorshift(x: &mut u64) -> u64 {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    #[test]
    fn random_keys_sort_as_by_comparison() {
        let mut x = 0x9e37_79b9_7f4a_7c15;
        for n in [0, 1, 63, 64, 65, 1000, 5000, 70_000] {
            let keys: Vec<Vec<u8>> = (0..n).map(|_| xorshift(&mut x).to_be_bytes().repeat(2)).collect();
            check(&keys);
        }
    }

    #[test]
    fn keys_sharing_their_first_bytes_sort_as_by_comparison() {
        // A common prefix of every length around the 8 bytes bucketed by, ids after it; keys
        // equal in their padded prefix (a key and itself followed by zeros); short, empty and
        // heap keys.
        let mut x = 0x2545_f491_4f6c_dd1d;
        for common in [0usize, 3, 7, 8, 9, 16, 30] {
            let mut keys: Vec<Vec<u8>> = Vec::new();
            for id in 0..500u64 {
                let mut key = vec![b'k'; common];
                key.extend_from_slice(&(id * 7919 % 500).to_be_bytes());
                keys.push(key.clone());
                key.push(0);
                keys.push(key);
            }
            keys.extend((0..200).map(|_| {
                let len = (xorshift(&mut x) % 12) as usize;
                (0..len).map(|_| [0u8, 1, b'k', 0xff][(xorshift(&mut x) % 4) as usize]).collect()
            }));
            keys.push(Vec::new());
            check(&keys);
        }
        // Every key the same but for its length: one bucket.
        check(&(0..100).map(|n| vec![0u8; n]).collect::<Vec<_>>());
    }

    proptest! {
        #[test]
        fn any_keys_sort_as_by_comparison(keys in proptest::collection::vec(
            proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), Just(0x80u8), any::<u8>()], 0..26),
            0..400,
        )) {
            check(&keys);
        }
    }
}

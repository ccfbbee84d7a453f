//! Cutting sorted entries into chunks.
//!
//! Boundaries are content-defined: after each entry a cut is made with a probability that
//! grows with the entry's size, decided by a hash of its *key*. Equal runs of entries thus cut
//! at the same keys wherever they appear, so equal content makes equal chunks (and is stored
//! once) even when it is written again at another position, e.g. by a later merge.
//! A chunk is at least a quarter of the target (unless the input ends) and is ended as soon as
//! it reaches twice the target, so it is smaller than twice the target plus one entry.

/// FNV-1a over the key, then a 64-bit finalizer (fmix64) to spread the bits. Stable forever:
/// chunk boundaries, and so deduplication, depend on it.
pub(crate) fn key_hash(key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Whether to end the chunk after an entry of `entry_len` bytes with key hash `h`, the chunk
/// being `chunk_len` bytes long with it.
pub(crate) fn cut_after(h: u64, entry_len: usize, chunk_len: usize, target: usize) -> bool {
    if chunk_len >= 2 * target {
        return true;
    }
    if chunk_len < target / 4 {
        return false;
    }
    // Cut with probability ~ 2 * entry_len / target: on average a chunk gets target/2 bytes
    // past its minimum.
    let draw = u128::from(h >> 32) * target as u128;
    draw < ((2 * entry_len) as u128) << 32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cuts(keys: &[Vec<u8>], entry_len: usize, target: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut len = 0;
        for k in keys {
            len += entry_len;
            if cut_after(key_hash(k), entry_len, len, target) {
                out.push(k.clone());
                len = 0;
            }
        }
        out
    }

    #[test]
    fn chunk_sizes_stay_within_bounds_and_near_the_target() {
        let keys: Vec<Vec<u8>> = (0u64..100_000).map(|i| i.to_be_bytes().to_vec()).collect();
        let target = 4096;
        let cut_keys = cuts(&keys, 116, target);
        let mean = 100_000.0 * 116.0 / cut_keys.len() as f64;
        assert!(mean > target as f64 * 0.4 && mean < target as f64 * 1.2, "mean chunk {mean}");
    }

    #[test]
    fn boundaries_resynchronise_after_an_insertion() {
        let keys: Vec<Vec<u8>> = (0u64..20_000).map(|i| (i * 2).to_be_bytes().to_vec()).collect();
        let mut with_extra = keys.clone();
        with_extra.insert(10, 21u64.to_be_bytes().to_vec());
        let a = cuts(&keys, 116, 2048);
        let b = cuts(&with_extra, 116, 2048);
        let common = a.iter().filter(|k| b.contains(k)).count();
        assert!(common * 10 >= a.len() * 9, "only {common} of {} boundaries survive", a.len());
    }
}

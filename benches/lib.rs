//! Shared workload helpers for cairn's criterion benchmarks (see `../shared/BENCH.md`).

/// The standard 16-byte key: an 8-byte big-endian id followed by 8 bytes of a hash of the id.
pub fn key16(id: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&id.to_be_bytes());
    let h = id.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29) ^ 0xa076_1d64_78bd_642f;
    k[8..].copy_from_slice(&h.to_le_bytes());
    k
}

/// A deterministic pseudo-random 100-byte value for (id, round).
pub fn value100(id: u64, round: u64) -> [u8; 100] {
    let mut out = [0u8; 100];
    let mut x = id ^ round.rotate_left(32) ^ 0x2545_f491_4f6c_dd1d;
    for chunk in out.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let bytes = x.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
    out
}

/// A fresh directory on the real filesystem (not tmpfs if the temp dir is on disk), removed on drop.
pub struct BenchDir(pub std::path::PathBuf);

impl BenchDir {
    /// A unique directory under the system temp dir (or `$CAIRN_BENCH_DIR`).
    pub fn new(tag: &str) -> Self {
        let base = std::env::var_os("CAIRN_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        BenchDir(base.join(format!("cairn-bench-{tag}-{}-{nanos}", std::process::id())))
    }
}

impl Drop for BenchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

//! Shared workload helpers for cairn's criterion benchmarks and `cairn bench` (see
//! `../shared/BENCH.md`): the standard keys and values, scratch directories, and the
//! full-snapshot peer's file ([`snapshot`]).

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

/// The full-snapshot peer of `../shared/BENCH.md`: the whole state serialized to one new file,
/// fsynced and renamed into place, and read back into a `HashMap`. Each pair is stored as
/// its key's length and its value's length (one byte each), then the key, then the value.
pub mod snapshot {
    use std::collections::HashMap;
    use std::fs::File;
    use std::io::{self, Read, Write};
    use std::path::Path;

    /// The file's name in its directory.
    pub const FILE: &str = "snapshot";

    /// Append one pair to `buf`; keys and values of over 255 bytes are refused.
    pub fn push(buf: &mut Vec<u8>, key: &[u8], value: &[u8]) -> io::Result<()> {
        let len = |part: &[u8]| {
            u8::try_from(part.len())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a snapshot pair part over 255 bytes"))
        };
        buf.extend_from_slice(&[len(key)?, len(value)?]);
        buf.extend_from_slice(key);
        buf.extend_from_slice(value);
        Ok(())
    }

    /// Write `bytes` (pairs made by [`push`]) to `dir/snapshot.tmp`, fsync it, rename it to
    /// `dir/snapshot` and fsync `dir`.
    pub fn write(dir: &Path, bytes: &[u8]) -> io::Result<()> {
        let tmp = dir.join("snapshot.tmp");
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(FILE))?;
        File::open(dir)?.sync_all()
    }

    /// Read `dir/snapshot` into a map, a MiB at a time (so that the file's bytes and the map
    /// are not held whole together). A pair cut short is an `InvalidData` error.
    pub fn read(dir: &Path) -> io::Result<HashMap<Vec<u8>, Vec<u8>>> {
        let mut file = File::open(dir.join(FILE))?;
        let len = usize::try_from(file.metadata()?.len()).unwrap_or(usize::MAX);
        // Sized for pairs of the standard workload's 118 bytes (capped, should the file be huge).
        let mut map = HashMap::with_capacity((len / 118).min(1 << 27));
        // Larger than any pair (2 + 255 + 255 bytes), so what is left unparsed after a read
        // (part of one pair) always leaves room for the next read.
        let mut buf = vec![0u8; 1 << 20];
        let mut filled = 0;
        loop {
            let n = file.read(&mut buf[filled..])?;
            filled += n;
            let mut rest = &buf[..filled];
            while let [key_len, value_len, tail @ ..] = rest {
                let (key_len, value_len) = (usize::from(*key_len), usize::from(*value_len));
                // A pair not read whole yet stays in `rest` for the next read.
                let (Some(key), Some(value)) = (tail.get(..key_len), tail.get(key_len..key_len + value_len)) else {
                    break;
                };
                map.insert(key.to_vec(), value.to_vec());
                rest = &tail[key_len + value_len..];
            }
            let parsed = filled - rest.len();
            buf.copy_within(parsed..filled, 0);
            filled -= parsed;
            if n == 0 {
                return if filled == 0 {
                    Ok(map)
                } else {
                    Err(io::Error::new(io::ErrorKind::InvalidData, "the snapshot ends inside a pair"))
                };
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn pairs_round_trip_and_a_cut_file_is_an_error() -> io::Result<()> {
            let dir = crate::BenchDir::new("snapshot-test");
            std::fs::create_dir_all(&dir.0)?;
            let mut buf = Vec::new();
            for id in 0..100u64 {
                push(&mut buf, &crate::key16(id), &crate::value100(id, 1))?;
            }
            push(&mut buf, b"", b"")?;
            assert!(push(&mut buf.clone(), &[0u8; 256], b"").is_err());
            write(&dir.0, &buf)?;
            let map = read(&dir.0)?;
            assert_eq!(map.len(), 101);
            assert_eq!(map.get(&crate::key16(7)[..]).map(Vec::as_slice), Some(&crate::value100(7, 1)[..]));
            for cut in [1, 3, 17, buf.len() - 1] {
                write(&dir.0, &buf[..buf.len() - cut])?;
                assert_eq!(
                    read(&dir.0).map(|m| m.len()).map_err(|e| e.kind()),
                    Err(io::ErrorKind::InvalidData),
                    "cut {cut}"
                );
            }
            Ok(())
        }

        #[test]
        fn pairs_of_every_length_read_back_across_the_read_buffer() -> io::Result<()> {
            let dir = crate::BenchDir::new("snapshot-lengths");
            std::fs::create_dir_all(&dir.0)?;
            // About 2.7 MB: pairs of 10 to 512 bytes, so pairs straddle each MiB boundary.
            let pair = |id: u64| {
                let mut key = id.to_be_bytes().to_vec();
                key.resize(8 + (id % 248) as usize, 0xab);
                (key, vec![(id % 251) as u8; (id * 7 % 256) as usize])
            };
            let mut buf = Vec::new();
            for id in 0..10_000 {
                let (key, value) = pair(id);
                push(&mut buf, &key, &value)?;
            }
            assert!(buf.len() > 2 << 20, "{} bytes", buf.len());
            write(&dir.0, &buf)?;
            let map = read(&dir.0)?;
            assert_eq!(map.len(), 10_000);
            assert!((0..10_000).all(|id| {
                let (key, value) = pair(id);
                map.get(&key) == Some(&value)
            }));
            Ok(())
        }
    }
}

//! Delta chunks: an entries chunk stored as a patch against another stored chunk (its base).
//!
//! A merge replaces a key range of a table's base run with new chunks; the replaced chunks
//! stay live for as long as retention keeps a checkpoint older than the merge. Those old
//! chunks mostly hold the same entries as the new chunk for the same keys (only the entries
//! updated in between differ), so the GC may store such an old chunk as a patch against the
//! new one (codec [`Codec::Delta`](super::Codec::Delta)) instead of whole. Its name does not
//! change (blake3 of its raw bytes), so no manifest changes either: manifests stay immutable,
//! and a reader rebuilds the raw bytes and verifies them like any other chunk.
//!
//! Stored bytes (see `format-spec.md`, 3.6a):
//!
//! ```text
//! base: ChunkHash (32)      the chunk the patch copies from; never itself a delta chunk
//! ops, until the end:
//!   0x00 | offset (varint) | len (varint, >= 1)   copy base[offset .. offset + len]
//!   0x01 | len (varint, >= 1) | len bytes          insert the bytes
//! ```
//!
//! The ops append to the output in order; the output must come to exactly the chunk's raw
//! length, and its blake3 must be the chunk's name.

use super::segment::{check_stored_len, verified};
use super::{entry_ranges, invalid, put_varint, ChunkHash, Codec, DecodeError, Reader, SegmentChunk};
use std::ops::Range;

const OP_COPY: u8 = 0;
const OP_INSERT: u8 = 1;

/// Bytes before the ops: the base's hash.
pub const DELTA_HEADER_LEN: usize = 32;

/// The base named by a delta chunk's stored bytes (their first 32 bytes).
pub fn delta_base(stored: &[u8]) -> Result<ChunkHash, DecodeError> {
    Ok(ChunkHash(Reader::new(stored).array::<DELTA_HEADER_LEN>()?))
}

/// Rebuild a delta chunk's raw bytes from its stored bytes and its base's raw bytes, and
/// verify them against its name. `base` must be the raw bytes of the chunk
/// [`delta_base`] names (the caller reads and verifies it).
pub fn apply_delta(chunk: &SegmentChunk, stored: &[u8], base: &[u8]) -> Result<Vec<u8>, DecodeError> {
    check_stored_len(chunk, stored)?;
    if chunk.codec != Codec::Delta {
        return Err(invalid("delta chunk", "the chunk is not stored as a delta"));
    }
    let raw_len = chunk.raw_len as usize;
    let mut r = Reader::new(stored);
    r.take(DELTA_HEADER_LEN)?;
    let mut out = Vec::with_capacity(raw_len);
    while !r.is_empty() {
        let room = (raw_len - out.len()) as u64;
        match r.u8()? {
            OP_COPY => {
                let offset = r.varint()?;
                let len = r.varint_max("delta copy length", room)?;
                let from = usize::try_from(offset).ok();
                let copied = from
                    .and_then(|from| from.checked_add(len as usize).map(|to| from..to))
                    .and_then(|range| base.get(range))
                    .ok_or_else(|| invalid("delta copy", "outside the base chunk"))?;
                if copied.is_empty() {
                    return Err(invalid("delta copy", "empty"));
                }
                out.extend_from_slice(copied);
            }
            OP_INSERT => {
                let inserted = r.bytes_max("delta insert length", room as usize)?;
                if inserted.is_empty() {
                    return Err(invalid("delta insert", "empty"));
                }
                out.extend_from_slice(inserted);
            }
            other => return Err(invalid("delta op", format!("unknown op {other}"))),
        }
    }
    if out.len() != raw_len {
        return Err(invalid("delta chunk", "the patch does not rebuild the raw length"));
    }
    verified(chunk, out)
}

/// Stored bytes of `target` (an entries chunk) as a patch against `base` (another entries
/// chunk, named `base_hash`): each entry of `target` that `base` holds with the same bytes
/// is copied from it, the rest inserted. `None` if either is not a well-formed entries chunk
/// or the patch would not be under half of `target` (not worth a second read to restore it).
pub fn encode_delta(base_hash: &ChunkHash, base: &[u8], target: &[u8]) -> Option<Vec<u8>> {
    let base_entries = entry_ranges(base).ok()?;
    let target_entries = entry_ranges(target).ok()?;
    let mut patch = Patch { out: base_hash.0.to_vec(), copy: None, insert: None };
    // The kind byte (both are entries chunks).
    patch.copy(0..1, target);
    let mut b = base_entries.iter().peekable();
    for t in &target_entries {
        let key = target.get(t.key.clone())?;
        while b.next_if(|e| base.get(e.key.clone()).is_some_and(|k| k < key)).is_some() {}
        let same = b.peek().filter(|e| base.get(e.whole.clone()) == target.get(t.whole.clone()));
        match same {
            Some(e) => patch.copy(e.whole.clone(), target),
            None => patch.insert(t.whole.clone(), target),
        }
    }
    patch.flush(target);
    (patch.out.len() < target.len() / 2).then_some(patch.out)
}

/// Ops being written: adjacent copies of adjacent base bytes become one op, and so do
/// adjacent inserts.
struct Patch {
    out: Vec<u8>,
    /// The base bytes of the copy being extended.
    copy: Option<Range<usize>>,
    /// The target bytes of the insert being extended.
    insert: Option<Range<usize>>,
}

impl Patch {
    fn copy(&mut self, from: Range<usize>, target: &[u8]) {
        if let Some(c) = &mut self.copy {
            if c.end == from.start {
                c.end = from.end;
                return;
            }
        }
        self.flush(target);
        self.copy = Some(from);
    }

    fn insert(&mut self, bytes: Range<usize>, target: &[u8]) {
        if let Some(i) = &mut self.insert {
            i.end = bytes.end; // target entries are visited in order, back to back
            return;
        }
        self.flush(target);
        self.insert = Some(bytes);
    }

    fn flush(&mut self, target: &[u8]) {
        if let Some(c) = self.copy.take() {
            self.out.push(OP_COPY);
            put_varint(&mut self.out, c.start as u64);
            put_varint(&mut self.out, c.len() as u64);
        }
        if let Some(i) = self.insert.take() {
            self.out.push(OP_INSERT);
            put_varint(&mut self.out, i.len() as u64);
            self.out.extend_from_slice(target.get(i).unwrap_or_default());
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing, clippy::unwrap_used)]
    use super::*;
    use crate::format::{encode_entries_chunk, ChunkKind};

    fn chunk_of(entries: &[(Vec<u8>, Option<Vec<u8>>)]) -> Vec<u8> {
        encode_entries_chunk(entries.iter().map(|(k, v)| (k.as_slice(), v.as_deref())))
    }

    fn as_delta(stored: &[u8], raw: &[u8]) -> SegmentChunk {
        SegmentChunk {
            hash: ChunkHash::of(raw),
            offset: 0,
            stored_len: stored.len() as u32,
            raw_len: raw.len() as u32,
            codec: Codec::Delta,
            kind: ChunkKind::Entries,
        }
    }

    /// 200 entries of 100-byte values; `changed` picks the ones whose value differs.
    fn entries(changed: impl Fn(u32) -> bool) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        (0u32..200).map(|i| (i.to_be_bytes().to_vec(), Some(vec![if changed(i) { 7 } else { i as u8 }; 100]))).collect()
    }

    #[test]
    fn a_delta_copies_unchanged_entries_and_rebuilds_the_chunk_exactly() {
        let base = chunk_of(&entries(|_| false));
        let mut target_entries = entries(|i| i % 10 == 3);
        target_entries.remove(50); // a key the base has, gone
        target_entries[60].1 = None; // a tombstone
        target_entries.push((vec![0xff; 5], Some(b"new".to_vec()))); // a key the base lacks
        let target = chunk_of(&target_entries);
        let stored = encode_delta(&ChunkHash::of(&base), &base, &target).unwrap();
        // About a tenth of the entries are inserted; the rest are a few copy ops.
        assert!(stored.len() < target.len() / 5, "{} of {}", stored.len(), target.len());
        assert_eq!(delta_base(&stored).unwrap(), ChunkHash::of(&base));
        assert_eq!(apply_delta(&as_delta(&stored, &target), &stored, &base).unwrap(), target);
    }

    #[test]
    fn a_delta_is_refused_when_not_worth_a_second_read_or_not_of_entries() {
        let base = chunk_of(&entries(|_| false));
        let unrelated = chunk_of(&entries(|_| true));
        assert_eq!(encode_delta(&ChunkHash::of(&base), &base, &unrelated), None);
        assert_eq!(encode_delta(&ChunkHash::of(&base), &[2, 0], &base), None, "a run index is no base");
        assert_eq!(encode_delta(&ChunkHash::of(&base), &base, &base[..base.len() - 1]), None, "torn target");
    }

    #[test]
    fn a_damaged_delta_or_the_wrong_base_is_an_error() {
        let base = chunk_of(&entries(|_| false));
        let target = chunk_of(&entries(|i| i == 9));
        let stored = encode_delta(&ChunkHash::of(&base), &base, &target).unwrap();
        let chunk = as_delta(&stored, &target);
        // Another base of the same length rebuilds other bytes: the hash catches it.
        let other = chunk_of(&entries(|i| i == 100));
        assert_eq!(apply_delta(&chunk, &stored, &other), Err(DecodeError::Checksum("chunk content (blake3)")));
        // Every byte of the ops flipped, and every cut: an error, never a panic or a wrong chunk.
        for i in DELTA_HEADER_LEN..stored.len() {
            let mut bad = stored.clone();
            bad[i] ^= 0x41;
            assert!(apply_delta(&chunk, &bad, &base).is_err(), "byte {i}");
            let cut = &stored[..i];
            assert!(apply_delta(&as_delta(cut, &target), cut, &base).is_err(), "cut at {i}");
        }
        // Hand-made ops: out of the base, empty, unknown, too long for the raw length.
        let ops = |ops: &[u8]| [&[0u8; 32][..], ops].concat();
        for (bad, why) in [
            (ops(&[0, 0, 0]), "empty copy"),
            (ops(&[1, 0]), "empty insert"),
            (ops(&[0, 0x90, 0x4e, 1]), "copy past the base"),
            (ops(&[9]), "unknown op"),
            (ops(&[1, 3, 1, 2]), "insert past the end"),
        ] {
            let chunk = SegmentChunk { stored_len: bad.len() as u32, raw_len: 2, ..chunk };
            assert!(apply_delta(&chunk, &bad, &base).is_err(), "{why}");
        }
        let plain = SegmentChunk { codec: Codec::None, ..chunk };
        assert!(apply_delta(&plain, &stored, &base).is_err(), "a whole chunk is not patched");
    }
}

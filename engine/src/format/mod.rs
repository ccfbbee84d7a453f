//! The only code that turns bytes into structures and back: chunks, segments, manifests, HEAD.
//!
//! Everything here is pure (no I/O) so the fuzzers can drive it directly. Every decoder takes
//! arbitrary bytes and returns `Ok` or `Err`: it never panics, never loops without bound, and
//! never allocates more than the bounds below (each length is checked against the bytes that
//! remain before anything is allocated). `format-spec.md` at the repository root is the
//! contract for every byte written here.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod chunk;
mod delta;
#[doc(hidden)]
pub mod fuzzing;
mod global;
mod head;
mod ids;
mod journal;
mod manifest;
mod pins;
mod segment;
#[cfg(test)]
mod tests;

pub(crate) use chunk::put_entry;
pub use chunk::{
    decode_chunk, decode_entries, decode_run_index, encode_entries_chunk, encode_run_index_chunk, entry_ranges,
    ChunkBody, ChunkKind, Entry, EntryRanges, RunIndex, RunIndexEntry,
};
pub use delta::{apply_delta, delta_base, encode_delta, DELTA_HEADER_LEN};
pub use global::{decode_global, encode_global, GlobalRecord, ShardPart, MAX_SHARDS};
pub use head::{decode_head, decode_store_marker, encode_head, encode_store_marker, Head, HEAD_LEN, STORE_MARKER_LEN};
pub use ids::{CheckpointId, ChunkHash, SegmentId};
pub use journal::{
    decode_journal, encode_journal, JournalEntry, MAX_JOURNAL_ENTRIES, MAX_JOURNAL_LEN, MAX_JOURNAL_REASON_LEN,
};
pub use manifest::{
    decode_manifest, encode_manifest, validate_table_name, Manifest, ManifestHash, ManifestKind, ManifestStats,
    ManifestTable, RunRef,
};
pub use pins::{decode_pins, encode_pins, Pin};
pub use segment::{
    decode_segment, decode_segment_footer, decode_segment_header, decode_segment_trailer, segment_chunk_bytes,
    segment_chunk_into_raw, Codec, SegmentChunk, SegmentTrailer, SegmentWriter, SEGMENT_HEADER_LEN,
    SEGMENT_TRAILER_LEN,
};

/// The on-disk format version written by this build and the only one it reads.
/// A change to any byte layout bumps this, `format-spec.md` and the fixtures together.
pub const FORMAT_VERSION: u16 = 3;

/// Largest key, in bytes.
pub const MAX_KEY_LEN: usize = 64 * 1024;
/// Largest value, in bytes.
pub const MAX_VALUE_LEN: usize = 16 * 1024 * 1024;
/// Largest chunk (uncompressed or stored), in bytes: the bound on any single allocation made
/// while reading a chunk. A chunk holds at least one entry, so it must fit the largest entry.
pub const MAX_CHUNK_LEN: usize = 32 * 1024 * 1024;
/// Largest user metadata attached to one checkpoint, in bytes.
pub const MAX_METADATA_LEN: usize = 1024 * 1024;
/// Most pinned checkpoints.
pub const MAX_PINS: usize = 4096;
/// Largest PINS object: the bound on the allocation made while reading it.
pub const MAX_PINS_LEN: usize = 16 + MAX_PINS * (8 + 2 + MAX_TABLE_NAME_LEN) + 32;
/// Longest table name, in bytes (UTF-8); also the longest pin name.
pub const MAX_TABLE_NAME_LEN: usize = 255;
/// Largest manifest, in bytes: the bound on the allocation made while reading one.
pub const MAX_MANIFEST_LEN: usize = 64 * 1024 * 1024;
/// Largest segment footer (its chunk table), in bytes.
pub const MAX_SEGMENT_FOOTER_LEN: usize = 64 * 1024 * 1024;

// The largest entry (key, value and two varint headers) must fit in one chunk.
// (key, value, two varint headers and the kind byte)
const _: () = assert!(1 + 2 * 10 + MAX_KEY_LEN + MAX_VALUE_LEN <= MAX_CHUNK_LEN);

/// Why a decoder rejected its input. The storage layer attaches the object's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended before a field was complete.
    #[error("truncated: needed {needed} more bytes at offset {offset}")]
    Truncated {
        /// Offset of the field that did not fit.
        offset: usize,
        /// Bytes it needed beyond the end.
        needed: usize,
    },
    /// The magic bytes did not match (not a cairn object, or the wrong kind of object).
    #[error("bad magic: expected {expected:?}")]
    BadMagic {
        /// The magic this decoder expects.
        expected: &'static str,
    },
    /// The header names a version this build does not read.
    #[error("unsupported version {found} (supported: {supported})")]
    UnsupportedVersion {
        /// The version in the header.
        found: u16,
        /// The version this build reads.
        supported: u16,
    },
    /// A checksum or content hash did not match.
    #[error("checksum mismatch in {0}")]
    Checksum(&'static str),
    /// A field was outside its allowed range or inconsistent with another.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What was wrong.
        reason: String,
    },
}

pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> DecodeError {
    DecodeError::Invalid { field, reason: reason.into() }
}

/// Append `v` as an unsigned LEB128 varint.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A bounds-checked cursor over untrusted bytes. Every read checks the remaining length first.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(DecodeError::Truncated { offset: self.pos, needed: n - self.remaining() });
        }
        let start = self.pos;
        self.pos += n;
        self.bytes.get(start..self.pos).ok_or(DecodeError::Truncated { offset: start, needed: n })
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// An unsigned LEB128 varint of at most 10 bytes that fits in a u64, in its shortest form:
    /// every value has exactly one encoding, so equal content is always equal bytes (and one
    /// chunk hash).
    pub(crate) fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for i in 0..10u32 {
            let b = self.u8()?;
            let low = u64::from(b & 0x7f);
            if i == 9 && b > 1 {
                return Err(invalid("varint", "overflows u64"));
            }
            if i > 0 && b == 0 {
                return Err(invalid("varint", "overlong encoding (not the shortest form)"));
            }
            v |= low << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(invalid("varint", "longer than 10 bytes"))
    }

    /// A varint that must be at most `max` (used for every length before it is trusted).
    pub(crate) fn varint_max(&mut self, field: &'static str, max: u64) -> Result<u64, DecodeError> {
        let v = self.varint()?;
        if v > max {
            return Err(invalid(field, format!("{v} exceeds the bound {max}")));
        }
        Ok(v)
    }

    /// A length-prefixed byte string of at most `max` bytes.
    pub(crate) fn bytes_max(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], DecodeError> {
        let n = self.varint_max(field, max as u64)? as usize;
        self.take(n)
    }

    pub(crate) fn magic(&mut self, expected: &'static [u8; 8], name: &'static str) -> Result<(), DecodeError> {
        if &self.array::<8>()? != expected {
            return Err(DecodeError::BadMagic { expected: name });
        }
        Ok(())
    }

    pub(crate) fn version(&mut self) -> Result<(), DecodeError> {
        let found = self.u16()?;
        if found != FORMAT_VERSION {
            return Err(DecodeError::UnsupportedVersion { found, supported: FORMAT_VERSION });
        }
        Ok(())
    }

    pub(crate) fn finish(&self, what: &'static str) -> Result<(), DecodeError> {
        if self.remaining() != 0 {
            return Err(invalid(what, format!("{} trailing bytes", self.remaining())));
        }
        Ok(())
    }
}

//! Chunks: the content-addressed unit. A chunk's name is the blake3 hash of its (uncompressed)
//! bytes. Two kinds exist: an entries chunk (sorted key/value pairs and tombstones) and a run
//! index chunk (the ordered list of entries chunks that make up one run of a table).

use super::{invalid, put_varint, ChunkHash, DecodeError, Reader, MAX_CHUNK_LEN, MAX_KEY_LEN, MAX_VALUE_LEN};
use std::ops::Range;

/// The first byte of every chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ChunkKind {
    /// Sorted entries (values and tombstones) of one table.
    Entries = 1,
    /// The ordered list of entries chunks of one run.
    RunIndex = 2,
}

impl TryFrom<u8> for ChunkKind {
    type Error = DecodeError;
    fn try_from(b: u8) -> Result<Self, DecodeError> {
        match b {
            1 => Ok(ChunkKind::Entries),
            2 => Ok(ChunkKind::RunIndex),
            other => Err(invalid("chunk kind", format!("unknown kind {other}"))),
        }
    }
}

/// One decoded entry: a key and its value, or `None` for a tombstone (the key was deleted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The key.
    pub key: Vec<u8>,
    /// The value, or `None` for a tombstone.
    pub value: Option<Vec<u8>>,
}

/// One entries chunk as listed in a run index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunIndexEntry {
    /// The entries chunk.
    pub hash: ChunkHash,
    /// Number of entries in it.
    pub entries: u64,
    /// Its first (smallest) key.
    pub first_key: Vec<u8>,
}

/// A run: entries chunks in key order, their first keys strictly increasing.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RunIndex {
    /// The chunks, in key order.
    pub chunks: Vec<RunIndexEntry>,
}

/// A decoded chunk of either kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChunkBody {
    /// An entries chunk.
    Entries(Vec<Entry>),
    /// A run index chunk.
    RunIndex(RunIndex),
}

/// Append one entry (`key_len`, `value_tag`, key, value) to an entries chunk under construction.
/// The caller starts the chunk with [`ChunkKind::Entries`] and keeps keys strictly increasing.
pub(crate) fn put_entry(out: &mut Vec<u8>, key: &[u8], value: Option<&[u8]>) {
    put_varint(out, key.len() as u64);
    put_varint(out, value.map_or(0, |v| v.len() as u64 + 1));
    out.extend_from_slice(key);
    if let Some(v) = value {
        out.extend_from_slice(v);
    }
}

/// Encode an entries chunk. `entries` must be non-empty with strictly increasing keys.
pub fn encode_entries_chunk<'a>(entries: impl IntoIterator<Item = (&'a [u8], Option<&'a [u8]>)>) -> Vec<u8> {
    let mut out = vec![ChunkKind::Entries as u8];
    for (key, value) in entries {
        put_entry(&mut out, key, value);
    }
    out
}

/// Encode a run index chunk. `index.chunks` must be non-empty with strictly increasing first keys.
pub fn encode_run_index_chunk(index: &RunIndex) -> Vec<u8> {
    let mut out = vec![ChunkKind::RunIndex as u8];
    put_varint(&mut out, index.chunks.len() as u64);
    for c in &index.chunks {
        out.extend_from_slice(&c.hash.0);
        put_varint(&mut out, c.entries);
        put_varint(&mut out, c.first_key.len() as u64);
        out.extend_from_slice(&c.first_key);
    }
    out
}

/// Decode a chunk of either kind (after its hash was verified by the caller).
pub fn decode_chunk(bytes: &[u8]) -> Result<ChunkBody, DecodeError> {
    match ChunkKind::try_from(*bytes.first().ok_or(DecodeError::Truncated { offset: 0, needed: 1 })?)? {
        ChunkKind::Entries => {
            let mut entries = Vec::new();
            decode_entries(bytes, |key, value| {
                entries.push(Entry { key: key.to_vec(), value: value.map(<[u8]>::to_vec) })
            })?;
            Ok(ChunkBody::Entries(entries))
        }
        ChunkKind::RunIndex => Ok(ChunkBody::RunIndex(decode_run_index(bytes)?)),
    }
}

/// Validate an entries chunk and call `f` for each entry in key order.
///
/// The whole chunk is validated before the first call, so `f` never sees a prefix of a bad
/// chunk. Returns the number of entries.
pub fn decode_entries(bytes: &[u8], mut f: impl FnMut(&[u8], Option<&[u8]>)) -> Result<u64, DecodeError> {
    let entries = entry_ranges(bytes)?;
    for e in &entries {
        let key = bytes.get(e.key.clone()).unwrap_or_default();
        f(key, e.value.clone().and_then(|v| bytes.get(v)));
    }
    Ok(entries.len() as u64)
}

/// Where one entry of an entries chunk lies in the chunk's bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryRanges {
    /// The key.
    pub key: Range<usize>,
    /// The value; `None` for a tombstone.
    pub value: Option<Range<usize>>,
    /// The whole entry: its two lengths, key and value.
    pub whole: Range<usize>,
}

/// Validate an entries chunk (its kind, every length, keys strictly increasing, at least one
/// entry) and return where its entries lie, in key order: for readers that keep the chunk's
/// bytes and index into them (a merge's cursor, the delta encoder).
pub fn entry_ranges(bytes: &[u8]) -> Result<Vec<EntryRanges>, DecodeError> {
    if bytes.len() > MAX_CHUNK_LEN {
        return Err(invalid("chunk length", format!("{} exceeds {MAX_CHUNK_LEN}", bytes.len())));
    }
    let mut r = Reader::new(bytes);
    if ChunkKind::try_from(r.u8()?)? != ChunkKind::Entries {
        return Err(invalid("chunk kind", "expected an entries chunk"));
    }
    let at = |r: &Reader<'_>| bytes.len() - r.remaining();
    let mut entries: Vec<EntryRanges> = Vec::new();
    while !r.is_empty() {
        let start = at(&r);
        let key_len = r.varint_max("key length", MAX_KEY_LEN as u64)? as usize;
        let tag = r.varint_max("value length", MAX_VALUE_LEN as u64 + 1)?;
        let key_start = at(&r);
        let key = r.take(key_len)?;
        let value = match tag {
            0 => None,
            n => {
                let value_start = at(&r);
                r.take((n - 1) as usize)?;
                Some(value_start..at(&r))
            }
        };
        let previous = entries.last().and_then(|e| bytes.get(e.key.clone()));
        if previous.is_some_and(|p| p >= key) {
            return Err(invalid("entry order", "keys are not strictly increasing"));
        }
        entries.push(EntryRanges { key: key_start..key_start + key_len, value, whole: start..at(&r) });
    }
    if entries.is_empty() {
        return Err(invalid("entries chunk", "holds no entry"));
    }
    Ok(entries)
}

/// Decode a run index chunk.
pub fn decode_run_index(bytes: &[u8]) -> Result<RunIndex, DecodeError> {
    if bytes.len() > MAX_CHUNK_LEN {
        return Err(invalid("chunk length", format!("{} exceeds {MAX_CHUNK_LEN}", bytes.len())));
    }
    let mut r = Reader::new(bytes);
    if ChunkKind::try_from(r.u8()?)? != ChunkKind::RunIndex {
        return Err(invalid("chunk kind", "expected a run index chunk"));
    }
    // Each listed chunk takes at least 34 bytes (hash, entries, key length), which bounds the
    // count by the bytes present before anything is allocated.
    let n = r.varint_max("run chunk count", (r.remaining() / 34) as u64)? as usize;
    if n == 0 {
        return Err(invalid("run chunk count", "a run lists at least one chunk"));
    }
    let mut chunks: Vec<RunIndexEntry> = Vec::with_capacity(n);
    for _ in 0..n {
        let hash = ChunkHash(r.array()?);
        let entries = r.varint_max("chunk entry count", MAX_CHUNK_LEN as u64)?;
        if entries == 0 {
            return Err(invalid("chunk entry count", "zero"));
        }
        let first_key = r.bytes_max("first key", MAX_KEY_LEN)?.to_vec();
        if chunks.last().is_some_and(|p| p.first_key >= first_key) {
            return Err(invalid("run index order", "first keys are not strictly increasing"));
        }
        chunks.push(RunIndexEntry { hash, entries, first_key });
    }
    r.finish("run index")?;
    Ok(RunIndex { chunks })
}

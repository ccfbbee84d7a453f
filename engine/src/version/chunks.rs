//! The chunk index: for every chunk stored in a committed segment, where it is.
//!
//! Manifests and run indexes name chunks by hash only, so chunks can be located anywhere
//! (and moved by a later segment rewrite) without touching any manifest.

use crate::format::{self, ChunkHash, SegmentChunk, SegmentId, SEGMENT_HEADER_LEN, SEGMENT_TRAILER_LEN};
use crate::storage::{segment_name, Storage};
use crate::{Error, Result};
use std::collections::{HashMap, HashSet};

/// Where a chunk is stored.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ChunkLocation {
    pub(crate) segment: SegmentId,
    pub(crate) chunk: SegmentChunk,
}

#[derive(Default, Clone)]
pub(crate) struct ChunkIndex {
    chunks: HashMap<ChunkHash, ChunkLocation>,
}

impl ChunkIndex {
    pub(crate) fn get(&self, hash: &ChunkHash) -> Option<&ChunkLocation> {
        self.chunks.get(hash)
    }

    pub(crate) fn contains(&self, hash: &ChunkHash) -> bool {
        self.chunks.contains_key(hash)
    }

    pub(crate) fn len(&self) -> usize {
        self.chunks.len()
    }

    /// Record the chunks of a committed segment (the first location seen for a hash stays its
    /// home; open adds segments newest first, so a chunk copied by a GC rewrite is read from
    /// the copy and the older segment can go).
    pub(crate) fn add_segment(&mut self, segment: SegmentId, chunks: &[SegmentChunk]) {
        for c in chunks {
            self.chunks.entry(c.hash).or_insert(ChunkLocation { segment, chunk: *c });
        }
    }

    /// Make `segment` the home of these chunks (a GC rewrite copied them there).
    pub(crate) fn rehome(&mut self, segment: SegmentId, chunks: &[SegmentChunk]) {
        for c in chunks {
            self.chunks.insert(c.hash, ChunkLocation { segment, chunk: *c });
        }
    }

    /// Forget every chunk whose home is one of `segments` (they are about to be deleted). One
    /// pass over the index whatever their number: a GC's sweep does this under the store's
    /// lock, which checkpoints wait for.
    pub(crate) fn remove_segments(&mut self, segments: &HashSet<SegmentId>) {
        self.chunks.retain(|_, loc| !segments.contains(&loc.segment));
    }

    /// Every chunk with its location.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&ChunkHash, &ChunkLocation)> {
        self.chunks.iter()
    }
}

/// Read and verify a segment's chunk table (header, trailer and table; not the chunks).
pub(crate) fn read_segment_table(storage: &dyn Storage, id: SegmentId) -> Result<Vec<SegmentChunk>> {
    let name = segment_name(id);
    let size = storage.size(&name)?;
    if size < (SEGMENT_HEADER_LEN + SEGMENT_TRAILER_LEN) as u64 {
        return Err(Error::corrupted(&name, format!("{size} bytes is shorter than a header and trailer")));
    }
    let header = storage.read_range(&name, 0, SEGMENT_HEADER_LEN)?;
    let found = format::decode_segment_header(&header).map_err(|e| Error::from_decode(&name, e))?;
    if found != id {
        return Err(Error::corrupted(&name, format!("header names segment {found}")));
    }
    let trailer_bytes = storage.read_range(&name, size - SEGMENT_TRAILER_LEN as u64, SEGMENT_TRAILER_LEN)?;
    let trailer = format::decode_segment_trailer(&trailer_bytes, size).map_err(|e| Error::from_decode(&name, e))?;
    let footer = storage.read_range(&name, trailer.footer_offset, trailer.footer_len() as usize)?;
    format::decode_segment_footer(&header, &footer, &trailer).map_err(|e| Error::from_decode(&name, e))
}

//! Garbage collection: the live set, and which segments are dead or sparse.

use crate::format::{ChunkHash, Manifest, SegmentId};
use crate::storage::Storage;
use crate::version::{self, ChunkIndex};
use crate::Result;
use std::collections::{BTreeMap, HashSet};

/// Every chunk the given manifests reference: their run index chunks and the entries chunks
/// those list.
pub(crate) fn live_chunks<'a>(
    storage: &dyn Storage,
    index: &ChunkIndex,
    manifests: impl IntoIterator<Item = &'a Manifest>,
) -> Result<HashSet<ChunkHash>> {
    let mut live = HashSet::new();
    for m in manifests {
        for t in &m.tables {
            for run in &t.runs {
                if !live.insert(run.index) {
                    continue; // a run shared with an earlier manifest: its chunks are in already
                }
                for c in version::read_run_index(storage, index, &run.index)?.chunks {
                    live.insert(c.hash);
                }
            }
        }
    }
    Ok(live)
}

/// One segment as the GC sees it.
#[derive(Clone, Debug, Default)]
pub(crate) struct SegmentUse {
    /// Stored bytes of live chunks whose home is this segment.
    pub(crate) live_bytes: u64,
    /// Live chunks whose home is this segment.
    pub(crate) live: Vec<ChunkHash>,
}

/// Live use of each segment that is the home of at least one chunk, up to `max_segment`.
pub(crate) fn segment_use(
    index: &ChunkIndex,
    live: &HashSet<ChunkHash>,
    max_segment: SegmentId,
) -> BTreeMap<SegmentId, SegmentUse> {
    let mut uses: BTreeMap<SegmentId, SegmentUse> = BTreeMap::new();
    for (hash, loc) in index.iter() {
        if loc.segment > max_segment {
            continue;
        }
        let u = uses.entry(loc.segment).or_default();
        if live.contains(hash) {
            u.live_bytes += u64::from(loc.chunk.stored_len);
            u.live.push(*hash);
        }
    }
    uses
}

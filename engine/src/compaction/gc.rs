//! Garbage collection: the live set, which segments are dead or sparse, and which live chunks
//! may be stored as deltas.
//!
//! Delta rule (`format-spec.md`, section 7): a delta chunk's base is always stored whole, and
//! is kept for as long as the delta is stored in a committed segment, dead or alive: the
//! chunk index holds every stored chunk, and a checkpoint's deduplication may reference a
//! dead one again, which must then still read. So the live set is the chunks the retained
//! manifests reference plus the base of every delta chunk the index holds (bases are never
//! deltas, so one step closes the set), and a base is never itself turned into a delta.

use crate::format::{self, CheckpointId, ChunkHash, Codec, Manifest, RunIndex, SegmentId};
use crate::storage::{segment_name, Storage};
use crate::version::{self, ChunkIndex};
use crate::Result;
use std::collections::{BTreeMap, HashMap, HashSet};

/// The run index chunks the given manifests reference, read once each: by hash.
pub(crate) type RunIndexes = HashMap<ChunkHash, RunIndex>;

/// What the GC's mark keeps of the manifests it reads one at a time: every chunk they
/// reference ([`add_live_chunks`]) with the run indexes read, HEAD's manifest whole, and each
/// run of the others once, with its table's name, for [`delta_candidates`]. Each manifest is
/// then dropped (holding them all, as the mark once did, grows quadratically).
pub(crate) struct Marked {
    pub(crate) live: HashSet<ChunkHash>,
    run_indexes: RunIndexes,
    head_id: CheckpointId,
    head: Option<Manifest>,
    /// Runs of manifests other than HEAD's, each once, in the order first met.
    older_runs: Vec<(String, ChunkHash)>,
    seen_runs: HashSet<ChunkHash>,
}

impl Marked {
    pub(crate) fn new(head: CheckpointId) -> Self {
        Marked {
            live: HashSet::new(),
            run_indexes: RunIndexes::new(),
            head_id: head,
            head: None,
            older_runs: Vec::new(),
            seen_runs: HashSet::new(),
        }
    }

    /// Add manifest `m`'s chunks (reading its run indexes not met before), and keep what
    /// [`delta_candidates`] needs of it.
    pub(crate) fn add(&mut self, storage: &dyn Storage, index: &ChunkIndex, m: Manifest) -> Result<()> {
        let run_indexes = &mut self.run_indexes;
        add_live_chunks(storage, index, &m, &mut self.live, |hash, run_index| {
            run_indexes.insert(hash, run_index);
        })?;
        if m.id == self.head_id {
            self.head = Some(m);
            return Ok(());
        }
        for t in &m.tables {
            for run in &t.runs {
                if self.seen_runs.insert(run.index) {
                    self.older_runs.push((t.name.clone(), run.index));
                }
            }
        }
        Ok(())
    }
}

/// Add to `live` the chunks manifest `m` references: its run index chunks and the entries
/// chunks they list. A run already in `live` (shared with a manifest added before) is not
/// read again; each run index read is handed to `read`. Callers add manifests one at a time
/// and drop each: a store whose runs were never merged has manifests of every run so far,
/// and holding them all costs memory quadratic in the number of checkpoints.
pub(crate) fn add_live_chunks(
    storage: &dyn Storage,
    index: &ChunkIndex,
    m: &Manifest,
    live: &mut HashSet<ChunkHash>,
    mut read: impl FnMut(ChunkHash, RunIndex),
) -> Result<()> {
    for t in &m.tables {
        for run in &t.runs {
            if !live.insert(run.index) {
                continue; // its chunks are in already
            }
            let run_index = version::read_run_index(storage, index, &run.index)?;
            live.extend(run_index.chunks.iter().map(|c| c.hash));
            read(run.index, run_index);
        }
    }
    Ok(())
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

/// Add to `live` the base of every delta chunk `index` holds (live or not); returns those
/// bases. A base thus outlives its delta by one GC: the one that deletes the delta's segment
/// still counts it.
pub(crate) fn add_delta_bases(
    storage: &dyn Storage,
    index: &ChunkIndex,
    live: &mut HashSet<ChunkHash>,
) -> Result<HashSet<ChunkHash>> {
    let mut bases = HashSet::new();
    for (_, loc) in index.iter().filter(|(_, loc)| loc.chunk.codec == Codec::Delta) {
        let name = segment_name(loc.segment);
        let header = storage.read_range(&name, loc.chunk.offset, format::DELTA_HEADER_LEN)?;
        bases.insert(format::delta_base(&header).map_err(|e| crate::Error::from_decode(&name, e))?);
    }
    live.extend(bases.iter().copied());
    Ok(bases)
}

/// Live entries chunks that could be stored as a delta, each with its base: a chunk no longer
/// in `head`'s layout (only older retained checkpoints need it), stored whole and not a base
/// itself, whose table in `head` has a whole entries chunk starting at the same key. After a
/// merge rewrote a key range, that is the new chunk for the same keys: the two differ only by
/// the entries updated in between. `head` is the manifest of HEAD among those `marked` read
/// (none: no candidates).
pub(crate) fn delta_candidates(
    index: &ChunkIndex,
    marked: &Marked,
    bases: &HashSet<ChunkHash>,
) -> Vec<(ChunkHash, ChunkHash)> {
    let Some(head) = &marked.head else { return Vec::new() };
    let run_indexes = &marked.run_indexes;
    let chunks_of = |run: &ChunkHash| run_indexes.get(run).map(|r| r.chunks.as_slice()).unwrap_or_default();
    let whole = |hash: &ChunkHash| index.get(hash).is_some_and(|loc| loc.chunk.codec != Codec::Delta);
    let mut in_head = HashSet::new();
    let mut head_by_first_key: HashMap<(&str, &[u8]), ChunkHash> = HashMap::new();
    for t in &head.tables {
        for run in &t.runs {
            for c in chunks_of(&run.index) {
                in_head.insert(c.hash);
                if whole(&c.hash) {
                    head_by_first_key.insert((t.name.as_str(), c.first_key.as_slice()), c.hash);
                }
            }
        }
    }
    let mut candidates = Vec::new();
    let mut taken = HashSet::new();
    for (table, run) in &marked.older_runs {
        for c in chunks_of(run) {
            if in_head.contains(&c.hash) || bases.contains(&c.hash) || !whole(&c.hash) {
                continue;
            }
            let Some(base) = head_by_first_key.get(&(table.as_str(), c.first_key.as_slice())) else {
                continue;
            };
            if taken.insert(c.hash) {
                candidates.push((c.hash, *base));
            }
        }
    }
    candidates
}

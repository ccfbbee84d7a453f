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
/// reference with the run indexes read ([`LiveChunks`]), HEAD's manifest whole, and each run
/// of the others once, with its table's name, for [`delta_candidates`]. Each manifest is then
/// dropped: with runs never merged, every manifest lists every run so far, and holding them
/// all (as the mark once did) costs memory quadratic in the number of checkpoints.
pub(crate) struct Marked {
    pub(crate) live: LiveChunks,
    head_id: CheckpointId,
    head: Option<Manifest>,
    /// Runs of manifests other than HEAD's, each once, in the order first met.
    older_runs: Vec<(String, ChunkHash)>,
    seen_runs: HashSet<ChunkHash>,
}

impl Marked {
    pub(crate) fn new(head: CheckpointId) -> Self {
        Marked {
            live: LiveChunks { keep_run_indexes: true, ..LiveChunks::default() },
            head_id: head,
            head: None,
            older_runs: Vec::new(),
            seen_runs: HashSet::new(),
        }
    }

    /// Add manifest `m`'s chunks (reading its run indexes not met before), and keep what
    /// [`delta_candidates`] needs of it.
    pub(crate) fn add(&mut self, storage: &dyn Storage, index: &ChunkIndex, m: Manifest) -> Result<()> {
        self.live.add(storage, index, &m)?;
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

/// The chunks of manifests added one at a time, so a caller can drop each manifest once it
/// is added (a store whose runs were never merged has manifests of every run so far: holding
/// them all costs memory quadratic in the number of checkpoints).
#[derive(Default)]
pub(crate) struct LiveChunks {
    pub(crate) chunks: HashSet<ChunkHash>,
    run_indexes: RunIndexes,
    keep_run_indexes: bool,
}

impl LiveChunks {
    /// Add `m`'s run index chunks and the entries chunks they list. A run met before (shared
    /// with an earlier manifest) is not read again.
    pub(crate) fn add(&mut self, storage: &dyn Storage, index: &ChunkIndex, m: &Manifest) -> Result<()> {
        for t in &m.tables {
            for run in &t.runs {
                if !self.chunks.insert(run.index) {
                    continue; // its chunks are in already
                }
                let run_index = version::read_run_index(storage, index, &run.index)?;
                self.chunks.extend(run_index.chunks.iter().map(|c| c.hash));
                if self.keep_run_indexes {
                    self.run_indexes.insert(run.index, run_index);
                }
            }
        }
        Ok(())
    }
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
    let run_indexes = &marked.live.run_indexes;
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

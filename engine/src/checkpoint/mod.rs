//! Turning a captured dirty set into chunks, a segment and a manifest, and committing it.
//!
//! Capture (on the caller's thread, O(dirty)) lives in `state`; everything here is persist:
//! sort, cut into chunks, hash, deduplicate against stored chunks, write one segment with the
//! new chunks, write the manifest, make both durable, and move HEAD. Persist takes only what
//! it needs by reference, so it can move to a background thread without a redesign.

mod chunker;

use crate::format::{
    self, encode_manifest, encode_run_index_chunk, CheckpointId, ChunkHash, ChunkKind, Codec, Head, Manifest,
    ManifestHash, ManifestKind, ManifestStats, ManifestTable, RunIndex, RunIndexEntry, RunRef, SegmentChunk, SegmentId,
    SegmentWriter, HEAD_LEN,
};
use crate::options::{Compression, Options};
use crate::state::CapturedEntries;
use crate::storage::{manifest_name, segment_name, Storage};
use crate::version::{check_manifest_invariants, ChunkIndex};
use crate::{Error, Result};
use std::collections::{BTreeMap, HashSet};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// A dirty set taken from the working state for one checkpoint.
pub(crate) struct Captured {
    /// Dirty entries per table (tables with nothing to write are absent).
    pub(crate) tables: Vec<(String, CapturedEntries)>,
    /// Every table of the working state (so empty new tables are recorded too).
    pub(crate) table_names: Vec<String>,
    pub(crate) metadata: Vec<u8>,
    pub(crate) started: Instant,
}

/// Where the new checkpoint goes in the chain.
pub(crate) struct Placement<'a> {
    pub(crate) id: CheckpointId,
    pub(crate) segment: SegmentId,
    pub(crate) base: Option<(&'a Manifest, ManifestHash)>,
    pub(crate) head: Option<Head>,
}

/// A committed checkpoint, as persist leaves it.
pub(crate) struct Persisted {
    pub(crate) manifest: Manifest,
    pub(crate) hash: ManifestHash,
    pub(crate) head: Head,
    /// The new segments and their chunks (none when every chunk was stored).
    pub(crate) segments: Vec<(SegmentId, Vec<SegmentChunk>)>,
    /// Stored chunks the manifest references again (a running GC must keep them).
    pub(crate) reused: Vec<ChunkHash>,
    pub(crate) bytes_written: u64,
    pub(crate) manifest_len: u64,
}

/// Most chunks in one segment, and most bytes: a checkpoint or merge that writes more rolls
/// over to the next segment id. Keeps every chunk table within `MAX_SEGMENT_FOOTER_LEN` and
/// segments small enough for GC to rewrite.
const SEGMENT_CHUNKS_MAX: usize = 1 << 20;
const SEGMENT_BYTES_MAX: usize = 256 * 1024 * 1024;
const _: () = assert!(SEGMENT_CHUNKS_MAX * 50 <= format::MAX_SEGMENT_FOOTER_LEN);

/// Largest run index chunk written: a run whose index would grow past it is ended and the
/// table's entries continue in another run (keys of the two runs do not overlap).
const RUN_INDEX_BYTES_MAX: usize = format::MAX_CHUNK_LEN / 2;

/// Builds the new segments of one checkpoint or merge, deduplicating every chunk against the
/// stored ones and those already written by it.
pub(crate) struct ChunkSink<'a> {
    stored: &'a ChunkIndex,
    finished: Vec<SegmentWriter>,
    segment: SegmentWriter,
    in_segment: HashSet<ChunkHash>,
    codec: Codec,
    reused: Vec<ChunkHash>,
    new: u64,
    chunks_max: usize,
    bytes_max: usize,
}

impl<'a> ChunkSink<'a> {
    /// A sink whose first segment is `first_segment`; further ones take the following ids.
    pub(crate) fn new(stored: &'a ChunkIndex, first_segment: SegmentId, opts: &Options) -> Self {
        let codec = match opts.compression {
            Compression::None => Codec::None,
            Compression::Lz4 => Codec::Lz4,
        };
        ChunkSink {
            stored,
            finished: Vec::new(),
            segment: SegmentWriter::new(first_segment),
            in_segment: HashSet::new(),
            codec,
            reused: Vec::new(),
            new: 0,
            chunks_max: SEGMENT_CHUNKS_MAX,
            bytes_max: SEGMENT_BYTES_MAX,
        }
    }

    /// Store `raw` unless a chunk with its hash exists; returns the hash.
    pub(crate) fn add(&mut self, kind: ChunkKind, raw: &[u8]) -> ChunkHash {
        let hash = ChunkHash::of(raw);
        if self.in_segment.contains(&hash) || self.stored.contains(&hash) {
            self.reused.push(hash);
            return hash;
        }
        if !self.segment.is_empty()
            && (self.segment.chunk_count() >= self.chunks_max || self.segment.len() + raw.len() > self.bytes_max)
        {
            let next = SegmentWriter::new(SegmentId(self.segment.id().0 + 1));
            self.finished.push(std::mem::replace(&mut self.segment, next));
        }
        self.segment.push(hash, kind, raw, self.codec);
        self.in_segment.insert(hash);
        self.new += 1;
        hash
    }

    /// The segments written, in id order (empty ones left out).
    fn into_segments(self) -> (Vec<SegmentWriter>, u64, Vec<ChunkHash>) {
        let mut segments = self.finished;
        if !self.segment.is_empty() {
            segments.push(self.segment);
        }
        (segments, self.new, self.reused)
    }
}

/// Sort one table's entries, cut them into chunks, and add the chunks and run indexes.
/// Returns the runs, in key order (usually one; more only when a run index would exceed its
/// bound); none for no entries.
pub(crate) fn write_run(sink: &mut ChunkSink<'_>, entries: CapturedEntries, target: usize) -> Vec<RunRef> {
    write_runs_bounded(sink, entries, target, RUN_INDEX_BYTES_MAX)
}

fn write_runs_bounded(
    sink: &mut ChunkSink<'_>,
    mut entries: CapturedEntries,
    target: usize,
    index_bytes_max: usize,
) -> Vec<RunRef> {
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut runs = Vec::new();
    let mut index = RunIndex::default();
    let mut index_bytes = 1 + 10;
    let (mut run_entries, mut data_bytes) = (0u64, 0u64);
    let mut buf = Vec::with_capacity(2 * target + 64);
    let mut chunk_entries = 0u64;
    let mut first_key: &[u8] = &[];
    let last = entries.len().saturating_sub(1);
    let mut finish_run =
        |sink: &mut ChunkSink<'_>, index: &mut RunIndex, run_entries: &mut u64, data_bytes: &mut u64| {
            let index_raw = encode_run_index_chunk(index);
            let index_hash = sink.add(ChunkKind::RunIndex, &index_raw);
            runs.push(RunRef {
                index: index_hash,
                entries: *run_entries,
                data_bytes: *data_bytes,
                chunks: index.chunks.len() as u64,
            });
            *index = RunIndex::default();
            (*run_entries, *data_bytes) = (0, 0);
        };
    for (i, (key, value)) in entries.iter().enumerate() {
        if chunk_entries == 0 {
            buf.clear();
            buf.push(ChunkKind::Entries as u8);
            first_key = key;
        }
        let before = buf.len();
        format::put_entry(&mut buf, key, value.as_deref());
        chunk_entries += 1;
        let entry_len = buf.len() - before;
        if i == last || chunker::cut_after(chunker::key_hash(key), entry_len, buf.len(), target) {
            let index_entry_bytes = 32 + 10 + 10 + first_key.len();
            if !index.chunks.is_empty() && index_bytes + index_entry_bytes > index_bytes_max {
                finish_run(sink, &mut index, &mut run_entries, &mut data_bytes);
                index_bytes = 1 + 10;
            }
            let hash = sink.add(ChunkKind::Entries, &buf);
            data_bytes += buf.len() as u64;
            run_entries += chunk_entries;
            index_bytes += index_entry_bytes;
            index.chunks.push(RunIndexEntry { hash, entries: chunk_entries, first_key: first_key.to_vec() });
            chunk_entries = 0;
        }
    }
    if !index.chunks.is_empty() {
        finish_run(sink, &mut index, &mut run_entries, &mut data_bytes);
    }
    runs
}

/// A manifest to commit, apart from what the sink wrote.
pub(crate) struct NewManifest {
    pub(crate) id: CheckpointId,
    pub(crate) kind: ManifestKind,
    pub(crate) parent: Option<(CheckpointId, ManifestHash)>,
    pub(crate) tables: BTreeMap<String, Vec<RunRef>>,
    pub(crate) metadata: Vec<u8>,
    pub(crate) dirty_keys: u64,
    pub(crate) started: Instant,
}

/// Write the sink's segment (if it holds any chunk) and the manifest, make both durable, then
/// move HEAD to the manifest: the commit point. `head` is HEAD before the commit.
///
/// Any error may leave objects of the uncommitted manifest behind; they are invisible (their
/// ids are above HEAD's high-water marks) and removed at the next open. The caller poisons the
/// store on error, since a failed write or fsync leaves the medium in an unknown state.
pub(crate) fn commit(
    storage: &dyn Storage,
    sink: ChunkSink<'_>,
    new: NewManifest,
    head: Option<Head>,
) -> Result<Persisted> {
    let (writers, chunks_new, reused) = sink.into_segments();
    let segments: Vec<(SegmentId, Vec<u8>, Vec<SegmentChunk>)> = writers
        .into_iter()
        .map(|w| {
            let id = w.id();
            let (bytes, chunks) = w.finish();
            (id, bytes, chunks)
        })
        .collect();
    let segment_bytes: u64 = segments.iter().map(|(_, b, _)| b.len() as u64).sum();
    let manifest = Manifest {
        id: new.id,
        kind: new.kind,
        parent: new.parent,
        created_unix_ms: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
        stats: ManifestStats {
            dirty_keys: new.dirty_keys,
            segment_bytes,
            chunks_new,
            chunks_reused: reused.len() as u64,
            duration_us: new.started.elapsed().as_micros() as u64,
        },
        metadata: new.metadata,
        tables: new.tables.into_iter().map(|(name, runs)| ManifestTable { name, runs }).collect(),
    };
    // Every check runs before the first write, so a refused manifest leaves nothing behind.
    check_manifest_invariants(&manifest).map_err(|reason| Error::corrupted(manifest_name(manifest.id), reason))?;
    let (manifest_bytes, hash) = encode_manifest(&manifest);
    if manifest_bytes.len() > format::MAX_MANIFEST_LEN {
        return Err(Error::InvalidArgument(format!(
            "the manifest would be {} bytes, over the bound of {}: compact to reduce the runs",
            manifest_bytes.len(),
            format::MAX_MANIFEST_LEN
        )));
    }
    for (id, bytes, _) in &segments {
        storage.put(&segment_name(*id), bytes)?;
    }
    storage.put(&manifest_name(manifest.id), &manifest_bytes)?;
    // The segment and manifest names must be durable before HEAD names them.
    storage.sync()?;

    let previous = head.map_or((CheckpointId(0), SegmentId(0)), |h| (h.max_checkpoint_id, h.max_segment_id));
    let last_segment = segments.last().map(|(id, _, _)| *id);
    let head = Head {
        current: manifest.id,
        manifest_hash: hash,
        max_checkpoint_id: previous.0.max(manifest.id),
        max_segment_id: last_segment.map_or(previous.1, |id| previous.1.max(id)),
    };
    storage.commit_head(&format::encode_head(&head))?;
    let manifest_len = manifest_bytes.len() as u64;
    let bytes_written = segment_bytes + manifest_len + HEAD_LEN as u64;
    let segments = segments.into_iter().map(|(id, _, chunks)| (id, chunks)).collect();
    Ok(Persisted { manifest, hash, head, segments, reused, bytes_written, manifest_len })
}

/// Persist a captured dirty set as checkpoint `placement.id` on top of its base and commit it.
pub(crate) fn persist(
    storage: &dyn Storage,
    stored: &ChunkIndex,
    opts: &Options,
    captured: Captured,
    placement: Placement<'_>,
) -> Result<Persisted> {
    let mut sink = ChunkSink::new(stored, placement.segment, opts);
    let mut tables: BTreeMap<String, Vec<RunRef>> = BTreeMap::new();
    if let Some((base, _)) = placement.base {
        for t in &base.tables {
            tables.insert(t.name.clone(), t.runs.clone());
        }
    }
    for name in captured.table_names {
        tables.entry(name).or_default();
    }
    let mut dirty_keys = 0u64;
    for (name, entries) in captured.tables {
        dirty_keys += entries.len() as u64;
        let runs = write_run(&mut sink, entries, opts.chunk_target_bytes);
        tables.entry(name).or_default().extend(runs);
    }
    let new = NewManifest {
        id: placement.id,
        kind: ManifestKind::Checkpoint,
        parent: placement.base.map(|(m, h)| (m.id, h)),
        tables,
        metadata: captured.metadata,
        dirty_keys,
        started: captured.started,
    };
    commit(storage, sink, new, placement.head)
}

/// Sort, chunk, hash and encode `entries` into in-memory segments with no I/O and no stored
/// chunks to deduplicate against; returns the segment bytes produced. For the `hash_chunk`
/// benchmark.
pub(crate) fn encode_only(entries: CapturedEntries, target: usize) -> u64 {
    let stored = ChunkIndex::default();
    let mut sink = ChunkSink::new(&stored, SegmentId(1), &Options::new());
    write_run(&mut sink, entries, target);
    let (segments, _, _) = sink.into_segments();
    segments.into_iter().map(|w| w.finish().0.len() as u64).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::SimFs;
    use crate::version;

    /// With tiny bounds a checkpoint rolls over to several segments and splits a table into
    /// several runs; everything commits and reads back exactly.
    #[test]
    fn segments_roll_over_and_runs_split_at_their_bounds() -> Result<()> {
        let fs = SimFs::new();
        let storage = fs.storage();
        let stored = ChunkIndex::default();
        let opts = Options::new();
        let mut sink = ChunkSink::new(&stored, SegmentId(1), &opts);
        sink.chunks_max = 3;
        let entries: CapturedEntries =
            (0u32..400).rev().map(|i| (i.to_be_bytes().to_vec(), Some(vec![i as u8; 50]))).collect();
        let runs = write_runs_bounded(&mut sink, entries.clone(), 64, 200);
        assert!(runs.len() > 3, "{} runs", runs.len());
        let tables = BTreeMap::from([("t".to_string(), runs)]);
        let new = NewManifest {
            id: CheckpointId(1),
            kind: ManifestKind::Checkpoint,
            parent: None,
            tables,
            metadata: Vec::new(),
            dirty_keys: 400,
            started: Instant::now(),
        };
        let persisted = commit(&storage, sink, new, None)?;
        assert!(persisted.segments.len() > 10, "{} segments", persisted.segments.len());
        assert!(persisted.segments.iter().all(|(_, chunks)| chunks.len() <= 3));
        let ids: Vec<u64> = persisted.segments.iter().map(|(id, _)| id.0).collect();
        assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>(), "consecutive segment ids");
        assert_eq!(persisted.head.max_segment_id, SegmentId(ids.len() as u64));
        let mut index = ChunkIndex::default();
        for (id, _) in &persisted.segments {
            index.add_segment(*id, &version::read_segment_table(&storage, *id)?);
        }
        let table = &persisted.manifest.tables[0];
        let data = version::materialize_table(&storage, &index, table)?;
        let expected: Vec<(Vec<u8>, Vec<u8>)> =
            (0u32..400).map(|i| (i.to_be_bytes().to_vec(), vec![i as u8; 50])).collect();
        let got: Vec<(Vec<u8>, Vec<u8>)> = data.into_iter().map(|(k, v)| (k.as_slice().to_vec(), v)).collect();
        assert_eq!(got, expected);
        Ok(())
    }
}

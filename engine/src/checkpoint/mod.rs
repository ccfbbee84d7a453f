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
    /// The new segment and its chunks, if any chunk was new.
    pub(crate) segment: Option<(SegmentId, Vec<SegmentChunk>)>,
    /// Stored chunks the manifest references again (a running GC must keep them).
    pub(crate) reused: Vec<ChunkHash>,
    pub(crate) bytes_written: u64,
    pub(crate) manifest_len: u64,
}

/// Builds one new segment, deduplicating every chunk against the stored ones and those
/// already in this segment.
pub(crate) struct ChunkSink<'a> {
    stored: &'a ChunkIndex,
    segment: SegmentWriter,
    in_segment: HashSet<ChunkHash>,
    codec: Codec,
    reused: Vec<ChunkHash>,
    new: u64,
}

impl<'a> ChunkSink<'a> {
    pub(crate) fn new(stored: &'a ChunkIndex, segment: SegmentId, opts: &Options) -> Self {
        let codec = match opts.compression {
            Compression::None => Codec::None,
            Compression::Lz4 => Codec::Lz4,
        };
        ChunkSink {
            stored,
            segment: SegmentWriter::new(segment),
            in_segment: HashSet::new(),
            codec,
            reused: Vec::new(),
            new: 0,
        }
    }

    /// Store `raw` unless a chunk with its hash exists; returns the hash.
    pub(crate) fn add(&mut self, kind: ChunkKind, raw: &[u8]) -> ChunkHash {
        let hash = ChunkHash::of(raw);
        if self.in_segment.contains(&hash) || self.stored.contains(&hash) {
            self.reused.push(hash);
        } else {
            self.segment.push(hash, kind, raw, self.codec);
            self.in_segment.insert(hash);
            self.new += 1;
        }
        hash
    }
}

/// Sort one table's entries, cut them into chunks, and add the chunks and the run index.
/// Returns `None` for no entries.
pub(crate) fn write_run(sink: &mut ChunkSink<'_>, mut entries: CapturedEntries, target: usize) -> Option<RunRef> {
    if entries.is_empty() {
        return None;
    }
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut index = RunIndex::default();
    let mut buf = Vec::with_capacity(2 * target + 64);
    let mut chunk_entries = 0u64;
    let mut first_key: &[u8] = &[];
    let mut data_bytes = 0u64;
    let last = entries.len() - 1;
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
            let hash = sink.add(ChunkKind::Entries, &buf);
            data_bytes += buf.len() as u64;
            index.chunks.push(RunIndexEntry { hash, entries: chunk_entries, first_key: first_key.to_vec() });
            chunk_entries = 0;
        }
    }
    let index_raw = encode_run_index_chunk(&index);
    let index_hash = sink.add(ChunkKind::RunIndex, &index_raw);
    Some(RunRef { index: index_hash, entries: entries.len() as u64, data_bytes, chunks: index.chunks.len() as u64 })
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
    let ChunkSink { segment: writer, new: chunks_new, reused, .. } = sink;
    let segment_id = writer.id();
    let mut segment_bytes = 0u64;
    let mut segment = None;
    if !writer.is_empty() {
        let (bytes, chunks) = writer.finish();
        segment_bytes = bytes.len() as u64;
        storage.put(&segment_name(segment_id), &bytes)?;
        segment = Some((segment_id, chunks));
    }
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
    check_manifest_invariants(&manifest).map_err(|reason| Error::corrupted(manifest_name(manifest.id), reason))?;
    let (manifest_bytes, hash) = encode_manifest(&manifest);
    storage.put(&manifest_name(manifest.id), &manifest_bytes)?;
    // The segment and manifest names must be durable before HEAD names them.
    storage.sync()?;

    let previous = head.map_or((CheckpointId(0), SegmentId(0)), |h| (h.max_checkpoint_id, h.max_segment_id));
    let head = Head {
        current: manifest.id,
        manifest_hash: hash,
        max_checkpoint_id: previous.0.max(manifest.id),
        max_segment_id: if segment.is_some() { previous.1.max(segment_id) } else { previous.1 },
    };
    storage.commit_head(&format::encode_head(&head))?;
    let manifest_len = manifest_bytes.len() as u64;
    let bytes_written = segment_bytes + manifest_len + HEAD_LEN as u64;
    Ok(Persisted { manifest, hash, head, segment, reused, bytes_written, manifest_len })
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
        if let Some(run) = write_run(&mut sink, entries, opts.chunk_target_bytes) {
            tables.entry(name).or_default().push(run);
        }
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

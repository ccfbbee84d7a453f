//! Turning a captured dirty set into chunks, a segment and a manifest, and committing it.
//!
//! Capture (on the caller's thread, O(dirty)) lives in `state`; everything here is persist:
//! sort, cut into chunks, hash, deduplicate against stored chunks, write one segment with the
//! new chunks, write the manifest, make both durable, and move HEAD. Persist takes only what
//! it needs by reference, so it can move to a background thread without a redesign.

mod chunker;

use crate::format::{
    self, encode_manifest, encode_run_index_chunk, CheckpointId, ChunkHash, ChunkKind, Codec, Head, Manifest,
    ManifestHash, ManifestStats, ManifestTable, RunIndex, RunIndexEntry, RunRef, SegmentChunk, SegmentId,
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
    pub(crate) bytes_written: u64,
}

/// Builds the segment, deduplicating every chunk against the stored ones and those already in
/// this segment.
struct ChunkSink<'a> {
    stored: &'a ChunkIndex,
    segment: SegmentWriter,
    in_segment: HashSet<ChunkHash>,
    codec: Codec,
    new: u64,
    reused: u64,
}

impl ChunkSink<'_> {
    fn add(&mut self, kind: ChunkKind, raw: &[u8]) -> ChunkHash {
        let hash = ChunkHash::of(raw);
        if self.stored.contains(&hash) || self.in_segment.contains(&hash) {
            self.reused += 1;
        } else {
            self.segment.push(hash, kind, raw, self.codec);
            self.in_segment.insert(hash);
            self.new += 1;
        }
        hash
    }
}

/// Sort one table's entries, cut them into chunks, and add the chunks and the run index.
fn write_run(sink: &mut ChunkSink<'_>, mut entries: CapturedEntries, target: usize) -> Option<RunRef> {
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

/// Persist a captured dirty set as checkpoint `placement.id` and commit it (HEAD moves last).
///
/// Any error may leave objects of the uncommitted checkpoint behind; they are invisible (their
/// ids are above HEAD's high-water marks) and removed at the next open. The caller poisons the
/// store on error, since a failed write or fsync leaves the medium in an unknown state.
pub(crate) fn persist(
    storage: &dyn Storage,
    stored: &ChunkIndex,
    opts: &Options,
    captured: Captured,
    placement: Placement<'_>,
) -> Result<Persisted> {
    let codec = match opts.compression {
        Compression::None => Codec::None,
        Compression::Lz4 => Codec::Lz4,
    };
    let mut sink = ChunkSink {
        stored,
        segment: SegmentWriter::new(placement.segment),
        in_segment: HashSet::new(),
        codec,
        new: 0,
        reused: 0,
    };
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

    let mut segment_bytes = 0u64;
    let mut segment = None;
    let ChunkSink { segment: writer, new: chunks_new, reused: chunks_reused, .. } = sink;
    if !writer.is_empty() {
        let (bytes, chunks) = writer.finish();
        segment_bytes = bytes.len() as u64;
        storage.put(&segment_name(placement.segment), &bytes)?;
        segment = Some((placement.segment, chunks));
    }

    let manifest = Manifest {
        id: placement.id,
        parent: placement.base.map(|(m, h)| (m.id, h)),
        created_unix_ms: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
        stats: ManifestStats {
            dirty_keys,
            segment_bytes,
            chunks_new,
            chunks_reused,
            duration_us: captured.started.elapsed().as_micros() as u64,
        },
        metadata: captured.metadata,
        tables: tables.into_iter().map(|(name, runs)| ManifestTable { name, runs }).collect(),
    };
    check_manifest_invariants(&manifest).map_err(|reason| Error::corrupted(manifest_name(manifest.id), reason))?;
    let (manifest_bytes, hash) = encode_manifest(&manifest);
    storage.put(&manifest_name(manifest.id), &manifest_bytes)?;
    // The segment and manifest names must be durable before HEAD names them.
    storage.sync()?;

    let previous_max_segment = placement.head.map_or(SegmentId(0), |h| h.max_segment_id);
    let head = Head {
        current: manifest.id,
        manifest_hash: hash,
        max_checkpoint_id: manifest.id,
        max_segment_id: if segment.is_some() { placement.segment } else { previous_max_segment },
    };
    storage.commit_head(&format::encode_head(&head))?;
    let bytes_written = segment_bytes + manifest_bytes.len() as u64 + HEAD_LEN as u64;
    Ok(Persisted { manifest, hash, head, segment, bytes_written })
}

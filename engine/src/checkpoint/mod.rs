//! Turning a captured dirty set into chunks, a segment and a manifest, and committing it.
//!
//! Capture (on the caller's thread, O(dirty)) lives in `state`; everything here is persist:
//! sort, cut into chunks, hash, deduplicate against stored chunks, write one segment with the
//! new chunks, write the manifest, make both durable, and move HEAD. Persist runs on the
//! store's background pipeline (`store/pipeline.rs`); chunks are hashed in parallel, a batch
//! at a time, and a run of thousands of entries is split in two halves by key, the second
//! sorted, cut and hashed by a parked thread beside the first (`write_run`, `part_thread.rs`).

mod chunker;
mod order;
mod part_thread;

use crate::format::{
    self, encode_manifest, encode_run_index_chunk, CheckpointId, ChunkHash, ChunkKind, Codec, Head, Manifest,
    ManifestHash, ManifestKind, ManifestStats, ManifestTable, RunIndex, RunIndexEntry, RunRef, SegmentChunk, SegmentId,
    SegmentWriter, HEAD_LEN,
};
use crate::options::Options;
use crate::state::{CapturedEntries, Key, Value};
use crate::storage::{manifest_name, segment_name, Storage};
use crate::version::check_manifest_invariants;
use crate::{Error, Result};
use part_thread::{FromPart, PartThread, SecondPart};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

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
/// over to the next segment id. Keeps every chunk table within `MAX_SEGMENT_FOOTER_LEN`.
/// 4 MiB segments let space come back piece by piece: a slice merge replaces a quarter of a
/// large base, and the segments that held only that quarter die whole instead of leaving a
/// large segment partly dead until the GC finds it sparse (tests/space: worst 1.83x with
/// 256 MiB segments, 1.65x with 4 MiB). Loads and restores measured no slower.
const SEGMENT_CHUNKS_MAX: usize = 1 << 20;
pub(crate) const SEGMENT_BYTES_MAX: usize = 4 * 1024 * 1024;
const _: () = assert!(SEGMENT_CHUNKS_MAX * 50 <= format::MAX_SEGMENT_FOOTER_LEN);

/// Largest run index chunk written: a run whose index would grow past it is ended and the
/// table's entries continue in another run (keys of the two runs do not overlap).
const RUN_INDEX_BYTES_MAX: usize = format::MAX_CHUNK_LEN / 2;

/// Builds the new segments of one checkpoint or merge, deduplicating every chunk against the
/// stored ones and those already written by it.
pub(crate) struct ChunkSink<'a> {
    /// Whether a chunk is already stored (and, for a checkpoint running beside a GC, keeps it
    /// stored until the checkpoint ends: see `store/pipeline.rs`).
    stored: &'a dyn Fn(&ChunkHash) -> bool,
    finished: Vec<SegmentWriter>,
    segment: SegmentWriter,
    in_segment: HashSet<ChunkHash>,
    codec: Codec,
    reused: Vec<ChunkHash>,
    new: u64,
    chunks_max: usize,
    bytes_max: usize,
    /// Where full segments are written at once ([`ChunkSink::spilling`]); `None`: all are
    /// kept in memory until [`Staged::write`] or the commit.
    spill: Option<&'a dyn Storage>,
    /// The segments `spill` wrote, encoded length and chunk table.
    spilled: Vec<StagedSegment>,
    /// The first error writing a full segment met; nothing more is written, and the commit
    /// (or [`Staged::write`]) returns it.
    spill_error: Option<Error>,
    /// The first id `spill` must not write ([`ChunkSink::below`]).
    spill_below: Option<SegmentId>,
    /// Whether segments are created under their names ([`ChunkSink::named_directly`]) rather
    /// than through a temporary.
    direct: bool,
    /// Where full segments are written by a thread of their own
    /// ([`ChunkSink::spilling_in_background`]), and that thread once started.
    background: Option<(Arc<dyn Storage>, Option<BackgroundSpill>)>,
    /// Tests only: starting the background writer fails, as when the process is out of threads.
    #[cfg(test)]
    refuse_thread: bool,
}

/// The thread writing a sink's full segments while the sink cuts the next one. Dropped
/// (the sink given up on an error path), it still waits for the writer, so no segment write
/// outlives the checkpoint that holds the commit lock for it.
struct BackgroundSpill {
    /// Hands it a segment; bounded at none waiting, so at most two segments are in memory:
    /// the one being written and the one being cut. `None` once closed.
    segments: Option<crossbeam_channel::Sender<StagedSegment>>,
    /// Its result: the segments written (bytes released), and the first error met, after
    /// which it writes nothing more. `None` once taken.
    written: Option<std::thread::JoinHandle<(Vec<StagedSegment>, Option<Error>)>>,
}

impl BackgroundSpill {
    fn start(storage: Arc<dyn Storage>, direct: bool) -> std::io::Result<BackgroundSpill> {
        let (segments, received) = crossbeam_channel::bounded::<StagedSegment>(0);
        let written = std::thread::Builder::new().name("cairn-spill".into()).spawn(move || {
            let (mut written, mut error) = (Vec::new(), None);
            for mut segment in received {
                if error.is_some() {
                    continue;
                }
                let bytes = segment.bytes.take().unwrap_or_default();
                match put_segment(storage.as_ref(), segment.id, &bytes, direct) {
                    Ok(()) => written.push(segment),
                    Err(e) => error = Some(e),
                }
            }
            (written, error)
        })?;
        Ok(BackgroundSpill { segments: Some(segments), written: Some(written) })
    }

    /// Hand it `segment`; `false` if the writer is gone (it ended on a panic).
    fn send(&self, segment: StagedSegment) -> bool {
        self.segments.as_ref().is_some_and(|s| s.send(segment).is_ok())
    }

    /// Close the channel and wait for the writer; its result, the first time.
    fn finish(&mut self) -> Option<std::thread::Result<(Vec<StagedSegment>, Option<Error>)>> {
        self.segments = None;
        self.written.take().map(std::thread::JoinHandle::join)
    }
}

impl Drop for BackgroundSpill {
    fn drop(&mut self) {
        // Whatever it wrote is above HEAD's marks, so deleted at the next open.
        let _ = self.finish();
    }
}

/// A segment a sink built: encoded and not yet written, or written by a spilling sink.
pub(crate) struct StagedSegment {
    id: SegmentId,
    /// The encoded segment; `None` once written.
    bytes: Option<Vec<u8>>,
    len: u64,
    chunks: Vec<SegmentChunk>,
}

impl StagedSegment {
    fn encode(w: SegmentWriter) -> Self {
        let id = w.id();
        let (bytes, chunks) = w.finish();
        StagedSegment { id, len: bytes.len() as u64, bytes: Some(bytes), chunks }
    }
}

impl<'a> ChunkSink<'a> {
    /// A sink whose first segment is `first_segment`; further ones take the following ids.
    pub(crate) fn new(stored: &'a dyn Fn(&ChunkHash) -> bool, first_segment: SegmentId, opts: &Options) -> Self {
        let codec = opts.compression.codec();
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
            spill: None,
            spilled: Vec::new(),
            spill_error: None,
            spill_below: None,
            direct: false,
            background: None,
            #[cfg(test)]
            refuse_thread: false,
        }
    }

    /// Create this sink's segments under their names ([`Storage::put_new`]: no temporary, no
    /// rename) instead of through a temporary ([`Storage::put`]).
    ///
    /// Only for a writer that holds the commit lock from taking its first segment id until its
    /// commit (or the deletion of what it wrote): a checkpoint. Until then a segment may be
    /// torn under its name, and is harmless only while its id is above HEAD's
    /// `max_segment_id`. A merge reserves its ids and writes outside the lock while
    /// checkpoints commit higher ids; a crash could then leave a torn segment below the mark,
    /// which reads as committed and damaged (`format-spec.md` 6.1).
    pub(crate) fn named_directly(mut self) -> Self {
        self.direct = true;
        self
    }

    /// Write each segment to `storage` as soon as it is full, rather than holding them all
    /// until the commit: a large checkpoint (a load) then keeps one segment in memory, not a
    /// copy of everything it writes. The written segments are named by nothing until the
    /// commit, like any segment written ahead of it; a caller that gives up before the
    /// commit deletes them ([`ChunkSink::discard_spilled`]).
    pub(crate) fn spilling(mut self, storage: &'a dyn Storage) -> Self {
        self.spill = Some(storage);
        self
    }

    /// [`ChunkSink::spilling`], with each full segment written by a thread of its own while
    /// this one cuts and hashes the next: a large checkpoint's (a load's) writes then overlap
    /// its encoding instead of following each segment. The thread starts at the first full
    /// segment, so a checkpoint of one segment starts none; if no thread can be started, full
    /// segments are written on the calling thread.
    pub(crate) fn spilling_in_background(mut self, storage: Arc<dyn Storage>) -> Self {
        self.background = Some((storage, None));
        self
    }

    /// Wait for the background writer (if one started) and take its result: the segments it
    /// wrote join `spilled`, its error (if none came first) `spill_error`.
    fn join_background(&mut self) {
        let Some((_, Some(spill))) = &mut self.background else { return };
        match spill.finish() {
            Some(Ok((written, error))) => {
                self.spilled.extend(written);
                if self.spill_error.is_none() {
                    self.spill_error = error;
                }
            }
            // Writing cannot panic short of memory exhaustion; if it did, so does this thread.
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            None => {}
        }
    }

    /// Never write a segment with an id of `limit` or above (they were not reserved for this
    /// sink): reaching it is an error, returned by the commit or [`Staged::write`].
    pub(crate) fn below(mut self, limit: SegmentId) -> Self {
        self.spill_below = Some(limit);
        self
    }

    /// Delete the segments this sink wrote already and make that durable (after waiting for
    /// a background writer to end).
    pub(crate) fn discard_spilled(&mut self, storage: &dyn Storage) -> Result<()> {
        self.join_background();
        discard(storage, &self.spilled)
    }

    /// Store `raw` unless a chunk with its hash exists; returns the hash.
    pub(crate) fn add(&mut self, kind: ChunkKind, raw: &[u8]) -> ChunkHash {
        let hash = ChunkHash::of(raw);
        self.add_hashed(kind, raw, hash);
        hash
    }

    /// [`ChunkSink::add`] for a chunk whose hash is known.
    fn add_hashed(&mut self, kind: ChunkKind, raw: &[u8], hash: ChunkHash) {
        if self.in_segment.contains(&hash) || (self.stored)(&hash) {
            self.reused.push(hash);
            return;
        }
        if !self.segment.is_empty()
            && (self.segment.chunk_count() >= self.chunks_max || self.segment.len() + raw.len() > self.bytes_max)
        {
            self.roll_over();
        }
        self.segment.push(hash, kind, raw, self.codec);
        self.in_segment.insert(hash);
        self.new += 1;
    }

    /// End the current segment (if it holds anything): what is added next goes to a new one.
    /// A merge seals between outputs that die at different times, so that each segment
    /// empties at once and the GC never has to copy the survivors of a half-dead one.
    pub(crate) fn seal(&mut self) {
        if !self.segment.is_empty() {
            self.roll_over();
        }
    }

    /// Close the current segment (kept, or written when spilling) and start the next id.
    fn roll_over(&mut self) {
        let next = SegmentWriter::new(SegmentId(self.segment.id().0 + 1));
        let full = std::mem::replace(&mut self.segment, next);
        if self.spill.is_none() && self.background.is_none() {
            self.finished.push(full);
            return;
        }
        // After a failed write the commit fails with that error: the rest need not be kept.
        if self.spill_below.is_some_and(|limit| full.id() >= limit) && self.spill_error.is_none() {
            self.spill_error = Some(Error::InvalidArgument(format!(
                "internal: segment {} is past the ids reserved for this write",
                full.id().0
            )));
        }
        if self.spill_error.is_some() {
            return;
        }
        let staged = StagedSegment::encode(full);
        #[cfg(test)]
        let refuse_thread = self.refuse_thread;
        #[cfg(not(test))]
        let refuse_thread = false;
        if let Some((storage, started)) = &mut self.background {
            let spill = match started {
                Some(spill) => Ok(spill),
                None if refuse_thread => Err(std::io::Error::from(std::io::ErrorKind::WouldBlock)),
                None => BackgroundSpill::start(storage.clone(), self.direct).map(|spill| started.insert(spill)),
            };
            match spill {
                // A send fails only if the writer has gone (it ended on a panic): the join
                // that follows reports that.
                Ok(spill) => {
                    if !spill.send(staged) {
                        self.join_background();
                    }
                }
                // No thread to be had (the process's limit): written on this one, as a
                // compaction's are, rather than failing the checkpoint (which would poison
                // the store). The next full segment tries again.
                Err(e) => {
                    tracing::warn!(error = %e, "no thread for the segment writer; writing on this one");
                    let storage = storage.clone();
                    self.write_now(storage.as_ref(), staged);
                }
            }
            return;
        }
        if let Some(storage) = self.spill {
            self.write_now(storage, staged);
        }
    }

    /// Write a full segment on this thread; its error, if any, is kept for the commit.
    fn write_now(&mut self, storage: &dyn Storage, mut staged: StagedSegment) {
        let bytes = staged.bytes.take().unwrap_or_default();
        match put_segment(storage, staged.id, &bytes, self.direct) {
            Ok(()) => self.spilled.push(staged),
            Err(e) => self.spill_error = Some(e),
        }
    }

    /// The segments still in memory, in id order (empty ones left out; a spilling sink's
    /// written ones are in `spilled`).
    fn into_segments(self) -> (Vec<SegmentWriter>, u64, Vec<ChunkHash>) {
        let mut segments = self.finished;
        if !self.segment.is_empty() {
            segments.push(self.segment);
        }
        (segments, self.new, self.reused)
    }
}

/// Chunks hashed together, in parallel: bounds the memory the cut-but-unstored chunks take.
const HASH_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Below this many bytes a batch is hashed on the calling thread (spawning costs more).
const PARALLEL_HASH_MIN_BYTES: usize = 2 * 1024 * 1024;

/// Sort one table's entries, cut them into chunks, and add the chunks and run indexes.
/// Returns the runs, in key order (usually one; more only when a run index would exceed its
/// bound); none for no entries. `entries` is left sorted, each value released (`None`) once
/// written: what a caller needs after is the keys (to mark them dirty again if the
/// checkpoint does not commit). Chunks are hashed on up to `threads` threads; a run of
/// `SPLIT_MIN_ENTRIES` to `SPLIT_MAX_ENTRIES` entries is cut as two halves, the second
/// sorted, cut and hashed by the process's part thread (`part_thread.rs`) when `threads`
/// allows one and it gets to it in time, into the same bytes.
pub(crate) fn write_run(
    sink: &mut ChunkSink<'_>,
    entries: &mut CapturedEntries,
    target: usize,
    threads: usize,
) -> Vec<RunRef> {
    write_runs_bounded(sink, entries, target, RUN_INDEX_BYTES_MAX, threads, PartThread::shared())
}

fn write_runs_bounded(
    sink: &mut ChunkSink<'_>,
    entries: &mut CapturedEntries,
    target: usize,
    index_bytes_max: usize,
    threads: usize,
    part_thread: Option<&PartThread>,
) -> Vec<RunRef> {
    // In key order first (`order.rs`): the two parts below are then each in order too.
    order::sort_by_key(entries);
    if !(SPLIT_MIN_ENTRIES..=SPLIT_MAX_ENTRIES).contains(&entries.len()) {
        let mut writer = RunWriter::bounded(target, threads, index_bytes_max);
        feed(entries, |key, value| writer.push_entry(sink, key, value));
        return writer.finish(sink);
    }
    // Two parts, each cut from an empty chunk (`format-spec.md` 5), so that the second can be
    // cut and hashed on another thread with the same result as on this one. The first `half`
    // keys in order go first.
    let half = entries.len() / 2;
    // Bounded: a large second part waits for this thread rather than piling up batches.
    let (out, received) = crossbeam_channel::bounded::<FromPart>(SECOND_PART_BATCHES);
    let part = SecondPart {
        entries: entries.split_off(half),
        target,
        out,
        #[cfg(test)]
        panic_at_batch: None,
    };
    write_parts(sink, entries, part, received, index_bytes_max, threads, part_thread)
}

/// Cut `entries`, the first part of a run, then `part`: the part thread cuts it meanwhile
/// if it takes it in time, else this thread does.
fn write_parts(
    sink: &mut ChunkSink<'_>,
    entries: &mut CapturedEntries,
    part: SecondPart,
    received: crossbeam_channel::Receiver<FromPart>,
    index_bytes_max: usize,
    threads: usize,
    part_thread: Option<&PartThread>,
) -> Vec<RunRef> {
    let target = part.target;
    let (offered, mut part) = match part_thread {
        Some(thread) if threads >= 2 => (Some(thread.offer(part)), None),
        _ => (None, Some(part)),
    };
    // The part thread, if it takes the part, hashes on one of the threads.
    let hashing = if offered.is_some() { threads - 1 } else { threads };
    let mut writer = RunWriter::bounded(target, hashing, index_bytes_max);
    // In order already when it comes from `write_runs_bounded`; the sort then checks that in
    // one pass (it is linear on sorted input).
    entries.sort_unstable_by(by_key);
    feed(entries, |key, value| writer.push_entry(sink, key, value));
    writer.close(sink);
    if let Some(offered) = offered {
        part = offered.reclaim();
    }
    let mut second = match part {
        // Not taken (or never offered): cut here.
        Some(part) => {
            let mut second = part.entries;
            second.sort_unstable_by(by_key);
            feed(&mut second, |key, value| writer.push_entry(sink, key, value));
            second
        }
        None => {
            let mut second = None;
            for message in received.iter() {
                match message {
                    FromPart::Batch(batch) => writer.add_hashed(sink, &batch),
                    FromPart::Done(entries) => second = Some(entries),
                }
            }
            // Cutting cannot panic short of memory exhaustion; had the part thread done so,
            // the run would lack entries and must not be committed: this thread panics too.
            let Some(second) = second else {
                std::panic::panic_any("the thread cutting a run's second part panicked");
            };
            second
        }
    };
    entries.append(&mut second);
    writer.finish(sink)
}

/// The order of a run's entries: by key (each key is there once).
fn by_key(a: &(Key, Option<Value>), b: &(Key, Option<Value>)) -> std::cmp::Ordering {
    a.0.cmp(&b.0)
}

/// A checkpoint's run of at least this many entries is cut as two parts, the second by the
/// part thread when there are two threads: below it, a thread costs more than it saves.
const SPLIT_MIN_ENTRIES: usize = 4096;

/// ... and of at most this many: a larger run (a load) is cut in one part, since the second
/// part's batches waiting for the first (and each thread's allocator arena) raised the peak
/// memory of the standard workload's load by 10-15%.
const SPLIT_MAX_ENTRIES: usize = 1 << 18;

/// Batches of the second part that may wait for the first part to be added.
const SECOND_PART_BATCHES: usize = 2;

/// Hand `part`'s entries to `push` in order: values are read ahead a group at a time and
/// released once the group is copied.
fn feed(part: &mut [(Key, Option<Value>)], mut push: impl FnMut(&[u8], Option<&[u8]>)) {
    for group in part.chunks_mut(WARM_AHEAD) {
        warm_values(group);
        for (key, value) in group.iter() {
            push(key.as_slice(), value.as_deref());
        }
        // Released now, while their memory is in cache: freeing every value after the commit
        // touched each once more, scattered over the heap. (After the group rather than
        // each after its copy: a release is an atomic decrement, which waits for every
        // load before it, the group's reads ahead included.)
        for (_, value) in group.iter_mut() {
            *value = None;
        }
    }
}

/// Values read ahead together by [`warm_values`].
const WARM_AHEAD: usize = 32;

/// Read the first and last byte of every value of `group`, so that their cache misses are
/// in flight together rather than one after the other as each value is copied. A captured
/// value lives wherever the table allocated it, so copying a checkpoint's values is one
/// miss each (about 230 ns on this VM) when taken one at a time.
fn warm_values(group: &[(Key, Option<Value>)]) {
    let mut touched = 0u8;
    for value in group.iter().filter_map(|(_, v)| v.as_deref()) {
        touched = touched.wrapping_add(value.first().copied().unwrap_or(0) ^ value.last().copied().unwrap_or(0));
    }
    std::hint::black_box(touched);
}

/// A stored entries chunk listed again by a spliced run, with its raw length.
pub(crate) type ChunkRef = (RunIndexEntry, u64);

/// An entries chunk cut but not yet hashed: `arena[start..end]` of its batch, whose first
/// key is `arena[first_key.0..first_key.1]`.
struct Cut {
    start: usize,
    end: usize,
    entries: u64,
    first_key: (usize, usize),
}

impl Cut {
    fn raw<'a>(&self, arena: &'a [u8]) -> &'a [u8] {
        arena.get(self.start..self.end).unwrap_or_default()
    }

    fn first_key<'a>(&self, arena: &'a [u8]) -> &'a [u8] {
        arena.get(self.first_key.0..self.first_key.1).unwrap_or_default()
    }
}

/// blake3 of every chunk of `batch` (cut from `arena`), on up to `threads` threads.
fn hash_batch(arena: &[u8], batch: &[Cut], threads: usize) -> Vec<ChunkHash> {
    let hash_all = |part: &[Cut]| part.iter().map(|c| ChunkHash::of(c.raw(arena))).collect::<Vec<_>>();
    let threads = threads.min(batch.len());
    if threads <= 1 || arena.len() < PARALLEL_HASH_MIN_BYTES {
        return hash_all(batch);
    }
    let per_thread = batch.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let parts: Vec<_> = batch.chunks(per_thread).map(|part| scope.spawn(move || hash_all(part))).collect();
        // A hashing thread cannot panic short of memory exhaustion; if one did, hash here.
        parts
            .into_iter()
            .zip(batch.chunks(per_thread))
            .flat_map(|(h, part)| h.join().unwrap_or_else(|_| hash_all(part)))
            .collect()
    })
}

/// Builds the runs of one table from its cut chunks, in order, ending a run when its index
/// would pass `index_bytes_max`.
struct RunBuilder {
    runs: Vec<RunRef>,
    index: RunIndex,
    index_bytes: usize,
    entries: u64,
    data_bytes: u64,
    index_bytes_max: usize,
}

impl RunBuilder {
    const EMPTY_INDEX_BYTES: usize = 1 + 10;

    fn new(index_bytes_max: usize) -> Self {
        RunBuilder {
            runs: Vec::new(),
            index: RunIndex::default(),
            index_bytes: Self::EMPTY_INDEX_BYTES,
            entries: 0,
            data_bytes: 0,
            index_bytes_max,
        }
    }

    fn push(&mut self, sink: &mut ChunkSink<'_>, raw: &[u8], entries: u64, hash: ChunkHash, first_key: &[u8]) {
        let entry = RunIndexEntry { hash, entries, first_key: first_key.to_vec() };
        // Listed first: a run ended by the listing has its index stored before this chunk.
        self.list(sink, entry, raw.len() as u64);
        sink.add_hashed(ChunkKind::Entries, raw, hash);
    }

    /// List a stored entries chunk (`raw_len` bytes) again, without writing it.
    fn push_ref(&mut self, sink: &mut ChunkSink<'_>, chunk: &RunIndexEntry, raw_len: u64) {
        sink.reused.push(chunk.hash);
        self.list(sink, chunk.clone(), raw_len);
    }

    /// Add `chunk` to the run index, first ending the run if the index would pass its bound.
    fn list(&mut self, sink: &mut ChunkSink<'_>, chunk: RunIndexEntry, raw_len: u64) {
        let index_entry_bytes = 32 + 10 + 10 + chunk.first_key.len();
        if !self.index.chunks.is_empty() && self.index_bytes + index_entry_bytes > self.index_bytes_max {
            self.finish(sink);
        }
        self.data_bytes += raw_len;
        self.entries += chunk.entries;
        self.index_bytes += index_entry_bytes;
        self.index.chunks.push(chunk);
    }

    fn finish(&mut self, sink: &mut ChunkSink<'_>) {
        if self.index.chunks.is_empty() {
            return;
        }
        let index_raw = encode_run_index_chunk(&self.index);
        let index_hash = sink.add(ChunkKind::RunIndex, &index_raw);
        self.runs.push(RunRef {
            index: index_hash,
            entries: self.entries,
            data_bytes: self.data_bytes,
            chunks: self.index.chunks.len() as u64,
        });
        self.index = RunIndex::default();
        self.index_bytes = Self::EMPTY_INDEX_BYTES;
        (self.entries, self.data_bytes) = (0, 0);
    }
}

/// Cuts entries handed over in key order into entries chunks, back to back in one buffer (the
/// batch's arena), by the rule of `format-spec.md` 5. One buffer rather than one allocation
/// per chunk, each sized for the largest chunk (twice the target) and half used on average:
/// the load of the standard workload (S = 1M) peaked 16 MB lower.
struct Cutter {
    arena: Vec<u8>,
    batch: Vec<Cut>,
    /// The chunk being cut: where it starts in the arena, its entries so far, its first key.
    open: Option<(usize, u64, (usize, usize))>,
    target: usize,
}

/// A batch of cut chunks: their arena, where each is in it, and their hashes.
struct HashedBatch {
    arena: Vec<u8>,
    cuts: Vec<Cut>,
    hashes: Vec<ChunkHash>,
}

impl Cutter {
    fn new(target: usize) -> Self {
        Cutter { arena: Vec::new(), batch: Vec::new(), open: None, target }
    }

    /// Add the next entry; its key must be greater than every key handed over before. Returns
    /// whether the batch is full ([`HASH_BATCH_BYTES`]) with no chunk open: time to hash it.
    fn push_entry(&mut self, key: &[u8], value: Option<&[u8]>) -> bool {
        let before = self.arena.len();
        let (start, entries, first_key) = match self.open {
            Some(open) => open,
            None => {
                self.arena.push(ChunkKind::Entries as u8);
                (before, 0, (0, 0))
            }
        };
        let entry_start = self.arena.len();
        format::put_entry(&mut self.arena, key, value);
        let key_end = self.arena.len() - value.map_or(0, <[u8]>::len);
        let first_key = if entries == 0 { (key_end - key.len(), key_end) } else { first_key };
        let entry_len = self.arena.len() - entry_start;
        let chunk_len = self.arena.len() - start;
        if chunker::cut_after(chunker::key_hash(key), entry_len, chunk_len, self.target) {
            self.open = None;
            self.batch.push(Cut { start, end: self.arena.len(), entries: entries + 1, first_key });
            self.arena.len() >= HASH_BATCH_BYTES
        } else {
            self.open = Some((start, entries + 1, first_key));
            false
        }
    }

    /// End the chunk being cut, if any.
    fn close(&mut self) {
        if let Some((start, entries, first_key)) = self.open.take() {
            self.batch.push(Cut { start, end: self.arena.len(), entries, first_key });
        }
    }

    /// Hash the chunks cut so far (none may be open) on up to `threads` threads, and hand
    /// them over with their arena; the cutter starts an empty one.
    fn take_hashed(&mut self, threads: usize) -> HashedBatch {
        let hashes = hash_batch(&self.arena, &self.batch, threads);
        HashedBatch { arena: std::mem::take(&mut self.arena), cuts: std::mem::take(&mut self.batch), hashes }
    }

    /// Take back a batch's buffers, emptied, once its chunks are added: the next batch is cut
    /// into the same allocation. The cutter must hold no chunk.
    fn recycle(&mut self, mut batch: HashedBatch) {
        batch.arena.clear();
        batch.cuts.clear();
        self.arena = batch.arena;
        self.batch = batch.cuts;
    }
}

/// Writes the runs of one table from entries handed over one at a time in strictly
/// increasing key order, and stored chunks listed again between them (a spliced run: a slice
/// merge re-cuts only its slice of a run). The entries are never all held at once, so a merge
/// streams its inputs into it.
///
/// Entries are cut ([`Cutter`]), hashed together once the batch holds [`HASH_BATCH_BYTES`],
/// added, and the arena is reused for the next batch.
pub(crate) struct RunWriter {
    runs: RunBuilder,
    cutter: Cutter,
    threads: usize,
}

impl RunWriter {
    /// A writer cutting chunks of about `target` bytes, hashing on up to `threads` threads.
    pub(crate) fn new(target: usize, threads: usize) -> Self {
        Self::bounded(target, threads, RUN_INDEX_BYTES_MAX)
    }

    fn bounded(target: usize, threads: usize, index_bytes_max: usize) -> Self {
        RunWriter { runs: RunBuilder::new(index_bytes_max), cutter: Cutter::new(target), threads }
    }

    /// Add the next entry; its key must be greater than every key handed over before.
    pub(crate) fn push_entry(&mut self, sink: &mut ChunkSink<'_>, key: &[u8], value: Option<&[u8]>) {
        if self.cutter.push_entry(key, value) {
            self.flush(sink);
        }
    }

    /// List a stored entries chunk again, after every entry handed over so far; the entries
    /// handed over next must come after its keys.
    pub(crate) fn push_ref(&mut self, sink: &mut ChunkSink<'_>, (chunk, raw_len): &ChunkRef) {
        self.close(sink);
        self.runs.push_ref(sink, chunk, *raw_len);
    }

    /// End the chunk being cut and add every chunk cut so far.
    fn close(&mut self, sink: &mut ChunkSink<'_>) {
        self.cutter.close();
        self.flush(sink);
    }

    /// Hash the batch and add its chunks; the arena is reused.
    fn flush(&mut self, sink: &mut ChunkSink<'_>) {
        let batch = self.cutter.take_hashed(self.threads);
        self.add_hashed(sink, &batch);
        self.cutter.recycle(batch);
    }

    /// Add chunks cut and hashed elsewhere, after every chunk added so far.
    fn add_hashed(&mut self, sink: &mut ChunkSink<'_>, batch: &HashedBatch) {
        for (cut, hash) in batch.cuts.iter().zip(&batch.hashes) {
            self.runs.push(sink, cut.raw(&batch.arena), cut.entries, *hash, cut.first_key(&batch.arena));
        }
    }

    /// The runs written, in key order (usually one; more only when a run index would exceed
    /// its bound); none when nothing was handed over.
    pub(crate) fn finish(mut self, sink: &mut ChunkSink<'_>) -> Vec<RunRef> {
        self.close(sink);
        self.runs.finish(sink);
        self.runs.runs
    }
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

/// The segments a sink built, encoded, not yet written.
pub(crate) struct Staged {
    /// In id order; those a spilling sink wrote already first.
    segments: Vec<StagedSegment>,
    /// Why a spilling sink could not write a segment.
    spill_error: Option<Error>,
    chunks_new: u64,
    reused: Vec<ChunkHash>,
    /// Whether the segments are already durable under their names ([`Staged::write`]).
    written: bool,
    /// Whether they are created under their names ([`ChunkSink::named_directly`]).
    direct: bool,
}

impl Staged {
    /// Encode the sink's segments still in memory.
    pub(crate) fn from_sink(mut sink: ChunkSink<'_>) -> Self {
        sink.join_background();
        let mut segments = std::mem::take(&mut sink.spilled);
        let spill_error = sink.spill_error.take();
        let direct = sink.direct;
        let (writers, chunks_new, reused) = sink.into_segments();
        segments.extend(writers.into_iter().map(StagedSegment::encode));
        Staged { segments, spill_error, chunks_new, reused, written: false, direct }
    }

    /// Most segments a sink can produce for at most `chunks` chunks of at most `raw_bytes`
    /// raw bytes in all (to reserve their ids before building them).
    pub(crate) fn segments_bound(raw_bytes: u64, chunks: u64) -> u64 {
        segments_bound_for(raw_bytes, chunks, SEGMENT_BYTES_MAX, SEGMENT_CHUNKS_MAX)
    }

    /// Write the segments and make their names durable, ahead of the commit: a manifest
    /// naming them may then be committed later. Until it is, they are named by nothing.
    pub(crate) fn write(&mut self, storage: &dyn Storage) -> Result<()> {
        if let Some(e) = self.spill_error.take() {
            return Err(e);
        }
        for segment in &mut self.segments {
            if let Some(bytes) = segment.bytes.take() {
                put_segment(storage, segment.id, &bytes, self.direct)?;
            }
        }
        if !self.segments.is_empty() {
            storage.sync()?;
        }
        self.written = true;
        Ok(())
    }

    /// The ids of its segments.
    pub(crate) fn segment_ids(&self) -> Vec<SegmentId> {
        self.segments.iter().map(|s| s.id).collect()
    }
}

/// [`Staged::segments_bound`] for a sink closing segments at `bytes_max` bytes and
/// `chunks_max` chunks.
///
/// A segment is closed only when the next chunk would take it past `bytes_max` (its header
/// and stored bytes so far, plus that chunk's raw bytes; a chunk is never stored larger than
/// raw) or past `chunks_max` chunks. Summed over the k closings for bytes,
/// `k * bytes_max < k * header + 2 * raw_bytes` (each chunk counted at most once in its own
/// segment and once as the next one's first), so `k < 2 * raw_bytes / (bytes_max - header)`;
/// closings for chunks are at most `chunks / chunks_max`; the last segment is never closed.
fn segments_bound_for(raw_bytes: u64, chunks: u64, bytes_max: usize, chunks_max: usize) -> u64 {
    let room = bytes_max.saturating_sub(format::SEGMENT_HEADER_LEN).max(1) as u64;
    (2 * raw_bytes) / room + chunks / chunks_max.max(1) as u64 + 1
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
    commit_staged(storage, Staged::from_sink(sink), new, head)
}

/// [`commit`] of staged segments (written already, or written here).
pub(crate) fn commit_staged(
    storage: &dyn Storage,
    staged: Staged,
    new: NewManifest,
    head: Option<Head>,
) -> Result<Persisted> {
    let Staged { mut segments, spill_error, chunks_new, reused, written, direct } = staged;
    if let Some(e) = spill_error {
        return Err(e);
    }
    let segment_bytes: u64 = segments.iter().map(|s| s.len).sum();
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
    // Every check runs before the first write, so a refused manifest leaves nothing behind
    // (segments a spilling sink wrote are deleted).
    let encoded = check_manifest_invariants(&manifest)
        .map_err(|reason| Error::corrupted(manifest_name(manifest.id), reason))
        .and_then(|()| {
            let (bytes, hash) = encode_manifest(&manifest);
            if bytes.len() > format::MAX_MANIFEST_LEN {
                return Err(Error::InvalidArgument(format!(
                    "the manifest would be {} bytes, over the bound of {}: compact to reduce the runs",
                    bytes.len(),
                    format::MAX_MANIFEST_LEN
                )));
            }
            Ok((bytes, hash))
        });
    let (manifest_bytes, hash) = match encoded {
        Ok(encoded) => encoded,
        Err(refusal) => {
            if !written {
                let spilled: Vec<StagedSegment> = segments.into_iter().filter(|s| s.bytes.is_none()).collect();
                discard(storage, &spilled)?;
            }
            return Err(refusal);
        }
    };
    if !written {
        for segment in &mut segments {
            if let Some(bytes) = segment.bytes.take() {
                put_segment(storage, segment.id, &bytes, direct)?;
            }
        }
    }
    // Under its name directly: every commit holds the commit lock from taking the manifest's
    // id to moving HEAD, so no other commit raises `max_checkpoint_id` past it meanwhile.
    storage.put_new(&manifest_name(manifest.id), &manifest_bytes)?;
    // The segment and manifest names must be durable before HEAD names them.
    storage.sync()?;

    let previous = head.map_or((CheckpointId(0), SegmentId(0)), |h| (h.max_checkpoint_id, h.max_segment_id));
    let last_segment = segments.iter().map(|s| s.id).max();
    let head = Head {
        current: manifest.id,
        manifest_hash: hash,
        max_checkpoint_id: previous.0.max(manifest.id),
        max_segment_id: last_segment.map_or(previous.1, |id| previous.1.max(id)),
    };
    storage.commit_head(&format::encode_head(&head))?;
    let manifest_len = manifest_bytes.len() as u64;
    let bytes_written = segment_bytes + manifest_len + HEAD_LEN as u64;
    let segments = segments.into_iter().map(|s| (s.id, s.chunks)).collect();
    Ok(Persisted { manifest, hash, head, segments, reused, bytes_written, manifest_len })
}

/// Write a segment: under its name directly, or through a temporary
/// ([`ChunkSink::named_directly`]).
fn put_segment(storage: &dyn Storage, id: SegmentId, bytes: &[u8], direct: bool) -> Result<()> {
    if direct {
        storage.put_new(&segment_name(id), bytes)
    } else {
        storage.put(&segment_name(id), bytes)
    }
}

/// Delete `segments` (written ahead of a commit that will not happen) and make that durable.
fn discard(storage: &dyn Storage, segments: &[StagedSegment]) -> Result<()> {
    delete_segments(storage, segments.iter().map(|s| s.id))
}

/// Delete segments written ahead of a commit that will not happen (nothing names them), then
/// make that durable; nothing to do for none.
pub(crate) fn delete_segments(storage: &dyn Storage, ids: impl IntoIterator<Item = SegmentId>) -> Result<()> {
    let mut deleted = false;
    for id in ids {
        storage.delete(&segment_name(id))?;
        deleted = true;
    }
    if deleted {
        storage.sync()?;
    }
    Ok(())
}

/// Sort, chunk, hash and encode `entries` into in-memory segments with no I/O and no stored
/// chunks to deduplicate against; returns the segment bytes produced. For the `hash_chunk`
/// benchmark.
pub(crate) fn encode_only(mut entries: CapturedEntries, target: usize, threads: usize) -> u64 {
    let mut sink = ChunkSink::new(&|_| false, SegmentId(1), &Options::new());
    write_run(&mut sink, &mut entries, target, threads);
    let (segments, _, _) = sink.into_segments();
    segments.into_iter().map(|w| w.finish().0.len() as u64).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Key, Value};
    use crate::storage::{SimFs, SimStorage};
    use crate::version::{self, ChunkIndex};
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A segment finished in memory: its id, bytes and chunk table.
    type Finished = (SegmentId, Vec<u8>, Vec<SegmentChunk>);

    /// The sink's segments, finished, without writing them.
    fn finished(sink: ChunkSink<'_>) -> Vec<Finished> {
        let (writers, _, _) = sink.into_segments();
        writers
            .into_iter()
            .map(|w| {
                let id = w.id();
                let (bytes, chunks) = w.finish();
                (id, bytes, chunks)
            })
            .collect()
    }

    /// `segments` written to a new simulated store, with their chunks indexed, to read back.
    fn stored(segments: &[Finished]) -> Result<(SimStorage, ChunkIndex)> {
        let storage = SimFs::new().storage();
        let mut index = ChunkIndex::default();
        for (id, bytes, chunks) in segments {
            storage.put(&segment_name(*id), bytes)?;
            index.add_segment(*id, chunks);
        }
        Ok((storage, index))
    }

    /// However chunk sizes fall, a sink never uses more segment ids than the bound reserves
    /// (a merge writes into ids reserved ahead; one more would be a checkpoint's).
    #[test]
    fn the_segment_bound_covers_every_chunk_size_mix() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for case in 0..300 {
            let (bytes_max, chunks_max) = (64 + case % 7 * 50, 1 + case % 5);
            let mut sink = ChunkSink::new(&|_| false, SegmentId(1), &Options::new());
            (sink.bytes_max, sink.chunks_max) = (bytes_max, chunks_max);
            let (mut raw_bytes, mut chunks) = (0u64, 0u64);
            for i in 0..(1 + case % 40) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Sizes from 1 byte to twice the segment bound: small, near and past it; every
                // third case only chunks just too big for two to share a segment (the worst).
                let len = if case % 3 == 0 {
                    (bytes_max - format::SEGMENT_HEADER_LEN) / 2 + 1
                } else {
                    1 + (x % (2 * bytes_max as u64)) as usize
                };
                let mut raw = vec![0u8; len];
                let n = raw.len().min(8);
                raw[..n].copy_from_slice(&((case * 1000 + i) as u64).to_le_bytes()[..n]);
                raw_bytes += raw.len() as u64;
                chunks += 1;
                sink.add(ChunkKind::Entries, &raw);
            }
            let (segments, _, _) = sink.into_segments();
            let bound = segments_bound_for(raw_bytes, chunks, bytes_max, chunks_max);
            assert!(segments.len() as u64 <= bound, "case {case}: {} segments, bound {bound}", segments.len());
        }
    }

    /// A spilling sink never writes a segment id past its limit (those are another writer's):
    /// reaching it is an error for the commit, and nothing is written from there on.
    #[test]
    fn a_spilling_sink_stops_at_its_id_limit() {
        let fs = SimFs::new();
        let storage = fs.storage();
        let mut sink = ChunkSink::new(&|_| false, SegmentId(1), &Options::new()).spilling(&storage).below(SegmentId(3));
        sink.chunks_max = 1;
        for i in 0u8..5 {
            sink.add(ChunkKind::Entries, &[i; 10]);
        }
        let written: Vec<String> = fs.files().into_iter().filter(|f| f.starts_with("segments/")).collect();
        assert_eq!(written, [segment_name(SegmentId(1)), segment_name(SegmentId(2))]);
        let result = Staged::from_sink(sink).write(&storage);
        assert!(matches!(result, Err(Error::InvalidArgument(ref m)) if m.contains("reserved")), "{result:?}");
        assert_eq!(fs.files().into_iter().filter(|f| f.starts_with("segments/")).count(), 2);
    }

    /// A sink spilling in the background writes every full segment as a sink spilling on its
    /// own thread does, while it cuts the next; the first write error reaches the commit and
    /// nothing is written after it; discarding waits for the writer and deletes what it wrote.
    #[test]
    fn a_background_spill_writes_what_a_spill_on_this_thread_writes() {
        let fill = |sink: &mut ChunkSink<'_>| {
            sink.chunks_max = 1;
            for i in 0u8..6 {
                sink.add(ChunkKind::Entries, &[i; 10]);
            }
        };
        let segments = |fs: &SimFs| -> Vec<(String, Option<Vec<u8>>)> {
            fs.files().into_iter().filter(|f| f.starts_with("segments/")).map(|f| (f.clone(), fs.file(&f))).collect()
        };
        let background = |fs: &SimFs| {
            let storage: Arc<dyn Storage> = Arc::new(fs.storage());
            let mut sink = ChunkSink::new(&|_| false, SegmentId(1), &Options::new())
                .spilling_in_background(storage.clone())
                .named_directly();
            fill(&mut sink);
            (sink, storage)
        };

        let here = SimFs::new();
        let here_storage = here.storage();
        let mut sink =
            ChunkSink::new(&|_| false, SegmentId(1), &Options::new()).spilling(&here_storage).named_directly();
        fill(&mut sink);
        let staged_here = Staged::from_sink(sink);
        let fs = SimFs::new();
        let (sink, _) = background(&fs);
        assert!(sink.background.as_ref().is_some_and(|(_, started)| started.is_some()), "no writer thread");
        let staged = Staged::from_sink(sink);
        let ids: Vec<SegmentId> = (1..=6).map(SegmentId).collect();
        assert_eq!(staged.segment_ids(), ids);
        assert_eq!(staged_here.segment_ids(), ids);
        // Five written, the sixth still in memory for the commit; the same bytes either way.
        assert_eq!(segments(&fs).len(), 5);
        assert!(segments(&fs) == segments(&here));

        // No thread to be had: the same segments, written on this thread.
        let threadless = SimFs::new();
        let storage: Arc<dyn Storage> = Arc::new(threadless.storage());
        let mut sink =
            ChunkSink::new(&|_| false, SegmentId(1), &Options::new()).spilling_in_background(storage).named_directly();
        sink.refuse_thread = true;
        fill(&mut sink);
        assert!(sink.background.as_ref().is_some_and(|(_, started)| started.is_none()), "a writer thread started");
        let staged = Staged::from_sink(sink);
        assert_eq!(staged.segment_ids(), ids);
        assert!(segments(&threadless) == segments(&here));

        // The write of the second segment fails (each is a write and an fsync): the commit
        // gets the error, and no later segment is written.
        let failing = SimFs::new();
        failing.fail_at(failing.ops() + 3, false);
        let (sink, storage) = background(&failing);
        let result = Staged::from_sink(sink).write(storage.as_ref());
        assert!(matches!(result, Err(Error::Io { .. })), "{result:?}");
        assert_eq!(segments(&failing).into_iter().map(|(f, _)| f).collect::<Vec<_>>(), [segment_name(SegmentId(1))]);

        // Discarding deletes every segment written, once the writer is done.
        let discarded = SimFs::new();
        let (mut sink, storage) = background(&discarded);
        assert_eq!(sink.discard_spilled(storage.as_ref()).map_err(|e| e.to_string()), Ok(()));
        assert!(segments(&discarded).is_empty(), "{:?}", segments(&discarded));
    }

    /// A sink given up without its commit or discard (an error path) waits, as it is dropped,
    /// for the segment its writer is writing: no write outlives the checkpoint, which holds
    /// the commit lock for those ids only until it returns.
    #[test]
    fn a_dropped_background_spill_waits_for_its_writer() {
        let fs = SimFs::new();
        let storage: Arc<dyn Storage> = Arc::new(fs.storage());
        let mut sink =
            ChunkSink::new(&|_| false, SegmentId(1), &Options::new()).spilling_in_background(storage).named_directly();
        sink.chunks_max = 1;
        fs.hold_writes();
        // The second chunk closes the first segment: the writer takes it and waits at the gate.
        for i in 0u8..2 {
            sink.add(ChunkKind::Entries, &[i; 10]);
        }
        fs.wait_for_held_write();
        let dropped = AtomicBool::new(false);
        let early = std::thread::scope(|scope| {
            let watcher = scope.spawn(|| {
                // Not proof of waiting on its own (the drop might just be slow), but a drop
                // that did not wait would be done long before this.
                std::thread::sleep(std::time::Duration::from_millis(50));
                let early = dropped.load(Ordering::SeqCst);
                fs.release_writes();
                early
            });
            drop(sink);
            dropped.store(true, Ordering::SeqCst);
            watcher.join().unwrap_or(true)
        });
        assert!(!early, "dropped while its segment was still being written");
        assert_eq!(fs.files().into_iter().filter(|f| f.starts_with("segments/")).count(), 1);
    }

    /// Entries of keys `0..n` (big endian), in reverse order, with values of 100 to 4,900
    /// bytes: [`large_value`].
    fn large_entries(n: u32) -> CapturedEntries {
        (0..n).rev().map(|i| (Key::from(&i.to_be_bytes()[..]), Some(Value::from(large_value(i))))).collect()
    }

    fn large_value(i: u32) -> Vec<u8> {
        vec![i as u8; 100 + (i as usize % 9) * 600]
    }

    /// Left sorted, every value released, every key kept.
    fn assert_sorted_and_released(entries: &CapturedEntries, n: u32) {
        let keys: Vec<[u8; 4]> = (0..n).map(u32::to_be_bytes).collect();
        assert!(entries.iter().map(|(k, _)| k.as_slice()).eq(keys.iter().map(|k| &k[..])));
        assert!(entries.iter().all(|(_, v)| v.is_none()));
    }

    /// A run of `SPLIT_MIN_ENTRIES` or more is cut as two parts, the second by the part
    /// thread when there are threads to spare and it takes it in time: the chunks, segments
    /// and runs are the same bytes on one thread, two and three, with the process's part
    /// thread, without one, and with a thread that always takes the part; the first part
    /// ends a chunk; every entry reads back. The second part spans more hash batches than may
    /// wait, so the part thread has to wait too.
    #[test]
    fn a_large_run_cuts_the_same_on_one_thread_and_more() -> Result<()> {
        let n = 3 * SPLIT_MIN_ENTRIES as u32;
        let second_part_bytes: usize = (n / 2..n).map(|i| large_value(i).len()).sum();
        assert!(second_part_bytes > (SECOND_PART_BATCHES + 1) * HASH_BATCH_BYTES, "{second_part_bytes}");
        let Some(own) = PartThread::own() else { panic!("no thread for the second part") };
        let cut = |threads: usize, part_thread: Option<&PartThread>| {
            let mut entries = large_entries(n);
            let mut sink = ChunkSink::new(&|_| false, SegmentId(1), &Options::new());
            let runs = write_runs_bounded(&mut sink, &mut entries, 65_536, RUN_INDEX_BYTES_MAX, threads, part_thread);
            assert_sorted_and_released(&entries, n);
            (runs, finished(sink))
        };
        let (runs, segments) = cut(1, None);
        for (threads, part_thread) in [(2, PartThread::shared()), (3, PartThread::shared()), (2, None), (2, Some(&own))]
        {
            let (other_runs, other_segments) = cut(threads, part_thread);
            assert_eq!(other_runs, runs, "{threads} threads");
            assert!(other_segments == segments, "{threads} threads: other segment bytes");
        }
        assert_eq!(own.taken(), 1, "the test's own thread did not cut the second part");
        let (storage, index) = stored(&segments)?;
        let [run] = runs.as_slice() else { panic!("{} runs", runs.len()) };
        let listing = version::read_run_index(&storage, &index, &run.index)?;
        assert!(listing.chunks.iter().any(|c| c.first_key == (n / 2).to_be_bytes()), "no chunk starts the second part");
        let table = ManifestTable { name: "t".into(), runs: runs.clone() };
        let mut got: Vec<(Vec<u8>, Vec<u8>)> = version::materialize_table(&storage, &index, &table)?
            .into_iter()
            .map(|(k, v)| (k.as_slice().to_vec(), v.to_vec()))
            .collect();
        got.sort();
        assert!(got.into_iter().eq((0..n).map(|i| (i.to_be_bytes().to_vec(), large_value(i)))));
        Ok(())
    }

    /// A part thread that panics while cutting a part (at its first batch or a later one)
    /// makes the run's writer panic rather than return a run without those entries; a part
    /// offered to it afterwards is taken back and cut by the offering thread, into the bytes
    /// one thread cuts.
    #[test]
    fn a_part_thread_that_panics_fails_the_run_and_is_then_done_without() {
        let n = 3 * SPLIT_MIN_ENTRIES as u32;
        let cut = |part_thread: Option<&PartThread>, panic_at_batch: Option<usize>| {
            let mut entries = large_entries(n);
            let mut sink = ChunkSink::new(&|_| false, SegmentId(1), &Options::new());
            let half = entries.len() / 2;
            entries.select_nth_unstable_by(half, by_key);
            let (out, received) = crossbeam_channel::bounded(SECOND_PART_BATCHES);
            let part = SecondPart { entries: entries.split_off(half), target: 65_536, out, panic_at_batch };
            let runs = write_parts(&mut sink, &mut entries, part, received, RUN_INDEX_BYTES_MAX, 2, part_thread);
            (runs, finished(sink), entries)
        };
        let expected = cut(None, None);
        assert_sorted_and_released(&expected.2, n);
        for panic_at_batch in [0, 1] {
            let Some(own) = PartThread::own() else { panic!("no thread for the second part") };
            let unwound =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cut(Some(&own), Some(panic_at_batch))));
            assert!(unwound.is_err(), "a run was written without its second part (panic at batch {panic_at_batch})");
            assert_eq!(own.taken(), 1);
            own.wait_gone();
            let (runs, segments, entries) = cut(Some(&own), None);
            assert_sorted_and_released(&entries, n);
            assert_eq!(runs, expected.0, "after a panic at batch {panic_at_batch}");
            assert!(segments == expected.1, "after a panic at batch {panic_at_batch}: other segment bytes");
            assert_eq!(own.taken(), 1, "a part was taken by a thread that is gone");
        }
    }

    /// Only a run of `SPLIT_MIN_ENTRIES` to `SPLIT_MAX_ENTRIES` entries is cut as two parts
    /// (`format-spec.md` 5), so the bounds decide chunk boundaries on disk: at each bound, the
    /// run just inside starts a chunk at its median key and the run just outside does not.
    #[test]
    fn only_a_run_within_the_split_bounds_starts_a_chunk_at_its_median() -> Result<()> {
        let cases = [
            (SPLIT_MIN_ENTRIES - 1, false),
            (SPLIT_MIN_ENTRIES, true),
            (SPLIT_MAX_ENTRIES, true),
            (SPLIT_MAX_ENTRIES + 1, false),
        ];
        for (n, split) in cases {
            let mut entries: CapturedEntries = (0..n as u32)
                .rev()
                .map(|i| (Key::from(&i.to_be_bytes()[..]), Some(Value::from(vec![i as u8; 8]))))
                .collect();
            let mut sink = ChunkSink::new(&|_| false, SegmentId(1), &Options::new());
            let runs = write_run(&mut sink, &mut entries, 65_536, 1);
            let (storage, index) = stored(&finished(sink))?;
            let median = (n as u32 / 2).to_be_bytes();
            let mut starts_at_median = false;
            for run in &runs {
                let listing = version::read_run_index(&storage, &index, &run.index)?;
                starts_at_median |= listing.chunks.iter().any(|c| c.first_key == median);
            }
            assert_eq!(starts_at_median, split, "{n} entries");
        }
        Ok(())
    }

    /// With tiny bounds a checkpoint rolls over to several segments and splits a table into
    /// several runs; everything commits and reads back exactly.
    #[test]
    fn segments_roll_over_and_runs_split_at_their_bounds() -> Result<()> {
        let fs = SimFs::new();
        let storage = fs.storage();
        let opts = Options::new();
        let mut sink = ChunkSink::new(&|_| false, SegmentId(1), &opts);
        sink.chunks_max = 3;
        let mut entries: CapturedEntries = (0u32..400)
            .rev()
            .map(|i| (Key::from(&i.to_be_bytes()[..]), Some(Value::from(vec![i as u8; 50]))))
            .collect();
        let runs = write_runs_bounded(&mut sink, &mut entries, 64, 200, 2, PartThread::shared());
        assert!(runs.len() > 3, "{} runs", runs.len());
        // Left sorted, every value released, every key kept.
        let keys: Vec<&[u8]> = entries.iter().map(|(k, _)| k.as_slice()).collect();
        let sorted: Vec<[u8; 4]> = (0u32..400).map(u32::to_be_bytes).collect();
        assert_eq!(keys, sorted.iter().map(|k| &k[..]).collect::<Vec<_>>());
        assert!(entries.iter().all(|(_, v)| v.is_none()));
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
        let mut got: Vec<(Vec<u8>, Vec<u8>)> =
            data.into_iter().map(|(k, v)| (k.as_slice().to_vec(), v.to_vec())).collect();
        got.sort();
        assert_eq!(got, expected);
        Ok(())
    }
}

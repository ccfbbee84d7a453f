//! The background checkpoint pipeline: asynchronous checkpoints and their records.
//!
//! A checkpoint is captured on the caller's thread: each table's dirty set is taken whole
//! (O(tables), no copying, no I/O, no hashing) under the store's lock, and handed as a [`Job`]
//! over a crossbeam channel to the store's one pipeline thread. That thread turns the dirty
//! sets into sorted entries, cuts and hashes chunks (in parallel, see `checkpoint/`), writes
//! the new segments (a large checkpoint's full ones on a writer thread of their own, while the
//! rest is cut) and the manifest, and commits HEAD. Meanwhile the tables stay readable and
//! writable; writes made after the capture belong to the next checkpoint.
//!
//! Invariants this room keeps:
//! 1. Jobs commit in capture order (one thread, FIFO, and `submit` sends under the lock that
//!    capture holds), so each checkpoint's delta is applied on top of the one captured before.
//! 2. A job that does not commit (aborted, failed, or cancelled because an earlier one did not
//!    commit) puts its keys back into the dirty set, so the working state's rule ("a key not
//!    dirty has its base checkpoint's value") holds against the last *committed* checkpoint.
//!    Every job captured before that moment is cancelled too: it was a delta on top of the
//!    one that failed. An I/O error also poisons the store (the medium's state is unknown),
//!    and so does a panic while persisting, caught on the pipeline thread, which goes on.
//! 3. While a job runs it holds the store's commit lock: segment and checkpoint ids are
//!    allocated, and HEAD moved, by one writer at a time (compaction takes the same lock).
//! 4. A stored chunk a job decides to reuse is in `Inner::reserved_chunks` until the job
//!    ends, and in a running GC's guard, so no GC deletes it before the manifest naming it is
//!    committed.
//! 5. Nothing is written for a job that is aborted; once writing starts it runs to its end.

use super::{CheckpointInfo, Shared};
use crate::checkpoint::{self, ChunkSink, NewManifest};
use crate::format::{self, CheckpointId, ChunkHash, ManifestKind, RunRef, SegmentId};
use crate::state::{CapturedEntries, DirtySet};
use crate::storage::JOURNAL;
use crate::{Error, Result};
use crossbeam_channel::{Receiver, Sender};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How many ended checkpoints [`crate::Stats::recent_checkpoints`] keeps.
pub(crate) const RECENT_RECORDS: usize = 32;

/// How a checkpoint ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Committed: durable, and what `open` returns after a crash until a newer one commits.
    Completed,
    /// Did not commit because it was aborted (by its handle, a coordinator, or because an
    /// earlier checkpoint it builds on did not commit). Nothing of it was written.
    Aborted(String),
    /// Did not commit because of an error (an I/O error, or a panic while persisting, also
    /// poisons the store).
    Failed(String),
}

/// The record of one checkpoint, from trigger to end: what [`crate::Options::listener`]
/// receives and [`crate::Stats::recent_checkpoints`] keeps.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointRecord {
    /// Trigger number since the store was opened (0, 1, ...).
    pub seq: u64,
    /// The committed checkpoint (`None` unless completed).
    pub id: Option<CheckpointId>,
    /// When it was triggered, milliseconds since the Unix epoch.
    pub triggered_unix_ms: u64,
    /// How long the caller's thread was blocked capturing the dirty set.
    pub capture_pause: Duration,
    /// From capture to the end, on the pipeline (waiting for earlier checkpoints included).
    pub persist: Duration,
    /// Of `persist`, the part spent turning the captured entries into chunks (sorting,
    /// cutting, hashing, compressing) and building the manifest, from when the checkpoint
    /// holds the commit lock (0 unless completed). A checkpoint larger than one segment also
    /// writes its earlier segments in this part.
    pub encode: Duration,
    /// Of `persist`, the part spent making it durable: writing the segments left and the
    /// manifest, each synced, then moving HEAD (0 unless completed).
    pub commit: Duration,
    /// From trigger to the end.
    pub end_to_end: Duration,
    /// Keys captured (values and tombstones).
    pub dirty_keys: u64,
    /// Bytes written: segments, manifest and HEAD (0 unless completed).
    pub bytes_written: u64,
    /// Chunks written.
    pub chunks_new: u64,
    /// Chunks referenced that were already stored.
    pub chunks_reused: u64,
    /// Raw bytes of the chunks written.
    pub raw_bytes: u64,
    /// Bytes those chunks take in their segments (compressed, or equal to `raw_bytes`).
    pub stored_bytes: u64,
    /// How it ended.
    pub outcome: Outcome,
}

impl CheckpointRecord {
    /// `raw_bytes / stored_bytes` of the chunks written (1.0 when nothing was written).
    pub fn compression_ratio(&self) -> f64 {
        if self.stored_bytes == 0 {
            1.0
        } else {
            self.raw_bytes as f64 / self.stored_bytes as f64
        }
    }
}

/// A checkpoint persisting in the background, from [`crate::Store::checkpoint_async`].
///
/// Dropping the handle does not stop the checkpoint; [`CheckpointHandle::abort`] asks it to
/// stop if it has not started writing.
#[derive(Debug)]
pub struct CheckpointHandle {
    seq: u64,
    rx: Receiver<Result<CheckpointInfo>>,
    abort: Arc<AtomicBool>,
}

impl CheckpointHandle {
    /// The trigger number (the `seq` of its [`CheckpointRecord`]).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Whether the checkpoint has ended (its result is waiting), without blocking.
    pub fn is_finished(&self) -> bool {
        !self.rx.is_empty()
    }

    /// Block until the checkpoint ends: its info once committed and durable, or why it did not
    /// commit ([`Error::Aborted`], an I/O error, [`Error::Poisoned`], ...).
    pub fn wait(self) -> Result<CheckpointInfo> {
        self.rx.recv().unwrap_or(Err(Error::Closed))
    }

    /// [`CheckpointHandle::wait`] for at most `timeout`; `Err(self)` if it has not ended.
    pub fn wait_timeout(self, timeout: Duration) -> std::result::Result<Result<CheckpointInfo>, Self> {
        match self.rx.recv_timeout(timeout) {
            Ok(result) => Ok(result),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => Err(self),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Ok(Err(Error::Closed)),
        }
    }

    /// Ask the checkpoint to stop. It takes effect if the checkpoint has not started writing
    /// (then [`CheckpointHandle::wait`] returns [`Error::Aborted`] and its writes go into the
    /// next checkpoint); a checkpoint already writing commits anyway.
    pub fn abort(&self) {
        self.abort.store(true, Ordering::SeqCst);
    }

    pub(crate) fn new(seq: u64) -> (Self, Sender<Result<CheckpointInfo>>, Arc<AtomicBool>) {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let abort = Arc::new(AtomicBool::new(false));
        (CheckpointHandle { seq, rx, abort: abort.clone() }, tx, abort)
    }
}

/// Called once with a job's result, on the pipeline thread.
pub(crate) type Done = Box<dyn FnOnce(&Result<CheckpointInfo>) + Send>;

/// One captured checkpoint on its way to storage.
pub(crate) struct Job {
    pub(crate) seq: u64,
    pub(crate) dirty: Vec<(String, DirtySet)>,
    /// Every table of the working state at capture (so empty new tables are recorded too).
    pub(crate) table_names: Vec<String>,
    pub(crate) metadata: Vec<u8>,
    pub(crate) triggered: Instant,
    pub(crate) triggered_unix_ms: u64,
    pub(crate) capture_pause: Duration,
    pub(crate) abort: Arc<AtomicBool>,
    /// Told the result first (e.g. a coordinator's report).
    pub(crate) notify: Vec<Done>,
    /// Then the handle gets it.
    pub(crate) reply: Sender<Result<CheckpointInfo>>,
}

/// The store's pipeline thread and the channel feeding it.
pub(crate) struct Pipeline {
    tx: Option<Sender<(Arc<Shared>, Job)>>,
    thread: Option<JoinHandle<()>>,
}

impl Pipeline {
    pub(crate) fn start() -> Result<Pipeline> {
        let (tx, rx) = crossbeam_channel::unbounded::<(Arc<Shared>, Job)>();
        let thread = std::thread::Builder::new()
            .name("cairn-checkpoint".into())
            .spawn(move || {
                for (shared, job) in rx {
                    run(&shared, job);
                }
            })
            .map_err(|e| Error::io("spawn", "the checkpoint pipeline thread", e))?;
        Ok(Pipeline { tx: Some(tx), thread: Some(thread) })
    }

    /// Queue `job`. The caller holds the store's lock (capture order is commit order).
    pub(crate) fn submit(&self, shared: Arc<Shared>, job: Job) -> std::result::Result<(), Box<Job>> {
        match &self.tx {
            Some(tx) => tx.send((shared, job)).map_err(|e| Box::new(e.into_inner().1)),
            None => Err(Box::new(job)),
        }
    }
}

impl Drop for Pipeline {
    /// Let every queued checkpoint end, then stop the thread.
    fn drop(&mut self) {
        super::stop_worker(&mut self.tx, &mut self.thread);
    }
}

/// What a committed job adds to its record.
struct Written {
    info: CheckpointInfo,
    raw_bytes: u64,
    stored_bytes: u64,
    encode: Duration,
    commit: Duration,
}

fn run(shared: &Arc<Shared>, job: Job) {
    let Job { seq, dirty, table_names, metadata, triggered, triggered_unix_ms, capture_pause, abort, notify, reply } =
        job;
    let span = tracing::info_span!("cairn.checkpoint", seq, id = tracing::field::Empty);
    let _entered = span.enter();
    let persist_started = Instant::now();
    let mut entries: Vec<(String, CapturedEntries)> =
        dirty.into_iter().map(|(name, set)| (name, set.into_entries())).collect();
    let dirty_keys: u64 = entries.iter().map(|(_, e)| e.len() as u64).sum();
    // A panic (an internal bug, or memory exhaustion) fails this checkpoint and poisons the
    // store rather than ending this thread, which would leave the checkpoint in flight for
    // ever and every later wait for it hanging.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        persist(shared, seq, &mut entries, table_names, metadata, &abort, triggered)
    }))
    .unwrap_or_else(|panic| Err(Error::Poisoned(format!("a checkpoint panicked: {}", panic_message(panic.as_ref())))));
    if result.is_ok() {
        // Free the captured entries before reporting, so their cost (a million small frees
        // after a load) is the committed checkpoint's, not a stall of the next one queued
        // behind it; their values went as they were written (`checkpoint::write_run`). A job
        // that did not commit keeps the keys, to mark them dirty again.
        drop(std::mem::take(&mut entries));
    }

    let outcome = match &result {
        Ok(_) => Outcome::Completed,
        Err(e @ Error::Aborted(_)) => Outcome::Aborted(e.to_string()),
        Err(e) => Outcome::Failed(e.to_string()),
    };
    let written = result.as_ref().ok();
    let record = CheckpointRecord {
        seq,
        id: written.map(|w| w.info.id),
        triggered_unix_ms,
        capture_pause,
        persist: persist_started.elapsed(),
        encode: written.map_or(Duration::ZERO, |w| w.encode),
        commit: written.map_or(Duration::ZERO, |w| w.commit),
        end_to_end: triggered.elapsed(),
        dirty_keys,
        bytes_written: written.map_or(0, |w| w.info.bytes_written),
        chunks_new: written.map_or(0, |w| w.info.chunks_new),
        chunks_reused: written.map_or(0, |w| w.info.chunks_reused),
        raw_bytes: written.map_or(0, |w| w.raw_bytes),
        stored_bytes: written.map_or(0, |w| w.stored_bytes),
        outcome,
    };
    match &result {
        Ok(w) => {
            span.record("id", w.info.id.0);
            tracing::info!(
                dirty_keys,
                bytes_written = record.bytes_written,
                chunks_new = record.chunks_new,
                chunks_reused = record.chunks_reused,
                capture_pause_us = capture_pause.as_micros() as u64,
                persist_us = record.persist.as_micros() as u64,
                encode_us = record.encode.as_micros() as u64,
                commit_us = record.commit.as_micros() as u64,
                "checkpoint committed"
            );
        }
        Err(e) => tracing::warn!(dirty_keys, error = %e, "checkpoint did not commit"),
    }

    if let Ok(mut inner) = shared.lock() {
        inner.reserved_chunks.clear();
        if let Err(e) = &result {
            for (name, table_entries) in &entries {
                if let Some(table) = inner.tables.tables.get_mut(name) {
                    table.restore_dirty(table_entries.iter().map(|(k, _)| k.as_slice()));
                }
            }
            // Every job captured so far builds on this one: none of them may commit.
            inner.cancel_before_seq = inner.next_seq;
            if matches!(e, Error::Io { .. } | Error::Poisoned(_)) {
                inner.poison(e);
            }
        }
        inner.in_flight = inner.in_flight.saturating_sub(1);
        inner.record(record.clone());
        shared.idle.notify_all();
    }
    if let Err(e) = &result {
        journal_append(shared, &record, e);
    }
    if let Some(listener) = &shared.opts.listener {
        listener(&record);
    }
    let result = result.map(|w| w.info);
    for f in notify {
        f(&result);
    }
    // The handle may have been dropped: nobody is waiting then.
    let _ = reply.send(result);
}

/// What a panic's payload says, if it is a message.
pub(super) fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message")
}

fn persist(
    shared: &Arc<Shared>,
    seq: u64,
    entries: &mut [(String, CapturedEntries)],
    table_names: Vec<String>,
    metadata: Vec<u8>,
    abort: &AtomicBool,
    triggered: Instant,
) -> Result<Written> {
    let opts = &shared.opts;
    let _commit = shared.commit_lock()?;
    let first_segment = {
        let inner = shared.lock()?;
        if seq < inner.cancel_before_seq {
            return Err(Error::Aborted("an earlier checkpoint it builds on did not commit".into()));
        }
        if abort.load(Ordering::SeqCst) {
            return Err(Error::Aborted("aborted by its handle".into()));
        }
        inner.check_writable()?;
        SegmentId(inner.next_segment)
    };
    // Deduplicate against stored chunks, reserving each reused one against a GC (invariant 4).
    let stored = |hash: &ChunkHash| -> bool {
        let Ok(mut inner) = shared.lock() else { return false };
        if !inner.chunks.contains(hash) {
            return false;
        }
        inner.reserved_chunks.insert(*hash);
        if let Some(guard) = &mut inner.gc_guard {
            guard.insert(*hash);
        }
        true
    };
    let encode_started = Instant::now();
    // This job holds the commit lock until its commit or discard (invariant 3).
    let mut sink =
        ChunkSink::new(&stored, first_segment, opts).spilling_in_background(shared.storage.clone()).named_directly();
    let mut new_runs: Vec<(String, Vec<RunRef>)> = Vec::new();
    let mut dirty_keys = 0u64;
    for (name, table_entries) in entries.iter_mut() {
        dirty_keys += table_entries.len() as u64;
        let runs = checkpoint::write_run(&mut sink, table_entries, opts.chunk_target_bytes, opts.hash_threads);
        new_runs.push((name.clone(), runs));
    }
    if abort.load(Ordering::SeqCst) {
        // An I/O error deleting what was written poisons the store instead (see `run`).
        sink.discard_spilled(shared.storage.as_ref())?;
        return Err(Error::Aborted("aborted by its handle".into()));
    }
    // The base cannot change under the commit lock (a rollback waits for the pipeline to be
    // idle; a compaction's merge takes the commit lock), so the delta applies to it.
    let (id, parent, mut tables, head) = {
        let inner = shared.lock()?;
        let tables: BTreeMap<String, Vec<RunRef>> = inner.base.as_ref().map_or_else(BTreeMap::new, |b| {
            b.manifest.tables.iter().map(|t| (t.name.clone(), t.runs.clone())).collect()
        });
        let parent = inner.base.as_ref().map(|b| (b.manifest.id, b.hash));
        (CheckpointId(inner.next_checkpoint), parent, tables, inner.head)
    };
    for name in table_names {
        tables.entry(name).or_default();
    }
    for (name, runs) in new_runs {
        tables.entry(name).or_default().extend(runs);
    }
    let new =
        NewManifest { id, kind: ManifestKind::Checkpoint, parent, tables, metadata, dirty_keys, started: triggered };
    let encode = encode_started.elapsed();
    let commit_started = Instant::now();
    let persisted = checkpoint::commit(shared.storage.as_ref(), sink, new, head)?;
    let commit = commit_started.elapsed();
    let mut info = CheckpointInfo::from_manifest(&persisted.manifest, persisted.manifest_len);
    info.duration = triggered.elapsed();
    let chunks = persisted.segments.iter().flat_map(|(_, chunks)| chunks.iter());
    let (raw_bytes, stored_bytes) =
        chunks.fold((0u64, 0u64), |(r, s), c| (r + u64::from(c.raw_len), s + u64::from(c.stored_len)));
    shared.lock()?.adopt(persisted);
    Ok(Written { info, raw_bytes, stored_bytes, encode, commit })
}

/// Add a checkpoint that did not commit to the store's JOURNAL, best effort.
fn journal_append(shared: &Shared, record: &CheckpointRecord, error: &Error) {
    shared.note_not_committed(format::JournalEntry {
        triggered_unix_ms: record.triggered_unix_ms,
        capture_pause_us: record.capture_pause.as_micros() as u64,
        persist_us: record.persist.as_micros() as u64,
        dirty_keys: record.dirty_keys,
        head_id: 0,
        failed: matches!(record.outcome, Outcome::Failed(_)),
        reason: error.to_string(),
    });
}

/// Append `entry` to JOURNAL (its reason cut to the bound), keeping the last entries. Best
/// effort: the journal is diagnostic (for `cairn log`), so failing to write it changes
/// nothing else; the failure is logged.
pub(crate) fn append_journal(storage: &dyn crate::Storage, mut entry: format::JournalEntry) {
    let mut entries = match storage.read(JOURNAL, format::MAX_JOURNAL_LEN) {
        Ok(bytes) => format::decode_journal(&bytes).unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    if entry.reason.len() > format::MAX_JOURNAL_REASON_LEN {
        let mut cut = format::MAX_JOURNAL_REASON_LEN;
        while !entry.reason.is_char_boundary(cut) {
            cut -= 1;
        }
        entry.reason.truncate(cut);
    }
    entries.push(entry);
    let excess = entries.len().saturating_sub(format::MAX_JOURNAL_ENTRIES);
    entries.drain(..excess);
    if let Err(e) = storage.put(JOURNAL, &format::encode_journal(&entries)) {
        tracing::warn!(error = %e, "could not record the checkpoint in JOURNAL");
    }
}

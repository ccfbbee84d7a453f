//! The public façade: open, tables, checkpoint, restore, rollback, read-at, verify, stats.

mod compactor;
mod maintenance;
mod pipeline;
mod yielding;

pub use yielding::COMPACTION_YIELD_MAX;

pub use maintenance::CompactStep;
pub(crate) use pipeline::Done;
pub use pipeline::{CheckpointHandle, CheckpointRecord, Outcome};

use crate::format::{
    self, CheckpointId, ChunkHash, Head, Manifest, ManifestHash, Pin, SegmentId, HEAD_LEN, MAX_METADATA_LEN,
    MAX_PINS_LEN,
};
use crate::options::Options;
use crate::state::{TableState, Tables};
use crate::storage::{
    parse_manifest_name, parse_segment_name, LocalStorage, Storage, MANIFESTS, PINS, SEGMENTS, STORE_MARKER,
};
use crate::table::Table;
use crate::typed::TypedTable;
use crate::version::{self, load_manifest, read_head, ChunkIndex};
use crate::view::CheckpointView;
use crate::{Error, Result};
use pipeline::{Job, Pipeline, RECENT_RECORDS};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What one checkpoint is: where it sits in the chain and what it wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointInfo {
    /// Its id.
    pub id: CheckpointId,
    /// A checkpoint of the working state, or a compaction of its parent (same content and
    /// metadata, fewer runs).
    pub kind: format::ManifestKind,
    /// The checkpoint it was taken on top of (`None` for the first one).
    pub parent: Option<CheckpointId>,
    /// The caller's metadata, e.g. source offsets.
    pub metadata: Vec<u8>,
    /// Wall-clock time it was taken, milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// Keys it wrote (values and tombstones).
    pub dirty_keys: u64,
    /// Bytes it wrote: its segment, its manifest and HEAD.
    pub bytes_written: u64,
    /// Chunks it wrote.
    pub chunks_new: u64,
    /// Chunks it referenced that were already stored.
    pub chunks_reused: u64,
    /// Time from capture to commit.
    pub duration: Duration,
}

impl CheckpointInfo {
    pub(crate) fn from_manifest(m: &Manifest, manifest_len: u64) -> Self {
        CheckpointInfo {
            id: m.id,
            kind: m.kind,
            parent: m.parent.map(|(id, _)| id),
            metadata: m.metadata.clone(),
            created_unix_ms: m.created_unix_ms,
            dirty_keys: m.stats.dirty_keys,
            bytes_written: m.stats.segment_bytes + manifest_len + HEAD_LEN as u64,
            chunks_new: m.stats.chunks_new,
            chunks_reused: m.stats.chunks_reused,
            duration: Duration::from_micros(m.stats.duration_us),
        }
    }
}

/// Figures about a store, from [`Store::stats`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    /// The checkpoint the working state is based on.
    pub head: Option<CheckpointId>,
    /// Tables in the working state.
    pub tables: usize,
    /// Keys in the working state.
    pub keys: u64,
    /// Keys written since the last checkpoint.
    pub dirty_keys: u64,
    /// Committed checkpoints in storage.
    pub checkpoints: u64,
    /// Committed segments in storage.
    pub segments: u64,
    /// Distinct chunks stored.
    pub chunks: u64,
    /// Runs the head checkpoint's tables consist of (what a restore reads).
    pub head_runs: u64,
    /// Bytes of segments and manifests in storage.
    pub bytes_on_disk: u64,
    /// Committed segments whose chunk table could not be read at open (see [`Store::verify`]).
    pub unreadable_segments: u64,
    /// Runs of each table at the head checkpoint (what a restore reads).
    pub runs_per_table: BTreeMap<String, u64>,
    /// Raw bytes of the distinct chunks the retained checkpoints reference (0 when a run index
    /// cannot be read: see `unreadable_segments` and [`Store::verify`]).
    pub live_bytes: u64,
    /// `bytes_on_disk / live_bytes` (0 when nothing is live).
    pub space_amplification: f64,
    /// Bytes compaction wrote since this store was opened.
    pub bytes_rewritten: u64,
    /// Pinned savepoints.
    pub pins: u64,
    /// Why the last automatic compaction ([`crate::Options::auto_compact`]) failed, if it did.
    pub last_auto_compact_error: Option<String>,
    /// Key and value bytes written since the last checkpoint capture.
    pub dirty_bytes: u64,
    /// Checkpoints captured and not yet ended.
    pub checkpoints_in_flight: u64,
    /// Checkpoints committed since open.
    pub checkpoints_completed: u64,
    /// Checkpoints aborted since open.
    pub checkpoints_aborted: u64,
    /// Checkpoints failed since open.
    pub checkpoints_failed: u64,
    /// The records of the last checkpoints that ended (at most 32), oldest first.
    pub recent_checkpoints: Vec<CheckpointRecord>,
}

/// The checkpoint the working state is based on.
pub(crate) struct Base {
    pub(crate) manifest: Manifest,
    pub(crate) hash: ManifestHash,
    pub(crate) manifest_len: u64,
}

pub(crate) struct Inner {
    pub(crate) tables: Tables,
    pub(crate) base: Option<Base>,
    pub(crate) head: Option<Head>,
    pub(crate) chunks: ChunkIndex,
    next_checkpoint: u64,
    next_segment: u64,
    unreadable_segments: u64,
    read_only: bool,
    poisoned: Option<String>,
    /// Pinned savepoints, as in PINS.
    pins: Vec<Pin>,
    /// Checkpoints held by open views, with how many views hold each.
    pub(crate) viewed: BTreeMap<CheckpointId, usize>,
    /// While a GC runs: every stored chunk a checkpoint reused since the GC worked out its live
    /// set. Segments holding them are not deleted by that GC.
    gc_guard: Option<HashSet<ChunkHash>>,
    /// Whether a compaction is running (one at a time).
    compacting: bool,
    /// Delta encodings the GC worked out, kept between GCs while the chunk stays a candidate
    /// with the same base: (chunk, base) -> its stored delta, or `None` if not worth storing.
    /// Shared with the GC's plan, not copied.
    pub(crate) delta_cache: HashMap<(ChunkHash, ChunkHash), Option<std::sync::Arc<[u8]>>>,
    /// Bytes compaction wrote since open.
    bytes_rewritten: u64,
    /// Why the last automatic compaction failed, if it did.
    last_auto_compact_error: Option<String>,
    /// Checkpoints captured and not yet ended (see `pipeline`).
    in_flight: usize,
    /// The next checkpoint trigger's number.
    next_seq: u64,
    /// Jobs numbered below this are cancelled: an earlier one did not commit.
    cancel_before_seq: u64,
    /// Stored chunks the running checkpoint reuses (kept from a GC until it ends).
    pub(crate) reserved_chunks: HashSet<ChunkHash>,
    /// The last ended checkpoints, and counts by outcome.
    recent: VecDeque<CheckpointRecord>,
    outcomes: [u64; 3],
}

impl Inner {
    pub(crate) fn check_writable(&self) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        match &self.poisoned {
            Some(reason) => Err(Error::Poisoned(reason.clone())),
            None => Ok(()),
        }
    }

    fn poison(&mut self, e: &Error) {
        // A `Poisoned` error already says the store is poisoned: keep only its reason, so
        // later errors do not say it twice.
        self.poisoned.get_or_insert_with(|| match e {
            Error::Poisoned(reason) => reason.clone(),
            e => e.to_string(),
        });
    }

    fn record(&mut self, record: CheckpointRecord) {
        let slot = match record.outcome {
            Outcome::Completed => 0,
            Outcome::Aborted(_) => 1,
            Outcome::Failed(_) => 2,
        };
        if let Some(n) = self.outcomes.get_mut(slot) {
            *n += 1;
        }
        if self.recent.len() == RECENT_RECORDS {
            self.recent.pop_front();
        }
        self.recent.push_back(record);
    }

    /// Make a committed manifest the base of the working state (its content must equal the
    /// working state's checkpointed content), and record what it wrote.
    fn adopt(&mut self, p: crate::checkpoint::Persisted) {
        self.next_checkpoint = self.next_checkpoint.max(p.manifest.id.0 + 1);
        for (id, chunks) in &p.segments {
            self.chunks.add_segment(*id, chunks);
            self.next_segment = self.next_segment.max(id.0 + 1);
        }
        if let Some(guard) = &mut self.gc_guard {
            guard.extend(p.reused.iter().copied());
        }
        self.head = Some(p.head);
        self.base = Some(Base { manifest: p.manifest, hash: p.hash, manifest_len: p.manifest_len });
    }
}

pub(crate) struct Shared {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) opts: Options,
    inner: Mutex<Inner>,
    /// Held by whoever allocates segment or checkpoint ids and moves HEAD over several steps
    /// without holding `inner` throughout (the checkpoint pipeline, compaction). Taken before
    /// `inner`, never while holding it.
    commit: Mutex<()>,
    /// Signalled (with `inner`) whenever a checkpoint ends.
    idle: Condvar,
    /// How long the running compaction has given way to checkpoints (`yielding.rs`); never
    /// held while taking another lock.
    compaction_waits: Mutex<yielding::WaitBudget>,
}

impl Shared {
    pub(crate) fn lock(&self) -> Result<MutexGuard<'_, Inner>> {
        self.inner.lock().map_err(|_| Error::Poisoned("a thread panicked while holding the store".into()))
    }

    pub(crate) fn commit_lock(&self) -> Result<MutexGuard<'_, ()>> {
        self.commit.lock().map_err(|_| Error::Poisoned("a thread panicked while committing".into()))
    }

    /// Wait (releasing the lock meanwhile) until a checkpoint ends.
    fn wait_idle<'a>(&'a self, inner: MutexGuard<'a, Inner>) -> Result<MutexGuard<'a, Inner>> {
        self.idle.wait(inner).map_err(|_| Error::Poisoned("a thread panicked while holding the store".into()))
    }

    /// Wait (releasing the lock meanwhile) until no checkpoint is in flight.
    fn drained<'a>(&'a self, mut inner: MutexGuard<'a, Inner>) -> Result<MutexGuard<'a, Inner>> {
        while inner.in_flight > 0 {
            inner = self.wait_idle(inner)?;
        }
        Ok(inner)
    }

    /// Record in JOURNAL a checkpoint that did not commit (with HEAD's checkpoint now), best
    /// effort: see `pipeline::append_journal`.
    pub(crate) fn note_not_committed(&self, mut entry: format::JournalEntry) {
        entry.head_id = self.lock().ok().and_then(|inner| inner.head.map(|h| h.current.0)).unwrap_or(0);
        pipeline::append_journal(self.storage.as_ref(), entry);
    }
}

/// Stop a background thread fed over `tx` (the checkpoint pipeline, the compactor): close
/// the channel so the queued work ends, then join the thread. Not when this runs on that
/// very thread (its work held the last reference to the store), which cannot join itself.
fn stop_worker<T>(tx: &mut Option<crossbeam_channel::Sender<T>>, thread: &mut Option<std::thread::JoinHandle<()>>) {
    drop(tx.take());
    if let Some(thread) = thread.take() {
        if thread.thread().id() != std::thread::current().id() {
            let _ = thread.join();
        }
    }
}

/// An open cairn store: keyed tables in memory, checkpointed incrementally to durable storage.
///
/// `Store` is cheap to share: [`Table`] handles and [`CheckpointView`]s keep it alive. All
/// methods take `&self` and are safe to call from several threads.
pub struct Store {
    shared: Arc<Shared>,
    /// `None` for a read-only store. Dropping the store lets queued checkpoints end first.
    pipeline: Option<Pipeline>,
    /// With [`crate::Options::background_compaction`]; dropped after the pipeline, so
    /// compactions the last checkpoints asked for run before the store closes.
    compactor: Option<compactor::Compactor>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("location", &self.shared.storage.location()).finish()
    }
}

/// Read every object name under `dir` that parses with `parse`, with its id.
fn list_ids<T>(storage: &dyn Storage, dir: &str, parse: fn(&str) -> Option<T>) -> Result<Vec<(T, String)>> {
    Ok(storage.list(dir)?.into_iter().filter_map(|n| parse(&n).map(|id| (id, n))).collect())
}

/// `None` for an object deleted after it was listed (by a compaction running meanwhile).
fn unless_gone<T>(read: Result<T>) -> Result<Option<T>> {
    match read {
        Ok(value) => Ok(Some(value)),
        Err(Error::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

impl Store {
    /// Open (or create) the store in directory `dir` on the local filesystem with default
    /// [`Options`]. The working state is the latest committed checkpoint; its metadata is
    /// [`Store::head`]`().metadata`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Store> {
        Store::open_with(dir, Options::default())
    }

    /// Open (or create) the store in directory `dir` with `opts`.
    ///
    /// Takes the directory's exclusive lock ([`Error::Locked`] if another `Store` holds it),
    /// removes the leftovers of a checkpoint a crash interrupted, and restores the latest
    /// committed checkpoint into memory, verifying every chunk it reads.
    pub fn open_with(dir: impl AsRef<Path>, opts: Options) -> Result<Store> {
        opts.validate()?;
        let storage = LocalStorage::open(dir.as_ref(), opts.creates(), opts.sync, opts.read_only)?;
        Store::open_storage(Arc::new(storage), opts)
    }

    /// Open a store on any [`Storage`] backend (e.g. [`crate::storage::SimStorage`] in tests).
    pub fn open_storage(storage: Arc<dyn Storage>, opts: Options) -> Result<Store> {
        opts.validate()?;
        let st = storage.as_ref();
        match st.read(STORE_MARKER, format::STORE_MARKER_LEN) {
            Ok(bytes) => format::decode_store_marker(&bytes).map_err(|e| Error::from_decode(STORE_MARKER, e))?,
            Err(Error::NotFound(_)) => {
                if !opts.creates() {
                    return Err(Error::NotFound(format!("no cairn store at {}", st.location())));
                }
                if read_head(st)?.is_some() {
                    return Err(Error::corrupted(STORE_MARKER, "missing from a store that has a HEAD"));
                }
                st.put(STORE_MARKER, &format::encode_store_marker())?;
                st.sync()?;
            }
            Err(e) => return Err(e),
        }
        if !opts.read_only {
            st.remove_temporaries()?;
        }
        let head = read_head(st)?;
        let max_checkpoint = head.map_or(0, |h| h.max_checkpoint_id.0);
        let max_segment = head.map_or(0, |h| h.max_segment_id.0);

        // Objects above HEAD's high-water marks belong to checkpoints that never committed:
        // they are ignored, removed (best effort) and their ids never reused.
        let manifests = list_ids(st, MANIFESTS, parse_manifest_name)?;
        let segments = list_ids(st, SEGMENTS, parse_segment_name)?;
        let next_checkpoint = manifests.iter().map(|(id, _)| id.0).chain([max_checkpoint]).max().unwrap_or(0) + 1;
        let next_segment = segments.iter().map(|(id, _)| id.0).chain([max_segment]).max().unwrap_or(0) + 1;
        // A leftover must be gone, durably, before anything new is committed: the next commit
        // raises HEAD's high-water marks past its id, which would make it look committed. If
        // removing one fails, the store opens poisoned (readable, refusing writes).
        let mut poisoned = None;
        if !opts.read_only {
            let leftovers: Vec<&String> = manifests
                .iter()
                .filter(|(id, _)| id.0 > max_checkpoint)
                .map(|(_, n)| n)
                .chain(segments.iter().filter(|(id, _)| id.0 > max_segment).map(|(_, n)| n))
                .collect();
            if !leftovers.is_empty() {
                let removed = leftovers.iter().try_for_each(|name| st.delete(name)).and_then(|()| st.sync());
                if let Err(e) = removed {
                    poisoned = Some(format!("removing the leftovers of an interrupted checkpoint failed: {e}"));
                }
            }
        }

        let pins = match st.read(PINS, MAX_PINS_LEN) {
            Ok(bytes) => format::decode_pins(&bytes).map_err(|e| Error::from_decode(PINS, e))?,
            Err(Error::NotFound(_)) => Vec::new(),
            Err(e) => return Err(e),
        };

        // Newest first: a chunk a GC rewrite copied is read from its copy (see ChunkIndex).
        let mut committed: Vec<SegmentId> =
            segments.iter().map(|(id, _)| *id).filter(|id| id.0 <= max_segment).collect();
        committed.sort_unstable_by(|a, b| b.cmp(a));
        let mut chunks = ChunkIndex::default();
        let mut unreadable_segments = 0;
        for id in &committed {
            match version::read_segment_table(st, *id) {
                Ok(table) => chunks.add_segment(*id, &table),
                // A chunk needed from it fails loudly when read; `verify` names the segment.
                Err(_) => unreadable_segments += 1,
            }
        }

        let mut tables = Tables::default();
        let mut base = None;
        if let Some(h) = head {
            let (manifest, hash, manifest_len) = load_manifest(st, h.current, Some(h.manifest_hash))?;
            for t in &manifest.tables {
                let data = version::materialize_table(st, &chunks, t)?;
                tables.tables.insert(t.name.clone(), TableState::restored(data));
            }
            base = Some(Base { manifest, hash, manifest_len });
        }
        let inner = Inner {
            tables,
            base,
            head,
            chunks,
            next_checkpoint,
            next_segment,
            unreadable_segments,
            read_only: opts.read_only,
            poisoned,
            pins,
            viewed: BTreeMap::new(),
            gc_guard: None,
            compacting: false,
            delta_cache: HashMap::new(),
            bytes_rewritten: 0,
            last_auto_compact_error: None,
            in_flight: 0,
            next_seq: 0,
            cancel_before_seq: 0,
            reserved_chunks: HashSet::new(),
            recent: VecDeque::new(),
            outcomes: [0; 3],
        };
        let pipeline = if opts.read_only { None } else { Some(Pipeline::start()?) };
        let compactor =
            if opts.background_compaction && !opts.read_only { Some(compactor::Compactor::start()?) } else { None };
        let shared = Shared {
            storage,
            opts,
            inner: Mutex::new(inner),
            commit: Mutex::new(()),
            idle: Condvar::new(),
            compaction_waits: Mutex::new(yielding::WaitBudget::new()),
        };
        Ok(Store { shared: Arc::new(shared), pipeline, compactor })
    }

    /// The table `name`, created (empty) if it does not exist. A new table becomes durable
    /// with the next checkpoint. Names are 1 to 255 bytes of UTF-8. On a read-only store a
    /// missing table is [`Error::NotFound`].
    pub fn table(&self, name: &str) -> Result<Table> {
        format::validate_table_name(name).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let mut inner = self.shared.lock()?;
        if !inner.tables.tables.contains_key(name) {
            if inner.read_only {
                return Err(Error::NotFound(format!("table {name:?}")));
            }
            inner.tables.tables.insert(name.to_string(), TableState::default());
        }
        Ok(Table::new(self.shared.clone(), name))
    }

    /// The table `name` if it exists; never creates one.
    pub fn existing_table(&self, name: &str) -> Result<Option<Table>> {
        let inner = self.shared.lock()?;
        Ok(inner.tables.tables.contains_key(name).then(|| Table::new(self.shared.clone(), name)))
    }

    /// A typed view of table `name`: keys `K` and values `V` encoded with serde (postcard).
    /// Range order is the byte order of the encoded keys.
    pub fn typed<K, V>(&self, name: &str) -> Result<TypedTable<K, V>>
    where
        K: serde::Serialize + serde::de::DeserializeOwned,
        V: serde::Serialize + serde::de::DeserializeOwned,
    {
        Ok(TypedTable::new(self.table(name)?))
    }

    /// Names of the tables in the working state, sorted.
    pub fn tables(&self) -> Result<Vec<String>> {
        Ok(self.shared.lock()?.tables.tables.keys().cloned().collect())
    }

    /// Take a durable checkpoint of every table, with `metadata` (at most 1 MiB) recorded in it
    /// (typically the source offsets the state corresponds to).
    ///
    /// Writes only what changed since the previous checkpoint: the dirty keys' values and
    /// tombstones, sorted and cut into chunks; chunks already stored are referenced, not
    /// rewritten. When this returns `Ok`, the checkpoint is durable and is what [`Store::open`]
    /// returns after a crash. On an I/O error the store is poisoned (see [`Error::Poisoned`]).
    ///
    /// This is [`Store::checkpoint_async`] and [`CheckpointHandle::wait`], then the automatic
    /// compaction if [`crate::Options::auto_compact`] is on.
    pub fn checkpoint(&self, metadata: &[u8]) -> Result<CheckpointInfo> {
        let info = self.checkpoint_async(metadata)?.wait()?;
        if self.shared.opts.auto_compact {
            // The checkpoint is committed whatever happens next: a failed compaction must not
            // look like a failed checkpoint. Its error is kept for `stats()` (and an I/O error
            // poisons the store, which the next write reports).
            let outcome = self.compact().err().map(|e| e.to_string());
            self.shared.lock()?.last_auto_compact_error = outcome;
        }
        Ok(info)
    }

    /// Start a checkpoint and return at once. The caller's thread only captures the dirty set
    /// (O(tables): each table's set is taken whole; no copying, hashing or I/O); sorting,
    /// chunking, hashing, compression and I/O run on the store's pipeline thread.
    ///
    /// Reads and writes go on meanwhile; writes made after this call belong to the next
    /// checkpoint. Checkpoints commit in the order they were started. If one does not commit
    /// (aborted, or failed: an I/O error also poisons the store), its writes become dirty again
    /// and every checkpoint started after it is aborted too, since each builds on the one
    /// before; the previous committed checkpoint stays intact.
    ///
    /// At most [`crate::Options::max_checkpoints_in_flight`] are in flight; past that this
    /// waits, or fails with [`Error::Busy`], as [`crate::Options::when_busy`] says.
    pub fn checkpoint_async(&self, metadata: &[u8]) -> Result<CheckpointHandle> {
        self.start_checkpoint(metadata, Vec::new())
    }

    /// Block until no checkpoint is in flight and no background compaction is running or
    /// requested. For tests and orderly shutdowns (dropping the store also waits).
    pub fn quiesce(&self) -> Result<()> {
        drop(self.shared.drained(self.shared.lock()?)?);
        if self.compactor.is_some() {
            while !self.compactor.as_ref().is_some_and(compactor::Compactor::idle) {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Ok(())
    }

    /// [`Store::checkpoint_async`], telling `notify` the result before the handle gets it.
    pub(crate) fn start_checkpoint(&self, metadata: &[u8], mut notify: Vec<Done>) -> Result<CheckpointHandle> {
        if let Some(request) = self.compactor.as_ref().and_then(|c| c.request_after(self.shared.clone())) {
            notify.push(request);
        }
        if metadata.len() > MAX_METADATA_LEN {
            return Err(Error::InvalidArgument(format!(
                "metadata of {} bytes exceeds {MAX_METADATA_LEN}",
                metadata.len()
            )));
        }
        let triggered = Instant::now();
        let triggered_unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let Some(pipeline) = &self.pipeline else { return Err(Error::ReadOnly) };
        let mut inner = self.shared.lock()?;
        inner.check_writable()?;
        let max = self.shared.opts.max_checkpoints_in_flight;
        while inner.in_flight >= max {
            if self.shared.opts.when_busy == crate::WhenBusy::Refuse {
                return Err(Error::Busy(format!("{} checkpoints in flight", inner.in_flight)));
            }
            inner = self.shared.wait_idle(inner)?;
            inner.check_writable()?;
        }
        let seq = inner.next_seq;
        let (handle, reply, abort) = CheckpointHandle::new(seq);
        let dirty: Vec<(String, crate::state::DirtySet)> = inner
            .tables
            .tables
            .iter_mut()
            .filter(|(_, t)| t.dirty_len() > 0)
            .map(|(name, t)| (name.clone(), t.take_dirty()))
            .collect();
        let job = Job {
            seq,
            dirty,
            table_names: inner.tables.tables.keys().cloned().collect(),
            metadata: metadata.to_vec(),
            triggered,
            triggered_unix_ms,
            capture_pause: triggered.elapsed(),
            abort,
            notify,
            reply,
        };
        // Sent under the lock: capture order is commit order.
        match pipeline.submit(self.shared.clone(), job) {
            Ok(()) => {
                inner.next_seq += 1;
                inner.in_flight += 1;
                tracing::debug!(seq, "checkpoint captured");
                Ok(handle)
            }
            Err(job) => {
                for (name, set) in job.dirty {
                    if let Some(table) = inner.tables.tables.get_mut(&name) {
                        let entries = set.into_entries();
                        table.restore_dirty(entries.iter().map(|(k, _)| k.as_slice()));
                    }
                }
                Err(Error::Closed)
            }
        }
    }

    /// Key and value bytes written since the last checkpoint capture (cheap: no I/O). What a
    /// [`crate::CheckpointPolicy`] dirty-bytes threshold compares against.
    pub fn dirty_bytes(&self) -> Result<u64> {
        Ok(self.shared.lock()?.tables.dirty_bytes() as u64)
    }

    /// The checkpoint the working state is based on (the one `open` restored, the last one
    /// taken, or the one rolled back to), with its metadata; `None` before the first.
    pub fn head(&self) -> Result<Option<CheckpointInfo>> {
        let inner = self.shared.lock()?;
        Ok(inner.base.as_ref().map(|b| CheckpointInfo::from_manifest(&b.manifest, b.manifest_len)))
    }

    /// Every committed checkpoint in storage, oldest first, with its stats. Branches left by
    /// rollbacks are included; follow `parent` to walk one branch.
    pub fn checkpoints(&self) -> Result<Vec<CheckpointInfo>> {
        let max = self.shared.lock()?.head.map_or(0, |h| h.max_checkpoint_id.0);
        let st = self.shared.storage.as_ref();
        let mut ids: Vec<CheckpointId> = list_ids(st, MANIFESTS, parse_manifest_name)?
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| id.0 <= max)
            .collect();
        ids.sort();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let (m, _, len) = load_manifest(st, id, None)?;
            out.push(CheckpointInfo::from_manifest(&m, len));
        }
        Ok(out)
    }

    fn committed_manifest(&self, inner: &Inner, id: CheckpointId) -> Result<(Manifest, ManifestHash, u64)> {
        let max = inner.head.map_or(0, |h| h.max_checkpoint_id.0);
        if id.0 == 0 || id.0 > max {
            return Err(Error::NotFound(format!("checkpoint {id}")));
        }
        load_manifest(self.shared.storage.as_ref(), id, None)
    }

    /// A read-only view of checkpoint `id`, as it was committed. The working state is not
    /// affected. Tables are loaded (and verified) on first use.
    ///
    /// While the view lives, compaction keeps checkpoint `id`.
    pub fn at(&self, id: CheckpointId) -> Result<CheckpointView> {
        let mut inner = self.shared.lock()?;
        let (manifest, _, len) = self.committed_manifest(&inner, id)?;
        *inner.viewed.entry(id).or_default() += 1;
        drop(inner);
        Ok(CheckpointView::new(self.shared.clone(), manifest, len))
    }

    /// Make checkpoint `id` the working state again. Writes made since the last checkpoint
    /// are discarded. The next checkpoint's parent is `id`, starting a new branch; the
    /// checkpoints after `id` on the old branch stay readable with [`Store::at`].
    ///
    /// Durable when it returns: after a crash, `open` restores `id`.
    pub fn rollback(&self, id: CheckpointId) -> Result<CheckpointInfo> {
        // No checkpoint in flight, and no merge reading the base: the commit lock, taken
        // before the store's lock (a checkpoint in flight needs the commit lock to end, so it
        // is waited for first).
        let (_commit, mut guard) = loop {
            drop(self.shared.drained(self.shared.lock()?)?);
            let commit = self.shared.commit_lock()?;
            let inner = self.shared.lock()?;
            if inner.in_flight == 0 {
                break (commit, inner);
            }
        };
        let inner = &mut *guard;
        inner.check_writable()?;
        let (manifest, hash, manifest_len) = self.committed_manifest(inner, id)?;
        let st = self.shared.storage.as_ref();
        let mut tables = BTreeMap::new();
        for t in &manifest.tables {
            tables.insert(t.name.clone(), TableState::restored(version::materialize_table(st, &inner.chunks, t)?));
        }
        let Some(old) = inner.head else {
            return Err(Error::NotFound(format!("checkpoint {id}")));
        };
        let head = Head { current: id, manifest_hash: hash, ..old };
        if let Err(e) = st.commit_head(&format::encode_head(&head)) {
            inner.poison(&e);
            return Err(e);
        }
        let info = CheckpointInfo::from_manifest(&manifest, manifest_len);
        inner.head = Some(head);
        inner.tables = Tables { tables };
        inner.base = Some(Base { manifest, hash, manifest_len });
        Ok(info)
    }

    /// Figures about the store. Lists storage and reads every retained manifest and run
    /// index, to count bytes on disk and live bytes.
    ///
    /// Only the in-memory figures and a copy of the chunk index are taken under the store's
    /// lock; the reads from storage come after it, so table reads and writes and checkpoints
    /// go on meanwhile. A compaction running at the same time may delete what it lists: an
    /// object gone by the time it is read no longer counts, and a run index gone leaves
    /// `live_bytes` at 0 for this call.
    pub fn stats(&self) -> Result<Stats> {
        let (mut stats, index, max_checkpoint, max_segment) = {
            let inner = self.shared.lock()?;
            let stats = Stats {
                head: inner.base.as_ref().map(|b| b.manifest.id),
                tables: inner.tables.tables.len(),
                keys: inner.tables.tables.values().map(|t| t.len() as u64).sum(),
                dirty_keys: inner.tables.dirty_len() as u64,
                chunks: inner.chunks.len() as u64,
                head_runs: inner
                    .base
                    .as_ref()
                    .map_or(0, |b| b.manifest.tables.iter().map(|t| t.runs.len() as u64).sum()),
                unreadable_segments: inner.unreadable_segments,
                runs_per_table: inner.base.as_ref().map_or_else(BTreeMap::new, |b| {
                    b.manifest.tables.iter().map(|t| (t.name.clone(), t.runs.len() as u64)).collect()
                }),
                bytes_rewritten: inner.bytes_rewritten,
                pins: inner.pins.len() as u64,
                last_auto_compact_error: inner.last_auto_compact_error.clone(),
                dirty_bytes: inner.tables.dirty_bytes() as u64,
                checkpoints_in_flight: inner.in_flight as u64,
                checkpoints_completed: inner.outcomes[0],
                checkpoints_aborted: inner.outcomes[1],
                checkpoints_failed: inner.outcomes[2],
                recent_checkpoints: inner.recent.iter().cloned().collect(),
                ..Stats::default()
            };
            let max_checkpoint = inner.head.map_or(0, |h| h.max_checkpoint_id.0);
            let max_segment = inner.head.map_or(0, |h| h.max_segment_id.0);
            (stats, inner.chunks.clone(), max_checkpoint, max_segment)
        };
        let st = self.shared.storage.as_ref();
        // Each manifest is dropped once its chunks are added: with runs never merged, every
        // manifest lists every run so far, and holding them all grew quadratically.
        // A run index in an unreadable segment leaves live bytes unknown (0); `verify` names it.
        let mut live = Some(HashSet::new());
        for (id, name) in list_ids(st, MANIFESTS, parse_manifest_name)? {
            if id.0 <= max_checkpoint {
                let Some((size, (manifest, ..))) = unless_gone(st.size(&name).and_then(|size| {
                    let manifest = load_manifest(st, id, None)?;
                    Ok((size, manifest))
                }))?
                else {
                    continue;
                };
                stats.checkpoints += 1;
                stats.bytes_on_disk += size;
                if live.as_mut().is_some_and(|l| {
                    crate::compaction::gc::add_live_chunks(st, &index, &manifest, l, |_, _| {}).is_err()
                }) {
                    live = None;
                }
            }
        }
        if let Some(live) = live {
            stats.live_bytes = live.iter().filter_map(|h| index.get(h)).map(|l| u64::from(l.chunk.raw_len)).sum();
        }
        for (id, name) in list_ids(st, SEGMENTS, parse_segment_name)? {
            if id.0 <= max_segment {
                let Some(size) = unless_gone(st.size(&name))? else { continue };
                stats.segments += 1;
                stats.bytes_on_disk += size;
            }
        }
        if stats.live_bytes > 0 {
            stats.space_amplification = stats.bytes_on_disk as f64 / stats.live_bytes as f64;
        }
        Ok(stats)
    }

    /// Read every committed checkpoint and segment back and verify it: HEAD, every manifest
    /// (hash, invariants, parent link), every run and chunk it references (blake3), and every
    /// chunk of every segment. Problems are reported by object; the store is not changed.
    pub fn verify(&self) -> Result<crate::verify::VerifyReport> {
        let inner = self.shared.lock()?;
        let head = inner.head;
        drop(inner);
        Ok(crate::verify::verify(self.shared.storage.as_ref(), Ok(head)))
    }

    /// Verify the store in directory `dir` without opening it as a [`Store`]: nothing is
    /// restored, written or removed, so this works on a store too damaged to open (a corrupt
    /// HEAD, or a corrupt chunk the head checkpoint needs) and names every bad object. Takes
    /// the directory's lock shared, like a read-only open.
    pub fn verify_path(dir: impl AsRef<Path>) -> Result<crate::verify::VerifyReport> {
        let storage = LocalStorage::open(dir.as_ref(), false, true, true)?;
        let st: &dyn Storage = &storage;
        let marker = st.read(STORE_MARKER, format::STORE_MARKER_LEN)?;
        format::decode_store_marker(&marker).map_err(|e| Error::from_decode(STORE_MARKER, e))?;
        Ok(crate::verify::verify(st, read_head(st)))
    }

    /// The checkpoints that did not commit (aborted or failed), oldest first, as recorded in
    /// the store's JOURNAL (the last 64, across restarts). Diagnostic: a missing journal is
    /// empty; a damaged one is an error naming it.
    pub fn journal(&self) -> Result<Vec<format::JournalEntry>> {
        match self.shared.storage.read(crate::storage::JOURNAL, format::MAX_JOURNAL_LEN) {
            Ok(bytes) => format::decode_journal(&bytes).map_err(|e| Error::from_decode(crate::storage::JOURNAL, e)),
            Err(Error::NotFound(_)) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Record in JOURNAL something that did not commit on behalf of this store (a
    /// coordinator's aborted epoch), best effort.
    pub(crate) fn note_not_committed(&self, reason: String, triggered_unix_ms: u64, persist: Duration) {
        self.shared.note_not_committed(format::JournalEntry {
            triggered_unix_ms,
            capture_pause_us: 0,
            persist_us: persist.as_micros() as u64,
            dirty_keys: 0,
            head_id: 0,
            failed: false,
            reason,
        });
    }

    /// Where the store lives (a path, or `memory`).
    pub fn location(&self) -> String {
        self.shared.storage.location()
    }
}

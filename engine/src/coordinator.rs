//! The checkpoint coordinator: one consistent checkpoint across many shards.
//!
//! Each shard is a [`Store`] driven by its own thread. [`Coordinator::trigger`] starts an
//! epoch and returns one [`Barrier`] per shard; the embedder sends each barrier down its
//! shard's input, in band, so it arrives after exactly the events that precede it. A shard
//! reaching its barrier calls [`Shard::checkpoint`]: it captures its state there and persists
//! on its own pipeline; when that checkpoint commits (or fails) the shard reports to the
//! coordinator. When every shard has committed its part, the coordinator commits the global
//! checkpoint: a checkpoint of its own *global store* whose metadata is a
//! [`GlobalRecord`] naming every shard's checkpoint and metadata (`format-spec.md` §8). A
//! shard failure, or the timeout passing first, aborts the epoch; shard checkpoints it left
//! are named by no global checkpoint and are removed by [`Coordinator::compact`].
//!
//! Layout under the coordinator's directory: `global/` (the global store) and
//! `shard-0000/`, `shard-0001/`, ... (the shard stores), each an ordinary cairn store.
//!
//! Invariants:
//! 1. A global checkpoint commits only after every shard checkpoint it names is durable
//!    (reports are sent after the shard's HEAD commit).
//! 2. [`Coordinator::open`] puts every shard at the checkpoint the latest global checkpoint
//!    names (rolling back shard checkpoints of an epoch that did not commit globally), so all
//!    shards restore to the same epoch. A crash in the middle of that is repaired by the next
//!    open, which does the same again.
//! 3. A new coordinator commits epoch 0 (every shard empty) before returning, so there is
//!    always a global checkpoint to restore.
//! 4. Compaction of a shard keeps every shard checkpoint a retained global checkpoint names.

use crate::format::{self, decode_global, encode_global, GlobalRecord, ShardPart, MAX_SHARDS};
use crate::policy::{CheckpointPolicy, Clock, SystemClock};
use crate::store::Done;
use crate::{CheckpointHandle, CheckpointId, CheckpointView, Error, ManifestKind, Options, Result, Retention, Store};
use crossbeam_channel::{Receiver, Sender};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Metadata of a shard's first checkpoint, taken empty when its coordinator is created.
const INIT_METADATA: &[u8] = b"cairn.coordinator.init";

/// Configuration of a [`Coordinator`].
#[derive(Clone)]
pub struct CoordinatorOptions {
    shards: usize,
    store: Options,
    timeout: Duration,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for CoordinatorOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoordinatorOptions")
            .field("shards", &self.shards)
            .field("store", &self.store)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl CoordinatorOptions {
    /// `shards` shards (1 to 4096), default store options, a 60 s checkpoint timeout, the
    /// system clock.
    pub fn new(shards: usize) -> Self {
        CoordinatorOptions {
            shards,
            store: Options::new(),
            timeout: Duration::from_secs(60),
            clock: Arc::new(SystemClock::new()),
        }
    }

    /// Options for every shard store and the global store.
    pub fn store_options(mut self, opts: Options) -> Self {
        self.store = opts;
        self
    }

    /// Abort an epoch whose shards have not all committed this long after its trigger.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The clock timeouts and [`Coordinator::poll_policy`] read (e.g. a
    /// [`crate::ManualClock`] in tests).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}

/// One shard's cue to checkpoint for an epoch; from [`Coordinator::trigger`], to be passed
/// to that shard's [`Shard::checkpoint`] when its input reaches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Barrier {
    /// The epoch.
    pub epoch: u64,
    /// The shard it is for.
    pub shard: usize,
}

/// A committed global checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GlobalCheckpoint {
    /// Its epoch.
    pub epoch: u64,
    /// The global store's checkpoint holding its record.
    pub id: CheckpointId,
    /// The coordinator's metadata for the epoch (e.g. source offsets).
    pub metadata: Vec<u8>,
    /// Every shard's checkpoint and metadata, by shard number.
    pub shards: Vec<ShardPart>,
    /// When it committed, milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
}

/// How an epoch ended, as [`Coordinator::poll`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EpochEnd {
    /// The global checkpoint committed.
    Completed(GlobalCheckpoint),
    /// The epoch was aborted (a shard failed, the timeout passed, or a later epoch committed
    /// first); the reason.
    Aborted {
        /// The epoch.
        epoch: u64,
        /// Why.
        reason: String,
    },
}

/// The monitoring record of one global checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct GlobalCheckpointRecord {
    /// The epoch.
    pub epoch: u64,
    /// When it was triggered (the coordinator's clock).
    pub triggered: Duration,
    /// From trigger to end (the coordinator's clock).
    pub end_to_end: Duration,
    /// Shard checkpoints reported committed.
    pub shards_committed: usize,
    /// Bytes the shard checkpoints wrote.
    pub bytes_written: u64,
    /// How it ended.
    pub outcome: crate::Outcome,
}

/// A shard: its store and the way to report its checkpoints. Move it to the shard's thread.
pub struct Shard {
    index: usize,
    store: Arc<Store>,
    reports: Sender<Report>,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard").field("index", &self.index).finish_non_exhaustive()
    }
}

struct Report {
    shard: usize,
    epoch: u64,
    result: std::result::Result<(ShardPart, u64), String>,
}

impl Shard {
    /// The shard's number.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The shard's store: its tables are the shard's state.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Checkpoint this shard for `barrier`'s epoch, with `metadata` (e.g. the shard's source
    /// offsets): captures the state now, persists in the background, and reports the outcome
    /// to the coordinator. The handle may be dropped.
    pub fn checkpoint(&self, barrier: &Barrier, metadata: &[u8]) -> Result<CheckpointHandle> {
        if barrier.shard != self.index {
            return Err(Error::InvalidArgument(format!(
                "barrier for shard {} given to shard {}",
                barrier.shard, self.index
            )));
        }
        let (shard, epoch) = (self.index, barrier.epoch);
        let reports = self.reports.clone();
        let notify: Done = Box::new(move |result| {
            let result = match result {
                Ok(info) => Ok((ShardPart { id: info.id, metadata: info.metadata.clone() }, info.bytes_written)),
                Err(e) => Err(e.to_string()),
            };
            let _ = reports.send(Report { shard, epoch, result });
        });
        self.store.start_checkpoint(metadata, vec![notify]).inspect_err(|e| {
            let _ = self.reports.send(Report { shard, epoch, result: Err(e.to_string()) });
        })
    }
}

struct Pending {
    triggered_unix_ms: u64,
    metadata: Vec<u8>,
    parts: Vec<Option<ShardPart>>,
    bytes_written: u64,
    triggered: Duration,
}

/// Runs aligned checkpoints across shards and commits global checkpoints. See the module
/// documentation for the protocol.
pub struct Coordinator {
    global: Store,
    shards: Vec<Arc<Store>>,
    reports: Receiver<Report>,
    pending: BTreeMap<u64, Pending>,
    last: GlobalCheckpoint,
    timeout: Duration,
    clock: Arc<dyn Clock>,
    last_trigger: Duration,
    last_end: Option<Duration>,
    recent: std::collections::VecDeque<GlobalCheckpointRecord>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("location", &self.global.location())
            .field("shards", &self.shards.len())
            .field("last_epoch", &self.last.epoch)
            .finish_non_exhaustive()
    }
}

fn shard_dir(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("shard-{i:04}"))
}

fn decode_record(info: &crate::CheckpointInfo, location: &str) -> Result<GlobalCheckpoint> {
    let record = decode_global(&info.metadata)
        .map_err(|e| Error::corrupted(format!("{location} checkpoint {}", info.id), format!("global record: {e}")))?;
    Ok(GlobalCheckpoint {
        epoch: record.epoch,
        id: info.id,
        metadata: record.metadata,
        shards: record.shards,
        created_unix_ms: info.created_unix_ms,
    })
}

impl Coordinator {
    /// Open (or create) the coordinator in `dir`, restored to its latest global checkpoint:
    /// every shard store is put at the checkpoint that global checkpoint names. Returns the
    /// shards, to be moved to their threads. [`Coordinator::last`] tells the epoch and
    /// metadata to resume from.
    pub fn open(dir: impl AsRef<Path>, opts: CoordinatorOptions) -> Result<(Coordinator, Vec<Shard>)> {
        Self::open_at(dir, opts, None)
    }

    /// [`Coordinator::open`], restored to the global checkpoint of `epoch` instead (the newest
    /// one with that epoch): a rollback of every shard and of the global store, durable when
    /// this returns. Later global checkpoints stay readable with [`Coordinator::at`].
    pub fn open_at(
        dir: impl AsRef<Path>,
        opts: CoordinatorOptions,
        epoch: Option<u64>,
    ) -> Result<(Coordinator, Vec<Shard>)> {
        let dir = dir.as_ref();
        if opts.shards == 0 || opts.shards > MAX_SHARDS {
            return Err(Error::InvalidArgument(format!("{} shards is outside 1..={MAX_SHARDS}", opts.shards)));
        }
        if opts.store.read_only {
            return Err(Error::InvalidArgument("a coordinator cannot open its stores read-only".into()));
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create_dir", dir.display().to_string(), e))?;
        let global = Store::open_with(dir.join("global"), opts.store.clone())?;
        let location = global.location();
        let head = global.head()?.map(|h| decode_record(&h, &location)).transpose()?;
        if let Some(h) = &head {
            if h.shards.len() != opts.shards {
                return Err(Error::InvalidArgument(format!(
                    "the coordinator at {} has {} shards, not {}",
                    dir.display(),
                    h.shards.len(),
                    opts.shards
                )));
            }
        }
        let shards: Vec<Arc<Store>> = (0..opts.shards)
            .map(|i| Store::open_with(shard_dir(dir, i), opts.store.clone()).map(Arc::new))
            .collect::<Result<_>>()?;
        let last = match head {
            None => Self::create(&global, &shards, dir)?,
            Some(head) => {
                let target = match epoch {
                    None => head,
                    Some(e) => Self::find(&global, e)?,
                };
                for (store, part) in shards.iter().zip(&target.shards) {
                    if store.head()?.map(|h| h.id) != Some(part.id) {
                        store.rollback(part.id)?;
                    }
                }
                if global.head()?.map(|h| h.id) != Some(target.id) {
                    global.rollback(target.id)?;
                }
                target
            }
        };
        let (reports_tx, reports) = crossbeam_channel::unbounded();
        let handles = shards
            .iter()
            .enumerate()
            .map(|(index, store)| Shard { index, store: store.clone(), reports: reports_tx.clone() })
            .collect();
        let now = opts.clock.now();
        let coordinator = Coordinator {
            global,
            shards,
            reports,
            pending: BTreeMap::new(),
            last,
            timeout: opts.timeout,
            clock: opts.clock,
            last_trigger: now,
            last_end: None,
            recent: Default::default(),
        };
        Ok((coordinator, handles))
    }

    /// Commit epoch 0: every shard empty (invariant 3). A shard may already hold its empty
    /// first checkpoint from a creation a crash interrupted.
    fn create(global: &Store, shards: &[Arc<Store>], dir: &Path) -> Result<GlobalCheckpoint> {
        let mut parts = Vec::with_capacity(shards.len());
        for (i, store) in shards.iter().enumerate() {
            let info = match store.head()? {
                None => store.checkpoint(INIT_METADATA)?,
                Some(h) if h.metadata == INIT_METADATA && h.parent.is_none() => h,
                Some(_) => {
                    return Err(Error::corrupted(
                        shard_dir(dir, i).display().to_string(),
                        "the shard has checkpoints but its coordinator has no global checkpoint",
                    ))
                }
            };
            parts.push(ShardPart { id: info.id, metadata: info.metadata });
        }
        let record = GlobalRecord { epoch: 0, metadata: Vec::new(), shards: parts };
        let bytes = encode_global(&record)
            .ok_or_else(|| Error::InvalidArgument("the global record would exceed its bound".into()))?;
        let info = global.checkpoint(&bytes)?;
        decode_record(&info, &global.location())
    }

    /// The newest global checkpoint (highest id) of `epoch`.
    fn find(global: &Store, epoch: u64) -> Result<GlobalCheckpoint> {
        Self::list(global)?
            .into_iter()
            .rev()
            .find(|g| g.epoch == epoch)
            .ok_or_else(|| Error::NotFound(format!("global checkpoint of epoch {epoch}")))
    }

    fn list(global: &Store) -> Result<Vec<GlobalCheckpoint>> {
        let location = global.location();
        global
            .checkpoints()?
            .iter()
            .filter(|c| c.kind == ManifestKind::Checkpoint)
            .map(|c| decode_record(c, &location))
            .collect()
    }

    /// The number of shards.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Shard `i`'s store.
    pub fn shard_store(&self, i: usize) -> Option<&Arc<Store>> {
        self.shards.get(i)
    }

    /// The global checkpoint the shards were restored to, or the last one committed since.
    pub fn last(&self) -> &GlobalCheckpoint {
        &self.last
    }

    /// Every committed global checkpoint still retained, oldest first (branches left by
    /// [`Coordinator::open_at`] included).
    pub fn checkpoints(&self) -> Result<Vec<GlobalCheckpoint>> {
        Self::list(&self.global)
    }

    /// Read-only views of every shard at the global checkpoint of `epoch` (the newest one with
    /// that epoch), by shard number.
    pub fn at(&self, epoch: u64) -> Result<Vec<CheckpointView>> {
        let target = Self::find(&self.global, epoch)?;
        self.shards.iter().zip(&target.shards).map(|(store, part)| store.at(part.id)).collect()
    }

    /// Start epoch `epoch` (greater than every epoch triggered or committed before) with
    /// `metadata` (e.g. the source offsets the barriers follow). Returns one barrier per
    /// shard, by shard number, to be delivered in band to each shard's thread.
    pub fn trigger(&mut self, epoch: u64, metadata: &[u8]) -> Result<Vec<Barrier>> {
        let newest = self.pending.keys().next_back().copied().unwrap_or(0).max(self.last.epoch);
        if epoch <= newest {
            return Err(Error::InvalidArgument(format!("epoch {epoch} is not after epoch {newest}")));
        }
        if metadata.len() > format::MAX_METADATA_LEN / 2 {
            return Err(Error::InvalidArgument(format!("global metadata of {} bytes is too large", metadata.len())));
        }
        let now = self.clock.now();
        self.pending.insert(
            epoch,
            Pending {
                triggered_unix_ms: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
                metadata: metadata.to_vec(),
                parts: vec![None; self.shards.len()],
                bytes_written: 0,
                triggered: now,
            },
        );
        self.last_trigger = now;
        tracing::info!(epoch, shards = self.shards.len(), "global checkpoint triggered");
        Ok((0..self.shards.len()).map(|shard| Barrier { epoch, shard }).collect())
    }

    /// Epochs triggered and not yet ended.
    pub fn pending(&self) -> Vec<u64> {
        self.pending.keys().copied().collect()
    }

    /// Take the shards' reports that arrived, commit every epoch all shards have committed,
    /// abort those a shard failed or whose timeout passed. Never blocks on shards.
    pub fn poll(&mut self) -> Result<Vec<EpochEnd>> {
        let mut ended = Vec::new();
        while let Ok(report) = self.reports.try_recv() {
            self.apply(report, &mut ended)?;
        }
        self.expire(&mut ended);
        Ok(ended)
    }

    /// Block until epoch `epoch` ends: its global checkpoint once committed, or
    /// [`Error::Aborted`] / [`Error::Timeout`] with the reason.
    pub fn wait(&mut self, epoch: u64) -> Result<GlobalCheckpoint> {
        loop {
            let mut ended = Vec::new();
            match self.reports.recv_timeout(Duration::from_millis(5)) {
                Ok(report) => self.apply(report, &mut ended)?,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return Err(Error::Closed),
            }
            self.expire(&mut ended);
            for end in ended {
                match end {
                    EpochEnd::Completed(g) if g.epoch == epoch => return Ok(g),
                    EpochEnd::Aborted { epoch: e, reason } if e == epoch => {
                        return Err(if reason.starts_with("timed out") {
                            Error::Timeout(reason)
                        } else {
                            Error::Aborted(reason)
                        })
                    }
                    _ => {}
                }
            }
            if !self.pending.contains_key(&epoch) {
                return Err(Error::NotFound(format!("epoch {epoch} is not pending")));
            }
        }
    }

    /// Trigger an epoch if `policy` says one is due (and none is pending): `next` gives its
    /// number and metadata. Returns the barriers to deliver, if triggered. The dirty-bytes
    /// threshold compares against the sum over the shards.
    pub fn poll_policy(
        &mut self,
        policy: &CheckpointPolicy,
        next: impl FnOnce() -> (u64, Vec<u8>),
    ) -> Result<Option<Vec<Barrier>>> {
        if !self.pending.is_empty() {
            return Ok(None);
        }
        let mut dirty = 0;
        for store in &self.shards {
            dirty += store.dirty_bytes()?;
        }
        if !policy.is_due(self.clock.now(), self.last_trigger, self.last_end, dirty) {
            return Ok(None);
        }
        let (epoch, metadata) = next();
        self.trigger(epoch, &metadata).map(Some)
    }

    /// The global checkpoints that did not commit (aborted epochs), oldest first, across
    /// restarts: the global store's JOURNAL ([`Store::journal`]).
    pub fn journal(&self) -> Result<Vec<crate::JournalEntry>> {
        self.global.journal()
    }

    /// The records of the last global checkpoints that ended (at most 32), oldest first.
    pub fn recent(&self) -> Vec<GlobalCheckpointRecord> {
        self.recent.iter().cloned().collect()
    }

    /// Compact: keep the newest `keep_last` global checkpoints (the last one always), and in
    /// each shard exactly the checkpoints they name (plus what a store always keeps); merge
    /// runs and collect garbage everywhere. Shard checkpoints of aborted epochs go.
    pub fn compact(&self, keep_last: usize) -> Result<()> {
        self.global.compact_with(&Retention::keep_last(keep_last.max(1)))?;
        let retained = self.checkpoints()?;
        for (i, store) in self.shards.iter().enumerate() {
            let keep: BTreeSet<CheckpointId> = retained.iter().filter_map(|g| g.shards.get(i).map(|p| p.id)).collect();
            store.compact_keeping(&Retention::keep_last(0), &keep, |_| Ok(()))?;
        }
        Ok(())
    }

    fn finish(&mut self, epoch: u64, pending: &Pending, outcome: crate::Outcome) {
        let now = self.clock.now();
        self.last_end = Some(now);
        if self.recent.len() == 32 {
            self.recent.pop_front();
        }
        self.recent.push_back(GlobalCheckpointRecord {
            epoch,
            triggered: pending.triggered,
            end_to_end: now.saturating_sub(pending.triggered),
            shards_committed: pending.parts.iter().filter(|p| p.is_some()).count(),
            bytes_written: pending.bytes_written,
            outcome,
        });
    }

    fn abort(&mut self, epoch: u64, reason: String, ended: &mut Vec<EpochEnd>) {
        if let Some(p) = self.pending.remove(&epoch) {
            tracing::warn!(epoch, %reason, "global checkpoint aborted");
            self.finish(epoch, &p, crate::Outcome::Aborted(reason.clone()));
            let took = self.clock.now().saturating_sub(p.triggered);
            self.global.note_not_committed(format!("epoch {epoch} aborted: {reason}"), p.triggered_unix_ms, took);
            ended.push(EpochEnd::Aborted { epoch, reason });
        }
    }

    fn expire(&mut self, ended: &mut Vec<EpochEnd>) {
        let now = self.clock.now();
        let late: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| now.saturating_sub(p.triggered) >= self.timeout)
            .map(|(e, _)| *e)
            .collect();
        for epoch in late {
            self.abort(epoch, format!("timed out after {:?} waiting for shards", self.timeout), ended);
        }
    }

    fn apply(&mut self, report: Report, ended: &mut Vec<EpochEnd>) -> Result<()> {
        let Some(pending) = self.pending.get_mut(&report.epoch) else {
            return Ok(()); // an epoch already aborted: its shard checkpoint is garbage
        };
        match report.result {
            Err(reason) => {
                self.abort(report.epoch, format!("shard {} did not commit: {reason}", report.shard), ended);
                return Ok(());
            }
            Ok((part, bytes)) => {
                if let Some(slot) = pending.parts.get_mut(report.shard) {
                    *slot = Some(part);
                }
                pending.bytes_written += bytes;
            }
        }
        if pending.parts.iter().any(Option::is_none) {
            return Ok(());
        }
        let epoch = report.epoch;
        let Some(pending) = self.pending.remove(&epoch) else { return Ok(()) };
        // Earlier epochs still pending can no longer complete in order: a later one wins.
        let earlier: Vec<u64> = self.pending.range(..epoch).map(|(e, _)| *e).collect();
        for e in earlier {
            self.abort(e, format!("epoch {epoch} committed first"), ended);
        }
        let record = GlobalRecord {
            epoch,
            metadata: pending.metadata.clone(),
            shards: pending.parts.iter().flatten().cloned().collect(),
        };
        let Some(bytes) = encode_global(&record) else {
            self.abort(epoch, "the global record exceeds its bound".into(), ended);
            return Ok(());
        };
        match self.global.checkpoint(&bytes) {
            Ok(info) => {
                let global = decode_record(&info, &self.global.location())?;
                tracing::info!(epoch, id = info.id.0, "global checkpoint committed");
                self.finish(epoch, &pending, crate::Outcome::Completed);
                self.last = global.clone();
                ended.push(EpochEnd::Completed(global));
                Ok(())
            }
            Err(e) => {
                self.finish(epoch, &pending, crate::Outcome::Failed(e.to_string()));
                ended.push(EpochEnd::Aborted { epoch, reason: format!("committing the global record failed: {e}") });
                Err(e)
            }
        }
    }
}

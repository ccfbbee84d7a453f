//! Store configuration.

use crate::compaction::Retention;
use crate::format::MAX_CHUNK_LEN;
use crate::{Error, Result};

/// How chunks are compressed in segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Compression {
    /// Store chunks as they are (default: state values are often already dense, and the
    /// checkpoint path is latency-bound).
    #[default]
    None,
    /// LZ4 block compression; a chunk that does not shrink is stored as is.
    Lz4,
}

impl Compression {
    /// The codec chunks are written with.
    pub(crate) fn codec(self) -> crate::format::Codec {
        match self {
            Compression::None => crate::format::Codec::None,
            Compression::Lz4 => crate::format::Codec::Lz4,
        }
    }
}

/// What [`crate::Store::checkpoint_async`] does when
/// [`Options::max_checkpoints_in_flight`] checkpoints are already persisting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WhenBusy {
    /// Block the caller until one finishes (default): back-pressure on the processing thread.
    #[default]
    Wait,
    /// Refuse with [`Error::Busy`] at once; nothing is captured, the writes stay dirty.
    Refuse,
}

/// Called on the checkpoint pipeline's thread with the record of every checkpoint that ends
/// (completed, aborted or failed). Keep it short; it must not drop the [`crate::Store`].
pub type CheckpointListener = std::sync::Arc<dyn Fn(&crate::CheckpointRecord) + Send + Sync>;

/// Options for [`crate::Store::open_with`]. Build with [`Options::new`] and the setters.
///
/// | option | default | meaning |
/// | --- | --- | --- |
/// | [`chunk_target_bytes`](Options::chunk_target_bytes) | 64 KiB | typical chunk size; boundaries depend on keys, so equal content makes equal chunks |
/// | [`sync`](Options::sync) | `true` | fsync files and directories (turn off only in tests: a crash may then lose committed checkpoints) |
/// | [`compression`](Options::compression) | [`Compression::None`] | chunk compression in segments |
/// | [`create_if_missing`](Options::create_if_missing) | `true` | create the store directory if it does not hold a store |
/// | [`read_only`](Options::read_only) | `false` | open for reading only: shared lock, nothing written or removed |
/// | [`retention`](Options::retention) | keep the last 10 | which checkpoints [`crate::Store::compact`] keeps |
/// | [`max_runs_per_table`](Options::max_runs_per_table) | 11 | compaction merges a table's runs past this many (restore reads at most this many per table once compacted) |
/// | [`merge_slices`](Options::merge_slices) | 2 | a table's base run is merged one key-range slice in this many at a time (1: whole) |
/// | [`segment_live_fraction_min`](Options::segment_live_fraction_min) | 0.5 | GC rewrites a segment whose live bytes fall below this fraction |
/// | [`auto_compact`](Options::auto_compact) | `false` | run [`crate::Store::compact`] after every checkpoint, on the caller's thread |
/// | [`background_compaction`](Options::background_compaction) | `false` | run [`crate::Store::compact`] on a background thread after checkpoints commit |
/// | [`compaction_bytes_per_sec`](Options::compaction_bytes_per_sec) | unbounded | the rate compaction may write at, on average |
/// | [`max_checkpoints_in_flight`](Options::max_checkpoints_in_flight) | 1 | checkpoints captured but not yet committed |
/// | [`when_busy`](Options::when_busy) | [`WhenBusy::Wait`] | what a checkpoint trigger does when that many are in flight |
/// | [`hash_threads`](Options::hash_threads) | cores, at most 4 | threads a checkpoint cuts and hashes its chunks on |
/// | [`listener`](Options::listener) | none | called with every checkpoint's [`crate::CheckpointRecord`] |
///
/// Compaction is off by default. Without it (neither [`auto_compact`](Options::auto_compact)
/// nor [`background_compaction`](Options::background_compaction), and no call to
/// [`crate::Store::compact`]) nothing is ever deleted or merged: every checkpoint that changes
/// a table adds a run, and every manifest lists all the runs so far (about 37 bytes each).
/// After 38,000 checkpoints each new manifest is 1.4 MB and the manifests together 27 GB, and
/// an open reads every run. A store that checkpoints often needs compaction.
#[derive(Clone)]
pub struct Options {
    pub(crate) chunk_target_bytes: usize,
    pub(crate) sync: bool,
    pub(crate) compression: Compression,
    pub(crate) create_if_missing: bool,
    pub(crate) read_only: bool,
    pub(crate) retention: Retention,
    pub(crate) max_runs_per_table: usize,
    pub(crate) merge_slices: usize,
    pub(crate) segment_live_fraction_min: f64,
    pub(crate) auto_compact: bool,
    pub(crate) background_compaction: bool,
    pub(crate) compaction_bytes_per_sec: Option<u64>,
    pub(crate) max_checkpoints_in_flight: usize,
    pub(crate) when_busy: WhenBusy,
    pub(crate) hash_threads: usize,
    pub(crate) listener: Option<CheckpointListener>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("chunk_target_bytes", &self.chunk_target_bytes)
            .field("sync", &self.sync)
            .field("compression", &self.compression)
            .field("create_if_missing", &self.create_if_missing)
            .field("read_only", &self.read_only)
            .field("retention", &self.retention)
            .field("max_runs_per_table", &self.max_runs_per_table)
            .field("merge_slices", &self.merge_slices)
            .field("segment_live_fraction_min", &self.segment_live_fraction_min)
            .field("auto_compact", &self.auto_compact)
            .field("background_compaction", &self.background_compaction)
            .field("compaction_bytes_per_sec", &self.compaction_bytes_per_sec)
            .field("max_checkpoints_in_flight", &self.max_checkpoints_in_flight)
            .field("when_busy", &self.when_busy)
            .field("hash_threads", &self.hash_threads)
            .field("listener", &self.listener.as_ref().map(|_| "Fn"))
            .finish()
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            chunk_target_bytes: Options::DEFAULT_CHUNK_TARGET_BYTES,
            sync: true,
            compression: Compression::None,
            create_if_missing: true,
            read_only: false,
            retention: Retention::default(),
            max_runs_per_table: 11,
            merge_slices: Options::DEFAULT_MERGE_SLICES,
            segment_live_fraction_min: 0.5,
            auto_compact: false,
            background_compaction: false,
            compaction_bytes_per_sec: None,
            max_checkpoints_in_flight: 1,
            when_busy: WhenBusy::Wait,
            hash_threads: std::thread::available_parallelism().map_or(1, |n| n.get().min(4)),
            listener: None,
        }
    }
}

// Twice the largest target plus the largest entry (kind byte, two varints, key, value) fits a chunk.
const _: () = assert!(
    2 * Options::MAX_CHUNK_TARGET_BYTES + 1 + 3 + 4 + crate::format::MAX_KEY_LEN + crate::format::MAX_VALUE_LEN
        <= MAX_CHUNK_LEN
);

impl Options {
    /// Default typical chunk size.
    pub const DEFAULT_CHUNK_TARGET_BYTES: usize = 64 * 1024;
    /// Smallest allowed chunk target (tiny chunks let tests reach chunk boundaries with little data).
    pub const MIN_CHUNK_TARGET_BYTES: usize = 64;
    /// Largest allowed chunk target. A chunk is cut as soon as it reaches twice the target, so
    /// it holds less than that plus one entry, which must stay within `MAX_CHUNK_LEN`.
    pub const MAX_CHUNK_TARGET_BYTES: usize = 4 * 1024 * 1024;

    /// The defaults (see the table above).
    pub fn new() -> Self {
        Self::default()
    }

    /// Typical chunk size in bytes, from [`Self::MIN_CHUNK_TARGET_BYTES`] to
    /// [`Self::MAX_CHUNK_TARGET_BYTES`]; checked by `open`.
    pub fn chunk_target_bytes(mut self, bytes: usize) -> Self {
        self.chunk_target_bytes = bytes;
        self
    }

    /// Whether to fsync (default `true`). With `false`, checkpoints are not durable.
    pub fn sync(mut self, sync: bool) -> Self {
        self.sync = sync;
        self
    }

    /// Chunk compression (default none).
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Whether `open` creates a store where there is none (default `true`). With `false`,
    /// opening a path that holds no store fails with [`Error::NotFound`] and writes nothing.
    pub fn create_if_missing(mut self, create: bool) -> Self {
        self.create_if_missing = create;
        self
    }

    /// Open for reading only (default `false`): the store must exist; the directory lock is
    /// taken shared, so several read-only openers can inspect a store no writer holds; nothing
    /// is written or removed (leftovers of an interrupted checkpoint stay, invisible); every
    /// write, checkpoint and rollback fails with [`Error::ReadOnly`].
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Which checkpoints compaction keeps (default: the last 10, plus HEAD, pins and views).
    pub fn retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// Most runs a table may have before compaction merges some (default 11, at least 1).
    ///
    /// A restore reads at most this many runs per table once compacted. Every checkpoint
    /// that changes a table adds a run, so with compaction after each checkpoint a merge
    /// comes every `max_runs_per_table - 1` checkpoints or so. The default is the default
    /// retention window (the last 10) plus one: merges then come a window apart, and the
    /// retained checkpoints usually hold the chunks of at most one merge's replaced runs.
    pub fn max_runs_per_table(mut self, runs: usize) -> Self {
        self.max_runs_per_table = runs;
        self
    }

    /// In how many key-range slices a merge takes in a table's base run (default 2, from 1
    /// to [`Self::MAX_MERGE_SLICES`]).
    ///
    /// Once a table's base (its oldest run) outweighs its newer runs twice, a merge folds the
    /// newer runs' entries into one slice of the base at a time and lists the rest of the base
    /// again unchanged. Every retained checkpoint older than a merge keeps the chunks the merge
    /// replaced until retention drops it; the GC stores them as deltas against the chunks that
    /// replaced them, and with slices the rest of the base is not rewritten at all. The price
    /// is more merging I/O: entries outside the slice are rewritten into one run at each
    /// merge, so more slices write more. 1 merges the whole base at once (size-tiered),
    /// writing least.
    ///
    /// Measured on the space workload (`tests/tests/space.rs`: 100,000 keys, 1% updated per
    /// checkpoint, keep-last-10, 11 runs): 2 slices kept bytes on disk within 1.35x the unique
    /// live bytes and wrote 754 MB of compaction over 1,000 checkpoints; 4 slices, 1.56x and
    /// 550 MB.
    pub fn merge_slices(mut self, slices: usize) -> Self {
        self.merge_slices = slices;
        self
    }

    /// The default of [`Self::merge_slices`].
    pub const DEFAULT_MERGE_SLICES: usize = 2;

    /// Most slices [`Self::merge_slices`] accepts.
    pub const MAX_MERGE_SLICES: usize = 256;

    /// Live fraction below which GC rewrites a segment (default 0.5, from 0.0 to 1.0).
    pub fn segment_live_fraction_min(mut self, fraction: f64) -> Self {
        self.segment_live_fraction_min = fraction;
        self
    }

    /// Compact after every checkpoint (default `false`). Compaction then runs on the
    /// checkpointing thread, after the checkpoint is committed.
    pub fn auto_compact(mut self, on: bool) -> Self {
        self.auto_compact = on;
        self
    }

    /// Compact on a background thread (default `false`): after a checkpoint commits, the
    /// store's compaction thread runs [`crate::Store::compact`] (requests arriving while one
    /// runs are folded into one more run). Checkpoints and writes go on meanwhile: merges and
    /// the GC read and write without the store's lock, and hold back a checkpoint's commit
    /// only while they commit their own manifest or HEAD. Compaction also gives way to
    /// checkpoints on the disk: before each of its reads, writes (a segment goes in 512 KiB
    /// pieces, each sent to the disk before the next), deletes and syncs, it waits until no
    /// checkpoint is in flight, for at most [`crate::COMPACTION_YIELD_MAX`], and one
    /// compaction waits in all at most that bound plus a quarter of the time it spent
    /// working. So with checkpoints back to back and never a moment without one in flight,
    /// compaction still goes on at about four fifths of its pace.
    /// Failures are kept in [`crate::Stats::last_auto_compact_error`]. Not with
    /// [`Options::auto_compact`].
    pub fn background_compaction(mut self, on: bool) -> Self {
        self.background_compaction = on;
        self
    }

    /// Bound the rate compaction writes at (default: unbounded): after each step that wrote
    /// (a merge, a segment rewrite) compaction sleeps until its bytes written so far fit
    /// `bytes_per_sec` on average. At least 1.
    pub fn compaction_bytes_per_sec(mut self, bytes_per_sec: Option<u64>) -> Self {
        self.compaction_bytes_per_sec = bytes_per_sec;
        self
    }

    /// Most checkpoints captured and not yet committed (default 1, at least 1). A trigger
    /// past it waits or is refused, as [`Options::when_busy`] says.
    pub fn max_checkpoints_in_flight(mut self, n: usize) -> Self {
        self.max_checkpoints_in_flight = n;
        self
    }

    /// What a checkpoint trigger does when [`Options::max_checkpoints_in_flight`] are in
    /// flight (default [`WhenBusy::Wait`]).
    pub fn when_busy(mut self, policy: WhenBusy) -> Self {
        self.when_busy = policy;
        self
    }

    /// Threads a checkpoint (and a merge) works on (default: the cores, at most 4; at least
    /// 1): they hash chunks in parallel, and a checkpoint of 4,096 to 262,144 dirty keys of a
    /// table sorts, cuts and hashes the upper half of its keys on a second thread. That one
    /// is the process's `cairn-cut` thread, started at the first such checkpoint, parked
    /// between them, shared by every store, and allowed on every CPU but the one offering
    /// it work (on Linux); a checkpoint that finds it busy or late cuts that half itself.
    /// With an asynchronous checkpoint those threads share the cores with the writers
    /// meanwhile; 1 keeps the whole checkpoint on the pipeline's thread. The bytes written
    /// are the same for any value.
    pub fn hash_threads(mut self, threads: usize) -> Self {
        self.hash_threads = threads;
        self
    }

    /// Call `listener` with the record of every checkpoint that ends: completed, aborted or
    /// failed (default none). It runs on the checkpoint pipeline's thread.
    pub fn listener(mut self, listener: impl Fn(&crate::CheckpointRecord) + Send + Sync + 'static) -> Self {
        self.listener = Some(std::sync::Arc::new(listener));
        self
    }

    pub(crate) fn creates(&self) -> bool {
        self.create_if_missing && !self.read_only
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.auto_compact && self.background_compaction {
            return Err(Error::InvalidArgument("auto_compact and background_compaction exclude each other".into()));
        }
        if self.compaction_bytes_per_sec == Some(0) {
            return Err(Error::InvalidArgument("compaction_bytes_per_sec must be at least 1".into()));
        }
        if self.max_checkpoints_in_flight == 0 {
            return Err(Error::InvalidArgument("max_checkpoints_in_flight must be at least 1".into()));
        }
        if self.hash_threads == 0 {
            return Err(Error::InvalidArgument("hash_threads must be at least 1".into()));
        }
        if self.max_runs_per_table == 0 {
            return Err(Error::InvalidArgument("max_runs_per_table must be at least 1".into()));
        }
        if !(1..=Self::MAX_MERGE_SLICES).contains(&self.merge_slices) {
            return Err(Error::InvalidArgument(format!(
                "merge_slices {} is outside 1..={}",
                self.merge_slices,
                Self::MAX_MERGE_SLICES
            )));
        }
        if !(0.0..=1.0).contains(&self.segment_live_fraction_min) {
            return Err(Error::InvalidArgument(format!(
                "segment_live_fraction_min {} is outside 0.0..=1.0",
                self.segment_live_fraction_min
            )));
        }
        if !(Self::MIN_CHUNK_TARGET_BYTES..=Self::MAX_CHUNK_TARGET_BYTES).contains(&self.chunk_target_bytes) {
            return Err(Error::InvalidArgument(format!(
                "chunk_target_bytes {} is outside {}..={}",
                self.chunk_target_bytes,
                Self::MIN_CHUNK_TARGET_BYTES,
                Self::MAX_CHUNK_TARGET_BYTES
            )));
        }
        Ok(())
    }
}

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
/// | [`max_runs_per_table`](Options::max_runs_per_table) | 8 | compaction merges a table's runs past this many (restore reads at most this many per table once compacted) |
/// | [`segment_live_fraction_min`](Options::segment_live_fraction_min) | 0.5 | GC rewrites a segment whose live bytes fall below this fraction |
/// | [`auto_compact`](Options::auto_compact) | `false` | run [`crate::Store::compact`] after every checkpoint, on the caller's thread |
#[derive(Clone, Debug)]
pub struct Options {
    pub(crate) chunk_target_bytes: usize,
    pub(crate) sync: bool,
    pub(crate) compression: Compression,
    pub(crate) create_if_missing: bool,
    pub(crate) read_only: bool,
    pub(crate) retention: Retention,
    pub(crate) max_runs_per_table: usize,
    pub(crate) segment_live_fraction_min: f64,
    pub(crate) auto_compact: bool,
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
            max_runs_per_table: 8,
            segment_live_fraction_min: 0.5,
            auto_compact: false,
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

    /// Most runs a table may have before compaction merges some (default 8, at least 1).
    pub fn max_runs_per_table(mut self, runs: usize) -> Self {
        self.max_runs_per_table = runs;
        self
    }

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

    pub(crate) fn creates(&self) -> bool {
        self.create_if_missing && !self.read_only
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.max_runs_per_table == 0 {
            return Err(Error::InvalidArgument("max_runs_per_table must be at least 1".into()));
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

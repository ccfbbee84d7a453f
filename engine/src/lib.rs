//! # cairn
//!
//! An embeddable incremental checkpointing storage engine: the state backend a stream
//! processor links in to keep keyed state, checkpoint it cheaply and often, and come back after
//! a crash or a bad deploy to exactly the state of a chosen checkpoint.
//!
//! State lives in memory as named [`Table`]s. Every write marks its key dirty; a
//! [`Store::checkpoint`] writes only the dirty entries, sorted and cut into immutable chunks
//! named by their blake3 hash (a chunk already stored is never written again), into one new
//! segment, then commits a manifest that links to its parent. The manifest chain gives
//! [`Store::rollback`] and time travel ([`Store::at`]).
//!
//! ```
//! # fn main() -> cairn::Result<()> {
//! # let dir = std::env::temp_dir().join(format!("cairn-doc-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&dir);
//! let store = cairn::Store::open(&dir)?;
//! let counts = store.table("counts")?;
//! counts.put(b"apple", &1u64.to_le_bytes())?;
//! let first = store.checkpoint(b"offset=1")?;
//!
//! counts.put(b"apple", &2u64.to_le_bytes())?;
//! store.checkpoint(b"offset=2")?;
//! drop((counts, store));
//!
//! // After a crash or a restart, open returns the latest committed checkpoint.
//! let store = cairn::Store::open(&dir)?;
//! assert_eq!(store.head()?.unwrap().metadata, b"offset=2");
//! assert_eq!(store.table("counts")?.get(b"apple")?, Some(2u64.to_le_bytes().to_vec()));
//!
//! // Any committed checkpoint can be read in place, or made the working state again.
//! assert_eq!(store.at(first.id)?.get("counts", b"apple")?, Some(1u64.to_le_bytes().to_vec()));
//! store.rollback(first.id)?;
//! assert_eq!(store.table("counts")?.get(b"apple")?, Some(1u64.to_le_bytes().to_vec()));
//! # drop(store);
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok(())
//! # }
//! ```
//!
//! Rooms: [`format`](mod@format) (every byte on disk; pure, fuzzed), [`storage`] (the
//! [`Storage`] trait and its backends), `state` (working tables and dirty set), `checkpoint`
//! (capture and persist), `version` (the manifest chain, reading verified chunks), and this
//! crate's façade.
#![deny(missing_docs)]
#![warn(clippy::unwrap_used, clippy::expect_used)]

mod checkpoint;
pub(crate) mod compaction;
mod coordinator;
mod error;
pub mod format;
#[doc(hidden)]
pub mod fuzz_ops;
mod options;
mod policy;
mod state;
pub mod storage;
mod store;
mod table;
mod typed;
mod verify;
mod version;
mod view;

pub use compaction::{CompactionReport, Retention};
pub use coordinator::{
    Barrier, Coordinator, CoordinatorOptions, EpochEnd, GlobalCheckpoint, GlobalCheckpointRecord, Shard,
};
pub use error::{Error, Result};
pub use format::{CheckpointId, ChunkHash, JournalEntry, ManifestKind, SegmentId, ShardPart};
pub use options::{CheckpointListener, Compression, Options, WhenBusy};
pub use policy::{CheckpointPolicy, Clock, ManualClock, Periodic, SystemClock, Tick};
pub use storage::Storage;
pub use store::{
    CheckpointHandle, CheckpointInfo, CheckpointRecord, CompactStep, Outcome, Stats, Store, COMPACTION_YIELD_MAX,
};
pub use table::Table;
pub use typed::TypedTable;
pub use verify::{Problem, VerifyReport};
pub use view::CheckpointView;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

/// Entries (key, value or `None` for a tombstone) in the form a checkpoint captures them, for
/// [`encode_entries_for_bench`]; converting is left out of what the benchmark times. Not part
/// of the stable API.
#[doc(hidden)]
#[derive(Clone)]
pub struct BenchEntries(state::CapturedEntries);

impl BenchEntries {
    /// Convert `entries` once, ahead of the timed part.
    pub fn new(entries: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Self {
        BenchEntries(
            entries.into_iter().map(|(k, v)| (state::Key::from(k.as_slice()), v.map(state::Value::from))).collect(),
        )
    }

    /// The entries at `positions`, in that order, sharing the values (as a capture shares
    /// them with the table): a dirty set whose values lie scattered over a larger heap.
    /// Positions out of range are skipped.
    pub fn pick(&self, positions: impl IntoIterator<Item = usize>) -> Self {
        BenchEntries(positions.into_iter().filter_map(|i| self.0.get(i).cloned()).collect())
    }
}

/// Sort, cut into chunks, hash and encode `entries` as one checkpoint would on up to
/// `threads` threads, in memory only; returns the segment bytes produced. Exposed for the
/// `hash_chunk` benchmark; not part of the stable API.
#[doc(hidden)]
pub fn encode_entries_for_bench(entries: BenchEntries, chunk_target_bytes: usize, threads: usize) -> u64 {
    checkpoint::encode_only(entries.0, chunk_target_bytes, threads.max(1))
}

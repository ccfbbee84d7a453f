//! Compaction: retention (which checkpoints stay), run merging (bounding what a restore
//! reads) and garbage collection (deleting and rewriting segments no retained checkpoint
//! needs).
//!
//! Safety rules (see `format-spec.md`, "Compaction and garbage collection"):
//! 1. Everything reachable is worked out before anything is deleted: the live set is the
//!    chunks referenced by every retained manifest, plus every chunk a checkpoint reuses while
//!    the GC runs (the guard).
//! 2. A manifest is deleted only if retention dropped it; a segment only when no live chunk
//!    has its home there, and only after whatever replaced it (a merged run's manifest, a
//!    rewritten segment named by HEAD) is durable.
//! 3. Every step is idempotent, so a GC interrupted anywhere is simply run again.

pub(crate) mod gc;
pub(crate) mod merge;
mod retention;

pub use retention::Retention;
pub(crate) use retention::{select_retained, Candidate};

/// What one [`crate::Store::compact`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactionReport {
    /// The compaction checkpoint that holds the merged layout, if runs were merged.
    pub merged_into: Option<crate::CheckpointId>,
    /// Runs merged away (runs before minus runs after, over all tables).
    pub runs_merged: u64,
    /// Tables whose base run took in a slice ([`crate::Options::merge_slices`]).
    pub slices_merged: u64,
    /// Checkpoints retention removed.
    pub checkpoints_deleted: u64,
    /// Segments deleted.
    pub segments_deleted: u64,
    /// Segments rewritten (live chunks copied to a new segment) and then deleted.
    pub segments_rewritten: u64,
    /// Chunks a rewrite stored as a delta against a chunk of HEAD (see
    /// [`crate::Store::compact_with`]).
    pub chunks_stored_as_delta: u64,
    /// Bytes of segments and manifests deleted.
    pub bytes_reclaimed: u64,
    /// Bytes written: merged runs, rewritten segments, the compaction manifest and HEAD.
    pub bytes_written: u64,
}

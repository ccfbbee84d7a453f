//! Compaction's writes give way to checkpoints.
//!
//! A checkpoint's latency is mostly its fsyncs, and an fsync waits for whatever else the
//! disk is writing. A compaction writing a 4 MiB segment or deleting a batch of segments
//! while a checkpoint commits made that checkpoint wait for both: these were the stalls of
//! `cairn bench --background-compaction` (p99 at 2.6-3.3x p50, every slow round overlapping
//! a compaction write, fsync or delete).
//!
//! [`Yielding`] is the storage compaction writes through when it holds no lock: before each
//! write, delete or sync it waits until no checkpoint is in flight, for at most
//! [`COMPACTION_YIELD_MAX`], so its I/O falls between checkpoints. It writes a segment in
//! pieces ([`Storage::put_paced`]), each sent to the disk before the next, so a checkpoint
//! that starts meanwhile waits behind one piece, not a whole segment. Reads go straight
//! through.
//!
//! It must not be used while holding the store's lock or its commit lock: it takes the
//! store's lock to wait, and a checkpoint waiting for the commit lock is in flight, so the
//! wait would only time out.

use super::Shared;
use crate::storage::Storage;
use crate::Result;
use std::time::{Duration, Instant};

/// The longest compaction waits for checkpoints in flight to end before each of its writes
/// (a piece of a segment), deletes or syncs. Bounded so that a store checkpointing without
/// pause still compacts.
pub const COMPACTION_YIELD_MAX: Duration = Duration::from_millis(100);

/// The store's storage, waiting for a pause in checkpoints before each change.
pub(crate) struct Yielding<'a> {
    shared: &'a Shared,
}

impl<'a> Yielding<'a> {
    pub(crate) fn new(shared: &'a Shared) -> Self {
        Yielding { shared }
    }

    /// Wait until no checkpoint is in flight, or [`COMPACTION_YIELD_MAX`] has passed. (A
    /// poisoned lock ends the wait: the write that follows reports what it finds.)
    pub(crate) fn give_way(&self) {
        let deadline = Instant::now() + COMPACTION_YIELD_MAX;
        let Ok(mut inner) = self.shared.lock() else { return };
        while inner.in_flight > 0 {
            let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) else {
                return;
            };
            match self.shared.idle.wait_timeout(inner, left) {
                Ok((guard, _)) => inner = guard,
                Err(_) => return,
            }
        }
    }

    fn storage(&self) -> &dyn Storage {
        self.shared.storage.as_ref()
    }
}

/// Only `put`, `delete` and `sync` are what compaction calls outside the locks; `put_new` and
/// `commit_head` give way too, so the wrapper keeps its promise whatever is called.
impl Storage for Yielding<'_> {
    fn put(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.storage().put_paced(name, bytes, &mut || self.give_way())
    }

    fn put_new(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.give_way();
        self.storage().put_new(name, bytes)
    }

    fn sync(&self) -> Result<()> {
        self.give_way();
        self.storage().sync()
    }

    fn commit_head(&self, bytes: &[u8]) -> Result<()> {
        self.give_way();
        self.storage().commit_head(bytes)
    }

    fn read(&self, name: &str, max_len: usize) -> Result<Vec<u8>> {
        self.storage().read(name, max_len)
    }

    fn read_range(&self, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        self.storage().read_range(name, offset, len)
    }

    fn size(&self, name: &str) -> Result<u64> {
        self.storage().size(name)
    }

    fn list(&self, dir: &str) -> Result<Vec<String>> {
        self.storage().list(dir)
    }

    fn delete(&self, name: &str) -> Result<()> {
        self.give_way();
        self.storage().delete(name)
    }

    fn remove_temporaries(&self) -> Result<()> {
        self.storage().remove_temporaries()
    }

    fn location(&self) -> String {
        self.storage().location()
    }
}

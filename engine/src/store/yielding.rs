//! Compaction's reads and writes give way to checkpoints.
//!
//! A checkpoint's latency is mostly its fsyncs, and an fsync waits for whatever else the
//! disk is doing. A compaction writing a 4 MiB segment or deleting a batch of segments
//! while a checkpoint commits made that checkpoint wait for both: these were the stalls of
//! `cairn bench --background-compaction` (p99 at 2.6-3.3x p50, every slow round overlapping
//! a compaction write, fsync or delete). Once writes gave way, the slowest rounds left
//! overlapped a merge's reads: a checkpoint's segment is written with direct I/O, so a merge
//! reads it back from the disk, not the page cache, and those reads queued beside the
//! checkpoint's fsyncs (commits of 10-25 ms against 3-4 ms).
//!
//! [`Yielding`] is the storage compaction reads and writes through when it holds no lock:
//! before each read, write, delete or sync it waits until no checkpoint is in flight, for at
//! most [`COMPACTION_YIELD_MAX`], so its I/O falls between checkpoints. It writes a segment
//! in pieces ([`Storage::put_paced`]), each sent to the disk before the next, so a checkpoint
//! that starts meanwhile waits behind one piece, not a whole segment.
//!
//! Its waits are budgeted ([`WaitBudget`]): one compaction waits in all at most
//! [`COMPACTION_YIELD_MAX`] plus a quarter of the time it has spent working (its age less
//! its waits). With checkpoints back to back, never a moment without one in flight, a
//! compaction that reads chunk by chunk would otherwise wait the whole bound before every
//! read; with the budget it keeps at least about four fifths of its pace. The price is space
//! when checkpoints never pause: over 1,000 back-to-back rounds of `cairn bench
//! --background-compaction 0` the store ended at 6.4-7.9x its payload against 4.2-5.6x with
//! reads not giving way (with a budget of the whole time worked, half the pace, 8.2-10.1x),
//! while checkpoint p99 fell by a fifth to a half.
//!
//! It must not be used while holding the store's lock or its commit lock: it takes the
//! store's lock to wait, and a checkpoint waiting for the commit lock is in flight, so the
//! wait would only time out.

use super::Shared;
use crate::storage::Storage;
use crate::Result;
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

/// The longest compaction waits for checkpoints in flight to end before each of its reads,
/// writes (a piece of a segment), deletes or syncs. Bounded so that a store checkpointing
/// without pause still compacts. All the waits of one compaction add up to at most this
/// plus a quarter of the time it spent working, so it keeps about four fifths of its pace.
pub const COMPACTION_YIELD_MAX: Duration = Duration::from_millis(100);

/// The waits of the compaction running (one per store at a time), restarted as it starts.
pub(crate) struct WaitBudget {
    /// When the compaction started: its age, less `waited`, is the time it has spent working.
    started: Instant,
    /// How long its waits took in all.
    waited: Duration,
}

impl WaitBudget {
    pub(crate) fn new() -> Self {
        WaitBudget { started: Instant::now(), waited: Duration::ZERO }
    }
}

/// The store's storage, waiting for a pause in checkpoints before each read and change.
pub(crate) struct Yielding<'a> {
    shared: &'a Shared,
}

impl<'a> Yielding<'a> {
    pub(crate) fn new(shared: &'a Shared) -> Self {
        Yielding { shared }
    }

    /// Wait until no checkpoint is in flight, for at most [`COMPACTION_YIELD_MAX`] and at most
    /// what is left of the compaction's budget (see the module's doc). (A poisoned lock ends
    /// the wait: the operation that follows reports what it finds.)
    pub(crate) fn give_way(&self) {
        let left = {
            let budget = self.budget();
            wait_allowed(budget.started.elapsed(), budget.waited)
        };
        let started = Instant::now();
        self.wait_while_in_flight(started + left);
        self.budget().waited += started.elapsed();
    }

    fn budget(&self) -> MutexGuard<'_, WaitBudget> {
        self.shared.compaction_waits.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait until no checkpoint is in flight or `deadline` has passed.
    fn wait_while_in_flight(&self, deadline: Instant) {
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

/// A compaction's waits add up to at most [`COMPACTION_YIELD_MAX`] plus the time it spent
/// working divided by this.
const WORK_PER_WAIT: u32 = 4;

/// The longest the next wait may take, for a compaction of age `age` whose waits took
/// `waited` in all: [`COMPACTION_YIELD_MAX`], and no more than keeps its waits within
/// [`COMPACTION_YIELD_MAX`] plus the time it spent working (`age - waited`) divided by
/// [`WORK_PER_WAIT`].
fn wait_allowed(age: Duration, waited: Duration) -> Duration {
    let worked = age.saturating_sub(waited);
    (worked / WORK_PER_WAIT + COMPACTION_YIELD_MAX).saturating_sub(waited).min(COMPACTION_YIELD_MAX)
}

/// Compaction calls `put`, `delete`, `sync` and the reads outside the locks; `put_new` and
/// `commit_head` give way too, so the wrapper keeps its promise whatever is called. Sizes and
/// listings go straight through (file-system metadata, which the page cache holds).
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
        self.give_way();
        self.storage().read(name, max_len)
    }

    fn read_range(&self, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        self.give_way();
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

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn each_wait_is_bounded_and_all_waits_stay_within_a_quarter_of_the_time_worked_plus_the_bound() {
        // A fresh one may wait the whole bound, once.
        assert_eq!(wait_allowed(Duration::ZERO, Duration::ZERO), COMPACTION_YIELD_MAX);
        // Having waited it, it waits again only a quarter as long as it has worked since.
        assert_eq!(wait_allowed(100 * MS, 100 * MS), Duration::ZERO);
        assert_eq!(wait_allowed(140 * MS, 100 * MS), 10 * MS);
        // Never more than the bound at once, however long it has worked.
        assert_eq!(wait_allowed(10_000 * MS, Duration::ZERO), COMPACTION_YIELD_MAX);
        assert_eq!(wait_allowed(2_500 * MS, 500 * MS), COMPACTION_YIELD_MAX);
        // Waits past the budget (one ended late) leave nothing, never a negative wait.
        assert_eq!(wait_allowed(300 * MS, 250 * MS), Duration::ZERO);
        // So with a checkpoint always in flight (every wait the most allowed), waits take
        // about a fifth of its time once past the first bound.
        let (mut age, mut waited) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..1000 {
            let wait = wait_allowed(age, waited);
            waited += wait;
            age += wait + MS;
        }
        let worked = age - waited;
        assert!(waited <= worked / 4 + COMPACTION_YIELD_MAX, "waited {waited:?}, worked {worked:?}");
        assert!(waited + 2 * COMPACTION_YIELD_MAX >= worked / 4, "waited {waited:?}, worked {worked:?}");
    }
}

//! The thread that sorts, cuts and hashes the second part of a run (`write_run`) beside the
//! thread cutting the first: parked between checkpoints instead of spawned for each, and
//! steered to another CPU than the one that offers it a part.
//!
//! Why: on this project's machine class (a VM with two virtual CPUs) a thread woken or
//! spawned by the pipeline thread was queued on the pipeline thread's own CPU while the
//! other one idled, so the two parts ran one after the other (apparently the guest's
//! scheduler skips an idle CPU that the host has descheduled). Timed inside 10,000-key checkpoints (`cairn
//! bench`, medians of 100): a helper spawned per checkpoint started 1.36 ms after its spawn,
//! on the same CPU in 67 of 100; a parked one started once the first part was done, on the
//! same CPU, in most checkpoints. Allowed on every CPU but the offering thread's, it runs
//! beside it.
//!
//! The steering is a hint, and a part is never left waiting for it: the thread that offered
//! a part takes it back if the part thread has not begun it by the time the first part is
//! cut (it is busy with another store's part, or its CPU with other work), and cuts it
//! itself, into the same bytes (`format-spec.md` 5). One thread serves the process.

use super::{by_key, feed, Cutter, HashedBatch};
use crate::state::CapturedEntries;
use crossbeam_channel::{Receiver, Sender};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

/// The second part of a run: its entries (sorted by the thread that cuts them; in order
/// already from `write_run`, when that sort is one pass), and where its hashed batches go.
pub(super) struct SecondPart {
    pub(super) entries: CapturedEntries,
    pub(super) target: usize,
    pub(super) out: Sender<FromPart>,
    /// Tests only: panic before sending batch number `n` (0 = the first).
    #[cfg(test)]
    pub(super) panic_at_batch: Option<usize>,
}

/// What the part thread sends back for a part it took, in order: its batches, then its
/// entries (sorted, values released). Without the `Done`, the part was not cut whole.
pub(super) enum FromPart {
    Batch(HashedBatch),
    Done(CapturedEntries),
}

/// A part offered to the part thread: it takes it out of the slot when it gets to it.
type Slot = Arc<Mutex<Option<SecondPart>>>;

/// A handle to a part thread.
pub(super) struct PartThread {
    parts: Sender<Slot>,
    /// Its kernel thread id once it runs (0 before), for steering it.
    tid: Arc<AtomicI32>,
    /// Parts it has taken (counted for tests).
    #[cfg_attr(not(test), allow(dead_code))]
    taken: Arc<AtomicU64>,
    /// Tests' own threads: an offered part is always left to the thread.
    leave_to_thread: bool,
}

/// A part offered to the part thread.
pub(super) struct Offered {
    slot: Slot,
    leave_to_thread: bool,
}

impl Offered {
    /// The part back if the part thread has not taken it; from then on it never will.
    pub(super) fn reclaim(self) -> Option<SecondPart> {
        if self.leave_to_thread {
            return None;
        }
        // The lock is only held to move the part in or out, which cannot panic.
        self.slot.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

impl PartThread {
    /// The process's part thread, started at the first call; `None` if it could not be
    /// started (every part is then cut by the thread that has it).
    pub(super) fn shared() -> Option<&'static PartThread> {
        static SHARED: OnceLock<Option<PartThread>> = OnceLock::new();
        SHARED.get_or_init(|| PartThread::start(false)).as_ref()
    }

    fn start(leave_to_thread: bool) -> Option<PartThread> {
        let (parts, offered) = crossbeam_channel::unbounded::<Slot>();
        let (tid, taken) = (Arc::new(AtomicI32::new(0)), Arc::new(AtomicU64::new(0)));
        let (own_tid, counted) = (tid.clone(), taken.clone());
        let started = std::thread::Builder::new().name("cairn-cut".into()).spawn(move || {
            own_tid.store(steering::this_thread_id(), Ordering::Relaxed);
            // Forgotten as the thread ends (a panic unwinds through this), so that no offer
            // steers a later thread given the same id; after the receiver is dropped (locals
            // drop in reverse order), so that no offer is delivered once it is forgotten.
            let _forget = Forget(own_tid);
            let offered = offered;
            serve(&offered, &counted);
        });
        match started {
            Ok(_) => Some(PartThread { parts, tid, taken, leave_to_thread }),
            Err(e) => {
                tracing::warn!("cannot start the thread that cuts runs' second parts ({e}); cutting them in turn");
                None
            }
        }
    }

    /// Offer `part` to the thread, steering it away from this thread's CPU. A thread gone
    /// (it panicked) never takes it: [`Offered::reclaim`] gives it back.
    pub(super) fn offer(&self, part: SecondPart) -> Offered {
        steering::away_from_this_cpu(self.tid.load(Ordering::Relaxed));
        let slot = Arc::new(Mutex::new(Some(part)));
        let delivered = self.parts.send(slot.clone()).is_ok();
        Offered { slot, leave_to_thread: self.leave_to_thread && delivered }
    }

    /// Parts the thread has taken.
    #[cfg(test)]
    pub(super) fn taken(&self) -> u64 {
        self.taken.load(Ordering::Relaxed)
    }

    /// Wait until the thread has ended (after a panic): from then on no offer reaches it.
    #[cfg(test)]
    pub(super) fn wait_gone(&self) {
        for _ in 0..10_000 {
            if self.tid.load(Ordering::Relaxed) == 0 {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        panic!("the part thread did not end");
    }

    /// A thread of a test's own, which is always left the parts offered to it.
    #[cfg(test)]
    pub(super) fn own() -> Option<PartThread> {
        PartThread::start(true)
    }
}

/// Sets the part thread's id back to 0 when dropped.
struct Forget(Arc<AtomicI32>);

impl Drop for Forget {
    fn drop(&mut self) {
        self.0.store(0, Ordering::Relaxed);
    }
}

/// The thread's loop: cut each part still in its slot, until every handle is gone.
fn serve(offered: &Receiver<Slot>, taken: &AtomicU64) {
    for slot in offered {
        let part = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(part) = part {
            taken.fetch_add(1, Ordering::Relaxed);
            cut(part);
        }
    }
}

/// Sort, cut and hash `part`, from an empty chunk, sending each hashed batch as it fills and
/// the entries at the end. A send fails only if the receiving thread has unwound: then
/// nothing waits for the rest.
fn cut(part: SecondPart) {
    #[cfg(test)]
    let panic_at = part.panic_at_batch;
    let SecondPart { mut entries, target, out, .. } = part;
    let mut sent = 0usize;
    let mut send = |batch: HashedBatch| {
        #[cfg(test)]
        assert!(panic_at != Some(sent), "a test's part thread panics at batch {sent}");
        sent += 1;
        let _ = out.send(FromPart::Batch(batch));
    };
    entries.sort_unstable_by(by_key);
    let mut cutter = Cutter::new(target);
    feed(&mut entries, |key, value| {
        if cutter.push_entry(key, value) {
            send(cutter.take_hashed(1));
        }
    });
    cutter.close();
    send(cutter.take_hashed(1));
    let _ = out.send(FromPart::Done(entries));
}

/// Which CPUs the part thread may run on (Linux; elsewhere it is left to the scheduler).
#[cfg(target_os = "linux")]
mod steering {
    /// The calling thread's kernel id.
    pub(super) fn this_thread_id() -> i32 {
        // SAFETY: a plain system call without arguments or preconditions.
        unsafe { libc::gettid() }
    }

    /// Allow thread `tid` (0: not yet known, nothing done) on every CPU the calling thread
    /// may use but the one it runs on now; on all of them if that leaves none. Best effort:
    /// a call that fails leaves the thread's CPUs as they were, which only costs parallelism.
    pub(super) fn away_from_this_cpu(tid: i32) {
        if tid <= 0 {
            return;
        }
        const SET_BYTES: usize = std::mem::size_of::<libc::cpu_set_t>();
        // SAFETY: a plain system call without arguments or preconditions.
        let here = unsafe { libc::sched_getcpu() };
        let Ok(here) = usize::try_from(here) else { return };
        if here >= 8 * SET_BYTES {
            return;
        }
        // SAFETY: `cpu_set_t` is a plain array of bits, all zeroes being the empty set.
        let mut allowed: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: the call writes at most `SET_BYTES` bytes into `allowed`, which has them.
        if unsafe { libc::sched_getaffinity(0, SET_BYTES, &mut allowed) } != 0 {
            return;
        }
        let mut others = allowed;
        // SAFETY: `here` is within the set's bits (checked above); `others` is a valid set.
        let others_left = unsafe {
            libc::CPU_CLR(here, &mut others);
            libc::CPU_COUNT(&others)
        };
        let set = if others_left > 0 { &others } else { &allowed };
        // SAFETY: `set` is a valid set of `SET_BYTES` bytes that the call only reads.
        // (`tid` is the part thread's: it is forgotten as that thread ends, see `Forget`.)
        let _ = unsafe { libc::sched_setaffinity(tid, SET_BYTES, set) };
    }
}

#[cfg(not(target_os = "linux"))]
mod steering {
    pub(super) fn this_thread_id() -> i32 {
        0
    }

    pub(super) fn away_from_this_cpu(_tid: i32) {}
}

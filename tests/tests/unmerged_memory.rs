//! A store whose runs were never merged: every manifest lists every run so far, so the
//! manifests together grow with the square of the number of checkpoints. `Store::stats` and
//! the GC's mark (which compaction runs after merging) must each add one manifest's chunks to
//! their live set and drop it, not hold them all (which made `cairn stat` and the demo's last
//! step take 24 GB after 38,000 checkpoints).
//!
//! The heap is counted by a global allocator, so this binary holds one test: nothing else
//! allocates while the figures are taken.

use cairn::storage::SimFs;
use cairn::{CompactStep, Options, Result, Retention};
use cairn_tests::sim_store;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system allocator, counting the bytes live and the most live at once.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let now = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to `System` unchanged; only counters are updated beside it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as for `alloc`.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn stats_and_the_gc_of_a_store_never_compacted_hold_one_manifest_at_a_time() -> Result<()> {
    const CHECKPOINTS: u32 = 800;
    let fs = SimFs::new();
    let store = sim_store(&fs, Options::new())?;
    let t = store.table("t")?;
    let mut written = 0u64; // almost all manifest bytes
    for i in 0..CHECKPOINTS {
        t.put(&i.to_be_bytes(), b"v")?;
        written += store.checkpoint(b"")?.bytes_written;
    }
    let runs = store.stats()?.head_runs;
    assert_eq!(runs, u64::from(CHECKPOINTS), "no run was merged");

    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let stats = store.stats()?;
    let extra = PEAK.load(Ordering::Relaxed).saturating_sub(before);

    assert_eq!(stats.checkpoints, u64::from(CHECKPOINTS));
    assert!(stats.live_bytes > u64::from(CHECKPOINTS) * (4 + 1), "live bytes were worked out: {stats:?}");
    // The manifests hold some 320,000 run references (about 12 MB encoded, more decoded);
    // the largest alone is about 30 KB. Holding one at a time, `stats` needs well under 2 MB.
    assert!(written > 10_000_000, "the manifests together are large: {written} bytes");
    assert!(extra < 2_000_000, "stats held {extra} bytes at once");

    // Compaction keeping every checkpoint: the merge writes a compaction checkpoint of few
    // runs, then the GC's mark reads all 801 manifests. Counted from the end of retention to
    // the end of the mark.
    let (mut start, mut marked) = (0, None);
    let report = store.compact_with_hook(&Retention::keep_all(), |step| {
        match step {
            CompactStep::RetentionApplied => {
                start = LIVE.load(Ordering::Relaxed);
                PEAK.store(start, Ordering::Relaxed);
            }
            CompactStep::Marked => marked = Some(PEAK.load(Ordering::Relaxed)),
            _ => {}
        }
        Ok(())
    })?;
    let after = store.stats()?;
    assert_eq!(after.checkpoints, u64::from(CHECKPOINTS) + 1, "every checkpoint kept, one merged: {report:?}");
    assert!(after.head_runs < runs, "the head's runs were merged: {after:?}");
    let Some(peak) = marked else { panic!("the mark never ran: {report:?}") };
    let extra = peak.saturating_sub(start);
    assert!(extra < 2_000_000, "the GC's mark held {extra} bytes at once");
    Ok(())
}

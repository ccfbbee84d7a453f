//! Regression (found by review): a segment whose chunk table failed to read at open (a passing
//! I/O error) was missing from the chunk index. When the GC later read its table fine, it
//! found the segment home to no chunk: if the segment held only entries chunks it deleted it,
//! although a retained checkpoint needed them; if it held a run index (as here), the whole
//! compaction failed. The GC now indexes every committed segment it can read before deciding.

use cairn::storage::{CrashMode, SimFs};
use cairn::{Options, Result, Retention};
use cairn_tests::{dump_view, sim_store};

#[test]
fn gc_keeps_a_live_segment_that_was_unreadable_at_open() -> Result<()> {
    let opts = || Options::new().max_runs_per_table(1).retention(Retention::keep_all());
    let fs = SimFs::new();
    let first = {
        let store = sim_store(&fs, opts())?;
        let t = store.table("t")?;
        t.put(b"k", b"only in segment 1")?;
        let first = store.checkpoint(b"1")?;
        t.delete(b"k")?;
        store.checkpoint(b"2")?;
        // Merging drops the key and its tombstone: HEAD no longer needs segment 1.
        assert!(store.compact()?.merged_into.is_some());
        first
    };
    let expected = dump_view(&sim_store(&fs, opts())?.at(first.id)?)?;

    // Find the operation of open that first reads segment 1, then fail exactly that one.
    let probe = fs.crash_image(CrashMode::KeepUnsynced);
    drop(sim_store(&probe, opts())?);
    let op =
        probe.first_op_after(0, "segments/0000000000000001.seg").unwrap_or_else(|| panic!("open never read segment 1"));
    let disk = fs.crash_image(CrashMode::KeepUnsynced);
    disk.fail_at(op, false);
    let store = sim_store(&disk, opts())?;
    assert_eq!(store.stats()?.unreadable_segments, 1, "the injected fault hit segment 1");

    let report = store.compact()?;
    assert_eq!(report.segments_deleted, 0, "{report:?}");
    assert_eq!(dump_view(&store.at(first.id)?)?, expected);
    drop(store);
    let store = sim_store(&disk, opts())?;
    assert_eq!(dump_view(&store.at(first.id)?)?, expected);
    assert!(store.verify()?.is_ok());
    Ok(())
}

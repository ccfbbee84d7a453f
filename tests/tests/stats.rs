//! `Store::stats` reads storage (every retained manifest and run index) without holding the
//! store's lock: tables stay usable while it reads, and an object a compaction deletes
//! between its listing and its read no longer counts, rather than failing the call.

use cairn::storage::{Fs, SimFs};
use cairn::{Options, Result, Retention, Stats, Store};
use cairn_tests::sim_store;
use std::sync::mpsc;
use std::time::Duration;

#[test]
fn stats_reads_storage_without_holding_up_the_tables() -> Result<()> {
    let fs = SimFs::new();
    let store = sim_store(&fs, Options::new().retention(Retention::keep_last(10)))?;
    let t = store.table("t")?;
    for round in 0..3u8 {
        t.put(b"a", &[round])?;
        store.checkpoint(&[round])?;
    }
    fs.hold_reads();
    std::thread::scope(|scope| -> Result<()> {
        let stats = scope.spawn(|| store.stats());
        // Stopped reading the oldest manifest, after listing it.
        fs.wait_for_held_read();
        // The tables answer meanwhile. (Were the store's lock held across the read, this
        // would wait forever: the bound only turns that into a failure.)
        let (done, answered) = mpsc::channel();
        let t = &t;
        scope.spawn(move || {
            let used = t.put(b"b", b"2").and_then(|()| t.get(b"a"));
            let _ = done.send(used);
        });
        let used = answered.recv_timeout(Duration::from_secs(60));
        // A compaction deletes the manifest being read before the read goes on.
        let removed = fs.remove_file("manifests/0000000000000001.man");
        assert!(removed.is_ok(), "{removed:?}");
        fs.release_reads();
        assert_eq!(used.ok().transpose()?, Some(Some(vec![2])), "a get and a put while stats reads");
        let stats = stats.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
        assert_eq!(stats.checkpoints, 2, "the deleted manifest no longer counts: {stats:?}");
        assert!(stats.live_bytes > 0, "{stats:?}");
        Ok(())
    })?;
    let stats = store.stats()?;
    assert_eq!((stats.checkpoints, stats.keys, stats.dirty_keys), (2, 2, 1), "{stats:?}");
    Ok(())
}

/// A store of three checkpoints, one segment each (retaining all of them), its segments'
/// names oldest first, and its stats before anything goes.
fn three_checkpoints(fs: &SimFs) -> Result<(Store, Vec<String>, Stats)> {
    let store = sim_store(fs, Options::new().retention(Retention::keep_last(10)))?;
    let t = store.table("t")?;
    for round in 0..3u8 {
        t.put(&[round], &[round])?;
        store.checkpoint(&[round])?;
    }
    let segments = cairn_tests::segment_files(fs);
    assert_eq!(segments.len(), 3, "one segment a checkpoint: {segments:?}");
    let before = store.stats()?;
    assert!(before.live_bytes > 0 && before.segments == 3, "{before:?}");
    Ok((store, segments, before))
}

/// A segment deleted while `stats` reads (by a compaction running meanwhile) takes a retained
/// checkpoint's run index with it: the call still answers, with live bytes unknown (0) and
/// the segment no longer counted, rather than failing.
#[test]
fn stats_answers_when_a_run_index_goes_under_it() -> Result<()> {
    let fs = SimFs::new();
    let (store, segments, _) = three_checkpoints(&fs)?;
    fs.hold_reads();
    std::thread::scope(|scope| -> Result<()> {
        let stats = scope.spawn(|| store.stats());
        fs.wait_for_held_read();
        // The newest segment holds the newest checkpoint's run index.
        let newest = segments.last().cloned().unwrap_or_default();
        let removed = fs.remove_file(&newest);
        assert!(removed.is_ok(), "{removed:?}");
        fs.release_reads();
        let stats = stats.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
        assert_eq!((stats.checkpoints, stats.segments, stats.live_bytes), (3, 2, 0), "{stats:?}");
        Ok(())
    })
}

/// A segment deleted after `stats` listed it and before it asked its size (a GC running
/// meanwhile) is not counted, and the call answers rather than failing.
#[test]
fn stats_answers_when_a_listed_segment_goes_before_its_size() -> Result<()> {
    let fs = SimFs::new();
    let (store, segments, before) = three_checkpoints(&fs)?;
    fs.hold_sizes_in("segments");
    std::thread::scope(|scope| -> Result<()> {
        let stats = scope.spawn(|| store.stats());
        // Stopped sizing the first segment it listed, the oldest.
        fs.wait_for_held_size();
        let oldest = segments.first().cloned().unwrap_or_default();
        let removed = fs.remove_file(&oldest);
        assert!(removed.is_ok(), "{removed:?}");
        fs.release_sizes();
        let stats = stats.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
        // Live bytes were counted from the run indexes before the segments were listed.
        assert_eq!(
            (stats.checkpoints, stats.segments, stats.live_bytes),
            (3, 2, before.live_bytes),
            "{stats:?} after {before:?}"
        );
        assert!(stats.bytes_on_disk < before.bytes_on_disk, "{stats:?} after {before:?}");
        Ok(())
    })
}

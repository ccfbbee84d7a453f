//! Asynchronous checkpoints: what a checkpoint captures, writes racing it, abort, refusal,
//! failures in the background pipeline, and a GC running beside it.
//!
//! Interleavings are forced, not hoped for: the simulated disk holds file writes back
//! (`SimFs::hold_writes`), which stops a background checkpoint at its first write, after it
//! captured, sorted, hashed and deduplicated, while the test acts.

use cairn::storage::SimFs;
use cairn::{CheckpointRecord, CompactStep, Error, Options, Outcome, Result, Retention, Store, WhenBusy};
use cairn_tests::{
    dump, dump_view, incompressible_values, sim_store, tiny_chunks, without_hanging, Dump, PanickingDisk, SegmentWrite,
};
use proptest::prelude::*;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

fn key(i: u64) -> Vec<u8> {
    i.to_be_bytes().to_vec()
}

/// A checkpoint of 1,000,000 dirty keys captures exactly the state at its trigger: writes made
/// while it persists (overwrites, deletes, new keys) are not in it and are all in the next one.
#[test]
fn a_checkpoint_captures_the_state_at_its_trigger_and_racing_writes_go_to_the_next() -> Result<()> {
    const N: u64 = 1_000_000;
    let fs = SimFs::new();
    let store = sim_store(&fs, Options::new())?;
    let t = store.table("t")?;
    for i in 0..N {
        t.put(&key(i), &i.to_le_bytes())?;
    }
    let at_trigger = dump(&store)?;
    fs.hold_writes();
    let handle = store.checkpoint_async(b"first")?;
    // Captured: nothing is dirty any more, though the checkpoint has not written a byte.
    assert_eq!(store.stats()?.dirty_keys, 0);
    fs.wait_for_held_write();
    assert!(!handle.is_finished());
    // Racing writes: every 3rd key overwritten, every 7th deleted, 1,000 new keys.
    for i in (0..N).step_by(3) {
        t.put(&key(i), b"new")?;
    }
    for i in (0..N).step_by(7) {
        t.delete(&key(i))?;
    }
    for i in N..N + 1000 {
        t.put(&key(i), b"added")?;
    }
    assert_eq!(t.get(&key(3))?, Some(b"new".to_vec()), "the tables stay writable while it persists");
    let after_writes = dump(&store)?;
    fs.release_writes();
    let first = handle.wait()?;
    assert_eq!(first.dirty_keys, N);
    assert_eq!(dump_view(&store.at(first.id)?)?, at_trigger, "the first checkpoint holds the state at its trigger");
    let second = store.checkpoint(b"second")?;
    assert_eq!(second.parent, Some(first.id));
    assert_eq!(dump_view(&store.at(second.id)?)?, after_writes, "the racing writes are all in the next one");
    let record = store.stats()?.recent_checkpoints.into_iter().find(|r| r.id == Some(first.id));
    let record = record.ok_or_else(|| Error::NotFound("the first checkpoint's record".into()))?;
    assert_eq!(record.dirty_keys, N);
    assert_eq!(record.outcome, Outcome::Completed);
    cairn_tests::report(
        "async_checkpoint",
        &format!(
            "1M dirty keys: capture pause {:?}, persist {:?} (debug build; see the capture benchmark)",
            record.capture_pause, record.persist
        ),
    );
    Ok(())
}

/// Aborting a queued checkpoint: it writes nothing, its writes go into the next checkpoint,
/// the listener and the stats see every outcome.
#[test]
fn an_aborted_checkpoint_writes_nothing_and_its_writes_go_to_the_next() -> Result<()> {
    let fs = SimFs::new();
    let records: Arc<Mutex<Vec<CheckpointRecord>>> = Arc::default();
    let sink = records.clone();
    let opts = tiny_chunks().max_checkpoints_in_flight(2).listener(move |r| {
        if let Ok(mut v) = sink.lock() {
            v.push(r.clone());
        }
    });
    let store = sim_store(&fs, opts)?;
    let t = store.table("t")?;
    t.put(b"a", b"1")?;
    fs.hold_writes();
    let first = store.checkpoint_async(b"1")?;
    fs.wait_for_held_write();
    t.put(b"b", b"2")?;
    t.delete(b"a")?;
    let second = store.checkpoint_async(b"2")?;
    second.abort();
    fs.release_writes();
    let first = first.wait()?;
    assert!(matches!(second.wait(), Err(Error::Aborted(_))));
    let stats = store.stats()?;
    assert_eq!((stats.checkpoints, stats.segments), (1, 1), "nothing of the aborted one was written");
    assert_eq!((stats.checkpoints_completed, stats.checkpoints_aborted), (1, 1));
    assert_eq!(stats.dirty_keys, 2, "the aborted checkpoint's keys are dirty again");
    let third = store.checkpoint(b"3")?;
    assert_eq!(third.parent, Some(first.id));
    assert_eq!(third.id.0, first.id.0 + 1, "the aborted one took no id");
    assert_eq!(dump_view(&store.at(third.id)?)?, dump(&store)?);
    assert_eq!(store.at(third.id)?.get("t", b"a")?, None, "the aborted delete is a tombstone in the next");
    drop(store);
    let reopened = sim_store(&fs, Options::new())?;
    assert_eq!(reopened.table("t")?.get(b"b")?, Some(b"2".to_vec()));
    let journal = reopened.journal()?;
    assert_eq!(journal.len(), 1, "the aborted checkpoint is in the JOURNAL after a reopen");
    assert!(!journal[0].failed && journal[0].reason.contains("aborted by its handle"), "{journal:?}");
    assert_eq!(journal[0].head_id, first.id.0);
    let outcomes: Vec<Outcome> =
        records.lock().map(|v| v.iter().map(|r| r.outcome.clone()).collect()).unwrap_or_default();
    assert_eq!(outcomes.len(), 3);
    assert_eq!(outcomes.iter().filter(|o| matches!(o, Outcome::Aborted(_))).count(), 1);
    Ok(())
}

/// A record splits the pipeline's time into `encode` and `commit`: a write held in the commit
/// (a small checkpoint's one segment) is all in `commit`; a write held while the checkpoint
/// still encodes (a large one's first full segment) is in `encode`; both fit in `persist`,
/// and a checkpoint that does not commit reports neither.
#[test]
fn a_record_puts_a_held_write_in_the_phase_that_made_it() -> Result<()> {
    // Far above what either phase takes unheld here (about 85 ms to encode the large one in a
    // debug build), so only the held write can pass each bound.
    const HELD: Duration = Duration::from_secs(1);
    let fs = SimFs::new();
    let records: Arc<Mutex<Vec<CheckpointRecord>>> = Arc::default();
    let sink = records.clone();
    let store = sim_store(
        &fs,
        Options::new().max_checkpoints_in_flight(2).listener(move |r| {
            if let Ok(mut v) = sink.lock() {
                v.push(r.clone());
            }
        }),
    )?;
    let t = store.table("t")?;
    let held_checkpoint = |keys: u64| -> Result<CheckpointRecord> {
        for i in 0..keys {
            t.put(&key(i), &[keys as u8; 100])?;
        }
        fs.hold_writes();
        let handle = store.checkpoint_async(b"held")?;
        fs.wait_for_held_write();
        std::thread::sleep(HELD);
        fs.release_writes();
        let id = Some(handle.wait()?.id);
        let record = records.lock().ok().and_then(|v| v.iter().find(|r| r.id == id).cloned());
        record.ok_or_else(|| Error::NotFound("the held checkpoint's record".into()))
    };
    // 1,000 entries: one segment, written by the commit.
    let small = held_checkpoint(1_000)?;
    assert!(small.commit >= HELD, "{small:?}");
    assert!(small.encode + small.commit <= small.persist, "{small:?}");
    // 100,000 entries (11 MB): its first 4 MiB segment is written while it still encodes.
    let large = held_checkpoint(100_000)?;
    assert!(large.encode >= HELD, "{large:?}");
    assert!(large.encode + large.commit <= large.persist, "{large:?}");
    // One that does not commit.
    t.put(b"x", b"y")?;
    fs.hold_writes();
    let handle = store.checkpoint_async(b"aborted")?;
    let queued = store.checkpoint_async(b"queued")?;
    queued.abort();
    fs.wait_for_held_write();
    fs.release_writes();
    handle.wait()?;
    assert!(matches!(queued.wait(), Err(Error::Aborted(_))));
    let aborted = records.lock().ok().and_then(|v| v.last().cloned());
    let aborted = aborted.ok_or_else(|| Error::NotFound("the aborted checkpoint's record".into()))?;
    assert!(matches!(aborted.outcome, Outcome::Aborted(_)), "{aborted:?}");
    assert_eq!((aborted.encode, aborted.commit), (Duration::ZERO, Duration::ZERO));
    Ok(())
}

/// A checkpoint larger than a segment writes each full segment while it still encodes the
/// rest (so it never holds all of them in memory). Aborted after the first such write, it
/// deletes what it wrote: no segment file is left, and the next checkpoint writes it all.
#[test]
fn an_aborted_checkpoint_deletes_the_segments_it_wrote_ahead() -> Result<()> {
    let fs = SimFs::new();
    let store = sim_store(&fs, Options::new())?;
    let t = store.table("t")?;
    for i in 0..100_000u64 {
        t.put(&key(i), &[i as u8; 100])?;
    }
    let segment_files = || fs.files().into_iter().filter(|f| f.starts_with("segments/")).count();
    fs.hold_writes();
    let handle = store.checkpoint_async(b"aborted")?;
    // Held at its first segment write, well before its last chunk is cut (11 MB, 4 MiB
    // segments).
    fs.wait_for_held_write();
    handle.abort();
    fs.release_writes();
    assert!(matches!(handle.wait(), Err(Error::Aborted(_))));
    assert_eq!(segment_files(), 0, "{:?}", fs.files());
    let stats = store.stats()?;
    assert_eq!((stats.checkpoints, stats.segments, stats.dirty_keys), (0, 0, 100_000));
    let info = store.checkpoint(b"whole")?;
    assert!(segment_files() >= 3, "{:?}", fs.files());
    drop((t, store));
    let store = sim_store(&fs, Options::new())?;
    assert_eq!(store.head()?.map(|h| h.id), Some(info.id));
    assert_eq!(store.table("t")?.get(&key(99_999))?, Some(vec![99_999u64 as u8; 100]));
    assert_eq!(store.table("t")?.len()?, 100_000);
    Ok(())
}

/// A write of a segment the checkpoint writes ahead (while it still encodes the rest) fails:
/// the checkpoint fails with that error instead of committing without the segment, the store
/// is poisoned, and a reopen finds the state before it with no segment left behind.
#[test]
fn a_failed_write_ahead_fails_the_checkpoint() -> Result<()> {
    let fs = SimFs::new();
    let store = sim_store(&fs, Options::new())?;
    let t = store.table("t")?;
    t.put(b"before", b"1")?;
    let first = store.checkpoint(b"first")?;
    for i in 0..100_000u64 {
        t.put(&key(i), &[i as u8; 100])?;
    }
    // The checkpoint's first storage operation writes its first full segment (11 MB of
    // entries, 4 MiB segments), long before its commit.
    fs.fail_at(fs.ops() + 1, false);
    let err = store.checkpoint(b"second").map(|_| ()).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(store.checkpoint(b"third").is_err(), "the store is poisoned");
    drop((t, store));
    let store = sim_store(&fs, Options::new())?;
    assert_eq!(store.head()?.map(|h| h.id), Some(first.id));
    assert_eq!(store.table("t")?.len()?, 1);
    assert!(store.verify()?.is_ok());
    let segments: Vec<String> = fs.files().into_iter().filter(|f| f.starts_with("segments/")).collect();
    assert_eq!(segments.len(), 1, "only the first checkpoint's segment: {segments:?}");
    Ok(())
}

/// With `WhenBusy::Refuse` a trigger past the in-flight bound is refused and captures nothing.
#[test]
fn a_trigger_past_the_in_flight_bound_is_refused_and_captures_nothing() -> Result<()> {
    let fs = SimFs::new();
    let store = sim_store(&fs, Options::new().when_busy(WhenBusy::Refuse))?;
    let t = store.table("t")?;
    t.put(b"a", b"1")?;
    fs.hold_writes();
    let first = store.checkpoint_async(b"1")?;
    fs.wait_for_held_write();
    t.put(b"b", b"2")?;
    assert!(matches!(store.checkpoint_async(b"2"), Err(Error::Busy(_))));
    assert_eq!(store.stats()?.dirty_keys, 1);
    assert_eq!(store.stats()?.checkpoints_in_flight, 1);
    fs.release_writes();
    first.wait()?;
    let second = store.checkpoint(b"2")?;
    assert_eq!(second.dirty_keys, 1);
    Ok(())
}

/// An I/O error in the background surfaces on its handle, aborts the checkpoint queued behind
/// it, poisons the store, and the previous checkpoint still restores.
#[test]
fn a_background_io_error_surfaces_on_the_handle_and_the_previous_checkpoint_restores() -> Result<()> {
    let fs = SimFs::new();
    let store = sim_store(&fs, tiny_chunks().max_checkpoints_in_flight(2))?;
    let t = store.table("t")?;
    t.put(b"a", b"1")?;
    store.checkpoint(b"good")?;
    let good = dump(&store)?;
    t.put(b"a", b"2")?;
    fs.hold_writes();
    let first = store.checkpoint_async(b"bad")?;
    fs.wait_for_held_write();
    t.put(b"c", b"3")?;
    let second = store.checkpoint_async(b"behind")?;
    fs.fail_at(fs.ops() + 1, false);
    fs.release_writes();
    assert!(matches!(first.wait(), Err(Error::Io { .. })));
    assert!(matches!(second.wait(), Err(Error::Aborted(_))), "it built on the one that failed");
    assert!(matches!(store.checkpoint_async(b"x"), Err(Error::Poisoned(_))));
    assert_eq!(store.stats()?.checkpoints_failed, 1);
    drop((t, store));
    fs.clear_faults();
    let reopened = sim_store(&fs, Options::new())?;
    assert_eq!(dump(&reopened)?, good);
    let journal = reopened.journal()?;
    let outcomes: Vec<bool> = journal.iter().map(|e| e.failed).collect();
    assert_eq!(outcomes, vec![true, false], "failed, then the one behind it aborted: {journal:?}");
    assert_eq!(reopened.head()?.map(|h| h.metadata), Some(b"good".to_vec()));
    Ok(())
}

/// A store on a disk that panics at a checkpoint's segment write once armed, with one
/// committed checkpoint ("good": `a` = `1`), its table, and that checkpoint's state.
fn committed_on_a_panicking_disk(fs: &SimFs) -> Result<(Arc<PanickingDisk>, Store, cairn::Table, Dump)> {
    let disk = PanickingDisk::new(fs, SegmentWrite::Checkpoint);
    let store = Store::open_storage(disk.clone(), Options::new())?;
    let t = store.table("t")?;
    t.put(b"a", b"1")?;
    store.checkpoint(b"good")?;
    let good = dump(&store)?;
    Ok((disk, store, t, good))
}

/// A panic while a checkpoint persists fails that checkpoint, poisons the store (whose
/// pipeline goes on answering) and hangs nothing: the handle gets the error, later writes and
/// checkpoints are refused, the store closes, and a reopen restores the last committed state.
#[test]
fn a_panic_while_persisting_fails_the_checkpoint_and_poisons_the_store() -> Result<()> {
    let fs = SimFs::new();
    let (disk, store, t, good) = committed_on_a_panicking_disk(&fs)?;
    without_hanging("a checkpoint that panics, then the store", move || {
        disk.arm();
        t.put(b"a", b"2")?;
        let failed = store.checkpoint(b"panics");
        assert!(matches!(&failed, Err(Error::Poisoned(why)) if why.contains("panicked")), "{failed:?}");
        assert!(matches!(t.put(b"b", b"3"), Err(Error::Poisoned(_))));
        assert!(matches!(store.checkpoint(b"after"), Err(Error::Poisoned(_))));
        let stats = store.stats()?;
        assert_eq!((stats.checkpoints_failed, stats.checkpoints_in_flight), (1, 0));
        drop((t, store));
        Ok(())
    });
    let reopened = sim_store(&fs, Options::new())?;
    assert_eq!(dump(&reopened)?, good);
    assert_eq!(reopened.head()?.map(|h| h.metadata), Some(b"good".to_vec()));
    Ok(())
}

/// A panic in the thread that writes a large checkpoint's full segments while the rest is cut
/// reaches the checkpoint the same way: it fails `Poisoned`, the store is poisoned, nothing
/// hangs, and a reopen restores the last committed state.
#[test]
fn a_panic_in_the_segment_writer_thread_fails_the_checkpoint_and_poisons_the_store() -> Result<()> {
    let fs = SimFs::new();
    let (disk, store, t, good) = committed_on_a_panicking_disk(&fs)?;
    let armed = disk.clone();
    without_hanging("a checkpoint whose segment writer panics, then the store", move || {
        // About 11 MB of values that do not compress: three segments, the first two written
        // by the checkpoint's writer thread.
        for (i, value) in (0u32..).zip(incompressible_values(2_200, 5_000)) {
            t.put(&i.to_be_bytes(), &value)?;
        }
        armed.arm();
        let failed = store.checkpoint(b"large");
        assert!(matches!(&failed, Err(Error::Poisoned(why)) if why.contains("panicked")), "{failed:?}");
        assert!(matches!(store.checkpoint(b"after"), Err(Error::Poisoned(_))));
        assert_eq!(store.stats()?.checkpoints_in_flight, 0);
        drop((t, store));
        Ok(())
    });
    assert_eq!(disk.panicked_on().as_deref(), Some("cairn-spill"), "the panic was not in the segment writer");
    let reopened = sim_store(&fs, Options::new())?;
    assert_eq!(dump(&reopened)?, good);
    assert!(reopened.verify()?.is_ok());
    Ok(())
}

/// A GC that found a segment dead must not delete it while a checkpoint that decided to reuse
/// a chunk of it is still persisting: the chunk is reserved from the moment it is reused,
/// whether that moment falls before the GC works out its live set or after.
/// A keep-last-1 compaction of `store` on its own thread, paused after `step` until the
/// returned sender sends (or is dropped).
fn compaction_paused_at(
    store: &Arc<Store>,
    step: CompactStep,
) -> Result<(std::thread::JoinHandle<Result<cairn::CompactionReport>>, mpsc::Sender<()>)> {
    let (at_step, step_seen) = mpsc::channel();
    let (go, wait_go) = mpsc::channel::<()>();
    let gc_store = store.clone();
    let gc = std::thread::spawn(move || {
        gc_store.compact_with_hook(&Retention::keep_last(1), |s| {
            if s == step {
                let _ = at_step.send(());
                let _ = wait_go.recv();
            }
            Ok(())
        })
    });
    step_seen.recv().map_err(|_| Error::NotFound("the compaction's pause".into()))?;
    Ok((gc, go))
}

#[test]
fn a_gc_never_deletes_a_chunk_an_unfinished_checkpoint_reuses() -> Result<()> {
    for pause_at in [CompactStep::RetentionApplied, CompactStep::Marked] {
        let fs = SimFs::new();
        let opts = tiny_chunks().max_runs_per_table(1).segment_live_fraction_min(0.0);
        let store = Arc::new(sim_store(&fs, opts)?);
        let t = store.table("t")?;
        // k=v1 is written once (checkpoint 1), then overwritten; merges drop it, and
        // retention then drops the checkpoints that still name it: its segment is dead.
        for v in [b"v1", b"v2", b"v3"] {
            t.put(b"k", v)?;
            store.checkpoint(b"")?;
            store.compact_with(&Retention::keep_all())?;
        }
        let (gc, go) = compaction_paused_at(&store, pause_at)?;
        // The same single entry again: the same chunk, stored in the doomed segment.
        t.put(b"k", b"v1")?;
        fs.hold_writes();
        let handle = store.checkpoint_async(b"reuse")?;
        fs.wait_for_held_write();
        let _ = go.send(());
        let report = gc.join().map_err(|_| Error::NotFound("the compaction thread".into()))??;
        fs.release_writes();
        let info = handle.wait()?;
        assert!(info.chunks_reused > 0, "{pause_at:?}: the checkpoint reused stored chunks");
        assert!(report.checkpoints_deleted > 0, "{pause_at:?}: retention dropped the old checkpoints");
        assert_eq!(store.at(info.id)?.get("t", b"k")?, Some(b"v1".to_vec()), "{pause_at:?}");
        drop((t, store));
        let reopened = sim_store(&fs, Options::new())?;
        assert_eq!(reopened.table("t")?.get(b"k")?, Some(b"v1".to_vec()), "{pause_at:?}");
        assert!(reopened.verify()?.is_ok(), "{pause_at:?}");
    }
    Ok(())
}

/// A store in which every segment with a dead byte is sparse, and whose segment 1 will be:
/// it holds the chunks of s (kept by every merge) and of k = [1; 200], overwritten by [2; 200]
/// and [3; 200], so dead once retention drops the checkpoints naming it. Values are large
/// enough to make one entry per chunk.
fn store_with_a_sparse_segment(fs: &SimFs) -> Result<(Arc<Store>, cairn::Table)> {
    let opts = tiny_chunks().max_runs_per_table(1).segment_live_fraction_min(1.0);
    let store = Arc::new(sim_store(fs, opts)?);
    let t = store.table("t")?;
    t.put(b"s", &[7u8; 200])?;
    for v in 1u8..=3 {
        t.put(b"k", &[v; 200])?;
        store.checkpoint(b"")?;
        store.compact_with(&Retention::keep_all())?;
    }
    Ok((store, t))
}

/// A GC copies the live chunks of a sparse segment holding no lock, so a checkpoint can
/// deduplicate and commit meanwhile. One that reuses the segment's *dead* chunk (not copied)
/// keeps the segment from the sweep; reopened, everything reads and verifies.
#[test]
fn a_checkpoint_committing_while_a_gc_copies_a_sparse_segment_keeps_what_it_reuses() -> Result<()> {
    let fs = SimFs::new();
    let (store, t) = store_with_a_sparse_segment(&fs)?;
    let (stable, v1) = (vec![7u8; 200], vec![1u8; 200]);
    let (gc, go) = compaction_paused_at(&store, CompactStep::Marked)?;
    fs.hold_writes();
    let _ = go.send(());
    // The rewrite's copy waits at the disk; the store's lock is free.
    fs.wait_for_held_write();
    t.put(b"k", &v1)?;
    let handle = store.checkpoint_async(b"reuse")?;
    // Its dedup ran beside the copy (it reused k=v1's chunk from segment 1); its own run
    // index waits at the disk too.
    let (held, both_held) = mpsc::channel();
    let waiter = fs.clone();
    std::thread::spawn(move || {
        waiter.wait_for_held_writes(2);
        let _ = held.send(());
    });
    both_held
        .recv_timeout(Duration::from_secs(120))
        .map_err(|_| Error::NotFound("a checkpoint writing beside the GC's copy (is the store locked?)".into()))?;
    fs.release_writes();
    let report = gc.join().map_err(|_| Error::NotFound("the compaction thread".into()))??;
    let info = handle.wait()?;
    assert!(report.segments_rewritten > 0, "{report:?}");
    assert!(info.chunks_reused > 0, "the checkpoint reused stored chunks");
    assert_eq!(store.at(info.id)?.get("t", b"k")?, Some(v1.clone()));
    drop((t, store));
    let reopened = sim_store(&fs, Options::new())?;
    let t = reopened.table("t")?;
    assert_eq!((t.get(b"k")?, t.get(b"s")?), (Some(v1), Some(stable)));
    assert!(reopened.verify()?.is_ok());
    // The next GC leaves it all readable too.
    reopened.compact_with(&Retention::keep_last(1))?;
    assert!(reopened.verify()?.is_ok());
    Ok(())
}

/// A checkpoint takes its segment id when it starts writing; a GC rewrite that reserves its
/// own id meanwhile must take another. (Both writing one segment name would lose one of the
/// two segments.)
#[test]
fn a_gc_rewrite_beside_a_checkpoint_writing_its_segment_takes_another_id() -> Result<()> {
    let fs = SimFs::new();
    let (store, t) = store_with_a_sparse_segment(&fs)?;
    let (gc, go) = compaction_paused_at(&store, CompactStep::Marked)?;
    // The checkpoint has its first segment id and waits at the disk to write it.
    t.put(b"n", &[9u8; 200])?;
    fs.hold_writes();
    let handle = store.checkpoint_async(b"beside")?;
    fs.wait_for_held_write();
    // The GC goes on to its rewrite; then the disk lets everything through.
    let _ = go.send(());
    fs.release_writes();
    let report = gc.join().map_err(|_| Error::NotFound("the compaction thread".into()))??;
    let info = handle.wait()?;
    assert!(report.segments_rewritten > 0, "{report:?}");
    assert_eq!(store.at(info.id)?.get("t", b"n")?, Some(vec![9u8; 200]));
    assert!(store.verify()?.is_ok());
    drop((t, store));
    let reopened = sim_store(&fs, Options::new())?;
    let t = reopened.table("t")?;
    assert_eq!(
        (t.get(b"s")?, t.get(b"k")?, t.get(b"n")?),
        (Some(vec![7u8; 200]), Some(vec![3u8; 200]), Some(vec![9u8; 200]))
    );
    assert!(reopened.verify()?.is_ok());
    Ok(())
}

#[derive(Clone, Debug)]
enum Op {
    Put {
        key: u8,
        value: u8,
    },
    Delete {
        key: u8,
    },
    /// Start a checkpoint; with `hold`, the disk holds writes until the next `Release`.
    Trigger {
        hold: bool,
    },
    Abort(usize),
    WaitOldest,
    Release,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..32u8, any::<u8>()).prop_map(|(key, value)| Op::Put { key, value }),
        3 => (0..32u8).prop_map(|key| Op::Delete { key }),
        3 => any::<bool>().prop_map(|hold| Op::Trigger { hold }),
        1 => any::<usize>().prop_map(Op::Abort),
        2 => Just(Op::WaitOldest),
        2 => Just(Op::Release),
    ]
}

struct Pending {
    handle: cairn::CheckpointHandle,
    /// The model's state when it was triggered.
    expected: Dump,
}

/// Writes interleaved with asynchronous checkpoints (up to 3 in flight, some held at their
/// first write, some aborted): every write lands in exactly one checkpoint, i.e. each
/// committed checkpoint holds exactly the state at its trigger, chains to the previous
/// committed one, and a reopen restores the last one committed.
fn run(ops: &[Op]) -> Result<()> {
    let fs = SimFs::new();
    let store = sim_store(&fs, tiny_chunks().max_checkpoints_in_flight(3))?;
    let t = store.table("t")?;
    let mut model = Dump::new();
    model.insert("t".into(), Default::default());
    let mut pending: Vec<Pending> = Vec::new();
    let mut last_committed: Option<(cairn::CheckpointId, Dump)> = None;
    let settle = |p: Pending, last: &mut Option<(cairn::CheckpointId, Dump)>, store: &Store| -> Result<()> {
        match p.handle.wait() {
            Ok(info) => {
                assert_eq!(info.parent, last.as_ref().map(|l| l.0), "chains to the previous committed one");
                assert_eq!(
                    dump_view(&store.at(info.id)?)?,
                    p.expected,
                    "checkpoint {} holds its trigger's state",
                    info.id
                );
                *last = Some((info.id, p.expected));
                Ok(())
            }
            Err(Error::Aborted(_)) => Ok(()),
            Err(e) => Err(e),
        }
    };
    for op in ops {
        match op {
            Op::Put { key: k, value } => {
                t.put(&[*k], &[*value])?;
                model.entry("t".into()).or_default().insert(vec![*k], vec![*value]);
            }
            Op::Delete { key: k } => {
                t.delete(&[*k])?;
                model.entry("t".into()).or_default().remove(&vec![*k]);
            }
            Op::Trigger { hold } => {
                if pending.len() == 3 {
                    // The bound would make this trigger wait for the oldest; settle it first
                    // so a held write cannot block the test.
                    fs.release_writes();
                    settle(pending.remove(0), &mut last_committed, &store)?;
                }
                if *hold {
                    fs.hold_writes();
                }
                let handle = store.checkpoint_async(b"")?;
                pending.push(Pending { handle, expected: model.clone() });
            }
            Op::Abort(i) => {
                if !pending.is_empty() {
                    pending[i % pending.len()].handle.abort();
                }
            }
            Op::WaitOldest => {
                if !pending.is_empty() {
                    fs.release_writes();
                    settle(pending.remove(0), &mut last_committed, &store)?;
                }
            }
            Op::Release => fs.release_writes(),
        }
    }
    fs.release_writes();
    for p in pending.drain(..) {
        settle(p, &mut last_committed, &store)?;
    }
    assert_eq!(dump(&store)?, model, "the working state");
    let last = store.checkpoint(b"")?;
    assert_eq!(dump_view(&store.at(last.id)?)?, model, "a final checkpoint holds every write");
    drop((t, store));
    let reopened = sim_store(&fs, Options::new())?;
    assert_eq!(dump(&reopened)?, model);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
    #[test]
    fn writes_racing_async_checkpoints_land_in_exactly_one(ops in proptest::collection::vec(op(), 1..60)) {
        run(&ops).map_err(|e| TestCaseError::fail(e.to_string()))?;
    }
}

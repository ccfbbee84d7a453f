//! Background compaction: after checkpoints commit, the store's compaction thread merges runs,
//! applies retention and collects garbage while checkpoints and writes go on; every retained
//! checkpoint reads as committed and the store verifies.

use cairn::storage::{CrashMode, SimFs};
use cairn::{CheckpointHandle, CompactStep, Error, Options, Result, Retention, COMPACTION_YIELD_MAX};
use cairn_tests::{dump, dump_view, sim_store, tiny_chunks, without_hanging, Dump, PanickingDisk, SegmentWrite};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[test]
fn background_compaction_bounds_runs_and_keeps_every_retained_checkpoint() -> Result<()> {
    let fs = SimFs::new();
    let opts = tiny_chunks()
        .max_runs_per_table(3)
        .retention(Retention::keep_last(3))
        .background_compaction(true)
        .compaction_bytes_per_sec(Some(64 << 20))
        .max_checkpoints_in_flight(2);
    let store = sim_store(&fs, opts)?;
    let t = store.table("t")?;
    let mut states: BTreeMap<cairn::CheckpointId, Dump> = BTreeMap::new();
    let mut handles = Vec::new();
    for round in 0u32..40 {
        for k in 0u32..20 {
            let key = (round * 7 + k * 13) % 97;
            t.put(&key.to_be_bytes(), &[round as u8; 40])?;
        }
        if round % 5 == 0 {
            t.delete(&(round % 97).to_be_bytes())?;
        }
        handles.push((store.checkpoint_async(b"")?, dump(&store)?));
        if handles.len() == 2 {
            let (h, state) = handles.remove(0);
            states.insert(h.wait()?.id, state);
        }
    }
    for (h, state) in handles {
        states.insert(h.wait()?.id, state);
    }
    store.quiesce()?;
    let stats = store.stats()?;
    assert_eq!(stats.last_auto_compact_error, None);
    assert!(stats.runs_per_table.values().all(|&r| r <= 3), "{:?}", stats.runs_per_table);
    let retained = store.checkpoints()?;
    assert!(retained.len() < 20, "retention ran: {} checkpoints left", retained.len());
    for c in retained.iter().filter(|c| c.kind == cairn::ManifestKind::Checkpoint) {
        let expected = states.get(&c.id).ok_or_else(|| Error::NotFound(format!("state of {}", c.id)))?;
        assert_eq!(&dump_view(&store.at(c.id)?)?, expected, "checkpoint {}", c.id);
    }
    assert!(store.verify()?.is_ok());
    let last = dump(&store)?;
    drop((t, store));
    let reopened = sim_store(&fs, Options::new())?;
    assert_eq!(dump(&reopened)?, last);
    Ok(())
}

/// A panic in a background compaction (its disk panics writing a merged segment) fails that
/// compaction and poisons the store, as a checkpoint's panic does; nothing waits for it for
/// ever (`quiesce` waited for a compaction counted as running), and a reopen restores the
/// last committed checkpoint.
#[test]
fn a_panic_in_a_background_compaction_poisons_the_store_and_hangs_nothing() -> Result<()> {
    let fs = SimFs::new();
    let disk = PanickingDisk::new(&fs, SegmentWrite::Compaction);
    let opts = tiny_chunks().max_runs_per_table(3).retention(Retention::keep_last(3)).background_compaction(true);
    let store = cairn::Store::open_storage(disk.clone(), opts)?;
    let last_committed = std::sync::Arc::new(std::sync::Mutex::new(None::<Dump>));
    let seen = last_committed.clone();
    without_hanging("checkpoints with a background compaction that panics", move || {
        let t = store.table("t")?;
        disk.arm();
        for round in 0u32..40 {
            for k in 0u32..20 {
                t.put(&((round * 7 + k * 13) % 97).to_be_bytes(), &[round as u8; 40])?;
            }
            store.checkpoint(b"")?;
            *seen.lock().map_err(|_| Error::Closed)? = Some(dump(&store)?);
            // Waits for the compaction the checkpoint asked for.
            store.quiesce()?;
            if store.stats()?.last_auto_compact_error.is_some() {
                break;
            }
        }
        let why = store.stats()?.last_auto_compact_error;
        assert!(why.as_deref().is_some_and(|e| e.contains("panicked")), "no compaction panicked: {why:?}");
        let refused = t.put(b"k", b"v");
        assert!(
            matches!(&refused, Err(Error::Poisoned(why)) if why.starts_with("a background compaction panicked")),
            "{refused:?}"
        );
        assert!(matches!(store.checkpoint(b""), Err(Error::Poisoned(_))));
        drop((t, store));
        Ok(())
    });
    let expected = last_committed.lock().map_err(|_| Error::Closed)?.take();
    let reopened = sim_store(&fs, Options::new())?;
    assert_eq!(Some(dump(&reopened)?), expected);
    assert!(reopened.verify()?.is_ok());
    Ok(())
}

#[test]
fn background_and_caller_compaction_exclude_each_other() {
    let fs = SimFs::new();
    let both = Options::new().auto_compact(true).background_compaction(true);
    assert!(matches!(sim_store(&fs, both), Err(Error::InvalidArgument(_))));
    assert!(matches!(sim_store(&fs, Options::new().compaction_bytes_per_sec(Some(0))), Err(Error::InvalidArgument(_))));
}

/// A merge writes its segments holding no lock; a checkpoint that commits meanwhile is kept:
/// the merge rebases onto it (its runs replace the ones it merged, the checkpoint's new run
/// stays) and commits as a compaction of the checkpoint.
#[test]
fn a_merge_rebases_onto_a_checkpoint_committed_while_it_wrote() -> Result<()> {
    let fs = SimFs::new();
    let store = std::sync::Arc::new(sim_store(&fs, tiny_chunks().max_runs_per_table(2))?);
    let t = store.table("t")?;
    for round in 0u8..4 {
        for k in 0u8..30 {
            t.put(&[k, round], &[round; 30])?;
        }
        store.checkpoint(b"")?;
    }
    fs.hold_writes();
    let compacting = store.clone();
    let merge = std::thread::spawn(move || compacting.compact_with(&Retention::keep_all()));
    fs.wait_for_held_write(); // the merge, at its first segment write, holding no lock
    t.put(b"new", b"value")?;
    let handle = store.checkpoint_async(b"during")?;
    fs.wait_for_held_writes(2); // the checkpoint too, holding the commit lock
    fs.release_writes();
    let during = handle.wait()?;
    let report = merge.join().map_err(|_| Error::Closed)??;
    let merged_into = report.merged_into.ok_or_else(|| Error::NotFound("a merge".into()))?;
    let head = store.head()?.ok_or_else(|| Error::NotFound("head".into()))?;
    assert_eq!(head.id, merged_into);
    assert_eq!(head.parent, Some(during.id), "the merge committed as a compaction of the checkpoint");
    assert_eq!(head.metadata, b"during");
    assert_eq!(dump_view(&store.at(head.id)?)?, dump_view(&store.at(during.id)?)?);
    assert_eq!(dump_view(&store.at(head.id)?)?, dump(&store)?);
    // The merged runs (at most 2) plus the checkpoint's own run.
    assert!(store.stats()?.runs_per_table.values().all(|&r| r <= 3), "{:?}", store.stats()?.runs_per_table);
    assert!(store.verify()?.is_ok());
    let state = dump(&store)?;
    drop((t, store));
    assert_eq!(dump(&sim_store(&fs, Options::new())?)?, state);
    Ok(())
}

/// A rollback while a merge writes its segments voids the merge: it commits nothing, its
/// segments are deleted, and the store holds exactly the checkpoint rolled back to.
#[test]
fn a_rollback_while_a_merge_writes_voids_the_merge() -> Result<()> {
    let fs = SimFs::new();
    let store = std::sync::Arc::new(sim_store(&fs, tiny_chunks().max_runs_per_table(2))?);
    let t = store.table("t")?;
    let mut first = None;
    for round in 0u8..4 {
        for k in 0u8..30 {
            t.put(&[k, round], &[round; 30])?;
        }
        let info = store.checkpoint(b"")?;
        first.get_or_insert((info.id, dump(&store)?));
    }
    let (first, first_state) = first.ok_or(Error::Closed)?;
    let segment_files = || fs.files().iter().filter(|f| f.starts_with("segments/")).count();
    let segments_before = segment_files();
    fs.hold_writes();
    let compacting = store.clone();
    let merge = std::thread::spawn(move || compacting.compact_with(&Retention::keep_all()));
    fs.wait_for_held_write(); // the merge, at its first segment write, holding no lock
    let rolling = store.clone();
    let rollback = std::thread::spawn(move || rolling.rollback(first));
    fs.wait_for_held_writes(2); // the rollback at its HEAD write, holding the commit lock
    fs.release_writes();
    rollback.join().map_err(|_| Error::Closed)??;
    let report = merge.join().map_err(|_| Error::Closed)??;
    assert_eq!(report.merged_into, None, "the merge was voided");
    assert_eq!(store.head()?.map(|h| h.id), Some(first));
    assert_eq!(dump(&store)?, first_state);
    assert_eq!(segment_files(), segments_before, "the void merge's segments are gone");
    assert!(store.verify()?.is_ok());
    drop((t, store));
    assert_eq!(dump(&sim_store(&fs, Options::new())?)?, first_state);
    Ok(())
}

/// Background compaction racing asynchronous checkpoints, with the disk gone at one storage
/// operation: every crash image reopens, verifies, and reads every checkpoint it lists as it
/// was triggered (a compaction checkpoint as the checkpoint it compacts: it carries the same
/// metadata), and loses no checkpoint whose commit was reported. The threads' interleaving
/// differs from run to run, so each fault lands wherever the race put that operation; the
/// assertions hold for every interleaving.
#[test]
fn crashes_while_background_compaction_races_checkpoints_lose_nothing() -> Result<()> {
    let opts = || {
        tiny_chunks()
            .max_runs_per_table(3)
            .retention(Retention::keep_last(3))
            .segment_live_fraction_min(0.9)
            .background_compaction(true)
            .max_checkpoints_in_flight(2)
    };
    const ROUNDS: u32 = 24;
    // The state at each round's trigger, and the last round whose commit was reported.
    let workload = |fs: &SimFs| -> (BTreeMap<u32, Dump>, Option<u32>) {
        let mut states = BTreeMap::new();
        let mut reported = None;
        let Ok(store) = sim_store(fs, opts()) else { return (states, reported) };
        let mut pending = Vec::new();
        for round in 0..ROUNDS {
            let Ok(t) = store.table("t") else { break };
            let wrote = (0u32..12).try_for_each(|k| {
                let key = (round * 5 + k * 11) % 61;
                t.put(&key.to_be_bytes(), &[round as u8; 30])
            });
            if wrote.and_then(|()| t.delete(&(round % 61).to_be_bytes())).is_err() {
                break;
            }
            let Ok(state) = dump(&store) else { break };
            states.insert(round, state);
            let Ok(handle) = store.checkpoint_async(&round.to_le_bytes()) else { break };
            pending.push((round, handle));
            if pending.len() == 2 {
                let (r, h) = pending.remove(0);
                if h.wait().is_err() {
                    break;
                }
                reported = Some(r);
            }
        }
        for (r, h) in pending {
            if h.wait().is_ok() {
                reported = Some(r);
            }
        }
        let _ = store.quiesce();
        (states, reported)
    };

    let clean = SimFs::new();
    let (_, reported) = workload(&clean);
    assert_eq!(reported, Some(ROUNDS - 1), "the clean run commits every round");
    let total = clean.ops();
    let mut images = 0;
    // About 60 fault points per run; every operation with CAIRN_STRESS=1.
    let step = if std::env::var_os("CAIRN_STRESS").is_some() { 1 } else { (total / 60).max(1) };
    for k in (1..=total).step_by(step as usize) {
        let fs = SimFs::new();
        fs.fail_at(k, true);
        let (states, reported) = workload(&fs);
        for mode in [CrashMode::DropUnsynced, CrashMode::KeepUnsynced] {
            let what = format!("disk gone at operation {k} of about {total}, {mode:?}");
            let image = fs.crash_image(mode);
            let store = sim_store(&image, Options::new())?;
            assert!(store.verify()?.is_ok(), "{what}");
            let listed = store.checkpoints()?;
            for c in &listed {
                let round = u32::from_le_bytes(c.metadata.as_slice().try_into().unwrap_or_else(|_| panic!("{what}")));
                let expected = states.get(&round).unwrap_or_else(|| panic!("{what}: unknown round {round}"));
                assert_eq!(&dump_view(&store.at(c.id)?)?, expected, "{what}: checkpoint {} (round {round})", c.id);
            }
            let head = store.head()?;
            let head_round = head.map(|h| u32::from_le_bytes(h.metadata.as_slice().try_into().unwrap_or([0; 4])));
            if let Some(h) = head_round {
                assert_eq!(states.get(&h), Some(&dump(&store)?), "{what}: the working state is HEAD's");
            }
            if let Some(r) = reported {
                assert!(head_round.is_some_and(|h| h >= r), "{what}: round {r} was reported, HEAD is {head_round:?}");
            }
            images += 1;
        }
    }
    assert!(images >= 60, "{images} crash images");
    Ok(())
}

/// Compaction gives way to checkpoints on the disk: with a checkpoint in flight (held at its
/// first write), the GC's first segment delete waits [`COMPACTION_YIELD_MAX`], then, the
/// checkpoint still being held, goes ahead: the wait is bounded. Everything reads back.
#[test]
fn compaction_gives_way_to_a_checkpoint_in_flight_for_a_bounded_time() -> Result<()> {
    let fs = SimFs::new();
    let store = sim_store(&fs, tiny_chunks().max_runs_per_table(2))?;
    let t = store.table("t")?;
    // Every checkpoint rewrites every key; a merge folds the first six rounds' runs into one,
    // so their segments die once retention drops the checkpoints before it.
    for round in 0u8..9 {
        for k in 0u32..50 {
            t.put(&k.to_be_bytes(), &[round; 40])?;
        }
        store.checkpoint(b"")?;
        if round == 5 {
            store.compact_with(&Retention::keep_all())?;
        }
    }
    let mut held: Option<(CheckpointHandle, Instant)> = None;
    let mut first_delete: Option<(Duration, u64)> = None;
    let compacted = store.compact_with_hook(&Retention::keep_last(1), |step| {
        match step {
            // The GC's deletes come next.
            CompactStep::Rewritten => {
                t.put(b"during", b"the gc")?;
                fs.hold_writes();
                let handle = store.checkpoint_async(b"held")?;
                fs.wait_for_held_write();
                held = Some((handle, Instant::now()));
            }
            CompactStep::SegmentDeleted if first_delete.is_none() => {
                let waited = held.as_ref().map(|(_, since)| since.elapsed()).unwrap_or_default();
                first_delete = Some((waited, store.stats()?.checkpoints_in_flight));
                fs.release_writes();
            }
            _ => {}
        }
        Ok(())
    });
    fs.release_writes();
    let report = compacted?;
    let (handle, _) = held.ok_or_else(|| Error::NotFound("the held checkpoint".into()))?;
    let info = handle.wait()?;
    let (waited, in_flight) = first_delete.ok_or_else(|| Error::NotFound(format!("a segment delete: {report:?}")))?;
    assert!(waited >= COMPACTION_YIELD_MAX, "the first delete came {waited:?} after the checkpoint started");
    assert_eq!(in_flight, 1, "the checkpoint was still held when the wait ended");
    assert!(report.segments_deleted > 0, "{report:?}");
    assert_eq!(dump_view(&store.at(info.id)?)?, dump(&store)?);
    assert!(store.verify()?.is_ok());
    Ok(())
}

/// A store of table `t` with six checkpoints each rewriting 50 keys: past its bound of two
/// runs, so a compaction merges.
fn six_checkpoints(fs: &SimFs) -> Result<cairn::Store> {
    let store = sim_store(fs, tiny_chunks().max_runs_per_table(2))?;
    let t = store.table("t")?;
    for round in 0u8..6 {
        for k in 0u32..50 {
            t.put(&k.to_be_bytes(), &[round; 40])?;
        }
        store.checkpoint(b"")?;
    }
    Ok(store)
}

/// A checkpoint held in flight at its first write; returns its handle and when it got there.
fn hold_a_checkpoint(fs: &SimFs, store: &cairn::Store) -> Result<(CheckpointHandle, Instant)> {
    store.table("t")?.put(b"during", b"the compaction")?;
    fs.hold_writes();
    let handle = store.checkpoint_async(b"held")?;
    fs.wait_for_held_write();
    Ok((handle, Instant::now()))
}

/// Compaction's reads give way to checkpoints too (a merge reads back segments a checkpoint
/// wrote past the page cache, and those reads slowed its fsyncs): with a checkpoint in flight
/// (held at its first write) when the GC's mark begins, the mark's first read waits
/// [`COMPACTION_YIELD_MAX`], then, the checkpoint still being held, goes ahead: the wait is
/// bounded. Everything reads back.
#[test]
fn the_gc_reads_give_way_to_a_checkpoint_in_flight_for_a_bounded_time() {
    without_hanging("the gc's reads give way", || {
        let fs = SimFs::new();
        let store = six_checkpoints(&fs)?;
        let mut held: Option<(CheckpointHandle, Instant)> = None;
        let (report, first_read) = std::thread::scope(|scope| {
            let fs = &fs;
            let mut watcher = None;
            let compacted = store.compact_with_hook(&Retention::keep_all(), |step| {
                // The GC's mark comes next, reading every segment's chunk table.
                if step == CompactStep::RetentionApplied {
                    let (handle, since) = hold_a_checkpoint(fs, &store)?;
                    held = Some((handle, since));
                    fs.hold_reads();
                    watcher = Some(scope.spawn(move || {
                        fs.wait_for_held_read();
                        let waited = since.elapsed();
                        fs.release_writes();
                        fs.release_reads();
                        waited
                    }));
                }
                Ok(())
            });
            // Whatever happened, nothing stays held. (Had the mark never read, the watcher
            // would still wait and `without_hanging` would report it.)
            fs.release_writes();
            fs.release_reads();
            (compacted, watcher.map(|w| w.join()))
        });
        let report = report?;
        let (handle, _) = held.ok_or_else(|| Error::NotFound(format!("the retention step: {report:?}")))?;
        let info = handle.wait()?;
        let waited = match first_read {
            Some(Ok(waited)) => waited,
            other => return Err(Error::NotFound(format!("the mark's first read: {other:?}"))),
        };
        assert!(waited >= COMPACTION_YIELD_MAX, "the mark's first read came {waited:?} after the checkpoint started");
        assert_eq!(dump_view(&store.at(info.id)?)?, dump(&store)?);
        assert!(store.verify()?.is_ok());
        Ok(())
    });
}

/// A merge's reads give way to a checkpoint in flight the same way. The merge is stopped at
/// its first read (a checkpoint holds the commit lock from its start, so it must begin once
/// the merge has planned under that lock); a checkpoint then starts and is held at its first
/// write; the merge's next read waits [`COMPACTION_YIELD_MAX`] and then goes ahead. The
/// merge commits and everything reads back.
#[test]
fn a_merge_reads_give_way_to_a_checkpoint_in_flight_for_a_bounded_time() {
    without_hanging("a merge's reads give way", || {
        let fs = SimFs::new();
        let store = six_checkpoints(&fs)?;
        fs.hold_reads();
        let (report, held) = std::thread::scope(|scope| {
            let compaction = scope.spawn(|| store.compact_with(&Retention::keep_all()));
            fs.wait_for_reads_held(1);
            let held = hold_a_checkpoint(&fs, &store).map(|(handle, since)| {
                fs.let_one_read_go();
                fs.wait_for_reads_held(2);
                (handle, since.elapsed())
            });
            fs.release_writes();
            fs.release_reads();
            (compaction.join(), held)
        });
        let report = report.map_err(|_| Error::NotFound("the compaction's result: its thread panicked".into()))??;
        let (handle, waited) = held?;
        let info = handle.wait()?;
        assert!(waited >= COMPACTION_YIELD_MAX, "the merge's next read came {waited:?} after the checkpoint started");
        assert!(report.runs_merged > 0, "{report:?}");
        assert_eq!(dump_view(&store.at(info.id)?)?, dump(&store)?);
        assert!(store.verify()?.is_ok());
        Ok(())
    });
}

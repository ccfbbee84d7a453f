//! Crash safety and concurrency of compaction and GC on the simulated disk:
//! - a crash after every single storage operation of a compaction (merge, slice merge,
//!   retention) and of a GC (segment deletes and rewrites), each followed by reopen: every
//!   retained checkpoint still reads exactly as before, and the next compaction cleans the
//!   leftovers;
//! - the same around a GC that copies several segments' worth (before each of its changes
//!   to the disk in the long tier, `CAIRN_STRESS=1`; before each of the copy's otherwise);
//! - a checkpoint interleaved at every step boundary of a GC, including one that reuses chunks
//!   of segments the GC found dead and one that reuses chunks the GC stores as deltas, never
//!   references a deleted chunk.

use cairn::storage::{CrashMode, SimFs};
use cairn::{CheckpointId, CheckpointInfo, CompactStep, ManifestKind, Options, Result, Retention, Store};
use cairn_tests::{dump, dump_view, sim_store, Dump};
use std::collections::BTreeMap;

fn opts() -> Options {
    // A live fraction of 0.99 makes the GC rewrite every segment that is not wholly live.
    Options::new()
        .chunk_target_bytes(256)
        .max_runs_per_table(4)
        .retention(Retention::keep_last(3))
        .segment_live_fraction_min(0.99)
}

const MODES: [CrashMode; 3] = [CrashMode::DropUnsynced, CrashMode::KeepUnsynced, CrashMode::TornLastWrite { keep: 9 }];

/// The retention the compaction under test uses at each stage.
fn retention(stage: u32) -> Retention {
    if stage == 0 {
        Retention::keep_last(3)
    } else {
        Retention::keep_last(0)
    }
}

fn round(store: &Store, c: u32) -> Result<CheckpointId> {
    let t = store.table("t")?;
    for i in 0..40u32 {
        t.put(&((c * 13 + i * 7) % 100).to_be_bytes(), format!("v{c}-{i}").as_bytes())?;
    }
    t.delete(&((c * 31) % 100).to_be_bytes())?;
    Ok(store.checkpoint(&c.to_le_bytes())?.id)
}

/// Stage 0: 12 checkpoints, ready for a compaction that merges and applies retention.
/// Stage 1: that compaction done and 4 more checkpoints (the first also writing table "v"):
/// checkpoint 1's segment is dead to the next GC once retention drops the checkpoints that
/// reference it.
/// Stage 2: stage 1, a merge of those 4 rounds' runs of "t", and 3 more checkpoints: the
/// first round's segment is now partly live (its "v" run is, its "t" run is not), ready for a
/// compaction with [`retention`] that merges, deletes and rewrites segments.
/// Returns every checkpoint's state.
/// Stage 3: a large base checkpoint (keys between those the rounds write), then stage 1 on
/// top of it: the base outweighs the rest, so each merge is a slice merge, and the chunks a
/// merge replaced are stored as deltas by the GC.
fn setup(fs: &SimFs, stage: u32) -> Result<(Store, BTreeMap<CheckpointId, Dump>)> {
    let store = sim_store(fs, opts())?;
    let mut states = BTreeMap::new();
    if stage == 3 {
        let t = store.table("t")?;
        for i in 0..2000u32 {
            let mut key = (i / 20).to_be_bytes().to_vec();
            key.push(i as u8);
            t.put(&key, format!("base-{i}").as_bytes())?;
        }
        let id = store.checkpoint(b"base")?.id;
        states.insert(id, dump(&store)?);
    }
    for c in 0..12 {
        let id = round(&store, c)?;
        states.insert(id, dump(&store)?);
    }
    if stage >= 1 {
        let merged = store.compact()?.merged_into.unwrap_or_else(|| panic!("stage 1 needs a merge"));
        states.insert(merged, dump(&store)?);
        store.table("v")?.put(b"v", &[7; 300])?;
        for c in 12..16 {
            let id = round(&store, c)?;
            states.insert(id, dump(&store)?);
        }
        if stage == 2 {
            // Merge those rounds' runs of "t" away (HEAD and the two checkpoints before it,
            // which retention always keeps, must not reference them), then 3 more checkpoints.
            let merged = store.compact()?.merged_into.unwrap_or_else(|| panic!("stage 2 needs a second merge"));
            states.insert(merged, dump(&store)?);
            for c in 16..19 {
                let id = round(&store, c)?;
                states.insert(id, dump(&store)?);
            }
        }
    }
    Ok((store, states))
}

/// Every checkpoint the store lists reads as it was committed; a compaction checkpoint holds
/// the content of HEAD before the compaction (`head_state`).
fn check_all(
    store: &Store,
    states: &mut BTreeMap<CheckpointId, Dump>,
    head_state: &Dump,
    what: &str,
) -> Result<Vec<CheckpointId>> {
    for c in store.checkpoints()? {
        if c.kind == ManifestKind::Compaction {
            states.entry(c.id).or_insert_with(|| head_state.clone());
        }
    }
    let ids: Vec<CheckpointId> = store.checkpoints()?.iter().map(|c| c.id).collect();
    for id in &ids {
        let expected = states.get(id).unwrap_or_else(|| panic!("{what}: unknown checkpoint {id}"));
        assert_eq!(&dump_view(&store.at(*id)?)?, expected, "{what}: checkpoint {id}");
    }
    Ok(ids)
}

#[test]
fn crash_after_every_operation_of_compaction_and_gc() -> Result<()> {
    let mut images = 0;
    for stage in [0, 2, 3] {
        // Dry run: what a clean compaction keeps and how many operations it takes.
        let fs = SimFs::new();
        let (store, mut states) = setup(&fs, stage)?;
        let head_state = dump(&store)?;
        let start = fs.ops();
        let report = store.compact_with(&retention(stage))?;
        let ops = fs.ops() - start;
        let kept = check_all(&store, &mut states, &head_state, "clean run")?;
        let clean_bytes = store.stats()?.bytes_on_disk;
        if stage == 2 {
            assert!(
                report.segments_deleted > 0 && report.segments_rewritten > 0,
                "stage 2 exercises the GC: {report:?}"
            );
        }
        if stage == 3 {
            // The slice's old chunks stay live for the checkpoints before the merge, and
            // the rewrite stores them as deltas against the new ones.
            assert!(report.slices_merged > 0, "stage 3 merges a slice: {report:?}");
            assert!(report.chunks_stored_as_delta > 0, "stage 3 stores chunks as deltas: {report:?}");
        }
        drop(store);

        for k in 1..=ops + 1 {
            let fs = SimFs::new();
            let (store, states) = setup(&fs, stage)?;
            let before: Vec<CheckpointId> = store.checkpoints()?.iter().map(|c| c.id).collect();
            fs.fail_at(fs.ops() + k, true);
            let _ = store.compact_with(&retention(stage));
            drop(store);
            for mode in MODES {
                let what = format!("stage {stage}, crash before op {k} of {ops}, {mode:?}");
                let image = fs.crash_image(mode);
                let store = sim_store(&image, opts()).unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
                assert_eq!(dump(&store)?, head_state, "{what}: the working state");
                let mut states = states.clone();
                let listed = check_all(&store, &mut states, &head_state, &what)?;
                // Every checkpoint the clean run kept that existed before the compaction is
                // still there (a compaction checkpoint may not have committed before the crash).
                for id in kept.iter().filter(|id| before.contains(id)) {
                    assert!(listed.contains(id), "{what}: lost retained checkpoint {id}");
                }
                // The next compaction finishes the job and cleans the leftovers.
                store.compact_with(&retention(stage))?;
                check_all(&store, &mut states, &head_state, &what)?;
                assert!(store.verify()?.is_ok(), "{what}: verify");
                // Then compaction reaches a fixpoint. A second one may still store chunks as
                // deltas: a chunk that was the base of a delta deleted by the first becomes a
                // candidate only then (a base outlives its delta by one GC).
                let mut fixpoint = store.compact_with(&retention(stage))?;
                if fixpoint.chunks_stored_as_delta > 0 {
                    fixpoint = store.compact_with(&retention(stage))?;
                }
                assert_eq!((fixpoint.checkpoints_deleted, fixpoint.segments_deleted), (0, 0), "{what}: {fixpoint:?}");
                check_all(&store, &mut states, &head_state, &what)?;
                let bytes = store.stats()?.bytes_on_disk;
                assert!(
                    bytes <= clean_bytes + 4096,
                    "{what}: {bytes} bytes on disk after cleaning, {clean_bytes} clean"
                );
                images += 1;
            }
        }
    }
    assert!(images > 100, "{images} crash images");
    Ok(())
}

/// Compact `store` and, after step number `at` of that compaction, put `entries` into table
/// "u" and checkpoint. Returns the step, the checkpoint and the working state it holds.
fn checkpoint_during_compaction(
    store: &Store,
    retention: &Retention,
    at: usize,
    entries: &BTreeMap<Vec<u8>, Vec<u8>>,
) -> Result<(CompactStep, CheckpointInfo, Dump)> {
    let mut n = 0;
    let mut taken = None;
    store.compact_with_hook(retention, |step| {
        if n == at {
            let u = store.table("u")?;
            for (k, v) in entries {
                u.put(k, v)?;
            }
            let info = store.checkpoint(b"during gc")?;
            taken = Some((step, info, dump(store)?));
        }
        n += 1;
        Ok(())
    })?;
    Ok(taken.unwrap_or_else(|| panic!("boundary {at} never reached")))
}

#[test]
fn a_checkpoint_at_every_gc_step_boundary_never_references_a_deleted_chunk() -> Result<()> {
    // How many step boundaries a GC of stage 1 has.
    let fs = SimFs::new();
    let (store, _) = setup(&fs, 1)?;
    let mut boundaries = 0;
    store.compact_with_hook(&Retention::keep_last(3), |_| {
        boundaries += 1;
        Ok(())
    })?;
    drop(store);
    assert!(boundaries >= 5, "{boundaries} step boundaries");

    for at in 0..boundaries {
        let fs = SimFs::new();
        let (store, mut states) = setup(&fs, 1)?;
        // Table "u" gets exactly the entries checkpoint 1 wrote to "t": its chunks are the
        // chunks of segment 1, which the GC finds dead once checkpoint 1 is gone.
        let first = states.get(&CheckpointId(1)).and_then(|d| d.get("t")).cloned().unwrap_or_default();
        let (step, info, state) = checkpoint_during_compaction(&store, &Retention::keep_last(3), at, &first)?;
        // Before the sweep the dead chunks are still indexed, so the checkpoint reuses them and
        // the GC must keep their segments; once the sweep starts they are gone from the index
        // and are written anew.
        if step != CompactStep::SegmentDeleted {
            assert!(info.chunks_reused > 0, "boundary {at} ({step:?}): {info:?}");
        }
        let id = info.id;
        states.insert(id, state.clone());
        drop(store);
        let store = sim_store(&fs, opts())?;
        assert_eq!(dump(&store)?, state, "boundary {at}: reopen restores the checkpoint taken during the GC");
        assert!(store.verify()?.is_ok(), "boundary {at}: {:?}", store.verify()?.problems);
        store.compact()?;
        assert_eq!(dump_view(&store.at(id)?)?, state, "boundary {at}: after the next compaction");
    }
    Ok(())
}

#[test]
fn a_checkpoint_at_every_step_of_a_gc_writing_deltas_reads_back() -> Result<()> {
    let fs = SimFs::new();
    let (store, _) = setup(&fs, 3)?;
    let mut boundaries = 0;
    let report = store.compact_with_hook(&retention(3), |_| {
        boundaries += 1;
        Ok(())
    })?;
    assert!(report.chunks_stored_as_delta > 0, "the GC writes deltas: {report:?}");
    drop(store);

    for at in 0..boundaries {
        let fs = SimFs::new();
        let (store, states) = setup(&fs, 3)?;
        // Table "u" gets the base checkpoint's entries of "t": its chunks are the base run's,
        // among them those this GC turns into deltas.
        let base = states.values().next().and_then(|d| d.get("t")).cloned().unwrap_or_default();
        let (step, info, state) = checkpoint_during_compaction(&store, &retention(3), at, &base)?;
        assert!(info.chunks_reused > 0, "boundary {at} ({step:?}): {info:?}");
        let id = info.id;
        assert_eq!(dump_view(&store.at(id)?)?, state, "boundary {at}: before reopen");
        drop(store);
        let store = sim_store(&fs, opts())?;
        assert_eq!(dump(&store)?, state, "boundary {at}: reopen restores the checkpoint taken during the GC");
        assert!(store.verify()?.is_ok(), "boundary {at}: {:?}", store.verify()?.problems);
        for _ in 0..2 {
            store.compact_with(&retention(3))?;
            assert_eq!(dump_view(&store.at(id)?)?, state, "boundary {at}: after the next compactions");
            assert!(store.verify()?.is_ok(), "boundary {at}: {:?}", store.verify()?.problems);
        }
    }
    Ok(())
}

/// A compaction whose GC copies several segments' worth (`nearly_live_load`: a merge, then
/// the load's segments copied into new ones of 4 MiB, each written as soon as it is full): a
/// crash before one of its operations, then reopen, leaves the working state and every
/// checkpoint intact (`verify` reads them all), and the next compactions clean up. With
/// CAIRN_STRESS=1 before every operation in every image mode; otherwise before each
/// operation of the copy (its first segment write to its HEAD commit), in two modes.
#[test]
fn crash_during_a_gc_copying_several_segments() -> Result<()> {
    let base = SimFs::new();
    let (store, state, _) = cairn_tests::nearly_live_load(&base, 45_000)?;
    drop(store);
    let open = |fs: &SimFs| sim_store(fs, cairn_tests::nearly_live_options());

    // Dry run on a copy: the operations of a clean compaction, and where its copy lies.
    let fs = base.crash_image(CrashMode::KeepUnsynced);
    let store = open(&fs)?;
    let start = fs.ops();
    let report = store.compact()?;
    let ops = fs.ops() - start;
    let clean_bytes = store.stats()?.bytes_on_disk;
    drop(store);
    let log: Vec<String> = fs.op_log().into_iter().skip(start as usize).collect();
    let head_commits: Vec<usize> =
        log.iter().enumerate().filter(|(_, op)| op.contains(" rename HEAD")).map(|(i, _)| i).collect();
    let (Some(&merged), Some(&copied)) = (head_commits.first(), head_commits.get(1)) else {
        panic!("a merge and a copy, each committing HEAD: {log:?}");
    };
    let copy_writes =
        log.iter().skip(merged).take(copied - merged).filter(|op| op.contains(" rename segments/")).count();
    assert!(report.segments_rewritten >= 2 && copy_writes >= 2, "the copy writes segments: {report:?} {log:?}");
    let first_write =
        log.iter().skip(merged).position(|op| op.contains(" write segments/")).map_or(merged, |i| merged + i);

    // A crash before a read leaves what a crash before the next change to the disk leaves:
    // only the changes count.
    let changes = |from: usize, to: usize| -> Vec<u64> {
        (from..to.min(log.len()))
            .filter(|&i| {
                log.get(i).and_then(|op| op.split(' ').nth(1)).is_some_and(|op| !matches!(op, "read" | "list" | "stat"))
            })
            .map(|i| i as u64 + 1)
            .chain(std::iter::once(to as u64 + 1))
            .collect()
    };
    let (points, modes): (Vec<u64>, &[CrashMode]) = if cairn_tests::stress() {
        (changes(0, log.len()), &MODES)
    } else {
        (changes(first_write, copied + 2), &MODES[..2])
    };
    let mut images = 0;
    for k in points {
        let fs = base.crash_image(CrashMode::KeepUnsynced);
        let store = open(&fs)?;
        fs.fail_at(fs.ops() + k, true);
        let _ = store.compact();
        drop(store);
        for mode in modes {
            let what = format!("crash before op {k} of {ops}, {mode:?}");
            let image = fs.crash_image(*mode);
            let store = open(&image).unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
            assert!(dump(&store)? == state, "{what}: the working state");
            assert!(store.verify()?.is_ok(), "{what}: verify");
            for _ in 0..3 {
                store.compact()?;
            }
            assert!(dump(&store)? == state, "{what}: the working state after compaction");
            let bytes = store.stats()?.bytes_on_disk;
            assert!(bytes <= clean_bytes + 4096, "{what}: {bytes} bytes on disk after cleaning, {clean_bytes} clean");
            images += 1;
        }
    }
    assert!(images >= 10, "{images} crash images");
    Ok(())
}

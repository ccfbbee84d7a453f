//! Compaction: retention (keep-last, pins, views, explicit delete), run merging bounded by
//! `max_runs_per_table` with every retained checkpoint reading exactly as before, and a GC
//! that deletes what no retained checkpoint needs.

use cairn::storage::{manifest_name, SimFs};
use cairn::{CheckpointId, CheckpointView, CompactStep, Error, Options, Result, Retention, Store};
use cairn_tests::{dump, dump_view, nearly_live_load, segment_files, sim_store, Dump};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

fn opts() -> Options {
    Options::new().chunk_target_bytes(256).max_runs_per_table(4).retention(Retention::keep_last(3))
}

/// `n` checkpoints, each rewriting a slice of 100 keys; returns each checkpoint's state.
fn history(store: &Store, n: u32) -> Result<BTreeMap<CheckpointId, Dump>> {
    let t = store.table("t")?;
    let mut states = BTreeMap::new();
    for c in 0..n {
        for i in 0..40u32 {
            let k = (c * 13 + i * 7) % 100;
            t.put(&k.to_be_bytes(), format!("v{c}-{i}").as_bytes())?;
        }
        t.delete(&((c * 31) % 100).to_be_bytes())?;
        let info = store.checkpoint(&c.to_le_bytes())?;
        states.insert(info.id, dump(store)?);
    }
    Ok(states)
}

#[test]
fn compaction_bounds_runs_keeps_what_retention_keeps_and_reads_the_same() -> Result<()> {
    let fs = SimFs::new();
    let store = sim_store(&fs, opts())?;
    let states = history(&store, 12)?;
    let head = store.head()?.map(|h| h.id).unwrap_or(CheckpointId(0));
    let before = dump(&store)?;
    assert_eq!(store.stats()?.head_runs, 12);

    let report = store.compact()?;
    let merged = report.merged_into.unwrap_or_else(|| panic!("12 runs > 4 must merge: {report:?}"));
    assert!(store.stats()?.head_runs <= 4, "{:?}", store.stats()?);
    assert_eq!(store.head()?.map(|h| (h.id, h.metadata)), Some((merged, 11u32.to_le_bytes().to_vec())));
    assert_eq!(dump(&store)?, before, "compaction does not change the working state");
    assert_eq!(report.checkpoints_deleted, 9, "{report:?}");
    // The three retained checkpoints still reference the runs of all earlier ones.
    assert_eq!(report.segments_deleted, 0, "{report:?}");

    // The last three checkpoints and the compaction checkpoint remain, reading as before.
    let remaining: Vec<CheckpointId> = store.checkpoints()?.iter().map(|c| c.id).collect();
    let mut expected: Vec<CheckpointId> = states.keys().rev().take(3).copied().collect();
    expected.push(merged);
    expected.sort();
    assert_eq!(remaining, expected);
    for id in states.keys().rev().take(3) {
        assert_eq!(&dump_view(&store.at(*id)?)?, &states[id], "checkpoint {id}");
    }
    assert_eq!(dump_view(&store.at(merged)?)?, states[&head]);
    assert!(matches!(store.at(CheckpointId(1)), Err(Error::NotFound(_))));
    assert!(store.verify()?.is_ok());

    // A second compaction right away finds nothing to do.
    let again = store.compact()?;
    assert_eq!((again.merged_into, again.checkpoints_deleted, again.segments_deleted), (None, 0, 0), "{again:?}");

    // Once the checkpoints based on the old runs age out, their segments go.
    let t = store.table("t")?;
    let mut later = BTreeMap::new();
    for c in 0..3u32 {
        t.put(b"later", &c.to_le_bytes())?;
        let info = store.checkpoint(b"later")?;
        later.insert(info.id, dump(&store)?);
    }
    let bytes_before = store.stats()?.bytes_on_disk;
    let report = store.compact()?;
    assert!(report.segments_deleted > 0 && report.bytes_reclaimed > 0, "{report:?}");
    assert!(store.stats()?.bytes_on_disk < bytes_before);
    for (id, state) in &later {
        assert_eq!(&dump_view(&store.at(*id)?)?, state, "checkpoint {id}");
    }
    assert!(store.verify()?.is_ok());
    drop(t);

    // Restore reads the merged layout.
    let before = dump(&store)?;
    drop(store);
    let store = sim_store(&fs, opts())?;
    assert_eq!(dump(&store)?, before);
    assert!(store.stats()?.head_runs <= 4);
    Ok(())
}

#[test]
fn pins_views_and_head_survive_retention_and_delete_refuses_them() -> Result<()> {
    let fs = SimFs::new();
    let store = sim_store(&fs, opts())?;
    let states = history(&store, 8)?;
    let ids: Vec<CheckpointId> = states.keys().copied().collect();
    store.pin(ids[1], "before-deploy")?;
    let view = store.at(ids[2])?;
    assert!(matches!(store.delete_checkpoint(ids[1]), Err(Error::InvalidArgument(_))));
    assert!(matches!(store.delete_checkpoint(ids[2]), Err(Error::InvalidArgument(_))));
    assert!(matches!(store.delete_checkpoint(ids[7]), Err(Error::InvalidArgument(_))), "HEAD");
    store.delete_checkpoint(ids[0])?;
    assert!(matches!(store.at(ids[0]), Err(Error::NotFound(_))));

    store.compact_with(&Retention::keep_last(1))?;
    assert_eq!(dump_view(&store.at(ids[1])?)?, states[&ids[1]], "pinned");
    assert_eq!(dump_view(&view)?, states[&ids[2]], "held by a view");
    assert!(matches!(store.at(ids[3]), Err(Error::NotFound(_))));
    drop(view);
    store.compact_with(&Retention::keep_last(1))?;
    assert!(matches!(store.at(ids[2]), Err(Error::NotFound(_))), "the view is gone");

    // Pins are durable; unpinning lets retention remove it.
    drop(store);
    let store = sim_store(&fs, opts())?;
    assert_eq!(store.pins()?, vec![("before-deploy".to_string(), ids[1])]);
    assert!(store.unpin("before-deploy")?);
    assert!(!store.unpin("before-deploy")?);
    store.compact_with(&Retention::keep_last(1))?;
    assert!(matches!(store.at(ids[1]), Err(Error::NotFound(_))));
    assert!(matches!(store.pin(ids[1], "gone"), Err(Error::NotFound(_))));
    assert!(store.verify()?.is_ok());
    Ok(())
}

/// 30 checkpoints of [`history`] and no merge (HEAD stays the last of them, so the two before
/// it stay through any retention): the store, each checkpoint's state, the ids in order.
fn thirty_unmerged_checkpoints(fs: &SimFs) -> Result<(Store, BTreeMap<CheckpointId, Dump>, Vec<CheckpointId>)> {
    let store = sim_store(fs, Options::new().chunk_target_bytes(256).max_runs_per_table(64))?;
    let states = history(&store, 30)?;
    let ids = states.keys().copied().collect();
    Ok((store, states, ids))
}

/// Retention deletes many checkpoints a batch at a time (giving way to checkpoints between
/// batches): every one it drops goes, and the pinned, the viewed and the last three stay.
#[test]
fn retention_dropping_many_checkpoints_deletes_them_all_and_keeps_the_protected() -> Result<()> {
    let fs = SimFs::new();
    let (store, states, ids) = thirty_unmerged_checkpoints(&fs)?;
    store.pin(ids[20], "savepoint")?;
    let view = store.at(ids[5])?;
    let report = store.compact_with(&Retention::keep_last(1))?;
    assert_eq!(report.checkpoints_deleted, 25, "{report:?}");
    for (i, id) in ids.iter().enumerate() {
        let kept = [5, 20, 27, 28, 29].contains(&i);
        match store.at(*id) {
            Ok(_) => assert!(kept, "checkpoint {i} was kept"),
            Err(Error::NotFound(_)) => assert!(!kept, "checkpoint {i} was deleted"),
            Err(e) => return Err(e),
        }
    }
    assert_eq!(dump_view(&view)?, states[&ids[5]]);
    assert_eq!(dump_view(&store.at(ids[20])?)?, states[&ids[20]]);
    assert!(store.verify()?.is_ok());
    Ok(())
}

/// A view opened while retention deletes (between its batches, while a checkpoint in flight
/// makes it give way) keeps its checkpoint: each batch checks again what must be kept.
#[test]
fn a_view_opened_while_retention_deletes_keeps_its_checkpoint() -> Result<()> {
    let fs = SimFs::new();
    let (store, states, ids) = thirty_unmerged_checkpoints(&fs)?;
    let (first, last_doomed) = (manifest_name(ids[0]), ids[26]);
    let compaction_ended = AtomicBool::new(false);
    let viewed = std::thread::scope(|s| -> Result<Option<CheckpointView>> {
        let viewer = s.spawn(|| -> Result<Option<CheckpointView>> {
            // Once the first batch is gone, retention waits for the held checkpoint.
            while fs.files().contains(&first) && !compaction_ended.load(Ordering::SeqCst) {
                std::thread::yield_now();
            }
            let view = store.at(last_doomed);
            fs.release_writes();
            match view {
                Ok(view) => Ok(Some(view)),
                // Too slow: retention went on at its bound and deleted it first.
                Err(Error::NotFound(_)) => Ok(None),
                Err(e) => Err(e),
            }
        });
        let mut held = None;
        let compacted = store.compact_with_hook(&Retention::keep_last(1), |step| {
            if step == CompactStep::Merged {
                store.table("t")?.put(b"during", b"retention")?;
                fs.hold_writes();
                held = Some(store.checkpoint_async(b"held")?);
                fs.wait_for_held_write();
            }
            Ok(())
        });
        compaction_ended.store(true, Ordering::SeqCst);
        let viewed = viewer.join().map_err(|_| Error::NotFound("the viewer thread".into()))?;
        fs.release_writes();
        compacted?;
        held.ok_or_else(|| Error::NotFound("the held checkpoint".into()))?.wait()?;
        viewed
    })?;
    match viewed {
        Some(view) => {
            assert!(fs.files().contains(&manifest_name(last_doomed)), "the viewed checkpoint's manifest was deleted");
            assert_eq!(dump_view(&view)?, states[&last_doomed]);
        }
        None => eprintln!("inconclusive: retention deleted checkpoint {last_doomed} before the view opened"),
    }
    assert!(matches!(store.at(ids[25]), Err(Error::NotFound(_))));
    assert!(store.verify()?.is_ok());
    Ok(())
}

#[test]
fn auto_compact_keeps_the_store_bounded() -> Result<()> {
    let fs = SimFs::new();
    let store = sim_store(&fs, opts().auto_compact(true))?;
    history(&store, 30)?;
    let stats = store.stats()?;
    assert!(stats.head_runs <= 4, "{stats:?}");
    assert!(stats.checkpoints <= 5, "{stats:?}");
    assert!(store.verify()?.is_ok());
    Ok(())
}

/// Regression: the GC measured a segment's live fraction against its file size, framing
/// included, so a wholly live small segment looked sparse and every GC rewrote it again.
#[test]
fn a_wholly_live_segment_is_never_rewritten() -> Result<()> {
    let fs = SimFs::new();
    let store = sim_store(&fs, opts().segment_live_fraction_min(0.99))?;
    history(&store, 3)?;
    let first = store.compact_with(&Retention::keep_all())?;
    assert_eq!(first.segments_rewritten, 0, "{first:?}");
    let second = store.compact_with(&Retention::keep_all())?;
    assert_eq!((second.segments_rewritten, second.bytes_written), (0, 0), "{second:?}");
    Ok(())
}

/// A merge that leaves the oldest run (or, in a slice merge, most of it) alone must keep
/// tombstones: the merged run would otherwise let a deleted key's old value in the base show
/// through again.
#[test]
fn a_partial_merge_keeps_tombstones() -> Result<()> {
    for slices in [1, 4] {
        let fs = SimFs::new();
        let opts = || opts().merge_slices(slices);
        let store = sim_store(&fs, opts())?;
        let t = store.table("t")?;
        for i in 0..2000u32 {
            t.put(&i.to_be_bytes(), b"base value")?;
        }
        store.checkpoint(b"base")?;
        t.delete(&7u32.to_be_bytes())?;
        t.delete(&1999u32.to_be_bytes())?;
        store.checkpoint(b"delete")?;
        for c in 0..4u32 {
            t.put(b"small", &c.to_le_bytes())?;
            store.checkpoint(b"small")?;
        }
        let expected = dump(&store)?;
        let report = store.compact()?;
        assert!(report.merged_into.is_some(), "{report:?}");
        assert_eq!(report.slices_merged, u64::from(slices > 1), "{report:?}");
        assert_eq!(store.stats()?.head_runs, 2, "the large base run is left (mostly) alone");
        drop((t, store));
        let store = sim_store(&fs, opts())?;
        assert_eq!(store.table("t")?.get(&7u32.to_be_bytes())?, None, "slices {slices}");
        assert_eq!(store.table("t")?.get(&1999u32.to_be_bytes())?, None, "slices {slices}");
        assert_eq!(dump(&store)?, expected, "slices {slices}");
    }
    Ok(())
}

/// Slice merges against a model: a large table takes random puts and deletes (new keys too,
/// below and above the existing ones), a checkpoint and a compaction per round; after each,
/// every retained checkpoint reads exactly the model's state at it, and the head's runs stay
/// within the bound. Merges that leave most of the base alone must happen, and write much
/// less than the base.
#[test]
fn slice_merges_read_like_a_model_at_every_retained_checkpoint() -> Result<()> {
    for slices in [2usize, 3, 5] {
        let fs = SimFs::new();
        let opts = Options::new()
            .chunk_target_bytes(256)
            .max_runs_per_table(3)
            .merge_slices(slices)
            .retention(Retention::keep_last(4));
        let store = sim_store(&fs, opts.clone())?;
        let t = store.table("t")?;
        let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for i in 1000..4000u32 {
            t.put(&i.to_be_bytes(), format!("base-{i}").as_bytes())?;
            model.insert(i.to_be_bytes().to_vec(), format!("base-{i}").into_bytes());
        }
        let mut states: BTreeMap<CheckpointId, BTreeMap<Vec<u8>, Vec<u8>>> = BTreeMap::new();
        states.insert(store.checkpoint(b"base")?.id, model.clone());
        let mut rng = 0x2545_f491_4f6c_dd1du64 ^ slices as u64;
        let (mut slice_merges, mut base_bytes, mut least_written) = (0u64, 0u64, u64::MAX);
        for round in 0..40u32 {
            for _ in 0..100 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let key = ((rng >> 8) % 5000).to_be_bytes().to_vec();
                if rng.is_multiple_of(5) {
                    t.delete(&key)?;
                    model.remove(&key);
                } else {
                    let value = format!("r{round}-{}", rng % 1000).into_bytes();
                    t.put(&key, &value)?;
                    model.insert(key, value);
                }
            }
            let id = store.checkpoint(&round.to_le_bytes())?.id;
            states.insert(id, model.clone());
            let report = store.compact()?;
            if let Some(merged) = report.merged_into {
                states.insert(merged, model.clone());
            }
            if report.slices_merged > 0 {
                slice_merges += 1;
                least_written = least_written.min(report.bytes_written);
            }
            let stats = store.stats()?;
            assert!(stats.head_runs <= 3, "{stats:?}");
            base_bytes = base_bytes.max(stats.live_bytes);
            for c in store.checkpoints()? {
                let want = states.get(&c.id).unwrap_or_else(|| panic!("checkpoint {} is not in the model", c.id));
                let view = store.at(c.id)?;
                let got: BTreeMap<Vec<u8>, Vec<u8>> = view.range("t", ..)?.into_iter().collect();
                assert!(&got == want, "slices {slices}, round {round}: checkpoint {} differs", c.id);
            }
        }
        assert!(slice_merges >= 10, "slices {slices}: only {slice_merges} slice merges");
        assert!(least_written * 2 < base_bytes, "slices {slices}: a slice merge wrote {least_written} bytes");
        assert!(store.verify()?.is_ok());
        drop((t, store));
        let store = sim_store(&fs, opts)?;
        let got: BTreeMap<Vec<u8>, Vec<u8>> = store.table("t")?.range(..)?.into_iter().collect();
        assert!(got == model, "slices {slices}: reopened head differs");
    }
    Ok(())
}

/// With `auto_compact`, a compaction that fails after the checkpoint committed does not make
/// the checkpoint look failed: it is returned, durable, and the error is in `stats()`.
#[test]
fn a_failed_auto_compaction_does_not_fail_the_committed_checkpoint() -> Result<()> {
    let fs = SimFs::new();
    let store = sim_store(&fs, opts().auto_compact(true))?;
    history(&store, 2)?;
    // How many operations the checkpoint itself takes, measured on a copy without compaction.
    let copy = fs.crash_image(cairn::storage::CrashMode::KeepUnsynced);
    let probe = sim_store(&copy, opts())?;
    probe.table("t")?.put(b"k", b"v")?;
    let before = copy.ops();
    probe.checkpoint(b"probe")?;
    let checkpoint_ops = copy.ops() - before;

    store.table("t")?.put(b"k", b"v")?;
    fs.fail_at(fs.ops() + checkpoint_ops + 1, false);
    let info = store.checkpoint(b"committed")?;
    let stats = store.stats()?;
    assert!(stats.last_auto_compact_error.is_some(), "{stats:?}");
    assert!(matches!(store.checkpoint(b"next"), Err(Error::Poisoned(_))), "the I/O error poisoned the store");
    drop(store);
    let store = sim_store(&fs, opts())?;
    assert_eq!(store.head()?.map(|h| (h.id, h.metadata)), Some((info.id, b"committed".to_vec())));
    Ok(())
}

/// The options of [`five_runs`]' store, to reopen it with: at most four runs, merged whole.
fn five_runs_options() -> Options {
    Options::new().max_runs_per_table(4).merge_slices(1)
}

/// A store whose next compaction merges five runs of 9.3 MB in all (80,000 keys) into new
/// chunks: a load, then four runs of a fifth of the keys each (none of the merged chunks is
/// one of the runs' own, which would be deduplicated). The merge adds its chunks to its
/// segments 4 MiB at a time and writes each full segment at once, before it reads the last
/// chunks of its runs.
fn five_runs(fs: &SimFs) -> Result<Store> {
    const KEYS: u64 = 80_000;
    let store = sim_store(fs, five_runs_options())?;
    let t = store.table("state")?;
    for round in 0..5 {
        for id in (0..KEYS).filter(|id| round == 0 || id % 5 == round) {
            t.put(&cairn_tests::key16(id), &cairn_tests::value100(id, round))?;
        }
        store.checkpoint(&round.to_le_bytes())?;
    }
    Ok(store)
}

/// A merge streams its runs a chunk at a time and writes each full segment as it goes: a
/// damaged chunk it meets after writing some stops it with `Corrupted`, the segments it wrote
/// are deleted, and the store carries on.
#[test]
fn a_merge_that_meets_damage_midway_leaves_no_segment_behind() -> Result<()> {
    let fs = SimFs::new();
    let store = five_runs(&fs)?;
    let t = store.table("state")?;
    // The newest run's last chunk holds its highest keys: the merge meets it last, after a
    // segment of output was written.
    let before = segment_files(&fs);
    let newest = before.last().cloned().unwrap_or_default();
    let (_, chunks) = cairn::format::decode_segment(&fs.file(&newest).unwrap_or_default())
        .unwrap_or_else(|e| panic!("{newest}: {e}"));
    let last = chunks.iter().rfind(|c| c.kind == cairn::format::ChunkKind::Entries).cloned();
    let last = last.unwrap_or_else(|| panic!("{newest} holds no entries chunk"));
    assert!(fs.corrupt(&newest, |b| b[(last.offset + u64::from(last.stored_len) / 2) as usize] ^= 0x5a));

    let ops = fs.ops();
    let err = store.compact().err();
    assert!(matches!(err, Some(Error::Corrupted { .. })), "{err:?}");
    let log = fs.op_log();
    let wrote = log.iter().skip(ops as usize).filter(|op| op.contains(" rename segments/")).count();
    assert!(wrote > 0, "the merge wrote a segment before it met the damage: {log:?}");
    assert_eq!(segment_files(&fs), before, "what the merge wrote is gone");
    // Not poisoned: checkpoints go on.
    t.put(b"after", b"1")?;
    store.checkpoint(b"after")?;
    assert_eq!(t.get(b"after")?, Some(b"1".to_vec()));
    Ok(())
}

/// The same with a read of a run failing (an I/O error) after the merge wrote a segment: the
/// segment is deleted as well, the store is poisoned (the medium's state is unknown), and it
/// reopens with the state it had.
#[test]
fn a_merge_whose_read_fails_midway_deletes_what_it_wrote() -> Result<()> {
    // Where the first read after the merge's first segment write comes, counted from the
    // compaction's start, in a run without fault (the workload is deterministic).
    let probe = SimFs::new();
    let (start, read) = {
        let store = five_runs(&probe)?;
        let start = probe.ops();
        store.compact()?;
        let wrote = probe.first_op_after(start, "write segments/").expect("the merge writes a segment");
        let read = probe.first_op_after(wrote, "read segments/").expect("and then reads on");
        (start, read)
    };

    let fs = SimFs::new();
    let store = five_runs(&fs)?;
    let state = dump(&store)?;
    let before = segment_files(&fs);
    assert_eq!(fs.ops(), start, "the same workload");
    fs.fail_at(read, false);
    let err = store.compact().err();
    assert!(matches!(err, Some(Error::Io { .. })), "{err:?}");
    let log = fs.op_log();
    let failed = log.get(read as usize - 1).cloned().unwrap_or_default();
    assert!(failed.contains("read segments/"), "{failed}");
    let wrote = log.iter().skip(start as usize).filter(|op| op.contains(" rename segments/")).count();
    assert!(wrote > 0, "the merge wrote a segment before the failed read: {log:?}");
    assert_eq!(segment_files(&fs), before, "what the merge wrote is gone");
    let refused = store.checkpoint(b"after");
    assert!(matches!(refused, Err(Error::Poisoned(_))), "{refused:?}");
    drop(store);
    let store = sim_store(&fs, five_runs_options())?;
    assert_eq!(dump(&store)?, state);
    assert!(store.verify()?.is_ok());
    store.compact()?;
    assert_eq!(dump(&store)?, state);
    Ok(())
}

/// The GC copies the live chunks of sparse segments into new segments of about 4 MiB, each
/// written as soon as it is full: a GC copying the 9 MB of a load writes three, and
/// everything reads back.
#[test]
fn a_gc_copying_much_writes_several_segments_and_reads_back() -> Result<()> {
    let fs = SimFs::new();
    let (store, state, load) = nearly_live_load(&fs, 80_000)?;
    assert!(load.len() >= 3, "{load:?}");
    let before = segment_files(&fs);
    let report = store.compact()?;
    assert!(report.merged_into.is_some() && report.segments_rewritten >= 3, "{report:?}");
    let after = segment_files(&fs);
    let new: Vec<_> = after.iter().filter(|f| !before.contains(f)).collect();
    assert!(new.len() >= 3, "the copy is split into segments of 4 MiB: {new:?}");
    assert!(new.iter().all(|f| !load.contains(f)) && load.iter().all(|f| !after.contains(f)), "{before:?} {after:?}");
    for name in &new {
        // 4 MiB of chunks at most, plus the last one copied and the chunk table (50 bytes a
        // chunk).
        let len = fs.file(name).map_or(0, |b| b.len());
        assert!(len <= 5 * 1024 * 1024, "{name}: {len} bytes");
    }
    assert_eq!(dump(&store)?, state);
    assert!(store.verify()?.is_ok());
    drop(store);
    let store = sim_store(&fs, Options::new())?;
    assert_eq!(dump(&store)?, state, "after reopen");
    Ok(())
}

/// A GC whose copy meets a damaged chunk after writing whole segments stops with `Corrupted`
/// and deletes what it wrote; nothing else changes.
#[test]
fn a_gc_that_meets_damage_midway_leaves_no_segment_behind() -> Result<()> {
    let fs = SimFs::new();
    let (store, _, load) = nearly_live_load(&fs, 80_000)?;
    let before = segment_files(&fs);
    // Segments are copied in id order: the load's first fills most of a new segment, which
    // is written while the second is copied; the last chunk of every later one is damaged.
    assert!(load.len() >= 3, "{load:?}");
    let damaged: Vec<(String, cairn::format::SegmentChunk)> = load
        .iter()
        .skip(1)
        .filter_map(|f| {
            let (_, chunks) = cairn::format::decode_segment(&fs.file(f)?).ok()?;
            Some((f.clone(), chunks.into_iter().rfind(|c| c.kind == cairn::format::ChunkKind::Entries)?))
        })
        .collect();
    assert!(!damaged.is_empty());
    let ops = fs.ops();
    let mut marked = Vec::new();
    let err = store.compact_with_hook(&Retention::keep_last(100), |step| {
        if step == cairn::CompactStep::Marked {
            // The merge before the GC committed: its segments stay.
            marked = segment_files(&fs);
            for (name, c) in &damaged {
                assert!(fs.corrupt(name, |b| b[(c.offset + u64::from(c.stored_len) / 2) as usize] ^= 0x5a));
            }
        }
        Ok(())
    });
    assert!(matches!(err, Err(Error::Corrupted { .. })), "{err:?}");
    let log = fs.op_log();
    let wrote = log.iter().skip(ops as usize).filter(|op| op.contains(" rename segments/")).count();
    assert!(wrote > 0, "the GC wrote a segment before it met the damage");
    assert_eq!(segment_files(&fs), marked, "what the GC wrote is gone");
    assert!(marked.len() > before.len(), "the merge committed");
    Ok(())
}

//! Crash tests on the simulated disk: a crash after every single storage operation of a
//! checkpoint, of a rollback and of open (recovery itself) leaves, after reopen, exactly the
//! previous or the new checkpoint; an acknowledged checkpoint is never lost; leftovers of an
//! interrupted checkpoint never break a later one.

use cairn::storage::{CrashMode, LocalStorage, SimFs, Storage, PACED_PIECE};
use cairn::{Error, Options, Result, Store};
use cairn_tests::{dump, incompressible_values, sim_store, tiny_chunks, Dump, TempDir};

const MODES: [CrashMode; 5] = [
    CrashMode::DropUnsynced,
    CrashMode::KeepUnsynced,
    CrashMode::TornLastWrite { keep: 0 },
    CrashMode::TornLastWrite { keep: 7 },
    CrashMode::TornLastWrite { keep: 512 },
];

/// A start state: `checkpoints` committed checkpoints, then some uncheckpointed writes.
fn start(fs: &SimFs, checkpoints: u32) -> Result<Store> {
    let store = sim_store(fs, tiny_chunks())?;
    let t = store.table("t")?;
    for c in 0..checkpoints {
        for i in 0..40u32 {
            t.put(&(i * 3 + c).to_be_bytes(), format!("v{c}-{i}").as_bytes())?;
        }
        t.delete(&(c * 5).to_be_bytes())?;
        store.checkpoint(format!("c{c}").as_bytes())?;
    }
    let u = store.table("u")?;
    for i in 0..25u32 {
        u.put(&i.to_le_bytes(), &[i as u8; 20])?;
        t.put(&(i * 7).to_be_bytes(), b"updated")?;
    }
    t.delete(&6u32.to_be_bytes())?;
    Ok(store)
}

/// Reopen every crash image of `fs` and check it holds one of `allowed` (and `required` if the
/// operation was acknowledged); then check the recovered store still verifies and checkpoints.
fn check_images(fs: &SimFs, allowed: &[&Dump], acked: Option<&Dump>, what: &str) -> Result<usize> {
    check_images_with(fs, tiny_chunks, allowed, acked, what)
}

/// [`check_images`] of a store opened with `opts()`.
fn check_images_with(
    fs: &SimFs,
    opts: fn() -> Options,
    allowed: &[&Dump],
    acked: Option<&Dump>,
    what: &str,
) -> Result<usize> {
    let mut images = 0;
    for mode in MODES {
        let image = fs.crash_image(mode);
        let store = sim_store(&image, opts()).unwrap_or_else(|e| panic!("{what}, {mode:?}: reopen failed: {e}"));
        let state = dump(&store)?;
        assert!(allowed.contains(&&state), "{what}, {mode:?}: recovered a state that was never committed");
        if let Some(acked) = acked {
            assert_eq!(&state, acked, "{what}, {mode:?}: an acknowledged checkpoint was lost");
        }
        let report = store.verify()?;
        assert!(report.is_ok(), "{what}, {mode:?}: verify after recovery: {:?}", report.problems);
        // Leftovers of the interrupted operation must not disturb the next checkpoint.
        store.table("t")?.put(b"after", b"crash")?;
        store.checkpoint(b"after")?;
        drop(store);
        let again = sim_store(&image, opts())?;
        assert_eq!(again.table("t")?.get(b"after")?, Some(b"crash".to_vec()), "{what}, {mode:?}");
        images += 1;
    }
    Ok(images)
}

#[test]
fn crash_after_every_operation_of_a_checkpoint() -> Result<()> {
    let mut images = 0;
    for checkpoints in [0, 2] {
        // A dry run tells how many operations the checkpoint takes and what it commits.
        let fs = SimFs::new();
        let store = start(&fs, checkpoints)?;
        let before = dump(&sim_store(&fs.crash_image(CrashMode::DropUnsynced), tiny_chunks())?)?;
        let first = fs.ops();
        store.checkpoint(b"new")?;
        let ops = fs.ops() - first;
        let after = dump(&store)?;
        assert_ne!(before, after);
        drop(store);

        for k in 1..=ops + 1 {
            let fs = SimFs::new();
            let store = start(&fs, checkpoints)?;
            fs.fail_at(fs.ops() + k, true);
            let result = store.checkpoint(b"new");
            let what = format!("start {checkpoints}, crash before op {k} of {ops}");
            if result.is_err() {
                assert!(matches!(store.checkpoint(b"x"), Err(Error::Poisoned(_))), "{what}: not poisoned");
                assert!(matches!(store.table("t")?.put(b"k", b"v"), Err(Error::Poisoned(_))), "{what}");
            }
            let acked = result.is_ok().then_some(&after);
            images += check_images(&fs, &[&before, &after], acked, &what)?;
        }
    }
    assert!(images > 100, "explored {images} crash images");
    Ok(())
}

/// A checkpoint of about 11 MB, so three segments: the first two are written by the
/// checkpoint's background writer while the rest is cut (`ChunkSink::spilling_in_background`).
/// A crash before each of its operations leaves the previous or the new checkpoint, and an
/// acknowledged one is never lost.
#[test]
fn crash_after_every_operation_of_a_checkpoint_of_several_segments() -> Result<()> {
    let start = |fs: &SimFs| -> Result<Store> {
        let store = sim_store(fs, Options::new())?;
        let t = store.table("t")?;
        t.put(b"base", b"committed")?;
        store.checkpoint(b"base")?;
        // Values that do not compress: 2,200 of 5,000 bytes.
        for (i, value) in (0u32..).zip(incompressible_values(2_200, 5_000)) {
            t.put(&i.to_be_bytes(), &value)?;
        }
        t.delete(b"base")?;
        Ok(store)
    };
    let fs = SimFs::new();
    let store = start(&fs)?;
    let before = dump(&sim_store(&fs.crash_image(CrashMode::DropUnsynced), Options::new())?)?;
    let first = fs.ops();
    store.checkpoint(b"big")?;
    let ops = fs.ops() - first;
    let after = dump(&store)?;
    drop(store);
    let segment_writes = fs.op_log().iter().skip(first as usize).filter(|op| op.contains(" write segments/")).count();
    assert!(segment_writes >= 3, "the checkpoint wrote {segment_writes} segments");

    let mut images = 0;
    for k in 1..=ops + 1 {
        let fs = SimFs::new();
        let store = start(&fs)?;
        fs.fail_at(fs.ops() + k, true);
        let result = store.checkpoint(b"big");
        let what = format!("crash before op {k} of {ops}");
        if result.is_err() {
            assert!(matches!(store.checkpoint(b"x"), Err(Error::Poisoned(_))), "{what}: not poisoned");
        }
        drop(store);
        let acked = result.is_ok().then_some(&after);
        images += check_images_with(&fs, Options::new, &[&before, &after], acked, &what)?;
    }
    assert!(images > 20, "explored {images} crash images");
    Ok(())
}

#[test]
fn crash_after_every_operation_of_a_rollback() -> Result<()> {
    let fs = SimFs::new();
    let store = start(&fs, 3)?;
    let first = store.checkpoints()?.first().map(|c| c.id).unwrap_or_else(|| panic!("no checkpoint"));
    let at_head = dump(&sim_store(&fs.crash_image(CrashMode::DropUnsynced), tiny_chunks())?)?;
    let before_ops = fs.ops();
    store.rollback(first)?;
    let rolled = dump(&store)?;
    let ops = fs.ops() - before_ops;
    drop(store);
    for k in 1..=ops + 1 {
        let fs = SimFs::new();
        let store = start(&fs, 3)?;
        fs.fail_at(fs.ops() + k, true);
        let acked = store.rollback(first).is_ok().then_some(&rolled);
        check_images(&fs, &[&at_head, &rolled], acked, &format!("rollback, crash before op {k}"))?;
    }
    Ok(())
}

#[test]
fn crash_after_every_operation_of_recovery() -> Result<()> {
    // A disk left by a checkpoint interrupted after its segment and manifest were written but
    // before HEAD moved: recovery must ignore and remove them, and may itself crash anywhere.
    let fs = SimFs::new();
    let store = start(&fs, 2)?;
    let committed = dump(&sim_store(&fs.crash_image(CrashMode::DropUnsynced), tiny_chunks())?)?;
    let before = fs.ops();
    store.checkpoint(b"x")?;
    let head_rename =
        fs.first_op_after(before, "rename HEAD").unwrap_or_else(|| panic!("the checkpoint never renamed HEAD"))
            - before;
    drop(store);
    // Redo it, crashing just before HEAD is renamed.
    let fs = SimFs::new();
    let store = start(&fs, 2)?;
    fs.fail_at(fs.ops() + head_rename, true);
    assert!(store.checkpoint(b"x").is_err());
    drop(store);
    let leftovers = fs.crash_image(CrashMode::KeepUnsynced);
    assert!(leftovers.files().iter().any(|f| f.ends_with(".man")));

    // Dry run of recovery to count its operations.
    let probe = leftovers.crash_image(CrashMode::KeepUnsynced);
    drop(sim_store(&probe, tiny_chunks())?);
    let ops = probe.ops();
    for k in 1..=ops + 1 {
        let disk = leftovers.crash_image(CrashMode::KeepUnsynced);
        disk.fail_at(k, true);
        let _ = sim_store(&disk, tiny_chunks());
        check_images(&disk, &[&committed], Some(&committed), &format!("recovery, crash before op {k}"))?;
    }
    Ok(())
}

#[test]
fn crash_while_creating_a_store() -> Result<()> {
    let probe = SimFs::new();
    drop(sim_store(&probe, tiny_chunks())?);
    for k in 1..=probe.ops() + 1 {
        let fs = SimFs::new();
        fs.fail_at(k, true);
        let _ = sim_store(&fs, tiny_chunks());
        for mode in MODES {
            let store = sim_store(&fs.crash_image(mode), tiny_chunks())?;
            assert!(store.head()?.is_none() && dump(&store)?.is_empty(), "crash before op {k}, {mode:?}");
        }
    }
    Ok(())
}

/// The naming rule of `format-spec.md` 6.1: a checkpoint creates its segments and manifest
/// under their names (it holds the commit lock until HEAD names them, so they stay above
/// HEAD's marks while they can be torn); a compaction writes its segments outside that lock
/// while checkpoints may commit higher ids, so through a temporary renamed once complete.
#[test]
fn only_segments_written_under_the_commit_lock_skip_the_temporary() -> Result<()> {
    let fs = SimFs::new();
    let opts = tiny_chunks().max_runs_per_table(2);
    let store = sim_store(&fs, opts)?;
    let t = store.table("t")?;
    for c in 0..4u32 {
        for i in 0..40u32 {
            t.put(&(i * 3 + c).to_be_bytes(), format!("v{c}-{i}").as_bytes())?;
        }
        store.checkpoint(format!("c{c}").as_bytes())?;
    }
    let checkpoints_end = fs.op_log().len();
    let report = store.compact()?;
    assert!(report.runs_merged > 0, "the compaction merged nothing: {report:?}");
    let log = fs.op_log();
    let writes = |lines: &[String], dir: &str| -> Vec<String> {
        lines
            .iter()
            .filter_map(|l| l.split_once(" write ").map(|(_, p)| p.to_string()))
            .filter(|p| p.starts_with(dir))
            .collect()
    };
    let (checkpointing, compacting) = log.split_at(checkpoints_end);
    let checkpoint_segments = writes(checkpointing, "segments/");
    assert!(!checkpoint_segments.is_empty(), "the checkpoints wrote no segment");
    assert!(checkpoint_segments.iter().all(|p| p.ends_with(".seg")), "{checkpoint_segments:?}");
    let compaction_segments = writes(compacting, "segments/");
    assert!(!compaction_segments.is_empty(), "the compaction wrote no segment");
    assert!(compaction_segments.iter().all(|p| p.ends_with(".seg.tmp")), "{compaction_segments:?}");
    let manifests = writes(&log, "manifests/");
    assert!(manifests.len() >= 5, "{manifests:?}");
    assert!(manifests.iter().all(|p| p.ends_with(".man")), "{manifests:?}");
    Ok(())
}

/// `put_new` never overwrites: on the real disk and in simulation, creating a name that
/// exists is an error and the object keeps its bytes (an id reused by mistake must not
/// replace a segment or manifest a checkpoint may name).
#[test]
fn creating_an_existing_object_is_refused_and_leaves_it_whole() -> Result<()> {
    let dir = TempDir::new("put-new");
    let local = LocalStorage::open(dir.path(), true, true, false)?;
    let sim = SimFs::new().storage();
    for storage in [&local as &dyn Storage, &sim] {
        let name = "segments/0000000000000007.seg";
        storage.put_new(name, b"first")?;
        storage.sync()?;
        let again = storage.put_new(name, b"second, longer");
        assert!(matches!(again, Err(Error::Io { .. })), "{}: {again:?}", storage.location());
        assert_eq!(storage.read(name, 64)?, b"first", "{}", storage.location());
    }
    Ok(())
}

/// A paced put (how compaction writes its segments) calls its `between` before each piece
/// on the real disk (512 KiB pieces) and at least once in simulation, and before the final
/// sync; the object is whole and no temporary is left, like a plain put.
#[test]
fn a_paced_put_gives_way_before_each_piece_and_leaves_the_object_whole() -> Result<()> {
    let dir = TempDir::new("put-paced");
    let local = LocalStorage::open(dir.path(), true, true, false)?;
    let fs = SimFs::new();
    let sim = fs.storage();
    // Three pieces: two full ones and a partial one.
    let bytes: Vec<u8> = (0..2 * PACED_PIECE + 1000).map(|i| (i % 251) as u8).collect();
    let name = "segments/0000000000000009.seg";
    for (storage, calls) in [(&local as &dyn Storage, 3 + 1), (&sim, 1 + 1)] {
        let mut between = 0;
        storage.put_paced(name, &bytes, &mut || between += 1)?;
        storage.sync()?;
        assert_eq!(between, calls, "{}", storage.location());
        assert_eq!(storage.read(name, bytes.len())?, bytes, "{}", storage.location());
    }
    // Only the object itself, no temporary, in either.
    let on_disk: Vec<String> = std::fs::read_dir(dir.path().join("segments"))
        .map_err(|e| Error::NotFound(format!("the segments directory: {e}")))?
        .filter_map(|e| e.ok().and_then(|e| e.file_name().to_str().map(|n| format!("segments/{n}"))))
        .collect();
    assert_eq!(on_disk, vec![name.to_string()]);
    let simulated: Vec<String> = fs.files().into_iter().filter(|p| p.starts_with("segments/")).collect();
    assert_eq!(simulated, vec![name.to_string()]);
    Ok(())
}

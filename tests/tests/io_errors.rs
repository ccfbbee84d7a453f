//! I/O-error loop: fail the Nth storage operation of a workload (puts, checkpoints, a
//! rollback, a pin, a compaction), for every N, once and persistently, then:
//! - G5: after a failed write, fsync, rename or delete, nothing more is acknowledged: every
//!   later checkpoint, rollback, pin and compaction fails until reopen;
//! - the store reopens on the image a crash then leaves, with exactly the last acknowledged
//!   state (or, after a write-path error, the operation in flight), also after the recovery
//!   itself failed at each of its operations, one after the other, with a crash each time.

use cairn::storage::{CrashMode, SimFs};
use cairn::{Error, Options, Result, Retention, Store};
use cairn_tests::{dump, sim_store, Dump};

fn opts() -> Options {
    Options::new().chunk_target_bytes(128).max_runs_per_table(2).retention(Retention::keep_last(2))
}

fn start(fs: &SimFs) -> Result<Store> {
    let store = sim_store(fs, opts())?;
    let t = store.table("t")?;
    for c in 0..3u32 {
        for i in 0..20u32 {
            t.put(&(i * 5 + c).to_be_bytes(), format!("{c}-{i}").as_bytes())?;
        }
        store.checkpoint(&c.to_le_bytes())?;
    }
    Ok(store)
}

/// One step of the workload: the head's new content if it changes it.
type Step = dyn Fn(&Store) -> Result<Option<Dump>>;

/// The workload. Returns the states acknowledged, in order (the head's content after each
/// acknowledged operation that changes it), and the first error, if any; after a write-path
/// error it checks that nothing more is acknowledged.
fn workload(store: &Store, base: Dump) -> (Vec<Dump>, Option<Error>) {
    let mut acked = vec![base];
    // The workload stops at its first error, so what was acknowledged is a prefix of the clean
    // run's states.
    let mut first_error: Option<Error> = None;
    let steps: [&Step; 5] = [
        &|s| {
            let t = s.table("t")?;
            for i in 0..30u32 {
                t.put(&(i * 3).to_be_bytes(), b"round four")?;
            }
            s.checkpoint(b"4")?;
            Ok(Some(dump(s)?))
        },
        &|s| {
            let first = s.checkpoints()?.first().map(|c| c.id).ok_or_else(|| Error::NotFound("none".into()))?;
            s.rollback(first)?;
            Ok(Some(dump(s)?))
        },
        &|s| {
            let id = s.head()?.map(|h| h.id).ok_or_else(|| Error::NotFound("head".into()))?;
            s.pin(id, "keep")?;
            Ok(None)
        },
        &|s| {
            s.table("u")?.put(b"u", b"v")?;
            s.checkpoint(b"5")?;
            Ok(Some(dump(s)?))
        },
        &|s| {
            s.compact()?;
            Ok(None)
        },
    ];
    for step in steps {
        match step(store) {
            Ok(Some(state)) => acked.push(state),
            Ok(None) => {}
            Err(e) => {
                first_error = Some(e);
                break;
            }
        }
    }
    (acked, first_error)
}

fn is_write_path(e: &Error) -> bool {
    matches!(e, Error::Io { op, .. } if !matches!(*op, "read" | "size" | "list"))
}

#[test]
fn fail_every_operation_once_and_persistently() -> Result<()> {
    // Dry run: the workload's operations and the states it passes through.
    let fs = SimFs::new();
    let store = start(&fs)?;
    let base = dump(&store)?;
    let first = fs.ops();
    let (clean, err) = workload(&store, base.clone());
    assert!(err.is_none(), "{err:?}");
    let ops = fs.ops() - first;
    let log = fs.op_log();
    drop(store);
    let mut cases = 0;
    let mut recoveries = 0;
    for n in 1..=ops {
        let failing = log.get((first + n - 1) as usize).cloned().unwrap_or_default();
        let write_op =
            ["write", "fsync", "rename", "fsync_dir", "remove"].contains(&failing.split(' ').nth(1).unwrap_or(""));
        for persistent in [false, true] {
            let fs = SimFs::new();
            let store = start(&fs)?;
            fs.fail_at(fs.ops() + n, persistent);
            let (acked, err) = workload(&store, base.clone());
            let what = format!("op {n} ({failing}), persistent {persistent}");
            if write_op {
                let e = err.as_ref().unwrap_or_else(|| panic!("{what}: a failed write was swallowed"));
                assert!(is_write_path(e) || matches!(e, Error::Poisoned(_)), "{what}: {e}");
            }
            let poisoned = err.as_ref().is_some_and(is_write_path);
            if poisoned {
                assert!(matches!(store.checkpoint(b"after"), Err(Error::Poisoned(_))), "{what}: G5");
                assert!(matches!(store.table("t")?.put(b"k", b"v"), Err(Error::Poisoned(_))), "{what}: G5");
            }
            drop(store);
            fs.clear_faults();
            // Where the last acknowledged state sits in the clean run.
            let at = acked.len() - 1;
            assert!(acked.as_slice() == &clean[..=at], "{what}: acknowledged states diverge from the clean run");
            for mode in [CrashMode::DropUnsynced, CrashMode::KeepUnsynced] {
                let image = fs.crash_image(mode);
                // A second failure while recovering, at every operation of the recovery, then
                // a crash: the final recovery must not care.
                let probe = image.crash_image(CrashMode::KeepUnsynced);
                drop(sim_store(&probe, opts())?);
                let image = {
                    let mut image = image;
                    for k in 1..=probe.ops() {
                        image.fail_at(k, true);
                        let _ = sim_store(&image, opts());
                        image = image.crash_image(mode);
                        recoveries += 1;
                    }
                    image
                };
                let recovered = sim_store(&image, opts()).unwrap_or_else(|e| panic!("{what}, {mode:?}: {e}"));
                let state = dump(&recovered)?;
                let in_flight = if poisoned { clean.get(at + 1) } else { None };
                assert!(
                    state == clean[at] || Some(&state) == in_flight,
                    "{what}, {mode:?}: recovered neither the last acknowledged state nor the one in flight"
                );
                assert!(recovered.verify()?.is_ok(), "{what}, {mode:?}");
                cases += 1;
            }
        }
    }
    cairn_tests::report(
        "io errors",
        &format!("{ops} operations x once/persistent x 2 crash images = {cases} cases, {recoveries} failed recoveries"),
    );
    assert!(cases > 200, "{cases} cases");
    Ok(())
}

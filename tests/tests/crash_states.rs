//! Crash-state enumeration: every sequence of up to 3 store operations (checkpoint after a
//! batch of puts, rollback, compact, reopen) from several start states, crashed before every
//! storage operation, each crash image in 8 forms (unsynced dropped, unsynced kept, a random
//! subset kept, the last write torn at a 512-byte boundary and at a random byte, a zero-filled
//! tail, a garbage tail, the last rename lost). Every image must reopen (G3) on exactly the
//! last acknowledged state or the one in flight (G1, G2). Prints how many states it explored.

use cairn::storage::{CrashMode, SimFs};
use cairn::{Options, Result, Retention, Store};
use cairn_tests::{dump, sim_store, Dump};

#[derive(Clone, Copy, Debug)]
enum Op {
    Checkpoint,
    Rollback,
    Compact,
    Reopen,
}

const OPS: [Op; 4] = [Op::Checkpoint, Op::Rollback, Op::Compact, Op::Reopen];

fn opts() -> Options {
    Options::new().chunk_target_bytes(128).max_runs_per_table(2).retention(Retention::keep_last(2))
}

fn start(fs: &SimFs, checkpoints: u32) -> Result<Store> {
    let store = sim_store(fs, opts())?;
    let t = store.table("t")?;
    for c in 0..checkpoints {
        for i in 0..12u32 {
            t.put(&(i * 3 + c).to_be_bytes(), format!("s{c}-{i}").as_bytes())?;
        }
        store.checkpoint(&c.to_le_bytes())?;
    }
    if checkpoints > 3 {
        store.compact()?;
    }
    Ok(store)
}

/// Run one operation. Returns whether it changed what a reopen would restore.
fn run(store: &mut Store, fs: &SimFs, op: Op, n: usize) -> Result<()> {
    match op {
        Op::Checkpoint => {
            let t = store.table("t")?;
            for i in 0..10u32 {
                t.put(&(i * 7 + n as u32).to_be_bytes(), format!("op{n}-{i}").as_bytes())?;
            }
            t.delete(&(n as u32).to_be_bytes())?;
            store.checkpoint(&[n as u8])?;
        }
        Op::Rollback => {
            let first = store.checkpoints()?.first().map(|c| c.id);
            if let Some(id) = first {
                store.rollback(id)?;
            }
        }
        Op::Compact => {
            store.compact()?;
        }
        Op::Reopen => {
            *store = sim_store(fs, opts())?;
        }
    }
    Ok(())
}

/// The committed state (what a clean reopen restores).
fn committed(fs: &SimFs) -> Result<Dump> {
    dump(&sim_store(&fs.crash_image(CrashMode::DropUnsynced), opts())?)
}

fn modes(k: u64) -> [CrashMode; 8] {
    [
        CrashMode::DropUnsynced,
        CrashMode::KeepUnsynced,
        CrashMode::Reordered { seed: k },
        CrashMode::TornLastWrite { keep: 512 },
        CrashMode::TornLastWrite { keep: (k as usize * 37) % 300 },
        CrashMode::ZeroTail,
        CrashMode::GarbageTail { seed: k },
        CrashMode::LostRename,
    ]
}

#[test]
fn every_crash_state_of_every_short_workload_recovers_a_committed_state() -> Result<()> {
    let mut sequences: Vec<Vec<Op>> = Vec::new();
    for a in OPS {
        sequences.push(vec![a]);
        for b in OPS {
            sequences.push(vec![a, b]);
            for c in OPS {
                sequences.push(vec![a, b, c]);
                // The long tier (CAIRN_STRESS=1) adds every sequence of 4.
                if cairn_tests::stress() {
                    for d in OPS {
                        sequences.push(vec![a, b, c, d]);
                    }
                }
            }
        }
    }
    let mut states = 0u64;
    // The long tier also starts from 1 and 8 checkpoints: over a million states in all.
    let starts: &[u32] = if cairn_tests::stress() { &[0, 1, 2, 5, 8] } else { &[0, 2, 5] };
    for &start_checkpoints in starts {
        for seq in &sequences {
            // Dry run: the committed state after each operation, and the total operations.
            let fs = SimFs::new();
            let mut store = start(&fs, start_checkpoints)?;
            let first_op = fs.ops();
            let mut after = vec![committed(&fs)?];
            for (n, op) in seq.iter().enumerate() {
                run(&mut store, &fs, *op, n)?;
                after.push(committed(&fs)?);
            }
            let total = fs.ops() - first_op;
            drop(store);

            for k in 1..=total + 1 {
                let fs = SimFs::new();
                let mut store = start(&fs, start_checkpoints)?;
                fs.fail_at(fs.ops() + k, true);
                let mut acked = 0;
                for (n, op) in seq.iter().enumerate() {
                    if run(&mut store, &fs, *op, n).is_err() {
                        break;
                    }
                    acked = n + 1;
                }
                drop(store);
                let allowed = [Some(&after[acked]), after.get(acked + 1)];
                for mode in modes(k) {
                    let what = format!("start {start_checkpoints}, {seq:?}, crash before op {k} of {total}, {mode:?}");
                    let image = fs.crash_image(mode);
                    let recovered = sim_store(&image, opts()).unwrap_or_else(|e| panic!("{what}: reopen failed: {e}"));
                    let state = dump(&recovered)?;
                    assert!(
                        allowed.contains(&Some(&state)),
                        "{what}: recovered a state that was not the last acknowledged or the one in flight"
                    );
                    // The scrub at the end of every scenario.
                    assert!(recovered.verify()?.is_ok(), "{what}: verify");
                    states += 1;
                }
            }
        }
    }
    cairn_tests::report("crash states", &format!("{states} crash states explored, 0 failures"));
    assert!(states >= 20_000, "only {states} crash states");
    Ok(())
}

//! G7: every named fault point (`cairn::storage::FAULT_POINTS`: each write, fsync, rename
//! (manifests have none) and delete of each kind of object, and the directory fsync) is
//! reached by a scenario that creates a store, checkpoints, pins, recovers from a crashed
//! writer's leftovers and compacts; and a fault injected at the first operation of each point
//! surfaces as an error (directly, or as a poisoned store refusing the next write): none is
//! swallowed. The suite fails if a point is never hit.

use cairn::storage::{CrashMode, Fs, SimFs, FAULT_POINTS};
use cairn::{Options, Result, Retention};
use cairn_tests::sim_store;

fn opts() -> Options {
    Options::new().chunk_target_bytes(128).max_runs_per_table(2)
}

fn scenario(fs: &SimFs) -> Result<()> {
    let store = sim_store(fs, opts())?;
    let t = store.table("t")?;
    for c in 0..3u32 {
        for i in 0..10u32 {
            t.put(&(i + c).to_be_bytes(), &c.to_le_bytes())?;
        }
        store.checkpoint(&c.to_le_bytes())?;
    }
    let head = store.head()?.map(|h| h.id).unwrap_or(cairn::CheckpointId(1));
    store.pin(head, "p")?;
    drop((t, store));
    // What a writer killed mid-way leaves: temporaries and objects above HEAD's marks.
    let planted = [
        "HEAD.tmp",
        "PINS.tmp",
        "segments/00000000000000ff.seg",
        "manifests/00000000000000ff.man",
        "segments/0000000000000001.seg.tmp",
    ];
    for path in planted {
        fs.write_file(path, b"leftover").map_err(|e| cairn::Error::InvalidArgument(e.to_string()))?;
    }
    let store = sim_store(fs, opts())?;
    store.table("t")?.put(b"new", b"x")?;
    store.checkpoint(b"after recovery")?;
    store.compact_with(&Retention::keep_last(1))?;
    store.checkpoint(b"after compaction")?;
    Ok(())
}

#[test]
fn every_fault_point_is_hit_and_its_failure_surfaces() -> Result<()> {
    let fs = SimFs::new();
    scenario(&fs)?;
    let points = fs.op_points();
    let mut summary = Vec::new();
    for point in FAULT_POINTS {
        let first =
            points.iter().position(|p| p == point).unwrap_or_else(|| panic!("fault point {point} is never hit"));
        let hits = points.iter().filter(|p| *p == point).count();
        // Fail exactly that operation, once.
        let faulty = SimFs::new();
        faulty.fail_at(first as u64 + 1, false);
        let result = scenario(&faulty);
        assert!(result.is_err(), "a failure at {point} (operation {}) was swallowed", first + 1);
        // And the store comes back.
        let recovered = sim_store(&faulty.crash_image(CrashMode::DropUnsynced), opts());
        assert!(recovered.is_ok(), "{point}: no recovery: {:?}", recovered.err());
        summary.push(format!("{point} x{hits}"));
    }
    cairn_tests::report(
        "fault points",
        &format!("{} / {} hit: {}", summary.len(), FAULT_POINTS.len(), summary.join(", ")),
    );
    Ok(())
}

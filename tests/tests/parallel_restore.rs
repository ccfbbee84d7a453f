//! A large table (32,768 entries or more in its runs) is restored by several threads: one
//! reads and decodes, each shard of the map is filled by its own. It must give exactly the
//! state the sequential order gives (later runs win, tombstones remove), at open, in a view of
//! an older checkpoint and after a rollback; and a damaged chunk anywhere in it must fail the
//! restore with a typed error, never hang, panic or return a partial table.

use cairn::storage::{CrashMode, SimFs};
use cairn::{CheckpointId, Error, Options, Result};
use cairn_tests::{dump, dump_view, key16, sim_store, value100, Dump};
use std::collections::BTreeMap;

/// Above the parallel threshold even in the first checkpoint alone.
const KEYS: u64 = 50_000;

/// Three checkpoints over one table, with overwrites, deletes and re-inserts across runs; the
/// model state after each. Small chunks, so the table spans hundreds of them.
fn build(fs: &SimFs) -> Result<Vec<(CheckpointId, Dump)>> {
    let store = sim_store(fs, Options::new().chunk_target_bytes(4096))?;
    let t = store.table("big")?;
    let small = store.table("small")?;
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let put = |t: &cairn::Table, model: &mut BTreeMap<Vec<u8>, Vec<u8>>, id: u64, v: u64| -> Result<()> {
        t.put(&key16(id), &value100(id, v))?;
        model.insert(key16(id).to_vec(), value100(id, v).to_vec());
        Ok(())
    };
    let mut checkpoints = Vec::new();
    let snapshot = |model: &BTreeMap<Vec<u8>, Vec<u8>>| -> Dump {
        let mut d = Dump::new();
        d.insert("big".into(), model.clone());
        d.insert("small".into(), [(b"k".to_vec(), b"v".to_vec())].into_iter().collect());
        d
    };
    small.put(b"k", b"v")?;
    for id in 0..KEYS {
        put(&t, &mut model, id, 0)?;
    }
    checkpoints.push((store.checkpoint(b"1")?.id, snapshot(&model)));
    for id in (0..KEYS).step_by(5) {
        put(&t, &mut model, id, 1)?;
    }
    for id in (1..KEYS).step_by(7) {
        t.delete(&key16(id))?;
        model.remove(key16(id).as_slice());
    }
    for id in KEYS..KEYS + 2_000 {
        put(&t, &mut model, id, 1)?;
    }
    checkpoints.push((store.checkpoint(b"2")?.id, snapshot(&model)));
    // Back in: some deleted keys; out: some overwritten and some new ones.
    for id in (1..KEYS).step_by(14) {
        put(&t, &mut model, id, 2)?;
    }
    for id in (0..KEYS + 2_000).step_by(10) {
        t.delete(&key16(id))?;
        model.remove(key16(id).as_slice());
    }
    checkpoints.push((store.checkpoint(b"3")?.id, snapshot(&model)));
    Ok(checkpoints)
}

#[test]
fn a_large_table_restores_exactly_at_open_in_views_and_after_rollback() -> Result<()> {
    let fs = SimFs::new();
    let checkpoints = build(&fs)?;
    let store = sim_store(&fs, Options::new())?;
    let (_, newest) = checkpoints.last().ok_or_else(|| Error::InvalidArgument("no checkpoints".into()))?;
    assert_eq!(&dump(&store)?, newest, "open");
    assert_eq!(store.table("big")?.len()?, newest["big"].len());
    for (id, expected) in &checkpoints {
        assert_eq!(&dump_view(&store.at(*id)?)?, expected, "view of checkpoint {id}");
    }
    let (first, expected) = &checkpoints[0];
    store.rollback(*first)?;
    assert_eq!(&dump(&store)?, expected, "after a rollback to {first}");
    Ok(())
}

#[test]
fn a_damaged_chunk_anywhere_in_a_large_table_fails_the_restore_with_a_typed_error() -> Result<()> {
    let fs = SimFs::new();
    let checkpoints = build(&fs)?;
    let (_, newest) = checkpoints.last().ok_or_else(|| Error::InvalidArgument("no checkpoints".into()))?;
    let segments: Vec<String> = fs.files().into_iter().filter(|p| p.ends_with(".seg")).collect();
    assert!(!segments.is_empty());
    let mut failed = 0;
    for path in &segments {
        let len = fs.file(path).map_or(0, |d| d.len());
        // Spread over the segment: early chunks, late chunks, its chunk table.
        for i in 1..=24 {
            let pos = len * i / 25;
            let copy = fs.crash_image(CrashMode::KeepUnsynced);
            assert!(copy.corrupt(path, |d| d[pos] ^= 0x40));
            match sim_store(&copy, Options::new()) {
                Err(Error::Corrupted { .. }) => failed += 1,
                Err(e) => panic!("{path} at {pos}: untyped error {e:?}"),
                // A byte the head checkpoint does not read (an older run's chunk): the state
                // must then be exactly right.
                Ok(store) => assert_eq!(&dump(&store)?, newest, "{path} damaged at {pos}: wrong data"),
            }
        }
    }
    assert!(failed > 0, "no damage reached the restore");
    Ok(())
}

//! A state-machine test against a `BTreeMap` model: random sequences of put, delete,
//! checkpoint, reopen, crash, rollback, read-at-id, compact (with retention), pin, unpin and
//! delete-checkpoint on the simulated disk, checking after every step that the store holds
//! exactly what the model says and that every checkpoint retention must keep is still there;
//! with plain chunks, with slice merges from a large base, and with compressed chunks.

use cairn::storage::{CrashMode, SimFs};
use cairn::{CheckpointId, Compression, Error, Result, Retention, Store};
use cairn_tests::{dump, dump_view, recording_chunk_bytes, sim_store, tiny_chunks, Dump};
use proptest::prelude::*;
use std::collections::BTreeMap;

#[derive(Clone, Debug)]
enum Op {
    Put { table: u8, key: u8, value: u8 },
    Fill { table: u8, value: u8 },
    Delete { table: u8, key: u8 },
    Checkpoint,
    Reopen,
    Crash { keep_unsynced: bool },
    Rollback(usize),
    ReadAt(usize),
    Compact { keep: u8 },
    Pin(usize, u8),
    Unpin(u8),
    DeleteCheckpoint(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..2u8, 0..24u8, any::<u8>()).prop_map(|(table, key, value)| Op::Put { table, key, value }),
        1 => (0..2u8, any::<u8>()).prop_map(|(table, value)| Op::Fill { table, value }),
        3 => (0..2u8, 0..24u8).prop_map(|(table, key)| Op::Delete { table, key }),
        3 => Just(Op::Checkpoint),
        1 => Just(Op::Reopen),
        1 => any::<bool>().prop_map(|keep_unsynced| Op::Crash { keep_unsynced }),
        1 => any::<usize>().prop_map(Op::Rollback),
        1 => any::<usize>().prop_map(Op::ReadAt),
        1 => (0..4u8).prop_map(|keep| Op::Compact { keep }),
        1 => (any::<usize>(), 0..3u8).prop_map(|(i, name)| Op::Pin(i, name)),
        1 => (0..3u8).prop_map(Op::Unpin),
        1 => any::<usize>().prop_map(Op::DeleteCheckpoint),
    ]
}

struct Model {
    working: Dump,
    /// Every checkpoint that still exists, oldest first, with its content and whether it is a
    /// regular checkpoint (not a compaction).
    committed: Vec<(CheckpointId, Dump, bool)>,
    head: Option<CheckpointId>,
    pins: BTreeMap<u8, CheckpointId>,
}

impl Model {
    fn restored(&self) -> Dump {
        self.head.map_or_else(Dump::new, |id| self.state(id).clone())
    }

    fn state(&self, id: CheckpointId) -> &Dump {
        &self.committed.iter().find(|c| c.0 == id).unwrap_or_else(|| panic!("model lost {id}")).1
    }
}

fn key(k: u8) -> Vec<u8> {
    // Long enough keys that tiny chunks hold only a few entries each.
    let mut v = vec![b'k'; 24];
    v[0] = k;
    v
}

fn run(ops: &[Op], opts: &cairn::Options) -> Result<()> {
    let mut fs = SimFs::new();
    let mut store: Store = sim_store(&fs, opts.clone())?;
    let mut model = Model { working: Dump::new(), committed: Vec::new(), head: None, pins: BTreeMap::new() };
    for op in ops {
        match op {
            Op::Put { table, key: k, value } => {
                let name = format!("t{table}");
                let v = vec![*value; usize::from(*value % 40)];
                store.table(&name)?.put(&key(*k), &v)?;
                model.working.entry(name).or_default().insert(key(*k), v);
            }
            Op::Fill { table, value } => {
                // Put 64 keys (the other operations touch only the first 24): a checkpoint
                // after it writes a large run, which later merges take in slice by slice.
                let name = format!("t{table}");
                for k in 0..64u8 {
                    let v = vec![*value; usize::from(value.wrapping_add(k) % 40)];
                    store.table(&name)?.put(&key(k), &v)?;
                    model.working.entry(name.clone()).or_default().insert(key(k), v);
                }
            }
            Op::Delete { table, key: k } => {
                let name = format!("t{table}");
                let had = store.table(&name)?.delete(&key(*k))?;
                let model_had = model.working.entry(name).or_default().remove(&key(*k)).is_some();
                assert_eq!(had, model_had);
            }
            Op::Checkpoint => {
                let info = store.checkpoint(&[])?;
                assert_eq!(info.parent, model.head);
                model.committed.push((info.id, model.working.clone(), true));
                model.head = Some(info.id);
            }
            Op::Reopen => {
                drop(store);
                store = sim_store(&fs, opts.clone())?;
                model.working = model.restored();
            }
            Op::Crash { keep_unsynced } => {
                let mode = if *keep_unsynced { CrashMode::KeepUnsynced } else { CrashMode::DropUnsynced };
                fs = fs.crash_image(mode);
                drop(store);
                store = sim_store(&fs, opts.clone())?;
                model.working = model.restored();
            }
            Op::Rollback(i) => {
                if model.committed.is_empty() {
                    continue;
                }
                let id = model.committed[i % model.committed.len()].0;
                store.rollback(id)?;
                model.head = Some(id);
                model.working = model.restored();
            }
            Op::ReadAt(i) => {
                if model.committed.is_empty() {
                    continue;
                }
                let (id, expected, _) = &model.committed[i % model.committed.len()];
                assert_eq!(&dump_view(&store.at(*id)?)?, expected, "read at {id}");
            }
            Op::Compact { keep } => {
                let report = store.compact_with(&Retention::keep_last(usize::from(*keep)))?;
                if let Some(merged) = report.merged_into {
                    // A compaction checkpoint holds HEAD's content and becomes HEAD.
                    let head_state = model.restored();
                    model.committed.push((merged, head_state, false));
                    model.head = Some(merged);
                }
                // What retention must keep: the newest `keep` regular checkpoints, HEAD, pins.
                let mut must: Vec<CheckpointId> =
                    model.committed.iter().rev().filter(|c| c.2).take(usize::from(*keep)).map(|c| c.0).collect();
                must.extend(model.head);
                must.extend(model.pins.values().copied());
                let listed: Vec<CheckpointId> = store.checkpoints()?.iter().map(|c| c.id).collect();
                for id in &must {
                    assert!(listed.contains(id), "retention removed {id}, which it must keep");
                }
                model.committed.retain(|c| listed.contains(&c.0));
                assert_eq!(listed, model.committed.iter().map(|c| c.0).collect::<Vec<_>>());
            }
            Op::Pin(i, name) => {
                if model.committed.is_empty() {
                    continue;
                }
                let id = model.committed[i % model.committed.len()].0;
                store.pin(id, &format!("p{name}"))?;
                model.pins.insert(*name, id);
            }
            Op::Unpin(name) => {
                assert_eq!(store.unpin(&format!("p{name}"))?, model.pins.remove(name).is_some());
            }
            Op::DeleteCheckpoint(i) => {
                if model.committed.is_empty() {
                    continue;
                }
                let id = model.committed[i % model.committed.len()].0;
                let refused = Some(id) == model.head || model.pins.values().any(|p| *p == id);
                match store.delete_checkpoint(id) {
                    Ok(()) => {
                        assert!(!refused, "deleted {id}, which is HEAD or pinned");
                        model.committed.retain(|c| c.0 != id);
                    }
                    Err(Error::InvalidArgument(_)) => assert!(refused, "refused to delete {id}"),
                    Err(e) => return Err(e),
                }
            }
        }
        assert_eq!(dump(&store)?, model.working, "after {op:?}");
    }
    assert!(store.verify()?.is_ok());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_the_model(ops in prop::collection::vec(op(), 1..80)) {
        run(&ops, &model_opts()).map_err(|e| TestCaseError::fail(e.to_string()))?;
    }

    /// The same against a store that starts from a large base (both tables filled) and merges
    /// past three runs, 2 to 5 slices at a time: most merges are slice merges.
    #[test]
    fn slice_merging_store_matches_the_model(slices in 2..6usize, ops in prop::collection::vec(op(), 1..80)) {
        let mut all = vec![Op::Fill { table: 0, value: 1 }, Op::Fill { table: 1, value: 2 }, Op::Checkpoint];
        all.extend(ops);
        let opts = tiny_chunks().max_runs_per_table(3).merge_slices(slices);
        run(&all, &opts).map_err(|e| TestCaseError::fail(e.to_string()))?;
    }

    /// The first against a store that compresses its chunks (LZ4; the model's keys and values
    /// are mostly runs of one byte, so most chunks shrink): compressed chunks go through
    /// merges, the GC's rewrites and deltas, rollbacks and reopens. The checkpoints' records
    /// show that they were compressed.
    #[test]
    fn compressing_store_matches_the_model(ops in prop::collection::vec(op(), 1..80)) {
        let (opts, written) = recording_chunk_bytes(model_opts().compression(Compression::Lz4));
        run(&ops, &opts).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let (raw, stored) = written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .fold((0, 0), |(raw, stored), (r, s)| (raw + r, stored + s));
        prop_assert!(raw < 4096 || stored < raw, "{raw} raw bytes stored as {stored}");
    }
}

/// Tiny chunks and a bound of four runs: merges every few checkpoints, some of them partial
/// (not including the oldest run, so they must keep tombstones), some slice merges (after a
/// `Fill`, the base outweighs the small runs above it).
fn model_opts() -> cairn::Options {
    tiny_chunks().max_runs_per_table(4)
}

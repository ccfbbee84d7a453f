//! A state-machine test against a `BTreeMap` model: random sequences of put, delete,
//! checkpoint, reopen, crash, rollback and read-at-id on the simulated disk, checking after
//! every step that the store holds exactly what the model says.

use cairn::storage::{CrashMode, SimFs};
use cairn::{CheckpointId, Result, Store};
use cairn_tests::{dump, dump_view, sim_store, tiny_chunks, Dump};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Put { table: u8, key: u8, value: u8 },
    Delete { table: u8, key: u8 },
    Checkpoint,
    Reopen,
    Crash { keep_unsynced: bool },
    Rollback(usize),
    ReadAt(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..2u8, 0..24u8, any::<u8>()).prop_map(|(table, key, value)| Op::Put { table, key, value }),
        3 => (0..2u8, 0..24u8).prop_map(|(table, key)| Op::Delete { table, key }),
        3 => Just(Op::Checkpoint),
        1 => Just(Op::Reopen),
        1 => any::<bool>().prop_map(|keep_unsynced| Op::Crash { keep_unsynced }),
        1 => any::<usize>().prop_map(Op::Rollback),
        1 => any::<usize>().prop_map(Op::ReadAt),
    ]
}

struct Model {
    working: Dump,
    committed: Vec<(CheckpointId, Dump)>,
    head: Option<usize>,
}

impl Model {
    fn restored(&self) -> Dump {
        self.head.map_or_else(Dump::new, |i| self.committed[i].1.clone())
    }
}

fn key(k: u8) -> Vec<u8> {
    // Long enough keys that tiny chunks hold only a few entries each.
    let mut v = vec![b'k'; 24];
    v[0] = k;
    v
}

fn run(ops: &[Op]) -> Result<()> {
    let mut fs = SimFs::new();
    let mut store: Store = sim_store(&fs, tiny_chunks())?;
    let mut model = Model { working: Dump::new(), committed: Vec::new(), head: None };
    for op in ops {
        match op {
            Op::Put { table, key: k, value } => {
                let name = format!("t{table}");
                let v = vec![*value; usize::from(*value % 40)];
                store.table(&name)?.put(&key(*k), &v)?;
                model.working.entry(name).or_default().insert(key(*k), v);
            }
            Op::Delete { table, key: k } => {
                let name = format!("t{table}");
                let had = store.table(&name)?.delete(&key(*k))?;
                let model_had = model.working.entry(name).or_default().remove(&key(*k)).is_some();
                assert_eq!(had, model_had);
            }
            Op::Checkpoint => {
                let info = store.checkpoint(&[])?;
                let parent = model.head.map(|i| model.committed[i].0);
                assert_eq!(info.parent, parent);
                model.committed.push((info.id, model.working.clone()));
                model.head = Some(model.committed.len() - 1);
            }
            Op::Reopen => {
                drop(store);
                store = sim_store(&fs, tiny_chunks())?;
                model.working = model.restored();
            }
            Op::Crash { keep_unsynced } => {
                let mode = if *keep_unsynced { CrashMode::KeepUnsynced } else { CrashMode::DropUnsynced };
                fs = fs.crash_image(mode);
                drop(store);
                store = sim_store(&fs, tiny_chunks())?;
                model.working = model.restored();
            }
            Op::Rollback(i) => {
                if model.committed.is_empty() {
                    continue;
                }
                let i = i % model.committed.len();
                store.rollback(model.committed[i].0)?;
                model.head = Some(i);
                model.working = model.restored();
            }
            Op::ReadAt(i) => {
                if model.committed.is_empty() {
                    continue;
                }
                let (id, expected) = &model.committed[i % model.committed.len()];
                assert_eq!(&dump_view(&store.at(*id)?)?, expected, "read at {id}");
            }
        }
        assert_eq!(dump(&store)?, model.working, "after {op:?}");
    }
    assert!(store.verify()?.is_ok());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_the_model(ops in prop::collection::vec(op(), 1..80)) {
        run(&ops).map_err(|e| TestCaseError::fail(e.to_string()))?;
    }
}

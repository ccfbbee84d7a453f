//! Random operations with a crash countdown against a model, for the `ops_crash` fuzz target
//! and the corpus replay test. The bytes choose a storage operation to fail at (and stay
//! failed: a crash), a crash image form, whether chunks are compressed, and a sequence of
//! puts, deletes, checkpoints, reopens, rollbacks and compactions. After the crash, the store
//! must reopen on exactly the last acknowledged state or the one in flight.

use crate::storage::{CrashMode, SimFs};
use crate::{Compression, Options, Retention, Store};
use std::collections::BTreeMap;
use std::sync::Arc;

type State = BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>>;

fn opts(compression: Compression) -> Options {
    Options::new().chunk_target_bytes(Options::MIN_CHUNK_TARGET_BYTES).max_runs_per_table(2).compression(compression)
}

fn snapshot(store: &Store) -> crate::Result<State> {
    let mut out = State::new();
    for name in store.tables()? {
        out.insert(name.clone(), store.table(&name)?.iter_all()?.into_iter().collect());
    }
    Ok(out)
}

/// Run the byte-driven scenario; panics if recovery breaks a promise.
pub fn ops_crash(data: &[u8]) {
    let mut bytes = data.iter().copied();
    let mut next = move || bytes.next();
    let (Some(hi), Some(lo), Some(form)) = (next(), next(), next()) else { return };
    let countdown = u64::from(u16::from_le_bytes([lo, hi]));
    let mode = match form % 6 {
        0 => CrashMode::DropUnsynced,
        1 => CrashMode::KeepUnsynced,
        2 => CrashMode::Reordered { seed: u64::from(form) },
        3 => CrashMode::TornLastWrite { keep: usize::from(form) * 3 },
        4 => CrashMode::GarbageTail { seed: u64::from(form) },
        _ => CrashMode::LostRename,
    };
    // The byte's other factor: chunks plain or LZ4-compressed (the values are runs of one
    // byte, so they shrink).
    let compression = if (form / 6) % 2 == 0 { Compression::None } else { Compression::Lz4 };
    let open_store = |fs: &SimFs| Store::open_storage(Arc::new(fs.storage()), opts(compression));
    let fs = SimFs::new();
    let Ok(mut store) = open_store(&fs) else { return };
    fs.fail_at(fs.ops() + countdown.max(1), true);
    let mut working = State::new();
    let mut acked = State::new();
    let mut committed: Vec<(crate::CheckpointId, State)> = Vec::new();
    let mut in_flight: Option<State> = None;
    while let Some(op) = next() {
        let arg = next().unwrap_or(0);
        let result: crate::Result<()> = (|| {
            match op % 8 {
                0..=2 => {
                    let table = if arg & 0x80 == 0 { "a" } else { "b" };
                    let key = vec![arg % 16; 1 + usize::from(arg % 5)];
                    let value = vec![op; usize::from(op % 40)];
                    store.table(table)?.put(&key, &value)?;
                    working.entry(table.to_string()).or_default().insert(key, value);
                }
                3 => {
                    let table = if arg & 0x80 == 0 { "a" } else { "b" };
                    let key = vec![arg % 16; 1 + usize::from(arg % 5)];
                    store.table(table)?.delete(&key)?;
                    working.entry(table.to_string()).or_default().remove(&key);
                }
                4 => {
                    in_flight = Some(working.clone());
                    let info = store.checkpoint(&[arg])?;
                    acked = working.clone();
                    committed.push((info.id, acked.clone()));
                }
                5 => {
                    store = open_store(&fs)?;
                    working = snapshot(&store)?;
                    assert!(working == acked, "a clean reopen did not restore the last checkpoint");
                }
                6 => {
                    let Some((id, state)) = committed.get(usize::from(arg) % committed.len().max(1)).cloned() else {
                        return Ok(());
                    };
                    in_flight = Some(state.clone());
                    store.rollback(id)?;
                    acked = state.clone();
                    working = state;
                }
                _ => {
                    let report = store.compact_with(&Retention::keep_last(usize::from(arg % 3)))?;
                    committed.retain(|(id, _)| store.at(*id).is_ok());
                    if let Some(id) = report.merged_into {
                        committed.push((id, acked.clone()));
                    }
                }
            }
            Ok(())
        })();
        if result.is_err() {
            break;
        }
        in_flight = None;
    }
    drop(store);
    let image = fs.crash_image(mode);
    let recovered = open_store(&image).unwrap_or_else(|e| panic!("reopen after the crash failed: {e}"));
    let state = snapshot(&recovered).unwrap_or_else(|e| panic!("reading the recovered state failed: {e}"));
    assert!(
        state == acked || Some(&state) == in_flight.as_ref(),
        "recovered neither the last acknowledged state nor the one in flight"
    );
}

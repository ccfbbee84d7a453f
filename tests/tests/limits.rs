//! The size limits of an entry: keys of at most `format::MAX_KEY_LEN` (64 KiB), values of at
//! most `format::MAX_VALUE_LEN` (16 MiB), both possibly empty. These tests check that:
//! - entries at both limits, and empty ones, come back exact from every retained checkpoint
//!   while merges and the GC rework the store, and after a reopen, and `verify` finds
//!   nothing wrong;
//! - one byte over either limit is refused with `InvalidArgument` and changes nothing: the
//!   working state is as before, and the next checkpoint has no dirty key and no new chunk;
//! - with LZ4 compression, such an entry is stored compressed when its value compresses and
//!   whole when it does not, and reads back exact either way.

use cairn::format::{MAX_KEY_LEN, MAX_VALUE_LEN};
use cairn::storage::SimFs;
use cairn::{CheckpointId, Error, Options, Result, Retention, Store};
use cairn_tests::{dump, dump_view, incompressible_values, key16, recording_chunk_bytes, sim_store, value100, Dump};
use std::collections::BTreeMap;

fn opts() -> Options {
    Options::new().max_runs_per_table(3).merge_slices(2).retention(Retention::keep_last(3))
}

/// A key of exactly `MAX_KEY_LEN` bytes; `tag` tells such keys apart (and orders them).
fn longest_key(tag: u8) -> Vec<u8> {
    let mut key = vec![0x5a; MAX_KEY_LEN];
    key[0] = tag;
    key
}

/// `count` values of exactly `MAX_VALUE_LEN` bytes that do not compress, each different.
fn longest_values(count: usize) -> Vec<Vec<u8>> {
    incompressible_values(count, MAX_VALUE_LEN).collect()
}

/// Every retained checkpoint reads as recorded.
fn check_retained(store: &Store, states: &BTreeMap<CheckpointId, Dump>) -> Result<()> {
    let retained: Vec<CheckpointId> = store.checkpoints()?.iter().map(|c| c.id).collect();
    assert!(!retained.is_empty());
    for id in retained {
        let expected = states.get(&id).unwrap_or_else(|| panic!("checkpoint {id} was never recorded"));
        assert!(dump_view(&store.at(id)?)? == *expected, "checkpoint {id} reads differently");
    }
    Ok(())
}

#[test]
fn entries_at_both_limits_and_empty_ones_survive_merges_the_gc_and_a_reopen() -> Result<()> {
    let fs = SimFs::new();
    let store = sim_store(&fs, opts())?;
    let t = store.table("limits")?;
    // Ten versions of the value under the longest key, and one for a second longest key.
    let values = longest_values(11);
    for id in 0..200 {
        t.put(&key16(id), &value100(id, 0))?;
    }
    // The empty key, an empty value (not a tombstone), and both limits at once.
    t.put(b"", b"the empty key")?;
    t.put(b"empty value", b"")?;
    t.put(&longest_key(1), &values[0])?;
    t.put(&longest_key(2), b"a short value under the longest key")?;
    let mut states = BTreeMap::new();
    states.insert(store.checkpoint(b"load")?.id, dump(&store)?);
    // What compaction did in all: merges, segments deleted and rewritten, chunks as deltas.
    let (mut merges, mut deleted, mut rewritten, mut deltas) = (0, 0, 0, 0);
    for (round, value) in (1..=9u64).zip(&values[1..10]) {
        t.put(&longest_key(1), value)?;
        t.put(&key16(round), &value100(round, round))?;
        match round {
            2 => t.put(&longest_key(3), &values[10])?,
            3 => assert!(t.delete(b"")?, "the empty key was there"),
            4 => t.put(b"", b"")?,
            _ => {}
        }
        let state = dump(&store)?;
        states.insert(store.checkpoint(&round.to_le_bytes())?.id, state.clone());
        let report = store.compact()?;
        if let Some(id) = report.merged_into {
            states.insert(id, state);
            merges += 1;
        }
        deleted += report.segments_deleted;
        rewritten += report.segments_rewritten;
        deltas += report.chunks_stored_as_delta;
        check_retained(&store, &states)?;
    }
    // Nine rounds are what it takes (with these options) for the GC to store a chunk as a delta.
    assert!(
        merges > 0 && deleted > 0 && rewritten > 0 && deltas > 0,
        "{merges} {deleted} {rewritten} {deltas}: not covered"
    );
    assert_eq!(t.get(b"")?, Some(Vec::new()), "the empty key with an empty value");
    assert_eq!(t.get(b"empty value")?, Some(Vec::new()));
    let latest = dump(&store)?;
    drop(t);
    drop(store);

    let store = sim_store(&fs, opts())?;
    assert!(dump(&store)? == latest, "the reopened store differs from its last checkpoint");
    check_retained(&store, &states)?;
    let t = store.table("limits")?;
    assert_eq!(t.get(&longest_key(1))?.as_ref(), Some(&values[9]));
    assert_eq!(t.get(&longest_key(3))?.as_ref(), Some(&values[10]));
    let report = store.verify()?;
    assert!(report.is_ok(), "{:?}", report.problems);
    Ok(())
}

#[test]
fn one_byte_over_either_limit_is_refused_and_changes_nothing() -> Result<()> {
    let fs = SimFs::new();
    let store = sim_store(&fs, opts())?;
    let t = store.table("limits")?;
    t.put(&longest_key(1), b"at the key limit")?;
    t.put(b"k", &longest_values(1)[0])?;
    store.checkpoint(b"base")?;
    let before = dump(&store)?;

    let too_long_key = vec![1u8; MAX_KEY_LEN + 1];
    let too_long_value = vec![2u8; MAX_VALUE_LEN + 1];
    assert!(matches!(t.put(&too_long_key, b"v"), Err(Error::InvalidArgument(_))));
    assert!(matches!(t.put(b"k", &too_long_value), Err(Error::InvalidArgument(_))));
    assert!(matches!(t.put(&too_long_key, &too_long_value), Err(Error::InvalidArgument(_))));
    assert!(matches!(t.delete(&too_long_key), Err(Error::InvalidArgument(_))));
    assert!(dump(&store)? == before, "a refused write changed the working state");

    // Nothing was marked dirty: the next checkpoint carries no entry.
    let info = store.checkpoint(b"after the refusals")?;
    let view = store.at(info.id)?;
    assert!(dump_view(&view)? == before);
    assert_eq!((info.dirty_keys, info.chunks_new), (0, 0), "{info:?}");
    Ok(())
}

/// With LZ4 compression, an entry at both limits is stored compressed when its value
/// compresses and as it is when it does not, and both come back exact after a reopen.
#[test]
fn entries_at_both_limits_round_trip_compressed_and_not() -> Result<()> {
    let fs = SimFs::new();
    let lz4 = || opts().compression(cairn::Compression::Lz4);
    let (recorded, written) = recording_chunk_bytes(lz4());
    let store = sim_store(&fs, recorded)?;
    let t = store.table("limits")?;
    let compressible = vec![7u8; MAX_VALUE_LEN];
    t.put(&longest_key(1), &compressible)?;
    store.checkpoint(b"compressible")?;
    t.put(&longest_key(2), &longest_values(1)[0])?;
    store.checkpoint(b"incompressible")?;
    let before = dump(&store)?;
    drop((t, store));

    let store = sim_store(&fs, lz4())?;
    assert!(dump(&store)? == before, "the entries read back differently after a reopen");
    let report = store.verify()?;
    assert!(report.is_ok(), "{:?}", report.problems);
    let records = written.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let [(raw1, stored1), (raw2, stored2)] = records.as_slice() else { panic!("{records:?}") };
    // The first checkpoint's entry shrinks to a sliver; the second's is stored whole (its
    // chunk is written raw, plus the run index, which compresses).
    assert!(*raw1 > MAX_VALUE_LEN as u64 && *stored1 < *raw1 / 100, "{raw1} stored as {stored1}");
    assert!(*raw2 > MAX_VALUE_LEN as u64 && *stored2 > MAX_VALUE_LEN as u64, "{raw2} stored as {stored2}");
    Ok(())
}

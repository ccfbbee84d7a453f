//! Delta chunks: the GC stores a chunk only older checkpoints need as a patch against the
//! chunk of HEAD that replaced it (`format-spec.md` 3.6a and section 7). These tests check:
//! - every retained checkpoint reads exactly as committed while its chunks become deltas,
//!   before and after a reopen, and `verify` finds nothing wrong;
//! - a pinned checkpoint keeps the bases of its deltas alive after every manifest that
//!   referenced those bases is gone;
//! - a damaged delta chunk is reported, never read as data.

use cairn::format::{decode_segment, Codec};
use cairn::storage::{CrashMode, SimFs};
use cairn::{CheckpointId, Options, Result, Retention, Store};
use cairn_tests::{dump, dump_view, key16, sim_store, value100, Dump};
use std::collections::BTreeMap;

const KEYS: u64 = 3_000;
const DIRTY: u64 = 60;

fn opts() -> Options {
    Options::new().chunk_target_bytes(1024).max_runs_per_table(6).merge_slices(2).retention(Retention::keep_last(10))
}

/// A store on `fs` after a load and `rounds` rounds of updates, each followed by a
/// compaction. Returns the store, every checkpoint's state, and the chunks stored as deltas.
fn run(
    fs: &SimFs,
    rounds: u64,
    mut each: impl FnMut(&Store, &States, u64) -> Result<()>,
) -> Result<(Store, States, u64)> {
    let store = sim_store(fs, opts())?;
    let t = store.table("state")?;
    for id in 0..KEYS {
        t.put(&key16(id), &value100(id, 0))?;
    }
    let mut states = States::default();
    states.insert(store.checkpoint(b"load")?.id, dump(&store)?);
    let mut deltas = 0;
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for round in 1..=rounds {
        for _ in 0..DIRTY {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let id = rng % KEYS;
            t.put(&key16(id), &value100(id, round))?;
        }
        if round % 7 == 0 {
            t.delete(&key16(rng % KEYS))?;
        }
        let state = dump(&store)?;
        states.insert(store.checkpoint(&round.to_le_bytes())?.id, state.clone());
        let report = store.compact()?;
        if let Some(id) = report.merged_into {
            states.insert(id, state); // a compaction holds its parent's content
        }
        deltas += report.chunks_stored_as_delta;
        each(&store, &states, round)?;
    }
    Ok((store, states, deltas))
}

#[derive(Default)]
struct States(BTreeMap<CheckpointId, Dump>);

impl States {
    fn insert(&mut self, id: CheckpointId, state: Dump) {
        self.0.insert(id, state);
    }

    /// Every checkpoint the store lists reads as committed.
    fn check(&self, store: &Store, what: &str) -> Result<usize> {
        let listed = store.checkpoints()?;
        for c in &listed {
            let expected = self.0.get(&c.id).unwrap_or_else(|| panic!("{what}: unknown checkpoint {}", c.id));
            assert_eq!(&dump_view(&store.at(c.id)?)?, expected, "{what}: checkpoint {}", c.id);
        }
        Ok(listed.len())
    }
}

#[test]
fn retained_checkpoints_read_exactly_while_their_chunks_become_deltas() -> Result<()> {
    let fs = SimFs::new();
    let mut checks = 0;
    let (store, states, deltas) = run(&fs, 90, |store, states, round| {
        if round % 6 == 0 {
            states.check(store, &format!("round {round}"))?;
            // Every chunk of every segment reads, dead deltas too (their bases stay while
            // they are stored: deduplication may hand one to a checkpoint again).
            let report = store.verify()?;
            assert!(report.is_ok(), "round {round}: {:?}", report.problems);
            checks += 1;
        }
        Ok(())
    })?;
    assert!(deltas > 0, "the workload stores chunks as deltas");
    assert_eq!(checks, 15);
    let listed = states.check(&store, "after the run")?;
    assert!(listed >= 10, "{listed} checkpoints retained");
    let report = store.verify()?;
    assert!(report.is_ok(), "{:?}", report.problems);
    drop(store);
    let store = sim_store(&fs, opts())?;
    states.check(&store, "after reopen")?;
    // Compaction reaches a fixpoint: deltas are not rewritten again and again.
    let again = store.compact()?;
    assert_eq!((again.segments_rewritten, again.chunks_stored_as_delta), (0, 0), "{again:?}");
    Ok(())
}

#[test]
fn a_pinned_checkpoint_keeps_the_bases_of_its_deltas() -> Result<()> {
    let fs = SimFs::new();
    let mut pinned = None;
    let (store, states, deltas) = run(&fs, 150, |store, _, round| {
        if round == 12 {
            let id = store.checkpoints()?.last().map(|c| c.id).unwrap_or(CheckpointId(1));
            store.pin(id, "keep")?;
            pinned = Some(id);
        }
        Ok(())
    })?;
    assert!(deltas > 0);
    let pinned = pinned.unwrap_or_else(|| panic!("never pinned"));
    let expected = states.0.get(&pinned).unwrap_or_else(|| panic!("no state for {pinned}"));
    // Long after the merges that made its chunks deltas, and after every other checkpoint
    // of that time is gone.
    let oldest_other = store.checkpoints()?.iter().map(|c| c.id).filter(|id| *id != pinned).min();
    assert!(oldest_other.is_some_and(|id| id.0 > pinned.0 + 100), "{oldest_other:?}");
    assert_eq!(&dump_view(&store.at(pinned)?)?, expected);
    assert!(store.verify()?.is_ok(), "{:?}", store.verify()?.problems);
    drop(store);
    let store = sim_store(&fs, opts())?;
    store.compact()?;
    assert_eq!(&dump_view(&store.at(pinned)?)?, expected, "after reopen and another compaction");
    Ok(())
}

#[test]
fn a_damaged_delta_chunk_is_reported_and_never_read_as_data() -> Result<()> {
    let fs = SimFs::new();
    let (store, states, deltas) = run(&fs, 40, |_, _, _| Ok(()))?;
    assert!(deltas > 0);
    drop(store);
    // The first delta chunk on disk.
    let (name, offset, len) = fs
        .files()
        .into_iter()
        .filter(|f| f.starts_with("segments/") && f.ends_with(".seg"))
        .find_map(|f| {
            let bytes = fs.file(&f)?;
            let (_, chunks) = decode_segment(&bytes).ok()?;
            let c = chunks.into_iter().find(|c| c.codec == Codec::Delta)?;
            Some((f, c.offset as usize, c.stored_len as usize))
        })
        .unwrap_or_else(|| panic!("no delta chunk on disk"));
    // Its base hash, its ops, its inserted bytes: some bytes of each.
    let step = (len / 48).max(1);
    let mut damaged = 0;
    for at in (offset..offset + len).step_by(step) {
        let image = fs.crash_image(CrashMode::KeepUnsynced);
        assert!(image.corrupt(&name, |b| b[at] ^= 0x5a));
        let store = sim_store(&image, opts())?;
        let mut failed = 0;
        for c in store.checkpoints()? {
            match store.at(c.id).and_then(|v| dump_view(&v)) {
                Ok(got) => assert_eq!(Some(&got), states.0.get(&c.id), "byte {at}: checkpoint {} read wrong", c.id),
                Err(e) => {
                    assert!(matches!(e, cairn::Error::Corrupted { .. }), "byte {at}: {e}");
                    failed += 1;
                }
            }
        }
        assert!(failed > 0, "byte {at}: the damaged delta is needed by some checkpoint");
        assert!(!store.verify()?.is_ok(), "byte {at}: verify finds the damage");
        damaged += 1;
    }
    assert!(damaged >= 10);
    Ok(())
}

#[test]
fn a_damaged_candidate_is_left_as_it_is_and_the_compaction_goes_on() -> Result<()> {
    let fs = SimFs::new();
    let store = sim_store(&fs, opts())?;
    let t = store.table("state")?;
    for id in 0..KEYS {
        t.put(&key16(id), &value100(id, 0))?;
    }
    store.checkpoint(b"load")?;
    for round in 1..=7 {
        for id in (round..KEYS).step_by(53) {
            t.put(&key16(id), &value100(id, round))?;
        }
        store.checkpoint(&round.to_le_bytes())?;
    }
    // Once the merge has replaced a slice of the load's chunks, and before the GC plans them
    // as deltas, every entries chunk of the load's segment is damaged (not its run index: a
    // mark that cannot read what is live must stop).
    let load = "segments/0000000000000001.seg";
    let report = store.compact_with_hook(&Retention::keep_last(10), |step| {
        if step == cairn::CompactStep::Merged {
            let (_, chunks) = decode_segment(&fs.file(load).unwrap_or_default())
                .unwrap_or_else(|e| panic!("the load's segment: {e}"));
            let entries: Vec<_> = chunks.into_iter().filter(|c| c.kind == cairn::format::ChunkKind::Entries).collect();
            assert!(entries.len() > 10);
            assert!(fs.corrupt(load, |b| {
                for c in &entries {
                    b[(c.offset + u64::from(c.stored_len) / 2) as usize] ^= 0x5a;
                }
            }));
        }
        Ok(())
    })?;
    assert!(report.slices_merged > 0, "{report:?}");
    assert_eq!(report.chunks_stored_as_delta, 0, "nothing planned from damaged chunks: {report:?}");
    assert!(!store.verify()?.is_ok(), "verify still reports the damage");
    Ok(())
}

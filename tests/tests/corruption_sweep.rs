//! Corruption sweep over a store of about 1 MiB (several checkpoints, a rollback branch, a
//! compaction): 2,000 single-bit flips at random places, truncation of every object at every
//! 4 KiB boundary, garbage 512-byte sectors, and a sector copied to another place or object.
//! After each: opening and reading every retained checkpoint must give a typed error or
//! exactly the right data (G3, G4); `verify` must flag every damage that open and reads did
//! not (no corruption passes unnoticed unless it is harmless). Prints the counts.

use cairn::storage::{CrashMode, SimFs};
use cairn::{CheckpointId, Error, Options, Result, Retention};
use cairn_tests::{dump_view, key16, sim_store, value100, Dump};
use std::collections::BTreeMap;

fn opts() -> Options {
    Options::new().chunk_target_bytes(4096).retention(Retention::keep_all())
}

/// Build the store and return every checkpoint's content.
fn build(fs: &SimFs) -> Result<BTreeMap<CheckpointId, Dump>> {
    let store = sim_store(fs, opts())?;
    let t = store.table("state")?;
    for id in 0..6000u64 {
        t.put(&key16(id), &value100(id, 0))?;
    }
    store.checkpoint(b"load")?;
    for round in 1..=4u64 {
        for n in 0..600u64 {
            let id = (n * 7919 + round * 31) % 6000;
            t.put(&key16(id), &value100(id, round))?;
        }
        store.checkpoint(&round.to_le_bytes())?;
    }
    let first = store.checkpoints()?.first().map(|c| c.id).unwrap_or(CheckpointId(1));
    store.rollback(first)?;
    t.put(b"branch", b"b")?;
    store.checkpoint(b"branch")?;
    store.compact_with(&Retention::keep_all())?;
    let mut states = BTreeMap::new();
    for c in store.checkpoints()? {
        states.insert(c.id, dump_view(&store.at(c.id)?)?);
    }
    Ok(states)
}

fn typed(e: &Error) -> bool {
    matches!(e, Error::Corrupted { .. } | Error::UnsupportedVersion { .. } | Error::NotFound(_))
}

/// Open the damaged disk and read every checkpoint: Ok(true) if all read right, Ok(false) if
/// a typed error stopped something; panics on wrong data or an untyped error.
fn check(disk: &SimFs, states: &BTreeMap<CheckpointId, Dump>, what: &str) -> bool {
    let store = match sim_store(disk, opts()) {
        Ok(s) => s,
        Err(e) => {
            assert!(typed(&e), "{what}: open: untyped error {e:?}");
            return false;
        }
    };
    let mut clean = true;
    for (id, expected) in states {
        match store.at(*id).and_then(|v| dump_view(&v)) {
            Ok(state) => assert!(state == *expected, "{what}: checkpoint {id} returned wrong data"),
            Err(e) => {
                assert!(typed(&e), "{what}: checkpoint {id}: untyped error {e:?}");
                clean = false;
            }
        }
    }
    if clean {
        // Nothing noticed on the read path: the damage must be harmless or flagged by verify
        // (e.g. a byte in a chunk no retained checkpoint reads).
        let report = store.verify().unwrap_or_else(|e| panic!("{what}: verify: {e}"));
        return report.is_ok();
    }
    false
}

#[test]
fn every_injected_corruption_is_detected_or_harmless() -> Result<()> {
    let fs = SimFs::new();
    let states = build(&fs)?;
    let files: Vec<(String, usize)> =
        fs.files().into_iter().map(|f| (f.clone(), fs.file(&f).map_or(0, |d| d.len()))).collect();
    let total: usize = files.iter().map(|(_, n)| n).sum();
    assert!(total > 900_000, "store of {total} bytes");
    let mut rng = 0x1234_5678_9abc_def1u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    // Pick a byte uniformly over the whole store.
    let pick = |next: &mut dyn FnMut() -> u64| {
        let mut at = (next() % total as u64) as usize;
        for (name, len) in &files {
            if at < *len {
                return (name.clone(), at);
            }
            at -= len;
        }
        unreachable!("offset within the total")
    };
    let (mut tried, mut detected, mut harmless) = (0u64, 0u64, 0u64);
    let mut tally = |ok: bool| {
        tried += 1;
        if ok {
            harmless += 1
        } else {
            detected += 1
        }
    };

    let flips = if cairn_tests::stress() { 20_000 } else { 2_000 };
    for i in 0..flips {
        let (name, at) = pick(&mut next);
        let bit = next() % 8;
        let disk = fs.crash_image(CrashMode::KeepUnsynced);
        disk.corrupt(&name, |d| d[at] ^= 1 << bit);
        let ok = check(&disk, &states, &format!("flip {i}: bit {bit} of byte {at} of {name}"));
        assert!(!ok, "flip {i} in {name} at {at} went unnoticed");
        tally(ok);
    }
    for (name, len) in &files {
        for cut in (0..*len).step_by(4096) {
            let disk = fs.crash_image(CrashMode::KeepUnsynced);
            disk.corrupt(name, |d| d.truncate(cut));
            let ok = check(&disk, &states, &format!("{name} truncated at {cut}"));
            assert!(!ok, "truncating {name} at {cut} went unnoticed");
            tally(ok);
        }
    }
    for i in 0..200 {
        let (name, at) = pick(&mut next);
        let sector = at / 512 * 512;
        let garbage: Vec<u8> = (0..512).map(|_| next() as u8).collect();
        let disk = fs.crash_image(CrashMode::KeepUnsynced);
        disk.corrupt(&name, |d| {
            let end = (sector + 512).min(d.len());
            d[sector..end].copy_from_slice(&garbage[..end - sector]);
        });
        tally(check(&disk, &states, &format!("garbage sector {i} at {sector} of {name}")));
    }
    for i in 0..200 {
        let (from, from_at) = pick(&mut next);
        let (to, to_at) = pick(&mut next);
        let source = fs.file(&from).unwrap_or_default();
        let (src, dst) = (from_at / 512 * 512, to_at / 512 * 512);
        let disk = fs.crash_image(CrashMode::KeepUnsynced);
        disk.corrupt(&to, |d| {
            let n = 512.min(d.len() - dst).min(source.len() - src);
            d[dst..dst + n].copy_from_slice(&source[src..src + n]);
        });
        // Copying a sector onto an identical one changes nothing: harmless by definition.
        tally(check(&disk, &states, &format!("sector {i}: {from}@{src} copied onto {to}@{dst}")));
    }
    cairn_tests::report(
        "corruption sweep",
        &format!("{total} bytes, {tried} corruptions tried, {detected} detected, {harmless} harmless, 0 wrong data"),
    );
    Ok(())
}

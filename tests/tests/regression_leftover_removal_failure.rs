//! Regression (found by review): open ignored a failure to delete the leftovers of an
//! interrupted checkpoint and stayed writable. The next checkpoint then raised HEAD's
//! high-water mark past the leftover's id, so after a crash the leftover manifest counted as
//! committed. Now such a store opens poisoned: readable, refusing writes until a reopen
//! succeeds in removing the leftovers.

use cairn::storage::{CrashMode, SimFs};
use cairn::{Error, Result};
use cairn_tests::{dump, sim_store, tiny_chunks};

#[test]
fn a_failed_leftover_removal_poisons_instead_of_committing_it_later() -> Result<()> {
    let fs = SimFs::new();
    let committed = {
        let store = sim_store(&fs, tiny_chunks())?;
        store.table("t")?.put(b"k", b"committed")?;
        store.checkpoint(b"1")?;
        let committed = dump(&store)?;
        store.table("t")?.put(b"k", b"never committed")?;
        // Crash just before HEAD is renamed: segment and manifest 2 are leftovers.
        let start = fs.ops();
        let probe = fs.crash_image(CrashMode::KeepUnsynced);
        let probe_store = sim_store(&probe, tiny_chunks())?;
        probe_store.table("t")?.put(b"k", b"never committed")?;
        let before = probe.ops();
        probe_store.checkpoint(b"2")?;
        let rename = probe.first_op_after(before, "rename HEAD").unwrap_or_else(|| panic!("no HEAD rename"));
        fs.fail_at(start + (rename - before), true);
        assert!(store.checkpoint(b"2").is_err());
        committed
    };
    let disk = fs.crash_image(CrashMode::KeepUnsynced);
    assert!(disk.files().iter().any(|f| f.ends_with("0000000000000002.man")), "a leftover manifest");

    // Open with the leftover manifest's removal failing.
    let probe = disk.crash_image(CrashMode::KeepUnsynced);
    drop(sim_store(&probe, tiny_chunks())?);
    let op = probe
        .first_op_after(0, "remove manifests/0000000000000002.man")
        .unwrap_or_else(|| panic!("open never removed the leftover"));
    disk.fail_at(op, false);
    let store = sim_store(&disk, tiny_chunks())?;
    assert_eq!(dump(&store)?, committed, "reads still work");
    assert!(matches!(store.checkpoint(b"3"), Err(Error::Poisoned(_))), "writes are refused");
    drop(store);

    // A clean reopen removes the leftover; the next checkpoint is the only one after 1.
    let store = sim_store(&disk, tiny_chunks())?;
    store.table("t")?.put(b"k", b"three")?;
    store.checkpoint(b"3")?;
    drop(store);
    let store = sim_store(&disk.crash_image(CrashMode::DropUnsynced), tiny_chunks())?;
    assert_eq!(store.table("t")?.get(b"k")?, Some(b"three".to_vec()));
    let metas: Vec<Vec<u8>> = store.checkpoints()?.into_iter().map(|c| c.metadata).collect();
    assert_eq!(metas, vec![b"1".to_vec(), b"3".to_vec()], "the leftover never became a checkpoint");
    Ok(())
}

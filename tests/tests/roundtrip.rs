//! Round trips: put, checkpoint, reopen, get/range/prefix; typed tables; reads at older ids;
//! rollback with a branch; deduplication visible in `chunks_reused`; compression, and a store
//! reopened with another compression than it was written with.

use cairn::{CheckpointId, Compression, Error, Options, Result, Retention, Store};
use cairn_tests::{dump, dump_view, tiny_chunks, Dump, TempDir};
use std::collections::BTreeMap;

#[test]
fn put_checkpoint_reopen_get_range_prefix() -> Result<()> {
    let dir = TempDir::new("roundtrip");
    {
        let store = Store::open_with(dir.path(), tiny_chunks())?;
        assert!(store.head()?.is_none());
        let t = store.table("words")?;
        for i in 0..500u32 {
            t.put(format!("w{i:04}").as_bytes(), &i.to_le_bytes())?;
        }
        t.delete(b"w0007")?;
        let info = store.checkpoint(b"offset=500")?;
        assert_eq!(info.id, CheckpointId(1));
        assert_eq!(info.parent, None);
        assert_eq!(info.dirty_keys, 499);
        assert!(info.chunks_new > 10, "tiny chunks: {}", info.chunks_new);
    }
    let store = Store::open_with(dir.path(), tiny_chunks())?;
    assert_eq!(store.head()?.map(|h| h.metadata), Some(b"offset=500".to_vec()));
    let t = store.table("words")?;
    assert_eq!(t.len()?, 499);
    assert_eq!(t.get(b"w0042")?, Some(42u32.to_le_bytes().to_vec()));
    assert_eq!(t.get(b"w0007")?, None);
    let range = t.range(&b"w0010"[..]..&b"w0013"[..])?;
    assert_eq!(
        range.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        vec![b"w0010".to_vec(), b"w0011".to_vec(), b"w0012".to_vec()]
    );
    assert_eq!(t.prefix(b"w012")?.len(), 10);
    assert_eq!(t.prefix(b"")?.len(), 499);
    assert!(t.range(&b"z"[..]..&b"a"[..])?.is_empty(), "an inverted range is empty, not a panic");
    Ok(())
}

#[test]
fn typed_tables_round_trip_structs() -> Result<()> {
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Window {
        count: u64,
        sum: i64,
        label: String,
    }
    let dir = TempDir::new("typed");
    {
        let store = Store::open(dir.path())?;
        let windows = store.typed::<(String, u32), Window>("windows")?;
        windows.put(&("eu".into(), 7), &Window { count: 3, sum: -4, label: "a".into() })?;
        windows.put(&("us".into(), 1), &Window { count: 1, sum: 9, label: "b".into() })?;
        assert!(windows.delete(&("us".into(), 1))?);
        store.checkpoint(&[])?;
    }
    let store = Store::open(dir.path())?;
    let windows = store.typed::<(String, u32), Window>("windows")?;
    assert_eq!(windows.get(&("eu".into(), 7))?, Some(Window { count: 3, sum: -4, label: "a".into() }));
    assert_eq!(windows.get(&("us".into(), 1))?, None);
    assert_eq!(windows.iter_all()?.len(), 1);
    let wrong = store.typed::<u8, u8>("windows")?;
    assert!(matches!(wrong.iter_all(), Err(Error::InvalidArgument(_))), "a type mismatch is a typed error");
    Ok(())
}

#[test]
fn reads_at_older_ids_and_rollback_starts_a_branch() -> Result<()> {
    let dir = TempDir::new("branch");
    let store = Store::open_with(dir.path(), tiny_chunks())?;
    let t = store.table("t")?;
    t.put(b"a", b"1")?;
    let c1 = store.checkpoint(b"1")?;
    t.put(b"a", b"2")?;
    t.put(b"b", b"2")?;
    let c2 = store.checkpoint(b"2")?;
    t.delete(b"a")?;
    let c3 = store.checkpoint(b"3")?;
    let at2 = dump_view(&store.at(c2.id)?)?;

    assert_eq!(store.at(c1.id)?.get("t", b"a")?, Some(b"1".to_vec()));
    assert_eq!(store.at(c1.id)?.get("t", b"b")?, None);
    assert_eq!(store.at(c3.id)?.get("t", b"a")?, None);

    t.put(b"uncheckpointed", b"x")?;
    let back = store.rollback(c1.id)?;
    assert_eq!(back.metadata, b"1");
    assert_eq!(t.get(b"uncheckpointed")?, None, "rollback discards uncheckpointed writes");
    assert_eq!(t.get(b"a")?, Some(b"1".to_vec()));
    t.put(b"c", b"branch")?;
    let c4 = store.checkpoint(b"4")?;
    assert_eq!(c4.parent, Some(c1.id), "the next checkpoint's parent is the rollback target");
    assert!(c4.id > c3.id, "ids are never reused");

    // Both branches stay readable, exactly as committed, also after a reopen.
    drop((t, store));
    let store = Store::open_with(dir.path(), tiny_chunks())?;
    assert_eq!(store.head()?.map(|h| h.id), Some(c4.id), "a rollback is durable");
    assert_eq!(dump_view(&store.at(c2.id)?)?, at2);
    assert_eq!(store.at(c4.id)?.get("t", b"c")?, Some(b"branch".to_vec()));
    assert_eq!(store.at(c3.id)?.get("t", b"b")?, Some(b"2".to_vec()));
    let chain: Vec<_> = store.checkpoints()?.iter().map(|c| (c.id, c.parent)).collect();
    assert_eq!(chain, vec![(c1.id, None), (c2.id, Some(c1.id)), (c3.id, Some(c2.id)), (c4.id, Some(c1.id))]);
    assert!(matches!(store.at(CheckpointId(99)), Err(Error::NotFound(_))));
    assert!(matches!(store.rollback(CheckpointId(0)), Err(Error::NotFound(_))));
    assert!(matches!(store.at(c1.id)?.get("nope", b"a"), Err(Error::NotFound(_))));
    Ok(())
}

#[test]
fn identical_content_is_stored_once() -> Result<()> {
    let dir = TempDir::new("dedup");
    let store = Store::open_with(dir.path(), tiny_chunks())?;
    let a = store.table("a")?;
    let b = store.table("b")?;
    for i in 0..200u32 {
        a.put(&i.to_be_bytes(), b"same value in both tables")?;
    }
    let first = store.checkpoint(&[])?;
    assert_eq!(first.chunks_reused, 0);
    // The same entries written to another table: every chunk, run index included, is reused.
    for i in 0..200u32 {
        b.put(&i.to_be_bytes(), b"same value in both tables")?;
    }
    let second = store.checkpoint(&[])?;
    assert_eq!(second.chunks_new, 0, "nothing new to store");
    assert_eq!(second.chunks_reused, first.chunks_new);
    let stats = store.stats()?;
    assert_eq!(stats.segments, 1, "a checkpoint with no new chunk writes no segment");
    assert_eq!(stats.chunks, first.chunks_new);
    drop((a, b, store));
    let store = Store::open_with(dir.path(), tiny_chunks())?;
    assert_eq!(store.table("b")?.len()?, 200);
    Ok(())
}

#[test]
fn an_empty_table_and_an_empty_checkpoint_are_recorded() -> Result<()> {
    let dir = TempDir::new("empty");
    {
        let store = Store::open(dir.path())?;
        store.table("empty")?;
        let info = store.checkpoint(b"m")?;
        assert_eq!(info.dirty_keys, 0);
        assert_eq!(info.chunks_new, 0);
        let again = store.checkpoint(b"m2")?;
        assert_eq!(again.parent, Some(info.id));
    }
    let store = Store::open(dir.path())?;
    assert_eq!(store.tables()?, vec!["empty".to_string()]);
    assert_eq!(dump(&store)?.get("empty").map(|t| t.len()), Some(0));
    Ok(())
}

#[test]
fn compression_round_trips() -> Result<()> {
    let dir = TempDir::new("lz4");
    let opts = || Options::new().compression(Compression::Lz4).chunk_target_bytes(4096);
    let before;
    {
        let store = Store::open_with(dir.path(), opts())?;
        let t = store.table("t")?;
        for i in 0..2000u32 {
            t.put(&i.to_be_bytes(), format!("value {} repeated repeated repeated", i % 7).as_bytes())?;
        }
        let info = store.checkpoint(&[])?;
        assert!(info.bytes_written < 2000 * 30, "compressible values shrink: {}", info.bytes_written);
        before = dump(&store)?;
    }
    let store = Store::open_with(dir.path(), opts())?;
    assert_eq!(dump(&store)?, before);
    assert!(store.verify()?.is_ok());
    Ok(())
}

/// Compression is a writer's choice, chunk by chunk: a store written with LZ4 reopens without
/// it (and back), its compressed chunks read and merged by a writer that stores plain ones,
/// and every retained checkpoint reads back exact throughout.
#[test]
fn a_store_reads_and_merges_its_chunks_whatever_compression_later_opens_use() -> Result<()> {
    let dir = TempDir::new("mixed-codecs");
    let opts =
        |compression| Options::new().compression(compression).max_runs_per_table(2).retention(Retention::keep_last(2));
    // Rewrites every key (compressible values), checkpoints, and records the state; whether
    // the checkpoint wrote fewer bytes than the keys and values it holds (it compressed them).
    let round = |store: &Store, n: u32, states: &mut BTreeMap<CheckpointId, Dump>| -> Result<bool> {
        let t = store.table("t")?;
        let mut payload = 0;
        for i in 0..500u32 {
            let value = format!("round {n}, value {} repeated repeated", i % 11);
            payload += 4 + value.len() as u64;
            t.put(&i.to_be_bytes(), value.as_bytes())?;
        }
        let info = store.checkpoint(&[])?;
        states.insert(info.id, dump(store)?);
        Ok(info.bytes_written < payload)
    };
    // Compacts, recording the merged checkpoint's state; whether it merged.
    let compact = |store: &Store, states: &mut BTreeMap<CheckpointId, Dump>| -> Result<bool> {
        let report = store.compact()?;
        if let Some(merged) = report.merged_into {
            states.insert(merged, dump(store)?);
        }
        Ok(report.runs_merged > 0)
    };
    let check = |store: &Store, states: &BTreeMap<CheckpointId, Dump>| -> Result<()> {
        for c in store.checkpoints()? {
            assert!(dump_view(&store.at(c.id)?)? == states[&c.id], "checkpoint {} reads differently", c.id);
        }
        let report = store.verify()?;
        assert!(report.is_ok(), "{:?}", report.problems);
        Ok(())
    };
    let mut states = BTreeMap::new();
    {
        let store = Store::open_with(dir.path(), opts(Compression::Lz4))?;
        assert!(round(&store, 1, &mut states)? && round(&store, 2, &mut states)?, "LZ4 did not shrink the chunks");
    }
    {
        let store = Store::open_with(dir.path(), opts(Compression::None))?;
        check(&store, &states)?;
        assert!(!round(&store, 3, &mut states)?, "chunks shrank without compression");
        assert!(compact(&store, &mut states)?, "nothing merged");
        check(&store, &states)?;
    }
    let store = Store::open_with(dir.path(), opts(Compression::Lz4))?;
    check(&store, &states)?;
    round(&store, 4, &mut states)?;
    compact(&store, &mut states)?;
    check(&store, &states)
}

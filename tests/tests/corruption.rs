//! Corruption: a flipped byte or a truncation in each kind of object (store marker, HEAD,
//! manifest, segment chunk table, chunk) gives a typed error naming the object, or is
//! harmless; never a panic and never wrong data, with plain chunks and with LZ4-compressed
//! ones. Foreign files are ignored or rejected.

use cairn::storage::{CrashMode, SimFs};
use cairn::{CheckpointId, Compression, Error, Options, Result, Store};
use cairn_tests::{dump, dump_view, segment_files, sim_store, tiny_chunks, Dump, TempDir};

fn build(fs: &SimFs) -> Result<Dump> {
    build_with(fs, tiny_chunks())
}

fn build_with(fs: &SimFs, opts: Options) -> Result<Dump> {
    let store = sim_store(fs, opts)?;
    let t = store.table("t")?;
    for i in 0..30u32 {
        t.put(&i.to_be_bytes(), format!("value-{i}").as_bytes())?;
    }
    store.checkpoint(b"one")?;
    for i in 0..10u32 {
        t.put(&i.to_be_bytes(), b"second")?;
    }
    store.checkpoint(b"two")?;
    dump(&store)
}

fn is_typed_corruption(e: &Error) -> bool {
    matches!(e, Error::Corrupted { .. } | Error::UnsupportedVersion { .. } | Error::NotFound(_))
}

/// Apply `damage` to a copy of `path` on `fs` for every position; opening must fail with a
/// typed error or recover exactly `expected`.
fn sweep(
    (fs, opts): (&SimFs, &Options),
    path: &str,
    expected: &Dump,
    damage: impl Fn(&mut Vec<u8>, usize),
    positions: usize,
) -> usize {
    let mut detected = 0;
    for pos in 0..positions {
        let copy = fs.crash_image(CrashMode::KeepUnsynced);
        assert!(copy.corrupt(path, |d| damage(d, pos)), "{path} exists");
        match sim_store(&copy, opts.clone()) {
            Err(e) => {
                assert!(is_typed_corruption(&e), "{path} at {pos}: untyped error {e:?}");
                detected += 1;
            }
            Ok(store) => {
                let state = dump(&store).unwrap_or_else(|e| panic!("{path} at {pos}: {e}"));
                assert_eq!(&state, expected, "{path} damaged at {pos}: wrong data returned");
                let report = store.verify().unwrap_or_else(|e| panic!("{e}"));
                if !report.is_ok() {
                    detected += 1;
                }
            }
        }
    }
    detected
}

/// The stores the sweeps damage: chunks stored plain, and compressed with LZ4 (whose segments
/// must come out smaller, or the second store tests nothing new).
fn swept_stores() -> Result<Vec<(SimFs, Options, Dump)>> {
    let segment_bytes =
        |fs: &SimFs| -> usize { segment_files(fs).iter().map(|f| fs.file(f).map_or(0, |d| d.len())).sum() };
    let mut stores = Vec::new();
    for opts in [tiny_chunks(), tiny_chunks().compression(Compression::Lz4)] {
        let fs = SimFs::new();
        let expected = build_with(&fs, opts.clone())?;
        stores.push((fs, opts, expected));
    }
    let (plain, compressed) = (segment_bytes(&stores[0].0), segment_bytes(&stores[1].0));
    assert!(compressed < plain, "LZ4 segments {compressed} bytes, plain {plain}");
    Ok(stores)
}

#[test]
fn every_flipped_byte_of_every_object_is_detected_or_harmless() -> Result<()> {
    for (fs, opts, expected) in swept_stores()? {
        for path in fs.files() {
            let len = fs.file(&path).map_or(0, |d| d.len());
            let detected = sweep((&fs, &opts), &path, &expected, |d, i| d[i] ^= 0x20, len);
            // The marker, HEAD and the head manifest are read at open; chunks and segment
            // tables at open or by verify. Every byte of them is covered by a check.
            assert_eq!(detected, len, "{path}: {} of {len} flips went unnoticed", len - detected);
        }
    }
    Ok(())
}

#[test]
fn every_truncation_of_every_object_is_detected() -> Result<()> {
    for (fs, opts, expected) in swept_stores()? {
        for path in fs.files() {
            let len = fs.file(&path).map_or(0, |d| d.len());
            let detected = sweep((&fs, &opts), &path, &expected, |d, cut| d.truncate(cut), len);
            assert_eq!(detected, len, "{path}: a truncation went unnoticed");
        }
    }
    Ok(())
}

#[test]
fn a_corrupt_older_manifest_is_named_by_verify_and_at() -> Result<()> {
    let fs = SimFs::new();
    let expected = build(&fs)?;
    assert!(fs.corrupt("manifests/0000000000000001.man", |d| d[40] ^= 1));
    let store = sim_store(&fs, tiny_chunks())?;
    assert_eq!(dump(&store)?, expected, "the head does not need the older manifest");
    let err = store.at(CheckpointId(1)).err();
    assert!(
        matches!(&err, Some(Error::Corrupted { object, .. }) if object.contains("0000000000000001.man")),
        "{err:?}"
    );
    let report = store.verify()?;
    assert!(report.problems.iter().any(|p| p.object.contains("0000000000000001.man")), "{:?}", report.problems);
    Ok(())
}

#[test]
fn a_corrupt_chunk_is_named_when_read_at_an_older_checkpoint() -> Result<()> {
    let fs = SimFs::new();
    build(&fs)?;
    let seg = "segments/0000000000000001.seg";
    // Byte 30 lies in the first chunk of the first segment.
    assert!(fs.corrupt(seg, |d| d[30] ^= 0xff));
    let result = sim_store(&fs, tiny_chunks());
    let err = result.err();
    assert!(matches!(&err, Some(Error::Corrupted { object, .. }) if object.contains(seg)), "{err:?}");
    Ok(())
}

#[test]
fn foreign_files_are_ignored_or_rejected_on_the_real_filesystem() -> Result<()> {
    let dir = TempDir::new("foreign");
    let expected = {
        let store = Store::open(dir.path())?;
        store.table("t")?.put(b"k", b"v")?;
        store.checkpoint(b"m")?;
        dump_view(&store.at(CheckpointId(1))?)?
    };
    // Files cairn did not name are never opened or deleted.
    std::fs::write(dir.path().join("segments/notes.txt"), b"hello")
        .map_err(|e| Error::InvalidArgument(e.to_string()))?;
    // A garbage file under a manifest name that HEAD's high-water mark covers is rejected.
    std::fs::write(dir.path().join("manifests/0000000000000001.man"), b"garbage")
        .map_err(|e| Error::InvalidArgument(e.to_string()))?;
    let err = Store::open(dir.path()).err();
    assert!(matches!(&err, Some(Error::Corrupted { object, .. }) if object.contains(".man")), "{err:?}");
    assert!(dir.path().join("segments/notes.txt").exists());
    // A file from a newer version is UnsupportedVersion.
    let mut head = std::fs::read(dir.path().join("HEAD")).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    head[8] = 99;
    std::fs::write(dir.path().join("HEAD"), head).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    assert!(matches!(Store::open(dir.path()), Err(Error::UnsupportedVersion { found: 99, .. })));
    assert!(!expected.is_empty());
    Ok(())
}

#[test]
fn reads_are_bounded_by_options_validation() {
    let dir = TempDir::new("opts");
    assert!(matches!(
        Store::open_with(dir.path(), Options::new().chunk_target_bytes(1)),
        Err(Error::InvalidArgument(_))
    ));
    assert!(!dir.path().exists(), "invalid options write nothing");
}

#[test]
fn verify_path_names_damage_that_stops_open() -> Result<()> {
    let dir = TempDir::new("verify-path");
    {
        let store = Store::open_with(dir.path(), tiny_chunks())?;
        let t = store.table("t")?;
        for i in 0..50u32 {
            t.put(&i.to_be_bytes(), b"some value")?;
        }
        store.checkpoint(&[])?;
    }
    assert!(Store::verify_path(dir.path())?.is_ok());
    let seg = dir.path().join("segments/0000000000000001.seg");
    let mut bytes = std::fs::read(&seg).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    bytes[40] ^= 0x01;
    std::fs::write(&seg, &bytes).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    assert!(matches!(Store::open(dir.path()), Err(Error::Corrupted { .. })), "the head needs that chunk");
    let report = Store::verify_path(dir.path())?;
    assert!(report.problems.iter().any(|p| p.object.contains("0000000000000001.seg")), "{:?}", report.problems);

    // A torn HEAD is named too, and everything else is still checked.
    std::fs::write(dir.path().join("HEAD"), b"torn").map_err(|e| Error::InvalidArgument(e.to_string()))?;
    let report = Store::verify_path(dir.path())?;
    assert!(report.problems.iter().any(|p| p.object == "HEAD"), "{:?}", report.problems);
    assert_eq!(report.segments, 1);
    Ok(())
}

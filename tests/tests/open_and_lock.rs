//! Opening: the directory layout is created on first use; a second opener gets `Locked`; a
//! path that holds no store is refused without writing anything when creation is off, and a
//! foreign non-empty directory is never adopted.

use cairn::{Error, Options, Result, Store};
use cairn_tests::TempDir;

#[test]
fn a_second_opener_is_refused_while_the_first_lives() -> Result<()> {
    let dir = TempDir::new("lock");
    let first = Store::open(dir.path())?;
    assert!(matches!(Store::open(dir.path()), Err(Error::Locked(_))));
    drop(first);
    Store::open(dir.path())?;
    Ok(())
}

#[test]
fn layout_is_created_with_private_permissions() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("layout");
    let store = Store::open(dir.path())?;
    store.table("t")?.put(b"k", b"v")?;
    store.checkpoint(&[])?;
    for (path, mode) in [("", 0o700), ("segments", 0o700), ("manifests", 0o700), ("HEAD", 0o600), ("CAIRN", 0o600)] {
        let meta = std::fs::metadata(dir.path().join(path)).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        assert_eq!(meta.permissions().mode() & 0o777, mode, "{path}");
    }
    Ok(())
}

#[test]
fn without_create_a_missing_store_is_not_found_and_nothing_is_written() {
    let dir = TempDir::new("nocreate");
    let opts = Options::new().create_if_missing(false);
    assert!(matches!(Store::open_with(dir.path(), opts.clone()), Err(Error::NotFound(_))));
    assert!(!dir.path().exists());
    std::fs::create_dir(dir.path()).ok();
    assert!(matches!(Store::open_with(dir.path(), opts), Err(Error::NotFound(_))));
    assert_eq!(std::fs::read_dir(dir.path()).map(|d| d.count()).ok(), Some(0), "nothing written");
}

#[test]
fn a_foreign_directory_is_not_adopted() {
    let dir = TempDir::new("foreign-dir");
    std::fs::create_dir(dir.path()).ok();
    std::fs::write(dir.path().join("precious.txt"), b"do not touch").ok();
    assert!(matches!(Store::open(dir.path()), Err(Error::InvalidArgument(_))));
    assert_eq!(std::fs::read_dir(dir.path()).map(|d| d.count()).ok(), Some(1));
}

#[test]
fn read_only_openers_share_the_store_and_change_nothing() -> Result<()> {
    let dir = TempDir::new("readonly");
    {
        let store = Store::open(dir.path())?;
        store.table("t")?.put(b"k", b"v")?;
        store.checkpoint(b"m")?;
    }
    // A leftover of an interrupted put, which a writable open would remove.
    std::fs::write(dir.path().join("segments/0000000000000009.seg.tmp"), b"partial").ok();
    let ro = || Options::new().read_only(true);
    let a = Store::open_with(dir.path(), ro())?;
    let b = Store::open_with(dir.path(), ro())?;
    assert!(matches!(Store::open(dir.path()), Err(Error::Locked(_))), "a writer waits for readers");
    assert_eq!(a.table("t")?.get(b"k")?, Some(b"v".to_vec()));
    assert_eq!(b.head()?.map(|h| h.metadata), Some(b"m".to_vec()));
    assert!(matches!(a.table("t")?.put(b"k", b"x"), Err(Error::ReadOnly)));
    assert!(matches!(a.checkpoint(&[]), Err(Error::ReadOnly)));
    assert!(matches!(a.rollback(cairn::CheckpointId(1)), Err(Error::ReadOnly)));
    assert!(matches!(a.table("missing"), Err(Error::NotFound(_))));
    assert!(a.existing_table("missing")?.is_none());
    assert!(dir.path().join("segments/0000000000000009.seg.tmp").exists(), "read-only removes nothing");
    drop((a, b));
    let writer = Store::open(dir.path())?;
    assert!(matches!(Store::open_with(dir.path(), ro()), Err(Error::Locked(_))), "readers wait for the writer");
    assert!(!dir.path().join("segments/0000000000000009.seg.tmp").exists(), "a writable open cleans up");
    drop(writer);
    let missing = TempDir::new("readonly-missing");
    assert!(matches!(Store::open_with(missing.path(), ro()), Err(Error::NotFound(_))));
    assert!(!missing.path().exists());
    Ok(())
}

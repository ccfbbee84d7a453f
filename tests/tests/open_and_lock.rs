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

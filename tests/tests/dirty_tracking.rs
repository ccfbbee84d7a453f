//! Dirty tracking: a checkpoint consumes exactly the keys written since the previous one; a key
//! written many times is written once; put-then-delete of a key the last checkpoint had is a
//! tombstone; of a key it did not have, nothing.

use cairn::{Result, Store};
use cairn_tests::TempDir;

#[test]
fn a_checkpoint_consumes_exactly_the_dirty_keys() -> Result<()> {
    let dir = TempDir::new("dirty");
    let store = Store::open(dir.path())?;
    let t = store.table("t")?;
    for i in 0..100u32 {
        t.put(&i.to_be_bytes(), b"v0")?;
    }
    assert_eq!(store.checkpoint(&[])?.dirty_keys, 100);
    assert_eq!(store.stats()?.dirty_keys, 0);

    for round in 0..10u32 {
        t.put(&5u32.to_be_bytes(), &round.to_le_bytes())?;
    }
    assert_eq!(store.checkpoint(&[])?.dirty_keys, 1, "a key written ten times is written once");
    assert_eq!(store.checkpoint(&[])?.dirty_keys, 0, "a checkpoint consumes its dirty set");

    t.put(&7u32.to_be_bytes(), b"changed")?;
    t.delete(&7u32.to_be_bytes())?;
    t.put(b"new-key", b"x")?;
    t.delete(b"new-key")?;
    assert!(!t.delete(b"never-there")?);
    let info = store.checkpoint(&[])?;
    assert_eq!(info.dirty_keys, 1, "only the tombstone of key 7 is written");
    drop((t, store));

    let store = Store::open(dir.path())?;
    let t = store.table("t")?;
    assert_eq!(t.len()?, 99);
    assert_eq!(t.get(&7u32.to_be_bytes())?, None, "the tombstone hides the checkpointed value");
    assert_eq!(t.get(&5u32.to_be_bytes())?, Some(9u32.to_le_bytes().to_vec()));
    Ok(())
}

#[test]
fn delete_then_put_of_a_checkpointed_key_writes_the_new_value() -> Result<()> {
    let dir = TempDir::new("dirty2");
    let store = Store::open(dir.path())?;
    let t = store.table("t")?;
    t.put(b"k", b"old")?;
    store.checkpoint(&[])?;
    t.delete(b"k")?;
    t.put(b"k", b"new")?;
    assert_eq!(store.checkpoint(&[])?.dirty_keys, 1);
    drop((t, store));
    let store = Store::open(dir.path())?;
    assert_eq!(store.table("t")?.get(b"k")?, Some(b"new".to_vec()));
    Ok(())
}

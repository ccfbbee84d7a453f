//! Incrementality, on counters: with 100,000 keys of 100-byte values, a checkpoint after
//! 1,000 updates writes at most 2x the dirty payload plus a fixed manifest cost, and the same
//! 1,000 updates over 1,000,000 keys write no more than 10% more.

use cairn::storage::SimFs;
use cairn::{Options, Result};
use cairn_tests::{key16, sim_store, value100};

/// Manifest, HEAD and segment framing allowance.
const FIXED_BYTES: u64 = 8 * 1024;

fn bytes_for_updates(keys: u64, updates: u64) -> Result<(u64, u64)> {
    let fs = SimFs::new();
    let store = sim_store(&fs, Options::new())?;
    let t = store.table("state")?;
    for id in 0..keys {
        t.put(&key16(id), &value100(id, 0))?;
    }
    store.checkpoint(b"load")?;
    // Spread the updates over the whole key space.
    let stride = keys / updates;
    for n in 0..updates {
        let id = n * stride + (n % stride.max(1));
        t.put(&key16(id), &value100(id, 1))?;
    }
    let info = store.checkpoint(b"round")?;
    assert_eq!(info.dirty_keys, updates);
    Ok((info.bytes_written, updates * (16 + 100)))
}

#[test]
fn a_checkpoint_writes_in_proportion_to_what_changed() -> Result<()> {
    let (small, payload) = bytes_for_updates(100_000, 1_000)?;
    assert!(small <= 2 * payload + FIXED_BYTES, "{small} bytes for a payload of {payload}");
    let (large, _) = bytes_for_updates(1_000_000, 1_000)?;
    assert!(large * 10 <= small * 11, "1M keys: {large} bytes vs 100K keys: {small}");
    println!("1,000 updates: payload {payload} B, written {small} B over 100K keys, {large} B over 1M keys");
    Ok(())
}

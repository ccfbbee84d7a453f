//! Periodic checkpoints on an injected clock: the interval, the dirty-bytes threshold, the
//! minimum pause and the timeout, on a store and on a coordinator.

use cairn::storage::SimFs;
use cairn::{CheckpointPolicy, Coordinator, CoordinatorOptions, Error, ManualClock, Options, Periodic, Result, Tick};
use cairn_tests::{sim_store, TempDir};
use std::sync::Arc;
use std::time::Duration;

const S: Duration = Duration::from_secs(1);

#[test]
fn the_policy_decides_from_interval_threshold_and_pause() {
    let p = CheckpointPolicy::every(10 * S).or_dirty_bytes(1000).min_pause(2 * S);
    assert!(!p.is_due(9 * S, Duration::ZERO, None, 0), "before the interval");
    assert!(p.is_due(10 * S, Duration::ZERO, None, 0), "at the interval");
    assert!(p.is_due(S, Duration::ZERO, None, 1000), "at the threshold");
    assert!(!p.is_due(11 * S, Duration::ZERO, Some(10 * S), 5000), "within the pause after the last end");
    assert!(p.is_due(12 * S, Duration::ZERO, Some(10 * S), 0), "after the pause");
    let threshold_only = CheckpointPolicy { interval: None, ..p };
    assert!(!threshold_only.is_due(1000 * S, Duration::ZERO, None, 999));
}

#[test]
fn periodic_checkpoints_follow_the_injected_clock() -> Result<()> {
    let fs = SimFs::new();
    let store = sim_store(&fs, Options::new())?;
    let t = store.table("t")?;
    let clock = Arc::new(ManualClock::new());
    let mut periodic = Periodic::new(CheckpointPolicy::every(10 * S).or_dirty_bytes(10_000), clock.clone());
    t.put(b"k", b"v")?;
    assert!(matches!(periodic.poll(&store, Vec::new)?, Tick::Idle));
    clock.advance(10 * S);
    assert!(matches!(periodic.poll(&store, || b"timer".to_vec())?, Tick::Triggered(_)));
    let info = periodic.finish().ok_or(Error::Closed)??;
    assert_eq!(info.metadata, b"timer");
    // The threshold: 4-byte keys with 100-byte values pass 10,000 dirty bytes at the 97th.
    for i in 0u32..96 {
        t.put(&i.to_be_bytes(), &[0u8; 100])?;
        assert!(matches!(periodic.poll(&store, Vec::new)?, Tick::Idle), "key {i}");
    }
    t.put(b"last", &[0u8; 100])?;
    assert!(store.dirty_bytes()? >= 10_000);
    assert!(matches!(periodic.poll(&store, || b"threshold".to_vec())?, Tick::Triggered(_)));
    assert_eq!(periodic.finish().ok_or(Error::Closed)??.dirty_keys, 97);
    Ok(())
}

/// A checkpoint still running past the timeout is asked to abort; one queued behind another
/// (not writing yet) stops, and its writes stay for the next checkpoint.
#[test]
fn a_periodic_checkpoint_past_its_timeout_is_aborted() -> Result<()> {
    let fs = SimFs::new();
    let store = sim_store(&fs, Options::new().max_checkpoints_in_flight(2))?;
    let t = store.table("t")?;
    t.put(b"a", b"1")?;
    fs.hold_writes();
    let blocking = store.checkpoint_async(b"")?;
    fs.wait_for_held_write();
    t.put(b"b", b"2")?;
    let clock = Arc::new(ManualClock::new());
    let policy = CheckpointPolicy::every(S).timeout(5 * S);
    let mut periodic = Periodic::new(policy, clock.clone());
    clock.advance(S);
    assert!(matches!(periodic.poll(&store, Vec::new)?, Tick::Triggered(_)));
    clock.advance(4 * S);
    assert!(matches!(periodic.poll(&store, Vec::new)?, Tick::Idle));
    clock.advance(S);
    assert!(matches!(periodic.poll(&store, Vec::new)?, Tick::TimedOut));
    fs.release_writes();
    blocking.wait()?;
    assert!(matches!(periodic.finish(), Some(Err(Error::Aborted(_)))));
    assert_eq!(store.stats()?.dirty_keys, 1, "the aborted checkpoint's write is dirty again");
    Ok(())
}

#[test]
fn a_coordinator_triggers_epochs_by_policy() -> Result<()> {
    let dir = TempDir::new("periodic-coord");
    let clock = Arc::new(ManualClock::new());
    let opts = CoordinatorOptions::new(2).store_options(Options::new().sync(false)).clock(clock.clone());
    let (mut coord, shards) = Coordinator::open(dir.path(), opts)?;
    let policy = CheckpointPolicy::every(10 * S).min_pause(3 * S);
    let mut next_epoch = 1;
    let mut next = || {
        let e = next_epoch;
        next_epoch += 1;
        (e, Vec::new())
    };
    assert!(coord.poll_policy(&policy, &mut next)?.is_none());
    clock.advance(10 * S);
    let barriers = coord.poll_policy(&policy, &mut next)?.ok_or(Error::Closed)?;
    assert!(coord.poll_policy(&policy, &mut next)?.is_none(), "one epoch at a time");
    for b in barriers {
        shards[b.shard].checkpoint(&b, b"")?;
    }
    assert_eq!(coord.wait(1)?.epoch, 1);
    clock.advance(10 * S);
    assert!(coord.poll_policy(&policy, &mut next)?.is_some(), "the interval counts from the last trigger");
    Ok(())
}

//! The checkpoint coordinator: aligned global checkpoints over shards, aborts on a shard
//! failure or a timeout, restore of every shard to one epoch, rollback to an epoch, and
//! compaction that keeps exactly what retained global checkpoints name.

use cairn::{
    CheckpointId, Coordinator, CoordinatorOptions, EpochEnd, Error, ManualClock, Options, Outcome, Result, Shard,
};
use cairn_tests::{dump_view, Dump, TempDir};
use std::collections::BTreeMap;
use std::sync::{mpsc, Arc};
use std::time::Duration;

fn opts(shards: usize) -> CoordinatorOptions {
    CoordinatorOptions::new(shards).store_options(Options::new().sync(false))
}

/// Each shard's working state, by shard number.
fn shard_states(shards: &[Shard]) -> Result<Vec<Dump>> {
    shards.iter().map(|s| cairn_tests::dump(s.store())).collect()
}

fn views(coord: &Coordinator, epoch: u64) -> Result<Vec<Dump>> {
    coord.at(epoch)?.iter().map(dump_view).collect()
}

fn put(shard: &Shard, key: &str, value: &str) -> Result<()> {
    shard.store().table("t")?.put(key.as_bytes(), value.as_bytes())
}

enum Msg {
    Put(String, String),
    Barrier(cairn::Barrier),
    /// Reply with the shard's state at this point of its input.
    Snapshot(mpsc::Sender<Dump>),
}

/// Shards on their own threads, barriers delivered in band: each shard's part of the global
/// checkpoint holds exactly the writes before its barrier, though writes after it were
/// already flowing; reopening restores every shard to that epoch.
#[test]
fn a_global_checkpoint_holds_every_shard_at_its_barrier() -> Result<()> {
    let dir = TempDir::new("coord-aligned");
    let (mut coord, shards) = Coordinator::open(dir.path(), opts(3))?;
    assert_eq!(coord.last().epoch, 0, "a new coordinator starts at epoch 0, every shard empty");
    let mut inputs = Vec::new();
    let mut threads = Vec::new();
    for shard in shards {
        let (tx, rx) = mpsc::channel::<Msg>();
        inputs.push(tx);
        threads.push(std::thread::spawn(move || -> Result<()> {
            for msg in rx {
                match msg {
                    Msg::Put(k, v) => put(&shard, &k, &v)?,
                    Msg::Barrier(b) => {
                        drop(shard.checkpoint(&b, format!("shard {} at epoch {}", b.shard, b.epoch).as_bytes())?)
                    }
                    Msg::Snapshot(reply) => {
                        let _ = reply.send(cairn_tests::dump(shard.store())?);
                    }
                }
            }
            Ok(())
        }));
    }
    let send = |i: usize, m: Msg| inputs[i].send(m).map_err(|_| Error::Closed);
    for round in 0..50 {
        for (i, _) in inputs.iter().enumerate() {
            send(i, Msg::Put(format!("k{round}"), format!("v{round}-before")))?;
        }
    }
    let barriers = coord.trigger(1, b"offset=50")?;
    let mut expected = Vec::new();
    for b in barriers {
        send(b.shard, Msg::Barrier(b))?;
        let (tx, rx) = mpsc::channel();
        send(b.shard, Msg::Snapshot(tx))?;
        expected.push(rx.recv().map_err(|_| Error::Closed)?);
    }
    for round in 0..50 {
        for (i, _) in inputs.iter().enumerate() {
            send(i, Msg::Put(format!("k{round}"), "after".into()))?;
        }
    }
    let global = coord.wait(1)?;
    assert_eq!(global.epoch, 1);
    assert_eq!(global.metadata, b"offset=50");
    assert_eq!(global.shards[2].metadata, b"shard 2 at epoch 1");
    assert_eq!(views(&coord, 1)?, expected, "each shard's part is its state at its barrier");
    assert_eq!(coord.recent().last().map(|r| r.outcome.clone()), Some(Outcome::Completed));
    drop(inputs);
    for t in threads {
        t.join().map_err(|_| Error::Closed)??;
    }
    drop(coord);
    let (coord, shards) = Coordinator::open(dir.path(), opts(3))?;
    assert_eq!(coord.last().epoch, 1);
    assert_eq!(shard_states(&shards)?, expected, "every shard restored to epoch 1");
    Ok(())
}

/// A shard that fails its checkpoint aborts the epoch; the others' checkpoints of it are
/// garbage; reopening restores every shard to the previous global checkpoint.
#[test]
fn a_failing_shard_aborts_the_epoch_and_the_previous_one_restores() -> Result<()> {
    let dir = TempDir::new("coord-fail");
    let (mut coord, shards) = Coordinator::open(dir.path(), opts(3))?;
    for s in &shards {
        put(s, "a", "1")?;
    }
    for b in coord.trigger(1, b"")? {
        shards[b.shard].checkpoint(&b, b"")?;
    }
    coord.wait(1)?;
    let at_one = shard_states(&shards)?;
    for s in &shards {
        put(s, "a", "2")?;
    }
    let barriers = coord.trigger(2, b"")?;
    shards[0].checkpoint(&barriers[0], b"")?.wait()?;
    shards[1].checkpoint(&barriers[1], b"")?.wait()?;
    // Shard 2 fails: metadata past the bound is refused.
    assert!(shards[2].checkpoint(&barriers[2], &vec![0u8; 2 << 20]).is_err());
    let err = coord.wait(2).expect_err("epoch 2 must abort");
    assert!(matches!(&err, Error::Aborted(reason) if reason.contains("shard 2")), "{err}");
    assert_eq!(coord.last().epoch, 1);
    assert!(matches!(coord.recent().last().map(|r| &r.outcome), Some(Outcome::Aborted(_))));

    drop((coord, shards));
    let (coord, shards) = Coordinator::open(dir.path(), opts(3))?;
    assert_eq!(coord.last().epoch, 1);
    assert_eq!(shard_states(&shards)?, at_one, "shards 0 and 1 rolled back to epoch 1");
    let journal = coord.journal()?;
    assert!(journal.iter().any(|e| e.reason.contains("epoch 2 aborted")), "{journal:?}");
    Ok(())
}

/// A shard that never reaches its barrier: the epoch times out on the coordinator's clock;
/// the next epoch commits, and a late report of the timed-out one is ignored.
#[test]
fn an_epoch_times_out_on_the_coordinators_clock() -> Result<()> {
    let dir = TempDir::new("coord-timeout");
    let clock = Arc::new(ManualClock::new());
    let (mut coord, shards) =
        Coordinator::open(dir.path(), opts(2).timeout(Duration::from_secs(10)).clock(clock.clone()))?;
    let barriers = coord.trigger(1, b"")?;
    shards[0].checkpoint(&barriers[0], b"")?.wait()?;
    assert!(coord.poll()?.is_empty());
    clock.advance(Duration::from_secs(9));
    assert!(coord.poll()?.is_empty(), "not yet");
    clock.advance(Duration::from_secs(1));
    let ended = coord.poll()?;
    assert!(
        matches!(&ended[..], [EpochEnd::Aborted { epoch: 1, reason }] if reason.contains("timed out")),
        "{ended:?}"
    );
    // The straggler arrives late: ignored.
    shards[1].checkpoint(&barriers[1], b"")?.wait()?;
    assert!(coord.poll()?.is_empty());
    for b in coord.trigger(2, b"")? {
        shards[b.shard].checkpoint(&b, b"")?;
    }
    assert_eq!(coord.wait(2)?.epoch, 2);
    assert!(coord.trigger(2, b"").is_err(), "epochs only move forward");
    Ok(())
}

/// A crash after the shards committed an epoch but before the global record did: the next
/// open rolls every shard back to the last global checkpoint.
#[test]
fn shards_ahead_of_the_last_global_checkpoint_are_rolled_back_at_open() -> Result<()> {
    let dir = TempDir::new("coord-crash");
    let (mut coord, shards) = Coordinator::open(dir.path(), opts(2))?;
    put(&shards[0], "x", "1")?;
    for b in coord.trigger(1, b"")? {
        shards[b.shard].checkpoint(&b, b"")?;
    }
    coord.wait(1)?;
    let at_one = shard_states(&shards)?;
    put(&shards[0], "x", "2")?;
    put(&shards[1], "y", "2")?;
    for b in coord.trigger(2, b"")? {
        shards[b.shard].checkpoint(&b, b"")?.wait()?;
    }
    // Crash: the coordinator never takes the reports.
    drop((coord, shards));
    let (coord, shards) = Coordinator::open(dir.path(), opts(2))?;
    assert_eq!(coord.last().epoch, 1);
    assert_eq!(shard_states(&shards)?, at_one);
    assert!(Coordinator::open(dir.path(), opts(3)).is_err(), "the shard count is fixed");
    Ok(())
}

/// Time travel and rollback on global checkpoints; compaction keeps exactly the shard
/// checkpoints retained global checkpoints name.
#[test]
fn global_rollback_time_travel_and_compaction() -> Result<()> {
    let dir = TempDir::new("coord-rollback");
    let (mut coord, shards) = Coordinator::open(dir.path(), opts(2))?;
    let mut states: BTreeMap<u64, Vec<Dump>> = BTreeMap::new();
    for epoch in 1..=6u64 {
        for (i, s) in shards.iter().enumerate() {
            put(s, &format!("k{i}"), &format!("e{epoch}"))?;
        }
        let barriers = coord.trigger(epoch, format!("{epoch}").as_bytes())?;
        if epoch == 4 {
            // An aborted epoch: shard 0 commits its part, shard 1 fails.
            shards[0].checkpoint(&barriers[0], b"")?.wait()?;
            assert!(shards[1].checkpoint(&barriers[1], &vec![0u8; 2 << 20]).is_err());
            assert!(coord.wait(epoch).is_err());
            continue;
        }
        for b in barriers {
            shards[b.shard].checkpoint(&b, b"")?;
        }
        coord.wait(epoch)?;
        states.insert(epoch, shard_states(&shards)?);
    }
    for (epoch, expected) in &states {
        assert_eq!(&views(&coord, *epoch)?, expected, "epoch {epoch} in place");
    }
    // Shard checkpoints no global checkpoint names (as an epoch whose global record never
    // committed leaves): they take the places a store always keeps (HEAD and the two before
    // it), so only the coordinator's keep set holds epochs 5 and 6 below.
    for s in &shards {
        for _ in 0..3 {
            put(s, "local", "x")?;
            s.store().checkpoint(b"local")?;
        }
    }
    let shard0_before = shards[0].store().checkpoints()?.len();
    coord.compact(2)?;
    let kept: Vec<u64> = coord.checkpoints()?.iter().map(|g| g.epoch).collect();
    // keep_last(2), plus the global store's own rule: HEAD's parent and grandparent stay.
    assert_eq!(kept, vec![3, 5, 6]);
    for epoch in [5, 6] {
        assert_eq!(views(&coord, epoch)?, states[&epoch], "epoch {epoch} after compaction");
    }
    let ids: Vec<CheckpointId> = shards[0].store().checkpoints()?.iter().map(|c| c.id).collect();
    assert!(ids.len() < shard0_before, "shard checkpoints no global names are gone: {ids:?}");
    drop((coord, shards));
    let (coord, shards) = Coordinator::open(dir.path(), opts(2))?;
    assert_eq!(shard_states(&shards)?, states[&6], "the local checkpoints are rolled back at open");
    drop((coord, shards));
    let (coord, shards) = Coordinator::open_at(dir.path(), opts(2), Some(5))?;
    assert_eq!(coord.last().epoch, 5);
    assert_eq!(shard_states(&shards)?, states[&5], "rolled back to epoch 5");
    assert_eq!(views(&coord, 6)?, states[&6], "epoch 6 stays readable");
    drop((coord, shards));
    let (coord, _shards) = Coordinator::open(dir.path(), opts(2))?;
    assert_eq!(coord.last().epoch, 5, "the rollback is durable");
    assert!(Coordinator::open_at(dir.path(), opts(2), Some(4)).is_err(), "epoch 4 never committed");
    Ok(())
}

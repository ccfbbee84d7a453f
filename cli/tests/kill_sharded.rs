//! Exactly-once end to end under a coordinator: the real `cairn demo --shards 4` (four shard
//! threads, aligned global checkpoints) is SIGKILLed at random moments, restarted from the
//! last global checkpoint with its source replayed from the recorded offset, and must end in
//! the same state as one uninterrupted run:
//! - every restart resumes at or after the last global checkpoint the killed run reported;
//! - every shard store and the global store verify after the kills;
//! - finishing at offset F prints the same `keys= digest=` line as the unsharded job run once,
//!   uninterrupted, to F.
//!
//! 30 cycles by default; `CAIRN_STRESS=1` runs 500.

mod common;

use common::{cairn, stdout, Result, TempDir};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const ENDLESS: &str = "1000000000000";
const EVERY: u64 = 2000;

/// Run `cairn args...`, SIGKILL it after `delay` unless it ended, return its stdout lines.
fn run_and_kill(args: &[&str], delay: Duration) -> Result<Vec<String>> {
    let mut child =
        Command::new(env!("CARGO_BIN_EXE_cairn")).args(args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?;
    let out = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(std::result::Result::ok) {
            let _ = tx.send(line);
        }
    });
    std::thread::sleep(delay);
    let _ = child.kill();
    child.wait()?;
    let _ = reader.join();
    Ok(rx.try_iter().collect())
}

/// The offset in a `... at offset N` line.
fn offset_in(line: &str) -> Option<u64> {
    line.rsplit_once("at offset ").and_then(|(_, n)| n.trim().parse().ok())
}

fn digest_line(text: &str) -> Option<String> {
    text.lines().rev().find(|l| l.starts_with("keys=")).map(str::to_string)
}

#[test]
fn sigkilled_sharded_job_resumes_exactly_once() -> Result {
    let cycles = if std::env::var_os("CAIRN_STRESS").is_some() { 500 } else { 30 };
    let tmp = TempDir::new("kill-sharded")?;
    let dir = tmp.arg("job")?;
    let every = EVERY.to_string();
    let mut rng = 0x0dd_ba11_5eed_u64;
    let mut floor = 0u64; // the last global checkpoint a run reported
    let mut resumed_at = Vec::new();
    for cycle in 0..cycles {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let delay = Duration::from_millis(20 + rng % 180);
        let lines =
            run_and_kill(&["demo", &dir, "--shards", "4", "--events", ENDLESS, "--checkpoint-every", &every], delay)?;
        if let Some(first) = lines.first() {
            if first.contains("resuming") {
                let at = offset_in(first).ok_or_else(|| format!("cycle {cycle}: no offset in {first:?}"))?;
                assert!(at >= floor, "cycle {cycle}: resumed at {at}, below the reported global checkpoint {floor}");
                resumed_at.push(at);
            }
        }
        for line in &lines {
            if line.starts_with("global checkpoint ") {
                floor = floor.max(offset_in(line).ok_or_else(|| format!("cycle {cycle}: {line:?}"))?);
            }
        }
    }
    assert!(floor > 0, "no run got as far as a global checkpoint");
    for store in ["global", "shard-0000", "shard-0001", "shard-0002", "shard-0003"] {
        let out = cairn(&tmp.0, &["verify", &format!("{dir}/{store}")])?;
        assert!(out.status.success(), "{store} does not verify:\n{}", stdout(&out));
    }
    // Finish both jobs at the same offset, past everything the kills left.
    let end = (floor + 10 * EVERY + 777).to_string();
    let sharded = cairn(&tmp.0, &["demo", &dir, "--shards", "4", "--events", &end, "--checkpoint-every", &every])?;
    assert!(sharded.status.success(), "{}", stdout(&sharded));
    let reference = cairn(&tmp.0, &["demo", &tmp.arg("reference")?, "--events", &end, "--checkpoint-every", "100000"])?;
    assert!(reference.status.success());
    let (got, want) = (digest_line(&stdout(&sharded)), digest_line(&stdout(&reference)));
    assert!(got.is_some());
    assert_eq!(got, want, "after {cycles} kills the sharded job's state differs from an uninterrupted run");
    eprintln!(
        "kill_sharded: {cycles} SIGKILL cycles, {} restarts resumed from a global checkpoint, last reported offset {floor}",
        resumed_at.len()
    );
    Ok(())
}

//! Process kill loop: the real `cairn` binary on the real filesystem, SIGKILLed at a random
//! moment 1-100 ms into a demo run (checkpoints), a compaction or a rollback, then checked
//! against what it had acknowledged before dying:
//! - G1: the head's offset never falls below the last checkpoint the demo reported (except
//!   through an acknowledged rollback); a killed rollback leaves the old head or the target;
//! - G2/G3: the store reopens and `cairn verify` passes after every kill;
//! - exactly once: after all cycles, finishing at the head's offset F prints the same
//!   `keys= digest=` line as one uninterrupted run of F events.
//!
//! 300 cycles by default; `CAIRN_STRESS=1` runs 5,000.
//!
//! Every `SETTLE_EVERY` cycles a compaction runs to the end unkilled. A compaction of a store
//! grown over hundreds of cycles takes longer than the kill window, so without it almost no
//! compaction would finish and the store (and every cycle's open) would grow without bound.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The killed runs' source never ends within a cycle, so every run is killed mid-work.
const ENDLESS: &str = "1000000000000";
const EVERY: &str = "500";
/// Cycles between two compactions that are left to finish.
const SETTLE_EVERY: u64 = 50;

fn cairn() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cairn"))
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cairn-kill-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The head's offset (the demo's checkpoint metadata), or `None` before the first checkpoint.
fn head_offset(dir: &Path) -> Option<u64> {
    let out = cairn().arg("stat").arg(dir).output().unwrap_or_else(|e| panic!("stat: {e}"));
    if !out.status.success() {
        // No store yet (killed before the marker was written).
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("head: "))?;
    let quoted = line.split('"').nth(1)?;
    quoted.parse().ok()
}

/// Spawn `cmd`, kill it after `delay` unless it finished, and return the stdout lines it
/// printed and whether it exited successfully.
fn run_and_kill(mut cmd: Command, delay: Duration) -> (Vec<String>, bool) {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap_or_else(|e| panic!("spawn: {e}"));
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    std::thread::sleep(delay);
    let _ = child.kill(); // SIGKILL on Unix
    let status = child.wait().unwrap_or_else(|e| panic!("wait: {e}"));
    let _ = reader.join();
    (rx.try_iter().collect(), status.success())
}

#[test]
fn sigkill_at_random_moments_loses_nothing_acknowledged() {
    let cycles: u64 = if cairn_tests::stress() { 5_000 } else { 300 };
    let dir = temp_dir("loop");
    let mut rng = 0x5eed_1234_abcd_0001u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let (mut kills, mut demos, mut compactions, mut rollbacks, mut settled) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut floor = 0u64; // the least offset the head may have, from what was acknowledged
    for cycle in 0..cycles {
        let settle = cycle % SETTLE_EVERY == SETTLE_EVERY - 1;
        if let Some(before) = head_offset(&dir).filter(|_| settle) {
            // A compaction after all the kills so far must finish, and keep what it must.
            let out = cairn().arg("compact").arg(&dir).args(["--keep", "3"]).output();
            let out = out.unwrap_or_else(|e| panic!("compact: {e}"));
            assert!(out.status.success(), "cycle {cycle}: compact: {}", String::from_utf8_lossy(&out.stderr));
            assert_eq!(head_offset(&dir), Some(before), "cycle {cycle}: a compaction moved the head");
            settled += 1;
        }
        let delay = Duration::from_millis(1 + next() % 100);
        let before = head_offset(&dir);
        let choice = next() % 10;
        if choice < 7 || before.is_none() {
            demos += 1;
            let mut cmd = cairn();
            cmd.arg("demo").arg(&dir).args(["--events", ENDLESS, "--checkpoint-every", EVERY]);
            let (lines, finished) = run_and_kill(cmd, delay);
            kills += u64::from(!finished);
            for line in &lines {
                // "checkpoint N at offset X" is printed after the checkpoint committed.
                if let Some(x) = line.strip_prefix("checkpoint ").and_then(|r| r.split(" at offset ").nth(1)) {
                    floor = floor.max(x.trim().parse().unwrap_or(0));
                }
            }
        } else if choice < 9 {
            compactions += 1;
            let mut cmd = cairn();
            cmd.arg("compact").arg(&dir).args(["--keep", "3"]);
            let (_, finished) = run_and_kill(cmd, delay);
            kills += u64::from(!finished);
        } else {
            // Roll back to the checkpoint one interval below the head, if it is still kept.
            rollbacks += 1;
            let out = cairn().arg("log").arg(&dir).output().unwrap_or_else(|e| panic!("log: {e}"));
            let text = String::from_utf8_lossy(&out.stdout);
            let target = text
                .lines()
                .filter(|l| l.trim_start().chars().next().is_some_and(|c| c.is_ascii_digit()))
                .filter(|l| l.contains(" checkpoint "))
                .filter_map(|l| {
                    Some((l.split_whitespace().next()?.to_string(), l.rsplit('"').nth(1)?.parse::<u64>().ok()?))
                })
                .rfind(|(_, off)| Some(*off) < before);
            let Some((id, offset)) = target else { continue };
            let mut cmd = cairn();
            cmd.arg("rollback").arg(&dir).arg(&id);
            let (_, finished) = run_and_kill(cmd, delay);
            kills += u64::from(!finished);
            let now = head_offset(&dir);
            if finished {
                assert_eq!(now, Some(offset), "cycle {cycle}: an acknowledged rollback");
            } else {
                assert!(now == before || now == Some(offset), "cycle {cycle}: killed rollback left {now:?}");
            }
            floor = now.unwrap_or(0);
            continue;
        }
        let now = head_offset(&dir);
        assert!(now.unwrap_or(0) >= floor, "cycle {cycle}: head at {now:?}, but offset {floor} was acknowledged");
        floor = now.unwrap_or(0);
        if now.is_some() {
            let verify = cairn().arg("verify").arg(&dir).output().unwrap_or_else(|e| panic!("verify: {e}"));
            assert!(verify.status.success(), "cycle {cycle}: verify: {}", String::from_utf8_lossy(&verify.stdout));
        }
    }
    // The state at the head's offset F does not depend on how long the source would have
    // gone on: finishing at F must print what one uninterrupted run of F events prints.
    let events = head_offset(&dir).unwrap_or(0).max(1).to_string();
    let digest = |dir: &Path, every: &str| {
        let out = cairn().arg("demo").arg(dir).args(["--events", &events, "--checkpoint-every", every]).output();
        let out = out.unwrap_or_else(|e| panic!("demo: {e}"));
        assert!(out.status.success(), "demo: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().to_string()
    };
    let resumed = digest(&dir, EVERY);
    // The fresh run checkpoints once, at the end: the state does not depend on where the
    // checkpoints fall, and the long tier's F (some 19 million events) at one checkpoint per
    // 500 would leave 38,000 unmerged runs, each listed again by every later manifest.
    let fresh_dir = temp_dir("fresh");
    let fresh = digest(&fresh_dir, &events);
    assert!(fresh.starts_with("keys="), "{fresh}");
    assert_eq!(resumed, fresh, "exactly once across {kills} kills");
    cairn_tests::report(
        "kill loop",
        &format!(
            "{cycles} cycles ({demos} demo, {compactions} compact, {rollbacks} rollback), {kills} killed mid-run, \
             {settled} compactions left to finish, 0 acknowledged lost, ended at offset {events}"
        ),
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&fresh_dir);
}

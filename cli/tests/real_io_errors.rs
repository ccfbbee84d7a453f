//! Real I/O errors through the real filesystem path (G5 on the local backend): the demo runs
//! under libfiu's POSIX preload (`fiu-run`, from Debian's fiu-utils, installed here if
//! missing) with fsync failing with EIO, or write failing with ENOSPC, at random. Each run
//! stops at its first error without acknowledging anything after it; the store then reopens
//! (without faults) at or past the last checkpoint the run reported, and verifies. Resuming
//! run after run, the job ends with the same digest as one uninterrupted run.

use std::path::{Path, PathBuf};
use std::process::Command;

const EVENTS: &str = "60000";
const EVERY: &str = "1000";

fn ensure_fiu() -> PathBuf {
    let found = |p: &str| Path::new(p).exists();
    if !found("/usr/bin/fiu-run") {
        // The suite installs what it needs: Debian's fiu-utils (root on these machines).
        let _ = Command::new("apt-get").args(["install", "-y", "-qq", "fiu-utils"]).status();
        if !found("/usr/bin/fiu-run") {
            let _ = Command::new("apt-get").args(["update", "-qq"]).status();
            let _ = Command::new("apt-get").args(["install", "-y", "-qq", "fiu-utils"]).status();
        }
    }
    assert!(found("/usr/bin/fiu-run"), "fiu-run is missing and could not be installed (apt-get install fiu-utils)");
    PathBuf::from("/usr/bin/fiu-run")
}

fn head_offset(dir: &Path) -> Option<u64> {
    let out = Command::new(env!("CARGO_BIN_EXE_cairn")).arg("stat").arg(dir).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().find(|l| l.starts_with("head: "))?.split('"').nth(1)?.parse().ok()
}

fn demo(dir: &Path, fiu: Option<(&Path, &str)>) -> (bool, Vec<String>) {
    let mut cmd = match fiu {
        Some((fiu_run, spec)) => {
            let mut c = Command::new(fiu_run);
            c.args(["-x", "-c", spec]).arg(env!("CARGO_BIN_EXE_cairn"));
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_cairn")),
    };
    cmd.arg("demo").arg(dir).args(["--events", EVENTS, "--checkpoint-every", EVERY]);
    let out = cmd.output().unwrap_or_else(|e| panic!("run demo: {e}"));
    (out.status.success(), String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect())
}

fn acknowledged(lines: &[String]) -> u64 {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("checkpoint ")?.split(" at offset ").nth(1)?.trim().parse().ok())
        .max()
        .unwrap_or(0)
}

fn run_until_done(tag: &str, spec: &str) -> (String, u64) {
    let fiu = ensure_fiu();
    let dir = std::env::temp_dir().join(format!("cairn-fiu-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut failures = 0;
    for attempt in 0..200 {
        let before = head_offset(&dir).unwrap_or(0);
        let (ok, lines) = demo(&dir, Some((&fiu, spec)));
        let acked = acknowledged(&lines).max(before);
        let now = head_offset(&dir).unwrap_or(0);
        assert!(now >= acked, "{tag} attempt {attempt}: head at {now}, but offset {acked} was acknowledged");
        if now > 0 {
            let verify = Command::new(env!("CARGO_BIN_EXE_cairn")).arg("verify").arg(&dir).output();
            assert!(verify.is_ok_and(|o| o.status.success()), "{tag} attempt {attempt}: verify failed");
        }
        if ok && lines.last().is_some_and(|l| l.starts_with("keys=")) {
            if failures == 0 && attempt < 5 {
                // Finished before any fault hit: start over, so the errors are really exercised.
                let _ = std::fs::remove_dir_all(&dir);
                continue;
            }
            break;
        }
        failures += 1;
    }
    assert!(failures > 0, "{tag}: no injected error ever hit a run");
    let (ok, lines) = demo(&dir, None);
    assert!(ok);
    let _ = std::fs::remove_dir_all(&dir);
    (lines.last().cloned().unwrap_or_default(), failures)
}

fn uninterrupted() -> String {
    let dir = std::env::temp_dir().join(format!("cairn-fiu-fresh-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (ok, lines) = demo(&dir, None);
    assert!(ok);
    let _ = std::fs::remove_dir_all(&dir);
    lines.last().cloned().unwrap_or_default()
}

#[test]
fn eio_on_fsync_and_enospc_on_write_lose_nothing_acknowledged() {
    let fresh = uninterrupted();
    assert!(fresh.starts_with("keys="), "{fresh}");
    let (eio, eio_failures) =
        run_until_done("eio", "enable_random name=posix/io/sync/fsync,probability=0.05,failinfo=5");
    assert_eq!(eio, fresh, "after EIO on fsync");
    let (enospc, enospc_failures) =
        run_until_done("enospc", "enable_random name=posix/io/rw/write,probability=0.05,failinfo=28");
    assert_eq!(enospc, fresh, "after ENOSPC on write");
    cairn_tests::report(
        "real I/O errors",
        &format!(
            "{eio_failures} runs stopped by EIO on fsync, {enospc_failures} by ENOSPC on write, 0 acknowledged lost"
        ),
    );
}

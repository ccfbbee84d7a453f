//! `cairn bench` runs the standard workload end to end (here tiny), checks what it restores,
//! prints the figures `../shared/BENCH.md` asks for as one JSON object on its last line, and
//! leaves nothing behind. Figures are not asserted on: speed is for benchmarks, not tests.

use std::process::Command;

const KEYS: [&str; 25] = [
    "load_s",
    "updates_per_s",
    "checkpoint_p50_ms",
    "checkpoint_p99_ms",
    "round_p50_ms",
    "floor_round_ms",
    "round_vs_floor",
    "bytes_per_checkpoint",
    "bytes_vs_payload",
    "footprint_bytes",
    "restore_first_get_s",
    "restore_total_s",
    "peak_rss_bytes",
    "hashmap_updates_per_s",
    "fsync_ms",
    "write_mb_per_s",
    // Beyond BENCH.md: where a checkpoint's time goes.
    "checkpoint_encode_p50_ms",
    "checkpoint_commit_p50_ms",
    "commit_ops_ms",
    // What a commit into preallocated space would give (not built; README, T1).
    "in_place_commit_ops_ms",
    "in_place_estimate_vs_floor",
    // The restore against a full snapshot read into a HashMap, in the same run (T4).
    "snapshot_first_get_s",
    "snapshot_total_s",
    "restore_vs_snapshot",
    "restore_total_vs_snapshot",
];

#[test]
fn bench_prints_every_figure_as_json_and_cleans_up() {
    let dir = std::env::temp_dir().join(format!("cairn-cli-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["bench", "--keys", "3000", "--dirty", "100", "--rounds", "3", "--json", "--dir"])
        .arg(&dir)
        .output()
        .unwrap_or_else(|e| panic!("run cairn bench: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "cairn bench failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("checksum ok"), "{stdout}");
    let last = stdout.lines().last().unwrap_or_default();
    assert!(last.starts_with('{') && last.ends_with('}'), "last line is not a JSON object: {last}");
    for key in KEYS {
        assert!(last.contains(&format!("\"{key}\":")), "missing {key} in {last}");
    }
    assert!(!last.contains("null"), "a figure was not finite: {last}");
    assert!(!dir.exists(), "the bench directory was not removed");
}

#[test]
fn bench_refuses_an_existing_directory_and_bad_sizes() {
    let dir = std::env::temp_dir().join(format!("cairn-cli-bench-existing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok();
    let run =
        |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_cairn")).args(args).output().unwrap_or_else(|e| panic!("{e}"));
    let out = run(&["bench", "--keys", "10", "--dir", dir.to_str().unwrap_or_default()]);
    assert!(!out.status.success());
    assert!(dir.exists(), "an existing directory is left alone");
    let out = run(&["bench", "--keys", "10", "--dirty", "20", "--dir", "/nonexistent/cairn-bench"]);
    assert!(!out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1, "one-line error");
    // Refused before anything runs, with `message`, and no bench directory made.
    let refused = |args: &[&str], message: &str| {
        let fresh = dir.join("never-created");
        let out = run(&[&["bench"], args, &["--dir", fresh.to_str().unwrap_or_default()]].concat());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(!fresh.exists(), "{args:?}: the bench directory was created");
    };
    // Not a Zipf exponent (NaN used to pick key 0 every time).
    for zipf in ["--zipf=NaN", "--zipf=inf", "--zipf=-1"] {
        refused(&["--keys", "10", "--dirty", "5", zipf], "--zipf must be a finite exponent");
    }
    // More keys than the machine's memory could hold.
    if std::path::Path::new("/proc/meminfo").exists() {
        refused(&["--keys", "1000000000000000"], "GB of memory");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// The restore baseline's child process: two figures on success; where it cannot write its
/// snapshot, a nonzero exit and a one-line error, which `cairn bench` passes on.
#[test]
fn the_snapshot_floor_prints_two_figures_or_fails_in_one_line() {
    let dir = std::env::temp_dir().join(format!("cairn-cli-snapshot-floor-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let run = |at: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(["bench-snapshot-floor", "--keys", "500", "--dir"])
            .arg(at)
            .output()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let out = run(&dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let figures: Vec<f64> =
        String::from_utf8_lossy(&out.stdout).split_whitespace().map(|w| w.parse().unwrap_or(f64::NAN)).collect();
    assert!(matches!(figures[..], [first, total] if first > 0.0 && total >= first), "{figures:?}");
    assert!(!dir.join("floor-snapshot").exists(), "the snapshot was left behind");
    // A regular file where the snapshot's directory should go.
    let file = dir.join("not-a-directory");
    std::fs::write(&file, b"x").unwrap_or_else(|e| panic!("{e}"));
    let out = run(&file);
    assert!(!out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1, "one-line error");
    std::fs::remove_dir_all(&dir).ok();
}

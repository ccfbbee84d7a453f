//! The maintenance commands end to end, on stores `cairn demo` fills: `compact` drops what the
//! retention rule drops, marks its checkpoint in `cairn log`, leaves a store that verifies and
//! a job that resumes to the same state; `pin`, `unpin` and `delete` do what they say and refuse
//! the head, pinned checkpoints, missing ids and missing pins with one line, changing nothing.

mod common;

use common::{assert_one_line_error, cairn, stderr, stdout, Result, TempDir};

use std::path::Path;

/// 30 checkpoints, at offsets 1000, 2000, ..., 30000: checkpoint n is at offset n * 1000.
const DEMO: [&str; 4] = ["--events", "30000", "--checkpoint-every", "1000"];
const DEMO_CHECKPOINTS: u64 = 30;

/// Run `cairn` with `args`, require success, and return its stdout.
fn ok(tmp: &TempDir, args: &[&str]) -> Result<String> {
    let out = cairn(&tmp.0, args)?;
    assert!(out.status.success(), "{} failed: {}", args.join(" "), stderr(&out));
    Ok(stdout(&out))
}

/// Run the demo on `dir` (relative to `tmp`); returns its `keys=<n> digest=<hex>` line.
fn demo(tmp: &TempDir, dir: &str) -> Result<String> {
    let d = tmp.arg(dir)?;
    let mut args = vec!["demo", d.as_str()];
    args.extend(DEMO);
    let text = ok(tmp, &args)?;
    let last = text.lines().last().unwrap_or_default();
    assert!(last.starts_with("keys=") && last.contains(" digest="), "no keys/digest line in:\n{text}");
    Ok(last.to_string())
}

/// One line of `cairn log`.
#[derive(Debug, PartialEq)]
struct LogLine {
    head: bool,
    id: u64,
    kind: String,
}

/// The checkpoint lines of `cairn log` output: `<mark> <id> <parent> <kind> ...`.
fn log_lines(log: &str) -> Vec<LogLine> {
    log.lines()
        .filter_map(|line| {
            let head = line.starts_with("* ");
            if !head && !line.starts_with("  ") {
                return None; // the summary line
            }
            let mut words = line.get(2..)?.split_whitespace();
            let id = words.next()?.parse().ok()?; // not the header
            let kind = words.nth(1)?.to_string();
            Some(LogLine { head, id, kind })
        })
        .collect()
}

fn log(tmp: &TempDir, d: &str) -> Result<Vec<LogLine>> {
    Ok(log_lines(&ok(tmp, &["log", d])?))
}

fn ids(lines: &[LogLine]) -> Vec<u64> {
    lines.iter().map(|l| l.id).collect()
}

/// The number after `name: ` in a `name: value` summary.
fn figure(text: &str, name: &str) -> Result<u64> {
    let prefix = format!("{name}: ");
    let line = text.lines().find_map(|l| l.strip_prefix(&prefix)).ok_or(format!("no {name} in:\n{text}"))?;
    Ok(line.split_whitespace().next().unwrap_or_default().parse()?)
}

#[test]
fn compact_keep_3_drops_old_checkpoints_and_log_marks_compaction() -> Result {
    let tmp = TempDir::new("compact")?;
    demo(&tmp, "store")?;
    let d = tmp.arg("store")?;
    assert_eq!(log(&tmp, &d)?.len() as u64, DEMO_CHECKPOINTS);

    let out = cairn(&tmp.0, &["compact", &d, "--keep", "3"])?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stderr.is_empty(), "no spinner or anything else on a piped stderr: {:?}", stderr(&out));
    let summary = stdout(&out);
    assert!(figure(&summary, "checkpoints_deleted")? > 0, "{summary}");
    assert!(figure(&summary, "runs_merged")? > 0, "30 runs exceed the bound of 8: {summary}");
    for name in ["segments_deleted", "segments_rewritten", "bytes_reclaimed", "bytes_written"] {
        figure(&summary, name)?;
    }
    assert!(summary.contains("merged into: compaction checkpoint 31"), "{summary}");
    assert!(summary.lines().any(|l| l.starts_with("bytes_on_disk: ") && l.contains(" -> ")), "{summary}");

    let lines = log(&tmp, &d)?;
    let regular: Vec<&LogLine> = lines.iter().filter(|l| l.kind == "checkpoint").collect();
    let compactions: Vec<&LogLine> = lines.iter().filter(|l| l.kind == "compaction").collect();
    assert!(regular.len() <= 3, "at most 3 regular checkpoints kept: {lines:?}");
    assert_eq!(regular.iter().map(|l| l.id).collect::<Vec<_>>(), [28, 29, 30], "the newest 3 kept: {lines:?}");
    assert_eq!(compactions.len(), 1, "{lines:?}");
    assert!(compactions.iter().all(|l| l.head), "the compaction checkpoint is the head: {lines:?}");
    assert_eq!(lines.len(), regular.len() + compactions.len(), "every line has a known kind: {lines:?}");

    let text = ok(&tmp, &["log", &d])?;
    assert!(text.lines().last().unwrap_or_default().starts_with("4 checkpoints (1 compaction)"), "{text}");
    Ok(())
}

#[test]
fn compacted_store_verifies_and_the_job_resumes_to_the_same_state() -> Result {
    let tmp = TempDir::new("resume")?;
    let expected = demo(&tmp, "fresh")?;
    assert_eq!(demo(&tmp, "store")?, expected, "the demo is deterministic");
    let d = tmp.arg("store")?;
    ok(&tmp, &["compact", &d, "--keep", "3"])?;

    let verify = ok(&tmp, &["verify", &d])?;
    assert!(verify.contains("ok: no problems"), "{verify}");
    assert_eq!(demo(&tmp, "store")?, expected, "a rerun after compaction prints the uninterrupted state");
    // And again after a compaction that keeps nothing but the head.
    ok(&tmp, &["compact", &d, "--keep", "0"])?;
    assert!(ok(&tmp, &["verify", &d])?.contains("ok: no problems"));
    assert_eq!(demo(&tmp, "store")?, expected);
    Ok(())
}

#[test]
fn compact_keep_0_keeps_the_head_and_its_two_predecessors_and_a_second_run_finds_little_to_do() -> Result {
    let tmp = TempDir::new("keep0")?;
    demo(&tmp, "store")?;
    let d = tmp.arg("store")?;
    let first = ok(&tmp, &["compact", &d, "--keep", "0"])?;
    // HEAD (the compaction checkpoint 31) and the two checkpoints before it always stay.
    assert_eq!(figure(&first, "checkpoints_deleted")?, DEMO_CHECKPOINTS - 2, "{first}");
    let lines = log(&tmp, &d)?;
    assert_eq!(
        lines,
        [
            LogLine { head: false, id: 29, kind: "checkpoint".into() },
            LogLine { head: false, id: 30, kind: "checkpoint".into() },
            LogLine { head: true, id: 31, kind: "compaction".into() }
        ]
    );

    let second = ok(&tmp, &["compact", &d, "--keep", "0"])?;
    assert!(second.contains("merged into: no runs to merge"), "{second}");
    assert_eq!(figure(&second, "checkpoints_deleted")?, 0, "{second}");
    assert_eq!(figure(&second, "runs_merged")?, 0, "{second}");
    Ok(())
}

#[test]
fn compact_keep_all_deletes_no_checkpoint() -> Result {
    let tmp = TempDir::new("keepall")?;
    demo(&tmp, "store")?;
    let d = tmp.arg("store")?;
    let out = ok(&tmp, &["compact", &d, "--keep-all"])?;
    assert_eq!(figure(&out, "checkpoints_deleted")?, 0, "{out}");
    let lines = log(&tmp, &d)?;
    assert_eq!(ids(&lines), (1..=DEMO_CHECKPOINTS + 1).collect::<Vec<_>>(), "all kept, plus the compaction");
    Ok(())
}

#[test]
fn keep_and_keep_all_together_are_refused_and_change_nothing() -> Result {
    let tmp = TempDir::new("conflict")?;
    demo(&tmp, "store")?;
    let d = tmp.arg("store")?;
    let before = ok(&tmp, &["log", &d])?;
    let out = cairn(&tmp.0, &["compact", &d, "--keep", "3", "--keep-all"])?;
    assert_one_line_error(&out, "compact --keep 3 --keep-all");
    assert_eq!(out.status.code(), Some(2), "a malformed command line exits 2");
    assert_eq!(ok(&tmp, &["log", &d])?, before);
    Ok(())
}

#[test]
fn maintenance_commands_refuse_wrong_paths_and_create_nothing() -> Result {
    let tmp = TempDir::new("paths")?;
    let missing = tmp.arg("no/such/store")?;
    let empty = tmp.arg("empty")?;
    std::fs::create_dir(&empty)?;
    for d in [&missing, &empty] {
        for args in [
            vec!["compact", d],
            vec!["compact", d, "--keep", "0"],
            vec!["pin", d, "1", "p"],
            vec!["unpin", d, "p"],
            vec!["delete", d, "1"],
        ] {
            assert_one_line_error(&cairn(&tmp.0, &args)?, &args.join(" "));
        }
    }
    assert!(!Path::new(&missing).exists() && !tmp.0.join("no").exists(), "a missing store path was created");
    assert_eq!(std::fs::read_dir(&empty)?.count(), 0, "an empty directory was written to");
    Ok(())
}

#[test]
fn a_pinned_checkpoint_survives_compaction_until_unpinned() -> Result {
    let tmp = TempDir::new("pin")?;
    demo(&tmp, "store")?;
    let d = tmp.arg("store")?;
    let out = ok(&tmp, &["pin", &d, "5", "five"])?;
    assert!(out.contains("pinned checkpoint 5 as \"five\""), "{out}");
    let stat = ok(&tmp, &["stat", &d])?;
    assert!(stat.lines().any(|l| l == "pin \"five\" -> checkpoint 5"), "{stat}");
    assert_eq!(figure(&stat, "pins")?, 1, "{stat}");

    ok(&tmp, &["compact", &d, "--keep", "0"])?;
    assert_eq!(ids(&log(&tmp, &d)?), [5, 29, 30, 31], "the pin, the head and the two before it stay");
    // The pinned checkpoint reads as it was: offset 5000 holds 5000 counted events.
    let ka = ok(&tmp, &["get", &d, "counts", "ka", "--at", "5"])?;
    assert!(ka.contains("u64 little-endian"), "{ka}");

    let out = ok(&tmp, &["unpin", &d, "five"])?;
    assert!(out.contains("unpinned \"five\" (checkpoint 5)"), "{out}");
    assert_eq!(figure(&ok(&tmp, &["stat", &d])?, "pins")?, 0);
    ok(&tmp, &["compact", &d, "--keep", "0"])?;
    assert_eq!(ids(&log(&tmp, &d)?), [29, 30, 31], "unpinned, it goes");
    assert!(ok(&tmp, &["verify", &d])?.contains("ok: no problems"));
    Ok(())
}

#[test]
fn pinning_a_name_again_moves_it() -> Result {
    let tmp = TempDir::new("repin")?;
    demo(&tmp, "store")?;
    let d = tmp.arg("store")?;
    ok(&tmp, &["pin", &d, "3", "p"])?;
    let out = ok(&tmp, &["pin", &d, "7", "p"])?;
    assert!(out.contains("moved from checkpoint 3"), "{out}");
    let stat = ok(&tmp, &["stat", &d])?;
    assert!(stat.lines().any(|l| l == "pin \"p\" -> checkpoint 7"), "{stat}");
    assert_eq!(figure(&stat, "pins")?, 1, "{stat}");
    Ok(())
}

#[test]
fn unpin_and_pin_errors_are_one_line_and_change_nothing() -> Result {
    let tmp = TempDir::new("pinerr")?;
    demo(&tmp, "store")?;
    let d = tmp.arg("store")?;
    ok(&tmp, &["pin", &d, "2", "kept"])?;
    let before = ok(&tmp, &["stat", &d])?;
    let long = "n".repeat(256);
    for args in [
        vec!["unpin", &d, "missing"],
        vec!["pin", &d, "99", "p"],
        vec!["pin", &d, "0", "p"],
        vec!["pin", &d, "x", "p"],
        vec!["pin", &d, "-1", "p"],
        vec!["pin", &d, "3", ""],
        vec!["pin", &d, "3", &long],
    ] {
        assert_one_line_error(&cairn(&tmp.0, &args)?, &args.join(" "));
    }
    let err = stderr(&cairn(&tmp.0, &["unpin", &d, "missing"])?);
    assert!(err.contains("no pin named \"missing\""), "{err}");
    assert_eq!(ok(&tmp, &["stat", &d])?, before, "nothing changed");
    Ok(())
}

#[test]
fn delete_removes_a_checkpoint_and_compact_reclaims_it() -> Result {
    let tmp = TempDir::new("delete")?;
    demo(&tmp, "store")?;
    let d = tmp.arg("store")?;
    let out = ok(&tmp, &["delete", &d, "2"])?;
    assert!(out.contains("deleted checkpoint 2"), "{out}");
    let remaining = ids(&log(&tmp, &d)?);
    assert!(!remaining.contains(&2) && remaining.contains(&1) && remaining.contains(&3), "{remaining:?}");
    // Its child reads as before.
    ok(&tmp, &["get", &d, "counts", "ka", "--at", "3"])?;
    assert!(ok(&tmp, &["verify", &d])?.contains("ok: no problems"));
    ok(&tmp, &["compact", &d, "--keep-all"])?;
    assert!(ok(&tmp, &["verify", &d])?.contains("ok: no problems"));
    Ok(())
}

#[test]
fn delete_refuses_the_head_pinned_and_missing_checkpoints() -> Result {
    let tmp = TempDir::new("delerr")?;
    demo(&tmp, "store")?;
    let d = tmp.arg("store")?;
    ok(&tmp, &["pin", &d, "4", "four"])?;
    ok(&tmp, &["delete", &d, "6"])?;
    let before = ok(&tmp, &["log", &d])?;
    let head = DEMO_CHECKPOINTS.to_string();
    for (id, says) in [
        (head.as_str(), "is the head"),
        ("4", "pinned as \"four\""),
        ("6", "no checkpoint 6"),
        ("99", "no checkpoint 99"),
        ("0", "no checkpoint 0"),
        ("x", "invalid checkpoint id"),
        ("-1", "invalid checkpoint id"),
    ] {
        let out = cairn(&tmp.0, &["delete", &d, id])?;
        assert_one_line_error(&out, &format!("delete {id}"));
        assert!(stderr(&out).contains(says), "delete {id}: {}", stderr(&out));
    }
    assert_eq!(ok(&tmp, &["log", &d])?, before, "nothing changed");
    Ok(())
}

#[test]
fn stat_shows_space_runs_and_pins() -> Result {
    let tmp = TempDir::new("stat")?;
    demo(&tmp, "store")?;
    let d = tmp.arg("store")?;
    let stat = ok(&tmp, &["stat", &d])?;
    assert!(figure(&stat, "live_bytes")? > 0, "{stat}");
    let amp = stat.lines().find_map(|l| l.strip_prefix("space_amplification: ")).ok_or("no space_amplification")?;
    assert!(amp.split_once('.').is_some_and(|(_, frac)| frac.len() == 2), "two decimals: {amp}");
    assert!(amp.parse::<f64>()? >= 1.0, "{amp}");
    figure(&stat, "bytes_rewritten")?;
    assert_eq!(figure(&stat, "pins")?, 0, "{stat}");
    assert!(stat.lines().any(|l| l.starts_with("table \"counts\": ") && l.ends_with(" keys, 30 runs")), "{stat}");

    ok(&tmp, &["compact", &d])?;
    let stat = ok(&tmp, &["stat", &d])?;
    let runs = stat.lines().find_map(|l| l.strip_prefix("table \"counts\": ")).ok_or("no table line")?;
    let n: u64 = runs.rsplit(", ").next().and_then(|r| r.split(' ').next()).ok_or("no runs")?.parse()?;
    assert!(n <= 8, "compaction bounds the runs: {stat}");
    Ok(())
}

//! The `cairn` binary end to end: the demo job recovers exactly once from a crash at any point
//! (before the first checkpoint, right after one, between them, at the very end), inspection
//! commands refuse wrong paths, ids and tables without touching the disk, and rollback and
//! `get --at` read the checkpoints they name.

mod common;

use common::{assert_one_line_error, cairn, stderr, stdout, Result, TempDir};

use std::path::Path;
use std::process::Output;

const EVENTS: &str = "20000";
const EVERY: &str = "3000";

/// The demo's last line, `keys=<n> digest=<hex>`.
fn keys_digest(out: &Output) -> Result<String> {
    let text = stdout(out);
    let last = text.lines().last().unwrap_or_default();
    assert!(last.starts_with("keys=") && last.contains(" digest="), "no keys/digest line in:\n{text}");
    Ok(last.to_string())
}

fn demo(tmp: &TempDir, dir: &str, extra: &[&str]) -> Result<Output> {
    let dir = tmp.join(dir);
    let dir = dir.to_str().ok_or("temp path is not UTF-8")?;
    let mut args = vec!["demo", dir, "--events", EVENTS, "--checkpoint-every", EVERY];
    args.extend_from_slice(extra);
    cairn(&tmp.0, &args)
}

/// Sum and number of the counts in the store at `dir`, read with the library.
fn counts(dir: &Path) -> Result<(u64, u64)> {
    let store = cairn::Store::open_with(dir, cairn::Options::new().create_if_missing(false))?;
    let (mut sum, mut keys) = (0, 0);
    for (_, v) in store.table("counts")?.iter_all()? {
        sum += u64::from_le_bytes(<[u8; 8]>::try_from(v.as_slice())?);
        keys += 1;
    }
    Ok((sum, keys))
}

#[test]
fn crash_and_resume_ends_in_the_uninterrupted_state() -> Result {
    let tmp = TempDir::new("crash")?;
    let base = demo(&tmp, "base", &[])?;
    assert!(base.status.success(), "uninterrupted run failed: {}", stderr(&base));
    let expected = keys_digest(&base)?;
    let keys: u64 = expected.strip_prefix("keys=").and_then(|r| r.split(' ').next()).ok_or("no keys")?.parse()?;
    assert_eq!(counts(&tmp.join("base"))?, (20000, keys), "every event counted once, in the printed keys");

    // Crash points per run, counted from where each run starts: before anything, before the
    // first checkpoint, exactly at a checkpoint, just after one, mid-way, at the last event
    // (no final checkpoint), and chains of crashes across resumes.
    let scenarios: &[&[&str]] = &[
        &["0"],
        &["1"],
        &["2999"],
        &["3000"],
        &["3001"],
        &["7500"],
        &["19999"],
        &["20000"],
        &["3000", "3000", "0", "3000"],
        &["5000", "4000", "2", "8997"],
    ];
    for (i, crashes) in scenarios.iter().enumerate() {
        let dir = format!("s{i}");
        for n in *crashes {
            let out = demo(&tmp, &dir, &["--crash-after", n])?;
            assert!(!out.status.success(), "--crash-after {n} (scenario {crashes:?}) exited successfully");
            assert!(stderr(&out).contains("crash"), "no crash message: {}", stderr(&out));
        }
        let out = demo(&tmp, &dir, &[])?;
        assert!(out.status.success(), "resume after {crashes:?} failed: {}", stderr(&out));
        assert_eq!(keys_digest(&out)?, expected, "after crashes {crashes:?}");
        assert_eq!(counts(&tmp.join(&dir))?.0, 20000, "events counted once after {crashes:?}");
    }

    // More crash budget than events left: the run simply completes.
    let out = demo(&tmp, "late", &["--crash-after", "25000"])?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(keys_digest(&out)?, expected);

    // A rerun of a finished job changes nothing and prints the same state.
    let out = demo(&tmp, "base", &[])?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(keys_digest(&out)?, expected);
    Ok(())
}

#[test]
fn wrong_paths_fail_and_create_nothing() -> Result {
    let tmp = TempDir::new("paths")?;
    let literal = Path::new("/nonexistent/path");
    let existed = literal.exists();
    let out = cairn(&tmp.0, &["log", "/nonexistent/path"])?;
    assert_one_line_error(&out, "log /nonexistent/path");
    if !existed {
        assert!(!literal.exists(), "cairn log created /nonexistent/path");
    }

    let missing = tmp.join("no/such/store");
    let empty = tmp.join("empty");
    std::fs::create_dir(&empty)?;
    for dir in [&missing, &empty] {
        let d = dir.to_str().ok_or("temp path is not UTF-8")?;
        for args in [
            vec!["log", d],
            vec!["verify", d],
            vec!["stat", d],
            vec!["rollback", d, "1"],
            vec!["get", d, "counts", "ka"],
            vec!["get", d, "counts", "ka", "--at", "1"],
        ] {
            assert_one_line_error(&cairn(&tmp.0, &args)?, &args.join(" "));
        }
    }
    assert!(!missing.exists() && !tmp.join("no").exists(), "a missing store path was created");
    assert_eq!(std::fs::read_dir(&empty)?.count(), 0, "an empty directory was written to");
    Ok(())
}

/// The count of `word` printed by `cairn get`.
fn get_count(tmp: &TempDir, store: &str, word: &str, at: Option<&str>) -> Result<u64> {
    let mut args = vec!["get", store, "counts", word];
    if let Some(id) = at {
        args.extend(["--at", id]);
    }
    let out = cairn(&tmp.0, &args)?;
    assert!(out.status.success(), "{}: {}", args.join(" "), stderr(&out));
    let text = stdout(&out);
    let n = text.trim_end().rsplit(": ").next().and_then(|s| s.strip_suffix(')')).ok_or("no count in output")?;
    Ok(n.parse()?)
}

#[test]
fn rollback_and_get_at_read_the_named_checkpoint() -> Result {
    let tmp = TempDir::new("rollback")?;
    let dir = tmp.join("store");
    let d = dir.to_str().ok_or("temp path is not UTF-8")?;
    let first = cairn(&tmp.0, &["demo", d, "--events", "9000", "--checkpoint-every", "3000"])?;
    assert!(first.status.success(), "{}", stderr(&first));
    let expected = keys_digest(&first)?;

    // "ka" is word 0, the most frequent one. Checkpoints 1..=3 are at offsets 3000, 6000, 9000.
    let at1 = get_count(&tmp, d, "ka", Some("1"))?;
    let at3 = get_count(&tmp, d, "ka", Some("3"))?;
    assert!(0 < at1 && at1 < at3, "counts at 1 and 3: {at1}, {at3}");
    assert_eq!(get_count(&tmp, d, "ka", None)?, at3);
    // The same key given in hex.
    let hex = cairn(&tmp.0, &["get", d, "counts", "6b61", "--hex", "--at", "1"])?;
    assert!(stdout(&hex).contains(&format!("u64 little-endian: {at1})")), "{}", stdout(&hex));

    let out = cairn(&tmp.0, &["rollback", d, "1"])?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(get_count(&tmp, d, "ka", None)?, at1);
    assert_eq!(get_count(&tmp, d, "ka", Some("3"))?, at3, "the old branch stays readable");
    let log = stdout(&cairn(&tmp.0, &["log", d])?);
    let head_lines: Vec<&str> = log.lines().filter(|l| l.starts_with('*')).collect();
    assert_eq!(head_lines.len(), 1, "{log}");
    assert_eq!(head_lines.first().and_then(|l| l.split_whitespace().nth(1)), Some("1"), "{log}");

    // Wrong ids and tables: one line, nothing changed.
    for args in [
        vec!["rollback", d, "99"],
        vec!["rollback", d, "0"],
        vec!["rollback", d, "x"],
        vec!["rollback", d, "-1"],
        vec!["get", d, "counts", "ka", "--at", "99"],
        vec!["get", d, "nope", "ka"],
        vec!["get", d, "nope", "ka", "--at", "2"],
        vec!["get", d, "counts", "6", "--hex"],
    ] {
        assert_one_line_error(&cairn(&tmp.0, &args)?, &args.join(" "));
    }
    assert_eq!(get_count(&tmp, d, "ka", None)?, at1);

    // The job resumes from the rolled-back checkpoint's offset and ends in the same state.
    let again = cairn(&tmp.0, &["demo", d, "--events", "9000", "--checkpoint-every", "3000"])?;
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(stdout(&again).contains("resuming from checkpoint 1 at offset 3000"), "{}", stdout(&again));
    assert_eq!(keys_digest(&again)?, expected);

    let verify = cairn(&tmp.0, &["verify", d])?;
    assert!(verify.status.success(), "{}{}", stdout(&verify), stderr(&verify));
    Ok(())
}

//! The commands that change what a store keeps: `compact`, `pin`, `unpin`, `delete`. Each opens
//! an existing store for changes (never creating one), checks its arguments before it writes
//! anything, and says what it did.

use crate::commands::{checkpoint_not_found, open_existing, parse_id};
use crate::{emit, CliError};
use cairn::{CompactStep, CompactionReport, Retention, Stats};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

/// The retention rule `--keep N` / `--keep-all` ask for (the engine's default without either).
fn retention(keep: Option<usize>, keep_all: bool) -> Result<Retention, CliError> {
    match (keep, keep_all) {
        (Some(_), true) => Err(CliError::Usage("--keep and --keep-all cannot be used together".into())),
        (Some(n), false) => Ok(Retention::keep_last(n)),
        (None, true) => Ok(Retention::keep_all()),
        (None, false) => Ok(Retention::default()),
    }
}

/// What the rule keeps, in words, for the summary.
fn describe(retention: &Retention) -> String {
    match retention.keep_last {
        Some(0) => "the head and pinned checkpoints".to_string(),
        Some(1) => "the head, pinned checkpoints and the newest checkpoint".to_string(),
        Some(n) => format!("the head, pinned checkpoints and the newest {n} checkpoints"),
        None => "every checkpoint".to_string(),
    }
}

/// A spinner on stderr naming the step under way. Hidden unless stderr is a terminal, so pipes,
/// logs and tests get only the summary on stdout. (indicatif's stderr target hides itself on a
/// non-terminal too; checking here keeps that promise explicit.)
fn spinner() -> ProgressBar {
    let target =
        if std::io::stderr().is_terminal() { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
    let bar = ProgressBar::with_draw_target(None, target);
    // The template is a constant; should it ever fail to parse, the default style is fine.
    if let Ok(style) = ProgressStyle::with_template("{spinner} compacting ({pos} steps done): {msg} [{elapsed}]") {
        bar.set_style(style);
    }
    bar.set_message("merging runs");
    if !bar.is_hidden() {
        // Steps can take a while (marking reads every manifest); keep the spinner moving.
        bar.enable_steady_tick(Duration::from_millis(100));
    }
    bar
}

/// What the spinner says once `step` is done: the step that comes next.
fn next_step(step: CompactStep, segments_deleted: u64) -> String {
    match step {
        CompactStep::Merged => "deleting checkpoints retention drops".to_string(),
        CompactStep::RetentionApplied => "finding live chunks".to_string(),
        CompactStep::Marked => "rewriting sparse segments".to_string(),
        CompactStep::Rewritten => "deleting dead segments".to_string(),
        CompactStep::SegmentDeleted => format!("deleting dead segments, {segments_deleted} deleted so far"),
    }
}

/// The summary lines of a compaction, `name: value` like `cairn stat`.
fn summary(report: &CompactionReport, before: &Stats, after: &Stats) -> Vec<String> {
    let merged = match report.merged_into {
        Some(id) => format!("merged into: compaction checkpoint {id} (now the head)"),
        None => "merged into: no runs to merge".to_string(),
    };
    vec![
        merged,
        format!("runs_merged: {}", report.runs_merged),
        format!("slices_merged: {}", report.slices_merged),
        format!("checkpoints_deleted: {}", report.checkpoints_deleted),
        format!("segments_deleted: {}", report.segments_deleted),
        format!("segments_rewritten: {}", report.segments_rewritten),
        format!("chunks_stored_as_delta: {}", report.chunks_stored_as_delta),
        format!("bytes_reclaimed: {}", report.bytes_reclaimed),
        format!("bytes_written: {}", report.bytes_written),
        format!("bytes_on_disk: {} -> {}", before.bytes_on_disk, after.bytes_on_disk),
        format!("checkpoints: {} -> {}", before.checkpoints, after.checkpoints),
        format!("segments: {} -> {}", before.segments, after.segments),
    ]
}

/// `cairn compact`.
pub fn compact(dir: &Path, keep: Option<usize>, keep_all: bool) -> Result<(), CliError> {
    let retention = retention(keep, keep_all)?;
    let store = open_existing(dir)?;
    let before = store.stats()?;
    let bar = spinner();
    let mut segments_deleted = 0;
    let result = store.compact_with_hook(&retention, |step| {
        if step == CompactStep::SegmentDeleted {
            segments_deleted += 1;
        }
        bar.inc(1);
        bar.set_message(next_step(step, segments_deleted));
        Ok(())
    });
    bar.finish_and_clear();
    let report = result?;
    let after = store.stats()?;
    emit(&format!("compacted {}; retention kept {}", store.location(), describe(&retention)))?;
    for line in summary(&report, &before, &after) {
        emit(&line)?;
    }
    Ok(())
}

/// `cairn pin`.
pub fn pin(dir: &Path, id: &str, name: &str) -> Result<(), CliError> {
    let id = parse_id(id)?;
    // The engine checks this too, but words it as a table name's rule.
    let max = cairn::format::MAX_TABLE_NAME_LEN;
    if name.is_empty() || name.len() > max {
        return Err(CliError::from(format!("a pin name is 1 to {max} bytes of UTF-8, not {}", name.len())));
    }
    let store = open_existing(dir)?;
    let moved_from = store.pins()?.into_iter().find(|(n, _)| n == name).map(|(_, old)| old);
    store.pin(id, name).map_err(|e| checkpoint_not_found(&store, id, e))?;
    match moved_from {
        Some(old) if old != id => emit(&format!("pinned checkpoint {id} as {name:?} (moved from checkpoint {old})")),
        Some(_) => emit(&format!("checkpoint {id} was already pinned as {name:?}")),
        None => emit(&format!("pinned checkpoint {id} as {name:?}; compaction keeps it until `cairn unpin`")),
    }
}

/// `cairn unpin`.
pub fn unpin(dir: &Path, name: &str) -> Result<(), CliError> {
    let store = open_existing(dir)?;
    let pins = store.pins()?;
    let Some(id) = pins.iter().find(|(n, _)| n == name).map(|(_, id)| *id) else {
        let existing = if pins.is_empty() {
            "this store has no pins".to_string()
        } else {
            format!("pins: {}", pins.iter().map(|(n, _)| format!("{n:?}")).collect::<Vec<_>>().join(", "))
        };
        return Err(CliError::from(format!("no pin named {name:?} ({existing})")));
    };
    if !store.unpin(name)? {
        // Another process cannot have removed it: we hold the store's exclusive lock.
        return Err(CliError::from(format!("no pin named {name:?}")));
    }
    emit(&format!("unpinned {name:?} (checkpoint {id}); compaction may now drop that checkpoint"))
}

/// `cairn delete`.
pub fn delete(dir: &Path, id: &str) -> Result<(), CliError> {
    let id = parse_id(id)?;
    let store = open_existing(dir)?;
    // The engine refuses these too; checked here first to say what to do about it.
    if store.head()?.map(|h| h.id) == Some(id) {
        return Err(CliError::from(format!(
            "checkpoint {id} is the head and cannot be deleted (roll back to another checkpoint first)"
        )));
    }
    if let Some((name, _)) = store.pins()?.into_iter().find(|(_, p)| *p == id) {
        return Err(CliError::from(format!(
            "checkpoint {id} is pinned as {name:?} and cannot be deleted (`cairn unpin` it first)"
        )));
    }
    store.delete_checkpoint(id).map_err(|e| checkpoint_not_found(&store, id, e))?;
    emit(&format!("deleted checkpoint {id}; `cairn compact` reclaims the space it alone used"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_flags_choose_the_rule() {
        assert_eq!(retention(None, false).ok(), Some(Retention::default()));
        assert_eq!(retention(Some(0), false).ok(), Some(Retention::keep_last(0)));
        assert_eq!(retention(None, true).ok(), Some(Retention::keep_all()));
        assert!(matches!(retention(Some(3), true), Err(CliError::Usage(_))), "both flags are a usage error");
        assert_eq!(describe(&Retention::keep_last(0)), "the head and pinned checkpoints");
        assert_eq!(describe(&Retention::keep_all()), "every checkpoint");
    }
}

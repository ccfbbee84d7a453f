//! Run merging: folding a table's newest runs into one, so a restore reads a bounded number of
//! runs. The merged run is written like any run (content-addressed chunks, so unchanged
//! chunks are reused) and becomes visible through a new, compaction-kind manifest.

use crate::format::{ManifestTable, RunRef};
use crate::state::{CapturedEntries, Key, Value};
use crate::storage::Storage;
use crate::version::{self, ChunkIndex};
use crate::{Error, Result};

/// Where to start merging a table's runs (`runs[start..]` become one run), or `None` when the
/// table has at most `max_runs` runs.
///
/// After a merge at most `max(1, max_runs / 2)` runs remain, so merges are spaced out. The
/// merge reaches further down only while the next older run is at most twice the size of what
/// is being merged (size-tiered): a large old run is rewritten only when enough has piled up
/// above it to make that worth it.
pub(crate) fn merge_start(runs: &[RunRef], max_runs: usize) -> Option<usize> {
    let n = runs.len();
    if n <= max_runs.max(1) {
        return None;
    }
    let target = (max_runs / 2).max(1);
    let mut start = target - 1;
    let mut merged: u64 = runs.get(start..)?.iter().map(|r| r.data_bytes).sum();
    while start > 0 {
        let below = runs.get(start - 1)?.data_bytes;
        if below > 2 * merged {
            break;
        }
        start -= 1;
        merged += below;
    }
    Some(start)
}

/// The entries of `table.runs[start..]` folded into one sorted run: later runs win; when the
/// merge includes the oldest run, tombstones are dropped (nothing older needs them).
///
/// Each run is sorted, so they are merged pairwise, newest first (the small recent runs fold
/// together before the result meets the large old one): no map of every key is built, and
/// the output comes out sorted. Every run is checked as a restore checks it.
pub(crate) fn merged_entries(
    storage: &dyn Storage,
    index: &ChunkIndex,
    table: &ManifestTable,
    start: usize,
) -> Result<CapturedEntries> {
    let runs = table.runs.get(start..).ok_or_else(|| Error::InvalidArgument("merge start beyond the runs".into()))?;
    let mut merged: CapturedEntries = Vec::new();
    for run in runs.iter().rev() {
        let older = run_entries(storage, index, &table.name, run)?;
        merged = merge_two(older, merged);
    }
    if start == 0 {
        merged.retain(|(_, v)| v.is_some());
    }
    Ok(merged)
}

/// A run's entries, in order, checked as [`version::for_each_run_entry`] says.
fn run_entries(storage: &dyn Storage, index: &ChunkIndex, table: &str, run: &RunRef) -> Result<CapturedEntries> {
    let mut out: CapturedEntries = Vec::with_capacity(run.entries.min(1 << 24) as usize);
    version::for_each_run_entry(storage, index, table, run, |key, value| {
        out.push((Key::from(key), value.map(Value::from)));
    })?;
    Ok(out)
}

/// Two sorted entry lists merged into one; on equal keys the entry of `newer` wins.
fn merge_two(older: CapturedEntries, newer: CapturedEntries) -> CapturedEntries {
    if older.is_empty() {
        return newer;
    }
    if newer.is_empty() {
        return older;
    }
    let mut out = Vec::with_capacity(older.len() + newer.len());
    let mut older = older.into_iter().peekable();
    let mut newer = newer.into_iter().peekable();
    loop {
        let take_older = match (older.peek(), newer.peek()) {
            (Some(o), Some(n)) => match o.0.cmp(&n.0) {
                std::cmp::Ordering::Less => true,
                std::cmp::Ordering::Equal => {
                    older.next(); // shadowed by the newer entry
                    false
                }
                std::cmp::Ordering::Greater => false,
            },
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let next = if take_older { older.next() } else { newer.next() };
        out.extend(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::ChunkHash;

    fn runs(sizes: &[u64]) -> Vec<RunRef> {
        sizes.iter().map(|&s| RunRef { index: ChunkHash([0; 32]), entries: s, data_bytes: s * 2, chunks: 1 }).collect()
    }

    fn entries(pairs: &[(&str, Option<&str>)]) -> CapturedEntries {
        pairs.iter().map(|(k, v)| (Key::from(k.as_bytes()), v.map(|v| Value::from(v.as_bytes())))).collect()
    }

    #[test]
    fn the_newer_entry_wins_and_the_output_stays_sorted() {
        let older = entries(&[("a", Some("1")), ("c", Some("1")), ("e", Some("1"))]);
        let newer = entries(&[("b", Some("2")), ("c", None), ("f", Some("2"))]);
        let want = entries(&[("a", Some("1")), ("b", Some("2")), ("c", None), ("e", Some("1")), ("f", Some("2"))]);
        assert_eq!(merge_two(older.clone(), newer.clone()), want);
        assert_eq!(merge_two(older.clone(), Vec::new()), older);
        assert_eq!(merge_two(Vec::new(), newer.clone()), newer);
    }

    #[test]
    fn merges_only_past_the_bound_and_leaves_headroom() {
        assert_eq!(merge_start(&runs(&[100, 1, 1, 1]), 4), None);
        // 5 runs, bound 4: keep at most 2; the big base is not worth rewriting for 4 small runs.
        assert_eq!(merge_start(&runs(&[1000, 1, 1, 1, 1]), 4), Some(1));
        // Deltas as large as the base: the base is merged too.
        assert_eq!(merge_start(&runs(&[10, 4, 4, 4, 4]), 4), Some(0));
        assert_eq!(merge_start(&runs(&[5, 5]), 1), Some(0));
    }
}

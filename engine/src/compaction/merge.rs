//! Run merging: folding a table's newest runs into one, so a restore reads a bounded number of
//! runs. The merged run is written like any run (content-addressed chunks, so unchanged
//! chunks are reused) and becomes visible through a new, compaction-kind manifest.
//!
//! Two kinds of merge (see [`plan`]):
//! - a *run merge* folds `runs[start..]` into one run, size-tiered;
//! - a *slice merge*, for a table whose oldest run (its base) outweighs the rest, folds every
//!   newer run's entries of one key range of the base (a slice: about `1/slices` of it) into
//!   that range, lists the base's other chunks again as they are, and folds the newer runs'
//!   entries outside the slice into one run. The table ends with two runs.
//!
//! Why slices: every checkpoint of a retention window that predates a merge keeps the chunks
//! the merge replaced. A whole-base merge therefore holds two copies of the table for as long
//! as the window lasts; a slice merge holds one slice twice. The slice taken is the one the
//! newer runs hold most entries of, which under uniform updates is the one merged longest ago.

use crate::checkpoint::ChunkRef;
use crate::format::{ManifestTable, RunRef};
use crate::state::{CapturedEntries, Key, Value};
use crate::storage::Storage;
use crate::version::{self, ChunkIndex};
use crate::{Error, Result};

/// How a table's runs are merged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// `runs[start..]` become one run ([`merge_start`]).
    Runs { start: usize },
    /// A slice of the base takes in the newer runs' entries of its key range; the rest of
    /// the newer runs become one run ([`slice_merge`]).
    Slice,
}

/// How to merge a table's runs, or `None` when it has at most `max_runs` runs.
///
/// With `slices > 1`, a table whose base is more than twice the size of all newer runs
/// together gets a slice merge; otherwise (or with `slices == 1`) a run merge.
pub(crate) fn plan(runs: &[RunRef], max_runs: usize, slices: usize) -> Option<Plan> {
    let start = merge_start(runs, max_runs)?;
    let (base, newer) = runs.split_first()?;
    let newer_bytes: u64 = newer.iter().map(|r| r.data_bytes).sum();
    if slices > 1 && base.data_bytes > 2 * newer_bytes && base.chunks >= slices as u64 {
        return Some(Plan::Slice);
    }
    Some(Plan::Runs { start })
}

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

/// A slice merge of one table, read and folded, ready to write.
pub(crate) struct SliceMerge {
    /// The base's chunks before the slice, listed again as they are.
    pub(crate) before: Vec<ChunkRef>,
    /// The slice: the base's entries of its key range and every newer run's, folded, without
    /// tombstones (the base is the oldest run: nothing older needs them).
    pub(crate) slice: CapturedEntries,
    /// The base's chunks after the slice, listed again as they are.
    pub(crate) after: Vec<ChunkRef>,
    /// The newer runs' entries outside the slice, folded; tombstones kept (the base below
    /// may hold the keys they delete).
    pub(crate) rest: CapturedEntries,
}

/// Read `table` (at least two runs, the first its base) and fold one of `slices` key ranges
/// of its base, as the module documentation says. The slices split the base's chunks into
/// `slices` groups of about equal bytes; every run read is checked as a restore checks it.
pub(crate) fn slice_merge(
    storage: &dyn Storage,
    index: &ChunkIndex,
    table: &ManifestTable,
    slices: usize,
) -> Result<SliceMerge> {
    let Some(base) = table.runs.first() else {
        return Err(Error::InvalidArgument("internal: a slice merge of a table without runs".into()));
    };
    let base_index = version::read_checked_run_index(storage, index, &table.name, base)?;
    let chunks: Vec<ChunkRef> = base_index
        .chunks
        .into_iter()
        .map(|c| {
            let raw_len = index.get(&c.hash).map(|loc| u64::from(loc.chunk.raw_len)).ok_or_else(|| {
                Error::corrupted(format!("chunk {}", c.hash.to_hex()), "referenced, but no committed segment holds it")
            })?;
            Ok((c, raw_len))
        })
        .collect::<Result<_>>()?;
    // The newer runs folded (start 1: the base below them stays, so do their tombstones).
    let mut newer = merged_entries(storage, index, table, 1)?;
    let (a, b) = pick_slice(&chunks, &newer, slices);
    let lo = chunks.get(a).filter(|_| a > 0).map(|(c, _)| c.first_key.as_slice());
    let hi = chunks.get(b).map(|(c, _)| c.first_key.as_slice());
    let (from, to) = slice_bounds(&newer, lo, hi);

    let mut base_slice: CapturedEntries = Vec::new();
    let listed = chunks.get(a..b).unwrap_or_default().iter().map(|(c, _)| c);
    version::for_each_chunk_entry(storage, index, listed, |key, value| {
        base_slice.push((Key::from(key), value.map(Value::from)));
    })?;
    // The walk checks the slice's chunks against one another; its last key must also stay
    // below the first chunk kept after it.
    if let (Some(hi), Some((last, _))) = (hi, base_slice.last()) {
        if last.as_slice() >= hi {
            return Err(Error::corrupted(
                format!("run {} of table {}", base.index.to_hex(), table.name),
                "a chunk's keys overlap the next chunk of the run",
            ));
        }
    }
    let after_slice = newer.split_off(to);
    let in_slice = newer.split_off(from);
    let mut rest = newer;
    rest.extend(after_slice);
    let mut slice = merge_two(base_slice, in_slice);
    slice.retain(|(_, v)| v.is_some());
    let after = chunks.get(b..).unwrap_or_default().to_vec();
    let mut before = chunks;
    before.truncate(a);
    Ok(SliceMerge { before, slice, after, rest })
}

/// The chunk range `a..b` of the slice to merge: the base's chunks split into `slices`
/// groups of about equal raw bytes, and of those the one holding most of `newer`'s keys (the
/// first of equals).
fn pick_slice(chunks: &[ChunkRef], newer: &CapturedEntries, slices: usize) -> (usize, usize) {
    let total: u64 = chunks.iter().map(|(_, len)| len).sum::<u64>().max(1);
    let slices = slices.max(1) as u64;
    // Each chunk's group is where it starts within the base's bytes; a group starts at its
    // first chunk.
    let mut starts: Vec<usize> = Vec::new();
    let (mut offset, mut last_group) = (0u64, None);
    for (i, (_, len)) in chunks.iter().enumerate() {
        let group = u128::from(offset) * u128::from(slices) / u128::from(total);
        if last_group != Some(group) {
            starts.push(i);
            last_group = Some(group);
        }
        offset += len;
    }
    let mut best = (0, chunks.len());
    let mut best_count = None;
    for (j, &a) in starts.iter().enumerate() {
        let b = starts.get(j + 1).copied().unwrap_or(chunks.len());
        let lo = chunks.get(a).filter(|_| a > 0).map(|(c, _)| c.first_key.as_slice());
        let hi = chunks.get(b).map(|(c, _)| c.first_key.as_slice());
        let (from, to) = slice_bounds(newer, lo, hi);
        if best_count.is_none_or(|c| to - from > c) {
            best = (a, b);
            best_count = Some(to - from);
        }
    }
    best
}

/// The positions `from..to` of the sorted `entries` whose keys lie in `[lo, hi)` (`None`:
/// unbounded).
fn slice_bounds(entries: &CapturedEntries, lo: Option<&[u8]>, hi: Option<&[u8]>) -> (usize, usize) {
    let from = lo.map_or(0, |lo| entries.partition_point(|(k, _)| k.as_slice() < lo));
    let to = hi.map_or(entries.len(), |hi| entries.partition_point(|(k, _)| k.as_slice() < hi));
    (from, to.max(from))
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
    use crate::format::{self, ChunkHash};

    fn runs(sizes: &[u64]) -> Vec<RunRef> {
        sizes.iter().map(|&s| RunRef { index: ChunkHash([0; 32]), entries: s, data_bytes: s * 2, chunks: s }).collect()
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
    fn a_slice_holds_its_first_key_and_not_the_next_slices() {
        let newer = entries(&[("a", None), ("c", Some("1")), ("e", Some("1")), ("g", Some("1"))]);
        assert_eq!(slice_bounds(&newer, Some(b"c"), Some(b"g")), (1, 3));
        assert_eq!(slice_bounds(&newer, None, Some(b"c")), (0, 1));
        assert_eq!(slice_bounds(&newer, Some(b"g"), None), (3, 4));
        assert_eq!(slice_bounds(&newer, Some(b"h"), None), (4, 4));
    }

    #[test]
    fn the_slice_picked_is_the_one_the_newer_runs_hold_most_of() {
        let chunk = |first: &str| {
            (format::RunIndexEntry { hash: ChunkHash([0; 32]), entries: 1, first_key: first.as_bytes().to_vec() }, 100)
        };
        let chunks: Vec<ChunkRef> = ["b", "d", "f", "h"].into_iter().map(chunk).collect();
        // Two slices: chunks 0..2 (keys below "f") and 2..4.
        let low = entries(&[("a", Some("1")), ("e", Some("1")), ("f", Some("1"))]);
        assert_eq!(pick_slice(&chunks, &low, 2), (0, 2));
        let high = entries(&[("a", Some("1")), ("f", Some("1")), ("z", Some("1"))]);
        assert_eq!(pick_slice(&chunks, &high, 2), (2, 4));
        assert_eq!(pick_slice(&chunks, &Vec::new(), 4), (0, 1), "the first of equals");
        assert_eq!(pick_slice(&chunks, &high, 1), (0, 4));
    }

    #[test]
    fn slice_merges_only_for_a_base_that_outweighs_the_rest() {
        assert_eq!(plan(&runs(&[1000, 1, 1, 1, 1]), 4, 4), Some(Plan::Slice));
        assert_eq!(plan(&runs(&[1000, 1, 1, 1, 1]), 4, 1), Some(Plan::Runs { start: 1 }));
        assert_eq!(plan(&runs(&[10, 4, 4, 4, 4]), 4, 4), Some(Plan::Runs { start: 0 }));
        assert_eq!(plan(&runs(&[1000, 1, 1]), 4, 4), None);
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

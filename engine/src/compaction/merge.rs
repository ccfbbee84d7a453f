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

use crate::checkpoint::{ChunkRef, ChunkSink, RunWriter};
use crate::format::{ManifestTable, RunIndex, RunIndexEntry, RunRef};
use crate::storage::Storage;
use crate::version::{self, ChunkIndex, EntryCursor, KeyRange};
use crate::{Error, Result};

/// How a table's runs are merged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// `runs[start..]` become one run ([`merge_start`], [`write_merged_runs`]).
    Runs { start: usize },
    /// A slice of the base takes in the newer runs' entries of its key range; the rest of
    /// the newer runs become one run ([`write_slice_merge`]).
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

/// Write `table.runs[start..]` folded into one run: later runs win; when the merge includes
/// the oldest run, tombstones are dropped (nothing older needs them). Returns the runs
/// written (usually one; none if nothing is left).
///
/// The runs are read a chunk at a time and merged as they stream ([`merge_into`]): no run is
/// held whole and no map of every key is built. Every run is checked as a restore checks it.
pub(crate) fn write_merged_runs(
    storage: &dyn Storage,
    index: &ChunkIndex,
    table: &ManifestTable,
    start: usize,
    sink: &mut ChunkSink<'_>,
    target: usize,
    threads: usize,
) -> Result<Vec<RunRef>> {
    let runs = table.runs.get(start..).ok_or_else(|| Error::InvalidArgument("merge start beyond the runs".into()))?;
    let listings = runs
        .iter()
        .map(|run| version::read_checked_run_index(storage, index, &table.name, run))
        .collect::<Result<Vec<_>>>()?;
    let mut cursors: Vec<_> =
        listings.iter().map(|l| EntryCursor::new(storage, index, l.chunks.iter(), KeyRange::ALL)).collect();
    let mut writer = RunWriter::new(target, threads);
    merge_into(&mut cursors, start == 0, |key, value| writer.push_entry(sink, key, value))?;
    Ok(writer.finish(sink))
}

/// A slice merge of `table` (at least two runs, the first its base), as the module
/// documentation says: of `slices` key ranges of the base (its chunks split into groups of
/// about equal bytes), the one the newer runs hold most entries of takes in their entries of
/// its range, without tombstones (the base is the oldest run: nothing older needs them), and
/// is spliced between the base's other chunks, listed again as they are; the newer runs'
/// entries outside the range become one run, tombstones kept (the base below may hold the
/// keys they delete). The two outputs die at different merges, so each starts a segment.
/// Every run read is checked as a restore checks it.
pub(crate) fn write_slice_merge(
    storage: &dyn Storage,
    index: &ChunkIndex,
    table: &ManifestTable,
    slices: usize,
    sink: &mut ChunkSink<'_>,
    target: usize,
    threads: usize,
) -> Result<Vec<RunRef>> {
    let Some((base, newer)) = table.runs.split_first() else {
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
    let newer = newer
        .iter()
        .map(|run| version::read_checked_run_index(storage, index, &table.name, run))
        .collect::<Result<Vec<_>>>()?;
    let (a, b) = pick_slice(&chunks, slices, &mut cursors_in(storage, index, &newer, KeyRange::ALL))?;
    let lo = chunks.get(a).filter(|_| a > 0).map(|(c, _)| c.first_key.as_slice());
    let hi = chunks.get(b).map(|(c, _)| c.first_key.as_slice());

    // The slice: the base's chunks a..b and the newer runs' entries of [lo, hi), oldest first.
    sink.seal();
    let mut writer = RunWriter::new(target, threads);
    for chunk in chunks.get(..a).unwrap_or_default() {
        writer.push_ref(sink, chunk);
    }
    let slice_chunks: Vec<RunIndexEntry> =
        chunks.get(a..b).unwrap_or_default().iter().map(|(c, _)| c.clone()).collect();
    let mut cursors = vec![EntryCursor::new(storage, index, slice_chunks.iter(), KeyRange::ALL)];
    cursors.extend(cursors_in(storage, index, &newer, KeyRange { lo, hi }));
    merge_into(&mut cursors, true, |key, value| writer.push_entry(sink, key, value))?;
    // The walk checks the slice's chunks against one another; its last key must also stay
    // below the first chunk kept after it.
    if let (Some(hi), Some(last)) = (hi, cursors.first().and_then(|c| c.last_key_read())) {
        if last >= hi {
            return Err(Error::corrupted(
                format!("run {} of table {}", base.index.to_hex(), table.name),
                "a chunk's keys overlap the next chunk of the run",
            ));
        }
    }
    for chunk in chunks.get(b..).unwrap_or_default() {
        writer.push_ref(sink, chunk);
    }
    let mut runs = writer.finish(sink);

    // The rest: the newer runs' entries below the slice, then above it.
    sink.seal();
    let mut writer = RunWriter::new(target, threads);
    for range in [lo.map(|lo| KeyRange { lo: None, hi: Some(lo) }), hi.map(|hi| KeyRange { lo: Some(hi), hi: None })]
        .into_iter()
        .flatten()
    {
        let mut cursors = cursors_in(storage, index, &newer, range);
        merge_into(&mut cursors, false, |key, value| writer.push_entry(sink, key, value))?;
    }
    runs.extend(writer.finish(sink));
    Ok(runs)
}

/// Cursors over the entries of `range` in each of `listings`, reading only the chunks that can
/// hold them.
fn cursors_in<'a>(
    storage: &'a dyn Storage,
    index: &'a ChunkIndex,
    listings: &'a [RunIndex],
    range: KeyRange<'a>,
) -> Vec<EntryCursor<'a, std::slice::Iter<'a, RunIndexEntry>>> {
    listings
        .iter()
        .map(|l| EntryCursor::new(storage, index, chunks_for_range(&l.chunks, range).iter(), range))
        .collect()
}

/// The chunks of a run listing that can hold keys of `range`: a chunk holds the keys from its
/// first key up to the next chunk's.
fn chunks_for_range<'c>(chunks: &'c [RunIndexEntry], range: KeyRange<'_>) -> &'c [RunIndexEntry] {
    let from = range.lo.map_or(0, |lo| chunks.partition_point(|c| c.first_key.as_slice() <= lo).saturating_sub(1));
    let to = range.hi.map_or(chunks.len(), |hi| chunks.partition_point(|c| c.first_key.as_slice() < hi));
    chunks.get(from..to.max(from)).unwrap_or_default()
}

/// The chunk range `a..b` of the slice to merge: the base's chunks split into `slices`
/// groups of about equal raw bytes, and of those the one holding most keys of the `newer`
/// runs merged (the first of equals). This reads the newer runs once more, a fraction of
/// what the merge then reads: counting by the run indexes alone misjudges runs of a few
/// chunks, each spanning much of the key space.
fn pick_slice<S: SortedEntries>(chunks: &[ChunkRef], slices: usize, newer: &mut [S]) -> Result<(usize, usize)> {
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
    // A key's group is the number of later groups' first keys at or below it.
    let bounds: Vec<&[u8]> =
        starts.iter().skip(1).filter_map(|&i| chunks.get(i)).map(|(c, _)| c.first_key.as_slice()).collect();
    let mut counts = vec![0u64; starts.len().max(1)];
    merge_into(newer, false, |key, _| {
        if let Some(count) = counts.get_mut(bounds.partition_point(|b| *b <= key)) {
            *count += 1;
        }
    })?;
    let mut best = 0;
    for (j, count) in counts.iter().enumerate() {
        if counts.get(best).is_some_and(|b| count > b) {
            best = j;
        }
    }
    let a = starts.get(best).copied().unwrap_or(0);
    let b = starts.get(best + 1).copied().unwrap_or(chunks.len());
    Ok((a, b))
}

/// Sorted entries read one at a time: what [`merge_into`] merges.
pub(crate) trait SortedEntries {
    /// Make the next entry current; `false` at the end.
    fn fill(&mut self) -> Result<bool>;
    /// The current entry's key.
    fn key(&self) -> &[u8];
    /// The current entry's value (`None`: a tombstone).
    fn value(&self) -> Option<&[u8]>;
    /// Move past the current entry.
    fn advance(&mut self);
}

impl<'a, I: Iterator<Item = &'a RunIndexEntry>> SortedEntries for EntryCursor<'a, I> {
    fn fill(&mut self) -> Result<bool> {
        EntryCursor::fill(self)
    }
    fn key(&self) -> &[u8] {
        EntryCursor::key(self)
    }
    fn value(&self) -> Option<&[u8]> {
        EntryCursor::value(self)
    }
    fn advance(&mut self) {
        EntryCursor::advance(self)
    }
}

/// Hand `emit` every key of `inputs` (each sorted, strictly increasing, oldest run first)
/// once, in order, with the entry of the newest input holding it; tombstones are left out
/// when `drop_tombstones`.
///
/// The inputs not yet exhausted are kept ordered by their current key (the newer first on
/// equal keys), so each entry costs a binary search among the inputs: a merge folds at most a
/// few dozen runs.
fn merge_into<S: SortedEntries>(
    inputs: &mut [S],
    drop_tombstones: bool,
    mut emit: impl FnMut(&[u8], Option<&[u8]>),
) -> Result<()> {
    let mut order: Vec<usize> = Vec::with_capacity(inputs.len());
    for i in 0..inputs.len() {
        if inputs.get_mut(i).map_or(Ok(false), SortedEntries::fill)? {
            enqueue(inputs, &mut order, i);
        }
    }
    // The last key handed on (or shadowed): older inputs' entries of it are skipped.
    let mut last: Option<Vec<u8>> = None;
    while !order.is_empty() {
        let i = order.remove(0);
        let Some(input) = inputs.get_mut(i) else { break };
        if last.as_deref() != Some(input.key()) {
            let kept = last.get_or_insert_with(Vec::new);
            kept.clear();
            kept.extend_from_slice(input.key());
            if !(drop_tombstones && input.value().is_none()) {
                emit(input.key(), input.value());
            }
        }
        input.advance();
        if input.fill()? {
            enqueue(inputs, &mut order, i);
        }
    }
    Ok(())
}

/// Put input `i` (which has a current entry) into `order`, after every input with a smaller
/// key and every newer input with the same key.
fn enqueue<S: SortedEntries>(inputs: &[S], order: &mut Vec<usize>, i: usize) {
    let Some(key) = inputs.get(i).map(SortedEntries::key) else { return };
    let at = order.partition_point(|&j| {
        let other = inputs.get(j).map_or(&[][..], SortedEntries::key);
        other < key || (other == key && j > i)
    });
    order.insert(at, i);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::ChunkHash;

    fn runs(sizes: &[u64]) -> Vec<RunRef> {
        sizes.iter().map(|&s| RunRef { index: ChunkHash([0; 32]), entries: s, data_bytes: s * 2, chunks: s }).collect()
    }

    /// Sorted entries held in memory.
    struct Listed {
        entries: Vec<(Vec<u8>, Option<Vec<u8>>)>,
        at: usize,
    }

    impl SortedEntries for Listed {
        fn fill(&mut self) -> Result<bool> {
            Ok(self.at < self.entries.len())
        }
        fn key(&self) -> &[u8] {
            self.entries.get(self.at).map_or(&[][..], |(k, _)| k)
        }
        fn value(&self) -> Option<&[u8]> {
            self.entries.get(self.at)?.1.as_deref()
        }
        fn advance(&mut self) {
            self.at += 1;
        }
    }

    type Pairs = Vec<(Vec<u8>, Option<Vec<u8>>)>;

    fn pairs(list: &[(&str, Option<&str>)]) -> Pairs {
        list.iter().map(|(k, v)| (k.as_bytes().to_vec(), v.map(|v| v.as_bytes().to_vec()))).collect()
    }

    fn merged(inputs: &[&[(&str, Option<&str>)]], drop_tombstones: bool) -> Result<Pairs> {
        let mut inputs: Vec<Listed> = inputs.iter().map(|l| Listed { entries: pairs(l), at: 0 }).collect();
        let mut out = Vec::new();
        merge_into(&mut inputs, drop_tombstones, |k, v| out.push((k.to_vec(), v.map(<[u8]>::to_vec))))?;
        Ok(out)
    }

    #[test]
    fn the_newest_entry_wins_and_the_output_stays_sorted() -> Result<()> {
        let older: &[(&str, Option<&str>)] = &[("a", Some("1")), ("c", Some("1")), ("e", Some("1"))];
        let middle: &[(&str, Option<&str>)] = &[("c", Some("2")), ("e", Some("2")), ("g", Some("2"))];
        let newer: &[(&str, Option<&str>)] = &[("b", Some("3")), ("c", None), ("f", Some("3"))];
        let want =
            [("a", Some("1")), ("b", Some("3")), ("c", None), ("e", Some("2")), ("f", Some("3")), ("g", Some("2"))];
        assert_eq!(merged(&[older, middle, newer], false)?, pairs(&want));
        let without: Vec<_> = want.iter().copied().filter(|(_, v)| v.is_some()).collect();
        assert_eq!(merged(&[older, middle, newer], true)?, pairs(&without), "a tombstone shadows older entries too");
        assert_eq!(merged(&[older, &[]], false)?, pairs(older));
        assert_eq!(merged(&[&[], newer], false)?, pairs(newer));
        assert_eq!(merged(&[], false)?, Pairs::new());
        // Order of the inputs is age, not key: the same key in the older input loses.
        assert_eq!(merged(&[&[("k", Some("old"))], &[("k", Some("new"))]], false)?, pairs(&[("k", Some("new"))]));
        Ok(())
    }

    fn listed(first_keys: &[&str]) -> Vec<RunIndexEntry> {
        first_keys
            .iter()
            .map(|k| RunIndexEntry { hash: ChunkHash([0; 32]), entries: 10, first_key: k.as_bytes().to_vec() })
            .collect()
    }

    #[test]
    fn a_range_reads_the_chunks_that_can_hold_its_keys() {
        let chunks = listed(&["b", "d", "f", "h"]);
        let firsts = |range: KeyRange<'_>| {
            chunks_for_range(&chunks, range).iter().map(|c| c.first_key[0] as char).collect::<String>()
        };
        assert_eq!(firsts(KeyRange::ALL), "bdfh");
        assert_eq!(firsts(KeyRange { lo: Some(b"d"), hi: Some(b"f") }), "d");
        assert_eq!(firsts(KeyRange { lo: Some(b"e"), hi: Some(b"g") }), "df", "e is in d's chunk");
        assert_eq!(firsts(KeyRange { lo: None, hi: Some(b"b") }), "", "nothing is below the first chunk");
        assert_eq!(firsts(KeyRange { lo: Some(b"a"), hi: Some(b"c") }), "b");
        assert_eq!(firsts(KeyRange { lo: Some(b"z"), hi: None }), "h");
    }

    #[test]
    fn the_slice_picked_is_the_one_the_newer_runs_hold_most_of() -> Result<()> {
        let chunk = |first: &str| {
            (RunIndexEntry { hash: ChunkHash([0; 32]), entries: 1, first_key: first.as_bytes().to_vec() }, 100)
        };
        let chunks: Vec<ChunkRef> = ["b", "d", "f", "h"].into_iter().map(chunk).collect();
        let pick = |runs: &[&[(&str, Option<&str>)]], slices| {
            let mut inputs: Vec<Listed> = runs.iter().map(|l| Listed { entries: pairs(l), at: 0 }).collect();
            pick_slice(&chunks, slices, &mut inputs)
        };
        // Two slices: chunks 0..2 (keys below "f") and 2..4.
        let low: &[(&str, Option<&str>)] = &[("a", Some("1")), ("e", None), ("f", Some("1"))];
        assert_eq!(pick(&[low], 2)?, (0, 2), "a tombstone counts");
        let high: &[(&str, Option<&str>)] = &[("a", Some("1")), ("f", Some("1")), ("z", Some("1"))];
        assert_eq!(pick(&[high], 2)?, (2, 4));
        assert_eq!(pick(&[high, &[("a", Some("2")), ("b", Some("2"))]], 2)?, (0, 2));
        assert_eq!(pick(&[high, high], 2)?, (2, 4), "a key in two runs counts once");
        assert_eq!(pick(&[], 4)?, (0, 1), "the first of equals");
        assert_eq!(pick(&[high], 1)?, (0, 4));
        Ok(())
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

    /// A slice merge reads only its slice of the base and lists the chunk after it unread, so
    /// it checks the slice's last key against that chunk's first: a base whose run index puts
    /// a chunk holding "x" before a chunk starting at "d" is refused, not merged into a run
    /// with keys out of order. The honest base merges.
    #[test]
    fn a_slice_overlapping_the_chunk_after_it_is_corrupt() -> Result<()> {
        use crate::format::{encode_entries_chunk, encode_run_index_chunk, ChunkKind, Codec, SegmentId, SegmentWriter};
        use crate::storage::{segment_name, SimFs};
        let merge = |second_chunk: [&[u8]; 2]| -> Result<Vec<RunRef>> {
            let storage = SimFs::new().storage();
            let mut w = SegmentWriter::new(SegmentId(1));
            let mut run = |chunks: &[[&[u8]; 2]]| {
                let mut listing = RunIndex::default();
                for keys in chunks {
                    let raw = encode_entries_chunk(keys.iter().map(|k| (*k, Some(&b"v"[..]))));
                    let hash = ChunkHash::of(&raw);
                    w.push(hash, ChunkKind::Entries, &raw, Codec::None);
                    listing.chunks.push(RunIndexEntry { hash, entries: 2, first_key: keys[0].to_vec() });
                }
                let raw = encode_run_index_chunk(&listing);
                let hash = ChunkHash::of(&raw);
                w.push(hash, ChunkKind::RunIndex, &raw, Codec::None);
                RunRef { index: hash, entries: 2 * chunks.len() as u64, data_bytes: 0, chunks: chunks.len() as u64 }
            };
            // Two slices of two chunks each; the newer run's keys are all in the first.
            let base = run(&[[b"a", b"b"], second_chunk, [b"d", b"e"], [b"f", b"g"]]);
            let newer = run(&[[b"a", b"b"]]);
            let (bytes, table) = w.finish();
            storage.put(&segment_name(SegmentId(1)), &bytes)?;
            let mut index = ChunkIndex::default();
            index.add_segment(SegmentId(1), &table);
            let table = ManifestTable { name: "t".into(), runs: vec![base, newer] };
            let opts = crate::Options::new();
            let mut sink = ChunkSink::new(&|_| false, SegmentId(2), &opts);
            write_slice_merge(&storage, &index, &table, 2, &mut sink, 4096, 1)
        };
        let lied = merge([b"c", b"x"]);
        assert!(
            matches!(&lied, Err(Error::Corrupted { reason, .. }) if reason.contains("overlap the next chunk")),
            "{lied:?}"
        );
        let runs = merge([b"c", b"cc"])?;
        assert_eq!(runs.iter().map(|r| r.entries).sum::<u64>(), 8, "{runs:?}");
        Ok(())
    }
}

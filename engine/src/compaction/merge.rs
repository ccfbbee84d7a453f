//! Run merging: folding a table's newest runs into one, so a restore reads a bounded number of
//! runs. The merged run is written like any run (content-addressed chunks, so unchanged
//! chunks are reused) and becomes visible through a new, compaction-kind manifest.

use crate::format::{self, ManifestTable, RunRef};
use crate::state::CapturedEntries;
use crate::storage::Storage;
use crate::version::{self, ChunkIndex};
use crate::{Error, Result};
use std::collections::BTreeMap;

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
pub(crate) fn merged_entries(
    storage: &dyn Storage,
    index: &ChunkIndex,
    table: &ManifestTable,
    start: usize,
) -> Result<CapturedEntries> {
    let runs = table.runs.get(start..).ok_or_else(|| Error::InvalidArgument("merge start beyond the runs".into()))?;
    let mut merged: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
    for run in runs {
        let run_index = version::read_run_index(storage, index, &run.index)?;
        for c in &run_index.chunks {
            let raw = version::read_chunk(storage, index, &c.hash)?;
            format::decode_entries(&raw, |key, value| {
                merged.insert(key.to_vec(), value.map(<[u8]>::to_vec));
            })
            .map_err(|e| Error::corrupted(format!("chunk {}", c.hash.to_hex()), e.to_string()))?;
        }
    }
    let keep_tombstones = start > 0;
    Ok(merged.into_iter().filter(|(_, v)| keep_tombstones || v.is_some()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::ChunkHash;

    fn runs(sizes: &[u64]) -> Vec<RunRef> {
        sizes.iter().map(|&s| RunRef { index: ChunkHash([0; 32]), entries: s, data_bytes: s * 2, chunks: 1 }).collect()
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

//! The manifest chain and everything read back from storage: loading and validating
//! manifests, the chunk index (which segment holds which chunk), reading verified chunks, and
//! resolving a table at a checkpoint.

mod chunks;
mod manifests;

pub(crate) use chunks::{read_segment_table, ChunkIndex};
pub(crate) use manifests::{check_manifest_invariants, load_manifest, read_head};

use crate::format::{self, ChunkHash, ManifestTable, RunIndex};
use crate::state::Key;
use crate::storage::{segment_name, Storage};
use crate::{Error, Result};
use std::collections::BTreeMap;

/// Read a chunk by hash and verify it (blake3 of the raw bytes must equal its name).
pub(crate) fn read_chunk(storage: &dyn Storage, index: &ChunkIndex, hash: &ChunkHash) -> Result<Vec<u8>> {
    let loc = index.get(hash).ok_or_else(|| {
        Error::corrupted(format!("chunk {}", hash.to_hex()), "referenced, but no committed segment holds it intact")
    })?;
    let name = segment_name(loc.segment);
    let stored = storage.read_range(&name, loc.chunk.offset, loc.chunk.stored_len as usize)?;
    format::segment_chunk_bytes(&loc.chunk, &stored)
        .map_err(|e| Error::corrupted(format!("{name} (chunk {})", hash.to_hex()), e.to_string()))
}

/// Read and decode a run index chunk.
pub(crate) fn read_run_index(storage: &dyn Storage, index: &ChunkIndex, hash: &ChunkHash) -> Result<RunIndex> {
    let raw = read_chunk(storage, index, hash)?;
    format::decode_run_index(&raw)
        .map_err(|e| Error::corrupted(format!("run index chunk {}", hash.to_hex()), e.to_string()))
}

/// Apply every entry of every run of `table`, oldest run first, to an empty map: the table's
/// content at the checkpoint. Checks each run's recorded counts against what it holds.
pub(crate) fn materialize_table(
    storage: &dyn Storage,
    index: &ChunkIndex,
    table: &ManifestTable,
) -> Result<BTreeMap<Key, Vec<u8>>> {
    let mut data = BTreeMap::new();
    for run in &table.runs {
        let run_index = read_run_index(storage, index, &run.index)?;
        let object = format!("run {} of table {}", run.index.to_hex(), table.name);
        if run_index.chunks.len() as u64 != run.chunks {
            return Err(Error::corrupted(object, "chunk count differs from the manifest"));
        }
        let mut entries = 0u64;
        let mut last_key: Option<Vec<u8>> = None;
        for c in &run_index.chunks {
            let raw = read_chunk(storage, index, &c.hash)?;
            let object = format!("chunk {}", c.hash.to_hex());
            // The run index's first key is the chunk's, and keys increase across the run.
            let mut first: Option<Vec<u8>> = None;
            format::decode_entries(&raw, |key, _| {
                if first.is_none() {
                    first = Some(key.to_vec());
                }
            })
            .map_err(|e| Error::corrupted(&object, e.to_string()))?;
            if first.as_deref() != Some(c.first_key.as_slice()) {
                return Err(Error::corrupted(&object, "its first key differs from the run index"));
            }
            if last_key.as_ref().is_some_and(|last| last.as_slice() >= c.first_key.as_slice()) {
                return Err(Error::corrupted(&object, "its keys overlap the previous chunk of the run"));
            }
            let n = format::decode_entries(&raw, |key, value| {
                last_key = Some(key.to_vec());
                match value {
                    Some(v) => {
                        data.insert(Key::from(key), v.to_vec());
                    }
                    None => {
                        data.remove(key);
                    }
                }
            })
            .map_err(|e| Error::corrupted(&object, e.to_string()))?;
            if n != c.entries {
                return Err(Error::corrupted(object, "entry count differs from the run index"));
            }
            entries += n;
        }
        if entries != run.entries {
            return Err(Error::corrupted(object, "entry count differs from the manifest"));
        }
    }
    Ok(data)
}

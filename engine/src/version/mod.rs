//! The manifest chain and everything read back from storage: loading and validating
//! manifests, the chunk index (which segment holds which chunk), reading verified chunks, and
//! resolving a table at a checkpoint.

mod chunks;
mod manifests;

pub(crate) use chunks::{read_segment_table, ChunkIndex};
pub(crate) use manifests::{check_manifest_invariants, load_manifest, read_head};

use crate::format::{self, ChunkHash, ManifestTable, RunIndex, RunIndexEntry, RunRef};
use crate::state::{shard_of, Key, TableData, Value, SHARDS};
use crate::storage::{segment_name, Storage};
use crate::{Error, Result};

/// Read a chunk by hash and verify it (blake3 of the raw bytes must equal its name). A delta
/// chunk is rebuilt from its base, which must be stored whole (not itself a delta).
pub(crate) fn read_chunk(storage: &dyn Storage, index: &ChunkIndex, hash: &ChunkHash) -> Result<Vec<u8>> {
    let (name, loc, stored) = read_stored(storage, index, hash)?;
    if loc.chunk.codec != format::Codec::Delta {
        return format::segment_chunk_into_raw(&loc.chunk, stored)
            .map_err(|e| Error::corrupted(format!("{name} (chunk {})", hash.to_hex()), e.to_string()));
    }
    rebuild_delta(storage, index, &name, &loc, &stored)
}

/// The stored bytes of the delta chunk `hash`, once it has been rebuilt from its base and
/// verified: for a copy that stays a delta (a GC rewrite), read once.
pub(crate) fn read_delta_stored(storage: &dyn Storage, index: &ChunkIndex, hash: &ChunkHash) -> Result<Vec<u8>> {
    let (name, loc, stored) = read_stored(storage, index, hash)?;
    if loc.chunk.codec != format::Codec::Delta {
        return Err(Error::corrupted(format!("{name} (chunk {})", hash.to_hex()), "not stored as a delta"));
    }
    rebuild_delta(storage, index, &name, &loc, &stored)?;
    Ok(stored)
}

/// The raw bytes of the delta chunk at `loc` (in segment `name`, stored as `stored`), rebuilt
/// from its base and verified.
fn rebuild_delta(
    storage: &dyn Storage,
    index: &ChunkIndex,
    name: &str,
    loc: &chunks::ChunkLocation,
    stored: &[u8],
) -> Result<Vec<u8>> {
    let hash = loc.chunk.hash;
    let corrupted =
        |e: format::DecodeError| Error::corrupted(format!("{name} (chunk {})", hash.to_hex()), e.to_string());
    let base_hash = format::delta_base(stored).map_err(corrupted)?;
    let (base_name, base_loc, base_stored) = read_stored(storage, index, &base_hash)?;
    if base_loc.chunk.codec == format::Codec::Delta {
        return Err(Error::corrupted(
            format!("{name} (chunk {})", hash.to_hex()),
            format!("its base {} is a delta chunk too", base_hash.to_hex()),
        ));
    }
    let base = format::segment_chunk_into_raw(&base_loc.chunk, base_stored)
        .map_err(|e| Error::corrupted(format!("{base_name} (chunk {})", base_hash.to_hex()), e.to_string()))?;
    format::apply_delta(&loc.chunk, stored, &base).map_err(corrupted)
}

/// A chunk's home and stored bytes, as read.
fn read_stored(
    storage: &dyn Storage,
    index: &ChunkIndex,
    hash: &ChunkHash,
) -> Result<(String, chunks::ChunkLocation, Vec<u8>)> {
    let loc = *index.get(hash).ok_or_else(|| {
        Error::corrupted(format!("chunk {}", hash.to_hex()), "referenced, but no committed segment holds it intact")
    })?;
    let name = segment_name(loc.segment);
    let stored = storage.read_range(&name, loc.chunk.offset, loc.chunk.stored_len as usize)?;
    Ok((name, loc, stored))
}

/// Read and decode a run index chunk.
pub(crate) fn read_run_index(storage: &dyn Storage, index: &ChunkIndex, hash: &ChunkHash) -> Result<RunIndex> {
    let raw = read_chunk(storage, index, hash)?;
    format::decode_run_index(&raw)
        .map_err(|e| Error::corrupted(format!("run index chunk {}", hash.to_hex()), e.to_string()))
}

/// Tables whose runs hold at least this many entries are materialized on several threads (see
/// [`materialize_table`]); below it the threads cost more than they save.
const PIPELINE_MIN_ENTRIES: u64 = 1 << 15;

/// Entries per batch handed from the reading thread to a shard's filling thread.
const BATCH_ENTRIES: usize = 4096;

/// Batches in flight to each shard: enough to ride out a slow read, few enough that the
/// memory they hold stays small (a few megabytes in all at 100-byte values).
const BATCHES_IN_FLIGHT: usize = 4;

/// A batch of decoded entries (`None`: a tombstone), in run order.
type Batch = Vec<(Key, Option<Value>)>;

/// Apply every entry of every run of `table`, oldest run first, to an empty map: the table's
/// content at the checkpoint, every run checked as [`for_each_run_entry`] says.
///
/// A large table is built by several threads: the caller's reads, verifies and decodes the
/// chunks, allocates keys and values and sorts them by shard ([`crate::state::shard_of`]);
/// each of the map's shards is filled by a thread of its own. Inserting is the larger half
/// (each insert is a cache miss in a large map), so splitting it lets two cores restore in
/// well under the time of one. Each shard receives its batches through a FIFO channel from
/// the one reader, so it sees its keys' entries in exactly the sequential order.
pub(crate) fn materialize_table(storage: &dyn Storage, index: &ChunkIndex, table: &ManifestTable) -> Result<TableData> {
    let entries: u64 = table.runs.iter().map(|r| r.entries).sum();
    if entries >= PIPELINE_MIN_ENTRIES {
        if let Some(data) = materialize_in_parallel(storage, index, table)? {
            return Ok(data);
        }
    }
    materialize_sequentially(storage, index, table)
}

/// Room for the largest run's entries: at least that many keys were live at some
/// checkpoint, and usually about all of them (a base run and the runs of the checkpoints
/// since, which mostly update its keys). The map grows midway if newer runs add more.
///
/// Not the sum of the runs' entries, the bound on the keys: the map keeps its capacity for as
/// long as the table lives, and with runs piling up (compaction off, or lagging the
/// checkpoints) the sum counts every update again. After 300 checkpoints of 10,000 updates
/// of the standard 1M-key table, with no compaction, a restore sized so took the process
/// from 274 MB of RSS to 575 MB; sized for the largest run, it stays within the load's peak.
fn sized_for(table: &ManifestTable) -> TableData {
    TableData::with_capacity(table.runs.iter().map(|r| r.entries).max().unwrap_or(0).min(1 << 24) as usize)
}

fn materialize_sequentially(storage: &dyn Storage, index: &ChunkIndex, table: &ManifestTable) -> Result<TableData> {
    let mut data = sized_for(table);
    // On a failed check the whole map is discarded, so nothing unverified escapes.
    read_table_entries(storage, index, table, |key, value| match value {
        Some(v) => {
            data.insert(Key::from(key), Value::from(v));
        }
        None => {
            data.remove(key);
        }
    })?;
    Ok(data)
}

/// The parallel build of [`materialize_table`]; `Ok(None)` if a thread could not be started
/// (the caller then builds the map on its own thread).
fn materialize_in_parallel(
    storage: &dyn Storage,
    index: &ChunkIndex,
    table: &ManifestTable,
) -> Result<Option<TableData>> {
    let mut data = sized_for(table);
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..SHARDS).map(|_| crossbeam_channel::bounded::<Batch>(BATCHES_IN_FLIGHT)).unzip();
    let complete = std::thread::scope(|scope| -> Result<bool> {
        let fillers: Vec<_> = data
            .shards_mut()
            .iter_mut()
            .zip(receivers)
            .map(|(shard, rx)| {
                std::thread::Builder::new().name("cairn-restore".into()).spawn_scoped(scope, move || fill(shard, rx))
            })
            .collect();
        // The reading half runs here, so the keys and values come from the caller's own heap
        // (say, the memory of a store it just closed) rather than a fresh arena of the
        // allocator's for a new thread: with the reading on a thread of its own, a reopen in
        // the same process held both at once.
        let read = read_into_batches(storage, index, table, &senders);
        // Hang up, so each filler returns once its last batch is in.
        drop(senders);
        let mut started = true;
        for filler in fillers {
            match filler {
                Ok(handle) => handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                Err(_) => started = false,
            }
        }
        Ok(read? && started)
    })?;
    Ok(complete.then_some(data))
}

/// The reading half of [`materialize_in_parallel`]: every entry of `table`, decoded, to the
/// sender of its shard. `Ok(false)` if a shard's receiver is gone (its thread did not start),
/// so the entries did not all arrive.
fn read_into_batches(
    storage: &dyn Storage,
    index: &ChunkIndex,
    table: &ManifestTable,
    senders: &[crossbeam_channel::Sender<Batch>],
) -> Result<bool> {
    let mut batches: Vec<Batch> = senders.iter().map(|_| Vec::with_capacity(BATCH_ENTRIES)).collect();
    let mut delivered = true;
    read_table_entries(storage, index, table, |key, value| {
        let shard = shard_of(key);
        let (Some(batch), Some(tx)) = (batches.get_mut(shard), senders.get(shard)) else {
            delivered = false;
            return;
        };
        if !delivered {
            return;
        }
        batch.push((Key::from(key), value.map(Value::from)));
        if batch.len() == BATCH_ENTRIES {
            let full = std::mem::replace(batch, Vec::with_capacity(BATCH_ENTRIES));
            delivered = tx.send(full).is_ok();
        }
    })?;
    for (batch, tx) in batches.into_iter().zip(senders) {
        if delivered && !batch.is_empty() {
            delivered = tx.send(batch).is_ok();
        }
    }
    Ok(delivered)
}

/// Apply batches to one shard until the reader hangs up (after its last batch, or on an error).
fn fill(shard: &mut std::collections::HashMap<Key, Value>, batches: crossbeam_channel::Receiver<Batch>) {
    for batch in batches {
        for (key, value) in batch {
            match value {
                Some(v) => {
                    shard.insert(key, v);
                }
                None => {
                    shard.remove(&key);
                }
            }
        }
    }
}

/// Call `f` with every entry of every run of `table`, oldest run first, each run checked.
fn read_table_entries(
    storage: &dyn Storage,
    index: &ChunkIndex,
    table: &ManifestTable,
    mut f: impl FnMut(&[u8], Option<&[u8]>),
) -> Result<()> {
    for run in &table.runs {
        for_each_run_entry(storage, index, &table.name, run, &mut f)?;
    }
    Ok(())
}

/// Call `f` with every entry of `run` (of table `table_name`), in order, checking what the
/// manifest and run index say against what the chunks hold: the chunk and entry counts
/// ([`read_checked_run_index`]), each chunk's first key and entry count, and that chunks do
/// not overlap (within a chunk the decoder checks that keys strictly increase). On an error
/// `f` may already have seen some entries; callers discard what they built from them.
pub(crate) fn for_each_run_entry(
    storage: &dyn Storage,
    index: &ChunkIndex,
    table_name: &str,
    run: &RunRef,
    mut f: impl FnMut(&[u8], Option<&[u8]>),
) -> Result<()> {
    let run_index = read_checked_run_index(storage, index, table_name, run)?;
    let mut cursor = EntryCursor::new(storage, index, &run_index.chunks, KeyRange::ALL);
    while cursor.fill()? {
        f(cursor.key(), cursor.value());
        cursor.advance();
    }
    Ok(())
}

/// The run index of `run`, checked against the manifest: as many chunks as it says, holding
/// as many entries in all (each chunk's own count is checked when it is read).
pub(crate) fn read_checked_run_index(
    storage: &dyn Storage,
    index: &ChunkIndex,
    table_name: &str,
    run: &RunRef,
) -> Result<RunIndex> {
    let run_index = read_run_index(storage, index, &run.index)?;
    let object = || format!("run {} of table {table_name}", run.index.to_hex());
    if run_index.chunks.len() as u64 != run.chunks {
        return Err(Error::corrupted(object(), "chunk count differs from the manifest"));
    }
    if run_index.chunks.iter().map(|c| c.entries).sum::<u64>() != run.entries {
        return Err(Error::corrupted(object(), "entry count differs from the manifest"));
    }
    Ok(run_index)
}

/// The keys `lo <= key < hi` (`None`: unbounded).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct KeyRange<'k> {
    pub(crate) lo: Option<&'k [u8]>,
    pub(crate) hi: Option<&'k [u8]>,
}

impl KeyRange<'_> {
    /// Every key.
    pub(crate) const ALL: KeyRange<'static> = KeyRange { lo: None, hi: None };
}

/// The entries of consecutive chunks of one run index, in key order, read and verified one
/// chunk at a time: a merge streams runs through it without holding any whole. Each chunk's
/// first key and entry count are checked against the index, and chunks must not overlap
/// (within a chunk the decoder checks that keys strictly increase). Entries outside its
/// [`KeyRange`] are skipped; reading stops at the first key past the range.
///
/// On an error the entries already handed on were of chunks that passed every check, but the
/// listing as a whole did not: callers discard what they built from them.
pub(crate) struct EntryCursor<'a, I> {
    storage: &'a dyn Storage,
    index: &'a ChunkIndex,
    chunks: I,
    range: KeyRange<'a>,
    /// The current chunk's raw bytes and where its entries lie; `spans[next]` is the
    /// current entry.
    raw: Vec<u8>,
    spans: Vec<format::EntryRanges>,
    next: usize,
    done: bool,
}

impl<'a, I: Iterator<Item = &'a RunIndexEntry>> EntryCursor<'a, I> {
    pub(crate) fn new(
        storage: &'a dyn Storage,
        index: &'a ChunkIndex,
        chunks: impl IntoIterator<IntoIter = I>,
        range: KeyRange<'a>,
    ) -> Self {
        EntryCursor {
            storage,
            index,
            chunks: chunks.into_iter(),
            range,
            raw: Vec::new(),
            spans: Vec::new(),
            next: 0,
            done: false,
        }
    }

    /// Make the next entry in range current, reading chunks as needed; `false` at the end.
    pub(crate) fn fill(&mut self) -> Result<bool> {
        while !self.done {
            let Some(span) = self.spans.get(self.next) else {
                match self.chunks.next() {
                    Some(chunk) => self.load(chunk)?,
                    None => self.done = true,
                }
                continue;
            };
            let key = self.raw.get(span.key.clone()).unwrap_or_default();
            if self.range.hi.is_some_and(|hi| key >= hi) {
                self.done = true;
            } else if self.range.lo.is_some_and(|lo| key < lo) {
                self.next += 1;
            } else {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The current entry's key (after [`EntryCursor::fill`] returned `true`).
    pub(crate) fn key(&self) -> &[u8] {
        self.spans.get(self.next).and_then(|s| self.raw.get(s.key.clone())).unwrap_or_default()
    }

    /// The current entry's value (`None`: a tombstone).
    pub(crate) fn value(&self) -> Option<&[u8]> {
        let span = self.spans.get(self.next)?;
        self.raw.get(span.value.clone()?)
    }

    /// Move past the current entry.
    pub(crate) fn advance(&mut self) {
        self.next += 1;
    }

    /// The last key of the last chunk read, in range or not: once the cursor is at its end,
    /// the listing's last key.
    pub(crate) fn last_key_read(&self) -> Option<&[u8]> {
        self.spans.last().and_then(|s| self.raw.get(s.key.clone()))
    }

    /// Read, verify and decode `chunk`, the next of the listing.
    fn load(&mut self, chunk: &RunIndexEntry) -> Result<()> {
        let object = format!("chunk {}", chunk.hash.to_hex());
        // The previous chunk's last key is still at hand: it must be below this one's first.
        let previous_last = self.spans.last().and_then(|s| self.raw.get(s.key.clone()));
        if previous_last.is_some_and(|last| last >= chunk.first_key.as_slice()) {
            return Err(Error::corrupted(&object, "its keys overlap the previous chunk of the run"));
        }
        let raw = read_chunk(self.storage, self.index, &chunk.hash)?;
        let spans = format::entry_ranges(&raw).map_err(|e| Error::corrupted(&object, e.to_string()))?;
        let first = spans.first().and_then(|s| raw.get(s.key.clone()));
        if first != Some(chunk.first_key.as_slice()) {
            return Err(Error::corrupted(&object, "its first key differs from the run index"));
        }
        if spans.len() as u64 != chunk.entries {
            return Err(Error::corrupted(object, "entry count differs from the run index"));
        }
        (self.raw, self.spans, self.next) = (raw, spans, 0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{ChunkKind, Codec, RunIndexEntry, SegmentId, SegmentWriter};
    use crate::storage::{segment_name, SimFs};

    /// A run of two intact chunks (hashes match), "a" and "c" then `second`, whose run index
    /// names `first_keys`.
    fn materialize_run(first_keys: [&[u8]; 2], second: [&[u8]; 2]) -> Result<TableData> {
        let chunks = [
            format::encode_entries_chunk([(&b"a"[..], Some(&b"1"[..])), (&b"c"[..], Some(&b"2"[..]))]),
            format::encode_entries_chunk([(second[0], Some(&b"3"[..])), (second[1], Some(&b"4"[..]))]),
        ];
        let mut w = SegmentWriter::new(SegmentId(1));
        let mut index = RunIndex::default();
        for (raw, first_key) in chunks.iter().zip(first_keys) {
            let hash = ChunkHash::of(raw);
            w.push(hash, ChunkKind::Entries, raw, Codec::None);
            index.chunks.push(RunIndexEntry { hash, entries: 2, first_key: first_key.to_vec() });
        }
        let index_raw = format::encode_run_index_chunk(&index);
        let index_hash = ChunkHash::of(&index_raw);
        w.push(index_hash, ChunkKind::RunIndex, &index_raw, Codec::None);
        let (bytes, table) = w.finish();
        let storage = SimFs::new().storage();
        storage.put(&segment_name(SegmentId(1)), &bytes)?;
        let mut chunk_index = ChunkIndex::default();
        chunk_index.add_segment(SegmentId(1), &table);
        let run = RunRef { index: index_hash, entries: 4, data_bytes: 100, chunks: 2 };
        materialize_table(&storage, &chunk_index, &ManifestTable { name: "t".into(), runs: vec![run] })
    }

    #[test]
    fn a_run_index_that_disagrees_with_its_chunks_is_corrupt() {
        // The second chunk's first key is "b", not "x".
        let lied = materialize_run([b"a", b"x"], [b"b", b"d"]);
        assert!(
            matches!(&lied, Err(Error::Corrupted { reason, .. }) if reason.contains("first key")),
            "{:?}",
            lied.err()
        );
        // Honest first keys, but the chunks' key ranges overlap ("a".."c", then "b"..).
        let overlap = materialize_run([b"a", b"b"], [b"b", b"d"]);
        assert!(
            matches!(&overlap, Err(Error::Corrupted { reason, .. }) if reason.contains("overlap")),
            "{:?}",
            overlap.err()
        );
        // A chunk whose own keys go backwards ("x" then "d"): the decoder refuses it.
        let backwards = materialize_run([b"a", b"x"], [b"x", b"d"]);
        assert!(
            matches!(&backwards, Err(Error::Corrupted { reason, .. }) if reason.contains("strictly increasing")),
            "{:?}",
            backwards.err()
        );
        // Honest and ordered: it reads.
        assert_eq!(materialize_run([b"a", b"x"], [b"x", b"y"]).map(|d| d.len()).ok(), Some(4));
    }

    /// A table of many runs that update the same keys is restored into a map sized for its
    /// keys, not for every entry of every run; one whose newer runs add keys grows to hold
    /// them. Both read back exactly, through the parallel build (over 32,768 entries).
    #[test]
    fn a_restored_map_is_sized_for_the_keys_not_every_update() -> Result<()> {
        use crate::checkpoint::{commit, write_run, ChunkSink, NewManifest};
        use crate::format::{CheckpointId, ManifestKind};
        use crate::state::CapturedEntries;
        const KEYS: u32 = 40_000;
        // Run r writes keys [from, KEYS + added * r) with value r, from 0 for the first run.
        let restore = |added: u32| -> Result<(TableData, u64)> {
            let storage = SimFs::new().storage();
            let opts = crate::Options::new();
            let mut sink = ChunkSink::new(&|_| false, SegmentId(1), &opts);
            let mut runs = Vec::new();
            for r in 0u32..8 {
                let from = if r == 0 { 0 } else { KEYS / 2 };
                let mut entries: CapturedEntries = (from..KEYS + added * r)
                    .map(|i| (Key::from(&i.to_be_bytes()[..]), Some(Value::from(vec![r as u8; 8]))))
                    .collect();
                runs.extend(write_run(&mut sink, &mut entries, 4096, 1));
            }
            let sum: u64 = runs.iter().map(|r| r.entries).sum();
            let new = NewManifest {
                id: CheckpointId(1),
                kind: ManifestKind::Checkpoint,
                parent: None,
                tables: std::collections::BTreeMap::from([("t".to_string(), runs)]),
                metadata: Vec::new(),
                dirty_keys: sum,
                started: std::time::Instant::now(),
            };
            let persisted = commit(&storage, sink, new, None)?;
            let mut index = ChunkIndex::default();
            for (id, _) in &persisted.segments {
                index.add_segment(*id, &read_segment_table(&storage, *id)?);
            }
            Ok((materialize_table(&storage, &index, &persisted.manifest.tables[0])?, sum))
        };
        for added in [0u32, 5_000] {
            let (data, sum) = restore(added)?;
            let keys = KEYS + added * 7;
            assert_eq!(data.len(), keys as usize);
            for i in (0..keys).step_by(97) {
                // Keys below KEYS / 2 are the first run's alone; every other key is the last run's.
                let newest = if i < KEYS / 2 { 0 } else { 7 };
                assert_eq!(data.get(&i.to_be_bytes()[..]).map(|v| v.to_vec()), Some(vec![newest as u8; 8]), "key {i}");
            }
            assert!(
                data.capacity() < TableData::with_capacity(sum as usize).capacity(),
                "{} slots for {keys} keys ({sum} entries)",
                data.capacity()
            );
        }
        Ok(())
    }
}

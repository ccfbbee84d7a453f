//! Pins, explicit deletion and compaction (retention, run merging, garbage collection).

use super::yielding::{WaitBudget, Yielding};
use super::{Inner, Store};
use crate::checkpoint::{self, ChunkSink, NewManifest};
use crate::compaction::{gc, merge, select_retained, Candidate, CompactionReport, Retention};
use crate::format::{self, CheckpointId, ManifestKind, Pin, SegmentId, SegmentWriter};
use crate::storage::{
    manifest_name, parse_manifest_name, parse_segment_name, segment_name, Storage, MANIFESTS, PINS, SEGMENTS,
};
use crate::version::{self, load_manifest};
use crate::{Error, Result};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A step of a compaction, reported to [`Store::compact_with_hook`]'s hook after it is done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompactStep {
    /// Runs were merged (or nothing needed merging).
    Merged,
    /// Manifests retention dropped were deleted.
    RetentionApplied,
    /// The GC worked out its live set.
    Marked,
    /// Sparse segments were copied and HEAD names the copy.
    Rewritten,
    /// One dead segment was deleted.
    SegmentDeleted,
}

/// Manifests before HEAD, on its chain, that retention never removes.
pub(crate) const PREVIOUS_MANIFESTS_KEPT: usize = 2;

/// Manifests retention deletes under one hold of the store's lock (about 0.2 ms each here).
const RETENTION_DELETE_BATCH: usize = 8;

fn now_unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Inner {
    fn pinned(&self, id: CheckpointId) -> Option<&Pin> {
        self.pins.iter().find(|p| p.id == id)
    }

    /// Checkpoints compaction must keep whatever the policy says.
    fn always_kept(&self) -> BTreeSet<CheckpointId> {
        let mut keep: BTreeSet<CheckpointId> = self.pins.iter().map(|p| p.id).collect();
        keep.extend(self.viewed.keys().copied());
        keep.extend(self.head.map(|h| h.current));
        keep
    }
}

impl Store {
    /// Pin checkpoint `id` as the savepoint `name`: compaction never removes it while pinned.
    /// Pinning an existing name moves it to `id`. Durable when it returns.
    pub fn pin(&self, id: CheckpointId, name: &str) -> Result<()> {
        if name.is_empty() || name.len() > format::MAX_TABLE_NAME_LEN {
            return Err(Error::InvalidArgument(format!(
                "pin name of {} bytes is outside 1..={}",
                name.len(),
                format::MAX_TABLE_NAME_LEN
            )));
        }
        let mut inner = self.shared.lock()?;
        inner.check_writable()?;
        self.committed_manifest(&inner, id)?;
        let mut pins = inner.pins.clone();
        pins.retain(|p| p.name != name);
        if pins.len() >= format::MAX_PINS {
            return Err(Error::InvalidArgument(format!("at most {} pins", format::MAX_PINS)));
        }
        pins.push(Pin { id, name: name.to_string() });
        pins.sort_by(|a, b| a.name.cmp(&b.name));
        self.write_pins(&mut inner, pins)
    }

    /// Remove the pin `name`; returns whether it existed. Durable when it returns.
    pub fn unpin(&self, name: &str) -> Result<bool> {
        let mut inner = self.shared.lock()?;
        inner.check_writable()?;
        let mut pins = inner.pins.clone();
        let before = pins.len();
        pins.retain(|p| p.name != name);
        if pins.len() == before {
            return Ok(false);
        }
        self.write_pins(&mut inner, pins)?;
        Ok(true)
    }

    /// The pinned savepoints: (name, checkpoint), sorted by name.
    pub fn pins(&self) -> Result<Vec<(String, CheckpointId)>> {
        Ok(self.shared.lock()?.pins.iter().map(|p| (p.name.clone(), p.id)).collect())
    }

    fn write_pins(&self, inner: &mut Inner, pins: Vec<Pin>) -> Result<()> {
        let st = self.shared.storage.as_ref();
        let written = st.put(PINS, &format::encode_pins(&pins)).and_then(|()| st.sync());
        if let Err(e) = written {
            inner.poison(&e);
            return Err(e);
        }
        inner.pins = pins;
        Ok(())
    }

    /// Delete checkpoint `id` now. The HEAD checkpoint, a pinned one and one an open view
    /// holds are refused with [`Error::InvalidArgument`]. Its space is reclaimed by the next
    /// [`Store::compact`].
    pub fn delete_checkpoint(&self, id: CheckpointId) -> Result<()> {
        let mut inner = self.shared.lock()?;
        inner.check_writable()?;
        self.committed_manifest(&inner, id)?;
        if inner.head.map(|h| h.current) == Some(id) {
            return Err(Error::InvalidArgument(format!("checkpoint {id} is HEAD")));
        }
        if let Some(pin) = inner.pinned(id) {
            return Err(Error::InvalidArgument(format!("checkpoint {id} is pinned as {:?}", pin.name)));
        }
        if inner.viewed.contains_key(&id) {
            return Err(Error::InvalidArgument(format!("checkpoint {id} is held by an open view")));
        }
        let st = self.shared.storage.as_ref();
        if let Err(e) = st.delete(&manifest_name(id)).and_then(|()| st.sync()) {
            inner.poison(&e);
            return Err(e);
        }
        Ok(())
    }

    /// Compact with the retention policy of the store's [`crate::Options`].
    pub fn compact(&self) -> Result<CompactionReport> {
        self.compact_with(&self.shared.opts.retention.clone())
    }

    /// Compact: merge runs of tables past [`crate::Options::max_runs_per_table`] into a new
    /// compaction checkpoint, delete the checkpoints `retention` drops, then collect garbage:
    /// delete segments no retained checkpoint needs and rewrite those whose live fraction is
    /// below [`crate::Options::segment_live_fraction_min`]. A rewrite stores a chunk that only
    /// checkpoints older than a merge need as a delta against the chunk of HEAD that replaced
    /// it (counted at that size in the live fraction; see `format-spec.md` 3.6a).
    ///
    /// Every retained checkpoint reads exactly as before. A crash at any instant loses
    /// nothing; running it again finishes the job. Writers wait only while a step holds the
    /// store's lock; checkpoints may run between steps. Its reads, writes, deletes and syncs
    /// give way to checkpoints in flight, for at most [`crate::COMPACTION_YIELD_MAX`] each
    /// (see [`crate::Options::background_compaction`]).
    pub fn compact_with(&self, retention: &Retention) -> Result<CompactionReport> {
        self.compact_with_hook(retention, |_| Ok(()))
    }

    /// [`Store::compact_with`], calling `hook` after each step without the store's lock held:
    /// for progress reports, and so tests can interleave checkpoints at every step boundary.
    /// An error from `hook` stops the compaction where it is (which is safe: see above).
    pub fn compact_with_hook(
        &self,
        retention: &Retention,
        hook: impl FnMut(CompactStep) -> Result<()>,
    ) -> Result<CompactionReport> {
        self.compact_keeping(retention, &BTreeSet::new(), hook)
    }

    /// [`Store::compact_with_hook`], also keeping the checkpoints in `keep` (a coordinator
    /// keeps every shard checkpoint a retained global checkpoint names).
    pub(crate) fn compact_keeping(
        &self,
        retention: &Retention,
        keep: &BTreeSet<CheckpointId>,
        mut hook: impl FnMut(CompactStep) -> Result<()>,
    ) -> Result<CompactionReport> {
        {
            let mut inner = self.shared.lock()?;
            inner.check_writable()?;
            if inner.compacting {
                return Err(Error::InvalidArgument("a compaction is already running".into()));
            }
            inner.compacting = true;
        }
        // Its waits for checkpoints are budgeted from now (`yielding.rs`).
        *self.shared.compaction_waits.lock().unwrap_or_else(|p| p.into_inner()) = WaitBudget::new();
        let result = self.compact_steps(retention, keep, &mut hook);
        let mut inner = self.shared.lock()?;
        inner.compacting = false;
        inner.gc_guard = None;
        match result {
            Ok(report) => {
                inner.bytes_rewritten += report.bytes_written;
                Ok(report)
            }
            Err(e) => {
                // A failed read leaves nothing half done; a failed write or fsync does.
                if matches!(e, Error::Io { .. }) {
                    inner.poison(&e);
                }
                Err(e)
            }
        }
    }

    fn compact_steps(
        &self,
        retention: &Retention,
        keep: &BTreeSet<CheckpointId>,
        hook: &mut impl FnMut(CompactStep) -> Result<()>,
    ) -> Result<CompactionReport> {
        let mut report = CompactionReport::default();
        let started = Instant::now();
        self.merge_runs(&mut report)?;
        self.throttle(started, report.bytes_written);
        hook(CompactStep::Merged)?;
        self.apply_retention(retention, keep, &mut report)?;
        hook(CompactStep::RetentionApplied)?;
        let Some(plan) = self.mark()? else { return Ok(report) };
        hook(CompactStep::Marked)?;
        let doomed = self.rewrite_sparse(&plan, &mut report)?;
        self.throttle(started, report.bytes_written);
        hook(CompactStep::Rewritten)?;
        self.sweep(doomed, &mut report, hook)?;
        Ok(report)
    }

    /// Merge the runs of every table of HEAD past the bound, committing the merged layout as
    /// a compaction checkpoint (same content and metadata as HEAD).
    ///
    /// Reads, merges and writes its segments holding no lock (their ids are reserved first),
    /// so checkpoints commit meanwhile. Then, under the commit lock, it rebases: the merged
    /// runs replace the runs they were made from in the *current* HEAD, whose tables still
    /// start with them (checkpoints only append runs), and the result commits as a compaction
    /// of the current HEAD. If HEAD no longer descends from the merged base (a rollback), the
    /// merge is dropped and its segments deleted.
    fn merge_runs(&self, report: &mut CompactionReport) -> Result<()> {
        let (base, chunks, first_segment, reserved, plans) = {
            let _commit = self.shared.commit_lock()?;
            let mut inner = self.shared.lock()?;
            let Some(base) = &inner.base else { return Ok(()) };
            let max_runs = self.shared.opts.max_runs_per_table;
            let slices = self.shared.opts.merge_slices;
            let plans: Vec<(usize, merge::Plan)> = base
                .manifest
                .tables
                .iter()
                .enumerate()
                .filter_map(|(i, t)| merge::plan(&t.runs, max_runs, slices).map(|plan| (i, plan)))
                .collect();
            if plans.is_empty() {
                return Ok(());
            }
            // What the merged runs can hold at most: their entries chunks re-cut (each entry
            // once, plus a kind byte per chunk, a chunk per entry at worst) and their run
            // indexes (per chunk a hash, counts and a first key no longer than the chunk).
            // A slice merge writes part of what a merge of all its runs would, plus its
            // listing of the base's other chunks (at most one index entry per base entry), and
            // seals its segments twice (a segment id each).
            let (mut raw_bytes, mut chunk_count, mut seals) = (0u64, 0u64, 0u64);
            for (i, plan) in &plans {
                let start = match plan {
                    merge::Plan::Runs { start } => *start,
                    merge::Plan::Slice => {
                        seals += 2;
                        0
                    }
                };
                for run in base.manifest.tables.get(*i).and_then(|t| t.runs.get(start..)).unwrap_or_default() {
                    raw_bytes += 2 * run.data_bytes + 64 * run.entries + 64;
                    chunk_count += 2 * run.entries + 2;
                }
            }
            let base = base.manifest.clone();
            // The index is small (one entry per chunk, not per key); a copy lets the merge read
            // and deduplicate without the lock. No GC runs beside this merge (one compaction
            // at a time), so every chunk it lists stays stored.
            let chunks = inner.chunks.clone();
            let first_segment = SegmentId(inner.next_segment);
            let reserved = checkpoint::Staged::segments_bound(raw_bytes, chunk_count) + seals;
            inner.next_segment += reserved;
            (base, chunks, first_segment, reserved, plans)
        };
        let started = Instant::now();
        let st = self.shared.storage.as_ref();
        // Its segment writes give way to checkpoints; its commit (under the commit lock) cannot.
        let paced = Yielding::new(&self.shared);
        let stored = |h: &format::ChunkHash| chunks.contains(h);
        // Full segments are written as they fill, so a merge holds one segment in memory, not
        // everything it writes; they stay below the reservation (ids past it are a checkpoint's).
        let mut sink = ChunkSink::new(&stored, first_segment, &self.shared.opts)
            .spilling(&paced)
            .below(SegmentId(first_segment.0 + reserved));
        // Per merged table: how many of the base's runs the merged runs replace, and them.
        let mut merged: BTreeMap<String, (usize, Vec<format::RunRef>)> = BTreeMap::new();
        let opts = &self.shared.opts;
        let (target, threads) = (opts.chunk_target_bytes, opts.hash_threads);
        for (i, plan) in plans {
            let Some(table) = base.tables.get(i) else { continue };
            let written = match plan {
                merge::Plan::Runs { start } => {
                    merge::write_merged_runs(&paced, &chunks, table, start, &mut sink, target, threads)
                        .map(|runs| table.runs.get(..start).unwrap_or_default().iter().copied().chain(runs).collect())
                }
                merge::Plan::Slice => {
                    report.slices_merged += 1;
                    merge::write_slice_merge(&paced, &chunks, table, opts.merge_slices, &mut sink, target, threads)
                }
            };
            let runs: Vec<format::RunRef> = match written {
                Ok(runs) => runs,
                Err(e) => {
                    // A run failed its checks midway: what was written of the merge goes. (A
                    // failed delete is an I/O error, on which the compaction poisons the store.)
                    return Err(sink.discard_spilled(st).err().unwrap_or(e));
                }
            };
            report.runs_merged += table.runs.len().saturating_sub(runs.len()) as u64;
            merged.insert(table.name.clone(), (table.runs.len(), runs));
        }
        let mut staged = checkpoint::Staged::from_sink(sink);
        // The ids past the reservation are a checkpoint's: never write there (the bound says
        // it cannot happen; this makes a mistake in it an error instead of a lost segment).
        if staged.segment_ids().iter().any(|id| id.0 >= first_segment.0 + reserved) {
            return Err(Error::InvalidArgument(format!(
                "internal: a merge needs more than the {reserved} segment ids reserved for it"
            )));
        }
        if let Err(e) = staged.write(&paced) {
            self.shared.lock()?.poison(&e);
            return Err(e);
        }

        let _commit = self.shared.commit_lock()?;
        let mut inner = self.shared.lock()?;
        let current = inner.base.as_ref().map(|b| (&b.manifest, b.hash));
        let rebased = current.and_then(|(head, hash)| {
            let mut tables: BTreeMap<String, Vec<format::RunRef>> =
                head.tables.iter().map(|t| (t.name.clone(), t.runs.clone())).collect();
            for (name, (replaced, runs)) in &merged {
                let now = tables.get_mut(name)?;
                let was = base.tables.iter().find(|t| &t.name == name)?;
                if now.get(..*replaced)? != was.runs.get(..*replaced)? {
                    return None;
                }
                now.splice(..*replaced, runs.iter().copied());
            }
            Some((tables, head.id, hash, head.metadata.clone()))
        });
        let Some((tables, parent, parent_hash, metadata)) = rebased else {
            // A rollback moved HEAD off the merged base: the merge is void.
            drop(inner);
            if let Err(e) = checkpoint::delete_segments(st, staged.segment_ids()) {
                self.shared.lock()?.poison(&e);
                return Err(e);
            }
            return Ok(());
        };
        let new = NewManifest {
            id: CheckpointId(inner.next_checkpoint),
            kind: ManifestKind::Compaction,
            parent: Some((parent, parent_hash)),
            tables,
            metadata,
            dirty_keys: 0,
            started,
        };
        let persisted = match checkpoint::commit_staged(st, staged, new, inner.head) {
            Ok(p) => p,
            Err(e) => {
                inner.poison(&e);
                return Err(e);
            }
        };
        report.merged_into = Some(persisted.manifest.id);
        report.bytes_written += persisted.bytes_written;
        inner.adopt(persisted);
        Ok(())
    }

    /// Sleep until compaction's bytes written since `started` fit the configured rate.
    fn throttle(&self, started: Instant, bytes_written: u64) {
        if let Some(rate) = self.shared.opts.compaction_bytes_per_sec {
            let due = Duration::from_secs_f64(bytes_written as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }

    /// Delete the committed manifests `retention` does not keep.
    ///
    /// Reads the manifests without the store's lock (checkpoints commit meanwhile; the ones
    /// that do are newer than every candidate, so never deleted here). The deletions happen
    /// in batches under the lock, each checked again against what must be kept, so no view
    /// can open on a manifest being deleted; the sync that makes them durable follows (before
    /// the GC's mark, which relies on it).
    fn apply_retention(
        &self,
        retention: &Retention,
        keep: &BTreeSet<CheckpointId>,
        report: &mut CompactionReport,
    ) -> Result<()> {
        let Some(listed_head) = self.shared.lock()?.head else { return Ok(()) };
        let st = self.shared.storage.as_ref();
        let mut candidates = Vec::new();
        let mut sizes = BTreeMap::new();
        let mut parents = BTreeMap::new();
        for name in st.list(MANIFESTS)? {
            let Some(id) = parse_manifest_name(&name) else { continue };
            if id > listed_head.max_checkpoint_id {
                continue;
            }
            // Gone since the listing: `delete_checkpoint` removed it (nothing else deletes
            // manifests while this compaction runs).
            let (m, _, len) = match load_manifest(st, id, None) {
                Err(Error::NotFound(_)) => continue,
                other => other?,
            };
            sizes.insert(id, len);
            if let Some((parent, _)) = m.parent {
                parents.insert(id, parent);
            }
            candidates.push(Candidate { id, kind: m.kind, created_unix_ms: m.created_unix_ms });
        }

        let doomed: Vec<&Candidate> = {
            let inner = self.shared.lock()?;
            if inner.head.is_none() {
                return Ok(());
            }
            let always = self.protected_from_retention(&inner, keep, &parents, listed_head.max_checkpoint_id)?;
            let keep = select_retained(&candidates, retention, &always, now_unix_ms());
            candidates.iter().filter(|c| !keep.contains(&c.id)).collect()
        };
        // Deleted a few at a time, giving way to checkpoints between batches (a first
        // compaction may delete hundreds). What is protected is worked out again for each
        // batch: a view, a pin or a rollback since then may protect more (never less).
        let mut deleted = false;
        for batch in doomed.chunks(RETENTION_DELETE_BATCH) {
            if deleted {
                Yielding::new(&self.shared).give_way();
            }
            let mut inner = self.shared.lock()?;
            let always = self.protected_from_retention(&inner, keep, &parents, listed_head.max_checkpoint_id)?;
            for c in batch.iter().filter(|c| !always.contains(&c.id)) {
                if let Err(e) = st.delete(&manifest_name(c.id)) {
                    inner.poison(&e);
                    return Err(e);
                }
                deleted = true;
                report.checkpoints_deleted += 1;
                report.bytes_reclaimed += sizes.get(&c.id).copied().unwrap_or(0);
            }
        }
        if deleted {
            if let Err(e) = Yielding::new(&self.shared).sync() {
                self.shared.lock()?.poison(&e);
                return Err(e);
            }
        }
        Ok(())
    }

    /// The checkpoints retention must keep whatever its policy says: the pinned, the viewed,
    /// HEAD, those in `keep`, and (filesystem rule) the two manifests before HEAD on its chain,
    /// so the checkpoints just before the current one remain to fall back to. `parents` maps
    /// the manifests listed up to `listed_max` to their parents; later ones are read now.
    fn protected_from_retention(
        &self,
        inner: &Inner,
        keep: &BTreeSet<CheckpointId>,
        parents: &BTreeMap<CheckpointId, CheckpointId>,
        listed_max: CheckpointId,
    ) -> Result<BTreeSet<CheckpointId>> {
        let mut always = inner.always_kept();
        always.extend(keep.iter().copied());
        let Some(head) = inner.head else { return Ok(always) };
        let mut at = head.current;
        for _ in 0..PREVIOUS_MANIFESTS_KEPT {
            let parent = match parents.get(&at) {
                Some(parent) => Some(*parent),
                // Committed since the listing (rare: read it now, under the lock).
                None if at > listed_max => {
                    load_manifest(self.shared.storage.as_ref(), at, None)?.0.parent.map(|(parent, _)| parent)
                }
                None => None,
            };
            let Some(parent) = parent else { break };
            always.insert(parent);
            at = parent;
        }
        Ok(always)
    }

    /// Work out the live set (every chunk a remaining manifest references) and start the
    /// guard that records chunks checkpoints reuse from now on. `None`: nothing committed.
    ///
    /// The guard starts first, under the lock; the manifests, segment tables and run indexes
    /// are then read without it, against a copy of the chunk index. Checkpoints committing
    /// meanwhile only add manifests and segments above the high-water marks seen here (never
    /// candidates for deletion) and reuse stored chunks, which the guard records.
    fn mark(&self) -> Result<Option<GcPlan>> {
        let (head, mut index) = {
            let mut inner = self.shared.lock()?;
            let Some(head) = inner.head else { return Ok(None) };
            // Chunks an unfinished checkpoint decided to reuse are not in any manifest yet:
            // the guard starts with them (see `store/pipeline.rs`).
            inner.gc_guard = Some(inner.reserved_chunks.clone());
            (head, inner.chunks.clone())
        };
        let st = &Yielding::new(&self.shared);
        let manifest_ids: Vec<CheckpointId> = st
            .list(MANIFESTS)?
            .iter()
            .filter_map(|name| parse_manifest_name(name))
            .filter(|id| *id <= head.max_checkpoint_id)
            .collect();
        // Read every committed segment's table first. A segment whose table did not read at
        // open (a passing error) may hold live chunks the index lacks: indexing it now gives
        // them a home, so it cannot be taken for dead. A segment whose table does not read
        // now is left alone, for `verify` to report.
        let mut tables = BTreeMap::new();
        let mut unreadable = Vec::new();
        // Chunks the index lacked when copied: the homes this mark finds. Only they need adding
        // to the store's index (under its lock): every chunk it held then, it still holds, since
        // only this compaction removes or moves chunks.
        let mut found: Vec<(SegmentId, format::SegmentChunk)> = Vec::new();
        let mut ids: Vec<SegmentId> = st
            .list(SEGMENTS)?
            .iter()
            .filter_map(|n| parse_segment_name(n))
            .filter(|id| *id <= head.max_segment_id)
            .collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        for id in ids {
            match version::read_segment_table(st, id) {
                Ok(table) => {
                    found.extend(table.iter().filter(|c| !index.contains(&c.hash)).map(|c| (id, *c)));
                    index.add_segment(id, &table);
                    tables.insert(id, table);
                }
                Err(_) => unreadable.push(id),
            }
        }
        // Each manifest is read, marked and dropped, one at a time (`gc::Marked`).
        let mut marked = gc::Marked::new(head.current);
        for id in manifest_ids {
            match load_manifest(st, id, None) {
                Ok((m, _, _)) => marked.add(st, &index, m)?,
                // Deleted since the listing (`delete_checkpoint`): it needs nothing.
                Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let bases = gc::add_delta_bases(st, &index, &mut marked.live)?;
        let candidates = gc::delta_candidates(&index, &marked, &bases);
        let deltas = self.plan_deltas(&index, candidates)?;
        let mut uses = gc::segment_use(&index, &marked.live, head.max_segment_id);
        // Each segment's chunk bytes, framing excluded, so a wholly live segment has a live
        // fraction of exactly 1 and is never rewritten again. A segment that is home to no
        // chunk (every chunk in it has a newer copy, e.g. after a crash between a rewrite and
        // its sweep) is dead.
        let mut sizes = BTreeMap::new();
        for (id, table) in &tables {
            sizes.insert(*id, table.iter().map(|c| u64::from(c.stored_len)).sum::<u64>());
            uses.entry(*id).or_default();
        }
        for id in unreadable {
            uses.remove(&id);
        }
        if !found.is_empty() {
            // The store's index learns the homes found here too (the first home seen stays).
            let mut inner = self.shared.lock()?;
            for (id, chunk) in &found {
                inner.chunks.add_segment(*id, std::slice::from_ref(chunk));
            }
        }
        Ok(Some(GcPlan { uses, sizes, index, deltas, min_live_fraction: self.shared.opts.segment_live_fraction_min }))
    }

    /// The live chunks to store as deltas if their segment is rewritten, each with its base
    /// and its stored bytes (see `gc::delta_candidates`). Encodings are kept between GCs, so
    /// each candidate is read and encoded once while it stays one.
    fn plan_deltas(
        &self,
        index: &version::ChunkIndex,
        candidates: Vec<(format::ChunkHash, format::ChunkHash)>,
    ) -> Result<PlannedDeltas> {
        let st = &Yielding::new(&self.shared);
        let mut cache = std::mem::take(&mut self.shared.lock()?.delta_cache);
        let mut kept = HashMap::with_capacity(candidates.len());
        let mut deltas = HashMap::new();
        for (hash, base) in candidates {
            let encoded = match cache.remove(&(hash, base)) {
                Some(known) => known,
                // A damaged chunk stays as it is (`verify` reports it); a failing medium
                // stops the compaction.
                None => match version::read_chunk(st, index, &hash).and_then(|raw| {
                    let base_raw = version::read_chunk(st, index, &base)?;
                    Ok(format::encode_delta(&base, &base_raw, &raw).map(Arc::from))
                }) {
                    Ok(encoded) => encoded,
                    Err(Error::Corrupted { .. }) => None,
                    Err(e) => return Err(e),
                },
            };
            if let Some(stored) = &encoded {
                deltas.insert(hash, (base, Arc::clone(stored)));
            }
            kept.insert((hash, base), encoded);
        }
        self.shared.lock()?.delta_cache = kept;
        Ok(deltas)
    }

    /// Copy the live chunks of sparse segments into new segments (`copy_live_chunks`),
    /// make them durable and committed (HEAD's high-water mark names the last), and point the
    /// chunk index at the copies.
    /// Returns the segments that are now dead (to be deleted by `sweep`).
    ///
    /// The copy is read and written without any lock (each new segment's id is reserved as it
    /// starts, under the commit lock like every id; the chunks it copies stay where the plan's
    /// index says, since only this compaction moves or deletes segments); only the id
    /// reservations, the HEAD commit and the index update take the locks.
    fn rewrite_sparse(&self, plan: &GcPlan, report: &mut CompactionReport) -> Result<Vec<SegmentId>> {
        let mut dead: Vec<SegmentId> = plan.uses.iter().filter(|(_, u)| u.live.is_empty()).map(|(id, _)| *id).collect();
        // A segment's live bytes count each chunk planned as a delta at its delta's size: what
        // the segment's live chunks would take once rewritten.
        let live_after = |u: &gc::SegmentUse| -> u64 {
            let saved: u64 = u
                .live
                .iter()
                .filter_map(|h| {
                    let (_, stored) = plan.deltas.get(h)?;
                    let loc = plan.index.get(h)?;
                    Some(u64::from(loc.chunk.stored_len).saturating_sub(stored.len() as u64))
                })
                .sum();
            u.live_bytes.saturating_sub(saved)
        };
        let sparse: Vec<SegmentId> = plan
            .uses
            .iter()
            .filter(|(id, u)| {
                let size = plan.sizes.get(id).copied().unwrap_or(0);
                !u.live.is_empty() && (live_after(u) as f64) < plan.min_live_fraction * size as f64
            })
            .map(|(id, _)| *id)
            .collect();
        if sparse.is_empty() {
            return Ok(dead);
        }
        let st = self.shared.storage.as_ref();
        let mut copied = Vec::new();
        if let Err(e) = self.copy_live_chunks(plan, &sparse, &mut copied, report) {
            // Nothing names what was written: it goes. (A failed write, fsync or delete is an
            // I/O error, on which the compaction poisons the store.)
            let removed = checkpoint::delete_segments(st, copied.iter().map(|(id, _)| *id));
            return Err(removed.err().unwrap_or(e));
        }
        let Some(last) = copied.iter().map(|(id, _)| *id).max() else { return Ok(dead) };

        let _commit = self.shared.commit_lock()?;
        let mut inner = self.shared.lock()?;
        let committed = inner.head.ok_or_else(|| Error::NotFound("HEAD".into())).and_then(|mut head| {
            head.max_segment_id = head.max_segment_id.max(last);
            st.commit_head(&format::encode_head(&head))?;
            Ok(head)
        });
        match committed {
            Ok(head) => inner.head = Some(head),
            Err(e) => {
                inner.poison(&e);
                return Err(e);
            }
        }
        for (id, chunks) in &copied {
            inner.chunks.rehome(*id, chunks);
        }
        report.segments_rewritten += sparse.len() as u64;
        report.bytes_written += format::HEAD_LEN as u64;
        dead.extend(sparse);
        Ok(dead)
    }

    /// Copy the live chunks of the `sparse` segments into new segments, each closed once it
    /// holds [`checkpoint::SEGMENT_BYTES_MAX`] and written at once (so a GC holds one segment
    /// in memory however much it copies), then make their names durable. Each segment is added
    /// to `copied` with its chunk table before it is written, so on an error `copied` lists
    /// every one that may exist, which nothing names.
    fn copy_live_chunks(
        &self,
        plan: &GcPlan,
        sparse: &[SegmentId],
        copied: &mut Vec<(SegmentId, Vec<format::SegmentChunk>)>,
        report: &mut CompactionReport,
    ) -> Result<()> {
        let st = &Yielding::new(&self.shared);
        let codec = self.shared.opts.compression.codec();
        let mut writer: Option<SegmentWriter> = None;
        for id in sparse {
            for hash in plan.uses.get(id).map(|u| u.live.as_slice()).unwrap_or_default() {
                let Some(loc) = plan.index.get(hash).copied() else { continue };
                let raw_len = loc.chunk.raw_len as usize;
                let w = match &mut writer {
                    Some(w) => w,
                    None => writer.insert(SegmentWriter::new(self.next_segment_id()?)),
                };
                // Every chunk copied is read and verified first, except a planned delta: it was
                // encoded from the chunk's verified raw bytes when it was planned.
                if let Some((_, stored)) = plan.deltas.get(hash) {
                    w.push_delta(*hash, raw_len, stored);
                    report.chunks_stored_as_delta += 1;
                } else if loc.chunk.codec == format::Codec::Delta {
                    // Stays a delta against the same base, which stays live and whole.
                    w.push_delta(*hash, raw_len, &version::read_delta_stored(st, &plan.index, hash)?);
                } else {
                    let raw = version::read_chunk(st, &plan.index, hash)?;
                    w.push(*hash, loc.chunk.kind, &raw, codec);
                }
                if w.len() >= checkpoint::SEGMENT_BYTES_MAX {
                    if let Some(full) = writer.take() {
                        write_copy(st, full, copied, report)?;
                    }
                }
            }
        }
        if let Some(last) = writer.take() {
            write_copy(st, last, copied, report)?;
        }
        st.sync()
    }

    /// A new segment id. Ids are allocated under the commit lock only: a checkpoint holds it
    /// from taking its first id until its commit moves `next_segment` past what it wrote.
    fn next_segment_id(&self) -> Result<SegmentId> {
        let _commit = self.shared.commit_lock()?;
        let mut inner = self.shared.lock()?;
        let id = SegmentId(inner.next_segment);
        inner.next_segment += 1;
        Ok(id)
    }

    /// Delete the dead segments, except those holding a chunk a checkpoint reused while this
    /// GC ran. Their chunks leave the index first, so no later checkpoint can reuse them.
    fn sweep(
        &self,
        dead: Vec<SegmentId>,
        report: &mut CompactionReport,
        hook: &mut impl FnMut(CompactStep) -> Result<()>,
    ) -> Result<()> {
        let doomed: Vec<SegmentId> = {
            let mut inner = self.shared.lock()?;
            let reused = inner.gc_guard.take().unwrap_or_default();
            let protected: HashSet<SegmentId> =
                reused.iter().filter_map(|h| inner.chunks.get(h).map(|loc| loc.segment)).collect();
            let doomed: Vec<SegmentId> = dead.into_iter().filter(|id| !protected.contains(id)).collect();
            inner.chunks.remove_segments(&doomed.iter().copied().collect());
            doomed
        };
        let st = &Yielding::new(&self.shared);
        for id in doomed {
            let name = segment_name(id);
            let size = st.size(&name).unwrap_or(0);
            st.delete(&name)?;
            report.segments_deleted += 1;
            report.bytes_reclaimed += size;
            hook(CompactStep::SegmentDeleted)?;
        }
        st.sync()
    }
}

/// Write one segment of copied chunks under its name (made durable by the caller's sync).
/// Through a temporary: the copy runs outside the commit lock, so a checkpoint may commit a
/// higher segment id meanwhile (see [`checkpoint::ChunkSink::named_directly`]).
fn write_copy(
    st: &dyn Storage,
    writer: SegmentWriter,
    copied: &mut Vec<(SegmentId, Vec<format::SegmentChunk>)>,
    report: &mut CompactionReport,
) -> Result<()> {
    let id = writer.id();
    let (bytes, chunks) = writer.finish();
    // Listed before the write: a failed write may still have left the file.
    copied.push((id, chunks));
    st.put(&segment_name(id), &bytes)?;
    report.bytes_written += bytes.len() as u64;
    Ok(())
}

/// Live chunks to store as deltas if their segment is rewritten: chunk -> (base, stored bytes).
type PlannedDeltas = HashMap<format::ChunkHash, (format::ChunkHash, Arc<[u8]>)>;

/// What `mark` found.
struct GcPlan {
    uses: BTreeMap<SegmentId, gc::SegmentUse>,
    /// Stored bytes of all chunks in each segment.
    sizes: BTreeMap<SegmentId, u64>,
    /// The chunk index as the mark saw it: where every live chunk is.
    index: version::ChunkIndex,
    /// The chunks planned as deltas.
    deltas: PlannedDeltas,
    min_live_fraction: f64,
}

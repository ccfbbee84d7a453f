//! `Store::verify`: read everything committed back and check it.

use crate::format::{self, CheckpointId, Head};
use crate::storage::{
    manifest_name, parse_manifest_name, parse_segment_name, segment_name, Storage, MANIFESTS, SEGMENTS,
};
use crate::version::{self, load_manifest, ChunkIndex};
use std::collections::{HashMap, HashSet};

/// One object that failed verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The object, e.g. `segments/0000000000000002.seg` or `checkpoint 7`.
    pub object: String,
    /// What is wrong with it.
    pub reason: String,
}

/// What [`crate::Store::verify`] checked and found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Committed checkpoints whose manifest and every referenced chunk were checked.
    pub checkpoints: u64,
    /// Committed segments whose chunk table was checked.
    pub segments: u64,
    /// Chunks re-hashed.
    pub chunks: u64,
    /// Raw chunk bytes re-hashed.
    pub bytes: u64,
    /// Every problem found, by object. Empty when everything verified.
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// True when nothing was wrong.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    fn problem(&mut self, object: impl Into<String>, reason: impl ToString) {
        self.problems.push(Problem { object: object.into(), reason: reason.to_string() });
    }
}

/// Verify everything committed under `head` (the HEAD the caller holds, or what reading it
/// gave). When HEAD itself is unreadable, every object is checked as if committed.
pub(crate) fn verify(st: &dyn Storage, head: crate::Result<Option<Head>>) -> VerifyReport {
    let mut report = VerifyReport::default();
    let head = match head {
        Ok(None) => return report,
        Ok(Some(head)) => {
            match version::read_head(st) {
                Ok(Some(on_disk)) if on_disk == head => {}
                Ok(_) => report.problem("HEAD", "differs from the HEAD this store committed"),
                Err(e) => report.problem("HEAD", e),
            }
            head
        }
        Err(e) => {
            report.problem("HEAD", e);
            Head {
                current: CheckpointId(0),
                manifest_hash: format::ManifestHash([0; 32]),
                max_checkpoint_id: CheckpointId(u64::MAX),
                max_segment_id: format::SegmentId(u64::MAX),
            }
        }
    };

    // Every chunk of every committed segment, re-hashed.
    let mut index = ChunkIndex::default();
    let segments = match st.list(SEGMENTS) {
        Ok(names) => names,
        Err(e) => {
            report.problem(SEGMENTS, e);
            Vec::new()
        }
    };
    let mut segment_ids: Vec<_> =
        segments.iter().filter_map(|n| parse_segment_name(n)).filter(|id| *id <= head.max_segment_id).collect();
    // Newest first, like open: a chunk copied by a GC rewrite is read from its copy.
    segment_ids.sort_unstable_by(|a, b| b.cmp(a));
    // Delta chunks are checked once every whole chunk is indexed: their base may live in any
    // segment.
    let mut deltas = Vec::new();
    for id in segment_ids {
        let name = segment_name(id);
        let table = match version::read_segment_table(st, id) {
            Ok(t) => t,
            Err(e) => {
                report.problem(&name, e);
                continue;
            }
        };
        report.segments += 1;
        let mut good = Vec::with_capacity(table.len());
        for c in &table {
            if c.codec == format::Codec::Delta {
                deltas.push((id, *c));
                continue;
            }
            let checked = st.read_range(&name, c.offset, c.stored_len as usize).and_then(|stored| {
                format::segment_chunk_bytes(c, &stored).map_err(|e| crate::Error::from_decode(&name, e))
            });
            match checked {
                Ok(raw) => {
                    report.chunks += 1;
                    report.bytes += raw.len() as u64;
                    good.push(*c);
                }
                Err(e) => report.problem(format!("{name} chunk {}", c.hash.to_hex()), e),
            }
        }
        index.add_segment(id, &good);
    }
    let mut good_deltas = Vec::with_capacity(deltas.len());
    for (id, c) in deltas {
        let name = segment_name(id);
        let checked = st.read_range(&name, c.offset, c.stored_len as usize).and_then(|stored| {
            let base = format::delta_base(&stored).map_err(|e| crate::Error::from_decode(&name, e))?;
            // The index holds only whole chunks so far: a delta's base must be one.
            let base_raw = version::read_chunk(st, &index, &base)?;
            format::apply_delta(&c, &stored, &base_raw).map_err(|e| crate::Error::from_decode(&name, e))
        });
        match checked {
            Ok(raw) => {
                report.chunks += 1;
                report.bytes += raw.len() as u64;
                good_deltas.push((id, c));
            }
            Err(e) => report.problem(format!("{name} chunk {}", c.hash.to_hex()), e),
        }
    }
    for (id, c) in good_deltas {
        index.add_segment(id, &[c]);
    }

    // Every committed manifest, its parent link and every run it references.
    let mut ids: Vec<CheckpointId> = match st.list(MANIFESTS) {
        Ok(names) => {
            names.iter().filter_map(|n| parse_manifest_name(n)).filter(|id| *id <= head.max_checkpoint_id).collect()
        }
        Err(e) => {
            report.problem(MANIFESTS, e);
            Vec::new()
        }
    };
    ids.sort();
    let mut hashes = HashMap::new();
    let mut runs_ok = HashSet::new();
    for id in ids {
        let (m, hash, _) = match load_manifest(st, id, None) {
            Ok(x) => x,
            Err(e) => {
                report.problem(manifest_name(id), e);
                continue;
            }
        };
        hashes.insert(id, hash);
        if id == head.current && hash != head.manifest_hash {
            report.problem(manifest_name(id), "hash differs from the one HEAD names");
        }
        if let Some((pid, phash)) = m.parent {
            if hashes.get(&pid).is_some_and(|h| *h != phash) {
                report.problem(manifest_name(id), format!("parent {pid} has a different hash than recorded"));
            }
        }
        let mut ok = true;
        for t in &m.tables {
            for run in &t.runs {
                if runs_ok.contains(&run.index) {
                    continue;
                }
                let single = format::ManifestTable { name: t.name.clone(), runs: vec![*run] };
                match version::materialize_table(st, &index, &single) {
                    Ok(_) => {
                        runs_ok.insert(run.index);
                    }
                    Err(e) => {
                        ok = false;
                        report.problem(format!("checkpoint {id} table {:?}", t.name), e);
                    }
                }
            }
        }
        if ok {
            report.checkpoints += 1;
        }
    }
    report
}

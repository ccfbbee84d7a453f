//! Manifests: one per checkpoint. A manifest names its parent (id and manifest hash), carries
//! the user's metadata and the checkpoint's stats, and lists for each table its runs, oldest
//! first. It lists runs, never keys, so its size does not grow with the number of keys.

use super::{
    invalid, put_varint, CheckpointId, ChunkHash, DecodeError, Reader, FORMAT_VERSION, MAX_MANIFEST_LEN,
    MAX_METADATA_LEN, MAX_TABLE_NAME_LEN,
};
use std::fmt;

const MANIFEST_MAGIC: &[u8; 8] = b"CAIRNMAN";
const MANIFEST_HEADER_LEN: usize = 16;
const HASH_LEN: usize = 32;

/// The blake3 hash of a whole encoded manifest (its last 32 bytes). HEAD and every child
/// manifest name a manifest by id and this hash.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ManifestHash(pub [u8; 32]);

impl fmt::Debug for ManifestHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ManifestHash({})", super::ids::hex(self.0.get(..8).unwrap_or_default()))
    }
}

impl fmt::Display for ManifestHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&super::ids::hex(&self.0))
    }
}

/// What a checkpoint wrote, recorded in its manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ManifestStats {
    /// Dirty keys the checkpoint consumed (entries written, tombstones included).
    pub dirty_keys: u64,
    /// Bytes of the segment it wrote (0 when every chunk already existed).
    pub segment_bytes: u64,
    /// Chunks it wrote.
    pub chunks_new: u64,
    /// Chunks it referenced that were already stored.
    pub chunks_reused: u64,
    /// Time from capture to the manifest being encoded, in microseconds.
    pub duration_us: u64,
}

/// One run of a table: a run index chunk and what it covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunRef {
    /// The run index chunk.
    pub index: ChunkHash,
    /// Entries in the run (tombstones included).
    pub entries: u64,
    /// Raw bytes of its entries chunks.
    pub data_bytes: u64,
    /// Number of entries chunks.
    pub chunks: u64,
}

/// A table in a manifest: its name and runs, oldest first (later runs shadow earlier ones).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestTable {
    /// Table name (UTF-8, 1 to 255 bytes).
    pub name: String,
    /// Runs, oldest first.
    pub runs: Vec<RunRef>,
}

/// What made a manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ManifestKind {
    /// A checkpoint of the working state.
    #[default]
    Checkpoint,
    /// A compaction of its parent: the same tables, content and metadata, in fewer runs.
    Compaction,
}

/// Manifest header flag: made by compaction.
const FLAG_COMPACTION: u16 = 1;

/// A decoded manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// This checkpoint.
    pub id: CheckpointId,
    /// What made it.
    pub kind: ManifestKind,
    /// The parent checkpoint and its manifest hash; `None` for the first checkpoint.
    pub parent: Option<(CheckpointId, ManifestHash)>,
    /// Wall-clock time of the checkpoint, milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// What the checkpoint wrote.
    pub stats: ManifestStats,
    /// The caller's metadata (e.g. source offsets).
    pub metadata: Vec<u8>,
    /// Tables, sorted by name.
    pub tables: Vec<ManifestTable>,
}

/// Check a table name: 1 to 255 bytes of UTF-8.
pub fn validate_table_name(name: &str) -> Result<(), DecodeError> {
    if name.is_empty() || name.len() > MAX_TABLE_NAME_LEN {
        return Err(invalid("table name", format!("length {} is outside 1..={MAX_TABLE_NAME_LEN}", name.len())));
    }
    Ok(())
}

/// Encode a manifest; returns its bytes and hash. The manifest must satisfy the invariants
/// [`decode_manifest`] checks (the store runs them before every commit).
pub fn encode_manifest(m: &Manifest) -> (Vec<u8>, ManifestHash) {
    let mut body = Vec::with_capacity(256);
    body.extend_from_slice(&m.id.0.to_le_bytes());
    let (flag, pid, phash) = match m.parent {
        Some((id, h)) => (1u8, id.0, h.0),
        None => (0u8, 0, [0u8; 32]),
    };
    body.push(flag);
    body.extend_from_slice(&pid.to_le_bytes());
    body.extend_from_slice(&phash);
    body.extend_from_slice(&m.created_unix_ms.to_le_bytes());
    let s = &m.stats;
    for v in [s.dirty_keys, s.segment_bytes, s.chunks_new, s.chunks_reused, s.duration_us] {
        body.extend_from_slice(&v.to_le_bytes());
    }
    put_varint(&mut body, m.metadata.len() as u64);
    body.extend_from_slice(&m.metadata);
    put_varint(&mut body, m.tables.len() as u64);
    for t in &m.tables {
        put_varint(&mut body, t.name.len() as u64);
        body.extend_from_slice(t.name.as_bytes());
        put_varint(&mut body, t.runs.len() as u64);
        for r in &t.runs {
            body.extend_from_slice(&r.index.0);
            put_varint(&mut body, r.entries);
            put_varint(&mut body, r.data_bytes);
            put_varint(&mut body, r.chunks);
        }
    }
    let mut out = Vec::with_capacity(MANIFEST_HEADER_LEN + body.len() + HASH_LEN);
    out.extend_from_slice(MANIFEST_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    let flags = match m.kind {
        ManifestKind::Checkpoint => 0,
        ManifestKind::Compaction => FLAG_COMPACTION,
    };
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    let hash = *blake3::hash(&out).as_bytes();
    out.extend_from_slice(&hash);
    (out, ManifestHash(hash))
}

/// Decode and verify a manifest. Returns it with its hash.
pub fn decode_manifest(bytes: &[u8]) -> Result<(Manifest, ManifestHash), DecodeError> {
    if bytes.len() > MAX_MANIFEST_LEN {
        return Err(invalid("manifest length", format!("{} exceeds {MAX_MANIFEST_LEN}", bytes.len())));
    }
    let mut r = Reader::new(bytes);
    r.magic(MANIFEST_MAGIC, "CAIRNMAN")?;
    r.version()?;
    let kind = match r.u16()? {
        0 => ManifestKind::Checkpoint,
        FLAG_COMPACTION => ManifestKind::Compaction,
        other => return Err(invalid("manifest flags", format!("unknown flags {other:#x}"))),
    };
    let body_len = r.u32()? as usize;
    // The length is checked against the file before it is trusted: a torn or truncated
    // manifest fails here or at the hash, never later.
    if MANIFEST_HEADER_LEN.checked_add(body_len).and_then(|n| n.checked_add(HASH_LEN)) != Some(bytes.len()) {
        return Err(invalid("manifest length", "body length does not match the object size"));
    }
    let covered = bytes.get(..MANIFEST_HEADER_LEN + body_len).ok_or(invalid("manifest", "out of range"))?;
    let stored_hash = bytes.get(MANIFEST_HEADER_LEN + body_len..).ok_or(invalid("manifest", "out of range"))?;
    if blake3::hash(covered).as_bytes() != stored_hash {
        return Err(DecodeError::Checksum("manifest (blake3)"));
    }
    let hash = ManifestHash(*blake3::hash(covered).as_bytes());
    let mut r = Reader::new(covered.get(MANIFEST_HEADER_LEN..).unwrap_or_default());
    let id = CheckpointId(r.u64()?);
    let flag = r.u8()?;
    let pid = CheckpointId(r.u64()?);
    let phash = ManifestHash(r.array()?);
    let parent = match flag {
        0 if pid.0 == 0 && phash.0 == [0; 32] => None,
        1 if pid < id => Some((pid, phash)),
        _ => return Err(invalid("manifest parent", "flag or parent id is inconsistent")),
    };
    let created_unix_ms = r.u64()?;
    let stats = ManifestStats {
        dirty_keys: r.u64()?,
        segment_bytes: r.u64()?,
        chunks_new: r.u64()?,
        chunks_reused: r.u64()?,
        duration_us: r.u64()?,
    };
    let metadata = r.bytes_max("metadata", MAX_METADATA_LEN)?.to_vec();
    // A table takes at least 3 bytes (name length, a name byte, run count); a run at least 35:
    // counts are bounded by what is left.
    let table_count = r.varint_max("table count", (r.remaining() / 2) as u64)? as usize;
    let mut tables: Vec<ManifestTable> = Vec::with_capacity(table_count);
    for _ in 0..table_count {
        let name = r.bytes_max("table name", MAX_TABLE_NAME_LEN)?;
        let name = std::str::from_utf8(name).map_err(|_| invalid("table name", "not UTF-8"))?.to_string();
        validate_table_name(&name)?;
        if tables.last().is_some_and(|t| t.name >= name) {
            return Err(invalid("table order", "names are not strictly increasing"));
        }
        let run_count = r.varint_max("run count", (r.remaining() / 35) as u64)? as usize;
        let mut runs = Vec::with_capacity(run_count);
        for _ in 0..run_count {
            let index = ChunkHash(r.array()?);
            let entries = r.varint()?;
            let data_bytes = r.varint()?;
            let chunks = r.varint()?;
            // Each entry takes at least 2 bytes (two varints); compared without overflow.
            if entries == 0 || chunks == 0 || chunks > entries || data_bytes / 2 < entries {
                return Err(invalid("run", "counts are inconsistent"));
            }
            runs.push(RunRef { index, entries, data_bytes, chunks });
        }
        tables.push(ManifestTable { name, runs });
    }
    r.finish("manifest")?;
    Ok((Manifest { id, kind, parent, created_unix_ms, stats, metadata, tables }, hash))
}

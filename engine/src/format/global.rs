//! The global checkpoint record: what a [`crate::Coordinator`] commits, as the metadata of one
//! checkpoint of its global store, once every shard has committed its part of an epoch.
//!
//! No checksum of its own: it lives inside a manifest, whose blake3 hash covers it.

use super::{invalid, put_varint, CheckpointId, DecodeError, Reader, FORMAT_VERSION, MAX_METADATA_LEN};

const GLOBAL_MAGIC: &[u8; 8] = b"CAIRNGLB";

/// Most shards a coordinator runs.
pub const MAX_SHARDS: usize = 4096;

/// One shard's part of a global checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardPart {
    /// The shard store's checkpoint.
    pub id: CheckpointId,
    /// Its metadata, as the shard recorded it (typically its source offsets).
    pub metadata: Vec<u8>,
}

/// A global checkpoint record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GlobalRecord {
    /// The epoch the barrier carried.
    pub epoch: u64,
    /// The coordinator's metadata for the epoch.
    pub metadata: Vec<u8>,
    /// Every shard's checkpoint, by shard number.
    pub shards: Vec<ShardPart>,
}

/// Encode a record; `None` if it would exceed [`MAX_METADATA_LEN`] or [`MAX_SHARDS`].
pub fn encode_global(r: &GlobalRecord) -> Option<Vec<u8>> {
    if r.shards.len() > MAX_SHARDS {
        return None;
    }
    let mut out =
        Vec::with_capacity(32 + r.metadata.len() + r.shards.iter().map(|s| 16 + s.metadata.len()).sum::<usize>());
    out.extend_from_slice(GLOBAL_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&[0u8; 2]);
    out.extend_from_slice(&r.epoch.to_le_bytes());
    put_varint(&mut out, r.metadata.len() as u64);
    out.extend_from_slice(&r.metadata);
    out.extend_from_slice(&(r.shards.len() as u32).to_le_bytes());
    for s in &r.shards {
        out.extend_from_slice(&s.id.0.to_le_bytes());
        put_varint(&mut out, s.metadata.len() as u64);
        out.extend_from_slice(&s.metadata);
    }
    (out.len() <= MAX_METADATA_LEN).then_some(out)
}

/// Decode a record.
pub fn decode_global(bytes: &[u8]) -> Result<GlobalRecord, DecodeError> {
    if bytes.len() > MAX_METADATA_LEN {
        return Err(invalid("global record", format!("{} bytes exceed {MAX_METADATA_LEN}", bytes.len())));
    }
    let mut r = Reader::new(bytes);
    r.magic(GLOBAL_MAGIC, "CAIRNGLB")?;
    r.version()?;
    if r.array::<2>()? != [0; 2] {
        return Err(invalid("global record header", "reserved bytes are not zero"));
    }
    let epoch = r.u64()?;
    let metadata = r.bytes_max("global metadata", MAX_METADATA_LEN)?.to_vec();
    let count = r.u32()? as usize;
    // Each shard takes at least 9 bytes: the count is bounded by what is present.
    if count == 0 || count > MAX_SHARDS || count > r.remaining() / 9 {
        return Err(invalid("shard count", format!("{count} shards do not fit")));
    }
    let mut shards = Vec::with_capacity(count);
    for _ in 0..count {
        let id = CheckpointId(r.u64()?);
        if id.0 == 0 {
            return Err(invalid("shard checkpoint", "zero id"));
        }
        let metadata = r.bytes_max("shard metadata", MAX_METADATA_LEN)?.to_vec();
        shards.push(ShardPart { id, metadata });
    }
    r.finish("global record")?;
    Ok(GlobalRecord { epoch, metadata, shards })
}

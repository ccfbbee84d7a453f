//! HEAD, the commit point, and the store marker.
//!
//! HEAD names the current checkpoint (id and manifest hash) and the high-water marks that tell
//! recovery which objects were committed: every manifest with an id above `max_checkpoint_id`
//! and every segment above `max_segment_id` belongs to a checkpoint that never committed.

use super::{invalid, CheckpointId, DecodeError, Reader, SegmentId, FORMAT_VERSION};
use crate::format::manifest::ManifestHash;

const HEAD_MAGIC: &[u8; 8] = b"CAIRNHED";
const STORE_MAGIC: &[u8; 8] = b"CAIRNSTO";
/// Encoded size of HEAD.
pub const HEAD_LEN: usize = 104;
/// Encoded size of the store marker.
pub const STORE_MARKER_LEN: usize = 16;

/// The decoded HEAD pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// The checkpoint that is the working state's base.
    pub current: CheckpointId,
    /// Hash of its manifest.
    pub manifest_hash: ManifestHash,
    /// Highest checkpoint id ever committed (≥ `current`; larger after a rollback).
    pub max_checkpoint_id: CheckpointId,
    /// Highest segment id committed, by a checkpoint, a merge or a GC rewrite (0 when none).
    pub max_segment_id: SegmentId,
}

/// Encode HEAD.
pub fn encode_head(h: &Head) -> [u8; HEAD_LEN] {
    let mut out = [0u8; HEAD_LEN];
    out[..8].copy_from_slice(HEAD_MAGIC);
    out[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[16..24].copy_from_slice(&h.current.0.to_le_bytes());
    out[24..56].copy_from_slice(&h.manifest_hash.0);
    out[56..64].copy_from_slice(&h.max_checkpoint_id.0.to_le_bytes());
    out[64..72].copy_from_slice(&h.max_segment_id.0.to_le_bytes());
    let check = *blake3::hash(&out[..72]).as_bytes();
    out[72..].copy_from_slice(&check);
    out
}

/// Decode and verify HEAD.
pub fn decode_head(bytes: &[u8]) -> Result<Head, DecodeError> {
    if bytes.len() != HEAD_LEN {
        return Err(invalid("HEAD length", format!("{} bytes, expected {HEAD_LEN}", bytes.len())));
    }
    let mut r = Reader::new(bytes);
    r.magic(HEAD_MAGIC, "CAIRNHED")?;
    r.version()?;
    if r.array::<6>()? != [0; 6] {
        return Err(invalid("HEAD", "reserved bytes are not zero"));
    }
    let current = CheckpointId(r.u64()?);
    let manifest_hash = ManifestHash(r.array()?);
    let max_checkpoint_id = CheckpointId(r.u64()?);
    let max_segment_id = SegmentId(r.u64()?);
    let check = r.array::<32>()?;
    let covered = bytes.get(..72).ok_or(invalid("HEAD", "out of range"))?;
    if blake3::hash(covered).as_bytes() != &check {
        return Err(DecodeError::Checksum("HEAD (blake3)"));
    }
    if current.0 == 0 || current > max_checkpoint_id {
        return Err(invalid("HEAD", "current id is zero or above the high-water mark"));
    }
    Ok(Head { current, manifest_hash, max_checkpoint_id, max_segment_id })
}

/// Encode the store marker written once when a store directory is created.
pub fn encode_store_marker() -> [u8; STORE_MARKER_LEN] {
    let mut out = [0u8; STORE_MARKER_LEN];
    out[..8].copy_from_slice(STORE_MAGIC);
    out[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out
}

/// Decode the store marker: checks the magic and the version.
pub fn decode_store_marker(bytes: &[u8]) -> Result<(), DecodeError> {
    let mut r = Reader::new(bytes);
    r.magic(STORE_MAGIC, "CAIRNSTO")?;
    r.version()?;
    if r.array::<6>()? != [0; 6] {
        return Err(invalid("store marker", "reserved bytes are not zero"));
    }
    r.finish("store marker")
}

//! The names of the objects cairn creates. Only names produced here, and their `.tmp`
//! temporaries, are ever opened or deleted; anything else in a store directory is left alone.

use crate::format::{CheckpointId, SegmentId};

/// The HEAD pointer.
pub const HEAD: &str = "HEAD";
/// The pinned savepoints.
pub const PINS: &str = "PINS";
/// The journal of checkpoints that did not commit (diagnostic; see `format::journal`).
pub const JOURNAL: &str = "JOURNAL";
/// The store marker, written once when a store is created.
pub const STORE_MARKER: &str = "CAIRN";
/// Directory of segments.
pub const SEGMENTS: &str = "segments";
/// Directory of manifests.
pub const MANIFESTS: &str = "manifests";

/// `segments/<id as 16 hex digits>.seg`
pub fn segment_name(id: SegmentId) -> String {
    format!("{SEGMENTS}/{:016x}.seg", id.0)
}

/// `manifests/<id as 16 hex digits>.man`
pub fn manifest_name(id: CheckpointId) -> String {
    format!("{MANIFESTS}/{:016x}.man", id.0)
}

fn parse_hex_name(name: &str, dir: &str, ext: &str) -> Option<u64> {
    let rest = name.strip_prefix(dir)?.strip_prefix('/')?.strip_suffix(ext)?;
    if rest.len() != 16 || !rest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    u64::from_str_radix(rest, 16).ok()
}

/// The id of a segment name made by [`segment_name`], or `None` for any other name.
pub fn parse_segment_name(name: &str) -> Option<SegmentId> {
    parse_hex_name(name, SEGMENTS, ".seg").map(SegmentId)
}

/// The id of a manifest name made by [`manifest_name`], or `None` for any other name.
pub fn parse_manifest_name(name: &str) -> Option<CheckpointId> {
    parse_hex_name(name, MANIFESTS, ".man").map(CheckpointId)
}

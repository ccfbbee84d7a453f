//! Loading and validating manifests and HEAD.

use crate::format::{self, CheckpointId, Head, Manifest, ManifestHash, HEAD_LEN, MAX_MANIFEST_LEN};
use crate::storage::{manifest_name, Storage, HEAD};
use crate::{Error, Result};

/// Read HEAD; `None` when the store has no committed checkpoint yet.
pub(crate) fn read_head(storage: &dyn Storage) -> Result<Option<Head>> {
    match storage.read(HEAD, HEAD_LEN) {
        Ok(bytes) => format::decode_head(&bytes).map(Some).map_err(|e| Error::from_decode(HEAD, e)),
        Err(Error::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Load manifest `id`, verify its hash (and that it equals `expected` when given) and its
/// invariants.
pub(crate) fn load_manifest(
    storage: &dyn Storage,
    id: CheckpointId,
    expected: Option<ManifestHash>,
) -> Result<(Manifest, ManifestHash, u64)> {
    let name = manifest_name(id);
    let bytes = match storage.read(&name, MAX_MANIFEST_LEN) {
        Err(Error::NotFound(_)) => return Err(Error::NotFound(format!("checkpoint {id}"))),
        other => other?,
    };
    let (manifest, hash) = format::decode_manifest(&bytes).map_err(|e| Error::from_decode(&name, e))?;
    if manifest.id != id {
        return Err(Error::corrupted(&name, format!("holds checkpoint {} instead", manifest.id)));
    }
    if let Some(expected) = expected {
        if hash != expected {
            return Err(Error::corrupted(&name, format!("hash {hash} differs from the expected {expected}")));
        }
    }
    check_manifest_invariants(&manifest).map_err(|reason| Error::corrupted(&name, reason))?;
    Ok((manifest, hash, bytes.len() as u64))
}

/// Invariants every manifest keeps, checked before every commit and on every load:
/// - its parent, if any, has a smaller id;
/// - tables are sorted by name, names unique and valid;
/// - every run is non-empty and its counts are consistent.
pub(crate) fn check_manifest_invariants(m: &Manifest) -> std::result::Result<(), String> {
    if m.id.0 == 0 {
        return Err("checkpoint id 0 is reserved".into());
    }
    if let Some((parent, _)) = m.parent {
        if parent >= m.id {
            return Err(format!("parent {parent} is not older than {}", m.id));
        }
    }
    for pair in m.tables.windows(2) {
        if let [a, b] = pair {
            if a.name >= b.name {
                return Err(format!("tables {:?} and {:?} are out of order", a.name, b.name));
            }
        }
    }
    for t in &m.tables {
        format::validate_table_name(&t.name).map_err(|e| e.to_string())?;
        for r in &t.runs {
            if r.entries == 0 || r.chunks == 0 || r.chunks > r.entries {
                return Err(format!("a run of table {:?} has inconsistent counts", t.name));
            }
        }
    }
    if m.metadata.len() > format::MAX_METADATA_LEN {
        return Err("metadata exceeds its bound".into());
    }
    Ok(())
}

//! Read-only views of a committed checkpoint (time travel).

use crate::format::{CheckpointId, Manifest};
use crate::state::TableState;
use crate::store::{CheckpointInfo, Shared};
use crate::table::{check_key, prefix_end};
use crate::{version, Error, Result};
use std::collections::HashMap;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};

/// A read-only view of one committed checkpoint, from [`crate::Store::at`].
///
/// Each table is read from storage (every chunk verified) the first time it is used and then
/// kept in memory for the life of the view.
pub struct CheckpointView {
    shared: Arc<Shared>,
    manifest: Manifest,
    info: CheckpointInfo,
    loaded: Mutex<HashMap<String, Arc<TableState>>>,
}

impl std::fmt::Debug for CheckpointView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointView").field("id", &self.info.id).finish()
    }
}

impl Drop for CheckpointView {
    fn drop(&mut self) {
        // Release the hold compaction respects; a poisoned lock means the store is unusable
        // anyway, so there is nothing to release.
        if let Ok(mut inner) = self.shared.lock() {
            if let Some(n) = inner.viewed.get_mut(&self.info.id) {
                *n -= 1;
                if *n == 0 {
                    inner.viewed.remove(&self.info.id);
                }
            }
        }
    }
}

impl CheckpointView {
    pub(crate) fn new(shared: Arc<Shared>, manifest: Manifest, manifest_len: u64) -> Self {
        let info = CheckpointInfo::from_manifest(&manifest, manifest_len);
        CheckpointView { shared, manifest, info, loaded: Mutex::new(HashMap::new()) }
    }

    /// The checkpoint's id.
    pub fn id(&self) -> CheckpointId {
        self.info.id
    }

    /// The checkpoint's info, metadata included.
    pub fn info(&self) -> &CheckpointInfo {
        &self.info
    }

    /// Names of the tables in this checkpoint, sorted.
    pub fn tables(&self) -> Vec<String> {
        self.manifest.tables.iter().map(|t| t.name.clone()).collect()
    }

    fn table(&self, name: &str) -> Result<Arc<TableState>> {
        if let Some(t) = self.loaded.lock().map_err(|_| Error::Poisoned("view lock".into()))?.get(name) {
            return Ok(t.clone());
        }
        let spec = self
            .manifest
            .tables
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| Error::NotFound(format!("table {name:?} at checkpoint {}", self.info.id)))?;
        let data = {
            let inner = self.shared.lock()?;
            version::materialize_table(self.shared.storage.as_ref(), &inner.chunks, spec)?
        };
        let t = Arc::new(TableState::restored(data));
        self.loaded.lock().map_err(|_| Error::Poisoned("view lock".into()))?.insert(name.to_string(), t.clone());
        Ok(t)
    }

    /// The value of `key` in `table` at this checkpoint.
    pub fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        check_key(key)?;
        Ok(self.table(table)?.get(key).map(|v| v.to_vec()))
    }

    /// Number of keys in `table` at this checkpoint.
    pub fn len(&self, table: &str) -> Result<usize> {
        Ok(self.table(table)?.len())
    }

    /// The pairs of `table` with keys in `range`, in key order.
    pub fn range<'a, R: RangeBounds<&'a [u8]>>(&self, table: &str, range: R) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let (lo, hi) = (range.start_bound().cloned(), range.end_bound().cloned());
        Ok(self.table(table)?.range(lo, hi))
    }

    /// The pairs of `table` whose keys start with `prefix`, in key order.
    pub fn prefix(&self, table: &str, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let end = prefix_end(prefix);
        Ok(self.table(table)?.range(Bound::Included(prefix), end.as_deref().map_or(Bound::Unbounded, Bound::Excluded)))
    }
}

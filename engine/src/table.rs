//! Table handles: named keyspaces of the working state.

use crate::format::{MAX_KEY_LEN, MAX_VALUE_LEN};
use crate::store::Shared;
use crate::{Error, Result};
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

/// A handle to one table of a [`crate::Store`]: bytes to bytes, ordered by key.
///
/// Writes go to memory and mark their key dirty; the next [`crate::Store::checkpoint`] makes
/// them durable. Handles are cheap to clone and keep the store open.
#[derive(Clone)]
pub struct Table {
    shared: Arc<Shared>,
    name: Arc<str>,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table").field("name", &self.name).finish()
    }
}

/// The smallest key greater than every key starting with `prefix` (`None`: no such key).
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

pub(crate) fn check_key(key: &[u8]) -> Result<()> {
    if key.len() > MAX_KEY_LEN {
        return Err(Error::InvalidArgument(format!("key of {} bytes exceeds {MAX_KEY_LEN}", key.len())));
    }
    Ok(())
}

impl Table {
    pub(crate) fn new(shared: Arc<Shared>, name: &str) -> Self {
        Table { shared, name: Arc::from(name) }
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn with<T>(&self, f: impl FnOnce(&crate::state::TableState) -> T) -> Result<T> {
        let inner = self.shared.lock()?;
        let table = inner.tables.tables.get(&*self.name).ok_or_else(|| self.gone())?;
        Ok(f(table))
    }

    fn with_mut<T>(&self, f: impl FnOnce(&mut crate::state::TableState) -> T) -> Result<T> {
        let mut inner = self.shared.lock()?;
        inner.check_writable()?;
        let table = inner.tables.tables.get_mut(&*self.name).ok_or_else(|| self.gone())?;
        Ok(f(table))
    }

    /// A table disappears from the working state only when a rollback goes to a checkpoint
    /// taken before it was created.
    fn gone(&self) -> Error {
        Error::NotFound(format!("table {:?} (not in the checkpoint rolled back to)", self.name))
    }

    /// The value of `key`, if any.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.with(|t| t.get(key).map(|v| v.to_vec()))
    }

    /// Whether `key` has a value.
    pub fn contains(&self, key: &[u8]) -> Result<bool> {
        self.with(|t| t.get(key).is_some())
    }

    /// Set `key` to `value`. Keys are at most 64 KiB, values at most 16 MiB.
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        check_key(key)?;
        if value.len() > MAX_VALUE_LEN {
            return Err(Error::InvalidArgument(format!("value of {} bytes exceeds {MAX_VALUE_LEN}", value.len())));
        }
        self.with_mut(|t| t.put(key, value))
    }

    /// Remove `key`; returns whether it had a value.
    pub fn delete(&self, key: &[u8]) -> Result<bool> {
        check_key(key)?;
        self.with_mut(|t| t.delete(key))
    }

    /// Number of keys.
    pub fn len(&self) -> Result<usize> {
        self.with(|t| t.len())
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// The pairs with keys in `range`, in key order, e.g. `table.range(&b"a"[..]..&b"m"[..])`.
    pub fn range<'a, R: RangeBounds<&'a [u8]>>(&self, range: R) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let (lo, hi) = (range.start_bound().cloned(), range.end_bound().cloned());
        self.with(|t| t.range(lo, hi))
    }

    /// The pairs whose keys start with `prefix`, in key order.
    pub fn prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let end = prefix_end(prefix);
        self.with(|t| t.range(Bound::Included(prefix), end.as_deref().map_or(Bound::Unbounded, Bound::Excluded)))
    }

    /// Every pair, in key order.
    pub fn iter_all(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.with(|t| t.range(Bound::Unbounded, Bound::Unbounded))
    }
}

//! A typed layer over tables for users who hold structs: keys and values encoded with serde.

use crate::table::Table;
use crate::{Error, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::marker::PhantomData;

/// A [`Table`] whose keys are `K` and values `V`, encoded with postcard (a compact, stable
/// serde format). Range order is the byte order of the encoded keys, which for unsigned
/// integers is not numeric order; use the byte [`Table`] with big-endian keys where order
/// matters.
pub struct TypedTable<K, V> {
    table: Table,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Clone for TypedTable<K, V> {
    fn clone(&self) -> Self {
        TypedTable { table: self.table.clone(), _types: PhantomData }
    }
}

fn encode<T: Serialize>(table: &str, what: &str, v: &T) -> Result<Vec<u8>> {
    postcard::to_allocvec(v).map_err(|e| Error::InvalidArgument(format!("table {table:?}: cannot encode {what}: {e}")))
}

/// Decode strictly: bytes left over mean the stored item is not a `T`.
fn decode<T: DeserializeOwned>(table: &str, what: &str, bytes: &[u8]) -> Result<T> {
    let mismatch = |reason: String| {
        Error::InvalidArgument(format!(
            "table {table:?}: a stored {what} does not decode as {}: {reason}",
            std::any::type_name::<T>()
        ))
    };
    match postcard::take_from_bytes(bytes) {
        Ok((v, [])) => Ok(v),
        Ok((_, rest)) => Err(mismatch(format!("{} bytes left over", rest.len()))),
        Err(e) => Err(mismatch(e.to_string())),
    }
}

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> TypedTable<K, V> {
    pub(crate) fn new(table: Table) -> Self {
        TypedTable { table, _types: PhantomData }
    }

    /// The byte table underneath.
    pub fn raw(&self) -> &Table {
        &self.table
    }

    /// The value of `key`, if any.
    pub fn get(&self, key: &K) -> Result<Option<V>> {
        let k = encode(self.table.name(), "key", key)?;
        self.table.get(&k)?.map(|v| decode(self.table.name(), "value", &v)).transpose()
    }

    /// Set `key` to `value`.
    pub fn put(&self, key: &K, value: &V) -> Result<()> {
        let k = encode(self.table.name(), "key", key)?;
        let v = encode(self.table.name(), "value", value)?;
        self.table.put(&k, &v)
    }

    /// Remove `key`; returns whether it had a value.
    pub fn delete(&self, key: &K) -> Result<bool> {
        let k = encode(self.table.name(), "key", key)?;
        self.table.delete(&k)
    }

    /// Every pair, in encoded-key order.
    pub fn iter_all(&self) -> Result<Vec<(K, V)>> {
        let name = self.table.name();
        self.table
            .iter_all()?
            .into_iter()
            .map(|(k, v)| Ok((decode(name, "key", &k)?, decode(name, "value", &v)?)))
            .collect()
    }
}

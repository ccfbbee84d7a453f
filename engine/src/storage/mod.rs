//! Durable storage: one small trait with object semantics, and its backends.
//!
//! Everything cairn persists goes through [`Storage`], so a backend for object stores fits
//! without change above this room, and every test can inject faults. Objects are immutable:
//! created once with [`Storage::put`] or [`Storage::put_new`], read whole or by range, listed,
//! deleted. The one mutable thing is the HEAD pointer, replaced atomically by
//! [`Storage::commit_head`].
//!
//! Backends:
//! - [`LocalStorage`]: a directory on the local filesystem (the embedded default).
//! - [`SimStorage`]: an in-memory filesystem model that keeps "written" and "durable" apart,
//!   fails the Nth operation on request and produces the exact image a crash leaves.
//!
//! Both are [`FsStorage`] over an [`Fs`]: the commit protocol (write, fsync, rename where a
//! temporary is needed, fsync the directory) is one piece of code, tested in simulation
//! exactly as it runs on disk.

mod fs;
mod names;
mod os;
mod sim;

pub use fs::{Fs, FsStorage, PACED_PIECE};
pub use names::{
    manifest_name, parse_manifest_name, parse_segment_name, segment_name, HEAD, JOURNAL, MANIFESTS, PINS, SEGMENTS,
    STORE_MARKER,
};
pub use os::{LocalStorage, OsFs};
pub use sim::{CrashMode, SimFs, SimStorage, FAULT_POINTS};

use crate::Result;

/// Durable object storage.
///
/// Names are `/`-separated relative paths made by cairn itself (see [`names`](self)); a backend
/// never has to accept a name cairn did not generate. Every method is safe to call from many
/// threads; cairn itself serializes writers.
pub trait Storage: Send + Sync {
    /// Create the immutable object `name` holding `bytes`.
    ///
    /// Guarantee: when this returns `Ok`, the object's *content* is durable and the object is
    /// visible under `name` complete (never partially). The *name* itself is durable only after
    /// the next successful [`Storage::sync`]; a crash before that may leave the object absent,
    /// never torn. Putting a name that already exists replaces it atomically: a crash leaves
    /// the old or the new object, whole (cairn does so only for PINS, JOURNAL and for objects no
    /// committed checkpoint references).
    fn put(&self, name: &str, bytes: &[u8]) -> Result<()>;

    /// [`Storage::put`], writing the object a piece at a time and calling `between` before
    /// each piece and before the final sync: for a writer that should give way to others'
    /// commits (compaction to checkpoints). Same guarantee as `put`. The default calls
    /// `between` once and puts the object at once.
    fn put_paced(&self, name: &str, bytes: &[u8], between: &mut dyn FnMut()) -> Result<()> {
        between();
        self.put(name, bytes)
    }

    /// Create the object `name`, which must not exist, holding `bytes`, written under its
    /// name directly: no temporary, no rename (one file-system commit fewer than [`put`]).
    ///
    /// Guarantee: when this returns `Ok`, the object's content is durable and visible whole;
    /// its name is durable after the next successful [`Storage::sync`]. Until `Ok`, the name
    /// may be visible with partial content, and a crash may leave it torn. So cairn uses it
    /// only for segments and manifests, whose ids are above HEAD's high-water marks until a
    /// later [`Storage::commit_head`] names them: nothing reads such an object before that,
    /// and open deletes it as a leftover if the commit never happened. An existing `name` is
    /// an error (`AlreadyExists` underneath), never overwritten.
    ///
    /// [`put`]: Storage::put
    fn put_new(&self, name: &str, bytes: &[u8]) -> Result<()>;

    /// Make every `put` and `delete` that returned before this call durable.
    fn sync(&self) -> Result<()>;

    /// Atomically replace the HEAD pointer with `bytes` and make it durable.
    ///
    /// Guarantee: after `Ok`, a crash leaves the new HEAD; after an error or a crash during the
    /// call, a crash leaves either the old HEAD or the new one, complete. All objects `put`
    /// before the call must already be durable (call [`Storage::sync`] first).
    fn commit_head(&self, bytes: &[u8]) -> Result<()>;

    /// Read a whole object. Fails with [`crate::Error::Corrupted`] if it is larger than
    /// `max_len` (nothing larger is allocated), [`crate::Error::NotFound`] if it is absent.
    fn read(&self, name: &str, max_len: usize) -> Result<Vec<u8>>;

    /// Read `len` bytes at `offset`. Fails with [`crate::Error::Corrupted`] if the range is not
    /// inside the object.
    fn read_range(&self, name: &str, offset: u64, len: usize) -> Result<Vec<u8>>;

    /// Size of an object in bytes.
    fn size(&self, name: &str) -> Result<u64>;

    /// Names of the complete objects directly under `dir` (`"segments"`, `"manifests"` or `""`),
    /// as full names, in no particular order. Temporaries of interrupted puts are not listed.
    fn list(&self, dir: &str) -> Result<Vec<String>>;

    /// Delete an object; deleting an absent object succeeds. Durable after the next `sync`.
    fn delete(&self, name: &str) -> Result<()>;

    /// Remove leftovers of interrupted puts (temporaries). Called at open.
    fn remove_temporaries(&self) -> Result<()>;

    /// A human-readable location for messages (a path, a bucket URL, `memory`).
    fn location(&self) -> String;
}

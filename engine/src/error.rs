//! The one public error type. Each variant tells the caller what to do next.

use std::io;

/// Result alias used throughout cairn.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in cairn.
///
/// The variants are grouped by what the caller should do:
/// - [`Error::Io`]: the medium failed; retrying may help, but a failed sync poisons the store.
/// - [`Error::Corrupted`] / [`Error::UnsupportedVersion`]: the bytes on disk are not what cairn
///   wrote (or were written by a newer version); nothing wrong was returned, the object is named.
/// - [`Error::NotFound`] / [`Error::InvalidArgument`]: the call itself was wrong; nothing changed.
/// - [`Error::Locked`]: another `Store` holds the directory.
/// - [`Error::Poisoned`]: a durability operation failed earlier; reopen the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation on `object` failed.
    #[error("I/O error during {op} of {object}: {source}")]
    Io {
        /// The operation that failed (e.g. `fsync`, `rename`, `read`).
        op: &'static str,
        /// The object or path it was applied to.
        object: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// An object's bytes failed validation (checksum, hash, bounds, structure).
    #[error("corrupted object {object}: {reason}")]
    Corrupted {
        /// The object that failed validation (e.g. `segments/0000000000000003.seg`).
        object: String,
        /// What was wrong with it.
        reason: String,
    },
    /// An object carries a format version this build cannot read.
    #[error("unsupported format version {found} in {object} (this build reads version {supported})")]
    UnsupportedVersion {
        /// The object with the unknown version.
        object: String,
        /// The version found in its header.
        found: u16,
        /// The version this build reads.
        supported: u16,
    },
    /// The thing asked for does not exist (a checkpoint id, a table, a store directory).
    #[error("not found: {0}")]
    NotFound(String),
    /// An argument was out of range or malformed; nothing was changed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The store directory is locked by another open `Store` (in this or another process).
    #[error("store at {0} is locked by another open Store")]
    Locked(String),
    /// An earlier durability failure (write or fsync) poisoned the store: it refuses further
    /// writes and checkpoints, because after a failed fsync the state of the medium is unknown.
    /// A panic while a checkpoint or a background compaction ran poisons it too. Drop the
    /// store and open it again to recover the latest committed checkpoint.
    #[error("store is poisoned by an earlier durability failure ({0}); reopen it")]
    Poisoned(String),
    /// The store was opened with [`crate::Options::read_only`] and cannot be changed.
    #[error("store is open read-only")]
    ReadOnly,
    /// The store has been closed.
    #[error("store is closed")]
    Closed,
    /// A checkpoint did not commit because it was aborted (by its handle, by a coordinator,
    /// or because an earlier checkpoint it builds on did not commit). Its writes are dirty
    /// again and go into the next checkpoint; the previous checkpoint is intact.
    #[error("checkpoint aborted: {0}")]
    Aborted(String),
    /// A checkpoint trigger was refused because as many checkpoints as
    /// [`crate::Options::max_checkpoints_in_flight`] allows are persisting
    /// ([`crate::WhenBusy::Refuse`]). Nothing was captured.
    #[error("checkpoint refused: {0}")]
    Busy(String),
    /// A wait passed its deadline (e.g. a coordinator's checkpoint timeout).
    #[error("timed out: {0}")]
    Timeout(String),
}

impl Error {
    /// Shorthand for [`Error::Corrupted`].
    pub(crate) fn corrupted(object: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Corrupted { object: object.into(), reason: reason.into() }
    }

    /// Shorthand for [`Error::Io`].
    pub(crate) fn io(op: &'static str, object: impl Into<String>, source: io::Error) -> Self {
        Error::Io { op, object: object.into(), source }
    }

    /// Attach an object name to a decode error produced by the format code.
    pub(crate) fn from_decode(object: &str, err: crate::format::DecodeError) -> Self {
        match err {
            crate::format::DecodeError::UnsupportedVersion { found, supported } => {
                Error::UnsupportedVersion { object: object.to_string(), found, supported }
            }
            other => Error::corrupted(object, other.to_string()),
        }
    }
}

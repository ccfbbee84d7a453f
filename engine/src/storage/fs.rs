//! The commit protocol over a minimal filesystem interface, shared by the real disk
//! ([`super::OsFs`]) and the simulated one ([`super::SimFs`]).
//!
//! Protocol (see `format-spec.md`, "Filesystem rules"):
//! - put: write `NAME.tmp`, fsync it, rename it to `NAME`; the directory is fsynced by `sync`.
//! - put_new: create `NAME` (it must not exist), write and fsync it; the directory is fsynced
//!   by `sync`. For segments and manifests only, which nothing reads until HEAD commits them.
//! - sync: fsync every directory with a rename or delete since the last sync.
//! - commit_head: write `HEAD.tmp`, fsync it, rename it to `HEAD`, fsync the root directory.
//!
//! A failed fsync is never retried: the error goes up and the store poisons itself.

use super::Storage;
use crate::{Error, Result};
use std::collections::BTreeSet;
use std::io;
use std::sync::Mutex;

/// The filesystem operations the protocol needs. Paths are `/`-separated and relative to the
/// store's root; the root directory is `""`.
pub trait Fs: Send + Sync {
    /// Create or truncate `path` and write `bytes` to it (not yet durable).
    fn write_file(&self, path: &str, bytes: &[u8]) -> io::Result<()>;
    /// Create `path`, which must not exist (`AlreadyExists` otherwise), and write `bytes` to
    /// it (not yet durable).
    fn create_file(&self, path: &str, bytes: &[u8]) -> io::Result<()>;
    /// [`Fs::write_file`] in pieces of at most `piece` bytes, calling `between` before each,
    /// each piece on its way to the disk before the next (not yet durable: `fsync_file` still
    /// follows). So whoever writes a large file can let others' fsyncs go first, and an
    /// fsync of theirs never waits behind more than one piece.
    ///
    /// The default writes the file at once after one call of `between`: right for a
    /// filesystem without a device queue, such as [`super::SimFs`]. The crash states are the
    /// same either way, since the file is durable only after `fsync_file`.
    fn write_file_paced(&self, path: &str, bytes: &[u8], piece: usize, between: &mut dyn FnMut()) -> io::Result<()> {
        let _ = piece;
        between();
        self.write_file(path, bytes)
    }
    /// Make the content of `path` durable.
    fn fsync_file(&self, path: &str) -> io::Result<()>;
    /// Atomically rename `from` to `to`, replacing `to` (durable after `fsync_dir`).
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Make the entries of directory `dir` durable.
    fn fsync_dir(&self, dir: &str) -> io::Result<()>;
    /// Remove `path` (durable after `fsync_dir`).
    fn remove_file(&self, path: &str) -> io::Result<()>;
    /// Read `len` bytes at `offset`; `UnexpectedEof` if the file is shorter.
    fn read_at(&self, path: &str, offset: u64, len: usize) -> io::Result<Vec<u8>>;
    /// Size of `path` in bytes.
    fn file_size(&self, path: &str) -> io::Result<u64>;
    /// Names (not paths) of the files directly in `dir`.
    fn list_dir(&self, dir: &str) -> io::Result<Vec<String>>;
    /// Where this filesystem is, for messages.
    fn location(&self) -> String;
}

/// The piece [`Storage::put_paced`] writes at a time: on this project's machine class
/// (ext4 on a virtual disk, 300-800 MB/s) about a millisecond of the disk's time.
pub const PACED_PIECE: usize = 512 * 1024;

/// [`Storage`] over an [`Fs`].
pub struct FsStorage<F: Fs> {
    fs: F,
    /// Directories with a rename or remove not yet made durable by `sync`.
    unsynced_dirs: Mutex<BTreeSet<String>>,
}

fn dir_of(name: &str) -> &str {
    name.rsplit_once('/').map_or("", |(dir, _)| dir)
}

fn tmp_name(name: &str) -> String {
    format!("{name}.tmp")
}

fn io_err(op: &'static str, object: &str, e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::NotFound && matches!(op, "read" | "size") {
        return Error::NotFound(format!("object {object}"));
    }
    Error::io(op, object, e)
}

impl<F: Fs> FsStorage<F> {
    /// Wrap a filesystem.
    pub fn new(fs: F) -> Self {
        FsStorage { fs, unsynced_dirs: Mutex::new(BTreeSet::new()) }
    }

    /// The filesystem underneath.
    pub fn fs(&self) -> &F {
        &self.fs
    }

    fn mark_unsynced(&self, dir: &str) {
        self.unsynced_dirs.lock().unwrap_or_else(|p| p.into_inner()).insert(dir.to_string());
    }
}

impl<F: Fs> Storage for FsStorage<F> {
    fn put(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let tmp = tmp_name(name);
        self.fs.write_file(&tmp, bytes).map_err(|e| io_err("write", &tmp, e))?;
        self.fs.fsync_file(&tmp).map_err(|e| io_err("fsync", &tmp, e))?;
        self.fs.rename(&tmp, name).map_err(|e| io_err("rename", name, e))?;
        self.mark_unsynced(dir_of(name));
        Ok(())
    }

    fn put_paced(&self, name: &str, bytes: &[u8], between: &mut dyn FnMut()) -> Result<()> {
        let tmp = tmp_name(name);
        self.fs.write_file_paced(&tmp, bytes, PACED_PIECE, between).map_err(|e| io_err("write", &tmp, e))?;
        between();
        self.fs.fsync_file(&tmp).map_err(|e| io_err("fsync", &tmp, e))?;
        self.fs.rename(&tmp, name).map_err(|e| io_err("rename", name, e))?;
        self.mark_unsynced(dir_of(name));
        Ok(())
    }

    fn put_new(&self, name: &str, bytes: &[u8]) -> Result<()> {
        // A torn `name` is possible until the fsync returns; see `Storage::put_new`.
        self.fs.create_file(name, bytes).map_err(|e| io_err("write", name, e))?;
        self.fs.fsync_file(name).map_err(|e| io_err("fsync", name, e))?;
        self.mark_unsynced(dir_of(name));
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        let dirs = std::mem::take(&mut *self.unsynced_dirs.lock().unwrap_or_else(|p| p.into_inner()));
        for dir in dirs {
            // No retry on failure: the caller poisons the store (the fsyncgate lesson).
            self.fs.fsync_dir(&dir).map_err(|e| io_err("fsync_dir", if dir.is_empty() { "." } else { &dir }, e))?;
        }
        Ok(())
    }

    fn commit_head(&self, bytes: &[u8]) -> Result<()> {
        let tmp = tmp_name(super::HEAD);
        self.fs.write_file(&tmp, bytes).map_err(|e| io_err("write", &tmp, e))?;
        self.fs.fsync_file(&tmp).map_err(|e| io_err("fsync", &tmp, e))?;
        self.fs.rename(&tmp, super::HEAD).map_err(|e| io_err("rename", super::HEAD, e))?;
        self.fs.fsync_dir("").map_err(|e| io_err("fsync_dir", ".", e))?;
        Ok(())
    }

    fn read(&self, name: &str, max_len: usize) -> Result<Vec<u8>> {
        let size = self.size(name)?;
        if size > max_len as u64 {
            return Err(Error::corrupted(name, format!("{size} bytes exceed the bound of {max_len}")));
        }
        self.read_range(name, 0, size as usize)
    }

    fn read_range(&self, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        self.fs.read_at(name, offset, len).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                Error::corrupted(name, format!("range {offset}+{len} is beyond the end of the object"))
            } else {
                io_err("read", name, e)
            }
        })
    }

    fn size(&self, name: &str) -> Result<u64> {
        self.fs.file_size(name).map_err(|e| io_err("size", name, e))
    }

    fn list(&self, dir: &str) -> Result<Vec<String>> {
        let entries = match self.fs.list_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_err("list", dir, e)),
        };
        Ok(entries
            .into_iter()
            .filter(|n| !n.ends_with(".tmp"))
            .map(|n| if dir.is_empty() { n } else { format!("{dir}/{n}") })
            .collect())
    }

    fn delete(&self, name: &str) -> Result<()> {
        match self.fs.remove_file(name) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("delete", name, e)),
        }
        self.mark_unsynced(dir_of(name));
        Ok(())
    }

    fn remove_temporaries(&self) -> Result<()> {
        for dir in ["", super::SEGMENTS, super::MANIFESTS] {
            let entries = match self.fs.list_dir(dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("list", dir, e)),
            };
            for n in entries.into_iter().filter(|n| n.ends_with(".tmp")) {
                let path = if dir.is_empty() { n } else { format!("{dir}/{n}") };
                match self.fs.remove_file(&path) {
                    Ok(()) => self.mark_unsynced(dir),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err("delete", &path, e)),
                }
            }
        }
        Ok(())
    }

    fn location(&self) -> String {
        self.fs.location()
    }
}

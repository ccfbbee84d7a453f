//! The local filesystem backend, the embedded default.

use super::{Fs, FsStorage, MANIFESTS, SEGMENTS, STORE_MARKER};
use crate::{Error, Result};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The local filesystem under one store directory. Holds the directory's exclusive lock
/// (`DIR/LOCK`, an advisory `flock`) for as long as it lives.
pub struct OsFs {
    root: PathBuf,
    sync: bool,
    _lock: File,
}

/// [`crate::storage::Storage`] on a local directory.
pub type LocalStorage = FsStorage<OsFs>;

const LOCK: &str = "LOCK";

impl OsFs {
    /// Open the store directory `root`, creating it (mode 0700) and its subdirectories if
    /// `create` is set, and take its lock: exclusive, or shared with `shared` (read-only
    /// openers). With `sync` false, fsyncs are skipped (for tests only: nothing is durable then).
    ///
    /// Without `create`, a directory that does not hold a cairn store is refused with
    /// [`Error::NotFound`] before anything is written. With `create`, an existing non-empty
    /// directory that is not a cairn store is refused with [`Error::InvalidArgument`].
    pub fn open(root: &Path, create: bool, sync: bool, shared: bool) -> Result<OsFs> {
        let shown = root.display().to_string();
        let is_store = root.join(STORE_MARKER).is_file();
        if !is_store {
            if !create {
                return Err(Error::NotFound(format!("no cairn store at {shown}")));
            }
            match fs::read_dir(root) {
                Ok(entries) => {
                    // Only what an interrupted creation leaves may be there already.
                    let foreign = entries
                        .filter_map(|e| e.ok())
                        .any(|e| !matches!(e.file_name().to_str(), Some(LOCK | SEGMENTS | MANIFESTS | "CAIRN.tmp")));
                    if foreign {
                        return Err(Error::InvalidArgument(format!(
                            "{shown} exists, is not empty and is not a cairn store"
                        )));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(root)
                        .map_err(|e| Error::io("create_dir", &shown, e))?;
                    // The new directory's own entry must be durable before anything in it is.
                    if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
                        fsync_dir_path(parent, sync)
                            .map_err(|e| Error::io("fsync_dir", parent.display().to_string(), e))?;
                    }
                }
                Err(e) => return Err(Error::io("read_dir", &shown, e)),
            }
        }
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(root.join(LOCK))
            .map_err(|e| Error::io("open", format!("{shown}/{LOCK}"), e))?;
        let locked = if shared { lock.try_lock_shared() } else { lock.try_lock() };
        match locked {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(Error::Locked(shown)),
            Err(fs::TryLockError::Error(e)) => return Err(Error::io("lock", format!("{shown}/{LOCK}"), e)),
        }
        if create {
            let mut created = false;
            for dir in [SEGMENTS, MANIFESTS] {
                match fs::DirBuilder::new().mode(0o700).create(root.join(dir)) {
                    Ok(()) => created = true,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(Error::io("create_dir", format!("{shown}/{dir}"), e)),
                }
            }
            if created {
                fsync_dir_path(root, sync).map_err(|e| Error::io("fsync_dir", &shown, e))?;
            }
        }
        Ok(OsFs { root: root.to_path_buf(), sync, _lock: lock })
    }

    fn path(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(rel)
        }
    }
}

fn fsync_dir_path(dir: &Path, sync: bool) -> io::Result<()> {
    if sync {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl LocalStorage {
    /// Open local storage at `root` (see [`OsFs::open`]).
    pub fn open(root: &Path, create: bool, sync: bool, shared: bool) -> Result<LocalStorage> {
        Ok(FsStorage::new(OsFs::open(root, create, sync, shared)?))
    }
}

impl Fs for OsFs {
    fn write_file(&self, path: &str, bytes: &[u8]) -> io::Result<()> {
        let mut f = OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(self.path(path))?;
        f.write_all(bytes)
    }

    fn create_file(&self, path: &str, bytes: &[u8]) -> io::Result<()> {
        let mut f = OpenOptions::new().create_new(true).write(true).mode(0o600).open(self.path(path))?;
        f.write_all(bytes)
    }

    fn write_file_paced(&self, path: &str, bytes: &[u8], piece: usize, between: &mut dyn FnMut()) -> io::Result<()> {
        let mut f = OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(self.path(path))?;
        let mut parts = bytes.chunks(piece.max(1)).peekable();
        while let Some(part) = parts.next() {
            between();
            f.write_all(part)?;
            // Sent to the disk now, so the final fsync has little left to wait for. The last
            // piece is left to that fsync: a small file costs one sync, as with `write_file`.
            if self.sync && parts.peek().is_some() {
                f.sync_data()?;
            }
        }
        Ok(())
    }

    fn fsync_file(&self, path: &str) -> io::Result<()> {
        if !self.sync {
            return Ok(());
        }
        File::open(self.path(path))?.sync_all()
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        fs::rename(self.path(from), self.path(to))
    }

    fn fsync_dir(&self, dir: &str) -> io::Result<()> {
        if !self.sync {
            return Ok(());
        }
        File::open(self.path(dir))?.sync_all()
    }

    fn remove_file(&self, path: &str) -> io::Result<()> {
        fs::remove_file(self.path(path))
    }

    fn read_at(&self, path: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        // Plain positioned reads. Sealed segments never change, so an mmap would be sound
        // too; it is not needed while restore reads each chunk once.
        let f = File::open(self.path(path))?;
        // Check the range before allocating: `len` may come from bytes read off the disk.
        if offset.checked_add(len as u64).is_none_or(|end| end > f.metadata().map_or(0, |m| m.len())) {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }

    fn file_size(&self, path: &str) -> io::Result<u64> {
        Ok(fs::metadata(self.path(path))?.len())
    }

    fn list_dir(&self, dir: &str) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(self.path(dir))? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                if let Some(name) = entry.file_name().to_str() {
                    out.push(name.to_string());
                }
            }
        }
        Ok(out)
    }

    fn location(&self) -> String {
        self.root.display().to_string()
    }
}

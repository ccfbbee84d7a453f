//! The local filesystem backend, the embedded default.

use super::{Fs, FsStorage, MANIFESTS, SEGMENTS, STORE_MARKER};
use crate::{Error, Result};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

/// The local filesystem under one store directory. Holds the directory's exclusive lock
/// (`DIR/LOCK`, an advisory `flock`) for as long as it lives.
///
/// On Linux, with syncing on, objects of 64 KiB or more created under their names (a
/// checkpoint's segments) are written with direct I/O through a 4 MiB aligned buffer kept
/// for the life of the store (`format-spec.md` 6); a filesystem refusing direct I/O gets
/// buffered writes. Reads of 16 KiB or more ask the kernel to read 1 MiB ahead.
pub struct OsFs {
    root: PathBuf,
    sync: bool,
    direct: DirectWrites,
    _lock: File,
}

/// Objects created under their names ([`Fs::create_file`]: a checkpoint's segments) of at
/// least this many bytes are written with direct I/O when syncing.
///
/// Why: on this project's machine class (a VM) a buffered write of a fresh 1.2 MB segment
/// spent 3.5-5 ms copying into newly allocated page-cache pages at times (pages the host had
/// apparently not backed yet), three times its fsync; written with `O_DIRECT` the same bytes
/// took 1.0-1.2 ms and the fsync 0.4-0.6 ms, about what the buffered write and its fsync take
/// when the pages are warm.
/// A segment is read again only by open, compaction and verification, so keeping it in the
/// page cache buys little. Smaller objects (manifests) stay buffered: one page each.
const DIRECT_MIN_BYTES: usize = 64 * 1024;

/// Direct writes go through one buffer of this size, aligned to [`DIRECT_ALIGN`], kept for
/// the life of the store (a checkpoint's segment is at most 4 MiB, so usually one write).
const DIRECT_PIECE: usize = 4 * 1024 * 1024;

/// Alignment of a direct write's buffer, offset and length: the largest logical block size
/// Linux filesystems ask for.
const DIRECT_ALIGN: usize = 4096;

/// The state of direct writes for one [`OsFs`].
#[derive(Default)]
struct DirectWrites {
    /// Set once the filesystem refused `O_DIRECT` (tmpfs, some network filesystems): every
    /// later write is buffered.
    refused: AtomicBool,
    /// The aligned staging buffer, allocated at the first direct write.
    buffer: Mutex<Vec<u8>>,
    /// Bytes written with direct I/O (for tests and diagnostics).
    bytes: AtomicU64,
    /// Tests only: answer `EINVAL`, as a filesystem refusing direct I/O does, at step
    /// `refuse_at - 1` of a direct write (step 0: the open; n: the write of the n-th piece);
    /// 0, the default, never.
    #[cfg(test)]
    refuse_at: std::sync::atomic::AtomicUsize,
}

#[cfg(target_os = "linux")]
impl DirectWrites {
    /// `Ok` unless a test asked for a refusal at `step` (see `refuse_at`).
    fn refusal(&self, step: usize) -> io::Result<()> {
        #[cfg(test)]
        if self.refuse_at.load(Ordering::Relaxed) == step + 1 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let _ = step;
        Ok(())
    }
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
        Ok(OsFs { root: root.to_path_buf(), sync, direct: DirectWrites::default(), _lock: lock })
    }

    /// Bytes written with direct I/O since this filesystem was opened.
    pub fn direct_bytes(&self) -> u64 {
        self.direct.bytes.load(Ordering::Relaxed)
    }

    /// Create `path` (which must not exist) holding `bytes`, the part that fills whole
    /// [`DIRECT_ALIGN`] blocks written with `O_DIRECT` and the rest buffered. Falls back to a
    /// buffered write of everything if the filesystem refuses direct I/O. Not durable until
    /// `fsync_file`, as with a buffered write: the direct part may still sit in the device's
    /// cache, and the file's size and block map are only in the page cache and journal.
    #[cfg(target_os = "linux")]
    fn create_file_direct(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let opened = self.direct.refusal(0).and_then(|()| {
            OpenOptions::new().create_new(true).write(true).mode(0o600).custom_flags(libc::O_DIRECT).open(path)
        });
        let file = match opened {
            Ok(file) => file,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                self.direct.refused.store(true, Ordering::Relaxed);
                return create_buffered(path, bytes);
            }
            Err(e) => return Err(e),
        };
        let aligned = bytes.len() / DIRECT_ALIGN * DIRECT_ALIGN;
        let mut buffer = self.direct.buffer.lock().unwrap_or_else(|p| p.into_inner());
        if buffer.is_empty() {
            *buffer = vec![0u8; DIRECT_PIECE + DIRECT_ALIGN];
        }
        let start = buffer.as_ptr().align_offset(DIRECT_ALIGN);
        let mut written = 0;
        while written < aligned {
            let n = (aligned - written).min(DIRECT_PIECE);
            let (Some(staging), Some(part)) = (buffer.get_mut(start..start + n), bytes.get(written..written + n))
            else {
                break;
            };
            staging.copy_from_slice(part);
            // Every piece but the last is whole, so this is the piece's number from 1.
            let piece = written / DIRECT_PIECE + 1;
            match self.direct.refusal(piece).and_then(|()| file.write_all_at(staging, written as u64)) {
                Ok(()) => written += n,
                // Refused at the write rather than the open (alignment rules differ by
                // filesystem): the rest goes buffered.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    self.direct.refused.store(true, Ordering::Relaxed);
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        drop(buffer);
        self.direct.bytes.fetch_add(written as u64, Ordering::Relaxed);
        // The rest (less than a block, or everything after a refusal) through the page cache,
        // by a descriptor without `O_DIRECT`; the fsync that follows covers both.
        let rest = bytes.get(written..).unwrap_or_default();
        if !rest.is_empty() {
            OpenOptions::new().write(true).open(path)?.write_all_at(rest, written as u64)?;
        }
        Ok(())
    }

    fn path(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(rel)
        }
    }
}

/// A read of at least this many bytes (a chunk, not a header or trailer) asks the kernel to
/// read [`READ_AHEAD_BYTES`] past it as well.
const READ_AHEAD_MIN_BYTES: usize = 16 * 1024;

/// How far past a chunk read the kernel is asked to read ahead.
///
/// Why: every read opens the file afresh (no descriptor is cached), so the kernel's own
/// readahead, which follows one descriptor's sequential reads, never grows past the first
/// read. Restore reads a segment's chunks one after another, mostly in file order; with
/// segments written by direct I/O (not in the page cache) each chunk was then one device
/// read of 64 KiB, and the standard workload's restore took 0.7 s longer than from cache.
const READ_AHEAD_BYTES: u64 = 1024 * 1024;

/// `POSIX_FADV_WILLNEED` for the [`READ_AHEAD_BYTES`] after `offset + len` and the read
/// itself: the kernel starts reading them without waiting; pages already cached cost a lookup.
#[cfg(target_os = "linux")]
fn read_ahead(f: &File, offset: u64, len: usize) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let span = (len as u64).saturating_add(READ_AHEAD_BYTES);
    let (Ok(offset), Ok(span)) = (libc::off_t::try_from(offset), libc::off_t::try_from(span)) else {
        return Ok(());
    };
    // SAFETY: plain syscall on a descriptor `f` owns and keeps open for the call's duration.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), offset, span, libc::POSIX_FADV_WILLNEED) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// Create `path` (which must not exist) holding `bytes`, through the page cache.
fn create_buffered(path: &Path, bytes: &[u8]) -> io::Result<()> {
    OpenOptions::new().create_new(true).write(true).mode(0o600).open(path)?.write_all(bytes)
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
        #[cfg(target_os = "linux")]
        if self.sync && bytes.len() >= DIRECT_MIN_BYTES && !self.direct.refused.load(Ordering::Relaxed) {
            return self.create_file_direct(&self.path(path), bytes);
        }
        create_buffered(&self.path(path), bytes)
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
        #[cfg(target_os = "linux")]
        if len >= READ_AHEAD_MIN_BYTES {
            // Best effort: a refusal changes nothing but speed.
            let _ = read_ahead(&f, offset, len);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory for one test, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!("cairn-os-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn pattern(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// Sizes around every boundary of the direct path: the threshold, a block, the staging
    /// buffer (one piece, two pieces, a piece plus a partial block).
    const SIZES: [usize; 10] = [
        0,
        100,
        DIRECT_MIN_BYTES - 1,
        DIRECT_MIN_BYTES,
        DIRECT_MIN_BYTES + 1,
        300 * DIRECT_ALIGN + 17,
        DIRECT_PIECE,
        DIRECT_PIECE + DIRECT_ALIGN - 1,
        DIRECT_PIECE + 5000,
        2 * DIRECT_PIECE + 3 * DIRECT_ALIGN,
    ];

    #[test]
    fn created_files_read_back_whole_whichever_way_they_were_written() -> Result<()> {
        for sync in [true, false] {
            let dir = Scratch::new(if sync { "direct" } else { "buffered" });
            let fs = OsFs::open(&dir.0, true, sync, false)?;
            let mut expected_direct = 0u64;
            for (i, len) in SIZES.into_iter().enumerate() {
                let (name, bytes) = (format!("{SEGMENTS}/{i}.seg"), pattern(len, i as u64 + 1));
                fs.create_file(&name, &bytes).map_err(|e| Error::io("write", &name, e))?;
                fs.fsync_file(&name).map_err(|e| Error::io("fsync", &name, e))?;
                assert_eq!(fs.file_size(&name).map_err(|e| Error::io("size", &name, e))?, len as u64, "{name}");
                let back = fs.read_at(&name, 0, len).map_err(|e| Error::io("read", &name, e))?;
                assert!(back == bytes, "{name} ({len} bytes) reads back differently");
                // Exclusive, as `Storage::put_new` promises, on either path.
                assert_eq!(fs.create_file(&name, &bytes).map_err(|e| e.kind()), Err(io::ErrorKind::AlreadyExists));
                if sync && len >= DIRECT_MIN_BYTES {
                    expected_direct += (len / DIRECT_ALIGN * DIRECT_ALIGN) as u64;
                }
            }
            if !sync {
                assert_eq!(fs.direct_bytes(), 0, "direct I/O without syncing");
            } else if !fs.direct.refused.load(Ordering::Relaxed) {
                // Every whole block of every large file went direct (this filesystem accepts it).
                assert_eq!(fs.direct_bytes(), expected_direct);
            }
        }
        Ok(())
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_refusal_of_direct_io_at_the_open_or_a_write_leaves_the_bytes_whole_and_buffered_after() -> Result<()> {
        let len = 2 * DIRECT_PIECE + 3 * DIRECT_ALIGN + 100;
        // Refused at the open, at the first piece's write, at the second's.
        for (step, direct_before_refusal) in [(0, 0), (1, 0), (2, DIRECT_PIECE as u64)] {
            let dir = Scratch::new(&format!("refused-{step}"));
            let fs = OsFs::open(&dir.0, true, true, false)?;
            let probe = format!("{SEGMENTS}/probe.seg");
            fs.create_file(&probe, &pattern(DIRECT_MIN_BYTES, 9)).map_err(|e| Error::io("write", &probe, e))?;
            if fs.direct.refused.load(Ordering::Relaxed) {
                return Ok(()); // this filesystem refuses direct I/O itself: nothing to simulate
            }
            let before = fs.direct_bytes();
            fs.direct.refuse_at.store(step + 1, Ordering::Relaxed);
            for (i, bytes) in [pattern(len, 1), pattern(len, 2)].iter().enumerate() {
                let name = format!("{SEGMENTS}/{i}.seg");
                fs.create_file(&name, bytes).map_err(|e| Error::io("write", &name, e))?;
                fs.fsync_file(&name).map_err(|e| Error::io("fsync", &name, e))?;
                assert_eq!(fs.file_size(&name).map_err(|e| Error::io("size", &name, e))?, len as u64, "{name}");
                let back = fs.read_at(&name, 0, len).map_err(|e| Error::io("read", &name, e))?;
                assert!(&back == bytes, "refused at step {step}: {name} reads back differently");
            }
            assert!(fs.direct.refused.load(Ordering::Relaxed), "refused at step {step}: not remembered");
            // What went direct before the refusal, and nothing after: the second file is buffered.
            assert_eq!(fs.direct_bytes() - before, direct_before_refusal, "refused at step {step}");
        }
        Ok(())
    }

    #[test]
    fn a_read_with_read_ahead_returns_exactly_the_range_asked_for() -> Result<()> {
        let dir = Scratch::new("read-ahead");
        let fs = OsFs::open(&dir.0, true, true, false)?;
        let bytes = pattern(3 * 1024 * 1024 + 123, 7);
        let name = format!("{SEGMENTS}/1.seg");
        fs.create_file(&name, &bytes).map_err(|e| Error::io("write", &name, e))?;
        for (offset, len) in [(0, READ_AHEAD_MIN_BYTES), (24, 65536), (bytes.len() - 65536, 65536), (5, 10)] {
            let back = fs.read_at(&name, offset as u64, len).map_err(|e| Error::io("read", &name, e))?;
            assert!(back.as_slice() == &bytes[offset..offset + len], "{offset}+{len}");
        }
        let past = fs.read_at(&name, (bytes.len() - 10) as u64, 65536).map(|_| ()).map_err(|e| e.kind());
        assert_eq!(past, Err(io::ErrorKind::UnexpectedEof));
        Ok(())
    }
}

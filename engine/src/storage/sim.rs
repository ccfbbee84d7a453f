//! A simulated filesystem for tests: it keeps what was written apart from what is durable,
//! fails the Nth operation on request, and produces the exact image a crash leaves.
//!
//! The model follows POSIX on a journaling filesystem such as ext4: file content is durable
//! after `fsync` of the file; a create, rename or remove is durable after `fsync` of its
//! directory. Faults are per instance, so tests run in parallel.

use super::{Fs, FsStorage};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// [`crate::storage::Storage`] over a [`SimFs`].
pub type SimStorage = FsStorage<SimFs>;

/// Which image of the simulated disk a crash leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashMode {
    /// Only what was made durable survives: file content fsynced, directory entries whose
    /// directory was fsynced. The most pessimistic legal outcome.
    DropUnsynced,
    /// Everything written reached the disk just before the crash (the most optimistic one).
    KeepUnsynced,
    /// Like `KeepUnsynced`, but the last file written keeps only the first `keep` bytes of
    /// whatever of its content was not yet fsynced (a torn write).
    TornLastWrite {
        /// Bytes of the unsynced content that survive.
        keep: usize,
    },
    /// Like `KeepUnsynced`, but the unsynced tail of the last file written reads back as
    /// zeros (its length survived, its content did not).
    ZeroTail,
    /// Like `ZeroTail`, with pseudo-random bytes from `seed` instead of zeros.
    GarbageTail {
        /// Seed of the garbage.
        seed: u64,
    },
    /// Each change not yet made durable (a file's content, a directory entry) independently
    /// survives or not, chosen by `seed`: writes reaching the disk out of order.
    Reordered {
        /// Seed of the choices.
        seed: u64,
    },
    /// Like `KeepUnsynced`, but the last rename whose directory was not fsynced since is lost:
    /// the target keeps its old entry and the source is back.
    LostRename,
}

/// xorshift64*, for reproducible crash images.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

#[derive(Clone, Default)]
struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
}

#[derive(Clone, Default)]
struct State {
    inodes: Vec<Inode>,
    /// Directory entries as the running program sees them: path -> inode.
    names: BTreeMap<String, usize>,
    /// Directory entries as they would be after a crash.
    durable_names: BTreeMap<String, usize>,
    ops: u64,
    fail_at: Option<u64>,
    fail_persistent: bool,
    last_write: Option<usize>,
    /// The last rename: source, target, and the target's entry before it.
    last_rename: Option<(String, String, Option<usize>)>,
    log: Vec<String>,
    points: BTreeMap<String, u64>,
    op_points: Vec<String>,
}

/// A simulated filesystem. Clones share the same disk.
#[derive(Clone, Default)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
    gate: Arc<Gate>,
    /// The same for reads ([`SimFs::hold_reads`]).
    read_gate: Arc<Gate>,
    /// The same for the size of files in one directory ([`SimFs::hold_sizes_in`]).
    size_gate: Arc<Gate>,
    size_gate_dir: Arc<Mutex<Option<String>>>,
}

/// Holds file writes (or reads, or size queries) back while closed, so a test can stop a
/// background checkpoint at its first write (or a reader at a read) and act while it waits
/// there.
#[derive(Default)]
struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Default)]
struct GateState {
    closed: bool,
    waiting: usize,
    /// Waiters let through one at a time while the gate stays closed ([`Gate::let_one_pass`]).
    passes: usize,
    /// Operations that have come to the gate while it was closed, in all.
    arrived: u64,
}

impl Gate {
    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pass(&self) {
        let mut g = self.lock();
        if !g.closed {
            return;
        }
        g.waiting += 1;
        g.arrived += 1;
        self.changed.notify_all();
        while g.closed && g.passes == 0 {
            g = self.changed.wait(g).unwrap_or_else(|p| p.into_inner());
        }
        if g.closed {
            g.passes -= 1;
        }
        g.waiting -= 1;
    }

    /// Let one waiter (or the next to come) through, the gate staying closed.
    fn let_one_pass(&self) {
        self.lock().passes += 1;
        self.changed.notify_all();
    }

    /// Block until at least `n` operations in all have come to the gate while it was closed.
    fn wait_for_arrived(&self, n: u64) {
        let mut g = self.lock();
        while g.arrived < n {
            g = self.changed.wait(g).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Close the gate, or open it and let every waiter go.
    fn set_closed(&self, closed: bool) {
        let mut g = self.lock();
        g.closed = closed;
        g.passes = 0;
        self.changed.notify_all();
    }

    /// Block until at least `n` threads wait at the gate.
    fn wait_for(&self, n: usize) {
        let mut g = self.lock();
        while g.waiting < n {
            g = self.changed.wait(g).unwrap_or_else(|p| p.into_inner());
        }
    }
}

fn dir_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(d, _)| d)
}

/// The named fault points of every durability operation: `operation:object-class`, where the
/// class is `segment`, `manifest`, `head` (HEAD and its temporary), `other` (the store marker,
/// PINS and their temporaries) or `dir`. Every one must be reached, and its failure handled,
/// by the test suite (`tests/tests/fault_points.rs`). Manifests are never renamed: they are
/// created under their names ([`crate::storage::Storage::put_new`]).
pub const FAULT_POINTS: [&str; 16] = [
    "write:segment",
    "fsync:segment",
    "rename:segment",
    "remove:segment",
    "write:manifest",
    "fsync:manifest",
    "remove:manifest",
    "write:head",
    "fsync:head",
    "rename:head",
    "remove:head",
    "write:other",
    "fsync:other",
    "rename:other",
    "remove:other",
    "fsync_dir:dir",
];

fn fault_point(op: &str, path: &str) -> String {
    let class = if path.starts_with("segments/") {
        "segment"
    } else if path.starts_with("manifests/") {
        "manifest"
    } else if path.starts_with("HEAD") {
        "head"
    } else if path.is_empty() || path == "segments" || path == "manifests" {
        "dir"
    } else {
        "other"
    };
    format!("{op}:{class}")
}

impl SimFs {
    /// An empty disk.
    pub fn new() -> Self {
        Self::default()
    }

    /// Storage on this disk (sharing it with `self`).
    pub fn storage(&self) -> SimStorage {
        FsStorage::new(self.clone())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Count an operation and decide whether it fails.
    fn op(&self, s: &mut State, op: &str, path: &str) -> io::Result<()> {
        s.ops += 1;
        let n = s.ops;
        let point = fault_point(op, path);
        s.log.push(format!("{n} {op} {path}"));
        *s.points.entry(point.clone()).or_default() += 1;
        s.op_points.push(point);
        if let Some(at) = s.fail_at {
            if n == at || (s.fail_persistent && n > at) {
                return Err(io::Error::other(format!("injected fault at operation {n} ({op} {path})")));
            }
        }
        Ok(())
    }

    /// Operations performed so far (reads included).
    pub fn ops(&self) -> u64 {
        self.lock().ops
    }

    /// Every operation so far, one line each: `N op path`.
    pub fn op_log(&self) -> Vec<String> {
        self.lock().log.clone()
    }

    /// The number of the first operation after operation `after` whose log line (`op path`)
    /// contains `needle`, e.g. `"rename HEAD"`: where to aim `fail_at` in a replay.
    pub fn first_op_after(&self, after: u64, needle: &str) -> Option<u64> {
        let s = self.lock();
        let skip = usize::try_from(after).unwrap_or(usize::MAX);
        s.log.iter().enumerate().skip(skip).find(|(_, line)| line.contains(needle)).map(|(i, _)| i as u64 + 1)
    }

    /// The fault point of every operation so far, in order (operation `n` is at `n - 1`).
    pub fn op_points(&self) -> Vec<String> {
        self.lock().op_points.clone()
    }

    /// How often each fault point (`op:object-class`, e.g. `fsync:segment`) was reached.
    pub fn fault_points(&self) -> BTreeMap<String, u64> {
        self.lock().points.clone()
    }

    /// Make operation number `n` (counting from the next one as `ops() + 1`) fail with an I/O
    /// error; with `persistent`, every later operation fails too (the disk is gone: a crash).
    pub fn fail_at(&self, n: u64, persistent: bool) {
        let mut s = self.lock();
        s.fail_at = Some(n);
        s.fail_persistent = persistent;
    }

    /// From now on every file write waits until [`SimFs::release_writes`] (other operations
    /// go on).
    pub fn hold_writes(&self) {
        self.gate.set_closed(true);
    }

    /// Let held and later writes go.
    pub fn release_writes(&self) {
        self.gate.set_closed(false);
    }

    /// Block until at least one write waits at the gate [`SimFs::hold_writes`] closed.
    pub fn wait_for_held_write(&self) {
        self.wait_for_held_writes(1);
    }

    /// Block until at least `n` writes (from different threads) wait at the gate.
    pub fn wait_for_held_writes(&self, n: usize) {
        self.gate.wait_for(n);
    }

    /// From now on every file read waits until [`SimFs::release_reads`] (other operations go
    /// on), so a test can stop a reader inside a read and act while it waits there.
    pub fn hold_reads(&self) {
        self.read_gate.set_closed(true);
    }

    /// Let held and later reads go.
    pub fn release_reads(&self) {
        self.read_gate.set_closed(false);
    }

    /// Block until at least one read waits at the gate [`SimFs::hold_reads`] closed.
    pub fn wait_for_held_read(&self) {
        self.read_gate.wait_for(1);
    }

    /// Let one held read (or the next read to come) go, later reads still held.
    pub fn let_one_read_go(&self) {
        self.read_gate.let_one_pass();
    }

    /// Block until `n` reads in all have come to the gate [`SimFs::hold_reads`] closed (counting
    /// those let go since), so a test can stop a reader at its `n`-th read.
    pub fn wait_for_reads_held(&self, n: u64) {
        self.read_gate.wait_for_arrived(n);
    }

    /// From now on every size query (`stat`) of a file in directory `dir` waits until
    /// [`SimFs::release_sizes`] (other operations go on), so a test can stop a reader between
    /// listing a directory and sizing what it listed.
    pub fn hold_sizes_in(&self, dir: &str) {
        *self.size_gate_dir.lock().unwrap_or_else(|p| p.into_inner()) = Some(dir.to_string());
        self.size_gate.set_closed(true);
    }

    /// Let held and later size queries go.
    pub fn release_sizes(&self) {
        *self.size_gate_dir.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.size_gate.set_closed(false);
    }

    /// Block until at least one size query waits at the gate [`SimFs::hold_sizes_in`] closed.
    pub fn wait_for_held_size(&self) {
        self.size_gate.wait_for(1);
    }

    /// Stop injecting faults.
    pub fn clear_faults(&self) {
        self.lock().fail_at = None;
    }

    /// The image a crash right now would leave, as a new independent disk with no faults.
    pub fn crash_image(&self, mode: CrashMode) -> SimFs {
        let s = self.lock();
        let mut inodes = s.inodes.clone();
        let names = match mode {
            CrashMode::DropUnsynced => {
                for i in &mut inodes {
                    i.data = i.durable.clone();
                }
                s.durable_names.clone()
            }
            CrashMode::KeepUnsynced => s.names.clone(),
            CrashMode::TornLastWrite { keep } => {
                if let Some(inode) = s.last_write.and_then(|i| inodes.get_mut(i)) {
                    if inode.data != inode.durable {
                        let keep = keep.min(inode.data.len());
                        inode.data.truncate(keep);
                    }
                }
                s.names.clone()
            }
            CrashMode::ZeroTail | CrashMode::GarbageTail { .. } => {
                let mut seed = match mode {
                    CrashMode::GarbageTail { seed } => seed | 1,
                    _ => 0,
                };
                if let Some(inode) = s.last_write.and_then(|i| inodes.get_mut(i)) {
                    // The part not known durable: everything past the common prefix.
                    let synced = inode.data.iter().zip(&inode.durable).take_while(|(a, b)| a == b).count();
                    for b in inode.data.iter_mut().skip(synced) {
                        *b = if seed == 0 { 0 } else { next_random(&mut seed) as u8 };
                    }
                }
                s.names.clone()
            }
            CrashMode::Reordered { seed } => {
                let mut seed = seed | 1;
                for i in &mut inodes {
                    if i.data != i.durable && next_random(&mut seed).is_multiple_of(2) {
                        i.data = i.durable.clone();
                    }
                }
                let mut names = s.durable_names.clone();
                let paths: BTreeSet<&String> = s.names.keys().chain(s.durable_names.keys()).collect();
                for path in paths {
                    let (volatile, durable) = (s.names.get(path), s.durable_names.get(path));
                    if volatile != durable && next_random(&mut seed).is_multiple_of(2) {
                        match volatile {
                            Some(&i) => names.insert(path.clone(), i),
                            None => names.remove(path),
                        };
                    }
                }
                names
            }
            CrashMode::LostRename => {
                let mut names = s.names.clone();
                if let Some((from, to, previous)) = &s.last_rename {
                    // Only a rename whose new entry is not yet durable can be lost.
                    let durable = s.durable_names.get(to) == s.names.get(to);
                    if !durable {
                        if let Some(i) = names.remove(to) {
                            names.insert(from.clone(), i);
                        }
                        if let Some(p) = previous {
                            names.insert(to.clone(), *p);
                        }
                    }
                }
                names
            }
        };
        for i in &mut inodes {
            i.durable = i.data.clone();
        }
        let state = State { inodes, durable_names: names.clone(), names, ..State::default() };
        SimFs { state: Arc::new(Mutex::new(state)), ..SimFs::default() }
    }

    /// Paths of every file, as the running program sees them.
    pub fn files(&self) -> Vec<String> {
        self.lock().names.keys().cloned().collect()
    }

    /// Content of `path`, as the running program sees it.
    pub fn file(&self, path: &str) -> Option<Vec<u8>> {
        let s = self.lock();
        s.names.get(path).and_then(|&i| s.inodes.get(i)).map(|i| i.data.clone())
    }

    /// Replace the content of an existing file, durably, without counting an operation: a
    /// corruption the medium introduced behind the program's back.
    pub fn corrupt(&self, path: &str, f: impl FnOnce(&mut Vec<u8>)) -> bool {
        let mut s = self.lock();
        let Some(&i) = s.names.get(path) else { return false };
        let Some(inode) = s.inodes.get_mut(i) else { return false };
        f(&mut inode.data);
        inode.durable = inode.data.clone();
        true
    }
}

impl SimFs {
    /// A write: `path` names a new inode holding `bytes`, none of them durable yet (a truncate
    /// and write of an existing file leaves its old inode to whoever still names it durably).
    /// With `exclusive`, an existing `path` is `AlreadyExists`.
    fn write_new_inode(&self, path: &str, bytes: &[u8], exclusive: bool) -> io::Result<()> {
        self.gate.pass();
        let mut s = self.lock();
        self.op(&mut s, "write", path)?;
        if exclusive && s.names.contains_key(path) {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        let i = s.inodes.len();
        s.inodes.push(Inode { data: bytes.to_vec(), durable: Vec::new() });
        s.names.insert(path.to_string(), i);
        s.last_write = Some(i);
        Ok(())
    }
}

impl Fs for SimFs {
    fn write_file(&self, path: &str, bytes: &[u8]) -> io::Result<()> {
        self.write_new_inode(path, bytes, false)
    }

    fn create_file(&self, path: &str, bytes: &[u8]) -> io::Result<()> {
        self.write_new_inode(path, bytes, true)
    }

    fn fsync_file(&self, path: &str) -> io::Result<()> {
        let mut s = self.lock();
        self.op(&mut s, "fsync", path)?;
        let i = *s.names.get(path).ok_or(io::ErrorKind::NotFound)?;
        if let Some(inode) = s.inodes.get_mut(i) {
            inode.durable = inode.data.clone();
        }
        Ok(())
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut s = self.lock();
        self.op(&mut s, "rename", to)?;
        let i = s.names.remove(from).ok_or(io::ErrorKind::NotFound)?;
        let previous = s.names.insert(to.to_string(), i);
        s.last_rename = Some((from.to_string(), to.to_string(), previous));
        Ok(())
    }

    fn fsync_dir(&self, dir: &str) -> io::Result<()> {
        let mut s = self.lock();
        self.op(&mut s, "fsync_dir", dir)?;
        let in_dir = |p: &String| dir_of(p) == dir;
        let volatile: Vec<(String, usize)> =
            s.names.iter().filter(|(p, _)| in_dir(p)).map(|(p, &i)| (p.clone(), i)).collect();
        s.durable_names.retain(|p, _| !in_dir(p));
        s.durable_names.extend(volatile);
        Ok(())
    }

    fn remove_file(&self, path: &str) -> io::Result<()> {
        let mut s = self.lock();
        self.op(&mut s, "remove", path)?;
        s.names.remove(path).map(|_| ()).ok_or_else(|| io::ErrorKind::NotFound.into())
    }

    fn read_at(&self, path: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        self.read_gate.pass();
        let mut s = self.lock();
        self.op(&mut s, "read", path)?;
        let i = *s.names.get(path).ok_or(io::ErrorKind::NotFound)?;
        let data = &s.inodes.get(i).ok_or(io::ErrorKind::NotFound)?.data;
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        start
            .checked_add(len)
            .and_then(|end| data.get(start..end))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| io::ErrorKind::UnexpectedEof.into())
    }

    fn file_size(&self, path: &str) -> io::Result<u64> {
        let held = self.size_gate_dir.lock().unwrap_or_else(|p| p.into_inner()).as_deref() == Some(dir_of(path));
        if held {
            self.size_gate.pass();
        }
        let mut s = self.lock();
        self.op(&mut s, "stat", path)?;
        let i = *s.names.get(path).ok_or(io::ErrorKind::NotFound)?;
        Ok(s.inodes.get(i).map_or(0, |i| i.data.len() as u64))
    }

    fn list_dir(&self, dir: &str) -> io::Result<Vec<String>> {
        let mut s = self.lock();
        self.op(&mut s, "list", dir)?;
        let names: BTreeSet<String> = s
            .names
            .keys()
            .filter(|p| dir_of(p) == dir)
            .map(|p| p.rsplit_once('/').map_or(p.as_str(), |(_, n)| n).to_string())
            .collect();
        Ok(names.into_iter().collect())
    }

    fn location(&self) -> String {
        "memory".to_string()
    }
}

//! Helpers shared by cairn's integration tests.

use cairn::storage::SimFs;
use cairn::{CheckpointView, Options, Result, Store};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Every table's content: table -> key -> value.
pub type Dump = BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>>;

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new, not yet existing, unique path.
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        TempDir(std::env::temp_dir().join(format!("cairn-test-{tag}-{}-{n}-{nanos}", std::process::id())))
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Open a store on a simulated disk.
pub fn sim_store(fs: &SimFs, opts: Options) -> Result<Store> {
    Store::open_storage(Arc::new(fs.storage()), opts)
}

/// Options with tiny chunks, so small tests cross many chunk boundaries.
pub fn tiny_chunks() -> Options {
    Options::new().chunk_target_bytes(Options::MIN_CHUNK_TARGET_BYTES)
}

/// The whole working state.
pub fn dump(store: &Store) -> Result<Dump> {
    let mut out = Dump::new();
    for name in store.tables()? {
        out.insert(name.clone(), store.table(&name)?.iter_all()?.into_iter().collect());
    }
    Ok(out)
}

/// The whole state of a checkpoint.
pub fn dump_view(view: &CheckpointView) -> Result<Dump> {
    let mut out = Dump::new();
    for name in view.tables() {
        out.insert(name.clone(), view.range(&name, ..)?.into_iter().collect());
    }
    Ok(out)
}

/// The standard 16-byte key: 8-byte big-endian id, then 8 bytes of a hash of it.
pub fn key16(id: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&id.to_be_bytes());
    k[8..].copy_from_slice(&blake3::hash(&id.to_le_bytes()).as_bytes()[..8]);
    k
}

/// A deterministic 100-byte value for (id, version).
pub fn value100(id: u64, version: u64) -> [u8; 100] {
    let mut out = [0u8; 100];
    let mut h = blake3::Hasher::new();
    h.update(&id.to_le_bytes());
    h.update(&version.to_le_bytes());
    h.finalize_xof().fill(&mut out);
    out
}

/// Record one line of a reliability suite's figures for the end-of-run summary that `.ci/run`
/// prints (`<target dir>/tmp/reliability/<suite>.txt`), and print it.
pub fn report(suite: &str, line: &str) {
    println!("{suite}: {line}");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"), PathBuf::from);
    let dir = target.join("tmp/reliability");
    if std::fs::create_dir_all(&dir).is_ok() {
        let file: String = suite.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
        let _ = std::fs::write(dir.join(format!("{file}.txt")), format!("{suite}: {line}\n"));
    }
}

/// Whether the long tier runs (`CAIRN_STRESS=1`).
pub fn stress() -> bool {
    std::env::var_os("CAIRN_STRESS").is_some()
}

/// Each ended checkpoint's chunk bytes, raw and as stored, in order ([`recording_chunk_bytes`]).
pub type ChunkBytes = Arc<std::sync::Mutex<Vec<(u64, u64)>>>;

/// `opts` with a listener recording each ended checkpoint's chunk bytes, raw and as stored
/// (what compression made of them), in order.
pub fn recording_chunk_bytes(opts: Options) -> (Options, ChunkBytes) {
    let records = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = records.clone();
    let opts =
        opts.listener(move |r| sink.lock().unwrap_or_else(|p| p.into_inner()).push((r.raw_bytes, r.stored_bytes)));
    (opts, records)
}

/// The segment files on `fs`, in id order.
pub fn segment_files(fs: &SimFs) -> Vec<String> {
    fs.files().into_iter().filter(|f| f.starts_with("segments/")).collect()
}

/// A store ready for a compaction whose GC copies nearly all of its load (`keys` keys of
/// about 116 bytes, small chunks): a second checkpoint wrote every key again, changing one in
/// 1,000 (its other chunks are the load's), and three more runs put the table past its bound.
/// The compaction merges all five runs into one (the second checkpoint's chunks: nothing new
/// but a few), so the load's chunks of the changed keys are no longer HEAD's, and the GC,
/// with a live fraction of 0.9999, finds every segment of the load sparse and copies it
/// (those chunks as deltas). Returns the store, its state and the load's segments.
pub fn nearly_live_load(fs: &SimFs, keys: u64) -> Result<(Store, Dump, Vec<String>)> {
    let store = sim_store(fs, nearly_live_options())?;
    let t = store.table("state")?;
    let mut load = Vec::new();
    for version in 0..2 {
        for id in 0..keys {
            let changed = version == 1 && id % 1000 == 0;
            t.put(&key16(id), &value100(id, u64::from(changed)))?;
        }
        store.checkpoint(b"load")?;
        if version == 0 {
            load = segment_files(fs);
        }
    }
    for round in 0..3u8 {
        t.put(b"x", &[round])?;
        store.checkpoint(&[round])?;
    }
    let state = dump(&store)?;
    Ok((store, state, load))
}

/// The options of [`nearly_live_load`]'s store.
pub fn nearly_live_options() -> Options {
    Options::new()
        .chunk_target_bytes(1024)
        .retention(cairn::Retention::keep_last(100))
        .max_runs_per_table(4)
        .merge_slices(1)
        .segment_live_fraction_min(0.9999)
}

/// Which segment write a [`PanickingDisk`] panics in: a checkpoint's (`put_new`) or a
/// compaction's (`put`, also under `put_paced`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SegmentWrite {
    Checkpoint,
    Compaction,
}

/// A simulated disk whose next segment write of one kind panics once armed: a bug, or memory
/// exhaustion, on whichever of the store's threads writes it.
pub struct PanickingDisk {
    disk: cairn::storage::SimStorage,
    on: SegmentWrite,
    armed: std::sync::atomic::AtomicBool,
    /// The name of the thread it panicked on.
    panicked_on: std::sync::Mutex<Option<String>>,
}

impl PanickingDisk {
    pub fn new(fs: &SimFs, on: SegmentWrite) -> Arc<PanickingDisk> {
        Arc::new(PanickingDisk { disk: fs.storage(), on, armed: false.into(), panicked_on: Default::default() })
    }

    /// Panic at the next segment write of the kind chosen.
    pub fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// The name of the thread it panicked on, once it has.
    pub fn panicked_on(&self) -> Option<String> {
        self.panicked_on.lock().ok().and_then(|name| name.clone())
    }

    fn panic_if_armed(&self, kind: SegmentWrite, name: &str) {
        if kind == self.on && name.starts_with("segments/") && self.armed.swap(false, Ordering::SeqCst) {
            if let Ok(mut on) = self.panicked_on.lock() {
                *on = Some(std::thread::current().name().unwrap_or("unnamed").to_string());
            }
            panic!("a test's disk panics writing {name}");
        }
    }
}

impl cairn::Storage for PanickingDisk {
    fn put(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.panic_if_armed(SegmentWrite::Compaction, name);
        self.disk.put(name, bytes)
    }
    fn put_new(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.panic_if_armed(SegmentWrite::Checkpoint, name);
        self.disk.put_new(name, bytes)
    }
    fn sync(&self) -> Result<()> {
        self.disk.sync()
    }
    fn commit_head(&self, bytes: &[u8]) -> Result<()> {
        self.disk.commit_head(bytes)
    }
    fn read(&self, name: &str, max_len: usize) -> Result<Vec<u8>> {
        self.disk.read(name, max_len)
    }
    fn read_range(&self, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        self.disk.read_range(name, offset, len)
    }
    fn size(&self, name: &str) -> Result<u64> {
        self.disk.size(name)
    }
    fn list(&self, dir: &str) -> Result<Vec<String>> {
        self.disk.list(dir)
    }
    fn delete(&self, name: &str) -> Result<()> {
        self.disk.delete(name)
    }
    fn remove_temporaries(&self) -> Result<()> {
        self.disk.remove_temporaries()
    }
    fn location(&self) -> String {
        self.disk.location()
    }
}

/// Run `f` on a thread of its own and fail, rather than hang, if it has not returned within
/// two minutes (a deadlock guard, not a timing check: `f` takes well under a second).
pub fn without_hanging(what: &str, f: impl FnOnce() -> Result<()> + Send + 'static) {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(f().map_err(|e| e.to_string()));
    });
    match finished.recv_timeout(std::time::Duration::from_secs(120)) {
        Ok(outcome) => assert_eq!(outcome, Ok(()), "{what}"),
        Err(e) => panic!("{what}: hung or panicked ({e})"),
    }
}

/// `count` values of `len` bytes each that do not compress (bytes of one xorshift64 stream,
/// the same on every call): a checkpoint of them takes as many bytes in its segments.
pub fn incompressible_values(count: usize, len: usize) -> impl Iterator<Item = Vec<u8>> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..count).map(move |_| {
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    })
}

//! `cairn bench`: the standard workload of `../shared/BENCH.md`, end to end on the real
//! filesystem, with the machine's floor measured in the same run.
//!
//! Load S keys (16-byte keys, 100-byte values) and checkpoint; then R rounds of D updates
//! (uniform, or Zipf with `--zipf`) and a durable checkpoint each; then close, reopen and read
//! everything back against an order-independent checksum. The floor: the median latency of a
//! 4 KiB append plus fsync, sequential write bandwidth (256 MiB in 1 MiB writes, one fsync),
//! and D updates of existing keys in a `HashMap<Vec<u8>, Vec<u8>>`, measured in a child
//! process so that its memory does not count toward cairn's peak RSS. The restore's baseline:
//! a full snapshot of the same S pairs read into a `HashMap` (T4's comparator), also in a
//! child process.
//!
//! Beside the floor, the cost of cairn's own commit protocol on this filesystem: the file
//! operations a checkpoint makes (`format-spec.md` 6.1) done alone, with no engine work. Each
//! checkpoint's record splits its time into encoding and commit, so the table shows how much
//! of a checkpoint is CPU work and how much is the protocol's I/O.

use crate::{emit, CliError};
use cairn::storage::{manifest_name, segment_name, LocalStorage};
use cairn::{CheckpointId, CheckpointRecord, Options, Outcome, SegmentId, Storage, Store};
use cairn_benches::{key16, snapshot, value100};
use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What `cairn bench` was asked for.
pub struct BenchArgs {
    /// Keys of state (S).
    pub keys: u64,
    /// Keys updated per round (D).
    pub dirty: u64,
    /// Rounds (R).
    pub rounds: u64,
    /// Zipf exponent for the choice of updated keys (uniform when `None`).
    pub zipf: Option<f64>,
    /// Print one JSON object as the last line.
    pub json: bool,
    /// Directory to work in (removed afterwards).
    pub dir: PathBuf,
    /// Compact in the background during the rounds, at most this many MB/s (0: unbounded);
    /// `None`: no compaction.
    pub background_compaction_mb_per_s: Option<u64>,
    /// [`cairn::Options::merge_slices`] of the store.
    pub merge_slices: usize,
}

fn io(what: &str, e: std::io::Error) -> CliError {
    CliError::from(format!("{what}: {e}"))
}

/// xorshift64*: a fixed seed makes every run choose the same keys and values.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Chooses key ids: uniform, or Zipf by inverting a precomputed CDF.
enum Chooser {
    Uniform,
    Zipf(Vec<f64>),
}

impl Chooser {
    fn new(keys: u64, zipf: Option<f64>) -> Self {
        match zipf {
            None => Chooser::Uniform,
            Some(s) => {
                let mut cdf = Vec::with_capacity(keys as usize);
                let mut sum = 0.0;
                for rank in 1..=keys {
                    sum += 1.0 / (rank as f64).powf(s);
                    cdf.push(sum);
                }
                cdf.iter_mut().for_each(|c| *c /= sum);
                Chooser::Zipf(cdf)
            }
        }
    }

    fn pick(&self, rng: &mut Rng, keys: u64) -> u64 {
        match self {
            Chooser::Uniform => rng.next() % keys,
            // Rank r maps to a scattered id so hot keys are not neighbours.
            Chooser::Zipf(cdf) => {
                let rank = cdf.partition_point(|&c| c < rng.unit()) as u64;
                rank.min(keys - 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) % keys
            }
        }
    }
}

/// Bytes this process caused to be written to storage (`write_bytes` of /proc/self/io).
fn write_bytes() -> u64 {
    proc_field("/proc/self/io", "write_bytes:").unwrap_or(0)
}

/// Peak resident set size (`VmHWM` of /proc/self/status), in bytes.
fn peak_rss() -> u64 {
    proc_field("/proc/self/status", "VmHWM:").map_or(0, |kib| kib * 1024)
}

fn proc_field(path: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line.trim_start_matches(field).split_whitespace().next()?.parse().ok()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).copied().unwrap_or(0.0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Order-independent checksum of a (key, value) pair set: the wrapping sum of a hash of each.
fn pair_hash(key: &[u8], value: &[u8]) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(&(key.len() as u64).to_le_bytes());
    h.update(key);
    h.update(value);
    let bytes = h.finalize();
    u64::from_le_bytes(bytes.as_bytes()[..8].try_into().unwrap_or([0; 8]))
}

/// Median latency of a 4 KiB append followed by fsync, in ms.
fn fsync_floor(dir: &Path) -> Result<f64, CliError> {
    let path = dir.join("floor-fsync");
    let mut f = OpenOptions::new().create(true).append(true).open(&path).map_err(|e| io("floor file", e))?;
    let block = [0x5au8; 4096];
    let mut times = Vec::with_capacity(200);
    for _ in 0..200 {
        let t = Instant::now();
        f.write_all(&block).map_err(|e| io("floor write", e))?;
        f.sync_all().map_err(|e| io("floor fsync", e))?;
        times.push(ms(t.elapsed()));
    }
    std::fs::remove_file(&path).ok();
    Ok(median(&mut times))
}

/// Sequential write bandwidth: 256 MiB in 1 MiB writes and one fsync, in MB/s, the better of
/// two passes.
///
/// Why two: on this project's machine class (a VM) writing into page-cache pages the host
/// has not backed yet costs several times more than into pages freed a moment ago, so one
/// pass measured 200-400 MB/s or 600-1,300 MB/s depending on what the previous process left.
/// The second pass reuses the first one's pages; the better pass is the floor.
fn bandwidth_floor(dir: &Path) -> Result<f64, CliError> {
    let mut best: f64 = 0.0;
    for _ in 0..2 {
        best = best.max(bandwidth_pass(dir)?);
    }
    Ok(best)
}

fn bandwidth_pass(dir: &Path) -> Result<f64, CliError> {
    let path = dir.join("floor-seq");
    let mut f = File::create(&path).map_err(|e| io("floor file", e))?;
    let block = vec![0xa5u8; 1 << 20];
    let t = Instant::now();
    for _ in 0..256 {
        f.write_all(&block).map_err(|e| io("floor write", e))?;
    }
    f.sync_all().map_err(|e| io("floor fsync", e))?;
    let secs = t.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(&path).ok();
    Ok(256.0 * 1_048_576.0 / 1e6 / secs)
}

/// The file operations of a checkpoint's commit (`format-spec.md` 6.1) without the rest of
/// the engine, in ms (median of 20): through the local backend's own primitives, as
/// `checkpoint::commit_staged` calls them, a segment of `segment_bytes` and a 1 KiB manifest
/// each created and synced (`put_new`), their directories synced (`sync`), then HEAD replaced
/// (`commit_head`), in a scratch directory of its own.
fn commit_ops_floor(dir: &Path, segment_bytes: usize) -> Result<f64, CliError> {
    let root = dir.join("floor-commit");
    let storage = LocalStorage::open(&root, true, true, false)?;
    let (segment, manifest, head) = (vec![0x5au8; segment_bytes], vec![0xa5u8; 1024], [0x3cu8; 104]);
    let mut times = Vec::with_capacity(20);
    for i in 1..=20u64 {
        let (seg, man) = (segment_name(SegmentId(i)), manifest_name(CheckpointId(i)));
        let t = Instant::now();
        storage.put_new(&seg, &segment)?;
        storage.put_new(&man, &manifest)?;
        storage.sync()?;
        storage.commit_head(&head)?;
        times.push(ms(t.elapsed()));
    }
    drop(storage);
    std::fs::remove_dir_all(&root).ok();
    Ok(median(&mut times))
}

/// The file operations a commit into preallocated space would need (the format change the
/// README's Results name for T1; cairn does not commit this way), in ms (median of 20): the
/// segment's bytes and a 1 KiB manifest written in place, at the next offset of a file whose
/// blocks were written and synced beforehand (not timed), then one `fdatasync`.
fn in_place_commit_ops_floor(dir: &Path, segment_bytes: usize) -> Result<f64, CliError> {
    const COMMITS: usize = 20;
    let record = vec![0x5au8; segment_bytes + 1024];
    let path = dir.join("floor-log");
    let mut f =
        OpenOptions::new().read(true).write(true).create_new(true).open(&path).map_err(|e| io("floor file", e))?;
    let zeros = vec![0u8; 1 << 20];
    let mut allocated = 0;
    while allocated < record.len() * COMMITS {
        f.write_all(&zeros).map_err(|e| io("floor write", e))?;
        allocated += zeros.len();
    }
    f.sync_all().map_err(|e| io("floor fsync", e))?;
    let mut times = Vec::with_capacity(COMMITS);
    for i in 0..COMMITS {
        let t = Instant::now();
        f.seek(SeekFrom::Start((i * record.len()) as u64)).map_err(|e| io("floor seek", e))?;
        f.write_all(&record).map_err(|e| io("floor write", e))?;
        f.sync_data().map_err(|e| io("floor fdatasync", e))?;
        times.push(ms(t.elapsed()));
    }
    drop(f);
    std::fs::remove_file(&path).ok();
    Ok(median(&mut times))
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += dir_bytes(&e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// The median time of D updates of existing keys in a `HashMap<Vec<u8>, Vec<u8>>` of S keys,
/// over R rounds: the HashMap floor (what `cairn bench-hashmap-floor` prints).
pub fn hashmap_floor(keys: u64, dirty: u64, rounds: u64, zipf: Option<f64>) -> f64 {
    let (s, d) = (keys, dirty);
    let chooser = Chooser::new(s, zipf);
    let mut rng = Rng(0x00c0_ffee_d15c_0001);
    let mut map: HashMap<Vec<u8>, Vec<u8>> = HashMap::with_capacity(s as usize);
    for id in 0..s {
        map.insert(key16(id).to_vec(), value100(id, 0).to_vec());
    }
    let mut times = Vec::new();
    for round in 1..=rounds {
        let ids: Vec<u64> = (0..d).map(|_| chooser.pick(&mut rng, s)).collect();
        let t = Instant::now();
        for id in &ids {
            map.insert(key16(*id).to_vec(), value100(*id, round).to_vec());
        }
        times.push(ms(t.elapsed()));
    }
    median(&mut times)
}

/// Run this executable with `args` in a child process, so that its memory is not this
/// process's, and read the numbers it prints; `what` names the process in errors.
fn figures_of_child(what: &str, args: &[OsString]) -> Result<Vec<f64>, CliError> {
    let exe = std::env::current_exe().map_err(|e| io("this executable's path", e))?;
    let out = std::process::Command::new(exe).args(args).output().map_err(|e| io(what, e))?;
    let figures: Option<Vec<f64>> =
        String::from_utf8_lossy(&out.stdout).split_whitespace().map(|w| w.parse().ok()).collect();
    match figures {
        Some(figures) if out.status.success() => Ok(figures),
        _ => Err(CliError::from(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
    }
}

/// [`hashmap_floor`] measured by this executable in a child process ([`figures_of_child`]).
fn hashmap_floor_in_child(args: &BenchArgs) -> Result<f64, CliError> {
    let what = "the HashMap floor's process";
    let mut child = vec![OsString::from("bench-hashmap-floor")];
    for (flag, value) in [("--keys", args.keys), ("--dirty", args.dirty), ("--rounds", args.rounds)] {
        child.extend([flag.into(), value.to_string().into()]);
    }
    if let Some(z) = args.zipf {
        child.push(format!("--zipf={z}").into());
    }
    match figures_of_child(what, &child)?[..] {
        [ms] if ms > 0.0 => Ok(ms),
        ref other => Err(CliError::from(format!("{what} printed {other:?}, not one time"))),
    }
}

/// The full-snapshot restore baseline (T4's comparator), in seconds: the pairs of S keys
/// serialized into one file (`cairn_benches::snapshot`, the criterion peer's format), then
/// that file read into a `HashMap` and one key got (`.0`, beside cairn's first get),
/// and every key got against the pair checksum (`.1`, beside cairn's read of all keys). The
/// file is written through the local backend's `put_new`, as cairn writes its checkpoint
/// segments, so that both restores read their bytes from the device rather than the page
/// cache. Values are round 0's; only their sizes, the same in every round, matter here.
pub fn snapshot_floor(keys: u64, dir: &Path) -> Result<(f64, f64), CliError> {
    let root = dir.join("floor-snapshot");
    let storage = LocalStorage::open(&root, true, true, false)?;
    let mut bytes = Vec::with_capacity(usize::try_from(keys).unwrap_or(0).saturating_mul(118));
    let mut expected = 0u64;
    for id in 0..keys {
        let (key, value) = (key16(id), value100(id, 0));
        snapshot::push(&mut bytes, &key, &value).map_err(|e| io("snapshot", e))?;
        expected = expected.wrapping_add(pair_hash(&key, &value));
    }
    storage.put_new(snapshot::FILE, &bytes)?;
    drop((bytes, storage));

    let t = Instant::now();
    let map = snapshot::read(&root).map_err(|e| io("snapshot read", e))?;
    let missing = |id: u64| CliError::from(format!("the snapshot lost key {id}"));
    map.get(&key16(0)[..]).ok_or_else(|| missing(0))?;
    let first_get_s = t.elapsed().as_secs_f64();
    let mut sum = 0u64;
    for id in 0..keys {
        let key = key16(id);
        let value = map.get(&key[..]).ok_or_else(|| missing(id))?;
        sum = sum.wrapping_add(pair_hash(&key, value));
    }
    let total_s = t.elapsed().as_secs_f64();
    drop(map);
    std::fs::remove_dir_all(&root).ok();
    if sum != expected {
        return Err(CliError::from("the snapshot's checksum differs from what was written".to_string()));
    }
    Ok((first_get_s, total_s))
}

/// [`snapshot_floor`] measured by this executable in a child process ([`figures_of_child`]),
/// so that neither its memory nor its heap's leftovers count toward cairn's peak RSS.
fn snapshot_floor_in_child(args: &BenchArgs) -> Result<(f64, f64), CliError> {
    let what = "the snapshot floor's process";
    let child: [OsString; 5] = [
        "bench-snapshot-floor".into(),
        "--keys".into(),
        args.keys.to_string().into(),
        "--dir".into(),
        args.dir.clone().into(),
    ];
    match figures_of_child(what, &child)?[..] {
        [first_get_s, total_s] if first_get_s > 0.0 && total_s >= first_get_s => Ok((first_get_s, total_s)),
        ref other => Err(CliError::from(format!("{what} printed {other:?}, not two times"))),
    }
}

/// The least memory a run of the standard workload holds per key at its peak.
const BENCH_BYTES_PER_KEY: u64 = 220;

/// Run the workload; print a table and, with `--json`, one JSON object as the last line.
pub fn bench(args: &BenchArgs) -> Result<(), CliError> {
    if args.keys == 0 || args.dirty == 0 || args.rounds == 0 {
        return Err(CliError::from("--keys, --dirty and --rounds must be at least 1".to_string()));
    }
    if args.dirty > args.keys {
        return Err(CliError::from("--dirty cannot exceed --keys".to_string()));
    }
    if let Some(z) = args.zipf {
        // NaN would make every pick key 0, and a negative exponent favours the rarest keys:
        // neither is a Zipf workload. 0 is allowed (uniform, through the Zipf code path).
        if !(z.is_finite() && z >= 0.0) {
            return Err(CliError::from(format!("--zipf must be a finite exponent of at least 0, not {z}")));
        }
    }
    // A run that cannot fit is refused now, not by the allocator minutes in. 220 bytes a key
    // is below what a run holds at its peak (2.2x the 116-byte payload at S = 1M, 1.9x at
    // 10M), so only runs that cannot fit are refused.
    if let Some(total_kib) = proc_field("/proc/meminfo", "MemTotal:") {
        let needs = args.keys.saturating_mul(BENCH_BYTES_PER_KEY);
        if needs / 1024 > total_kib {
            return Err(CliError::from(format!(
                "--keys {} needs about {:.1} GB of memory ({BENCH_BYTES_PER_KEY} bytes a key), more than this \
                 machine's {:.1} GB",
                args.keys,
                needs as f64 / 1e9,
                total_kib as f64 * 1024.0 / 1e9
            )));
        }
    }
    if args.dir.exists() {
        return Err(CliError::from(format!("{} exists; bench needs a fresh directory", args.dir.display())));
    }
    std::fs::create_dir_all(&args.dir).map_err(|e| io("bench directory", e))?;
    let result = run(args);
    std::fs::remove_dir_all(&args.dir).ok();
    result
}

fn run(args: &BenchArgs) -> Result<(), CliError> {
    let (s, d) = (args.keys, args.dirty);
    let payload = d * (16 + 100);

    // The floor, measured first on the same filesystem. The HashMap's runs in a child process:
    // run in this one, its freed memory stayed in the allocator's heap and counted toward
    // cairn's peak RSS (144 MB at S = 1M).
    let fsync_ms = fsync_floor(&args.dir)?;
    let write_mb_per_s = bandwidth_floor(&args.dir)?;
    // A segment of the dirty payload plus a 2.4% framing, as the rounds write (T2).
    let segment_bytes = (payload + payload * 24 / 1000) as usize;
    let commit_ops_ms = commit_ops_floor(&args.dir, segment_bytes)?;
    let in_place_ops_ms = in_place_commit_ops_floor(&args.dir, segment_bytes)?;
    let hashmap_update_ms = hashmap_floor_in_child(args)?;
    let (snapshot_first_get_s, snapshot_total_s) = snapshot_floor_in_child(args)?;
    let chooser = Chooser::new(s, args.zipf);
    // Count cairn only from here.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let floor_checkpoint_ms = fsync_ms + payload as f64 / (write_mb_per_s * 1e6) * 1e3;

    // Load.
    let store_dir = args.dir.join("store");
    let mut versions = vec![0u64; s as usize];
    let t = Instant::now();
    let records: Arc<Mutex<Vec<CheckpointRecord>>> = Arc::default();
    let listened = records.clone();
    let mut opts = Options::new().merge_slices(args.merge_slices).listener(move |r| {
        if let Ok(mut v) = listened.lock() {
            v.push(r.clone());
        }
    });
    if let Some(rate) = args.background_compaction_mb_per_s {
        opts = opts
            .background_compaction(true)
            .compaction_bytes_per_sec((rate > 0).then_some(rate.saturating_mul(1_000_000)));
    }
    let store = Store::open_with(&store_dir, opts)?;
    let table = store.table("state")?;
    for id in 0..s {
        table.put(&key16(id), &value100(id, 0))?;
    }
    store.checkpoint(b"load")?;
    let load_s = t.elapsed().as_secs_f64();
    // The load's checkpoint: its pause on this thread (capturing every entry) and its persist.
    let (load_capture_ms, load_persist_ms) = {
        let mut records = records.lock().map_err(|_| CliError::from("the checkpoint records' lock".to_string()))?;
        let load =
            records.iter().find(|r| r.outcome == Outcome::Completed).map(|r| (ms(r.capture_pause), ms(r.persist)));
        // Only the rounds' records from here.
        records.clear();
        load.unwrap_or((f64::NAN, f64::NAN))
    };

    // Rounds.
    let mut rng = Rng(0x00c0_ffee_d15c_0002);
    let (mut update_ms, mut checkpoint_ms, mut round_ms, mut written) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        let ids: Vec<u64> = (0..d).map(|_| chooser.pick(&mut rng, s)).collect();
        let t = Instant::now();
        for id in &ids {
            table.put(&key16(*id), &value100(*id, round))?;
        }
        let updated = t.elapsed();
        // The bench's own record of what each key should hold, kept outside the timing: the
        // HashMap floor's loop does nothing but its updates either.
        for id in &ids {
            versions[*id as usize] = round;
        }
        let before = write_bytes();
        let c = Instant::now();
        store.checkpoint(&round.to_le_bytes())?;
        let checkpointed = c.elapsed();
        written.push((write_bytes() - before) as f64);
        update_ms.push(ms(updated));
        checkpoint_ms.push(ms(checkpointed));
        round_ms.push(ms(updated + checkpointed));
    }
    let footprint_bytes = dir_bytes(&store_dir);
    let expected: u64 =
        (0..s).fold(0u64, |acc, id| acc.wrapping_add(pair_hash(&key16(id), &value100(id, versions[id as usize]))));
    drop((table, store));

    // Restore.
    let t = Instant::now();
    let store = Store::open_with(&store_dir, Options::new())?;
    let table = store.table("state")?;
    table.get(&key16(0))?.ok_or_else(|| CliError::from("restore lost key 0".to_string()))?;
    let restore_first_get_s = t.elapsed().as_secs_f64();
    let mut sum = 0u64;
    for id in 0..s {
        let k = key16(id);
        let v = table.get(&k)?.ok_or_else(|| CliError::from(format!("restore lost key {id}")))?;
        sum = sum.wrapping_add(pair_hash(&k, &v));
    }
    let restore_total_s = t.elapsed().as_secs_f64();
    if sum != expected {
        return Err(CliError::from("restore checksum differs from what was written".to_string()));
    }
    drop((table, store));
    let peak_rss_bytes = peak_rss();

    let updates_per_s = d as f64 / (median(&mut update_ms) / 1e3);
    let hashmap_updates_per_s = d as f64 / (hashmap_update_ms / 1e3);
    let checkpoint_p50_ms = median(&mut checkpoint_ms);
    let checkpoint_p99_ms = percentile(&mut checkpoint_ms, 0.99);
    let checkpoint_max_ms = percentile(&mut checkpoint_ms, 1.0);
    let round_p50_ms = median(&mut round_ms);
    let (mut encode_ms, mut commit_ms): (Vec<f64>, Vec<f64>) = records
        .lock()
        .map_err(|_| CliError::from("the checkpoint records' lock".to_string()))?
        .iter()
        .filter(|r| r.outcome == Outcome::Completed)
        .map(|r| (ms(r.encode), ms(r.commit)))
        .unzip();
    let (encode_p50_ms, commit_p50_ms) = (median(&mut encode_ms), median(&mut commit_ms));
    let bytes_per_checkpoint = median(&mut written);
    let raw_bytes = s * (16 + 100);
    let load_floor_s = s as f64 / hashmap_updates_per_s + raw_bytes as f64 / (write_mb_per_s * 1e6);
    let floor_round_ms = hashmap_update_ms + floor_checkpoint_ms;

    let rows: Vec<(&str, String, String)> = vec![
        (
            "workload",
            format!(
                "S={s} D={d} R={} {}{}",
                args.rounds,
                args.zipf.map_or("uniform".into(), |z| format!("zipf {z}")),
                match args.background_compaction_mb_per_s {
                    None => String::new(),
                    Some(0) => ", background compaction".to_string(),
                    Some(mb) => format!(", background compaction <= {mb} MB/s"),
                }
            ),
            String::new(),
        ),
        ("fsync (4 KiB append)", format!("{fsync_ms:.3} ms"), "floor".into()),
        ("sequential write", format!("{write_mb_per_s:.0} MB/s"), "floor".into()),
        ("HashMap updates", format!("{hashmap_updates_per_s:.0} /s"), "floor".into()),
        ("load", format!("{load_s:.2} s"), format!("{:.2}x floor ({load_floor_s:.2} s)", load_s / load_floor_s)),
        (
            "  capture / persist",
            format!("{load_capture_ms:.1} / {load_persist_ms:.1} ms"),
            "the load's checkpoint: its pause on the loading thread, then its writes".into(),
        ),
        ("updates", format!("{updates_per_s:.0} /s"), format!("{:.2}x HashMap", updates_per_s / hashmap_updates_per_s)),
        (
            "checkpoint p50",
            format!("{checkpoint_p50_ms:.2} ms"),
            format!("{:.2}x floor ({floor_checkpoint_ms:.2} ms)", checkpoint_p50_ms / floor_checkpoint_ms),
        ),
        (
            "  encode / commit p50",
            format!("{encode_p50_ms:.2} / {commit_p50_ms:.2} ms"),
            format!(
                "commit's file operations alone {commit_ops_ms:.2} ms ({:.2}x floor)",
                commit_ops_ms / floor_checkpoint_ms
            ),
        ),
        (
            "  in place, estimated",
            format!("{:.2} ms", encode_p50_ms + in_place_ops_ms),
            format!(
                "{:.2}x floor: encode p50 + a commit into preallocated space ({in_place_ops_ms:.2} ms, not built)",
                (encode_p50_ms + in_place_ops_ms) / floor_checkpoint_ms
            ),
        ),
        (
            "checkpoint p99 / max",
            format!("{checkpoint_p99_ms:.2} / {checkpoint_max_ms:.2} ms"),
            format!("p99 {:.2}x p50", checkpoint_p99_ms / checkpoint_p50_ms),
        ),
        (
            "round p50",
            format!("{round_p50_ms:.2} ms"),
            format!("{:.2}x floor ({floor_round_ms:.2} ms)", round_p50_ms / floor_round_ms),
        ),
        (
            "bytes per checkpoint",
            format!("{bytes_per_checkpoint:.0}"),
            format!("{:.3}x payload ({payload})", bytes_per_checkpoint / payload as f64),
        ),
        (
            "footprint",
            format!("{footprint_bytes} bytes"),
            format!("{:.2}x raw ({raw_bytes})", footprint_bytes as f64 / raw_bytes as f64),
        ),
        (
            "restore first get",
            format!("{restore_first_get_s:.3} s"),
            format!(
                "{:.2}x a full snapshot into a HashMap ({snapshot_first_get_s:.3} s)",
                restore_first_get_s / snapshot_first_get_s
            ),
        ),
        (
            "restore all keys",
            format!("{restore_total_s:.3} s"),
            format!("{:.2}x the snapshot's ({snapshot_total_s:.3} s), checksum ok", restore_total_s / snapshot_total_s),
        ),
        (
            "peak RSS",
            format!("{peak_rss_bytes} bytes"),
            format!("{:.2}x raw", peak_rss_bytes as f64 / raw_bytes as f64),
        ),
    ];
    for (name, value, ratio) in &rows {
        emit(&format!("{name:<24} {value:>26}  {ratio}"))?;
    }
    if args.json {
        let fields: Vec<(&str, f64)> = vec![
            ("keys", s as f64),
            ("dirty", d as f64),
            ("rounds", args.rounds as f64),
            ("load_s", load_s),
            ("load_vs_floor", load_s / load_floor_s),
            ("load_capture_ms", load_capture_ms),
            ("load_persist_ms", load_persist_ms),
            ("updates_per_s", updates_per_s),
            ("hashmap_updates_per_s", hashmap_updates_per_s),
            ("updates_vs_hashmap", updates_per_s / hashmap_updates_per_s),
            ("checkpoint_p50_ms", checkpoint_p50_ms),
            ("checkpoint_p99_ms", checkpoint_p99_ms),
            ("checkpoint_max_ms", checkpoint_max_ms),
            ("floor_checkpoint_ms", floor_checkpoint_ms),
            ("checkpoint_vs_floor", checkpoint_p50_ms / floor_checkpoint_ms),
            ("checkpoint_encode_p50_ms", encode_p50_ms),
            ("checkpoint_commit_p50_ms", commit_p50_ms),
            ("commit_ops_ms", commit_ops_ms),
            ("in_place_commit_ops_ms", in_place_ops_ms),
            ("in_place_estimate_vs_floor", (encode_p50_ms + in_place_ops_ms) / floor_checkpoint_ms),
            ("round_p50_ms", round_p50_ms),
            ("floor_round_ms", floor_round_ms),
            ("round_vs_floor", round_p50_ms / floor_round_ms),
            ("bytes_per_checkpoint", bytes_per_checkpoint),
            ("bytes_vs_payload", bytes_per_checkpoint / payload as f64),
            ("footprint_bytes", footprint_bytes as f64),
            ("restore_first_get_s", restore_first_get_s),
            ("restore_total_s", restore_total_s),
            ("snapshot_first_get_s", snapshot_first_get_s),
            ("snapshot_total_s", snapshot_total_s),
            ("restore_vs_snapshot", restore_first_get_s / snapshot_first_get_s),
            ("restore_total_vs_snapshot", restore_total_s / snapshot_total_s),
            ("peak_rss_bytes", peak_rss_bytes as f64),
            ("fsync_ms", fsync_ms),
            ("write_mb_per_s", write_mb_per_s),
        ];
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{}", json_number(*v))).collect();
        emit(&format!("{{{}}}", body.join(",")))?;
    }
    Ok(())
}

/// A finite number as JSON (non-finite values, which JSON cannot hold, become null).
fn json_number(v: f64) -> String {
    if !v.is_finite() {
        "null".to_string()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.6}")
    }
}

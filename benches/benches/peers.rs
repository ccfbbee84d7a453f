//! cairn against what a user would pick instead, on the standard workload of
//! `../shared/BENCH.md` (16-byte keys, 100-byte values), same data, same group:
//!
//! - `update`: a put of an existing key: cairn (with the dirty set growing to every key, and
//!   with a durable checkpoint, not timed, after every D puts), a plain `HashMap`, sled 0.34;
//! - `round`: D updates and a durable checkpoint: cairn; sled (insert, then `flush`, which
//!   syncs with `sync_file_range` rather than fsync on Linux), and sled with an fsync of its
//!   data file after the flush (`sled-fsync`, like for like); a full snapshot (serialize
//!   everything, write, fsync, rename, fsync the directory);
//! - `restore`: cairn open (whole state in memory) and a first get; sled reopen and a scan of
//!   every pair; reading the full snapshot file into a `HashMap`. Each is timed up to the
//!   state being usable; freeing it afterwards (store, database or map) is not timed;
//! - `hash_chunk`: sorting, chunking, blake3 and encoding of 64 MiB of entries, no I/O.
//!
//! S defaults to 1,000,000 keys (`CAIRN_BENCH_KEYS` to change it), D to 10,000.

use cairn::Store;
use cairn_benches::{key16, snapshot, value100, BenchDir};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

fn keys() -> u64 {
    std::env::var("CAIRN_BENCH_KEYS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000)
}

const DIRTY: u64 = 10_000;

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

fn loaded_store(dir: &Path, s: u64) -> Store {
    let store = ok(Store::open(dir));
    let t = ok(store.table("state"));
    for id in 0..s {
        ok(t.put(&key16(id), &value100(id, 0)));
    }
    ok(store.checkpoint(b"load"));
    store
}

fn loaded_sled(dir: &Path, s: u64) -> sled::Db {
    let db = ok(sled::open(dir));
    for id in 0..s {
        ok(db.insert(key16(id), &value100(id, 0)[..]));
    }
    ok(db.flush());
    db
}

fn loaded_map(s: u64) -> HashMap<Vec<u8>, Vec<u8>> {
    (0..s).map(|id| (key16(id).to_vec(), value100(id, 0).to_vec())).collect()
}

/// Serialize every pair of `map` and write it as the full snapshot in `dir`.
fn write_snapshot(dir: &Path, map: &HashMap<Vec<u8>, Vec<u8>>) {
    let mut buf = Vec::with_capacity(map.len() * 118);
    for (k, v) in map {
        ok(snapshot::push(&mut buf, k, v));
    }
    ok(snapshot::write(dir, &buf));
}

fn update(c: &mut Criterion) {
    let s = keys();
    let mut group = c.benchmark_group("update");
    group.throughput(Throughput::Elements(1));
    let dir = BenchDir::new("update");
    let store = loaded_store(&dir.0, s);
    let table = ok(store.table("state"));
    let mut n = 0u64;
    group.bench_function("cairn", |b| {
        b.iter(|| {
            n = (n + 7919) % s;
            ok(table.put(&key16(n), &value100(n, 1)));
        })
    });
    // The standard workload's between-checkpoints updates: a durable checkpoint (not timed)
    // after every D puts, so the dirty set never holds more than D keys. The line above lets
    // it grow to every key of the table, as a load without checkpoints would.
    group.bench_function("cairn-checkpoint-every-d", |b| {
        b.iter_custom(|iters| {
            let mut timed = std::time::Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let batch = left.min(DIRTY);
                let start = std::time::Instant::now();
                for _ in 0..batch {
                    n = (n + 7919) % s;
                    ok(table.put(&key16(n), &value100(n, 1)));
                }
                timed += start.elapsed();
                left -= batch;
                ok(store.checkpoint(b""));
            }
            timed
        })
    });
    let mut map = loaded_map(s);
    group.bench_function("hashmap", |b| {
        b.iter(|| {
            n = (n + 7919) % s;
            map.insert(key16(n).to_vec(), value100(n, 1).to_vec());
        })
    });
    drop(map);
    let sled_dir = BenchDir::new("update-sled");
    let db = loaded_sled(&sled_dir.0, s);
    group.bench_function("sled", |b| {
        b.iter(|| {
            n = (n + 7919) % s;
            ok(db.insert(key16(n), &value100(n, 1)[..]));
        })
    });
    group.finish();
}

fn round(c: &mut Criterion) {
    let s = keys();
    let mut group = c.benchmark_group("round");
    group.sample_size(10);
    let mut round = 0u64;
    let mut next_ids = move || {
        round += 1;
        (round, (0..DIRTY).map(move |n| (n * 104_729 + round * 7919) % s).collect::<Vec<u64>>())
    };

    let dir = BenchDir::new("round");
    let store = loaded_store(&dir.0, s);
    let table = ok(store.table("state"));
    group.bench_function("cairn", |b| {
        b.iter_batched(
            &mut next_ids,
            |(r, ids)| {
                for id in ids {
                    ok(table.put(&key16(id), &value100(id, r)));
                }
                ok(store.checkpoint(&r.to_le_bytes()));
            },
            BatchSize::PerIteration,
        )
    });
    drop((table, store));

    let sled_dir = BenchDir::new("round-sled");
    let db = loaded_sled(&sled_dir.0, s);
    // Like for like on the second line: `flush` syncs with `sync_file_range`, which makes no
    // promise about the file's metadata nor flushes the device's cache; an fsync of the file
    // it wrote after it does both, as cairn's and the snapshot's commits do.
    let sled_file = ok(File::open(sled_dir.0.join("db")));
    for (name, fsync) in [("sled", None), ("sled-fsync", Some(&sled_file))] {
        group.bench_function(name, |b| {
            b.iter_batched(
                &mut next_ids,
                |(r, ids)| {
                    for id in ids {
                        ok(db.insert(key16(id), &value100(id, r)[..]));
                    }
                    ok(db.flush());
                    if let Some(file) = fsync {
                        ok(file.sync_all());
                    }
                },
                BatchSize::PerIteration,
            )
        });
    }
    drop((sled_file, db));

    let snap_dir = BenchDir::new("round-snapshot");
    ok(std::fs::create_dir_all(&snap_dir.0));
    let mut map = loaded_map(s);
    group.bench_function("full_snapshot", |b| {
        b.iter_batched(
            &mut next_ids,
            |(r, ids)| {
                for id in ids {
                    map.insert(key16(id).to_vec(), value100(id, r).to_vec());
                }
                write_snapshot(&snap_dir.0, &map);
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

fn restore(c: &mut Criterion) {
    let s = keys();
    let mut group = c.benchmark_group("restore");
    group.sample_size(10);

    let dir = BenchDir::new("restore");
    drop(loaded_store(&dir.0, s));
    group.bench_function("cairn", |b| {
        b.iter_batched(
            || (),
            |()| {
                let store = ok(Store::open(&dir.0));
                ok(ok(store.table("state")).get(&key16(1))).unwrap_or_else(|| panic!("key 1 lost"));
                store
            },
            // One at a time (each holds its directory's lock); dropped outside the timing.
            BatchSize::PerIteration,
        )
    });

    let sled_dir = BenchDir::new("restore-sled");
    drop(loaded_sled(&sled_dir.0, s));
    group.bench_function("sled", |b| {
        b.iter_batched(
            || (),
            |()| {
                let db = ok(sled::open(&sled_dir.0));
                let pairs = db.iter().filter_map(Result::ok).count();
                assert_eq!(pairs as u64, s);
                db
            },
            // One at a time (each holds its directory's lock); dropped outside the timing.
            BatchSize::PerIteration,
        )
    });

    let snap_dir = BenchDir::new("restore-snapshot");
    ok(std::fs::create_dir_all(&snap_dir.0));
    write_snapshot(&snap_dir.0, &loaded_map(s));
    group.bench_function("full_snapshot", |b| {
        b.iter_batched(
            || (),
            |()| {
                let map = ok(snapshot::read(&snap_dir.0));
                assert_eq!(map.len() as u64, s);
                map
            },
            // Dropped outside the timing, like the stores above.
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

fn hash_chunk(c: &mut Criterion) {
    let mut group = c.benchmark_group("hash_chunk");
    group.sample_size(10);
    let n = (64u64 << 20) / 116;
    let entries =
        cairn::BenchEntries::new((0..n).map(|id| (key16(id).to_vec(), Some(value100(id, 0).to_vec()))).collect());
    group.throughput(Throughput::Bytes(n * 116));
    group.bench_function("64MiB", |b| {
        b.iter_batched(
            || entries.clone(),
            |e| cairn::encode_entries_for_bench(e, cairn::Options::DEFAULT_CHUNK_TARGET_BYTES, 1),
            BatchSize::PerIteration,
        )
    });
    // A checkpoint's share of it: 10K dirty entries whose values lie scattered over 1M, on one
    // thread and on two (the same bytes either way, `format-spec.md` 5).
    drop(entries);
    let pool = cairn::BenchEntries::new(
        (0..1_000_000u64).map(|id| (key16(id).to_vec(), Some(value100(id, 0).to_vec()))).collect(),
    );
    // In no key order (a capture comes in hash order), spread over the whole pool.
    let dirty = pool.pick((0..10_000usize).map(|i| (i * 104_729) % 1_000_000));
    group.throughput(Throughput::Bytes(10_000 * 116));
    for threads in [1, 2] {
        group.bench_function(format!("10K_of_1M/{threads}_threads"), |b| {
            b.iter_batched(
                || dirty.clone(),
                |e| cairn::encode_entries_for_bench(e, cairn::Options::DEFAULT_CHUNK_TARGET_BYTES, threads),
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, update, round, restore, hash_chunk);
criterion_main!(benches);

//! `capture`: how long an asynchronous checkpoint blocks the caller, against the whole
//! checkpoint, for 1,000,000 dirty keys (16-byte keys, 100-byte values) on the real
//! filesystem with fsync. `pause_1M_dirty` times `checkpoint_async` alone (the capture);
//! `checkpoint_1M_dirty` times capture plus `wait` (sort, chunk, hash, write, fsync, commit).
//! The medians of both and their ratio, from the checkpoints' own records, are printed.

use cairn::Store;
use cairn_benches::{key16, value100, BenchDir};
use criterion::{criterion_group, criterion_main, Criterion};
use std::time::{Duration, Instant};

const DIRTY: u64 = 1_000_000;

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

fn dirty_all(store: &Store, round: u64) {
    let t = ok(store.table("state"));
    for id in 0..DIRTY {
        ok(t.put(&key16(id), &value100(id, round)));
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn capture(c: &mut Criterion) {
    let mut group = c.benchmark_group("capture");
    group.sample_size(10);
    let dir = BenchDir::new("capture");
    let store = ok(Store::open(&dir.0));
    let mut round = 0u64;
    group.bench_function("pause_1M_dirty", |b| {
        b.iter_custom(|iters| {
            let mut paused = Duration::ZERO;
            for _ in 0..iters {
                round += 1;
                dirty_all(&store, round);
                let started = Instant::now();
                let handle = ok(store.checkpoint_async(&round.to_le_bytes()));
                paused += started.elapsed();
                ok(handle.wait());
            }
            paused
        })
    });
    group.bench_function("checkpoint_1M_dirty", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                round += 1;
                dirty_all(&store, round);
                let started = Instant::now();
                ok(ok(store.checkpoint_async(&round.to_le_bytes())).wait());
                total += started.elapsed();
            }
            total
        })
    });
    group.finish();
    let records = ok(store.stats()).recent_checkpoints;
    let pause = median(records.iter().map(|r| r.capture_pause).collect());
    let whole = median(records.iter().map(|r| r.end_to_end).collect());
    println!(
        "capture/1M_dirty: median capture pause {pause:?}, median whole checkpoint {whole:?}, pause/whole {:.5} (over the last {} checkpoints)",
        pause.as_secs_f64() / whole.as_secs_f64().max(1e-9),
        records.len()
    );
}

criterion_group!(benches, capture);
criterion_main!(benches);

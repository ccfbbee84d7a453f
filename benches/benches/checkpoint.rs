//! `checkpoint`: durable checkpoint latency for D dirty keys over S keys of state (16-byte
//! keys, 100-byte values), on the real filesystem with fsync: 1K, 10K and 100K dirty over 1M
//! keys, and (with `CAIRN_BENCH_10M=1`, which needs several GiB of memory) 10K over 10M. The
//! median bytes written per checkpoint are printed beside the time.

use cairn::Store;
use cairn_benches::{key16, value100, BenchDir};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

fn checkpoint(c: &mut Criterion) {
    let mut group = c.benchmark_group("checkpoint");
    group.sample_size(20);
    let mut cases = vec![(1_000_000u64, 1_000u64), (1_000_000, 10_000), (1_000_000, 100_000)];
    if std::env::var_os("CAIRN_BENCH_10M").is_some() {
        cases.push((10_000_000, 10_000));
    }
    for (state, dirty) in cases {
        let dir = BenchDir::new("checkpoint");
        let store = ok(Store::open(&dir.0));
        let t = ok(store.table("state"));
        for id in 0..state {
            ok(t.put(&key16(id), &value100(id, 0)));
        }
        ok(store.checkpoint(b"load"));
        let mut round = 0u64;
        let mut written = Vec::new();
        group.bench_function(format!("{dirty}_dirty_of_{state}"), |b| {
            b.iter_batched(
                || {
                    round += 1;
                    for n in 0..dirty {
                        let id = (n * 104_729 + round * 7919) % state;
                        ok(t.put(&key16(id), &value100(id, round)));
                    }
                    round
                },
                |r| written.push(ok(store.checkpoint(&r.to_le_bytes())).bytes_written),
                BatchSize::PerIteration,
            )
        });
        written.sort_unstable();
        if let Some(median) = written.get(written.len() / 2) {
            println!("checkpoint/{dirty}_dirty_of_{state}: median bytes written {median} (payload {})", dirty * 116);
        }
    }
    group.finish();
}

criterion_group!(benches, checkpoint);
criterion_main!(benches);

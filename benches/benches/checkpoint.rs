//! `checkpoint`: durable checkpoint latency for D dirty keys over S keys of state (16-byte
//! keys, 100-byte values), on the real filesystem with fsync. Bytes written per checkpoint
//! are printed beside the time.

use cairn::Store;
use cairn_benches::{key16, value100, BenchDir};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};

fn checkpoint(c: &mut Criterion) {
    let mut group = c.benchmark_group("checkpoint");
    group.sample_size(20);
    for (state, dirty) in [(100_000u64, 1_000u64), (100_000, 10_000)] {
        let dir = BenchDir::new("checkpoint");
        let store = Store::open(&dir.0).unwrap_or_else(|e| panic!("open: {e}"));
        let t = store.table("state").unwrap_or_else(|e| panic!("{e}"));
        for id in 0..state {
            t.put(&key16(id), &value100(id, 0)).unwrap_or_else(|e| panic!("{e}"));
        }
        store.checkpoint(b"load").unwrap_or_else(|e| panic!("{e}"));
        let mut round = 0u64;
        let mut written = Vec::new();
        group.bench_function(format!("{dirty}_dirty_of_{state}"), |b| {
            b.iter_batched(
                || {
                    round += 1;
                    for n in 0..dirty {
                        let id = (n * 7919 + round * 104_729) % state;
                        t.put(&key16(id), &value100(id, round)).unwrap_or_else(|e| panic!("{e}"));
                    }
                    round
                },
                |r| written.push(store.checkpoint(&r.to_le_bytes()).unwrap_or_else(|e| panic!("{e}")).bytes_written),
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

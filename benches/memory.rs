//! Cost of the memory cache's operations: `get` hit (over 10,000 entries, and over 64 hot
//! ones) and miss, `insert` that evicts, and
//! `get`/`insert` from two threads at once (per-operation time, both threads running).
//!
//! Run with `cargo bench --bench memory`.
#![allow(
    clippy::disallowed_methods,
    reason = "a bench drives corvid from its own threads, not from a worker: it may block"
)]

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use bytes::Bytes;
use corvid::cache::memory::MemoryCache;
use criterion::{criterion_group, criterion_main, Criterion};

const KEYS: usize = 10_000;

fn key(i: usize) -> Vec<u8> {
    format!("my-bucket\0photos/2024/{i:08}.jpg").into_bytes()
}

fn filled(capacity: u64) -> (MemoryCache<Bytes>, Vec<Vec<u8>>) {
    let cache = MemoryCache::new(capacity);
    let keys: Vec<_> = (0..KEYS).map(key).collect();
    for k in &keys {
        // A body per key, as in the proxy: a shared one would make every hit bump the
        // same reference count.
        assert!(cache.insert(k, Bytes::from(vec![7u8; 1024])));
    }
    (cache, keys)
}

fn single_thread(c: &mut Criterion) {
    let (cache, keys) = filled(64 << 20);
    let mut g = c.benchmark_group("memory");
    let mut i = 0;
    g.bench_function("get_hit", |b| {
        b.iter(|| {
            i = (i + 7919) % KEYS;
            black_box(cache.get(black_box(&keys[i])))
        })
    });
    // 64 keys: everything in L1/L2, so this is the lock + hash + probe + clone cost alone.
    g.bench_function("get_hit_hot", |b| {
        b.iter(|| {
            i = (i + 1) % 64;
            black_box(cache.get(black_box(&keys[i])))
        })
    });
    let missing: Vec<_> = (KEYS..2 * KEYS).map(key).collect();
    g.bench_function("get_miss", |b| {
        b.iter(|| {
            i = (i + 7919) % KEYS;
            black_box(cache.get(black_box(&missing[i])))
        })
    });

    // 1 MiB of 1 KiB bodies: every insert of a new key evicts about one entry.
    let small = MemoryCache::new(1 << 20);
    let body = Bytes::from(vec![7u8; 1024]);
    let fresh: Vec<_> = (0..100_000).map(key).collect();
    let mut n = 0;
    g.bench_function("insert_evict", |b| {
        b.iter(|| {
            n = (n + 1) % fresh.len();
            black_box(small.insert(&fresh[n], body.clone()))
        })
    });
    // Only meaningful after a real run: `cargo test --benches` runs each bench once.
    if n > 1100 {
        assert!(small.evictions() > 0);
    }
    g.finish();
}

/// Two threads each run `iters` operations on their own keys; the reported time is the
/// wall time divided by `iters`, i.e. per operation per thread with both running.
fn two_threads(
    iters: u64,
    cache: &Arc<MemoryCache<Bytes>>,
    op: fn(&MemoryCache<Bytes>, &[u8], &Bytes),
) -> Duration {
    let barrier = Arc::new(Barrier::new(3));
    let handles: Vec<_> = (0..2)
        .map(|t| {
            let (cache, barrier) = (cache.clone(), barrier.clone());
            std::thread::spawn(move || {
                let keys: Vec<_> = (t * KEYS / 2..(t + 1) * KEYS / 2).map(key).collect();
                let body = Bytes::from(vec![1u8; 1024]);
                barrier.wait();
                for i in 0..iters as usize {
                    op(&cache, &keys[(i * 7919) % keys.len()], &body);
                }
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    for h in handles {
        h.join().unwrap();
    }
    start.elapsed()
}

fn contended(c: &mut Criterion) {
    let (cache, _) = filled(64 << 20);
    let cache = Arc::new(cache);
    let mut g = c.benchmark_group("memory_2_threads");
    g.bench_function("get_hit", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, &cache, |c, k, _| {
                black_box(c.get(k));
            })
        })
    });
    // Half the keys' bytes: inserts keep evicting, all through the global policy lock.
    let small = Arc::new(MemoryCache::new(KEYS as u64 * 1024 / 2));
    g.bench_function("insert_evict", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, &small, |c, k, v| {
                black_box(c.insert(k, v.clone()));
            })
        })
    });
    g.finish();
}

criterion_group!(benches, single_thread, contended);
criterion_main!(benches);

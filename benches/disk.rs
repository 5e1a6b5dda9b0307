//! Disk tier costs: a resident (zero-copy) hit, insert throughput, index rebuild per million
//! entries (warm and cold page cache), and what a cold value costs on first touch compared
//! with a resident one (the stall a worker's event loop would suffer).
//!
//! Files go to a temporary directory under `$TMPDIR` (ext4 on the dev machine, not tmpfs).
#![allow(
    clippy::disallowed_methods,
    reason = "a bench drives corvid from its own threads, not from a worker: it may block"
)]
#![allow(clippy::print_stderr, reason = "the bench reports on stderr")]
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use corvid::cache::disk::{DiskCache, DiskOptions};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const MIB: u64 = 1 << 20;
const FAR: u64 = u64::MAX;

fn open(dir: &std::path::Path, capacity: u64) -> DiskCache {
    DiskCache::open(DiskOptions {
        dir: dir.to_path_buf(),
        capacity,
        segment_size: 64 * MIB,
    })
    .expect("open")
    .0
}

fn sizes() -> [(&'static str, usize); 2] {
    [("4KiB", 4096), ("1MiB", MIB as usize)]
}

fn get_resident(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 256 * MIB);
    let mut g = c.benchmark_group("disk_get_resident");
    for (name, len) in sizes() {
        let key = format!("bucket/{name}");
        cache.insert(key.as_bytes(), &vec![7u8; len], FAR).unwrap();
        g.bench_function(name, |b| {
            b.iter(|| cache.get(black_box(key.as_bytes())).unwrap())
        });
        let hit = cache.get(key.as_bytes()).unwrap();
        // Records are written with pwritev, not through the mapping: until a value is first
        // read through it, its pages are in the page cache but not in this process's page
        // tables, and `mincore` looks each one up (the first hit's cost).
        g.bench_function(BenchmarkId::new("is_resident", name), |b| {
            b.iter(|| black_box(&hit).is_resident())
        });
        // Serving it (a read of every page, as the socket write does) maps them.
        black_box(
            hit.value
                .iter()
                .step_by(4096)
                .map(|&b| u64::from(b))
                .sum::<u64>(),
        );
        g.bench_function(BenchmarkId::new("is_resident_after_read", name), |b| {
            b.iter(|| black_box(&hit).is_resident())
        });
    }
    g.finish();
}

fn insert(c: &mut Criterion) {
    let mut g = c.benchmark_group("disk_insert");
    g.measurement_time(Duration::from_secs(5));
    for (name, len) in sizes() {
        // 512 MiB of capacity: long runs roll over and reclaim, as in steady state.
        let dir = tempfile::tempdir().unwrap();
        let cache = open(dir.path(), 512 * MIB);
        let value = vec![5u8; len];
        let mut i = 0u64;
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                i += 1;
                cache
                    .insert(format!("bucket/object-{i}").as_bytes(), &value, FAR)
                    .unwrap()
            })
        });
    }
    g.finish();
}

/// Drops a file's pages from the page cache (they must be clean).
fn drop_file_cache(f: &std::fs::File, offset: u64, len: u64) {
    // SAFETY: plain syscall on a valid fd; no memory is passed.
    let rc = unsafe {
        libc::posix_fadvise(
            f.as_raw_fd(),
            offset as libc::off_t,
            len as libc::off_t,
            libc::POSIX_FADV_DONTNEED,
        )
    };
    assert_eq!(rc, 0);
}

/// Total time of `iters` index rebuilds (`DiskCache::open`) of the segments in `dir`, which
/// hold `entries` entries, each after `before` (which may drop the page cache; not timed).
fn time_open(dir: &std::path::Path, entries: u64, iters: u64, before: impl Fn()) -> Duration {
    let mut t = Duration::ZERO;
    for _ in 0..iters {
        before();
        let started = Instant::now();
        let (cache, report) = DiskCache::open(DiskOptions {
            dir: dir.to_path_buf(),
            capacity: 4096 * MIB,
            segment_size: 64 * MIB,
        })
        .unwrap();
        t += started.elapsed();
        assert_eq!(report.entries, entries);
        drop(cache);
    }
    t
}

fn rebuild(c: &mut Criterion) {
    const N: u64 = 1_000_000;
    let dir = tempfile::tempdir().unwrap();
    {
        let cache = open(dir.path(), 4096 * MIB);
        let value = [1u8; 100];
        for i in 0..N {
            cache
                .insert(format!("bucket/object-{i:08}").as_bytes(), &value, FAR)
                .unwrap();
        }
        cache.flush().unwrap();
    }
    let files: Vec<std::fs::File> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| std::fs::File::open(e.unwrap().path()).unwrap())
        .collect();
    let mut g = c.benchmark_group("disk_rebuild_1M");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    let path = dir.path();
    g.bench_function("warm", |b| {
        b.iter_custom(|iters| time_open(path, N, iters, || {}))
    });
    g.bench_function("cold", |b| {
        b.iter_custom(|iters| {
            time_open(path, N, iters, || {
                for f in &files {
                    drop_file_cache(f, 0, 0);
                }
            })
        })
    });
    g.finish();
}

/// Reads one byte per page, as serving the value would.
fn touch(v: &[u8]) -> u64 {
    let mut sum = 0u64;
    for i in (0..v.len()).step_by(4096) {
        // SAFETY: `i` is in bounds; volatile so the loads are not elided.
        sum += u64::from(unsafe { std::ptr::read_volatile(v.as_ptr().add(i)) });
    }
    sum
}

/// Evicts a value's pages: drops our mapping's page-table entries, then the page cache pages.
fn make_cold(hit: &corvid::cache::disk::DiskHit, loc: &corvid::cache::disk::Location) {
    let start = hit.value.as_ptr() as usize & !4095;
    let end = hit.value.as_ptr() as usize + hit.value.len();
    // SAFETY: the range lies in the segment's shared file mapping (kept alive by `hit`);
    // MADV_DONTNEED on a shared file mapping only drops page-table entries, the data stays in
    // the file and is faulted back on the next access.
    let rc = unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
    assert_eq!(rc, 0);
    drop_file_cache(&loc.file, loc.value_offset & !4095, loc.value_len + 4096);
}

fn first_touch(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), 1024 * MIB);
    for (name, len) in sizes() {
        for i in 0..32 {
            cache
                .insert(format!("{name}/{i}").as_bytes(), &vec![i as u8; len], FAR)
                .unwrap();
        }
    }
    // Clean pages can be dropped from the page cache; dirty ones cannot.
    cache.flush().unwrap();
    let mut g = c.benchmark_group("disk_first_touch");
    g.sample_size(20);
    for (name, len) in sizes() {
        let mut cold_seen = 0u64;
        let mut tries = 0u64;
        g.bench_function(BenchmarkId::new("cold_mmap", name), |b| {
            b.iter_custom(|iters| {
                let mut t = Duration::ZERO;
                for i in 0..iters {
                    let key = format!("{name}/{}", i % 32);
                    let hit = cache.get(key.as_bytes()).unwrap();
                    let loc = cache.locate(key.as_bytes()).unwrap();
                    make_cold(&hit, &loc);
                    tries += 1;
                    cold_seen += u64::from(!hit.is_resident());
                    let started = Instant::now();
                    black_box(touch(&hit.value));
                    t += started.elapsed();
                }
                t
            })
        });
        eprintln!("disk_first_touch/{name}: is_resident() was false after eviction in {cold_seen}/{tries} tries");
        g.bench_function(BenchmarkId::new("cold_pread", name), |b| {
            let mut buf = vec![0u8; len];
            b.iter_custom(|iters| {
                let mut t = Duration::ZERO;
                for i in 0..iters {
                    let key = format!("{name}/{}", i % 32);
                    let hit = cache.get(key.as_bytes()).unwrap();
                    let loc = cache.locate(key.as_bytes()).unwrap();
                    make_cold(&hit, &loc);
                    let started = Instant::now();
                    loc.file.read_exact_at(&mut buf, loc.value_offset).unwrap();
                    t += started.elapsed();
                    black_box(&buf);
                }
                t
            })
        });
        g.bench_function(BenchmarkId::new("resident_mmap", name), |b| {
            let hit = cache.get(format!("{name}/0").as_bytes()).unwrap();
            touch(&hit.value);
            b.iter(|| touch(black_box(&hit.value)))
        });
    }
    g.finish();
}

criterion_group!(benches, get_resident, insert, rebuild, first_touch);
criterion_main!(benches);

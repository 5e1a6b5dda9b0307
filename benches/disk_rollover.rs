//! The disk tier's roll-over stall: how long the insert that fills the active segment takes
//! (it installs the next segment and retires the oldest one to stay within capacity), against
//! an ordinary insert of the same size, in steady state. In write-through mode that insert runs
//! on a worker, so its latency is how long that worker's other connections wait.
//!
//! A plain harness rather than criterion: the interesting number is a tail over a few hundred
//! roll-overs, each preceded by a segment's worth of untimed inserts, which criterion's
//! `iter_custom` would multiply by its own iteration count.
//!
//! `cargo bench --bench disk_rollover` (files under `$TMPDIR`). Environment: `ROLLOVERS`
//! (default 300), `SEGMENT_MIB` (8), `VALUE_KIB` (64).
#![allow(
    clippy::disallowed_methods,
    reason = "a bench drives corvid from its own threads, not from a worker: it may block"
)]
#![allow(clippy::print_stdout, reason = "the report is the bench's output")]

use std::time::{Duration, Instant};

use corvid::cache::disk::segment::Segment;
use corvid::cache::disk::{DiskCache, DiskOptions};

const FAR: u64 = u64::MAX;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn summary(name: &str, v: &mut [Duration]) {
    v.sort_unstable();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    println!(
        "{name:<34} n={:<6} p50 {:>9.1?}  p90 {:>9.1?}  p99 {:>9.1?}  max {:>9.1?}",
        v.len(),
        at(0.5),
        at(0.9),
        at(0.99),
        v[v.len() - 1]
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it,
    // as a smoke test: a few small roll-overs instead of gigabytes of writes.
    let full = std::env::args().any(|a| a == "--bench");
    let rollovers = env("ROLLOVERS", if full { 300 } else { 3 }) as usize;
    let segment = env("SEGMENT_MIB", if full { 8 } else { 1 }) << 20;
    let value = vec![0x5au8; (env("VALUE_KIB", 64) << 10) as usize];
    let dir = tempfile::tempdir().unwrap();
    let (cache, _) = DiskCache::open(DiskOptions {
        dir: dir.path().to_path_buf(),
        // Four segments: from the fifth on, every roll-over also reclaims the oldest.
        capacity: 4 * segment,
        segment_size: segment,
    })
    .unwrap();

    let (mut rolling, mut plain) = (Vec::new(), Vec::new());
    let mut i = 0u64;
    let mut segments_seen = cache.segments_created();
    while rolling.len() < rollovers + 8 {
        let key = format!("bucket\0object-{i}");
        i += 1;
        let t = Instant::now();
        assert!(cache.insert(key.as_bytes(), &value, FAR).unwrap());
        let took = t.elapsed();
        let created = cache.segments_created();
        if created != segments_seen {
            segments_seen = created;
            rolling.push(took);
        } else {
            plain.push(took);
        }
    }
    // The first roll-overs fill the empty cache (nothing to reclaim yet): not steady state.
    let mut rolling = rolling.split_off(8);
    println!(
        "segment {} MiB, values {} KiB, capacity 4 segments, {} inserts",
        segment >> 20,
        value.len() >> 10,
        i
    );
    summary("insert, no roll-over", &mut plain);
    summary("insert that rolls over (+reclaim)", &mut rolling);
    println!(
        "roll-overs that created the segment inline: {} of {}",
        cache.inline_rollovers(),
        cache.segments_created()
    );

    // The parts of a roll-over measured on their own, on segments as full as the cache's:
    // creating the next one (create + size + map + header), and retiring a full one
    // (unlink, then the last reference's munmap + close, which frees its pages).
    let other = tempfile::tempdir().unwrap();
    let (mut create, mut unlink, mut release) = (Vec::new(), Vec::new(), Vec::new());
    for id in 1..=100u64 {
        let t = Instant::now();
        let seg = Segment::create(other.path(), id, segment).unwrap();
        create.push(t.elapsed());
        let mut at = corvid::cache::disk::format::SEGMENT_HEADER_LEN;
        while at + value.len() <= segment as usize {
            // SAFETY: a fresh segment of this thread's alone; ranges do not overlap.
            unsafe { seg.write(at, &[&value]) }.unwrap();
            at += value.len();
        }
        let t = Instant::now();
        std::fs::remove_file(&seg.path).unwrap();
        unlink.push(t.elapsed());
        let t = Instant::now();
        drop(seg);
        release.push(t.elapsed());
    }
    summary("Segment::create", &mut create);
    summary("unlink of a full segment", &mut unlink);
    summary("munmap + close of a full segment", &mut release);
}

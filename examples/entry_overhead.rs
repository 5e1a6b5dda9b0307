//! What a cached entry costs beyond its body, measured: fills the memory tier with small
//! objects shaped like typical S3 answers (ETag, Last-Modified, Content-Type, Cache-Control,
//! two `x-amz-meta-*`) and reports the process's RSS growth per entry beyond the body bytes,
//! and the RSS of a small tier kept full by twice its capacity in distinct objects.
//!
//! `perf/entry_overhead.sh` runs it (release build) and says how to read it.
//!
//!   cargo run --release --example entry_overhead -- entries [ENTRIES] [BODY_BYTES]
//!   cargo run --release --example entry_overhead -- full [CAPACITY_MIB] [BODY_BYTES]
//!
//! Each measurement runs in a process of its own (memory freed by one would be reused by the
//! next without showing in RSS).

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::disallowed_methods,
    reason = "a measurement tool run from the command line: no worker to block, its output is the point"
)]

use bytes::Bytes;
use corvid::cache::entry::{CachedObject, Meta};
use corvid::cache::key::cache_key;
use corvid::cache::tiered::Tiers;
use corvid::config::CacheConfig;

const MIB: u64 = 1 << 20;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn config(capacity: u64) -> CacheConfig {
    CacheConfig::memory_only(capacity, MIB)
}

/// Object `i` as a fill stores it: the passed origin headers and a body of `len` bytes.
fn object(i: u64, len: usize) -> (Vec<u8>, CachedObject) {
    let key = cache_key("assets", &format!("images/2026/12/photo-{i:08}.jpg"), &[]);
    let headers = vec![
        ("Content-Type".to_string(), "image/jpeg".to_string()),
        (
            "ETag".to_string(),
            format!("\"{:032x}\"", u128::from(i) * 0x9e37_79b9_7f4a_7c15),
        ),
        (
            "Last-Modified".to_string(),
            "Sat, 05 Dec 2026 10:00:00 GMT".to_string(),
        ),
        ("Cache-Control".to_string(), "max-age=86400".to_string()),
        ("x-amz-meta-owner".to_string(), "team-photos".to_string()),
        ("x-amz-meta-source".to_string(), "upload-api".to_string()),
    ];
    let now = corvid::clock::system_now_ms();
    let obj = CachedObject::new(
        Meta::new(headers, now, now + 3_600_000),
        Bytes::from(vec![(i % 251) as u8; len]),
    );
    (key, obj)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "entries".into());
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(0);
    let body: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1024);
    match mode.as_str() {
        "entries" => entries(if n == 0 { 50_000 } else { n }, body),
        "full" => full(if n == 0 { 16 } else { n } * MIB, body),
        other => eprintln!("unknown mode {other:?}: entries or full"),
    }
}

/// A tier far larger than what is stored: every entry stays.
fn entries(n: u64, body: usize) {
    let tiers = Tiers::new(&config(1 << 30)).expect("tiers");
    let before = rss_kib();
    for i in 0..n {
        let (key, obj) = object(i, body);
        tiers.store(&key, obj, 0);
        // A hit clones the body once (what a served entry holds from then on).
        drop(tiers.memory.get(&key));
    }
    let after = rss_kib();
    let held = tiers.memory.len();
    let per_entry = ((after - before) * 1024) as f64 / held as f64 - body as f64;
    let charged = tiers.memory.bytes() as f64 / held as f64 - body as f64;
    println!(
        "{held} entries of {body} B: RSS +{} KiB = {per_entry:.0} B per entry beyond the body \
         (the tier charges {charged:.0} B beyond the body)",
        after - before
    );
}

/// A small tier kept full by twice its capacity in distinct objects.
fn full(capacity: u64, body: usize) {
    let base = rss_kib();
    let tiers = Tiers::new(&config(capacity)).expect("tiers");
    let distinct = 2 * capacity / body as u64;
    for i in 0..distinct {
        let (key, obj) = object(i, body);
        tiers.store(&key, obj, 0);
        drop(tiers.memory.get(&key));
    }
    let grown = rss_kib().saturating_sub(base);
    println!(
        "tier of {} MiB after {distinct} distinct objects of {body} B: {} entries, RSS +{grown} \
         KiB = {:.2}x its capacity",
        capacity / MIB,
        tiers.memory.len(),
        (grown * 1024) as f64 / capacity as f64
    );
}

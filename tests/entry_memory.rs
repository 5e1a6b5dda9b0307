//! What a cached entry keeps on the heap beyond its body (issue 16), counted by a global
//! allocator: 20,000 objects shaped like typical S3 answers (Content-Type, ETag, Last-Modified,
//! Cache-Control, two `x-amz-meta-*`; keys of 40 bytes) stored in the memory tier and read once,
//! as `perf/entry_overhead.sh` does for RSS. Requested bytes only: the allocator's own headers
//! and rounding come on top (RSS per entry is measured by the perf script, perf/RESULTS.md).
//!
//! Before the compact fields and the one-node-per-key table (issue 16), an entry kept 535 B
//! beside its body: the rendered header lines with `Date` (245 B), the key in its own
//! allocation, a separate policy record and a 72-byte table slot; 385 B after them; 339 B with
//! the value in the node (8-byte table slots), `Meta` and its fields in one allocation, and
//! the body in that allocation too, lent through a 16-byte `Bytes` owner record. Now 323 B:
//! the body is lent by the `Meta`'s own count, no owner record; then 251 B: the S3 ETag and
//! `Last-Modified` kept in binary (−43 B of fields) and the memory tier's node holding the
//! object as one word (`cache::entry::Packed`: −32 B). Now 235 B: the node keeps no hash and
//! a 32-bit charge (−16 B). (What the allocator's headers add shows only in RSS,
//! `perf/entry_overhead.sh`: 248 B.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, Ordering};

use bytes::Bytes;
use corvid::cache::entry::{CachedObject, Meta};
use corvid::cache::key::cache_key;
use corvid::cache::tiered::Tiers;
use corvid::config::CacheConfig;

struct Live;

/// Bytes requested and not yet freed, by every thread.
static LIVE: AtomicI64 = AtomicI64::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so `System`'s
// guarantees are ours; the bookkeeping is one atomic add and never allocates.
unsafe impl GlobalAlloc for Live {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout, which meets `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `System` (through us) with `layout`, as the caller
        // guarantees, and `new_size` meets `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `System` (through us) with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Live = Live;

const ENTRIES: u64 = 20_000;
const BODY: usize = 1024;

fn object(i: u64) -> (Vec<u8>, CachedObject) {
    let key = cache_key("assets", &format!("images/2026/12/photo-{i:08}.jpg"), &[]);
    let headers = [
        ("Content-Type", "image/jpeg".to_owned()),
        (
            "ETag",
            format!("\"{:032x}\"", u128::from(i) * 0x9e37_79b9_7f4a_7c15),
        ),
        ("Last-Modified", "Sat, 05 Dec 2026 10:00:00 GMT".to_owned()),
        ("Cache-Control", "max-age=86400".to_owned()),
        ("x-amz-meta-owner", "team-photos".to_owned()),
        ("x-amz-meta-source", "upload-api".to_owned()),
    ]
    .map(|(n, v)| (n.to_owned(), v))
    .to_vec();
    let now = 1_765_000_000_000;
    let obj = CachedObject::new(
        Meta::new(headers, now, now + 3_600_000),
        Bytes::from(vec![(i % 251) as u8; BODY]),
    );
    (key, obj)
}

#[test]
fn a_typical_entry_keeps_under_240_bytes_beside_its_body() {
    let tiers = Tiers::new(&CacheConfig::memory_only(1 << 30, 1 << 20)).expect("tiers");
    let before = LIVE.load(Ordering::Relaxed);
    for i in 0..ENTRIES {
        let (key, obj) = object(i);
        assert_eq!(key.len(), 40);
        tiers.store(&key, obj, 0);
        // A hit clones the body once (what a served entry holds from then on).
        let hit = tiers.memory.get(&key).expect("stored");
        assert!(hit.is_inlined(), "a small body is kept with its metadata");
    }
    assert_eq!(tiers.memory.len(), ENTRIES);
    let per_entry = (LIVE.load(Ordering::Relaxed) - before) / ENTRIES as i64 - BODY as i64;
    assert!(per_entry <= 240, "{per_entry} B per entry beyond the body");
}

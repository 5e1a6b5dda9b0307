//! Reclaim: freeing space by dropping the oldest segment whole (FIFO over segments).
//!
//! Choosing a victim happens under the ring lock (it is a `VecDeque` pop); retiring it happens
//! after that lock is released, on the thread whose insert needed the room:
//!
//! 1. [`Segment::retire`] marks the segment retired and takes its list of published keys; from
//!    then on no insert can publish into it (an insert still copying into it loses its entry,
//!    as if it had been evicted at once).
//! 2. Each of those keys is removed from the index if, and only if, the index still points at
//!    this segment and offset (newer versions elsewhere stay). One shard lock per key, O(1).
//! 3. The file is unlinked. Readers holding a value keep the mapping (and so the pages) alive;
//!    a [`super::Location`] reader keeps the open file.
//!
//! Cost on the inserting worker: one index operation per entry of the victim (a 64 MiB segment
//! of 4 KiB values is ~16k operations, around a millisecond) plus an `unlink` (~25 µs). The
//! victim's file is never read, because its keys are remembered in memory (see
//! [`super::segment`]); reading them back would fault a whole segment in from disk on a worker
//! thread. Unmapping and closing the victim — which frees its pages, milliseconds for a full
//! segment — is left to the segment thread (`rollover.rs`).
//!
//! Why FIFO and not LRU: segments are append-only and reclaimed whole, which needs no
//! compaction and no per-entry free-space tracking; a hot entry in the oldest segment is lost
//! and refetched from the origin (or, in corvid, usually still in the memory tier).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::index::Index;
use super::segment::Segment;
use super::RemovalStats;
use crate::cache::usage::BucketUsage;

/// Pops the oldest segments from `sealed` until `needed` more bytes fit in `capacity` given
/// `disk_bytes` in use (which it lowers accordingly). Returns the victims, oldest first.
pub fn make_room(
    sealed: &mut VecDeque<Arc<Segment>>,
    disk_bytes: &mut u64,
    needed: u64,
    capacity: u64,
) -> Vec<Arc<Segment>> {
    let mut victims = Vec::new();
    while *disk_bytes + needed > capacity {
        let Some(oldest) = sealed.pop_front() else {
            break;
        };
        *disk_bytes -= oldest.len() as u64;
        victims.push(oldest);
    }
    victims
}

/// Live-entry counters the cache keeps; reclaim lowers them.
pub struct Counters {
    pub entries: AtomicU64,
    pub bytes: AtomicU64,
    /// The same per bucket, with evictions ([`crate::cache::usage`]).
    pub usage: BucketUsage,
}

/// Retires `seg`: drops its entries from `index` and deletes its file. Returns what was dropped.
/// `evicted`: whether that is reclaim (counted as evictions per bucket) rather than a purge.
#[expect(
    clippy::disallowed_methods,
    reason = "ON A WORKER: the unlink runs on the inserting thread, a worker in write-through \
              mode (and for a one-key purge); ~25 µs, kept there on purpose (module doc)"
)]
pub fn retire(seg: &Segment, index: &Index, counters: &Counters, evicted: bool) -> RemovalStats {
    let mut stats = RemovalStats::default();
    for (key, offset) in seg.retire() {
        let mut shard = index.write(&key);
        if shard
            .get(&key)
            .is_some_and(|s| s.position() == (seg.id, offset))
        {
            let slot = shard.remove(&key).expect("present");
            drop(shard);
            stats.entries += 1;
            stats.bytes += slot.padded_len();
            let class = counters.usage.class(&key);
            counters.usage.removed(class, slot.padded_len(), evicted);
        }
    }
    counters.entries.fetch_sub(stats.entries, Ordering::Relaxed);
    counters.bytes.fetch_sub(stats.bytes, Ordering::Relaxed);
    if let Err(e) = std::fs::remove_file(&seg.path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            log::warn!("disk cache: could not delete {}: {e}", seg.path.display());
        }
    }
    stats
}

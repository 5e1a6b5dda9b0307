//! What each cache tier holds per bucket: entries, bytes and evictions, counted as the memory
//! and disk tiers insert, replace, remove and evict — never on a hit.
//!
//! The memory tier moves the counters under the policy lock it already holds for those
//! operations; the disk tier where it moves its own entry and byte counters (publish, removal,
//! reclaim, and once at open for what recovery found). The bucket of an entry is its cache key
//! up to the first NUL ([`crate::cache::key`]), mapped to an index once per insert through the
//! [`Buckets`] table built from the configured bucket names at start; the memory tier keeps
//! that index in the entry, so removals and evictions do not look it up again. Keys of buckets
//! the table does not know (none, when the tiers were built without a bucket list) count in
//! one "other" slot, which appears in the tier totals but under no bucket name.
//!
//! The tiers write here and the admin snapshot ([`crate::cache::stats`]) reads it: this file
//! imports no tier.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// Bucket names → indices. Built from the configured buckets at start; a config reload adds
/// the names of new buckets ([`Buckets::add`]), up to [`RESERVED_BUCKETS`] over the process's
/// life, and never removes one (a removed bucket's entries keep their counts until they go).
/// Index [`Buckets::other`] is the "other" slot (keys of no known bucket). The running
/// process has one table: the tiers' per-bucket usage and the metrics registry's per-bucket
/// slots ([`crate::metrics::Registry::new`]) are its indices, so both always agree.
#[derive(Debug, Default)]
pub struct Buckets {
    capacity: usize,
    table: parking_lot::RwLock<Table>,
}

#[derive(Debug, Default)]
struct Table {
    names: Vec<String>,
    index: HashMap<Box<[u8]>, usize>,
}

/// How many bucket names config reloads may add to the ones known at start, over the
/// process's life: the per-bucket counters (here and in the metrics registry) are allocated
/// up front so the paths that move them never allocate or lock for long. A reload adding more
/// is refused and says that a restart is needed.
pub const RESERVED_BUCKETS: usize = 64;

impl Buckets {
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(names: I) -> Arc<Buckets> {
        let names: Vec<String> = names.into_iter().map(Into::into).collect();
        let index = names
            .iter()
            .enumerate()
            .map(|(i, n)| (Box::<[u8]>::from(n.as_bytes()), i))
            .collect();
        Arc::new(Buckets {
            capacity: names.len() + RESERVED_BUCKETS,
            table: parking_lot::RwLock::new(Table { names, index }),
        })
    }

    /// No bucket known: every key counts in the "other" slot.
    pub fn none() -> Arc<Buckets> {
        Arc::new(Buckets::default())
    }

    /// The index of the "other" slot (keys of no known bucket); known buckets are below it.
    pub fn other(&self) -> usize {
        self.capacity
    }

    /// The bucket index of a cache key ([`Buckets::other`] for an unknown bucket).
    pub fn of_key(&self, key: &[u8]) -> usize {
        let name = key.split(|&b| b == 0).next().unwrap_or(key);
        let t = self.table.read();
        t.index.get(name).copied().unwrap_or(self.capacity)
    }

    /// The index of a bucket name, if known.
    pub fn of_name(&self, name: &str) -> Option<usize> {
        self.table.read().index.get(name.as_bytes()).copied()
    }

    /// The index of `name`, given the next free one when it is new; `None` when the
    /// [`RESERVED_BUCKETS`] are used up. Entries already stored under a name that was not known
    /// stay counted in the "other" slot.
    pub fn add(&self, name: &str) -> Option<usize> {
        let mut t = self.table.write();
        if let Some(&i) = t.index.get(name.as_bytes()) {
            return Some(i);
        }
        let i = t.names.len();
        if i >= self.capacity {
            return None;
        }
        t.names.push(name.to_owned());
        t.index.insert(Box::from(name.as_bytes()), i);
        Some(i)
    }

    /// The known names, by index.
    pub fn names(&self) -> Vec<String> {
        self.table.read().names.clone()
    }

    /// Known buckets (the "other" slot not counted).
    pub fn len(&self) -> usize {
        self.table.read().names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One bucket's counters in one tier; aligned so two buckets' counters never share a line.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Slot {
    entries: AtomicU64,
    bytes: AtomicU64,
    evictions: AtomicU64,
}

/// What one tier holds per bucket: entries, bytes and evictions (relaxed atomics).
#[derive(Debug)]
pub struct BucketUsage {
    buckets: Arc<Buckets>,
    slots: Box<[Slot]>,
}

/// One bucket's share of a tier.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub entries: u64,
    pub bytes: u64,
    pub evictions: u64,
}

impl BucketUsage {
    pub fn new(buckets: Arc<Buckets>) -> BucketUsage {
        let slots = (0..=buckets.other()).map(|_| Slot::default()).collect();
        BucketUsage { buckets, slots }
    }

    pub fn buckets(&self) -> &Arc<Buckets> {
        &self.buckets
    }

    /// The bucket index of a cache key.
    pub fn class(&self, key: &[u8]) -> usize {
        self.buckets.of_key(key)
    }

    /// One entry of `bytes` added to bucket `class`.
    pub fn added(&self, class: usize, bytes: u64) {
        let s = &self.slots[class];
        s.entries.fetch_add(1, Relaxed);
        s.bytes.fetch_add(bytes, Relaxed);
    }

    /// One entry of `bytes` gone from bucket `class` (removed, or evicted when `evicted`).
    pub fn removed(&self, class: usize, bytes: u64, evicted: bool) {
        let s = &self.slots[class];
        s.entries.fetch_sub(1, Relaxed);
        s.bytes.fetch_sub(bytes, Relaxed);
        if evicted {
            s.evictions.fetch_add(1, Relaxed);
        }
    }

    /// An entry of bucket `class` replaced: its size went from `old` to `new` bytes.
    pub fn resized(&self, class: usize, old: u64, new: u64) {
        let s = &self.slots[class];
        s.bytes.fetch_add(new, Relaxed);
        s.bytes.fetch_sub(old, Relaxed);
    }

    /// Bucket `class`'s share (`class == buckets().other()`: the "other" slot).
    pub fn get(&self, class: usize) -> Usage {
        let s = &self.slots[class];
        Usage {
            entries: s.entries.load(Relaxed),
            bytes: s.bytes.load(Relaxed),
            evictions: s.evictions.load(Relaxed),
        }
    }

    /// A bucket's share by name; `None` when this tier does not know the bucket.
    pub fn by_name(&self, name: &str) -> Option<Usage> {
        self.buckets.of_name(name).map(|i| self.get(i))
    }

    /// Resets every slot to zero (when the tier is emptied wholesale before recounting).
    pub fn reset(&self) {
        for s in self.slots.iter() {
            s.entries.store(0, Relaxed);
            s.bytes.store(0, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_their_bucket() {
        let b = Buckets::new(["img", "img2"]);
        assert_eq!(b.of_key(b"img\0a"), 0);
        assert_eq!(b.of_key(b"img2\0img\0x"), 1);
        assert_eq!(b.of_key(b"im\0a"), b.other());
        assert_eq!(b.of_key(b"img"), 0);
        assert_eq!(Buckets::none().of_key(b"img\0a"), 0);
        // A reload's new bucket takes the next index; its keys stop counting as "other".
        assert_eq!(b.add("im"), Some(2));
        assert_eq!(b.add("img"), Some(0));
        assert_eq!(b.of_key(b"im\0a"), 2);
        let u = BucketUsage::new(b);
        u.added(1, 10);
        u.added(1, 5);
        u.resized(1, 5, 7);
        u.removed(1, 10, true);
        assert_eq!(
            u.by_name("img2"),
            Some(Usage {
                entries: 1,
                bytes: 7,
                evictions: 1
            })
        );
        assert_eq!(u.by_name("nope"), None);
        assert_eq!(u.get(2), Usage::default());
    }
}

//! The tiers together: lookup order, promotion, write policy, purge.
//!
//! Lookup goes memory → disk → Redis; a hit in a lower tier is promoted into the tiers above
//! it. A fill is written to every enabled tier (`write-through`, before the fill is announced
//! complete) — `write-behind` is accepted by the config and currently behaves the same for the
//! memory tier (the only one that is always synchronous). Deletes and clears act on every
//! tier and report how many entries they removed.

use std::sync::Arc;

use crate::cache::entry::CachedObject;
use crate::cache::inflight::Inflight;
use crate::cache::memory::{MemoryCache, Weighted};
use crate::config::CacheConfig;

impl Weighted for CachedObject {
    fn weight(&self) -> usize {
        CachedObject::weight(self)
    }
}

/// Which tier answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    Memory,
    Disk,
    Redis,
}

impl Layer {
    pub const ALL: [Layer; 3] = [Layer::Memory, Layer::Disk, Layer::Redis];

    pub fn name(self) -> &'static str {
        match self {
            Layer::Memory => "memory",
            Layer::Disk => "disk",
            Layer::Redis => "redis",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// A cache hit.
pub struct Hit {
    pub obj: CachedObject,
    pub layer: Layer,
}

/// Entries and bytes removed by a purge.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    pub entries: u64,
    pub bytes: u64,
}

/// The shared tiers (one per process).
pub struct Tiers {
    pub memory: MemoryCache<CachedObject>,
    pub inflight: Inflight,
    /// Largest object stored (`cache.max_object_size`).
    pub max_object_size: u64,
}

impl Tiers {
    pub fn new(cfg: &CacheConfig) -> Arc<Tiers> {
        let memory = MemoryCache::new(cfg.memory.capacity)
            .with_max_object_size(cfg.max_object_size.min(cfg.memory.capacity));
        Arc::new(Tiers {
            memory,
            inflight: Inflight::default(),
            max_object_size: cfg.max_object_size,
        })
    }

    /// Whether any tier can hold objects.
    pub fn enabled(&self) -> bool {
        self.memory.capacity() > 0
    }

    pub fn lookup(&self, key: &[u8]) -> Option<Hit> {
        self.memory.get(key).map(|obj| Hit {
            obj,
            layer: Layer::Memory,
        })
    }

    /// Stores a filled (or revalidated) object in every tier.
    pub fn store(&self, key: &[u8], obj: CachedObject) {
        self.memory.insert(key, obj);
    }

    pub fn remove(&self, key: &[u8]) -> Removed {
        match self.memory.remove(key) {
            Some(obj) => Removed {
                entries: 1,
                bytes: obj.weight() as u64,
            },
            None => Removed::default(),
        }
    }

    /// Removes every entry whose key starts with `prefix`.
    pub fn remove_prefix(&self, prefix: &[u8]) -> Removed {
        let r = self.memory.remove_if(|k| k.starts_with(prefix));
        Removed {
            entries: r.entries,
            bytes: r.bytes,
        }
    }

    pub fn clear(&self) -> Removed {
        let r = self.memory.clear();
        Removed {
            entries: r.entries,
            bytes: r.bytes,
        }
    }

    /// (entries, bytes) held by `layer`.
    pub fn usage(&self, layer: Layer) -> (u64, u64) {
        match layer {
            Layer::Memory => (self.memory.len(), self.memory.bytes()),
            _ => (0, 0),
        }
    }

    pub fn evictions(&self, layer: Layer) -> u64 {
        match layer {
            Layer::Memory => self.memory.evictions(),
            _ => 0,
        }
    }
}

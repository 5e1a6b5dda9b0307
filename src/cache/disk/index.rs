//! The in-memory index: key → where its newest entry lives, sharded so that workers on
//! different cores rarely meet on the same lock, and every lock is held for one hash-map
//! operation (O(1)): nothing that can block or scale with the data runs under a shard lock.
//!
//! A [`Slot`] holds an `Arc` of its segment, so a hit needs no second lookup (segment id →
//! mapping) and a slot can never point at an unmapped segment.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::format::{self, ENTRY_HEADER_LEN};
use super::segment::Segment;

/// Shard count: a power of two well above the core count, so two workers collide on a shard
/// rarely; the cost is 64 small maps.
const SHARDS: usize = 64;

/// Where one live entry lives, and its metadata (copied out of the header so a lookup never
/// touches the map).
#[derive(Clone)]
pub struct Slot {
    pub segment: Arc<Segment>,
    /// Offset of the entry header within the segment.
    pub offset: u32,
    pub key_len: u32,
    pub value_len: u32,
    pub expires_at_ms: u64,
    pub written_at_ms: u64,
    /// The caller's stamp moved with the expiry by a touch (0: none; `DiskHit::stamp_ms`).
    pub stamp_ms: u64,
}

impl Slot {
    /// Position in write order: later writes have larger positions. Segment ids only grow, and
    /// within a segment offsets are reserved in increasing order.
    pub fn position(&self) -> (u64, u32) {
        (self.segment.id, self.offset)
    }

    pub fn value_offset(&self) -> usize {
        self.offset as usize + ENTRY_HEADER_LEN + self.key_len as usize
    }

    /// Bytes the entry occupies in its segment (what `DiskCache::bytes` counts).
    pub fn padded_len(&self) -> u64 {
        format::padded_len(self.key_len as usize, self.value_len as usize) as u64
    }
}

pub type Map = HashMap<Arc<[u8]>, Slot>;

/// The sharded map.
pub struct Index {
    shards: Box<[RwLock<Map>]>,
    hasher: RandomState,
}

impl Default for Index {
    fn default() -> Index {
        Index::new()
    }
}

impl Index {
    pub fn new() -> Index {
        Index {
            shards: (0..SHARDS).map(|_| RwLock::new(Map::new())).collect(),
            hasher: RandomState::new(),
        }
    }

    fn shard_of(&self, key: &[u8]) -> usize {
        (self.hasher.hash_one(key) as usize) & (SHARDS - 1)
    }

    /// The shard holding `key`, for [`Index::shard`].
    pub fn shard_index(&self, key: &[u8]) -> usize {
        self.shard_of(key)
    }

    /// Read lock on the shard holding `key`. Poisoning is ignored: a panic elsewhere cannot
    /// leave a `HashMap` half-updated in a way that matters to a cache.
    pub fn read(&self, key: &[u8]) -> RwLockReadGuard<'_, Map> {
        self.shards[self.shard_of(key)]
            .read()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub fn write(&self, key: &[u8]) -> RwLockWriteGuard<'_, Map> {
        self.shards[self.shard_of(key)]
            .write()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Write lock on shard `i`, for whole-index walks (`remove_if`, `clear`) that take one
    /// shard at a time.
    pub fn shard(&self, i: usize) -> RwLockWriteGuard<'_, Map> {
        self.shards[i].write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn shard_count(&self) -> usize {
        SHARDS
    }

    /// Direct access without locking, for building the index at open before it is shared.
    pub fn get_mut(&mut self, key: &[u8]) -> &mut Map {
        let i = self.shard_of(key);
        self.shards[i].get_mut().unwrap_or_else(|e| e.into_inner())
    }

    pub fn shards_mut(&mut self) -> impl Iterator<Item = &mut Map> {
        self.shards
            .iter_mut()
            .map(|s| s.get_mut().unwrap_or_else(|e| e.into_inner()))
    }
}

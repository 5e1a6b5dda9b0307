//! The cache tiers: [`memory`] (sharded, shared by all workers), [`disk`] (mmap-backed
//! segments that survive restarts) and [`redis`] (shared by several instances); [`tiered`] puts
//! memory and disk together (lookup, promotion, write policy), [`front`] is one worker's
//! [`Cache`] over all three — the only way the request path reads and writes the cache —
//! with [`redis_tier`]'s key and TTL conventions for Redis, [`purge`] removes entries from all three (or, soft, marks them stale), and
//! [`purge_broadcast`] tells the other instances sharing the Redis to purge their own memory
//! and disk; [`stats`] counts what each tier holds per bucket and builds the admin stats
//! snapshot.

pub mod disk;
pub mod entry;
pub mod front;
pub mod inflight;
pub mod key;
pub mod memory;
pub mod purge;
pub mod purge_broadcast;
pub mod redis;
pub mod redis_tier;
pub mod stats;
pub mod tiered;
pub mod usage;

pub use front::Cache;

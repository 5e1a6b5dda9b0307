//! The cache tiers: [`memory`] (sharded, shared by all workers), [`disk`] (mmap-backed
//! segments that survive restarts) and [`redis`] (shared by several instances).
//!
//! (Being built: see issue 4.)

pub mod disk;
pub mod entry;
pub mod inflight;
pub mod memory;
pub mod policy;
pub mod redis;
pub mod redis_tier;
pub mod tiered;

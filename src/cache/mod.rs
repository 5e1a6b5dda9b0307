//! The cache tiers: [`memory`] (sharded, shared by all workers), [`disk`] (mmap-backed
//! segments that survive restarts) and [`redis`] (shared by several instances); [`tiered`] puts
//! memory and disk together (lookup, promotion, write policy), [`redis_tier`] adds Redis in the
//! request path, and [`purge`] removes entries from all three.
//!
//! (Being built: see issue 4.)

pub mod disk;
pub mod entry;
pub mod inflight;
pub mod memory;
pub mod policy;
pub mod purge;
pub mod redis;
pub mod redis_tier;
pub mod tiered;

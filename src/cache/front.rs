//! The cache front: one worker's view of all three tiers, and the only way the request path
//! reads or writes the cache.
//!
//! [`Cache`] holds the shared [`Tiers`] (memory and disk, the coalescing table, the purge
//! generation) and this worker's Redis client, and owns what spans them:
//! - **lookup order**: memory → disk → Redis; a hit in a lower tier is promoted into the tiers
//!   above it (unless a purge began meanwhile);
//! - **write policy**: a fill is stored in memory and disk ([`Tiers::store`]) and in Redis —
//!   awaited with `write-through`, in a background task with `write-behind`, at most
//!   [`MAX_REDIS_BEHIND`] of those in flight per worker (more are dropped and counted);
//! - **the purge generation** ([`Tiers::generation`]): every store carries the generation its
//!   bytes were fetched in, and a store that a purge overtook is dropped or undone, in every
//!   tier, by the one helper [`Cache::store`]/[`Cache::refresh`] share;
//! - **removal** of one key from every tier and every instance (an origin `404`).
//!
//! Failures of Redis are counted in [`Tiers::redis_errors`] (rendered by `/metrics` as
//! `corvid_cache_errors_total{layer="redis"}`) and otherwise read as misses or skipped writes:
//! Redis never fails a client request.
//!
//! Key, value and TTL conventions of the Redis tier are [`super::redis_tier`]'s.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::entry::CachedObject;
use super::inflight::Inflight;
use super::purge::{Mode, Scope};
use super::purge_broadcast::{self, Broadcast};
use super::redis::{RedisClient, RedisOptions};
use super::redis_tier;
use super::tiered::{Hit, Layer, Tiers};
use crate::clock::Clock;
use crate::config::{CacheConfig, WritePolicy};

/// Write-behind Redis writes one worker keeps in flight at most; more are dropped and counted.
pub const MAX_REDIS_BEHIND: usize = 256;

/// This worker's Redis tier: its client and the conventions its writes follow.
struct RedisTier {
    client: RedisClient,
    /// The key prefix (the client adds it to GET/SET; raw commands need it spelled out).
    prefix: String,
    max_object_size: u64,
    /// How long a key outlives its entry's freshness ([`redis_tier::retain`]).
    retain: Duration,
    write_behind: bool,
    /// Background writes in flight (write-behind), shared with the tasks doing them.
    behind: Rc<Cell<usize>>,
}

/// One worker's cache front (see the module docs).
pub struct Cache {
    tiers: Arc<Tiers>,
    redis: Option<RedisTier>,
    /// This process's tag on purge announcements (its own are not applied twice).
    instance: u32,
}

impl Cache {
    /// The front over `tiers` and, when `redis` is given, a Redis client built from it (a
    /// client that cannot be built disables the tier for this worker, logged).
    pub fn new(
        tiers: Arc<Tiers>,
        cfg: &CacheConfig,
        redis: Option<RedisOptions>,
        instance: u32,
    ) -> Cache {
        let redis = redis.and_then(|opts| {
            let prefix = opts.key_prefix.clone();
            let client = RedisClient::new(opts)
                .map_err(|e| log::error!("redis tier disabled: {e}"))
                .ok()?;
            let max_object_size = cfg.redis.as_ref().map_or(0, |r| r.max_object_size);
            Some(RedisTier {
                client,
                prefix,
                max_object_size,
                retain: redis_tier::retain(cfg),
                write_behind: cfg.write_policy == WritePolicy::WriteBehind,
                behind: Rc::new(Cell::new(0)),
            })
        });
        Cache {
            tiers,
            redis,
            instance,
        }
    }

    pub fn tiers(&self) -> &Arc<Tiers> {
        &self.tiers
    }

    /// The table that coalesces fills and revalidations of one key across workers.
    pub fn inflight(&self) -> &Arc<Inflight> {
        &self.tiers.inflight
    }

    /// The clock freshness is decided by (the process's; see [`crate::clock`]).
    pub fn clock(&self) -> &Clock {
        &self.tiers.clock
    }

    /// Whether any tier can hold objects (Redis alone is a cache too).
    pub fn enabled(&self) -> bool {
        self.tiers.enabled() || self.redis.is_some()
    }

    /// The purge generation now: what a fetch starting now passes to [`Cache::store`].
    pub fn generation(&self) -> u64 {
        self.tiers.generation()
    }

    /// Largest object any tier stores (`cache.max_object_size`).
    pub fn max_object_size(&self) -> u64 {
        self.tiers.max_object_size
    }

    /// This worker's Redis client and key prefix (purges through the admin API).
    pub fn redis(&self) -> Option<(&RedisClient, &str)> {
        self.redis.as_ref().map(|r| (&r.client, r.prefix.as_str()))
    }

    /// Memory, then disk, then Redis; a hit below memory is promoted (unless a purge began
    /// since the lookup started).
    pub async fn lookup(&self, key: &[u8]) -> Option<Hit> {
        let since = self.generation();
        if let Some(hit) = self.tiers.lookup(key).await {
            return Some(hit);
        }
        let r = self.redis.as_ref()?;
        let now = self.clock().now_ms();
        match redis_tier::lookup(&r.client, key, r.retain, now).await {
            Ok(Some(obj)) => {
                self.tiers.store(key, obj.clone(), since);
                Some(Hit {
                    obj,
                    layer: Layer::Redis,
                })
            }
            Ok(None) => None,
            Err(_) => {
                self.redis_failed();
                None
            }
        }
    }

    /// Stores a filled object in every tier per the write policy, unless a purge began after
    /// `since`, the generation the bytes were fetched in (see [`Tiers::generation`]).
    pub async fn store(&self, key: &[u8], obj: CachedObject, since: u64) {
        if !self.tiers.store(key, obj.clone(), since) || obj.meta().is_local() {
            // A fleet member's local copy: the owner's copy is the fleet's (and Redis's).
            return;
        }
        self.to_redis(key, obj, since, Write::Store).await;
    }

    /// A revalidated object: new freshness (and header fields) everywhere, body untouched
    /// where the tier allows; dropped when a purge began after `since`.
    /// `fields_changed`: the `304` changed stored header fields, so tiers that keep them
    /// apart from the body rewrite the entry.
    pub async fn refresh(&self, key: &[u8], obj: CachedObject, since: u64, fields_changed: bool) {
        if !self.tiers.refresh(key, obj.clone(), since, fields_changed) || obj.meta().is_local() {
            return;
        }
        let write = if fields_changed {
            Write::Store
        } else {
            Write::Refresh
        };
        self.to_redis(key, obj, since, write).await;
    }

    /// Removes exactly `key` (not the object's other variants) from every tier and every
    /// instance sharing the Redis.
    pub async fn remove_everywhere(&self, key: &[u8]) -> Broadcast {
        let done = self
            .purge_everywhere(&Scope::Key(key.to_vec()), Mode::Hard)
            .await;
        if done.purged.redis.failed() {
            self.redis_failed();
        }
        done
    }

    /// Purges `scope` (hard or soft) here — memory, disk, Redis — and announces it to the
    /// other instances sharing the Redis.
    pub async fn purge_everywhere(&self, scope: &Scope, mode: Mode) -> Broadcast {
        let (client, prefix) = match self.redis() {
            Some((c, p)) => (Some(c), p),
            None => (None, ""),
        };
        purge_broadcast::purge_everywhere_as(
            &self.tiers,
            client,
            prefix,
            self.instance,
            scope,
            mode,
        )
        .await
    }

    /// The Redis part of a store or refresh, per the write policy.
    async fn to_redis(&self, key: &[u8], obj: CachedObject, since: u64, write: Write) {
        let Some(r) = &self.redis else {
            return;
        };
        if !r.write_behind {
            RedisWrite::of(&self.tiers, r)
                .run(key, &obj, since, write)
                .await;
            return;
        }
        if r.behind.get() >= MAX_REDIS_BEHIND {
            self.redis_failed();
            return;
        }
        r.behind.set(r.behind.get() + 1);
        let (tiers, behind, key) = (Arc::clone(&self.tiers), Rc::clone(&r.behind), key.to_vec());
        let (client, max_object_size, retain) = (r.client.clone(), r.max_object_size, r.retain);
        let prefix = r.prefix.clone();
        monoio::spawn(async move {
            if tiers.generation() == since {
                let w = RedisWrite {
                    tiers: &tiers,
                    client: &client,
                    prefix: &prefix,
                    max_object_size,
                    retain,
                };
                w.run(&key, &obj, since, write).await;
            }
            behind.set(behind.get() - 1);
        });
    }

    fn redis_failed(&self) {
        self.tiers.redis_errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// Which Redis write.
#[derive(Clone, Copy)]
enum Write {
    /// The whole entry.
    Store,
    /// A revalidated entry: new freshness (see [`redis_tier::refresh`]).
    Refresh,
}

/// One Redis write with the purge re-check after it (the one copy of that logic).
struct RedisWrite<'a> {
    tiers: &'a Tiers,
    client: &'a RedisClient,
    prefix: &'a str,
    max_object_size: u64,
    retain: Duration,
}

impl<'a> RedisWrite<'a> {
    fn of(tiers: &'a Tiers, r: &'a RedisTier) -> RedisWrite<'a> {
        RedisWrite {
            tiers,
            client: &r.client,
            prefix: &r.prefix,
            max_object_size: r.max_object_size,
            retain: r.retain,
        }
    }

    async fn run(&self, key: &[u8], obj: &CachedObject, since: u64, write: Write) {
        let now = self.tiers.clock.now_ms();
        let (c, max, retain) = (self.client, self.max_object_size, self.retain);
        let written = match write {
            Write::Store => redis_tier::store(c, key, obj, max, retain, now).await,
            Write::Refresh => redis_tier::refresh(c, self.prefix, key, obj, retain, now).await,
        };
        // A purge that began while the write was on its way may have walked Redis before the
        // write landed: delete the key again.
        let failed = match written {
            Err(_) => true,
            Ok(()) => self.tiers.generation() != since && c.del(key).await.is_err(),
        };
        if failed {
            self.tiers.redis_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

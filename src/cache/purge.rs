//! Purge: removing entries from every tier at once — one cache key, one object with all its
//! variants, the keys of a bucket (optionally only those under a key prefix), or everything —
//! and reporting what each tier removed.
//!
//! This module owns the meaning of each [`Scope`] over the key format of [`key`] and the
//! order of the work; the tiers only offer "remove this key" and "remove what matches". The
//! request path (an origin 404 in [`super::front::Cache::remove_everywhere`]) and the admin API both
//! come through here, so the two cannot disagree on what "gone" means.
//!
//! # Decisions
//!
//! - **An object is all its variants.** A request with `versionId` is cached under its own
//!   key (`bucket \0 key \0 name=value…`, see [`key`]; entries written before issue 19 may
//!   also carry `response-*` overrides, which are no longer keyed). Purging an
//!   object removes the plain key and every variant: whoever purges an object wants the next
//!   request to see the origin, whatever its query. Object keys never contain NUL (the router
//!   refuses them), so `bucket \0 key \0` selects exactly the variants of that object and never
//!   another object whose key merely starts with the same characters. [`Scope::Key`] removes one
//!   exact key: that is what an origin 404 justifies (a 404 for one `versionId` says nothing
//!   about the others).
//! - **Counts are per tier.** Each tier reports the entries and bytes it removed; an object
//!   cached in memory, on disk and in Redis counts once in each. [`Purged::entries`] is their
//!   sum, i.e. how much the `corvid_cache_entries` gauges (and Redis's key count) went down;
//!   counting distinct keys instead would mean collecting every removed key of a bulk purge
//!   (millions, for a full disk tier) just to de-duplicate them. [`Purged::bytes`] is what the
//!   memory and disk tiers freed, as `corvid_cache_bytes` counts it; Redis does not report the
//!   size of deleted keys, so its share is not in it.
//! - **Redis is optional here too.** The memory and disk purge always happens; a Redis that is
//!   down, slow or failing makes [`Purged::redis`] say so ([`RedisPurge::unreachable`]) instead
//!   of failing the purge. Every Redis command is bounded by the client's timeout, and a client
//!   already known to be down fails at once, so a dead Redis costs a purge at most one timeout.
//!   A walk over a large live keyspace (`SCAN`) takes as long as the keyspace needs, one
//!   bounded round trip per 1000 keys.
//! - **Only corvid's keys.** Everything in Redis means every key under the client's key prefix
//!   (`SCAN MATCH` + `UNLINK`), never `FLUSHDB`: the Redis may be shared with other users.
//!
//! # Cost, and where it runs
//!
//! A [`Scope::Key`] purge is O(1) per tier and runs inline. Every other scope walks the memory
//! and disk indexes (variants are not indexed by object, so even one object needs a walk) and,
//! for [`Scope::All`], deletes the disk tier's segment files; that runs on a short-lived helper
//! thread, so a worker's other connections are not stalled, while the Redis walk proceeds on
//! the caller's task at the same time. Purges are rare administrative operations; a thread per
//! purge is cheaper than keeping one idle for them.
//!
//! # Fills in flight
//!
//! A fill that fetched its bytes before a purge, a write-behind write queued before it, or a
//! promotion from a lower tier read before it, must not put the purged object back when it
//! completes. Every purge but one exact key first bumps the tiers' purge generation
//! ([`Tiers::generation`]); stores carry the generation their bytes were read in and are
//! dropped (or undone, when the purge began mid-write) once it is stale. An exact-key purge —
//! what an origin 404 does — does not: ending every fill in flight for a common answer would
//! be costly, and what they fetched was valid when they fetched it.
//!
//! # Soft purge
//!
//! [`Mode::Soft`] marks the matching entries stale instead of removing them: the next request
//! for one revalidates with the origin (`If-None-Match` with the stored ETag), and a `304`
//! keeps the stored body (`X-Cache: REVALIDATED`) — "refresh what changed" without every
//! object of a bucket being fetched again at once. Each tier keeps freshness in one place,
//! and a soft purge moves exactly that, to *now* (a deadline already past stays):
//!
//! - **memory**: the entry is replaced in place by a copy whose [`Meta`](crate::cache::entry::Meta) says
//!   `expires_at_ms = now` (same `Arc`'d body, same charge, same queue position); the `Meta`
//!   is immutable and shared with requests in flight, so a copy rather than a flag — the hit
//!   path stays one load of `expires_at_ms`, with no extra atomic to read.
//! - **disk**: records in segments are immutable, but freshness is read from the index's
//!   expiry (a disk hit, and its promotion into memory, take the index's deadline, not the
//!   record's): the index expiry is lowered and a touch record persists it, as a 304
//!   revalidation does. Recovery drops entries that are expired at start-up, so after a
//!   restart a soft-purged disk entry is gone (a miss), never fresh.
//! - **Redis**: freshness is the key's TTL minus the retention ([`Tiers::redis_retain`]):
//!   a script cuts each matching key's TTL to the retention (longer TTLs only), so every
//!   instance reads it as stale from now on and it stays available for revalidation.
//!
//! Lower tiers promote what they read with their own deadline, so a promoted copy is stale
//! too. Stale-serving rules see the entry as *stale since the purge*: with
//! `cache.stale_while_revalidate` configured a request within that window of the purge is
//! answered with the stale copy (`X-Cache: STALE`) while one background request revalidates
//! it — the configured trade; without it every request revalidates first. `stale_if_error`
//! likewise lets the stale copy stand in when the origin fails within its window.
//!
//! Counts: each tier reports the entries that matched (all stale now, whether this purge or
//! an earlier deadline made them so) and, for memory and disk, their bytes — still held.
//!
//! Fills in flight: a soft purge bumps the purge generation like a hard one (every scope,
//! one exact key included: only the admin API soft-purges), so a fill or a revalidation whose
//! bytes or `304` came before the purge cannot store a fresh entry over the stale mark;
//! when such a store raced the marking walk it is undone by removal, so that key ends up
//! purged hard (a miss), never fresh.
//!
//! # What a purge does not cover
//!
//! Other corvid instances sharing the Redis keep their own memory and disk copies until told
//! (pub/sub, see [`crate::cache::redis::subscribe`]).

use std::sync::Arc;
use std::time::Duration;

use crate::cache::disk::DiskCache;
use crate::cache::key;
use crate::cache::memory::RemovalStats;
use crate::cache::redis::{RedisClient, RedisError};
use crate::cache::tiered::Tiers;

/// What to purge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Exactly this cache key (from [`key::cache_key`]), no other variant.
    Key(Vec<u8>),
    /// One object of a bucket (by its configured `name`): its plain key and every variant.
    Object { bucket: String, key: String },
    /// Every entry of a bucket whose object key starts with `prefix` (`""`: the whole bucket),
    /// variants included.
    Prefix { bucket: String, prefix: String },
    /// Every entry of every tier (in Redis: every key under corvid's key prefix).
    All,
}

/// A [`Scope`] as cache-key bytes.
#[derive(Debug, Clone)]
enum Selector {
    Exact(Vec<u8>),
    /// The plain key of an object: selects it and `plain \0 …`.
    Object(Vec<u8>),
    Prefix(Vec<u8>),
    All,
}

impl Selector {
    fn new(scope: &Scope) -> Selector {
        match scope {
            Scope::Key(k) => Selector::Exact(k.clone()),
            Scope::Object { bucket, key } => Selector::Object(key::cache_key(bucket, key, &[])),
            Scope::Prefix { bucket, prefix } => {
                Selector::Prefix(key::bucket_prefix(bucket, prefix))
            }
            Scope::All => Selector::All,
        }
    }

    fn matches(&self, ckey: &[u8]) -> bool {
        match self {
            Selector::Exact(k) => ckey == &k[..],
            Selector::Object(plain) => key::is_variant_of(ckey, plain),
            Selector::Prefix(p) => ckey.starts_with(p),
            Selector::All => true,
        }
    }
}

/// Remove the matching entries, or mark them stale (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    #[default]
    Hard,
    Soft,
}

impl Mode {
    pub fn soft(soft: bool) -> Mode {
        if soft {
            Mode::Soft
        } else {
            Mode::Hard
        }
    }

    pub fn is_soft(self) -> bool {
        self == Mode::Soft
    }
}

/// Entries and bytes one tier removed (for a soft purge: marked stale, and still held).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    pub entries: u64,
    pub bytes: u64,
}

impl From<RemovalStats> for Removed {
    fn from(s: RemovalStats) -> Removed {
        Removed {
            entries: s.entries,
            bytes: s.bytes,
        }
    }
}

impl From<crate::cache::disk::RemovalStats> for Removed {
    fn from(s: crate::cache::disk::RemovalStats) -> Removed {
        Removed {
            entries: s.entries,
            bytes: s.bytes,
        }
    }
}

/// What the purge did in Redis (for a soft purge, "deleted" means marked stale).
#[derive(Debug)]
pub enum RedisPurge {
    /// No Redis tier is configured.
    Disabled,
    /// Every matching key was deleted (or marked): this many.
    Done(u64),
    /// The purge stopped at `error`; `deleted` keys had gone (or been marked) before it.
    Failed { deleted: u64, error: RedisError },
}

impl RedisPurge {
    /// Keys deleted from Redis.
    pub fn deleted(&self) -> u64 {
        match self {
            RedisPurge::Disabled => 0,
            RedisPurge::Done(n) => *n,
            RedisPurge::Failed { deleted, .. } => *deleted,
        }
    }

    /// Whether the Redis part did not complete (entries may remain in Redis).
    pub fn failed(&self) -> bool {
        matches!(self, RedisPurge::Failed { .. })
    }

    /// Whether Redis could not be reached: down (failing fast while the client backs off),
    /// timed out, or the connection failed. An error *reply* from a reachable Redis is a
    /// failure but not this.
    pub fn unreachable(&self) -> bool {
        matches!(
            self,
            RedisPurge::Failed {
                error: RedisError::Down | RedisError::Timeout | RedisError::Io(_),
                ..
            }
        )
    }
}

/// What a purge removed (or, soft, marked stale), per tier.
#[derive(Debug)]
pub struct Purged {
    pub mode: Mode,
    pub memory: Removed,
    pub disk: Removed,
    pub redis: RedisPurge,
}

impl Purged {
    /// Entries removed, summed over the tiers (an entry held by two tiers counts twice; see
    /// the module docs).
    pub fn entries(&self) -> u64 {
        self.memory.entries + self.disk.entries + self.redis.deleted()
    }

    /// Bytes freed in the memory and disk tiers (Redis does not report sizes); for a soft
    /// purge, the bytes of the entries marked (still held).
    pub fn bytes(&self) -> u64 {
        self.memory.bytes + self.disk.bytes
    }
}

/// Purges `scope` from the shared tiers and, when given, from Redis through `redis` (the
/// calling worker's client). Never fails: a Redis problem is reported in [`Purged::redis`].
/// A hard purge; [`purge_as`] chooses.
pub async fn purge(tiers: &Arc<Tiers>, redis: Option<&RedisClient>, scope: &Scope) -> Purged {
    purge_as(tiers, redis, scope, Mode::Hard).await
}

/// [`purge`] with a [`Mode`]: removes the matching entries, or marks them stale (see the
/// module docs).
pub async fn purge_as(
    tiers: &Arc<Tiers>,
    redis: Option<&RedisClient>,
    scope: &Scope,
    mode: Mode,
) -> Purged {
    let sel = Selector::new(scope);
    // Fills and promotions in flight must not put back what this removes. One exact key is
    // what an origin 404 removes: what other requests fetched before it was valid then, and
    // ending every fill in flight for that would make a common answer costly. A soft purge
    // is an administrator's, always.
    if mode.is_soft() || !matches!(sel, Selector::Exact(_)) {
        tiers.begin_purge();
    }
    // Stale from this moment on.
    let at = tiers.clock.now_ms();
    let redis_part = async {
        match redis {
            None => RedisPurge::Disabled,
            Some(client) if mode.is_soft() => {
                soft_purge_redis(client, &sel, tiers.redis_retain).await
            }
            Some(client) => purge_redis(client, &sel).await,
        }
    };
    let ((memory, disk), redis) = monoio::join!(purge_local(tiers, &sel, mode, at), redis_part);
    Purged {
        mode,
        memory,
        disk,
        redis,
    }
}

/// The memory and disk part: inline for one key, else on a helper thread (see the module
/// docs), falling back to inline if no thread can be started.
async fn purge_local(
    tiers: &Arc<Tiers>,
    sel: &Selector,
    mode: Mode,
    at: u64,
) -> (Removed, Removed) {
    if mode.is_soft() {
        return soft_purge_local(tiers, sel, at).await;
    }
    if let Selector::Exact(_) = sel {
        return purge_local_now(tiers, sel);
    }
    let (t, s) = (Arc::clone(tiers), sel.clone());
    on_helper(move || purge_local_now(&t, &s))
        .await
        .unwrap_or_else(|| purge_local_now(tiers, sel))
}

/// The soft memory and disk part, placed like the hard one.
async fn soft_purge_local(tiers: &Arc<Tiers>, sel: &Selector, at: u64) -> (Removed, Removed) {
    if let Selector::Exact(_) = sel {
        return soft_purge_local_now(tiers, sel, at);
    }
    let (t, s) = (Arc::clone(tiers), sel.clone());
    on_helper(move || soft_purge_local_now(&t, &s, at))
        .await
        .unwrap_or_else(|| soft_purge_local_now(tiers, sel, at))
}

fn soft_purge_local_now(tiers: &Tiers, sel: &Selector, at: u64) -> (Removed, Removed) {
    let stale = |obj: &crate::cache::entry::CachedObject| obj.stale_since(at);
    let memory = match sel {
        Selector::Exact(k) => {
            let mut found = Removed::default();
            if tiers.memory.update(k, stale) {
                // Charged as before (same body and headers): what `bytes()` counts for it.
                found.entries = 1;
                found.bytes = tiers
                    .memory
                    .get(k)
                    .map_or(0, |o| o.weight() as u64 + k.len() as u64);
            }
            found
        }
        _ => tiers.memory.update_if(|k| sel.matches(k), stale).into(),
    };
    let disk = tiers
        .disk
        .as_deref()
        .map(|d| match sel {
            Selector::Exact(k) => d.mark_stale(k, at).into(),
            _ => d.mark_stale_if(|k| sel.matches(k), at).into(),
        })
        .unwrap_or_default();
    (memory, disk)
}

/// Runs `work` on a short-lived helper thread; `None` if no thread could be started (the
/// caller then runs it inline). A dead helper is logged and counts as nothing done.
async fn on_helper(
    work: impl FnOnce() -> (Removed, Removed) + Send + 'static,
) -> Option<(Removed, Removed)> {
    let (tx, rx) = flume::bounded(1);
    let spawned = std::thread::Builder::new()
        .name("corvid-purge".into())
        .spawn(move || {
            let _ = tx.send(work());
        });
    match spawned {
        // flume's async receive wakes this monoio task from the helper thread.
        Ok(_) => match rx.recv_async().await {
            Ok(r) => Some(r),
            Err(_) => {
                log::error!("purge: the helper thread died; memory and disk may be partly purged");
                Some((Removed::default(), Removed::default()))
            }
        },
        Err(e) => {
            log::warn!("purge: cannot start a helper thread ({e}); purging on this thread");
            None
        }
    }
}

fn purge_local_now(tiers: &Tiers, sel: &Selector) -> (Removed, Removed) {
    let memory = match sel {
        Selector::Exact(k) => tiers
            .memory
            .remove(k)
            .map(|obj| Removed {
                entries: 1,
                // What the memory tier charged for it (and `bytes()` drops by).
                bytes: obj.weight() as u64 + k.len() as u64,
            })
            .unwrap_or_default(),
        Selector::All => tiers.memory.clear().into(),
        _ => tiers.memory.remove_if(|k| sel.matches(k)).into(),
    };
    let disk = tiers
        .disk
        .as_deref()
        .map(|d| purge_disk(d, sel))
        .unwrap_or_default();
    (memory, disk)
}

fn purge_disk(disk: &DiskCache, sel: &Selector) -> Removed {
    match sel {
        Selector::Exact(k) => disk.remove(k).into(),
        Selector::All => disk.clear().into(),
        _ => disk.remove_if(|k| sel.matches(k)).into(),
    }
}

async fn purge_redis(client: &RedisClient, sel: &Selector) -> RedisPurge {
    let mut deleted = 0u64;
    let result = async {
        match sel {
            Selector::Exact(k) => {
                deleted += u64::from(client.del(k).await?);
                Ok(())
            }
            Selector::Object(plain) => {
                deleted += u64::from(client.del(plain).await?);
                let mut variants = plain.clone();
                variants.push(0);
                client.del_prefix_counted(&variants, &mut deleted).await
            }
            Selector::Prefix(p) => client.del_prefix_counted(p, &mut deleted).await,
            Selector::All => client.del_prefix_counted(b"", &mut deleted).await,
        }
    }
    .await;
    match result {
        Ok(()) => RedisPurge::Done(deleted),
        Err(error) => RedisPurge::Failed { deleted, error },
    }
}

/// Marks the matching Redis keys stale: their TTL cut to `retain` (see the module docs).
async fn soft_purge_redis(client: &RedisClient, sel: &Selector, retain: Duration) -> RedisPurge {
    let mut marked = 0u64;
    let result = async {
        match sel {
            Selector::Exact(k) => {
                marked += u64::from(client.mark_stale(k, retain).await?);
                Ok(())
            }
            Selector::Object(plain) => {
                marked += u64::from(client.mark_stale(plain, retain).await?);
                let mut variants = plain.clone();
                variants.push(0);
                client
                    .mark_stale_prefix_counted(&variants, retain, &mut marked)
                    .await
            }
            Selector::Prefix(p) => {
                client
                    .mark_stale_prefix_counted(p, retain, &mut marked)
                    .await
            }
            Selector::All => {
                client
                    .mark_stale_prefix_counted(b"", retain, &mut marked)
                    .await
            }
        }
    }
    .await;
    match result {
        Ok(()) => RedisPurge::Done(marked),
        Err(error) => RedisPurge::Failed {
            deleted: marked,
            error,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(scope: Scope) -> Selector {
        Selector::new(&scope)
    }

    #[test]
    fn scopes_select_exactly_their_keys() {
        let v = |k: &str, q: &[(&str, &str)]| key::cache_key("img", k, q);
        let plain = v("a/b", &[]);
        let version = v("a/b", &[("versionId", "3")]);
        let other = v("a/bc", &[]);
        let other_bucket = key::cache_key("img2", "a/b", &[]);

        let object = sel(Scope::Object {
            bucket: "img".into(),
            key: "a/b".into(),
        });
        assert!(object.matches(&plain) && object.matches(&version));
        assert!(!object.matches(&other) && !object.matches(&other_bucket));

        let exact = sel(Scope::Key(plain.clone()));
        assert!(exact.matches(&plain) && !exact.matches(&version));

        let prefix = sel(Scope::Prefix {
            bucket: "img".into(),
            prefix: "a/b".into(),
        });
        assert!(prefix.matches(&plain) && prefix.matches(&version) && prefix.matches(&other));
        assert!(!prefix.matches(&other_bucket));

        let bucket = sel(Scope::Prefix {
            bucket: "img".into(),
            prefix: String::new(),
        });
        assert!(bucket.matches(&other) && !bucket.matches(&other_bucket));
        assert!(sel(Scope::All).matches(&other_bucket));
    }
}

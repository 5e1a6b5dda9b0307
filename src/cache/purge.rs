//! Purge: removing entries from every tier at once — one cache key, one object with all its
//! variants, the keys of a bucket (optionally only those under a key prefix), or everything —
//! and reporting what each tier removed.
//!
//! This module owns the meaning of each [`Scope`] over the key format of [`policy`] and the
//! order of the work; the tiers only offer "remove this key" and "remove what matches". The
//! request path (an origin 404 in [`crate::fill::remove_everywhere`]) and the admin API both
//! come through here, so the two cannot disagree on what "gone" means.
//!
//! # Decisions
//!
//! - **An object is all its variants.** A request with `versionId` or `response-*` overrides
//!   is cached under its own key (`bucket \0 key \0 name=value…`, see [`policy`]). Purging an
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
//! # What a purge does not cover
//!
//! Other corvid instances sharing the Redis keep their own memory and disk copies until told
//! (pub/sub, see [`crate::cache::redis::subscribe`]).

use std::sync::Arc;

use crate::cache::disk::DiskCache;
use crate::cache::memory::RemovalStats;
use crate::cache::policy;
use crate::cache::redis::{RedisClient, RedisError};
use crate::cache::tiered::Tiers;

/// What to purge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Exactly this cache key (from [`policy::cache_key`]), no other variant.
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
            Scope::Object { bucket, key } => Selector::Object(policy::cache_key(bucket, key, &[])),
            Scope::Prefix { bucket, prefix } => {
                Selector::Prefix(policy::bucket_prefix(bucket, prefix))
            }
            Scope::All => Selector::All,
        }
    }

    fn matches(&self, ckey: &[u8]) -> bool {
        match self {
            Selector::Exact(k) => ckey == &k[..],
            Selector::Object(plain) => policy::is_variant_of(ckey, plain),
            Selector::Prefix(p) => ckey.starts_with(p),
            Selector::All => true,
        }
    }
}

/// Entries and bytes one tier removed.
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

/// What the purge did in Redis.
#[derive(Debug)]
pub enum RedisPurge {
    /// No Redis tier is configured.
    Disabled,
    /// Every matching key was deleted: this many.
    Done(u64),
    /// The purge stopped at `error`; `deleted` keys had gone before it.
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

/// What a purge removed, per tier.
#[derive(Debug)]
pub struct Purged {
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

    /// Bytes freed in the memory and disk tiers (Redis does not report sizes).
    pub fn bytes(&self) -> u64 {
        self.memory.bytes + self.disk.bytes
    }
}

/// Purges `scope` from the shared tiers and, when given, from Redis through `redis` (the
/// calling worker's client). Never fails: a Redis problem is reported in [`Purged::redis`].
pub async fn purge(tiers: &Arc<Tiers>, redis: Option<&RedisClient>, scope: &Scope) -> Purged {
    let sel = Selector::new(scope);
    // Fills and promotions in flight must not put back what this removes. One exact key is
    // what an origin 404 removes: what other requests fetched before it was valid then, and
    // ending every fill in flight for that would make a common answer costly.
    if !matches!(sel, Selector::Exact(_)) {
        tiers.begin_purge();
    }
    let redis_part = async {
        match redis {
            None => RedisPurge::Disabled,
            Some(client) => purge_redis(client, &sel).await,
        }
    };
    let ((memory, disk), redis) = monoio::join!(purge_local(tiers, &sel), redis_part);
    Purged {
        memory,
        disk,
        redis,
    }
}

/// The memory and disk part: inline for one key, else on a helper thread (see the module
/// docs), falling back to inline if no thread can be started.
async fn purge_local(tiers: &Arc<Tiers>, sel: &Selector) -> (Removed, Removed) {
    if let Selector::Exact(_) = sel {
        return purge_local_now(tiers, sel);
    }
    let (tx, rx) = flume::bounded(1);
    let (t, s) = (Arc::clone(tiers), sel.clone());
    let spawned = std::thread::Builder::new()
        .name("corvid-purge".into())
        .spawn(move || {
            let _ = tx.send(purge_local_now(&t, &s));
        });
    match spawned {
        // flume's async receive wakes this monoio task from the helper thread.
        Ok(_) => match rx.recv_async().await {
            Ok(r) => r,
            Err(_) => {
                log::error!("purge: the helper thread died; memory and disk may be partly purged");
                (Removed::default(), Removed::default())
            }
        },
        Err(e) => {
            log::warn!("purge: cannot start a helper thread ({e}); purging on this thread");
            purge_local_now(tiers, sel)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(scope: Scope) -> Selector {
        Selector::new(&scope)
    }

    #[test]
    fn scopes_select_exactly_their_keys() {
        let v = |k: &str, q: &[(&str, &str)]| policy::cache_key("img", k, q);
        let plain = v("a/b", &[]);
        let version = v("a/b", &[("versionId", "3")]);
        let other = v("a/bc", &[]);
        let other_bucket = policy::cache_key("img2", "a/b", &[]);

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

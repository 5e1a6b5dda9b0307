//! The Redis tier in the request path: key, value and TTL conventions on top of the per-worker
//! [`crate::cache::redis::RedisClient`].
//!
//! - Key: corvid's cache key behind the client's key prefix; value: the [`entry`] encoding.
//! - A Redis key lives `retain` past its entry's freshness (see [`retain`]) so that stale
//!   copies can still be revalidated. The freshness deadline is derived from the key's
//!   remaining TTL (`PTTL`, pipelined with the `GET` on one connection of one node, so the TTL
//!   is the value's own), so a revalidation refreshes it with one `PEXPIRE` and never sends the
//!   body again — for every instance sharing the Redis.
//! - Every failure (down, timeout, protocol) is counted and treated as a miss or a skipped
//!   write: Redis never fails a client request.

use std::time::Duration;

use crate::cache::entry::{self, CachedObject};
use crate::cache::redis::{RedisClient, RedisError};
use crate::config::CacheConfig;

/// How long an entry stays in Redis past its freshness: long enough for the configured
/// stale-serving windows, and at least an hour so revalidation can avoid refetching bodies.
pub fn retain(cfg: &CacheConfig) -> Duration {
    [cfg.stale_if_error, cfg.stale_while_revalidate]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or_default()
        .max(Duration::from_secs(3600))
}

/// Looks `key` up. `Ok(None)` is a miss; undecodable values count as misses too.
pub async fn lookup(
    client: &RedisClient,
    key: &[u8],
    retain: Duration,
    now_ms: u64,
) -> Result<Option<CachedObject>, RedisError> {
    // One pipeline to one node: the TTL is the value's own (on a cluster reading from
    // replicas, two separate reads could be answered by two replicas).
    let (value, ttl_ms) = client.get_with_pttl(key).await?;
    let Some(bytes) = value else {
        return Ok(None);
    };
    let Some(mut obj) = entry::decode(bytes) else {
        return Ok(None);
    };
    if let Some(ms) = ttl_ms {
        let expires = (now_ms + ms).saturating_sub(retain.as_millis() as u64);
        let meta = obj.meta().refreshed(expires);
        obj.set_meta(meta);
    }
    Ok(Some(obj))
}

/// The key TTL for an entry: its remaining freshness plus `retain`.
fn ttl(obj: &CachedObject, retain: Duration, now_ms: u64) -> Duration {
    Duration::from_millis(obj.meta().expires_at_ms.saturating_sub(now_ms)) + retain
}

/// Stores `obj` unless it is larger than the tier's `max_object_size`.
pub async fn store(
    client: &RedisClient,
    key: &[u8],
    obj: &CachedObject,
    max_object_size: u64,
    retain: Duration,
    now_ms: u64,
) -> Result<(), RedisError> {
    if obj.body_len() as u64 > max_object_size {
        return Ok(());
    }
    client
        .set(key, &entry::encode(obj), ttl(obj, retain, now_ms))
        .await
}

/// Moves the entry's freshness after a revalidation, without sending the body again: the key's
/// TTL (`PEXPIRE`), then — only when the key still exists, so a key that expired meanwhile is
/// not recreated as a fragment — the entry's age origin and deadline in place (`SETRANGE` over
/// their fixed offset in the [`entry`] encoding), so that every instance reading the copy sees
/// the age the revalidation restarted. Header-field changes are not patched here: the cache
/// front stores the whole entry again for those.
pub async fn refresh(
    client: &RedisClient,
    key_prefix: &str,
    key: &[u8],
    obj: &CachedObject,
    retain: Duration,
    now_ms: u64,
) -> Result<(), RedisError> {
    if !client.pexpire(key, ttl(obj, retain, now_ms)).await? {
        return Ok(());
    }
    let mut full = Vec::with_capacity(key_prefix.len() + key.len());
    full.extend_from_slice(key_prefix.as_bytes());
    full.extend_from_slice(key);
    let cmd = redis::cmd("SETRANGE")
        .arg(full)
        .arg(entry::TIMES_OFFSET)
        .arg(&entry::encode_times(obj.meta())[..])
        .clone();
    client.command(&cmd).await.map(|_| ())
}

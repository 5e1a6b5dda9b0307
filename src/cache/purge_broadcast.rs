//! Purges reach every corvid instance that shares the Redis.
//!
//! Redis is shared, but each instance's memory and disk tiers are its own: a purge on one
//! instance removes the object from Redis and from that instance only. So after purging, the
//! instance publishes the purge on a Redis pub/sub channel, and every instance runs one
//! subscriber that applies what others publish to its own memory and disk (not to Redis: the
//! publisher did that already).
//!
//! - **Channel:** `<cache.redis.key_prefix>purge` (e.g. `corvid:purge`), so deployments that
//!   keep apart by key prefix also keep their purges apart.
//! - **Message:** `corvid-purge/1 \0 <instance tag, hex> \0 <kind> \0 <fields>`, kind `k`
//!   (one cache key: the rest is the raw key, which may itself hold NULs), `o` (bucket \0
//!   object key), `p` (bucket \0 key prefix) or `a` (everything). Bucket names and object keys
//!   never contain NUL (config and router refuse it), so the fields split unambiguously. A
//!   subscriber ignores its own instance's messages and anything it cannot decode (a newer
//!   version's message is logged and skipped, never half-applied).
//! - **Delivery** is Redis pub/sub's: at most once, and only to instances subscribed at that
//!   moment ([`crate::cache::redis::subscribe`] logs the subscription's losses and
//!   recoveries). An instance that misses a purge serves its copy until the entry's TTL, as it
//!   would without Redis; the publisher's answer reports how many instances received it.

use std::sync::Arc;

use bytes::Bytes;

use crate::cache::purge::{purge, Purged, Scope};
use crate::cache::redis::RedisClient;
use crate::cache::tiered::Tiers;

const MAGIC: &[u8] = b"corvid-purge/1";

/// The channel for purges among instances using `key_prefix`.
pub fn channel(key_prefix: &str) -> String {
    format!("{key_prefix}purge")
}

/// The message announcing that `instance` purged `scope`.
pub fn encode(instance: u32, scope: &Scope) -> Vec<u8> {
    let mut m = Vec::with_capacity(64);
    m.extend_from_slice(MAGIC);
    m.push(0);
    m.extend_from_slice(format!("{instance:08x}").as_bytes());
    m.push(0);
    match scope {
        Scope::Key(k) => {
            m.extend_from_slice(b"k\0");
            m.extend_from_slice(k);
        }
        Scope::Object { bucket, key } => fields(&mut m, b'o', bucket, key),
        Scope::Prefix { bucket, prefix } => fields(&mut m, b'p', bucket, prefix),
        Scope::All => m.extend_from_slice(b"a\0"),
    }
    m
}

fn fields(m: &mut Vec<u8>, kind: u8, a: &str, b: &str) {
    m.extend_from_slice(&[kind, 0]);
    m.extend_from_slice(a.as_bytes());
    m.push(0);
    m.extend_from_slice(b.as_bytes());
}

/// The publishing instance and the scope of a message; `None` when it is not one (or not of
/// this version).
pub fn decode(msg: &[u8]) -> Option<(u32, Scope)> {
    let rest = msg.strip_prefix(MAGIC)?.strip_prefix(b"\0")?;
    let (instance, rest) = split_nul(rest)?;
    let instance = u32::from_str_radix(std::str::from_utf8(instance).ok()?, 16).ok()?;
    let (kind, rest) = split_nul(rest)?;
    let two = |rest: &[u8]| -> Option<(String, String)> {
        let (a, b) = split_nul(rest)?;
        let text = |s: &[u8]| String::from_utf8(s.to_vec()).ok();
        let b = text(b).filter(|b| !b.contains('\0'))?;
        Some((text(a)?, b))
    };
    let scope = match kind {
        b"k" if !rest.is_empty() => Scope::Key(rest.to_vec()),
        b"o" => {
            let (bucket, key) = two(rest)?;
            Scope::Object { bucket, key }
        }
        b"p" => {
            let (bucket, prefix) = two(rest)?;
            Scope::Prefix { bucket, prefix }
        }
        b"a" if rest.is_empty() => Scope::All,
        _ => return None,
    };
    Some((instance, scope))
}

fn split_nul(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let i = b.iter().position(|&c| c == 0)?;
    Some((&b[..i], &b[i + 1..]))
}

/// What a purge did here, and how many other instances heard of it.
#[derive(Debug)]
pub struct Broadcast {
    pub purged: Purged,
    /// Subscribers that received the announcement (this instance's own included); `None` when
    /// there is no Redis tier or the publish failed.
    pub receivers: Option<u64>,
}

/// Purges `scope` here (memory, disk, Redis) and announces it to the other instances.
pub async fn purge_everywhere(
    tiers: &Arc<Tiers>,
    redis: Option<&RedisClient>,
    key_prefix: &str,
    instance: u32,
    scope: &Scope,
) -> Broadcast {
    let purged = purge(tiers, redis, scope).await;
    let receivers = match redis {
        None => None,
        Some(client) => {
            let msg = encode(instance, scope);
            match client.publish(&channel(key_prefix), &msg).await {
                Ok(n) => Some(n),
                Err(e) => {
                    log::warn!("purge not announced to other instances: {e}");
                    None
                }
            }
        }
    };
    Broadcast { purged, receivers }
}

/// Applies another instance's announced purge to this instance's memory and disk tiers.
/// Returns what it removed, or `None` for this instance's own messages and undecodable ones.
pub async fn apply(tiers: &Arc<Tiers>, instance: u32, msg: Bytes) -> Option<Purged> {
    let Some((from, scope)) = decode(&msg) else {
        log::warn!(
            "ignoring a message on the purge channel that is not a corvid-purge/1 purge ({} bytes)",
            msg.len()
        );
        return None;
    };
    if from == instance {
        return None;
    }
    let purged = purge(tiers, None, &scope).await;
    log::debug!("applied instance {from:08x}'s purge of {scope:?}: {purged:?}");
    Some(purged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scope_round_trips() {
        let scopes = [
            Scope::Key(b"img\0a/b\0versionId=3".to_vec()),
            Scope::Object {
                bucket: "img".into(),
                key: "dir/caf\u{e9} *?[x].png".into(),
            },
            Scope::Prefix {
                bucket: "img".into(),
                prefix: "".into(),
            },
            Scope::Prefix {
                bucket: "b".into(),
                prefix: "a\\b/".into(),
            },
            Scope::All,
        ];
        for s in scopes {
            assert_eq!(decode(&encode(0xdead_beef, &s)), Some((0xdead_beef, s)));
        }
    }

    #[test]
    fn foreign_and_malformed_messages_are_refused() {
        for bad in [
            &b""[..],
            b"hello",
            b"corvid-purge/2\x00000000001\0a\0",
            b"corvid-purge/1\0zz\0a\0",
            b"corvid-purge/1\x0000000001\0x\0",
            b"corvid-purge/1\x0000000001\0k\0",
            b"corvid-purge/1\x0000000001\0a\0extra",
            b"corvid-purge/1\x0000000001\0o\0only-bucket",
            b"corvid-purge/1\x0000000001\0o\0b\0k\0more",
            b"corvid-purge/1\x0000000001\0o\0\xff\0k",
        ] {
            assert_eq!(decode(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}

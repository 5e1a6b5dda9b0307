//! Purges reach every corvid instance that shares the Redis.
//!
//! Redis is shared, but each instance's memory and disk tiers are its own: a purge on one
//! instance removes the object from Redis and from that instance only. So after purging, the
//! instance publishes the purge on a Redis pub/sub channel, and every instance runs one
//! subscriber ([`listen`]) that applies what others publish to its own memory and disk (not to Redis: the
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
//! - **Soft purges** (entries marked stale, [`crate::cache::purge::Mode::Soft`]) are sent as
//!   `corvid-purge/2 \0 <instance> \0 <mode> \0 <kind> \0 <fields>`, mode `s` (soft) or
//!   `h` (hard; decoded, never sent). Hard purges are still sent as `corvid-purge/1`, byte for
//!   byte as before, so instances of an older version keep applying them during a rolling
//!   upgrade; such an instance skips (and logs) a soft purge — serving its copies as fresh
//!   until their TTL, as it would if it had missed the message — rather than applying it as
//!   a hard one. A `/1` message always decodes as a hard purge.
//! - **Delivery** is Redis pub/sub's: at most once, and only to instances subscribed at that
//!   moment ([`crate::cache::redis::subscribe`] logs the subscription's losses and
//!   recoveries). An instance that misses a purge serves its copy until the entry's TTL, as it
//!   would without Redis; the publisher's answer reports how many instances received it.

use std::sync::Arc;

use bytes::Bytes;

use crate::cache::purge::{purge_as, Mode, Purged, Scope};
use crate::cache::redis::{subscribe_with, RedisClient, RedisOptions, StopSignal};
use crate::cache::tiered::Tiers;

const MAGIC: &[u8] = b"corvid-purge/1";
/// Messages with a mode field (soft purges).
const MAGIC_V2: &[u8] = b"corvid-purge/2";

/// The channel for purges among instances using `key_prefix`.
pub fn channel(key_prefix: &str) -> String {
    format!("{key_prefix}purge")
}

/// The message announcing that `instance` purged `scope` (hard).
pub fn encode(instance: u32, scope: &Scope) -> Vec<u8> {
    encode_as(instance, scope, Mode::Hard)
}

/// The message announcing that `instance` purged `scope` in `mode`: a `/1` message for a
/// hard purge, a `/2` one for a soft purge (see the module docs).
pub fn encode_as(instance: u32, scope: &Scope, mode: Mode) -> Vec<u8> {
    let mut m = Vec::with_capacity(64);
    m.extend_from_slice(if mode.is_soft() { MAGIC_V2 } else { MAGIC });
    m.push(0);
    m.extend_from_slice(format!("{instance:08x}").as_bytes());
    m.push(0);
    if mode.is_soft() {
        m.extend_from_slice(b"s\0");
    }
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

/// The publishing instance and the scope of a hard-purge message; `None` when it is not one
/// (see [`decode_as`] for every message).
pub fn decode(msg: &[u8]) -> Option<(u32, Scope)> {
    match decode_as(msg)? {
        (instance, scope, Mode::Hard) => Some((instance, scope)),
        _ => None,
    }
}

/// The publishing instance, scope and mode of a message; `None` when it is not one (or of a
/// version this one does not know). `/1` messages are hard purges.
pub fn decode_as(msg: &[u8]) -> Option<(u32, Scope, Mode)> {
    let (v2, rest) = match msg.strip_prefix(MAGIC) {
        Some(rest) => (false, rest),
        None => (true, msg.strip_prefix(MAGIC_V2)?),
    };
    let rest = rest.strip_prefix(b"\0")?;
    let (instance, rest) = split_nul(rest)?;
    let instance = u32::from_str_radix(std::str::from_utf8(instance).ok()?, 16).ok()?;
    let (mode, rest) = if v2 {
        match split_nul(rest)? {
            (b"s", rest) => (Mode::Soft, rest),
            (b"h", rest) => (Mode::Hard, rest),
            _ => return None,
        }
    } else {
        (Mode::Hard, rest)
    };
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
    Some((instance, scope, mode))
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
    purge_everywhere_as(tiers, redis, key_prefix, instance, scope, Mode::Hard).await
}

/// [`purge_everywhere`] with a [`Mode`]: a soft purge marks the entries stale here and in
/// Redis, and every other instance marks its own memory and disk copies.
pub async fn purge_everywhere_as(
    tiers: &Arc<Tiers>,
    redis: Option<&RedisClient>,
    key_prefix: &str,
    instance: u32,
    scope: &Scope,
    mode: Mode,
) -> Broadcast {
    let purged = purge_as(tiers, redis, scope, mode).await;
    let receivers = match redis {
        None => None,
        Some(client) => {
            let msg = encode_as(instance, scope, mode);
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

/// Applies another instance's announced purge (hard or soft) to this instance's memory and
/// disk tiers. Returns what it removed or marked, or `None` for this instance's own messages
/// and undecodable ones.
pub async fn apply(tiers: &Arc<Tiers>, instance: u32, msg: Bytes) -> Option<Purged> {
    let Some((from, scope, mode)) = decode_as(&msg) else {
        log::warn!(
            "ignoring a message on the purge channel that is not a corvid-purge/1 or /2 purge ({} bytes)",
            msg.len()
        );
        return None;
    };
    if from == instance {
        return None;
    }
    let purged = purge_as(tiers, None, &scope, mode).await;
    log::debug!("applied instance {from:08x}'s {mode:?} purge of {scope:?}: {purged:?}");
    Some(purged)
}

/// The subscriber: applies the purges other instances announce on `key_prefix`'s channel to
/// `tiers` (see [`apply`]) until `stop` is set. Each message is applied in its own task, so a
/// long purge does not hold up the next message. One subscriber per process is enough, since
/// every worker shares the tiers it purges (the runtime runs it on worker 0). Run it as a
/// monoio task.
///
/// Purges announced while the subscription was down were missed (pub/sub keeps nothing for
/// an absent subscriber): when it is back, every local entry (memory and disk) is soft-purged
/// ([`Mode::Soft`]), so each is revalidated with the origin on its next request (a 304 keeps
/// the body) instead of served, possibly purged elsewhere, until its TTL.
pub async fn listen(tiers: Arc<Tiers>, opts: RedisOptions, instance: u32, stop: StopSignal) {
    let channel = channel(&opts.key_prefix);
    let on_message = {
        let tiers = Arc::clone(&tiers);
        move |msg| {
            let tiers = Arc::clone(&tiers);
            monoio::spawn(async move {
                apply(&tiers, instance, msg).await;
            });
        }
    };
    let on_resubscribed = move || {
        let tiers = Arc::clone(&tiers);
        monoio::spawn(async move {
            let p = purge_as(&tiers, None, &Scope::All, Mode::Soft).await;
            log::warn!(
                "purge subscription was down: {} local entries marked stale (purges may have been missed)",
                p.entries()
            );
        });
    };
    subscribe_with(opts, channel, on_message, on_resubscribed, stop).await
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
            let soft = encode_as(0xdead_beef, &s, Mode::Soft);
            assert!(soft.starts_with(b"corvid-purge/2\0deadbeef\0s\0"));
            assert_eq!(decode_as(&soft), Some((0xdead_beef, s.clone(), Mode::Soft)));
            // A soft purge is not a hard one to a reader of hard purges only.
            assert_eq!(decode(&soft), None);
            let hard = encode(0xdead_beef, &s);
            // Hard purges stay version-1 messages, readable by older instances.
            assert_eq!(hard, encode_as(0xdead_beef, &s, Mode::Hard));
            assert!(hard.starts_with(b"corvid-purge/1\0"));
            assert_eq!(decode_as(&hard), Some((0xdead_beef, s.clone(), Mode::Hard)));
            assert_eq!(decode(&hard), Some((0xdead_beef, s)));
        }
        // A version-2 hard purge (never sent, accepted) and a version-1 message as before.
        assert_eq!(
            decode_as(b"corvid-purge/2\x0000000001\0h\0a\0"),
            Some((1, Scope::All, Mode::Hard))
        );
        assert_eq!(
            decode_as(b"corvid-purge/1\x0000000001\0a\0"),
            Some((1, Scope::All, Mode::Hard))
        );
    }

    #[test]
    fn foreign_and_malformed_messages_are_refused() {
        for bad in [
            &b""[..],
            b"hello",
            b"corvid-purge/3\x00000000001\0a\0",
            b"corvid-purge/2\x0000000001\0a\0",
            b"corvid-purge/2\x0000000001\0x\0a\0",
            b"corvid-purge/2\x0000000001\0s\0",
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

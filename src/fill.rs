//! Filling the cache from the origin while the client (and any coalesced followers) receive the
//! bytes as they arrive.
//!
//! The leader reads the origin body into one buffer sized from `Content-Length` (the future
//! cache entry, so the body is copied once per fill, not per request), hands each new piece to
//! its followers and its own client, and when the body is complete stores the entry in every
//! tier before passing on the last piece and announcing the end (so whatever a client sends
//! after receiving its answer finds the entry cached).
//! If the leader's client goes away mid-body, the fill goes on: followers and the cache still
//! want the object.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use monoio::io::{AsyncWriteRent, AsyncWriteRentExt};

use crate::cache::entry::{CachedObject, Meta};
use crate::cache::inflight::{Event, Leader, Role, Subscription};
use crate::cache::policy;
use crate::cache::purge::Scope;
use crate::cache::purge_broadcast;
use crate::cache::redis::RedisClient;
use crate::cache::redis_tier;
use crate::cache::tiered::{Hit, Layer};
use crate::config::WritePolicy;
use crate::error::{Error, Kind};
use crate::http::conditional::Precondition;
use crate::http::conn::Sent;
use crate::http::response::{end_head, write_header_u64, UpstreamHead};
use crate::proxy::{
    client_precondition, drain_error_body, fetch_origin, now_ms, respond_upstream, send_with_head,
    stored_headers, write_object_head, Exchange, Target, XCache,
};
use crate::revalidate::{confirmed, if_none_match, rejected};
use crate::runtime::worker::Worker;
use crate::runtime::worker::MAX_REDIS_BEHIND;
use crate::s3::client::Body;

/// Leads the fill of a missing key: one origin GET for everyone who asks meanwhile.
pub async fn lead<S: AsyncWriteRent>(
    x: &mut Exchange<'_, '_, S>,
    t: &Target<'_>,
    leader: Leader<'_>,
) -> Result<Sent, Error> {
    match fetch_origin(x.w, x.bucket, false, t.key, t.params, &[]).await {
        Ok((head, body)) => fill_from(x, t, head, body, Some(leader)).await,
        Err(e) => {
            leader.fail(e.clone());
            Err(e)
        }
    }
}

/// What the client is sent while the body streams into the cache.
enum ClientPlan {
    /// Status line + head written; body follows.
    Body,
    /// A 304 or a HEAD: the head alone.
    HeadOnly,
    /// Nothing more (the client got an error answer, or went away).
    Nothing,
}

/// Stores an origin 200 answer in the cache while streaming it to the client; any other answer
/// (or an uncacheable 200) is passed through and, for a leader, shared with its followers as
/// an error or a bypass.
pub async fn fill_from<S: AsyncWriteRent>(
    x: &mut Exchange<'_, '_, S>,
    t: &Target<'_>,
    head: UpstreamHead,
    mut body: Body,
    leader: Option<Leader<'_>>,
) -> Result<Sent, Error> {
    let (w, req, bucket, ckey) = (x.w, x.req, x.bucket, t.ckey);
    if head.status != 200 {
        let e = crate::origin_error::read_and_map(w, bucket, &head, body).await;
        if let Some(l) = leader {
            l.fail(e.clone());
        }
        return Err(e);
    }
    let Some((meta, len)) = cacheable(w, bucket, &head, &body) else {
        if let Some(l) = leader {
            l.bypass();
        }
        return respond_upstream(x, head, body, XCache::Miss).await;
    };
    if let Some(l) = &leader {
        l.head(Arc::clone(&meta), len);
    }

    // The client's own preconditions are evaluated against what the origin just sent.
    let mut status = 200;
    let mut plan = match client_precondition(req, &meta) {
        Precondition::Failed => {
            status = 412;
            let e = Error::client(
                Kind::PreconditionFailed,
                "a precondition of the request failed",
            );
            let _ = x.error(&e).await;
            ClientPlan::Nothing
        }
        Precondition::NotModified => {
            status = 304;
            ClientPlan::HeadOnly
        }
        Precondition::Proceed if req.is_head() => ClientPlan::HeadOnly,
        Precondition::Proceed => ClientPlan::Body,
    };
    if !matches!(plan, ClientPlan::Nothing) {
        write_object_head(x, status, &meta, XCache::Miss, None);
        if status == 200 {
            write_header_u64(x.out, "Content-Length", len);
        }
        end_head(x.out);
        if matches!(plan, ClientPlan::HeadOnly) || len == 0 {
            // The head is the whole answer (a 304, a HEAD, an empty object): nothing more to
            // send whatever the flush did.
            let _ = x.flush().await;
            plan = ClientPlan::Nothing;
        }
    }

    let mut all: Vec<u8> = Vec::with_capacity(len as usize);
    let mut stored = false;
    while !stored && !body.is_done() {
        let start = all.len();
        let (res, a) = body.read_into(all).await;
        all = a;
        let n = match res {
            Ok(0) => break,
            Ok(n) => {
                w.metrics().upstream_bytes(bucket, n as u64);
                n
            }
            Err(e) => {
                log::warn!(
                    "request {}: filling from the origin failed: {e}",
                    req.id.as_str()
                );
                if let Some(l) = leader {
                    l.fail(e);
                }
                return Ok(Sent {
                    status,
                    abort: true,
                });
            }
        };
        let chunk = Bytes::copy_from_slice(&all[start..start + n]);
        if all.len() as u64 == len {
            // Stored before the client gets its last bytes, so that whatever the client
            // sends after this answer finds the entry (on any worker, in any tier written
            // through).
            let body = Bytes::from(std::mem::take(&mut all));
            let obj = CachedObject {
                meta: Arc::clone(&meta),
                body,
            };
            store_everywhere(w, ckey, obj, t.generation).await;
            stored = true;
        }
        if let Some(l) = &leader {
            l.chunk(chunk.clone());
        }
        if matches!(plan, ClientPlan::Body) && send_chunk(x, chunk).await.is_err() {
            // The client went away; the fill goes on for the cache and the followers.
            plan = ClientPlan::Nothing;
        }
    }
    if len == 0 {
        let empty = CachedObject {
            meta,
            body: Bytes::new(),
        };
        store_everywhere(w, ckey, empty, t.generation).await;
    } else if !stored {
        if let Some(l) = leader {
            l.fail(Error::upstream(
                Kind::BadGateway,
                "the origin sent a short body",
            ));
        }
        return Ok(Sent {
            status,
            abort: true,
        });
    }
    if !x.out.is_empty() && matches!(plan, ClientPlan::Body) && x.flush().await.is_err() {
        plan = ClientPlan::Nothing;
    }
    if let Some(l) = leader {
        l.end();
    }
    let client_done =
        matches!(plan, ClientPlan::Body) || status != 200 || len == 0 || req.is_head();
    Ok(Sent {
        status,
        abort: !client_done,
    })
}

/// How long an object of `len` bytes answered with `head` may be cached: `None` when its
/// `Cache-Control` forbids storing it or it exceeds `cache.max_object_size`.
pub fn storable_for(w: &Worker, bucket: usize, head: &UpstreamHead, len: u64) -> Option<Duration> {
    if len > w.shared.tiers.max_object_size {
        return None;
    }
    policy::freshness(head.header("cache-control"), w.shared.config.ttl(bucket))
}

/// The entry's metadata and length when this 200 answer may be cached.
pub fn cacheable(
    w: &Worker,
    bucket: usize,
    head: &UpstreamHead,
    body: &Body,
) -> Option<(Arc<Meta>, u64)> {
    let len = body.content_length()?;
    let ttl = storable_for(w, bucket, head, len)?;
    let now = now_ms();
    let meta = Meta::new(stored_headers(head), now, now + ttl.as_millis() as u64);
    Some((Arc::new(meta), len))
}

/// A first piece of body at most this large is copied behind the pending head and sent in
/// one write; a larger one (a whole revalidated object) goes out with the head in one
/// vectored write instead, uncopied.
const COPY_WITH_HEAD: usize = 16 * 1024;

/// Sends one piece of body: the first one together with the pending head in `out`.
async fn send_chunk<S: AsyncWriteRent>(
    x: &mut Exchange<'_, '_, S>,
    chunk: Bytes,
) -> std::io::Result<()> {
    if !x.out.is_empty() {
        if chunk.len() > COPY_WITH_HEAD {
            return send_with_head(x.w, x.io, x.out, chunk).await;
        }
        x.out.extend_from_slice(&chunk);
        return x.flush().await;
    }
    let send_timeout = x.w.shared.config.server.send_timeout;
    match monoio::time::timeout(send_timeout, x.io.write_all(chunk)).await {
        Ok((r, _)) => r.map(|_| ()),
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "client did not read in time",
        )),
    }
}

/// Follows another request's fill: the same head, then the chunks as they arrive. `None` means
/// the answer will not be cached and the caller must make its own request.
pub async fn follow<S: AsyncWriteRent>(
    x: &mut Exchange<'_, '_, S>,
    mut sub: Subscription,
) -> Option<Result<Sent, Error>> {
    let req = x.req;
    let (meta, len, revalidated) = match sub.next_event().await {
        Event::Head {
            meta,
            len,
            revalidated,
        } => (meta, len, revalidated),
        Event::Failed(e) => return Some(Err(e)),
        Event::Bypass => return None,
        Event::Chunk(_) | Event::End => {
            return Some(Err(Error::internal(
                "a fill published body bytes before its head",
            )))
        }
    };
    let status = match client_precondition(req, &meta) {
        Precondition::Failed => {
            return Some(Err(Error::client(
                Kind::PreconditionFailed,
                "a precondition of the request failed",
            )))
        }
        Precondition::NotModified => 304,
        Precondition::Proceed => 200,
    };
    let xcache = if revalidated {
        XCache::Revalidated
    } else {
        XCache::Miss
    };
    write_object_head(x, status, &meta, xcache, None);
    if status == 200 {
        write_header_u64(x.out, "Content-Length", len);
    }
    end_head(x.out);
    if status == 304 || req.is_head() || len == 0 {
        let abort = x.flush().await.is_err();
        return Some(Ok(Sent { status, abort }));
    }
    let abort = loop {
        match sub.next_event().await {
            Event::Chunk(c) => {
                if send_chunk(x, c).await.is_err() {
                    break true;
                }
            }
            Event::End => break false,
            Event::Failed(e) => {
                log::warn!(
                    "request {}: the fill it followed failed: {e}",
                    req.id.as_str()
                );
                break true;
            }
            Event::Head { .. } | Event::Bypass => break true,
        }
    };
    Some(Ok(Sent { status, abort }))
}

/// Fetches a key into the cache in a background task, unless a fill or revalidation of it is
/// already running somewhere in the process: with `stale`, a revalidation of that entry (a
/// stale-while-revalidate refresh); without, a fill of the whole object (after a Range miss).
/// The task leads the key in the coalescing table, so requests that need the object meanwhile
/// follow it; having no client to stream to, it reads the body whole before publishing it.
pub fn fill_in_background(
    w: &Rc<Worker>,
    bucket: usize,
    t: &Target<'_>,
    stale: Option<CachedObject>,
) {
    if w.shared.tiers.inflight.contains(t.ckey) {
        return;
    }
    let owned: Vec<(String, String)> = t
        .params
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    let (w, key, ckey, since) = (
        Rc::clone(w),
        t.key.to_string(),
        t.ckey.to_vec(),
        t.generation,
    );
    monoio::spawn(async move {
        let params: Vec<(&str, &str)> = owned.iter().map(|(n, v)| (&n[..], &v[..])).collect();
        let tiers = Arc::clone(&w.shared.tiers);
        // Another request may have started one since the check above.
        let Role::Leader(leader) = tiers.inflight.join(&ckey) else {
            return;
        };
        let t = Target {
            key: &key,
            params: &params,
            ckey: &ckey,
            generation: since,
        };
        let cond = stale.as_ref().map(if_none_match).unwrap_or_default();
        match (
            fetch_origin(&w, bucket, false, &key, &params, &cond).await,
            &stale,
        ) {
            (Ok((head, body)), Some(stale)) if head.status == 304 => {
                confirmed(&w, bucket, &t, stale, &head, body, Some(leader)).await;
            }
            (Ok((head, body)), _) if head.status == 200 => {
                match read_whole(&w, bucket, &head, body).await {
                    Ok(Some(obj)) => {
                        store_everywhere(&w, &ckey, obj.clone(), since).await;
                        leader.complete(obj.meta, obj.body, false);
                    }
                    Ok(None) => leader.bypass(),
                    Err(e) => leader.fail(e),
                }
            }
            (Ok((head, body)), _) => leader.fail(rejected(&w, bucket, &ckey, &head, body).await),
            (Err(e), _) => {
                log::warn!("background fill of a cache entry failed: {e}");
                leader.fail(e);
            }
        }
    });
}

/// Reads a cacheable 200 answer whole (no client waits on it). `None` when it may not be
/// cached; an error when the body ends short.
async fn read_whole(
    w: &Worker,
    bucket: usize,
    head: &UpstreamHead,
    mut body: Body,
) -> Result<Option<CachedObject>, Error> {
    let Some((meta, len)) = cacheable(w, bucket, head, &body) else {
        drain_error_body(body).await;
        return Ok(None);
    };
    let mut all = Vec::with_capacity(len as usize);
    while !body.is_done() {
        let (res, a) = body.read_into(all).await;
        all = a;
        match res {
            Ok(n) if n > 0 => w.metrics().upstream_bytes(bucket, n as u64),
            Ok(_) => break,
            Err(e) => return Err(e),
        }
    }
    if all.len() as u64 != len {
        return Err(Error::upstream(
            Kind::BadGateway,
            "the origin sent a short body",
        ));
    }
    Ok(Some(CachedObject {
        meta,
        body: Bytes::from(all),
    }))
}

/// Stores a filled object in the shared tiers and in Redis (awaited with write-through,
/// in the background with write-behind) — unless a purge began after `since`, the purge
/// generation the bytes were fetched in (see [`crate::cache::tiered::Tiers::generation`]).
pub async fn store_everywhere(w: &Rc<Worker>, ckey: &[u8], obj: CachedObject, since: u64) {
    if !w.shared.tiers.store(ckey, obj.clone(), since) {
        return;
    }
    let Some(client) = w.redis.clone() else {
        return;
    };
    let cache = &w.shared.config.cache;
    let Some(rcfg) = cache.redis.as_ref() else {
        return;
    };
    let (max, retain, now) = (rcfg.max_object_size, redis_tier::retain(cache), now_ms());
    match cache.write_policy {
        WritePolicy::WriteThrough => {
            let stored = redis_tier::store(&client, ckey, &obj, max, retain, now).await;
            redis_stored(w, &client, ckey, stored, since).await;
        }
        WritePolicy::WriteBehind => {
            if w.redis_behind.get() >= MAX_REDIS_BEHIND {
                w.metrics().cache_error(Layer::Redis);
                return;
            }
            w.redis_behind.set(w.redis_behind.get() + 1);
            let (w, key) = (Rc::clone(w), ckey.to_vec());
            monoio::spawn(async move {
                if w.shared.tiers.generation() == since {
                    let stored = redis_tier::store(&client, &key, &obj, max, retain, now).await;
                    redis_stored(&w, &client, &key, stored, since).await;
                }
                w.redis_behind.set(w.redis_behind.get() - 1);
            });
        }
    }
}

/// After a Redis write: counts a failure, and deletes the key again when a purge began while
/// the write was on its way (the purge's own walk may have run before the write landed).
async fn redis_stored<E>(
    w: &Worker,
    client: &RedisClient,
    ckey: &[u8],
    stored: Result<(), E>,
    since: u64,
) {
    let failed = match stored {
        Err(_) => true,
        Ok(()) => w.shared.tiers.generation() != since && client.del(ckey).await.is_err(),
    };
    if failed {
        w.metrics().cache_error(Layer::Redis);
    }
}

/// A revalidated object: new freshness everywhere, body untouched (unless a purge began after
/// `since`, as for [`store_everywhere`]).
pub async fn refresh_everywhere(w: &Rc<Worker>, ckey: &[u8], obj: CachedObject, since: u64) {
    w.shared.tiers.refresh(ckey, obj.clone(), since);
    if let Some(client) = &w.redis {
        if w.shared.tiers.generation() != since {
            return;
        }
        let retain = redis_tier::retain(&w.shared.config.cache);
        let refreshed = redis_tier::refresh(client, ckey, &obj, retain, now_ms()).await;
        redis_stored(w, client, ckey, refreshed, since).await;
    }
}

/// Removes a key from every tier and every instance sharing the Redis (the origin said 404):
/// exactly this key, not the object's other variants (a 404 for one `versionId` says nothing
/// about the others).
pub async fn remove_everywhere(w: &Rc<Worker>, ckey: &[u8]) {
    let scope = Scope::Key(ckey.to_vec());
    let (tiers, redis) = (&w.shared.tiers, w.redis.as_ref());
    let tag = w.shared.instance_tag;
    let done = purge_broadcast::purge_everywhere(tiers, redis, &w.redis_prefix, tag, &scope).await;
    if done.purged.redis.failed() {
        w.metrics().cache_error(Layer::Redis);
    }
}

/// Looks a key up in Redis (after memory and disk missed) and promotes a hit (unless a purge
/// began after `since`).
pub async fn redis_lookup(w: &Rc<Worker>, ckey: &[u8], since: u64) -> Option<Hit> {
    let client = w.redis.as_ref()?;
    let retain = redis_tier::retain(&w.shared.config.cache);
    match redis_tier::lookup(client, &w.redis_prefix, ckey, retain, now_ms()).await {
        Ok(Some(obj)) => {
            w.shared.tiers.store(ckey, obj.clone(), since);
            Some(Hit {
                obj,
                layer: Layer::Redis,
            })
        }
        Ok(None) => None,
        Err(_) => {
            w.metrics().cache_error(Layer::Redis);
            None
        }
    }
}

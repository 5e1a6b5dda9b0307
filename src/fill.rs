//! Filling the cache from the origin while the client (and any coalesced followers) receive the
//! bytes as they arrive.
//!
//! The leader reads the origin body into one buffer sized from `Content-Length` (the future
//! cache entry, so the body is copied once per fill, not per request), hands each new piece to
//! its followers and its own client, and when the body is complete stores the entry in every
//! tier before announcing the end (so a request arriving then finds it cached).
//! If the leader's client goes away mid-body, the fill goes on: followers and the cache still
//! want the object.

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use monoio::io::{AsyncWriteRent, AsyncWriteRentExt};

use crate::cache::entry::{CachedObject, Meta};
use crate::cache::inflight::{Event, Leader, Subscription};
use crate::cache::policy;
use crate::cache::purge::{self, Scope};
use crate::cache::redis_tier;
use crate::cache::tiered::{Hit, Layer};
use crate::config::WritePolicy;
use crate::error::{Error, Kind};
use crate::http::conditional::{self, Precondition};
use crate::http::conn::{Request, Sent};
use crate::http::respond;
use crate::http::response::{end_head, write_header_u64, UpstreamHead};
use crate::proxy::{
    client_conditionals, drain_error_body, fetch_origin, map_origin_status, now_ms,
    respond_upstream, stored_headers, write_object_head, XCache,
};
use crate::runtime::worker::Worker;
use crate::runtime::worker::MAX_REDIS_BEHIND;
use crate::s3::client::Body;

/// Leads the fill of a missing key: one origin GET for everyone who asks meanwhile.
#[allow(clippy::too_many_arguments)]
pub async fn lead<S: AsyncWriteRent>(
    w: &Rc<Worker>,
    io: &mut S,
    out: &mut Vec<u8>,
    req: &Request<'_>,
    bucket: usize,
    key: &str,
    params: &[(String, String)],
    ckey: &[u8],
    leader: Leader<'_>,
) -> Result<Sent, Error> {
    match fetch_origin(w, bucket, false, key, params, &[]).await {
        Ok((head, body)) => {
            fill_from(w, io, out, req, bucket, ckey, head, body, Some(leader)).await
        }
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
#[allow(clippy::too_many_arguments)]
pub async fn fill_from<S: AsyncWriteRent>(
    w: &Rc<Worker>,
    io: &mut S,
    out: &mut Vec<u8>,
    req: &Request<'_>,
    bucket: usize,
    ckey: &[u8],
    head: UpstreamHead,
    mut body: Body,
    leader: Option<Leader<'_>>,
) -> Result<Sent, Error> {
    if head.status != 200 {
        let e = map_origin_status(head.status);
        drain_error_body(body).await;
        if let Some(l) = leader {
            l.fail(e.clone());
        }
        return Err(e);
    }
    let Some((meta, len)) = cacheable(w, bucket, &head, &body) else {
        if let Some(l) = leader {
            l.bypass();
        }
        return respond_upstream(w, io, out, req, bucket, head, body, XCache::Miss).await;
    };
    if let Some(l) = &leader {
        l.head(Arc::clone(&meta), len);
    }

    // The client's own preconditions are evaluated against what the origin just sent.
    let mut status = 200;
    let mut plan =
        match conditional::evaluate(&client_conditionals(req), meta.etag(), meta.last_modified()) {
            Precondition::Failed => {
                status = 412;
                let e = Error::client(
                    Kind::PreconditionFailed,
                    "a precondition of the request failed",
                );
                let _ = respond::error(w, io, out, req.id, req.close, req.is_head(), &e).await;
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
        write_object_head(w, out, req, bucket, status, &meta, XCache::Miss, None);
        if status == 200 {
            write_header_u64(out, "Content-Length", len);
        }
        end_head(out);
        if matches!(plan, ClientPlan::HeadOnly) || len == 0 {
            // The head is the whole answer (a 304, a HEAD, an empty object): nothing more to
            // send whatever the flush did.
            let _ = respond::flush(w, io, out).await;
            plan = ClientPlan::Nothing;
        }
    }

    let mut all: Vec<u8> = Vec::with_capacity(len as usize);
    while !body.is_done() {
        let start = all.len();
        let (res, a) = body.read_into(all).await;
        all = a;
        let n = match res {
            Ok(0) => break,
            Ok(n) => n,
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
        if let Some(l) = &leader {
            l.chunk(chunk.clone());
        }
        if matches!(plan, ClientPlan::Body) && send_chunk(w, io, out, chunk).await.is_err() {
            // The client went away; the fill goes on for the cache and the followers.
            plan = ClientPlan::Nothing;
        }
    }
    if all.len() as u64 != len {
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
    if !out.is_empty()
        && matches!(plan, ClientPlan::Body)
        && respond::flush(w, io, out).await.is_err()
    {
        plan = ClientPlan::Nothing;
    }
    store_everywhere(
        w,
        ckey,
        CachedObject {
            meta,
            body: Bytes::from(all),
        },
    )
    .await;
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

/// The entry's metadata and length when this 200 answer may be cached.
pub fn cacheable(
    w: &Worker,
    bucket: usize,
    head: &UpstreamHead,
    body: &Body,
) -> Option<(Arc<Meta>, u64)> {
    let cache = &w.shared.config.cache;
    let configured = w.shared.config.buckets[bucket].ttl.unwrap_or(cache.ttl);
    let ttl = policy::freshness(head.header("cache-control"), configured)?;
    let len = body.content_length()?;
    if len > w.shared.tiers.max_object_size {
        return None;
    }
    let now = now_ms();
    let meta = Meta::new(stored_headers(head), now, now + ttl.as_millis() as u64);
    Some((Arc::new(meta), len))
}

/// Sends one piece of body: the first one together with the pending head in `out`.
async fn send_chunk<S: AsyncWriteRent>(
    w: &Worker,
    io: &mut S,
    out: &mut Vec<u8>,
    chunk: Bytes,
) -> std::io::Result<()> {
    if !out.is_empty() {
        out.extend_from_slice(&chunk);
        return respond::flush(w, io, out).await;
    }
    match monoio::time::timeout(w.shared.config.server.send_timeout, io.write_all(chunk)).await {
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
    w: &Rc<Worker>,
    io: &mut S,
    out: &mut Vec<u8>,
    req: &Request<'_>,
    bucket: usize,
    mut sub: Subscription,
) -> Option<Result<Sent, Error>> {
    let (meta, len) = match sub.next_event().await {
        Event::Head(meta, len) => (meta, len),
        Event::Failed(e) => return Some(Err(e)),
        Event::Bypass => return None,
        Event::Chunk(_) | Event::End => {
            return Some(Err(Error::internal(
                "a fill published body bytes before its head",
            )))
        }
    };
    let status =
        match conditional::evaluate(&client_conditionals(req), meta.etag(), meta.last_modified()) {
            Precondition::Failed => {
                return Some(Err(Error::client(
                    Kind::PreconditionFailed,
                    "a precondition of the request failed",
                )))
            }
            Precondition::NotModified => 304,
            Precondition::Proceed => 200,
        };
    write_object_head(w, out, req, bucket, status, &meta, XCache::Miss, None);
    if status == 200 {
        write_header_u64(out, "Content-Length", len);
    }
    end_head(out);
    if status == 304 || req.is_head() || len == 0 {
        let abort = respond::flush(w, io, out).await.is_err();
        return Some(Ok(Sent { status, abort }));
    }
    loop {
        match sub.next_event().await {
            Event::Chunk(c) => {
                if send_chunk(w, io, out, c).await.is_err() {
                    return Some(Ok(Sent {
                        status,
                        abort: true,
                    }));
                }
            }
            Event::End => {
                return Some(Ok(Sent {
                    status,
                    abort: false,
                }))
            }
            Event::Failed(e) => {
                log::warn!(
                    "request {}: the fill it followed failed: {e}",
                    req.id.as_str()
                );
                return Some(Ok(Sent {
                    status,
                    abort: true,
                }));
            }
            Event::Head(..) | Event::Bypass => {
                return Some(Ok(Sent {
                    status,
                    abort: true,
                }));
            }
        }
    }
}

/// Stores a filled object in the shared tiers and in Redis (awaited with write-through,
/// in the background with write-behind).
pub async fn store_everywhere(w: &Rc<Worker>, ckey: &[u8], obj: CachedObject) {
    w.shared.tiers.store(ckey, obj.clone());
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
            if redis_tier::store(&client, ckey, &obj, max, retain, now)
                .await
                .is_err()
            {
                w.metrics().cache_error(Layer::Redis);
            }
        }
        WritePolicy::WriteBehind => {
            if w.redis_behind.get() >= MAX_REDIS_BEHIND {
                w.metrics().cache_error(Layer::Redis);
                return;
            }
            w.redis_behind.set(w.redis_behind.get() + 1);
            let (w, key) = (Rc::clone(w), ckey.to_vec());
            monoio::spawn(async move {
                if redis_tier::store(&client, &key, &obj, max, retain, now)
                    .await
                    .is_err()
                {
                    w.metrics().cache_error(Layer::Redis);
                }
                w.redis_behind.set(w.redis_behind.get() - 1);
            });
        }
    }
}

/// A revalidated object: new freshness everywhere, body untouched.
pub async fn refresh_everywhere(w: &Rc<Worker>, ckey: &[u8], obj: CachedObject) {
    w.shared.tiers.refresh(ckey, obj.clone());
    if let Some(client) = &w.redis {
        let retain = redis_tier::retain(&w.shared.config.cache);
        if redis_tier::refresh(client, ckey, &obj, retain, now_ms())
            .await
            .is_err()
        {
            w.metrics().cache_error(Layer::Redis);
        }
    }
}

/// Removes a key from every tier (the origin said 404): exactly this key, not the object's other
/// variants (a 404 for one `versionId` says nothing about the others).
pub async fn remove_everywhere(w: &Rc<Worker>, ckey: &[u8]) {
    let scope = Scope::Key(ckey.to_vec());
    if purge::purge(&w.shared.tiers, w.redis.as_ref(), &scope)
        .await
        .redis
        .failed()
    {
        w.metrics().cache_error(Layer::Redis);
    }
}

/// Looks a key up in Redis (after memory and disk missed) and promotes a hit.
pub async fn redis_lookup(w: &Rc<Worker>, ckey: &[u8]) -> Option<Hit> {
    let client = w.redis.as_ref()?;
    let retain = redis_tier::retain(&w.shared.config.cache);
    match redis_tier::lookup(client, &w.redis_prefix, ckey, retain, now_ms()).await {
        Ok(Some(obj)) => {
            w.shared.tiers.store(ckey, obj.clone());
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

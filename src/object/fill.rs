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

use bytes::Bytes;
use monoio::io::AsyncWriteRent;

use super::answer::{client_precondition, write_object_head};
use super::decide;
use super::exchange::{Exchange, Target, XCache};
use super::origin_error;
use super::upstream::{drain_error_body, fetch_origin, respond_upstream, stored_headers};
use crate::cache::entry::{CachedObject, Meta};
use crate::cache::freshness::Freshness;
use crate::cache::inflight::{Event, Leader, Subscription};
use crate::context::Worker;
use crate::error::{Error, Kind};
use crate::http::conditional::Precondition;
use crate::http::conn::Sent;
use crate::http::response::{end_head, write_header_u64, UpstreamHead};
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
    mut leader: Option<Leader<'_>>,
) -> Result<Sent, Error> {
    let (w, req, bucket, ckey) = (x.w, x.req, x.bucket, t.ckey);
    x.note_upstream(&head, XCache::Miss);
    if head.status != 200 {
        let negative = (head.status == 404).then(|| negative_entry(w, bucket, &head));
        let e = origin_error::read_and_map(w, bucket, &head, body).await;
        if let Some(obj) = negative.flatten() {
            w.cache.store(ckey, obj, t.generation).await;
        }
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
            w.cache.store(ckey, obj, t.generation).await;
            stored = true;
        }
        if let Some(l) = &leader {
            l.chunk(chunk.clone());
        }
        if stored {
            // The fill leaves the coalescing table before the client gets its last bytes
            // too: a request the client sends next must find the stored entry, not join
            // this fill as a follower (it would be answered as this miss, X-Cache: MISS).
            if let Some(l) = leader.take() {
                l.end();
            }
        }
        if matches!(plan, ClientPlan::Body) && x.send_chunk(chunk).await.is_err() {
            // The client went away; the fill goes on for the cache and the followers.
            plan = ClientPlan::Nothing;
        }
    }
    if len == 0 {
        let empty = CachedObject {
            meta,
            body: Bytes::new(),
        };
        w.cache.store(ckey, empty, t.generation).await;
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

/// The freshness of an object of `len` bytes answered with `head` (a 200, or a 206 that is
/// part of it), received now: `None` when RFC 9111 forbids storing it
/// ([`super::decide::storable`]) or it exceeds `cache.max_object_size`.
pub fn storable_for(w: &Worker, bucket: usize, head: &UpstreamHead, len: u64) -> Option<Freshness> {
    if len > w.cache.max_object_size() {
        return None;
    }
    let policy = decide::policy(&w.shared.config, bucket);
    decide::storable(head, 200, &policy, w.clock().now_ms()).ok()
}

/// A negative entry for an origin `404` (`cache.negative_ttl`, per bucket `negative_ttl`):
/// no body, no header fields, fresh for the negative TTL (or less, when the 404 itself says
/// so). `None` when negative caching is off or the 404 may not be stored. A storm of requests
/// for a missing key then costs one origin request per negative TTL; purges remove it like
/// any entry, and once it is stale the next request asks the origin again (a 404 has no
/// validators to revalidate with).
fn negative_entry(w: &Worker, bucket: usize, head: &UpstreamHead) -> Option<CachedObject> {
    let policy = decide::policy(&w.shared.config, bucket);
    let f = decide::storable(head, 404, &policy, w.clock().now_ms()).ok()?;
    let meta = Meta::new(Vec::new(), f.age_origin_ms, f.expires_at_ms).with_status(404);
    Some(CachedObject {
        meta: Arc::new(meta),
        body: Bytes::new(),
    })
}

/// The entry's metadata and length when this 200 answer may be cached.
pub fn cacheable(
    w: &Worker,
    bucket: usize,
    head: &UpstreamHead,
    body: &Body,
) -> Option<(Arc<Meta>, u64)> {
    let len = body.content_length()?;
    let f = storable_for(w, bucket, head, len)?;
    let meta = Meta::new(stored_headers(head), f.age_origin_ms, f.expires_at_ms);
    Some((Arc::new(meta), len))
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
                if x.send_chunk(c).await.is_err() {
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

/// A background task's origin answer: a cacheable `200` is read whole, stored and published
/// to the followers of `leader`; anything else is their error (or their bypass).
pub async fn publish_whole(
    w: &Rc<Worker>,
    bucket: usize,
    t: &Target<'_>,
    head: UpstreamHead,
    body: Body,
    leader: Leader<'_>,
) {
    if head.status != 200 {
        leader.fail(rejected(w, bucket, t.ckey, &head, body).await);
        return;
    }
    match read_whole(w, bucket, &head, body).await {
        Ok(Some(obj)) => {
            w.cache.store(t.ckey, obj.clone(), t.generation).await;
            leader.complete(obj.meta, obj.body, false);
        }
        Ok(None) => leader.bypass(),
        Err(e) => leader.fail(e),
    }
}

/// An origin answer that neither confirms nor replaces an entry: a `404` removes the key
/// everywhere (exactly this key: a 404 for one `versionId` says nothing about the others);
/// returns the error for the client.
pub async fn rejected(
    w: &Rc<Worker>,
    bucket: usize,
    ckey: &[u8],
    head: &UpstreamHead,
    body: Body,
) -> Error {
    let e = origin_error::read_and_map(w, bucket, head, body).await;
    if head.status == 404 {
        w.cache.remove_everywhere(ckey).await;
    }
    e
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

//! Filling the cache from the origin while the clients (the one whose request started the fill
//! and any coalesced followers) receive the bytes as they arrive.
//!
//! # A fill runs at the origin's pace
//! A cacheable `200` is read by a task of its own ([`start`], [`run`]) as fast as the origin
//! sends it, into one buffer sized from `Content-Length` (the future cache entry: the body is
//! copied into it once per fill, not per request). Each new piece is published to the
//! coalescing entry (`cache::inflight`), and every client — the one whose request started the
//! fill included — reads the pieces through a subscription of its own, at its own pace
//! ([`follow`]). A slow reader therefore neither slows the fill nor the other readers (Varnish's
//! and nginx's buffered fetch behave the same), and a client that goes away neither aborts the
//! fill nor its followers: the cache still wants the object.
//!
//! Memory: the buffer is the object, and the pieces a reader has not yet written stay while it
//! needs them, so a fill holds at most twice the object while slow readers remain — bounded,
//! since only objects up to `cache.max_object_size` are filled this way (larger ones stream
//! from the origin to their one client with backpressure, [`super::upstream`]).
//!
//! When the body is complete the entry is stored in every tier, then the fill leaves the
//! coalescing table, and only then is its last piece published: whatever a client sends after
//! receiving its whole answer finds the entry, not this fill.
//!
//! # Unknown length
//! A `200` without `Content-Length` (chunked, as some S3-compatible gateways answer, or
//! delimited by the connection's close) that RFC 9111 lets corvid store is streamed to its one
//! client (re-chunked) while a copy is kept, and stored when the body ends within
//! `cache.max_object_size`; a larger body is streamed on and not stored. Requests for the key
//! meanwhile do not wait for it (they make their own request): nothing would bound what such
//! followers hold if the body turned out larger than any entry.

use std::rc::Rc;

use bytes::Bytes;
use monoio::io::AsyncWriteRent;

use super::answer::{client_precondition, write_object_head};
use super::decide;
use super::exchange::{Exchange, Target, XCache};
use super::origin_error;
use super::upstream::{
    drain_error_body, fetch_origin, respond_upstream, respond_upstream_keeping, stored_headers,
    Asked, Keep,
};
use crate::cache::entry::Freshness;
use crate::cache::entry::{CachedObject, Meta};
use crate::cache::inflight::{Event, Leader, Subscription};
use crate::context::Worker;
use crate::error::{Error, Kind};
use crate::http::conditional::Precondition;
use crate::http::conn::Sent;
use crate::http::response::UpstreamHead;
use crate::s3::client::Body;

/// Leads the fill of a missing key: one origin GET for everyone who asks meanwhile.
pub async fn lead<S: AsyncWriteRent>(
    x: &mut Exchange<'_, '_, '_, S>,
    t: &Target<'_>,
    leader: Leader,
) -> Result<Sent, Error> {
    let asked = Asked {
        want_entry: true,
        ..Asked::of(t, false, &[])
    };
    match fetch_origin(x.w, x.bucket, &asked).await {
        Ok((head, body)) => fill_from(x, t, head, body, Some(leader)).await,
        Err(e) => {
            leader.fail(e.clone());
            Err(e)
        }
    }
}

/// Stores an origin 200 answer in the cache while the client reads it (see the module docs);
/// any other answer (or an uncacheable 200) is passed through and, for a leader, shared with
/// its followers as an error or a bypass. `leader` is None for a request whose fill nobody may
/// join (a revalidating Range or HEAD request).
pub async fn fill_from<S: AsyncWriteRent>(
    x: &mut Exchange<'_, '_, '_, S>,
    t: &Target<'_>,
    head: UpstreamHead,
    body: Body,
    leader: Option<Leader>,
) -> Result<Sent, Error> {
    let (w, bucket, ckey) = (x.w, x.bucket, t.ckey);
    x.note_upstream(&head, XCache::Miss);
    // The key's owner holds the object as slices: answered from slices here.
    if let Some(len) = super::sliced::relayed_entry(&head) {
        drain_error_body(body).await;
        return super::sliced::begin_relayed(x, t, &head, len, leader).await;
    }
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
        let sliced = body.content_length();
        if let Some(meta) = sliced.and_then(|len| super::sliced::entry_meta(w, bucket, &head, len))
        {
            return super::sliced::begin(x, t, meta, body, leader).await;
        }
        if let Some(l) = leader {
            l.bypass();
        }
        return match unknown_length_meta(w, bucket, &head, &body) {
            Some(meta) => stream_and_store(x, t, head, body, meta).await,
            None => respond_upstream(x, head, body, XCache::Miss).await,
        };
    };
    let leader = leader.unwrap_or_else(Leader::detached);
    let sub = leader.subscribe();
    start(w, bucket, t, meta, len, body, leader);
    follow(x, sub).await.unwrap_or_else(|| {
        Err(Error::internal(
            "a cacheable fill told its own client to fetch elsewhere",
        ))
    })
}

/// Starts the fill of a cacheable 200 (`meta`, `len` from [`cacheable`]) in a task of its own;
/// `leader`'s subscriptions read it.
pub fn start(
    w: &Rc<Worker>,
    bucket: usize,
    t: &Target<'_>,
    meta: Meta,
    len: u64,
    body: Body,
    leader: Leader,
) {
    let (w, ckey, generation) = (Rc::clone(w), t.ckey.to_vec(), t.generation);
    monoio::spawn(async move {
        // A failure reached the fill's readers through `leader`.
        let _ = run(&w, bucket, &ckey, generation, meta, len, body, leader).await;
    });
}

/// Reads a cacheable 200 body at the origin's pace, publishing each piece to `leader`'s
/// subscriptions, and stores the entry once it is whole (see the module docs). `Err`: the
/// body did not arrive whole (the followers got the same error).
#[allow(
    clippy::too_many_arguments,
    reason = "one fill's parts, each needed once; a struct would only rename them"
)]
pub async fn run(
    w: &Rc<Worker>,
    bucket: usize,
    ckey: &[u8],
    generation: u64,
    meta: Meta,
    len: u64,
    mut body: Body,
    leader: Leader,
) -> Result<(), Error> {
    if len == 0 {
        let empty = CachedObject::new(meta.clone(), Bytes::new());
        w.cache.store(ckey, empty, generation).await;
        leader.complete(meta, Bytes::new(), false);
        return Ok(());
    }
    leader.head(meta.clone(), len);
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
                    "filling {} from the origin failed: {e}",
                    String::from_utf8_lossy(ckey)
                );
                leader.fail(e.clone());
                return Err(e);
            }
        };
        w.metrics().upstream_bytes(bucket, n as u64);
        let piece = Bytes::copy_from_slice(&all[start..start + n]);
        if all.len() as u64 == len {
            let obj = CachedObject::new(meta, Bytes::from(all));
            w.cache.store(ckey, obj, generation).await;
            leader.finish(piece);
            return Ok(());
        }
        leader.chunk(piece);
    }
    let e = Error::upstream(Kind::BadGateway, "the origin sent a short body");
    leader.fail(e.clone());
    Err(e)
}

/// Streams a storable 200 of unknown length to the client while keeping a copy, and stores the
/// copy when the whole body fit `cache.max_object_size` (see the module docs; a bucket
/// listing of unknown length too).
pub(crate) async fn stream_and_store<S: AsyncWriteRent>(
    x: &mut Exchange<'_, '_, '_, S>,
    t: &Target<'_>,
    head: UpstreamHead,
    body: Body,
    meta: Meta,
) -> Result<Sent, Error> {
    let w = x.w;
    let mut keep = Keep::up_to(w.cache.max_object_size());
    let sent = respond_upstream_keeping(x, head, body, XCache::Miss, Some(&mut keep)).await?;
    if let Some(bytes) = keep.complete() {
        let obj = CachedObject::new(meta, Bytes::from(bytes));
        w.cache.store(t.ckey, obj, t.generation).await;
    }
    Ok(sent)
}

/// The entry's metadata for a 200 without `Content-Length` that RFC 9111 lets corvid store
/// (its size is checked once the body has ended). None for answers of known length.
fn unknown_length_meta(
    w: &Worker,
    bucket: usize,
    head: &UpstreamHead,
    body: &Body,
) -> Option<Meta> {
    if body.content_length().is_some() {
        return None;
    }
    entry_meta(w, bucket, head, None)
}

/// The freshness of an object of `len` bytes (None: not known until its body ends) answered
/// with `head` (a 200, or a 206 that is part of it), received now
/// ([`decide::storable_object`]).
pub fn storable_for(
    w: &Worker,
    bucket: usize,
    head: &UpstreamHead,
    len: Option<u64>,
) -> Option<Freshness> {
    let now = w.clock().now_ms();
    // A fleet member's answer: the member that owns the key stored it (`crate::fleet`), and
    // one copy per fleet is the point — unless `cluster.local_ttl` asks for a short local
    // copy, which is never fresh longer than that ([`entry_meta`] marks it local).
    let local_until = match &head.peer {
        None => None,
        Some(_) => Some(now.saturating_add(local_ttl_ms(w).filter(|&t| t > 0)?)),
    };
    let f = decide::storable_object(
        head,
        len,
        w.cache.max_object_size(),
        &w.shared.policies[bucket],
        now,
    )?;
    Some(match local_until {
        Some(until) => Freshness {
            expires_at_ms: f.expires_at_ms.min(until),
            ..f
        },
        None => f,
    })
}

/// `cluster.local_ttl` in ms (`None` without a fleet).
pub fn local_ttl_ms(w: &Worker) -> Option<u64> {
    let c = w.shared.config.cluster.as_ref()?;
    Some(u64::try_from(c.local_ttl.as_millis()).unwrap_or(u64::MAX))
}

/// The metadata of the entry a storable 200 makes ([`storable_for`]).
fn entry_meta(w: &Worker, bucket: usize, head: &UpstreamHead, len: Option<u64>) -> Option<Meta> {
    let f = storable_for(w, bucket, head, len)?;
    let meta = Meta::new(stored_headers(head), f.age_origin_ms, f.expires_at_ms);
    Some(match head.peer {
        // Already capped by `storable_for`.
        Some(_) => meta.local_until(f.expires_at_ms),
        None => meta,
    })
}

/// A negative entry for an origin `404` ([`decide::storable_404`]): no body, no header
/// fields.
fn negative_entry(w: &Worker, bucket: usize, head: &UpstreamHead) -> Option<CachedObject> {
    if head.peer.is_some() {
        return None;
    }
    let f = decide::storable_404(head, &w.shared.policies[bucket], w.clock().now_ms())?;
    let meta = Meta::new(Vec::new(), f.age_origin_ms, f.expires_at_ms).with_status(404);
    Some(CachedObject::new(meta, Bytes::new()))
}

/// The entry's metadata and length when this 200 answer may be cached.
pub fn cacheable(
    w: &Worker,
    bucket: usize,
    head: &UpstreamHead,
    body: &Body,
) -> Option<(Meta, u64)> {
    let len = body.content_length()?;
    Some((entry_meta(w, bucket, head, Some(len))?, len))
}

/// Follows another request's fill: the same head, then the chunks as they arrive. `None` means
/// the answer will not be cached and the caller must make its own request.
pub async fn follow<S: AsyncWriteRent>(
    x: &mut Exchange<'_, '_, '_, S>,
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
        x.answer.header_u64("Content-Length", len);
    }
    x.answer.end_head();
    if status == 304 || req.is_head() || len == 0 {
        let abort = x.answer.flush().await.is_err();
        return Some(Ok(Sent { status, abort }));
    }
    let abort = loop {
        match sub.next_event().await {
            Event::Chunk(c) => {
                if x.answer.send(c).await.is_err() {
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

/// A background task's origin answer: a cacheable `200` is filled ([`run`], streamed to the
/// followers of `leader` as it arrives); anything else is their error (or their bypass).
pub async fn publish(
    w: &Rc<Worker>,
    bucket: usize,
    t: &Target<'_>,
    head: UpstreamHead,
    body: Body,
    leader: Leader,
) {
    if head.status != 200 {
        leader.fail(rejected(w, bucket, t.ckey, &head, body).await);
        return;
    }
    match cacheable(w, bucket, &head, &body) {
        Some((meta, len)) => {
            // A failure reached the fill's readers through `leader`.
            let _ = run(w, bucket, t.ckey, t.generation, meta, len, body, leader).await;
        }
        None => {
            drain_error_body(body).await;
            leader.bypass();
        }
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

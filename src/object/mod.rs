//! The object request path: a GET or HEAD of `/<bucket prefix>/<key>` answered from the
//! cache or the bucket's origin.
//!
//! The flow is one way, each step in its own module, none importing one above it:
//!
//! ```text
//! serve (this module: method, target, lookup, then decide — pure, RFC 9111)
//!   ├─ fresh entry ─────────────► answer      (conditionals, ranges, HEAD, body from cache)
//!   ├─ stale entry ─────────────► revalidate  (conditional GET, stale-while-revalidate,
//!   │                               │          stale-if-error; coalesced)
//!   │                               ▼
//!   ├─ miss, full GET ──────────► fill        (one origin GET per key, streamed to the client
//!   │                               │          and its followers while it is stored)
//!   │                               ▼
//!   ├─ background ──────────────► revalidate / fill (no client waits: stale-while-revalidate,
//!   │                                          the whole object after a Range miss)
//!   ├─ sliced object entry ─────► sliced      (a large object's answer from its slices;
//!   │                               │          slice_fill gets them, slices has the rules)
//!   └─ HEAD/Range miss, bypass ─► upstream    (sign, send, pass the answer through)
//!
//! warm (no client: a warm job's object — fresh: left; else joined and filled as a miss is)
//!                                   ▼
//!                                origin_error (an origin's error answer, read and mapped)
//!                                exchange     (the request being answered)
//! ```
//!
//! Every byte of an answer goes out through the connection's `http::writer::Writer` (head,
//! vectored body, chunked framing, send timeout): this path decides what an answer says, the
//! writer how it is put on the wire.
//!
//! The cache itself — lookup order, promotion, write policy, purge generation — is
//! `cache::Cache`, reached through the worker ([`crate::context::Worker::cache`]).

pub mod answer;
pub mod background;
pub mod decide;
pub mod exchange;
pub mod fill;
pub mod freshness;
pub mod origin_error;
pub mod overrides;
pub mod revalidate;
pub mod slice_fill;
pub mod sliced;
pub mod slices;
pub mod upstream;
pub mod warm;

use std::rc::Rc;

use monoio::io::AsyncWriteRent;

use crate::cache::inflight::Role;
use crate::cache::key::cache_key_into;
use crate::cors;
use crate::error::{Error, Kind};
use crate::fleet::client::{SliceOf, SLICE};
use crate::http::conn::Sent;
use crate::http::range;
use crate::http::request::Method;
use crate::http::response::UpstreamHead;
use crate::http::writer::Reply;
use answer::serve_cached;
use decide::Phase;
use exchange::{coalescible, Exchange, Target, XCache};
use upstream::{fetch_as_asked, pass_through, respond_upstream};

/// Answers one object request (see the module docs for the flow): `params` are its forwarded
/// query parameters (`versionId`: `router::ObjectQuery::forwarded`); its `response-*`
/// overrides are in the exchange.
pub async fn serve<S: AsyncWriteRent>(
    x: &mut Exchange<'_, '_, '_, S>,
    key: &str,
    params: &[(&str, &str)],
) -> Result<Sent, Error> {
    match x.req.method() {
        Method::Get | Method::Head => {}
        Method::Options => return options(x).await,
        _ => return Err(Error::method_not_allowed("GET, HEAD, OPTIONS")),
    }
    let w = x.w;
    let cache = &w.cache;
    if !cache.enabled() {
        return pass_through(x, key, params, XCache::Bypass).await;
    }
    // In a recycled buffer: a hit allocates nothing (issue 4).
    let mut ckey = w.scratch();
    cache_key_into(
        &mut ckey,
        &w.shared.config.buckets[x.bucket].name,
        key,
        params,
    );
    let target = Target {
        key,
        params,
        ckey: &ckey,
        generation: cache.generation(),
        from_peer: x.from_peer,
    };
    // A fleet member asking for a run of slices this instance owns (`crate::fleet`).
    if x.from_peer {
        if let Some(of) = x.req.header(SLICE).and_then(SliceOf::parse) {
            return sliced::serve_run(x, &target, of).await;
        }
    }
    let found = cache.lookup(&ckey).await;
    let negative = found.as_ref().filter(|h| h.obj.meta().status != 200);
    if let Some(hit) = negative {
        // A negative entry answers its 404 while fresh; stale, the key is a miss again.
        if hit.obj.meta().is_fresh(w.clock().now_ms()) {
            w.metrics().cache_hit(x.bucket, hit.layer);
            return Err(Error::upstream(Kind::NotFound, "no such object (cached)"));
        }
    }
    if let Some(hit) = found.filter(|h| h.obj.meta().status == 200) {
        let now = w.clock().now_ms();
        let layer = Some(hit.layer);
        // Fresh is the common case, decided without building the bucket's policy.
        let phase = if hit.obj.meta().is_fresh(now) {
            Phase::Fresh
        } else {
            decide::decide(Some(hit.obj.meta()), &w.shared.policies[x.bucket], now)
        };
        if hit.obj.meta().sliced_len().is_some() {
            if let Some(sent) = sliced_hit(x, &target, &hit, phase).await? {
                return Ok(sent);
            }
        } else {
            match phase {
                Phase::Fresh | Phase::Miss => {
                    w.metrics().cache_hit(x.bucket, hit.layer);
                    return serve_cached(x, &hit.obj, XCache::Hit, layer).await;
                }
                Phase::StaleWhileRevalidate => {
                    background::fetch(w, x.bucket, &target, Some(hit.obj.clone()));
                    w.metrics().cache_hit(x.bucket, hit.layer);
                    return serve_cached(x, &hit.obj, XCache::Stale, layer).await;
                }
                Phase::Revalidate {
                    stale_if_error_until_ms,
                    must_revalidate,
                } => {
                    let on_failure = revalidate::OnFailure {
                        stale_until_ms: stale_if_error_until_ms,
                        must_revalidate,
                    };
                    return revalidate::revalidate(x, &target, hit, on_failure).await;
                }
            }
        }
    }
    w.metrics().cache_miss(x.bucket);
    // Ranges and HEADs of uncached objects go to the origin as they are (not cached); a full
    // GET fills the cache, coalesced with every concurrent request for the same key.
    if coalescible(x.req) {
        match cache.inflight().join(&ckey) {
            Role::Leader(leader) => return fill::lead(x, &target, leader).await,
            Role::Follower(sub) => {
                w.metrics().coalesced(x.bucket);
                if let Some(result) = fill::follow(x, sub).await {
                    return result;
                }
                // The leader's object turned out sliced: its entry is stored now.
                if let Some(hit) = cache.lookup(&ckey).await {
                    if hit.obj.meta().sliced_len().is_some() {
                        let meta = hit.obj.meta().clone();
                        let layer = Some(hit.layer);
                        if let Some(sent) =
                            sliced::answer(x, &target, &meta, XCache::Miss, layer).await?
                        {
                            return Ok(sent);
                        }
                    }
                }
                // The leader's answer is not cacheable: fetch our own.
            }
        }
    }
    let (head, body) = fetch_as_asked(x, target.route(), key, params).await?;
    // The key's owner holds the object as slices: answered from slices here.
    if let Some(len) = sliced::relayed_entry(&head) {
        upstream::drain_error_body(body).await;
        x.note_upstream(&head, XCache::Miss);
        return sliced::begin_relayed(x, &target, &head, len, None).await;
    }
    if x.req.method() == Method::Get && x.req.header("range").is_some() {
        fill_after_range_miss(x, &target, &head);
    }
    respond_upstream(x, head, body, XCache::Miss).await
}

/// Answers from a sliced object's entry according to its `phase`: fresh from the slices;
/// stale after a conditional `HEAD` ([`sliced::revalidate`]; within stale-while-revalidate
/// too: the HEAD is cheap and a stale large object is not worth serving while one is cut
/// anew). `None` when the entry turned out to be of a version the origin no longer has: it is
/// gone, and the request is answered as a miss.
async fn sliced_hit<S: AsyncWriteRent>(
    x: &mut Exchange<'_, '_, '_, S>,
    target: &Target<'_>,
    hit: &crate::cache::tiered::Hit,
    phase: Phase,
) -> Result<Option<Sent>, Error> {
    let layer = Some(hit.layer);
    match phase {
        Phase::Fresh | Phase::Miss => {
            x.w.metrics().cache_hit(x.bucket, hit.layer);
            let meta = hit.obj.meta().clone();
            sliced::answer(x, target, &meta, XCache::Hit, layer).await
        }
        Phase::StaleWhileRevalidate => sliced::revalidate(x, target, hit, None).await,
        Phase::Revalidate {
            stale_if_error_until_ms,
            ..
        } => sliced::revalidate(x, target, hit, stale_if_error_until_ms).await,
    }
}

/// A Range miss is answered by the origin as asked, and — when the 206 shows the whole object
/// is cacheable — the whole object is fetched into the cache in the background, so clients
/// that only ever ask for ranges (parallel downloaders, media players) get hits from then on.
/// It costs one extra full GET per object, never one per range: the background fill holds the
/// key in the coalescing table, and an object too large to cache is never fetched whole.
fn fill_after_range_miss<S>(x: &Exchange<'_, '_, '_, S>, t: &Target<'_>, head: &UpstreamHead) {
    let whole = head
        .header("content-range")
        .and_then(range::content_range_complete);
    // A large object: its entry is made from the 206's head, and later requests (ranges or
    // whole) are answered from slices.
    let entry = whole.and_then(|len| sliced::entry_meta(x.w, x.bucket, head, len));
    if let (206, Some(meta)) = (head.status, entry) {
        let (w, owned) = (Rc::clone(x.w), exchange::OwnedTarget::of(t));
        monoio::spawn(async move {
            let params = owned.params();
            sliced::store_entry(&w, &owned.target(&params), meta).await;
        });
        return;
    }
    let storable = whole.and_then(|len| fill::storable_for(x.w, x.bucket, head, Some(len)));
    if head.status == 206 && storable.is_some() {
        background::fetch(x.w, x.bucket, t, None);
    }
}

/// `OPTIONS` on an object (or bucket) route: a CORS preflight for buckets with `cors`, else
/// the allowed methods.
pub(crate) async fn options<S: AsyncWriteRent>(
    x: &mut Exchange<'_, '_, '_, S>,
) -> Result<Sent, Error> {
    let allow = [("Allow", "GET, HEAD, OPTIONS")];
    let req = x.req;
    let Some(cfg) = x.w.shared.config.buckets[x.bucket].cors.as_ref() else {
        let reply = Reply {
            status: 204,
            content_type: "",
            body: b"",
            extra: &allow,
        };
        return x.answer.reply(req, reply).await;
    };
    let headers = cors::preflight(
        cfg,
        req.header_str("origin"),
        req.header_str("access-control-request-method"),
        req.header_str("access-control-request-headers"),
    )?;
    let mut extra: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    extra.extend_from_slice(&allow);
    let reply = Reply {
        status: 204,
        content_type: "",
        body: b"",
        extra: &extra,
    };
    x.answer.reply(req, reply).await
}

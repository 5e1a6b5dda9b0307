//! Stale entries: revalidation with the stored ETag, `stale-if-error`, and
//! `stale-while-revalidate`.
//!
//! A stale entry is revalidated with a conditional GET (`If-None-Match`). A `304` refreshes
//! the entry's freshness in every tier without moving the body and answers from it
//! (`X-Cache: REVALIDATED`); a `200` replaces it (streamed like a fill); a `404` removes it.
//! When the origin fails or times out and `cache.stale_if_error` covers the entry's age past
//! expiry, the stale copy is served (`X-Cache: STALE`). With `cache.stale_while_revalidate`,
//! a stale copy within that window is served at once and one background request refreshes it.
//!
//! # One conditional GET per key
//! Revalidations are coalesced through the same table as miss fills
//! ([`crate::cache::inflight`]), across connections and worker cores: the first full GET of a
//! stale key leads and sends the conditional GET; concurrent full GETs of the key follow it
//! and answer from what it publishes — on a `304` the confirmed entry as a whole
//! (`X-Cache: REVALIDATED`), on a `200` the new body as it streams in. When the shared
//! revalidation fails at the origin, each follower applies `stale_if_error` to its own copy.
//! HEAD and Range requests revalidate on their own (they must never be answered with a full
//! body by mistake; the same rule as for misses). A background refresh also holds the key in
//! the table while it runs, so there is at most one per key in the whole process, and
//! requests too stale to be served meanwhile follow it (they wait for its whole body on a
//! `200`, since it reads that without a client to stream to).

use std::rc::Rc;
use std::sync::Arc;

use monoio::io::AsyncWriteRent;

use crate::cache::entry::CachedObject;
use crate::cache::inflight::{Leader, Role};
use crate::cache::policy;
use crate::cache::tiered::Hit;
use crate::error::Error;
use crate::fill::{fill_from, fill_in_background, follow, refresh_everywhere, remove_everywhere};
use crate::http::conn::Sent;
use crate::http::response::UpstreamHead;
use crate::proxy::{
    coalescible, drain_error_body, fetch_origin, now_ms, serve_cached, Exchange, Target, XCache,
};
use crate::runtime::worker::Worker;
use crate::s3::client::Body;

pub async fn revalidate<S: AsyncWriteRent>(
    x: &mut Exchange<'_, '_, S>,
    t: &Target<'_>,
    hit: Hit,
) -> Result<Sent, Error> {
    let (w, bucket) = (x.w, x.bucket);
    let cache = &w.shared.config.cache;
    let stale_ms = now_ms().saturating_sub(hit.obj.meta.expires_at_ms);
    let within =
        |d: Option<std::time::Duration>| d.is_some_and(|d| (stale_ms as u128) < d.as_millis());
    let layer = Some(hit.layer);
    if within(cache.stale_while_revalidate) {
        fill_in_background(w, bucket, t, Some(hit.obj.clone()));
        w.metrics().cache_hit(bucket, hit.layer);
        return serve_cached(x, &hit.obj, XCache::Stale, layer).await;
    }
    // An origin failure (unreachable, timed out, 5xx) lets a stale copy stand in.
    let stale_allowed = |e: &Error| e.status() >= 500 && within(cache.stale_if_error);

    let mut leader = None;
    if coalescible(x.req) {
        match w.shared.tiers.inflight.join(t.ckey) {
            Role::Leader(l) => leader = Some(l),
            Role::Follower(sub) => {
                w.metrics().coalesced(bucket);
                match follow(x, sub).await {
                    Some(Err(e)) if stale_allowed(&e) => {
                        log::warn!("request {}: serving stale: {e}", x.req.id.as_str());
                        return serve_cached(x, &hit.obj, XCache::Stale, layer).await;
                    }
                    Some(result) => return result,
                    // The new answer is not cacheable: ask the origin ourselves.
                    None => {}
                }
            }
        }
    }

    let failure =
        match fetch_origin(w, bucket, false, t.key, t.params, &if_none_match(&hit.obj)).await {
            Err(e) => e,
            Ok((head, body)) => match head.status {
                304 => {
                    let obj = confirmed(w, bucket, t, &hit.obj, &head, body, leader).await;
                    return serve_cached(x, &obj, XCache::Revalidated, layer).await;
                }
                200 => return fill_from(x, t, head, body, leader).await,
                _ => rejected(w, bucket, t.ckey, &head, body).await,
            },
        };
    if let Some(l) = leader {
        l.fail(failure.clone());
    }
    if !stale_allowed(&failure) {
        return Err(failure);
    }
    log::warn!("request {}: serving stale: {failure}", x.req.id.as_str());
    serve_cached(x, &hit.obj, XCache::Stale, layer).await
}

/// A `304` for `stale`: the entry with new freshness, refreshed in every tier (body untouched)
/// and published whole to the followers of `leader`, if any.
pub async fn confirmed(
    w: &Rc<Worker>,
    bucket: usize,
    t: &Target<'_>,
    stale: &CachedObject,
    head: &UpstreamHead,
    body: Body,
    leader: Option<Leader<'_>>,
) -> CachedObject {
    drain_error_body(body).await;
    let obj = refreshed(w, bucket, stale, head);
    refresh_everywhere(w, t.ckey, obj.clone(), t.generation).await;
    if let Some(l) = leader {
        l.complete(Arc::clone(&obj.meta), obj.body.clone(), true);
    }
    obj
}

/// An origin answer to a revalidation that neither confirms nor replaces the entry: a `404`
/// removes it everywhere; returns the error for the client.
pub async fn rejected(
    w: &Rc<Worker>,
    bucket: usize,
    ckey: &[u8],
    head: &UpstreamHead,
    body: Body,
) -> Error {
    let e = crate::origin_error::read_and_map(w, bucket, head, body).await;
    if head.status == 404 {
        remove_everywhere(w, ckey).await;
    }
    e
}

/// The conditional header of a revalidation: the stored ETag (none: an unconditional GET).
pub fn if_none_match(obj: &CachedObject) -> Vec<(&'static str, &str)> {
    obj.meta
        .etag()
        .map(|e| vec![("if-none-match", e)])
        .unwrap_or_default()
}

/// The entry with a new freshness deadline (same body, same headers).
fn refreshed(w: &Worker, bucket: usize, obj: &CachedObject, head: &UpstreamHead) -> CachedObject {
    let configured = w.shared.config.ttl(bucket);
    let cc = head
        .header("cache-control")
        .or(obj.meta.header("cache-control"));
    let ttl = policy::freshness(cc, configured).unwrap_or(configured);
    CachedObject {
        meta: Arc::new(obj.meta.refreshed(now_ms() + ttl.as_millis() as u64)),
        body: obj.body.clone(),
    }
}

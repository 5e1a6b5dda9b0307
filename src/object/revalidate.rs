//! Stale entries: revalidation with the stored ETag, `stale-if-error`, and
//! `stale-while-revalidate`.
//!
//! Whether an entry is stale, and what its staleness allows, is decided before this module is
//! reached ([`super::decide`]); this module carries it out. A stale entry is revalidated with a
//! conditional GET (RFC 9111 §4.3.1): `If-None-Match` with the stored ETag, or — only for an
//! entry without an ETag — `If-Modified-Since` with the stored Last-Modified
//! ([`decide::validators`]). A `304` that selects the entry ([`decide::selects`]: the same
//! ETag; without an ETag in the 304, the same Last-Modified) updates the stored header fields
//! with its own and computes the freshness anew (§4.3.4; `Age` starts again from the 304),
//! refreshes the entry in every tier — without moving the body unless header fields changed —
//! and answers from it (`X-Cache: REVALIDATED`); a `200` replaces it (streamed like a fill); a
//! `404` removes it.
//!
//! # A 304 for another version
//! A `304` that selects nothing — it carries another ETag, as an origin that evaluates a date
//! beside the entity tag can send for an object replaced within the same second — updates
//! nothing: the object is fetched again without conditions (one more origin request, counted
//! in `corvid_revalidation_mismatches_total`) and that answer replaces the entry. The stored
//! body is never served under another version's validators. Every revalidation goes through
//! [`conditional_fetch`]: the foreground, the background (stale-while-revalidate), entries a
//! soft purge marked stale, entries from any tier, and so the followers of each.
//! When the origin fails or times out within the entry's stale-if-error window, the stale copy
//! is served (`X-Cache: STALE`); an entry that must be revalidated (`must-revalidate`,
//! `proxy-revalidate`, `s-maxage`, `no-cache`) never is, and answers 504 when the origin cannot
//! be reached. Within the stale-while-revalidate window a stale copy is served at once and
//! `object::background` revalidates it.
//!
//! # One conditional GET per key
//! Revalidations are coalesced through the same table as miss fills
//! (`cache::inflight`), across connections and worker cores: the first full GET of a
//! stale key leads and sends the conditional GET; concurrent full GETs of the key follow it
//! and answer from what it publishes — on a `304` the confirmed entry as a whole
//! (`X-Cache: REVALIDATED`), on a `200` the new body as it streams in. When the shared
//! revalidation fails at the origin, each follower applies `stale_if_error` to its own copy.
//! HEAD and Range requests revalidate on their own (they must never be answered with a full
//! body by mistake; the same rule as for misses). A background refresh also holds the key in
//! the table while it runs, so there is at most one per key in the whole process, and
//! requests too stale to be served meanwhile follow it (on a `200` they read the new body as
//! it arrives, like followers of any fill: `super::fill`).

use std::rc::Rc;

use monoio::io::AsyncWriteRent;

use super::answer::serve_cached;
use super::decide;
use super::exchange::{coalescible, Exchange, Target, XCache};
use super::fill::{fill_from, follow, rejected};
use super::upstream::{drain_error_body, fetch_origin, stored_headers, Asked};
use crate::cache::entry::{CachedObject, Meta};
use crate::cache::inflight::{Leader, Role};
use crate::cache::tiered::Hit;
use crate::context::Worker;
use crate::error::{Error, Kind, Side};
use crate::http::conn::Sent;
use crate::http::response::UpstreamHead;
use crate::s3::client::Body;

/// How a stale entry may stand in when its revalidation fails (from [`super::decide::Phase`]).
#[derive(Debug, Clone, Copy)]
pub struct OnFailure {
    /// The stale copy may be served for an origin failure until then (unix ms).
    pub stale_until_ms: Option<u64>,
    /// Never served stale; an unreachable or timed-out origin is a 504 (RFC 9111 §5.2.2.2).
    pub must_revalidate: bool,
}

/// Revalidates a stale entry before answering (see the module docs).
pub async fn revalidate<S: AsyncWriteRent>(
    x: &mut Exchange<'_, '_, '_, S>,
    t: &Target<'_>,
    hit: Hit,
    on_failure: OnFailure,
) -> Result<Sent, Error> {
    let (w, bucket) = (x.w, x.bucket);
    let layer = Some(hit.layer);
    // An origin failure (unreachable, timed out, 5xx) lets a stale copy stand in, within the
    // entry's stale-if-error window.
    let stale_allowed = |e: &Error| {
        e.status() >= 500
            && on_failure
                .stale_until_ms
                .is_some_and(|until| w.clock().now_ms() < until)
    };

    let mut leader = None;
    if coalescible(x.req) {
        match w.cache.inflight().join(t.ckey) {
            Role::Leader(l) => leader = Some(l),
            Role::Follower(sub) => {
                w.metrics().coalesced(bucket);
                match follow(x, sub).await {
                    Some(Err(e)) if stale_allowed(&e) => {
                        log::warn!("request {}: serving stale: {e}", x.req.id.as_str());
                        return serve_cached(x, &hit.obj, XCache::Stale, layer).await;
                    }
                    Some(Err(e)) => return Err(must_fail(e, on_failure)),
                    Some(result) => return result,
                    // The new answer is not cacheable: ask the origin ourselves.
                    None => {}
                }
            }
        }
    }

    let failure = match conditional_fetch(w, bucket, t, hit.obj.meta()).await {
        Err(e) => e,
        Ok((head, body)) => match head.status {
            304 => {
                x.note_upstream(&head, XCache::Revalidated);
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
        return Err(must_fail(failure, on_failure));
    }
    log::warn!("request {}: serving stale: {failure}", x.req.id.as_str());
    serve_cached(x, &hit.obj, XCache::Stale, layer).await
}

/// The error for a failed revalidation: a `must-revalidate` entry whose origin could not be
/// reached (or timed out) answers 504 (RFC 9111 §5.2.2.2); anything else as it came.
fn must_fail(e: Error, on_failure: OnFailure) -> Error {
    if on_failure.must_revalidate && e.kind() == Kind::BadGateway && e.side() == Side::Upstream {
        return Error::upstream(
            Kind::GatewayTimeout,
            "the origin could not be reached to revalidate an entry that must be revalidated",
        );
    }
    e
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
    leader: Option<Leader>,
) -> CachedObject {
    drain_error_body(body).await;
    let policy = w.shared.policies[bucket];
    let now = w.clock().now_ms();
    let update = stored_headers(head);
    let meta = match decide::after_not_modified(stale.meta(), head, &update, &policy, now) {
        Ok(meta) => meta,
        // The confirmation says the response may no longer be stored (`no-store` now): it
        // still answers this request, and the entry goes.
        Err(_) => {
            let meta = stale.meta().refreshed(now);
            w.cache.remove_everywhere(t.ckey).await;
            let obj = CachedObject::new(meta, stale.body_bytes());
            if let Some(l) = leader {
                l.complete(obj.meta().clone(), obj.body_bytes(), true);
            }
            return obj;
        }
    };
    // A local copy stays one (`cluster.local_ttl`): never fresh longer than that from now.
    let meta = match (stale.meta().is_local(), super::fill::local_ttl_ms(w)) {
        (true, Some(ttl)) if head.peer.is_some() => meta.local_until(now.saturating_add(ttl)),
        _ => meta,
    };
    let changed = meta.fields() != stale.meta().fields();
    let obj = CachedObject::new(meta, stale.body_bytes());
    w.cache
        .refresh(t.ckey, obj.clone(), t.generation, changed)
        .await;
    if let Some(l) = leader {
        l.complete(obj.meta().clone(), obj.body_bytes(), true);
    }
    obj
}

/// The origin's answer to the revalidation of `stale`: a conditional GET
/// ([`decide::validators`]); when its `304` selects nothing ([`decide::selects`]), the answer
/// to a second, unconditional GET instead. A `304` returned from here always selects `stale`.
pub async fn conditional_fetch(
    w: &Rc<Worker>,
    bucket: usize,
    t: &Target<'_>,
    stale: &Meta,
) -> Result<(UpstreamHead, Body), Error> {
    let validators = decide::validators(stale);
    let headers = decide::as_headers(&validators);
    let (head, body) = fetch_origin(w, bucket, &Asked::of(t, false, &headers)).await?;
    if head.status != 304 || decide::selects(stale, &head) {
        return Ok((head, body));
    }
    drain_error_body(body).await;
    w.metrics().revalidation_mismatch(bucket);
    log::debug!(
        "a 304 with ETag {:?} does not select the stored entry (ETag {:?}): fetching it again",
        head.header("etag"),
        stale.etag()
    );
    let (head, body) = fetch_origin(w, bucket, &Asked::of(t, false, &[])).await?;
    if head.status == 304 {
        drain_error_body(body).await;
        return Err(Error::upstream(
            Kind::BadGateway,
            "the origin answered an unconditional GET with 304",
        ));
    }
    Ok((head, body))
}

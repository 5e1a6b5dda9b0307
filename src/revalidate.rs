//! Stale entries: revalidation with the stored ETag, `stale-if-error`, and
//! `stale-while-revalidate`.
//!
//! A stale entry is revalidated with a conditional GET (`If-None-Match`). A `304` refreshes
//! the entry's freshness in the cache without moving the body and answers from it
//! (`X-Cache: REVALIDATED`); a `200` replaces it (streamed like a fill); a `404` removes it.
//! When the origin fails or times out and `cache.stale_if_error` covers the entry's age past
//! expiry, the stale copy is served (`X-Cache: STALE`). With `cache.stale_while_revalidate`,
//! a stale copy within that window is served at once and one background request per key (per
//! worker) refreshes it.

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use monoio::io::AsyncWriteRent;

use crate::cache::entry::CachedObject;
use crate::cache::policy;
use crate::cache::tiered::Hit;
use crate::error::Error;
use crate::http::conn::{Request, Sent};
use crate::http::response::UpstreamHead;
use crate::proxy::{
    drain_error_body, fetch_origin, map_origin_status, now_ms, serve_cached, XCache,
};
use crate::runtime::worker::Worker;

#[allow(clippy::too_many_arguments)]
pub async fn revalidate<S: AsyncWriteRent>(
    w: &Rc<Worker>,
    io: &mut S,
    out: &mut Vec<u8>,
    req: &Request<'_>,
    bucket: usize,
    key: &str,
    params: &[(String, String)],
    ckey: &[u8],
    hit: Hit,
) -> Result<Sent, Error> {
    let cache = &w.shared.config.cache;
    let stale_ms = now_ms().saturating_sub(hit.obj.meta.expires_at_ms);
    let within =
        |d: Option<std::time::Duration>| d.is_some_and(|d| (stale_ms as u128) < d.as_millis());
    if within(cache.stale_while_revalidate) {
        refresh_in_background(w, bucket, key, params, ckey, &hit.obj);
        w.metrics().cache_hit(bucket, hit.layer);
        return serve_cached(
            w,
            io,
            out,
            req,
            bucket,
            &hit.obj,
            XCache::Stale,
            Some(hit.layer),
        )
        .await;
    }
    let stale_or = |e: Error| -> Result<(), Error> {
        if within(cache.stale_if_error) {
            log::warn!("request {}: serving stale: {e}", req.id.as_str());
            Ok(())
        } else {
            Err(e)
        }
    };
    let cond: Vec<(&'static str, &str)> = hit
        .obj
        .meta
        .etag()
        .map(|e| vec![("if-none-match", e)])
        .unwrap_or_default();
    let failure = match fetch_origin(w, bucket, false, key, params, &cond).await {
        Err(e) => e,
        Ok((head, body)) => match head.status {
            304 => {
                drain_error_body(body).await;
                let obj = refreshed(w, bucket, &hit.obj, &head);
                crate::fill::refresh_everywhere(w, ckey, obj.clone()).await;
                let layer = Some(hit.layer);
                return serve_cached(w, io, out, req, bucket, &obj, XCache::Revalidated, layer)
                    .await;
            }
            200 => {
                return crate::fill::fill_from(w, io, out, req, bucket, ckey, head, body, None)
                    .await
            }
            404 => {
                drain_error_body(body).await;
                crate::fill::remove_everywhere(w, ckey).await;
                return Err(map_origin_status(404));
            }
            s => {
                drain_error_body(body).await;
                if s < 500 {
                    return Err(map_origin_status(s));
                }
                map_origin_status(s)
            }
        },
    };
    // The origin failed (unreachable, timed out, 5xx): a stale copy may stand in.
    stale_or(failure)?;
    serve_cached(
        w,
        io,
        out,
        req,
        bucket,
        &hit.obj,
        XCache::Stale,
        Some(hit.layer),
    )
    .await
}

/// The entry with a new freshness deadline (same body, same headers).
fn refreshed(w: &Worker, bucket: usize, obj: &CachedObject, head: &UpstreamHead) -> CachedObject {
    let cache = &w.shared.config.cache;
    let configured = w.shared.config.buckets[bucket].ttl.unwrap_or(cache.ttl);
    let cc = head
        .header("cache-control")
        .or(obj.meta.header("cache-control"));
    let ttl = policy::freshness(cc, configured).unwrap_or(configured);
    CachedObject {
        meta: Arc::new(obj.meta.refreshed(now_ms() + ttl.as_millis() as u64)),
        body: obj.body.clone(),
    }
}

/// Revalidates `obj` in a background task, at most one per key on this worker.
fn refresh_in_background(
    w: &Rc<Worker>,
    bucket: usize,
    key: &str,
    params: &[(String, String)],
    ckey: &[u8],
    obj: &CachedObject,
) {
    if !w.revalidating.borrow_mut().insert(ckey.to_vec()) {
        return;
    }
    let (w, key, params, ckey, obj) = (
        Rc::clone(w),
        key.to_string(),
        params.to_vec(),
        ckey.to_vec(),
        obj.clone(),
    );
    monoio::spawn(async move {
        let cond: Vec<(&'static str, &str)> = obj
            .meta
            .etag()
            .map(|e| vec![("if-none-match", e)])
            .unwrap_or_default();
        match fetch_origin(&w, bucket, false, &key, &params, &cond).await {
            Ok((head, body)) if head.status == 304 => {
                drain_error_body(body).await;
                w.shared
                    .tiers
                    .store(&ckey, refreshed(&w, bucket, &obj, &head));
            }
            Ok((head, mut body)) if head.status == 200 => {
                if let Some((meta, len)) = crate::fill::cacheable(&w, bucket, &head, &body) {
                    let mut all = Vec::with_capacity(len as usize);
                    while !body.is_done() {
                        let (res, a) = body.read_into(all).await;
                        all = a;
                        if !matches!(res, Ok(n) if n > 0) {
                            break;
                        }
                    }
                    if all.len() as u64 == len {
                        w.shared.tiers.store(
                            &ckey,
                            CachedObject {
                                meta,
                                body: Bytes::from(all),
                            },
                        );
                    }
                }
            }
            Ok((head, body)) => {
                drain_error_body(body).await;
                if head.status == 404 {
                    crate::fill::remove_everywhere(&w, &ckey).await;
                }
            }
            Err(e) => log::warn!("background revalidation failed: {e}"),
        }
        w.revalidating.borrow_mut().remove(&ckey);
    });
}

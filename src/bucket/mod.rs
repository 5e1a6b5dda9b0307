//! Requests for a bucket itself rather than one of its objects (`router::Route::Bucket`: a
//! path equal to a bucket's prefix or the prefix plus `/`, or `/` on its virtual host): the
//! read-only part of S3's bucket API that SDKs and copy tools need.
//!
//! | request | answer |
//! |---|---|
//! | `GET ?list-type=2&…` (ListObjectsV2), `GET` with V1 parameters or none (ListObjects) | the origin's XML, cached `list_ttl` |
//! | `HEAD` (HeadBucket) | the origin's status, uncached |
//! | `GET ?location` (GetBucketLocation) | the bucket's configured `region`, from corvid |
//! | `GET ?acl`, `?versions`, `?uploads`, … ([`query::SUB_RESOURCES`]) | `501`, S3's `NotImplemented` XML |
//! | `OPTIONS` | as on objects (CORS preflight) |
//! | other methods | `405` |
//!
//! # Decisions
//!
//! - **The origin's listing, unchanged.** corvid forwards the list parameters it knows
//!   ([`query`]) and answers the origin's XML as it came (namespace, `IsTruncated`,
//!   `KeyCount`, `NextContinuationToken`, `EncodingType`): continuation tokens are the
//!   origin's own, so every SDK paginator works across pages. Errors are corvid's JSON errors,
//!   as on objects (`s3::errors`).
//! - **Cached like an object, but for `list_ttl`** (`cache.list_ttl`, per-bucket `list_ttl`;
//!   default 10 s; `0` passes every listing through). A listing says nothing about its own
//!   freshness and has no validators, so it is fresh for exactly that long and then fetched
//!   again (no revalidation, no stale serving). The entry is keyed by the prefix and the
//!   canonical forwarded query (`cache::key::listing_key`): one entry per page. A bucket purge,
//!   and a prefix purge whose prefix starts the listing's `prefix`, remove it; a listing of a
//!   shorter prefix (the bucket's root, say) outlives a purge of a deeper prefix by at most
//!   `list_ttl`. Concurrent misses of one page share one origin request (`cache::inflight`),
//!   and listings are counted apart from objects (`corvid_cache_list_hits_total`,
//!   `corvid_cache_list_misses_total`, stats `list_hits`/`list_misses`).
//! - **Never via a fleet owner.** A listing goes to the origin from the instance asked: its
//!   key has no owner among the objects, and a short-lived page is cheap to fetch.
//! - **GetBucketLocation is answered by corvid** with the region it signs for: the bucket
//!   clients see is corvid's, and corvid's credentials need no `s3:GetBucketLocation`.
//! - **Authorization is the handler's**, before this module runs, exactly as for objects
//!   (`handler`): a private bucket's listing needs a token, hits included.

pub mod query;

use monoio::io::AsyncWriteRent;

use crate::cache::entry::Meta;
use crate::cache::inflight::{Leader, Role};
use crate::cache::key::listing_key;
use crate::error::Error;
use crate::http::conn::Sent;
use crate::http::request::Method;
use crate::http::writer::Reply;
use crate::object::answer::serve_cached;
use crate::object::exchange::{Exchange, Target, XCache};
use crate::object::fill;
use crate::object::origin_error;
use crate::object::upstream::{fetch_origin, respond_upstream, stored_headers, Asked};
use crate::s3::sigv4::canonical_query;
use query::{List, Operation};

/// S3's XML namespace, on the answers corvid writes itself.
const S3_XMLNS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

/// Answers one request for the bucket of `x` (see the module docs).
pub async fn serve<S: AsyncWriteRent>(
    x: &mut Exchange<'_, '_, '_, S>,
    query: Option<&str>,
) -> Result<Sent, Error> {
    match x.req.method() {
        Method::Get => {}
        Method::Head => return head_bucket(x).await,
        Method::Options => return crate::object::options(x).await,
        _ => return Err(Error::method_not_allowed("GET, HEAD, OPTIONS")),
    }
    match query::classify(query)? {
        Operation::List(list) => listing(x, &list).await,
        Operation::Location => location(x).await,
        Operation::Unsupported(name) => not_implemented(x, name).await,
    }
}

/// A request to the origin for the bucket itself (empty key: `GET /{bucket}/?…` path-style,
/// `GET /?…` virtual-hosted), never through a fleet owner.
fn bucket_request<'a>(is_head: bool, query: &'a [(&'a str, &'a str)]) -> Asked<'a> {
    Asked {
        route: None,
        is_head,
        key: "",
        query,
        headers: &[],
        want_entry: false,
        slice: None,
    }
}

/// HeadBucket: the origin's status (and headers corvid passes), nothing cached.
async fn head_bucket<S: AsyncWriteRent>(x: &mut Exchange<'_, '_, '_, S>) -> Result<Sent, Error> {
    let (head, body) = fetch_origin(x.w, x.bucket, &bucket_request(true, &[])).await?;
    respond_upstream(x, head, body, XCache::Bypass).await
}

/// GetBucketLocation: the configured region, as S3 writes it (empty for `us-east-1`).
async fn location<S: AsyncWriteRent>(x: &mut Exchange<'_, '_, '_, S>) -> Result<Sent, Error> {
    let region = &x.w.shared.config.buckets[x.bucket].region;
    let shown = if region == "us-east-1" {
        ""
    } else {
        region.as_str()
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<LocationConstraint xmlns=\"{S3_XMLNS}\">{}</LocationConstraint>",
        xml_escape(shown)
    );
    let reply = Reply {
        status: 200,
        content_type: "application/xml",
        body: body.as_bytes(),
        extra: &[],
    };
    x.answer.reply(x.req, reply).await
}

/// A bucket sub-resource corvid does not serve: `501` with S3's `NotImplemented` error, which
/// SDKs report by its code.
async fn not_implemented<S: AsyncWriteRent>(
    x: &mut Exchange<'_, '_, '_, S>,
    name: &str,
) -> Result<Sent, Error> {
    let prefix = &x.w.shared.config.buckets[x.bucket].prefix;
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>NotImplemented</Code>\
         <Message>corvid serves ListObjects, ListObjectsV2, HeadBucket and GetBucketLocation on a \
         bucket; the {} sub-resource is not implemented</Message><Resource>{}</Resource>\
         <RequestId>{}</RequestId></Error>",
        xml_escape(name),
        xml_escape(prefix),
        x.req.id.as_str()
    );
    let reply = Reply {
        status: 501,
        content_type: "application/xml",
        body: body.as_bytes(),
        extra: &[],
    };
    x.answer.reply(x.req, reply).await
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// ListObjects / ListObjectsV2: from the cache while fresh, else from the origin (one request
/// for every concurrent asker), stored for `list_ttl`.
async fn listing<S: AsyncWriteRent>(
    x: &mut Exchange<'_, '_, '_, S>,
    list: &List,
) -> Result<Sent, Error> {
    let w = x.w;
    let params = list.pairs();
    let ttl = w.shared.config.list_ttl(x.bucket);
    if ttl.is_zero() || !w.cache.enabled() {
        let (head, body) = fetch_origin(w, x.bucket, &bucket_request(false, &params)).await?;
        return respond_upstream(x, head, body, XCache::Bypass).await;
    }
    let ckey = listing_key(
        &w.shared.config.buckets[x.bucket].name,
        list.prefix(),
        &canonical_query(&params),
    );
    let target = Target {
        key: "",
        params: &params,
        ckey: &ckey,
        generation: w.cache.generation(),
        from_peer: x.from_peer,
    };
    let found = w.cache.lookup(&ckey).await;
    let now = w.clock().now_ms();
    // Stale is a miss: a listing has no validators to revalidate with.
    if let Some(hit) = found.filter(|h| h.obj.meta().status == 200 && h.obj.meta().is_fresh(now)) {
        w.metrics().list_hit(x.bucket);
        return serve_cached(x, &hit.obj, XCache::Hit, Some(hit.layer)).await;
    }
    w.metrics().list_miss(x.bucket);
    match w.cache.inflight().join(&ckey) {
        Role::Leader(leader) => lead(x, &target, leader, ttl.as_millis() as u64).await,
        Role::Follower(sub) => {
            w.metrics().coalesced(x.bucket);
            if let Some(sent) = fill::follow(x, sub).await {
                return sent;
            }
            // The leader's answer was not cacheable: this request makes its own.
            let (head, body) = fetch_origin(w, x.bucket, &bucket_request(false, &params)).await?;
            respond_upstream(x, head, body, XCache::Miss).await
        }
    }
}

/// Fetches a listing for everyone waiting on `leader` and stores it for `ttl_ms`.
async fn lead<S: AsyncWriteRent>(
    x: &mut Exchange<'_, '_, '_, S>,
    t: &Target<'_>,
    leader: Leader,
    ttl_ms: u64,
) -> Result<Sent, Error> {
    let (w, bucket) = (x.w, x.bucket);
    let (head, body) = match fetch_origin(w, bucket, &bucket_request(false, t.params)).await {
        Ok(answer) => answer,
        Err(e) => {
            leader.fail(e.clone());
            return Err(e);
        }
    };
    x.note_upstream(&head, XCache::Miss);
    if head.status != 200 {
        let e = origin_error::read_and_map(w, bucket, &head, body).await;
        leader.fail(e.clone());
        return Err(e);
    }
    let now = w.clock().now_ms();
    let meta = Meta::new(stored_headers(&head), now, now.saturating_add(ttl_ms));
    let max = w.cache.max_object_size();
    match body.content_length() {
        Some(len) if len <= max => {
            let sub = leader.subscribe();
            fill::start(w, bucket, t, meta, len, body, leader);
            fill::follow(x, sub).await.unwrap_or_else(|| {
                Err(Error::internal(
                    "a listing's fill told its own client to fetch elsewhere",
                ))
            })
        }
        Some(_) => {
            leader.bypass();
            respond_upstream(x, head, body, XCache::Miss).await
        }
        None => {
            leader.bypass();
            fill::stream_and_store(x, t, head, body, meta).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_is_escaped() {
        assert_eq!(xml_escape("a<b>&\"c"), "a&lt;b&gt;&amp;&quot;c");
    }
}

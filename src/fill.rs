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
    w.shared.tiers.store(
        ckey,
        CachedObject {
            meta,
            body: Bytes::from(all),
        },
    );
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

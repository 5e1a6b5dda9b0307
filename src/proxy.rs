//! The object route: forward a GET/HEAD to the bucket's origin and stream the answer back.
//!
//! This is the pass-through path; the cache tiers slot in front of [`fetch_origin`] (lookup)
//! and around the body loop in [`stream_body`] (fill), without changing either.
//!
//! Origin answers are mapped so that clients see corvid's contract, not S3's XML:
//! 200/206/304 pass through with the headers in [`PASSED_HEADERS`] and `x-amz-meta-*`;
//! 403, 404, 412 and 416 keep their status with a JSON error body; any other status
//! (S3's 400 for a bad request we built, 301 for a wrong region, 5xx) becomes 502, since the
//! client can do nothing about it.

use std::rc::Rc;
use std::time::SystemTime;

use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::time::Instant;

use crate::cache::entry::{CachedObject, Meta};
use crate::cache::inflight::Role;
use crate::cache::policy::cache_key_into;
use crate::cache::tiered::Layer;
use crate::cors;
use crate::error::{Error, Kind};
use crate::http::conditional::{self, Conditionals, Precondition};
use crate::http::conn::{Request, Sent};
use crate::http::range::{self, RangeDecision};
use crate::http::request::Method;
use crate::http::respond::{self, Reply};
use crate::http::response::{end_head, write_header, write_header_u64, UpstreamHead};
use crate::metrics::UpstreamOutcome;
use crate::router::forwarded_query;
use crate::runtime::worker::Worker;
use crate::s3::client::Body;
use crate::s3::request::{build_request, ObjectRequest, FORWARDED_HEADERS};

/// Origin response headers passed to the client, besides `x-amz-meta-*`: (lowercase name as
/// parsed, the spelling corvid writes).
pub const PASSED_HEADERS: [(&str, &str); 10] = [
    ("content-type", "Content-Type"),
    ("content-range", "Content-Range"),
    ("etag", "ETag"),
    ("last-modified", "Last-Modified"),
    ("cache-control", "Cache-Control"),
    ("content-encoding", "Content-Encoding"),
    ("content-disposition", "Content-Disposition"),
    ("content-language", "Content-Language"),
    ("expires", "Expires"),
    ("x-amz-version-id", "x-amz-version-id"),
];

/// The spelling corvid writes for a passed origin header, or None when it is not passed.
pub fn passed_header_name(lowercase: &str) -> Option<&str> {
    PASSED_HEADERS
        .iter()
        .find(|(l, _)| *l == lowercase)
        .map(|(_, display)| *display)
        .or_else(|| lowercase.starts_with("x-amz-meta-").then_some(lowercase))
}

/// Body bytes moved per read/write; bounds the memory one streaming response holds.
pub const STREAM_CHUNK: usize = 64 * 1024;
/// An origin error body up to this size is read and dropped so the connection can be reused.
const MAX_DRAINED_ERROR_BODY: u64 = 64 * 1024;

pub async fn serve_object<S: AsyncReadRent + AsyncWriteRent>(
    w: &Rc<Worker>,
    io: &mut S,
    out: &mut Vec<u8>,
    req: &Request<'_>,
    bucket: usize,
    key: &str,
    query: Option<&str>,
) -> Result<Sent, Error> {
    match req.method() {
        Method::Get | Method::Head => {}
        Method::Options => return options(w, io, out, req, bucket).await,
        _ => return Err(Error::method_not_allowed("GET, HEAD, OPTIONS")),
    }
    let params = forwarded_query(query)?;
    let tiers = &w.shared.tiers;
    if !tiers.enabled() {
        return pass_through(w, io, out, req, bucket, key, &params, XCache::Bypass).await;
    }
    // In a recycled buffer: a hit allocates nothing (issue 4).
    let mut ckey = w.scratch();
    cache_key_into(
        &mut ckey,
        &w.shared.config.buckets[bucket].name,
        key,
        &params,
    );
    let now = now_ms();
    let hit = match tiers.lookup(&ckey).await {
        Some(hit) => Some(hit),
        None => crate::fill::redis_lookup(w, &ckey).await,
    };
    if let Some(hit) = hit {
        if hit.obj.meta.is_fresh(now) {
            w.metrics().cache_hit(bucket, hit.layer);
            return serve_cached(
                w,
                io,
                out,
                req,
                bucket,
                &hit.obj,
                XCache::Hit,
                Some(hit.layer),
            )
            .await;
        }
        return crate::revalidate::revalidate(w, io, out, req, bucket, key, &params, &ckey, hit)
            .await;
    }
    w.metrics().cache_miss(bucket);
    // Ranges and HEADs of uncached objects go to the origin as they are (not cached); a full
    // GET fills the cache, coalesced with every concurrent request for the same key.
    if req.method() == Method::Get && req.header("range").is_none() {
        match tiers.inflight.join(&ckey) {
            Role::Leader(leader) => {
                return crate::fill::lead(w, io, out, req, bucket, key, &params, &ckey, leader)
                    .await
            }
            Role::Follower(sub) => {
                w.metrics().coalesced(bucket);
                if let Some(result) = crate::fill::follow(w, io, out, req, bucket, sub).await {
                    return result;
                }
                // The leader's answer is not cacheable: fetch our own.
            }
        }
    }
    pass_through(w, io, out, req, bucket, key, &params, XCache::Miss).await
}

/// The `X-Cache` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XCache {
    Hit,
    Miss,
    Revalidated,
    Stale,
    Bypass,
}

impl XCache {
    pub fn as_bytes(self) -> &'static [u8] {
        match self {
            XCache::Hit => b"HIT",
            XCache::Miss => b"MISS",
            XCache::Revalidated => b"REVALIDATED",
            XCache::Stale => b"STALE",
            XCache::Bypass => b"BYPASS",
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Answers from a cached object: client conditionals (304/412), ranges (206/416), HEAD, and
/// otherwise the whole body — written together with the head in one vectored write, never
/// copied.
#[allow(clippy::too_many_arguments)]
pub async fn serve_cached<S: AsyncWriteRent>(
    w: &Rc<Worker>,
    io: &mut S,
    out: &mut Vec<u8>,
    req: &Request<'_>,
    bucket: usize,
    obj: &CachedObject,
    xcache: XCache,
    layer: Option<Layer>,
) -> Result<Sent, Error> {
    let meta = &obj.meta;
    let len = obj.body.len() as u64;
    let (status, body) =
        match conditional::evaluate(&client_conditionals(req), meta.etag(), meta.last_modified()) {
            Precondition::Failed => {
                return Err(Error::client(
                    Kind::PreconditionFailed,
                    "a precondition of the request failed",
                ))
            }
            Precondition::NotModified => (304, None),
            Precondition::Proceed => {
                let allowed = range::if_range_allows(
                    req.header("if-range"),
                    meta.etag(),
                    meta.last_modified(),
                );
                match range::evaluate(req.header("range").filter(|_| allowed), len) {
                    RangeDecision::Full => (200, Some((0, len))),
                    RangeDecision::Partial { start, end } => (206, Some((start, end + 1))),
                    RangeDecision::Unsatisfiable => {
                        return Err(Error::client(
                            Kind::RangeNotSatisfiable,
                            format!("the object has {len} bytes"),
                        ))
                    }
                }
            }
        };
    write_object_head(w, out, req, bucket, status, meta, xcache, layer);
    if let Some((start, end)) = body {
        if status == 206 {
            let mut buf = [0u8; 72];
            let cr = format_content_range(&mut buf, start, end - 1, len);
            write_header(out, "Content-Range", cr);
        }
        write_header_u64(out, "Content-Length", end - start);
    }
    end_head(out);
    let send_body = body.filter(|(s, e)| !req.is_head() && e > s);
    let abort = match send_body {
        None => respond::flush(w, io, out).await.is_err(),
        Some((start, end)) => {
            let mut hb = w.head_body();
            hb.set(out, obj.body.slice(start as usize..end as usize));
            let write = hb.write_all(io);
            let (res, mut hb) =
                match monoio::time::timeout(w.shared.config.server.send_timeout, write).await {
                    Ok(r) => r,
                    Err(_) => {
                        return Ok(Sent {
                            status,
                            abort: true,
                        })
                    }
                };
            hb.take_head(out);
            w.return_head_body(hb);
            res.is_err()
        }
    };
    Ok(Sent { status, abort })
}

/// The head lines shared by every answer that comes from (or goes into) the cache: status,
/// the stored origin headers, `Accept-Ranges`, `Age`, `X-Cache`, `X-Cache-Layer`, CORS.
/// The caller adds the length headers and ends the head.
#[allow(clippy::too_many_arguments)]
pub fn write_object_head(
    w: &Worker,
    out: &mut Vec<u8>,
    req: &Request<'_>,
    bucket: usize,
    status: u16,
    meta: &Meta,
    xcache: XCache,
    layer: Option<Layer>,
) {
    respond::head_start(out, w, status, &req.id, req.close);
    out.extend_from_slice(meta.header_block());
    write_header(out, "Accept-Ranges", b"bytes");
    if xcache != XCache::Miss {
        let age = now_ms().saturating_sub(meta.stored_at_ms) / 1000;
        write_header_u64(out, "Age", age);
    }
    write_header(out, "X-Cache", xcache.as_bytes());
    if let Some(l) = layer {
        write_header(out, "X-Cache-Layer", l.name().as_bytes());
    }
    write_cors(w, out, req, bucket);
}

fn write_cors(w: &Worker, out: &mut Vec<u8>, req: &Request<'_>, bucket: usize) {
    let allowed = w.shared.config.buckets[bucket]
        .cors
        .as_ref()
        .zip(req.header_str("origin"))
        .and_then(|(c, o)| cors::allow_origin(c, o));
    if let Some(o) = allowed {
        write_header(out, "Access-Control-Allow-Origin", o.as_bytes());
        write_header(
            out,
            "Access-Control-Expose-Headers",
            cors::EXPOSE_HEADERS.as_bytes(),
        );
        write_header(out, "Vary", b"Origin");
    }
}

/// The client's conditional headers.
pub fn client_conditionals<'a>(req: &'a Request<'_>) -> Conditionals<'a> {
    Conditionals {
        if_match: req.header("if-match"),
        if_none_match: req.header("if-none-match"),
        if_modified_since: req.header("if-modified-since"),
        if_unmodified_since: req.header("if-unmodified-since"),
    }
}

/// `bytes first-last/len` into `buf`, without allocating.
fn format_content_range(buf: &mut [u8; 72], first: u64, last: u64, len: u64) -> &[u8] {
    use std::io::Write;
    let mut c = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(c, "bytes {first}-{last}/{len}");
    let n = c.position() as usize;
    &buf[..n]
}

/// The origin's passed headers, in the spelling corvid writes, for a cache entry.
pub fn stored_headers(head: &UpstreamHead) -> Vec<(String, String)> {
    head.headers
        .iter()
        .filter(|(n, _)| n != "content-range")
        .filter_map(|(n, v)| passed_header_name(n).map(|d| (d.to_string(), v.clone())))
        .collect()
}

/// Forwards the request to the origin as it is (client conditionals and range included) and
/// streams the answer back; nothing is cached.
#[allow(clippy::too_many_arguments)]
pub async fn pass_through<S: AsyncWriteRent>(
    w: &Rc<Worker>,
    io: &mut S,
    out: &mut Vec<u8>,
    req: &Request<'_>,
    bucket: usize,
    key: &str,
    params: &[(String, String)],
    xcache: XCache,
) -> Result<Sent, Error> {
    let mut forwarded: Vec<(&'static str, &str)> = Vec::new();
    for name in FORWARDED_HEADERS {
        if let Some(v) = req.header(name) {
            let v = std::str::from_utf8(v)
                .map_err(|_| Error::client(Kind::BadRequest, "header value is not valid UTF-8"))?;
            forwarded.push((name, v));
        }
    }
    let (head, body) = fetch_origin(w, bucket, req.is_head(), key, params, &forwarded).await?;
    respond_upstream(w, io, out, req, bucket, head, body, xcache).await
}

/// Writes an origin answer to the client (status mapping, passed headers, streaming body).
#[allow(clippy::too_many_arguments)]
pub async fn respond_upstream<S: AsyncWriteRent>(
    w: &Rc<Worker>,
    io: &mut S,
    out: &mut Vec<u8>,
    req: &Request<'_>,
    bucket: usize,
    head: UpstreamHead,
    body: Body,
    xcache: XCache,
) -> Result<Sent, Error> {
    match head.status {
        200 | 206 | 304 => {}
        status => {
            drain_error_body(body).await;
            return Err(map_origin_status(status));
        }
    }
    let length = if head.status == 304 {
        None
    } else if req.is_head() {
        head.header("content-length")
            .and_then(|v| v.parse::<u64>().ok())
    } else {
        body.content_length()
    };
    // Unknown length (a chunked or close-delimited origin answer): re-chunk for HTTP/1.1
    // clients, close-delimit for HTTP/1.0 ones.
    let has_body = !req.is_head() && head.status != 304;
    let chunked = has_body && length.is_none() && req.head.minor_version() == 1;
    let close = req.close || (has_body && length.is_none() && !chunked);

    respond::head_start(out, w, head.status, &req.id, close);
    for (name, value) in &head.headers {
        if let Some(display) = passed_header_name(name) {
            write_header(out, display, value.as_bytes());
        }
    }
    if let Some(n) = length {
        write_header_u64(out, "Content-Length", n);
    }
    if chunked {
        write_header(out, "Transfer-Encoding", b"chunked");
    }
    write_header(out, "Accept-Ranges", b"bytes");
    write_header(out, "X-Cache", xcache.as_bytes());
    write_cors(w, out, req, bucket);
    end_head(out);

    let status = head.status;
    if !has_body {
        let abort = respond::flush(w, io, out).await.is_err();
        return Ok(Sent { status, abort });
    }
    let abort = stream_body(w, io, out, body, chunked).await.is_err();
    Ok(Sent {
        status,
        abort: abort || close,
    })
}

/// Signs and sends the upstream request; returns the origin's head and body.
pub async fn fetch_origin(
    w: &Rc<Worker>,
    bucket: usize,
    is_head: bool,
    key: &str,
    query: &[(String, String)],
    headers: &[(&'static str, &str)],
) -> Result<(UpstreamHead, Body), Error> {
    let cfg = &w.shared.config.buckets[bucket];
    let wb = &w.buckets[bucket];
    let mut request = Vec::with_capacity(1024);
    build_request(
        cfg,
        &wb.signer,
        &ObjectRequest {
            method: if is_head { "HEAD" } else { "GET" },
            key,
            query,
            headers,
        },
        SystemTime::now(),
        &mut request,
    );
    let t0 = Instant::now();
    let (res, _) = wb.pool.send(request, is_head, &wb.timeouts).await;
    let outcome = match &res {
        Ok((h, _)) => UpstreamOutcome::Status(h.status),
        Err(e) if e.kind() == Kind::GatewayTimeout => UpstreamOutcome::Timeout,
        Err(_) => UpstreamOutcome::Error,
    };
    w.metrics().upstream(bucket, outcome, t0.elapsed());
    res
}

/// Streams the origin body to the client, `out` already holding the response head: each read
/// from the origin is written before the next read (backpressure: a slow client slows the
/// origin read, corvid never buffers the object). Errors mean the response is cut short.
async fn stream_body<S: AsyncWriteRent>(
    w: &Worker,
    io: &mut S,
    out: &mut Vec<u8>,
    mut body: Body,
    chunked: bool,
) -> Result<(), ()> {
    let mut piece: Vec<u8> = Vec::new();
    loop {
        let n = if chunked {
            piece.clear();
            piece.reserve(STREAM_CHUNK);
            let (res, p) = body.read_into(std::mem::take(&mut piece)).await;
            piece = p;
            let n = res.map_err(|e| log::warn!("origin body: {e}"))?;
            if n > 0 {
                out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
                out.extend_from_slice(&piece);
                out.extend_from_slice(b"\r\n");
            } else {
                out.extend_from_slice(b"0\r\n\r\n");
            }
            n
        } else {
            if out.capacity() - out.len() < STREAM_CHUNK / 2 {
                out.reserve(STREAM_CHUNK);
            }
            let (res, o) = body.read_into(std::mem::take(out)).await;
            *out = o;
            res.map_err(|e| log::warn!("origin body: {e}"))?
        };
        if !out.is_empty() {
            respond::flush(w, io, out).await.map_err(|_| ())?;
        }
        if n == 0 {
            return Ok(());
        }
    }
}

/// Reads a small origin error body to its end so the connection returns to the pool.
pub async fn drain_error_body(mut body: Body) {
    if body
        .content_length()
        .is_none_or(|n| n > MAX_DRAINED_ERROR_BODY)
    {
        return;
    }
    let mut scratch = Vec::with_capacity(MAX_DRAINED_ERROR_BODY as usize);
    while !body.is_done() {
        scratch.clear();
        let (res, s) = body.read_into(scratch).await;
        scratch = s;
        if !matches!(res, Ok(n) if n > 0) {
            return;
        }
    }
}

/// The client-facing error for an origin status other than 200/206/304.
pub fn map_origin_status(status: u16) -> Error {
    match status {
        403 => Error::upstream(Kind::Forbidden, "the origin refused access to this object"),
        404 => Error::upstream(Kind::NotFound, "no such object"),
        412 => Error::upstream(
            Kind::PreconditionFailed,
            "a precondition of the request failed",
        ),
        416 => Error::upstream(
            Kind::RangeNotSatisfiable,
            "the requested range is not satisfiable",
        ),
        s => Error::upstream(
            Kind::BadGateway,
            format!("the origin answered with status {s}"),
        ),
    }
}

/// `OPTIONS` on an object route: a CORS preflight for buckets with `cors`, else the allowed
/// methods.
async fn options<S: AsyncWriteRent>(
    w: &Rc<Worker>,
    io: &mut S,
    out: &mut Vec<u8>,
    req: &Request<'_>,
    bucket: usize,
) -> Result<Sent, Error> {
    let allow = [("Allow", "GET, HEAD, OPTIONS")];
    let Some(cfg) = w.shared.config.buckets[bucket].cors.as_ref() else {
        let reply = Reply {
            status: 204,
            content_type: "",
            body: b"",
            extra: &allow,
        };
        return respond::simple(w, io, out, req, reply).await;
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
    respond::simple(w, io, out, req, reply).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_status_mapping() {
        assert_eq!(map_origin_status(403).status(), 403);
        assert_eq!(map_origin_status(404).status(), 404);
        assert_eq!(map_origin_status(412).status(), 412);
        assert_eq!(map_origin_status(416).status(), 416);
        assert_eq!(map_origin_status(400).status(), 502);
        assert_eq!(map_origin_status(301).status(), 502);
        assert_eq!(map_origin_status(503).status(), 502);
    }
}

//! The object route: answer a GET/HEAD from the cache tiers or the bucket's origin.
//!
//! [`serve_object`] is the request path: look the key up (memory → disk → Redis); a fresh
//! hit is answered by [`serve_cached`], a stale one goes to [`crate::revalidate`]; a full GET
//! miss leads or follows a coalesced fill ([`crate::fill`]); HEAD and Range misses are passed
//! through as asked (a Range miss may start a background fill of the whole object). With no
//! cache tier enabled every request is passed through ([`pass_through`]).
//!
//! Origin answers are mapped so that clients see corvid's contract, not S3's XML:
//! 200/206/304 pass through with the headers in [`PASSED_HEADERS`] and `x-amz-meta-*`;
//! any other status becomes a JSON error ([`crate::origin_error`] reads the small XML error
//! body; the table of what each status becomes is in [`crate::s3::errors`]).

use std::rc::Rc;
use std::time::SystemTime;

use bytes::Bytes;

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

/// One object request being answered: the worker answering it, the client stream and the
/// worker's reusable head buffer the answer goes to, the parsed request and its bucket. The
/// request-path functions of this module, `fill` and `revalidate` take it instead of the same
/// five parameters each.
pub struct Exchange<'a, 'r, S> {
    pub w: &'a Rc<Worker>,
    pub io: &'a mut S,
    /// The response head being built; kept between requests so a hit allocates no head.
    pub out: &'a mut Vec<u8>,
    pub req: &'a Request<'r>,
    /// Index into `config.buckets`.
    pub bucket: usize,
}

impl<S: AsyncWriteRent> Exchange<'_, '_, S> {
    /// Writes the head pending in `out` within the send timeout.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        respond::flush(&self.w.http, self.io, self.out).await
    }

    /// Answers `e` as a JSON error.
    pub async fn error(&mut self, e: &Error) -> std::io::Result<()> {
        let req = self.req;
        respond::error(
            &self.w.http,
            self.io,
            self.out,
            req.id,
            req.close,
            req.is_head(),
            e,
        )
        .await
    }
}

/// The object a request names: its key at the origin, the forwarded query parameters
/// (`versionId`, `response-*`) and the cache key built from them.
pub struct Target<'a> {
    pub key: &'a str,
    pub params: &'a [(&'a str, &'a str)],
    pub ckey: &'a [u8],
    /// The purge generation when the request began: what it fetches is stored only if no
    /// purge began since ([`crate::cache::tiered::Tiers::generation`]).
    pub generation: u64,
}

/// Whether concurrent requests for a key may share one origin GET: a full GET's answer is
/// what every such request needs; a HEAD or a Range request must never get a full body by
/// mistake, so those make their own requests.
pub fn coalescible(req: &Request<'_>) -> bool {
    req.method() == Method::Get && req.header("range").is_none()
}

pub async fn serve_object<S: AsyncReadRent + AsyncWriteRent>(
    x: &mut Exchange<'_, '_, S>,
    key: &str,
    query: Option<&str>,
) -> Result<Sent, Error> {
    match x.req.method() {
        Method::Get | Method::Head => {}
        Method::Options => return options(x).await,
        _ => return Err(Error::method_not_allowed("GET, HEAD, OPTIONS")),
    }
    let w = x.w;
    // Decoded into a recycled buffer, like the cache key below: a hit allocates nothing.
    let mut decoded = w.scratch();
    let params = forwarded_query(query, &mut decoded)?;
    let tiers = &w.shared.tiers;
    // Redis alone is a cache too (an instance with no memory or disk of its own).
    if !tiers.enabled() && w.redis.is_none() {
        return pass_through(x, key, &params, XCache::Bypass).await;
    }
    // In a recycled buffer: a hit allocates nothing (issue 4).
    let mut ckey = w.scratch();
    cache_key_into(
        &mut ckey,
        &w.shared.config.buckets[x.bucket].name,
        key,
        &params,
    );
    let target = Target {
        key,
        params: &params,
        ckey: &ckey,
        generation: tiers.generation(),
    };
    let now = now_ms();
    let hit = match tiers.lookup(&ckey).await {
        Some(hit) => Some(hit),
        None => crate::fill::redis_lookup(w, &ckey, target.generation).await,
    };
    if let Some(hit) = hit {
        if hit.obj.meta.is_fresh(now) {
            w.metrics().cache_hit(x.bucket, hit.layer);
            return serve_cached(x, &hit.obj, XCache::Hit, Some(hit.layer)).await;
        }
        return crate::revalidate::revalidate(x, &target, hit).await;
    }
    w.metrics().cache_miss(x.bucket);
    // Ranges and HEADs of uncached objects go to the origin as they are (not cached); a full
    // GET fills the cache, coalesced with every concurrent request for the same key.
    if coalescible(x.req) {
        match tiers.inflight.join(&ckey) {
            Role::Leader(leader) => return crate::fill::lead(x, &target, leader).await,
            Role::Follower(sub) => {
                w.metrics().coalesced(x.bucket);
                if let Some(result) = crate::fill::follow(x, sub).await {
                    return result;
                }
                // The leader's answer is not cacheable: fetch our own.
            }
        }
    }
    let (head, body) = fetch_as_asked(x, key, &params).await?;
    if x.req.method() == Method::Get && x.req.header("range").is_some() {
        fill_after_range_miss(x, &target, &head);
    }
    respond_upstream(x, head, body, XCache::Miss).await
}

/// A Range miss is answered by the origin as asked, and — when the 206 shows the whole object
/// is cacheable — the whole object is fetched into the cache in the background, so clients
/// that only ever ask for ranges (parallel downloaders, media players) get hits from then on.
/// It costs one extra full GET per object, never one per range: the background fill holds the
/// key in the coalescing table, and an object too large to cache is never fetched whole.
fn fill_after_range_miss<S>(x: &Exchange<'_, '_, S>, t: &Target<'_>, head: &UpstreamHead) {
    let whole = head
        .header("content-range")
        .and_then(range::content_range_complete);
    let storable = whole.and_then(|len| crate::fill::storable_for(x.w, x.bucket, head, len));
    if head.status == 206 && storable.is_some() {
        crate::fill::fill_in_background(x.w, x.bucket, t, None);
    }
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

/// Milliseconds since the Unix epoch (the disk tier's clock, one for the whole process).
pub fn now_ms() -> u64 {
    crate::cache::disk::now_ms()
}

/// Answers from a cached object: client conditionals (304/412), ranges (206/416), HEAD, and
/// otherwise the whole body — written together with the head in one vectored write, never
/// copied.
pub async fn serve_cached<S: AsyncWriteRent>(
    x: &mut Exchange<'_, '_, S>,
    obj: &CachedObject,
    xcache: XCache,
    layer: Option<Layer>,
) -> Result<Sent, Error> {
    let req = x.req;
    let meta = &obj.meta;
    let len = obj.body.len() as u64;
    let (status, body) = match client_precondition(req, meta) {
        Precondition::Failed => {
            return Err(Error::client(
                Kind::PreconditionFailed,
                "a precondition of the request failed",
            ))
        }
        Precondition::NotModified => (304, None),
        Precondition::Proceed => {
            let range = req.header("range").filter(|_| {
                range::if_range_allows(req.header("if-range"), meta.etag(), meta.last_modified())
            });
            match range::evaluate(range, len) {
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
    write_object_head(x, status, meta, xcache, layer);
    let out = &mut *x.out;
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
    if let (Some((start, end)), Some(layer)) = (send_body, layer) {
        // Bytes served from cache (`corvid_cache_hit_bytes_total`, stats `bytes_served`):
        // one relaxed add in this worker's slot, nothing allocated.
        x.w.metrics().cache_hit_bytes(x.bucket, layer, end - start);
    }
    let result = match send_body {
        None => x.flush().await,
        Some((start, end)) => {
            send_with_head(
                x.w,
                x.io,
                x.out,
                obj.body.slice(start as usize..end as usize),
            )
            .await
        }
    };
    Ok(Sent {
        status,
        abort: result.is_err(),
    })
}

/// Writes the head pending in `out` and `body` in one vectored write within the send
/// timeout, without copying the body; `out` comes back cleared for reuse.
pub async fn send_with_head<S: AsyncWriteRent>(
    w: &Worker,
    io: &mut S,
    out: &mut Vec<u8>,
    body: Bytes,
) -> std::io::Result<()> {
    let mut hb = w.head_body();
    hb.set(out, body);
    match monoio::time::timeout(w.shared.config.server.send_timeout, hb.write_all(io)).await {
        Ok((res, mut hb)) => {
            hb.take_head(out);
            w.return_head_body(hb);
            res
        }
        // The write future (and the buffer it owned) is gone; the connection is closed after
        // this, so `out` starts again empty.
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "client did not read the response in time",
        )),
    }
}

/// The head lines shared by every answer that comes from (or goes into) the cache: status,
/// the stored origin headers, `Accept-Ranges`, `Age`, `X-Cache`, `X-Cache-Layer`, CORS.
/// The caller adds the length headers and ends the head.
pub fn write_object_head<S>(
    x: &mut Exchange<'_, '_, S>,
    status: u16,
    meta: &Meta,
    xcache: XCache,
    layer: Option<Layer>,
) {
    let out = &mut *x.out;
    respond::head_start(out, &x.w.http, status, &x.req.id, x.req.close);
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
    write_cors(x.w, out, x.req, x.bucket);
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

/// The request's preconditions evaluated against `meta`. The stored validators are looked up
/// only when the request carries conditionals: most carry none.
pub fn client_precondition(req: &Request<'_>, meta: &Meta) -> Precondition {
    let c = Conditionals {
        if_match: req.header("if-match"),
        if_none_match: req.header("if-none-match"),
        if_modified_since: req.header("if-modified-since"),
        if_unmodified_since: req.header("if-unmodified-since"),
    };
    if c.is_empty() {
        return Precondition::Proceed;
    }
    conditional::evaluate(&c, meta.etag(), meta.last_modified())
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
pub async fn pass_through<S: AsyncWriteRent>(
    x: &mut Exchange<'_, '_, S>,
    key: &str,
    params: &[(&str, &str)],
    xcache: XCache,
) -> Result<Sent, Error> {
    let (head, body) = fetch_as_asked(x, key, params).await?;
    respond_upstream(x, head, body, xcache).await
}

/// Sends the client's request to the origin as it is: its conditionals and range included.
async fn fetch_as_asked<S>(
    x: &Exchange<'_, '_, S>,
    key: &str,
    params: &[(&str, &str)],
) -> Result<(UpstreamHead, Body), Error> {
    let mut forwarded: Vec<(&'static str, &str)> = Vec::new();
    for name in FORWARDED_HEADERS {
        if let Some(v) = x.req.header(name) {
            let v = std::str::from_utf8(v)
                .map_err(|_| Error::client(Kind::BadRequest, "header value is not valid UTF-8"))?;
            forwarded.push((name, v));
        }
    }
    fetch_origin(x.w, x.bucket, x.req.is_head(), key, params, &forwarded).await
}

/// Writes an origin answer to the client (status mapping, passed headers, streaming body).
pub async fn respond_upstream<S: AsyncWriteRent>(
    x: &mut Exchange<'_, '_, S>,
    head: UpstreamHead,
    body: Body,
    xcache: XCache,
) -> Result<Sent, Error> {
    let req = x.req;
    match head.status {
        200 | 206 | 304 => {}
        _ => return Err(crate::origin_error::read_and_map(x.w, x.bucket, &head, body).await),
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

    let out = &mut *x.out;
    respond::head_start(out, &x.w.http, head.status, &req.id, close);
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
    write_cors(x.w, out, req, x.bucket);
    end_head(out);

    let status = head.status;
    if !has_body {
        let abort = x.flush().await.is_err();
        return Ok(Sent { status, abort });
    }
    let abort = stream_body(x.w, x.bucket, x.io, x.out, body, chunked)
        .await
        .is_err();
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
    query: &[(&str, &str)],
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
    bucket: usize,
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
            w.metrics().upstream_bytes(bucket, n as u64);
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
            let n = res.map_err(|e| log::warn!("origin body: {e}"))?;
            w.metrics().upstream_bytes(bucket, n as u64);
            n
        };
        if !out.is_empty() {
            respond::flush(&w.http, io, out).await.map_err(|_| ())?;
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

/// `OPTIONS` on an object route: a CORS preflight for buckets with `cors`, else the allowed
/// methods.
async fn options<S: AsyncWriteRent>(x: &mut Exchange<'_, '_, S>) -> Result<Sent, Error> {
    let allow = [("Allow", "GET, HEAD, OPTIONS")];
    let req = x.req;
    let Some(cfg) = x.w.shared.config.buckets[x.bucket].cors.as_ref() else {
        let reply = Reply {
            status: 204,
            content_type: "",
            body: b"",
            extra: &allow,
        };
        return respond::simple(&x.w.http, x.io, x.out, req, reply).await;
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
    respond::simple(&x.w.http, x.io, x.out, req, reply).await
}

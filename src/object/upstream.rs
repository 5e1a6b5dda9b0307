//! The origin side of the object path: signing and sending the upstream request, passing an
//! origin answer through to the client, and mapping origin statuses.
//!
//! Origin answers are mapped so that clients see corvid's contract, not S3's XML:
//! 200/206/304 pass through with the headers in [`PASSED_HEADERS`] and `x-amz-meta-*` (those
//! a client's `response-*` overrides replace excepted: [`super::overrides`]);
//! any other status becomes a JSON error ([`super::origin_error`] reads the small XML error
//! body; the table of what each status becomes is in [`crate::s3::errors`]).

use std::rc::Rc;
use std::time::SystemTime;

use monoio::io::AsyncWriteRent;
use monoio::time::Instant;

use super::answer::precondition_for;
use super::exchange::{Exchange, Target, XCache, STREAM_CHUNK};
use super::origin_error;
use crate::context::Worker;
use crate::error::{Error, Kind};
use crate::fleet::client::{self, PeerRequest, SliceOf};
use crate::fleet::Route;
use crate::http::conditional::Precondition;
use crate::http::conn::Sent;
use crate::http::response::UpstreamHead;
use crate::http::writer::{DateField, Writer};
use crate::metrics::{PeerFallback, UpstreamOutcome};
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

/// An origin error body up to this size is read and dropped so the connection can be reused.
const MAX_DRAINED_ERROR_BODY: u64 = 64 * 1024;

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
    x: &mut Exchange<'_, '_, '_, S>,
    key: &str,
    params: &[(&str, &str)],
    xcache: XCache,
) -> Result<Sent, Error> {
    let (head, body) = fetch_as_asked(x, None, key, params).await?;
    respond_upstream(x, head, body, xcache).await
}

/// Sends the client's request to the origin as it is: its conditionals and range included
/// (to the key's owner in a fleet when `route` is given: [`fetch_origin`]).
pub async fn fetch_as_asked<S>(
    x: &Exchange<'_, '_, '_, S>,
    route: Option<&[u8]>,
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
    let asked = Asked {
        route,
        is_head: x.req.is_head(),
        key,
        query: params,
        headers: &forwarded,
        // A GET this instance would answer from slices when the owner holds them.
        want_entry: !x.req.is_head(),
        slice: None,
    };
    fetch_origin(x.w, x.bucket, &asked).await
}

/// Writes an origin answer to the client (status mapping, passed headers, streaming body).
pub async fn respond_upstream<S: AsyncWriteRent>(
    x: &mut Exchange<'_, '_, '_, S>,
    head: UpstreamHead,
    body: Body,
    xcache: XCache,
) -> Result<Sent, Error> {
    respond_upstream_keeping(x, head, body, xcache, None).await
}

/// A copy of a streamed origin body kept for the cache, up to a limit (a body of unknown
/// length, `object::fill`).
#[derive(Debug)]
pub struct Keep {
    bytes: Vec<u8>,
    limit: u64,
    over: bool,
    ended: bool,
}

impl Keep {
    pub fn up_to(limit: u64) -> Keep {
        Keep {
            bytes: Vec::new(),
            limit,
            over: false,
            ended: false,
        }
    }

    fn add(&mut self, piece: &[u8]) {
        if self.over {
            return;
        }
        if (self.bytes.len() + piece.len()) as u64 > self.limit {
            // Too large for any entry: stop copying and give the memory back at once.
            self.over = true;
            self.bytes = Vec::new();
            return;
        }
        self.bytes.extend_from_slice(piece);
    }

    /// The whole body, when the origin's body ended (not the client) within the limit.
    pub fn complete(self) -> Option<Vec<u8>> {
        (self.ended && !self.over).then_some(self.bytes)
    }
}

/// [`respond_upstream`], keeping a copy of the body in `keep` when given.
pub async fn respond_upstream_keeping<S: AsyncWriteRent>(
    x: &mut Exchange<'_, '_, '_, S>,
    head: UpstreamHead,
    body: Body,
    xcache: XCache,
    keep: Option<&mut Keep>,
) -> Result<Sent, Error> {
    let req = x.req;
    x.note_upstream(&head, xcache);
    match head.status {
        200 | 206 | 304 => {}
        _ => return Err(origin_error::read_and_map(x.w, x.bucket, &head, body).await),
    }
    // A fleet member's 200 for a shared fill was asked for without this client's conditionals
    // (a fill serves every coalesced client): they are evaluated here, as on a cached answer.
    let mut head = head;
    if head.peer.is_some() && head.status == 200 {
        match precondition_for(req, || (head.header("etag"), head.header("last-modified"))) {
            Precondition::Proceed => {}
            Precondition::NotModified => head.status = 304,
            Precondition::Failed => {
                return Err(Error::client(
                    Kind::PreconditionFailed,
                    "a precondition of the request failed",
                ))
            }
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

    let a = &mut *x.answer;
    // The origin's Date and Age pass through (RFC 9110 §6.6.1, RFC 9111 §5.1).
    let date = match head.header("date") {
        Some(d) => DateField::Given(d.as_bytes()),
        None => DateField::Now,
    };
    a.start(head.status, &req.id, close, date);
    for (name, value) in &head.headers {
        if let Some(display) = passed_header_name(name) {
            if !x.overrides.replaces(name) {
                a.header(display, value.as_bytes());
            }
        }
    }
    for (name, value) in x.overrides.fields() {
        a.header(name, value.as_bytes());
    }
    if let Some(age) = head.header("age") {
        a.header("Age", age.as_bytes());
    }
    if let Some(n) = length {
        a.header_u64("Content-Length", n);
    }
    if chunked {
        a.chunked();
    }
    a.header("Accept-Ranges", b"bytes");
    a.header("X-Cache", xcache.as_bytes());
    x.write_cors();
    x.answer.end_head();

    let status = head.status;
    if !has_body {
        let abort = x.answer.flush().await.is_err();
        return Ok(Sent { status, abort });
    }
    let abort = stream_body(x.w, x.bucket, x.answer, body, chunked, keep)
        .await
        .is_err();
    Ok(Sent {
        status,
        abort: abort || close,
    })
}

/// What one request to the origin (or to the key's owner) asks for.
pub struct Asked<'a> {
    /// The key the request is routed by in a fleet (a cache key or a slice's key: `None`
    /// always goes to the origin: a peer's request, a bypass).
    pub route: Option<&'a [u8]>,
    pub is_head: bool,
    /// The decoded object key.
    pub key: &'a str,
    /// Forwarded query parameters (`versionId`).
    pub query: &'a [(&'a str, &'a str)],
    /// Forwarded headers (`Range`, `If-*`), lowercase names.
    pub headers: &'a [(&'static str, &'a str)],
    /// For an owner only: an entry head rather than a sliced object's bytes (a GET that
    /// this instance will answer from slices; `crate::fleet::client::WANT`).
    pub want_entry: bool,
    /// For an owner only: this is a run of slices of that object (`crate::fleet::client::SLICE`).
    pub slice: Option<SliceOf>,
}

impl<'a> Asked<'a> {
    /// A request for target `t` (routed by its [`Target::route`]).
    pub fn of(t: &'a Target<'a>, is_head: bool, headers: &'a [(&'static str, &'a str)]) -> Self {
        Asked {
            route: t.route(),
            is_head,
            key: t.key,
            query: t.params,
            headers,
            want_entry: false,
            slice: None,
        }
    }
}

/// Asks for `a`: from the key's owner when this instance is one of a fleet and another member
/// owns `a.route` (`crate::fleet`), else — or when the owner is down or fails before its answer
/// head — from the bucket's origin, signed. A client request never fails because a peer did.
pub async fn fetch_origin(
    w: &Rc<Worker>,
    bucket: usize,
    a: &Asked<'_>,
) -> Result<(UpstreamHead, Body), Error> {
    if let (Some(route), Some(fleet)) = (a.route, w.shared.fleet.as_ref()) {
        match fleet.route(route) {
            Route::Local => {}
            Route::Down(_) => w.metrics().peer_fallback(PeerFallback::Down),
            Route::Peer(m) => {
                let req = PeerRequest {
                    is_head: a.is_head,
                    prefix: &w.shared.config.buckets[bucket].prefix,
                    key: a.key,
                    query: a.query,
                    headers: a.headers,
                    read_timeout: w.shared.config.buckets[bucket].read_timeout,
                    want_entry: a.want_entry,
                    slice: a.slice,
                };
                let (t0, sent_at_ms) = (Instant::now(), w.clock().now_ms());
                let res = client::fetch(&w.peers, fleet, &m, &req, w.clock().now_secs()).await;
                w.metrics().peer_request(outcome_of(&res));
                match res {
                    // A peer's 5xx is its failure or its origin's: the origin is asked
                    // directly, and a peer that is draining, not ready (503) or that refuses
                    // this instance's signature (403: another secret) is marked down.
                    Ok((head, body)) if head.status < 500 && head.status != 403 => {
                        let mut head = head;
                        head.sent_at_ms = sent_at_ms;
                        head.took = t0.elapsed();
                        head.names_version = names_version(a);
                        return Ok((head, body));
                    }
                    Ok((head, body)) => {
                        drain_error_body(body).await;
                        if matches!(head.status, 403 | 503) {
                            fleet.mark_down(&m);
                        }
                        log::warn!(
                            "peer {} answered {}: asking the origin",
                            m.name,
                            head.status
                        );
                    }
                    Err(e) => {
                        fleet.mark_down(&m);
                        log::warn!("peer {} failed ({e}): asking the origin", m.name);
                    }
                }
                w.metrics().peer_fallback(PeerFallback::Failed);
            }
        }
    }
    let cfg = &w.shared.config.buckets[bucket];
    let wb = &w.buckets[bucket];
    let mut request = Vec::with_capacity(1024);
    let now = SystemTime::now();
    build_request(
        cfg,
        &*wb.signer(now)?,
        &ObjectRequest {
            method: if a.is_head { "HEAD" } else { "GET" },
            key: a.key,
            query: a.query,
            headers: a.headers,
        },
        now,
        &mut request,
    );
    let t0 = Instant::now();
    let sent_at_ms = w.clock().now_ms();
    let (mut res, _) = wb.pool.send(request, a.is_head, &wb.timeouts).await;
    if let Ok((head, _)) = &mut res {
        head.sent_at_ms = sent_at_ms;
        head.took = t0.elapsed();
        head.names_version = names_version(a);
    }
    w.metrics().upstream(bucket, outcome_of(&res), t0.elapsed());
    res
}

/// What a request to an origin or a fleet member ended with, for the metrics.
fn outcome_of(res: &Result<(UpstreamHead, Body), Error>) -> UpstreamOutcome {
    match res {
        Ok((h, _)) => UpstreamOutcome::Status(h.status),
        Err(e) if e.kind() == Kind::GatewayTimeout => UpstreamOutcome::Timeout,
        Err(_) => UpstreamOutcome::Error,
    }
}

/// Whether `a` names one version of the object, whose stored answer is then immutable
/// ([`UpstreamHead::names_version`]). Not `versionId=null`: the *null* version is what a PUT
/// replaces in a bucket whose versioning is suspended (or was never enabled), so it can change.
fn names_version(a: &Asked<'_>) -> bool {
    a.query
        .iter()
        .any(|(n, v)| *n == "versionId" && !v.is_empty() && *v != "null")
}

/// Streams the origin body to the client, the response head pending in `answer`: each read
/// from the origin is written before the next read (backpressure: a slow client slows the
/// origin read, corvid never buffers the object; `keep` may copy it for the cache, bounded).
/// A body of known length is read straight into the writer's buffer (behind the head, on the
/// first read) and sent as read; an unknown-length one is re-chunked (`chunked`), each read
/// one chunk. Errors mean the response is cut short.
async fn stream_body<S: AsyncWriteRent>(
    w: &Worker,
    bucket: usize,
    answer: &mut Writer<'_, S>,
    mut body: Body,
    chunked: bool,
    mut keep: Option<&mut Keep>,
) -> Result<(), ()> {
    let mut piece: Vec<u8> = Vec::new();
    loop {
        let (buf, before) = if chunked {
            piece.clear();
            piece.reserve(STREAM_CHUNK);
            (std::mem::take(&mut piece), 0)
        } else {
            let buf = answer.body_buffer(STREAM_CHUNK);
            let before = buf.len();
            (buf, before)
        };
        let (res, buf) = body.read_into(buf).await;
        let n = match res {
            Ok(n) => n,
            Err(e) => {
                log::warn!("origin body: {e}");
                if !chunked {
                    // The response is cut short: what is pending is never sent.
                    answer.discard(buf);
                }
                return Err(());
            }
        };
        w.metrics().upstream_bytes(bucket, n as u64);
        if let Some(k) = keep.as_deref_mut() {
            k.add(&buf[before..before + n]);
            k.ended |= n == 0;
        }
        let sent = if chunked {
            piece = buf;
            match n {
                0 => answer.finish().await,
                _ => answer.send_slice(&piece).await,
            }
        } else {
            answer.send_buffer(buf).await
        };
        sent.map_err(|_| ())?;
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

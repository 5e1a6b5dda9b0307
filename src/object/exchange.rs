//! One object request being answered, and the writes every answer shares.
//!
//! [`Exchange`] bundles what each step of the object path needs (the worker, the client
//! stream, the reusable head buffer, the parsed request, its bucket); [`Target`] is the object
//! the request names and its cache key. The writes here — the head alone, the head with a body
//! in one vectored write, one more piece of body — all run within `server.send_timeout`, in
//! one place.

use std::rc::Rc;

use bytes::Bytes;
use monoio::io::{AsyncWriteRent, AsyncWriteRentExt};

use crate::context::Worker;
use crate::cors;
use crate::error::Error;
use crate::http::conn::{Request, RequestLog};
use crate::http::request::Method;
use crate::http::respond;
use crate::http::response::UpstreamHead;

/// Body bytes moved per read/write; bounds the memory one streaming response holds.
pub const STREAM_CHUNK: usize = 64 * 1024;

/// One object request being answered: the worker answering it, the client stream and the
/// worker's reusable head buffer the answer goes to, the parsed request and its bucket.
pub struct Exchange<'a, 'r, S> {
    pub w: &'a Rc<Worker>,
    pub io: &'a mut S,
    /// The response head being built; kept between requests so a hit allocates no head.
    pub out: &'a mut Vec<u8>,
    pub req: &'a Request<'r>,
    /// Index into `config.buckets`.
    pub bucket: usize,
    /// What the access log and metrics learn about this answer.
    pub log: &'a mut RequestLog,
}

impl<S: AsyncWriteRent> Exchange<'_, '_, S> {
    /// Writes the head pending in `out` within the send timeout.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        respond::flush(&self.w.http, self.io, self.out).await
    }

    /// Answers `e` as a JSON error (with the bucket's CORS headers, [`Exchange::write_cors`]).
    pub async fn error(&mut self, e: &Error) -> std::io::Result<()> {
        let req = self.req;
        let cors = self.w.shared.config.buckets[self.bucket].cors.as_ref();
        respond::error_with(
            &self.w.http,
            self.io,
            self.out,
            (req.id, req.close, req.is_head()),
            e,
            |out| {
                if let Some(cfg) = cors {
                    cors::write_headers(out, cfg, req.header_str("origin"));
                }
            },
        )
        .await
    }

    /// Writes the head pending in `out` and `body` in one vectored write within the send
    /// timeout, without copying the body; `out` comes back cleared for reuse.
    pub async fn send_with_head(&mut self, body: Bytes) -> std::io::Result<()> {
        let w = self.w;
        let mut hb = w.head_body();
        hb.set(self.out, body);
        // On a timeout the write (and the buffer it owned) is gone; the connection is closed
        // after this, so `out` starts again empty.
        let (res, mut hb) = respond::within_send_timeout(&w.http, hb.write_all(self.io)).await?;
        hb.take_head(self.out);
        w.return_head_body(hb);
        res
    }

    /// Sends one piece of body: the first one together with the pending head in `out`.
    pub async fn send_chunk(&mut self, chunk: Bytes) -> std::io::Result<()> {
        if !self.out.is_empty() {
            if chunk.len() > COPY_WITH_HEAD {
                return self.send_with_head(chunk).await;
            }
            self.out.extend_from_slice(&chunk);
            return self.flush().await;
        }
        let (res, _) = respond::within_send_timeout(&self.w.http, self.io.write_all(chunk)).await?;
        res.map(|_| ())
    }
}

/// A first piece of body at most this large is copied behind the pending head and sent in
/// one write; a larger one (a whole revalidated object) goes out with the head in one
/// vectored write instead, uncopied.
const COPY_WITH_HEAD: usize = 16 * 1024;

impl<S> Exchange<'_, '_, S> {
    /// Notes the origin's answer and the cache status for the access log.
    pub fn note_upstream(&mut self, head: &UpstreamHead, xcache: XCache) {
        self.log.upstream = Some((head.status, head.took));
        self.log.cache = Some(xcache.as_str());
    }

    /// Notes how an answer relates to the cache, for the access log.
    pub fn note_cache(&mut self, xcache: XCache, layer: Option<&'static str>) {
        self.log.cache = Some(xcache.as_str());
        self.log.layer = layer;
    }

    /// The CORS headers of an answer of a bucket with `cors`: allow/expose for an allowed
    /// `Origin`, and `Vary: Origin` on every answer (see [`cors`]).
    pub fn write_cors(&mut self) {
        if let Some(cfg) = self.w.shared.config.buckets[self.bucket].cors.as_ref() {
            cors::write_headers(self.out, cfg, self.req.header_str("origin"));
        }
    }
}

/// The object a request names: its key at the origin, the forwarded query parameters
/// (`versionId`, `response-*`) and the cache key built from them.
pub struct Target<'a> {
    pub key: &'a str,
    pub params: &'a [(&'a str, &'a str)],
    pub ckey: &'a [u8],
    /// The purge generation when the request began: what it fetches is stored only if no
    /// purge began since (`cache::tiered::Tiers::generation`).
    pub generation: u64,
}

/// Whether concurrent requests for a key may share one origin GET: a full GET's answer is
/// what every such request needs; a HEAD or a Range request must never get a full body by
/// mistake, so those make their own requests.
pub fn coalescible(req: &Request<'_>) -> bool {
    req.method() == Method::Get && req.header("range").is_none()
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
        self.as_str().as_bytes()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            XCache::Hit => "HIT",
            XCache::Miss => "MISS",
            XCache::Revalidated => "REVALIDATED",
            XCache::Stale => "STALE",
            XCache::Bypass => "BYPASS",
        }
    }
}

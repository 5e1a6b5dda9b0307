//! One object request being answered.
//!
//! [`Exchange`] bundles what each step of the object path needs: the worker, the connection's
//! [`Writer`] (every byte of the answer goes through it: `http::writer` owns framing, vectored
//! writes and the send timeout), the parsed request, its bucket and what the access log learns.
//! [`Target`] is the object the request names and its cache key.

use std::rc::Rc;

use crate::context::Worker;
use crate::cors;
use crate::error::Error;
use crate::http::conn::Request;
use crate::http::request::Method;
use crate::http::response::UpstreamHead;
use crate::http::writer::Writer;
use crate::request_log::RequestLog;

use super::overrides::Overrides;

/// Body bytes moved per read/write; bounds the memory one streaming response holds.
pub const STREAM_CHUNK: usize = 64 * 1024;

/// One object request being answered: the worker answering it, the connection's writer, the
/// parsed request and its bucket.
pub struct Exchange<'a, 'c, 'r, S> {
    pub w: &'a Rc<Worker>,
    pub answer: &'a mut Writer<'c, S>,
    pub req: &'a Request<'r>,
    /// Index into `config.buckets`.
    pub bucket: usize,
    /// What the access log and metrics learn about this answer.
    pub log: &'a mut RequestLog,
    /// Sent by a member of this instance's fleet (a verified `x-corvid-peer`,
    /// `crate::fleet::peer_auth`): answered from here, never forwarded again.
    pub from_peer: bool,
    /// The client's `response-*` overrides, applied to every successful answer's head
    /// ([`super::overrides`]).
    pub overrides: Overrides<'a>,
}

impl<S: monoio::io::AsyncWriteRent> Exchange<'_, '_, '_, S> {
    /// Answers `e` as a JSON error (with the bucket's CORS headers, [`Exchange::write_cors`]).
    pub async fn error(&mut self, e: &Error) -> std::io::Result<()> {
        let req = self.req;
        let cors = self.w.shared.config.buckets[self.bucket].cors.as_ref();
        let request = (req.id, req.close, req.is_head());
        self.answer
            .error(request, e, |a| {
                if let Some(cfg) = cors {
                    cors::write_headers(a, cfg, req.header_str("origin"));
                }
            })
            .await
    }
}

impl<S> Exchange<'_, '_, '_, S> {
    /// Notes the origin's answer and the cache status for the access log.
    pub fn note_upstream(&mut self, head: &UpstreamHead, xcache: XCache) {
        self.log.upstream = Some((head.status, head.took));
        self.log.peer.clone_from(&head.peer);
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
            cors::write_headers(self.answer, cfg, self.req.header_str("origin"));
        }
    }
}

/// The object a request names: its key at the origin, the forwarded query parameters
/// (`versionId`) and the cache key built from them.
pub struct Target<'a> {
    pub key: &'a str,
    pub params: &'a [(&'a str, &'a str)],
    pub ckey: &'a [u8],
    /// The purge generation when the request began: what it fetches is stored only if no
    /// purge began since (`cache::tiered::Tiers::generation`).
    pub generation: u64,
    /// Asked for by a fleet member: its fetches go to the origin (one hop, `crate::fleet`).
    pub from_peer: bool,
}

impl Target<'_> {
    /// The key a miss of this target is routed by in a fleet (`crate::fleet`): its cache key;
    /// `None` for a peer's request, which is never forwarded again.
    pub fn route(&self) -> Option<&[u8]> {
        (!self.from_peer).then_some(self.ckey)
    }
}

/// A [`Target`] that owns its parts, for a background task that outlives the request.
pub struct OwnedTarget {
    key: String,
    params: Vec<(String, String)>,
    ckey: Vec<u8>,
    generation: u64,
    from_peer: bool,
}

impl OwnedTarget {
    pub fn of(t: &Target<'_>) -> OwnedTarget {
        OwnedTarget {
            key: t.key.to_string(),
            params: t
                .params
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            ckey: t.ckey.to_vec(),
            generation: t.generation,
            from_peer: t.from_peer,
        }
    }

    /// The parameters borrowed, for [`OwnedTarget::target`].
    pub fn params(&self) -> Vec<(&str, &str)> {
        self.params.iter().map(|(n, v)| (&n[..], &v[..])).collect()
    }

    pub fn target<'a>(&'a self, params: &'a [(&'a str, &'a str)]) -> Target<'a> {
        Target {
            key: &self.key,
            params,
            ckey: &self.ckey,
            generation: self.generation,
            from_peer: self.from_peer,
        }
    }
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

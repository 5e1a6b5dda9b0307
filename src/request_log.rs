//! What corvid notes about one request while answering it — its bucket, admin route, cache
//! status and layer, the origin's answer — for the request metrics and the access log.
//!
//! It is the application's [`crate::http::conn::App::Log`]: the connection loop makes one per
//! request and hands it back when the request is finished, without knowing what is in it, so
//! the HTTP layer knows nothing of buckets or caches.

use std::time::Duration;

/// Filled in while a request is answered; read when it is finished.
#[derive(Default)]
pub struct RequestLog {
    /// Index into the generation's `config.buckets`, for object requests.
    pub bucket: Option<usize>,
    /// For admin requests: the bounded route label.
    pub admin_route: Option<&'static str>,
    /// The answer's `X-Cache` and `X-Cache-Layer`, when it went through the cache path.
    pub cache: Option<&'static str>,
    pub layer: Option<&'static str>,
    /// The origin's status and time to its response head, when it was asked for this request.
    pub upstream: Option<(u16, Duration)>,
    /// For an answer of a sliced object: the slices it took from the cache and from fills
    /// (its own or coalesced ones).
    pub slices: Option<(u32, u32)>,
    /// The fleet member that answered instead of the origin (`crate::fleet`).
    pub peer: Option<std::sync::Arc<str>>,
}

//! [`Shared`]: what every worker of one config generation reads, behind one `Arc` — the config
//! snapshot and what is derived from it (router, bucket policies, TLS configs, origins, JWT
//! keys, credentials cells) beside what lasts as long as the process and is carried from one
//! generation to the next (tiers, metrics, access log, shutdown flag).
//!
//! Only the definition lives here; `build.rs` makes a generation (at start and on reload) and
//! `worker.rs` builds each thread's view of it, so both import this file and it imports
//! neither.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rustls_pki_types::ServerName;

use super::reload::Outcome;
use crate::access_log::AccessLog;
use crate::cache::redis::RedisOptions;
use crate::cache::tiered::Tiers;
use crate::clock::Clock;
use crate::config::{CachePolicy, Config};
use crate::credentials;
use crate::fdlimit;
use crate::http::request::Limits;
use crate::metrics::Registry;
use crate::router::Router;
use crate::s3::origins::Origins;

/// Read-only state shared by every worker (one `Arc`): the config snapshot, the router, TLS
/// configs, origin addresses and the metric slots that `/metrics` sums.
pub struct Shared {
    pub config: Config,
    pub router: Router,
    /// Per bucket (parallel to `config.buckets`): its caching policy (the configured TTLs and
    /// stale windows as the RFC 9111 rules take them), computed once per generation.
    pub policies: Vec<CachePolicy>,
    pub limits: Limits,
    pub origins: Arc<Origins>,
    /// `[cluster]`: the fleet's members and their health (`crate::fleet`), per generation.
    pub fleet: Option<Arc<crate::fleet::Fleet>>,
    /// Per bucket: the TLS client config and the name to verify, for https endpoints.
    pub client_tls: Vec<Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>>,
    pub server_tls: Option<Arc<rustls::ServerConfig>>,
    /// The Redis tier's client options (`cache.redis`), TLS config included, built once at
    /// start ([`super::redis_options`]); each worker's client and the purge subscriber clone
    /// them.
    pub redis: Option<RedisOptions>,
    /// Process-wide: carried from one config generation to the next.
    pub metrics: Arc<Registry>,
    /// Per bucket of `config`: its slot in `metrics` (stable per bucket name across reloads).
    pub slots: Vec<usize>,
    /// 0 at start, one more per applied reload.
    pub generation: u64,
    /// The cache tiers and the coalescing table, shared by every worker.
    pub tiers: Arc<Tiers>,
    pub shutting_down: Arc<AtomicBool>,
    pub workers: usize,
    pub started: Instant,
    /// Random-ish per-process tag that makes request ids unique across restarts.
    pub instance_tag: u32,
    /// How the open-file limit is shared: the client connections each worker keeps at most.
    pub fd_budget: fdlimit::Budget,
    /// `[jwt]`'s keys, parsed once at start: checks tokens for buckets with `auth = true` and
    /// for the admin API.
    pub verifier: Option<crate::auth::Verifier>,
    /// The clock freshness is decided by (the system's, or a test's; [`crate::clock`]).
    pub clock: Clock,
    /// The access log's writer, when `[log] access` is on.
    pub access_log: Option<Arc<AccessLog>>,
    /// Where `POST /admin/reload` asks for a reload (`None`: no config file to re-read, as in
    /// an in-process server).
    pub reloads: Option<ReloadRequests>,
    /// Per bucket (parallel to `config.buckets`): its current AWS credentials, renewed by the
    /// `corvid-credentials` thread ([`crate::credentials`]).
    pub credentials: Vec<Arc<credentials::Cell>>,
    /// Process-wide: the cache warming jobs (`crate::warm`), whichever worker runs them, so
    /// that any worker answers their progress; carried from one generation to the next.
    pub warm_jobs: Arc<crate::warm::Jobs>,
}

/// A reload request: the channel its [`Outcome`] is answered on.
pub type ReloadRequests = flume::Sender<flume::Sender<Outcome>>;

impl Shared {
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }
}

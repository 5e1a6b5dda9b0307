//! Prometheus metrics: per-worker slots written without contention, summed when `/metrics` is
//! scraped.
//!
//! Each worker owns one [`WorkerMetrics`] (relaxed atomics on its own cache lines), so the hot
//! path never shares a counter with another core. The registry holds every worker's slots plus
//! the label values (bucket names) and renders the text exposition format 0.0.4. Names and
//! labels follow INTERFACE.md; new series may be added, existing ones never renamed.

use crate::auth::AuthFailure;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::cache::stats::{RequestCounts, Stats};
use crate::cache::tiered::{Layer, Tiers};
use crate::cache::usage::Buckets;
use crate::http::request::Method;

/// Histogram bucket upper bounds, in seconds.
pub const LATENCY_BOUNDS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Method label values; requests with other methods count under "other".
const METHODS: [&str; 4] = ["GET", "HEAD", "OPTIONS", "other"];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// Upstream outcome label values: a status class, a timeout, or another error.
const OUTCOMES: [&str; 7] = ["1xx", "2xx", "3xx", "4xx", "5xx", "timeout", "error"];

/// What an upstream request ended with.
#[derive(Debug, Clone, Copy)]
pub enum UpstreamOutcome {
    Status(u16),
    Timeout,
    Error,
}

/// The index of `outcome` in [`OUTCOMES`].
fn outcome_index(outcome: UpstreamOutcome) -> usize {
    match outcome {
        UpstreamOutcome::Status(s) => (s / 100).clamp(1, 5) as usize - 1,
        UpstreamOutcome::Timeout => 5,
        UpstreamOutcome::Error => 6,
    }
}

#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; LATENCY_BOUNDS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = LATENCY_BOUNDS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }
}

/// The counters one worker writes. Bucket index `buckets.len()` means "no bucket" (internal
/// routes, unroutable requests), labelled `bucket=""`.
pub struct WorkerMetrics {
    nbuckets: usize,
    requests: Vec<AtomicU64>,
    request_duration: Vec<Histogram>,
    upstream: Vec<AtomicU64>,
    upstream_duration: Vec<Histogram>,
    connections_open: AtomicI64,
    /// Per bucket × layer.
    cache_hits: Vec<AtomicU64>,
    /// Body bytes served from cache entries, per bucket × layer.
    cache_hit_bytes: Vec<AtomicU64>,
    /// Object body bytes received from the origin, per bucket.
    upstream_bytes: Vec<AtomicU64>,
    cache_misses: Vec<AtomicU64>,
    coalesced: Vec<AtomicU64>,
    /// 304s that selected no stored response (the object was fetched again), per bucket.
    revalidation_mismatches: Vec<AtomicU64>,
    /// Slices of sliced objects sent from a cache tier, per bucket × layer.
    slice_hits: Vec<AtomicU64>,
    /// Slices of sliced objects sent from a fill (fetched from the origin), per bucket.
    slice_misses: Vec<AtomicU64>,
    /// Per [`AuthFailure::ALL`] entry.
    auth_failures: [AtomicU64; AuthFailure::ALL.len()],
    /// Per [`PURGE_SCOPES`] × (hard, soft).
    purges: [AtomicU64; PURGE_SCOPES.len() * 2],
    /// Per [`ADMIN_ROUTES`] × status class.
    admin_requests: [AtomicU64; ADMIN_ROUTES.len() * CLASSES.len()],
    /// Requests sent to a fleet member that owns the key, per [`OUTCOMES`] entry.
    peer_requests: [AtomicU64; OUTCOMES.len()],
    /// Requests for a key another member owns that went to the origin, per [`PeerFallback`].
    peer_fallbacks: [AtomicU64; 2],
    /// Requests this instance answered for fleet members.
    peer_served: AtomicU64,
    /// Objects of warm jobs (`crate::warm`), per bucket × [`WARM_OUTCOMES`].
    warm_objects: Vec<AtomicU64>,
    /// Their bytes (the listed sizes), per bucket × [`WARM_OUTCOMES`].
    warm_bytes: Vec<AtomicU64>,
}

/// `outcome` label values of `corvid_warm_objects_total` and `corvid_warm_bytes_total`.
pub const WARM_OUTCOMES: [&str; 3] = ["filled", "skipped", "failed"];

/// What warming did with one listed object (`crate::warm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WarmOutcome {
    /// Fetched into the cache (or its fill, another request's, completed).
    Filled = 0,
    /// Already fresh in the cache: not fetched.
    Skipped = 1,
    /// Not cached: the origin failed, or the object may not be stored.
    Failed = 2,
}

/// Why a request for a key another fleet member owns went to the origin instead
/// (`corvid_peer_fallbacks_total{reason}`).
#[derive(Debug, Clone, Copy)]
pub enum PeerFallback {
    /// The owner was already marked down.
    Down,
    /// The owner failed this request (refused, timed out, 5xx, 403).
    Failed,
}

/// `scope` label values of `corvid_purges_total`.
pub const PURGE_SCOPES: [&str; 4] = ["all", "bucket", "prefix", "object"];
/// `route` label values of `corvid_admin_requests_total`.
pub const ADMIN_ROUTES: [&str; 6] = ["purge", "stats", "reload", "cluster", "warm", "other"];

impl WorkerMetrics {
    fn new(nbuckets: usize) -> Self {
        let slots = nbuckets + 1;
        WorkerMetrics {
            nbuckets,
            requests: (0..slots * METHODS.len() * CLASSES.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            request_duration: (0..slots).map(|_| Histogram::default()).collect(),
            upstream: (0..nbuckets * OUTCOMES.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            upstream_duration: (0..nbuckets).map(|_| Histogram::default()).collect(),
            connections_open: AtomicI64::new(0),
            cache_hits: (0..nbuckets * Layer::ALL.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            cache_hit_bytes: (0..nbuckets * Layer::ALL.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            upstream_bytes: (0..nbuckets).map(|_| AtomicU64::new(0)).collect(),
            cache_misses: (0..nbuckets).map(|_| AtomicU64::new(0)).collect(),
            coalesced: (0..nbuckets).map(|_| AtomicU64::new(0)).collect(),
            revalidation_mismatches: (0..nbuckets).map(|_| AtomicU64::new(0)).collect(),
            slice_hits: (0..nbuckets * Layer::ALL.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            slice_misses: (0..nbuckets).map(|_| AtomicU64::new(0)).collect(),
            auth_failures: Default::default(),
            purges: Default::default(),
            admin_requests: Default::default(),
            peer_requests: Default::default(),
            peer_fallbacks: Default::default(),
            peer_served: AtomicU64::new(0),
            warm_objects: (0..nbuckets * WARM_OUTCOMES.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            warm_bytes: (0..nbuckets * WARM_OUTCOMES.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }

    fn warmed(&self, bucket: usize, outcome: WarmOutcome, bytes: u64) {
        let i = bucket * WARM_OUTCOMES.len() + outcome as usize;
        self.warm_objects[i].fetch_add(1, Ordering::Relaxed);
        self.warm_bytes[i].fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts one answered request. `bucket` is None for internal routes.
    fn request(&self, bucket: Option<usize>, method: Method, status: u16, took: Duration) {
        let b = bucket.unwrap_or(self.nbuckets);
        let m = match method {
            Method::Get => 0,
            Method::Head => 1,
            Method::Options => 2,
            _ => 3,
        };
        let c = (status / 100).clamp(1, 5) as usize - 1;
        self.requests[(b * METHODS.len() + m) * CLASSES.len() + c].fetch_add(1, Ordering::Relaxed);
        self.request_duration[b].observe(took);
    }

    fn upstream(&self, bucket: usize, outcome: UpstreamOutcome, took: Duration) {
        let o = outcome_index(outcome);
        self.upstream[bucket * OUTCOMES.len() + o].fetch_add(1, Ordering::Relaxed);
        self.upstream_duration[bucket].observe(took);
    }

    fn cache_hit(&self, bucket: usize, layer: Layer) {
        self.cache_hits[bucket * Layer::ALL.len() + layer.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// `n` body bytes written to a client from an entry of `layer`.
    fn cache_hit_bytes(&self, bucket: usize, layer: Layer, n: u64) {
        self.cache_hit_bytes[bucket * Layer::ALL.len() + layer.index()]
            .fetch_add(n, Ordering::Relaxed);
    }

    /// `n` object body bytes received from `bucket`'s origin.
    fn upstream_bytes(&self, bucket: usize, n: u64) {
        self.upstream_bytes[bucket].fetch_add(n, Ordering::Relaxed);
    }

    fn cache_miss(&self, bucket: usize) {
        self.cache_misses[bucket].fetch_add(1, Ordering::Relaxed);
    }

    fn coalesced(&self, bucket: usize) {
        self.coalesced[bucket].fetch_add(1, Ordering::Relaxed);
    }

    fn revalidation_mismatch(&self, bucket: usize) {
        self.revalidation_mismatches[bucket].fetch_add(1, Ordering::Relaxed);
    }

    fn slice_hit(&self, bucket: usize, layer: Layer) {
        self.slice_hits[bucket * Layer::ALL.len() + layer.index()].fetch_add(1, Ordering::Relaxed);
    }

    fn slice_miss(&self, bucket: usize) {
        self.slice_misses[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// A purge through the admin API (`scope` one of [`PURGE_SCOPES`]).
    pub fn purge(&self, scope: &str, soft: bool) {
        if let Some(i) = PURGE_SCOPES.iter().position(|s| *s == scope) {
            self.purges[i * 2 + soft as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// An answered admin request (`route` one of [`ADMIN_ROUTES`]).
    pub fn admin_request(&self, route: &str, status: u16) {
        let r = ADMIN_ROUTES
            .iter()
            .position(|x| *x == route)
            .unwrap_or(ADMIN_ROUTES.len() - 1);
        let c = (status / 100).clamp(1, 5) as usize - 1;
        self.admin_requests[r * CLASSES.len() + c].fetch_add(1, Ordering::Relaxed);
    }

    /// A request refused by authentication (label `reason`).
    pub fn auth_failure(&self, failure: AuthFailure) {
        if let Some(i) = AuthFailure::ALL.iter().position(|f| *f == failure) {
            self.auth_failures[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A request sent to the fleet member that owns its key, by outcome.
    pub fn peer_request(&self, outcome: UpstreamOutcome) {
        self.peer_requests[outcome_index(outcome)].fetch_add(1, Ordering::Relaxed);
    }

    /// A request for a key another member owns that went to the origin instead.
    pub fn peer_fallback(&self, why: PeerFallback) {
        self.peer_fallbacks[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A request answered for a fleet member.
    pub fn peer_served(&self) {
        self.peer_served.fetch_add(1, Ordering::Relaxed);
    }

    pub fn connection_opened(&self) {
        self.connections_open.fetch_add(1, Ordering::Relaxed);
    }

    pub fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One worker's counters as its request path records them: bucket arguments are indices in
/// the worker's config ([`crate::config::Config::buckets`]), mapped here to the registry's
/// slots (see [`Registry`]). The methods without a bucket are [`WorkerMetrics`]'s.
#[derive(Clone, Copy)]
pub struct Recorder<'a> {
    m: &'a WorkerMetrics,
    slots: &'a [usize],
}

impl std::ops::Deref for Recorder<'_> {
    type Target = WorkerMetrics;
    fn deref(&self) -> &WorkerMetrics {
        self.m
    }
}

impl Recorder<'_> {
    fn slot(&self, bucket: usize) -> usize {
        self.slots[bucket]
    }

    /// Counts one answered request. `bucket` is None for internal routes.
    pub fn request(&self, bucket: Option<usize>, method: Method, status: u16, took: Duration) {
        self.m
            .request(bucket.map(|b| self.slot(b)), method, status, took);
    }

    pub fn upstream(&self, bucket: usize, outcome: UpstreamOutcome, took: Duration) {
        self.m.upstream(self.slot(bucket), outcome, took);
    }

    pub fn cache_hit(&self, bucket: usize, layer: Layer) {
        self.m.cache_hit(self.slot(bucket), layer);
    }

    /// `n` body bytes written to a client from an entry of `layer`.
    pub fn cache_hit_bytes(&self, bucket: usize, layer: Layer, n: u64) {
        self.m.cache_hit_bytes(self.slot(bucket), layer, n);
    }

    /// `n` object body bytes received from `bucket`'s origin.
    pub fn upstream_bytes(&self, bucket: usize, n: u64) {
        self.m.upstream_bytes(self.slot(bucket), n);
    }

    pub fn cache_miss(&self, bucket: usize) {
        self.m.cache_miss(self.slot(bucket));
    }

    pub fn coalesced(&self, bucket: usize) {
        self.m.coalesced(self.slot(bucket));
    }

    /// A `304` that selected no stored response: the object is fetched again.
    pub fn revalidation_mismatch(&self, bucket: usize) {
        self.m.revalidation_mismatch(self.slot(bucket));
    }

    /// One slice of a sliced object sent from a cache tier.
    pub fn slice_hit(&self, bucket: usize, layer: Layer) {
        self.m.slice_hit(self.slot(bucket), layer);
    }

    /// One slice of a sliced object sent from a fill (its bytes came from the origin).
    pub fn slice_miss(&self, bucket: usize) {
        self.m.slice_miss(self.slot(bucket));
    }

    /// One listed object of a warm job, and its size.
    pub fn warmed(&self, bucket: usize, outcome: WarmOutcome, bytes: u64) {
        self.m.warmed(self.slot(bucket), outcome, bytes);
    }
}

/// One bucket's credential refresh attempts (`corvid_credentials_refresh_total`): written by
/// the credentials thread (process-wide, not per worker: there is one writer).
#[derive(Debug, Default)]
pub struct RefreshCounts {
    pub ok: AtomicU64,
    pub error: AtomicU64,
}

/// All workers' metric slots and the label values.
///
/// Per-bucket counters live in *slots* that keep their bucket's name for the life of the
/// process. The slots are the indices of the tiers' bucket table ([`Buckets`], the one table
/// both use, so a bucket's metric series and its cache statistics have the same index): the
/// buckets configured at start take the first ones, and a config reload gives a new bucket
/// the next free slot ([`Buckets::add`]; [`crate::cache::usage::RESERVED_BUCKETS`] of them
/// are allocated up front) and keeps a renamed or removed bucket's series as they were, so
/// counters never go back. A worker records through a [`Recorder`], which maps its config's
/// bucket index to the slot.
pub struct Registry {
    /// Slot → bucket name; grows on reloads, never shrinks. Shared with the tiers.
    buckets: Arc<Buckets>,
    /// Slots allocated per worker; the one past the last (`capacity`, [`Buckets::other`]) is
    /// "no bucket".
    capacity: usize,
    workers: Vec<WorkerMetrics>,
    /// Access log lines dropped (the writer fell behind), when the access log is on.
    access_log_dropped: Option<Arc<AtomicU64>>,
    /// `corvid_config_reloads_total` by outcome: applied, refused.
    reloads: [AtomicU64; 2],
    /// By slot: the refresh counters of the bucket's credentials source, when it has one
    /// (set for each config generation, [`Registry::set_credentials`]).
    credentials_refresh: parking_lot::RwLock<Vec<Option<Arc<RefreshCounts>>>>,
}

impl Registry {
    /// The registry of `workers` workers whose per-bucket slots are the indices of `buckets`
    /// (the tiers' table: [`Tiers::buckets`]).
    pub fn new(buckets: Arc<Buckets>, workers: usize) -> Self {
        let capacity = buckets.other();
        Registry {
            buckets,
            capacity,
            workers: (0..workers).map(|_| WorkerMetrics::new(capacity)).collect(),
            access_log_dropped: None,
            reloads: Default::default(),
            credentials_refresh: parking_lot::RwLock::new(vec![None; capacity]),
        }
    }

    /// The refresh counters rendered as `corvid_credentials_refresh_total` for the bucket in
    /// `slot` (`None`: static keys, no series), set by each config generation.
    pub fn set_credentials(&self, slot: usize, counts: Option<Arc<RefreshCounts>>) {
        if let Some(c) = self.credentials_refresh.write().get_mut(slot) {
            *c = counts;
        }
    }

    /// Renders `corvid_access_log_dropped_total` from the access log's counter.
    pub fn with_access_log(mut self, dropped: Arc<AtomicU64>) -> Self {
        self.access_log_dropped = Some(dropped);
        self
    }

    /// Worker `i`'s counters, recorded through `slots` (config bucket index → slot).
    pub fn worker<'a>(&'a self, i: usize, slots: &'a [usize]) -> Recorder<'a> {
        Recorder {
            m: &self.workers[i],
            slots,
        }
    }

    /// A config reload was applied (`ok`) or refused.
    pub fn reload(&self, ok: bool) {
        self.reloads[usize::from(!ok)].fetch_add(1, Ordering::Relaxed);
    }

    /// The slots to render: every named one, then "no bucket", with their labels.
    fn labelled_slots(&self) -> Vec<(usize, String)> {
        let mut v: Vec<(usize, String)> = self.buckets.names().into_iter().enumerate().collect();
        v.push((self.capacity, String::new()));
        v
    }

    fn sum(&self, f: impl Fn(&WorkerMetrics) -> u64) -> u64 {
        self.workers.iter().map(f).sum()
    }

    /// Bucket `b`'s request counters summed over the workers: what `/metrics` renders as
    /// `corvid_cache_hits_total`, `corvid_cache_misses_total`, `corvid_cache_hit_bytes_total`
    /// and `corvid_upstream_bytes_total`.
    pub fn request_counts(&self, b: usize) -> RequestCounts {
        let mut c = RequestCounts::default();
        for layer in Layer::ALL {
            let i = b * Layer::ALL.len() + layer.index();
            c.hits[layer.index()] = self.sum(|w| w.cache_hits[i].load(Ordering::Relaxed));
            c.bytes_served[layer.index()] =
                self.sum(|w| w.cache_hit_bytes[i].load(Ordering::Relaxed));
        }
        c.misses = self.sum(|w| w.cache_misses[b].load(Ordering::Relaxed));
        c.slice_hits = (0..Layer::ALL.len())
            .map(|l| self.sum(|w| w.slice_hits[b * Layer::ALL.len() + l].load(Ordering::Relaxed)))
            .sum();
        c.slice_misses = self.sum(|w| w.slice_misses[b].load(Ordering::Relaxed));
        c.origin_bytes = self.sum(|w| w.upstream_bytes[b].load(Ordering::Relaxed));
        c
    }

    /// The cache statistics snapshot (`GET /admin/cache/stats`; JSON shape in
    /// [`crate::cache::stats`]) of the buckets `buckets` (name, slot) — the running config's —
    /// from the same counters `/metrics` renders. `redis`: whether a Redis tier is configured.
    pub fn cache_stats(&self, tiers: &Tiers, redis: bool, buckets: &[(String, usize)]) -> Stats {
        let counts: Vec<RequestCounts> = buckets
            .iter()
            .map(|(_, s)| self.request_counts(*s))
            .collect();
        let names: Vec<String> = buckets.iter().map(|(n, _)| n.clone()).collect();
        Stats::build(tiers, redis, &names, &counts)
    }

    /// Renders the Prometheus text exposition format 0.0.4.
    /// The fleet's series (`crate::fleet`): only rendered for a member of one.
    fn render_fleet(&self, out: &mut String, up: usize, down: usize) {
        header(
            out,
            "corvid_peer_requests_total",
            "counter",
            "Requests sent to the fleet member that owns the key, by outcome",
        );
        for (o, outcome) in OUTCOMES.iter().enumerate() {
            let v = self.sum(|w| w.peer_requests[o].load(Ordering::Relaxed));
            let _ = writeln!(
                out,
                "corvid_peer_requests_total{{outcome=\"{outcome}\"}} {v}"
            );
        }
        header(
            out,
            "corvid_peer_fallbacks_total",
            "counter",
            "Requests for a key another member owns that went to the origin: owner down, or failed",
        );
        for (i, reason) in ["down", "failed"].iter().enumerate() {
            let v = self.sum(|w| w.peer_fallbacks[i].load(Ordering::Relaxed));
            let _ = writeln!(
                out,
                "corvid_peer_fallbacks_total{{reason=\"{reason}\"}} {v}"
            );
        }
        header(
            out,
            "corvid_peer_requests_served_total",
            "counter",
            "Requests this instance answered for fleet members",
        );
        let v = self.sum(|w| w.peer_served.load(Ordering::Relaxed));
        let _ = writeln!(out, "corvid_peer_requests_served_total {v}");
        header(
            out,
            "corvid_peers",
            "gauge",
            "Fleet members by state (this instance counted up)",
        );
        let _ = writeln!(out, "corvid_peers{{state=\"up\"}} {up}");
        let _ = writeln!(out, "corvid_peers{{state=\"down\"}} {down}");
    }

    /// `fleet`: the (up, down) member counts when this instance is one of a fleet.
    pub fn render(&self, tiers: &Tiers, fleet: Option<(usize, usize)>) -> String {
        let mut out = String::with_capacity(4096);
        // Slots with their labels: named ones, then "no bucket" (internal routes).
        let all = self.labelled_slots();
        let named = &all[..all.len() - 1];

        header(
            &mut out,
            "corvid_build_info",
            "gauge",
            "corvid build information",
        );
        let _ = writeln!(
            out,
            "corvid_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );

        header(
            &mut out,
            "corvid_requests_total",
            "counter",
            "Requests answered, by bucket, method and status class",
        );
        for (b, label) in all.iter().map(|(b, l)| (*b, l.as_str())) {
            for (m, method) in METHODS.iter().enumerate() {
                for (c, class) in CLASSES.iter().enumerate() {
                    let i = (b * METHODS.len() + m) * CLASSES.len() + c;
                    let v = self.sum(|w| w.requests[i].load(Ordering::Relaxed));
                    if v > 0 {
                        let _ = writeln!(
                            out,
                            "corvid_requests_total{{bucket=\"{}\",method=\"{method}\",status=\"{class}\"}} {v}",
                            escape(label)
                        );
                    }
                }
            }
        }

        header(
            &mut out,
            "corvid_request_duration_seconds",
            "histogram",
            "Time from a complete request head to the end of the response",
        );
        for (b, label) in all.iter().map(|(b, l)| (*b, l.as_str())) {
            self.histogram(&mut out, "corvid_request_duration_seconds", label, |w| {
                &w.request_duration[b]
            });
        }

        header(
            &mut out,
            "corvid_upstream_requests_total",
            "counter",
            "Requests sent to origins, by bucket and outcome",
        );
        for (b, label) in named.iter().map(|(b, l)| (*b, l.as_str())) {
            for (o, outcome) in OUTCOMES.iter().enumerate() {
                let v = self.sum(|w| w.upstream[b * OUTCOMES.len() + o].load(Ordering::Relaxed));
                if v > 0 {
                    let _ = writeln!(
                        out,
                        "corvid_upstream_requests_total{{bucket=\"{}\",outcome=\"{outcome}\"}} {v}",
                        escape(label)
                    );
                }
            }
        }

        header(
            &mut out,
            "corvid_upstream_duration_seconds",
            "histogram",
            "Time from sending an upstream request to its complete response head",
        );
        for (b, label) in named.iter().map(|(b, l)| (*b, l.as_str())) {
            self.histogram(&mut out, "corvid_upstream_duration_seconds", label, |w| {
                &w.upstream_duration[b]
            });
        }

        for (name, help, f) in [
            (
                "corvid_cache_hits_total",
                "Requests answered from a cache tier, by layer and bucket",
                (|w: &WorkerMetrics, i: usize| w.cache_hits[i].load(Ordering::Relaxed))
                    as fn(&WorkerMetrics, usize) -> u64,
            ),
            (
                "corvid_cache_hit_bytes_total",
                "Body bytes served from a cache tier (the egress saved), by layer and bucket",
                |w: &WorkerMetrics, i: usize| w.cache_hit_bytes[i].load(Ordering::Relaxed),
            ),
            (
                "corvid_cache_slice_hits_total",
                "Slices of large objects sent from a cache tier, by layer and bucket",
                |w: &WorkerMetrics, i: usize| w.slice_hits[i].load(Ordering::Relaxed),
            ),
        ] {
            header(&mut out, name, "counter", help);
            for (b, label) in named.iter().map(|(b, l)| (*b, l.as_str())) {
                for layer in Layer::ALL {
                    let v = self.sum(|w| f(w, b * Layer::ALL.len() + layer.index()));
                    if v > 0 {
                        let _ = writeln!(
                            out,
                            "{name}{{layer=\"{}\",bucket=\"{}\"}} {v}",
                            layer.name(),
                            escape(label)
                        );
                    }
                }
            }
        }
        for (name, help, f) in [
            (
                "corvid_upstream_bytes_total",
                "Object body bytes received from origins",
                (|w: &WorkerMetrics, b: usize| w.upstream_bytes[b].load(Ordering::Relaxed))
                    as fn(&WorkerMetrics, usize) -> u64,
            ),
            (
                "corvid_cache_misses_total",
                "Cacheable requests not found in any tier",
                |w: &WorkerMetrics, b: usize| w.cache_misses[b].load(Ordering::Relaxed),
            ),
            (
                "corvid_coalesced_requests_total",
                "Requests that joined another request's origin fetch",
                |w: &WorkerMetrics, b: usize| w.coalesced[b].load(Ordering::Relaxed),
            ),
            (
                "corvid_revalidation_mismatches_total",
                "304 answers that selected no stored response (another version): fetched again",
                |w: &WorkerMetrics, b: usize| w.revalidation_mismatches[b].load(Ordering::Relaxed),
            ),
            (
                "corvid_cache_slice_misses_total",
                "Slices of large objects sent from a fill (fetched from the origin)",
                |w: &WorkerMetrics, b: usize| w.slice_misses[b].load(Ordering::Relaxed),
            ),
        ] {
            header(&mut out, name, "counter", help);
            for (b, label) in named.iter().map(|(b, l)| (*b, l.as_str())) {
                let v = self.sum(|w| f(w, b));
                let _ = writeln!(out, "{name}{{bucket=\"{}\"}} {v}", escape(label));
            }
        }
        for (name, help, f) in [
            (
                "corvid_warm_objects_total",
                "Listed objects of warm jobs, by bucket and outcome (filled, skipped: already fresh, failed)",
                (|w: &WorkerMetrics, i: usize| w.warm_objects[i].load(Ordering::Relaxed))
                    as fn(&WorkerMetrics, usize) -> u64,
            ),
            (
                "corvid_warm_bytes_total",
                "Listed bytes of warm jobs, by bucket and outcome",
                |w: &WorkerMetrics, i: usize| w.warm_bytes[i].load(Ordering::Relaxed),
            ),
        ] {
            header(&mut out, name, "counter", help);
            for (b, label) in named.iter().map(|(b, l)| (*b, l.as_str())) {
                for (o, outcome) in WARM_OUTCOMES.iter().enumerate() {
                    let v = self.sum(|w| f(w, b * WARM_OUTCOMES.len() + o));
                    if v > 0 {
                        let _ = writeln!(
                            out,
                            "{name}{{bucket=\"{}\",outcome=\"{outcome}\"}} {v}",
                            escape(label)
                        );
                    }
                }
            }
        }
        header(
            &mut out,
            "corvid_cache_entries",
            "gauge",
            "Entries held, by layer",
        );
        for layer in Layer::ALL {
            let _ = writeln!(
                out,
                "corvid_cache_entries{{layer=\"{}\"}} {}",
                layer.name(),
                tiers.usage(layer).0
            );
        }
        header(
            &mut out,
            "corvid_cache_bytes",
            "gauge",
            "Bytes held, by layer",
        );
        for layer in Layer::ALL {
            let _ = writeln!(
                out,
                "corvid_cache_bytes{{layer=\"{}\"}} {}",
                layer.name(),
                tiers.usage(layer).1
            );
        }
        header(
            &mut out,
            "corvid_cache_evictions_total",
            "counter",
            "Entries evicted by a tier's policy",
        );
        for layer in Layer::ALL {
            let _ = writeln!(
                out,
                "corvid_cache_evictions_total{{layer=\"{}\"}} {}",
                layer.name(),
                tiers.evictions(layer)
            );
        }
        header(
            &mut out,
            "corvid_purges_total",
            "counter",
            "Purges through the admin API, by scope and softness",
        );
        for (i, scope) in PURGE_SCOPES.iter().enumerate() {
            for (j, soft) in ["false", "true"].iter().enumerate() {
                let v = self.sum(|w| w.purges[i * 2 + j].load(Ordering::Relaxed));
                let _ = writeln!(
                    out,
                    "corvid_purges_total{{scope=\"{scope}\",soft=\"{soft}\"}} {v}"
                );
            }
        }
        header(
            &mut out,
            "corvid_admin_requests_total",
            "counter",
            "Admin API requests, by route and status class",
        );
        for (r, route) in ADMIN_ROUTES.iter().enumerate() {
            for (c, class) in CLASSES.iter().enumerate() {
                let v =
                    self.sum(|w| w.admin_requests[r * CLASSES.len() + c].load(Ordering::Relaxed));
                let _ = writeln!(
                    out,
                    "corvid_admin_requests_total{{route=\"{route}\",status=\"{class}\"}} {v}"
                );
            }
        }
        header(
            &mut out,
            "corvid_auth_failures_total",
            "counter",
            "Requests refused by JWT authentication, by reason",
        );
        for (i, f) in AuthFailure::ALL.iter().enumerate() {
            let v = self.sum(|w| w.auth_failures[i].load(Ordering::Relaxed));
            let _ = writeln!(
                out,
                "corvid_auth_failures_total{{reason=\"{}\"}} {v}",
                f.reason()
            );
        }
        if let Some((up, down)) = fleet {
            self.render_fleet(&mut out, up, down);
        }
        header(
            &mut out,
            "corvid_access_log_dropped_total",
            "counter",
            "Access log lines dropped because the writer fell behind or a write failed",
        );
        let dropped = self
            .access_log_dropped
            .as_ref()
            .map_or(0, |d| d.load(Ordering::Relaxed));
        let _ = writeln!(out, "corvid_access_log_dropped_total {dropped}");

        header(
            &mut out,
            "corvid_config_reloads_total",
            "counter",
            "Configuration reloads (SIGHUP, POST /admin/reload), applied (ok) or refused (error)",
        );
        for (i, outcome) in ["ok", "error"].iter().enumerate() {
            let v = self.reloads[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "corvid_config_reloads_total{{outcome=\"{outcome}\"}} {v}"
            );
        }

        header(
            &mut out,
            "corvid_credentials_refresh_total",
            "counter",
            "Fetches of temporary AWS credentials, by bucket and outcome",
        );
        let refresh = self.credentials_refresh.read();
        for (b, label) in named.iter().map(|(b, l)| (*b, l.as_str())) {
            let Some(c) = &refresh[b] else { continue };
            for (outcome, v) in [("ok", &c.ok), ("error", &c.error)] {
                let _ = writeln!(
                    out,
                    "corvid_credentials_refresh_total{{bucket=\"{}\",outcome=\"{outcome}\"}} {}",
                    escape(label),
                    v.load(Ordering::Relaxed)
                );
            }
        }

        header(
            &mut out,
            "corvid_cache_errors_total",
            "counter",
            "Failed tier operations (treated as misses)",
        );
        for layer in Layer::ALL {
            let v = match layer {
                Layer::Disk => tiers.disk_errors.load(Ordering::Relaxed),
                Layer::Redis => tiers.redis_errors.load(Ordering::Relaxed),
                Layer::Memory => 0,
            };
            let _ = writeln!(
                out,
                "corvid_cache_errors_total{{layer=\"{}\"}} {v}",
                layer.name()
            );
        }

        header(
            &mut out,
            "corvid_cache_write_behind_dropped_total",
            "counter",
            "Write-behind disk writes dropped because the queue was full",
        );
        let _ = writeln!(
            out,
            "corvid_cache_write_behind_dropped_total {}",
            tiers.dropped_writes.load(Ordering::Relaxed)
        );

        header(
            &mut out,
            "corvid_cache_disk_not_admitting",
            "gauge",
            "1 while the disk tier refuses new writes because no segment can be made (full volume, removed directory)",
        );
        let disk = tiers.disk.as_ref();
        let _ = writeln!(
            out,
            "corvid_cache_disk_not_admitting {}",
            u8::from(disk.is_some_and(|d| !d.admitting()))
        );
        header(
            &mut out,
            "corvid_cache_disk_refused_writes_total",
            "counter",
            "Disk tier writes refused while it was not admitting (the object is still served)",
        );
        let _ = writeln!(
            out,
            "corvid_cache_disk_refused_writes_total {}",
            disk.map_or(0, |d| d.refused_writes())
        );

        header(
            &mut out,
            "corvid_connections_open",
            "gauge",
            "Client connections currently open",
        );
        let open: i64 = self
            .workers
            .iter()
            .map(|w| w.connections_open.load(Ordering::Relaxed))
            .sum();
        let _ = writeln!(out, "corvid_connections_open {open}");
        out
    }

    fn histogram(
        &self,
        out: &mut String,
        name: &str,
        label: &str,
        h: impl Fn(&WorkerMetrics) -> &Histogram,
    ) {
        let count = self.sum(|w| h(w).count.load(Ordering::Relaxed));
        if count == 0 {
            return;
        }
        let label = escape(label);
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BOUNDS.iter().enumerate() {
            cumulative += self.sum(|w| h(w).buckets[i].load(Ordering::Relaxed));
            let _ = writeln!(
                out,
                "{name}_bucket{{bucket=\"{label}\",le=\"{bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{bucket=\"{label}\",le=\"+Inf\"}} {count}"
        );
        let sum = self.sum(|w| h(w).sum_nanos.load(Ordering::Relaxed)) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{{bucket=\"{label}\"}} {sum}");
        let _ = writeln!(out, "{name}_count{{bucket=\"{label}\"}} {count}");
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escapes a label value per the text format (backslash, quote, newline).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::usage::RESERVED_BUCKETS;

    #[test]
    fn a_bucket_keeps_its_slot_and_series_across_generations() {
        let buckets = Buckets::new(["a", "b"]);
        let r = Registry::new(Arc::clone(&buckets), 1);
        r.worker(0, &[0, 1]).cache_miss(1);
        // The next generation: "b" first, a new "c", "a" removed.
        let slots: Vec<usize> = ["b", "c"].iter().map(|n| buckets.add(n).unwrap()).collect();
        assert_eq!(slots, [1, 2]);
        r.worker(0, &slots).cache_miss(0);
        r.worker(0, &slots).cache_miss(1);
        r.reload(true);
        let tiers = Tiers::new(&crate::config::Config::from_toml_str(
            "[server]\nlisten = \"127.0.0.1:1\"\n[[buckets]]\nname = \"a\"\nprefix = \"/a\"\nendpoint = \"http://127.0.0.1:9\"\nregion = \"r\"\nbucket = \"bkt\"\naccess_key = \"a\"\nsecret_key = \"s\"\n",
            &|_| None,
        )
        .unwrap()
        .cache)
        .unwrap();
        let text = r.render(&tiers, None);
        assert!(
            text.contains("corvid_cache_misses_total{bucket=\"b\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("corvid_cache_misses_total{bucket=\"c\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("corvid_cache_misses_total{bucket=\"a\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("corvid_config_reloads_total{outcome=\"ok\"} 1"),
            "{text}"
        );
        // The reserve is bounded: a reload adding past it is refused.
        for i in 0..RESERVED_BUCKETS - 1 {
            assert!(buckets.add(&format!("n{i}")).is_some());
        }
        assert_eq!(buckets.add("one-too-many"), None);
    }

    #[test]
    fn sums_workers_and_renders_labels() {
        let r = Registry::new(Buckets::new(["assets"]), 2);
        r.worker(0, &[0])
            .request(Some(0), Method::Get, 200, Duration::from_millis(2));
        r.worker(1, &[0])
            .request(Some(0), Method::Get, 206, Duration::from_millis(3));
        r.worker(1, &[0])
            .request(None, Method::Head, 404, Duration::from_micros(50));
        r.worker(0, &[0])
            .upstream(0, UpstreamOutcome::Timeout, Duration::from_secs(1));
        r.worker(0, &[0]).connection_opened();
        r.worker(1, &[0]).cache_hit(0, Layer::Disk);
        r.worker(0, &[0]).cache_miss(0);
        r.worker(1, &[0]).cache_hit_bytes(0, Layer::Disk, 100);
        r.worker(0, &[0]).cache_hit_bytes(0, Layer::Disk, 23);
        r.worker(0, &[0]).upstream_bytes(0, 4096);
        let tiers = Tiers::new(&crate::config::Config::from_toml_str(
            "[server]\nlisten = \"127.0.0.1:1\"\n[[buckets]]\nname = \"assets\"\nprefix = \"/a\"\nendpoint = \"http://127.0.0.1:9\"\nregion = \"r\"\nbucket = \"bkt\"\naccess_key = \"a\"\nsecret_key = \"s\"\n",
            &|_| None,
        )
        .unwrap()
        .cache)
        .unwrap();
        let text = r.render(&tiers, None);
        assert!(text
            .contains("corvid_requests_total{bucket=\"assets\",method=\"GET\",status=\"2xx\"} 2"));
        assert!(
            text.contains("corvid_requests_total{bucket=\"\",method=\"HEAD\",status=\"4xx\"} 1")
        );
        assert!(text
            .contains("corvid_upstream_requests_total{bucket=\"assets\",outcome=\"timeout\"} 1"));
        assert!(text.contains("corvid_request_duration_seconds_count{bucket=\"assets\"} 2"));
        assert!(text
            .contains("corvid_request_duration_seconds_bucket{bucket=\"assets\",le=\"0.0025\"} 1"));
        assert!(text.contains("corvid_connections_open 1"));
        assert!(text.contains("corvid_build_info{version=\""));
        assert!(text.contains("corvid_cache_hits_total{layer=\"disk\",bucket=\"assets\"} 1"));
        assert!(text.contains("corvid_cache_misses_total{bucket=\"assets\"} 1"));
        assert!(text.contains("corvid_coalesced_requests_total{bucket=\"assets\"} 0"));
        assert!(text.contains("corvid_cache_entries{layer=\"memory\"} 0"));
        assert!(text.contains("corvid_cache_hit_bytes_total{layer=\"disk\",bucket=\"assets\"} 123"));
        assert!(text.contains("corvid_upstream_bytes_total{bucket=\"assets\"} 4096"));
        assert!(text.contains("corvid_cache_evictions_total{layer=\"memory\"} 0"));
        // The stats snapshot reads the same counters.
        let stats = r.cache_stats(&tiers, false, &[("assets".into(), 0)]);
        let a = &stats.buckets["assets"];
        assert_eq!((a.totals.hits, a.totals.misses), (1, 1));
        assert_eq!(a.totals.bytes_served, 123);
        assert_eq!(a.layers.disk.bytes_served, 123);
        assert_eq!(a.totals.origin_bytes, 4096);
        assert_eq!(a.totals.hit_ratio, Some(0.5));
        assert_eq!(stats.totals.origin_bytes, 4096);
    }
}

//! Building a config generation: the first [`Shared`] at start ([`Shared::new`]) and the next
//! one on a reload ([`Shared::reloaded`]), and the Redis client options a generation carries
//! ([`redis_options`]).
//!
//! Building reads key and certificate files and resolves endpoints, so it is blocking: the
//! starting thread or the reload thread, never a worker. A generation is built in full before
//! anything uses it, and every error names the config key at fault, so a refused reload changes
//! nothing. `runtime` calls this to start and reload; `corvid check` calls the same builders
//! (`check.rs`) so that what `serve` refuses, `check` refuses too.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use rustls_pki_types::ServerName;

use super::shared::Shared;
use crate::access_log::AccessLog;
use crate::cache::redis::{RedisOptions, RedisTls};
use crate::cache::tiered::Tiers;
use crate::clock::Clock;
use crate::config::{Addressing, Config, Scheme};
use crate::fdlimit;
use crate::http::request::Limits;
use crate::metrics::Registry;
use crate::router::Router;
use crate::s3::origins::Origins;

/// What one config generation builds from its buckets and `[jwt]` (see [`Shared::reloaded`]).
struct PerConfig {
    router: Router,
    client_tls: Vec<Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>>,
    origins: Arc<Origins>,
    verifier: Option<crate::auth::Verifier>,
    policies: Vec<crate::config::CachePolicy>,
    fleet: Option<Arc<crate::fleet::Fleet>>,
}

impl PerConfig {
    /// Loads the origins' TLS files, the JWT keys, and resolves the endpoints (blocking: the
    /// starting thread or the reload thread, never a worker).
    fn build(config: &Config) -> Result<PerConfig, String> {
        let prefixes: Vec<&str> = config.buckets.iter().map(|b| b.prefix.as_str()).collect();
        let router = Router::new(&prefixes);
        let mut client_tls = Vec::with_capacity(config.buckets.len());
        for b in &config.buckets {
            client_tls.push(match b.endpoint.scheme {
                Scheme::Http => None,
                Scheme::Https => {
                    let cfg = crate::s3::tls::client_config(
                        b.ca_file.as_deref(),
                        crate::s3::tls::ALPN_HTTP1,
                    )
                    .map_err(|e| format!("buckets.{}: ca_file: {e}", b.name))?;
                    let host = match b.addressing {
                        Addressing::Path => b.endpoint.host.clone(),
                        Addressing::Virtual => format!("{}.{}", b.bucket, b.endpoint.host),
                    };
                    let name = ServerName::try_from(host.clone())
                        .map_err(|e| format!("buckets.{}: endpoint host {host:?}: {e}", b.name))?;
                    Some((cfg, name))
                }
            });
        }
        let verifier = config
            .jwt
            .as_ref()
            .map(crate::auth::Verifier::new)
            .transpose()?;
        let origins = Origins::new(config.buckets.iter().map(|b| &b.endpoint));
        origins.refresh_all();
        for (i, b) in config.buckets.iter().enumerate() {
            if let Some(e) = origins.get(i).last_error() {
                log::warn!(
                    "bucket {}: origin {} not reachable yet: {e}",
                    b.name,
                    b.endpoint.authority()
                );
            }
        }
        let policies = (0..config.buckets.len())
            .map(|b| config.policy(b))
            .collect();
        Ok(PerConfig {
            router,
            client_tls,
            origins,
            verifier,
            policies,
            fleet: config.cluster.as_ref().map(crate::fleet::Fleet::new),
        })
    }
}

/// Points each bucket's slot at its credentials cell's refresh counters (static keys: none).
fn show_refresh_counts(
    metrics: &Registry,
    slots: &[usize],
    cells: &[Arc<crate::credentials::Cell>],
) {
    for (slot, cell) in slots.iter().zip(cells) {
        metrics.set_credentials(*slot, cell.source.map(|_| Arc::clone(&cell.counts)));
    }
}

/// Each bucket's metric slot: its index in the bucket table the tiers and the metrics registry
/// share, new names registered there. Called once everything else of a generation is built, so
/// a refused reload leaves no name behind.
fn bucket_slots(config: &Config, tiers: &Tiers) -> Result<Vec<usize>, String> {
    config
        .buckets
        .iter()
        .map(|b| {
            tiers.buckets().add(&b.name).ok_or_else(|| {
                format!(
                    "buckets.{}: more than {} buckets added since start; restart to add more",
                    b.name,
                    crate::cache::usage::RESERVED_BUCKETS
                )
            })
        })
        .collect()
}

impl Shared {
    /// Builds the shared state: TLS configs are loaded and endpoints resolved here, at start.
    pub fn new(config: Config, clock: Clock) -> Result<Arc<Shared>, String> {
        let workers = config.server.worker_count();
        let per = PerConfig::build(&config)?;
        let server_tls = match &config.server.tls {
            None => None,
            Some(t) => Some(
                crate::s3::tls::server_config(&t.cert, &t.key)
                    .map_err(|e| format!("server.tls: {e}"))?,
            ),
        };
        let limits = Limits {
            max_request_line: config.server.max_request_line,
            max_header_bytes: config.server.max_header_bytes,
            max_headers: config.server.max_headers,
        };
        let instance_tag = (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ (std::process::id() as u64).rotate_left(32)) as u32;
        // The config parsed and checked the URL; this builds the options from it once (the TLS
        // config of a rediss:// Redis included) and checks them, so that a bad one is a
        // start-up error rather than a tier silently disabled per worker.
        let redis = match &config.cache.redis {
            None => None,
            Some(r) => {
                let opts = redis_options(r)?;
                opts.check().map_err(|e| format!("cache.redis: {e}"))?;
                Some(opts)
            }
        };
        // One bucket table: the tiers count entries and bytes per bucket in it (for the admin
        // stats) and the metrics registry's per-bucket slots are its indices.
        let buckets =
            crate::cache::usage::Buckets::new(config.buckets.iter().map(|b| b.name.clone()));
        let tiers = Tiers::with_clock(&config.cache, Arc::clone(&buckets), clock.clone())?;
        let metrics = Registry::new(buckets, workers);
        let access_log = match &config.log.access {
            None => None,
            Some(sink) => Some(AccessLog::start(sink, config.log.sample_ppm)?),
        };
        let metrics = match &access_log {
            Some(a) => metrics.with_access_log(Arc::clone(&a.dropped)),
            None => metrics,
        };
        // One bounded first fetch per bucket with a credentials source; a failure leaves that
        // bucket not ready (503) and the refresh thread retrying.
        let credentials = crate::credentials::cells_for(&config);
        let slots = bucket_slots(&config, &tiers)?;
        show_refresh_counts(&metrics, &slots, &credentials);
        let nofile = fdlimit::current().map_or(1024, |(soft, _)| soft);
        let fd_budget = fdlimit::Budget::new(&config, workers, nofile);
        Ok(Arc::new(Shared {
            fd_budget,
            verifier: per.verifier,
            tiers,
            config,
            router: per.router,
            policies: per.policies,
            fleet: per.fleet,
            limits,
            origins: per.origins,
            client_tls: per.client_tls,
            server_tls,
            redis,
            metrics: Arc::new(metrics),
            slots,
            generation: 0,
            shutting_down: Arc::new(AtomicBool::new(false)),
            workers,
            started: Instant::now(),
            instance_tag,
            clock,
            access_log,
            reloads: None,
            credentials,
            warm_jobs: Arc::new(crate::warm::Jobs::new(instance_tag)),
        }))
    }

    /// The next generation for `config` (already planned: restart-only settings kept at their
    /// running values, [`super::reload::plan`]): what depends on the buckets and `[jwt]` is built
    /// anew, everything that lives as long as the process (tiers, metrics, access log, warm jobs,
    /// listeners' settings, Redis options) is carried over. Blocking (endpoint resolution, key
    /// files): the reload thread only. `Err` names the key at fault; nothing changed then.
    pub fn reloaded(&self, config: Config) -> Result<Arc<Shared>, String> {
        let per = PerConfig::build(&config)?;
        // A bucket whose credentials settings did not change keeps its cell (and lease); a new
        // or changed one gets a first fetch here (a changed one keeps counting its refreshes
        // where it was).
        let credentials: Vec<Arc<crate::credentials::Cell>> = config
            .buckets
            .iter()
            .map(|b| {
                let unchanged = self.config.buckets.iter().position(|o| {
                    o.name == b.name && o.credentials == b.credentials && o.region == b.region
                });
                let same_name = self.config.buckets.iter().position(|o| o.name == b.name);
                match (unchanged, same_name) {
                    (Some(j), _) => Arc::clone(&self.credentials[j]),
                    (None, Some(j)) => crate::credentials::Cell::for_bucket_counting(
                        b,
                        Arc::clone(&self.credentials[j].counts),
                    ),
                    (None, None) => crate::credentials::Cell::for_bucket(b),
                }
            })
            .collect();
        let slots = bucket_slots(&config, &self.tiers)?;
        show_refresh_counts(&self.metrics, &slots, &credentials);
        Ok(Arc::new(Shared {
            fd_budget: self.fd_budget,
            verifier: per.verifier,
            tiers: Arc::clone(&self.tiers),
            config,
            router: per.router,
            policies: per.policies,
            fleet: per.fleet,
            limits: self.limits,
            origins: per.origins,
            client_tls: per.client_tls,
            server_tls: self.server_tls.clone(),
            redis: self.redis.clone(),
            metrics: Arc::clone(&self.metrics),
            slots,
            generation: self.generation + 1,
            shutting_down: Arc::clone(&self.shutting_down),
            workers: self.workers,
            started: self.started,
            instance_tag: self.instance_tag,
            clock: self.clock.clone(),
            access_log: self.access_log.clone(),
            reloads: self.reloads.clone(),
            credentials,
            warm_jobs: Arc::clone(&self.warm_jobs),
        }))
    }
}

/// The Redis client options for `cfg`, built once at start-up ([`Shared::redis`]) and cloned by
/// every worker. For `rediss://` this builds the TLS client config, reading
/// `cache.redis.ca_file` (blocking file IO: start-up only, never on a worker); `Err` names the
/// key at fault. `corvid check` calls it too, so a CA file that is not PEM is caught there.
pub fn redis_options(cfg: &crate::config::RedisConfig) -> Result<RedisOptions, String> {
    let tls = if cfg.target.tls {
        let config = crate::s3::tls::client_config(cfg.ca_file.as_deref(), &[])
            .map_err(|e| format!("cache.redis.ca_file: {e}"))?;
        let key = if cfg.cluster.is_empty() {
            "cache.redis.url"
        } else {
            "cache.redis.cluster[0]"
        };
        Some(RedisTls::new(&cfg.target, config).map_err(|e| format!("{key}: {e}"))?)
    } else {
        None
    };
    Ok(RedisOptions {
        tls,
        timeout: cfg.timeout,
        // Two pipelined connections per worker: with one, a large value holds up every reply
        // queued behind it (64 KiB GETs: 8.5k/s on one connection, 25k/s on two; perf/RESULTS.md).
        connections: 2,
        max_value_size: usize::try_from(cfg.max_object_size).unwrap_or(usize::MAX),
        cluster: cfg.cluster.clone(),
        read_from_replicas: cfg.read_from_replicas,
        ..RedisOptions::new(cfg.target.clone())
    })
}

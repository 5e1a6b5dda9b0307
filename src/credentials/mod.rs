//! AWS credential providers and their background refresh (`buckets[].credentials`).
//!
//! A bucket signs with static keys from the config, or with credentials fetched from one of
//! the sources the AWS SDKs know, in the SDKs' documented order for `"chain"`:
//!
//! | source | file | configured when |
//! |---|---|---|
//! | `env` | [`env`](mod@env) | `AWS_ACCESS_KEY_ID` is set |
//! | `profile` | [`profile`] | the profile (config `profile`, else `AWS_PROFILE`, else `default`) has credential settings in `~/.aws/credentials` / `~/.aws/config` |
//! | `web_identity` | [`sts`] | `AWS_WEB_IDENTITY_TOKEN_FILE` and `AWS_ROLE_ARN` are set |
//! | `ecs` | [`container`] | `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` or `_FULL_URI` is set |
//! | `imds` | [`imds`] | always, unless `AWS_EC2_METADATA_DISABLED=true` |
//!
//! `"chain"` takes the first source that is *configured*; one that is configured but fails is
//! that attempt's error (the chain does not go on to the next, as in the SDKs), so a broken
//! IRSA set-up never silently falls through to the node's instance role. The whole chain is
//! evaluated again at each refresh.
//!
//! # Decisions
//! * **Where**: sources run only on the starting thread (one bounded attempt per bucket at
//!   start, [`cells_for`]) and on one helper thread, `corvid-credentials` ([`refresh`]), never on
//!   a worker. They use blocking IO ([`fetch`], a small HTTP/1.1 client over std sockets with
//!   short timeouts, and `std::fs` for token files), which is why they may.
//! * **Sharing**: each bucket has one [`Cell`] (an `Arc`, shared by the workers and the refresh
//!   thread): the current [`Lease`] behind a mutex and a generation counter. A worker keeps its
//!   own `Signer` (with its signing-key cache) and the generation it was built from; before
//!   signing it compares generations with one `Relaxed` load and only takes the lock to rebuild
//!   the signer when the lease changed. Cache hits do not sign, so they never look.
//! * **No credentials**: a bucket whose lease is missing (never obtained) or expired answers
//!   503; corvid never sends an unsigned request. `/ready` is 503 while any bucket is so.
//! * **Start-up**: a source that fails at start is logged (without secrets) and corvid starts
//!   anyway, with the bucket not ready; the refresh thread keeps retrying.
//! * **Refresh**: at `expiry - margin`, margin = min(5 min, half the remaining lifetime) plus up
//!   to a tenth more of jitter, so credentials that live a few seconds are renewed in time too.
//!   A failed refresh keeps the old lease while it is valid, is retried with exponential backoff
//!   (1 s doubling to 60 s, and never later than the expiry), and is logged once per change of
//!   state (ok → failing, failing → ok). Attempts are counted in
//!   `corvid_credentials_refresh_total{bucket, outcome}`. Credentials without an expiry (static
//!   keys in env or a profile) are never refreshed.
//! * **Profile name**: the bucket's `profile` wins over `AWS_PROFILE` (the config is the more
//!   specific of the two).
//! * **Secrets**: `Credentials` and [`Lease`] redact the secret and the token in `Debug`; error
//!   messages name sources, files, URLs and status codes, never key material.
//! * **Reload** (not wired yet): [`cells_for`] builds one cell per bucket; a config reload can
//!   call [`Cell::for_bucket`] for new or changed buckets, keep the `Arc`s of unchanged ones
//!   (workers holding them keep their signers), and restart [`refresh::Refresher`] with the
//!   new list (it takes a snapshot of the cells when it starts).

pub mod container;
pub mod env;
pub mod expiry;
pub mod fetch;
pub mod imds;
pub mod profile;
pub mod refresh;
pub mod sts;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;

use crate::config::{BucketConfig, BucketCredentials, Config, CredentialSource};
use crate::metrics::RefreshCounts;
use crate::s3::sigv4::Credentials;

/// Credentials and when they stop being valid (`None`: never).
#[derive(Clone, PartialEq, Eq)]
pub struct Lease {
    pub credentials: Credentials,
    pub expires_at: Option<SystemTime>,
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("credentials", &self.credentials)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl Lease {
    pub fn is_valid_at(&self, now: SystemTime) -> bool {
        self.expires_at.is_none_or(|e| now < e)
    }
}

/// What a source needs to know: the environment, the bucket's region and profile, TLS.
pub struct Ctx<'a> {
    /// Reads an environment variable (the process's, or a test's map).
    pub vars: &'a dyn Fn(&str) -> Option<String>,
    /// The bucket's region (the STS endpoint's default).
    pub region: &'a str,
    /// The bucket's `profile` key.
    pub profile: Option<&'a str>,
    /// The bucket's name, for log lines.
    pub bucket: &'a str,
}

impl Ctx<'_> {
    /// The variable's value, `None` when unset or empty (as the SDKs treat empty).
    pub fn var(&self, name: &str) -> Option<String> {
        (self.vars)(name).filter(|v| !v.is_empty())
    }
}

/// The process environment, for [`Ctx::vars`].
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// What one source answered: `Ok(None)` when it is not configured (the chain goes on).
pub type Outcome = Result<Option<Lease>, String>;

/// Fetches credentials from `source` once (blocking: start-up or the refresh thread only).
pub fn resolve(source: CredentialSource, cx: &Ctx<'_>) -> Result<Lease, String> {
    let one = |s: CredentialSource| -> Outcome {
        match s {
            CredentialSource::Env => env::load(cx),
            CredentialSource::Profile => profile::load(cx),
            CredentialSource::WebIdentity => sts::load_from_env(cx),
            CredentialSource::Ecs => container::load(cx),
            CredentialSource::Imds => imds::load(cx),
            CredentialSource::Chain => unreachable_chain(),
        }
    };
    if source == CredentialSource::Chain {
        for s in CHAIN {
            if let Some(lease) = one(s).map_err(|e| format!("{}: {e}", s.as_str()))? {
                return Ok(lease);
            }
        }
        return Err(
            "no source in the chain (env, profile, web_identity, ecs, imds) is \
                    configured"
                .into(),
        );
    }
    one(source)
        .map_err(|e| format!("{}: {e}", source.as_str()))?
        .ok_or_else(|| format!("{}: not configured ({})", source.as_str(), hint(source)))
}

fn unreachable_chain() -> Outcome {
    Err("the chain does not contain itself".into())
}

/// The chain's order, as the AWS SDKs.
pub const CHAIN: [CredentialSource; 5] = [
    CredentialSource::Env,
    CredentialSource::Profile,
    CredentialSource::WebIdentity,
    CredentialSource::Ecs,
    CredentialSource::Imds,
];

fn hint(source: CredentialSource) -> &'static str {
    match source {
        CredentialSource::Env => "AWS_ACCESS_KEY_ID is not set",
        CredentialSource::Profile => "the profile has no credentials in the AWS config files",
        CredentialSource::WebIdentity => "AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN are not set",
        CredentialSource::Ecs => {
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI and AWS_CONTAINER_CREDENTIALS_FULL_URI are not set"
        }
        CredentialSource::Imds => "AWS_EC2_METADATA_DISABLED is true",
        CredentialSource::Chain => "",
    }
}

/// One bucket's current credentials, shared by every worker and the refresh thread.
pub struct Cell {
    /// The bucket's name (log lines, metric labels).
    pub bucket: String,
    pub region: String,
    /// `None` for static keys (never refreshed).
    pub source: Option<CredentialSource>,
    pub profile: Option<String>,
    lease: Mutex<Option<Arc<Lease>>>,
    /// Bumped after each change of `lease`; workers compare it to decide whether to re-read.
    generation: AtomicU64,
    /// Refresh attempts, rendered by `/metrics`.
    pub counts: Arc<RefreshCounts>,
}

impl fmt::Debug for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cell")
            .field("bucket", &self.bucket)
            .field("source", &self.source)
            .field("generation", &self.generation())
            .finish_non_exhaustive()
    }
}

/// How `/ready` describes a bucket's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Ok,
    /// Never obtained.
    None,
    /// Obtained, and expired since.
    Expired,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Ok => "ok",
            State::None => "none",
            State::Expired => "expired",
        }
    }
}

impl Cell {
    /// A cell for `b` without fetching anything: static keys are in place at once, a source's
    /// cell starts empty (see [`Cell::for_bucket`]).
    pub fn new(b: &BucketConfig) -> Cell {
        let (source, profile, lease) = match &b.credentials {
            BucketCredentials::Static {
                access_key,
                secret_key,
                session_token,
            } => (
                None,
                None,
                Some(Arc::new(Lease {
                    credentials: Credentials {
                        access_key: access_key.clone(),
                        secret_key: secret_key.clone(),
                        session_token: session_token.clone(),
                    },
                    expires_at: None,
                })),
            ),
            BucketCredentials::Source { source, profile } => (Some(*source), profile.clone(), None),
        };
        Cell {
            bucket: b.name.clone(),
            region: b.region.clone(),
            source,
            profile,
            generation: AtomicU64::new(u64::from(lease.is_some())),
            lease: Mutex::new(lease),
            counts: Arc::new(RefreshCounts::default()),
        }
    }

    /// The cell for `b`, with a first fetch from its source (blocking, bounded by the
    /// sources' timeouts); a failure is logged and leaves the cell empty. This is the entry
    /// point a config reload uses for a new or changed bucket.
    pub fn for_bucket(b: &BucketConfig) -> Arc<Cell> {
        Cell::for_bucket_counting(b, Arc::default())
    }

    /// [`Cell::for_bucket`], counting refreshes into `counts`: a reload that changes a
    /// bucket's credentials settings passes the old cell's, so the bucket's
    /// `corvid_credentials_refresh_total` series never goes back.
    pub fn for_bucket_counting(b: &BucketConfig, counts: Arc<RefreshCounts>) -> Arc<Cell> {
        let cell = Arc::new(Cell {
            counts,
            ..Cell::new(b)
        });
        if cell.source.is_some() {
            match cell.fetch(&process_env) {
                Ok(lease) => {
                    log::info!(
                        "bucket {}: credentials from {} ({})",
                        b.name,
                        cell.source_name(),
                        describe_expiry(&lease)
                    );
                    cell.set(lease);
                }
                Err(e) => log::error!(
                    "bucket {}: no credentials yet ({e}); requests get 503 until a refresh succeeds",
                    b.name
                ),
            }
        }
        cell
    }

    /// The source's config name (`"static"` for keys in the config).
    pub fn source_name(&self) -> &'static str {
        self.source.map_or("static", CredentialSource::as_str)
    }

    /// One fetch from the cell's source, counted. Blocking: the refresh thread or start-up.
    pub fn fetch(&self, vars: &dyn Fn(&str) -> Option<String>) -> Result<Lease, String> {
        let Some(source) = self.source else {
            return Err("static keys are not fetched".into());
        };
        let cx = Ctx {
            vars,
            region: &self.region,
            profile: self.profile.as_deref(),
            bucket: &self.bucket,
        };
        let res = resolve(source, &cx);
        match &res {
            Ok(_) => self.counts.ok.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.counts.error.fetch_add(1, Ordering::Relaxed),
        };
        res
    }

    /// Installs a new lease and moves the generation on.
    pub fn set(&self, lease: Lease) {
        *self.lease.lock() = Some(Arc::new(lease));
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// The generation: changes whenever the lease does (0 = never had one).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// The current lease (takes the lock: once per generation change, per worker).
    pub fn lease(&self) -> Option<Arc<Lease>> {
        self.lease.lock().clone()
    }

    pub fn state(&self, now: SystemTime) -> State {
        match self.lease() {
            None => State::None,
            Some(l) if l.is_valid_at(now) => State::Ok,
            Some(_) => State::Expired,
        }
    }
}

/// One cell per bucket of `config`, parallel to `config.buckets`, each fetched once
/// ([`Cell::for_bucket`]).
pub fn cells_for(config: &Config) -> Vec<Arc<Cell>> {
    config.buckets.iter().map(Cell::for_bucket).collect()
}

/// "expires in 3599 s" / "no expiry", for log lines.
pub fn describe_expiry(lease: &Lease) -> String {
    match lease.expires_at {
        None => "no expiry".into(),
        Some(e) => match e.duration_since(SystemTime::now()) {
            Ok(d) => format!("expire in {} s", d.as_secs()),
            Err(_) => "already expired".into(),
        },
    }
}

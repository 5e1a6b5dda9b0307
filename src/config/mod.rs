//! The TOML configuration: its schema, defaults, and validation.
//!
//! This module owns turning a config file into a [`Config`] that the rest of corvid can trust
//! without re-checking: every address parsed, every size and duration in machine units, every
//! referenced file present, every cross-key rule (a bucket with `auth = true` needs `[jwt]`, a
//! bucket prefix may not shadow an internal route, ...) enforced. A config that loads is one the
//! server can start with; a config that does not yields a [`ConfigError`] listing **every**
//! problem found, each as `key.path: what is wrong`, so an operator fixes them in one pass.
//!
//! Pipeline: TOML text → `toml::Table` (syntax errors carry line and column) → a hand-written
//! walker (`walk.rs`) that takes each known key, expands `${ENV}` in its string value ([`env`](mod@env)),
//! converts it (sizes and durations via [`units`]), checks it, and reports leftovers as unknown
//! keys → the public types below. See `examples/corvid.example.toml` for a commented example of
//! every key.
//!
//! # Defaults (for every optional key)
//!
//! | key | default |
//! | --- | --- |
//! | `server.workers` | `0` = one per available core (max 1024) |
//! | `server.tls` | absent = plain HTTP |
//! | `server.header_timeout` | `10s` |
//! | `server.idle_timeout` | `60s` |
//! | `server.send_timeout` | `60s` |
//! | `server.max_header_bytes` | `16KiB` (1 B ..= 1 MiB) |
//! | `server.max_request_line` | `8KiB` (1 B ..= 1 MiB) |
//! | `server.max_headers` | `100` (1 ..= 256: the parser uses a fixed array) |
//! | `server.max_connections` | absent = what fits: each worker's share of the open-file limit after the origin and Redis pools (`fdlimit`); when set, per worker (> 0) |
//! | `server.shutdown_grace` | `30s` (0 allowed: close at once) |
//! | `buckets[].credentials` | `"chain"` when no `access_key`/`secret_key` is given |
//! | `buckets[].profile` | `AWS_PROFILE`, else `default` |
//! | `buckets[].addressing` | `"path"` |
//! | `buckets[].auth` | `false` |
//! | `buckets[].claims` | `[]` (no rules beyond a valid token) |
//! | `buckets[].ttl` | absent = `cache.ttl` |
//! | `buckets[].connect_timeout` | `5s` |
//! | `buckets[].first_byte_timeout` | `30s` |
//! | `buckets[].read_timeout` | `30s` |
//! | `buckets[].max_idle_connections` | `64` per worker (0 = no pooling) |
//! | `buckets[].pool_idle_timeout` | `4s` (> 0; to not pool, set `max_idle_connections = 0`) |
//! | `buckets[].cors.max_age` | absent = no `Access-Control-Max-Age` |
//! | `jwt.token_sources` | `["bearer"]` |
//! | `jwt.leeway` | `30s` |
//! | `jwt.audience` / `jwt.issuer` | absent = not checked |
//! | `admin.allow_networks` | absent = any network (the JWT claim is the gate) |
//! | `admin.listen` | absent = served on `server.listen` |
//! | `cache.ttl` | `1h` |
//! | `cache.max_object_size` | `16MiB` |
//! | `cache.list_ttl` | `10s` (listings change as objects are written: short by default) |
//! | `buckets[].list_ttl` | absent = `cache.list_ttl` |
//! | `buckets[].host` | absent = path-style requests only |
//! | `cache.slice_size` | `4MiB`, or `max_object_size` when smaller (set: ≤ `max_object_size`) |
//! | `cache.max_sliced_object_size` | `100GiB` (≤ `max_object_size` turns slicing off) |
//! | `cache.slice_readahead` | `4` slices (at most 64) |
//! | `cache.warm_concurrency` | `4` objects per warm job (1 ..= 64; also at most half a bucket's `max_idle_connections`) |
//! | `cache.write_policy` | `"write-through"` |
//! | `cache.stale_if_error`, `cache.stale_while_revalidate` | absent = off |
//! | `cache.memory.capacity` | `256MiB` (also when `[cache]` or `[cache.memory]` is absent) |
//! | `cache.disk` | absent = tier disabled |
//! | `cache.disk.segment_size` | `64MiB` |
//! | `cache.redis` | absent = tier disabled |
//! | `cache.redis.max_object_size` | `4MiB` |
//! | `cache.redis.timeout` | `50ms` |
//! | `cache.redis.ca_file` | absent = the public roots only (`rediss://`) |
//!
//! # Decisions where the spec is silent
//!
//! * **Sizes / durations**: see [`units`] (fractions allowed if exact, binary units only, a
//!   bare number means bytes / seconds). **`${ENV}`**: see [`env`](mod@env) (`$${` escapes).
//! * **Counts** (`workers`, `max_headers`, ...) also accept a string of digits so that they can
//!   come from `${ENV}`; booleans must be real TOML booleans.
//! * **Timeouts** must be > 0. `shutdown_grace`, `jwt.leeway`, `cors.max_age`,
//!   `stale_if_error`, `stale_while_revalidate` and the TTLs (`cache.ttl`, `buckets[].ttl`,
//!   `cache.negative_ttl`, `buckets[].negative_ttl`, `cache.list_ttl`, `buckets[].list_ttl`) may be 0: `ttl = 0` stores responses
//!   without explicit freshness but revalidates them on every use (a cheap `304` from S3),
//!   `negative_ttl = 0` (the default) caches no 404s.
//! * **Relative paths** (`tls.cert`, `ca_file`, `jwt.public_key`, `cache.disk.dir`, ...) are
//!   resolved against the config file's directory by [`Config::load`] (and
//!   [`Config::from_toml_str_in`]); [`Config::from_toml_str`] leaves them relative to the
//!   working directory. Files named by the config must exist at load time; `cache.disk.dir`
//!   need not (the disk tier may create it).
//! * **Bucket prefixes** are matched against the raw (still percent-encoded) request path, so a
//!   prefix must be written as it appears on the wire: only `A-Z a-z 0-9 - . _ ~ ! $ & ' ( ) * +
//!   , ; = : @` and `/`. The internal-route check is case-sensitive, like the router.
//! * **Bucket names at the origin**: always non-empty without `/`, whitespace or control
//!   characters; with `addressing = "virtual"` additionally DNS-compatible (3–63 of `a-z 0-9 . -`,
//!   starting and ending alphanumeric, no `..`, not an IPv4 address).
//! * **`ca_file` with an `http://` endpoint** is an error rather than silently ignored.
//! * **Endpoints** may not carry userinfo, a path (other than `/`), a query or a fragment; the
//!   scheme is case-insensitive and the host is lower-cased.
//! * **CORS origins** are `"*"` or `http(s)://host[:port]` exactly as browsers send `Origin`
//!   (no path, no trailing `/`); the list must not be empty.
//! * **JWT**: HMAC secrets must be at least as long as the hash output (32/48/64 bytes for
//!   HS256/384/512), as RFC 7518 §3.2 requires; the secret is used as raw UTF-8 bytes. `secret`
//!   with an asymmetric algorithm, or `public_key`/`jwks_file` with HS*, is an error.
//!   `audience` may be a string or a non-empty array of strings; `token_sources` may not name a
//!   source twice. Key files are only checked to exist here; their contents are parsed by
//!   `auth::Verifier::new` at start (errors name `jwt.public_key` / `jwt.jwks_file` too).
//! * **`buckets[].claims`**: an array of `{ name, equals | one_of | contains }` (exactly one
//!   test each): `equals` a string, integer or boolean (no floats), `one_of` a non-empty list
//!   of strings, `contains` a string (the claim must be an array holding it). Only allowed with
//!   `auth = true`, since rules on a public bucket would never be checked.
//! * **`[admin]` requires `[jwt]`**, since admin requests are authorised by a JWT claim.
//!   `admin.listen` must differ from `server.listen`. `allow_networks`, if present, must not be
//!   empty (omit it to allow any network); a bare address means a single host (`/32`, `/128`),
//!   and a CIDR with host bits set (`10.1.0.0/8`) is an error, since it is usually a typo.
//! * **Redis URL** (`cache.redis.url`, parsed once, into [`RedisTarget`]):
//!   `redis://[[user]:password@]host[:port][/db]`, or `rediss://` with the same rules for TLS
//!   to Redis (ElastiCache in-transit encryption, Redis Cloud, Upstash). The scheme is `redis`
//!   or `rediss` (case-insensitive); Unix sockets (`unix://`, `redis+unix://`) are refused. The
//!   host is a name or an IP address, IPv6 in brackets (`redis://[::1]:6380`); the port
//!   defaults to 6379 with or without TLS (ElastiCache serves TLS on 6379; a provider on
//!   another port, e.g. 6380, is written with it); the path is empty, `/` or a database number
//!   (`/2`, sent as `SELECT 2`). No query or fragment (`?`/`#`): corvid takes no options in the
//!   URL. With `rediss://` the server's certificate is verified against the public roots (the
//!   same Mozilla set as `https://` origins) plus the CAs of `cache.redis.ca_file`, for the
//!   URL's host: a name against the certificate's DNS names, an IP address literal against its
//!   IP address SANs. `ca_file` with `redis://` is an error (it would do nothing). The login
//!   follows redis-rs and redis-cli:
//!   `redis://:password@host` sends `AUTH password` (`requirepass`, or the `default` ACL user),
//!   `redis://user:password@host` sends `AUTH user password` (an ACL user); both parts are
//!   percent-decoded, so a `:`, `@`, `/`, `?`, `#` or `%` in them is written `%3A`, `%40`,
//!   `%2F`, `%3F`, `%23`, `%25`. `redis://secret@host` (no `:`) is refused: redis-rs reads it
//!   as a user name and redis-cli as a password, and guessing could send a password as a user
//!   name or silently not log in. An empty password (`redis://user:@host`, `redis://:@host`) is
//!   refused too. Error messages never repeat the credentials.
//! * **Redis Cluster** (`cache.redis.cluster`, instead of `url`; exactly one of the two, both
//!   or neither is an error naming the key): a non-empty array of seed node URLs, each under
//!   the rules of `url`, into [`RedisConfig::cluster`]. Every seed has the same scheme
//!   (`redis://` or `rediss://`) and the same login, since one login and one TLS setting serve
//!   every node corvid discovers; none has a database path other than `/0` (a cluster only has
//!   database 0). `ca_file` applies to every node of a `rediss://` cluster.
//!   `read_from_replicas` (boolean, default false) sends the tier's reads to the replicas of
//!   each key's shard; it is an error naming the key with `url` (one server has no replicas).
//! * **Credentials**: either static `access_key` + `secret_key` (+ `session_token`), or
//!   `credentials = "env" | "profile" | "web_identity" | "ecs" | "imds" | "chain"` (+ `profile`
//!   for `"profile"`/`"chain"`); with neither, `"chain"`. Both at once is an error naming
//!   `credentials`; `profile` with static keys or another source is an error. The sources,
//!   the chain's order and the refresh are described in `crate::credentials`.
//! * **Secrets** (`secret_key`, `session_token`, `jwt.secret`, the redis password) are redacted
//!   from `Debug` output so a logged config does not leak them.

mod build;
pub mod env;
pub mod units;
mod walk;

#[cfg(test)]
#[allow(clippy::disallowed_methods, reason = "tests may block")]
mod tests;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub server: ServerConfig,
    /// At least one; order matters only for the bucket index used by the router.
    pub buckets: Vec<BucketConfig>,
    pub jwt: Option<JwtConfig>,
    pub admin: Option<AdminConfig>,
    pub cache: CacheConfig,
    pub log: LogConfig,
    /// `[cluster]`: this instance is one of a fleet whose members each own a share of the
    /// keys (`crate::fleet`); `None` = it works alone.
    pub cluster: Option<ClusterConfig>,
}

/// A bucket's caching policy as the RFC 9111 rules (`object::freshness`) take it: what the
/// configuration says, in milliseconds ([`Config::policy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachePolicy {
    /// Freshness for a response without explicit expiry (heuristic, §4.2.2); may be zero
    /// (= stored but revalidated on every use).
    pub default_ttl_ms: u64,
    /// How long a 404 is cached; 0 = 404s are not stored.
    pub negative_ttl_ms: u64,
    /// `cache.stale_while_revalidate` / `stale_if_error`: the default for responses without the
    /// directive and the cap for those with it (None = no default, no cap).
    pub stale_while_revalidate_ms: Option<u64>,
    pub stale_if_error_ms: Option<u64>,
}

/// `[log]`: the access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Where access log lines go; `None` = off (the default).
    pub access: Option<LogSink>,
    /// `sample`: the share of successful (< 400) requests logged, in millionths (1.0 =
    /// 1,000,000); errors are always logged.
    pub sample_ppm: u32,
    /// `level`: the process's log level (`off` … `trace`); `None` keeps `RUST_LOG`'s, or
    /// `info`. `RUST_LOG`, when set, wins (it can name levels per module). Applied on reload.
    pub level: Option<log::LevelFilter>,
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            access: None,
            level: None,
            sample_ppm: 1_000_000,
        }
    }
}

/// Where the access log is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogSink {
    Stdout,
    Stderr,
    /// Appended to; reopened on SIGUSR1 (after logrotate moved it).
    File(PathBuf),
}

/// `[server]`: the listener and the limits on client connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// 0 = one worker per available core; see [`ServerConfig::worker_count`].
    pub workers: usize,
    pub tls: Option<TlsConfig>,
    /// Max time to receive a complete request head.
    pub header_timeout: Duration,
    /// Max time a keep-alive connection may sit between requests.
    pub idle_timeout: Duration,
    /// Max size of a request head (request line + headers); larger → 431.
    pub max_header_bytes: usize,
    /// Max number of header fields; larger → 431. At most 256.
    pub max_headers: usize,
    /// Max length of the request line; longer → 414.
    pub max_request_line: usize,
    /// Max time a write to a client may stall.
    pub send_timeout: Duration,
    /// How long in-flight requests may finish after a shutdown signal.
    pub shutdown_grace: Duration,
    /// Max concurrent client connections per worker; `None` (not configured): what fits the
    /// open-file limit (see `fdlimit::Budget`).
    pub max_connections: Option<usize>,
}

impl ServerConfig {
    /// The number of worker threads to run: `workers`, or the available parallelism if 0.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }
}

/// HTTPS on a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// One `[[buckets]]` block: a URL prefix mapped to a bucket at an S3 origin.
#[derive(Clone, PartialEq, Eq)]
pub struct BucketConfig {
    /// Identifier for the admin API and metric labels: `[A-Za-z0-9_.-]+`, unique.
    pub name: String,
    /// URL path prefix, e.g. `/assets`; see the module docs for the rules.
    pub prefix: String,
    pub endpoint: Endpoint,
    pub region: String,
    /// Bucket name at the origin.
    pub bucket: String,
    /// How corvid signs its requests to this bucket's origin.
    pub credentials: BucketCredentials,
    pub addressing: Addressing,
    /// Extra CA bundle to trust for this origin (https only).
    pub ca_file: Option<PathBuf>,
    /// Requests need a valid JWT.
    pub auth: bool,
    /// Rules on the claims of a verified token (`claims = [...]`); all must hold, else 403.
    /// Empty unless `auth = true` (a rule on a public bucket is a config error).
    pub claims: Vec<ClaimRule>,
    /// Overrides `cache.ttl` for this bucket.
    pub ttl: Option<Duration>,
    /// Overrides `cache.negative_ttl` for this bucket.
    pub negative_ttl: Option<Duration>,
    /// Overrides `cache.list_ttl` for this bucket (listings, `crate::bucket`).
    pub list_ttl: Option<Duration>,
    /// Virtual-host name: a request whose `Host` (port aside, any case) is this name is for
    /// this bucket, its whole path the key (`crate::router`). Lowercase, unique.
    pub host: Option<String>,
    pub cors: Option<CorsConfig>,
    pub connect_timeout: Duration,
    /// Max time from sending a request to the origin until the first byte of its response.
    pub first_byte_timeout: Duration,
    /// Max gap between body bytes from the origin.
    pub read_timeout: Duration,
    /// Max pooled idle connections to the origin, per worker.
    pub max_idle_connections: usize,
    /// Pooled connections idle for longer are closed instead of reused (see `s3::client`).
    pub pool_idle_timeout: Duration,
}

impl fmt::Debug for BucketConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BucketConfig")
            .field("name", &self.name)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("credentials", &self.credentials)
            .field("addressing", &self.addressing)
            .field("ca_file", &self.ca_file)
            .field("auth", &self.auth)
            .field("claims", &self.claims)
            .field("ttl", &self.ttl)
            .field("negative_ttl", &self.negative_ttl)
            .field("list_ttl", &self.list_ttl)
            .field("host", &self.host)
            .field("cors", &self.cors)
            .field("connect_timeout", &self.connect_timeout)
            .field("first_byte_timeout", &self.first_byte_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("max_idle_connections", &self.max_idle_connections)
            .field("pool_idle_timeout", &self.pool_idle_timeout)
            .finish()
    }
}

/// A bucket's credentials (`access_key`/`secret_key`/`session_token`, or `credentials` and
/// `profile`). `Debug` redacts the secret and the token.
#[derive(Clone, PartialEq, Eq)]
pub enum BucketCredentials {
    /// Static keys from the config file (or its `${ENV}`).
    Static {
        access_key: String,
        secret_key: String,
        session_token: Option<String>,
    },
    /// Fetched (and refreshed) at run time by `crate::credentials` from `source`.
    Source {
        source: CredentialSource,
        /// `profile = "..."`: the profile `"profile"` and `"chain"` read (else `AWS_PROFILE`,
        /// else `default`).
        profile: Option<String>,
    },
}

impl fmt::Debug for BucketCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BucketCredentials::Static {
                access_key,
                session_token,
                ..
            } => f
                .debug_struct("Static")
                .field("access_key", access_key)
                .field("secret_key", &Redacted)
                .field("session_token", &session_token.as_ref().map(|_| Redacted))
                .finish(),
            BucketCredentials::Source { source, profile } => f
                .debug_struct("Source")
                .field("source", source)
                .field("profile", profile)
                .finish(),
        }
    }
}

/// `buckets[].credentials`: where temporary (or static) AWS credentials come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CredentialSource {
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`.
    Env,
    /// `~/.aws/credentials` and `~/.aws/config` (static keys, `credential_process`, web identity).
    Profile,
    /// `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN` through STS (EKS IRSA).
    WebIdentity,
    /// The ECS / EKS Pod Identity container endpoint.
    Ecs,
    /// The EC2 instance metadata service (IMDSv2).
    Imds,
    /// env → profile → web_identity → ecs → imds: the first that is configured.
    Chain,
}

impl CredentialSource {
    /// The config spelling, e.g. `"web_identity"`.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialSource::Env => "env",
            CredentialSource::Profile => "profile",
            CredentialSource::WebIdentity => "web_identity",
            CredentialSource::Ecs => "ecs",
            CredentialSource::Imds => "imds",
            CredentialSource::Chain => "chain",
        }
    }

    pub fn parse(s: &str) -> Option<CredentialSource> {
        [
            CredentialSource::Env,
            CredentialSource::Profile,
            CredentialSource::WebIdentity,
            CredentialSource::Ecs,
            CredentialSource::Imds,
            CredentialSource::Chain,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }
}

struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// An origin's scheme, host and port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub scheme: Scheme,
    /// Lower-cased host name or IP address; IPv6 without brackets.
    pub host: String,
    /// Explicit port, or 80/443 by scheme.
    pub port: u16,
}

impl Endpoint {
    /// `host[:port]` as sent in `Host` headers: the port is omitted when it is the scheme's
    /// default, and an IPv6 address is bracketed.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == self.scheme.default_port() {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme.as_str(), self.authority())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub const fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
    pub const fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// How the bucket is addressed at the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Addressing {
    /// `https://endpoint/bucket/key`.
    #[default]
    Path,
    /// `https://bucket.endpoint/key`.
    Virtual,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsConfig {
    /// `"*"` or exact origins (`https://example.com`, `http://localhost:3000`).
    pub allow_origins: Vec<String>,
    pub max_age: Option<Duration>,
}

impl CorsConfig {
    /// Whether `origin` (a request's `Origin` header) is allowed.
    pub fn allows(&self, origin: &str) -> bool {
        self.allow_origins
            .iter()
            .any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
    }
}

/// `[jwt]`: how tokens are verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtConfig {
    pub algorithm: JwtAlgorithm,
    pub key: JwtKey,
    /// Where to look for the token, in order; the first present wins.
    pub token_sources: Vec<TokenSource>,
    /// Required `iss` claim, if set.
    pub issuer: Option<String>,
    /// Accepted `aud` values; empty = not checked.
    pub audience: Vec<String>,
    /// Clock skew tolerated on `exp` / `nbf`.
    pub leeway: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JwtAlgorithm {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl JwtAlgorithm {
    pub const ALL: [JwtAlgorithm; 12] = [
        JwtAlgorithm::HS256,
        JwtAlgorithm::HS384,
        JwtAlgorithm::HS512,
        JwtAlgorithm::RS256,
        JwtAlgorithm::RS384,
        JwtAlgorithm::RS512,
        JwtAlgorithm::PS256,
        JwtAlgorithm::PS384,
        JwtAlgorithm::PS512,
        JwtAlgorithm::ES256,
        JwtAlgorithm::ES384,
        JwtAlgorithm::EdDSA,
    ];

    /// The JOSE `alg` name.
    pub const fn as_str(self) -> &'static str {
        match self {
            JwtAlgorithm::HS256 => "HS256",
            JwtAlgorithm::HS384 => "HS384",
            JwtAlgorithm::HS512 => "HS512",
            JwtAlgorithm::RS256 => "RS256",
            JwtAlgorithm::RS384 => "RS384",
            JwtAlgorithm::RS512 => "RS512",
            JwtAlgorithm::PS256 => "PS256",
            JwtAlgorithm::PS384 => "PS384",
            JwtAlgorithm::PS512 => "PS512",
            JwtAlgorithm::ES256 => "ES256",
            JwtAlgorithm::ES384 => "ES384",
            JwtAlgorithm::EdDSA => "EdDSA",
        }
    }

    /// HMAC algorithms take a shared secret; the others a public key.
    pub const fn is_hmac(self) -> bool {
        matches!(
            self,
            JwtAlgorithm::HS256 | JwtAlgorithm::HS384 | JwtAlgorithm::HS512
        )
    }

    /// RFC 7518 §3.2: an HMAC key at least as long as the hash output. 0 for non-HMAC.
    pub const fn min_secret_len(self) -> usize {
        match self {
            JwtAlgorithm::HS256 => 32,
            JwtAlgorithm::HS384 => 48,
            JwtAlgorithm::HS512 => 64,
            _ => 0,
        }
    }
}

/// The key material tokens are verified with.
#[derive(Clone, PartialEq, Eq)]
pub enum JwtKey {
    /// HS*: the shared secret (raw UTF-8 bytes).
    Secret(String),
    /// RS*/PS*/ES*/EdDSA: a PEM public key file.
    PublicKey(PathBuf),
    /// RS*/PS*/ES*/EdDSA: a JWKS file (keys chosen by `kid`).
    JwksFile(PathBuf),
}

impl fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwtKey::Secret(_) => f.debug_tuple("Secret").field(&Redacted).finish(),
            JwtKey::PublicKey(p) => f.debug_tuple("PublicKey").field(p).finish(),
            JwtKey::JwksFile(p) => f.debug_tuple("JwksFile").field(p).finish(),
        }
    }
}

/// Where a request's token is taken from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// A query parameter, e.g. `?token=...` (name compared after percent-decoding).
    Query(String),
    /// A request header (the whole value is the token).
    Header(http::HeaderName),
}

/// `[admin]`: who may use the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// The JWT claim an admin token must carry.
    pub claim: ClaimMatch,
    /// Client networks allowed; empty = any.
    pub allow_networks: Vec<Cidr>,
    /// A separate listener for the admin API; `None` = served on `server.listen`.
    pub listen: Option<SocketAddr>,
}

impl AdminConfig {
    /// Whether a client at `ip` may use the admin API (network check only).
    pub fn network_allowed(&self, ip: IpAddr) -> bool {
        self.allow_networks.is_empty() || self.allow_networks.iter().any(|c| c.contains(ip))
    }
}

/// One `buckets[].claims` rule: the verified token's claim `name` must pass `test`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRule {
    pub name: String,
    pub test: ClaimTest,
}

/// What a [`ClaimRule`] requires of its claim. A missing claim fails every test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimTest {
    /// `equals = v`: the claim is a string, number or boolean equal to `v` (same JSON type).
    Equals(ClaimValue),
    /// `one_of = [...]`: the claim is a string in the list.
    OneOf(Vec<String>),
    /// `contains = "s"`: the claim is an array with the string `s` among its elements.
    Contains(String),
}

/// A scalar a claim is compared with (TOML floats are refused: equality on them is fragile).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimValue {
    String(String),
    Integer(i64),
    Bool(bool),
}

/// A claim that must equal a value (string claims, or a string inside an array claim).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimMatch {
    pub name: String,
    pub value: String,
}

/// An IP network: address and prefix length, host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

impl Cidr {
    /// Parses `"10.0.0.0/8"`, `"::1/128"`, or a bare address (a single host).
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (addr_part, len_part) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = addr_part
            .parse()
            .map_err(|_| format!("`{s}` is not a CIDR network (e.g. \"10.0.0.0/8\")"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix_len = match len_part {
            None => max,
            Some(l) => match l.parse::<u8>() {
                Ok(n) if n <= max && !l.starts_with('+') => n,
                _ => return Err(format!("`{s}`: prefix length must be 0..={max}")),
            },
        };
        let cidr = Cidr { addr, prefix_len };
        let masked = cidr.network();
        if masked != addr {
            return Err(format!(
                "`{s}` has host bits set (did you mean \"{masked}/{prefix_len}\"?)"
            ));
        }
        Ok(cidr)
    }

    /// The address with host bits cleared.
    fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        }
    }

    /// Whether `ip` is inside this network. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, as
    /// seen on dual-stack sockets) match IPv4 networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if ip.is_ipv4() != self.addr.is_ipv4() {
            return false;
        }
        Cidr {
            addr: ip,
            prefix_len: self.prefix_len,
        }
        .network()
            == self.addr
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// `cache.list_ttl` when not set: listings change whenever an object is written, so they are
/// kept briefly — long enough for a paginating client or a burst of `ls`, short enough that a
/// new object shows up soon without a purge.
pub const DEFAULT_LIST_TTL: Duration = Duration::from_secs(10);

/// `[cache]` and its tiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// Freshness lifetime when the origin gives none (and the default for buckets); zero means
    /// such responses are stored but revalidated on every use.
    pub ttl: Duration,
    /// How long an origin `404` is cached (zero: not at all).
    pub negative_ttl: Duration,
    /// How long a bucket listing is cached (zero: listings pass through uncached).
    pub list_ttl: Duration,
    /// Objects up to this size are cached whole; larger ones as slices (up to
    /// `max_sliced_object_size`).
    pub max_object_size: u64,
    /// The length of one slice of a large object (≤ `max_object_size`).
    pub slice_size: u64,
    /// Objects above `max_object_size` up to this size are cached as slices; larger ones stream
    /// through uncached. At most `max_object_size` (e.g. 0) turns slicing off.
    pub max_sliced_object_size: u64,
    /// Slices fetched ahead of a reader of a sliced object (0 = only what it asks for).
    pub slice_readahead: usize,
    /// Objects one warm job (`POST /admin/cache/warm/...`, `crate::warm`) fetches at once, at
    /// most; never more than half a bucket's `max_idle_connections` (at least 1).
    pub warm_concurrency: usize,
    pub write_policy: WritePolicy,
    /// Serve a stale copy for this long past expiry if the origin fails.
    pub stale_if_error: Option<Duration>,
    /// Serve a stale copy for this long past expiry while refreshing in the background.
    pub stale_while_revalidate: Option<Duration>,
    pub memory: MemoryConfig,
    pub disk: Option<DiskConfig>,
    pub redis: Option<RedisConfig>,
}

impl CacheConfig {
    /// A memory-only cache of `capacity` bytes storing objects up to `max_object_size` whole,
    /// no slices, the other settings at their defaults: for tools and tests that build tiers
    /// without a config file.
    pub fn memory_only(capacity: u64, max_object_size: u64) -> CacheConfig {
        CacheConfig {
            ttl: Duration::from_secs(3600),
            negative_ttl: Duration::ZERO,
            list_ttl: DEFAULT_LIST_TTL,
            max_object_size,
            slice_size: max_object_size,
            max_sliced_object_size: 0,
            slice_readahead: 0,
            warm_concurrency: 4,
            write_policy: WritePolicy::WriteThrough,
            stale_if_error: None,
            stale_while_revalidate: None,
            memory: MemoryConfig { capacity },
            disk: None,
            redis: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum WritePolicy {
    /// Fill lower tiers before the response completes.
    #[default]
    WriteThrough,
    /// Fill lower tiers in the background.
    WriteBehind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryConfig {
    /// Bytes; 0 disables the tier.
    pub capacity: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    pub dir: PathBuf,
    pub capacity: u64,
    /// 0 < segment_size <= capacity.
    pub segment_size: u64,
}

/// `[cache.redis]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// The server and the login, parsed from `cache.redis.url`; with `cache.redis.cluster`,
    /// its first seed node (whose scheme and login every seed shares).
    pub target: RedisTarget,
    /// `cache.redis.cluster`: the seed nodes of a Redis Cluster (`target` is the first); empty
    /// for one server (`url`).
    pub cluster: Vec<RedisTarget>,
    /// `cache.redis.ca_file`: a PEM file of CAs trusted for a `rediss://` server in addition
    /// to the public roots (only with `rediss://`; the file existed at load time).
    pub ca_file: Option<PathBuf>,
    pub max_object_size: u64,
    /// Per-operation timeout; a slow Redis counts as a miss.
    pub timeout: Duration,
    /// `cache.redis.read_from_replicas` (default false; only with `cluster`): reads go to a
    /// replica of the key's shard.
    pub read_from_replicas: bool,
}

/// A parsed `cache.redis.url`: where the Redis server is and how to log into it. The one
/// parser of Redis URLs is its [`FromStr`](std::str::FromStr) (the rules are in the module
/// docs); the Redis client takes this value, never the URL text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisTarget {
    /// `rediss://`: TLS over the TCP connection, the server's certificate verified for `host`
    /// (an IP address literal as an IP address SAN).
    pub tls: bool,
    /// Lower-cased host name or IP address; IPv6 without brackets.
    pub host: String,
    /// Explicit port, or 6379.
    pub port: u16,
    /// `AUTH` on every new connection; `None` = no `AUTH`.
    pub auth: Option<RedisAuth>,
    /// Database number from the URL path (`SELECT` when not 0); 0 if absent.
    pub db: u32,
}

impl RedisTarget {
    /// `host:port` with an IPv6 address bracketed (the form `ToSocketAddrs` and logs take).
    /// Never includes the credentials.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl std::str::FromStr for RedisTarget {
    type Err = String;

    /// Parses `redis[s]://[[user]:password@]host[:port][/db]`; `Err` is the problem message (which
    /// never repeats the credentials).
    fn from_str(url: &str) -> Result<RedisTarget, String> {
        build::parse_redis_url(url)
    }
}

/// The login of a [`RedisTarget`]: `AUTH password` (Redis `requirepass`, or the `default` ACL
/// user) or `AUTH user password` (an ACL user). A user name always comes with a password.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisAuth {
    pub username: Option<String>,
    pub password: String,
}

impl fmt::Debug for RedisAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisAuth")
            .field("username", &self.username)
            .field("password", &Redacted)
            .finish()
    }
}

/// `[cluster]`: the fleet this instance is a member of (`crate::fleet` has the rules).
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `cluster.peer`: this instance's address as its peers reach it; its identity among the
    /// members (the same spelling as in `peers`, or an address `peers_dns` resolves to).
    pub peer: PeerAddr,
    /// `cluster.peers` or `cluster.peers_dns`.
    pub members: PeerSource,
    /// `cluster.secret` (>= 16 bytes): the HMAC key of requests between peers.
    pub secret: String,
    /// `cluster.peers_refresh` (2 s): DNS re-resolution and health checks of peers marked down.
    pub peers_refresh: Duration,
    /// `cluster.peer_timeout` (5 s): the most a peer's answer head may take.
    pub peer_timeout: Duration,
    /// `cluster.local_ttl` (0 = off): how long a member keeps, in its memory tier only, a copy
    /// of an object another member owns and relayed to it (`crate::fleet`: local copies).
    pub local_ttl: Duration,
}

impl fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("peer", &self.peer)
            .field("members", &self.members)
            .field("secret", &Redacted)
            .field("peers_refresh", &self.peers_refresh)
            .field("peer_timeout", &self.peer_timeout)
            .field("local_ttl", &self.local_ttl)
            .finish()
    }
}

/// Where a fleet's member list comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerSource {
    /// `cluster.peers`: these addresses (this instance's `peer` is added when missing).
    Static(Vec<PeerAddr>),
    /// `cluster.peers_dns`: every address the name resolves to, with this port (a Kubernetes
    /// headless Service lists one address per ready pod), re-resolved every `peers_refresh`.
    Dns(PeerAddr),
}

/// A peer's `host:port`, as written in the config (lower-cased host, IPv6 without brackets).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerAddr {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for PeerAddr {
    /// `host:port`, an IPv6 address in brackets: the member's name in ownership hashing,
    /// peer signatures and `/admin/cluster`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl std::str::FromStr for PeerAddr {
    type Err = String;

    /// `host:port` or `[v6]:port`; the port is required.
    fn from_str(s: &str) -> Result<PeerAddr, String> {
        build::parse_peer_addr(s)
    }
}

/// Everything wrong with a config, one [`Problem`] per key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

/// One thing wrong: the key path (`buckets[1].prefix`, `""` for the file as a whole) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    fn single(key: &str, message: impl Into<String>) -> Self {
        ConfigError {
            problems: vec![Problem {
                key: key.to_owned(),
                message: message.into(),
            }],
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// How long an entry of `bucket` stays fresh when the origin says nothing: the bucket's
    /// `ttl`, else `cache.ttl`.
    pub fn ttl(&self, bucket: usize) -> Duration {
        self.buckets[bucket].ttl.unwrap_or(self.cache.ttl)
    }

    /// How long an origin 404 for `bucket` is cached: the bucket's `negative_ttl`, else
    /// `cache.negative_ttl` (zero: not cached).
    pub fn negative_ttl(&self, bucket: usize) -> Duration {
        self.buckets[bucket]
            .negative_ttl
            .unwrap_or(self.cache.negative_ttl)
    }

    /// How long a listing of `bucket` stays fresh: the bucket's `list_ttl`, else
    /// `cache.list_ttl` (zero: listings are not cached).
    pub fn list_ttl(&self, bucket: usize) -> Duration {
        self.buckets[bucket].list_ttl.unwrap_or(self.cache.list_ttl)
    }

    /// `bucket`'s caching policy: its TTLs (or `[cache]`'s) and `[cache]`'s stale windows.
    pub fn policy(&self, bucket: usize) -> CachePolicy {
        let ms = |d: Duration| d.as_millis() as u64;
        CachePolicy {
            default_ttl_ms: ms(self.ttl(bucket)),
            negative_ttl_ms: ms(self.negative_ttl(bucket)),
            stale_while_revalidate_ms: self.cache.stale_while_revalidate.map(ms),
            stale_if_error_ms: self.cache.stale_if_error.map(ms),
        }
    }

    /// Reads and validates the config file at `path`, with `${ENV}` from the process
    /// environment and relative paths resolved against the file's directory.
    #[expect(
        clippy::disallowed_methods,
        reason = "config loading: the CLI, before any worker exists"
    )]
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::single(
                "",
                format!("cannot read config file `{}`: {e}", path.display()),
            )
        })?;
        let base = path.parent().unwrap_or(Path::new(""));
        let env = |name: &str| std::env::var(name).ok();
        Self::parse(&text, &env, Some(base))
    }

    /// Parses and validates config text; relative paths stay relative to the working directory.
    pub fn from_toml_str(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        Self::parse(text, env, None)
    }

    /// Like [`Config::from_toml_str`], resolving relative paths against `base_dir`.
    pub fn from_toml_str_in(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
        base_dir: &Path,
    ) -> Result<Config, ConfigError> {
        Self::parse(text, env, Some(base_dir))
    }

    fn parse(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
        base_dir: Option<&Path>,
    ) -> Result<Config, ConfigError> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let at = e
                .span()
                .map(|span| {
                    let (line, col) = line_col(text, span.start);
                    format!(" at line {line}, column {col}")
                })
                .unwrap_or_default();
            ConfigError::single("", format!("TOML syntax error{at}: {}", e.message().trim()))
        })?;
        let mut cx = walk::Ctx::new(env, base_dir);
        let config = build::config(&mut cx, table);
        match config {
            Some(c) if cx.problems.is_empty() => Ok(c),
            _ => {
                debug_assert!(!cx.problems.is_empty(), "a failed build must say why");
                Err(ConfigError {
                    problems: cx.problems,
                })
            }
        }
    }
}

/// 1-based line and column (in characters) of byte offset `at`.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, col)
}

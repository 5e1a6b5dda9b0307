//! From a parsed TOML table to the public config types: one function per section, each taking
//! every key it knows (so leftovers are reported as unknown) and checking each value, then the
//! cross-section rules. Every check records its problem and carries on, so one run reports all.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use toml::{Table, Value};

use super::walk::{Ctx, Section};
use super::*;

/// Internal routes a bucket prefix must not shadow (first path segment).
const RESERVED_SEGMENTS: [&str; 4] = ["health", "ready", "metrics", "admin"];
const MAX_WORKERS: usize = 1024;
const MAX_HEADERS_CAP: usize = 256;
const MAX_HEAD_LIMIT: u64 = 1 << 20;

fn check<T>(cx: &mut Ctx<'_>, key: &str, r: Result<T, String>) -> Option<T> {
    r.map_err(|e| cx.problem(key, e)).ok()
}

fn in_range<T: PartialOrd + std::fmt::Display>(
    cx: &mut Ctx<'_>,
    key: &str,
    v: T,
    min: T,
    max: T,
) -> Option<T> {
    if v < min || v > max {
        cx.problem(key, format!("must be between {min} and {max} (got {v})"));
        return None;
    }
    Some(v)
}

fn positive_size(cx: &mut Ctx<'_>, key: &str, v: Value) -> Option<u64> {
    let n = cx.size(key, v)?;
    if n == 0 {
        cx.problem(key, "must be greater than 0");
        return None;
    }
    Some(n)
}

/// A head-size limit as usize, 1 B ..= 1 MiB: these size per-connection buffers.
fn head_limit(cx: &mut Ctx<'_>, key: &str, v: Value) -> Option<usize> {
    let n = cx.size(key, v)?;
    if n == 0 || n > MAX_HEAD_LIMIT {
        cx.problem(
            key,
            format!(
                "must be between 1B and 1MiB (got {})",
                units::format_size(n)
            ),
        );
        return None;
    }
    usize::try_from(n).ok()
}

fn section_with<'a, T>(
    build: impl FnOnce(&mut Ctx<'a>, Section) -> Option<T>,
) -> impl FnOnce(&mut Ctx<'a>, &str, Value) -> Option<T> {
    move |cx, key, v| {
        let s = cx.section(key, v)?;
        build(cx, s)
    }
}

pub fn config(cx: &mut Ctx<'_>, table: Table) -> Option<Config> {
    let mut root = Section::new(String::new(), table);
    let jwt_present = root.has("jwt");
    let server = root.req(cx, "server", section_with(server));
    let buckets = root.req(cx, "buckets", |cx, k, v| buckets(cx, k, v, jwt_present));
    let jwt = root.opt(cx, "jwt", section_with(jwt));
    let admin_present = root.has("admin");
    let admin = root.opt(cx, "admin", section_with(admin));
    let cache_present = root.has("cache");
    let cache_config = root.opt(cx, "cache", section_with(cache));
    let cache_config = if cache_present {
        cache_config
    } else {
        cache(cx, Section::new("cache".into(), Table::new()))
    };
    let log_present = root.has("log");
    let log = root.opt(cx, "log", section_with(log));
    let cluster_present = root.has("cluster");
    let cluster = root.opt(cx, "cluster", section_with(cluster));
    root.finish(cx);
    if cluster_present && cluster.is_none() {
        return None;
    }
    if log_present && log.is_none() {
        return None;
    }

    if admin_present && !jwt_present {
        cx.problem(
            "admin",
            "[admin] requires a [jwt] section: admin requests are authorised by a JWT claim",
        );
    }
    if let (Some(server), Some(admin)) = (&server, &admin) {
        if admin.listen == Some(server.listen) {
            cx.problem(
                "admin.listen",
                "must differ from server.listen (omit it to serve the admin API there)",
            );
        }
    }
    Some(Config {
        server: server?,
        buckets: buckets?,
        jwt,
        admin,
        cache: cache_config?,
        log: log.unwrap_or_default(),
        cluster,
    })
}

/// The shortest `cluster.secret` accepted: 16 bytes, 128 bits for an HMAC-SHA256 key.
const MIN_PEER_SECRET: usize = 16;

fn cluster(cx: &mut Ctx<'_>, mut s: Section) -> Option<ClusterConfig> {
    let peers_key = s.key("peers");
    let peer_addr = |cx: &mut Ctx<'_>, k: &str, v: Value| {
        let text = cx.nonempty(k, v)?;
        check(cx, k, parse_peer_addr(&text))
    };
    if !s.has("peer") {
        cx.problem(
            &s.key("peer"),
            "required key is missing: this instance's address as its peers reach it              (host:port)",
        );
    }
    let peer = s.opt(cx, "peer", peer_addr);
    let members = match (s.has("peers"), s.has("peers_dns")) {
        (true, false) => s
            .opt(cx, "peers", |cx, k, v| {
                let Value::Array(list) = v else {
                    cx.problem(k, "must be a list of \"host:port\" strings");
                    return None;
                };
                let mut addrs = Vec::new();
                for (i, item) in list.into_iter().enumerate() {
                    addrs.push(peer_addr(cx, &format!("{k}[{i}]"), item));
                }
                addrs.into_iter().collect::<Option<Vec<_>>>()
            })
            .map(PeerSource::Static),
        (false, true) => s.opt(cx, "peers_dns", peer_addr).map(PeerSource::Dns),
        (both, _) => {
            cx.problem(
                &peers_key,
                if both {
                    "give either `peers` (a list of host:port) or `peers_dns` (a name whose \
                     addresses are the peers), not both"
                } else {
                    "required key is missing: give `peers` (a list of host:port) or \
                     `peers_dns` (a name whose addresses are the peers)"
                },
            );
            let _ = s.opt(cx, "peers", |_, _, _| None::<()>);
            let _ = s.opt(cx, "peers_dns", |_, _, _| None::<()>);
            None
        }
    };
    if !s.has("secret") {
        cx.problem(
            &s.key("secret"),
            "required key is missing: a shared secret of at least 16 bytes that \
             authenticates requests between peers (e.g. \"${CORVID_PEER_SECRET}\")",
        );
    }
    let secret = s.opt(cx, "secret", |cx, k, v| {
        let text = cx.string(k, v)?;
        if text.len() < MIN_PEER_SECRET {
            cx.problem(
                k,
                format!(
                    "must be at least {MIN_PEER_SECRET} bytes (got {}): it is the key that \
                     lets one instance speak for another",
                    text.len()
                ),
            );
            return None;
        }
        Some(text)
    });
    let peers_refresh = s.or(cx, "peers_refresh", Duration::from_secs(2), Ctx::timeout);
    let peer_timeout = s.or(cx, "peer_timeout", Duration::from_secs(5), Ctx::timeout);
    let local_ttl = s.or(cx, "local_ttl", Duration::ZERO, Ctx::duration);
    s.finish(cx);
    Some(ClusterConfig {
        peer: peer?,
        members: members?,
        secret: secret?,
        peers_refresh: peers_refresh?,
        peer_timeout: peer_timeout?,
        local_ttl: local_ttl?,
    })
}

/// `host:port` or `[v6]:port` of a peer (`cluster.peer`, `cluster.peers`, `cluster.peers_dns`).
pub(crate) fn parse_peer_addr(text: &str) -> Result<PeerAddr, String> {
    match parse_authority(text)? {
        // An IP address in its canonical spelling, the one a resolver gives for `peers_dns`:
        // a member's name must be the same however it was written.
        (host, Some(port)) => Ok(PeerAddr {
            host: host
                .parse::<std::net::IpAddr>()
                .map_or(host, |ip| ip.to_string()),
            port,
        }),
        (_, None) => Err(format!("`{text}` has no port (expected host:port)")),
    }
}

fn log(cx: &mut Ctx<'_>, mut s: Section) -> Option<LogConfig> {
    let access = s.or(cx, "access", None, |cx, k, v| {
        let text = cx.string(k, v.clone())?;
        match text.as_str() {
            "off" => Some(None),
            "stdout" => Some(Some(LogSink::Stdout)),
            "stderr" => Some(Some(LogSink::Stderr)),
            "" => {
                cx.problem(k, "expected \"off\", \"stdout\", \"stderr\" or a file path");
                None
            }
            _ => cx.path(k, v).map(|p| Some(LogSink::File(p))),
        }
    });
    let sample = s.or(cx, "sample", 1_000_000, |cx, k, v| match v {
        Value::Float(f) if (0.0..=1.0).contains(&f) => Some((f * 1e6).round() as u32),
        Value::Integer(i) if i == 0 || i == 1 => Some(i as u32 * 1_000_000),
        other => {
            cx.problem(k, format!("expected a fraction from 0 to 1, found {other}"));
            None
        }
    });
    let level = s.or(cx, "level", None, |cx, k, v| {
        let text = cx.string(k, v)?;
        match text.parse::<log::LevelFilter>() {
            Ok(l) => Some(Some(l)),
            Err(_) => {
                cx.problem(
                    k,
                    format!("expected off, error, warn, info, debug or trace, found {text:?}"),
                );
                None
            }
        }
    });
    s.finish(cx);
    Some(LogConfig {
        access: access?,
        sample_ppm: sample?,
        level: level?,
    })
}

fn server(cx: &mut Ctx<'_>, mut s: Section) -> Option<ServerConfig> {
    let listen = s.req(cx, "listen", Ctx::socket_addr);
    let workers = s.or(cx, "workers", 0, |cx, k, v| {
        let n = cx.count(k, v)?;
        in_range(cx, k, n, 0, MAX_WORKERS)
    });
    let tls = s.opt(cx, "tls", section_with(tls));
    let tls_ok = tls.is_some() || !s.has("tls");
    let header_timeout = s.or(cx, "header_timeout", secs(10), Ctx::timeout);
    let idle_timeout = s.or(cx, "idle_timeout", secs(60), Ctx::timeout);
    let max_header_bytes = s.or(cx, "max_header_bytes", 16 << 10, head_limit);
    let max_headers = s.or(cx, "max_headers", 100, |cx, k, v| {
        let n = cx.count(k, v)?;
        in_range(cx, k, n, 1, MAX_HEADERS_CAP)
    });
    let max_request_line = s.or(cx, "max_request_line", 8 << 10, head_limit);
    let send_timeout = s.or(cx, "send_timeout", secs(60), Ctx::timeout);
    let shutdown_grace = s.or(cx, "shutdown_grace", secs(30), Ctx::duration);
    // Absent: as many as fit (`fdlimit::Budget`), so that a default config never warns.
    let max_connections = s.opt(cx, "max_connections", |cx, k, v| {
        let n = cx.count(k, v)?;
        in_range(cx, k, n, 1, usize::MAX)
    });
    s.finish(cx);
    if !tls_ok {
        return None;
    }
    Some(ServerConfig {
        listen: listen?,
        workers: workers?,
        tls,
        header_timeout: header_timeout?,
        idle_timeout: idle_timeout?,
        max_header_bytes: max_header_bytes?,
        max_headers: max_headers?,
        max_request_line: max_request_line?,
        send_timeout: send_timeout?,
        shutdown_grace: shutdown_grace?,
        max_connections,
    })
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn tls(cx: &mut Ctx<'_>, mut s: Section) -> Option<TlsConfig> {
    let cert = s.req(cx, "cert", Ctx::existing_file);
    let key = s.req(cx, "key", Ctx::existing_file);
    s.finish(cx);
    Some(TlsConfig {
        cert: cert?,
        key: key?,
    })
}

fn buckets(cx: &mut Ctx<'_>, key: &str, v: Value, jwt_present: bool) -> Option<Vec<BucketConfig>> {
    let list = cx.array(key, v, |cx, k, v| {
        let s = cx.section(k, v)?;
        bucket(cx, s, jwt_present)
    });
    let list = list?;
    if list.is_empty() {
        cx.problem(key, "at least one bucket is required");
        return None;
    }
    let mut ok = true;
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut prefixes: HashMap<&str, usize> = HashMap::new();
    let mut hosts: HashMap<&str, usize> = HashMap::new();
    for (i, b) in list.iter().enumerate() {
        if let Some(h) = b.host.as_deref() {
            if let Some(first) = hosts.insert(h, i) {
                hosts.insert(h, first);
                cx.problem(
                    &format!("{key}[{i}].host"),
                    format!("duplicate host `{h}` (also buckets[{first}])"),
                );
                ok = false;
            }
        }
        if let Some(first) = names.insert(&b.name, i) {
            names.insert(&b.name, first);
            cx.problem(
                &format!("{key}[{i}].name"),
                format!("duplicate name `{}` (also buckets[{first}])", b.name),
            );
            ok = false;
        }
        if let Some(first) = prefixes.insert(&b.prefix, i) {
            prefixes.insert(&b.prefix, first);
            cx.problem(
                &format!("{key}[{i}].prefix"),
                format!("duplicate prefix `{}` (also buckets[{first}])", b.prefix),
            );
            ok = false;
        }
    }
    ok.then_some(list)
}

/// A bucket's virtual-host name (`host`): a DNS name as clients send it in `Host`, lowercase
/// (the router compares case-insensitively, so an uppercase name would only mislead), without
/// a port (any port of the listener matches) or a trailing dot.
fn validate_virtual_host(h: &str) -> Result<(), String> {
    if h.len() > 253 {
        return Err("must be at most 253 characters".into());
    }
    let ok_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if !h.split('.').all(ok_label) {
        return Err(format!(
            "`{h}` is not a lowercase DNS name (labels of a-z 0-9 -, no port, no trailing dot)"
        ));
    }
    Ok(())
}

fn bucket(cx: &mut Ctx<'_>, mut s: Section, jwt_present: bool) -> Option<BucketConfig> {
    let name = s.req(cx, "name", |cx, k, v| {
        let n = cx.nonempty(k, v)?;
        check(cx, k, validate_name(&n).map(|()| n))
    });
    let prefix = s.req(cx, "prefix", |cx, k, v| {
        let p = cx.string(k, v)?;
        check(cx, k, validate_prefix(&p).map(|()| p))
    });
    let endpoint = s.req(cx, "endpoint", |cx, k, v| {
        let e = cx.nonempty(k, v)?;
        check(cx, k, parse_endpoint(&e))
    });
    let region = s.req(cx, "region", |cx, k, v| {
        let r = cx.nonempty(k, v)?;
        check(cx, k, validate_region(&r).map(|()| r))
    });
    let addressing = s.or(cx, "addressing", Addressing::Path, |cx, k, v| {
        match cx.string(k, v)?.as_str() {
            "path" => Some(Addressing::Path),
            "virtual" => Some(Addressing::Virtual),
            other => {
                cx.problem(
                    k,
                    format!(
                        "`{other}` is not an addressing style (expected \"path\" or \"virtual\")"
                    ),
                );
                None
            }
        }
    });
    let bucket_key = s.key("bucket");
    let bucket = s.req(cx, "bucket", |cx, k, v| {
        let b = cx.nonempty(k, v)?;
        check(
            cx,
            k,
            validate_bucket_name(&b, Addressing::Path).map(|()| b),
        )
    });
    if let (Some(b), Some(Addressing::Virtual)) = (&bucket, addressing) {
        if let Err(e) = validate_bucket_name(b, Addressing::Virtual) {
            cx.problem(&bucket_key, e);
        }
    }
    let credentials = bucket_credentials(cx, &mut s);
    let ca_key = s.key("ca_file");
    let ca_present = s.has("ca_file");
    let ca_file = s.opt(cx, "ca_file", Ctx::existing_file);
    if let (Some(_), Some(e)) = (&ca_file, &endpoint) {
        if e.scheme == Scheme::Http {
            cx.problem(&ca_key, "only meaningful for an https:// endpoint");
        }
    }
    let auth_key = s.key("auth");
    let auth = s.or(cx, "auth", false, Ctx::boolean);
    // Security never fails open: a private bucket without a way to verify tokens is an error.
    if auth == Some(true) && !jwt_present {
        cx.problem(&auth_key, "auth = true requires a [jwt] section");
    }
    let claims_key = s.key("claims");
    let claims_present = s.has("claims");
    let claims = s.or(cx, "claims", Vec::new(), |cx, k, v| {
        cx.array(k, v, |cx, k, v| {
            let r = cx.section(k, v)?;
            claim_rule(cx, r)
        })
    });
    if claims_present && auth == Some(false) {
        cx.problem(
            &claims_key,
            "only checked on a bucket with auth = true (set auth = true, or remove the rules)",
        );
    }
    let ttl_present = s.has("ttl");
    let ttl = s.opt(cx, "ttl", Ctx::duration);
    let negative_present = s.has("negative_ttl");
    let negative_ttl = s.opt(cx, "negative_ttl", Ctx::duration);
    let list_present = s.has("list_ttl");
    let list_ttl = s.opt(cx, "list_ttl", Ctx::duration);
    let host_present = s.has("host");
    let host = s.opt(cx, "host", |cx, k, v| {
        let h = cx.nonempty(k, v)?;
        check(cx, k, validate_virtual_host(&h).map(|()| h))
    });
    let cors_present = s.has("cors");
    let cors = s.opt(cx, "cors", section_with(cors));
    let connect_timeout = s.or(cx, "connect_timeout", secs(5), Ctx::timeout);
    let first_byte_timeout = s.or(cx, "first_byte_timeout", secs(30), Ctx::timeout);
    let read_timeout = s.or(cx, "read_timeout", secs(30), Ctx::timeout);
    let max_idle_connections = s.or(cx, "max_idle_connections", 64, Ctx::count);
    // Below the 5 s keep-alive timeout of Node.js and Apache: see the `s3::client` module doc.
    let pool_idle_timeout = s.or(cx, "pool_idle_timeout", secs(4), Ctx::timeout);
    s.finish(cx);

    // An optional key that was present but invalid has already been reported; fail the bucket.
    if (ca_present && ca_file.is_none())
        || (ttl_present && ttl.is_none())
        || (negative_present && negative_ttl.is_none())
        || (list_present && list_ttl.is_none())
        || (host_present && host.is_none())
        || (cors_present && cors.is_none())
    {
        return None;
    }
    Some(BucketConfig {
        name: name?,
        prefix: prefix?,
        endpoint: endpoint?,
        region: region?,
        bucket: bucket?,
        credentials: credentials?,
        addressing: addressing?,
        ca_file,
        auth: auth?,
        claims: claims?,
        ttl,
        negative_ttl,
        list_ttl,
        host,
        cors,
        connect_timeout: connect_timeout?,
        first_byte_timeout: first_byte_timeout?,
        read_timeout: read_timeout?,
        max_idle_connections: max_idle_connections?,
        pool_idle_timeout: pool_idle_timeout?,
    })
}

/// One `claims` rule: `{ name = "...", equals = v | one_of = [...] | contains = "..." }`.
pub(super) fn claim_rule(cx: &mut Ctx<'_>, mut s: Section) -> Option<ClaimRule> {
    let name = s.req(cx, "name", Ctx::nonempty);
    let tests = ["equals", "one_of", "contains"];
    let given: Vec<&str> = tests.into_iter().filter(|t| s.has(t)).collect();
    let path = s.path().to_owned();
    let equals = s.opt(cx, "equals", |cx, k, v| match v {
        Value::String(_) => cx.string(k, v).map(ClaimValue::String),
        Value::Integer(n) => Some(ClaimValue::Integer(n)),
        Value::Boolean(b) => Some(ClaimValue::Bool(b)),
        _ => {
            cx.problem(k, "must be a string, an integer or a boolean");
            None
        }
    });
    let one_of = s.opt(cx, "one_of", |cx, k, v| {
        let list = cx.array(k, v, Ctx::string)?;
        if list.is_empty() {
            cx.problem(k, "must list at least one value");
            return None;
        }
        Some(list)
    });
    let contains = s.opt(cx, "contains", Ctx::string);
    s.finish(cx);
    if given.len() != 1 {
        cx.problem(
            &path,
            format!(
                "needs exactly one of `equals`, `one_of` or `contains` (got {})",
                if given.is_empty() {
                    "none".to_owned()
                } else {
                    given.join(", ")
                }
            ),
        );
        return None;
    }
    let test = match (equals, one_of, contains) {
        (Some(v), None, None) => ClaimTest::Equals(v),
        (None, Some(l), None) => ClaimTest::OneOf(l),
        (None, None, Some(c)) => ClaimTest::Contains(c),
        _ => return None,
    };
    Some(ClaimRule { name: name?, test })
}

/// Credentials and tokens: non-empty, and no whitespace or control characters — most often a
/// trailing newline that came in through `${ENV}` from a file, which would break signing.
/// A bucket's credentials: static `access_key` + `secret_key` (+ `session_token`), or a
/// `credentials` source (+ `profile`), or neither: the `"chain"` default. Both forms together
/// is an error naming `credentials`, and so is half a static pair.
fn bucket_credentials(cx: &mut Ctx<'_>, s: &mut Section) -> Option<BucketCredentials> {
    let source_key = s.key("credentials");
    let profile_key = s.key("profile");
    let keys_given = s.has("access_key") || s.has("secret_key") || s.has("session_token");
    let source_given = s.has("credentials");
    let source = s.opt(cx, "credentials", |cx, k, v| {
        let name = cx.string(k, v)?;
        match CredentialSource::parse(&name) {
            Some(src) => Some(src),
            None => {
                cx.problem(
                    k,
                    format!(
                        "`{name}` is not a credentials source (expected \"env\", \"profile\", \
                         \"web_identity\", \"ecs\", \"imds\" or \"chain\")"
                    ),
                );
                None
            }
        }
    });
    let profile_given = s.has("profile");
    let profile = s.opt(cx, "profile", |cx, k, v| {
        let p = cx.nonempty(k, v)?;
        if p.chars()
            .any(|ch| ch.is_whitespace() || ch.is_control() || ch == ']')
        {
            cx.problem(
                k,
                "not a profile name (whitespace, control characters or `]`)",
            );
            return None;
        }
        Some(p)
    });
    if keys_given {
        let access_key = s.req(cx, "access_key", credential);
        let secret_key = s.req(cx, "secret_key", credential);
        let token_present = s.has("session_token");
        let session_token = s.opt(cx, "session_token", credential);
        if source_given {
            cx.problem(
                &source_key,
                "give either static keys (access_key, secret_key) or a credentials source, \
                 not both",
            );
            return None;
        }
        if profile_given {
            cx.problem(
                &profile_key,
                "only used with credentials = \"profile\" or \"chain\"",
            );
            return None;
        }
        if token_present && session_token.is_none() {
            return None;
        }
        return Some(BucketCredentials::Static {
            access_key: access_key?,
            secret_key: secret_key?,
            session_token,
        });
    }
    if (source_given && source.is_none()) || (profile_given && profile.is_none()) {
        return None;
    }
    let source = source.unwrap_or(CredentialSource::Chain);
    if profile.is_some() && !matches!(source, CredentialSource::Profile | CredentialSource::Chain) {
        cx.problem(
            &profile_key,
            "only used with credentials = \"profile\" or \"chain\"",
        );
        return None;
    }
    Some(BucketCredentials::Source { source, profile })
}

fn credential(cx: &mut Ctx<'_>, key: &str, v: Value) -> Option<String> {
    let c = cx.nonempty(key, v)?;
    if c.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
        cx.problem(
            key,
            "contains whitespace or control characters (a trailing newline from the environment?)",
        );
        return None;
    }
    Some(c)
}

fn cors(cx: &mut Ctx<'_>, mut s: Section) -> Option<CorsConfig> {
    let allow_origins = s.req(cx, "allow_origins", |cx, k, v| {
        let list = cx.array(k, v, |cx, k, v| {
            let o = cx.nonempty(k, v)?;
            check(cx, k, validate_origin(&o).map(|()| o))
        })?;
        if list.is_empty() {
            cx.problem(k, "must list at least one origin (or \"*\")");
            return None;
        }
        Some(list)
    });
    let max_age_present = s.has("max_age");
    let max_age = s.opt(cx, "max_age", Ctx::duration);
    s.finish(cx);
    if max_age_present && max_age.is_none() {
        return None;
    }
    Some(CorsConfig {
        allow_origins: allow_origins?,
        max_age,
    })
}

fn jwt(cx: &mut Ctx<'_>, mut s: Section) -> Option<JwtConfig> {
    let algorithm = s.req(cx, "algorithm", |cx, k, v| {
        let a = cx.string(k, v)?;
        let found = JwtAlgorithm::ALL.into_iter().find(|x| x.as_str() == a);
        if found.is_none() {
            let names: Vec<&str> = JwtAlgorithm::ALL.iter().map(|x| x.as_str()).collect();
            cx.problem(
                k,
                format!(
                    "`{a}` is not a supported algorithm (expected one of {})",
                    names.join(", ")
                ),
            );
        }
        found
    });
    let (secret_key, pk_key, jwks_key) = (s.key("secret"), s.key("public_key"), s.key("jwks_file"));
    let (has_secret, has_pk, has_jwks) = (s.has("secret"), s.has("public_key"), s.has("jwks_file"));
    let secret = s.opt(cx, "secret", Ctx::nonempty);
    let public_key = s.opt(cx, "public_key", Ctx::existing_file);
    let jwks_file = s.opt(cx, "jwks_file", Ctx::existing_file);
    let token_sources = s.or(
        cx,
        "token_sources",
        vec![TokenSource::Bearer],
        |cx, k, v| {
            let list = cx.array(k, v, |cx, k, v| {
                let t = cx.string(k, v)?;
                check(cx, k, parse_token_source(&t))
            })?;
            if list.is_empty() {
                cx.problem(k, "must name at least one source (default [\"bearer\"])");
                return None;
            }
            for (i, t) in list.iter().enumerate() {
                if list[..i].contains(t) {
                    cx.problem(&format!("{k}[{i}]"), "names the same source twice");
                    return None;
                }
            }
            Some(list)
        },
    );
    let issuer_present = s.has("issuer");
    let issuer = s.opt(cx, "issuer", Ctx::nonempty);
    let audience = s.or(cx, "audience", Vec::new(), |cx, k, v| match v {
        Value::Array(_) => {
            let list = cx.array(k, v, Ctx::nonempty)?;
            if list.is_empty() {
                cx.problem(k, "must not be empty (omit the key to not check `aud`)");
                return None;
            }
            Some(list)
        }
        v => cx.nonempty(k, v).map(|a| vec![a]),
    });
    let leeway = s.or(cx, "leeway", secs(30), Ctx::duration);
    let path = s.path().to_owned();
    s.finish(cx);

    let algorithm = algorithm?;
    let key = if algorithm.is_hmac() {
        for (present, k) in [(has_pk, &pk_key), (has_jwks, &jwks_key)] {
            if present {
                cx.problem(
                    k,
                    format!(
                        "not used by {}; HMAC algorithms use `secret`",
                        algorithm.as_str()
                    ),
                );
            }
        }
        if !has_secret {
            cx.problem(&secret_key, format!("required for {}", algorithm.as_str()));
        }
        let secret = secret?;
        let min = algorithm.min_secret_len();
        if secret.len() < min {
            cx.problem(
                &secret_key,
                format!(
                    "too short for {}: {} bytes, at least {min} required (RFC 7518 §3.2)",
                    algorithm.as_str(),
                    secret.len()
                ),
            );
            return None;
        }
        if has_pk || has_jwks {
            return None;
        }
        JwtKey::Secret(secret)
    } else {
        if has_secret {
            cx.problem(
                &secret_key,
                format!(
                    "not used by {}; use `public_key` or `jwks_file`",
                    algorithm.as_str()
                ),
            );
        }
        match (has_pk, has_jwks) {
            (false, false) => {
                cx.problem(
                    &path,
                    format!(
                        "{} needs one of `public_key` or `jwks_file`",
                        algorithm.as_str()
                    ),
                );
                return None;
            }
            (true, true) => {
                cx.problem(&jwks_key, "set only one of `public_key` or `jwks_file`");
                return None;
            }
            (true, false) => JwtKey::PublicKey(public_key?),
            (false, true) => JwtKey::JwksFile(jwks_file?),
        }
    };
    if issuer_present && issuer.is_none() {
        return None;
    }
    Some(JwtConfig {
        algorithm,
        key,
        token_sources: token_sources?,
        issuer,
        audience: audience?,
        leeway: leeway?,
    })
}

fn admin(cx: &mut Ctx<'_>, mut s: Section) -> Option<AdminConfig> {
    let claim = s.req(
        cx,
        "claim",
        section_with(|cx, mut c: Section| {
            let name = c.req(cx, "name", Ctx::nonempty);
            let value = c.req(cx, "value", Ctx::nonempty);
            c.finish(cx);
            Some(ClaimMatch {
                name: name?,
                value: value?,
            })
        }),
    );
    let allow_networks = s.or(cx, "allow_networks", Vec::new(), |cx, k, v| {
        let list = cx.array(k, v, |cx, k, v| {
            let c = cx.string(k, v)?;
            check(cx, k, Cidr::parse(c.trim()))
        })?;
        if list.is_empty() {
            cx.problem(k, "must not be empty (omit the key to allow any network)");
            return None;
        }
        Some(list)
    });
    let listen_key = s.key("listen");
    let listen_present = s.has("listen");
    let listen = s.opt(cx, "listen", Ctx::socket_addr);
    s.finish(cx);
    if listen_present && listen.is_none() {
        return None;
    }
    // Every worker binds the admin address itself, so it needs a fixed port.
    if listen.is_some_and(|a| a.port() == 0) {
        cx.problem(
            &listen_key,
            "needs a port (0 would give each worker its own)",
        );
        return None;
    }
    Some(AdminConfig {
        claim: claim?,
        allow_networks: allow_networks?,
        listen,
    })
}

/// `cache.slice_size` when not set (see `object::slices` for the measurement behind it).
pub const DEFAULT_SLICE_SIZE: u64 = 4 << 20;
/// The most slices `cache.slice_readahead` may ask for: a sequential reader then has at most
/// this many origin requests in flight for it.
const MAX_SLICE_READAHEAD: usize = 64;
/// The most objects `cache.warm_concurrency` lets one warm job fetch at once.
const MAX_WARM_CONCURRENCY: usize = 64;

fn cache(cx: &mut Ctx<'_>, mut s: Section) -> Option<CacheConfig> {
    let ttl = s.or(cx, "ttl", secs(3600), Ctx::duration);
    let negative_ttl = s.or(cx, "negative_ttl", Duration::ZERO, Ctx::duration);
    let list_ttl = s.or(cx, "list_ttl", DEFAULT_LIST_TTL, Ctx::duration);
    let max_object_size = s.or(cx, "max_object_size", 16 << 20, positive_size);
    let slice_key = s.key("slice_size");
    let slice_set = s.has("slice_size");
    let slice_size = s.or(cx, "slice_size", DEFAULT_SLICE_SIZE, positive_size);
    let max_sliced_object_size = s.or(cx, "max_sliced_object_size", 100 << 30, Ctx::size);
    let readahead_key = s.key("slice_readahead");
    let slice_readahead = s.or(cx, "slice_readahead", 4, Ctx::count);
    let warm_key = s.key("warm_concurrency");
    let warm_concurrency = s.or(cx, "warm_concurrency", 4, Ctx::count);
    let write_policy = s.or(cx, "write_policy", WritePolicy::WriteThrough, |cx, k, v| {
        match cx.string(k, v)?.as_str() {
            "write-through" => Some(WritePolicy::WriteThrough),
            "write-behind" => Some(WritePolicy::WriteBehind),
            other => {
                cx.problem(
                    k,
                    format!(
                        "`{other}` is not a write policy (expected \"write-through\" or \"write-behind\")"
                    ),
                );
                None
            }
        }
    });
    let sie_present = s.has("stale_if_error");
    let stale_if_error = s.opt(cx, "stale_if_error", Ctx::duration);
    let swr_present = s.has("stale_while_revalidate");
    let stale_while_revalidate = s.opt(cx, "stale_while_revalidate", Ctx::duration);
    let memory = s.or(
        cx,
        "memory",
        MemoryConfig {
            capacity: 256 << 20,
        },
        section_with(|cx, mut m: Section| {
            let capacity = m.or(cx, "capacity", 256 << 20, Ctx::size);
            m.finish(cx);
            Some(MemoryConfig {
                capacity: capacity?,
            })
        }),
    );
    let disk_present = s.has("disk");
    let disk = s.opt(cx, "disk", section_with(disk));
    let redis_present = s.has("redis");
    let redis = s.opt(cx, "redis", section_with(redis));
    s.finish(cx);
    if (sie_present && stale_if_error.is_none())
        || (swr_present && stale_while_revalidate.is_none())
        || (disk_present && disk.is_none())
        || (redis_present && redis.is_none())
    {
        return None;
    }
    let (max_object_size, mut slice_size) = (max_object_size?, slice_size?);
    // Unset, the slice size follows a smaller `max_object_size` down (a slice is cached like
    // an object); set, it must fit.
    if !slice_set {
        slice_size = slice_size.min(max_object_size);
    }
    if slice_size > max_object_size {
        cx.problem(
            &slice_key,
            format!(
                "must not exceed cache.max_object_size ({} > {}): a slice is cached like an object",
                units::format_size(slice_size),
                units::format_size(max_object_size)
            ),
        );
        return None;
    }
    let slice_readahead = slice_readahead?;
    if slice_readahead > MAX_SLICE_READAHEAD {
        cx.problem(
            &readahead_key,
            format!("must be at most {MAX_SLICE_READAHEAD} slices (got {slice_readahead})"),
        );
        return None;
    }
    let warm_concurrency = warm_concurrency?;
    if !(1..=MAX_WARM_CONCURRENCY).contains(&warm_concurrency) {
        cx.problem(
            &warm_key,
            format!("must be 1 to {MAX_WARM_CONCURRENCY} objects (got {warm_concurrency})"),
        );
        return None;
    }
    Some(CacheConfig {
        ttl: ttl?,
        negative_ttl: negative_ttl?,
        list_ttl: list_ttl?,
        max_object_size,
        slice_size,
        max_sliced_object_size: max_sliced_object_size?,
        slice_readahead,
        warm_concurrency,
        write_policy: write_policy?,
        stale_if_error,
        stale_while_revalidate,
        memory: memory?,
        disk,
        redis,
    })
}

fn disk(cx: &mut Ctx<'_>, mut s: Section) -> Option<DiskConfig> {
    let dir = s.req(cx, "dir", Ctx::path);
    let capacity = s.req(cx, "capacity", positive_size);
    let segment_key = s.key("segment_size");
    let segment_size = s.or(cx, "segment_size", 64 << 20, positive_size);
    s.finish(cx);
    let (capacity, segment_size) = (capacity?, segment_size?);
    if segment_size > capacity {
        cx.problem(
            &segment_key,
            format!(
                "must not exceed capacity ({} > {})",
                units::format_size(segment_size),
                units::format_size(capacity)
            ),
        );
        return None;
    }
    Some(DiskConfig {
        dir: dir?,
        capacity,
        segment_size,
    })
}

fn redis(cx: &mut Ctx<'_>, mut s: Section) -> Option<RedisConfig> {
    let url_key = s.key("url");
    let cluster_key = s.key("cluster");
    let has_url = s.has("url");
    let has_cluster = s.has("cluster");
    // Exactly one of `url` (one server) and `cluster` (seed nodes of a Redis Cluster).
    let (url, cluster) = match (has_url, has_cluster) {
        (true, true) => {
            cx.problem(
                &cluster_key,
                "give either `url` (one Redis server) or `cluster` (Redis Cluster seed nodes), \
                 not both",
            );
            let _ = s.opt(cx, "url", |_, _, _| None::<()>);
            let _ = s.opt(cx, "cluster", |_, _, _| None::<()>);
            (None, None)
        }
        (false, true) => {
            let seeds = s.opt(cx, "cluster", redis_cluster);
            (seeds.as_ref().map(|s| s[0].clone()), seeds)
        }
        _ => {
            if !has_url {
                cx.problem(
                    &url_key,
                    "required key is missing: give `url` (one Redis server) or `cluster` \
                     (Redis Cluster seed nodes)",
                );
            }
            let url = s.opt(cx, "url", |cx, k, v| {
                let u = cx.nonempty(k, v)?;
                check(cx, k, parse_redis_url(&u))
            });
            (url, Some(Vec::new()))
        }
    };
    let ca_key = s.key("ca_file");
    let ca_present = s.has("ca_file");
    let ca_file = s.opt(cx, "ca_file", Ctx::existing_file);
    if let (Some(_), Some(t)) = (&ca_file, &url) {
        if !t.tls {
            cx.problem(&ca_key, "only meaningful for a rediss:// url (TLS)");
        }
    }
    let max_object_size = s.or(cx, "max_object_size", 4 << 20, positive_size);
    let timeout = s.or(cx, "timeout", Duration::from_millis(50), Ctx::timeout);
    let replicas_key = s.key("read_from_replicas");
    let read_from_replicas = s.or(cx, "read_from_replicas", false, Ctx::boolean);
    if read_from_replicas == Some(true) && !has_cluster {
        cx.problem(
            &replicas_key,
            "only meaningful with `cluster` (a Redis Cluster's replicas); a single server \
             (`url`) has none to read from",
        );
    }
    s.finish(cx);
    let target = url?;
    let cluster = cluster?;
    if (ca_present && ca_file.is_none()) || (ca_file.is_some() && !target.tls) {
        return None;
    }
    Some(RedisConfig {
        target,
        cluster,
        ca_file,
        max_object_size: max_object_size?,
        timeout: timeout?,
        read_from_replicas: read_from_replicas? && has_cluster,
    })
}

/// `cache.redis.cluster`: a non-empty list of seed node URLs, each under the rules of `url`,
/// all with the same scheme and login (one login for the whole cluster, as Redis Cluster
/// shares ACLs only by configuration) and no database (a cluster has only database 0).
fn redis_cluster(cx: &mut Ctx<'_>, key: &str, v: Value) -> Option<Vec<RedisTarget>> {
    let seeds = cx.array(key, v, |cx, k, v| {
        let u = cx.nonempty(k, v)?;
        let t = check(cx, k, parse_redis_url(&u))?;
        if t.db != 0 {
            cx.problem(
                k,
                format!(
                    "database {} requested, but a Redis Cluster has only database 0 \
                     (drop the /{} path)",
                    t.db, t.db
                ),
            );
            return None;
        }
        Some(t)
    })?;
    let Some(first) = seeds.first() else {
        cx.problem(
            key,
            "must list at least one seed node, e.g. [\"redis://10.0.0.1:6379\"]",
        );
        return None;
    };
    let mut ok = true;
    for (i, t) in seeds.iter().enumerate().skip(1) {
        let k = format!("{key}[{i}]");
        if t.tls != first.tls {
            cx.problem(
                &k,
                format!(
                    "mixes redis:// and rediss:// (seed 0 is {}): every node of a cluster is \
                     reached the same way",
                    if first.tls { "rediss://" } else { "redis://" }
                ),
            );
            ok = false;
        } else if t.auth != first.auth {
            cx.problem(
                &k,
                "has a different login than seed 0: one login is used for every node of the \
                 cluster",
            );
            ok = false;
        }
    }
    ok.then_some(seeds)
}

// ---- value rules (pure, `Err` is the problem message) ----

fn validate_name(name: &str) -> Result<(), String> {
    if name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        Ok(())
    } else {
        Err(format!("`{name}` may contain only A-Z a-z 0-9 _ . -"))
    }
}

/// Characters a prefix may contain: those that appear unencoded in a request path (RFC 3986
/// `pchar` minus `%`, plus `/`), since prefixes are matched against the raw path.
fn prefix_char_ok(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b)
}

pub(crate) fn validate_prefix(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!("`{p}` must start with '/'"));
    }
    if p == "/" {
        return Err("must not be \"/\" (it would shadow the internal routes)".into());
    }
    if p.ends_with('/') {
        return Err(format!("`{p}` must not end with '/'"));
    }
    if p.contains("//") {
        return Err(format!("`{p}` must not contain \"//\""));
    }
    for c in ['%', '?', '#'] {
        if p.contains(c) {
            return Err(format!("`{p}` must not contain '{c}'"));
        }
    }
    if let Some(c) = p
        .chars()
        .find(|&c| !c.is_ascii() || !prefix_char_ok(c as u8))
    {
        return Err(format!(
            "`{p}` contains {c:?}; a prefix is matched against the raw request path, so it may \
             contain only A-Z a-z 0-9 - . _ ~ ! $ & ' ( ) * + , ; = : @ and '/'"
        ));
    }
    let mut segments = p[1..].split('/');
    if segments.clone().any(|s| s == "." || s == "..") {
        return Err(format!("`{p}` must not contain \".\" or \"..\" segments"));
    }
    let first = segments.next().unwrap_or("");
    if RESERVED_SEGMENTS.contains(&first) {
        return Err(format!(
            "`{p}` would shadow the internal route /{first} (first segment must not be one of {})",
            RESERVED_SEGMENTS.join(", ")
        ));
    }
    Ok(())
}

fn validate_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("has no host".into());
    }
    if host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        Ok(())
    } else {
        Err(format!("`{host}` is not a valid host name"))
    }
}

/// `host[:port]` or `[v6][:port]` → (host without brackets, lower-cased; port if given).
fn parse_authority(authority: &str) -> Result<(String, Option<u16>), String> {
    if authority.contains('@') {
        return Err("must not contain credentials (user@)".into());
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (v6, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("`{authority}`: unclosed '['"))?;
        v6.parse::<Ipv6Addr>()
            .map_err(|_| format!("`{v6}` is not an IPv6 address"))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("`{authority}`: unexpected text after ']'"))?,
            ),
        };
        (v6, port)
    } else {
        match authority.split_once(':') {
            Some((h, p)) => {
                if p.contains(':') {
                    return Err(format!(
                        "`{authority}`: an IPv6 address must be in brackets, e.g. [::1]:9000"
                    ));
                }
                validate_host(h)?;
                (h, Some(p))
            }
            None => {
                validate_host(authority)?;
                (authority, None)
            }
        }
    };
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Some(n),
            _ => return Err(format!("`{p}` is not a valid port (1-65535)")),
        },
    };
    Ok((host.to_ascii_lowercase(), port))
}

pub(crate) fn parse_endpoint(url: &str) -> Result<Endpoint, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("`{url}` must start with http:// or https://"))?;
    let scheme = if scheme.eq_ignore_ascii_case("http") {
        Scheme::Http
    } else if scheme.eq_ignore_ascii_case("https") {
        Scheme::Https
    } else {
        return Err(format!("`{url}`: scheme must be http or https"));
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if !(tail.is_empty() || tail == "/") {
        return Err(format!(
            "`{url}` must not have a path, query or fragment (just scheme://host[:port])"
        ));
    }
    let (host, port) = parse_authority(authority).map_err(|e| format!("`{url}`: {e}"))?;
    Ok(Endpoint {
        scheme,
        host,
        port: port.unwrap_or(scheme.default_port()),
    })
}

fn validate_region(r: &str) -> Result<(), String> {
    if r.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        Ok(())
    } else {
        Err(format!("`{r}` may contain only A-Z a-z 0-9 - _ ."))
    }
}

fn validate_bucket_name(b: &str, addressing: Addressing) -> Result<(), String> {
    if b.contains('/') || b.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "`{b}` must not contain '/', whitespace or control characters"
        ));
    }
    if addressing == Addressing::Virtual {
        let dns_ok = (3..=63).contains(&b.len())
            && b.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
            && b.as_bytes()[0].is_ascii_alphanumeric()
            && b.as_bytes()[b.len() - 1].is_ascii_alphanumeric()
            && !b.contains("..")
            && b.parse::<Ipv4Addr>().is_err();
        if !dns_ok {
            return Err(format!(
                "`{b}` is not DNS-compatible, as addressing = \"virtual\" requires (3-63 of \
                 a-z 0-9 . -, starting and ending with a letter or digit, no \"..\", not an IP \
                 address); use addressing = \"path\""
            ));
        }
    }
    Ok(())
}

fn validate_origin(o: &str) -> Result<(), String> {
    if o == "*" {
        return Ok(());
    }
    if o.ends_with('/') {
        return Err(format!(
            "`{o}` must not end with '/' (browsers send Origin as scheme://host[:port])"
        ));
    }
    parse_endpoint(o).map(|_| ()).map_err(|e| {
        format!("{e}; an origin is \"*\" or scheme://host[:port], e.g. \"https://example.com\"")
    })
}

fn parse_token_source(t: &str) -> Result<TokenSource, String> {
    if t == "bearer" {
        return Ok(TokenSource::Bearer);
    }
    if let Some(name) = t.strip_prefix("query:") {
        if name.is_empty()
            || name.contains(['&', '=', '#', '%', '+'])
            || name.contains(char::is_whitespace)
        {
            return Err(format!("`{t}`: invalid query parameter name"));
        }
        return Ok(TokenSource::Query(name.to_owned()));
    }
    if let Some(name) = t.strip_prefix("header:") {
        return http::HeaderName::from_bytes(name.as_bytes())
            .map(TokenSource::Header)
            .map_err(|_| format!("`{t}`: `{name}` is not a valid header name"));
    }
    Err(format!(
        "`{t}` is not a token source (expected \"bearer\", \"query:NAME\" or \"header:NAME\")"
    ))
}

/// The one parser of `cache.redis.url` (rules in the module docs). No message repeats the
/// userinfo: `corvid check` prints them.
pub(crate) fn parse_redis_url(url: &str) -> Result<RedisTarget, String> {
    const FORMS: &str =
        "write redis://:PASSWORD@host for a password, or redis://USER:PASSWORD@host for an ACL user";
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| "must start with redis://, e.g. \"redis://127.0.0.1:6379\"".to_string())?;
    if scheme.eq_ignore_ascii_case("unix") || scheme.eq_ignore_ascii_case("redis+unix") {
        return Err(format!(
            "{scheme}://: Redis over a Unix socket is not supported; use redis://host:port"
        ));
    }
    let tls = if scheme.eq_ignore_ascii_case("rediss") {
        true
    } else if scheme.eq_ignore_ascii_case("redis") {
        false
    } else {
        // Named only when it looks like a scheme (RFC 3986), not like a mangled login.
        let looks_like_one = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
        return Err(if looks_like_one {
            format!("scheme `{scheme}` is not supported; use redis:// (or rediss:// for TLS)")
        } else {
            "must start with redis://, e.g. \"redis://127.0.0.1:6379\"".into()
        });
    };
    if rest.contains(['?', '#']) {
        return Err(
            "must not have a query or fragment ('?' or '#'): corvid takes no options \
                    in the URL (a '?' or '#' in a password is written %3F or %23)"
                .into(),
        );
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if path.contains('@') {
        return Err(
            "a '/' comes before the '@': a '/' in a user name or password is written %2F".into(),
        );
    }
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let decode = |s: &str| -> Result<String, String> {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| {
                "the user name or password is not valid UTF-8 after percent-decoding".to_string()
            })
    };
    let auth = match userinfo {
        None => None,
        Some(u) => {
            let Some((user, pass)) = u.split_once(':') else {
                return Err(format!(
                    "the login before '@' has no ':', which is ambiguous (redis-rs reads it as a \
                     user name, redis-cli as a password): {FORMS}"
                ));
            };
            if pass.is_empty() {
                return Err(format!("the password before '@' is empty: {FORMS}"));
            }
            Some(RedisAuth {
                username: (!user.is_empty()).then(|| decode(user)).transpose()?,
                password: decode(pass)?,
            })
        }
    };
    let (host, port) = parse_authority(hostport)?;
    let db = match path {
        "" | "/" => 0,
        p => match p[1..].parse::<u32>() {
            Ok(n) if p[1..].bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(format!("path `{p}` must be a database number, e.g. /0")),
        },
    };
    Ok(RedisTarget {
        tls,
        host,
        // 6379 with TLS too: what ElastiCache (in-transit encryption) and Valkey use.
        port: port.unwrap_or(6379),
        auth,
        db,
    })
}

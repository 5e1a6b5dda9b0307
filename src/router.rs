//! Request path → route: which internal endpoint or which bucket and object key a request is
//! for. Pure string work, no IO, no allocation beyond the one `String` of the decoded key (and
//! none with [`Router::route_reusing`], which decodes into a caller's recycled buffer).
//!
//! The router owns the rules that decide what object a URL names, so it is also where paths
//! that could name something unintended are refused: dot segments (raw or percent-encoded,
//! since a key `a/%2e%2e/b` could be normalised into a different object by a later hop), NUL,
//! malformed percent-encoding and keys that are not UTF-8 are all `400 Bad Request`.
//!
//! # Rules and decisions
//!
//! * Internal routes are matched first and exactly: `/health`, `/ready`, `/metrics`, and
//!   `/admin` or `/admin/...`. Config guarantees no bucket prefix's first segment is one of
//!   these, so the order cannot hide a bucket. `Route::Admin::rest` is the **raw** remainder
//!   (still percent-encoded), because the admin API splits it into segments before decoding.
//! * Bucket prefixes are compared against the raw path, on whole segments: `/img` matches
//!   `/img/x` but never `/images/x`; the longest matching prefix wins (`/a/b` over `/a` for
//!   `/a/b/c`). A path equal to a prefix, or the prefix plus `/`, names no object: `404`.
//!   Given prefixes `/a` and `/a/b`, `/a/b` is the empty key of `/a/b` (404), not key `b` of `/a`.
//! * The key is everything after `prefix/`, percent-decoded exactly once. `+` stays `+` (a path
//!   is not form data). Consecutive slashes are kept (`a//b` is a legal S3 key), as is a leading
//!   slash (`/assets//x` is key `/x`).
//! * A request-target with a `#` fragment is refused, as are control characters and spaces
//!   (they cannot appear in a well-formed request line). Absolute-form targets
//!   (`http://host/p`) are accepted with any host: which host a request was addressed to is not
//!   the router's business. An empty query (`/p?`) is `Some("")`.
//! * Query parameters of an object request: `versionId`, forwarded upstream and part of the
//!   cache key, and the six S3 `response-*` overrides, which corvid applies to its own answer
//!   (`object::overrides`) and never forwards nor keys, so one cached object serves them all;
//!   everything else is dropped. Names and values are form-decoded as S3 reads a query: `+`
//!   is a space and a literal plus is `%2B` (S3 answers `?response-content-type=a+b` with
//!   `a b`; boto and SigV4 presigning issues record it), so the signed upstream request, which
//!   encodes a space as `%20`, carries what S3 would have read. Malformed percent-encoding anywhere
//!   in the query is `400`, even in a parameter that would be dropped (a malformed request is
//!   malformed). A kept value that is not UTF-8 or contains a control character is `400`,
//!   since `response-*` values become response headers (no header injection). A kept
//!   parameter given twice is `400` (ambiguous). Each list is sorted by name, the order both
//!   SigV4 canonical queries and cache keys want.

use std::collections::HashMap;

use arrayvec::ArrayVec;
use percent_encoding::{percent_decode, AsciiSet, NON_ALPHANUMERIC};

use crate::error::{Error, Kind};

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Health,
    Ready,
    Metrics,
    /// `/admin` (rest `""`) or `/admin/...`; `rest` is the raw path after `/admin`, e.g.
    /// `/cache/purge/b/k`.
    Admin {
        rest: String,
    },
    /// An object: bucket index (as in the config's `buckets`) and the decoded key.
    Object {
        bucket: usize,
        key: String,
    },
    /// The bucket itself (a path equal to its prefix, or the prefix plus `/`; `/` on its
    /// virtual host): listings, HeadBucket, GetBucketLocation (`crate::bucket`).
    Bucket {
        bucket: usize,
    },
}

/// Maps request paths to routes; built once from the bucket prefixes.
#[derive(Debug, Clone)]
pub struct Router {
    /// Prefix → bucket index.
    /// foldhash, not SipHash: the keys are the configured prefixes (clients cannot add any),
    /// and the hit path hashes up to one candidate per `/` of the path.
    by_prefix: HashMap<Box<str>, usize, foldhash::fast::RandomState>,
    /// `has_len[n]`: some prefix is `n` bytes long. Lets `route` skip hashing candidate
    /// prefixes of lengths no bucket has, which is most of them.
    has_len: Vec<bool>,
    /// Virtual-host names (lowercase) → bucket index; empty unless some bucket has `host`.
    /// A few entries at most: a linear scan beats hashing a lowercased copy of `Host`.
    by_host: Vec<(Box<str>, usize)>,
}

/// The set `encode_key` escapes: everything but RFC 3986 unreserved characters and `/`.
pub const KEY_ENCODE_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// Query parameters an object request keeps, sorted: the `response-*` overrides
/// ([`ObjectQuery::overrides`]) and `versionId` ([`ObjectQuery::forwarded`]).
const KEPT_PARAMS: [&str; 7] = [
    "response-cache-control",
    "response-content-disposition",
    "response-content-encoding",
    "response-content-language",
    "response-content-type",
    "response-expires",
    "versionId",
];

fn bad_request(message: &'static str) -> Error {
    Error::client(Kind::BadRequest, message)
}

fn not_found() -> Error {
    Error::client(Kind::NotFound, "no such route")
}

impl Router {
    /// `prefixes[i]` is bucket i's prefix (validated by config: starts with `/`, no trailing
    /// `/`, unique). Should a prefix repeat anyway, the first bucket with it wins.
    pub fn new(prefixes: &[&str]) -> Router {
        let max_len = prefixes.iter().map(|p| p.len()).max().unwrap_or(0);
        let mut has_len = vec![false; max_len + 1];
        let mut by_prefix = HashMap::with_capacity_and_hasher(
            prefixes.len(),
            foldhash::fast::RandomState::default(),
        );
        for (i, p) in prefixes.iter().enumerate() {
            has_len[p.len()] = true;
            by_prefix.entry(Box::from(*p)).or_insert(i);
        }
        Router {
            by_prefix,
            has_len,
            by_host: Vec::new(),
        }
    }

    /// Adds virtual-host names: `hosts[i]` is bucket i's `host` (lowercase, unique: config
    /// validates both).
    pub fn with_hosts(mut self, hosts: &[Option<&str>]) -> Router {
        self.by_host = hosts
            .iter()
            .enumerate()
            .filter_map(|(i, h)| h.map(|h| (Box::from(h), i)))
            .collect();
        self
    }

    /// Whether some bucket is reached by its `Host` (then [`Router::route_host`] needs it).
    pub fn has_hosts(&self) -> bool {
        !self.by_host.is_empty()
    }

    /// The bucket whose virtual-host name `host` (a `Host` header value) is, port aside.
    pub fn bucket_of_host(&self, host: &[u8]) -> Option<usize> {
        if self.by_host.is_empty() {
            return None;
        }
        let name = match memchr::memrchr(b':', host) {
            // `[v6]:port` or `name:port`; a bare IPv6 literal never names a bucket anyway.
            Some(i) if !host[i..].contains(&b']') => &host[..i],
            _ => host,
        };
        self.by_host
            .iter()
            .find(|(h, _)| h.as_bytes().eq_ignore_ascii_case(name))
            .map(|(_, b)| *b)
    }

    /// [`Router::route_reusing`] for a request whose `Host` is `host`: virtual-host style when
    /// it names a bucket (see the module docs), else by path.
    pub fn route_host(
        &self,
        host: Option<&[u8]>,
        path: &str,
        spare: &mut Vec<u8>,
    ) -> Result<Route, Error> {
        let Some(bucket) = host.and_then(|h| self.bucket_of_host(h)) else {
            return self.route_reusing(path, spare);
        };
        let raw_key = path
            .strip_prefix('/')
            .ok_or_else(|| bad_request("path must start with '/'"))?;
        if raw_key.is_empty() {
            return Ok(Route::Bucket { bucket });
        }
        let key = decode_key_into(raw_key, spare)?;
        Ok(Route::Object { bucket, key })
    }

    /// Routes the raw path of a request-target (no query); see the module docs for the rules.
    pub fn route(&self, path: &str) -> Result<Route, Error> {
        self.route_reusing(path, &mut Vec::new())
    }

    /// [`Router::route`], decoding an object key into `spare`'s allocation: `Route::Object`'s
    /// `key` takes it over (leaving `spare` empty); other routes and errors leave it in `spare`.
    /// The request handler lends recycled buffers this way, so that routing to an object
    /// allocates nothing (a cache hit must not allocate, issue 4).
    pub fn route_reusing(&self, path: &str, spare: &mut Vec<u8>) -> Result<Route, Error> {
        match path {
            "/health" => return Ok(Route::Health),
            "/ready" => return Ok(Route::Ready),
            "/metrics" => return Ok(Route::Metrics),
            _ => {}
        }
        if let Some(rest) = path.strip_prefix("/admin") {
            if rest.is_empty() || rest.starts_with('/') {
                return Ok(Route::Admin {
                    rest: rest.to_owned(),
                });
            }
        }
        if !path.starts_with('/') {
            return Err(bad_request("path must start with '/'"));
        }
        let (bucket, end) = self.longest_prefix(path).ok_or_else(not_found)?;
        // `end` is the prefix length: the path ends there or continues with '/'.
        let raw_key = path.get(end + 1..).unwrap_or("");
        if raw_key.is_empty() {
            return Ok(Route::Bucket { bucket });
        }
        let key = decode_key_into(raw_key, spare)?;
        Ok(Route::Object { bucket, key })
    }

    /// The bucket whose prefix is the longest whole-segment prefix of `path`, and its length.
    fn longest_prefix(&self, path: &str) -> Option<(usize, usize)> {
        let bytes = path.as_bytes();
        let max_len = self.has_len.len() - 1;
        let lookup = |n: usize| -> Option<(usize, usize)> {
            if self.has_len[n] {
                self.by_prefix.get(&path[..n]).map(|&b| (b, n))
            } else {
                None
            }
        };
        if bytes.len() <= max_len {
            if let Some(hit) = lookup(bytes.len()) {
                return Some(hit);
            }
        }
        // Candidate ends: each '/' (after the leading one) within reach of the longest prefix,
        // longest first.
        let window = &bytes[..bytes.len().min(max_len + 1)];
        memchr::memrchr_iter(b'/', window)
            .take_while(|&i| i > 0)
            .find_map(lookup)
    }

    /// Number of buckets the router was built with.
    pub fn len(&self) -> usize {
        self.by_prefix.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_prefix.is_empty()
    }
}

/// Splits a request-target into (path, query). Accepts origin-form (`/p?q`) and absolute-form
/// (`http://host/p?q`; no path gives `/`). Anything else, a `#` fragment, or control characters
/// or spaces → 400.
pub fn split_target(target: &str) -> Result<(&str, Option<&str>), Error> {
    if target.bytes().any(|b| b == b'#') {
        return Err(bad_request("request-target must not contain a fragment"));
    }
    if target.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(bad_request(
            "request-target contains a control character or space",
        ));
    }
    let rest = if target.starts_with('/') {
        target
    } else if let Some(after) = strip_scheme(target) {
        let end = after.find(['/', '?']).unwrap_or(after.len());
        if end == 0 {
            return Err(bad_request("absolute-form request-target has no host"));
        }
        match &after[end..] {
            "" => return Ok(("/", None)),
            r if r.starts_with('?') => return Ok(("/", Some(&r[1..]))),
            r => r,
        }
    } else {
        return Err(bad_request(
            "request-target must be origin-form (/path) or absolute-form (http://host/path)",
        ));
    };
    Ok(match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    })
}

fn strip_scheme(target: &str) -> Option<&str> {
    // `get`, not indexing: the target may hold multi-byte characters (found by fuzzing).
    ["http://", "https://"].into_iter().find_map(|scheme| {
        target
            .get(..scheme.len())
            .filter(|head| head.eq_ignore_ascii_case(scheme))
            .map(|_| &target[scheme.len()..])
    })
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Strict percent-decoding into `out`: every `%` must start a `%XX` escape.
pub(crate) fn percent_decode_into(raw: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
    decode_into::<false>(raw, out)
}

/// Appends the form-decoded bytes of one query component to `out`: `+` is a space, then `%XX`
/// escapes — how S3 reads a query (a literal plus is `%2B`; AWS SDK for Go v1, rclone's, sends
/// a space as `+`).
pub(crate) fn query_decode_into(raw: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
    decode_into::<true>(raw, out)
}

fn decode_into<const PLUS_IS_SPACE: bool>(raw: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
    out.reserve(raw.len());
    // A plain byte loop beats memchr-per-escape here: keys with unicode or spaces are dense
    // with escapes, so the runs between them are short.
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b == b'%' {
            let byte = match raw.get(i + 1..i + 3) {
                Some(&[h, l]) => hex_val(h).zip(hex_val(l)).map(|(h, l)| h << 4 | l),
                _ => None,
            };
            out.push(byte.ok_or_else(|| bad_request("malformed percent-encoding"))?);
            i += 3;
        } else {
            out.push(if PLUS_IS_SPACE && b == b'+' { b' ' } else { b });
            i += 1;
        }
    }
    Ok(())
}

/// Checks percent-encoding syntax without decoding.
fn check_percent(raw: &[u8]) -> Result<(), Error> {
    let mut rest = raw;
    while let Some(i) = memchr::memchr(b'%', rest) {
        match rest.get(i + 1..i + 3) {
            Some(&[h, l]) if hex_val(h).is_some() && hex_val(l).is_some() => rest = &rest[i + 3..],
            _ => return Err(bad_request("malformed percent-encoding")),
        }
    }
    Ok(())
}

/// Percent-decodes an object key once and checks it: valid escapes, UTF-8, no NUL, no `.` or
/// `..` segment. The router's decoder, public for fuzzing and tests.
pub fn decode_key(raw: &str) -> Result<String, Error> {
    decode_key_into(raw, &mut Vec::new())
}

/// [`decode_key`] into `buf`'s allocation (cleared first): the key takes it on success; on
/// error `buf` keeps it.
fn decode_key_into(raw: &str, buf: &mut Vec<u8>) -> Result<String, Error> {
    buf.clear();
    percent_decode_into(raw.as_bytes(), buf)?;
    if memchr::memchr(0, buf).is_some() {
        return Err(bad_request("object key must not contain NUL"));
    }
    let key = String::from_utf8(std::mem::take(buf)).map_err(|e| {
        *buf = e.into_bytes();
        bad_request("object key is not valid UTF-8")
    })?;
    if key.split('/').any(|s| s == "." || s == "..") {
        *buf = key.into_bytes();
        return Err(bad_request(
            "object key must not contain \".\" or \"..\" segments",
        ));
    }
    Ok(key)
}

/// Percent-encodes a key for a URL path: everything but unreserved characters and `/`
/// ([`KEY_ENCODE_SET`]). `decode_key(&encode_key(k)) == k` for every valid key.
pub fn encode_key(key: &str) -> String {
    percent_encoding::utf8_percent_encode(key, KEY_ENCODE_SET).to_string()
}

/// Query parameters of one request: canonical name and decoded value, sorted by name. Each
/// name appears at most once, so they fit a fixed array and parsing them allocates nothing.
pub type Params<'a> = ArrayVec<(&'static str, &'a str), { KEPT_PARAMS.len() }>;

/// The forwarded parameters of an object request: `versionId` at most. Sized for it, since the
/// list is kept in the request's future for the whole answer (moved with it: callgrind).
pub type Forwarded<'a> = ArrayVec<(&'static str, &'a str), 1>;

/// The query parameters of an object request that corvid acts on.
#[derive(Debug, Default)]
pub struct ObjectQuery<'a> {
    /// Forwarded upstream and part of the cache key: `versionId`.
    pub forwarded: Forwarded<'a>,
    /// The S3 `response-*` overrides (`response-content-type`, ...): applied by corvid to its
    /// answer, neither forwarded nor part of the cache key.
    pub overrides: Params<'a>,
}

/// From the raw query string, the parameters an object request keeps, their values decoded
/// into `scratch` (cleared first; a worker's recycled buffer on the request path); see the
/// module docs for the decoding rules.
pub fn object_query<'a>(
    query: Option<&str>,
    scratch: &'a mut Vec<u8>,
) -> Result<ObjectQuery<'a>, Error> {
    scratch.clear();
    let mut spans: ArrayVec<(&'static str, std::ops::Range<usize>), { KEPT_PARAMS.len() }> =
        ArrayVec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        // Compared while decoding, so that a dropped parameter (`?v=3` cache busting on a hit)
        // costs no copy.
        check_percent(raw_name.as_bytes())?;
        let Some(&name) = KEPT_PARAMS
            .iter()
            .find(|p| percent_decode(raw_name.as_bytes()).eq(p.bytes()))
        else {
            // Dropped, but still held to well-formed escapes.
            check_percent(raw_value.as_bytes())?;
            continue;
        };
        if spans.iter().any(|(n, _)| *n == name) {
            return Err(bad_request("query parameter given more than once"));
        }
        let start = scratch.len();
        query_decode_into(raw_value.as_bytes(), scratch)?;
        // At most one span per name in KEPT_PARAMS (checked above): never full.
        spans.push((name, start..scratch.len()));
    }
    let decoded: &'a [u8] = scratch;
    let mut out = ObjectQuery::default();
    // Sorted here, so each list below is sorted too.
    spans.sort_unstable_by(|a, b| a.0.cmp(b.0));
    for (name, span) in spans {
        let value = std::str::from_utf8(&decoded[span])
            .map_err(|_| bad_request("query parameter value is not valid UTF-8"))?;
        if value.chars().any(char::is_control) {
            return Err(bad_request(
                "query parameter value contains a control character",
            ));
        }
        match name.starts_with("response-") {
            true => out.overrides.push((name, value)),
            false => out.forwarded.push((name, value)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn router() -> Router {
        Router::new(&["/assets", "/img", "/a", "/a/b", "/v1/media/photos"])
    }

    fn obj(bucket: usize, key: &str) -> Route {
        Route::Object {
            bucket,
            key: key.to_owned(),
        }
    }

    fn kind(r: Result<Route, Error>) -> Kind {
        r.expect_err("expected an error").kind()
    }

    #[test]
    fn internal_routes() {
        let r = router();
        assert_eq!(r.route("/health").unwrap(), Route::Health);
        assert_eq!(r.route("/ready").unwrap(), Route::Ready);
        assert_eq!(r.route("/metrics").unwrap(), Route::Metrics);
        assert_eq!(r.route("/admin").unwrap(), Route::Admin { rest: "".into() });
        assert_eq!(
            r.route("/admin/").unwrap(),
            Route::Admin { rest: "/".into() }
        );
        assert_eq!(
            r.route("/admin/cache/purge/b/k%20x").unwrap(),
            Route::Admin {
                rest: "/cache/purge/b/k%20x".into()
            }
        );
        // Exact matches only.
        for p in [
            "/health/",
            "/healthz",
            "/metrics/x",
            "/administrator",
            "/Health",
        ] {
            assert_eq!(kind(r.route(p)), Kind::NotFound, "{p}");
        }
    }

    #[test]
    fn longest_whole_segment_prefix() {
        let r = router();
        assert_eq!(r.route("/assets/logo.png").unwrap(), obj(0, "logo.png"));
        assert_eq!(r.route("/img/x").unwrap(), obj(1, "x"));
        assert_eq!(kind(r.route("/images/x")), Kind::NotFound);
        assert_eq!(kind(r.route("/imgx")), Kind::NotFound);
        assert_eq!(r.route("/a/x").unwrap(), obj(2, "x"));
        assert_eq!(r.route("/a/b/c").unwrap(), obj(3, "c"));
        assert_eq!(r.route("/a/bc").unwrap(), obj(2, "bc"));
        assert_eq!(r.route("/a/b/c/d/e").unwrap(), obj(3, "c/d/e"));
        assert_eq!(
            r.route("/v1/media/photos/2024/cat.jpg").unwrap(),
            obj(4, "2024/cat.jpg")
        );
        assert_eq!(kind(r.route("/v1/media/x")), Kind::NotFound);
        assert_eq!(kind(r.route("/")), Kind::NotFound);
        assert_eq!(kind(r.route("/nope/x")), Kind::NotFound);
    }

    #[test]
    fn empty_key_is_the_bucket() {
        let r = router();
        for (p, bucket) in [
            ("/assets", 0),
            ("/assets/", 0),
            ("/a/b", 3),
            ("/a/b/", 3),
            ("/a/", 2),
            ("/a", 2),
        ] {
            assert_eq!(r.route(p).unwrap(), Route::Bucket { bucket }, "{p}");
        }
        // Not a bucket: a prefix of a prefix, or a longer segment.
        for p in ["/v1/media", "/v1", "/assetsx", "/"] {
            assert_eq!(kind(r.route(p)), Kind::NotFound, "{p}");
        }
    }

    #[test]
    fn virtual_hosts() {
        let r = router().with_hosts(&[Some("assets.example.com"), None, Some("a.test")]);
        assert!(r.has_hosts() && !router().has_hosts());
        let route =
            |host: &str, path: &str| r.route_host(Some(host.as_bytes()), path, &mut Vec::new());
        assert_eq!(
            route("assets.example.com", "/").unwrap(),
            Route::Bucket { bucket: 0 }
        );
        assert_eq!(
            route("Assets.Example.COM:8080", "/x/y%20z").unwrap(),
            obj(0, "x/y z")
        );
        // The whole path is the key, internal routes and other prefixes included.
        assert_eq!(
            route("assets.example.com", "/health").unwrap(),
            obj(0, "health")
        );
        assert_eq!(route("a.test", "/img/x").unwrap(), obj(2, "img/x"));
        assert_eq!(route("a.test", "//x").unwrap(), obj(2, "/x"));
        assert_eq!(kind(route("a.test", "/a/../b")), Kind::BadRequest);
        // Other hosts (and no host) route by path.
        assert_eq!(route("other.test", "/img/x").unwrap(), obj(1, "x"));
        assert_eq!(route("127.0.0.1:80", "/health").unwrap(), Route::Health);
        assert_eq!(route("[::1]:80", "/img/x").unwrap(), obj(1, "x"));
        assert_eq!(
            route("assets.example.com.evil", "/img/x").unwrap(),
            obj(1, "x")
        );
        assert_eq!(
            r.route_host(None, "/img/x", &mut Vec::new()).unwrap(),
            obj(1, "x")
        );
    }

    #[test]
    fn key_decoding() {
        let r = router();
        assert_eq!(r.route("/assets/a%20b").unwrap(), obj(0, "a b"));
        assert_eq!(r.route("/assets/a+b").unwrap(), obj(0, "a+b"));
        assert_eq!(r.route("/assets/a%2Bb").unwrap(), obj(0, "a+b"));
        assert_eq!(
            r.route("/assets/caf%C3%A9/%E2%9C%93").unwrap(),
            obj(0, "café/✓")
        );
        assert_eq!(r.route("/assets/a%2Fb").unwrap(), obj(0, "a/b"));
        // Decoded once only.
        assert_eq!(r.route("/assets/a%2520b").unwrap(), obj(0, "a%20b"));
        assert_eq!(
            r.route("/assets/!*'()[]$&,;=@:").unwrap(),
            obj(0, "!*'()[]$&,;=@:")
        );
        assert_eq!(r.route("/assets/a//b").unwrap(), obj(0, "a//b"));
        assert_eq!(r.route("/assets//x").unwrap(), obj(0, "/x"));
        assert_eq!(r.route("/assets/dir/").unwrap(), obj(0, "dir/"));
        assert_eq!(
            r.route("/assets/.hidden/..x/x..").unwrap(),
            obj(0, ".hidden/..x/x..")
        );
        let long = "k".repeat(1024);
        assert_eq!(r.route(&format!("/assets/{long}")).unwrap(), obj(0, &long));
        let enc = "%C3%A9".repeat(150);
        assert_eq!(
            r.route(&format!("/assets/{enc}")).unwrap(),
            obj(0, &"é".repeat(150))
        );
    }

    #[test]
    fn bad_keys() {
        let r = router();
        for p in [
            "/assets/%",
            "/assets/%2",
            "/assets/%zz",
            "/assets/a%g0",
            "/assets/%FF",
            "/assets/%C3",
            "/assets/a%00b",
            "/assets/a\0b",
            "/assets/.",
            "/assets/..",
            "/assets/a/../b",
            "/assets/a/./b",
            "/assets/a/..",
            "/assets/%2e",
            "/assets/%2e%2E",
            "/assets/a/%2E%2e/b",
            "/assets/a%2F..%2Fb",
            "/assets/.%2e/x",
        ] {
            assert_eq!(kind(r.route(p)), Kind::BadRequest, "{p:?}");
        }
        assert_eq!(kind(r.route("assets/x")), Kind::BadRequest);
        assert_eq!(kind(r.route("")), Kind::BadRequest);
    }

    #[test]
    fn no_prefixes() {
        let r = Router::new(&[]);
        assert!(r.is_empty());
        assert_eq!(r.route("/health").unwrap(), Route::Health);
        assert_eq!(kind(r.route("/x/y")), Kind::NotFound);
    }

    #[test]
    fn duplicate_prefix_first_wins() {
        let r = Router::new(&["/x", "/x"]);
        assert_eq!(r.route("/x/k").unwrap(), obj(0, "k"));
    }

    #[test]
    fn split_targets() {
        assert_eq!(split_target("/p").unwrap(), ("/p", None));
        assert_eq!(split_target("/p?q=1&r").unwrap(), ("/p", Some("q=1&r")));
        assert_eq!(split_target("/p?").unwrap(), ("/p", Some("")));
        assert_eq!(split_target("/p?a?b").unwrap(), ("/p", Some("a?b")));
        assert_eq!(split_target("http://h/p?q").unwrap(), ("/p", Some("q")));
        assert_eq!(split_target("HTTPS://h:8443/a/b").unwrap(), ("/a/b", None));
        assert_eq!(split_target("http://h").unwrap(), ("/", None));
        assert_eq!(split_target("http://h?x=1").unwrap(), ("/", Some("x=1")));
        assert_eq!(split_target("http://[::1]:80/k").unwrap(), ("/k", None));
        for bad in [
            "*",
            "p",
            "",
            "?q",
            "http://",
            "http:///p",
            "ftp://h/p",
            "/p#f",
            "/p?q#f",
            "http://h/p#",
            "/a b",
            "/a\tb",
            "/a\x7f",
            "h/p",
            // Fuzz regression: a multi-byte character straddling the scheme length.
            "'a/a/a\u{35e}\u{41e}\u{41f}\u{40b}E/admin",
            "\u{e9}\u{e9}\u{e9}\u{e9}",
        ] {
            assert_eq!(
                split_target(bad).unwrap_err().kind(),
                Kind::BadRequest,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn decode_key_direct() {
        assert_eq!(decode_key("a%41").unwrap(), "aA");
        assert_eq!(decode_key("").unwrap(), "");
        assert_eq!(decode_key("%").unwrap_err().kind(), Kind::BadRequest);
    }

    /// `object_query` with owned results (overrides, then forwarded), for comparisons.
    fn fq(query: Option<&str>) -> Result<Vec<(String, String)>, Error> {
        let mut scratch = Vec::new();
        let q = object_query(query, &mut scratch)?;
        Ok(q.overrides
            .iter()
            .chain(q.forwarded.iter())
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect())
    }

    #[test]
    fn forwarded_params() {
        assert!(fq(None).unwrap().is_empty());
        assert!(fq(Some("")).unwrap().is_empty());
        let q = fq(Some(
            "versionId=v%2B1&x-id=GetObject&response-content-type=text%2Fplain%3B%20charset%3Dutf-8\
             &response-content-disposition=attachment%3B%20filename%3D%22a+b.txt%22&&foo",
        ))
        .unwrap();
        assert_eq!(
            q,
            vec![
                (
                    "response-content-disposition".into(),
                    "attachment; filename=\"a b.txt\"".into()
                ),
                (
                    "response-content-type".into(),
                    "text/plain; charset=utf-8".into()
                ),
                ("versionId".into(), "v+1".into()),
            ]
        );
        let all = fq(Some(
            "response-expires=0&response-cache-control=no-cache&response-content-language=en\
             &response-content-encoding=gzip&versionId",
        ))
        .unwrap();
        assert_eq!(all.len(), 5);
        assert_eq!(all[4], ("versionId".into(), "".into()));
        // `+` is a space, `%2B` a plus, as S3 reads a query.
        assert_eq!(
            fq(Some(
                "response-content-type=application%2Fld+json&versionId=a%2Bb+c"
            ))
            .unwrap(),
            vec![
                ("response-content-type".into(), "application/ld json".into()),
                ("versionId".into(), "a+b c".into()),
            ]
        );
        // Encoded names are decoded before matching; names are case-sensitive.
        assert_eq!(
            fq(Some("version%49d=x&VERSIONID=y")).unwrap(),
            vec![("versionId".into(), "x".into())]
        );
    }

    /// `versionId` is forwarded (and keyed); the `response-*` overrides are corvid's to apply.
    #[test]
    fn overrides_are_kept_apart_from_forwarded_params() {
        let mut scratch = Vec::new();
        let q = object_query(
            Some("response-expires=0&versionId=3&x=1&response-content-type=a%2Fb"),
            &mut scratch,
        )
        .unwrap();
        assert_eq!(q.forwarded.as_slice(), &[("versionId", "3")]);
        assert_eq!(
            q.overrides.as_slice(),
            &[("response-content-type", "a/b"), ("response-expires", "0")]
        );
    }

    #[test]
    fn forwarded_param_errors() {
        for bad in [
            "versionId=%",
            "versionId=%zz",
            "other=%4",
            "%=x",
            "versionId=%FF",
            "response-content-type=a%0D%0AX-Evil:%201",
            "response-content-type=a%00",
            "versionId=1&versionId=2",
        ] {
            assert_eq!(
                fq(Some(bad)).unwrap_err().kind(),
                Kind::BadRequest,
                "{bad:?}"
            );
        }
        // Non-UTF-8 in a dropped parameter is fine as long as it is well-formed.
        assert!(fq(Some("x=%FF")).unwrap().is_empty());
    }

    /// Keys without NUL and without "." / ".." segments.
    fn valid_key() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[a-zA-Z0-9/ +!*'()\\[\\]$&,;=@:%.~_-]{1,64}",
            proptest::collection::vec("[a-z.]{0,3}|\u{e9}|\u{1F600}|%|\\+", 1..20)
                .prop_map(|parts| parts.join("/")),
        ]
        .prop_filter("valid key", |k| {
            !k.is_empty() && !k.contains('\0') && !k.split('/').any(|s| s == "." || s == "..")
        })
    }

    proptest! {
        #[test]
        fn encoded_key_routes_to_itself(key in valid_key()) {
            let r = Router::new(&["/b", "/other"]);
            let path = format!("/b/{}", encode_key(&key));
            prop_assert_eq!(r.route(&path).unwrap(), obj(0, &key));
            prop_assert_eq!(decode_key(&encode_key(&key)).unwrap(), key);
        }

        #[test]
        fn decode_never_panics(s in "[%0-9a-fA-F/.a-z\\x00]{0,32}") {
            let _ = decode_key(&s);
            let _ = object_query(Some(&s), &mut Vec::new());
            let _ = split_target(&s);
        }
    }
}

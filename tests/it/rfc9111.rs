//! RFC 9111 (HTTP caching) cases an independent caching test suite found corvid breaking, one
//! test per case, each asserting what the RFC requires. They fail until the request path is
//! fixed: they are the specification of that fix.
//!
//! Origins: the signature-verifying s3s origin with per-object header [`Overrides`] (how an S3
//! origin's metadata looks on the wire, and how it changes between requests), and moto as an
//! independently written S3 server where its own answers show the case. No test waits out a
//! TTL: entries are stale at once (`max-age=0`, `Age`, a past `Expires`, `ttl = "0s"`).
//!
//! Each test runs all its checks and fails at the end listing every requirement it found
//! broken ([`Findings`]), so one run shows the whole of a defect.

use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::common::http::{self, RawResponse};
use crate::common::redis_server::RedisServer;
use crate::common::*;

/// The origin bucket, exposed by corvid under [`PREFIX`].
const BUCKET: &str = "rfc9111";
const PREFIX: &str = "/rfc";
const BODY: &[u8] = b"the stored representation";

/// The corvid of these tests: [`BUCKET`] at `endpoint`, the `[cache]` table with `cache`
/// lines (`ttl = "1h"`, `stale_if_error = "5m"`, ...), then `tiers` verbatim (`[cache.memory]`,
/// `[cache.disk]`, `[cache.redis]` tables; empty = the default memory tier only).
fn config(endpoint: &str, cache: &str, tiers: &str) -> String {
    format!(
        "{}{}\n[cache]\n{cache}\n{tiers}",
        server_toml(free_port()),
        bucket_toml_for(BUCKET, PREFIX, endpoint, BUCKET, ""),
    )
}

/// `[cache.disk]` in `dir`, with the memory tier off so every hit is a disk hit.
fn disk_only(dir: &Path) -> String {
    format!(
        "[cache.memory]\ncapacity = 0\n\n[cache.disk]\ndir = {}\ncapacity = \"8MiB\"\nsegment_size = \"1MiB\"\n",
        toml_str(&dir.to_string_lossy())
    )
}

/// `[cache.redis]` at `redis`, after `memory` (a `[cache.memory]` table, or empty).
fn with_redis(redis: &RedisServer, memory: &str) -> String {
    format!(
        "{memory}\n[cache.redis]\nurl = {}\ntimeout = \"200ms\"\n",
        toml_str(&redis.url())
    )
}

/// An s3s origin whose [`BUCKET`] holds [`BODY`] under each of `keys`.
fn origin_with(keys: &[&str]) -> Origin {
    let origin = Origin::start();
    origin.create_bucket(BUCKET);
    for key in keys {
        origin.put(BUCKET, key, BODY);
    }
    origin
}

/// A moto server whose [`BUCKET`] exists.
fn moto() -> Moto {
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    moto
}

/// `GET /rfc/{key}` through corvid.
fn get(c: &Corvid, key: &str) -> RawResponse {
    http::get(c.addr(), &format!("{PREFIX}/{key}"), &[])
}

/// The answer's `X-Cache` ("-" when absent).
fn x_cache(r: &RawResponse) -> &str {
    r.header("x-cache").unwrap_or("-")
}

/// The answer's `Age` in seconds (None when absent or not a number).
fn age(r: &RawResponse) -> Option<u64> {
    r.header("age").and_then(|a| a.trim().parse().ok())
}

/// What a finding shows of an answer.
fn summary(r: &RawResponse) -> String {
    format!(
        "[{} X-Cache={} layer={} Age={:?} Cache-Control={:?} Date={:?}]",
        r.status,
        x_cache(r),
        r.header("x-cache-layer").unwrap_or("-"),
        r.header("age"),
        r.header_all("cache-control"),
        r.header("date"),
    )
}

/// An IMF-fixdate `secs` seconds from now (negative: in the past).
fn http_date(secs: i64) -> String {
    let d = Duration::from_secs(secs.unsigned_abs());
    let t = if secs < 0 {
        SystemTime::now() - d
    } else {
        SystemTime::now() + d
    };
    httpdate::fmt_http_date(t)
}

/// GETs of `key` the s3s origin has seen.
fn origin_gets(origin: &Origin, key: &str) -> Vec<RecordedRequest> {
    origin
        .requests_for(BUCKET, key)
        .into_iter()
        .filter(|r| r.method == "GET")
        .collect()
}

/// The sum of the samples of metric lines starting with `prefix` in corvid's `/metrics`.
fn metric(c: &Corvid, prefix: &str) -> f64 {
    http::get(c.addr(), "/metrics", &[])
        .text()
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Requests corvid sent to the origin of [`BUCKET`] (for moto, which records nothing).
fn upstream_requests(c: &Corvid) -> f64 {
    metric(
        c,
        &format!("corvid_upstream_requests_total{{bucket=\"{BUCKET}\""),
    )
}

/// The requirements one test found broken. Every check of a test runs; [`Findings::finish`]
/// fails the test listing all that were violated.
#[must_use = "call finish() to fail the test on broken requirements"]
struct Findings(Vec<String>);

impl Findings {
    fn new() -> Findings {
        Findings(Vec::new())
    }

    /// Records `requirement` as broken unless `ok`.
    fn check(&mut self, ok: bool, requirement: impl Into<String>) {
        if !ok {
            self.0.push(requirement.into());
        }
    }

    /// [`Findings::check`] with the answer the requirement is about.
    fn check_answer(&mut self, ok: bool, requirement: &str, r: &RawResponse) {
        self.check(ok, format!("{requirement}; got {}", summary(r)));
    }

    fn finish(self) {
        assert!(
            self.0.is_empty(),
            "{} RFC 9111 requirement(s) broken:\n  - {}",
            self.0.len(),
            self.0.join("\n  - ")
        );
    }
}

/// The harness's own check that moto is a working second origin: corvid fills from it
/// (signed, path-style) and hits, and moto's stored metadata reaches the client.
#[test]
fn moto_smoke_corvid_serves_an_object_from_moto() {
    let moto = moto();
    let expires = http_date(86_400);
    moto.put_with(
        BUCKET,
        "smoke.txt",
        BODY,
        Some("text/x-smoke"),
        &[("cache-control", "max-age=600"), ("expires", &expires)],
    );
    let c = Corvid::start(&config(&moto.endpoint(), "", ""));
    let r = get(&c, "smoke.txt");
    assert_eq!((r.status, x_cache(&r)), (200, "MISS"), "{}", summary(&r));
    assert_eq!(r.body, BODY);
    assert_eq!(r.header("content-type"), Some("text/x-smoke"));
    assert_eq!(r.header("cache-control"), Some("max-age=600"));
    assert_eq!(r.header("expires"), Some(expires.as_str()));
    let r = get(&c, "smoke.txt");
    assert_eq!((r.status, x_cache(&r)), (200, "HIT"), "{}", summary(&r));
    assert_eq!(r.body, BODY);
}

/// Case 1, RFC 9111 §4.2.1 and §5.3: `Expires` gives the freshness lifetime when there is no
/// `max-age`, and it overrides the configured TTL (a heuristic, §4.2.2, only applies without
/// explicit freshness). An object that expired a month ago (moto) is stale at once even
/// under `ttl = "1h"`: the second request goes to the origin.
#[test]
fn case1_a_past_expires_is_stale_even_under_a_long_ttl() {
    let moto = moto();
    let expires = http_date(-30 * 86_400);
    moto.put_with(BUCKET, "old", BODY, None, &[("expires", &expires)]);
    let c = Corvid::start(&config(&moto.endpoint(), "ttl = \"1h\"", ""));
    let mut f = Findings::new();
    let r = get(&c, "old");
    assert_eq!((r.status, r.body.as_slice()), (200, BODY));
    let before = upstream_requests(&c);
    let r = get(&c, "old");
    f.check_answer(
        x_cache(&r) != "HIT",
        "§4.2.1/§5.3: a response whose Expires passed a month ago must not be served fresh",
        &r,
    );
    f.check_answer(
        x_cache(&r) == "REVALIDATED",
        "§4.3: the stale entry is revalidated (moto answers the If-None-Match with 304)",
        &r,
    );
    f.check(
        upstream_requests(&c) > before,
        "§4.2.1: the origin is asked again for a response whose Expires has passed",
    );
    f.finish();
}

/// Case 1, RFC 9111 §4.2.1 and §5.3: `Expires` 30 days ahead (moto) is explicit freshness, so
/// the entry is fresh even when the configured TTL is `0s` (revalidate responses WITHOUT
/// explicit freshness on every use): the second request is a HIT.
#[test]
fn case1_a_future_expires_is_fresh_under_ttl_zero() {
    let moto = moto();
    let expires = http_date(30 * 86_400);
    moto.put_with(BUCKET, "later", BODY, None, &[("expires", &expires)]);
    let c = Corvid::start(&config(&moto.endpoint(), "ttl = \"0s\"", ""));
    let mut f = Findings::new();
    let r = get(&c, "later");
    assert_eq!((r.status, r.body.as_slice()), (200, BODY));
    let before = upstream_requests(&c);
    let r = get(&c, "later");
    f.check_answer(
        x_cache(&r) == "HIT",
        "§4.2.1: Expires 30 days ahead makes the entry fresh whatever the configured TTL",
        &r,
    );
    f.check(
        upstream_requests(&c) == before,
        "§4.2.1: a fresh entry is served without asking the origin",
    );
    f.finish();
}

/// Case 1, RFC 9111 §5.3: an invalid `Expires` date, in particular `Expires: 0`, means
/// "already expired", whatever the configured TTL.
#[test]
fn case1_an_invalid_expires_means_already_expired() {
    let origin = origin_with(&["zero"]);
    origin.set_headers(BUCKET, "zero", Overrides::new().set("expires", "0"));
    let c = Corvid::start(&config(&origin.endpoint(), "ttl = \"1h\"", ""));
    let mut f = Findings::new();
    let r = get(&c, "zero");
    assert_eq!((r.status, r.body.as_slice()), (200, BODY));
    let r = get(&c, "zero");
    f.check_answer(
        x_cache(&r) != "HIT",
        "§5.3: `Expires: 0` is an invalid date and so already expired",
        &r,
    );
    f.check_answer(
        x_cache(&r) == "REVALIDATED",
        "§4.3: the expired entry is revalidated with the origin",
        &r,
    );
    f.check(
        origin_gets(&origin, "zero").len() == 2,
        "the origin is asked again",
    );
    f.finish();
}

/// Case 2, RFC 9111 §4.2.3 and §5.1: the origin's `Age` counts against freshness
/// (`max-age=3600` with `Age: 7200` is stale on arrival), the first answer forwards an `Age`
/// of at least 7200, and a revalidation (304) resets the age to the new answer's.
#[test]
fn case2_the_origins_age_counts_and_a_revalidation_resets_it() {
    let origin = origin_with(&["aged"]);
    let fresh = Overrides::new().set("cache-control", "max-age=3600");
    origin.set_headers(BUCKET, "aged", fresh.clone().set("age", "7200"));
    let c = Corvid::start(&config(&origin.endpoint(), "", ""));
    let mut f = Findings::new();
    let r = get(&c, "aged");
    assert_eq!((r.status, r.body.as_slice()), (200, BODY));
    f.check_answer(
        age(&r).is_some_and(|a| a >= 7200),
        "§5.1: the first answer carries the origin's Age (>= 7200)",
        &r,
    );
    // The origin now answers with a fresh representation (no Age).
    origin.set_headers(BUCKET, "aged", fresh);
    let r = get(&c, "aged");
    f.check_answer(
        x_cache(&r) != "HIT",
        "§4.2.3: current_age 7200 > max-age 3600: the entry is stale, not a fresh hit",
        &r,
    );
    f.check_answer(
        x_cache(&r) == "REVALIDATED",
        "§4.3: the stale entry is revalidated (the origin answers 304)",
        &r,
    );
    f.check_answer(
        age(&r).is_some_and(|a| a < 60),
        "§4.3.4/§4.2.3: after the 304 the age starts again from the origin's answer (< 60)",
        &r,
    );
    let r = get(&c, "aged");
    f.check_answer(
        x_cache(&r) == "HIT" && age(&r).is_some_and(|a| a < 60),
        "after the revalidation the entry is a fresh HIT with a small Age",
        &r,
    );
    f.finish();
}

/// Case 3's first half on `c`: `key` filled while the origin says `max-age=0` (stale at once).
fn fill_under_max_age_0(origin: &Origin, c: &Corvid, key: &str) {
    origin.set_headers(
        BUCKET,
        key,
        Overrides::new().set("cache-control", "max-age=0"),
    );
    let r = get(c, key);
    assert_eq!((r.status, r.body.as_slice()), (200, BODY));
    assert_eq!(r.header("cache-control"), Some("max-age=0"));
}

/// Case 3's second half: the origin's metadata changes to `max-age=3600`; the next request on
/// `c` revalidates, and the 304 carrying the new `Cache-Control` must update the stored one.
fn revalidate_to_max_age_3600(f: &mut Findings, origin: &Origin, c: &Corvid, key: &str) {
    origin.set_headers(
        BUCKET,
        key,
        Overrides::new().set("cache-control", "max-age=3600"),
    );
    let r = get(c, key);
    assert_eq!((r.status, r.body.as_slice()), (200, BODY));
    f.check_answer(
        x_cache(&r) == "REVALIDATED",
        "§4.3: the stale (max-age=0) entry is revalidated",
        &r,
    );
    f.check_answer(
        r.header_all("cache-control") == ["max-age=3600"],
        "§4.3.4 MUST: the 304's Cache-Control replaces the stored one in the revalidated answer",
        &r,
    );
}

/// Checks that `r` is a HIT from `layer` carrying the updated `Cache-Control`.
fn check_updated_hit(f: &mut Findings, r: &RawResponse, layer: &str, requirement: &str) {
    assert_eq!((r.status, r.body.as_slice()), (200, BODY));
    f.check_answer(
        x_cache(r) == "HIT" && r.header("x-cache-layer") == Some(layer),
        &format!("{requirement}: a {layer} HIT"),
        r,
    );
    f.check_answer(
        r.header_all("cache-control") == ["max-age=3600"],
        &format!("§4.3.4 MUST: {requirement} carries the Cache-Control the 304 gave"),
        r,
    );
}

/// Case 3, RFC 9111 §4.3.4 (MUST), memory tier: a 304 updates the stored header fields: the
/// revalidated answer and the HIT after it carry the 304's `Cache-Control: max-age=3600`.
#[test]
fn case3_memory_a_304_updates_the_stored_header_fields() {
    let origin = origin_with(&["meta"]);
    let c = Corvid::start(&config(&origin.endpoint(), "", ""));
    let mut f = Findings::new();
    fill_under_max_age_0(&origin, &c, "meta");
    revalidate_to_max_age_3600(&mut f, &origin, &c, "meta");
    let r = get(&c, "meta");
    check_updated_hit(&mut f, &r, "memory", "the request after the revalidation");
    f.finish();
}

/// Case 3, RFC 9111 §4.3.4 (MUST), disk tier: the header fields a 304 updated are those the
/// disk tier serves, also after corvid restarts on the same directory.
#[test]
fn case3_disk_a_304_updates_the_stored_header_fields() {
    let origin = origin_with(&["meta"]);
    let dir = tempfile::tempdir().unwrap();
    let mut c = Corvid::start(&config(&origin.endpoint(), "", &disk_only(dir.path())));
    let mut f = Findings::new();
    fill_under_max_age_0(&origin, &c, "meta");
    assert!(
        wait_until(Duration::from_secs(5), || metric(
            &c,
            "corvid_cache_entries{layer=\"disk\""
        ) >= 1.0),
        "the fill reached the disk tier"
    );
    revalidate_to_max_age_3600(&mut f, &origin, &c, "meta");
    let r = get(&c, "meta");
    check_updated_hit(&mut f, &r, "disk", "the request after the revalidation");
    assert_eq!(
        c.terminate(Duration::from_secs(10)).and_then(|s| s.code()),
        Some(0)
    );
    let gets = origin_gets(&origin, "meta").len();
    let c = Corvid::start(&config(&origin.endpoint(), "", &disk_only(dir.path())));
    let r = get(&c, "meta");
    check_updated_hit(
        &mut f,
        &r,
        "disk",
        "after a restart on the same disk dir, the entry",
    );
    f.check(
        origin_gets(&origin, "meta").len() == gets,
        "the restarted corvid answers from disk without asking the origin",
    );
    f.finish();
}

/// Case 3, RFC 9111 §4.3.4 (MUST), Redis tier: after one instance revalidated, a second
/// instance sharing the Redis reads the updated header fields from the Redis copy.
#[test]
fn case3_redis_a_304_updates_the_stored_header_fields() {
    let redis = RedisServer::start(&[]);
    let origin = origin_with(&["meta"]);
    let a = Corvid::start(&config(&origin.endpoint(), "", &with_redis(&redis, "")));
    // No memory tier on b: every hit of b is a read of the Redis copy.
    let b_tiers = with_redis(&redis, "[cache.memory]\ncapacity = 0\n");
    let b = Corvid::start(&config(&origin.endpoint(), "", &b_tiers));
    let mut f = Findings::new();
    fill_under_max_age_0(&origin, &a, "meta");
    assert!(
        wait_until(Duration::from_secs(5), || redis.key_count() == Some(1)),
        "the fill reached Redis"
    );
    revalidate_to_max_age_3600(&mut f, &origin, &a, "meta");
    let updated = |v: &Vec<u8>| v.windows(12).any(|w| w == b"max-age=3600");
    f.check(
        wait_until(Duration::from_secs(5), || {
            redis.values().is_some_and(|vs| vs.iter().any(updated))
        }),
        "§4.3.4 MUST: the revalidation updates the header fields of the Redis copy too",
    );
    let gets = origin_gets(&origin, "meta").len();
    let r = get(&b, "meta");
    check_updated_hit(
        &mut f,
        &r,
        "redis",
        "the second instance's read of the Redis copy",
    );
    f.check(
        origin_gets(&origin, "meta").len() == gets,
        "the second instance answers from Redis without asking the origin",
    );
    f.finish();
}

/// Case 3 against moto, RFC 9111 §4.3.4 (MUST): the same bytes PUT again in a versioned
/// bucket keep their ETag but get a new version; moto's 304 to the revalidation carries the
/// new `x-amz-version-id` (and no Cache-Control: moto's 304s carry only ETag and version),
/// which must replace the stored one.
#[test]
fn case3_moto_a_304_updates_the_stored_version_id() {
    let moto = moto();
    moto.enable_versioning(BUCKET);
    let put = |cc: &str| {
        let r = moto.put_with(BUCKET, "versioned", BODY, None, &[("cache-control", cc)]);
        r.header("x-amz-version-id")
            .expect("a versioned PUT names its version")
            .to_owned()
    };
    let v1 = put("max-age=0");
    let c = Corvid::start(&config(&moto.endpoint(), "", ""));
    let mut f = Findings::new();
    let r = get(&c, "versioned");
    assert_eq!((r.status, r.body.as_slice()), (200, BODY));
    assert_eq!(r.header("x-amz-version-id"), Some(v1.as_str()));
    let v2 = put("max-age=0");
    assert_ne!(v1, v2);
    let r = get(&c, "versioned");
    assert_eq!((r.status, r.body.as_slice()), (200, BODY));
    f.check_answer(
        x_cache(&r) == "REVALIDATED",
        "§4.3: the stale (max-age=0) entry is revalidated; moto answers 304 (same ETag)",
        &r,
    );
    f.check(
        r.header("x-amz-version-id") == Some(v2.as_str()),
        format!(
            "§4.3.4 MUST: the 304's x-amz-version-id {v2} replaces the stored {v1}; got {:?}",
            r.header("x-amz-version-id")
        ),
    );
    f.finish();
}

/// Case 4, RFC 9110 §5.3 with RFC 9111 §5.2: a field sent as several lines is one list, so
/// `Cache-Control: max-age=3600` followed by `Cache-Control: no-store` means
/// `max-age=3600, no-store`, and the response is not stored (§3).
#[test]
fn case4_no_store_on_a_second_field_line_is_not_ignored() {
    let origin = origin_with(&["two-lines"]);
    origin.set_headers(
        BUCKET,
        "two-lines",
        Overrides::new().set_lines("cache-control", &["max-age=3600", "no-store"]),
    );
    let c = Corvid::start(&config(&origin.endpoint(), "", ""));
    let mut f = Findings::new();
    let r = get(&c, "two-lines");
    assert_eq!((r.status, r.body.as_slice()), (200, BODY));
    let r = get(&c, "two-lines");
    assert_eq!((r.status, r.body.as_slice()), (200, BODY));
    f.check_answer(
        x_cache(&r) != "HIT",
        "§3/§5.2.2.5: the second Cache-Control line's no-store forbids storing",
        &r,
    );
    f.check(
        origin_gets(&origin, "two-lines").len() == 2,
        "the second request goes to the origin",
    );
    f.finish();
}

/// Case 5, RFC 9111 §4.2.1 and §1.2.2: a `max-age` that is not a non-negative integer
/// (`-3600`, `'3600'`, `a100`) is invalid, and a response with invalid freshness information
/// is stale at once — it does not fall back to the configured TTL, even `ttl = "1h"`.
#[test]
fn case5_an_invalid_max_age_is_stale_at_once() {
    let cases = [
        ("negative", "-3600"),
        ("quoted", "'3600'"),
        ("alpha", "a100"),
    ];
    let origin = origin_with(&cases.map(|(k, _)| k));
    for (key, value) in cases {
        let cc = format!("max-age={value}");
        origin.set_headers(BUCKET, key, Overrides::new().set("cache-control", &cc));
    }
    let c = Corvid::start(&config(&origin.endpoint(), "ttl = \"1h\"", ""));
    let mut f = Findings::new();
    for (key, value) in cases {
        let r = get(&c, key);
        assert_eq!((r.status, r.body.as_slice()), (200, BODY), "{key}");
        let r = get(&c, key);
        f.check_answer(
            x_cache(&r) == "REVALIDATED",
            &format!("§4.2.1: max-age={value} is invalid: stale at once, revalidated"),
            &r,
        );
        f.check(
            origin_gets(&origin, key).len() == 2,
            format!("max-age={value}: the second request goes to the origin"),
        );
    }
    f.finish();
}

/// Case 6a, RFC 9111 §4.2.4 and §5.2.2.2: `must-revalidate` forbids serving the stale entry
/// even where `stale_if_error` is configured: an origin answering 500 gives the client a 5xx,
/// an unreachable origin a 504 (§5.2.2.2 MUST), never `X-Cache: STALE`.
#[test]
fn case6a_must_revalidate_forbids_serving_stale_on_error() {
    let mut origin = origin_with(&["strict"]);
    let cc = "must-revalidate, max-age=0";
    origin.set_headers(BUCKET, "strict", Overrides::new().set("cache-control", cc));
    let c = Corvid::start(&config(&origin.endpoint(), "stale_if_error = \"5m\"", ""));
    let mut f = Findings::new();
    let r = get(&c, "strict");
    assert_eq!((r.status, r.body.as_slice()), (200, BODY));
    // More than any retry corvid might make.
    origin.fail_next(10, 500);
    let r = get(&c, "strict");
    f.check_answer(
        r.status >= 500 && x_cache(&r) != "STALE",
        "§4.2.4: must-revalidate, origin 500: a 5xx, not the stale entry",
        &r,
    );
    origin.stop();
    let r = get(&c, "strict");
    f.check_answer(
        r.status == 504 && x_cache(&r) != "STALE",
        "§5.2.2.2 MUST: must-revalidate, origin unreachable: 504, not the stale entry",
        &r,
    );
    f.finish();
}

/// Case 6b, RFC 9111 §5.2.2.4 and §4.2.4: `no-cache` means the entry must be validated
/// before every use, so a configured `stale_while_revalidate` does not apply: the second
/// request is answered after a conditional GET (REVALIDATED), not STALE at once.
#[test]
fn case6b_validate_before_use_forbids_stale_while_revalidate() {
    let origin = origin_with(&["nocache"]);
    let cc = Overrides::new().set("cache-control", "no-cache");
    origin.set_headers(BUCKET, "nocache", cc);
    let c = Corvid::start(&config(
        &origin.endpoint(),
        "stale_while_revalidate = \"1m\"",
        "",
    ));
    let mut f = Findings::new();
    let r = get(&c, "nocache");
    assert_eq!((r.status, r.body.as_slice()), (200, BODY));
    let validated = origin.conditional_count(304);
    let r = get(&c, "nocache");
    assert_eq!((r.status, r.body.as_slice()), (200, BODY));
    // Read at once: only a validation that happened before the answer counts.
    let validated_before_answer = origin.conditional_count(304) > validated;
    f.check_answer(
        x_cache(&r) == "REVALIDATED",
        "§5.2.2.4: a no-cache entry is validated before use, never served STALE",
        &r,
    );
    f.check(
        validated_before_answer,
        "§5.2.2.4: the origin answered a conditional GET (304) before the client got its answer",
    );
    f.finish();
}

/// Case 6c, RFC 5861 §3 (RFC 9111 §4.2.4 allows it): the response's own
/// `stale-while-revalidate=60` lets a cache with no stale configuration serve it STALE at once
/// while one background request revalidates it.
#[test]
fn case6c_the_responses_own_stale_while_revalidate_is_honoured() {
    let origin = origin_with(&["swr"]);
    let cc = "max-age=0, stale-while-revalidate=60";
    origin.set_headers(BUCKET, "swr", Overrides::new().set("cache-control", cc));
    let c = Corvid::start(&config(&origin.endpoint(), "", ""));
    let mut f = Findings::new();
    let r = get(&c, "swr");
    assert_eq!((r.status, r.body.as_slice()), (200, BODY));
    let r = get(&c, "swr");
    assert_eq!((r.status, r.body.as_slice()), (200, BODY));
    f.check_answer(
        x_cache(&r) == "STALE",
        "RFC 5861 §3: within stale-while-revalidate=60 the stale entry is served at once",
        &r,
    );
    f.check(
        wait_until(Duration::from_secs(5), || {
            origin_gets(&origin, "swr").len() == 2
        }),
        "RFC 5861 §3: one background revalidation reaches the origin",
    );
    let revalidation = origin_gets(&origin, "swr").pop().unwrap();
    f.check(
        revalidation.header("if-none-match").is_some(),
        "the background request is a conditional GET",
    );
    f.finish();
}

/// Case 6d, RFC 5861 §4 (RFC 9111 §4.2.4 allows it): the response's own `stale-if-error=60`
/// lets a cache with no stale configuration serve the stale entry when the origin answers 500.
#[test]
fn case6d_the_responses_own_stale_if_error_is_honoured() {
    let origin = origin_with(&["sie"]);
    let cc = "max-age=0, stale-if-error=60";
    origin.set_headers(BUCKET, "sie", Overrides::new().set("cache-control", cc));
    let c = Corvid::start(&config(&origin.endpoint(), "", ""));
    let mut f = Findings::new();
    let r = get(&c, "sie");
    assert_eq!((r.status, r.body.as_slice()), (200, BODY));
    origin.fail_next(10, 500);
    let r = get(&c, "sie");
    f.check_answer(
        r.status == 200 && x_cache(&r) == "STALE" && r.body == BODY,
        "RFC 5861 §4: within stale-if-error=60 an origin 500 gets the stale entry (STALE)",
        &r,
    );
    f.finish();
}

/// Case 7, RFC 9110 §6.6.1 and RFC 9111 §4.2.3: a response from cache carries the stored
/// response's `Date` (when the origin generated it), not one corvid writes, and its `Age`
/// counts from that Date: an origin Date 30 s in the past means `Age` >= 30 on the HIT.
#[test]
fn case7_a_hit_keeps_the_origins_date_and_ages_from_it() {
    let origin = origin_with(&["dated"]);
    let date = http_date(-30);
    origin.set_headers(BUCKET, "dated", Overrides::new().set("date", &date));
    let c = Corvid::start(&config(&origin.endpoint(), "", ""));
    let mut f = Findings::new();
    let r = get(&c, "dated");
    assert_eq!((r.status, r.body.as_slice()), (200, BODY));
    let r = get(&c, "dated");
    assert_eq!(x_cache(&r), "HIT", "{}", summary(&r));
    f.check_answer(
        r.header_all("date") == [date.as_str()],
        &format!("RFC 9110 §6.6.1: the HIT carries the origin's Date {date:?}"),
        &r,
    );
    f.check_answer(
        age(&r).is_some_and(|a| a >= 30),
        "§4.2.3: apparent_age = response_time - Date >= 30, so Age >= 30",
        &r,
    );
    f.finish();
}

/// Case 8, RFC 9111 §4.3.1: an entry with a `Last-Modified` but no `ETag` is revalidated
/// with `If-Modified-Since` set to that Last-Modified, and the origin's 304 makes it
/// REVALIDATED (not refetched whole).
#[test]
fn case8_last_modified_alone_revalidates_with_if_modified_since() {
    let origin = origin_with(&["untagged"]);
    let o = Overrides::new()
        .remove("etag")
        .set("cache-control", "max-age=0");
    origin.set_headers(BUCKET, "untagged", o);
    let c = Corvid::start(&config(&origin.endpoint(), "", ""));
    let mut f = Findings::new();
    let r = get(&c, "untagged");
    assert_eq!((r.status, r.body.as_slice()), (200, BODY));
    assert!(r.header("etag").is_none(), "{:?}", r.headers);
    let last_modified = r.header("last-modified").expect("Last-Modified").to_owned();
    let unchanged = origin.conditional_count(304);
    let r = get(&c, "untagged");
    assert_eq!((r.status, r.body.as_slice()), (200, BODY));
    let revalidation = origin_gets(&origin, "untagged").pop().unwrap();
    f.check(
        revalidation.header("if-modified-since") == Some(last_modified.as_str()),
        format!(
            "§4.3.1: the revalidation carries If-Modified-Since: {last_modified}; it carried {:?}",
            revalidation.header("if-modified-since")
        ),
    );
    f.check_answer(
        x_cache(&r) == "REVALIDATED" && origin.conditional_count(304) == unchanged + 1,
        "§4.3.3: the origin's 304 revalidates the entry",
        &r,
    );
    f.finish();
}

/// Issue 15, RFC 9111 §4.3.4 / RFC 9110 §13.1.3 against moto: an object replaced at the origin
/// within the same second as the stored one has the same `Last-Modified`. moto evaluates
/// `If-Modified-Since` beside `If-None-Match` (a satisfied date wins over a failed tag) and its
/// 304 carries the *new* ETag. corvid must revalidate with `If-None-Match` alone, never freshen
/// the stored body with a 304 that selects another version, and so answer the new bytes under
/// the new ETag; a later `If-Range` with the old ETag gets the whole new object.
///
/// corvid runs in-process on a manual clock (the entry goes stale by advancing it, no TTL is
/// waited out). `background` = the stale-while-revalidate path instead of the foreground one.
fn same_second_replacement(background: bool) {
    const OLD: &[u8] = b"version A: the first bytes of the object";
    const NEW: &[u8] = b"version B: other bytes, another length too";
    let moto = moto();
    let swr = if background {
        "stale_while_revalidate = \"1h\""
    } else {
        ""
    };
    let c = InProcess::start(&config(
        &moto.endpoint(),
        &format!("ttl = \"10s\"\n{swr}"),
        "",
    ));
    let get_h = |key: &str, headers: &[(&str, &str)]| {
        http::get(c.addr(), &format!("{PREFIX}/{key}"), headers)
    };
    // Both versions must share one Last-Modified second; a PUT that crossed a second boundary
    // makes the case moot, so try again with another key (bounded).
    let mut found = None;
    for attempt in 0..8 {
        let key = format!("same-second-{attempt}");
        let old_etag = moto
            .put_with(BUCKET, &key, OLD, None, &[])
            .header("etag")
            .expect("moto PUT answers an ETag")
            .to_owned();
        let r = get_h(&key, &[]);
        assert_eq!((r.status, r.body.as_slice()), (200, OLD), "{}", summary(&r));
        assert_eq!(r.header("etag"), Some(old_etag.as_str()));
        let old_lm = r.header("last-modified").expect("Last-Modified").to_owned();
        let new_etag = moto
            .put_with(BUCKET, &key, NEW, None, &[])
            .header("etag")
            .expect("ETag")
            .to_owned();
        assert_ne!(old_etag, new_etag);
        let head = moto.client().head_object(BUCKET, &key, &[]);
        if head.header("last-modified") == Some(old_lm.as_str()) {
            found = Some((key, old_etag, new_etag));
            break;
        }
    }
    let (key, old_etag, new_etag) = found.expect("two PUTs within one second in 8 tries");
    c.advance(Duration::from_secs(11));

    // Every answer pairs its bytes with their own ETag; the new version arrives (at once in
    // the foreground, after the background revalidation otherwise).
    let consistent = |r: &RawResponse| {
        (r.body == OLD && r.header("etag") == Some(old_etag.as_str()))
            || (r.body == NEW && r.header("etag") == Some(new_etag.as_str()))
    };
    let mut first = true;
    let got_new = wait_until(Duration::from_secs(20), || {
        let r = get_h(&key, &[]);
        assert_eq!(r.status, 200, "{}", summary(&r));
        assert!(
            consistent(&r),
            "an answer mixes versions: {} bytes {:?} under ETag {:?} (A = {old_etag}, B = \
             {new_etag}) {}",
            r.body.len(),
            String::from_utf8_lossy(&r.body),
            r.header("etag"),
            summary(&r)
        );
        assert!(
            background || !first || r.body == NEW,
            "the foreground revalidation answers the new version: {}",
            summary(&r)
        );
        first = false;
        r.body == NEW
    });
    assert!(got_new, "the new version was never served");

    // A resumed download validated with the old ETag gets the whole new object.
    let r = get_h(&key, &[("range", "bytes=0-7"), ("if-range", &old_etag)]);
    assert_eq!(r.status, 200, "If-Range with the old ETag: {}", summary(&r));
    assert_eq!(r.body, NEW);
    assert_eq!(r.header("etag"), Some(new_etag.as_str()));
    // And one validated with the new ETag gets its range.
    let r = get_h(&key, &[("range", "bytes=0-7"), ("if-range", &new_etag)]);
    assert_eq!(
        (r.status, r.body.as_slice()),
        (206, &NEW[..8]),
        "{}",
        summary(&r)
    );
}

#[test]
fn issue15_moto_same_second_replacement_foreground() {
    same_second_replacement(false);
}

#[test]
fn issue15_moto_same_second_replacement_background() {
    same_second_replacement(true);
}

/// Issue 15 with the s3s origin, in the memory and the disk tier: an entry stored without an
/// ETag is revalidated by date (`If-Modified-Since` alone); the object has meanwhile been
/// given an ETag, and the origin's 304 (the date still matches) carries it. That 304 does not
/// select the stored response (RFC 9111 §4.3.4: its strong validator identifies another one):
/// corvid asks again without conditions, answers and stores what that 200 says, and counts the
/// mismatch.
fn a_304_with_another_etag(tiers: &str) {
    let origin = origin_with(&["swapped"]);
    let c = Corvid::start(&config(&origin.endpoint(), "", tiers));
    origin.set_headers(
        BUCKET,
        "swapped",
        Overrides::new()
            .set("cache-control", "max-age=0")
            .remove("etag"),
    );
    let r = get(&c, "swapped");
    assert_eq!(
        (r.status, r.body.as_slice(), r.header("etag")),
        (200, BODY, None)
    );
    let last_modified = r.header("last-modified").expect("Last-Modified").to_owned();
    let before = origin_gets(&origin, "swapped").len();
    origin.set_headers(
        BUCKET,
        "swapped",
        Overrides::new()
            .set("cache-control", "max-age=3600")
            .set("etag", "\"another-version\""),
    );
    let r = get(&c, "swapped");
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, BODY),
        "{}",
        summary(&r)
    );
    assert_eq!(
        r.header("etag"),
        Some("\"another-version\""),
        "the answer carries the validator of the bytes it was fetched with: {}",
        summary(&r)
    );
    assert_ne!(x_cache(&r), "REVALIDATED", "{}", summary(&r));
    let gets = origin_gets(&origin, "swapped");
    assert_eq!(
        gets.len(),
        before + 2,
        "a conditional GET, then one without"
    );
    assert_eq!(
        gets[before].header("if-modified-since"),
        Some(last_modified.as_str())
    );
    assert_eq!(gets[before + 1].header("if-modified-since"), None);
    assert_eq!(
        metric(
            &c,
            "corvid_revalidation_mismatches_total{bucket=\"rfc9111\""
        ),
        1.0
    );
    // What was stored is the refetched answer: fresh now, a hit with the new ETag.
    let r = get(&c, "swapped");
    assert_eq!(x_cache(&r), "HIT", "{}", summary(&r));
    assert_eq!(r.header("etag"), Some("\"another-version\""));
    assert_eq!(origin_gets(&origin, "swapped").len(), before + 2);
}

#[test]
fn issue15_memory_a_304_with_another_etag_is_fetched_again() {
    a_304_with_another_etag("");
}

#[test]
fn issue15_disk_a_304_with_another_etag_is_fetched_again() {
    let dir = tempfile::tempdir().unwrap();
    a_304_with_another_etag(&disk_only(dir.path()));
}

/// `secs` from now in the obsolete asctime format (`Sun Nov  6 08:49:37 1994`), built from the
/// IMF-fixdate `Sun, 06 Nov 1994 08:49:37 GMT`.
fn asctime_date(secs: i64) -> String {
    let imf = http_date(secs);
    let day = imf[5..7].trim_start_matches('0');
    format!(
        "{} {} {day:>2} {} {}",
        &imf[..3],
        &imf[8..11],
        &imf[17..25],
        &imf[12..16]
    )
}

/// RFC 9110 §5.6.7: a recipient accepts all three HTTP-date formats. An `Expires` in
/// asctime format a day ahead is explicit freshness under `ttl = "0s"` (a HIT), and so is the
/// http-tests cache suite's `Thu Aug  8 02:01:18 2050` (`freshness-expires-ansi-c`: Aug 8 2050
/// is a Monday, the day name is not what the date is read from); one a month past is stale.
/// A client's `If-Modified-Since` in that format is read by the same parser (a 304).
#[test]
fn rfc9110_an_asctime_expires_and_if_modified_since_are_understood() {
    const SUITE: &str = "Thu Aug  8 02:01:18 2050";
    let origin = origin_with(&["asc-later", "asc-suite", "asc-old"]);
    let later = asctime_date(86_400);
    assert_eq!(later.len(), 24, "{later}");
    let old = asctime_date(-30 * 86_400);
    for (key, expires) in [
        ("asc-later", later.as_str()),
        ("asc-suite", SUITE),
        ("asc-old", &old),
    ] {
        origin.set_headers(BUCKET, key, Overrides::new().set("expires", expires));
    }
    let c = Corvid::start(&config(&origin.endpoint(), "ttl = \"0s\"", ""));
    let mut f = Findings::new();
    for key in ["asc-later", "asc-suite", "asc-old"] {
        let r = get(&c, key);
        assert_eq!((r.status, r.body.as_slice()), (200, BODY));
    }
    for (key, expires) in [("asc-later", later.as_str()), ("asc-suite", SUITE)] {
        let r = get(&c, key);
        f.check_answer(
            x_cache(&r) == "HIT",
            &format!("§4.2.1, RFC 9110 §5.6.7: `Expires: {expires}` (asctime, ahead) is fresh"),
            &r,
        );
    }
    let r = get(&c, "asc-old");
    f.check_answer(
        x_cache(&r) != "HIT",
        &format!("§4.2.1: `Expires: {old}` (asctime) a month ago is stale"),
        &r,
    );
    let lm = r.header("last-modified").expect("Last-Modified").to_owned();
    let r = http::get(
        c.addr(),
        &format!("{PREFIX}/asc-later"),
        &[("if-modified-since", SUITE)],
    );
    f.check_answer(
        r.status == 304,
        &format!("RFC 9110 §13.1.3: If-Modified-Since {SUITE:?} (asctime) after {lm} is a 304"),
        &r,
    );
    f.finish();
}

/// RFC 9111 §4.1: a stored response whose `Vary` has a `*` member never matches a later
/// request. Fresh for an hour otherwise, such a response is not reused: each GET goes to the
/// origin whole (no stored entry to revalidate), and the answers are the origin's.
#[test]
fn s4_1_a_response_with_vary_star_is_never_reused() {
    let origin = origin_with(&["star", "star-list"]);
    let fresh = Overrides::new().set("cache-control", "max-age=3600");
    origin.set_headers(BUCKET, "star", fresh.clone().set("vary", "*"));
    origin.set_headers(BUCKET, "star-list", fresh.set("vary", "Accept-Encoding, *"));
    let c = Corvid::start(&config(&origin.endpoint(), "ttl = \"1h\"", ""));
    let mut f = Findings::new();
    for key in ["star", "star-list"] {
        for i in 0..3 {
            let r = get(&c, key);
            assert_eq!((r.status, r.body.as_slice()), (200, BODY), "{key} {i}");
            f.check_answer(
                !matches!(x_cache(&r), "HIT" | "REVALIDATED" | "STALE"),
                &format!("§4.1: {key} (Vary with `*`) answer {i} does not come from the cache"),
                &r,
            );
        }
        let gets = origin_gets(&origin, key);
        f.check(
            gets.len() == 3,
            format!(
                "§4.1: each GET of {key} reaches the origin; it saw {}",
                gets.len()
            ),
        );
        f.check(
            gets.iter().all(|g| g.header("if-none-match").is_none()),
            format!("§4.1: nothing of {key} was stored to revalidate"),
        );
    }
    f.finish();
}

/// The Fetch standard's note on CORS and HTTP caches: an answer whose headers depend on the
/// request's `Origin` says `Vary: Origin` on every response, so that a browser or CDN cache
/// never reuses a non-CORS answer for a CORS fetch. With `cors` on the bucket that is every
/// answer — no Origin, an allowed one, one not allowed; MISS, HIT, 206, 304, HEAD, errors,
/// the origin's answers passed through, preflights — and with no `cors` none says it.
#[test]
fn cors_every_answer_of_a_cors_bucket_varies_on_origin() {
    let origin = origin_with(&["obj", "other", "head-only"]);
    let cors = "cors = { allow_origins = [\"https://app.example\"], max_age = \"1h\" }";
    let toml = format!(
        "{}{}{}",
        server_toml(free_port()),
        bucket_toml_for(BUCKET, PREFIX, &origin.endpoint(), BUCKET, cors),
        bucket_toml_for("plain", "/plain", &origin.endpoint(), BUCKET, ""),
    );
    let c = Corvid::start(&toml);
    let addr = c.addr();
    let send = |method: &str, path: &str, headers: &[(&str, &str)]| {
        let host = addr.to_string();
        http::send_raw(
            addr,
            &http::request_bytes(method, path, &host, headers, &[]),
        )
    };
    let varies = |r: &RawResponse| {
        r.header_all("vary")
            .iter()
            .flat_map(|v| v.split(','))
            .any(|m| m.trim().eq_ignore_ascii_case("origin"))
    };
    const APP: (&str, &str) = ("origin", "https://app.example");
    const EVIL: (&str, &str) = ("origin", "https://evil.example");
    let mut f = Findings::new();
    let first = send("GET", "/rfc/obj", &[]);
    assert_eq!((first.status, x_cache(&first)), (200, "MISS"));
    let etag = first.header("etag").expect("ETag").to_owned();
    let cases: Vec<(&str, RawResponse, u16)> = vec![
        ("GET, MISS (fill), no Origin", first, 200),
        ("GET, HIT, no Origin", send("GET", "/rfc/obj", &[]), 200),
        (
            "GET, HIT, allowed Origin",
            send("GET", "/rfc/obj", &[APP]),
            200,
        ),
        (
            "GET, HIT, Origin not allowed",
            send("GET", "/rfc/obj", &[EVIL]),
            200,
        ),
        (
            "206 from cache",
            send("GET", "/rfc/obj", &[("range", "bytes=0-3")]),
            206,
        ),
        (
            "304 from cache",
            send("GET", "/rfc/obj", &[("if-none-match", &etag)]),
            304,
        ),
        ("HEAD from cache", send("HEAD", "/rfc/obj", &[EVIL]), 200),
        (
            "206 passed through (Range miss)",
            send("GET", "/rfc/other", &[("range", "bytes=0-3")]),
            206,
        ),
        (
            "HEAD passed through (miss)",
            send("HEAD", "/rfc/head-only", &[]),
            200,
        ),
        ("404 error", send("GET", "/rfc/missing", &[]), 404),
        ("404 error, HEAD", send("HEAD", "/rfc/missing", &[APP]), 404),
        (
            "412 error",
            send("GET", "/rfc/obj", &[("if-match", "\"nope\"")]),
            412,
        ),
        (
            "416 error",
            send("GET", "/rfc/obj", &[("range", "bytes=9999-")]),
            416,
        ),
        ("405 error", send("DELETE", "/rfc/obj", &[APP]), 405),
        (
            "preflight, allowed",
            send(
                "OPTIONS",
                "/rfc/obj",
                &[APP, ("access-control-request-method", "GET")],
            ),
            204,
        ),
        (
            "preflight, Origin not allowed",
            send(
                "OPTIONS",
                "/rfc/obj",
                &[EVIL, ("access-control-request-method", "GET")],
            ),
            403,
        ),
        (
            "preflight without Origin",
            send("OPTIONS", "/rfc/obj", &[]),
            400,
        ),
    ];
    for (name, r, status) in &cases {
        assert_eq!(r.status, *status, "{name}: {}", summary(r));
        f.check_answer(varies(r), &format!("{name}: Vary: Origin"), r);
    }
    let allowed = send("GET", "/rfc/obj", &[APP]);
    f.check_answer(
        allowed.header("access-control-allow-origin") == Some("https://app.example"),
        "an allowed Origin is allowed",
        &allowed,
    );
    let error = send("GET", "/rfc/missing", &[APP]);
    f.check_answer(
        error.header("access-control-allow-origin") == Some("https://app.example"),
        "an error answer to an allowed Origin is readable by its script",
        &error,
    );
    let denied = send("GET", "/rfc/obj", &[EVIL]);
    f.check_answer(
        denied.header("access-control-allow-origin").is_none(),
        "an Origin not allowed gets no CORS grant",
        &denied,
    );
    for (name, r) in [
        ("no cors: GET", send("GET", "/plain/obj", &[APP])),
        ("no cors: 404", send("GET", "/plain/missing", &[APP])),
    ] {
        f.check_answer(
            !varies(&r) && r.header("access-control-allow-origin").is_none(),
            &format!("{name}: a bucket without cors does not vary on Origin"),
            &r,
        );
    }
    f.finish();
}

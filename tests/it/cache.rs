//! The cache in the request path, against the signature-verifying origin: fills and hits,
//! HEAD/ranges/conditionals answered from cache, coalescing, freshness and revalidation,
//! stale-if-error, and what is not cached.
//!
//! Tests that need an entry to go stale run corvid in-process ([`InProcess`]) and advance its
//! clock past a realistic TTL; none sleeps past a TTL.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use crate::common::http::{self, Conn};
use crate::common::*;

/// The bucket TTL of the tests that let entries go stale: long enough that no request takes
/// a noticeable part of it.
const TTL: &str = "ttl = \"1h\"";
/// How far those tests move corvid's clock to make an entry stale under [`TTL`].
const PAST_TTL: Duration = Duration::from_secs(2 * 3600);

/// Moves `corvid`'s clock [`PAST_TTL`] and GETs `path`: the request that finds its entry stale.
fn get_after_expiry(corvid: &InProcess, path: &str) -> http::RawResponse {
    corvid.advance(PAST_TTL);
    http::get(corvid.addr(), path, &[])
}

#[test]
fn miss_fills_then_memory_hits_with_head_ranges_and_conditionals() {
    let (origin, corvid) = origin_and_corvid("hit", "", "");
    let body = pattern_bytes(100_000, 3);
    origin.put_with(
        "hit",
        "a/b.bin",
        &body,
        Some("application/x-b"),
        &[("x-amz-meta-k", "v")],
    );
    let addr = corvid.addr();
    let r = http::get(addr, "/hit/a/b.bin", &[]);
    assert_eq!((r.status, r.header("x-cache")), (200, Some("MISS")));
    assert!(r.body == body);
    let r = http::get(addr, "/hit/a/b.bin", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-cache"), Some("HIT"));
    assert_eq!(r.header("x-cache-layer"), Some("memory"));
    assert!(r.header("age").is_some());
    assert_eq!(r.header("content-type"), Some("application/x-b"));
    assert_eq!(r.header("x-amz-meta-k"), Some("v"));
    assert!(r.body == body);
    let etag = r.header("etag").unwrap().to_string();
    let lm = r.header("last-modified").unwrap().to_string();

    let h = http::head(addr, "/hit/a/b.bin", &[]);
    assert_eq!(
        (h.status, h.header("content-length"), h.header("x-cache")),
        (200, Some("100000"), Some("HIT"))
    );
    let r = http::get(addr, "/hit/a/b.bin", &[("range", "bytes=10-19")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 10-19/100000"));
    assert_eq!(r.body, &body[10..20]);
    let r = http::get(addr, "/hit/a/b.bin", &[("range", "bytes=-5")]);
    assert_eq!((r.status, r.body.as_slice()), (206, &body[99_995..]));
    let r = http::get(addr, "/hit/a/b.bin", &[("range", "bytes=200000-")]);
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */100000"));
    let r = http::get(addr, "/hit/a/b.bin", &[("range", "bytes=0-1,5-6")]);
    assert_eq!(r.status, 200, "multi-range gets the whole object");
    let r = http::get(
        addr,
        "/hit/a/b.bin",
        &[("range", "bytes=0-9"), ("if-range", "\"stale\"")],
    );
    assert_eq!(r.status, 200, "If-Range mismatch gets the whole object");
    let r = http::get(addr, "/hit/a/b.bin", &[("if-none-match", &etag)]);
    assert_eq!((r.status, r.body.len()), (304, 0));
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    let r = http::get(addr, "/hit/a/b.bin", &[("if-modified-since", &lm)]);
    assert_eq!(r.status, 304);
    let r = http::get(addr, "/hit/a/b.bin", &[("if-match", "\"other\"")]);
    assert_eq!(r.status, 412);
    assert_eq!(
        origin.count("GET"),
        1,
        "everything after the fill came from memory"
    );
    assert_eq!(origin.count("HEAD"), 0);
}

#[test]
fn concurrent_misses_coalesce_into_one_origin_get() {
    let (origin, corvid) = origin_and_corvid("coal", "", "");
    let body = Arc::new(pattern_bytes(4 << 20, 9));
    origin.put("coal", "big.bin", &body);
    // A slow origin head keeps the fill open while all requests arrive.
    origin.set_delay(Duration::from_millis(500));
    let before = origin.count("GET");
    let n = 200;
    let barrier = Arc::new(Barrier::new(n));
    let addr = corvid.addr();
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let (barrier, body) = (Arc::clone(&barrier), Arc::clone(&body));
            std::thread::spawn(move || {
                let mut c = Conn::connect(addr);
                c.set_timeout(Duration::from_secs(30));
                barrier.wait();
                let r = c.request("GET", "/coal/big.bin", &[]);
                assert_eq!(r.status, 200);
                assert!(r.body == *body, "follower body differs");
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(
        origin.count("GET") - before,
        1,
        "exactly one origin GET for 200 concurrent misses"
    );
    let m = http::get(addr, "/metrics", &[]).text();
    let coalesced: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("corvid_coalesced_requests_total{bucket=\"coal\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    let hits: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("corvid_cache_hits_total{layer=\"memory\",bucket=\"coal\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert_eq!(
        coalesced + hits,
        n as u64 - 1,
        "every other request followed the fill or hit the entry"
    );
    assert!(coalesced > 0);
}

#[test]
fn stale_entries_revalidate_with_one_conditional_request() {
    let (origin, corvid) = origin_and_inprocess("reval", TTL, "");
    origin.put("reval", "k", b"version one");
    let addr = corvid.addr();
    assert_eq!(
        http::get(addr, "/reval/k", &[]).header("x-cache"),
        Some("MISS")
    );
    let r = get_after_expiry(&corvid, "/reval/k");
    assert_eq!(r.header("x-cache"), Some("REVALIDATED"), "{:?}", r.headers);
    assert_eq!(r.body, b"version one");
    assert_eq!(
        origin.conditional_count(304),
        1,
        "unchanged: one conditional GET answered 304"
    );
    let last = origin.last_request().unwrap();
    assert!(last.header("if-none-match").is_some());
    assert_eq!(
        http::get(addr, "/reval/k", &[]).header("x-cache"),
        Some("HIT"),
        "refreshed"
    );

    // Changed at the origin: served after expiry.
    origin.put("reval", "k", b"version two!");
    let r = get_after_expiry(&corvid, "/reval/k");
    assert_eq!(r.body, b"version two!");
    assert_eq!(http::get(addr, "/reval/k", &[]).body, b"version two!");

    // Deleted at the origin: 404 after expiry, and the entry is gone.
    origin.delete("reval", "k");
    let r = get_after_expiry(&corvid, "/reval/k");
    assert_eq!(r.status, 404);
}

/// `n` clients on their own connections GET `path` at once; returns the responses.
fn concurrent_gets(addr: std::net::SocketAddr, path: &str, n: usize) -> Vec<http::RawResponse> {
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let (barrier, path) = (Arc::clone(&barrier), path.to_string());
            std::thread::spawn(move || {
                let mut c = Conn::connect(addr);
                c.set_timeout(Duration::from_secs(30));
                barrier.wait();
                c.request("GET", &path, &[])
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[test]
fn concurrent_revalidations_of_a_stale_key_coalesce() {
    let (origin, corvid) = origin_and_inprocess("revco", TTL, "");
    // Larger than what a follower copies behind its head: exercises the vectored path.
    let v1 = pattern_bytes(256 << 10, 1);
    origin.put("revco", "k", &v1);
    let addr = corvid.addr();
    assert_eq!(
        http::get(addr, "/revco/k", &[]).header("x-cache"),
        Some("MISS")
    );
    // Any request would revalidate, so the entry is made stale by the clock, not polled.
    corvid.advance(PAST_TTL);
    // A slow origin keeps the conditional GET open while every request arrives.
    origin.set_delay(Duration::from_millis(400));
    let (gets, unchanged) = (origin.count("GET"), origin.conditional_count(304));
    for r in concurrent_gets(addr, "/revco/k", 40) {
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-cache"), Some("REVALIDATED"), "{:?}", r.headers);
        assert!(r.body == v1, "revalidated body differs");
    }
    assert_eq!(
        origin.count("GET") - gets,
        1,
        "one conditional GET for 40 requests"
    );
    assert_eq!(origin.conditional_count(304) - unchanged, 1);

    // Changed at the origin: one GET, and every request gets the new body as it streams.
    let v2 = pattern_bytes(300 << 10, 2);
    origin.put("revco", "k", &v2);
    corvid.advance(PAST_TTL);
    let gets = origin.count("GET");
    for r in concurrent_gets(addr, "/revco/k", 40) {
        assert_eq!(r.status, 200);
        assert!(r.body == v2, "replaced body differs");
    }
    assert_eq!(origin.count("GET") - gets, 1, "one GET for 40 requests");
    assert_eq!(
        http::get(addr, "/revco/k", &[]).header("x-cache"),
        Some("HIT")
    );
}

#[test]
fn stale_if_error_serves_the_old_copy_when_the_origin_is_down() {
    // The window outlasts PAST_TTL's staleness.
    let (mut origin, corvid) =
        origin_and_inprocess("sie", TTL, "\n[cache]\nstale_if_error = \"1d\"\n");
    origin.put("sie", "k", b"still here");
    let addr = corvid.addr();
    assert_eq!(http::get(addr, "/sie/k", &[]).status, 200);
    origin.stop();
    let r = get_after_expiry(&corvid, "/sie/k");
    assert_eq!((r.status, r.header("x-cache")), (200, Some("STALE")));
    assert_eq!(r.body, b"still here");
    // Without the entry, the origin being down is a 502.
    assert_eq!(http::get(addr, "/sie/other", &[]).status, 502);
}

#[test]
fn stale_while_revalidate_answers_at_once_and_refreshes_in_the_background() {
    // The window outlasts PAST_TTL's staleness.
    let (origin, corvid) =
        origin_and_inprocess("swr", TTL, "\n[cache]\nstale_while_revalidate = \"1d\"\n");
    origin.put("swr", "k", b"old");
    let addr = corvid.addr();
    assert_eq!(http::get(addr, "/swr/k", &[]).status, 200);
    origin.put("swr", "k", b"new");
    corvid.advance(PAST_TTL);
    // A slow origin keeps the background refresh running while every request arrives.
    origin.set_delay(Duration::from_millis(300));
    let gets = origin.count("GET");
    for r in concurrent_gets(addr, "/swr/k", 20) {
        assert_eq!(
            (r.header("x-cache"), r.body.as_slice()),
            (Some("STALE"), &b"old"[..])
        );
    }
    assert!(
        wait_until(Duration::from_secs(5), || http::get(addr, "/swr/k", &[])
            .body
            == b"new"),
        "the background revalidation stored the new version"
    );
    assert_eq!(
        origin.count("GET") - gets,
        1,
        "one background request for 20 stale hits"
    );
}

/// The injected clock end to end: `Cache-Control: max-age=60` is fresh for 60 s of corvid's
/// clock, `Age` counts those seconds, and past them one conditional GET revalidates.
#[test]
fn max_age_is_fresh_for_that_long_on_the_clock_and_age_follows_it() {
    let (origin, corvid) = origin_and_inprocess("clk", "", "");
    origin.put_with(
        "clk",
        "k",
        b"sixty",
        None,
        &[("cache-control", "max-age=60")],
    );
    let addr = corvid.addr();
    let age = |r: &http::RawResponse| r.header("age").and_then(|a| a.parse::<u64>().ok());
    let r = http::get(addr, "/clk/k", &[]);
    assert_eq!((r.status, r.header("x-cache")), (200, Some("MISS")));
    let gets = origin.count("GET");
    let r = http::get(addr, "/clk/k", &[]);
    assert_eq!((r.header("x-cache"), age(&r)), (Some("HIT"), Some(0)));

    corvid.advance(Duration::from_secs(59));
    let r = http::get(addr, "/clk/k", &[]);
    assert_eq!(
        (r.header("x-cache"), age(&r)),
        (Some("HIT"), Some(59)),
        "fresh for 59 s of the clock, and as old: {:?}",
        r.headers
    );
    assert_eq!(origin.count("GET"), gets, "both hits came from memory");

    corvid.advance(Duration::from_secs(2));
    let r = http::get(addr, "/clk/k", &[]);
    assert_eq!(r.header("x-cache"), Some("REVALIDATED"), "{:?}", r.headers);
    assert_eq!(r.body, b"sixty");
    assert_eq!(origin.count("GET") - gets, 1, "one origin GET past max-age");
    assert_eq!(
        origin.conditional_count(304),
        1,
        "a conditional one, answered 304"
    );
    assert!(origin
        .last_request()
        .unwrap()
        .header("if-none-match")
        .is_some());
    let r = http::get(addr, "/clk/k", &[]);
    assert_eq!(
        (r.header("x-cache"), age(&r)),
        (Some("HIT"), Some(0)),
        "fresh again, as old as the 304"
    );
}

#[test]
fn a_range_miss_fills_the_whole_object_in_the_background() {
    let (origin, corvid) = origin_and_corvid(
        "rng",
        "",
        "\n[cache]\nmax_object_size = \"1MiB\"\nmax_sliced_object_size = \"1.5MiB\"\n",
    );
    let small = pattern_bytes(200_000, 5);
    let large = pattern_bytes(2 << 20, 6);
    origin.put("rng", "small", &small);
    origin.put("rng", "large", &large);
    let addr = corvid.addr();
    let head = |path: &str| http::head(addr, path, &[]);

    let r = http::get(addr, "/rng/small", &[("range", "bytes=10-19")]);
    assert_eq!(
        (r.status, r.header("x-cache"), r.body.as_slice()),
        (206, Some("MISS"), &small[10..20])
    );
    // HEAD misses go to the origin without filling, so polling with HEAD waits for the
    // background fill without causing one.
    assert!(
        wait_until(Duration::from_secs(5), || head("/rng/small")
            .header("x-cache")
            == Some("HIT")),
        "the background fill stored the whole object"
    );
    let r = http::get(addr, "/rng/small", &[("range", "bytes=-5")]);
    assert_eq!(
        (r.status, r.header("x-cache"), r.body.as_slice()),
        (206, Some("HIT"), &small[small.len() - 5..])
    );
    assert_eq!(
        origin.count("GET"),
        2,
        "the range, then one whole-object GET"
    );

    // Too large to cache at all (above max_sliced_object_size): ranges are forwarded, and
    // the whole object is never fetched.
    for _ in 0..3 {
        let r = http::get(addr, "/rng/large", &[("range", "bytes=0-99")]);
        assert_eq!((r.status, r.body.as_slice()), (206, &large[..100]));
    }
    assert_eq!(head("/rng/large").header("x-cache"), Some("MISS"));
    assert_eq!(origin.count("GET"), 5, "three ranges, no whole-object GET");
}

#[test]
fn uncacheable_answers_are_not_stored() {
    let (origin, corvid) = origin_and_corvid(
        "unc",
        "",
        "\n[cache]\nmax_object_size = \"64KiB\"\nmax_sliced_object_size = \"80KiB\"\n",
    );
    origin.put_with(
        "unc",
        "private",
        b"p",
        None,
        &[("cache-control", "no-store")],
    );
    origin.put("unc", "large", &pattern_bytes(100_000, 1));
    origin.put("unc", "small", b"s");
    let addr = corvid.addr();
    for path in ["/unc/private", "/unc/large"] {
        for _ in 0..2 {
            let r = http::get(addr, path, &[]);
            assert_eq!(
                (r.status, r.header("x-cache")),
                (200, Some("MISS")),
                "{path}"
            );
        }
    }
    assert_eq!(http::get(addr, "/unc/large", &[]).body.len(), 100_000);
    // A HEAD of an uncached object goes to the origin and does not fill (a Range miss
    // does, in the background: a_range_miss_fills_the_whole_object_in_the_background).
    assert_eq!(http::head(addr, "/unc/small", &[]).status, 200);
    assert_eq!(
        http::get(addr, "/unc/small", &[]).header("x-cache"),
        Some("MISS")
    );
    assert_eq!(
        http::get(addr, "/unc/small", &[]).header("x-cache"),
        Some("HIT")
    );
    // A response-* override is answered from the same entry (issue 19).
    let r = http::get(addr, "/unc/small?response-content-type=text%2Fx-v", &[]);
    assert_eq!(
        (r.header("x-cache"), r.header("content-type")),
        (Some("HIT"), Some("text/x-v"))
    );
}

/// `ttl = 0`: responses without explicit freshness are stored but revalidated on every use —
/// each request costs the origin a `304`, never the body again — while an explicit
/// `max-age` still makes hits.
#[test]
fn ttl_zero_revalidates_every_use_without_refetching_bodies() {
    let (origin, corvid) = origin_and_corvid("ttlzero", "ttl = \"0s\"", "");
    let body = pattern_bytes(50_000, 9);
    origin.put("ttlzero", "plain", &body);
    origin.put_with(
        "ttlzero",
        "explicit",
        b"fresh for a minute",
        None,
        &[("cache-control", "max-age=60")],
    );
    let addr = corvid.addr();
    assert_eq!(
        http::get(addr, "/ttlzero/plain", &[]).header("x-cache"),
        Some("MISS")
    );
    let before = origin.conditional_count(304);
    for i in 0..3 {
        let r = http::get(addr, "/ttlzero/plain", &[]);
        assert_eq!(r.header("x-cache"), Some("REVALIDATED"), "request {i}");
        assert!(r.body == body, "request {i}: body differs");
    }
    assert_eq!(origin.conditional_count(304) - before, 3, "one 304 per use");
    http::get(addr, "/ttlzero/explicit", &[]);
    assert_eq!(
        http::get(addr, "/ttlzero/explicit", &[]).header("x-cache"),
        Some("HIT")
    );
}

/// The `corvid_cache_entries` samples of `/metrics`, summed over the tiers.
fn cache_entries(addr: std::net::SocketAddr) -> u64 {
    http::get(addr, "/metrics", &[])
        .text()
        .lines()
        .filter(|l| l.starts_with("corvid_cache_entries{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// A 200 sent chunked (no `Content-Length`, as some S3-compatible gateways answer).
fn chunked_200(body: &str, cache_control: &str) -> FaultReply {
    FaultReply {
        status: 200,
        body: body.to_owned(),
        headers: vec![
            ("content-type".into(), "text/plain".into()),
            ("etag".into(), "\"chunked-1\"".into()),
            ("cache-control".into(), cache_control.into()),
        ],
        chunked: true,
        stall: None,
    }
}

/// Issue 15 (RFC 9111 §3): a cacheable 200 without `Content-Length` is cached like any other
/// (bounded by `cache.max_object_size`): the next request is a hit with a `Content-Length`, and
/// the origin is not asked again (it does not even hold the key: a second origin request
/// would be a 404).
#[test]
fn a_chunked_200_is_cached() {
    let (origin, corvid) = origin_and_corvid("chk", "", "");
    let body = "a body of unknown length, sent in chunks by the origin";
    origin.fail_next_with(1, chunked_200(body, "max-age=3600"));
    let r = http::get(corvid.addr(), "/chk/unsized.txt", &[]);
    assert_eq!((r.status, r.header("x-cache")), (200, Some("MISS")));
    assert_eq!(r.body, body.as_bytes());
    // The entry is stored once the origin's body has ended, after the client had it.
    assert!(
        wait_until(Duration::from_secs(5), || cache_entries(corvid.addr()) >= 1),
        "the chunked answer was never stored"
    );
    let r = http::get(corvid.addr(), "/chk/unsized.txt", &[]);
    assert_eq!((r.status, r.header("x-cache")), (200, Some("HIT")));
    assert_eq!(r.body, body.as_bytes());
    assert_eq!(
        r.header("content-length"),
        Some(body.len().to_string().as_str())
    );
    assert_eq!(r.header("etag"), Some("\"chunked-1\""));
    assert_eq!(origin.requests_for("chk", "unsized.txt").len(), 1);
}

/// The same for a chunked 200 larger than `cache.max_object_size`: streamed whole to its
/// client, not stored; and one that says `no-store` is not stored either.
#[test]
fn a_chunked_200_too_large_or_no_store_is_not_cached() {
    let (origin, corvid) = origin_and_corvid("chk", "", "[cache]\nmax_object_size = 64\n");
    let large = "x".repeat(100);
    let cases = [(large.as_str(), "max-age=3600"), ("small", "no-store")];
    for (i, (body, cc)) in cases.into_iter().enumerate() {
        let path = format!("/chk/unsized-{i}.txt");
        origin.fail_next_with(1, chunked_200(body, cc));
        let r = http::get(corvid.addr(), &path, &[]);
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, body.as_bytes()),
            "{cc}"
        );
        // Asked again, the origin (which does not hold the key) answers 404: not cached.
        let r = http::get(corvid.addr(), &path, &[]);
        assert_eq!(r.status, 404, "{cc}: {}", r.text());
    }
    assert_eq!(cache_entries(corvid.addr()), 0);
}

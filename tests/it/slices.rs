//! Large objects cached as slices (issue 17) through the real binary, against the
//! signature-verifying s3s origin (and moto where an origin must answer `If-Match` on a range
//! with 412): ranges on and across slice boundaries, the last short slice, HEAD and
//! conditionals from every tier; per-slice coalescing counted at the origin; an object replaced
//! between two slice fetches never mixed into one response; revalidation, purge, what is not
//! sliced, and the access log and metrics.
//!
//! Small sizes keep the suite fast: `max_object_size` 256 KiB, `slice_size` 64 KiB, objects of
//! [`LEN`] bytes (40 whole slices and a short one), made of pseudo-random bytes so that every
//! byte is checked and two versions never agree on a run of bytes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::http::{self, Conn, RawResponse, ResponseHead};
use crate::common::redis_server::RedisServer;
use crate::common::*;

/// `cache.slice_size`.
const S: u64 = 64 << 10;
/// The length of the test objects: not a multiple of [`S`].
const LEN: u64 = 40 * S + 12_345;
/// Slices of a [`LEN`]-byte object (the last one short).
const NSLICES: u64 = 41;
/// The `[cache]` lines every test shares (more may follow in the same table).
const SLICING: &str = "max_object_size = \"256KiB\"\nslice_size = \"64KiB\"\n";

/// A corvid config: `bucket` on `origin` under `/{bucket}`, then `[cache]` with [`SLICING`]
/// and `cache` lines, then `tables` verbatim (`[cache.memory]`, `[cache.disk]`, ...).
fn config(port: u16, endpoint: &str, bucket: &str, cache: &str, tables: &str) -> String {
    format!(
        "{}{}\n[cache]\n{SLICING}{cache}\n{tables}",
        server_toml(port),
        bucket_toml_for(bucket, &format!("/{bucket}"), endpoint, bucket, ""),
    )
}

/// The memory tier off and a disk tier in `dir`: every hit is a disk hit.
fn disk_only(dir: &Path) -> String {
    format!(
        "[cache.memory]\ncapacity = 0\n\n[cache.disk]\ndir = {}\ncapacity = \"16MiB\"\nsegment_size = \"1MiB\"\n",
        toml_str(&dir.to_string_lossy())
    )
}

/// The memory tier off and a Redis tier at `redis`: every hit is a Redis hit.
fn redis_only(redis: &RedisServer) -> String {
    format!(
        "[cache.memory]\ncapacity = 0\n\n[cache.redis]\nurl = {}\ntimeout = \"2s\"\n",
        toml_str(&redis.url())
    )
}

/// An s3s origin with `bucket` holding `body` under `key`; returns the origin and the ETag.
fn origin_with(bucket: &str, key: &str, body: &[u8]) -> (Origin, String) {
    let origin = Origin::start();
    origin.create_bucket(bucket);
    origin.put(bucket, key, body);
    let etag = etag_at(&origin, bucket, key);
    (origin, etag)
}

/// The object's ETag as the origin gives it now.
fn etag_at(origin: &Origin, bucket: &str, key: &str) -> String {
    let r = origin.client().send(
        "HEAD",
        &crate::common::S3Client::object_path(bucket, key),
        &[],
        &[],
    );
    assert_eq!(r.status, 200, "HEAD {bucket}/{key} at the origin");
    let etag = r
        .header("etag")
        .expect("the origin sends an ETag")
        .to_owned();
    assert!(etag.starts_with('"'), "the origin's ETag is strong: {etag}");
    etag
}

/// One GET on a fresh connection with a long read bound (a slice fetch may be slow on a
/// loaded machine).
fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> RawResponse {
    let mut c = Conn::connect(addr);
    c.set_timeout(Duration::from_secs(30));
    c.request("GET", path, headers)
}

/// A GET whose body may end early (the connection closed before `Content-Length` bytes):
/// the head, the bytes received, and whether the body was complete. A read that times out
/// fails the test: a response must end, never hang.
fn get_maybe_short(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (ResponseHead, Vec<u8>, bool) {
    let mut c = Conn::connect(addr);
    c.set_timeout(Duration::from_secs(30));
    c.send_request("GET", path, headers, &[]);
    let head = c.read_head();
    let mut body = Vec::new();
    loop {
        match c.try_read_body_chunk(1 << 20) {
            Ok(chunk) if chunk.is_empty() => return (head, body, true),
            Ok(chunk) => body.extend_from_slice(&chunk),
            Err(e) if http::is_timeout(&e) => {
                panic!("GET {path}: body stalled after {} bytes", body.len())
            }
            Err(_) => return (head, body, false),
        }
    }
}

/// Asserts `r` is the 206 for bytes `a..=b` of `body` (exact `Content-Range`,
/// `Content-Length` and bytes).
fn assert_partial(r: &RawResponse, a: u64, b: u64, body: &[u8], what: &str) {
    let len = body.len() as u64;
    assert_eq!(r.status, 206, "{what}: {:?} {}", r.headers, r.text());
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes {a}-{b}/{len}").as_str()),
        "{what}"
    );
    assert_eq!(
        r.header("content-length"),
        Some((b - a + 1).to_string().as_str()),
        "{what}"
    );
    assert!(
        r.body == body[a as usize..=b as usize],
        "{what}: {} bytes differ from the object's {a}..={b}",
        r.body.len()
    );
}

/// Asserts `r` is the whole object `body` with a 200.
fn assert_whole(r: &RawResponse, body: &[u8], what: &str) {
    assert_eq!(r.status, 200, "{what}: {:?} {}", r.headers, r.text());
    assert_eq!(
        r.header("content-length"),
        Some(body.len().to_string().as_str()),
        "{what}"
    );
    assert!(r.body == body, "{what}: the body differs from the object");
}

/// The client ranges of [`range_suite`]: `(Range value, first byte, last byte)`, starting,
/// ending and spanning slice boundaries, the last short slice, suffixes and open ends.
fn suite_ranges() -> Vec<(String, u64, u64)> {
    let r = |a: u64, b: u64| (format!("bytes={a}-{b}"), a, b);
    vec![
        r(0, S - 1),
        r(S, 2 * S - 1),
        r(S - 1, S),
        r(S - 10, 3 * S + 9),
        r(100, 200),
        r(2 * S, 2 * S),
        r(2 * S - 1, 2 * S - 1),
        r(40 * S, LEN - 1),
        r(LEN - 1, LEN - 1),
        r(39 * S + 5, LEN - 1),
        (format!("bytes={}-{}", LEN - 5, LEN + 100), LEN - 5, LEN - 1),
        ("bytes=-100".into(), LEN - 100, LEN - 1),
        (format!("bytes=-{}", 12_345 + S), LEN - 12_345 - S, LEN - 1),
        (format!("bytes=-{}", LEN + 10), 0, LEN - 1),
        (format!("bytes={}-", 3 * S), 3 * S, LEN - 1),
        (format!("bytes={}-", LEN - 10), LEN - 10, LEN - 1),
    ]
}

/// Every kind of request on the sliced object at `path` (whose bytes are `body` and ETag
/// `etag`), each answer checked byte for byte: the ranges of [`suite_ranges`], unsatisfiable
/// ranges (416 with `bytes */len`), a multi-range (200 whole), HEAD, the whole object,
/// If-None-Match (304), If-Match (412 on a mismatch), If-Range (206 with the ETag, 200 whole
/// with another). With `warm`, every answer must come from the cache tier `layer`
/// (`X-Cache: HIT`).
fn range_suite(addr: SocketAddr, path: &str, body: &[u8], etag: &str, warm: Option<&str>) {
    let cached = |r: &RawResponse, what: &str| {
        if let Some(layer) = warm {
            assert_eq!(
                (r.header("x-cache"), r.header("x-cache-layer")),
                (Some("HIT"), Some(layer)),
                "{what}: {:?}",
                r.headers
            );
        }
    };
    for (range, a, b) in suite_ranges() {
        let r = get(addr, path, &[("range", &range)]);
        assert_partial(&r, a, b, body, &range);
        assert_eq!(r.header("etag"), Some(etag), "{range}");
        cached(&r, &range);
    }
    for range in [
        format!("bytes={LEN}-"),
        format!("bytes={}-{}", LEN + 10, LEN + 20),
    ] {
        let r = get(addr, path, &[("range", &range)]);
        assert_eq!(r.status, 416, "{range}: {:?}", r.headers);
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes */{LEN}").as_str()),
            "{range}"
        );
    }
    let r = get(addr, path, &[("range", "bytes=0-1,5-6")]);
    assert_whole(&r, body, "a multi-range is answered whole");
    cached(&r, "multi-range");

    let r = Conn::connect(addr).request("HEAD", path, &[]);
    assert_eq!(r.status, 200, "HEAD: {:?}", r.headers);
    assert_eq!(
        r.header("content-length"),
        Some(LEN.to_string().as_str()),
        "HEAD"
    );
    assert_eq!(r.header("etag"), Some(etag), "HEAD");
    assert!(r.body.is_empty());
    cached(&r, "HEAD");

    let r = get(addr, path, &[]);
    assert_whole(&r, body, "whole GET");
    assert_eq!(r.header("etag"), Some(etag));
    cached(&r, "whole GET");

    let r = get(addr, path, &[("if-none-match", etag)]);
    assert_eq!(
        r.status, 304,
        "If-None-Match with the ETag: {:?}",
        r.headers
    );
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some(etag));
    cached(&r, "If-None-Match");
    let r = get(addr, path, &[("if-none-match", "\"another\"")]);
    assert_whole(&r, body, "If-None-Match with another ETag");

    let r = get(addr, path, &[("if-match", "\"another\"")]);
    assert_eq!(r.status, 412, "If-Match with another ETag: {:?}", r.headers);
    let r = get(
        addr,
        path,
        &[
            ("if-match", etag),
            ("range", &format!("bytes={}-{}", S - 3, S + 2)),
        ],
    );
    assert_partial(&r, S - 3, S + 2, body, "If-Match with the ETag and a range");

    let range = format!("bytes={}-{}", 5 * S - 7, 6 * S + 7);
    let r = get(addr, path, &[("if-range", etag), ("range", &range)]);
    assert_partial(&r, 5 * S - 7, 6 * S + 7, body, "If-Range with the ETag");
    cached(&r, "If-Range");
    let r = get(
        addr,
        path,
        &[("if-range", "\"another\""), ("range", &range)],
    );
    assert_whole(&r, body, "If-Range with another ETag: the whole object");
}

/// `(first, last)` of a recorded `Range: bytes=a-b`.
fn parse_range(v: &str) -> Option<(u64, u64)> {
    let (a, b) = v.strip_prefix("bytes=")?.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// What the origin saw for one object: plain GETs (no `Range`), slice fetches (`Range` with
/// `If-Match`) and other range GETs (a client's range passed through), checked against the
/// contract: every slice fetch is slice-aligned, carries `If-Match: etag` and merges adjacent
/// slices at most; no slice is fetched twice (a plain GET counts as fetching slice 0); at most
/// one plain GET. Returns how often each slice was fetched by a range and the plain GET count.
struct OriginView {
    /// Slice index -> range fetches that covered it.
    by_range: BTreeMap<u64, u32>,
    plain: usize,
    /// `Range` values sent without `If-Match` (passed-through client ranges).
    passed: Vec<String>,
    /// Every GET in order (`Range`, `If-Match`), for failure messages.
    log: Vec<String>,
}

fn origin_view(origin: &Origin, bucket: &str, key: &str, etag: &str, len: u64) -> OriginView {
    let mut view = OriginView {
        by_range: BTreeMap::new(),
        plain: 0,
        passed: Vec::new(),
        log: Vec::new(),
    };
    for r in origin.requests_for(bucket, key) {
        if r.method != "GET" {
            continue;
        }
        view.log.push(format!(
            "{} {}",
            r.header("range").unwrap_or("(whole)"),
            r.header("if-match").unwrap_or("")
        ));
        let Some(range) = r.header("range") else {
            view.plain += 1;
            continue;
        };
        let Some(if_match) = r.header("if-match") else {
            view.passed.push(range.to_owned());
            continue;
        };
        assert_eq!(
            if_match, etag,
            "a slice fetch names the object's ETag: {r:?}"
        );
        let (a, b) = parse_range(range).unwrap_or_else(|| panic!("slice fetch range {range}"));
        assert!(
            a % S == 0 && ((b + 1) % S == 0 || b == len - 1) && a <= b && b < len,
            "slice fetches are slice-aligned: {range} (object of {len} bytes)"
        );
        for i in a / S..=b / S {
            *view.by_range.entry(i).or_default() += 1;
        }
    }
    view
}

impl OriginView {
    /// No slice fetched twice, counting a plain GET as a fetch of slice 0 (its first slices
    /// are kept), and at most one plain GET.
    fn assert_each_slice_once(&self, what: &str) {
        assert!(
            self.plain <= 1,
            "{what}: {} plain GETs:\n{}",
            self.plain,
            self.log.join("\n")
        );
        let twice: Vec<_> = self
            .by_range
            .iter()
            .filter(|(i, n)| **n + u32::from(**i == 0 && self.plain == 1) > 1)
            .collect();
        assert!(
            twice.is_empty(),
            "{what}: slices fetched more than once (index, range fetches): {twice:?}; origin GETs:\n{}",
            self.log.join("\n")
        );
    }

    /// Every slice came from the origin exactly once, where every byte was served from these
    /// fetches: the plain GET's first slices (a prefix), then range fetches of every slice
    /// after them. A slice after the first range-fetched one that no range fetch covered can
    /// only have come from the plain GET, which then also delivered the range-fetched slices
    /// before it: those were fetched twice.
    fn assert_every_slice_fetched(&self, what: &str) {
        let first = if self.plain == 1 {
            self.by_range.keys().next().copied().unwrap_or(NSLICES)
        } else {
            0
        };
        let missing: Vec<u64> = (first..NSLICES)
            .filter(|i| !self.by_range.contains_key(i))
            .collect();
        assert!(
            missing.is_empty() && (self.plain == 1 || first == 0),
            "{what}: range fetches start at slice {first} but skip {missing:?}: those came from \
             the first plain GET (plain GETs: {}), so it also delivered slices from {first} on, \
             which were fetched again by range. Origin GETs:\n{}",
            self.plain,
            self.log.join("\n")
        );
    }
}

/// Fills `path` with one whole GET (a MISS), byte-exact.
fn fill(addr: SocketAddr, path: &str, body: &[u8]) {
    let r = get(addr, path, &[]);
    assert_whole(&r, body, "the filling GET");
    assert_eq!(r.header("x-cache"), Some("MISS"), "{:?}", r.headers);
}

#[test]
fn ranges_heads_and_conditionals_from_memory() {
    let body = pattern_bytes(LEN as usize, 17);
    let (origin, etag) = origin_with("slmem", "big.bin", &body);
    let corvid = Corvid::start(&config(free_port(), &origin.endpoint(), "slmem", "", ""));
    fill(corvid.addr(), "/slmem/big.bin", &body);
    origin_view(&origin, "slmem", "big.bin", &etag, LEN).assert_each_slice_once("fill");
    let before = origin.total_count();
    range_suite(
        corvid.addr(),
        "/slmem/big.bin",
        &body,
        &etag,
        Some("memory"),
    );
    assert_eq!(
        origin.total_count(),
        before,
        "every answer came from cached slices: {:?}",
        &origin.requests()[before as usize..]
    );
}

#[test]
fn ranges_heads_and_conditionals_from_disk_after_a_restart() {
    let body = pattern_bytes(LEN as usize, 18);
    let (origin, etag) = origin_with("sldsk", "big.bin", &body);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let toml = config(
        port,
        &origin.endpoint(),
        "sldsk",
        "",
        &disk_only(dir.path()),
    );
    let mut corvid = Corvid::start(&toml);
    fill(corvid.addr(), "/sldsk/big.bin", &body);
    // Every slice on disk before the restart: a whole GET needs nothing from the origin.
    let before = origin.total_count();
    let r = get(corvid.addr(), "/sldsk/big.bin", &[]);
    assert_whole(&r, &body, "disk hit");
    assert_eq!(r.header("x-cache-layer"), Some("disk"));
    assert_eq!(origin.total_count(), before);
    assert_eq!(
        corvid
            .terminate(Duration::from_secs(10))
            .and_then(|s| s.code()),
        Some(0)
    );
    let corvid = Corvid::start(&toml);
    range_suite(corvid.addr(), "/sldsk/big.bin", &body, &etag, Some("disk"));
    assert_eq!(
        origin.total_count(),
        before,
        "every answer after the restart came from the disk tier: {:?}",
        &origin.requests()[before as usize..]
    );
}

#[test]
fn ranges_heads_and_conditionals_from_redis() {
    let redis = RedisServer::start(&[]);
    let body = pattern_bytes(LEN as usize, 19);
    let (origin, etag) = origin_with("slrds", "big.bin", &body);
    let toml = |port| config(port, &origin.endpoint(), "slrds", "", &redis_only(&redis));
    let a = Corvid::start(&toml(free_port()));
    fill(a.addr(), "/slrds/big.bin", &body);
    // The object entry and every slice reach Redis (written after the client has its bytes).
    assert!(
        wait_until(Duration::from_secs(10), || redis
            .key_count()
            .is_some_and(|n| n > NSLICES)),
        "object entry and {NSLICES} slices in Redis: {:?} keys",
        redis.key_count()
    );
    // A second instance with no memory tier: everything it serves comes from Redis.
    let b = Corvid::start(&toml(free_port()));
    let before = origin.total_count();
    range_suite(b.addr(), "/slrds/big.bin", &body, &etag, Some("redis"));
    assert_eq!(
        origin.total_count(),
        before,
        "every answer came from Redis: {:?}",
        &origin.requests()[before as usize..]
    );
}

#[test]
fn ranges_on_a_cold_object_fetch_only_the_missing_slices_once() {
    let body = pattern_bytes(LEN as usize, 20);
    let (origin, etag) = origin_with("slcold", "big.bin", &body);
    let corvid = Corvid::start(&config(free_port(), &origin.endpoint(), "slcold", "", ""));
    let addr = corvid.addr();
    origin.reset_counts();
    // A cold range is passed through as asked (and records the object entry).
    let first = format!("bytes=1000-{}", S + 5000);
    let r = get(addr, "/slcold/big.bin", &[("range", &first)]);
    assert_partial(&r, 1000, S + 5000, &body, "a cold range");
    // Every kind of request, the slices each needs fetched on the way.
    range_suite(addr, "/slcold/big.bin", &body, &etag, None);
    let view = origin_view(&origin, "slcold", "big.bin", &etag, LEN);
    assert_eq!(
        view.passed,
        vec![first],
        "only the cold range passed through"
    );
    assert_eq!(view.plain, 0, "the object entry was known: no plain GET");
    view.assert_each_slice_once("ranges on a cold object");
    view.assert_every_slice_fetched("the suite's whole GETs");
    let before = origin.total_count();
    let r = get(addr, "/slcold/big.bin", &[]);
    assert_whole(&r, &body, "warm whole GET");
    assert_eq!(r.header("x-cache"), Some("HIT"));
    assert_eq!(origin.total_count(), before, "all slices cached");
}

/// The ranges the readers of [`a_whole_get_while_others_read_ranges_of_a_cold_object`] ask
/// for: none slice-aligned, so passed-through ones are told apart from slice fetches.
fn reader_ranges(reader: u64) -> Vec<(u64, u64)> {
    (0..6)
        .map(|i| {
            let a = ((reader * 7 + i * 5) % 38) * S + 3 + reader;
            (a, a + S + 2 * S * (i % 2) + 11)
        })
        .collect()
}

#[test]
fn a_whole_get_while_others_read_ranges_of_a_cold_object() {
    let body = Arc::new(pattern_bytes(LEN as usize, 21));
    // The same scene on three cold objects: the races it exercises are timing-dependent.
    let keys = ["a.bin", "b.bin", "c.bin"];
    let (origin, etag) = origin_with("slmix", keys[0], &body);
    for key in &keys[1..] {
        origin.put("slmix", key, &body);
    }
    let corvid = Corvid::start(&config(free_port(), &origin.endpoint(), "slmix", "", ""));
    let addr = corvid.addr();
    origin.reset_counts();
    // Every origin answer a little late, so that clients meet slices still in flight.
    origin.set_delay(Duration::from_millis(20));
    for key in keys {
        let path = format!("/slmix/{key}");
        let readers = 4;
        let barrier = Arc::new(Barrier::new(readers + 1));
        let mut threads = Vec::new();
        for reader in 0..readers as u64 {
            let (barrier, body, path) = (Arc::clone(&barrier), Arc::clone(&body), path.clone());
            threads.push(std::thread::spawn(move || {
                barrier.wait();
                for (a, b) in reader_ranges(reader) {
                    let range = format!("bytes={a}-{b}");
                    let r = get(addr, &path, &[("range", &range)]);
                    assert_partial(&r, a, b, &body, &format!("reader {reader} {range}"));
                }
            }));
        }
        let whole = {
            let (barrier, body, path) = (Arc::clone(&barrier), Arc::clone(&body), path.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let r = get(addr, &path, &[]);
                assert_whole(&r, &body, "the whole GET among range readers");
            })
        };
        for t in threads {
            t.join().expect("a range reader failed");
        }
        whole.join().expect("the whole GET failed");

        let view = origin_view(&origin, "slmix", key, &etag, LEN);
        let asked: Vec<String> = (0..readers as u64)
            .flat_map(reader_ranges)
            .map(|(a, b)| format!("bytes={a}-{b}"))
            .collect();
        for p in &view.passed {
            assert!(
                asked.contains(p),
                "{key}: a range the origin saw that no client asked: {p}"
            );
        }
        view.assert_each_slice_once(&format!("{key}: whole GET among range readers"));
        let before = origin.total_count();
        let r = get(addr, &path, &[]);
        assert_whole(&r, &body, "afterwards");
        assert_eq!(r.header("x-cache"), Some("HIT"));
        assert_eq!(
            origin.total_count(),
            before,
            "{key}: every slice cached once"
        );
    }
}

#[test]
fn sixteen_clients_on_a_cold_object_fetch_each_slice_once() {
    let body = Arc::new(pattern_bytes(LEN as usize, 22));
    let (origin, etag) = origin_with("sl16", "big.bin", &body);
    let corvid = Corvid::start(&config(free_port(), &origin.endpoint(), "sl16", "", ""));
    let addr = corvid.addr();
    origin.reset_counts();
    // Every origin answer a little late, so that clients meet slices still in flight.
    origin.set_delay(Duration::from_millis(20));
    let n = 16;
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let (barrier, body) = (Arc::clone(&barrier), Arc::clone(&body));
            std::thread::spawn(move || {
                let mut c = Conn::connect(addr);
                c.set_timeout(Duration::from_secs(60));
                barrier.wait();
                let r = c.request("GET", "/sl16/big.bin", &[]);
                assert_whole(&r, &body, &format!("client {i}"));
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a client failed");
    }
    let view = origin_view(&origin, "sl16", "big.bin", &etag, LEN);
    assert!(view.passed.is_empty(), "{:?}", view.passed);
    assert_eq!(view.plain, 1, "one plain GET for 16 cold clients");
    view.assert_each_slice_once("16 cold clients");
    view.assert_every_slice_fetched("16 cold clients");
    let before = origin.total_count();
    let r = get(addr, "/sl16/big.bin", &[]);
    assert_whole(&r, &body, "afterwards");
    assert_eq!(r.header("x-cache"), Some("HIT"));
    assert_eq!(origin.total_count(), before);
}

#[test]
fn a_slow_reader_does_not_pace_another_on_the_same_cold_object() {
    // Larger than what socket buffers hold, so the paused reader really stops corvid's writes.
    let len = 12 * (1 << 20) + 4321;
    let body = pattern_bytes(len, 33);
    let (origin, etag) = origin_with("slslow", "big.bin", &body);
    let corvid = Corvid::start(&config(free_port(), &origin.endpoint(), "slslow", "", ""));
    let addr = corvid.addr();
    origin.reset_counts();
    let mut a = Conn::connect(addr);
    a.set_timeout(Duration::from_secs(60));
    a.send_request("GET", "/slslow/big.bin", &[], &[]);
    let head = a.read_head();
    assert_eq!(head.status, 200);
    let mut got_a = a.read_body_chunk(64 << 10);
    // A reads nothing more until B is done: the pause is the stimulus under test. B's bound is
    // well below corvid's send timeout, which a B paced by A would wait for.
    let mut b = Conn::connect(addr);
    b.set_timeout(Duration::from_secs(20));
    let r = b.request("GET", "/slslow/big.bin", &[]);
    assert_eq!(r.status, 200);
    assert!(r.body == body, "B's bytes differ from the object");
    while !a.body_done() {
        got_a.extend_from_slice(&a.read_body_chunk(1 << 20));
    }
    assert!(got_a == body, "A's bytes differ from the object");
    let view = origin_view(&origin, "slslow", "big.bin", &etag, len as u64);
    view.assert_each_slice_once("a slow and a fast reader");
}

/// Flips one byte at `at` (a fraction of the file's length) in every segment file under `dir`
/// that holds records; returns how many files it damaged.
fn flip_segments(dir: &Path, at: &[f64]) -> usize {
    let mut damaged = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if !path.is_file() || path.ends_with("corvid.lock") {
            continue;
        }
        let mut bytes = std::fs::read(&path).unwrap();
        if bytes.iter().skip(64).all(|&b| b == 0) {
            continue;
        }
        // Where the records end (the rest of a segment is zeros reserved ahead).
        let used = bytes.iter().rposition(|&b| b != 0).unwrap_or(0);
        for f in at {
            let i = 64 + ((used - 64) as f64 * f) as usize;
            bytes[i] ^= 0x20;
        }
        std::fs::write(&path, &bytes).unwrap();
        damaged += 1;
    }
    damaged
}

#[test]
fn torn_or_half_written_slices_on_disk_are_refetched_never_served() {
    let body = pattern_bytes(LEN as usize, 34);
    let (origin, etag) = origin_with("sltorn", "big.bin", &body);
    let dir = tempfile::tempdir().unwrap();
    let toml = config(
        free_port(),
        &origin.endpoint(),
        "sltorn",
        "slice_readahead = 1\n",
        &disk_only(dir.path()),
    );
    // SIGKILL while slices are being written: a slow origin keeps the fill going.
    let mut corvid = Corvid::start(&toml);
    origin.set_delay(Duration::from_millis(30));
    let addr = corvid.addr();
    let reader = std::thread::spawn(move || {
        let _ = http::try_request(addr, "GET", "/sltorn/big.bin", &[], Duration::from_secs(30));
    });
    assert!(
        wait_until(Duration::from_secs(20), || origin
            .requests_for("sltorn", "big.bin")
            .iter()
            .filter(|r| r.header("if-match").is_some())
            .count()
            >= 5),
        "slices are being fetched"
    );
    corvid.signal(libc::SIGKILL);
    let _ = reader.join();
    let _ = corvid.wait_exit(Duration::from_secs(5));
    origin.set_delay(Duration::ZERO);
    let mut corvid = Corvid::start(&toml);
    let r = get(corvid.addr(), "/sltorn/big.bin", &[]);
    assert_whole(&r, &body, "after a SIGKILL mid-fill");
    range_suite(corvid.addr(), "/sltorn/big.bin", &body, &etag, None);

    // Every slice on disk now; damage them where the files hold records.
    let r = get(corvid.addr(), "/sltorn/big.bin", &[]);
    assert_eq!(
        (r.header("x-cache"), r.header("x-cache-layer")),
        (Some("HIT"), Some("disk"))
    );
    assert_eq!(
        corvid
            .terminate(Duration::from_secs(10))
            .and_then(|s| s.code()),
        Some(0)
    );
    let damaged = flip_segments(dir.path(), &[0.2, 0.45, 0.7, 0.95]);
    assert!(damaged > 0, "the disk tier wrote segment files");
    let corvid = Corvid::start(&toml);
    origin.reset_counts();
    let r = get(corvid.addr(), "/sltorn/big.bin", &[]);
    assert_whole(&r, &body, "after bytes flipped on disk");
    assert!(
        origin.count("GET") >= 1,
        "damaged slices were refetched ({damaged} segment files damaged)"
    );
    range_suite(corvid.addr(), "/sltorn/big.bin", &body, &etag, None);
    let before = origin.total_count();
    let r = get(corvid.addr(), "/sltorn/big.bin", &[]);
    assert_whole(&r, &body, "refetched slices stored again");
    assert_eq!(origin.total_count(), before);
}

#[test]
fn a_client_that_leaves_a_cold_object_does_not_cost_another_a_refetch() {
    let body = pattern_bytes(LEN as usize, 35);
    let (origin, etag) = origin_with("slleave", "big.bin", &body);
    let corvid = Corvid::start(&config(free_port(), &origin.endpoint(), "slleave", "", ""));
    let addr = corvid.addr();
    origin.reset_counts();
    origin.set_delay(Duration::from_millis(20));
    {
        let mut a = Conn::connect(addr);
        a.send_request("GET", "/slleave/big.bin", &[], &[]);
        assert_eq!(a.read_head().status, 200);
        let _ = a.read_body_chunk(100_000);
        // Dropped here: A closes its connection in the middle of the first slices.
    }
    let r = get(addr, "/slleave/big.bin", &[]);
    assert_whole(&r, &body, "B after A left");
    let r = get(addr, "/slleave/big.bin", &[("range", "bytes=0-99")]);
    assert_partial(&r, 0, 99, &body, "slice 0 afterwards");
    assert_eq!(r.header("x-cache"), Some("HIT"));
    let view = origin_view(&origin, "slleave", "big.bin", &etag, LEN);
    view.assert_each_slice_once("a client left, another read the whole object");
}

/// A whole GET of `/slfail/big.bin` while a slice cannot be fetched (`why`): a 200 that
/// ends short with the object's bytes, or (when the failure shows before anything was sent)
/// a 5xx.
fn ended_or_refused(addr: SocketAddr, why: &str) {
    let (head, got, complete) = get_maybe_short(addr, "/slfail/big.bin", &[]);
    if head.status == 200 {
        assert!(
            !complete,
            "{why}: an answer whose slice failed cannot be complete"
        );
        let body = pattern_bytes(LEN as usize, 36);
        assert!(
            got == body[..got.len()],
            "{why}: the bytes sent are the object's"
        );
    } else {
        assert!(
            head.status >= 500,
            "{why}: {} {:?}",
            head.status,
            head.headers
        );
    }
}

#[test]
fn origin_failures_during_slice_fetches_end_or_refuse_answers_and_never_hang() {
    let body = pattern_bytes(LEN as usize, 36);
    let (mut origin, etag) = origin_with("slfail", "big.bin", &body);
    let corvid = Corvid::start(&config(
        free_port(),
        &origin.endpoint(),
        "slfail",
        "slice_readahead = 0\n",
        "",
    ));
    let addr = corvid.addr();
    // The object entry and slices 0..4 cached.
    for _ in 0..2 {
        let r = get(addr, "/slfail/big.bin", &[("range", "bytes=0-262143")]);
        assert_partial(&r, 0, 4 * S - 1, &body, "slices 0..4");
    }
    // Nothing sent yet when the slice fetch fails: an error answer, not a hang.
    origin.fail_next(1, 500);
    let range = format!("bytes={}-{}", 10 * S, 10 * S + 9);
    let r = get(addr, "/slfail/big.bin", &[("range", &range)]);
    assert!(r.status >= 500, "{}: {:?}", r.status, r.headers);
    let r = get(addr, "/slfail/big.bin", &[("range", &range)]);
    assert_partial(
        &r,
        10 * S,
        10 * S + 9,
        &body,
        "the same range once the origin is well",
    );
    assert_eq!(r.header("etag"), Some(etag.as_str()));

    // The origin fails after the cached slices were sent: the answer ends short.
    origin.fail_next(1, 503);
    ended_or_refused(addr, "an origin 503");
    // The origin gone: the same, and corvid keeps serving what it has.
    origin.stop();
    ended_or_refused(addr, "the origin down");
    let r = get(addr, "/slfail/big.bin", &[("range", "bytes=1000-2000")]);
    assert_partial(
        &r,
        1000,
        2000,
        &body,
        "cached slices while the origin is down",
    );
    origin.restart();
    let r = get(addr, "/slfail/big.bin", &[]);
    assert_whole(&r, &body, "the origin back");
}

#[test]
fn a_changed_slice_size_never_mixes_cuts() {
    let body = pattern_bytes(LEN as usize, 37);
    let (origin, etag) = origin_with("slcut", "big.bin", &body);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let toml = config(
        port,
        &origin.endpoint(),
        "slcut",
        "",
        &disk_only(dir.path()),
    );
    let mut corvid = Corvid::start(&toml);
    fill(corvid.addr(), "/slcut/big.bin", &body);
    assert_eq!(
        corvid
            .terminate(Duration::from_secs(10))
            .and_then(|s| s.code()),
        Some(0)
    );
    // The same disk tier, slices of 96 KiB: none of the 64 KiB cut fits the new one.
    let toml = toml.replace("slice_size = \"64KiB\"", "slice_size = \"96KiB\"");
    assert!(toml.contains("96KiB"));
    let corvid = Corvid::start(&toml);
    let addr = corvid.addr();
    let r = get(addr, "/slcut/big.bin", &[]);
    assert_whole(&r, &body, "after the slice size changed");
    let before = origin.total_count();
    let r = get(addr, "/slcut/big.bin", &[]);
    assert_whole(&r, &body, "the new cut cached");
    assert_eq!(
        (r.header("x-cache"), r.header("x-cache-layer")),
        (Some("HIT"), Some("disk"))
    );
    assert_eq!(origin.total_count(), before);
    for (a, b) in [
        (0, 96 * 1024),
        (96 * 1024 - 1, 96 * 1024),
        (LEN - 70_000, LEN - 1),
    ] {
        let r = get(
            addr,
            "/slcut/big.bin",
            &[("range", &format!("bytes={a}-{b}"))],
        );
        assert_partial(&r, a, b, &body, "new cut");
        assert_eq!(r.header("etag"), Some(etag.as_str()));
    }
}

/// Which version `got` (the bytes of an answer starting at offset `at` of the object) is
/// entirely from: `Some(true)` old, `Some(false)` new, `None` a mix (or neither).
fn version_of(got: &[u8], at: usize, old: &[u8], new: &[u8]) -> Option<bool> {
    let end = at + got.len();
    if got == &old[at..end] {
        Some(true)
    } else if got == &new[at..end] {
        Some(false)
    } else {
        None
    }
}

/// The object at `path` (both versions `LEN` bytes) is replaced at its origin (`replace`)
/// after its first half was cached as slices (with no read-ahead, so the second half is not):
/// the next whole GET is entirely one version (complete, or ended short), never spliced; its
/// ETag names that version; the next whole GET is the new version complete. A second object,
/// `path2`, replaced the same way, then asked for a range of its uncached half (nothing sent
/// yet): answered from the new version, and its cached half is never served again.
fn replaced_between_slice_fetches(
    addr: SocketAddr,
    paths: [&str; 2],
    old: &[u8],
    new: &[u8],
    etags: (&str, &str),
    replace: &dyn Fn(usize),
) {
    let (old_etag, new_etag) = etags;
    let half = 20 * S;
    let first_half = format!("bytes=0-{}", half - 1);
    for path in paths {
        // The cold range records the object entry; the second one caches slices 0..20, so
        // the third finds them.
        for round in 0..3 {
            let r = get(addr, path, &[("range", &first_half)]);
            assert_partial(
                &r,
                0,
                half - 1,
                old,
                "the first half before the replacement",
            );
            assert_eq!(r.header("etag"), Some(old_etag));
            if round > 0 {
                assert_eq!(r.header("x-cache"), Some("HIT"), "{path} round {round}");
            }
        }
    }

    replace(0);
    let (head, got, complete) = get_maybe_short(addr, paths[0], &[]);
    assert_eq!(head.status, 200, "{:?}", head.headers);
    let version = version_of(&got, 0, old, new).unwrap_or_else(|| {
        let first_diff = got.iter().zip(old).position(|(a, b)| a != b);
        panic!(
            "one response mixes versions: {} bytes, first byte differing from the old at {first_diff:?}",
            got.len()
        )
    });
    assert_eq!(
        head.header("etag"),
        Some(if version { old_etag } else { new_etag }),
        "the ETag names the version of the bytes"
    );
    if complete {
        assert_eq!(got.len() as u64, LEN);
        assert!(
            !version,
            "the old version complete, with its second half gone from the origin?"
        );
    } else {
        assert!((got.len() as u64) < LEN);
    }
    eprintln!(
        "after the replacement: {} of {LEN} bytes of the {} version",
        got.len(),
        if version { "old" } else { "new" }
    );
    let r = get(addr, paths[0], &[]);
    assert_whole(&r, new, "the next whole GET after the replacement");
    assert_eq!(r.header("etag"), Some(new_etag));
    let r = get(addr, paths[0], &[("range", &first_half)]);
    assert_partial(&r, 0, half - 1, new, "the first half after the replacement");

    // Nothing sent yet when the mismatch shows: the answer is the new version.
    replace(1);
    let (a, b) = (30 * S + 17, 33 * S + 5);
    let r = get(addr, paths[1], &[("range", &format!("bytes={a}-{b}"))]);
    assert_partial(
        &r,
        a,
        b,
        new,
        "a range of the uncached half after the replacement",
    );
    assert_eq!(r.header("etag"), Some(new_etag));
    let r = get(addr, paths[1], &[("range", &first_half)]);
    assert_partial(
        &r,
        0,
        half - 1,
        new,
        "the once-cached half after the replacement",
    );
    assert_eq!(r.header("etag"), Some(new_etag));
    let r = get(addr, paths[1], &[]);
    assert_whole(&r, new, "the whole object after the replacement");
}

#[test]
fn an_object_replaced_between_slice_fetches_is_never_mixed() {
    // s3s answers a slice fetch whose If-Match no longer holds with a 206 of the new version.
    let old = pattern_bytes(LEN as usize, 23);
    let new = pattern_bytes(LEN as usize, 24);
    let origin = Origin::start();
    origin.create_bucket("slrep");
    for k in ["a.bin", "b.bin"] {
        origin.put("slrep", k, &old);
    }
    let old_etag = etag_at(&origin, "slrep", "a.bin");
    let corvid = Corvid::start(&config(
        free_port(),
        &origin.endpoint(),
        "slrep",
        "slice_readahead = 0\n",
        "",
    ));
    // The new version's ETag, from a key corvid never reads.
    origin.put("slrep", "probe.bin", &new);
    let new_etag = etag_at(&origin, "slrep", "probe.bin");
    assert_ne!(old_etag, new_etag);
    let keys = ["a.bin", "b.bin"];
    replaced_between_slice_fetches(
        corvid.addr(),
        ["/slrep/a.bin", "/slrep/b.bin"],
        &old,
        &new,
        (&old_etag, &new_etag),
        &|i| origin.put("slrep", keys[i], &new),
    );
}

#[test]
fn an_object_replaced_between_slice_fetches_is_never_mixed_412() {
    // moto answers a slice fetch whose If-Match no longer holds with 412.
    let old = pattern_bytes(LEN as usize, 25);
    let new = pattern_bytes(LEN as usize, 26);
    let moto = Moto::start();
    moto.create_bucket("slrep412");
    let mut etags = Vec::new();
    for k in ["a.bin", "b.bin"] {
        let r = moto.put_with("slrep412", k, &old, None, &[]);
        assert_eq!(r.status, 200);
        etags.push(r.header("etag").unwrap().to_owned());
    }
    assert_eq!(etags[0], etags[1]);
    let corvid = Corvid::start(&config(
        free_port(),
        &moto.endpoint(),
        "slrep412",
        "slice_readahead = 0\n",
        "",
    ));
    // The new version's ETag, from a key corvid never reads.
    let probe = moto.put_with("slrep412", "probe.bin", &new, None, &[]);
    let new_etag = probe.header("etag").unwrap().to_owned();
    assert_ne!(etags[0], new_etag);
    let keys = ["a.bin", "b.bin"];
    replaced_between_slice_fetches(
        corvid.addr(),
        ["/slrep412/a.bin", "/slrep412/b.bin"],
        &old,
        &new,
        (&etags[0], &new_etag),
        &|i| {
            let r = moto.put_with("slrep412", keys[i], &new, None, &[]);
            assert_eq!(r.header("etag"), Some(new_etag.as_str()));
        },
    );
}

#[test]
fn a_stale_object_revalidates_once_and_keeps_or_drops_its_slices() {
    let (origin, corvid) =
        origin_and_inprocess("slreval", "ttl = \"1h\"", &format!("\n[cache]\n{SLICING}"));
    let addr = corvid.addr();
    let v1 = pattern_bytes(LEN as usize, 27);
    origin.put("slreval", "big.bin", &v1);
    let etag1 = etag_at(&origin, "slreval", "big.bin");
    fill(addr, "/slreval/big.bin", &v1);
    origin.reset_counts();

    // Unchanged: one conditional HEAD answered 304, every slice kept.
    corvid.advance(Duration::from_secs(2 * 3600));
    let unchanged = origin.conditional_count(304);
    let r = get(addr, "/slreval/big.bin", &[]);
    assert_whole(&r, &v1, "after expiry, unchanged");
    assert_eq!(r.header("x-cache"), Some("REVALIDATED"), "{:?}", r.headers);
    let seen = origin.requests_for("slreval", "big.bin");
    assert_eq!(
        seen.len(),
        1,
        "one origin request, no slice refetched: {seen:?}"
    );
    assert_eq!(seen[0].method, "HEAD");
    assert_eq!(seen[0].header("if-none-match"), Some(etag1.as_str()));
    assert_eq!(origin.conditional_count(304), unchanged + 1);
    let r = get(addr, "/slreval/big.bin", &[("range", "bytes=65530-65545")]);
    assert_partial(&r, 65530, 65545, &v1, "refreshed");
    assert_eq!(r.header("x-cache"), Some("HIT"));
    assert_eq!(origin.requests_for("slreval", "big.bin").len(), 1);

    // Changed (same length, only the ETag tells): the new version, never an old slice.
    let v2 = pattern_bytes(LEN as usize, 28);
    origin.put("slreval", "big.bin", &v2);
    let etag2 = etag_at(&origin, "slreval", "big.bin");
    origin.reset_counts();
    corvid.advance(Duration::from_secs(2 * 3600));
    let r = get(addr, "/slreval/big.bin", &[]);
    assert_whole(&r, &v2, "after expiry, changed");
    assert_eq!(r.header("etag"), Some(etag2.as_str()));
    let seen = origin.requests_for("slreval", "big.bin");
    assert_eq!(seen[0].method, "HEAD", "revalidation first: {seen:?}");
    assert_eq!(seen[0].header("if-none-match"), Some(etag1.as_str()));
    for range in ["bytes=0-99", "bytes=2621440-2633784"] {
        let (a, b) = parse_range(range).unwrap();
        let r = get(addr, "/slreval/big.bin", &[("range", range)]);
        assert_partial(&r, a, b, &v2, range);
        assert_eq!(r.header("etag"), Some(etag2.as_str()));
    }
    origin_view(&origin, "slreval", "big.bin", &etag2, LEN)
        .assert_each_slice_once("the new version's fill");
}

struct Admin {
    key: crate::jwt_support::TestKey,
}

impl Admin {
    fn new() -> Admin {
        Admin {
            key: crate::jwt_support::key("HS256", 0),
        }
    }

    /// `[jwt]` and `[admin]` tables accepting this key's tokens with `role=admin`.
    fn toml(&self) -> String {
        format!(
            "\n[jwt]\nalgorithm = \"HS256\"\nsecret = {}\n\n[admin]\nclaim = {{ name = \"role\", value = \"admin\" }}\n",
            toml_str(self.key.secret.as_deref().unwrap()),
        )
    }

    fn token(&self) -> String {
        self.key
            .token(None, &json!({"exp": now() + 600, "role": "admin"}))
    }

    fn post(&self, addr: SocketAddr, path: &str) -> Value {
        let auth = format!("Bearer {}", self.token());
        let r = http::try_request(
            addr,
            "POST",
            path,
            &[("content-length", "0"), ("authorization", &auth)],
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(r.status, 200, "POST {path}: {}", r.text());
        serde_json::from_slice(&r.body).unwrap()
    }

    fn stats(&self, addr: SocketAddr, bucket: &str) -> Value {
        let auth = format!("Bearer {}", self.token());
        let r = http::get(
            addr,
            &format!("/admin/cache/stats/{bucket}"),
            &[("authorization", &auth)],
        );
        assert_eq!(r.status, 200, "{}", r.text());
        serde_json::from_slice(&r.body).unwrap()
    }
}

/// A purge answer that reached the object entry and every slice in memory and on disk (an
/// entry held by two tiers counts in both).
fn purged_everywhere(p: &Value) {
    for layer in ["memory", "disk"] {
        assert_eq!(
            p["layers"][layer]["entries"].as_u64(),
            Some(NSLICES + 1),
            "{layer}: the object entry and {NSLICES} slices: {p}"
        );
    }
    assert_eq!(p["purged"].as_u64(), Some(2 * (NSLICES + 1)), "{p}");
}

#[test]
fn a_purge_reaches_every_slice_in_every_tier() {
    let body = pattern_bytes(LEN as usize, 29);
    let (origin, etag) = origin_with("slpurge", "big.bin", &body);
    let admin = Admin::new();
    let dir = tempfile::tempdir().unwrap();
    let tiers = format!(
        "[cache.disk]\ndir = {}\ncapacity = \"16MiB\"\nsegment_size = \"1MiB\"\n{}",
        toml_str(&dir.path().to_string_lossy()),
        admin.toml()
    );
    let corvid = Corvid::start(&config(
        free_port(),
        &origin.endpoint(),
        "slpurge",
        "",
        &tiers,
    ));
    let addr = corvid.addr();
    fill(addr, "/slpurge/big.bin", &body);
    let r = get(addr, "/slpurge/big.bin", &[]);
    assert_eq!(r.header("x-cache"), Some("HIT"));

    // Hard purge: memory and disk forget the object and every slice.
    let p = admin.post(addr, "/admin/cache/purge/slpurge/big.bin");
    purged_everywhere(&p);
    origin.reset_counts();
    let r = get(addr, "/slpurge/big.bin", &[]);
    assert_whole(&r, &body, "after the purge");
    assert_eq!(r.header("x-cache"), Some("MISS"));
    let view = origin_view(&origin, "slpurge", "big.bin", &etag, LEN);
    view.assert_each_slice_once("refill after the purge");
    view.assert_every_slice_fetched("refill after the purge");
    let r = get(addr, "/slpurge/big.bin", &[("range", "bytes=1000-200000")]);
    assert_partial(&r, 1000, 200_000, &body, "after the refill");
    assert_eq!(r.header("x-cache"), Some("HIT"));

    // Soft purge: the next request revalidates once and keeps every slice.
    let p = admin.post(addr, "/admin/cache/purge/slpurge/big.bin?soft=true");
    purged_everywhere(&p);
    origin.reset_counts();
    let r = get(addr, "/slpurge/big.bin", &[]);
    assert_whole(&r, &body, "after the soft purge");
    assert_eq!(r.header("x-cache"), Some("REVALIDATED"));
    let seen = origin.requests_for("slpurge", "big.bin");
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        (seen[0].method.as_str(), seen[0].header("if-none-match")),
        ("HEAD", Some(etag.as_str()))
    );

    // Prefix, bucket and global purges reach the slices too.
    for purge in [
        "/admin/cache/purge/slpurge?prefix=big",
        "/admin/cache/purge/slpurge",
        "/admin/cache/purge",
    ] {
        let r = get(addr, "/slpurge/big.bin", &[]);
        assert_eq!(r.header("x-cache"), Some("HIT"), "{purge}: cached before");
        let p = admin.post(addr, purge);
        purged_everywhere(&p);
        origin.reset_counts();
        let r = get(addr, "/slpurge/big.bin", &[]);
        assert_whole(&r, &body, purge);
        assert_eq!(r.header("x-cache"), Some("MISS"), "{purge}");
        let view = origin_view(&origin, "slpurge", "big.bin", &etag, LEN);
        view.assert_each_slice_once(purge);
        view.assert_every_slice_fetched(purge);
    }

    // Ten whole answers and one of 4 slices, each slice counted once, as a hit or a miss
    // (which one, with read-ahead, is the_access_log_and_metrics_count_* 's business).
    let st = admin.stats(addr, "slpurge");
    let (hits, misses) = (st["slice_hits"].as_u64(), st["slice_misses"].as_u64());
    assert!(
        hits.zip(misses)
            .is_some_and(|(h, m)| h + m == 10 * NSLICES + 4 && h >= 5 * NSLICES + 4),
        "slice hits and misses in the bucket's stats: {st}"
    );
}

#[test]
fn objects_not_sliced_stream_uncached() {
    let origin = Origin::start();
    origin.create_bucket("slno");
    // Above max_sliced_object_size (1 MiB here), and above max_object_size.
    let huge = pattern_bytes((3 << 20) / 2 + 7, 30);
    origin.put("slno", "huge.bin", &huge);
    // Sliceable by size (above max_object_size, below max_sliced_object_size).
    let sliceable = pattern_bytes(700_001, 31);
    for k in ["weak.bin", "none.bin", "strong.bin"] {
        origin.put("slno", k, &sliceable);
    }
    origin.set_headers(
        "slno",
        "weak.bin",
        Overrides::new().set("etag", "W/\"weak-1\""),
    );
    origin.set_headers("slno", "none.bin", Overrides::new().remove("etag"));
    // Not storable (RFC 9111): never sliced either.
    for (k, cc) in [
        ("nostore.bin", "no-store"),
        ("private.bin", "private, max-age=600"),
    ] {
        origin.put_with("slno", k, &sliceable, None, &[("cache-control", cc)]);
    }
    let corvid = Corvid::start(&config(
        free_port(),
        &origin.endpoint(),
        "slno",
        "max_sliced_object_size = \"1MiB\"\n",
        "",
    ));
    let addr = corvid.addr();
    for (key, body) in [
        ("huge.bin", &huge),
        ("weak.bin", &sliceable),
        ("none.bin", &sliceable),
        ("nostore.bin", &sliceable),
        ("private.bin", &sliceable),
    ] {
        let path = format!("/slno/{key}");
        for round in 0..2 {
            origin.reset_counts();
            let r = get(addr, &path, &[]);
            assert_whole(&r, body, &format!("{key} round {round}"));
            assert_eq!(r.header("x-cache"), Some("MISS"), "{key} round {round}");
            let seen = origin.requests_for("slno", key);
            assert_eq!(
                seen.len(),
                1,
                "{key} round {round}: one plain GET: {seen:?}"
            );
            assert!(seen[0].header("range").is_none(), "{seen:?}");
        }
        origin.reset_counts();
        let r = get(addr, &path, &[("range", "bytes=70000-140000")]);
        assert_partial(&r, 70_000, 140_000, body, key);
        assert_eq!(origin.count("GET"), 1, "{key}: ranges go to the origin");
    }

    // The same bytes with the origin's strong ETag are sliced: the second GET is a hit.
    fill(addr, "/slno/strong.bin", &sliceable);
    origin.reset_counts();
    let r = get(addr, "/slno/strong.bin", &[]);
    assert_whole(&r, &sliceable, "strong ETag, second GET");
    assert_eq!(r.header("x-cache"), Some("HIT"));
    assert_eq!(origin.total_count(), 0);

    // max_sliced_object_size = 0 turns slicing off.
    let corvid = Corvid::start(&config(
        free_port(),
        &origin.endpoint(),
        "slno",
        "max_sliced_object_size = 0\n",
        "",
    ));
    origin.put("slno", "plain.bin", &sliceable);
    for _ in 0..2 {
        origin.reset_counts();
        let r = get(corvid.addr(), "/slno/plain.bin", &[]);
        assert_whole(&r, &sliceable, "slicing off");
        assert_eq!(r.header("x-cache"), Some("MISS"));
        assert_eq!(origin.count("GET"), 1);
    }
}

/// The value of the series `name` with (at least) these labels, 0 when absent.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// The access log's object lines (no probes nor scrapes), once there are `n`.
fn log_lines(path: &Path, n: usize) -> Vec<Value> {
    let mut got = Vec::new();
    let ok = wait_until(Duration::from_secs(10), || {
        got = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .filter(|l| l["path"].as_str().is_some_and(|p| p.starts_with("/slog/")))
            .collect();
        got.len() >= n
    });
    assert!(ok, "{} lines in {}, wanted {n}", got.len(), path.display());
    got
}

/// A cold whole GET (every slice from the origin: 41 fetched), a warm one (41 from memory) and a
/// warm range over slices 1 to 3, with `cache` lines (`slice_readahead`): the access log's
/// `slices_cached`/`slices_fetched`, the slice hit and miss metrics and the hit bytes.
fn slices_counted(cache: &str) {
    let body = pattern_bytes(LEN as usize, 32);
    let (origin, _) = origin_with("slog", "big.bin", &body);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let log_toml = format!(
        "\n[log]\naccess = {}\nsample = 1.0\n",
        toml_str(&log.to_string_lossy())
    );
    let corvid = Corvid::start(&config(
        free_port(),
        &origin.endpoint(),
        "slog",
        cache,
        &log_toml,
    ));
    let addr = corvid.addr();
    fill(addr, "/slog/big.bin", &body);
    let bucket = [("bucket", "slog")];
    let memory = [("bucket", "slog"), ("layer", "memory")];
    // Counted on the worker after the answer: polled, then compared exactly.
    let settled = |name: &str, labels: &[(&str, &str)], want: u64| {
        let mut text = String::new();
        wait_until(Duration::from_secs(5), || {
            text = http::get(addr, "/metrics", &[]).text();
            metric(&text, name, labels) == want
        });
        // Only the series under test, for the failure messages.
        text.lines()
            .filter(|l| l.contains("slice") || l.starts_with("corvid_cache_hit_bytes_total"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let m = settled("corvid_cache_slice_misses_total", &bucket, NSLICES);
    assert_eq!(
        metric(&m, "corvid_cache_slice_misses_total", &bucket),
        NSLICES,
        "{m}"
    );
    assert_eq!(
        metric(&m, "corvid_cache_slice_hits_total", &bucket),
        0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "corvid_cache_hit_bytes_total", &bucket),
        0,
        "{m}"
    );

    let r = get(addr, "/slog/big.bin", &[]);
    assert_whole(&r, &body, "warm");
    // Slices 1, 2 and 3.
    let range = format!("bytes={}-{}", S + 1, 3 * S + 1);
    let r = get(addr, "/slog/big.bin", &[("range", &range)]);
    assert_partial(&r, S + 1, 3 * S + 1, &body, "warm range");
    let m = settled("corvid_cache_slice_hits_total", &memory, NSLICES + 3);
    assert_eq!(
        metric(&m, "corvid_cache_slice_hits_total", &memory),
        NSLICES + 3,
        "{m}"
    );
    assert_eq!(
        metric(&m, "corvid_cache_slice_misses_total", &bucket),
        NSLICES,
        "{m}"
    );
    assert_eq!(
        metric(&m, "corvid_cache_hit_bytes_total", &memory),
        LEN + 2 * S + 1,
        "{m}"
    );

    let lines = log_lines(&log, 3);
    let find = |cache: &str, status: u64| {
        lines
            .iter()
            .find(|l| l["cache"] == cache && l["status"] == status)
            .unwrap_or_else(|| panic!("no {status} {cache} line in {lines:?}"))
    };
    let miss = find("MISS", 200);
    assert_eq!(
        (
            miss["slices_cached"].as_u64(),
            miss["slices_fetched"].as_u64()
        ),
        (Some(0), Some(NSLICES)),
        "{miss}"
    );
    let hit = find("HIT", 200);
    assert_eq!(
        (
            hit["slices_cached"].as_u64(),
            hit["slices_fetched"].as_u64()
        ),
        (Some(NSLICES), Some(0)),
        "{hit}"
    );
    let range = find("HIT", 206);
    assert_eq!(
        (
            range["slices_cached"].as_u64(),
            range["slices_fetched"].as_u64()
        ),
        (Some(3), Some(0)),
        "{range}"
    );
}

#[test]
fn the_access_log_and_metrics_count_slices() {
    slices_counted("slice_readahead = 0\n");
}

/// Slices a response's own read-ahead fetched were fetched from the origin for it: a cold read
/// counts no slice hit, whatever the read-ahead window.
#[test]
fn the_access_log_and_metrics_count_read_ahead_slices_as_fetched() {
    slices_counted("");
}

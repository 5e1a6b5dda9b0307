//! Cache warming through the real binary (`POST`/`GET`/`DELETE /admin/cache/warm/...`), against
//! the s3s origin and moto: a warmed prefix — small objects over two listing pages, large ones
//! as slices, keys with spaces, `+`, unicode and `%` — is then served as hits with no origin
//! request; a second job skips what is fresh; a warm fill and a client share one origin GET;
//! a cancelled job starts no fill after its `DELETE` was answered; a job never has more origin
//! requests in flight than its concurrency; who may use the routes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::http::{self, RawResponse};
use crate::common::*;
use crate::jwt_support::{key, TestKey};

/// Small enough that the large objects below are sliced: 64 KiB whole, 16 KiB slices.
const CACHE: &str =
    "\n[cache]\nmax_object_size = \"64KiB\"\nslice_size = \"16KiB\"\nslice_readahead = 2\n";
const LARGE: usize = 200 * 1024;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

struct Admin {
    hs: TestKey,
}

impl Admin {
    fn new() -> Admin {
        Admin {
            hs: key("HS256", 0),
        }
    }

    /// `[jwt]` and `[admin]` with the claim role=admin.
    fn toml(&self) -> String {
        format!(
            "\n[jwt]\nalgorithm = \"HS256\"\nsecret = {}\n\n[admin]\nclaim = {{ name = \"role\", value = \"admin\" }}\n",
            toml_str(self.hs.secret.as_deref().unwrap()),
        )
    }

    fn token(&self, role: &str) -> String {
        self.hs
            .token(None, &json!({"exp": now() + 600, "role": role}))
    }
}

fn admin_request(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> RawResponse {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-length", "0")];
    if let Some(a) = &auth {
        headers.push(("authorization", a));
    }
    http::try_request(addr, method, path, &headers, Duration::from_secs(30)).unwrap()
}

fn json_of(r: &RawResponse, status: u16) -> Value {
    assert_eq!(r.status, status, "{}", r.text());
    serde_json::from_slice(&r.body).unwrap()
}

/// Starts warming `bucket`'s `prefix` (raw query value): the job's id.
fn start(addr: SocketAddr, token: &str, bucket: &str, prefix: &str) -> String {
    let r = admin_request(
        addr,
        "POST",
        &format!("/admin/cache/warm/{bucket}?prefix={prefix}"),
        Some(token),
    );
    let body = json_of(&r, 202);
    assert_eq!(body["state"], "running", "{body}");
    body["job"].as_str().expect("a job id").to_owned()
}

fn progress(addr: SocketAddr, token: &str, job: &str) -> Value {
    let r = admin_request(
        addr,
        "GET",
        &format!("/admin/cache/warm/{job}"),
        Some(token),
    );
    json_of(&r, 200)
}

/// The job's progress once `cond` holds for it (bounded wait, polling).
fn progress_when(addr: SocketAddr, token: &str, job: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let mut p = Value::Null;
    let ok = wait_until(Duration::from_secs(120), || {
        p = progress(addr, token, job);
        cond(&p)
    });
    assert!(ok, "the job never got there: {p}");
    p
}

fn done(addr: SocketAddr, token: &str, job: &str) -> Value {
    let p = progress_when(addr, token, job, |p| p["state"] != "running");
    assert_eq!(p["state"], "done", "{p}");
    p
}

/// Keys with every awkward character a key may have in a path.
fn tricky(i: usize) -> String {
    match i % 5 {
        0 => format!("w/plain-{i}.txt"),
        1 => format!("w/with space {i}.txt"),
        2 => format!("w/plus+{i}+x.txt"),
        3 => format!("w/caf\u{e9}-\u{2713}-{i}.txt"),
        _ => format!("w/100%-{i}.txt"),
    }
}

/// The objects of the warmed prefix: `n` small ones and two large ones (sliced), by key.
fn objects(n: usize) -> BTreeMap<String, Vec<u8>> {
    let mut all: BTreeMap<String, Vec<u8>> = (0..n)
        .map(|i| {
            (
                tricky(i),
                format!("object {i} of the warmed prefix").into_bytes(),
            )
        })
        .collect();
    all.insert("w/large one.bin".into(), pattern_bytes(LARGE, 1));
    all.insert("w/large+\u{e9}.bin".into(), pattern_bytes(LARGE + 123, 2));
    all
}

/// PUTs every object (8 at a time).
fn seed(put: impl Fn(&str, &[u8]) + Sync, all: &BTreeMap<String, Vec<u8>>) {
    let all: Vec<_> = all.iter().collect();
    std::thread::scope(|s| {
        for part in all.chunks(all.len().div_ceil(8)) {
            let put = &put;
            s.spawn(move || {
                for (k, v) in part {
                    put(k, v);
                }
            });
        }
    });
}

fn path(bucket: &str, key: &str) -> String {
    format!("/{bucket}/{}", encode_key(key))
}

/// Every object answers whole from the cache.
fn all_hits(addr: SocketAddr, bucket: &str, all: &BTreeMap<String, Vec<u8>>) {
    for (k, v) in all {
        let r = http::get(addr, &path(bucket, k), &[]);
        assert_eq!(r.status, 200, "{k}: {}", r.text());
        assert_eq!(r.header("x-cache"), Some("HIT"), "{k}");
        assert!(r.body == *v, "{k}: other bytes");
    }
}

fn size_of(all: &BTreeMap<String, Vec<u8>>) -> u64 {
    all.values().map(|v| v.len() as u64).sum()
}

/// The access log's lines of warm job `job`, once there are `n` (bounded wait).
fn warm_lines(log: &Path, job: &str, n: usize) -> Vec<Value> {
    let mut got = Vec::new();
    let ok = wait_until(Duration::from_secs(10), || {
        got = std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|l| l["warm"] == job)
            .collect();
        got.len() >= n
    });
    assert!(ok, "{} warm lines, wanted {n}", got.len());
    got
}

fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_warmed_prefix_is_served_from_the_cache_and_fresh_objects_are_skipped() {
    let origin = Origin::start();
    origin.create_bucket("warm-b");
    // More than one listing page (1,000 keys each), with keys outside the prefix beside it.
    let all = objects(1_010);
    seed(|k, v| origin.put("warm-b", k, v), &all);
    origin.put("warm-b", "other/x", b"not warmed");
    origin.put("warm-b", "wx", b"not warmed either");
    let admin = Admin::new();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let extra = format!(
        "{CACHE}{}\n[log]\naccess = {}\n",
        admin.toml(),
        toml_str(log.to_str().unwrap())
    );
    let corvid = Corvid::start(&one_bucket_toml(free_port(), &origin, "warm-b", "", &extra));
    let addr = corvid.addr();
    let token = admin.token("admin");

    // Who may: as for purges.
    let post = "/admin/cache/warm/warm-b?prefix=w/";
    assert_eq!(admin_request(addr, "POST", post, None).status, 401);
    assert_eq!(
        admin_request(addr, "POST", post, Some("not.a.token")).status,
        401
    );
    let reader = admin.token("reader");
    assert_eq!(admin_request(addr, "POST", post, Some(&reader)).status, 403);
    assert_eq!(
        admin_request(addr, "GET", "/admin/cache/warm/nope", Some(&reader)).status,
        403
    );
    let r = admin_request(addr, "POST", "/admin/cache/warm/nope", Some(&token));
    assert_eq!(r.status, 404, "unknown bucket: {}", r.text());
    let r = admin_request(addr, "GET", "/admin/cache/warm/0-0", Some(&token));
    assert_eq!(r.status, 404, "unknown job: {}", r.text());
    assert_eq!(
        admin_request(addr, "DELETE", "/admin/cache/warm/0-0", Some(&token)).status,
        404
    );
    assert_eq!(
        admin_request(addr, "PUT", "/admin/cache/warm/warm-b", Some(&token)).status,
        405
    );
    assert_eq!(origin.count("GET"), 0, "refused requests listed nothing");

    let job = start(addr, &token, "warm-b", "w%2F");
    let p = done(addr, &token, &job);
    let n = all.len() as u64;
    assert_eq!(p["bucket"], "warm-b");
    assert_eq!(p["prefix"], "w/");
    assert_eq!(p["pages"], 2, "{p}");
    assert_eq!(p["listing_done"], true);
    assert_eq!(p["listed"], json!({"objects": n, "bytes": size_of(&all)}));
    assert_eq!(p["filled"], p["listed"], "{p}");
    assert_eq!(p["skipped"]["objects"], 0);
    assert_eq!(p["failed"]["objects"], 0, "{p}");
    assert!(p["finished_unix_ms"].as_u64().is_some(), "{p}");

    // Every object of the prefix is a hit now, the large ones from their slices: the origin
    // is not asked again.
    origin.reset_counts();
    all_hits(addr, "warm-b", &all);
    assert_eq!(origin.total_count(), 0, "{:?}", origin.requests());
    // Keys outside the prefix were not warmed.
    for k in ["other/x", "wx"] {
        assert_eq!(
            http::get(addr, &path("warm-b", k), &[]).header("x-cache"),
            Some("MISS")
        );
    }

    // Warming again asks the origin for the listing only: everything is fresh.
    origin.reset_counts();
    let again = start(addr, &token, "warm-b", "w/");
    let p = done(addr, &token, &again);
    assert_ne!(again, job);
    assert_eq!(p["skipped"], p["listed"], "{p}");
    assert_eq!(p["filled"]["objects"], 0, "{p}");
    let gets = origin.requests_with("GET");
    assert_eq!(gets.len(), 2, "two listing pages only: {gets:?}");
    assert!(gets.iter().all(|g| g.path == "/warm-b/"), "{gets:?}");
    // The first job's progress is still there.
    assert_eq!(progress(addr, &token, &job)["filled"]["objects"], n);

    // Counted in metrics, and each fetch logged with its job.
    let text = http::get(addr, "/metrics", &[]).text();
    let series =
        |o: &str| format!("corvid_warm_objects_total{{bucket=\"warm-b\",outcome=\"{o}\"}}");
    assert_eq!(metric(&text, &series("filled")), n, "{text}");
    assert_eq!(metric(&text, &series("skipped")), n);
    assert_eq!(metric(&text, &series("failed")), 0);
    let lines = warm_lines(&log, &job, all.len());
    assert_eq!(lines.len(), all.len());
    let large = lines
        .iter()
        .find(|l| l["path"] == "/warm-b/w/large%20one.bin")
        .expect("the large object's line");
    assert_eq!(large["status"], 200);
    assert_eq!(large["method"], "GET");
    assert_eq!(large["bucket"], "warm-b");
    assert_eq!(large["bytes"], LARGE as u64);
    assert_eq!(large["upstream"], 200);
    assert!(warm_lines(&log, &again, 0).is_empty(), "skipped: no fetch");
}

#[test]
fn a_cancelled_job_starts_no_fill_and_concurrency_is_bounded() {
    let origin = Origin::start();
    origin.create_bucket("cancel-b");
    let all: BTreeMap<String, Vec<u8>> = (0..40)
        .map(|i| (format!("c/{i:03}"), vec![b'c'; 100]))
        .collect();
    seed(|k, v| origin.put("cancel-b", k, v), &all);
    let admin = Admin::new();
    // 8 configured, but half of a pool of 4 connections: 2.
    let extra = format!("\n[cache]\nwarm_concurrency = 8\n{}", admin.toml());
    let corvid = Corvid::start(&one_bucket_toml(
        free_port(),
        &origin,
        "cancel-b",
        "max_idle_connections = 4",
        &extra,
    ));
    let addr = corvid.addr();
    let token = admin.token("admin");
    origin.reset_counts();
    origin.set_delay(Duration::from_millis(100));

    let job = start(addr, &token, "cancel-b", "c/");
    // Progress moves while it runs.
    let p = progress_when(addr, &token, &job, |p| {
        p["filled"]["objects"].as_u64() >= Some(4)
    });
    assert_eq!(p["concurrency"], 2, "{p}");
    assert_eq!(p["state"], "running", "{p}");
    assert_eq!(p["listed"]["objects"], 40);

    let r = admin_request(
        addr,
        "DELETE",
        &format!("/admin/cache/warm/{job}"),
        Some(&token),
    );
    let cancelled = json_of(&r, 200);
    assert!(
        ["cancelling", "cancelled"].contains(&cancelled["state"].as_str().unwrap()),
        "{cancelled}"
    );
    let at_delete = origin.count("GET");
    let p = progress_when(addr, &token, &job, |p| p["state"] == "cancelled");
    let at_end = origin.count("GET");
    // Only requests that had passed their check when the DELETE was answered (at most one per
    // place) reach the origin afterwards; then nothing of the job runs any more.
    assert!(
        at_end <= at_delete + 2,
        "{at_delete} origin GETs at the DELETE, {at_end} at the end"
    );
    let handled = ["filled", "skipped", "failed"]
        .iter()
        .map(|o| p[o]["objects"].as_u64().unwrap())
        .sum::<u64>();
    assert!(handled < 40, "the job stopped early: {p}");
    assert_eq!(p["failed"]["objects"], 0, "{p}");
    assert_eq!(origin.count("GET"), at_end);
    assert_eq!(
        origin.count("GET"),
        1 + p["filled"]["objects"].as_u64().unwrap(),
        "one listing, one GET per filled object: {p}"
    );
    // Never more origin requests at once than the job's concurrency (its listing included),
    // and it did use them.
    assert_eq!(origin.peak_in_flight(), 2);
    origin.set_delay(Duration::ZERO);
    let last = path("cancel-b", "c/039");
    assert_eq!(http::get(addr, &last, &[]).header("x-cache"), Some("MISS"));
}

#[test]
fn a_warm_fill_and_a_client_share_one_origin_request() {
    let origin = Origin::start();
    origin.create_bucket("share-b");
    let body = pattern_bytes(40_000, 7);
    origin.put("share-b", "s/shared", &body);
    let admin = Admin::new();
    let corvid = Corvid::start(&one_bucket_toml(
        free_port(),
        &origin,
        "share-b",
        "",
        &admin.toml(),
    ));
    let addr = corvid.addr();
    let token = admin.token("admin");
    origin.reset_counts();
    origin.set_delay(Duration::from_millis(400));

    let job = start(addr, &token, "share-b", "s/");
    // The warm job's GET of the object has reached the origin (which holds it 400 ms): a
    // client asking now joins that fill.
    assert!(wait_until(Duration::from_secs(10), || origin
        .requests_for("share-b", "s/shared")
        .len()
        == 1));
    let r = http::get(addr, "/share-b/s/shared", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-cache"), Some("MISS"));
    assert!(r.body == body);
    let p = done(addr, &token, &job);
    assert_eq!(p["filled"]["objects"], 1, "{p}");
    assert_eq!(origin.requests_for("share-b", "s/shared").len(), 1);
    assert_eq!(
        http::get(addr, "/share-b/s/shared", &[]).header("x-cache"),
        Some("HIT")
    );
}

#[test]
fn warming_against_moto() {
    let moto = Moto::start();
    moto.create_bucket("moto-warm");
    let all = objects(150);
    seed(
        |k, v| {
            moto.put_with("moto-warm", k, v, None, &[]);
        },
        &all,
    );
    moto.put_with("moto-warm", "elsewhere", b"x", None, &[]);
    let admin = Admin::new();
    let toml = format!(
        "{}{}{CACHE}{}",
        server_toml(free_port()),
        bucket_toml_for("moto-warm", "/moto-warm", &moto.endpoint(), "moto-warm", ""),
        admin.toml()
    );
    let corvid = Corvid::start(&toml);
    let addr = corvid.addr();
    let token = admin.token("admin");

    let job = start(addr, &token, "moto-warm", "w/");
    let p = done(addr, &token, &job);
    let n = all.len() as u64;
    assert_eq!(
        p["listed"],
        json!({"objects": n, "bytes": size_of(&all)}),
        "{p}"
    );
    assert_eq!(p["filled"], p["listed"], "{p}");
    // moto answers keys URL-encoded (`encoding-type=url`): every one was decoded right, or
    // its GET would have failed.
    all_hits(addr, "moto-warm", &all);
    let again = start(addr, &token, "moto-warm", "w/");
    let p = done(addr, &token, &again);
    assert_eq!(p["skipped"]["objects"], n, "{p}");
    assert_eq!(
        http::get(addr, "/moto-warm/elsewhere", &[]).header("x-cache"),
        Some("MISS")
    );
}

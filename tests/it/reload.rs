//! Config reload through the real binary: SIGHUP and `POST /admin/reload` apply buckets, TTLs
//! and JWT keys without dropping connections or the cache; a bad file is refused and changes
//! nothing; settings that need a restart are reported; under continuous load no request fails.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::http::{self, Conn, RawResponse};
use crate::common::*;
use crate::jwt_support::{key, TestKey};

/// An origin with buckets `bkt-a` (key `k`) and `bkt-b` (key `k`), and an HS256 admin key.
struct Setup {
    origin: Origin,
    admin_key: TestKey,
    port: u16,
}

impl Setup {
    fn new() -> Setup {
        let origin = Origin::start();
        for b in ["bkt-a", "bkt-b"] {
            origin.create_bucket(b);
            origin.put(b, "k", format!("{b}/k").as_bytes());
        }
        Setup {
            origin,
            admin_key: key("HS256", 0),
            port: free_port(),
        }
    }

    /// `[server]`, bucket `a` (with `a_extra`), bucket `b` when `with_b`, HS256 `[jwt]` with
    /// `secret` and `[admin]`, then `extra`.
    fn config(&self, server_extra: &str, a_extra: &str, with_b: bool, extra: &str) -> String {
        let b = if with_b {
            bucket_toml_for("b", "/b", &self.origin.endpoint(), "bkt-b", "")
        } else {
            String::new()
        };
        format!(
            "{}{server_extra}\n{}{b}\n[jwt]\nalgorithm = \"HS256\"\nsecret = {}\n\n[admin]\nclaim = {{ name = \"role\", value = \"admin\" }}\n{extra}",
            server_toml(self.port),
            bucket_toml_for("a", "/a", &self.origin.endpoint(), "bkt-a", a_extra),
            toml_str(self.admin_key.secret.as_deref().unwrap()),
        )
    }

    fn admin_token(&self) -> String {
        self.admin_key
            .token(None, &json!({"exp": now() + 600, "role": "admin"}))
    }
}

/// `POST /admin/reload` with `token`: the status and the JSON answer.
fn admin_reload(addr: SocketAddr, token: &str) -> (u16, Value) {
    let auth = format!("Bearer {token}");
    let r = http::try_request(
        addr,
        "POST",
        "/admin/reload",
        &[("content-length", "0"), ("authorization", &auth)],
        Duration::from_secs(20),
    )
    .unwrap();
    let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    (r.status, v)
}

fn reloads(addr: SocketAddr, outcome: &str) -> u64 {
    let text = http::get(addr, "/metrics", &[]).text();
    let series = format!("corvid_config_reloads_total{{outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series)?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

#[test]
fn sighup_applies_buckets_and_ttls_keeping_the_cache_and_open_connections() {
    let s = Setup::new();
    let corvid = Corvid::start(&s.config("", "ttl = \"1h\"", false, ""));
    let addr = corvid.addr();
    let mut conn = Conn::connect(addr);
    let first = conn.request("GET", "/a/k", &[]);
    assert_eq!(first.header("x-cache"), Some("MISS"));
    assert_eq!(
        conn.request("GET", "/a/k", &[]).header("x-cache"),
        Some("HIT")
    );
    assert_eq!(http::get(addr, "/b/k", &[]).status, 404, "no bucket b yet");

    std::fs::write(corvid.config_path(), s.config("", "ttl = \"2h\"", true, "")).unwrap();
    corvid.signal(libc::SIGHUP);
    let applied = wait_until(Duration::from_secs(10), || reloads(addr, "ok") == 1);
    assert!(
        applied,
        "the SIGHUP reload was applied: {}",
        corvid.stderr()
    );

    // The new bucket is served, the open connection still works, the cache survived.
    let b = http::get(addr, "/b/k", &[]);
    assert_eq!((b.status, b.body.as_slice()), (200, &b"bkt-b/k"[..]));
    let again = conn.request("GET", "/a/k", &[]);
    assert_eq!(again.header("x-cache"), Some("HIT"));
    assert_eq!(again.body, b"bkt-a/k");
    let gets = s.origin.requests_for("bkt-a", "k");
    let gets = gets.iter().filter(|r| r.method == "GET").count();
    assert_eq!(gets, 1, "one origin fetch in all");
    // The new TTL applies to what is stored from now on: a new entry says 2h.
    s.origin.put("bkt-a", "k2", b"two");
    assert_eq!(http::get(addr, "/a/k2", &[]).status, 200);
    assert!(
        corvid.stderr().contains("configuration reloaded"),
        "{}",
        corvid.stderr()
    );

    // Removing the bucket again, and a's TTL to 0: b's requests are 404s from then on (its
    // series stay), and what a stores now is revalidated at every use.
    std::fs::write(
        corvid.config_path(),
        s.config("", "ttl = \"0s\"", false, ""),
    )
    .unwrap();
    corvid.signal(libc::SIGHUP);
    assert!(wait_until(Duration::from_secs(10), || reloads(addr, "ok") == 2));
    assert_eq!(http::get(addr, "/b/k", &[]).status, 404);
    s.origin.put("bkt-a", "k3", b"three");
    assert_eq!(
        http::get(addr, "/a/k3", &[]).header("x-cache"),
        Some("MISS")
    );
    assert_eq!(
        http::get(addr, "/a/k3", &[]).header("x-cache"),
        Some("REVALIDATED")
    );
    let text = http::get(addr, "/metrics", &[]).text();
    assert!(
        text.contains("corvid_cache_misses_total{bucket=\"b\"} 1"),
        "{text}"
    );
}

#[test]
fn a_bad_file_is_refused_with_the_reason_and_restart_settings_are_reported() {
    let s = Setup::new();
    let corvid = Corvid::start(&s.config("", "", false, ""));
    let addr = corvid.addr();
    let admin = s.admin_token();
    assert_eq!(http::get(addr, "/a/k", &[]).status, 200);

    // Without the admin claim: refused before anything is read.
    let (status, _) = admin_reload(addr, "not-a-token");
    assert_eq!(status, 401);

    // A file that does not validate: 422 naming the key, nothing changes.
    let good = std::fs::read_to_string(corvid.config_path()).unwrap();
    let bad = good.replace("region = ", "regio = ");
    std::fs::write(corvid.config_path(), &bad).unwrap();
    let (status, v) = admin_reload(addr, &admin);
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["outcome"], "error");
    let why = v["error"].as_str().unwrap();
    assert!(why.contains("region"), "{why}");
    assert_eq!(http::get(addr, "/a/k", &[]).header("x-cache"), Some("HIT"));
    assert_eq!(reloads(addr, "error"), 1);
    assert_eq!(reloads(addr, "ok"), 0);
    // Not TOML at all: refused too.
    std::fs::write(corvid.config_path(), "[server\nlisten=").unwrap();
    let (status, v) = admin_reload(addr, &admin);
    assert_eq!((status, v["outcome"].as_str()), (422, Some("error")), "{v}");

    // A file changing what needs a restart: applied, the rest reported as waiting.
    std::fs::write(
        corvid.config_path(),
        s.config("idle_timeout = \"7s\"", "ttl = \"5m\"", true, ""),
    )
    .unwrap();
    let (status, v) = admin_reload(addr, &admin);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["restart_required"], json!(["server.idle_timeout"]), "{v}");
    let applied: Vec<&str> = v["applied"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(applied, ["buckets.a (changed)", "buckets.b (added)"], "{v}");
    assert_eq!(http::get(addr, "/b/k", &[]).status, 200);
    assert!(
        corvid.stderr().contains("needs a restart"),
        "{}",
        corvid.stderr()
    );
}

#[test]
fn jwt_keys_rotate_on_reload() {
    let s = Setup::new();
    let old = key("HS256", 1);
    let new = key("HS256", 2);
    let with_key = |k: &TestKey| {
        s.config("", "auth = true", false, "").replace(
            &toml_str(s.admin_key.secret.as_deref().unwrap()),
            &toml_str(k.secret.as_deref().unwrap()),
        )
    };
    let corvid = Corvid::start(&with_key(&old));
    let addr = corvid.addr();
    let token = |k: &TestKey| {
        let t = k.token(None, &json!({"exp": now() + 600, "role": "admin"}));
        format!("Bearer {t}")
    };
    let get = |k: &TestKey| http::get(addr, "/a/k", &[("authorization", &token(k))]).status;
    assert_eq!((get(&old), get(&new)), (200, 401));

    std::fs::write(corvid.config_path(), with_key(&new)).unwrap();
    let t = old.token(None, &json!({"exp": now() + 600, "role": "admin"}));
    let (status, v) = admin_reload(addr, &t);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["applied"], json!(["jwt"]), "{v}");
    // The old key's tokens no longer pass, even the one cached as verified.
    assert_eq!((get(&old), get(&new)), (401, 200));
}

/// Load on keep-alive and new connections while the config is reloaded ten times (bucket b
/// added and removed, TTLs changed): no request to bucket `a` fails. About 2 s.
#[test]
fn reloads_under_continuous_load_fail_no_request() {
    let s = Setup::new();
    let corvid = Corvid::start(&s.config("", "", false, ""));
    let addr = corvid.addr();
    let admin = s.admin_token();
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for keep_alive in [true, true, false, false] {
        let (stop, ok, failed) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed));
        load.push(std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut conn = keep_alive.then(|| Conn::connect(addr));
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let r: RawResponse = match conn.as_mut() {
                    Some(c) => c.request("GET", "/a/k", &[]),
                    None => http::get(addr, "/a/k", &[]),
                };
                if r.status == 200 && r.body == b"bkt-a/k" {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                    failures.push(r.status);
                }
            }
            failures
        }));
    }
    for i in 0..10 {
        let ttl = format!("ttl = \"{}m\"", i + 1);
        std::fs::write(corvid.config_path(), s.config("", &ttl, i % 2 == 0, "")).unwrap();
        let (status, v) = admin_reload(addr, &admin);
        assert_eq!(status, 200, "{v}");
        let before = ok.load(Ordering::Relaxed);
        // Requests flow on the new generation before the next reload.
        assert!(wait_until(Duration::from_secs(10), || ok
            .load(Ordering::Relaxed)
            > before + 20));
    }
    stop.store(true, Ordering::Relaxed);
    let statuses: Vec<u16> = load.into_iter().flat_map(|t| t.join().unwrap()).collect();
    assert!(statuses.is_empty(), "failed requests: {statuses:?}");
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert!(ok.load(Ordering::Relaxed) > 200);
    assert_eq!(reloads(addr, "ok"), 10);
}

/// A request in flight when its bucket is removed finishes on the config it started with
/// (the origin stalls mid-body for 0.8 s while the reload is applied).
#[test]
fn a_request_in_flight_finishes_on_the_config_it_started_with() {
    let s = Setup::new();
    let corvid = Corvid::start(&s.config("", "", true, ""));
    let addr = corvid.addr();
    let body = "x".repeat(4000);
    let slow = FaultReply::xml(200, &body).stall(Duration::from_millis(800));
    s.origin.fail_next_with(1, slow);
    let in_flight = std::thread::spawn(move || http::get(addr, "/b/k", &[]));
    // The GET, not the PUT that seeded the object: the request is in flight once the origin
    // has it.
    let asked = wait_until(Duration::from_secs(10), || {
        s.origin
            .requests_for("bkt-b", "k")
            .iter()
            .any(|r| r.method == "GET")
    });
    assert!(asked, "the origin was asked");

    std::fs::write(corvid.config_path(), s.config("", "", false, "")).unwrap();
    let (status, v) = admin_reload(addr, &s.admin_token());
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["applied"], json!(["buckets.b (removed)"]));
    assert_eq!(
        http::get(addr, "/b/k", &[]).status,
        404,
        "b is gone for new requests"
    );

    let r = in_flight.join().unwrap();
    assert_eq!((r.status, r.body.len()), (200, body.len()));
    assert_eq!(r.body, body.as_bytes());
}

/// Changed credentials apply on reload: a bucket signing with a wrong secret (the origin
/// answers 403) signs with the right one after the reload, on the same keep-alive connection.
#[test]
fn changed_credentials_apply_on_reload() {
    let s = Setup::new();
    let right = s.config("", "", false, "");
    let wrong = right.replace(&toml_str(SECRET_KEY), &toml_str("not-the-secret"));
    assert_ne!(wrong, right);
    let corvid = Corvid::start(&wrong);
    let addr = corvid.addr();
    let mut conn = Conn::connect(addr);
    assert_eq!(conn.request("GET", "/a/k", &[]).status, 403);

    std::fs::write(corvid.config_path(), &right).unwrap();
    let (status, v) = admin_reload(addr, &s.admin_token());
    assert_eq!(
        (status, v["applied"].clone()),
        (200, json!(["buckets.a (changed)"]))
    );
    let r = conn.request("GET", "/a/k", &[]);
    assert_eq!((r.status, r.body.as_slice()), (200, &b"bkt-a/k"[..]));
}

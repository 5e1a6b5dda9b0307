//! The admin API through the real binary: who may use it (network, token, admin claim),
//! purges of every scope (hard and soft), exact stats, metrics, the separate admin listener,
//! and a purge reaching a second instance through Redis.

use serde_json::{json, Value};

use crate::common::http::{self, RawResponse};
use crate::common::redis_server::RedisServer;
use crate::common::*;
use crate::jwt_support::{key, TestKey};

struct Setup {
    origin: Origin,
    hs: TestKey,
}

impl Setup {
    fn new() -> Setup {
        let origin = Origin::start();
        for b in ["bkt-a", "bkt-b"] {
            origin.create_bucket(b);
        }
        for (b, k) in [
            ("bkt-a", "x"),
            ("bkt-a", "y"),
            ("bkt-a", "img/1"),
            ("bkt-b", "z"),
        ] {
            origin.put(b, k, format!("{b}/{k}").as_bytes());
        }
        Setup {
            origin,
            hs: key("HS256", 0),
        }
    }

    /// Two buckets `a` and `b`, HS256, admin claim role=admin; `admin_extra` goes into [admin],
    /// `extra` after everything.
    fn config(&self, port: u16, admin_extra: &str, extra: &str) -> String {
        format!(
            "{}{}{}\n[jwt]\nalgorithm = \"HS256\"\nsecret = {}\n\n[admin]\nclaim = {{ name = \"role\", value = \"admin\" }}\n{admin_extra}\n{extra}",
            server_toml(port),
            bucket_toml_for("a", "/a", &self.origin.endpoint(), "bkt-a", ""),
            bucket_toml_for("b", "/b", &self.origin.endpoint(), "bkt-b", ""),
            toml_str(self.hs.secret.as_deref().unwrap()),
        )
    }

    fn token(&self, role: &str) -> String {
        self.hs
            .token(None, &json!({"exp": now() + 600, "role": role}))
    }
}

fn post(addr: std::net::SocketAddr, path: &str, token: Option<&str>) -> RawResponse {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-length", "0")];
    if let Some(a) = &auth {
        headers.push(("authorization", a));
    }
    http::try_request(
        addr,
        "POST",
        path,
        &headers,
        std::time::Duration::from_secs(10),
    )
    .unwrap()
}

fn get_admin(addr: std::net::SocketAddr, path: &str, token: &str) -> RawResponse {
    http::get(addr, path, &[("authorization", &format!("Bearer {token}"))])
}

fn x_cache(addr: std::net::SocketAddr, path: &str) -> String {
    let r = http::get(addr, path, &[]);
    assert_eq!(r.status, 200, "{path}");
    r.header("x-cache").unwrap_or("").to_string()
}

fn json_of(r: &RawResponse) -> Value {
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_slice(&r.body).unwrap()
}

#[test]
fn purges_stats_and_who_may_use_them() {
    let s = Setup::new();
    let corvid = Corvid::start(&s.config(free_port(), "", ""));
    let addr = corvid.addr();
    let admin = s.token("admin");
    for p in ["/a/x", "/a/y", "/a/img/1", "/b/z"] {
        assert_eq!(x_cache(addr, p), "MISS");
    }
    for _ in 0..3 {
        assert_eq!(x_cache(addr, "/a/x"), "HIT");
    }

    // Who may: no token 401, invalid 401, valid without the claim 403.
    let r = post(addr, "/admin/cache/purge/a", None);
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert_eq!(
        post(addr, "/admin/cache/purge/a", Some("not.a.token")).status,
        401
    );
    let other = key("HS256", 1).token(None, &json!({"exp": now() + 600, "role": "admin"}));
    assert_eq!(post(addr, "/admin/cache/purge/a", Some(&other)).status, 401);
    assert_eq!(
        post(addr, "/admin/cache/purge/a", Some(&s.token("reader"))).status,
        403
    );
    assert_eq!(x_cache(addr, "/a/x"), "HIT", "nothing was purged");

    // Stats are exact: a has 3 misses and 4 hits, b 1 miss.
    let st = json_of(&get_admin(addr, "/admin/cache/stats", &admin));
    assert_eq!(st["buckets"]["a"]["misses"], 3, "{st}");
    assert_eq!(st["buckets"]["a"]["hits"], 4, "{st}");
    assert_eq!(st["buckets"]["b"]["misses"], 1, "{st}");
    assert_eq!(st["buckets"]["b"]["hits"], 0, "{st}");
    assert_eq!(st["buckets"]["a"]["entries"], 3, "{st}");
    assert_eq!(st["layers"]["memory"]["entries"], 4, "{st}");
    let one = json_of(&get_admin(addr, "/admin/cache/stats/b", &admin));
    assert_eq!(one["misses"], 1);
    assert_eq!(
        get_admin(addr, "/admin/cache/stats/nope", &admin).status,
        404
    );

    // Object purge: removed, then a MISS; purging what is not cached is a 404.
    let r = json_of(&post(addr, "/admin/cache/purge/a/x", Some(&admin)));
    assert_eq!(r["purged"], 1, "{r}");
    assert!(r["bytes"].as_u64().unwrap() > 0);
    assert_eq!(x_cache(addr, "/a/x"), "MISS");
    assert_eq!(
        post(addr, "/admin/cache/purge/a/never", Some(&admin)).status,
        404
    );
    assert_eq!(
        post(addr, "/admin/cache/purge/nope", Some(&admin)).status,
        404
    );
    assert_eq!(
        post(addr, "/admin/cache/purge/nope/x", Some(&admin)).status,
        404
    );
    let r = get_admin(addr, "/admin/cache/purge/a", &admin);
    assert_eq!((r.status, r.header("allow")), (405, Some("POST")));

    // Prefix purge: only keys under it.
    let r = json_of(&post(
        addr,
        "/admin/cache/purge/a?prefix=img/",
        Some(&admin),
    ));
    assert_eq!(r["purged"], 1, "{r}");
    assert_eq!(x_cache(addr, "/a/img/1"), "MISS");
    assert_eq!(x_cache(addr, "/a/y"), "HIT");

    // Refilled after the purges above.
    assert_eq!(x_cache(addr, "/a/x"), "HIT");
    assert_eq!(x_cache(addr, "/a/img/1"), "HIT");
    // Bucket purge leaves the other bucket cached.
    let r = json_of(&post(addr, "/admin/cache/purge/a", Some(&admin)));
    assert_eq!(r["purged"], 3, "{r}");
    assert_eq!(x_cache(addr, "/a/y"), "MISS");
    assert_eq!(x_cache(addr, "/b/z"), "HIT");

    // Soft purge: the entry stays, the next request revalidates (304 from the origin, no body).
    let before = s.origin.conditional_count(304);
    let r = json_of(&post(
        addr,
        "/admin/cache/purge/b/z?soft=true",
        Some(&admin),
    ));
    assert_eq!(
        (r["purged"].as_u64(), r["soft"].as_bool()),
        (Some(1), Some(true))
    );
    let got = http::get(addr, "/b/z", &[]);
    assert_eq!(got.header("x-cache"), Some("REVALIDATED"));
    assert_eq!(got.body, b"bkt-b/z");
    assert_eq!(s.origin.conditional_count(304), before + 1);
    assert_eq!(x_cache(addr, "/b/z"), "HIT");

    // Everything: what is cached now is a/y (refilled above) and b/z.
    let r = json_of(&post(addr, "/admin/cache/purge", Some(&admin)));
    assert_eq!(r["purged"], 2, "{r}");
    assert_eq!(x_cache(addr, "/b/z"), "MISS");

    let m = http::get(addr, "/metrics", &[]).text();
    for series in [
        "corvid_purges_total{scope=\"object\",soft=\"false\"} 2",
        "corvid_purges_total{scope=\"object\",soft=\"true\"} 1",
        "corvid_purges_total{scope=\"prefix\",soft=\"false\"} 1",
        "corvid_purges_total{scope=\"bucket\",soft=\"false\"} 1",
        "corvid_purges_total{scope=\"all\",soft=\"false\"} 1",
        "corvid_admin_requests_total{route=\"stats\",status=\"2xx\"} 2",
        "corvid_auth_failures_total{reason=\"admin_claim\"} 1",
    ] {
        assert!(m.contains(series), "missing {series} in\n{m}");
    }
}

#[test]
fn admin_listener_and_allowed_networks() {
    let s = Setup::new();
    let admin_port = free_port();
    let corvid = Corvid::start(&s.config(
        free_port(),
        &format!("listen = \"127.0.0.1:{admin_port}\""),
        "",
    ));
    let public = corvid.addr();
    let admin_addr: std::net::SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    let token = s.token("admin");
    assert_eq!(get_admin(public, "/admin/cache/stats", &token).status, 404);
    assert_eq!(http::get(public, "/metrics", &[]).status, 404);
    assert_eq!(x_cache(public, "/a/x"), "MISS");
    assert_eq!(
        get_admin(admin_addr, "/admin/cache/stats", &token).status,
        200
    );
    assert_eq!(http::get(admin_addr, "/metrics", &[]).status, 200);
    assert_eq!(http::get(admin_addr, "/health", &[]).status, 200);
    assert_eq!(
        http::get(admin_addr, "/a/x", &[]).status,
        404,
        "no objects here"
    );
    drop(corvid);

    // A network list that excludes loopback: 403 before any token work.
    let corvid = Corvid::start(&s.config(free_port(), "allow_networks = [\"10.0.0.0/8\"]", ""));
    let r = get_admin(corvid.addr(), "/admin/cache/stats", &token);
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(
        http::get(corvid.addr(), "/admin/cache/stats", &[]).status,
        403,
        "the network is checked first"
    );
}

#[test]
fn a_purge_on_one_instance_reaches_another_through_redis() {
    let s = Setup::new();
    let redis = RedisServer::start(&[]);
    let extra = format!("[cache.redis]\nurl = {}\n", toml_str(&redis.url()));
    let a = Corvid::start(&s.config(free_port(), "", &extra));
    let b = Corvid::start(&s.config(free_port(), "", &extra));
    assert_eq!(x_cache(a.addr(), "/a/x"), "MISS");
    assert!(wait_until(std::time::Duration::from_secs(5), || redis
        .key_count()
        == Some(1)));
    assert_eq!(x_cache(b.addr(), "/a/x"), "HIT");
    assert_eq!(x_cache(b.addr(), "/a/x"), "HIT", "now in b's memory");
    let r = json_of(&post(
        a.addr(),
        "/admin/cache/purge/a/x",
        Some(&s.token("admin")),
    ));
    assert_eq!(r["layers"]["redis"]["reachable"], true, "{r}");
    assert!(
        wait_until(std::time::Duration::from_secs(5), || {
            http::get(b.addr(), "/a/x", &[]).header("x-cache") == Some("MISS")
        }),
        "b dropped its copy"
    );
}

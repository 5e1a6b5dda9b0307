//! `rediss://` through corvid, against a real redis-server speaking only TLS (`--port 0
//! --tls-port P`) with a certificate from a CA made by the test: entries shared between
//! instances, purges broadcast over a TLS subscription, a login over TLS, an untrusted
//! certificate degrading to misses, and the `ca_file` rules as `check` and `serve` apply them.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::common::http;
use crate::common::redis_server::RedisServer;
use crate::common::*;
use crate::jwt_support::key;
use crate::redis::{check_verdict, fills_and_serves, sample, serve_verdict};

const ERRORS: &str = "corvid_cache_errors_total{layer=\"redis\"}";

/// A TLS-only redis-server with a fresh test CA; the files must outlive the server.
fn tls_redis(extra: &[&str]) -> (RedisServer, ServerCertFiles) {
    let files = generate_server_cert_files();
    let redis = RedisServer::start_tls(
        &files.cert_pem,
        &files.key_pem,
        &files.ca_pem,
        files.client_config.clone(),
        extra,
    );
    (redis, files)
}

/// One bucket `rds`, memory tier, Redis at `url` (`ca_file` when given); `extra` at the end.
/// The timeout is generous: a debug build on a loaded 2-core machine, TLS handshake included.
fn config(port: u16, origin: &Origin, url: &str, ca_file: Option<&Path>, extra: &str) -> String {
    let ca = ca_file.map_or(String::new(), |p| {
        format!("ca_file = {}\n", toml_str(&p.to_string_lossy()))
    });
    format!(
        "{}{}\n[cache.memory]\ncapacity = \"16MiB\"\n\n[cache.redis]\nurl = {}\n{ca}timeout = \"500ms\"\n{extra}",
        server_toml(port),
        bucket_toml("rds", "/rds", origin),
        toml_str(url),
    )
}

/// [`fills_and_serves`] over TLS, trusting `ca`.
fn fills_and_serves_tls(redis: &RedisServer, url: &str, ca: &Path, secret: &str) {
    fills_and_serves(redis, url, secret, &|port, origin| {
        config(port, origin, url, Some(ca), "")
    });
}

#[test]
fn a_second_instance_hits_what_the_first_filled_over_tls() {
    let (redis, files) = tls_redis(&[]);
    assert!(redis.url().starts_with("rediss://127.0.0.1:"));
    // The certificate names 127.0.0.1 as an IP address SAN: that is what is verified.
    fills_and_serves_tls(&redis, &redis.url(), &files.ca_pem, "");
    // And "localhost" as a DNS name (resolved off the workers, verified by name).
    let url = format!("rediss://localhost:{}", redis.port);
    redis.command(&["FLUSHALL"]);
    fills_and_serves_tls(&redis, &url, &files.ca_pem, "");
}

#[test]
fn rediss_with_a_password_logs_in_over_tls() {
    let (redis, files) = tls_redis(&["--requirepass", "tls:pa@ss"]);
    let url = format!("rediss://:tls%3Apa%40ss@127.0.0.1:{}", redis.port);
    fills_and_serves_tls(&redis, &url, &files.ca_pem, "tls:pa@ss");

    // The wrong password over TLS: misses, counted, the origin answers, nothing leaks.
    let origin = Origin::start();
    origin.create_bucket("rds");
    origin.put("rds", "k", b"value");
    let url = format!("rediss://:wr0ngpw@127.0.0.1:{}", redis.port);
    let c = Corvid::start(&config(free_port(), &origin, &url, Some(&files.ca_pem), ""));
    for _ in 0..3 {
        let r = http::get(c.addr(), "/rds/k", &[]);
        assert_eq!((r.status, r.body.as_slice()), (200, b"value".as_slice()));
    }
    let m = http::get(c.addr(), "/metrics", &[]).text();
    assert!(sample(&m, ERRORS) > 0, "{m}");
    let logs = c.stderr();
    assert!(logs.contains("AUTH refused"), "{logs}");
    assert!(!logs.contains("wr0ngpw"), "the password was logged: {logs}");
}

#[test]
fn a_purge_on_one_instance_reaches_another_over_tls() {
    let (redis, files) = tls_redis(&[]);
    let origin = Origin::start();
    origin.create_bucket("rds");
    origin.put("rds", "x", b"purge me");
    let hs = key("HS256", 0);
    let admin = format!(
        "\n[jwt]\nalgorithm = \"HS256\"\nsecret = {}\n\n[admin]\nclaim = {{ name = \"role\", value = \"admin\" }}\n",
        toml_str(hs.secret.as_deref().unwrap())
    );
    let cfg = |port| config(port, &origin, &redis.url(), Some(&files.ca_pem), &admin);
    let a = Corvid::start(&cfg(free_port()));
    let b = Corvid::start(&cfg(free_port()));
    let x_cache = |c: &Corvid| {
        let r = http::get(c.addr(), "/rds/x", &[]);
        assert_eq!((r.status, r.body.as_slice()), (200, b"purge me".as_slice()));
        r.header("x-cache").unwrap_or("").to_string()
    };
    assert_eq!(x_cache(&a), "MISS");
    assert!(wait_until(Duration::from_secs(5), || redis.key_count() == Some(1)));
    assert_eq!(x_cache(&b), "HIT");
    assert_eq!(x_cache(&b), "HIT", "now in b's memory");

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = hs.token(None, &json!({"exp": now + 600, "role": "admin"}));
    let auth = format!("Bearer {token}");
    let r = http::try_request(
        a.addr(),
        "POST",
        "/admin/cache/purge/rds/x",
        &[("content-length", "0"), ("authorization", &auth)],
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let r: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(r["layers"]["redis"]["reachable"], true, "{r}");
    // b's own memory copy goes only through the broadcast: b's subscription is TLS.
    assert!(
        wait_until(Duration::from_secs(5), || x_cache(&b) == "MISS"),
        "b dropped its copy:\n{}",
        b.stderr()
    );
    for c in [&a, &b] {
        let m = http::get(c.addr(), "/metrics", &[]).text();
        assert_eq!(sample(&m, ERRORS), 0, "{m}");
        assert!(!c.stderr().contains("subscription"), "{}", c.stderr());
    }
}

#[test]
fn an_untrusted_certificate_gives_misses_not_errors() {
    let (redis, _files) = tls_redis(&[]);
    let origin = Origin::start();
    origin.create_bucket("rds");
    for i in 0..6 {
        origin.put("rds", &format!("k{i}"), format!("value {i}").as_bytes());
    }
    // No ca_file: the public roots do not know the test CA.
    let mut c = Corvid::start(&config(free_port(), &origin, &redis.url(), None, ""));
    for round in 0..2 {
        for i in 0..6 {
            let r = http::get(c.addr(), &format!("/rds/k{i}?versionId=r{round}"), &[]);
            assert_eq!(
                (r.status, r.header("x-cache")),
                (200, Some("MISS")),
                "k{i}: {}",
                r.text()
            );
            assert_eq!(r.body, format!("value {i}").as_bytes());
        }
        // Past the first retry delay: the probes fail again, without a log line each.
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(origin.count("GET"), 12);
    assert_eq!(redis.key_count(), Some(0), "nothing reached Redis");
    let m = http::get(c.addr(), "/metrics", &[]).text();
    assert!(sample(&m, ERRORS) >= 12, "every skipped op is counted\n{m}");
    assert!(c.is_running());
    let logs = c.stderr();
    assert!(
        logs.contains("redis TLS handshake failed") && logs.contains("UnknownIssuer"),
        "{logs}"
    );
    // Logged once per state change: once per worker's client (2 workers), not per request.
    let downs = logs.matches("redis down:").count();
    assert!(
        (1..=2).contains(&downs),
        "{downs} `redis down` lines:\n{logs}"
    );
    let sub = logs.matches("redis subscription to").count();
    assert_eq!(sub, 1, "the subscriber warns once:\n{logs}");
}

#[test]
fn check_and_serve_apply_the_ca_file_rules() {
    let origin = Origin::start();
    origin.create_bucket("rds");
    let files = generate_server_cert_files();
    // Nothing listens here: a down Redis is a miss, not a start-up error.
    let p = free_port();
    let url = format!("rediss://alice:hunter2@127.0.0.1:{p}/1");
    for ca in [Some(files.ca_pem.as_path()), None] {
        let toml = config(free_port(), &origin, &url, ca, "");
        for out in [check_verdict(&toml), serve_verdict(&toml)] {
            let out = out.unwrap_or_else(|e| panic!("{ca:?}: refused: {e}"));
            assert!(!out.contains("hunter2") && !out.contains("ter2"), "{out}");
        }
    }
    let not_pem = files.ca_pem.with_file_name("not-a-ca.pem");
    std::fs::write(&not_pem, "hunter2 is not a certificate\n").unwrap();
    let plain = format!("redis://:hunter2@127.0.0.1:{p}");
    for (url, ca, needle) in [
        (url.as_str(), not_pem.as_path(), "no PEM certificate found"),
        (
            url.as_str(),
            Path::new("/nonexistent/redis-ca.pem"),
            "cannot read",
        ),
        (
            plain.as_str(),
            files.ca_pem.as_path(),
            "only meaningful for a rediss:// url",
        ),
    ] {
        let toml = config(free_port(), &origin, url, Some(ca), "");
        for out in [check_verdict(&toml), serve_verdict(&toml)] {
            let out = out.expect_err(url);
            assert!(
                out.contains("cache.redis.ca_file: ") && out.contains(needle),
                "{url} {ca:?}: no `cache.redis.ca_file: ...{needle}...` in {out}"
            );
            assert!(!out.contains("hunter2") && !out.contains("ter2"), "{out}");
        }
    }
}

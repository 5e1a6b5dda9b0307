//! The Redis tier through corvid: entries shared between instances, and Redis failures never
//! failing a client request.

use std::time::Duration;

use crate::common::http;
use crate::common::redis_server::RedisServer;
use crate::common::*;

fn config(port: u16, origin: &Origin, redis_url: &str) -> String {
    format!(
        "{}{}\n[cache.memory]\ncapacity = \"16MiB\"\n\n[cache.redis]\nurl = {}\ntimeout = \"100ms\"\n",
        server_toml(port),
        bucket_toml("rds", "/rds", origin),
        toml_str(redis_url),
    )
}

#[test]
fn a_second_instance_hits_entries_the_first_one_filled() {
    let redis = RedisServer::start(&[]);
    let origin = Origin::start();
    origin.create_bucket("rds");
    let body = pattern_bytes(50_000, 4);
    origin.put("rds", "shared.bin", &body);
    let a = Corvid::start(&config(free_port(), &origin, &redis.url()));
    let b = Corvid::start(&config(free_port(), &origin, &redis.url()));
    let r = http::get(a.addr(), "/rds/shared.bin", &[]);
    assert_eq!((r.status, r.header("x-cache")), (200, Some("MISS")));
    // The client has the whole body before the fill's SET reaches Redis.
    assert!(
        wait_until(Duration::from_secs(5), || redis.key_count() == Some(1)),
        "the fill reached Redis"
    );
    let r = http::get(b.addr(), "/rds/shared.bin", &[]);
    assert_eq!(
        (r.header("x-cache"), r.header("x-cache-layer")),
        (Some("HIT"), Some("redis")),
        "{:?}",
        r.headers
    );
    assert!(r.body == body);
    let r = http::get(b.addr(), "/rds/shared.bin", &[]);
    assert_eq!(
        r.header("x-cache-layer"),
        Some("memory"),
        "promoted into b's memory"
    );
    let r = http::get(b.addr(), "/rds/shared.bin", &[("range", "bytes=0-9")]);
    assert_eq!((r.status, r.body.as_slice()), (206, &body[..10]));
    let etag = r.header("etag").unwrap().to_string();
    // A third instance answers a conditional straight from Redis.
    let c = Corvid::start(&config(free_port(), &origin, &redis.url()));
    let r = http::get(c.addr(), "/rds/shared.bin", &[("if-none-match", &etag)]);
    assert_eq!((r.status, r.header("x-cache-layer")), (304, Some("redis")));
    assert_eq!(origin.count("GET"), 1, "one origin GET for all instances");
}

#[test]
fn redis_down_killed_and_back_never_fails_a_request() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let origin = Origin::start();
    origin.create_bucket("rds");
    for i in 0..20 {
        origin.put("rds", &format!("k{i}"), format!("value {i}").as_bytes());
    }
    // Redis is down at start.
    let a = Corvid::start(&config(free_port(), &origin, &url));
    let get_all = |c: &Corvid| {
        for i in 0..20 {
            let r = http::get(c.addr(), &format!("/rds/k{i}"), &[]);
            assert_eq!(r.status, 200, "k{i}: {}", r.text());
            assert_eq!(r.body, format!("value {i}").as_bytes());
        }
    };
    get_all(&a);
    let m = http::get(a.addr(), "/metrics", &[]).text();
    assert!(
        !m.contains("corvid_cache_errors_total{layer=\"redis\"} 0"),
        "redis failures are counted"
    );

    // Redis comes up on that port: entries start flowing to it, another instance sees them.
    let mut redis = RedisServer::start_on(port, &[]);
    let b = Corvid::start(&config(free_port(), &origin, &url));
    // Each round is a fresh miss through `a`, which writes the fill to Redis once `a` has
    // reconnected (after its backoff).
    origin.put("rds", "late", b"late value");
    let mut round = 0;
    assert!(
        wait_until(Duration::from_secs(15), || {
            round += 1;
            http::get(a.addr(), &format!("/rds/late?versionId=v{round}"), &[]);
            redis_has_keys(&redis)
        }),
        "corvid reconnected to Redis"
    );
    let r = http::get(b.addr(), &format!("/rds/late?versionId=v{round}"), &[]);
    assert_eq!(
        r.header("x-cache-layer"),
        Some("redis"),
        "b reads what a wrote"
    );
    // Killed mid-run: requests go on.
    redis.kill();
    get_all(&a);
    get_all(&b);
    redis.restart();
    get_all(&b);
}

fn redis_has_keys(redis: &RedisServer) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", redis.port)) else {
        return false;
    };
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    if s.write_all(b"*1\r\n$6\r\nDBSIZE\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 32];
    let n = s.read(&mut buf).unwrap_or(0);
    let reply = String::from_utf8_lossy(&buf[..n]);
    reply.starts_with(':') && reply.trim_start_matches(':').trim() != "0"
}

/// Two corvids reach `redis` at `url` (the login in it, TLS for `rediss://`), each started
/// with `config(port, origin)`: the first fills Redis, the second serves a whole Redis hit and
/// a range of it; one origin GET for both, no Redis errors, and `secret` (the password, if any)
/// never logged.
pub(crate) fn fills_and_serves(
    redis: &RedisServer,
    url: &str,
    secret: &str,
    config: &dyn Fn(u16, &Origin) -> String,
) {
    let origin = Origin::start();
    origin.create_bucket("rds");
    let body = pattern_bytes(300_000, 7);
    origin.put("rds", "filled.bin", &body);
    let a = Corvid::start(&config(free_port(), &origin));
    let b = Corvid::start(&config(free_port(), &origin));
    let r = http::get(a.addr(), "/rds/filled.bin", &[]);
    assert_eq!(
        (r.status, r.header("x-cache")),
        (200, Some("MISS")),
        "{url}"
    );
    assert!(
        wait_until(Duration::from_secs(5), || redis.key_count() == Some(1)),
        "{url}: the fill reached Redis\n{}",
        a.stderr()
    );
    let r = http::get(b.addr(), "/rds/filled.bin", &[]);
    assert_eq!(
        (r.status, r.header("x-cache"), r.header("x-cache-layer")),
        (200, Some("HIT"), Some("redis")),
        "{url}: {:?}\n{}",
        r.headers,
        b.stderr()
    );
    assert!(r.body == body, "{url}: the body came back whole");
    let r = http::get(b.addr(), "/rds/filled.bin", &[("range", "bytes=1000-1999")]);
    assert_eq!((r.status, r.body.as_slice()), (206, &body[1000..2000]));
    assert_eq!(origin.count("GET"), 1, "{url}: one origin GET for both");
    for c in [&a, &b] {
        let m = http::get(c.addr(), "/metrics", &[]).text();
        assert!(
            m.contains("corvid_cache_errors_total{layer=\"redis\"} 0"),
            "{url}: no Redis errors\n{m}"
        );
        let logs = c.stderr();
        assert!(!logs.contains("redis down"), "{url}: {logs}");
        assert!(
            secret.is_empty() || !logs.contains(secret),
            "{url}: secret logged"
        );
    }
}

#[test]
fn requirepass_and_acl_user_logins_fill_and_serve_from_redis() {
    let redis = RedisServer::start(&["--requirepass", "pa:ss@1"]);
    let url = format!("redis://:pa%3Ass%401@127.0.0.1:{}", redis.port);
    fills_and_serves(&redis, &url, "pa:ss@1", &|port, origin| {
        config(port, origin, &url)
    });
    let redis = RedisServer::start_acl_user("alice", "s3cret");
    let url = format!("redis://alice:s3cret@127.0.0.1:{}", redis.port);
    fills_and_serves(&redis, &url, "s3cret", &|port, origin| {
        config(port, origin, &url)
    });
}

#[test]
fn a_wrong_login_degrades_to_misses_and_the_origin_still_serves() {
    let requirepass = RedisServer::start(&["--requirepass", "right"]);
    let acl = RedisServer::start_acl_user("alice", "right");
    for (redis, login) in [
        (&requirepass, ":wr0ngpw"),
        (&acl, "alice:wr0ngpw"),
        // The right password without the user logs in as `default`, which is off.
        (&acl, ":right"),
    ] {
        let url = format!("redis://{login}@127.0.0.1:{}", redis.port);
        let origin = Origin::start();
        origin.create_bucket("rds");
        for i in 0..5 {
            origin.put("rds", &format!("k{i}"), format!("value {i}").as_bytes());
        }
        let mut c = Corvid::start(&config(free_port(), &origin, &url));
        for i in 0..5 {
            let r = http::get(c.addr(), &format!("/rds/k{i}"), &[]);
            assert_eq!(
                (r.status, r.header("x-cache")),
                (200, Some("MISS")),
                "{url}: {}",
                r.text()
            );
            assert_eq!(r.body, format!("value {i}").as_bytes(), "{url}");
        }
        assert_eq!(origin.count("GET"), 5, "{url}");
        assert_eq!(redis.key_count(), Some(0), "{url}: nothing reached Redis");
        let m = http::get(c.addr(), "/metrics", &[]).text();
        assert!(
            !m.contains("corvid_cache_errors_total{layer=\"redis\"} 0"),
            "{url}: the refused login is counted\n{m}"
        );
        assert!(c.is_running(), "{url}");
        let logs = c.stderr();
        assert!(logs.contains("AUTH refused"), "{url}: {logs}");
        assert!(
            !logs.contains("wr0ngpw"),
            "{url}: the password was logged: {logs}"
        );
    }
}

/// The verdict on a config: `Ok` = valid (check exits 0, serve starts), `Err(output)` = refused
/// (exit 1 with what was printed).
pub(crate) fn check_verdict(toml: &str) -> Result<String, String> {
    let out = check(toml);
    let text = format!("{}{}", out.stdout, out.stderr);
    match out.status.code() {
        Some(0) => Ok(text),
        Some(1) => Err(text),
        other => panic!("corvid check exited with {other:?}: {text}"),
    }
}

pub(crate) fn serve_verdict(toml: &str) -> Result<String, String> {
    let mut c = Corvid::spawn(toml);
    match c.wait_healthy_or_exit() {
        None => {
            let status = c.terminate(Duration::from_secs(10));
            assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", c.stderr());
            Ok(c.stdout() + &c.stderr())
        }
        Some(status) => {
            let text = c.stdout() + &c.stderr();
            assert_eq!(status.code(), Some(1), "corvid serve: {text}");
            Err(text)
        }
    }
}

#[test]
fn check_and_serve_agree_on_every_redis_url() {
    let origin = Origin::start();
    origin.create_bucket("rds");
    // Nothing listens here: a down Redis is a miss, not a start-up error.
    let p = free_port();
    let valid = [
        format!("redis://127.0.0.1:{p}"),
        format!("REDIS://127.0.0.1:{p}/"),
        format!("redis://:hunter2@127.0.0.1:{p}/1"),
        format!("redis://alice:hunter2@127.0.0.1:{p}"),
        format!("redis://al%69ce:hun%40ter2@[::1]:{p}/0"),
        format!("redis://localhost:{p}"),
        // TLS (tests/it/redis_tls.rs has a server to talk to).
        format!("rediss://127.0.0.1:{p}"),
        format!("REDISS://alice:hunter2@localhost:{p}/1"),
    ];
    let invalid = [
        (format!("redis://hunter2@127.0.0.1:{p}"), "ambiguous"),
        (format!("rediss://hunter2@127.0.0.1:{p}"), "ambiguous"),
        (
            format!("redis://alice:@127.0.0.1:{p}"),
            "password before '@' is empty",
        ),
        ("redis+unix:///tmp/redis.sock".into(), "Unix socket"),
        (format!("http://127.0.0.1:{p}"), "use redis://"),
        (format!("redis://127.0.0.1:{p}/?protocol=resp3"), "query"),
        (
            format!("redis://:hunter2@127.0.0.1:{p}#x"),
            "query or fragment",
        ),
        (format!("redis://:{p}"), "has no host"),
        ("redis://127.0.0.1:0".into(), "not a valid port"),
        (format!("redis://127.0.0.1:{p}/db"), "database number"),
        ("".into(), "must not be empty"),
    ];
    for url in &valid {
        let toml = config(free_port(), &origin, url);
        let checked = check_verdict(&toml);
        let served = serve_verdict(&toml);
        assert!(checked.is_ok(), "check refused {url}: {checked:?}");
        assert!(served.is_ok(), "serve refused {url}: {served:?}");
        for out in [checked.unwrap(), served.unwrap()] {
            assert!(
                !out.contains("hunter2") && !out.contains("ter2"),
                "{url}: {out}"
            );
        }
    }
    for (url, needle) in &invalid {
        let toml = config(free_port(), &origin, url);
        let checked = check_verdict(&toml);
        let served = serve_verdict(&toml);
        assert!(checked.is_err(), "check accepted {url}: {checked:?}");
        assert!(served.is_err(), "serve accepted {url}: {served:?}");
        for out in [checked.unwrap_err(), served.unwrap_err()] {
            assert!(
                out.contains("cache.redis.url: ") && out.contains(needle),
                "{url}: no `cache.redis.url: ...{needle}...` in {out}"
            );
            assert!(
                !out.contains("hunter2") && !out.contains("ter2"),
                "{url}: {out}"
            );
        }
    }
}

/// An instance whose only tier is Redis (memory 0, no disk) still caches: the second request
/// is a Redis hit, not a bypass to the origin.
#[test]
fn redis_as_the_only_tier_caches() {
    let redis = RedisServer::start(&[]);
    let origin = Origin::start();
    origin.create_bucket("rds");
    origin.put("rds", "only.bin", b"redis only");
    let corvid = Corvid::start(
        &config(free_port(), &origin, &redis.url()).replace("capacity = \"16MiB\"", "capacity = 0"),
    );
    let r = http::get(corvid.addr(), "/rds/only.bin", &[]);
    assert_eq!((r.status, r.header("x-cache")), (200, Some("MISS")));
    assert!(
        wait_until(Duration::from_secs(5), || redis.key_count() == Some(1)),
        "the fill reached Redis"
    );
    let r = http::get(corvid.addr(), "/rds/only.bin", &[]);
    assert_eq!(
        (r.status, r.header("x-cache"), r.header("x-cache-layer")),
        (200, Some("HIT"), Some("redis"))
    );
    assert_eq!(r.body, b"redis only");
    assert_eq!(origin.count("GET"), 1);
}

/// The value of one Prometheus sample line (`name{labels} value`), 0 when absent.
pub(crate) fn sample(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_soft_purge_announced_by_another_instance_makes_the_next_get_revalidate() {
    use corvid::cache::purge::{Mode, Scope};
    use corvid::cache::purge_broadcast;

    let redis = RedisServer::start(&[]);
    let origin = Origin::start();
    origin.create_bucket("rds");
    let body = pattern_bytes(20_000, 9);
    origin.put("rds", "soft.bin", &body);
    let a = Corvid::start(&config(free_port(), &origin, &redis.url()));
    let r = http::get(a.addr(), "/rds/soft.bin", &[]);
    assert_eq!((r.status, r.header("x-cache")), (200, Some("MISS")));
    let r = http::get(a.addr(), "/rds/soft.bin", &[]);
    assert_eq!(r.header("x-cache"), Some("HIT"));
    let m = http::get(a.addr(), "/metrics", &[]).text();
    assert_eq!(
        sample(&m, "corvid_upstream_bytes_total{bucket=\"rds\"}"),
        20_000
    );
    let hit_bytes = "corvid_cache_hit_bytes_total{layer=\"memory\",bucket=\"rds\"}";
    assert_eq!(sample(&m, hit_bytes), 20_000);

    // Another instance (tag 0x1234) soft-purged the object: it announces it on the channel.
    let scope = Scope::Object {
        bucket: "rds".into(),
        key: "soft.bin".into(),
    };
    let msg = purge_broadcast::encode_as(0x1234, &scope, Mode::Soft);
    let msg = String::from_utf8(msg).unwrap();
    let channel = purge_broadcast::channel("corvid:");
    assert!(
        wait_until(Duration::from_secs(5), || redis
            .command(&["PUBLISH", &channel, &msg])
            .as_deref()
            == Some(b":1".as_slice())),
        "corvid's subscriber never received the announcement"
    );
    let (gets, unchanged) = (origin.count("GET"), origin.conditional_count(304));
    // Applied asynchronously: the entry is still there, so a GET is a HIT until then.
    let mut r = http::get(a.addr(), "/rds/soft.bin", &[]);
    for _ in 0..100 {
        if r.header("x-cache") != Some("HIT") {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        r = http::get(a.addr(), "/rds/soft.bin", &[]);
    }
    assert_eq!(r.header("x-cache"), Some("REVALIDATED"), "{:?}", r.headers);
    assert!(r.body == body);
    assert_eq!(
        origin.conditional_count(304) - unchanged,
        1,
        "one 304, no body"
    );
    assert_eq!(origin.count("GET") - gets, 1);
    assert!(origin
        .last_request()
        .unwrap()
        .header("if-none-match")
        .is_some());
    let r = http::get(a.addr(), "/rds/soft.bin", &[]);
    assert_eq!(r.header("x-cache"), Some("HIT"), "fresh again");
    let m = http::get(a.addr(), "/metrics", &[]).text();
    // Nothing more came from the origin; every answer since the fill came from cache.
    assert_eq!(
        sample(&m, "corvid_upstream_bytes_total{bucket=\"rds\"}"),
        20_000
    );
    let hits = sample(
        &m,
        "corvid_cache_hits_total{layer=\"memory\",bucket=\"rds\"}",
    );
    // HITs (the revalidation counts as no hit) and the revalidated answer's body.
    assert_eq!(sample(&m, hit_bytes), (hits + 1) * 20_000);
}

/// Purges announced while an instance's subscription was down are lost, so when it is back the
/// instance marks its local entries stale: the next request revalidates instead of serving a
/// copy that may have been purged elsewhere.
#[test]
fn local_entries_are_revalidated_after_the_purge_subscription_was_down() {
    let mut redis = RedisServer::start(&[]);
    let origin = Origin::start();
    origin.create_bucket("rds");
    origin.put("rds", "k", b"value");
    let corvid = Corvid::start(&config(free_port(), &origin, &redis.url()));
    let r = http::get(corvid.addr(), "/rds/k", &[]);
    assert_eq!(r.header("x-cache"), Some("MISS"));
    let r = http::get(corvid.addr(), "/rds/k", &[]);
    assert_eq!(r.header("x-cache"), Some("HIT"));
    redis.kill();
    redis.restart();
    assert!(
        wait_until(Duration::from_secs(15), || corvid
            .stderr()
            .contains("local entries marked stale")),
        "the subscription came back:\n{}",
        corvid.stderr()
    );
    let before = origin.conditional_count(304);
    let r = http::get(corvid.addr(), "/rds/k", &[]);
    assert_eq!(r.header("x-cache"), Some("REVALIDATED"), "{:?}", r.headers);
    assert_eq!(r.body, b"value");
    assert_eq!(origin.conditional_count(304), before + 1);
}

//! The Redis tier through corvid: entries shared between instances, and Redis failures never
//! failing a client request.

use std::time::Duration;

use crate::common::http;
use crate::common::redis_server::{free_port as redis_port, RedisServer};
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
    let port = redis_port();
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

//! The Redis tier on a real Redis Cluster (three masters, three replicas, started by the
//! test): entries filled by one instance are served by another across every master, a purge
//! on one instance reaches the others through the cluster's pub/sub, and a master killed
//! under continuous load fails no request while its replica takes over; with
//! `read_from_replicas` hits are answered by the replicas; an idle instance refreshes its map
//! on its own timer, so the first requests after a failover are hits.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::http;
use crate::common::redis_cluster::{ClusterTls, RedisCluster};
use crate::common::*;
use crate::jwt_support::{key, TestKey};

const KEYS: usize = 40;

fn body_of(i: usize) -> Vec<u8> {
    pattern_bytes(2_000 + i * 10, i as u64)
}

/// One bucket `rds`, the memory tier `memory` ("0" = off), the cluster as the Redis tier,
/// and the admin API (HS256 JWT, claim role=admin).
fn config(
    port: u16,
    origin: &Origin,
    cluster: &RedisCluster,
    memory: &str,
    jwt: &TestKey,
) -> String {
    format!(
        "{}{}\n[cache.memory]\ncapacity = {}\n\n[cache.redis]\ncluster = {}\ntimeout = \"200ms\"\n\n[jwt]\nalgorithm = \"HS256\"\nsecret = {}\n\n[admin]\nclaim = {{ name = \"role\", value = \"admin\" }}\n",
        server_toml(port),
        bucket_toml("rds", "/rds", origin),
        toml_str(memory),
        cluster.seeds_toml(),
        toml_str(jwt.secret.as_deref().unwrap()),
    )
}

fn origin_with_objects() -> Origin {
    let origin = Origin::start();
    origin.create_bucket("rds");
    for i in 0..KEYS {
        origin.put("rds", &format!("obj/{i}"), &body_of(i));
    }
    origin
}

fn redis_errors(c: &Corvid) -> String {
    let m = http::get(c.addr(), "/metrics", &[]).text();
    m.lines()
        .find(|l| l.starts_with("corvid_cache_errors_total{layer=\"redis\"}"))
        .unwrap_or("")
        .to_string()
}

#[test]
fn fills_on_one_instance_are_served_by_another_across_slots_and_purges_reach_all() {
    let cluster = RedisCluster::start(2000);
    let origin = origin_with_objects();
    let jwt = key("HS256", 0);
    let a = Corvid::start(&config(free_port(), &origin, &cluster, "16MiB", &jwt));
    // b keeps nothing in memory: every hit it serves comes from the cluster.
    let b = Corvid::start(&config(free_port(), &origin, &cluster, "0", &jwt));
    let c = Corvid::start(&config(free_port(), &origin, &cluster, "16MiB", &jwt));
    for i in 0..KEYS {
        let r = http::get(a.addr(), &format!("/rds/obj/{i}"), &[]);
        assert_eq!(
            (r.status, r.header("x-cache")),
            (200, Some("MISS")),
            "obj/{i}"
        );
    }
    assert!(
        wait_until(Duration::from_secs(10), || cluster.key_count()
            == Some(KEYS as u64)),
        "every fill reached the cluster: {:?}\n{}",
        cluster.key_count(),
        a.stderr()
    );
    // Spread over the slots of every master.
    for m in cluster.masters() {
        let n = cluster.key_count_of(m).unwrap();
        assert!(n > 0, "master {m} holds none of the {KEYS} keys");
    }
    for i in 0..KEYS {
        let r = http::get(b.addr(), &format!("/rds/obj/{i}"), &[]);
        assert_eq!(
            (r.status, r.header("x-cache"), r.header("x-cache-layer")),
            (200, Some("HIT"), Some("redis")),
            "obj/{i}: {:?}\n{}",
            r.headers,
            b.stderr()
        );
        assert!(r.body == body_of(i), "obj/{i}: the body came back whole");
    }
    assert_eq!(
        origin.count("GET"),
        KEYS as u64,
        "one origin GET per object"
    );
    for x in [&a, &b] {
        assert!(
            redis_errors(x).ends_with(" 0"),
            "no Redis errors: {}\n{}",
            redis_errors(x),
            x.stderr()
        );
    }

    // c holds obj/0 in memory; a purge on a must reach it through the cluster's pub/sub.
    let r = http::get(c.addr(), "/rds/obj/0", &[]);
    assert_eq!(r.header("x-cache-layer"), Some("redis"));
    let r = http::get(c.addr(), "/rds/obj/0", &[]);
    assert_eq!(r.header("x-cache-layer"), Some("memory"));
    assert!(
        wait_until(Duration::from_secs(10), || cluster
            .subscribers("corvid:purge")
            >= 3),
        "three instances subscribed: {}",
        cluster.subscribers("corvid:purge")
    );
    let token = jwt.token(None, &json!({"exp": now() + 600, "role": "admin"}));
    let r = http::try_request(
        a.addr(),
        "POST",
        "/admin/cache/purge/rds/obj/0",
        &[
            ("content-length", "0"),
            ("authorization", &format!("Bearer {token}")),
        ],
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["layers"]["redis"]["reachable"], true, "{v}");
    assert_eq!(v["instances"], 3, "every subscribed instance counted: {v}");
    assert!(
        wait_until(Duration::from_secs(5), || {
            http::get(c.addr(), "/rds/obj/0", &[]).header("x-cache") == Some("MISS")
        }),
        "c dropped its memory copy on a's purge"
    );
    // Other keys are untouched.
    let r = http::get(b.addr(), "/rds/obj/1", &[]);
    assert_eq!(r.header("x-cache-layer"), Some("redis"));
}

#[test]
fn a_master_killed_under_load_fails_no_request_and_hits_come_back() {
    let mut cluster = RedisCluster::start(1000);
    let origin = origin_with_objects();
    let jwt = key("HS256", 0);
    let a = Corvid::start(&config(free_port(), &origin, &cluster, "16MiB", &jwt));
    let b = Corvid::start(&config(free_port(), &origin, &cluster, "0", &jwt));
    for i in 0..KEYS {
        assert_eq!(
            http::get(a.addr(), &format!("/rds/obj/{i}"), &[]).status,
            200
        );
    }
    assert!(
        wait_until(Duration::from_secs(10), || cluster.key_count()
            == Some(KEYS as u64)),
        "every fill reached the cluster"
    );
    // Replication is asynchronous: wait until the replicas hold every key too.
    assert!(
        wait_until(Duration::from_secs(10), || {
            let total: u64 = cluster
                .live_ports()
                .iter()
                .filter_map(|&p| cluster.key_count_of(p))
                .sum();
            total == 2 * KEYS as u64
        }),
        "the replicas caught up"
    );

    // Continuous load on b (memory off): every request must succeed with the right body.
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let served = Arc::new(AtomicU64::new(0));
    let addr = b.addr();
    let load = {
        let (stop, failed, served) = (Arc::clone(&stop), Arc::clone(&failed), Arc::clone(&served));
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let k = i % KEYS;
                match http::try_request(
                    addr,
                    "GET",
                    &format!("/rds/obj/{k}"),
                    &[],
                    Duration::from_secs(10),
                ) {
                    Ok(r) if r.status == 200 && r.body == body_of(k) => {}
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                served.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        })
    };
    let all_redis_hits = || {
        (0..KEYS).all(|i| {
            http::get(b.addr(), &format!("/rds/obj/{i}"), &[]).header("x-cache-layer")
                == Some("redis")
        })
    };
    assert!(
        wait_until(Duration::from_secs(5), all_redis_hits),
        "hits before"
    );

    let victim = cluster.masters()[0];
    let held = cluster.key_count_of(victim).unwrap();
    assert!(held > 0);
    let killed = Instant::now();
    cluster.kill(victim);
    // The replica is promoted; b learns the new map and serves Redis hits for every key again.
    assert!(
        wait_until(Duration::from_secs(30), || cluster.masters().len() == 3
            && cluster.is_ok()),
        "failover completed: a replica was promoted"
    );
    let failed_over = killed.elapsed();
    assert!(
        wait_until(Duration::from_secs(20), all_redis_hits),
        "Redis hits for every key again after the failover\n{}",
        b.stderr()
    );
    let back = killed.elapsed();
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    eprintln!(
        "master {victim} ({held} keys) killed: cluster ok after {failed_over:?}, every key a \
         Redis hit again after {back:?}; {} requests under load",
        served.load(Ordering::Relaxed)
    );
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "no client request failed"
    );
    assert!(served.load(Ordering::Relaxed) > 0);
    assert!(
        back < failed_over + Duration::from_secs(10),
        "hits came back within 10 s of the failover ({back:?} vs {failed_over:?})"
    );
}

/// Fills every object through a fresh instance and waits until the cluster holds them all.
fn fill(cluster: &RedisCluster, origin: &Origin, jwt: &TestKey) {
    let a = Corvid::start(&config(free_port(), origin, cluster, "16MiB", jwt));
    for i in 0..KEYS {
        assert_eq!(
            http::get(a.addr(), &format!("/rds/obj/{i}"), &[]).status,
            200
        );
    }
    assert!(
        wait_until(Duration::from_secs(10), || cluster.key_count()
            == Some(KEYS as u64)),
        "every fill reached the cluster"
    );
}

/// Every object answered by `c` as a Redis hit with its body (the objects not so, else).
fn not_redis_hits(c: &Corvid) -> Vec<usize> {
    (0..KEYS)
        .filter(|&i| {
            let r = http::get(c.addr(), &format!("/rds/obj/{i}"), &[]);
            !(r.status == 200 && r.header("x-cache-layer") == Some("redis") && r.body == body_of(i))
        })
        .collect()
}

#[test]
fn a_slot_in_migration_is_followed_by_ask_then_by_moved() {
    let cluster = RedisCluster::start(2000);
    let origin = origin_with_objects();
    let jwt = key("HS256", 0);
    fill(&cluster, &origin, &jwt);
    let b = Corvid::start(&config(free_port(), &origin, &cluster, "0", &jwt));
    assert_eq!(not_redis_hits(&b), Vec::<usize>::new(), "b reads every key");

    // Migrate one key's slot by hand, as `redis-cli --cluster reshard` does, and stop half-way:
    // the key is on the target, its slot still belongs to the source, which answers ASK.
    let masters = cluster.masters();
    let (src, dst) = (masters[0], masters[1]);
    let key = cluster
        .keys_of(src)
        .into_iter()
        .next()
        .expect("a key on the source");
    let slot = cluster.slot_of(&key).to_string();
    let (src_id, dst_id) = (cluster.node_id(src), cluster.node_id(dst));
    let ok = |port, args: &[&str]| {
        let out = cluster.cli(port, args).unwrap_or_default();
        assert!(out.trim() == "OK", "{args:?} on {port}: {out}");
    };
    ok(dst, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &src_id]);
    ok(src, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &dst_id]);
    let dst_port = dst.to_string();
    let migrated = cluster
        .cli_with(
            src,
            &["MIGRATE", "127.0.0.1", &dst_port, "", "0", "5000", "KEYS"],
            &key,
        )
        .unwrap_or_default();
    assert_eq!(migrated.trim(), "OK");
    assert!(cluster.keys_of(src).iter().all(|k| *k != key));
    assert_eq!(
        not_redis_hits(&b),
        Vec::<usize>::new(),
        "the migrated key is read from the target (ASKING)\n{}",
        b.stderr()
    );

    // The migration ends: the slot is the target's, the source answers MOVED.
    for m in &masters {
        ok(*m, &["CLUSTER", "SETSLOT", &slot, "NODE", &dst_id]);
    }
    assert_eq!(
        not_redis_hits(&b),
        Vec::<usize>::new(),
        "the key is read from its new master (MOVED)\n{}",
        b.stderr()
    );
    assert!(redis_errors(&b).ends_with(" 0"), "{}", redis_errors(&b));
}

#[test]
fn a_resharding_under_load_fails_no_request_and_hits_come_back() {
    let cluster = RedisCluster::start(2000);
    let origin = origin_with_objects();
    let jwt = key("HS256", 0);
    fill(&cluster, &origin, &jwt);
    let b = Corvid::start(&config(free_port(), &origin, &cluster, "0", &jwt));
    assert_eq!(not_redis_hits(&b), Vec::<usize>::new());

    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let addr = b.addr();
    let load = {
        let (stop, failed) = (Arc::clone(&stop), Arc::clone(&failed));
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let k = i % KEYS;
                let path = format!("/rds/obj/{k}");
                match http::try_request(addr, "GET", &path, &[], Duration::from_secs(10)) {
                    Ok(r) if r.status == 200 && r.body == body_of(k) => {}
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                i += 1;
            }
        })
    };
    // Move a third of the slots of one master to another.
    let masters = cluster.masters();
    let started = Instant::now();
    let out = std::process::Command::new("redis-cli")
        .args(["--cluster", "reshard", &format!("127.0.0.1:{}", masters[0])])
        .args(["--cluster-from", &cluster.node_id(masters[0])])
        .args(["--cluster-to", &cluster.node_id(masters[1])])
        .args(["--cluster-slots", "2000", "--cluster-yes"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resharded = started.elapsed();
    let done = Instant::now();
    assert!(
        wait_until(Duration::from_secs(20), || not_redis_hits(&b).is_empty()),
        "every key a Redis hit again: {:?}\n{}",
        not_redis_hits(&b),
        b.stderr()
    );
    let back = done.elapsed();
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    eprintln!(
        "2000 slots resharded under load in {resharded:?}: every key a Redis hit again {back:?} \
         after the resharding ended"
    );
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "no client request failed"
    );
}

#[test]
fn a_frozen_master_costs_one_timeout_then_misses_never_a_failed_or_stalled_request() {
    // A node timeout far above the freeze: the cluster does not fail the node over, so only
    // corvid's own timeout and down state protect the requests.
    let cluster = RedisCluster::start(60_000);
    let origin = origin_with_objects();
    let jwt = key("HS256", 0);
    fill(&cluster, &origin, &jwt);
    let b = Corvid::start(&config(free_port(), &origin, &cluster, "0", &jwt));
    assert_eq!(not_redis_hits(&b), Vec::<usize>::new());

    let frozen = cluster.masters()[0];
    let held = cluster.key_count_of(frozen).unwrap();
    cluster.signal(frozen, libc::SIGSTOP);
    let mut misses = 0;
    for round in 0..2 {
        for i in 0..KEYS {
            let started = Instant::now();
            let r = http::get(b.addr(), &format!("/rds/obj/{i}"), &[]);
            let took = started.elapsed();
            assert!(
                r.status == 200 && r.body == body_of(i),
                "obj/{i}: {}",
                r.status
            );
            // The Redis timeout is 200 ms; the rest is the origin fetch on a loaded machine.
            assert!(took < Duration::from_secs(3), "obj/{i} took {took:?}");
            if round == 1 && r.header("x-cache-layer") != Some("redis") {
                misses += 1;
            }
        }
    }
    // The frozen master's keys miss (at most its share), the others still hit.
    assert!(
        misses as u64 <= held && misses > 0,
        "{misses} misses, the frozen master held {held}"
    );
    cluster.signal(frozen, libc::SIGCONT);
    assert!(
        wait_until(Duration::from_secs(20), || not_redis_hits(&b).is_empty()),
        "Redis hits for every key once the master is back: {:?}",
        not_redis_hits(&b)
    );
}

#[test]
fn a_tls_cluster_with_a_password_fills_and_serves() {
    let files = ClusterTls::generate();
    let cluster = RedisCluster::start_with(2000, Some("s3cr:et"), Some(&files));
    assert!(cluster
        .seeds_toml()
        .contains("rediss://:s3cr:et@127.0.0.1:"));
    let origin = origin_with_objects();
    let jwt = key("HS256", 0);
    // TLS handshakes of a debug build on a loaded machine: a roomier timeout.
    let config = |memory: &str| {
        config(free_port(), &origin, &cluster, memory, &jwt)
            .replace("s3cr:et", "s3cr%3Aet")
            .replace(
                "timeout = \"200ms\"\n",
                &format!(
                    "timeout = \"1s\"\nca_file = {}\n",
                    toml_str(&files.ca_pem.to_string_lossy())
                ),
            )
    };
    let a = Corvid::start(&config("16MiB"));
    let b = Corvid::start(&config("0"));
    for i in 0..KEYS {
        assert_eq!(
            http::get(a.addr(), &format!("/rds/obj/{i}"), &[]).status,
            200
        );
    }
    assert!(
        wait_until(Duration::from_secs(10), || cluster.key_count()
            == Some(KEYS as u64)),
        "every fill reached the cluster: {:?}\n{}",
        cluster.key_count(),
        a.stderr()
    );
    assert_eq!(
        not_redis_hits(&b),
        Vec::<usize>::new(),
        "b reads every key over TLS\n{}",
        b.stderr()
    );
    for x in [&a, &b] {
        assert!(redis_errors(x).ends_with(" 0"), "{}", redis_errors(x));
        assert!(!x.stderr().contains("s3cr"), "the password is never logged");
    }
}

fn purge(c: &Corvid, jwt: &TestKey, path: &str) -> serde_json::Value {
    let token = jwt.token(None, &json!({"exp": now() + 600, "role": "admin"}));
    let r = http::try_request(
        c.addr(),
        "POST",
        path,
        &[
            ("content-length", "0"),
            ("authorization", &format!("Bearer {token}")),
        ],
        Duration::from_secs(30),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_slice(&r.body).unwrap()
}

#[test]
fn prefix_purges_walk_every_master() {
    let cluster = RedisCluster::start(2000);
    let origin = origin_with_objects();
    let jwt = key("HS256", 0);
    fill(&cluster, &origin, &jwt);
    let b = Corvid::start(&config(free_port(), &origin, &cluster, "0", &jwt));
    // Soft: every key of every master marked (a short TTL), none deleted.
    let v = purge(&b, &jwt, "/admin/cache/purge/rds?soft=true");
    assert_eq!(v["layers"]["redis"]["entries"], KEYS, "{v}");
    assert_eq!(v["layers"]["redis"]["complete"], true, "{v}");
    assert_eq!(cluster.key_count(), Some(KEYS as u64));
    // Hard: every key of every master deleted.
    let v = purge(&b, &jwt, "/admin/cache/purge/rds?prefix=obj/");
    assert_eq!(v["layers"]["redis"]["entries"], KEYS, "{v}");
    assert_eq!(v["layers"]["redis"]["complete"], true, "{v}");
    assert_eq!(cluster.key_count(), Some(0));
}

/// `cmdstat_get`'s `calls` on one node (0 before its first GET).
fn get_calls(cluster: &RedisCluster, port: u16) -> u64 {
    let info = cluster
        .cli(port, &["INFO", "commandstats"])
        .unwrap_or_default();
    info.lines()
        .find_map(|l| l.trim().strip_prefix("cmdstat_get:calls="))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn with_read_from_replicas_hits_are_answered_by_the_replicas() {
    let cluster = RedisCluster::start(2000);
    let origin = origin_with_objects();
    let jwt = key("HS256", 0);
    let a = Corvid::start(&config(free_port(), &origin, &cluster, "16MiB", &jwt));
    for i in 0..KEYS {
        let r = http::get(a.addr(), &format!("/rds/obj/{i}"), &[]);
        assert_eq!(r.status, 200, "obj/{i}");
    }
    let masters = cluster.masters();
    let replicas: Vec<u16> = cluster
        .live_ports()
        .into_iter()
        .filter(|p| !masters.contains(p))
        .collect();
    assert_eq!(replicas.len(), 3, "three replicas: {replicas:?}");
    let on =
        |ports: &[u16]| -> Option<u64> { ports.iter().map(|&p| cluster.key_count_of(p)).sum() };
    // Every fill replicated, so that a replica read cannot miss for lag.
    assert!(
        wait_until(Duration::from_secs(10), || on(&masters)
            == Some(KEYS as u64)
            && on(&replicas) == Some(KEYS as u64)),
        "fills on the masters and the replicas: {:?} {:?}",
        on(&masters),
        on(&replicas)
    );
    let b = Corvid::start(&config(free_port(), &origin, &cluster, "0", &jwt).replace(
        "[cache.redis]\n",
        "[cache.redis]\nread_from_replicas = true\n",
    ));
    let gets = |ports: &[u16]| -> u64 { ports.iter().map(|&p| get_calls(&cluster, p)).sum() };
    let (masters_before, replicas_before) = (gets(&masters), gets(&replicas));
    for i in 0..KEYS {
        let r = http::get(b.addr(), &format!("/rds/obj/{i}"), &[]);
        assert_eq!(
            (r.status, r.header("x-cache"), r.header("x-cache-layer")),
            (200, Some("HIT"), Some("redis")),
            "obj/{i}: {:?}\n{}",
            r.headers,
            b.stderr()
        );
        assert!(r.body == body_of(i), "obj/{i}: the body came back whole");
    }
    let (by_masters, by_replicas) = (
        gets(&masters) - masters_before,
        gets(&replicas) - replicas_before,
    );
    // Only the first reads, before b knows the slot map, may reach a master (a seed).
    assert!(
        by_replicas >= KEYS as u64 - 3 && by_masters <= 3,
        "GETs answered by the replicas {by_replicas}, by the masters {by_masters}\n{}",
        b.stderr()
    );
    for &p in &replicas {
        assert!(
            get_calls(&cluster, p) > 0,
            "replica {p} answered some reads"
        );
    }
    assert!(redis_errors(&b).ends_with(" 0"), "{}", redis_errors(&b));
    assert_eq!(origin.count("GET"), KEYS as u64, "no origin GET for b");
}

/// `CLUSTER SHARDS` calls answered by the running nodes.
fn map_requests(cluster: &RedisCluster) -> u64 {
    cluster
        .live_ports()
        .into_iter()
        .map(|p| {
            let info = cluster
                .cli(p, &["INFO", "commandstats"])
                .unwrap_or_default();
            info.lines()
                .find_map(|l| l.trim().strip_prefix("cmdstat_cluster|shards:calls="))
                .and_then(|rest| rest.split(',').next()?.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum()
}

#[test]
fn an_idle_instance_learns_of_a_failover_before_its_next_request() {
    let mut cluster = RedisCluster::start(2000);
    let origin = origin_with_objects();
    let jwt = key("HS256", 0);
    // No memory tier: every hit is a Redis read.
    let b = Corvid::start(&config(free_port(), &origin, &cluster, "0", &jwt));
    for i in 0..KEYS {
        assert_eq!(
            http::get(b.addr(), &format!("/rds/obj/{i}"), &[]).status,
            200
        );
    }
    let masters = cluster.masters();
    let replicas: Vec<u16> = cluster
        .live_ports()
        .into_iter()
        .filter(|p| !masters.contains(p))
        .collect();
    let on = |c: &RedisCluster, ports: &[u16]| -> Option<u64> {
        ports.iter().map(|&p| c.key_count_of(p)).sum()
    };
    assert!(
        wait_until(Duration::from_secs(10), || on(&cluster, &masters)
            == Some(KEYS as u64)
            && on(&cluster, &replicas) == Some(KEYS as u64)),
        "every fill replicated"
    );
    // Both workers know the map (hits from any worker, no errors yet).
    for i in 0..KEYS {
        let r = http::get(b.addr(), &format!("/rds/obj/{i}"), &[]);
        assert_eq!(r.header("x-cache-layer"), Some("redis"), "obj/{i}");
    }
    assert!(redis_errors(&b).ends_with(" 0"), "{}", redis_errors(&b));

    // b is idle from here on: a master dies and its replica takes over.
    let victim = masters[0];
    cluster.kill(victim);
    assert!(
        wait_until(Duration::from_secs(30), || cluster.masters().len() == 3
            && cluster.is_ok()),
        "the cluster failed over"
    );
    // Each of b's two workers asks for the map on its own timer, with no request to prompt it.
    let asked = map_requests(&cluster);
    assert!(
        wait_until(Duration::from_secs(15), || map_requests(&cluster)
            >= asked + 2),
        "b refreshed its map while idle: {} CLUSTER SHARDS since the failover",
        map_requests(&cluster) - asked
    );
    // So the first requests after the failover are hits, none tried on the dead master.
    for i in 0..KEYS {
        let r = http::get(b.addr(), &format!("/rds/obj/{i}"), &[]);
        assert_eq!(
            (r.status, r.header("x-cache-layer")),
            (200, Some("redis")),
            "obj/{i}\n{}",
            b.stderr()
        );
    }
    assert!(
        redis_errors(&b).ends_with(" 0"),
        "no Redis error after the failover: {}",
        redis_errors(&b)
    );
}

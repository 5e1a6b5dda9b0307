//! Purge over the three real tiers: a memory tier, a disk tier in a temporary directory and a
//! real `redis-server` (started per test on a free loopback port), driven the way a worker
//! drives them, inside a monoio runtime. Every test fills all three tiers with keys of two
//! buckets whose names and keys are chosen to trip naive matching — a bucket whose name is a
//! prefix of the other's, an object key that starts with the other bucket's name, keys full of
//! Redis glob metacharacters, an object whose name extends another's — purges, and checks both
//! the returned counts and, tier by tier, what is gone and what is left.
//!
//! A last test runs two such "instances" sharing the Redis and checks that a purge on one
//! reaches the other's memory and disk through the pub/sub announcement.
//!
//! Needs `redis-server` on PATH (Debian: `apt-get install redis-server`).
#![allow(
    clippy::disallowed_methods,
    reason = "tests run on the harness's threads, not on a worker: they may block"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use corvid::cache::entry::{CachedObject, Meta};
use corvid::cache::key::cache_key;
use corvid::cache::purge::{purge, purge_as, Mode, Purged, RedisPurge, Scope};
use corvid::cache::purge_broadcast;
use corvid::cache::redis::{RedisClient, RedisError, RedisOptions, StopSignal};
use corvid::cache::redis_tier;
use corvid::cache::tiered::{Layer, Tiers};
use corvid::config::{CacheConfig, DiskConfig};

mod tier_support;

use tier_support::redis_server::RedisServer;
use tier_support::run;

const MIB: u64 = 1 << 20;

fn cache_config(dir: &std::path::Path) -> CacheConfig {
    CacheConfig {
        disk: Some(DiskConfig {
            dir: dir.to_path_buf(),
            capacity: 8 * MIB,
            segment_size: MIB,
        }),
        ..CacheConfig::memory_only(16 * MIB, MIB)
    }
}

/// One cached variant: bucket, object key, forwarded query.
type Entry = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

/// The keys every test starts from. Buckets `img` and `img2` (`img` is a prefix of `img2`).
const WORLD: &[Entry] = &[
    ("img", "logo.png", &[]),
    ("img", "logo.png", &[("versionId", "7")]),
    (
        "img",
        "logo.png",
        &[("response-content-type", "text/plain")],
    ),
    // Another object whose key extends `logo.png`.
    ("img", "logo.png.bak", &[]),
    // Starts with the other bucket's name.
    ("img", "img2/logo.png", &[]),
    // Glob metacharacters, and the key an unescaped `a*` prefix pattern would also match.
    ("img", "a*b?[c]\\d", &[]),
    ("img", "aXb?[c]\\d", &[]),
    ("img2", "logo.png", &[]),
    ("img2", "x", &[("versionId", "1")]),
];

fn ckey(e: &Entry) -> Vec<u8> {
    cache_key(e.0, e.1, e.2)
}

fn object(i: usize) -> CachedObject {
    let now = corvid::cache::disk::now_ms();
    CachedObject::new(
        Meta::new(
            vec![("ETag".into(), format!("\"{i}\""))],
            now,
            now + 3_600_000,
        ),
        Bytes::from(vec![i as u8; 1000 + 100 * i]),
    )
}

struct World {
    tiers: Arc<Tiers>,
    redis: RedisClient,
    _dir: tempfile::TempDir,
}

impl World {
    /// Fresh tiers with every [`WORLD`] entry stored in memory, on disk and in Redis.
    async fn filled(server: &RedisServer, timeout: Duration) -> World {
        let dir = tempfile::tempdir().unwrap();
        let tiers = Tiers::new(&cache_config(dir.path())).unwrap();
        let mut o = RedisOptions::new(server.url().parse().unwrap());
        o.timeout = timeout;
        let redis = RedisClient::new(o).unwrap();
        let retain = Duration::from_secs(3600);
        for (i, e) in WORLD.iter().enumerate() {
            let (k, obj) = (ckey(e), object(i));
            assert!(tiers.store(&k, obj.clone(), tiers.generation()));
            redis_tier::store(&redis, &k, &obj, 4 * MIB, retain, obj.meta().stored_at_ms)
                .await
                .unwrap();
        }
        let w = World {
            tiers,
            redis,
            _dir: dir,
        };
        for e in WORLD {
            assert_eq!(w.held(e).await, [true; 3], "{e:?} not stored everywhere");
        }
        w
    }

    /// Whether memory, disk and Redis hold `e`.
    async fn held(&self, e: &Entry) -> [bool; 3] {
        let k = ckey(e);
        [
            self.tiers.memory.get(&k).is_some(),
            self.tiers.disk.as_ref().unwrap().get_stale(&k).is_some(),
            self.redis.get(&k).await.unwrap().is_some(),
        ]
    }

    /// Whether memory, disk and Redis hold `e` as fresh (each must hold it).
    async fn fresh(&self, e: &Entry) -> [bool; 3] {
        let k = ckey(e);
        let now = corvid::cache::disk::now_ms();
        let mem = self.tiers.memory.get(&k).expect("held in memory");
        let disk = self.tiers.disk.as_ref().unwrap();
        let on_disk = disk.get_stale(&k).expect("held on disk");
        // The fresh-only disk lookup agrees with the index's expiry.
        assert_eq!(disk.get(&k).is_some(), on_disk.expires_at_ms > now);
        let retain = Duration::from_secs(3600);
        let redis = redis_tier::lookup(&self.redis, &k, retain, now)
            .await
            .unwrap()
            .expect("held in Redis");
        [
            mem.meta().is_fresh(now),
            on_disk.expires_at_ms > now,
            redis.meta().is_fresh(now),
        ]
    }

    /// Checks that exactly `stale` (indexes into [`WORLD`]) are stale in every tier, and
    /// everything is still held everywhere.
    async fn check_stale(&self, stale: &[usize], what: &str) {
        for (i, e) in WORLD.iter().enumerate() {
            assert_eq!(self.held(e).await, [true; 3], "{what}: {e:?}");
            let expect = [!stale.contains(&i); 3];
            assert_eq!(self.fresh(e).await, expect, "{what}: {e:?}");
        }
    }

    /// Soft-purges and checks the counts: `per_tier` entries marked in each tier, nothing
    /// removed (the gauges do not move).
    async fn soft_purge(&self, scope: Scope, per_tier: u64) -> Purged {
        let before = self.usage();
        let p = purge_as(&self.tiers, Some(&self.redis), &scope, Mode::Soft).await;
        assert_eq!(
            self.usage(),
            before,
            "{scope:?}: a soft purge removed something"
        );
        assert_eq!(p.mode, Mode::Soft);
        assert_eq!(
            (p.memory.entries, p.disk.entries),
            (per_tier, per_tier),
            "{scope:?}: {p:?}"
        );
        assert!(
            matches!(p.redis, RedisPurge::Done(n) if n == per_tier),
            "{scope:?}: {p:?}"
        );
        assert_eq!(p.entries(), 3 * per_tier);
        assert_eq!(
            per_tier > 0,
            p.memory.bytes > 0 && p.disk.bytes > 0,
            "{p:?}"
        );
        p
    }

    /// Checks that exactly `gone` (indexes into [`WORLD`]) are absent from every tier and
    /// everything else is still in every tier.
    async fn check(&self, gone: &[usize], what: &str) {
        for (i, e) in WORLD.iter().enumerate() {
            let expect = [!gone.contains(&i); 3];
            assert_eq!(self.held(e).await, expect, "{what}: {e:?}");
        }
    }

    fn usage(&self) -> [(u64, u64); 2] {
        [
            self.tiers.usage(Layer::Memory),
            self.tiers.usage(Layer::Disk),
        ]
    }

    /// Purges and checks that the counts returned match what the tiers' own gauges lost.
    async fn purge(&self, scope: Scope, per_tier: u64) -> Purged {
        let before = self.usage();
        let p = purge(&self.tiers, Some(&self.redis), &scope).await;
        let after = self.usage();
        assert_eq!(p.memory.entries, before[0].0 - after[0].0, "{scope:?}");
        assert_eq!(p.memory.bytes, before[0].1 - after[0].1, "{scope:?}");
        assert_eq!(p.disk.entries, before[1].0 - after[1].0, "{scope:?}");
        assert_eq!(p.disk.bytes, before[1].1 - after[1].1, "{scope:?}");
        assert_eq!(
            (p.memory.entries, p.disk.entries),
            (per_tier, per_tier),
            "{scope:?}: {p:?}"
        );
        assert!(
            matches!(p.redis, RedisPurge::Done(n) if n == per_tier),
            "{scope:?}: {p:?}"
        );
        assert_eq!(p.entries(), 3 * per_tier);
        assert_eq!(p.bytes(), p.memory.bytes + p.disk.bytes);
        p
    }
}

fn object_scope(bucket: &str, key: &str) -> Scope {
    Scope::Object {
        bucket: bucket.into(),
        key: key.into(),
    }
}

fn prefix_scope(bucket: &str, prefix: &str) -> Scope {
    Scope::Prefix {
        bucket: bucket.into(),
        prefix: prefix.into(),
    }
}

#[test]
fn an_object_purge_takes_every_variant_from_every_tier() {
    let server = RedisServer::start(&[]);
    run(async {
        let w = World::filled(&server, Duration::from_secs(5)).await;
        let p = w.purge(object_scope("img", "logo.png"), 3).await;
        assert!(p.bytes() > 3 * 1000);
        // Not `logo.png.bak`, not `img2`'s `logo.png`.
        w.check(&[0, 1, 2], "after purging img/logo.png").await;
        // Nothing left to purge (the admin API answers 404 then).
        w.purge(object_scope("img", "logo.png"), 0).await;
        // An object whose key holds glob metacharacters: only itself.
        w.purge(object_scope("img", "a*b?[c]\\d"), 1).await;
        w.check(&[0, 1, 2, 5], "after purging img/a*b?[c]\\d").await;
        // A variant-only object of the other bucket.
        w.purge(object_scope("img2", "x"), 1).await;
        w.check(&[0, 1, 2, 5, 8], "after purging img2/x").await;
    });
}

#[test]
fn one_key_purge_leaves_the_other_variants() {
    let server = RedisServer::start(&[]);
    run(async {
        let w = World::filled(&server, Duration::from_secs(5)).await;
        w.purge(Scope::Key(ckey(&WORLD[1])), 1).await;
        w.check(&[1], "after purging the versionId=7 key").await;
        w.purge(Scope::Key(ckey(&WORLD[1])), 0).await;
    });
}

#[test]
fn a_store_that_began_before_a_purge_does_not_undo_it() {
    let server = RedisServer::start(&[]);
    run(async {
        let w = World::filled(&server, Duration::from_secs(5)).await;
        let (k, obj) = (ckey(&WORLD[0]), object(0));
        // A fill that fetched its bytes before a bucket purge finishes after it.
        let since = w.tiers.generation();
        w.purge(prefix_scope("img", ""), 7).await;
        assert!(
            !w.tiers.store(&k, obj.clone(), since),
            "stored after the purge"
        );
        w.tiers.refresh(&k, obj.clone(), since, false);
        assert_eq!(w.held(&WORLD[0]).await, [false; 3]);
        // A fill that began after the purge stores as usual.
        assert!(w.tiers.store(&k, obj.clone(), w.tiers.generation()));
        assert_eq!(w.held(&WORLD[0]).await[..2], [true, true]);
        // An origin 404 (one exact key) does not cost the other fills in flight their store.
        let since = w.tiers.generation();
        w.purge(Scope::Key(ckey(&WORLD[8])), 1).await;
        assert!(w.tiers.store(&ckey(&WORLD[1]), object(1), since));
    });
}

/// The instance tags of the two instances.
const TAG_A: u32 = 0xa;
const TAG_B: u32 = 0xb;

/// Two instances sharing `server`, both filled, with instance b running the purge subscriber
/// worker 0 runs ([`purge_broadcast::listen`], tag [`TAG_B`]) with `opts`, subscribed once
/// this returns. Also returns the subscriber's stop signal and the deadline (10 s from now)
/// that bounds this wait and the test's later ones.
async fn two_instances(
    server: &RedisServer,
    opts: RedisOptions,
) -> (World, World, StopSignal, Instant) {
    let (a, b) = (
        World::filled(server, Duration::from_secs(5)).await,
        World::filled(server, Duration::from_secs(5)).await,
    );
    let stop = StopSignal::new();
    let channel = purge_broadcast::channel(&opts.key_prefix);
    monoio::spawn(purge_broadcast::listen(
        Arc::clone(&b.tiers),
        opts,
        TAG_B,
        stop.clone(),
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    wait_for_subscribers(&a, &channel, 1, deadline).await;
    (a, b, stop, deadline)
}

/// Waits (bounded by `deadline`) until `channel` has `n` subscribers, as `a`'s client sees.
async fn wait_for_subscribers(a: &World, channel: &str, n: u64, deadline: Instant) {
    while a.redis.subscribers(channel).await.ok() != Some(n) {
        assert!(
            Instant::now() < deadline,
            "{channel}: never {n} subscribers"
        );
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits (bounded by `deadline`) until `cond` holds; `what` and `show()` explain a timeout.
async fn until<T: std::fmt::Debug>(
    deadline: Instant,
    what: &str,
    mut cond: impl FnMut() -> bool,
    show: impl Fn() -> T,
) {
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: {:?}", show());
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn a_purge_reaches_the_memory_and_disk_of_another_instance() {
    let server = RedisServer::start(&[]);
    run(async {
        let opts = RedisOptions::new(server.url().parse().unwrap());
        let (a, b, stop, deadline) = two_instances(&server, opts).await;

        let scope = object_scope("img", "logo.png");
        let done =
            purge_broadcast::purge_everywhere(&a.tiers, Some(&a.redis), "corvid:", TAG_A, &scope)
                .await;
        assert_eq!(done.receivers, Some(1), "{done:?}");
        a.check(&[0, 1, 2], "the purging instance").await;
        let gone_from_b = |i: usize| {
            let k = ckey(&WORLD[i]);
            b.tiers.memory.get(&k).is_none()
                && b.tiers.disk.as_ref().unwrap().get_stale(&k).is_none()
        };
        until(
            deadline,
            "the other instance kept its copies",
            || (0..3).all(gone_from_b),
            || (),
        )
        .await;
        // Nothing else went, and an instance ignores its own announcements.
        assert!((3..WORLD.len()).all(|i| !gone_from_b(i)));
        let own = purge_broadcast::encode(TAG_B, &Scope::All);
        assert!(purge_broadcast::apply(&b.tiers, TAG_B, own.into())
            .await
            .is_none());
        assert!((3..WORLD.len()).all(|i| !gone_from_b(i)));
        stop.stop();
    });
}

/// Pub/sub keeps nothing for an absent subscriber: a purge published while instance b's
/// subscription is down never reaches b. When the subscription is back, b's subscriber marks
/// every local entry stale (kept, not removed), so what was purged elsewhere meanwhile is
/// revalidated rather than served as fresh.
#[test]
fn purges_missed_while_unsubscribed_leave_every_local_entry_stale() {
    let server = RedisServer::start(&[]);
    run(async {
        let mut opts = RedisOptions::new(server.url().parse().unwrap());
        (opts.backoff_initial, opts.backoff_max) =
            (Duration::from_millis(20), Duration::from_millis(100));
        let channel = purge_broadcast::channel(&opts.key_prefix);
        let (a, b, stop, deadline) = two_instances(&server, opts).await;
        let cmd = |args: &[&str]| {
            let mut c = redis::cmd(args[0]);
            for arg in &args[1..] {
                c.arg(*arg);
            }
            c
        };
        // Take b's subscription down and keep it down: a password keeps it from subscribing
        // again, while a's connection stays logged in.
        a.redis
            .command(&cmd(&["CONFIG", "SET", "requirepass", "secret"]))
            .await
            .unwrap();
        let killed = a
            .redis
            .command(&cmd(&["CLIENT", "KILL", "TYPE", "pubsub"]))
            .await;
        assert!(matches!(killed, Ok(redis::Value::Int(1))), "{killed:?}");
        wait_for_subscribers(&a, &channel, 0, deadline).await;

        // Published while nobody listens: b does not hear of it.
        let scope = object_scope("img", "logo.png");
        let done =
            purge_broadcast::purge_everywhere(&a.tiers, Some(&a.redis), "corvid:", TAG_A, &scope)
                .await;
        assert_eq!(done.receivers, Some(0), "{done:?}");
        // [memory, disk] of b: held, and fresh.
        let local = |i: usize| {
            let k = ckey(&WORLD[i]);
            let now = corvid::cache::disk::now_ms();
            let disk = b.tiers.disk.as_ref().unwrap();
            let mem = b.tiers.memory.get(&k).map(|o| o.meta().is_fresh(now));
            let on_disk = disk.get_stale(&k).map(|e| e.expires_at_ms > now);
            [mem, on_disk]
        };
        assert!((0..WORLD.len()).all(|i| local(i) == [Some(true); 2]));

        // Back: b marks everything it holds stale, and keeps it.
        a.redis
            .command(&cmd(&["CONFIG", "SET", "requirepass", ""]))
            .await
            .unwrap();
        wait_for_subscribers(&a, &channel, 1, deadline).await;
        until(
            deadline,
            "b kept fresh copies after resubscribing",
            || (0..WORLD.len()).all(|i| local(i) == [Some(false); 2]),
            || (0..WORLD.len()).map(local).collect::<Vec<_>>(),
        )
        .await;
        // Only b's own tiers: Redis lost what a purged, and the rest is fresh there.
        let retain = Duration::from_secs(3600);
        for (i, e) in WORLD.iter().enumerate() {
            let now = corvid::cache::disk::now_ms();
            let shared = redis_tier::lookup(&a.redis, &ckey(e), retain, now)
                .await
                .unwrap();
            assert_eq!(
                shared.map(|o| o.meta().is_fresh(now)),
                (i > 2).then_some(true),
                "{e:?}"
            );
        }
        a.check(&[0, 1, 2], "the purging instance").await;
        stop.stop();
    });
}

#[test]
fn bucket_and_key_prefix_purges_are_exact() {
    let server = RedisServer::start(&[]);
    run(async {
        let w = World::filled(&server, Duration::from_secs(5)).await;
        // `a*` is a literal prefix, not a pattern: `aXb…` stays.
        w.purge(prefix_scope("img", "a*"), 1).await;
        w.check(&[5], "after purging img prefix a*").await;
        // `img2/` inside bucket img, not bucket img2.
        w.purge(prefix_scope("img", "img2/"), 1).await;
        w.check(&[4, 5], "after purging img prefix img2/").await;
        // A prefix takes the variants of the objects under it too.
        w.purge(prefix_scope("img", "logo"), 4).await;
        w.check(&[0, 1, 2, 3, 4, 5], "after purging img prefix logo")
            .await;
        // The rest of bucket img; img2 (whose name starts with "img") keeps everything.
        w.purge(prefix_scope("img", ""), 1).await;
        w.check(&[0, 1, 2, 3, 4, 5, 6], "after purging bucket img")
            .await;
        w.purge(prefix_scope("img2", ""), 2).await;
        w.check(&[0, 1, 2, 3, 4, 5, 6, 7, 8], "after purging bucket img2")
            .await;
    });
}

#[test]
fn purge_everything_spares_other_users_of_the_redis() {
    let server = RedisServer::start(&[]);
    run(async {
        let w = World::filled(&server, Duration::from_secs(5)).await;
        let raw = |cmd: &str, key: &str| {
            let mut c = redis::cmd(cmd);
            c.arg(key);
            c
        };
        for k in ["other:img\0logo.png", "corvid", "corvid;x"] {
            let mut set = raw("SET", k);
            set.arg("not corvid's");
            w.redis.command(&set).await.unwrap();
        }
        let disk = w.tiers.disk.as_ref().unwrap();
        assert!(disk.segments() > 0);
        w.purge(Scope::All, WORLD.len() as u64).await;
        w.check(
            &(0..WORLD.len()).collect::<Vec<_>>(),
            "after purging everything",
        )
        .await;
        assert_eq!(w.usage(), [(0, 0), (0, 0)]);
        assert_eq!(disk.segments(), 0);
        let size = w.redis.command(&redis::cmd("DBSIZE")).await.unwrap();
        assert_eq!(
            size,
            redis::Value::Int(3),
            "only other users' keys are left"
        );
        // Purging an empty cache removes nothing, everywhere.
        w.purge(Scope::All, 0).await;
    });
}

#[test]
fn with_redis_killed_memory_and_disk_are_still_purged_and_redis_is_reported() {
    let mut server = RedisServer::start(&[]);
    let timeout = Duration::from_millis(200);
    run(async {
        let w = World::filled(&server, timeout).await;
        server.kill();
        let local = |w: &World, e: &Entry| {
            let k = ckey(e);
            [
                w.tiers.memory.get(&k).is_some(),
                w.tiers.disk.as_ref().unwrap().get_stale(&k).is_some(),
            ]
        };

        // The first operation finds the connection dead (or times out): bounded by the timeout.
        let t = Instant::now();
        let p = purge(&w.tiers, Some(&w.redis), &object_scope("img", "logo.png")).await;
        let took = t.elapsed();
        assert!(took <= timeout + Duration::from_millis(300), "{took:?}");
        assert_eq!((p.memory.entries, p.disk.entries), (3, 3), "{p:?}");
        assert!(p.redis.unreachable(), "{p:?}");
        assert_eq!(p.entries(), 6);
        for (i, e) in WORLD.iter().enumerate() {
            assert_eq!(local(&w, e), [i > 2; 2], "{e:?}");
        }

        // The client is down now: Redis fails at once, memory and disk are emptied.
        let t = Instant::now();
        let p = purge(&w.tiers, Some(&w.redis), &Scope::All).await;
        let took = t.elapsed();
        assert!(took <= timeout + Duration::from_millis(300), "{took:?}");
        assert!(
            matches!(
                p.redis,
                RedisPurge::Failed {
                    deleted: 0,
                    error: RedisError::Down
                }
            ),
            "{p:?}"
        );
        assert_eq!((p.memory.entries, p.disk.entries), (6, 6), "{p:?}");
        assert_eq!(w.usage(), [(0, 0), (0, 0)]);

        // No Redis tier at all: the same purge, reported as disabled.
        let p = purge(&w.tiers, None, &Scope::All).await;
        assert!(matches!(p.redis, RedisPurge::Disabled) && !p.redis.failed());
        assert_eq!(p.entries(), 0);
    });
}

#[test]
fn a_soft_purge_marks_an_object_stale_in_every_tier_and_keeps_it() {
    let server = RedisServer::start(&[]);
    run(async {
        let w = World::filled(&server, Duration::from_secs(5)).await;
        w.check_stale(&[], "filled").await;
        let p = w.soft_purge(object_scope("img", "logo.png"), 3).await;
        // The bytes reported are what the tiers hold for them.
        let held: u64 = (0..3)
            .map(|i| {
                let k = ckey(&WORLD[i]);
                w.tiers.memory.get(&k).unwrap().weight() as u64 + k.len() as u64
            })
            .sum();
        assert_eq!(p.memory.bytes, held);
        w.check_stale(&[0, 1, 2], "after soft-purging img/logo.png")
            .await;

        // A lookup finds the entry but not fresh: the request path revalidates it.
        let k = ckey(&WORLD[0]);
        let now = corvid::cache::disk::now_ms();
        let hit = w.tiers.lookup(&k).await.expect("still cached");
        assert_eq!(hit.layer, Layer::Memory);
        assert!(!hit.obj.meta().is_fresh(now));
        // Stale since the purge, not since the epoch: stale-while-revalidate windows apply
        // from the purge on.
        assert!(now - hit.obj.meta().expires_at_ms < 10_000);
        // Promoted from disk, it is still stale.
        w.tiers.memory.remove(&k);
        let hit = w.tiers.lookup(&k).await.expect("on disk");
        assert_eq!(hit.layer, Layer::Disk);
        assert!(!hit.obj.meta().is_fresh(now));
        assert!(!w.tiers.memory.get(&k).unwrap().meta().is_fresh(now));

        // Marking again counts the same entries (still cached: the admin API answers 200),
        // and never moves a deadline later.
        let before = w.tiers.memory.get(&k).unwrap().meta().expires_at_ms;
        w.soft_purge(object_scope("img", "logo.png"), 3).await;
        assert_eq!(w.tiers.memory.get(&k).unwrap().meta().expires_at_ms, before);
        // An object not cached: nothing marked (404).
        w.soft_purge(object_scope("img", "nope"), 0).await;
        // One exact key.
        w.soft_purge(Scope::Key(ckey(&WORLD[7])), 1).await;
        w.check_stale(&[0, 1, 2, 7], "after soft-purging one key")
            .await;
        // A revalidation (a 304) that began after the purge makes it fresh again.
        let since = w.tiers.generation();
        w.tiers.refresh(&ckey(&WORLD[7]), object(7), since, false);
        assert_eq!(w.fresh(&WORLD[7]).await[..2], [true, true]);
    });
}

#[test]
fn soft_purges_of_a_prefix_a_bucket_and_everything() {
    let server = RedisServer::start(&[]);
    run(async {
        let w = World::filled(&server, Duration::from_secs(5)).await;
        w.soft_purge(prefix_scope("img", "a*"), 1).await;
        w.check_stale(&[5], "after soft-purging img prefix a*")
            .await;
        w.soft_purge(prefix_scope("img", "logo"), 4).await;
        w.check_stale(&[0, 1, 2, 3, 5], "after soft-purging img prefix logo")
            .await;
        // The whole bucket img: img2 (whose name starts with "img") stays fresh.
        w.soft_purge(prefix_scope("img", ""), 7).await;
        w.check_stale(&[0, 1, 2, 3, 4, 5, 6], "after soft-purging bucket img")
            .await;
        w.soft_purge(Scope::All, WORLD.len() as u64).await;
        w.check_stale(
            &(0..WORLD.len()).collect::<Vec<_>>(),
            "after soft-purging everything",
        )
        .await;
        // A hard purge still removes soft-purged entries.
        w.purge(Scope::All, WORLD.len() as u64).await;
    });
}

#[test]
fn a_fill_that_began_before_a_soft_purge_does_not_undo_it() {
    let server = RedisServer::start(&[]);
    run(async {
        let w = World::filled(&server, Duration::from_secs(5)).await;
        let (k, obj) = (ckey(&WORLD[0]), object(0));
        // A fill and a revalidation whose origin answers came before the purge.
        let since = w.tiers.generation();
        w.soft_purge(object_scope("img", "logo.png"), 3).await;
        assert!(!w.tiers.store(&k, obj.clone(), since), "stored fresh bytes");
        w.tiers.refresh(&k, obj.clone(), since, false);
        w.check_stale(&[0, 1, 2], "after the late fill").await;
        // Even for one exact key (unlike a hard purge of one key, what an origin 404 does).
        let since = w.tiers.generation();
        w.soft_purge(Scope::Key(ckey(&WORLD[8])), 1).await;
        assert!(!w.tiers.store(&ckey(&WORLD[8]), object(8), since));
        w.check_stale(&[0, 1, 2, 8], "after the late fill of one key")
            .await;
    });
}

#[test]
fn a_soft_purge_reaches_the_memory_and_disk_of_another_instance() {
    let server = RedisServer::start(&[]);
    run(async {
        let opts = RedisOptions::new(server.url().parse().unwrap());
        let (a, b, stop, deadline) = two_instances(&server, opts).await;

        let scope = prefix_scope("img", "logo");
        let done = purge_broadcast::purge_everywhere_as(
            &a.tiers,
            Some(&a.redis),
            "corvid:",
            TAG_A,
            &scope,
            Mode::Soft,
        )
        .await;
        assert_eq!(done.receivers, Some(1), "{done:?}");
        assert_eq!(done.purged.entries(), 12, "{done:?}");
        a.check_stale(&[0, 1, 2, 3], "the purging instance").await;
        let stale_in_b = |i: usize| {
            let k = ckey(&WORLD[i]);
            let now = corvid::cache::disk::now_ms();
            let disk = b.tiers.disk.as_ref().unwrap();
            !b.tiers.memory.get(&k).unwrap().meta().is_fresh(now) && disk.get(&k).is_none()
        };
        until(
            deadline,
            "the other instance kept fresh copies",
            || (0..4).all(stale_in_b),
            || (),
        )
        .await;
        // Redis is shared: b sees it stale too; everything else is fresh and everything held.
        b.check_stale(&[0, 1, 2, 3], "the other instance").await;
        stop.stop();
    });
}

/// Stats: tiers told about buckets `img` and `img2`, a small memory tier, no Redis, and the
/// request counters of one worker moved the way the request path moves them
/// (`proxy::serve_object`, `proxy::serve_cached`, the fill's body reads).
#[test]
fn stats_are_exact_per_tier_and_per_bucket() {
    use corvid::cache::usage::Buckets;
    use corvid::metrics::Registry;

    run(async {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = cache_config(dir.path());
        cfg.memory.capacity = 16 << 10;
        cfg.max_object_size = 8 << 10;
        let tiers = Tiers::with_buckets(&cfg, Buckets::new(["img", "img2"])).unwrap();
        let registry = Registry::new(Arc::clone(tiers.buckets()), 1);
        let slots = [0, 1];
        let named: Vec<(String, usize)> = tiers.buckets().names().into_iter().zip(slots).collect();
        let w = registry.worker(0, &slots);
        let bucket_of = |b: &str| usize::from(b == "img2");
        let body_len = |key: &str| match key {
            "a" => 1000,
            "b" => 1100,
            "c" => 1200,
            "x" => 500,
            _ => 3000,
        };
        // One GET: a fresh hit is answered from its tier, a miss is filled from the "origin".
        let get = |bucket: &'static str, key: &'static str| {
            let tiers = &tiers;
            async move {
                let (b, k) = (bucket_of(bucket), cache_key(bucket, key, &[]));
                let now = corvid::cache::disk::now_ms();
                match tiers.lookup(&k).await {
                    Some(hit) if hit.obj.meta().is_fresh(now) => {
                        w.cache_hit(b, hit.layer);
                        w.cache_hit_bytes(b, hit.layer, hit.obj.body_len() as u64);
                        Some(hit.layer)
                    }
                    Some(_) => panic!("stale"),
                    None => {
                        w.cache_miss(b);
                        let len = body_len(key);
                        w.upstream_bytes(b, len as u64);
                        let obj = CachedObject::new(
                            Meta::new(vec![], now, now + 3_600_000),
                            Bytes::from(vec![7u8; len]),
                        );
                        assert!(tiers.store(&k, obj, tiers.generation()));
                        None
                    }
                }
            }
        };
        let (m, d) = (Some(Layer::Memory), Some(Layer::Disk));
        assert_eq!(get("img", "a").await, None);
        assert_eq!(get("img", "a").await, m);
        assert_eq!(get("img", "a").await, m);
        assert_eq!(get("img", "b").await, None);
        assert_eq!(get("img", "c").await, None);
        assert_eq!(get("img2", "x").await, None);
        assert_eq!(get("img2", "x").await, m);
        // Gone from memory, found on disk and promoted.
        tiers.memory.remove(&cache_key("img", "b", &[]));
        assert_eq!(get("img", "b").await, d);
        assert_eq!(get("img", "b").await, m);

        let disk = tiers.disk.as_ref().unwrap();
        let charge = |bucket: &str, key: &str| {
            let k = cache_key(bucket, key, &[]);
            tiers.memory.get(&k).unwrap().weight() as u64 + k.len() as u64
        };
        let s = registry.cache_stats(&tiers, false, &named);
        // Tiers.
        let mem = &s.layers.memory;
        assert_eq!((mem.entries, mem.capacity), (Some(4), Some(16 << 10)));
        let img_mem_bytes = charge("img", "a") + charge("img", "b") + charge("img", "c");
        assert_eq!(mem.bytes, Some(img_mem_bytes + charge("img2", "x")));
        assert_eq!((mem.hits, mem.misses, mem.evictions), (4, 5, Some(0)));
        assert_eq!(mem.hit_ratio, Some(4.0 / 9.0));
        assert_eq!(mem.bytes_served, 2 * 1000 + 1100 + 500);
        let dl = &s.layers.disk;
        assert_eq!((dl.entries, dl.bytes), (Some(4), Some(disk.bytes())));
        assert_eq!(dl.capacity, Some(8 * MIB));
        assert_eq!((dl.hits, dl.misses, dl.bytes_served), (1, 4, 1100));
        assert_eq!(dl.hit_ratio, Some(0.2));
        let r = &s.layers.redis;
        assert_eq!((r.entries, r.bytes, r.capacity), (None, None, None));
        assert_eq!((r.hits, r.misses, r.hit_ratio), (0, 0, None));
        // Totals.
        let t = &s.totals;
        assert_eq!((t.entries, t.hits, t.misses), (8, 5, 4));
        assert_eq!(t.bytes, mem.bytes.unwrap() + disk.bytes());
        assert_eq!(t.hit_ratio, Some(5.0 / 9.0));
        assert_eq!(t.bytes_served, 2 * 1000 + 2 * 1100 + 500);
        assert_eq!(t.origin_bytes, 1000 + 1100 + 1200 + 500);
        // Buckets, kept apart.
        let img = &s.buckets["img"];
        assert_eq!((img.totals.hits, img.totals.misses), (4, 3));
        assert_eq!(img.totals.hit_ratio, Some(4.0 / 7.0));
        assert_eq!(img.totals.bytes_served, 2 * 1000 + 2 * 1100);
        assert_eq!(img.totals.origin_bytes, 3300);
        assert_eq!(img.layers.memory.entries, Some(3));
        assert_eq!(img.layers.memory.bytes, Some(img_mem_bytes));
        assert_eq!((img.layers.memory.hits, img.layers.memory.misses), (3, 4));
        assert_eq!(
            (img.layers.disk.entries, img.layers.disk.hits),
            (Some(3), 1)
        );
        assert_eq!(img.layers.disk.bytes_served, 1100);
        assert_eq!(img.layers.redis.entries, None);
        let img2 = &s.buckets["img2"];
        assert_eq!((img2.totals.hits, img2.totals.misses), (1, 1));
        assert_eq!(
            (img2.totals.bytes_served, img2.totals.origin_bytes),
            (500, 500)
        );
        assert_eq!(img2.layers.memory.entries, Some(1));
        assert_eq!(img2.layers.memory.bytes, Some(charge("img2", "x")));
        assert_eq!(img2.layers.disk.entries, Some(1));
        assert_eq!(
            img.layers.disk.bytes.unwrap() + img2.layers.disk.bytes.unwrap(),
            disk.bytes()
        );
        assert_eq!(img.totals.entries + img2.totals.entries, t.entries);
        assert_eq!(img.totals.bytes + img2.totals.bytes, t.bytes);

        // The JSON the admin route renders.
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["totals"]["hits"], 5);
        assert_eq!(json["layers"]["memory"]["capacity"], 16 << 10);
        assert!(json["layers"]["redis"]["entries"].is_null());
        assert_eq!(json["buckets"]["img"]["origin_bytes"], 3300);
        assert_eq!(json["buckets"]["img2"]["layers"]["memory"]["entries"], 1);
        for field in [
            "entries",
            "bytes",
            "hits",
            "misses",
            "evictions",
            "hit_ratio",
            "bytes_served",
            "origin_bytes",
        ] {
            assert!(json["totals"].get(field).is_some(), "totals.{field}");
            assert!(
                json["buckets"]["img"].get(field).is_some(),
                "bucket {field}"
            );
        }

        // Evictions: img2 fillers until the memory tier evicts; each evicted key counts in
        // its own bucket.
        const FILLERS: [&str; 8] = ["f0", "f1", "f2", "f3", "f4", "f5", "f6", "f7"];
        for f in FILLERS {
            assert_eq!(get("img2", f).await, None);
        }
        let absent = |bucket: &str, keys: &[&str]| {
            keys.iter()
                .filter(|k| tiers.memory.get(&cache_key(bucket, k, &[])).is_none())
                .count() as u64
        };
        let (gone_img, gone_img2) = (
            absent("img", &["a", "b", "c"]),
            absent("img2", &[&["x"][..], &FILLERS[..]].concat()),
        );
        let s = registry.cache_stats(&tiers, false, &named);
        assert!(s.layers.memory.evictions.unwrap() > 0);
        assert_eq!(s.layers.memory.evictions, Some(gone_img + gone_img2));
        assert_eq!(s.buckets["img"].layers.memory.evictions, Some(gone_img));
        assert_eq!(s.buckets["img2"].layers.memory.evictions, Some(gone_img2));
        assert_eq!(s.buckets["img2"].totals.evictions, gone_img2);
        assert_eq!(
            s.buckets["img"].layers.memory.entries,
            Some(3 - gone_img),
            "{s:?}"
        );
        assert_eq!(s.layers.memory.entries, Some(4 + 8 - gone_img - gone_img2));
        assert_eq!(s.buckets["img2"].totals.origin_bytes, 500 + 8 * 3000);
        assert_eq!(s.buckets["img2"].layers.disk.entries, Some(9));

        // A purge moves the counts too: bucket img is emptied, img2 keeps its own.
        purge(&tiers, None, &prefix_scope("img", "")).await;
        let s2 = registry.cache_stats(&tiers, false, &named);
        let img = &s2.buckets["img"].layers;
        assert_eq!((img.memory.entries, img.memory.bytes), (Some(0), Some(0)));
        assert_eq!((img.disk.entries, img.disk.bytes), (Some(0), Some(0)));
        assert_eq!(s2.buckets["img2"].layers, s.buckets["img2"].layers);
        assert_eq!(s2.layers.disk.bytes, s2.buckets["img2"].layers.disk.bytes);
    });
}

/// The disk tier's per-bucket counts: evictions by reclaim land in the evicted entry's
/// bucket, and a reopened tier recounts what recovery found.
#[test]
fn disk_bucket_counts_follow_reclaim_and_survive_a_restart() {
    use corvid::cache::usage::{Buckets, Usage};

    let dir = tempfile::tempdir().unwrap();
    let mut cfg = cache_config(dir.path());
    cfg.memory.capacity = 0;
    cfg.disk.as_mut().unwrap().segment_size = 4096;
    cfg.disk.as_mut().unwrap().capacity = 3 * 4096;
    let buckets = || Buckets::new(["img", "img2"]);
    let obj = |len: usize| {
        let now = corvid::cache::disk::now_ms();
        CachedObject::new(
            Meta::new(vec![], now, now + 3_600_000),
            Bytes::from(vec![1u8; len]),
        )
    };
    let usage = |t: &Tiers, b: &str| t.disk.as_ref().unwrap().usage_of(b).unwrap();
    let (img, img2) = {
        let tiers = Tiers::with_buckets(&cfg, buckets()).unwrap();
        // Oldest first: img's entries go to reclaim before img2's.
        for i in 0..6 {
            assert!(tiers.store(&cache_key("img", &format!("k{i}"), &[]), obj(1500), 0));
        }
        for i in 0..6 {
            assert!(tiers.store(&cache_key("img2", &format!("k{i}"), &[]), obj(1500), 0));
        }
        let disk = tiers.disk.as_ref().unwrap();
        assert!(disk.evictions() > 0);
        let (img, img2) = (usage(&tiers, "img"), usage(&tiers, "img2"));
        assert_eq!(img.evictions + img2.evictions, disk.evictions());
        assert!(img.evictions > 0);
        // Every insert is either still held or was evicted, in its own bucket.
        assert_eq!(img.entries + img.evictions, 6, "{img:?}");
        assert_eq!(img2.entries + img2.evictions, 6, "{img2:?}");
        assert_eq!(img.entries + img2.entries, disk.len());
        assert_eq!(img.bytes + img2.bytes, disk.bytes());
        let held = |b: &str| {
            (0..6)
                .filter(|i| {
                    disk.get_stale(&cache_key(b, &format!("k{i}"), &[]))
                        .is_some()
                })
                .count() as u64
        };
        assert_eq!((held("img"), held("img2")), (img.entries, img2.entries));
        disk.settle();
        (img, img2)
    };
    // Reopened: the same entries and bytes per bucket (evictions start again from 0).
    let tiers = Tiers::with_buckets(&cfg, buckets()).unwrap();
    let again = |u: Usage| Usage { evictions: 0, ..u };
    assert_eq!(usage(&tiers, "img"), again(img));
    assert_eq!(usage(&tiers, "img2"), again(img2));
}

/// A revalidation that leaves the header fields as they were refreshes the disk copy without
/// rewriting it, and restarts its age there too: after a restart the disk hit carries the new
/// age origin and deadline.
#[test]
fn a_refresh_restarts_the_age_on_disk_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let key = cache_key("img", "aged.png", &[]);
    let old = object(3);
    let origin = old.meta().stored_at_ms;
    run(async {
        let tiers = Tiers::new(&cache_config(dir.path())).unwrap();
        tiers.store(&key, old.clone(), tiers.generation());
        let m = &old.meta();
        let refreshed = CachedObject::new(
            Meta::new(m.header_pairs(), origin + 7_200_000, origin + 10_800_000),
            old.body_bytes(),
        );
        assert!(tiers.refresh(&key, refreshed, tiers.generation(), false));
        tiers.disk.as_ref().unwrap().flush().unwrap();
    });
    run(async {
        let tiers = Tiers::new(&cache_config(dir.path())).unwrap();
        let hit = tiers.lookup(&key).await.expect("on disk");
        assert_eq!(hit.layer, Layer::Disk);
        assert_eq!(hit.obj.meta().stored_at_ms, origin + 7_200_000);
        assert_eq!(hit.obj.meta().expires_at_ms, origin + 10_800_000);
        assert_eq!(hit.obj.body(), old.body());
    });
}

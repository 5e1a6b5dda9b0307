//! The Redis tier client against a real `redis-server` (each test starts its own on a free
//! loopback port): round trips, TTLs, prefix deletion, pipelining, and the failure model (Redis
//! absent, killed, stalled, restarted), pub/sub between two clients, and all of it over TLS
//! (`rediss://`) against a TLS-only server with a test CA, including the ways TLS fails.
//!
//! Needs `redis-server` on PATH (Debian: `apt-get install redis-server`).
#![allow(
    clippy::disallowed_methods,
    reason = "tests run on the harness's threads, not on a worker: they may block"
)]

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use corvid::cache::redis::{
    subscribe, RedisClient, RedisError, RedisOptions, RedisTls, StopSignal,
};
use corvid::config::RedisTarget;

mod tier_support;

// The integration tests' test PKI (rcgen): a CA and a server certificate for 127.0.0.1.
#[path = "it/common/tls.rs"]
#[allow(
    dead_code,
    reason = "the TLS terminator and the rest of the helpers serve tests/it, not these tests"
)]
mod tls;

use tier_support::port::free_port;
use tier_support::redis_server::RedisServer as Server;
use tier_support::run;

/// `cache.redis.url` parsed as the config parses it.
fn target(url: &str) -> RedisTarget {
    url.parse().unwrap_or_else(|e| panic!("{url}: {e}"))
}

/// Options for the functional tests: a generous timeout (debug builds on a busy 2-core
/// machine move 4 MiB values slowly); the failure tests set their own.
fn opts(url: String) -> RedisOptions {
    let mut o = RedisOptions::new(target(&url));
    o.timeout = Duration::from_secs(5);
    o
}

/// Polls `f` every 10 ms until it returns `Some`, for at most `limit`.
async fn poll_until<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Subscribes to `corvid:purge` with `o`, publishes `msg` through `c` once the subscription is
/// active, and waits until the subscriber got it; then stops the subscriber.
async fn subscriber_receives(o: RedisOptions, c: &RedisClient, msg: &'static [u8]) {
    let got: Rc<RefCell<Vec<Bytes>>> = Rc::default();
    let stop = StopSignal::new();
    let sub = monoio::spawn(subscribe(
        o,
        "corvid:purge".into(),
        {
            let got = Rc::clone(&got);
            move |m| got.borrow_mut().push(m)
        },
        stop.clone(),
    ));
    poll_until(Duration::from_secs(3), "subscription active", || async {
        (c.subscribers("corvid:purge").await.ok()? >= 1).then_some(())
    })
    .await;
    c.publish("corvid:purge", msg).await.unwrap();
    poll_until(Duration::from_secs(3), "message delivered", || async {
        (got.borrow().first().map(|m| &m[..]) == Some(msg)).then_some(())
    })
    .await;
    stop.stop();
    monoio::time::timeout(Duration::from_secs(1), sub)
        .await
        .expect("subscribe returns once stopped");
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_add(seed)).collect()
}

#[test]
fn get_set_del_round_trip_binary_values() {
    let server = Server::start(&[]);
    run(async {
        let c = RedisClient::new(opts(server.url())).unwrap();
        assert_eq!(c.get(b"missing").await.unwrap(), None);
        let all_bytes: Vec<u8> = (0..=255u8).collect();
        let sizes = [0, 1, 255, 256, 8191, 8192, 65_536, 1 << 20, 4 << 20];
        for (i, &len) in sizes.iter().enumerate() {
            let key = [b"bin\0\r\n key ".as_slice(), &all_bytes, &[i as u8]].concat();
            let value = pattern(len, i as u8);
            c.set(&key, &value, Duration::from_secs(60)).await.unwrap();
            let got = c.get(&key).await.unwrap().expect("value present");
            assert_eq!(got.len(), len);
            assert!(got == value, "value of {len} bytes differs");
        }
        let too_big = vec![0u8; (4 << 20) + 1];
        assert!(matches!(
            c.set(b"big", &too_big, Duration::from_secs(1)).await,
            Err(RedisError::Protocol(_))
        ));
        // A refused value does not take the tier down.
        assert!(c.is_up());

        c.set(b"k", b"v", Duration::from_secs(60)).await.unwrap();
        assert!(c.del(b"k").await.unwrap());
        assert!(!c.del(b"k").await.unwrap());
        assert_eq!(c.get(b"k").await.unwrap(), None);
        assert_eq!(c.errors(), 1);
    });
}

#[test]
fn keys_carry_the_prefix_and_error_replies_fail_only_the_op() {
    let server = Server::start(&[]);
    run(async {
        let c = RedisClient::new(opts(server.url())).unwrap();
        c.set(b"k", b"v", Duration::from_secs(60)).await.unwrap();
        let raw = c.command(redis::cmd("GET").arg("corvid:k")).await.unwrap();
        assert_eq!(raw, redis::Value::BulkString(b"v".to_vec()));
        // A wrong-type error reply: Err(Server), the client stays up.
        c.command(redis::cmd("LPUSH").arg("corvid:list").arg("x"))
            .await
            .unwrap();
        assert!(matches!(c.get(b"list").await, Err(RedisError::Server(_))));
        assert!(c.is_up());
        assert_eq!(c.get(b"k").await.unwrap().as_deref(), Some(&b"v"[..]));
    });
}

#[test]
fn ttl_expiry_and_pexpire() {
    let server = Server::start(&[]);
    run(async {
        let c = RedisClient::new(opts(server.url())).unwrap();
        let start = Instant::now();
        c.set(b"short", b"x", Duration::from_millis(100))
            .await
            .unwrap();
        poll_until(Duration::from_secs(3), "key expired", || async {
            c.get(b"short").await.unwrap().is_none().then_some(())
        })
        .await;
        assert!(start.elapsed() >= Duration::from_millis(90));

        c.set(b"long", b"y", Duration::from_secs(600))
            .await
            .unwrap();
        assert!(c
            .pexpire(b"long", Duration::from_millis(100))
            .await
            .unwrap());
        let pttl = c
            .command(redis::cmd("PTTL").arg("corvid:long"))
            .await
            .unwrap();
        assert!(
            matches!(pttl, redis::Value::Int(ms) if (0..=100).contains(&ms)),
            "{pttl:?}"
        );
        poll_until(
            Duration::from_secs(3),
            "key expired after pexpire",
            || async { c.get(b"long").await.unwrap().is_none().then_some(()) },
        )
        .await;
        assert!(!c.pexpire(b"long", Duration::from_secs(1)).await.unwrap());

        // Refreshing extends the life of a key.
        c.set(b"kept", b"z", Duration::from_millis(200))
            .await
            .unwrap();
        assert!(c.pexpire(b"kept", Duration::from_secs(600)).await.unwrap());
        let pttl = c
            .command(redis::cmd("PTTL").arg("corvid:kept"))
            .await
            .unwrap();
        assert!(
            matches!(pttl, redis::Value::Int(ms) if ms > 500_000),
            "{pttl:?}"
        );
    });
}

#[test]
fn del_prefix_deletes_exactly_the_prefixed_keys() {
    let server = Server::start(&[]);
    run(async {
        let c = RedisClient::new(opts(server.url())).unwrap();
        let mut other = opts(server.url());
        other.key_prefix = "other:".into();
        let other = RedisClient::new(other).unwrap();
        let ttl = Duration::from_secs(600);
        // 2500 keys under the prefix: several SCAN pages and UNLINK batches.
        for i in 0..2500 {
            c.set(format!("b*k[t]/a?\\{i}").as_bytes(), b"1", ttl)
                .await
                .unwrap();
        }
        // Keys an unescaped glob would also match.
        let survivors: [&[u8]; 6] = [
            b"bXk[t]/a?\\1",
            b"b*kt/a?\\1",
            b"b*k[t]/aX\\1",
            b"b*k[t]/a?X1",
            b"b*k[t]/a?",
            b"a/b*k[t]/a?\\1",
        ];
        for k in survivors {
            c.set(k, b"keep", ttl).await.unwrap();
        }
        other.set(b"b*k[t]/a?\\1", b"other", ttl).await.unwrap();

        assert_eq!(c.del_prefix(b"b*k[t]/a?\\").await.unwrap(), 2500);
        for i in [0, 1, 999, 2499] {
            assert_eq!(
                c.get(format!("b*k[t]/a?\\{i}").as_bytes()).await.unwrap(),
                None
            );
        }
        for k in survivors {
            assert!(
                c.get(k).await.unwrap().is_some(),
                "{:?} deleted",
                Bytes::copy_from_slice(k)
            );
        }
        assert!(other.get(b"b*k[t]/a?\\1").await.unwrap().is_some());
        assert_eq!(c.del_prefix(b"b*k[t]/a?\\").await.unwrap(), 0);
        // The empty prefix is everything under the client's key prefix.
        assert_eq!(c.del_prefix(b"").await.unwrap(), survivors.len() as u64);
        assert!(other.get(b"b*k[t]/a?\\1").await.unwrap().is_some());
    });
}

#[test]
fn pipelining_200_concurrent_tasks_on_one_connection() {
    let server = Server::start(&[]);
    run(async {
        let c = RedisClient::new(opts(server.url())).unwrap();
        let mut tasks = Vec::new();
        for i in 0..200usize {
            let c = c.clone();
            tasks.push(monoio::spawn(async move {
                let key = format!("p{i}");
                // Mixed sizes so that replies straddle read boundaries.
                let value = pattern(1 + (i * 997) % 70_000, i as u8);
                c.set(key.as_bytes(), &value, Duration::from_secs(60))
                    .await
                    .unwrap();
                let got = c.get(key.as_bytes()).await.unwrap().unwrap();
                assert!(got == value, "task {i} got the wrong value");
                let miss = c.get(format!("absent{i}").as_bytes()).await.unwrap();
                assert!(miss.is_none());
                i
            }));
        }
        let mut sum = 0;
        for t in tasks {
            sum += t.await;
        }
        assert_eq!(sum, 199 * 200 / 2);
        assert_eq!(c.errors(), 0);
        // One connection served all 600 commands (the test's own PINGs are closed by now).
        let info = c.command(redis::cmd("INFO").arg("clients")).await.unwrap();
        let redis::Value::BulkString(info) = info else {
            panic!("INFO reply {info:?}")
        };
        let info = String::from_utf8(info).unwrap();
        assert!(info.contains("connected_clients:1\r\n"), "{info}");
    });
}

#[test]
fn redis_down_at_start_fails_fast() {
    let port = free_port(); // nothing listens there
    run(async {
        let mut o = RedisOptions::new(target(&format!("redis://127.0.0.1:{port}")));
        o.timeout = Duration::from_millis(50);
        let c = RedisClient::new(o).unwrap();
        let start = Instant::now();
        let mut down = 0;
        for i in 0..100 {
            let r = if i % 2 == 0 {
                c.get(b"k").await.map(|_| ())
            } else {
                c.set(b"k", b"v", Duration::from_secs(1)).await
            };
            match r {
                Err(RedisError::Down) => down += 1,
                Err(_) => {}
                Ok(_) => panic!("op succeeded with no server"),
            }
        }
        let took = start.elapsed();
        assert!(took < Duration::from_millis(500), "100 ops took {took:?}");
        assert!(down >= 98, "only {down} ops failed fast");
        assert!(!c.is_up());
        assert_eq!(c.errors(), 100);
    });
}

#[test]
fn redis_killed_mid_run_then_restarted() {
    let mut server = Server::start(&[]);
    let timeout = Duration::from_millis(200);
    run(async {
        let mut o = RedisOptions::new(target(&server.url()));
        o.timeout = timeout;
        o.backoff_max = Duration::from_millis(400);
        let c = RedisClient::new(o).unwrap();
        c.set(b"k", b"v", Duration::from_secs(60)).await.unwrap();

        // 20 tasks hammering the client while the server is SIGKILLed under them; each counts
        // its answers and its errors.
        let stop = StopSignal::new();
        let counts: Vec<Rc<Cell<(u32, u32)>>> = (0..20).map(|_| Rc::default()).collect();
        let mut tasks = Vec::new();
        for n in &counts {
            let (c, stop, n) = (c.clone(), stop.clone(), Rc::clone(n));
            tasks.push(monoio::spawn(async move {
                let mut slowest_err = Duration::ZERO;
                while !stop.is_stopped() {
                    let t = Instant::now();
                    let (ok, err) = n.get();
                    match c.get(b"k").await {
                        Ok(_) => n.set((ok + 1, err)),
                        Err(_) => {
                            slowest_err = slowest_err.max(t.elapsed());
                            n.set((ok, err + 1));
                        }
                    }
                    monoio::time::sleep(Duration::from_millis(1)).await;
                }
                slowest_err
            }));
        }
        poll_until(
            Duration::from_secs(5),
            "every task got an answer",
            || async { counts.iter().all(|n| n.get().0 > 0).then_some(()) },
        )
        .await;
        let errors = |n: &Rc<Cell<(u32, u32)>>| n.get().1;
        let before: Vec<u32> = counts.iter().map(errors).collect();
        server.kill();
        let killed = Instant::now();
        poll_until(Duration::from_secs(2), "client noticed", || async {
            (!c.is_up()).then_some(())
        })
        .await;
        assert!(killed.elapsed() <= timeout + Duration::from_millis(100));
        // Every task ran into the dead server a few times.
        poll_until(Duration::from_secs(5), "every task saw errors", || async {
            let mut after = counts.iter().map(errors);
            before
                .iter()
                .all(|b| after.next().unwrap() >= b + 3)
                .then_some(())
        })
        .await;
        stop.stop();
        for t in tasks {
            let slowest_err = t.await;
            assert!(
                slowest_err <= timeout + Duration::from_millis(100),
                "{slowest_err:?}"
            );
        }
        // Later ops: fail fast or at worst at the timeout.
        for _ in 0..20 {
            let t = Instant::now();
            assert!(c.get(b"k").await.is_err());
            assert!(t.elapsed() <= timeout + Duration::from_millis(100));
        }

        server.restart();
        let restarted = Instant::now();
        poll_until(Duration::from_secs(5), "client recovered", || async {
            c.set(b"k2", b"v2", Duration::from_secs(60)).await.ok()
        })
        .await;
        // Backoff is capped at 400 ms here.
        assert!(restarted.elapsed() < Duration::from_millis(400) + timeout * 2);
        assert!(c.is_up());
        assert_eq!(c.get(b"k2").await.unwrap().as_deref(), Some(&b"v2"[..]));
        // The server restarted empty (no persistence).
        assert_eq!(c.get(b"k").await.unwrap(), None);
    });
}

#[test]
fn stalled_redis_times_out_at_the_timeout_then_recovers() {
    let server = Server::start(&[]);
    let timeout = Duration::from_millis(100);
    run(async {
        let mut o = RedisOptions::new(target(&server.url()));
        o.timeout = timeout;
        o.backoff_initial = Duration::from_millis(50);
        o.backoff_max = Duration::from_millis(200);
        let c = RedisClient::new(o).unwrap();
        c.set(b"k", b"v", Duration::from_secs(60)).await.unwrap();

        server.signal(libc::SIGSTOP);
        // Concurrent in-flight ops all end at the timeout, not later.
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let c = c.clone();
            tasks.push(monoio::spawn(async move {
                let t = Instant::now();
                let r = c.get(b"k").await;
                (r.map(|_| ()), t.elapsed())
            }));
        }
        for t in tasks {
            let (r, took) = t.await;
            assert!(matches!(r, Err(RedisError::Timeout)), "{r:?}");
            assert!(took >= timeout - Duration::from_millis(5), "{took:?}");
            assert!(took <= timeout + Duration::from_millis(60), "{took:?}");
        }
        assert!(start.elapsed() <= timeout + Duration::from_millis(80));
        assert!(!c.is_up());
        // While down: fast failures; probes (a fresh connection each) time out again.
        let t = Instant::now();
        assert!(matches!(c.get(b"k").await, Err(RedisError::Down)));
        assert!(t.elapsed() < Duration::from_millis(10));
        poll_until(Duration::from_secs(2), "a probe timed out", || async {
            let t = Instant::now();
            match c.get(b"k").await {
                Err(RedisError::Timeout) => {
                    assert!(t.elapsed() <= timeout + Duration::from_millis(60));
                    Some(())
                }
                Err(_) => None,
                Ok(_) => panic!("a stopped server answered"),
            }
        })
        .await;

        server.signal(libc::SIGCONT);
        let resumed = Instant::now();
        poll_until(Duration::from_secs(3), "client recovered", || async {
            c.get(b"k").await.ok()
        })
        .await;
        assert!(resumed.elapsed() < Duration::from_millis(200) + timeout * 2);
        assert!(c.is_up());
        assert_eq!(c.get(b"k").await.unwrap().as_deref(), Some(&b"v"[..]));
    });
}

/// Whether the server's main thread is asleep in `DEBUG SLEEP`: its kernel wait channel is
/// nanosleep's (an idle server waits in `epoll_wait`).
fn asleep(server: &Server) -> bool {
    std::fs::read_to_string(format!("/proc/{}/wchan", server.pid()))
        .is_ok_and(|w| w.contains("nanosleep"))
}

#[test]
fn debug_sleep_times_out_ops_but_not_later() {
    let server = Server::start(&["--enable-debug-command", "yes"]);
    run(async {
        let mut o = RedisOptions::new(target(&server.url()));
        o.timeout = Duration::from_millis(100);
        let c = RedisClient::new(o).unwrap();
        let staller = RedisClient::new(opts(server.url())).unwrap();
        c.set(b"k", b"v", Duration::from_secs(60)).await.unwrap();
        let sleeper = monoio::spawn(async move {
            staller
                .command(redis::cmd("DEBUG").arg("SLEEP").arg("0.5"))
                .await
        });
        poll_until(Duration::from_secs(2), "DEBUG SLEEP began", || async {
            asleep(&server).then_some(())
        })
        .await;
        let t = Instant::now();
        assert!(matches!(c.get(b"k").await, Err(RedisError::Timeout)));
        assert!(
            t.elapsed() < Duration::from_millis(160),
            "{:?}",
            t.elapsed()
        );
        sleeper.await.unwrap();
        poll_until(Duration::from_secs(3), "client recovered", || async {
            c.get(b"k").await.ok()
        })
        .await;
    });
}

#[test]
fn auth_and_select_from_the_url() {
    let server = Server::start(&["--requirepass", "s3cr:t@"]);
    run(async {
        let base = format!("redis://:s3cr%3At%40@127.0.0.1:{}", server.port);
        let db2 = RedisClient::new(opts(format!("{base}/2"))).unwrap();
        let db0 = RedisClient::new(opts(base.clone())).unwrap();
        db2.set(b"k", b"in db 2", Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(
            db2.get(b"k").await.unwrap().as_deref(),
            Some(&b"in db 2"[..])
        );
        assert_eq!(db0.get(b"k").await.unwrap(), None);

        let wrong =
            RedisClient::new(opts(format!("redis://:nope@127.0.0.1:{}", server.port))).unwrap();
        match wrong.get(b"k").await {
            Err(RedisError::Protocol(m)) => assert!(m.contains("AUTH"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(!wrong.is_up());
        let anonymous = RedisClient::new(opts(server.url())).unwrap();
        assert!(matches!(
            anonymous.get(b"k").await,
            Err(RedisError::Server(_))
        ));
    });
}

#[test]
fn acl_user_login_from_the_url() {
    // Only `AUTH alice se:cr@t/` gets in: the `default` user is off.
    let server = Server::start_acl_user("alice", "se:cr@t/");
    run(async {
        let url = |login: &str| format!("redis://{login}@127.0.0.1:{}/1", server.port);
        let o = opts(url("alice:se%3Acr%40t%2F"));
        let c = RedisClient::new(o.clone()).unwrap();
        c.set(b"k", b"as alice", Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(
            c.get(b"k").await.unwrap().as_deref(),
            Some(&b"as alice"[..])
        );
        let whoami = c.command(redis::cmd("ACL").arg("WHOAMI")).await.unwrap();
        assert_eq!(whoami, redis::Value::BulkString(b"alice".to_vec()));
        // `/1` selected database 1.
        let db1 = c.command(&redis::cmd("DBSIZE")).await.unwrap();
        assert_eq!(db1, redis::Value::Int(1));
        assert_eq!(server.key_count(), Some(0), "database 0 stays empty");

        // The subscriber logs in the same way.
        subscriber_receives(o, &c, b"from alice").await;

        // A wrong password, the password alone (AUTH as `default`, which is off), no login.
        for login in ["alice:wrong", ":se%3Acr%40t%2F"] {
            let wrong = RedisClient::new(opts(url(login))).unwrap();
            match wrong.get(b"k").await {
                Err(RedisError::Protocol(m)) => assert!(m.contains("AUTH refused"), "{m}"),
                other => panic!("{login}: {other:?}"),
            }
            assert!(
                !wrong.is_up(),
                "{login}: a refused login takes the client down"
            );
            assert!(matches!(wrong.get(b"k").await, Err(RedisError::Down)));
        }
        let anonymous =
            RedisClient::new(opts(format!("redis://127.0.0.1:{}", server.port))).unwrap();
        match anonymous.get(b"k").await {
            Err(RedisError::Server(m)) => assert!(m.contains("NOAUTH"), "{m}"),
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn two_clients_share_entries_and_purges_via_pubsub() {
    let mut server = Server::start(&[]);
    run(async {
        let mut o = opts(server.url());
        o.backoff_max = Duration::from_millis(200);
        let a = RedisClient::new(o.clone()).unwrap();
        let b = RedisClient::new(o.clone()).unwrap();
        a.set(b"shared", b"from a", Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(
            b.get(b"shared").await.unwrap().as_deref(),
            Some(&b"from a"[..])
        );

        let got: Rc<RefCell<Vec<Bytes>>> = Rc::default();
        let stop = StopSignal::new();
        let sub = monoio::spawn(subscribe(
            o.clone(),
            "corvid:purge".into(),
            {
                let got = Rc::clone(&got);
                move |m| got.borrow_mut().push(m)
            },
            stop.clone(),
        ));
        let subscribed =
            || async { (a.subscribers("corvid:purge").await.ok()? >= 1).then_some(()) };
        poll_until(Duration::from_secs(3), "subscription active", subscribed).await;
        a.publish("corvid:purge", b"purge \x00/bucket/key")
            .await
            .unwrap();
        poll_until(Duration::from_secs(3), "message delivered", || async {
            (!got.borrow().is_empty()).then_some(())
        })
        .await;
        assert_eq!(
            got.borrow()[0],
            Bytes::from_static(b"purge \x00/bucket/key")
        );

        // The subscriber survives a Redis restart by itself.
        server.kill();
        server.restart();
        poll_until(Duration::from_secs(5), "resubscribed", || async {
            (a.subscribers("corvid:purge").await.ok()? >= 1).then_some(())
        })
        .await;
        a.publish("corvid:purge", b"second").await.unwrap();
        poll_until(
            Duration::from_secs(3),
            "second message delivered",
            || async { (got.borrow().len() == 2).then_some(()) },
        )
        .await;
        assert_eq!(got.borrow()[1], Bytes::from_static(b"second"));

        stop.stop();
        monoio::time::timeout(Duration::from_secs(1), sub)
            .await
            .expect("subscribe returns once stopped");
    });
}

#[test]
fn a_host_name_url_is_resolved_and_used_by_client_and_subscriber() {
    let server = Server::start(&[]);
    run(async {
        // `localhost` is looked up on the resolver thread (it may also name ::1, where nothing
        // listens: the next address is tried).
        let o = opts(format!("redis://localhost:{}", server.port));
        let c = RedisClient::new(o.clone()).unwrap();
        c.set(b"by-name", b"v", Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(c.get(b"by-name").await.unwrap().as_deref(), Some(&b"v"[..]));

        subscriber_receives(o, &c, b"hello").await;
    });
}

/// A revalidation refreshes a Redis entry in place: the key's TTL, and the age origin and
/// deadline inside the value (so another instance reading the copy sees the restarted age),
/// body and header fields untouched; a key that expired meanwhile is not recreated.
#[test]
fn refresh_moves_the_stored_times_in_place() {
    use corvid::cache::entry::{CachedObject, Meta};
    use corvid::cache::redis_tier;
    let server = Server::start(&[]);
    run(async {
        let o = opts(server.url());
        let prefix = o.key_prefix.clone();
        let c = RedisClient::new(o).unwrap();
        let retain = Duration::from_secs(3600);
        let now = 1_700_000_000_000u64;
        let headers = vec![("ETag".to_string(), "\"e1\"".to_string())];
        let old = CachedObject::new(
            Meta::new(headers.clone(), now - 7_200_000, now - 3_600_000),
            Bytes::from_static(b"the body"),
        );
        redis_tier::store(&c, b"k", &old, 1 << 20, retain, now)
            .await
            .unwrap();
        let new = CachedObject::new(Meta::new(headers, now, now + 60_000), old.body_bytes());
        redis_tier::refresh(&c, &prefix, b"k", &new, retain, now)
            .await
            .unwrap();
        let got = redis_tier::lookup(&c, b"k", retain, now)
            .await
            .unwrap()
            .expect("still stored");
        assert_eq!(got.meta().stored_at_ms, now, "age origin moved");
        assert!(got.meta().expires_at_ms > now, "fresh again");
        assert_eq!(got.body(), old.body());
        assert_eq!(got.meta().etag().as_deref(), Some("\"e1\""));
        // Gone meanwhile: nothing is recreated.
        c.del(b"gone").await.unwrap();
        redis_tier::refresh(&c, &prefix, b"gone", &new, retain, now)
            .await
            .unwrap();
        assert_eq!(c.get(b"gone").await.unwrap(), None);
    });
}

// ---------- TLS (rediss://) ----------

/// A TLS-only redis-server (`--port 0 --tls-port P`) with a fresh test CA; the files must
/// outlive it.
fn tls_server(extra: &[&str]) -> (Server, tls::ServerCertFiles) {
    let files = tls::generate_server_cert_files();
    let server = Server::start_tls(
        &files.cert_pem,
        &files.key_pem,
        &files.ca_pem,
        files.client_config.clone(),
        extra,
    );
    (server, files)
}

/// [`opts`] for a `rediss://` URL, trusting the public roots plus `ca` as corvid builds it.
fn tls_opts(url: String, ca: Option<&std::path::Path>) -> RedisOptions {
    let mut o = opts(url);
    let config = corvid::s3::tls::client_config(ca, &[]).unwrap();
    o.tls = Some(RedisTls::new(&o.target, config).unwrap());
    o
}

#[test]
fn tls_round_trips_pipelining_and_pubsub() {
    let (server, files) = tls_server(&[]);
    assert!(server.url().starts_with("rediss://"));
    run(async {
        let o = tls_opts(server.url(), Some(&files.ca_pem));
        let c = RedisClient::new(o.clone()).unwrap();
        assert_eq!(c.get(b"missing").await.unwrap(), None);
        // Around a TLS record (16 KiB) and the session's 64 KiB buffers, and 4 MiB.
        for (i, len) in [
            0,
            1,
            16_383,
            16_384,
            16_385,
            65_535,
            65_537,
            300_000,
            4 << 20,
        ]
        .into_iter()
        .enumerate()
        {
            let key = format!("tls{i}");
            let value = pattern(len, i as u8);
            c.set(key.as_bytes(), &value, Duration::from_secs(60))
                .await
                .unwrap();
            let got = c.get(key.as_bytes()).await.unwrap().expect("value present");
            assert!(got == value, "value of {len} bytes differs");
        }
        // Many tasks pipelined on one TLS connection: the reader and writer halves share the
        // session, with writes of one batch interleaving reads of another.
        let mut tasks = Vec::new();
        for i in 0..100usize {
            let c = c.clone();
            tasks.push(monoio::spawn(async move {
                let key = format!("p{i}");
                let value = pattern(1 + (i * 997) % 70_000, i as u8);
                c.set(key.as_bytes(), &value, Duration::from_secs(60))
                    .await
                    .unwrap();
                let got = c.get(key.as_bytes()).await.unwrap().unwrap();
                assert!(got == value, "task {i} got the wrong value");
            }));
        }
        for t in tasks {
            t.await;
        }
        assert_eq!(c.errors(), 0);
        assert!(c.is_up());
        subscriber_receives(o, &c, b"over tls").await;
        // By name: `localhost` is in the certificate as a DNS name.
        let by_name = tls_opts(
            format!("rediss://localhost:{}", server.port),
            Some(&files.ca_pem),
        );
        let n = RedisClient::new(by_name.clone()).unwrap();
        assert_eq!(
            n.get(b"tls1").await.unwrap().as_deref(),
            Some(&pattern(1, 1)[..])
        );
        subscriber_receives(by_name, &n, b"by name").await;
    });
    assert_eq!(server.key_count(), Some(109));
}

#[test]
fn tls_auth_and_select_from_the_url() {
    let (server, files) = tls_server(&["--requirepass", "s3cr:t@"]);
    run(async {
        let base = format!("rediss://:s3cr%3At%40@127.0.0.1:{}", server.port);
        let db3 = RedisClient::new(tls_opts(format!("{base}/3"), Some(&files.ca_pem))).unwrap();
        let db0 = RedisClient::new(tls_opts(base.clone(), Some(&files.ca_pem))).unwrap();
        db3.set(b"k", b"in db 3", Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(
            db3.get(b"k").await.unwrap().as_deref(),
            Some(&b"in db 3"[..])
        );
        assert_eq!(db0.get(b"k").await.unwrap(), None);
        let wrong = RedisClient::new(tls_opts(
            format!("rediss://:nope@127.0.0.1:{}", server.port),
            Some(&files.ca_pem),
        ))
        .unwrap();
        match wrong.get(b"k").await {
            Err(RedisError::Protocol(m)) => assert!(m.contains("AUTH"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(!wrong.is_up());
    });
}

/// Every way TLS can go wrong fails the operation promptly (no hang until the timeout where
/// the server answers), takes the client down like a refused connection, and is counted.
#[test]
fn tls_failures_are_fast_errors_that_take_the_tier_down() {
    let (server, files) = tls_server(&[]);
    // A certificate for the IP address 127.0.0.1 only (no DNS name), on a server that also
    // listens on 127.0.0.2: reached by another address or by a name, it does not match.
    let other = tls::TestCa::new();
    let pair = other.leaf(&[], &[std::net::Ipv4Addr::LOCALHOST.into()]);
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let (cert, key, ca) = (
        write("cert.pem", &pair.cert_pem),
        write("key.pem", &pair.key_pem),
        write("ca.pem", &other.cert_pem()),
    );
    let misnamed = Server::start_tls(
        &cert,
        &key,
        &ca,
        other.client_config(),
        &["--bind", "127.0.0.1", "127.0.0.2"],
    );
    let plain = Server::start(&[]);
    run(async {
        let cases = [
            // The public roots only: the test CA is unknown.
            (tls_opts(server.url(), None), "UnknownIssuer"),
            (
                tls_opts(format!("rediss://127.0.0.2:{}", misnamed.port), Some(&ca)),
                "not valid for name",
            ),
            (
                tls_opts(format!("rediss://localhost:{}", misnamed.port), Some(&ca)),
                "not valid for name",
            ),
        ];
        for (mut o, needle) in cases {
            o.timeout = Duration::from_secs(2);
            o.backoff_initial = Duration::from_secs(60);
            let url = o.target.authority();
            let c = RedisClient::new(o).unwrap();
            let start = Instant::now();
            match c.get(b"k").await {
                Err(RedisError::Tls(m)) => assert!(m.contains(needle), "{url}: {m}"),
                other => panic!("{url}: {other:?}"),
            }
            assert!(
                start.elapsed() < Duration::from_secs(1),
                "{url}: not prompt"
            );
            assert!(!c.is_up(), "{url}");
            assert!(matches!(c.get(b"k").await, Err(RedisError::Down)), "{url}");
            assert_eq!(c.errors(), 2, "{url}");
        }
        // Mixed-up ports: TLS to a plain Redis (which reads the ClientHello as an inline
        // command and may wait for its end of line), plain RESP to the TLS port. Never a
        // success, never a hang past the timeout.
        for mut o in [
            tls_opts(format!("rediss://127.0.0.1:{}", plain.port), None),
            opts(format!("redis://127.0.0.1:{}", server.port)),
        ] {
            o.timeout = Duration::from_millis(300);
            let url = o.target.authority();
            let c = RedisClient::new(o).unwrap();
            let start = Instant::now();
            let r = c.get(b"k").await;
            assert!(
                matches!(
                    r,
                    Err(RedisError::Tls(_) | RedisError::Timeout | RedisError::Io(_))
                ),
                "{url}: {r:?}"
            );
            assert!(start.elapsed() < Duration::from_secs(1), "{url}");
            assert!(!c.is_up(), "{url}");
        }
    });
    assert_eq!(server.key_count(), Some(0));
    drop(files);
}

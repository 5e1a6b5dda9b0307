//! The upstream connection pool against origins that close idle keep-alive connections
//! (issue 8): no request may fail because a pooled connection died while idle, and
//! `pool_idle_timeout` retires pooled connections before reuse.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use crate::common::http::{self, Conn};
use crate::common::*;

/// Every request reaches the origin.
const NO_CACHE: &str = "\n[cache.memory]\ncapacity = 0\n";
/// Concurrent client requests per burst: enough to fill each worker's pool with several
/// connections.
const BURST: usize = 16;

fn key(i: usize) -> String {
    format!("obj/{i}.bin")
}

/// One client connection: a GET and a HEAD of object `i`, in an order that alternates with
/// `i + cycle` so that both methods meet dead pooled connections. Returns the problems seen.
fn get_and_head(addr: std::net::SocketAddr, i: usize, cycle: usize, body: &[u8]) -> Vec<String> {
    let path = format!("/pool/{}", key(i));
    let mut conn = Conn::connect(addr);
    let mut problems = Vec::new();
    let methods = if (i + cycle).is_multiple_of(2) {
        ["GET", "HEAD"]
    } else {
        ["HEAD", "GET"]
    };
    for m in methods {
        let r = conn.request(m, &path, &[]);
        if r.status != 200 {
            problems.push(format!(
                "cycle {cycle} {m} {path}: {} {}",
                r.status,
                r.text()
            ));
            continue;
        }
        let len = r.header("content-length").map(str::to_owned);
        if len != Some(body.len().to_string()) {
            problems.push(format!("cycle {cycle} {m} {path}: content-length {len:?}"));
        }
        if m == "GET" && r.body != body {
            problems.push(format!("cycle {cycle} GET {path}: body differs"));
        }
    }
    problems
}

/// Seeds the objects the bursts read.
fn seed(origin: &Origin) -> Arc<Vec<Vec<u8>>> {
    origin.create_bucket("pool");
    let bodies: Vec<Vec<u8>> = (0..BURST)
        .map(|i| pattern_bytes(1 + i * 7_919, i as u64))
        .collect();
    for (i, b) in bodies.iter().enumerate() {
        origin.put("pool", &key(i), b);
    }
    Arc::new(bodies)
}

/// `[[buckets]]` for `endpoint` keeping pooled connections far longer than the relay does, so
/// after each idle gap every pooled connection is dead when it is taken.
fn pool_bucket(endpoint: &str, extra: &str) -> String {
    let extra = format!("pool_idle_timeout = \"30s\"\n{extra}");
    bucket_toml_for("pool", "/pool", endpoint, "pool", &extra)
}

/// Four cycles of a burst of [`BURST`] concurrent client connections, then idleness until the
/// relay closed every origin connection; asserts that no request failed.
fn bursts_after_idle(corvid: &Corvid, relay: &IdleRelay, bodies: &Arc<Vec<Vec<u8>>>) {
    let addr = corvid.addr();
    let mut problems = Vec::new();
    for cycle in 0..4 {
        let barrier = Arc::new(Barrier::new(BURST));
        let threads: Vec<_> = (0..BURST)
            .map(|i| {
                let (barrier, bodies) = (barrier.clone(), bodies.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    get_and_head(addr, i, cycle, &bodies[i])
                })
            })
            .collect();
        for t in threads {
            problems.extend(t.join().expect("client thread"));
        }
        // Idle until the origin side closed every connection corvid holds in its pools.
        assert!(
            wait_until(Duration::from_secs(10), || relay.open() == 0),
            "cycle {cycle}: the relay still has {} open connections",
            relay.open()
        );
    }
    assert!(
        problems.is_empty(),
        "{} failed requests (of {}):\n{}",
        problems.len(),
        4 * BURST * 2,
        problems.join("\n")
    );
    // Requests after the first burst found their pooled connections dead and opened new ones.
    assert!(relay.carried() >= 4, "carried {}", relay.carried());
}

#[test]
fn origin_closing_idle_connections_never_fails_a_request() {
    let origin = Origin::start();
    let bodies = seed(&origin);
    // The origin closes connections idle for 300 ms.
    let relay = IdleRelay::start(origin.addr(), Some(Duration::from_millis(300)));
    let corvid = Corvid::start(&format!(
        "{}{}{NO_CACHE}",
        server_toml(free_port()),
        pool_bucket(&relay.endpoint(), ""),
    ));
    bursts_after_idle(&corvid, &relay, &bodies);
}

/// The same over TLS: the relay closes the TCP connection under the TLS session (no
/// close_notify), which rustls may report as an unexpected EOF.
#[test]
fn https_origin_closing_idle_connections_never_fails_a_request() {
    let origin = Origin::start();
    let bodies = seed(&origin);
    let tls = TlsTerminator::start(origin.addr());
    let relay = IdleRelay::start(tls.addr(), Some(Duration::from_millis(300)));
    let ca = format!(
        "ca_file = {}",
        toml_str(&tls.ca_pem_path().to_string_lossy())
    );
    let endpoint = format!("https://{}", relay.addr());
    let corvid = Corvid::start(&format!(
        "{}{}{NO_CACHE}",
        server_toml(free_port()),
        pool_bucket(&endpoint, &ca),
    ));
    bursts_after_idle(&corvid, &relay, &bodies);
}

#[test]
fn pool_idle_timeout_retires_pooled_connections() {
    let origin = Origin::start();
    origin.create_bucket("pool");
    origin.put("pool", "k", b"hello");
    // An origin that never closes idle connections: only corvid's own timeout retires them.
    let relay = IdleRelay::start(origin.addr(), None);
    // One worker, so that every request uses the same pool.
    let corvid = Corvid::start(&format!(
        "[server]\nlisten = \"127.0.0.1:{}\"\nworkers = 1\n{}{NO_CACHE}",
        free_port(),
        bucket_toml_for(
            "pool",
            "/pool",
            &relay.endpoint(),
            "pool",
            "pool_idle_timeout = \"1s\""
        ),
    ));
    let addr = corvid.addr();
    let get = || {
        let r = http::get(addr, "/pool/k", &[]);
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
    };
    get();
    assert_eq!(relay.carried(), 1);
    // Within the timeout the pooled connection is reused.
    get();
    assert_eq!(relay.carried(), 1);
    // Time passing is the condition here: wait well past the 1 s timeout.
    std::thread::sleep(Duration::from_millis(2_500));
    get();
    assert_eq!(
        relay.carried(),
        2,
        "an expired pooled connection was reused"
    );
    // The expired connection was closed, not kept.
    assert!(
        wait_until(Duration::from_secs(5), || relay.open() == 1),
        "open relayed connections: {}",
        relay.open()
    );
}

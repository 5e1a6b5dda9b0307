//! Stopping as an operator sees it: SIGTERM with all three tiers configured closes the listeners
//! at once (new connections are refused, never accepted and left hanging or reset), finishes
//! what is in flight, and leaves the port free for the next instance at once. SIGHUP never
//! ends the process.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use crate::common::http::{self, Conn};
use crate::common::redis_server::RedisServer;
use crate::common::*;

const BIG: usize = 24 << 20;

fn all_tiers(port: u16, origin: &Origin, disk: &Path, redis: &RedisServer) -> String {
    format!(
        "{}shutdown_grace = \"30s\"\n{}\n[cache]\nmax_object_size = \"32MiB\"\n\n\
         [cache.memory]\ncapacity = \"64MiB\"\n\n\
         [cache.disk]\ndir = {}\ncapacity = \"96MiB\"\nsegment_size = \"32MiB\"\n\n\
         [cache.redis]\nurl = {}\ntimeout = \"200ms\"\n",
        server_toml(port),
        bucket_toml("drain", "/drain", origin),
        toml_str(&disk.to_string_lossy()),
        toml_str(&redis.url()),
    )
}

/// What became of one connection attempt during the drain.
#[derive(Debug, PartialEq)]
enum Attempt {
    Refused,
    Answered,
    /// Accepted, then reset, hung or answered incompletely: the defect.
    Broken(String),
}

/// Connects and asks for `/health` on a connection of its own; the answer must be complete.
fn attempt(addr: SocketAddr) -> Attempt {
    let mut s = match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Attempt::Refused,
        Err(e) => return Attempt::Broken(format!("connect: {e}")),
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    if let Err(e) = s.write_all(b"GET /health HTTP/1.1\r\nHost: corvid\r\n\r\n") {
        return Attempt::Broken(format!("write: {e}"));
    }
    // The drain answers with `Connection: close`, so the answer ends at EOF.
    let mut answer = Vec::new();
    match s.read_to_end(&mut answer) {
        Ok(_) => {}
        Err(e) => return Attempt::Broken(format!("read: {e} after {} bytes", answer.len())),
    }
    let text = String::from_utf8_lossy(&answer);
    if text.starts_with("HTTP/1.1 200") && text.ends_with(r#"{"status":"ok"}"#) {
        Attempt::Answered
    } else {
        Attempt::Broken(format!("incomplete answer: {text:?}"))
    }
}

#[test]
fn sigterm_with_all_tiers_refuses_new_connections_finishes_downloads_and_frees_the_port() {
    let redis = RedisServer::start(&[]);
    let origin = Origin::start();
    origin.create_bucket("drain");
    let body = pattern_bytes(BIG, 11);
    origin.put("drain", "big.bin", &body);
    let disk = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = all_tiers(port, &origin, disk.path(), &redis);
    let mut corvid = Corvid::start(&config);
    let addr = corvid.addr();

    // An idle keep-alive connection: closed at once by the drain.
    let mut idle = Conn::connect(addr);
    assert_eq!(idle.request("GET", "/health", &[]).status, 200);

    // A download in flight that the client reads slowly: the drain must wait for it.
    let mut download = Conn::connect(addr);
    download.set_timeout(Duration::from_secs(20));
    download.send_request("GET", "/drain/big.bin", &[], &[]);
    let head = download.read_head();
    assert_eq!(head.status, 200);
    let mut got = download.read_body_chunk(64 * 1024);

    corvid.signal(libc::SIGTERM);
    // New connection attempts back to back from the moment of the signal, for half a second,
    // while the download holds the drain open: the first ones race the listeners' closing
    // (the previous code accepted some of those and closed them unanswered).
    let mut outcomes = Vec::new();
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_millis(500) && outcomes.len() < 2000 {
        outcomes.push(attempt(addr));
    }
    let broken: Vec<_> = outcomes
        .iter()
        .filter(|a| matches!(a, Attempt::Broken(_)))
        .collect();
    assert!(
        broken.is_empty(),
        "attempts must be refused or answered: {outcomes:?}\n{}",
        corvid.stderr()
    );
    assert!(
        outcomes.contains(&Attempt::Refused),
        "the listeners closed during the drain: {outcomes:?}"
    );
    assert!(idle.closed_by_peer(), "idle keep-alive connection closed");
    assert!(corvid.is_running(), "the drain waits for the download");

    while !download.body_done() {
        got.extend(download.read_body_chunk(1 << 20));
    }
    assert_eq!(got.len(), BIG);
    assert!(got == body, "the in-flight download completed byte-exact");
    let status = corvid
        .wait_exit(Duration::from_secs(30))
        .expect("corvid exits after the drain");
    assert_eq!(status.code(), Some(0), "{}", corvid.stderr());
    assert!(is_refused(addr), "nothing listens after exit");

    // A new instance on the same port right away: its very first request is served (no
    // retry), from the disk tier the first instance filled.
    let mut next = Corvid::start_with(&config, Readiness::None, &[]);
    assert!(
        wait_until(Duration::from_secs(10), || next
            .stderr()
            .contains("listening on")),
        "the new instance listens:\n{}",
        next.stderr()
    );
    let r = http::try_request(addr, "GET", "/drain/big.bin", &[], Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("first request to the new instance: {e}"));
    assert_eq!(r.status, 200);
    assert!(r.body == body);
    assert!(next.is_running());
}

#[test]
fn sighup_is_logged_and_the_process_keeps_serving() {
    let origin = Origin::start();
    origin.create_bucket("hup");
    let body = pattern_bytes(4 << 20, 5);
    origin.put("hup", "k.bin", &body);
    let corvid = Corvid::start(&format!(
        "{}{}",
        server_toml(free_port()),
        bucket_toml("hup", "/hup", &origin)
    ));
    let addr = corvid.addr();
    let mut download = Conn::connect(addr);
    download.set_timeout(Duration::from_secs(20));
    download.send_request("GET", "/hup/k.bin", &[], &[]);
    assert_eq!(download.read_head().status, 200);
    let mut got = download.read_body_chunk(64 * 1024);

    // One at a time: signals that arrive together are delivered once.
    for n in 1..=2 {
        corvid.signal(libc::SIGHUP);
        assert!(
            wait_until(Duration::from_secs(5), || corvid
                .stderr()
                .matches("SIGHUP received")
                .count()
                == n),
            "SIGHUP {n} is logged:\n{}",
            corvid.stderr()
        );
    }
    while !download.body_done() {
        got.extend(download.read_body_chunk(1 << 20));
    }
    assert!(got == body, "the download in flight was not cut");
    let r = http::get(addr, "/hup/k.bin", &[]);
    assert_eq!((r.status, r.header("x-cache")), (200, Some("HIT")));
    assert!(r.body == body);
}

/// Waits (5 s at most) until corvid counts `n` open client connections besides the probe's
/// own (the `corvid_connections_open` gauge): they were accepted.
fn connections_open(corvid: &Corvid, n: u64) -> bool {
    let line = format!("corvid_connections_open {}", n + 1);
    wait_until(Duration::from_secs(5), || {
        let m = http::get(corvid.addr(), "/metrics", &[]).text();
        m.lines().any(|l| l == line)
    })
}

/// Connections that never send a request do not hold the drain up to `header_timeout`: after a
/// short last call they are closed and the process exits.
#[test]
fn idle_connections_without_a_request_do_not_hold_the_drain() {
    let mut corvid = Corvid::start(&format!(
        "{}header_timeout = \"60s\"\nshutdown_grace = \"60s\"\n{}",
        server_toml(free_port()),
        bucket_toml_for("b1", "/b1", "http://127.0.0.1:9", "b1", "")
    ));
    let idle: Vec<TcpStream> = (0..50)
        .map(|_| TcpStream::connect(corvid.addr()).unwrap())
        .collect();
    // Every one of them accepted by corvid.
    assert!(
        connections_open(&corvid, 50),
        "the idle connections were accepted"
    );
    let started = std::time::Instant::now();
    corvid.signal(libc::SIGTERM);
    let status = corvid
        .wait_exit(Duration::from_secs(20))
        .expect("exits long before header_timeout");
    assert_eq!(status.code(), Some(0));
    assert!(started.elapsed() < Duration::from_secs(10));
    drop(idle);
}

/// Load balancers and Kubernetes take an instance out of rotation by its readiness: `/ready`
/// answers 503 from the moment shutdown begins (here to a request whose head was in progress
/// when SIGTERM arrived, which the drain still answers), with `Connection: close`.
#[test]
fn ready_answers_503_as_soon_as_shutdown_begins() {
    let origin = Origin::start();
    origin.create_bucket("rdy");
    let mut corvid = Corvid::start(&format!(
        "{}{}",
        server_toml(free_port()),
        bucket_toml("rdy", "/rdy", &origin)
    ));
    assert_eq!(http::get(corvid.addr(), "/ready", &[]).status, 200);
    let mut conn = Conn::connect(corvid.addr());
    conn.send(b"GET /ready HTTP/1.1\r\nHost: corvid\r\n");
    // Taken by a worker...
    assert!(connections_open(&corvid, 1), "the connection was accepted");
    corvid.signal(libc::SIGTERM);
    // ...and every worker has begun its shutdown before the head is complete.
    assert!(
        wait_until(Duration::from_secs(5), || {
            corvid
                .stderr()
                .matches(": shutting down (no new connections")
                .count()
                == 2
        }),
        "the workers began shutting down: {}",
        corvid.stderr()
    );
    conn.send(b"\r\n");
    let r = conn.read_response();
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.connection_close());
    assert!(r.text().contains("shutting_down"), "{}", r.text());
    let status = corvid.wait_exit(Duration::from_secs(10)).expect("exits");
    assert_eq!(status.code(), Some(0));
}

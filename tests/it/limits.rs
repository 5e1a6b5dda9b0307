//! Running out of descriptors: a flood of connections that never send a request must not lock
//! real clients out, and must not flood the log.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::http;
use crate::common::*;

/// Opens `n` connections to `addr` and leaves them idle (never sends a byte).
fn flood(addr: std::net::SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok())
        .collect()
}

/// Log lines about accepting and the connection limit.
fn accept_log_lines(corvid: &Corvid) -> usize {
    corvid
        .stderr()
        .lines()
        .filter(|l| l.contains("accepting connections") || l.contains("connection limit"))
        .count()
}

fn flood_config(origin: &Origin) -> String {
    format!(
        "{}header_timeout = \"30s\"\n{}",
        server_toml(free_port()),
        bucket_toml("flood", "/flood", origin)
    )
}

/// soft = hard = 256: each worker's share of client connections is what fits beside the
/// origin pools. 600 idle connections are more than fit; a real request for an uncached object
/// (which needs an origin connection too) is still answered promptly.
#[test]
fn idle_flood_beyond_the_connection_share_does_not_lock_clients_out() {
    let origin = Origin::start();
    origin.create_bucket("flood");
    let body = pattern_bytes(10_000, 3);
    origin.put("flood", "real.bin", &body);
    origin.put("flood", "second.bin", b"second");
    let corvid = Corvid::start_with_nofile(&flood_config(&origin), 256);

    let idle = flood(corvid.addr(), 600);
    assert!(idle.len() >= 500, "the kernel queued the flood");
    let started = Instant::now();
    let r = http::try_request(
        corvid.addr(),
        "GET",
        "/flood/real.bin",
        &[],
        Duration::from_secs(3),
    )
    .expect("a real request is answered during the flood");
    assert_eq!(r.status, 200);
    assert!(r.body == body);
    assert!(started.elapsed() < Duration::from_secs(3));
    // And again (a second miss, a new origin request), with the flood still connected.
    let r = http::try_request(
        corvid.addr(),
        "GET",
        "/flood/second.bin",
        &[],
        Duration::from_secs(3),
    )
    .expect("a second request is answered too");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"second"[..]));
    assert!(
        corvid.open_fds() <= 256,
        "within the limit: {}",
        corvid.open_fds()
    );
    let log = corvid.stderr();
    assert!(
        log.contains("open-file limit: 256")
            && log.contains("client connections per worker (server.max_connections unset")
            && !log.contains("do not fit"),
        "the limit and each worker's share are logged at start; max_connections left at its \
         default (what fits) is no warning:\n{log}"
    );
    let lines = accept_log_lines(&corvid);
    assert!(
        (1..=8).contains(&lines),
        "state changes logged, not attempts: {lines} lines\n{}",
        corvid.stderr()
    );
    drop(idle);
}

/// A limit so small that the minimal per-worker share does not fit: accepting itself fails
/// with EMFILE. The oldest idle connections are closed in batches to make room, a real
/// request (a cache hit: no origin descriptor needed) is answered, and the failures are logged
/// per state change.
#[test]
fn accept_failing_for_lack_of_descriptors_reclaims_idle_connections() {
    let origin = Origin::start();
    origin.create_bucket("flood");
    origin.put("flood", "hot.bin", b"hot object");
    let config =
        flood_config(&origin).replace("\n[[buckets]]", "\n[[buckets]]\nmax_idle_connections = 1");
    let corvid = Corvid::start_with_nofile(&config, 40);
    let r = http::get(corvid.addr(), "/flood/hot.bin", &[]);
    assert_eq!(r.status, 200, "warmed into the memory cache");

    let idle = flood(corvid.addr(), 300);
    for i in 0..3 {
        let started = Instant::now();
        let r = http::try_request(
            corvid.addr(),
            "GET",
            "/flood/hot.bin",
            &[],
            Duration::from_secs(3),
        )
        .unwrap_or_else(|e| panic!("request {i} during the flood: {e}\n{}", corvid.stderr()));
        assert_eq!(
            (r.status, r.header("x-cache"), r.body.as_slice()),
            (200, Some("HIT"), &b"hot object"[..])
        );
        assert!(started.elapsed() < Duration::from_secs(3));
    }
    let log = corvid.stderr();
    assert!(
        log.contains("accepting connections failed"),
        "EMFILE was hit and logged:\n{log}"
    );
    let lines = accept_log_lines(&corvid);
    assert!(
        lines <= 12,
        "state changes logged, not attempts: {lines} lines\n{log}"
    );
    drop(idle);
}

/// `corvid check` warns (and still says the config is valid) when `max_connections` x workers
/// and the pools do not fit the open-file limit it would run with; it is quiet when they fit.
#[test]
fn check_warns_when_max_connections_do_not_fit_the_open_file_limit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let run = |max_connections: Option<usize>, nofile: u64| {
        let line = max_connections.map_or(String::new(), |n| format!("max_connections = {n}\n"));
        std::fs::write(
            &path,
            format!(
                "{}{line}{}",
                server_toml(8080),
                bucket_toml_for("b1", "/b1", "http://127.0.0.1:9", "b1", "")
            ),
        )
        .unwrap();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_corvid"));
        cmd.args(["check", "-c"]).arg(&path);
        limit_open_files(&mut cmd, nofile);
        cmd.output().unwrap()
    };
    let out = run(Some(10_000), 1024);
    assert_eq!(out.status.code(), Some(0), "a warning, not an error");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning") && err.contains("server.max_connections = 10000"),
        "{err}"
    );
    let out = run(Some(100), 1024);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("warning"),
        "no warning when it fits"
    );
    // Left unset, max_connections is what fits: no warning, however small the limit.
    for nofile in [1024, 64] {
        let out = run(None, nofile);
        assert_eq!(out.status.code(), Some(0));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("warning"), "nofile {nofile}: {err}");
    }
}

/// `serve` with `max_connections` left unset starts without a warning (the demo's case: a
/// limit of 20000 shared by two workers); a configured value that does not fit still warns.
#[test]
fn default_max_connections_starts_without_a_warning() {
    let origin = Origin::start();
    origin.create_bucket("quiet");
    let toml = one_bucket_toml(free_port(), &origin, "quiet", "", "");
    let corvid = Corvid::start_with_nofile(&toml, 20_000);
    assert_eq!(http::get(corvid.addr(), "/quiet/none", &[]).status, 404);
    // The share is logged where the warning would be, once the server runs.
    let logged =
        |c: &Corvid, what: &str| wait_until(Duration::from_secs(10), || c.stderr().contains(what));
    assert!(
        logged(&corvid, "client connections per worker"),
        "{}",
        corvid.stderr()
    );
    let log = corvid.stderr();
    assert!(
        !log.contains("WARN"),
        "a default config starts quietly:\n{log}"
    );
    drop(corvid);

    let toml = one_bucket_toml(free_port(), &origin, "quiet", "", "").replacen(
        "[server]\n",
        "[server]\nmax_connections = 10000\n",
        1,
    );
    let corvid = Corvid::start_with_nofile(&toml, 20_000);
    assert!(logged(&corvid, "server.max_connections = 10000"));
    let log = corvid.stderr();
    assert!(
        log.contains("WARN") && log.contains("do not fit the open-file limit of 20000"),
        "a configured value that does not fit warns:\n{log}"
    );
}

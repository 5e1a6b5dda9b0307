//! The process as an operator sees it: CLI exit codes and messages, health/ready/metrics,
//! graceful shutdown on SIGTERM.

use std::process::Command;
use std::time::Duration;

use crate::common::http::{self, Conn};
use crate::common::*;

fn corvid_cmd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_corvid"))
}

fn write_config(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
    let p = dir.path().join("c.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn check_and_version_and_usage() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_config(
        &dir,
        &format!(
            "{}{}",
            server_toml(8080),
            bucket_toml_for("b1", "/b1", "http://127.0.0.1:9", "b1", "")
        ),
    );
    let out = corvid_cmd()
        .args(["check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bad = write_config(
        &dir,
        "[server]\nlisten = \"127.0.0.1:8080\"\nheader_timeout = \"ten seconds\"\n\n[[buckets]]\nname = \"b\"\nprefix = \"/admin\"\nendpoint = \"ftp://x\"\nregion = \"r\"\nbucket = \"bb\"\naccess_key = \"${CORVID_TEST_UNSET_VAR}\"\nsecret_key = \"s\"\nbogus = 1\n",
    );
    let out = corvid_cmd()
        .args(["check", "-c"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "server.header_timeout",
        "buckets[0].prefix",
        "buckets[0].endpoint",
        "CORVID_TEST_UNSET_VAR",
        "bogus",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    // serve refuses the same config with exit 1 and the same explanation.
    let out = corvid_cmd()
        .args(["serve", "-c"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("buckets[0].prefix"));

    let out = corvid_cmd().arg("--version").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    let out = corvid_cmd().arg("serve").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "usage error");
    let out = corvid_cmd()
        .args(["check", "-c", "/nonexistent/corvid.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn port_in_use_is_a_startup_error() {
    let blocker = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = blocker.local_addr().unwrap().port();
    let mut c = Corvid::spawn(&format!(
        "{}{}",
        server_toml(port),
        bucket_toml_for("b1", "/b1", "http://127.0.0.1:9", "b1", "")
    ));
    let status = c
        .wait_exit(Duration::from_secs(10))
        .expect("corvid should exit");
    assert_eq!(status.code(), Some(1));
    assert!(c.stderr().contains("cannot listen"), "{}", c.stderr());
}

#[test]
fn health_ready_and_metrics() {
    let origin = Origin::start();
    origin.create_bucket("obs");
    origin.put("obs", "k", b"value");
    let corvid = Corvid::start(&format!(
        "{}{}",
        server_toml(free_port()),
        bucket_toml("obs", "/obs", &origin)
    ));
    let h = http::get(corvid.addr(), "/health", &[]);
    assert_eq!((h.status, h.text().as_str()), (200, r#"{"status":"ok"}"#));
    let r = http::get(corvid.addr(), "/ready", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["buckets"]["obs"]["reachable"], true);
    assert_eq!(
        http::send_raw(
            corvid.addr(),
            b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
        )
        .status,
        405
    );

    for _ in 0..3 {
        assert_eq!(http::get(corvid.addr(), "/obs/k", &[]).status, 200);
    }
    assert_eq!(http::get(corvid.addr(), "/obs/missing", &[]).status, 404);
    let m = http::get(corvid.addr(), "/metrics", &[]);
    assert_eq!(m.status, 200);
    assert!(m
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let mut text = metrics_counting(corvid.addr(), 4);
    // Connections the earlier requests closed are counted until their worker sees the close:
    // wait until only the scrape's own remains.
    let only_this = wait_until(Duration::from_secs(5), || {
        text = http::get(corvid.addr(), "/metrics", &[]).text();
        text.contains("corvid_connections_open 1\n")
    });
    assert!(only_this, "connections_open never back to 1:\n{text}");
    for needle in [
        "corvid_requests_total{bucket=\"obs\",method=\"GET\",status=\"2xx\"} 3",
        "corvid_requests_total{bucket=\"obs\",method=\"GET\",status=\"4xx\"} 1",
        // One fill, two memory hits; the 404 is not cached.
        "corvid_upstream_requests_total{bucket=\"obs\",outcome=\"2xx\"} 1",
        "corvid_upstream_requests_total{bucket=\"obs\",outcome=\"4xx\"} 1",
        "corvid_cache_hits_total{layer=\"memory\",bucket=\"obs\"} 2",
        "corvid_cache_misses_total{bucket=\"obs\"} 2",
        "corvid_cache_entries{layer=\"memory\"} 1",
        "corvid_request_duration_seconds_count{bucket=\"obs\"} 4",
        "corvid_build_info{version=",
        "corvid_connections_open 1",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

#[test]
fn sigterm_drains_in_flight_requests_then_exits_0() {
    let origin = Origin::start();
    origin.create_bucket("slow");
    origin.put("slow", "k", b"finished");
    let mut corvid = Corvid::start(&format!(
        "{}shutdown_grace = \"10s\"\n{}",
        server_toml(free_port()),
        bucket_toml("slow", "/slow", &origin)
    ));
    let addr = corvid.addr();
    // An idle keep-alive connection must not hold shutdown up.
    let mut idle = Conn::connect(addr);
    assert_eq!(idle.request("GET", "/health", &[]).status, 200);

    origin.set_delay(Duration::from_millis(1500));
    let before = origin.count("GET");
    let inflight = std::thread::spawn(move || http::get(addr, "/slow/k", &[]));
    assert!(
        wait_until(Duration::from_secs(10), || origin.count("GET") > before),
        "the request reached the origin"
    );
    corvid.signal(libc::SIGTERM);
    let r = inflight.join().unwrap();
    assert_eq!(r.status, 200, "in-flight request completed");
    assert_eq!(r.body, b"finished");
    let status = corvid
        .wait_exit(Duration::from_secs(10))
        .expect("corvid exits after the drain");
    assert_eq!(status.code(), Some(0), "{}", corvid.stderr());
    assert!(idle.closed_by_peer());
    assert!(is_refused(addr), "no longer accepting");
}

/// Keep-alive clients with think time between requests are answered every time (a request
/// sent some tens of milliseconds after the previous answer was once lost on io_uring).
#[test]
fn keep_alive_requests_after_pauses_are_answered() {
    let corvid = Corvid::start(&format!(
        "{}{}",
        server_toml(free_port()),
        bucket_toml_for("b1", "/b1", "http://127.0.0.1:9", "b1", "")
    ));
    let mut c = Conn::connect(corvid.addr());
    c.set_timeout(Duration::from_secs(5));
    // The pauses are the stimulus (the client's think time), not synchronisation.
    for pause_ms in [0u64, 5, 30, 100, 300] {
        std::thread::sleep(Duration::from_millis(pause_ms));
        assert_eq!(
            c.request("GET", "/health", &[]).status,
            200,
            "after {pause_ms} ms"
        );
    }
}

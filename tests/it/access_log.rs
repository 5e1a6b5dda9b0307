//! The access log through the real binary: one JSON line per request with the cache status,
//! the origin's answer and the client, never a query token; sampling of successes; reopened
//! by name on SIGUSR1 (logrotate).

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::common::http;
use crate::common::*;

/// The access log's lines other than the harness's own `/health` probes, once there are at
/// least `n` (bounded wait: lines are handed to the writer at least every 200 ms).
fn lines(path: &Path, n: usize) -> Vec<Value> {
    let mut got = Vec::new();
    let ok = wait_until(Duration::from_secs(10), || {
        got = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .filter(|l| l["path"] != "/health")
            .collect();
        got.len() >= n
    });
    assert!(ok, "{} lines in {}, wanted {n}", got.len(), path.display());
    got
}

fn corvid_logging(origin: &Origin, bucket: &str, log: &Path, sample: &str) -> Corvid {
    let log_toml = format!(
        "\n[log]\naccess = {}\nsample = {sample}\n",
        toml_str(log.to_str().unwrap())
    );
    Corvid::start(&one_bucket_toml(free_port(), origin, bucket, "", &log_toml))
}

#[test]
fn every_request_gets_a_line_with_cache_and_origin_facts() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let origin = Origin::start();
    origin.create_bucket("logged");
    origin.put("logged", "a b.txt", b"hello log");
    let corvid = corvid_logging(&origin, "logged", &log, "1.0");
    let addr = corvid.addr();
    let ua = [("user-agent", "test-agent/1 \"quoted\"")];
    assert_eq!(
        http::get(addr, "/logged/a%20b.txt", &ua).header("x-cache"),
        Some("MISS")
    );
    assert_eq!(
        http::get(addr, "/logged/a%20b.txt?token=s3cr3t", &ua).header("x-cache"),
        Some("HIT")
    );
    assert_eq!(http::get(addr, "/logged/missing", &[]).status, 404);

    // Two workers' lines may interleave.
    let got = lines(&log, 3);
    assert_eq!(got.len(), 3, "{got:?}");
    let find = |status: u64, cache: &str| {
        got.iter()
            .find(|l| l["status"] == status && l["cache"] == cache)
            .unwrap_or_else(|| panic!("no {status} {cache} line in {got:?}"))
    };
    let (miss, hit, missing) = (find(200, "MISS"), find(200, "HIT"), find(404, "MISS"));
    assert_eq!(miss["method"], "GET");
    assert_eq!(miss["bucket"], "logged");
    assert_eq!(miss["path"], "/logged/a%20b.txt");
    assert_eq!(miss["status"].as_u64(), Some(200));
    // Head and body: more than the 9 body bytes (exact counts in the test below).
    assert!(miss["bytes"].as_u64().unwrap() > 9, "{miss}");
    assert_eq!(miss["cache"], "MISS");
    assert_eq!(miss["upstream"], 200);
    assert!(miss["upstream_ms"].as_f64().is_some());
    assert_eq!(miss["ua"], "test-agent/1 \"quoted\"");
    assert!(miss["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(miss["id"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(miss["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        (hit["cache"].as_str(), hit["layer"].as_str()),
        (Some("HIT"), Some("memory"))
    );
    assert!(hit["upstream"].is_null(), "a hit asks no origin");
    assert_eq!(hit["path"], "/logged/a%20b.txt", "no query in the log");
    assert_eq!(
        (missing["status"].as_u64(), missing["upstream"].as_u64()),
        (Some(404), Some(404))
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains("s3cr3t"),
        "a query token never reaches the log"
    );
}

#[test]
fn successes_are_sampled_errors_always_logged_and_sigusr1_reopens_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let origin = Origin::start();
    origin.create_bucket("sampled");
    origin.put("sampled", "k", b"v");
    let mut corvid = corvid_logging(&origin, "sampled", &log, "0");
    let addr = corvid.addr();
    for _ in 0..20 {
        assert_eq!(http::get(addr, "/sampled/k", &[]).status, 200);
    }
    assert_eq!(http::get(addr, "/sampled/nope", &[]).status, 404);
    let got = lines(&log, 1);
    assert_eq!(got.len(), 1, "sample = 0 logs errors only: {got:?}");
    assert_eq!(got[0]["status"], 404);

    // logrotate: move the file, SIGUSR1, and the next line goes to a new file by that name.
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    corvid.signal(libc::SIGUSR1);
    // The reopen happens before the writer's next write; a request made after the signal is
    // logged in the new file (retried while the signal may still be on its way).
    let mut reopened = false;
    for i in 0..50 {
        assert_eq!(
            http::get(addr, &format!("/sampled/after-{i}"), &[]).status,
            404
        );
        if wait_until(Duration::from_millis(400), || log.exists()) {
            reopened = true;
            break;
        }
    }
    assert!(reopened, "no new access.log after SIGUSR1");
    assert_eq!(
        lines(&rotated, 1).len(),
        1,
        "the rotated file keeps its line"
    );
    assert!(corvid.is_running(), "SIGUSR1 does not stop corvid");
}

/// One request on a fresh connection that closes after the answer; returns every byte the
/// client received (head and body).
fn received(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut all = headers.to_vec();
    all.push(("connection", "close"));
    let req = http::request_bytes(method, path, &addr.to_string(), &all, &[]);
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&req).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    got
}

#[test]
fn bytes_is_what_the_client_received_for_every_status() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let origin = Origin::start();
    origin.create_bucket("counted");
    let body = vec![b'x'; 1000];
    origin.put("counted", "obj", &body);
    let corvid = corvid_logging(&origin, "counted", &log, "1.0");
    let addr = corvid.addr();

    let miss = received(addr, "GET", "/counted/obj", &[("x-request-id", "b-miss")]);
    let head = String::from_utf8_lossy(&miss).to_string();
    assert!(
        head.starts_with("HTTP/1.1 200") && head.contains("X-Cache: MISS"),
        "{head}"
    );
    let etag = head
        .lines()
        .find_map(|l| l.strip_prefix("ETag: "))
        .unwrap()
        .to_string();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("b-miss", miss),
        (
            "b-hit",
            received(addr, "GET", "/counted/obj", &[("x-request-id", "b-hit")]),
        ),
        (
            "b-range",
            received(
                addr,
                "GET",
                "/counted/obj",
                &[("x-request-id", "b-range"), ("range", "bytes=10-109")],
            ),
        ),
        (
            "b-304",
            received(
                addr,
                "GET",
                "/counted/obj",
                &[("x-request-id", "b-304"), ("if-none-match", &etag)],
            ),
        ),
        (
            "b-head",
            received(addr, "HEAD", "/counted/obj", &[("x-request-id", "b-head")]),
        ),
        (
            "b-404",
            received(
                addr,
                "GET",
                "/counted/missing",
                &[("x-request-id", "b-404")],
            ),
        ),
        (
            "b-405",
            received(addr, "DELETE", "/counted/obj", &[("x-request-id", "b-405")]),
        ),
    ];
    let got = lines(&log, cases.len());
    for (id, wire) in &cases {
        let line = got
            .iter()
            .find(|l| l["id"] == *id)
            .unwrap_or_else(|| panic!("no line {id} in {got:?}"));
        let text = String::from_utf8_lossy(wire);
        let status: u64 = text[9..12].parse().unwrap();
        assert_eq!(line["status"], status, "{id}");
        assert_eq!(
            line["bytes"].as_u64(),
            Some(wire.len() as u64),
            "{id}: `bytes` is every byte sent, head included:\n{text}"
        );
    }
    let status_of = |id: &str| {
        let wire = &cases.iter().find(|(i, _)| *i == id).unwrap().1;
        String::from_utf8_lossy(&wire[9..12]).to_string()
    };
    // The cases are what they claim to be.
    assert_eq!(
        ["b-hit", "b-range", "b-304", "b-404", "b-405"].map(status_of),
        ["200", "206", "304", "404", "405"]
    );
    let wire_of = |id: &str| cases.iter().find(|(i, _)| *i == id).unwrap().1.len();
    assert!(wire_of("b-hit") > body.len() && wire_of("b-range") > 100);
    assert!(
        wire_of("b-404") > wire_of("b-head"),
        "the error's JSON body is counted"
    );
}

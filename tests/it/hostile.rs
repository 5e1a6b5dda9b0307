//! Hostile input over real sockets: every framing rule of RFC 9112 that corvid enforces gets
//! its status, the connection is closed where the framing can no longer be trusted, and the
//! server keeps serving everyone else afterwards.

use std::time::{Duration, Instant};

use crate::common::http::{self, Conn};
use crate::common::*;

fn start() -> (Origin, Corvid) {
    let origin = Origin::start();
    origin.create_bucket("hst");
    origin.put("hst", "k", b"fine");
    let corvid = Corvid::start(&format!(
        "[server]\nlisten = \"127.0.0.1:{}\"\nworkers = 2\nheader_timeout = \"1s\"\n{}",
        free_port(),
        bucket_toml("hst", "/hst", &origin)
    ));
    (origin, corvid)
}

/// Sends `raw`, expects `status` and, when `closes`, a closed connection afterwards.
fn expect_rejected(corvid: &Corvid, name: &str, raw: &[u8], status: u16, closes: bool) {
    let mut c = Conn::connect(corvid.addr());
    c.send(raw);
    let r = c
        .try_read_response()
        .unwrap_or_else(|e| panic!("{name}: no response ({e})"));
    assert_eq!(r.status, status, "{name}: {}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body)
        .unwrap_or_else(|_| panic!("{name}: error body is not JSON: {}", r.text()));
    assert!(
        v["error"].is_string() && v["request_id"].is_string(),
        "{name}"
    );
    if closes {
        assert!(
            c.closed_by_peer(),
            "{name}: connection should be closed after a framing error"
        );
    } else {
        // The head was well framed: the connection stays usable.
        assert_eq!(c.request("GET", "/hst/k", &[]).body, b"fine", "{name}");
    }
}

#[test]
fn framing_rules_each_get_their_status() {
    let (_origin, corvid) = start();
    let long_target = format!("GET /hst/{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(9000));
    let big_header = format!(
        "GET /hst/k HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "b".repeat(17 * 1024)
    );
    let many_headers = format!(
        "GET /hst/k HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..120)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>()
    );
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("CL and TE together", b"GET /hst/k HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(), 400),
        ("differing CL", b"GET /hst/k HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd".to_vec(), 400),
        ("CL list differing", b"GET /hst/k HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 4\r\n\r\nabcd".to_vec(), 400),
        ("CL not a number", b"GET /hst/k HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n".to_vec(), 400),
        ("CL with sign", b"GET /hst/k HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc".to_vec(), 400),
        ("CL overflow", b"GET /hst/k HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n".to_vec(), 400),
        // RFC 9112 6.3: chunked not final is a MUST-400; an unknown coding under chunked is 501.
        ("TE without chunked", b"GET /hst/k HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec(), 400),
        ("unknown transfer coding", b"GET /hst/k HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n".to_vec(), 501),
        ("chunked not last", b"GET /hst/k HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n".to_vec(), 400),
        ("TE in HTTP/1.0", b"GET /hst/k HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(), 400),
        ("obs-fold", b"GET /hst/k HTTP/1.1\r\nHost: x\r\nX-A: one\r\n two\r\n\r\n".to_vec(), 400),
        ("missing Host", b"GET /hst/k HTTP/1.1\r\nX-A: b\r\n\r\n".to_vec(), 400),
        ("duplicate Host", b"GET /hst/k HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n".to_vec(), 400),
        ("NUL in value", b"GET /hst/k HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n".to_vec(), 400),
        ("bare CR in value", b"GET /hst/k HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n".to_vec(), 400),
        ("space before colon", b"GET /hst/k HTTP/1.1\r\nHost: x\r\nX-A : b\r\n\r\n".to_vec(), 400),
        ("bad header name", b"GET /hst/k HTTP/1.1\r\nHost: x\r\nX(A): b\r\n\r\n".to_vec(), 400),
        ("request line too long", long_target.into_bytes(), 414),
        ("header section too large", big_header.into_bytes(), 431),
        ("too many headers", many_headers.into_bytes(), 431),
        ("HTTP/2.0 version", b"GET /hst/k HTTP/2.0\r\nHost: x\r\n\r\n".to_vec(), 505),
        ("HTTP/1.2 version", b"GET /hst/k HTTP/1.2\r\nHost: x\r\n\r\n".to_vec(), 505),
        ("garbage", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 hello\r\n\r\n".to_vec(), 400),
        ("no method", b" /hst/k HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 400),
        ("GET body too large", b"GET /hst/k HTTP/1.1\r\nHost: x\r\nContent-Length: 10485760\r\n\r\n".to_vec(), 413),
        ("bad chunk size in GET body", b"GET /hst/k HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n\r\n".to_vec(), 400),
    ];
    for (name, raw, status) in &cases {
        expect_rejected(&corvid, name, raw, *status, true);
    }
    // Well-framed requests with an unusable target: 400, connection kept.
    for (name, raw) in [
        (
            "asterisk target on GET",
            &b"GET * HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        ),
        (
            "relative target",
            &b"GET hst/k HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        ),
        (
            "fragment in target",
            &b"GET /hst/k#frag HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        ),
    ] {
        expect_rejected(&corvid, name, raw, 400, false);
    }
    // Still serving, on new and kept-alive connections.
    let mut c = Conn::connect(corvid.addr());
    for _ in 0..3 {
        assert_eq!(c.request("GET", "/hst/k", &[]).body, b"fine");
    }
}

#[test]
fn get_body_is_discarded_never_parsed_as_a_request() {
    let (origin, corvid) = start();
    let mut c = Conn::connect(corvid.addr());
    // The body looks like a request; if corvid parsed it, a third response would appear and
    // the origin would see a DELETE.
    let smuggled = "DELETE /hst/k HTTP/1.1\r\nHost: x\r\n\r\n";
    c.send(
        format!(
            "GET /hst/k HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{smuggled}GET /hst/k HTTP/1.1\r\nHost: x\r\n\r\n",
            smuggled.len()
        )
        .as_bytes(),
    );
    assert_eq!(c.read_response().body, b"fine");
    assert_eq!(c.read_response().body, b"fine");
    // Same with a chunked body split across writes.
    c.send(b"GET /hst/k HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nDELET");
    c.send(b"\r\n0\r\n\r\nGET /hst/k HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.read_response().body, b"fine");
    assert_eq!(c.read_response().body, b"fine");
    c.set_timeout(Duration::from_millis(300));
    assert!(c.try_read_response().is_err(), "no third response");
    assert_eq!(origin.count("DELETE"), 0);
}

#[test]
fn write_method_with_body_is_refused_and_closed() {
    let (origin, corvid) = start();
    let mut c = Conn::connect(corvid.addr());
    c.send(b"PUT /hst/k HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world");
    let r = c.read_response();
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD, OPTIONS"));
    assert!(c.closed_by_peer());
    assert_eq!(origin.count("PUT"), 2, "bucket create and seed only");
}

#[test]
fn slowloris_gets_408_and_idle_connections_close() {
    let (_origin, corvid) = start();
    // Dribble a head slower than header_timeout (1 s) allows.
    let mut c = Conn::connect(corvid.addr());
    let t0 = Instant::now();
    c.send(b"GET /hst/k HTTP/1.1\r\n");
    std::thread::sleep(Duration::from_millis(400));
    c.send(b"Host: x\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 408, "{}", r.text());
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert!(c.closed_by_peer());
    // A connection that never sends a byte is closed after header_timeout, without a response.
    let mut silent = Conn::connect(corvid.addr());
    silent.set_timeout(Duration::from_secs(5));
    let t0 = Instant::now();
    assert!(silent.closed_by_peer());
    assert!(t0.elapsed() < Duration::from_secs(4));
    assert_eq!(http::get(corvid.addr(), "/hst/k", &[]).body, b"fine");
}

#[test]
fn http10_and_absolute_form() {
    let (_origin, corvid) = start();
    let r = http::send_raw(corvid.addr(), b"GET /hst/k HTTP/1.0\r\n\r\n");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"fine"[..]));
    let r = http::send_raw(
        corvid.addr(),
        b"GET http://example.com/hst/k HTTP/1.1\r\nHost: example.com\r\n\r\n",
    );
    assert_eq!((r.status, r.body.as_slice()), (200, &b"fine"[..]));
}

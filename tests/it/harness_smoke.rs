//! Tests of the harness itself, so a failing corvid test can be trusted to
//! be corvid's fault.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant, SystemTime};

use crate::common::http::{self, Conn, Framing};
use crate::common::*;

#[test]
fn origin_round_trips_tricky_keys_and_counts() {
    let origin = Origin::start();
    origin.create_bucket("smoke");
    let keys = tricky_keys();
    for (i, key) in keys.iter().enumerate() {
        // Binary bodies (all byte values) catch any text mangling.
        let mut body = pattern_bytes(1000 + i * 37, i as u64 + 1);
        body.extend_from_slice(key.as_bytes());
        origin.put("smoke", key, &body);
        let r = origin.get("smoke", key);
        assert_eq!(r.status, 200, "GET {key:?}: {}", r.text());
        assert!(r.body == body, "body mismatch for {key:?}");
        assert_eq!(
            r.header("content-length"),
            Some(body.len().to_string().as_str())
        );
        assert!(r.header("etag").is_some());
    }
    let n = keys.len() as u64;
    assert_eq!(
        origin.count("PUT"),
        n + 1,
        "bucket create + one PUT per key"
    );
    assert_eq!(origin.count("GET"), n);
    assert_eq!(origin.count("HEAD"), 0);

    // The recorder sees the raw path exactly as the client encoded it.
    let last = origin.last_request().expect("recorded");
    assert_eq!(last.method, "GET");
    assert_eq!(
        last.path,
        format!("/smoke/{}", encode_key(keys.last().unwrap()))
    );
    assert!(last
        .header("authorization")
        .is_some_and(|a| a.starts_with("AWS4-HMAC-SHA256 ")));
    let spaced = origin
        .requests_with("GET")
        .into_iter()
        .find(|r| r.path.contains("with%20space"))
        .expect("request for the spaced key");
    assert_eq!(spaced.path, "/smoke/with%20space.txt");

    origin.reset_counts();
    assert_eq!(origin.total_count(), 0);
    assert!(origin.requests().is_empty());
}

#[test]
fn origin_metadata_head_range_and_404() {
    let origin = Origin::start();
    origin.create_bucket("meta");
    origin.put_with(
        "meta",
        "doc.json",
        br#"{"hello":"world"}"#,
        Some("application/json"),
        &[
            ("x-amz-meta-color", "blue"),
            ("cache-control", "max-age=60"),
        ],
    );
    origin.put("meta", "untyped", b"0123456789");

    let c = origin.client();
    let r = c.get_object("meta", "doc.json", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("x-amz-meta-color"), Some("blue"));
    assert_eq!(r.header("cache-control"), Some("max-age=60"));

    let h = c.head_object("meta", "doc.json", &[]);
    assert_eq!(h.status, 200);
    assert!(h.body.is_empty());
    assert_eq!(h.framing, Framing::None);
    assert_eq!(h.header("content-length"), Some("17"));

    // Recorded so tests can check what corvid forwarded.
    let r = c.get_object("meta", "untyped", &[("range", "bytes=2-5")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, b"2345");
    assert_eq!(r.header("content-range"), Some("bytes 2-5/10"));
    assert_eq!(
        origin.last_request().unwrap().header("range"),
        Some("bytes=2-5")
    );
    // s3s-fs stores no default content type.
    eprintln!("untyped content-type: {:?}", r.header("content-type"));

    let r = c.get_object("meta", "missing", &[]);
    assert_eq!(r.status, 404);
    assert!(r.text().contains("NoSuchKey"), "{}", r.text());
    let r = c.get_object("no-such-bucket", "k", &[]);
    assert_eq!(r.status, 404);
}

#[test]
fn origin_rejects_bad_signatures() {
    let origin = Origin::start();
    origin.create_bucket("auth");
    origin.put("auth", "secret.txt", b"top secret");

    let wrong = S3Client::new(origin.addr(), ACCESS_KEY, "not-the-secret");
    let r = wrong.get_object("auth", "secret.txt", &[]);
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("SignatureDoesNotMatch"), "{}", r.text());

    let unknown = S3Client::new(origin.addr(), "AKIAUNKNOWN", SECRET_KEY);
    assert_eq!(unknown.get_object("auth", "secret.txt", &[]).status, 403);

    // Anonymous request: no Authorization at all.
    let r = http::get(origin.addr(), "/auth/secret.txt", &[]);
    assert_eq!(r.status, 403, "{}", r.text());

    // Signed for one key, sent for another: path is covered by the signature.
    let head = origin
        .client()
        .signed_head("GET", "/auth/secret.txt", &[], &[]);
    let tampered =
        String::from_utf8(head)
            .unwrap()
            .replacen("/auth/secret.txt", "/auth/other.txt", 1);
    let r = http::send_raw(origin.addr(), tampered.as_bytes());
    assert_eq!(r.status, 403, "{}", r.text());

    assert_eq!(origin.count("GET"), 4);
    assert_eq!(origin.get("auth", "secret.txt").body, b"top secret");
}

#[test]
fn origin_fault_injection_and_delay() {
    let origin = Origin::start();
    origin.create_bucket("fault");
    origin.put("fault", "k", b"v");
    origin.fail_next(2, 503);
    assert_eq!(origin.get("fault", "k").status, 503);
    let r = origin.get("fault", "k");
    assert_eq!(r.status, 503);
    assert!(r.text().contains("InjectedFault"));
    assert_eq!(origin.get("fault", "k").status, 200);
    assert_eq!(origin.count("GET"), 3);

    origin.set_delay(Duration::from_millis(300));
    let t = Instant::now();
    assert_eq!(origin.get("fault", "k").status, 200);
    assert!(t.elapsed() >= Duration::from_millis(300));
    origin.set_delay(Duration::ZERO);
}

#[test]
fn origin_header_overrides_apply_to_200_206_and_304_and_can_change() {
    let origin = Origin::start();
    origin.create_bucket("over");
    origin.put_with(
        "over",
        "k",
        b"0123456789",
        None,
        &[("cache-control", "max-age=5")],
    );
    origin.put("over", "other", b"x");
    let c = origin.client();
    let date = "Mon, 01 Jan 2024 00:00:00 GMT";
    origin.set_headers(
        "over",
        "k",
        Overrides::new()
            .set_lines("cache-control", &["max-age=3600", "no-store"])
            .remove("etag")
            .set("date", date)
            .set("age", "7"),
    );
    for r in [
        c.get_object("over", "k", &[]),
        c.head_object("over", "k", &[]),
        c.get_object("over", "k", &[("range", "bytes=0-1")]),
    ] {
        assert!(matches!(r.status, 200 | 206), "{}", r.status);
        assert_eq!(r.header_all("cache-control"), ["max-age=3600", "no-store"]);
        assert_eq!(r.header("etag"), None);
        assert_eq!(
            (r.header_all("date"), r.header("age")),
            (vec![date], Some("7"))
        );
    }
    assert_eq!(c.get_object("over", "k", &[]).body, b"0123456789");
    assert!(
        c.get_object("over", "other", &[]).header("etag").is_some(),
        "per key"
    );

    // Replaced between requests: the next answer has the new fields.
    origin.set_headers(
        "over",
        "k",
        Overrides::new().set("cache-control", "no-cache"),
    );
    let r = c.get_object("over", "k", &[]);
    assert_eq!(r.header_all("cache-control"), ["no-cache"]);
    let (etag, lm) = (
        r.header("etag").unwrap().to_owned(),
        r.header("last-modified").unwrap().to_owned(),
    );

    // Conditionals are evaluated on the rewritten answer, and the 304 carries its fields.
    let r = c.get_object("over", "k", &[("if-none-match", &etag)]);
    assert_eq!((r.status, r.body.len()), (304, 0));
    assert_eq!(
        (r.header("etag"), r.header("cache-control")),
        (Some(etag.as_str()), Some("no-cache"))
    );
    assert_eq!(r.header("last-modified"), Some(lm.as_str()));
    let r = c.get_object("over", "k", &[("if-modified-since", &lm)]);
    assert_eq!(
        (r.status, r.header("cache-control")),
        (304, Some("no-cache"))
    );
    assert_eq!(origin.conditional_count(304), 2);
    let last = origin.requests_for("over", "k").pop().unwrap();
    assert_eq!(
        last.header("if-modified-since"),
        Some(lm.as_str()),
        "recorded"
    );

    origin.clear_headers("over", "k");
    assert_eq!(
        c.get_object("over", "k", &[]).header("cache-control"),
        Some("max-age=5")
    );
    assert_eq!(
        origin.requests_for("over", "other").len(),
        2,
        "its PUT and GET"
    );
}

/// `Date` is the wrapper's, stamped on every answer (faults and 404s too), so an override can
/// take it out; bucket-wide overrides apply to every object of the bucket, under its own.
#[test]
fn origin_stamps_date_unless_removed_and_bucket_overrides_layer_under_key_ones() {
    let origin = Origin::start();
    origin.create_bucket("dated");
    origin.put("dated", "a", b"0123456789");
    origin.put("dated", "b", b"0123456789");
    let c = origin.client();
    let one_date = |r: &http::RawResponse| {
        r.header_all("date").len() == 1
            && httpdate::parse_http_date(r.header("date").unwrap()).is_ok()
    };
    let r = c.get_object("dated", "a", &[]);
    assert!(one_date(&r), "{:?}", r.headers);
    let r = c.get_object("dated", "missing", &[]);
    assert_eq!(r.status, 404);
    assert!(one_date(&r), "{:?}", r.headers);
    origin.fail_next(1, 503);
    let r = c.get_object("dated", "a", &[]);
    assert_eq!(r.status, 503);
    assert!(one_date(&r), "{:?}", r.headers);

    origin.set_bucket_headers(
        "dated",
        Overrides::new()
            .remove("date")
            .set("cache-control", "max-age=1"),
    );
    origin.set_headers(
        "dated",
        "b",
        Overrides::new().set("cache-control", "max-age=2"),
    );
    for (key, cc) in [("a", "max-age=1"), ("b", "max-age=2")] {
        for r in [
            c.get_object("dated", key, &[]),
            c.head_object("dated", key, &[]),
            c.get_object("dated", key, &[("range", "bytes=0-1")]),
            c.get_object("dated", key, &[("if-none-match", "*")]),
        ] {
            assert!(matches!(r.status, 200 | 206 | 304), "{key}: {}", r.status);
            assert_eq!(
                r.header("date"),
                None,
                "{key} {}: {:?}",
                r.status,
                r.headers
            );
            assert_eq!(r.header_all("cache-control"), [cc], "{key} {}", r.status);
        }
    }
    assert_eq!(origin.conditional_count(304), 2);

    origin.clear_bucket_headers("dated");
    let r = c.get_object("dated", "a", &[]);
    assert!(one_date(&r), "{:?}", r.headers);
    assert_eq!(r.header("cache-control"), None);
    let r = c.get_object("dated", "b", &[]);
    assert!(one_date(&r), "{:?}", r.headers);
    assert_eq!(
        r.header("cache-control"),
        Some("max-age=2"),
        "its own still apply"
    );
}

/// The in-process corvid: listens on the port it picked, answers, advances the clock it was
/// given (its clones share the time) and releases the port when stopped.
#[test]
fn in_process_corvid_serves_on_a_manual_clock() {
    let (origin, corvid) = origin_and_inprocess("inproc", "", "");
    origin.put("inproc", "k", b"v");
    assert_ne!(corvid.addr().port(), 0);
    assert_eq!(http::get(corvid.addr(), "/health", &[]).status, 200);
    assert_eq!(http::get(corvid.addr(), "/inproc/k", &[]).body, b"v");
    let clock = corvid.clock().clone();
    let t0 = clock.now_ms();
    corvid.advance(Duration::from_secs(3600));
    assert_eq!(clock.now_ms(), t0 + 3_600_000);
    let addr = corvid.addr();
    corvid.stop();
    assert!(is_refused(addr), "stopped: the port refuses connections");
}

#[test]
fn origin_evaluates_preconditions_in_rfc9110_order() {
    let origin = Origin::start();
    origin.create_bucket("cond");
    origin.put("cond", "k", b"v");
    let c = origin.client();
    let r = c.get_object("cond", "k", &[]);
    let (etag, lm) = (
        r.header("etag").unwrap().to_owned(),
        r.header("last-modified").unwrap().to_owned(),
    );
    let before = "Mon, 01 Jan 2001 00:00:00 GMT";
    let future = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(86_400));
    let status = |h: &[(&str, &str)]| c.get_object("cond", "k", h).status;
    assert_eq!(status(&[("if-none-match", &etag)]), 304);
    let list = format!("\"x\", W/{etag}");
    assert_eq!(status(&[("if-none-match", &list)]), 304, "weak comparison");
    assert_eq!(status(&[("if-none-match", "\"other\"")]), 200);
    assert_eq!(status(&[("if-modified-since", &lm)]), 304);
    assert_eq!(status(&[("if-modified-since", before)]), 200);
    // RFC 9110 §13.1.3 says ignore an invalid date; s3s refuses the request before the
    // wrapper sees it (the header is signed, so the wrapper cannot take it out).
    assert_eq!(status(&[("if-modified-since", "not a date")]), 400);
    assert_eq!(
        status(&[("if-modified-since", &future)]),
        200,
        "future: ignored"
    );
    // §13.2.2 step 3 before 4: If-None-Match decides, If-Modified-Since is ignored.
    assert_eq!(
        status(&[("if-none-match", "\"other\""), ("if-modified-since", &lm)]),
        200
    );
    assert_eq!(status(&[("if-match", "\"other\"")]), 412);
    assert_eq!(
        status(&[("if-match", &etag), ("if-unmodified-since", before)]),
        200,
        "If-Match wins"
    );
    assert_eq!(status(&[("if-unmodified-since", before)]), 412);
    assert_eq!(status(&[("if-unmodified-since", &lm)]), 200);
    assert_eq!(
        c.head_object("cond", "k", &[("if-modified-since", &lm)])
            .status,
        304
    );
    let r = c.get_object(
        "cond",
        "k",
        &[("if-modified-since", &lm), ("range", "bytes=0-0")],
    );
    assert_eq!(r.status, 206, "conditionals are not evaluated on ranges");
}

#[test]
fn moto_answers_conditionals_and_returns_metadata() {
    let moto = Moto::start();
    moto.create_bucket("mo-smoke");
    let expires = "Thu, 01 Jan 2037 00:00:00 GMT";
    moto.put_with(
        "mo-smoke",
        "k",
        b"hello",
        Some("text/x-moto"),
        &[("cache-control", "max-age=60"), ("expires", expires)],
    );
    let c = moto.client();
    let r = c.get_object("mo-smoke", "k", &[]);
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"hello"[..]),
        "{}",
        moto.log()
    );
    assert_eq!(r.header("content-type"), Some("text/x-moto"));
    assert_eq!(r.header("cache-control"), Some("max-age=60"));
    assert_eq!(r.header("expires"), Some(expires));
    let (etag, lm) = (
        r.header("etag").unwrap().to_owned(),
        r.header("last-modified").unwrap().to_owned(),
    );
    let r = c.get_object("mo-smoke", "k", &[("if-none-match", &etag)]);
    assert_eq!(
        (r.status, r.body.len(), r.header("etag")),
        (304, 0, Some(etag.as_str()))
    );
    // What moto's 304 leaves out (see common/moto.rs).
    assert_eq!(
        (r.header("cache-control"), r.header("last-modified")),
        (None, None)
    );
    let r = c.get_object("mo-smoke", "k", &[("if-modified-since", &lm)]);
    assert_eq!(r.status, 304);
    let r = c.get_object(
        "mo-smoke",
        "k",
        &[("if-modified-since", "Mon, 01 Jan 2001 00:00:00 GMT")],
    );
    assert_eq!(r.status, 200);
    let both = [
        ("if-none-match", "\"other\""),
        ("if-modified-since", lm.as_str()),
    ];
    eprintln!(
        "moto: If-None-Match mismatch + If-Modified-Since satisfied -> {} (RFC 9110: 200)",
        c.get_object("mo-smoke", "k", &both).status
    );
}

#[test]
fn origin_stop_refuses_and_restart_keeps_data() {
    let mut origin = Origin::start();
    origin.create_bucket("stop");
    origin.put("stop", "k", b"persisted");
    // An idle keep-alive connection must be closed by stop(), not linger.
    let mut idle = Conn::connect(origin.addr());
    let r = idle.request("GET", "/stop/k", &[]);
    assert_eq!(r.status, 403);

    let addr = origin.addr();
    origin.stop();
    assert!(is_refused(addr), "port still accepting after stop()");
    idle.set_timeout(Duration::from_secs(5));
    assert!(idle.closed_by_peer(), "idle connection survived stop()");

    origin.restart();
    assert_eq!(origin.addr(), addr);
    assert_eq!(origin.get("stop", "k").body, b"persisted");
}

#[test]
fn origin_large_object_round_trip() {
    // Big enough to notice pathological slowness, small enough for CI in
    // the dev profile. Prints throughput for the report.
    let size = 64 << 20;
    let body = pattern_bytes(size, 42);
    let origin = Origin::start();
    origin.create_bucket("big");
    let t = Instant::now();
    origin.put("big", "blob.bin", &body);
    let put = t.elapsed();
    let t = Instant::now();
    let r = origin.get("big", "blob.bin");
    let get = t.elapsed();
    assert_eq!(r.status, 200);
    assert!(r.body == body, "large body mismatch");
    let mib = (size >> 20) as f64;
    eprintln!(
        "64 MiB: PUT {:.0} MiB/s, GET {:.0} MiB/s",
        mib / put.as_secs_f64(),
        mib / get.as_secs_f64()
    );
}

#[test]
fn stall_server_holds_connections_without_answering() {
    let stall = StallServer::start();
    let mut conn = Conn::connect(stall.addr());
    conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(stall.wait_accepted(1, Duration::from_secs(5)));
    conn.set_timeout(Duration::from_millis(300));
    let err = conn.try_read_response().expect_err("stall server answered");
    assert!(http::is_timeout(&err), "expected a timeout, got {err}");
    // Still open: a further wait times out rather than seeing EOF.
    assert!(!conn.closed_by_peer());
}

#[test]
fn refuse_addr_is_refused() {
    let r = RefuseAddr::new();
    assert!(is_refused(r.addr()));
    assert!(r.endpoint().starts_with("http://127.0.0.1:"));
    assert_ne!(free_port(), 0);
}

#[test]
fn tls_terminator_forwards_signed_get() {
    let origin = Origin::start();
    origin.create_bucket("tls");
    origin.put("tls", "dir/obj with space", b"over tls");
    let tls = TlsTerminator::start(origin.addr());
    assert!(tls.ca_pem_path().exists());
    let pem = std::fs::read_to_string(tls.ca_pem_path()).unwrap();
    assert!(pem.contains("BEGIN CERTIFICATE"));

    for name in ["localhost", "127.0.0.1"] {
        let client =
            S3Client::new(tls.addr(), ACCESS_KEY, SECRET_KEY).with_tls(tls.client_config(), name);
        let r = client.get_object("tls", "dir/obj with space", &[]);
        assert_eq!(r.status, 200, "via {name}: {}", r.text());
        assert_eq!(r.body, b"over tls");
    }
    assert_eq!(origin.count("GET"), 2);
    assert_eq!(tls.connections(), 2);

    // A client trusting a different CA must fail the handshake.
    let other = TestCa::new();
    let res = Conn::connect_tls(tls.addr(), other.client_config(), "localhost");
    assert!(res.is_err(), "handshake with an untrusted CA succeeded");
}

#[test]
fn server_cert_files_serve_tls() {
    let files = generate_server_cert_files();
    for p in [&files.ca_pem, &files.cert_pem, &files.key_pem] {
        assert!(p.exists(), "{p:?}");
    }
    let pair = CertPair {
        cert_pem: std::fs::read_to_string(&files.cert_pem).unwrap(),
        key_pem: std::fs::read_to_string(&files.key_pem).unwrap(),
    };
    let server_cfg = tls::server_config(&pair);

    // A one-shot blocking TLS server: answers one request with 200.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let conn = rustls::ServerConnection::new(server_cfg).unwrap();
        let mut s = rustls::StreamOwned::new(conn, tcp);
        let mut buf = [0u8; 1024];
        let mut got = Vec::new();
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .unwrap();
        s.flush().unwrap();
    });
    let r = http::https_get(addr, files.client_config.clone(), "localhost", "/", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"ok");
    server.join().unwrap();
}

/// Reads `requests` request heads from the first connection, writes
/// `response` verbatim, then closes (which ends a close-delimited body).
fn canned_server(response: &'static [u8], requests: usize) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while got.windows(4).filter(|w| w == b"\r\n\r\n").count() < requests {
            let n = s.read(&mut buf).unwrap_or(0);
            if n == 0 {
                return;
            }
            got.extend_from_slice(&buf[..n]);
        }
        let _ = s.write_all(response);
    });
    addr
}

#[test]
fn raw_client_parses_framings_and_pipelines() {
    // Chunked with extensions and a trailer, then a HEAD response carrying a
    // Content-Length but no body, then a close-delimited body: all on one
    // connection, read in order.
    let addr = canned_server(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n\
          5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n\
          HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n\
          HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\nbye",
        3,
    );
    let mut c = Conn::connect(addr);
    c.send_request("GET", "/a", &[], &[]);
    c.send_request("HEAD", "/b", &[], &[]);
    c.send_request("GET", "/c", &[], &[]);
    let a = c.read_response();
    assert_eq!((a.status, a.body.as_slice()), (200, &b"hello world"[..]));
    assert_eq!(a.framing, Framing::Chunked);
    assert_eq!(a.header("x-a"), Some("1"));
    assert_eq!(a.trailers, vec![("X-Trailer".to_owned(), "t".to_owned())]);
    let b = c.read_response();
    assert_eq!(b.framing, Framing::None);
    assert_eq!(b.header("Content-Length"), Some("1234"));
    assert!(b.body.is_empty());
    let d = c.read_response();
    assert_eq!((d.status, d.body.as_slice()), (404, &b"bye"[..]));
    assert_eq!(d.framing, Framing::Close);
    assert!(d.connection_close());
}

#[test]
fn raw_client_reads_body_incrementally() {
    let addr = canned_server(
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789",
        1,
    );
    let mut c = Conn::connect(addr);
    c.send_request("GET", "/", &[], &[]);
    let head = c.read_head();
    assert_eq!(head.status, 200);
    assert_eq!(head.framing, Framing::ContentLength(10));
    assert_eq!(c.read_body_chunk(4), b"0123");
    assert!(!c.body_done());
    assert_eq!(c.read_body_to_end(), b"456789");
    assert!(c.body_done());
    assert!(c.read_body_chunk(4).is_empty());
}

#[test]
fn bucket_toml_is_valid_toml() {
    let origin = Origin::start();
    let cfg = format!(
        "{}{}",
        server_toml(free_port()),
        bucket_toml("b\"q", "/b", &origin)
    );
    let v: toml::Value = cfg.parse().expect("valid toml");
    let b = &v["buckets"][0];
    assert_eq!(b["name"].as_str(), Some("b\"q"));
    assert_eq!(b["endpoint"].as_str(), Some(origin.endpoint().as_str()));
    assert_eq!(b["secret_key"].as_str(), Some(SECRET_KEY));
    assert_eq!(v["server"]["workers"].as_integer(), Some(2));
}

#[test]
fn corvid_runner_reaps_a_process_that_exits() {
    // An invalid config (workers has the wrong type) must make corvid exit;
    // this exercises spawn / config file / stderr capture / wait_exit
    // without depending on the proxy working.
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:{}\"\nworkers = \"lots\"\n",
        free_port()
    );
    let mut corvid = Corvid::spawn(&cfg);
    assert!(corvid.config_path().exists());
    assert_eq!(corvid.config(), cfg);
    let status = corvid.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some(),
        "corvid kept running with an invalid config"
    );
    let _ = corvid.stderr();
}

//! Origin error answers reach the client with their meaning (the table in `src/s3/errors.rs`):
//! 500/503/400 keep their status, 503 its `Retry-After`, every error the S3 `<Code>` as
//! `origin_code`, region errors become a 502 naming the region or endpoint — on a miss (fill),
//! on HEAD and Range misses (passed through), and on the revalidation of a stale entry. Each
//! time the error body is read, so the one origin connection (counted by a relay in front of
//! the origin, with one worker) carries every request.

use std::time::{Duration, Instant};

use crate::common::http::{Conn, RawResponse};
use crate::common::*;

struct Setup<C = Corvid> {
    origin: Origin,
    relay: IdleRelay,
    corvid: C,
}

/// An origin with `bucket`, a relay in front of it, and corvid with ONE worker (so one pool)
/// serving it under `/{bucket}` through the relay.
fn setup(bucket: &str, bucket_extra: &str, extra_toml: &str) -> Setup {
    let (origin, relay, toml) = parts(bucket, bucket_extra, extra_toml, free_port());
    Setup {
        origin,
        relay,
        corvid: Corvid::start(&toml),
    }
}

/// [`setup`] with corvid in-process on a manual clock, for the tests whose entries must go
/// stale: they advance the clock past the TTL ([`past`]) instead of sleeping. The origin
/// sends no `Date` for the bucket (see [`InProcess`]).
fn setup_on_clock(bucket: &str, bucket_extra: &str, extra_toml: &str) -> Setup<InProcess> {
    let (origin, relay, toml) = parts(bucket, bucket_extra, extra_toml, 0);
    origin.set_bucket_headers(bucket, Overrides::new().remove("date"));
    Setup {
        origin,
        relay,
        corvid: InProcess::start(&toml),
    }
}

/// The origin, its relay and the config of [`setup`], listening on `port`.
fn parts(
    bucket: &str,
    bucket_extra: &str,
    extra_toml: &str,
    port: u16,
) -> (Origin, IdleRelay, String) {
    let origin = Origin::start();
    origin.create_bucket(bucket);
    let relay = IdleRelay::start(origin.addr(), None);
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nworkers = 1\n{}{extra_toml}",
        bucket_toml_for(
            bucket,
            &format!("/{bucket}"),
            &relay.endpoint(),
            bucket,
            bucket_extra
        ),
    );
    (origin, relay, toml)
}

fn json(r: &RawResponse) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.text()))
}

/// What the client must get.
struct Want {
    status: u16,
    error: &'static str,
    code: Option<&'static str>,
    retry_after: Option<&'static str>,
    /// Words the message must contain.
    words: &'static [&'static str],
}

fn check(r: &RawResponse, want: &Want, what: &str) {
    assert_eq!(r.status, want.status, "{what}: {}", r.text());
    assert_eq!(r.header("retry-after"), want.retry_after, "{what}");
    assert_eq!(r.header("cache-control"), Some("no-store"), "{what}");
    if r.body.is_empty() {
        return; // HEAD
    }
    let v = json(r);
    assert_eq!(v["error"], want.error, "{what}: {v}");
    assert_eq!(v["origin_code"].as_str(), want.code, "{what}: {v}");
    assert_eq!(v["request_id"].as_str(), r.header("x-request-id"), "{what}");
    let message = v["message"].as_str().unwrap_or_default();
    for w in want.words {
        assert!(message.contains(w), "{what}: {message:?} lacks {w:?}");
    }
}

const SLOW_DOWN: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message><RequestId>B3EB633B8A7B895D</RequestId><HostId>ifOa15QzsrV56CmsZiEA0OBcsntOwpfv</HostId></Error>";
const SERVICE_UNAVAILABLE: &str = "<Error><Code>ServiceUnavailable</Code><Message>Please reduce your request rate.</Message><RequestId>R</RequestId></Error>";
const INTERNAL_ERROR: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InternalError</Code><Message>We encountered an internal error. Please try again.</Message><RequestId>656c76696e6727732072657175657374</RequestId><HostId>Uuag1LuByRx9e6j5</HostId></Error>";
const INVALID_ARGUMENT: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InvalidArgument</Code><Message>Invalid version id specified</Message><ArgumentName>versionId</ArgumentName><ArgumentValue>x</ArgumentValue><RequestId>R</RequestId><HostId>H</HostId></Error>";
const AUTH_MALFORMED: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AuthorizationHeaderMalformed</Code><Message>The authorization header is malformed; the region 'us-east-1' is wrong; expecting 'eu-central-1'</Message><Region>eu-central-1</Region><RequestId>531B68B3613F5C96</RequestId><HostId>TMnOREh0</HostId></Error>";
const ACCESS_DENIED: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code><Message>Access Denied</Message><RequestId>R</RequestId><HostId>H</HostId></Error>";
const NO_SUCH_KEY: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message><Key>k</Key><RequestId>R</RequestId><HostId>H</HostId></Error>";

/// S3's `301 PermanentRedirect` for `bucket`, which lives in eu-west-1.
fn permanent_redirect(bucket: &str) -> FaultReply {
    FaultReply::xml(
        301,
        &format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>PermanentRedirect</Code><Message>The bucket you are attempting to access must be addressed using the specified endpoint. Please send all future requests to this endpoint.</Message><Endpoint>{bucket}.s3.eu-west-1.amazonaws.com</Endpoint><Bucket>{bucket}</Bucket><RequestId>V85ZRZSGS2E2PYWQ</RequestId><HostId>odPY3GnLB9rDuzQJ</HostId></Error>"),
    )
    .header("x-amz-bucket-region", "eu-west-1")
}

fn want_redirect() -> Want {
    Want {
        status: 502,
        error: "bad_gateway",
        code: Some("PermanentRedirect"),
        retry_after: None,
        words: &[
            "region eu-west-1",
            "oerr.s3.eu-west-1.amazonaws.com",
            "configured us-east-1",
            "check the bucket's region/endpoint",
        ],
    }
}

fn slow_down(retry_after: &str) -> FaultReply {
    FaultReply::xml(503, SLOW_DOWN).header("retry-after", retry_after)
}

#[test]
fn misses_pass_origin_errors_on_and_keep_the_origin_connection() {
    let s = setup("oerr", "", "");
    let mut c = Conn::connect(s.corvid.addr());
    let cases: Vec<(&str, FaultReply, Want)> = vec![
        (
            "503 SlowDown, Retry-After seconds",
            slow_down("7"),
            Want {
                status: 503,
                error: "origin_unavailable",
                code: Some("SlowDown"),
                retry_after: Some("7"),
                words: &["503", "SlowDown", "Please reduce your request rate."],
            },
        ),
        (
            "503 SlowDown chunked, Retry-After HTTP-date",
            slow_down("Wed, 21 Oct 2015 07:28:00 GMT").chunked(),
            Want {
                status: 503,
                error: "origin_unavailable",
                code: Some("SlowDown"),
                retry_after: Some("Wed, 21 Oct 2015 07:28:00 GMT"),
                words: &["SlowDown"],
            },
        ),
        (
            "503 ServiceUnavailable, invalid Retry-After dropped",
            FaultReply::xml(503, SERVICE_UNAVAILABLE).header("retry-after", "in a while"),
            Want {
                status: 503,
                error: "origin_unavailable",
                code: Some("ServiceUnavailable"),
                retry_after: None,
                words: &[],
            },
        ),
        (
            "503 without XML",
            FaultReply::xml(503, "<html><body>503 Service Unavailable</body></html>")
                .header("content-type", "text/html"),
            Want {
                status: 503,
                error: "origin_unavailable",
                code: None,
                retry_after: None,
                words: &["503"],
            },
        ),
        (
            "500 InternalError, chunked",
            FaultReply::xml(500, INTERNAL_ERROR).chunked(),
            Want {
                status: 500,
                error: "origin_internal_error",
                code: Some("InternalError"),
                retry_after: None,
                words: &["500", "InternalError"],
            },
        ),
        (
            "400 InvalidArgument",
            FaultReply::xml(400, INVALID_ARGUMENT),
            Want {
                status: 400,
                error: "origin_bad_request",
                code: Some("InvalidArgument"),
                retry_after: None,
                words: &["400", "Invalid version id specified"],
            },
        ),
        (
            "301 PermanentRedirect, chunked",
            permanent_redirect("oerr").chunked(),
            want_redirect(),
        ),
        (
            "400 AuthorizationHeaderMalformed naming the region",
            FaultReply::xml(400, AUTH_MALFORMED).header("x-amz-bucket-region", "eu-central-1"),
            Want {
                status: 502,
                error: "bad_gateway",
                code: Some("AuthorizationHeaderMalformed"),
                retry_after: None,
                words: &[
                    "bucket oerr is in region eu-central-1, configured us-east-1",
                    "check the bucket's region/endpoint",
                ],
            },
        ),
        (
            "403 AccessDenied",
            FaultReply::xml(403, ACCESS_DENIED),
            Want {
                status: 403,
                error: "forbidden",
                code: Some("AccessDenied"),
                retry_after: None,
                words: &["refused access"],
            },
        ),
        (
            "409, another status",
            FaultReply::xml(409, "<Error><Code>OperationAborted</Code></Error>"),
            Want {
                status: 502,
                error: "bad_gateway",
                code: Some("OperationAborted"),
                retry_after: None,
                words: &["status 409"],
            },
        ),
    ];
    for (i, (what, reply, want)) in cases.into_iter().enumerate() {
        let path = format!("/oerr/k{i}");
        s.origin.put("oerr", &format!("k{i}"), what.as_bytes());
        s.origin.fail_next_with(1, reply);
        check(&c.request("GET", &path, &[]), &want, what);
        // The same client connection carries the next request, which reaches the origin (the
        // error was not cached) on the same origin connection.
        let r = c.request("GET", &path, &[]);
        assert_eq!(
            (r.status, r.header("x-cache")),
            (200, Some("MISS")),
            "{what}"
        );
        assert_eq!(r.body, what.as_bytes(), "{what}");
    }
    // The origin's own 404 (s3s-fs's NoSuchKey body).
    let want = Want {
        status: 404,
        error: "not_found",
        code: Some("NoSuchKey"),
        retry_after: None,
        words: &["no such object"],
    };
    check(&c.request("GET", "/oerr/missing", &[]), &want, "real 404");
    assert_eq!(c.request("GET", "/oerr/k0", &[]).status, 200);
    assert_eq!(
        s.relay.carried(),
        1,
        "every error body was read: one origin connection throughout"
    );
}

/// (what, method, request headers, the origin's answer, what the client must get).
type PassCase<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], FaultReply, Want);

#[test]
fn pass_through_gets_ranges_and_heads_map_origin_errors_too() {
    // No cache tier: every request is passed through as asked (`respond_upstream`).
    let s = setup("oerr", "", "\n[cache.memory]\ncapacity = 0\n");
    s.origin.put("oerr", "k", b"0123456789");
    let mut c = Conn::connect(s.corvid.addr());
    let range = [("range", "bytes=2-4")];
    let unavailable = Want {
        status: 503,
        error: "origin_unavailable",
        code: Some("SlowDown"),
        retry_after: Some("2"),
        words: &["SlowDown"],
    };
    let cases: Vec<PassCase<'_>> = vec![
        ("GET 503", "GET", &[], slow_down("2").chunked(), unavailable),
        (
            "range 500",
            "GET",
            &range,
            FaultReply::xml(500, INTERNAL_ERROR),
            Want {
                status: 500,
                error: "origin_internal_error",
                code: Some("InternalError"),
                retry_after: None,
                words: &[],
            },
        ),
        (
            "range 301",
            "GET",
            &range,
            permanent_redirect("oerr"),
            want_redirect(),
        ),
        (
            "HEAD 503 keeps Retry-After",
            "HEAD",
            &[],
            slow_down("2"),
            Want {
                status: 503,
                error: "",
                code: None,
                retry_after: Some("2"),
                words: &[],
            },
        ),
        (
            "HEAD 301, the region only in a header",
            "HEAD",
            &[],
            permanent_redirect("oerr"),
            Want {
                status: 502,
                error: "",
                code: None,
                retry_after: None,
                words: &[],
            },
        ),
    ];
    for (what, method, headers, reply, want) in cases {
        s.origin.fail_next_with(1, reply);
        let r = c.request(method, "/oerr/k", headers);
        check(&r, &want, what);
        let r = c.request(method, "/oerr/k", headers);
        assert!(matches!(r.status, 200 | 206), "{what}: {}", r.status);
    }
    assert_eq!(s.relay.carried(), 1, "one origin connection throughout");
}

#[test]
fn large_slow_or_broken_error_bodies_are_not_used() {
    let s = setup("oerr", "", "");
    let mut c = Conn::connect(s.corvid.addr());
    let huge = format!(
        "<Error><Code>SlowDown</Code><Message>{}</Message></Error>",
        "x".repeat(100 << 10)
    );
    let no_code = Want {
        status: 503,
        error: "origin_unavailable",
        code: None,
        retry_after: Some("1"),
        words: &["503"],
    };
    let cases: Vec<(&str, FaultReply)> = vec![
        (
            "100 KiB with Content-Length",
            FaultReply::xml(503, &huge).header("retry-after", "1"),
        ),
        (
            "100 KiB chunked",
            FaultReply::xml(503, &huge)
                .header("retry-after", "1")
                .chunked(),
        ),
        (
            "stalls mid-body for 6 s",
            slow_down("1").stall(Duration::from_secs(6)),
        ),
    ];
    for (i, (what, reply)) in cases.into_iter().enumerate() {
        let path = format!("/oerr/k{i}");
        s.origin.put("oerr", &format!("k{i}"), b"v");
        s.origin.fail_next_with(1, reply);
        let t0 = Instant::now();
        check(&c.request("GET", &path, &[]), &no_code, what);
        assert!(
            t0.elapsed() < Duration::from_secs(4),
            "{what}: answered after {:?}",
            t0.elapsed()
        );
        // The unread body cost its origin connection, nothing else.
        let r = c.request("GET", &path, &[]);
        assert_eq!((r.status, r.body.as_slice()), (200, &b"v"[..]), "{what}");
    }
    assert_eq!(
        s.relay.carried(),
        4,
        "each unread error body closed its connection"
    );
}

/// Moves corvid's clock past `ttl`: an entry stored (or revalidated) before is stale.
fn past(corvid: &InProcess, ttl: Duration) {
    corvid.advance(ttl + Duration::from_secs(1));
}

#[test]
fn revalidations_pass_origin_errors_on() {
    let ttl = Duration::from_secs(60);
    let s = setup_on_clock("oerr", "ttl = \"60s\"", "");
    s.origin.put("oerr", "k", b"cached");
    let mut c = Conn::connect(s.corvid.addr());
    assert_eq!(
        c.request("GET", "/oerr/k", &[]).header("x-cache"),
        Some("MISS")
    );
    let cases: Vec<(&str, FaultReply, Want)> = vec![
        (
            "503 SlowDown",
            slow_down("9"),
            Want {
                status: 503,
                error: "origin_unavailable",
                code: Some("SlowDown"),
                retry_after: Some("9"),
                words: &["SlowDown"],
            },
        ),
        (
            "500 InternalError",
            FaultReply::xml(500, INTERNAL_ERROR),
            Want {
                status: 500,
                error: "origin_internal_error",
                code: Some("InternalError"),
                retry_after: None,
                words: &[],
            },
        ),
        (
            "400 InvalidArgument",
            FaultReply::xml(400, INVALID_ARGUMENT).chunked(),
            Want {
                status: 400,
                error: "origin_bad_request",
                code: Some("InvalidArgument"),
                retry_after: None,
                words: &[],
            },
        ),
        (
            "301 PermanentRedirect",
            permanent_redirect("oerr"),
            want_redirect(),
        ),
    ];
    for (what, reply, want) in cases {
        past(&s.corvid, ttl);
        s.origin.fail_next_with(1, reply);
        check(&c.request("GET", "/oerr/k", &[]), &want, what);
        // The entry stays; the next request revalidates it (304) on the same connections.
        let r = c.request("GET", "/oerr/k", &[]);
        assert_eq!(
            (r.status, r.header("x-cache"), r.body.as_slice()),
            (200, Some("REVALIDATED"), &b"cached"[..]),
            "{what}"
        );
    }
    // A 404 on revalidation carries its code and removes the entry.
    past(&s.corvid, ttl);
    s.origin
        .fail_next_with(1, FaultReply::xml(404, NO_SUCH_KEY));
    let want = Want {
        status: 404,
        error: "not_found",
        code: Some("NoSuchKey"),
        retry_after: None,
        words: &[],
    };
    check(&c.request("GET", "/oerr/k", &[]), &want, "404 NoSuchKey");
    assert_eq!(
        c.request("GET", "/oerr/k", &[]).header("x-cache"),
        Some("MISS")
    );
    assert_eq!(s.relay.carried(), 1, "one origin connection throughout");
}

#[test]
fn stale_if_error_still_stands_in_for_origin_5xx() {
    let ttl = Duration::from_secs(60);
    let s = setup_on_clock(
        "oerr",
        "ttl = \"60s\"",
        "\n[cache]\nstale_if_error = \"1h\"\n",
    );
    s.origin.put("oerr", "k", b"cached");
    let mut c = Conn::connect(s.corvid.addr());
    assert_eq!(c.request("GET", "/oerr/k", &[]).status, 200);
    past(&s.corvid, ttl);
    // 5xx answers — passed on as such, or mapped to 502 — let the stale copy stand in.
    for (what, reply) in [
        ("503", slow_down("9")),
        ("500", FaultReply::xml(500, INTERNAL_ERROR)),
        ("301 → 502", permanent_redirect("oerr")),
    ] {
        s.origin.fail_next_with(1, reply);
        let r = c.request("GET", "/oerr/k", &[]);
        assert_eq!(
            (r.status, r.header("x-cache"), r.body.as_slice()),
            (200, Some("STALE"), &b"cached"[..]),
            "{what}"
        );
        assert_eq!(r.header("retry-after"), None, "{what}");
    }
    // A 400 is not an origin failure in RFC 5861's sense: it reaches the client.
    s.origin
        .fail_next_with(1, FaultReply::xml(400, INVALID_ARGUMENT));
    assert_eq!(c.request("GET", "/oerr/k", &[]).status, 400);
    let r = c.request("GET", "/oerr/k", &[]);
    assert_eq!(r.header("x-cache"), Some("REVALIDATED"));
    assert_eq!(s.relay.carried(), 1, "one origin connection throughout");
}

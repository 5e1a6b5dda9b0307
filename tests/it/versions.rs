//! Issue 19, versions: versioned objects and the S3 `response-*` overrides.
//!
//! - Versioned GETs against moto with versioning enabled (the s3s origin has no versions):
//!   each `?versionId=` answers its own bytes with its own `x-amz-version-id`, is cached, and
//!   is never revalidated however old it gets (corvid runs in-process on a manual clock);
//!   the unversioned key still revalidates and follows the latest version; a version the
//!   origin does not have is a 404 that hides no other version.
//! - `response-*` overrides against the signature-verifying s3s origin: one origin GET serves
//!   every combination, each answer (hit, miss, 304, HEAD, 206, pass-through) carries the
//!   asked values and none is stored or forwarded; a value with a control character is 400.

use std::time::Duration;

use crate::common::http::{self, RawResponse};
use crate::common::*;

const BUCKET: &str = "versions";
const PREFIX: &str = "/ver";

/// A corvid config for `BUCKET` at `endpoint` with `cache` lines in `[cache]` (memory tier).
fn config(endpoint: &str, cache: &str) -> String {
    format!(
        "{}{}\n[cache]\n{cache}\n",
        server_toml(free_port()),
        bucket_toml_for(BUCKET, PREFIX, endpoint, BUCKET, ""),
    )
}

/// What a failed assertion shows of an answer.
fn summary(r: &RawResponse) -> String {
    let body = match r.body.len() {
        0..=64 => format!("{:?}", String::from_utf8_lossy(&r.body)),
        n => format!("{n} bytes"),
    };
    format!(
        "[{} X-Cache={:?} version={:?} body={body}]",
        r.status,
        r.header("x-cache"),
        r.header("x-amz-version-id"),
    )
}

/// The sum of corvid's `corvid_upstream_requests_total` for [`BUCKET`] (moto records
/// nothing itself).
fn upstream_requests(addr: std::net::SocketAddr) -> f64 {
    let prefix = format!("corvid_upstream_requests_total{{bucket=\"{BUCKET}\"");
    http::get(addr, "/metrics", &[])
        .text()
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Two versions of one key in a versioned moto bucket: each `?versionId=` is its own cached
/// object with its own `x-amz-version-id`, fresh however long it is kept (two days on the
/// manual clock, far past `ttl = "10s"`: no request reaches the origin for them), while the
/// plain key goes stale after its TTL, revalidates and answers the newest version.
#[test]
fn each_version_is_cached_for_good_and_the_plain_key_follows_the_latest() {
    const V1: &[u8] = b"version one";
    const V2: &[u8] = b"version two, a little longer";
    const V3: &[u8] = b"version three";
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    moto.enable_versioning(BUCKET);
    let put = |body: &[u8]| {
        let r = moto.put_with(BUCKET, "doc.txt", body, Some("text/plain"), &[]);
        assert_eq!(r.status, 200, "moto PUT: {}", r.text());
        r.header("x-amz-version-id")
            .expect("a versioned PUT answers x-amz-version-id")
            .to_owned()
    };
    let (v1, v2) = (put(V1), put(V2));
    assert_ne!(v1, v2);
    let c = InProcess::start(&config(&moto.endpoint(), "ttl = \"10s\""));
    let get = |query: &str, headers: &[(&str, &str)]| {
        http::get(c.addr(), &format!("{PREFIX}/doc.txt{query}"), headers)
    };
    let version = |v: &str| format!("?versionId={v}");

    for (v, body) in [(&v1, V1), (&v2, V2)] {
        let r = get(&version(v), &[]);
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, body),
            "{}",
            summary(&r)
        );
        assert_eq!(r.header("x-amz-version-id"), Some(v.as_str()));
        assert_eq!(r.header("x-cache"), Some("MISS"), "{}", summary(&r));
    }
    let r = get("", &[]);
    assert_eq!((r.status, r.body.as_slice()), (200, V2), "{}", summary(&r));
    assert_eq!(r.header("x-amz-version-id"), Some(v2.as_str()));
    for (v, body) in [(&v1, V1), (&v2, V2)] {
        let r = get(&version(v), &[]);
        assert_eq!(r.body, body, "{}", summary(&r));
        assert_eq!(r.header("x-cache"), Some("HIT"), "{}", summary(&r));
        assert_eq!(r.header("x-amz-version-id"), Some(v.as_str()));
    }
    let before = upstream_requests(c.addr());
    assert_eq!(
        before, 3.0,
        "one origin GET per version and one for the key"
    );

    // A new version at the origin; two days pass on corvid's clock.
    let v3 = put(V3);
    c.advance(Duration::from_secs(2 * 24 * 3600));
    for (v, body) in [(&v1, V1), (&v2, V2)] {
        let r = get(&version(v), &[]);
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, body),
            "{}",
            summary(&r)
        );
        assert_eq!(r.header("x-cache"), Some("HIT"), "{}", summary(&r));
        assert_eq!(r.header("x-amz-version-id"), Some(v.as_str()));
        // HEAD and ranges of a version are answered from its entry too.
        let h = http::head(c.addr(), &format!("{PREFIX}/doc.txt{}", version(v)), &[]);
        assert_eq!(h.status, 200, "{}", summary(&h));
        assert_eq!(h.header("x-cache"), Some("HIT"), "{}", summary(&h));
        assert_eq!(h.header("x-amz-version-id"), Some(v.as_str()));
        let body_len = body.len().to_string();
        assert_eq!(h.header("content-length"), Some(body_len.as_str()));
        let r = get(&version(v), &[("range", "bytes=0-6")]);
        assert_eq!(
            (r.status, r.body.as_slice()),
            (206, &body[..7]),
            "{}",
            summary(&r)
        );
        assert_eq!(r.header("x-cache"), Some("HIT"), "{}", summary(&r));
    }
    assert_eq!(
        upstream_requests(c.addr()),
        before,
        "a version is never revalidated"
    );

    // The plain key is stale: revalidated, it answers the newest version.
    let r = get("", &[]);
    assert_eq!((r.status, r.body.as_slice()), (200, V3), "{}", summary(&r));
    assert_eq!(r.header("x-amz-version-id"), Some(v3.as_str()));
    assert_ne!(r.header("x-cache"), Some("HIT"), "{}", summary(&r));
    assert_eq!(upstream_requests(c.addr()), before + 1.0);

    // A version the origin does not have (moto: 404 NoSuchVersion) is a 404 of its own.
    let r = get("?versionId=no-such-version", &[]);
    assert_eq!(r.status, 404, "{}", summary(&r));
    let r = get(&version(&v1), &[]);
    assert_eq!((r.body.as_slice(), r.header("x-cache")), (V1, Some("HIT")));
}

/// One cached object serves every `response-*` override: the first request (a miss, whose
/// fill the origin answers without overrides) and each later one (hits) carry exactly the
/// values asked for, replacing the stored ones, while a request without overrides still gets
/// the origin's own fields. 304, HEAD and 206 answers carry them too; the origin sees one GET
/// and no `response-*` parameter. A value with a control character is 400.
#[test]
fn response_overrides_are_applied_to_answers_from_one_cached_object() {
    let origin = Origin::start();
    origin.create_bucket(BUCKET);
    let body = pattern_bytes(5_000, 3);
    origin.put_with(
        BUCKET,
        "report.csv",
        &body,
        Some("text/csv"),
        &[("cache-control", "max-age=600")],
    );
    let c = Corvid::start(&config(&origin.endpoint(), ""));
    let path = |query: &str| format!("{PREFIX}/report.csv?{query}");

    // (query, the headers it must set)
    let combos: [(&str, &[(&str, &str)]); 4] = [
        (
            "response-content-type=application%2Foctet-stream\
             &response-content-disposition=attachment%3B%20filename%3D%22r%C3%A9sum%C3%A9%20%2B1.csv%22",
            &[
                ("content-type", "application/octet-stream"),
                ("content-disposition", "attachment; filename=\"résumé +1.csv\""),
            ],
        ),
        (
            "response-cache-control=no-cache&response-expires=Thu%2C%2001%20Jan%201970%2000%3A00%3A00%20GMT",
            &[
                ("cache-control", "no-cache"),
                ("expires", "Thu, 01 Jan 1970 00:00:00 GMT"),
            ],
        ),
        (
            "response-content-language=fr-CA&response-content-encoding=identity&x-id=GetObject",
            &[
                ("content-language", "fr-CA"),
                ("content-encoding", "identity"),
            ],
        ),
        (
            "response-content-type=text%2Fplain&response-content-disposition=inline\
             &response-cache-control=private&response-content-language=en\
             &response-content-encoding=gzip&response-expires=0",
            &[
                ("content-type", "text/plain"),
                ("content-disposition", "inline"),
                ("cache-control", "private"),
                ("content-language", "en"),
                ("content-encoding", "gzip"),
                ("expires", "0"),
            ],
        ),
    ];
    let check = |r: &RawResponse, what: &str, expected: &[(&str, &str)]| {
        for (name, value) in expected {
            assert_eq!(
                r.header_all(name),
                vec![*value],
                "{what}: exactly one {name} line, the asked value; {}",
                summary(r)
            );
        }
    };
    for (i, (query, expected)) in combos.iter().enumerate() {
        let r = http::get(c.addr(), &path(query), &[]);
        assert_eq!((r.status, &r.body), (200, &body), "{}", summary(&r));
        let xcache = if i == 0 { "MISS" } else { "HIT" };
        assert_eq!(
            r.header("x-cache"),
            Some(xcache),
            "{query}: {}",
            summary(&r)
        );
        check(&r, query, expected);
    }
    // The stored entry holds the origin's fields only.
    let plain = http::get(c.addr(), &path(""), &[]);
    assert_eq!(plain.header("x-cache"), Some("HIT"));
    assert_eq!(plain.header_all("content-type"), vec!["text/csv"]);
    assert_eq!(plain.header_all("cache-control"), vec!["max-age=600"]);
    for absent in ["content-disposition", "content-language", "expires"] {
        assert!(!plain.has_header(absent), "{absent}: {}", summary(&plain));
    }
    let etag = plain.header("etag").expect("ETag").to_owned();

    let (query, expected) = combos[0];
    // HEAD, 206, 304 from the entry.
    let h = http::head(c.addr(), &path(query), &[]);
    assert_eq!((h.status, h.header("x-cache")), (200, Some("HIT")));
    check(&h, "HEAD", expected);
    let r = http::get(c.addr(), &path(query), &[("range", "bytes=10-19")]);
    assert_eq!((r.status, r.body.as_slice()), (206, &body[10..20]));
    check(&r, "206", expected);
    let r = http::get(c.addr(), &path(query), &[("if-none-match", &etag)]);
    assert_eq!((r.status, r.header("x-cache")), (304, Some("HIT")));
    check(&r, "304", expected);

    // A value that would split the head (CR, LF), end it (NUL) or is any other control
    // character is refused before anything is looked up or fetched.
    for bad in [
        "response-content-type=text%2Fplain%0D%0AX-Evil%3A%201",
        "response-content-disposition=a%0Ab",
        "response-expires=%00",
        "response-content-language=en%09fr",
        "response-cache-control=%7F",
    ] {
        let r = http::get(c.addr(), &path(bad), &[]);
        assert_eq!(r.status, 400, "{bad}: {}", summary(&r));
        assert!(!r.has_header("x-evil"), "{bad}");
    }

    let gets = origin
        .requests_for(BUCKET, "report.csv")
        .into_iter()
        .filter(|r| r.method == "GET")
        .collect::<Vec<_>>();
    assert_eq!(gets.len(), 1, "one origin GET for every combination");
    assert!(
        !gets[0].query.as_deref().unwrap_or("").contains("response-"),
        "overrides are not forwarded: {:?}",
        gets[0].query
    );

    // Answers passed through from the origin get them too: a HEAD and a Range miss, and the
    // origin's 304 to a conditional HEAD.
    origin.put_with(BUCKET, "other.csv", &body, Some("text/csv"), &[]);
    let h = http::head(c.addr(), &format!("{PREFIX}/other.csv?{query}"), &[]);
    assert_eq!((h.status, h.header("x-cache")), (200, Some("MISS")));
    check(&h, "HEAD miss", expected);
    let other_etag = h.header("etag").expect("ETag").to_owned();
    let h = http::head(
        c.addr(),
        &format!("{PREFIX}/other.csv?{query}"),
        &[("if-none-match", &other_etag)],
    );
    assert_eq!(h.status, 304, "{}", summary(&h));
    check(&h, "304 from the origin", expected);
    let r = http::get(
        c.addr(),
        &format!("{PREFIX}/other.csv?{query}"),
        &[("range", "bytes=0-9")],
    );
    assert_eq!((r.status, r.body.as_slice()), (206, &body[..10]));
    check(&r, "206 miss", expected);
}

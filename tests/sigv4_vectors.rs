//! The AWS SigV4 signing test suite, run against `corvid::s3::sigv4`.
//!
//! Every directory under `tests/data/sigv4/` is one vector (copied from the suite shipped in the
//! `aws-sigv4` crate; see the README there). For each we check, from the data files alone:
//! the canonical request, the string to sign, the signature, and the full `Authorization` value
//! produced by `Signer` (so the signer's own header assembly is covered, not only the pieces).
//!
//! Vectors in the upstream suite that are deliberately *not* copied, and why:
//! - `get-relative-normalized`, `get-relative-relative-normalized`,
//!   `get-slash-dot-slash-normalized`, `get-slash-normalized`,
//!   `get-slash-pointless-dot-normalized`, `get-slashes-normalized`: they expect URI path
//!   normalization (`.`/`..` segments removed, `//` merged). S3 never normalizes: those are
//!   legitimate parts of object keys. Their `-unnormalized` twins are run instead.
//!   (`get-space-normalized` *is* run: normalization does not change that path.)
//! - `double-encode-path`, `double-url-encode`: they expect the path to be percent-encoded twice,
//!   the mode for non-S3 services; S3 encodes once. They also have no `context.json`.
//! - every `query-*` file: presigned-URL (query-string) signing, which corvid does not do.
//! - the whole `v4a/` directory: SigV4a (ECDSA, multi-region), a different algorithm.
//!
//! Vectors that need a note:
//! - the suite signs with the payload hash of the body (the empty body for all but the
//!   `post-x-www-form-urlencoded*` ones) and adds `x-amz-content-sha256` only when `sign_body`
//!   is set, hence `Signer::authorization_with_payload_hash` instead of `Signer::sign`, which
//!   always uses `UNSIGNED-PAYLOAD`.
//! - `get-header-value-multiline` uses an obsolete folded header. The parser here unfolds it by
//!   replacing the line break with a space (RFC 7230 §3.2.4) and leaves the continuation line's
//!   leading spaces in place, so collapsing them is left to the signer's value normalization.
//! - `post-sts-header-after` (`omit_session_token`) adds the token header after signing, i.e.
//!   the token is not signed. corvid always signs the token, so this vector is run with
//!   credentials without a token, which yields the same signature.
#![allow(
    clippy::disallowed_methods,
    reason = "tests run on the harness's threads, not on a worker: they may block"
)]

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use corvid::s3::sigv4::{
    amz_date, canonical_object_path, canonical_query, canonical_request, credential_scope,
    days_from_civil, derive_signing_key, signature, string_to_sign, Credentials, Signer,
    SigningRequest,
};
use sha2::{Digest, Sha256};

/// Vectors present in the upstream suite and intentionally absent from tests/data/sigv4.
const SKIPPED: &[&str] = &[
    "get-relative-normalized",
    "get-relative-relative-normalized",
    "get-slash-dot-slash-normalized",
    "get-slash-normalized",
    "get-slash-pointless-dot-normalized",
    "get-slashes-normalized",
    "double-encode-path",
    "double-url-encode",
];

/// How many vectors must run, so that a lost data directory fails the test instead of
/// silently shrinking coverage.
const EXPECTED_VECTORS: usize = 32;

struct Request {
    method: String,
    path: String,
    query: Option<String>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn parse_request(raw: &[u8]) -> Request {
    let (head, body) = match find(raw, b"\n\n") {
        Some(i) => (&raw[..i], raw[i + 2..].to_vec()),
        None => (raw, Vec::new()),
    };
    let head = std::str::from_utf8(head).expect("request head is UTF-8");
    let mut lines = head.split('\n');
    let request_line = lines.next().expect("request line");
    // The target may contain raw spaces (get-space-unnormalized), so split from both ends.
    let (method, rest) = request_line.split_once(' ').expect("method");
    let target = rest.strip_suffix(" HTTP/1.1").expect("HTTP/1.1");
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (target.to_owned(), None),
    };
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        if line.starts_with([' ', '\t']) {
            let last = headers.last_mut().expect("continuation after a header");
            last.1.push(' ');
            last.1.push_str(line);
        } else {
            let (name, value) = line.split_once(':').expect("header line");
            headers.push((name.to_owned(), value.to_owned()));
        }
    }
    Request {
        method: method.to_owned(),
        path,
        query,
        headers,
        body,
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).expect("valid %XX"));
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("decoded text is UTF-8")
}

/// "2015-08-30T12:36:00Z" → SystemTime.
fn parse_timestamp(s: &str) -> SystemTime {
    let n = |r: std::ops::Range<usize>| s[r].parse::<u32>().unwrap();
    assert_eq!(s.len(), 20, "timestamp format: {s}");
    let days = days_from_civil(i64::from(n(0..4)), n(5..7), n(8..10));
    let secs = days * 86_400 + i64::from(n(11..13) * 3600 + n(14..16) * 60 + n(17..19));
    UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap())
}

fn read(dir: &Path, file: &str) -> String {
    fs::read_to_string(dir.join(file)).unwrap_or_else(|e| panic!("{}/{file}: {e}", dir.display()))
}

fn run_vector(dir: &Path) {
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    let ctx: serde_json::Value = serde_json::from_str(&read(dir, "context.json")).unwrap();
    let s = |v: &serde_json::Value| v.as_str().unwrap().to_owned();
    let access_key = s(&ctx["credentials"]["access_key_id"]);
    let secret_key = s(&ctx["credentials"]["secret_access_key"]);
    let omit_token = ctx["omit_session_token"].as_bool().unwrap_or(false);
    let token = ctx["credentials"]["token"]
        .as_str()
        .filter(|_| !omit_token)
        .map(str::to_owned);
    let region = s(&ctx["region"]);
    let service = s(&ctx["service"]);
    let sign_body = ctx["sign_body"].as_bool().unwrap();
    let now = parse_timestamp(ctx["timestamp"].as_str().unwrap());

    let req = parse_request(&fs::read(dir.join("request.txt")).unwrap());
    let key = percent_decode(&req.path);
    let key = key.strip_prefix('/').expect("path starts with /");
    let uri = canonical_object_path(None, key);
    let decoded_query: Vec<(String, String)> = req
        .query
        .iter()
        .flat_map(|q| q.split('&'))
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (n, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(n), percent_decode(v))
        })
        .collect();
    let query_pairs: Vec<(&str, &str)> = decoded_query
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let query = canonical_query(&query_pairs);
    let payload_hash = hex::encode(Sha256::digest(&req.body));

    // Low-level pieces, with every signed header spelled out and names in the vector's case.
    let date = amz_date(now);
    let mut all_headers: Vec<(&str, &str)> = req
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    all_headers.push(("X-Amz-Date", &date));
    if let Some(t) = &token {
        all_headers.push(("X-Amz-Security-Token", t));
    }
    if sign_body {
        all_headers.push(("X-Amz-Content-Sha256", &payload_hash));
    }
    let creq = canonical_request(&req.method, &uri, &query, &all_headers, &payload_hash);
    assert_eq!(
        creq,
        read(dir, "header-canonical-request.txt"),
        "{name}: canonical request"
    );

    let scope = credential_scope(&date[..8], &region, &service);
    let sts = string_to_sign(&date, &scope, &creq);
    assert_eq!(
        sts,
        read(dir, "header-string-to-sign.txt"),
        "{name}: string to sign"
    );

    let key = derive_signing_key(&secret_key, &date[..8], &region, &service);
    let sig = signature(&key, &sts);
    assert_eq!(sig, read(dir, "header-signature.txt"), "{name}: signature");

    // The full Signer path: it adds x-amz-date / token / content-sha256 itself, and takes
    // lowercase names per its contract.
    let signed = read(dir, "header-signed-request.txt");
    let want_auth = signed
        .lines()
        .find_map(|l| l.strip_prefix("Authorization:"))
        .expect("Authorization line");
    let want_date = signed
        .lines()
        .find_map(|l| l.strip_prefix("X-Amz-Date:"))
        .expect("X-Amz-Date line");
    assert_eq!(date, want_date, "{name}: x-amz-date");

    let lower: Vec<(String, &str)> = req
        .headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.as_str()))
        .collect();
    let caller_headers: Vec<(&str, &str)> = lower.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    let signer = Signer::new(
        Credentials {
            access_key,
            secret_key,
            session_token: token,
        },
        &region,
        &service,
    );
    let sreq = SigningRequest {
        method: &req.method,
        canonical_uri: &uri,
        canonical_query: &query,
        headers: &caller_headers,
    };
    // Twice: once filling the key cache, once hitting it.
    for _ in 0..2 {
        let auth = signer.authorization_with_payload_hash(&sreq, now, &payload_hash, sign_body);
        assert_eq!(auth, want_auth, "{name}: Authorization");
    }
}

#[test]
fn aws_signing_test_suite_v4() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/sigv4");
    let mut dirs: Vec<PathBuf> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for dir in &dirs {
        let name = dir.file_name().unwrap().to_str().unwrap();
        assert!(!SKIPPED.contains(&name), "{name} is listed as skipped");
        run_vector(dir);
    }
    assert_eq!(dirs.len(), EXPECTED_VECTORS, "vector directories found");
}

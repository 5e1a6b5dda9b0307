//! JWT-protected buckets through the real binary: tokens made by an independent signer
//! (tests/jwt_support, `ring` directly), verified by corvid. A hit is not a bypass, a query
//! token never reaches the origin or the cache key, failures are counted by reason.

use serde_json::{json, Value};

use crate::common::http;
use crate::common::*;
use crate::jwt_support::key;

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

/// RS256 with a PEM public key; bucket `priv` requires `tenant = acme`, bucket `pub` is open.
fn config(origin: &Origin, pem: &std::path::Path) -> String {
    format!(
        "{}{}{}\n[jwt]\nalgorithm = \"RS256\"\npublic_key = {}\ntoken_sources = [\"bearer\", \"query:token\"]\nleeway = \"5s\"\n",
        server_toml(free_port()),
        bucket_toml_for(
            "priv",
            "/priv",
            &origin.endpoint(),
            "priv",
            "auth = true\nclaims = [{ name = \"tenant\", equals = \"acme\" }]\n"
        ),
        bucket_toml_for("pub", "/pub", &origin.endpoint(), "priv", ""),
        toml_str(&pem.to_string_lossy()),
    )
}

fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

#[test]
fn rs256_bucket_checks_every_request_and_keeps_tokens_away_from_the_origin() {
    let origin = Origin::start();
    origin.create_bucket("priv");
    origin.put("priv", "doc.txt", b"secret document");
    let dir = tempfile::tempdir().unwrap();
    let rsa = key("RS256", 0);
    let pem = dir.path().join("jwt.pem");
    std::fs::write(&pem, &rsa.public_pem).unwrap();
    let corvid = Corvid::start(&config(&origin, &pem));
    let addr = corvid.addr();
    let good = rsa.token(None, &json!({"exp": now() + 600, "tenant": "acme"}));

    // No token: 401 with the bare challenge, nothing asked of the origin.
    let r = http::get(addr, "/priv/doc.txt", &[]);
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert_eq!(origin.count("GET"), 0);

    // A valid bearer token: the object, signed upstream with corvid's own credentials.
    let r = http::get(addr, "/priv/doc.txt", &[("authorization", &bearer(&good))]);
    assert_eq!((r.status, r.header("x-cache")), (200, Some("MISS")));
    assert_eq!(r.body, b"secret document");
    let upstream = origin.last_request().unwrap();
    assert!(upstream
        .header("authorization")
        .unwrap()
        .starts_with("AWS4-HMAC-SHA256"));
    assert!(
        !format!("{upstream:?}").contains(&good),
        "the token stays here"
    );

    // Cached now; still no entry without a token (a hit is not a bypass).
    let r = http::get(addr, "/priv/doc.txt", &[]);
    assert_eq!(r.status, 401);
    // The same object with the token in the query: a HIT of the same entry, no origin request.
    let r = http::get(addr, &format!("/priv/doc.txt?token={good}"), &[]);
    assert_eq!((r.status, r.header("x-cache")), (200, Some("HIT")));
    assert_eq!(
        origin.count("GET"),
        1,
        "the query token is not part of the cache key"
    );

    // What is refused, and how.
    let invalid = Some("Bearer error=\"invalid_token\"");
    let cases: Vec<(&str, String, u16, Option<&str>)> = vec![
        (
            "expired",
            rsa.token(None, &json!({"exp": now() - 60, "tenant": "acme"})),
            401,
            invalid,
        ),
        (
            "not yet valid",
            rsa.token(
                None,
                &json!({"exp": now() + 600, "nbf": now() + 300, "tenant": "acme"}),
            ),
            401,
            invalid,
        ),
        (
            "other key",
            key("RS256", 1).token(None, &json!({"exp": now() + 600, "tenant": "acme"})),
            401,
            invalid,
        ),
        (
            "no exp",
            rsa.token(None, &json!({"tenant": "acme"})),
            401,
            invalid,
        ),
        (
            "HS256 with the public key as secret",
            hs256_with_secret(
                rsa.public_pem.as_bytes(),
                &json!({"exp": now() + 600, "tenant": "acme"}),
            ),
            401,
            invalid,
        ),
        (
            "alg none",
            unsigned(&json!({"exp": now() + 600, "tenant": "acme"})),
            401,
            invalid,
        ),
        (
            "wrong tenant",
            rsa.token(None, &json!({"exp": now() + 600, "tenant": "globex"})),
            403,
            None,
        ),
    ];
    for (what, token, status, challenge) in &cases {
        let r = http::get(addr, "/priv/doc.txt", &[("authorization", &bearer(token))]);
        assert_eq!(r.status, *status, "{what}: {}", r.text());
        assert_eq!(r.header("www-authenticate"), *challenge, "{what}");
        assert!(
            !r.text().contains(token.as_str()),
            "{what}: no token echoed"
        );
    }
    assert!(!corvid.stderr().contains(&good), "tokens are never logged");

    // The open bucket needs nothing.
    let r = http::get(addr, "/pub/doc.txt", &[]);
    assert_eq!(r.status, 200);

    let m = http::get(addr, "/metrics", &[]).text();
    for (reason, n) in [
        ("missing", 2),
        ("expired", 1),
        ("not_yet_valid", 1),
        ("signature", 1),
        ("no_exp", 1),
        ("algorithm", 2),
        ("claim", 1),
    ] {
        assert_eq!(
            metric(
                &m,
                &format!("corvid_auth_failures_total{{reason=\"{reason}\"}}")
            ),
            n,
            "{reason}"
        );
    }
}

/// `corvid check` parses the key files as `serve` does: a PEM that is not a key is refused by
/// both, naming the key.
#[test]
fn a_bad_public_key_is_refused_by_check_and_serve() {
    let origin = Origin::start();
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("jwt.pem");
    std::fs::write(
        &pem,
        "-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    let config = config(&origin, &pem);
    let path = dir.path().join("c.toml");
    std::fs::write(&path, &config).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_corvid"))
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("jwt.public_key"));
    let mut c = Corvid::spawn(&config);
    let status = c
        .wait_exit(std::time::Duration::from_secs(10))
        .expect("serve refuses it");
    assert_eq!(status.code(), Some(1));
    assert!(c.stderr().contains("jwt.public_key"), "{}", c.stderr());
}

fn b64(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// An HS256 token whose HMAC key is `secret` (the classic algorithm-confusion attack when the
/// secret is the server's RSA public key).
fn hs256_with_secret(secret: &[u8], claims: &Value) -> String {
    let msg = format!(
        "{}.{}",
        b64(json!({"alg": "HS256", "typ": "JWT"}).to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    format!(
        "{msg}.{}",
        b64(ring::hmac::sign(&k, msg.as_bytes()).as_ref())
    )
}

fn unsigned(claims: &Value) -> String {
    format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT"}).to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

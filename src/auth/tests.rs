//! Unit tests of the pure parts: token extraction and order, query stripping, the outcome
//! mapping, and the cache's bookkeeping (HS256 tokens signed here with `hmac`, not by
//! jsonwebtoken). The per-algorithm matrix is in tests/jwt.rs.

use std::borrow::Cow;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::json;

use super::*;
use crate::config::{JwtAlgorithm, JwtConfig, JwtKey, TokenSource};
use crate::error::Kind;

const NOW: u64 = 1_700_000_000;
const SECRET: &str = "0123456789abcdef0123456789abcdef";

fn hs256(claims: &serde_json::Value) -> String {
    let msg = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(msg.as_bytes());
    format!(
        "{msg}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

fn verifier() -> Verifier {
    Verifier::new(&JwtConfig {
        algorithm: JwtAlgorithm::HS256,
        key: JwtKey::Secret(SECRET.into()),
        token_sources: vec![TokenSource::Bearer],
        issuer: None,
        audience: Vec::new(),
        leeway: Duration::from_secs(5),
    })
    .unwrap()
}

fn sources() -> Vec<TokenSource> {
    vec![
        TokenSource::Bearer,
        TokenSource::Query("access_token".into()),
        TokenSource::Header(http::HeaderName::from_static("x-auth-token")),
    ]
}

/// `extract` over a list of (name, value) header fields.
fn ex<'a>(
    sources: &[TokenSource],
    headers: &'a [(&'a str, &'a str)],
    query: &'a str,
) -> Result<(Cow<'a, str>, Source), AuthFailure> {
    extract(
        sources,
        |name: &str| {
            let name = name.to_owned();
            headers
                .iter()
                .filter(move |(n, _)| n.eq_ignore_ascii_case(&name))
                .map(|(_, v)| v.as_bytes())
        },
        query,
    )
    .map(|f| (f.token, f.source))
}

#[test]
fn bearer_header() {
    let s = sources();
    for v in [
        "Bearer abc.def.ghi",
        "bearer abc.def.ghi",
        "BEARER   abc.def.ghi ",
    ] {
        let h = [("Authorization", v)];
        let (t, src) = ex(&s, &h, "").unwrap();
        assert_eq!((t.as_ref(), src), ("abc.def.ghi", Source::Bearer), "{v}");
        assert!(matches!(t, Cow::Borrowed(_)));
    }
    for v in ["Bearer", "Bearer ", "Bearer a b"] {
        assert_eq!(
            ex(&s, &[("authorization", v)], ""),
            Err(AuthFailure::Malformed),
            "{v}"
        );
    }
    // Another scheme is not a bearer token: the next source decides.
    assert_eq!(
        ex(&s, &[("Authorization", "Basic dXNlcg==")], ""),
        Err(AuthFailure::Missing)
    );
    assert_eq!(
        ex(&s, &[("Authorization", "Bearerabc")], ""),
        Err(AuthFailure::Missing)
    );
    let (t, src) = ex(&s, &[("Authorization", "Basic x")], "access_token=q").unwrap();
    assert_eq!((t.as_ref(), src), ("q", Source::Query));
    assert_eq!(
        ex(
            &s,
            &[("Authorization", "Bearer a"), ("authorization", "Bearer b")],
            ""
        ),
        Err(AuthFailure::Ambiguous)
    );
    // An `Option` lookup (first field only) works too.
    let f = extract(&s, |_: &str| Some(&b"Bearer t.t.t"[..]), "").unwrap();
    assert_eq!(f.token, "t.t.t");
}

#[test]
fn query_and_header_sources() {
    let s = sources();
    let (t, src) = ex(&s, &[], "a=1&access_token=tok.en.x&b=2").unwrap();
    assert_eq!((t.as_ref(), src), ("tok.en.x", Source::Query));
    assert!(matches!(t, Cow::Borrowed(_)));
    // Percent-encoded name and value.
    let (t, _) = ex(&s, &[], "access%5Ftoken=a%2Eb.c").unwrap();
    assert_eq!(t, "a.b.c");
    assert!(matches!(t, Cow::Owned(_)));
    // Twice, even spelled differently → ambiguous.
    assert_eq!(
        ex(&s, &[], "access_token=a&access%5ftoken=b"),
        Err(AuthFailure::Ambiguous)
    );
    assert_eq!(
        ex(&s, &[], "access_token=a&access_token=a"),
        Err(AuthFailure::Ambiguous)
    );
    for q in ["access_token=", "access_token", "access_token=%FF"] {
        assert_eq!(ex(&s, &[], q), Err(AuthFailure::Malformed), "{q}");
    }
    // Names are exact: case and prefixes do not match.
    assert_eq!(
        ex(&s, &[], "Access_token=a&access_token_x=b&xaccess_token=c"),
        Err(AuthFailure::Missing)
    );
    let (t, src) = ex(&s, &[("X-Auth-Token", "h.h.h")], "").unwrap();
    assert_eq!((t.as_ref(), src), ("h.h.h", Source::Header));
    assert_eq!(
        ex(&s, &[("x-auth-token", "a"), ("X-AUTH-TOKEN", "b")], ""),
        Err(AuthFailure::Ambiguous)
    );
    assert_eq!(
        ex(&s, &[("x-auth-token", "")], ""),
        Err(AuthFailure::Malformed)
    );
    assert_eq!(ex(&s, &[], ""), Err(AuthFailure::Missing));
    assert_eq!(ex(&s, &[("other", "x")], "x=1"), Err(AuthFailure::Missing));
}

#[test]
fn sources_are_tried_in_configured_order() {
    let headers = [("Authorization", "Bearer b"), ("X-Auth-Token", "h")];
    let q = "access_token=q";
    let (t, _) = ex(&sources(), &headers, q).unwrap();
    assert_eq!(t, "b");
    let mut s = sources();
    s.reverse(); // header, query, bearer
    assert_eq!(ex(&s, &headers, q).unwrap().0, "h");
    assert_eq!(ex(&s, &headers[..1], q).unwrap().0, "q");
    assert_eq!(ex(&s, &headers[..1], "").unwrap().0, "b");
    // The first present source decides, even when its token is bad.
    assert_eq!(
        ex(
            &s,
            &[("X-Auth-Token", ""), ("Authorization", "Bearer b")],
            ""
        ),
        Err(AuthFailure::Malformed)
    );
    // A source not configured is not looked at.
    assert_eq!(
        ex(&[TokenSource::Bearer], &headers[1..], q),
        Err(AuthFailure::Missing)
    );
}

#[test]
fn strip_query_token_removes_only_token_parameters() {
    let s = sources();
    let cases = [
        ("", ""),
        ("a=1&b=2", "a=1&b=2"),
        ("access_token=x", ""),
        ("a=1&access_token=x&b=2", "a=1&b=2"),
        ("access_token=x&a=1", "a=1"),
        ("a=1&access_token=x", "a=1"),
        ("access%5Ftoken=x&a=%20&access_token=y", "a=%20"),
        ("access_token&a", "a"),
        ("a=1&&access_token=x&b", "a=1&&b"),
        (
            "access_tokens=1&Access_token=2",
            "access_tokens=1&Access_token=2",
        ),
        ("x=access_token", "x=access_token"),
    ];
    for (q, want) in cases {
        let got = strip_query_token(q, &s);
        assert_eq!(got, want, "{q}");
        if q == want {
            assert!(matches!(got, Cow::Borrowed(_)), "{q}");
        }
    }
    // Several query sources: all stripped; none configured: nothing stripped.
    let two = [
        TokenSource::Query("t".into()),
        TokenSource::Query("jwt".into()),
    ];
    assert_eq!(strip_query_token("t=1&k=v&jwt=2", &two), "k=v");
    assert_eq!(strip_query_token("t=1", &[TokenSource::Bearer]), "t=1");
}

#[test]
fn failures_map_to_status_challenge_and_reason() {
    let mut reasons = std::collections::HashSet::new();
    for f in AuthFailure::ALL {
        assert!(
            reasons.insert(f.reason()),
            "duplicate reason {}",
            f.reason()
        );
        assert!(f
            .reason()
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'_'));
        let e = crate::Error::from(f);
        assert_eq!(e.status(), f.status());
        assert_eq!(e.www_authenticate(), f.www_authenticate());
        assert_eq!(e.message(), f.message());
        match f {
            AuthFailure::Missing => {
                assert_eq!(e.www_authenticate(), Some("Bearer"));
                assert_eq!(e.kind(), Kind::Unauthenticated);
            }
            // A bad fleet peer header: no token was involved, no challenge.
            AuthFailure::Claim | AuthFailure::AdminClaim | AuthFailure::Peer => {
                assert_eq!((e.status(), e.www_authenticate()), (403, None));
                assert_eq!(e.kind(), Kind::Forbidden);
            }
            _ => {
                assert_eq!(e.status(), 401);
                assert_eq!(e.www_authenticate(), Some("Bearer error=\"invalid_token\""));
            }
        }
    }
    for r in [
        "missing",
        "malformed",
        "signature",
        "expired",
        "not_yet_valid",
        "issuer",
    ] {
        assert!(reasons.contains(r), "{r}");
    }
    for r in ["audience", "algorithm", "kid", "claim", "peer"] {
        assert!(reasons.contains(r), "{r}");
    }
}

#[test]
fn token_never_in_errors() {
    let v = verifier();
    let tok = hs256(&json!({"exp": NOW - 100, "sub": "secret-subject"}));
    let f = v.verify(&tok, NOW).unwrap_err();
    let e = crate::Error::from(f);
    for text in [
        format!("{e}"),
        format!("{e:?}"),
        e.json_body("r"),
        format!("{v:?}"),
    ] {
        assert!(
            !text.contains(&tok[..20]) && !text.contains("secret-subject"),
            "{text}"
        );
        assert!(!text.contains(SECRET), "{text}");
    }
}

#[test]
fn cache_hit_miss_expiry_and_verifier_isolation() {
    let v = verifier();
    let cache = TokenCache::new(4);
    assert_eq!(cache.capacity(), 4);
    let tok = hs256(&json!({"exp": NOW + 10, "tenant": "acme"}));
    assert!(!cache.check(&v, &tok, NOW, &[]).unwrap().cached);
    assert!(cache.check(&v, &tok, NOW, &[]).unwrap().cached);
    assert_eq!(cache.len(), 1);
    // Within the leeway (5 s) after exp: still a hit; at exp + leeway: gone.
    assert!(cache.check(&v, &tok, NOW + 14, &[]).unwrap().cached);
    assert_eq!(
        cache.check(&v, &tok, NOW + 15, &[]),
        Err(AuthFailure::Expired)
    );
    assert_eq!(cache.len(), 0);
    // Another verifier (a reload) does not see the first one's entries.
    let v2 = verifier();
    assert!(!cache.check(&v, &tok, NOW, &[]).unwrap().cached);
    assert!(!cache.check(&v2, &tok, NOW, &[]).unwrap().cached);
    assert!(cache.check(&v2, &tok, NOW, &[]).unwrap().cached);
    // A token that is not yet valid is never stored; one cached before nbf is re-checked.
    let early = hs256(&json!({"exp": NOW + 100, "nbf": NOW + 50}));
    assert_eq!(
        cache.check(&v, &early, NOW, &[]),
        Err(AuthFailure::NotYetValid)
    );
    assert!(!cache.check(&v, &early, NOW + 50, &[]).unwrap().cached);
    assert_eq!(
        cache.check(&v, &early, NOW, &[]),
        Err(AuthFailure::NotYetValid)
    );
    // Failures are not cached; a forged token with a cached one's header is not a hit.
    let forged = format!("{}x", &tok[..tok.len() - 1]);
    assert_eq!(
        cache.check(&v, &forged, NOW, &[]),
        Err(AuthFailure::Signature)
    );
    // Bounded: many tokens never grow it past its capacity.
    for i in 0..100 {
        let t = hs256(&json!({"exp": NOW + 10 + i}));
        assert!(cache.check(&v, &t, NOW, &[]).is_ok());
        assert!(cache.len() <= cache.capacity());
    }
    cache.clear();
    assert!(cache.is_empty());
    assert_eq!(TokenCache::default().capacity(), cache::DEFAULT_CAPACITY);
}

//! JWT verification (src/auth) against tokens made by an independent implementation: `ring`
//! signs (tests/jwt_support), jsonwebtoken only verifies. Every algorithm: valid, expired, not
//! yet valid, wrong key, `alg: none`, another algorithm, key confusion, JWKS `kid` selection
//! and rotation, leeway edges, `iss`/`aud`, claim rules, key loading errors, and that a cache
//! hit allocates nothing (this binary installs a counting allocator for that).
#![allow(
    clippy::disallowed_methods,
    reason = "tests run on the harness's threads, not on a worker: they may block"
)]

mod jwt_support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use serde_json::{json, Value};

use corvid::auth::{AuthFailure, TokenCache, Verifier};
use corvid::config::{ClaimMatch, ClaimRule, ClaimTest, ClaimValue, JwtKey};
use jwt_support::{jwks_config, jwt_config, key, ALGS};

struct Counting;

thread_local! {
    // Const, no destructor: reading them never allocates.
    static COUNT: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards every call to `System` unchanged; the thread-locals it touches are const
// `Cell`s without destructors, so counting never allocates or re-enters the allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let _ = COUNT.try_with(|c| {
            if c.get() {
                ALLOCS.with(|a| a.set(a.get() + 1));
            }
        });
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` came from `System.alloc` with layout `l`.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        let _ = COUNT.try_with(|c| {
            if c.get() {
                ALLOCS.with(|a| a.set(a.get() + 1));
            }
        });
        // SAFETY: `p` came from `System` with layout `l`.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by `f` on this thread.
fn allocations(f: impl FnOnce()) -> u64 {
    ALLOCS.with(|a| a.set(0));
    COUNT.with(|c| c.set(true));
    f();
    COUNT.with(|c| c.set(false));
    ALLOCS.with(|a| a.get())
}

const NOW: u64 = 1_700_000_000;

fn claims(exp: u64) -> Value {
    json!({"sub": "user-1", "exp": exp, "iat": NOW})
}

fn asymmetric() -> impl Iterator<Item = &'static str> {
    ALGS.into_iter().filter(|a| !a.starts_with("HS"))
}

#[test]
fn every_algorithm_valid_expired_not_yet_valid_wrong_key() {
    let dir = tempfile::tempdir().unwrap();
    for alg in ALGS {
        let k = key(alg, 0);
        let v = Verifier::new(&k.config(dir.path())).unwrap();
        assert_eq!(v.algorithm().as_str(), alg);
        let ok = k.token(None, &claims(NOW + 60));
        let c = v
            .verify(&ok, NOW)
            .unwrap_or_else(|e| panic!("{alg}: {e:?}"));
        assert_eq!(c.get("sub"), Some(&json!("user-1")), "{alg}");
        assert_eq!(c.exp(), NOW + 60);
        // A kid is ignored with a single key.
        v.verify(&k.token(Some("anything"), &claims(NOW + 60)), NOW)
            .unwrap_or_else(|e| panic!("{alg} kid: {e:?}"));
        assert_eq!(
            v.verify(&k.token(None, &claims(NOW - 1)), NOW),
            Err(AuthFailure::Expired),
            "{alg}"
        );
        let early = json!({"exp": NOW + 600, "nbf": NOW + 60});
        assert_eq!(
            v.verify(&k.token(None, &early), NOW),
            Err(AuthFailure::NotYetValid),
            "{alg}"
        );
        assert!(v.verify(&k.token(None, &early), NOW + 60).is_ok(), "{alg}");
        let other = key(alg, 1);
        assert_eq!(
            v.verify(&other.token(None, &claims(NOW + 60)), NOW),
            Err(AuthFailure::Signature),
            "{alg}: wrong key"
        );
        // A payload changed after signing.
        let mut parts: Vec<String> = ok.split('.').map(str::to_owned).collect();
        parts[1] = jwt_support_b64(&json!({"sub": "admin", "exp": NOW + 60}).to_string());
        assert_eq!(
            v.verify(&parts.join("."), NOW),
            Err(AuthFailure::Signature),
            "{alg}: tampered"
        );
        // No exp.
        assert_eq!(
            v.verify(&k.token(None, &json!({"sub": "x"})), NOW),
            Err(AuthFailure::NoExpiry),
            "{alg}"
        );
        assert_eq!(
            v.verify(&k.token(None, &json!({"exp": "soon"})), NOW),
            Err(AuthFailure::Malformed),
            "{alg}"
        );
    }
}

fn jwt_support_b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

#[test]
fn alg_none_and_other_algorithms_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for alg in ALGS {
        let k = key(alg, 0);
        let v = Verifier::new(&k.config(dir.path())).unwrap();
        let body = jwt_support_b64(&claims(NOW + 60).to_string());
        for none in ["none", "None", "NONE"] {
            let head = jwt_support_b64(&json!({"alg": none, "typ": "JWT"}).to_string());
            for sig in ["", "AAAA"] {
                assert_eq!(
                    v.verify(&format!("{head}.{body}.{sig}"), NOW),
                    Err(AuthFailure::Algorithm),
                    "{alg} vs alg {none}"
                );
            }
        }
        // Header naming every other algorithm, signature made by that algorithm's key.
        for other in ALGS.into_iter().filter(|o| *o != alg) {
            let ok = key(other, 0);
            assert_eq!(
                v.verify(&ok.token(None, &claims(NOW + 60)), NOW),
                Err(AuthFailure::Algorithm),
                "{alg} config, {other} token"
            );
        }
        // Header lying about the algorithm (signed by the right key and scheme).
        let other = if alg == "HS256" { "HS512" } else { "HS256" };
        let t = k.sign_raw(&json!({"alg": other}), &claims(NOW + 60));
        assert_eq!(v.verify(&t, NOW), Err(AuthFailure::Algorithm), "{alg}");
        let t = k.sign_raw(&json!({"typ": "JWT"}), &claims(NOW + 60));
        assert_eq!(
            v.verify(&t, NOW),
            Err(AuthFailure::Malformed),
            "{alg}: no alg"
        );
    }
}

#[test]
fn hmac_with_the_public_key_as_secret_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for alg in asymmetric() {
        let k = key(alg, 0);
        let v = Verifier::new(&k.config(dir.path())).unwrap();
        for hs in ["HS256", "HS384", "HS512"] {
            let hmac = match hs {
                "HS256" => ring::hmac::HMAC_SHA256,
                "HS384" => ring::hmac::HMAC_SHA384,
                _ => ring::hmac::HMAC_SHA512,
            };
            let secret = ring::hmac::Key::new(hmac, k.public_pem.as_bytes());
            let msg = format!(
                "{}.{}",
                jwt_support_b64(&json!({"alg": hs, "typ": "JWT"}).to_string()),
                jwt_support_b64(&claims(NOW + 60).to_string())
            );
            let sig = ring::hmac::sign(&secret, msg.as_bytes());
            let t = format!("{msg}.{}", jwt_support_b64_bytes(sig.as_ref()));
            assert_eq!(v.verify(&t, NOW), Err(AuthFailure::Algorithm), "{alg}/{hs}");
        }
    }
}

fn jwt_support_b64_bytes(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

#[test]
fn malformed_tokens() {
    let k = key("HS256", 0);
    let v = Verifier::new(&k.config(std::path::Path::new("."))).unwrap();
    let good = k.token(None, &claims(NOW + 60));
    for t in [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "..",
        "!!!.e30.sig",
        &format!("{good}.x"),
        &good.replacen('.', "..", 1),
        &format!("{}.e30.x", jwt_support_b64("not json")),
    ] {
        assert_eq!(v.verify(t, NOW), Err(AuthFailure::Malformed), "{t}");
    }
    // Claims that are not an object.
    let t = k.sign_raw(&json!({"alg": "HS256"}), &json!([1, 2]));
    assert_eq!(v.verify(&t, NOW), Err(AuthFailure::Malformed));
}

#[test]
fn jwks_kid_selection_and_rotation() {
    let dir = tempfile::tempdir().unwrap();
    for alg in asymmetric() {
        let (a, b) = (key(alg, 0), key(alg, 1));
        let cfg = jwks_config(alg, dir.path(), &[a.jwk_with_kid("a"), b.jwk_with_kid("b")]);
        let v = Verifier::new(&cfg).unwrap_or_else(|e| panic!("{alg}: {e}"));
        let c = claims(NOW + 60);
        assert!(v.verify(&a.token(Some("a"), &c), NOW).is_ok(), "{alg} a");
        assert!(v.verify(&b.token(Some("b"), &c), NOW).is_ok(), "{alg} b");
        assert_eq!(
            v.verify(&a.token(Some("b"), &c), NOW),
            Err(AuthFailure::Signature),
            "{alg}: kid b, signed by a"
        );
        assert_eq!(
            v.verify(&a.token(None, &c), NOW),
            Err(AuthFailure::Kid),
            "{alg}"
        );
        assert_eq!(
            v.verify(&a.token(Some("c"), &c), NOW),
            Err(AuthFailure::Kid),
            "{alg}"
        );
        // One key without a kid: tokens without a kid use it; an unknown kid is refused.
        let one = jwks_config(alg, dir.path(), std::slice::from_ref(&a.jwk));
        let v1 = Verifier::new(&one).unwrap();
        assert!(v1.verify(&a.token(None, &c), NOW).is_ok(), "{alg}");
        assert_eq!(
            v1.verify(&a.token(Some("a"), &c), NOW),
            Err(AuthFailure::Kid)
        );
        // One key with a kid: a token without one is accepted (no choice to make).
        let one = jwks_config(alg, dir.path(), &[a.jwk_with_kid("a")]);
        let v1 = Verifier::new(&one).unwrap();
        assert!(v1.verify(&a.token(None, &c), NOW).is_ok(), "{alg}");
        assert!(v1.verify(&a.token(Some("a"), &c), NOW).is_ok(), "{alg}");
    }
}

#[test]
fn jwks_skips_keys_for_other_uses() {
    let dir = tempfile::tempdir().unwrap();
    let rs = key("RS256", 0);
    let es = key("ES256", 0);
    let mut enc = key("RS256", 1).jwk_with_kid("enc");
    enc["use"] = json!("enc");
    let mut ps = key("RS256", 1).jwk_with_kid("ps");
    ps["alg"] = json!("PS256");
    let mut rs_alg = rs.jwk_with_kid("rs");
    rs_alg["alg"] = json!("RS256");
    rs_alg["use"] = json!("sig");
    let keys = [
        es.jwk_with_kid("ec"),
        enc,
        ps,
        rs_alg,
        json!({"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"}),
        json!({"kty": "weird", "kid": "w"}),
    ];
    let v = Verifier::new(&jwks_config("RS256", dir.path(), &keys)).unwrap();
    let c = claims(NOW + 60);
    assert!(v.verify(&rs.token(Some("rs"), &c), NOW).is_ok());
    for kid in ["ec", "enc", "ps", "hmac", "w"] {
        assert_eq!(
            v.verify(&rs.token(Some(kid), &c), NOW),
            Err(AuthFailure::Kid),
            "{kid}"
        );
    }
}

#[test]
fn key_loading_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let write = |name: &str, text: &str| {
        let p = d.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let err = |alg: &str, key: JwtKey| Verifier::new(&jwt_config(alg, key)).unwrap_err();
    let private = std::fs::read_to_string(jwt_support::data_dir().join("rsa1.pk8.pem")).unwrap();
    let e = err("RS256", JwtKey::PublicKey(write("priv.pem", &private)));
    assert!(
        e.starts_with("jwt.public_key: ") && e.contains("private key"),
        "{e}"
    );
    let e = err("RS256", JwtKey::PublicKey(write("junk.pem", "hello")));
    assert!(
        e.starts_with("jwt.public_key: ") && e.contains("not a PEM"),
        "{e}"
    );
    let e = err("RS256", JwtKey::PublicKey(d.join("missing.pem")));
    assert!(
        e.starts_with("jwt.public_key: ") && e.contains("cannot read"),
        "{e}"
    );
    let p256 = write("p256.pem", &key("ES256", 0).public_pem);
    let e = err("ES384", JwtKey::PublicKey(p256.clone()));
    assert!(e.contains("another curve") && e.contains("P-384"), "{e}");
    let rsa = write("rsa.pem", &key("RS256", 0).public_pem);
    let e = err("ES256", JwtKey::PublicKey(rsa.clone()));
    assert!(e.contains("not an EC key"), "{e}");
    let e = err("RS256", JwtKey::PublicKey(p256));
    assert!(e.starts_with("jwt.public_key: "), "{e}");
    let e = err("EdDSA", JwtKey::PublicKey(rsa));
    assert!(e.starts_with("jwt.public_key: "), "{e}");
    let e = err("RS256", JwtKey::Secret("x".repeat(40)));
    assert!(e.starts_with("jwt.secret: "), "{e}");

    let jwks = |text: &str| JwtKey::JwksFile(write("set.json", text));
    let e = err("RS256", jwks("not json"));
    assert!(
        e.starts_with("jwt.jwks_file: ") && e.contains("not JSON"),
        "{e}"
    );
    let e = err("RS256", jwks("{\"nokeys\": 1}"));
    assert!(e.contains("no \"keys\" array"), "{e}");
    let e = err("RS256", jwks("{\"keys\": []}"));
    assert!(e.contains("no key usable with RS256"), "{e}");
    let es = key("ES256", 0).jwk_with_kid("e");
    let e = err("RS256", jwks(&json!({"keys": [es]}).to_string()));
    assert!(e.contains("no key usable"), "{e}");
    let (a, b) = (key("RS256", 0), key("RS256", 1));
    let two = json!({"keys": [a.jwk_with_kid("k"), b.jwk_with_kid("k")]}).to_string();
    let e = err("RS256", jwks(&two));
    assert!(e.contains("keys[1]") && e.contains("same kid"), "{e}");
    let two = json!({"keys": [a.jwk_with_kid("k"), b.jwk.clone()]}).to_string();
    let e = err("RS256", jwks(&two));
    assert!(e.contains("needs a `kid`"), "{e}");
    let broken = json!({"keys": [{"kty": "RSA", "alg": "RS256", "n": 5}]}).to_string();
    let e = err("RS256", jwks(&broken));
    assert!(e.contains("keys[0]"), "{e}");
}

#[test]
fn leeway_edges() {
    let k = key("HS256", 0);
    let mut cfg = k.config(std::path::Path::new("."));
    for leeway in [0, 30] {
        cfg.leeway = Duration::from_secs(leeway);
        let v = Verifier::new(&cfg).unwrap();
        let t = k.token(None, &claims(NOW));
        // Valid strictly before exp + leeway.
        assert!(v.verify(&t, NOW + leeway - 1).is_ok(), "leeway {leeway}");
        assert_eq!(v.verify(&t, NOW + leeway), Err(AuthFailure::Expired));
        // Valid from nbf - leeway on.
        let t = k.token(None, &json!({"exp": NOW + 1000, "nbf": NOW + 100}));
        assert!(v.verify(&t, NOW + 100 - leeway).is_ok(), "leeway {leeway}");
        assert_eq!(
            v.verify(&t, NOW + 99 - leeway),
            Err(AuthFailure::NotYetValid)
        );
        // Fractional NumericDates.
        let t = k.token(None, &json!({"exp": NOW as f64 + 0.5}));
        assert!(v.verify(&t, NOW + leeway - 1).is_ok());
        assert_eq!(v.verify(&t, NOW + leeway), Err(AuthFailure::Expired));
    }
}

#[test]
fn issuer_and_audience() {
    let k = key("ES256", 0);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = k.config(dir.path());
    cfg.issuer = Some("https://idp.example".into());
    cfg.audience = vec!["corvid".into(), "assets".into()];
    let v = Verifier::new(&cfg).unwrap();
    let t = |c: Value| k.token(None, &c);
    let e = NOW + 60;
    let iss = "https://idp.example";
    assert!(v
        .verify(&t(json!({"exp": e, "iss": iss, "aud": "corvid"})), NOW)
        .is_ok());
    assert!(v
        .verify(
            &t(json!({"exp": e, "iss": iss, "aud": ["x", "assets"]})),
            NOW
        )
        .is_ok());
    for (c, want) in [
        (json!({"exp": e, "aud": "corvid"}), AuthFailure::Issuer),
        (
            json!({"exp": e, "iss": "https://idp.example/", "aud": "corvid"}),
            AuthFailure::Issuer,
        ),
        (
            json!({"exp": e, "iss": 5, "aud": "corvid"}),
            AuthFailure::Issuer,
        ),
        (json!({"exp": e, "iss": iss}), AuthFailure::Audience),
        (
            json!({"exp": e, "iss": iss, "aud": "other"}),
            AuthFailure::Audience,
        ),
        (
            json!({"exp": e, "iss": iss, "aud": []}),
            AuthFailure::Audience,
        ),
        (
            json!({"exp": e, "iss": iss, "aud": ["Corvid"]}),
            AuthFailure::Audience,
        ),
    ] {
        assert_eq!(v.verify(&t(c.clone()), NOW), Err(want), "{c}");
    }
    // Without issuer/audience configured, iss and aud are not looked at.
    let v = Verifier::new(&k.config(dir.path())).unwrap();
    assert!(v
        .verify(&t(json!({"exp": e, "iss": 1, "aud": 2})), NOW)
        .is_ok());
}

fn rule(name: &str, test: ClaimTest) -> ClaimRule {
    ClaimRule {
        name: name.into(),
        test,
    }
}

#[test]
fn claim_rules_pass_and_fail_with_403() {
    let dir = tempfile::tempdir().unwrap();
    for alg in ["HS256", "RS256", "EdDSA"] {
        let k = key(alg, 0);
        let v = Verifier::new(&k.config(dir.path())).unwrap();
        let cache = TokenCache::new(16);
        let tok = k.token(
            None,
            &json!({
                "exp": NOW + 60, "tenant": "acme", "tier": "gold", "level": 3, "staff": true,
                "groups": ["readers", "writers"], "role": ["ops", "admin"],
            }),
        );
        let pass = [
            rule(
                "tenant",
                ClaimTest::Equals(ClaimValue::String("acme".into())),
            ),
            rule("level", ClaimTest::Equals(ClaimValue::Integer(3))),
            rule("staff", ClaimTest::Equals(ClaimValue::Bool(true))),
            rule(
                "tier",
                ClaimTest::OneOf(vec!["silver".into(), "gold".into()]),
            ),
            rule("groups", ClaimTest::Contains("readers".into())),
        ];
        assert!(v.check(&tok, NOW, &pass).is_ok(), "{alg}");
        assert!(v.check(&tok, NOW, &[]).is_ok(), "{alg}");
        let fail = [
            rule(
                "tenant",
                ClaimTest::Equals(ClaimValue::String("other".into())),
            ),
            rule("level", ClaimTest::Equals(ClaimValue::String("3".into()))),
            rule("level", ClaimTest::Equals(ClaimValue::Integer(4))),
            rule("staff", ClaimTest::Equals(ClaimValue::Bool(false))),
            rule("tier", ClaimTest::OneOf(vec!["silver".into()])),
            rule("groups", ClaimTest::OneOf(vec!["readers".into()])),
            rule("groups", ClaimTest::Contains("admins".into())),
            rule("tenant", ClaimTest::Contains("acme".into())),
            rule("missing", ClaimTest::Equals(ClaimValue::Bool(true))),
        ];
        for f in fail {
            let rules = [pass[0].clone(), f.clone()];
            assert_eq!(v.check(&tok, NOW, &rules), Err(AuthFailure::Claim), "{f:?}");
            assert_eq!(
                cache.check(&v, &tok, NOW, &rules),
                Err(AuthFailure::Claim),
                "{f:?}"
            );
            assert_eq!(AuthFailure::Claim.status(), 403);
        }
        // The admin claim: array containing, or string equal.
        let admin = |value: &str| ClaimMatch {
            name: "role".into(),
            value: value.into(),
        };
        assert!(v.check_admin(&tok, NOW, &admin("admin")).is_ok());
        assert!(cache.check_admin(&v, &tok, NOW, &admin("admin")).is_ok());
        assert_eq!(
            cache.check_admin(&v, &tok, NOW, &admin("root")),
            Err(AuthFailure::AdminClaim)
        );
        let s = k.token(None, &json!({"exp": NOW + 60, "role": "admin"}));
        assert!(v.check_admin(&s, NOW, &admin("admin")).is_ok());
        assert_eq!(
            v.check_admin(&s, NOW, &admin("adm")),
            Err(AuthFailure::AdminClaim)
        );
        let n = k.token(None, &json!({"exp": NOW + 60}));
        assert_eq!(
            v.check_admin(&n, NOW, &admin("admin")),
            Err(AuthFailure::AdminClaim)
        );
    }
}

#[test]
fn cache_hits_skip_verification_and_allocate_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let k = key("RS256", 0);
    let v = Verifier::new(&k.config(dir.path())).unwrap();
    let cache = TokenCache::default();
    let tok = k.token(
        None,
        &json!({"exp": NOW + 60, "tenant": "acme", "role": "admin"}),
    );
    let rules = [rule(
        "tenant",
        ClaimTest::Equals(ClaimValue::String("acme".into())),
    )];
    let admin = ClaimMatch {
        name: "role".into(),
        value: "admin".into(),
    };
    let first = cache.check(&v, &tok, NOW, &rules).unwrap();
    assert!(!first.cached);
    let mut hit = None;
    let n = allocations(|| {
        hit = Some(cache.check(&v, &tok, NOW + 1, &rules));
        let _ = cache.check_admin(&v, &tok, NOW + 1, &admin);
    });
    assert_eq!(
        hit,
        Some(Ok(corvid::auth::Verified {
            exp: NOW + 60,
            cached: true
        }))
    );
    assert_eq!(n, 0, "a cache hit allocated");
    // A rule failing on a hit is still a 403.
    let bad = [rule(
        "tenant",
        ClaimTest::Equals(ClaimValue::String("x".into())),
    )];
    assert_eq!(
        cache.check(&v, &tok, NOW + 2, &bad),
        Err(AuthFailure::Claim)
    );
    // The entry never outlives exp.
    assert_eq!(
        cache.check(&v, &tok, NOW + 60, &rules),
        Err(AuthFailure::Expired)
    );
}

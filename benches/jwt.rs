//! Cost of admitting one request's JWT, per algorithm: full verification (`Verifier::check`:
//! header, signature, exp/nbf, claim rules) against a hit of the per-worker `TokenCache`, plus
//! the token extraction. Tokens are signed by `ring` (tests/jwt_support), with a typical
//! ~10-claim payload, one claim rule. These numbers are why src/auth/cache.rs exists.

#[path = "../tests/jwt_support/mod.rs"]
mod jwt_support;

use std::hint::black_box;

use corvid::auth::{extract, TokenCache, Verifier};
use corvid::config::{ClaimRule, ClaimTest, ClaimValue, TokenSource};
use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;

const NOW: u64 = 1_700_000_000;

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let rules = [ClaimRule {
        name: "tenant".into(),
        test: ClaimTest::Equals(ClaimValue::String("acme".into())),
    }];
    let claims = json!({
        "iss": "https://idp.example.com/", "sub": "user-1234567890", "aud": "corvid",
        "exp": NOW + 3600, "iat": NOW, "nbf": NOW, "jti": "5f0c3c1e-8e0f-4b1e-9d7c-0a1b2c3d4e5f",
        "tenant": "acme", "groups": ["readers", "writers"], "scope": "read:assets",
    });
    let mut g = c.benchmark_group("jwt");
    for alg in ["HS256", "RS256", "PS256", "ES256", "ES384", "EdDSA"] {
        let k = jwt_support::key(alg, 0);
        let v = Verifier::new(&k.config(dir.path())).unwrap();
        let token = k.token(None, &claims);
        assert!(v.check(&token, NOW, &rules).is_ok());
        g.bench_function(format!("verify/{alg}"), |b| {
            b.iter(|| v.check(black_box(&token), NOW, &rules).unwrap())
        });
        let cache = TokenCache::default();
        assert!(!cache.check(&v, &token, NOW, &rules).unwrap().cached);
        g.bench_function(format!("cached/{alg}"), |b| {
            b.iter(|| {
                let r = cache.check(&v, black_box(&token), NOW, &rules).unwrap();
                debug_assert!(r.cached);
                r
            })
        });
    }
    let header = format!(
        "Bearer {}",
        jwt_support::key("HS256", 0).token(None, &claims)
    );
    let sources = [TokenSource::Bearer];
    g.bench_function("extract/bearer", |b| {
        b.iter(|| {
            extract(
                &sources,
                |_: &str| Some(black_box(header.as_bytes())),
                black_box(""),
            )
            .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! JWT authentication for buckets with `auth = true` and for the admin API.
//!
//! Self-contained and sans-IO: nothing here touches a socket or the request type. The request
//! path uses it in four steps:
//!
//! ```text
//! at start / reload:  let verifier = Verifier::new(&jwt_config)?;        // keys parsed once
//! per worker:         let cache = TokenCache::default();                  // RefCell, no lock
//! per request:        let found = extract(&jwt.token_sources, |name| req.header(name), query)?;
//!                     cache.check(&verifier, &found.token, now_secs, &bucket.claims)?;
//!                     // admin routes: cache.check_admin(&verifier, token, now, &admin.claim)
//!                     let upstream_query = strip_query_token(query, &jwt.token_sources);
//! on failure:         metrics: corvid_auth_failures_total{reason = failure.reason()}
//!                     answer:  Error::from(failure)   // 401 + WWW-Authenticate, or 403
//! ```
//!
//! | module | owns |
//! |---|---|
//! | [`token`] | where the token is (`Authorization: Bearer`, `query:NAME`, `header:NAME`) and stripping query tokens |
//! | `keys` | loading the secret, PEM key or JWKS once, with errors naming the config key |
//! | [`verify`] | [`Verifier`]: signature, algorithm pinning, `kid`, `exp`/`nbf`/`iss`/`aud`; claim rules |
//! | [`cache`] | [`TokenCache`]: per-worker verified tokens, allocation-free hits |
//! | `failure` | [`AuthFailure`]: the outcomes, their status, challenge and metric label |
//!
//! # Library choice
//!
//! Signatures are checked by `jsonwebtoken` **9.x**, whose only crypto backend is `ring`,
//! already in the tree through rustls. It offers every algorithm corvid accepts (HS256/384/512,
//! RS256/384/512, PS256/384/512, ES256/384, EdDSA), PEM and JWK keys. 10+ would need
//! `rust_crypto` (a second set of crypto crates) or `aws_lc_rs` (a C toolchain and cmake) for
//! no algorithm we lack. corvid uses it for signature verification only: the algorithm is
//! pinned before it is called, and time, `iss` and `aud` are checked here with an injected
//! `now` (jsonwebtoken reads the system clock).
//!
//! # Security notes
//!
//! * Exactly one algorithm is accepted, the configured one; `alg: none` and every other name
//!   are refused before a key is chosen, so an HS256 token "signed" with the RSA public key
//!   cannot pass an RS256 config.
//! * The token never appears in an error, a log line or a `Debug` output of this module.
//! * `exp` is required.

pub mod cache;
mod failure;
mod keys;
pub mod token;
pub mod verify;

#[cfg(test)]
mod tests;

pub use cache::TokenCache;
pub use failure::{AuthFailure, CHALLENGE, CHALLENGE_INVALID};
pub use token::{extract, strip_query_token, Found, Source};
pub use verify::{admin_claim_holds, rule_holds, Claims, Verified, Verifier};

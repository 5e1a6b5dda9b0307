//! Verifying a token: the [`Verifier`] (built once from `[jwt]`), the [`Claims`] of a verified
//! token, and the claim rules (`buckets[].claims`, `[admin] claim`) evaluated on them.
//!
//! Order of checks, each failing with its own [`AuthFailure`]: shape (three base64url parts,
//! a JSON header) → `alg` is exactly the configured one (`none` and every other name refused
//! before any key is touched: no algorithm confusion) → key by `kid` (JWKS only) → signature
//! (jsonwebtoken) → `exp` present → `exp`/`nbf` against the injected `now` with the leeway →
//! `iss` → `aud`. Claims are looked at only after the signature holds.
//!
//! Time rules (RFC 7519 §4.1.4/§4.1.5, `L` = `jwt.leeway` in seconds): a token is expired when
//! `now >= exp + L`, not yet valid when `now + L < nbf`. `exp`/`nbf` may be non-integer
//! NumericDates (the fraction is dropped); anything but a non-negative number is malformed.
//!
//! jsonwebtoken's own time checks are switched off (it reads the system clock; corvid passes
//! `now` in, so tests need no sleeps and a worker reads its clock once per request).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::Validation;
use serde_json::{Map, Value};
use std::sync::atomic::{AtomicU64, Ordering};

use super::keys::{self, Keys};
use super::AuthFailure;
use crate::config::{ClaimMatch, ClaimRule, ClaimTest, ClaimValue, JwtAlgorithm, JwtConfig};

/// Tells verifiers apart, so a [`TokenCache`](super::TokenCache) never answers for a verifier
/// (key set, issuer, audience) other than the one that filled it (e.g. after a reload).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Verifies tokens against `[jwt]`. Built once; cheap to share (`Arc`) or clone per worker.
pub struct Verifier {
    id: u64,
    alg: JwtAlgorithm,
    keys: Keys,
    validation: Validation,
    issuer: Option<String>,
    audience: Vec<String>,
    leeway: u64,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithm", &self.alg)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway", &self.leeway)
            .finish_non_exhaustive()
    }
}

/// What a successful check returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// The token's `exp` (seconds since the epoch).
    pub exp: u64,
    /// Answered from a [`TokenCache`](super::TokenCache) without verifying the signature again.
    pub cached: bool,
}

/// The claims of a verified token, with `exp` and `nbf` already parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    map: Map<String, Value>,
    exp: u64,
    nbf: Option<u64>,
}

/// Only the two header fields corvid reads; the rest is jsonwebtoken's business.
#[derive(serde::Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

impl Verifier {
    /// Loads the keys of `cfg` (reading `public_key` / `jwks_file` now, never per request).
    /// `Err` names the config key: `jwt.public_key: `/etc/k.pem`: ...`.
    pub fn new(cfg: &JwtConfig) -> Result<Verifier, String> {
        let keys = keys::load(cfg)?;
        let mut validation = Validation::new(keys::algorithm(cfg.algorithm));
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        validation.leeway = 0;
        Ok(Verifier {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            alg: cfg.algorithm,
            keys,
            validation,
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
            leeway: cfg.leeway.as_secs(),
        })
    }

    /// The one algorithm accepted.
    pub fn algorithm(&self) -> JwtAlgorithm {
        self.alg
    }

    /// `jwt.leeway` in seconds.
    pub fn leeway(&self) -> u64 {
        self.leeway
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Verifies `token` at `now` (seconds since the epoch): signature, `exp`, `nbf`, `iss`,
    /// `aud`. No cache: see [`TokenCache`](super::TokenCache) for the request path.
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, AuthFailure> {
        let mut parts = token.split('.');
        let (Some(header), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthFailure::Malformed);
        };
        let header = URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|_| AuthFailure::Malformed)?;
        let header: RawHeader =
            serde_json::from_slice(&header).map_err(|_| AuthFailure::Malformed)?;
        if header.alg != self.alg.as_str() {
            return Err(AuthFailure::Algorithm);
        }
        let key = self
            .keys
            .select(header.kid.as_deref())
            .ok_or(AuthFailure::Kid)?;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, key, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature | ErrorKind::Crypto(_) => AuthFailure::Signature,
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    AuthFailure::Algorithm
                }
                ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidRsaKey(_) => AuthFailure::Signature,
                _ => AuthFailure::Malformed,
            })?;
        debug_assert_eq!(data.header.alg, keys::algorithm(self.alg));
        let map = data.claims;
        let exp = match map.get("exp") {
            None | Some(Value::Null) => return Err(AuthFailure::NoExpiry),
            Some(v) => numeric_date(v)?,
        };
        let nbf = map.get("nbf").map(numeric_date).transpose()?;
        let claims = Claims { map, exp, nbf };
        claims.valid_at(now, self.leeway)?;
        if let Some(iss) = &self.issuer {
            if claims.map.get("iss").and_then(Value::as_str) != Some(iss) {
                return Err(AuthFailure::Issuer);
            }
        }
        if !self.audience.is_empty() {
            let ok = match claims.map.get("aud") {
                Some(Value::String(a)) => self.audience.contains(a),
                Some(Value::Array(list)) => list
                    .iter()
                    .filter_map(Value::as_str)
                    .any(|a| self.audience.iter().any(|c| c == a)),
                _ => false,
            };
            if !ok {
                return Err(AuthFailure::Audience);
            }
        }
        Ok(claims)
    }

    /// [`verify`](Self::verify), then the bucket's `claims` rules (a failing rule → 403).
    pub fn check(
        &self,
        token: &str,
        now: u64,
        rules: &[ClaimRule],
    ) -> Result<Verified, AuthFailure> {
        let claims = self.verify(token, now)?;
        claims.check_rules(rules)?;
        Ok(Verified {
            exp: claims.exp,
            cached: false,
        })
    }

    /// [`verify`](Self::verify), then the `[admin] claim` (missing → 403).
    pub fn check_admin(
        &self,
        token: &str,
        now: u64,
        admin: &ClaimMatch,
    ) -> Result<Verified, AuthFailure> {
        let claims = self.verify(token, now)?;
        claims.check_admin(admin)?;
        Ok(Verified {
            exp: claims.exp,
            cached: false,
        })
    }
}

/// A NumericDate: a non-negative number of seconds; the fraction is dropped.
fn numeric_date(v: &Value) -> Result<u64, AuthFailure> {
    if let Some(n) = v.as_u64() {
        return Ok(n);
    }
    match v.as_f64() {
        Some(f) if f.is_finite() && f >= 0.0 => Ok(f as u64),
        _ => Err(AuthFailure::Malformed),
    }
}

impl Claims {
    /// The claim `name`, if present.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.map.get(name)
    }

    /// `exp` in seconds since the epoch.
    pub fn exp(&self) -> u64 {
        self.exp
    }

    /// `nbf` in seconds since the epoch, if the token has one.
    pub fn nbf(&self) -> Option<u64> {
        self.nbf
    }

    /// Whether the token is inside its validity window at `now` (see the module docs).
    pub fn valid_at(&self, now: u64, leeway: u64) -> Result<(), AuthFailure> {
        if now >= self.exp.saturating_add(leeway) {
            return Err(AuthFailure::Expired);
        }
        if let Some(nbf) = self.nbf {
            if now.saturating_add(leeway) < nbf {
                return Err(AuthFailure::NotYetValid);
            }
        }
        Ok(())
    }

    /// Every rule holds, else [`AuthFailure::Claim`]. Allocates nothing.
    pub fn check_rules(&self, rules: &[ClaimRule]) -> Result<(), AuthFailure> {
        if rules
            .iter()
            .all(|r| rule_holds(self.map.get(&r.name), &r.test))
        {
            Ok(())
        } else {
            Err(AuthFailure::Claim)
        }
    }

    /// The admin claim is present (a string equal to the value, or an array containing it),
    /// else [`AuthFailure::AdminClaim`].
    pub fn check_admin(&self, admin: &ClaimMatch) -> Result<(), AuthFailure> {
        if admin_claim_holds(self.map.get(&admin.name), &admin.value) {
            Ok(())
        } else {
            Err(AuthFailure::AdminClaim)
        }
    }
}

/// `[admin] claim`: a string claim equal to `value`, or an array claim containing it.
pub fn admin_claim_holds(claim: Option<&Value>, value: &str) -> bool {
    match claim {
        Some(Value::String(s)) => s == value,
        Some(Value::Array(list)) => list.iter().any(|v| v.as_str() == Some(value)),
        _ => false,
    }
}

/// One `buckets[].claims` rule on the claim's value (`None` = absent: every test fails).
pub fn rule_holds(claim: Option<&Value>, test: &ClaimTest) -> bool {
    let Some(claim) = claim else {
        return false;
    };
    match test {
        ClaimTest::Equals(ClaimValue::String(s)) => claim.as_str() == Some(s),
        ClaimTest::Equals(ClaimValue::Bool(b)) => claim.as_bool() == Some(*b),
        ClaimTest::Equals(ClaimValue::Integer(n)) => match claim {
            Value::Number(x) => {
                x.as_i64() == Some(*n)
                    || (x.as_i64().is_none()
                        && x.as_u64().is_none()
                        && x.as_f64() == Some(*n as f64))
            }
            _ => false,
        },
        ClaimTest::OneOf(list) => claim.as_str().is_some_and(|s| list.iter().any(|v| v == s)),
        ClaimTest::Contains(s) => claim
            .as_array()
            .is_some_and(|a| a.iter().any(|v| v.as_str() == Some(s))),
    }
}

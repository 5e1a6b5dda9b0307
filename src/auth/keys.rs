//! Loading the verification keys of `[jwt]` once, at start (and on reload): the HMAC secret, a
//! PEM public key, or a JWKS file. Every problem is reported naming the config key
//! (`jwt.public_key: ...`), so `corvid check` and a refused start say what to fix. Files are
//! read with `std::fs` because this runs before (or beside) the workers, never on a request.
//!
//! Rules:
//! * `public_key`: a PEM public key (`BEGIN PUBLIC KEY`, or `BEGIN RSA PUBLIC KEY` for RS*/PS*)
//!   of the algorithm's family; an EC key must be on the algorithm's curve (P-256 for ES256,
//!   P-384 for ES384). A private key is refused: the proxy only needs the public half.
//! * `jwks_file`: a JWK Set (RFC 7517 §5). Keys meant for something else are skipped: `use`
//!   other than `sig`, an `alg` other than the configured one, another key type or curve.
//!   The usable keys must have distinct `kid`s, and a `kid` each when there are several; at
//!   least one key must be usable.

use std::path::Path;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

use crate::config::{JwtAlgorithm, JwtConfig, JwtKey};

/// The keys a token may be verified with.
pub(crate) enum Keys {
    /// `secret` or `public_key`: one key, the token's `kid` is ignored.
    Single(DecodingKey),
    /// `jwks_file`: keys by `kid` (`None` only when the set has a single key without one).
    Set(Vec<(Option<String>, DecodingKey)>),
}

impl Keys {
    /// The key for a token whose header names `kid`.
    pub(crate) fn select(&self, kid: Option<&str>) -> Option<&DecodingKey> {
        match self {
            Keys::Single(k) => Some(k),
            Keys::Set(set) => match kid {
                // Without a kid, only a set of one key leaves no choice to make.
                None if set.len() == 1 => Some(&set[0].1),
                None => None,
                // A kid must name a key of the set, even a set of one.
                Some(kid) => set
                    .iter()
                    .find(|(k, _)| k.as_deref() == Some(kid))
                    .map(|(_, key)| key),
            },
        }
    }
}

/// jsonwebtoken's name for a configured algorithm.
pub(crate) const fn algorithm(a: JwtAlgorithm) -> Algorithm {
    match a {
        JwtAlgorithm::HS256 => Algorithm::HS256,
        JwtAlgorithm::HS384 => Algorithm::HS384,
        JwtAlgorithm::HS512 => Algorithm::HS512,
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::RS384 => Algorithm::RS384,
        JwtAlgorithm::RS512 => Algorithm::RS512,
        JwtAlgorithm::PS256 => Algorithm::PS256,
        JwtAlgorithm::PS384 => Algorithm::PS384,
        JwtAlgorithm::PS512 => Algorithm::PS512,
        JwtAlgorithm::ES256 => Algorithm::ES256,
        JwtAlgorithm::ES384 => Algorithm::ES384,
        JwtAlgorithm::EdDSA => Algorithm::EdDSA,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Curve {
    P256,
    P384,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    Hmac,
    Rsa,
    Ec(Curve),
    Ed,
}

fn family(a: JwtAlgorithm) -> Family {
    match a {
        JwtAlgorithm::HS256 | JwtAlgorithm::HS384 | JwtAlgorithm::HS512 => Family::Hmac,
        JwtAlgorithm::ES256 => Family::Ec(Curve::P256),
        JwtAlgorithm::ES384 => Family::Ec(Curve::P384),
        JwtAlgorithm::EdDSA => Family::Ed,
        _ => Family::Rsa,
    }
}

/// DER of the curve OIDs in an EC SubjectPublicKeyInfo (RFC 5480 §2.1.1.1).
const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

/// Loads the keys of `cfg`; `Err` is `key: problem`.
pub(crate) fn load(cfg: &JwtConfig) -> Result<Keys, String> {
    let alg = cfg.algorithm;
    match &cfg.key {
        JwtKey::Secret(s) => {
            if !alg.is_hmac() {
                return Err(format!("jwt.secret: not used by {}", alg.as_str()));
            }
            Ok(Keys::Single(DecodingKey::from_secret(s.as_bytes())))
        }
        JwtKey::PublicKey(path) => pem_key(alg, path)
            .map(Keys::Single)
            .map_err(|e| format!("jwt.public_key: `{}`: {e}", path.display())),
        JwtKey::JwksFile(path) => jwks(alg, path)
            .map(Keys::Set)
            .map_err(|e| format!("jwt.jwks_file: `{}`: {e}", path.display())),
    }
}

#[expect(
    clippy::disallowed_methods,
    reason = "read once, by `Verifier::new` at start-up"
)]
fn pem_key(alg: JwtAlgorithm, path: &Path) -> Result<DecodingKey, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let text = String::from_utf8_lossy(&pem);
    if text.contains("PRIVATE KEY") {
        return Err("is a private key; give the public key (`openssl pkey -pubout`)".into());
    }
    if !text.contains("-----BEGIN ") {
        return Err("is not a PEM file (expected -----BEGIN PUBLIC KEY-----)".into());
    }
    let bad =
        |e: jsonwebtoken::errors::Error| format!("not a usable {} public key: {e}", alg.as_str());
    match family(alg) {
        Family::Hmac => Err(format!("not used by {}", alg.as_str())),
        Family::Rsa => DecodingKey::from_rsa_pem(&pem).map_err(bad),
        Family::Ed => DecodingKey::from_ed_pem(&pem).map_err(bad),
        Family::Ec(curve) => {
            let der = spki_der(&pem)?;
            let (want, other, name) = match curve {
                Curve::P256 => (OID_P256, OID_P384, "P-256"),
                _ => (OID_P384, OID_P256, "P-384"),
            };
            if !contains(&der, want) {
                let what = if contains(&der, other) {
                    "a key on another curve"
                } else {
                    "not an EC key"
                };
                return Err(format!("{what}: {} needs a {name} key", alg.as_str()));
            }
            DecodingKey::from_ec_pem(&pem).map_err(bad)
        }
    }
}

/// The DER of the first `PUBLIC KEY` block of a PEM file.
fn spki_der(pem: &[u8]) -> Result<Vec<u8>, String> {
    let mut rd = pem;
    loop {
        match rustls_pemfile::read_one(&mut rd) {
            Ok(Some(rustls_pemfile::Item::SubjectPublicKeyInfo(k))) => return Ok(k.to_vec()),
            Ok(Some(_)) => continue,
            Ok(None) => return Err("has no -----BEGIN PUBLIC KEY----- block".into()),
            Err(e) => return Err(format!("is not a valid PEM file: {e:?}")),
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[expect(
    clippy::disallowed_methods,
    reason = "read once, by `Verifier::new` at start-up"
)]
fn jwks(alg: JwtAlgorithm, path: &Path) -> Result<Vec<(Option<String>, DecodingKey)>, String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let set: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| format!("is not JSON: {e}"))?;
    let Some(list) = set.get("keys").and_then(|k| k.as_array()) else {
        return Err("is not a JWK Set (no \"keys\" array)".into());
    };
    let mut keys: Vec<(Option<String>, DecodingKey)> = Vec::new();
    for (i, raw) in list.iter().enumerate() {
        // Keys of a type jsonwebtoken does not know (or malformed ones) are skipped only when
        // they are not for our algorithm; a broken key meant for it is an error.
        let meant_for_us = raw.get("alg").and_then(|a| a.as_str()) == Some(alg.as_str());
        let jwk: Jwk = match serde_json::from_value(raw.clone()) {
            Ok(j) => j,
            Err(e) if meant_for_us => return Err(format!("keys[{i}]: not a valid JWK: {e}")),
            Err(_) => continue,
        };
        if let Some(key) = usable(alg, &jwk).map_err(|e| format!("keys[{i}]: {e}"))? {
            let kid = jwk.common.key_id.clone();
            if keys.iter().any(|(k, _)| *k == kid) {
                return Err(format!(
                    "keys[{i}]: two usable keys with the same kid {}",
                    kid.as_deref().map_or("(none)".into(), |k| format!("{k:?}"))
                ));
            }
            keys.push((kid, key));
        }
    }
    if keys.is_empty() {
        return Err(format!("has no key usable with {}", alg.as_str()));
    }
    if keys.len() > 1 && keys.iter().any(|(k, _)| k.is_none()) {
        return Err("every key needs a `kid` when the set has several".into());
    }
    Ok(keys)
}

/// `Ok(None)`: the key is not for this algorithm (skipped).
fn usable(alg: JwtAlgorithm, jwk: &Jwk) -> Result<Option<DecodingKey>, String> {
    if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
        return Ok(None);
    }
    if let Some(a) = jwk.common.key_algorithm {
        if format!("{a:?}") != alg.as_str() {
            return Ok(None);
        }
    }
    let fits = match (&jwk.algorithm, family(alg)) {
        (AlgorithmParameters::RSA(_), Family::Rsa) => true,
        (AlgorithmParameters::EllipticCurve(p), Family::Ec(c)) => {
            p.curve
                == match c {
                    Curve::P256 => EllipticCurve::P256,
                    Curve::P384 => EllipticCurve::P384,
                }
        }
        (AlgorithmParameters::OctetKeyPair(p), Family::Ed) => p.curve == EllipticCurve::Ed25519,
        _ => false,
    };
    if !fits {
        return Ok(None);
    }
    DecodingKey::from_jwk(jwk)
        .map(Some)
        .map_err(|e| format!("not a usable {} key: {e}", alg.as_str()))
}

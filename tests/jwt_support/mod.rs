//! Test tokens made independently of jsonwebtoken: signed here with `ring` directly, keys
//! generated per run (EC, Ed25519, HMAC) or read from tests/data/jwt (RSA, see its README).
//! Shared by tests/jwt.rs, benches/jwt.rs and the unit tests of src/auth.
#![allow(
    dead_code,
    reason = "shared by tests/jwt.rs, tests/it and benches/jwt.rs, which use different parts"
)]
#![allow(
    clippy::disallowed_methods,
    reason = "test support, never on a worker: reads and writes key files"
)]

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use serde_json::{json, Value};

use corvid::config::{JwtAlgorithm, JwtConfig, JwtKey, TokenSource};

/// The algorithms corvid accepts, as JOSE names.
pub const ALGS: [&str; 12] = [
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
    "ES384", "EdDSA",
];

enum Signer {
    Hmac(ring::hmac::Key),
    Rsa(RsaKeyPair, &'static dyn signature::RsaEncoding),
    Ecdsa(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

/// A signing key and its public half (PEM and JWK).
pub struct TestKey {
    pub alg: &'static str,
    signer: Signer,
    /// HS*: the secret; others: a PEM SubjectPublicKeyInfo.
    pub public_pem: String,
    /// The public JWK (no `kid`; add one with [`TestKey::jwk_with_kid`]).
    pub jwk: Value,
    pub secret: Option<String>,
}

pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/jwt")
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn pem_der(text: &str) -> Vec<u8> {
    let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(body).unwrap()
}

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

/// Key number `n` (0 or 1 for RSA; any for the others, each call makes a fresh key).
pub fn key(alg: &'static str, n: usize) -> TestKey {
    let rng = SystemRandom::new();
    let name = alg;
    match alg {
        "HS256" | "HS384" | "HS512" => {
            let (a, len) = match alg {
                "HS256" => (ring::hmac::HMAC_SHA256, 32),
                "HS384" => (ring::hmac::HMAC_SHA384, 48),
                _ => (ring::hmac::HMAC_SHA512, 64),
            };
            let secret: String = (0..len)
                .map(|i| (b'a' + ((i * 7 + n * 3) % 26) as u8) as char)
                .collect();
            TestKey {
                alg: name,
                signer: Signer::Hmac(ring::hmac::Key::new(a, secret.as_bytes())),
                public_pem: String::new(),
                jwk: json!({"kty": "oct", "k": b64(secret.as_bytes())}),
                secret: Some(secret),
            }
        }
        "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" => {
            let file = data_dir().join(format!("rsa{}.pk8.pem", n + 1));
            let der = pem_der(&std::fs::read_to_string(file).unwrap());
            let kp = RsaKeyPair::from_pkcs8(&der).unwrap();
            let enc: &'static dyn signature::RsaEncoding = match alg {
                "RS256" => &signature::RSA_PKCS1_SHA256,
                "RS384" => &signature::RSA_PKCS1_SHA384,
                "RS512" => &signature::RSA_PKCS1_SHA512,
                "PS256" => &signature::RSA_PSS_SHA256,
                "PS384" => &signature::RSA_PSS_SHA384,
                _ => &signature::RSA_PSS_SHA512,
            };
            let public_pem =
                std::fs::read_to_string(data_dir().join(format!("rsa{}.pub.pem", n + 1))).unwrap();
            let c: signature::RsaPublicKeyComponents<Vec<u8>> = kp.public().into();
            let jwk = json!({"kty": "RSA", "n": b64(&c.n), "e": b64(&c.e)});
            TestKey {
                alg: name,
                signer: Signer::Rsa(kp, enc),
                public_pem,
                jwk,
                secret: None,
            }
        }
        "ES256" | "ES384" => {
            let (a, prefix, crv, coord) = if alg == "ES256" {
                (
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    &hex("3059301306072a8648ce3d020106082a8648ce3d030107034200")[..],
                    "P-256",
                    32,
                )
            } else {
                (
                    &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
                    &hex("3076301006072a8648ce3d020106052b81040022036200")[..],
                    "P-384",
                    48,
                )
            };
            let doc = EcdsaKeyPair::generate_pkcs8(a, &rng).unwrap();
            let kp = EcdsaKeyPair::from_pkcs8(a, doc.as_ref(), &rng).unwrap();
            let point = kp.public_key().as_ref().to_vec();
            let spki = [prefix, &point].concat();
            let jwk = json!({
                "kty": "EC", "crv": crv,
                "x": b64(&point[1..1 + coord]), "y": b64(&point[1 + coord..]),
            });
            TestKey {
                alg: name,
                signer: Signer::Ecdsa(kp),
                public_pem: pem("PUBLIC KEY", &spki),
                jwk,
                secret: None,
            }
        }
        "EdDSA" => {
            let doc = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
            let kp = Ed25519KeyPair::from_pkcs8(doc.as_ref()).unwrap();
            let raw = kp.public_key().as_ref().to_vec();
            let spki = [&hex("302a300506032b6570032100")[..], &raw].concat();
            TestKey {
                alg: name,
                signer: Signer::Ed(kp),
                public_pem: pem("PUBLIC KEY", &spki),
                jwk: json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&raw)}),
                secret: None,
            }
        }
        other => panic!("no test key for {other}"),
    }
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

impl TestKey {
    /// Signs `header.claims` (both JSON) as given: the header is not adjusted.
    pub fn sign_raw(&self, header: &Value, claims: &Value) -> String {
        let msg = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = self.sign_bytes(msg.as_bytes());
        format!("{msg}.{}", b64(&sig))
    }

    pub fn sign_bytes(&self, msg: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match &self.signer {
            Signer::Hmac(k) => ring::hmac::sign(k, msg).as_ref().to_vec(),
            Signer::Rsa(kp, enc) => {
                let mut sig = vec![0; kp.public().modulus_len()];
                kp.sign(*enc, &rng, msg, &mut sig).unwrap();
                sig
            }
            Signer::Ecdsa(kp) => kp.sign(&rng, msg).unwrap().as_ref().to_vec(),
            Signer::Ed(kp) => kp.sign(msg).as_ref().to_vec(),
        }
    }

    /// A token with header `{"alg": <alg>, "typ": "JWT"[, "kid": kid]}`.
    pub fn token(&self, kid: Option<&str>, claims: &Value) -> String {
        let mut header = json!({"alg": self.alg, "typ": "JWT"});
        if let Some(kid) = kid {
            header["kid"] = json!(kid);
        }
        self.sign_raw(&header, claims)
    }

    pub fn jwk_with_kid(&self, kid: &str) -> Value {
        let mut j = self.jwk.clone();
        j["kid"] = json!(kid);
        j
    }

    /// A `[jwt]` for this key: `secret` for HS*, else a PEM file written into `dir`.
    pub fn config(&self, dir: &Path) -> JwtConfig {
        let key = match &self.secret {
            Some(s) => JwtKey::Secret(s.clone()),
            None => {
                let p = dir.join(format!("{}-{}.pem", self.alg, unique()));
                std::fs::write(&p, &self.public_pem).unwrap();
                JwtKey::PublicKey(p)
            }
        };
        jwt_config(self.alg, key)
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

pub fn algorithm(name: &str) -> JwtAlgorithm {
    JwtAlgorithm::ALL
        .into_iter()
        .find(|a| a.as_str() == name)
        .unwrap()
}

/// A `[jwt]` with defaults: bearer only, no issuer or audience, leeway 0.
pub fn jwt_config(alg: &str, key: JwtKey) -> JwtConfig {
    JwtConfig {
        algorithm: algorithm(alg),
        key,
        token_sources: vec![TokenSource::Bearer],
        issuer: None,
        audience: Vec::new(),
        leeway: std::time::Duration::ZERO,
    }
}

/// Writes a JWKS of `keys` into `dir` and returns a `[jwt]` using it.
pub fn jwks_config(alg: &str, dir: &Path, keys: &[Value]) -> JwtConfig {
    let p = dir.join(format!("jwks-{}.json", unique()));
    std::fs::write(&p, json!({ "keys": keys }).to_string()).unwrap();
    jwt_config(alg, JwtKey::JwksFile(p))
}

//! Authenticating requests between peers: the `x-corvid-peer` header.
//!
//! `x-corvid-peer: <sender> <unix seconds> <hex HMAC-SHA256>`, the MAC keyed with
//! `cluster.secret` over `corvid-peer-v1\n<METHOD>\n<target>\n<seconds>\n<sender>`. The header
//! is both the proof and the hop marker: a request that carries a valid one was sent by a member
//! (which authenticated its client), skips the bucket's JWT check and is never forwarded again;
//! one that carries an invalid one is refused (403), whatever else it carries — a client cannot
//! make itself a peer, and security never fails open.
//!
//! Decisions:
//! - The MAC covers the method and the whole request target (path and query), so a captured
//!   header authorises only that request; the time bounds a replay to ±[`MAX_SKEW_SECS`]
//!   (members keep their clocks in sync, as every S3 client must for SigV4 anyway). A replay of
//!   the same read within that window returns the same object: the window is the exposure of
//!   someone who can read traffic between members, who sees the objects themselves anyway. Use
//!   a private network (or TLS between members) for peer traffic.
//! - The MAC is compared in constant time (`hmac::Mac::verify_slice`).
//! - Pure functions over bytes; the time is an argument (tests use any clock).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header's name, as parsed (lower case).
pub const HEADER: &str = "x-corvid-peer";
/// Accepted difference between the sender's time and ours, in seconds.
pub const MAX_SKEW_SECS: u64 = 60;
const CONTEXT: &[u8] = b"corvid-peer-v1\n";

/// The header value for a request `method target` sent by `sender` at `now_secs`.
pub fn sign(secret: &[u8], method: &str, target: &str, now_secs: u64, sender: &str) -> String {
    let m = signed(secret, method, target, now_secs, sender);
    format!(
        "{sender} {now_secs} {}",
        hex::encode(m.finalize().into_bytes())
    )
}

fn signed(secret: &[u8], method: &str, target: &str, secs: u64, sender: &str) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    m.update(CONTEXT);
    m.update(method.as_bytes());
    m.update(b"\n");
    m.update(target.as_bytes());
    m.update(b"\n");
    m.update(secs.to_string().as_bytes());
    m.update(b"\n");
    m.update(sender.as_bytes());
    m
}

/// Why a peer header was refused (for logs; the client sees one 403).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Malformed,
    Stale,
    BadSignature,
}

/// Checks a received header value for the request `method target` at `now_secs`; the sender's
/// name when it verifies.
pub fn verify<'v>(
    secret: &[u8],
    value: &'v [u8],
    method: &str,
    target: &str,
    now_secs: u64,
) -> Result<&'v str, Refused> {
    let value = std::str::from_utf8(value).map_err(|_| Refused::Malformed)?;
    let mut parts = value.split(' ');
    let (Some(sender), Some(secs), Some(tag), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refused::Malformed);
    };
    if sender.is_empty() || secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Refused::Malformed);
    }
    let secs: u64 = secs.parse().map_err(|_| Refused::Malformed)?;
    let tag = hex::decode(tag).map_err(|_| Refused::Malformed)?;
    if secs.abs_diff(now_secs) > MAX_SKEW_SECS {
        return Err(Refused::Stale);
    }
    signed(secret, method, target, secs, sender)
        .verify_slice(&tag)
        .map_err(|_| Refused::BadSignature)?;
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123";

    #[test]
    fn a_signed_request_verifies_and_names_its_sender() {
        let v = sign(
            SECRET,
            "GET",
            "/assets/a.png?versionId=3",
            1_000,
            "10.0.0.1:8080",
        );
        let got = verify(
            SECRET,
            v.as_bytes(),
            "GET",
            "/assets/a.png?versionId=3",
            1_030,
        );
        assert_eq!(got, Ok("10.0.0.1:8080"));
    }

    #[test]
    fn the_mac_is_hmac_sha256_over_the_documented_string() {
        // Computed independently of `sign`: the documented construction, by hand.
        let mut m = Hmac::<Sha256>::new_from_slice(SECRET).unwrap();
        m.update(b"corvid-peer-v1\nHEAD\n/b/k\n77\npeer:1");
        let expected = format!("peer:1 77 {}", hex::encode(m.finalize().into_bytes()));
        assert_eq!(sign(SECRET, "HEAD", "/b/k", 77, "peer:1"), expected);
    }

    #[test]
    fn anything_changed_is_refused() {
        let v = sign(SECRET, "GET", "/b/k", 1_000, "a:1");
        let ok = |val: &str, method: &str, target: &str, now: u64| {
            verify(SECRET, val.as_bytes(), method, target, now).map(str::to_owned)
        };
        assert_eq!(ok(&v, "HEAD", "/b/k", 1_000), Err(Refused::BadSignature));
        assert_eq!(ok(&v, "GET", "/b/other", 1_000), Err(Refused::BadSignature));
        assert_eq!(
            ok(&v.replace("a:1", "b:1"), "GET", "/b/k", 1_000),
            Err(Refused::BadSignature)
        );
        assert_eq!(
            verify(b"another secret!!", v.as_bytes(), "GET", "/b/k", 1_000),
            Err(Refused::BadSignature)
        );
        assert_eq!(ok(&v, "GET", "/b/k", 1_061), Err(Refused::Stale));
        assert_eq!(ok(&v, "GET", "/b/k", 939), Err(Refused::Stale));
        for bad in [
            "",
            "a:1",
            "a:1 1000",
            "a:1 x zz",
            "a:1 1000 zz",
            &format!("{v} extra"),
            " 1000 ab",
        ] {
            assert_eq!(
                ok(bad, "GET", "/b/k", 1_000),
                Err(Refused::Malformed),
                "{bad:?}"
            );
        }
        assert_eq!(
            verify(SECRET, b"\xff", "GET", "/", 0),
            Err(Refused::Malformed)
        );
    }
}

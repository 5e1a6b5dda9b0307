//! [`AuthFailure`]: why a request was refused, as a small `Copy` enum the caller maps to the one
//! error type ([`crate::Error`]) and to the `reason` label of `corvid_auth_failures_total`.
//!
//! Messages are fixed strings: they never contain the token, a claim value or a key.

use crate::error::{Error, Kind};

/// Why a token was refused. 401s say the client must (re)authenticate; 403s that the token is
/// good but not for this resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthFailure {
    /// No token in any configured source (401, `WWW-Authenticate: Bearer`).
    Missing,
    /// The token was given more than once (a query parameter twice, a header twice) (401).
    Ambiguous,
    /// Not a JWT: wrong shape, bad base64 or JSON, empty token, bad `exp`/`nbf` type (401).
    Malformed,
    /// The signature does not verify with the configured key(s) (401).
    Signature,
    /// The header names another algorithm than the configured one, or `none` (401).
    Algorithm,
    /// JWKS: no `kid` while the set has several keys, or a `kid` not in the set (401).
    Kid,
    /// No `exp` claim: corvid requires one (401).
    NoExpiry,
    /// `exp` has passed (beyond the leeway) (401).
    Expired,
    /// `nbf` is still ahead (beyond the leeway) (401).
    NotYetValid,
    /// `iss` missing or not the configured issuer (401).
    Issuer,
    /// `aud` missing or none of its values configured (401).
    Audience,
    /// A valid token failing one of the bucket's `claims` rules (403).
    Claim,
    /// A valid token without the `[admin] claim` (403).
    AdminClaim,
    /// An `x-corvid-peer` header that does not verify (`crate::fleet::peer_auth`), or one sent
    /// to an instance that is no fleet member (403).
    Peer,
}

/// `WWW-Authenticate` of a 401 without a token (RFC 6750 §3).
pub const CHALLENGE: &str = "Bearer";
/// `WWW-Authenticate` of a 401 with a bad token (RFC 6750 §3.1).
pub const CHALLENGE_INVALID: &str = "Bearer error=\"invalid_token\"";

impl AuthFailure {
    /// Every outcome, e.g. to pre-register the metric's label values.
    pub const ALL: [AuthFailure; 14] = [
        AuthFailure::Missing,
        AuthFailure::Ambiguous,
        AuthFailure::Malformed,
        AuthFailure::Signature,
        AuthFailure::Algorithm,
        AuthFailure::Kid,
        AuthFailure::NoExpiry,
        AuthFailure::Expired,
        AuthFailure::NotYetValid,
        AuthFailure::Issuer,
        AuthFailure::Audience,
        AuthFailure::Claim,
        AuthFailure::AdminClaim,
        AuthFailure::Peer,
    ];

    /// The bounded `reason` label of `corvid_auth_failures_total`.
    pub const fn reason(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Ambiguous => "ambiguous",
            AuthFailure::Malformed => "malformed",
            AuthFailure::Signature => "signature",
            AuthFailure::Algorithm => "algorithm",
            AuthFailure::Kid => "kid",
            AuthFailure::NoExpiry => "no_exp",
            AuthFailure::Expired => "expired",
            AuthFailure::NotYetValid => "not_yet_valid",
            AuthFailure::Issuer => "issuer",
            AuthFailure::Audience => "audience",
            AuthFailure::Claim => "claim",
            AuthFailure::AdminClaim => "admin_claim",
            AuthFailure::Peer => "peer",
        }
    }

    /// 401 or 403.
    pub const fn status(self) -> u16 {
        match self {
            AuthFailure::Claim | AuthFailure::AdminClaim | AuthFailure::Peer => 403,
            _ => 401,
        }
    }

    /// The `WWW-Authenticate` value to send (401s only).
    pub const fn www_authenticate(self) -> Option<&'static str> {
        match self {
            AuthFailure::Missing => Some(CHALLENGE),
            AuthFailure::Claim | AuthFailure::AdminClaim | AuthFailure::Peer => None,
            _ => Some(CHALLENGE_INVALID),
        }
    }

    /// One short sentence for the client (never the token or a claim value).
    pub const fn message(self) -> &'static str {
        match self {
            AuthFailure::Missing => "a bearer token is required",
            AuthFailure::Ambiguous => "the token was given more than once",
            AuthFailure::Malformed => "the token is not a well-formed JWT",
            AuthFailure::Signature => "the token signature is invalid",
            AuthFailure::Algorithm => "the token algorithm is not accepted",
            AuthFailure::Kid => "the token key id is missing or unknown",
            AuthFailure::NoExpiry => "the token has no expiry (exp)",
            AuthFailure::Expired => "the token has expired",
            AuthFailure::NotYetValid => "the token is not valid yet",
            AuthFailure::Issuer => "the token issuer is not accepted",
            AuthFailure::Audience => "the token audience is not accepted",
            AuthFailure::Claim => "the token does not grant access to this bucket",
            AuthFailure::AdminClaim => "the token does not grant admin access",
            AuthFailure::Peer => "the peer signature is invalid",
        }
    }
}

impl From<AuthFailure> for Error {
    /// 401 (with its `WWW-Authenticate` challenge) or 403, with [`AuthFailure::message`].
    fn from(f: AuthFailure) -> Error {
        match f.www_authenticate() {
            Some(challenge) => Error::unauthenticated(challenge, f.message()),
            None => Error::client(Kind::Forbidden, f.message()),
        }
    }
}

impl std::fmt::Display for AuthFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

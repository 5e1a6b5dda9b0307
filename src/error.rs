//! The one error type of corvid.
//!
//! Every failure a request can meet — a malformed request, a refused token, an origin that is
//! down — is an [`Error`]: a [`Kind`] (what went wrong, which decides the HTTP status), a
//! [`Side`] (whose fault it is, for logs and metrics), whether retrying could help, and a
//! one-sentence message for the client. The mapping from kind to status lives in exactly one
//! place, [`Kind::status`], and the JSON error body in [`Error::json_body`], so every route
//! answers errors the same way (see INTERFACE.md, "Errors").

use std::borrow::Cow;
use std::fmt;

/// What went wrong; decides the HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kind {
    /// Malformed request: bad framing, bad path, bad header (400).
    BadRequest,
    /// No or invalid credentials (401).
    Unauthenticated,
    /// Valid credentials without the right (403).
    Forbidden,
    /// No such route, or the origin says the object does not exist (404).
    NotFound,
    /// Method not allowed on this route (405).
    MethodNotAllowed,
    /// The request (head or body) did not arrive in time (408).
    RequestTimeout,
    /// Request body larger than we accept (413).
    PayloadTooLarge,
    /// Request line / URI too long (414).
    UriTooLong,
    /// Header section too large or too many header fields (431).
    HeaderFieldsTooLarge,
    /// Range not satisfiable (416).
    RangeNotSatisfiable,
    /// A precondition failed (412).
    PreconditionFailed,
    /// A transfer coding or feature we do not implement (501).
    NotImplemented,
    /// HTTP version other than 1.0/1.1 (505).
    VersionNotSupported,
    /// Origin unreachable or answered something we cannot use (502).
    BadGateway,
    /// Not ready, or shutting down (503).
    Unavailable,
    /// Origin did not answer in time (504).
    GatewayTimeout,
    /// A bug or resource failure on our side (500).
    Internal,
    /// The origin failed with its own `500` (S3 `InternalError`): passed on as 500.
    OriginInternal,
    /// The origin answered `503` (S3 `SlowDown`, `ServiceUnavailable`): passed on as 503.
    OriginUnavailable,
    /// The origin refused corvid's request with `400` (no region problem): passed on as 400.
    OriginBadRequest,
}

impl Kind {
    /// The single place where an error kind becomes an HTTP status.
    pub const fn status(self) -> u16 {
        match self {
            Kind::BadRequest => 400,
            Kind::Unauthenticated => 401,
            Kind::Forbidden => 403,
            Kind::NotFound => 404,
            Kind::MethodNotAllowed => 405,
            Kind::RequestTimeout => 408,
            Kind::PayloadTooLarge => 413,
            Kind::UriTooLong => 414,
            Kind::HeaderFieldsTooLarge => 431,
            Kind::RangeNotSatisfiable => 416,
            Kind::PreconditionFailed => 412,
            Kind::NotImplemented => 501,
            Kind::VersionNotSupported => 505,
            Kind::BadGateway => 502,
            Kind::Unavailable => 503,
            Kind::GatewayTimeout => 504,
            Kind::Internal => 500,
            Kind::OriginInternal => 500,
            Kind::OriginUnavailable => 503,
            Kind::OriginBadRequest => 400,
        }
    }

    /// Short machine-readable name used as `"error"` in JSON bodies.
    pub const fn name(self) -> &'static str {
        match self {
            Kind::BadRequest => "bad_request",
            Kind::Unauthenticated => "unauthenticated",
            Kind::Forbidden => "forbidden",
            Kind::NotFound => "not_found",
            Kind::MethodNotAllowed => "method_not_allowed",
            Kind::RequestTimeout => "request_timeout",
            Kind::PayloadTooLarge => "payload_too_large",
            Kind::UriTooLong => "uri_too_long",
            Kind::HeaderFieldsTooLarge => "header_fields_too_large",
            Kind::RangeNotSatisfiable => "range_not_satisfiable",
            Kind::PreconditionFailed => "precondition_failed",
            Kind::NotImplemented => "not_implemented",
            Kind::VersionNotSupported => "http_version_not_supported",
            Kind::BadGateway => "bad_gateway",
            Kind::Unavailable => "unavailable",
            Kind::GatewayTimeout => "gateway_timeout",
            Kind::Internal => "internal",
            Kind::OriginInternal => "origin_internal_error",
            Kind::OriginUnavailable => "origin_unavailable",
            Kind::OriginBadRequest => "origin_bad_request",
        }
    }
}

/// Whose fault an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The downstream client sent something wrong.
    Client,
    /// The origin (S3) failed or misbehaved.
    Upstream,
    /// corvid itself.
    Internal,
}

/// The error type carried through corvid.
#[derive(Debug, Clone)]
pub struct Error {
    kind: Kind,
    side: Side,
    retryable: bool,
    message: Cow<'static, str>,
    allow: Option<&'static str>,
    /// `WWW-Authenticate` value of a 401 (RFC 6750 §3); see [`Error::unauthenticated`].
    www_authenticate: Option<&'static str>,
    /// What the origin said about an error it answered (boxed: most errors carry none, and
    /// an `Error` travels in every `Result` of the request path).
    origin: Option<Box<OriginDetail>>,
}

/// The origin's own words on an error answer, passed on to the client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct OriginDetail {
    /// The S3 error code (`<Code>` of the XML error body), e.g. `SlowDown`.
    code: Option<String>,
    /// A validated `Retry-After` value (delta-seconds or HTTP-date) to send to the client.
    retry_after: Option<String>,
    /// A 416's representation length, for `Content-Range: bytes */len` (RFC 9110 §14.4). Not
    /// the origin's words, but as rare, so it shares their box.
    complete_length: Option<u64>,
}

/// Result alias over [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error; `retryable` is false.
    pub fn new(kind: Kind, side: Side, message: impl Into<Cow<'static, str>>) -> Self {
        Error {
            kind,
            side,
            retryable: false,
            message: message.into(),
            allow: None,
            www_authenticate: None,
            origin: None,
        }
    }

    /// A client-side error (malformed or refused request).
    pub fn client(kind: Kind, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(kind, Side::Client, message)
    }

    /// An upstream (origin) error.
    pub fn upstream(kind: Kind, message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(kind, Side::Upstream, message)
    }

    /// An internal error (500).
    pub fn internal(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(Kind::Internal, Side::Internal, message)
    }

    /// A 503 for a bucket without valid AWS credentials (never obtained, or expired and not
    /// renewed): corvid does not send unsigned requests. `state` is `"none"` or `"expired"`.
    pub fn no_credentials(bucket: &str, state: &str) -> Self {
        let why = if state == "expired" {
            "its AWS credentials expired and could not be renewed yet"
        } else {
            "no AWS credentials could be obtained for it yet"
        };
        Self::new(
            Kind::Unavailable,
            Side::Internal,
            format!("bucket {bucket} is unavailable: {why}"),
        )
        .retryable()
    }

    /// Marks the error as one that a retry could cure (e.g. a dead pooled connection).
    pub fn retryable(mut self) -> Self {
        self.retryable = true;
        self
    }

    /// A 405 for a route that allows `allow` (the `Allow` header value).
    pub fn method_not_allowed(allow: &'static str) -> Self {
        let mut e = Self::client(Kind::MethodNotAllowed, format!("allowed methods: {allow}"));
        e.allow = Some(allow);
        e
    }

    /// The `Allow` header value for a 405.
    pub fn allow(&self) -> Option<&'static str> {
        self.allow
    }

    /// A 401 answered with `WWW-Authenticate: <challenge>` (e.g. `Bearer`, or
    /// `Bearer error="invalid_token"`), as RFC 7235 §3.1 requires of every 401.
    pub fn unauthenticated(challenge: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        let mut e = Self::client(Kind::Unauthenticated, message);
        e.www_authenticate = Some(challenge);
        e
    }

    /// The `WWW-Authenticate` header value for a 401.
    pub fn www_authenticate(&self) -> Option<&'static str> {
        self.www_authenticate
    }

    /// Carries the origin's S3 error code (`"origin_code"` in the JSON body).
    pub fn with_origin_code(mut self, code: impl Into<String>) -> Self {
        self.origin.get_or_insert_default().code = Some(code.into());
        self
    }

    /// Carries a `Retry-After` value for the client; the caller has validated it
    /// (checked by the S3 error mapping, `s3::errors::retry_after`).
    pub fn with_retry_after(mut self, value: impl Into<String>) -> Self {
        self.origin.get_or_insert_default().retry_after = Some(value.into());
        self
    }

    /// A 416 for a representation of `len` bytes: answered with `Content-Range: bytes */len`.
    pub fn with_complete_length(mut self, len: u64) -> Self {
        self.origin.get_or_insert_default().complete_length = Some(len);
        self
    }

    /// The representation length a 416 names, if any.
    pub fn complete_length(&self) -> Option<u64> {
        self.origin.as_ref()?.complete_length
    }

    /// The origin's S3 error code, when the origin sent one.
    pub fn origin_code(&self) -> Option<&str> {
        self.origin.as_ref()?.code.as_deref()
    }

    /// The `Retry-After` header value of the answer, if any.
    pub fn retry_after(&self) -> Option<&str> {
        self.origin.as_ref()?.retry_after.as_deref()
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }
    pub fn side(&self) -> Side {
        self.side
    }
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }
    pub fn message(&self) -> &str {
        &self.message
    }
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> u16 {
        self.kind.status()
    }

    /// The JSON error body: `{"error": kind, "message": ..., "request_id": ...}`, plus
    /// `"origin_code"` when the origin named its error.
    pub fn json_body(&self, request_id: &str) -> String {
        let mut v = serde_json::json!({
            "error": self.kind.name(),
            "message": self.message,
            "request_id": request_id,
        });
        if let Some(code) = self.origin_code() {
            v["origin_code"] = code.into();
        }
        v.to_string()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.kind.name(),
            self.status(),
            self.message
        )
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_mapping_and_body() {
        let e = Error::client(Kind::UriTooLong, "request line too long");
        assert_eq!(e.status(), 414);
        let v: serde_json::Value = serde_json::from_str(&e.json_body("r1")).unwrap();
        assert_eq!(v["error"], "uri_too_long");
        assert_eq!(v["message"], "request line too long");
        assert_eq!(v["request_id"], "r1");
        assert!(!e.is_retryable());
        let e = Error::unauthenticated("Bearer", "no token");
        assert_eq!((e.status(), e.www_authenticate()), (401, Some("Bearer")));
        assert_eq!(
            Error::client(Kind::Forbidden, "no").www_authenticate(),
            None
        );
        assert!(Error::upstream(Kind::BadGateway, "x")
            .retryable()
            .is_retryable());
    }

    #[test]
    fn origin_kinds_and_details() {
        for (kind, status, name) in [
            (Kind::OriginInternal, 500, "origin_internal_error"),
            (Kind::OriginUnavailable, 503, "origin_unavailable"),
            (Kind::OriginBadRequest, 400, "origin_bad_request"),
        ] {
            assert_eq!((kind.status(), kind.name()), (status, name));
        }
        let plain = Error::upstream(Kind::NotFound, "no such object");
        let v: serde_json::Value = serde_json::from_str(&plain.json_body("r")).unwrap();
        assert!(
            v.get("origin_code").is_none(),
            "absent unless the origin sent one"
        );
        assert_eq!((plain.origin_code(), plain.retry_after()), (None, None));
        let e = Error::upstream(Kind::OriginUnavailable, "slow down")
            .with_origin_code("SlowDown")
            .with_retry_after("3");
        let v: serde_json::Value = serde_json::from_str(&e.json_body("r2")).unwrap();
        assert_eq!(v["origin_code"], "SlowDown");
        assert_eq!(
            (v["error"].as_str(), v["request_id"].as_str()),
            (Some("origin_unavailable"), Some("r2"))
        );
        assert_eq!(e.clone().retry_after(), Some("3"));
    }
}

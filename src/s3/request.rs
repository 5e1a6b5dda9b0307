//! Building the signed upstream request head for an object GET/HEAD (pure: no IO).
//!
//! What goes upstream, and why:
//! - Path-style (`/{bucket}/{key}` on the endpoint host) by default, virtual-hosted style
//!   (`/{key}` on `{bucket}.{host}`) per bucket. The key is encoded once with S3's rules, `/` kept.
//! - Only `versionId` of the client's query string is forwarded (and signed); everything else in
//!   the query is dropped, since S3 would treat unknown parameters as sub-resources or reject
//!   them. The `response-*` overrides are applied by corvid itself (`object::overrides`), so
//!   one cached object serves them all.
//! - Only these client headers are forwarded: `Range`, `If-None-Match`, `If-Modified-Since`,
//!   `If-Match`, `If-Unmodified-Since`. The client's `Authorization`, `Cookie`, hop-by-hop and
//!   every other header stay with corvid: the origin sees corvid's own credentials only.

use std::time::SystemTime;

use crate::config::{Addressing, BucketConfig};
use crate::s3::sigv4::{canonical_object_path, canonical_query, Signer, SigningRequest};

/// Client request headers forwarded to the origin, lowercase.
pub const FORWARDED_HEADERS: [&str; 5] = [
    "range",
    "if-none-match",
    "if-modified-since",
    "if-match",
    "if-unmodified-since",
];

/// What the proxy wants from the origin.
pub struct ObjectRequest<'a> {
    /// `"GET"` or `"HEAD"`.
    pub method: &'a str,
    /// The decoded object key.
    pub key: &'a str,
    /// Decoded query parameters to forward (`versionId`).
    pub query: &'a [(&'a str, &'a str)],
    /// Forwarded client headers (lowercase name, value), a subset of [`FORWARDED_HEADERS`].
    pub headers: &'a [(&'static str, &'a str)],
}

/// Writes the complete signed request head into `out` (cleared first).
pub fn build_request(
    bucket: &BucketConfig,
    signer: &Signer,
    req: &ObjectRequest<'_>,
    now: SystemTime,
    out: &mut Vec<u8>,
) {
    let (host, path) = match bucket.addressing {
        Addressing::Path => (
            bucket.endpoint.authority(),
            canonical_object_path(Some(&bucket.bucket), req.key),
        ),
        Addressing::Virtual => (
            format!("{}.{}", bucket.bucket, bucket.endpoint.authority()),
            canonical_object_path(None, req.key),
        ),
    };
    let query = canonical_query(req.query);

    let mut signed: Vec<(&str, &str)> = Vec::with_capacity(1 + req.headers.len());
    signed.push(("host", host.as_str()));
    signed.extend(req.headers.iter().map(|(n, v)| (*n, *v)));
    let sig = signer.sign(
        &SigningRequest {
            method: req.method,
            canonical_uri: &path,
            canonical_query: &query,
            headers: &signed,
        },
        now,
    );

    out.clear();
    out.extend_from_slice(req.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    if !query.is_empty() {
        out.push(b'?');
        out.extend_from_slice(query.as_bytes());
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &signed {
        header(out, name, value);
    }
    header(out, "x-amz-date", &sig.amz_date);
    header(out, "x-amz-content-sha256", sig.content_sha256);
    if let Some(token) = &sig.security_token {
        header(out, "x-amz-security-token", token);
    }
    header(out, "authorization", &sig.authorization);
    header(
        out,
        "user-agent",
        concat!("corvid/", env!("CARGO_PKG_VERSION")),
    );
    out.extend_from_slice(b"\r\n");
}

fn header(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

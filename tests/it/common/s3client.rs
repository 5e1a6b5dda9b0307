//! An S3 client that is independent of corvid: requests are signed with the
//! `aws-sigv4` crate and sent with the raw blocking client in `http.rs`.
//!
//! Using a different signer from corvid's matters: if both sides shared code,
//! a canonicalisation bug would sign and verify consistently and go unseen.
//! Paths are encoded the way AWS SDKs do for S3 (each byte outside
//! `A-Za-z0-9-._~` and `/` becomes `%XX`, and the canonical URI is that
//! encoding taken once, never double-encoded).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;

use super::http::{Conn, RawResponse, DEFAULT_TIMEOUT};

/// Bodies above this are sent as `UNSIGNED-PAYLOAD` so a multi-hundred-MiB
/// upload is not hashed twice (once by us, once by s3s); smaller ones carry
/// a real payload hash, which s3s verifies.
const SIGNED_PAYLOAD_LIMIT: usize = 8 << 20;

/// S3 URI-encodes a key for use in a path: unreserved bytes and `/` stay,
/// everything else is `%XX` (upper-case hex), including space and `+`.
pub fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len() * 3);
    for &b in key.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Encodes a query component (like `encode_key` but `/` is encoded too).
pub fn encode_query_component(s: &str) -> String {
    encode_key(s).replace('/', "%2F")
}

/// Who signs, and for which region.
#[derive(Clone, Copy, Debug)]
pub struct Creds<'a> {
    pub access_key: &'a str,
    pub secret_key: &'a str,
    pub region: &'a str,
}

/// Signs a request and returns the headers to add (`authorization`,
/// `x-amz-date`, `x-amz-content-sha256`, ...). `url` must be absolute and
/// already percent-encoded; `headers` must include `host`.
pub fn sign_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: SignableBody<'_>,
    creds: Creds<'_>,
    time: SystemTime,
) -> Vec<(String, String)> {
    let identity: Identity =
        Credentials::new(creds.access_key, creds.secret_key, None, None, "corvid-it").into();
    let mut settings = SigningSettings::default();
    // S3 specifics: the path is canonicalised exactly as sent (single
    // encoding, no dot-segment normalisation) and x-amz-content-sha256 is a
    // signed header.
    settings.percent_encoding_mode = PercentEncodingMode::Single;
    settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(creds.region)
        .name("s3")
        .time(time)
        .settings(settings)
        .build()
        .expect("signing params")
        .into();
    let signable = SignableRequest::new(method, url, headers.iter().copied(), body)
        .unwrap_or_else(|e| panic!("signable request for {url}: {e}"));
    let (instructions, _sig) = sign(signable, &params)
        .unwrap_or_else(|e| panic!("sign {method} {url}: {e}"))
        .into_parts();
    instructions
        .headers()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Path-style S3 client for one endpoint.
#[derive(Clone)]
pub struct S3Client {
    addr: SocketAddr,
    /// Value of the Host header (and authority used for signing).
    host: String,
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
    tls: Option<(Arc<rustls::ClientConfig>, String)>,
    timeout: Duration,
}

impl S3Client {
    pub fn new(addr: SocketAddr, access_key: &str, secret_key: &str) -> Self {
        S3Client {
            addr,
            host: addr.to_string(),
            access_key: access_key.to_owned(),
            secret_key: secret_key.to_owned(),
            region: "us-east-1".to_owned(),
            tls: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Talk HTTPS, verifying the server as `server_name` with `config`.
    pub fn with_tls(mut self, config: Arc<rustls::ClientConfig>, server_name: &str) -> Self {
        self.tls = Some((config, server_name.to_owned()));
        self
    }

    /// Bound on each socket read/write (large uploads may want more).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Path for `bucket`/`key` (key S3-encoded); `key` may be empty.
    pub fn object_path(bucket: &str, key: &str) -> String {
        if key.is_empty() {
            format!("/{bucket}")
        } else {
            format!("/{bucket}/{}", encode_key(key))
        }
    }

    /// Builds the signed request head (everything up to and including the
    /// blank line) for `path_and_query` (already encoded). Caller headers
    /// are signed too, so x-amz-meta-* are covered by the signature.
    pub fn signed_head(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Vec<u8> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{}{path_and_query}", self.host);
        let mut all: Vec<(&str, &str)> = vec![("host", self.host.as_str())];
        all.extend(headers.iter().copied());
        let payload = if body.len() > SIGNED_PAYLOAD_LIMIT {
            SignableBody::UnsignedPayload
        } else {
            SignableBody::Bytes(body)
        };
        let signed = sign_request(
            method,
            &url,
            &all,
            payload,
            Creds {
                access_key: &self.access_key,
                secret_key: &self.secret_key,
                region: &self.region,
            },
            SystemTime::now(),
        );
        let mut wire: Vec<(&str, &str)> = all;
        wire.extend(signed.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        // Explicit Content-Length, also for empty PUT bodies: s3s requires a
        // length for unsigned payloads and S3 rejects length-less PUTs.
        let cl = body.len().to_string();
        if !body.is_empty() || matches!(method, "PUT" | "POST") {
            wire.push(("content-length", &cl));
        }
        super::http::request_bytes(method, path_and_query, &self.host, &wire, &[])
    }

    /// Sends one signed request on a fresh connection. The body is written
    /// straight from the caller's slice (no copy), so large uploads cost
    /// one pass over the data.
    pub fn send(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> RawResponse {
        let head = self.signed_head(method, path_and_query, headers, body);
        match &self.tls {
            None => {
                let mut c = Conn::connect(self.addr);
                c.set_timeout(self.timeout);
                c.send(&head);
                c.send(body);
                c.read_response_to(method)
            }
            Some((cfg, name)) => {
                let mut c = Conn::connect_tls(self.addr, cfg.clone(), name)
                    .unwrap_or_else(|e| panic!("TLS connect {}: {e}", self.addr));
                c.set_timeout(self.timeout);
                c.send(&head);
                c.send(body);
                c.read_response_to(method)
            }
        }
    }

    /// `PUT /bucket`. Treats "already exists/owned by you" as success so
    /// seeding is idempotent.
    pub fn create_bucket(&self, bucket: &str) {
        let r = self.send("PUT", &Self::object_path(bucket, ""), &[], &[]);
        let ok =
            r.status == 200 || (r.status == 409 && r.text().contains("BucketAlreadyOwnedByYou"));
        assert!(ok, "create bucket {bucket}: {} {}", r.status, r.text());
    }

    /// `PUT /bucket/key` with optional Content-Type and extra headers
    /// (e.g. `x-amz-meta-*`, `cache-control`). Panics unless 200.
    pub fn put_object(
        &self,
        bucket: &str,
        key: &str,
        body: &[u8],
        content_type: Option<&str>,
        extra: &[(&str, &str)],
    ) -> RawResponse {
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if let Some(ct) = content_type {
            headers.push(("content-type", ct));
        }
        headers.extend_from_slice(extra);
        let r = self.send("PUT", &Self::object_path(bucket, key), &headers, body);
        assert_eq!(
            r.status,
            200,
            "put {bucket}/{key:?} ({} bytes): {}",
            body.len(),
            r.text()
        );
        r
    }

    pub fn get_object(&self, bucket: &str, key: &str, headers: &[(&str, &str)]) -> RawResponse {
        self.send("GET", &Self::object_path(bucket, key), headers, &[])
    }

    pub fn head_object(&self, bucket: &str, key: &str, headers: &[(&str, &str)]) -> RawResponse {
        self.send("HEAD", &Self::object_path(bucket, key), headers, &[])
    }

    pub fn delete_object(&self, bucket: &str, key: &str) -> RawResponse {
        self.send("DELETE", &Self::object_path(bucket, key), &[], &[])
    }
}

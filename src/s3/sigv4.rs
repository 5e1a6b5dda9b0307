//! AWS Signature Version 4 for the requests corvid sends to its S3 origin.
//!
//! This module owns everything between "a decoded bucket/key/query and a set of headers" and
//! "the `Authorization`, `x-amz-date`, `x-amz-content-sha256` and `x-amz-security-token` header
//! values to put on the upstream request". It does no IO and knows nothing about sockets or
//! HTTP framing; callers hand it strings and get strings back.
//!
//! Why hand-rolled rather than the `aws-sigv4` crate: corvid signs every cache miss on a
//! thread-per-core runtime, and the generic signer allocates a header map, re-parses the URI,
//! re-derives the signing key and builds several intermediate strings per request. Here the
//! canonical request is streamed straight into SHA-256, headers are sorted on the stack, and
//! the derived signing key (already loaded into an HMAC state) is cached per UTC day. The
//! `aws-sigv4` crate is still used, as a dev-dependency, as the oracle in the differential tests.
//!
//! S3 specifics that differ from "generic" SigV4 and that this module hard-codes:
//! - the path is percent-encoded exactly once and never normalized (`.`/`..`/`//` are
//!   legitimate parts of object keys);
//! - the payload is not hashed: GET/HEAD carry `x-amz-content-sha256: UNSIGNED-PAYLOAD`;
//! - header values are trimmed and runs of spaces collapsed, but only ASCII spaces (as S3 does),
//!   not other whitespace.
//!
//! The canonical URI and query produced by [`canonical_object_path`] and [`canonical_query`] are
//! meant to be sent upstream verbatim, so what is signed and what is sent cannot drift apart.

use std::cell::RefCell;
use std::cmp::Ordering;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// Value of `x-amz-content-sha256` (and the payload-hash line of the canonical request) for
/// requests whose body is not hashed.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";
const HEX_LOWER: &[u8; 16] = b"0123456789abcdef";

/// Long-lived AWS credentials, optionally with an STS session token.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key: String,
    pub secret_key: String,
    pub session_token: Option<String>,
}

// Hand-written so that secrets never end up in logs via `{:?}`.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

// ---------------------------------------------------------------------------------------------
// URI encoding
// ---------------------------------------------------------------------------------------------

#[inline]
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// S3 URI encoding: unreserved `A-Z a-z 0-9 - . _ ~` kept, every other byte `%XX` (uppercase
/// hex); `/` kept when `encode_slash` is false. Appends to `out`.
pub fn uri_encode(input: &[u8], encode_slash: bool, out: &mut String) {
    out.reserve(input.len());
    let keep = |b: u8| is_unreserved(b) || (b == b'/' && !encode_slash);
    let mut rest = input;
    while !rest.is_empty() {
        // Copy runs of kept bytes in one go; most keys are mostly unreserved.
        let run = rest.iter().position(|&b| !keep(b)).unwrap_or(rest.len());
        if run > 0 {
            // Kept bytes are all ASCII, so the run is valid UTF-8.
            out.push_str(std::str::from_utf8(&rest[..run]).expect("ASCII run"));
            rest = &rest[run..];
            continue;
        }
        let b = rest[0];
        out.push('%');
        out.push(HEX_UPPER[usize::from(b >> 4)] as char);
        out.push(HEX_UPPER[usize::from(b & 0xf)] as char);
        rest = &rest[1..];
    }
}

/// Canonical URI for an S3 object: `"/" + bucket (path-style, if Some) + "/" + key` with the key
/// encoded once and `/` kept. The result is also the path to send upstream.
///
/// `canonical_object_path(Some("bkt"), "a b/c+d") == "/bkt/a%20b/c%2Bd"`;
/// `canonical_object_path(None, "k") == "/k"`.
pub fn canonical_object_path(bucket: Option<&str>, key: &str) -> String {
    let mut out = String::with_capacity(2 + bucket.map_or(0, str::len) + key.len() * 3 / 2);
    out.push('/');
    if let Some(bucket) = bucket {
        // Slashes are encoded so that a malformed bucket name cannot smuggle in path segments.
        uri_encode(bucket.as_bytes(), true, &mut out);
        out.push('/');
    }
    uri_encode(key.as_bytes(), false, &mut out);
    out
}

/// Sorted canonical query string from decoded `(name, value)` pairs: each name and value
/// [`uri_encode`]d with `encode_slash = true`, sorted by encoded name then encoded value, joined
/// with `&` and `=`. An empty value still gets its `=` (`"acl="`), as SigV4 requires.
///
/// Used both for signing and as the actual query string sent upstream, so they always match.
pub fn canonical_query(params: &[(&str, &str)]) -> String {
    if params.is_empty() {
        return String::new();
    }
    // Encode everything into one buffer and sort ranges into it, instead of a String per part.
    let mut buf = String::with_capacity(params.iter().map(|(n, v)| n.len() + v.len()).sum());
    let mut spans = Vec::with_capacity(params.len());
    for (name, value) in params {
        let n0 = buf.len();
        uri_encode(name.as_bytes(), true, &mut buf);
        let n1 = buf.len();
        uri_encode(value.as_bytes(), true, &mut buf);
        spans.push((n0..n1, n1..buf.len()));
    }
    spans.sort_by(|a, b| {
        buf[a.0.clone()]
            .cmp(&buf[b.0.clone()])
            .then_with(|| buf[a.1.clone()].cmp(&buf[b.1.clone()]))
    });
    let mut out = String::with_capacity(buf.len() + 2 * params.len());
    for (i, (name, value)) in spans.into_iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(&buf[name]);
        out.push('=');
        out.push_str(&buf[value]);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Dates
// ---------------------------------------------------------------------------------------------

/// Days since 1970-01-01 → proleptic Gregorian `(year, month 1..=12, day 1..=31)`.
///
/// Howard Hinnant's `civil_from_days`; exact for the whole `i64` range we feed it.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468; // shift epoch to 0000-03-01, so leap days fall at the end of a year
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of 400-year era, [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365], March-based
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Proleptic Gregorian date → days since 1970-01-01; inverse of [`civil_from_days`].
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = year - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from(if month > 2 { month - 3 } else { month + 9 });
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Whole seconds since the Unix epoch, rounded towards negative infinity.
fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => {
            let d = e.duration();
            let s = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            if d.subsec_nanos() > 0 {
                -s - 1
            } else {
                -s
            }
        }
    }
}

// 0000-01-01T00:00:00Z and 9999-12-31T23:59:59Z: the range a 4-digit SigV4 year can express.
const MIN_SECS: i64 = -62_167_219_200;
const MAX_SECS: i64 = 253_402_300_799;

/// `YYYYMMDDTHHMMSSZ` as ASCII bytes, plus the day number used as the signing-key cache key.
fn amz_date_bytes(secs: i64) -> ([u8; 16], i64) {
    // A clock outside 0000..=9999 cannot produce a valid signature anyway; clamping keeps the
    // output well-formed (and the request merely rejected) instead of panicking in the proxy.
    let secs = secs.clamp(MIN_SECS, MAX_SECS);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    let (year, month, day) = civil_from_days(days);
    let year = year as u32; // in 0..=9999 after the clamp
    let mut out = *b"00000000T000000Z";
    let mut put = |at: usize, width: usize, mut v: u32| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, year);
    put(4, 2, month);
    put(6, 2, day);
    put(9, 2, sod / 3600);
    put(11, 2, sod / 60 % 60);
    put(13, 2, sod % 60);
    (out, days)
}

/// UTC formatting of `t` as `YYYYMMDD'T'HHMMSS'Z'`, the `x-amz-date` format (sub-second part
/// dropped). Times outside years 0000..=9999 are clamped to that range.
pub fn amz_date(t: SystemTime) -> String {
    let (bytes, _) = amz_date_bytes(unix_seconds(t));
    String::from_utf8(bytes.to_vec()).expect("ASCII")
}

// ---------------------------------------------------------------------------------------------
// Canonical request, string to sign, key derivation
// ---------------------------------------------------------------------------------------------

/// Anything the canonical request / string to sign can be written into: a `String` when a
/// caller wants to see it, a hasher or HMAC when signing, so the two cannot disagree.
trait Sink {
    fn put(&mut self, s: &str);
}

impl Sink for String {
    #[inline]
    fn put(&mut self, s: &str) {
        self.push_str(s);
    }
}

impl Sink for Sha256 {
    #[inline]
    fn put(&mut self, s: &str) {
        Digest::update(self, s.as_bytes());
    }
}

impl Sink for HmacSha256 {
    #[inline]
    fn put(&mut self, s: &str) {
        Mac::update(self, s.as_bytes());
    }
}

fn put_lowercase(sink: &mut impl Sink, name: &str) {
    if !name.bytes().any(|b| b.is_ascii_uppercase()) {
        sink.put(name);
        return;
    }
    // Only reached for callers that pass mixed-case names (the AWS test vectors); corvid's own
    // callers pass lowercase names and take the branch above.
    let mut buf = [0u8; 4];
    for c in name.chars() {
        sink.put(c.to_ascii_lowercase().encode_utf8(&mut buf));
    }
}

/// Header names compared as SigV4 sorts them: by lowercased bytes.
fn cmp_names(a: &str, b: &str) -> Ordering {
    fn lower(s: &str) -> impl Iterator<Item = u8> + '_ {
        s.bytes().map(|c| c.to_ascii_lowercase())
    }
    lower(a).cmp(lower(b))
}

/// Header value with leading/trailing spaces removed and inner runs of spaces collapsed to one.
/// Only ASCII space is touched, matching S3 (tabs and other whitespace are kept verbatim).
fn put_trimmed_value(sink: &mut impl Sink, value: &str) {
    let mut first = true;
    for part in value.split(' ').filter(|p| !p.is_empty()) {
        if !first {
            sink.put(" ");
        }
        sink.put(part);
        first = false;
    }
}

const INLINE_HEADERS: usize = 16;

/// Runs `f` on `headers` plus `extra`, stably sorted by lowercased name. Stable so that values
/// of a repeated header keep their request order when they are joined with `,`. Sorting happens
/// in a stack array for the usual handful of headers.
fn with_sorted_headers<'h, R>(
    headers: &[(&'h str, &'h str)],
    extra: &[(&'h str, &'h str)],
    f: impl FnOnce(&[(&'h str, &'h str)]) -> R,
) -> R {
    let n = headers.len() + extra.len();
    let mut inline = [("", ""); INLINE_HEADERS];
    let mut heap;
    let all: &mut [(&str, &str)] = if n <= INLINE_HEADERS {
        &mut inline[..n]
    } else {
        heap = vec![("", ""); n];
        &mut heap
    };
    for (slot, h) in all.iter_mut().zip(headers.iter().chain(extra)) {
        *slot = *h;
    }
    // Insertion sort: tiny n, stable, no allocation.
    for i in 1..all.len() {
        let mut j = i;
        while j > 0 && cmp_names(all[j - 1].0, all[j].0) == Ordering::Greater {
            all.swap(j - 1, j);
            j -= 1;
        }
    }
    f(all)
}

/// Iterates over runs of equal (case-insensitive) names in sorted headers.
fn header_groups<'a, 'h>(
    sorted: &'a [(&'h str, &'h str)],
) -> impl Iterator<Item = &'a [(&'h str, &'h str)]> {
    sorted.chunk_by(|a, b| a.0.eq_ignore_ascii_case(b.0))
}

fn write_signed_headers(sink: &mut impl Sink, sorted: &[(&str, &str)]) {
    for (i, group) in header_groups(sorted).enumerate() {
        if i > 0 {
            sink.put(";");
        }
        put_lowercase(sink, group[0].0);
    }
}

fn write_canonical_request(
    sink: &mut impl Sink,
    method: &str,
    canonical_uri: &str,
    canonical_query: &str,
    sorted: &[(&str, &str)],
    payload_hash: &str,
) {
    sink.put(method);
    sink.put("\n");
    sink.put(canonical_uri);
    sink.put("\n");
    sink.put(canonical_query);
    sink.put("\n");
    for group in header_groups(sorted) {
        put_lowercase(sink, group[0].0);
        sink.put(":");
        for (i, (_, value)) in group.iter().enumerate() {
            if i > 0 {
                sink.put(",");
            }
            put_trimmed_value(sink, value);
        }
        sink.put("\n");
    }
    sink.put("\n");
    write_signed_headers(sink, sorted);
    sink.put("\n");
    sink.put(payload_hash);
}

/// The SigV4 canonical request for the given, complete set of headers to sign.
///
/// Unlike [`Signer::sign`], nothing is added: `headers` must already contain `host`,
/// `x-amz-date`, and whatever else is to be signed. Names may be in any case and order;
/// repeated names are merged with `,` in the given order. `payload_hash` is the last line
/// ([`UNSIGNED_PAYLOAD`] for corvid, the hex SHA-256 of the body for the AWS test suite).
pub fn canonical_request(
    method: &str,
    canonical_uri: &str,
    canonical_query: &str,
    headers: &[(&str, &str)],
    payload_hash: &str,
) -> String {
    let mut out = String::with_capacity(256);
    with_sorted_headers(headers, &[], |sorted| {
        write_canonical_request(
            &mut out,
            method,
            canonical_uri,
            canonical_query,
            sorted,
            payload_hash,
        )
    });
    out
}

/// The `SignedHeaders` list for `headers`: unique lowercased names, sorted, joined by `;`.
pub fn signed_headers(headers: &[(&str, &str)]) -> String {
    let mut out = String::new();
    with_sorted_headers(headers, &[], |sorted| {
        write_signed_headers(&mut out, sorted)
    });
    out
}

/// `YYYYMMDD/region/service/aws4_request`.
pub fn credential_scope(yyyymmdd: &str, region: &str, service: &str) -> String {
    format!("{yyyymmdd}/{region}/{service}/aws4_request")
}

fn write_string_to_sign(sink: &mut impl Sink, amz_date: &str, scope: &str, creq_hash_hex: &str) {
    sink.put(ALGORITHM);
    sink.put("\n");
    sink.put(amz_date);
    sink.put("\n");
    sink.put(scope);
    sink.put("\n");
    sink.put(creq_hash_hex);
}

/// The SigV4 string to sign: algorithm, `amz_date`, credential scope and the hex SHA-256 of the
/// canonical request, one per line.
pub fn string_to_sign(amz_date: &str, credential_scope: &str, canonical_request: &str) -> String {
    let hash = hex_lower(&Sha256::digest(canonical_request.as_bytes()).into());
    let mut out = String::with_capacity(ALGORITHM.len() + amz_date.len() + 100);
    write_string_to_sign(&mut out, amz_date, credential_scope, as_str(&hash));
    out
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// `kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")`.
pub fn derive_signing_key(secret: &str, yyyymmdd: &str, region: &str, service: &str) -> [u8; 32] {
    // The key is "AWS4" + secret; build it on the stack when it fits (it always does for real
    // AWS secrets) to keep key derivation allocation-free.
    let mut key_buf = [0u8; 128];
    let key_len = 4 + secret.len();
    let k_date = if key_len <= key_buf.len() {
        key_buf[..4].copy_from_slice(b"AWS4");
        key_buf[4..key_len].copy_from_slice(secret.as_bytes());
        hmac(&key_buf[..key_len], yyyymmdd.as_bytes())
    } else {
        let key = [b"AWS4".as_slice(), secret.as_bytes()].concat();
        hmac(&key, yyyymmdd.as_bytes())
    };
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    hmac(&k_service, b"aws4_request")
}

/// Lowercase hex of `HMAC-SHA256(signing_key, string_to_sign)`: the `Signature=` value.
pub fn signature(signing_key: &[u8; 32], string_to_sign: &str) -> String {
    let sig = hmac(signing_key, string_to_sign.as_bytes());
    as_str(&hex_lower(&sig)).to_owned()
}

fn hex_lower(bytes: &[u8; 32]) -> [u8; 64] {
    let mut out = [0u8; 64];
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = HEX_LOWER[usize::from(b >> 4)];
        out[2 * i + 1] = HEX_LOWER[usize::from(b & 0xf)];
    }
    out
}

fn as_str(ascii: &[u8]) -> &str {
    std::str::from_utf8(ascii).expect("ASCII")
}

// ---------------------------------------------------------------------------------------------
// Signer
// ---------------------------------------------------------------------------------------------

/// The parts of an upstream request that get signed.
#[derive(Debug, Clone, Copy)]
pub struct SigningRequest<'a> {
    /// `"GET"` / `"HEAD"`.
    pub method: &'a str,
    /// Already encoded, from [`canonical_object_path`].
    pub canonical_uri: &'a str,
    /// From [`canonical_query`]; may be `""`.
    pub canonical_query: &'a str,
    /// Extra headers to sign, beyond the ones the signer adds itself
    /// (`x-amz-content-sha256`, `x-amz-date`, `x-amz-security-token`, which must not be passed
    /// here). Names lowercase. Must include `"host"`.
    pub headers: &'a [(&'a str, &'a str)],
}

/// What the caller adds to the upstream request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    /// `x-amz-date`, e.g. `20150830T123600Z`.
    pub amz_date: String,
    /// `x-amz-content-sha256` = [`UNSIGNED_PAYLOAD`].
    pub content_sha256: &'static str,
    /// `x-amz-security-token`, when the credentials have a session token.
    pub security_token: Option<String>,
    /// `Authorization` header value.
    pub authorization: String,
}

/// A derived signing key for one UTC day, already loaded into an HMAC state so each signature
/// costs only the HMAC of the string to sign (the key-block compressions are done once).
#[derive(Clone)]
struct DayKey {
    day: i64,
    mac: HmacSha256,
}

/// One signer per (credentials, region, service). Caches the derived signing key for the
/// current UTC date and reuses it until the date changes. Not `Sync` (a `RefCell` cache):
/// corvid keeps one per bucket per worker thread, so no locking is needed.
pub struct Signer {
    credentials: Credentials,
    region: String,
    service: String,
    /// `"AWS4-HMAC-SHA256 Credential=<access key>/"`, precomputed once.
    auth_prefix: String,
    /// `"/<region>/<service>/aws4_request"`, the date-independent tail of the scope.
    scope_suffix: String,
    cache: RefCell<Option<DayKey>>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("credentials", &self.credentials)
            .field("region", &self.region)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

enum KeyMode {
    Cached,
    Uncached,
}

impl Signer {
    pub fn new(credentials: Credentials, region: &str, service: &str) -> Self {
        let auth_prefix = format!("{ALGORITHM} Credential={}/", credentials.access_key);
        let scope_suffix = format!("/{region}/{service}/aws4_request");
        Signer {
            credentials,
            region: region.to_owned(),
            service: service.to_owned(),
            auth_prefix,
            scope_suffix,
            cache: RefCell::new(None),
        }
    }

    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// Signs `req` as of `now` with `x-amz-content-sha256: UNSIGNED-PAYLOAD`, using (and
    /// refreshing when the UTC date changes) the cached signing key.
    pub fn sign(&self, req: &SigningRequest<'_>, now: SystemTime) -> SignedHeaders {
        self.signed_headers(req, now, KeyMode::Cached)
    }

    /// Same as [`Signer::sign`], without using or filling the cache (for the benchmark
    /// comparison and to cross-check the cache in tests).
    pub fn sign_uncached(&self, req: &SigningRequest<'_>, now: SystemTime) -> SignedHeaders {
        self.signed_headers(req, now, KeyMode::Uncached)
    }

    /// The `Authorization` value for a request whose canonical payload hash is `payload_hash`.
    /// With `content_sha256_header` the signer also signs `x-amz-content-sha256: <payload_hash>`
    /// (S3 style); without it the header is not added (generic SigV4 services, and the AWS
    /// signing test suite, which this exists to run through the same code path as [`sign`]).
    /// `x-amz-date` and the session token are added as in [`sign`]. Uses the key cache.
    ///
    /// [`sign`]: Signer::sign
    pub fn authorization_with_payload_hash(
        &self,
        req: &SigningRequest<'_>,
        now: SystemTime,
        payload_hash: &str,
        content_sha256_header: bool,
    ) -> String {
        let (date, day) = amz_date_bytes(unix_seconds(now));
        self.authorization(
            req,
            as_str(&date),
            day,
            payload_hash,
            content_sha256_header,
            KeyMode::Cached,
        )
    }

    fn signed_headers(
        &self,
        req: &SigningRequest<'_>,
        now: SystemTime,
        mode: KeyMode,
    ) -> SignedHeaders {
        let (date, day) = amz_date_bytes(unix_seconds(now));
        let amz_date = as_str(&date);
        let authorization = self.authorization(req, amz_date, day, UNSIGNED_PAYLOAD, true, mode);
        SignedHeaders {
            amz_date: amz_date.to_owned(),
            content_sha256: UNSIGNED_PAYLOAD,
            security_token: self.credentials.session_token.clone(),
            authorization,
        }
    }

    /// Keyed HMAC state for `day`, from the cache or freshly derived.
    fn day_mac(&self, yyyymmdd: &str, day: i64, mode: KeyMode) -> HmacSha256 {
        let derive = || {
            let key = derive_signing_key(
                &self.credentials.secret_key,
                yyyymmdd,
                &self.region,
                &self.service,
            );
            HmacSha256::new_from_slice(&key).expect("any key length")
        };
        match mode {
            KeyMode::Uncached => derive(),
            KeyMode::Cached => {
                let mut cache = self.cache.borrow_mut();
                match &*cache {
                    Some(k) if k.day == day => k.mac.clone(),
                    _ => {
                        let mac = derive();
                        *cache = Some(DayKey {
                            day,
                            mac: mac.clone(),
                        });
                        mac
                    }
                }
            }
        }
    }

    fn authorization(
        &self,
        req: &SigningRequest<'_>,
        amz_date: &str,
        day: i64,
        payload_hash: &str,
        content_sha256_header: bool,
        mode: KeyMode,
    ) -> String {
        debug_assert!(
            req.headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("host")),
            "SigningRequest.headers must include host"
        );
        debug_assert!(
            !req.headers.iter().any(|(n, _)| {
                n.eq_ignore_ascii_case("x-amz-date")
                    || n.eq_ignore_ascii_case("x-amz-content-sha256")
                    || n.eq_ignore_ascii_case("x-amz-security-token")
            }),
            "the signer adds x-amz-date/x-amz-content-sha256/x-amz-security-token itself"
        );

        let mut extra = [("", ""); 3];
        let mut n_extra = 0;
        let mut push = |h| {
            extra[n_extra] = h;
            n_extra += 1;
        };
        if content_sha256_header {
            push(("x-amz-content-sha256", payload_hash));
        }
        push(("x-amz-date", amz_date));
        if let Some(token) = &self.credentials.session_token {
            push(("x-amz-security-token", token.as_str()));
        }

        let yyyymmdd = &amz_date[..8];
        let mut auth =
            String::with_capacity(self.auth_prefix.len() + 8 + self.scope_suffix.len() + 200);
        auth.push_str(&self.auth_prefix);
        auth.push_str(yyyymmdd);
        auth.push_str(&self.scope_suffix);
        auth.push_str(", SignedHeaders=");

        let creq_hash = with_sorted_headers(req.headers, &extra[..n_extra], |sorted| {
            write_signed_headers(&mut auth, sorted);
            let mut hasher = Sha256::new();
            write_canonical_request(
                &mut hasher,
                req.method,
                req.canonical_uri,
                req.canonical_query,
                sorted,
                payload_hash,
            );
            hex_lower(&hasher.finalize().into())
        });

        let mut mac = self.day_mac(yyyymmdd, day, mode);
        // Same bytes as `write_string_to_sign`, with the scope "<yyyymmdd><scope_suffix>"
        // streamed in two pieces rather than built.
        for part in [
            ALGORITHM,
            "\n",
            amz_date,
            "\n",
            yyyymmdd,
            &self.scope_suffix,
            "\n",
        ] {
            mac.put(part);
        }
        mac.put(as_str(&creq_hash));
        let sig = hex_lower(&mac.finalize().into_bytes().into());

        auth.push_str(", Signature=");
        auth.push_str(as_str(&sig));
        auth
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: i64) -> SystemTime {
        if secs >= 0 {
            UNIX_EPOCH + Duration::from_secs(secs as u64)
        } else {
            UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
        }
    }

    fn enc(input: &[u8], encode_slash: bool) -> String {
        let mut s = String::new();
        uri_encode(input, encode_slash, &mut s);
        s
    }

    #[test]
    fn uri_encode_every_byte() {
        for b in 0u8..=255 {
            let unreserved = b.is_ascii_uppercase()
                || b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || b"-._~".contains(&b);
            let pct = format!("%{b:02X}");
            let expect_slash_kept = if unreserved || b == b'/' {
                (b as char).to_string()
            } else {
                pct.clone()
            };
            let expect_slash_encoded = if unreserved {
                (b as char).to_string()
            } else {
                pct
            };
            assert_eq!(enc(&[b], false), expect_slash_kept, "byte {b:#04x}");
            assert_eq!(enc(&[b], true), expect_slash_encoded, "byte {b:#04x}");
        }
    }

    #[test]
    fn uri_encode_appends_and_handles_runs() {
        let mut s = String::from("x");
        uri_encode("a b/ü~".as_bytes(), false, &mut s);
        assert_eq!(s, "xa%20b/%C3%BC~");
        assert_eq!(enc(b"a+b=c&d", true), "a%2Bb%3Dc%26d");
        assert_eq!(enc(b"", true), "");
    }

    #[test]
    fn object_paths() {
        assert_eq!(
            canonical_object_path(Some("bkt"), "a b/c+d"),
            "/bkt/a%20b/c%2Bd"
        );
        assert_eq!(canonical_object_path(None, "k"), "/k");
        assert_eq!(canonical_object_path(Some("bkt"), ""), "/bkt/");
        // No normalization: dot segments and empty segments are part of S3 keys.
        assert_eq!(canonical_object_path(None, "./a//../b"), "/./a//../b");
        assert_eq!(canonical_object_path(None, "/lead"), "//lead");
    }

    #[test]
    fn canonical_query_orders_by_encoded_name_then_value() {
        assert_eq!(canonical_query(&[]), "");
        assert_eq!(
            canonical_query(&[("versionId", "b"), ("acl", ""), ("versionId", "a")]),
            "acl=&versionId=a&versionId=b"
        );
        // Uppercase sorts before lowercase (byte order), and sorting is on the *encoded* form:
        // '%' (0x25) sorts before letters and digits.
        assert_eq!(
            canonical_query(&[("b", "1"), ("B", "1"), ("ሴ", "x"), ("a b", "c/d+e")]),
            "%E1%88%B4=x&B=1&a%20b=c%2Fd%2Be&b=1"
        );
        assert_eq!(
            canonical_query(&[("response-content-type", "text/plain; charset=utf-8")]),
            "response-content-type=text%2Fplain%3B%20charset%3Dutf-8"
        );
    }

    #[test]
    fn amz_date_known_timestamps() {
        let cases: &[(i64, &str)] = &[
            (0, "19700101T000000Z"),
            (-1, "19691231T235959Z"),
            (1_440_938_160, "20150830T123600Z"), // the AWS test-suite timestamp
            (951_782_400, "20000229T000000Z"),   // leap day of a /400 year
            (1_709_164_800, "20240229T000000Z"),
            (1_709_251_199, "20240229T235959Z"),
            (1_709_251_200, "20240301T000000Z"),
            (4_107_542_400, "21000301T000000Z"), // 2100 is not a leap year
            (4_107_542_399, "21000228T235959Z"),
            (253_402_300_799, "99991231T235959Z"),
        ];
        for &(secs, want) in cases {
            assert_eq!(amz_date(at(secs)), want, "secs {secs}");
        }
        // Sub-second parts are truncated towards the past, including before the epoch.
        assert_eq!(
            amz_date(UNIX_EPOCH + Duration::from_millis(999)),
            "19700101T000000Z"
        );
        assert_eq!(
            amz_date(UNIX_EPOCH - Duration::from_millis(1)),
            "19691231T235959Z"
        );
        // Out-of-range clocks are clamped, not a panic.
        assert_eq!(amz_date(at(MAX_SECS + 10)), "99991231T235959Z");
    }

    #[test]
    fn civil_round_trip() {
        for days in (-800_000..800_000).step_by(97) {
            let (y, m, d) = civil_from_days(days);
            assert!((1..=12).contains(&m) && (1..=31).contains(&d));
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(
            civil_from_days(days_from_civil(2100, 3, 1) - 1),
            (2100, 2, 28)
        );
        assert_eq!(
            civil_from_days(days_from_civil(2000, 3, 1) - 1),
            (2000, 2, 29)
        );
    }

    #[test]
    fn header_values_trimmed_collapsed_and_merged() {
        let creq = canonical_request(
            "GET",
            "/",
            "",
            &[
                ("Host", "h"),
                ("x-b", "  a   b  c "),
                ("X-A", "2"),
                ("x-a", "1"),
                ("x-t", "\ttab\t"),
            ],
            UNSIGNED_PAYLOAD,
        );
        assert_eq!(
            creq,
            "GET\n/\n\nhost:h\nx-a:2,1\nx-b:a b c\nx-t:\ttab\t\n\nhost;x-a;x-b;x-t\nUNSIGNED-PAYLOAD"
        );
    }

    #[test]
    fn many_headers_spill_to_heap_and_stay_sorted() {
        let names: Vec<String> = (0..40).rev().map(|i| format!("x-h{i:02}")).collect();
        let mut headers: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
        headers.push(("host", "h"));
        let sh = signed_headers(&headers);
        let mut want: Vec<&str> = names.iter().map(String::as_str).collect();
        want.push("host");
        want.sort();
        assert_eq!(sh, want.join(";"));
    }

    #[test]
    fn cache_matches_uncached_and_rolls_over_at_midnight() {
        let signer = Signer::new(
            Credentials {
                access_key: "AKID".into(),
                secret_key: "secret".into(),
                session_token: Some("tok".into()),
            },
            "us-east-1",
            "s3",
        );
        let headers = [("host", "example.com"), ("range", "bytes=0-9")];
        let req = SigningRequest {
            method: "GET",
            canonical_uri: "/b/k",
            canonical_query: "",
            headers: &headers,
        };
        let before = at(1_709_251_199);
        let after = at(1_709_251_200);
        for t in [before, before, after, before, after] {
            let cached = signer.sign(&req, t);
            assert_eq!(cached, signer.sign_uncached(&req, t));
        }
        let s = signer.sign(&req, after);
        assert_eq!(s.amz_date, "20240301T000000Z");
        assert_eq!(s.security_token.as_deref(), Some("tok"));
        assert!(s.authorization.starts_with(
            "AWS4-HMAC-SHA256 Credential=AKID/20240301/us-east-1/s3/aws4_request, \
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date;x-amz-security-token, \
             Signature="
        ));
    }

    #[test]
    fn debug_redacts_secrets() {
        let c = Credentials {
            access_key: "AKID".into(),
            secret_key: "hunter2".into(),
            session_token: Some("tok3n".into()),
        };
        let s = format!("{:?}", Signer::new(c, "r", "s3"));
        assert!(s.contains("AKID") && !s.contains("hunter2") && !s.contains("tok3n"));
    }
}

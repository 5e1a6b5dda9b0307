//! Request heads: a sans-IO, zero-copy parser with strict RFC 9112 framing.
//!
//! This module owns the answer to "where does this request end, and what does its head say?".
//! The connection loop reads bytes into its buffer and calls [`parse_request`]; the
//! [`RequestHead`] it fills refers into that buffer by ranges and is reused for every request on
//! the connection (cleared, its `Vec` keeps its capacity), so a warm parser allocates nothing.
//! httparse does the tokenising; the framing rules that decide message boundaries — where request
//! smuggling lives — are applied on top, here, with no tolerance: every ambiguity is an error and
//! the caller answers its status and closes the connection.
//!
//! # Decisions where the RFCs leave room
//!
//! * **Line endings**: CRLF only. A bare LF anywhere in the head is 400 (RFC 9112 §2.2 lets a
//!   recipient accept it; a proxy that accepts what the origin rejects is a smuggling vector).
//!   A bare CR is 400 (httparse).
//! * **Leading empty lines**: CRLFs before the request line are skipped (§2.2 says a server
//!   SHOULD ignore at least one; clients emit one after a POST body). They count toward
//!   [`Limits::max_request_line`], so a stream of CRLFs ends in 414.
//! * **Limits**: the request line (from the first byte of the buffer, excluding its CRLF) longer
//!   than `max_request_line` is 414, whether or not its CRLF has arrived. The header section —
//!   every byte after the request line's CRLF up to and including the empty line — longer than
//!   `max_header_bytes` is 431, also while still incomplete; more than `max_headers` field lines
//!   (capped at [`MAX_HEADERS_CAP`]) is 431.
//! * **Versions**: `HTTP/1.0` and `HTTP/1.1` only. Any other well-formed `HTTP/<digit>...` version
//!   is 505 — including the HTTP/2 prior-knowledge preface `PRI * HTTP/2.0`, which tells the
//!   client plainly that we speak HTTP/1.x only. A version that is not `HTTP/<digit>` is 400.
//! * **Request-target**: non-empty, visible ASCII only (bytes ≥ 0x80 are 400: RFC 3986 has no
//!   raw non-ASCII; clients must percent-encode). The form (origin/absolute/...) is the router's
//!   business.
//! * **Content-Length**: several lines or a list of *identical* values are accepted as one value
//!   (RFC 9110 §8.6); differing or malformed (empty, sign, non-digit, overflow) is 400.
//!   `Content-Length: 0` is reported as `BodyFraming::Length(0)`, not `None`.
//! * **Transfer-Encoding**: with Content-Length → 400 (§6.3 allows "TE wins" but a proxy must not
//!   guess); in HTTP/1.0 → 400 (§6.1: framing is faulty); `chunked` not the final coding (e.g.
//!   `gzip`, `chunked, gzip`) → 400 (§6.3 rule 4); `chunked` final after other codings
//!   (`gzip, chunked`) → 501 (§6.1: a coding we do not understand); empty list elements,
//!   `chunked` twice, or parameters on `chunked` → 400.
//! * **Field syntax**: obs-fold, whitespace between name and colon, non-token name bytes, and
//!   NUL/CTL/bare CR in values are 400 (httparse rejects them with the strict config for requests;
//!   tested here).
//! * **Host**: HTTP/1.1 requires exactly one (§3.2); missing or repeated is 400, and so is a value
//!   with bytes that cannot be in `uri-host [":" port]`. HTTP/1.0 may omit it, but not repeat it.
//! * **Expect**: `100-continue` (case-insensitive, HTTP/1.1 only: §10.1.1 of RFC 9110 says to
//!   ignore it in 1.0) is recorded; other expectations are ignored rather than answered 417 (the
//!   error type has no 417 and ignoring is allowed).
//! * **Connection**: 1.1 is persistent unless a `close` token is present; 1.0 only with a
//!   `keep-alive` token and no `close` token.
//! * A GET/HEAD with a body is legal framing: its framing is reported and the connection loop
//!   must read (discard) the body before the next request.

use std::mem::MaybeUninit;
use std::ops::Range;

use super::headers::{self, FieldError, TransferEncoding};
use crate::error::{Error, Kind};

/// Default bound on the request line (method, target, version), in bytes.
pub const DEFAULT_MAX_REQUEST_LINE: usize = 8 * 1024;
/// Default bound on the header section, in bytes.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// Default bound on the number of header field lines.
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// Hard cap on header field lines: the size of the parser's stack array of header slots.
/// Configuration caps `max_headers` at this.
pub const MAX_HEADERS_CAP: usize = 256;

/// Size bounds on a request head; each earns its own status when exceeded (414 / 431 / 431).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_request_line: usize,
    pub max_header_bytes: usize,
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_line: DEFAULT_MAX_REQUEST_LINE,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
        }
    }
}

/// Request method. Methods are case-sensitive (RFC 9110 §9.1): `get` is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Options,
    Post,
    Put,
    Delete,
    Patch,
    Connect,
    Trace,
    Other,
}

impl Method {
    /// The method's name (`OTHER` for a method corvid does not know).
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Options => "OPTIONS",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Patch => "PATCH",
            Method::Connect => "CONNECT",
            Method::Trace => "TRACE",
            Method::Other => "OTHER",
        }
    }

    /// The method named by `token` (exact, case-sensitive match).
    pub fn from_bytes(token: &[u8]) -> Method {
        match token {
            b"GET" => Method::Get,
            b"HEAD" => Method::Head,
            b"OPTIONS" => Method::Options,
            b"POST" => Method::Post,
            b"PUT" => Method::Put,
            b"DELETE" => Method::Delete,
            b"PATCH" => Method::Patch,
            b"CONNECT" => Method::Connect,
            b"TRACE" => Method::Trace,
            _ => Method::Other,
        }
    }
}

/// True for the methods the cache may serve from storage (safe and idempotent reads).
pub fn is_idempotent_read(m: Method) -> bool {
    matches!(m, Method::Get | Method::Head)
}

/// How the request body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body: neither Content-Length nor Transfer-Encoding.
    None,
    /// Exactly this many bytes follow the head.
    Length(u64),
    /// A chunked body follows the head (see [`super::chunked::ChunkedDecoder`]).
    Chunked,
}

/// One parsed request head; its fields are ranges into the buffer given to [`parse_request`].
/// Accessors taking `buf` must be given that same buffer (a different one yields garbage or
/// empty strings, never a panic).
#[derive(Debug, Clone)]
pub struct RequestHead {
    method: Method,
    method_range: Range<usize>,
    target: Range<usize>,
    minor_version: u8,
    /// (name, value) ranges, in order of appearance.
    headers: Vec<(Range<usize>, Range<usize>)>,
    body: BodyFraming,
    keep_alive: bool,
    expect_continue: bool,
    /// A field named `x-corvid-…` was present: only fleet members send them (the hop marker
    /// and their requests' options), so the handler looks for them only then — a client's
    /// request, the hit path, skips a scan of its fields (found by callgrind, issue 19).
    own_fields: bool,
}

impl Default for RequestHead {
    fn default() -> Self {
        RequestHead {
            method: Method::Other,
            method_range: 0..0,
            target: 0..0,
            minor_version: 1,
            headers: Vec::new(),
            body: BodyFraming::None,
            keep_alive: false,
            expect_continue: false,
            own_fields: false,
        }
    }
}

/// `buf[r]` as text; the parser only records ranges of ASCII bytes, so this is never lossy for
/// the buffer the head was parsed from.
fn text<'b>(buf: &'b [u8], r: &Range<usize>) -> &'b str {
    buf.get(r.clone())
        .and_then(|b| std::str::from_utf8(b).ok())
        .unwrap_or("")
}

impl RequestHead {
    /// Resets every field, keeping the header vector's capacity.
    fn clear(&mut self) {
        self.method = Method::Other;
        self.method_range = 0..0;
        self.target = 0..0;
        self.minor_version = 1;
        self.headers.clear();
        self.body = BodyFraming::None;
        self.keep_alive = false;
        self.expect_continue = false;
        self.own_fields = false;
    }

    /// Whether a field named `x-corvid-…` (any case) is present: corvid's own fields, which
    /// only members of its fleet send. `false` means [`RequestHead::header`] finds none.
    pub fn has_own_fields(&self) -> bool {
        self.own_fields
    }

    pub fn method(&self) -> Method {
        self.method
    }

    /// The method token as sent (useful for `Method::Other`).
    pub fn method_str<'b>(&self, buf: &'b [u8]) -> &'b str {
        text(buf, &self.method_range)
    }

    /// The raw request-target (not decoded, not normalised).
    pub fn target<'b>(&self, buf: &'b [u8]) -> &'b str {
        text(buf, &self.target)
    }

    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub fn minor_version(&self) -> u8 {
        self.minor_version
    }

    /// The value of the first field named `name` (ASCII case-insensitive), trimmed of OWS.
    #[inline]
    pub fn header<'b>(&self, buf: &'b [u8], name: &str) -> Option<&'b [u8]> {
        self.headers
            .iter()
            .find(|(n, _)| {
                buf.get(n.clone())
                    .is_some_and(|n| n.eq_ignore_ascii_case(name.as_bytes()))
            })
            .and_then(|(_, v)| buf.get(v.clone()))
    }

    /// Every field line, in order, as (name as sent, value).
    pub fn headers<'b>(
        &self,
        buf: &'b [u8],
    ) -> impl Iterator<Item = (&'b str, &'b [u8])> + use<'_, 'b> {
        self.headers
            .iter()
            .map(move |(n, v)| (text(buf, n), buf.get(v.clone()).unwrap_or(b"")))
    }

    /// Number of header field lines.
    pub fn header_count(&self) -> usize {
        self.headers.len()
    }

    pub fn body(&self) -> BodyFraming {
        self.body
    }

    /// Whether the connection may carry another request after this one.
    pub fn keep_alive(&self) -> bool {
        self.keep_alive
    }

    /// `Expect: 100-continue` on an HTTP/1.1 request.
    pub fn expect_continue(&self) -> bool {
        self.expect_continue
    }
}

fn bad(msg: &'static str) -> Error {
    Error::client(Kind::BadRequest, msg)
}

fn field_error(e: FieldError) -> Error {
    match e {
        FieldError::Invalid(m) => Error::client(Kind::BadRequest, m),
        FieldError::Unsupported(m) => Error::client(Kind::NotImplemented, m),
    }
}

/// Parses one request head from the start of `buf`.
///
/// `Ok(Some(n))`: the head is complete and `head` describes it; `n` bytes were consumed (the
/// body, if any, follows). `Ok(None)`: more bytes are needed (`head` is unspecified). `Err`: the
/// request is malformed or over a limit; the caller answers `err.status()` and closes.
pub fn parse_request(
    buf: &[u8],
    limits: &Limits,
    head: &mut RequestHead,
) -> Result<Option<usize>, Error> {
    head.clear();
    let max_headers = limits.max_headers.min(MAX_HEADERS_CAP);

    // Leading empty lines (CRLF only) are skipped; they count toward the request-line limit.
    let mut start = 0;
    while let [b'\r', b'\n', ..] = &buf[start..] {
        start += 2;
    }

    let Some(rel) = memchr::memchr(b'\n', &buf[start..]) else {
        // A trailing CR may be the start of the CRLF: do not count it yet, so that the verdict
        // on a prefix agrees with the verdict on the whole line.
        let have = buf.len() - usize::from(buf.last() == Some(&b'\r'));
        if have > limits.max_request_line {
            return Err(Error::client(Kind::UriTooLong, "request line too long"));
        }
        early_check(buf, max_headers)?;
        return Ok(None);
    };
    let line_lf = start + rel;
    if line_lf == start || buf[line_lf - 1] != b'\r' {
        return Err(bad("bare LF in request line"));
    }
    if line_lf - 1 > limits.max_request_line {
        return Err(Error::client(Kind::UriTooLong, "request line too long"));
    }

    let hdr_start = line_lf + 1;
    let scan = headers::scan_lines(buf, hdr_start, limits.max_header_bytes).map_err(bad)?;
    if scan.lines > max_headers {
        return Err(Error::client(
            Kind::HeaderFieldsTooLarge,
            "too many header fields",
        ));
    }
    let Some(end) = scan.end else {
        if buf.len() - hdr_start > limits.max_header_bytes {
            return Err(Error::client(
                Kind::HeaderFieldsTooLarge,
                "header section too large",
            ));
        }
        early_check(buf, max_headers)?;
        return Ok(None);
    };
    if end - hdr_start > limits.max_header_bytes {
        return Err(Error::client(
            Kind::HeaderFieldsTooLarge,
            "header section too large",
        ));
    }

    let head_bytes = &buf[..end];
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS_CAP];
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(head_bytes, &mut slots[..max_headers]) {
        Ok(httparse::Status::Complete(n)) if n == end => {}
        // Our scanner found the end of the head, so httparse must agree; if not, the head is
        // something we do not understand and we refuse it rather than guess.
        Ok(_) => return Err(bad("malformed request head")),
        Err(e) => return Err(map_httparse(e, &buf[start..line_lf - 1])),
    }

    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(bad("malformed request line"));
    };
    if !target.is_ascii() {
        return Err(bad("non-ASCII byte in request-target"));
    }
    let method_at = headers::offset_in(head_bytes, method.as_bytes());
    head.method = Method::from_bytes(method.as_bytes());
    head.method_range = method_at..method_at + method.len();
    let target_at = headers::offset_in(head_bytes, target.as_bytes());
    head.target = target_at..target_at + target.len();
    head.minor_version = version;
    for h in req.headers.iter() {
        let n = headers::offset_in(head_bytes, h.name.as_bytes());
        let v = headers::offset_in(head_bytes, h.value);
        head.headers
            .push((n..n + h.name.len(), v..v + h.value.len()));
    }

    apply_framing(buf, head)?;
    Ok(Some(end))
}

/// Runs httparse over an incomplete head so that garbage (a TLS handshake, a binary protocol)
/// is refused at once instead of after the limits fill up or the read times out.
fn early_check(buf: &[u8], max_headers: usize) -> Result<(), Error> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS_CAP];
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(buf, &mut slots[..max_headers]) {
        Ok(_) => Ok(()),
        Err(e) => {
            let line = buf.trim_ascii_start();
            let line_end = memchr::memchr2(b'\r', b'\n', line).unwrap_or(line.len());
            Err(map_httparse(e, &line[..line_end]))
        }
    }
}

/// The status an httparse error earns. `line` is the (possibly partial) request line, used to
/// tell an unsupported version (505) from a malformed one (400).
fn map_httparse(e: httparse::Error, line: &[u8]) -> Error {
    match e {
        httparse::Error::Version => {
            let version = line.rsplit(|&b| b == b' ').next().unwrap_or(b"");
            if version.len() > 5 && version.starts_with(b"HTTP/") && version[5].is_ascii_digit() {
                Error::client(Kind::VersionNotSupported, "HTTP version not supported")
            } else {
                bad("malformed HTTP version")
            }
        }
        httparse::Error::TooManyHeaders => {
            Error::client(Kind::HeaderFieldsTooLarge, "too many header fields")
        }
        httparse::Error::HeaderName => {
            bad("invalid header field name (or whitespace before colon, or obs-fold)")
        }
        httparse::Error::HeaderValue => bad("invalid byte in header field value"),
        httparse::Error::NewLine => bad("invalid line ending in request head"),
        httparse::Error::Token => bad("malformed method or request-target"),
        _ => bad("malformed request head"),
    }
}

/// Bytes allowed in a Host value: `uri-host [ ":" port ]` (RFC 3986 reg-name, IP-literal,
/// IPv4address) — unreserved, pct-encoded, sub-delims, ':' and the IP-literal brackets.
fn is_host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'%'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'['
                | b']'
        )
}

/// Applies RFC 9112 framing rules to the fields `parse_request` recorded.
/// The prefix of corvid's own field names ([`RequestHead::has_own_fields`]).
const OWN_PREFIX: &[u8] = b"x-corvid-";

fn apply_framing(buf: &[u8], head: &mut RequestHead) -> Result<(), Error> {
    let mut hosts = 0usize;
    let mut content_length: Option<u64> = None;
    let mut te = TransferEncoding::default();
    let mut close = false;
    let mut keep_alive_token = false;
    let mut expect_continue = false;
    let mut own_fields = false;

    for (n, v) in &head.headers {
        let name = &buf[n.clone()];
        let value = &buf[v.clone()];
        // Dispatch on length first: almost every field is none of these.
        match name.len() {
            4 if name.eq_ignore_ascii_case(b"host") => {
                hosts += 1;
                if !value.iter().all(|&b| is_host_byte(b)) {
                    return Err(bad("invalid Host"));
                }
            }
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                headers::fold_content_length(&mut content_length, value).map_err(field_error)?;
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                te.fold(value).map_err(field_error)?;
            }
            10 if name.eq_ignore_ascii_case(b"connection") => {
                close |= headers::has_token(value, "close");
                keep_alive_token |= headers::has_token(value, "keep-alive");
            }
            6 if name.eq_ignore_ascii_case(b"expect") => {
                expect_continue |= value.eq_ignore_ascii_case(b"100-continue");
            }
            n if n > OWN_PREFIX.len() && name[0] | 0x20 == b'x' => {
                own_fields |= name[..OWN_PREFIX.len()].eq_ignore_ascii_case(OWN_PREFIX);
            }
            _ => {}
        }
    }
    head.own_fields = own_fields;

    let http11 = head.minor_version == 1;
    if hosts > 1 {
        return Err(bad("more than one Host"));
    }
    if http11 && hosts == 0 {
        return Err(bad("HTTP/1.1 request without Host"));
    }
    head.body = if te.present {
        if !http11 {
            return Err(bad("Transfer-Encoding in an HTTP/1.0 request"));
        }
        if content_length.is_some() {
            return Err(bad("both Content-Length and Transfer-Encoding"));
        }
        te.request_verdict().map_err(field_error)?;
        BodyFraming::Chunked
    } else {
        match content_length {
            Some(n) => BodyFraming::Length(n),
            None => BodyFraming::None,
        }
    };
    head.keep_alive = if http11 {
        !close
    } else {
        keep_alive_token && !close
    };
    head.expect_continue = http11 && expect_continue;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(buf: &[u8]) -> (Result<Option<usize>, Error>, RequestHead) {
        let mut head = RequestHead::default();
        let r = parse_request(buf, &Limits::default(), &mut head);
        (r, head)
    }

    fn status_of(buf: &[u8], limits: &Limits) -> u16 {
        let mut head = RequestHead::default();
        match parse_request(buf, limits, &mut head) {
            Err(e) => e.status(),
            Ok(Some(_)) => 200,
            Ok(None) => 0,
        }
    }

    const VALID: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /bucket/key?x=1 HTTP/1.1\r\nHost: s3.example.com:9000\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n",
        b"HEAD /k HTTP/1.0\r\n\r\n",
        b"PUT /b/k HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello",
        b"POST /b?uploads HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"\r\nGET /x HTTP/1.1\r\nhost: h\r\nX-Empty:\r\nConnection: close\r\n\r\n",
        b"DELETE /b/k HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 3\r\nContent-Length: 3\r\n\r\nabc",
    ];

    /// A summary of a parse that can be compared across buffers.
    fn summary(buf: &[u8], head: &RequestHead) -> String {
        let fields: Vec<(&str, &[u8])> = head.headers(buf).collect();
        format!(
            "{} {} 1.{} {fields:?} {:?} ka={} ec={} own={}",
            head.method_str(buf),
            head.target(buf),
            head.minor_version(),
            head.body(),
            head.keep_alive(),
            head.expect_continue(),
            head.has_own_fields(),
        )
    }

    #[test]
    fn every_split_gives_none_then_the_same_head() {
        for &req in VALID {
            let (full, head) = parse(req);
            let n = full.unwrap().expect("complete");
            let want = summary(req, &head);
            for k in 0..n {
                let (r, _) = parse(&req[..k]);
                assert!(
                    matches!(r, Ok(None)),
                    "prefix {k} of {:?}: {r:?}",
                    String::from_utf8_lossy(req)
                );
            }
            for k in n..=req.len() {
                let (r, head) = parse(&req[..k]);
                assert_eq!(r.unwrap(), Some(n));
                assert_eq!(summary(req, &head), want);
            }
        }
    }

    #[test]
    fn fields_and_framing() {
        let buf = VALID[3];
        let (r, h) = parse(buf);
        assert_eq!(r.unwrap(), Some(buf.len() - 5));
        assert_eq!(h.method(), Method::Put);
        assert_eq!(h.method_str(buf), "PUT");
        assert_eq!(h.target(buf), "/b/k");
        assert_eq!(h.minor_version(), 1);
        assert_eq!(h.header(buf, "content-LENGTH"), Some(&b"5"[..]));
        assert_eq!(h.header(buf, "nope"), None);
        assert_eq!(h.body(), BodyFraming::Length(5));
        assert!(h.keep_alive());
        assert!(h.expect_continue());

        let (_, h) = parse(VALID[2]);
        assert_eq!(
            (h.method(), h.minor_version(), h.keep_alive(), h.body()),
            (Method::Head, 0, false, BodyFraming::None)
        );
        let (_, h) = parse(VALID[4]);
        assert_eq!(h.body(), BodyFraming::Chunked);
        let buf = VALID[5];
        let (r, h) = parse(buf);
        assert_eq!(r.unwrap(), Some(buf.len()));
        assert!(!h.keep_alive());
        assert_eq!(h.target(buf), "/x");
        assert_eq!(h.header(buf, "x-empty"), Some(&b""[..]));
        let (_, h) = parse(VALID[6]);
        assert_eq!(h.body(), BodyFraming::Length(3));
        let (_, h) = parse(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(h.keep_alive());
        let (_, h) = parse(b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n");
        assert!(!h.keep_alive());
        // Expect is ignored in HTTP/1.0; other expectations are ignored.
        let (_, h) = parse(b"PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n");
        assert!(!h.expect_continue());
        let (r, h) = parse(b"PUT / HTTP/1.1\r\nHost: h\r\nExpect: something-else\r\n\r\n");
        assert!(r.unwrap().is_some() && !h.expect_continue());
        // GET with a body: legal framing, reported.
        let (_, h) = parse(b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nbody");
        assert_eq!(h.body(), BodyFraming::Length(4));
        assert!(is_idempotent_read(Method::Get) && !is_idempotent_read(Method::Put));
        assert_eq!(Method::from_bytes(b"get"), Method::Other);
    }

    #[test]
    fn own_fields_are_noticed_whatever_their_length_or_case() {
        let own = |fields: &str| {
            let req = format!("GET /b/k HTTP/1.1\r\nHost: h\r\n{fields}\r\n");
            let (r, h) = parse(req.as_bytes());
            assert!(r.unwrap().is_some(), "{fields:?}");
            h.has_own_fields()
        };
        assert!(!own(""));
        assert!(!own("User-Agent: curl\r\nAccept: */*\r\nX-Amz-Date: 1\r\n"));
        assert!(!own(
            "x-corvidpeer: 1\r\nx-corvid: 1\r\nX-Forwarded-For: a\r\n"
        ));
        assert!(own("x-corvid-peer: a 1 ff\r\n"));
        assert!(own("Accept: */*\r\nX-CORVID-WANT: entry\r\n"));
        // The same lengths as fields the framing looks at (connection, content-length,
        // transfer-encoding) must not hide one.
        assert!(own("x-corvid-a: 1\r\n"));
        assert!(own("x-corvid-slice: 1 2 3\r\n"));
        assert!(own("X-Corvid-Abcdefgh: 1\r\n"));
        // Cleared by the next parse into the same head.
        let mut head = RequestHead::default();
        let limits = Limits::default();
        parse_request(
            b"GET / HTTP/1.1\r\nHost: h\r\nx-corvid-peer: x\r\n\r\n",
            &limits,
            &mut head,
        )
        .unwrap();
        assert!(head.has_own_fields());
        parse_request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", &limits, &mut head).unwrap();
        assert!(!head.has_own_fields());
    }

    #[test]
    fn pipelined_requests_parse_one_after_another() {
        let a = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n".as_slice();
        let b = b"PUT /b HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nxyz".as_slice();
        let c = b"HEAD /c HTTP/1.1\r\nHost: h\r\n\r\n".as_slice();
        let all = [a, b, c].concat();
        let mut head = RequestHead::default();
        let lim = Limits::default();
        let mut at = 0;
        let mut seen = vec![];
        while at < all.len() {
            let buf = &all[at..];
            let n = parse_request(buf, &lim, &mut head).unwrap().unwrap();
            seen.push((head.target(buf).to_owned(), n));
            at += n;
            if let BodyFraming::Length(len) = head.body() {
                at += len as usize;
            }
        }
        assert_eq!(at, all.len());
        assert_eq!(
            seen,
            vec![
                ("/a".into(), a.len()),
                ("/b".into(), b.len() - 3),
                ("/c".into(), c.len())
            ]
        );
    }

    #[test]
    fn warm_head_does_not_reallocate() {
        let mut head = RequestHead::default();
        let lim = Limits::default();
        let buf = VALID[1];
        parse_request(buf, &lim, &mut head).unwrap();
        let cap = head.headers.capacity();
        let ptr = head.headers.as_ptr();
        for _ in 0..10 {
            parse_request(buf, &lim, &mut head).unwrap();
        }
        assert_eq!((head.headers.capacity(), head.headers.as_ptr()), (cap, ptr));
    }

    /// One row per rule: (request, expected status). 0 means "need more bytes".
    #[test]
    fn hostile_requests_table() {
        let long_target = format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", "a".repeat(9000));
        let long_partial = format!("GET /{}", "a".repeat(9000));
        let many_headers = format!(
            "GET / HTTP/1.1\r\nHost: h\r\n{}\r\n",
            "X: y\r\n".repeat(100)
        );
        let many_partial = format!("GET / HTTP/1.1\r\nHost: h\r\n{}", "X: y\r\n".repeat(101));
        let big_header = format!(
            "GET / HTTP/1.1\r\nHost: h\r\nX: {}\r\n\r\n",
            "v".repeat(17000)
        );
        let big_partial = format!("GET / HTTP/1.1\r\nHost: h\r\nX: {}", "v".repeat(17000));
        let blank_lines = "\r\n".repeat(5000);
        let rows: Vec<(&str, &[u8], u16)> = vec![
            ("request line > limit", long_target.as_bytes(), 414),
            ("incomplete request line > limit", long_partial.as_bytes(), 414),
            ("endless leading CRLFs", blank_lines.as_bytes(), 414),
            ("too many headers", many_headers.as_bytes(), 431),
            ("too many headers, incomplete", many_partial.as_bytes(), 431),
            ("header section > limit", big_header.as_bytes(), 431),
            ("header section > limit, incomplete", big_partial.as_bytes(), 431),
            ("HTTP/2.0", b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505),
            ("HTTP/1.2", b"GET / HTTP/1.2\r\nHost: h\r\n\r\n", 505),
            ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
            ("garbage version", b"GET / FOO/1.1\r\nHost: h\r\n\r\n", 400),
            // Regression (found by proptest): early check on a partial line with leading space.
            ("leading space, incomplete", b" \x00", 400),
            ("TLS handshake", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),
            ("CL + TE", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("differing CL lines", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400),
            ("differing CL list", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 6\r\n\r\n", 400),
            ("CL with sign", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\n", 400),
            ("CL negative", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", 400),
            ("CL non-digit", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5a\r\n\r\n", 400),
            ("CL empty", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length:\r\n\r\n", 400),
            ("CL overflow", b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 18446744073709551616\r\n\r\n", 400),
            ("TE gzip only", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
            ("TE chunked, gzip", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
            ("TE gzip, chunked", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
            ("TE unknown, chunked over 2 lines", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: foo\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
            ("TE chunked twice", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("TE empty element", b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: , chunked\r\n\r\n", 400),
            ("TE in HTTP/1.0", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("obs-fold", b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n  b\r\n\r\n", 400),
            ("obs-fold tab", b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n\tb\r\n\r\n", 400),
            ("space before colon", b"GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400),
            ("tab before colon", b"GET / HTTP/1.1\r\nHost\t: h\r\n\r\n", 400),
            ("NUL in value", b"GET / HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n", 400),
            ("bare CR in value", b"GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n", 400),
            ("bare LF ends a field line", b"GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n", 400),
            ("bare LF ends the request line", b"GET / HTTP/1.1\nHost: h\r\n\r\n", 400),
            ("bare LF ends the head", b"GET / HTTP/1.1\r\nHost: h\r\n\n", 400),
            ("bare LF before request line", b"\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
            ("DEL in value", b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x7fb\r\n\r\n", 400),
            ("invalid name char", b"GET / HTTP/1.1\r\nHost: h\r\nX(y): 1\r\n\r\n", 400),
            ("empty name", b"GET / HTTP/1.1\r\nHost: h\r\n: 1\r\n\r\n", 400),
            ("missing Host in 1.1", b"GET / HTTP/1.1\r\nX: y\r\n\r\n", 400),
            ("duplicate Host", b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400),
            ("duplicate Host in 1.0", b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            ("Host with space", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
            ("Host with userinfo", b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 400),
            ("empty target", b"GET  HTTP/1.1\r\nHost: h\r\n\r\n", 400),
            ("two spaces", b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
            ("control in target", b"GET /a\x01b HTTP/1.1\r\nHost: h\r\n\r\n", 400),
            ("non-ASCII target", "GET /é HTTP/1.1\r\nHost: h\r\n\r\n".as_bytes(), 400),
            ("invalid method char", b"G(T / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
            ("missing version", b"GET /\r\nHost: h\r\n\r\n", 400),
            // Accepted, for contrast:
            ("HTTP/1.0 without Host", b"GET / HTTP/1.0\r\n\r\n", 200),
            ("identical CL list", b"PUT / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\n", 200),
            ("leading CRLF ignored", b"\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", 200),
            ("empty Host", b"GET / HTTP/1.1\r\nHost:\r\n\r\n", 200),
            ("IPv6 Host", b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", 200),
        ];
        let lim = Limits::default();
        for (what, req, want) in rows {
            assert_eq!(status_of(req, &lim), want, "{what}");
        }
    }

    #[test]
    fn limits_are_exact() {
        let req = b"GET /abc HTTP/1.1\r\nHost: h\r\n\r\n"; // line 17 bytes, section 11 bytes, 1 field
        let lim = |l, b, n| Limits {
            max_request_line: l,
            max_header_bytes: b,
            max_headers: n,
        };
        assert_eq!(status_of(req, &lim(17, 11, 1)), 200);
        assert_eq!(status_of(req, &lim(16, 11, 1)), 414);
        assert_eq!(status_of(req, &lim(17, 10, 1)), 431);
        assert_eq!(status_of(req, &lim(17, 11, 0)), 431);
        // max_headers above the hard cap is clamped, not an out-of-bounds slice.
        assert_eq!(status_of(req, &lim(17, 11, 10_000)), 200);
        // A partial line exactly at the limit, ending in the CR of its CRLF, still waits.
        assert_eq!(status_of(&req[..18], &lim(17, 11, 1)), 0);
        assert_eq!(status_of(&req[..18], &lim(16, 11, 1)), 414);
    }

    fn token() -> impl Strategy<Value = String> {
        "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,20}".prop_filter("no framing fields", |s| {
            let l = s.to_ascii_lowercase();
            !matches!(
                l.as_str(),
                "host" | "content-length" | "transfer-encoding" | "connection" | "expect"
            )
        })
    }

    proptest! {
        #[test]
        fn random_valid_requests_round_trip(
            method in prop::sample::select(vec!["GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "PROPFIND"]),
            target in "/[A-Za-z0-9/._~%?&=-]{0,60}",
            minor in 0u8..=1,
            fields in prop::collection::vec(
                (prop_oneof![4 => token(), 1 => "[xX]-[cC][oO]rvid-?[a-z]{0,6}"], "[ -~]{0,40}"),
                0..30,
            ),
            body in prop::option::of(0u64..1_000_000),
            leading_crlf in any::<bool>(),
        ) {
            let mut s = String::new();
            if leading_crlf { s.push_str("\r\n"); }
            s.push_str(&format!("{method} {target} HTTP/1.{minor}\r\nHost: example.com\r\n"));
            for (n, v) in &fields {
                s.push_str(&format!("{n}: {v}\r\n"));
            }
            if let Some(len) = body { s.push_str(&format!("Content-Length: {len}\r\n")); }
            s.push_str("\r\n");
            s.push_str("trailing body bytes");
            let buf = s.as_bytes();
            let mut head = RequestHead::default();
            let n = parse_request(buf, &Limits::default(), &mut head).unwrap().unwrap();
            prop_assert_eq!(n, s.len() - "trailing body bytes".len());
            prop_assert_eq!(head.method_str(buf), method);
            prop_assert_eq!(head.method(), Method::from_bytes(method.as_bytes()));
            prop_assert_eq!(head.target(buf), target.as_str());
            prop_assert_eq!(head.minor_version(), minor);
            let got: Vec<(String, String)> = head.headers(buf)
                .map(|(n, v)| (n.to_owned(), String::from_utf8(v.to_vec()).unwrap())).collect();
            prop_assert_eq!(got.len(), fields.len() + 1 + usize::from(body.is_some()));
            for ((gn, gv), (n, v)) in got[1..].iter().zip(&fields) {
                prop_assert_eq!(gn, n);
                prop_assert_eq!(gv.as_str(), v.trim_matches(|c| c == ' ' || c == '\t'));
            }
            prop_assert_eq!(head.body(), body.map_or(BodyFraming::None, BodyFraming::Length));
            prop_assert_eq!(head.keep_alive(), minor == 1);
            let own = fields.iter().any(|(n, _)| {
                n.len() > 9 && n.to_ascii_lowercase().starts_with("x-corvid-")
            });
            prop_assert_eq!(head.has_own_fields(), own);
        }

        #[test]
        fn arbitrary_bytes_never_panic(buf in prop::collection::vec(any::<u8>(), 0..300)) {
            let mut head = RequestHead::default();
            if let Ok(Some(n)) = parse_request(&buf, &Limits::default(), &mut head) {
                prop_assert!(n <= buf.len());
            }
        }
    }
}

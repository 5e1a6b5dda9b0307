//! Response heads: writing them downstream, parsing them from upstream.
//!
//! This module owns both directions of a response head. Writing (the hot path: every response we
//! serve, hit or miss) appends into a caller-owned, reused `Vec<u8>` and allocates nothing else;
//! the `Date` value is formatted at most once per second by [`DateCache`]. Parsing an origin's
//! response head (the miss path) returns an owned [`UpstreamHead`], because the head outlives
//! the read buffer (it is stored with the cached object); it is as strict as the request parser
//! and every failure is `Kind::BadGateway` on the upstream side.
//!
//! # Decisions for upstream responses
//!
//! * CRLF only; a bare LF, obs-fold, whitespace before a colon, or control bytes are errors.
//!   Leading empty lines before the status line are errors (only servers must tolerate those).
//! * Field values must be valid UTF-8 (visible ASCII in practice); names are lowercased.
//! * Interim 1xx responses (100 Continue, 102, 103) are consumed and skipped; `101 Switching
//!   Protocols` is an error, since we never ask for an upgrade.
//! * Framing follows RFC 9112 §6.3: a response to HEAD, any 1xx, 204 and 304 have no body
//!   whatever their fields say. `Transfer-Encoding` must be exactly `chunked` (we cannot undo
//!   other codings, and "read until close" on a gzip-coded stream would store garbage), and is
//!   an error in an HTTP/1.0 response. With both `Transfer-Encoding` and `Content-Length`,
//!   Transfer-Encoding wins and the connection is not reused (`keep_alive = false`), as §6.3
//!   rule 3 says. Several identical Content-Length values are one value; differing or malformed
//!   ones are errors. With neither, the body runs until the origin closes (`UntilClose`, never
//!   keep-alive).
//! * Keep-alive: HTTP/1.1 unless `Connection: close`; HTTP/1.0 only with `keep-alive`.
//! * `max_head_bytes` bounds everything consumed, interim responses included.
//! * Unknown status codes get an empty reason phrase (`HTTP/1.1 599 \r\n` is valid).

use std::fmt::Write as _;
use std::mem::MaybeUninit;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::headers::{self, FieldError, TransferEncoding};
use super::request::MAX_HEADERS_CAP;
use crate::error::{Error, Kind};

/// The reason phrase we send for `status` (RFC 9110 §15); empty for codes we do not name.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// Appends `HTTP/1.1 <status> <reason>\r\n`. `status` must be three digits (100..=999).
pub fn write_status_line(out: &mut Vec<u8>, status: u16) {
    debug_assert!(
        (100..=999).contains(&status),
        "status {status} is not three digits"
    );
    let status = status.clamp(100, 999);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(&[
        b'0' + (status / 100) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
        b' ',
    ]);
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends `name: value\r\n`. The caller guarantees a token name and a value without CR/LF
/// (checked in debug builds): header injection is prevented where values are built.
/// Inlined: a hit writes five to seven lines, each a few copies (callgrind, issue 19).
#[inline]
pub fn write_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    debug_assert!(
        !name.is_empty() && name.bytes().all(headers::is_tchar),
        "bad header name {name:?}"
    );
    debug_assert!(
        !value.iter().any(|&b| b == b'\r' || b == b'\n'),
        "CR/LF in header value"
    );
    out.reserve(name.len() + value.len() + 4);
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends `name: <decimal value>\r\n`, formatting on the stack.
pub fn write_header_u64(out: &mut Vec<u8>, name: &str, value: u64) {
    let mut digits = [0u8; 20]; // u64::MAX has 20 decimal digits
    let mut at = digits.len();
    let mut v = value;
    loop {
        at -= 1;
        digits[at] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    write_header(out, name, &digits[at..]);
}

/// Appends the empty line that ends a head.
pub fn end_head(out: &mut Vec<u8>) {
    out.extend_from_slice(b"\r\n");
}

/// Length of an IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`.
const IMF_FIXDATE_LEN: usize = 29;
/// The last second httpdate can format (9999-12-31T23:59:59Z).
const MAX_HTTP_DATE_SECS: u64 = 253_402_300_799;

/// The `Date` header value, formatted once per second (each core keeps its own).
#[derive(Debug, Clone)]
pub struct DateCache {
    /// Second the cached text is for; `u64::MAX` means "nothing cached yet".
    secs: u64,
    text: [u8; IMF_FIXDATE_LEN],
}

impl Default for DateCache {
    fn default() -> Self {
        DateCache {
            secs: u64::MAX,
            text: [b' '; IMF_FIXDATE_LEN],
        }
    }
}

/// A fixed buffer that `write!` can fill without allocating.
struct DateBuf<'a> {
    buf: &'a mut [u8; IMF_FIXDATE_LEN],
    len: usize,
}

impl std::fmt::Write for DateBuf<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        self.buf
            .get_mut(self.len..end)
            .ok_or(std::fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

impl DateCache {
    /// The IMF-fixdate for `now` (times before 1970 or after 9999 are clamped, not a panic).
    pub fn get(&mut self, now: SystemTime) -> &[u8] {
        let secs = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .min(MAX_HTTP_DATE_SECS);
        if secs != self.secs {
            let date = httpdate::HttpDate::from(UNIX_EPOCH + Duration::from_secs(secs));
            let mut w = DateBuf {
                buf: &mut self.text,
                len: 0,
            };
            let ok = write!(w, "{date}").is_ok() && w.len == IMF_FIXDATE_LEN;
            debug_assert!(ok, "IMF-fixdate is always 29 bytes");
            self.secs = secs;
        }
        &self.text
    }
}

/// How an upstream response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// No body (HEAD, 1xx, 204, 304).
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked; decode with [`super::chunked::ChunkedDecoder::upstream`].
    Chunked,
    /// Until the origin closes the connection.
    UntilClose,
}

/// An origin's final response head, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamHead {
    pub status: u16,
    /// (lowercase name, value), in order of appearance.
    pub headers: Vec<(String, String)>,
    pub framing: ResponseFraming,
    /// Whether the connection may be returned to the pool after the body.
    pub keep_alive: bool,
    /// When the request this answers was sent (unix ms by the cache's clock; 0 until the
    /// sender sets it), for the response delay in its age (RFC 9111 §4.2.3).
    pub sent_at_ms: u64,
    /// From sending the request to this head (set by the sender), for the access log.
    pub took: std::time::Duration,
    /// The fleet member that answered instead of the origin (`crate::fleet`), by name; set by
    /// the peer client.
    pub peer: Option<std::sync::Arc<str>>,
    /// The request named one version of the object (`versionId`), whose bytes never change:
    /// its answer is stored as immutable (`object::freshness::of_version`). Set by the sender.
    pub names_version: bool,
}

impl UpstreamHead {
    /// The first value of the field `lowercase_name` (which must be given in lowercase).
    pub fn header(&self, lowercase_name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == lowercase_name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of the field `lowercase_name`, one per field line, in order.
    pub fn header_values<'a>(&'a self, lowercase_name: &'a str) -> impl Iterator<Item = &'a str> {
        self.headers
            .iter()
            .filter(move |(n, _)| n == lowercase_name)
            .map(|(_, v)| v.as_str())
    }
}

fn bad_gateway(msg: &'static str) -> Error {
    Error::upstream(Kind::BadGateway, msg)
}

fn field_error(e: FieldError) -> Error {
    match e {
        FieldError::Invalid(m) | FieldError::Unsupported(m) => bad_gateway(m),
    }
}

/// Parses the origin's response head at the start of `buf`, skipping interim 1xx responses.
///
/// `Ok(Some((head, n)))`: `n` bytes consumed (interim responses included); the body follows.
/// `Ok(None)`: more bytes needed. `Err`: `Kind::BadGateway`; the connection must be dropped.
/// `request_was_head`: a response to HEAD has no body whatever its Content-Length says.
pub fn parse_response(
    buf: &[u8],
    request_was_head: bool,
    max_head_bytes: usize,
) -> Result<Option<(UpstreamHead, usize)>, Error> {
    let too_large = || bad_gateway("response head too large");
    let mut at = 0;
    loop {
        let rest = &buf[at..];
        let Some(line_lf) = memchr::memchr(b'\n', rest) else {
            if buf.len() > max_head_bytes {
                return Err(too_large());
            }
            return Ok(None);
        };
        if line_lf < 2 || rest[line_lf - 1] != b'\r' {
            return Err(bad_gateway("malformed status line"));
        }
        let budget = max_head_bytes.saturating_sub(at);
        let scan = headers::scan_lines(rest, line_lf + 1, budget).map_err(bad_gateway)?;
        if scan.lines > MAX_HEADERS_CAP {
            return Err(bad_gateway("too many header fields in response"));
        }
        let Some(end) = scan.end else {
            if buf.len() > max_head_bytes {
                return Err(too_large());
            }
            return Ok(None);
        };
        if at + end > max_head_bytes {
            return Err(too_large());
        }

        let head_bytes = &rest[..end];
        let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS_CAP];
        let mut resp = httparse::Response::new(&mut []);
        match httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut resp, head_bytes, &mut slots)
        {
            Ok(httparse::Status::Complete(n)) if n == end => {}
            Ok(_) => return Err(bad_gateway("malformed response head")),
            Err(httparse::Error::Version) => {
                return Err(bad_gateway("unsupported HTTP version in response"))
            }
            Err(_) => return Err(bad_gateway("malformed response head")),
        }
        let (Some(status), Some(version)) = (resp.code, resp.version) else {
            return Err(bad_gateway("malformed status line"));
        };
        if !(100..=999).contains(&status) {
            return Err(bad_gateway("invalid status code"));
        }
        if (100..200).contains(&status) {
            if status == 101 {
                return Err(bad_gateway("unexpected 101 Switching Protocols"));
            }
            at += end;
            continue;
        }

        let mut fields = Vec::with_capacity(resp.headers.len());
        let mut content_length = None;
        let mut te = TransferEncoding::default();
        let mut close = false;
        let mut keep_alive_token = false;
        for h in resp.headers.iter() {
            let name = h.name.to_ascii_lowercase();
            let value = std::str::from_utf8(h.value)
                .map_err(|_| bad_gateway("response header value is not UTF-8"))?;
            match name.as_str() {
                "content-length" => headers::fold_content_length(&mut content_length, h.value)
                    .map_err(field_error)?,
                "transfer-encoding" => te.fold(h.value).map_err(field_error)?,
                "connection" => {
                    close |= headers::has_token(h.value, "close");
                    keep_alive_token |= headers::has_token(h.value, "keep-alive");
                }
                _ => {}
            }
            fields.push((name, value.to_owned()));
        }

        let http11 = version == 1;
        let mut keep_alive = if http11 {
            !close
        } else {
            keep_alive_token && !close
        };
        let framing = if request_was_head || status == 204 || status == 304 {
            ResponseFraming::None
        } else if te.present {
            if !http11 {
                return Err(bad_gateway("Transfer-Encoding in an HTTP/1.0 response"));
            }
            if !te.is_plain_chunked() {
                return Err(bad_gateway("unsupported transfer coding in response"));
            }
            if content_length.is_some() {
                keep_alive = false;
            }
            ResponseFraming::Chunked
        } else if let Some(n) = content_length {
            ResponseFraming::Length(n)
        } else {
            keep_alive = false;
            ResponseFraming::UntilClose
        };
        let head = UpstreamHead {
            status,
            headers: fields,
            framing,
            keep_alive,
            sent_at_ms: 0,
            took: std::time::Duration::ZERO,
            peer: None,
            names_version: false,
        };
        return Ok(Some((head, at + end)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_head() {
        let mut out = Vec::new();
        write_status_line(&mut out, 206);
        write_header(&mut out, "Content-Type", b"application/octet-stream");
        write_header_u64(&mut out, "Content-Length", 0);
        write_header_u64(&mut out, "X-Max", u64::MAX);
        write_header_u64(&mut out, "X-N", 1234567890);
        end_head(&mut out);
        assert_eq!(
            out,
            b"HTTP/1.1 206 Partial Content\r\nContent-Type: application/octet-stream\r\nContent-Length: 0\r\nX-Max: 18446744073709551615\r\nX-N: 1234567890\r\n\r\n"
        );
        out.clear();
        write_status_line(&mut out, 599);
        assert_eq!(out, b"HTTP/1.1 599 \r\n");
        for s in [200, 304, 404, 413, 414, 431, 501, 502, 505] {
            assert!(!reason(s).is_empty(), "{s}");
        }
    }

    #[test]
    fn date_cache_formats_and_caches() {
        let mut d = DateCache::default();
        let t = UNIX_EPOCH + Duration::from_secs(784111777);
        assert_eq!(d.get(t), b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(
            d.get(t + Duration::from_millis(900)),
            b"Sun, 06 Nov 1994 08:49:37 GMT"
        );
        assert_eq!(
            d.get(t + Duration::from_secs(1)),
            b"Sun, 06 Nov 1994 08:49:38 GMT"
        );
        assert_eq!(
            d.get(UNIX_EPOCH - Duration::from_secs(5)),
            b"Thu, 01 Jan 1970 00:00:00 GMT"
        );
        assert_eq!(d.get(SystemTime::now()).len(), IMF_FIXDATE_LEN);
    }

    fn parse(buf: &[u8], head: bool) -> Result<Option<(UpstreamHead, usize)>, Error> {
        parse_response(buf, head, 16 * 1024)
    }

    #[test]
    fn parses_an_s3_response() {
        let buf = b"HTTP/1.1 200 OK\r\nx-amz-request-id: ABC\r\nETag: \"abc\"\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello";
        let (h, n) = parse(buf, false).unwrap().unwrap();
        assert_eq!(n, buf.len() - 5);
        assert_eq!(h.status, 200);
        assert_eq!(h.header("etag"), Some("\"abc\""));
        assert_eq!(h.header("x-amz-request-id"), Some("ABC"));
        assert_eq!(h.framing, ResponseFraming::Length(5));
        assert!(h.keep_alive);
        for k in 0..n {
            assert!(parse(&buf[..k], false).unwrap().is_none(), "prefix {k}");
        }
    }

    #[test]
    fn framing_rules() {
        let f = |buf: &[u8], head: bool| {
            let (h, _) = parse(buf, head).unwrap().unwrap();
            (h.status, h.framing, h.keep_alive)
        };
        use ResponseFraming::*;
        assert_eq!(
            f(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", true),
            (200, None, true)
        );
        assert_eq!(
            f(
                b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n",
                false
            ),
            (204, None, true)
        );
        assert_eq!(
            f(
                b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
                false
            ),
            (304, None, true)
        );
        assert_eq!(
            f(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                false
            ),
            (200, Chunked, true)
        );
        assert_eq!(
            f(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
                false
            ),
            (200, Chunked, false)
        );
        assert_eq!(
            f(b"HTTP/1.1 200 OK\r\n\r\n", false),
            (200, UntilClose, false)
        );
        assert_eq!(
            f(b"HTTP/1.1 200 OK\r\nContent-Length: 4, 4\r\n\r\n", false),
            (200, Length(4), true)
        );
        assert_eq!(
            f(
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 4\r\n\r\n",
                false
            ),
            (200, Length(4), false)
        );
        assert_eq!(
            f(b"HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\n", false),
            (200, Length(4), false)
        );
        assert_eq!(
            f(
                b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 4\r\n\r\n",
                false
            ),
            (200, Length(4), true)
        );
    }

    #[test]
    fn interim_responses_are_skipped() {
        let buf = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n";
        let (h, n) = parse(buf, false).unwrap().unwrap();
        assert_eq!(
            (h.status, n, h.framing),
            (201, buf.len(), ResponseFraming::Length(0))
        );
        assert!(parse(&buf[..25], false).unwrap().is_none());
        assert!(parse(&buf[..40], false).unwrap().is_none());
    }

    #[test]
    fn bad_responses_are_502() {
        let big = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "v".repeat(20_000));
        let big_partial = format!("HTTP/1.1 200 OK\r\nX: {}", "v".repeat(20_000));
        let rows: Vec<(&str, &[u8])> = vec![
            (
                "differing CL",
                b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n",
            ),
            (
                "malformed CL",
                b"HTTP/1.1 200 OK\r\nContent-Length: -4\r\n\r\n",
            ),
            (
                "gzip TE",
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            ),
            (
                "TE in 1.0",
                b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            ),
            ("HTTP/2", b"HTTP/2.0 200 OK\r\n\r\n"),
            (
                "101",
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
            ),
            ("bare LF", b"HTTP/1.1 200 OK\nContent-Length: 0\n\n"),
            (
                "bare LF in headers",
                b"HTTP/1.1 200 OK\r\nContent-Length: 0\n\r\n",
            ),
            ("obs-fold", b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n"),
            ("space before colon", b"HTTP/1.1 200 OK\r\nX : a\r\n\r\n"),
            (
                "non-UTF-8 value",
                b"HTTP/1.1 200 OK\r\nX: \xff\xfe\r\nContent-Length: 0\r\n\r\n",
            ),
            ("NUL", b"HTTP/1.1 200 OK\r\nX: a\0\r\n\r\n"),
            ("bad status", b"HTTP/1.1 2x0 OK\r\n\r\n"),
            ("leading empty line", b"\r\nHTTP/1.1 200 OK\r\n\r\n"),
            ("garbage", b"<html>\r\n\r\n"),
            ("too large", big.as_bytes()),
            ("too large, incomplete", big_partial.as_bytes()),
        ];
        for (what, buf) in rows {
            let e = parse(buf, false).expect_err(what);
            assert_eq!(
                (e.status(), e.side()),
                (502, crate::Side::Upstream),
                "{what}"
            );
        }
    }
}

//! Field-value grammar shared by the request and response parsers.
//!
//! httparse tokenises a head (request/status line, field names and values) but knows nothing of
//! what the fields mean. Message framing depends on a handful of list-valued fields
//! (`Content-Length`, `Transfer-Encoding`, `Connection`), and the request and upstream-response
//! parsers must read them the same way — two readings of one message is how request smuggling
//! starts. So the grammar lives here, once, and both parsers call it; each maps the
//! [`FieldError`]s to its own side (client 400/501 or upstream 502).
//!
//! This module also owns the strict line scanner: httparse accepts a bare LF as a line ending,
//! RFC 9112 §2.2 only says a recipient *MAY* do so, and a proxy that accepts what the next hop
//! rejects (or the reverse) is a smuggling vector. We require CRLF everywhere in a head.

/// Why a framing field was refused. The callers turn this into an [`crate::Error`] of their side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldError {
    /// Malformed or contradictory (client: 400, upstream: 502).
    Invalid(&'static str),
    /// Well-formed but a transfer coding we do not implement (client: 501, upstream: 502).
    Unsupported(&'static str),
}

/// `tchar` of RFC 9110 §5.6.2.
#[inline]
pub(crate) fn is_tchar(b: u8) -> bool {
    matches!(b,
        b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`'
        | b'|' | b'~' | b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z')
}

/// Optional whitespace (RFC 9110 §5.6.3) trimmed from both ends.
#[inline]
pub(crate) fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// The elements of a comma-separated list (RFC 9110 §5.6.1), each trimmed of OWS.
/// Empty elements are yielded as empty slices; the caller decides whether to tolerate them.
#[inline]
pub(crate) fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(trim_ows)
}

/// True when the comma-separated `value` has `token` as one element (case-insensitive);
/// used for `Connection: close` / `keep-alive` and `Expect`.
pub(crate) fn has_token(value: &[u8], token: &str) -> bool {
    list_elements(value).any(|e| e.eq_ignore_ascii_case(token.as_bytes()))
}

/// Folds one `Content-Length` field line into `acc`.
///
/// RFC 9110 §8.6: a list of identical values (`5, 5`, or the same value on several lines) may be
/// accepted as that value; anything else — differing values, an empty element, a sign, a
/// non-digit, a value beyond `u64` — is an invalid message.
pub(crate) fn fold_content_length(acc: &mut Option<u64>, value: &[u8]) -> Result<(), FieldError> {
    for elem in list_elements(value) {
        let n = parse_decimal(elem).ok_or(FieldError::Invalid("malformed Content-Length"))?;
        match *acc {
            Some(prev) if prev != n => {
                return Err(FieldError::Invalid("conflicting Content-Length values"))
            }
            _ => *acc = Some(n),
        }
    }
    Ok(())
}

/// `1*DIGIT` as a `u64`; `None` when empty, not all digits, or overflowing.
pub(crate) fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// What the `Transfer-Encoding` lines of one message said, folded in order (RFC 9112 §6.1: the
/// codings of several lines concatenate, in order, as one list).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct TransferEncoding {
    /// At least one `Transfer-Encoding` line was present.
    pub present: bool,
    /// `chunked` has been seen.
    chunked_seen: bool,
    /// The last coding seen so far is `chunked`.
    chunked_last: bool,
    /// A coding other than `chunked` appeared.
    other: bool,
}

impl TransferEncoding {
    /// Folds one field line. Errors only on what is malformed regardless of position: an empty
    /// element (we do not apply §5.6.1's "ignore empty elements" here, because `, chunked` is
    /// read differently by different implementations), a non-token coding name, parameters on
    /// `chunked` (it defines none), or `chunked` applied twice (§6.1 forbids it).
    pub fn fold(&mut self, value: &[u8]) -> Result<(), FieldError> {
        self.present = true;
        for elem in list_elements(value) {
            let name = match elem.iter().position(|&b| b == b';') {
                Some(i) => trim_ows(&elem[..i]),
                None => elem,
            };
            if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
                return Err(FieldError::Invalid("malformed Transfer-Encoding"));
            }
            if name.eq_ignore_ascii_case(b"chunked") {
                if name.len() != elem.len() {
                    return Err(FieldError::Invalid("parameters on the chunked coding"));
                }
                if self.chunked_seen {
                    return Err(FieldError::Invalid("chunked applied more than once"));
                }
                self.chunked_seen = true;
                self.chunked_last = true;
            } else {
                self.other = true;
                self.chunked_last = false;
            }
        }
        Ok(())
    }

    /// The verdict once every line is folded, for a request (RFC 9112 §6.3 rule 4 and §6.1):
    /// `chunked` not final → the length cannot be determined → 400; `chunked` final but after
    /// other codings we do not implement (gzip, deflate, ...) → 501.
    pub fn request_verdict(&self) -> Result<(), FieldError> {
        if !self.chunked_last {
            Err(FieldError::Invalid(
                "chunked is not the final transfer coding",
            ))
        } else if self.other {
            Err(FieldError::Unsupported("transfer coding not implemented"))
        } else {
            Ok(())
        }
    }

    /// True when the list is exactly `chunked`.
    pub fn is_plain_chunked(&self) -> bool {
        self.chunked_last && !self.other
    }
}

/// Where a head ends, found by [`scan_lines`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LineScan {
    /// Offset just past the empty line that ends the head, if it is in the buffer.
    pub end: Option<usize>,
    /// Non-empty lines seen from `from` on (header field lines, complete ones only).
    pub lines: usize,
}

/// Scans the header section starting at `from` (the first byte after the start line's LF) for
/// the empty line that ends it, requiring every LF to be preceded by CR.
///
/// `stop_after` bounds the work on a hostile stream: once this many bytes of the section have
/// been scanned without finding the end, scanning stops (the caller rejects on size anyway).
pub(crate) fn scan_lines(
    buf: &[u8],
    from: usize,
    stop_after: usize,
) -> Result<LineScan, &'static str> {
    let hay_end = buf
        .len()
        .min(from.saturating_add(stop_after).saturating_add(2));
    let mut line_start = from;
    let mut lines = 0;
    for i in memchr::memchr_iter(b'\n', &buf[from..hay_end]) {
        let lf = from + i;
        // `from` >= 1 and buf[from - 1] is the start line's LF, so a LF at `from` fails here too.
        if lf == 0 || buf[lf - 1] != b'\r' {
            return Err("bare LF in message head");
        }
        if lf - 1 == line_start {
            return Ok(LineScan {
                end: Some(lf + 1),
                lines,
            });
        }
        lines += 1;
        line_start = lf + 1;
    }
    Ok(LineScan { end: None, lines })
}

/// Byte offset of `part` inside `whole`. Both come from the same buffer (httparse returns
/// sub-slices of its input), so this is plain address arithmetic — no `unsafe` needed.
#[inline]
pub(crate) fn offset_in(whole: &[u8], part: &[u8]) -> usize {
    let off = (part.as_ptr() as usize).wrapping_sub(whole.as_ptr() as usize);
    debug_assert!(off <= whole.len() && off + part.len() <= whole.len());
    off
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_grammar() {
        let cl = |vals: &[&str]| {
            let mut acc = None;
            for v in vals {
                fold_content_length(&mut acc, v.as_bytes())?;
            }
            Ok::<_, FieldError>(acc)
        };
        assert_eq!(cl(&["5"]), Ok(Some(5)));
        assert_eq!(cl(&["5, 5"]), Ok(Some(5)));
        assert_eq!(cl(&["5", "5"]), Ok(Some(5)));
        assert_eq!(cl(&["18446744073709551615"]), Ok(Some(u64::MAX)));
        for bad in [
            &["5, 6"][..],
            &["5", "6"],
            &["+5"],
            &["-5"],
            &[""],
            &["5,"],
            &["0x5"],
            &["5 5"],
            &["18446744073709551616"],
        ] {
            assert!(cl(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn transfer_encoding_grammar() {
        let te = |vals: &[&str]| {
            let mut t = TransferEncoding::default();
            for v in vals {
                t.fold(v.as_bytes())?;
            }
            t.request_verdict()
        };
        assert_eq!(te(&["chunked"]), Ok(()));
        assert_eq!(te(&["Chunked"]), Ok(()));
        assert!(matches!(
            te(&["gzip, chunked"]),
            Err(FieldError::Unsupported(_))
        ));
        assert!(matches!(
            te(&["gzip", "chunked"]),
            Err(FieldError::Unsupported(_))
        ));
        for bad in [
            &["gzip"][..],
            &["chunked, gzip"],
            &["chunked", "gzip"],
            &["chunked, chunked"],
            &[""],
            &[", chunked"],
            &["chunked;x=1"],
            &["chu nked"],
        ] {
            assert!(matches!(te(bad), Err(FieldError::Invalid(_))), "{bad:?}");
        }
    }

    #[test]
    fn scanner_requires_crlf() {
        let b = b"X\r\nA: 1\r\nB: 2\r\n\r\nbody";
        assert_eq!(
            scan_lines(b, 3, 100),
            Ok(LineScan {
                end: Some(17),
                lines: 2
            })
        );
        assert_eq!(
            scan_lines(b"X\r\nA: 1\r\n", 3, 100),
            Ok(LineScan {
                end: None,
                lines: 1
            })
        );
        assert!(scan_lines(b"X\r\nA: 1\n\r\n", 3, 100).is_err());
        assert!(scan_lines(b"X\r\n\n", 3, 100).is_err());
        assert_eq!(
            scan_lines(b"X\r\n\r\n", 3, 100),
            Ok(LineScan {
                end: Some(5),
                lines: 0
            })
        );
    }

    #[test]
    fn tokens() {
        assert!(has_token(b"keep-alive, Close", "close"));
        assert!(!has_token(b"closed", "close"));
    }
}

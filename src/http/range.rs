//! `Range` and `If-Range` evaluation against a cached object (RFC 9110 §14), pure.
//!
//! Decisions: only single byte ranges are served as 206 (`bytes=a-b`, `a-`, `-n`); a
//! multi-range request, a range in another unit, or a malformed header is answered with the
//! whole object (200), which RFC 9110 allows ("a server MAY ignore the Range header").
//! An unsatisfiable single range is 416 with `Content-Range: bytes */len`.

/// What to send for a request's `Range` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeDecision {
    /// No (usable) range: the full representation, 200.
    Full,
    /// 206 with the inclusive byte range `start..=end`.
    Partial { start: u64, end: u64 },
    /// 416.
    Unsatisfiable,
}

/// The complete length in an origin's `Content-Range: bytes first-last/complete` (None for
/// `*` or anything malformed).
pub fn content_range_complete(value: &str) -> Option<u64> {
    let (unit, rest) = value.trim().split_once(' ')?;
    if !unit.eq_ignore_ascii_case("bytes") {
        return None;
    }
    let (_, complete) = rest.trim().split_once('/')?;
    let complete = complete.trim();
    if complete.is_empty() || !complete.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    complete.parse().ok()
}

/// An origin's `Content-Range: bytes first-last/complete`, all three numbers (None for `*`, an
/// unsatisfied-range form, or anything malformed).
pub fn content_range(value: &str) -> Option<(u64, u64, u64)> {
    let (unit, rest) = value.trim().split_once(' ')?;
    if !unit.eq_ignore_ascii_case("bytes") {
        return None;
    }
    let (range, complete) = rest.trim().split_once('/')?;
    let (first, last) = range.trim().split_once('-')?;
    let num = |s: &str| {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    let (first, last, complete) = (num(first)?, num(last)?, num(complete)?);
    (first <= last && last < complete).then_some((first, last, complete))
}

/// Evaluates `range` (the header value) against an object of `len` bytes.
pub fn evaluate(range: Option<&[u8]>, len: u64) -> RangeDecision {
    let Some(value) = range.and_then(|r| std::str::from_utf8(r).ok()) else {
        return RangeDecision::Full;
    };
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeDecision::Full;
    };
    if spec.contains(',') {
        return RangeDecision::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeDecision::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match (first.is_empty(), last.is_empty()) {
        // bytes=-n: the last n bytes.
        (true, false) if digits(last) => {
            if len == 0 {
                return RangeDecision::Unsatisfiable;
            }
            match last.parse::<u64>() {
                Ok(0) => RangeDecision::Unsatisfiable,
                Ok(n) => RangeDecision::Partial {
                    start: len.saturating_sub(n),
                    end: len - 1,
                },
                // More digits than u64 holds: the whole object.
                Err(_) => RangeDecision::Partial {
                    start: 0,
                    end: len - 1,
                },
            }
        }
        (false, _) if digits(first) && (last.is_empty() || digits(last)) => {
            let Ok(start) = first.parse::<u64>() else {
                return RangeDecision::Unsatisfiable;
            };
            if start >= len {
                return RangeDecision::Unsatisfiable;
            }
            let end = if last.is_empty() {
                len - 1
            } else {
                match last.parse::<u64>() {
                    Ok(e) if e < start => return RangeDecision::Full,
                    Ok(e) => e.min(len - 1),
                    Err(_) => len - 1,
                }
            };
            RangeDecision::Partial { start, end }
        }
        _ => RangeDecision::Full,
    }
}

/// `If-Range`: the range applies only when the validator matches the stored one (a strong
/// ETag comparison, or an exact Last-Modified date); otherwise the full object is sent.
pub fn if_range_allows(
    if_range: Option<&[u8]>,
    etag: Option<&str>,
    last_modified: Option<&str>,
) -> bool {
    let Some(v) = if_range.and_then(|v| std::str::from_utf8(v).ok()) else {
        return true;
    };
    let v = v.trim();
    if v.starts_with('"') {
        // Weak validators never match in If-Range.
        etag.is_some_and(|e| !e.starts_with("W/") && e == v)
    } else if v.starts_with("W/") {
        false
    } else {
        last_modified.is_some_and(|lm| lm == v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeDecision::*;

    fn ev(h: &str, len: u64) -> RangeDecision {
        evaluate(Some(h.as_bytes()), len)
    }

    #[test]
    fn single_ranges() {
        assert_eq!(ev("bytes=2-5", 10), Partial { start: 2, end: 5 });
        assert_eq!(ev("bytes=2-", 10), Partial { start: 2, end: 9 });
        assert_eq!(ev("bytes=-3", 10), Partial { start: 7, end: 9 });
        assert_eq!(ev("bytes=-30", 10), Partial { start: 0, end: 9 });
        assert_eq!(ev("bytes=5-100", 10), Partial { start: 5, end: 9 });
        assert_eq!(ev("bytes=0-0", 10), Partial { start: 0, end: 0 });
        assert_eq!(ev(" bytes=1-2 ", 10), Partial { start: 1, end: 2 });
    }

    #[test]
    fn unsatisfiable_and_ignored() {
        assert_eq!(ev("bytes=10-", 10), Unsatisfiable);
        assert_eq!(ev("bytes=50-60", 10), Unsatisfiable);
        assert_eq!(ev("bytes=-0", 10), Unsatisfiable);
        assert_eq!(ev("bytes=0-", 0), Unsatisfiable);
        assert_eq!(ev("bytes=-5", 0), Unsatisfiable);
        assert_eq!(ev("bytes=0-1,3-4", 10), Full, "multi-range: whole object");
        assert_eq!(ev("bytes=5-2", 10), Full, "invalid: ignored");
        assert_eq!(ev("items=0-1", 10), Full);
        assert_eq!(ev("bytes=a-b", 10), Full);
        assert_eq!(ev("bytes=", 10), Full);
        assert_eq!(ev("bytes=-", 10), Full);
        assert_eq!(ev("bytes=+1-2", 10), Full);
        assert_eq!(evaluate(None, 10), Full);
        assert_eq!(ev("bytes=99999999999999999999999-", 10), Unsatisfiable);
        assert_eq!(
            ev("bytes=0-99999999999999999999999", 10),
            Partial { start: 0, end: 9 }
        );
    }

    #[test]
    fn if_range() {
        let (e, lm) = (Some("\"abc\""), Some("Tue, 01 Jan 2030 00:00:00 GMT"));
        assert!(if_range_allows(None, e, lm));
        assert!(if_range_allows(Some(b"\"abc\""), e, lm));
        assert!(!if_range_allows(Some(b"\"abd\""), e, lm));
        assert!(!if_range_allows(Some(b"W/\"abc\""), e, lm));
        assert!(if_range_allows(
            Some(b"Tue, 01 Jan 2030 00:00:00 GMT"),
            e,
            lm
        ));
        assert!(!if_range_allows(
            Some(b"Wed, 02 Jan 2030 00:00:00 GMT"),
            e,
            lm
        ));
    }

    #[test]
    fn origin_content_ranges() {
        assert_eq!(content_range("bytes 0-9/12345"), Some((0, 9, 12345)));
        assert_eq!(content_range("Bytes 5-5/6 "), Some((5, 5, 6)));
        assert_eq!(content_range("bytes 0-9/*"), None);
        assert_eq!(content_range("bytes */100"), None);
        assert_eq!(content_range("bytes 5-4/100"), None, "last before first");
        assert_eq!(content_range("bytes 0-100/100"), None, "past the end");
        assert_eq!(content_range("bytes -1-3/100"), None);
        assert_eq!(content_range("bytes 0-99999999999999999999999/1"), None);
        assert_eq!(content_range("items 0-9/100"), None);
    }

    #[test]
    fn complete_length_of_an_origin_content_range() {
        assert_eq!(content_range_complete("bytes 0-9/12345"), Some(12345));
        assert_eq!(content_range_complete("Bytes 5-5/6 "), Some(6));
        assert_eq!(content_range_complete("bytes 0-9/*"), None);
        assert_eq!(content_range_complete("bytes */100"), Some(100));
        assert_eq!(content_range_complete("items 0-9/100"), None);
        assert_eq!(content_range_complete("bytes 0-9/-1"), None);
        assert_eq!(
            content_range_complete("bytes 0-9/99999999999999999999999"),
            None
        );
        assert_eq!(content_range_complete("garbage"), None);
    }
}

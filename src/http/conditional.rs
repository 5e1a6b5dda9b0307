//! Conditional request evaluation against a cached representation (RFC 9110 §13.2.2), pure.
//!
//! Order, as the RFC prescribes: `If-Match`, else `If-Unmodified-Since`; then `If-None-Match`,
//! else `If-Modified-Since` (GET/HEAD only). `If-None-Match` uses the weak comparison, `If-Match`
//! the strong one. Dates compare at one-second resolution (HTTP dates have no more).

use std::time::SystemTime;

/// The outcome of evaluating preconditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Serve the representation (subject to `Range`).
    Proceed,
    /// 304 Not Modified.
    NotModified,
    /// 412 Precondition Failed.
    Failed,
}

/// The request's conditional headers (raw values).
#[derive(Debug, Default, Clone, Copy)]
pub struct Conditionals<'a> {
    pub if_match: Option<&'a [u8]>,
    pub if_none_match: Option<&'a [u8]>,
    pub if_modified_since: Option<&'a [u8]>,
    pub if_unmodified_since: Option<&'a [u8]>,
}

impl Conditionals<'_> {
    pub fn is_empty(&self) -> bool {
        self.if_match.is_none()
            && self.if_none_match.is_none()
            && self.if_modified_since.is_none()
            && self.if_unmodified_since.is_none()
    }
}

/// Evaluates `c` against the stored validators.
pub fn evaluate(
    c: &Conditionals<'_>,
    etag: Option<&str>,
    last_modified: Option<&str>,
) -> Precondition {
    // Parsed only for a date precondition: most requests carry none.
    let lm = || last_modified.and_then(parse_date);
    if let Some(v) = c.if_match {
        if !list_matches(v, etag, false) {
            return Precondition::Failed;
        }
    } else if let Some(since) = c.if_unmodified_since.and_then(parse_date_bytes) {
        if lm().is_none_or(|lm| lm > since) {
            return Precondition::Failed;
        }
    }
    if let Some(v) = c.if_none_match {
        if list_matches(v, etag, true) {
            return Precondition::NotModified;
        }
    } else if let Some(since) = c.if_modified_since.and_then(parse_date_bytes) {
        if lm().is_some_and(|lm| lm <= since) {
            return Precondition::NotModified;
        }
    }
    Precondition::Proceed
}

/// Whether an entity-tag list (`*` or `"a", W/"b"`) matches `etag`.
fn list_matches(list: &[u8], etag: Option<&str>, weak: bool) -> bool {
    let Ok(list) = std::str::from_utf8(list) else {
        return false;
    };
    let Some(etag) = etag else {
        return false;
    };
    if list.trim() == "*" {
        return true;
    }
    // Borrowed, not copied: a conditional hit (304) allocates nothing.
    fn opaque(t: &str) -> &str {
        let t = t.trim();
        t.strip_prefix("W/").unwrap_or(t)
    }
    let etag_opaque = opaque(etag);
    list.split(',').map(str::trim).any(|candidate| {
        if weak {
            opaque(candidate) == etag_opaque
        } else {
            !candidate.starts_with("W/") && !etag.starts_with("W/") && candidate == etag
        }
    })
}

fn parse_date_bytes(v: &[u8]) -> Option<SystemTime> {
    std::str::from_utf8(v).ok().and_then(parse_date)
}

fn parse_date(v: &str) -> Option<SystemTime> {
    crate::http::date::parse(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Precondition::*;

    const E: Option<&str> = Some("\"abc\"");
    const LM: Option<&str> = Some("Wed, 01 Jan 2025 00:00:00 GMT");

    fn c<'a>(
        im: Option<&'a str>,
        inm: Option<&'a str>,
        ims: Option<&'a str>,
        ius: Option<&'a str>,
    ) -> Conditionals<'a> {
        Conditionals {
            if_match: im.map(str::as_bytes),
            if_none_match: inm.map(str::as_bytes),
            if_modified_since: ims.map(str::as_bytes),
            if_unmodified_since: ius.map(str::as_bytes),
        }
    }

    #[test]
    fn none_match_and_modified_since() {
        assert_eq!(
            evaluate(&c(None, Some("\"abc\""), None, None), E, LM),
            NotModified
        );
        assert_eq!(
            evaluate(&c(None, Some("W/\"abc\""), None, None), E, LM),
            NotModified
        );
        assert_eq!(
            evaluate(&c(None, Some("\"x\", \"abc\""), None, None), E, LM),
            NotModified
        );
        assert_eq!(
            evaluate(&c(None, Some("*"), None, None), E, LM),
            NotModified
        );
        assert_eq!(
            evaluate(&c(None, Some("\"x\""), None, None), E, LM),
            Proceed
        );
        let later = Some("Thu, 02 Jan 2025 00:00:00 GMT");
        let earlier = Some("Tue, 31 Dec 2024 00:00:00 GMT");
        assert_eq!(evaluate(&c(None, None, later, None), E, LM), NotModified);
        assert_eq!(evaluate(&c(None, None, LM, None), E, LM), NotModified);
        assert_eq!(evaluate(&c(None, None, earlier, None), E, LM), Proceed);
        // If-None-Match takes precedence over If-Modified-Since.
        assert_eq!(
            evaluate(&c(None, Some("\"x\""), later, None), E, LM),
            Proceed
        );
        assert_eq!(
            evaluate(&c(None, None, Some("garbage"), None), E, LM),
            Proceed
        );
    }

    #[test]
    fn match_and_unmodified_since() {
        assert_eq!(
            evaluate(&c(Some("\"abc\""), None, None, None), E, LM),
            Proceed
        );
        assert_eq!(evaluate(&c(Some("\"x\""), None, None, None), E, LM), Failed);
        assert_eq!(
            evaluate(&c(Some("W/\"abc\""), None, None, None), E, LM),
            Failed,
            "strong comparison"
        );
        assert_eq!(evaluate(&c(Some("*"), None, None, None), E, LM), Proceed);
        assert_eq!(evaluate(&c(Some("*"), None, None, None), None, LM), Failed);
        let earlier = Some("Tue, 31 Dec 2024 00:00:00 GMT");
        assert_eq!(evaluate(&c(None, None, None, earlier), E, LM), Failed);
        assert_eq!(evaluate(&c(None, None, None, LM), E, LM), Proceed);
    }
}

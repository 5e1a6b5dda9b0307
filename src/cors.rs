//! CORS for buckets that enable it (`cors = { allow_origins, max_age }`), as pure functions.
//!
//! corvid is read-only, so preflights are answered for GET and HEAD only. Requested headers are
//! echoed back when every one is a valid token (browsers only ask for what the page will send,
//! and corvid ignores headers it does not use). An origin not on the list gets no CORS headers on
//! simple requests (the browser then blocks the read) and a 403 on preflight.
//!
//! Every answer of a bucket with `cors` says `Vary: Origin` ([`write_headers`]) — with or
//! without an `Origin` in the request, allowed or not, 200, 206, 304, HEAD, errors and
//! preflights alike — because its headers depend on that field: a browser or CDN cache that
//! stored a non-CORS answer (no `Access-Control-Allow-Origin`) must not reuse it for a CORS
//! fetch, or the other way round (the Fetch standard's note on CORS and HTTP caches).

use crate::config::CorsConfig;
use crate::error::{Error, Kind};
use crate::http::writer::HeaderLines;

/// Headers a browser script may read on a cross-origin response.
pub const EXPOSE_HEADERS: &str =
    "Content-Length, Content-Range, Content-Type, ETag, Last-Modified, Age, X-Cache, X-Cache-Layer, X-Request-Id";

/// The `Access-Control-Allow-Origin` value for `origin`, if allowed.
pub fn allow_origin<'a>(cfg: &CorsConfig, origin: &'a str) -> Option<&'a str> {
    if cfg.allow_origins.iter().any(|o| o == "*") {
        return Some("*");
    }
    cfg.allow_origins
        .iter()
        .any(|o| o.eq_ignore_ascii_case(origin))
        .then_some(origin)
}

/// Writes the CORS header lines of an answer of a bucket with `cfg`, for the request's
/// `origin`: `Access-Control-Allow-Origin` and `Access-Control-Expose-Headers` when it is
/// allowed, and `Vary: Origin` always (see the module docs).
pub fn write_headers(out: &mut impl HeaderLines, cfg: &CorsConfig, origin: Option<&str>) {
    if let Some(o) = origin.and_then(|o| allow_origin(cfg, o)) {
        out.line("Access-Control-Allow-Origin", o.as_bytes());
        out.line("Access-Control-Expose-Headers", EXPOSE_HEADERS.as_bytes());
    }
    out.line("Vary", b"Origin");
}

/// Response headers for a preflight (`OPTIONS` with `Access-Control-Request-Method`).
pub fn preflight<'a>(
    cfg: &CorsConfig,
    origin: Option<&'a str>,
    request_method: Option<&str>,
    request_headers: Option<&'a str>,
) -> Result<Vec<(&'static str, String)>, Error> {
    let origin =
        origin.ok_or_else(|| Error::client(Kind::BadRequest, "preflight without Origin"))?;
    let allowed = allow_origin(cfg, origin).ok_or_else(|| {
        Error::client(
            Kind::Forbidden,
            "origin not allowed by this bucket's CORS policy",
        )
    })?;
    match request_method {
        Some("GET") | Some("HEAD") => {}
        Some(_) => {
            return Err(Error::client(
                Kind::Forbidden,
                "only GET and HEAD are allowed cross-origin",
            ))
        }
        None => {
            return Err(Error::client(
                Kind::BadRequest,
                "preflight without Access-Control-Request-Method",
            ))
        }
    }
    let mut out = vec![
        ("Access-Control-Allow-Origin", allowed.to_string()),
        (
            "Access-Control-Allow-Methods",
            "GET, HEAD, OPTIONS".to_string(),
        ),
        ("Vary", "Origin".to_string()),
    ];
    if let Some(h) = request_headers {
        let valid = h
            .split(',')
            .map(str::trim)
            .all(|t| !t.is_empty() && t.bytes().all(is_tchar));
        if valid {
            out.push(("Access-Control-Allow-Headers", h.to_string()));
        }
    }
    if let Some(age) = cfg.max_age {
        out.push(("Access-Control-Max-Age", age.as_secs().to_string()));
    }
    Ok(out)
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cfg(origins: &[&str]) -> CorsConfig {
        CorsConfig {
            allow_origins: origins.iter().map(|s| s.to_string()).collect(),
            max_age: Some(Duration::from_secs(3600)),
        }
    }

    #[test]
    fn origins() {
        let c = cfg(&["https://a.example"]);
        assert_eq!(
            allow_origin(&c, "https://a.example"),
            Some("https://a.example")
        );
        assert_eq!(allow_origin(&c, "https://b.example"), None);
        assert_eq!(allow_origin(&cfg(&["*"]), "https://b.example"), Some("*"));
    }

    #[test]
    fn every_answer_varies_on_origin() {
        let c = cfg(&["https://a.example"]);
        let text = |origin: Option<&str>| {
            let mut out = Vec::new();
            write_headers(&mut out, &c, origin);
            String::from_utf8(out).unwrap()
        };
        let allowed = text(Some("https://a.example"));
        assert!(allowed.contains("Access-Control-Allow-Origin: https://a.example\r\n"));
        assert!(allowed.contains("Access-Control-Expose-Headers: "));
        for t in [allowed, text(Some("https://evil.example")), text(None)] {
            assert!(t.ends_with("Vary: Origin\r\n"), "{t}");
            assert_eq!(t.matches("Vary").count(), 1, "{t}");
        }
        assert!(!text(None).contains("Access-Control"));
        assert!(!text(Some("https://evil.example")).contains("Access-Control"));
    }

    #[test]
    fn preflight_rules() {
        let c = cfg(&["https://a.example"]);
        let h = preflight(
            &c,
            Some("https://a.example"),
            Some("GET"),
            Some("range, if-none-match"),
        )
        .unwrap();
        assert!(h
            .iter()
            .any(|(n, v)| *n == "Access-Control-Allow-Headers" && v == "range, if-none-match"));
        assert!(h
            .iter()
            .any(|(n, v)| *n == "Access-Control-Max-Age" && v == "3600"));
        assert_eq!(
            preflight(&c, Some("https://x"), Some("GET"), None)
                .unwrap_err()
                .status(),
            403
        );
        assert_eq!(
            preflight(&c, Some("https://a.example"), Some("PUT"), None)
                .unwrap_err()
                .status(),
            403
        );
        assert_eq!(
            preflight(&c, None, Some("GET"), None).unwrap_err().status(),
            400
        );
    }
}

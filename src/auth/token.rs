//! Finding the token in a request, and keeping a query-parameter token away from the origin and
//! the cache key. Pure functions over header values and the raw query string: no request type,
//! no IO, so the request path and the tests call them the same way.
//!
//! Rules (`jwt.token_sources`, tried in the configured order; the first source that is present
//! decides, even if its token is bad):
//! * `bearer`: `Authorization: Bearer <token>`, scheme case-insensitive (RFC 7235 §2.1), one or
//!   more spaces before the token. An `Authorization` header with another scheme (`Basic ...`)
//!   is not a bearer token: the next source is tried. `Bearer` with nothing after it is
//!   [`AuthFailure::Malformed`].
//! * `header:NAME`: the whole (OWS-trimmed) value of that header.
//! * `query:NAME`: the parameter whose percent-decoded name is `NAME`; its value is
//!   percent-decoded (`+` stays `+`: base64url tokens never contain one, so no form decoding).
//! * Given twice (two parameters, or two header fields of that source) →
//!   [`AuthFailure::Ambiguous`]: which one would the origin or a log see?
//! * Present but empty, or not UTF-8 → [`AuthFailure::Malformed`]; no source present →
//!   [`AuthFailure::Missing`].

use std::borrow::Cow;

use percent_encoding::percent_decode;

use super::AuthFailure;
use crate::config::TokenSource;

/// Which kind of source a token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    Bearer,
    Query,
    Header,
}

/// A token found in a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found<'a> {
    /// Borrowed from the request unless a query value had to be percent-decoded.
    pub token: Cow<'a, str>,
    pub source: Source,
}

/// Finds the token of a request.
///
/// `header(name)` yields every value of the header field `name` (ASCII case-insensitive; the
/// names passed are lower-case), OWS-trimmed: an `Option<&[u8]>` works when only the first
/// field is known, an iterator over all fields also detects duplicates. `query` is the raw query
/// string without the `?` (`""` when there is none).
pub fn extract<'a, H, I>(
    sources: &[TokenSource],
    mut header: H,
    query: &'a str,
) -> Result<Found<'a>, AuthFailure>
where
    H: FnMut(&str) -> I,
    I: IntoIterator<Item = &'a [u8]>,
{
    for source in sources {
        let found = match source {
            TokenSource::Bearer => bearer(header("authorization"))?,
            TokenSource::Header(name) => single(header(name.as_str()))?
                .map(|v| text(v).map(|t| (Cow::Borrowed(t), Source::Header)))
                .transpose()?,
            TokenSource::Query(name) => query_param(query, name)?.map(|t| (t, Source::Query)),
        };
        if let Some((token, source)) = found {
            return Ok(Found { token, source });
        }
    }
    Err(AuthFailure::Missing)
}

/// The only value of a header, `None` if absent, `Ambiguous` if there are several.
fn single<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Result<Option<&'a [u8]>, AuthFailure> {
    let mut it = values.into_iter();
    let first = it.next();
    if it.next().is_some() {
        return Err(AuthFailure::Ambiguous);
    }
    Ok(first)
}

/// A non-empty UTF-8 token.
fn text(v: &[u8]) -> Result<&str, AuthFailure> {
    match std::str::from_utf8(v) {
        Ok(t) if !t.is_empty() => Ok(t),
        _ => Err(AuthFailure::Malformed),
    }
}

fn bearer<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Option<(Cow<'a, str>, Source)>, AuthFailure> {
    let Some(v) = single(values)? else {
        return Ok(None);
    };
    const SCHEME: &[u8] = b"bearer";
    let is_bearer = v.len() >= SCHEME.len()
        && v[..SCHEME.len()].eq_ignore_ascii_case(SCHEME)
        && (v.len() == SCHEME.len() || v[SCHEME.len()] == b' ');
    if !is_bearer {
        return Ok(None);
    }
    let rest = &v[SCHEME.len()..];
    let start = rest.iter().position(|&b| b != b' ').unwrap_or(rest.len());
    let t = text(rest[start..].trim_ascii_end())?;
    if t.contains(' ') {
        return Err(AuthFailure::Malformed);
    }
    Ok(Some((Cow::Borrowed(t), Source::Bearer)))
}

/// Whether a raw `name` of a query parameter percent-decodes to `want`.
fn name_is(raw: &str, want: &str) -> bool {
    if !raw.contains('%') {
        return raw == want;
    }
    percent_decode(raw.as_bytes()).eq(want.bytes())
}

fn query_param<'a>(query: &'a str, name: &str) -> Result<Option<Cow<'a, str>>, AuthFailure> {
    let mut found = None;
    for pair in query.split('&') {
        let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
        if !name_is(n, name) {
            continue;
        }
        if found.is_some() {
            return Err(AuthFailure::Ambiguous);
        }
        let value: Cow<'a, str> = percent_decode(v.as_bytes())
            .decode_utf8()
            .map_err(|_| AuthFailure::Malformed)?;
        if value.is_empty() {
            return Err(AuthFailure::Malformed);
        }
        found = Some(value);
    }
    Ok(found)
}

/// `query` (raw, without `?`) without the parameters that carry tokens (every `query:NAME` of
/// `sources`, compared after percent-decoding), the other parameters left byte for byte in
/// their order. Borrowed when there is nothing to remove.
///
/// The caller strips whether or not the token came from the query, before signing the upstream
/// request and before building the cache key: the origin never sees a token, and two users of
/// one object share one cache entry.
pub fn strip_query_token<'a>(query: &'a str, sources: &[TokenSource]) -> Cow<'a, str> {
    let is_token = |pair: &str| {
        let n = pair.split_once('=').map_or(pair, |(n, _)| n);
        sources
            .iter()
            .any(|s| matches!(s, TokenSource::Query(name) if name_is(n, name)))
    };
    if !query.split('&').any(is_token) {
        return Cow::Borrowed(query);
    }
    let mut out = String::with_capacity(query.len());
    for (i, pair) in query.split('&').filter(|p| !is_token(p)).enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(pair);
    }
    Cow::Owned(out)
}

//! RFC 9111 freshness, age and stale rules as pure functions (and the RFC 5861 stale
//! extensions).
//!
//! This module, in `object` beside the request path that acts on it, owns the caching
//! *decisions*: which origin responses a shared cache may store
//! ([`store`]), how long they are fresh and how old they already were on arrival
//! ([`Freshness`]), what a lookup may do with a stored response at a given moment ([`decide`]),
//! and how a 304 refreshes the stored header fields ([`updated_headers`]). It does no IO and
//! reads no clock: every time is a parameter in unix milliseconds, so each rule is tested from
//! a table and the request path (which owns sockets, storage and the clock) only supplies
//! facts and carries out the answer.
//!
//! Choices a reader might not expect:
//! - corvid is a *shared* cache: `private` responses are not stored, `s-maxage` takes
//!   precedence over `max-age` and implies `proxy-revalidate` (§5.2.2.10), so a response with
//!   it is never served stale.
//! - The *request's* `Cache-Control` (`no-cache`, `max-age=0`, `only-if-cached`, …) is ignored
//!   by design, and no function here takes it: a shared cache in front of S3 must not let any
//!   client force origin traffic (a `no-cache` from every client would turn the cache into a
//!   pass-through and the origin bill into the client's choice). This is a deliberate
//!   choice of the operator's control over a client's: the origin's response directives are
//!   obeyed, the client's are not, and purges are how an operator forces a refetch.
//! - The grammar of the fields read here (Cache-Control, Age, Vary) is
//!   [`crate::http::cache_control`]'s: there, a directive that appears twice counts by its
//!   first occurrence, even when its value is invalid (§4.2.1).
//! - `Vary` is not part of the cache key (an S3 object does not vary with request fields),
//!   but a response with `Vary: *` is not stored at all: per §4.1 it never matches a later
//!   request, so it could only be served wrongly or not at all.
//! - A 404 is only stored when the configuration enables negative caching, and its lifetime is
//!   capped by `negative_ttl_ms` even when the origin grants more: a missing object that is
//!   then uploaded should appear soon, whatever the origin said about the 404.

use crate::cache::entry::Freshness;
/// The rules' name for a bucket's [`crate::config::CachePolicy`].
pub use crate::config::CachePolicy as Policy;
use crate::http::cache_control::{age_seconds, Directives};

/// An HTTP-date (RFC 9110 §5.6.7, all three formats: [`crate::http::date`]) in unix
/// milliseconds; None when invalid (or before 1970).
fn http_date_ms(s: &str) -> Option<u64> {
    crate::http::date::parse_unix_secs(s)?.checked_mul(1000)
}

/// The response facts the storing decision needs (raw header values; first field line for
/// Expires/Date/Age).
#[derive(Debug, Clone, Copy)]
pub struct Response<'a> {
    pub status: u16,
    pub directives: Directives,
    /// Its `Vary` has a `*` member ([`crate::http::cache_control::vary_star`]).
    pub vary_star: bool,
    pub expires: Option<&'a str>,
    pub date: Option<&'a str>,
    pub age: Option<&'a str>,
}

/// When the request for the response was sent and when the response was received.
#[derive(Debug, Clone, Copy)]
pub struct Times {
    pub request_ms: u64,
    pub response_ms: u64,
}

/// Why a response is not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    /// `Cache-Control: no-store` (§5.2.2.5).
    NoStore,
    /// `Cache-Control: private` (§5.2.2.7): corvid is a shared cache.
    Private,
    /// A status other than 200 and 404.
    Status,
    /// A 404 while negative caching is off (`negative_ttl_ms == 0`).
    NegativeOff,
    /// `Vary: *` (§4.1): a stored response with it never matches a later request, so storing
    /// it would only fill the cache.
    VaryStar,
}

/// Whether a response may be stored and, if so, its [`Freshness`] (§3, §4.2).
///
/// The status is checked first, then `no-store`, then `private`, then `Vary: *`. The lifetime
/// is, in order,
/// `s-maxage`, `max-age`, `Expires` − `Date` (§4.2.1), else the configured heuristic
/// `default_ttl_ms` (§4.2.2: only without explicit expiry); `no-cache` makes it zero. A 404's
/// lifetime is capped by `negative_ttl_ms` (which is also its lifetime without explicit
/// expiry). The age on arrival follows §4.2.3.
pub fn store(resp: &Response<'_>, policy: &Policy, times: Times) -> Result<Freshness, NotStored> {
    let negative = match resp.status {
        200 => false,
        404 if policy.negative_ttl_ms > 0 => true,
        404 => return Err(NotStored::NegativeOff),
        _ => return Err(NotStored::Status),
    };
    let d = &resp.directives;
    if d.no_store {
        return Err(NotStored::NoStore);
    }
    if d.private {
        return Err(NotStored::Private);
    }
    if resp.vary_star {
        return Err(NotStored::VaryStar);
    }
    let date_ms = resp.date.and_then(http_date_ms);
    let lifetime_ms = if d.no_cache {
        // §5.2.2.4: stored, but never used without validation.
        0
    } else {
        let explicit = explicit_lifetime_ms(d, resp.expires, date_ms, times.response_ms);
        if negative {
            explicit.map_or(policy.negative_ttl_ms, |e| e.min(policy.negative_ttl_ms))
        } else {
            explicit.unwrap_or(policy.default_ttl_ms)
        }
    };
    let age_ms = corrected_initial_age_ms(resp.age, date_ms, times);
    Ok(Freshness {
        age_origin_ms: times.response_ms.saturating_sub(age_ms),
        // response + lifetime − age rather than age_origin + lifetime: the two agree unless the
        // age reaches back before the unix epoch (an absurd Age), where age_origin saturates at
        // 0 and adding the lifetime to it would make a stale response fresh.
        expires_at_ms: times
            .response_ms
            .saturating_add(lifetime_ms)
            .saturating_sub(age_ms),
    })
}

/// How long a stored version of an object stays fresh at least ([`of_version`]): a year, the
/// lifetime `Cache-Control: immutable` resources conventionally get (`max-age=31536000`).
pub const VERSION_LIFETIME_MS: u64 = 365 * 24 * 3600 * 1000;

/// The freshness of a storable answer (`f`, from [`store`], received at `now_ms`) to a request
/// that named one version of an object (S3 `versionId`). A version's bytes and metadata never
/// change (S3 makes a new version for every write, metadata changes included), so revalidating
/// it could only ever confirm it: it is fresh for [`VERSION_LIFETIME_MS`] from now, or longer
/// when the origin said so, whatever its `max-age`, `Expires` or `no-cache` — it leaves the
/// cache by eviction or purge (a deleted version too: purge it). Whether it may be stored at
/// all is still [`store`]'s (`no-store`, `private`, `Vary: *` keep it out). After a year it is
/// revalidated once, an `If-None-Match` that a `304` answers.
pub fn of_version(f: Freshness, now_ms: u64) -> Freshness {
    Freshness {
        age_origin_ms: f.age_origin_ms,
        expires_at_ms: f
            .expires_at_ms
            .max(now_ms.saturating_add(VERSION_LIFETIME_MS)),
    }
}

/// The explicit freshness lifetime (§4.2.1), or None when the response has no explicit
/// expiry. An invalid `s-maxage`/`max-age` is 0; so is an `Expires` that is not a valid
/// HTTP-date (§5.3: "especially the value 0" means already expired).
fn explicit_lifetime_ms(
    d: &Directives,
    expires: Option<&str>,
    date_ms: Option<u64>,
    response_ms: u64,
) -> Option<u64> {
    if let Some(s) = d.s_maxage.or(d.max_age) {
        return Some(s.ms());
    }
    let expires = expires?;
    Some(match http_date_ms(expires) {
        Some(e) => e.saturating_sub(date_ms.unwrap_or(response_ms)),
        None => 0,
    })
}

/// corrected_initial_age (§4.2.3) in milliseconds.
fn corrected_initial_age_ms(age: Option<&str>, date_ms: Option<u64>, times: Times) -> u64 {
    let apparent_age = date_ms.map_or(0, |d| times.response_ms.saturating_sub(d));
    let response_delay = times.response_ms.saturating_sub(times.request_ms);
    let corrected_age_value = age_seconds(age)
        .saturating_mul(1000)
        .saturating_add(response_delay);
    apparent_age.max(corrected_age_value)
}

/// The stored response's current age in seconds at `now_ms` (the `Age` to send, §5.1).
pub fn current_age_secs(f: &Freshness, now_ms: u64) -> u64 {
    now_ms.saturating_sub(f.age_origin_ms) / 1000
}

/// What a lookup may do with a stored response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Serve from cache.
    Fresh,
    /// Serve the stale copy now and revalidate in the background (RFC 5861).
    StaleWhileRevalidate,
    /// Must revalidate before use. When the origin then fails (unreachable, timeout, 5xx),
    /// the stale copy may be served until `stale_if_error_until_ms` (None: it may not, and for
    /// must-revalidate the answer is 504, §5.2.2.2).
    Revalidate {
        stale_if_error_until_ms: Option<u64>,
        must_revalidate: bool,
    },
}

/// What to do with a stored response (its [`Freshness`] and the directives it was stored
/// with) at `now_ms` (§4.2.4, §5.2.2, RFC 5861).
///
/// `no-cache`, `must-revalidate`, `proxy-revalidate` and `s-maxage` (which implies
/// `proxy-revalidate` in a shared cache, §5.2.2.10) forbid serving stale, whatever the
/// configuration's stale windows say (§4.2.4: "MUST NOT generate a stale response if it is
/// prohibited by an explicit in-protocol directive").
pub fn decide(f: &Freshness, d: &Directives, policy: &Policy, now_ms: u64) -> Decision {
    if now_ms < f.expires_at_ms {
        return Decision::Fresh;
    }
    if d.no_cache || d.must_revalidate || d.proxy_revalidate || d.s_maxage.is_some() {
        return Decision::Revalidate {
            stale_if_error_until_ms: None,
            must_revalidate: true,
        };
    }
    let swr = stale_window_ms(d.stale_while_revalidate, policy.stale_while_revalidate_ms);
    if swr.is_some_and(|w| now_ms < f.expires_at_ms.saturating_add(w)) {
        return Decision::StaleWhileRevalidate;
    }
    let sie = stale_window_ms(d.stale_if_error, policy.stale_if_error_ms);
    Decision::Revalidate {
        stale_if_error_until_ms: sie.map(|w| f.expires_at_ms.saturating_add(w)),
        must_revalidate: false,
    }
}

/// An RFC 5861 window: the directive (seconds) capped by the configuration, else the
/// configuration's default; zero is no window.
fn stale_window_ms(directive_secs: Option<u64>, policy_ms: Option<u64>) -> Option<u64> {
    let w = match (directive_secs.map(|s| s.saturating_mul(1000)), policy_ms) {
        (Some(d), Some(cap)) => d.min(cap),
        (Some(d), None) => d,
        (None, default) => default?,
    };
    (w > 0).then_some(w)
}

/// Fields of an update that never replace stored ones: the stored body's framing and encoding
/// (§3.2: Content-Length; a 304 or HEAD describes no body of ours) and the hop-by-hop fields,
/// which are not stored at all (§3.1, RFC 9110 §7.6.1).
const NOT_UPDATED: [&str; 9] = [
    "content-length",
    "content-range",
    "content-encoding",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "upgrade",
];

/// RFC 9111 §3.2 / §4.3.4: the stored header fields updated with those of a 304 (or of a
/// HEAD-refresh): each field name present in `update` replaces all stored lines of that name
/// (case-insensitive), in the stored position; new names are appended; `Content-Length`,
/// `Content-Range`, `Transfer-Encoding`, `Connection`, `Keep-Alive` and `Content-Encoding` in
/// the update are ignored (the stored body's framing stays). Names keep the update's spelling
/// only when new.
///
/// Also ignored: the other hop-by-hop fields (`Proxy-Connection`, `TE`, `Upgrade`) and the
/// fields the update's `Connection` names (§3.1, RFC 9110 §7.6.1).
///
/// The caller recomputes [`Freshness`] from the result with the revalidation's [`Times`]. A 304
/// without `Date` leaves the stored `Date`, whose distance from the new response time then
/// counts as apparent age; a recipient adds a `Date` of its receipt to such a response
/// (RFC 9110 §6.6.1) before merging.
pub fn updated_headers(
    stored: &[(String, String)],
    update: &[(String, String)],
) -> Vec<(String, String)> {
    let nominated = |name: &str| {
        update
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
            .flat_map(|(_, v)| v.split(','))
            .any(|c| c.trim().eq_ignore_ascii_case(name))
    };
    let applies =
        |name: &str| !NOT_UPDATED.iter().any(|n| name.eq_ignore_ascii_case(n)) && !nominated(name);
    let in_update = |name: &str| update.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    let in_stored = |name: &str| stored.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));

    let mut out = Vec::with_capacity(stored.len() + update.len());
    for (i, (name, value)) in stored.iter().enumerate() {
        if !(in_update(name) && applies(name)) {
            out.push((name.clone(), value.clone()));
            continue;
        }
        // All the update's lines go where the first stored line of the name was, under the
        // stored spelling; later stored lines of the name are dropped.
        if stored[..i]
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            continue;
        }
        for (_, v) in update.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)) {
            out.push((name.clone(), v.clone()));
        }
    }
    for (name, value) in update {
        if !in_stored(name) && applies(name) {
            out.push((name.clone(), value.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    use crate::http::cache_control::{parse_directives, vary_star, DELTA_SECONDS_MAX};
    use proptest::prelude::*;

    /// A whole second, so that `Date: <NOW>` has no sub-second apparent age.
    const NOW: u64 = 1_700_000_000_000;
    const S: u64 = 1000;
    const HOUR: u64 = 3600 * S;
    const DAY: u64 = 24 * HOUR;

    const POLICY: Policy = Policy {
        default_ttl_ms: HOUR,
        negative_ttl_ms: 0,
        stale_while_revalidate_ms: None,
        stale_if_error_ms: None,
    };

    /// (name, Cache-Control, Expires, Date, default_ttl, lifetime)
    type LifetimeCase<'a> = (
        &'a str,
        &'a [&'a str],
        Option<&'a str>,
        Option<&'a str>,
        u64,
        u64,
    );
    /// (name, Cache-Control, Expires, default_ttl, lifetime)
    type HeuristicCase<'a> = (&'a str, &'a [&'a str], Option<&'a str>, u64, u64);
    /// (name, Cache-Control, Date, Age, request_ms, initial age in ms); the response is at NOW
    type AgeCase<'a> = (
        &'a str,
        &'a [&'a str],
        Option<&'a str>,
        Option<&'a str>,
        u64,
        u64,
    );
    /// (name, Cache-Control, policy swr, policy sie, now, decision)
    type WindowCase<'a> = (
        &'a str,
        &'a [&'a str],
        Option<u64>,
        Option<u64>,
        u64,
        Decision,
    );
    /// (name, status, Cache-Control, Expires, negative_ttl, lifetime or refusal)
    type StoreCase<'a> = (
        &'a str,
        u16,
        &'a [&'a str],
        Option<&'a str>,
        u64,
        Result<u64, NotStored>,
    );

    fn date(ms: u64) -> String {
        httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_millis(ms))
    }

    fn at(ms: u64) -> Times {
        Times {
            request_ms: ms,
            response_ms: ms,
        }
    }

    fn response<'a>(
        cc: &[&str],
        expires: Option<&'a str>,
        date: Option<&'a str>,
        age: Option<&'a str>,
    ) -> Response<'a> {
        Response {
            status: 200,
            directives: parse_directives(cc.iter().copied()),
            vary_star: false,
            expires,
            date,
            age,
        }
    }

    // ---- RFC 9111 §4.2.1: freshness lifetime precedence ----

    #[test]
    fn s4_2_1_lifetime_precedence() {
        let now = date(NOW);
        let in_30d = date(NOW + 30 * DAY);
        let in_1h = date(NOW + HOUR);
        let month_ago = date(NOW - 30 * DAY);
        let cases: &[LifetimeCase<'_>] = &[
            (
                "s-maxage over max-age and Expires",
                &["max-age=20, s-maxage=10"],
                Some(&in_30d),
                Some(&now),
                HOUR,
                10 * S,
            ),
            (
                "max-age over Expires",
                &["max-age=20"],
                Some(&in_30d),
                Some(&now),
                HOUR,
                20 * S,
            ),
            (
                "invalid s-maxage is 0, max-age unused",
                &["s-maxage=x, max-age=20"],
                None,
                Some(&now),
                HOUR,
                0,
            ),
            (
                "invalid max-age is 0, Expires unused",
                &["max-age=-1"],
                Some(&in_30d),
                Some(&now),
                HOUR,
                0,
            ),
            (
                "Expires 30 days ahead, default 0",
                &[],
                Some(&in_30d),
                Some(&now),
                0,
                30 * DAY,
            ),
            (
                "Expires a month in the past",
                &[],
                Some(&month_ago),
                Some(&now),
                HOUR,
                0,
            ),
            ("Expires: 0", &[], Some("0"), Some(&now), HOUR, 0),
            ("Expires: -1", &[], Some("-1"), Some(&now), HOUR, 0),
            ("Expires: garbage", &[], Some("soon"), Some(&now), HOUR, 0),
            (
                "Expires without Date: response time",
                &[],
                Some(&in_1h),
                None,
                0,
                HOUR,
            ),
            (
                "Expires with invalid Date: response time",
                &[],
                Some(&in_1h),
                Some("yesterday"),
                0,
                HOUR,
            ),
            (
                "Expires minus Date (origin clock)",
                &[],
                Some(&in_30d),
                Some(&in_1h),
                0,
                30 * DAY - HOUR,
            ),
            (
                "no explicit expiry: default",
                &["public"],
                None,
                Some(&now),
                HOUR,
                HOUR,
            ),
            (
                "no-cache over max-age",
                &["no-cache, max-age=3600"],
                None,
                Some(&now),
                HOUR,
                0,
            ),
            (
                "no-cache over Expires",
                &["no-cache"],
                Some(&in_30d),
                Some(&now),
                HOUR,
                0,
            ),
            (
                "max-age saturated",
                &["max-age=9999999999999"],
                None,
                Some(&now),
                0,
                DELTA_SECONDS_MAX * S,
            ),
        ];
        for (name, cc, expires, date, default_ttl, lifetime) in cases {
            let policy = Policy {
                default_ttl_ms: *default_ttl,
                ..POLICY
            };
            let f = store(&response(cc, *expires, *date, None), &policy, at(NOW))
                .unwrap_or_else(|e| panic!("{name}: not stored: {e:?}"));
            assert_eq!(f.expires_at_ms - f.age_origin_ms, *lifetime, "{name}");
        }
    }

    /// `ms` in the obsolete asctime format (`Sun Nov  6 08:49:37 1994`), from the IMF-fixdate.
    fn asctime(ms: u64) -> String {
        let imf = date(ms); // `Sun, 06 Nov 1994 08:49:37 GMT`
        let day = imf[5..7].trim_start_matches('0');
        format!(
            "{} {} {day:>2} {} {}",
            &imf[..3],
            &imf[8..11],
            &imf[17..25],
            &imf[12..16]
        )
    }

    /// `ms` in the obsolete RFC 850 format (`Sunday, 06-Nov-94 08:49:37 GMT`).
    fn rfc850(ms: u64) -> String {
        let imf = date(ms);
        let wday = match &imf[..3] {
            "Mon" => "Monday",
            "Tue" => "Tuesday",
            "Wed" => "Wednesday",
            "Thu" => "Thursday",
            "Fri" => "Friday",
            "Sat" => "Saturday",
            _ => "Sunday",
        };
        format!(
            "{wday}, {}-{}-{} {} GMT",
            &imf[5..7],
            &imf[8..11],
            &imf[14..16],
            &imf[17..25]
        )
    }

    // ---- RFC 9110 §5.6.7: recipients accept all three HTTP-date formats ----

    #[test]
    fn rfc9110_5_6_7_every_date_format_is_accepted() {
        assert_eq!(asctime(784_111_777_000), "Sun Nov  6 08:49:37 1994");
        assert_eq!(rfc850(784_111_777_000), "Sunday, 06-Nov-94 08:49:37 GMT");
        assert_eq!(
            http_date_ms("Sun Nov  6 08:49:37 1994"),
            Some(784_111_777_000)
        );
        assert_eq!(
            http_date_ms("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777_000)
        );
        // A day name that does not match the date (Aug 8 2050 is a Monday: the http-tests
        // cache suite's asctime example) still names that date.
        assert_eq!(
            http_date_ms("Thu Aug  8 02:01:18 2050"),
            Some(2_543_536_878_000)
        );
        // Two-digit years: 94 is 1994 (RFC 9110 §5.6.7: not more than 50 years ahead).
        assert_eq!(
            http_date_ms("Sunday, 06-Nov-94 08:49:37 GMT"),
            Some(784_111_777_000)
        );
        let policy = Policy {
            default_ttl_ms: 0,
            ..POLICY
        };
        for (fmt, f) in [
            ("IMF-fixdate", date as fn(u64) -> String),
            ("asctime", asctime),
            ("RFC 850", rfc850),
        ] {
            let (now, expires) = (f(NOW), f(NOW + 2 * HOUR));
            // As Expires with an IMF Date, as Date with an IMF Expires, and both.
            for (e, d) in [
                (&expires, &date(NOW)),
                (&date(NOW + 2 * HOUR), &now),
                (&expires, &now),
            ] {
                let f = store(&response(&[], Some(e), Some(d), None), &policy, at(NOW + S))
                    .unwrap_or_else(|e| panic!("{fmt}: not stored: {e:?}"));
                assert_eq!(
                    f.expires_at_ms - f.age_origin_ms,
                    2 * HOUR,
                    "{fmt}: {e} - {d}"
                );
            }
        }
    }

    #[test]
    fn s4_2_1_expiry_seen_by_decide() {
        let now = date(NOW);
        let d = Directives::NONE;
        let month_ago = date(NOW - 30 * DAY);
        let f = store(
            &response(&[], Some(&month_ago), Some(&now), None),
            &POLICY,
            at(NOW),
        )
        .unwrap();
        assert_ne!(
            decide(&f, &d, &POLICY, NOW),
            Decision::Fresh,
            "stale immediately"
        );

        let in_30d = date(NOW + 30 * DAY);
        let policy = Policy {
            default_ttl_ms: 0,
            ..POLICY
        };
        let f = store(
            &response(&[], Some(&in_30d), Some(&now), None),
            &policy,
            at(NOW),
        )
        .unwrap();
        assert_eq!(decide(&f, &d, &policy, NOW + 30 * DAY - 1), Decision::Fresh);
        assert_ne!(decide(&f, &d, &policy, NOW + 30 * DAY), Decision::Fresh);
    }

    // ---- RFC 9111 §4.2.2: heuristic freshness (the configured default TTL) ----

    #[test]
    fn s4_2_2_default_only_without_explicit_expiry() {
        let now = date(NOW);
        let past = date(NOW - HOUR);
        let cases: &[HeuristicCase<'_>] = &[
            ("no explicit expiry: default", &[], None, HOUR, HOUR),
            ("default 0: stale at once", &[], None, 0, 0),
            ("max-age=0 forbids default", &["max-age=0"], None, HOUR, 0),
            ("past Expires forbids default", &[], Some(&past), HOUR, 0),
            ("invalid Expires forbids default", &[], Some("0"), HOUR, 0),
            (
                "unrelated directives keep default",
                &["public, must-revalidate"],
                None,
                5 * S,
                5 * S,
            ),
        ];
        for (name, cc, expires, default_ttl, lifetime) in cases {
            let policy = Policy {
                default_ttl_ms: *default_ttl,
                ..POLICY
            };
            let resp = response(cc, *expires, Some(&now), None);
            let f = store(&resp, &policy, at(NOW)).unwrap();
            assert_eq!(f.expires_at_ms, NOW + lifetime, "{name}");
            let fresh_at_store = decide(&f, &resp.directives, &policy, NOW) == Decision::Fresh;
            assert_eq!(fresh_at_store, *lifetime > 0, "{name}");
        }
    }

    // ---- RFC 9111 §4.2.3: age calculation ----

    #[test]
    fn s4_2_3_age() {
        let ten_min_ago = date(NOW - 600 * S);
        let now = date(NOW);
        let in_1h = date(NOW + HOUR);
        let cases: &[AgeCase<'_>] = &[
            (
                "no Age, Date now",
                &["max-age=3600"],
                Some(&now),
                None,
                NOW,
                0,
            ),
            ("no Date, no Age", &["max-age=3600"], None, None, NOW, 0),
            (
                "Age counted",
                &["max-age=3600"],
                Some(&now),
                Some("7200"),
                NOW,
                7200 * S,
            ),
            (
                "Date in the past: apparent age",
                &["max-age=3600"],
                Some(&ten_min_ago),
                None,
                NOW,
                600 * S,
            ),
            (
                "apparent age over smaller Age",
                &["max-age=3600"],
                Some(&ten_min_ago),
                Some("60"),
                NOW,
                600 * S,
            ),
            (
                "Age over smaller apparent age",
                &["max-age=3600"],
                Some(&ten_min_ago),
                Some("900"),
                NOW,
                900 * S,
            ),
            (
                "response delay added to Age",
                &["max-age=3600"],
                Some(&now),
                Some("10"),
                NOW - 2 * S,
                12 * S,
            ),
            (
                "response delay alone",
                &["max-age=3600"],
                Some(&now),
                None,
                NOW - 2 * S,
                2 * S,
            ),
            (
                "future Date: no apparent age",
                &["max-age=3600"],
                Some(&in_1h),
                None,
                NOW,
                0,
            ),
            (
                "request after response: no delay",
                &["max-age=3600"],
                None,
                Some("5"),
                NOW + S,
                5 * S,
            ),
            (
                "invalid Age ignored",
                &["max-age=3600"],
                Some(&now),
                Some("abc"),
                NOW,
                0,
            ),
            (
                "negative Age ignored",
                &["max-age=3600"],
                Some(&now),
                Some("-5"),
                NOW,
                0,
            ),
            (
                "list Age: first member",
                &["max-age=3600"],
                Some(&now),
                Some("60, 120"),
                NOW,
                60 * S,
            ),
            (
                "Age with spaces",
                &["max-age=3600"],
                Some(&now),
                Some(" 60 "),
                NOW,
                60 * S,
            ),
        ];
        for (name, cc, date, age, request_ms, age_ms) in cases {
            let times = Times {
                request_ms: *request_ms,
                response_ms: NOW,
            };
            let f = store(&response(cc, None, *date, *age), &POLICY, times).unwrap();
            assert_eq!(f.age_origin_ms, NOW - age_ms, "{name}: age origin");
            assert_eq!(
                f.expires_at_ms,
                (NOW + HOUR).saturating_sub(*age_ms),
                "{name}: expiry"
            );
            assert_eq!(
                current_age_secs(&f, NOW),
                age_ms / 1000,
                "{name}: current age"
            );
        }
    }

    #[test]
    fn s4_2_3_old_on_arrival() {
        let resp = response(&["max-age=3600"], None, None, Some("7200"));
        let f = store(&resp, &POLICY, at(NOW)).unwrap();
        assert!(f.expires_at_ms < NOW, "already stale when stored");
        assert_eq!(
            decide(&f, &resp.directives, &POLICY, NOW),
            Decision::Revalidate {
                stale_if_error_until_ms: None,
                must_revalidate: false
            }
        );
        assert_eq!(current_age_secs(&f, NOW + 5 * S), 7205);
        assert_eq!(
            current_age_secs(&f, 0),
            0,
            "a clock before the origin saturates"
        );

        // An Age reaching back before the epoch saturates the origin, not the staleness: with
        // age == lifetime the response is stale on arrival, although 0 + lifetime is after NOW.
        let resp = response(&["max-age=2147483648"], None, None, Some("2147483648"));
        let f = store(&resp, &POLICY, at(NOW)).unwrap();
        assert_eq!(f.age_origin_ms, 0);
        const { assert!(DELTA_SECONDS_MAX * S > NOW) };
        assert_eq!(f.expires_at_ms, NOW, "huge Age stays stale");
        assert_ne!(decide(&f, &resp.directives, &POLICY, NOW), Decision::Fresh);
    }

    // ---- RFC 9111 §4.2.4 and §5.2.2: serving stale ----

    #[test]
    fn s4_2_4_and_5_2_2_stale_rules() {
        let f = Freshness {
            age_origin_ms: NOW,
            expires_at_ms: NOW + 60 * S,
        };
        let windows = Policy {
            stale_while_revalidate_ms: Some(HOUR),
            stale_if_error_ms: Some(HOUR),
            ..POLICY
        };
        let must = Decision::Revalidate {
            stale_if_error_until_ms: None,
            must_revalidate: true,
        };
        let cases: &[(&str, &[&str], Policy, u64, Decision)] = &[
            // (name, Cache-Control, policy, now, decision)
            (
                "fresh before expiry",
                &[],
                POLICY,
                NOW + 60 * S - 1,
                Decision::Fresh,
            ),
            (
                "fresh even with must-revalidate",
                &["must-revalidate"],
                windows,
                NOW,
                Decision::Fresh,
            ),
            (
                "stale at expiry",
                &[],
                POLICY,
                NOW + 60 * S,
                Decision::Revalidate {
                    stale_if_error_until_ms: None,
                    must_revalidate: false,
                },
            ),
            (
                "must-revalidate (§5.2.2.2)",
                &["must-revalidate"],
                windows,
                NOW + 61 * S,
                must,
            ),
            (
                "no-cache (§5.2.2.4)",
                &["no-cache"],
                windows,
                NOW + 61 * S,
                must,
            ),
            (
                "proxy-revalidate (§5.2.2.8)",
                &["proxy-revalidate"],
                windows,
                NOW + 61 * S,
                must,
            ),
            (
                "s-maxage implies proxy-revalidate (§5.2.2.10)",
                &["s-maxage=60"],
                windows,
                NOW + 61 * S,
                must,
            ),
            (
                "invalid s-maxage too",
                &["s-maxage=x"],
                windows,
                NOW + 61 * S,
                must,
            ),
            (
                "directives' own windows do not override",
                &["must-revalidate, stale-while-revalidate=600, stale-if-error=600"],
                windows,
                NOW + 61 * S,
                must,
            ),
            (
                "policy windows apply otherwise",
                &["max-age=60"],
                windows,
                NOW + 61 * S,
                Decision::StaleWhileRevalidate,
            ),
        ];
        for (name, cc, policy, now, want) in cases {
            let d = parse_directives(cc.iter().copied());
            assert_eq!(decide(&f, &d, policy, *now), *want, "{name}");
        }
    }

    // ---- RFC 5861: stale-while-revalidate and stale-if-error ----

    #[test]
    fn rfc5861_stale_windows() {
        let exp = NOW + 60 * S;
        let f = Freshness {
            age_origin_ms: NOW,
            expires_at_ms: exp,
        };
        let swr = Decision::StaleWhileRevalidate;
        let revalidate = |until: Option<u64>| Decision::Revalidate {
            stale_if_error_until_ms: until,
            must_revalidate: false,
        };
        let cases: &[WindowCase<'_>] = &[
            (
                "directive swr inside",
                &["stale-while-revalidate=30"],
                None,
                None,
                exp + 29 * S,
                swr,
            ),
            (
                "directive swr end",
                &["stale-while-revalidate=30"],
                None,
                None,
                exp + 30 * S,
                revalidate(None),
            ),
            (
                "policy default swr inside",
                &[],
                Some(10 * S),
                None,
                exp + 10 * S - 1,
                swr,
            ),
            (
                "policy default swr end",
                &[],
                Some(10 * S),
                None,
                exp + 10 * S,
                revalidate(None),
            ),
            (
                "policy caps directive",
                &["stale-while-revalidate=60"],
                Some(10 * S),
                None,
                exp + 11 * S,
                revalidate(None),
            ),
            (
                "directive below cap",
                &["stale-while-revalidate=5"],
                Some(10 * S),
                None,
                exp + 6 * S,
                revalidate(None),
            ),
            (
                "directive zero beats default",
                &["stale-while-revalidate=0"],
                Some(60 * S),
                None,
                exp,
                revalidate(None),
            ),
            (
                "policy zero cap disables",
                &["stale-while-revalidate=60"],
                Some(0),
                None,
                exp,
                revalidate(None),
            ),
            (
                "invalid directive: default",
                &["stale-while-revalidate=abc"],
                Some(10 * S),
                None,
                exp + S,
                swr,
            ),
            (
                "directive sie",
                &["stale-if-error=300"],
                None,
                None,
                exp + S,
                revalidate(Some(exp + 300 * S)),
            ),
            (
                "policy default sie",
                &[],
                None,
                Some(120 * S),
                exp + S,
                revalidate(Some(exp + 120 * S)),
            ),
            (
                "policy caps sie",
                &["stale-if-error=300"],
                None,
                Some(120 * S),
                exp + S,
                revalidate(Some(exp + 120 * S)),
            ),
            (
                "sie zero",
                &["stale-if-error=0"],
                None,
                None,
                exp + S,
                revalidate(None),
            ),
            (
                "sie policy zero",
                &[],
                None,
                Some(0),
                exp + S,
                revalidate(None),
            ),
            (
                "swr over, sie left",
                &["stale-while-revalidate=10, stale-if-error=300"],
                None,
                None,
                exp + 20 * S,
                revalidate(Some(exp + 300 * S)),
            ),
            (
                "inside swr, sie irrelevant",
                &["stale-while-revalidate=10, stale-if-error=300"],
                None,
                None,
                exp + S,
                swr,
            ),
        ];
        for (name, cc, swr_ms, sie_ms, now, want) in cases {
            let policy = Policy {
                stale_while_revalidate_ms: *swr_ms,
                stale_if_error_ms: *sie_ms,
                ..POLICY
            };
            let d = parse_directives(cc.iter().copied());
            assert_eq!(decide(&f, &d, &policy, *now), *want, "{name}");
        }
    }

    // ---- §4.1: a stored response with `Vary: *` never matches, so it is not stored ----

    #[test]
    fn s4_1_vary_star_is_not_stored() {
        for (lines, star) in [
            (&[][..], false),
            (&["*"][..], true),
            (&[" * "][..], true),
            (&["Accept-Encoding, *"][..], true),
            (&["Origin", "*"][..], true),
            (&["Origin"][..], false),
            (&["Accept-Encoding, Origin"][..], false),
            (&["\"*\""][..], false),
            (&["x-*"][..], false),
        ] {
            assert_eq!(vary_star(lines.iter().copied()), star, "{lines:?}");
        }
        let resp = Response {
            vary_star: true,
            ..response(&["max-age=3600"], None, None, None)
        };
        assert_eq!(store(&resp, &POLICY, at(NOW)), Err(NotStored::VaryStar));
        let negative = Policy {
            negative_ttl_ms: HOUR,
            ..POLICY
        };
        let resp = Response {
            status: 404,
            ..resp
        };
        assert_eq!(store(&resp, &negative, at(NOW)), Err(NotStored::VaryStar));
    }

    // ---- Storing: statuses, no-store, private and negative caching (§3, §5.2.2.5, §5.2.2.7) ----

    #[test]
    fn s3_storing_and_negative_caching() {
        let now = date(NOW);
        let past = date(NOW - HOUR);
        let cases: &[StoreCase<'_>] = &[
            ("200 stored", 200, &[], None, 0, Ok(HOUR)),
            (
                "200 no-store",
                200,
                &["no-store"],
                None,
                0,
                Err(NotStored::NoStore),
            ),
            (
                "200 private",
                200,
                &["private"],
                None,
                0,
                Err(NotStored::Private),
            ),
            (
                "200 qualified private",
                200,
                &["private=\"Set-Cookie\""],
                None,
                0,
                Err(NotStored::Private),
            ),
            (
                "404 negative off",
                404,
                &[],
                None,
                0,
                Err(NotStored::NegativeOff),
            ),
            (
                "404 negative off beats no-store",
                404,
                &["no-store"],
                None,
                0,
                Err(NotStored::NegativeOff),
            ),
            (
                "404 on: negative ttl, not default",
                404,
                &[],
                None,
                30 * S,
                Ok(30 * S),
            ),
            (
                "404 max-age capped",
                404,
                &["max-age=3600"],
                None,
                30 * S,
                Ok(30 * S),
            ),
            (
                "404 short max-age kept",
                404,
                &["max-age=10"],
                None,
                30 * S,
                Ok(10 * S),
            ),
            (
                "404 s-maxage capped",
                404,
                &["s-maxage=3600"],
                None,
                30 * S,
                Ok(30 * S),
            ),
            ("404 past Expires", 404, &[], Some(&past), 30 * S, Ok(0)),
            ("404 no-cache", 404, &["no-cache"], None, 30 * S, Ok(0)),
            (
                "404 no-store",
                404,
                &["no-store"],
                None,
                30 * S,
                Err(NotStored::NoStore),
            ),
            (
                "404 private",
                404,
                &["private"],
                None,
                30 * S,
                Err(NotStored::Private),
            ),
            (
                "206 not stored",
                206,
                &["max-age=60"],
                None,
                30 * S,
                Err(NotStored::Status),
            ),
            (
                "203 not stored",
                203,
                &[],
                None,
                30 * S,
                Err(NotStored::Status),
            ),
            (
                "301 not stored",
                301,
                &[],
                None,
                30 * S,
                Err(NotStored::Status),
            ),
            (
                "304 not stored",
                304,
                &[],
                None,
                30 * S,
                Err(NotStored::Status),
            ),
            (
                "410 not stored",
                410,
                &[],
                None,
                30 * S,
                Err(NotStored::Status),
            ),
            (
                "500 not stored",
                500,
                &[],
                None,
                30 * S,
                Err(NotStored::Status),
            ),
            (
                "503 with no-store: status first",
                503,
                &["no-store"],
                None,
                30 * S,
                Err(NotStored::Status),
            ),
        ];
        for (name, status, cc, expires, negative_ttl, want) in cases {
            let policy = Policy {
                negative_ttl_ms: *negative_ttl,
                ..POLICY
            };
            let resp = Response {
                status: *status,
                ..response(cc, *expires, Some(&now), None)
            };
            let got = store(&resp, &policy, at(NOW)).map(|f| f.expires_at_ms - f.age_origin_ms);
            assert_eq!(got, *want, "{name}");
        }
    }

    // ---- RFC 9111 §3.2 and §4.3.4: updating stored header fields ----

    fn h(fields: &[(&str, &str)]) -> Vec<(String, String)> {
        fields
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn s4_3_4_updated_headers() {
        type Fields<'a> = &'a [(&'a str, &'a str)];
        let cases: &[(&str, Fields<'_>, Fields<'_>, Fields<'_>)] = &[
            // (name, stored, update, result)
            (
                "replaced in the stored position",
                &[
                    ("ETag", "\"a\""),
                    ("Content-Type", "text/plain"),
                    ("Cache-Control", "max-age=60"),
                ],
                &[("Cache-Control", "max-age=120")],
                &[
                    ("ETag", "\"a\""),
                    ("Content-Type", "text/plain"),
                    ("Cache-Control", "max-age=120"),
                ],
            ),
            (
                "case-insensitive, stored spelling kept",
                &[("ETag", "\"a\""), ("Date", "old")],
                &[("etag", "\"b\""), ("DATE", "new")],
                &[("ETag", "\"b\""), ("Date", "new")],
            ),
            (
                "new names appended in update order and spelling",
                &[("ETag", "\"a\"")],
                &[("x-amz-meta-Foo", "1"), ("Expires", "later")],
                &[
                    ("ETag", "\"a\""),
                    ("x-amz-meta-Foo", "1"),
                    ("Expires", "later"),
                ],
            ),
            (
                "framing fields ignored",
                &[
                    ("Content-Length", "5"),
                    ("Content-Encoding", "gzip"),
                    ("ETag", "\"a\""),
                ],
                &[
                    ("Content-Length", "0"),
                    ("Content-Range", "bytes 0-0/5"),
                    ("Transfer-Encoding", "chunked"),
                    ("Connection", "close"),
                    ("Keep-Alive", "timeout=5"),
                    ("content-encoding", "br"),
                    ("ETag", "\"b\""),
                ],
                &[
                    ("Content-Length", "5"),
                    ("Content-Encoding", "gzip"),
                    ("ETag", "\"b\""),
                ],
            ),
            (
                "other hop-by-hop and Connection-nominated fields ignored",
                &[("ETag", "\"a\"")],
                &[
                    ("Connection", "X-Hop, keep-alive"),
                    ("x-hop", "1"),
                    ("TE", "trailers"),
                    ("Upgrade", "h2c"),
                    ("Proxy-Connection", "keep-alive"),
                    ("X-Kept", "2"),
                ],
                &[("ETag", "\"a\""), ("X-Kept", "2")],
            ),
            (
                "all stored lines of a name replaced together",
                &[
                    ("Cache-Control", "max-age=60"),
                    ("ETag", "\"a\""),
                    ("cache-control", "public"),
                ],
                &[("Cache-Control", "no-cache")],
                &[("Cache-Control", "no-cache"), ("ETag", "\"a\"")],
            ),
            (
                "all update lines of a name kept, in order",
                &[("Vary", "x"), ("ETag", "\"a\"")],
                &[("vary", "a"), ("Vary", "b")],
                &[("Vary", "a"), ("Vary", "b"), ("ETag", "\"a\"")],
            ),
            (
                "empty update",
                &[("ETag", "\"a\"")],
                &[],
                &[("ETag", "\"a\"")],
            ),
            (
                "empty stored",
                &[],
                &[("ETag", "\"b\""), ("Content-Length", "0")],
                &[("ETag", "\"b\"")],
            ),
        ];
        for (name, stored, update, want) in cases {
            assert_eq!(updated_headers(&h(stored), &h(update)), h(want), "{name}");
        }
    }

    // ---- Robustness: arbitrary input never panics ----

    fn check_all(lines: &[String], expires: &str, date: &str, age: &str, nums: [u64; 7]) {
        let [status, request, response, default_ttl, negative_ttl, window, now] = nums;
        let d = parse_directives(lines.iter().map(String::as_str));
        let policy = Policy {
            default_ttl_ms: default_ttl,
            negative_ttl_ms: negative_ttl,
            stale_while_revalidate_ms: Some(window),
            stale_if_error_ms: (window % 2 == 0).then_some(window),
        };
        let resp = Response {
            status: if status % 2 == 0 { 200 } else { 404 },
            directives: d,
            vary_star: false,
            expires: Some(expires),
            date: Some(date),
            age: Some(age),
        };
        let times = Times {
            request_ms: request,
            response_ms: response,
        };
        if let Ok(f) = store(&resp, &policy, times) {
            assert!(f.age_origin_ms <= f.expires_at_ms);
            assert!(f.age_origin_ms <= response);
            let _ = current_age_secs(&f, now);
            if decide(&f, &d, &policy, now) == Decision::Fresh {
                assert!(now < f.expires_at_ms);
            }
        }
    }

    #[test]
    fn huge_numbers_never_panic() {
        let huge = [
            "0",
            "2147483648",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999999999999999999999999999",
        ];
        let extremes = [0, 1, NOW, u64::MAX / 2, u64::MAX - 1, u64::MAX];
        for v in huge {
            let lines = [
                format!("max-age={v}, s-maxage=\"{v}\""),
                format!("stale-while-revalidate={v}, stale-if-error={v}"),
            ];
            for &n in &extremes {
                for &m in &extremes {
                    check_all(
                        &lines,
                        "Fri, 31 Dec 9999 23:59:59 GMT",
                        "Thu, 01 Jan 1970 00:00:00 GMT",
                        v,
                        [n, m, n, m, n, m, n],
                    );
                    check_all(
                        &lines[1..],
                        "Fri, 31 Dec 9999 23:59:59 GMT",
                        "0",
                        v,
                        [n, n, m, m, n, n, m],
                    );
                }
            }
        }
    }

    proptest! {
        #[test]
        fn arbitrary_input_never_panics(
            lines in prop::collection::vec("\\PC{0,40}", 0..4),
            cc in "[a-zA-Z0-9=\",\\\\ \t-]{0,60}",
            expires in "\\PC{0,40}",
            date in "\\PC{0,40}",
            age in "[0-9, -]{0,30}",
            nums in prop::array::uniform7(any::<u64>()),
        ) {
            let mut all = lines.clone();
            all.push(cc);
            check_all(&all, &expires, &date, &age, nums);
            let fields: Vec<(String, String)> =
                lines.iter().map(|l| (l.clone(), l.clone())).collect();
            let _ = updated_headers(&fields, &fields[fields.len() / 2..]);
        }
    }
}

//! The cache decisions of the object path, as pure functions over stored metadata, origin
//! heads, the bucket's policy and the time: what to do with a lookup's result ([`decide`]),
//! whether and how fresh an origin answer is stored ([`storable`], [`storable_object`],
//! [`storable_404`]), how a stale entry is revalidated ([`validators`]), whether a `304`
//! selects it ([`selects`]) and what the `304` makes of it ([`after_not_modified`]). The RFC 9111 rules themselves are
//! [`super::freshness`]'s; this module feeds them the facts the request path holds
//! (stored header fields, an [`UpstreamHead`]) and names the phases the path acts on.

use super::freshness::{self, Decision, NotStored, Policy, Response, Times};
use crate::cache::entry::{self, Freshness, Meta};
use crate::http::cache_control;
use crate::http::response::UpstreamHead;

/// What the object path does after looking the key up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Nothing stored: fetch (a full GET fills the cache, coalesced).
    Miss,
    /// Stored and fresh: answer from cache.
    Fresh,
    /// Stale, within its stale-while-revalidate window: answer from cache now, revalidate in
    /// the background.
    StaleWhileRevalidate,
    /// Stale: revalidate before answering. When the origin fails, the stale copy may stand in
    /// until `stale_if_error_until_ms`; `must_revalidate` entries never stand in (and an
    /// unreachable origin is then a 504, RFC 9111 §5.2.2.2).
    Revalidate {
        stale_if_error_until_ms: Option<u64>,
        must_revalidate: bool,
    },
}

/// The phase for a lookup's result at `now_ms`.
pub fn decide(entry: Option<&Meta>, policy: &Policy, now_ms: u64) -> Phase {
    let Some(meta) = entry else {
        return Phase::Miss;
    };
    match freshness::decide(&meta.freshness(), &meta.directives(), policy, now_ms) {
        Decision::Fresh => Phase::Fresh,
        Decision::StaleWhileRevalidate => Phase::StaleWhileRevalidate,
        Decision::Revalidate {
            stale_if_error_until_ms,
            must_revalidate,
        } => Phase::Revalidate {
            stale_if_error_until_ms,
            must_revalidate,
        },
    }
}

/// Whether an origin answer may be stored, and its freshness: RFC 9111 over all its
/// `Cache-Control` lines, `Expires`, `Date` and `Age`, received at `now_ms`. `status` is what
/// would be stored: the head's own, or 200 for the whole object a `206` is part of. An object
/// asked for by version ([`UpstreamHead::names_version`]) is immutable
/// ([`freshness::of_version`]); a 404 for a version is a 404 like any other.
pub fn storable(
    head: &UpstreamHead,
    status: u16,
    policy: &Policy,
    now_ms: u64,
) -> Result<Freshness, NotStored> {
    let directives = cache_control::parse_directives(head.header_values("cache-control"));
    let resp = Response {
        status,
        directives,
        vary_star: cache_control::vary_star(head.header_values("vary")),
        expires: head.header("expires"),
        date: head.header("date"),
        age: head.header("age"),
    };
    let f = freshness::store(&resp, policy, times(head, now_ms))?;
    Ok(match head.names_version && status == 200 {
        true => freshness::of_version(f, now_ms),
        false => f,
    })
}

/// Whether an origin `200` for an object of `len` bytes (None: not known until its body has
/// ended) may be stored, and its freshness: RFC 9111 ([`storable`]) and
/// `cache.max_object_size` (a body of unknown length is measured against it as it is kept).
pub fn storable_object(
    head: &UpstreamHead,
    len: Option<u64>,
    max_object_size: u64,
    policy: &Policy,
    now_ms: u64,
) -> Option<Freshness> {
    if len.is_some_and(|l| l > max_object_size) {
        return None;
    }
    storable(head, 200, policy, now_ms).ok()
}

/// Whether an origin answer for an object of `len` bytes (a `200`, or a `206` that is part of
/// it) may be stored as a sliced object, and its freshness: larger than whole entries may be,
/// within `max_sliced`, with a strong ETag ([`super::slices::sliceable`]), and storable by
/// RFC 9111 ([`storable`]).
pub fn storable_sliced(
    head: &UpstreamHead,
    len: u64,
    max_object_size: u64,
    max_sliced: u64,
    policy: &Policy,
    now_ms: u64,
) -> Option<Freshness> {
    if !super::slices::sliceable(len, head.header("etag"), max_object_size, max_sliced) {
        return None;
    }
    storable(head, 200, policy, now_ms).ok()
}

/// The freshness of a negative entry for an origin `404` (`cache.negative_ttl`, per bucket
/// `negative_ttl`): fresh for the negative TTL, or less when the 404 itself says so. `None`
/// when negative caching is off or the 404 may not be stored. A storm of requests for a
/// missing key then costs one origin request per negative TTL; purges remove it like any
/// entry, and once it is stale the next request asks the origin again (a 404 has no
/// validators to revalidate with).
pub fn storable_404(head: &UpstreamHead, policy: &Policy, now_ms: u64) -> Option<Freshness> {
    storable(head, 404, policy, now_ms).ok()
}

/// A stored entry after a `304` (RFC 9111 §4.3.4): its header fields updated with the 304's
/// (`stored_304` — the 304's passed fields in corvid's spelling), its freshness computed anew
/// from the result and the 304's `Date`/`Age` as received at `now_ms`. `Err` when the
/// updated response may no longer be stored (the 304 said `no-store`, say).
pub fn after_not_modified(
    stale: &Meta,
    head: &UpstreamHead,
    stored_304: &[(String, String)],
    policy: &Policy,
    now_ms: u64,
) -> Result<Meta, NotStored> {
    let headers = freshness::updated_headers(&stale.header_pairs(), stored_304);
    let resp = Response {
        // The stored response is what is being refreshed.
        status: 200,
        directives: entry::directives_of(&headers),
        // Vary is not stored: a 304 saying `Vary: *` makes the entry unusable (§4.1).
        vary_star: cache_control::vary_star(head.header_values("vary")),
        expires: entry::field(&headers, "expires"),
        // Date and Age are the 304's: the entry is as old as the origin's confirmation.
        date: head.header("date"),
        age: head.header("age"),
    };
    let f = freshness::store(&resp, policy, times(head, now_ms))?;
    let f = match head.names_version {
        true => freshness::of_version(f, now_ms),
        false => f,
    };
    // A sliced object's entry stays one: the 304 confirmed the version its slices hold.
    let object_len = stale.sliced_len().unwrap_or(0);
    Ok(Meta::new(headers, f.age_origin_ms, f.expires_at_ms).with_sliced_len(object_len))
}

/// RFC 9111 §4.3.4: whether a `304` selects `stored`, i.e. may freshen it.
///
/// - A 304 with an `ETag` selects the stored response only when it has the same entity tag:
///   compared strongly (RFC 9110 §8.8.3.2) when the 304's tag is strong, weakly when the 304
///   offers only a weak one. A stored response without an ETag is not selected by one.
/// - A 304 without an `ETag` but with `Last-Modified` selects it only when the stored
///   `Last-Modified` is the same date.
/// - A 304 with neither validator answers the conditional corvid sent for this very entry, and
///   selects it.
///
/// An origin that evaluates `If-Modified-Since` beside `If-None-Match` can answer 304 for an
/// object replaced within the same second as the stored one (Last-Modified has one-second
/// granularity) and carry the *new* ETag: such a 304 selects nothing, and the stored body must
/// never be served under the new validator (the caller fetches the object again).
pub fn selects(stored: &Meta, head: &UpstreamHead) -> bool {
    selects_validators(
        stored.etag().as_deref(),
        stored.last_modified().as_deref(),
        head.header("etag"),
        head.header("last-modified"),
    )
}

fn selects_validators(
    stored_etag: Option<&str>,
    stored_lm: Option<&str>,
    etag_304: Option<&str>,
    lm_304: Option<&str>,
) -> bool {
    fn opaque(t: &str) -> &str {
        let t = t.trim();
        t.strip_prefix("W/").unwrap_or(t)
    }
    let weak = |t: &str| t.trim().starts_with("W/");
    match (etag_304, stored_etag) {
        (Some(new), Some(old)) if weak(new) => opaque(new) == opaque(old),
        (Some(new), Some(old)) => !weak(old) && new.trim() == old.trim(),
        (Some(_), None) => false,
        (None, _) => match lm_304 {
            None => true,
            Some(new) => stored_lm.is_some_and(|old| same_date(old, new)),
        },
    }
}

/// Two HTTP-dates name the same second (any of the three formats), or are the same text.
fn same_date(a: &str, b: &str) -> bool {
    match (crate::http::date::parse(a), crate::http::date::parse(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a.trim() == b.trim(),
    }
}

/// The conditional headers that revalidate `stored` (RFC 9111 §4.3.1): `If-None-Match` with its
/// ETag when it has one — S3's ETags are strong, and an origin that also evaluates
/// `If-Modified-Since` could answer 304 for an object replaced within the stored
/// Last-Modified's second — else `If-Modified-Since` with its Last-Modified. Empty: an
/// unconditional GET.
pub fn validators(stored: &Meta) -> Vec<(&'static str, String)> {
    if let Some(e) = stored.etag() {
        vec![("if-none-match", e.to_string())]
    } else if let Some(lm) = stored.last_modified() {
        vec![("if-modified-since", lm.to_string())]
    } else {
        Vec::new()
    }
}

/// [`validators`] as the header pairs an origin request takes.
pub fn as_headers<'a>(validators: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    validators.iter().map(|(n, v)| (*n, v.as_str())).collect()
}

/// The request and response times of an origin answer received at `now_ms`.
fn times(head: &UpstreamHead, now_ms: u64) -> Times {
    let request_ms = match head.sent_at_ms {
        0 => now_ms,
        t => t.min(now_ms),
    };
    Times {
        request_ms,
        response_ms: now_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::response::ResponseFraming;

    const NOW: u64 = 1_700_000_000_000;
    const POLICY: Policy = Policy {
        default_ttl_ms: 3_600_000,
        negative_ttl_ms: 0,
        stale_while_revalidate_ms: None,
        stale_if_error_ms: Some(300_000),
    };

    fn head(status: u16, headers: &[(&str, &str)]) -> UpstreamHead {
        UpstreamHead {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            framing: ResponseFraming::Length(0),
            keep_alive: true,
            sent_at_ms: NOW - 40,
            took: std::time::Duration::ZERO,
            peer: None,
            names_version: false,
        }
    }

    fn meta(cc: &str, age_origin: u64, expires: u64) -> Meta {
        Meta::new(
            vec![
                ("ETag".into(), "\"v1\"".into()),
                ("Cache-Control".into(), cc.into()),
            ],
            age_origin,
            expires,
        )
    }

    #[test]
    fn phases_of_a_lookup() {
        let fresh = meta("max-age=60", NOW, NOW + 60_000);
        let stale = meta("max-age=60", NOW - 120_000, NOW - 60_000);
        let must = meta("max-age=60, must-revalidate", NOW - 120_000, NOW - 60_000);
        let cases: [(&str, Option<&Meta>, Phase); 4] = [
            ("nothing stored", None, Phase::Miss),
            ("fresh", Some(&fresh), Phase::Fresh),
            (
                "stale, config stale_if_error",
                Some(&stale),
                Phase::Revalidate {
                    stale_if_error_until_ms: Some(NOW - 60_000 + 300_000),
                    must_revalidate: false,
                },
            ),
            (
                "must-revalidate never stands in",
                Some(&must),
                Phase::Revalidate {
                    stale_if_error_until_ms: None,
                    must_revalidate: true,
                },
            ),
        ];
        for (name, entry, want) in cases {
            assert_eq!(decide(entry, &POLICY, NOW), want, "{name}");
        }
    }

    #[test]
    fn storable_reads_every_cache_control_line_and_the_age() {
        let two_lines = head(
            200,
            &[
                ("cache-control", "max-age=3600"),
                ("cache-control", "no-store"),
            ],
        );
        assert_eq!(
            storable(&two_lines, 200, &POLICY, NOW),
            Err(NotStored::NoStore)
        );
        let aged = head(200, &[("cache-control", "max-age=3600"), ("age", "7200")]);
        let f = storable(&aged, 200, &POLICY, NOW).unwrap();
        assert!(f.expires_at_ms <= NOW, "already stale on arrival");
        assert!(freshness::current_age_secs(&f, NOW) >= 7200);
        for vary in ["*", "Accept-Encoding, *"] {
            let h = head(200, &[("cache-control", "max-age=3600"), ("vary", vary)]);
            assert_eq!(
                storable(&h, 200, &POLICY, NOW),
                Err(NotStored::VaryStar),
                "{vary}"
            );
        }
        let h = head(200, &[("vary", "Origin")]);
        assert!(storable(&h, 200, &POLICY, NOW).is_ok());
        let plain = head(200, &[]);
        let f = storable(&plain, 200, &POLICY, NOW).unwrap();
        assert_eq!(f.expires_at_ms - f.age_origin_ms, POLICY.default_ttl_ms);
        assert_eq!(
            NOW - f.age_origin_ms,
            40,
            "the response delay counts as age"
        );
    }

    /// A version (`versionId`) is fresh for a year whatever its `Cache-Control` says, unless
    /// it may not be stored at all; a 404 for a version is a plain negative answer.
    #[test]
    fn a_named_version_is_stored_as_immutable() {
        let version = |status, headers: &[(&str, &str)]| UpstreamHead {
            names_version: true,
            ..head(status, headers)
        };
        let year = freshness::VERSION_LIFETIME_MS;
        for cc in ["max-age=0", "no-cache", "max-age=60, must-revalidate", ""] {
            let f = storable(&version(200, &[("cache-control", cc)]), 200, &POLICY, NOW).unwrap();
            assert_eq!(f.expires_at_ms, NOW + year, "{cc:?}");
            assert_eq!(
                NOW - f.age_origin_ms,
                40,
                "{cc:?}: the age is still the answer's"
            );
        }
        let longer = version(200, &[("cache-control", "max-age=63072000")]);
        let f = storable(&longer, 200, &POLICY, NOW).unwrap();
        assert!(
            f.expires_at_ms > NOW + year,
            "the origin's longer lifetime stands"
        );
        assert_eq!(
            storable(
                &version(200, &[("cache-control", "no-store")]),
                200,
                &POLICY,
                NOW
            ),
            Err(NotStored::NoStore)
        );
        let negative = Policy {
            negative_ttl_ms: 10_000,
            ..POLICY
        };
        let f = storable(&version(404, &[]), 404, &negative, NOW).unwrap();
        assert!(f.expires_at_ms <= NOW + 10_000, "a 404 keeps negative_ttl");
        // A 304 confirming a version makes it fresh for a year again.
        let stale = meta("no-cache", NOW - 120_000, NOW - 60_000);
        let m = after_not_modified(&stale, &version(304, &[]), &[], &POLICY, NOW).unwrap();
        assert_eq!(m.expires_at_ms, NOW + year);
    }

    #[test]
    fn a_304_selects_the_stored_response_only_by_its_validators() {
        const A: &str = "\"aaa\"";
        const B: &str = "\"bbb\"";
        const T: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
        const T_RFC850: &str = "Sunday, 06-Nov-94 08:49:37 GMT";
        const T2: &str = "Sun, 06 Nov 1994 08:49:38 GMT";
        // (name, stored ETag, stored Last-Modified, 304 ETag, 304 Last-Modified, selects)
        type Case = (
            &'static str,
            Option<&'static str>,
            Option<&'static str>,
            Option<&'static str>,
            Option<&'static str>,
            bool,
        );
        let cases: [Case; 13] = [
            ("same strong ETag", Some(A), Some(T), Some(A), None, true),
            (
                "another ETag, same date",
                Some(A),
                Some(T),
                Some(B),
                Some(T),
                false,
            ),
            ("another ETag, no date", Some(A), None, Some(B), None, false),
            (
                "weak 304 tag, same opaque",
                Some(A),
                None,
                Some("W/\"aaa\""),
                None,
                true,
            ),
            (
                "strong 304 tag vs weak stored",
                Some("W/\"aaa\""),
                None,
                Some(A),
                None,
                false,
            ),
            (
                "ETag in 304, none stored",
                None,
                Some(T),
                Some(A),
                Some(T),
                false,
            ),
            ("no ETag, same date", None, Some(T), None, Some(T), true),
            (
                "no ETag, same date other format",
                None,
                Some(T),
                None,
                Some(T_RFC850),
                true,
            ),
            (
                "no ETag, another date",
                None,
                Some(T),
                None,
                Some(T2),
                false,
            ),
            (
                "no ETag, date but none stored",
                None,
                None,
                None,
                Some(T),
                false,
            ),
            (
                "no ETag in 304, stored ETag, another date",
                Some(A),
                Some(T),
                None,
                Some(T2),
                false,
            ),
            (
                "no validators in the 304",
                Some(A),
                Some(T),
                None,
                None,
                true,
            ),
            ("no validators anywhere", None, None, None, None, true),
        ];
        for (name, se, sl, ne, nl, want) in cases {
            assert_eq!(selects_validators(se, sl, ne, nl), want, "{name}");
        }
        let stored = Meta::new(
            vec![
                ("ETag".into(), A.into()),
                ("Last-Modified".into(), T.into()),
            ],
            NOW,
            NOW,
        );
        let other = head(304, &[("etag", B), ("last-modified", T)]);
        assert!(!selects(&stored, &other), "read from the 304's head");
        assert!(selects(&stored, &head(304, &[("etag", A)])));
    }

    #[test]
    fn revalidation_sends_if_none_match_alone_when_an_etag_is_stored() {
        let both = Meta::new(
            vec![
                ("ETag".into(), "\"v1\"".into()),
                (
                    "Last-Modified".into(),
                    "Sun, 06 Nov 1994 08:49:37 GMT".into(),
                ),
            ],
            NOW,
            NOW,
        );
        assert_eq!(
            as_headers(&validators(&both)),
            vec![("if-none-match", "\"v1\"")]
        );
        let date_only = Meta::new(
            vec![(
                "Last-Modified".into(),
                "Sun, 06 Nov 1994 08:49:37 GMT".into(),
            )],
            NOW,
            NOW,
        );
        assert_eq!(
            as_headers(&validators(&date_only)),
            vec![("if-modified-since", "Sun, 06 Nov 1994 08:49:37 GMT")]
        );
        assert!(validators(&Meta::new(Vec::new(), NOW, NOW)).is_empty());
    }

    #[test]
    fn a_304_updates_the_stored_fields_and_resets_the_age() {
        let stale = meta("max-age=1", NOW - 3_600_000, NOW - 3_599_000);
        let h = head(304, &[("cache-control", "max-age=3600")]);
        let update = vec![("Cache-Control".to_string(), "max-age=3600".to_string())];
        let m = after_not_modified(&stale, &h, &update, &POLICY, NOW).unwrap();
        assert_eq!(m.header("cache-control").as_deref(), Some("max-age=3600"));
        assert_eq!(m.etag().as_deref(), Some("\"v1\""));
        assert!(m.expires_at_ms > NOW + 3_599_000);
        assert!(
            NOW - m.stored_at_ms < 1_000,
            "age reset by the confirmation"
        );
        let no_store = vec![("Cache-Control".to_string(), "no-store".to_string())];
        assert_eq!(
            after_not_modified(&stale, &h, &no_store, &POLICY, NOW).err(),
            Some(NotStored::NoStore)
        );
        let star = head(304, &[("cache-control", "max-age=3600"), ("vary", "*")]);
        assert_eq!(
            after_not_modified(&stale, &star, &update, &POLICY, NOW).err(),
            Some(NotStored::VaryStar),
            "a 304 with Vary: * leaves an entry that never matches: it goes"
        );
    }
}

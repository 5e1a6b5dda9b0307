//! The cache decisions of the object path, as pure functions over stored metadata, origin
//! heads, the bucket's policy and the time: what to do with a lookup's result ([`decide`]),
//! whether and how fresh an origin answer is stored ([`storable`]), and what a `304` makes of a
//! stored entry ([`after_not_modified`]). The RFC 9111 rules themselves are
//! [`crate::cache::freshness`]'s; this module feeds them the facts the request path holds
//! (stored header fields, an [`UpstreamHead`]) and names the phases the path acts on.

use std::sync::Arc;

use crate::cache::entry::{self, Meta};
use crate::cache::freshness::{self, Decision, NotStored, Policy, Response, Times};
use crate::config::Config;
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

/// The bucket's caching policy from the configuration.
pub fn policy(config: &Config, bucket: usize) -> Policy {
    let ms = |d: std::time::Duration| d.as_millis() as u64;
    Policy {
        default_ttl_ms: ms(config.ttl(bucket)),
        negative_ttl_ms: ms(config.negative_ttl(bucket)),
        stale_while_revalidate_ms: config.cache.stale_while_revalidate.map(ms),
        stale_if_error_ms: config.cache.stale_if_error.map(ms),
    }
}

/// The phase for a lookup's result at `now_ms`.
pub fn decide(entry: Option<&Meta>, policy: &Policy, now_ms: u64) -> Phase {
    let Some(meta) = entry else {
        return Phase::Miss;
    };
    match freshness::decide(&meta.freshness(), &meta.directives, policy, now_ms) {
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
/// would be stored: the head's own, or 200 for the whole object a `206` is part of.
pub fn storable(
    head: &UpstreamHead,
    status: u16,
    policy: &Policy,
    now_ms: u64,
) -> Result<freshness::Freshness, NotStored> {
    let directives = freshness::parse_directives(head.header_values("cache-control"));
    let resp = Response {
        status,
        directives,
        vary_star: freshness::vary_star(head.header_values("vary")),
        expires: head.header("expires"),
        date: head.header("date"),
        age: head.header("age"),
    };
    freshness::store(&resp, policy, times(head, now_ms))
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
) -> Result<Arc<Meta>, NotStored> {
    let headers = freshness::updated_headers(&stale.headers, stored_304);
    let resp = Response {
        // The stored response is what is being refreshed.
        status: 200,
        directives: entry::directives_of(&headers),
        // Vary is not stored: a 304 saying `Vary: *` makes the entry unusable (§4.1).
        vary_star: freshness::vary_star(head.header_values("vary")),
        expires: entry::field(&headers, "expires"),
        // Date and Age are the 304's: the entry is as old as the origin's confirmation.
        date: head.header("date"),
        age: head.header("age"),
    };
    let f = freshness::store(&resp, policy, times(head, now_ms))?;
    Ok(Arc::new(Meta::new(
        headers,
        f.age_origin_ms,
        f.expires_at_ms,
    )))
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

    #[test]
    fn a_304_updates_the_stored_fields_and_resets_the_age() {
        let stale = meta("max-age=1", NOW - 3_600_000, NOW - 3_599_000);
        let h = head(304, &[("cache-control", "max-age=3600")]);
        let update = vec![("Cache-Control".to_string(), "max-age=3600".to_string())];
        let m = after_not_modified(&stale, &h, &update, &POLICY, NOW).unwrap();
        assert_eq!(m.header("cache-control"), Some("max-age=3600"));
        assert_eq!(m.etag(), Some("\"v1\""));
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

//! What is cached, under which key, for how long (pure).
//!
//! - Keys: `bucket name \0 object key`, plus `\0name=value` for each forwarded query parameter
//!   (`versionId`, `response-*`), so an override never serves another variant's bytes. Bucket
//!   names (`A-Z a-z 0-9 _ . -`) and object keys (the router refuses NUL) never contain NUL, so
//!   the separators are unambiguous: `bucket \0` selects one bucket, `bucket \0 key \0` the
//!   variants of one object.
//! - Only complete 200 answers to GET are stored, up to `cache.max_object_size`.
//! - The origin's `Cache-Control` decides, like a shared cache (RFC 9111): `no-store` and
//!   `private` are not stored; `s-maxage`, else `max-age`, is the freshness lifetime instead of
//!   the configured TTL; `no-cache` (and `max-age=0`) store the object but revalidate it on
//!   every request.

use std::time::Duration;

/// The cache key for an object request.
pub fn cache_key(bucket: &str, key: &str, query: &[(&str, &str)]) -> Vec<u8> {
    let mut k = Vec::with_capacity(bucket.len() + key.len() + 1);
    cache_key_into(&mut k, bucket, key, query);
    k
}

/// [`cache_key`] into `k` (cleared first), so that a request can build its key in a recycled
/// buffer.
pub fn cache_key_into(k: &mut Vec<u8>, bucket: &str, key: &str, query: &[(&str, &str)]) {
    k.clear();
    k.extend_from_slice(bucket.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    for (n, v) in query {
        k.push(0);
        k.extend_from_slice(n.as_bytes());
        k.push(b'=');
        k.extend_from_slice(v.as_bytes());
    }
}

/// The key prefix that selects every entry of `bucket` whose object key starts with `prefix`.
pub fn bucket_prefix(bucket: &str, prefix: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(bucket.len() + prefix.len() + 1);
    k.extend_from_slice(bucket.as_bytes());
    k.push(0);
    k.extend_from_slice(prefix.as_bytes());
    k
}

/// Whether `ckey` is `plain` (a [`cache_key`] without query) or one of its variants.
pub fn is_variant_of(ckey: &[u8], plain: &[u8]) -> bool {
    ckey.strip_prefix(plain)
        .is_some_and(|rest| rest.is_empty() || rest[0] == 0)
}

/// The freshness lifetime of a 200 answer with this `Cache-Control`, or None when it must not
/// be stored.
pub fn freshness(cache_control: Option<&str>, configured: Duration) -> Option<Duration> {
    let Some(cc) = cache_control else {
        return Some(configured);
    };
    let mut max_age = None;
    let mut s_maxage = None;
    let mut no_cache = false;
    for directive in cc.split(',') {
        let d = directive.trim();
        let (name, value) = match d.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (d, None),
        };
        match name.to_ascii_lowercase().as_str() {
            "no-store" | "private" => return None,
            "no-cache" => no_cache = true,
            "max-age" => max_age = value.and_then(|v| v.parse::<u64>().ok()),
            "s-maxage" => s_maxage = value.and_then(|v| v.parse::<u64>().ok()),
            _ => {}
        }
    }
    if no_cache {
        return Some(Duration::ZERO);
    }
    Some(
        s_maxage
            .or(max_age)
            .map(Duration::from_secs)
            .unwrap_or(configured),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(3600);

    #[test]
    fn cache_control_rules() {
        assert_eq!(freshness(None, TTL), Some(TTL));
        assert_eq!(freshness(Some("public"), TTL), Some(TTL));
        assert_eq!(freshness(Some("no-store"), TTL), None);
        assert_eq!(freshness(Some("max-age=60, private"), TTL), None);
        assert_eq!(
            freshness(Some("max-age=60"), TTL),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            freshness(Some("max-age=60, s-maxage=5"), TTL),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            freshness(Some("S-MAXAGE=\"7\""), TTL),
            Some(Duration::from_secs(7))
        );
        assert_eq!(freshness(Some("no-cache"), TTL), Some(Duration::ZERO));
        assert_eq!(freshness(Some("max-age=bogus"), TTL), Some(TTL));
    }

    #[test]
    fn keys_separate_variants_and_prefixes_select() {
        let plain = cache_key("b", "k", &[]);
        let v = cache_key("b", "k", &[("versionId", "3")]);
        assert_ne!(plain, v);
        assert!(plain.starts_with(&bucket_prefix("b", "")));
        assert!(v.starts_with(&bucket_prefix("b", "k")));
        assert!(!cache_key("bb", "k", &[]).starts_with(&bucket_prefix("b", "")));
        assert!(!cache_key("b", "x", &[]).starts_with(&bucket_prefix("b", "k")));
        assert!(is_variant_of(&plain, &plain) && is_variant_of(&v, &plain));
        assert!(!is_variant_of(&cache_key("b", "kk", &[]), &plain));
        assert!(!is_variant_of(&cache_key("bb", "k", &[]), &plain));
    }
}

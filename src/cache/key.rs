//! What is cached, under which key, for how long (pure).
//!
//! - Keys: `bucket name \0 object key`, plus `\0name=value` for each forwarded query parameter
//!   (`versionId`), so a version never serves another version's bytes. The `response-*`
//!   overrides are not part of the key: they change only the answer's head, which corvid
//!   writes from the one entry (`object::overrides`). Bucket names (`A-Z a-z 0-9 _ . -`) and
//!   object keys (the router refuses NUL) never contain NUL, so the separators are unambiguous: `bucket \0` selects one bucket, `bucket \0 key \0` the
//!   variants of one object.
//! - Listings (`crate::bucket`): `bucket name \0 listed prefix \0 ?` + the canonical query
//!   of the forwarded list parameters. Filed under their prefix, so the bucket purge and every
//!   prefix purge whose prefix starts the listing's prefix remove them with the objects
//!   (`cache::purge` needs no rule of its own); `?` never starts a forwarded parameter's name,
//!   so a listing is never taken for an object variant.
//! - Only complete 200 answers to GET are stored, up to `cache.max_object_size`; whether and
//!   for how long the origin's answer may be stored is RFC 9111's (`object::freshness`).

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

/// The cache key of a listing of `bucket` under `prefix` (no NUL: `bucket::query` refuses
/// it) whose forwarded parameters canonicalise to `canonical_query`.
pub fn listing_key(bucket: &str, prefix: &str, canonical_query: &str) -> Vec<u8> {
    let mut k = bucket_prefix(bucket, prefix);
    k.extend_from_slice(b"\0?");
    k.extend_from_slice(canonical_query.as_bytes());
    k
}

/// Whether `ckey` is `plain` (a [`cache_key`] without query) or one of its variants.
pub fn is_variant_of(ckey: &[u8], plain: &[u8]) -> bool {
    ckey.strip_prefix(plain)
        .is_some_and(|rest| rest.is_empty() || rest[0] == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn listings_file_under_their_prefix() {
        let l = listing_key("b", "photos/2024/", "list-type=2&prefix=photos%2F2024%2F");
        assert!(l.starts_with(&bucket_prefix("b", "")));
        assert!(l.starts_with(&bucket_prefix("b", "photos/")));
        assert!(!l.starts_with(&bucket_prefix("b", "photos/2025")));
        assert!(!l.starts_with(&bucket_prefix("bb", "")));
        assert_ne!(
            l,
            listing_key("b", "photos/2024/", "prefix=photos%2F2024%2F")
        );
        // Never an object's key or variant.
        assert_ne!(l, cache_key("b", "photos/2024/", &[]));
    }
}

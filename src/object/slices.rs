//! Large objects as slices: the pure rules (no IO) — which objects are sliced, how an object
//! is cut, where a slice is cached, what an origin range request asks for, and whether its
//! answer belongs to the version being served.
//!
//! An object larger than `cache.max_object_size` (up to `cache.max_sliced_object_size`) is
//! cached as one **object entry** (the stored headers, freshness and the object's length, no
//! body) under the object's cache key, plus **slices** of `cache.slice_size` bytes (the last
//! one short) under [`slice_key`] — the object's key + the slice size and index — each tagged
//! with the ETag of the version it was cut from. A slice whose tag differs from the object
//! entry's ETag belongs to another version and is never served for it: the identity of a
//! version is its ETag, so only objects with a strong ETag are sliced ([`sliceable`]); S3 gives
//! every object one (multipart ETags `"…-N"` are strong too).
//!
//! Slice keys extend the object's key after a NUL (`key \0 #size.index`), like the variants of an
//! object (`cache::key`): purging an object (or a prefix, a bucket) reaches its slices in
//! every tier without an index of its own, and per-bucket usage counts them for the bucket.
//! No forwarded query parameter name starts with `#`, so a slice key is never a variant's.

use std::ops::Range;

use crate::http::range;

/// How one object is cut: slices of `slice` bytes, the last one short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub slice: u64,
    pub len: u64,
}

impl Geometry {
    pub fn new(slice: u64, len: u64) -> Geometry {
        debug_assert!(slice > 0);
        Geometry { slice, len }
    }

    /// Number of slices.
    pub fn count(&self) -> u64 {
        self.len.div_ceil(self.slice)
    }

    /// The bytes of slice `i` in the object.
    pub fn bounds(&self, i: u64) -> Range<u64> {
        let start = i * self.slice;
        start..(start + self.slice).min(self.len)
    }

    /// The length of slice `i`.
    pub fn slice_len(&self, i: u64) -> u64 {
        let b = self.bounds(i);
        b.end - b.start
    }

    /// The slices that hold `bytes` (a non-empty range within the object).
    pub fn covering(&self, bytes: &Range<u64>) -> Range<u64> {
        debug_assert!(bytes.start < bytes.end && bytes.end <= self.len);
        bytes.start / self.slice..(bytes.end - 1) / self.slice + 1
    }

    /// The part of slice `i` that `bytes` needs, as offsets within the slice.
    pub fn part(&self, i: u64, bytes: &Range<u64>) -> Range<usize> {
        let b = self.bounds(i);
        let start = bytes.start.max(b.start) - b.start;
        let end = bytes.end.min(b.end) - b.start;
        start as usize..end as usize
    }

    /// The `Range` header value that asks the origin for slices `run`.
    pub fn range_value(&self, run: &Range<u64>) -> String {
        let first = self.bounds(run.start).start;
        let last = self.bounds(run.end - 1).end - 1;
        format!("bytes={first}-{last}")
    }
}

/// Whether an object of `len` bytes with `etag` is cached as slices: larger than whole objects
/// may be, not larger than `max_sliced`, and with a strong ETag (the version's identity).
pub fn sliceable(len: u64, etag: Option<&str>, max_object: u64, max_sliced: u64) -> bool {
    len > max_object && len <= max_sliced && etag.is_some_and(is_strong_etag)
}

/// `"…"`, not `W/"…"`.
fn is_strong_etag(etag: &str) -> bool {
    etag.len() >= 2 && etag.starts_with('"') && etag.ends_with('"')
}

/// The cache key of slice `index` of the object cached under `ckey` cut by `g`, into `out`
/// (cleared). The slice size is part of the key: a slice cut with another `cache.slice_size`
/// (a config change, a disk tier from before it) holds other bytes under the same index.
pub fn slice_key(ckey: &[u8], g: &Geometry, index: u64, out: &mut Vec<u8>) {
    use std::io::Write;
    out.clear();
    out.extend_from_slice(ckey);
    let _ = write!(out, "\0#{}.{index}", g.slice);
}

/// What an origin answer to a slice request (`GET`, `Range` of the run, `If-Match` the
/// version's ETag) means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunAnswer {
    /// Exactly the run's bytes of the expected version.
    Matches,
    /// The object changed at the origin (`412` to `If-Match`, another ETag, another length):
    /// the version being served is gone.
    Changed,
    /// Something else (an error status, a malformed or mismatched `Content-Range`): the
    /// origin's answer cannot fill these slices.
    Unusable(String),
}

/// Checks an origin's answer to a request for slices `run` of `g`, version `etag`.
pub fn check_run_answer(
    g: &Geometry,
    run: &Range<u64>,
    status: u16,
    content_range: Option<&str>,
    answer_etag: Option<&str>,
    etag: &str,
) -> RunAnswer {
    match status {
        206 => {}
        412 => return RunAnswer::Changed,
        // A whole 200 of another version is a change; of this version, the origin ignored the
        // range (it would cost the whole object to cut the run out of it).
        200 if answer_etag != Some(etag) => return RunAnswer::Changed,
        _ => {
            return RunAnswer::Unusable(format!("the origin answered {status} to a slice request"))
        }
    }
    if answer_etag != Some(etag) {
        return RunAnswer::Changed;
    }
    let want = (
        g.bounds(run.start).start,
        g.bounds(run.end - 1).end - 1,
        g.len,
    );
    match content_range.and_then(range::content_range) {
        Some(got) if got == want => RunAnswer::Matches,
        Some((_, _, len)) if len != g.len => RunAnswer::Changed,
        got => RunAnswer::Unusable(format!(
            "the origin's Content-Range {got:?} is not the requested {want:?}"
        )),
    }
}

/// The slices to prefetch for a reader now at slice `at` of the slices `needed`, `ahead`
/// slices ahead of it, not counting the ones already asked for (`asked` is the end of what was
/// prefetched before).
pub fn readahead(at: u64, needed: &Range<u64>, ahead: u64, asked: u64) -> Range<u64> {
    let end = (at + 1 + ahead).min(needed.end);
    let start = asked.max(at + 1);
    start..end.max(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry() {
        let g = Geometry::new(10, 35);
        assert_eq!(g.count(), 4);
        assert_eq!(g.bounds(0), 0..10);
        assert_eq!(g.bounds(3), 30..35);
        assert_eq!(g.slice_len(3), 5);
        assert_eq!(Geometry::new(10, 40).count(), 4);
        assert_eq!(Geometry::new(10, 41).count(), 5);
        assert_eq!(g.covering(&(0..35)), 0..4);
        assert_eq!(g.covering(&(9..10)), 0..1);
        assert_eq!(g.covering(&(9..11)), 0..2);
        assert_eq!(g.covering(&(10..20)), 1..2);
        assert_eq!(g.covering(&(34..35)), 3..4);
        assert_eq!(g.part(0, &(9..11)), 9..10);
        assert_eq!(g.part(1, &(9..11)), 0..1);
        assert_eq!(g.part(2, &(0..35)), 0..10);
        assert_eq!(g.part(3, &(31..33)), 1..3);
        assert_eq!(g.range_value(&(0..1)), "bytes=0-9");
        assert_eq!(g.range_value(&(1..4)), "bytes=10-34");
    }

    /// Every byte of every range lands in exactly one slice part, in order.
    #[test]
    fn parts_cover_every_range_exactly() {
        for (slice, len) in [(1, 1), (3, 10), (4, 16), (7, 50)] {
            let g = Geometry::new(slice, len);
            for start in 0..len {
                for end in start + 1..=len {
                    let mut got = Vec::new();
                    for i in g.covering(&(start..end)) {
                        let p = g.part(i, &(start..end));
                        assert!(p.start < p.end, "empty part {i} of {start}..{end}");
                        let base = g.bounds(i).start;
                        got.extend(base + p.start as u64..base + p.end as u64);
                    }
                    assert_eq!(got, (start..end).collect::<Vec<_>>());
                }
            }
        }
    }

    #[test]
    fn which_objects_are_sliced() {
        let e = Some("\"abc\"");
        assert!(sliceable(11, e, 10, 100));
        assert!(!sliceable(10, e, 10, 100), "fits whole");
        assert!(!sliceable(101, e, 10, 100), "too large");
        assert!(sliceable(100, Some("\"d41d8-3\""), 10, 100));
        assert!(!sliceable(50, Some("W/\"abc\""), 10, 100), "weak");
        assert!(!sliceable(50, None, 10, 100), "no ETag");
        assert!(!sliceable(50, Some("abc"), 10, 100), "not quoted");
        assert!(!sliceable(50, e, 10, 0), "slicing off");
    }

    #[test]
    fn slice_keys_extend_the_object_key_like_variants() {
        let plain = crate::cache::key::cache_key("b", "k", &[]);
        let g = Geometry::new(4096, 1 << 20);
        let mut k = Vec::new();
        slice_key(&plain, &g, 12, &mut k);
        assert_eq!(k, b"b\0k\0#4096.12");
        assert!(crate::cache::key::is_variant_of(&k, &plain));
        assert!(k.starts_with(&crate::cache::key::bucket_prefix("b", "k")));
        let mut k2 = Vec::new();
        slice_key(&plain, &g, 1, &mut k2);
        assert_ne!(k, k2);
        slice_key(&plain, &Geometry::new(2048, 1 << 20), 12, &mut k2);
        assert_ne!(k, k2, "another slice size, other bytes");
    }

    #[test]
    fn run_answers() {
        let g = Geometry::new(10, 35);
        let e = "\"v1\"";
        let check = |status, cr: Option<&str>, etag: Option<&str>, run: Range<u64>| {
            check_run_answer(&g, &run, status, cr, etag, e)
        };
        assert_eq!(
            check(206, Some("bytes 10-29/35"), Some(e), 1..3),
            RunAnswer::Matches
        );
        assert_eq!(
            check(206, Some("bytes 30-34/35"), Some(e), 3..4),
            RunAnswer::Matches
        );
        assert_eq!(
            check(206, Some("bytes 10-29/35"), Some("\"v2\""), 1..3),
            RunAnswer::Changed
        );
        assert_eq!(
            check(206, Some("bytes 10-29/40"), Some(e), 1..3),
            RunAnswer::Changed,
            "another length is another version"
        );
        assert_eq!(check(412, None, None, 0..1), RunAnswer::Changed);
        assert_eq!(check(200, None, Some("\"v2\""), 0..1), RunAnswer::Changed);
        assert!(matches!(
            check(200, None, Some(e), 0..1),
            RunAnswer::Unusable(_)
        ));
        assert!(matches!(
            check(206, Some("bytes 10-19/35"), Some(e), 1..3),
            RunAnswer::Unusable(_)
        ));
        assert!(matches!(
            check(206, None, Some(e), 1..3),
            RunAnswer::Unusable(_)
        ));
        assert!(matches!(
            check(503, None, None, 1..3),
            RunAnswer::Unusable(_)
        ));
    }

    #[test]
    fn readahead_windows() {
        // A whole-object reader of 10 slices, 3 ahead.
        assert_eq!(readahead(0, &(0..10), 3, 0), 1..4);
        assert_eq!(readahead(1, &(0..10), 3, 4), 4..5);
        assert_eq!(readahead(8, &(0..10), 3, 10), 10..10);
        assert_eq!(readahead(9, &(0..10), 3, 10), 10..10);
        // Never past what the response needs.
        assert_eq!(readahead(2, &(2..4), 3, 0), 3..4);
        assert_eq!(readahead(0, &(0..10), 0, 0), 1..1);
    }
}

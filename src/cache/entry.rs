//! A cached object: its metadata and its body, and the one byte encoding that the disk and
//! Redis tiers store (pure functions, zero-copy decode).
//!
//! Metadata keeps the origin headers a client must see again (the ones the proxy passes:
//! Content-Type, ETag, Last-Modified, Cache-Control, Content-Encoding, Content-Disposition,
//! Content-Language, Expires, x-amz-version-id, x-amz-meta-*), the moment the response's age
//! was zero (its *age origin*, RFC 9111 §4.2.3: `Age` is the time since) and the freshness
//! deadline. The header lines are rendered once, when the entry is made, so a hit copies one
//! prepared block into the response head instead of formatting each header; the `Cache-Control`
//! directives are parsed then too ([`crate::http::cache_control`]), so a lookup decides without
//! parsing.
//!
//! `Date` is not stored as a header: the block carries `Date` rendered from the age origin,
//! which is the origin's `Date` whenever the origin's clock and `Age` agree with ours (the age
//! origin is derived from them), and stays consistent with the `Age` corvid sends (Date + Age
//! = now) when they do not. A revalidation moves the age origin, so it moves `Date` with it —
//! without the stored header fields changing, so tiers keep the body where it is.
//!
//! Encoding (all integers little-endian):
//!
//! | field | size |
//! |---|---|
//! | magic `CVE2` (`CVE1`: the same without status, read as 200) | 4 |
//! | stored_at_ms | 8 |
//! | expires_at_ms | 8 |
//! | status (`CVE2` only): 200, or 404 for a negative entry | 2 |
//! | header count | 2 |
//! | per header: name length (2), name, value length (4), value | … |
//! | body length | 8 |
//! | body | body length |
//!
//! Integrity is the storing tier's business (the disk tier checksums whole entries); decode only
//! guarantees it never panics and never returns a body past the input.

use std::sync::Arc;

use bytes::Bytes;

use std::time::{Duration, UNIX_EPOCH};

use crate::http::cache_control::{self, Directives};
use crate::http::response::write_header;

const MAGIC: &[u8; 4] = b"CVE2";
/// The pseudo-field that carries a sliced object's length in the encoding (an object entry has
/// no body). No origin field has this name (corvid stores only the fields it passes), and
/// older corvid versions read it as one more stored field.
const SLICED_LENGTH: &str = "x-corvid-sliced-length";
/// Entries written before the status field (issue 10) still decode, as 200s.
const MAGIC_V1: &[u8; 4] = b"CVE1";
/// 9999-12-31T23:59:59Z, the last instant an HTTP-date can name.
const MAX_HTTP_DATE_MS: u64 = 253_402_300_799_000;

/// The freshness of a stored response: all a lookup needs to decide (computed by
/// `object::freshness`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// The moment at which the response's age was zero, on our clock:
    /// response_time - corrected_initial_age (RFC 9111 §4.2.3). current_age = now - age_origin.
    pub age_origin_ms: u64,
    /// age_origin + freshness_lifetime: fresh while now < expires_at.
    pub expires_at_ms: u64,
}

/// What a memory-tier entry costs beside its body, header lines and key: the `Meta` and its
/// `Arc`, the table slot, the policy's queue record, the body's shared header, the allocator's
/// own headers, and — once the tier is full and evicting — its share of the table's spare
/// slots, the ghost queue and freed-block fragmentation. Measured by `perf/entry_overhead.sh`:
/// 568 B per typical 1 KiB entry beyond the body while nothing is evicted (245 B of it header
/// lines, ~40 B key); with this charge a full 16 MiB tier of 1 KiB objects holds 1.07x its
/// capacity in RSS, a 64 MiB one 1.05x (perf/RESULTS.md).
pub const ENTRY_OVERHEAD: usize = 352;

/// Metadata of a cached object.
///
/// The passed origin header fields are kept only as the header lines a hit writes (one
/// allocation, no per-field strings): [`Meta::header`] and [`Meta::headers`] read them back
/// from there, and the `Cache-Control` directives are parsed from them when a stale entry is
/// decided about ([`Meta::directives`]), not kept parsed. Issue 16 measured ~1.6 KiB per 1 KiB
/// entry beyond the body with a vector of owned name/value strings, parsed directives and the
/// rendered lines beside each other (`perf/entry_overhead.sh`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// The entry's age origin (unix ms): when its age was zero, for `Age` and `Date`. (The
    /// name and encoding predate RFC 9111 ages: it was the fill time, which is the age origin of
    /// a response that arrived with no `Age` and a current `Date`.)
    pub stored_at_ms: u64,
    /// Fresh until (unix ms); after that a request revalidates.
    pub expires_at_ms: u64,
    /// The origin's status: 200, or 404 for a negative entry (`cache.negative_ttl`), which has
    /// no body and answers the 404 from cache.
    pub status: u16,
    /// Where the passed fields end in `block` (the `Date` line follows).
    fields: u32,
    /// For the object entry of a sliced object (`object::slices`): the object's length (its
    /// bytes are in slices, the entry has no body); 0 for a whole entry.
    object_len: u64,
    /// The header lines rendered once (`Name: value\r\n`…): the passed origin fields in
    /// corvid's spelling, then `Date`.
    block: Box<[u8]>,
}

impl Meta {
    /// Metadata of passed origin `headers` (spelling corvid writes, value).
    pub fn new(headers: Vec<(String, String)>, stored_at_ms: u64, expires_at_ms: u64) -> Meta {
        let mut fields =
            Vec::with_capacity(headers.iter().map(|(n, v)| n.len() + v.len() + 4).sum());
        for (n, v) in &headers {
            write_header(&mut fields, n, v.as_bytes());
        }
        Meta::from_fields(&fields, stored_at_ms, expires_at_ms, 200)
    }

    /// `fields` (rendered header lines) with the `Date` line of `stored_at_ms` after them.
    fn from_fields(fields: &[u8], stored_at_ms: u64, expires_at_ms: u64, status: u16) -> Meta {
        // HTTP-dates end at year 9999 (httpdate panics past it): a corrupt time is clamped.
        let date = UNIX_EPOCH + Duration::from_millis(stored_at_ms.min(MAX_HTTP_DATE_MS));
        let mut block = Vec::with_capacity(fields.len() + 37);
        block.extend_from_slice(fields);
        write_header(&mut block, "Date", httpdate::fmt_http_date(date).as_bytes());
        Meta {
            stored_at_ms,
            expires_at_ms,
            status,
            fields: fields.len() as u32,
            object_len: 0,
            block: block.into_boxed_slice(),
        }
    }

    /// The same metadata for an answer with another status (a negative entry's 404).
    pub fn with_status(self, status: u16) -> Meta {
        Meta { status, ..self }
    }

    /// The same header fields with another age origin (and so `Date`) and deadline.
    pub fn with_times(&self, stored_at_ms: u64, expires_at_ms: u64) -> Meta {
        Meta {
            object_len: self.object_len,
            ..Meta::from_fields(self.fields(), stored_at_ms, expires_at_ms, self.status)
        }
    }

    /// The object entry of a sliced object of `len` bytes (see `object::slices`).
    pub fn with_sliced_len(self, len: u64) -> Meta {
        Meta {
            object_len: len,
            ..self
        }
    }

    /// The object's length when this is the object entry of a sliced object.
    pub fn sliced_len(&self) -> Option<u64> {
        (self.object_len > 0).then_some(self.object_len)
    }

    /// The entry's freshness as `object::freshness` reads it.
    pub fn freshness(&self) -> Freshness {
        Freshness {
            age_origin_ms: self.stored_at_ms,
            expires_at_ms: self.expires_at_ms,
        }
    }

    /// The same metadata with another freshness deadline (after a 304 revalidation).
    pub fn refreshed(&self, expires_at_ms: u64) -> Meta {
        Meta {
            expires_at_ms,
            ..self.clone()
        }
    }

    /// The prepared header lines (`Date` included).
    pub fn header_block(&self) -> &[u8] {
        &self.block
    }

    /// The passed origin fields' lines, without `Date`: equal for two entries exactly when
    /// their stored header fields are.
    pub fn fields(&self) -> &[u8] {
        &self.block[..self.fields as usize]
    }

    /// The passed origin fields, (name as corvid writes it, value), in order.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        // Built from `&str`s by `new`, so every line is UTF-8 and has its `: `.
        std::str::from_utf8(self.fields())
            .unwrap_or("")
            .split_terminator("\r\n")
            .filter_map(|line| line.split_once(": "))
    }

    /// [`Meta::headers`] as owned pairs (a 304's update, an encoding).
    pub fn header_pairs(&self) -> Vec<(String, String)> {
        self.headers()
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect()
    }

    /// The `Cache-Control` directives of the stored fields, every field line counted.
    pub fn directives(&self) -> Directives {
        cache_control::parse_directives(
            self.headers()
                .filter(|(n, _)| n.eq_ignore_ascii_case("cache-control"))
                .map(|(_, v)| v),
        )
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    pub fn etag(&self) -> Option<&str> {
        self.header("etag")
    }

    pub fn last_modified(&self) -> Option<&str> {
        self.header("last-modified")
    }

    pub fn is_fresh(&self, now_ms: u64) -> bool {
        now_ms < self.expires_at_ms
    }
}

/// The first value of the field `name` (ASCII case-insensitive) among stored `headers`.
pub fn field<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The `Cache-Control` directives of stored `headers`, every field line counted.
pub fn directives_of(headers: &[(String, String)]) -> Directives {
    cache_control::parse_directives(
        headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("cache-control"))
            .map(|(_, v)| v.as_str()),
    )
}

/// A cached object: shared metadata and a reference-counted body (never copied per request).
#[derive(Debug, Clone)]
pub struct CachedObject {
    pub meta: Arc<Meta>,
    pub body: Bytes,
}

impl CachedObject {
    /// Bytes charged against a tier's capacity: what the entry really costs in memory — its
    /// body, its header lines and [`ENTRY_OVERHEAD`] (the memory tier adds the key's length),
    /// so that a full tier's RSS is its capacity.
    pub fn weight(&self) -> usize {
        self.body.len() + self.meta.block.len() + ENTRY_OVERHEAD
    }

    /// The same entry, stale from `at_ms` on (soft purge): `None` when it already is (its
    /// deadline is never moved later). Same body, same headers, so the same weight.
    pub fn stale_since(&self, at_ms: u64) -> Option<CachedObject> {
        (self.meta.expires_at_ms > at_ms).then(|| CachedObject {
            meta: Arc::new(self.meta.refreshed(at_ms)),
            body: self.body.clone(),
        })
    }
}

/// Where the age origin and the deadline sit in the encoding (after the magic): a tier that
/// keeps the encoding as one value can move an entry's times in place ([`encode_times`]).
pub const TIMES_OFFSET: usize = 4;

/// The age origin and deadline of `m` as they are encoded at [`TIMES_OFFSET`].
pub fn encode_times(m: &Meta) -> [u8; 16] {
    let mut t = [0u8; 16];
    t[..8].copy_from_slice(&m.stored_at_ms.to_le_bytes());
    t[8..].copy_from_slice(&m.expires_at_ms.to_le_bytes());
    t
}

/// Encodes `obj` for the disk and Redis tiers.
pub fn encode(obj: &CachedObject) -> Vec<u8> {
    let m = &obj.meta;
    let mut out = Vec::with_capacity(40 + m.block.len() + obj.body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&m.stored_at_ms.to_le_bytes());
    out.extend_from_slice(&m.expires_at_ms.to_le_bytes());
    out.extend_from_slice(&m.status.to_le_bytes());
    let object_len = m.sliced_len().map(|n| n.to_string());
    let extra = object_len.as_deref().map(|v| (SLICED_LENGTH, v));
    let count = m.headers().count() + usize::from(extra.is_some());
    out.extend_from_slice(&(count as u16).to_le_bytes());
    for (n, v) in m.headers().chain(extra) {
        out.extend_from_slice(&(n.len() as u16).to_le_bytes());
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        out.extend_from_slice(v.as_bytes());
    }
    out.extend_from_slice(&(obj.body.len() as u64).to_le_bytes());
    out.extend_from_slice(&obj.body);
    out
}

/// Decodes an encoded object; the body is a slice of `bytes` (no copy).
pub fn decode(bytes: Bytes) -> Option<CachedObject> {
    let mut r = Reader { b: &bytes, pos: 0 };
    let v2 = match r.take(4)? {
        m if m == MAGIC => true,
        m if m == MAGIC_V1 => false,
        _ => return None,
    };
    let stored_at_ms = r.u64()?;
    let expires_at_ms = r.u64()?;
    let status = if v2 { r.u16()? } else { 200 };
    let count = r.u16()? as usize;
    let mut headers = Vec::with_capacity(count.min(64));
    let mut object_len = 0;
    for _ in 0..count {
        let n = r.u16()? as usize;
        let name = std::str::from_utf8(r.take(n)?).ok()?.to_string();
        let n = r.u32()? as usize;
        let value = std::str::from_utf8(r.take(n)?).ok()?.to_string();
        if !valid_header(&name, &value) {
            return None;
        }
        if name == SLICED_LENGTH {
            object_len = value.parse().ok()?;
            continue;
        }
        headers.push((name, value));
    }
    let len = r.u64()?;
    let start = r.pos;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    if end != bytes.len() {
        return None;
    }
    let meta = Meta::new(headers, stored_at_ms, expires_at_ms)
        .with_status(status)
        .with_sliced_len(object_len);
    Some(CachedObject {
        meta: Arc::new(meta),
        body: bytes.slice(start..end),
    })
}

/// A stored header must still be writable as a header line (defence against bad bytes).
fn valid_header(name: &str, value: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        && !value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0)
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.b.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn obj() -> CachedObject {
        CachedObject {
            meta: Arc::new(Meta::new(
                vec![
                    ("Content-Type".into(), "image/png".into()),
                    ("ETag".into(), "\"abc\"".into()),
                    ("x-amz-meta-owner".into(), "ünï".into()),
                ],
                1_700_000_000_000,
                1_700_000_060_000,
            )),
            body: Bytes::from_static(b"\x00\x01binary body\xff"),
        }
    }

    #[test]
    fn round_trip_zero_copy() {
        let o = obj();
        let enc = Bytes::from(encode(&o));
        let d = decode(enc.clone()).unwrap();
        assert_eq!(*d.meta, *o.meta);
        assert_eq!(d.body, o.body);
        assert_eq!(d.meta.etag(), Some("\"abc\""));
        assert_eq!(
            d.meta.header_block(),
            &b"Content-Type: image/png\r\nETag: \"abc\"\r\nx-amz-meta-owner: \xc3\xbcn\xc3\xaf\r\nDate: Tue, 14 Nov 2023 22:13:20 GMT\r\n"[..]
        );
        // The body points into the encoded buffer.
        assert_eq!(d.body.as_ptr(), enc[enc.len() - o.body.len()..].as_ptr());
    }

    #[test]
    fn negative_entries_round_trip_and_v1_entries_read_as_200() {
        let neg = CachedObject {
            meta: Arc::new(Meta::new(vec![], 1_000, 2_000).with_status(404)),
            body: Bytes::new(),
        };
        let d = decode(Bytes::from(encode(&neg))).unwrap();
        assert_eq!(d.meta.status, 404);
        // A CVE1 entry: the v2 encoding without the status field.
        let mut v1 = encode(&obj());
        v1[..4].copy_from_slice(MAGIC_V1);
        v1.drain(20..22);
        let d = decode(Bytes::from(v1)).unwrap();
        assert_eq!((d.meta.status, d.body.clone()), (200, obj().body));
    }

    #[test]
    fn sliced_object_entries_round_trip_and_keep_their_length() {
        let o = obj();
        let m = Meta::clone(&o.meta).with_sliced_len(5 << 30);
        let entry = CachedObject {
            meta: Arc::new(m),
            body: Bytes::new(),
        };
        let d = decode(Bytes::from(encode(&entry))).unwrap();
        assert_eq!(d.meta.sliced_len(), Some(5 << 30));
        assert_eq!(d.meta.header_block(), o.meta.header_block(), "not a header");
        assert_eq!(d.meta.with_times(1, 2).sliced_len(), Some(5 << 30));
        assert_eq!(
            decode(Bytes::from(encode(&o))).unwrap().meta.sliced_len(),
            None
        );
        // A malformed length is a corrupt entry, not a whole object.
        let bad = encode(&entry);
        let digits = (5u64 << 30).to_string();
        let at = bad
            .windows(digits.len())
            .position(|w| w == digits.as_bytes())
            .unwrap();
        let mut bad = bad;
        bad[at] = b'x';
        assert!(decode(Bytes::from(bad)).is_none());
    }

    #[test]
    fn freshness_and_refresh() {
        let o = obj();
        assert!(o.meta.is_fresh(1_700_000_059_999));
        assert!(!o.meta.is_fresh(1_700_000_060_000));
        let r = o.meta.refreshed(2_000_000_000_000);
        assert!(r.is_fresh(1_800_000_000_000));
        assert_eq!(r.header_block(), o.meta.header_block());
    }

    proptest! {
        #[test]
        fn decode_never_panics_on_mutations(cut in 0usize..200, flip in 0usize..200, bit in 0u8..8) {
            let mut enc = encode(&obj());
            if flip < enc.len() { enc[flip] ^= 1 << bit; }
            let cut = cut.min(enc.len());
            let _ = decode(Bytes::from(enc[..cut].to_vec()));
            let _ = decode(Bytes::from(enc));
        }
    }
}

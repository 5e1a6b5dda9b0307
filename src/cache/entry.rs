//! A cached object: its metadata and its body, and the one byte encoding that the disk and
//! Redis tiers store (pure functions, zero-copy decode).
//!
//! Metadata keeps the origin headers a client must see again (the ones the proxy passes:
//! Content-Type, ETag, Last-Modified, Cache-Control, Content-Encoding, Content-Disposition,
//! Content-Language, Expires, x-amz-version-id, x-amz-meta-*), the moment the response's age
//! was zero (its *age origin*, RFC 9111 §4.2.3: `Age` is the time since) and the freshness
//! deadline. The header fields are kept in one compact buffer (names corvid passes as one-byte
//! codes, values byte for byte: [`fields`]) and rendered into the response head by the hit
//! ([`Meta::write_header_block`]: a few copies per line, nothing allocated); the
//! `Cache-Control` directives are parsed from it only when a stale entry is decided about
//! ([`crate::http::cache_control`]).
//!
//! `Date` is not stored as a header: the hit writes `Date` formatted from the age origin,
//! which is the origin's `Date` whenever the origin's clock and `Age` agree with ours (the age
//! origin is derived from them), and stays consistent with the `Age` corvid sends (Date + Age
//! = now) when they do not. A revalidation moves the age origin, so it moves `Date` with it —
//! without the stored header fields changing, so tiers keep the body where it is.
//!
//! Why compact rather than the rendered lines (issue 16): the lines of a typical S3 object
//! (Content-Type, ETag, Last-Modified, Cache-Control, two `x-amz-meta-*`, `Date`) are ~245 B,
//! a 256 B allocation; the compact buffer of the same fields is 132 B. A hit renders it in
//! ~360 instructions where the copy of the block took ~40 (`perf/callgrind_hits.sh`: ~2.7% of
//! a hit, of which a faster request id paid back ~110; perf/RESULTS.md), a price for ~110 B
//! per entry. Values stay verbatim but two: an S3 MD5 `ETag` is kept as its 16 bytes and an
//! IMF-fixdate `Last-Modified` as its packed parts, when they render back byte for byte
//! (132 → 89 B for the typical object, −35 B RSS per entry; the hit renders them, +80
//! instructions, paid for by the body lent without a `Bytes`, below). [`Meta::etag`] and
//! [`Meta::last_modified`] therefore return a small [`fields::Text`] (borrowed or rendered)
//! instead of lending a `&str`. The disk and Redis encoding below is unchanged (names and
//! values spelled out): the compact form is this process's own, converted at the tier
//! boundary.
//!
//! In memory an entry is one allocation of this module's making (issue 16): a [`Meta`] (count,
//! fixed part, compact fields, and — for bodies up to [`INLINE_BODY_MAX`] that the memory tier
//! keeps — the body itself); the memory tier's node holds the key and the object as one word
//! ([`Packed`]). A hit sends such a body lent by the `Meta`'s own count
//! ([`CachedObject::send_body`] → `http::vectored::Body::Lent`), not as a `Bytes`: a `Bytes`
//! over it needs an owner record of its own (`Bytes::from_owner`, 32 B per entry with the
//! allocator's header). A typical 1 KiB entry was 427 B beyond its body with `Arc<Meta>`, a
//! boxed field buffer and a `Vec` body with its shared header; 384 B with the body in the
//! `Meta` lent through `Bytes::from_owner`; 344 B lent by the `Meta`'s count; 309 B with the
//! binary ETag and `Last-Modified`; 269 B with the object as one word in the node, and 248 B
//! with the node's hash dropped (`cache::memory`). A hit costs fewer instructions than before
//! these steps (`perf/entry_overhead.sh`, `perf/callgrind_hits.sh`, perf/RESULTS.md "fourth
//! step").
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

use bytes::Bytes;
use triomphe::ThinArc;

use crate::http::cache_control::{self, Directives};
use crate::http::date;
use crate::http::vectored::{Body, Lent};

const MAGIC: &[u8; 4] = b"CVE2";
/// The pseudo-field that carries a sliced object's length in the encoding (an object entry has
/// no body). No origin field has this name (corvid stores only the fields it passes), and
/// older corvid versions read it as one more stored field.
const SLICED_LENGTH: &str = "x-corvid-sliced-length";
/// Entries written before the status field (issue 10) still decode, as 200s.
const MAGIC_V1: &[u8; 4] = b"CVE1";

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

/// What a memory-tier entry costs beside its body, stored fields and key: the fixed part of
/// its `Meta` and that allocation's count, the memory tier's node (queue state, the one-word
/// [`Packed`] object, the key's length), its table slot and its place in a FIFO, the
/// allocator's own headers, and — once the tier is full and evicting — its share of the
/// table's spare slots, the ghost queue and freed-block fragmentation. Measured by
/// `perf/entry_overhead.sh` (perf/RESULTS.md "fourth step", issue 16): a typical 1 KiB entry
/// costs 248 B beyond its body while nothing is evicted (89 B of it stored fields, 40 B key);
/// with this charge a full 16 MiB or 64 MiB tier of 1 KiB objects, or a 16 MiB one of 200 B
/// objects, holds 0.97–0.99x its capacity in RSS (288 B, before the fourth step's savings,
/// left them at 0.87–0.97x).
pub const ENTRY_OVERHEAD: usize = 176;

/// Metadata of a cached object.
///
/// The passed origin header fields are kept in one compact buffer ([`Meta::fields`]): each
/// field is a one-byte code for a name corvid passes (`Content-Type`, `ETag`, …, and the
/// `x-amz-meta-` prefix) followed by the value's bytes, and a name outside that list is kept
/// verbatim. A hit renders the lines into the response head ([`Meta::write_header_block`]),
/// with `Date` formatted from the age origin: no `Date` text is stored. Values read back byte
/// for byte as the origin sent them (an S3 ETag and an IMF-fixdate `Last-Modified` are kept
/// in binary forms that render back exactly, see [`fields`]), so a client sees exactly the
/// header bytes it saw before; the
/// `Cache-Control` directives are parsed from the buffer when a stale entry is decided about
/// ([`Meta::directives`]), not kept parsed. Issue 16 measured ~1.6 KiB per 1 KiB entry beyond
/// the body with a vector of owned name/value strings, parsed directives and the rendered
/// lines beside each other, 568 B with the rendered lines alone, and less with this buffer
/// (`perf/entry_overhead.sh`, perf/RESULTS.md).
///
/// A `Meta` is one shared allocation, sized exactly: a count, the fixed part ([`MetaHead`]:
/// age origin, deadline, status, rendered length), the buffer's length and the buffer, behind
/// one pointer (`triomphe::ThinArc`; cloning it is one atomic increment, as cloning the
/// `Arc<Meta>` it replaced). The `Arc<Meta>` with a boxed buffer was two allocations, a
/// second count and a second pointer: 16 B more per 1 KiB entry (issue 16, perf/RESULTS.md).
/// Nothing in it changes after it is built: a revalidation or soft purge builds another.
#[derive(Clone)]
pub struct Meta(ThinArc<MetaHead, u8>);

/// The fixed part of a [`Meta`], in the same allocation as its fields (a [`Meta`] derefs to
/// it: `meta.expires_at_ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetaHead {
    /// The entry's age origin (unix ms): when its age was zero, for `Age` and `Date`. (The
    /// name and encoding predate RFC 9111 ages: it was the fill time, which is the age origin of
    /// a response that arrived with no `Age` and a current `Date`.)
    pub stored_at_ms: u64,
    /// Fresh until (unix ms); after that a request revalidates.
    pub expires_at_ms: u64,
    /// The origin's status: 200, or 404 for a negative entry (`cache.negative_ttl`), which has
    /// no body and answers the 404 from cache.
    pub status: u16,
    /// Length of the body kept at the end of this allocation (0: none; see
    /// [`CachedObject::inlined`]).
    inline: u16,
    /// Bytes of the rendered field lines (`Date` excluded): what a hit reserves at once. The
    /// top bit ([`SLICED`]) marks the object entry of a sliced object.
    lines: u32,
}

impl std::ops::Deref for Meta {
    type Target = MetaHead;
    fn deref(&self) -> &MetaHead {
        &self.0.header.header
    }
}

impl PartialEq for Meta {
    /// Same head and fields; where the body is kept does not matter.
    fn eq(&self, other: &Meta) -> bool {
        let head = |m: &Meta| MetaHead { inline: 0, ..**m };
        head(self) == head(other) && self.raw() == other.raw()
    }
}

impl Eq for Meta {}

impl std::fmt::Debug for Meta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meta")
            .field("head", &**self)
            .field("fields", &self.raw())
            .finish()
    }
}

/// The flag in [`Meta`]'s `lines` of a sliced object's entry (`object::slices`: its bytes are
/// in slices, the entry has no body).
const SLICED: u32 = 1 << 31;

/// The flag in [`Meta`]'s `lines` of a fleet member's local copy of an object another member
/// owns (`cluster.local_ttl`, `crate::fleet`): kept in this instance's memory tier only, never
/// written to disk or Redis.
const LOCAL: u32 = 1 << 30;

/// The bits of [`Meta`]'s `lines` that count rendered bytes.
const LINES: u32 = LOCAL - 1;

/// `Date: ` + IMF-fixdate + CRLF.
const DATE_LINE: usize = 37;

impl Meta {
    /// Metadata of passed origin `headers` (spelling corvid writes, value).
    pub fn new(headers: Vec<(String, String)>, stored_at_ms: u64, expires_at_ms: u64) -> Meta {
        let mut buf = Vec::with_capacity(headers.iter().map(|(n, v)| fields::len(n, v)).sum());
        let mut lines = 0usize;
        for (n, v) in &headers {
            fields::push(&mut buf, n, v);
            lines += n.len() + v.len() + 4;
        }
        let head = MetaHead {
            stored_at_ms,
            expires_at_ms,
            status: 200,
            inline: 0,
            lines: u32::try_from(lines).unwrap_or(u32::MAX).min(LINES),
        };
        Meta::of(head, &buf)
    }

    /// One allocation holding `head` and `raw` (the compact fields, then a sliced object's
    /// length), sized exactly; no body.
    fn of(head: MetaHead, raw: &[u8]) -> Meta {
        Meta(ThinArc::from_header_and_slice(
            MetaHead { inline: 0, ..head },
            raw,
        ))
    }

    /// The compact fields and, for a sliced object's entry, its length: the allocation's
    /// bytes without a body kept in it.
    fn raw(&self) -> &[u8] {
        let all = &self.0.slice;
        &all[..all.len() - usize::from(self.inline)]
    }

    /// The body kept at the end of this allocation (empty when there is none).
    fn inline_body(&self) -> &[u8] {
        let all = &self.0.slice;
        &all[all.len() - usize::from(self.inline)..]
    }

    /// The object entry of a sliced object of `len` bytes (`len` 0: a whole entry, unchanged).
    pub fn with_sliced_len(self, len: u64) -> Meta {
        if len == 0 || self.sliced_len().is_some() {
            return self;
        }
        let mut raw = Vec::with_capacity(self.raw().len() + 8);
        raw.extend_from_slice(self.raw());
        raw.extend_from_slice(&len.to_le_bytes());
        let head = MetaHead {
            lines: self.lines | SLICED,
            ..*self
        };
        Meta::of(head, &raw)
    }

    /// A fleet member's local copy ([`Meta::is_local`]) of this metadata, fresh until
    /// `until_ms` at the latest.
    pub fn local_until(self, until_ms: u64) -> Meta {
        let head = MetaHead {
            expires_at_ms: self.expires_at_ms.min(until_ms),
            lines: self.lines | LOCAL,
            ..*self
        };
        Meta::of(head, self.raw())
    }

    /// Whether this is a fleet member's local copy of an object another member owns: the
    /// tiers keep it in memory only (`cache::tiered`, `cache::front`).
    pub fn is_local(&self) -> bool {
        self.lines & LOCAL != 0
    }

    /// The object's length when this is the entry of a sliced object.
    pub fn sliced_len(&self) -> Option<u64> {
        if self.lines & SLICED == 0 {
            return None;
        }
        let (_, len) = self.raw().split_last_chunk::<8>()?;
        Some(u64::from_le_bytes(*len))
    }

    /// The compact fields without a sliced object's length.
    fn field_bytes(&self) -> &[u8] {
        let raw = self.raw();
        match self.lines & SLICED {
            0 => raw,
            _ => &raw[..raw.len() - 8],
        }
    }

    /// The same metadata for an answer with another status (a negative entry's 404).
    pub fn with_status(self, status: u16) -> Meta {
        if status == self.status {
            return self;
        }
        Meta::of(MetaHead { status, ..*self }, self.raw())
    }

    /// The same header fields with another age origin (and so `Date`) and deadline.
    pub fn with_times(&self, stored_at_ms: u64, expires_at_ms: u64) -> Meta {
        let head = MetaHead {
            stored_at_ms,
            expires_at_ms,
            ..**self
        };
        Meta::of(head, self.raw())
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
        self.with_times(self.stored_at_ms, expires_at_ms)
    }

    /// Appends the header lines a hit sends (`Name: value\r\n`…): the passed origin fields in
    /// corvid's spelling, then `Date` of the age origin. Allocation-free once `out` has room
    /// (a hit's reused head buffer).
    pub fn write_header_block(&self, out: &mut Vec<u8>) {
        out.reserve((self.lines & LINES) as usize + DATE_LINE);
        fields::render(self.field_bytes(), out);
        self.write_date(out);
    }

    /// [`Meta::write_header_block`] with the fields named in `replaced` (name, value) written
    /// with the given values instead of the stored ones — a client's `response-*` overrides
    /// (`object::overrides`), which are never stored: the stored fields of those names (any
    /// case) are left out and the given lines follow the others. Slower than the plain block
    /// (each stored field is compared with the replaced names), still allocation-free once
    /// `out` has room.
    pub fn write_header_block_replacing(&self, out: &mut Vec<u8>, replaced: &[(&str, &str)]) {
        let given: usize = replaced.iter().map(|(n, v)| n.len() + v.len() + 4).sum();
        out.reserve((self.lines & LINES) as usize + given + DATE_LINE);
        fields::render_except(self.field_bytes(), out, |prefix, rest| {
            replaced
                .iter()
                .any(|(n, _)| fields::name_is(n, prefix, rest))
        });
        for (n, v) in replaced {
            for part in [n, ": ", v, "\r\n"] {
                out.extend_from_slice(part.as_bytes());
            }
        }
        self.write_date(out);
    }

    /// `Date: ` of the age origin, one line.
    fn write_date(&self, out: &mut Vec<u8>) {
        let mut line = *b"Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n";
        line[6..35].copy_from_slice(&date::cached_imf_fixdate(self.stored_at_ms / 1000));
        out.extend_from_slice(&line);
    }

    /// The passed origin fields in their compact form: equal for two entries exactly when
    /// their stored header fields are.
    pub fn fields(&self) -> &[u8] {
        self.field_bytes()
    }

    /// Bytes this metadata keeps beside its fixed part (what [`CachedObject::weight`] adds).
    pub fn stored_len(&self) -> usize {
        self.raw().len()
    }

    /// The passed origin fields, in order.
    pub fn headers(&self) -> fields::Iter<'_> {
        fields::Iter::new(self.field_bytes())
    }

    /// [`Meta::headers`] as owned pairs (a 304's update, an encoding).
    pub fn header_pairs(&self) -> Vec<(String, String)> {
        self.headers()
            .map(|f| (f.name(), f.value.to_string()))
            .collect()
    }

    /// The `Cache-Control` directives of the stored fields, every field line counted.
    pub fn directives(&self) -> Directives {
        cache_control::parse_directives(
            self.headers()
                .filter(|f| f.is("cache-control"))
                .filter_map(|f| f.value.borrowed()),
        )
    }

    /// The first stored field named `name` (ASCII case-insensitive), as text: an S3 ETag and
    /// an IMF-fixdate `Last-Modified` are kept in binary and rendered here ([`fields`]).
    pub fn header(&self, name: &str) -> Option<fields::Text<'_>> {
        self.headers().find(|f| f.is(name)).map(|f| f.value)
    }

    pub fn etag(&self) -> Option<fields::Text<'_>> {
        self.header("etag")
    }

    pub fn last_modified(&self) -> Option<fields::Text<'_>> {
        self.header("last-modified")
    }

    pub fn is_fresh(&self, now_ms: u64) -> bool {
        now_ms < self.expires_at_ms
    }
}

/// The compact form of a set of header fields. Per field:
///
/// | bytes | meaning |
/// |---|---|
/// | code | 1–9: a name of [`KNOWN`](fields::KNOWN); [`META`](fields::META): `x-amz-meta-` + a name; [`OTHER`](fields::OTHER): a name |
/// | length, name | for [`META`](fields::META) and [`OTHER`](fields::OTHER) only |
/// | length, value | the value's bytes as received |
///
/// | [`ETAG_MD5`](fields::ETAG_MD5), 16 bytes | `ETag: "<32 lowercase hex digits>"` (an S3 MD5 ETag) |
/// | [`LAST_MODIFIED`](fields::LAST_MODIFIED), 6 bytes | `Last-Modified:` an IMF-fixdate, its parts packed |
///
/// A length is one byte below 255, else 255 and four bytes little-endian. The codes only
/// shorten names spelled exactly as corvid writes them, and the two binary forms only values
/// that render back byte for byte; anything else is kept verbatim, so a field always reads
/// back as it was given. The binary forms save 43 B of a typical S3 object's 132 (issue 16,
/// perf/RESULTS.md "fourth step"); a hit renders them (a table lookup per ETag byte, the
/// date's parts through two-digit tables) instead of copying the text.
pub mod fields {
    /// Names that take one byte: the ones corvid passes (`object::upstream::PASSED_HEADERS`
    /// spelling; `Content-Range` is never stored). Append only: the codes are positions.
    pub const KNOWN: [&str; 9] = [
        "Content-Type",
        "ETag",
        "Last-Modified",
        "Cache-Control",
        "Content-Encoding",
        "Content-Disposition",
        "Content-Language",
        "Expires",
        "x-amz-version-id",
    ];
    /// `x-amz-meta-` and the rest of the name.
    pub const META: u8 = 0x40;
    /// Any other name, verbatim.
    pub const OTHER: u8 = 0x41;
    /// `ETag` whose value is `"` + 32 lowercase hex digits + `"`: the 16 bytes they spell.
    pub const ETAG_MD5: u8 = 0x42;
    /// `Last-Modified` whose value is an IMF-fixdate: its parts packed in 6 bytes (`Date`).
    pub const LAST_MODIFIED: u8 = 0x43;
    const META_PREFIX: &str = "x-amz-meta-";
    const ETAG: &str = "ETag";
    const LAST_MODIFIED_NAME: &str = "Last-Modified";
    const ETAG_LEN: usize = 34;
    const DATE_LEN: usize = 29;

    /// The 16 bytes of an S3 MD5 ETag (`"` + 32 lowercase hex digits + `"`), `None` for any
    /// other value (uppercase digits too: they would not render back as given).
    fn md5_etag(value: &str) -> Option<[u8; 16]> {
        let hex = value.strip_prefix('"')?.strip_suffix('"')?.as_bytes();
        if hex.len() != 32 {
            return None;
        }
        let nibble = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        let mut out = [0u8; 16];
        for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
            *o = nibble(pair[0])? << 4 | nibble(pair[1])?;
        }
        Some(out)
    }

    /// Two lowercase hex digits per byte value.
    static HEX2: [[u8; 2]; 256] = {
        let digits = b"0123456789abcdef";
        let mut t = [[0u8; 2]; 256];
        let mut i = 0;
        while i < 256 {
            t[i] = [digits[i >> 4], digits[i & 15]];
            i += 1;
        }
        t
    };

    /// Two decimal digits per value 0–99.
    static DEC2: [[u8; 2]; 100] = {
        let mut t = [[0u8; 2]; 100];
        let mut i = 0;
        while i < 100 {
            t[i] = [b'0' + (i / 10) as u8, b'0' + (i % 10) as u8];
            i += 1;
        }
        t
    };

    fn render_etag(b: &[u8; 16]) -> [u8; ETAG_LEN] {
        let mut out = [b'"'; ETAG_LEN];
        for (i, byte) in b.iter().enumerate() {
            out[1 + 2 * i..3 + 2 * i].copy_from_slice(&HEX2[usize::from(*byte)]);
        }
        out
    }

    const DAY_NAMES: [&[u8; 3]; 7] = [b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun"];
    const MONTH_NAMES: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];

    /// An IMF-fixdate's parts as written (`Www, DD Mon YYYY HH:MM:SS GMT`): the day name is
    /// kept, not derived, and no calendar arithmetic happens either way, so any text of this
    /// exact shape (day 1–31, hour 0–23, minute and second 0–59, exact-case names) renders
    /// back byte for byte. Packed: weekday 3 bits, day 5, month 4, year 14, hour 5, minute 6,
    /// second 6 (43 bits in 6 bytes).
    struct Date;

    impl Date {
        fn pack(value: &str) -> Option<[u8; 6]> {
            let v = value.as_bytes();
            if v.len() != DATE_LEN
                || &v[3..5] != b", "
                || v[7] != b' '
                || v[11] != b' '
                || v[16] != b' '
                || v[19] != b':'
                || v[22] != b':'
                || &v[25..] != b" GMT"
            {
                return None;
            }
            let num = |r: std::ops::Range<usize>| -> Option<u64> {
                v[r].iter().try_fold(0u64, |n, c| {
                    c.is_ascii_digit().then(|| n * 10 + u64::from(c - b'0'))
                })
            };
            let wd = DAY_NAMES.iter().position(|d| d[..] == v[..3])? as u64;
            let mo = MONTH_NAMES.iter().position(|m| m[..] == v[8..11])? as u64;
            let (day, year) = (num(5..7)?, num(12..16)?);
            let (h, m, sec) = (num(17..19)?, num(20..22)?, num(23..25)?);
            if !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 59 {
                return None;
            }
            let bits = wd | day << 3 | mo << 8 | year << 12 | h << 26 | m << 31 | sec << 37;
            let mut out = [0u8; 6];
            out.copy_from_slice(&bits.to_le_bytes()[..6]);
            Some(out)
        }

        fn render(b: &[u8; 6]) -> [u8; DATE_LEN] {
            let mut le = [0u8; 8];
            le[..6].copy_from_slice(b);
            let bits = u64::from_le_bytes(le);
            let field = |at: u32, width: u32| (bits >> at) as usize & ((1 << width) - 1);
            let year = field(12, 14);
            let mut out = *b"Thu, 01 Jan 1970 00:00:00 GMT";
            out[..3].copy_from_slice(DAY_NAMES[field(0, 3) % 7]);
            out[5..7].copy_from_slice(&DEC2[field(3, 5) % 100]);
            out[8..11].copy_from_slice(MONTH_NAMES[field(8, 4) % 12]);
            out[12..14].copy_from_slice(&DEC2[year / 100 % 100]);
            out[14..16].copy_from_slice(&DEC2[year % 100]);
            out[17..19].copy_from_slice(&DEC2[field(26, 5) % 100]);
            out[20..22].copy_from_slice(&DEC2[field(31, 6) % 100]);
            out[23..25].copy_from_slice(&DEC2[field(37, 6) % 100]);
            out
        }
    }

    /// A field's value as text: borrowed from the buffer, or rendered from a binary form
    /// (derefs to `str`).
    #[derive(Clone, Copy)]
    pub struct Text<'a>(TextRepr<'a>);

    #[derive(Clone, Copy)]
    enum TextRepr<'a> {
        Borrowed(&'a str),
        Rendered([u8; ETAG_LEN], u8),
    }

    impl<'a> Text<'a> {
        /// The value when it is kept as text (never for the binary forms: those are `ETag`
        /// and `Last-Modified`).
        pub fn borrowed(&self) -> Option<&'a str> {
            match self.0 {
                TextRepr::Borrowed(s) => Some(s),
                TextRepr::Rendered(..) => None,
            }
        }

        fn rendered(b: &[u8]) -> Text<'a> {
            let mut buf = [0u8; ETAG_LEN];
            buf[..b.len()].copy_from_slice(b);
            Text(TextRepr::Rendered(buf, b.len() as u8))
        }
    }

    impl std::ops::Deref for Text<'_> {
        type Target = str;
        fn deref(&self) -> &str {
            match &self.0 {
                TextRepr::Borrowed(s) => s,
                // Rendered by this module from ASCII tables.
                TextRepr::Rendered(b, n) => {
                    std::str::from_utf8(&b[..usize::from(*n)]).unwrap_or("")
                }
            }
        }
    }

    impl PartialEq for Text<'_> {
        fn eq(&self, other: &Text<'_>) -> bool {
            **self == **other
        }
    }

    impl Eq for Text<'_> {}

    impl std::fmt::Debug for Text<'_> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            std::fmt::Debug::fmt(&**self, f)
        }
    }

    impl std::fmt::Display for Text<'_> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self)
        }
    }

    fn push_len(out: &mut Vec<u8>, n: usize) {
        if n < 255 {
            out.push(n as u8);
        } else {
            out.push(255);
            out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
        }
    }

    fn push_bytes(out: &mut Vec<u8>, b: &[u8]) {
        push_len(out, b.len());
        out.extend_from_slice(b);
    }

    fn len_len(n: usize) -> usize {
        if n < 255 {
            1
        } else {
            5
        }
    }

    /// The bytes [`push`] appends for `name: value`.
    pub fn len(name: &str, value: &str) -> usize {
        if name == ETAG && md5_etag(value).is_some() {
            return 17;
        }
        if name == LAST_MODIFIED_NAME && Date::pack(value).is_some() {
            return 7;
        }
        let name = if KNOWN.contains(&name) {
            0
        } else {
            let n = name
                .strip_prefix(META_PREFIX)
                .filter(|r| !r.is_empty())
                .unwrap_or(name);
            len_len(n.len()) + n.len()
        };
        1 + name + len_len(value.len()) + value.len()
    }

    /// Appends the field `name: value` to `out`.
    pub fn push(out: &mut Vec<u8>, name: &str, value: &str) {
        if name == ETAG {
            if let Some(b) = md5_etag(value) {
                out.push(ETAG_MD5);
                out.extend_from_slice(&b);
                return;
            }
        }
        if name == LAST_MODIFIED_NAME {
            if let Some(b) = Date::pack(value) {
                out.push(LAST_MODIFIED);
                out.extend_from_slice(&b);
                return;
            }
        }
        if let Some(i) = KNOWN.iter().position(|k| *k == name) {
            out.push(i as u8 + 1);
        } else if let Some(rest) = name.strip_prefix(META_PREFIX).filter(|r| !r.is_empty()) {
            out.push(META);
            push_bytes(out, rest.as_bytes());
        } else {
            out.push(OTHER);
            push_bytes(out, name.as_bytes());
        }
        push_bytes(out, value.as_bytes());
    }

    /// One stored field. The name is `prefix` + `rest` (`x-amz-meta-` is kept once for all).
    #[derive(Debug, Clone, Copy)]
    pub struct Field<'a> {
        pub prefix: &'static str,
        pub rest: &'a str,
        pub value: Text<'a>,
    }

    impl Field<'_> {
        /// Whether the name is `name`, ASCII case-insensitively.
        pub fn is(&self, name: &str) -> bool {
            name_is(name, self.prefix, self.rest.as_bytes())
        }

        /// The name as corvid writes it.
        pub fn name(&self) -> String {
            [self.prefix, self.rest].concat()
        }
    }

    /// A field's value as stored.
    enum Raw<'a> {
        Bytes(&'a [u8]),
        Etag(&'a [u8; 16]),
        Date(&'a [u8; 6]),
    }

    /// A parsed field: (prefix, name rest, value), or `None` at the end (or at bytes this
    /// module did not write).
    fn next_raw<'a>(b: &mut &'a [u8]) -> Option<(&'static str, &'a [u8], Raw<'a>)> {
        let (&code, rest) = b.split_first()?;
        *b = rest;
        let (prefix, name) = match code {
            META => (META_PREFIX, take(b)?),
            OTHER => ("", take(b)?),
            ETAG_MD5 => {
                let (v, rest) = b.split_first_chunk::<16>()?;
                *b = rest;
                return Some((ETAG, &b""[..], Raw::Etag(v)));
            }
            LAST_MODIFIED => {
                let (v, rest) = b.split_first_chunk::<6>()?;
                *b = rest;
                return Some((LAST_MODIFIED_NAME, &b""[..], Raw::Date(v)));
            }
            c => (*KNOWN.get(usize::from(c).checked_sub(1)?)?, &b""[..]),
        };
        Some((prefix, name, Raw::Bytes(take(b)?)))
    }

    fn take<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
        let (&n, rest) = b.split_first()?;
        let (n, rest) = if n < 255 {
            (usize::from(n), rest)
        } else {
            let (l, rest) = rest.split_first_chunk::<4>()?;
            (u32::from_le_bytes(*l) as usize, rest)
        };
        if n > rest.len() {
            return None;
        }
        let (v, rest) = rest.split_at(n);
        *b = rest;
        Some(v)
    }

    /// `Name: ` of each code of [`KNOWN`], for [`render`].
    pub(super) const KNOWN_HEADS: [&[u8]; 9] = [
        b"Content-Type: ",
        b"ETag: ",
        b"Last-Modified: ",
        b"Cache-Control: ",
        b"Content-Encoding: ",
        b"Content-Disposition: ",
        b"Content-Language: ",
        b"Expires: ",
        b"x-amz-version-id: ",
    ];

    /// Appends `Name: value\r\n` for each field of `b` (a hit: kept to a few copies per line).
    pub fn render(b: &[u8], out: &mut Vec<u8>) {
        render_except(b, out, |_, _| false);
    }

    /// [`render`] without the fields whose name (`prefix` + `rest`) `skip` picks: a hit with
    /// `response-*` overrides. The binary forms are rendered straight into `out` either way.
    #[inline(always)]
    pub fn render_except(mut b: &[u8], out: &mut Vec<u8>, skip: impl Fn(&str, &[u8]) -> bool) {
        while let Some((&code, rest)) = b.split_first() {
            b = rest;
            match code {
                ETAG_MD5 => {
                    let Some((v, rest)) = b.split_first_chunk::<16>() else {
                        return;
                    };
                    b = rest;
                    if skip(ETAG, b"") {
                        continue;
                    }
                    let mut line = *b"ETag: \"0123456789abcdef0123456789abcdef\"\r\n";
                    line[6..6 + ETAG_LEN].copy_from_slice(&render_etag(v));
                    out.extend_from_slice(&line);
                }
                LAST_MODIFIED => {
                    let Some((v, rest)) = b.split_first_chunk::<6>() else {
                        return;
                    };
                    b = rest;
                    if skip(LAST_MODIFIED_NAME, b"") {
                        continue;
                    }
                    let mut line = *b"Last-Modified: Thu, 01 Jan 1970 00:00:00 GMT\r\n";
                    line[15..15 + DATE_LEN].copy_from_slice(&Date::render(v));
                    out.extend_from_slice(&line);
                }
                META | OTHER => {
                    let Some(name) = take(&mut b) else { return };
                    let Some(value) = take(&mut b) else { return };
                    let prefix = if code == META { META_PREFIX } else { "" };
                    if skip(prefix, name) {
                        continue;
                    }
                    out.extend_from_slice(prefix.as_bytes());
                    out.extend_from_slice(name);
                    out.extend_from_slice(b": ");
                    out.extend_from_slice(value);
                    out.extend_from_slice(b"\r\n");
                }
                c => {
                    let i = usize::from(c).wrapping_sub(1);
                    let (Some(head), Some(name)) = (KNOWN_HEADS.get(i), KNOWN.get(i)) else {
                        return;
                    };
                    let Some(value) = take(&mut b) else { return };
                    if skip(name, b"") {
                        continue;
                    }
                    out.extend_from_slice(head);
                    out.extend_from_slice(value);
                    out.extend_from_slice(b"\r\n");
                }
            }
        }
    }

    /// Whether the name `prefix` + `rest` is `name`, ASCII case-insensitively.
    pub fn name_is(name: &str, prefix: &str, rest: &[u8]) -> bool {
        let n = name.as_bytes();
        n.len() == prefix.len() + rest.len()
            && n[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
            && n[prefix.len()..].eq_ignore_ascii_case(rest)
    }

    /// The fields of a compact buffer, in order.
    pub struct Iter<'a> {
        b: &'a [u8],
    }

    impl<'a> Iter<'a> {
        pub fn new(b: &'a [u8]) -> Iter<'a> {
            Iter { b }
        }
    }

    impl<'a> Iterator for Iter<'a> {
        type Item = Field<'a>;
        fn next(&mut self) -> Option<Field<'a>> {
            let (prefix, rest, value) = next_raw(&mut self.b)?;
            // Written from `&str`s by `push`, so both are UTF-8.
            let value = match value {
                Raw::Bytes(v) => Text(TextRepr::Borrowed(std::str::from_utf8(v).ok()?)),
                Raw::Etag(v) => Text::rendered(&render_etag(v)),
                Raw::Date(v) => Text::rendered(&Date::render(v)),
            };
            Some(Field {
                prefix,
                rest: std::str::from_utf8(rest).ok()?,
                value,
            })
        }
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
///
/// The body is a `Bytes` (a fill's, or a slice of a disk or Redis record), or — in the memory
/// tier, for bodies up to [`INLINE_BODY_MAX`] — kept at the end of the [`Meta`]'s own
/// allocation ([`CachedObject::inlined`]) and then lent to a hit by the `Meta`'s count
/// ([`CachedObject::send_body`]). Both fields are private so that the two stay together.
#[derive(Debug, Clone)]
pub struct CachedObject {
    meta: Meta,
    /// The body, or empty when it is kept in `meta`'s allocation (`meta.inline` != 0).
    body: Bytes,
}

/// Bodies of at most this many bytes are kept in their metadata's allocation by the memory
/// tier ([`CachedObject::inlined`]). What that saves does not depend on the body's size (the
/// body's own allocation header and rounding, and the `Bytes` shared header), so the bound
/// only keeps the copy that packing makes (once per store, under 1 µs) small; 4 KiB covers the
/// small objects whose bookkeeping matters (issue 16) and fits the `u16` that records the
/// length.
pub const INLINE_BODY_MAX: usize = 4096;
const _: () = assert!(INLINE_BODY_MAX <= u16::MAX as usize);

/// The owner of a body kept in its metadata's allocation when it is asked for as a `Bytes`
/// ([`CachedObject::body_bytes`], off the hit path): the `Bytes` holds the metadata.
struct InlineBody(Meta);

impl AsRef<[u8]> for InlineBody {
    fn as_ref(&self) -> &[u8] {
        self.0.inline_body()
    }
}

/// Gives up the `Meta` reference that [`CachedObject::send_body`] lent a body with.
///
/// # Safety
/// `owner` came from `ThinArc::into_raw` of a `Meta`'s allocation and is given up once.
unsafe fn release_meta(owner: *const ()) {
    // SAFETY: the caller's contract: one counted reference, from `into_raw`.
    drop(unsafe { ThinArc::<MetaHead, u8>::from_raw(owner.cast()) });
}

impl CachedObject {
    /// An object of `meta` and `body`.
    pub fn new(meta: Meta, body: Bytes) -> CachedObject {
        // A `Meta` that keeps another object's body is paired with an empty one only by
        // mistake; keep the pair consistent (the body is the one given).
        let meta = match (meta.inline, body.is_empty()) {
            (0, _) | (_, false) => meta,
            _ => Meta::of(*meta, meta.raw()),
        };
        CachedObject { meta, body }
    }

    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// The same body with other metadata (new times, another status).
    pub fn with_meta(&self, meta: Meta) -> CachedObject {
        CachedObject::new(meta, self.body_bytes())
    }

    /// Gives the object other metadata (new times), keeping its body.
    pub fn set_meta(&mut self, meta: Meta) {
        let body = match self.is_inlined() {
            true => self.body_bytes(),
            false => std::mem::take(&mut self.body),
        };
        *self = CachedObject::new(meta, body);
    }

    /// The body's bytes.
    pub fn body(&self) -> &[u8] {
        if self.is_inlined() {
            self.meta.inline_body()
        } else {
            &self.body
        }
    }

    pub fn body_len(&self) -> usize {
        self.body().len()
    }

    /// The body as a `Bytes` (a disk or Redis write, a slice handed to a waiting reader): a
    /// clone, or for a body kept in the metadata a view that holds the metadata (one 32-byte
    /// owner record allocated: not for the hit path, which uses [`CachedObject::send_body`]).
    pub fn body_bytes(&self) -> Bytes {
        if self.is_inlined() {
            Bytes::from_owner(InlineBody(self.meta.clone()))
        } else {
            self.body.clone()
        }
    }

    /// `range` of the body to send, never copied and never allocated: a slice of the `Bytes`,
    /// or the bytes kept in the metadata lent with one count increment.
    ///
    /// # Panics
    /// When `range` is not within the body.
    pub fn send_body(&self, range: std::ops::Range<usize>) -> Body {
        if !self.is_inlined() {
            return Body::Shared(self.body.slice(range));
        }
        let b = &self.meta.inline_body()[range];
        let owner = ThinArc::into_raw(self.meta.0.clone());
        // SAFETY: `owner` is one counted reference to the allocation the bytes are in, given
        // up once by `release_meta`; a `Meta` is never written after it is built, and its
        // allocation does not move.
        Body::Lent(unsafe { Lent::new(b.as_ptr(), b.len(), owner.cast(), release_meta) })
    }

    /// The metadata and the body as a `Bytes` ([`CachedObject::body_bytes`]).
    pub fn into_parts(self) -> (Meta, Bytes) {
        let body = self.body_bytes();
        (self.meta, body)
    }

    /// The same entry with a small body (1 to [`INLINE_BODY_MAX`] bytes) copied into its
    /// metadata's allocation: the memory tier keeps entries this way (`Weighted::packed`).
    /// A body from a `Vec` costs its allocation's header and rounding and a 32-byte shared
    /// header of its own; kept inline, it costs neither, and a hit lends it by the
    /// metadata's count ([`CachedObject::send_body`]; a `Bytes::from_owner` view would add a
    /// 32-byte owner record per entry). A body kept inline pins nothing else (a disk or
    /// Redis body is a slice of the whole record it was read with). Unchanged when already
    /// packed, larger, empty, or a sliced object's entry.
    pub fn inlined(self) -> CachedObject {
        let n = self.body.len();
        let m = &self.meta;
        if self.is_inlined() || n == 0 || n > INLINE_BODY_MAX || m.sliced_len().is_some() {
            return self;
        }
        let raw = m.raw();
        let mut all = Vec::with_capacity(raw.len() + n);
        all.extend_from_slice(raw);
        all.extend_from_slice(&self.body);
        let head = MetaHead {
            inline: n as u16,
            ..**m
        };
        let meta = Meta(ThinArc::from_header_and_slice(head, &all));
        CachedObject {
            meta,
            body: Bytes::new(),
        }
    }

    /// Whether the body is the one kept in the metadata's allocation ([`CachedObject::inlined`]).
    pub fn is_inlined(&self) -> bool {
        self.meta.inline != 0 && self.body.is_empty()
    }

    /// Bytes charged against a tier's capacity: what the entry really costs in memory — its
    /// body, its header lines and [`ENTRY_OVERHEAD`] (the memory tier adds the key's length),
    /// so that a full tier's RSS is its capacity.
    pub fn weight(&self) -> usize {
        self.body_len() + self.meta.stored_len() + ENTRY_OVERHEAD
    }

    /// The same entry, stale from `at_ms` on (soft purge): `None` when it already is (its
    /// deadline is never moved later). Same body, same headers, so the same weight.
    pub fn stale_since(&self, at_ms: u64) -> Option<CachedObject> {
        (self.meta.expires_at_ms > at_ms).then(|| self.with_meta(self.meta.refreshed(at_ms)))
    }
}

/// A [`CachedObject`] in one word, as the memory tier keeps it (`cache::memory::Slot`): the
/// `Meta` pointer of an object whose body is kept in it ([`CachedObject::inlined`]), else a
/// boxed object, told apart by the pointer's low bit (both allocations are 8-aligned, so it is
/// free). The object's own 40 bytes (`Meta` pointer and `Bytes`) in every memory-tier node
/// made the node a 128-byte allocation for a 40-byte key; with one word it is 96 (issue 16,
/// perf/RESULTS.md "fourth step"). A hit reads it back with one count increment and no
/// allocation ([`Packed::get`]); an object with a separate body (over [`INLINE_BODY_MAX`], or
/// empty) pays a box (32 B, plus a pointer chase on its hits) that is small beside its body.
pub struct Packed(std::ptr::NonNull<u8>);

/// The low bit of a [`Packed`] that marks a boxed object.
const BOXED: usize = 1;

// SAFETY: a `Packed` owns either one counted reference to a `Meta`'s allocation or one boxed
// `CachedObject`; both are `Send` and `Sync` (a `ThinArc` of `Send + Sync` data, a `Bytes`),
// and `Packed` gives access to nothing but clones of them.
unsafe impl Send for Packed {}
// SAFETY: as for `Send`: `&Packed` only reads (clones) what it owns.
unsafe impl Sync for Packed {}

impl Packed {
    /// `obj` in one word.
    pub fn new(obj: CachedObject) -> Packed {
        if obj.is_inlined() {
            let raw = ThinArc::into_raw(obj.meta.0).cast::<u8>().cast_mut();
            // SAFETY: `into_raw` of a live `ThinArc` is never null.
            return Packed(unsafe { std::ptr::NonNull::new_unchecked(raw) });
        }
        let raw = Box::into_raw(Box::new(obj)).cast::<u8>();
        debug_assert_eq!(raw as usize & BOXED, 0, "a box is 8-aligned");
        // SAFETY: a box's pointer is not null, and setting its low bit (clear: 8-aligned)
        // keeps it non-null.
        Packed(unsafe { std::ptr::NonNull::new_unchecked(raw.map_addr(|a| a | BOXED)) })
    }

    fn boxed(&self) -> Option<*mut CachedObject> {
        let p = self.0.as_ptr();
        (p as usize & BOXED != 0).then(|| p.map_addr(|a| a & !BOXED).cast())
    }

    /// The object: one count increment (and for a boxed one a `Bytes` clone), no allocation.
    #[inline]
    pub fn get(&self) -> CachedObject {
        match self.boxed() {
            // SAFETY: `self` owns the box until it is dropped, so it is live here.
            Some(b) => unsafe { (*b).clone() },
            None => {
                // SAFETY: `self.0` came from `ThinArc::into_raw` and `self` still owns that
                // reference; `ManuallyDrop` keeps it owned by `self` after the clone.
                let meta = std::mem::ManuallyDrop::new(unsafe {
                    ThinArc::<MetaHead, u8>::from_raw(self.0.as_ptr().cast())
                });
                CachedObject {
                    meta: Meta(ThinArc::clone(&meta)),
                    body: Bytes::new(),
                }
            }
        }
    }

    /// The object, without a count increment.
    pub fn into_object(self) -> CachedObject {
        let this = std::mem::ManuallyDrop::new(self);
        match this.boxed() {
            // SAFETY: `this` owned the box and is not dropped (`ManuallyDrop`): ownership moves
            // to the returned value.
            Some(b) => *unsafe { Box::from_raw(b) },
            None => {
                // SAFETY: as above, for the reference from `ThinArc::into_raw`.
                let meta = unsafe { ThinArc::from_raw(this.0.as_ptr().cast()) };
                CachedObject {
                    meta: Meta(meta),
                    body: Bytes::new(),
                }
            }
        }
    }
}

impl Drop for Packed {
    fn drop(&mut self) {
        match self.boxed() {
            // SAFETY: `self` owns the box; it is freed once, here.
            Some(b) => drop(unsafe { Box::from_raw(b) }),
            // SAFETY: `self` owns one reference from `ThinArc::into_raw`, given up once, here.
            None => drop(unsafe { ThinArc::<MetaHead, u8>::from_raw(self.0.as_ptr().cast()) }),
        }
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
    let m = obj.meta();
    let body = obj.body();
    let mut out = Vec::with_capacity(40 + 2 * m.stored_len() + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&m.stored_at_ms.to_le_bytes());
    out.extend_from_slice(&m.expires_at_ms.to_le_bytes());
    out.extend_from_slice(&m.status.to_le_bytes());
    let object_len = m.sliced_len().map(|n| n.to_string());
    let count = m.headers().count() + usize::from(object_len.is_some());
    out.extend_from_slice(&(count as u16).to_le_bytes());
    let field = |out: &mut Vec<u8>, name: [&str; 2], value: &str| {
        out.extend_from_slice(&((name[0].len() + name[1].len()) as u16).to_le_bytes());
        out.extend_from_slice(name[0].as_bytes());
        out.extend_from_slice(name[1].as_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(value.as_bytes());
    };
    for f in m.headers() {
        field(&mut out, [f.prefix, f.rest], &f.value);
    }
    if let Some(len) = &object_len {
        field(&mut out, [SLICED_LENGTH, ""], len);
    }
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(body);
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
            object_len = value.parse().ok().filter(|n| *n > 0)?;
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
    Some(CachedObject::new(meta, bytes.slice(start..end)))
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

    fn block(m: &Meta) -> Vec<u8> {
        let mut out = Vec::new();
        m.write_header_block(&mut out);
        out
    }

    fn obj() -> CachedObject {
        CachedObject {
            meta: Meta::new(
                vec![
                    ("Content-Type".into(), "image/png".into()),
                    ("ETag".into(), "\"abc\"".into()),
                    ("x-amz-meta-owner".into(), "ünï".into()),
                ],
                1_700_000_000_000,
                1_700_000_060_000,
            ),
            body: Bytes::from_static(b"\x00\x01binary body\xff"),
        }
    }

    #[test]
    fn round_trip_zero_copy() {
        let o = obj();
        let enc = Bytes::from(encode(&o));
        let d = decode(enc.clone()).unwrap();
        assert_eq!(d.meta, o.meta);
        assert_eq!(d.body, o.body);
        assert_eq!(d.meta.etag().as_deref(), Some("\"abc\""));
        assert_eq!(
            block(&d.meta),
            &b"Content-Type: image/png\r\nETag: \"abc\"\r\nx-amz-meta-owner: \xc3\xbcn\xc3\xaf\r\nDate: Tue, 14 Nov 2023 22:13:20 GMT\r\n"[..]
        );
        // The body points into the encoded buffer.
        assert_eq!(d.body.as_ptr(), enc[enc.len() - o.body.len()..].as_ptr());
    }

    /// Replaced fields are left out whatever their case and the given lines follow; the rest
    /// renders as the plain block does.
    #[test]
    fn header_block_replacing_leaves_out_the_replaced_fields() {
        let m = obj().meta;
        let mut plain = Vec::new();
        m.write_header_block(&mut plain);
        let mut same = Vec::new();
        m.write_header_block_replacing(&mut same, &[]);
        assert_eq!(plain, same);
        let mut out = Vec::new();
        m.write_header_block_replacing(
            &mut out,
            &[
                ("content-type", "text/x-a"),
                ("Content-Disposition", "inline"),
            ],
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "ETag: \"abc\"\r\nx-amz-meta-owner: \u{fc}n\u{ef}\r\ncontent-type: text/x-a\r\n\
             Content-Disposition: inline\r\nDate: Tue, 14 Nov 2023 22:13:20 GMT\r\n"
        );
        // Fields kept in binary forms are left out, or rendered, the same way.
        let m = Meta::new(typical(), 1_700_000_000_000, 1);
        let mut out = Vec::new();
        m.write_header_block_replacing(&mut out, &[("etag", "\"x\""), ("X-AMZ-META-OWNER", "me")]);
        let expected: Vec<(String, String)> = typical()
            .into_iter()
            .filter(|(n, _)| n != "ETag" && n != "x-amz-meta-owner")
            .chain(
                [("etag", "\"x\""), ("X-AMZ-META-OWNER", "me")].map(|(n, v)| (n.into(), v.into())),
            )
            .collect();
        assert_eq!(out, lines_of(&expected, 1_700_000_000_000));
        let mut out = Vec::new();
        m.write_header_block_replacing(&mut out, &[("last-modified", "never")]);
        assert!(!String::from_utf8(out).unwrap().contains("2026"));
    }

    #[test]
    fn negative_entries_round_trip_and_v1_entries_read_as_200() {
        let neg = CachedObject {
            meta: Meta::new(vec![], 1_000, 2_000).with_status(404),
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
        assert_eq!(m.sliced_len(), Some(5 << 30));
        assert_eq!(m.fields(), o.meta.fields(), "the length is not a field");
        assert_eq!(m.header_pairs(), o.meta.header_pairs());
        let entry = CachedObject {
            meta: m,
            body: Bytes::new(),
        };
        let d = decode(Bytes::from(encode(&entry))).unwrap();
        assert_eq!(d.meta.sliced_len(), Some(5 << 30));
        let (mut a, mut b) = (Vec::new(), Vec::new());
        d.meta.write_header_block(&mut a);
        o.meta.write_header_block(&mut b);
        assert_eq!(a, b, "not a header");
        assert_eq!(d.meta.with_times(1, 2).sliced_len(), Some(5 << 30));
        assert_eq!(d.meta.refreshed(2).sliced_len(), Some(5 << 30));
        assert_eq!(
            decode(Bytes::from(encode(&o))).unwrap().meta.sliced_len(),
            None
        );
        // A malformed length is a corrupt entry, not a whole object.
        let mut bad = encode(&entry);
        let digits = (5u64 << 30).to_string();
        let at = bad
            .windows(digits.len())
            .position(|w| w == digits.as_bytes())
            .unwrap();
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
        assert_eq!(block(&r), block(&o.meta));
    }

    /// The fields of a typical S3 object (as `examples/entry_overhead.rs` stores them).
    fn typical() -> Vec<(String, String)> {
        [
            ("Content-Type", "image/jpeg"),
            ("ETag", "\"0123456789abcdef0123456789abcdef\""),
            ("Last-Modified", "Sat, 05 Dec 2026 10:00:00 GMT"),
            ("Cache-Control", "max-age=86400"),
            ("x-amz-meta-owner", "team-photos"),
            ("x-amz-meta-source", "upload-api"),
        ]
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .to_vec()
    }

    /// S3 ETags and IMF-fixdates take their binary forms and read back byte for byte;
    /// anything that would not is kept as text.
    #[test]
    fn etags_and_dates_are_kept_in_binary_only_when_they_read_back_as_given() {
        let binary = [
            ("ETag", "\"00000000000000000000000000000000\""),
            ("ETag", "\"ffffffffffffffffffffffffffffffff\""),
            ("ETag", "\"0123456789abcdef0123456789abcdef\""),
            ("Last-Modified", "Thu, 01 Jan 1970 00:00:00 GMT"),
            ("Last-Modified", "Fri, 31 Dec 9999 23:59:59 GMT"),
            ("Last-Modified", "Sun, 01 Jan 0000 00:00:00 GMT"),
            // The weekday is kept as written, not derived from the date.
            ("Last-Modified", "Mon, 05 Dec 2026 10:00:00 GMT"),
        ];
        let text = [
            ("ETag", "\"0123456789ABCDEF0123456789abcdef\""),
            ("ETag", "\"0123456789abcdef0123456789abcde\""),
            ("ETag", "W/\"0123456789abcdef0123456789abcdef\""),
            ("ETag", "0123456789abcdef0123456789abcdef00"),
            ("etag", "\"0123456789abcdef0123456789abcdef\""),
            ("Last-Modified", "Sat, 05 Dec 2026 24:00:00 GMT"),
            ("Last-Modified", "Sat, 32 Dec 2026 10:00:00 GMT"),
            ("Last-Modified", "Sat, 00 Dec 2026 10:00:00 GMT"),
            ("Last-Modified", "Sat, 05 Dec 2026 10:60:00 GMT"),
            ("Last-Modified", "sat, 05 Dec 2026 10:00:00 GMT"),
            ("Last-Modified", "Sat, 05 Dec 2026 10:00:00 UTC"),
            ("Last-Modified", "Saturday, 05-Dec-26 10:00:00 GMT"),
            ("Last-Modified", "Sat,  5 Dec 2026 10:00:00 GMT"),
            ("last-modified", "Sat, 05 Dec 2026 10:00:00 GMT"),
        ];
        for (kept, fields) in [(true, &binary[..]), (false, &text[..])] {
            for (n, v) in fields {
                let headers = vec![(n.to_string(), v.to_string())];
                let m = Meta::new(headers.clone(), 1_000, 2_000);
                let as_text = 1 + usize::from(!fields::KNOWN.contains(n)) * (1 + n.len()) + 1;
                assert_eq!(m.stored_len() < as_text + v.len(), kept, "{n}: {v}");
                assert_eq!(m.header(n).as_deref(), Some(*v));
                assert_eq!(m.header_pairs(), headers);
                assert_eq!(block(&m), lines_of(&headers, 1_000));
                let o = CachedObject::new(m.clone(), Bytes::new());
                assert_eq!(decode(Bytes::from(encode(&o))).unwrap().meta(), &m);
            }
        }
    }

    #[test]
    fn known_heads_spell_the_known_names() {
        for (name, head) in fields::KNOWN.iter().zip(fields::KNOWN_HEADS) {
            assert_eq!(head, format!("{name}: ").as_bytes());
        }
    }

    #[test]
    fn a_typical_entry_keeps_its_fields_in_few_bytes() {
        let m = Meta::new(typical(), 1_700_000_000_000, 1_700_000_060_000);
        // Values (44 B as text), the ETag's 16 bytes and Last-Modified's 6, the two
        // x-amz-meta- name ends (11 B), 6 codes and 6 lengths; 132 B with the ETag and
        // Last-Modified as text, and the rendered lines with Date were 245 B.
        assert_eq!(m.stored_len(), 89);
        assert_eq!(
            m.etag().as_deref(),
            Some("\"0123456789abcdef0123456789abcdef\"")
        );
        assert_eq!(
            m.last_modified().as_deref(),
            Some("Sat, 05 Dec 2026 10:00:00 GMT")
        );
        let o = CachedObject {
            meta: m,
            body: Bytes::from(vec![0; 1024]),
        };
        assert_eq!(o.weight() - 1024, 89 + ENTRY_OVERHEAD);
    }

    #[test]
    fn small_bodies_are_kept_in_their_metadata_and_read_the_same() {
        let o = CachedObject::new(
            Meta::new(typical(), 1_700_000_000_000, 1_700_000_060_000),
            Bytes::from((0..1024u32).map(|i| i as u8).collect::<Vec<_>>()),
        );
        assert!(!o.is_inlined());
        let p = o.clone().inlined();
        assert!(p.is_inlined());
        assert_eq!((p.meta(), p.body()), (o.meta(), o.body()));
        assert_eq!(
            p.weight(),
            o.weight(),
            "the charge does not depend on where it is kept"
        );
        assert_eq!(block(p.meta()), block(o.meta()));
        assert_eq!(p.meta().fields(), o.meta().fields());
        assert_eq!(encode(&p), encode(&o));
        // The body is in the metadata's allocation, and stays there when cloned, sent or
        // packed again: nothing copied.
        let at = p.meta.0.slice.as_ptr() as usize + p.meta.stored_len();
        assert_eq!(p.body().as_ptr() as usize, at);
        let sent = p.send_body(10..20);
        assert!(matches!(sent, Body::Lent(_)));
        assert_eq!(sent.as_slice().as_ptr() as usize, at + 10);
        assert_eq!(sent.as_slice(), &o.body()[10..20]);
        let again = p.clone().inlined();
        assert_eq!(again.body().as_ptr(), p.body().as_ptr());
        assert_eq!(again.meta.0.ptr(), p.meta.0.ptr());
        // A lent body holds one count on the allocation, given back when it is dropped.
        let count = || ThinArc::strong_count(&p.meta.0);
        assert_eq!(count(), 3);
        drop(sent);
        assert_eq!(count(), 2);
        // Asked for as a `Bytes` (off the hit path), it is a view into the same bytes.
        let bytes = p.body_bytes();
        assert_eq!(bytes.as_ptr() as usize, at);
        // New times: another allocation without the body, equal in everything else.
        let r = p.meta().refreshed(1_800_000_000_000);
        assert_eq!(r.stored_len(), p.meta().stored_len());
        assert_eq!(r.fields(), o.meta().fields());
        let stale = p.stale_since(1_700_000_000_001).unwrap();
        assert!(!stale.is_inlined());
        assert_eq!(stale.body(), o.body());
        assert!(stale.clone().inlined().is_inlined());
        let mut moved = p.clone();
        moved.set_meta(r);
        assert!(!moved.is_inlined());
        assert_eq!(moved.body(), o.body());
        // The body outlives every other handle on the allocation.
        let sent = p.send_body(0..1024);
        drop((p, again, stale, moved));
        assert_eq!(bytes, o.body());
        assert_eq!(sent.as_slice(), o.body());
    }

    /// A packed object reads back as it was, inlined or boxed, holds one reference while
    /// kept and gives it back when dropped or taken out.
    #[test]
    fn packed_objects_read_back_and_release_what_they_hold() {
        let o = CachedObject::new(
            Meta::new(typical(), 1, 2),
            Bytes::from((0..100u8).collect::<Vec<_>>()),
        );
        let inline = o.clone().inlined();
        let count = |m: &Meta| ThinArc::strong_count(&m.0);
        let p = Packed::new(inline.clone());
        assert_eq!(count(inline.meta()), 2);
        let got = p.get();
        assert!(got.is_inlined());
        assert_eq!((got.meta(), got.body()), (o.meta(), o.body()));
        assert_eq!(
            got.body().as_ptr(),
            inline.body().as_ptr(),
            "nothing copied"
        );
        assert_eq!(count(inline.meta()), 3);
        drop(got);
        let taken = p.into_object();
        assert_eq!(count(inline.meta()), 2);
        drop(taken);
        assert_eq!(count(inline.meta()), 1);
        drop(Packed::new(inline.clone()));
        assert_eq!(count(inline.meta()), 1);
        // Larger, empty and sliced: boxed, the body shared, not copied.
        for obj in [
            CachedObject::new(
                Meta::new(typical(), 1, 2),
                Bytes::from(vec![7; INLINE_BODY_MAX + 1]),
            ),
            CachedObject::new(Meta::new(vec![], 1, 2).with_status(404), Bytes::new()),
            CachedObject::new(
                Meta::new(typical(), 1, 2).with_sliced_len(1 << 30),
                Bytes::new(),
            ),
        ] {
            let p = Packed::new(obj.clone().inlined());
            assert_eq!(p.0.as_ptr() as usize & BOXED, BOXED);
            let got = p.get();
            assert_eq!(
                (got.meta(), got.body().as_ptr()),
                (obj.meta(), obj.body().as_ptr())
            );
            assert_eq!(count(obj.meta()), 3);
            drop((p, got));
            assert_eq!(count(obj.meta()), 1);
            let back = Packed::new(obj.clone()).into_object();
            assert_eq!(back.body().as_ptr(), obj.body().as_ptr());
        }
    }

    #[test]
    fn empty_large_and_sliced_entries_are_not_packed() {
        let meta = Meta::new(typical(), 1, 2);
        for len in [0, INLINE_BODY_MAX + 1] {
            let o = CachedObject::new(meta.clone(), Bytes::from(vec![7; len]));
            let p = o.clone().inlined();
            assert!(!p.is_inlined());
            assert_eq!(p.body().as_ptr(), o.body().as_ptr());
            assert!(matches!(p.send_body(0..len), Body::Shared(_)));
        }
        let o = CachedObject {
            meta: Meta::new(typical(), 1, 2).with_sliced_len(1 << 30),
            body: Bytes::from_static(b"x"),
        };
        assert!(!o.inlined().is_inlined());
        let o = CachedObject {
            meta,
            body: Bytes::from(vec![7; INLINE_BODY_MAX]),
        };
        assert!(o.inlined().is_inlined());
    }

    /// What a hit wrote before the compact form: each field's line, then `Date`.
    fn lines_of(headers: &[(String, String)], stored_at_ms: u64) -> Vec<u8> {
        let mut out = Vec::new();
        for (n, v) in headers {
            crate::http::response::write_header(&mut out, n, v.as_bytes());
        }
        let date = std::time::UNIX_EPOCH + std::time::Duration::from_millis(stored_at_ms);
        out.extend_from_slice(format!("Date: {}\r\n", httpdate::fmt_http_date(date)).as_bytes());
        out
    }

    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(fields::KNOWN.to_vec()).prop_map(str::to_owned),
            "x-amz-meta-[a-z0-9-]{0,12}",
            "[A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]{0,30}",
            Just("etag".to_owned()),
            Just("x-amz-meta-".to_owned()),
        ]
    }

    /// A field: any name and value, or an `ETag` or `Last-Modified` that may take a binary
    /// form.
    fn field() -> impl Strategy<Value = (String, String)> {
        prop_oneof![
            (name(), value()),
            ("ETag", "\"[0-9a-f]{32}\"").prop_map(|(n, v)| (n.to_owned(), v)),
            ("Last-Modified", value()).prop_map(|(n, v)| (n.to_owned(), v)),
        ]
    }

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            "[ -~]{0,40}",
            // S3 ETags (kept in binary when lowercase) and near misses.
            "\"[0-9a-fA-F]{31,33}\"",
            "W/\"[0-9a-f]{32}\"",
            // IMF-fixdates (kept packed when in range, any weekday) and near misses.
            "(Mon|Tue|Wed|Thu|Fri|Sat|Sun|mon), [0-3][0-9] (Jan|Feb|Jun|Dec|dec) [0-9]{4} \
             [0-2][0-9]:[0-6][0-9]:[0-6][0-9] (GMT|UTC)",
            "[ -~ü]{250,300}",
            "\\PC{0,8}".prop_map(|s: String| s.replace(['\r', '\n', '\0'], "")),
        ]
    }

    proptest! {
        /// A client sees exactly the header bytes it saw before the compact form, and the
        /// fields read back (and encode for the disk and Redis tiers) exactly as given.
        #[test]
        fn fields_read_back_and_render_byte_for_byte(
            headers in prop::collection::vec(field(), 0..12),
            stored_at_ms in 0u64..253_402_300_799_000,
        ) {
            let m = Meta::new(headers.clone(), stored_at_ms, stored_at_ms + 1);
            prop_assert_eq!(block(&m), lines_of(&headers, stored_at_ms));
            prop_assert_eq!(m.header_pairs(), headers.clone());
            for (n, v) in &headers {
                let first = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(n));
                let got = m.header(n);
                prop_assert_eq!(got.as_deref(), first.map(|(_, v)| v.as_str()));
                prop_assert!(m.header(&n.to_ascii_uppercase()).is_some(), "{} {}", n, v);
            }
            let o = CachedObject { meta: m, body: Bytes::from_static(b"b") };
            let d = decode(Bytes::from(encode(&o))).unwrap();
            prop_assert_eq!(&d.meta, &o.meta);
        }
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

//! The on-disk encoding: segment file headers and entry records, as pure functions over bytes.
//!
//! Nothing here touches files or maps; the writer ([`super::segment`]), the recovery scan
//! ([`super::recover`]) and callers that read an entry with a positioned read
//! ([`super::Location::verify`]) all go through these functions, so they are the one place to
//! fuzz (`fuzz/fuzz_targets/disk_entry.rs`) and the one place the format is defined.
//!
//! All integers are little-endian.
//!
//! # Segment file header ([`SEGMENT_HEADER_LEN`] = 64 bytes, at offset 0)
//!
//! | offset | size | field                                                     |
//! |-------:|-----:|-----------------------------------------------------------|
//! | 0      | 8    | magic `b"CORVIDSG"`                                        |
//! | 8      | 4    | format version ([`FORMAT_VERSION`])                        |
//! | 12     | 4    | reserved, 0                                               |
//! | 16     | 8    | segment id (must match the file name)                     |
//! | 24     | 8    | segment size the file was created with                    |
//! | 32     | 4    | CRC-32C of bytes 0..32                                    |
//! | 36     | 28   | zero padding, so the first entry starts 64-byte aligned    |
//!
//! # Entry record ([`ENTRY_HEADER_LEN`] = 40 bytes, then key, then value, padded to 8)
//!
//! | offset | size | field                                                         |
//! |-------:|-----:|---------------------------------------------------------------|
//! | 0      | 4    | magic `b"CVDE"`                                               |
//! | 4      | 1    | format version ([`FORMAT_VERSION`])                           |
//! | 5      | 1    | kind: 1 value, 2 tombstone, 3 touch ([`Kind`])                |
//! | 6      | 2    | reserved, 0                                                   |
//! | 8      | 4    | key length                                                    |
//! | 12     | 4    | value length                                                  |
//! | 16     | 8    | expiry time, unix ms (touch: the new expiry)                  |
//! | 24     | 8    | write time, unix ms                                           |
//! | 32     | 4    | body CRC-32C over key ‖ value                                 |
//! | 36     | 4    | header CRC-32C over bytes 0..36 (so it covers the body CRC)   |
//! | 40     | k    | key                                                           |
//! | 40+k   | v    | value (touch: target segment id u64 ‖ target offset u64)      |
//! | 40+k+v | pad  | zeros up to the next multiple of [`ALIGN`]                    |
//!
//! Why two checksums rather than one over everything: the header CRC makes the *lengths*
//! trustworthy before they are used to find the next record. A record whose header checks but
//! whose body does not (a bit flip in a value, or a value whose pages never reached the disk)
//! is dropped on its own and the scan continues with the next record; a record whose header
//! does not check ends the scan of its segment, because nothing after it can be located.
//! Chained, the two cover header fields, key and value, as the spec asks.
//!
//! An all-zero header is not corruption: segment files are created at full size (their
//! blocks reserved, reading as zeros), so zeros are simply where writing stopped.

/// Version written in both headers; a reader refuses other versions (as corruption, so an
/// old-format segment is skipped rather than misread).
pub const FORMAT_VERSION: u32 = 1;
/// Bytes before the first entry of a segment file.
pub const SEGMENT_HEADER_LEN: usize = 64;
/// Bytes of an entry header.
pub const ENTRY_HEADER_LEN: usize = 40;
/// Entries start at multiples of this, so headers are naturally aligned in the map.
pub const ALIGN: usize = 8;
/// Longest key accepted. S3 keys are at most 1 KiB; the bound mainly serves as a plausibility
/// check on a recovered header.
pub const MAX_KEY_LEN: usize = 64 * 1024;
/// Payload length of a touch record.
pub const TOUCH_PAYLOAD_LEN: usize = 24;
/// Touch records written before the stamp (16 bytes: no stamp) are still read.
pub const TOUCH_PAYLOAD_LEN_V1: usize = 16;

const SEGMENT_MAGIC: &[u8; 8] = b"CORVIDSG";
const ENTRY_MAGIC: &[u8; 4] = b"CVDE";

/// What a record means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A key and its value.
    Value = 1,
    /// The key was removed; no value.
    Tombstone = 2,
    /// The entry at (segment id, offset) in the payload got a new expiry.
    Touch = 3,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Value),
            2 => Some(Kind::Tombstone),
            3 => Some(Kind::Touch),
            _ => None,
        }
    }
}

/// Why bytes do not decode as a record. Every variant is an ordinary outcome of reading
/// possibly damaged bytes; none is a bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// An all-zero header: nothing was written here (the end of a segment's data).
    Empty,
    /// Fewer bytes than a header.
    ShortHeader,
    /// Wrong magic, version, reserved bits or kind.
    BadHeader,
    /// The header CRC does not match.
    HeaderChecksum,
    /// The header checks but its lengths cannot be right (too long for the limit given).
    Implausible,
    /// The header checks but the record runs past the end of the bytes given.
    Truncated,
    /// The header checks but the key/value do not match the body CRC.
    BodyChecksum,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DecodeError::Empty => "no record (zeros)",
            DecodeError::ShortHeader => "short header",
            DecodeError::BadHeader => "bad magic, version or kind",
            DecodeError::HeaderChecksum => "header checksum mismatch",
            DecodeError::Implausible => "implausible lengths",
            DecodeError::Truncated => "record truncated",
            DecodeError::BodyChecksum => "key/value checksum mismatch",
        })
    }
}

impl std::error::Error for DecodeError {}

/// A decoded entry header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub key_len: u32,
    pub value_len: u32,
    pub expires_at_ms: u64,
    pub written_at_ms: u64,
    pub body_crc: u32,
}

impl Header {
    /// Bytes from the start of the header to the end of the value (no padding).
    pub fn record_len(&self) -> usize {
        ENTRY_HEADER_LEN + self.key_len as usize + self.value_len as usize
    }

    /// Bytes the record occupies in a segment, padding included.
    pub fn padded_len(&self) -> usize {
        padded_len(self.key_len as usize, self.value_len as usize)
    }
}

/// A decoded, checksum-verified record borrowing from the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    pub header: Header,
    pub key: &'a [u8],
    pub value: &'a [u8],
}

/// Space a record with these lengths occupies, padding included.
pub fn padded_len(key_len: usize, value_len: usize) -> usize {
    (ENTRY_HEADER_LEN + key_len + value_len).div_ceil(ALIGN) * ALIGN
}

/// CRC over key ‖ value, as stored in the header.
pub fn body_crc(key: &[u8], value: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(key), value)
}

/// Encodes an entry header for `key` and `value` (the body CRC is computed here).
///
/// Lengths must fit in `u32`; callers check the limits first.
pub fn encode_header(
    kind: Kind,
    key: &[u8],
    value: &[u8],
    expires_at_ms: u64,
    written_at_ms: u64,
) -> [u8; ENTRY_HEADER_LEN] {
    let mut h = [0u8; ENTRY_HEADER_LEN];
    h[0..4].copy_from_slice(ENTRY_MAGIC);
    h[4] = FORMAT_VERSION as u8;
    h[5] = kind as u8;
    h[8..12].copy_from_slice(&(key.len() as u32).to_le_bytes());
    h[12..16].copy_from_slice(&(value.len() as u32).to_le_bytes());
    h[16..24].copy_from_slice(&expires_at_ms.to_le_bytes());
    h[24..32].copy_from_slice(&written_at_ms.to_le_bytes());
    h[32..36].copy_from_slice(&body_crc(key, value).to_le_bytes());
    let hcrc = crc32c::crc32c(&h[0..36]);
    h[36..40].copy_from_slice(&hcrc.to_le_bytes());
    h
}

/// Encodes a whole record, padding included. The writer copies the parts into the map
/// directly instead; this is for tests, fuzzing and small records.
pub fn encode(
    kind: Kind,
    key: &[u8],
    value: &[u8],
    expires_at_ms: u64,
    written_at_ms: u64,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(padded_len(key.len(), value.len()));
    out.extend_from_slice(&encode_header(
        kind,
        key,
        value,
        expires_at_ms,
        written_at_ms,
    ));
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    out.resize(padded_len(key.len(), value.len()), 0);
    out
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Decodes and checks an entry header at the start of `bytes`. `max_record` bounds
/// header + key + value (a segment's usable size); longer claims are [`DecodeError::Implausible`].
pub fn decode_header(bytes: &[u8], max_record: usize) -> Result<Header, DecodeError> {
    let Some(h) = bytes.get(..ENTRY_HEADER_LEN) else {
        return Err(if bytes.iter().all(|&b| b == 0) {
            DecodeError::Empty
        } else {
            DecodeError::ShortHeader
        });
    };
    if h.iter().all(|&b| b == 0) {
        return Err(DecodeError::Empty);
    }
    if &h[0..4] != ENTRY_MAGIC || h[4] != FORMAT_VERSION as u8 || h[6] != 0 || h[7] != 0 {
        return Err(DecodeError::BadHeader);
    }
    let kind = Kind::from_u8(h[5]).ok_or(DecodeError::BadHeader)?;
    if crc32c::crc32c(&h[0..36]) != u32_at(h, 36) {
        return Err(DecodeError::HeaderChecksum);
    }
    let header = Header {
        kind,
        key_len: u32_at(h, 8),
        value_len: u32_at(h, 12),
        expires_at_ms: u64_at(h, 16),
        written_at_ms: u64_at(h, 24),
        body_crc: u32_at(h, 32),
    };
    let plausible = header.key_len as usize <= MAX_KEY_LEN
        && header.record_len() <= max_record
        && match kind {
            Kind::Value => true,
            Kind::Tombstone => header.value_len == 0,
            Kind::Touch => matches!(
                header.value_len as usize,
                TOUCH_PAYLOAD_LEN | TOUCH_PAYLOAD_LEN_V1
            ),
        };
    if !plausible {
        return Err(DecodeError::Implausible);
    }
    Ok(header)
}

/// Decodes and fully verifies the record at the start of `bytes` (which may continue past it).
pub fn decode(bytes: &[u8], max_record: usize) -> Result<Entry<'_>, DecodeError> {
    let header = decode_header(bytes, max_record)?;
    let body = bytes
        .get(ENTRY_HEADER_LEN..header.record_len())
        .ok_or(DecodeError::Truncated)?;
    let (key, value) = body.split_at(header.key_len as usize);
    if body_crc(key, value) != header.body_crc {
        return Err(DecodeError::BodyChecksum);
    }
    Ok(Entry { header, key, value })
}

/// The payload of a touch record: which entry the new expiry applies to, and the entry's new
/// stamp (0: none; see `DiskHit::stamp_ms`).
pub fn touch_payload(segment_id: u64, offset: u32, stamp_ms: u64) -> [u8; TOUCH_PAYLOAD_LEN] {
    let mut p = [0u8; TOUCH_PAYLOAD_LEN];
    p[0..8].copy_from_slice(&segment_id.to_le_bytes());
    p[8..16].copy_from_slice(&u64::from(offset).to_le_bytes());
    p[16..24].copy_from_slice(&stamp_ms.to_le_bytes());
    p
}

/// Inverse of [`touch_payload`]: (segment id, offset, stamp); a 16-byte payload (written
/// before stamps) has stamp 0. `None` for any other length.
pub fn decode_touch_payload(p: &[u8]) -> Option<(u64, u64, u64)> {
    match p.len() {
        TOUCH_PAYLOAD_LEN => Some((u64_at(p, 0), u64_at(p, 8), u64_at(p, 16))),
        TOUCH_PAYLOAD_LEN_V1 => Some((u64_at(p, 0), u64_at(p, 8), 0)),
        _ => None,
    }
}

/// A segment file header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    pub id: u64,
    pub size: u64,
}

/// Encodes a segment file header.
pub fn encode_segment_header(h: SegmentHeader) -> [u8; SEGMENT_HEADER_LEN] {
    let mut b = [0u8; SEGMENT_HEADER_LEN];
    b[0..8].copy_from_slice(SEGMENT_MAGIC);
    b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    b[16..24].copy_from_slice(&h.id.to_le_bytes());
    b[24..32].copy_from_slice(&h.size.to_le_bytes());
    let crc = crc32c::crc32c(&b[0..32]);
    b[32..36].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Decodes a segment file header; `None` for anything that is not one of ours (stray file,
/// other version, damaged header).
pub fn decode_segment_header(b: &[u8]) -> Option<SegmentHeader> {
    let b = b.get(..SEGMENT_HEADER_LEN)?;
    if &b[0..8] != SEGMENT_MAGIC
        || u32_at(b, 8) != FORMAT_VERSION
        || u32_at(b, 12) != 0
        || crc32c::crc32c(&b[0..32]) != u32_at(b, 32)
    {
        return None;
    }
    Some(SegmentHeader {
        id: u64_at(b, 16),
        size: u64_at(b, 24),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: usize = 1 << 20;

    #[test]
    fn round_trip_each_kind() {
        let v = encode(Kind::Value, b"bucket/key", b"hello", 7, 3);
        assert_eq!(v.len() % ALIGN, 0);
        let e = decode(&v, MAX).unwrap();
        assert_eq!(e.key, b"bucket/key");
        assert_eq!(e.value, b"hello");
        assert_eq!(e.header.kind, Kind::Value);
        assert_eq!((e.header.expires_at_ms, e.header.written_at_ms), (7, 3));

        let t = encode(Kind::Tombstone, b"k", b"", 0, 1);
        assert_eq!(decode(&t, MAX).unwrap().header.kind, Kind::Tombstone);

        let p = touch_payload(9, 4096, 77);
        let t = encode(Kind::Touch, b"k", &p, 99, 1);
        let e = decode(&t, MAX).unwrap();
        assert_eq!(decode_touch_payload(e.value), Some((9, 4096, 77)));
        assert_eq!(
            decode_touch_payload(&p[..16]),
            Some((9, 4096, 0)),
            "v1 payload"
        );
    }

    #[test]
    fn zeros_are_empty_not_corrupt() {
        assert_eq!(decode(&[0u8; 64], MAX), Err(DecodeError::Empty));
        assert_eq!(decode(&[0u8; 3], MAX), Err(DecodeError::Empty));
        assert_eq!(decode(&[1u8; 3], MAX), Err(DecodeError::ShortHeader));
    }

    #[test]
    fn implausible_lengths_are_refused_even_with_valid_crc() {
        let v = encode(Kind::Value, b"k", &[1u8; 100], 0, 0);
        assert_eq!(decode(&v, 50), Err(DecodeError::Implausible));
        // A tombstone claiming a value is implausible.
        let t = encode(Kind::Tombstone, b"k", b"x", 0, 0);
        assert_eq!(decode(&t, MAX), Err(DecodeError::Implausible));
    }

    #[test]
    fn segment_header_round_trip_and_damage() {
        let h = SegmentHeader {
            id: 42,
            size: 1 << 26,
        };
        let b = encode_segment_header(h);
        assert_eq!(decode_segment_header(&b), Some(h));
        for i in 0..36 {
            let mut d = b;
            d[i] ^= 0x10;
            assert_eq!(decode_segment_header(&d), None, "byte {i}");
        }
        assert_eq!(decode_segment_header(&b[..10]), None);
    }

    proptest! {
        #[test]
        fn decode_inverts_encode(
            key in proptest::collection::vec(any::<u8>(), 0..64),
            value in proptest::collection::vec(any::<u8>(), 0..512),
            exp in any::<u64>(), wrote in any::<u64>(),
        ) {
            let bytes = encode(Kind::Value, &key, &value, exp, wrote);
            let e = decode(&bytes, MAX).unwrap();
            prop_assert_eq!(e.key, &key[..]);
            prop_assert_eq!(e.value, &value[..]);
            prop_assert_eq!(e.header.expires_at_ms, exp);
            prop_assert_eq!(e.header.written_at_ms, wrote);
        }

        /// Any truncation or mutation either fails to decode or decodes to a record whose
        /// checksums match what it claims; it never panics and never returns the original
        /// key with a different value.
        #[test]
        fn damaged_encodings_never_decode_wrongly(
            key in proptest::collection::vec(any::<u8>(), 1..32),
            value in proptest::collection::vec(any::<u8>(), 0..256),
            cut in any::<prop::sample::Index>(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 0..4),
        ) {
            let orig = encode(Kind::Value, &key, &value, 1, 2);
            let mut b = orig.clone();
            for (at, x) in &flips {
                let i = at.index(b.len());
                b[i] ^= x;
            }
            let b = &b[..cut.index(b.len() + 1)];
            match decode(b, MAX) {
                Err(_) => {}
                Ok(e) => {
                    prop_assert_eq!(body_crc(e.key, e.value), e.header.body_crc);
                    if e.key == &key[..] && e.header.kind == Kind::Value {
                        prop_assert_eq!(e.value, &value[..]);
                    }
                }
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&b, MAX);
            let _ = decode_segment_header(&b);
        }
    }
}

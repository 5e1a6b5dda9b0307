//! Decoding arbitrary bytes as a disk-cache record or segment header must never panic, and a
//! record that decodes must carry checksums that match its key and value.
#![no_main]
use corvid::cache::disk::format;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = format::decode_segment_header(data);
    if let Ok(e) = format::decode(data, 1 << 20) {
        assert_eq!(format::body_crc(e.key, e.value), e.header.body_crc);
        assert!(e.header.record_len() <= data.len());
        // Re-encoding a decoded record reproduces its bytes.
        let again = format::encode(
            e.header.kind,
            e.key,
            e.value,
            e.header.expires_at_ms,
            e.header.written_at_ms,
        );
        assert_eq!(
            &again[..e.header.record_len()],
            &data[..e.header.record_len()]
        );
    }
});

//! `uri_encode` emits only unreserved characters, `%XX` with uppercase hex, and (when slashes are
//! kept) `/`; and percent-decoding its output gives back the input bytes exactly, for both modes.
#![no_main]
use corvid::s3::sigv4::uri_encode;
use libfuzzer_sys::fuzz_target;

fn hex_value(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'A'..=b'F' => b - b'A' + 10,
        _ => panic!("not an uppercase hex digit: {b:#04x}"),
    }
}

fn check(data: &[u8], encode_slash: bool) {
    let mut prefix = String::from("pre");
    uri_encode(data, encode_slash, &mut prefix);
    // It appends: what was already there is untouched.
    let out = prefix.strip_prefix("pre").expect("uri_encode must append");
    let bytes = out.as_bytes();
    let mut decoded = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            assert!(i + 2 < bytes.len(), "truncated escape");
            let v = hex_value(bytes[i + 1]) << 4 | hex_value(bytes[i + 2]);
            // An escape is only used where the byte had to be escaped.
            let needs_escape =
                !(v.is_ascii_alphanumeric() || b"-._~".contains(&v)) && (encode_slash || v != b'/');
            assert!(needs_escape, "needlessly escaped byte {v:#04x}");
            decoded.push(v);
            i += 3;
        } else {
            let allowed =
                b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (b == b'/' && !encode_slash);
            assert!(
                allowed,
                "unexpected literal byte {b:#04x} (encode_slash={encode_slash})"
            );
            decoded.push(b);
            i += 1;
        }
    }
    assert_eq!(decoded, data, "round trip (encode_slash={encode_slash})");
}

fuzz_target!(|data: &[u8]| {
    check(data, false);
    check(data, true);
});

//! Fuzzes the request head parser and, for chunked requests, the chunked decoder.
//!
//! Properties: no panics; a complete head lies within the bytes consumed, parses the same from
//! exactly those bytes, and no shorter prefix of it is complete; the chunked decoder never
//! consumes more than it is given and its output does not depend on how the input is split.
#![no_main]
use corvid::http::chunked::ChunkedDecoder;
use corvid::http::request::{parse_request, BodyFraming, Limits, RequestHead};
use libfuzzer_sys::fuzz_target;

fn within(buf: &[u8], n: usize, s: &[u8]) -> bool {
    let start = s.as_ptr() as usize;
    let base = buf.as_ptr() as usize;
    s.is_empty() || (start >= base && start + s.len() <= base + n)
}

/// Decodes `input` fed as `input[..cut]` then the rest; returns (payload, consumed, done, error).
fn decode_split(input: &[u8], cut: usize) -> (Vec<u8>, usize, bool, bool) {
    let mut dec = ChunkedDecoder::default();
    let mut out = Vec::new();
    let mut consumed = 0;
    for end in [cut.min(input.len()), input.len()] {
        loop {
            let avail = &input[consumed..end];
            match dec.decode(avail) {
                Ok(step) => {
                    assert!(step.consumed <= avail.len());
                    assert!(step.data.start <= step.data.end && step.data.end <= step.consumed);
                    out.extend_from_slice(&avail[step.data.clone()]);
                    consumed += step.consumed;
                    if step.done {
                        assert!(dec.is_done());
                        return (out, consumed, true, false);
                    }
                    if step.consumed == 0 {
                        break;
                    }
                }
                Err(_) => return (out, consumed, false, true),
            }
        }
    }
    (out, consumed, false, false)
}

fuzz_target!(|data: &[u8]| {
    // Small limits too, so that the limit paths are reached with short inputs.
    let small = Limits {
        max_request_line: 64,
        max_header_bytes: 128,
        max_headers: 4,
    };
    let limits = if data.first().is_some_and(|b| b & 1 == 1) {
        small
    } else {
        Limits::default()
    };
    let mut head = RequestHead::default();
    let Ok(Some(n)) = parse_request(data, &limits, &mut head) else {
        return;
    };
    assert!(n <= data.len());
    assert!(within(data, n, head.method_str(data).as_bytes()));
    assert!(within(data, n, head.target(data).as_bytes()));
    assert!(!head.target(data).is_empty());
    for (name, value) in head.headers(data) {
        assert!(within(data, n, name.as_bytes()) && within(data, n, value));
        assert!(head.header(data, name).is_some());
    }
    let framing = head.body();

    let mut again = RequestHead::default();
    assert_eq!(
        parse_request(&data[..n], &limits, &mut again).ok(),
        Some(Some(n))
    );
    assert_eq!(again.body(), framing);
    assert_eq!(again.target(data), head.target(data));

    // Every shorter prefix is incomplete or an error, never a complete head.
    let samples = [0, 1, n / 2, n.saturating_sub(2), n.saturating_sub(1)];
    for k in samples.into_iter().chain((0..n).step_by(n / 8 + 1)) {
        if k < n {
            assert!(
                !matches!(parse_request(&data[..k], &limits, &mut again), Ok(Some(_))),
                "prefix {k} of {n}"
            );
        }
    }

    if framing == BodyFraming::Chunked {
        let tail = &data[n..];
        let (whole, consumed, done, err) = decode_split(tail, tail.len());
        assert!(consumed <= tail.len());
        let cut = tail.first().map_or(0, |&b| b as usize % (tail.len() + 1));
        let (split, consumed2, done2, err2) = decode_split(tail, cut);
        // A step that ends in an error drops its payload run, so on error only the verdict must
        // agree; otherwise the payload, the bytes consumed and completion must.
        assert_eq!(err, err2);
        if !err {
            assert_eq!((whole, consumed, done), (split, consumed2, done2));
        }
    }
});

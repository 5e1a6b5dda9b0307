//! Incremental decoder for the chunked transfer coding (RFC 9112 §7.1): sans-IO and zero-copy.
//!
//! This module owns finding the payload inside a chunked body, for request bodies from clients
//! and for response bodies from the origin. The decoder never copies: [`ChunkedDecoder::decode`]
//! returns how many input bytes it consumed and the range of payload bytes inside the input, so
//! the caller can forward or store them straight from its read buffer. It keeps a few words of
//! state between calls, so input may be split anywhere.
//!
//! # Decisions
//!
//! * **Strict line endings**: every chunk-size line, the CRLF after chunk data, and each trailer
//!   line must end in CRLF; a bare LF (or anything else) is an error, as in the head parsers.
//! * **Chunk size**: 1 to [`MAX_CHUNK_SIZE_DIGITS`] hex digits (leading zeros count), and must fit
//!   in a `u64`. More digits are refused rather than read forever.
//! * **Chunk extensions** are skipped, never interpreted: `BWS ";" ...` after the size, at most
//!   [`MAX_CHUNK_EXT_BYTES`] per chunk line, no control bytes other than HTAB. Whitespace after
//!   the size is only allowed when an extension follows (BWS appears in the grammar only before
//!   `;`).
//! * **Trailers** are skipped too (we never forward them), but checked to be field lines
//!   (`token ":" value`, no obs-fold, no control bytes) and bounded to [`MAX_TRAILER_BYTES`] in
//!   total.
//! * **Errors**: a decoder from [`ChunkedDecoder::default`] reports `Kind::BadRequest` on the
//!   client side (400: a client's request body); one from [`ChunkedDecoder::upstream`] reports
//!   `Kind::BadGateway` on the upstream side (502: the origin's response body). The caller picks
//!   the constructor and so never needs to remap.

use std::ops::Range;

use super::headers::is_tchar;
use crate::error::{Error, Kind, Side};

/// Hex digits accepted in one chunk size (16 digits hold any `u64`).
pub const MAX_CHUNK_SIZE_DIGITS: u8 = 16;
/// Bytes of chunk extension accepted on one chunk-size line.
pub const MAX_CHUNK_EXT_BYTES: usize = 4 * 1024;
/// Bytes of trailer section accepted after the last chunk, including line endings.
pub const MAX_TRAILER_BYTES: usize = 8 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the hex chunk size.
    Size {
        size: u64,
        digits: u8,
    },
    /// Whitespace after the size: only `;` (or more whitespace) may follow.
    SizeWs {
        size: u64,
    },
    /// Inside a chunk extension, up to the CR.
    Ext {
        size: u64,
        len: usize,
    },
    /// Saw the CR of the chunk-size line.
    SizeLf {
        size: u64,
    },
    /// Chunk payload, this many bytes still to come.
    Data {
        remaining: u64,
    },
    /// Expecting the CR after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// At the start of a trailer line, or of the final empty line.
    TrailerStart,
    /// In a trailer field name.
    TrailerName,
    /// In a trailer field value.
    TrailerValue,
    /// Saw the CR of a trailer line.
    TrailerLf,
    /// Saw the CR of the final empty line.
    FinalLf,
    Done,
}

/// Decoder state for one chunked body. `Default` decodes a client's body (errors are 400).
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    trailer_bytes: usize,
    side: Side,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            state: State::Size { size: 0, digits: 0 },
            trailer_bytes: 0,
            side: Side::Client,
        }
    }
}

/// The result of one [`ChunkedDecoder::decode`] call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Input bytes consumed (framing and payload); the next call starts after them.
    pub consumed: usize,
    /// Payload bytes inside the input slice; may be empty.
    pub data: Range<usize>,
    /// The last chunk and the trailer section have been read: the body is complete.
    pub done: bool,
}

fn hex_value(b: u8) -> Option<u64> {
    match b {
        b'0'..=b'9' => Some(u64::from(b - b'0')),
        b'a'..=b'f' => Some(u64::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(u64::from(b - b'A' + 10)),
        _ => None,
    }
}

/// Bytes allowed in extensions and trailer values: HTAB, visible ASCII, SP, obs-text.
fn is_text(b: u8) -> bool {
    b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80
}

impl ChunkedDecoder {
    /// A decoder for an origin's response body: errors are `Kind::BadGateway`, upstream side.
    pub fn upstream() -> Self {
        ChunkedDecoder {
            side: Side::Upstream,
            ..Self::default()
        }
    }

    /// The body is complete (last chunk and trailers read).
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    fn err(&self, msg: &'static str) -> Error {
        match self.side {
            Side::Upstream => Error::upstream(Kind::BadGateway, msg),
            _ => Error::client(Kind::BadRequest, msg),
        }
    }

    /// Decodes from `input`: returns how much was consumed and at most one contiguous run of
    /// payload bytes (a range into `input`). Call again with the unconsumed remainder; a step
    /// that consumes 0 bytes and returns no data means more input is needed (or the body is
    /// done). After an error the decoder must not be used again.
    pub fn decode(&mut self, input: &[u8]) -> Result<Step, Error> {
        let mut i = 0;
        let mut data = 0..0;
        while i < input.len() {
            let b = input[i];
            self.state = match self.state {
                State::Data { remaining } => {
                    // One payload run per step, so that the caller sees runs in order.
                    if !data.is_empty() {
                        break;
                    }
                    let avail = (input.len() - i) as u64;
                    let take = remaining.min(avail) as usize;
                    data = i..i + take;
                    i += take;
                    let remaining = remaining - take as u64;
                    self.state = if remaining == 0 {
                        State::DataCr
                    } else {
                        State::Data { remaining }
                    };
                    continue;
                }
                State::Size { size, digits } => match hex_value(b) {
                    Some(v) => {
                        if digits >= MAX_CHUNK_SIZE_DIGITS || size > u64::MAX >> 4 {
                            return Err(self.err("chunk size too large"));
                        }
                        State::Size {
                            size: size << 4 | v,
                            digits: digits + 1,
                        }
                    }
                    None if digits == 0 => return Err(self.err("missing chunk size")),
                    None => match b {
                        b'\r' => State::SizeLf { size },
                        b';' => State::Ext { size, len: 0 },
                        b' ' | b'\t' => State::SizeWs { size },
                        _ => return Err(self.err("invalid chunk size")),
                    },
                },
                State::SizeWs { size } => match b {
                    b' ' | b'\t' => State::SizeWs { size },
                    b';' => State::Ext { size, len: 0 },
                    _ => return Err(self.err("invalid chunk size line")),
                },
                State::Ext { size, len } => match b {
                    b'\r' => State::SizeLf { size },
                    _ if !is_text(b) => return Err(self.err("invalid byte in chunk extension")),
                    _ if len >= MAX_CHUNK_EXT_BYTES => {
                        return Err(self.err("chunk extension too long"))
                    }
                    _ => State::Ext { size, len: len + 1 },
                },
                State::SizeLf { size } => match b {
                    b'\n' if size == 0 => State::TrailerStart,
                    b'\n' => State::Data { remaining: size },
                    _ => return Err(self.err("chunk size line not ended by CRLF")),
                },
                State::DataCr => match b {
                    b'\r' => State::DataLf,
                    _ => return Err(self.err("chunk data not followed by CRLF")),
                },
                State::DataLf => match b {
                    b'\n' => State::Size { size: 0, digits: 0 },
                    _ => return Err(self.err("chunk data not followed by CRLF")),
                },
                State::TrailerStart => {
                    self.count_trailer()?;
                    match b {
                        b'\r' => State::FinalLf,
                        _ if is_tchar(b) => State::TrailerName,
                        _ => return Err(self.err("invalid trailer field")),
                    }
                }
                State::TrailerName => {
                    self.count_trailer()?;
                    match b {
                        b':' => State::TrailerValue,
                        _ if is_tchar(b) => State::TrailerName,
                        _ => return Err(self.err("invalid trailer field name")),
                    }
                }
                State::TrailerValue => {
                    self.count_trailer()?;
                    match b {
                        b'\r' => State::TrailerLf,
                        _ if is_text(b) => State::TrailerValue,
                        _ => return Err(self.err("invalid byte in trailer field")),
                    }
                }
                State::TrailerLf => {
                    self.count_trailer()?;
                    match b {
                        b'\n' => State::TrailerStart,
                        _ => return Err(self.err("trailer line not ended by CRLF")),
                    }
                }
                State::FinalLf => match b {
                    b'\n' => State::Done,
                    _ => return Err(self.err("chunked body not ended by CRLF")),
                },
                State::Done => break,
            };
            i += 1;
        }
        Ok(Step {
            consumed: i,
            data,
            done: self.state == State::Done,
        })
    }

    fn count_trailer(&mut self) -> Result<(), Error> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > MAX_TRAILER_BYTES {
            return Err(self.err("trailer section too large"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feeds `pieces` in order (each appended to what is left unconsumed) and returns the payload
    /// and whether the body completed, plus the total consumed.
    fn feed<'a>(
        dec: &mut ChunkedDecoder,
        pieces: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<(Vec<u8>, bool, usize), Error> {
        let mut pending = Vec::new();
        let mut out = Vec::new();
        let mut total = 0;
        for p in pieces {
            pending.extend_from_slice(p);
            loop {
                let step = dec.decode(&pending)?;
                assert!(step.consumed <= pending.len());
                assert!(step.data.end <= step.consumed);
                out.extend_from_slice(&pending[step.data.clone()]);
                pending.drain(..step.consumed);
                total += step.consumed;
                if step.done {
                    return Ok((out, true, total));
                }
                if step.consumed == 0 && step.data.is_empty() {
                    break;
                }
            }
        }
        Ok((out, dec.is_done(), total))
    }

    fn decode_all(body: &[u8]) -> Result<(Vec<u8>, bool, usize), Error> {
        feed(&mut ChunkedDecoder::default(), [body])
    }

    const BODY: &[u8] = b"5\r\nhello\r\n1;ext=\"a b\"\r\n \r\nA ; x\r\n0123456789\r\n00\r\nTrailer-X: v\r\nT2:\r\n\r\n";
    const PAYLOAD: &[u8] = b"hello 0123456789";

    #[test]
    fn whole_body() {
        let mut withtail = BODY.to_vec();
        withtail.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let (out, done, consumed) = decode_all(&withtail).unwrap();
        assert_eq!(out, PAYLOAD);
        assert!(done);
        assert_eq!(consumed, BODY.len(), "must not consume past the body");
    }

    #[test]
    fn every_split_position_and_byte_by_byte() {
        for k in 0..=BODY.len() {
            let (out, done, consumed) =
                feed(&mut ChunkedDecoder::default(), [&BODY[..k], &BODY[k..]]).unwrap();
            assert_eq!(
                (out.as_slice(), done, consumed),
                (PAYLOAD, true, BODY.len()),
                "split at {k}"
            );
        }
        let (out, done, _) = feed(&mut ChunkedDecoder::default(), BODY.chunks(1)).unwrap();
        assert_eq!((out.as_slice(), done), (PAYLOAD, true));
    }

    #[test]
    fn one_step_gives_control_bytes_and_one_run() {
        let mut d = ChunkedDecoder::default();
        let s = d.decode(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap();
        assert_eq!((s.consumed, s.data, s.done), (11, 3..6, false));
        let s = d.decode(b"de\r\n0\r\n\r\n").unwrap();
        assert_eq!((s.consumed, s.data, s.done), (9, 0..2, true));
        let s = d.decode(b"more").unwrap();
        assert_eq!((s.consumed, s.data, s.done), (0, 0..0, true));
    }

    #[test]
    fn bad_bodies() {
        let long_ext = format!(
            "1;{}\r\na\r\n0\r\n\r\n",
            "x".repeat(MAX_CHUNK_EXT_BYTES + 1)
        );
        let long_trailer = format!("0\r\nX: {}\r\n\r\n", "v".repeat(MAX_TRAILER_BYTES));
        let rows: Vec<(&str, &[u8])> = vec![
            ("no size", b"\r\nhello\r\n"),
            ("non-hex size", b"g\r\n"),
            ("sign", b"+5\r\nhello\r\n"),
            ("size overflow", b"10000000000000000\r\n"),
            ("17 digits", b"00000000000000001\r\nx\r\n"),
            ("bare LF after size", b"5\nhello\r\n0\r\n\r\n"),
            ("CR without LF after size", b"5\rhello"),
            ("space after size without ext", b"5 \r\nhello\r\n0\r\n\r\n"),
            ("missing CRLF after data", b"5\r\nhelloX\r\n"),
            ("bare LF after data", b"5\r\nhello\n0\r\n\r\n"),
            ("data longer than size", b"3\r\nhello\r\n"),
            ("control byte in ext", b"1;a\x01\r\nx\r\n0\r\n\r\n"),
            ("extension too long", long_ext.as_bytes()),
            ("trailer too long", long_trailer.as_bytes()),
            ("trailer without colon", b"0\r\nnocolon\r\n\r\n"),
            ("trailer obs-fold", b"0\r\nX: a\r\n b\r\n\r\n"),
            ("trailer bare LF", b"0\r\nX: a\n\r\n"),
            ("final bare LF", b"0\r\n\n"),
            ("NUL in trailer", b"0\r\nX: a\0\r\n\r\n"),
        ];
        for (what, body) in rows {
            let e = decode_all(body).expect_err(what);
            assert_eq!(
                (e.kind(), e.side()),
                (Kind::BadRequest, Side::Client),
                "{what}"
            );
        }
        let e = feed(&mut ChunkedDecoder::upstream(), [&b"zz\r\n"[..]]).unwrap_err();
        assert_eq!(
            (e.kind(), e.side(), e.status()),
            (Kind::BadGateway, Side::Upstream, 502)
        );
    }

    #[test]
    fn max_size_is_accepted_and_streamed() {
        let mut d = ChunkedDecoder::default();
        let s = d.decode(b"ffffffffffffffff\r\nabc").unwrap();
        assert_eq!((s.consumed, s.data), (21, 18..21));
        let s = d.decode(b"xyz").unwrap();
        assert_eq!((s.consumed, s.data, s.done), (3, 0..3, false));
    }

    #[test]
    fn incomplete_needs_more() {
        for part in [
            &b""[..],
            b"5",
            b"5\r",
            b"5\r\nhel",
            b"0\r\n",
            b"0\r\nX: 1\r\n",
            b"0\r\n\r",
        ] {
            let (_, done, _) = decode_all(part).unwrap();
            assert!(!done, "{part:?}");
        }
    }

    fn encode(chunks: &[Vec<u8>], ext: bool) -> Vec<u8> {
        let mut out = Vec::new();
        for c in chunks.iter().filter(|c| !c.is_empty()) {
            out.extend_from_slice(format!("{:x}", c.len()).as_bytes());
            if ext {
                out.extend_from_slice(b" ;name=val");
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(c);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\nX-Checksum: abc\r\n\r\n");
        out
    }

    proptest! {
        #[test]
        fn random_splits_give_the_same_payload(
            chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..8),
            ext in any::<bool>(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let body = encode(&chunks, ext);
            let want: Vec<u8> = chunks.concat();
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(body.len() + 1)).collect();
            points.sort_unstable();
            let mut pieces = Vec::new();
            let mut last = 0;
            for p in points {
                pieces.push(&body[last..p]);
                last = p;
            }
            pieces.push(&body[last..]);
            let (out, done, consumed) = feed(&mut ChunkedDecoder::default(), pieces).unwrap();
            prop_assert_eq!(out, want);
            prop_assert!(done);
            prop_assert_eq!(consumed, body.len());
        }

        #[test]
        fn arbitrary_input_never_panics(input in prop::collection::vec(any::<u8>(), 0..200)) {
            let mut d = ChunkedDecoder::default();
            if let Ok(s) = d.decode(&input) {
                prop_assert!(s.consumed <= input.len() && s.data.end <= s.consumed);
            }
        }
    }
}

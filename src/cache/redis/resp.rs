//! Incremental RESP reply reading over a monoio stream, with the `redis` crate's parser.
//!
//! The crate's byte-buffer codec (`ValueCodec`) exists only with its tokio feature. Its
//! `Parser::parse_value(impl Read)` is built on combine's partial-state decoder, though: it keeps
//! its own buffer and the partial parse state between calls, and gives up (keeping both) when
//! the reader returns an error. [`Feed`] is a reader over the bytes one socket read brought that
//! says `WouldBlock` once they are used up, so each call resumes where the last stopped instead
//! of re-parsing a half-received 4 MiB value from its start.

use std::io::{self, Read};

use monoio::buf::IoBufMut;
use monoio::io::AsyncReadRent;

use super::RedisError;

/// Size of the socket read buffer (reused for the life of the connection).
const READ_BUF: usize = 64 * 1024;

/// A `Read` over received bytes that reports `WouldBlock`, never EOF, when they are used up:
/// EOF would latch combine's decoder into its end-of-input state for good.
struct Feed<'a> {
    data: &'a [u8],
    starved: bool,
}

impl Read for Feed<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.data.is_empty() {
            self.starved = true;
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = out.len().min(self.data.len());
        out[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Reads RESP replies one at a time from a stream.
pub struct RespReader {
    parser: redis::Parser,
    buf: Vec<u8>,
    pos: usize,
    /// Bytes handed to the parser since it last completed a reply: bounds the memory one reply
    /// may take (the parser buffers a bulk string whole before returning it).
    fed: usize,
    max_reply: usize,
}

impl RespReader {
    /// `max_reply`: a reply larger than this fails with a protocol error (and the connection,
    /// whose stream position is then lost, must be dropped).
    pub fn new(max_reply: usize) -> RespReader {
        RespReader {
            parser: redis::Parser::new(),
            buf: Vec::with_capacity(READ_BUF),
            pos: 0,
            fed: 0,
            max_reply,
        }
    }

    /// The next reply. Not cancel-safe: dropping the future mid-read loses stream position, so
    /// callers drop the connection along with it.
    pub async fn next<R: AsyncReadRent>(&mut self, io: &mut R) -> Result<redis::Value, RedisError> {
        loop {
            // Parse first even when `buf` is used up: the parser's own buffer may already hold
            // further complete replies from an earlier read.
            let mut feed = Feed {
                data: &self.buf[self.pos..],
                starved: false,
            };
            let before = feed.data.len();
            let res = self.parser.parse_value(&mut feed);
            let consumed = before - feed.data.len();
            let starved = feed.starved;
            self.pos += consumed;
            self.fed += consumed;
            match res {
                Ok(v) => {
                    self.fed = 0;
                    return Ok(v);
                }
                Err(_) if starved => {}
                Err(e) => return Err(RedisError::Protocol(format!("bad reply from redis: {e}"))),
            }
            if self.fed > self.max_reply {
                return Err(RedisError::Protocol(format!(
                    "reply from redis larger than {} bytes",
                    self.max_reply
                )));
            }
            let mut buf = std::mem::take(&mut self.buf);
            buf.clear();
            self.pos = 0;
            let (res, slice) = io.read(buf.slice_mut(0..READ_BUF)).await;
            self.buf = slice.into_inner();
            match res {
                Ok(0) => {
                    return Err(RedisError::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "redis closed the connection",
                    )))
                }
                Ok(_) => {}
                Err(e) => return Err(RedisError::Io(e)),
            }
        }
    }
}

/// Turns an error reply into `Err(Server)`; passes every other reply through.
pub fn check(v: redis::Value) -> Result<redis::Value, RedisError> {
    match v {
        // The wire form (`MOVED 3999 10.0.0.2:6379`, `ERR unknown command`): code, space,
        // details, which is what the cluster client parses redirections from.
        redis::Value::ServerError(e) => Err(RedisError::Server(match e.details() {
            Some(d) => format!("{} {d}", e.code()),
            None => e.code().to_string(),
        })),
        v => Ok(v),
    }
}

pub fn unexpected(what: &str, v: &redis::Value) -> RedisError {
    RedisError::Protocol(format!("unexpected reply to {what}: {v:?}"))
}

pub fn int(what: &str, v: redis::Value) -> Result<i64, RedisError> {
    match check(v)? {
        redis::Value::Int(n) => Ok(n),
        v => Err(unexpected(what, &v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::Value;

    /// A stream that hands out a fixed byte string in pieces of `step` bytes, then EOF.
    struct Chunks {
        data: Vec<u8>,
        pos: usize,
        step: usize,
    }

    impl AsyncReadRent for Chunks {
        async fn read<T: IoBufMut>(&mut self, mut buf: T) -> monoio::BufResult<usize, T> {
            let n = self
                .step
                .min(self.data.len() - self.pos)
                .min(buf.bytes_total());
            // SAFETY: `n` is at most the buffer's total capacity, and exactly `n` bytes are
            // initialised by the copy before `set_init` declares them so.
            unsafe {
                std::ptr::copy_nonoverlapping(self.data[self.pos..].as_ptr(), buf.write_ptr(), n);
                buf.set_init(n);
            }
            self.pos += n;
            (Ok(n), buf)
        }

        async fn readv<T: monoio::buf::IoVecBufMut>(
            &mut self,
            buf: T,
        ) -> monoio::BufResult<usize, T> {
            (Ok(0), buf)
        }
    }

    fn run<F: std::future::Future>(f: F) -> F::Output {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn replies_split_at_every_size_and_pipelined() {
        let big: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        let mut wire = Vec::new();
        wire.extend_from_slice(b"+OK\r\n:42\r\n$-1\r\n");
        wire.extend_from_slice(format!("${}\r\n", big.len()).as_bytes());
        wire.extend_from_slice(&big);
        wire.extend_from_slice(b"\r\n-ERR nope\r\n*2\r\n$1\r\n0\r\n*0\r\n");
        for step in [1, 2, 7, 4096, 8192, 65536, 1 << 20] {
            let mut io = Chunks {
                data: wire.clone(),
                pos: 0,
                step,
            };
            let mut r = RespReader::new(1 << 20);
            run(async {
                assert_eq!(r.next(&mut io).await.unwrap(), Value::Okay);
                assert_eq!(r.next(&mut io).await.unwrap(), Value::Int(42));
                assert_eq!(r.next(&mut io).await.unwrap(), Value::Nil);
                assert_eq!(
                    r.next(&mut io).await.unwrap(),
                    Value::BulkString(big.clone())
                );
                assert!(matches!(
                    check(r.next(&mut io).await.unwrap()),
                    Err(RedisError::Server(_))
                ));
                assert_eq!(
                    r.next(&mut io).await.unwrap(),
                    Value::Array(vec![Value::BulkString(b"0".to_vec()), Value::Array(vec![])])
                );
                assert!(matches!(r.next(&mut io).await, Err(RedisError::Io(_))));
            });
        }
    }

    #[test]
    fn oversized_and_garbage_replies_fail() {
        let mut wire = format!("${}\r\n", 300_000).into_bytes();
        wire.resize(wire.len() + 300_002, b'x');
        let mut io = Chunks {
            data: wire,
            pos: 0,
            step: 65536,
        };
        let mut r = RespReader::new(100_000);
        let res = run(r.next(&mut io));
        assert!(matches!(res, Err(RedisError::Protocol(m)) if m.contains("larger")));

        let mut io = Chunks {
            data: b"?what\r\n".to_vec(),
            pos: 0,
            step: 100,
        };
        let res = run(RespReader::new(100).next(&mut io));
        assert!(matches!(res, Err(RedisError::Protocol(_))), "{res:?}");
    }
}

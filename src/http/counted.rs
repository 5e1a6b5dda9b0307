//! A client stream that counts the bytes written to it: the access log's `bytes`.
//!
//! Every answer — from cache, streamed from the origin, a JSON error written by the connection
//! loop, an internal route — reaches the client through the connection's stream, so counting
//! there is the one place that cannot miss a path or a status. What is counted is what the
//! stream accepted: the response head and the body (chunk framing included), before TLS
//! encryption; an answer cut short counts what was written before it stopped.

use std::future::Future;

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::TcpStream;
use monoio::BufResult;

use crate::net::ClientIo;

/// `io` with a running count of the bytes written to it.
pub struct Counted<'a, S> {
    io: &'a mut S,
    written: u64,
}

impl<'a, S> Counted<'a, S> {
    pub fn new(io: &'a mut S) -> Counted<'a, S> {
        Counted { io, written: 0 }
    }

    /// Bytes written so far (the caller takes differences per answer).
    pub fn written(&self) -> u64 {
        self.written
    }

    fn add(&mut self, n: &std::io::Result<usize>) {
        if let Ok(n) = n {
            self.written += *n as u64;
        }
    }
}

impl<S: ClientIo> ClientIo for Counted<'_, S> {
    fn idle_wait_socket(&self) -> Option<&TcpStream> {
        self.io.idle_wait_socket()
    }
}

impl<S: AsyncReadRent> AsyncReadRent for Counted<'_, S> {
    fn read<B: IoBufMut>(&mut self, buf: B) -> impl Future<Output = BufResult<usize, B>> {
        self.io.read(buf)
    }

    fn readv<B: IoVecBufMut>(&mut self, buf: B) -> impl Future<Output = BufResult<usize, B>> {
        self.io.readv(buf)
    }
}

impl<S: AsyncWriteRent> AsyncWriteRent for Counted<'_, S> {
    #[expect(
        clippy::manual_async_fn,
        reason = "keeps the `-> impl Future` signature monoio's trait declares"
    )]
    fn write<B: IoBuf>(&mut self, buf: B) -> impl Future<Output = BufResult<usize, B>> {
        async move {
            let (res, buf) = self.io.write(buf).await;
            self.add(&res);
            (res, buf)
        }
    }

    #[expect(
        clippy::manual_async_fn,
        reason = "keeps the `-> impl Future` signature monoio's trait declares"
    )]
    fn writev<B: IoVecBuf>(&mut self, buf: B) -> impl Future<Output = BufResult<usize, B>> {
        async move {
            let (res, buf) = self.io.writev(buf).await;
            self.add(&res);
            (res, buf)
        }
    }

    fn flush(&mut self) -> impl Future<Output = std::io::Result<()>> {
        self.io.flush()
    }

    fn shutdown(&mut self) -> impl Future<Output = std::io::Result<()>> {
        self.io.shutdown()
    }
}

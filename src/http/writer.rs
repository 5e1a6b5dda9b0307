//! Writing one answer over a connection: the one place response bytes are put on the wire.
//!
//! The connection loop ([`crate::http::conn`]) makes a [`Writer`] for each request and hands it
//! to the application; the object path, the admin API and the internal routes build their heads
//! and send their bodies through it, and the loop answers its own errors with it. It owns:
//!
//! * **the head**: status line, `Date` (corvid's cached one, the origin's, or one the caller
//!   writes with the rest of a stored header block: [`DateField`]), `Server`, `X-Request-Id`,
//!   `Connection: close` when the connection ends after this answer or shutdown began, then the
//!   caller's fields ([`HeaderLines`]), built in the connection's reused head buffer;
//! * **the body**: a cached body goes out together with the head in one vectored write, never
//!   copied ([`Writer::send_with_head`], the hit path; its `iovec` holders are pooled per
//!   worker, `http::vectored::HeadBodies`); pieces of a streamed body ([`Writer::send`]); bytes read straight
//!   into the head buffer ([`Writer::body_buffer`] / [`Writer::send_buffer`], a streamed miss);
//!   chunked framing when the head said `Transfer-Encoding: chunked` ([`Writer::chunked`]);
//! * **the send timeout**: every write must progress within `server.send_timeout`
//!   ([`within_send_timeout`]); on expiry the write (and any buffer it owned) is dropped and
//!   the caller closes the connection;
//! * **complete small answers** ([`Reply`]) and **errors** ([`Writer::error`]: the one place an
//!   [`Error`] becomes bytes on the wire).
//!
//! Which header fields an answer carries (stored origin fields, `Age`, `X-Cache`, CORS) is the
//! application's business; how they are framed and when they are written is this module's.

use std::time::SystemTime;

use bytes::Bytes;
use monoio::io::{AsyncWriteRent, AsyncWriteRentExt};

use crate::error::Error;
use crate::http::env::ConnEnv;
use crate::http::message::{Request, RequestId, Sent};
use crate::http::response::{end_head, write_header, write_header_u64, write_status_line};
use crate::http::vectored::Body;

/// Where a response's `Date` comes from.
#[derive(Debug, Clone, Copy)]
pub enum DateField<'a> {
    /// corvid's clock (its own answers, and origin answers without a `Date`).
    Now,
    /// The origin's (an answer passed through: RFC 9110 §6.6.1, the date is the origin's).
    Given(&'a [u8]),
    /// Written by the caller with the rest of the header block (answers from cache, whose
    /// `Date` is the stored response's).
    Elsewhere,
}

/// Something header lines are written into: a response head being built ([`Writer`]), or a
/// plain buffer (a stored header block, a test).
pub trait HeaderLines {
    /// Appends `name: value\r\n`.
    fn line(&mut self, name: &str, value: &[u8]);
}

impl HeaderLines for Vec<u8> {
    fn line(&mut self, name: &str, value: &[u8]) {
        write_header(self, name, value);
    }
}

/// A first piece of body at most this large is copied behind the pending head and sent in
/// one write; a larger one (a whole revalidated object) goes out with the head in one
/// vectored write instead, uncopied.
const COPY_WITH_HEAD: usize = 16 * 1024;

/// One answer being written to a client connection. See the module docs.
pub struct Writer<'a, S> {
    env: &'a ConnEnv,
    io: &'a mut S,
    /// The head being built, then whatever is pending to be written; kept between requests
    /// (the connection's reused buffer), so a hit allocates no head.
    buf: &'a mut Vec<u8>,
    /// The head said `Transfer-Encoding: chunked`: body pieces are framed.
    chunked: bool,
}

impl<'a, S> Writer<'a, S> {
    pub fn new(env: &'a ConnEnv, io: &'a mut S, buf: &'a mut Vec<u8>) -> Writer<'a, S> {
        Writer {
            env,
            io,
            buf,
            chunked: false,
        }
    }

    /// What the worker's connections share (timeouts, clock-derived `Date`, shutdown).
    pub fn env(&self) -> &'a ConnEnv {
        self.env
    }

    /// Starts a response head (anything pending is discarded): status line, `Date` from
    /// `date`, `Server`, `X-Request-Id` and, when the connection will close after this answer
    /// or shutdown began, `Connection: close`.
    pub fn start(&mut self, status: u16, id: &RequestId, close: bool, date: DateField<'_>) {
        let out = &mut *self.buf;
        out.clear();
        self.chunked = false;
        write_status_line(out, status);
        match date {
            DateField::Now => {
                let mut date = self.env.date.borrow_mut();
                write_header(out, "Date", date.get(SystemTime::now()));
            }
            DateField::Given(d) => write_header(out, "Date", d),
            DateField::Elsewhere => {}
        }
        write_header(out, "Server", b"corvid");
        write_header(out, "X-Request-Id", id.as_bytes());
        // A request that began before shutdown is the connection's last one too: say so.
        if close || self.env.shutdown.is_fired() {
            write_header(out, "Connection", b"close");
        }
    }

    /// Appends one header field.
    pub fn header(&mut self, name: &str, value: &[u8]) {
        write_header(self.buf, name, value);
    }

    /// Appends one header field with a decimal value.
    pub fn header_u64(&mut self, name: &str, value: u64) {
        write_header_u64(self.buf, name, value);
    }

    /// Appends header lines that `write` renders straight into the head (`Name: value\r\n`…):
    /// a cached entry's stored fields, without an intermediate copy.
    pub fn prepared(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        write(self.buf);
    }

    /// Says `Transfer-Encoding: chunked`: the body that follows is framed as chunks and ended
    /// by [`Writer::finish`].
    pub fn chunked(&mut self) {
        write_header(self.buf, "Transfer-Encoding", b"chunked");
        self.chunked = true;
    }

    /// Ends the head (the blank line); it is sent with the first write.
    pub fn end_head(&mut self) {
        end_head(self.buf);
    }
}

impl<S> HeaderLines for Writer<'_, S> {
    fn line(&mut self, name: &str, value: &[u8]) {
        self.header(name, value);
    }
}

impl<S: AsyncWriteRent> Writer<'_, S> {
    /// Writes everything pending (a head, framed bytes) within the send timeout; the buffer
    /// is kept for reuse.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        let buf = std::mem::take(self.buf);
        let (res, mut buf) = within_send_timeout(self.env, self.io.write_all(buf)).await?;
        buf.clear();
        *self.buf = buf;
        res.map(|_| ())
    }

    /// Writes the pending head and `body` in one vectored write within the send timeout,
    /// without copying the body (the hit path: a `Bytes`, or a body lent by a cached entry,
    /// [`Body::Lent`]).
    pub async fn send_with_head(&mut self, body: impl Into<Body>) -> std::io::Result<()> {
        let pool = &self.env.head_bodies;
        let mut hb = pool.take();
        hb.set(self.buf, body.into());
        // On a timeout the write (and the buffer it owned) is gone; the connection is closed
        // after this, so the head buffer starts again empty.
        let (res, mut hb) = within_send_timeout(self.env, hb.write_all(self.io)).await?;
        hb.take_head(self.buf);
        pool.give_back(hb);
        res
    }

    /// Sends one piece of body (framed when the head said chunked): the first one together
    /// with the pending head, uncopied when it is large.
    pub async fn send(&mut self, piece: Bytes) -> std::io::Result<()> {
        if self.chunked {
            return self.send_slice(&piece).await;
        }
        if !self.buf.is_empty() {
            if piece.len() > COPY_WITH_HEAD {
                return self.send_with_head(piece).await;
            }
            self.buf.extend_from_slice(&piece);
            return self.flush().await;
        }
        let (res, _) = within_send_timeout(self.env, self.io.write_all(piece)).await?;
        res.map(|_| ())
    }

    /// Sends one piece of body by copying it behind whatever is pending (framed as one chunk
    /// when the head said chunked). An empty piece sends nothing: end a chunked body with
    /// [`Writer::finish`].
    pub async fn send_slice(&mut self, piece: &[u8]) -> std::io::Result<()> {
        if piece.is_empty() {
            return Ok(());
        }
        if self.chunked {
            let mut size = [0u8; 18];
            self.buf
                .extend_from_slice(chunk_size_line(&mut size, piece.len()));
            self.buf.extend_from_slice(piece);
            self.buf.extend_from_slice(b"\r\n");
        } else {
            self.buf.extend_from_slice(piece);
        }
        self.flush().await
    }

    /// Ends the body: the last chunk of a chunked one; anything still pending is written.
    pub async fn finish(&mut self) -> std::io::Result<()> {
        if self.chunked {
            self.buf.extend_from_slice(b"0\r\n\r\n");
            self.chunked = false;
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        self.flush().await
    }

    /// The buffer for reading body bytes straight behind whatever is pending (the head, on the
    /// first piece), with room for at least `room / 2` more; give it back with
    /// [`Writer::send_buffer`]. Only for a body that is not chunked: its bytes go out as read.
    pub fn body_buffer(&mut self, room: usize) -> Vec<u8> {
        debug_assert!(!self.chunked, "a chunked body is sent with send_slice");
        let mut buf = std::mem::take(self.buf);
        if buf.capacity() - buf.len() < room / 2 {
            buf.reserve(room);
        }
        buf
    }

    /// Writes all of `buf` (from [`Writer::body_buffer`]) within the send timeout and keeps
    /// it, cleared, for reuse.
    pub async fn send_buffer(&mut self, buf: Vec<u8>) -> std::io::Result<()> {
        *self.buf = buf;
        if self.buf.is_empty() {
            return Ok(());
        }
        self.flush().await
    }

    /// Gives back a buffer from [`Writer::body_buffer`] without sending it (the response is
    /// cut short; the connection closes).
    pub fn discard(&mut self, mut buf: Vec<u8>) {
        buf.clear();
        *self.buf = buf;
    }

    /// Answers `err` as a short JSON body (no body for HEAD); `extra` adds header lines (a
    /// bucket's CORS headers). `request` is the request's id, whether the connection closes
    /// after the answer, and whether it is a HEAD.
    pub async fn error(
        &mut self,
        request: (RequestId, bool, bool),
        err: &Error,
        extra: impl FnOnce(&mut Self),
    ) -> std::io::Result<()> {
        let (id, close, head_only) = request;
        if err.status() >= 500 {
            log::warn!("request {}: {err}", id.as_str());
        } else {
            log::debug!("request {}: {err}", id.as_str());
        }
        let body = err.json_body(id.as_str());
        self.start(err.status(), &id, close, DateField::Now);
        if let Some(allow) = err.allow() {
            self.header("Allow", allow.as_bytes());
        }
        if let Some(challenge) = err.www_authenticate() {
            self.header("WWW-Authenticate", challenge.as_bytes());
        }
        if let Some(after) = err.retry_after() {
            self.header("Retry-After", after.as_bytes());
        }
        if let Some(len) = err.complete_length() {
            let mut buf = [0u8; 32];
            self.header("Content-Range", unsatisfied_range(&mut buf, len));
        }
        self.header("Content-Type", b"application/json");
        self.header_u64("Content-Length", body.len() as u64);
        self.header("Cache-Control", b"no-store");
        extra(self);
        self.end_head();
        if !head_only {
            self.buf.extend_from_slice(body.as_bytes());
        }
        self.flush().await
    }

    /// Answers a complete small response (no body for HEAD, none at all for 204/304).
    pub async fn reply(&mut self, req: &Request<'_>, reply: Reply<'_>) -> Result<Sent, Error> {
        let status = reply.status;
        self.start(status, &req.id, req.close, DateField::Now);
        if !reply.content_type.is_empty() {
            self.header("Content-Type", reply.content_type.as_bytes());
        }
        for (n, v) in reply.extra {
            self.header(n, v.as_bytes());
        }
        if status != 204 && status != 304 {
            self.header_u64("Content-Length", reply.body.len() as u64);
        }
        self.end_head();
        if !req.is_head() {
            self.buf.extend_from_slice(reply.body);
        }
        let abort = self.flush().await.is_err();
        Ok(Sent { status, abort })
    }
}

/// `bytes */len` into `buf`, without allocating.
fn unsatisfied_range(buf: &mut [u8; 32], len: u64) -> &[u8] {
    use std::io::Write;
    let mut c = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(c, "bytes */{len}");
    let n = c.position() as usize;
    &buf[..n]
}

/// `{len:x}\r\n` into `buf`, without allocating.
fn chunk_size_line(buf: &mut [u8; 18], len: usize) -> &[u8] {
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1) as usize;
    for (i, d) in buf[..digits].iter_mut().enumerate() {
        *d = b"0123456789abcdef"[(len >> (4 * (digits - 1 - i))) & 0xf];
    }
    buf[digits] = b'\r';
    buf[digits + 1] = b'\n';
    &buf[..digits + 2]
}

/// Runs a write to the client within `server.send_timeout`: the one place a client that stops
/// reading is given up on. On expiry the write (and any buffer it owned) is dropped; the
/// caller closes the connection.
pub async fn within_send_timeout<T>(
    env: &ConnEnv,
    write: impl std::future::Future<Output = T>,
) -> std::io::Result<T> {
    monoio::time::timeout(env.send_timeout, write)
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "client did not read the response in time",
            )
        })
}

/// A complete small response: status, content type ("" for none), body, extra headers.
pub struct Reply<'a> {
    pub status: u16,
    pub content_type: &'a str,
    pub body: &'a [u8],
    pub extra: &'a [(&'a str, &'a str)],
}

impl<'a> Reply<'a> {
    /// A reply no cache may keep (`Cache-Control: no-store`): readiness, metrics, admin answers.
    pub fn no_store(status: u16, content_type: &'a str, body: &'a [u8]) -> Reply<'a> {
        Reply {
            status,
            content_type,
            body,
            extra: &[("Cache-Control", "no-store")],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_size_lines() {
        for n in [
            1usize,
            9,
            10,
            15,
            16,
            255,
            4096,
            65_536,
            0xdead_beef,
            usize::MAX,
        ] {
            let mut buf = [0u8; 18];
            assert_eq!(
                chunk_size_line(&mut buf, n),
                format!("{n:x}\r\n").as_bytes()
            );
        }
    }
}

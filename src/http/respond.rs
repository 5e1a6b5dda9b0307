//! Writing responses to the client: the common head lines every answer carries, JSON error
//! answers (the one place an [`Error`] becomes bytes on the wire), small complete answers, and
//! writes bounded by `server.send_timeout`.

use monoio::io::{AsyncWriteRent, AsyncWriteRentExt};
use std::time::SystemTime;

use crate::error::Error;
use crate::http::env::ConnEnv;
use crate::http::message::{Request, RequestId, Sent};
use crate::http::response::{end_head, write_header, write_header_u64, write_status_line};

/// Starts a response head in `out` (cleared first): status line, Date, Server, X-Request-Id and,
/// when the connection will close, `Connection: close`.
pub fn head_start(out: &mut Vec<u8>, env: &ConnEnv, status: u16, id: &RequestId, close: bool) {
    head_start_dated(out, env, status, id, close, DateField::Now);
}

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

/// [`head_start`] with the `Date` from `date`.
pub fn head_start_dated(
    out: &mut Vec<u8>,
    env: &ConnEnv,
    status: u16,
    id: &RequestId,
    close: bool,
    date: DateField<'_>,
) {
    out.clear();
    write_status_line(out, status);
    match date {
        DateField::Now => {
            let mut date = env.date.borrow_mut();
            write_header(out, "Date", date.get(SystemTime::now()));
        }
        DateField::Given(d) => write_header(out, "Date", d),
        DateField::Elsewhere => {}
    }
    write_header(out, "Server", b"corvid");
    write_header(out, "X-Request-Id", id.as_bytes());
    // A request that began before shutdown is the connection's last one too: say so.
    if close || env.shutdown.is_fired() {
        write_header(out, "Connection", b"close");
    }
}

/// Writes all of `out` within the send timeout, then clears it. The buffer is kept for reuse.
pub async fn flush<S: AsyncWriteRent>(
    env: &ConnEnv,
    io: &mut S,
    out: &mut Vec<u8>,
) -> std::io::Result<()> {
    let buf = std::mem::take(out);
    let (res, mut buf) = within_send_timeout(env, io.write_all(buf)).await?;
    buf.clear();
    *out = buf;
    res.map(|_| ())
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

/// Answers `err` as a short JSON body (no body for HEAD).
pub async fn error<S: AsyncWriteRent>(
    env: &ConnEnv,
    io: &mut S,
    out: &mut Vec<u8>,
    id: RequestId,
    close: bool,
    head_only: bool,
    err: &Error,
) -> std::io::Result<()> {
    error_with(env, io, out, (id, close, head_only), err, |_| {}).await
}

/// [`error`] with more header lines, written by `extra` (e.g. a bucket's CORS headers).
/// `request` is the request's id, whether the connection closes after the answer, and whether
/// it is a HEAD (no body).
pub async fn error_with<S: AsyncWriteRent>(
    env: &ConnEnv,
    io: &mut S,
    out: &mut Vec<u8>,
    request: (RequestId, bool, bool),
    err: &Error,
    extra: impl FnOnce(&mut Vec<u8>),
) -> std::io::Result<()> {
    let (id, close, head_only) = request;
    if err.status() >= 500 {
        log::warn!("request {}: {err}", id.as_str());
    } else {
        log::debug!("request {}: {err}", id.as_str());
    }
    let body = err.json_body(id.as_str());
    head_start(out, env, err.status(), &id, close);
    if let Some(allow) = err.allow() {
        write_header(out, "Allow", allow.as_bytes());
    }
    if let Some(challenge) = err.www_authenticate() {
        write_header(out, "WWW-Authenticate", challenge.as_bytes());
    }
    if let Some(after) = err.retry_after() {
        write_header(out, "Retry-After", after.as_bytes());
    }
    write_header(out, "Content-Type", b"application/json");
    write_header_u64(out, "Content-Length", body.len() as u64);
    write_header(out, "Cache-Control", b"no-store");
    extra(out);
    end_head(out);
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    flush(env, io, out).await
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

/// Answers a complete small response (no body for HEAD, none at all for 204/304).
pub async fn simple<S: AsyncWriteRent>(
    env: &ConnEnv,
    io: &mut S,
    out: &mut Vec<u8>,
    req: &Request<'_>,
    reply: Reply<'_>,
) -> Result<Sent, Error> {
    let status = reply.status;
    head_start(out, env, status, &req.id, req.close);
    if !reply.content_type.is_empty() {
        write_header(out, "Content-Type", reply.content_type.as_bytes());
    }
    for (n, v) in reply.extra {
        write_header(out, n, v.as_bytes());
    }
    if status != 204 && status != 304 {
        write_header_u64(out, "Content-Length", reply.body.len() as u64);
    }
    end_head(out);
    if !req.is_head() {
        out.extend_from_slice(reply.body);
    }
    let abort = flush(env, io, out).await.is_err();
    Ok(Sent { status, abort })
}

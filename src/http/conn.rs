//! The connection loop, for any [`App`]: read request heads, enforce timeouts, discard request
//! bodies, hand each request to the app, answer errors, keep the connection alive or close it.
//! An idle connection holds no buffer and a small future (see [`serve`]).
//!
//! Waiting for a request head registers the connection with the worker's idle connections
//! (`http::idle`): when the worker runs short of descriptors or reaches its connection limit
//! the oldest waiting connections are closed, and at shutdown the keep-alive ones are; a new
//! connection's first request and a head in progress still get their answer, with
//! `Connection: close`, as does every request answered after shutdown began. A connection
//! closed at shutdown is never reset (`lingering_close`): a keep-alive client whose next
//! request crossed the close sees a clean EOF and can retry it on a new connection.
//!
//! Pipelined requests are answered strictly in order because one connection handles one request
//! at a time: bytes after a complete head stay in the buffer and are parsed after the answer.
//! Timeouts (ARCHITECTURE rule 7): waiting for the first byte of a request uses
//! `server.header_timeout` on a new connection and `server.idle_timeout` between keep-alive
//! requests (applied by the worker's idle sweep while a plain connection is idle, so at most a
//! quarter of the shorter timeout late); once a request has begun, the whole head must arrive within `header_timeout`
//! (slowloris), else 408 and close. Every response write must progress within
//! `server.send_timeout`.
//!
//! Request bodies: corvid is read-only. A GET/HEAD/OPTIONS body up to [`MAX_DISCARDED_BODY`]
//! is read and discarded (never parsed as the next request); a larger one gets 413 and the
//! connection closes. Any other method gets its 405 and, when it announced a body, the
//! connection closes without reading it.

use std::net::SocketAddr;
use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::time::Instant;

use crate::error::{Error, Kind};
use crate::http::chunked::ChunkedDecoder;
use crate::http::counted::Counted;
use crate::http::env::ConnEnv;
pub use crate::http::message::{Request, RequestId, Sent};
use crate::http::request::{parse_request, BodyFraming, Method, RequestHead};
use crate::http::writer::Writer;
use crate::net::ClientIo;

/// Largest request body corvid reads and throws away on a GET/HEAD/OPTIONS.
pub const MAX_DISCARDED_BODY: u64 = 64 * 1024;
/// A request the connection loop has answered, for metrics and the access log.
pub struct Finished<'a, L> {
    /// What the application noted while answering ([`App::Log`]).
    pub log: &'a L,
    /// The parsed request (`None` when its head was refused).
    pub req: Option<&'a Request<'a>>,
    pub id: &'a RequestId,
    pub peer: SocketAddr,
    pub method: Method,
    pub status: u16,
    /// Bytes written to the client for this answer: head and body (chunk framing included),
    /// counted by the stream ([`Counted`]), so every status and path is covered.
    pub bytes: u64,
    pub took: Duration,
}

enum ReadOutcome {
    Data,
    Eof,
    Timeout,
    Shutdown,
    Failed,
}

/// An application served over HTTP/1.1 connections: the object proxy, the admin API. The
/// connection loop knows nothing of S3 or caches; it hands each parsed request to `handle` and
/// reports each answered one to `finished`.
pub trait App {
    /// What the application notes about one request while answering it, for its own metrics
    /// and access log (bucket, cache status, …): the connection loop only makes a default one
    /// per request and hands it back in [`Finished`].
    type Log: Default;

    /// What this application's connections share (one per worker).
    fn env(&self) -> &ConnEnv;

    /// Answers one request through `answer` (the connection's writer: head, body, timeouts);
    /// `log` is filled in for `finished`. An `Err` is answered by the connection loop as a
    /// JSON error.
    fn handle<S: AsyncWriteRent>(
        &self,
        answer: &mut Writer<'_, S>,
        req: &Request<'_>,
        log: &mut Self::Log,
    ) -> impl std::future::Future<Output = Result<Sent, Error>>;

    /// Called once per answered request (including those refused before the handler, which
    /// have no `req`: their head did not parse).
    fn finished(&self, done: &Finished<'_, Self::Log>);
}

/// Whether a plain keep-alive connection goes idle (buffers and busy state given back) when no
/// request follows within [`LINGER`] of an answer. The linger waits for readability, never in a
/// read: an earlier version lingered in a timed read and cancelled it to go idle, and on
/// io_uring a request arriving after that cancellation was lost (two requests 50 ms apart: the
/// second was never answered; `lifecycle::keep_alive_requests_after_pauses_are_answered`).
const IDLE_BETWEEN_REQUESTS: bool = true;
/// How long a keep-alive connection stays busy waiting for its next request before it goes
/// idle: short, so that idle clients cost little; a client sending requests back to back
/// rarely waits that long.
const LINGER: Duration = Duration::from_millis(20);

/// What a connection remembers across its busy and idle phases.
struct ConnState {
    peer: SocketAddr,
    /// No request has been read yet.
    first: bool,
    /// When the connection last finished something (accepted, or answered a request): the age
    /// by which idle connections are reclaimed, oldest first (see `http::idle`).
    idle_since: Instant,
}

/// What the busy phase ended with.
#[derive(PartialEq, Eq)]
enum Next {
    /// Answered everything received; wait (without buffers) for the next request.
    Idle,
    Close,
}

/// Serves one client connection until it closes.
///
/// A connection alternates between two phases. Idle — waiting for the next request — it holds
/// no buffer and only a small future: over plain TCP it waits for the socket to become readable
/// (registered with the worker's idle connections, whose sweep applies the idle and header
/// timeouts). Busy, it reads and answers requests in a future and with buffers taken from the
/// worker's [`crate::http::pool::Pools`] and given back when it is idle again. Over TLS the
/// library may hold received bytes the socket no longer shows, so a TLS connection stays in
/// the busy phase and waits there, with its buffers.
pub async fn serve<A: App, S: ClientIo>(app: &A, mut io: S, peer: SocketAddr) {
    let env = app.env();
    let mut conn = ConnState {
        peer,
        first: true,
        idle_since: Instant::now(),
    };
    loop {
        if let Some(tcp) = io.idle_wait_socket() {
            let timeout = if conn.first {
                env.header_timeout
            } else {
                env.idle_timeout
            };
            if !wait_readable(env, tcp, &conn, conn.idle_since + timeout).await {
                break;
            }
        }
        let busy = env.pools.place(busy(app, &mut io, &mut conn));
        if busy.await == Next::Close {
            break;
        }
    }
    if env.shutdown.is_fired() {
        // Boxed: its two timeouts (~1.5 KiB) would otherwise be part of every connection's
        // task for its whole life, idle or not, for something done once, at shutdown.
        Box::pin(lingering_close(&mut io)).await;
    }
}

/// How long a connection closed at shutdown waits for its client to close after corvid's FIN.
const LINGERING_CLOSE: Duration = Duration::from_secs(2);

/// Closes a connection corvid ends at shutdown without ever resetting it: FIN first
/// (`shutdown(SHUT_WR)`), then whatever the client still sends is read and dropped until it
/// closes too (or [`LINGERING_CLOSE`] passes), and only then the socket is closed.
///
/// Closing a socket with unread bytes, or receiving bytes after closing it, makes Linux answer
/// with a reset; a keep-alive client whose next request crossed corvid's close would then see
/// `ECONNRESET` instead of the clean EOF on which HTTP/1.1 clients retry an idempotent request
/// on a new connection (RFC 9112 §9.3.1). This is nginx's lingering close.
async fn lingering_close<S: ClientIo>(io: &mut S) {
    let deadline = Instant::now() + LINGERING_CLOSE;
    // Over TLS this writes close_notify first, which a client that reads nothing could stall.
    if !matches!(
        monoio::time::timeout_at(deadline, io.shutdown()).await,
        Ok(Ok(()))
    ) {
        return;
    }
    let mut buf = Vec::with_capacity(4096);
    loop {
        match monoio::time::timeout_at(deadline, io.read(buf)).await {
            Ok((Ok(n), b)) if n > 0 => buf = b,
            _ => return,
        }
        buf.clear();
    }
}

/// Waits until `tcp` is readable (true), or until the worker releases the wait: reclaimed,
/// timed out, or shutdown between keep-alive requests (false).
async fn wait_readable(
    env: &ConnEnv,
    tcp: &monoio::net::TcpStream,
    conn: &ConnState,
    deadline: Instant,
) -> bool {
    let ends_on_shutdown = !conn.first;
    if ends_on_shutdown && env.shutdown.is_fired() {
        return false;
    }
    monoio::select! {
        r = tcp.readable(false) => return r.is_ok(),
        _ = env.idle.wait(conn.idle_since, Some(deadline), ends_on_shutdown) => {},
    }
    // Released (reclaimed, timed out, shutdown) — but a request that arrived meanwhile is
    // answered, not dropped: closing a socket with unread bytes resets it, and a connection
    // whose client already sent its request is not idle any more. (Seen as a reset request
    // while an accept flood made the worker reclaim its idle connections in batches.)
    crate::net::readable_now(std::os::fd::AsRawFd::as_raw_fd(tcp))
}

/// The busy phase: buffers from the pool, requests answered until the connection is idle
/// (plain TCP, nothing left to parse) or closes; buffers given back.
async fn busy<A: App, S: ClientIo>(app: &A, io: &mut S, conn: &mut ConnState) -> Next {
    let env = app.env();
    let mut buf = env.pools.read_buf();
    let mut out = env.pools.out_buf();
    let next = requests(app, &mut Counted::new(io), conn, &mut buf, &mut out).await;
    env.pools.give_back(buf, out);
    next
}

async fn requests<A: App, S: ClientIo>(
    app: &A,
    io: &mut Counted<'_, S>,
    conn: &mut ConnState,
    bufref: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Next {
    let env = app.env();
    let limits = &env.limits;
    let max_buf = limits.max_request_line + limits.max_header_bytes + 2;
    let mut buf = std::mem::take(bufref);
    let mut head = RequestHead::default();
    let next = loop {
        // --- read one request head ---
        let mut head_started = (!buf.is_empty()).then(Instant::now);
        let consumed = loop {
            if !buf.is_empty() {
                match parse_request(&buf, limits, &mut head) {
                    Ok(Some(n)) => break Some(Some(n)),
                    Ok(None) => {}
                    Err(e) => {
                        let id = env.next_request_id();
                        let started = Instant::now();
                        let written = io.written();
                        let _ = Writer::new(env, io, out)
                            .error((id, true, false), &e, |_| {})
                            .await;
                        app.finished(&Finished {
                            log: &A::Log::default(),
                            req: None,
                            id: &id,
                            peer: conn.peer,
                            method: Method::Other,
                            status: e.status(),
                            bytes: io.written() - written,
                            took: started.elapsed(),
                        });
                        break None;
                    }
                }
            }
            let idle = buf.is_empty();
            let deadline = match head_started {
                Some(t) => t + env.header_timeout,
                None if conn.first => conn.idle_since + env.header_timeout,
                None => conn.idle_since + env.idle_timeout,
            };
            // Between keep-alive requests the connection waits here, in a read with its
            // buffers. Going idle without them (as before the first request) would need this
            // read cancelled first; on io_uring a cancelled read raced a request arriving
            // ~tens of ms later and lost it (perf notes, issue 9), so it is not done until the
            // idle wait can be made safe.
            let linger = IDLE_BETWEEN_REQUESTS && idle && !conn.first;
            if linger {
                if let Some(tcp) = io.idle_wait_socket() {
                    // When the worker's pool is crowded (a burst of clients) the connection goes
                    // idle at once and its busy memory serves the next one (`http::pool`).
                    if env.pools.crowded() {
                        break Some(None);
                    }
                    // Wait for readability, not in a read: when the linger ends nothing that
                    // consumes bytes is cancelled.
                    let ready = monoio::select! {
                        r = tcp.readable(false) => r.is_ok(),
                        _ = monoio::time::sleep(LINGER) => false,
                    };
                    if !ready {
                        break Some(None);
                    }
                }
            }
            if buf.len() == buf.capacity() {
                buf.reserve(buf.capacity().min(max_buf));
            }
            // Waiting for a head can be cut short: reclaimed when the worker needs room, and
            // at shutdown when idle between keep-alive requests (a new connection's first
            // request and a head in progress still get their answer).
            let waiting = Waiting {
                since: head_started.unwrap_or(conn.idle_since),
                ends_on_shutdown: idle && !conn.first,
            };
            let (outcome, b) = read_more(env, io, buf, deadline, Some(waiting)).await;
            buf = b;
            match outcome {
                ReadOutcome::Data => {
                    head_started.get_or_insert_with(Instant::now);
                }
                ReadOutcome::Timeout if !idle => {
                    let id = env.next_request_id();
                    let e = Error::client(
                        Kind::RequestTimeout,
                        "the request head did not arrive in time",
                    );
                    let _ = Writer::new(env, io, out)
                        .error((id, true, false), &e, |_| {})
                        .await;
                    break None;
                }
                _ => break None,
            }
        };
        let consumed = match consumed {
            Some(Some(n)) => n,
            // Lingered without a request: go idle (the read buffer went with the cancelled
            // read; the pool makes another when bytes arrive).
            Some(None) => break Next::Idle,
            None => break Next::Close,
        };
        conn.first = false;

        let started = Instant::now();
        let id = head
            .header(&buf, "x-request-id")
            .and_then(RequestId::from_client)
            .unwrap_or_else(|| env.next_request_id());
        let mut close = !head.keep_alive() || env.shutdown.is_fired();
        let method = head.method();
        let reads = matches!(method, Method::Get | Method::Head | Method::Options);

        // --- request body: discard, refuse, or close after answering ---
        let mut body_end = consumed;
        let mut early: Option<Error> = None;
        match head.body() {
            BodyFraming::None | BodyFraming::Length(0) => {}
            _ if !reads => close = true,
            BodyFraming::Length(n) if n > MAX_DISCARDED_BODY => {
                close = true;
                early = Some(Error::client(
                    Kind::PayloadTooLarge,
                    "request body too large",
                ));
            }
            framing => {
                let (res, b) = discard_body(env, io, buf, consumed, framing, started).await;
                buf = b;
                match res {
                    Ok(end) => body_end = end,
                    Err(Some(e)) => {
                        close = true;
                        early = Some(e);
                    }
                    Err(None) => break Next::Close,
                }
            }
        }

        // --- answer ---
        let req = Request {
            head: &head,
            buf: &buf[..consumed],
            id,
            started,
            close,
            peer: conn.peer,
        };
        let mut log = A::Log::default();
        let written = io.written();
        let mut answer = Writer::new(env, io, out);
        let result = match early {
            Some(e) => Err(e),
            None => app.handle(&mut answer, &req, &mut log).await,
        };
        let (status, ok) = match result {
            Ok(sent) => (sent.status, !sent.abort),
            Err(e) => {
                let ok = answer
                    .error((id, close, req.is_head()), &e, |_| {})
                    .await
                    .is_ok();
                (e.status(), ok)
            }
        };
        app.finished(&Finished {
            log: &log,
            req: Some(&req),
            id: &id,
            peer: conn.peer,
            method,
            status,
            bytes: io.written() - written,
            took: started.elapsed(),
        });
        // Shutdown may have begun during the answer, whose head then said `Connection: close`.
        if !ok || close || env.shutdown.is_fired() {
            break Next::Close;
        }
        buf.drain(..body_end);
        conn.idle_since = Instant::now();
    };
    *bufref = buf;
    next
}

/// How a wait for request-head bytes is registered with the worker's idle connections.
#[derive(Clone, Copy)]
struct Waiting {
    since: Instant,
    ends_on_shutdown: bool,
}

/// Reads more bytes into `buf` until `deadline`. With `waiting`, the worker may also end the
/// wait (reclaimed, or shutdown while idle): that is `ReadOutcome::Shutdown`.
async fn read_more<S: AsyncReadRent>(
    env: &ConnEnv,
    io: &mut S,
    buf: Vec<u8>,
    deadline: Instant,
    waiting: Option<Waiting>,
) -> (ReadOutcome, Vec<u8>) {
    let len = buf.len();
    let cap = buf.capacity();
    if waiting.is_some_and(|wt| wt.ends_on_shutdown) && env.shutdown.is_fired() {
        return (ReadOutcome::Shutdown, buf);
    }
    let read = monoio::time::timeout_at(deadline, io.read(buf.slice_mut(len..cap)));
    let result = match waiting {
        Some(wt) => monoio::select! {
            r = read => Some(r),
            _ = env.idle.wait(wt.since, None, wt.ends_on_shutdown) => None,
        },
        None => Some(read.await),
    };
    match result {
        // The buffer went with the cancelled read; the connection is closing anyway.
        None => (ReadOutcome::Shutdown, Vec::new()),
        Some(Err(_)) => (ReadOutcome::Timeout, Vec::new()),
        Some(Ok((Ok(0), s))) => (ReadOutcome::Eof, s.into_inner()),
        Some(Ok((Ok(_), s))) => (ReadOutcome::Data, s.into_inner()),
        Some(Ok((Err(_), s))) => (ReadOutcome::Failed, s.into_inner()),
    }
}

/// Reads and drops a request body that starts at `buf[start..]`. Returns the end of whatever
/// part of it is still in `buf` (the caller drains up to there), or an error to answer
/// (`Some`) or a dead connection (`None`). Discarded bytes past the head are removed from
/// `buf` as they are consumed, keeping the head's ranges valid.
async fn discard_body<S: AsyncReadRent>(
    env: &ConnEnv,
    io: &mut S,
    mut buf: Vec<u8>,
    start: usize,
    framing: BodyFraming,
    started: Instant,
) -> (Result<usize, Option<Error>>, Vec<u8>) {
    let deadline = started + env.header_timeout;
    let mut total: u64 = 0;
    let mut remaining = match framing {
        BodyFraming::Length(n) => n,
        _ => u64::MAX,
    };
    let mut decoder = matches!(framing, BodyFraming::Chunked).then(ChunkedDecoder::default);
    loop {
        if buf.len() > start {
            let avail = &buf[start..];
            let used = match decoder.as_mut() {
                None => {
                    let n = (avail.len() as u64).min(remaining) as usize;
                    remaining -= n as u64;
                    n
                }
                Some(d) => match d.decode(avail) {
                    Ok(step) => {
                        total += step.data.len() as u64;
                        if step.done {
                            remaining = 0;
                        }
                        step.consumed
                    }
                    Err(e) => return (Err(Some(e)), buf),
                },
            };
            buf.drain(start..start + used);
            if remaining == 0 {
                return (Ok(start), buf);
            }
            if total > MAX_DISCARDED_BODY {
                return (
                    Err(Some(Error::client(
                        Kind::PayloadTooLarge,
                        "request body too large",
                    ))),
                    buf,
                );
            }
            if used > 0 && buf.len() > start {
                continue;
            }
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(16 * 1024);
        }
        let (outcome, b) = read_more(env, io, buf, deadline, None).await;
        buf = b;
        match outcome {
            ReadOutcome::Data => {}
            ReadOutcome::Timeout => {
                return (
                    Err(Some(Error::client(
                        Kind::RequestTimeout,
                        "the request body did not arrive in time",
                    ))),
                    buf,
                )
            }
            _ => return (Err(None), buf),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids() {
        let id = RequestId::generate(0xdeadbeef, 3, 42);
        assert_eq!(id.as_str(), "deadbeef03000000002a");
        for (tag, worker, n) in [
            (0, 0, 0),
            (1, 0xff, 0xff_ffff_ffff),
            (u32::MAX, 0x100, 0x100_0000_0000),
            (0x1234, u16::MAX, u64::MAX),
        ] {
            assert_eq!(
                RequestId::generate(tag, worker, n).as_str(),
                format!("{tag:08x}{worker:02x}{n:010x}")
            );
        }
        assert_eq!(
            RequestId::from_client(b"abc-123_x.y").unwrap().as_str(),
            "abc-123_x.y"
        );
        assert!(RequestId::from_client(b"bad id").is_none());
        assert!(RequestId::from_client(b"").is_none());
        assert!(RequestId::from_client(&[b'a'; 65]).is_none());
    }
}

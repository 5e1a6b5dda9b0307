//! The upstream HTTP/1.1 client of one worker: keep-alive connection pools per bucket, plain
//! TCP or rustls, request send with one retry on a new connection when a pooled one turns out
//! dead, response-head reading under the first-byte timeout, and a body reader that streams
//! with backpressure.
//!
//! Decisions:
//! - Pools are per bucket (each bucket has its own endpoint, TLS trust and credentials) and LIFO
//!   (the most recently used connection is the one least likely to have been closed by the
//!   origin).
//! - Origins close idle keep-alive connections at their own timeout, often a few seconds, and a
//!   request must never fail because of that. Three layers:
//!   1. Connections idle for longer than the bucket's `pool_idle_timeout` are closed, not
//!      reused. The default, 4 s, is below the 5 s keep-alive timeout of Node.js and Apache,
//!      the most common short origin-side timeouts, so corvid normally closes a pooled
//!      connection before the origin does; against S3 (about 20 s) it costs one reconnect
//!      after 4 s of idleness. It must be > 0: not pooling at all is
//!      `max_idle_connections = 0`.
//!   2. Before reuse, a pooled connection is checked without blocking
//!      ([`crate::net::idle_socket_usable`]): EOF, stray bytes (a TLS close_notify too) or an
//!      error mean it is dead; it is dropped and the next one tried.
//!   3. A close the check cannot see yet (in flight, or already buffered inside rustls): when a
//!      *reused* connection fails on write, or on read before any byte of the response arrived,
//!      the request is retried once on a *new* connection — never on another pooled one, which
//!      has most likely been closed by the same timeout. GET and HEAD are idempotent, so this is
//!      always safe. A timeout is not retried: the origin is slow, not gone.
//! - Timeouts: `connect_timeout` covers TCP connect + TLS handshake, `first_byte_timeout` covers
//!   sending the request and receiving the whole response head, `read_timeout` the gap between
//!   body reads. Expiry maps to 504 before the head reached the client; the connection is never
//!   reused after a timeout.
//! - Sockets have TCP_NODELAY, and TCP_QUICKACK before every read (see [`crate::net::set_quickack`]).

use std::cell::{Cell, RefCell};
use std::os::fd::AsRawFd;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use monoio::time::Instant;
use monoio_rustls::{ClientTlsStream, TlsConnector};
use rustls_pki_types::ServerName;

use crate::error::{Error, Kind};
use crate::http::chunked::ChunkedDecoder;
use crate::http::response::{parse_response, ResponseFraming, UpstreamHead};
use crate::net::{idle_socket_usable, set_quickack, MaybeTls};
use crate::s3::origins::OriginState;

/// Largest upstream response head we accept.
pub const MAX_UPSTREAM_HEAD: usize = 64 * 1024;
/// Initial size of the buffer a response head is read into.
const HEAD_BUF: usize = 16 * 1024;

/// Per-bucket upstream timeouts.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub first_byte: Duration,
    pub read: Duration,
}

/// One upstream connection.
pub struct Conn {
    io: MaybeTls<ClientTlsStream<TcpStream>>,
    fd: RawFd,
}

impl Conn {
    /// Reads part of a response head. Quick ACKs here release the origin's Nagle-held body
    /// segment at once; body reads go without them (the ACK rides on the next request or
    /// the delayed-ACK timer, and saves a packet per segment).
    async fn read_head_into<B: IoBufMut>(&mut self, buf: B) -> monoio::BufResult<usize, B> {
        set_quickack(self.fd);
        self.io.read(buf).await
    }

    async fn read_into<B: IoBufMut>(&mut self, buf: B) -> monoio::BufResult<usize, B> {
        self.io.read(buf).await
    }
}

/// The pool and connection settings of one bucket, on one worker.
pub struct Pool {
    origin: Arc<OriginState>,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// Idle connections with the time each was put back, oldest first (so LIFO pops the newest).
    idle: RefCell<Vec<(Conn, Instant)>>,
    max_idle: usize,
    /// Idle connections older than this are closed instead of reused.
    idle_timeout: Duration,
    next_addr: Cell<usize>,
}

impl Pool {
    /// `tls`: the connector and the server name to verify, for https endpoints. `max_idle`
    /// and `idle_timeout` are the bucket's `max_idle_connections` and `pool_idle_timeout`.
    pub fn new(
        origin: Arc<OriginState>,
        tls: Option<(TlsConnector, ServerName<'static>)>,
        max_idle: usize,
        idle_timeout: Duration,
    ) -> Rc<Pool> {
        Rc::new(Pool {
            origin,
            tls,
            idle: RefCell::new(Vec::new()),
            max_idle,
            idle_timeout,
            next_addr: Cell::new(0),
        })
    }

    /// Whether this pool connects to the addresses of `origin` (the same state, not a copy).
    pub fn serves(&self, origin: &Arc<OriginState>) -> bool {
        Arc::ptr_eq(&self.origin, origin)
    }

    /// Number of idle connections currently pooled.
    pub fn idle_len(&self) -> usize {
        self.idle.borrow().len()
    }

    /// The newest idle connection that is neither expired nor visibly dead; the ones skipped
    /// are closed.
    fn take(&self) -> Option<Conn> {
        let mut idle = self.idle.borrow_mut();
        let now = Instant::now();
        while let Some((conn, since)) = idle.pop() {
            if now.duration_since(since) >= self.idle_timeout {
                // The rest are older still.
                idle.clear();
                return None;
            }
            if idle_socket_usable(conn.fd) {
                return Some(conn);
            }
            log::debug!("pooled upstream connection closed by the origin while idle");
        }
        None
    }

    fn put(&self, conn: Conn) {
        let mut idle = self.idle.borrow_mut();
        let now = Instant::now();
        // Close expired connections now rather than when a later take() reaches them.
        let expired =
            idle.partition_point(|(_, since)| now.duration_since(*since) >= self.idle_timeout);
        idle.drain(..expired);
        if idle.len() < self.max_idle {
            idle.push((conn, now));
        }
    }

    /// Closes every idle connection (used on shutdown and by tests).
    pub fn clear(&self) {
        self.idle.borrow_mut().clear();
    }

    async fn connect(&self, t: &Timeouts) -> Result<Conn, Error> {
        let addrs = self.origin.addrs();
        if addrs.is_empty() {
            return Err(Error::upstream(
                Kind::BadGateway,
                "the origin's address could not be resolved",
            ));
        }
        let i = self.next_addr.get();
        self.next_addr.set(i.wrapping_add(1));
        let addr = addrs[i % addrs.len()];
        let deadline = Instant::now() + t.connect;
        let tcp = match monoio::time::timeout_at(deadline, TcpStream::connect_addr(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return Err(Error::upstream(
                    Kind::BadGateway,
                    format!("cannot connect to the origin: {e}"),
                ))
            }
            Err(_) => {
                return Err(Error::upstream(
                    Kind::GatewayTimeout,
                    "connecting to the origin timed out",
                ))
            }
        };
        let _ = tcp.set_nodelay(true);
        let fd = tcp.as_raw_fd();
        let io = match &self.tls {
            None => MaybeTls::Plain(tcp),
            Some((connector, name)) => {
                match monoio::time::timeout_at(deadline, connector.connect(name.clone(), tcp)).await
                {
                    Ok(Ok(s)) => MaybeTls::Tls(Box::new(s)),
                    Ok(Err(e)) => {
                        return Err(Error::upstream(
                            Kind::BadGateway,
                            format!("TLS handshake with the origin failed: {e}"),
                        ))
                    }
                    Err(_) => {
                        return Err(Error::upstream(
                            Kind::GatewayTimeout,
                            "TLS handshake with the origin timed out",
                        ))
                    }
                }
            }
        };
        Ok(Conn { io, fd })
    }

    /// Sends `request` (a complete, signed request head) and reads the response head.
    ///
    /// Returns the request buffer for reuse along with the result.
    pub async fn send(
        self: &Rc<Self>,
        request: Vec<u8>,
        is_head: bool,
        t: &Timeouts,
    ) -> (Result<(UpstreamHead, Body), Error>, Vec<u8>) {
        let mut request = request;
        // Set once a reused connection failed: the retry goes to a new connection, and a new
        // connection is never retried, so there is at most one retry.
        let mut fresh_only = false;
        loop {
            let pooled = if fresh_only { None } else { self.take() };
            let (mut conn, reused) = match pooled {
                Some(c) => (c, true),
                None => match self.connect(t).await {
                    Ok(c) => (c, false),
                    Err(e) => return (Err(e), request),
                },
            };
            let deadline = Instant::now() + t.first_byte;
            let (res, back) =
                match monoio::time::timeout_at(deadline, conn.io.write_all(request)).await {
                    Ok(r) => r,
                    Err(_) => {
                        // The buffer went with the cancelled write; callers rebuild it.
                        return (
                            Err(Error::upstream(
                                Kind::GatewayTimeout,
                                "sending the request to the origin timed out",
                            )),
                            Vec::new(),
                        );
                    }
                };
            request = back;
            if let Err(e) = res {
                if reused {
                    log::debug!("reused upstream connection failed on write ({e}); retrying");
                    fresh_only = true;
                    continue;
                }
                return (
                    Err(Error::upstream(
                        Kind::BadGateway,
                        format!("sending the request to the origin failed: {e}"),
                    )),
                    request,
                );
            }
            match read_head(&mut conn, is_head, deadline).await {
                Ok((head, buf, consumed)) => {
                    let body = Body::new(Rc::clone(self), conn, &head, buf, consumed, t.read);
                    return (Ok((head, body)), request);
                }
                Err(HeadError::NoAnswer(e)) if reused => {
                    log::debug!(
                        "reused upstream connection failed before answering ({e}); retrying"
                    );
                    fresh_only = true;
                    continue;
                }
                Err(HeadError::NoAnswer(e) | HeadError::Failed(e)) => return (Err(e), request),
            }
        }
    }
}

enum HeadError {
    /// The connection ended (EOF or an IO error) before any byte of the response: on a reused
    /// connection, most likely closed by the origin while pooled, so worth one retry.
    NoAnswer(Error),
    /// Anything else, timeouts included: not retried.
    Failed(Error),
}

async fn read_head(
    conn: &mut Conn,
    is_head: bool,
    deadline: Instant,
) -> Result<(UpstreamHead, Vec<u8>, usize), HeadError> {
    let mut buf: Vec<u8> = Vec::with_capacity(HEAD_BUF);
    loop {
        if buf.len() == buf.capacity() {
            if buf.capacity() >= MAX_UPSTREAM_HEAD {
                return Err(HeadError::Failed(Error::upstream(
                    Kind::BadGateway,
                    "the origin's response head is too large",
                )));
            }
            buf.reserve(buf.capacity());
        }
        let len = buf.len();
        let cap = buf.capacity();
        let (res, slice) =
            match monoio::time::timeout_at(deadline, conn.read_head_into(buf.slice_mut(len..cap)))
                .await
            {
                Ok(r) => r,
                Err(_) => {
                    return Err(HeadError::Failed(Error::upstream(
                        Kind::GatewayTimeout,
                        "the origin did not answer in time",
                    )))
                }
            };
        buf = slice.into_inner();
        match res {
            Ok(0) if buf.is_empty() => {
                return Err(HeadError::NoAnswer(Error::upstream(
                    Kind::BadGateway,
                    "the origin closed the connection without answering",
                )))
            }
            Ok(0) => {
                return Err(HeadError::Failed(Error::upstream(
                    Kind::BadGateway,
                    "the origin closed the connection mid-answer",
                )))
            }
            Ok(_) => {}
            // Any kind: a reset, but also e.g. UnexpectedEof from a TLS stream.
            Err(e) if buf.is_empty() => {
                return Err(HeadError::NoAnswer(Error::upstream(
                    Kind::BadGateway,
                    format!("reading the origin's answer failed: {e}"),
                )))
            }
            Err(e) => {
                return Err(HeadError::Failed(Error::upstream(
                    Kind::BadGateway,
                    format!("reading the origin's answer failed: {e}"),
                )))
            }
        }
        match parse_response(&buf, is_head, MAX_UPSTREAM_HEAD) {
            Ok(Some((head, consumed))) => return Ok((head, buf, consumed)),
            Ok(None) => {}
            Err(e) => return Err(HeadError::Failed(e)),
        }
    }
}

enum BodyState {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
    Done,
}

/// The body of an upstream response. Reading it to the end returns the connection to its pool
/// (when the origin allows keep-alive); dropping it early closes the connection.
pub struct Body {
    pool: Rc<Pool>,
    conn: Option<Conn>,
    keep_alive: bool,
    /// Bytes read past the head (or, for chunked bodies, raw bytes not yet decoded).
    pending: Vec<u8>,
    pos: usize,
    state: BodyState,
    read_timeout: Duration,
}

impl Body {
    fn new(
        pool: Rc<Pool>,
        conn: Conn,
        head: &UpstreamHead,
        buf: Vec<u8>,
        consumed: usize,
        read_timeout: Duration,
    ) -> Body {
        let state = match head.framing {
            ResponseFraming::None => BodyState::Done,
            ResponseFraming::Length(0) => BodyState::Done,
            ResponseFraming::Length(n) => BodyState::Length(n),
            ResponseFraming::Chunked => BodyState::Chunked(ChunkedDecoder::upstream()),
            ResponseFraming::UntilClose => BodyState::UntilClose,
        };
        let mut body = Body {
            pool,
            conn: Some(conn),
            keep_alive: head.keep_alive && !matches!(state, BodyState::UntilClose),
            pending: buf,
            pos: consumed,
            state,
            read_timeout,
        };
        if matches!(body.state, BodyState::Done) {
            body.finish();
        }
        body
    }

    /// A body already read whole (a fleet member's small answer, `crate::fleet::client`):
    /// reading it returns `bytes`; it holds no connection.
    pub fn complete(pool: Rc<Pool>, bytes: Vec<u8>) -> Body {
        let state = match bytes.len() {
            0 => BodyState::Done,
            n => BodyState::Length(n as u64),
        };
        Body {
            pool,
            conn: None,
            keep_alive: false,
            pending: bytes,
            pos: 0,
            state,
            read_timeout: Duration::ZERO,
        }
    }

    /// Reads the whole body (of announced length `len`, which the caller bounds).
    pub async fn read_all(&mut self, len: u64) -> Result<Vec<u8>, Error> {
        let mut all = Vec::with_capacity(len as usize);
        while all.len() < all.capacity() {
            let (res, a) = self.read_into(all).await;
            all = a;
            if res? == 0 {
                break;
            }
        }
        if (all.len() as u64) < len {
            return Err(truncated());
        }
        Ok(all)
    }

    /// The body length announced by the origin, when it announced one.
    pub fn content_length(&self) -> Option<u64> {
        match self.state {
            BodyState::Length(n) => Some(n),
            BodyState::Done => Some(0),
            _ => None,
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self.state, BodyState::Done)
    }

    fn finish(&mut self) {
        self.state = BodyState::Done;
        if let Some(conn) = self.conn.take() {
            // Bytes beyond the body would be a protocol error on the origin's side: do not
            // reuse such a connection.
            if self.keep_alive && self.pos == self.pending.len() {
                self.pool.put(conn);
            } else {
                log::debug!(
                    "upstream connection not reused (keep-alive {}, {} stray bytes)",
                    self.keep_alive,
                    self.pending.len() - self.pos
                );
            }
        }
    }

    fn pending_len(&self) -> usize {
        self.pending.len() - self.pos
    }

    /// Appends the next piece of the body to `out` (at most its spare capacity; `out` must have
    /// spare capacity). Returns the number of bytes appended, 0 at the end of the body.
    pub async fn read_into(&mut self, mut out: Vec<u8>) -> (Result<usize, Error>, Vec<u8>) {
        debug_assert!(out.capacity() > out.len());
        loop {
            let spare = out.capacity() - out.len();
            match &mut self.state {
                BodyState::Done => return (Ok(0), out),
                BodyState::Length(remaining) => {
                    let want = (*remaining).min(spare as u64) as usize;
                    let got = if self.pending_len() > 0 {
                        let n = want.min(self.pending_len());
                        out.extend_from_slice(&self.pending[self.pos..self.pos + n]);
                        self.pos += n;
                        n
                    } else {
                        let (res, o) = self.read_raw_into(out, want).await;
                        out = o;
                        match res {
                            Ok(0) => {
                                return (Err(truncated()), out);
                            }
                            Ok(n) => n,
                            Err(e) => return (Err(e), out),
                        }
                    };
                    let BodyState::Length(remaining) = &mut self.state else {
                        unreachable!("state changed during read")
                    };
                    *remaining -= got as u64;
                    if *remaining == 0 {
                        self.finish();
                    }
                    return (Ok(got), out);
                }
                BodyState::UntilClose => {
                    if self.pending_len() > 0 {
                        let n = spare.min(self.pending_len());
                        out.extend_from_slice(&self.pending[self.pos..self.pos + n]);
                        self.pos += n;
                        return (Ok(n), out);
                    }
                    let (res, o) = self.read_raw_into(out, spare).await;
                    out = o;
                    return match res {
                        Ok(0) => {
                            self.finish();
                            (Ok(0), out)
                        }
                        other => (other, out),
                    };
                }
                BodyState::Chunked(decoder) => {
                    if self.pos < self.pending.len() {
                        let end = self.pending.len().min(self.pos + spare);
                        let step = match decoder.decode(&self.pending[self.pos..end]) {
                            Ok(s) => s,
                            Err(e) => {
                                self.conn = None;
                                return (
                                    Err(Error::upstream(
                                        Kind::BadGateway,
                                        format!(
                                            "bad chunked body from the origin: {}",
                                            e.message()
                                        ),
                                    )),
                                    out,
                                );
                            }
                        };
                        let data = (self.pos + step.data.start)..(self.pos + step.data.end);
                        out.extend_from_slice(&self.pending[data]);
                        self.pos += step.consumed;
                        if step.done {
                            self.finish();
                            if step.data.is_empty() {
                                return (Ok(0), out);
                            }
                        }
                        if !step.data.is_empty() {
                            return (Ok(step.data.len()), out);
                        }
                        if step.consumed > 0 {
                            continue;
                        }
                    }
                    // Need more raw bytes: refill `pending` from the socket.
                    let mut pending = std::mem::take(&mut self.pending);
                    pending.drain(..self.pos);
                    self.pos = 0;
                    if pending.capacity() - pending.len() < 4096 {
                        pending.reserve(64 * 1024);
                    }
                    let room = pending.capacity() - pending.len();
                    let (res, p) = self.read_raw_into(pending, room).await;
                    self.pending = p;
                    match res {
                        Ok(0) => return (Err(truncated()), out),
                        Ok(_) => continue,
                        Err(e) => return (Err(e), out),
                    }
                }
            }
        }
    }

    /// Reads at most `max` bytes from the socket, appending to `buf`.
    async fn read_raw_into(&mut self, buf: Vec<u8>, max: usize) -> (Result<usize, Error>, Vec<u8>) {
        let Some(conn) = self.conn.as_mut() else {
            return (Err(truncated()), buf);
        };
        let len = buf.len();
        let fut = conn.read_into(buf.slice_mut(len..len + max));
        match monoio::time::timeout(self.read_timeout, fut).await {
            Ok((Ok(n), slice)) => (Ok(n), slice.into_inner()),
            Ok((Err(e), slice)) => {
                self.conn = None;
                (
                    Err(Error::upstream(
                        Kind::BadGateway,
                        format!("reading the body from the origin failed: {e}"),
                    )),
                    slice.into_inner(),
                )
            }
            Err(_) => {
                self.conn = None;
                (
                    Err(Error::upstream(
                        Kind::GatewayTimeout,
                        "the origin stalled while sending the body",
                    )),
                    Vec::with_capacity(len + max),
                )
            }
        }
    }
}

fn truncated() -> Error {
    Error::upstream(
        Kind::BadGateway,
        "the origin closed the connection before the end of the body",
    )
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use super::*;
    use crate::config::{Endpoint, Scheme};
    use crate::s3::origins::Origins;

    const TIMEOUTS: Timeouts = Timeouts {
        connect: Duration::from_secs(5),
        first_byte: Duration::from_secs(5),
        read: Duration::from_secs(5),
    };

    /// An origin that keeps idle connections open and, when a request arrives from a peer for
    /// which `hang_up` is true, closes the connection without answering (a close the liveness
    /// check cannot see in advance); other requests get `200 ok`. Returns its address and a
    /// count of the requests received (not of connections: `Origins::refresh_all` connects).
    fn origin(
        hang_up: impl Fn(SocketAddr) -> bool + Send + Sync + 'static,
    ) -> (SocketAddr, Arc<AtomicUsize>) {
        let hang_up = Arc::new(hang_up);
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&requests);
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                let (count, hang_up) = (Arc::clone(&count), Arc::clone(&hang_up));
                std::thread::spawn(move || {
                    let mut head = Vec::new();
                    let mut b = [0u8; 1024];
                    while !head.ends_with(b"\r\n\r\n") {
                        match s.read(&mut b) {
                            Ok(0) | Err(_) => return,
                            Ok(k) => head.extend_from_slice(&b[..k]),
                        }
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                    if !hang_up(s.peer_addr().unwrap()) {
                        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                        let _ = s.read(&mut b);
                    }
                });
            }
        });
        (addr, requests)
    }

    fn pool(addr: SocketAddr, idle_timeout: Duration) -> Rc<Pool> {
        let ep = Endpoint {
            scheme: Scheme::Http,
            host: addr.ip().to_string(),
            port: addr.port(),
        };
        let origins = Origins::new([&ep]);
        origins.refresh_all();
        Pool::new(Arc::clone(origins.get(0)), None, 8, idle_timeout)
    }

    fn run<F: std::future::Future>(f: F) -> F::Output {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn get() -> Vec<u8> {
        b"GET /b/k HTTP/1.1\r\nHost: o\r\n\r\n".to_vec()
    }

    #[test]
    fn dead_reused_connection_is_retried_on_a_new_one_not_another_pooled_one() {
        let doomed = Arc::new(Mutex::new(Vec::new()));
        let d = Arc::clone(&doomed);
        let (addr, requests) = origin(move |peer| d.lock().unwrap().contains(&peer));
        let pool = pool(addr, Duration::from_secs(60));
        run(async {
            // Two pooled connections that the origin will drop on their next request.
            for _ in 0..2 {
                let c = pool.connect(&TIMEOUTS).await.unwrap();
                let MaybeTls::Plain(tcp) = &c.io else {
                    unreachable!("plain http")
                };
                doomed.lock().unwrap().push(tcp.local_addr().unwrap());
                pool.put(c);
            }
            let (res, _) = pool.send(get(), false, &TIMEOUTS).await;
            let (head, mut body) = res.unwrap_or_else(|e| panic!("{}", e.message()));
            assert_eq!(head.status, 200);
            let (n, out) = body.read_into(Vec::with_capacity(16)).await;
            assert_eq!((n.ok(), out.as_slice()), (Some(2), &b"ok"[..]));
            // The newest pooled connection failed, and the retry went to a new connection: the
            // older pooled one was not used (it would have failed too, and been dropped).
            assert_eq!(requests.load(Ordering::SeqCst), 2);
            assert_eq!(pool.idle_len(), 2, "the older pooled one plus the new one");
        });
    }

    #[test]
    fn a_new_connection_failing_is_not_retried() {
        let (addr, requests) = origin(|_| true);
        let pool = pool(addr, Duration::from_secs(60));
        run(async {
            let (res, _) = pool.send(get(), false, &TIMEOUTS).await;
            let e = res.err().expect("the origin never answers");
            assert!(e.message().contains("without answering"), "{}", e.message());
            assert_eq!(requests.load(Ordering::SeqCst), 1);
        });
    }

    #[test]
    fn take_drops_expired_connections_and_reuses_live_ones() {
        let (addr, _) = origin(|_| false);
        run(async {
            let short = pool(addr, Duration::from_millis(1));
            let c = short.connect(&TIMEOUTS).await.unwrap();
            short.put(c);
            monoio::time::sleep(Duration::from_millis(20)).await;
            assert!(short.take().is_none(), "an expired connection was reused");
            assert_eq!(short.idle_len(), 0);

            let long = pool(addr, Duration::from_secs(60));
            let c = long.connect(&TIMEOUTS).await.unwrap();
            long.put(c);
            assert!(
                long.take().is_some(),
                "an idle live connection was not reused"
            );
        });
    }
}

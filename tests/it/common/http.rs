//! A deliberately small, blocking HTTP/1.1 client over `std::net::TcpStream`
//! (and rustls `StreamOwned` for HTTPS).
//!
//! Tests need to see exactly what corvid puts on the wire (framing, header
//! spelling, pipelining order, half-read bodies), which a full client library
//! would normalise away; so this client writes caller-supplied bytes verbatim
//! and parses responses itself with `httparse`.
//!
//! Every read is bounded by a socket read timeout (default
//! [`DEFAULT_TIMEOUT`]) so a hung server fails the test instead of hanging it.
//! Convenience functions panic with context; the `try_*` variants return
//! `io::Result` for tests that *expect* a timeout or a reset.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// Default bound on any single socket read or write.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Upper bound on a response head; anything larger is a server bug worth
/// failing on rather than buffering forever.
const MAX_HEAD: usize = 256 * 1024;

/// One parsed HTTP response.
#[derive(Clone, Debug, Default)]
pub struct RawResponse {
    pub status: u16,
    pub reason: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    /// Headers in wire order with original spelling.
    pub headers: Vec<(String, String)>,
    /// The de-chunked body (empty for HEAD / 1xx / 204 / 304).
    pub body: Vec<u8>,
    /// Trailer fields of a chunked body, if any.
    pub trailers: Vec<(String, String)>,
    /// How the body was framed on the wire.
    pub framing: Framing,
}

/// How a response body was delimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Framing {
    /// No body allowed (HEAD, 1xx, 204, 304).
    #[default]
    None,
    ContentLength(u64),
    Chunked,
    /// Delimited by connection close.
    Close,
}

/// The values of header `name` (case-insensitive) in `headers`, in order. Shared by
/// [`RawResponse`], [`ResponseHead`] and the origin's recorded requests.
pub fn header_values<'a, 'n>(
    headers: &'a [(String, String)],
    name: &'n str,
) -> impl Iterator<Item = &'a str> + use<'a, 'n> {
    headers
        .iter()
        .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

impl RawResponse {
    /// First header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header_values(&self.headers, name).next()
    }

    /// All values of a header (case-insensitive), in wire order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        header_values(&self.headers, name).collect()
    }

    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    /// Body as (lossy) UTF-8, for assertions and panic messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// True when the server announced it will close the connection.
    pub fn connection_close(&self) -> bool {
        self.header_all("connection")
            .iter()
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
            || (self.version == 0
                && !self
                    .header_all("connection")
                    .iter()
                    .any(|v| v.eq_ignore_ascii_case("keep-alive")))
    }
}

/// Status line and headers only; the body is read separately with
/// [`Conn::read_body_chunk`] / [`Conn::read_body_to_end`].
#[derive(Clone, Debug, Default)]
pub struct ResponseHead {
    pub status: u16,
    pub reason: String,
    pub version: u8,
    pub headers: Vec<(String, String)>,
    pub framing: Framing,
}

impl ResponseHead {
    pub fn header(&self, name: &str) -> Option<&str> {
        header_values(&self.headers, name).next()
    }
}

/// Transports the client can run over: plain TCP or rustls-over-TCP.
pub trait Transport: Read + Write {
    fn set_timeouts(&self, timeout: Duration) -> io::Result<()>;
    fn tcp(&self) -> &TcpStream;
}

impl Transport for TcpStream {
    fn set_timeouts(&self, timeout: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(timeout))?;
        self.set_write_timeout(Some(timeout))
    }
    fn tcp(&self) -> &TcpStream {
        self
    }
}

pub type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

impl Transport for TlsStream {
    fn set_timeouts(&self, timeout: Duration) -> io::Result<()> {
        self.sock.set_timeouts(timeout)
    }
    fn tcp(&self) -> &TcpStream {
        &self.sock
    }
}

/// Incremental body decoding state, so a body can be consumed in pieces.
#[derive(Debug)]
enum BodyState {
    Done,
    Length(u64),
    /// Inside a chunk with this many data bytes left (then CRLF).
    ChunkData(u64),
    /// Expecting a chunk-size line.
    ChunkSize,
    Close,
}

/// A keep-alive connection: send requests, read responses in order.
pub struct Conn<S: Transport = TcpStream> {
    stream: S,
    /// Bytes read from the socket but not yet consumed.
    buf: Vec<u8>,
    /// Methods of requests sent through [`Conn::request`], so responses to
    /// HEAD are read without a body even when pipelined.
    pending: VecDeque<String>,
    body: BodyState,
    trailers: Vec<(String, String)>,
    timeout: Duration,
}

impl Conn<TcpStream> {
    /// Connects to `addr` with the default timeout. Panics on failure.
    pub fn connect(addr: SocketAddr) -> Self {
        Self::try_connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
    }

    pub fn try_connect(addr: SocketAddr) -> io::Result<Self> {
        assert!(
            addr.ip().is_loopback(),
            "tests only talk to loopback, got {addr}"
        );
        let stream = TcpStream::connect_timeout(&addr, DEFAULT_TIMEOUT)?;
        stream.set_nodelay(true)?;
        Self::new(stream)
    }
}

impl Conn<TlsStream> {
    /// Connects with TLS; `server_name` is what the certificate is checked
    /// against ("localhost" or "127.0.0.1"). The handshake completes before
    /// this returns so handshake failures surface here.
    pub fn connect_tls(
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
        server_name: &str,
    ) -> io::Result<Self> {
        assert!(
            addr.ip().is_loopback(),
            "tests only talk to loopback, got {addr}"
        );
        let tcp = TcpStream::connect_timeout(&addr, DEFAULT_TIMEOUT)?;
        tcp.set_nodelay(true)?;
        let name = rustls::pki_types::ServerName::try_from(server_name.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let conn = rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        tls.sock.set_timeouts(DEFAULT_TIMEOUT)?;
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        Self::new(tls)
    }
}

impl<S: Transport> Conn<S> {
    pub fn new(stream: S) -> io::Result<Self> {
        stream.set_timeouts(DEFAULT_TIMEOUT)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(16 * 1024),
            pending: VecDeque::new(),
            body: BodyState::Done,
            trailers: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// Changes the bound on each read/write (e.g. short, to assert that the
    /// server does *not* answer).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
        self.stream
            .set_timeouts(timeout)
            .expect("set socket timeout");
    }

    pub fn stream(&self) -> &S {
        &self.stream
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.stream.tcp().local_addr().expect("local_addr")
    }

    /// Writes raw bytes verbatim. Responses to these bytes are read as
    /// non-HEAD unless the caller uses [`Conn::read_response_to`].
    pub fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes)
            .unwrap_or_else(|e| panic!("write request: {e}"));
    }

    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Sends a bodiless request (Host added if missing) and reads the response.
    pub fn request(&mut self, method: &str, path: &str, headers: &[(&str, &str)]) -> RawResponse {
        self.send_request(method, path, headers, &[]);
        self.read_response()
    }

    /// Queues a request without reading the response (for pipelining).
    pub fn send_request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) {
        let host = self
            .stream
            .tcp()
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let bytes = request_bytes(method, path, &host, headers, body);
        self.pending.push_back(method.to_owned());
        self.send(&bytes);
    }

    /// Reads the next complete response (skipping 100-continue style
    /// interim responses). Panics with context on error or timeout.
    pub fn read_response(&mut self) -> RawResponse {
        self.try_read_response()
            .unwrap_or_else(|e| panic!("read response (timeout {:?}): {e}", self.timeout))
    }

    pub fn try_read_response(&mut self) -> io::Result<RawResponse> {
        let method = self.pending.pop_front();
        self.read_response_inner(method.as_deref() == Some("HEAD"))
    }

    /// Reads a response to a request of the given method sent with `send`.
    pub fn read_response_to(&mut self, method: &str) -> RawResponse {
        self.read_response_inner(method.eq_ignore_ascii_case("HEAD"))
            .unwrap_or_else(|e| panic!("read response (timeout {:?}): {e}", self.timeout))
    }

    fn read_response_inner(&mut self, is_head: bool) -> io::Result<RawResponse> {
        loop {
            let head = self.read_head_inner(is_head)?;
            if (100..200).contains(&head.status) && head.status != 101 {
                continue;
            }
            let body = self.read_body_to_end_inner()?;
            return Ok(RawResponse {
                status: head.status,
                reason: head.reason,
                version: head.version,
                headers: head.headers,
                body,
                trailers: std::mem::take(&mut self.trailers),
                framing: head.framing,
            });
        }
    }

    /// Reads only the status line and headers of the next response (may be
    /// a 1xx). Body bytes stay unread in the socket until
    /// [`Conn::read_body_chunk`] asks for them, so the server sees real
    /// backpressure.
    pub fn read_head(&mut self) -> ResponseHead {
        let is_head = self.pending.pop_front().as_deref() == Some("HEAD");
        self.read_head_inner(is_head)
            .unwrap_or_else(|e| panic!("read response head (timeout {:?}): {e}", self.timeout))
    }

    pub fn try_read_head(&mut self) -> io::Result<ResponseHead> {
        let is_head = self.pending.pop_front().as_deref() == Some("HEAD");
        self.read_head_inner(is_head)
    }

    fn read_head_inner(&mut self, is_head: bool) -> io::Result<ResponseHead> {
        assert!(
            matches!(self.body, BodyState::Done),
            "previous response body not fully read"
        );
        loop {
            let mut hbuf = [httparse::EMPTY_HEADER; 128];
            let mut resp = httparse::Response::new(&mut hbuf);
            match resp.parse(&self.buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let status = resp.code.unwrap_or(0);
                    let head = ResponseHead {
                        status,
                        reason: resp.reason.unwrap_or("").to_owned(),
                        version: resp.version.unwrap_or(1),
                        headers: resp
                            .headers
                            .iter()
                            .map(|h| {
                                (
                                    h.name.to_owned(),
                                    String::from_utf8_lossy(h.value).into_owned(),
                                )
                            })
                            .collect(),
                        framing: Framing::None,
                    };
                    self.buf.drain(..n);
                    return self.start_body(head, is_head);
                }
                Ok(httparse::Status::Partial) => {
                    if self.buf.len() > MAX_HEAD {
                        return Err(invalid("response head too large"));
                    }
                    if self.fill()? == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!(
                                "connection closed before a complete response head ({} bytes buffered: {:?})",
                                self.buf.len(),
                                String::from_utf8_lossy(&self.buf)
                            ),
                        ));
                    }
                }
                Err(e) => {
                    return Err(invalid(&format!(
                        "unparsable response head ({e}): {:?}",
                        String::from_utf8_lossy(&self.buf[..self.buf.len().min(512)])
                    )))
                }
            }
        }
    }

    fn start_body(&mut self, mut head: ResponseHead, is_head: bool) -> io::Result<ResponseHead> {
        let no_body = is_head
            || (100..200).contains(&head.status)
            || head.status == 204
            || head.status == 304;
        let chunked = head
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("transfer-encoding"))
            .flat_map(|(_, v)| v.split(','))
            .last()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("chunked"));
        let cls: Vec<&str> = head
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.trim())
            .collect();
        if no_body {
            head.framing = Framing::None;
            self.body = BodyState::Done;
        } else if chunked {
            head.framing = Framing::Chunked;
            self.body = BodyState::ChunkSize;
        } else if let Some(first) = cls.first() {
            if cls.iter().any(|v| v != first) {
                return Err(invalid("conflicting Content-Length headers"));
            }
            let n: u64 = first
                .parse()
                .map_err(|_| invalid(&format!("bad Content-Length {first:?}")))?;
            head.framing = Framing::ContentLength(n);
            self.body = if n == 0 {
                BodyState::Done
            } else {
                BodyState::Length(n)
            };
        } else {
            head.framing = Framing::Close;
            self.body = BodyState::Close;
        }
        Ok(head)
    }

    /// True when the body of the current response has been fully consumed.
    pub fn body_done(&self) -> bool {
        matches!(self.body, BodyState::Done)
    }

    /// Reads up to `max` decoded body bytes of the current response; an
    /// empty vector means the body is complete.
    pub fn read_body_chunk(&mut self, max: usize) -> Vec<u8> {
        self.try_read_body_chunk(max)
            .unwrap_or_else(|e| panic!("read body (timeout {:?}): {e}", self.timeout))
    }

    pub fn try_read_body_chunk(&mut self, max: usize) -> io::Result<Vec<u8>> {
        assert!(max > 0);
        loop {
            match self.body {
                BodyState::Done => return Ok(Vec::new()),
                BodyState::Length(left) | BodyState::ChunkData(left) => {
                    if left == 0 {
                        // Only reachable for chunk data: consume the CRLF.
                        self.expect_crlf()?;
                        self.body = BodyState::ChunkSize;
                        continue;
                    }
                    if self.buf.is_empty() && self.fill()? == 0 {
                        return Err(eof("connection closed mid-body"));
                    }
                    let take = (left as usize).min(self.buf.len()).min(max);
                    // to_vec + drain (a memmove) rather than drain().collect(),
                    // which is byte-at-a-time and crawls in the dev profile.
                    let out = self.buf[..take].to_vec();
                    self.buf.drain(..take);
                    let left = left - take as u64;
                    self.body = match self.body {
                        BodyState::Length(_) if left == 0 => BodyState::Done,
                        BodyState::Length(_) => BodyState::Length(left),
                        _ => BodyState::ChunkData(left),
                    };
                    return Ok(out);
                }
                BodyState::ChunkSize => {
                    let line = self.read_line()?;
                    let size_str = line.split(';').next().unwrap_or("").trim();
                    let size = u64::from_str_radix(size_str, 16)
                        .map_err(|_| invalid(&format!("bad chunk size line {line:?}")))?;
                    if size == 0 {
                        self.read_trailers()?;
                        self.body = BodyState::Done;
                        return Ok(Vec::new());
                    }
                    self.body = BodyState::ChunkData(size);
                }
                BodyState::Close => {
                    if self.buf.is_empty() && self.fill()? == 0 {
                        self.body = BodyState::Done;
                        return Ok(Vec::new());
                    }
                    let take = self.buf.len().min(max);
                    let out = self.buf[..take].to_vec();
                    self.buf.drain(..take);
                    return Ok(out);
                }
            }
        }
    }

    /// Reads the rest of the current body.
    pub fn read_body_to_end(&mut self) -> Vec<u8> {
        self.read_body_to_end_inner()
            .unwrap_or_else(|e| panic!("read body (timeout {:?}): {e}", self.timeout))
    }

    fn read_body_to_end_inner(&mut self) -> io::Result<Vec<u8>> {
        if let BodyState::Length(n) = self.body {
            // Fast path for large Content-Length bodies: read straight into
            // the destination instead of through the staging buffer.
            let n = usize::try_from(n).map_err(|_| invalid("body too large"))?;
            let mut out = vec![0u8; n];
            let pre = self.buf.len().min(n);
            out[..pre].copy_from_slice(&self.buf[..pre]);
            self.buf.drain(..pre);
            let mut filled = pre;
            while filled < n {
                match self.stream.read(&mut out[filled..]) {
                    Ok(0) => {
                        return Err(eof(&format!(
                            "connection closed after {filled} of {n} body bytes"
                        )))
                    }
                    Ok(k) => filled += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            self.body = BodyState::Done;
            return Ok(out);
        }
        let mut out = Vec::new();
        loop {
            let chunk = self.try_read_body_chunk(1 << 20)?;
            if chunk.is_empty() {
                return Ok(out);
            }
            out.extend_from_slice(&chunk);
        }
    }

    /// Trailers of the last chunked body read through `read_body_chunk`.
    pub fn take_trailers(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.trailers)
    }

    /// Waits (up to the current timeout) for the peer to close the
    /// connection. Returns true on EOF/reset, false if data arrived or the
    /// wait timed out.
    pub fn closed_by_peer(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        match self.fill() {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) if is_timeout(&e) => false,
            Err(_) => true,
        }
    }

    fn read_trailers(&mut self) -> io::Result<()> {
        loop {
            let line = self.read_line()?;
            if line.is_empty() {
                return Ok(());
            }
            let (k, v) = line
                .split_once(':')
                .ok_or_else(|| invalid(&format!("bad trailer {line:?}")))?;
            self.trailers
                .push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }

    fn expect_crlf(&mut self) -> io::Result<()> {
        let line = self.read_line()?;
        if line.is_empty() {
            Ok(())
        } else {
            Err(invalid(&format!("expected CRLF after chunk, got {line:?}")))
        }
    }

    /// Reads one CRLF-terminated line (without the CRLF).
    fn read_line(&mut self) -> io::Result<String> {
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..pos]).into_owned();
                self.buf.drain(..pos + 2);
                return Ok(line);
            }
            if self.buf.len() > MAX_HEAD {
                return Err(invalid("line too long"));
            }
            if self.fill()? == 0 {
                return Err(eof("connection closed inside chunked framing"));
            }
        }
    }

    /// Reads whatever the socket has (at least one byte unless EOF).
    fn fill(&mut self) -> io::Result<usize> {
        let mut tmp = [0u8; 64 * 1024];
        loop {
            match self.stream.read(&mut tmp) {
                Ok(n) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// True for the error kinds a socket read timeout produces on Linux.
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

fn eof(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, msg.to_owned())
}

/// Serialises a request. `Host` is added unless present in `headers`;
/// `Content-Length` is added for a non-empty body unless framing headers are
/// present. Header values are written verbatim.
pub fn request_bytes(
    method: &str,
    path: &str,
    host: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + body.len());
    out.extend_from_slice(format!("{method} {path} HTTP/1.1\r\n").as_bytes());
    let has = |n: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
    if !has("host") {
        out.extend_from_slice(format!("Host: {host}\r\n").as_bytes());
    }
    for (k, v) in headers {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    if !body.is_empty() && !has("content-length") && !has("transfer-encoding") {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// Opens a connection, writes `bytes` verbatim, reads one response (no body
/// if the bytes start with `HEAD `). Panics on error or timeout.
pub fn send_raw(addr: SocketAddr, bytes: &[u8]) -> RawResponse {
    try_send_raw(addr, bytes, DEFAULT_TIMEOUT)
        .unwrap_or_else(|e| panic!("raw request to {addr}: {e}"))
}

pub fn try_send_raw(addr: SocketAddr, bytes: &[u8], timeout: Duration) -> io::Result<RawResponse> {
    let mut conn = Conn::try_connect(addr)?;
    conn.set_timeout(timeout);
    conn.try_send(bytes)?;
    conn.read_response_inner(bytes.starts_with(b"HEAD "))
}

/// `GET path` on a fresh connection.
pub fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> RawResponse {
    Conn::connect(addr).request("GET", path, headers)
}

/// `HEAD path` on a fresh connection.
pub fn head(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> RawResponse {
    Conn::connect(addr).request("HEAD", path, headers)
}

/// Any bodiless method on a fresh connection, returning errors instead of
/// panicking (used for readiness polling).
pub fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> io::Result<RawResponse> {
    let host = addr.to_string();
    try_send_raw(
        addr,
        &request_bytes(method, path, &host, headers, &[]),
        timeout,
    )
}

/// `GET path` over TLS on a fresh connection.
pub fn https_get(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    server_name: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> RawResponse {
    let mut conn = Conn::connect_tls(addr, config, server_name)
        .unwrap_or_else(|e| panic!("TLS connect to {addr}: {e}"));
    conn.request("GET", path, headers)
}

//! The byte stream under one Redis connection: plain TCP for `redis://`, TLS over TCP for
//! `rediss://`, split into a read half and a write half (a pipelined connection reads in one
//! task and writes in another, `conn`; the subscriber uses both halves from one task).
//!
//! TLS is a `rustls::ClientConnection` driven here, sans-IO: ciphertext moves between the
//! socket halves and the session through plain buffers, and both halves share the session in a
//! `RefCell` that is borrowed only between awaits, never across one. monoio-rustls's stream is
//! not used for this: its split halves share one stream through an `UnsafeCell`, and its read
//! path writes (an alert after a bad record) into the write buffer the writer half may have
//! lent to the kernel at that moment — a panic, on the worker's thread.
//!
//! Choices:
//! - the certificate is verified by the [`RedisTls`] built once at start: the public roots
//!   plus `cache.redis.ca_file`, for the URL's host (an IP address literal as an IP SAN); no
//!   client certificate, no ALPN;
//! - a TCP EOF without TLS `close_notify` reads as a plain close: RESP replies are
//!   self-delimiting, so a truncated one is never taken for a whole one;
//! - TLS records the session wants to send on its own (a `KeyUpdate` answer) go out with the
//!   next write; nothing sends `close_notify`, the socket is just closed (Redis does not care).

use std::cell::RefCell;
use std::fmt;
use std::io::{self, BufRead, Write};
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;

use monoio::buf::{IoBufMut, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable};
use monoio::net::TcpStream;
use monoio::BufResult;
use rustls::ClientConnection;
use rustls_pki_types::{DnsName, ServerName};

use crate::config::RedisTarget;

/// Ciphertext read from the socket at a time (one full TLS record plus its overhead fits).
const TLS_READ_BUF: usize = 32 * 1024;

/// How a `rediss://` target is reached: the client config (built once at start-up, shared by
/// every connection of every worker) and the name its certificate must carry.
#[derive(Clone)]
pub struct RedisTls {
    config: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
}

impl RedisTls {
    /// TLS to `target.host` with `config` (from [`crate::s3::tls::client_config`]: the public
    /// roots plus `cache.redis.ca_file`, no ALPN). A host that is an IP address is verified
    /// against the certificate's IP address SANs, a name against its DNS names. `Err` when the
    /// host cannot be a TLS server name.
    pub fn new(
        target: &RedisTarget,
        config: Arc<rustls::ClientConfig>,
    ) -> Result<RedisTls, String> {
        let server_name = match target.host.parse::<IpAddr>() {
            Ok(ip) => ServerName::from(ip),
            Err(_) => DnsName::try_from(target.host.as_str())
                .map(|n| ServerName::DnsName(n.to_owned()))
                .map_err(|_| {
                    format!(
                        "host `{}` is not a name a TLS certificate can be verified for",
                        target.host
                    )
                })?,
        };
        Ok(RedisTls {
            config,
            server_name,
        })
    }

    /// The same client config (shared, not rebuilt) for another server: a node of a Redis
    /// Cluster is verified for its own host.
    pub fn for_target(&self, target: &RedisTarget) -> Result<RedisTls, String> {
        RedisTls::new(target, Arc::clone(&self.config))
    }

    /// The name (or address) the server's certificate is verified for.
    pub fn server_name(&self) -> &ServerName<'static> {
        &self.server_name
    }
}

impl fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// A connected stream (TLS handshake done, if any), before it is split.
pub struct Stream {
    tcp: TcpStream,
    tls: Option<ClientConnection>,
}

impl Stream {
    pub fn plain(tcp: TcpStream) -> Stream {
        Stream { tcp, tls: None }
    }

    /// The TCP socket under it (for socket options).
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    pub fn into_split(self) -> (ReadHalf, WriteHalf) {
        let (rd, wr) = self.tcp.into_split();
        match self.tls {
            None => (ReadHalf::Plain(rd), WriteHalf::Plain(wr)),
            Some(session) => {
                let session = Rc::new(RefCell::new(session));
                (
                    ReadHalf::Tls(TlsRead {
                        tcp: rd,
                        session: Rc::clone(&session),
                        raw: Vec::with_capacity(TLS_READ_BUF),
                        pos: 0,
                        ended: false,
                        failed: None,
                    }),
                    WriteHalf::Tls(TlsWrite {
                        tcp: wr,
                        session,
                        out: Vec::new(),
                    }),
                )
            }
        }
    }
}

/// Runs the TLS handshake over `tcp`. Unbounded in time: the caller puts it under its
/// deadline. `Err` says what failed (an untrusted certificate, a name mismatch, a server that
/// does not speak TLS, ...), never anything secret: nothing secret has been sent yet.
pub async fn handshake(mut tcp: TcpStream, tls: &RedisTls) -> io::Result<Stream> {
    let mut session = ClientConnection::new(Arc::clone(&tls.config), tls.server_name.clone())
        .map_err(io::Error::other)?;
    let mut out = Vec::new();
    let mut inbuf = Vec::with_capacity(TLS_READ_BUF);
    while session.is_handshaking() {
        if session.wants_write() {
            out = send_pending(&mut tcp, &mut session, out).await?;
            continue;
        }
        inbuf.clear();
        let (res, buf) = tcp.read(inbuf).await;
        inbuf = buf;
        if res? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection during the TLS handshake (is it a TLS port?)",
            ));
        }
        if let Err(e) = feed(&mut session, &inbuf) {
            // rustls queued an alert saying why: tell the server (best effort).
            let _ = send_pending(&mut tcp, &mut session, out).await;
            return Err(e);
        }
    }
    // The client's last flight (its Finished, with TLS 1.3).
    send_pending(&mut tcp, &mut session, out).await?;
    Ok(Stream {
        tcp,
        tls: Some(session),
    })
}

/// Gives `data` (ciphertext) to the session and processes it.
fn feed(session: &mut ClientConnection, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        if session.read_tls(&mut data)? == 0 {
            return Err(io::Error::other("TLS session took no data"));
        }
        session
            .process_new_packets()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    }
    Ok(())
}

/// Writes every TLS record the session has queued to `tcp`; returns the buffer for reuse.
async fn send_pending(
    tcp: &mut TcpStream,
    session: &mut ClientConnection,
    mut out: Vec<u8>,
) -> io::Result<Vec<u8>> {
    out.clear();
    while session.wants_write() {
        session.write_tls(&mut out)?;
    }
    if out.is_empty() {
        return Ok(out);
    }
    let (res, out) = tcp.write_all(out).await;
    res.map(|_| out)
}

/// The read half: plaintext in, through [`AsyncReadRent::read`] (`readv` is not supported).
pub enum ReadHalf {
    Plain(OwnedReadHalf<TcpStream>),
    Tls(TlsRead),
}

pub struct TlsRead {
    tcp: OwnedReadHalf<TcpStream>,
    session: Rc<RefCell<ClientConnection>>,
    /// Ciphertext read from the socket; `raw[pos..]` not yet given to the session.
    raw: Vec<u8>,
    pos: usize,
    /// The session ended: `close_notify` received, or the socket reached EOF.
    ended: bool,
    /// The session refused a record; reported once the plaintext decrypted before it (often
    /// in the same socket read) has been delivered.
    failed: Option<io::Error>,
}

impl TlsRead {
    /// Copies up to `cap` bytes of received plaintext to `dst`, giving the session more of the
    /// ciphertext already read as needed; returns how many were copied (0: the socket must be
    /// read, or the stream has ended if `ended` is set).
    ///
    /// # Safety
    /// `dst` must be valid for writes of `cap` bytes.
    unsafe fn fill(&mut self, dst: *mut u8, cap: usize) -> io::Result<usize> {
        let mut session = self.session.borrow_mut();
        let mut n = 0;
        while n < cap {
            let mut reader = session.reader();
            match reader.fill_buf() {
                // The session ended (close_notify).
                Ok([]) => {
                    self.ended = true;
                    break;
                }
                Ok(chunk) => {
                    let k = chunk.len().min(cap - n);
                    // SAFETY: `n + k <= cap` and the caller guarantees `dst` is valid for
                    // `cap` bytes; `chunk` is the session's own buffer, which cannot overlap
                    // the caller's.
                    unsafe { std::ptr::copy_nonoverlapping(chunk.as_ptr(), dst.add(n), k) };
                    reader.consume(k);
                    n += k;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.failed.is_some() || self.pos == self.raw.len() {
                        break;
                    }
                    let k = session.read_tls(&mut &self.raw[self.pos..])?;
                    if k == 0 {
                        return Err(io::Error::other("TLS session took no data"));
                    }
                    self.pos += k;
                    if let Err(e) = session.process_new_packets() {
                        self.failed = Some(io::Error::new(io::ErrorKind::InvalidData, e));
                    }
                }
                // A TCP EOF without close_notify: a plain close (see the module doc).
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    self.ended = true;
                    break;
                }
                Err(e) => {
                    if n > 0 {
                        break;
                    }
                    return Err(self.failed.take().unwrap_or(e));
                }
            }
        }
        match self.failed.take() {
            Some(e) if n == 0 => Err(e),
            failed => {
                self.failed = failed;
                Ok(n)
            }
        }
    }

    async fn read<T: IoBufMut>(&mut self, mut buf: T) -> BufResult<usize, T> {
        let cap = buf.bytes_total();
        loop {
            // SAFETY: an `IoBufMut` is valid for writes of `bytes_total()` bytes at
            // `write_ptr()` (the trait's contract).
            match unsafe { self.fill(buf.write_ptr(), cap) } {
                // Nothing yet: more ciphertext is needed.
                Ok(0) if !self.ended && cap > 0 => {}
                Ok(n) => {
                    // SAFETY: `fill` initialised exactly the first `n <= cap` bytes.
                    unsafe { buf.set_init(n) };
                    return (Ok(n), buf);
                }
                Err(e) => return (Err(e), buf),
            }
            let mut raw = std::mem::take(&mut self.raw);
            raw.clear();
            raw.reserve(TLS_READ_BUF);
            self.pos = 0;
            let (res, raw) = self.tcp.read(raw).await;
            self.raw = raw;
            match res {
                Ok(0) => {
                    // Tells the session the stream ended (its reader then says so too; the
                    // flag guards against reading a closed socket forever should it not).
                    self.ended = true;
                    if let Err(e) = self.session.borrow_mut().read_tls(&mut &[][..]) {
                        return (Err(e), buf);
                    }
                }
                Ok(_) => {}
                Err(e) => return (Err(e), buf),
            }
        }
    }
}

impl AsyncReadRent for ReadHalf {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            ReadHalf::Plain(r) => r.read(buf).await,
            ReadHalf::Tls(r) => r.read(buf).await,
        }
    }

    /// Not supported: Redis replies are read with `read` only.
    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        (
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "readv on a redis stream",
            )),
            buf,
        )
    }
}

/// The write half: whole buffers of plaintext out.
pub enum WriteHalf {
    Plain(OwnedWriteHalf<TcpStream>),
    Tls(TlsWrite),
}

pub struct TlsWrite {
    tcp: OwnedWriteHalf<TcpStream>,
    session: Rc<RefCell<ClientConnection>>,
    /// Ciphertext on its way to the socket (reused).
    out: Vec<u8>,
}

impl WriteHalf {
    /// Writes all of `buf` and gives it back for reuse. Not cancel-safe (a write abandoned
    /// half-way leaves the stream unusable): callers drop the connection with it.
    pub async fn write_all(&mut self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        match self {
            WriteHalf::Plain(w) => {
                let (res, buf) = w.write_all(buf).await;
                (res.map(|_| ()), buf)
            }
            WriteHalf::Tls(w) => w.write_all(buf).await,
        }
    }
}

impl TlsWrite {
    async fn write_all(&mut self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        let mut off = 0;
        loop {
            // The session takes plaintext up to its buffer limit (64 KiB of records) at a time.
            let encrypted = {
                let mut session = self.session.borrow_mut();
                encrypt(&mut session, &buf[off..], &mut self.out)
            };
            match encrypted {
                Ok(n) => off += n,
                Err(e) => return (Err(e), buf),
            }
            if self.out.is_empty() {
                return (Ok(()), buf);
            }
            let (res, out) = self.tcp.write_all(std::mem::take(&mut self.out)).await;
            self.out = out;
            self.out.clear();
            if let Err(e) = res {
                return (Err(e), buf);
            }
        }
    }
}

/// Gives `plain` to the session (as much as it takes) and moves every record it has queued
/// into `out`; returns how much of `plain` it took.
fn encrypt(session: &mut ClientConnection, plain: &[u8], out: &mut Vec<u8>) -> io::Result<usize> {
    let mut taken = 0;
    while taken < plain.len() {
        match session.writer().write(&plain[taken..])? {
            0 => break,
            n => taken += n,
        }
    }
    out.clear();
    while session.wants_write() {
        session.write_tls(out)?;
    }
    Ok(taken)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Arc<rustls::ClientConfig> {
        crate::s3::tls::client_config(None, &[]).unwrap()
    }

    #[test]
    fn server_names_follow_the_host() {
        let name = |url: &str| {
            let t: RedisTarget = url.parse().unwrap();
            RedisTls::new(&t, config()).map(|t| t.server_name().clone())
        };
        assert_eq!(
            name("rediss://cache.example.com").unwrap(),
            ServerName::try_from("cache.example.com").unwrap()
        );
        assert!(matches!(
            name("rediss://127.0.0.1:6380").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            name("rediss://[::1]").unwrap(),
            ServerName::IpAddress(_)
        ));
        // The debug form names the server, not the trust store.
        let t: RedisTarget = "rediss://r.example".parse().unwrap();
        let dbg = format!("{:?}", RedisTls::new(&t, config()).unwrap());
        assert!(dbg.contains("r.example") && dbg.len() < 200, "{dbg}");
    }
}

#[cfg(test)]
#[allow(
    clippy::disallowed_methods,
    reason = "tests may block: the test server runs on its own thread"
)]
mod session_tests {
    use std::io::{Read, Write};
    use std::net::Shutdown;

    use super::*;

    /// How the test server ends the session after its `+OK\r\n`.
    #[derive(Clone, Copy, Debug)]
    enum End {
        CloseNotify,
        /// A TCP FIN without close_notify.
        Eof,
        /// A forged application-data record (fails to decrypt), then nothing.
        BadRecord,
    }

    /// A CA, a server config for 127.0.0.1 signed by it, and a client config trusting it.
    fn pki() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        let server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (Arc::new(server), Arc::new(client))
    }

    /// A one-connection TLS server (blocking, on its own thread): handshake, `+OK\r\n`, then
    /// `end`; it holds the socket open until the client closes it.
    fn serve_once(config: Arc<rustls::ServerConfig>, end: End) -> std::net::SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut sock, _) = listener.accept().unwrap();
            let mut tls = rustls::ServerConnection::new(config).unwrap();
            while tls.is_handshaking() {
                tls.complete_io(&mut sock).unwrap();
            }
            tls.writer().write_all(b"+OK\r\n").unwrap();
            if let End::CloseNotify = end {
                tls.send_close_notify();
            }
            while tls.wants_write() {
                tls.write_tls(&mut sock).unwrap();
            }
            match end {
                End::CloseNotify => {}
                End::Eof => sock.shutdown(Shutdown::Write).unwrap(),
                End::BadRecord => {
                    let mut record = vec![0x17, 0x03, 0x03, 0x00, 0x20];
                    record.extend_from_slice(&[0xa5; 0x20]);
                    sock.write_all(&record).unwrap();
                }
            }
            // Until the client closes (closing first with its bytes unread would reset the
            // connection, and a reset may discard what the client has not read yet).
            let mut sink = [0; 1024];
            while matches!(sock.read(&mut sink), Ok(n) if n > 0) {}
        });
        addr
    }

    /// Everything the client's read half yields until it ends: the bytes, and how it ended.
    async fn read_all(rd: &mut ReadHalf) -> (Vec<u8>, io::Result<()>) {
        let mut got = Vec::new();
        loop {
            let (res, buf) = rd.read(Vec::with_capacity(3)).await;
            match res {
                Ok(0) => return (got, Ok(())),
                Ok(_) => got.extend_from_slice(&buf),
                Err(e) => return (got, Err(e)),
            }
        }
    }

    #[test]
    fn reads_end_cleanly_or_fail_without_panicking() {
        let (server, client) = pki();
        let target: RedisTarget = "rediss://127.0.0.1".parse().unwrap();
        let tls = RedisTls::new(&target, client).unwrap();
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        rt.block_on(async {
            for end in [End::CloseNotify, End::Eof, End::BadRecord] {
                let addr = serve_once(Arc::clone(&server), end);
                let tcp = TcpStream::connect_addr(addr).await.unwrap();
                let (mut rd, mut wr) = handshake(tcp, &tls).await.unwrap().into_split();
                // A write before the end; reads come back in pieces of the buffer's size.
                let (res, _) = wr.write_all(b"*1\r\n$4\r\nPING\r\n".to_vec()).await;
                res.unwrap();
                let (got, ended) = read_all(&mut rd).await;
                assert_eq!(got, b"+OK\r\n", "{end:?}");
                match end {
                    End::CloseNotify | End::Eof => assert!(ended.is_ok(), "{end:?}: {ended:?}"),
                    End::BadRecord => {
                        let e = ended.unwrap_err();
                        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
                    }
                }
            }
        });
    }

    #[test]
    fn a_server_that_is_not_tls_fails_the_handshake() {
        let (_, client) = pki();
        let target: RedisTarget = "rediss://127.0.0.1".parse().unwrap();
        let tls = RedisTls::new(&target, client).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for reply in [&b"-ERR unknown command\r\n"[..], b""] {
                let (mut sock, _) = listener.accept().unwrap();
                let _ = sock.read(&mut [0; 512]);
                let _ = sock.write_all(reply);
            }
        });
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .unwrap();
        rt.block_on(async {
            // Plain RESP in answer to the ClientHello, then a close without a word.
            for what in ["corrupt", "closed the connection during the TLS handshake"] {
                let tcp = TcpStream::connect_addr(addr).await.unwrap();
                let e = handshake(tcp, &tls).await.err().unwrap();
                assert!(e.to_string().contains(what), "{what}: {e}");
            }
        });
    }
}

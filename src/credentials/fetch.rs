//! A small blocking HTTP/1.1 client for the credential endpoints (STS, ECS, IMDS).
//!
//! It runs only on the starting thread and the `corvid-credentials` refresh thread, never on a
//! worker, so it may use std sockets: one connection per request (`Connection: close`), a
//! timeout on connect and on every read and write, rustls for `https://` (the same roots as
//! the origins, [`crate::s3::tls::client_config`]), the response head parsed with `httparse`,
//! the body read by `Content-Length`, chunked, or to the end.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Largest response accepted (credential documents are a few KiB).
const MAX_RESPONSE: usize = 1 << 20;

/// A parsed `http://` or `https://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub https: bool,
    /// Host without brackets (`::1` for `[::1]`).
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Url {
    pub fn parse(s: &str) -> Result<Url, String> {
        let (https, rest) = if let Some(r) = strip_prefix_ci(s, "https://") {
            (true, r)
        } else if let Some(r) = strip_prefix_ci(s, "http://") {
            (false, r)
        } else {
            return Err(format!("{s:?} is not an http:// or https:// URL"));
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(format!("{s:?}: bad host"));
        }
        let default_port = if https { 443 } else { 80 };
        let (host, port) = if let Some(r) = authority.strip_prefix('[') {
            let end = r.find(']').ok_or_else(|| format!("{s:?}: bad IPv6 host"))?;
            let port = match &r[end + 1..] {
                "" => default_port,
                p => parse_port(p.strip_prefix(':').unwrap_or("x"), s)?,
            };
            (r[..end].to_owned(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), parse_port(p, s)?),
                None => (authority.to_owned(), default_port),
            }
        };
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        Ok(Url {
            https,
            host: host.to_ascii_lowercase(),
            port,
            path,
        })
    }

    /// `host[:port]` as the `Host` header wants it.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let default = if self.https { 443 } else { 80 };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// The same server with another path.
    pub fn with_path(&self, path: &str) -> Url {
        Url {
            path: path.to_owned(),
            ..self.clone()
        }
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    (s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &s[prefix.len()..])
}

fn parse_port(p: &str, url: &str) -> Result<u16, String> {
    p.parse().map_err(|_| format!("{url:?}: bad port"))
}

/// A response: status, headers (lowercase names) and body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One request: `method url`, extra `headers`, `body`; `timeout` bounds the connect and every
/// read and write.
#[expect(
    clippy::disallowed_methods,
    reason = "blocking DNS and connect: the credentials refresh thread or start-up, never a worker"
)]
pub fn request(
    method: &str,
    url: &Url,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Result<Response, String> {
    let addrs: Vec<_> = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| format!("resolve {}: {e}", url.host))?
        .collect();
    let mut last = format!("{}: no address", url.host);
    let mut stream = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = format!("connect {a}: {e}"),
        }
    }
    let tcp = stream.ok_or(last)?;
    tcp.set_read_timeout(Some(timeout))
        .and_then(|()| tcp.set_write_timeout(Some(timeout)))
        .map_err(|e| format!("socket: {e}"))?;
    let _ = tcp.set_nodelay(true);

    let mut head = format!(
        "{method} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nUser-Agent: corvid/{}\r\nContent-Length: {}\r\n",
        url.path,
        url.authority(),
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    for (n, v) in headers {
        head.push_str(n);
        head.push_str(": ");
        head.push_str(v);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let mut wire = head.into_bytes();
    wire.extend_from_slice(body);

    let raw = if url.https {
        let name = rustls_pki_types::ServerName::try_from(url.host.clone())
            .map_err(|e| format!("{}: {e}", url.host))?;
        let conn =
            rustls::ClientConnection::new(tls_config()?, name).map_err(|e| format!("tls: {e}"))?;
        exchange(rustls::StreamOwned::new(conn, tcp), &wire)?
    } else {
        exchange(tcp, &wire)?
    };
    parse_response(&raw)
}

fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| crate::s3::tls::client_config(None, crate::s3::tls::ALPN_HTTP1))
        .clone()
}

fn exchange<S: Read + Write>(mut s: S, wire: &[u8]) -> Result<Vec<u8>, String> {
    s.write_all(wire)
        .and_then(|()| s.flush())
        .map_err(|e| format!("send: {e}"))?;
    let mut raw = Vec::with_capacity(4096);
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&buf[..n]);
                if raw.len() > MAX_RESPONSE {
                    return Err("response too large".into());
                }
                if complete(&raw) {
                    break;
                }
            }
            // A TLS peer that closes without close_notify: what arrived is the answer.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => break,
            Err(e) => return Err(format!("receive: {e}")),
        }
    }
    Ok(raw)
}

/// Whether `raw` holds a whole response with a `Content-Length` body (lets us stop reading
/// without waiting for the server to close).
fn complete(raw: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut r = httparse::Response::new(&mut headers);
    match r.parse(raw) {
        Ok(httparse::Status::Complete(n)) => r
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| {
                std::str::from_utf8(h.value)
                    .ok()?
                    .trim()
                    .parse::<usize>()
                    .ok()
            })
            .is_some_and(|len| raw.len() >= n + len),
        _ => false,
    }
}

/// Parses a whole response (head, then a `Content-Length`, chunked or close-delimited body).
pub fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut r = httparse::Response::new(&mut headers);
    let n = match r.parse(raw) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Err("truncated response head".into()),
        Err(e) => return Err(format!("bad response head: {e}")),
    };
    let status = r.code.unwrap_or(0);
    let headers: Vec<(String, String)> = r
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).trim().to_owned(),
            )
        })
        .collect();
    let rest = &raw[n..];
    let get = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    let body = if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(rest)?
    } else if let Some(len) = get("content-length") {
        let len: usize = len.parse().map_err(|_| "bad Content-Length")?;
        rest.get(..len).ok_or("truncated response body")?.to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = memchr::memmem::find(rest, b"\r\n").ok_or("truncated chunk size")?;
        let line = std::str::from_utf8(&rest[..eol]).map_err(|_| "bad chunk size")?;
        let size = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| "bad chunk size")?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(rest.get(..size).ok_or("truncated chunk")?);
        rest = rest.get(size + 2..).ok_or("truncated chunk")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = Url::parse("http://169.254.170.2/v2/credentials/abc").unwrap();
        assert_eq!(
            (u.https, u.host.as_str(), u.port, u.path.as_str()),
            (false, "169.254.170.2", 80, "/v2/credentials/abc")
        );
        let u = Url::parse("HTTPS://STS.us-east-1.amazonaws.com").unwrap();
        assert_eq!((u.https, u.port, u.path.as_str()), (true, 443, "/"));
        assert_eq!(u.authority(), "sts.us-east-1.amazonaws.com");
        let u = Url::parse("http://[fd00:ec2::23]:8080/get").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("fd00:ec2::23", 8080));
        assert_eq!(u.authority(), "[fd00:ec2::23]:8080");
        assert!(Url::parse("ftp://x").is_err());
        assert!(Url::parse("http://u:p@x/").is_err());
        assert!(Url::parse("http://x:port/").is_err());
    }

    #[test]
    fn responses() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiXX").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hi"[..]));
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.body, b"abcde");
        let r = parse_response(b"HTTP/1.0 404 Not Found\r\n\r\nto the end").unwrap();
        assert_eq!((r.status, r.text().as_str()), (404, "to the end"));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab").is_err());
        assert!(complete(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"));
        assert!(!complete(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nhi"));
    }
}

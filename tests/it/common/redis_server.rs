//! A real `redis-server` child process on a free loopback port, for tests (shared by
//! the corvid integration tests and, through `tests/tier_support`, tests/purge.rs and
//! tests/redis_tier.rs). Needs `redis-server` on PATH
//! (Debian: `apt-get install redis-server`; Debian's build has TLS). [`RedisServer::start_tls`]
//! starts one that speaks only TLS (`--port 0 --tls-port P`), whose helper connections (PING,
//! DBSIZE, ...) are TLS too.

#![allow(
    dead_code,
    reason = "shared by tests/redis_tier.rs, tests/purge.rs and tests/it, which use different parts"
)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::port::free_port;

/// A redis-server child process, killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    extra: Vec<String>,
    /// The login of the helper's own connections (PING, DBSIZE): `(user, password)`.
    login: Option<(Option<String>, String)>,
    tls: Option<ServerTls>,
    _dir: tempfile::TempDir,
}

/// A TLS-only server: its `--tls-*` arguments and a client config trusting its CA (for the
/// helper's own connections).
struct ServerTls {
    args: Vec<String>,
    client: Arc<rustls::ClientConfig>,
}

impl RedisServer {
    /// Starts with `extra` command-line arguments (`--requirepass PW` among them makes the
    /// helper's own connections log in with that password).
    pub fn start(extra: &[&str]) -> RedisServer {
        Self::start_on(free_port(), extra)
    }

    /// Starts on a given port (e.g. one a corvid instance was already pointed at).
    pub fn start_on(port: u16, extra: &[&str]) -> RedisServer {
        let login = extra
            .iter()
            .position(|a| *a == "--requirepass")
            .map(|i| (None, extra[i + 1].to_string()));
        Self::start_with_login(port, extra, login)
    }

    /// Starts a TLS-only server (`--port 0 --tls-port P`, no client certificates asked) with
    /// the PEM files `cert`/`key` (for 127.0.0.1) and `ca`; `client` trusts `ca` and is what
    /// the helper's own connections use. `extra` as in [`RedisServer::start`].
    pub fn start_tls(
        cert: &Path,
        key: &Path,
        ca: &Path,
        client: Arc<rustls::ClientConfig>,
        extra: &[&str],
    ) -> RedisServer {
        let login = extra
            .iter()
            .position(|a| *a == "--requirepass")
            .map(|i| (None, extra[i + 1].to_string()));
        let path = |p: &Path| p.to_str().expect("UTF-8 path").to_string();
        let tls = ServerTls {
            args: vec![
                "--tls-cert-file".into(),
                path(cert),
                "--tls-key-file".into(),
                path(key),
                "--tls-ca-cert-file".into(),
                path(ca),
                "--tls-auth-clients".into(),
                "no".into(),
            ],
            client,
        };
        let mut s = RedisServer {
            child: None,
            port: free_port(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            login,
            tls: Some(tls),
            _dir: tempfile::tempdir().unwrap(),
        };
        s.restart();
        s
    }

    /// Starts with the `default` user disabled and one ACL user `user` with password `password`
    /// allowed every key, channel and command: only `AUTH user password` gets in.
    pub fn start_acl_user(user: &str, password: &str) -> RedisServer {
        let pass = format!(">{password}");
        let extra = [
            "--user", "default", "off", "--user", user, "on", &pass, "~*", "&*", "+@all",
        ];
        Self::start_with_login(
            free_port(),
            &extra,
            Some((Some(user.to_string()), password.to_string())),
        )
    }

    fn start_with_login(
        port: u16,
        extra: &[&str],
        login: Option<(Option<String>, String)>,
    ) -> RedisServer {
        let mut s = RedisServer {
            child: None,
            port,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            login,
            tls: None,
            _dir: tempfile::tempdir().unwrap(),
        };
        s.restart();
        s
    }

    /// (Re)starts the server on the same port and waits until it answers PING.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "server still running");
        let port = self.port.to_string();
        let ports = match &self.tls {
            None => vec!["--port", &port],
            Some(tls) => {
                let mut a = vec!["--port", "0", "--tls-port", &port];
                a.extend(tls.args.iter().map(String::as_str));
                a
            }
        };
        let child = Command::new("redis-server")
            .args(ports)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--loglevel", "warning"])
            .arg("--dir")
            .arg(self._dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}): the Redis tier tests need it on PATH \
                     (Debian/Ubuntu: apt-get install redis-server)"
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.answers_ping() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING within 10 s"
            );
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("redis-server exited at start: {status}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn answers_ping(&self) -> bool {
        self.command(&["PING"]).as_deref() == Some(b"+PONG".as_slice())
    }

    /// `DBSIZE`: how many keys the server holds (None when it does not answer).
    pub fn key_count(&self) -> Option<u64> {
        let reply = self.command(&["DBSIZE"])?;
        std::str::from_utf8(reply.strip_prefix(b":")?)
            .ok()?
            .parse()
            .ok()
    }

    /// Sends one command on a fresh connection (logged in first, if the server has a login)
    /// and returns the first line of the reply without its CRLF (None on any failure).
    pub fn command(&self, args: &[&str]) -> Option<Vec<u8>> {
        let mut s = self.session()?;
        s.write_all(&encode(args)).ok()?;
        read_line(&mut s)
    }

    /// The values of every key (`KEYS *`, then `GET` each; None when the server does not
    /// answer), e.g. to wait until an entry's encoding carries a header value.
    pub fn values(&self) -> Option<Vec<Vec<u8>>> {
        let keys = match self.reply(&[b"KEYS", b"*"])? {
            Reply::Array(keys) => keys,
            _ => return None,
        };
        keys.into_iter()
            .map(|k| match k {
                Reply::Bulk(Some(k)) => match self.reply(&[b"GET", &k])? {
                    Reply::Bulk(v) => Some(v.unwrap_or_default()),
                    _ => None,
                },
                _ => None,
            })
            .collect()
    }

    /// Sends one command (binary arguments) on a fresh connection, logged in first if the
    /// server has a login, and reads its whole reply.
    fn reply(&self, args: &[&[u8]]) -> Option<Reply> {
        let mut s = self.session()?;
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        s.write_all(&out).ok()?;
        read_reply(&mut s)
    }

    /// A fresh helper connection (TLS for a TLS server), reads bounded to 1 s.
    /// A fresh connection, logged in first if the server has a login.
    fn session(&self) -> Option<Link> {
        let mut s = self.connect()?;
        if let Some((user, password)) = &self.login {
            let mut auth = vec!["AUTH"];
            auth.extend(user.as_deref());
            auth.push(password);
            s.write_all(&encode(&auth)).ok()?;
            if read_line(&mut s)? != b"+OK" {
                return None;
            }
        }
        Some(s)
    }

    fn connect(&self) -> Option<Link> {
        let s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
        s.set_write_timeout(Some(Duration::from_secs(1))).ok()?;
        Some(match &self.tls {
            None => Link::Plain(s),
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
                let session = rustls::ClientConnection::new(Arc::clone(&tls.client), name).ok()?;
                Link::Tls(Box::new(rustls::StreamOwned::new(session, s)))
            }
        })
    }

    pub fn pid(&self) -> libc::pid_t {
        self.child.as_ref().expect("server not running").id() as libc::pid_t
    }

    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: plain kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0);
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL, works on a stopped process too
            let _ = c.wait();
        }
    }

    /// `redis://127.0.0.1:PORT`, or `rediss://` for a TLS server.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }
}

/// A helper connection: plain, or TLS (rustls, blocking).
enum Link {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Link {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Link::Plain(s) => s.read(buf),
            Link::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Link {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Link::Plain(s) => s.write(buf),
            Link::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Link::Plain(s) => s.flush(),
            Link::Tls(s) => s.flush(),
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A RESP array of bulk strings.
fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    out
}

/// A RESP2 reply, as far as [`RedisServer::values`] needs one.
enum Reply {
    /// `+`, `-` or `:`: the line after the type byte.
    Line(Vec<u8>),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

fn read_reply(s: &mut impl Read) -> Option<Reply> {
    let line = read_line(s)?;
    let (kind, rest) = line.split_first()?;
    let len = || std::str::from_utf8(rest).ok()?.parse::<i64>().ok();
    match kind {
        b'+' | b'-' | b':' => Some(Reply::Line(rest.to_vec())),
        b'$' => match usize::try_from(len()?) {
            Err(_) => Some(Reply::Bulk(None)),
            Ok(n) => {
                let mut v = vec![0; n + 2];
                s.read_exact(&mut v).ok()?;
                v.truncate(n);
                Some(Reply::Bulk(Some(v)))
            }
        },
        b'*' => (0..len()?.max(0))
            .map(|_| read_reply(s))
            .collect::<Option<_>>()
            .map(Reply::Array),
        _ => None,
    }
}

/// One reply line, without its CRLF.
fn read_line(s: &mut impl Read) -> Option<Vec<u8>> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        s.read_exact(&mut byte).ok()?;
        line.push(byte[0]);
    }
    line.truncate(line.len() - 2);
    Some(line)
}

//! A real `redis-server` child process on a free loopback port, for tests (shared by
//! `tests/redis_tier.rs` and the corvid integration tests). Needs `redis-server` on PATH
//! (Debian: `apt-get install redis-server`).

#![allow(
    dead_code,
    reason = "shared by tests/redis_tier.rs, tests/purge.rs and tests/it, which use different parts"
)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A redis-server child process, killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    extra: Vec<String>,
    /// The login of the helper's own connections (PING, DBSIZE): `(user, password)`.
    login: Option<(Option<String>, String)>,
    _dir: tempfile::TempDir,
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
            _dir: tempfile::tempdir().unwrap(),
        };
        s.restart();
        s
    }

    /// (Re)starts the server on the same port and waits until it answers PING.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "server still running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
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
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
        if let Some((user, password)) = &self.login {
            let mut auth = vec!["AUTH"];
            auth.extend(user.as_deref());
            auth.push(password);
            s.write_all(&encode(&auth)).ok()?;
            if read_line(&mut s)? != b"+OK" {
                return None;
            }
        }
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
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
        if let Some((user, password)) = &self.login {
            let mut auth = vec!["AUTH"];
            auth.extend(user.as_deref());
            auth.push(password);
            s.write_all(&encode(&auth)).ok()?;
            if read_line(&mut s)? != b"+OK" {
                return None;
            }
        }
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        s.write_all(&out).ok()?;
        read_reply(&mut s)
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

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
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

fn read_reply(s: &mut TcpStream) -> Option<Reply> {
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
fn read_line(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        s.read_exact(&mut byte).ok()?;
        line.push(byte[0]);
    }
    line.truncate(line.len() - 2);
    Some(line)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

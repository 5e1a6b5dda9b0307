//! A real `redis-server` child process on a free loopback port, for tests (shared by
//! `tests/redis_tier.rs` and the corvid integration tests). Needs `redis-server` on PATH
//! (Debian: `apt-get install redis-server`).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A redis-server child process, killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    extra: Vec<String>,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start(extra: &[&str]) -> RedisServer {
        Self::start_on(free_port(), extra)
    }

    /// Starts on a given port (e.g. one a corvid instance was already pointed at).
    pub fn start_on(port: u16, extra: &[&str]) -> RedisServer {
        let mut s = RedisServer {
            child: None,
            port,
            extra: extra.iter().map(|s| s.to_string()).collect(),
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
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let auth = self
            .extra
            .iter()
            .position(|a| a == "--requirepass")
            .map(|i| self.extra[i + 1].clone());
        if let Some(pw) = auth {
            let _ = write!(s, "*2\r\n$4\r\nAUTH\r\n${}\r\n{}\r\n", pw.len(), pw);
            let mut buf = [0u8; 5];
            if s.read_exact(&mut buf).is_err() {
                return false;
            }
        }
        if s.write_all(b"*1\r\n$4\r\nPING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    /// `DBSIZE`: how many keys the server holds (None when it does not answer).
    pub fn key_count(&self) -> Option<u64> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
        s.write_all(b"*1\r\n$6\r\nDBSIZE\r\n").ok()?;
        let mut reply = Vec::new();
        let mut byte = [0u8; 1];
        while !reply.ends_with(b"\r\n") {
            s.read_exact(&mut byte).ok()?;
            reply.push(byte[0]);
        }
        std::str::from_utf8(reply.strip_prefix(b":")?)
            .ok()?
            .trim_end()
            .parse()
            .ok()
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

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

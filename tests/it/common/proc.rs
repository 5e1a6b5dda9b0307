//! Runs the real corvid binary as a child process.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::http;

/// How long `start` waits for `/health` before failing the test.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Path of the corvid binary under test (cargo builds it for integration
/// tests and tells us where).
fn corvid_bin() -> &'static str {
    env!("CARGO_BIN_EXE_corvid")
}

/// How `start` decides corvid is ready.
#[derive(Clone)]
pub enum Readiness {
    /// `GET /health` over plain HTTP answers 200.
    Http,
    /// `GET /health` over TLS (verified as "localhost") answers 200.
    Https(Arc<rustls::ClientConfig>),
    /// Don't wait at all (for tests expecting startup to fail).
    None,
}

/// A running corvid process; killed on drop.
pub struct Corvid {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    config_path: PathBuf,
    stderr_path: PathBuf,
    stdout_path: PathBuf,
}

impl Corvid {
    /// Writes `config_toml` to a temp file, spawns `corvid serve --config
    /// FILE` and waits until `GET /health` answers 200. The listen address
    /// is read from `[server] listen` in the config (use [`super::free_port`]
    /// or [`super::server_toml`]). Fails the test with corvid's stderr if it
    /// is not healthy within [`STARTUP_TIMEOUT`].
    pub fn start(config_toml: &str) -> Corvid {
        Self::start_with(config_toml, Readiness::Http, &[])
    }

    /// Like `start`, but only spawns (use with `wait_exit` to test that a
    /// bad config makes corvid exit non-zero).
    pub fn spawn(config_toml: &str) -> Corvid {
        Self::start_with(config_toml, Readiness::None, &[])
    }

    /// Full control: readiness probe and extra environment (e.g. RUST_LOG).
    pub fn start_with(config_toml: &str, ready: Readiness, env: &[(&str, &str)]) -> Corvid {
        Self::launch(config_toml, ready, env, None)
    }

    /// Like `start`, with the open-file limit (soft = hard) set to `nofile` in the child before
    /// it runs corvid.
    pub fn start_with_nofile(config_toml: &str, nofile: u64) -> Corvid {
        Self::launch(config_toml, Readiness::Http, &[], Some(nofile))
    }

    fn launch(
        config_toml: &str,
        ready: Readiness,
        env: &[(&str, &str)],
        nofile: Option<u64>,
    ) -> Corvid {
        let addr = listen_addr(config_toml);
        let dir = tempfile::Builder::new()
            .prefix("corvid-proc-")
            .tempdir()
            .expect("corvid temp dir");
        let config_path = dir.path().join("corvid.toml");
        std::fs::write(&config_path, config_toml).expect("write config");
        let stderr_path = dir.path().join("stderr.log");
        let stdout_path = dir.path().join("stdout.log");

        let mut cmd = Command::new(corvid_bin());
        cmd.arg("serve")
            .arg("--config")
            .arg(&config_path)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(File::create(&stdout_path).expect("stdout file"))
            .stderr(File::create(&stderr_path).expect("stderr file"));
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some(n) = nofile {
            limit_open_files(&mut cmd, n);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", corvid_bin()));

        let mut corvid = Corvid {
            child,
            addr,
            dir,
            config_path,
            stderr_path,
            stdout_path,
        };
        match ready {
            Readiness::None => {}
            Readiness::Http => corvid.wait_healthy(None),
            Readiness::Https(cfg) => corvid.wait_healthy(Some(cfg)),
        }
        corvid
    }

    /// Polls `/health` with a short, growing backoff; bounded by
    /// [`STARTUP_TIMEOUT`]. Fails fast if the process exits.
    fn wait_healthy(&mut self, tls: Option<Arc<rustls::ClientConfig>>) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let mut backoff = Duration::from_millis(10);
        let mut last: String;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "corvid exited during startup with {status}\n--- config ---\n{}\n--- stderr ---\n{}",
                    self.config(),
                    self.stderr()
                );
            }
            let probe = match &tls {
                None => http::try_request(self.addr, "GET", "/health", &[], Duration::from_secs(1)),
                Some(cfg) => http::Conn::connect_tls(self.addr, cfg.clone(), "localhost").and_then(
                    |mut c| {
                        c.set_timeout(Duration::from_secs(1));
                        c.send_request("GET", "/health", &[], &[]);
                        c.try_read_response()
                    },
                ),
            };
            match probe {
                Ok(r) if r.status == 200 => return,
                Ok(r) => last = format!("status {} body {:?}", r.status, r.text()),
                Err(e) => last = e.to_string(),
            }
            if Instant::now() >= deadline {
                panic!(
                    "corvid not healthy on {} after {:?} (last: {last})\n--- config ---\n{}\n--- stderr ---\n{}",
                    self.addr,
                    STARTUP_TIMEOUT,
                    self.config(),
                    self.stderr()
                );
            }
            // Polling backoff, not synchronisation: there is no event to
            // wait on for "another process is listening".
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_millis(200));
        }
    }

    /// For a `spawn`ed corvid: waits until it either answers `GET /health` with 200 (`None`)
    /// or exits (`Some(status)`), whichever comes first; fails the test after
    /// [`STARTUP_TIMEOUT`] with neither.
    pub fn wait_healthy_or_exit(&mut self) -> Option<ExitStatus> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let mut backoff = Duration::from_millis(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            let probe = http::try_request(self.addr, "GET", "/health", &[], Duration::from_secs(1));
            if matches!(probe, Ok(ref r) if r.status == 200) {
                return None;
            }
            assert!(
                Instant::now() < deadline,
                "corvid neither healthy nor exited after {STARTUP_TIMEOUT:?}\n--- stderr ---\n{}",
                self.stderr()
            );
            // Polling backoff, as in `wait_healthy`.
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_millis(200));
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    pub fn config(&self) -> String {
        std::fs::read_to_string(&self.config_path).unwrap_or_default()
    }

    /// Everything corvid wrote to stderr so far (logs).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    /// Scratch directory (corvid's working directory), removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn proc_status_kib(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Peak resident set size (VmHWM) in KiB; panics if the process is gone.
    pub fn peak_rss_kib(&self) -> u64 {
        self.proc_status_kib("VmHWM:")
            .expect("VmHWM unavailable (process exited?)")
    }

    /// Current resident set size (VmRSS) in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.proc_status_kib("VmRSS:")
            .expect("VmRSS unavailable (process exited?)")
    }

    /// Open file descriptors of the process (from /proc).
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Number of threads (from /proc), e.g. to check workers = N.
    pub fn threads(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("Threads field")
    }

    /// Sends a signal (e.g. `libc::SIGTERM`).
    pub fn signal(&self, sig: libc::c_int) {
        let pid = libc::pid_t::try_from(self.pid()).expect("pid fits pid_t");
        // SAFETY: plain syscall on our own child's pid; the child is not
        // reaped until we wait for it, so the pid cannot have been reused.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, {sig}): {}",
            std::io::Error::last_os_error()
        );
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let mut backoff = Duration::from_millis(5);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            // std has no wait-with-timeout on Child; poll with backoff.
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then wait up to `timeout` for a graceful exit.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        self.signal(libc::SIGTERM);
        self.wait_exit(timeout)
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Corvid {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() && std::env::var_os("CORVID_IT_SHOW_STDERR").is_some() {
            eprintln!("--- corvid stderr ---\n{}", self.stderr());
        }
    }
}

/// What `corvid check` did with a config.
pub struct CheckOutcome {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Writes `config_toml` to a temp file and runs `corvid check --config FILE` to completion.
pub fn check(config_toml: &str) -> CheckOutcome {
    let dir = tempfile::Builder::new()
        .prefix("corvid-check-")
        .tempdir()
        .expect("corvid temp dir");
    let config_path = dir.path().join("corvid.toml");
    std::fs::write(&config_path, config_toml).expect("write config");
    let out = Command::new(corvid_bin())
        .arg("check")
        .arg("--config")
        .arg(&config_path)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {} check: {e}", corvid_bin()));
    CheckOutcome {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Makes `cmd`'s child run with the open-file limit soft = hard = `n`.
pub fn limit_open_files(cmd: &mut Command, n: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: runs in the forked child before exec; setrlimit is async-signal-safe and touches
    // no memory of the parent's other threads.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Extracts `[server] listen` from the config.
fn listen_addr(config_toml: &str) -> SocketAddr {
    let v: toml::Value = config_toml
        .parse()
        .unwrap_or_else(|e| panic!("test config is not valid TOML: {e}\n{config_toml}"));
    let listen = v
        .get("server")
        .and_then(|s| s.get("listen"))
        .and_then(|l| l.as_str())
        .unwrap_or_else(|| panic!("test config lacks [server] listen:\n{config_toml}"));
    let addr: SocketAddr = listen
        .parse()
        .unwrap_or_else(|e| panic!("listen {listen:?}: {e}"));
    assert!(
        addr.ip().is_loopback(),
        "tests must listen on loopback, got {addr}"
    );
    assert_ne!(
        addr.port(),
        0,
        "pick a port with free_port(); corvid's port must be known"
    );
    addr
}

//! The access log: one JSON line per request (`[log] access`), written off the workers.
//!
//! A worker formats each line into its own buffer ([`WorkerLog`], no lock, no allocation once
//! the buffer has grown) and hands the buffer to one writer thread when it passes
//! [`FLUSH_AT`] bytes, and every [`FLUSH_EVERY`] otherwise; the writer does the (blocking)
//! writes and gives the buffers back for reuse. A worker never writes to the sink itself and
//! never waits for the writer: when [`MAX_PENDING`] buffers are already queued the newest one
//! is dropped and its lines counted (`corvid_access_log_dropped_total`), so a slow disk loses
//! log lines, not requests.
//!
//! The sink is stdout, stderr or a file (appended to, created if missing). On SIGUSR1 the file
//! is reopened by name — the logrotate convention (`postrotate kill -USR1`).
//!
//! Sampling (`[log] sample`) applies to successful answers (status < 400); errors are always
//! logged. The line format ([`format_line`], pure) has these fields, in this order:
//! `time` (RFC 3339, UTC, ms), `id`, `client`, `method`, `bucket`, `path` (the request path as
//! received, percent-encoded, without the query — so a token passed as a query parameter is
//! never logged), `status`, `bytes` (every byte written to the client for this answer, head included, counted
//! by the stream: `http::counted`), `ms` (duration),
//! `cache` and `layer` (`X-Cache`, `X-Cache-Layer`; null when not applicable), `upstream` and
//! `upstream_ms` (the origin's status and time when it was asked for this request, else null),
//! on answers of sliced objects only `slices_cached` and `slices_fetched` (how many slices the
//! answer took from the cache and from fills: `object::sliced`), on answers a fleet member gave
//! only `peer` (that member's `host:port`: `crate::fleet`), `ua` (User-Agent, at most [`MAX_UA`] bytes),
//! and on the lines of a warm job's fetches only `warm` (the job's id: `crate::warm`; such a
//! line is no client's request: `client` is the address that started the job, `ua` null).
//! Strings are JSON-escaped (control characters
//! and non-UTF-8 bytes as `\u00XX`).

use std::cell::{Cell, RefCell};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::config::LogSink;

/// A worker hands its buffer over once it holds this much.
pub const FLUSH_AT: usize = 64 * 1024;
/// ... and at least this often when it holds anything (a worker's periodic task).
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// Buffers queued for the writer at most; beyond, lines are dropped and counted.
pub const MAX_PENDING: usize = 64;
/// User-Agent bytes logged at most.
pub const MAX_UA: usize = 256;

/// What the writer thread is sent.
enum Msg {
    Lines(Vec<u8>, u64),
    Stop,
}

/// The process's access log: the writer thread and what the workers share with it.
pub struct AccessLog {
    tx: Sender<Msg>,
    /// Emptied buffers coming back from the writer.
    free: Receiver<Vec<u8>>,
    reopen: Arc<AtomicBool>,
    sample_ppm: u32,
    /// Lines dropped because the writer fell behind (or a write failed).
    pub dropped: Arc<AtomicU64>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl AccessLog {
    /// Opens the sink (a file must be openable now: the error is the config's) and starts the
    /// writer thread.
    pub fn start(sink: &LogSink, sample_ppm: u32) -> Result<Arc<AccessLog>, String> {
        let mut out = Sink::open(sink).map_err(|e| format!("log.access: {e}"))?;
        let (tx, rx) = crossbeam_channel::bounded::<Msg>(MAX_PENDING);
        let (free_tx, free) = crossbeam_channel::bounded::<Vec<u8>>(MAX_PENDING);
        let reopen = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(AtomicU64::new(0));
        let (flag, lost) = (Arc::clone(&reopen), Arc::clone(&dropped));
        let writer = std::thread::Builder::new()
            .name("corvid-access-log".into())
            .spawn(move || out.run(&rx, &free_tx, &flag, &lost))
            .map_err(|e| format!("cannot start the access log writer: {e}"))?;
        Ok(Arc::new(AccessLog {
            tx,
            free,
            reopen,
            sample_ppm,
            dropped,
            writer: Mutex::new(Some(writer)),
        }))
    }

    /// Reopens a file sink before its next write (SIGUSR1).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Relaxed);
    }

    /// Writes everything queued and stops the writer (after the workers flushed, at exit).
    #[expect(
        clippy::disallowed_methods,
        reason = "joins the writer thread from the thread stopping the server, never a worker"
    )]
    pub fn finish(&self) {
        let _ = self.tx.send(Msg::Stop);
        let handle = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

/// The writer thread's side.
enum Sink {
    Stdout,
    Stderr,
    File { path: PathBuf, file: File },
}

impl Sink {
    #[expect(
        clippy::disallowed_methods,
        reason = "opened at start-up and by the writer thread, never on a worker"
    )]
    fn open(sink: &LogSink) -> std::io::Result<Sink> {
        Ok(match sink {
            LogSink::Stdout => Sink::Stdout,
            LogSink::Stderr => Sink::Stderr,
            LogSink::File(path) => {
                let file = OpenOptions::new().create(true).append(true).open(path)?;
                Sink::File {
                    path: path.clone(),
                    file,
                }
            }
        })
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Stdout => std::io::stdout().lock().write_all(bytes),
            Sink::Stderr => std::io::stderr().lock().write_all(bytes),
            Sink::File { file, .. } => file.write_all(bytes),
        }
    }

    #[expect(
        clippy::disallowed_methods,
        reason = "the writer thread blocks on its queue; it is not a worker"
    )]
    fn run(
        &mut self,
        rx: &Receiver<Msg>,
        free: &Sender<Vec<u8>>,
        reopen: &AtomicBool,
        dropped: &AtomicU64,
    ) {
        loop {
            let msg = rx.recv_timeout(Duration::from_secs(1));
            if reopen.swap(false, Ordering::Relaxed) {
                self.reopen();
            }
            match msg {
                Ok(Msg::Lines(mut buf, lines)) => {
                    if let Err(e) = self.write(&buf) {
                        dropped.fetch_add(lines, Ordering::Relaxed);
                        log::warn!("access log: write failed: {e}");
                    }
                    buf.clear();
                    let _ = free.try_send(buf);
                }
                Ok(Msg::Stop) => return,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn reopen(&mut self) {
        if let Sink::File { path, .. } = self {
            match Sink::open(&LogSink::File(path.clone())) {
                Ok(new) => {
                    log::info!("access log reopened: {}", path.display());
                    *self = new;
                }
                Err(e) => log::warn!("access log: cannot reopen {}: {e}", path.display()),
            }
        }
    }
}

/// One finished request, as the access log records it.
pub struct Line<'a> {
    pub time_ms: u64,
    pub id: &'a [u8],
    pub client: SocketAddr,
    pub method: &'a str,
    pub bucket: Option<&'a str>,
    /// The request target's path as received (no query).
    pub path: &'a [u8],
    pub status: u16,
    pub bytes: u64,
    pub took: Duration,
    pub cache: Option<&'static str>,
    pub layer: Option<&'static str>,
    /// The origin's status and time, when it was asked for this request.
    pub upstream: Option<(u16, Duration)>,
    /// For an answer of a sliced object: slices taken from the cache, and from fills.
    pub slices: Option<(u32, u32)>,
    /// The fleet member that answered instead of the origin (`crate::fleet`).
    pub peer: Option<&'a str>,
    pub user_agent: Option<&'a [u8]>,
    /// A warm job's fetch (`crate::warm`), not a client's request: the job's id.
    pub warm: Option<&'a str>,
}

/// One worker's side of the access log: its buffer and its sampling state.
pub struct WorkerLog {
    log: Arc<AccessLog>,
    buf: RefCell<Vec<u8>>,
    lines: Cell<u64>,
    rng: Cell<u64>,
}

impl WorkerLog {
    pub fn new(log: Arc<AccessLog>, seed: u64) -> WorkerLog {
        WorkerLog {
            log,
            buf: RefCell::new(Vec::new()),
            lines: Cell::new(0),
            // xorshift needs a nonzero state.
            rng: Cell::new(seed | 1),
        }
    }

    /// Records `line` (unless sampled out) in this worker's buffer.
    pub fn record(&self, line: &Line<'_>) {
        if line.status < 400 && !self.sampled() {
            return;
        }
        let full = {
            let mut buf = self.buf.borrow_mut();
            format_line(&mut buf, line);
            buf.len() >= FLUSH_AT
        };
        self.lines.set(self.lines.get() + 1);
        if full {
            self.flush();
        }
    }

    /// Hands what the buffer holds to the writer (without waiting for it).
    pub fn flush(&self) {
        let lines = self.lines.replace(0);
        if lines == 0 {
            return;
        }
        let spare = self.log.free.try_recv().unwrap_or_default();
        let full = std::mem::replace(&mut *self.buf.borrow_mut(), spare);
        match self.log.tx.try_send(Msg::Lines(full, lines)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.log.dropped.fetch_add(lines, Ordering::Relaxed);
            }
        }
    }

    fn sampled(&self) -> bool {
        let ppm = self.log.sample_ppm;
        if ppm >= 1_000_000 {
            return true;
        }
        // xorshift64: a few instructions, per worker, no lock.
        let mut x = self.rng.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.set(x);
        (x % 1_000_000) < u64::from(ppm)
    }
}

/// Appends `line` as one JSON object and a newline (pure; see the module docs for the fields).
pub fn format_line(out: &mut Vec<u8>, line: &Line<'_>) {
    out.extend_from_slice(b"{\"time\":\"");
    rfc3339_ms(out, line.time_ms);
    out.extend_from_slice(b"\",\"id\":");
    json_str(out, line.id);
    let _ = write!(out, ",\"client\":\"{}\",\"method\":", line.client);
    json_str(out, line.method.as_bytes());
    out.extend_from_slice(b",\"bucket\":");
    opt_str(out, line.bucket.map(str::as_bytes));
    out.extend_from_slice(b",\"path\":");
    json_str(out, line.path);
    let _ = write!(
        out,
        ",\"status\":{},\"bytes\":{},\"ms\":{:.3},\"cache\":",
        line.status,
        line.bytes,
        line.took.as_secs_f64() * 1000.0
    );
    opt_str(out, line.cache.map(str::as_bytes));
    out.extend_from_slice(b",\"layer\":");
    opt_str(out, line.layer.map(str::as_bytes));
    match line.upstream {
        Some((status, took)) => {
            let ms = took.as_secs_f64() * 1000.0;
            let _ = write!(out, ",\"upstream\":{status},\"upstream_ms\":{ms:.3}");
        }
        None => out.extend_from_slice(b",\"upstream\":null,\"upstream_ms\":null"),
    }
    if let Some((cached, fetched)) = line.slices {
        let _ = write!(
            out,
            ",\"slices_cached\":{cached},\"slices_fetched\":{fetched}"
        );
    }
    if let Some(peer) = line.peer {
        out.extend_from_slice(b",\"peer\":");
        opt_str(out, Some(peer.as_bytes()));
    }
    out.extend_from_slice(b",\"ua\":");
    opt_str(out, line.user_agent.map(|u| &u[..u.len().min(MAX_UA)]));
    if let Some(job) = line.warm {
        out.extend_from_slice(b",\"warm\":");
        json_str(out, job.as_bytes());
    }
    out.extend_from_slice(b"}\n");
}

fn opt_str(out: &mut Vec<u8>, s: Option<&[u8]>) {
    match s {
        Some(s) => json_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// `s` as a JSON string: `"` and `\` escaped, control characters, DEL and bytes that are not
/// part of valid UTF-8 as `\u00XX` (so a hostile path or User-Agent cannot break the line).
fn json_str(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    for chunk in s.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.extend_from_slice(b"\\\""),
                '\\' => out.extend_from_slice(b"\\\\"),
                c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => {
                    let mut b = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
                }
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\u00{b:02x}");
        }
    }
    out.push(b'"');
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for unix milliseconds (civil-from-days, H. Hinnant).
fn rfc3339_ms(out: &mut Vec<u8>, ms: u64) {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let sod = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60,
        ms % 1000
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(path: &'a [u8], ua: Option<&'a [u8]>) -> Line<'a> {
        Line {
            time_ms: 1_700_000_000_123,
            id: b"abc-1",
            client: "127.0.0.1:5000".parse().unwrap(),
            method: "GET",
            bucket: Some("assets"),
            path,
            status: 200,
            bytes: 1024,
            took: Duration::from_micros(1500),
            cache: Some("HIT"),
            layer: Some("memory"),
            upstream: None,
            slices: None,
            peer: None,
            user_agent: ua,
            warm: None,
        }
    }

    #[test]
    fn a_line_is_one_json_object_with_every_field() {
        let mut out = Vec::new();
        format_line(&mut out, &line(b"/assets/a%20b.png", Some(b"curl/8")));
        assert_eq!(out.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["time"], "2023-11-14T22:13:20.123Z");
        assert_eq!(v["id"], "abc-1");
        assert_eq!(v["client"], "127.0.0.1:5000");
        assert_eq!(v["bucket"], "assets");
        assert_eq!(v["path"], "/assets/a%20b.png");
        assert_eq!(v["status"], 200);
        assert_eq!(v["bytes"], 1024);
        assert_eq!(v["ms"], 1.5);
        assert_eq!(v["cache"], "HIT");
        assert_eq!(v["layer"], "memory");
        assert!(v["upstream"].is_null() && v["upstream_ms"].is_null());
        assert_eq!(v["ua"], "curl/8");
    }

    #[test]
    fn hostile_bytes_cannot_break_the_line() {
        let mut out = Vec::new();
        let path = b"/a\"b\\c\n\r\x00\x7f\xff\xfe";
        let ua = [b'x'; 1000];
        format_line(&mut out, &line(path, Some(&ua)));
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v["path"].as_str().unwrap(),
            "/a\"b\\c\n\r\u{0}\u{7f}\u{ff}\u{fe}"
        );
        assert_eq!(v["ua"].as_str().unwrap().len(), MAX_UA);
    }

    #[test]
    fn dates_are_rfc3339() {
        let cases = [
            (0, "1970-01-01T00:00:00.000Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (1_767_225_599_999, "2025-12-31T23:59:59.999Z"),
        ];
        for (ms, want) in cases {
            let mut out = Vec::new();
            rfc3339_ms(&mut out, ms);
            assert_eq!(String::from_utf8(out).unwrap(), want, "{ms}");
        }
    }
}

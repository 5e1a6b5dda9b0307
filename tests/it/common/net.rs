//! Misbehaving upstreams for gateway-error tests.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Accepts TCP connections and never answers, holding them open until
/// dropped: an upstream that hangs after connect (for 504 tests).
pub struct StallServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicU64>,
    held: Arc<Mutex<Vec<TcpStream>>>,
    thread: Option<JoinHandle<()>>,
}

impl StallServer {
    pub fn start() -> StallServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind stall server");
        let addr = listener.local_addr().expect("local_addr");
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let held = Arc::new(Mutex::new(Vec::new()));
        let (s, a, h) = (stop.clone(), accepted.clone(), held.clone());
        let thread = std::thread::Builder::new()
            .name(format!("stall-{}", addr.port()))
            .spawn(move || {
                for conn in listener.incoming() {
                    if s.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(c) = conn {
                        a.fetch_add(1, Ordering::SeqCst);
                        h.lock().unwrap_or_else(|e| e.into_inner()).push(c);
                    }
                }
            })
            .expect("spawn stall thread");
        StallServer {
            addr,
            stop,
            accepted,
            held,
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Waits (bounded) until at least `n` connections were accepted.
    pub fn wait_accepted(&self, n: u64, timeout: Duration) -> bool {
        wait_until(timeout, || self.accepted() >= n)
    }

    /// Closes every held connection (the server stays up).
    pub fn drop_connections(&self) {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

impl Drop for StallServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept() so the thread sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.drop_connections();
    }
}

/// A loopback address that was just bound and released, so connecting to it
/// is refused (for 502 tests). Another process could in theory grab the
/// port in between; on a test machine that is vanishingly rare.
pub struct RefuseAddr {
    addr: SocketAddr,
}

impl RefuseAddr {
    pub fn new() -> RefuseAddr {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("local_addr");
        drop(l);
        RefuseAddr { addr }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Default for RefuseAddr {
    fn default() -> Self {
        Self::new()
    }
}

/// Polls `cond` with a short backoff until it holds or `timeout` passes.
/// For conditions with no event to block on (another process's state).
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let mut backoff = Duration::from_millis(1);
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_millis(50));
    }
}

/// True if a TCP connect to `addr` is refused right now.
pub fn is_refused(addr: SocketAddr) -> bool {
    matches!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

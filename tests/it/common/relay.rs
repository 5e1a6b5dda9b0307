//! A TCP relay in front of an upstream that can close idle connections: what an nginx-fronted
//! store with `keepalive_timeout`, or a Node/Go server with its own keep-alive timeout, does to
//! corvid's pooled connections. It can also pace what the upstream sends ([`IdleRelay::paced`]):
//! an origin whose answers take a known time to arrive.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often a copy thread wakes to check the idle deadline and the stop flag.
const TICK: Duration = Duration::from_millis(10);

/// Accepts on 127.0.0.1:0 and relays each connection to `upstream`, copying both ways. With
/// `idle = Some(d)` it closes BOTH sides of a relayed connection once no byte moved in either
/// direction for `d`; with `None` connections stay open until a side closes them.
pub struct IdleRelay {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accepted: Arc<AtomicU64>,
    carried: Arc<AtomicU64>,
    open: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

/// Decrements the open-connection counter when the last copy thread of a connection is done.
struct OpenGuard(Arc<AtomicU64>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// State shared by the two copy threads of one relayed connection.
struct Link {
    client: TcpStream,
    upstream: TcpStream,
    started: Instant,
    /// Milliseconds since `started` at which a byte last moved.
    last_activity_ms: AtomicU64,
    idle: Option<Duration>,
    /// Upstream → client bytes per second, when paced.
    pace: Option<u64>,
    stop: Arc<AtomicBool>,
    /// The relay's count of connections that carried a byte from the client; `counted` says
    /// whether this one was added to it.
    carried: Arc<AtomicU64>,
    counted: AtomicBool,
    _open: OpenGuard,
}

impl Link {
    fn touch(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.last_activity_ms.store(now, Ordering::SeqCst);
    }

    fn idle_expired(&self) -> bool {
        let Some(idle) = self.idle else { return false };
        let last = Duration::from_millis(self.last_activity_ms.load(Ordering::SeqCst));
        self.started.elapsed().saturating_sub(last) >= idle
    }

    fn close(&self) {
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.upstream.shutdown(Shutdown::Both);
    }

    /// Copies `from` → `to` until EOF, an error, the idle deadline or stop; then closes both.
    fn pump(&self, mut from: &TcpStream, mut to: &TcpStream, from_client: bool) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    self.touch();
                    if from_client && !self.counted.swap(true, Ordering::SeqCst) {
                        self.carried.fetch_add(1, Ordering::SeqCst);
                    }
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    if let Some(rate) = self.pace.filter(|_| !from_client) {
                        // The stimulus (a slow origin), not synchronisation.
                        std::thread::sleep(Duration::from_nanos(
                            n as u64 * 1_000_000_000 / rate.max(1),
                        ));
                    }
                    self.touch();
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if self.stop.load(Ordering::SeqCst) || self.idle_expired() {
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        self.close();
    }
}

impl IdleRelay {
    pub fn start(upstream: SocketAddr, idle: Option<Duration>) -> IdleRelay {
        IdleRelay::start_with(upstream, idle, None)
    }

    /// A relay that never closes idle connections and passes what `upstream` sends at about
    /// `bytes_per_sec` (in pieces of up to 64 KiB).
    pub fn paced(upstream: SocketAddr, bytes_per_sec: u64) -> IdleRelay {
        IdleRelay::start_with(upstream, None, Some(bytes_per_sec))
    }

    fn start_with(upstream: SocketAddr, idle: Option<Duration>, pace: Option<u64>) -> IdleRelay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind relay");
        let addr = listener.local_addr().expect("local_addr");
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let carried = Arc::new(AtomicU64::new(0));
        let open = Arc::new(AtomicU64::new(0));
        let (s, a, c, o) = (
            stop.clone(),
            accepted.clone(),
            carried.clone(),
            open.clone(),
        );
        let thread = std::thread::Builder::new()
            .name(format!("relay-{}", addr.port()))
            .spawn(move || {
                for conn in listener.incoming() {
                    if s.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = conn else { continue };
                    let Ok(up) = TcpStream::connect(upstream) else {
                        continue;
                    };
                    a.fetch_add(1, Ordering::SeqCst);
                    o.fetch_add(1, Ordering::SeqCst);
                    let link = Link {
                        client,
                        upstream: up,
                        started: Instant::now(),
                        last_activity_ms: AtomicU64::new(0),
                        idle,
                        pace,
                        stop: s.clone(),
                        carried: c.clone(),
                        counted: AtomicBool::new(false),
                        _open: OpenGuard(o.clone()),
                    };
                    spawn_link(link);
                }
            })
            .expect("spawn relay thread");
        IdleRelay {
            addr,
            stop,
            accepted,
            carried,
            open,
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections accepted (and relayed) so far, including corvid's reachability checks,
    /// which connect and close without sending anything.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Relayed connections on which the client sent at least one byte: the origin
    /// connections corvid opened for requests.
    pub fn carried(&self) -> u64 {
        self.carried.load(Ordering::SeqCst)
    }

    /// Relayed connections not closed yet.
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::SeqCst)
    }
}

/// Starts the two copy threads of `link`.
fn spawn_link(link: Link) {
    for s in [&link.client, &link.upstream] {
        let _ = s.set_nodelay(true);
        s.set_read_timeout(Some(TICK)).expect("set_read_timeout");
    }
    let link = Arc::new(link);
    let back = Arc::clone(&link);
    std::thread::spawn(move || link.pump(&link.client, &link.upstream, true));
    std::thread::spawn(move || back.pump(&back.upstream, &back.client, false));
}

impl Drop for IdleRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept() so the thread sees the flag; copy threads see it within
        // a tick.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

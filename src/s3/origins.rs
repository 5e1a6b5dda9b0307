//! Origin addresses and reachability, maintained off the workers.
//!
//! Workers must never block on DNS (ARCHITECTURE rule 4), so endpoint host names are resolved
//! here: once at start, then by a monitor thread on a timer. The same thread checks that each
//! origin accepts a TCP connection, which is what `/ready` reports. Workers only read the
//! latest snapshot (an `Arc<[SocketAddr]>` swapped under a lock held for a pointer copy).

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::config::Endpoint;

/// How long the monitor waits for a TCP connect when checking an origin.
const CHECK_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// What is known about one bucket's origin.
pub struct OriginState {
    host: String,
    port: u16,
    addrs: RwLock<Arc<[SocketAddr]>>,
    reachable: AtomicBool,
    /// Unix time (ms) of the last completed check; 0 = never.
    checked_at_ms: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl OriginState {
    fn new(endpoint: &Endpoint) -> Self {
        OriginState {
            host: endpoint.host.clone(),
            port: endpoint.port,
            addrs: RwLock::new(Arc::from(Vec::new())),
            reachable: AtomicBool::new(false),
            checked_at_ms: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    /// The resolved addresses (possibly empty when resolution failed).
    pub fn addrs(&self) -> Arc<[SocketAddr]> {
        self.addrs.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    pub fn checked_at_ms(&self) -> u64 {
        self.checked_at_ms.load(Ordering::Relaxed)
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A fleet member's addresses (`crate::fleet`): resolved by [`OriginState::resolve`] on
    /// the fleet's monitor thread; reachability is the fleet's business, not this state's.
    pub fn peer(host: &str, port: u16) -> Arc<OriginState> {
        let state = OriginState {
            host: host.to_owned(),
            port,
            addrs: RwLock::new(Arc::from(Vec::new())),
            reachable: AtomicBool::new(true),
            checked_at_ms: AtomicU64::new(0),
            last_error: Mutex::new(None),
        };
        // An IP address needs no resolver: usable before the first resolution.
        if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            *state.addrs.write().unwrap_or_else(|p| p.into_inner()) =
                Arc::from(vec![SocketAddr::new(ip, port)]);
        }
        Arc::new(state)
    }

    /// Resolves the host (no connect check); a failure keeps the addresses known. Blocking:
    /// a monitor thread or start-up only.
    #[expect(clippy::disallowed_methods, reason = "monitor thread or start-up")]
    pub fn resolve(&self) {
        match (self.host.as_str(), self.port).to_socket_addrs() {
            Ok(it) => {
                let list: Vec<SocketAddr> = it.collect();
                if !list.is_empty() {
                    *self.addrs.write().unwrap_or_else(|p| p.into_inner()) = Arc::from(list);
                }
            }
            Err(e) => log::warn!("resolve {}: {e}", self.host),
        }
    }

    /// Resolves the host and tries one TCP connect. Blocking: monitor thread or start-up only.
    #[expect(clippy::disallowed_methods, reason = "monitor thread or start-up")]
    pub fn refresh(&self) {
        let result = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map(|it| it.collect::<Vec<_>>());
        let error = match result {
            Ok(list) if !list.is_empty() => {
                *self.addrs.write().unwrap_or_else(|p| p.into_inner()) = Arc::from(list.clone());
                match list
                    .iter()
                    .find_map(|a| TcpStream::connect_timeout(a, CHECK_CONNECT_TIMEOUT).err())
                {
                    // One refusal among several addresses is fine as long as one accepts.
                    Some(e) if list.len() == 1 => Some(format!("connect: {e}")),
                    _ => None,
                }
            }
            Ok(_) => Some("host resolved to no address".to_string()),
            Err(e) => Some(format!("resolve {}: {e}", self.host)),
        };
        self.reachable.store(error.is_none(), Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = error;
        let now = crate::clock::system_now_ms().max(1);
        self.checked_at_ms.store(now, Ordering::Relaxed);
    }
}

/// Origin state of every bucket, indexed like `Config::buckets`.
pub struct Origins {
    states: Vec<Arc<OriginState>>,
}

impl Origins {
    pub fn new<'a>(endpoints: impl IntoIterator<Item = &'a Endpoint>) -> Arc<Self> {
        Arc::new(Origins {
            states: endpoints
                .into_iter()
                .map(|e| Arc::new(OriginState::new(e)))
                .collect(),
        })
    }

    pub fn get(&self, bucket: usize) -> &Arc<OriginState> {
        &self.states[bucket]
    }

    pub fn len(&self) -> usize {
        self.states.len()
    }

    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// Refreshes every origin now (blocking).
    pub fn refresh_all(&self) {
        for s in &self.states {
            s.refresh();
        }
    }

    /// Starts the monitor thread: refresh every `interval` until `stop` is set.
    #[expect(clippy::disallowed_methods, reason = "sleeps on the monitor thread")]
    pub fn spawn_monitor(self: &Arc<Self>, interval: Duration, stop: Arc<AtomicBool>) {
        let me = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("corvid-origins".into())
            .spawn(move || {
                let mut next = Instant::now() + interval;
                while !stop.load(Ordering::Relaxed) {
                    // Sleep in short steps so shutdown is not held up by the interval.
                    std::thread::sleep(Duration::from_millis(200));
                    if Instant::now() >= next {
                        me.refresh_all();
                        next = Instant::now() + interval;
                    }
                }
            });
        if let Err(e) = spawned {
            log::error!("cannot start the origin monitor thread: {e}");
        }
    }
}

//! Resolving the Redis host without blocking a worker.
//!
//! `cache.redis.url` may name a host (`redis://cache.internal:6379`). The system resolver
//! (`getaddrinfo`) blocks, for seconds when DNS is slow or unreachable; on a worker thread that
//! would stall every connection of the core (ARCHITECTURE rule 4). So:
//!
//! - an IP literal is parsed in place: no thread, no lookup, no wait (the common case,
//!   `redis://127.0.0.1:6379`);
//! - a host name is looked up by one resolver thread per process, started on first use; the
//!   answer comes back through a flume channel whose async receive wakes the caller's monoio
//!   task from that thread.
//!
//! The caller bounds its wait with its connect timeout, and a dropped wait just drops the
//! receiver. Lookups queue in a bounded channel and the thread serves them one at a time,
//! skipping those whose caller has already given up: a hung resolver delays later lookups
//! instead of multiplying threads, and once `QUEUE` (64) lookups wait, further ones fail at once.
//!
//! Nothing is cached: a lookup happens only when a connection is (re)made — at start, and at
//! most once per backoff step while Redis is down — so following a DNS change (a failover)
//! is worth more than the lookup it would save.

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::OnceLock;

/// Lookups waiting for the resolver thread at most.
const QUEUE: usize = 64;

type Answer = io::Result<Vec<SocketAddr>>;

struct Lookup {
    host: String,
    port: u16,
    reply: flume::Sender<Answer>,
}

/// The address of an IP-literal host (IPv6 without brackets, as [`crate::config::RedisTarget`] stores it).
pub fn literal(host: &str, port: u16) -> Option<SocketAddr> {
    host.parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, port))
}

/// The addresses of `host:port`, in the resolver's order. Never blocks the calling thread.
pub async fn resolve(host: &str, port: u16) -> Answer {
    if let Some(addr) = literal(host, port) {
        return Ok(vec![addr]);
    }
    let queue = resolver().map_err(|e| io::Error::other(e.clone()))?;
    let (reply, answer) = flume::bounded(1);
    let lookup = Lookup {
        host: host.to_owned(),
        port,
        reply,
    };
    queue.try_send(lookup).map_err(|_| {
        io::Error::new(
            io::ErrorKind::WouldBlock,
            "too many host name lookups waiting for the resolver",
        )
    })?;
    #[cfg(test)]
    tests::DISPATCHED.with(|d| d.set(d.get() + 1));
    answer
        .recv_async()
        .await
        .map_err(|_| io::Error::other("the resolver thread is gone"))?
}

/// The resolver thread's queue, starting the thread on first use.
fn resolver() -> Result<&'static flume::Sender<Lookup>, &'static String> {
    static QUEUE_TX: OnceLock<Result<flume::Sender<Lookup>, String>> = OnceLock::new();
    QUEUE_TX
        .get_or_init(|| {
            let (tx, rx) = flume::bounded::<Lookup>(QUEUE);
            std::thread::Builder::new()
                .name("corvid-resolver".into())
                .spawn(move || {
                    for l in rx {
                        if l.reply.is_disconnected() {
                            continue;
                        }
                        #[expect(
                            clippy::disallowed_methods,
                            reason = "this is the resolver thread: workers await its answer"
                        )]
                        let answer = (l.host.as_str(), l.port)
                            .to_socket_addrs()
                            .map(|a| a.collect::<Vec<_>>());
                        let _ = l.reply.send(answer);
                    }
                })
                .map(|_| tx)
                .map_err(|e| format!("cannot start the resolver thread: {e}"))
        })
        .as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    thread_local! {
        /// Host names this thread handed to the resolver thread.
        pub static DISPATCHED: Cell<u32> = const { Cell::new(0) };
    }

    #[test]
    fn ip_literals_resolve_in_place_and_names_on_the_resolver_thread() {
        let rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().build();
        rt.unwrap().block_on(async {
            let v4 = resolve("127.0.0.1", 6379).await.unwrap();
            assert_eq!(v4, vec!["127.0.0.1:6379".parse().unwrap()]);
            let v6 = resolve("::1", 7000).await.unwrap();
            assert_eq!(v6, vec!["[::1]:7000".parse().unwrap()]);
            assert_eq!(DISPATCHED.with(Cell::get), 0, "an IP literal was looked up");

            let local = resolve("localhost", 6379).await.unwrap();
            assert_eq!(DISPATCHED.with(Cell::get), 1);
            assert!(!local.is_empty());
            assert!(local
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 6379));
        });
    }
}

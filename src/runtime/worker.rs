//! One worker: its per-thread context and its accept loop.
//!
//! A [`Worker`] is built inside its own thread and shared by that thread's tasks through an
//! `Rc` (ARCHITECTURE rule 1): upstream pools, signers with their signing-key caches, the Date
//! header cache and the request-id counter never cross threads. What is shared across workers
//! lives in [`super::Shared`] behind an `Arc`.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use monoio::net::{ListenerOpts, TcpListener};
use monoio::time::Instant;
use monoio_rustls::{TlsAcceptor, TlsConnector};

use super::signal::LocalSignal;
use super::Shared;
use crate::cache::purge_broadcast;
use crate::cache::redis::{subscribe, RedisClient, RedisOptions, StopSignal};
use crate::http::response::DateCache;
use crate::http::vectored::HeadBody;
use crate::metrics::WorkerMetrics;
use crate::net::MaybeTls;
use crate::s3::client::{Pool, Timeouts};
use crate::s3::sigv4::{Credentials, Signer};

/// Per-bucket state of one worker.
pub struct WorkerBucket {
    pub signer: Signer,
    pub pool: Rc<Pool>,
    pub timeouts: Timeouts,
}

/// The context every task of one worker shares.
pub struct Worker {
    pub id: usize,
    pub shared: Arc<Shared>,
    pub buckets: Vec<WorkerBucket>,
    /// Fired when shutdown begins: stop accepting, close idle connections.
    pub shutdown: LocalSignal,
    pub connections: Cell<usize>,
    pub date: RefCell<DateCache>,
    next_request: Cell<u64>,
    /// Reusable head+body vectored-write buffers (the hit path allocates none once warm).
    head_bodies: RefCell<Vec<HeadBody>>,
    /// Byte buffers lent per request (the decoded object key, the cache key) and given back
    /// after the answer, for the same reason.
    spare_bufs: RefCell<Vec<Vec<u8>>>,
    /// This worker's Redis client, when the Redis tier is enabled.
    pub redis: Option<RedisClient>,
    /// The Redis key prefix (the client adds it to GET/SET; raw commands need it spelled out).
    pub redis_prefix: String,
    /// Background Redis writes in flight (write-behind), bounded by [`MAX_REDIS_BEHIND`].
    pub redis_behind: Cell<usize>,
}

/// Largest buffer [`Worker::recycle_buf`] keeps. An S3 key has at most 1024 bytes, so object
/// keys and cache keys (bucket name, key, forwarded parameters) nearly always fit; a longer one
/// costs its request an allocation instead of staying in the list for good.
pub const MAX_SPARE_BUF: usize = 4096;
/// Most buffers one worker's free list keeps: two per object request in flight, for up to 512
/// concurrent requests (at most 4 MiB, typically a few hundred KiB, since keys are short).
const MAX_SPARE_BUFS: usize = 1024;

/// A byte buffer lent by [`Worker::scratch`] for one request; derefs to the `Vec` and returns
/// it to the worker's free list when dropped.
pub struct Scratch<'w> {
    w: &'w Worker,
    buf: Vec<u8>,
}

impl std::ops::Deref for Scratch<'_> {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.buf
    }
}

impl std::ops::DerefMut for Scratch<'_> {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }
}

impl Drop for Scratch<'_> {
    fn drop(&mut self) {
        self.w.recycle_buf(std::mem::take(&mut self.buf));
    }
}

/// Write-behind Redis writes one worker keeps in flight at most; more are dropped and counted.
pub const MAX_REDIS_BEHIND: usize = 256;

/// The Redis client options for `cfg` (shared by start-up validation and the workers).
pub fn redis_options(cfg: &crate::config::RedisConfig) -> RedisOptions {
    RedisOptions {
        timeout: cfg.timeout,
        // Two pipelined connections per worker: with one, a large value holds up every reply
        // queued behind it (64 KiB GETs: 8.5k/s on one connection, 25k/s on two; perf/RESULTS.md).
        connections: 2,
        max_value_size: usize::try_from(cfg.max_object_size).unwrap_or(usize::MAX),
        ..RedisOptions::new(cfg.url.clone())
    }
}

/// Applies the purges other instances announce over Redis (see
/// [`crate::cache::purge_broadcast`]) until this worker shuts down. One subscription per
/// process is enough, since every worker shares the tiers it purges: worker 0 runs it.
pub fn spawn_purge_subscriber(w: &Rc<Worker>) {
    let Some(cfg) = w.shared.config.cache.redis.as_ref() else {
        return;
    };
    let opts = redis_options(cfg);
    let channel = purge_broadcast::channel(&opts.key_prefix);
    let (tiers, instance) = (Arc::clone(&w.shared.tiers), w.shared.instance_tag);
    let stop = StopSignal::new();
    let on_message = move |msg| {
        let tiers = Arc::clone(&tiers);
        monoio::spawn(async move {
            purge_broadcast::apply(&tiers, instance, msg).await;
        });
    };
    monoio::spawn(subscribe(opts, channel, on_message, stop.clone()));
    let w = Rc::clone(w);
    monoio::spawn(async move {
        w.shutdown.wait().await;
        stop.stop();
    });
}

impl Worker {
    pub fn new(id: usize, shared: Arc<Shared>) -> Rc<Worker> {
        let buckets = shared
            .config
            .buckets
            .iter()
            .enumerate()
            .map(|(i, b)| WorkerBucket {
                signer: Signer::new(
                    Credentials {
                        access_key: b.access_key.clone(),
                        secret_key: b.secret_key.clone(),
                        session_token: b.session_token.clone(),
                    },
                    &b.region,
                    "s3",
                ),
                pool: Pool::new(
                    Arc::clone(shared.origins.get(i)),
                    shared.client_tls[i]
                        .as_ref()
                        .map(|(cfg, name)| (TlsConnector::from(Arc::clone(cfg)), name.clone())),
                    b.max_idle_connections,
                    b.pool_idle_timeout,
                ),
                timeouts: Timeouts {
                    connect: b.connect_timeout,
                    first_byte: b.first_byte_timeout,
                    read: b.read_timeout,
                },
            })
            .collect();
        let redis = shared.config.cache.redis.as_ref().and_then(|r| {
            RedisClient::new(redis_options(r))
                .map_err(|e| log::error!("worker {id}: redis tier disabled: {e}"))
                .ok()
        });
        let redis_prefix = shared
            .config
            .cache
            .redis
            .as_ref()
            .map(|r| redis_options(r).key_prefix)
            .unwrap_or_default();
        Rc::new(Worker {
            id,
            redis,
            redis_prefix,
            redis_behind: Cell::new(0),
            shared,
            buckets,
            shutdown: LocalSignal::default(),
            connections: Cell::new(0),
            date: RefCell::new(DateCache::default()),
            next_request: Cell::new(0),
            head_bodies: RefCell::new(Vec::new()),
            spare_bufs: RefCell::new(Vec::new()),
        })
    }

    /// A vectored-write buffer from this worker's free list.
    pub fn head_body(&self) -> HeadBody {
        self.head_bodies.borrow_mut().pop().unwrap_or_default()
    }

    pub fn return_head_body(&self, hb: HeadBody) {
        let mut list = self.head_bodies.borrow_mut();
        if list.len() < 1024 {
            list.push(hb);
        }
    }

    /// An empty byte buffer from this worker's free list (or a new one, unallocated).
    pub fn spare_buf(&self) -> Vec<u8> {
        self.spare_bufs.borrow_mut().pop().unwrap_or_default()
    }

    /// Gives a buffer back for reuse. Unallocated ones, ones larger than [`MAX_SPARE_BUF`] and
    /// those past the list's bound are dropped.
    pub fn recycle_buf(&self, mut buf: Vec<u8>) {
        let mut list = self.spare_bufs.borrow_mut();
        if buf.capacity() > 0 && buf.capacity() <= MAX_SPARE_BUF && list.len() < MAX_SPARE_BUFS {
            buf.clear();
            list.push(buf);
        }
    }

    /// A spare buffer that goes back to the free list when dropped, on every return path.
    pub fn scratch(&self) -> Scratch<'_> {
        Scratch {
            w: self,
            buf: self.spare_buf(),
        }
    }

    pub fn metrics(&self) -> &WorkerMetrics {
        self.shared.metrics.worker(self.id)
    }

    /// A fresh request id: process tag, worker, counter — unique across workers and restarts.
    pub fn next_request_id(&self) -> crate::http::conn::RequestId {
        let n = self.next_request.get();
        self.next_request.set(n + 1);
        crate::http::conn::RequestId::generate(self.shared.instance_tag, self.id as u16, n)
    }
}

/// Binds this worker's listener (SO_REUSEPORT: every worker has its own accept queue).
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let opts = ListenerOpts::new()
        .reuse_port(true)
        .reuse_addr(true)
        .backlog(4096);
    TcpListener::bind_with_config(addr, &opts)
}

/// The accept loop; returns once shutdown has begun and connections drained (or the grace
/// period ran out).
pub async fn run(w: Rc<Worker>, listener: TcpListener) {
    let acceptor = w
        .shared
        .server_tls
        .as_ref()
        .map(|c| TlsAcceptor::from(Arc::clone(c)));
    loop {
        let accepted = monoio::select! {
            r = listener.accept() => Some(r),
            _ = w.shutdown.wait() => None,
        };
        let (stream, _peer) = match accepted {
            None => break,
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                // EMFILE and friends: back off briefly instead of spinning on the error.
                log::warn!("worker {}: accept failed: {e}", w.id);
                monoio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if w.connections.get() >= w.shared.config.server.max_connections {
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let w2 = Rc::clone(&w);
        let acceptor = acceptor.clone();
        monoio::spawn(async move {
            w2.connections.set(w2.connections.get() + 1);
            w2.metrics().connection_opened();
            let w3 = Rc::clone(&w2);
            let conn = async move {
                let io = match acceptor {
                    None => MaybeTls::Plain(stream),
                    Some(acceptor) => {
                        let t = w3.shared.config.server.header_timeout;
                        match monoio::time::timeout(t, acceptor.accept(stream)).await {
                            Ok(Ok(s)) => MaybeTls::Tls(Box::new(s)),
                            Ok(Err(e)) => {
                                log::debug!("TLS handshake failed: {e}");
                                return;
                            }
                            Err(_) => return,
                        }
                    }
                };
                crate::http::conn::serve(w3, io).await;
            };
            if let Err(panic) = (CatchUnwind(Box::pin(conn))).await {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                log::error!(
                    "worker {}: a connection panicked and was closed: {msg}",
                    w2.id
                );
            }
            w2.metrics().connection_closed();
            w2.connections.set(w2.connections.get() - 1);
        });
    }
    drop(listener);
    let deadline = Instant::now() + w.shared.config.server.shutdown_grace;
    // Connections finish their current request and close; wait for them up to the grace period.
    while w.connections.get() > 0 && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(5)).await;
    }
    if w.connections.get() > 0 {
        log::warn!(
            "worker {}: grace period over, closing {} connection(s)",
            w.id,
            w.connections.get()
        );
    }
}

/// Runs a connection future, turning a panic into an `Err` so one bad request cannot take the
/// worker's other connections down with it (ARCHITECTURE rule 8: catch per connection). The
/// panicking connection is dropped, which closes its sockets.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn std::any::Any + Send>>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let fut = self.0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(p) => Poll::Ready(Err(p)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// A panicking connection task is contained: its neighbours on the same worker finish.
    #[test]
    fn a_panicking_connection_does_not_stop_the_others() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        rt.block_on(async {
            let done = Rc::new(Cell::new(0));
            let d = Rc::clone(&done);
            let survivor = monoio::spawn(async move {
                monoio::time::sleep(Duration::from_millis(20)).await;
                d.set(d.get() + 1);
            });
            let bad = monoio::spawn(CatchUnwind(Box::pin(async {
                monoio::time::sleep(Duration::from_millis(5)).await;
                panic!("boom");
            })));
            let caught = bad.await;
            let msg = caught.unwrap_err();
            assert_eq!(msg.downcast_ref::<&str>(), Some(&"boom"));
            survivor.await;
            assert_eq!(done.get(), 1);
        });
    }
}

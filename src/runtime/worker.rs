//! One worker thread: its accept loop, its connections and its purge subscriber. The worker's
//! state ([`Worker`], built here inside its thread) is `crate::context`'s.
//!
//! At shutdown a listener never resets a connection the kernel queued for it: it stops taking
//! new ones first (a SYN-dropping socket filter), serves what is queued and the handshakes in
//! progress for `HANDOVER`, and only then closes (see `stop_listening`). With another
//! instance on the port (SO_REUSEPORT), new connections go to it, the dropped SYNs after their
//! retransmission; with none, they are refused.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use std::os::fd::AsRawFd;

use monoio::io::Canceller;
use monoio::net::{ListenerOpts, TcpListener, TcpStream};
use monoio::time::Instant;
use monoio_rustls::TlsAcceptor;

use crate::cache::purge_broadcast;
use crate::cache::redis::StopSignal;
use crate::context::{Current, Worker};
use crate::handler::{Surface, WorkerApp};
use crate::net::{readable_now, MaybeTls};

/// Runs the purge subscriber ([`purge_broadcast::listen`]) on this worker until it shuts
/// down. One subscription per process is enough, since every worker shares the tiers it
/// purges: worker 0 runs it.
pub fn spawn_purge_subscriber(w: &Rc<Worker>) {
    let Some(opts) = w.shared.redis.clone() else {
        return;
    };
    let stop = StopSignal::new();
    monoio::spawn(purge_broadcast::listen(
        Arc::clone(&w.shared.tiers),
        opts,
        w.shared.instance_tag,
        stop.clone(),
    ));
    let w = Rc::clone(w);
    monoio::spawn(async move {
        w.http.shutdown.wait().await;
        stop.stop();
    });
}

/// Binds this worker's listener (SO_REUSEPORT: every worker has its own accept queue).
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let opts = ListenerOpts::new()
        .reuse_port(true)
        .reuse_addr(true)
        .backlog(4096);
    TcpListener::bind_with_config(addr, &opts)
}

/// Closes this many of the oldest idle connections at a time when accepting fails for lack of
/// descriptors (nginx frees 32 reusable connections at a time in the same situation).
const RECLAIM_BATCH: usize = 32;
/// Longest pause between accept attempts while they fail with nothing to reclaim.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_millis(500);
/// After the listener closed, connections still waiting for a request head get this long to
/// send it (a client the kernel accepted just before sends within a round trip) before they are
/// closed, so that idle connections cannot hold the drain up to `server.header_timeout`.
const LAST_CALL: Duration = Duration::from_secs(1);
/// At most this many already-queued connections are taken over when the listener closes (the
/// listen backlog).
const MAX_DRAINED: usize = 4096;

/// The accept loop; returns once shutdown has begun and connections drained (or the grace
/// period ran out).
///
/// Under descriptor pressure it keeps serving: when a worker holds its share of connections
/// ([`super::fdlimit::Budget::per_worker`]) each new connection closes the oldest idle one, and
/// when accepting fails for lack of descriptors the oldest idle connections are closed in
/// batches; only with nothing idle is a new connection refused or accepting retried after a
/// growing pause. Accept errors are logged once per state change, never per attempt.
pub async fn run(current: Rc<Current>, listener: TcpListener, surface: Surface) {
    // What the accept loop reads lasts across config generations (connections, limits,
    // shutdown); each connection's requests take the current generation themselves.
    let w = current.get();
    // TLS is for the public listener; the admin listener is plain (typically loopback).
    let acceptor = match surface {
        Surface::Public => w.shared.server_tls.as_ref(),
        Surface::Admin => None,
    }
    .map(|c| TlsAcceptor::from(Arc::clone(c)));
    let mut log = AcceptLog::default();
    let mut backoff = Duration::ZERO;
    loop {
        let canceller = Canceller::new();
        let accept = listener.cancelable_accept(canceller.handle());
        let mut accept = std::pin::pin!(accept);
        let accepted = monoio::select! {
            r = accept.as_mut() => Some(r),
            _ = w.http.shutdown.wait() => None,
        };
        let accepted = match accepted {
            Some(r) => r,
            None => {
                // Cancel the accept in flight and wait until the cancellation completed: until
                // then io_uring holds the listening socket. A connection that raced the
                // cancellation was accepted, so it is served.
                let _ = canceller.cancel();
                if let Ok((stream, peer)) = accept.await {
                    spawn_connection(&current, stream, peer, &acceptor, surface);
                }
                break;
            }
        };
        match accepted {
            Ok((stream, peer)) => {
                log.accepted(w.id);
                backoff = Duration::ZERO;
                if w.connections.get() >= w.shared.fd_budget.per_worker {
                    // Full: room for this one comes from the oldest idle connection. With none
                    // idle, every connection is busy and this one is refused.
                    let reclaimed = w.http.idle.reclaim_oldest(1);
                    log.full(w.id, w.shared.fd_budget.per_worker, reclaimed);
                    if reclaimed == 0 {
                        continue;
                    }
                } else {
                    log.below_limit(w.id, w.connections.get(), w.shared.fd_budget.per_worker);
                }
                spawn_connection(&current, stream, peer, &acceptor, surface);
                // One accept per turn of the event loop (nginx's `multi_accept off`): the new
                // connection's task runs — and registers as idle, so it can be reclaimed —
                // before the next accept, and a deep backlog cannot starve the connections
                // already open (with the epoll driver an accept of a queued connection never
                // waits, so without this the loop would drain the whole backlog first).
                YieldNow(false).await;
            }
            Err(e) => {
                let out_of_fds = matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                );
                let reclaimed = if out_of_fds {
                    w.http.idle.reclaim_oldest(RECLAIM_BATCH)
                } else {
                    0
                };
                log.failed(w.id, &e, reclaimed);
                // After reclaiming, a short pause lets those connections close (their tasks
                // run, and io_uring submits the closes); otherwise back off, doubling.
                let pause = if reclaimed > 0 {
                    Duration::from_millis(1)
                } else {
                    backoff = (backoff * 2).clamp(Duration::from_millis(10), MAX_ACCEPT_BACKOFF);
                    backoff
                };
                monoio::select! {
                    _ = monoio::time::sleep(pause) => {},
                    _ = w.http.shutdown.wait() => {},
                }
            }
        }
    }
    stop_listening(&current, listener, &acceptor, surface).await;
    let now = Instant::now();
    let deadline = now + w.shared.config.server.shutdown_grace;
    let mut last_call = Some(now + LAST_CALL);
    // Connections finish their current request and close; wait for them up to the grace period.
    while w.connections.get() > 0 && Instant::now() < deadline {
        if last_call.is_some_and(|t| Instant::now() >= t) {
            // Whoever has not sent a request head by now (preconnected, or an idle flood) is
            // not waited for until `header_timeout`.
            last_call = None;
            w.http.idle.reclaim_oldest(usize::MAX);
        }
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

/// Stops listening for good without resetting a connection the kernel queued for it.
///
/// Closing (or `shutdown(2)`ing) a listening socket makes Linux reset every connection still in
/// its accept queue or in its handshake, unless `net.ipv4.tcp_migrate_req = 1` moves them to
/// another listener of the SO_REUSEPORT group (off by default; setting it needs root). Draining
/// the queue first leaves a window: a connection queued between the last accept and the close
/// is reset. So the listener is first closed to *new* connections while it stays open:
///
/// 1. a classic BPF socket filter ([`drop_syns`], `SO_ATTACH_FILTER`, unprivileged) drops
///    every pure SYN that reaches this listener. Its accept queue can then only grow by the
///    handshakes already in progress; a client whose SYN was dropped retransmits it (after 1 s
///    on Linux) and by then the listener is gone: the SYN goes to another instance listening on
///    the port (a zero-downtime replacement), or is refused;
/// 2. for [`HANDOVER`] (longer than a handshake's round trip) what arrives is accepted and
///    served, with `Connection: close`;
/// 3. the queue is drained once more, and `shutdown(2)` takes the socket out of the listening
///    state and its SO_REUSEPORT group at once; then it is closed.
///
/// Where the filter cannot be attached, steps 1–2 are skipped (the old behaviour, with its
/// window) and that is logged.
async fn stop_listening(
    current: &Rc<Current>,
    listener: TcpListener,
    acceptor: &Option<TlsAcceptor>,
    surface: Surface,
) {
    let fd = listener.as_raw_fd();
    let accept_queued = || async {
        for _ in 0..MAX_DRAINED {
            if !readable_now(fd) {
                break;
            }
            match listener.accept().await {
                Ok((stream, peer)) => spawn_connection(current, stream, peer, acceptor, surface),
                Err(_) => break,
            }
        }
    };
    match drop_syns(fd) {
        Ok(()) => {
            let end = Instant::now() + HANDOVER;
            while Instant::now() < end {
                accept_queued().await;
                monoio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        Err(e) => log::warn!(
            "worker {}: cannot stop new connections before closing the listener ({e}): \
             a connection arriving while it closes may be reset",
            current.get().id
        ),
    }
    accept_queued().await;
    // SAFETY: `fd` is the listening socket `listener` owns and keeps open until the drop below;
    // shutdown(2) changes socket state only. On a listening socket, SHUT_RD stops listening
    // (Linux: inet_shutdown -> tcp_disconnect), even while another reference to the file exists.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
    drop(listener);
}

/// How long a listener closing at shutdown keeps accepting the handshakes that were in progress
/// when it stopped taking new ones (see [`stop_listening`]): a few round trips of a distant
/// client.
const HANDOVER: Duration = Duration::from_millis(250);

/// Attaches a socket filter to the listening socket `fd` that drops pure SYNs (new connection
/// attempts) and passes everything else (the final ACK of a handshake in progress, data of
/// connections accepted from it, which inherit the filter).
///
/// A socket filter of a TCP socket sees the packet from its TCP header: byte 13 holds the flags.
fn drop_syns(fd: std::os::fd::RawFd) -> std::io::Result<()> {
    const SYN: u32 = 0x02;
    const ACK: u32 = 0x10;
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let mut program = [
        // A = flags byte
        stmt(libc::BPF_LD | libc::BPF_B | libc::BPF_ABS, 13),
        stmt(libc::BPF_ALU | libc::BPF_AND | libc::BPF_K, SYN | ACK),
        // SYN without ACK: drop (return 0); otherwise keep the whole packet.
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: SYN,
        },
        stmt(libc::BPF_RET | libc::BPF_K, 0),
        stmt(libc::BPF_RET | libc::BPF_K, u32::MAX),
    ];
    let prog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_mut_ptr(),
    };
    // SAFETY: `prog` points at `program`, alive for the call; the kernel copies the program.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&prog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Serves one accepted connection in its own task (TLS handshake first, when configured).
fn spawn_connection(
    current: &Rc<Current>,
    stream: TcpStream,
    peer: std::net::SocketAddr,
    acceptor: &Option<TlsAcceptor>,
    surface: Surface,
) {
    let _ = stream.set_nodelay(true);
    let app = WorkerApp::new(Rc::clone(current), surface);
    // What the connection's own bookkeeping needs, without holding a config generation for
    // the connection's life (its requests take theirs from `current`).
    let (id, connections, metrics, http) = {
        let w = current.get();
        let metrics = Arc::clone(&w.shared.metrics);
        (w.id, Rc::clone(&w.connections), metrics, Rc::clone(&w.http))
    };
    let acceptor = acceptor.clone();
    connections.set(connections.get() + 1);
    monoio::spawn(async move {
        metrics.worker(id, &[]).connection_opened();
        let http2 = Rc::clone(&http);
        let conn = async move {
            let io = match acceptor {
                None => MaybeTls::Plain(stream),
                Some(acceptor) => {
                    let t = http2.header_timeout;
                    // A connection still in its handshake is idle too: reclaimable, oldest first.
                    let since = Instant::now();
                    // Boxed: the handshake's state (~2.5 KiB) would otherwise be part of
                    // every connection's task for its whole life, TLS or not.
                    let accept = Box::pin(monoio::time::timeout(t, acceptor.accept(stream)));
                    let handshake = monoio::select! {
                        r = accept => Some(r),
                        _ = http2.idle.wait(since, None, false) => None,
                    };
                    match handshake {
                        Some(Ok(Ok(s))) => MaybeTls::Tls(Box::new(s)),
                        Some(Ok(Err(e))) => {
                            log::debug!("TLS handshake failed: {e}");
                            return;
                        }
                        Some(Err(_)) | None => return,
                    }
                }
            };
            crate::http::conn::serve(&app, io, peer).await;
        };
        // Pinned in the task itself, not boxed: one allocation per connection instead of two,
        // which is what an idle connection is made of (see `http::pool` on bursts).
        if let Err(panic) = (CatchUnwind(std::pin::pin!(conn))).await {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            log::error!("worker {}: a connection panicked and was closed: {msg}", id);
        }
        metrics.worker(id, &[]).connection_closed();
        connections.set(connections.get() - 1);
    });
}

/// Logs the accept loop's trouble once per state change: when accepting starts failing (and
/// when it works again, with how many attempts failed and idle connections were closed), and
/// when the worker reaches its connection limit (and when it is well below it again). Both ends
/// have some hysteresis, so a worker hovering at the edge logs a pair of lines, not one per
/// connection.
#[derive(Default)]
struct AcceptLog {
    failing: Option<Failing>,
    /// New connections admitted by closing an idle one, and refused, since the limit was hit.
    full: Option<(u64, u64)>,
}

struct Failing {
    attempts: u64,
    reclaimed: u64,
    last: Instant,
}

/// Accepting counts as working again once it succeeds this long after the last failure.
const RECOVERED_AFTER: Duration = Duration::from_secs(1);

impl AcceptLog {
    fn failed(&mut self, worker: usize, e: &std::io::Error, reclaimed: usize) {
        let now = Instant::now();
        match &mut self.failing {
            Some(f) => {
                f.attempts += 1;
                f.reclaimed += reclaimed as u64;
                f.last = now;
            }
            None => {
                log::warn!(
                    "worker {worker}: accepting connections failed: {e}; closing idle \
                     connections to make room and retrying (logged again when it recovers)"
                );
                self.failing = Some(Failing {
                    attempts: 1,
                    reclaimed: reclaimed as u64,
                    last: now,
                });
            }
        }
    }

    fn accepted(&mut self, worker: usize) {
        if let Some(f) = self
            .failing
            .take_if(|f| f.last.elapsed() >= RECOVERED_AFTER)
        {
            log::warn!(
                "worker {worker}: accepting connections works again after {} failed \
                 attempt(s); {} idle connection(s) closed to make room",
                f.attempts,
                f.reclaimed
            );
        }
    }

    fn full(&mut self, worker: usize, limit: usize, reclaimed: usize) {
        let (admitted, refused) = if reclaimed > 0 { (1, 0) } else { (0, 1) };
        match &mut self.full {
            Some((a, r)) => {
                *a += admitted;
                *r += refused;
            }
            None => {
                log::warn!(
                    "worker {worker}: {limit} connections open, its connection limit \
                     (server.max_connections or the open-file limit's share): each new \
                     connection closes the oldest idle one (logged again when well below)"
                );
                self.full = Some((admitted, refused));
            }
        }
    }

    /// A connection was admitted with `open` connections open (below `limit`).
    fn below_limit(&mut self, worker: usize, open: usize, limit: usize) {
        if open > limit - limit / 4 {
            return;
        }
        if let Some((admitted, refused)) = self.full.take() {
            log::warn!(
                "worker {worker}: below its connection limit again; meanwhile {admitted} idle \
                 connection(s) closed to make room and {refused} new connection(s) refused \
                 with none idle"
            );
        }
    }
}

/// Lets every other ready task of this worker run once before continuing.
///
/// A task that wakes itself while being polled is run again first by monoio (its scheduler
/// puts it at the front of the queue), so the wake comes from a task spawned at the back of the
/// queue instead: it runs after every task that was ready before it.
struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        let waker = cx.waker().clone();
        monoio::spawn(async move { waker.wake() });
        Poll::Pending
    }
}

/// Runs a connection future, turning a panic into an `Err` so one bad request cannot take the
/// worker's other connections down with it (ARCHITECTURE rule 8: catch per connection). The
/// panicking connection is dropped, which closes its sockets.
struct CatchUnwind<'a, F>(Pin<&'a mut F>);

impl<F: Future> Future for CatchUnwind<'_, F> {
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

    /// The filter a listener gets at shutdown drops new connection attempts (their SYNs time
    /// out instead of being queued or refused) and lets an established connection through.
    #[test]
    #[expect(
        clippy::disallowed_methods,
        reason = "a unit test on the test harness's thread, not on a worker"
    )]
    fn drop_syns_stops_new_connections_only() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut before = std::net::TcpStream::connect(addr).unwrap();
        let (mut served, _) = listener.accept().unwrap();
        drop_syns(listener.as_raw_fd()).unwrap();
        let attempt = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300));
        assert_eq!(
            attempt.map(|_| ()).map_err(|e| e.kind()),
            Err(std::io::ErrorKind::TimedOut),
            "the SYN was dropped: neither connected nor refused"
        );
        before.write_all(b"ping").unwrap();
        let mut got = [0u8; 4];
        served.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
    }

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
            let bad = monoio::spawn(async {
                let f = std::pin::pin!(async {
                    monoio::time::sleep(Duration::from_millis(5)).await;
                    panic!("boom");
                });
                CatchUnwind(f).await
            });
            let caught = bad.await;
            let msg = caught.unwrap_err();
            assert_eq!(msg.downcast_ref::<&str>(), Some(&"boom"));
            survivor.await;
            assert_eq!(done.get(), 1);
        });
    }
}

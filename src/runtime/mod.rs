//! Worker threads and their lifecycle: starting and pinning them, the control bus, signals,
//! shutdown, and the reload thread that switches them to a new config generation. What a
//! generation is, and how it is built, checked and planned, is [`crate::context`]'s; this module
//! only runs it.
//!
//! [`Server::start`] has the first generation built ([`Shared::new`]) and starts one thread per
//! worker — pinned to a core, running its own monoio runtime (io_uring, or the legacy epoll
//! driver where io_uring cannot be set up) with its own SO_REUSEPORT listener on one shared
//! port. [`serve`], the CLI's entry, starts a `Server` and waits for SIGTERM/SIGINT.
//! Shutdown goes over the control bus: every worker gets a `Shutdown` command, stops accepting,
//! lets in-flight requests finish within `server.shutdown_grace`, and exits; [`Server::stop`]
//! returns once all have. A second signal exits at once. `/ready` answers 503 from the moment
//! shutdown begins.
//!
//! Zero-downtime replacement: a new corvid started on the same address while this one runs
//! joins the listeners' SO_REUSEPORT group; SIGTERM to the old one then loses no connection.
//! Each old listener first drops new SYNs (a classic BPF socket filter, no privilege needed:
//! the client retransmits its SYN, after 1 s on Linux, and it reaches the new instance once
//! the old listener is gone), accepts and serves, with `Connection: close`, what its queue
//! holds and the handshakes in progress for a short hand-over, and only then leaves the group
//! (`shutdown(2)`, which resets whatever is still queued unless `net.ipv4.tcp_migrate_req = 1`;
//! logged at start). Idle keep-alive connections are closed without a reset (FIN, then what
//! the client still sends is read and dropped until it closes), so a request that crossed the
//! close sees a clean EOF, on which HTTP/1.1 clients retry on a new connection; requests in
//! flight are answered with `Connection: close`. See worker's `stop_listening` and
//! `http::conn`'s `lingering_close`.
//!
//! **Reload** (SIGHUP, `POST /admin/reload`): the reload thread re-reads the file, plans it
//! ([`crate::context::reload`]) and has the next [`Shared`] generation built
//! ([`Shared::reloaded`]) in full before anything changes; then the origin monitor moves to the new origins and every
//! worker gets `Control::Reload`, switches between requests ([`crate::context::Current`]) and
//! acks; the reload is answered once all have (or after 5 s, logged), so a request sent after
//! the answer runs on the new config. One reload runs at a time.
//!
//! The control bus is one flume channel per worker: flume's async receive wakes a monoio task
//! from another thread (monoio's `sync` feature), which crossbeam's blocking channels cannot.

pub mod worker;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::access_log::AccessLog;
use crate::clock::Clock;
use crate::config::Config;
use crate::context::reload::Outcome;
use crate::context::Shared;
use crate::fdlimit;
use crate::handler::Surface;

/// How long a reload waits for every worker to switch before answering anyway.
const RELOAD_ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the origin monitor re-resolves endpoints and re-checks reachability.
pub const ORIGIN_CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// Commands sent to every worker over the control bus.
#[derive(Clone)]
pub enum Control {
    Shutdown,
    /// Switch to this config generation between requests (a reload), then ack.
    Reload(Arc<Shared>, flume::Sender<()>),
}

/// A running proxy: the shared state, the worker threads (all listening on one address) and
/// the origin monitor. [`Server::start`] returns once every worker listens; [`Server::stop`]
/// (or dropping the value) shuts the workers down over the control bus and joins them.
///
/// The CLI drives it from [`serve`]; tests use it to run corvid in-process (pre-filling
/// [`Shared::tiers`], reaching the workers through [`Server::local_addr`]).
pub struct Server {
    /// The first generation: what lasts as long as the process is read from it.
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    controls: Vec<flume::Sender<Control>>,
    handles: Vec<JoinHandle<()>>,
    /// The running generation and what a reload swaps with it.
    generations: Arc<Generations>,
}

/// The running config generation, shared by the [`Server`] and the reload thread.
struct Generations {
    current: parking_lot::Mutex<Arc<Shared>>,
    /// One reload at a time (building a generation resolves endpoints and reads key files).
    reloading: parking_lot::Mutex<()>,
    /// The running generation's origin monitor's stop flag.
    stop_monitor: parking_lot::Mutex<Arc<AtomicBool>>,
    controls: parking_lot::Mutex<Vec<flume::Sender<Control>>>,
    /// The `corvid-credentials` thread for the running generation's cells, when a bucket has
    /// a credentials source.
    refresher: parking_lot::Mutex<Option<crate::credentials::refresh::Refresher>>,
}

impl Generations {
    /// Applies `new` (see [`crate::context::reload`]): validated and built in full first; a refusal
    /// changes nothing. Counted in `corvid_config_reloads_total`.
    fn reload(&self, new: Result<Config, String>) -> Outcome {
        let _one = self.reloading.lock();
        let running = Arc::clone(&self.current.lock());
        let built = new.and_then(|config| {
            let plan = crate::context::reload::plan(&running.config, config);
            let next = running.reloaded(plan.config)?;
            Ok((next, plan.applied, plan.restart_required))
        });
        let (next, applied, restart_required) = match built {
            Ok(b) => b,
            Err(e) => {
                running.metrics.reload(false);
                return Outcome::Refused(e);
            }
        };
        // The refresh thread takes over the new generation's cells (kept ones keep their
        // lease and schedule from it). An attempt in progress finishes first (bounded).
        let refresher = match crate::credentials::refresh::Refresher::start(&next.credentials) {
            Ok(r) => r,
            Err(e) => {
                running.metrics.reload(false);
                return Outcome::Refused(e);
            }
        };
        if let Some(mut old) = std::mem::replace(&mut *self.refresher.lock(), refresher) {
            old.stop();
        }
        let stop = Arc::new(AtomicBool::new(false));
        next.origins
            .spawn_monitor(ORIGIN_CHECK_INTERVAL, Arc::clone(&stop));
        if let Some(fleet) = &next.fleet {
            fleet.spawn_monitor(Arc::clone(&stop));
        }
        let old_stop = std::mem::replace(&mut *self.stop_monitor.lock(), stop);
        old_stop.store(true, Ordering::Relaxed);
        *self.current.lock() = Arc::clone(&next);
        // Answered once every worker switched, so a request sent after the answer runs on
        // the new config (a worker that does not ack in time is stuck or gone; logged).
        let (ack, acks) = flume::unbounded();
        let controls = self.controls.lock().clone();
        for c in &controls {
            let _ = c.send(Control::Reload(Arc::clone(&next), ack.clone()));
        }
        drop(ack);
        let deadline = Instant::now() + RELOAD_ACK_TIMEOUT;
        for _ in &controls {
            // Blocking: the reload thread (or a test), never a worker.
            if acks.recv_deadline(deadline).is_err() {
                log::warn!("reload: a worker did not switch within {RELOAD_ACK_TIMEOUT:?}");
                break;
            }
        }
        next.metrics.reload(true);
        Outcome::Applied {
            applied,
            restart_required,
        }
    }
}

/// What a worker reports once it listens: a line for the log and its bound address.
type Started = Result<(String, SocketAddr), String>;

impl Server {
    /// Builds [`Shared`], starts the origin monitor and the workers, and waits until every
    /// worker listens. Errors are start-up failures (workers already started are stopped).
    ///
    /// Worker 0 binds first and the others bind to the address it got, so that with port 0
    /// in `server.listen` every worker still shares one port (SO_REUSEPORT).
    pub fn start(config: Config) -> Result<Server, String> {
        Server::start_with(config, Clock::system())
    }

    /// [`Server::start`] with another clock: tests pass a [`Clock::manual`] and advance it
    /// instead of sleeping past TTLs.
    pub fn start_with(config: Config, clock: Clock) -> Result<Server, String> {
        Server::start_full(config, clock, None)
    }

    /// [`Server::start_with`], with `reloads` the channel `POST /admin/reload` asks on (the CLI
    /// serves it from the reload thread; see [`serve`]).
    pub fn start_full(
        config: Config,
        clock: Clock,
        reloads: Option<crate::context::ReloadRequests>,
    ) -> Result<Server, String> {
        let mut shared = Shared::new(config, clock)?;
        if let Some(r) = reloads {
            if let Some(s) = Arc::get_mut(&mut shared) {
                s.reloads = Some(r);
            }
        }
        let stop_monitor = Arc::new(AtomicBool::new(false));
        shared
            .origins
            .spawn_monitor(ORIGIN_CHECK_INTERVAL, Arc::clone(&stop_monitor));
        if let Some(fleet) = &shared.fleet {
            fleet.spawn_monitor(Arc::clone(&stop_monitor));
        }
        let refresher = crate::credentials::refresh::Refresher::start(&shared.credentials)?;
        let generations = Arc::new(Generations {
            current: parking_lot::Mutex::new(Arc::clone(&shared)),
            reloading: parking_lot::Mutex::new(()),
            stop_monitor: parking_lot::Mutex::new(stop_monitor),
            controls: parking_lot::Mutex::new(Vec::new()),
            refresher: parking_lot::Mutex::new(refresher),
        });
        let mut server = Server {
            local_addr: shared.config.server.listen,
            shared,
            controls: Vec::new(),
            handles: Vec::new(),
            generations,
        };
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        // Each wait holds no sender of its own, so a worker that dies before reporting ends
        // the wait instead of hanging it.
        let (first_tx, first_rx) = std::sync::mpsc::channel::<Started>();
        server.spawn_worker(0, &cores, server.local_addr, first_tx)?;
        server.local_addr = started(&first_rx)?;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Started>();
        for id in 1..server.shared.workers {
            server.spawn_worker(id, &cores, server.local_addr, ready_tx.clone())?;
        }
        drop(ready_tx);
        let mut startup_error = None;
        for _ in 1..server.shared.workers {
            if let Err(e) = started(&ready_rx) {
                startup_error.get_or_insert(e);
            }
        }
        match startup_error {
            // Dropping `server` stops the workers that did start.
            Some(e) => Err(e),
            None => {
                *server.generations.controls.lock() = server.controls.clone();
                Ok(server)
            }
        }
    }

    fn spawn_worker(
        &mut self,
        id: usize,
        cores: &[core_affinity::CoreId],
        listen: SocketAddr,
        ready: std::sync::mpsc::Sender<Started>,
    ) -> Result<(), String> {
        let (tx, rx) = flume::unbounded::<Control>();
        let shared = Arc::clone(&self.shared);
        let core = (!cores.is_empty()).then(|| cores[id % cores.len()]);
        let handle = std::thread::Builder::new()
            .name(format!("corvid-worker-{id}"))
            .spawn(move || worker_thread(id, shared, core, listen, rx, ready))
            .map_err(|e| format!("cannot start worker thread: {e}"))?;
        self.controls.push(tx);
        self.handles.push(handle);
        Ok(())
    }

    /// The state every worker shares (config, cache tiers, metrics): the running generation.
    pub fn shared(&self) -> Arc<Shared> {
        Arc::clone(&self.generations.current.lock())
    }

    /// Reloads with `config` (see [`crate::context::reload`]): applied in full, or refused with the
    /// reason and nothing changed. Workers switch between requests. Blocking (endpoint
    /// resolution, key files): not from a worker.
    pub fn reload(&self, config: Config) -> Outcome {
        self.generations.reload(Ok(config))
    }

    /// The address the workers listen on (the bound port when `server.listen` has port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Shuts down: every worker stops accepting, lets in-flight requests finish within
    /// `server.shutdown_grace`, and exits; returns once all have.
    pub fn stop(mut self) {
        self.halt();
    }

    #[expect(
        clippy::disallowed_methods,
        reason = "joins the workers from the thread that started them (main, or a test)"
    )]
    fn halt(&mut self) {
        self.shared.shutting_down.store(true, Ordering::Relaxed);
        for c in self.controls.drain(..) {
            let _ = c.send(Control::Shutdown);
        }
        for h in self.handles.drain(..) {
            if h.join().is_err() {
                log::error!("a worker thread panicked");
            }
        }
        // Every worker flushed its access log buffer on the way out: write it all.
        if let Some(a) = &self.shared.access_log {
            a.finish();
        }
        self.generations
            .stop_monitor
            .lock()
            .store(true, Ordering::Relaxed);
        self.generations.controls.lock().clear();
        if let Some(mut r) = self.generations.refresher.lock().take() {
            r.stop();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.halt();
    }
}

/// The next worker's start-up report: logs its line and returns its address.
#[expect(
    clippy::disallowed_methods,
    reason = "start-up: the starting thread waits for each worker to listen"
)]
fn started(ready: &std::sync::mpsc::Receiver<Started>) -> Result<SocketAddr, String> {
    match ready.recv() {
        Ok(Ok((msg, addr))) => {
            log::info!("{msg}");
            Ok(addr)
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err("a worker thread died during start-up".into()),
    }
}

/// Runs the proxy until SIGTERM/SIGINT and a clean drain. Errors are start-up failures.
/// `path` is the file `config` came from: SIGHUP and `POST /admin/reload` re-read it.
pub fn serve(config: Config, path: &std::path::Path) -> Result<(), String> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
    // Registered before any worker starts so an early signal is not lost. SIGHUP is caught too:
    // its default action would end the process, and operators (and `systemctl reload`) send it
    // out of habit.
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;

    match fdlimit::raise_soft_limit() {
        Ok((before, after)) if before < after => {
            log::info!("open-file limit raised from {before} to {after} (the hard limit)")
        }
        Ok((_, limit)) => log::info!("open-file limit: {limit}"),
        Err(e) => log::warn!("cannot read or raise the open-file limit: {e}"),
    }
    log_migrate_req();
    apply_log_level(&config.log);
    let (reload_tx, reload_rx) = flume::unbounded::<flume::Sender<Outcome>>();
    let server = Server::start_full(config, Clock::system(), Some(reload_tx.clone()))?;
    spawn_reloader(Arc::clone(&server.generations), path.to_owned(), reload_rx)?;
    let shared = server.shared();
    match shared.fd_budget.warning(&shared.config, shared.workers) {
        Some(w) => log::warn!("{w}"),
        None => log::info!(
            "at most {} client connections per worker ({})",
            shared.fd_budget.per_worker,
            if shared.config.server.max_connections.is_some() {
                "server.max_connections"
            } else {
                "server.max_connections unset: the open-file limit's share after the pools"
            }
        ),
    }
    log::info!(
        "corvid {} listening on {}{} with {} worker(s)",
        env!("CARGO_PKG_VERSION"),
        server.local_addr(),
        if shared.server_tls.is_some() {
            " (TLS)"
        } else {
            ""
        },
        shared.workers
    );
    let access = shared.access_log.clone();
    if let Some(sig) = next_stop(&mut signals, access.as_ref(), &reload_tx) {
        log::info!(
            "signal {sig} received: shutting down (grace {:?})",
            shared.config.server.shutdown_grace
        );
    }
    // A second signal during the drain exits at once.
    std::thread::spawn(move || {
        if next_stop(&mut signals, access.as_ref(), &reload_tx).is_some() {
            log::warn!("second signal: exiting without waiting for connections");
            std::process::exit(1);
        }
    });
    server.stop();
    log::info!("shutdown complete");
    Ok(())
}

/// Logs `net.ipv4.tcp_migrate_req`, which decides what Linux does with connections still queued
/// on (or in their handshake with) a listener that closes while others share its port: reset
/// them (0, the default) or move them to another listener (1). corvid's shutdown does not
/// depend on it (see [`worker`]'s `stop_listening`), but it covers handshakes slower than the
/// hand-over too.
#[expect(
    clippy::disallowed_methods,
    reason = "start-up, on the main thread before any worker runs"
)]
fn log_migrate_req() {
    match std::fs::read_to_string("/proc/sys/net/ipv4/tcp_migrate_req") {
        Ok(v) if v.trim() == "1" => log::info!(
            "net.ipv4.tcp_migrate_req = 1: connections queued on a closing listener move to \
             another instance on the port"
        ),
        Ok(v) => log::info!(
            "net.ipv4.tcp_migrate_req = {}: at shutdown the listeners stop taking new \
             connections and serve those already queued before they close (setting it to 1 \
             also moves handshakes in progress to a new instance on the port)",
            v.trim()
        ),
        Err(e) => log::debug!("net.ipv4.tcp_migrate_req unknown (kernel before 5.14?): {e}"),
    }
}

/// Sets the process's log level from `log.level` (start and reload), unless `RUST_LOG` is
/// set: that one, able to name levels per module, wins.
pub fn apply_log_level(log: &crate::config::LogConfig) {
    if let Some(level) = log.level {
        if std::env::var_os("RUST_LOG").is_none() {
            log::set_max_level(level);
        }
    }
}

/// The reload thread: re-reads the config file for each request (SIGHUP, `POST
/// /admin/reload`), applies or refuses it, logs the outcome and answers it. Runs until every
/// sender is gone (the process is ending).
fn spawn_reloader(
    generations: Arc<Generations>,
    path: std::path::PathBuf,
    requests: flume::Receiver<flume::Sender<Outcome>>,
) -> Result<(), String> {
    std::thread::Builder::new()
        .name("corvid-reload".into())
        .spawn(move || {
            #[expect(
                clippy::disallowed_methods,
                reason = "the reload thread waits for requests; never a worker"
            )]
            while let Ok(reply) = requests.recv() {
                let config = Config::load(&path).map_err(|e| e.to_string());
                let outcome = generations.reload(config);
                if matches!(outcome, Outcome::Applied { .. }) {
                    apply_log_level(&generations.current.lock().config.log);
                }
                match &outcome {
                    Outcome::Applied { .. } => log::info!("{}", outcome.describe()),
                    Outcome::Refused(_) => log::error!("{}", outcome.describe()),
                }
                let _ = reply.send(outcome);
            }
        })
        .map(|_| ())
        .map_err(|e| format!("cannot start the reload thread: {e}"))
}

/// Waits for the next stop signal (SIGTERM/SIGINT); a SIGHUP on the way asks the reload thread
/// for a reload; SIGUSR1 reopens the access log file (logrotate).
fn next_stop(
    signals: &mut signal_hook::iterator::Signals,
    access: Option<&Arc<AccessLog>>,
    reloads: &flume::Sender<flume::Sender<Outcome>>,
) -> Option<libc::c_int> {
    for sig in signals.forever() {
        if sig == signal_hook::consts::SIGUSR1 {
            match access {
                Some(a) => a.reopen(),
                None => log::info!("SIGUSR1 received: no access log file to reopen"),
            }
            continue;
        }
        if sig == signal_hook::consts::SIGHUP {
            log::info!("SIGHUP received: reloading the configuration");
            // The outcome is logged by the reload thread; nobody waits for the answer here.
            let (reply, _) = flume::bounded(1);
            let _ = reloads.send(reply);
            continue;
        }
        return Some(sig);
    }
    None
}

fn worker_thread(
    id: usize,
    shared: Arc<Shared>,
    core: Option<core_affinity::CoreId>,
    listen: SocketAddr,
    control: flume::Receiver<Control>,
    ready: std::sync::mpsc::Sender<Started>,
) {
    // CORVID_PIN=0 leaves workers unpinned (for comparison runs on machines shared with the load
    // generator, where a pinned worker waits for its core instead of moving).
    let pin = std::env::var("CORVID_PIN").map_or(true, |v| v != "0");
    let pinned = pin && core.map(core_affinity::set_for_current).unwrap_or(false);
    // CORVID_DRIVER=legacy forces the epoll driver (for comparison runs and tests of the fallback).
    let force_legacy = std::env::var("CORVID_DRIVER").is_ok_and(|v| v == "legacy");
    if !force_legacy {
        match monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .enable_timer()
            .with_entries(1024)
            .build()
        {
            Ok(mut rt) => {
                return rt.block_on(worker_main(
                    id, shared, listen, control, ready, "io_uring", pinned,
                ));
            }
            Err(e) => {
                log::warn!("worker {id}: io_uring unavailable ({e}); using the legacy driver")
            }
        }
    }
    match monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
    {
        Ok(mut rt) => rt.block_on(worker_main(
            id,
            shared,
            listen,
            control,
            ready,
            "legacy (epoll)",
            pinned,
        )),
        Err(e) => {
            let _ = ready.send(Err(format!("worker {id}: cannot build a runtime: {e}")));
        }
    }
}

async fn worker_main(
    id: usize,
    shared: Arc<Shared>,
    listen: SocketAddr,
    control: flume::Receiver<Control>,
    ready: std::sync::mpsc::Sender<Started>,
    driver: &'static str,
    pinned: bool,
) {
    let bound = worker::bind(listen).and_then(|l| Ok((l.local_addr()?, l)));
    let (addr, listener) = match bound {
        Ok(b) => b,
        Err(e) => {
            let _ = ready.send(Err(format!("cannot listen on {listen}: {e}")));
            return;
        }
    };
    // The admin listener, when `admin.listen` is set: same SO_REUSEPORT scheme, its own port.
    let admin = match shared.config.admin.as_ref().and_then(|a| a.listen) {
        None => None,
        Some(at) => match worker::bind(at) {
            Ok(l) => Some(l),
            Err(e) => {
                let _ = ready.send(Err(format!("cannot listen on {at} (admin.listen): {e}")));
                return;
            }
        },
    };
    let w = crate::context::Worker::new(id, shared);
    if let Some((redis, _)) = w.cache.redis() {
        // A cluster's slot map stays fresh while the worker is idle.
        redis.keep_map_fresh();
    }
    if id == 0 {
        worker::spawn_purge_subscriber(&w);
    }
    // The tasks below use what lasts across config generations (the connection environment,
    // the access log buffer), never a generation itself.
    let http = std::rc::Rc::clone(&w.http);
    let sweeper = std::rc::Rc::clone(&http);
    monoio::spawn(async move { sweeper.sweep().await });
    // The connection pools give a burst's memory back once it is over (`http::pool`).
    let trimmer = std::rc::Rc::clone(&http);
    monoio::spawn(async move {
        loop {
            monoio::select! {
                _ = monoio::time::sleep(crate::http::pool::TRIM_INTERVAL) => {}
                _ = trimmer.shutdown.wait() => break,
            }
            trimmer.pools.trim();
        }
    });
    let access = w.access.clone();
    if let Some(log) = access.clone() {
        // The access log buffer goes to the writer at least every FLUSH_EVERY.
        let http = std::rc::Rc::clone(&http);
        monoio::spawn(async move {
            loop {
                monoio::select! {
                    _ = monoio::time::sleep(crate::access_log::FLUSH_EVERY) => {}
                    _ = http.shutdown.wait() => break,
                }
                log.flush();
            }
        });
    }
    let current = crate::context::Current::new(w);
    let on_control = std::rc::Rc::clone(&current);
    monoio::spawn(async move {
        while let Ok(cmd) = control.recv_async().await {
            match cmd {
                Control::Shutdown => {
                    http.begin_shutdown();
                    log::info!("worker {id}: shutting down (no new connections; draining)");
                }
                Control::Reload(next, ack) => {
                    let w = on_control.get().next(next);
                    on_control.set(w);
                    let _ = ack.send(());
                }
            }
        }
        // The sender is gone: the process is ending.
        http.begin_shutdown();
    });
    let _ = ready.send(Ok((
        format!(
            "worker {id}: {driver} driver{}",
            if pinned { ", pinned" } else { "" }
        ),
        addr,
    )));
    match admin {
        None => worker::run(current, listener, Surface::Public).await,
        Some(admin) => {
            let c2 = std::rc::Rc::clone(&current);
            monoio::join!(
                worker::run(current, listener, Surface::Public),
                worker::run(c2, admin, Surface::Admin)
            );
        }
    }
    // The lines of the drain's last requests.
    if let Some(a) = &access {
        a.flush();
    }
}

//! Worker threads and their lifecycle.
//!
//! [`Server::start`] builds what all workers share ([`Shared`]) and starts one thread per
//! worker — pinned to a core, running its own monoio runtime (io_uring, or the legacy epoll
//! driver where io_uring cannot be set up) with its own SO_REUSEPORT listener on one shared
//! port. [`serve`], the CLI's entry, starts a `Server` and waits for SIGTERM/SIGINT.
//! Shutdown goes over the control bus: every worker gets a `Shutdown` command, stops accepting,
//! lets in-flight requests finish within `server.shutdown_grace`, and exits; [`Server::stop`]
//! returns once all have. A second signal exits at once. SIGHUP is caught and logged (reload is
//! not available yet) so that it never ends the process.
//!
//! The control bus is one flume channel per worker: flume's async receive wakes a monoio task
//! from another thread (monoio's `sync` feature), which crossbeam's blocking channels cannot.

pub mod worker;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustls_pki_types::ServerName;

use crate::access_log::AccessLog;
use crate::cache::tiered::Tiers;
use crate::clock::Clock;
use crate::config::{Addressing, Config, Scheme};
use crate::context::Shared;
use crate::fdlimit;
use crate::handler::Surface;
use crate::http::request::Limits;
use crate::metrics::Registry;
use crate::router::Router;
use crate::s3::origins::Origins;

/// How often the origin monitor re-resolves endpoints and re-checks reachability.
pub const ORIGIN_CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// Commands sent to every worker over the control bus.
#[derive(Debug, Clone)]
pub enum Control {
    Shutdown,
}

/// `server.workers`, with 0 resolved to the number of available cores.
pub fn worker_count(config: &Config) -> usize {
    match config.server.workers {
        0 => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        n => n,
    }
}

/// What `corvid check` warns about the open-file limit: the budget `serve` would have, with the
/// soft limit raised to the hard one as `serve` does.
pub fn fd_limit_warning(config: &Config) -> Option<String> {
    let (_, hard) = fdlimit::current().ok()?;
    let workers = worker_count(config);
    fdlimit::Budget::new(config, workers, hard).warning(config, workers)
}

impl Shared {
    /// Builds the shared state: TLS configs are loaded and endpoints resolved here, at start.
    pub fn new(config: Config, clock: Clock) -> Result<Arc<Shared>, String> {
        let workers = worker_count(&config);
        let prefixes: Vec<&str> = config.buckets.iter().map(|b| b.prefix.as_str()).collect();
        let router = Router::new(&prefixes);
        let mut client_tls = Vec::with_capacity(config.buckets.len());
        for b in &config.buckets {
            client_tls.push(match b.endpoint.scheme {
                Scheme::Http => None,
                Scheme::Https => {
                    let cfg = crate::s3::tls::client_config(
                        b.ca_file.as_deref(),
                        crate::s3::tls::ALPN_HTTP1,
                    )
                    .map_err(|e| format!("buckets.{}: ca_file: {e}", b.name))?;
                    let host = match b.addressing {
                        Addressing::Path => b.endpoint.host.clone(),
                        Addressing::Virtual => format!("{}.{}", b.bucket, b.endpoint.host),
                    };
                    let name = ServerName::try_from(host.clone())
                        .map_err(|e| format!("buckets.{}: endpoint host {host:?}: {e}", b.name))?;
                    Some((cfg, name))
                }
            });
        }
        let server_tls = match &config.server.tls {
            None => None,
            Some(t) => Some(
                crate::s3::tls::server_config(&t.cert, &t.key)
                    .map_err(|e| format!("server.tls: {e}"))?,
            ),
        };
        let origins = Origins::new(config.buckets.iter().map(|b| &b.endpoint));
        origins.refresh_all();
        for (i, b) in config.buckets.iter().enumerate() {
            if let Some(e) = origins.get(i).last_error() {
                log::warn!(
                    "bucket {}: origin {} not reachable yet: {e}",
                    b.name,
                    b.endpoint.authority()
                );
            }
        }
        let metrics = Registry::new(
            config.buckets.iter().map(|b| b.name.clone()).collect(),
            workers,
        );
        let limits = Limits {
            max_request_line: config.server.max_request_line,
            max_header_bytes: config.server.max_header_bytes,
            max_headers: config.server.max_headers,
        };
        let instance_tag = (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ (std::process::id() as u64).rotate_left(32)) as u32;
        // The config parsed and checked the URL; this builds the options from it once (the TLS
        // config of a rediss:// Redis included) and checks them, so that a bad one is a
        // start-up error rather than a tier silently disabled per worker.
        let redis = match &config.cache.redis {
            None => None,
            Some(r) => {
                let opts = crate::context::redis_options(r)?;
                opts.check().map_err(|e| format!("cache.redis: {e}"))?;
                Some(opts)
            }
        };
        // The tiers count entries and bytes per bucket (for the admin stats).
        let tiers = Tiers::with_clock(
            &config.cache,
            crate::cache::stats::Buckets::new(config.buckets.iter().map(|b| b.name.clone())),
            clock.clone(),
        )?;
        let access_log = match &config.log.access {
            None => None,
            Some(sink) => Some(AccessLog::start(sink, config.log.sample_ppm)?),
        };
        let metrics = match &access_log {
            Some(a) => metrics.with_access_log(Arc::clone(&a.dropped)),
            None => metrics,
        };
        // One bounded first fetch per bucket with a credentials source; a failure leaves that
        // bucket not ready (503) and the refresh thread retrying.
        let credentials = crate::credentials::cells_for(&config);
        let metrics = metrics.with_credentials(
            credentials
                .iter()
                .map(|c| c.source.map(|_| Arc::clone(&c.counts)))
                .collect(),
        );
        let nofile = fdlimit::current().map_or(1024, |(soft, _)| soft);
        let fd_budget = fdlimit::Budget::new(&config, workers, nofile);
        let verifier = config
            .jwt
            .as_ref()
            .map(crate::auth::Verifier::new)
            .transpose()?;
        Ok(Arc::new(Shared {
            fd_budget,
            verifier,
            tiers,
            config,
            router,
            limits,
            origins,
            client_tls,
            server_tls,
            redis,
            metrics,
            shutting_down: AtomicBool::new(false),
            workers,
            started: Instant::now(),
            instance_tag,
            clock,
            access_log,
            credentials,
        }))
    }
}

/// A running proxy: the shared state, the worker threads (all listening on one address) and
/// the origin monitor. [`Server::start`] returns once every worker listens; [`Server::stop`]
/// (or dropping the value) shuts the workers down over the control bus and joins them.
///
/// The CLI drives it from [`serve`]; tests use it to run corvid in-process (pre-filling
/// [`Shared::tiers`], reaching the workers through [`Server::local_addr`]).
pub struct Server {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    controls: Vec<flume::Sender<Control>>,
    handles: Vec<JoinHandle<()>>,
    stop_monitor: Arc<AtomicBool>,
    /// The `corvid-credentials` thread, when a bucket has a credentials source.
    refresher: Option<crate::credentials::refresh::Refresher>,
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
        let shared = Shared::new(config, clock)?;
        let stop_monitor = Arc::new(AtomicBool::new(false));
        shared
            .origins
            .spawn_monitor(ORIGIN_CHECK_INTERVAL, Arc::clone(&stop_monitor));
        let refresher = crate::credentials::refresh::Refresher::start(&shared.credentials)?;
        let mut server = Server {
            refresher,
            local_addr: shared.config.server.listen,
            shared,
            controls: Vec::new(),
            handles: Vec::new(),
            stop_monitor,
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
            None => Ok(server),
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

    /// The state every worker shares (config, cache tiers, metrics).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
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
        self.stop_monitor.store(true, Ordering::Relaxed);
        if let Some(mut r) = self.refresher.take() {
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
pub fn serve(config: Config) -> Result<(), String> {
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
    let server = Server::start(config)?;
    let shared = server.shared();
    if let Some(w) = shared.fd_budget.warning(&shared.config, shared.workers) {
        log::warn!("{w}");
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
    if let Some(sig) = next_stop(&mut signals, access.as_ref()) {
        log::info!(
            "signal {sig} received: shutting down (grace {:?})",
            shared.config.server.shutdown_grace
        );
    }
    // A second signal during the drain exits at once.
    std::thread::spawn(move || {
        if next_stop(&mut signals, access.as_ref()).is_some() {
            log::warn!("second signal: exiting without waiting for connections");
            std::process::exit(1);
        }
    });
    server.stop();
    log::info!("shutdown complete");
    Ok(())
}

/// Waits for the next stop signal (SIGTERM/SIGINT); SIGHUPs on the way are logged and otherwise
/// ignored until reload exists; SIGUSR1 reopens the access log file (logrotate).
fn next_stop(
    signals: &mut signal_hook::iterator::Signals,
    access: Option<&Arc<AccessLog>>,
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
            log::warn!(
                "SIGHUP received: configuration reload is not available in this version; \
                 still serving with the running configuration"
            );
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
    if id == 0 {
        worker::spawn_purge_subscriber(&w);
    }
    let sweeper = std::rc::Rc::clone(&w);
    monoio::spawn(async move { sweeper.http.sweep().await });
    if w.access.is_some() {
        // The access log buffer goes to the writer at least every FLUSH_EVERY.
        let flusher = std::rc::Rc::clone(&w);
        monoio::spawn(async move {
            loop {
                monoio::select! {
                    _ = monoio::time::sleep(crate::access_log::FLUSH_EVERY) => {}
                    _ = flusher.http.shutdown.wait() => break,
                }
                if let Some(a) = &flusher.access {
                    a.flush();
                }
            }
        });
    }
    let last = std::rc::Rc::clone(&w);
    let w2 = std::rc::Rc::clone(&w);
    monoio::spawn(async move {
        while let Ok(cmd) = control.recv_async().await {
            match cmd {
                Control::Shutdown => w2.http.begin_shutdown(),
            }
        }
        // The sender is gone: the process is ending.
        w2.http.begin_shutdown();
    });
    let _ = ready.send(Ok((
        format!(
            "worker {id}: {driver} driver{}",
            if pinned { ", pinned" } else { "" }
        ),
        addr,
    )));
    match admin {
        None => worker::run(w, listener, Surface::Public).await,
        Some(admin) => {
            let w2 = std::rc::Rc::clone(&w);
            monoio::join!(
                worker::run(w, listener, Surface::Public),
                worker::run(w2, admin, Surface::Admin)
            );
        }
    }
    // The lines of the drain's last requests.
    if let Some(a) = &last.access {
        a.flush();
    }
}

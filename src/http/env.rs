//! What the connections of one worker share, whatever application they serve: timeouts and
//! limits, the cached `Date` header, request ids, the shutdown signal, the idle-connection
//! registry and the recycled connection memory (buffers, request futures, vectored-write
//! holders).
//!
//! It lives in the worker's thread (one per worker, shared by its connection tasks through the
//! worker's `Rc`), so nothing in it needs a lock.

use std::cell::{Cell, RefCell};
use std::time::Duration;

use monoio::time::Instant;

use crate::config::ServerConfig;
use crate::http::idle::IdleConns;
use crate::http::message::RequestId;
use crate::http::pool::Pools;
use crate::http::request::Limits;
use crate::http::response::DateCache;
use crate::http::vectored::HeadBodies;
use crate::signal::LocalSignal;

/// The sweep that times idle connections out runs at most this far apart.
const MAX_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

pub struct ConnEnv {
    /// The first request head must arrive within this (and a begun head always).
    pub header_timeout: Duration,
    /// Keep-alive connections idle longer are closed.
    pub idle_timeout: Duration,
    /// Every response write must progress within this.
    pub send_timeout: Duration,
    pub limits: Limits,
    pub date: RefCell<DateCache>,
    /// Fired when shutdown begins: stop accepting, close idle connections.
    pub shutdown: LocalSignal,
    /// Connections waiting for a request: closed oldest first when room is needed, when they
    /// waited too long, and the keep-alive ones at shutdown.
    pub idle: IdleConns,
    pub pools: Pools,
    /// The vectored-write holders answers from cache reuse (`http::writer`).
    pub head_bodies: HeadBodies,
    instance_tag: u32,
    worker: u16,
    next_request: Cell<u64>,
}

impl ConnEnv {
    pub fn new(server: &ServerConfig, limits: Limits, instance_tag: u32, worker: u16) -> ConnEnv {
        ConnEnv {
            header_timeout: server.header_timeout,
            idle_timeout: server.idle_timeout,
            send_timeout: server.send_timeout,
            limits,
            date: RefCell::new(DateCache::default()),
            shutdown: LocalSignal::default(),
            idle: IdleConns::default(),
            pools: Pools::default(),
            head_bodies: HeadBodies::default(),
            instance_tag,
            worker,
            next_request: Cell::new(0),
        }
    }

    /// A fresh request id: process tag, worker, counter — unique across workers and restarts.
    pub fn next_request_id(&self) -> RequestId {
        let n = self.next_request.get();
        self.next_request.set(n + 1);
        RequestId::generate(self.instance_tag, self.worker, n)
    }

    /// Shutdown begins: accept loops stop, idle keep-alive connections close, busy ones answer
    /// with `Connection: close`.
    pub fn begin_shutdown(&self) {
        self.shutdown.fire();
        self.idle.shutdown();
    }

    /// How often [`Self::sweep`] looks for idle connections past their deadline: a quarter of
    /// the shorter timeout (so a timeout fires at most 25 % late), between 10 ms and 1 s.
    pub fn sweep_interval(&self) -> Duration {
        (self.header_timeout.min(self.idle_timeout) / 4)
            .clamp(Duration::from_millis(10), MAX_SWEEP_INTERVAL)
    }

    /// Closes idle connections past their deadline, forever (run it as one task per worker).
    pub async fn sweep(&self) {
        let interval = self.sweep_interval();
        loop {
            monoio::time::sleep(interval).await;
            self.idle.expire(Instant::now());
        }
    }
}

//! corvid in-process on a manual clock: TTL tests advance time instead of sleeping past it.
//!
//! [`InProcess`] runs `corvid::runtime::Server` in the test process (its own monoio worker
//! threads; tokio stays in the origin's thread) with a [`Clock::manual_from_now`]. Everything
//! that decides freshness (the cache's decision, `Age`, soft purges) reads that clock;
//! timeouts, the idle sweep and the `Date` corvid writes on its own answers do not.
//!
//! **`Date` on an advanced clock.** corvid takes a response's apparent age from its `Date`
//! (RFC 9111 §4.2.3). The origin stamps the real time, so once the clock has been advanced
//! every new origin answer (a 200 or a 304) would look as old as the advance and be stale on
//! arrival. Tests that advance the clock therefore make the origin omit `Date` for their keys,
//! from the first request on: [`origin_and_inprocess`] does it for its bucket
//! (`origin.set_bucket_headers(bucket, Overrides::new().remove("date"))`); with another
//! origin use [`Origin::set_bucket_headers`] or, per key, [`Origin::set_headers`]. Without
//! `Date` corvid also adds no apparent age, so `Age` follows the clock exactly.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use corvid::clock::Clock;
use corvid::config::Config;
use corvid::runtime::Server;

use super::{one_bucket_toml, Origin, Overrides};

/// A corvid running in this process on a manual clock; stopped on drop.
pub struct InProcess {
    /// Declared first: stopped (its workers joined) before the directory goes.
    server: Option<Server>,
    clock: Clock,
    addr: SocketAddr,
    config: String,
    dir: tempfile::TempDir,
}

impl InProcess {
    /// Parses `config_toml` (relative paths resolve against a fresh temp dir, as for
    /// [`super::Corvid`]; `${ENV}` from the process environment) and starts corvid on a
    /// manual clock reading the current time. Returns once every worker listens. A
    /// `[server] listen` port of 0 picks a free one ([`InProcess::addr`] is the bound address);
    /// [`server_toml`]`(0)` is the usual block.
    pub fn start(config_toml: &str) -> InProcess {
        InProcess::start_with_clock(config_toml, Clock::manual_from_now())
    }

    /// Like [`InProcess::start`] with a given clock (e.g. one shared with another instance).
    pub fn start_with_clock(config_toml: &str, clock: Clock) -> InProcess {
        let dir = tempfile::Builder::new()
            .prefix("corvid-inproc-")
            .tempdir()
            .expect("corvid temp dir");
        let env = |name: &str| std::env::var(name).ok();
        let config = Config::from_toml_str_in(config_toml, &env, dir.path())
            .unwrap_or_else(|e| panic!("test config rejected: {e}\n--- config ---\n{config_toml}"));
        let server = Server::start_with(config, clock.clone())
            .unwrap_or_else(|e| panic!("corvid did not start: {e}\n--- config ---\n{config_toml}"));
        InProcess {
            addr: server.local_addr(),
            server: Some(server),
            clock,
            config: config_toml.to_owned(),
            dir,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The clock corvid decides freshness by (clones share its time).
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Moves corvid's clock forward by `d`; requests sent after this returns see the new time.
    pub fn advance(&self, d: Duration) {
        self.clock.advance(d);
    }

    /// The running server (its shared state: cache tiers, metrics).
    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("running until dropped")
    }

    /// The config text it was started with.
    pub fn config(&self) -> &str {
        &self.config
    }

    /// Scratch directory relative config paths resolve against, removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Shuts down (in-flight requests finish within `server.shutdown_grace`) and waits for
    /// every worker to exit.
    pub fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.stop();
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop();
        }
    }
}

/// [`super::origin_and_corvid`] in-process: an origin with bucket `bucket` that sends no `Date`
/// for its objects (see the module doc), and an [`InProcess`] corvid on a manual clock serving
/// it under `/{bucket}`; `bucket_extra` goes inside the bucket block, `extra_toml` after it.
pub fn origin_and_inprocess(
    bucket: &str,
    bucket_extra: &str,
    extra_toml: &str,
) -> (Origin, InProcess) {
    let origin = Origin::start();
    origin.create_bucket(bucket);
    origin.set_bucket_headers(bucket, Overrides::new().remove("date"));
    let toml = one_bucket_toml(0, &origin, bucket, bucket_extra, extra_toml);
    (origin, InProcess::start(&toml))
}

//! What the tier tests (tests/purge.rs, tests/redis_tier.rs) share: a real `redis-server`
//! (the helper tests/it uses too), free loopback ports, and the monoio runtime each test drives
//! the tiers in, as a worker would.

use std::future::Future;

#[path = "../it/common/port.rs"]
pub mod port;
#[path = "../it/common/redis_server.rs"]
pub mod redis_server;

/// Runs `f` to completion on a fresh monoio runtime (timers enabled), as a worker thread does.
pub fn run<F: Future>(f: F) -> F::Output {
    monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .enable_timer()
        .build()
        .expect("monoio runtime")
        .block_on(f)
}

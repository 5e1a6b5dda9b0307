//! A config generation: the state a request runs with, where it is defined and where it is
//! built, checked and planned.
//!
//! A generation is [`Shared`] (one per process and config, behind an `Arc`) and one [`Worker`]
//! per worker thread (behind an `Rc`). A config reload makes a new generation of both: what
//! lasts as long as the process (tiers, metrics, connections, the cache front, buffers) is
//! carried over by `Arc`/`Rc`, what the config decides is built anew. A worker thread's
//! [`Current`] holds its running generation; each request takes the one current when it starts
//! and keeps it to the end.
//!
//! One job per file, each importing only the ones listed before it (no import loop):
//! - `reload.rs` ([`reload`]): what a new config file may change while running (pure planning)
//!   and the outcome an operator is told;
//! - `shared.rs`: the definition of [`Shared`];
//! - `worker.rs`: a thread's side of a generation — [`Worker`], [`WorkerBucket`], [`Current`],
//!   the buffers lent per request ([`Scratch`]);
//! - `build.rs`: building the first generation ([`Shared::new`]) and the next one
//!   ([`Shared::reloaded`]), the Redis options ([`redis_options`]);
//! - `check.rs`: `corvid check` ([`check()`]), the same builders without starting anything.
//!
//! `runtime` owns the threads, the control bus, signals and the reload thread, and calls into
//! this module to build, plan and switch generations; the request path (`handler`, `object`,
//! `admin`) only reads them. This module imports neither.

mod build;
mod check;
pub mod reload;
mod shared;
mod worker;

pub use build::redis_options;
pub use check::check;
pub use shared::{ReloadRequests, Shared};
pub use worker::{Current, Scratch, Worker, WorkerBucket, MAX_SPARE_BUF};

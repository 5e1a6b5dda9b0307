//! corvid integration tests: the one test binary (`cargo test --test it`).
//! Keeping a single binary avoids re-linking the heavy dev-dependency tree
//! (tokio, hyper, s3s) once per test file.
#![allow(
    clippy::disallowed_methods,
    reason = "tests run on the harness's threads, not on a worker: they may block"
)]
#![allow(clippy::print_stderr, reason = "tests report diagnostics on stderr")]

mod access_log;
mod admin;
mod auth;
mod cache;
mod common;
mod credentials;
mod disk;
mod disk_full;
mod fleet;
mod harness_smoke;
mod hostile;
#[path = "../jwt_support/mod.rs"]
mod jwt_support;
mod lifecycle;
mod limits;
mod metrics;
mod negative;
mod origin_errors;
mod passthrough;
mod pool;
mod redis;
mod redis_cluster;
mod redis_tls;
mod reload;
mod replace;
mod rfc9111;
mod shutdown;
mod slices;
mod slices_clients;
mod streaming;
mod tls;
mod warm;

//! corvid integration tests: the one test binary (`cargo test --test it`).
//! Keeping a single binary avoids re-linking the heavy dev-dependency tree
//! (tokio, hyper, s3s) once per test file.

mod admin;
mod auth;
mod cache;
mod common;
mod disk;
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
mod rfc9111;
mod shutdown;
mod streaming;
mod tls;

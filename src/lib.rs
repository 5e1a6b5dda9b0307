//! corvid: a thread-per-core caching proxy for S3-compatible object storage.
//!
//! One request, end to end: [`runtime`] workers accept connections; [`http::conn`] reads and
//! frames requests; [`handler`] routes them ([`router`]) to the internal endpoints or to
//! [`object`], which answers from the cache ([`cache`]) or signs ([`s3::sigv4`]) and sends
//! ([`s3::client`]) the upstream request and streams the answer back, with the AWS credentials
//! [`credentials`] fetches and renews off the workers. A request runs with one config
//! generation, [`context`]: defined, built, checked (`corvid check`) and planned on reload
//! ([`context::reload`]: what a new config file changes while running) there, run and switched
//! by [`runtime`]. [`error`] is the one error type; [`config`] the TOML contract.

pub mod access_log;
pub mod admin;
pub mod auth;
pub mod cache;
pub mod clock;
pub mod config;
pub mod context;
pub mod cors;
pub mod credentials;
pub mod error;
pub mod fdlimit;
pub mod fleet;
pub mod handler;
pub mod http;
pub mod metrics;
pub mod net;
pub mod object;
pub mod request_log;
pub mod router;
pub mod runtime;
pub mod s3;
pub mod signal;
pub mod warm;

pub use error::{Error, Kind, Result, Side};

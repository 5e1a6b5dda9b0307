//! corvid: a thread-per-core caching proxy for S3-compatible object storage.
//!
//! See `ARCHITECTURE` notes in the README and each module's docs for what it owns.

pub mod config;
pub mod error;
pub mod http;
pub mod router;
pub mod s3;

pub use error::{Error, Kind, Result, Side};

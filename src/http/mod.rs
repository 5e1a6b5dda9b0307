//! HTTP/1.1: sans-IO request parsing and framing rules ([`request`]), response heads
//! ([`response`]), the chunked codec ([`chunked`]), and the IO edge that drives them over a
//! socket ([`conn`], [`respond`]).

pub mod chunked;
pub mod conditional;
pub mod conn;
mod headers;
pub mod range;
pub mod request;
pub mod respond;
pub mod response;
pub mod vectored;

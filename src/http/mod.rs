//! HTTP/1.1: sans-IO request parsing and framing rules ([`request`]), response heads
//! ([`response`]), the chunked codec ([`chunked`]), and the IO edge that drives them over a
//! socket ([`conn`], [`writer`]: the one place answers are written, [`counted`]) for any application ([`conn::App`]), with what the
//! connections of one worker share ([`mod@env`]): idle-connection bookkeeping ([`idle`]) and
//! recycled buffers and request futures ([`pool`]).

pub mod cache_control;
pub mod chunked;
pub mod conditional;
pub mod conn;
pub mod counted;
pub mod date;
pub mod env;
mod headers;
pub mod idle;
pub mod message;
pub mod pool;
pub mod range;
pub mod request;
pub mod response;
pub mod vectored;
pub mod writer;

//! HTTP/1.1: sans-IO request parsing and framing rules, response heads, chunked codec, and the
//! connection loop that drives them over a socket.

pub mod chunked;
mod headers;
pub mod request;
pub mod response;

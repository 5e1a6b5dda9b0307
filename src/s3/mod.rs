//! S3 origin access: SigV4 signing ([`sigv4`]), upstream request building ([`request`]), the
//! pooled HTTP/1.1 client ([`client`]), TLS ([`tls`]), origin address/reachability
//! ([`origins`]), the meaning of S3 error answers ([`errors`]) and ListObjectsV2 pages read
//! for cache warming ([`listing`]).

pub mod client;
pub mod errors;
pub mod listing;
pub mod origins;
pub mod request;
pub mod sigv4;
pub mod tls;

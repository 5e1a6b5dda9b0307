//! S3 origin access: SigV4 signing, upstream request building, the pooled HTTP/1.1 client.

pub mod sigv4;

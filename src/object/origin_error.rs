//! An origin's error answer, read and mapped for the client.
//!
//! Every origin answer the request path does not use (a status other than 200/206/304; for a
//! fill or a revalidation, anything but 200/304) goes to [`read_and_map`]: a small error body
//! is read — at most [`MAX_ERROR_BODY`] bytes, within [`ERROR_BODY_DEADLINE`] — so that the
//! connection returns to the pool, then parsed and mapped by [`crate::s3::errors`], whose
//! module doc has the table of what each status becomes. Reading never fails the request:
//! a body too large, too slow or cut short is not used — the answer then carries no S3 error
//! code, and the connection is closed instead of reused.

use std::time::Duration;

use monoio::time::Instant;

use crate::context::Worker;
use crate::error::Error;
use crate::http::response::UpstreamHead;
use crate::s3::client::Body;
use crate::s3::errors::{self, Configured, OriginHeaders};

/// An error body up to this size is read (and the connection reused); a larger one is not.
pub const MAX_ERROR_BODY: usize = 64 * 1024;
/// The longest an error body may take to arrive, whole (the bucket's `read_timeout` when
/// shorter). Past it the answer goes out without the S3 error code.
pub const ERROR_BODY_DEADLINE: Duration = Duration::from_secs(2);
/// First buffer for a body of unknown length (S3's error bodies are a few hundred bytes).
const INITIAL_BUFFER: usize = 4096;

/// The client's error for the origin answer `head`, reading its (small) body first.
pub async fn read_and_map(w: &Worker, bucket: usize, head: &UpstreamHead, body: Body) -> Error {
    let cfg = &w.shared.config.buckets[bucket];
    let deadline = Instant::now() + cfg.read_timeout.min(ERROR_BODY_DEADLINE);
    let parsed = read_small(body, MAX_ERROR_BODY, deadline)
        .await
        .filter(|bytes| !bytes.is_empty())
        .map(|bytes| errors::parse(&bytes));
    let configured = Configured {
        bucket: &cfg.bucket,
        region: &cfg.region,
    };
    let e = errors::origin_error(
        head.status,
        parsed.as_ref(),
        &OriginHeaders::of(head),
        &configured,
    );
    // An origin's 416 names the object's length (`bytes */len`): the client's 416 does too.
    let complete = head.header("content-range");
    match complete.and_then(crate::http::range::content_range_complete) {
        Some(len) if head.status == 416 => e.with_complete_length(len),
        _ => e,
    }
}

/// Reads `body` whole when it is at most `limit` bytes and arrives by `deadline`; reading it
/// to its end returns its connection to the pool. `None` when it was not read whole: announced
/// or grown larger than `limit`, late, or cut short by an error — then the connection closes
/// when the body is dropped here.
async fn read_small(mut body: Body, limit: usize, deadline: Instant) -> Option<Vec<u8>> {
    if body.content_length().is_some_and(|n| n > limit as u64) {
        return None;
    }
    let first = body
        .content_length()
        .map_or(INITIAL_BUFFER, |n| n as usize)
        .clamp(1, limit);
    let mut buf = Vec::with_capacity(first);
    while !body.is_done() {
        if buf.len() == buf.capacity() {
            if buf.len() >= limit {
                log::debug!("origin error body: larger than {limit} bytes, not read");
                return None;
            }
            buf.reserve_exact(buf.len().min(limit - buf.len()));
        }
        match monoio::time::timeout_at(deadline, body.read_into(buf)).await {
            Ok((Ok(n), b)) => {
                buf = b;
                if n == 0 {
                    break;
                }
            }
            Ok((Err(e), _)) => {
                log::debug!("origin error body: {e}");
                return None;
            }
            Err(_) => {
                log::debug!("origin error body: not complete in time");
                return None;
            }
        }
    }
    Some(buf)
}

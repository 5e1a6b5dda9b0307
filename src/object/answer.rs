//! Answering from a cached object: client conditionals (304/412), ranges (206/416), HEAD,
//! and otherwise the whole body, written with the head in one vectored write and never
//! copied. The head of every answer that comes from (or goes into) the cache is written here.

use monoio::io::AsyncWriteRent;

use super::exchange::{Exchange, XCache};
use super::freshness;
use crate::cache::entry::{CachedObject, Meta};
use crate::cache::tiered::Layer;
use crate::error::{Error, Kind};
use crate::http::conditional::{self, Conditionals, Precondition};
use crate::http::conn::{Request, Sent};
use crate::http::range::{self, RangeDecision};
use crate::http::writer::DateField;

/// Answers from a cached object: client conditionals (304/412), ranges (206/416), HEAD, and
/// otherwise the whole body — written together with the head in one vectored write, never
/// copied.
pub async fn serve_cached<S: AsyncWriteRent>(
    x: &mut Exchange<'_, '_, '_, S>,
    obj: &CachedObject,
    xcache: XCache,
    layer: Option<Layer>,
) -> Result<Sent, Error> {
    let req = x.req;
    let len = obj.body_len() as u64;
    let (status, body) = status_and_range(req, obj.meta(), len)?;
    write_head(x, status, obj.meta(), xcache, layer, body, len);
    let send_body = body.filter(|(s, e)| !req.is_head() && e > s);
    if let (Some((start, end)), Some(layer)) = (send_body, layer) {
        // Bytes served from cache (`corvid_cache_hit_bytes_total`, stats `bytes_served`):
        // one relaxed add in this worker's slot, nothing allocated.
        x.w.metrics().cache_hit_bytes(x.bucket, layer, end - start);
    }
    let result = match send_body {
        None => x.answer.flush().await,
        Some((start, end)) => {
            let body = obj.send_body(start as usize..end as usize);
            x.answer.send_with_head(body).await
        }
    };
    Ok(Sent {
        status,
        abort: result.is_err(),
    })
}

/// What to answer from a stored object of `len` bytes: the client's conditionals (412, 304)
/// and its range (206 with `start..end`, 416), else 200 with the whole body. The body range is
/// `None` for a 304.
pub fn status_and_range(
    req: &Request<'_>,
    meta: &Meta,
    len: u64,
) -> Result<(u16, Option<(u64, u64)>), Error> {
    match client_precondition(req, meta) {
        Precondition::Failed => Err(Error::client(
            Kind::PreconditionFailed,
            "a precondition of the request failed",
        )),
        Precondition::NotModified => Ok((304, None)),
        Precondition::Proceed => {
            // The stored validators are looked up (and rendered) only for an `If-Range`.
            let range = req
                .header("range")
                .filter(|_| match req.header("if-range") {
                    None => true,
                    if_range => range::if_range_allows(
                        if_range,
                        meta.etag().as_deref(),
                        meta.last_modified().as_deref(),
                    ),
                });
            match range::evaluate(range, len) {
                RangeDecision::Full => Ok((200, Some((0, len)))),
                RangeDecision::Partial { start, end } => Ok((206, Some((start, end + 1)))),
                RangeDecision::Unsatisfiable => Err(Error::client(
                    Kind::RangeNotSatisfiable,
                    format!("the object has {len} bytes"),
                )
                .with_complete_length(len)),
            }
        }
    }
}

/// The whole head of an answer from a stored object of `len` bytes ([`write_object_head`] and
/// the length fields of `body`, the byte range sent), ended.
pub fn write_head<S>(
    x: &mut Exchange<'_, '_, '_, S>,
    status: u16,
    meta: &Meta,
    xcache: XCache,
    layer: Option<Layer>,
    body: Option<(u64, u64)>,
    len: u64,
) {
    write_object_head(x, status, meta, xcache, layer);
    if let Some((start, end)) = body {
        if status == 206 {
            let mut buf = [0u8; 72];
            let cr = format_content_range(&mut buf, start, end - 1, len);
            x.answer.header("Content-Range", cr);
        }
        x.answer.header_u64("Content-Length", end - start);
    }
    x.answer.end_head();
}

/// The head lines shared by every answer that comes from (or goes into) the cache: status,
/// the stored origin headers (those the client overrides replaced: [`super::overrides`]),
/// `Accept-Ranges`, `Age`, `X-Cache`, `X-Cache-Layer`, CORS.
/// The caller adds the length headers and ends the head.
pub fn write_object_head<S>(
    x: &mut Exchange<'_, '_, '_, S>,
    status: u16,
    meta: &Meta,
    xcache: XCache,
    layer: Option<Layer>,
) {
    let a = &mut *x.answer;
    // The stored response's Date is in the block (see `cache::entry`).
    a.start(status, &x.req.id, x.req.close, DateField::Elsewhere);
    // The common case, a request without `response-*` overrides, renders the block as is.
    if x.overrides.is_empty() {
        a.prepared(|head| meta.write_header_block(head));
    } else {
        let replaced = x.overrides.fields();
        a.prepared(|head| meta.write_header_block_replacing(head, replaced));
    }
    a.header("Accept-Ranges", b"bytes");
    // Age (RFC 9111 §5.1): on every answer from cache; on a miss only when the origin's answer
    // already had one (it came through another cache), which the age origin carries.
    let age = freshness::current_age_secs(&meta.freshness(), x.w.clock().now_ms());
    if xcache != XCache::Miss || age > 0 {
        a.header_u64("Age", age);
    }
    a.header("X-Cache", xcache.as_bytes());
    if let Some(l) = layer {
        a.header("X-Cache-Layer", l.name().as_bytes());
    }
    x.note_cache(xcache, layer.map(Layer::name));
    x.write_cors();
}

/// The request's preconditions evaluated against `meta`. The stored validators are looked up
/// only when the request carries conditionals: most carry none.
pub fn client_precondition(req: &Request<'_>, meta: &Meta) -> Precondition {
    precondition_for(req, || (meta.etag(), meta.last_modified()))
}

/// The request's preconditions evaluated against a representation's validators (a stored
/// entry's, or those of an answer a fleet member relayed), which `validators` gives only when
/// the request has a conditional: looking them up in an entry costs a hit ~1,400 instructions.
pub fn precondition_for<V: std::ops::Deref<Target = str>>(
    req: &Request<'_>,
    validators: impl FnOnce() -> (Option<V>, Option<V>),
) -> Precondition {
    let c = Conditionals {
        if_match: req.header("if-match"),
        if_none_match: req.header("if-none-match"),
        if_modified_since: req.header("if-modified-since"),
        if_unmodified_since: req.header("if-unmodified-since"),
    };
    if c.is_empty() {
        return Precondition::Proceed;
    }
    let (etag, last_modified) = validators();
    conditional::evaluate(&c, etag.as_deref(), last_modified.as_deref())
}

/// `bytes first-last/len` into `buf`, without allocating.
fn format_content_range(buf: &mut [u8; 72], first: u64, last: u64, len: u64) -> &[u8] {
    use std::io::Write;
    let mut c = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(c, "bytes {first}-{last}/{len}");
    let n = c.position() as usize;
    &buf[..n]
}

//! The peer client of one worker: a request for a key another member owns, sent to that member
//! over pooled HTTP/1.1 (`s3::client::Pool`, as for an origin: keep-alive, the dead-connection
//! check and the one retry), signed with the peer header.
//!
//! The request is the one the origin would get, in corvid's own terms: the same method, the
//! bucket's prefix and the key (encoded once, `/` kept), the forwarded query (`versionId`; a
//! client's `response-*` overrides are applied by the member that answers the client) and the
//! forwarded headers (`Range`, `If-*`). The owner routes it like a
//! client's request, so members must share their bucket configuration (the same prefixes and
//! names: one ConfigMap in Kubernetes).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use super::{Fleet, Member};
use crate::error::Error;
use crate::http::response::UpstreamHead;
use crate::s3::client::{Body, Pool, Timeouts};
use crate::s3::sigv4::{canonical_object_path, canonical_query};

/// Sent with a GET whose answer the asking member would rather make from slices itself: when
/// the owner holds the object as slices, it answers `200` with the object's stored headers,
/// [`SLICED`] and no body (see `object::sliced`), and the asking member fetches each slice
/// from that slice's owner.
pub const WANT: &str = "x-corvid-want";
/// The owner's answer to [`WANT`]: the sliced object's length.
pub const SLICED: &str = "x-corvid-sliced";
/// Sent with a request for a run of slices (slice-aligned `Range`, `If-Match` the version's
/// ETag): `<object length> <stored at ms> <expires at ms>`, what the slices' owner needs to cut
/// and store them without the object's entry.
pub const SLICE: &str = "x-corvid-slice";

/// What a slice request tells the slice's owner ([`SLICE`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SliceOf {
    pub len: u64,
    pub stored_at_ms: u64,
    pub expires_at_ms: u64,
}

impl SliceOf {
    /// Parses a received [`SLICE`] value.
    pub fn parse(value: &[u8]) -> Option<SliceOf> {
        let text = std::str::from_utf8(value).ok()?;
        let mut it = text.split(' ').map(|n| n.parse::<u64>().ok());
        match (it.next()??, it.next()??, it.next()??, it.next()) {
            (len, stored_at_ms, expires_at_ms, None) if len > 0 => Some(SliceOf {
                len,
                stored_at_ms,
                expires_at_ms,
            }),
            _ => None,
        }
    }
}

/// A member is on the same network: a connection that takes longer than this is a dead one.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A member's answer body up to this size is read whole before the client sees a byte of it,
/// so that a member that dies mid-answer sends the request to the origin instead of cutting the
/// client's answer short. Larger bodies stream (a cut is then a cut, as from an origin).
pub const BUFFERED_ANSWER: u64 = 1 << 20;
/// Idle connections kept per member, and for how long.
const MAX_IDLE: usize = 64;
const IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// One worker's connection pools to the other members.
#[derive(Default)]
pub struct Peers {
    /// By member, with the address state the pool was made for (a member that left and came
    /// back gets a new pool).
    pools: RefCell<HashMap<Arc<str>, Rc<Pool>>>,
}

impl Peers {
    fn pool(&self, m: &Member) -> Rc<Pool> {
        let mut pools = self.pools.borrow_mut();
        let pool = pools
            .entry(Arc::clone(&m.name))
            .or_insert_with(|| Pool::new(Arc::clone(&m.addrs), None, MAX_IDLE, IDLE_TIMEOUT));
        if !pool.serves(&m.addrs) {
            *pool = Pool::new(Arc::clone(&m.addrs), None, MAX_IDLE, IDLE_TIMEOUT);
        }
        Rc::clone(pool)
    }
}

/// What to ask a peer for.
pub struct PeerRequest<'a> {
    pub is_head: bool,
    /// The bucket's prefix (`/assets`).
    pub prefix: &'a str,
    /// The decoded object key.
    pub key: &'a str,
    pub query: &'a [(&'a str, &'a str)],
    /// Forwarded headers (lowercase name, value).
    pub headers: &'a [(&'static str, &'a str)],
    /// The body's read timeout (the bucket's `read_timeout`).
    pub read_timeout: Duration,
    /// [`WANT`] an entry head rather than a sliced object's bytes.
    pub want_entry: bool,
    /// A run of slices of this object ([`SLICE`]).
    pub slice: Option<SliceOf>,
}

/// A member's timeouts: a short connect (members share a network), `cluster.peer_timeout` for
/// the answer head, `read` between body reads.
fn timeouts(fleet: &Fleet, read: Duration) -> Timeouts {
    Timeouts {
        connect: CONNECT_TIMEOUT.min(fleet.peer_timeout),
        first_byte: fleet.peer_timeout,
        read,
    }
}

/// Sends `POST target` (an admin purge, repeated for the fleet) to member `m`; its status.
pub async fn post(
    peers: &Peers,
    fleet: &Fleet,
    m: &Member,
    target: &str,
    now_secs: u64,
) -> Result<u16, Error> {
    let mut request = format!(
        "POST {target} HTTP/1.1\r\nhost: {}\r\n{}: {}\r\ncontent-length: 0\r\n\r\n",
        m.name,
        super::peer_auth::HEADER,
        fleet.sign("POST", target, now_secs)
    )
    .into_bytes();
    request.shrink_to_fit();
    let timeouts = timeouts(fleet, fleet.peer_timeout);
    let (res, _) = peers.pool(m).send(request, false, &timeouts).await;
    let (head, mut body) = res?;
    // Small JSON: read so the connection can be reused.
    if let Some(len) = body.content_length().filter(|n| *n <= BUFFERED_ANSWER) {
        body.read_all(len).await?;
    }
    Ok(head.status)
}

/// Sends `req` to member `m`; its answer head (with `peer` set) and body.
pub async fn fetch(
    peers: &Peers,
    fleet: &Fleet,
    m: &Member,
    req: &PeerRequest<'_>,
    now_secs: u64,
) -> Result<(UpstreamHead, Body), Error> {
    let method = if req.is_head { "HEAD" } else { "GET" };
    let mut target = String::with_capacity(req.prefix.len() + req.key.len() + 16);
    target.push_str(req.prefix);
    target.push_str(&canonical_object_path(None, req.key));
    if !req.query.is_empty() {
        target.push('?');
        target.push_str(&canonical_query(req.query));
    }
    let mut out = Vec::with_capacity(256 + target.len());
    let mut line = |name: &str, value: &str| {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    };
    line("host", &m.name);
    line(
        super::peer_auth::HEADER,
        &fleet.sign(method, &target, now_secs),
    );
    for (n, v) in req.headers {
        line(n, v);
    }
    if req.want_entry {
        line(WANT, "entry");
    }
    if let Some(s) = req.slice {
        line(
            SLICE,
            &format!("{} {} {}", s.len, s.stored_at_ms, s.expires_at_ms),
        );
    }
    line("user-agent", concat!("corvid/", env!("CARGO_PKG_VERSION")));
    let mut request = Vec::with_capacity(out.len() + target.len() + 32);
    request.extend_from_slice(method.as_bytes());
    request.push(b' ');
    request.extend_from_slice(target.as_bytes());
    request.extend_from_slice(b" HTTP/1.1\r\n");
    request.extend_from_slice(&out);
    request.extend_from_slice(b"\r\n");
    let timeouts = timeouts(fleet, req.read_timeout);
    let pool = peers.pool(m);
    let (res, _) = pool.send(request, req.is_head, &timeouts).await;
    let (mut head, mut body) = res?;
    head.peer = Some(Arc::clone(&m.name));
    if let Some(len) = body
        .content_length()
        .filter(|n| *n > 0 && *n <= BUFFERED_ANSWER)
    {
        let bytes = body.read_all(len).await?;
        body = Body::complete(pool, bytes);
    }
    Ok((head, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_headers_parse_only_when_whole() {
        let s = SliceOf::parse(b"1048576 10 20").unwrap();
        assert_eq!(
            (s.len, s.stored_at_ms, s.expires_at_ms),
            (1_048_576, 10, 20)
        );
        for bad in [
            &b""[..],
            b"1 2",
            b"1 2 3 4",
            b"0 1 2",
            b"a 1 2",
            b"1 2 -3",
            b"\xff",
        ] {
            assert_eq!(SliceOf::parse(bad), None, "{bad:?}");
        }
    }
}

//! Answering requests for sliced objects (`super::slices` has the rules): a response is the
//! object entry's head, then the requested bytes slice after slice, each taken from the cache,
//! from a fill in flight, or fetched from the origin (`super::slice_fill`).
//!
//! # One slice at a time, in order
//! For each slice the response needs, in order: a cached slice of this version (its ETag tag
//! and length match the object entry's) is sent uncopied; otherwise the response follows the
//! slice's fill (its own or another request's, on any worker) as it arrives. Memory per
//! response: the slices in flight it reads, each at most `cache.slice_size`.
//!
//! # Read-ahead
//! When a response begins a slice it makes sure the next `cache.slice_readahead` slices it will
//! need are cached or in flight (`slice_fill::prefetch`), so a sequential reader does not wait
//! one origin round trip per slice. Slices its own fills fetched count as fetched in the
//! access log and metrics, wherever the reader finds them.
//!
//! # One version per response
//! Every byte of a response comes from the object entry's version: slice requests carry
//! `If-Match` with its ETag, and an answer of another version (`412`, another ETag or length)
//! removes the object entry and fails every fill of the run (`slice_fill::changed`). A response that
//! has sent no body byte yet starts again on the new version ([`Served::Changed`]); one that
//! has is ended short — the client sees a truncated body, never a spliced one (as Apache
//! Traffic Server's slice plugin does).
//!
//! # `X-Cache`
//! It describes the object entry: `HIT` (found fresh), `MISS` (made by this request),
//! `REVALIDATED`, `STALE`; the access log counts the slices a response took from the cache and
//! from the origin (`slices_cached`, `slices_fetched`).

use std::ops::Range;

use bytes::Bytes;
use monoio::io::AsyncWriteRent;

use super::answer::{status_and_range, write_head, write_object_head};
use super::decide;
use super::exchange::{Exchange, Target, XCache};
use super::slice_fill;
use super::slice_fill::{
    changed, is_changed, obtain, prefetch, start_run, Fetching, Obtained, Version,
};
use super::slices;
use super::upstream::{drain_error_body, fetch_origin, stored_headers, Asked};
use crate::cache::entry::{CachedObject, Meta};
use crate::cache::inflight::{Event, Leader, Subscription};
use crate::cache::tiered::{Hit, Layer};
use crate::context::Worker;
use crate::error::{Error, Kind};
use crate::fleet::client::{SliceOf, SLICED, WANT};
use crate::http::conn::Sent;
use crate::http::response::UpstreamHead;
use crate::s3::client::Body;

/// How a sliced answer ended.
pub enum Served {
    Sent(Sent),
    /// The object changed at the origin before any body byte was sent: answer again, from the
    /// new version.
    Changed,
}

/// The object entry for an origin answer `head` (a `200` of `len` bytes, or a `206` of an
/// object of `len` bytes) when the object is to be cached as slices
/// ([`decide::storable_sliced`]).
pub fn entry_meta(w: &Worker, bucket: usize, head: &UpstreamHead, len: u64) -> Option<Meta> {
    if head.peer.is_some() {
        // A fleet member's bytes: the owner keeps the entry and its slices (`crate::fleet`);
        // its entry head is [`relayed_entry`]'s.
        return None;
    }
    storable_entry(w, bucket, head, len)
}

/// [`entry_meta`] for any answer, a fleet member's entry head included.
pub fn storable_entry(w: &Worker, bucket: usize, head: &UpstreamHead, len: u64) -> Option<Meta> {
    let cfg = &w.shared.config.cache;
    let f = decide::storable_sliced(
        head,
        len,
        w.cache.max_object_size(),
        cfg.max_sliced_object_size,
        &w.shared.policies[bucket],
        w.clock().now_ms(),
    )?;
    let meta = Meta::new(stored_headers(head), f.age_origin_ms, f.expires_at_ms);
    Some(meta.with_sliced_len(len))
}

/// Stores the object entry `meta` (no body: the bytes are in slices).
pub async fn store_entry(w: &Worker, t: &Target<'_>, meta: Meta) {
    let obj = CachedObject::new(meta, Bytes::new());
    w.cache.store(t.ckey, obj, t.generation).await;
}

/// The length of a sliced object whose owner answered with its entry head (a fleet member's
/// `200` with `x-corvid-sliced` and no body: `crate::fleet::client::WANT`).
pub fn relayed_entry(head: &UpstreamHead) -> Option<u64> {
    head.peer.as_ref()?;
    let len = head.header(SLICED)?.parse().ok()?;
    (head.status == 200 && len > 0).then_some(len)
}

/// A request whose key's owner holds the object as slices ([`relayed_entry`]): the entry is
/// made from the owner's head and stored here too (metadata only: every member can then cut
/// the object the same way), and the answer is served from slices, each fetched from its own
/// owner (`slice_fill`). `leader` is the key's fill here, whose followers find the entry.
pub async fn begin_relayed<S: AsyncWriteRent>(
    x: &mut Exchange<'_, '_, '_, S>,
    t: &Target<'_>,
    head: &UpstreamHead,
    len: u64,
    leader: Option<Leader>,
) -> Result<Sent, Error> {
    let Some(meta) = storable_entry(x.w, x.bucket, head, len) else {
        let e = Error::upstream(
            Kind::BadGateway,
            "the key's owner holds the object as slices, which are not storable here",
        );
        if let Some(l) = leader {
            l.fail(e.clone());
        }
        return Err(e);
    };
    store_entry(x.w, t, meta.clone()).await;
    if let Some(l) = leader {
        l.bypass();
    }
    answer(x, t, &meta, XCache::Miss, None)
        .await?
        .ok_or_else(changed)
}

/// A fleet member's request for a run of slices this instance owns (`crate::fleet`): the
/// slices of the version `If-Match` names, cut as `of` says, from the cache or the origin
/// (stored here, their owner), answered as a `206` of those bytes. No object entry is needed or
/// made here (the asking member has it).
pub async fn serve_run<S: AsyncWriteRent>(
    x: &mut Exchange<'_, '_, '_, S>,
    t: &Target<'_>,
    of: SliceOf,
) -> Result<Sent, Error> {
    let Some(etag) = x.req.header_str("if-match") else {
        return Err(Error::client(
            Kind::BadRequest,
            "a slice request needs If-Match with the version's ETag",
        ));
    };
    let fields = vec![("ETag".to_owned(), etag.to_owned())];
    let meta = Meta::new(fields, of.stored_at_ms, of.expires_at_ms).with_sliced_len(of.len);
    match serve(x, t, &meta, XCache::Miss, None, 0..0).await? {
        Served::Sent(sent) => Ok(sent),
        Served::Changed => Err(changed()),
    }
}

/// Whether this request is a fleet member's that wants a sliced object's entry head rather
/// than its bytes (`crate::fleet::client::WANT`).
fn wants_entry<S>(x: &Exchange<'_, '_, '_, S>) -> bool {
    x.from_peer && x.req.header(WANT) == Some(b"entry")
}

/// The first request for an object that turns out to be sliced: its origin `200` (`head`,
/// `body`) made the object entry `meta`, stored now; the body fills the first slices (as many
/// as a read-ahead window) and is then let go, and the answer is served from the slices like
/// any other. `leader` is the key's fill, whose followers are sent to the stored entry.
pub async fn begin<S: AsyncWriteRent>(
    x: &mut Exchange<'_, '_, '_, S>,
    t: &Target<'_>,
    meta: Meta,
    body: Body,
    leader: Option<Leader>,
) -> Result<Sent, Error> {
    let w = x.w;
    // The first slices are claimed before anyone can see the entry: the key's followers, sent
    // to the entry below, then join these fills instead of fetching the same slices again.
    let mut run = None;
    // A member that wants the entry head fetches the slices from their owners itself.
    let version = Version::of(w, &meta).filter(|_| !wants_entry(x));
    if let Some(v) = version {
        let leaders = slice_fill::claim_leading(w, t, &v);
        if !leaders.is_empty() {
            run = Some((v, leaders));
        }
    }
    store_entry(w, t, meta.clone()).await;
    if let Some(l) = leader {
        // Its followers look the key up again and find the entry.
        l.bypass();
    }
    let mut own = 0..0;
    match run {
        Some((v, leaders)) => {
            own = 0..leaders.len() as u64;
            start_run(w, x.bucket, t, &v, 0, leaders, Some(body));
        }
        // Nothing of it is cut here (another member owns the first slice, or wants only the
        // entry): the connection is let go now, not after the answer.
        None => drop(body),
    }
    // Changed already: the entry is gone, and this client gets an error rather than a loop.
    answer_owning(x, t, &meta, XCache::Miss, None, own)
        .await?
        .ok_or_else(changed)
}

/// [`serve`], with the object entry removed when its version turned out gone before any body
/// byte was sent: `None` then, and the caller answers as for a miss.
pub async fn answer<S: AsyncWriteRent>(
    x: &mut Exchange<'_, '_, '_, S>,
    t: &Target<'_>,
    meta: &Meta,
    xcache: XCache,
    layer: Option<Layer>,
) -> Result<Option<Sent>, Error> {
    answer_owning(x, t, meta, xcache, layer, 0..0).await
}

/// [`answer`] for a response whose own fills already fetch slices `own`.
async fn answer_owning<S: AsyncWriteRent>(
    x: &mut Exchange<'_, '_, '_, S>,
    t: &Target<'_>,
    meta: &Meta,
    xcache: XCache,
    layer: Option<Layer>,
    own: Range<u64>,
) -> Result<Option<Sent>, Error> {
    match serve(x, t, meta, xcache, layer, own).await? {
        Served::Sent(sent) => Ok(Some(sent)),
        Served::Changed => {
            x.w.cache.remove_everywhere(t.ckey).await;
            Ok(None)
        }
    }
}

/// Revalidates a stale sliced object's entry with a conditional `HEAD` (the validators of
/// `decide::validators`): a `304` that selects it refreshes the entry and its slices stay
/// (`REVALIDATED`); a `200` of the same version refreshes it too; anything of another version
/// removes it (`None`: the caller answers as for a miss, which makes the new entry); an origin
/// failure serves the stale entry within its `stale-if-error` window.
pub async fn revalidate<S: AsyncWriteRent>(
    x: &mut Exchange<'_, '_, '_, S>,
    t: &Target<'_>,
    hit: &Hit,
    stale_until_ms: Option<u64>,
) -> Result<Option<Sent>, Error> {
    let (w, bucket) = (x.w, x.bucket);
    let stale = hit.obj.meta();
    let layer = Some(hit.layer);
    let validators = decide::validators(stale);
    let headers = decide::as_headers(&validators);
    let asked = fetch_origin(w, bucket, &Asked::of(t, true, &headers)).await;
    let failure = match asked {
        Ok((head, body)) => {
            drain_error_body(body).await;
            match head.status {
                304 if decide::selects(stale, &head) => {
                    x.note_upstream(&head, XCache::Revalidated);
                    let policy = w.shared.policies[bucket];
                    let update = stored_headers(&head);
                    let now = w.clock().now_ms();
                    if let Ok(meta) =
                        decide::after_not_modified(stale, &head, &update, &policy, now)
                    {
                        let changed = meta.fields() != stale.fields();
                        let obj = CachedObject::new(meta.clone(), Bytes::new());
                        w.cache.refresh(t.ckey, obj, t.generation, changed).await;
                        return answer(x, t, &meta, XCache::Revalidated, layer).await;
                    }
                    w.cache.remove_everywhere(t.ckey).await;
                    return Ok(None);
                }
                200 => {
                    x.note_upstream(&head, XCache::Miss);
                    let len = head.header("content-length").and_then(|v| v.parse().ok());
                    let meta = len.and_then(|len| entry_meta(w, bucket, &head, len));
                    match meta {
                        Some(meta) if meta.etag() == stale.etag() => {
                            store_entry(w, t, meta.clone()).await;
                            return answer(x, t, &meta, XCache::Miss, None).await;
                        }
                        _ => {
                            w.cache.remove_everywhere(t.ckey).await;
                            return Ok(None);
                        }
                    }
                }
                // A 304 for another version.
                304 => {
                    w.metrics().revalidation_mismatch(bucket);
                    w.cache.remove_everywhere(t.ckey).await;
                    return Ok(None);
                }
                404 => {
                    w.cache.remove_everywhere(t.ckey).await;
                    return Err(Error::upstream(Kind::NotFound, "no such object"));
                }
                status => Error::upstream(
                    if status >= 500 {
                        Kind::BadGateway
                    } else {
                        Kind::OriginBadRequest
                    },
                    format!("the origin answered {status} to a revalidation"),
                ),
            }
        }
        Err(e) => e,
    };
    let stale_ok =
        failure.status() >= 500 && stale_until_ms.is_some_and(|until| w.clock().now_ms() < until);
    if !stale_ok {
        return Err(failure);
    }
    log::warn!("request {}: serving stale: {failure}", x.req.id.as_str());
    answer(x, t, stale, XCache::Stale, layer).await
}

/// Answers a request for the sliced object whose entry is `meta` (see the module docs).
pub async fn serve<S: AsyncWriteRent>(
    x: &mut Exchange<'_, '_, '_, S>,
    t: &Target<'_>,
    meta: &Meta,
    xcache: XCache,
    layer: Option<Layer>,
    own: Range<u64>,
) -> Result<Served, Error> {
    let Some(v) = Version::of(x.w, meta) else {
        return Err(Error::internal("a sliced entry without its length or ETag"));
    };
    let req = x.req;
    if wants_entry(x) {
        write_object_head(x, 200, meta, xcache, layer);
        x.answer.header_u64(SLICED, v.g.len);
        x.answer.header_u64("Content-Length", 0);
        x.answer.end_head();
        let abort = x.answer.flush().await.is_err();
        return Ok(Served::Sent(Sent { status: 200, abort }));
    }
    let (status, body) = status_and_range(req, meta, v.g.len)?;
    write_head(x, status, meta, xcache, layer, body, v.g.len);
    let bytes = match body {
        Some((start, end)) if !req.is_head() && end > start => start..end,
        _ => {
            let abort = x.answer.flush().await.is_err();
            return Ok(Served::Sent(Sent { status, abort }));
        }
    };
    let mut sent_any = false;
    let result = send_slices(x, t, meta, &v, &bytes, own, &mut sent_any).await;
    match result {
        Ok(()) => Ok(Served::Sent(Sent {
            status,
            abort: false,
        })),
        Err(SendError::Changed) if !sent_any => Ok(Served::Changed),
        Err(SendError::Changed) => {
            log::warn!(
                "request {}: the object changed at the origin while it was sent; the response \
                 is cut short",
                req.id.as_str()
            );
            Ok(Served::Sent(Sent {
                status,
                abort: true,
            }))
        }
        Err(SendError::Failed(e)) if !sent_any => Err(e),
        Err(SendError::Failed(e)) => {
            log::warn!("request {}: a slice failed: {e}", req.id.as_str());
            Ok(Served::Sent(Sent {
                status,
                abort: true,
            }))
        }
        Err(SendError::Client) => Ok(Served::Sent(Sent {
            status,
            abort: true,
        })),
    }
}

/// Why sending the slices stopped early.
enum SendError {
    /// The version changed (see [`changed`]).
    Changed,
    /// A slice could not be had (origin error, timeout).
    Failed(Error),
    /// The client stopped reading.
    Client,
}

/// Sends `bytes` of version `v` (entry `meta`), slice after slice, with the pending head
/// before the first; slices `own` are already being fetched for this response.
async fn send_slices<S: AsyncWriteRent>(
    x: &mut Exchange<'_, '_, '_, S>,
    t: &Target<'_>,
    meta: &Meta,
    v: &Version,
    bytes: &Range<u64>,
    own: Range<u64>,
    sent_any: &mut bool,
) -> Result<(), SendError> {
    let w = x.w;
    let needed = v.g.covering(bytes);
    let ahead = w.shared.config.cache.slice_readahead as u64;
    let mut asked = needed.start.max(own.end.min(needed.end));
    let mine = Fetching::default();
    mine.add(own);
    for i in needed.clone() {
        // A member's request (a run of slices) has no entry here to keep.
        if !x.from_peer {
            keep_entry(w, t, meta);
        }
        let window = slices::readahead(i, &needed, ahead, asked);
        if !window.is_empty() {
            prefetch(w, x.bucket, t, v, window.clone(), &mine);
            asked = window.end;
        }
        let part = v.g.part(i, bytes);
        let run_end = (i + 1 + ahead).min(needed.end);
        match obtain(w, x.bucket, t, v, i, run_end, &mine).await {
            // A slice this response's own read-ahead fetched counts as fetched, wherever the
            // reader finds it.
            Obtained::Cached(body, _) if mine.take(i) => {
                note(x, None);
                *sent_any = true;
                x.answer
                    .send(body.slice(part))
                    .await
                    .map_err(|_| SendError::Client)?;
            }
            Obtained::Cached(body, layer) => {
                note(x, Some(layer));
                w.metrics()
                    .cache_hit_bytes(x.bucket, layer, (part.end - part.start) as u64);
                *sent_any = true;
                x.answer
                    .send(body.slice(part))
                    .await
                    .map_err(|_| SendError::Client)?;
            }
            Obtained::Following(sub) => {
                mine.take(i);
                note(x, None);
                follow_slice(x, v, i, sub, part, sent_any).await?;
            }
        }
    }
    Ok(())
}

/// Counts one slice of the response as taken from the cache (`layer`) or from a fill, for the
/// access log and the metrics.
fn note<S>(x: &mut Exchange<'_, '_, '_, S>, layer: Option<Layer>) {
    let (cached, fetched) = x.log.slices.get_or_insert((0, 0));
    match layer {
        Some(layer) => {
            *cached += 1;
            x.w.metrics().slice_hit(x.bucket, layer);
        }
        None => {
            *fetched += 1;
            x.w.metrics().slice_miss(x.bucket);
        }
    }
}

/// Keeps the object entry reachable in the memory tier while its slices are read: each slice
/// counts as a use of the entry (so a long read of an object larger than the tier, whose
/// slices pass through the tier's small queue, does not evict the entry that makes them
/// usable), and an entry evicted anyway is put back — unless a purge began since the request
/// did (the purge generation, as for any store).
fn keep_entry(w: &Worker, t: &Target<'_>, meta: &Meta) {
    let memory = &w.cache.tiers().memory;
    if memory.capacity() == 0 || memory.get(t.ckey).is_some() {
        return;
    }
    if w.cache.generation() == t.generation {
        let entry = CachedObject::new(meta.clone(), Bytes::new());
        memory.insert(t.ckey, entry);
    }
}

/// Streams the part `part` of slice `i` of `v` from its fill.
async fn follow_slice<S: AsyncWriteRent>(
    x: &mut Exchange<'_, '_, '_, S>,
    v: &Version,
    i: u64,
    mut sub: Subscription,
    part: Range<usize>,
    sent_any: &mut bool,
) -> Result<(), SendError> {
    match sub.next_event().await {
        Event::Head { meta, len, .. } => {
            if meta.etag().as_deref() != Some(v.etag.as_str()) || len != v.g.slice_len(i) {
                return Err(SendError::Changed);
            }
        }
        Event::Failed(e) if is_changed(&e) => return Err(SendError::Changed),
        Event::Failed(e) => return Err(SendError::Failed(e)),
        Event::Chunk(_) | Event::End | Event::Bypass => {
            return Err(SendError::Failed(Error::internal(
                "a slice fill published no head",
            )))
        }
    }
    let mut at = 0usize;
    loop {
        match sub.next_event().await {
            Event::Chunk(c) => {
                let (from, to) = (at, at + c.len());
                at = to;
                let (s, e) = (part.start.max(from), part.end.min(to));
                if s < e {
                    *sent_any = true;
                    x.answer
                        .send(c.slice(s - from..e - from))
                        .await
                        .map_err(|_| SendError::Client)?;
                }
                if at >= part.end {
                    return Ok(());
                }
            }
            Event::End => {
                return match at >= part.end {
                    true => Ok(()),
                    false => Err(SendError::Failed(Error::upstream(
                        Kind::BadGateway,
                        "a slice ended short",
                    ))),
                }
            }
            Event::Failed(e) if is_changed(&e) => return Err(SendError::Changed),
            Event::Failed(e) => return Err(SendError::Failed(e)),
            Event::Head { .. } | Event::Bypass => {
                return Err(SendError::Failed(Error::internal(
                    "a slice fill published a second head",
                )))
            }
        }
    }
}

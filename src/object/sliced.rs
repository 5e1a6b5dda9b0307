//! Answering requests for sliced objects (`super::slices` has the rules): a response is the
//! object entry's head, then the requested bytes slice after slice, each from the cache, from
//! a fill in flight, or fetched from the origin.
//!
//! # One slice at a time, in order
//! For each slice the response needs, in order: a cached slice of this version (its ETag tag
//! and length match the object entry's) is sent uncopied; otherwise the slice's key is joined
//! in the coalescing table (`cache::inflight`, across workers) — a follower streams the fill
//! in flight as it arrives, a leader starts one origin request for this slice and the next
//! missing ones (adjacent slices merged, at most `1 + cache.slice_readahead`) and streams it
//! the same way. The origin request runs in a task of its own ([`fetch_run`]) at the origin's
//! pace and stores each slice as it completes: no client, however slow, paces a fill (the rule
//! of `super::fill`, per slice). Memory per response: the slices in flight it reads, each at
//! most `cache.slice_size`.
//!
//! # Read-ahead
//! When a response begins a slice it makes sure the next `cache.slice_readahead` slices it will
//! need are cached or in flight ([`prefetch`]), so a sequential reader does not wait one origin
//! round trip per slice.
//!
//! # One version per response
//! Every byte of a response comes from the object entry's version: slice requests carry
//! `If-Match` with its ETag, and an answer of another version (`412`, another ETag or length)
//! removes the object entry and fails every fill of the run with [`changed`]. A response that
//! has sent no body byte yet starts again on the new version ([`Served::Changed`]); one that
//! has is ended short — the client sees a truncated body, never a spliced one (as Apache
//! Traffic Server's slice plugin does).
//!
//! # `X-Cache`
//! It describes the object entry: `HIT` (found fresh), `MISS` (made by this request),
//! `REVALIDATED`, `STALE`; the access log counts the slices a response took from the cache and
//! from the origin (`slices_cached`, `slices_fetched`).

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::ops::Range;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use monoio::io::AsyncWriteRent;

use super::answer::{status_and_range, write_head};
use super::decide;
use super::exchange::{Exchange, OwnedTarget, Target, XCache};
use super::slices::{self, check_run_answer, Geometry, RunAnswer};
use super::upstream::{drain_error_body, fetch_origin, stored_headers};
use crate::cache::entry::{CachedObject, Meta};
use crate::cache::inflight::{Event, Leader, Role, Subscription};
use crate::cache::tiered::{Hit, Layer};
use crate::context::Worker;
use crate::error::{Error, Kind, Side};
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

/// The version a response serves: the object entry's ETag and how it is cut.
#[derive(Clone)]
pub struct Version {
    pub etag: String,
    pub g: Geometry,
    /// The object entry's age origin and deadline, which its slices are stored with (so a
    /// tier that expires entries — Redis — keeps them about as long as the entry).
    times: (u64, u64),
}

impl Version {
    /// The version of a sliced object entry (`None` for a whole entry).
    pub fn of(w: &Worker, meta: &Meta) -> Option<Version> {
        let len = meta.sliced_len()?;
        Some(Version {
            etag: meta.etag()?.to_owned(),
            g: Geometry::new(w.shared.config.cache.slice_size, len),
            times: (meta.stored_at_ms, meta.expires_at_ms),
        })
    }

    fn key(&self, ckey: &[u8], index: u64) -> Vec<u8> {
        let mut k = Vec::with_capacity(ckey.len() + 24);
        slices::slice_key(ckey, &self.g, index, &mut k);
        k
    }

    /// Whether a cached slice is slice `index` of this version.
    fn holds(&self, obj: &CachedObject, index: u64) -> bool {
        obj.meta.etag() == Some(self.etag.as_str())
            && obj.body.len() as u64 == self.g.slice_len(index)
    }
}

/// The error a fill of a changed object fails with; see [`is_changed`].
pub fn changed() -> Error {
    Error::upstream(
        Kind::PreconditionFailed,
        "the object changed at the origin while it was read",
    )
}

/// Whether `e` is [`changed`].
pub fn is_changed(e: &Error) -> bool {
    e.kind() == Kind::PreconditionFailed && e.side() == Side::Upstream
}

/// The object entry for an origin answer `head` (a `200` of `len` bytes, or a `206` of an
/// object of `len` bytes) when the object is to be cached as slices
/// ([`decide::storable_sliced`]).
pub fn entry_meta(w: &Worker, bucket: usize, head: &UpstreamHead, len: u64) -> Option<Arc<Meta>> {
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
    Some(Arc::new(meta.with_sliced_len(len)))
}

/// Stores the object entry `meta` (no body: the bytes are in slices).
pub async fn store_entry(w: &Worker, t: &Target<'_>, meta: Arc<Meta>) {
    let obj = CachedObject {
        meta,
        body: Bytes::new(),
    };
    w.cache.store(t.ckey, obj, t.generation).await;
}

/// The first request for an object that turns out to be sliced: its origin `200` (`head`,
/// `body`) made the object entry `meta`, stored now; the body fills the first slices (as many
/// as a read-ahead window) and is then let go, and the answer is served from the slices like
/// any other. `leader` is the key's fill, whose followers are sent to the stored entry.
pub async fn begin<S: AsyncWriteRent>(
    x: &mut Exchange<'_, '_, '_, S>,
    t: &Target<'_>,
    meta: Arc<Meta>,
    body: Body,
    leader: Option<Leader>,
) -> Result<Sent, Error> {
    let w = x.w;
    // The first slices are claimed before anyone can see the entry: the key's followers, sent
    // to the entry below, then join these fills instead of fetching the same slices again.
    let mut run = None;
    if let Some(v) = Version::of(w, &meta) {
        let window = (1 + w.shared.config.cache.slice_readahead as u64).min(v.g.count());
        let mut leaders = Vec::new();
        for i in 0..window {
            match w.cache.inflight().join(&v.key(t.ckey, i)) {
                Role::Leader(l) => leaders.push(l),
                Role::Follower(_) => break,
            }
        }
        if !leaders.is_empty() {
            run = Some((v, leaders));
        }
    }
    store_entry(w, t, Arc::clone(&meta)).await;
    if let Some(l) = leader {
        // Its followers look the key up again and find the entry.
        l.bypass();
    }
    let mut own = 0..0;
    if let Some((v, leaders)) = run {
        own = 0..leaders.len() as u64;
        start_run(w, x.bucket, t, &v, 0, leaders, Some(body));
    }
    match serve(x, t, &meta, XCache::Miss, None, own).await? {
        Served::Sent(sent) => Ok(sent),
        // Changed already: the entry goes, and this client gets an error rather than a loop.
        Served::Changed => {
            w.cache.remove_everywhere(t.ckey).await;
            Err(changed())
        }
    }
}

/// [`serve`], with the object entry removed when its version turned out gone before any body
/// byte was sent: `None` then, and the caller answers as for a miss.
pub async fn answer<S: AsyncWriteRent>(
    x: &mut Exchange<'_, '_, '_, S>,
    t: &Target<'_>,
    meta: &Arc<Meta>,
    xcache: XCache,
    layer: Option<Layer>,
) -> Result<Option<Sent>, Error> {
    match serve(x, t, meta, xcache, layer, 0..0).await? {
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
    let stale = &hit.obj.meta;
    let layer = Some(hit.layer);
    let asked = fetch_origin(w, bucket, true, t.key, t.params, &decide::validators(stale)).await;
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
                        let obj = CachedObject {
                            meta: Arc::clone(&meta),
                            body: Bytes::new(),
                        };
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
                            store_entry(w, t, Arc::clone(&meta)).await;
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
    meta: &Arc<Meta>,
    xcache: XCache,
    layer: Option<Layer>,
    own: Range<u64>,
) -> Result<Served, Error> {
    let Some(v) = Version::of(x.w, meta) else {
        return Err(Error::internal("a sliced entry without its length or ETag"));
    };
    let req = x.req;
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
    meta: &Arc<Meta>,
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
        keep_entry(w, t, meta);
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

/// The slices a response's own fills (its runs and read-ahead) are fetching from the origin,
/// shared with the read-ahead tasks: found in the cache later, they still count as fetched.
#[derive(Default, Clone)]
struct Fetching(Rc<RefCell<BTreeSet<u64>>>);

impl Fetching {
    fn add(&self, slices: Range<u64>) {
        self.0.borrow_mut().extend(slices);
    }

    /// Whether slice `i` was one of them (forgotten now: each is read once).
    fn take(&self, i: u64) -> bool {
        self.0.borrow_mut().remove(&i)
    }
}

/// Keeps the object entry reachable in the memory tier while its slices are read: each slice
/// counts as a use of the entry (so a long read of an object larger than the tier, whose
/// slices pass through the tier's small queue, does not evict the entry that makes them
/// usable), and an entry evicted anyway is put back — unless a purge began since the request
/// did (the purge generation, as for any store).
fn keep_entry(w: &Worker, t: &Target<'_>, meta: &Arc<Meta>) {
    let memory = &w.cache.tiers().memory;
    if memory.capacity() == 0 || memory.get(t.ckey).is_some() {
        return;
    }
    if w.cache.generation() == t.generation {
        let entry = CachedObject {
            meta: Arc::clone(meta),
            body: Bytes::new(),
        };
        memory.insert(t.ckey, entry);
    }
}

/// Where slice `i` comes from.
enum Obtained {
    Cached(Bytes, Layer),
    Following(Subscription),
}

/// Slice `i` of `v`: from the cache, or a subscription to its fill (joined, or started together
/// with the next missing slices before `run_end`).
async fn obtain(
    w: &Rc<Worker>,
    bucket: usize,
    t: &Target<'_>,
    v: &Version,
    i: u64,
    run_end: u64,
    mine: &Fetching,
) -> Obtained {
    let key = v.key(t.ckey, i);
    if let Some(hit) = w.cache.lookup(&key).await {
        if v.holds(&hit.obj, i) {
            return Obtained::Cached(hit.obj.body, hit.layer);
        }
    }
    match w.cache.inflight().join(&key) {
        Role::Follower(sub) => Obtained::Following(sub),
        Role::Leader(leader) => {
            let leader = match stored_meanwhile(w, v, &key, i, leader).await {
                Ok((body, layer)) => return Obtained::Cached(body, layer),
                Err(leader) => leader,
            };
            let sub = leader.subscribe();
            let mut leaders = vec![leader];
            extend_run(w, v, t.ckey, &mut leaders, i, run_end).await;
            mine.add(i..i + leaders.len() as u64);
            start_run(w, bucket, t, v, i, leaders, None);
            Obtained::Following(sub)
        }
    }
}

/// Extends a run of led slices that starts at `first` over the next slices before `end` while
/// each is neither cached nor in flight (adjacent missing slices: one origin request).
async fn extend_run(
    w: &Worker,
    v: &Version,
    ckey: &[u8],
    leaders: &mut Vec<Leader>,
    first: u64,
    end: u64,
) {
    for j in first + leaders.len() as u64..end {
        match lead_missing(w, v, ckey, j).await {
            Some(l) => leaders.push(l),
            None => return,
        }
    }
}

/// The leadership of slice `j`'s fill when it is neither cached nor in flight.
async fn lead_missing(w: &Worker, v: &Version, ckey: &[u8], j: u64) -> Option<Leader> {
    let key = v.key(ckey, j);
    if w.cache.inflight().contains(&key) {
        return None;
    }
    if let Some(hit) = w.cache.lookup(&key).await {
        if v.holds(&hit.obj, j) {
            return None;
        }
    }
    let Role::Leader(l) = w.cache.inflight().join(&key) else {
        return None;
    };
    stored_meanwhile(w, v, &key, j, l).await.err()
}

/// A slice that a fill stored (and left the table) between a lookup that missed and the join
/// that made this request the leader of slice `i`: looked up again before the origin is asked.
/// Found, `leader` publishes it whole to anyone who joined meanwhile (`Ok`); else `leader`
/// comes back to fetch it.
async fn stored_meanwhile(
    w: &Worker,
    v: &Version,
    key: &[u8],
    i: u64,
    leader: Leader,
) -> Result<(Bytes, Layer), Leader> {
    match w.cache.lookup(key).await.filter(|h| v.holds(&h.obj, i)) {
        Some(hit) => {
            leader.complete(Arc::clone(&hit.obj.meta), hit.obj.body.clone(), false);
            Ok((hit.obj.body, hit.layer))
        }
        None => Err(leader),
    }
}

/// Makes sure slices `window` of `v` are cached or in flight, in a task of its own (the
/// reader does not wait for the lookups).
fn prefetch(
    w: &Rc<Worker>,
    bucket: usize,
    t: &Target<'_>,
    v: &Version,
    window: Range<u64>,
    mine: &Fetching,
) {
    let (w, owned, v, mine) = (Rc::clone(w), OwnedTarget::of(t), v.clone(), mine.clone());
    monoio::spawn(async move {
        let params = owned.params();
        let t = owned.target(&params);
        let mut i = window.start;
        while i < window.end {
            let Some(first) = lead_missing(&w, &v, t.ckey, i).await else {
                i += 1;
                continue;
            };
            let mut leaders = vec![first];
            extend_run(&w, &v, t.ckey, &mut leaders, i, window.end).await;
            let n = leaders.len() as u64;
            mine.add(i..i + n);
            start_run(&w, bucket, &t, &v, i, leaders, None);
            i += n + 1;
        }
    });
}

/// Starts the fill of slices `first..first + leaders.len()` of `v` in a task of its own: from
/// `body` when given (an origin answer already streaming those slices from `first`'s start),
/// else with one origin range request.
pub fn start_run(
    w: &Rc<Worker>,
    bucket: usize,
    t: &Target<'_>,
    v: &Version,
    first: u64,
    leaders: Vec<Leader>,
    body: Option<Body>,
) {
    let (w, owned, v) = (Rc::clone(w), OwnedTarget::of(t), v.clone());
    monoio::spawn(async move {
        let params = owned.params();
        let t = owned.target(&params);
        fetch_run(&w, bucket, &t, &v, first, leaders, body).await;
    });
}

/// Fetches slices `first..first + leaders.len()` of `v` (see [`start_run`]) and stores each as
/// it completes, publishing its bytes to its leader's subscriptions as they arrive.
async fn fetch_run(
    w: &Rc<Worker>,
    bucket: usize,
    t: &Target<'_>,
    v: &Version,
    first: u64,
    leaders: Vec<Leader>,
    body: Option<Body>,
) {
    let run = first..first + leaders.len() as u64;
    let mut body = match body {
        Some(b) => b,
        None => match fetch_range(w, bucket, t, v, &run).await {
            Ok(b) => b,
            Err(e) => {
                if is_changed(&e) {
                    // Not this version any more: its entry goes, the next request sees the
                    // new one.
                    w.cache.remove_everywhere(t.ckey).await;
                }
                for l in leaders {
                    l.fail(e.clone());
                }
                return;
            }
        },
    };
    let slice_meta = Arc::new(Meta::new(
        vec![("ETag".to_owned(), v.etag.clone())],
        v.times.0,
        v.times.1,
    ));
    let mut leaders = leaders.into_iter();
    for i in run {
        let leader = leaders.next().expect("one leader per slice");
        let len = v.g.slice_len(i);
        leader.head(Arc::clone(&slice_meta), len);
        match read_slice(w, bucket, &mut body, len, &leader).await {
            Ok((all, last)) => {
                let obj = CachedObject {
                    meta: Arc::clone(&slice_meta),
                    body: Bytes::from(all),
                };
                w.cache.store(&v.key(t.ckey, i), obj, t.generation).await;
                leader.finish(last);
            }
            Err(e) => {
                log::warn!(
                    "filling slice {i} of {} failed: {e}",
                    String::from_utf8_lossy(t.ckey)
                );
                leader.fail(e.clone());
                for l in leaders {
                    l.fail(e.clone());
                }
                return;
            }
        }
    }
}

/// Reads one slice of `len` (> 0) bytes from `body`, publishing each piece to `leader` but the
/// last, which is returned with the whole slice (published by `Leader::finish` once the slice
/// is stored).
async fn read_slice(
    w: &Worker,
    bucket: usize,
    body: &mut Body,
    len: u64,
    leader: &Leader,
) -> Result<(Vec<u8>, Bytes), Error> {
    let mut all: Vec<u8> = Vec::with_capacity(len as usize);
    loop {
        let start = all.len();
        let (res, a) = body.read_into(all).await;
        all = a;
        let n = match res? {
            0 => {
                return Err(Error::upstream(
                    Kind::BadGateway,
                    "the origin sent a short body",
                ))
            }
            n => n,
        };
        w.metrics().upstream_bytes(bucket, n as u64);
        let piece = Bytes::copy_from_slice(&all[start..start + n]);
        if all.len() as u64 == len {
            return Ok((all, piece));
        }
        leader.chunk(piece);
    }
}

/// One origin request for slices `run` of `v`: `Range` + `If-Match`; the body when the answer
/// is exactly those bytes of that version, else the error ([`changed`] for another version).
async fn fetch_range(
    w: &Rc<Worker>,
    bucket: usize,
    t: &Target<'_>,
    v: &Version,
    run: &Range<u64>,
) -> Result<Body, Error> {
    let range = v.g.range_value(run);
    let headers = [("Range", range.as_str()), ("If-Match", v.etag.as_str())];
    let (head, body) = fetch_origin(w, bucket, false, t.key, t.params, &headers).await?;
    let verdict = check_run_answer(
        &v.g,
        run,
        head.status,
        head.header("content-range"),
        head.header("etag"),
        &v.etag,
    );
    match verdict {
        RunAnswer::Matches => Ok(body),
        RunAnswer::Changed => {
            drain_error_body(body).await;
            Err(changed())
        }
        RunAnswer::Unusable(why) if head.status >= 400 => {
            log::debug!("slice request: {why}");
            Err(super::origin_error::read_and_map(w, bucket, &head, body).await)
        }
        RunAnswer::Unusable(why) => Err(Error::upstream(Kind::BadGateway, why)),
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
            if meta.etag() != Some(v.etag.as_str()) || len != v.g.slice_len(i) {
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

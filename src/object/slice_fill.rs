//! Getting the slices of a sliced object (`super::slices` has the rules; `super::sliced`
//! answers with them): from the cache, from a fill in flight, or from the origin.
//!
//! A slice missing from the cache is joined in the coalescing table (`cache::inflight`, across
//! workers): a follower streams the fill in flight as it arrives, a leader starts one origin
//! request for this slice and the next missing ones (adjacent slices merged, at most
//! `1 + cache.slice_readahead`), `Range` with `If-Match` the version's ETag. The request runs
//! in a task of its own (`fetch_run`) at the origin's pace and stores each slice as it
//! completes, publishing its bytes to the slice's subscriptions as they arrive: no client,
//! however slow, paces a fill (the rule of `super::fill`, per slice). `prefetch` does the
//! same ahead of a sequential reader. An answer of another version (`412`, another ETag or
//! length) removes the object entry and fails every fill of the run with [`changed`].

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::ops::Range;
use std::rc::Rc;

use bytes::Bytes;

use super::exchange::{OwnedTarget, Target};
use super::slices::{self, check_run_answer, Geometry, RunAnswer};
use super::upstream::{drain_error_body, fetch_origin, Asked};
use crate::cache::entry::{CachedObject, Meta};
use crate::cache::inflight::{Leader, Role, Subscription};
use crate::cache::tiered::Layer;
use crate::context::Worker;
use crate::error::{Error, Kind, Side};
use crate::fleet::client::SliceOf;
use crate::s3::client::Body;

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
            etag: meta.etag()?.to_string(),
            g: Geometry::new(w.shared.config.cache.slice_size, len),
            times: (meta.stored_at_ms, meta.expires_at_ms),
        })
    }

    pub(super) fn key(&self, ckey: &[u8], index: u64) -> Vec<u8> {
        let mut k = Vec::with_capacity(ckey.len() + 24);
        slices::slice_key(ckey, &self.g, index, &mut k);
        k
    }

    /// Whether a cached slice is slice `index` of this version.
    pub(super) fn holds(&self, obj: &CachedObject, index: u64) -> bool {
        obj.meta().etag().as_deref() == Some(self.etag.as_str())
            && obj.body_len() as u64 == self.g.slice_len(index)
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

/// The slices a response's own fills (its runs and read-ahead) are fetching from the origin,
/// shared with the read-ahead tasks: found in the cache later, they still count as fetched.
#[derive(Default, Clone)]
pub(super) struct Fetching(Rc<RefCell<BTreeSet<u64>>>);

impl Fetching {
    pub(super) fn add(&self, slices: Range<u64>) {
        self.0.borrow_mut().extend(slices);
    }

    /// Whether slice `i` was one of them (forgotten now: each is read once).
    pub(super) fn take(&self, i: u64) -> bool {
        self.0.borrow_mut().remove(&i)
    }
}

/// Where slice `i` comes from.
pub(super) enum Obtained {
    Cached(Bytes, Layer),
    Following(Subscription),
}

/// Slice `i` of `v`: from the cache, or a subscription to its fill (joined, or started together
/// with the next missing slices before `run_end`).
pub(super) async fn obtain(
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
            return Obtained::Cached(hit.obj.body_bytes(), hit.layer);
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
            extend_run(w, v, t, &mut leaders, i, run_end).await;
            mine.add(i..i + leaders.len() as u64);
            start_run(w, bucket, t, v, i, leaders, None);
            Obtained::Following(sub)
        }
    }
}

/// Whether slice `i` of `v` is this instance's to fetch from the origin and store: always,
/// but in a fleet (`crate::fleet`), where each slice has its own owner among the members
/// (a member's own request is answered here whoever owns it: one hop).
pub(super) fn owned_here(w: &Worker, t: &Target<'_>, v: &Version, i: u64) -> bool {
    match (&w.shared.fleet, t.from_peer) {
        (Some(fleet), false) => fleet.owner_name(&v.key(t.ckey, i)).is_none(),
        _ => true,
    }
}

/// Whether slices `a` and `b` of `v` have the same owner (always, outside a fleet): a run of
/// slices is one request, to one owner.
fn same_owner(w: &Worker, t: &Target<'_>, v: &Version, a: u64, b: u64) -> bool {
    match (&w.shared.fleet, t.from_peer) {
        (Some(fleet), false) => {
            fleet.owner_name(&v.key(t.ckey, a)) == fleet.owner_name(&v.key(t.ckey, b))
        }
        _ => true,
    }
}

/// Extends a run of led slices that starts at `first` over the next slices before `end` while
/// each is neither cached nor in flight (adjacent missing slices: one origin request) and, in
/// a fleet, has the same owner as `first`.
pub(super) async fn extend_run(
    w: &Worker,
    v: &Version,
    t: &Target<'_>,
    leaders: &mut Vec<Leader>,
    first: u64,
    end: u64,
) {
    for j in first + leaders.len() as u64..end {
        if !same_owner(w, t, v, first, j) {
            return;
        }
        match lead_missing(w, v, t.ckey, j).await {
            Some(l) => leaders.push(l),
            None => return,
        }
    }
}

/// The leadership of slice `j`'s fill when it is neither cached nor in flight.
pub(super) async fn lead_missing(w: &Worker, v: &Version, ckey: &[u8], j: u64) -> Option<Leader> {
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
pub(super) async fn stored_meanwhile(
    w: &Worker,
    v: &Version,
    key: &[u8],
    i: u64,
    leader: Leader,
) -> Result<(Bytes, Layer), Leader> {
    match w.cache.lookup(key).await.filter(|h| v.holds(&h.obj, i)) {
        Some(hit) => {
            leader.complete(hit.obj.meta().clone(), hit.obj.body_bytes(), false);
            Ok((hit.obj.body_bytes(), hit.layer))
        }
        None => Err(leader),
    }
}

/// Makes sure slices `window` of `v` are cached or in flight, in a task of its own (the
/// reader does not wait for the lookups).
pub(super) fn prefetch(
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
            extend_run(&w, &v, &t, &mut leaders, i, window.end).await;
            let n = leaders.len() as u64;
            mine.add(i..i + n);
            start_run(&w, bucket, &t, &v, i, leaders, None);
            i += n + 1;
        }
    });
}

/// The leadership of the first slices of `v` that a first origin `200` streaming the object
/// from byte 0 will fill: as many as a read-ahead window, claimed before the object's entry
/// is visible (so requests sent to the entry join these fills), stopping at a slice in flight
/// elsewhere or, in a fleet, at the first slice another member owns.
pub(super) fn claim_leading(w: &Worker, t: &Target<'_>, v: &Version) -> Vec<Leader> {
    let window = (1 + w.shared.config.cache.slice_readahead as u64).min(v.g.count());
    let mut leaders = Vec::new();
    for i in 0..window {
        if !owned_here(w, t, v, i) {
            break;
        }
        match w.cache.inflight().join(&v.key(t.ckey, i)) {
            Role::Leader(l) => leaders.push(l),
            Role::Follower(_) => break,
        }
    }
    leaders
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
        // A failure reached the slices' readers through their leaders.
        let _ = fetch_run(&w, bucket, &t, &v, first, leaders, body).await;
    });
}

/// Fetches slices `first..first + leaders.len()` of `v` (see [`start_run`]) and stores each as
/// it completes, publishing its bytes to its leader's subscriptions as they arrive. `Err`: the
/// run did not arrive whole (every unfinished slice's readers got the same error).
pub(super) async fn fetch_run(
    w: &Rc<Worker>,
    bucket: usize,
    t: &Target<'_>,
    v: &Version,
    first: u64,
    leaders: Vec<Leader>,
    body: Option<Body>,
) -> Result<(), Error> {
    let run = first..first + leaders.len() as u64;
    // `relayed`: the slices came from their owner in a fleet, which stored them.
    let (mut body, relayed) = match body {
        Some(b) => (b, false),
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
                return Err(e);
            }
        },
    };
    let slice_meta = Meta::new(
        vec![("ETag".to_owned(), v.etag.clone())],
        v.times.0,
        v.times.1,
    );
    let mut leaders = leaders.into_iter();
    for i in run {
        let leader = leaders.next().expect("one leader per slice");
        let len = v.g.slice_len(i);
        leader.head(slice_meta.clone(), len);
        match read_slice(w, bucket, &mut body, len, &leader).await {
            Ok((all, last)) => {
                let obj = CachedObject::new(slice_meta.clone(), Bytes::from(all));
                if !relayed {
                    w.cache.store(&v.key(t.ckey, i), obj, t.generation).await;
                }
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
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Reads one slice of `len` (> 0) bytes from `body`, publishing each piece to `leader` but the
/// last, which is returned with the whole slice (published by `Leader::finish` once the slice
/// is stored).
pub(super) async fn read_slice(
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

/// One origin request for slices `run` of `v`: `Range` + `If-Match` — in a fleet, to the
/// slices' owner (the run has one, [`extend_run`]), which stores them; the body when the
/// answer is exactly those bytes of that version (and whether an owner sent it), else the
/// error ([`changed`] for another version).
pub(super) async fn fetch_range(
    w: &Rc<Worker>,
    bucket: usize,
    t: &Target<'_>,
    v: &Version,
    run: &Range<u64>,
) -> Result<(Body, bool), Error> {
    let range = v.g.range_value(run);
    let headers = [("Range", range.as_str()), ("If-Match", v.etag.as_str())];
    let route = t.route().map(|_| v.key(t.ckey, run.start));
    let asked = Asked {
        route: route.as_deref(),
        slice: Some(SliceOf {
            len: v.g.len,
            stored_at_ms: v.times.0,
            expires_at_ms: v.times.1,
        }),
        ..Asked::of(t, false, &headers)
    };
    let (head, body) = fetch_origin(w, bucket, &asked).await?;
    let relayed = head.peer.is_some();
    let verdict = check_run_answer(
        &v.g,
        run,
        head.status,
        head.header("content-range"),
        head.header("etag"),
        &v.etag,
    );
    match verdict {
        RunAnswer::Matches => Ok((body, relayed)),
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

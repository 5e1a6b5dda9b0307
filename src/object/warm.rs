//! Warming one object: what a client's miss would do to the cache, with no client.
//!
//! A warm job (`crate::warm`) calls [`object`] for each key it lists. The object goes the way
//! a client's full GET goes, so warming and clients never race each other into two origin
//! fetches and every fleet member agrees on who holds what:
//! - a fresh entry is left alone ([`Warmed::Skipped`]); for a sliced object, its missing
//!   slices are fetched (it counts as skipped when none were);
//! - otherwise the key is joined in the coalescing table (`cache::inflight`): a fill already
//!   in flight (a client's, another job's) is followed to its end rather than repeated; else
//!   this call leads it — a conditional GET for a stale entry (`super::revalidate`), a plain
//!   GET otherwise, through [`fetch_origin`], so in a fleet it reaches the key's owner
//!   (`crate::fleet`), which fills its own cache as for any member's miss;
//! - a cacheable `200` is read whole by the same fill as a client's ([`super::fill::run`]);
//!   a large one makes the object entry and its slices, all of them, one run of
//!   `1 + cache.slice_readahead` slices at a time (`super::slice_fill`), the first run cut from
//!   the answer's body as a client's first request does (`super::sliced::begin`).
//!
//! One call has at most one origin request in flight, so a job's concurrency is its number of
//! calls in flight. `stop` is asked before each origin request: a cancelled job starts none.

use std::rc::Rc;
use std::time::Duration;

use super::exchange::Target;
use super::fill;
use super::revalidate::{conditional_fetch, confirmed};
use super::slice_fill::{claim_leading, extend_run, fetch_run, lead_missing, Version};
use super::sliced;
use super::upstream::{drain_error_body, fetch_origin, Asked};
use crate::cache::entry::{CachedObject, Meta};
use crate::cache::inflight::{Event, Leader, Role, Subscription};
use crate::cache::key::cache_key;
use crate::context::Worker;
use crate::error::Error;
use crate::s3::client::Body;

/// What [`object`] did.
#[derive(Debug)]
pub enum Warmed {
    /// Already fresh in the cache (every slice of a sliced object included): nothing fetched.
    Skipped,
    /// In the cache now, fetched by this call or by the fill it followed.
    Filled,
    /// Not cached: the origin's status when it answered, and why.
    Failed(Option<u16>, String),
    /// Stopped before its next origin request (the job was cancelled).
    Stopped,
}

/// What [`object`] did, and the origin's status and time to its answer head when this call
/// asked it for the object (not for slices), for the access log.
pub struct Outcome {
    pub warmed: Warmed,
    pub upstream: Option<(u16, Duration)>,
}

fn failed(e: &Error) -> Warmed {
    Warmed::Failed(None, e.message().to_owned())
}

/// Brings object `key` of `bucket` into the cache unless it is fresh there (see the module
/// docs); `stop` is asked before each origin request.
pub async fn object(w: &Rc<Worker>, bucket: usize, key: &str, stop: &dyn Fn() -> bool) -> Outcome {
    let ckey = cache_key(&w.shared.config.buckets[bucket].name, key, &[]);
    let t = Target {
        key,
        params: &[],
        ckey: &ckey,
        generation: w.cache.generation(),
        from_peer: false,
    };
    let mut stale = None;
    if let Some(hit) = w.cache.lookup(&ckey).await {
        let meta = hit.obj.meta();
        if meta.status == 200 && meta.is_fresh(w.clock().now_ms()) {
            let warmed = match meta.sliced_len() {
                Some(_) => slices(w, bucket, &t, meta, stop, false).await,
                None => Warmed::Skipped,
            };
            return Outcome {
                warmed,
                upstream: None,
            };
        }
        // A stale whole entry is revalidated; a stale sliced one is fetched anew (its slices of
        // the same version stay: they are tagged with its ETag).
        if meta.status == 200 && meta.sliced_len().is_none() {
            stale = Some(hit.obj);
        }
    }
    if stop() {
        return Outcome {
            warmed: Warmed::Stopped,
            upstream: None,
        };
    }
    match w.cache.inflight().join(&ckey) {
        Role::Follower(sub) => Outcome {
            warmed: follow(w, bucket, &t, sub, stop).await,
            upstream: None,
        },
        Role::Leader(leader) => lead(w, bucket, &t, leader, stale, stop).await,
    }
}

/// Follows a fill in flight to its end; a fill that turned out sliced (its entry is stored
/// now) continues with the slices.
async fn follow(
    w: &Rc<Worker>,
    bucket: usize,
    t: &Target<'_>,
    mut sub: Subscription,
    stop: &dyn Fn() -> bool,
) -> Warmed {
    loop {
        match sub.next_event().await {
            Event::Head { .. } | Event::Chunk(_) => {}
            Event::End => return Warmed::Filled,
            Event::Failed(e) => return failed(&e),
            Event::Bypass => break,
        }
    }
    drop(sub);
    match w.cache.lookup(t.ckey).await {
        Some(hit) if hit.obj.meta().status == 200 && hit.obj.meta().sliced_len().is_some() => {
            slices(w, bucket, t, hit.obj.meta(), stop, true).await
        }
        _ => Warmed::Failed(None, "the origin's answer may not be cached".into()),
    }
}

/// Leads the key's fill: asks the origin (or the key's owner) and stores what it answers.
async fn lead(
    w: &Rc<Worker>,
    bucket: usize,
    t: &Target<'_>,
    leader: Leader,
    stale: Option<CachedObject>,
    stop: &dyn Fn() -> bool,
) -> Outcome {
    let answer = match &stale {
        Some(s) => conditional_fetch(w, bucket, t, s.meta()).await,
        // An owner holding the object as slices answers with its entry head only.
        None => {
            let asked = Asked {
                want_entry: true,
                ..Asked::of(t, false, &[])
            };
            fetch_origin(w, bucket, &asked).await
        }
    };
    let (head, body) = match answer {
        Ok(a) => a,
        Err(e) => {
            leader.fail(e.clone());
            return Outcome {
                warmed: failed(&e),
                upstream: None,
            };
        }
    };
    let upstream = Some((head.status, head.took));
    let done = |warmed| Outcome { warmed, upstream };
    if let (Some(stale), 304) = (&stale, head.status) {
        confirmed(w, bucket, t, stale, &head, body, Some(leader)).await;
        return done(Warmed::Filled);
    }
    // In a fleet: the key's owner holds the object as slices; the entry is kept here too.
    if let Some(len) = sliced::relayed_entry(&head) {
        drain_error_body(body).await;
        let Some(meta) = sliced::storable_entry(w, bucket, &head, len) else {
            leader.bypass();
            let why = "the key's owner holds slices not storable here";
            return done(Warmed::Failed(Some(head.status), why.into()));
        };
        sliced::store_entry(w, t, meta.clone()).await;
        leader.bypass();
        return done(slices(w, bucket, t, &meta, stop, true).await);
    }
    if head.status != 200 {
        let e = fill::rejected(w, bucket, t.ckey, &head, body).await;
        leader.fail(e.clone());
        return done(Warmed::Failed(Some(head.status), e.message().to_owned()));
    }
    // In a fleet: the key's owner filled its cache (one copy per fleet); the bytes are not
    // kept here, only read to the end so that the connection is reused.
    if head.peer.is_some() {
        leader.bypass();
        return done(match discard(body).await {
            Ok(()) => Warmed::Filled,
            Err(e) => failed(&e),
        });
    }
    if let Some((meta, len)) = fill::cacheable(w, bucket, &head, &body) {
        let filled = fill::run(w, bucket, t.ckey, t.generation, meta, len, body, leader).await;
        return done(match filled {
            Ok(()) => Warmed::Filled,
            Err(e) => failed(&e),
        });
    }
    let large = body
        .content_length()
        .and_then(|len| sliced::entry_meta(w, bucket, &head, len));
    let Some(meta) = large else {
        leader.bypass();
        let why = "the object may not be cached (no-store, no length, or larger than \
                   cache.max_sliced_object_size)";
        return done(Warmed::Failed(Some(200), why.into()));
    };
    done(begin_sliced(w, bucket, t, meta, body, leader, stop).await)
}

/// A large object's first answer (its `200`, `body`): the object entry `meta` is stored, the
/// first slices are cut from the body (claimed before the entry is visible, as
/// `sliced::begin` does), then the rest are fetched.
async fn begin_sliced(
    w: &Rc<Worker>,
    bucket: usize,
    t: &Target<'_>,
    meta: Meta,
    body: Body,
    leader: Leader,
    stop: &dyn Fn() -> bool,
) -> Warmed {
    let Some(v) = Version::of(w, &meta) else {
        leader.bypass();
        return Warmed::Failed(Some(200), "a sliced entry without its ETag".into());
    };
    let leaders = claim_leading(w, t, &v);
    sliced::store_entry(w, t, meta.clone()).await;
    // Its followers look the key up again and find the entry.
    leader.bypass();
    if leaders.is_empty() {
        drop(body);
    } else if let Err(e) = fetch_run(w, bucket, t, &v, 0, leaders, Some(body)).await {
        return failed(&e);
    }
    match slices(w, bucket, t, &meta, stop, true).await {
        Warmed::Skipped => Warmed::Filled,
        other => other,
    }
}

/// Fetches every slice of the sliced object `meta` that is neither cached nor in flight, one
/// run at a time. `fetched`: this call already fetched something of the object.
async fn slices(
    w: &Rc<Worker>,
    bucket: usize,
    t: &Target<'_>,
    meta: &Meta,
    stop: &dyn Fn() -> bool,
    mut fetched: bool,
) -> Warmed {
    let Some(v) = Version::of(w, meta) else {
        return Warmed::Failed(None, "a sliced entry without its ETag".into());
    };
    let (count, run) = (
        v.g.count(),
        1 + w.shared.config.cache.slice_readahead as u64,
    );
    let mut i = 0;
    while i < count {
        if stop() {
            return Warmed::Stopped;
        }
        let Some(first) = lead_missing(w, &v, t.ckey, i).await else {
            i += 1;
            continue;
        };
        let mut leaders = vec![first];
        extend_run(w, &v, t, &mut leaders, i, (i + run).min(count)).await;
        let n = leaders.len() as u64;
        if let Err(e) = fetch_run(w, bucket, t, &v, i, leaders, None).await {
            return failed(&e);
        }
        fetched = true;
        i += n;
    }
    if fetched {
        Warmed::Filled
    } else {
        Warmed::Skipped
    }
}

/// Reads a body to its end, keeping nothing.
async fn discard(mut body: Body) -> Result<(), Error> {
    let mut buf = Vec::with_capacity(super::exchange::STREAM_CHUNK);
    while !body.is_done() {
        buf.clear();
        let (res, b) = body.read_into(buf).await;
        buf = b;
        if res? == 0 {
            break;
        }
    }
    Ok(())
}

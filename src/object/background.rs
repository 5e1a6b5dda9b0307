//! Fetches that no client waits for: the whole object after a Range miss, and the
//! revalidation of a stale entry served meanwhile (stale-while-revalidate).
//!
//! Either runs in its own task, unless a fill or revalidation of the key is already running
//! somewhere in the process. The task leads the key in the coalescing table, so requests that
//! need the object meanwhile follow it — at most one such fetch per key in the whole process;
//! a `200` is filled at the origin's pace and published piece by piece (`super::fill::run`).

use std::rc::Rc;

use super::exchange::{OwnedTarget, Target};
use super::fill::publish;
use super::revalidate::{conditional_fetch, confirmed};
use super::upstream::{fetch_origin, Asked};
use crate::cache::entry::CachedObject;
use crate::cache::inflight::Role;
use crate::context::Worker;

/// Fetches `t` into the cache in the background: the whole object when `stale` is `None`,
/// else a conditional GET revalidating `stale`.
pub fn fetch(w: &Rc<Worker>, bucket: usize, t: &Target<'_>, stale: Option<CachedObject>) {
    if w.cache.inflight().contains(t.ckey) {
        return;
    }
    let (w, owned) = (Rc::clone(w), OwnedTarget::of(t));
    monoio::spawn(async move {
        let params = owned.params();
        let t = owned.target(&params);
        // Another request may have started one since the check above.
        let Role::Leader(leader) = w.cache.inflight().join(t.ckey) else {
            return;
        };
        let answer = match &stale {
            Some(stale) => conditional_fetch(&w, bucket, &t, stale.meta()).await,
            None => fetch_origin(&w, bucket, &Asked::of(&t, false, &[])).await,
        };
        match (answer, &stale) {
            (Ok((head, body)), Some(stale)) if head.status == 304 => {
                confirmed(&w, bucket, &t, stale, &head, body, Some(leader)).await;
            }
            (Ok((head, body)), _) => publish(&w, bucket, &t, head, body, leader).await,
            (Err(e), _) => {
                log::warn!("background fetch of a cache entry failed: {e}");
                leader.fail(e);
            }
        }
    });
}

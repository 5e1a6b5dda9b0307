//! The connections of one worker that are waiting for a request, so that they can be closed
//! when the worker needs room, when they have waited too long, or when it shuts down.
//!
//! A connection registers here only while it waits for bytes of a request head: a new
//! connection before its first request, a keep-alive connection between requests, and one whose
//! head is still arriving. Each wait has a start time and may have a deadline; three things
//! release waits:
//! - [`IdleConns::reclaim_oldest`]: the accept loop ran out of descriptors or reached the
//!   connection limit. The oldest waits are released first — the way nginx reuses idle
//!   connections when `worker_connections` run out — so a flood of connections that never send
//!   anything cannot lock real clients out: each new connection pushes the oldest idle one out.
//! - [`IdleConns::shutdown`]: waits between keep-alive requests end at once (and later ones do
//!   not begin). Connections that have not sent their first request, or are in the middle of a
//!   head, are left to finish: they were accepted, so they get their answer — if the head
//!   arrives within a short last call (`worker::LAST_CALL`), after which the accept loop
//!   reclaims whatever still waits.
//!
//! - [`IdleConns::expire`]: waits past their deadline (`server.idle_timeout` between requests,
//!   `server.header_timeout` before the first), run by a per-worker sweep. A connection idle
//!   between requests holds no timer of its own this way — the sweep is one timer per worker —
//!   which is part of what keeps an idle connection small; the price is the sweep's
//!   granularity (a timeout fires up to one sweep interval late).
//!
//! The registry is a map keyed by a counter (foldhash: ids are ours, not a client's): a wait is
//! one insert and one remove, which reuses the map's capacity, so a keep-alive hit allocates
//! nothing here. Finding the oldest waits is a scan, done only under pressure.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use monoio::time::Instant;

/// Why a wait ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    /// Shutdown began while the connection was idle between requests.
    Shutdown,
    /// The worker needed the connection's room (descriptors or the connection limit).
    Reclaimed,
    /// The wait's deadline passed.
    TimedOut,
}

struct Waiter {
    since: Instant,
    deadline: Option<Instant>,
    /// Ends when shutdown begins (keep-alive idle), or only when reclaimed.
    ends_on_shutdown: bool,
    waker: Option<Waker>,
    released: Option<Released>,
}

#[derive(Default)]
pub struct IdleConns {
    next_id: Cell<u64>,
    shutting_down: Cell<bool>,
    waiters: RefCell<HashMap<u64, Waiter, foldhash::fast::FixedState>>,
}

impl IdleConns {
    /// A wait that completes only when the connection is released; drop it when bytes arrive.
    /// `since` orders reclaiming (oldest first); past `deadline` (if any) [`Self::expire`]
    /// releases it.
    pub fn wait(
        &self,
        since: Instant,
        deadline: Option<Instant>,
        ends_on_shutdown: bool,
    ) -> IdleWait<'_> {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        IdleWait {
            conns: self,
            id,
            since,
            deadline,
            ends_on_shutdown,
            registered: false,
        }
    }

    /// Releases every wait whose deadline is at or before `now`; returns how many.
    pub fn expire(&self, now: Instant) -> usize {
        let mut n = 0;
        for w in self.waiters.borrow_mut().values_mut() {
            if w.released.is_none() && w.deadline.is_some_and(|d| d <= now) {
                release(w, Released::TimedOut);
                n += 1;
            }
        }
        n
    }

    /// Releases every wait that ends on shutdown; such waits begun later end at once.
    pub fn shutdown(&self) {
        self.shutting_down.set(true);
        for w in self.waiters.borrow_mut().values_mut() {
            if w.ends_on_shutdown && w.released.is_none() {
                release(w, Released::Shutdown);
            }
        }
    }

    /// Releases the `n` oldest waits not yet released; returns how many it released.
    pub fn reclaim_oldest(&self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        let mut waiters = self.waiters.borrow_mut();
        let mut candidates: Vec<(Instant, u64)> = waiters
            .iter()
            .filter(|(_, w)| w.released.is_none())
            .map(|(id, w)| (w.since, *id))
            .collect();
        let n = n.min(candidates.len());
        if n == 0 {
            return 0;
        }
        if n < candidates.len() {
            candidates.select_nth_unstable(n - 1);
        }
        for (_, id) in &candidates[..n] {
            if let Some(w) = waiters.get_mut(id) {
                release(w, Released::Reclaimed);
            }
        }
        n
    }

    /// Waits registered and not yet released.
    pub fn waiting(&self) -> usize {
        self.waiters
            .borrow()
            .values()
            .filter(|w| w.released.is_none())
            .count()
    }
}

fn release(w: &mut Waiter, why: Released) {
    w.released = Some(why);
    if let Some(waker) = w.waker.take() {
        waker.wake();
    }
}

/// See [`IdleConns::wait`].
pub struct IdleWait<'a> {
    conns: &'a IdleConns,
    id: u64,
    since: Instant,
    deadline: Option<Instant>,
    ends_on_shutdown: bool,
    registered: bool,
}

impl Future for IdleWait<'_> {
    type Output = Released;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Released> {
        let conns = self.conns;
        if self.ends_on_shutdown && conns.shutting_down.get() {
            return Poll::Ready(Released::Shutdown);
        }
        let mut waiters = conns.waiters.borrow_mut();
        if self.registered {
            if let Some(w) = waiters.get_mut(&self.id) {
                if let Some(why) = w.released {
                    return Poll::Ready(why);
                }
                match &mut w.waker {
                    Some(old) if old.will_wake(cx.waker()) => {}
                    slot => *slot = Some(cx.waker().clone()),
                }
            }
            return Poll::Pending;
        }
        waiters.insert(
            self.id,
            Waiter {
                since: self.since,
                deadline: self.deadline,
                ends_on_shutdown: self.ends_on_shutdown,
                waker: Some(cx.waker().clone()),
                released: None,
            },
        );
        drop(waiters);
        self.registered = true;
        Poll::Pending
    }
}

impl Drop for IdleWait<'_> {
    fn drop(&mut self) {
        if self.registered {
            if let Ok(mut w) = self.conns.waiters.try_borrow_mut() {
                w.remove(&self.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn poll_once(f: Pin<&mut IdleWait<'_>>) -> Poll<Released> {
        let mut cx = Context::from_waker(Waker::noop());
        f.poll(&mut cx)
    }

    #[test]
    fn reclaims_oldest_first_and_shutdown_spares_unanswered_connections() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        rt.block_on(async {
            let conns = IdleConns::default();
            let t0 = Instant::now();
            let at = |ms| t0 + Duration::from_millis(ms);
            // Registered out of age order: a keep-alive wait (t0+30), a first-request wait
            // (t0+10), a keep-alive wait (t0+20), a head in progress (t0+40).
            let mut a = std::pin::pin!(conns.wait(at(30), None, true));
            let mut b = std::pin::pin!(conns.wait(at(10), None, false));
            let mut c = std::pin::pin!(conns.wait(at(20), None, true));
            let mut d = std::pin::pin!(conns.wait(at(40), None, false));
            for f in [a.as_mut(), b.as_mut(), c.as_mut(), d.as_mut()] {
                assert!(poll_once(f).is_pending());
            }
            assert_eq!(conns.waiting(), 4);

            assert_eq!(conns.reclaim_oldest(2), 2);
            assert_eq!(poll_once(b.as_mut()), Poll::Ready(Released::Reclaimed));
            assert_eq!(poll_once(c.as_mut()), Poll::Ready(Released::Reclaimed));
            assert!(poll_once(a.as_mut()).is_pending());
            assert_eq!(conns.waiting(), 2);

            conns.shutdown();
            assert_eq!(poll_once(a.as_mut()), Poll::Ready(Released::Shutdown));
            assert!(
                poll_once(d.as_mut()).is_pending(),
                "a head in progress is answered"
            );
            // After shutdown a new keep-alive wait ends at once; a first-request wait does not.
            let mut e = std::pin::pin!(conns.wait(at(50), None, true));
            assert_eq!(poll_once(e.as_mut()), Poll::Ready(Released::Shutdown));
            let mut f = std::pin::pin!(conns.wait(at(60), None, false));
            assert!(poll_once(f.as_mut()).is_pending());
            assert_eq!(conns.reclaim_oldest(10), 2, "d and f remain reclaimable");
            assert_eq!(conns.reclaim_oldest(10), 0, "nothing left to reclaim");
        });
    }

    #[test]
    fn deadlines_expire_only_their_waits() {
        let conns = IdleConns::default();
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut a = std::pin::pin!(conns.wait(t0, Some(at(100)), true));
        let mut b = std::pin::pin!(conns.wait(t0, Some(at(300)), false));
        let mut c = std::pin::pin!(conns.wait(t0, None, true));
        for f in [a.as_mut(), b.as_mut(), c.as_mut()] {
            assert!(poll_once(f).is_pending());
        }
        assert_eq!(conns.expire(at(99)), 0);
        assert_eq!(conns.expire(at(100)), 1);
        assert_eq!(poll_once(a.as_mut()), Poll::Ready(Released::TimedOut));
        assert!(poll_once(b.as_mut()).is_pending());
        assert_eq!(conns.expire(at(10_000)), 1, "b; c has no deadline");
        assert_eq!(poll_once(b.as_mut()), Poll::Ready(Released::TimedOut));
        assert!(poll_once(c.as_mut()).is_pending());
    }

    #[test]
    fn dropped_waits_leave_nothing_behind() {
        let conns = IdleConns::default();
        for i in 0..100 {
            let mut w = std::pin::pin!(conns.wait(Instant::now(), None, i % 2 == 0));
            assert!(poll_once(w.as_mut()).is_pending());
            assert!(poll_once(w.as_mut()).is_pending(), "re-poll keeps one slot");
            assert_eq!(conns.waiters.borrow().len(), 1);
        }
        assert_eq!(conns.waiters.borrow().len(), 0);
        assert_eq!(conns.reclaim_oldest(5), 0);
    }
}

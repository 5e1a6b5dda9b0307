//! A one-shot, thread-local broadcast: "shutdown has begun" for every task of one worker.
//!
//! Tasks waiting on it (the accept loop, idle keep-alive connections) are woken when it fires.
//! Each waiting future owns one slot, replaced on every poll and removed on drop, so a
//! long-lived connection that waits many times never accumulates wakers.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

#[derive(Default)]
pub struct LocalSignal {
    fired: Cell<bool>,
    next_id: Cell<u64>,
    /// foldhash, not SipHash: every request of a keep-alive connection waits here once (an
    /// insert and a remove), and the ids are ours, not a client's.
    waiters: RefCell<HashMap<u64, Waker, foldhash::fast::FixedState>>,
}

impl LocalSignal {
    pub fn fire(&self) {
        if self.fired.replace(true) {
            return;
        }
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for (_, w) in waiters {
            w.wake();
        }
    }

    pub fn is_fired(&self) -> bool {
        self.fired.get()
    }

    /// Completes when the signal has fired.
    pub fn wait(&self) -> Wait<'_> {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        Wait { signal: self, id }
    }
}

pub struct Wait<'a> {
    signal: &'a LocalSignal,
    id: u64,
}

impl Future for Wait<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.fired.get() {
            return Poll::Ready(());
        }
        self.signal
            .waiters
            .borrow_mut()
            .insert(self.id, cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        if let Ok(mut w) = self.signal.waiters.try_borrow_mut() {
            w.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wakes_waiters_and_does_not_accumulate() {
        let s = LocalSignal::default();
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .unwrap();
        rt.block_on(async {
            {
                let w = s.wait();
                let mut w = std::pin::pin!(w);
                let waker = futures_noop_waker();
                let mut cx = Context::from_waker(&waker);
                assert!(w.as_mut().poll(&mut cx).is_pending());
                assert!(w.as_mut().poll(&mut cx).is_pending());
                assert_eq!(s.waiters.borrow().len(), 1);
            }
            assert_eq!(
                s.waiters.borrow().len(),
                0,
                "dropped waiter removed its slot"
            );
            s.fire();
            s.wait().await;
            assert!(s.is_fired());
        });
    }

    fn futures_noop_waker() -> Waker {
        Waker::noop().clone()
    }
}

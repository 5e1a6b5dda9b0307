//! Coalescing of concurrent misses and revalidations: one origin fetch per key, whichever
//! worker asks.
//!
//! The first request for a missing key becomes the *leader*: it fetches from the origin and
//! publishes what it receives into a shared [`Fill`] — the response head, then each body chunk
//! as it arrives. Requests for the same key that arrive meanwhile, on any worker, become
//! *followers*: they stream the chunks as the leader receives them (a follower of a 1 GiB fill
//! does not wait for the whole object) and share the leader's error if it fails.
//!
//! Only fills that will be cached keep followers: when the origin's answer is not cacheable
//! (too large, `no-store`, not a 200) the leader publishes [`Event::Bypass`] and followers make
//! their own request, so corvid never holds a whole uncacheable body in memory for followers.
//!
//! The leader's own client reads the fill the same way, through a [`Subscription`] of its own
//! ([`Leader::subscribe`]): the fill itself runs in a task of its own at the origin's pace
//! (`object::fill`), so no client — the one that started it included — paces the others.
//! A fill's events stay in memory while anyone still reads them: at most the object (and the
//! object is at most `cache.max_object_size`, since only cacheable fills keep followers).
//!
//! A [`Leader::detached`] fill is published the same way without being in the table (a fill
//! that no other request may join: the revalidation of a Range or HEAD request).
//!
//! The table is sharded; each lock is held for a hash-map operation or a vector push. Wakers of
//! followers on other workers are woken across threads (monoio's `sync` feature).

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;

use crate::cache::entry::Meta;
use crate::error::Error;

const SHARDS: usize = 16;

/// What a follower observes, in order: one `Head`, any number of `Chunk`s, then `End` — or
/// `Failed` / `Bypass` at any point.
#[derive(Debug, Clone)]
pub enum Event {
    /// The object's metadata and body length: the origin answered 200, or (`revalidated`)
    /// confirmed a stale entry with a 304.
    Head {
        meta: Meta,
        len: u64,
        revalidated: bool,
    },
    Chunk(Bytes),
    End,
    /// The fill failed; answer this error.
    Failed(Error),
    /// The answer will not be cached: make your own request.
    Bypass,
}

#[derive(Default)]
struct State {
    events: Vec<Event>,
    finished: bool,
    next_waiter: u64,
    waiters: HashMap<u64, Waker>,
}

/// One fill in progress.
#[derive(Default)]
pub struct Fill {
    state: Mutex<State>,
}

impl Fill {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self, e: Event) {
        let waiters = {
            let mut s = self.lock();
            if s.finished {
                return;
            }
            s.finished = matches!(e, Event::End | Event::Failed(_) | Event::Bypass);
            s.events.push(e);
            std::mem::take(&mut s.waiters)
        };
        for (_, w) in waiters {
            w.wake();
        }
    }

    /// A cursor that yields this fill's events from the beginning.
    pub fn subscribe(self: &Arc<Self>) -> Subscription {
        let id = {
            let mut s = self.lock();
            s.next_waiter += 1;
            s.next_waiter
        };
        Subscription {
            fill: Arc::clone(self),
            next: 0,
            id,
        }
    }
}

/// A follower's position in a fill.
pub struct Subscription {
    fill: Arc<Fill>,
    next: usize,
    id: u64,
}

impl Subscription {
    /// The next event; after a terminal event it keeps returning that event.
    pub fn next_event(&mut self) -> NextEvent<'_> {
        NextEvent { sub: self }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.fill.lock().waiters.remove(&self.id);
    }
}

pub struct NextEvent<'a> {
    sub: &'a mut Subscription,
}

impl Future for NextEvent<'_> {
    type Output = Event;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Event> {
        let sub = &mut *self.sub;
        let mut s = sub.fill.lock();
        if let Some(e) = s.events.get(sub.next) {
            let e = e.clone();
            if !matches!(e, Event::End | Event::Failed(_) | Event::Bypass) {
                sub.next += 1;
            }
            return Poll::Ready(e);
        }
        s.waiters.insert(sub.id, cx.waker().clone());
        Poll::Pending
    }
}

/// The coalescing table shared by all workers.
pub struct Inflight {
    shards: Vec<Mutex<HashMap<Vec<u8>, Arc<Fill>>>>,
    hasher: RandomState,
}

impl Default for Inflight {
    fn default() -> Self {
        Inflight {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }
}

/// The role a request gets for a missing key.
pub enum Role {
    Leader(Leader),
    Follower(Subscription),
}

impl Inflight {
    fn shard(&self, key: &[u8]) -> MutexGuard<'_, HashMap<Vec<u8>, Arc<Fill>>> {
        let i = self.hasher.hash_one(key) as usize % SHARDS;
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Joins the fill for `key`, creating it (and leading it) when there is none.
    pub fn join(self: &Arc<Self>, key: &[u8]) -> Role {
        let mut shard = self.shard(key);
        if let Some(fill) = shard.get(key) {
            return Role::Follower(fill.subscribe());
        }
        let fill = Arc::new(Fill::default());
        shard.insert(key.to_vec(), Arc::clone(&fill));
        Role::Leader(Leader {
            table: Some(Arc::clone(self)),
            key: key.to_vec(),
            fill,
            closed: false,
        })
    }

    /// Whether a fill of `key` is in progress.
    pub fn contains(&self, key: &[u8]) -> bool {
        self.shard(key).contains_key(key)
    }

    /// Number of fills in progress (tests, metrics).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The leader's handle. Dropping it without [`Leader::end`] fails the fill, so followers are
/// never left waiting. It owns its place in the table, so a task of its own can carry it.
pub struct Leader {
    /// None for a [`Leader::detached`] fill.
    table: Option<Arc<Inflight>>,
    key: Vec<u8>,
    fill: Arc<Fill>,
    closed: bool,
}

impl Leader {
    /// A fill outside the table: published to its own subscriptions only.
    pub fn detached() -> Leader {
        Leader {
            table: None,
            key: Vec::new(),
            fill: Arc::default(),
            closed: true,
        }
    }

    /// A cursor over this fill's events from the beginning (the leader's own client).
    pub fn subscribe(&self) -> Subscription {
        self.fill.subscribe()
    }

    /// Stops new followers from joining (the entry is in the cache now, or will not be).
    fn close(&mut self) {
        if !self.closed {
            self.closed = true;
            let Some(table) = &self.table else { return };
            let mut shard = table.shard(&self.key);
            if shard
                .get(&self.key)
                .is_some_and(|f| Arc::ptr_eq(f, &self.fill))
            {
                shard.remove(&self.key);
            }
        }
    }

    pub fn head(&self, meta: Meta, len: u64) {
        self.fill.publish(Event::Head {
            meta,
            len,
            revalidated: false,
        });
    }

    pub fn chunk(&self, data: Bytes) {
        self.fill.publish(Event::Chunk(data));
    }

    /// The body is complete. Call after the entry was stored, so that a request arriving now
    /// finds it in the cache instead of starting a new fill.
    pub fn end(mut self) {
        self.close();
        self.fill.publish(Event::End);
    }

    /// The last piece of the body, then the end: the fill leaves the table *before* anyone can
    /// read the last piece, so a request a client sends once it has its whole answer finds the
    /// stored entry (call after storing it) instead of joining this fill.
    pub fn finish(mut self, last: Bytes) {
        self.close();
        if !last.is_empty() {
            self.fill.publish(Event::Chunk(last));
        }
        self.end();
    }

    /// Publishes a whole object at once — an entry a 304 confirmed, or one a background
    /// refresh fetched — and ends the fill. Call after the entry was stored, as for `end`.
    pub fn complete(mut self, meta: Meta, body: Bytes, revalidated: bool) {
        // Out of the table first: a follower may answer as soon as it has the head.
        self.close();
        self.fill.publish(Event::Head {
            meta,
            len: body.len() as u64,
            revalidated,
        });
        self.finish(body);
    }

    pub fn fail(mut self, e: Error) {
        self.close();
        self.fill.publish(Event::Failed(e));
    }

    pub fn bypass(mut self) {
        self.close();
        self.fill.publish(Event::Bypass);
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        self.close();
        self.fill.publish(Event::Failed(Error::upstream(
            crate::error::Kind::BadGateway,
            "the request filling this object ended early",
        )));
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods, reason = "tests may block")]
mod tests {
    use super::*;

    fn meta() -> Meta {
        Meta::new(vec![], 0, 1)
    }

    #[test]
    fn followers_across_threads_stream_the_leaders_chunks() {
        let table = Arc::new(Inflight::default());
        let Role::Leader(leader) = table.join(b"k") else {
            panic!("first is leader")
        };
        let mut followers = Vec::new();
        for _ in 0..4 {
            let Role::Follower(mut sub) = table.join(b"k") else {
                panic!("then followers")
            };
            followers.push(std::thread::spawn(move || {
                let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let mut body = Vec::new();
                    let Event::Head { len, .. } = sub.next_event().await else {
                        panic!("head first")
                    };
                    loop {
                        match sub.next_event().await {
                            Event::Chunk(c) => body.extend_from_slice(&c),
                            Event::End => break,
                            other => panic!("unexpected {other:?}"),
                        }
                    }
                    assert_eq!(body.len() as u64, len);
                    body
                })
            }));
        }
        leader.head(meta(), 6);
        leader.chunk(Bytes::from_static(b"abc"));
        leader.chunk(Bytes::from_static(b"def"));
        leader.end();
        for f in followers {
            assert_eq!(f.join().unwrap(), b"abcdef");
        }
        assert!(table.is_empty());
        assert!(
            matches!(table.join(b"k"), Role::Leader(_)),
            "a finished fill is gone"
        );
    }

    #[test]
    fn dropped_leader_fails_followers_and_bypass_is_terminal() {
        let table = Arc::new(Inflight::default());
        let Role::Leader(leader) = table.join(b"a") else {
            panic!()
        };
        let Role::Follower(mut sub) = table.join(b"a") else {
            panic!()
        };
        drop(leader);
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .unwrap();
        rt.block_on(async {
            assert!(matches!(sub.next_event().await, Event::Failed(_)));
            assert!(matches!(sub.next_event().await, Event::Failed(_)));
        });
        let Role::Leader(leader) = table.join(b"b") else {
            panic!()
        };
        let Role::Follower(mut sub) = table.join(b"b") else {
            panic!()
        };
        leader.bypass();
        rt.block_on(async {
            assert!(matches!(sub.next_event().await, Event::Bypass));
        });
        assert!(table.is_empty());
    }
}

//! The purge subscriber: one dedicated connection per process (or per worker, as the caller
//! chooses) in `SUBSCRIBE` mode, reconnecting with backoff for as long as it runs. On a Redis
//! Cluster it subscribes on one seed node (a `PUBLISH` on any node reaches the subscribers of
//! all) and moves to the next seed each time the subscription drops.
//!
//! Pub/sub is at-most-once: purges published while the subscription is down are lost, so
//! entries purged meanwhile elsewhere may be served until their TTL. The subscriber logs each
//! loss and recovery of the subscription once.

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use monoio::time::Instant;

use super::conn;
use super::resp::{self, RespReader};
use super::{RedisError, RedisOptions};
use crate::config::RedisTarget;

/// TCP keepalive on the subscription: it is idle for long stretches and has no request timeout,
/// so a vanished server is only noticed this way (after about 15 s + 3 × 5 s).
const KEEPALIVE_IDLE: Duration = Duration::from_secs(15);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_RETRIES: u32 = 3;

/// A one-shot stop flag for a local task (not `Send`). Cloning shares it.
#[derive(Clone, Default)]
pub struct StopSignal(Rc<StopInner>);

#[derive(Default)]
struct StopInner {
    stopped: Cell<bool>,
    wakers: RefCell<Vec<Waker>>,
}

impl StopSignal {
    pub fn new() -> StopSignal {
        StopSignal::default()
    }

    /// Sets the flag and wakes whoever waits on it.
    pub fn stop(&self) {
        self.0.stopped.set(true);
        for w in self.0.wakers.borrow_mut().drain(..) {
            w.wake();
        }
    }

    pub fn is_stopped(&self) -> bool {
        self.0.stopped.get()
    }

    /// Runs `fut` until it completes (`Some`) or the flag is set (`None`; `fut` is dropped).
    pub async fn or_stopped<F: Future>(&self, fut: F) -> Option<F::Output> {
        let mut fut = pin!(fut);
        poll_fn(|cx| {
            if self.0.stopped.get() {
                return Poll::Ready(None);
            }
            if let Poll::Ready(v) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(v));
            }
            let mut wakers = self.0.wakers.borrow_mut();
            if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                wakers.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }
}

/// Subscribes to `channel` and calls `on_message` with the payload of every message, in order.
/// Reconnects (backoff `opts.backoff_initial` doubling to `opts.backoff_max`) whenever the
/// connection fails, forever; returns only once `stop` is set (promptly: pending IO is
/// cancelled). Run it as a monoio task.
pub async fn subscribe(
    opts: RedisOptions,
    channel: String,
    on_message: impl FnMut(Bytes) + 'static,
    stop: StopSignal,
) {
    subscribe_with(opts, channel, on_message, || {}, stop).await
}

/// [`subscribe`], calling `on_resubscribed` each time the subscription is back after it was
/// down (not on the first subscription): messages published meanwhile were lost.
pub async fn subscribe_with(
    opts: RedisOptions,
    channel: String,
    mut on_message: impl FnMut(Bytes) + 'static,
    mut on_resubscribed: impl FnMut() + 'static,
    stop: StopSignal,
) {
    if let Err(e) = opts.check() {
        log::error!("redis subscription to {channel:?} not started: {e}");
        return;
    }
    // A cluster's seeds, one after the other: a PUBLISH on any node reaches every node's
    // subscribers, so one node is enough, and the next seed takes over when it fails.
    let targets = if opts.cluster.is_empty() {
        vec![opts.clone()]
    } else {
        let seeds = opts.cluster.iter();
        match seeds
            .map(|t| opts.for_node(&t.host, t.port))
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(t) => t,
            Err(e) => {
                log::error!("redis subscription to {channel:?} not started: {e}");
                return;
            }
        }
    };
    let mut turn = 0;
    let mut backoff = opts.backoff_initial;
    // None until the first attempt settles, so a subscriber that never connects still warns.
    let mut up: Option<bool> = None;
    loop {
        let mut subscribed = false;
        let mut on_subscribed = || {
            subscribed = true;
            if up != Some(true) {
                if up.is_some() {
                    log::info!("redis subscription to {channel:?} back");
                    on_resubscribed();
                }
                up = Some(true);
            }
        };
        let node = &targets[turn % targets.len()];
        let attempt = session(
            &node.target,
            node,
            &channel,
            &mut on_message,
            &mut on_subscribed,
        );
        let err = match stop.or_stopped(attempt).await {
            None => return,
            Some(e) => e,
        };
        if subscribed {
            backoff = opts.backoff_initial;
        }
        turn += 1;
        if up != Some(false) {
            log::warn!("redis subscription to {channel:?} down: {err}; reconnecting with backoff");
            up = Some(false);
        }
        if stop
            .or_stopped(monoio::time::sleep(backoff))
            .await
            .is_none()
        {
            return;
        }
        if !subscribed {
            backoff = (backoff * 2).min(opts.backoff_max);
        }
    }
}

/// One connection's life: connect, AUTH, SUBSCRIBE, then deliver messages until it fails.
async fn session(
    target: &RedisTarget,
    opts: &RedisOptions,
    channel: &str,
    on_message: &mut impl FnMut(Bytes),
    on_subscribed: &mut impl FnMut(),
) -> RedisError {
    // Connect, TLS handshake (rediss://), AUTH and SUBSCRIBE: all within one `timeout`.
    let deadline = Instant::now() + opts.timeout;
    let stream = match conn::connect(target, opts.tls.as_ref(), deadline).await {
        Ok(s) => s,
        Err(e) => return e,
    };
    let _ = stream.tcp().set_tcp_keepalive(
        Some(KEEPALIVE_IDLE),
        Some(KEEPALIVE_INTERVAL),
        Some(KEEPALIVE_RETRIES),
    );
    let (mut rd, mut wr) = stream.into_split();

    let mut out = Vec::new();
    let mut setup = Vec::new();
    for (name, cmd) in conn::handshake(target) {
        if name == "AUTH" {
            cmd.write_packed_command(&mut out);
            setup.push(name);
        }
    }
    redis::cmd("SUBSCRIBE")
        .arg(channel)
        .write_packed_command(&mut out);
    let mut replies = RespReader::new(opts.max_reply());
    let handshake = async {
        let (res, _) = wr.write_all(out).await;
        res.map_err(RedisError::Io)?;
        for name in setup {
            resp::check(replies.next(&mut rd).await?)
                .map_err(|e| RedisError::Protocol(format!("{name} refused: {e}")))?;
        }
        match resp::check(replies.next(&mut rd).await?)? {
            redis::Value::Array(a) if a.first() == Some(&bulk(b"subscribe")) => Ok(()),
            v => Err(resp::unexpected("SUBSCRIBE", &v)),
        }
    };
    match monoio::time::timeout_at(deadline, handshake).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return e,
        Err(_) => return RedisError::Timeout,
    }
    on_subscribed();
    loop {
        let v = match replies.next(&mut rd).await {
            Ok(v) => v,
            Err(e) => return e,
        };
        match v {
            redis::Value::Array(mut a) if a.len() == 3 && a[0] == bulk(b"message") => {
                if let Some(redis::Value::BulkString(payload)) = a.pop() {
                    on_message(Bytes::from(payload));
                }
            }
            // Subscription confirmations and pongs.
            redis::Value::Array(_) => {}
            v => return resp::unexpected("a subscription", &v),
        }
    }
}

fn bulk(b: &[u8]) -> redis::Value {
    redis::Value::BulkString(b.to_vec())
}

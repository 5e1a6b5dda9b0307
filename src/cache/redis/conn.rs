//! One pipelined Redis connection, driven by two local tasks.
//!
//! Requests append their encoded command to `out` and a reply slot to `pending` in one
//! synchronous step (no await between), so the byte order on the wire and the FIFO order of
//! slots always agree. The writer task connects, then flushes whatever accumulated in `out` with
//! one write per batch; the reader task parses replies and fills slots front to back.
//!
//! Why tasks rather than "whoever calls does the IO": a caller's future can be dropped at any
//! await (its HTTP client went away), and a write or read abandoned half-way desynchronises the
//! stream for everyone else. The tasks are only ever interrupted by [`Conn::close`], after which
//! the connection is dead anyway. A request dropped by its caller leaves its slot in the FIFO;
//! the reply is parsed and discarded, and the stream stays aligned.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::pin;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use monoio::net::TcpStream;
use monoio::time::Instant;

use super::resp::{self, RespReader};
use super::stream::{self, RedisTls, Stream};
use super::{resolve, RedisError, RedisOptions};
use crate::config::RedisTarget;

/// Largest write buffer kept between batches; a batch that carried a big SET gives its memory
/// back.
const KEEP_OUT_BUF: usize = 64 * 1024;

/// Where one reply goes.
pub struct Slot {
    reply: RefCell<Option<Result<redis::Value, RedisError>>>,
    waker: RefCell<Option<Waker>>,
}

impl Slot {
    fn fill(&self, r: Result<redis::Value, RedisError>) {
        *self.reply.borrow_mut() = Some(r);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Waits for the reply. Cancel-safe (the slot just stays unread).
    pub async fn wait(&self) -> Result<redis::Value, RedisError> {
        poll_fn(|cx| {
            if let Some(r) = self.reply.borrow_mut().take() {
                return Poll::Ready(r);
            }
            *self.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

enum Pending {
    /// A connection-setup command (AUTH, SELECT): its reply is checked by the reader.
    Setup(&'static str),
    Reply(Rc<Slot>),
}

pub struct Conn {
    closed: Cell<bool>,
    out: RefCell<Vec<u8>>,
    pending: RefCell<VecDeque<Pending>>,
    writer_waker: RefCell<Option<Waker>>,
    /// The reader's and writer's wakers while they wait on IO, to interrupt them on close.
    io_wakers: RefCell<Vec<Waker>>,
}

impl Conn {
    /// Starts a connection to `opts.target`: returns at once; requests can be queued
    /// immediately and are sent once the connection (TCP, and TLS for `rediss://`) is up and
    /// the AUTH/SELECT handshake is on its way. Connecting is bounded by `opts.timeout`.
    pub fn open(opts: &RedisOptions) -> Rc<Conn> {
        let conn = Rc::new(Conn {
            closed: Cell::new(false),
            out: RefCell::new(Vec::new()),
            pending: RefCell::new(VecDeque::new()),
            writer_waker: RefCell::new(None),
            io_wakers: RefCell::new(Vec::new()),
        });
        for (name, cmd) in handshake(&opts.target) {
            cmd.write_packed_command(&mut conn.out.borrow_mut());
            conn.pending.borrow_mut().push_back(Pending::Setup(name));
        }
        if opts.readonly {
            // Once per connection: the permission lasts as long as the connection.
            redis::cmd("READONLY").write_packed_command(&mut conn.out.borrow_mut());
            conn.pending
                .borrow_mut()
                .push_back(Pending::Setup("READONLY"));
        }
        monoio::spawn(writer(
            Rc::clone(&conn),
            opts.target.clone(),
            opts.tls.clone(),
            opts.timeout,
            opts.max_reply(),
        ));
        conn
    }

    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// Queues a command; its reply arrives in the returned slot (an error if the connection
    /// dies first).
    pub fn send(&self, cmd: &redis::Cmd) -> Rc<Slot> {
        let slot = Rc::new(Slot {
            reply: RefCell::new(None),
            waker: RefCell::new(None),
        });
        if self.closed.get() {
            slot.fill(Err(RedisError::Io(io::Error::new(
                io::ErrorKind::NotConnected,
                "redis connection closed",
            ))));
            return slot;
        }
        cmd.write_packed_command(&mut self.out.borrow_mut());
        self.pending
            .borrow_mut()
            .push_back(Pending::Reply(Rc::clone(&slot)));
        if let Some(w) = self.writer_waker.borrow_mut().take() {
            w.wake();
        }
        slot
    }

    /// Kills the connection: every waiting request gets (a copy of) `err`, and both tasks stop,
    /// which closes the socket. Idempotent.
    pub fn close(&self, err: &RedisError) {
        if self.closed.replace(true) {
            return;
        }
        let pending = std::mem::take(&mut *self.pending.borrow_mut());
        for p in pending {
            if let Pending::Reply(slot) = p {
                slot.fill(Err(err.duplicate()));
            }
        }
        self.out.borrow_mut().clear();
        if let Some(w) = self.writer_waker.borrow_mut().take() {
            w.wake();
        }
        for w in self.io_wakers.borrow_mut().drain(..) {
            w.wake();
        }
    }

    /// Runs `fut` unless or until the connection is closed (`None` then; `fut` is dropped).
    async fn or_closed<F: Future>(&self, fut: F) -> Option<F::Output> {
        let mut fut = pin!(fut);
        poll_fn(|cx| {
            if self.closed.get() {
                return Poll::Ready(None);
            }
            if let Poll::Ready(v) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(v));
            }
            let mut wakers = self.io_wakers.borrow_mut();
            if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                wakers.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }

    /// The next batch of bytes to write, swapped with `spare`; `None` once closed.
    async fn next_batch(&self, spare: &mut Vec<u8>) -> Option<Vec<u8>> {
        poll_fn(|cx| {
            if self.closed.get() {
                return Poll::Ready(None);
            }
            let mut out = self.out.borrow_mut();
            if !out.is_empty() {
                return Poll::Ready(Some(std::mem::replace(&mut *out, std::mem::take(spare))));
            }
            *self.writer_waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    fn deliver(&self, v: redis::Value) -> Result<(), RedisError> {
        let front = self.pending.borrow_mut().pop_front();
        match front {
            Some(Pending::Reply(slot)) => {
                slot.fill(Ok(v));
                Ok(())
            }
            Some(Pending::Setup(what)) => match resp::check(v) {
                Ok(_) => Ok(()),
                // A refused AUTH is a configuration problem, not a per-request one: fail the
                // connection (and so enter the down state) instead of every request one by one.
                Err(e) => Err(RedisError::Protocol(format!("{what} refused: {e}"))),
            },
            None => Err(RedisError::Protocol(format!(
                "reply from redis with no request waiting: {v:?}"
            ))),
        }
    }
}

/// The commands sent on every new connection to `target`, before anything else: `AUTH [user]
/// password` when the URL has a login, `SELECT db` when its database is not 0. The name is for
/// the error when Redis refuses one.
pub fn handshake(target: &RedisTarget) -> Vec<(&'static str, redis::Cmd)> {
    let mut cmds = Vec::new();
    if let Some(login) = &target.auth {
        let mut auth = redis::cmd("AUTH");
        if let Some(user) = &login.username {
            auth.arg(user);
        }
        auth.arg(&login.password);
        cmds.push(("AUTH", auth));
    }
    if target.db != 0 {
        let mut select = redis::cmd("SELECT");
        select.arg(target.db);
        cmds.push(("SELECT", select));
    }
    cmds
}

/// Connects to `target` by `deadline`: its host resolved off this thread ([`resolve`]), then
/// each address in turn until one accepts, then, with `tls` (a `rediss://` target), the TLS
/// handshake. All of it before the one deadline: a TLS handshake (one more round trip with TLS
/// 1.3, two with 1.2) shares the connect timeout rather than getting one of its own. A failed
/// handshake is a [`RedisError::Tls`], which takes the tier down like a refused connection.
pub async fn connect(
    target: &RedisTarget,
    tls: Option<&RedisTls>,
    deadline: Instant,
) -> Result<Stream, RedisError> {
    let attempt = async {
        let mut last = io::Error::new(io::ErrorKind::NotFound, "the host has no address");
        let mut tcp = None;
        for addr in resolve::resolve(&target.host, target.port)
            .await
            .map_err(RedisError::Io)?
        {
            match TcpStream::connect_addr(addr).await {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let tcp = tcp.ok_or(RedisError::Io(last))?;
        let _ = tcp.set_nodelay(true);
        match tls {
            None => Ok(Stream::plain(tcp)),
            Some(tls) => stream::handshake(tcp, tls)
                .await
                .map_err(|e| RedisError::Tls(e.to_string())),
        }
    };
    match monoio::time::timeout_at(deadline, attempt).await {
        Ok(r) => r,
        Err(_) => Err(RedisError::Timeout),
    }
}

async fn writer(
    conn: Rc<Conn>,
    target: RedisTarget,
    tls: Option<RedisTls>,
    connect_timeout: Duration,
    max_reply: usize,
) {
    let deadline = Instant::now() + connect_timeout;
    let stream = match conn
        .or_closed(connect(&target, tls.as_ref(), deadline))
        .await
    {
        None => return,
        Some(Err(e)) => return conn.close(&e),
        Some(Ok(s)) => s,
    };
    let (read_half, mut write_half) = stream.into_split();
    monoio::spawn(reader(Rc::clone(&conn), read_half, max_reply));
    let mut spare = Vec::new();
    while let Some(batch) = conn.next_batch(&mut spare).await {
        match conn.or_closed(write_half.write_all(batch)).await {
            None => return,
            Some((Ok(()), mut buf)) => {
                buf.clear();
                if buf.capacity() > KEEP_OUT_BUF {
                    buf = Vec::new();
                }
                spare = buf;
            }
            Some((Err(e), _)) => return conn.close(&RedisError::Io(e)),
        }
    }
}

async fn reader<R: monoio::io::AsyncReadRent>(conn: Rc<Conn>, mut io: R, max_reply: usize) {
    let mut replies = RespReader::new(max_reply);
    loop {
        let v = match conn.or_closed(replies.next(&mut io)).await {
            None => return,
            Some(Ok(v)) => v,
            Some(Err(e)) => return conn.close(&e),
        };
        if let Err(e) = conn.deliver(v) {
            return conn.close(&e);
        }
    }
}

//! The Redis tier: corvid's third cache tier, a real Redis (or Valkey) at `cache.redis.url`
//! shared by several corvid instances, plus the pub/sub channel they use to broadcast purges.
//!
//! This module owns the client side of that: host name resolution off the worker thread
//! ([`resolve`]), the byte stream of a connection, plain TCP or TLS for `rediss://` (`stream`),
//! RESP framing over it (`resp`, with the `redis` crate's command encoding and reply parser,
//! never its connection layer or runtime), the per-worker pipelined connections (`conn`), the
//! up/down state machine below, and the purge subscriber ([`subscribe`]). The URL is not parsed
//! here: the config parses it once into a [`RedisTarget`] (see [`crate::config`] for the
//! rules), which [`RedisOptions`] carries; this module only turns it into the `AUTH`/`SELECT`
//! handshake of every new connection.
//!
//! # Redis Cluster (`cache.redis.cluster`)
//! With seed nodes instead of one URL ([`RedisOptions::cluster`]) the same operations route
//! each key to the master of its hash slot ([`slots`]: CRC16 with hash tags, the slot map,
//! `MOVED`/`ASK`), through one single-server client per node (its own connections, timeout
//! and down state, as below), following `MOVED` (map patched and refreshed) and `ASK`
//! (`ASKING`, once), refreshing the map in the background on failures and periodically;
//! prefix walks run on every master; with `read_from_replicas`, reads go to a replica of the
//! slot's shard (after `READONLY`); the purge subscription stays on one seed node, since a
//! `PUBLISH` on any node reaches every node's subscribers. The details and their reasons are
//! in the `cluster` module. No other module of corvid knows about slots.
//!
//! # TLS (`rediss://`)
//! [`RedisOptions::tls`] holds a [`RedisTls`]: the `rustls::ClientConfig` (public roots plus
//! `cache.redis.ca_file`, built once at start-up by [`crate::s3::tls::client_config`], the
//! same function that builds the origins' configs) in an `Arc` that every connection of every
//! worker shares, and the server name to verify (the URL's host; an IP address literal is
//! verified as an IP address SAN). Each new connection runs the handshake after TCP connect,
//! within the same `timeout` as the connect (see `conn::connect`). A failed handshake
//! ([`RedisError::Tls`]: untrusted certificate, wrong name, not a TLS port) is a connection
//! failure like any other: the operation misses, the tier goes down (logged once) and is
//! probed again after the backoff.
//!
//! # Pipelining
//! A [`RedisClient`] lives on one worker thread and owns `connections` (default 1) pipelined
//! TCP connections, used round-robin. Every task of the worker that calls the client queues its
//! command on a connection and awaits a reply slot; a writer task batches all queued commands
//! into one write, a reader task fills the slots in FIFO order. One connection carries any
//! number of in-flight commands, so a worker needs neither a pool nor a connection per request.
//! Measured (`cargo bench --bench redis`, loopback redis-server 7.0, shared 2-core machine at
//! load ~5, so absolute figures are noisy): 64 tasks doing 1 KiB GETs reach ~150k GET/s on one
//! pipelined connection (~300k/s on two) against ~30k/s for the alternative of a pool of 8
//! one-request-at-a-time connections; for 64 KiB values, 1 pipelined connection ~7k/s, 2 ~13k/s,
//! pool of 8 one-at-a-time ~12.5k/s. Large values favour more than one connection (a 4 MiB
//! reply holds up the replies queued behind it), hence the `connections` option.
//!
//! # Failure model
//! Redis is an optimisation: when it is down or slow, requests go on without it and must never
//! fail or stall because of it. Hence:
//! - every operation is bounded by `timeout` (host name lookup + connect + TLS handshake for
//!   `rediss://` + AUTH/SELECT + round trip); a caller's request is never held longer than
//!   that by this tier, and a slow DNS never blocks the worker thread itself ([`resolve`]);
//! - on a timeout or an IO/protocol error the operation returns `Err`, its connection is
//!   closed (never reused after a timeout: replies could be misaligned, and a slow Redis should
//!   not be fed more work), and the client goes *down*;
//! - while down, operations fail at once with [`RedisError::Down`] without touching the
//!   network, until the retry time; the first operation after it probes with a fresh connection
//!   (others keep failing fast meanwhile). Retry delays grow from `backoff_initial` doubling to
//!   `backoff_max`. A successful probe brings the client back up;
//! - the state change, not each request, is logged: `warn!("redis down: …")` once,
//!   `info!("redis back")` once;
//! - error replies from a healthy server (`-ERR …`) fail that operation only;
//! - every failed operation, fast-failed ones included, counts in [`RedisClient::errors`].
//!
//! A reply larger than `max(max_value_size, 1 MiB) + 64 KiB` is refused (it would otherwise be
//! buffered whole) and counts as a protocol error, which also takes the client down for one
//! backoff step.

mod cluster;
mod conn;
pub mod pubsub;
pub mod resolve;
mod resp;
pub mod slots;
mod stream;

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use monoio::time::Instant;

use self::conn::Conn;
use crate::config::RedisTarget;

pub use self::pubsub::{subscribe, subscribe_with, StopSignal};
pub use self::stream::RedisTls;

/// Settings of the Redis tier (from `cache.redis.*`).
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// The server, login and database (from `cache.redis.url`); for a cluster, the first
    /// seed node.
    pub target: RedisTarget,
    /// Seed nodes of a Redis Cluster (`cache.redis.cluster`); empty for one server. When not
    /// empty the client routes by hash slot (see the `cluster` module) and `target` is only
    /// the first seed.
    pub cluster: Vec<RedisTarget>,
    /// TLS to the server: required for a `rediss://` target, refused for `redis://`
    /// ([`RedisClient::new`] checks). Built once, shared by every connection.
    pub tls: Option<RedisTls>,
    /// Bound on every operation: connecting, the handshake and the round trip.
    pub timeout: Duration,
    /// Largest value corvid stores; larger `set`s are refused without IO.
    pub max_value_size: usize,
    /// Prepended to every key (and to `del_prefix` patterns), e.g. `"corvid:"`, so that the
    /// Redis can be shared with other users.
    pub key_prefix: String,
    /// Pipelined connections per worker (at least 1).
    pub connections: usize,
    /// First retry delay after Redis went down.
    pub backoff_initial: Duration,
    /// Retry delays double up to this.
    pub backoff_max: Duration,
    /// Send reads (`GET`, `PTTL`) to a replica of the key's shard
    /// (`cache.redis.read_from_replicas`; only with `cluster`); writes stay on the master. See
    /// the `cluster` module for the staleness this allows.
    pub read_from_replicas: bool,
    /// Send `READONLY` on every new connection, after the login: set by the cluster on its
    /// node clients when `read_from_replicas` (a replica then answers reads of its master's
    /// slots instead of redirecting them; a master accepts it and ignores it).
    pub readonly: bool,
}

impl RedisOptions {
    /// The options of a connection to one node of a cluster (or to one seed): the same
    /// login, timeout and limits, this node's address, TLS verified for this node's host.
    pub(crate) fn for_node(&self, host: &str, port: u16) -> Result<RedisOptions, String> {
        let target = RedisTarget {
            host: host.to_string(),
            port,
            db: 0,
            ..self.target.clone()
        };
        let tls = match &self.tls {
            Some(tls) => Some(tls.for_target(&target)?),
            None => None,
        };
        Ok(RedisOptions {
            target,
            cluster: Vec::new(),
            tls,
            read_from_replicas: false,
            readonly: self.read_from_replicas,
            ..self.clone()
        })
    }

    /// Options with corvid's defaults: 50 ms timeout, 4 MiB values, prefix `corvid:`, one
    /// connection per worker, backoff 100 ms doubling to 5 s, and no TLS (a `rediss://`
    /// target needs [`tls`](Self::tls) set).
    pub fn new(target: RedisTarget) -> RedisOptions {
        RedisOptions {
            target,
            cluster: Vec::new(),
            tls: None,
            timeout: Duration::from_millis(50),
            max_value_size: 4 << 20,
            key_prefix: "corvid:".into(),
            connections: 1,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            read_from_replicas: false,
            readonly: false,
        }
    }

    fn max_reply(&self) -> usize {
        self.max_value_size.max(1 << 20) + 64 * 1024
    }

    /// The checks [`RedisClient::new`] makes (no IO): a positive timeout, and TLS settings
    /// exactly when the target is `rediss://`.
    pub fn check(&self) -> Result<(), String> {
        if self.timeout.is_zero() {
            return Err("the redis timeout must be greater than zero".into());
        }
        if self.cluster.iter().any(|t| t.tls != self.target.tls) {
            return Err("the cluster seeds mix redis:// and rediss://".into());
        }
        if self.read_from_replicas && self.cluster.is_empty() {
            return Err("read_from_replicas needs a Redis Cluster (cluster seeds)".into());
        }
        match (self.target.tls, &self.tls) {
            (true, None) => Err("a rediss:// target needs TLS settings (RedisOptions::tls)".into()),
            (false, Some(_)) => Err("TLS settings given for a redis:// (plain) target".into()),
            _ => Ok(()),
        }
    }
}

#[derive(Debug)]
pub enum RedisError {
    /// The client is in its down state and did not try.
    Down,
    /// The operation did not complete within `timeout`.
    Timeout,
    Io(io::Error),
    /// The TLS handshake with a `rediss://` server failed (the message says why).
    Tls(String),
    /// Redis said something we cannot use (or a value/reply was too large).
    Protocol(String),
    /// Redis answered with an error reply.
    Server(String),
}

impl RedisError {
    /// A copy for each of several waiters (io::Error is not Clone).
    fn duplicate(&self) -> RedisError {
        match self {
            RedisError::Down => RedisError::Down,
            RedisError::Timeout => RedisError::Timeout,
            RedisError::Io(e) => RedisError::Io(io::Error::new(e.kind(), e.to_string())),
            RedisError::Tls(m) => RedisError::Tls(m.clone()),
            RedisError::Protocol(m) => RedisError::Protocol(m.clone()),
            RedisError::Server(m) => RedisError::Server(m.clone()),
        }
    }
}

impl fmt::Display for RedisError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedisError::Down => f.write_str("redis is down (waiting to retry)"),
            RedisError::Timeout => f.write_str("redis timed out"),
            RedisError::Io(e) => write!(f, "redis connection failed: {e}"),
            RedisError::Tls(m) => write!(f, "redis TLS handshake failed: {m}"),
            RedisError::Protocol(m) => write!(f, "redis protocol error: {m}"),
            RedisError::Server(m) => write!(f, "redis error reply: {m}"),
        }
    }
}

impl std::error::Error for RedisError {}

struct Health {
    up: bool,
    /// While down: no network attempt before this.
    retry_at: Instant,
    /// The delay after the next failed probe.
    backoff: Duration,
    /// Bumped when going down: results from connections of an earlier epoch (closed when the
    /// client went down) must not flip the state again.
    epoch: u64,
}

struct Inner {
    opts: RedisOptions,
    /// Slot routing over per-node clients when `opts.cluster` is not empty; `conns` and
    /// `health` are then unused (each node client has its own).
    cluster: Option<cluster::Cluster>,
    conns: RefCell<Vec<Option<Rc<Conn>>>>,
    next_conn: Cell<usize>,
    health: RefCell<Health>,
    errors: Cell<u64>,
}

/// The Redis client of one worker thread (holds `Rc`/`RefCell` state; not `Send`). Cloning is
/// cheap and shares the connections.
#[derive(Clone)]
pub struct RedisClient {
    inner: Rc<Inner>,
}

impl RedisClient {
    /// Checks the options; does no IO: the first operation connects.
    pub fn new(opts: RedisOptions) -> Result<RedisClient, String> {
        opts.check()?;
        let n = opts.connections.max(1);
        let cluster = if opts.cluster.is_empty() {
            None
        } else {
            Some(cluster::Cluster::new(&opts)?)
        };
        Ok(RedisClient {
            inner: Rc::new(Inner {
                cluster,
                conns: RefCell::new(vec![None; n]),
                next_conn: Cell::new(0),
                health: RefCell::new(Health {
                    up: true,
                    retry_at: Instant::now(),
                    backoff: opts.backoff_initial,
                    epoch: 0,
                }),
                errors: Cell::new(0),
                opts,
            }),
        })
    }

    /// `GET`: the value, or `None` when the key is absent (or expired).
    pub async fn get(&self, key: &[u8]) -> Result<Option<Bytes>, RedisError> {
        let v = self.call(redis::cmd("GET").arg(self.key(key))).await?;
        match v {
            redis::Value::Nil => Ok(None),
            redis::Value::BulkString(b) => Ok(Some(Bytes::from(b))),
            v => Err(self.count(resp::unexpected("GET", &v))),
        }
    }

    /// `GET` and `PTTL` of one key, pipelined on one connection of one node: the value, and
    /// the key's remaining TTL in milliseconds when it has one (`None` also when the `PTTL`
    /// alone failed). Both replies come from the same node — on a cluster reading from
    /// replicas, the same replica — so a value is never paired with another node's TTL (two
    /// replicas lag their master by different amounts; each read alone would be round-robin).
    pub async fn get_with_pttl(
        &self,
        key: &[u8],
    ) -> Result<(Option<Bytes>, Option<u64>), RedisError> {
        let full = self.key(key);
        let get = redis::cmd("GET").arg(&full).clone();
        let pttl = redis::cmd("PTTL").arg(&full).clone();
        let mut replies = self.call_all(&[&get, &pttl]).await?.into_iter();
        let value = match replies.next() {
            Some(Ok(redis::Value::Nil)) => None,
            Some(Ok(redis::Value::BulkString(b))) => Some(Bytes::from(b)),
            Some(Ok(v)) => return Err(self.count(resp::unexpected("GET", &v))),
            Some(Err(e)) => return Err(self.count(e)),
            None => return Err(self.count(missing_reply("GET"))),
        };
        let ttl = match replies.next() {
            Some(Ok(redis::Value::Int(ms))) => u64::try_from(ms).ok().filter(|&ms| ms > 0),
            Some(Ok(v)) => {
                self.count(resp::unexpected("PTTL", &v));
                None
            }
            Some(Err(e)) => {
                self.count(e);
                None
            }
            None => None,
        };
        Ok((value, ttl))
    }

    /// `SET key value PX ttl` (a TTL under 1 ms is rounded up to 1 ms).
    pub async fn set(&self, key: &[u8], value: &[u8], ttl: Duration) -> Result<(), RedisError> {
        if value.len() > self.inner.opts.max_value_size {
            return Err(self.count(RedisError::Protocol(format!(
                "value of {} bytes is larger than max_value_size",
                value.len()
            ))));
        }
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(key)).arg(value).arg("PX").arg(ttl_ms(ttl));
        match self.call(&cmd).await? {
            redis::Value::Okay => Ok(()),
            v => Err(self.count(resp::unexpected("SET", &v))),
        }
    }

    /// `PEXPIRE`: sets a new TTL; `false` when the key no longer exists.
    pub async fn pexpire(&self, key: &[u8], ttl: Duration) -> Result<bool, RedisError> {
        let v = self
            .call(redis::cmd("PEXPIRE").arg(self.key(key)).arg(ttl_ms(ttl)))
            .await?;
        resp::int("PEXPIRE", v)
            .map(|n| n == 1)
            .map_err(|e| self.count(e))
    }

    /// `DEL`: `true` when the key existed.
    pub async fn del(&self, key: &[u8]) -> Result<bool, RedisError> {
        let v = self.call(redis::cmd("DEL").arg(self.key(key))).await?;
        resp::int("DEL", v)
            .map(|n| n > 0)
            .map_err(|e| self.count(e))
    }

    /// Deletes every key starting with `prefix` (after the key prefix): `SCAN MATCH <escaped
    /// prefix>* COUNT 1000`, `UNLINK` per batch. Returns how many keys went. Each command is
    /// bounded by `timeout`, the whole walk is not (it is as long as the keyspace); it stops at
    /// the first error. Keys added during the walk may survive it (SCAN's guarantee).
    pub async fn del_prefix(&self, prefix: &[u8]) -> Result<u64, RedisError> {
        let mut deleted = 0;
        self.del_prefix_counted(prefix, &mut deleted)
            .await
            .map(|()| deleted)
    }

    /// [`del_prefix`](Self::del_prefix), adding to `deleted` batch by batch, so that a caller
    /// still learns how many keys went when the walk fails part-way.
    pub async fn del_prefix_counted(
        &self,
        prefix: &[u8],
        deleted: &mut u64,
    ) -> Result<(), RedisError> {
        self.walk_prefix(prefix, deleted, "UNLINK", |keys| {
            let mut unlink = redis::cmd("UNLINK");
            for k in keys {
                unlink.arg(&k[..]);
            }
            unlink
        })
        .await
    }

    /// Soft purge of one key: its TTL becomes at most `ttl` (a longer TTL is cut to it, a
    /// shorter one stays), atomically in one script. With `ttl` the tier's retention past
    /// freshness ([`crate::cache::redis_tier::retain`]) the entry reads as stale from now
    /// on, for every instance, while it stays available for revalidation. `true` when the
    /// key exists.
    pub async fn mark_stale(&self, key: &[u8], ttl: Duration) -> Result<bool, RedisError> {
        let cmd = mark_stale_cmd(&[self.key(key)], ttl);
        let n = resp::int("EVAL", self.call(&cmd).await?).map_err(|e| self.count(e))?;
        Ok(n > 0)
    }

    /// [`mark_stale`](Self::mark_stale) for every key starting with `prefix`, walked like
    /// [`del_prefix`](Self::del_prefix) (one script per `SCAN` batch); adds the keys marked
    /// to `marked` batch by batch.
    pub async fn mark_stale_prefix_counted(
        &self,
        prefix: &[u8],
        ttl: Duration,
        marked: &mut u64,
    ) -> Result<(), RedisError> {
        self.walk_prefix(prefix, marked, "EVAL", |keys| mark_stale_cmd(keys, ttl))
            .await
    }

    /// `SCAN MATCH <escaped prefix>* COUNT 1000`, running `op(batch)` (which answers an
    /// integer, added to `counted`) on each non-empty batch of full keys.
    async fn walk_prefix(
        &self,
        prefix: &[u8],
        counted: &mut u64,
        what: &str,
        op: impl Fn(&[Vec<u8>]) -> redis::Cmd,
    ) -> Result<(), RedisError> {
        let mut pattern = glob_escape(&self.key(prefix));
        pattern.push(b'*');
        if self.inner.cluster.is_some() {
            return cluster::walk(self, &pattern, counted, what, op)
                .await
                .map_err(|e| self.count(e));
        }
        let mut cursor: u64 = 0;
        loop {
            let v = self
                .call(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern[..])
                        .arg("COUNT")
                        .arg(1000),
                )
                .await?;
            let (next, keys) = parse_scan(v).map_err(|e| self.count(e))?;
            if !keys.is_empty() {
                let n = resp::int(what, self.call(&op(&keys)).await?).map_err(|e| self.count(e))?;
                *counted += n.max(0) as u64;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// `PUBLISH` on `channel` (not key-prefixed); returns how many subscribers received it
    /// (on a cluster: published on the first seed that answers, where the subscriptions are
    /// while that seed is up, so the count covers them; see the `cluster` module).
    pub async fn publish(&self, channel: &str, message: &[u8]) -> Result<u64, RedisError> {
        let cmd = redis::cmd("PUBLISH").arg(channel).arg(message).clone();
        let v = match &self.inner.cluster {
            Some(_) => cluster::publish(self, &cmd)
                .await
                .map_err(|e| self.count(e))?,
            None => self.call(&cmd).await?,
        };
        resp::int("PUBLISH", v)
            .map(|n| n.max(0) as u64)
            .map_err(|e| self.count(e))
    }

    /// `PUBSUB NUMSUB channel`: how many subscriptions `channel` has (across all clients of
    /// this Redis; for a cluster, summed over every node that answers, since each node counts
    /// only its own subscribers). For health checks and tests.
    pub async fn subscribers(&self, channel: &str) -> Result<u64, RedisError> {
        if self.inner.cluster.is_some() {
            return cluster::subscribers(self, channel)
                .await
                .map_err(|e| self.count(e));
        }
        let v = self
            .call(redis::cmd("PUBSUB").arg("NUMSUB").arg(channel))
            .await?;
        match v {
            redis::Value::Array(a) if a.len() == 2 => match a[1] {
                redis::Value::Int(n) => Ok(n.max(0) as u64),
                ref v => Err(self.count(resp::unexpected("PUBSUB NUMSUB", v))),
            },
            v => Err(self.count(resp::unexpected("PUBSUB NUMSUB", &v))),
        }
    }

    /// Sends any command (keys are not prefixed): the reply, with error replies as
    /// `Err(Server)`. Subject to the same timeout and down state as everything else. On a
    /// cluster it goes to the node serving its key (the first argument, or the first key of
    /// `EVAL`/`EVALSHA`), or to any node for a command without arguments.
    pub async fn command(&self, cmd: &redis::Cmd) -> Result<redis::Value, RedisError> {
        self.call(cmd).await
    }

    /// For a cluster, starts the worker's standing refresh of the slot map (every 5 s, used or
    /// not; see the `cluster` module); nothing for one server. Call it on the worker's
    /// runtime; calling it again does nothing.
    pub fn keep_map_fresh(&self) {
        if self.inner.cluster.is_some() {
            cluster::keep_fresh(self);
        }
    }

    /// `false` while in the down state (for a cluster: while no node is known to be up).
    pub fn is_up(&self) -> bool {
        match &self.inner.cluster {
            Some(c) => c.any_up(),
            None => self.inner.health.borrow().up,
        }
    }

    /// Operations that returned `Err` so far, fast-failed ones included.
    pub fn errors(&self) -> u64 {
        self.inner.errors.get()
    }

    fn key(&self, key: &[u8]) -> Vec<u8> {
        let prefix = self.inner.opts.key_prefix.as_bytes();
        let mut k = Vec::with_capacity(prefix.len() + key.len());
        k.extend_from_slice(prefix);
        k.extend_from_slice(key);
        k
    }

    fn count(&self, e: RedisError) -> RedisError {
        self.inner.errors.set(self.inner.errors.get() + 1);
        e
    }

    /// One round trip under the failure model (routed by slot on a cluster); counts failures,
    /// error replies included.
    async fn call(&self, cmd: &redis::Cmd) -> Result<redis::Value, RedisError> {
        let r = match self.call_all(&[cmd]).await {
            Ok(replies) => replies
                .into_iter()
                .next()
                .unwrap_or_else(|| Err(missing_reply("a command"))),
            Err(e) => return Err(e),
        };
        r.map_err(|e| self.count(e))
    }

    /// Commands on one key (one hash slot), pipelined on one connection under the failure
    /// model (on a cluster, of the one node their slot routes to): a reply per command, error
    /// replies as `Err(Server)` in their place. `Err` for the whole when the connection,
    /// timeout or down state failed them all (counted here, once).
    async fn call_all(
        &self,
        cmds: &[&redis::Cmd],
    ) -> Result<Vec<Result<redis::Value, RedisError>>, RedisError> {
        let r = match &self.inner.cluster {
            Some(_) => cluster::call_all(self, cmds).await,
            None => {
                let deadline = Instant::now() + self.inner.opts.timeout;
                self.pipeline_at(cmds, false, deadline).await
            }
        };
        r.map_err(|e| self.count(e))
    }

    /// One command on one of this client's connections, answered by `deadline`; with
    /// `asking`, preceded by `ASKING` on the same connection (the one-shot permission of a
    /// Redis Cluster `ASK` redirection).
    async fn round_trip_at(
        &self,
        cmd: &redis::Cmd,
        asking: bool,
        deadline: Instant,
    ) -> Result<redis::Value, RedisError> {
        match self.pipeline_at(&[cmd], asking, deadline).await?.pop() {
            Some(r) => r,
            None => Err(missing_reply("a command")),
        }
    }

    /// Commands on one of this client's connections, queued in one synchronous step (adjacent
    /// on the wire, so one server answers them in order), all answered by `deadline`: a reply
    /// per command, error replies as `Err(Server)` in their place. With `asking`, each command
    /// is preceded by `ASKING` on the same connection (the one-shot permission of a Redis
    /// Cluster `ASK` redirection, good for one command; its error reply is the `Err` of the
    /// whole).
    async fn pipeline_at(
        &self,
        cmds: &[&redis::Cmd],
        asking: bool,
        deadline: Instant,
    ) -> Result<Vec<Result<redis::Value, RedisError>>, RedisError> {
        let epoch = self.admit()?;
        let conn = self.pick_conn();
        // All queued in one synchronous step: adjacent on the wire. `ASKING` allows only the
        // one command after it, so each command gets its own.
        let slots = cmds
            .iter()
            .map(|cmd| {
                let asked = asking.then(|| conn.send(&redis::cmd("ASKING")));
                (asked, conn.send(cmd))
            })
            .collect::<Vec<_>>();
        let replies = async {
            let mut replies = Vec::with_capacity(slots.len());
            for (asked, slot) in &slots {
                if let Some(asked) = asked {
                    resp::check(asked.wait().await?)?;
                }
                replies.push(slot.wait().await?);
            }
            Ok(replies)
        };
        match monoio::time::timeout_at(deadline, replies).await {
            Ok(Ok(v)) => {
                self.succeeded(epoch);
                Ok(v.into_iter().map(resp::check).collect())
            }
            Ok(Err(e @ RedisError::Server(_))) => Err(e),
            Ok(Err(e)) => {
                self.failed(&e, epoch);
                Err(e)
            }
            Err(_) => {
                conn.close(&RedisError::Timeout);
                self.failed(&RedisError::Timeout, epoch);
                Err(RedisError::Timeout)
            }
        }
    }

    /// Lets an operation through (returning the epoch it runs in) or fails it fast while down.
    fn admit(&self) -> Result<u64, RedisError> {
        let mut h = self.inner.health.borrow_mut();
        if h.up {
            return Ok(h.epoch);
        }
        let now = Instant::now();
        if now < h.retry_at {
            return Err(RedisError::Down);
        }
        // This operation is the probe; push the next attempt out now so that operations
        // arriving while it is in flight keep failing fast.
        h.retry_at = now + h.backoff;
        h.backoff = (h.backoff * 2).min(self.inner.opts.backoff_max);
        Ok(h.epoch)
    }

    /// Closes every connection (a node that left the cluster); the next operation would open
    /// new ones.
    fn close_all(&self) {
        for c in self.inner.conns.borrow_mut().iter_mut() {
            if let Some(c) = c.take() {
                c.close(&RedisError::Down);
            }
        }
    }

    fn pick_conn(&self) -> Rc<Conn> {
        let inner = &*self.inner;
        let mut conns = inner.conns.borrow_mut();
        let i = inner.next_conn.get() % conns.len();
        inner.next_conn.set(i + 1);
        match &conns[i] {
            Some(c) if !c.is_closed() => Rc::clone(c),
            _ => {
                let c = Conn::open(&inner.opts);
                conns[i] = Some(Rc::clone(&c));
                c
            }
        }
    }

    fn succeeded(&self, epoch: u64) {
        let mut h = self.inner.health.borrow_mut();
        if !h.up && h.epoch == epoch {
            h.up = true;
            h.backoff = self.inner.opts.backoff_initial;
            log::info!("redis back");
        }
    }

    fn failed(&self, e: &RedisError, epoch: u64) {
        if matches!(e, RedisError::Server(_)) {
            return;
        }
        let mut h = self.inner.health.borrow_mut();
        if !h.up || h.epoch != epoch {
            return;
        }
        h.up = false;
        h.epoch += 1;
        h.retry_at = Instant::now() + self.inner.opts.backoff_initial;
        h.backoff = (self.inner.opts.backoff_initial * 2).min(self.inner.opts.backoff_max);
        drop(h);
        log::warn!(
            "redis down: {e} ({}); its keys are misses meanwhile, retrying in {:?}",
            self.inner.opts.target.authority(),
            self.inner.opts.backoff_initial
        );
        // Other connections may be fine, but a probe should decide that: a slow Redis must not
        // keep receiving work through them.
        for c in self.inner.conns.borrow_mut().iter_mut() {
            if let Some(c) = c.take() {
                c.close(&RedisError::Down);
            }
        }
    }
}

/// Cuts the TTL of each existing key of `KEYS` to at most `ARGV[1]` ms; answers how many
/// existed.
const MARK_STALE: &str = "local n = 0 \
for _, k in ipairs(KEYS) do \
  local t = redis.call('PTTL', k) \
  if t ~= -2 then \
    n = n + 1 \
    if t == -1 or t > tonumber(ARGV[1]) then redis.call('PEXPIRE', k, ARGV[1]) end \
  end \
end \
return n";

fn mark_stale_cmd(keys: &[Vec<u8>], ttl: Duration) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(MARK_STALE).arg(keys.len());
    for k in keys {
        cmd.arg(&k[..]);
    }
    cmd.arg(ttl_ms(ttl));
    cmd
}

fn ttl_ms(ttl: Duration) -> u64 {
    (ttl.as_millis().min(u64::MAX as u128) as u64).max(1)
}

/// Escapes Redis glob metacharacters so that `bytes` matches only itself in `SCAN MATCH`.
pub fn glob_escape(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 8);
    for &b in bytes {
        if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
            out.push(b'\\');
        }
        out.push(b);
    }
    out
}

fn parse_scan(v: redis::Value) -> Result<(u64, Vec<Vec<u8>>), RedisError> {
    let bad = |v: &redis::Value| resp::unexpected("SCAN", v);
    let redis::Value::Array(mut parts) = v else {
        return Err(bad(&v));
    };
    if parts.len() != 2 {
        return Err(bad(&redis::Value::Array(parts)));
    }
    let keys = parts.pop();
    let cursor = parts.pop();
    let cursor = match cursor {
        Some(redis::Value::BulkString(c)) => std::str::from_utf8(&c)
            .ok()
            .and_then(|c| c.parse::<u64>().ok())
            .ok_or_else(|| RedisError::Protocol("bad SCAN cursor".into()))?,
        other => return Err(bad(&other.unwrap_or_default())),
    };
    let keys = match keys {
        Some(redis::Value::Array(keys)) => keys
            .into_iter()
            .map(|k| match k {
                redis::Value::BulkString(k) => Ok(k),
                other => Err(bad(&other)),
            })
            .collect::<Result<Vec<_>, _>>()?,
        other => return Err(bad(&other.unwrap_or_default())),
    };
    Ok((cursor, keys))
}

/// A pipeline answered with fewer replies than commands (cannot happen on a healthy stream:
/// a protocol error rather than a panic).
fn missing_reply(what: &str) -> RedisError {
    RedisError::Protocol(format!("no reply to {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_escape_quotes_every_metacharacter() {
        assert_eq!(
            glob_escape(b"a*b?c[d]e\\f"),
            b"a\\*b\\?c\\[d\\]e\\\\f".to_vec()
        );
        assert_eq!(glob_escape(b"plain/key"), b"plain/key".to_vec());
    }

    #[test]
    fn scan_replies_parse() {
        use redis::Value::*;
        let v = Array(vec![
            BulkString(b"17".to_vec()),
            Array(vec![BulkString(b"k1".to_vec()), BulkString(b"k2".to_vec())]),
        ]);
        assert_eq!(
            parse_scan(v).unwrap(),
            (17, vec![b"k1".to_vec(), b"k2".to_vec()])
        );
        assert!(parse_scan(Int(3)).is_err());
    }

    fn target(url: &str) -> RedisTarget {
        url.parse().unwrap()
    }

    #[test]
    fn new_checks_options_without_io() {
        assert!(RedisClient::new(RedisOptions::new(target("redis://127.0.0.1:1"))).is_ok());
        let mut opts = RedisOptions::new(target("redis://127.0.0.1:1"));
        opts.timeout = Duration::ZERO;
        assert!(RedisClient::new(opts).is_err());
        // TLS settings exactly for rediss://.
        let tls = |url: &str| {
            let config = crate::s3::tls::client_config(None, &[]).unwrap();
            RedisTls::new(&target(url), config).unwrap()
        };
        let opts = RedisOptions::new(target("rediss://127.0.0.1:1"));
        let e = RedisClient::new(opts.clone()).err().unwrap();
        assert!(e.contains("needs TLS settings"), "{e}");
        let opts = RedisOptions {
            tls: Some(tls("rediss://127.0.0.1:1")),
            ..opts
        };
        assert!(RedisClient::new(opts).is_ok());
        let opts = RedisOptions {
            tls: Some(tls("rediss://127.0.0.1:1")),
            ..RedisOptions::new(target("redis://127.0.0.1:1"))
        };
        let e = RedisClient::new(opts).err().unwrap();
        assert!(e.contains("plain"), "{e}");
    }

    #[test]
    fn handshake_follows_the_target() {
        let names = |url: &str| -> Vec<(&str, Vec<u8>)> {
            conn::handshake(&target(url))
                .into_iter()
                .map(|(n, c)| (n, c.get_packed_command()))
                .collect()
        };
        assert!(names("redis://h").is_empty());
        assert!(names("redis://h/0").is_empty());
        let packed = |args: &[&str]| {
            let mut c = redis::cmd(args[0]);
            for a in &args[1..] {
                c.arg(*a);
            }
            c.get_packed_command()
        };
        assert_eq!(
            names("redis://:p%40ss@h"),
            [("AUTH", packed(&["AUTH", "p@ss"]))]
        );
        assert_eq!(
            names("redis://alice:pw@h/3"),
            [
                ("AUTH", packed(&["AUTH", "alice", "pw"])),
                ("SELECT", packed(&["SELECT", "3"]))
            ]
        );
    }

    #[test]
    fn down_state_fails_fast_and_counts() {
        let rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build();
        rt.unwrap().block_on(async {
            // Port 1 on loopback: connection refused at once.
            let mut opts = RedisOptions::new(target("redis://127.0.0.1:1"));
            opts.backoff_initial = Duration::from_secs(60);
            let c = RedisClient::new(opts).unwrap();
            assert!(c.is_up());
            assert!(matches!(c.get(b"k").await, Err(RedisError::Io(_))));
            assert!(!c.is_up());
            for _ in 0..10 {
                assert!(matches!(c.get(b"k").await, Err(RedisError::Down)));
            }
            assert_eq!(c.errors(), 11);
        });
    }
}

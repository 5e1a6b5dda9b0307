//! Redis Cluster routing behind the same [`RedisClient`] operations: one client per node
//! (each with its own pipelined connections, timeout and down state: a single-server client
//! of this module's parent, so a dead node fails fast and is probed with backoff exactly like
//! a dead single server), and a slot map saying which node serves each key.
//!
//! - **Routing**: every command goes to the master of its key's hash slot ([`slots`]); the key
//!   is the command's first argument (the first key of `EVAL`), which holds for every command
//!   corvid sends. Before the map is known (the first operations of a worker) a command goes
//!   to a seed node and the `MOVED` answer routes it.
//! - **`MOVED slot node`**: the slot now lives on `node`: the map is patched, the command is
//!   sent there once more, and a full refresh of the map is scheduled (one moved slot usually
//!   means a resharding or a failover moved many).
//! - **`ASK slot node`**: the slot is being migrated and this key is on `node` already: the
//!   command is sent there once, preceded by `ASKING` on the same connection; the map is left
//!   alone (the slot still belongs to the source until the migration ends).
//! - At most two redirections per operation, and the whole operation — redirections included
//!   — is bounded by one `timeout`, like a single-server operation.
//! - **Map refresh** (`CLUSTER SHARDS`, or `CLUSTER SLOTS` from a server older than Redis 7,
//!   asked of the known masters, then the other known nodes, then the seeds, until one
//!   answers; a map covering every slot is preferred): in a
//!   background task of the worker, never in the request's path, when an operation failed on
//!   a connection error, timeout or down node (a failover promotes a replica that only the new
//!   map names), after a `MOVED` or `CLUSTERDOWN`, and every [`REFRESH_EVERY`] on a standing
//!   timer of the worker ([`keep_fresh`]), idle or not, so a failover is in the map before the
//!   first request after it; error-triggered refreshes are at least `backoff_initial` apart. Nodes
//!   that left the map have their connections closed.
//! - **Multi-key walks** (`del_prefix*`, `mark_stale_prefix*`): `SCAN` runs on every master of
//!   the map; the keys found are deleted (marked) in one command per hash slot, since a
//!   multi-key command must not span slots (`CROSSSLOT`). A master that fails does not stop the
//!   walk over the others; the first error is returned after all were tried. Keys of a slot
//!   being migrated may be missed (SCAN's guarantee is per node).
//! - **Pub/sub**: a `PUBLISH` on any node of a cluster reaches the subscribers of every node
//!   (the cluster bus forwards it), so the purge subscription stays on one node — the first
//!   seed, then the next seed each time the subscription drops ([`super::pubsub`]). The count a
//!   `PUBLISH` answers is that node's subscribers only, so purges are published on the seeds
//!   in the same order (the first that answers): while the first seed is up the count is
//!   every instance's subscription; after it failed, a lower bound until the subscriptions
//!   have all moved on. [`RedisClient::subscribers`] sums `PUBSUB NUMSUB` over every node of
//!   the map.
//!   Classic rather than sharded pub/sub (`SPUBLISH`, Redis 7): the purge channel is one key,
//!   its messages are rare, and classic pub/sub works on every cluster version.
//! - **Reads from replicas** (`read_from_replicas`, off by default): `GET` and `PTTL` go to
//!   a replica of the key's shard, round-robin over the replicas the map names whose node
//!   client is not in its down state, and to the master when none is (or the map names none).
//!   A lookup's `GET` and `PTTL` are one pipeline ([`call_all`]): one routing decision, one
//!   connection, so the TTL is always the value's own replica's (replicas lag by different
//!   amounts: another replica may have another TTL, or no key at all). Every write, delete,
//!   `EVAL`, walk and publish goes to the master as before. Each node connection sends
//!   `READONLY` once, after the login, so a replica answers reads of its master's slots
//!   instead of redirecting them (a `MOVED` from a replica is followed like any other).
//!   Staleness: Redis replicates asynchronously, so a replica is behind its master
//!   by the replication lag — usually well under a millisecond on one network, but Redis puts
//!   no bound on it. A value just filled may miss once on another instance (a miss, never a
//!   wrong body: each key's value is written whole); a purge (`DEL`, or a soft purge's mark)
//!   may be unseen by a replica read for the same lag, i.e. a purged object may still be
//!   served from Redis for that long (the memory and disk tiers are purged independently). A
//!   replica cut off from its master keeps serving its old data (`replica-serve-stale-data
//!   yes`, Redis's default) until it reconnects or the failover ends, up to about
//!   `cluster-node-timeout`; set `replica-serve-stale-data no` on the replicas to turn those
//!   reads into misses. Expiry is not stale: a replica reports an expired key as absent.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use monoio::time::Instant;

use super::slots::{self, NodeAddr, Redirect, SlotMap};
use super::{resp, RedisClient, RedisError, RedisOptions};

/// Time between two refreshes of the slot map (the standing timer's period, and the longest
/// gap while the client is used).
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);

/// Redirections followed per operation (a `MOVED` then an `ASK` is the longest useful chain).
const MAX_REDIRECTS: usize = 2;

/// The cluster state of one worker's [`RedisClient`].
pub(super) struct Cluster {
    /// The options every node client is made from ([`RedisOptions::for_node`]).
    base: RedisOptions,
    seeds: Vec<NodeAddr>,
    map: RefCell<SlotMap>,
    nodes: RefCell<HashMap<NodeAddr, RedisClient>>,
    /// A refresh task is running.
    refreshing: Cell<bool>,
    /// When the last refresh started.
    refreshed_at: Cell<Option<Instant>>,
    /// Round-robin over masters (or seeds) for commands whose slot has no known master.
    next: Cell<usize>,
    /// A node answered `CLUSTER SHARDS` with an error (Redis < 7): refreshes use
    /// `CLUSTER SLOTS` from then on.
    no_shards: Cell<bool>,
    /// The standing refresh task was started ([`keep_fresh`]).
    standing: Cell<bool>,
    /// Round-robin over a shard's replicas for reads ([`RedisOptions::read_from_replicas`]).
    next_replica: Cell<usize>,
}

impl Cluster {
    /// Checks that every seed gets valid node options (a `rediss://` seed host must be a TLS
    /// server name); no IO.
    pub fn new(opts: &RedisOptions) -> Result<Cluster, String> {
        let seeds = opts
            .cluster
            .iter()
            .map(|t| NodeAddr {
                host: t.host.clone(),
                port: t.port,
            })
            .collect::<Vec<_>>();
        for s in &seeds {
            opts.for_node(&s.host, s.port)?;
        }
        Ok(Cluster {
            base: opts.clone(),
            seeds,
            map: RefCell::new(SlotMap::default()),
            nodes: RefCell::new(HashMap::new()),
            refreshing: Cell::new(false),
            refreshed_at: Cell::new(None),
            next: Cell::new(0),
            next_replica: Cell::new(0),
            no_shards: Cell::new(false),
            standing: Cell::new(false),
        })
    }

    /// The client of node `addr` (created on first use; connects on its first command).
    fn node(&self, addr: &NodeAddr) -> Result<RedisClient, RedisError> {
        if let Some(c) = self.nodes.borrow().get(addr) {
            return Ok(c.clone());
        }
        let opts = self
            .base
            .for_node(&addr.host, addr.port)
            .map_err(RedisError::Protocol)?;
        let c = RedisClient::new(opts).map_err(RedisError::Protocol)?;
        self.nodes.borrow_mut().insert(addr.clone(), c.clone());
        Ok(c)
    }

    /// Whether some node is not in its down state (or none was tried yet).
    pub fn any_up(&self) -> bool {
        let nodes = self.nodes.borrow();
        nodes.is_empty() || nodes.values().any(RedisClient::is_up)
    }

    /// Where a command for `slot` goes: its master, else (unknown slot, or no key) any
    /// master of the map, else a seed, round-robin.
    fn route(&self, slot: Option<u16>) -> NodeAddr {
        let map = self.map.borrow();
        if let Some(a) = slot.and_then(|s| map.master(s)) {
            return a.clone();
        }
        let i = self.next.get();
        self.next.set(i.wrapping_add(1));
        let masters = map.masters().collect::<Vec<_>>();
        if masters.is_empty() {
            self.seeds[i % self.seeds.len()].clone()
        } else {
            masters[i % masters.len()].clone()
        }
    }

    /// Where a read for `slot` goes: a replica of its shard that is up (round-robin), else
    /// its master, else as [`route`](Self::route).
    fn route_read(&self, slot: Option<u16>) -> NodeAddr {
        {
            let map = self.map.borrow();
            if let Some((s, master)) = slot.and_then(|s| Some((s, map.master(s)?))) {
                let replicas = map.replicas(s).collect::<Vec<_>>();
                let turn = self.next_replica.get();
                self.next_replica.set(turn.wrapping_add(1));
                let nodes = self.nodes.borrow();
                let up = |a: &NodeAddr| nodes.get(a).is_none_or(RedisClient::is_up);
                return read_node(master, &replicas, turn, up).clone();
            }
        }
        self.route(slot)
    }

    /// Starts a background refresh unless one runs or the last began less than `min_gap`
    /// ago.
    fn refresh_after(&self, client: &RedisClient, min_gap: Duration) {
        if self.refreshing.get() {
            return;
        }
        let now = Instant::now();
        if let Some(t) = self.refreshed_at.get() {
            if now < t + min_gap {
                return;
            }
        }
        self.refreshing.set(true);
        self.refreshed_at.set(Some(now));
        let client = client.clone();
        monoio::spawn(async move {
            if let Err(e) = refresh(&client).await {
                log::debug!("redis cluster: slot map refresh failed: {e}");
            }
            cluster(&client).refreshing.set(false);
        });
    }

    /// A refresh because something failed or moved.
    fn refresh_soon(&self, client: &RedisClient) {
        self.refresh_after(client, self.base.backoff_initial);
    }

    fn install(&self, map: SlotMap) {
        let keep = |a: &NodeAddr| map.nodes().contains(a) || self.seeds.contains(a);
        self.nodes.borrow_mut().retain(|a, c| {
            let k = keep(a);
            if !k {
                c.close_all();
            }
            k
        });
        *self.map.borrow_mut() = map;
    }
}

fn cluster(client: &RedisClient) -> &Cluster {
    client
        .inner
        .cluster
        .as_ref()
        .expect("cluster operation on a single-server client")
}

/// The key a command is routed by: its first argument, or the first key of `EVAL`/`EVALSHA`
/// (`None` for a command without one).
fn routing_key(cmd: &redis::Cmd) -> Option<&[u8]> {
    let mut args = cmd.args_iter().filter_map(|a| match a {
        redis::Arg::Simple(b) => Some(b),
        _ => None,
    });
    let name = args.next()?;
    if name.eq_ignore_ascii_case(b"EVAL") || name.eq_ignore_ascii_case(b"EVALSHA") {
        let _script = args.next()?;
        if args.next()? == b"0" {
            return None;
        }
    }
    args.next()
}

/// Whether `cmd` only reads (may be answered by a replica): `GET` and `PTTL`.
fn is_read(cmd: &redis::Cmd) -> bool {
    match cmd.args_iter().next() {
        Some(redis::Arg::Simple(name)) => {
            name.eq_ignore_ascii_case(b"GET") || name.eq_ignore_ascii_case(b"PTTL")
        }
        _ => false,
    }
}

/// The node a read goes to: the first replica that `is_up`, trying them in turn from `turn`
/// (modulo their number: round-robin when `turn` grows by one per read), else `master`.
fn read_node<'a>(
    master: &'a NodeAddr,
    replicas: &[&'a NodeAddr],
    turn: usize,
    is_up: impl Fn(&NodeAddr) -> bool,
) -> &'a NodeAddr {
    let n = replicas.len();
    (0..n)
        .map(|i| replicas[(turn + i) % n])
        .find(|r| is_up(r))
        .unwrap_or(master)
}

/// One command, routed by slot, following `MOVED` and `ASK`, bounded by one `timeout`.
/// Errors are not counted here (the caller does).
pub(super) async fn call(
    client: &RedisClient,
    cmd: &redis::Cmd,
) -> Result<redis::Value, RedisError> {
    match call_all(client, &[cmd]).await?.into_iter().next() {
        Some(r) => r,
        None => Err(RedisError::Protocol("no reply from the cluster".into())),
    }
}

/// Commands on one key, routed by its slot to ONE node and pipelined on one of its
/// connections (so the replies of a `GET` and a `PTTL` read from replicas come from the same
/// replica), following `MOVED` and `ASK` for all of them together, bounded by one `timeout`:
/// a reply per command, error replies in their place. Errors are not counted here (the caller
/// does).
pub(super) async fn call_all(
    client: &RedisClient,
    cmds: &[&redis::Cmd],
) -> Result<Vec<Result<redis::Value, RedisError>>, RedisError> {
    let c = cluster(client);
    let deadline = Instant::now() + client.inner.opts.timeout;
    c.refresh_after(client, REFRESH_EVERY);
    let slot = cmds
        .first()
        .and_then(|cmd| routing_key(cmd))
        .map(slots::key_slot);
    debug_assert!(
        cmds.iter()
            .all(|cmd| routing_key(cmd).map(slots::key_slot) == slot),
        "a pipeline goes to one node: its commands must share a hash slot"
    );
    let read = c.base.read_from_replicas && cmds.iter().all(|cmd| is_read(cmd));
    // One routing decision for the whole pipeline: the round-robin over replicas turns once.
    let mut addr = if read {
        c.route_read(slot)
    } else {
        c.route(slot)
    };
    // A read that went to a replica may go to the master once (see `LOADING` below).
    let mut read_replica = read
        && slot
            .and_then(|s| c.map.borrow().master(s).cloned())
            .is_some_and(|m| m != addr);
    let mut asking = false;
    for _ in 0..=MAX_REDIRECTS {
        let node = c.node(&addr)?;
        // The error that sends the whole pipeline elsewhere: a redirection (the commands share
        // a key, so one redirected means all are), or a loading replica; any other error reply
        // stays in its command's place.
        let m = match node.pipeline_at(cmds, asking, deadline).await {
            Ok(replies) => {
                let clusterdown = replies.iter().any(
                    |r| matches!(r, Err(RedisError::Server(m)) if m.starts_with("CLUSTERDOWN")),
                );
                if clusterdown {
                    c.refresh_soon(client);
                }
                let elsewhere = replies.iter().find_map(|r| match r {
                    Err(RedisError::Server(m))
                        if slots::parse_redirect(m, &addr.host).is_some()
                            || (read_replica && m.starts_with("LOADING")) =>
                    {
                        Some(m.clone())
                    }
                    _ => None,
                });
                match elsewhere {
                    Some(m) => m,
                    None => return Ok(replies),
                }
            }
            // `ASKING` itself refused.
            Err(RedisError::Server(m)) => m,
            Err(e) => {
                c.refresh_soon(client);
                return Err(e);
            }
        };
        match slots::parse_redirect(&m, &addr.host) {
            Some(Redirect::Moved(slot, to)) => {
                c.map.borrow_mut().moved(slot, to.clone());
                c.refresh_soon(client);
                (addr, asking) = (to, false);
            }
            Some(Redirect::Ask(_, to)) => (addr, asking) = (to, true),
            None if m.starts_with("LOADING") && read_replica => {
                // A replica still loading its data set (or one Redis 7.0 reported as
                // loading while it was in sync): this read goes to the master.
                read_replica = false;
                addr = c.route(slot);
            }
            None => {
                if m.starts_with("CLUSTERDOWN") {
                    c.refresh_soon(client);
                }
                return Err(RedisError::Server(m));
            }
        }
    }
    Err(RedisError::Protocol(format!(
        "more than {MAX_REDIRECTS} cluster redirections"
    )))
}

/// `PUBLISH` on the seeds in order, the first that answers taking it, all within one
/// `timeout`: the subscriptions ([`super::pubsub`]) sit on the first seed that is up, so the
/// count it answers is every subscriber in the usual case. Any node would forward the message
/// to the whole cluster; the order only makes the count meaningful.
pub(super) async fn publish(
    client: &RedisClient,
    cmd: &redis::Cmd,
) -> Result<redis::Value, RedisError> {
    let c = cluster(client);
    let deadline = Instant::now() + client.inner.opts.timeout;
    let mut last_err = RedisError::Protocol("no cluster seed".into());
    for addr in &c.seeds {
        match c.node(addr)?.round_trip_at(cmd, false, deadline).await {
            Ok(v) => return Ok(v),
            Err(e @ RedisError::Server(_)) => return Err(e),
            Err(e) => last_err = e,
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    Err(last_err)
}

/// Starts the standing refresh of `client`'s map (once; later calls do nothing): every
/// [`REFRESH_EVERY`], used or idle, so that a failover or resharding is in the map before the
/// first request after it rather than learnt from that request's failure. The task holds the
/// client weakly and ends when the worker drops it.
pub(super) fn keep_fresh(client: &RedisClient) {
    if cluster(client).standing.replace(true) {
        return;
    }
    let weak = std::rc::Rc::downgrade(&client.inner);
    monoio::spawn(async move {
        loop {
            monoio::time::sleep(REFRESH_EVERY).await;
            let Some(inner) = weak.upgrade() else {
                return;
            };
            let client = RedisClient { inner };
            // Unless a refresh runs already, or one started (after a failure, or by use)
            // less than half a period ago.
            cluster(&client).refresh_after(&client, REFRESH_EVERY / 2);
        }
    });
}

/// Asks for the map ([`ask_map`]) of the known masters, the other known nodes, then the
/// seeds, each bounded by `timeout`, and installs the first map that covers every slot (else the last
/// partial one).
async fn refresh(client: &RedisClient) -> Result<(), RedisError> {
    let c = cluster(client);
    let mut candidates: Vec<NodeAddr> = {
        let map = c.map.borrow();
        map.masters().chain(map.nodes()).cloned().collect()
    };
    candidates.extend(c.seeds.iter().cloned());
    let mut seen = Vec::with_capacity(candidates.len());
    let mut partial = None;
    let mut last_err = RedisError::Protocol("no cluster node to ask".into());
    for addr in candidates {
        if seen.contains(&addr) {
            continue;
        }
        seen.push(addr.clone());
        let node = c.node(&addr)?;
        let deadline = Instant::now() + c.base.timeout;
        match ask_map(c, &node, &addr.host, deadline).await {
            Ok(v) => match v {
                Ok(map) if map.covers_all() => {
                    c.install(map);
                    return Ok(());
                }
                Ok(map) => partial = Some(map),
                Err(e) => last_err = RedisError::Protocol(e),
            },
            Err(e) => last_err = e,
        }
    }
    match partial {
        Some(map) => {
            c.install(map);
            Ok(())
        }
        None => Err(last_err),
    }
}

/// One node's map: `CLUSTER SHARDS` (Redis ≥ 7; it names replicas with their health), else
/// `CLUSTER SLOTS` when the node answers that with an error, remembered for later refreshes.
async fn ask_map(
    c: &Cluster,
    node: &RedisClient,
    asked_host: &str,
    deadline: Instant,
) -> Result<Result<SlotMap, String>, RedisError> {
    if !c.no_shards.get() {
        let cmd = redis::cmd("CLUSTER").arg("SHARDS").clone();
        match node.round_trip_at(&cmd, false, deadline).await {
            Ok(v) => {
                return Ok(SlotMap::from_cluster_shards(
                    &v,
                    asked_host,
                    c.base.target.tls,
                ))
            }
            Err(RedisError::Server(m)) => {
                log::debug!("redis cluster: CLUSTER SHARDS refused ({m}), using CLUSTER SLOTS");
                c.no_shards.set(true);
            }
            Err(e) => return Err(e),
        }
    }
    let cmd = redis::cmd("CLUSTER").arg("SLOTS").clone();
    let v = node.round_trip_at(&cmd, false, deadline).await?;
    Ok(SlotMap::from_cluster_slots(&v, asked_host))
}

/// The map, refreshed first (in the caller's path) when it does not cover every slot.
async fn full_map(client: &RedisClient) -> Result<SlotMap, RedisError> {
    let c = cluster(client);
    if !c.map.borrow().covers_all() {
        refresh(client).await?;
    }
    Ok(c.map.borrow().clone())
}

/// [`RedisClient::walk_prefix`] on a cluster: `SCAN MATCH pattern` on every master, `op` per
/// hash slot of each batch.
pub(super) async fn walk(
    client: &RedisClient,
    pattern: &[u8],
    counted: &mut u64,
    what: &str,
    op: impl Fn(&[Vec<u8>]) -> redis::Cmd,
) -> Result<(), RedisError> {
    let map = full_map(client).await?;
    let mut first_err = None;
    for addr in map.masters() {
        if let Err(e) = walk_node(client, addr, pattern, counted, what, &op).await {
            log::debug!("redis cluster: walk of {addr} stopped: {e}");
            first_err.get_or_insert(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

async fn walk_node(
    client: &RedisClient,
    addr: &NodeAddr,
    pattern: &[u8],
    counted: &mut u64,
    what: &str,
    op: &impl Fn(&[Vec<u8>]) -> redis::Cmd,
) -> Result<(), RedisError> {
    let c = cluster(client);
    let node = c.node(addr)?;
    let mut cursor: u64 = 0;
    loop {
        let scan = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .clone();
        let deadline = Instant::now() + c.base.timeout;
        let (next, keys) = super::parse_scan(node.round_trip_at(&scan, false, deadline).await?)?;
        let mut by_slot: BTreeMap<u16, Vec<Vec<u8>>> = BTreeMap::new();
        for k in keys {
            by_slot.entry(slots::key_slot(&k)).or_default().push(k);
        }
        for keys in by_slot.values() {
            *counted += resp::int(what, call(client, &op(keys)).await?)?.max(0) as u64;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// [`RedisClient::subscribers`] on a cluster: `PUBSUB NUMSUB` summed over every node of the
/// map that answers (`Err` only when none does).
pub(super) async fn subscribers(client: &RedisClient, channel: &str) -> Result<u64, RedisError> {
    let map = full_map(client).await?;
    let c = cluster(client);
    let cmd = redis::cmd("PUBSUB").arg("NUMSUB").arg(channel).clone();
    let mut total = None;
    let mut last_err = RedisError::Protocol("no cluster node to ask".into());
    for addr in map.nodes() {
        let deadline = Instant::now() + c.base.timeout;
        match c.node(addr)?.round_trip_at(&cmd, false, deadline).await {
            Ok(redis::Value::Array(a)) if a.len() == 2 => {
                if let redis::Value::Int(n) = a[1] {
                    *total.get_or_insert(0) += n.max(0) as u64;
                }
            }
            Ok(v) => last_err = resp::unexpected("PUBSUB NUMSUB", &v),
            Err(e) => last_err = e,
        }
    }
    total.ok_or(last_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::redis::RedisTls;
    use crate::config::RedisTarget;

    fn target(url: &str) -> RedisTarget {
        url.parse().unwrap()
    }

    #[test]
    fn node_options_keep_the_login_and_verify_each_node_by_its_own_host() {
        let seeds = [
            "rediss://:pw@10.0.0.1:7000",
            "rediss://:pw@redis-b.internal:7001",
        ];
        let config = crate::s3::tls::client_config(None, &[]).unwrap();
        let first = target(seeds[0]);
        let opts = RedisOptions {
            cluster: seeds.iter().map(|s| target(s)).collect(),
            tls: Some(RedisTls::new(&first, config).unwrap()),
            ..RedisOptions::new(first)
        };
        let client = RedisClient::new(opts.clone()).unwrap();
        assert!(client.is_up(), "no node tried yet");
        let c = cluster(&client);
        assert_eq!(c.seeds.len(), 2);
        let node = opts.for_node("redis-b.internal", 7001).unwrap();
        assert_eq!(node.target.authority(), "redis-b.internal:7001");
        assert_eq!(node.target.auth, opts.target.auth);
        assert!(node.target.tls && node.cluster.is_empty());
        assert_eq!(
            format!("{:?}", node.tls.unwrap().server_name()),
            format!(
                "{:?}",
                rustls::pki_types::ServerName::try_from("redis-b.internal").unwrap()
            )
        );
        // Seeds that mix plain and TLS are refused by the options' check.
        let mixed = RedisOptions {
            cluster: vec![target("rediss://a"), target("redis://b")],
            ..opts
        };
        assert!(RedisClient::new(mixed).is_err());
        // Unknown slots go round-robin over the seeds until a map is known.
        assert_ne!(c.route(Some(1)), c.route(Some(1)));
    }

    #[test]
    fn reads_go_round_robin_to_replicas_that_are_up_else_to_the_master() {
        let a = |p| NodeAddr {
            host: "h".into(),
            port: p,
        };
        let (m, r1, r2) = (a(1), a(2), a(3));
        let all_up = |_: &NodeAddr| true;
        // Round-robin over the replicas as the turn grows; never the master.
        let picks: Vec<u16> = (0..4)
            .map(|t| read_node(&m, &[&r1, &r2], t, all_up).port)
            .collect();
        assert_eq!(picks, [2, 3, 2, 3]);
        // A replica down is skipped; the other takes every turn.
        let r1_down = |n: &NodeAddr| n.port != 2;
        for t in 0..3 {
            assert_eq!(read_node(&m, &[&r1, &r2], t, r1_down).port, 3);
        }
        // None up, or none known: the master.
        assert_eq!(read_node(&m, &[&r1, &r2], 7, |_| false).port, 1);
        assert_eq!(read_node(&m, &[], 0, all_up).port, 1);
        // Only reads may go to a replica.
        assert!(is_read(redis::cmd("GET").arg("k")) && is_read(redis::cmd("pttl").arg("k")));
        for w in ["SET", "DEL", "PEXPIRE", "EVAL", "GETDEL", "PUBLISH"] {
            assert!(!is_read(redis::cmd(w).arg("k")), "{w}");
        }
    }

    #[test]
    fn a_client_reading_from_replicas_routes_reads_by_the_map() {
        let seed = target("redis://127.0.0.1:30001");
        let opts = RedisOptions {
            cluster: vec![seed.clone()],
            read_from_replicas: true,
            ..RedisOptions::new(seed)
        };
        // Node clients send READONLY on their connections; they are not clusters themselves.
        let node = opts.for_node("127.0.0.1", 30004).unwrap();
        assert!(node.readonly && !node.read_from_replicas);
        assert!(!RedisOptions::new(target("redis://a")).readonly);
        let client = RedisClient::new(opts).unwrap();
        let c = cluster(&client);
        let n = |host: &str, port| {
            redis::Value::Array(vec![
                redis::Value::BulkString(host.as_bytes().to_vec()),
                redis::Value::Int(port),
            ])
        };
        let reply = redis::Value::Array(vec![
            redis::Value::Array(vec![
                redis::Value::Int(0),
                redis::Value::Int(8000),
                n("127.0.0.1", 30001),
                n("127.0.0.1", 30004),
            ]),
            redis::Value::Array(vec![
                redis::Value::Int(8001),
                redis::Value::Int(16383),
                n("127.0.0.1", 30002),
            ]),
        ]);
        c.install(SlotMap::from_cluster_slots(&reply, "127.0.0.1").unwrap());
        assert_eq!(c.route_read(Some(5)).port, 30004);
        assert_eq!(c.route(Some(5)).port, 30001);
        // A shard without replicas is read from its master.
        assert_eq!(c.route_read(Some(9000)).port, 30002);
        // The single-server form refuses the option.
        let single = RedisOptions {
            read_from_replicas: true,
            ..RedisOptions::new(target("redis://a"))
        };
        let err = RedisClient::new(single).err().unwrap();
        assert!(err.contains("read_from_replicas"), "{err}");
    }

    /// A fake cluster node on loopback (blocking, a thread per connection): one shard over
    /// every slot, `master` with the replicas `replicas` (`CLUSTER SLOTS`; `CLUSTER SHARDS` is
    /// refused as by Redis 6), and for any key `GET` answering `value` and `PTTL` answering
    /// `pttl` — different on each node, as on replicas that lag their master differently.
    #[allow(
        clippy::disallowed_methods,
        reason = "test server: blocking IO on its own threads, not on a worker"
    )]
    fn fake_node(
        listener: std::net::TcpListener,
        master: u16,
        replicas: Vec<u16>,
        value: Vec<u8>,
        pttl: i64,
    ) {
        use std::io::{BufRead, BufReader, Read, Write};
        fn bulk(b: &[u8]) -> Vec<u8> {
            let mut out = format!("${}\r\n", b.len()).into_bytes();
            out.extend_from_slice(b);
            out.extend_from_slice(b"\r\n");
            out
        }
        let node = |port: u16| {
            [
                b"*2\r\n".to_vec(),
                bulk(b"127.0.0.1"),
                format!(":{port}\r\n").into_bytes(),
            ]
            .concat()
        };
        let mut slots = format!("*1\r\n*{}\r\n:0\r\n:16383\r\n", 3 + replicas.len()).into_bytes();
        slots.extend(node(master));
        for r in &replicas {
            slots.extend(node(*r));
        }
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let (slots, value) = (slots.clone(), value.clone());
                std::thread::spawn(move || {
                    let mut w = conn.try_clone().unwrap();
                    let mut r = BufReader::new(conn);
                    let mut line = String::new();
                    // One command: `*N` then N bulk strings.
                    while matches!(r.read_line(&mut line), Ok(n) if n > 0) {
                        let n: usize = line.trim_end()[1..].parse().unwrap();
                        let mut args = Vec::new();
                        for _ in 0..n {
                            line.clear();
                            r.read_line(&mut line).unwrap();
                            let len: usize = line.trim_end()[1..].parse().unwrap();
                            let mut arg = vec![0; len + 2];
                            r.read_exact(&mut arg).unwrap();
                            arg.truncate(len);
                            args.push(String::from_utf8_lossy(&arg).to_ascii_uppercase());
                        }
                        line.clear();
                        let reply = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
                            ["READONLY"] => b"+OK\r\n".to_vec(),
                            ["CLUSTER", "SLOTS"] => slots.clone(),
                            ["GET", _] => bulk(&value),
                            ["PTTL", _] => format!(":{pttl}\r\n").into_bytes(),
                            _ => b"-ERR unknown command\r\n".to_vec(),
                        };
                        if w.write_all(&reply).is_err() {
                            return;
                        }
                    }
                });
            }
        });
    }

    #[test]
    fn a_lookup_pairs_a_value_with_the_ttl_of_the_replica_that_had_it() {
        use crate::cache::entry::{self, CachedObject, Meta};
        use bytes::Bytes;
        let listeners: Vec<_> = (0..3)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        // Each node's copy names the node in its body; its TTL is 1000 s x (node index + 1).
        let pttl = |i: usize| 1_000_000 * (i as i64 + 1);
        for (i, l) in listeners.into_iter().enumerate() {
            let obj = CachedObject::new(Meta::new(vec![], 1, 2), Bytes::from(format!("node {i}")));
            fake_node(
                l,
                ports[0],
                ports[1..].to_vec(),
                entry::encode(&obj),
                pttl(i),
            );
        }
        let seed = target(&format!("redis://127.0.0.1:{}", ports[0]));
        let opts = RedisOptions {
            cluster: vec![seed.clone()],
            read_from_replicas: true,
            timeout: Duration::from_secs(5),
            ..RedisOptions::new(seed)
        };
        let client = RedisClient::new(opts).unwrap();
        let rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build();
        rt.unwrap().block_on(async {
            full_map(&client).await.unwrap();
            let (now, retain) = (10_000, Duration::ZERO);
            let mut seen = Vec::new();
            for _ in 0..4 {
                let obj = crate::cache::redis_tier::lookup(&client, b"k", retain, now)
                    .await
                    .unwrap()
                    .expect("every node has the key");
                let i = usize::from(obj.body().last().unwrap() - b'0');
                assert_eq!(
                    obj.meta().expires_at_ms,
                    now + pttl(i) as u64,
                    "the value of node {i} with another node's TTL"
                );
                seen.push(i);
            }
            // Round-robin over the two replicas, never the master.
            seen.sort_unstable();
            assert_eq!(seen, [1, 1, 2, 2]);
        });
    }

    #[test]
    fn commands_route_by_their_key() {
        let k = |cmd: &redis::Cmd| routing_key(cmd).map(<[u8]>::to_vec);
        assert_eq!(k(redis::cmd("GET").arg("a")), Some(b"a".to_vec()));
        assert_eq!(
            k(redis::cmd("SET").arg("b").arg("v").arg("PX").arg(5)),
            Some(b"b".to_vec())
        );
        assert_eq!(
            k(redis::cmd("EVAL")
                .arg("script")
                .arg(2)
                .arg("k1")
                .arg("k2")
                .arg(9)),
            Some(b"k1".to_vec())
        );
        assert_eq!(k(redis::cmd("eval").arg("script").arg(0).arg(9)), None);
        assert_eq!(k(&redis::cmd("PING")), None);
    }
}

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
//! - **Map refresh** (`CLUSTER SLOTS`, asked of the known masters, then the other known nodes,
//!   then the seeds, until one answers; a map covering every slot is preferred): in a
//!   background task of the worker, never in the request's path, when an operation failed on
//!   a connection error, timeout or down node (a failover promotes a replica that only the new
//!   map names), after a `MOVED` or `CLUSTERDOWN`, and at least every [`REFRESH_EVERY`] while
//!   the client is used; error-triggered refreshes are at least `backoff_initial` apart. Nodes
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
//! - Replicas are not read from (every command goes to a master): reads from a replica may
//!   miss a fresh fill, and the tier's reads are cheap for a master.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use monoio::time::Instant;

use super::slots::{self, NodeAddr, Redirect, SlotMap};
use super::{resp, RedisClient, RedisError, RedisOptions};

/// Longest time between two refreshes of the slot map while the client is used.
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

/// One command, routed by slot, following `MOVED` and `ASK`, bounded by one `timeout`.
/// Errors are not counted here (the caller does).
pub(super) async fn call(
    client: &RedisClient,
    cmd: &redis::Cmd,
) -> Result<redis::Value, RedisError> {
    let c = cluster(client);
    let deadline = Instant::now() + client.inner.opts.timeout;
    c.refresh_after(client, REFRESH_EVERY);
    let mut addr = c.route(routing_key(cmd).map(slots::key_slot));
    let mut asking = false;
    for _ in 0..=MAX_REDIRECTS {
        let node = c.node(&addr)?;
        match node.round_trip_at(cmd, asking, deadline).await {
            Ok(v) => return Ok(v),
            Err(RedisError::Server(m)) => match slots::parse_redirect(&m, &addr.host) {
                Some(Redirect::Moved(slot, to)) => {
                    c.map.borrow_mut().moved(slot, to.clone());
                    c.refresh_soon(client);
                    (addr, asking) = (to, false);
                }
                Some(Redirect::Ask(_, to)) => (addr, asking) = (to, true),
                None => {
                    if m.starts_with("CLUSTERDOWN") {
                        c.refresh_soon(client);
                    }
                    return Err(RedisError::Server(m));
                }
            },
            Err(e) => {
                c.refresh_soon(client);
                return Err(e);
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

/// Asks `CLUSTER SLOTS` of the known masters, the other known nodes, then the seeds, each
/// bounded by `timeout`, and installs the first map that covers every slot (else the last
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
        let cmd = redis::cmd("CLUSTER").arg("SLOTS").clone();
        match node.round_trip_at(&cmd, false, deadline).await {
            Ok(v) => match SlotMap::from_cluster_slots(&v, &addr.host) {
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

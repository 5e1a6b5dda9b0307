//! Redis Cluster's key space, as pure functions over bytes (no IO): which of the 16384 hash
//! slots a key lives in, which node serves each slot and which replicas it has (the map
//! parsed from `CLUSTER SHARDS`, or `CLUSTER SLOTS` before Redis 7),
//! and the `MOVED`/`ASK` redirections a node answers when it does not serve a key's slot.
//! The cluster client (`cluster`) does the IO around these; nothing outside `cache::redis`
//! knows about slots.
//!
//! The rules are the Redis Cluster specification's ("Keys distribution model", "Redirection
//! and resharding"): `HASH_SLOT = CRC16(key) mod 16384` with CRC16-XMODEM (polynomial
//! 0x1021, initial value 0), over the whole key unless it has a hash tag: the bytes between
//! the first `{` and the first `}` after it, when that is not empty.

use std::fmt;

/// Number of hash slots of a Redis Cluster.
pub const SLOTS: usize = 16384;

/// CRC16-XMODEM (the specification's `crc16`, "123456789" → 0x31C3), bitwise: keys are short
/// and this runs once per operation, a table would buy nothing measurable.
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The part of `key` that is hashed: the hash tag when there is a non-empty one (between the
/// first `{` and the first `}` after it), else the whole key.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        if let Some(len) = key[open + 1..].iter().position(|&b| b == b'}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// The hash slot of `key` (0..16384).
pub fn key_slot(key: &[u8]) -> u16 {
    crc16(hash_tag(key)) % SLOTS as u16
}

/// A node's address as the cluster announces it (`host:port`; IPv6 without brackets).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeAddr {
    pub host: String,
    pub port: u16,
}

impl NodeAddr {
    /// Parses `host:port` (the port after the last `:`, so `::1:7000` is IPv6 `::1`; brackets
    /// are accepted). An empty host (`:7000`, newer servers' "same host as the node you asked")
    /// becomes `asked_host`.
    pub fn parse(endpoint: &str, asked_host: &str) -> Option<NodeAddr> {
        let (host, port) = endpoint.rsplit_once(':')?;
        let port = port.parse::<u16>().ok().filter(|&p| p != 0)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host = if host.is_empty() { asked_host } else { host };
        Some(NodeAddr {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A node's answer that the key's slot is served elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redirect {
    /// The slot moved for good: update the map, send there.
    Moved(u16, NodeAddr),
    /// The slot is being migrated and this key is already on the target: send this one
    /// command there, preceded by `ASKING`, and leave the map alone.
    Ask(u16, NodeAddr),
}

/// Parses an error reply in its wire form (`MOVED 3999 127.0.0.1:6381`, `ASK 3999 :6381`);
/// `None` for any other error. `asked_host` fills in an empty host.
pub fn parse_redirect(error: &str, asked_host: &str) -> Option<Redirect> {
    let mut parts = error.split_ascii_whitespace();
    let kind = parts.next()?;
    let slot = parts
        .next()?
        .parse::<u16>()
        .ok()
        .filter(|&s| usize::from(s) < SLOTS)?;
    let addr = NodeAddr::parse(parts.next()?, asked_host)?;
    if parts.next().is_some() {
        return None;
    }
    match kind {
        "MOVED" => Some(Redirect::Moved(slot, addr)),
        "ASK" => Some(Redirect::Ask(slot, addr)),
        _ => None,
    }
}

/// Which node serves each slot, and its replicas. Built from `CLUSTER SHARDS` or
/// `CLUSTER SLOTS`; patched by `MOVED`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotMap {
    /// The distinct nodes, masters and replicas; `master_of` indexes into it.
    nodes: Vec<NodeAddr>,
    /// Which of `nodes` are masters of at least one slot range.
    is_master: Vec<bool>,
    /// Per slot, the index of its master in `nodes`; empty when the map is unknown.
    master_of: Vec<u16>,
    /// Per node (index into `nodes`), the indexes of its replicas: empty for a replica, for
    /// a master without one, and for a master only a `MOVED` named.
    replicas_of: Vec<Vec<u16>>,
}

/// No node known for this slot.
const NONE: u16 = u16::MAX;

impl SlotMap {
    /// `true` until a map reply or a `MOVED` filled something in.
    pub fn is_empty(&self) -> bool {
        self.master_of.is_empty()
    }

    /// The master serving `slot`, if known.
    pub fn master(&self, slot: u16) -> Option<&NodeAddr> {
        let i = *self.master_of.get(usize::from(slot))?;
        self.nodes.get(usize::from(i))
    }

    /// The replicas of `slot`'s master, as the last map named them (none when unknown).
    pub fn replicas(&self, slot: u16) -> impl Iterator<Item = &NodeAddr> {
        let m = self
            .master_of
            .get(usize::from(slot))
            .copied()
            .unwrap_or(NONE);
        self.replicas_of
            .get(usize::from(m))
            .into_iter()
            .flatten()
            .filter_map(|&i| self.nodes.get(usize::from(i)))
    }

    /// Every node serving at least one slot as master (for walks over the whole key space).
    pub fn masters(&self) -> impl Iterator<Item = &NodeAddr> {
        self.nodes
            .iter()
            .zip(&self.is_master)
            .filter_map(|(n, &m)| m.then_some(n))
    }

    /// Every node the map knows, masters and replicas.
    pub fn nodes(&self) -> &[NodeAddr] {
        &self.nodes
    }

    /// Whether every slot has a master.
    pub fn covers_all(&self) -> bool {
        self.master_of.len() == SLOTS && self.master_of.iter().all(|&i| i != NONE)
    }

    /// Records `MOVED slot addr`: `addr` serves `slot` from now on.
    pub fn moved(&mut self, slot: u16, addr: NodeAddr) {
        if self.master_of.is_empty() {
            self.master_of = vec![NONE; SLOTS];
        }
        let i = self.index(addr);
        self.is_master[usize::from(i)] = true;
        self.master_of[usize::from(slot)] = i;
    }

    fn index(&mut self, addr: NodeAddr) -> u16 {
        match self.nodes.iter().position(|n| *n == addr) {
            Some(i) => i as u16,
            None => {
                self.nodes.push(addr);
                self.is_master.push(false);
                self.replicas_of.push(Vec::new());
                (self.nodes.len() - 1) as u16
            }
        }
    }

    /// Parses a `CLUSTER SLOTS` reply: an array of `[start, end, master, replica…]`, each node
    /// `[host, port, id, …]` (a host of `""` or `"?"` means the node that was asked,
    /// `asked_host`). Slots no range mentions stay unknown.
    pub fn from_cluster_slots(reply: &redis::Value, asked_host: &str) -> Result<SlotMap, String> {
        use redis::Value;
        let Value::Array(ranges) = reply else {
            return Err(format!("CLUSTER SLOTS: expected an array, got {reply:?}"));
        };
        let mut map = SlotMap {
            master_of: vec![NONE; SLOTS],
            ..SlotMap::default()
        };
        for range in ranges {
            let Value::Array(parts) = range else {
                return Err(format!("CLUSTER SLOTS: a range is not an array: {range:?}"));
            };
            let bound = |v: Option<&Value>| match v {
                Some(&Value::Int(n)) if (0..SLOTS as i64).contains(&n) => Ok(n as usize),
                other => Err(format!("CLUSTER SLOTS: bad slot number {other:?}")),
            };
            let (start, end) = (bound(parts.first())?, bound(parts.get(1))?);
            if start > end {
                return Err(format!("CLUSTER SLOTS: empty range {start}-{end}"));
            }
            let mut addrs = Vec::new();
            for node in &parts[2..] {
                addrs.push(node_addr(node, asked_host)?);
            }
            let mut addrs = addrs.into_iter();
            let Some(master) = addrs.next() else {
                return Err(format!("CLUSTER SLOTS: range {start}-{end} has no master"));
            };
            let m = map.index(master);
            map.is_master[usize::from(m)] = true;
            map.master_of[start..=end].fill(m);
            for replica in addrs {
                let r = map.index(replica);
                if !map.replicas_of[usize::from(m)].contains(&r) {
                    map.replicas_of[usize::from(m)].push(r);
                }
            }
        }
        Ok(map)
    }
}

impl SlotMap {
    /// Parses a `CLUSTER SHARDS` reply (Redis ≥ 7): an array of shards, each a map (a flat
    /// array of name, value pairs in RESP2) with `slots` (a flat list of inclusive
    /// `start, end` bounds) and `nodes` (maps with `endpoint`/`ip`, `port`, `tls-port`,
    /// `role` and `health`). With `tls` the node's `tls-port` is used when it has one. A
    /// shard's master is its node of role `master`; its replicas are the nodes of role
    /// `replica` whose health is not `failed`. A `loading` one is kept: Redis 7.0 reports a
    /// replica in sync as `loading` until its replication offset reached the asked node by
    /// gossip (seen on the test cluster, offset 0, long after the data had replicated); a
    /// replica really loading answers `LOADING`, and the read then goes to the master.
    /// Unlike `CLUSTER SLOTS`, whose reply Redis 7.0 caches and which leaves out replicas
    /// whose replication offset was still 0 when it was cached, this names every replica with
    /// its health. Shards without slots or without a master are skipped (their slots stay
    /// unknown).
    pub fn from_cluster_shards(
        reply: &redis::Value,
        asked_host: &str,
        tls: bool,
    ) -> Result<SlotMap, String> {
        use redis::Value;
        let Value::Array(shards) = reply else {
            return Err(format!("CLUSTER SHARDS: expected an array, got {reply:?}"));
        };
        let mut map = SlotMap {
            master_of: vec![NONE; SLOTS],
            ..SlotMap::default()
        };
        for shard in shards {
            let fields =
                pairs(shard).ok_or_else(|| format!("CLUSTER SHARDS: bad shard {shard:?}"))?;
            let get = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
            let Some(Value::Array(bounds)) = get("slots") else {
                return Err(format!("CLUSTER SHARDS: a shard without slots: {shard:?}"));
            };
            let Some(Value::Array(nodes)) = get("nodes") else {
                return Err(format!("CLUSTER SHARDS: a shard without nodes: {shard:?}"));
            };
            if bounds.len() % 2 != 0 {
                return Err(format!("CLUSTER SHARDS: odd slot bounds {bounds:?}"));
            }
            let mut ranges = Vec::with_capacity(bounds.len() / 2);
            for b in bounds.chunks(2) {
                let (start, end) = (slot_number(&b[0])?, slot_number(&b[1])?);
                if start > end {
                    return Err(format!("CLUSTER SHARDS: empty range {start}-{end}"));
                }
                ranges.push((start, end));
            }
            let mut master = None;
            let mut replicas = Vec::new();
            for node in nodes {
                let f = pairs(node).ok_or_else(|| format!("CLUSTER SHARDS: bad node {node:?}"))?;
                let get = |name: &str| f.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
                let text = |name: &str| match get(name) {
                    Some(Value::BulkString(b)) => std::str::from_utf8(b).ok(),
                    Some(Value::SimpleString(s)) => Some(s.as_str()),
                    _ => None,
                };
                let port = |name: &str| match get(name) {
                    Some(&Value::Int(p)) if (1..=65535).contains(&p) => Some(p as u16),
                    _ => None,
                };
                let host = [text("endpoint"), text("ip")]
                    .into_iter()
                    .flatten()
                    .find(|h| !h.is_empty() && *h != "?")
                    .unwrap_or(asked_host);
                let port = if tls {
                    port("tls-port").or(port("port"))
                } else {
                    port("port")
                }
                .ok_or_else(|| format!("CLUSTER SHARDS: a node without a port: {node:?}"))?;
                let addr = NodeAddr {
                    host: host.to_ascii_lowercase(),
                    port,
                };
                match (text("role"), text("health")) {
                    (Some("master"), _) => master = Some(addr),
                    (Some("replica"), Some(h)) if h != "failed" => replicas.push(addr),
                    _ => {}
                }
            }
            let Some(master) = master.filter(|_| !ranges.is_empty()) else {
                continue;
            };
            let m = map.index(master);
            map.is_master[usize::from(m)] = true;
            for (start, end) in ranges {
                map.master_of[start..=end].fill(m);
            }
            for replica in replicas {
                let r = map.index(replica);
                if !map.replicas_of[usize::from(m)].contains(&r) {
                    map.replicas_of[usize::from(m)].push(r);
                }
            }
        }
        Ok(map)
    }
}

/// A RESP map as name, value pairs: a RESP3 map, or a RESP2 flat array of pairs.
fn pairs(v: &redis::Value) -> Option<Vec<(String, &redis::Value)>> {
    use redis::Value;
    let name = |k: &Value| match k {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    match v {
        Value::Array(a) if a.len() % 2 == 0 => {
            a.chunks(2).map(|p| Some((name(&p[0])?, &p[1]))).collect()
        }
        Value::Map(m) => m.iter().map(|(k, v)| Some((name(k)?, v))).collect(),
        _ => None,
    }
}

fn slot_number(v: &redis::Value) -> Result<usize, String> {
    match *v {
        redis::Value::Int(n) if (0..SLOTS as i64).contains(&n) => Ok(n as usize),
        ref other => Err(format!("CLUSTER SHARDS: bad slot number {other:?}")),
    }
}

fn node_addr(node: &redis::Value, asked_host: &str) -> Result<NodeAddr, String> {
    use redis::Value;
    let bad = || format!("CLUSTER SLOTS: bad node {node:?}");
    let Value::Array(fields) = node else {
        return Err(bad());
    };
    let host = match fields.first() {
        Some(Value::BulkString(h)) => std::str::from_utf8(h).map_err(|_| bad())?,
        Some(Value::SimpleString(h)) => h.as_str(),
        _ => return Err(bad()),
    };
    let host = if host.is_empty() || host == "?" {
        asked_host
    } else {
        host
    };
    let port = match fields.get(1) {
        Some(&Value::Int(p)) if (1..=65535).contains(&p) => p as u16,
        _ => return Err(bad()),
    };
    Ok(NodeAddr {
        host: host.to_ascii_lowercase(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use redis::Value;

    #[test]
    fn crc16_matches_the_specification() {
        // The check value in the Redis Cluster specification's crc16 listing.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(crc16(b""), 0);
    }

    #[test]
    fn slots_match_redis() {
        // Values from `CLUSTER KEYSLOT` on redis-server 7.0.
        for (key, slot) in [
            (&b"foo"[..], 12182),
            (b"bar", 5061),
            (b"123456789", 12739),
            (b"{user1000}.following", 3443),
            (b"{user1000}.followers", 3443),
            (b"user1000", 3443),
            (b"", 0),
        ] {
            assert_eq!(key_slot(key), slot, "{}", String::from_utf8_lossy(key));
        }
    }

    #[test]
    fn hash_tags_follow_the_specification() {
        // The specification's examples.
        assert_eq!(hash_tag(b"{user1000}.following"), b"user1000");
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_tag(b"foo{bar}{zap}"), b"bar");
        assert_eq!(hash_tag(b"no tag"), b"no tag");
        assert_eq!(hash_tag(b"open{only"), b"open{only");
        assert_eq!(hash_tag(b"}{x}"), b"x");
    }

    proptest! {
        #[test]
        fn a_tagged_key_lands_with_its_tag(
            tag in proptest::collection::vec(any::<u8>().prop_filter("no }", |b| *b != b'}'), 1..16),
            before in proptest::collection::vec(any::<u8>().prop_filter("no {", |b| *b != b'{'), 0..16),
            after in proptest::collection::vec(any::<u8>(), 0..16),
        ) {
            let mut key = before.clone();
            key.push(b'{');
            key.extend_from_slice(&tag);
            key.push(b'}');
            key.extend_from_slice(&after);
            prop_assert_eq!(key_slot(&key), key_slot(&tag));
            prop_assert!(usize::from(key_slot(&key)) < SLOTS);
        }
    }

    #[test]
    fn redirects_parse() {
        let a = |h: &str, p| NodeAddr {
            host: h.into(),
            port: p,
        };
        assert_eq!(
            parse_redirect("MOVED 3999 127.0.0.1:6381", "x"),
            Some(Redirect::Moved(3999, a("127.0.0.1", 6381)))
        );
        assert_eq!(
            parse_redirect("ASK 0 :7000", "10.0.0.9"),
            Some(Redirect::Ask(0, a("10.0.0.9", 7000)))
        );
        assert_eq!(
            parse_redirect("MOVED 16383 ::1:7001", "x"),
            Some(Redirect::Moved(16383, a("::1", 7001)))
        );
        assert_eq!(
            parse_redirect("MOVED 1 Redis-B.internal:6379", "x"),
            Some(Redirect::Moved(1, a("redis-b.internal", 6379)))
        );
        for other in [
            "ERR unknown command",
            "MOVED",
            "MOVED 16384 h:1",
            "MOVED x h:1",
            "MOVED 1 h",
            "MOVED 1 h:0",
            "MOVED 1 h:1 extra",
            "CLUSTERDOWN The cluster is down",
            "TRYAGAIN Multiple keys request during rehashing of slot",
        ] {
            assert_eq!(parse_redirect(other, "x"), None, "{other}");
        }
        assert_eq!(a("::1", 7001).to_string(), "[::1]:7001");
        assert_eq!(a("h", 1).to_string(), "h:1");
    }

    fn node(host: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::BulkString(host.as_bytes().to_vec()),
            Value::Int(port),
            Value::BulkString(b"09dbe9720cda62f7865eabc5fd8857c5d2678366".to_vec()),
            Value::Array(vec![]),
        ])
    }

    #[test]
    fn cluster_slots_reply_parses() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node("127.0.0.1", 30001),
                node("127.0.0.1", 30004),
            ]),
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(10922),
                node("", 30002),
                node("127.0.0.1", 30005),
            ]),
            Value::Array(vec![
                Value::Int(10923),
                Value::Int(16383),
                node("127.0.0.1", 30003),
            ]),
        ]);
        let map = SlotMap::from_cluster_slots(&reply, "127.0.0.1").unwrap();
        assert!(map.covers_all());
        assert_eq!(map.master(0).unwrap().port, 30001);
        assert_eq!(map.master(5460).unwrap().port, 30001);
        assert_eq!(map.master(5461).unwrap().to_string(), "127.0.0.1:30002");
        assert_eq!(map.master(16383).unwrap().port, 30003);
        let masters: Vec<u16> = map.masters().map(|n| n.port).collect();
        assert_eq!(masters, [30001, 30002, 30003]);
        assert_eq!(map.nodes().len(), 5);
        let ports =
            |it: &mut dyn Iterator<Item = &NodeAddr>| it.map(|n| n.port).collect::<Vec<_>>();
        assert_eq!(ports(&mut map.replicas(0)), [30004]);
        assert_eq!(ports(&mut map.replicas(10922)), [30005]);
        assert!(ports(&mut map.replicas(16383)).is_empty());

        // A MOVED patches one slot and can add a master.
        let mut map = map;
        map.moved(0, NodeAddr::parse("127.0.0.1:30007", "x").unwrap());
        assert_eq!(map.master(0).unwrap().port, 30007);
        // Its replicas are unknown until the next refresh: reads go to the master.
        assert_eq!(map.replicas(0).count(), 0);
        assert_eq!(map.master(1).unwrap().port, 30001);
        assert_eq!(map.masters().count(), 4);

        // An empty map learns from MOVED alone.
        let mut empty = SlotMap::default();
        assert!(empty.is_empty() && empty.master(7).is_none());
        empty.moved(7, NodeAddr::parse("h:1", "x").unwrap());
        assert_eq!(empty.master(7).unwrap().port, 1);
        assert!(empty.master(8).is_none() && !empty.covers_all());

        // Partial coverage (a range without a master during a failover is simply absent).
        let partial = Value::Array(vec![Value::Array(vec![
            Value::Int(0),
            Value::Int(99),
            node("127.0.0.1", 1),
        ])]);
        let map = SlotMap::from_cluster_slots(&partial, "h").unwrap();
        assert!(map.master(99).is_some() && map.master(100).is_none());

        for bad in [
            Value::Int(1),
            Value::Array(vec![Value::Int(1)]),
            Value::Array(vec![Value::Array(vec![
                Value::Int(5),
                Value::Int(1),
                node("h", 1),
            ])]),
            Value::Array(vec![Value::Array(vec![
                Value::Int(0),
                Value::Int(16384),
                node("h", 1),
            ])]),
            Value::Array(vec![Value::Array(vec![Value::Int(0), Value::Int(1)])]),
            Value::Array(vec![Value::Array(vec![
                Value::Int(0),
                Value::Int(1),
                node("h", 0),
            ])]),
        ] {
            assert!(SlotMap::from_cluster_slots(&bad, "h").is_err(), "{bad:?}");
        }
    }
}

#[cfg(test)]
mod shards_tests {
    use super::*;
    use redis::Value;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn node(endpoint: &str, port: i64, tls_port: Option<i64>, role: &str, health: &str) -> Value {
        let mut f = vec![
            bulk("id"),
            bulk("6c1677b938bdd3dc7e3cdf9a2d93d56bb9cd15d4"),
            bulk("port"),
            Value::Int(port),
        ];
        if let Some(t) = tls_port {
            f.extend([bulk("tls-port"), Value::Int(t)]);
        }
        f.extend([
            bulk("ip"),
            bulk("10.0.0.1"),
            bulk("endpoint"),
            bulk(endpoint),
            bulk("role"),
            bulk(role),
            bulk("replication-offset"),
            Value::Int(38198),
            bulk("health"),
            bulk(health),
        ]);
        Value::Array(f)
    }

    fn shard(slots: &[i64], nodes: Vec<Value>) -> Value {
        Value::Array(vec![
            bulk("slots"),
            Value::Array(slots.iter().map(|&s| Value::Int(s)).collect()),
            bulk("nodes"),
            Value::Array(nodes),
        ])
    }

    #[test]
    fn cluster_shards_reply_parses() {
        // The shape redis-server 7.0 answers (RESP2: maps as flat name, value arrays).
        let reply = Value::Array(vec![
            shard(
                &[0, 100, 200, 5460],
                vec![
                    node("127.0.0.1", 30001, None, "master", "online"),
                    node("127.0.0.1", 30004, None, "replica", "online"),
                    node("127.0.0.1", 30007, None, "replica", "failed"),
                ],
            ),
            shard(
                &[101, 199, 5461, 16383],
                vec![
                    node("127.0.0.1", 30005, None, "replica", "loading"),
                    node("?", 30002, None, "master", "online"),
                ],
            ),
            // A shard without slots (a new master, or the old one after a failover).
            shard(
                &[],
                vec![node("127.0.0.1", 30009, None, "master", "online")],
            ),
        ]);
        let map = SlotMap::from_cluster_shards(&reply, "h", false).unwrap();
        assert!(map.covers_all());
        let port = |s| map.master(s).unwrap().port;
        assert_eq!(
            [port(0), port(100), port(101), port(199), port(200)],
            [30001, 30001, 30002, 30002, 30001]
        );
        assert_eq!(port(16383), 30002);
        // "?" (unknown endpoint) falls back to the ip.
        assert_eq!(map.master(6000).unwrap().host, "10.0.0.1");
        let replicas = |s| map.replicas(s).map(|n| n.port).collect::<Vec<_>>();
        assert_eq!(replicas(0), [30004], "a failed replica is left out");
        assert_eq!(
            replicas(150),
            [30005],
            "loading is kept (Redis 7.0 says it of synced ones)"
        );
        assert_eq!(
            map.masters().map(|n| n.port).collect::<Vec<_>>(),
            [30001, 30002]
        );

        // A TLS cluster is reached on the tls-port.
        let tls = Value::Array(vec![shard(
            &[0, 16383],
            vec![
                node("a", 7000, Some(17000), "master", "online"),
                node("b", 7001, Some(17001), "replica", "online"),
            ],
        )]);
        let map = SlotMap::from_cluster_shards(&tls, "h", true).unwrap();
        assert_eq!(map.master(9).unwrap().port, 17000);
        assert_eq!(map.replicas(9).next().unwrap().port, 17001);
        let map = SlotMap::from_cluster_shards(&tls, "h", false).unwrap();
        assert_eq!(map.master(9).unwrap().port, 7000);

        for bad in [
            Value::Int(1),
            Value::Array(vec![Value::Int(1)]),
            Value::Array(vec![shard(&[0], vec![])]),
            Value::Array(vec![shard(&[5, 1], vec![])]),
            Value::Array(vec![shard(&[0, 16384], vec![])]),
            Value::Array(vec![shard(
                &[0, 1],
                vec![node("a", 0, None, "master", "online")],
            )]),
            Value::Array(vec![Value::Array(vec![bulk("slots")])]),
        ] {
            assert!(
                SlotMap::from_cluster_shards(&bad, "h", false).is_err(),
                "{bad:?}"
            );
        }
    }
}

//! Redis Cluster's key space, as pure functions over bytes (no IO): which of the 16384 hash
//! slots a key lives in, which node serves each slot (the map parsed from `CLUSTER SLOTS`),
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

/// Which node serves each slot. Built from `CLUSTER SLOTS`; patched by `MOVED`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotMap {
    /// The distinct nodes, masters and replicas; `master_of` indexes into it.
    nodes: Vec<NodeAddr>,
    /// Which of `nodes` are masters of at least one slot range.
    is_master: Vec<bool>,
    /// Per slot, the index of its master in `nodes`; empty when the map is unknown.
    master_of: Vec<u16>,
}

/// No node known for this slot.
const NONE: u16 = u16::MAX;

impl SlotMap {
    /// `true` until a `CLUSTER SLOTS` reply or a `MOVED` filled something in.
    pub fn is_empty(&self) -> bool {
        self.master_of.is_empty()
    }

    /// The master serving `slot`, if known.
    pub fn master(&self, slot: u16) -> Option<&NodeAddr> {
        let i = *self.master_of.get(usize::from(slot))?;
        self.nodes.get(usize::from(i))
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
                map.index(replica);
            }
        }
        Ok(map)
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

        // A MOVED patches one slot and can add a master.
        let mut map = map;
        map.moved(0, NodeAddr::parse("127.0.0.1:30007", "x").unwrap());
        assert_eq!(map.master(0).unwrap().port, 30007);
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

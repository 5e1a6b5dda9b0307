//! A real Redis Cluster for tests: six `redis-server --cluster-enabled yes` children on free
//! loopback ports (client and cluster-bus ports both picked free), joined by
//! `redis-cli --cluster create … --cluster-replicas 1` into three masters with one replica
//! each, and waited on until every node reports `cluster_state:ok`. Killed on drop (each
//! node is a [`RedisServer`]). Needs `redis-server` and `redis-cli` (Redis 7: `cluster-port`)
//! on PATH.

use std::process::Command;
use std::time::Duration;

use super::net::wait_until;
use super::port::free_port;
use super::redis_server::RedisServer;

pub struct RedisCluster {
    /// The nodes, `None` once killed by [`RedisCluster::kill`].
    pub nodes: Vec<Option<RedisServer>>,
    pub ports: Vec<u16>,
}

impl RedisCluster {
    /// Starts six nodes, creates the cluster (3 masters, 3 replicas) and waits until every
    /// node says `cluster_state:ok`. `node_timeout_ms` is `cluster-node-timeout` (how soon a
    /// dead master is failed over).
    pub fn start(node_timeout_ms: u32) -> RedisCluster {
        let timeout = node_timeout_ms.to_string();
        let mut nodes = Vec::new();
        let mut ports = Vec::new();
        for _ in 0..6 {
            let port = free_port();
            let bus = free_port().to_string();
            let extra = [
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                &bus,
                "--cluster-node-timeout",
                &timeout,
            ];
            nodes.push(Some(RedisServer::start_on(port, &extra)));
            ports.push(port);
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for p in &ports {
            create.arg(format!("127.0.0.1:{p}"));
        }
        let out = create
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli runs (Debian: apt-get install redis-tools)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster { nodes, ports };
        assert!(
            wait_until(Duration::from_secs(30), || cluster.is_ok()),
            "the cluster did not reach cluster_state:ok within 30 s"
        );
        cluster
    }

    /// `redis-cli -p PORT ARGS…`'s output (None when it fails).
    pub fn cli(&self, port: u16, args: &[&str]) -> Option<String> {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
            .filter(|s| !s.starts_with("Could not connect"))
    }

    /// The ports of the nodes still running.
    pub fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .zip(&self.ports)
            .filter_map(|(n, &p)| n.as_ref().map(|_| p))
            .collect()
    }

    /// Every running node reports `cluster_state:ok` and knows the same number of masters
    /// with slots (3).
    pub fn is_ok(&self) -> bool {
        self.live_ports().iter().all(|&p| {
            self.cli(p, &["CLUSTER", "INFO"])
                .is_some_and(|i| i.contains("cluster_state:ok") && i.contains("cluster_size:3"))
        })
    }

    /// The ports of the running masters.
    pub fn masters(&self) -> Vec<u16> {
        self.live_ports()
            .into_iter()
            .filter(|&p| {
                self.cli(p, &["ROLE"])
                    .is_some_and(|r| r.lines().next() == Some("master"))
            })
            .collect()
    }

    /// `DBSIZE` of one node.
    pub fn key_count_of(&self, port: u16) -> Option<u64> {
        self.cli(port, &["DBSIZE"])?.trim().parse().ok()
    }

    /// Keys held by the masters (each key once).
    pub fn key_count(&self) -> Option<u64> {
        self.masters()
            .into_iter()
            .map(|p| self.key_count_of(p))
            .sum()
    }

    /// `PUBSUB NUMSUB channel` summed over the running nodes.
    pub fn subscribers(&self, channel: &str) -> u64 {
        self.live_ports()
            .into_iter()
            .filter_map(|p| {
                let out = self.cli(p, &["PUBSUB", "NUMSUB", channel])?;
                out.lines().nth(1)?.trim().parse::<u64>().ok()
            })
            .sum()
    }

    /// SIGKILLs the node on `port`.
    pub fn kill(&mut self, port: u16) {
        let i = self.ports.iter().position(|&p| p == port).expect("a node");
        if let Some(mut n) = self.nodes[i].take() {
            n.kill();
        }
    }

    /// `["redis://127.0.0.1:P", …]` of every node, as a TOML array.
    pub fn seeds_toml(&self) -> String {
        let seeds = self
            .ports
            .iter()
            .map(|p| format!("\"redis://127.0.0.1:{p}\""))
            .collect::<Vec<_>>();
        format!("[{}]", seeds.join(", "))
    }
}

impl RedisCluster {
    /// `CLUSTER MYID` of the node on `port`.
    pub fn node_id(&self, port: u16) -> String {
        self.cli(port, &["CLUSTER", "MYID"])
            .expect("CLUSTER MYID")
            .trim()
            .to_string()
    }

    /// `redis-cli -x -p PORT ARGS… LAST`: `last` (any bytes, NUL included: corvid's keys
    /// have one) goes through stdin as the last argument.
    pub fn cli_with(&self, port: u16, args: &[&str], last: &[u8]) -> Option<String> {
        use std::io::Write;
        use std::process::Stdio;
        let mut child = Command::new("redis-cli")
            .args(["-x", "-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .ok()?;
        child.stdin.take()?.write_all(last).ok()?;
        let out = child.wait_with_output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The keys the node on `port` holds (`KEYS *`; corvid's keys have no newline).
    pub fn keys_of(&self, port: u16) -> Vec<Vec<u8>> {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "KEYS", "*"])
            .output()
            .expect("redis-cli");
        out.stdout
            .split(|&b| b == b'\n')
            .filter(|k| !k.is_empty())
            .map(<[u8]>::to_vec)
            .collect()
    }

    /// `CLUSTER KEYSLOT key`.
    pub fn slot_of(&self, key: &[u8]) -> u16 {
        let port = self.live_ports()[0];
        self.cli_with(port, &["CLUSTER", "KEYSLOT"], key)
            .and_then(|s| s.trim().parse().ok())
            .expect("CLUSTER KEYSLOT")
    }
}

impl RedisCluster {
    /// Sends `sig` (e.g. SIGSTOP, SIGCONT) to the node on `port`.
    pub fn signal(&self, port: u16, sig: libc::c_int) {
        let i = self.ports.iter().position(|&p| p == port).expect("a node");
        self.nodes[i].as_ref().expect("a running node").signal(sig);
    }
}

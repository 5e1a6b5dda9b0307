//! A fleet of corvid processes on loopback (issue 18): N instances with free ports, each with
//! a `[cluster]` naming all of them and one shared secret, in front of one counting origin
//! (optionally one Redis). Members can be killed (SIGKILL), restarted on their port, and added
//! (the others reload the new `peers` list on SIGHUP); `/admin/cluster` is polled for a member
//! going up or down. Without `cluster` the same N instances work alone: the contrast.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::http::{self, RawResponse};
use super::redis_server::RedisServer;
use super::{bucket_toml_for, free_port, now, server_toml, toml_str, wait_until, Corvid, Origin};
use crate::jwt_support::{key, TestKey};

/// The public bucket (origin bucket and URL prefix `/fleet`).
pub const BUCKET: &str = "fleet";
/// The JWT-protected bucket (`auth = true`; origin bucket and URL prefix `/fpriv`).
pub const PRIVATE: &str = "fpriv";
/// `cluster.secret` of every member (>= 16 bytes).
pub const SECRET: &str = "fleet-test-secret-0123456789abcdef";
/// The `User-Agent` tests send, to tell their requests from peers' in an access log.
pub const CLIENT_UA: &str = "fleet-test-client";
/// How often a member re-checks peers marked down (`cluster.peers_refresh`).
pub const PEERS_REFRESH: &str = "200ms";

/// What a fleet is made of.
#[derive(Clone)]
pub struct FleetOptions {
    pub size: usize,
    /// `[cluster]` in every member's config (false: independent instances).
    pub cluster: bool,
    /// One redis-server shared by all members (`[cache.redis]`).
    pub redis: bool,
    /// An access log per member (`[log] access`, `sample = 1.0`): [`Fleet::access_log`].
    pub access_log: bool,
    /// Appended inside `[cluster]` (e.g. `peer_timeout = "1s"`).
    pub cluster_extra: String,
    /// Whole tables appended to every member's config (e.g. `[cache]` with slicing).
    pub extra_toml: String,
}

impl FleetOptions {
    /// `size` members with `[cluster]`, no Redis, no access log.
    pub fn cluster(size: usize) -> FleetOptions {
        FleetOptions {
            size,
            cluster: true,
            redis: false,
            access_log: false,
            cluster_extra: String::new(),
            extra_toml: String::new(),
        }
    }

    /// `size` instances without `[cluster]` (each alone).
    pub fn alone(size: usize) -> FleetOptions {
        FleetOptions {
            cluster: false,
            ..FleetOptions::cluster(size)
        }
    }
}

struct Member {
    port: u16,
    /// The ports its current config names in `cluster.peers`.
    peers: Vec<u16>,
    corvid: Option<Corvid>,
}

/// N corvid processes, one origin (buckets [`BUCKET`] and [`PRIVATE`]), one HS256 JWT key
/// (client tokens and the admin claim `role = admin`).
pub struct Fleet {
    pub origin: Origin,
    pub jwt: TestKey,
    pub redis: Option<RedisServer>,
    opts: FleetOptions,
    members: Vec<Member>,
    /// Access logs live here, outside each process's scratch dir, so they survive restarts.
    dir: tempfile::TempDir,
}

impl Fleet {
    /// Starts the origin (and Redis), then every member, each healthy before the next starts.
    pub fn start(opts: FleetOptions) -> Fleet {
        let origin = Origin::start();
        origin.create_bucket(BUCKET);
        origin.create_bucket(PRIVATE);
        let redis = opts.redis.then(|| RedisServer::start(&[]));
        let ports: Vec<u16> = (0..opts.size).map(|_| free_port()).collect();
        let mut fleet = Fleet {
            origin,
            jwt: key("HS256", 0),
            redis,
            opts,
            members: Vec::new(),
            dir: tempfile::Builder::new()
                .prefix("corvid-fleet-")
                .tempdir()
                .expect("fleet temp dir"),
        };
        for &port in &ports {
            fleet.members.push(Member {
                port,
                peers: ports.clone(),
                corvid: None,
            });
        }
        for i in 0..fleet.members.len() {
            fleet.restart(i);
        }
        fleet
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.members[i].port))
    }

    /// Member `i`'s `host:port` as its peers name it (`cluster.peer`).
    pub fn peer(&self, i: usize) -> String {
        self.addr(i).to_string()
    }

    /// The running process of member `i` (panics if it was killed).
    pub fn corvid(&self, i: usize) -> &Corvid {
        self.members[i]
            .corvid
            .as_ref()
            .unwrap_or_else(|| panic!("member {i} is not running"))
    }

    /// The config member `i` runs with (or would run with) for the peers `peers`.
    pub fn config(&self, i: usize, peers: &[u16]) -> String {
        let port = self.members[i].port;
        let endpoint = self.origin.endpoint();
        let mut toml = format!(
            "{}{}{}\n[jwt]\nalgorithm = \"HS256\"\nsecret = {}\n\n[admin]\nclaim = {{ name = \"role\", value = \"admin\" }}\n",
            server_toml(port),
            bucket_toml_for(BUCKET, &format!("/{BUCKET}"), &endpoint, BUCKET, ""),
            bucket_toml_for(PRIVATE, &format!("/{PRIVATE}"), &endpoint, PRIVATE, "auth = true"),
            toml_str(self.jwt.secret.as_deref().expect("HS256 key has a secret")),
        );
        if let Some(r) = &self.redis {
            toml.push_str(&format!("\n[cache.redis]\nurl = {}\n", toml_str(&r.url())));
        }
        if self.opts.access_log {
            toml.push_str(&format!(
                "\n[log]\naccess = {}\nsample = 1.0\n",
                toml_str(&self.access_log(i).to_string_lossy())
            ));
        }
        toml.push_str(&format!("\n{}\n", self.opts.extra_toml));
        if self.opts.cluster {
            let list = peers
                .iter()
                .map(|p| toml_str(&format!("127.0.0.1:{p}")))
                .collect::<Vec<_>>()
                .join(", ");
            toml.push_str(&format!(
                "\n[cluster]\npeer = {}\npeers = [{list}]\nsecret = {}\npeers_refresh = {}\n{}\n",
                toml_str(&format!("127.0.0.1:{port}")),
                toml_str(SECRET),
                toml_str(PEERS_REFRESH),
                self.opts.cluster_extra,
            ));
        }
        toml
    }

    /// Member `i`'s access log (with `FleetOptions::access_log`).
    pub fn access_log(&self, i: usize) -> PathBuf {
        self.dir
            .path()
            .join(format!("access-{}.log", self.members[i].port))
    }

    /// The access log lines of member `i` for bucket requests (not the harness's probes), once
    /// there are at least `n` (bounded wait: the log is written at least every 200 ms). An
    /// owner also logs the requests it answered for its peers.
    pub fn access_lines(&self, i: usize, n: usize) -> Vec<Value> {
        self.access_lines_where(i, n, |_| true)
    }

    /// The lines of requests sent with `user-agent: `[`CLIENT_UA`] (this test's clients, not
    /// peers) on member `i`, once there are at least `n`.
    pub fn client_lines(&self, i: usize, n: usize) -> Vec<Value> {
        self.access_lines_where(i, n, |l| l["ua"] == CLIENT_UA)
    }

    /// The bucket-request lines of member `i` that pass `keep`, once there are at least `n`.
    pub fn access_lines_where(
        &self,
        i: usize,
        n: usize,
        keep: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        let path = self.access_log(i);
        let mut got = Vec::new();
        let ok = wait_until(Duration::from_secs(10), || {
            got = std::fs::read_to_string(&path)
                .unwrap_or_default()
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{l}: {e}")))
                .filter(|l| l["bucket"] == BUCKET || l["bucket"] == PRIVATE)
                .filter(&keep)
                .collect();
            got.len() >= n
        });
        if !ok {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            panic!(
                "{} lines of interest in {}, wanted {n}; {} lines in all, last: {:?}; dropped: {}",
                got.len(),
                path.display(),
                text.lines().count(),
                text.lines().last(),
                self.metric(i, "corvid_access_log_dropped_total", &[])
            );
        }
        got
    }

    /// SIGKILL of member `i`, waiting until it is gone (its port then refuses connections).
    pub fn kill(&mut self, i: usize) {
        self.stop(i, libc::SIGKILL);
    }

    /// Sends `sig` to member `i` (SIGKILL, or SIGTERM for a graceful drain) and waits until
    /// it has exited.
    pub fn stop(&mut self, i: usize, sig: libc::c_int) {
        let mut c = self.members[i]
            .corvid
            .take()
            .unwrap_or_else(|| panic!("member {i} is not running"));
        c.signal(sig);
        assert!(
            c.wait_exit(Duration::from_secs(40)).is_some(),
            "member {i} survived signal {sig}:\n{}",
            c.stderr()
        );
    }

    /// (Re)starts member `i` on its port with its current peers; healthy when this returns.
    pub fn restart(&mut self, i: usize) {
        assert!(self.members[i].corvid.is_none(), "member {i} is running");
        let config = self.config(i, &self.members[i].peers);
        self.members[i].corvid = Some(Corvid::start(&config));
    }

    /// Adds a member on a free port: it starts with every member in its `peers`, then every
    /// running member rewrites its config with the new list and reloads it (SIGHUP), and this
    /// returns once each reported the reload applied. Returns the new member's index.
    pub fn add(&mut self) -> usize {
        let port = free_port();
        let mut peers: Vec<u16> = self.members.iter().map(|m| m.port).collect();
        peers.push(port);
        self.members.push(Member {
            port,
            peers: peers.clone(),
            corvid: None,
        });
        let new = self.members.len() - 1;
        self.restart(new);
        for i in 0..new {
            self.members[i].peers = peers.clone();
            let Some(c) = self.members[i].corvid.as_ref() else {
                continue;
            };
            let before = reloads_ok(c.addr());
            std::fs::write(c.config_path(), self.config(i, &peers)).expect("rewrite config");
            c.signal(libc::SIGHUP);
            let applied = wait_until(Duration::from_secs(10), || reloads_ok(c.addr()) > before);
            assert!(
                applied,
                "member {i} did not apply the new peers list:\n{}",
                c.stderr()
            );
        }
        new
    }

    /// A client token for the private bucket.
    pub fn token(&self) -> String {
        self.jwt
            .token(None, &json!({"exp": now() + 600, "role": "reader"}))
    }

    /// An admin token (`role = admin`).
    pub fn admin_token(&self) -> String {
        self.jwt
            .token(None, &json!({"exp": now() + 600, "role": "admin"}))
    }

    /// `GET /admin/cluster` on member `i` (status and raw answer).
    pub fn cluster_raw(&self, i: usize) -> RawResponse {
        let auth = format!("Bearer {}", self.admin_token());
        http::get(self.addr(i), "/admin/cluster", &[("authorization", &auth)])
    }

    /// `GET /admin/cluster` on member `i`, which must answer 200 with JSON.
    pub fn cluster(&self, i: usize) -> Value {
        let r = self.cluster_raw(i);
        assert_eq!(r.status, 200, "/admin/cluster on {i}: {}", r.text());
        serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.text()))
    }

    /// Whether member `i`'s `/admin/cluster` shows member `j` with `"up": up`.
    pub fn shows(&self, i: usize, j: usize, up: bool) -> bool {
        let addr = self.peer(j);
        let r = self.cluster_raw(i);
        if r.status != 200 {
            return false;
        }
        let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        v["members"]
            .as_array()
            .is_some_and(|ms| ms.iter().any(|m| m["addr"] == addr && m["up"] == up))
    }

    /// Polls member `i`'s `/admin/cluster` until it shows member `j` with `"up": up`; how long
    /// that took, or None after `bound`.
    pub fn wait_shows(&self, i: usize, j: usize, up: bool, bound: Duration) -> Option<Duration> {
        let t0 = Instant::now();
        wait_until(bound, || self.shows(i, j, up)).then(|| t0.elapsed())
    }

    /// `/metrics` of member `i`.
    pub fn metrics(&self, i: usize) -> String {
        http::get(self.addr(i), "/metrics", &[]).text()
    }

    /// The sum of the series `name` whose labels include every `labels` pair, on member `i`.
    pub fn metric(&self, i: usize, name: &str, labels: &[(&str, &str)]) -> u64 {
        metric_sum(&self.metrics(i), name, labels)
    }

    /// [`Fleet::metric`] summed over every running member.
    pub fn metric_all(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        (0..self.len())
            .filter(|&i| self.members[i].corvid.is_some())
            .map(|i| self.metric(i, name, labels))
            .sum()
    }

    /// Puts `body` under `key` in the public bucket at the origin.
    pub fn put(&self, key: &str, body: &[u8]) {
        self.origin.put(BUCKET, key, body);
    }

    /// The origin's GETs of objects in the public bucket so far.
    pub fn origin_gets(&self) -> u64 {
        self.origin.count("GET")
    }
}

/// The sum of the series `name` (any labels, or none) whose labels include every `labels`
/// pair; 0 when there is none. Values are read as floats (counters print as integers).
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    let mut sum = 0.0;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (label_part, value) = match rest.strip_prefix('{') {
            Some(r) => match r.split_once("} ") {
                Some((l, v)) => (l, v),
                None => continue,
            },
            None => match rest.strip_prefix(' ') {
                Some(v) => ("", v),
                None => continue,
            },
        };
        let wanted = labels
            .iter()
            .all(|(k, v)| label_part.contains(&format!("{k}=\"{v}\"")));
        if wanted {
            sum += value.trim().parse::<f64>().unwrap_or(0.0);
        }
    }
    sum as u64
}

/// `corvid_config_reloads_total{outcome="ok"}` of the instance at `addr`.
fn reloads_ok(addr: SocketAddr) -> u64 {
    metric_sum(
        &http::get(addr, "/metrics", &[]).text(),
        "corvid_config_reloads_total",
        &[("outcome", "ok")],
    )
}

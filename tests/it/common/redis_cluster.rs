//! A real Redis Cluster for tests: six `redis-server --cluster-enabled yes` children on free
//! loopback ports (client and cluster-bus ports both picked free), joined by
//! `redis-cli --cluster create … --cluster-replicas 1` into three masters with one replica
//! each, and waited on until every node reports `cluster_state:ok`; optionally with a password
//! and speaking only TLS. Killed on drop (each node is a [`RedisServer`]). Needs `redis-server` and `redis-cli` (Redis 7: `cluster-port`)
//! on PATH.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::net::wait_until;
use super::port::free_port;
use super::redis_server::RedisServer;

pub struct RedisCluster {
    /// The nodes, `None` once killed by [`RedisCluster::kill`].
    pub nodes: Vec<Option<RedisServer>>,
    pub ports: Vec<u16>,
    /// `requirepass` (and `masterauth`) of every node.
    password: Option<String>,
    /// The CA file `redis-cli` trusts when the cluster speaks only TLS.
    tls_ca: Option<PathBuf>,
}

impl RedisCluster {
    /// Starts six nodes, creates the cluster (3 masters, 3 replicas) and waits until every
    /// node says `cluster_state:ok`. `node_timeout_ms` is `cluster-node-timeout` (how soon a
    /// dead master is failed over).
    pub fn start(node_timeout_ms: u32) -> RedisCluster {
        Self::start_with(node_timeout_ms, None, None)
    }

    /// [`RedisCluster::start`] with every node requiring `password` (replicas log into their
    /// masters with it), and speaking only TLS with `tls`'s certificate (client, replication
    /// and cluster bus), when given.
    pub fn start_with(
        node_timeout_ms: u32,
        password: Option<&str>,
        tls: Option<&ClusterTls>,
    ) -> RedisCluster {
        let timeout = node_timeout_ms.to_string();
        let mut nodes = Vec::new();
        let mut ports = Vec::new();
        for _ in 0..6 {
            let bus = free_port().to_string();
            let mut extra = vec![
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                &bus,
                "--cluster-node-timeout",
                &timeout,
            ];
            if let Some(pw) = password {
                extra.extend(["--requirepass", pw, "--masterauth", pw]);
            }
            let node = match tls {
                None => RedisServer::start_on(free_port(), &extra),
                Some(t) => {
                    extra.extend(["--tls-cluster", "yes", "--tls-replication", "yes"]);
                    RedisServer::start_tls(
                        &t.cert_pem,
                        &t.key_pem,
                        &t.ca_pem,
                        t.client_config.clone(),
                        &extra,
                    )
                }
            };
            ports.push(node.port);
            nodes.push(Some(node));
        }
        let cluster = RedisCluster {
            nodes,
            ports,
            password: password.map(str::to_owned),
            tls_ca: tls.map(|t| t.ca_pem.clone()),
        };
        let mut create = cluster.cli_command();
        create.arg("--cluster").arg("create");
        for p in &cluster.ports {
            create.arg(format!("127.0.0.1:{p}"));
        }
        // `redis-cli --cluster create` waits forever for nodes that cannot join (a cluster
        // bus that fails its TLS handshake, say): bounded here.
        let mut child = create
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("redis-cli runs (Debian: apt-get install redis-tools)");
        let exited = wait_until(Duration::from_secs(60), || {
            child.try_wait().ok().flatten().is_some()
        });
        if !exited {
            let _ = child.kill();
        }
        let out = child.wait_with_output().expect("redis-cli output");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            wait_until(Duration::from_secs(30), || cluster.is_ok()),
            "the cluster did not reach cluster_state:ok within 30 s"
        );
        cluster
    }

    /// `redis-cli` with the cluster's login and TLS options.
    fn cli_command(&self) -> Command {
        let mut c = Command::new("redis-cli");
        if let Some(pw) = &self.password {
            c.args(["--no-auth-warning", "-a", pw]);
        }
        if let Some(ca) = &self.tls_ca {
            c.arg("--tls").arg("--cacert").arg(ca);
        }
        c
    }

    /// `redis[s]://[:password@]127.0.0.1:P` of every node, as a TOML array.
    pub fn seeds_toml(&self) -> String {
        let scheme = if self.tls_ca.is_some() {
            "rediss"
        } else {
            "redis"
        };
        let login = self
            .password
            .as_ref()
            .map_or(String::new(), |pw| format!(":{pw}@"));
        let seeds = self
            .ports
            .iter()
            .map(|p| format!("\"{scheme}://{login}127.0.0.1:{p}\""))
            .collect::<Vec<_>>();
        format!("[{}]", seeds.join(", "))
    }

    /// `redis-cli -p PORT ARGS…`'s output (None when it fails).
    pub fn cli(&self, port: u16, args: &[&str]) -> Option<String> {
        let out = self
            .cli_command()
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
        let mut child = self
            .cli_command()
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
        let out = self
            .cli_command()
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

/// A test CA and one certificate for 127.0.0.1 that every node of a TLS cluster presents, as
/// a server and as a client (the cluster bus and replication are TLS too, and a node dials
/// its peers with its own certificate: it needs the `clientAuth` usage as well, which the
/// server-only certificates of [`super::tls`] lack), written as PEM files.
pub struct ClusterTls {
    _dir: tempfile::TempDir,
    pub ca_pem: PathBuf,
    pub cert_pem: PathBuf,
    pub key_pem: PathBuf,
    /// Trusts the CA (for [`RedisServer`]'s own helper connections).
    pub client_config: std::sync::Arc<rustls::ClientConfig>,
}

impl ClusterTls {
    pub fn generate() -> ClusterTls {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
            KeyUsagePurpose, SanType,
        };
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "corvid test cluster CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().expect("ca key");
        let ca = ca.self_signed(&ca_key).expect("self-sign ca");
        let mut leaf = CertificateParams::new(Vec::<String>::new()).expect("leaf params");
        leaf.subject_alt_names
            .push(SanType::IpAddress(std::net::IpAddr::V4(
                std::net::Ipv4Addr::LOCALHOST,
            )));
        leaf.distinguished_name
            .push(DnType::CommonName, "127.0.0.1");
        leaf.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().expect("leaf key");
        let leaf = leaf.signed_by(&key, &ca, &ca_key).expect("sign leaf");
        let dir = tempfile::Builder::new()
            .prefix("corvid-cluster-tls-")
            .tempdir()
            .expect("tls temp dir");
        let write = |name: &str, content: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, content).expect("write pem");
            p
        };
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.der().clone()).expect("add CA root");
        let client_config = std::sync::Arc::new(
            rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
        );
        ClusterTls {
            ca_pem: write("ca.pem", &ca.pem()),
            cert_pem: write("node.pem", &leaf.pem()),
            key_pem: write("node.key", &key.serialize_pem()),
            client_config,
            _dir: dir,
        }
    }
}

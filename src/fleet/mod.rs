//! A fleet: several corvid instances that act as one cache. Each key has one owner among the
//! members ([`owner`]: rendezvous hashing); a miss on a key another member owns is fetched from
//! that member as if it were the origin ([`client`]), so the owner's coalescing makes one
//! origin request per object for the whole fleet, and each object is stored once.
//!
//! This module owns the membership (from `cluster.peers`, or every address of
//! `cluster.peers_dns` — a Kubernetes headless Service — re-resolved every `peers_refresh`),
//! each member's health, and the peer header ([`peer_auth`]). `object`'s fetch step asks
//! [`Fleet::route`] where a key's miss goes; the request handler checks a received
//! `x-corvid-peer` header with [`Fleet::verify`].
//!
//! # What is owned, and what the asking member keeps
//! A whole object belongs to its cache key's owner, which alone stores it (in its tiers, and
//! in Redis when there is a Redis tier): the asking member relays the answer and keeps no copy,
//! so a fleet holds each object once and its memory adds up. The price: a hot object asked of a
//! member that does not own it costs one hop per request (a few hundred µs on a LAN; measured
//! in `perf/RESULTS.md`). Keeping relayed answers briefly would save the hop but put the copies
//! back, and with a Redis tier the owner's copy there is already found before any hop — so it
//! is the operator's choice: `cluster.local_ttl` (0, off, by default) keeps a relayed whole
//! object in the asking member's memory tier only (`Meta::is_local`: never written to disk or
//! Redis), fresh for at most that long; a stale copy is revalidated with the owner and capped
//! again (`object::fill::storable_for`, `object::revalidate::confirmed`). Purges already reach
//! every member.
//! A sliced object's entry (metadata) belongs to its key's owner and is copied by every member
//! that serves it; each slice belongs to the owner of the slice's own key (`object::sliced`,
//! `object::slice_fill`), so a large object's slices are spread over the fleet and each is
//! fetched from the origin once. An admin purge is repeated on every member (`admin`).
//!
//! # Failures never fail a client request
//! A member that refuses the connection, does not answer within `cluster.peer_timeout`, or
//! answers `503` (draining, or not ready) is marked **down**: its keys keep their owner (they are
//! not moved to another member, which would shuffle them twice), but requests for them go to the
//! origin directly until a health check (`GET /ready?origins=ignore` every `peers_refresh`, off the workers)
//! answers `200`. A membership change (DNS, or a reload with a new `peers` list) moves only the
//! keys of the members that came or went.
//!
//! # Shared state
//! One [`Fleet`] per config generation, shared by the workers: the member list behind a lock
//! held for an `Arc` clone (only on misses), each member's state in atomics. The monitor thread
//! (DNS, health checks) holds it weakly and ends with its generation.

pub mod client;
pub mod owner;
pub mod peer_auth;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use crate::config::{ClusterConfig, PeerAddr, PeerSource};
use crate::s3::origins::OriginState;
use owner::Seed;

/// How long a health check may take to connect and to answer.
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// One member of the fleet.
pub struct Member {
    /// `host:port`: its identity in ownership and signatures.
    pub name: Arc<str>,
    /// Whether this member is this instance.
    pub is_self: bool,
    /// Its resolved addresses (re-resolved by the monitor), for the peer connection pools.
    pub addrs: Arc<OriginState>,
    up: AtomicBool,
}

impl Member {
    fn new(addr: &PeerAddr, is_self: bool) -> Member {
        Member {
            name: Arc::from(addr.to_string()),
            is_self,
            addrs: OriginState::peer(&addr.host, addr.port),
            up: AtomicBool::new(true),
        }
    }

    /// Whether requests go to it (always true for this instance).
    pub fn is_up(&self) -> bool {
        self.is_self || self.up.load(Ordering::Relaxed)
    }
}

/// The members at one moment, sorted by name, with their ownership seeds.
pub struct View {
    pub members: Vec<Arc<Member>>,
    seeds: Vec<Seed>,
}

impl View {
    fn new(mut members: Vec<Arc<Member>>) -> View {
        members.sort_by(|a, b| a.name.cmp(&b.name));
        members.dedup_by(|a, b| a.name == b.name);
        let seeds = members.iter().map(|m| Seed::of(&m.name)).collect();
        View { members, seeds }
    }
}

/// Where a miss on a key goes.
pub enum Route {
    /// This instance owns the key (or works alone): the origin.
    Local,
    /// Another member owns it and is up: ask it.
    Peer(Arc<Member>),
    /// Another member owns it but is marked down: the origin, directly.
    Down(Arc<Member>),
}

/// The fleet this instance belongs to (one per config generation).
pub struct Fleet {
    /// This instance's member name (`cluster.peer`).
    pub me: Arc<str>,
    secret: Vec<u8>,
    /// `cluster.peer_timeout`.
    pub peer_timeout: Duration,
    refresh: Duration,
    source: PeerSource,
    my_addr: PeerAddr,
    view: RwLock<Arc<View>>,
}

impl Fleet {
    /// The fleet of `cfg`, its members resolved once (blocking: the starting or reload thread).
    pub fn new(cfg: &ClusterConfig) -> Arc<Fleet> {
        let fleet = Arc::new(Fleet {
            me: Arc::from(cfg.peer.to_string()),
            secret: cfg.secret.as_bytes().to_vec(),
            peer_timeout: cfg.peer_timeout,
            refresh: cfg.peers_refresh,
            source: cfg.members.clone(),
            my_addr: cfg.peer.clone(),
            view: RwLock::new(Arc::new(View::new(Vec::new()))),
        });
        fleet.refresh_members();
        fleet
    }

    /// The current members.
    pub fn view(&self) -> Arc<View> {
        Arc::clone(&self.view.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Where a miss on `key` (a cache key, or a slice's key) goes.
    pub fn route(&self, key: &[u8]) -> Route {
        let view = self.view();
        let Some(i) = owner::owner(key, &view.seeds) else {
            return Route::Local;
        };
        let m = &view.members[i];
        if m.is_self {
            Route::Local
        } else if m.is_up() {
            Route::Peer(Arc::clone(m))
        } else {
            Route::Down(Arc::clone(m))
        }
    }

    /// The owner of `key` by name, `None` when it is this instance (whatever its health: runs
    /// of slices are cut where the owner changes).
    pub fn owner_name(&self, key: &[u8]) -> Option<Arc<str>> {
        let view = self.view();
        let m = &view.members[owner::owner(key, &view.seeds)?];
        (!m.is_self).then(|| Arc::clone(&m.name))
    }

    /// Marks `m` down until a health check passes (see the module docs).
    pub fn mark_down(&self, m: &Member) {
        if !m.is_self && m.up.swap(false, Ordering::Relaxed) {
            log::warn!(
                "peer {} marked down: its keys go to the origin until it answers /ready",
                m.name
            );
        }
    }

    /// The `x-corvid-peer` value for a request `method target` sent now.
    pub fn sign(&self, method: &str, target: &str, now_secs: u64) -> String {
        peer_auth::sign(&self.secret, method, target, now_secs, &self.me)
    }

    /// Checks a received `x-corvid-peer` value ([`peer_auth::verify`]).
    pub fn verify(
        &self,
        value: &[u8],
        method: &str,
        target: &str,
        now_secs: u64,
    ) -> Result<(), peer_auth::Refused> {
        peer_auth::verify(&self.secret, value, method, target, now_secs).map(|_| ())
    }

    /// (up, down) member counts, this instance counted up.
    pub fn counts(&self) -> (usize, usize) {
        let view = self.view();
        let up = view.members.iter().filter(|m| m.is_up()).count();
        (up, view.members.len() - up)
    }

    /// Re-reads the member list (resolving `peers_dns`, or the hosts of `peers`); members that
    /// stay keep their state. Blocking.
    #[expect(clippy::disallowed_methods, reason = "the monitor thread or start-up")]
    fn refresh_members(&self) {
        let addrs: Vec<PeerAddr> = match &self.source {
            PeerSource::Static(list) => list.clone(),
            PeerSource::Dns(name) => match (name.host.as_str(), name.port).to_socket_addrs() {
                Ok(found) => found
                    .map(|a| PeerAddr {
                        host: a.ip().to_string(),
                        port: a.port(),
                    })
                    .collect(),
                Err(e) => {
                    // Keep the members we had: a DNS hiccup must not empty the fleet.
                    log::warn!("cluster.peers_dns: cannot resolve {name}: {e}");
                    return;
                }
            },
        };
        let old = self.view();
        let mut members: Vec<Arc<Member>> = Vec::with_capacity(addrs.len() + 1);
        for a in addrs.iter().chain(std::iter::once(&self.my_addr)) {
            let name = a.to_string();
            let kept = old.members.iter().find(|m| *m.name == *name);
            members.push(match kept {
                Some(m) => Arc::clone(m),
                None => Arc::new(Member::new(a, name == *self.me)),
            });
        }
        for m in &members {
            if !m.is_self {
                m.addrs.resolve();
            }
        }
        let view = View::new(members);
        let changed = view.members.len() != old.members.len()
            || view
                .members
                .iter()
                .zip(&old.members)
                .any(|(a, b)| a.name != b.name);
        if changed {
            let names: Vec<&str> = view.members.iter().map(|m| &*m.name).collect();
            log::info!("fleet members: {}", names.join(", "));
        }
        *self.view.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(view);
    }

    /// Health checks of the members marked down: `GET /ready`, 200 marks one up. Blocking.
    fn check_down_members(&self) {
        for m in self.view().members.iter().filter(|m| !m.is_up()) {
            if ready(&m.addrs.addrs(), &m.name) {
                log::info!("peer {} answers /ready again: marked up", m.name);
                m.up.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Starts the monitor thread: members re-read and down members checked every
    /// `peers_refresh`, until `stop` is set or the fleet (its generation) is gone.
    #[expect(clippy::disallowed_methods, reason = "sleeps on the monitor thread")]
    pub fn spawn_monitor(self: &Arc<Self>, stop: Arc<AtomicBool>) {
        let weak: Weak<Fleet> = Arc::downgrade(self);
        let interval = self.refresh;
        let spawned = std::thread::Builder::new()
            .name("corvid-fleet".into())
            .spawn(move || {
                let mut next = Instant::now() + interval;
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(interval.min(Duration::from_millis(100)));
                    if Instant::now() < next {
                        continue;
                    }
                    let Some(fleet) = weak.upgrade() else { return };
                    fleet.refresh_members();
                    fleet.check_down_members();
                    next = Instant::now() + interval;
                }
            });
        if let Err(e) = spawned {
            log::error!("cannot start the fleet monitor thread: {e}");
        }
    }
}

/// Whether the member at `addrs` answers `GET /ready?origins=ignore` with 200 within
/// [`CHECK_TIMEOUT`]: a member serves its keys from its cache even while the origin is down.
#[expect(clippy::disallowed_methods, reason = "the monitor thread")]
fn ready(addrs: &[SocketAddr], name: &str) -> bool {
    let Some(addr) = addrs.first() else {
        return false;
    };
    let Ok(mut s) = TcpStream::connect_timeout(addr, CHECK_TIMEOUT) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(CHECK_TIMEOUT));
    let _ = s.set_write_timeout(Some(CHECK_TIMEOUT));
    let req =
        format!("GET /ready?origins=ignore HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 16];
    let mut got = 0;
    while got < head.len() {
        match s.read(&mut head[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    head[..got].starts_with(b"HTTP/1.1 200 ") || head[..got].starts_with(b"HTTP/1.0 200 ")
}

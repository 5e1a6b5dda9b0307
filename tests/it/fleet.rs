//! A fleet of corvid processes (issue 18, misses routed to the owning instance), through real
//! sockets and one counting origin: one origin GET per object for the whole fleet (and three
//! without `[cluster]`), cold concurrent misses coalesced at the owner, HEAD/Range/conditional
//! answers through an owner, an owner killed under load with zero failed requests and marked
//! down then up again, a member added moving ~1/4 of the keys and only to it, forged peer
//! markers refused (HMAC made here with the `hmac` crate, not corvid's code), JWT checked where
//! the client arrived, `[cluster]` config errors, and the metrics and access log of peer traffic.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::common::fleet::{metric_sum, Fleet, FleetOptions, BUCKET, CLIENT_UA, PRIVATE, SECRET};
use crate::common::http::{self, Conn, RawResponse};
use crate::common::*;

const PEER_REQUESTS: &str = "corvid_peer_requests_total";
const SERVED: &str = "corvid_peer_requests_served_total";
const FALLBACKS: &str = "corvid_peer_fallbacks_total";
/// How long a member may take to see a peer's death or return (`peers_refresh` is 200 ms;
/// generous because the test machine is shared and busy).
const MEMBERSHIP_BOUND: Duration = Duration::from_secs(5);

/// `count` small objects `{prefix}/NNN` with distinct bodies, stored at the origin.
fn objects(fleet: &Fleet, prefix: &str, count: usize) -> Vec<(String, Vec<u8>)> {
    let objs: Vec<(String, Vec<u8>)> = (0..count)
        .map(|k| {
            let body = pattern_bytes(300 + (k * 37) % 1700, 1 + k as u64);
            (format!("{prefix}/{k:03}"), body)
        })
        .collect();
    for (k, body) in &objs {
        fleet.put(k, body);
    }
    objs
}

fn path(key: &str) -> String {
    format!("/{BUCKET}/{key}")
}

/// A 200 with exactly `body`, else a panic naming `what`.
fn assert_object(r: &RawResponse, body: &[u8], what: &str) {
    assert_eq!(r.status, 200, "{what}: {}", r.text());
    assert!(
        r.body == body,
        "{what}: body differs ({} bytes, wanted {})",
        r.body.len(),
        body.len()
    );
}

/// Waits (bounded) until `f` returns `want`, then asserts it does: for counters that are
/// bumped once an answer is written, so the last request may still be counting.
fn settles(what: &str, want: u64, mut f: impl FnMut() -> u64) {
    let mut got = 0;
    wait_until(Duration::from_secs(5), || {
        got = f();
        got == want
    });
    assert_eq!(got, want, "{what}");
}

/// Every object through every member of `fleet` (keep-alive connections), `rounds` times;
/// with `cold`, the first answer of each (member 0, round 0) must be a MISS.
fn fetch_everywhere(fleet: &Fleet, objs: &[(String, Vec<u8>)], rounds: usize, cold: bool) {
    let mut conns: Vec<Conn> = (0..fleet.len())
        .map(|i| Conn::connect(fleet.addr(i)))
        .collect();
    for round in 0..rounds {
        for (key, body) in objs {
            for (i, c) in conns.iter_mut().enumerate() {
                let r = c.request("GET", &path(key), &[]);
                assert_object(&r, body, &format!("round {round}, {key} through {i}"));
                if cold && round == 0 && i == 0 {
                    assert_eq!(r.header("x-cache"), Some("MISS"), "{key}");
                }
            }
        }
    }
}

/// Origin GETs per object key (the recorded requests: fewer than 1000 in these tests).
fn origin_gets_per_key(fleet: &Fleet) -> HashMap<String, usize> {
    let mut per = HashMap::new();
    for r in fleet.origin.requests_with("GET") {
        if let Some((bucket, key)) = r.object() {
            if bucket == BUCKET {
                *per.entry(key).or_insert(0) += 1;
            }
        }
    }
    per
}

#[test]
fn every_object_costs_one_origin_get_for_the_fleet_and_three_without_cluster() {
    const OBJECTS: usize = 30;
    // Three independent instances: each fetches every object itself.
    let alone = Fleet::start(FleetOptions::alone(3));
    let objs = objects(&alone, "o", OBJECTS);
    alone.origin.reset_counts();
    fetch_everywhere(&alone, &objs, 2, true);
    assert_eq!(
        alone.origin_gets(),
        3 * OBJECTS as u64,
        "without [cluster] each instance asks the origin"
    );
    drop(alone);

    // The same through a fleet: the owner fetches, the others ask it.
    let fleet = Fleet::start(FleetOptions::cluster(3));
    let objs = objects(&fleet, "o", OBJECTS);
    fleet.origin.reset_counts();
    fetch_everywhere(&fleet, &objs, 2, true);
    let per = origin_gets_per_key(&fleet);
    for (key, _) in &objs {
        assert_eq!(per.get(key), Some(&1), "origin GETs of {key}: {per:?}");
    }
    assert_eq!(fleet.origin_gets(), OBJECTS as u64, "{per:?}");
    assert_eq!(fleet.origin.total_count(), OBJECTS as u64, "GETs only");
}

#[test]
fn concurrent_cold_misses_spread_over_the_fleet_make_one_origin_get() {
    const CLIENTS: usize = 12;
    let fleet = Fleet::start(FleetOptions::cluster(3));
    let body = Arc::new(pattern_bytes(200_000, 42));
    fleet.put("hot.bin", &body);
    fleet.origin.reset_counts();
    // The origin's answer takes 300 ms, so every client arrives while the one fill is pending.
    fleet.origin.set_delay(Duration::from_millis(300));
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|t| {
            let (addr, barrier) = (fleet.addr(t % 3), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                http::try_request(addr, "GET", &path("hot.bin"), &[], Duration::from_secs(30))
            })
        })
        .collect();
    for (t, c) in clients.into_iter().enumerate() {
        let r = c
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("client {t}: {e}"));
        assert_object(&r, &body, &format!("client {t}"));
    }
    assert_eq!(fleet.origin_gets(), 1, "{:?}", fleet.origin.requests());
}

/// What, method, key, the one request header, the status wanted.
type Case<'a> = (&'a str, &'a str, &'a str, (&'a str, &'a str), u16);

#[test]
fn head_range_and_conditional_answer_correctly_through_owners() {
    let fleet = Fleet::start(FleetOptions::cluster(3));
    let body = pattern_bytes(5000, 3);
    let keys = ["head.bin", "range.bin", "inm.bin", "ims.bin", "im.bin"];
    for k in keys {
        fleet.put(k, &body);
    }
    let seen = fleet.origin.get(BUCKET, "ims.bin");
    let etag = seen.header("etag").expect("origin ETag").to_owned();
    let last_modified = seen
        .header("last-modified")
        .expect("Last-Modified")
        .to_owned();
    assert_eq!(
        fleet.origin.get(BUCKET, "inm.bin").header("etag"),
        Some(etag.as_str())
    );
    fleet.origin.reset_counts();
    // Each request goes through all three members in turn, each cold for that key (a single
    // instance answers all of them so): two of them do not own it and ask the owner.
    let cases: [Case<'_>; 5] = [
        ("HEAD", "HEAD", "head.bin", ("x-test", "head"), 200),
        ("Range", "GET", "range.bin", ("range", "bytes=100-199"), 206),
        (
            "If-None-Match",
            "GET",
            "inm.bin",
            ("if-none-match", &etag),
            304,
        ),
        (
            "If-Modified-Since",
            "GET",
            "ims.bin",
            ("if-modified-since", &last_modified),
            304,
        ),
        (
            "If-Match",
            "GET",
            "im.bin",
            ("if-match", "\"another\""),
            412,
        ),
    ];
    let mut failures = Vec::new();
    for (n, (what, method, key, header, status)) in cases.iter().enumerate() {
        for i in 0..3 {
            let mut c = Conn::connect(fleet.addr(i));
            let r = c.request(method, &path(key), &[*header]);
            let r_text = format!("{what} through {i}: {} {:?}", r.status, r.headers);
            if r.status != *status {
                failures.push(format!("{r_text}: wanted {status}"));
                continue;
            }
            match *status {
                200 => {
                    assert_eq!(r.header("content-length"), Some("5000"), "{r_text}");
                    assert_eq!(r.header("etag"), Some(etag.as_str()), "{r_text}");
                    assert!(r.body.is_empty(), "{r_text}");
                }
                206 => {
                    let range = r.header("content-range");
                    assert_eq!(range, Some("bytes 100-199/5000"), "{r_text}");
                    assert!(r.body == body[100..200], "{r_text}");
                }
                304 => {
                    assert_eq!(r.header("etag"), Some(etag.as_str()), "{r_text}");
                    assert!(r.body.is_empty(), "{r_text}");
                }
                _ => {}
            }
        }
        let peer_requests = 2 * (n as u64 + 1);
        settles(&format!("{what}: peer requests"), peer_requests, || {
            fleet.metric_all(PEER_REQUESTS, &[])
        });
        settles(&format!("{what}: served for peers"), peer_requests, || {
            fleet.metric_all(SERVED, &[])
        });
    }
    assert!(
        failures.is_empty(),
        "wrong answers:\n{}",
        failures.join("\n")
    );
    // And the objects themselves, whole, from every member.
    for i in 0..3 {
        for k in keys {
            assert_object(&http::get(fleet.addr(i), &path(k), &[]), &body, k);
        }
    }
    assert_eq!(fleet.metric_all(FALLBACKS, &[]), 0, "no owner failed");
}

#[test]
fn a_killed_owner_under_load_fails_no_request_is_marked_down_then_up_again() {
    an_owner_lost_under_load(libc::SIGKILL, "kill");
}

#[test]
fn a_draining_owner_under_load_fails_no_request() {
    an_owner_lost_under_load(libc::SIGTERM, "drain");
}

/// Three clients loop over 60 keys through members 0 and 1 while member 2 gets `sig`: no
/// request fails, the survivors mark it down (and fall back to the origin for its keys), and
/// once restarted on its port it is marked up and asked for its keys again.
fn an_owner_lost_under_load(sig: libc::c_int, what: &str) {
    const THREADS: usize = 3;
    let mut fleet = Fleet::start(FleetOptions::cluster(3));
    let objs = Arc::new(objects(&fleet, "load", 60));
    let victim = 2;
    let survivors = [fleet.addr(0), fleet.addr(1)];
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    // Clients loop over every key through both survivors; bounded in iterations and time.
    let deadline = Instant::now() + Duration::from_secs(60);
    let clients: Vec<_> = (0..THREADS)
        .map(|t| {
            let (objs, stop, done, failures) =
                (objs.clone(), stop.clone(), done.clone(), failures.clone());
            std::thread::spawn(move || {
                for n in 0..20_000usize {
                    if stop.load(Ordering::SeqCst) || Instant::now() > deadline {
                        break;
                    }
                    let (key, body) = &objs[(n * 7 + t * 11) % objs.len()];
                    let addr = survivors[(n + t) % 2];
                    let fail = match http::try_request(
                        addr,
                        "GET",
                        &path(key),
                        &[],
                        Duration::from_secs(20),
                    ) {
                        Ok(r) if r.status == 200 && r.body == *body => None,
                        Ok(r) => Some(format!("{key} via {addr}: {} {}", r.status, r.body.len())),
                        Err(e) => Some(format!("{key} via {addr}: {e}")),
                    };
                    if let Some(f) = fail {
                        failures.lock().unwrap().push(f);
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();

    assert!(
        wait_until(Duration::from_secs(20), || done.load(Ordering::SeqCst)
            >= 150),
        "the load runs"
    );
    let fallbacks_before = fleet.metric(0, FALLBACKS, &[]) + fleet.metric(1, FALLBACKS, &[]);
    let gets_before = fleet.origin_gets();
    fleet.stop(victim, sig);
    let at_kill = done.load(Ordering::SeqCst);
    let down: Vec<_> = (0..2)
        .map(|i| fleet.wait_shows(i, victim, false, MEMBERSHIP_BOUND))
        .collect();
    assert!(
        down.iter().all(Option::is_some),
        "the survivors mark the dead member down within {MEMBERSHIP_BOUND:?}: {:?} / {:?}",
        fleet.cluster(0),
        fleet.cluster(1)
    );
    let fell_back = wait_until(Duration::from_secs(10), || {
        fleet.metric(0, FALLBACKS, &[]) + fleet.metric(1, FALLBACKS, &[]) > fallbacks_before
    });
    assert!(
        fell_back,
        "requests for the dead member's keys went to the origin"
    );
    for i in 0..2 {
        assert_eq!(fleet.metric(i, "corvid_peers", &[("state", "down")]), 1);
        assert_eq!(fleet.metric(i, "corvid_peers", &[("state", "up")]), 2);
    }
    // More load with the member down, then stop.
    assert!(
        wait_until(Duration::from_secs(20), || {
            done.load(Ordering::SeqCst) >= at_kill + 300
        }),
        "the load goes on after the kill"
    );
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    let total = done.load(Ordering::SeqCst);
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} of {total} requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(
        fleet.origin_gets() > gets_before,
        "the dead member's keys were fetched from the origin"
    );
    assert!(
        fleet.metric(0, FALLBACKS, &[("reason", "down")])
            + fleet.metric(1, FALLBACKS, &[("reason", "down")])
            > 0,
        "later requests skip the member known to be down"
    );
    eprintln!(
        "fleet {what}: {total} requests ({} after it), 0 failed; marked down after {:?}",
        total - at_kill,
        down
    );

    // Back on the same port: marked up again, and asked again for its keys.
    fleet.restart(victim);
    let up: Vec<_> = (0..2)
        .map(|i| fleet.wait_shows(i, victim, true, MEMBERSHIP_BOUND))
        .collect();
    assert!(
        up.iter().all(Option::is_some),
        "the survivors mark the member up within {MEMBERSHIP_BOUND:?}: {:?} / {:?}",
        fleet.cluster(0),
        fleet.cluster(1)
    );
    eprintln!("fleet {what}: marked up again after {up:?}");
    for i in 0..2 {
        assert_eq!(fleet.metric(i, "corvid_peers", &[("state", "up")]), 3);
    }
    let fresh = objects(&fleet, "after", 30);
    for (n, (key, body)) in fresh.iter().enumerate() {
        assert_object(
            &http::get(survivors[n % 2], &path(key), &[]),
            body,
            &format!("{key} after the restart"),
        );
    }
    let served = wait_until(Duration::from_secs(5), || {
        fleet.metric(victim, SERVED, &[]) > 0
    });
    assert!(served, "the restarted member serves its keys to its peers");
}

#[test]
fn a_sliced_object_read_through_every_member_costs_each_slice_once() {
    const SLICE: usize = 64 << 10;
    const LEN: usize = 16 * SLICE + 12_345;
    let fleet = Fleet::start(FleetOptions {
        extra_toml: "[cache]\nmax_object_size = \"256KiB\"\nslice_size = \"64KiB\"\n".to_owned(),
        ..FleetOptions::cluster(3)
    });
    let body = pattern_bytes(LEN, 17);
    fleet.put("big.bin", &body);
    fleet.origin.reset_counts();
    for i in 0..3 {
        let r = http::get(fleet.addr(i), &path("big.bin"), &[]);
        assert_object(&r, &body, &format!("the sliced object through {i}"));
    }
    let r = http::get(
        fleet.addr(1),
        &path("big.bin"),
        &[("range", "bytes=200000-300000")],
    );
    assert_eq!(r.status, 206);
    assert!(r.body == body[200_000..=300_000], "a range across slices");
    // Each slice once for the fleet: no range asked twice, at most one plain GET.
    let mut by_range: HashMap<String, usize> = HashMap::new();
    let gets = fleet.origin.requests_with("GET");
    for g in &gets {
        let range = g.header("range").unwrap_or("(whole)").to_owned();
        *by_range.entry(range).or_insert(0) += 1;
    }
    let twice: Vec<_> = by_range.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "origin GETs asked more than once: {twice:?} (all: {by_range:?})"
    );
    assert!(
        gets.len() <= LEN.div_ceil(SLICE) + 1,
        "{} origin GETs for {} slices: {by_range:?}",
        gets.len(),
        LEN.div_ceil(SLICE)
    );
}

#[test]
fn a_stalled_owner_times_out_once_its_keys_go_to_the_origin_and_it_comes_back() {
    let fleet = Fleet::start(FleetOptions {
        cluster_extra: "peer_timeout = \"1s\"\n".to_owned(),
        ..FleetOptions::cluster(3)
    });
    let objs = objects(&fleet, "stall", 40);
    let victim = 2;
    // Stopped, its port still accepts connections (the kernel's backlog) but never answers.
    fleet.corvid(victim).signal(libc::SIGSTOP);
    let mut slow = Vec::new();
    let started = Instant::now();
    for (n, (key, body)) in objs.iter().enumerate() {
        let t0 = Instant::now();
        let r = http::try_request(
            fleet.addr(n % 2),
            "GET",
            &path(key),
            &[],
            Duration::from_secs(20),
        );
        let took = t0.elapsed();
        let r = r.unwrap_or_else(|e| panic!("{key} with a stalled owner: {e}"));
        assert_object(&r, body, &format!("{key} with a stalled owner"));
        if took >= Duration::from_millis(900) {
            slow.push((key.clone(), took));
        }
    }
    let took_all = started.elapsed();
    // Until a member is marked down each of its 2 workers may wait out one peer_timeout.
    assert!(
        !slow.is_empty() && slow.len() <= 4,
        "requests that waited for the stalled owner: {slow:?} (all took {took_all:?})"
    );
    assert!(
        slow.iter().all(|(_, t)| *t < Duration::from_secs(5)),
        "{slow:?}"
    );
    for i in 0..2 {
        assert!(
            fleet
                .wait_shows(i, victim, false, MEMBERSHIP_BOUND)
                .is_some(),
            "{}",
            fleet.cluster(i)
        );
    }
    let timeouts: u64 = (0..2)
        .map(|i| fleet.metric(i, PEER_REQUESTS, &[("outcome", "timeout")]))
        .sum();
    let failed: u64 = (0..2)
        .map(|i| fleet.metric(i, FALLBACKS, &[("reason", "failed")]))
        .sum();
    let down: u64 = (0..2)
        .map(|i| fleet.metric(i, FALLBACKS, &[("reason", "down")]))
        .sum();
    assert!(
        (1..=4).contains(&timeouts),
        "{timeouts} peer timeouts: {slow:?}"
    );
    assert_eq!(
        failed, timeouts,
        "each timed-out request went to the origin"
    );
    assert!(down > 0, "later requests skip the stalled owner");
    eprintln!(
        "fleet stall: {} timed out, {down} skipped it, all took {took_all:?}",
        slow.len()
    );

    fleet.corvid(victim).signal(libc::SIGCONT);
    for i in 0..2 {
        let up = fleet.wait_shows(i, victim, true, MEMBERSHIP_BOUND);
        assert!(up.is_some(), "{}", fleet.cluster(i));
    }
    let fresh = objects(&fleet, "resumed", 30);
    for (n, (key, body)) in fresh.iter().enumerate() {
        assert_object(&http::get(fleet.addr(n % 2), &path(key), &[]), body, key);
    }
    settles("the resumed owner serves again", 1, || {
        u64::from(fleet.metric(victim, SERVED, &[]) > 0)
    });
}

/// Member addresses named in `"peer"` by access log lines, per request path.
fn peers_named(lines: &[Value]) -> HashMap<String, BTreeSet<String>> {
    let mut by_path: HashMap<String, BTreeSet<String>> = HashMap::new();
    for l in lines {
        let p = l["path"].as_str().unwrap_or_default().to_owned();
        let entry = by_path.entry(p).or_default();
        if let Some(peer) = l["peer"].as_str() {
            entry.insert(peer.to_owned());
        }
    }
    by_path
}

#[test]
fn an_added_member_takes_about_a_quarter_of_the_keys_and_only_those_move() {
    const N: usize = 300;
    let mut fleet = Fleet::start(FleetOptions {
        access_log: true,
        ..FleetOptions::cluster(3)
    });
    let objs: Vec<(String, Vec<u8>)> = (0..N)
        .map(|k| (format!("m/{k:03}"), pattern_bytes(64 + k % 200, k as u64)))
        .collect();
    for (k, b) in &objs {
        fleet.put(k, b);
    }
    fleet.origin.reset_counts();

    // Fill: key k through member k % 3. Who owns it: the member named in that line's "peer",
    // else the member that answered.
    let mut conns: Vec<Conn> = (0..3).map(|i| Conn::connect(fleet.addr(i))).collect();
    for (k, (key, body)) in objs.iter().enumerate() {
        let r = conns[k % 3].request("GET", &path(key), &[("user-agent", CLIENT_UA)]);
        assert_object(&r, body, key);
    }
    assert_eq!(fleet.origin_gets(), N as u64);
    let mut owner_before: HashMap<String, String> = HashMap::new();
    let mut fill_lines = Vec::new();
    for i in 0..3 {
        let lines = fleet.client_lines(i, N / 3);
        assert_eq!(lines.len(), N / 3);
        for l in &lines {
            let owner = l["peer"]
                .as_str()
                .map_or_else(|| fleet.peer(i), str::to_owned);
            owner_before.insert(l["path"].as_str().unwrap().to_owned(), owner);
        }
        fill_lines.push(lines.len());
    }
    let olds: BTreeSet<String> = (0..3).map(|i| fleet.peer(i)).collect();
    let owners: BTreeSet<String> = owner_before.values().cloned().collect();
    assert_eq!(owners, olds, "every member owns some keys");

    let new = fleet.add();
    let new_peer = fleet.peer(new);
    for i in 0..3 {
        let shown = fleet.wait_shows(i, new, true, MEMBERSHIP_BOUND);
        assert!(shown.is_some(), "{}", fleet.cluster(i));
    }
    fleet.origin.reset_counts();

    // Every key through each old member: the previous owner answers from its cache, the
    // others ask the current owner; only keys the new member owns (it is empty) reach the origin.
    let mut conns: Vec<Conn> = (0..3).map(|i| Conn::connect(fleet.addr(i))).collect();
    for (key, body) in &objs {
        for (i, c) in conns.iter_mut().enumerate() {
            assert_object(
                &c.request("GET", &path(key), &[("user-agent", CLIENT_UA)]),
                body,
                &format!("{key} via {i}"),
            );
        }
    }
    let moved = fleet.origin_gets();
    let fraction = moved as f64 / N as f64;
    eprintln!("fleet add: {moved} of {N} keys moved ({fraction:.3}; expected 0.25)");
    assert!(
        (0.15..=0.35).contains(&fraction),
        "{moved} of {N} keys moved to the 4th member"
    );
    let refetched: BTreeSet<String> = origin_gets_per_key(&fleet)
        .into_iter()
        .map(|(k, n)| {
            assert_eq!(n, 1, "{k} fetched {n} times");
            path(&k)
        })
        .collect();
    assert_eq!(refetched.len() as u64, moved);

    // The logs of that pass: a moved key was asked of the new member; any other key of its
    // previous owner (keys move only to the new member).
    let mut named: HashMap<String, BTreeSet<String>> = HashMap::new();
    for (i, skip) in fill_lines.iter().enumerate() {
        let lines = fleet.client_lines(i, skip + N);
        for (p, peers) in peers_named(&lines[*skip..]) {
            named.entry(p).or_default().extend(peers);
        }
    }
    for (key, _) in &objs {
        let p = path(key);
        let peers = named.get(&p).cloned().unwrap_or_default();
        if refetched.contains(&p) {
            assert_eq!(
                peers,
                BTreeSet::from([new_peer.clone()]),
                "{p} moved to the new member"
            );
        } else {
            assert!(
                peers.iter().all(|x| *x == owner_before[&p]),
                "{p} stays with {}: asked of {peers:?}",
                owner_before[&p]
            );
        }
    }

    // A second pass, through all four: nothing more from the origin.
    fleet.origin.reset_counts();
    fetch_everywhere(&fleet, &objs, 1, false);
    assert_eq!(
        fleet.origin_gets(),
        0,
        "the second pass costs no origin GET"
    );
}

/// The `x-corvid-peer` value a peer `sender` would send at `secs` for `METHOD target`, its
/// HMAC-SHA256 made with `secret` by the `hmac` crate (independent of corvid's code).
fn marker(secret: &str, method: &str, target: &str, secs: u64, sender: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("corvid-peer-v1\n{method}\n{target}\n{secs}\n{sender}").as_bytes());
    let sig = hex::encode(mac.finalize().into_bytes());
    format!("{sender} {secs} {sig}")
}

/// A 403 with corvid's JSON error body.
fn assert_refused(r: &RawResponse, what: &str) {
    assert_eq!(r.status, 403, "{what}: {}", r.text());
    let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    assert!(
        v["error"].is_string(),
        "{what}: JSON error body: {}",
        r.text()
    );
}

#[test]
fn forged_or_stale_peer_markers_are_refused_and_a_signed_one_is_trusted() {
    let fleet = Fleet::start(FleetOptions::cluster(3));
    fleet.origin.put(PRIVATE, "doc.txt", b"private document");
    fleet.origin.put(PRIVATE, "other.txt", b"another document");
    fleet.put("pub.txt", b"public");
    fleet.origin.reset_counts();
    let addr = fleet.addr(0);
    let sender = fleet.peer(1);
    let target = format!("/{PRIVATE}/doc.txt");
    let t = now();
    let wrong = "wrong-secret-0123456789abcdef0123";
    let forged: Vec<(&str, String, String)> = vec![
        (
            "wrong secret",
            target.clone(),
            marker(wrong, "GET", &target, t, &sender),
        ),
        (
            "stale time",
            target.clone(),
            marker(SECRET, "GET", &target, t - 600, &sender),
        ),
        (
            "signed for another path",
            target.clone(),
            marker(SECRET, "GET", &format!("/{PRIVATE}/other.txt"), t, &sender),
        ),
        (
            "signed for HEAD",
            target.clone(),
            marker(SECRET, "HEAD", &target, t, &sender),
        ),
        ("malformed", target.clone(), "garbage".to_owned()),
        (
            "wrong secret, public bucket",
            path("pub.txt"),
            marker(wrong, "GET", &path("pub.txt"), t, &sender),
        ),
    ];
    for (what, target, value) in &forged {
        assert_refused(&http::get(addr, target, &[("x-corvid-peer", value)]), what);
    }
    assert_eq!(fleet.origin.total_count(), 0, "the origin was not asked");
    settles("peer auth failures", forged.len() as u64, || {
        fleet.metric(0, "corvid_auth_failures_total", &[("reason", "peer")])
    });
    assert_eq!(fleet.metric(0, SERVED, &[]), 0);

    // Signed with the right secret now: served as the owner would, without a JWT.
    let r = http::get(
        addr,
        &target,
        &[(
            "x-corvid-peer",
            &marker(SECRET, "GET", &target, now(), &sender),
        )],
    );
    assert_object(&r, b"private document", "a signed peer request");
    assert_eq!(fleet.origin_gets(), 1);
    settles("served for peers", 1, || fleet.metric(0, SERVED, &[]));
    // Without the marker a client still needs a token.
    assert_eq!(http::get(addr, &target, &[]).status, 401);
    // One hop: a signed request is answered where it arrives, owner or not, never forwarded.
    let hop = path("hop.txt");
    fleet.put("hop.txt", b"one hop");
    for i in 0..3 {
        let sender = fleet.peer((i + 1) % 3);
        let value = marker(SECRET, "GET", &hop, now(), &sender);
        let r = http::get(fleet.addr(i), &hop, &[("x-corvid-peer", &value)]);
        assert_object(&r, b"one hop", &format!("a signed request to {i}"));
    }
    settles("served for peers", 4, || fleet.metric_all(SERVED, &[]));
    assert_eq!(
        fleet.metric_all(PEER_REQUESTS, &[]),
        0,
        "a peer's request is not forwarded again"
    );

    // An instance without [cluster] trusts no marker, even a well-signed one.
    let alone = Fleet::start(FleetOptions::alone(1));
    alone.origin.put(PRIVATE, "doc.txt", b"private document");
    alone.origin.reset_counts();
    let a = alone.addr(0);
    let r = http::get(
        a,
        &target,
        &[(
            "x-corvid-peer",
            &marker(SECRET, "GET", &target, now(), &sender),
        )],
    );
    assert_refused(&r, "no [cluster]");
    assert_eq!(alone.origin.total_count(), 0);
    settles("peer auth failures without [cluster]", 1, || {
        alone.metric(0, "corvid_auth_failures_total", &[("reason", "peer")])
    });
    // ... and has no cluster to show.
    let r = alone.cluster_raw(0);
    assert_eq!(r.status, 404, "{}", r.text());
    let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    assert!(v["error"].is_string(), "{}", r.text());
}

#[test]
fn a_private_bucket_checks_the_token_where_the_client_arrived() {
    let fleet = Fleet::start(FleetOptions::cluster(3));
    let body = pattern_bytes(4000, 11);
    fleet.origin.put(PRIVATE, "p.bin", &body);
    fleet.origin.reset_counts();
    let target = format!("/{PRIVATE}/p.bin");
    let other =
        crate::jwt_support::key("HS256", 1).token(None, &serde_json::json!({"exp": now() + 600}));
    for i in 0..3 {
        let r = http::get(fleet.addr(i), &target, &[]);
        assert_eq!(r.status, 401, "no token through {i}");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        let r = http::get(
            fleet.addr(i),
            &target,
            &[("authorization", &format!("Bearer {other}"))],
        );
        assert_eq!(r.status, 401, "a token of another key through {i}");
    }
    assert_eq!(fleet.origin.total_count(), 0);
    assert_eq!(fleet.metric_all(PEER_REQUESTS, &[]), 0, "nothing forwarded");

    let auth = format!("Bearer {}", fleet.token());
    for i in 0..3 {
        let r = http::get(fleet.addr(i), &target, &[("authorization", &auth)]);
        assert_object(&r, &body, &format!("with a token through {i}"));
    }
    assert_eq!(fleet.origin_gets(), 1);
    // The two members that do not own it went through the owner.
    settles("served for peers", 2, || fleet.metric_all(SERVED, &[]));
    settles("peer requests 2xx", 2, || {
        fleet.metric_all(PEER_REQUESTS, &[("outcome", "2xx")])
    });
}

/// Whether `text` names `key` as a whole key (not a longer one: `cluster.peer` is not
/// named by `cluster.peers`).
fn names(text: &str, key: &str) -> bool {
    text.match_indices(key).any(|(at, _)| {
        !text[at + key.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

#[test]
fn check_names_the_cluster_key_at_fault() {
    let config = |cluster: &str| {
        format!(
            "{}{}\n[cluster]\n{cluster}\n",
            server_toml(8080),
            bucket_toml_for("b", "/b", "http://127.0.0.1:9", "b", ""),
        )
    };
    let peer = "peer = \"127.0.0.1:8080\"\n";
    let peers = "peers = [\"127.0.0.1:8080\", \"127.0.0.1:8081\"]\n";
    let secret = format!("secret = {}\n", toml_str(SECRET));
    let good = check(&config(&format!("{peer}{peers}{secret}")));
    assert!(good.status.success(), "{}{}", good.stdout, good.stderr);
    let dns = check(&config(&format!(
        "{peer}peers_dns = \"localhost:8080\"\n{secret}peers_refresh = \"2s\"\npeer_timeout = \"5s\"\n"
    )));
    assert!(dns.status.success(), "{}{}", dns.stdout, dns.stderr);

    let cases = [
        (
            "short secret",
            format!("{peer}{peers}secret = \"short\"\n"),
            "cluster.secret",
        ),
        ("no secret", format!("{peer}{peers}"), "cluster.secret"),
        (
            "peers and peers_dns",
            format!("{peer}{peers}peers_dns = \"localhost:8080\"\n{secret}"),
            "cluster.peers",
        ),
        (
            "neither peers nor peers_dns",
            format!("{peer}{secret}"),
            "cluster.peers",
        ),
        ("no peer", format!("{peers}{secret}"), "cluster.peer"),
        (
            "peer without a port",
            format!("peer = \"127.0.0.1\"\n{peers}{secret}"),
            "cluster.peer",
        ),
        (
            "a member without a port",
            format!("{peer}peers = [\"127.0.0.1:8080\", \"not-an-address\"]\n{secret}"),
            "cluster.peers",
        ),
    ];
    for (what, cluster, key) in &cases {
        let out = check(&config(cluster));
        let text = format!("{}{}", out.stdout, out.stderr);
        assert!(!out.status.success(), "{what}: accepted\n{text}");
        assert!(names(&text, key), "{what}: does not name {key}:\n{text}");
        assert!(
            !text.contains(SECRET),
            "{what}: the secret is printed:\n{text}"
        );
    }
}

#[test]
fn peer_traffic_shows_in_metrics_access_log_and_admin_cluster() {
    let fleet = Fleet::start(FleetOptions {
        access_log: true,
        ..FleetOptions::cluster(3)
    });
    let body = pattern_bytes(3000, 5);
    fleet.put("obs.bin", &body);
    fleet.origin.reset_counts();
    let x_cache: Vec<String> = (0..3)
        .map(|i| {
            let r = http::get(
                fleet.addr(i),
                &path("obs.bin"),
                &[("user-agent", CLIENT_UA)],
            );
            assert_object(&r, &body, &format!("through {i}"));
            r.header("x-cache").unwrap_or_default().to_owned()
        })
        .collect();
    assert_eq!(fleet.origin_gets(), 1);
    settles("served for peers", 2, || fleet.metric_all(SERVED, &[]));
    let owner = (0..3)
        .find(|&i| fleet.metric(i, SERVED, &[]) == 2)
        .expect("one member served both peer requests");
    for i in (0..3).filter(|&i| i != owner) {
        let text = fleet.metrics(i);
        assert_eq!(
            metric_sum(&text, PEER_REQUESTS, &[("outcome", "2xx")]),
            1,
            "member {i} asked the owner {owner} once:\n{text}"
        );
        assert_eq!(metric_sum(&text, PEER_REQUESTS, &[]), 1, "{text}");
        assert_eq!(metric_sum(&text, SERVED, &[]), 0, "{text}");
        assert_eq!(metric_sum(&text, FALLBACKS, &[]), 0, "{text}");
        assert_eq!(x_cache[i], "MISS", "the asking member's own X-Cache");
        // An asking member's only line: its client's request (it served no peer).
        let lines = fleet.access_lines(i, 1);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0]["ua"], CLIENT_UA, "{}", lines[0]);
        assert_eq!(lines[0]["peer"], fleet.peer(owner), "{}", lines[0]);
        assert_eq!(lines[0]["status"], 200, "{}", lines[0]);
    }
    assert_eq!(fleet.metric(owner, PEER_REQUESTS, &[]), 0);
    let owner_line = &fleet.client_lines(owner, 1)[0];
    assert!(
        owner_line["peer"].as_str().is_none(),
        "the owner answered itself: {owner_line}"
    );

    for i in 0..3 {
        let text = fleet.metrics(i);
        assert_eq!(
            metric_sum(&text, "corvid_peers", &[("state", "up")]),
            3,
            "{text}"
        );
        assert_eq!(
            metric_sum(&text, "corvid_peers", &[("state", "down")]),
            0,
            "{text}"
        );
        let v = fleet.cluster(i);
        assert_eq!(v["peer"], fleet.peer(i), "{v}");
        let members = v["members"].as_array().expect("members");
        let addrs: Vec<&str> = members.iter().filter_map(|m| m["addr"].as_str()).collect();
        let mut sorted = addrs.clone();
        sorted.sort_unstable();
        assert_eq!(addrs, sorted, "members sorted by addr: {v}");
        let want: BTreeSet<String> = (0..3).map(|j| fleet.peer(j)).collect();
        assert_eq!(
            addrs
                .iter()
                .map(|a| (*a).to_owned())
                .collect::<BTreeSet<_>>(),
            want,
            "{v}"
        );
        for m in members {
            assert_eq!(m["up"], true, "{v}");
            assert_eq!(m["self"], m["addr"] == fleet.peer(i).as_str(), "{v}");
        }
    }
    // The admin claim is required, as for stats.
    let r = http::get(fleet.addr(0), "/admin/cluster", &[]);
    assert_eq!(r.status, 401, "{}", r.text());
}

/// `POST` of an admin purge `path` through member `i`, with an admin token.
fn purge(fleet: &Fleet, i: usize, path: &str) -> (u16, Value) {
    let auth = format!("Bearer {}", fleet.admin_token());
    let r = Conn::connect(fleet.addr(i)).request("POST", path, &[("authorization", &auth)]);
    let json = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    (r.status, json)
}

#[test]
fn a_purge_through_any_member_reaches_the_member_that_holds_the_object() {
    let mut fleet = Fleet::start(FleetOptions::cluster(3));
    let objs = objects(&fleet, "p", 12);
    fetch_everywhere(&fleet, &objs, 1, true);
    assert_eq!(fleet.origin_gets(), 12);

    // Each object purged through a member chosen regardless of its owner: the member that
    // held it (its owner, the only one) purged it, and the next GET anywhere refetches it.
    for (k, (key, body)) in objs.iter().enumerate().take(6) {
        let (status, j) = purge(&fleet, k % 3, &format!("/admin/cache/purge/{BUCKET}/{key}"));
        assert_eq!(status, 200, "{key}: {j}");
        let held_here = u64::from(j["purged"].as_u64().unwrap() > 0);
        let held_elsewhere = j["peers"]["purged"].as_array().unwrap().len() as u64;
        assert_eq!(held_here + held_elsewhere, 1, "one member held {key}: {j}");
        assert_eq!(j["peers"]["failed"].as_array().unwrap().len(), 0, "{j}");
        let before = fleet.origin_gets();
        let r = http::get(fleet.addr((k + 1) % 3), &path(key), &[]);
        assert_object(&r, body, key);
        assert_eq!(
            fleet.origin_gets(),
            before + 1,
            "{key} fetched again after its purge"
        );
    }
    // An object no member holds: 404, every member asked.
    let (status, j) = purge(&fleet, 0, &format!("/admin/cache/purge/{BUCKET}/p/none"));
    assert_eq!(status, 404, "{j}");

    // A prefix purge through one member empties every member of it.
    let (status, j) = purge(&fleet, 1, &format!("/admin/cache/purge/{BUCKET}?prefix=p/"));
    assert_eq!(status, 200, "{j}");
    assert_eq!(j["peers"]["failed"].as_array().unwrap().len(), 0, "{j}");
    let before = fleet.origin_gets();
    fetch_everywhere(&fleet, &objs, 1, false);
    assert_eq!(
        fleet.origin_gets(),
        before + 12,
        "every object fetched again once"
    );

    // A member that cannot be reached is named in the answer; the others still purge.
    fleet.kill(2);
    let (status, j) = purge(&fleet, 0, "/admin/cache/purge");
    assert_eq!(status, 200, "{j}");
    assert_eq!(
        j["peers"]["failed"],
        serde_json::json!([fleet.peer(2)]),
        "{j}"
    );
    assert_eq!(
        j["peers"]["purged"],
        serde_json::json!([fleet.peer(1)]),
        "{j}"
    );
}

#[test]
fn a_forged_peer_header_on_an_admin_route_is_refused() {
    let fleet = Fleet::start(FleetOptions::cluster(2));
    let objs = objects(&fleet, "f", 2);
    fetch_everywhere(&fleet, &objs, 1, true);
    let secs = now().to_string();
    let forged = format!("{} {secs} {}", fleet.peer(1), "ab".repeat(32));
    let r = Conn::connect(fleet.addr(0)).request(
        "POST",
        "/admin/cache/purge",
        &[("x-corvid-peer", &forged)],
    );
    assert_eq!(r.status, 403, "{}", r.text());
    // Nothing was purged: a second round costs no origin GET.
    let before = fleet.origin_gets();
    fetch_everywhere(&fleet, &objs, 1, false);
    assert_eq!(fleet.origin_gets(), before);
}

/// `state` of warm job `job` on member `i`, polled until it is no longer running.
fn warm_done(fleet: &Fleet, i: usize, job: &str) -> Value {
    let auth = format!("Bearer {}", fleet.admin_token());
    let mut last = Value::Null;
    wait_until(Duration::from_secs(30), || {
        let r = http::get(
            fleet.addr(i),
            &format!("/admin/cache/warm/{job}"),
            &[("authorization", &auth)],
        );
        last = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        last["state"] != "running"
    });
    last
}

#[test]
fn a_prefix_warmed_through_one_member_is_held_by_each_object_s_owner() {
    let fleet = Fleet::start(FleetOptions::cluster(3));
    let objs = objects(&fleet, "w", 24);
    fleet.origin.reset_counts();
    let auth = format!("Bearer {}", fleet.admin_token());
    let r = Conn::connect(fleet.addr(0)).request(
        "POST",
        &format!("/admin/cache/warm/{BUCKET}?prefix=w/"),
        &[("authorization", &auth)],
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let started: Value = serde_json::from_slice(&r.body).unwrap();
    let job = started["job"].as_str().expect("a job id").to_owned();
    let p = warm_done(&fleet, 0, &job);
    assert_eq!(p["state"], "done", "{p}");
    // One origin GET per object for the warming (plus the listing).
    let per = origin_gets_per_key(&fleet);
    for (key, _) in &objs {
        assert_eq!(per.get(key), Some(&1), "{key}: {per:?}");
    }
    // Every object through every member: each held by its owner, no origin GET.
    let before = fleet.origin_gets();
    fetch_everywhere(&fleet, &objs, 1, false);
    assert_eq!(
        fleet.origin_gets(),
        before,
        "warmed objects are found at their owners"
    );
}

/// `cluster.local_ttl`: a member keeps a copy of what an owner relayed, for at most that long
/// — its next requests are memory hits with no hop —, then asks the owner again (a
/// revalidation), and a purge through any member removes the copies with the object.
#[test]
fn local_copies_serve_hits_for_local_ttl_then_ask_the_owner_and_purge_with_the_object() {
    const LOCAL_TTL: Duration = Duration::from_secs(3);
    let fleet = Fleet::start(FleetOptions {
        cluster_extra: "local_ttl = \"3s\"\n".to_owned(),
        ..FleetOptions::cluster(3)
    });
    let body = pattern_bytes(2000, 9);
    fleet.put("local.bin", &body);
    fleet.origin.reset_counts();
    let copied_after = Instant::now();
    for i in 0..3 {
        assert_object(
            &http::get(fleet.addr(i), &path("local.bin"), &[]),
            &body,
            &format!("first GET through {i}"),
        );
    }
    assert_eq!(fleet.origin_gets(), 1);
    settles("served for peers", 2, || fleet.metric_all(SERVED, &[]));
    let owner = (0..3)
        .find(|&i| fleet.metric(i, SERVED, &[]) == 2)
        .expect("one member served both peer requests");
    let others: Vec<usize> = (0..3).filter(|&i| i != owner).collect();

    // Within local_ttl: memory hits where the client arrived, no hop.
    for &i in &others {
        let r = http::get(fleet.addr(i), &path("local.bin"), &[]);
        assert_object(&r, &body, &format!("second GET through {i}"));
        assert_eq!(r.header("x-cache"), Some("HIT"), "member {i}");
        assert_eq!(r.header("x-cache-layer"), Some("memory"), "member {i}");
    }
    assert_eq!(
        fleet.metric(owner, SERVED, &[]),
        2,
        "no hop for a local copy"
    );
    assert!(
        copied_after.elapsed() < LOCAL_TTL,
        "the hits above must come within local_ttl; the machine was too slow to tell"
    );

    // After local_ttl (not the object's own hour of freshness): the owner is asked again.
    let asker = others[0];
    let deadline = Instant::now() + LOCAL_TTL + Duration::from_secs(10);
    let asked_after = loop {
        let r = http::get(fleet.addr(asker), &path("local.bin"), &[]);
        assert_object(&r, &body, "polling GET");
        if fleet.metric(owner, SERVED, &[]) > 2 {
            break copied_after.elapsed();
        }
        assert!(Instant::now() < deadline, "the local copy never expired");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        asked_after >= LOCAL_TTL,
        "the owner was asked again {asked_after:?} after the copy, before local_ttl"
    );
    assert_eq!(fleet.origin_gets(), 1, "the owner's copy is still fresh");

    // A purge through any member: owner and both copies held it.
    let (status, j) = purge(
        &fleet,
        asker,
        &format!("/admin/cache/purge/{BUCKET}/local.bin"),
    );
    assert_eq!(status, 200, "{j}");
    let held_here = u64::from(j["purged"].as_u64().unwrap() > 0);
    let held_elsewhere = j["peers"]["purged"].as_array().unwrap().len() as u64;
    assert_eq!(held_here + held_elsewhere, 3, "owner and two copies: {j}");
    let r = http::get(fleet.addr(others[1]), &path("local.bin"), &[]);
    assert_object(&r, &body, "after the purge");
    assert_ne!(r.header("x-cache"), Some("HIT"), "the copy was purged");
    assert_eq!(fleet.origin_gets(), 2, "the owner fetched it again");
}

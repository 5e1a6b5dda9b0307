//! Hit ratios of the memory cache against a plain LRU of equal byte capacity.
//!
//! Traces of 1,000,000 requests over a catalog of 100,000 keys; each key has a fixed size
//! drawn log-normally (median 16 KiB, σ = 1.5) and clamped to 1 KiB–1 MiB, and popularity
//! rank is independent of size. Besides pure Zipf(α) (α = 0.8 and 1.0), five traces add
//! what real object/CDN traces have and a Zipf trace lacks, each over Zipf(1.0):
//! - **one-hit**: 25% of requests go to fresh keys that are never requested again;
//! - **scan**: in the last 40% of every 100,000 requests, every other request is the next
//!   key of a sequential pass over the catalog (a backup or crawler; 20% of all requests,
//!   the whole catalog read twice over the trace);
//! - **shift**: the popularity ranking is redrawn halfway (the hot set changes at once);
//! - **churn**: every 100th request, a rank drawn from the same Zipf law passes to a brand
//!   new key (new content displaces old at every popularity level, so a key gets about 100
//!   requests in its life and recency matters more than long-term frequency);
//! - **burst**: about 18% of requests read fresh keys in bursts of 2–4 reads, the gaps
//!   log-uniform between 10 and 100,000 requests (an object fetched by a few consumers
//!   soon after it is written): the pattern a larger small queue catches.
//!
//! Every request is a `get`, and a miss is followed by an `insert`, as the proxy does.
//! Capacities are a fraction of the total bytes of the catalog. Compared: a plain LRU and
//! SIEVE of equal byte capacity, `MemoryCache` with 64 shards (and with 1), and a simulation
//! of the alternative sharding (S3-FIFO queues per shard with a global eviction hand). All
//! charge `size + key length` and refuse objects above capacity / 8. The Zipf table also
//! gives a ceiling for any policy that ignores object size: the trace's most requested keys
//! that fit, cached from the start ("LFU oracle"). Every trace is run with three seeds; the
//! summary gives the mean and the minimum of the gap to LRU.
//!
//! Run with `cargo bench --bench memory_hit_ratio` (≈30 s). `cargo bench --bench
//! memory_hit_ratio -- variants` (≈50 s) instead compares S3-FIFO variants (small-queue
//! share, ghost sizing, ghost, promotion and frequency rules, an adaptive small queue) on
//! the same traces with a simulation of the policy, first checked to give exactly
//! `MemoryCache`'s hits for the shipped parameters.
#![allow(clippy::print_stdout, reason = "the report is the bench's output")]

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::Instant;

use corvid::cache::memory::{MemoryCache, Weighted};

/// Keys in the catalog; traces with fresh keys add more.
const KEYS: usize = 100_000;
const REQUESTS: usize = 1_000_000;
const SEEDS: u64 = 3;
const CAPACITIES: [f64; 3] = [0.1, 1.0, 10.0];

#[derive(Clone)]
struct Obj(u32);
impl Weighted for Obj {
    fn weight(&self) -> usize {
        self.0 as usize
    }
}

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit(), self.unit());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
    fn size(&mut self) -> u32 {
        let s = (16384f64.ln() + 1.5 * self.normal()).exp();
        s.clamp(1024.0, 1048576.0) as u32
    }
    /// A random permutation of `0..n`.
    fn perm(&mut self, n: usize) -> Vec<u32> {
        let mut perm: Vec<u32> = (0..n as u32).collect();
        for i in (1..n).rev() {
            perm.swap(i, self.next() as usize % (i + 1));
        }
        perm
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Zipf(f64),
    OneHit,
    Scan,
    Shift,
    Churn,
    Burst,
}

const KINDS: [Kind; 7] = [
    Kind::Zipf(0.8),
    Kind::Zipf(1.0),
    Kind::OneHit,
    Kind::Scan,
    Kind::Shift,
    Kind::Churn,
    Kind::Burst,
];

impl Kind {
    fn name(self) -> String {
        match self {
            Kind::Zipf(a) => format!("zipf {a:.1}"),
            Kind::OneHit => "one-hit".into(),
            Kind::Scan => "scan".into(),
            Kind::Shift => "shift".into(),
            Kind::Churn => "churn".into(),
            Kind::Burst => "burst".into(),
        }
    }
}

struct Trace {
    keys: Vec<Vec<u8>>,
    sizes: Vec<u32>,
    requests: Vec<u32>,
    /// Bytes (size + key) of the catalog's keys; capacities are fractions of it.
    catalog_bytes: u64,
}

impl Trace {
    fn add_key(&mut self, rng: &mut Rng) -> u32 {
        let id = self.keys.len();
        self.keys
            .push(format!("bucket\0objects/{id:08}.bin").into_bytes());
        self.sizes.push(rng.size());
        id as u32
    }
}

fn trace(kind: Kind, seed: u64) -> Trace {
    let alpha = match kind {
        Kind::Zipf(a) => a,
        _ => 1.0,
    };
    let mut rng = Rng(0x5eed_0000 + (alpha * 10.0) as u64 + (seed << 32));
    let mut t = Trace {
        keys: Vec::new(),
        sizes: Vec::new(),
        requests: Vec::with_capacity(REQUESTS),
        catalog_bytes: 0,
    };
    for _ in 0..KEYS {
        t.add_key(&mut rng);
    }
    t.catalog_bytes = t
        .sizes
        .iter()
        .zip(&t.keys)
        .map(|(&s, k)| s as u64 + k.len() as u64)
        .sum();
    // Popularity rank r has weight 1/r^α; rank → key by a shuffle so size and popularity
    // are independent.
    let mut cdf = Vec::with_capacity(KEYS);
    let mut acc = 0.0;
    for r in 1..=KEYS {
        acc += 1.0 / (r as f64).powf(alpha);
        cdf.push(acc);
    }
    let rank = |rng: &mut Rng| {
        let x = rng.unit() * acc;
        cdf.partition_point(|&c| c < x).min(KEYS - 1)
    };
    let mut perm = rng.perm(KEYS);
    let mut scan_cursor = 0;
    // Burst reads still due: (request index, key).
    let mut due = BinaryHeap::new();
    for i in 0..REQUESTS {
        let key = match kind {
            Kind::Burst if due.peek().is_some_and(|&Reverse((at, _))| at <= i) => {
                let Reverse((_, key)) = due.pop().expect("peeked");
                key
            }
            Kind::Burst if rng.unit() < 0.07 => {
                // This read and 1–3 more, each 10–100,000 requests after the previous.
                let key = t.add_key(&mut rng);
                let mut at = i;
                for _ in 0..1 + rng.next() % 3 {
                    at += (10f64 * 10_000f64.powf(rng.unit())) as usize;
                    due.push(Reverse((at, key)));
                }
                key
            }
            Kind::OneHit if rng.unit() < 0.25 => t.add_key(&mut rng),
            Kind::Scan if i % 100_000 >= 60_000 && rng.next() & 1 == 0 => {
                scan_cursor = (scan_cursor + 1) % KEYS as u32;
                scan_cursor
            }
            _ => {
                if kind == Kind::Shift && i == REQUESTS / 2 {
                    perm = rng.perm(KEYS);
                }
                if kind == Kind::Churn && i % 100 == 99 {
                    let r = rank(&mut rng);
                    perm[r] = t.add_key(&mut rng);
                }
                perm[rank(&mut rng)]
            }
        };
        t.requests.push(key);
    }
    t
}

/// Byte-bounded LRU, or SIEVE (NSDI '24) when `sieve`: hash map into a slab-backed
/// doubly linked list. SIEVE marks hits instead of moving them; its hand walks from the
/// tail towards the head, clearing marks, and evicts the first unmarked entry.
struct Lru {
    map: HashMap<u32, usize>,
    nodes: Vec<(u32, u64, usize, usize)>, // key, charge, prev (towards head), next
    visited: Vec<bool>,
    free: Vec<usize>,
    head: usize, // most recent
    tail: usize,
    hand: usize,
    sieve: bool,
    bytes: u64,
    capacity: u64,
}
const NIL: usize = usize::MAX;
impl Lru {
    fn new(capacity: u64, sieve: bool) -> Self {
        Lru {
            map: HashMap::new(),
            nodes: Vec::new(),
            visited: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            hand: NIL,
            sieve,
            bytes: 0,
            capacity,
        }
    }
    fn unlink(&mut self, i: usize) {
        let (_, _, p, n) = self.nodes[i];
        if p == NIL {
            self.head = n
        } else {
            self.nodes[p].3 = n
        }
        if n == NIL {
            self.tail = p
        } else {
            self.nodes[n].2 = p
        }
    }
    fn push_front(&mut self, i: usize) {
        self.nodes[i].2 = NIL;
        self.nodes[i].3 = self.head;
        if self.head != NIL {
            self.nodes[self.head].2 = i;
        }
        self.head = i;
        if self.tail == NIL {
            self.tail = i;
        }
    }
    fn get(&mut self, k: u32) -> bool {
        match self.map.get(&k) {
            Some(&i) => {
                if self.sieve {
                    self.visited[i] = true;
                } else {
                    self.unlink(i);
                    self.push_front(i);
                }
                true
            }
            None => false,
        }
    }
    fn insert(&mut self, k: u32, charge: u64) {
        if charge > self.capacity / 8 {
            return;
        }
        let node = (k, charge, NIL, NIL);
        let i = match self.free.pop() {
            Some(i) => {
                self.nodes[i] = node;
                i
            }
            None => {
                self.nodes.push(node);
                self.visited.push(false);
                self.nodes.len() - 1
            }
        };
        self.visited[i] = false;
        self.map.insert(k, i);
        self.push_front(i);
        self.bytes += charge;
        while self.bytes > self.capacity {
            let mut t = self.tail;
            if self.sieve {
                t = if self.hand == NIL {
                    self.tail
                } else {
                    self.hand
                };
                while self.visited[t] {
                    self.visited[t] = false;
                    t = self.nodes[t].2;
                    if t == NIL {
                        t = self.tail;
                    }
                }
                self.hand = self.nodes[t].2;
            }
            self.unlink(t);
            self.map.remove(&self.nodes[t].0);
            self.bytes -= self.nodes[t].1;
            self.free.push(t);
        }
    }
}

#[derive(Default)]
struct Score {
    requests: u64,
    hits: u64,
    hit_bytes: u64,
    bytes: u64,
}
impl Score {
    fn record(&mut self, hit: bool, size: u32) {
        self.requests += 1;
        self.bytes += size as u64;
        if hit {
            self.hits += 1;
            self.hit_bytes += size as u64;
        }
    }
    /// Request hit ratio in percent.
    fn ratio(&self) -> f64 {
        100.0 * self.hits as f64 / self.requests as f64
    }
    fn show(&self) -> String {
        format!(
            "{:5.1}% ({:4.1}%)",
            self.ratio(),
            100.0 * self.hit_bytes as f64 / self.bytes as f64
        )
    }
}

fn run_list(t: &Trace, capacity: u64, sieve: bool) -> Score {
    replay(t, &mut Lru::new(capacity, sieve))
}

fn run_ours(t: &Trace, capacity: u64, shards: usize) -> Score {
    let mut ours = Ours {
        cache: MemoryCache::with_shards(capacity, shards),
        t,
    };
    replay(t, &mut ours)
}

/// A cache under test, by dense key id.
trait Policy {
    fn get(&mut self, k: u32) -> bool;
    /// Inserts key `k` charged `charge` bytes (size + key length).
    fn insert(&mut self, k: u32, charge: u64);
}

/// Replays `t`: every request is a `get`, and a miss is followed by an `insert`, as the proxy
/// does.
fn replay(t: &Trace, c: &mut impl Policy) -> Score {
    let mut s = Score::default();
    for &k in &t.requests {
        let size = t.sizes[k as usize];
        let hit = c.get(k);
        if !hit {
            c.insert(k, size as u64 + t.keys[k as usize].len() as u64);
        }
        s.record(hit, size);
    }
    s
}

/// `MemoryCache` by key id; it charges the key length itself.
struct Ours<'t> {
    cache: MemoryCache<Obj>,
    t: &'t Trace,
}

impl Policy for Ours<'_> {
    fn get(&mut self, k: u32) -> bool {
        self.cache.get(&self.t.keys[k as usize]).is_some()
    }
    fn insert(&mut self, k: u32, _charge: u64) {
        let size = self.t.sizes[k as usize];
        self.cache.insert(&self.t.keys[k as usize], Obj(size));
    }
}

macro_rules! policy_by_inherent_methods {
    ($($t:ty),*) => {$(
        impl Policy for $t {
            fn get(&mut self, k: u32) -> bool {
                <$t>::get(self, k)
            }
            fn insert(&mut self, k: u32, charge: u64) {
                <$t>::insert(self, k, charge)
            }
        }
    )*};
}
policy_by_inherent_methods!(Lru, ShardedHand, Sim);

/// The alternative design: S3-FIFO queues per shard (64), one global byte counter, and an
/// eviction hand that takes one victim from each shard in turn. Simulated here (not in the
/// crate) to measure what it would cost in hit ratio against `MemoryCache`'s global queues.
struct ShardedHand {
    shards: Vec<HandShard>,
    /// Per key: 0 absent, 1 in small, 2 in main; and its 2-bit frequency.
    place: Vec<u8>,
    freq: Vec<u8>,
    charge: Vec<u64>,
    bytes: u64,
    capacity: u64,
    hand: usize,
}

#[derive(Default)]
struct HandShard {
    small: std::collections::VecDeque<u32>,
    main: std::collections::VecDeque<u32>,
    small_bytes: u64,
    main_bytes: u64,
    ghost: std::collections::VecDeque<u32>,
    ghost_set: HashMap<u32, u32>,
}

impl ShardedHand {
    fn new(capacity: u64, keys: usize) -> Self {
        ShardedHand {
            shards: (0..64).map(|_| HandShard::default()).collect(),
            place: vec![0; keys],
            freq: vec![0; keys],
            charge: vec![0; keys],
            bytes: 0,
            capacity,
            hand: 0,
        }
    }
    fn shard(k: u32) -> usize {
        (k.wrapping_mul(0x9E37_79B9) >> 26) as usize
    }
    fn get(&mut self, k: u32) -> bool {
        let hit = self.place[k as usize] != 0;
        if hit {
            self.freq[k as usize] = (self.freq[k as usize] + 1).min(3);
        }
        hit
    }
    fn insert(&mut self, k: u32, charge: u64) {
        if charge > self.capacity / 8 {
            return;
        }
        let sh = &mut self.shards[Self::shard(k)];
        let (ki, c) = (k as usize, charge);
        self.charge[ki] = c;
        self.freq[ki] = 0;
        if sh.ghost_set.contains_key(&k) {
            sh.main.push_back(k);
            sh.main_bytes += c;
            self.place[ki] = 2;
        } else {
            sh.small.push_back(k);
            sh.small_bytes += c;
            self.place[ki] = 1;
        }
        self.bytes += c;
        while self.bytes > self.capacity {
            self.hand = (self.hand + 1) % self.shards.len();
            self.evict_one(self.hand);
        }
    }
    /// Runs this shard's S3-FIFO until it evicts one entry (or is empty).
    fn evict_one(&mut self, s: usize) {
        let sh = &mut self.shards[s];
        loop {
            let total = sh.small_bytes + sh.main_bytes;
            if total == 0 {
                return;
            }
            // The shipped shares: small 5% (of the shard), ghost 50% of main.
            if sh.small_bytes > total / 20 || sh.main.is_empty() {
                let k = sh.small.pop_front().unwrap();
                let ki = k as usize;
                sh.small_bytes -= self.charge[ki];
                if self.freq[ki] >= 1 {
                    self.freq[ki] = 0;
                    sh.main.push_back(k);
                    sh.main_bytes += self.charge[ki];
                    self.place[ki] = 2;
                    continue;
                }
                *sh.ghost_set.entry(k).or_insert(0) += 1;
                sh.ghost.push_back(k);
                while sh.ghost.len() > (sh.main.len() / 2).max(4) {
                    let g = sh.ghost.pop_front().unwrap();
                    let n = sh.ghost_set.get_mut(&g).unwrap();
                    *n -= 1;
                    if *n == 0 {
                        sh.ghost_set.remove(&g);
                    }
                }
                self.place[ki] = 0;
                self.bytes -= self.charge[ki];
                return;
            }
            let k = sh.main.pop_front().unwrap();
            let ki = k as usize;
            if self.freq[ki] > 0 {
                self.freq[ki] -= 1;
                sh.main.push_back(k);
                continue;
            }
            sh.main_bytes -= self.charge[ki];
            self.place[ki] = 0;
            self.bytes -= self.charge[ki];
            return;
        }
    }
}

fn run_hand(t: &Trace, capacity: u64) -> Score {
    replay(t, &mut ShardedHand::new(capacity, t.keys.len()))
}

/// How the ghost (hashes of keys evicted from the small queue) is bounded.
#[derive(Clone, Copy)]
enum GhostBound {
    /// At most this percentage of main's entry count.
    Entries(u64),
    /// At most this percentage of main's bytes, each ghost key counting its evicted size.
    Bytes(u64),
}

/// One S3-FIFO parameter set.
#[derive(Clone, Copy)]
struct Variant {
    name: &'static str,
    /// Small queue's share of the capacity, in percent.
    small: u64,
    ghost: GhostBound,
    /// A ghost hit removes the key from the ghost (as libCacheSim does) instead of letting
    /// it age out.
    forget_on_hit: bool,
    /// Reads in the small queue needed for promotion to main.
    promote: u8,
    /// Frequency saturates here (3: two bits).
    max_freq: u8,
    /// Adaptive small-queue share between (min %, max %), after ARC and libCacheSim's
    /// S3-FIFO-D: a miss on a key evicted from small within the last 5% of capacity (in
    /// bytes evicted from small) grows the small target by its charge, one on a key
    /// evicted from main within the last 5% shrinks it: each queue's marginal hits.
    adapt: Option<(u64, u64)>,
}

/// The parameters `MemoryCache` ships with; `variants` checks the simulation against it.
const SHIPPED: Variant = Variant {
    name: "small 5% (shipped)",
    small: 5,
    ghost: GhostBound::Entries(50),
    forget_on_hit: false,
    promote: 1,
    max_freq: 3,
    adapt: None,
};

/// S3-FIFO as `MemoryCache` runs it (one global pair of queues, 2-bit frequency, ghost of
/// keys), over dense key ids so that variants are cheap to try.
struct Sim {
    v: Variant,
    capacity: u64,
    small_target: u64,
    /// Per key: 0 absent, 1 in small, 2 in main; its frequency; its charge; and the
    /// sequence number of its ghost copy (0: not in the ghost).
    place: Vec<u8>,
    freq: Vec<u8>,
    charge: Vec<u64>,
    ghost_seq: Vec<u32>,
    small: VecDeque<u32>,
    main: VecDeque<u32>,
    small_bytes: u64,
    main_bytes: u64,
    /// Ghost copies with their sequence number; a copy is stale if its key's number moved.
    ghost: VecDeque<(u32, u32)>,
    ghost_live: usize,
    ghost_bytes: u64,
    seq: u32,
    /// Bytes evicted so far from small and from main, and each key's position in those
    /// streams when it was last evicted (u64::MAX: never).
    small_out: u64,
    main_out: u64,
    small_at: Vec<u64>,
    main_at: Vec<u64>,
}

impl Sim {
    fn new(v: Variant, capacity: u64, keys: usize) -> Self {
        Sim {
            v,
            capacity,
            small_target: capacity * v.small / 100,
            place: vec![0; keys],
            freq: vec![0; keys],
            charge: vec![0; keys],
            ghost_seq: vec![0; keys],
            small: VecDeque::new(),
            main: VecDeque::new(),
            small_bytes: 0,
            main_bytes: 0,
            ghost: VecDeque::new(),
            ghost_live: 0,
            ghost_bytes: 0,
            seq: 0,
            small_out: 0,
            main_out: 0,
            small_at: vec![u64::MAX; keys],
            main_at: vec![u64::MAX; keys],
        }
    }

    fn get(&mut self, k: u32) -> bool {
        let k = k as usize;
        let hit = self.place[k] != 0;
        if hit {
            self.freq[k] = (self.freq[k] + 1).min(self.v.max_freq);
        }
        hit
    }

    fn insert(&mut self, k: u32, charge: u64) {
        if charge > self.capacity / 8 {
            return;
        }
        let ki = k as usize;
        self.charge[ki] = charge;
        self.freq[ki] = 0;
        if let Some((min, max)) = self.v.adapt {
            let window = self.capacity / 20;
            let recent = |out: u64, at: u64| at != u64::MAX && out - at <= window;
            if recent(self.small_out, self.small_at[ki]) {
                self.small_target = (self.small_target + charge).min(self.capacity * max / 100);
            } else if recent(self.main_out, self.main_at[ki]) {
                let floor = self.capacity * min / 100;
                self.small_target = self.small_target.saturating_sub(charge).max(floor);
            }
        }
        if self.ghost_seq[ki] != 0 {
            if self.v.forget_on_hit {
                self.ghost_seq[ki] = 0;
                self.ghost_live -= 1;
                self.ghost_bytes -= charge;
            }
            self.main.push_back(k);
            self.main_bytes += charge;
            self.place[ki] = 2;
        } else {
            self.small.push_back(k);
            self.small_bytes += charge;
            self.place[ki] = 1;
        }
        while self.small_bytes + self.main_bytes > self.capacity {
            let from_small = self.small_bytes > self.small_target || self.main.is_empty();
            let queue = if from_small {
                &mut self.small
            } else {
                &mut self.main
            };
            let k = queue.pop_front().expect("bytes in the queue");
            let ki = k as usize;
            if from_small {
                self.small_bytes -= self.charge[ki];
            } else {
                self.main_bytes -= self.charge[ki];
            }
            let f = self.freq[ki];
            if from_small && f >= self.v.promote || !from_small && f > 0 {
                self.freq[ki] = if from_small { 0 } else { f - 1 };
                self.main.push_back(k);
                self.main_bytes += self.charge[ki];
                self.place[ki] = 2;
                continue;
            }
            self.place[ki] = 0;
            if from_small {
                self.small_out += self.charge[ki];
                self.small_at[ki] = self.small_out;
                self.ghost_insert(k);
            } else {
                self.main_out += self.charge[ki];
                self.main_at[ki] = self.main_out;
            }
        }
    }

    fn ghost_insert(&mut self, k: u32) {
        let ki = k as usize;
        debug_assert_eq!(self.ghost_seq[ki], 0, "a ghost key goes to main, not small");
        self.seq += 1;
        self.ghost_seq[ki] = self.seq;
        self.ghost.push_back((k, self.seq));
        self.ghost_live += 1;
        self.ghost_bytes += self.charge[ki];
        loop {
            let over = match self.v.ghost {
                GhostBound::Entries(pct) => {
                    self.ghost_live > (self.main.len() * pct as usize / 100).max(64)
                }
                GhostBound::Bytes(pct) => {
                    self.ghost_bytes > self.main_bytes * pct / 100 && self.ghost_live > 64
                }
            };
            if !over {
                break;
            }
            let (old, seq) = self.ghost.pop_front().expect("live ghost copies");
            if self.ghost_seq[old as usize] == seq {
                self.ghost_seq[old as usize] = 0;
                self.ghost_live -= 1;
                self.ghost_bytes -= self.charge[old as usize];
            }
        }
    }
}

fn run_sim(t: &Trace, capacity: u64, v: Variant) -> Score {
    replay(t, &mut Sim::new(v, capacity, t.keys.len()))
}

/// A ceiling for policies that ignore size, on a stationary trace: the trace's most
/// requested keys that fit, held from the start, each paying only its first (compulsory)
/// miss. Request hit ratio in percent.
fn oracle(t: &Trace, capacity: u64) -> f64 {
    let mut count = vec![0u64; t.keys.len()];
    for &k in &t.requests {
        count[k as usize] += 1;
    }
    let mut order: Vec<usize> = (0..t.keys.len()).collect();
    order.sort_by_key(|&k| Reverse(count[k]));
    let (mut used, mut hits) = (0, 0);
    for k in order.into_iter().take_while(|&k| count[k] > 1) {
        let charge = t.sizes[k] as u64 + t.keys[k].len() as u64;
        if charge <= capacity / 8 && used + charge <= capacity {
            used += charge;
            hits += count[k] - 1;
        }
    }
    100.0 * hits as f64 / t.requests.len() as f64
}

fn capacity(t: &Trace, pct: f64) -> u64 {
    (t.catalog_bytes as f64 * pct / 100.0) as u64
}

/// Mean and minimum of a list of gaps.
fn mean_min(xs: &[f64]) -> (f64, f64) {
    let mean = xs.iter().sum::<f64>() / xs.len() as f64;
    (mean, xs.iter().copied().fold(f64::INFINITY, f64::min))
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it,
    // and the replays take minutes unoptimised. The cache itself is unit-tested in memory.rs.
    if !std::env::args().any(|a| a == "--bench") {
        println!("memory_hit_ratio: run with `cargo bench --bench memory_hit_ratio`");
        return;
    }
    let start = Instant::now();
    if std::env::args().any(|a| a == "variants") {
        variants();
    } else {
        zipf_table();
        summary();
    }
    println!("({:.1} s)", start.elapsed().as_secs_f64());
}

/// Every policy on the first seed's Zipf traces, with byte hit ratios.
fn zipf_table() {
    println!(
        "request hit ratio (byte hit ratio); first seed, {REQUESTS} requests over {KEYS} keys"
    );
    println!(
        "{:>5} {:>14} | {:>15} | {:>15} | {:>18} | {:>18} | {:>18} | {:>7} | {:>10}",
        "alpha",
        "capacity (MiB)",
        "LRU",
        "SIEVE",
        "ours (64 shards)",
        "ours (1 shard)",
        "per-shard + hand",
        "Δ LRU",
        "LFU oracle"
    );
    for alpha in [0.8, 1.0] {
        let t = trace(Kind::Zipf(alpha), 0);
        // 0.1% is a few MiB: the "small cache" case.
        for pct in CAPACITIES {
            let cap = capacity(&t, pct);
            let lru = run_list(&t, cap, false);
            let sieve = run_list(&t, cap, true);
            let sharded = run_ours(&t, cap, 64);
            let single = run_ours(&t, cap, 1);
            let hand = run_hand(&t, cap);
            println!(
                "{alpha:>5} {:>5}% {:>7} | {:>15} | {:>15} | {:>18} | {:>18} | {:>18} | {:>+7.1} | {:>9.1}%",
                pct,
                format!("({})", cap >> 20),
                lru.show(),
                sieve.show(),
                sharded.show(),
                single.show(),
                hand.show(),
                sharded.ratio() - lru.ratio(),
                oracle(&t, cap)
            );
        }
    }
}

/// LRU, SIEVE and `MemoryCache` (64 shards) on every trace, averaged over the seeds.
fn summary() {
    println!();
    println!("request hit ratio, mean of {SEEDS} seeds; gaps in points: mean (min)");
    println!(
        "{:>8} {:>5} | {:>6} {:>6} {:>6} | {:>14} | {:>14}",
        "trace", "cap", "LRU", "SIEVE", "ours", "ours − LRU", "ours − SIEVE"
    );
    for kind in KINDS {
        let mut rows = vec![[Vec::new(), Vec::new(), Vec::new()]; CAPACITIES.len()];
        for seed in 0..SEEDS {
            let t = trace(kind, seed);
            for (row, pct) in rows.iter_mut().zip(CAPACITIES) {
                let cap = capacity(&t, pct);
                row[0].push(run_list(&t, cap, false).ratio());
                row[1].push(run_list(&t, cap, true).ratio());
                row[2].push(run_ours(&t, cap, 64).ratio());
            }
        }
        for (row, pct) in rows.iter().zip(CAPACITIES) {
            let [lru, sieve, ours] = row;
            let gap = |base: &Vec<f64>| {
                let d: Vec<f64> = ours.iter().zip(base).map(|(o, b)| o - b).collect();
                let (mean, min) = mean_min(&d);
                format!("{mean:+5.1} ({min:+5.1})")
            };
            println!(
                "{:>8} {:>4}% | {:>6.1} {:>6.1} {:>6.1} | {:>14} | {:>14}",
                kind.name(),
                pct,
                mean_min(lru).0,
                mean_min(sieve).0,
                mean_min(ours).0,
                gap(lru),
                gap(sieve)
            );
        }
    }
}

fn variants() {
    use GhostBound::{Bytes, Entries};
    let v = |name, small, ghost| Variant {
        name,
        small,
        ghost,
        ..SHIPPED
    };
    let variants = [
        SHIPPED,
        v("small 1%", 1, Entries(50)),
        v("small 2%", 2, Entries(50)),
        v("small 7%", 7, Entries(50)),
        v("small 10% (before)", 10, Entries(50)),
        v("small 15%", 15, Entries(50)),
        v("small 20%", 20, Entries(50)),
        v("ghost 25% entries", 5, Entries(25)),
        v("ghost 100% entries", 5, Entries(100)),
        v("ghost 50% bytes", 5, Bytes(50)),
        v("ghost 100% bytes", 5, Bytes(100)),
        Variant {
            name: "forget ghost key on hit",
            forget_on_hit: true,
            ..SHIPPED
        },
        Variant {
            name: "promote after 2 reads",
            promote: 2,
            ..SHIPPED
        },
        Variant {
            name: "1-bit frequency",
            max_freq: 1,
            ..SHIPPED
        },
        Variant {
            name: "3-bit frequency",
            max_freq: 7,
            ..SHIPPED
        },
        Variant {
            name: "adaptive small 2-30%",
            adapt: Some((2, 30)),
            ..SHIPPED
        },
    ];

    // The simulation must be the shipped policy, hit for hit.
    let t = trace(Kind::Zipf(1.0), 0);
    for pct in CAPACITIES {
        let cap = capacity(&t, pct);
        let (sim, ours) = (run_sim(&t, cap, SHIPPED), run_ours(&t, cap, 64));
        assert_eq!(
            (sim.hits, sim.hit_bytes),
            (ours.hits, ours.hit_bytes),
            "the simulation no longer matches MemoryCache at {pct}%: update SHIPPED"
        );
    }
    drop(t);

    // gaps[variant][kind][capacity] = per-seed gap to LRU.
    let mut gaps = vec![vec![vec![Vec::new(); CAPACITIES.len()]; KINDS.len()]; variants.len()];
    for (ki, &kind) in KINDS.iter().enumerate() {
        for seed in 0..SEEDS {
            let t = trace(kind, seed);
            for (ci, pct) in CAPACITIES.into_iter().enumerate() {
                let cap = capacity(&t, pct);
                let lru = run_list(&t, cap, false).ratio();
                for (vi, &v) in variants.iter().enumerate() {
                    gaps[vi][ki][ci].push(run_sim(&t, cap, v).ratio() - lru);
                }
            }
        }
    }
    println!(
        "S3-FIFO variants: points above LRU, mean of {SEEDS} seeds (worst seed on the second line; all: mean of the cells)"
    );
    print!("{:>30} |", "capacity:");
    for _ in KINDS {
        for pct in CAPACITIES {
            print!(" {:>5}", format!("{pct}%"));
        }
        print!(" |");
    }
    println!(" {:>5}", "all");
    print!("{:>30} |", "trace:");
    for kind in KINDS {
        print!(" {:>17} |", kind.name());
    }
    println!();
    for (v, g) in variants.iter().zip(&gaps) {
        let mut all = Vec::new();
        let mut line = [format!("{:>30} |", v.name), format!("{:>30} |", "")];
        for per_kind in g {
            for seeds in per_kind {
                let (mean, min) = mean_min(seeds);
                all.push(mean);
                line[0] += &format!(" {mean:+5.1}");
                line[1] += &format!(" {min:+5.1}");
            }
            line[0] += " |";
            line[1] += " |";
        }
        println!("{} {:+5.2}", line[0], mean_min(&all).0);
        println!("{}", line[1]);
    }
}

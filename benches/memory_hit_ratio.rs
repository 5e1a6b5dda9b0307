//! Hit ratios of the memory cache against a plain LRU of equal byte capacity.
//!
//! Zipf(α) traces of 1,000,000 requests over 100,000 keys; each key has a fixed size drawn
//! log-normally (median 16 KiB, σ = 1.5) and clamped to 1 KiB–1 MiB. Every request is a
//! `get`, and a miss is followed by an `insert`, as the proxy does. Capacities are a
//! fraction of the total bytes of all keys. Compared: a plain LRU and SIEVE of equal byte
//! capacity, `MemoryCache` with 64 shards and with 1, and a simulation of the alternative
//! sharding (S3-FIFO queues per shard with a global eviction hand). All charge
//! `size + key length` and refuse objects above capacity / 8.
//!
//! Run with `cargo bench --bench memory_hit_ratio`.

use std::collections::HashMap;
use std::time::Instant;

use corvid::cache::memory::{MemoryCache, Weighted};

const KEYS: usize = 100_000;
const REQUESTS: usize = 1_000_000;

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
}

struct Trace {
    keys: Vec<Vec<u8>>,
    sizes: Vec<u32>,
    requests: Vec<u32>,
    total_bytes: u64,
}

fn trace(alpha: f64, seed: u64) -> Trace {
    let mut rng = Rng(seed);
    let keys: Vec<Vec<u8>> = (0..KEYS)
        .map(|i| format!("bucket\0objects/{i:08}.bin").into_bytes())
        .collect();
    let sizes: Vec<u32> = (0..KEYS)
        .map(|_| {
            let s = (16384f64.ln() + 1.5 * rng.normal()).exp();
            s.clamp(1024.0, 1048576.0) as u32
        })
        .collect();
    let total_bytes = sizes
        .iter()
        .zip(&keys)
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
    let mut perm: Vec<u32> = (0..KEYS as u32).collect();
    for i in (1..KEYS).rev() {
        perm.swap(i, rng.next() as usize % (i + 1));
    }
    let requests = (0..REQUESTS)
        .map(|_| {
            let x = rng.unit() * acc;
            let r = cdf.partition_point(|&c| c < x).min(KEYS - 1);
            perm[r]
        })
        .collect();
    Trace {
        keys,
        sizes,
        requests,
        total_bytes,
    }
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
    hits: u64,
    hit_bytes: u64,
    bytes: u64,
}
impl Score {
    fn record(&mut self, hit: bool, size: u32) {
        self.bytes += size as u64;
        if hit {
            self.hits += 1;
            self.hit_bytes += size as u64;
        }
    }
    fn show(&self) -> String {
        format!(
            "{:5.1}% ({:4.1}%)",
            100.0 * self.hits as f64 / REQUESTS as f64,
            100.0 * self.hit_bytes as f64 / self.bytes as f64
        )
    }
}

fn run_list(t: &Trace, capacity: u64, sieve: bool) -> Score {
    let mut lru = Lru::new(capacity, sieve);
    let mut s = Score::default();
    for &k in &t.requests {
        let size = t.sizes[k as usize];
        let hit = lru.get(k);
        if !hit {
            lru.insert(k, size as u64 + t.keys[k as usize].len() as u64);
        }
        s.record(hit, size);
    }
    s
}

fn run_ours(t: &Trace, capacity: u64, shards: usize) -> Score {
    let cache = MemoryCache::with_shards(capacity, shards);
    let mut s = Score::default();
    for &k in &t.requests {
        let size = t.sizes[k as usize];
        let key = &t.keys[k as usize];
        let hit = cache.get(key).is_some();
        if !hit {
            cache.insert(key, Obj(size));
        }
        s.record(hit, size);
    }
    s
}

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
    fn new(capacity: u64) -> Self {
        ShardedHand {
            shards: (0..64).map(|_| HandShard::default()).collect(),
            place: vec![0; KEYS],
            freq: vec![0; KEYS],
            charge: vec![0; KEYS],
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
            if sh.small_bytes > total / 10 || sh.main.is_empty() {
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
    let mut c = ShardedHand::new(capacity);
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

fn main() {
    let start = Instant::now();
    println!("request hit ratio (byte hit ratio); {REQUESTS} requests over {KEYS} keys");
    println!(
        "{:>5} {:>14} | {:>15} | {:>15} | {:>18} | {:>18} | {:>18} | {:>7}",
        "alpha",
        "capacity (MiB)",
        "LRU",
        "SIEVE",
        "ours (64 shards)",
        "ours (1 shard)",
        "per-shard + hand",
        "Δ LRU"
    );
    for alpha in [0.8, 1.0] {
        let t = trace(alpha, 0x5eed_0000 + (alpha * 10.0) as u64);
        // 0.1% is a few tens of MiB: the "small cache" case.
        for pct in [0.1, 1.0, 10.0] {
            let cap = (t.total_bytes as f64 * pct / 100.0) as u64;
            let lru = run_list(&t, cap, false);
            let sieve = run_list(&t, cap, true);
            let sharded = run_ours(&t, cap, 64);
            let single = run_ours(&t, cap, 1);
            let hand = run_hand(&t, cap);
            println!(
                "{alpha:>5} {:>5}% {:>7} | {:>15} | {:>15} | {:>18} | {:>18} | {:>18} | {:>+6.1}",
                pct,
                format!("({})", cap >> 20),
                lru.show(),
                sieve.show(),
                sharded.show(),
                single.show(),
                hand.show(),
                100.0 * (sharded.hits as f64 - lru.hits as f64) / REQUESTS as f64
            );
        }
    }
    println!("({:.1} s)", start.elapsed().as_secs_f64());
}

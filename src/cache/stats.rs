//! Exact cache statistics: the snapshot the admin API renders as JSON
//! (`GET /admin/cache/stats`), from what each tier holds per bucket ([`crate::cache::usage`])
//! and the request counters of the metrics registry.
//!
//! # Where each number comes from
//!
//! - **entries, bytes, evictions per tier and bucket**: the [`crate::cache::usage`] counters
//!   the memory and disk tiers move as they insert, replace, remove and evict — never on a hit.
//! - **hits, misses, bytes_served, origin_bytes**: the per-worker request counters of
//!   the metrics registry (the same ones `/metrics` renders as `corvid_cache_hits_total`,
//!   `corvid_cache_misses_total`, `corvid_cache_hit_bytes_total` and
//!   `corvid_upstream_bytes_total`), summed over the workers when the snapshot is taken; the
//!   registry hands them in as [`RequestCounts`], so the two views always agree.
//! - **capacity**: the tier's configured byte budget.
//!
//! Definitions: a *hit* of a tier is a request answered from an entry of that tier (fresh, or
//! stale served under `stale-while-revalidate`); a *miss* is a cacheable request no tier held.
//! A stale entry that was revalidated with the origin counts as neither (its answer's body
//! still counts in `bytes_served`: the origin sent none). A tier's `misses` are the requests
//! that looked in it and went on: the hits of the tiers below it plus the misses. `hit_ratio`
//! is `hits / (hits + misses)`, `null` before any lookup. `bytes_served` counts body bytes
//! written to clients from cache entries (HIT, STALE and REVALIDATED answers), by the tier the
//! entry came from; `origin_bytes` the object body bytes received from the origin (fills,
//! pass-through, revalidations that got a new body; not error bodies).
//!
//! Redis is shared by every instance: its entry count and size are not knowable from one of
//! them (a `DBSIZE` would count other users' keys and every instance's writes). So Redis
//! `entries`, `bytes`, `evictions` and `capacity` are `null`; its `hits` and `bytes_served`
//! are this instance's.
//!
//! # JSON shape
//!
//! ```json
//! {
//!   "totals": {"entries": 12, "bytes": 40960, "hits": 30, "misses": 12, "evictions": 1,
//!              "hit_ratio": 0.714, "bytes_served": 102400, "origin_bytes": 49152,
//!              "slice_hits": 40, "slice_misses": 8, "list_hits": 9, "list_misses": 3},
//!   "layers": {
//!     "memory": {"entries": 10, "bytes": 30000, "capacity": 1073741824, "hits": 25,
//!                "misses": 17, "evictions": 1, "hit_ratio": 0.595, "bytes_served": 90000},
//!     "disk":   {...same fields...},
//!     "redis":  {"entries": null, "bytes": null, "capacity": null, "hits": 0, "misses": 12,
//!                "evictions": null, "hit_ratio": 0.0, "bytes_served": 0}
//!   },
//!   "buckets": {
//!     "assets": {"entries": 7, "bytes": 20000, "hits": 20, "misses": 5, "evictions": 1,
//!                "hit_ratio": 0.8, "bytes_served": 80000, "origin_bytes": 30000,
//!                "slice_hits": 40, "slice_misses": 8, "list_hits": 9, "list_misses": 3,
//!                "layers": {"memory": {...}, "disk": {...}, "redis": {...}}}
//!   }
//! }
//! ```
//!
//! `totals.entries`/`bytes` (and a bucket's) are the memory and disk tiers' summed: an object
//! held by both counts twice, as in the per-tier purge counts ([`crate::cache::purge`]).
//! A disabled tier reports zeros with `capacity: 0` (memory) or `null` (disk, Redis).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::cache::tiered::{Layer, Tiers};
use crate::cache::usage::Usage;

/// One bucket's request counters summed over the workers (by the metrics registry).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RequestCounts {
    /// Requests answered from each tier, by [`Layer::index`].
    pub hits: [u64; 3],
    pub misses: u64,
    /// Body bytes served from each tier's entries, by [`Layer::index`].
    pub bytes_served: [u64; 3],
    pub origin_bytes: u64,
    /// Slices of sliced objects sent from a cache tier / from a fill.
    pub slice_hits: u64,
    pub slice_misses: u64,
    /// Bucket listings answered from a cache tier / not found in any (`crate::bucket`).
    pub list_hits: u64,
    pub list_misses: u64,
}

/// The whole snapshot; see the module docs for the JSON shape.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Stats {
    pub totals: Totals,
    pub layers: Layers,
    pub buckets: BTreeMap<String, BucketStats>,
}

/// Counters summed over the tiers (instance-wide, or one bucket's).
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Totals {
    pub entries: u64,
    pub bytes: u64,
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub hit_ratio: Option<f64>,
    pub bytes_served: u64,
    pub origin_bytes: u64,
    /// Slices of large objects sent from a cache tier (`corvid_cache_slice_hits_total`) and
    /// from a fill (`corvid_cache_slice_misses_total`); their bytes count in `bytes_served` and
    /// `origin_bytes` like any other.
    pub slice_hits: u64,
    pub slice_misses: u64,
    /// Bucket listings answered from a cache tier (`corvid_cache_list_hits_total`) and not
    /// found in any (`corvid_cache_list_misses_total`). Counted apart from `hits` and
    /// `misses`, which are the objects' (a listing's bytes still count in `bytes_served` and
    /// `origin_bytes`).
    pub list_hits: u64,
    pub list_misses: u64,
}

/// The three tiers.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Layers {
    pub memory: LayerStats,
    pub disk: LayerStats,
    pub redis: LayerStats,
}

impl Layers {
    pub fn get(&self, layer: Layer) -> &LayerStats {
        match layer {
            Layer::Memory => &self.memory,
            Layer::Disk => &self.disk,
            Layer::Redis => &self.redis,
        }
    }
}

/// One tier (instance-wide, or one bucket's share). `None` (JSON `null`) where this instance
/// cannot know the number (Redis sizes, a bucket the tiers were not told about).
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct LayerStats {
    pub entries: Option<u64>,
    pub bytes: Option<u64>,
    pub capacity: Option<u64>,
    pub hits: u64,
    pub misses: u64,
    pub evictions: Option<u64>,
    pub hit_ratio: Option<f64>,
    pub bytes_served: u64,
}

/// One bucket: its totals flattened in, and its share of each tier.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct BucketStats {
    #[serde(flatten)]
    pub totals: Totals,
    pub layers: Layers,
}

fn ratio(hits: u64, misses: u64) -> Option<f64> {
    let n = hits + misses;
    (n > 0).then(|| hits as f64 / n as f64)
}

/// Which tiers a request looks in, in order.
fn enabled(tiers: &Tiers, redis: bool) -> [bool; 3] {
    [tiers.memory.capacity() > 0, tiers.disk.is_some(), redis]
}

/// A tier's `misses`: the requests that looked in it and went on (hits of the enabled tiers
/// below it, plus the requests that missed every tier).
fn layer_misses(on: [bool; 3], layer: Layer, c: &RequestCounts) -> u64 {
    if !on[layer.index()] {
        return 0;
    }
    let below: u64 = (layer.index() + 1..3)
        .filter(|&i| on[i])
        .map(|i| c.hits[i])
        .sum();
    below + c.misses
}

impl Stats {
    /// Builds the snapshot from the tiers' usage counters and the request counters of each
    /// bucket in `names` (`counts[i]` for `names[i]`). `redis`: whether a Redis tier is
    /// configured.
    pub fn build(tiers: &Tiers, redis: bool, names: &[String], counts: &[RequestCounts]) -> Stats {
        let on = enabled(tiers, redis);
        let mut all = RequestCounts::default();
        for c in counts {
            for i in 0..3 {
                all.hits[i] += c.hits[i];
                all.bytes_served[i] += c.bytes_served[i];
            }
            all.misses += c.misses;
            all.origin_bytes += c.origin_bytes;
            all.slice_hits += c.slice_hits;
            all.slice_misses += c.slice_misses;
            all.list_hits += c.list_hits;
            all.list_misses += c.list_misses;
        }
        let whole = |layer: Layer| -> Option<Usage> {
            match layer {
                Layer::Memory => Some(Usage {
                    entries: tiers.memory.len(),
                    bytes: tiers.memory.bytes(),
                    evictions: tiers.memory.evictions(),
                }),
                Layer::Disk => Some(
                    tiers
                        .disk
                        .as_ref()
                        .map(|d| Usage {
                            entries: d.len(),
                            bytes: d.bytes(),
                            evictions: d.evictions(),
                        })
                        .unwrap_or_default(),
                ),
                Layer::Redis => None,
            }
        };
        let capacity = |layer: Layer| match layer {
            Layer::Memory => Some(tiers.memory.capacity()),
            Layer::Disk => tiers.disk.as_ref().map(|d| d.capacity()),
            Layer::Redis => None,
        };
        let layers = |usage: &dyn Fn(Layer) -> Option<Usage>, c: &RequestCounts, cap: bool| {
            let one = |layer: Layer| {
                let u = usage(layer);
                let (hits, misses) = (c.hits[layer.index()], layer_misses(on, layer, c));
                LayerStats {
                    entries: u.map(|u| u.entries),
                    bytes: u.map(|u| u.bytes),
                    capacity: if cap { capacity(layer) } else { None },
                    hits,
                    misses,
                    evictions: u.map(|u| u.evictions),
                    hit_ratio: ratio(hits, misses),
                    bytes_served: c.bytes_served[layer.index()],
                }
            };
            Layers {
                memory: one(Layer::Memory),
                disk: one(Layer::Disk),
                redis: one(Layer::Redis),
            }
        };
        let totals = |l: &Layers, c: &RequestCounts| {
            let sum = |f: fn(&LayerStats) -> Option<u64>| {
                [l.memory, l.disk].iter().filter_map(f).sum::<u64>()
            };
            let hits = c.hits.iter().sum::<u64>();
            Totals {
                entries: sum(|s| s.entries),
                bytes: sum(|s| s.bytes),
                hits,
                misses: c.misses,
                evictions: sum(|s| s.evictions),
                hit_ratio: ratio(hits, c.misses),
                bytes_served: c.bytes_served.iter().sum(),
                origin_bytes: c.origin_bytes,
                slice_hits: c.slice_hits,
                slice_misses: c.slice_misses,
                list_hits: c.list_hits,
                list_misses: c.list_misses,
            }
        };

        let top = layers(&whole, &all, true);
        let mut buckets = BTreeMap::new();
        for (name, c) in names.iter().zip(counts) {
            let share = |layer: Layer| -> Option<Usage> {
                match layer {
                    Layer::Memory => tiers.memory.usage_of(name),
                    Layer::Disk => match &tiers.disk {
                        Some(d) => d.usage_of(name),
                        None => Some(Usage::default()),
                    },
                    Layer::Redis => None,
                }
            };
            let l = layers(&share, c, false);
            buckets.insert(
                name.clone(),
                BucketStats {
                    totals: totals(&l, c),
                    layers: l,
                },
            );
        }
        Stats {
            totals: totals(&top, &all),
            layers: top,
            buckets,
        }
    }
}

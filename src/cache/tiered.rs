//! The tiers together: lookup order, promotion, write policy. (Removal from every tier,
//! Redis included, is [`crate::cache::purge`].)
//!
//! Lookup goes memory → disk (→ Redis, per worker, in the cache front [`super::front`]); a hit in a
//! lower tier is promoted into the tiers above it. A fill is written to every enabled tier:
//! with `write-through` the disk write happens before the fill is announced complete; with
//! `write-behind` the memory tier is written at once and the disk write goes to a bounded
//! queue served by one background thread — when the queue is full the write is dropped and
//! counted, never blocking a request.
//!
//! Freshness on disk is the disk index's expiry (the entry's freshness deadline): a 304
//! revalidation that leaves the stored header fields as they were moves it, and the entry's age
//! origin in the index's stamp, with [`DiskCache::set_times`] — never rewriting the body; one
//! that changed header fields stores the entry again. Stale
//! entries stay on disk for revalidation until reclaimed.
//! A soft purge lowers the same expiry ([`DiskCache::mark_stale_if`]), so a disk hit — and the
//! copy it promotes into memory — reads as stale (see [`crate::cache::purge`]).
//!
//! Cold disk pages: touching an mmap page that is not resident would block the whole worker
//! on a disk read, so a disk hit whose value is not in the page cache (`mincore`) is read with
//! a positioned read through the worker's io_uring instead, verified against the record's
//! checksum, and only then served. The same check keeps a segment truncated from outside from
//! raising `SIGBUS`: pages past the file's end are never resident, so such a hit becomes a
//! positioned read that comes back short — an error, counted, and a miss (see the disk
//! module's "Faults" section for what remains).
//!
//! A disk tier that is not admitting (full volume, removed directory) refuses writes without
//! an error; the disk module logs the condition once per change and counts the refusals, so
//! nothing is logged here per request.

use std::sync::atomic::{AtomicU64, Ordering, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::cache::disk::{DiskCache, DiskHit, DiskOptions};
use crate::cache::entry::{self, CachedObject, Packed};
use crate::cache::inflight::Inflight;
use crate::cache::memory::{MemoryCache, Slot, Weighted};
use crate::cache::redis_tier;
use crate::cache::usage::Buckets;
use crate::clock::Clock;
use crate::config::{CacheConfig, WritePolicy};

impl Weighted for CachedObject {
    fn weight(&self) -> usize {
        CachedObject::weight(self)
    }
}

/// The memory tier keeps an object as one word ([`Packed`]), its small body inlined.
impl Slot<CachedObject> for Packed {
    fn pack(obj: CachedObject) -> Packed {
        Packed::new(obj.inlined())
    }
    fn unpacked(&self) -> CachedObject {
        self.get()
    }
    fn into_value(self) -> CachedObject {
        self.into_object()
    }
}

/// Pending background disk writes at most (write-behind).
pub const WRITE_BEHIND_QUEUE: usize = 1024;

/// Which tier answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    Memory,
    Disk,
    Redis,
}

impl Layer {
    pub const ALL: [Layer; 3] = [Layer::Memory, Layer::Disk, Layer::Redis];

    pub fn name(self) -> &'static str {
        match self {
            Layer::Memory => "memory",
            Layer::Disk => "disk",
            Layer::Redis => "redis",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// A cache hit.
pub struct Hit {
    pub obj: CachedObject,
    pub layer: Layer,
}

/// The shared tiers (one per process).
pub struct Tiers {
    pub memory: MemoryCache<CachedObject, Packed>,
    pub disk: Option<Arc<DiskCache>>,
    pub inflight: Arc<Inflight>,
    /// Largest object stored (`cache.max_object_size`).
    pub max_object_size: u64,
    write_behind: Option<crossbeam_channel::Sender<Pending>>,
    /// Bumped by every bulk purge before it removes anything; see [`Tiers::generation`].
    generation: Arc<AtomicU64>,
    /// Write-behind writes dropped because the queue was full, and failed disk writes.
    pub dropped_writes: AtomicU64,
    pub disk_errors: Arc<AtomicU64>,
    /// How long a Redis key outlives its entry's freshness ([`redis_tier::retain`]): a soft
    /// purge cuts a Redis TTL to this, which reads as "stale since now".
    pub redis_retain: Duration,
    /// The configured bucket names, by index (per-bucket usage, [`crate::cache::usage`]).
    buckets: Arc<Buckets>,
    /// Failed Redis operations of every worker (counted by the cache fronts).
    pub redis_errors: AtomicU64,
    /// The clock freshness is decided by: soft purges mark entries stale "now" by it.
    pub clock: Clock,
}

impl Tiers {
    /// Builds the tiers; opens the disk tier (blocking: start-up only) and logs its recovery.
    /// Per-bucket entries and bytes are not tracked (everything counts as "other"); see
    /// [`Tiers::with_buckets`].
    pub fn new(cfg: &CacheConfig) -> Result<Arc<Tiers>, String> {
        Tiers::with_buckets(cfg, Buckets::none())
    }

    /// [`Tiers::new`], counting entries, bytes and evictions per bucket of `buckets` (the
    /// configured bucket names, `Buckets::new(config.buckets.iter().map(|b| &b.name))`).
    pub fn with_buckets(cfg: &CacheConfig, buckets: Arc<Buckets>) -> Result<Arc<Tiers>, String> {
        Tiers::with_clock(cfg, buckets, Clock::system())
    }

    /// [`Tiers::with_buckets`] deciding freshness by `clock`.
    pub fn with_clock(
        cfg: &CacheConfig,
        buckets: Arc<Buckets>,
        clock: Clock,
    ) -> Result<Arc<Tiers>, String> {
        if let Some(w) = crate::cache::memory::slice_warning(cfg) {
            log::warn!("{w}");
        }
        let memory = MemoryCache::keeping(cfg.memory.capacity)
            .with_max_object_size(cfg.max_object_size.min(cfg.memory.capacity))
            .with_buckets(Arc::clone(&buckets));
        let disk = match &cfg.disk {
            None => None,
            Some(d) => {
                if let Some(w) =
                    crate::cache::disk::space::capacity_warning(&d.dir, d.capacity, d.segment_size)
                {
                    log::warn!("{w}");
                }
                let (disk, report) = DiskCache::open(DiskOptions {
                    dir: d.dir.clone(),
                    capacity: d.capacity,
                    segment_size: d.segment_size,
                })
                .map_err(|e| format!("cache.disk: cannot open {}: {e}", d.dir.display()))?;
                let disk = disk.with_buckets(Arc::clone(&buckets));
                log::info!(
                    "disk tier {}: {} entries in {} segments recovered in {:?} ({} corrupt, {} torn, {} expired dropped)",
                    d.dir.display(),
                    report.entries,
                    report.segments,
                    report.elapsed,
                    report.dropped_corrupt,
                    report.dropped_torn,
                    report.dropped_expired
                );
                Some(Arc::new(disk))
            }
        };
        let disk_errors = Arc::new(AtomicU64::new(0));
        let generation = Arc::new(AtomicU64::new(0));
        let write_behind = match (&disk, cfg.write_policy) {
            (Some(disk), WritePolicy::WriteBehind) => {
                let (tx, rx) = crossbeam_channel::bounded::<Pending>(WRITE_BEHIND_QUEUE);
                let (disk, errors) = (Arc::clone(disk), Arc::clone(&disk_errors));
                let generation = Arc::clone(&generation);
                std::thread::Builder::new()
                    .name("corvid-disk-writer".into())
                    .spawn(move || {
                        for (key, obj, since) in rx {
                            unless_purged(
                                &generation,
                                since,
                                || write_disk(&disk, &key, &obj, &errors),
                                || disk.remove(&key),
                            );
                        }
                    })
                    .map_err(|e| format!("cannot start the disk writer thread: {e}"))?;
                Some(tx)
            }
            _ => None,
        };
        Ok(Arc::new(Tiers {
            memory,
            disk,
            inflight: Arc::default(),
            max_object_size: cfg.max_object_size,
            write_behind,
            generation,
            dropped_writes: AtomicU64::new(0),
            disk_errors,
            redis_retain: redis_tier::retain(cfg),
            buckets,
            redis_errors: AtomicU64::new(0),
            clock,
        }))
    }

    /// The bucket table the tiers count per-bucket usage with.
    pub fn buckets(&self) -> &Arc<Buckets> {
        &self.buckets
    }

    /// Whether any tier can hold objects.
    pub fn enabled(&self) -> bool {
        self.memory.capacity() > 0 || self.disk.is_some()
    }

    /// Memory, then disk (promoting a disk hit into memory).
    pub async fn lookup(&self, key: &[u8]) -> Option<Hit> {
        let since = self.generation();
        if let Some(obj) = self.memory.get(key) {
            return Some(Hit {
                obj,
                layer: Layer::Memory,
            });
        }
        let disk = self.disk.as_ref()?;
        let hit = disk.get_stale(key)?;
        let value = self.disk_value(disk, key, hit.clone()).await?;
        let Some(mut obj) = entry::decode(value) else {
            // A record that passed the disk checksum but is not an entry: not ours to serve.
            self.disk_errors.fetch_add(1, Ordering::Relaxed);
            disk.remove(key);
            return None;
        };
        // A revalidation moved the entry's times in the index (its age origin in the stamp),
        // not in the stored value.
        let moved_origin = hit.stamp_ms != 0 && hit.stamp_ms != obj.meta().stored_at_ms;
        if moved_origin {
            let meta = obj.meta().with_times(hit.stamp_ms, hit.expires_at_ms);
            obj.set_meta(meta);
        } else if obj.meta().expires_at_ms != hit.expires_at_ms {
            let meta = obj.meta().refreshed(hit.expires_at_ms);
            obj.set_meta(meta);
        }
        // Promoted like a store: a purge that began during the read must not be undone.
        self.insert_memory(key, obj.clone(), since);
        Some(Hit {
            obj,
            layer: Layer::Disk,
        })
    }

    /// The value of a disk hit: the mapping itself when resident, else a verified positioned
    /// read through io_uring (so a cold page never stalls the worker).
    async fn disk_value(&self, disk: &DiskCache, key: &[u8], hit: DiskHit) -> Option<Bytes> {
        if hit.is_resident() {
            return Some(hit.value);
        }
        // Never touch a cold mapping: its pages may be gone (a truncated file) or need a
        // disk read that would stall the worker.
        let loc = disk.locate_stale(key)?;
        let file = loc.file.try_clone().ok()?;
        let file = monoio::fs::File::from_std(file).ok()?;
        let buf = Vec::with_capacity(loc.record_len as usize);
        let (res, buf) = file.read_exact_at(buf, loc.record_offset).await;
        let _ = file.close().await;
        if res.is_err() {
            self.disk_errors.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        match loc.verify(key, &buf) {
            Ok(range) => Some(Bytes::from(buf).slice(range)),
            Err(e) => {
                log::warn!("disk tier: {e}; dropping the entry");
                self.disk_errors.fetch_add(1, Ordering::Relaxed);
                disk.remove(key);
                None
            }
        }
    }

    /// The purge generation: bumped by every bulk purge before it removes anything. Whoever
    /// stores bytes read before some moment (a fill's origin GET, a lookup in a lower tier)
    /// takes the generation at that moment and passes it as `since`; a store whose `since` is
    /// no longer current is dropped, so a purge is never undone by an older fill or promotion
    /// finishing after it. The check runs before the write and again after it (undoing the
    /// write when a purge began in between), which closes the race with a purge's removal pass
    /// without a lock. A purge thus costs the fills in flight at that moment their store —
    /// their next request misses once more — which is cheap next to serving purged bytes.
    pub fn generation(&self) -> u64 {
        self.generation.load(SeqCst)
    }

    /// Starts a purge: stores that began before it will not land (see [`Tiers::generation`]).
    pub fn begin_purge(&self) {
        self.generation.fetch_add(1, SeqCst);
    }

    /// Stores a filled object in every tier, per the write policy, unless a purge began after
    /// `since` (see [`Tiers::generation`]). Returns whether it was stored.
    pub fn store(&self, key: &[u8], obj: CachedObject, since: u64) -> bool {
        if !self.insert_memory(key, obj.clone(), since) {
            return false;
        }
        // A fleet member's local copy stays in memory (`Meta::is_local`).
        let Some(disk) = self.disk.as_ref().filter(|_| !obj.meta().is_local()) else {
            return true;
        };
        match &self.write_behind {
            None => {
                let write = || write_disk(disk, key, &obj, &self.disk_errors);
                let undo = || {
                    self.memory.remove(key);
                    disk.remove(key);
                };
                return unless_purged(&self.generation, since, write, undo);
            }
            Some(tx) => {
                if tx.try_send((key.to_vec(), obj, since)).is_err() {
                    self.dropped_writes.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        true
    }

    /// A revalidated object: new freshness and the header fields the `304` updated, same body.
    /// On disk only the expiry moves (a small touch record, the body is not rewritten) unless
    /// the stored header fields changed, which rewrites the entry. Like [`Tiers::store`],
    /// dropped when a purge began after `since`; returns whether it stands.
    pub fn refresh(&self, key: &[u8], obj: CachedObject, since: u64, fields_changed: bool) -> bool {
        if fields_changed {
            return self.store(key, obj, since);
        }
        let (expires, age_origin) = (obj.meta().expires_at_ms, obj.meta().stored_at_ms);
        let local = obj.meta().is_local();
        if !self.insert_memory(key, obj, since) {
            return false;
        }
        if let Some(disk) = self.disk.as_ref().filter(|_| !local) {
            disk.set_times(key, expires, Some(age_origin));
        }
        true
    }

    /// Inserts into the memory tier unless a purge began after `since`; returns whether the
    /// entry stands.
    fn insert_memory(&self, key: &[u8], obj: CachedObject, since: u64) -> bool {
        let write = || self.memory.insert(key, obj);
        unless_purged(&self.generation, since, write, || self.memory.remove(key))
    }

    /// (entries, bytes) held by `layer` (Redis is not counted here).
    pub fn usage(&self, layer: Layer) -> (u64, u64) {
        match (layer, &self.disk) {
            (Layer::Memory, _) => (self.memory.len(), self.memory.bytes()),
            (Layer::Disk, Some(d)) => (d.len(), d.bytes()),
            _ => (0, 0),
        }
    }

    pub fn evictions(&self, layer: Layer) -> u64 {
        match (layer, &self.disk) {
            (Layer::Memory, _) => self.memory.evictions(),
            (Layer::Disk, Some(d)) => d.evictions(),
            _ => 0,
        }
    }
}

/// Runs `write` unless a purge began after `since`, and `undo` when one began while it ran;
/// returns whether the write stands. Checking on both sides closes the race with a purge's
/// removal pass without a lock (see [`Tiers::generation`]).
fn unless_purged<W, U>(
    generation: &AtomicU64,
    since: u64,
    write: impl FnOnce() -> W,
    undo: impl FnOnce() -> U,
) -> bool {
    if generation.load(SeqCst) != since {
        return false;
    }
    write();
    if generation.load(SeqCst) != since {
        undo();
        return false;
    }
    true
}

/// A write-behind disk write: key, object, the generation it was fetched in.
type Pending = (Vec<u8>, CachedObject, u64);

fn write_disk(disk: &DiskCache, key: &[u8], obj: &CachedObject, errors: &AtomicU64) {
    // `Ok(false)` (not admitting, too large) is counted by the disk tier itself; a failed
    // write is an error here, and the disk tier logs it once as the start of an outage.
    if let Err(e) = disk.insert(key, &entry::encode(obj), obj.meta().expires_at_ms) {
        errors.fetch_add(1, Ordering::Relaxed);
        log::debug!("disk tier write failed: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::entry::Meta;
    use crate::config::DiskConfig;

    const MIB: u64 = 1 << 20;

    /// A fleet member's local copy (`Meta::is_local`) is kept in memory only; the same object
    /// not marked local goes to disk too, and a refresh keeps the copy off the disk.
    #[test]
    fn local_copies_stay_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = CacheConfig {
            disk: Some(DiskConfig {
                dir: dir.path().to_path_buf(),
                capacity: 8 * MIB,
                segment_size: MIB,
            }),
            ..CacheConfig::memory_only(16 * MIB, MIB)
        };
        let tiers = Tiers::new(&cfg).unwrap();
        let now = crate::cache::disk::now_ms();
        let meta = Meta::new(vec![("ETag".into(), "\"1\"".into())], now, now + 3_600_000);
        let object = |meta: Meta| CachedObject::new(meta, bytes::Bytes::from(vec![7u8; 1500]));
        let local = meta.clone().local_until(now + 5_000);
        assert!(local.is_local() && !meta.is_local());
        assert_eq!(local.expires_at_ms, now + 5_000, "capped");
        assert_eq!(
            meta.clone().local_until(now + 7_200_000).expires_at_ms,
            now + 3_600_000
        );

        assert!(tiers.store(b"k-local", object(local.clone()), tiers.generation()));
        assert!(tiers.store(b"k-owned", object(meta), tiers.generation()));
        let disk = tiers.disk.as_ref().unwrap();
        assert!(tiers.memory.get(b"k-local").is_some());
        assert!(
            disk.get_stale(b"k-local").is_none(),
            "a local copy reached the disk"
        );
        assert!(disk.get_stale(b"k-owned").is_some());

        let refreshed = local.refreshed(now + 4_000);
        assert!(refreshed.is_local(), "a revalidated copy stays local");
        assert!(tiers.refresh(b"k-local", object(refreshed), tiers.generation(), true));
        assert!(
            disk.get_stale(b"k-local").is_none(),
            "a refreshed copy reached the disk"
        );
        let got = tiers.memory.get(b"k-local").unwrap();
        assert!(got.meta().is_local() && got.meta().expires_at_ms == now + 4_000);
    }
}

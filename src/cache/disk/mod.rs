//! The disk tier: an append-only log of fixed-size, memory-mapped segment files with an
//! in-memory index, shared by all workers through an `Arc<DiskCache>`.
//!
//! # Modules
//!
//! | module      | owns                                                                     |
//! |-------------|--------------------------------------------------------------------------|
//! | [`format`](mod@format)| the on-disk encoding (field tables there); pure functions, fuzzed         |
//! | [`segment`] | one file: create, map, copy records in, slice values out                  |
//! | [`index`]   | the sharded key → slot map                                                |
//! | [`recover`] | rebuilding the index from the files at start-up, and what it drops        |
//! | [`reclaim`] | FIFO reclaim of whole segments when `capacity` is reached                 |
//! | `rollover`  | the segment thread: the next segment made ahead, retired ones unmapped    |
//! | [`outage`]  | not admitting writes when no segment can be made; its log lines           |
//! | [`space`]   | the warning when `capacity` exceeds the volume's free space               |
//!
//! # Writing
//!
//! An insert encodes its header (computing the CRCs from the caller's buffers), then reserves
//! `padded_len` bytes in the active segment under a short mutex (a bump of the write cursor),
//! writes header, key and value into the file *outside* the lock (one `pwritev`; the mapping
//! is read-only, see [`segment`]), and only then publishes the slot in the index: a reader can
//! never see a half-written value. If the active segment has
//! no room, the reservation rolls over: it installs the *spare*, an empty segment the segment
//! thread created ahead of time, and asks for the next one; picks the oldest segments to
//! reclaim, which the inserting thread then retires after releasing the lock (index entries and
//! `unlink`, see [`reclaim`]); and hands them to the segment thread, which unmaps and closes
//! them. Only if the spare is not ready does the roll-over create the segment itself, under the
//! ring lock, and count it ([`DiskCache::inline_rollovers`]). See `rollover.rs` for the
//! protocol, and why ids stay in write order.
//!
//! Why: in write-through mode the inserting thread is a worker, and everything a roll-over
//! does there stalls all of that worker's connections. Measured with
//! `cargo bench --bench disk_rollover` (64 KiB inserts in steady state, capacity 4 segments,
//! ext4 on the 2-core dev VM at load ~1.4, 2026-11-24): the insert that rolls over took
//! **5.7 ms** p50 / 6.3 ms p99 with 8 MiB segments and **10.9 ms** / 12.3 ms with 64 MiB ones
//! when it created the next segment (`create` + `ftruncate` + `mmap` ≈ 2.6 ms here) and
//! unmapped the victim (≈ 2.5 ms for 8 MiB) itself; with the segment thread it takes **176 µs**
//! / 221 µs and **373 µs** / 453 µs (retiring the victim's index entries, the `unlink`, and the
//! insert's own copy), with no inline creation in 308 and 48 roll-overs. An ordinary insert of
//! the same size is ~70 µs either way. On a machine whose cores are all busy the segment
//! thread's milliseconds of work still compete for CPU with the workers, and a spare that is
//! late is created inline as before.
//!
//! When two inserts of one key race, the one with the later position in the log wins in the
//! index too (a publish never replaces a slot with a later position), so the running index and
//! the one recovery would rebuild agree.
//!
//! A fresh process never appends to a segment it found at start-up: it starts a new one at the
//! first insert. Appending after a recovered tail could leave old, once-unreachable records
//! after the new ones, which a later recovery would replay out of order.
//!
//! # Reading
//!
//! [`DiskCache::get`] is one shard read-lock and a hash lookup; the value is a `Bytes` sliced
//! from the segment's mapping (no copy, no allocation), and it keeps that mapping alive after
//! the segment is reclaimed (on Linux an unlinked file's mapping stays readable). Touching a
//! value whose pages are not in the page cache is a major fault that stalls the worker's whole
//! event loop; [`DiskHit::is_resident`] tells the caller beforehand (`mincore`), and
//! [`DiskCache::locate`] (or [`DiskCache::locate_stale`]) + [`Location::verify`] let it read a
//! cold value with a positioned read (io_uring) instead, checking it against the entry's
//! checksums. Callers must not touch a value that is not resident: that is also what keeps a
//! truncated file from raising `SIGBUS` (see *Faults* below).
//!
//! Records are written through the file, so a value's pages are in the page cache but not yet
//! in this process's page tables until first read through the mapping; `mincore` then looks
//! each page up (about 7 µs for 1 MiB against 1.2 µs once mapped, `cargo bench --bench disk`,
//! perf/RESULTS.md) — paid once per value, by its first hit.
//!
//! Hits are not checksummed (that would cost a CRC of the value per hit); integrity is checked
//! once, by recovery, when the data comes back from the disk after a restart. Between the two,
//! the data lives in the page cache under the kernel's protection.
//!
//! # Durability and crash model
//!
//! Writes are page-cache writes: no `fsync`/`msync` per entry and none when a segment fills
//! (on Linux `msync(MS_ASYNC)` does nothing for a shared file mapping: dirty pages are already
//! tracked and written back after `vm.dirty_expire_centisecs`, so it would be a syscall for
//! nothing). Consequences:
//!
//! - **Process crash or kill**: nothing completed is lost; the page cache holds it. An insert
//!   interrupted mid-copy leaves a record whose body CRC fails (dropped by recovery), or an
//!   all-zero header if it had not started copying (recovery stops reading that segment
//!   there; later records in it are lost — a cache may lose entries, never serve bad ones).
//! - **Power failure / kernel crash**: anything written in the last ~30 s may be lost, in any
//!   order at page granularity: torn records are rejected by their CRCs. Removals
//!   (tombstones), expiry updates (touch records) and `clear` may also be lost, so an entry
//!   removed shortly before a power failure can come back. [`DiskCache::flush`] narrows that
//!   window when the caller needs it (e.g. on graceful shutdown).
//! - If a newer version of a key is damaged, recovery serves the newest *intact* version it
//!   finds, which may be an older one. It is still a value that was stored for that key, with
//!   its own expiry.
//!
//! # Decisions where the spec is silent
//!
//! - **`set_expiry`** appends a 56-byte *touch* record (key + target segment id/offset + new
//!   expiry) and updates the index; it survives a restart. Rewriting the expiry in place would
//!   need the expiry outside the checksum (so a flipped bit could extend an entry forever) or
//!   a checksum rewrite racing with readers of the header.
//! - **`remove` / `remove_if`** append one tombstone per removed key; tombstones survive as
//!   long as needed because reclaim is FIFO (any older copy of the key is reclaimed first).
//! - **`clear`** deletes every segment file and `fsync`s the directory; it is durable.
//! - **Expiry**: an entry is expired when `expires_at_ms <= now`. Expired entries stay in the
//!   index (and count in `len`/`bytes`) until replaced, removed or reclaimed, so that
//!   [`DiskCache::get_stale`] + `set_expiry` can revalidate them.
//! - **Accounting**: `bytes()` is the space taken by live entries (records with headers and
//!   padding); `disk_bytes()` is the segment files' total size, which reclaim keeps at or
//!   below `capacity`. Tombstones, touches and replaced versions occupy the log until their
//!   segment is reclaimed.
//! - **Limits**: `segment_size` must be a multiple of 8 between 4 KiB and 4 GiB (offsets are
//!   32-bit), `capacity` at least two segments; keys up to 64 KiB.
//!
//! # Faults: what holds
//!
//! No fault of the disk or of another process's doing raises a signal in corvid; each is an
//! error the tier recovers from. In detail:
//!
//! - **Full volume** (or quota): a segment's blocks are reserved when it is made
//!   ([`segment`]: `fallocate`, or zeros written through the file), so `ENOSPC` comes from
//!   [`Segment::create`] — on the segment thread — and never from a page fault. The tier then
//!   stops admitting writes, reclaims its oldest segment and lowers its capacity to what the
//!   volume holds ([`outage`]). On filesystems that write out of place (btrfs, ZFS), a
//!   reservation does not promise every later write room; such a write fails with an error,
//!   still not a signal, because records are written with `pwritev`, never through the
//!   mapping.
//! - **Directory removed or unwritable**: segments already open stay readable and writable
//!   (unlinked files); no new one can be made, so the tier stops admitting until the directory
//!   is back ([`outage`]). corvid does not recreate it (it may be an unmounted volume's mount
//!   point). The directory's lock ([`LOCK_FILE`]) is not taken again in a directory that comes
//!   back; nothing stops a second instance from opening that one.
//! - **Segment truncated from outside** while mapped: pages past the new end are not in the
//!   page cache, so [`DiskHit::is_resident`] is false for any value that lost a page and the
//!   caller reads it by position, which comes back short: an error and a miss. A write into a
//!   truncated segment extends the file again (`pwritev`). What remains is a race: a truncation
//!   between the residency check and the caller's reading of the value — or of a value already
//!   handed out (promoted into the memory tier, being sent) — turns that read into a `SIGBUS`
//!   when it is done by corvid itself (decoding the entry, TLS encryption); the kernel's own
//!   copy (a plain socket write) sees `EFAULT` instead. Closing the race would cost a copy of
//!   every hit, or a signal handler; corvid owns `dir` and assumes nobody truncates its files.
//! - **Segment replaced or deleted** from outside (a rename over it, `rm`): corvid keeps the
//!   file it has open; the new file is ignored until a restart, whose recovery checks it.
//! - **I/O errors** on reading a page through the mapping (a failing disk, a detached network
//!   volume) would be a `SIGBUS` too: a non-resident value is read with a positioned read,
//!   whose `EIO` is an error, but a resident page is never read from the disk at all.
//! - **A removal or soft purge while not admitting** is applied to the running index but not
//!   written to the log ([`DiskCache::unpersisted_removals`]): a restart before the entry is
//!   reclaimed would bring it back.

pub mod format;
pub mod index;
pub mod outage;
pub mod reclaim;
pub mod recover;
mod rollover;
pub mod segment;
pub mod space;

use std::collections::hash_map::Entry;
use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::cache::usage::{BucketUsage, Buckets, Usage};
use format::{Kind, ENTRY_HEADER_LEN, MAX_KEY_LEN, SEGMENT_HEADER_LEN};
use index::{Index, Slot};
use outage::Outage;
use reclaim::Counters;
use rollover::SegmentThread;
use segment::Segment;

/// Where and how big.
#[derive(Clone, Debug)]
pub struct DiskOptions {
    /// Directory of the segment files; created if missing. Corvid must own it.
    pub dir: PathBuf,
    /// Upper bound on the segment files' total size, in bytes (≥ 2 × `segment_size`).
    pub capacity: u64,
    /// Size of each segment file (multiple of 8, 4 KiB ..= 4 GiB). Bounds the largest value.
    pub segment_size: u64,
}

/// What [`DiskCache::open`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Valid segment files replayed.
    pub segments: usize,
    /// Live entries in the rebuilt index.
    pub entries: u64,
    /// Records dropped because a checksum failed or a header was invalid.
    pub dropped_corrupt: u64,
    /// Records dropped because they were cut short (truncated file or unfinished write).
    pub dropped_torn: u64,
    /// Entries dropped because they had expired.
    pub dropped_expired: u64,
    /// Space taken by the live entries.
    pub bytes: u64,
    pub elapsed: Duration,
    /// Files in `dir` that are not valid segments (left in place).
    pub ignored_files: usize,
    /// Value records replaced by a later record for the same key.
    pub superseded: u64,
    /// Entries removed by tombstones.
    pub removed: u64,
    /// Files deleted because they held nothing: valid segments without a single record (an
    /// unused spare left by a crash, see `rollover.rs`) and segments left half-created (`.tmp`).
    pub removed_empty: usize,
}

/// Entries and bytes removed by an operation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RemovalStats {
    pub entries: u64,
    pub bytes: u64,
}

/// A value served from the disk tier.
#[derive(Clone, Debug)]
pub struct DiskHit {
    /// Zero-copy view into the segment's mapping; keeps it alive.
    pub value: Bytes,
    pub expires_at_ms: u64,
    pub written_at_ms: u64,
    /// A time the caller moved together with the expiry ([`DiskCache::set_times`]; 0: never):
    /// the cache keeps an entry's age origin there, so that a revalidation restarts the age
    /// on disk too without rewriting the value.
    pub stamp_ms: u64,
}

impl DiskHit {
    /// Whether every page of the value is in the page cache, so touching it cannot block on
    /// the disk. False for a value whose file was truncated under it (its pages are gone): such
    /// a value must be read by position ([`DiskCache::locate`]), never touched. (A page can
    /// still be evicted, or the file truncated, a moment later: see the module's *Faults*.)
    pub fn is_resident(&self) -> bool {
        resident(&self.value)
    }
}

fn page_size() -> usize {
    static PAGE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf has no preconditions; _SC_PAGESIZE is always supported on Linux.
        let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if p > 0 {
            p as usize
        } else {
            4096
        }
    })
}

fn resident(value: &[u8]) -> bool {
    if value.is_empty() {
        return true;
    }
    let page = page_size();
    let start = value.as_ptr() as usize & !(page - 1);
    let end = value.as_ptr() as usize + value.len();
    // Query in chunks so the result vector lives on the stack.
    const CHUNK_PAGES: usize = 256;
    let mut vec = [0u8; CHUNK_PAGES];
    let mut at = start;
    while at < end {
        let len = (end - at).min(CHUNK_PAGES * page);
        let pages = len.div_ceil(page);
        // SAFETY: `value` lies inside a mapping that starts on a page boundary (segments are
        // mapped whole from offset 0), so rounding its start down to a page stays inside that
        // mapping, which `value` keeps alive; [at, at + len) is thus mapped. mincore reads the
        // page tables only and writes `pages` ≤ CHUNK_PAGES bytes into `vec`.
        let rc = unsafe { libc::mincore(at as *mut libc::c_void, len, vec.as_mut_ptr()) };
        if rc != 0 || vec[..pages].iter().any(|b| b & 1 == 0) {
            return false;
        }
        at += len;
    }
    true
}

/// Where an entry lives on disk, for reading its value with a positioned read instead of
/// touching the mapping (see [`DiskHit::is_resident`]).
#[derive(Clone, Debug)]
pub struct Location {
    /// The segment file. It may be unlinked (reclaimed) by the time it is opened; prefer
    /// [`Location::file`], which stays readable.
    pub path: PathBuf,
    /// The segment file, open for reading; valid after the file is unlinked.
    pub file: Arc<File>,
    pub segment_id: u64,
    /// File offset of the entry's header.
    pub record_offset: u64,
    /// Header + key + value (no padding): read this many bytes at `record_offset` for
    /// [`Location::verify`].
    pub record_len: u64,
    /// File offset and length of just the value.
    pub value_offset: u64,
    pub value_len: u64,
    pub expires_at_ms: u64,
    pub written_at_ms: u64,
}

/// Why a record read through a [`Location`] was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyError {
    /// The bytes do not decode (damaged, or a short read).
    Decode(format::DecodeError),
    /// A valid record, but not the one the location describes.
    Mismatch,
}

impl std::fmt::Display for VerifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VerifyError::Decode(e) => write!(f, "disk record: {e}"),
            VerifyError::Mismatch => f.write_str("disk record is not the one located"),
        }
    }
}

impl std::error::Error for VerifyError {}

impl Location {
    /// Checks `record` (the `record_len` bytes read at `record_offset`) against its header's
    /// checksums and against this location (`key`, lengths, write time). Returns the value's
    /// range within `record`, so a `Bytes` buffer can be sliced without copying.
    pub fn verify(&self, key: &[u8], record: &[u8]) -> Result<Range<usize>, VerifyError> {
        let e = format::decode(record, self.record_len as usize).map_err(VerifyError::Decode)?;
        let matches = e.header.kind == Kind::Value
            && e.key == key
            && u64::from(e.header.value_len) == self.value_len
            && e.header.written_at_ms == self.written_at_ms;
        if !matches {
            return Err(VerifyError::Mismatch);
        }
        let start = ENTRY_HEADER_LEN + key.len();
        Ok(start..start + e.value.len())
    }
}

/// The segments in write order and the write cursor.
struct Ring {
    /// Full (or recovered) segments, oldest first.
    sealed: VecDeque<Arc<Segment>>,
    /// The segment being appended to; `None` until the first write after open or clear.
    active: Option<Arc<Segment>>,
    /// Next free offset in `active`.
    cursor: usize,
    next_id: u64,
    /// Total size of the files of `sealed` and `active`.
    disk_bytes: u64,
    /// An empty segment made ahead of time; the next roll-over installs it (`rollover.rs`).
    spare: Option<Arc<Segment>>,
    /// The id of the spare the segment thread is making, if any.
    spare_pending: Option<u64>,
    /// What reclaim keeps `disk_bytes` within: the configured capacity, lowered when the
    /// volume turned out to hold less ([`outage`]).
    capacity: u64,
    /// Whether the tier is admitting writes that need a new segment ([`outage`]).
    outage: Outage,
}

/// Where a record is: segment id and offset within it ([`Slot::position`]).
type Position = (u64, u32);

/// The file in the cache directory whose lock says a process has the directory open.
pub const LOCK_FILE: &str = "corvid.lock";

/// Takes the directory's lock, or fails naming the directory when another process holds it
/// (a second corvid on the same `cache.disk.dir`, as in a zero-downtime replacement where each
/// instance needs its own). The lock goes with the process, so a crash never leaves it taken.
#[expect(
    clippy::disallowed_methods,
    reason = "start-up, in `DiskCache::open`, before the workers start"
)]
fn lock_dir(dir: &std::path::Path) -> io::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK_FILE))?;
    // A process this one is spawning (a credential_process, a test's redis-server) holds a
    // copy of every open file description between its fork and its exec, the lock's of a
    // cache just closed included: so "in use" is asked again for a short while before it is
    // believed. A second corvid holds its lock for its life, and is still refused.
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(500);
    let failed = loop {
        // SAFETY: `file` is open for the whole call; flock(2) only reads the descriptor.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        let e = (rc != 0).then(io::Error::last_os_error);
        let busy = e.as_ref().and_then(io::Error::raw_os_error) == Some(libc::EWOULDBLOCK);
        if !busy || std::time::Instant::now() >= deadline {
            break e;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    if let Some(e) = failed {
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(io::Error::other(format!(
                "disk cache: {} is in use by another process (another corvid?); give each \
                 instance its own cache.disk.dir",
                dir.display()
            )));
        }
        return Err(e);
    }
    Ok(file)
}

/// The disk tier. `Send + Sync`; share it through an `Arc`.
pub struct DiskCache {
    /// Holds an exclusive `flock(2)` on [`LOCK_FILE`] in `dir` while the cache is open: two
    /// processes writing the same segments would serve each other's half-written records.
    _lock: std::fs::File,
    dir: PathBuf,
    segment_size: u64,
    index: Index,
    /// Shared with the segment thread, which delivers spares into it.
    ring: Arc<Mutex<Ring>>,
    counters: Counters,
    evictions: AtomicU64,
    /// Segments installed as the active one since open.
    segments_created: AtomicU64,
    /// Of those, created on the inserting thread (at roll-over).
    inline_rollovers: AtomicU64,
    /// Declared last: dropped (stopped and joined) after everything above.
    segment_thread: SegmentThread,
}

/// Milliseconds since the Unix epoch by the system clock: the disk tier's own bookkeeping
/// (recovery, reclaiming) runs on real time, not the injectable clock (see `crate::clock`).
pub fn now_ms() -> u64 {
    crate::clock::system_now_ms()
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

impl DiskCache {
    /// Opens (creating `dir` if needed) and rebuilds the index. Blocking: called at start-up,
    /// off the workers. Reads every segment in full (see [`recover`]).
    #[expect(
        clippy::disallowed_methods,
        reason = "start-up, before the workers start (see the doc above)"
    )]
    pub fn open(opts: DiskOptions) -> io::Result<(DiskCache, RecoveryReport)> {
        if !opts.segment_size.is_multiple_of(8)
            || opts.segment_size < 4096
            || opts.segment_size > u64::from(u32::MAX)
        {
            return Err(invalid(
                "disk cache: segment_size must be a multiple of 8 in 4 KiB ..= 4 GiB",
            ));
        }
        if opts.capacity < 2 * opts.segment_size {
            return Err(invalid(
                "disk cache: capacity must hold at least two segments",
            ));
        }
        std::fs::create_dir_all(&opts.dir)?;
        let lock = lock_dir(&opts.dir)?;
        let rec = recover::recover(&opts.dir)?;
        let disk_bytes = rec.segments.iter().map(|s| s.len() as u64).sum();
        let mut next_id = rec.next_id;
        // The first spare is made here (start-up may block), so that even the first insert
        // finds its segment ready. Not fatal: the tier starts not admitting (logged once) and
        // the first write that needs a segment asks for one again.
        let mut outage = Outage::new(&opts.dir);
        let spare = match Segment::create(&opts.dir, next_id, opts.segment_size) {
            Ok(s) => {
                next_id += 1;
                Some(Arc::new(s))
            }
            Err(e) => {
                next_id += 1;
                outage.begin(&e, Instant::now());
                None
            }
        };
        let ring = Arc::new(Mutex::new(Ring {
            sealed: rec.segments,
            active: None,
            cursor: 0,
            next_id,
            disk_bytes,
            spare,
            spare_pending: None,
            capacity: opts.capacity,
            outage,
        }));
        let segment_thread =
            SegmentThread::start(opts.dir.clone(), opts.segment_size, Arc::clone(&ring))?;
        let mut cache = DiskCache {
            _lock: lock,
            dir: opts.dir,
            segment_size: opts.segment_size,
            index: rec.index,
            ring,
            counters: Counters {
                entries: AtomicU64::new(rec.live_entries),
                bytes: AtomicU64::new(rec.live_bytes),
                usage: BucketUsage::new(Buckets::none()),
            },
            evictions: AtomicU64::new(0),
            segments_created: AtomicU64::new(0),
            inline_rollovers: AtomicU64::new(0),
            segment_thread,
        };
        cache.count_buckets(Buckets::none());
        // A smaller capacity than last time: shed the oldest segments now.
        let victims = {
            let mut ring = cache.lock_ring();
            let Ring {
                sealed,
                disk_bytes,
                capacity,
                ..
            } = &mut *ring;
            reclaim::make_room(sealed, disk_bytes, 0, *capacity)
        };
        cache.evict(victims);
        Ok((cache, rec.report))
    }

    /// Counts entries, bytes and evictions per bucket of `buckets` from now on, starting
    /// from what the index holds (see [`crate::cache::usage`]). Before the cache is shared.
    pub fn with_buckets(mut self, buckets: Arc<Buckets>) -> DiskCache {
        self.count_buckets(buckets);
        self
    }

    fn count_buckets(&mut self, buckets: Arc<Buckets>) {
        let usage = BucketUsage::new(buckets);
        for shard in self.index.shards_mut() {
            for (key, slot) in shard.iter() {
                usage.added(usage.class(key), slot.padded_len());
            }
        }
        self.counters.usage = usage;
    }

    /// A bucket's share of the tier; `None` when the cache was not told about the bucket.
    pub fn usage_of(&self, bucket: &str) -> Option<Usage> {
        self.counters.usage.by_name(bucket)
    }

    fn lock_ring(&self) -> MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The fresh, unexpired entry for `key`. No I/O except what touching the value's pages
    /// may cause later (see [`DiskHit::is_resident`]).
    pub fn get(&self, key: &[u8]) -> Option<DiskHit> {
        self.lookup(key, Some(now_ms()))
    }

    /// Like [`DiskCache::get`] but also returns expired entries still held, for revalidation
    /// (a 304 then calls [`DiskCache::set_expiry`]).
    pub fn get_stale(&self, key: &[u8]) -> Option<DiskHit> {
        self.lookup(key, None)
    }

    fn lookup(&self, key: &[u8], now: Option<u64>) -> Option<DiskHit> {
        let shard = self.index.read(key);
        let slot = shard.get(key)?;
        if now.is_some_and(|now| slot.expires_at_ms <= now) {
            return None;
        }
        Some(DiskHit {
            value: slot
                .segment
                .bytes(slot.value_offset(), slot.value_len as usize),
            expires_at_ms: slot.expires_at_ms,
            written_at_ms: slot.written_at_ms,
            stamp_ms: slot.stamp_ms,
        })
    }

    /// Where `key`'s (unexpired) value lives on disk, for a positioned read.
    pub fn locate(&self, key: &[u8]) -> Option<Location> {
        self.locate_where(key, Some(now_ms()))
    }

    /// [`DiskCache::locate`], expired entries included (the counterpart of
    /// [`DiskCache::get_stale`]).
    pub fn locate_stale(&self, key: &[u8]) -> Option<Location> {
        self.locate_where(key, None)
    }

    fn locate_where(&self, key: &[u8], now: Option<u64>) -> Option<Location> {
        let shard = self.index.read(key);
        let slot = shard
            .get(key)
            .filter(|s| now.is_none_or(|now| s.expires_at_ms > now))?;
        let seg = &slot.segment;
        Some(Location {
            path: seg.path.clone(),
            file: seg.file.clone(),
            segment_id: seg.id,
            record_offset: u64::from(slot.offset),
            record_len: (ENTRY_HEADER_LEN + slot.key_len as usize + slot.value_len as usize) as u64,
            value_offset: slot.value_offset() as u64,
            value_len: u64::from(slot.value_len),
            expires_at_ms: slot.expires_at_ms,
            written_at_ms: slot.written_at_ms,
        })
    }

    /// Appends; replaces any older entry for the key. `Ok(false)` if it was not stored: the
    /// record cannot fit in a segment (value larger than `segment_size` minus headers), the
    /// key is over 64 KiB, or the tier is not admitting writes (no segment could be made: see
    /// [`outage`]; counted in [`DiskCache::refused_writes`]). `Err` if writing the record
    /// failed (the tier then stops admitting until a new segment can be made).
    /// When it fills the active segment it also retires reclaimed segments, and creates the
    /// next segment itself if the segment thread has not made it yet (see the module docs).
    pub fn insert(&self, key: &[u8], value: &[u8], expires_at_ms: u64) -> io::Result<bool> {
        if !self.fits(key.len(), value.len()) {
            return Ok(false);
        }
        let Some((seg, offset, written_at_ms)) =
            self.append(Kind::Value, key, value, expires_at_ms)?
        else {
            return Ok(false);
        };
        let slot = Slot {
            segment: seg,
            offset,
            key_len: key.len() as u32,
            value_len: value.len() as u32,
            expires_at_ms,
            written_at_ms,
            stamp_ms: 0,
        };
        self.publish(key, slot);
        Ok(true)
    }

    fn fits(&self, key_len: usize, value_len: usize) -> bool {
        key_len <= MAX_KEY_LEN
            && value_len as u64 <= self.segment_size
            && format::padded_len(key_len, value_len) as u64
                <= self.segment_size - SEGMENT_HEADER_LEN as u64
    }

    /// Writes one record and returns where, and its write time; `None` if the tier is not
    /// admitting. The write happens outside every lock.
    fn append(
        &self,
        kind: Kind,
        key: &[u8],
        value: &[u8],
        expires_at_ms: u64,
    ) -> io::Result<Option<(Arc<Segment>, u32, u64)>> {
        let written_at_ms = now_ms();
        let header = format::encode_header(kind, key, value, expires_at_ms, written_at_ms);
        let len = format::padded_len(key.len(), value.len());
        let Some((seg, offset)) = self.reserve(len) else {
            return Ok(None);
        };
        // SAFETY: `reserve` handed this range to this call alone, and nothing is published in
        // it until this call returns.
        if let Err(e) = unsafe { seg.write(offset, &[&header, key, value]) } {
            self.write_failed(&seg, &e);
            return Err(e);
        }
        Ok(Some((seg, offset as u32, written_at_ms)))
    }

    /// A record could not be written into `seg`: nothing more goes into it, and the tier stops
    /// admitting until a new segment can be made.
    fn write_failed(&self, seg: &Arc<Segment>, e: &io::Error) {
        let mut ring = self.lock_ring();
        if ring.active.as_ref().is_some_and(|a| Arc::ptr_eq(a, seg)) {
            ring.cursor = seg.len();
        }
        // A spare made before the failure says nothing about the disk now.
        let stale_spare = ring.spare.take();
        ring.outage.begin(e, Instant::now());
        drop(ring);
        if let Some(spare) = stale_spare {
            self.segment_thread.discard(spare);
        }
    }

    /// Reserves `len` bytes in the active segment, rolling over (and reclaiming) if needed;
    /// `None` if the tier is not admitting (no segment could be made).
    fn reserve(&self, len: usize) -> Option<(Arc<Segment>, usize)> {
        let mut ring = self.lock_ring();
        if let Some(active) = ring.active.clone() {
            if ring.cursor + len <= active.len() {
                let at = ring.cursor;
                ring.cursor += len;
                return Some((active, at));
            }
        }
        let fresh = match ring.spare.take() {
            Some(spare) => spare,
            // Not admitting: refuse at once rather than try (and fail) on this thread.
            None if ring.outage.active() => return self.refuse(ring),
            None => {
                // Not ready: create it here, under the ring lock, as before the segment thread
                // existed. Create first: if it fails, nothing has changed.
                match Segment::create(&self.dir, ring.next_id, self.segment_size) {
                    Ok(fresh) => {
                        ring.next_id += 1;
                        // A spare still being made now has an id older than this segment's:
                        // it will be discarded when it arrives.
                        ring.spare_pending = None;
                        self.inline_rollovers.fetch_add(1, Ordering::Relaxed);
                        Arc::new(fresh)
                    }
                    Err(e) => {
                        // The id is burnt: a file of that name may be half made.
                        ring.next_id += 1;
                        ring.outage.begin(&e, Instant::now());
                        return self.refuse(ring);
                    }
                }
            }
        };
        self.segments_created.fetch_add(1, Ordering::Relaxed);
        let victims = {
            let r = &mut *ring;
            let capacity = r.capacity;
            r.outage.end(Instant::now(), capacity);
            if let Some(full) = r.active.take() {
                r.sealed.push_back(full);
            }
            let victims = reclaim::make_room(
                &mut r.sealed,
                &mut r.disk_bytes,
                fresh.len() as u64,
                capacity,
            );
            r.disk_bytes += fresh.len() as u64;
            r.active = Some(fresh.clone());
            r.cursor = SEGMENT_HEADER_LEN + len;
            victims
        };
        // The next spare is asked for before the victims are handed over, so the segment
        // thread makes it before it spends milliseconds unmapping them (when the volume is
        // full, it frees them first: see `rollover.rs`).
        self.want_spare(&mut ring);
        // Retiring takes index locks and unlinks: not under the ring lock.
        drop(ring);
        self.evict(victims);
        Some((fresh, SEGMENT_HEADER_LEN))
    }

    /// A write the tier cannot take while not admitting: counted; and at most every
    /// [`outage::RETRY_AFTER`], the segment thread is asked for a segment again — after the
    /// oldest segment is reclaimed and the capacity lowered to what is left, when the volume
    /// is out of space (see [`outage`]).
    fn refuse(&self, mut ring: MutexGuard<'_, Ring>) -> Option<(Arc<Segment>, usize)> {
        ring.outage.refuse();
        if ring.spare_pending.is_some() || !ring.outage.retry_due(Instant::now()) {
            return None;
        }
        let mut victims = Vec::new();
        if ring.outage.out_of_space() {
            let r = &mut *ring;
            // The active segment (full for this write) is sealed, so that it can go too when
            // it is all there is: a volume that holds one segment still serves as a cache of
            // one.
            if let Some(full) = r.active.take() {
                r.sealed.push_back(full);
                r.cursor = 0;
            }
            if let Some(oldest) = r.sealed.pop_front() {
                r.disk_bytes -= oldest.len() as u64;
                victims.push(oldest);
                // Room for the next segment is the room the victim leaves.
                r.capacity = r.disk_bytes.max(self.segment_size);
                r.outage.reclaimed(1);
            }
        }
        drop(ring);
        // First the victims (their blocks are freed when the segment thread drops them),
        // then the request for a segment in their place.
        self.evict(victims);
        self.want_spare(&mut self.lock_ring());
        None
    }

    /// Asks the segment thread for the next spare unless one exists or is being made.
    fn want_spare(&self, ring: &mut Ring) {
        if ring.spare.is_some() || ring.spare_pending.is_some() {
            return;
        }
        let id = ring.next_id;
        ring.next_id += 1;
        if self.segment_thread.prepare(id) {
            ring.spare_pending = Some(id);
        }
    }

    /// Retires reclaim's victims (index entries and files) and hands them to the segment
    /// thread to be unmapped.
    fn evict(&self, victims: Vec<Arc<Segment>>) {
        let s = self.retire_all(&victims, true);
        self.evictions.fetch_add(s.entries, Ordering::Relaxed);
        self.segment_thread.release(victims);
    }

    fn retire_all(&self, victims: &[Arc<Segment>], evicted: bool) -> RemovalStats {
        let mut total = RemovalStats::default();
        for v in victims {
            let s = reclaim::retire(v, &self.index, &self.counters, evicted);
            total.entries += s.entries;
            total.bytes += s.bytes;
        }
        total
    }

    /// Makes a written record visible, unless its segment was reclaimed meanwhile or a later
    /// write of the key is already visible.
    fn publish(&self, key: &[u8], slot: Slot) {
        let seg = slot.segment.clone();
        let mut published = seg.published.lock().unwrap_or_else(|e| e.into_inner());
        if published.retired {
            return;
        }
        let key: Arc<[u8]> = Arc::from(key);
        let offset = slot.offset;
        let added = slot.padded_len();
        let class = self.counters.usage.class(&key);
        let mut shard = self.index.write(&key);
        match shard.entry(key.clone()) {
            Entry::Occupied(o) if o.get().position() > slot.position() => return,
            Entry::Occupied(mut o) => {
                let freed = o.insert(slot).padded_len();
                self.counters.bytes.fetch_add(added, Ordering::Relaxed);
                self.counters.bytes.fetch_sub(freed, Ordering::Relaxed);
                self.counters.usage.resized(class, freed, added);
            }
            Entry::Vacant(v) => {
                v.insert(slot);
                self.counters.entries.fetch_add(1, Ordering::Relaxed);
                self.counters.bytes.fetch_add(added, Ordering::Relaxed);
                self.counters.usage.added(class, added);
            }
        }
        drop(shard);
        published.keys.push((key, offset));
    }

    /// Updates only the expiry of a present entry (expired or not), e.g. after a 304
    /// revalidation. Appends a small touch record so the new expiry survives a restart.
    pub fn set_expiry(&self, key: &[u8], expires_at_ms: u64) -> bool {
        self.set_times(key, expires_at_ms, None)
    }

    /// [`DiskCache::set_expiry`], also setting the entry's stamp ([`DiskHit::stamp_ms`]) when
    /// `stamp_ms` is given; both survive a restart (one touch record).
    pub fn set_times(&self, key: &[u8], expires_at_ms: u64, stamp_ms: Option<u64>) -> bool {
        let (target, stamp) = {
            let mut shard = self.index.write(key);
            let Some(slot) = shard.get_mut(key) else {
                return false;
            };
            if slot.segment.is_retired() {
                return false;
            }
            slot.expires_at_ms = expires_at_ms;
            if let Some(s) = stamp_ms {
                slot.stamp_ms = s;
            }
            (slot.position(), slot.stamp_ms)
        };
        let payload = format::touch_payload(target.0, target.1, stamp);
        // Not persisted while the tier is not admitting (the index holds the new expiry; a
        // restart would bring back the old one); a failed write is logged by the outage.
        let _ = self.append(Kind::Touch, key, &payload, expires_at_ms);
        true
    }

    /// Soft purge of one key: its entry's expiry becomes at most `at_ms` (already-stale entries
    /// keep theirs), persisted like [`DiskCache::set_expiry`]. Entries in segments are
    /// immutable; the index's expiry is what freshness is read from. Returns the entry marked
    /// (nothing if the key was absent).
    pub fn mark_stale(&self, key: &[u8], at_ms: u64) -> RemovalStats {
        self.mark_stale_where(Some(key), &|k| k == key, at_ms)
    }

    /// [`DiskCache::mark_stale`] for every entry whose key matches, one shard at a time.
    pub fn mark_stale_if(&self, pred: impl Fn(&[u8]) -> bool, at_ms: u64) -> RemovalStats {
        self.mark_stale_where(None, &pred, at_ms)
    }

    fn mark_stale_where(
        &self,
        key: Option<&[u8]>,
        pred: &dyn Fn(&[u8]) -> bool,
        at_ms: u64,
    ) -> RemovalStats {
        let mut stats = RemovalStats::default();
        let shards: Vec<usize> = match key {
            Some(k) => vec![self.index.shard_index(k)],
            None => (0..self.index.shard_count()).collect(),
        };
        for i in shards {
            // Touch records are appended after the shard lock is released.
            let mut touched: Vec<(Arc<[u8]>, Position, u64)> = Vec::new();
            {
                let mut shard = self.index.shard(i);
                for (k, slot) in shard.iter_mut() {
                    if !pred(k) || slot.segment.is_retired() {
                        continue;
                    }
                    stats.entries += 1;
                    stats.bytes += slot.padded_len();
                    if slot.expires_at_ms > at_ms {
                        slot.expires_at_ms = at_ms;
                        touched.push((k.clone(), slot.position(), slot.stamp_ms));
                    }
                }
            }
            for (k, (segment, offset), stamp) in touched {
                let payload = format::touch_payload(segment, offset, stamp);
                if !matches!(self.append(Kind::Touch, &k, &payload, at_ms), Ok(Some(_))) {
                    self.lock_ring().outage.unpersisted();
                }
            }
        }
        stats
    }

    /// Removes the key's entry; appends a tombstone so it stays removed after a restart.
    /// Returns what went (nothing if the key was absent).
    pub fn remove(&self, key: &[u8]) -> RemovalStats {
        let Some(slot) = self.index.write(key).remove(key) else {
            return RemovalStats::default();
        };
        let bytes = slot.padded_len();
        self.counters.entries.fetch_sub(1, Ordering::Relaxed);
        self.counters.bytes.fetch_sub(bytes, Ordering::Relaxed);
        let usage = &self.counters.usage;
        usage.removed(usage.class(key), bytes, false);
        self.tombstone(key);
        RemovalStats { entries: 1, bytes }
    }

    fn tombstone(&self, key: &[u8]) {
        // Written after the index removal, so it lands after every record it removes.
        if !matches!(self.append(Kind::Tombstone, key, &[], 0), Ok(Some(_))) {
            self.lock_ring().outage.unpersisted();
        }
    }

    /// Removes every entry whose key matches (purge by bucket or prefix), durably. `pred`
    /// runs under each shard's write lock in turn (a walk of 1/64 of the index at a time).
    pub fn remove_if(&self, pred: impl Fn(&[u8]) -> bool) -> RemovalStats {
        let mut stats = RemovalStats::default();
        for i in 0..self.index.shard_count() {
            let removed: Vec<(Arc<[u8]>, Slot)> =
                self.index.shard(i).extract_if(|k, _| pred(k)).collect();
            for (key, slot) in removed {
                stats.entries += 1;
                stats.bytes += slot.padded_len();
                let usage = &self.counters.usage;
                usage.removed(usage.class(&key), slot.padded_len(), false);
                drop(slot);
                self.tombstone(&key);
            }
        }
        self.counters
            .entries
            .fetch_sub(stats.entries, Ordering::Relaxed);
        self.counters
            .bytes
            .fetch_sub(stats.bytes, Ordering::Relaxed);
        stats
    }

    /// Removes everything: deletes every segment file that holds data and syncs the
    /// directory, so it is durable even across a power failure. (The spare, which holds
    /// nothing, stays for the next write.)
    #[expect(
        clippy::disallowed_methods,
        reason = "purge runs this on a helper thread; ON A WORKER only when that thread cannot \
                  be started (`purge::purge_local` falls back to running inline)"
    )]
    pub fn clear(&self) -> RemovalStats {
        let victims: Vec<Arc<Segment>> = {
            let mut ring = self.lock_ring();
            ring.disk_bytes = 0;
            ring.cursor = 0;
            let active = ring.active.take();
            ring.sealed.drain(..).chain(active).collect()
        };
        let stats = self.retire_all(&victims, false);
        self.segment_thread.release(victims);
        if let Err(e) = File::open(&self.dir).and_then(|d| d.sync_all()) {
            log::warn!("disk cache: could not sync {}: {e}", self.dir.display());
        }
        stats
    }

    /// Writes every segment's dirty pages back and waits. Blocking; for graceful shutdown or
    /// when the caller wants recent writes to survive a power failure.
    pub fn flush(&self) -> io::Result<()> {
        let segs: Vec<Arc<Segment>> = {
            let ring = self.lock_ring();
            ring.sealed.iter().chain(&ring.active).cloned().collect()
        };
        segs.iter().try_for_each(|s| s.flush())
    }

    /// Live entries (including expired ones not yet dropped).
    pub fn len(&self) -> u64 {
        self.counters.entries.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Space taken by live entries' records.
    pub fn bytes(&self) -> u64 {
        self.counters.bytes.load(Ordering::Relaxed)
    }

    /// Total size of the segment files (≤ `capacity`), not counting the spare, which already
    /// holds its blocks: on the volume the tier takes up to `capacity` + one segment.
    pub fn disk_bytes(&self) -> u64 {
        self.lock_ring().disk_bytes
    }

    /// What reclaim keeps [`DiskCache::disk_bytes`] within: the configured capacity, or less
    /// once the volume turned out to hold less ([`outage`]).
    pub fn capacity(&self) -> u64 {
        self.lock_ring().capacity
    }

    /// Whether the tier admits writes that need a new segment; `false` while no segment can
    /// be made (a full volume, a removed directory: see [`outage`]).
    pub fn admitting(&self) -> bool {
        !self.lock_ring().outage.active()
    }

    /// Writes refused since open because the tier was not admitting.
    pub fn refused_writes(&self) -> u64 {
        self.lock_ring().outage.refused_total()
    }

    /// Entries dropped by reclaim since open.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// Segments installed as the active one since open (roll-overs, and the first segment).
    pub fn segments_created(&self) -> u64 {
        self.segments_created.load(Ordering::Relaxed)
    }

    /// Segments that had to be created on the inserting thread at roll-over (the spare was
    /// not ready).
    pub fn inline_rollovers(&self) -> u64 {
        self.inline_rollovers.load(Ordering::Relaxed)
    }

    /// Removals and soft purges not written to the log because the tier was not admitting
    /// (a restart would bring those entries back; see [`outage`]).
    pub fn unpersisted_removals(&self) -> u64 {
        self.lock_ring().outage.unpersisted_total()
    }

    /// Blocks until the segment thread has done everything asked of it so far (the next
    /// spare is made, retired segments are unmapped). For tests, benchmarks and shutdown;
    /// never on a worker.
    pub fn settle(&self) {
        self.segment_thread.settle();
    }

    /// Number of segments holding (or ready to hold) entries; the spare is not counted.
    pub fn segments(&self) -> usize {
        let ring = self.lock_ring();
        ring.sealed.len() + usize::from(ring.active.is_some())
    }
}

#[cfg(test)]
#[allow(
    clippy::disallowed_methods,
    clippy::print_stderr,
    reason = "tests may block, and report what they checked on stderr"
)]
mod tests;

#[cfg(test)]
#[allow(
    clippy::disallowed_methods,
    clippy::print_stderr,
    reason = "tests may block, and say on stderr why they skipped"
)]
mod fault_tests;

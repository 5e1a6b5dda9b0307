//! One segment file: creating it, mapping it, copying records into it and slicing values out.
//!
//! A segment is created at its full size with its blocks **reserved** (`fallocate`, or zeros
//! written through the file where the filesystem has no `fallocate`), so that a full volume
//! surfaces as `ENOSPC` from [`Segment::create`] — an ordinary error, on the segment thread —
//! and never later as a `SIGBUS` from a page of a sparse file that the filesystem cannot back.
//! It is mapped once, whole and **read-only**, for its lifetime: the mapping never moves, so a
//! `Bytes` sliced out of it stays valid for as long as it lives, and because that `Bytes` holds
//! an `Arc` of the mapping, the mapping outlives the segment's removal from the cache. On Linux
//! an unlinked file's pages stay readable through an existing mapping, so reclaiming (deleting)
//! a segment never invalidates a value a reader holds.
//!
//! Records are written with `pwritev(2)` through the file, not through the mapping: the page
//! cache is shared, so readers of the mapping see the bytes, and whatever goes wrong in a write
//! (no space on a filesystem that cannot reserve, an I/O error, a file truncated from outside)
//! comes back as an `io::Error` instead of a signal. One syscall per record is also cheaper
//! than a write fault per fresh page of the mapping.
//!
//! Bytes of a segment are written exactly once: the writer reserves a range under the cache's
//! ring lock (see [`super`]), writes it without a lock, and only then publishes it in the
//! index. Published ranges are immutable from then on; this is what makes handing out
//! references into the map sound while other threads write other ranges.
//!
//! Segments found at start-up are never written again.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use memmap2::{MmapOptions, MmapRaw};

use super::format::{self, SegmentHeader, SEGMENT_HEADER_LEN};

const PREFIX: &str = "seg-";
const SUFFIX: &str = ".corvid";
const TMP_SUFFIX: &str = ".tmp";

/// The file name of segment `id`: fixed width hex, so a directory listing sorts by id.
pub fn file_name(id: u64) -> String {
    format!("{PREFIX}{id:016x}{SUFFIX}")
}

/// The id a segment file name claims, or `None` if the name is not a segment's.
pub fn parse_file_name(name: &str) -> Option<u64> {
    let hex = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// The name segment `id` has while it is being created.
pub fn tmp_file_name(id: u64) -> String {
    format!("{}{TMP_SUFFIX}", file_name(id))
}

/// The id of a segment left half-created (by a crash) under `name`, or `None`.
pub fn parse_tmp_file_name(name: &str) -> Option<u64> {
    parse_file_name(name.strip_suffix(TMP_SUFFIX)?)
}

/// Owns the mapping for `Bytes::from_owner`.
struct MapOwner(Arc<MmapRaw>);

impl AsRef<[u8]> for MapOwner {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the pointer and length describe a live mapping (kept alive by the `Arc`).
        // `Bytes::from_owner` calls this once, when the segment is constructed and before any
        // range of it is reserved by a writer, to learn the pointer and length; afterwards
        // `Bytes` only dereferences sub-ranges that [`Segment::bytes`] hands out, and those are
        // published, never-again-written ranges. Read-only segments are never written at all.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr(), self.0.len()) }
    }
}

/// Keys published into a segment, so reclaiming it can find its index entries without reading
/// the file (which would fault its pages in from disk on an inserting worker).
#[derive(Default)]
pub struct Published {
    /// Set once the segment is being reclaimed; publishing into it is refused from then on.
    pub retired: bool,
    /// (key, entry offset) of every value record published here.
    pub keys: Vec<(Arc<[u8]>, u32)>,
}

/// A mapped segment file.
pub struct Segment {
    pub id: u64,
    pub path: PathBuf,
    /// Kept open so a [`super::Location`] can be read with positioned reads even after the
    /// file has been unlinked by reclaim.
    pub file: Arc<File>,
    map: Arc<MmapRaw>,
    /// The whole mapping as `Bytes`, so a hit is an atomic increment and no allocation.
    whole: Bytes,
    pub published: Mutex<Published>,
    /// Mirrors `published.retired` for lock-free checks.
    retired: AtomicBool,
}

impl Segment {
    /// Creates segment `id` in `dir` at `size` bytes, its blocks reserved, and writes its
    /// header. Blocking: a file creation, an `fallocate` (extent allocation: cheap on ext4 and
    /// XFS; tmpfs allocates the pages), an `mmap` and a link — milliseconds on some systems,
    /// which is why roll-over asks the segment thread for it ahead of time (`rollover.rs`).
    /// `ENOSPC` (or `EDQUOT`) here is how the disk tier learns the volume is full.
    ///
    /// The file gets its segment name only once its header is in place (it is created as
    /// [`tmp_file_name`] and linked to its name), so a crash mid-creation never leaves a file that looks
    /// like a segment but is not one; recovery deletes the leftover temporary file.
    #[expect(
        clippy::disallowed_methods,
        reason = "on the segment thread and at start-up, except ON A WORKER when a roll-over \
                  finds no spare ready and creates the segment inline (`inline_rollovers`)"
    )]
    pub fn create(dir: &Path, id: u64, size: u64) -> io::Result<Segment> {
        let tmp = dir.join(tmp_file_name(id));
        let path = dir.join(file_name(id));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        let made = (|| {
            reserve_blocks(&file, size)?;
            let header = format::encode_segment_header(SegmentHeader { id, size });
            write_all_at(&file, 0, &[&header])?;
            let map = MmapOptions::new().map_raw_read_only(&file)?;
            // A hard link, not `rename`: it fails atomically if the name exists (ids are never
            // reused, so such a file is not ours to replace), where a check before `rename`
            // would leave a window. A crash before the `.tmp` name is removed leaves a second
            // link that recovery deletes like any leftover `.tmp`.
            std::fs::hard_link(&tmp, &path)?;
            std::fs::remove_file(&tmp)?;
            Ok(map)
        })();
        match made {
            Ok(map) => Ok(Segment::new(id, path, file, map)),
            Err(e) => {
                // Frees whatever a partial reservation took.
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// Maps an existing segment file read-only. `Ok(None)` if it is not one of ours (bad
    /// header, or an id that does not match its name) or is too short to hold a header.
    #[expect(clippy::disallowed_methods, reason = "recovery at start-up only")]
    pub fn open_existing(path: &Path, id: u64) -> io::Result<Option<Segment>> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        if len < SEGMENT_HEADER_LEN as u64 || len > u64::from(u32::MAX) {
            return Ok(None);
        }
        let map = MmapOptions::new().map_raw_read_only(&file)?;
        let seg = Segment::new(id, path.to_path_buf(), file, map);
        match format::decode_segment_header(seg.slice(0, SEGMENT_HEADER_LEN)) {
            Some(h) if h.id == id => Ok(Some(seg)),
            _ => Ok(None),
        }
    }

    fn new(id: u64, path: PathBuf, file: File, map: MmapRaw) -> Segment {
        let map = Arc::new(map);
        Segment {
            id,
            path,
            file: Arc::new(file),
            whole: Bytes::from_owner(MapOwner(map.clone())),
            map,
            published: Mutex::new(Published::default()),
            retired: AtomicBool::new(false),
        }
    }

    /// Length of the mapping (the file's length when it was mapped).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Never true for a valid segment (it holds at least its header).
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    /// A slice of bytes that are no longer written to: published ranges, or anything of a
    /// read-only segment. Callers uphold that; it is not checked.
    pub fn slice(&self, start: usize, len: usize) -> &[u8] {
        assert!(start.checked_add(len).is_some_and(|end| end <= self.len()));
        // SAFETY: in bounds (asserted); the mapping lives as long as `self`; and by this
        // function's contract the range is not being written (see the module docs: every byte
        // is written once, before publication). Only recovery reads this way, at start-up, of
        // a file whose length it has just checked; another process truncating the file in
        // that moment would turn these reads into SIGBUS (the parent module's *Faults*).
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(start), len) }
    }

    /// A zero-copy `Bytes` of a published range; it keeps the mapping alive.
    pub fn bytes(&self, start: usize, len: usize) -> Bytes {
        self.whole.slice(start..start + len)
    }

    /// Writes `parts` back to back into the file at `offset` (one `pwritev`, repeated only on
    /// a short write). An error leaves the range partly written: the caller must not publish
    /// it (recovery drops such a record by its checksums, as after a crash).
    ///
    /// # Safety
    /// `offset .. offset + total length of parts` must be within the segment and reserved by
    /// the caller alone: nobody else writes it, and nobody reads it through the mapping (no
    /// reference into it exists) until the caller publishes it.
    pub unsafe fn write(&self, offset: usize, parts: &[&[u8]]) -> io::Result<()> {
        debug_assert!(offset + parts.iter().map(|p| p.len()).sum::<usize>() <= self.len());
        write_all_at(&self.file, offset as u64, parts)
    }

    /// Marks the segment retired; returns the keys published into it. After this returns no
    /// further key is published into it (see `publish` in the parent module).
    pub fn retire(&self) -> Vec<(Arc<[u8]>, u32)> {
        let mut p = self.published.lock().unwrap_or_else(|e| e.into_inner());
        p.retired = true;
        self.retired.store(true, Ordering::Release);
        std::mem::take(&mut p.keys)
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// Writes the segment's dirty pages back and waits (`msync(MS_SYNC)`). Blocking.
    #[expect(
        clippy::disallowed_methods,
        reason = "only through `DiskCache::flush`, which no worker calls (tests; meant for shutdown)"
    )]
    pub fn flush(&self) -> io::Result<()> {
        self.map.flush()
    }

    /// Address of the mapping, for residency checks.
    pub fn base_ptr(&self) -> *const u8 {
        self.map.as_ptr()
    }
}

/// Reserves the blocks of `file`'s first `size` bytes (and sets its length), so that writes
/// into them cannot run out of space later: `fallocate(2)`, or, on a filesystem without it,
/// zeros written through the file. Either fails with `ENOSPC` when the volume cannot hold
/// `size` bytes.
fn reserve_blocks(file: &File, size: u64) -> io::Result<()> {
    let len =
        libc::off_t::try_from(size).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    loop {
        // SAFETY: `file` is an open descriptor for the whole call; fallocate(2) takes no
        // pointers.
        let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => return zero_fill(file, size),
            _ => return Err(e),
        }
    }
}

/// The fallback of [`reserve_blocks`]: writes zeros over the whole file, 1 MiB at a time.
fn zero_fill(file: &File, size: u64) -> io::Result<()> {
    const CHUNK: usize = 1 << 20;
    let zeros = vec![0u8; CHUNK.min(size as usize)];
    let mut at = 0u64;
    while at < size {
        let n = (size - at).min(zeros.len() as u64) as usize;
        write_all_at(file, at, &[&zeros[..n]])?;
        at += n as u64;
    }
    Ok(())
}

/// Most parts one record write has (header, key, value), with room to spare.
const MAX_PARTS: usize = 4;

/// `pwritev(2)` of `parts` at `offset`, continuing after short writes and `EINTR`. A write
/// that makes no progress (0 bytes) is an error rather than a loop.
fn write_all_at(file: &File, mut offset: u64, parts: &[&[u8]]) -> io::Result<()> {
    assert!(parts.len() <= MAX_PARTS);
    // Where in `parts` the next byte to write is: part index and offset within it.
    let (mut part, mut within) = (0usize, 0usize);
    loop {
        // Skip what is done (and empty parts), so a write of nothing is no syscall.
        while part < parts.len() && parts[part].len() == within {
            part += 1;
            within = 0;
        }
        if part == parts.len() {
            return Ok(());
        }
        let mut iov = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; MAX_PARTS];
        let mut n = 0;
        for (i, p) in parts[part..].iter().enumerate() {
            let skip = if i == 0 { within } else { 0 };
            iov[n] = libc::iovec {
                iov_base: p[skip..].as_ptr() as *mut libc::c_void,
                iov_len: p.len() - skip,
            };
            n += 1;
        }
        let off = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: the first `n` iovecs point into `parts`, which are live, initialised slices
        // borrowed for the whole call; pwritev(2) only reads them. `file` is open.
        let rc = unsafe { libc::pwritev(file.as_raw_fd(), iov.as_ptr(), n as libc::c_int, off) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if rc == 0 {
            return Err(io::Error::from(io::ErrorKind::WriteZero));
        }
        let mut wrote = rc as usize;
        offset += wrote as u64;
        while wrote > 0 {
            let left = parts[part].len() - within;
            if wrote >= left {
                wrote -= left;
                part += 1;
                within = 0;
            } else {
                within += wrote;
                wrote = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_strays_are_rejected() {
        assert_eq!(parse_file_name(&file_name(0x1234)), Some(0x1234));
        assert_eq!(parse_file_name("seg-12.corvid"), None);
        assert_eq!(parse_file_name("seg-000000000000001g.corvid"), None);
        assert_eq!(parse_file_name("notes.txt"), None);
        assert_eq!(parse_file_name(&tmp_file_name(9)), None);
        assert_eq!(parse_tmp_file_name(&tmp_file_name(9)), Some(9));
        assert_eq!(parse_tmp_file_name(&file_name(9)), None);
    }

    #[test]
    fn created_segment_reopens_and_a_foreign_id_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let seg = Segment::create(dir.path(), 7, 4096).unwrap();
        let rec = format::encode(format::Kind::Value, b"k", b"v", 1, 2);
        // SAFETY: fresh segment, range reserved by this test alone.
        unsafe { seg.write(SEGMENT_HEADER_LEN, &[&rec]) }.unwrap();
        let path = seg.path.clone();
        drop(seg);
        let again = Segment::open_existing(&path, 7).unwrap().unwrap();
        let e = format::decode(again.slice(SEGMENT_HEADER_LEN, rec.len()), 4096).unwrap();
        assert_eq!(e.value, b"v");
        assert!(Segment::open_existing(&path, 8).unwrap().is_none());
    }
}

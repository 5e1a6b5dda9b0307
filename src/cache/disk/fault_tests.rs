//! Faults from outside the process: a full volume, a removed directory, a segment truncated or
//! replaced while mapped. Each must be an error the tier recovers from, never a signal (a
//! `SIGBUS` here kills the whole test binary, which is how these fail on a tier that writes
//! into sparse mappings).

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::*;

const FAR: u64 = u64::MAX;

/// The integration tests' tmpfs guard, the same file (one mount/unmount to keep right).
#[path = "../../../tests/it/common/tmpfs.rs"]
mod tmpfs;
use tmpfs::Tmpfs;

fn value(i: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|j| (i as usize).wrapping_mul(31).wrapping_add(j) as u8)
        .collect()
}

/// Every key the cache returns holds exactly what was stored for it.
fn assert_exact(c: &DiskCache, oracle: &HashMap<u32, Vec<u8>>) -> usize {
    let mut found = 0;
    for (k, v) in oracle {
        if let Some(hit) = c.get(format!("k{k}").as_bytes()) {
            assert!(
                hit.is_resident(),
                "k{k}: written values are in the page cache"
            );
            assert!(hit.value[..] == v[..], "k{k} changed");
            found += 1;
        }
    }
    found
}

use std::collections::HashMap;

#[test]
fn a_full_volume_is_an_error_the_tier_recovers_from_by_shrinking() {
    let Some(fs) = Tmpfs::mount("1m") else { return };
    let dir = fs.path().join("disk");
    // 64 segments' capacity on a volume that holds 16.
    let seg = 64 * 1024;
    let (c, _) = DiskCache::open(DiskOptions {
        dir: dir.clone(),
        capacity: 64 * seg,
        segment_size: seg,
    })
    .unwrap();
    let mut oracle = HashMap::new();
    let mut refused_seen = false;
    for i in 0..400u32 {
        let v = value(i, 10_000);
        // Settled after every insert, so whether the spare was made is decided each time.
        let stored = c.insert(format!("k{i}").as_bytes(), &v, FAR).unwrap();
        c.settle();
        refused_seen |= !stored;
        if stored {
            oracle.insert(i, v);
        }
    }
    assert!(refused_seen, "the volume filled up: some write was refused");
    assert!(c.refused_writes() > 0);
    assert!(
        c.admitting(),
        "space came back by reclaiming the oldest segments"
    );
    assert!(
        c.capacity() <= 1 << 20,
        "capacity lowered to what the volume holds"
    );
    assert!(c.disk_bytes() <= c.capacity());
    assert!(c.evictions() > 0);
    let found = assert_exact(&c, &oracle);
    assert!(found > 50, "the tier still caches ({found} entries)");
    // The newest writes are there: the tier kept working to the end.
    assert!(c.get(b"k399").is_some() || c.get(b"k398").is_some());
    // And a reopen finds only intact records.
    drop(c);
    let (c, r) = DiskCache::open(DiskOptions {
        dir,
        capacity: 64 * seg,
        segment_size: seg,
    })
    .unwrap();
    assert_eq!(r.dropped_corrupt + r.dropped_torn, 0, "{r:?}");
    assert_exact(&c, &oracle);
}

#[test]
fn a_removed_directory_refuses_writes_until_it_comes_back() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("disk");
    let seg = 16 * 1024;
    let (c, _) = DiskCache::open(DiskOptions {
        dir: dir.clone(),
        capacity: 8 * seg,
        segment_size: seg,
    })
    .unwrap();
    let mut oracle = HashMap::new();
    for i in 0..3u32 {
        let v = value(i, 3000);
        assert!(c.insert(format!("k{i}").as_bytes(), &v, FAR).unwrap());
        oracle.insert(i, v);
    }
    c.settle();
    std::fs::remove_dir_all(&dir).unwrap();
    let mut refused = 0;
    for i in 3..40u32 {
        let v = value(i, 3000);
        if c.insert(format!("k{i}").as_bytes(), &v, FAR).unwrap() {
            oracle.insert(i, v);
        } else {
            refused += 1;
        }
        c.settle();
    }
    assert!(refused > 0 && !c.admitting(), "refused {refused}");
    assert_eq!(c.refused_writes(), refused);
    // Reads go on; so do removals (a tombstone is small: it still fits in the open segment).
    assert!(assert_exact(&c, &oracle) >= 3);
    c.remove(b"k0");
    assert!(c.get(b"k0").is_none());
    oracle.remove(&0);
    // While the directory is missing, retries fail without ending the outage.
    c.lock_ring().outage.retry_now();
    assert!(!c.insert(b"x", &value(7, 3000), FAR).unwrap());
    c.settle();
    assert!(!c.admitting());
    std::fs::create_dir(&dir).unwrap();
    // The next refused write after `RETRY_AFTER` (made "now" here) asks for a segment again.
    c.lock_ring().outage.retry_now();
    assert!(!c.insert(b"y", &value(8, 3000), FAR).unwrap());
    c.settle();
    assert!(c.admitting(), "writes resume once the directory is back");
    let v = value(9999, 3000);
    for _ in 0..8 {
        assert!(c.insert(b"after", &v, FAR).unwrap());
    }
    assert_eq!(&c.get(b"after").unwrap().value[..], &v[..]);
    assert!(
        !segment_paths(&dir).is_empty(),
        "segments are made in the new directory"
    );
    assert_exact(&c, &oracle);
}

/// A volume already full at start-up: the tier opens, serves what it recovered, refuses writes
/// (no inline attempt per write) and admits once there is room.
#[test]
fn a_volume_full_at_start_up_opens_not_admitting() {
    let Some(fs) = Tmpfs::mount("256k") else {
        return;
    };
    let dir = fs.path().join("disk");
    std::fs::create_dir(&dir).unwrap();
    let filler = fs.path().join("filler");
    let fill = std::fs::write(&filler, vec![1u8; 512 * 1024]);
    assert!(fill.is_err(), "the filler fills the volume");
    let seg = 64 * 1024;
    let (c, _) = DiskCache::open(DiskOptions {
        dir,
        capacity: 4 * seg,
        segment_size: seg,
    })
    .unwrap();
    assert!(!c.admitting());
    assert!(!c.insert(b"k", &value(1, 1000), FAR).unwrap());
    assert_eq!(
        c.inline_rollovers(),
        0,
        "nothing tried on the inserting thread"
    );
    std::fs::remove_file(&filler).unwrap();
    c.lock_ring().outage.retry_now();
    assert!(!c.insert(b"k", &value(1, 1000), FAR).unwrap());
    c.settle();
    assert!(c.admitting());
    assert!(c.insert(b"k", &value(1, 1000), FAR).unwrap());
    assert_eq!(&c.get(b"k").unwrap().value[..], &value(1, 1000)[..]);
}

fn segment_paths(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            segment::parse_file_name(e.file_name().to_str()?).map(|_| e.path())
        })
        .collect()
}

#[test]
fn a_segment_truncated_or_replaced_from_outside_is_never_a_signal() {
    let dir = tempfile::tempdir().unwrap();
    let seg = 64 * 1024;
    let (c, _) = DiskCache::open(DiskOptions {
        dir: dir.path().to_path_buf(),
        capacity: 8 * seg,
        segment_size: seg,
    })
    .unwrap();
    let (early, late) = (value(1, 2000), value(2, 20_000));
    assert!(c.insert(b"early", &early, FAR).unwrap());
    assert!(c.insert(b"late", &late, FAR).unwrap());
    c.settle();
    let active = c.locate(b"late").unwrap();
    // Truncate the active segment from outside: "late" loses its pages.
    let cut = active.value_offset + 100;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&active.path)
        .unwrap()
        .set_len(cut)
        .unwrap();
    // A value whose pages are gone is never resident, so the cache reads it by position
    // instead of touching the mapping, and that read comes back short.
    let hit = c.get(b"late").unwrap();
    assert!(!hit.is_resident(), "pages past the end are never resident");
    let mut buf = vec![0u8; active.record_len as usize];
    let n = active.file.read_at(&mut buf, active.record_offset).unwrap();
    assert!(n < buf.len(), "a short read, an error for the caller");
    drop(hit);
    // A value before the cut is still whole.
    let hit = c.get(b"early").unwrap();
    assert!(hit.is_resident());
    assert_eq!(&hit.value[..], &early[..]);
    // Writing on into the truncated segment is an ordinary write (the file grows again).
    let more = value(3, 20_000);
    assert!(c.insert(b"more", &more, FAR).unwrap());
    let hit = c.get(b"more").unwrap();
    assert!(hit.is_resident());
    assert_eq!(&hit.value[..], &more[..]);
    // Replacing the file from outside: the tier keeps its own (now unlinked) file.
    let other = dir.path().join("replacement");
    std::fs::write(&other, vec![0xAAu8; seg as usize]).unwrap();
    std::fs::rename(&other, &active.path).unwrap();
    assert_eq!(&c.get(b"more").unwrap().value[..], &more[..]);
    assert!(c.insert(b"after", &early, FAR).unwrap());
    assert_eq!(&c.get(b"after").unwrap().value[..], &early[..]);
}

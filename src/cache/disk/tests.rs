//! Tests over real files in temporary directories.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use super::*;

const FAR: u64 = u64::MAX;
const PAST: u64 = 1;

fn opts(dir: &Path, segment_size: u64, segments: u64) -> DiskOptions {
    DiskOptions {
        dir: dir.to_path_buf(),
        capacity: segment_size * segments,
        segment_size,
    }
}

fn open(o: &DiskOptions) -> (DiskCache, RecoveryReport) {
    DiskCache::open(o.clone()).expect("open")
}

/// splitmix64: a seeded generator so failures reproduce without an RNG dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

fn segment_files(dir: &Path) -> Vec<(u64, std::path::PathBuf)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            let id = segment::parse_file_name(e.file_name().to_str()?)?;
            Some((id, e.path()))
        })
        .collect();
    v.sort();
    v
}

#[test]
fn is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<DiskCache>();
    check::<DiskHit>();
}

#[test]
fn options_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    assert!(DiskCache::open(opts(dir.path(), 4095, 4)).is_err());
    assert!(DiskCache::open(opts(dir.path(), 4096, 1)).is_err());
    assert!(DiskCache::open(opts(dir.path(), 4096, 2)).is_ok());
}

#[test]
fn round_trip_replace_remove() {
    let dir = tempfile::tempdir().unwrap();
    let (c, r) = open(&opts(dir.path(), 1 << 16, 8));
    assert_eq!(r.entries, 0);
    assert!(c.get(b"a").is_none());
    assert!(c.insert(b"a", b"one", FAR).unwrap());
    let hit = c.get(b"a").unwrap();
    assert_eq!(&hit.value[..], b"one");
    assert_eq!(hit.expires_at_ms, FAR);
    assert!(hit.written_at_ms > 0);
    assert!(c.insert(b"a", b"two!", FAR).unwrap());
    assert_eq!(&c.get(b"a").unwrap().value[..], b"two!");
    // The first hit still reads its own (older) value: published bytes never change.
    assert_eq!(&hit.value[..], b"one");
    assert_eq!(c.len(), 1);
    assert_eq!(c.bytes(), format::padded_len(1, 4) as u64);
    assert!(c.insert(b"empty", b"", FAR).unwrap());
    assert_eq!(&c.get(b"empty").unwrap().value[..], b"");
    assert_eq!(
        c.remove(b"a"),
        RemovalStats {
            entries: 1,
            bytes: format::padded_len(1, 4) as u64
        }
    );
    assert_eq!(c.remove(b"a"), RemovalStats::default());
    assert!(c.get(b"a").is_none());
    assert_eq!(c.len(), 1);
    // Too large for a segment: refused, not an error.
    assert!(!c.insert(b"big", &vec![0u8; 1 << 16], FAR).unwrap());
    assert!(c.get(b"big").is_none());
}

#[test]
fn expiry_and_set_expiry_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path(), 1 << 16, 8);
    {
        let (c, _) = open(&o);
        c.insert(b"stale", b"v", PAST).unwrap();
        c.insert(b"refreshed", b"w", PAST).unwrap();
        c.insert(b"shortened", b"x", FAR).unwrap();
        assert!(c.get(b"stale").is_none());
        assert_eq!(&c.get_stale(b"stale").unwrap().value[..], b"v");
        assert!(c.locate(b"stale").is_none());
        assert!(c.set_expiry(b"refreshed", FAR));
        assert_eq!(c.get(b"refreshed").unwrap().expires_at_ms, FAR);
        assert!(c.set_expiry(b"shortened", PAST));
        assert!(c.get(b"shortened").is_none());
        assert!(!c.set_expiry(b"absent", FAR));
    }
    let (c, r) = open(&o);
    assert_eq!(r.dropped_expired, 2, "{r:?}");
    assert_eq!(r.entries, 1);
    assert!(c.get_stale(b"stale").is_none());
    assert!(c.get(b"shortened").is_none());
    let hit = c.get(b"refreshed").unwrap();
    assert_eq!((&hit.value[..], hit.expires_at_ms), (&b"w"[..], FAR));
}

/// A revalidation's stamp (the cache's age origin) moves with the expiry and survives a
/// reopen; an expiry-only touch (a soft purge) keeps the stamp.
#[test]
fn stamps_move_with_the_expiry_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path(), 1 << 16, 8);
    {
        let (c, _) = open(&o);
        c.insert(b"k", b"v", PAST).unwrap();
        assert_eq!(c.get_stale(b"k").unwrap().stamp_ms, 0, "never stamped");
        assert!(c.set_times(b"k", FAR, Some(1_234)));
        assert!(c.set_expiry(b"k", FAR - 1));
        let hit = c.get(b"k").unwrap();
        assert_eq!((hit.expires_at_ms, hit.stamp_ms), (FAR - 1, 1_234));
    }
    let (c, _) = open(&o);
    let hit = c.get(b"k").unwrap();
    assert_eq!((hit.expires_at_ms, hit.stamp_ms), (FAR - 1, 1_234));
}

#[test]
fn a_touch_never_extends_another_version() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path(), 1 << 16, 8);
    {
        let (c, _) = open(&o);
        c.insert(b"k", b"old", PAST).unwrap();
        assert!(c.set_expiry(b"k", FAR));
        c.insert(b"k", b"new", PAST).unwrap();
    }
    let (c, r) = open(&o);
    assert!(c.get(b"k").is_none(), "{r:?}");
}

#[test]
fn reclaims_the_oldest_segment_at_capacity() {
    let dir = tempfile::tempdir().unwrap();
    let seg = 1u64 << 16;
    let o = opts(dir.path(), seg, 4);
    let (c, _) = open(&o);
    let value = vec![7u8; 1000];
    let n = 1000u32; // ~1 MB through a 256 KiB cache
    for i in 0..n {
        assert!(c.insert(format!("k{i}").as_bytes(), &value, FAR).unwrap());
        assert!(c.disk_bytes() <= c.capacity());
    }
    let first = segment_files(dir.path())[0].0;
    assert!(first > 1, "segment 1 was reclaimed");
    assert!(c.get(b"k0").is_none());
    assert!(c.get(format!("k{}", n - 1).as_bytes()).is_some());
    assert!(c.evictions() > 0);
    assert!(c.bytes() <= c.capacity());
    // Four segments, and the spare made ahead of the next roll-over (not counted in capacity:
    // it holds only its header).
    assert!(segment_files(dir.path()).len() <= 4 + 1);
    let live = (0..n)
        .filter(|i| c.get(format!("k{i}").as_bytes()).is_some())
        .count() as u64;
    assert_eq!(live, c.len());
    assert_eq!(live + c.evictions(), u64::from(n));
    // Survivors are a suffix: FIFO.
    let oldest_live = (0..n)
        .find(|i| c.get(format!("k{i}").as_bytes()).is_some())
        .unwrap();
    assert!((oldest_live..n).all(|i| c.get(format!("k{i}").as_bytes()).is_some()));
}

#[test]
fn a_held_value_outlives_reclaim_of_its_segment() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path(), 1 << 14, 2);
    let (c, _) = open(&o);
    c.insert(b"held", &[9u8; 3000], FAR).unwrap();
    let hit = c.get(b"held").unwrap();
    let loc = c.locate(b"held").unwrap();
    for i in 0..100 {
        c.insert(format!("f{i}").as_bytes(), &[1u8; 3000], FAR)
            .unwrap();
    }
    assert!(c.get(b"held").is_none());
    assert!(!loc.path.exists());
    assert!(hit.value.iter().all(|&b| b == 9));
    // The open file still reads after the unlink.
    let mut rec = vec![0u8; loc.record_len as usize];
    loc.file.read_exact_at(&mut rec, loc.record_offset).unwrap();
    let range = loc.verify(b"held", &rec).unwrap();
    assert_eq!(&rec[range], &hit.value[..]);
}

#[test]
fn locate_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _) = open(&opts(dir.path(), 1 << 16, 4));
    c.insert(b"k", b"some value", FAR).unwrap();
    let loc = c.locate(b"k").unwrap();
    let f = File::open(&loc.path).unwrap();
    let mut v = vec![0u8; loc.value_len as usize];
    f.read_exact_at(&mut v, loc.value_offset).unwrap();
    assert_eq!(v, b"some value");
    let mut rec = vec![0u8; loc.record_len as usize];
    f.read_exact_at(&mut rec, loc.record_offset).unwrap();
    let r = loc.verify(b"k", &rec).unwrap();
    assert_eq!(&rec[r], b"some value");
    assert_eq!(loc.verify(b"other", &rec), Err(VerifyError::Mismatch));
    for i in 0..rec.len() {
        let mut bad = rec.clone();
        bad[i] ^= 0x01;
        assert!(loc.verify(b"k", &bad).is_err(), "flip at {i}");
    }
    assert!(loc.verify(b"k", &rec[..rec.len() - 1]).is_err());
}

#[test]
fn freshly_written_values_are_resident() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _) = open(&opts(dir.path(), 1 << 22, 4));
    c.insert(b"big", &vec![3u8; 1 << 20], FAR).unwrap();
    c.insert(b"small", b"x", FAR).unwrap();
    assert!(c.get(b"big").unwrap().is_resident());
    assert!(c.get(b"small").unwrap().is_resident());
}

#[test]
fn reopen_rebuilds_identical_index() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path(), 1 << 15, 64);
    let mut rng = Rng(7);
    let keys: Vec<Vec<u8>> = (0..300).map(|i| format!("b/{i}").into_bytes()).collect();
    let (len, bytes, snapshot) = {
        let (c, _) = open(&o);
        for _ in 0..1500 {
            let k = &keys[rng.below(300) as usize];
            match rng.below(10) {
                0 => {
                    c.remove(k);
                }
                1 => {
                    c.set_expiry(k, 1 << 50);
                }
                _ => {
                    let n = rng.below(2000) as usize;
                    let v = rng.bytes(n);
                    c.insert(k, &v, FAR).unwrap();
                }
            }
        }
        assert_eq!(c.evictions(), 0, "test expects no reclaim");
        let snap: Vec<_> = keys
            .iter()
            .map(|k| {
                c.get(k)
                    .map(|h| (h.value, h.expires_at_ms, h.written_at_ms))
            })
            .collect();
        (c.len(), c.bytes(), snap)
    };
    let (c, r) = open(&o);
    assert_eq!((r.dropped_corrupt, r.dropped_torn), (0, 0));
    assert_eq!((c.len(), c.bytes()), (len, bytes));
    assert_eq!((r.entries, r.bytes), (len, bytes));
    for (k, want) in keys.iter().zip(&snapshot) {
        let got = c
            .get(k)
            .map(|h| (h.value, h.expires_at_ms, h.written_at_ms));
        assert_eq!(&got, want);
    }
}

#[test]
fn remove_if_and_clear_are_durable() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path(), 1 << 16, 8);
    {
        let (c, _) = open(&o);
        for i in 0..50 {
            c.insert(format!("a/{i}").as_bytes(), b"x", FAR).unwrap();
            c.insert(format!("b/{i}").as_bytes(), b"y", FAR).unwrap();
        }
        let s = c.remove_if(|k| k.starts_with(b"a/"));
        assert_eq!(s.entries, 50);
        assert_eq!(c.len(), 50);
    }
    {
        let (c, r) = open(&o);
        assert_eq!(r.entries, 50);
        assert!(c.get(b"a/3").is_none());
        assert!(c.get(b"b/3").is_some());
        let s = c.clear();
        assert_eq!(s.entries, 50);
        assert_eq!((c.len(), c.bytes(), c.disk_bytes()), (0, 0, 0));
        // Every segment that held data is gone; only the empty spare is left.
        let spare = c.lock_ring().spare.as_ref().map(|s| s.id);
        let left: Vec<u64> = segment_files(dir.path()).iter().map(|f| f.0).collect();
        assert_eq!(left, spare.into_iter().collect::<Vec<_>>());
        // Usable after clear.
        c.insert(b"after", b"z", FAR).unwrap();
    }
    let (c, r) = open(&o);
    assert_eq!(r.entries, 1);
    assert!(c.get(b"b/3").is_none());
    assert_eq!(&c.get(b"after").unwrap().value[..], b"z");
}

#[test]
fn stray_files_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path(), 1 << 16, 8);
    std::fs::write(dir.path().join("README"), b"hello").unwrap();
    std::fs::write(dir.path().join(segment::file_name(3)), vec![0xAB; 5000]).unwrap();
    std::fs::write(dir.path().join(segment::file_name(4)), b"").unwrap();
    std::fs::create_dir(dir.path().join(segment::file_name(5))).unwrap();
    {
        let (c, r) = open(&o);
        assert_eq!(r.ignored_files, 4, "{r:?}");
        assert_eq!(r.segments, 0);
        c.insert(b"k", b"v", FAR).unwrap();
        // New segments never reuse a stray's name.
        assert_eq!(c.locate(b"k").unwrap().segment_id, 6);
    }
    let (c, _) = open(&o);
    assert_eq!(&c.get(b"k").unwrap().value[..], b"v");
    assert_eq!(std::fs::read(dir.path().join("README")).unwrap(), b"hello");
}

/// Model-based test (after foyer's `storage_fuzzy_test`): random operations checked against a
/// `HashMap` oracle, with the cache closed and reopened between rounds. An entry may be missing
/// only if the segment it was written to has been reclaimed.
#[test]
fn oracle_fuzz_with_reopens() {
    struct Model {
        value: Vec<u8>,
        expires_at_ms: u64,
        segment: u64,
    }
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path(), 1 << 16, 6);
    let mut rng = Rng(0x00C0_FFEE);
    let mut oracle: HashMap<Vec<u8>, Model> = HashMap::new();
    let (mut lost, mut checked) = (0u64, 0u64);
    let exists = |seg: u64| dir.path().join(segment::file_name(seg)).exists();
    let mut full_check = |c: &DiskCache, oracle: &HashMap<Vec<u8>, Model>, when: &str| {
        for (k, m) in oracle {
            checked += 1;
            match c.get(k) {
                Some(hit) => {
                    assert_ne!(m.expires_at_ms, PAST, "{when}");
                    assert_eq!(hit.value, m.value, "{when}");
                    assert_eq!(hit.expires_at_ms, m.expires_at_ms, "{when}");
                }
                None if m.expires_at_ms != PAST => {
                    assert!(!exists(m.segment), "{when}: lost {k:?} without reclaim");
                    lost += 1;
                }
                None => {}
            }
        }
    };
    for round in 0..40 {
        let (c, r) = open(&o);
        assert_eq!(
            (r.dropped_corrupt, r.dropped_torn),
            (0, 0),
            "round {round}: {r:?}"
        );
        full_check(&c, &oracle, &format!("round {round}, after reopen"));
        for _ in 0..250 {
            let key = format!("bucket/{}", rng.below(150)).into_bytes();
            match rng.below(12) {
                0 => {
                    let was = c.remove(&key).entries == 1;
                    if let Some(m) = oracle.remove(&key) {
                        assert!(was || !exists(m.segment) || m.expires_at_ms == PAST);
                    } else {
                        assert!(!was);
                    }
                }
                1 => {
                    let exp = if rng.below(4) == 0 {
                        PAST
                    } else {
                        FAR - rng.below(1000)
                    };
                    if c.set_expiry(&key, exp) {
                        oracle
                            .get_mut(&key)
                            .expect("set_expiry on a key never stored")
                            .expires_at_ms = exp;
                    } else if let Some(m) = oracle.remove(&key) {
                        assert!(!exists(m.segment) || m.expires_at_ms == PAST);
                    }
                }
                2 => {
                    let n = c.remove_if(|k| k.ends_with(b"7")).entries;
                    let before = oracle.len();
                    oracle.retain(|k, _| !k.ends_with(b"7"));
                    assert!(n as usize <= before - oracle.len());
                }
                _ => {
                    let len = match rng.below(10) {
                        0 => rng.below(30_000),
                        _ => rng.below(4000),
                    } as usize;
                    let value = rng.bytes(len);
                    let exp = if rng.below(8) == 0 { PAST } else { FAR };
                    assert!(c.insert(&key, &value, exp).unwrap());
                    let segment = c
                        .index
                        .read(&key)
                        .get(&key[..])
                        .expect("just inserted")
                        .segment
                        .id;
                    oracle.insert(
                        key.clone(),
                        Model {
                            value,
                            expires_at_ms: exp,
                            segment,
                        },
                    );
                }
            }
            if let Some(hit) = c.get(&key) {
                let m = oracle.get(&key).expect("served a removed key");
                assert_eq!(hit.value, m.value);
                assert_eq!(hit.expires_at_ms, m.expires_at_ms);
            }
        }
        assert!(c.disk_bytes() <= c.capacity());
        full_check(&c, &oracle, &format!("round {round}, before close"));
    }
    eprintln!(
        "oracle fuzz: {checked} oracle lookups, {lost} of them found the entry lost to reclaim"
    );
    assert!(lost > 0, "the test should exercise reclaim");
}

/// Damage a copy of a populated directory in random ways, reopen, and check that everything
/// served is a value that was stored for that key.
#[test]
fn crash_and_corruption_never_serve_wrong_values() {
    let pristine = tempfile::tempdir().unwrap();
    let seg = 1u64 << 15;
    let o = opts(pristine.path(), seg, 256);
    let mut rng = Rng(42);
    let mut history: HashMap<Vec<u8>, HashSet<Vec<u8>>> = HashMap::new();
    {
        let (c, _) = open(&o);
        for i in 0..1500u32 {
            let key = format!("obj/{}", rng.below(400)).into_bytes();
            if i % 17 == 0 {
                c.remove(&key);
                continue;
            }
            if i % 13 == 0 {
                c.set_expiry(&key, FAR - 1);
                continue;
            }
            let n = rng.below(3000) as usize;
            let value = rng.bytes(n);
            c.insert(&key, &value, FAR).unwrap();
            history.entry(key).or_default().insert(value);
        }
        assert_eq!(c.evictions(), 0);
    }
    let files = segment_files(pristine.path());
    assert!(files.len() > 8);
    let mut totals = RecoveryReport::default();
    let mut served = 0u64;
    let iterations = 60;
    for it in 0..iterations {
        let work = tempfile::tempdir().unwrap();
        for (_, p) in &files {
            std::fs::copy(p, work.path().join(p.file_name().unwrap())).unwrap();
        }
        let segs = segment_files(work.path());
        // Torn tail: truncate the last segment somewhere in its written part. (The very last
        // file is the empty spare the cache had ready; the last one written to is before it.)
        if rng.below(2) == 0 {
            let (_, last) = segs
                .iter()
                .rev()
                .find(|(_, p)| {
                    std::fs::read(p).unwrap()[format::SEGMENT_HEADER_LEN..]
                        .iter()
                        .any(|&b| b != 0)
                })
                .unwrap();
            let used = std::fs::read(last)
                .unwrap()
                .iter()
                .rposition(|&b| b != 0)
                .unwrap();
            let at = rng.below(used as u64 + 1);
            File::options()
                .write(true)
                .open(last)
                .unwrap()
                .set_len(at)
                .unwrap();
        }
        // Bit flips: anywhere in random segments, and aimed at record headers.
        for _ in 0..rng.below(12) {
            let (_, p) = &segs[rng.below(segs.len() as u64) as usize];
            let mut b = std::fs::read(p).unwrap();
            if b.is_empty() {
                continue;
            }
            let used = b.iter().rposition(|&x| x != 0).unwrap_or(0) + 1;
            let at = if rng.below(3) == 0 {
                // Near the start of the file: segment header and the first records' headers.
                rng.below(b.len().min(200) as u64) as usize
            } else {
                rng.below(used as u64) as usize
            };
            b[at] ^= 1 << rng.below(8);
            std::fs::write(p, b).unwrap();
        }
        // Garbage files, some with segment names.
        for g in 0..rng.below(3) {
            let n = rng.below(5000) as usize;
            let junk = rng.bytes(n);
            let name = if g % 2 == 0 {
                segment::file_name(1000 + rng.below(5))
            } else {
                format!("junk-{g}")
            };
            std::fs::write(work.path().join(name), junk).unwrap();
        }
        // A garbage file that copies a valid segment header under a different name/id.
        if rng.below(4) == 0 {
            let b = std::fs::read(&segs[0].1).unwrap();
            std::fs::write(work.path().join(segment::file_name(2000)), b).unwrap();
        }
        let (c, r) = DiskCache::open(DiskOptions {
            dir: work.path().to_path_buf(),
            ..o.clone()
        })
        .unwrap();
        for (k, values) in &history {
            if let Some(hit) = c.get(k) {
                served += 1;
                assert!(
                    values.contains(&hit.value[..]),
                    "iteration {it}: wrong value for {k:?}"
                );
            }
        }
        // The damaged cache keeps working and survives another reopen.
        c.insert(b"after/crash", b"fine", FAR).unwrap();
        drop(c);
        let (c, r2) = DiskCache::open(DiskOptions {
            dir: work.path().to_path_buf(),
            ..o.clone()
        })
        .unwrap();
        assert_eq!(&c.get(b"after/crash").unwrap().value[..], b"fine");
        assert_eq!(r2.entries, r.entries + 1);
        totals.dropped_corrupt += r.dropped_corrupt;
        totals.dropped_torn += r.dropped_torn;
        totals.entries += r.entries;
        totals.ignored_files += r.ignored_files;
    }
    eprintln!(
        "crash test: {iterations} damaged copies; served {served} values, all correct; \
         dropped {} corrupt, {} torn; {} stray files ignored; {} entries recovered in total",
        totals.dropped_corrupt, totals.dropped_torn, totals.ignored_files, totals.entries
    );
    assert!(totals.dropped_corrupt > 0 && totals.dropped_torn > 0);
}

/// Several threads insert and read the same keys at once, with small segments so rollover and
/// reclaim happen under contention. Every value read must be one some thread wrote for that key.
#[test]
fn concurrent_inserts_and_gets() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _) = open(&opts(dir.path(), 1 << 16, 4));
    let c = Arc::new(c);
    // A value is self-describing: key, writer, sequence, then a filler derived from them.
    fn value_for(key: &[u8], writer: u8, seq: u32, len: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(len + key.len() + 5);
        v.extend_from_slice(key);
        v.push(writer);
        v.extend_from_slice(&seq.to_le_bytes());
        let mut x = u64::from(seq) << 8 | u64::from(writer);
        while v.len() < key.len() + 5 + len {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            v.push((x >> 33) as u8);
        }
        v
    }
    let threads: Vec<_> = (0..4u8)
        .map(|w| {
            let c = c.clone();
            std::thread::spawn(move || {
                let mut rng = Rng(u64::from(w) + 100);
                let mut reads = 0u64;
                for seq in 0..4000u32 {
                    let key = format!("k{}", rng.below(64)).into_bytes();
                    if rng.below(2) == 0 {
                        let v = value_for(&key, w, seq, rng.below(2000) as usize);
                        c.insert(&key, &v, FAR).unwrap();
                    } else if let Some(hit) = c.get(&key) {
                        let v = &hit.value;
                        assert!(v.starts_with(&key));
                        let writer = v[key.len()];
                        let s =
                            u32::from_le_bytes(v[key.len() + 1..key.len() + 5].try_into().unwrap());
                        let expect = value_for(&key, writer, s, v.len() - key.len() - 5);
                        assert_eq!(&v[..], &expect[..], "torn or foreign value");
                        reads += 1;
                    }
                    if seq % 500 == 0 {
                        c.remove(&key);
                    }
                }
                reads
            })
        })
        .collect();
    let reads: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(reads > 1000);
    assert!(c.evictions() > 0);
    assert!(c.disk_bytes() <= c.capacity());
    let live = (0..64)
        .filter(|i| c.get(format!("k{i}").as_bytes()).is_some())
        .count() as u64;
    assert_eq!(live, c.len());
}

/// Ids of the sealed, active and spare segments, in that order.
fn ring_ids(c: &DiskCache) -> Vec<u64> {
    let r = c.lock_ring();
    r.sealed
        .iter()
        .chain(&r.active)
        .chain(&r.spare)
        .map(|s| s.id)
        .collect()
}

/// Roll-overs install the segment the segment thread made ahead of time: none is created on
/// the inserting thread while the thread keeps up, and ids stay in write order.
#[test]
fn rollovers_take_the_prepared_spare() {
    let dir = tempfile::tempdir().unwrap();
    let (c, _) = open(&opts(dir.path(), 1 << 14, 4));
    assert!(
        c.lock_ring().spare.is_some(),
        "open prepares the first spare"
    );
    let mut created = 0;
    for i in 0..200u32 {
        c.insert(format!("k{i}").as_bytes(), &[3u8; 3000], FAR)
            .unwrap();
        if c.segments_created() != created {
            created = c.segments_created();
            // A worker does not wait; the test does, so that the spare is there in time.
            c.settle();
            assert!(c.lock_ring().spare.is_some());
        }
    }
    assert!(created >= 30, "{created} roll-overs");
    assert_eq!(c.inline_rollovers(), 0);
    let ids = ring_ids(&c);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert!(c.evictions() > 0);
    assert!(c.get(b"k199").is_some());
}

/// A spare that arrives after its roll-over had to create a segment inline would be older than
/// the active segment: it is deleted on arrival, and everything stays readable and recoverable.
#[test]
fn a_late_spare_is_discarded_and_ids_stay_in_write_order() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path(), 1 << 14, 8);
    let (c, _) = open(&o);
    c.insert(b"first", &[1u8; 3000], FAR).unwrap();
    c.settle();
    // Pretend the next spare is still being made: take it back and mark its id pending.
    let late = {
        let mut r = c.lock_ring();
        let spare = r.spare.take().expect("spare ready after settle");
        let id = spare.id;
        rollover::remove(&spare);
        drop(spare);
        r.spare_pending = Some(id);
        id
    };
    for i in 0..5u32 {
        c.insert(format!("k{i}").as_bytes(), &[2u8; 3000], FAR)
            .unwrap();
    }
    assert_eq!(c.inline_rollovers(), 1, "the roll-over could not wait");
    // Now the late spare arrives.
    rollover::prepare(dir.path(), 1 << 14, &c.ring, late);
    assert!(!dir.path().join(segment::file_name(late)).exists());
    c.settle();
    let ids = ring_ids(&c);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert!(ids.iter().all(|&id| id != late), "{ids:?}");
    drop(c);
    let (c, r) = open(&o);
    assert_eq!(r.entries, 6, "{r:?}");
    assert_eq!(&c.get(b"first").unwrap().value[..], &[1u8; 3000][..]);
    assert!(c.get(b"k4").is_some());
}

/// A crash leaves the spare (a valid, empty segment) on disk, maybe a half-made one (`.tmp`)
/// and a torn last record: reopening removes the first two, drops the torn record, and serves
/// everything else exactly as stored; the cache then goes on and survives a clean reopen.
#[test]
fn a_crash_with_a_spare_ready_reopens_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path(), 1 << 14, 16);
    let mut rng = Rng(5);
    let mut stored = Vec::new();
    let (mut c, _) = open(&o);
    for i in 0..40u32 {
        let key = format!("k{i}").into_bytes();
        let len = 1000 + rng.below(2000) as usize;
        let v = rng.bytes(len);
        c.insert(&key, &v, FAR).unwrap();
        stored.push((key, v));
    }
    c.settle();
    let spare = c.lock_ring().spare.as_ref().unwrap().path.clone();
    assert!(spare.exists());
    let (torn_key, _) = stored.pop().unwrap();
    let loc = c.locate(&torn_key).unwrap();
    // The crash: no destructor runs (the segment thread and the mappings leak with it); the
    // directory's lock goes with the process, as the kernel releases it when one dies.
    c._lock = File::open("/dev/null").unwrap();
    std::mem::forget(c);
    // A spare was being created at that moment...
    std::fs::write(dir.path().join(segment::tmp_file_name(1000)), [0u8; 100]).unwrap();
    // ...and the last record was cut half-way.
    File::options()
        .write(true)
        .open(&loc.path)
        .unwrap()
        .set_len(loc.record_offset + loc.record_len / 2)
        .unwrap();

    let (c, r) = open(&o);
    assert_eq!(r.removed_empty, 2, "the spare and the .tmp: {r:?}");
    assert_eq!((r.dropped_torn, r.dropped_corrupt), (1, 0), "{r:?}");
    assert_eq!(r.entries, stored.len() as u64);
    assert!(!spare.exists());
    assert!(!dir.path().join(segment::tmp_file_name(1000)).exists());
    for (k, v) in &stored {
        assert_eq!(&c.get(k).unwrap().value[..], &v[..]);
    }
    assert!(c.get(&torn_key).is_none());
    // New segments never reuse a removed file's id.
    assert!(c.lock_ring().spare.as_ref().unwrap().id > 1000);

    c.insert(b"after", b"crash", FAR).unwrap();
    drop(c);
    let (c, r) = open(&o);
    assert_eq!(r.removed_empty, 1, "the second run's spare: {r:?}");
    assert_eq!(r.entries, stored.len() as u64 + 1);
    assert_eq!(&c.get(b"after").unwrap().value[..], b"crash");
    assert_eq!(&c.get(&stored[0].0).unwrap().value[..], &stored[0].1[..]);
}

#[test]
fn a_second_open_of_the_same_directory_is_refused_until_the_first_closes() {
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path(), 1 << 14, 16);
    let (c, _) = open(&o);
    let e = DiskCache::open(o.clone())
        .err()
        .expect("the directory is locked");
    assert!(e.to_string().contains("in use by another process"), "{e}");
    drop(c);
    let (again, report) = open(&o);
    assert_eq!(report.ignored_files, 0, "the lock file is not a stray file");
    drop(again);
}

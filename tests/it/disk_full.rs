//! A disk that cannot take more bytes, under load: a volume smaller than `capacity` (a real,
//! small tmpfs) and the cache directory removed while corvid runs. Every answer must be
//! byte-exact, corvid must stay up, and the condition must be logged once when it starts and
//! once when it ends — not once per request. (Before segments reserved their blocks, the full
//! tmpfs killed corvid with SIGBUS; the removed directory logged a warning per request.)

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::common::http::{self, Conn};
use crate::common::*;

const STARTS: &str = "not admitting writes";
const ENDS: &str = "admitting writes again";

fn config(port: u16, origin: &Origin, dir: &Path, capacity: &str, segment: &str) -> String {
    format!(
        "{}{}\n[cache.memory]\ncapacity = 0\n\n[cache.disk]\ndir = {}\ncapacity = \"{capacity}\"\nsegment_size = \"{segment}\"\n",
        server_toml(port),
        bucket_toml("dsk", "/dsk", origin),
        toml_str(&dir.to_string_lossy()),
    )
}

/// `threads` clients on keep-alive connections, each fetching every object `passes` times
/// (each in its own order) and comparing every body with the origin's bytes. Returns the
/// failures (a cut connection, a wrong status, a byte that differs).
fn load(
    addr: SocketAddr,
    objects: &Arc<Vec<(String, Vec<u8>)>>,
    threads: usize,
    passes: usize,
) -> Vec<String> {
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let objects = Arc::clone(objects);
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                let mut conn = Conn::connect(addr);
                conn.set_timeout(Duration::from_secs(30));
                let n = objects.len();
                for pass in 0..passes {
                    for i in 0..n {
                        // Threads and passes walk the objects in different orders.
                        let (k, body) = &objects[(i * (2 * t + 1) + pass * 7 + t) % n];
                        let r = conn.request("GET", &format!("/dsk/{k}"), &[]);
                        if r.status != 200 || r.body != *body {
                            failures.push(format!(
                                "{k}: status {}, {} of {} bytes, x-cache {:?}",
                                r.status,
                                r.body.len(),
                                body.len(),
                                r.header("x-cache")
                            ));
                        }
                        if r.connection_close() {
                            conn = Conn::connect(addr);
                            conn.set_timeout(Duration::from_secs(30));
                        }
                    }
                }
                failures
            })
        })
        .collect();
    workers
        .into_iter()
        .flat_map(|w| {
            w.join()
                .unwrap_or_else(|_| vec!["a client panicked".into()])
        })
        .collect()
}

fn lines(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

fn metric(addr: SocketAddr, name: &str) -> Option<u64> {
    let text = http::get(addr, "/metrics", &[]).text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Lines that would repeat per request if a disk failure were logged per request.
fn per_request_lines(log: &str) -> usize {
    lines(log, "write failed") + lines(log, "could not prepare") + lines(log, "could not persist")
}

#[test]
fn a_volume_smaller_than_capacity_shrinks_the_tier_instead_of_killing_corvid() {
    let Some(fs) = Tmpfs::mount("24m") else {
        return;
    };
    let origin = Origin::start();
    origin.create_bucket("dsk");
    // 48 MiB of objects through a 24 MiB volume, with a 1 GiB capacity.
    let objects: Arc<Vec<(String, Vec<u8>)>> = Arc::new(
        (0..48)
            .map(|i| (format!("big-{i}"), pattern_bytes(1 << 20, i as u64 + 11)))
            .collect(),
    );
    for (k, b) in objects.iter() {
        origin.put("dsk", k, b);
    }
    let dir = fs.path().join("cache");
    let cfg = config(free_port(), &origin, &dir, "1GiB", "4MiB");

    let checked = check(&cfg);
    assert!(checked.status.success(), "{}", checked.stderr);
    assert!(
        checked.stderr.contains("exceeds what the volume"),
        "corvid check warns: {}",
        checked.stderr
    );

    let mut corvid = Corvid::start(&cfg);
    let addr = corvid.addr();
    let failures = load(addr, &objects, 4, 2);
    assert!(corvid.is_running(), "corvid died: {}", corvid.stderr());
    assert!(failures.is_empty(), "{failures:#?}");

    let log = corvid.stderr();
    assert!(log.contains("exceeds what the volume"), "start-up warns");
    let (starts, ends) = (lines(&log, STARTS), lines(&log, ENDS));
    eprintln!("full volume: {starts} outage(s) began, {ends} ended, over 400 requests");
    assert!(starts >= 1, "the volume filled up: {log}");
    assert!(ends >= 1, "the tier reclaimed its way back: {log}");
    assert!(
        starts - ends <= 1 && starts <= 8,
        "logged per change of state, not per request: {log}"
    );
    assert_eq!(per_request_lines(&log), 0, "{log}");

    // The tier still caches: a new object is stored on disk and served from it.
    origin.put("dsk", "after", &pattern_bytes(300_000, 5));
    assert!(
        wait_until(Duration::from_secs(10), || {
            metric(addr, "corvid_cache_disk_not_admitting") == Some(0)
        }),
        "admitting again"
    );
    assert_eq!(
        http::get(addr, "/dsk/after", &[]).header("x-cache"),
        Some("MISS")
    );
    let r = http::get(addr, "/dsk/after", &[]);
    assert_eq!(r.header("x-cache-layer"), Some("disk"));
    assert!(r.body == pattern_bytes(300_000, 5));
    // Stop corvid before the mount goes (the guard is dropped after it).
    assert_eq!(
        corvid
            .terminate(Duration::from_secs(10))
            .and_then(|s| s.code()),
        Some(0)
    );
}

#[test]
fn a_removed_disk_directory_under_load_is_logged_once_and_writes_resume_when_it_returns() {
    let origin = Origin::start();
    origin.create_bucket("dsk");
    let objects: Arc<Vec<(String, Vec<u8>)>> = Arc::new(
        (0..60)
            .map(|i| {
                let b = pattern_bytes(50_000 + i * 997, i as u64 + 3);
                (format!("obj-{i}"), b)
            })
            .collect(),
    );
    for (k, b) in objects.iter() {
        origin.put("dsk", k, b);
    }
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("cache");
    let mut corvid = Corvid::start(&config(free_port(), &origin, &dir, "8MiB", "1MiB"));
    let addr = corvid.addr();
    let first: Arc<Vec<_>> = Arc::new(objects[..20].to_vec());
    assert!(load(addr, &first, 1, 1).is_empty());

    // Remove the directory while four clients are busy.
    let clients = {
        let objects = Arc::clone(&objects);
        std::thread::spawn(move || load(addr, &objects, 4, 3))
    };
    let before = origin.count("GET");
    assert!(wait_until(Duration::from_secs(20), || origin.count("GET")
        >= before + 10));
    std::fs::remove_dir_all(&dir).unwrap();
    let failures = clients.join().unwrap();
    assert!(corvid.is_running(), "corvid died: {}", corvid.stderr());
    assert!(failures.is_empty(), "{failures:#?}");

    let log = corvid.stderr();
    assert_eq!(lines(&log, STARTS), 1, "{log}");
    assert_eq!(lines(&log, ENDS), 0, "{log}");
    assert_eq!(per_request_lines(&log), 0, "{log}");
    assert_eq!(metric(addr, "corvid_cache_disk_not_admitting"), Some(1));
    assert!(metric(addr, "corvid_cache_disk_refused_writes_total").unwrap() > 0);

    // The directory comes back: a refused write retries (at most once a second) and the tier
    // admits again. New misses drive the retries (large enough not to fit in what is left of
    // the segment being written, which small ones still go into).
    std::fs::create_dir(&dir).unwrap();
    let mut i = 0;
    let big = pattern_bytes(400_000, 77);
    assert!(
        wait_until(Duration::from_secs(15), || {
            i += 1;
            origin.put("dsk", &format!("new-{i}"), &big);
            http::get(addr, &format!("/dsk/new-{i}"), &[]);
            metric(addr, "corvid_cache_disk_not_admitting") == Some(0)
        }),
        "writes resume: {}",
        corvid.stderr()
    );
    let log = corvid.stderr();
    assert_eq!((lines(&log, STARTS), lines(&log, ENDS)), (1, 1), "{log}");
    origin.put("dsk", "back", &pattern_bytes(70_000, 9));
    assert_eq!(
        http::get(addr, "/dsk/back", &[]).header("x-cache"),
        Some("MISS")
    );
    let r = http::get(addr, "/dsk/back", &[]);
    assert_eq!(
        r.header("x-cache-layer"),
        Some("disk"),
        "stored on disk again"
    );
    assert!(r.body == pattern_bytes(70_000, 9));
    assert!(
        std::fs::read_dir(&dir).unwrap().count() > 0,
        "segments live in the directory that came back"
    );
}

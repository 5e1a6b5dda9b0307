//! The disk tier through corvid: hits from disk, promotion to memory, survival across a
//! restart, and crash safety (SIGKILL mid-fill, flipped bytes, truncated segments): nothing
//! corrupt is ever served.

use std::path::Path;
use std::time::Duration;

use crate::common::http;
use crate::common::*;

fn config(port: u16, origin: &Origin, dir: &Path, memory: &str) -> String {
    format!(
        "{}{}\n[cache.memory]\ncapacity = {}\n\n[cache.disk]\ndir = {}\ncapacity = \"8MiB\"\nsegment_size = \"1MiB\"\n",
        server_toml(port),
        bucket_toml("dsk", "/dsk", origin),
        memory,
        toml_str(&dir.to_string_lossy()),
    )
}

#[test]
fn disk_hits_promote_and_survive_a_restart() {
    let origin = Origin::start();
    origin.create_bucket("dsk");
    let objects: Vec<(String, Vec<u8>)> = (0..6)
        .map(|i| (format!("obj-{i}"), pattern_bytes(30_000 + i, i as u64 + 1)))
        .collect();
    for (k, b) in &objects {
        origin.put("dsk", k, b);
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // A 64 KiB memory tier holds about two of these objects: the rest must come from disk.
    let mut corvid = Corvid::start(&config(port, &origin, dir.path(), "\"64KiB\""));
    let addr = corvid.addr();
    for (k, b) in &objects {
        let r = http::get(addr, &format!("/dsk/{k}"), &[]);
        assert_eq!((r.status, r.header("x-cache")), (200, Some("MISS")));
        assert!(r.body == *b);
    }
    let fills = origin.count("GET");
    let r = http::get(addr, "/dsk/obj-0", &[]);
    assert_eq!(
        (r.header("x-cache"), r.header("x-cache-layer")),
        (Some("HIT"), Some("disk")),
        "evicted from memory, still on disk"
    );
    assert!(r.body == objects[0].1);
    let r = http::get(addr, "/dsk/obj-0", &[]);
    assert_eq!(r.header("x-cache-layer"), Some("memory"), "promoted");
    let r = http::get(addr, "/dsk/obj-0", &[("range", "bytes=100-199")]);
    assert_eq!(
        (r.status, r.body.as_slice()),
        (206, &objects[0].1[100..200])
    );

    assert_eq!(
        corvid
            .terminate(Duration::from_secs(10))
            .and_then(|s| s.code()),
        Some(0)
    );
    let corvid = Corvid::start(&config(port, &origin, dir.path(), "\"64KiB\""));
    for (k, b) in &objects {
        let r = http::get(corvid.addr(), &format!("/dsk/{k}"), &[]);
        assert_eq!(r.status, 200);
        assert!(
            matches!(r.header("x-cache-layer"), Some("disk") | Some("memory")),
            "{k}: {:?}",
            r.header("x-cache")
        );
        assert!(r.body == *b, "{k}");
    }
    // Conditionals and ranges are answered from the disk tier too.
    let etag = http::get(corvid.addr(), "/dsk/obj-5", &[])
        .header("etag")
        .unwrap()
        .to_string();
    let r = http::get(corvid.addr(), "/dsk/obj-5", &[("if-none-match", &etag)]);
    assert_eq!(r.status, 304);
    let r = http::get(corvid.addr(), "/dsk/obj-3", &[("range", "bytes=0-9")]);
    assert_eq!((r.status, r.body.as_slice()), (206, &objects[3].1[..10]));
    let r = http::get(corvid.addr(), "/dsk/obj-2", &[("if-match", "\"nope\"")]);
    assert_eq!(r.status, 412);
    assert_eq!(
        origin.count("GET"),
        fills,
        "after the restart everything came from disk"
    );
    assert!(corvid.stderr().contains("disk tier"), "recovery is logged");
}

#[test]
fn crash_and_corruption_never_serve_bad_bytes() {
    let origin = Origin::start();
    origin.create_bucket("dsk");
    let n = 120;
    for i in 0..n {
        origin.put(
            "dsk",
            &format!("k{i}"),
            &pattern_bytes(5_000 + (i * 977) % 40_000, i as u64 + 7),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut corvid = Corvid::start(&config(port, &origin, dir.path(), "0"));
    let addr = corvid.addr();
    // Fill from several threads at full speed, and SIGKILL corvid in the middle of it.
    let fillers: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                for i in (t..n).step_by(4) {
                    if http::try_request(
                        addr,
                        "GET",
                        &format!("/dsk/k{i}"),
                        &[],
                        Duration::from_secs(5),
                    )
                    .is_err()
                    {
                        return;
                    }
                }
            })
        })
        .collect();
    assert!(wait_until(Duration::from_secs(20), || origin.count("GET")
        >= (n as u64) / 2));
    corvid.signal(libc::SIGKILL);
    for f in fillers {
        let _ = f.join();
    }
    let _ = corvid.wait_exit(Duration::from_secs(5));

    // Damage the segment files: flip bytes everywhere, truncate the newest.
    let mut segments: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && !p.ends_with("corvid.lock"))
        .collect();
    segments.sort();
    assert!(!segments.is_empty(), "the disk tier wrote segment files");
    // The newest file is usually the empty spare corvid keeps ready for its next roll-over:
    // truncate the newest one that holds records (past its 64-byte header) instead.
    let last = segments
        .iter()
        .rev()
        .find(|p| std::fs::read(p).unwrap().iter().skip(64).any(|&b| b != 0))
        .expect("a segment holds records")
        .clone();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for path in &segments {
        let mut bytes = std::fs::read(path).unwrap();
        for _ in 0..40 {
            let at = (rand() as usize) % bytes.len();
            bytes[at] ^= 1 << (rand() % 8);
        }
        std::fs::write(path, &bytes).unwrap();
    }
    let len = std::fs::metadata(&last).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len(len * 2 / 3)
        .unwrap();

    let corvid = Corvid::start(&config(port, &origin, dir.path(), "0"));
    let mut from_disk = 0;
    for i in 0..n {
        let key = format!("k{i}");
        let r = http::get(corvid.addr(), &format!("/dsk/{key}"), &[]);
        assert_eq!(r.status, 200, "{key}");
        let expected = origin.get("dsk", &key).body;
        assert!(
            r.body == expected,
            "{key} served corrupted bytes (x-cache {:?})",
            r.header("x-cache")
        );
        if r.header("x-cache-layer") == Some("disk") {
            from_disk += 1;
        }
    }
    eprintln!(
        "{from_disk} of {n} objects survived on disk; {}",
        corvid
            .stderr()
            .lines()
            .find(|l| l.contains("disk tier"))
            .unwrap_or("")
    );
}

#[test]
fn write_behind_fills_memory_at_once_and_disk_in_the_background() {
    let origin = Origin::start();
    origin.create_bucket("dsk");
    origin.put("dsk", "wb", &pattern_bytes(10_000, 5));
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = config(port, &origin, dir.path(), "\"1MiB\"").replace(
        "[cache.memory]",
        "[cache]\nwrite_policy = \"write-behind\"\n\n[cache.memory]",
    );
    let mut corvid = Corvid::start(&cfg);
    assert_eq!(
        http::get(corvid.addr(), "/dsk/wb", &[]).header("x-cache"),
        Some("MISS")
    );
    assert_eq!(
        http::get(corvid.addr(), "/dsk/wb", &[]).header("x-cache-layer"),
        Some("memory")
    );
    // The background writer gets there: the disk tier reports the entry.
    assert!(wait_until(Duration::from_secs(10), || {
        http::get(corvid.addr(), "/metrics", &[])
            .text()
            .contains("corvid_cache_entries{layer=\"disk\"} 1")
    }));
    assert_eq!(
        corvid
            .terminate(Duration::from_secs(10))
            .and_then(|s| s.code()),
        Some(0)
    );
    let corvid = Corvid::start(&cfg);
    let r = http::get(corvid.addr(), "/dsk/wb", &[]);
    assert_eq!(r.header("x-cache-layer"), Some("disk"));
    assert!(r.body == pattern_bytes(10_000, 5));
}

/// A second instance on the same `cache.disk.dir` (a replacement configured carelessly)
/// refuses to start and names the directory; the first keeps serving from it.
#[test]
fn a_second_instance_on_the_same_disk_dir_refuses_to_start() {
    let origin = Origin::start();
    origin.create_bucket("dsk");
    origin.put("dsk", "k", b"kept");
    let dir = tempfile::tempdir().unwrap();
    let first = Corvid::start(&config(free_port(), &origin, dir.path(), "\"0\""));
    let mut second = Corvid::spawn(&config(free_port(), &origin, dir.path(), "\"0\""));
    let status = second
        .wait_exit(Duration::from_secs(20))
        .expect("the second exits");
    assert_eq!(status.code(), Some(1), "{}", second.stderr());
    let log = second.stderr();
    assert!(log.contains("in use by another process"), "{log}");
    assert!(log.contains(&dir.path().display().to_string()), "{log}");
    assert_eq!(http::get(first.addr(), "/dsk/k", &[]).body, b"kept");
}

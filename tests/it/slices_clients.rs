//! Large objects cached as slices (issue 17), driven by real clients and real failures: a
//! 16-connection range downloader (`aria2c`), boto3's multipart `download_file`, a SIGKILL
//! while slices are written to the disk tier, and a slow reader of a 512 MiB object whose
//! memory must stay bounded by the slice window, not by the object.
//!
//! Every body is checked byte for byte against the bytes put at the origin (compared, not
//! hashed: SHA-256 of hundreds of MiB in the test profile would take longer than the test). The
//! tools are real programs: `aria2c` (Debian package aria2) and boto3 from the venv
//! `scripts/test.sh` makes (`target/moto-venv`; `CORVID_BOTO3_PYTHON` overrides the
//! interpreter). A missing tool fails the test and says how to get it, never a silent skip.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::http::{self, Conn};
use crate::common::*;

const MIB: usize = 1 << 20;

/// The sum of every sample of `name` in a `/metrics` scrape whose labels contain all of
/// `labels` (e.g. `layer="disk"`), whatever the label order.
fn metric_sum(text: &str, name: &str, labels: &[&str]) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn scrape(addr: SocketAddr) -> String {
    http::get(addr, "/metrics", &[]).text()
}

/// `[cache]` with the slice settings under test, then `tiers` (the `[cache.memory]` /
/// `[cache.disk]` blocks), for one bucket `name` served under `/name`.
fn sliced_toml(port: u16, endpoint: &str, name: &str, cache: &str, tiers: &str) -> String {
    format!(
        "{}send_timeout = \"60s\"\n{}\n[cache]\n{cache}\n{tiers}\n",
        server_toml(port),
        bucket_toml_for(name, &format!("/{name}"), endpoint, name, ""),
    )
}

/// The origin's GETs for one object, as (Range header, If-Match header).
fn origin_gets(origin: &Origin, bucket: &str, key: &str) -> Vec<(Option<String>, Option<String>)> {
    origin
        .requests_for(bucket, key)
        .iter()
        .filter(|r| r.method == "GET")
        .map(|r| {
            (
                r.header("range").map(str::to_owned),
                r.header("if-match").map(str::to_owned),
            )
        })
        .collect()
}

/// Runs `aria2c -x16 -s16 -k1M` on `url` into `dir/name` and returns the file's bytes.
fn aria2c(url: &str, dir: &Path, name: &str) -> Vec<u8> {
    let out = Command::new("aria2c")
        .args([
            "-x16",
            "-s16",
            "-k1M",
            "--no-conf",
            "--allow-overwrite=true",
            "--auto-file-renaming=false",
            "--file-allocation=none",
            "--max-tries=1",
            "--timeout=60",
            "--console-log-level=warn",
            "--summary-interval=0",
            "--download-result=hide",
        ])
        .arg(format!("--dir={}", dir.display()))
        .arg(format!("--out={name}"))
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("run aria2c: {e} (install the Debian package aria2; scripts/test.sh does)")
        });
    assert!(
        out.status.success(),
        "aria2c {url}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(dir.join(name)).expect("aria2c's file")
}

/// The Python with boto3: `$CORVID_BOTO3_PYTHON`, else the venv `scripts/test.sh` makes.
fn boto3_python() -> PathBuf {
    let path = std::env::var_os("CORVID_BOTO3_PYTHON").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/moto-venv/bin/python3"),
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "no Python with boto3 at {}: run scripts/test.sh once (it creates target/moto-venv \
         with moto[server], which brings boto3), or point CORVID_BOTO3_PYTHON at one",
        path.display()
    );
    path
}

/// boto3 `download_file`, unsigned, path-style, through `endpoint`, with a transfer config
/// that splits the object into 1 MiB ranged GETs, 8 at a time.
const BOTO3_DOWNLOAD: &str = r#"
import sys
import boto3
from botocore import UNSIGNED
from botocore.config import Config
from boto3.s3.transfer import TransferConfig

endpoint, bucket, key, dest = sys.argv[1:5]
s3 = boto3.client(
    "s3",
    endpoint_url=endpoint,
    region_name="us-east-1",
    config=Config(
        signature_version=UNSIGNED,
        s3={"addressing_style": "path"},
        retries={"max_attempts": 1, "mode": "standard"},
        read_timeout=60,
    ),
)
transfer = TransferConfig(
    multipart_threshold=1024 * 1024,
    multipart_chunksize=1024 * 1024,
    max_concurrency=8,
    use_threads=True,
)
s3.download_file(bucket, key, dest, Config=transfer)
"#;

fn boto3_download(endpoint: &str, bucket: &str, key: &str, dest: &Path) -> Vec<u8> {
    let _ = std::fs::remove_file(dest);
    let out = Command::new(boto3_python())
        .arg("-c")
        .arg(BOTO3_DOWNLOAD)
        .args([endpoint, bucket, key])
        .arg(dest)
        // No credentials, profiles or instance metadata lookups: the client is unsigned.
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run boto3: {e}"));
    assert!(
        out.status.success(),
        "boto3 download_file: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(dest).expect("boto3's file")
}

/// aria2c with 16 range connections, cold then warm: both files byte-exact, and the warm
/// download costs the origin nothing (every slice came from the cache). An object of 40 MiB
/// and a bit: ten 4 MiB slices, the last one short.
#[test]
fn aria2c_sixteen_connections_cold_then_warm_byte_exact() {
    const SIZE: usize = 40 * MIB + 12_345;
    let origin = Origin::start();
    origin.create_bucket("aria");
    let body = pattern_bytes(SIZE, 17);
    origin.put("aria", "layer.tar", &body);
    let corvid = Corvid::start(&sliced_toml(
        free_port(),
        &origin.endpoint(),
        "aria",
        "slice_size = \"4MiB\"",
        "[cache.memory]\ncapacity = \"256MiB\"\n",
    ));
    let url = format!("{}/aria/layer.tar", corvid.url());
    let dir = tempfile::tempdir().unwrap();
    origin.reset_counts();

    let cold = aria2c(&url, dir.path(), "cold.bin");
    assert_eq!(cold.len(), SIZE);
    assert!(cold == body, "cold aria2c download differs");
    let cold_gets = origin_gets(&origin, "aria", "layer.tar");
    eprintln!("cold: {} origin GETs: {cold_gets:?}", cold_gets.len());
    // Ranges the origin saw are slice fetches: aligned on 4 MiB, with If-Match.
    let sliced: Vec<_> = cold_gets.iter().filter(|(r, _)| r.is_some()).collect();
    for (range, if_match) in &sliced {
        let start: u64 = range.as_deref().unwrap()["bytes=".len()..]
            .split('-')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            start % (4 << 20),
            0,
            "origin range {range:?} is slice-aligned"
        );
        assert!(
            if_match.is_some(),
            "origin range {range:?} carries If-Match"
        );
    }

    origin.reset_counts();
    let warm = aria2c(&url, dir.path(), "warm.bin");
    assert_eq!(warm.len(), SIZE);
    assert!(warm == body, "warm aria2c download differs");
    let warm_reqs = origin.requests_for("aria", "layer.tar");
    assert!(
        warm_reqs.is_empty(),
        "the warm download reached the origin: {:?}",
        warm_reqs
            .iter()
            .map(|r| (r.method.clone(), r.header("range").map(str::to_owned)))
            .collect::<Vec<_>>()
    );
    let text = scrape(corvid.addr());
    assert!(
        metric_sum(&text, "corvid_cache_slice_hits_total", &["bucket=\"aria\""]) >= 10,
        "the warm download's slices are counted as hits:\n{text}"
    );
}

/// boto3 `download_file` with 1 MiB ranged GETs, 8 at a time, unsigned and path-style
/// through corvid: byte-exact every time. Its first wave of ranged GETs meets a cold object
/// (passed through to the origin); by the third download every slice is cached, so that
/// one costs the origin nothing.
#[test]
fn boto3_multipart_download_file_byte_exact() {
    const SIZE: usize = 24 * MIB + 777;
    let origin = Origin::start();
    origin.create_bucket("boto");
    let body = pattern_bytes(SIZE, 23);
    origin.put("boto", "dataset/shard-0001.parquet", &body);
    let corvid = Corvid::start(&sliced_toml(
        free_port(),
        &origin.endpoint(),
        "boto",
        "slice_size = \"4MiB\"",
        "[cache.memory]\ncapacity = \"256MiB\"\n",
    ));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("shard.parquet");
    let key = "dataset/shard-0001.parquet";
    origin.reset_counts();

    for run in 1..=3 {
        let got = boto3_download(&corvid.url(), "boto", key, &dest);
        assert_eq!(got.len(), SIZE, "run {run}");
        assert!(got == body, "boto3 run {run}: bytes differ");
        let reqs = origin.requests_for("boto", key);
        eprintln!(
            "boto3 run {run}: {} origin requests: {:?}",
            reqs.len(),
            reqs.iter()
                .map(|r| (r.method.clone(), r.header("range").map(str::to_owned)))
                .collect::<Vec<_>>()
        );
        if run == 3 {
            assert!(
                reqs.is_empty(),
                "the third download reached the origin {} times",
                reqs.len()
            );
        }
        origin.reset_counts();
    }
}

/// The segment files of a disk tier directory, oldest name first.
fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut segments: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && !p.ends_with("corvid.lock"))
        .collect();
    segments.sort();
    segments
}

/// The offset just past the last non-zero byte of `bytes` (0 when all are zero).
fn used_len(bytes: &[u8]) -> usize {
    bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1)
}

/// SIGKILL while a cold 96 MiB object's slices are being written to the disk tier, then the
/// newest segment torn (truncated through a slice) and one byte of a slice flipped in the
/// oldest: after a restart on the same directory every answer — ranges at and across slice
/// boundaries, the short last slice, the whole object — is byte-exact; slices that survived
/// are served from disk, damaged ones are fetched again.
#[test]
fn sigkill_while_slices_are_written_to_disk_never_serves_a_torn_slice() {
    const SLICE: usize = 4 * MIB;
    const SIZE: usize = 24 * SLICE + 4321;
    let origin = Origin::start();
    origin.create_bucket("killed");
    let body = pattern_bytes(SIZE, 31);
    origin.put("killed", "weights.safetensors", &body);
    // 32 MiB/s per origin connection: the fill takes seconds, so the kill lands
    // while slices are still being written.
    let relay = IdleRelay::paced(origin.addr(), 32 << 20);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let toml = sliced_toml(
        port,
        &relay.endpoint(),
        "killed",
        "slice_size = \"4MiB\"",
        &format!(
            "[cache.memory]\ncapacity = 0\n\n[cache.disk]\ndir = {}\ncapacity = \"256MiB\"\nsegment_size = \"16MiB\"\n",
            toml_str(&dir.path().to_string_lossy())
        ),
    );
    let mut corvid = Corvid::start(&toml);
    let addr = corvid.addr();
    let reader = std::thread::spawn(move || {
        let mut c = Conn::connect(addr);
        c.set_timeout(Duration::from_secs(30));
        c.send(b"GET /killed/weights.safetensors HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut got = 0usize;
        if c.try_read_head().is_ok() {
            while let Ok(chunk) = c.try_read_body_chunk(1 << 20) {
                if chunk.is_empty() {
                    break;
                }
                got += chunk.len();
            }
        }
        got
    });
    // Kill once the disk tier holds the object entry and a few slices, with more to come.
    let mut entries = 0;
    let written = wait_until(Duration::from_secs(20), || {
        entries = metric_sum(&scrape(addr), "corvid_cache_entries", &["layer=\"disk\""]);
        entries >= 4
    });
    assert!(
        written,
        "the disk tier never held the object's slices (entries {entries})"
    );
    corvid.signal(libc::SIGKILL);
    let _ = corvid.wait_exit(Duration::from_secs(5));
    let read_before_kill = reader.join().unwrap();
    eprintln!("killed with {entries} disk entries; the reader had {read_before_kill} bytes");
    assert!(
        read_before_kill < SIZE,
        "the kill came after the whole object was read; the test proves nothing"
    );

    // Tear the newest segment that holds records through the middle of its used part, and
    // flip one byte in the middle of the oldest one's used part (inside a slice's bytes: the
    // object entry is a few hundred bytes at most).
    let segments = segment_files(dir.path());
    let with_records: Vec<_> = segments
        .iter()
        .filter(|p| used_len(&std::fs::read(p).unwrap()) > 64)
        .cloned()
        .collect();
    assert!(
        !with_records.is_empty(),
        "segments hold records: {segments:?}"
    );
    let newest = with_records.last().unwrap();
    let used = used_len(&std::fs::read(newest).unwrap());
    std::fs::OpenOptions::new()
        .write(true)
        .open(newest)
        .unwrap()
        .set_len((used / 2) as u64)
        .unwrap();
    if with_records.len() > 1 {
        let oldest = &with_records[0];
        let mut bytes = std::fs::read(oldest).unwrap();
        let at = used_len(&bytes) / 2;
        bytes[at] ^= 0x40;
        std::fs::write(oldest, &bytes).unwrap();
    }

    let corvid = Corvid::start(&toml);
    let addr = corvid.addr();
    let checks: Vec<(String, usize, usize)> = vec![
        ("bytes=0-0".into(), 0, 1),
        (
            format!("bytes={}-{}", SLICE - 10, SLICE + 9),
            SLICE - 10,
            SLICE + 10,
        ),
        (
            format!("bytes={}-{}", 3 * SLICE, 6 * SLICE - 1),
            3 * SLICE,
            6 * SLICE,
        ),
        (format!("bytes={}-", 24 * SLICE - 1), 24 * SLICE - 1, SIZE),
        ("bytes=-4321".into(), SIZE - 4321, SIZE),
        (
            format!("bytes={}-{}", 7 * SLICE + 123, 9 * SLICE + 456),
            7 * SLICE + 123,
            9 * SLICE + 457,
        ),
    ];
    for (range, from, to) in &checks {
        let r = http::get(addr, "/killed/weights.safetensors", &[("range", range)]);
        assert_eq!(r.status, 206, "{range}");
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes {from}-{}/{SIZE}", to - 1).as_str()),
            "{range}"
        );
        assert!(r.body == body[*from..*to], "{range}: bytes differ");
    }
    for pass in 0..2 {
        let r = http::get(addr, "/killed/weights.safetensors", &[]);
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), SIZE);
        assert!(
            r.body == body,
            "whole object after the restart (pass {pass})"
        );
    }
    let text = scrape(addr);
    let from_disk = metric_sum(&text, "corvid_cache_slice_hits_total", &["layer=\"disk\""]);
    let fetched = metric_sum(
        &text,
        "corvid_cache_slice_misses_total",
        &["bucket=\"killed\""],
    );
    eprintln!("after the restart: {from_disk} slice hits from disk, {fetched} slices fetched");
    assert!(
        from_disk > 0,
        "slices written before the kill are served from disk after the restart"
    );
    assert!(
        fetched > 0,
        "the damaged and missing slices were fetched again"
    );
}

/// A slow client reading a cold 512 MiB object (128 slices of 4 MiB, eight times the memory
/// tier): corvid's RSS stays within the memory tier, the read-ahead window and a fixed
/// allowance, whatever the object's size. 512 MiB rather than the issue's 2 GiB: the bound
/// does not depend on the size, 512 MiB already exceeds it fourfold for any copy that grows
/// with the object, and it keeps the test near ten seconds (a 2 GiB object would add a
/// minute of PUT, hashing and transfer, and 2 GiB in the test process).
#[test]
fn a_slow_client_on_a_cold_large_object_keeps_memory_bounded() {
    const SLICE: u64 = 4 << 20;
    const READAHEAD: u64 = 4;
    const MEMORY_TIER: u64 = 64 << 20;
    const SIZE: usize = 512 * MIB + 7;
    let origin = Origin::start();
    origin.create_bucket("slow");
    let body = pattern_bytes(SIZE, 47);
    let made = Instant::now();
    origin.put("slow", "video.mp4", &body);
    eprintln!("made and put in {:?}", made.elapsed());
    let corvid = Corvid::start(&sliced_toml(
        free_port(),
        &origin.endpoint(),
        "slow",
        &format!("slice_size = \"4MiB\"\nslice_readahead = {READAHEAD}"),
        "[cache.memory]\ncapacity = \"64MiB\"\n",
    ));
    origin.reset_counts();
    let baseline = corvid.rss_kib();

    let mut c = Conn::connect(corvid.addr());
    c.set_timeout(Duration::from_secs(60));
    c.send(b"GET /slow/video.mp4 HTTP/1.1\r\nHost: x\r\n\r\n");
    let head = c.read_head();
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some(SIZE.to_string().as_str())
    );
    // The client pauses 8 ms after each MiB (at most ~120 MiB/s), slower than the origin on
    // loopback. The pace is the stimulus under test, not synchronisation.
    let started = Instant::now();
    let mut got = 0usize;
    let mut peak = baseline;
    while !c.body_done() {
        let chunk = c.read_body_chunk(MIB);
        assert!(
            body.get(got..got + chunk.len()) == Some(&chunk[..]),
            "bytes differ at {got}"
        );
        let before = got;
        got += chunk.len();
        if got / MIB != before / MIB {
            std::thread::sleep(Duration::from_millis(8));
            if got / (4 * MIB) != before / (4 * MIB) {
                peak = peak.max(corvid.rss_kib());
            }
        }
    }
    assert_eq!(got, SIZE);
    let hwm = corvid.peak_rss_kib();
    // The memory tier, the slices in flight (read-ahead plus the one being sent and the one
    // being filled), and 48 MiB for socket buffers, the allocator and the upstream pool.
    let bound_kib = (MEMORY_TIER + SLICE * (READAHEAD + 2) + (48 << 20)) >> 10;
    eprintln!(
        "read {SIZE} bytes in {:?}; rss baseline {baseline} KiB, peak sampled {peak} KiB, \
         VmHWM {hwm} KiB, bound +{bound_kib} KiB",
        started.elapsed()
    );
    assert!(
        peak.saturating_sub(baseline) < bound_kib,
        "RSS grew by {} KiB reading a 512 MiB object",
        peak - baseline
    );
    assert!(
        hwm.saturating_sub(baseline) < bound_kib,
        "peak RSS (VmHWM) {hwm} KiB, baseline {baseline} KiB"
    );

    // It was read as slices: the origin saw slice-aligned ranges with If-Match, each slice
    // fetched once.
    let gets = origin_gets(&origin, "slow", "video.mp4");
    let ranged: Vec<_> = gets.iter().filter(|(r, _)| r.is_some()).collect();
    assert!(
        !ranged.is_empty(),
        "no slice fetches at the origin: {gets:?}"
    );
    for (range, if_match) in &ranged {
        let start: u64 = range.as_deref().unwrap()["bytes=".len()..]
            .split('-')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(start % SLICE, 0, "origin range {range:?} is slice-aligned");
        assert!(
            if_match.is_some(),
            "origin range {range:?} carries If-Match"
        );
    }
    let text = scrape(corvid.addr());
    let fetched = metric_sum(
        &text,
        "corvid_cache_slice_misses_total",
        &["bucket=\"slow\""],
    );
    let slices = (SIZE as u64).div_ceil(SLICE);
    assert!(
        fetched > 0 && fetched <= slices,
        "each slice fetched at most once: {fetched} of {slices}"
    );
}

/// A sliced object larger than the memory tier (and no other tier): reading it whole fills
/// the tier with its slices over and over. The object entry — a few hundred bytes, made by
/// the first request — must stay reachable, or no cached slice of it can ever be used again:
/// the next request would be a cold pass-through (main at 5093379 did that: `MISS`, and the
/// client's unaligned range sent to the origin). With the entry found, the tail is a `HIT`
/// and the origin sees at most a slice fetch (whether the last slice itself is still in the
/// tier is the eviction policy's business: a 1 MiB slice is larger than the 5% small queue of
/// a 16 MiB S3-FIFO tier, so the next insertion may evict it).
#[test]
fn an_object_larger_than_the_memory_tier_keeps_its_entry_while_its_slices_fill_the_tier() {
    const SIZE: usize = 48 * MIB + 5;
    let origin = Origin::start();
    origin.create_bucket("small");
    let body = pattern_bytes(SIZE, 53);
    origin.put("small", "archive.zip", &body);
    let corvid = Corvid::start(&sliced_toml(
        free_port(),
        &origin.endpoint(),
        "small",
        "slice_size = \"1MiB\"",
        "[cache.memory]\ncapacity = \"16MiB\"\n",
    ));
    let r = http::get(corvid.addr(), "/small/archive.zip", &[]);
    assert_eq!((r.status, r.header("x-cache")), (200, Some("MISS")));
    assert!(r.body == body, "whole object differs");
    origin.reset_counts();
    let r = http::get(
        corvid.addr(),
        "/small/archive.zip",
        &[("range", &format!("bytes={}-", SIZE - MIB))],
    );
    assert_eq!(r.status, 206);
    assert!(r.body == body[SIZE - MIB..], "tail bytes differ");
    let reqs: Vec<_> = origin
        .requests_for("small", "archive.zip")
        .iter()
        .map(|r| {
            (
                r.method.clone(),
                r.header("range").map(str::to_owned),
                r.header("if-match").map(str::to_owned),
            )
        })
        .collect();
    // A slice fetch for the tail's two slices (47 and the short 48): aligned, with If-Match.
    let slice_fetch = |range: &Option<String>| {
        range
            .as_deref()
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.split('-').next()?.parse::<usize>().ok())
            .is_some_and(|start| start % MIB == 0 && start >= 47 * MIB)
    };
    assert!(
        r.header("x-cache") == Some("HIT")
            && reqs
                .iter()
                .all(|(m, range, if_match)| m == "GET" && slice_fetch(range) && if_match.is_some()),
        "the object entry is found and the tail is answered from slices: x-cache {:?}, \
         layer {:?}, origin requests {reqs:?}",
        r.header("x-cache"),
        r.header("x-cache-layer")
    );
    eprintln!("tail: origin requests {reqs:?}");
}

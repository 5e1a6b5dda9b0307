//! Large objects stream through with backpressure: a paused client does not make corvid buffer
//! the object, and the bytes arrive exact.

use std::time::{Duration, Instant};

use crate::common::http::Conn;
use crate::common::*;

const SIZE: usize = 300 << 20;

#[test]
fn large_object_streams_byte_exact_with_bounded_memory() {
    let origin = Origin::start();
    origin.create_bucket("big");
    let body = pattern_bytes(SIZE, 42);
    origin.put("big", "model.bin", &body);
    // Slicing off: this is the stream-through path (objects above max_sliced_object_size).
    let corvid = Corvid::start(&format!(
        "{}{}\n[cache]\nmax_sliced_object_size = 0\n",
        server_toml(free_port()),
        bucket_toml("big", "/big", &origin)
    ));
    let baseline = corvid.rss_kib();

    let mut c = Conn::connect(corvid.addr());
    c.set_timeout(Duration::from_secs(60));
    c.send(b"GET /big/model.bin HTTP/1.1\r\nHost: x\r\n\r\n");
    let head = c.read_head();
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some(SIZE.to_string().as_str())
    );

    let mut got = Vec::with_capacity(SIZE);
    got.extend_from_slice(&c.read_body_chunk(1 << 20));
    // The client stops reading. This pause is the stimulus under test, not synchronisation:
    // while it lasts, corvid must hold the upstream read instead of buffering the object.
    let pause_end = Instant::now() + Duration::from_secs(2);
    let mut paused_peak = 0;
    while Instant::now() < pause_end {
        paused_peak = paused_peak.max(corvid.rss_kib());
        std::thread::sleep(Duration::from_millis(100));
    }
    while !c.body_done() {
        got.extend_from_slice(&c.read_body_chunk(4 << 20));
    }
    assert_eq!(got.len(), SIZE);
    assert!(got == body, "streamed bytes differ from the object");

    let growth = paused_peak.saturating_sub(baseline);
    let peak = corvid.peak_rss_kib();
    eprintln!("rss baseline {baseline} KiB, peak while paused {paused_peak} KiB, VmHWM {peak} KiB");
    // Socket buffers hold a few MiB; the object is 300 MiB. 64 MiB of growth would already
    // mean corvid buffers far more than one chunk.
    assert!(
        growth < 64 * 1024,
        "RSS grew by {growth} KiB while the client was paused"
    );
    assert!(
        peak < baseline + 64 * 1024,
        "peak RSS {peak} KiB (baseline {baseline} KiB)"
    );
    // The connection is still usable afterwards.
    origin.put("big", "small", b"ok");
    assert_eq!(c.request("GET", "/big/small", &[]).body, b"ok");
}

/// Issue 15: a fill runs at the origin's pace, not at the pace of the client that started it.
/// Client A starts a cold GET of a 12 MiB object and then stops reading (a phone on a bad
/// network); client B asks for the same object while the fill runs and joins it. B must get
/// the whole object in about the origin's time (the origin, behind a paced relay, takes about
/// 1.5 s), while A still reads nothing; then A reads its copy at its own pace. One origin GET,
/// both byte-exact, memory bounded by the object (not by how long A dawdles).
#[test]
fn a_slow_reader_does_not_pace_a_fast_one_on_the_same_fill() {
    const OBJECT: usize = 12 << 20;
    let origin = Origin::start();
    origin.create_bucket("fill");
    let body = pattern_bytes(OBJECT, 7);
    origin.put("fill", "weights.bin", &body);
    let relay = IdleRelay::paced(origin.addr(), 8 << 20);
    let corvid = Corvid::start(&format!(
        "{}send_timeout = \"60s\"\n{}",
        server_toml(free_port()),
        bucket_toml_for("fill", "/fill", &relay.endpoint(), "fill", "")
    ));
    let baseline = corvid.rss_kib();

    let mut a = Conn::connect(corvid.addr());
    a.set_timeout(Duration::from_secs(60));
    a.send(b"GET /fill/weights.bin HTTP/1.1\r\nHost: x\r\n\r\n");
    let head = a.read_head();
    assert_eq!(head.status, 200);
    let mut got_a = a.read_body_chunk(64 << 10);
    // A reads nothing more until B is done: the pause is the stimulus under test.

    let started = Instant::now();
    let mut b = Conn::connect(corvid.addr());
    // Well below the send timeout: a B paced by A (which reads nothing) would wait for that.
    b.set_timeout(Duration::from_secs(20));
    b.send(b"GET /fill/weights.bin HTTP/1.1\r\nHost: x\r\n\r\n");
    let head_b = b.read_head();
    assert_eq!(head_b.status, 200);
    assert_eq!(
        head_b.header("x-cache"),
        Some("MISS"),
        "B joined the fill in progress (it is not a hit yet)"
    );
    let got_b = b.read_body_to_end();
    let took_b = started.elapsed();
    assert!(got_b == body, "B's bytes differ from the object");
    let during_pause = corvid.rss_kib();
    eprintln!("B done in {took_b:?} while A paused; rss {baseline} -> {during_pause} KiB");

    while !a.body_done() {
        got_a.extend_from_slice(&a.read_body_chunk(1 << 20));
    }
    assert!(got_a == body, "A's bytes differ from the object");
    let gets = origin
        .requests_for("fill", "weights.bin")
        .iter()
        .filter(|r| r.method == "GET")
        .count();
    assert_eq!(gets, 1, "one origin GET for both clients");
    // The fill's buffer, the stored entry and the pieces A has not read: a few times the
    // object at most, never more while A waits.
    let growth = during_pause.saturating_sub(baseline);
    assert!(
        growth < 5 * (OBJECT as u64 >> 10),
        "RSS grew by {growth} KiB for one 12 MiB fill"
    );
}

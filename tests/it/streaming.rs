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
    let corvid = Corvid::start(&format!(
        "{}{}",
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

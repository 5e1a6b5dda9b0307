//! `/metrics` of a live corvid after known traffic: `promtool check metrics` accepts it, and the
//! counters equal the traffic sent.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::common::http;
use crate::common::*;

fn value(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

#[test]
fn a_live_scrape_passes_promtool_and_counts_the_traffic() {
    let (origin, corvid) = origin_and_corvid("mtr", "", "");
    let body = pattern_bytes(3000, 9);
    origin.put("mtr", "k", &body);
    let addr = corvid.addr();
    assert_eq!(
        http::get(addr, "/mtr/k", &[]).header("x-cache"),
        Some("MISS")
    );
    for _ in 0..5 {
        assert_eq!(
            http::get(addr, "/mtr/k", &[]).header("x-cache"),
            Some("HIT")
        );
    }
    assert_eq!(http::head(addr, "/mtr/k", &[]).status, 200);
    assert_eq!(http::get(addr, "/mtr/missing", &[]).status, 404);
    let text = metrics_counting(addr, 8);

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; scripts/test.sh installs it)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    for (series, n) in [
        (
            "corvid_requests_total{bucket=\"mtr\",method=\"GET\",status=\"2xx\"}",
            6,
        ),
        (
            "corvid_requests_total{bucket=\"mtr\",method=\"HEAD\",status=\"2xx\"}",
            1,
        ),
        (
            "corvid_requests_total{bucket=\"mtr\",method=\"GET\",status=\"4xx\"}",
            1,
        ),
        (
            "corvid_cache_hits_total{layer=\"memory\",bucket=\"mtr\"}",
            6,
        ),
        (
            "corvid_cache_hit_bytes_total{layer=\"memory\",bucket=\"mtr\"}",
            5 * 3000,
        ),
        ("corvid_upstream_bytes_total{bucket=\"mtr\"}", 3000),
        (
            "corvid_upstream_requests_total{bucket=\"mtr\",outcome=\"2xx\"}",
            1,
        ),
        (
            "corvid_upstream_requests_total{bucket=\"mtr\",outcome=\"4xx\"}",
            1,
        ),
        ("corvid_cache_entries{layer=\"memory\"}", 1),
    ] {
        assert_eq!(value(&text, series), n, "{series}\n{text}");
    }
}

//! Pass-through behaviour against the signature-verifying origin: tricky keys, HEAD, ranges,
//! conditionals, status mapping, headers that must (not) cross.

use crate::common::http::{self, Conn};
use crate::common::*;

struct Setup {
    origin: Origin,
    corvid: Corvid,
}

fn setup(bucket: &str, extra_toml: &str) -> Setup {
    let origin = Origin::start();
    origin.create_bucket(bucket);
    let port = free_port();
    let cfg = format!(
        "{}{}{}",
        server_toml(port),
        bucket_toml(bucket, &format!("/{bucket}"), &origin),
        extra_toml
    );
    let corvid = Corvid::start(&cfg);
    Setup { origin, corvid }
}

#[test]
fn get_and_head_small_object() {
    let s = setup("ptb", "");
    let body = pattern_bytes(4096, 7);
    s.origin
        .put_with("ptb", "dir/file.bin", &body, Some("application/x-test"), &[("x-amz-meta-owner", "team-a")]);
    let r = http::get(s.corvid.addr(), "/ptb/dir/file.bin", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.body == body);
    assert_eq!(r.header("content-type"), Some("application/x-test"));
    assert_eq!(r.header("x-amz-meta-owner"), Some("team-a"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert!(r.header("etag").is_some());
    assert!(r.header("last-modified").is_some());
    assert!(r.header("x-request-id").is_some());
    let h = http::head(s.corvid.addr(), "/ptb/dir/file.bin", &[]);
    assert_eq!(h.status, 200);
    assert_eq!(h.header("content-length"), Some("4096"));
    assert!(h.body.is_empty());
    assert_eq!(s.origin.count("HEAD"), 1);
}

//! Negative caching (`cache.negative_ttl`, per-bucket `negative_ttl`): an origin 404 cached so
//! that a storm of requests for a missing key costs one origin request, purged like any entry,
//! and off by default.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::common::http;
use crate::common::*;
use crate::jwt_support::key;

/// `n` GETs of `path`, each answered 404.
fn all_404(addr: std::net::SocketAddr, path: &str, n: usize) {
    for i in 0..n {
        let r = http::get(addr, path, &[]);
        assert_eq!(r.status, 404, "request {i}: {}", r.text());
    }
}

#[test]
fn a_404_is_cached_for_the_negative_ttl_and_purged_like_any_entry() {
    let origin = Origin::start();
    origin.create_bucket("neg");
    let hs = key("HS256", 0);
    let corvid = Corvid::start(&format!(
        "{}{}\n[jwt]\nalgorithm = \"HS256\"\nsecret = {}\n\n[admin]\nclaim = {{ name = \"role\", value = \"admin\" }}\n",
        server_toml(free_port()),
        bucket_toml_for("neg", "/neg", &origin.endpoint(), "neg", "negative_ttl = \"1h\""),
        toml_str(hs.secret.as_deref().unwrap()),
    ));
    let addr = corvid.addr();
    let before = origin.count("GET");
    all_404(addr, "/neg/missing", 20);
    assert_eq!(
        origin.count("GET") - before,
        1,
        "one origin GET for 20 requests"
    );

    // Uploaded meanwhile: the cached 404 stands until it is purged.
    origin.put("neg", "missing", b"here now");
    all_404(addr, "/neg/missing", 1);
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let token = hs.token(None, &json!({"exp": exp, "role": "admin"}));
    let r = http::try_request(
        addr,
        "POST",
        "/admin/cache/purge/neg/missing",
        &[
            ("content-length", "0"),
            ("authorization", &format!("Bearer {token}")),
        ],
        std::time::Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let r = http::get(addr, "/neg/missing", &[]);
    assert_eq!((r.status, r.body.as_slice()), (200, &b"here now"[..]));
    assert_eq!(
        http::get(addr, "/neg/missing", &[]).header("x-cache"),
        Some("HIT")
    );
}

#[test]
fn without_a_negative_ttl_every_404_asks_the_origin() {
    let (origin, corvid) = origin_and_corvid("nonneg", "", "");
    let before = origin.count("GET");
    all_404(corvid.addr(), "/nonneg/missing", 5);
    assert_eq!(origin.count("GET") - before, 5);
}

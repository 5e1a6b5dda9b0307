//! TLS on both sides: an https origin behind a terminator with a private CA (`ca_file`), and
//! corvid's own HTTPS listener (`server.tls`).

use crate::common::http::{self, Conn};
use crate::common::*;

#[test]
fn https_upstream_with_private_ca() {
    let origin = Origin::start();
    origin.create_bucket("sec");
    let body = pattern_bytes(200_000, 5);
    origin.put("sec", "a b/c.bin", &body);
    let tls = TlsTerminator::start(origin.addr());
    let cfg = format!(
        "{}{}{}",
        server_toml(free_port()),
        bucket_toml_tls("sec", "/sec", &tls),
        // Same terminator without the private CA: the certificate must not be trusted.
        bucket_toml_for("untrusted", "/untrusted", &tls.endpoint(), "sec", ""),
    );
    let corvid = Corvid::start(&cfg);
    // corvid's reachability checks also connect (TCP only); count from here.
    let before = tls.connections();
    let mut c = Conn::connect(corvid.addr());
    for _ in 0..3 {
        let r = c.request("GET", "/sec/a%20b/c.bin", &[]);
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.body == body);
    }
    assert_eq!(
        tls.connections() - before,
        1,
        "upstream TLS connections are pooled and reused"
    );
    let r = http::get(corvid.addr(), "/untrusted/a%20b/c.bin", &[]);
    assert_eq!(r.status, 502, "{}", r.text());
}

#[test]
fn https_listener() {
    let origin = Origin::start();
    origin.create_bucket("tlsl");
    origin.put("tlsl", "k", b"over tls");
    let certs = generate_server_cert_files();
    let port = free_port();
    let cfg = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nworkers = 2\ntls = {{ cert = {}, key = {} }}\n{}",
        toml_str(&certs.cert_pem.to_string_lossy()),
        toml_str(&certs.key_pem.to_string_lossy()),
        bucket_toml("tlsl", "/tlsl", &origin),
    );
    let corvid = Corvid::start_with(&cfg, Readiness::Https(certs.client_config.clone()), &[]);
    let r = http::https_get(
        corvid.addr(),
        certs.client_config.clone(),
        "localhost",
        "/tlsl/k",
        &[],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"over tls");
    let mut c = Conn::connect_tls(corvid.addr(), certs.client_config.clone(), "localhost").unwrap();
    assert_eq!(c.request("GET", "/health", &[]).status, 200);
    assert_eq!(c.request("GET", "/tlsl/k", &[]).body, b"over tls");
    // Plain HTTP on the TLS port gets no answer it could mistake for a response.
    let r = http::try_send_raw(
        corvid.addr(),
        b"GET /tlsl/k HTTP/1.1\r\nHost: x\r\n\r\n",
        std::time::Duration::from_secs(5),
    );
    assert!(r.is_err() || r.unwrap().status != 200);
}

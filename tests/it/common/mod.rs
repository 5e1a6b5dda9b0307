//! Shared integration-test harness for corvid.
//!
//! * [`Origin`]: in-process s3s-fs S3 server with SigV4 verification,
//!   request counting/recording and fault injection.
//! * [`S3Client`]: independent aws-sigv4 client used to seed the origin.
//! * [`TlsTerminator`], [`TestCa`], [`generate_server_cert_files`]: TLS bits.
//! * [`Corvid`]: the real binary as a child process.
//! * [`InProcess`]: corvid in this process on a manual clock, for TTL tests that advance time
//!   ([`origin_and_inprocess`]; read its module doc about `Date`).
//! * [`http`]: raw HTTP/1.1 client for exact-bytes tests.
//! * [`StallServer`], [`RefuseAddr`]: broken upstreams.
//! * [`IdleRelay`]: a relay that closes idle connections, like an origin's keep-alive timeout.
//! * [`Moto`]: moto's S3 server as a second, independently written origin.

#![allow(
    dead_code,
    unused_imports,
    reason = "each test module uses a different subset of the harness; unused helpers and \
              re-exports are expected, not dead code to delete"
)]

pub mod aws_fakes;
pub mod http;
pub mod inproc;
pub mod moto;
pub mod net;
pub mod origin;
pub mod port;
pub mod proc;
pub mod redis_server;
pub mod relay;
pub mod s3client;
pub mod tls;
pub mod tmpfs;

pub use inproc::{origin_and_inprocess, InProcess};
pub use moto::Moto;
pub use net::{is_refused, wait_until, RefuseAddr, StallServer};
pub use origin::{
    pattern_bytes, storage_key, FaultReply, Origin, OriginConfig, Overrides, RecordedRequest,
    ACCESS_KEY, REGION, SECRET_KEY,
};
pub use port::free_port;
pub use proc::{check, limit_open_files, CheckOutcome, Corvid, Readiness};
pub use relay::IdleRelay;
pub use s3client::{encode_key, S3Client};
pub use tls::{generate_server_cert_files, CertPair, ServerCertFiles, TestCa, TlsTerminator};
pub use tmpfs::Tmpfs;

/// Quotes a string as a TOML basic string.
pub fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// `[server]` block listening on 127.0.0.1:`port` with 2 workers.
pub fn server_toml(port: u16) -> String {
    format!("[server]\nlisten = \"127.0.0.1:{port}\"\nworkers = 2\n")
}

/// `[[buckets]]` block serving origin bucket `name` under `prefix`.
pub fn bucket_toml(name: &str, prefix: &str, origin: &Origin) -> String {
    bucket_toml_for(name, prefix, &origin.endpoint(), name, "")
}

/// `[[buckets]]` block for any endpoint (TLS terminator, stall server,
/// refused port, ...) with the harness keys; `extra` is appended verbatim
/// inside the block (e.g. `ca_file = "..."`, `addressing = "path"`).
pub fn bucket_toml_for(
    name: &str,
    prefix: &str,
    endpoint: &str,
    bucket: &str,
    extra: &str,
) -> String {
    format!(
        "\n[[buckets]]\nname = {}\nprefix = {}\nendpoint = {}\nregion = {}\nbucket = {}\naccess_key = {}\nsecret_key = {}\n{extra}\n",
        toml_str(name),
        toml_str(prefix),
        toml_str(endpoint),
        toml_str(REGION),
        toml_str(bucket),
        toml_str(ACCESS_KEY),
        toml_str(SECRET_KEY),
    )
}

/// An origin with bucket `bucket` and a corvid serving it under `/{bucket}`; `bucket_extra`
/// goes inside the bucket block, `extra_toml` after it.
pub fn origin_and_corvid(bucket: &str, bucket_extra: &str, extra_toml: &str) -> (Origin, Corvid) {
    let origin = Origin::start();
    origin.create_bucket(bucket);
    let toml = one_bucket_toml(free_port(), &origin, bucket, bucket_extra, extra_toml);
    (origin, Corvid::start(&toml))
}

/// A corvid config listening on `port` and serving `origin`'s bucket `bucket` under
/// `/{bucket}`; `bucket_extra` goes inside the bucket block, `extra_toml` after it.
pub fn one_bucket_toml(
    port: u16,
    origin: &Origin,
    bucket: &str,
    bucket_extra: &str,
    extra_toml: &str,
) -> String {
    format!(
        "{}{}{}",
        server_toml(port),
        bucket_toml_for(
            bucket,
            &format!("/{bucket}"),
            &origin.endpoint(),
            bucket,
            bucket_extra
        ),
        extra_toml
    )
}

/// `[[buckets]]` block reaching `origin` bucket `name` through `tls`
/// (https endpoint, `ca_file` pointing at the terminator's CA).
pub fn bucket_toml_tls(name: &str, prefix: &str, tls: &TlsTerminator) -> String {
    let extra = format!(
        "ca_file = {}",
        toml_str(&tls.ca_pem_path().to_string_lossy())
    );
    bucket_toml_for(name, prefix, &tls.endpoint(), name, &extra)
}

/// Keys that stress path encoding. The long ones only work because the
/// origin stores them under a hash (s3s-fs alone fails above ~160 bytes).
pub fn tricky_keys() -> Vec<String> {
    let long = (0..4)
        .map(|i| format!("{i}-{}", "x".repeat(190)))
        .collect::<Vec<_>>()
        .join("/");
    assert!(long.len() > 700);
    let long_segment = "é".repeat(400);
    vec![
        "plain.txt".to_owned(),
        "with space.txt".to_owned(),
        "a+b=c.txt".to_owned(),
        "unicode/ünïcødé-日本語-🦀.txt".to_owned(),
        "reserved !*'()[]$&,;=@:.txt".to_owned(),
        "percent%20literal%.txt".to_owned(),
        "tilde~under_score-dash.txt".to_owned(),
        "nested/deeper/still/file.bin".to_owned(),
        "dots/../and/./empty//segments/".to_owned(),
        long,
        long_segment,
    ]
}

/// The text of `/metrics` once it counts `requests` answered requests in all
/// (`corvid_requests_total`, every label). A request is counted after its answer is written,
/// so the last one may still be counting on its worker when a scrape reaches another.
/// Panics after five seconds, showing the last scrape.
pub fn metrics_counting(addr: std::net::SocketAddr, requests: u64) -> String {
    let counted = |t: &str| -> u64 {
        t.lines()
            .filter(|l| l.starts_with("corvid_requests_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let mut text = String::new();
    let done = wait_until(std::time::Duration::from_secs(5), || {
        text = http::get(addr, "/metrics", &[]).text();
        counted(&text) >= requests
    });
    assert!(done, "{requests} requests never counted:\n{text}");
    text
}

/// Seconds since the Unix epoch (token `exp` and `nbf` claims).
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
pub mod fleet;
pub mod redis_cluster;

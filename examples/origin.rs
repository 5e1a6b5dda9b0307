//! Standalone local S3 origin for demos and perf runs: the same s3s-fs
//! server (SigV4 verification on) that the integration tests use.
//!
//! ```text
//! cargo run --release --example origin -- --dir DIR --listen 127.0.0.1:9000 \
//!     [--access-key K --secret-key S] [--bucket NAME --seed]
//! ```
//!
//! Runs until SIGINT/SIGTERM. With `--listen 127.0.0.1:0` a free port is
//! chosen; the `endpoint = ...` line on stdout says which.

#![allow(
    dead_code,
    reason = "the harness files are shared verbatim with tests/it; this program uses only part \
              of them"
)]
#![allow(
    clippy::disallowed_methods,
    reason = "a standalone origin server, not corvid's workers: it may block"
)]
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line tool: printing is its output"
)]

#[path = "../tests/it/common/http.rs"]
mod http;
#[path = "../tests/it/common/origin.rs"]
mod origin;
#[path = "../tests/it/common/s3client.rs"]
mod s3client;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use origin::{Origin, OriginConfig, ACCESS_KEY, REGION, SECRET_KEY};

#[derive(Debug, Parser)]
#[command(about = "Local S3 origin (s3s-fs with SigV4 verification) for corvid demos")]
struct Args {
    /// Data directory (created if missing). Default: a temp dir removed on exit.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Listen address; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    #[arg(long, default_value = ACCESS_KEY)]
    access_key: String,
    #[arg(long, default_value = SECRET_KEY)]
    secret_key: String,
    /// Bucket to create when seeding.
    #[arg(long, default_value = "demo")]
    bucket: String,
    /// Create the bucket and a few sample objects.
    #[arg(long)]
    seed: bool,
    /// Extra object to create in the bucket, as KEY=SIZE (bytes of deterministic data);
    /// repeatable. Used by the perf scripts.
    #[arg(long = "object", value_name = "KEY=SIZE")]
    objects: Vec<String>,
}

/// Sample objects: (key, content type, body).
fn samples() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    vec![
        (
            "hello.txt",
            "text/plain; charset=utf-8",
            b"Hello from the corvid demo origin!\n".to_vec(),
        ),
        (
            "data.json",
            "application/json",
            br#"{"name":"corvid","kind":"caching proxy","objects":4}"#.to_vec(),
        ),
        (
            "random.bin",
            "application/octet-stream",
            origin::pattern_bytes(1 << 20, 7),
        ),
        (
            "with space.txt",
            "text/plain; charset=utf-8",
            b"a key with a space\n".to_vec(),
        ),
    ]
}

fn main() {
    let args = Args::parse();
    if !args.listen.ip().is_loopback() {
        // The keys are public constants by default; refuse to expose them.
        eprintln!("warning: listening on non-loopback {}", args.listen);
    }
    let mut origin = Origin::start_with(OriginConfig {
        listen: args.listen,
        dir: args.dir.clone(),
        access_key: args.access_key.clone(),
        secret_key: args.secret_key.clone(),
        extra_keys: Vec::new(),
    });

    if args.seed || !args.objects.is_empty() {
        let client = origin.client();
        client.create_bucket(&args.bucket);
        if args.seed {
            for (key, ct, body) in samples() {
                client.put_object(&args.bucket, key, &body, Some(ct), &[]);
            }
        }
        for spec in &args.objects {
            let (key, size) = spec
                .split_once('=')
                .and_then(|(k, n)| Some((k, n.parse::<usize>().ok()?)))
                .unwrap_or_else(|| panic!("--object wants KEY=SIZE, got {spec:?}"));
            let body = origin::pattern_bytes(size, size as u64);
            client.put_object(
                &args.bucket,
                key,
                &body,
                Some("application/octet-stream"),
                &[],
            );
        }
    }

    println!("endpoint   = {}", origin.endpoint());
    println!("region     = {REGION}");
    println!("access_key = {}", origin.access_key());
    println!("secret_key = {}", origin.secret_key());
    println!("data dir   = {}", origin.data_dir().display());
    if args.seed {
        let keys: Vec<&str> = samples().iter().map(|s| s.0).collect();
        println!("bucket     = {} (seeded: {})", args.bucket, keys.join(", "));
    }
    println!("ready");

    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .expect("install signal handlers");
    let sig = signals.forever().next();
    eprintln!("origin: signal {sig:?}, stopping");
    origin.stop();
}

//! Prints SigV4 headers for one GET, as `wrk -H` arguments, so a load test can hit a
//! signature-checking origin directly (the perf scripts compare corvid with the bare origin).
//! The signature stays valid for the origin's clock-skew window (15 minutes for S3).
//!
//! cargo run --example sign_headers -- HOST:PORT /bucket/key ACCESS_KEY SECRET_KEY [REGION]
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line tool: printing is its output"
)]

use std::time::SystemTime;

use corvid::s3::sigv4::{Credentials, Signer, SigningRequest};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        eprintln!("usage: sign_headers HOST:PORT /bucket/key ACCESS_KEY SECRET_KEY [REGION]");
        std::process::exit(2);
    }
    let region = args.get(4).map(String::as_str).unwrap_or("us-east-1");
    let signer = Signer::new(
        Credentials {
            access_key: args[2].clone(),
            secret_key: args[3].clone(),
            session_token: None,
        },
        region,
        "s3",
    );
    let headers = [("host", args[0].as_str())];
    let signed = signer.sign(
        &SigningRequest {
            method: "GET",
            canonical_uri: &args[1],
            canonical_query: "",
            headers: &headers,
        },
        SystemTime::now(),
    );
    println!(
        "-H 'x-amz-date: {}' -H 'x-amz-content-sha256: {}' -H 'authorization: {}'",
        signed.amz_date, signed.content_sha256, signed.authorization
    );
}

//! The S3 bucket API through the real binary (`crate::bucket`): listings of a prefix of more
//! than 1,000 keys with tricky names, read by the clients users run — the AWS CLI (`s3 ls`
//! recursive and with a delimiter, `s3 sync`), a boto3 `list_objects_v2` (and V1) paginator,
//! rclone `lsf` and `sync` — each compared key by key with the origin's own listing (boto3,
//! signed, straight at the origin), against the s3s origin and against moto. Then caching:
//! a second listing costs the origin nothing, concurrent misses share one origin request,
//! bucket and prefix purges remove what they cover, `list_ttl = 0` passes through; a private
//! bucket's listing needs a token; HeadBucket, GetBucketLocation, refused sub-resources,
//! virtual-host style.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::http;
use crate::common::*;
use crate::jwt_support::key;

/// Keys under `data/` (more than one page of 1,000) plus a few outside it.
const LISTED: usize = 1_030;

/// Tricky names: spaces, `+`, `%` (also a `%` that is not an escape), unicode, nested
/// "directories" for the delimiter; each at most 100 bytes, so the s3s origin stores it as is.
fn keys() -> Vec<String> {
    let mut v: Vec<String> = (0..LISTED)
        .map(|i| match i % 5 {
            0 => format!("data/k{i:04} with space.txt"),
            1 => format!("data/k{i:04}+plus=sign.txt"),
            2 => format!("data/k{i:04} 100%25 literal%zz.txt"),
            3 => format!("data/dir{}/ünï-日本-🦀-{i:04}.bin", i % 7),
            _ => format!("data/dir {}/k{i:04}~(x)!", i % 3),
        })
        .collect();
    v.extend(
        [
            "other/a.txt",
            "other/b c.txt",
            "datax/not-under-data.txt",
            "top.txt",
        ]
        .map(String::from),
    );
    v
}

fn body_of(key: &str) -> Vec<u8> {
    format!("body of {key}").into_bytes()
}

/// The Python with boto3: `$CORVID_BOTO3_PYTHON`, else the venv `scripts/test.sh` makes.
fn python() -> PathBuf {
    let path = std::env::var_os("CORVID_BOTO3_PYTHON").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/moto-venv/bin/python3"),
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "no Python with boto3 at {}: run scripts/test.sh once",
        path.display()
    );
    path
}

/// Lists with boto3's paginators and prints one JSON object: the keys and common prefixes of
/// every page, in order. Signed when an access key is given (the origin), else unsigned
/// (corvid).
const BOTO3_LIST: &str = r#"
import json, sys
import boto3
from botocore import UNSIGNED
from botocore.config import Config

endpoint, bucket, prefix, delimiter, op, page, access, secret = sys.argv[1:9]
cfg = dict(s3={"addressing_style": "path"}, retries={"max_attempts": 1, "mode": "standard"})
if access:
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id=access, aws_secret_access_key=secret, config=Config(**cfg))
else:
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      config=Config(signature_version=UNSIGNED, **cfg))
args = dict(Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": int(page)})
if delimiter:
    args["Delimiter"] = delimiter
keys, prefixes, pages = [], [], 0
for p in s3.get_paginator(op).paginate(**args):
    pages += 1
    keys += [o["Key"] for o in p.get("Contents", [])]
    prefixes += [c["Prefix"] for c in p.get("CommonPrefixes", [])]
print(json.dumps({"keys": keys, "prefixes": prefixes, "pages": pages}))
"#;

struct Listed {
    keys: Vec<String>,
    prefixes: Vec<String>,
    pages: u64,
}

/// Asserts two lists are equal, showing the lengths and the first differences only (a
/// listing of a thousand keys is too long to read in a failure message).
#[track_caller]
fn same<T: PartialEq + std::fmt::Debug>(got: &[T], want: &[T], what: &str) {
    if got == want {
        return;
    }
    let diffs: Vec<_> = got
        .iter()
        .zip(want)
        .enumerate()
        .filter(|(_, (g, w))| g != w)
        .take(3)
        .collect();
    panic!(
        "{what}: {} entries, expected {}; first differences (index, got, expected): {diffs:?}; \
         got starts {:?}",
        got.len(),
        want.len(),
        &got[..got.len().min(3)]
    );
}

fn clean_env(cmd: &mut Command) -> &mut Command {
    cmd.env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        // A CA bundle the environment names is for https: rclone's AWS SDK refuses to start
        // with one on a plain-http endpoint.
        .env_remove("AWS_CA_BUNDLE")
        .stdin(Stdio::null())
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = clean_env(cmd)
        .output()
        .unwrap_or_else(|e| panic!("run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// boto3's paginator `op` (`list_objects_v2` or `list_objects`) over `bucket`/`prefix`;
/// `creds` signs (the origin's own listing).
fn boto3_list(
    endpoint: &str,
    bucket: &str,
    prefix: &str,
    delimiter: &str,
    op: &str,
    page: usize,
    creds: Option<(&str, &str)>,
) -> Listed {
    let (a, s) = creds.unwrap_or(("", ""));
    let out = run(
        Command::new(python()).arg("-c").arg(BOTO3_LIST).args([
            endpoint,
            bucket,
            prefix,
            delimiter,
            op,
            &page.to_string(),
            a,
            s,
        ]),
        "boto3 paginator",
    );
    let v: Value = serde_json::from_str(out.trim()).expect("boto3 JSON");
    let strings = |f: &str| -> Vec<String> {
        v[f].as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    };
    Listed {
        keys: strings("keys"),
        prefixes: strings("prefixes"),
        pages: v["pages"].as_u64().unwrap(),
    }
}

/// The AWS CLI: the venv's (`scripts/test.sh` installs it there when none is on PATH), else
/// `aws` on PATH.
fn aws_cli() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/moto-venv/bin/aws");
    if venv.is_file() {
        venv
    } else {
        PathBuf::from("aws")
    }
}

fn aws(endpoint: &str, args: &[&str]) -> String {
    run(
        Command::new(aws_cli())
            .args([
                "--no-sign-request",
                "--endpoint-url",
                endpoint,
                "--region",
                "us-east-1",
            ])
            .args(args),
        &format!("aws {args:?}"),
    )
}

/// The key column of `aws s3 ls` lines (`date time size key`, or `PRE prefix/`).
fn aws_ls_entries(out: &str) -> (Vec<String>, Vec<String>) {
    let (mut keys, mut pres) = (Vec::new(), Vec::new());
    for line in out.lines() {
        if let Some(p) = line.trim_start().strip_prefix("PRE ") {
            pres.push(p.to_owned());
        } else if !line.trim().is_empty() {
            // "2024-01-01 00:00:00       1234 key with spaces"
            let mut rest = line;
            for _ in 0..3 {
                rest = rest.trim_start();
                rest = &rest[rest.find(' ').expect("ls column")..];
            }
            keys.push(rest[1..].trim_start().to_owned());
        }
    }
    (keys, pres)
}

fn rclone(endpoint: &str, args: &[&str]) -> String {
    let conf = tempfile::NamedTempFile::new().unwrap();
    run(
        Command::new("rclone")
            .args(args)
            .args(["--retries", "1"])
            .arg("--config")
            .arg(conf.path())
            .env("RCLONE_CONFIG_C_TYPE", "s3")
            .env("RCLONE_CONFIG_C_PROVIDER", "Other")
            .env("RCLONE_CONFIG_C_ENDPOINT", endpoint)
            .env("RCLONE_CONFIG_C_ENV_AUTH", "false")
            .env("RCLONE_CONFIG_C_REGION", "us-east-1")
            .env("RCLONE_CONFIG_C_FORCE_PATH_STYLE", "true")
            .env("RCLONE_CONFIG_C_LIST_VERSION", "2")
            .env("RCLONE_CONFIG_C_LIST_CHUNK", "500"),
        &format!("rclone {args:?}"),
    )
}

/// Every regular file under `dir`, as `/`-separated paths relative to it, with its bytes.
fn files_under(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// Every client against corvid in front of `origin_endpoint`'s `bucket` (exposed as
/// `/{bucket}`), compared with the origin's own listing.
fn clients_agree_with_origin(corvid: SocketAddr, origin_endpoint: &str, bucket: &str) {
    let t0 = std::time::Instant::now();
    let endpoint = format!("http://{corvid}");
    let creds = Some((ACCESS_KEY, SECRET_KEY));
    let expected: Vec<String> = {
        let mut k: Vec<String> = keys()
            .into_iter()
            .filter(|k| k.starts_with("data/"))
            .collect();
        k.sort();
        k
    };

    // boto3 paginators, V2 and V1, pages of 100 and of the default 1,000.
    let origin_v2 = boto3_list(
        origin_endpoint,
        bucket,
        "data/",
        "",
        "list_objects_v2",
        1000,
        creds,
    );
    same(&origin_v2.keys, &expected, "the origin's own listing");
    for (op, page) in [
        ("list_objects_v2", 100),
        ("list_objects_v2", 1000),
        ("list_objects", 250),
    ] {
        let got = boto3_list(&endpoint, bucket, "data/", "", op, page, None);
        same(&got.keys, &origin_v2.keys, &format!("{op} pages of {page}"));
        assert_eq!(
            got.pages,
            LISTED.div_ceil(page) as u64,
            "{op} pages of {page}"
        );
    }
    let origin_delim = boto3_list(
        origin_endpoint,
        bucket,
        "data/",
        "/",
        "list_objects_v2",
        1000,
        creds,
    );
    let got = boto3_list(&endpoint, bucket, "data/", "/", "list_objects_v2", 3, None);
    same(&got.keys, &origin_delim.keys, "delimiter listing: keys");
    same(
        &got.prefixes,
        &origin_delim.prefixes,
        "delimiter listing: prefixes",
    );
    assert!(
        origin_delim.prefixes.len() >= 10,
        "{:?}",
        origin_delim.prefixes
    );

    eprintln!("boto3 done: {:?}", t0.elapsed());
    // aws s3 ls, recursive and with the delimiter.
    let (ls_keys, _) = aws_ls_entries(&aws(
        &endpoint,
        &["s3", "ls", "--recursive", &format!("s3://{bucket}/data/")],
    ));
    same(&ls_keys, &origin_v2.keys, "aws s3 ls --recursive");
    let (ls_keys, ls_pres) = aws_ls_entries(&aws(
        &endpoint,
        &["s3", "ls", &format!("s3://{bucket}/data/")],
    ));
    let strip = |v: &[String]| -> Vec<String> {
        v.iter()
            .map(|k| k.strip_prefix("data/").unwrap().to_owned())
            .collect()
    };
    same(
        &ls_keys,
        &strip(&origin_delim.keys),
        "aws s3 ls (delimiter)",
    );
    same(
        &ls_pres,
        &strip(&origin_delim.prefixes),
        "aws s3 ls (delimiter): PRE",
    );

    // aws s3 sync and rclone sync: every object, byte for byte.
    let want: Vec<(String, Vec<u8>)> = {
        let mut w: Vec<(String, Vec<u8>)> = expected
            .iter()
            .map(|k| (k.strip_prefix("data/").unwrap().to_owned(), body_of(k)))
            .collect();
        w.sort();
        w
    };
    let dir = tempfile::tempdir().unwrap();
    let aws_dir = dir.path().join("aws");
    aws(
        &endpoint,
        &[
            "s3",
            "sync",
            "--only-show-errors",
            &format!("s3://{bucket}/data/"),
            aws_dir.to_str().unwrap(),
        ],
    );
    same(&files_under(&aws_dir), &want, "aws s3 sync");
    eprintln!("aws done: {:?}", t0.elapsed());

    // rclone lsf (recursive) and sync.
    let lsf = rclone(
        &endpoint,
        &["lsf", "-R", "--files-only", &format!("c:{bucket}/data")],
    );
    let lsf: Vec<String> = lsf
        .lines()
        .map(str::to_owned)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let want_names: Vec<String> = want.iter().map(|(k, _)| k.clone()).collect();
    same(&lsf, &want_names, "rclone lsf -R");
    let rclone_dir = dir.path().join("rclone");
    rclone(
        &endpoint,
        &[
            "sync",
            &format!("c:{bucket}/data"),
            rclone_dir.to_str().unwrap(),
        ],
    );
    same(&files_under(&rclone_dir), &want, "rclone sync");
    eprintln!("rclone done: {:?}", t0.elapsed());
}

#[test]
fn clients_list_and_sync_a_prefix_through_corvid_s3s_origin() {
    let origin = Origin::start();
    origin.create_bucket("lst");
    for k in keys() {
        origin.put("lst", &k, &body_of(&k));
    }
    let corvid = Corvid::start(&one_bucket_toml(free_port(), &origin, "lst", "", ""));
    clients_agree_with_origin(corvid.addr(), &origin.endpoint(), "lst");
}

#[test]
fn clients_list_and_sync_a_prefix_through_corvid_moto_origin() {
    let moto = Moto::start();
    moto.create_bucket("mlst");
    let client = moto.client();
    for k in keys() {
        let r = client.put_object("mlst", &k, &body_of(&k), None, &[]);
        assert_eq!(r.status, 200, "put {k}: {}", r.text());
    }
    let toml = format!(
        "{}{}",
        server_toml(free_port()),
        bucket_toml_for("mlst", "/mlst", &moto.endpoint(), "mlst", "")
    );
    let corvid = Corvid::start(&toml);
    clients_agree_with_origin(corvid.addr(), &moto.endpoint(), "mlst");
}

/// Origin listing requests so far (GETs of the bucket itself).
fn origin_listings(origin: &Origin, bucket: &str) -> usize {
    origin
        .requests_with("GET")
        .iter()
        .filter(|r| r.path == format!("/{bucket}/") || r.path == format!("/{bucket}"))
        .count()
}

fn hs_setup() -> (crate::jwt_support::TestKey, String) {
    let hs = key("HS256", 0);
    let jwt = format!(
        "\n[jwt]\nalgorithm = \"HS256\"\nsecret = {}\n\n[admin]\nclaim = {{ name = \"role\", value = \"admin\" }}\n",
        toml_str(hs.secret.as_deref().unwrap())
    );
    (hs, jwt)
}

fn purge(addr: SocketAddr, path: &str, token: &str) {
    let auth = format!("Bearer {token}");
    let r = http::request_bytes(
        "POST",
        path,
        "corvid",
        &[("authorization", &auth), ("content-length", "0")],
        b"",
    );
    let r = http::send_raw(addr, &r);
    assert_eq!(r.status, 200, "purge {path}: {}", r.text());
}

fn metric(addr: SocketAddr, name: &str, bucket: &str) -> u64 {
    let text = http::get(addr, "/metrics", &[]).text();
    crate::common::fleet::metric_sum(&text, name, &[("bucket", bucket)])
}

#[test]
fn listings_are_cached_coalesced_purged_and_pass_through_at_ttl_zero() {
    let origin = Origin::start();
    origin.create_bucket("lcache");
    for k in ["a/1.txt", "a/2 x.txt", "b/1.txt", "top.txt"] {
        origin.put("lcache", k, k.as_bytes());
    }
    let (hs, jwt) = hs_setup();
    let admin = hs.token(None, &json!({"exp": now() + 600, "role": "admin"}));
    let toml = format!(
        "{}{}{}{}",
        server_toml(free_port()),
        bucket_toml_for("lcache", "/lcache", &origin.endpoint(), "lcache", ""),
        bucket_toml_for(
            "lzero",
            "/lzero",
            &origin.endpoint(),
            "lcache",
            "list_ttl = 0\n"
        ),
        jwt
    );
    let corvid = Corvid::start(&toml);
    let addr = corvid.addr();
    let list = |path: &str| http::get(addr, path, &[]);

    // A miss, then a hit: the same bytes, one origin request.
    let first = list("/lcache?list-type=2&prefix=a%2F");
    assert_eq!(
        (first.status, first.header("x-cache")),
        (200, Some("MISS")),
        "{}",
        first.text()
    );
    let xml = first.text();
    assert!(
        xml.contains("<ListBucketResult") && xml.contains("<Key>a/2 x.txt</Key>"),
        "{xml}"
    );
    assert!(
        xml.contains("<KeyCount>2</KeyCount>") && !xml.contains("b/1.txt"),
        "{xml}"
    );
    let second = list("/lcache/?prefix=a%2F&list-type=2&token=ignored");
    assert_eq!(
        (second.status, second.header("x-cache")),
        (200, Some("HIT"))
    );
    assert_eq!(second.body, first.body);
    assert_eq!(origin_listings(&origin, "lcache"), 1);
    // The origin was asked exactly the client's parameters.
    let asked = origin
        .requests_with("GET")
        .last()
        .unwrap()
        .query
        .clone()
        .unwrap();
    assert_eq!(asked, "list-type=2&prefix=a%2F");
    // V1 is another listing (another entry).
    let v1 = list("/lcache?prefix=a%2F");
    assert_eq!(
        (v1.status, v1.header("x-cache")),
        (200, Some("MISS")),
        "{}",
        v1.text()
    );
    assert!(v1.text().contains("<Key>a/1.txt</Key>"));
    assert_eq!(origin_listings(&origin, "lcache"), 2);
    assert_eq!(metric(addr, "corvid_cache_list_hits_total", "lcache"), 1);
    assert_eq!(metric(addr, "corvid_cache_list_misses_total", "lcache"), 2);
    // Object hits and misses are not listings'.
    assert_eq!(metric(addr, "corvid_cache_misses_total", "lcache"), 0);

    // A purge of another prefix leaves it; a purge of a prefix that covers it removes it.
    purge(addr, "/admin/cache/purge/lcache?prefix=b%2F", &admin);
    assert_eq!(
        list("/lcache?list-type=2&prefix=a%2F").header("x-cache"),
        Some("HIT")
    );
    purge(addr, "/admin/cache/purge/lcache?prefix=a", &admin);
    assert_eq!(
        list("/lcache?list-type=2&prefix=a%2F").header("x-cache"),
        Some("MISS")
    );
    assert_eq!(origin_listings(&origin, "lcache"), 3);
    // A bucket purge removes every listing of the bucket.
    assert_eq!(list("/lcache?list-type=2").header("x-cache"), Some("MISS"));
    assert_eq!(list("/lcache?list-type=2").header("x-cache"), Some("HIT"));
    purge(addr, "/admin/cache/purge/lcache", &admin);
    assert_eq!(list("/lcache?list-type=2").header("x-cache"), Some("MISS"));
    assert_eq!(
        list("/lcache?list-type=2&prefix=a%2F").header("x-cache"),
        Some("MISS")
    );

    // Concurrent misses of one page: one origin request for all of them.
    origin.set_delay(Duration::from_millis(400));
    let before = origin_listings(&origin, "lcache");
    let n = 6;
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                http::get(addr, "/lcache?list-type=2&max-keys=3", &[])
            })
        })
        .collect();
    let bodies: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    origin.set_delay(Duration::ZERO);
    for r in &bodies {
        assert_eq!(r.status, 200);
        assert_eq!(r.body, bodies[0].body);
    }
    assert!(
        bodies[0].text().contains("<IsTruncated>true</IsTruncated>"),
        "{}",
        bodies[0].text()
    );
    assert_eq!(origin_listings(&origin, "lcache") - before, 1, "coalesced");
    assert!(metric(addr, "corvid_coalesced_requests_total", "lcache") >= 1);

    // list_ttl = 0: every listing goes to the origin.
    let before = origin_listings(&origin, "lcache");
    for _ in 0..2 {
        let r = list("/lzero?list-type=2&prefix=a%2F");
        assert_eq!(
            (r.status, r.header("x-cache")),
            (200, Some("BYPASS")),
            "{}",
            r.text()
        );
        assert_eq!(r.body, first.body);
    }
    assert_eq!(origin_listings(&origin, "lcache") - before, 2);
}

#[test]
fn bucket_operations_head_location_refusals_and_bad_parameters() {
    let origin = Origin::start();
    origin.create_bucket("ops");
    let toml = format!(
        "{}{}{}",
        server_toml(free_port()),
        bucket_toml_for("ops", "/ops", &origin.endpoint(), "ops", ""),
        bucket_toml_for("gone", "/gone", &origin.endpoint(), "no-such-bucket", ""),
    );
    let corvid = Corvid::start(&toml);
    let addr = corvid.addr();

    // HeadBucket: the origin's answer.
    assert_eq!(http::head(addr, "/ops", &[]).status, 200);
    assert_eq!(http::head(addr, "/ops/", &[]).status, 200);
    assert_eq!(http::head(addr, "/gone", &[]).status, 404);
    // A listing of a bucket the origin does not have: corvid's JSON error.
    let r = http::get(addr, "/gone?list-type=2", &[]);
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.text().contains("NoSuchBucket"), "{}", r.text());

    // GetBucketLocation: the configured region.
    let r = http::get(addr, "/ops?location", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/xml"));
    let want = if REGION == "us-east-1" {
        String::new()
    } else {
        REGION.to_owned()
    };
    assert!(
        r.text().contains(&format!(
            "<LocationConstraint xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">{want}</LocationConstraint>"
        )),
        "{}",
        r.text()
    );

    // Sub-resources corvid does not serve: S3's NotImplemented, nothing asked of the origin.
    let before = origin.total_count();
    for q in [
        "acl",
        "versions",
        "uploads",
        "policy",
        "versioning",
        "tagging",
    ] {
        let r = http::get(addr, &format!("/ops?{q}"), &[]);
        assert_eq!(r.status, 501, "{q}");
        assert!(
            r.text().contains("<Code>NotImplemented</Code>"),
            "{q}: {}",
            r.text()
        );
    }
    assert_eq!(origin.total_count(), before);

    // Bad parameters: 400; other methods: 405.
    for q in [
        "list-type=3",
        "list-type=2&max-keys=ten",
        "encoding-type=xml",
        "prefix=a&prefix=b",
        "prefix=%zz",
    ] {
        assert_eq!(
            http::get(addr, &format!("/ops?{q}"), &[]).status,
            400,
            "{q}"
        );
    }
    let r = http::send_raw(
        addr,
        &http::request_bytes("DELETE", "/ops", "corvid", &[], b""),
    );
    assert_eq!(r.status, 405);
    assert_eq!(origin.total_count(), before);
}

#[test]
fn private_bucket_listing_needs_a_token_every_time() {
    let origin = Origin::start();
    origin.create_bucket("sec");
    origin.put("sec", "secret/plan.txt", b"x");
    let (hs, jwt) = hs_setup();
    let toml = format!(
        "{}{}{}",
        server_toml(free_port()),
        bucket_toml_for("sec", "/sec", &origin.endpoint(), "sec", "auth = true\n"),
        jwt
    );
    let corvid = Corvid::start(&toml);
    let addr = corvid.addr();
    let token = hs.token(None, &json!({"exp": now() + 600}));
    let auth = format!("Bearer {token}");

    let r = http::get(addr, "/sec?list-type=2", &[]);
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(origin_listings(&origin, "sec"), 0);
    let r = http::get(addr, "/sec?list-type=2", &[("authorization", &auth)]);
    assert_eq!((r.status, r.header("x-cache")), (200, Some("MISS")));
    assert!(r.text().contains("<Key>secret/plan.txt</Key>"));
    // Cached now, still refused without a token (and with a bad one).
    assert_eq!(http::get(addr, "/sec?list-type=2", &[]).status, 401);
    assert_eq!(
        http::get(
            addr,
            "/sec?list-type=2",
            &[("authorization", "Bearer x.y.z")]
        )
        .status,
        401
    );
    assert_eq!(http::head(addr, "/sec", &[]).status, 401);
    assert_eq!(http::get(addr, "/sec?location", &[]).status, 401);
    let r = http::get(addr, "/sec?list-type=2", &[("authorization", &auth)]);
    assert_eq!((r.status, r.header("x-cache")), (200, Some("HIT")));
    assert_eq!(origin_listings(&origin, "sec"), 1);
}

#[test]
fn virtual_host_style_routes_by_host() {
    let origin = Origin::start();
    origin.create_bucket("vhost");
    origin.put("vhost", "dir/a b+c.txt", b"virtual");
    origin.put("vhost", "health", b"a key, not the route");
    let toml = format!(
        "{}{}",
        server_toml(free_port()),
        bucket_toml_for(
            "vh",
            "/vh",
            &origin.endpoint(),
            "vhost",
            "host = \"vh.example.test\"\n"
        ),
    );
    let corvid = Corvid::start(&toml);
    let addr = corvid.addr();
    let host = [("host", "VH.example.test:8080")];

    let r = http::get(addr, "/dir/a%20b%2Bc.txt", &host);
    assert_eq!(
        (r.status, &r.body[..]),
        (200, &b"virtual"[..]),
        "{}",
        r.text()
    );
    let r = http::get(addr, "/health", &host);
    assert_eq!(r.body, b"a key, not the route");
    let r = http::get(addr, "/?list-type=2&prefix=dir%2F", &host);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.text().contains("<Key>dir/a b+c.txt</Key>"),
        "{}",
        r.text()
    );
    assert_eq!(http::head(addr, "/", &host).status, 200);
    // Path style still works; another Host routes by path.
    assert_eq!(
        http::get(addr, "/vh/dir/a%20b%2Bc.txt", &[]).body,
        b"virtual"
    );
    assert_eq!(
        http::get(addr, "/health", &[("host", "other.test")]).status,
        200
    );
    assert_eq!(
        http::get(addr, "/dir/a%20b%2Bc.txt", &[("host", "other.test")]).status,
        404
    );
}

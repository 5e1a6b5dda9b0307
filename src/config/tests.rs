use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use super::*;

const SERVER: &str = "[server]\nlisten = \"127.0.0.1:8080\"\n";
const BUCKET: &str = r#"
[[buckets]]
name = "assets"
prefix = "/assets"
endpoint = "https://s3.us-east-1.amazonaws.com"
region = "us-east-1"
bucket = "my-assets"
access_key = "AKIDEXAMPLE"
secret_key = "wJalrXUtnFEMI"
"#;
const JWT: &str = "\n[jwt]\nalgorithm = \"HS256\"\nsecret = \"0123456789abcdef0123456789abcdef\"\n";

fn test_env(name: &str) -> Option<String> {
    let vars: HashMap<&str, &str> = [
        ("AK", "AKIDFROMENV"),
        ("SK", "secretfromenv"),
        ("HOST", "minio.local"),
        ("PORT", "9000"),
        ("JWT_SECRET", "an-hmac-secret-of-at-least-32-bytes!!"),
        ("SIZE", "2GiB"),
        ("WORKERS", "4"),
        ("NEWLINE", "abc\n"),
        ("EMPTY", ""),
    ]
    .into_iter()
    .collect();
    vars.get(name).map(|v| v.to_string())
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str(text, &test_env)
}

fn ok(text: &str) -> Config {
    match parse(text) {
        Ok(c) => c,
        Err(e) => panic!("expected a valid config, got:\n{e}\n--- config ---\n{text}"),
    }
}

fn problems(text: &str) -> Vec<Problem> {
    match parse(text) {
        Ok(c) => panic!("expected problems, got {c:#?}\n--- config ---\n{text}"),
        Err(e) => e.problems,
    }
}

/// Asserts a problem at exactly `key` whose message contains `needle`.
#[track_caller]
fn has_problem(text: &str, key: &str, needle: &str) {
    let ps = problems(text);
    assert!(
        ps.iter()
            .any(|p| p.key == key && p.message.contains(needle)),
        "no problem `{key}: ...{needle}...` in:\n{}\n--- config ---\n{text}",
        ConfigError {
            problems: ps.clone()
        }
    );
}

/// Minimal config with `extra` added to the single bucket, then `rest` sections after it.
fn with_bucket(extra: &str, rest: &str) -> String {
    format!("{SERVER}{BUCKET}{extra}\n{rest}")
}

/// Minimal config with `extra` added to [server].
fn with_server(extra: &str) -> String {
    format!("{SERVER}{extra}\n{BUCKET}")
}

fn minimal() -> String {
    format!("{SERVER}{BUCKET}")
}

// ---------- happy paths ----------

#[test]
fn minimal_config_gets_documented_defaults() {
    let c = ok(&minimal());
    let s = &c.server;
    assert_eq!(s.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(s.workers, 0);
    assert!(s.worker_count() >= 1);
    assert_eq!(s.tls, None);
    assert_eq!(s.header_timeout, Duration::from_secs(10));
    assert_eq!(s.idle_timeout, Duration::from_secs(60));
    assert_eq!(s.max_header_bytes, 16 * 1024);
    assert_eq!(s.max_headers, 100);
    assert_eq!(s.max_request_line, 8 * 1024);
    assert_eq!(s.send_timeout, Duration::from_secs(60));
    assert_eq!(s.shutdown_grace, Duration::from_secs(30));
    assert_eq!(
        s.max_connections, None,
        "absent: what fits the open-file limit"
    );

    let b = &c.buckets[0];
    assert_eq!(b.name, "assets");
    assert_eq!(b.prefix, "/assets");
    assert_eq!(
        b.endpoint,
        Endpoint {
            scheme: Scheme::Https,
            host: "s3.us-east-1.amazonaws.com".into(),
            port: 443
        }
    );
    assert_eq!(b.region, "us-east-1");
    assert_eq!(b.bucket, "my-assets");
    assert_eq!(keys(b).0, "AKIDEXAMPLE");
    assert_eq!(keys(b).1, "wJalrXUtnFEMI");
    assert_eq!(keys(b).2, None);
    assert_eq!(b.addressing, Addressing::Path);
    assert_eq!(b.ca_file, None);
    assert!(!b.auth);
    assert_eq!(b.ttl, None);
    assert_eq!(b.cors, None);
    assert_eq!(b.connect_timeout, Duration::from_secs(5));
    assert_eq!(b.first_byte_timeout, Duration::from_secs(30));
    assert_eq!(b.read_timeout, Duration::from_secs(30));
    assert_eq!(b.max_idle_connections, 64);
    assert_eq!(b.pool_idle_timeout, Duration::from_secs(4));

    assert_eq!(c.jwt, None);
    assert_eq!(c.admin, None);
    let cache = &c.cache;
    assert_eq!(cache.ttl, Duration::from_secs(3600));
    assert_eq!(cache.max_object_size, 16 << 20);
    assert_eq!(cache.slice_size, 4 << 20);
    assert_eq!(cache.max_sliced_object_size, 100 << 30);
    assert_eq!(cache.slice_readahead, 4);
    assert_eq!(cache.write_policy, WritePolicy::WriteThrough);
    assert_eq!(cache.stale_if_error, None);
    assert_eq!(cache.stale_while_revalidate, None);
    assert_eq!(cache.memory.capacity, 256 << 20);
    assert_eq!(cache.disk, None);
    assert_eq!(cache.redis, None);
}

#[test]
fn cache_section_without_memory_keeps_memory_default() {
    let c = ok(&with_bucket("", "[cache]\nttl = \"5m\""));
    assert_eq!(c.cache.ttl, Duration::from_secs(300));
    assert_eq!(c.cache.memory.capacity, 256 << 20);
    let c = ok(&with_bucket("", "[cache.memory]\n"));
    assert_eq!(c.cache.memory.capacity, 256 << 20);
    let c = ok(&with_bucket("", "[cache.memory]\ncapacity = 0"));
    assert_eq!(c.cache.memory.capacity, 0);
}

#[test]
fn every_key_happy_path() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["cert.pem", "key.pem", "ca.pem", "jwks.json"] {
        std::fs::write(dir.path().join(f), "x").unwrap();
    }
    let text = r#"
[server]
listen = "[::]:8443"
workers = "${WORKERS}"
tls = { cert = "cert.pem", key = "key.pem" }
header_timeout = "5s"
idle_timeout = "2m"
max_header_bytes = "32KiB"
max_headers = 256
max_request_line = 4096
send_timeout = "1.5s"
shutdown_grace = 0
max_connections = 500

[[buckets]]
name = "assets.v2_x-y"
prefix = "/v1/assets"
endpoint = "HTTPS://MinIO.Local:9000/"
region = "garage"
bucket = "my.bucket-1"
access_key = "${AK}"
secret_key = "${SK}"
session_token = "tok"
addressing = "virtual"
ca_file = "ca.pem"
auth = false
ttl = "10m"
cors = { allow_origins = ["https://example.com", "http://localhost:3000", "*"], max_age = "1h" }
connect_timeout = "250ms"
first_byte_timeout = 10
read_timeout = "1m"
max_idle_connections = 0
pool_idle_timeout = "1500ms"

[[buckets]]
name = "raw"
prefix = "/raw"
endpoint = "http://[::1]:9000"
region = "us-east-1"
bucket = "Legacy_Bucket"
access_key = "a"
secret_key = "b"

[jwt]
algorithm = "ES256"
jwks_file = "jwks.json"
token_sources = ["bearer", "query:token", "header:X-Auth-Token"]
issuer = "https://issuer.example"
audience = ["corvid", "other"]
leeway = "0s"

[admin]
claim = { name = "role", value = "admin" }
allow_networks = ["127.0.0.0/8", "10.0.0.0/8", "::1/128", "fd00::/8", "192.168.1.7"]
listen = "127.0.0.1:9090"

[cache]
ttl = "1d"
max_object_size = "1.5GiB"
write_policy = "write-behind"
stale_if_error = "5m"
stale_while_revalidate = "30s"

[cache.memory]
capacity = "${SIZE}"

[cache.disk]
dir = "cache"
capacity = "50GiB"
segment_size = "50GiB"

[cache.redis]
url = "redis://user:p%40ss@Redis.Local:6380/2"
max_object_size = "1MiB"
timeout = "20ms"
"#;
    let c = Config::from_toml_str_in(text, &test_env, dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let s = &c.server;
    assert_eq!(s.listen, "[::]:8443".parse().unwrap());
    assert_eq!(s.workers, 4);
    assert_eq!(s.worker_count(), 4);
    let tls = s.tls.as_ref().unwrap();
    assert_eq!(tls.cert, dir.path().join("cert.pem"));
    assert_eq!(tls.key, dir.path().join("key.pem"));
    assert_eq!(s.header_timeout, Duration::from_secs(5));
    assert_eq!(s.idle_timeout, Duration::from_secs(120));
    assert_eq!(s.max_header_bytes, 32 << 10);
    assert_eq!(s.max_headers, 256);
    assert_eq!(s.max_request_line, 4096);
    assert_eq!(s.send_timeout, Duration::from_millis(1500));
    assert_eq!(s.shutdown_grace, Duration::ZERO);
    assert_eq!(s.max_connections, Some(500));

    let b = &c.buckets[0];
    assert_eq!(b.name, "assets.v2_x-y");
    assert_eq!(b.prefix, "/v1/assets");
    assert_eq!(b.endpoint.scheme, Scheme::Https);
    assert_eq!(b.endpoint.host, "minio.local");
    assert_eq!(b.endpoint.port, 9000);
    assert_eq!(b.endpoint.authority(), "minio.local:9000");
    assert_eq!(b.region, "garage");
    assert_eq!(b.bucket, "my.bucket-1");
    assert_eq!(keys(b).0, "AKIDFROMENV");
    assert_eq!(keys(b).1, "secretfromenv");
    assert_eq!(keys(b).2, Some("tok"));
    assert_eq!(b.addressing, Addressing::Virtual);
    assert_eq!(
        b.ca_file.as_deref(),
        Some(dir.path().join("ca.pem").as_path())
    );
    assert!(!b.auth);
    assert_eq!(b.ttl, Some(Duration::from_secs(600)));
    let cors = b.cors.as_ref().unwrap();
    assert_eq!(cors.allow_origins.len(), 3);
    assert_eq!(cors.max_age, Some(Duration::from_secs(3600)));
    assert!(cors.allows("https://anything.example"));
    assert_eq!(b.connect_timeout, Duration::from_millis(250));
    assert_eq!(b.first_byte_timeout, Duration::from_secs(10));
    assert_eq!(b.read_timeout, Duration::from_secs(60));
    assert_eq!(b.max_idle_connections, 0);
    assert_eq!(b.pool_idle_timeout, Duration::from_millis(1500));

    let raw = &c.buckets[1];
    assert_eq!(raw.endpoint.host, "::1");
    assert_eq!(raw.endpoint.authority(), "[::1]:9000");
    assert_eq!(raw.bucket, "Legacy_Bucket");

    let jwt = c.jwt.as_ref().unwrap();
    assert_eq!(jwt.algorithm, JwtAlgorithm::ES256);
    assert_eq!(jwt.key, JwtKey::JwksFile(dir.path().join("jwks.json")));
    assert_eq!(
        jwt.token_sources,
        vec![
            TokenSource::Bearer,
            TokenSource::Query("token".into()),
            TokenSource::Header(http::HeaderName::from_static("x-auth-token")),
        ]
    );
    assert_eq!(jwt.issuer.as_deref(), Some("https://issuer.example"));
    assert_eq!(
        jwt.audience,
        vec!["corvid".to_string(), "other".to_string()]
    );
    assert_eq!(jwt.leeway, Duration::ZERO);

    let admin = c.admin.as_ref().unwrap();
    assert_eq!(
        admin.claim,
        ClaimMatch {
            name: "role".into(),
            value: "admin".into()
        }
    );
    assert_eq!(admin.allow_networks.len(), 5);
    assert_eq!(admin.allow_networks[4].prefix_len, 32);
    assert_eq!(admin.listen, Some("127.0.0.1:9090".parse().unwrap()));
    assert!(admin.network_allowed("10.1.2.3".parse().unwrap()));
    assert!(admin.network_allowed("::ffff:127.0.0.1".parse().unwrap()));
    assert!(!admin.network_allowed("11.0.0.1".parse().unwrap()));

    let cache = &c.cache;
    assert_eq!(cache.ttl, Duration::from_secs(86_400));
    assert_eq!(cache.max_object_size, 3 << 29);
    assert_eq!(cache.write_policy, WritePolicy::WriteBehind);
    assert_eq!(cache.stale_if_error, Some(Duration::from_secs(300)));
    assert_eq!(cache.stale_while_revalidate, Some(Duration::from_secs(30)));
    assert_eq!(cache.memory.capacity, 2 << 30);
    let disk = cache.disk.as_ref().unwrap();
    assert_eq!(disk.dir, dir.path().join("cache"));
    assert_eq!(disk.capacity, 50 << 30);
    assert_eq!(disk.segment_size, 50 << 30);
    let redis = cache.redis.as_ref().unwrap();
    assert_eq!(
        redis.target,
        RedisTarget {
            tls: false,
            host: "redis.local".into(),
            port: 6380,
            auth: Some(RedisAuth {
                username: Some("user".into()),
                password: "p@ss".into()
            }),
            db: 2,
        }
    );
    assert_eq!(redis.max_object_size, 1 << 20);
    assert_eq!(redis.timeout, Duration::from_millis(20));

    // Secrets never show up in Debug output.
    let dbg = format!("{c:?}");
    for secret in ["secretfromenv", "p@ss", "tok\""] {
        assert!(!dbg.contains(secret), "{secret} leaked into {dbg}");
    }
}

#[test]
fn jwt_variants() {
    let hs = ok(&with_bucket("", JWT));
    let jwt = hs.jwt.unwrap();
    assert_eq!(jwt.algorithm, JwtAlgorithm::HS256);
    assert_eq!(jwt.token_sources, vec![TokenSource::Bearer]);
    assert_eq!(jwt.leeway, Duration::from_secs(30));
    assert_eq!(jwt.audience, Vec::<String>::new());
    assert!(format!("{:?}", jwt.key).contains("redacted"));

    let c = ok(&with_bucket(
        "",
        "[jwt]\nalgorithm = \"HS512\"\nsecret = \"${JWT_SECRET}${JWT_SECRET}\"\naudience = \"one\"",
    ));
    assert_eq!(c.jwt.unwrap().audience, vec!["one".to_string()]);

    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("pub.pem");
    std::fs::write(&pem, "x").unwrap();
    for alg in [
        "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
    ] {
        let c = ok(&with_bucket(
            "",
            &format!(
                "[jwt]\nalgorithm = \"{alg}\"\npublic_key = {:?}",
                pem.display().to_string()
            ),
        ));
        let jwt = c.jwt.unwrap();
        assert_eq!(jwt.algorithm.as_str(), alg);
        assert_eq!(jwt.key, JwtKey::PublicKey(pem.clone()));
    }
}

#[test]
fn endpoints() {
    let cases = [
        (
            "http://localhost:9000",
            Scheme::Http,
            "localhost",
            9000,
            "localhost:9000",
        ),
        (
            "http://127.0.0.1",
            Scheme::Http,
            "127.0.0.1",
            80,
            "127.0.0.1",
        ),
        ("http://h:80/", Scheme::Http, "h", 80, "h"),
        ("https://h:443", Scheme::Https, "h", 443, "h"),
        ("https://h:80", Scheme::Https, "h", 80, "h:80"),
        (
            "https://[2001:db8::1]",
            Scheme::Https,
            "2001:db8::1",
            443,
            "[2001:db8::1]",
        ),
        (
            "http://[::1]:8080/",
            Scheme::Http,
            "::1",
            8080,
            "[::1]:8080",
        ),
    ];
    for (url, scheme, host, port, authority) in cases {
        let e = build::parse_endpoint(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(
            (e.scheme, e.host.as_str(), e.port),
            (scheme, host, port),
            "{url}"
        );
        assert_eq!(e.authority(), authority, "{url}");
    }
    assert_eq!(
        build::parse_endpoint("https://h:8443").unwrap().to_string(),
        "https://h:8443"
    );
}

#[test]
fn cidrs() {
    let c = Cidr::parse("10.0.0.0/8").unwrap();
    assert!(c.contains("10.255.0.1".parse().unwrap()));
    assert!(!c.contains("11.0.0.0".parse().unwrap()));
    assert!(!c.contains("::1".parse().unwrap()));
    assert!(Cidr::parse("0.0.0.0/0")
        .unwrap()
        .contains("8.8.8.8".parse().unwrap()));
    assert!(Cidr::parse("::/0")
        .unwrap()
        .contains("2001:db8::1".parse().unwrap()));
    let v6 = Cidr::parse("fd00::/8").unwrap();
    assert!(v6.contains("fd12::1".parse().unwrap()));
    assert_eq!(v6.to_string(), "fd00::/8");
    let host = Cidr::parse("::1").unwrap();
    assert_eq!(
        (host.addr, host.prefix_len),
        ("::1".parse::<IpAddr>().unwrap(), 128)
    );
    for bad in [
        "10.0.0.0/33",
        "::/129",
        "10.0.0.0/",
        "10.0.0/8",
        "x/8",
        "10.0.0.0/-1",
        "10.0.0.0/+8",
        "",
    ] {
        assert!(Cidr::parse(bad).is_err(), "{bad}");
    }
    assert!(Cidr::parse("10.1.0.0/8")
        .unwrap_err()
        .contains("did you mean \"10.0.0.0/8\""));
}

#[test]
fn example_config_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/corvid.example.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let env = |name: &str| -> Option<String> {
        Some(match name {
            "JWT_SECRET" => "an-hmac-secret-of-at-least-32-bytes!!".into(),
            other => format!("value-of-{other}"),
        })
    };
    let c = Config::from_toml_str(&text, &env).unwrap_or_else(|e| panic!("{e}"));
    assert!(!c.buckets.is_empty());
    assert!(c.jwt.is_some() && c.admin.is_some());
    // Without the environment, every ${VAR} is reported (and nothing else).
    let e = Config::from_toml_str(&text, &|_| None).unwrap_err();
    assert!(
        e.problems.iter().all(|p| p.message.contains("is not set")),
        "{e}"
    );
}

// ---------- env interpolation ----------

#[test]
fn env_interpolation() {
    let c = ok(&with_bucket("", "")
        .replace(
            "\"https://s3.us-east-1.amazonaws.com\"",
            "\"http://${HOST}:${PORT}/\"",
        )
        .replace("\"AKIDEXAMPLE\"", "\"pre-${AK}-post\""));
    let b = &c.buckets[0];
    assert_eq!(b.endpoint.host, "minio.local");
    assert_eq!(b.endpoint.port, 9000);
    assert_eq!(keys(b).0, "pre-AKIDFROMENV-post");

    // Arrays, and the escape.
    let c = ok(&with_bucket(
        "cors = { allow_origins = [\"https://${HOST}\"] }\nregion = \"x\"",
        "",
    )
    .replace("region = \"us-east-1\"\n", ""));
    assert_eq!(
        c.buckets[0].cors.as_ref().unwrap().allow_origins,
        ["https://minio.local"]
    );
    let c = ok(&minimal().replace("\"wJalrXUtnFEMI\"", "\"a$${b}\""));
    assert_eq!(keys(&c.buckets[0]).1, "a${b}");
}

#[test]
fn unset_env_names_key_and_variable() {
    has_problem(
        &minimal().replace("\"AKIDEXAMPLE\"", "\"${MISSING_AK}\""),
        "buckets[0].access_key",
        "environment variable `MISSING_AK` is not set",
    );
    has_problem(
        &minimal().replace("\"AKIDEXAMPLE\"", "\"${A1}/${A2}\""),
        "buckets[0].access_key",
        "`A1`, `A2` are not set",
    );
    has_problem(
        &with_server("workers = \"${NOPE}\""),
        "server.workers",
        "`NOPE` is not set",
    );
    has_problem(
        &minimal().replace("\"AKIDEXAMPLE\"", "\"${AK\""),
        "buckets[0].access_key",
        "unterminated",
    );
    // Exactly one problem: the unset variable is not also reported as a bad value.
    let ps = problems(&minimal().replace("\"127.0.0.1:8080\"", "\"${LISTEN}\""));
    assert_eq!(ps.len(), 1, "{ps:?}");
    assert_eq!(ps[0].key, "server.listen");
}

#[test]
fn env_values_are_validated_like_literals() {
    has_problem(
        &minimal().replace("\"wJalrXUtnFEMI\"", "\"${NEWLINE}\""),
        "buckets[0].secret_key",
        "trailing newline",
    );
    has_problem(
        &minimal().replace("\"wJalrXUtnFEMI\"", "\"${EMPTY}\""),
        "buckets[0].secret_key",
        "must not be empty",
    );
}

// ---------- syntax, loading ----------

#[test]
fn toml_syntax_error_has_line_and_column() {
    let e = parse("[server]\nlisten = \"x\"\nworkers = = 3\n").unwrap_err();
    assert_eq!(e.problems.len(), 1);
    assert_eq!(e.problems[0].key, "");
    let msg = &e.problems[0].message;
    assert!(
        msg.starts_with("TOML syntax error at line 3, column"),
        "{msg}"
    );
    let e = parse("[server]\nlisten = 1\n[server]\n").unwrap_err();
    assert!(e.problems[0].message.contains("line 3"), "{e}");
}

#[test]
fn load_reads_file_and_resolves_relative_paths() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), "x").unwrap();
    let file = dir.path().join("corvid.toml");
    std::fs::write(&file, with_bucket("ca_file = \"ca.pem\"", "")).unwrap();
    let c = Config::load(&file).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.buckets[0].ca_file.as_deref(),
        Some(dir.path().join("ca.pem").as_path())
    );

    let missing = dir.path().join("nope.toml");
    let e = Config::load(&missing).unwrap_err();
    assert_eq!(e.problems.len(), 1);
    assert_eq!(e.problems[0].key, "");
    assert!(e.problems[0].message.contains("nope.toml"), "{e}");
    assert!(e.to_string().starts_with("cannot read config file"), "{e}");
}

// ---------- unknown keys ----------

#[test]
fn unknown_key_at_each_level() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["c.pem", "k.pem"] {
        std::fs::write(dir.path().join(f), "x").unwrap();
    }
    let tls = format!(
        "tls = {{ cert = {:?}, key = {:?}, bogus = 1 }}",
        dir.path().join("c.pem").display().to_string(),
        dir.path().join("k.pem").display().to_string()
    );
    let cases: Vec<(String, &str)> = vec![
        (
            format!("{}\nbogus = 1", minimal()).replace("[server]", "bogus = 1\n[server]"),
            "bogus",
        ),
        (with_server("bogus = 1"), "server.bogus"),
        (with_server(&tls), "server.tls.bogus"),
        (with_bucket("bogus = 1", ""), "buckets[0].bogus"),
        (
            with_bucket("cors = { allow_origins = [\"*\"], bogus = 1 }", ""),
            "buckets[0].cors.bogus",
        ),
        (with_bucket("", &format!("{JWT}bogus = 1")), "jwt.bogus"),
        (
            with_bucket(
                "",
                &format!("{JWT}[admin]\nclaim = {{ name = \"r\", value = \"a\" }}\nbogus = 1"),
            ),
            "admin.bogus",
        ),
        (
            with_bucket(
                "",
                &format!("{JWT}[admin]\nclaim = {{ name = \"r\", value = \"a\", bogus = 1 }}"),
            ),
            "admin.claim.bogus",
        ),
        (with_bucket("", "[cache]\nbogus = 1"), "cache.bogus"),
        (
            with_bucket("", "[cache.memory]\nbogus = 1"),
            "cache.memory.bogus",
        ),
        (
            with_bucket(
                "",
                "[cache.disk]\ndir = \"/d\"\ncapacity = \"1GiB\"\nbogus = 1",
            ),
            "cache.disk.bogus",
        ),
        (
            with_bucket("", "[cache.redis]\nurl = \"redis://r\"\nbogus = 1"),
            "cache.redis.bogus",
        ),
    ];
    for (text, key) in cases {
        has_problem(&text, key, "unknown key");
    }
}

#[test]
fn unknown_key_suggestions() {
    has_problem(
        &with_server("idle_timout = \"5s\""),
        "server.idle_timout",
        "did you mean `idle_timeout`?",
    );
    has_problem(
        &with_server("zzz = 1"),
        "server.zzz",
        "known keys here: header_timeout",
    );
    has_problem(&with_server("\"a.b\" = 1"), "server.\"a.b\"", "unknown key");
}

// ---------- validation rules ----------

#[test]
fn required_keys() {
    has_problem(BUCKET, "server", "required key is missing");
    has_problem(SERVER, "buckets", "required key is missing");
    has_problem(
        &with_server("").replace("listen = \"127.0.0.1:8080\"", ""),
        "server.listen",
        "required",
    );
    for key in [
        "name",
        "prefix",
        "endpoint",
        "region",
        "bucket",
        "access_key",
        "secret_key",
    ] {
        let text: String = minimal()
            .lines()
            .filter(|l| !l.starts_with(&format!("{key} =")))
            .collect::<Vec<_>>()
            .join("\n");
        has_problem(
            &text,
            &format!("buckets[0].{key}"),
            "required key is missing",
        );
    }
    has_problem(
        &with_bucket("", "[jwt]\nsecret = \"x\""),
        "jwt.algorithm",
        "required",
    );
    has_problem(
        &with_bucket("", &format!("{JWT}[admin]\n")),
        "admin.claim",
        "required",
    );
    has_problem(
        &with_bucket("", &format!("{JWT}[admin]\nclaim = {{ name = \"r\" }}")),
        "admin.claim.value",
        "required",
    );
    has_problem(
        &with_bucket("", "[cache.disk]\ncapacity = 1"),
        "cache.disk.dir",
        "required",
    );
    has_problem(
        &with_bucket("", "[cache.disk]\ndir = \"/d\""),
        "cache.disk.capacity",
        "required",
    );
    has_problem(
        &with_bucket("", "[cache.redis]\n"),
        "cache.redis.url",
        "required",
    );
    has_problem(
        &with_bucket("cors = {}", ""),
        "buckets[0].cors.allow_origins",
        "required",
    );
}

#[test]
fn type_errors() {
    has_problem(
        &with_server("workers = true"),
        "server.workers",
        "expected a non-negative integer, found boolean true",
    );
    has_problem(
        &with_server("workers = \"four\""),
        "server.workers",
        "not a non-negative integer",
    );
    has_problem(
        &with_server("workers = -1"),
        "server.workers",
        "must not be negative",
    );
    has_problem(
        &minimal().replace("\"127.0.0.1:8080\"", "8080"),
        "server.listen",
        "expected a string, found integer 8080",
    );
    has_problem(
        &with_bucket("auth = \"true\"", ""),
        "buckets[0].auth",
        "expected true or false",
    );
    has_problem(
        &with_server("idle_timeout = 1.5"),
        "server.idle_timeout",
        "found float 1.5",
    );
    has_problem(
        &with_server("max_header_bytes = [1]"),
        "server.max_header_bytes",
        "found array",
    );
    has_problem(
        &with_server("tls = \"yes\""),
        "server.tls",
        "expected a table",
    );
    has_problem(
        &format!("server = 1\n{BUCKET}"),
        "server",
        "expected a table",
    );
    has_problem(
        &format!("buckets = {{}}\n{SERVER}"),
        "buckets",
        "expected an array",
    );
    has_problem(
        &format!("buckets = [1]\n{SERVER}"),
        "buckets[0]",
        "expected a table",
    );
    has_problem(
        &with_bucket("", "[cache]\nttl = 1979-05-27"),
        "cache.ttl",
        "found datetime",
    );
}

#[test]
fn server_rules() {
    for bad in [
        "\"localhost:8080\"",
        "\"0.0.0.0\"",
        "\":::8080\"",
        "\"0.0.0.0:99999\"",
        "\"\"",
    ] {
        has_problem(
            &minimal().replace("\"127.0.0.1:8080\"", bad),
            "server.listen",
            "not a socket address",
        );
    }
    has_problem(
        &with_server("workers = 5000"),
        "server.workers",
        "between 0 and 1024",
    );
    has_problem(
        &with_server("max_headers = 257"),
        "server.max_headers",
        "between 1 and 256",
    );
    has_problem(
        &with_server("max_headers = 0"),
        "server.max_headers",
        "between 1 and 256",
    );
    has_problem(
        &with_server("max_header_bytes = 0"),
        "server.max_header_bytes",
        "between 1B and 1MiB",
    );
    has_problem(
        &with_server("max_request_line = \"2MiB\""),
        "server.max_request_line",
        "between 1B and 1MiB",
    );
    has_problem(
        &with_server("max_connections = 0"),
        "server.max_connections",
        "between 1",
    );
    for key in ["header_timeout", "idle_timeout", "send_timeout"] {
        has_problem(
            &with_server(&format!("{key} = \"0s\"")),
            &format!("server.{key}"),
            "greater than 0",
        );
        has_problem(
            &with_server(&format!("{key} = 0")),
            &format!("server.{key}"),
            "greater than 0",
        );
    }
    has_problem(
        &with_server("shutdown_grace = \"-1s\""),
        "server.shutdown_grace",
        "negative",
    );
    has_problem(
        &with_server("header_timeout = \"10 sec\""),
        "server.header_timeout",
        "unknown unit `sec`",
    );
    has_problem(
        &with_server("tls = { cert = \"/definitely/not/here.pem\", key = \"/nope.pem\" }"),
        "server.tls.cert",
        "cannot read `/definitely/not/here.pem`",
    );
    has_problem(
        &with_server("tls = { cert = \"/\", key = \"/nope.pem\" }"),
        "server.tls.cert",
        "not a regular file",
    );
    has_problem(
        &with_server("tls = { cert = \"/\", key = \"/nope.pem\" }"),
        "server.tls.key",
        "cannot read",
    );
    has_problem(
        &with_server("tls = { cert = \"\" }"),
        "server.tls.cert",
        "must not be empty",
    );
}

#[test]
fn bucket_name_rules() {
    has_problem(
        &minimal().replace("name = \"assets\"", "name = \"a b\""),
        "buckets[0].name",
        "may contain only",
    );
    has_problem(
        &minimal().replace("name = \"assets\"", "name = \"\""),
        "buckets[0].name",
        "must not be empty",
    );
    let two = format!("{}{}", minimal(), BUCKET.replace("/assets", "/other"));
    has_problem(
        &two,
        "buckets[1].name",
        "duplicate name `assets` (also buckets[0])",
    );
    let two = format!("{}{}", minimal(), BUCKET.replace("\"assets\"", "\"other\""));
    has_problem(
        &two,
        "buckets[1].prefix",
        "duplicate prefix `/assets` (also buckets[0])",
    );
    has_problem(
        &format!("buckets = []\n{SERVER}"),
        "buckets",
        "at least one bucket",
    );
}

#[test]
fn prefix_rules() {
    let cases = [
        ("assets", "must start with '/'"),
        ("", "must start with '/'"),
        ("/", "must not be \"/\""),
        ("/assets/", "must not end with '/'"),
        ("/a//b", "must not contain \"//\""),
        ("/a/./b", "\".\" or \"..\" segments"),
        ("/a/..", "\".\" or \"..\" segments"),
        ("/..", "\".\" or \"..\" segments"),
        ("/a%20b", "must not contain '%'"),
        ("/a?b", "must not contain '?'"),
        ("/a#b", "must not contain '#'"),
        ("/a b", "contains ' '"),
        ("/café", "contains 'é'"),
        ("/a\\\\b", "contains '\\\\'"),
        ("/health", "shadow the internal route /health"),
        ("/ready/x", "shadow the internal route /ready"),
        ("/metrics", "shadow the internal route /metrics"),
        ("/admin", "shadow the internal route /admin"),
        ("/admin/x", "shadow the internal route /admin"),
    ];
    for (prefix, needle) in cases {
        has_problem(
            &minimal().replace("prefix = \"/assets\"", &format!("prefix = \"{prefix}\"")),
            "buckets[0].prefix",
            needle,
        );
    }
    for good in [
        "/a",
        "/a/b/c",
        "/healthz",
        "/administration",
        "/v1.0/a-b_c~d",
        "/x/!$&'()*+,;=:@",
        "/.well-known",
        "/..x",
    ] {
        ok(&minimal().replace("prefix = \"/assets\"", &format!("prefix = \"{good}\"")));
    }
}

#[test]
fn endpoint_rules() {
    let cases = [
        ("s3.amazonaws.com", "must start with http:// or https://"),
        ("ftp://h", "scheme must be http or https"),
        ("https://", "has no host"),
        ("https://h/bucket", "must not have a path"),
        ("https://h?x", "must not have a path"),
        ("https://h#x", "must not have a path"),
        ("https://u:p@h", "must not contain credentials"),
        ("https://h:0", "not a valid port"),
        ("https://h:65536", "not a valid port"),
        ("https://h:", "not a valid port"),
        ("https://h:+80", "not a valid port"),
        ("https://::1", "must be in brackets"),
        ("https://[::1", "unclosed '['"),
        ("https://[nope]", "not an IPv6 address"),
        ("https://[::1]x", "unexpected text after ']'"),
        ("https://h_!", "not a valid host name"),
    ];
    for (url, needle) in cases {
        has_problem(
            &minimal().replace("https://s3.us-east-1.amazonaws.com", url),
            "buckets[0].endpoint",
            needle,
        );
    }
}

#[test]
fn bucket_field_rules() {
    has_problem(
        &minimal().replace("\"us-east-1\"", "\"us east\""),
        "buckets[0].region",
        "may contain only",
    );
    has_problem(
        &minimal().replace("\"us-east-1\"", "\"\""),
        "buckets[0].region",
        "must not be empty",
    );
    has_problem(
        &minimal().replace("\"my-assets\"", "\"a/b\""),
        "buckets[0].bucket",
        "must not contain '/'",
    );
    has_problem(
        &minimal().replace("\"my-assets\"", "\"\""),
        "buckets[0].bucket",
        "must not be empty",
    );
    for bad in [
        "My-Assets",
        "ab",
        "a..b",
        "-ab",
        "ab-",
        "192.168.1.1",
        "a_b",
        &"a".repeat(64),
    ] {
        has_problem(
            &with_bucket("addressing = \"virtual\"", "")
                .replace("\"my-assets\"", &format!("{bad:?}")),
            "buckets[0].bucket",
            "not DNS-compatible",
        );
    }
    // Path-style accepts legacy names.
    ok(&minimal().replace("\"my-assets\"", "\"My_Legacy.Bucket\""));
    has_problem(
        &with_bucket("addressing = \"host\"", ""),
        "buckets[0].addressing",
        "not an addressing style",
    );
    has_problem(
        &with_bucket("session_token = \"\"", ""),
        "buckets[0].session_token",
        "must not be empty",
    );
    has_problem(
        &with_bucket("session_token = \"a b\"", ""),
        "buckets[0].session_token",
        "whitespace",
    );
    has_problem(
        &minimal().replace("\"AKIDEXAMPLE\"", "\"AK ID\""),
        "buckets[0].access_key",
        "whitespace",
    );
    has_problem(
        &with_bucket("ca_file = \"/nope/ca.pem\"", ""),
        "buckets[0].ca_file",
        "cannot read",
    );
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "x").unwrap();
    has_problem(
        &with_bucket(&format!("ca_file = {:?}", ca.display().to_string()), "")
            .replace("https://s3", "http://s3"),
        "buckets[0].ca_file",
        "only meaningful for an https:// endpoint",
    );
    has_problem(
        &with_bucket("auth = true", ""),
        "buckets[0].auth",
        "requires a [jwt] section",
    );
    assert!(ok(&with_bucket("auth = true", JWT)).buckets[0].auth);
    assert!(!ok(&with_bucket("auth = false", JWT)).buckets[0].auth);
    // ttl = 0: stored, revalidated on every use (issue 10); negative_ttl per bucket.
    let z = ok(&with_bucket("ttl = 0\nnegative_ttl = \"30s\"", ""));
    assert_eq!(z.buckets[0].ttl, Some(Duration::ZERO));
    assert_eq!(z.negative_ttl(0), Duration::from_secs(30));
    assert_eq!(ok(&with_bucket("", "")).negative_ttl(0), Duration::ZERO);
    has_problem(
        &with_bucket("negative_ttl = -1", ""),
        "buckets[0].negative_ttl",
        "",
    );
    has_problem(
        &with_bucket("ttl = \"1y\"", ""),
        "buckets[0].ttl",
        "unknown unit `y`",
    );
    for key in [
        "connect_timeout",
        "first_byte_timeout",
        "read_timeout",
        "pool_idle_timeout",
    ] {
        has_problem(
            &with_bucket(&format!("{key} = \"0ms\""), ""),
            &format!("buckets[0].{key}"),
            "greater than 0",
        );
    }
    has_problem(
        &with_bucket("max_idle_connections = -1", ""),
        "buckets[0].max_idle_connections",
        "negative",
    );
}

/// `pool_idle_timeout`: 4 s by default (below Node's and Apache's 5 s keep-alive timeout), any
/// positive duration, and 0 refused (not pooling is `max_idle_connections = 0`).
#[test]
fn pool_idle_timeout_key() {
    assert_eq!(
        ok(&minimal()).buckets[0].pool_idle_timeout,
        Duration::from_secs(4)
    );
    let c = ok(&with_bucket("pool_idle_timeout = \"250ms\"", ""));
    assert_eq!(c.buckets[0].pool_idle_timeout, Duration::from_millis(250));
    let c = ok(&with_bucket("pool_idle_timeout = 2", ""));
    assert_eq!(c.buckets[0].pool_idle_timeout, Duration::from_secs(2));
    has_problem(
        &with_bucket("pool_idle_timeout = \"soon\"", ""),
        "buckets[0].pool_idle_timeout",
        "is not a number followed by a unit",
    );
    has_problem(
        &with_bucket("pool_idle_timeout = 0", ""),
        "buckets[0].pool_idle_timeout",
        "greater than 0",
    );
}

#[test]
fn cors_rules() {
    has_problem(
        &with_bucket("cors = { allow_origins = [] }", ""),
        "buckets[0].cors.allow_origins",
        "at least one origin",
    );
    let cases = [
        ("https://example.com/", "must not end with '/'"),
        ("example.com", "an origin is \"*\""),
        ("https://example.com/path", "must not have a path"),
        ("", "must not be empty"),
    ];
    for (origin, needle) in cases {
        has_problem(
            &with_bucket(
                &format!("cors = {{ allow_origins = [\"*\", {origin:?}] }}"),
                "",
            ),
            "buckets[0].cors.allow_origins[1]",
            needle,
        );
    }
    has_problem(
        &with_bucket("cors = { allow_origins = [\"*\"], max_age = \"-1s\" }", ""),
        "buckets[0].cors.max_age",
        "negative",
    );
    let c = ok(&with_bucket(
        "cors = { allow_origins = [\"https://A.example\"], max_age = 0 }",
        "",
    ));
    let cors = c.buckets[0].cors.clone().unwrap();
    assert!(cors.allows("https://a.example"));
    assert!(!cors.allows("https://b.example"));
    assert_eq!(cors.max_age, Some(Duration::ZERO));
}

#[test]
fn jwt_rules() {
    let jwt = |body: &str| with_bucket("", &format!("[jwt]\n{body}"));
    has_problem(
        &jwt("algorithm = \"none\"\nsecret = \"x\""),
        "jwt.algorithm",
        "not a supported algorithm",
    );
    has_problem(
        &jwt("algorithm = \"hs256\"\nsecret = \"x\""),
        "jwt.algorithm",
        "expected one of HS256",
    );
    has_problem(
        &jwt("algorithm = \"HS256\""),
        "jwt.secret",
        "required for HS256",
    );
    has_problem(
        &jwt("algorithm = \"HS256\"\nsecret = \"short\""),
        "jwt.secret",
        "at least 32 required",
    );
    has_problem(
        &jwt(&format!(
            "algorithm = \"HS384\"\nsecret = \"{}\"",
            "x".repeat(47)
        )),
        "jwt.secret",
        "at least 48",
    );
    has_problem(
        &jwt(&format!(
            "algorithm = \"HS512\"\nsecret = \"{}\"",
            "x".repeat(63)
        )),
        "jwt.secret",
        "at least 64",
    );
    has_problem(
        &jwt("algorithm = \"HS256\"\nsecret = \"\""),
        "jwt.secret",
        "must not be empty",
    );
    has_problem(
        &jwt("algorithm = \"HS256\"\nsecret = \"${JWT_SECRET}\"\npublic_key = \"/nope\""),
        "jwt.public_key",
        "not used by HS256",
    );
    has_problem(
        &jwt("algorithm = \"RS256\""),
        "jwt",
        "RS256 needs one of `public_key` or `jwks_file`",
    );
    has_problem(
        &jwt("algorithm = \"RS256\"\nsecret = \"x\"\npublic_key = \"/nope\""),
        "jwt.secret",
        "not used by RS256",
    );
    has_problem(
        &jwt("algorithm = \"RS256\"\npublic_key = \"/nope\""),
        "jwt.public_key",
        "cannot read",
    );
    has_problem(
        &jwt("algorithm = \"RS256\"\njwks_file = \"/nope\""),
        "jwt.jwks_file",
        "cannot read",
    );
    has_problem(
        &jwt("algorithm = \"RS256\"\npublic_key = \"/a\"\njwks_file = \"/b\""),
        "jwt.jwks_file",
        "set only one",
    );
    let sources = |s: &str| {
        jwt(&format!(
            "algorithm = \"HS256\"\nsecret = \"${{JWT_SECRET}}\"\ntoken_sources = {s}"
        ))
    };
    has_problem(&sources("[]"), "jwt.token_sources", "at least one source");
    has_problem(
        &sources("[\"cookie:x\"]"),
        "jwt.token_sources[0]",
        "not a token source",
    );
    has_problem(
        &sources("[\"bearer\", \"query:\"]"),
        "jwt.token_sources[1]",
        "invalid query parameter name",
    );
    has_problem(
        &sources("[\"query:a&b\"]"),
        "jwt.token_sources[0]",
        "invalid query parameter name",
    );
    has_problem(
        &sources("[\"header:bad header\"]"),
        "jwt.token_sources[0]",
        "not a valid header name",
    );
    has_problem(
        &sources("[\"header:\"]"),
        "jwt.token_sources[0]",
        "not a valid header name",
    );
    has_problem(
        &sources("\"bearer\""),
        "jwt.token_sources",
        "expected an array",
    );
    let more = |s: &str| {
        jwt(&format!(
            "algorithm = \"HS256\"\nsecret = \"${{JWT_SECRET}}\"\n{s}"
        ))
    };
    has_problem(&more("issuer = \"\""), "jwt.issuer", "must not be empty");
    has_problem(
        &more("audience = [\"a\", \"\"]"),
        "jwt.audience[1]",
        "must not be empty",
    );
    has_problem(&more("audience = 3"), "jwt.audience", "expected a string");
    has_problem(&more("leeway = \"soon\""), "jwt.leeway", "not a number");
}

#[test]
fn admin_rules() {
    let admin = |body: &str| {
        with_bucket(
            "",
            &format!("{JWT}[admin]\nclaim = {{ name = \"role\", value = \"admin\" }}\n{body}"),
        )
    };
    ok(&admin(""));
    has_problem(
        &with_bucket(
            "",
            "[admin]\nclaim = { name = \"role\", value = \"admin\" }",
        ),
        "admin",
        "requires a [jwt] section",
    );
    has_problem(
        &admin("allow_networks = []"),
        "admin.allow_networks",
        "must not be empty",
    );
    has_problem(
        &admin("allow_networks = [\"10.0.0.0/8\", \"10.0.0.1/8\"]"),
        "admin.allow_networks[1]",
        "host bits set",
    );
    has_problem(
        &admin("allow_networks = [\"10.0.0.0/40\"]"),
        "admin.allow_networks[0]",
        "prefix length must be 0..=32",
    );
    has_problem(
        &admin("allow_networks = [\"localhost\"]"),
        "admin.allow_networks[0]",
        "not a CIDR",
    );
    has_problem(
        &admin("listen = \"127.0.0.1:8080\""),
        "admin.listen",
        "must differ from server.listen",
    );
    has_problem(
        &admin("listen = \"nope\""),
        "admin.listen",
        "not a socket address",
    );
    has_problem(
        &with_bucket(
            "",
            &format!("{JWT}[admin]\nclaim = {{ name = \"\", value = \"admin\" }}"),
        ),
        "admin.claim.name",
        "must not be empty",
    );
    has_problem(
        &with_bucket(
            "",
            &format!("{JWT}[admin]\nclaim = {{ name = \"role\", value = true }}"),
        ),
        "admin.claim.value",
        "expected a string",
    );
}

#[test]
fn cache_rules() {
    let cache = |body: &str| with_bucket("", body);
    assert_eq!(ok(&cache("[cache]\nttl = 0")).cache.ttl, Duration::ZERO);
    let n = ok(&cache("[cache]\nnegative_ttl = \"10s\""));
    assert_eq!(n.cache.negative_ttl, Duration::from_secs(10));
    has_problem(
        &cache("[cache]\nnegative_ttl = \"x\""),
        "cache.negative_ttl",
        "",
    );
    has_problem(
        &cache("[cache]\nmax_object_size = 0"),
        "cache.max_object_size",
        "greater than 0",
    );
    has_problem(
        &cache("[cache]\nmax_object_size = \"1KB\""),
        "cache.max_object_size",
        "unknown unit `KB`",
    );
    has_problem(
        &cache("[cache]\nmax_object_size = \"99999999999TiB\""),
        "cache.max_object_size",
        "too large",
    );
    has_problem(
        &cache("[cache]\nwrite_policy = \"write-back\""),
        "cache.write_policy",
        "not a write policy",
    );
    has_problem(
        &cache("[cache]\nstale_if_error = -5"),
        "cache.stale_if_error",
        "negative",
    );
    has_problem(
        &cache("[cache]\nstale_while_revalidate = \"x\""),
        "cache.stale_while_revalidate",
        "not a number",
    );
    ok(&cache(
        "[cache]\nstale_if_error = 0\nstale_while_revalidate = \"0s\"",
    ));
    has_problem(
        &cache("[cache.memory]\ncapacity = -1"),
        "cache.memory.capacity",
        "negative",
    );
    has_problem(
        &cache("[cache]\nmemory = 5"),
        "cache.memory",
        "expected a table",
    );
    has_problem(
        &cache("[cache]\nslice_size = \"32MiB\""),
        "cache.slice_size",
        "must not exceed cache.max_object_size (32MiB > 16MiB)",
    );
    assert_eq!(
        ok(&cache("[cache]\nmax_object_size = \"1MiB\""))
            .cache
            .slice_size,
        1 << 20,
        "an unset slice size follows a smaller max_object_size"
    );
    has_problem(
        &cache("[cache]\nslice_size = 0"),
        "cache.slice_size",
        "greater than 0",
    );
    has_problem(
        &cache("[cache]\nslice_readahead = 65"),
        "cache.slice_readahead",
        "at most 64",
    );
    assert_eq!(ok(&cache("[cache]")).cache.warm_concurrency, 4);
    assert_eq!(
        ok(&cache("[cache]\nwarm_concurrency = 16"))
            .cache
            .warm_concurrency,
        16
    );
    for bad in ["0", "65"] {
        has_problem(
            &cache(&format!("[cache]\nwarm_concurrency = {bad}")),
            "cache.warm_concurrency",
            "must be 1 to 64",
        );
    }
    has_problem(
        &cache("[cache]\nmax_sliced_object_size = \"lots\""),
        "cache.max_sliced_object_size",
        "lots",
    );
    let sliced = ok(&cache(
        "[cache]\nmax_object_size = \"1MiB\"\nslice_size = \"256KiB\"\n\
         max_sliced_object_size = 0\nslice_readahead = \"8\"",
    ))
    .cache;
    assert_eq!(
        (
            sliced.slice_size,
            sliced.max_sliced_object_size,
            sliced.slice_readahead
        ),
        (256 << 10, 0, 8)
    );
    let disk = |body: &str| {
        cache(&format!(
            "[cache.disk]\ndir = \"/var/cache/corvid\"\n{body}"
        ))
    };
    has_problem(
        &disk("capacity = 0"),
        "cache.disk.capacity",
        "greater than 0",
    );
    has_problem(
        &disk("capacity = \"1GiB\"\nsegment_size = 0"),
        "cache.disk.segment_size",
        "greater than 0",
    );
    has_problem(
        &disk("capacity = \"32MiB\""),
        "cache.disk.segment_size",
        "must not exceed capacity (64MiB > 32MiB)",
    );
    has_problem(
        &cache("[cache.disk]\ndir = \"\"\ncapacity = 1"),
        "cache.disk.dir",
        "must not be empty",
    );
    let c = ok(&disk("capacity = \"1GiB\"\nsegment_size = \"1MiB\""));
    assert_eq!(c.cache.disk.unwrap().segment_size, 1 << 20);
    let c = ok(&disk("capacity = \"1GiB\""));
    assert_eq!(c.cache.disk.unwrap().segment_size, 64 << 20);

    let redis = |url: &str| cache(&format!("[cache.redis]\nurl = {url:?}"));
    let r = ok(&redis("redis://127.0.0.1")).cache.redis.unwrap();
    assert_eq!(
        (r.max_object_size, r.timeout),
        (4 << 20, Duration::from_millis(50))
    );
    let target = |url: &str| ok(&redis(url)).cache.redis.unwrap().target;
    let login = |user: Option<&str>, password: &str| {
        Some(RedisAuth {
            username: user.map(str::to_owned),
            password: password.to_owned(),
        })
    };
    let t = |host: &str, port, auth, db| RedisTarget {
        tls: false,
        host: host.to_owned(),
        port,
        auth,
        db,
    };
    let tls = |t: RedisTarget| RedisTarget { tls: true, ..t };
    for (url, want) in [
        ("redis://127.0.0.1", t("127.0.0.1", 6379, None, 0)),
        ("redis://cache.internal", t("cache.internal", 6379, None, 0)),
        (
            "REDIS://Cache.Internal:7000",
            t("cache.internal", 7000, None, 0),
        ),
        ("redis://[::1]", t("::1", 6379, None, 0)),
        ("redis://[::1]:7000/", t("::1", 7000, None, 0)),
        ("redis://r/0", t("r", 6379, None, 0)),
        ("redis://r:6380/15", t("r", 6380, None, 15)),
        ("redis://:pw@r", t("r", 6379, login(None, "pw"), 0)),
        (
            "redis://:pw@[::1]:7000/",
            t("::1", 7000, login(None, "pw"), 0),
        ),
        (
            "redis://alice:secret@r:6380/2",
            t("r", 6380, login(Some("alice"), "secret"), 2),
        ),
        // Percent-decoded; ':' after the first is part of the password; the last '@' ends it.
        (
            "redis://al%69ce%3Ax:p%40ss%3Aw%2F%3F%23%25@r",
            t("r", 6379, login(Some("alice:x"), "p@ss:w/?#%"), 0),
        ),
        (
            "redis://u:a:b@c@r",
            t("r", 6379, login(Some("u"), "a:b@c"), 0),
        ),
        (
            "redis://:%C3%A9t%C3%A9@r",
            t("r", 6379, login(None, "été"), 0),
        ),
        // rediss://: the same rules, TLS on; the port is 6379 unless given (as ElastiCache).
        ("rediss://r", tls(t("r", 6379, None, 0))),
        ("REDISS://R:6380", tls(t("r", 6380, None, 0))),
        (
            "rediss://127.0.0.1:7000/",
            tls(t("127.0.0.1", 7000, None, 0)),
        ),
        ("rediss://[::1]", tls(t("::1", 6379, None, 0))),
        (
            "rediss://:pw@r:6380/1",
            tls(t("r", 6380, login(None, "pw"), 1)),
        ),
        (
            "rediss://default:p%40ss@r/0",
            tls(t("r", 6379, login(Some("default"), "p@ss"), 0)),
        ),
    ] {
        assert_eq!(target(url), want, "{url}");
        assert_eq!(url.parse::<RedisTarget>().as_ref(), Ok(&want), "{url}");
    }
    assert_eq!(target("redis://[::1]:7000").authority(), "[::1]:7000");
    assert_eq!(target("redis://r").authority(), "r:6379");
    assert_eq!(target("rediss://r").authority(), "r:6379");

    let forms = "redis://:PASSWORD@host for a password, or redis://USER:PASSWORD@host";
    for (url, needle) in [
        ("unix:///run/redis.sock", "Unix socket is not supported"),
        (
            "redis+unix:///run/redis.sock",
            "Unix socket is not supported",
        ),
        ("http://r", "scheme `http` is not supported; use redis://"),
        ("127.0.0.1:6379", "must start with redis://"),
        ("redis://", "has no host"),
        ("redis:///0", "has no host"),
        ("redis://:pw@", "has no host"),
        ("redis://:6379", "has no host"),
        ("redis://r:abc", "`abc` is not a valid port"),
        ("redis://r:0", "`0` is not a valid port"),
        ("redis://r:65536", "`65536` is not a valid port"),
        ("redis://r:", "is not a valid port"),
        ("redis://::1", "IPv6 address must be in brackets"),
        ("redis://[::1", "unclosed '['"),
        ("redis://[nope]", "is not an IPv6 address"),
        ("redis://r r", "is not a valid host name"),
        ("redis://r/db", "path `/db` must be a database number"),
        ("redis://r/-1", "must be a database number"),
        ("redis://r/+1", "must be a database number"),
        ("redis://r/1/", "must be a database number"),
        ("redis://r/4294967296", "must be a database number"),
        ("redis://r?x=1", "must not have a query or fragment"),
        (
            "redis://r/0?protocol=resp3",
            "must not have a query or fragment",
        ),
        ("redis://r?", "must not have a query or fragment"),
        ("redis://r#frag", "must not have a query or fragment"),
        ("redis://:pa#ss@r", "%23"),
        ("redis://:pa/ss@r", "%2F"),
        ("redis://secret@r", "ambiguous"),
        ("redis://secret@r", forms),
        ("redis://alice:@r", "password before '@' is empty"),
        ("redis://:@r", "password before '@' is empty"),
        ("redis://@r", "ambiguous"),
        ("redis://:%FF@r", "not valid UTF-8"),
        // rediss:// follows the same login, host, port and db rules.
        ("rediss://secret@r", "ambiguous"),
        ("rediss://alice:@r", "password before '@' is empty"),
        ("rediss://", "has no host"),
        ("rediss://r:0", "`0` is not a valid port"),
        ("rediss://r/db", "must be a database number"),
        (
            "rediss://r?ssl_cert_reqs=none",
            "must not have a query or fragment",
        ),
        ("redisss://r", "scheme `redisss` is not supported"),
        ("rediss+unix:///run/redis.sock", "is not supported"),
    ] {
        has_problem(&redis(url), "cache.redis.url", needle);
        let direct = url.parse::<RedisTarget>().unwrap_err();
        assert!(direct.contains(needle), "{url}: {direct}");
    }
    // No message repeats a credential (`corvid check` prints them).
    for url in [
        "redis://hunter2@r",
        "redis://alice:hunter2@r r",
        "redis://alice:hunter2@r:99999",
        "redis://:hunter2@r/x",
        "redis://:hun/ter2@r",
        "redis://:hunter2@r?x",
        "redis://:hunter2%FF@r",
        "rediss://alice:hunter2@r:0",
        "rediss://hunter2@r",
        "rediss://:hunter2@r/x",
        ":hunter2@r://x",
    ] {
        let e = url.parse::<RedisTarget>().unwrap_err();
        assert!(!e.contains("hunter2") && !e.contains("ter2"), "{url}: {e}");
        let ps = problems(&redis(url));
        assert!(
            ps.iter().all(|p| !p.message.contains("ter2")),
            "{url}: {ps:?}"
        );
    }
    // Nor does Debug output (logged configs).
    let c = ok(&redis("redis://alice:hunter2@r"));
    for dbg in [format!("{c:?}"), format!("{c:#?}")] {
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(dbg.contains("alice"), "{dbg}");
    }
    // cache.redis.ca_file: only with rediss://, must exist, relative to the config file.
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("redis-ca.pem");
    std::fs::write(&ca, "x").unwrap();
    let with_ca = |url: &str, ca: &str| {
        cache(&format!(
            "[cache.redis]\nurl = {url:?}\nca_file = {:?}",
            ca.to_string()
        ))
    };
    let r = ok(&with_ca("rediss://r", &ca.display().to_string()))
        .cache
        .redis
        .unwrap();
    assert_eq!(
        (r.target.tls, r.ca_file.as_deref()),
        (true, Some(ca.as_path()))
    );
    assert_eq!(ok(&redis("rediss://r")).cache.redis.unwrap().ca_file, None);
    assert_eq!(ok(&redis("redis://r")).cache.redis.unwrap().ca_file, None);
    has_problem(
        &with_ca("redis://r", &ca.display().to_string()),
        "cache.redis.ca_file",
        "only meaningful for a rediss:// url",
    );
    has_problem(
        &with_ca("rediss://r", "/nope/redis-ca.pem"),
        "cache.redis.ca_file",
        "cannot read",
    );
    has_problem(
        &with_ca("rediss://r", &dir.path().display().to_string()),
        "cache.redis.ca_file",
        "not a regular file",
    );
    has_problem(
        &with_ca("rediss://r", ""),
        "cache.redis.ca_file",
        "must not be empty",
    );
    // A bad URL and a bad ca_file are both reported.
    let ps = problems(&with_ca("rediss://r:0", "/nope/redis-ca.pem"));
    assert!(ps.iter().any(|p| p.key == "cache.redis.url"), "{ps:?}");
    assert!(ps.iter().any(|p| p.key == "cache.redis.ca_file"), "{ps:?}");
    let file = dir.path().join("corvid.toml");
    std::fs::write(
        &file,
        format!(
            "{}\n[cache.redis]\nurl = \"rediss://:pw@r\"\nca_file = \"redis-ca.pem\"\n",
            minimal()
        ),
    )
    .unwrap();
    let c = Config::load(&file).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.cache.redis.unwrap().ca_file, Some(ca.clone()));

    has_problem(
        &cache("[cache.redis]\nurl = \"redis://r\"\ntimeout = 0"),
        "cache.redis.timeout",
        "greater than 0",
    );
    has_problem(
        &cache("[cache.redis]\nurl = \"redis://r\"\nmax_object_size = 0"),
        "cache.redis.max_object_size",
        "greater than 0",
    );
}

// ---------- all problems at once ----------

#[test]
fn multiple_problems_reported_together() {
    let text = r#"
bogus_top = 1
[server]
listen = "nope"
workers = -2
idle_timout = "5s"

[[buckets]]
name = "a b"
prefix = "/health"
endpoint = "ftp://x"
region = "r"
bucket = "b"
access_key = "${UNSET_AK}"
secret_key = "s"
auth = true

[[buckets]]
name = "ok"
prefix = "/ok/"
endpoint = "http://x"
region = "r"
bucket = "b"
secret_key = "s"

[cache]
ttl = "1 fortnight"
[cache.disk]
dir = "/d"
capacity = "1MiB"
"#;
    let e = parse(text).unwrap_err();
    let keys: Vec<&str> = e.problems.iter().map(|p| p.key.as_str()).collect();
    for expected in [
        "bogus_top",
        "server.listen",
        "server.workers",
        "server.idle_timout",
        "buckets[0].name",
        "buckets[0].prefix",
        "buckets[0].endpoint",
        "buckets[0].access_key",
        "buckets[0].auth",
        "buckets[1].prefix",
        "buckets[1].access_key",
        "cache.ttl",
        "cache.disk.segment_size",
    ] {
        assert!(keys.contains(&expected), "missing {expected} in {keys:?}");
    }
    assert_eq!(keys.len(), 13, "{e}");
    // Display: one `key: problem` per line.
    let shown = e.to_string();
    assert_eq!(shown.lines().count(), e.problems.len());
    for (line, p) in shown.lines().zip(&e.problems) {
        assert_eq!(line, format!("{}: {}", p.key, p.message));
    }
    let _: &dyn std::error::Error = &e;
}

/// Parses one `claims` element on its own (a bucket with rules needs `auth = true`, which is
/// refused until verification is wired into the request path, so the whole config never loads).
fn claim_rule(text: &str) -> Result<ClaimRule, Vec<Problem>> {
    let table: toml::Table = text.parse().unwrap();
    let env = |_: &str| None;
    let mut cx = walk::Ctx::new(&env, None);
    let r = build::claim_rule(&mut cx, walk::Section::new("r".into(), table));
    match r {
        Some(r) if cx.problems.is_empty() => Ok(r),
        _ => Err(cx.problems),
    }
}

#[test]
fn claim_rules() {
    let rule = |t: &str| claim_rule(t).unwrap_or_else(|p| panic!("{t}: {p:?}"));
    let eq = |name: &str, v: ClaimValue| ClaimRule {
        name: name.into(),
        test: ClaimTest::Equals(v),
    };
    assert_eq!(
        rule("name = \"tenant\"\nequals = \"acme\""),
        eq("tenant", ClaimValue::String("acme".into()))
    );
    assert_eq!(
        rule("name = \"level\"\nequals = 3"),
        eq("level", ClaimValue::Integer(3))
    );
    assert_eq!(
        rule("name = \"staff\"\nequals = true"),
        eq("staff", ClaimValue::Bool(true))
    );
    assert_eq!(
        rule("name = \"tier\"\none_of = [\"gold\", \"silver\"]").test,
        ClaimTest::OneOf(vec!["gold".into(), "silver".into()])
    );
    assert_eq!(
        rule("name = \"groups\"\ncontains = \"readers\"").test,
        ClaimTest::Contains("readers".into())
    );
    let bad = |t: &str, key: &str, needle: &str| {
        let ps = claim_rule(t).expect_err(t);
        assert!(
            ps.iter()
                .any(|p| p.key == key && p.message.contains(needle)),
            "{t}: wanted {key}: ...{needle}..., got {ps:?}"
        );
    };
    bad("equals = \"x\"", "r.name", "");
    bad("name = \"\"\nequals = \"x\"", "r.name", "must not be empty");
    bad(
        "name = \"a\"",
        "r",
        "exactly one of `equals`, `one_of` or `contains` (got none)",
    );
    bad(
        "name = \"a\"\nequals = \"x\"\ncontains = \"y\"",
        "r",
        "got equals, contains",
    );
    bad(
        "name = \"a\"\nequals = 1.5",
        "r.equals",
        "string, an integer or a boolean",
    );
    bad(
        "name = \"a\"\nequals = [\"x\"]",
        "r.equals",
        "string, an integer or a boolean",
    );
    bad(
        "name = \"a\"\none_of = []",
        "r.one_of",
        "at least one value",
    );
    bad("name = \"a\"\none_of = \"x\"", "r.one_of", "an array");
    bad("name = \"a\"\none_of = [1]", "r.one_of[0]", "a string");
    bad("name = \"a\"\ncontains = 2", "r.contains", "a string");
    bad(
        "name = \"a\"\nequals = \"x\"\nbogus = 1",
        "r.bogus",
        "unknown",
    );
}

#[test]
fn bucket_claims() {
    let rules = "claims = [{ name = \"tenant\", equals = \"acme\" }, \
                 { name = \"tier\", one_of = [\"gold\", \"silver\"] }, \
                 { name = \"groups\", contains = \"readers\" }]";
    let c = ok(&with_bucket(&format!("auth = true\n{rules}"), JWT));
    assert_eq!(c.buckets[0].claims.len(), 3);
    // Rules on a public bucket would never be checked.
    for extra in ["", "auth = false\n"] {
        has_problem(
            &with_bucket(&format!("{extra}{rules}"), JWT),
            "buckets[0].claims",
            "only checked on a bucket with auth = true",
        );
    }
    // Errors in a rule name the rule's index.
    has_problem(
        &with_bucket(
            "auth = true\nclaims = [{ name = \"a\", equals = \"x\" }, { name = \"b\" }]",
            JWT,
        ),
        "buckets[0].claims[1]",
        "exactly one of",
    );
    has_problem(
        &with_bucket("auth = true\nclaims = [{ name = \"a\", one_of = [] }]", JWT),
        "buckets[0].claims[0].one_of",
        "at least one value",
    );
    has_problem(
        &with_bucket("auth = true\nclaims = { name = \"a\" }", JWT),
        "buckets[0].claims",
        "an array",
    );
    // Without rules the list is empty.
    assert!(ok(&minimal()).buckets[0].claims.is_empty());
}

#[test]
fn jwt_lists() {
    let jwt = |body: &str| with_bucket("", &format!("{JWT}{body}"));
    has_problem(&jwt("audience = []"), "jwt.audience", "must not be empty");
    has_problem(
        &jwt("token_sources = [\"bearer\", \"query:t\", \"bearer\"]"),
        "jwt.token_sources[2]",
        "same source twice",
    );
    has_problem(
        &jwt("token_sources = [\"header:X-T\", \"header:x-t\"]"),
        "jwt.token_sources[1]",
        "same source twice",
    );
    let c = ok(&jwt(
        "audience = [\"a\", \"b\"]\ntoken_sources = [\"query:t\", \"header:x-t\"]",
    ));
    assert_eq!(
        c.jwt.unwrap().audience,
        vec!["a".to_string(), "b".to_string()]
    );
}

#[test]
fn pss_algorithms_are_known() {
    for alg in JwtAlgorithm::ALL {
        assert_eq!(
            JwtAlgorithm::ALL
                .iter()
                .filter(|a| a.as_str() == alg.as_str())
                .count(),
            1
        );
    }
    assert!(JwtAlgorithm::ALL.iter().any(|a| a.as_str() == "PS384"));
    assert!(JwtAlgorithm::ALL.iter().any(|a| a.as_str() == "PS512"));
    assert!(!JwtAlgorithm::PS512.is_hmac());
    assert_eq!(JwtAlgorithm::PS384.min_secret_len(), 0);
}

#[test]
fn log_section() {
    let off = ok(&with_bucket("", ""));
    assert_eq!(off.log.access, None, "the access log is off by default");
    assert_eq!(off.log.sample_ppm, 1_000_000);
    let c = ok(&with_bucket(
        "",
        "[log]\naccess = \"stderr\"\nsample = 0.25",
    ));
    assert_eq!(c.log.access, Some(LogSink::Stderr));
    assert_eq!(c.log.sample_ppm, 250_000);
    let c = ok(&with_bucket(
        "",
        "[log]\naccess = \"/var/log/corvid/access.log\"",
    ));
    assert_eq!(
        c.log.access,
        Some(LogSink::File("/var/log/corvid/access.log".into()))
    );
    assert_eq!(
        ok(&with_bucket("", "[log]\naccess = \"off\"")).log.access,
        None
    );
    has_problem(
        &with_bucket("", "[log]\nsample = 1.5"),
        "log.sample",
        "fraction",
    );
    has_problem(&with_bucket("", "[log]\naccess = \"\""), "log.access", "");
    has_problem(
        &with_bucket("", "[log]\nformat = \"json\""),
        "log.format",
        "",
    );
}

/// A bucket's static keys (panics for a credentials source).
fn keys(b: &BucketConfig) -> (&str, &str, Option<&str>) {
    match &b.credentials {
        BucketCredentials::Static {
            access_key,
            secret_key,
            session_token,
        } => (access_key, secret_key, session_token.as_deref()),
        other => panic!("not static keys: {other:?}"),
    }
}

#[test]
fn credentials_sources() {
    let no_keys = minimal()
        .replace("access_key = \"AKIDEXAMPLE\"\n", "")
        .replace("secret_key = \"wJalrXUtnFEMI\"\n", "");
    let c = ok(&no_keys);
    assert_eq!(
        c.buckets[0].credentials,
        BucketCredentials::Source {
            source: CredentialSource::Chain,
            profile: None
        },
        "neither keys nor a source: the chain"
    );
    for name in ["env", "profile", "web_identity", "ecs", "imds", "chain"] {
        let c = ok(&format!("{no_keys}credentials = \"{name}\"\n"));
        let BucketCredentials::Source { source, .. } = &c.buckets[0].credentials else {
            panic!("{name}: not a source");
        };
        assert_eq!(source.as_str(), name);
    }
    let c = ok(&format!(
        "{no_keys}credentials = \"profile\"\nprofile = \"prod\"\n"
    ));
    assert_eq!(
        c.buckets[0].credentials,
        BucketCredentials::Source {
            source: CredentialSource::Profile,
            profile: Some("prod".into())
        }
    );
    ok(&format!("{no_keys}profile = \"prod\"\n"));
    has_problem(
        &format!("{no_keys}credentials = \"vault\"\n"),
        "buckets[0].credentials",
        "not a credentials source",
    );
    has_problem(
        &with_bucket("credentials = \"env\"", ""),
        "buckets[0].credentials",
        "not both",
    );
    has_problem(
        &with_bucket("profile = \"prod\"", ""),
        "buckets[0].profile",
        "only used with",
    );
    has_problem(
        &format!("{no_keys}credentials = \"imds\"\nprofile = \"prod\"\n"),
        "buckets[0].profile",
        "only used with",
    );
    has_problem(
        &format!("{no_keys}session_token = \"t\"\n"),
        "buckets[0].access_key",
        "required",
    );
    // Debug output of a config never shows the secret.
    let c = ok(&with_bucket("session_token = \"tok-secret\"", ""));
    let dbg = format!("{c:?}");
    assert!(
        !dbg.contains("wJalrXUtnFEMI") && !dbg.contains("tok-secret"),
        "{dbg}"
    );
}

#[test]
fn redis_cluster_seeds() {
    let redis = |body: &str| with_bucket("", &format!("[cache.redis]\n{body}"));
    let r = ok(&redis(
        "cluster = [\"redis://:pw@10.0.0.1:7000\", \"redis://:pw@[::1]:7001\"]",
    ))
    .cache
    .redis
    .unwrap();
    assert_eq!(r.cluster.len(), 2);
    assert_eq!(r.target, r.cluster[0]);
    assert_eq!(r.cluster[1].authority(), "[::1]:7001");
    assert_eq!(r.cluster[1].auth.as_ref().unwrap().password, "pw");
    // A single server has no seeds.
    assert!(ok(&redis("url = \"redis://r\""))
        .cache
        .redis
        .unwrap()
        .cluster
        .is_empty());
    // rediss:// seeds with a CA file.
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "x").unwrap();
    let r = ok(&redis(&format!(
        "cluster = [\"rediss://a\", \"rediss://b:7000/0\"]\nca_file = {:?}",
        ca.display().to_string()
    )))
    .cache
    .redis
    .unwrap();
    assert!(r.cluster.iter().all(|t| t.tls) && r.ca_file.is_some());
    // Reads from replicas: off by default, only with a cluster.
    assert!(!r.read_from_replicas);
    let r = ok(&redis(
        "cluster = [\"redis://a\"]\nread_from_replicas = true",
    ))
    .cache
    .redis
    .unwrap();
    assert!(r.read_from_replicas);
    has_problem(
        &redis("url = \"redis://r\"\nread_from_replicas = true"),
        "cache.redis.read_from_replicas",
        "only meaningful with `cluster`",
    );
    has_problem(
        &redis("cluster = [\"redis://a\"]\nread_from_replicas = 1"),
        "cache.redis.read_from_replicas",
        "true or false",
    );
    assert!(
        !ok(&redis("url = \"redis://r\"\nread_from_replicas = false"))
            .cache
            .redis
            .unwrap()
            .read_from_replicas
    );

    for (body, key, needle) in [
        (
            "url = \"redis://r\"\ncluster = [\"redis://a\"]",
            "cache.redis.cluster",
            "not both",
        ),
        ("", "cache.redis.url", "`cluster`"),
        ("cluster = []", "cache.redis.cluster", "at least one seed"),
        ("cluster = \"redis://a\"", "cache.redis.cluster", "an array"),
        ("cluster = [1]", "cache.redis.cluster[0]", "a string"),
        (
            "cluster = [\"redis://a/2\"]",
            "cache.redis.cluster[0]",
            "only database 0",
        ),
        (
            "cluster = [\"redis://a\", \"http://b\"]",
            "cache.redis.cluster[1]",
            "not supported",
        ),
        (
            "cluster = [\"redis://a\", \"rediss://b\"]",
            "cache.redis.cluster[1]",
            "mixes redis:// and rediss://",
        ),
        (
            "cluster = [\"redis://:pw@a\", \"redis://b\"]",
            "cache.redis.cluster[1]",
            "different login",
        ),
        (
            "cluster = [\"redis://:pw@a\", \"redis://:hunter2@b\"]",
            "cache.redis.cluster[1]",
            "different login",
        ),
        (
            &format!(
                "cluster = [\"redis://a\"]\nca_file = {:?}",
                ca.display().to_string()
            ),
            "cache.redis.ca_file",
            "only meaningful for a rediss://",
        ),
    ] {
        has_problem(&redis(body), key, needle);
        let ps = problems(&redis(body));
        assert!(ps.iter().all(|p| !p.message.contains("hunter2")), "{ps:?}");
    }
}

// ---------- [cluster] ----------

fn cluster(body: &str) -> String {
    format!("{}\n[cluster]\n{body}\n", minimal())
}

const SECRET_LINE: &str = "secret = \"0123456789abcdef\"";

#[test]
fn cluster_members_come_from_a_list_or_a_name() {
    assert_eq!(ok(&minimal()).cluster, None);
    let c = ok(&cluster(&format!(
        "peer = \"10.0.0.1:8080\"\npeers = [\"10.0.0.1:8080\", \"[::1]:8081\", \"Corvid-B:80\"]\n{SECRET_LINE}"
    )))
    .cluster
    .unwrap();
    assert_eq!(c.peer.to_string(), "10.0.0.1:8080");
    let PeerSource::Static(list) = &c.members else {
        panic!("{:?}", c.members)
    };
    let names: Vec<String> = list.iter().map(|p| p.to_string()).collect();
    assert_eq!(names, ["10.0.0.1:8080", "[::1]:8081", "corvid-b:80"]);
    // IP addresses in the spelling a resolver gives, so that a member is named one way.
    let p: PeerAddr = "[0:0::1]:8081".parse().unwrap();
    assert_eq!(p.to_string(), "[::1]:8081");
    assert_eq!(c.peers_refresh, Duration::from_secs(2));
    assert_eq!(c.peer_timeout, Duration::from_secs(5));
    // The secret never shows in a debug print.
    assert!(!format!("{c:?}").contains("0123456789abcdef"));
    let c = ok(&cluster(&format!(
        "peer = \"${{HOST}}:8080\"\npeers_dns = \"corvid-peers.ns.svc:8080\"\n{SECRET_LINE}\n\
         peers_refresh = \"200ms\"\npeer_timeout = \"1s\""
    )));
    let c = c.cluster.unwrap();
    assert_eq!(
        c.members,
        PeerSource::Dns("corvid-peers.ns.svc:8080".parse().unwrap())
    );
    assert_eq!(c.peers_refresh, Duration::from_millis(200));
}

#[test]
fn cluster_errors_name_the_key() {
    let peers = "peers = [\"a:1\", \"b:1\"]";
    for (body, key, needle) in [
        (
            format!("{peers}\n{SECRET_LINE}"),
            "cluster.peer",
            "required",
        ),
        (
            format!("peer = \"a\"\n{peers}\n{SECRET_LINE}"),
            "cluster.peer",
            "no port",
        ),
        (
            format!("peer = \"a:1\"\n{SECRET_LINE}"),
            "cluster.peers",
            "required",
        ),
        (
            format!("peer = \"a:1\"\n{peers}\npeers_dns = \"x:1\"\n{SECRET_LINE}"),
            "cluster.peers",
            "not both",
        ),
        (
            format!("peer = \"a:1\"\npeers = [\"a:1\", \"b\"]\n{SECRET_LINE}"),
            "cluster.peers[1]",
            "no port",
        ),
        (
            format!("peer = \"a:1\"\npeers = \"a:1\"\n{SECRET_LINE}"),
            "cluster.peers",
            "list",
        ),
        (
            format!("peer = \"a:1\"\n{peers}"),
            "cluster.secret",
            "required",
        ),
        (
            format!("peer = \"a:1\"\n{peers}\nsecret = \"short\""),
            "cluster.secret",
            "at least 16",
        ),
        (
            format!("peer = \"a:1\"\n{peers}\n{SECRET_LINE}\npeer_timeout = 0"),
            "cluster.peer_timeout",
            "greater than 0",
        ),
        (
            format!("peer = \"a:1\"\n{peers}\n{SECRET_LINE}\npeer = 3"),
            "",
            "",
        ),
        (
            format!("peer = \"a:1\"\n{peers}\n{SECRET_LINE}\nfoo = 1"),
            "cluster.foo",
            "unknown",
        ),
    ] {
        if key.is_empty() {
            // A duplicate key is a TOML error, reported for the file.
            assert!(parse(&cluster(&body)).is_err());
            continue;
        }
        has_problem(&cluster(&body), key, needle);
    }
}

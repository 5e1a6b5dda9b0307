//! Credential sources end to end: corvid started with the environment pointing at a local fake
//! of each AWS endpoint (`common::aws_fakes`), signing for a SigV4-verifying origin; refresh
//! while requests flow, and a failing refresh.

use std::path::Path;
use std::time::Duration;

use crate::common::aws_fakes::{self, FakeServer, Issuer};
use crate::common::{
    free_port, http, server_toml, toml_str, wait_until, Corvid, Origin, OriginConfig, Readiness,
    ACCESS_KEY, REGION, SECRET_KEY,
};

const BUCKET: &str = "creds";
const BODY: &[u8] = b"signed with fetched credentials";

/// Second key pair, for rotation.
const ACCESS_KEY_2: &str = "AKIACORVIDROTATED002";
const SECRET_KEY_2: &str = "rotated/Secret+Key/00000000000000000000000";

/// An origin accepting both key pairs, with `BUCKET/obj` in it.
fn origin() -> Origin {
    let origin = Origin::start_with(OriginConfig {
        extra_keys: vec![(ACCESS_KEY_2.into(), SECRET_KEY_2.into())],
        ..OriginConfig::default()
    });
    origin.create_bucket(BUCKET);
    origin.put(BUCKET, "obj", BODY);
    origin
}

/// A config whose one bucket has no static keys; `extra` goes inside the bucket block.
fn config(origin: &Origin, extra: &str) -> String {
    format!(
        "{}\n[[buckets]]\nname = {b}\nprefix = \"/{BUCKET}\"\nendpoint = {}\nregion = {}\nbucket = {b}\n{extra}\n",
        server_toml(free_port()),
        toml_str(&origin.endpoint()),
        toml_str(REGION),
        b = toml_str(BUCKET),
    )
}

/// corvid with `env` on top of a clean AWS environment: HOME is an empty temp dir and IMDS is
/// off unless `env` says otherwise, so the machine's own AWS settings never leak in.
fn start(config: &str, home: &Path, env: &[(&str, &str)]) -> Corvid {
    let home = home.to_string_lossy().into_owned();
    let mut all: Vec<(&str, &str)> = vec![
        ("HOME", home.as_str()),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_ACCESS_KEY_ID", ""),
        ("AWS_SECRET_ACCESS_KEY", ""),
        ("AWS_SESSION_TOKEN", ""),
        ("AWS_PROFILE", ""),
        ("AWS_WEB_IDENTITY_TOKEN_FILE", ""),
        ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", ""),
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", ""),
        ("AWS_SHARED_CREDENTIALS_FILE", ""),
        ("AWS_CONFIG_FILE", ""),
    ];
    for (k, v) in env {
        all.retain(|(name, _)| name != k);
        all.push((k, v));
    }
    Corvid::start_with(config, Readiness::Http, &all)
}

/// The token an ECS / EKS Pod Identity agent expects, as [`start_with_ecs`] writes it.
const ECS_TOKEN: &str = "pod-identity-token-1";

/// A fake container credentials endpoint issuing `issuer`'s keys, and corvid (`config`) pointed
/// at it the way ECS and EKS Pod Identity do: `AWS_CONTAINER_CREDENTIALS_FULL_URI` and
/// `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` (a file in `home` holding [`ECS_TOKEN`]); `env` on
/// top. The endpoint must outlive corvid.
fn start_with_ecs(
    config: &str,
    home: &Path,
    issuer: &Issuer,
    env: &[(&str, &str)],
) -> (Corvid, FakeServer) {
    let token_file = home.join("container-authorization-token");
    write(&token_file, ECS_TOKEN);
    let ecs = aws_fakes::ecs(issuer.clone(), token_file.clone());
    let uri = format!("{}/creds", ecs.url());
    let token_file = token_file.to_string_lossy();
    let mut all = vec![
        ("AWS_CONTAINER_CREDENTIALS_FULL_URI", uri.as_str()),
        ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", &token_file),
    ];
    all.extend_from_slice(env);
    (start(config, home, &all), ecs)
}

fn get(c: &Corvid) -> http::RawResponse {
    http::get(c.addr(), &format!("/{BUCKET}/obj"), &[])
}

fn assert_served(c: &Corvid) {
    let r = get(c);
    assert_eq!(r.status, 200, "{}\n{}", r.text(), c.stderr());
    assert_eq!(r.body, BODY);
}

/// The access key that signed the origin's last GET.
fn last_signer(origin: &Origin) -> String {
    let reqs = origin.requests_with("GET");
    let auth = reqs
        .last()
        .and_then(|r| r.header("authorization").map(str::to_owned))
        .unwrap_or_default();
    auth.split("Credential=")
        .nth(1)
        .and_then(|c| c.split('/').next())
        .unwrap_or("")
        .to_owned()
}

fn ready(c: &Corvid) -> (u16, serde_json::Value) {
    let r = http::get(c.addr(), "/ready", &[]);
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null),
    )
}

fn refresh_count(c: &Corvid, outcome: &str) -> u64 {
    let text = http::get(c.addr(), "/metrics", &[]).text();
    let line =
        format!("corvid_credentials_refresh_total{{bucket=\"{BUCKET}\",outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&line)?.parse().ok())
        .unwrap_or(0)
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[test]
fn env_source_signs_with_the_environment_keys() {
    let origin = origin();
    let home = tempfile::tempdir().unwrap();
    let c = start(
        &config(&origin, "credentials = \"env\""),
        home.path(),
        &[
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            ("AWS_SESSION_TOKEN", "env-session-token"),
        ],
    );
    assert_served(&c);
    assert_eq!(last_signer(&origin), ACCESS_KEY);
    let last = origin.requests_with("GET").pop().unwrap();
    assert_eq!(
        last.header("x-amz-security-token"),
        Some("env-session-token")
    );
    let (status, body) = ready(&c);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["buckets"][BUCKET]["credentials"], "ok");
    assert_eq!(body["buckets"][BUCKET]["credentials_source"], "env");
    let log = c.stderr();
    assert!(
        !log.contains(SECRET_KEY) && !log.contains("env-session-token"),
        "{log}"
    );
}

#[test]
fn env_source_without_keys_is_not_ready_and_answers_503() {
    let origin = origin();
    let home = tempfile::tempdir().unwrap();
    let c = start(&config(&origin, "credentials = \"env\""), home.path(), &[]);
    let r = get(&c);
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains("credentials"), "{}", r.text());
    assert_eq!(
        origin.count("GET"),
        0,
        "nothing unsigned reached the origin"
    );
    let (status, body) = ready(&c);
    assert_eq!(status, 503);
    assert_eq!(body["buckets"][BUCKET]["credentials"], "none");
}

#[test]
fn profile_static_keys_and_credential_process() {
    let origin = origin();
    let home = tempfile::tempdir().unwrap();
    let aws = home.path().join(".aws");
    std::fs::create_dir(&aws).unwrap();
    write(
        &aws.join("credentials"),
        &format!(
            "# test profiles\n[default]\naws_access_key_id = WRONG\naws_secret_access_key = wrong\n\
             [static]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
        ),
    );
    let script = home.path().join("creds.sh");
    write(
        &script,
        &format!(
            "#!/bin/sh\necho '{{\"Version\": 1, \"AccessKeyId\": \"{ACCESS_KEY_2}\", \
             \"SecretAccessKey\": \"{SECRET_KEY_2}\", \"SessionToken\": \"proc-token\", \
             \"Expiration\": \"{}\"}}'\n",
            aws_fakes::iso8601(std::time::SystemTime::now() + Duration::from_secs(3600))
        ),
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    write(
        &aws.join("config"),
        &format!(
            "[default]\nregion = us-east-1\n[profile proc]\ncredential_process = {}\n",
            script.display()
        ),
    );
    // `profile = "static"` from the config file wins over AWS_PROFILE.
    let c = start(
        &config(&origin, "credentials = \"profile\"\nprofile = \"static\""),
        home.path(),
        &[("AWS_PROFILE", "proc")],
    );
    assert_served(&c);
    assert_eq!(last_signer(&origin), ACCESS_KEY);
    drop(c);
    // The chain reaches the profile named by AWS_PROFILE: credential_process.
    let c = start(
        &config(&origin, ""),
        home.path(),
        &[("AWS_PROFILE", "proc")],
    );
    assert_served(&c);
    assert_eq!(last_signer(&origin), ACCESS_KEY_2);
    let last = origin.requests_with("GET").pop().unwrap();
    assert_eq!(last.header("x-amz-security-token"), Some("proc-token"));
    // The files may also live elsewhere.
    let moved = tempfile::tempdir().unwrap();
    let creds_file = moved.path().join("creds-file");
    std::fs::rename(aws.join("credentials"), &creds_file).unwrap();
    drop(c);
    let c = start(
        &config(&origin, "profile = \"static\""),
        home.path(),
        &[("AWS_SHARED_CREDENTIALS_FILE", &creds_file.to_string_lossy())],
    );
    assert_served(&c);
    assert_eq!(last_signer(&origin), ACCESS_KEY);
}

#[test]
fn web_identity_through_sts() {
    let origin = origin();
    let home = tempfile::tempdir().unwrap();
    let token_file = home.path().join("token");
    write(&token_file, "eyJ.first-token.sig\n");
    let role = "arn:aws:iam::123456789012:role/corvid";
    let issuer = Issuer::new(&[(ACCESS_KEY, SECRET_KEY)], Duration::from_secs(3600));
    let sts = aws_fakes::sts(issuer.clone(), role, token_file.clone());
    let c = start(
        &config(&origin, "credentials = \"web_identity\""),
        home.path(),
        &[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", &token_file.to_string_lossy()),
            ("AWS_ROLE_ARN", role),
            ("AWS_ENDPOINT_URL_STS", &sts.url()),
        ],
    );
    assert_served(&c);
    assert_eq!(last_signer(&origin), ACCESS_KEY);
    let req = sts.requests().pop().unwrap();
    assert_eq!(
        req.form("WebIdentityToken").as_deref(),
        Some("eyJ.first-token.sig")
    );
    assert!(req.form("RoleSessionName").unwrap().starts_with("corvid-"));
    assert_eq!(issuer.issued(), 1);
}

#[test]
fn web_identity_error_from_sts_is_reported() {
    let origin = origin();
    let home = tempfile::tempdir().unwrap();
    let token_file = home.path().join("token");
    write(&token_file, "the-current-token");
    let issuer = Issuer::new(&[(ACCESS_KEY, SECRET_KEY)], Duration::from_secs(3600));
    // STS expects another role: ValidationError.
    let sts = aws_fakes::sts(issuer, "arn:aws:iam::1:role/other", token_file.clone());
    let c = start(
        &config(&origin, ""),
        home.path(),
        &[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", &token_file.to_string_lossy()),
            ("AWS_ROLE_ARN", "arn:aws:iam::1:role/corvid"),
            ("AWS_ENDPOINT_URL", &sts.url()),
        ],
    );
    assert_eq!(get(&c).status, 503);
    let log = c.stderr();
    assert!(log.contains("ValidationError"), "{log}");
    assert!(!log.contains("the-current-token"), "{log}");
}

#[test]
fn ecs_full_uri_with_authorization_token_file() {
    let origin = origin();
    let home = tempfile::tempdir().unwrap();
    let issuer = Issuer::new(&[(ACCESS_KEY, SECRET_KEY)], Duration::from_secs(3600));
    let (c, ecs) = start_with_ecs(
        &config(&origin, "credentials = \"ecs\""),
        home.path(),
        &issuer,
        &[],
    );
    assert_served(&c);
    assert_eq!(issuer.issued(), 1);
    assert_eq!(ecs.requests()[0].header("authorization"), Some(ECS_TOKEN));
}

#[test]
fn ecs_full_uri_to_a_foreign_host_is_refused() {
    let origin = origin();
    let home = tempfile::tempdir().unwrap();
    let c = start(
        &config(&origin, "credentials = \"ecs\""),
        home.path(),
        &[(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "http://192.0.2.1/creds",
        )],
    );
    assert_eq!(get(&c).status, 503);
    assert!(c.stderr().contains("must be https"), "{}", c.stderr());
}

#[test]
fn chain_falls_through_to_imds_v2() {
    let origin = origin();
    let home = tempfile::tempdir().unwrap();
    let issuer = Issuer::new(&[(ACCESS_KEY, SECRET_KEY)], Duration::from_secs(3600));
    let imds = aws_fakes::imds(issuer.clone());
    let c = start(
        &config(&origin, "credentials = \"chain\""),
        home.path(),
        &[
            ("AWS_EC2_METADATA_DISABLED", "false"),
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds.url()),
        ],
    );
    assert_served(&c);
    let reqs = imds.requests();
    assert_eq!(reqs[0].method, "PUT", "a session token first (IMDSv2)");
    assert!(reqs[1..]
        .iter()
        .all(|r| r.header("x-aws-ec2-metadata-token").is_some()));
    assert_eq!(issuer.issued(), 1);
}

#[test]
fn refresh_while_requests_flow() {
    let origin = origin();
    let home = tempfile::tempdir().unwrap();
    let issuer = Issuer::new(
        &[(ACCESS_KEY, SECRET_KEY), (ACCESS_KEY_2, SECRET_KEY_2)],
        Duration::from_secs(3),
    );
    let imds = aws_fakes::imds(issuer.clone());
    // ttl = 0: every request revalidates at the origin, so every request is signed.
    let c = start(
        &config(&origin, "credentials = \"imds\"\nttl = \"0s\""),
        home.path(),
        &[
            ("AWS_EC2_METADATA_DISABLED", "false"),
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds.url()),
        ],
    );
    assert_served(&c);
    assert_eq!(last_signer(&origin), ACCESS_KEY);
    let mut served = 0;
    let rotated = wait_until(Duration::from_secs(10), || {
        assert_served(&c);
        served += 1;
        last_signer(&origin) == ACCESS_KEY_2
    });
    assert!(
        rotated,
        "never signed with the second pair:\n{}",
        c.stderr()
    );
    assert!(served > 1 && issuer.issued() >= 2);
    // And again, before the second pair's 3 s run out.
    let before = issuer.issued();
    assert!(wait_until(Duration::from_secs(10), || {
        assert_served(&c);
        issuer.issued() > before
    }));
    assert!(refresh_count(&c, "ok") >= 3);
    assert_eq!(refresh_count(&c, "error"), 0);
}

#[test]
fn failed_refresh_keeps_old_credentials_then_503_then_recovers() {
    let origin = origin();
    let home = tempfile::tempdir().unwrap();
    let issuer = Issuer::new(&[(ACCESS_KEY, SECRET_KEY)], Duration::from_secs(3));
    let (c, ecs) = start_with_ecs(
        &config(&origin, "credentials = \"ecs\"\nttl = \"0s\""),
        home.path(),
        &issuer,
        &[(
            "AWS_CONTAINER_AUTHORIZATION_TOKEN",
            "ignored: the file wins",
        )],
    );
    assert_served(&c);
    issuer.set_failing(true);
    // The failed refresh is counted while the old credentials still serve.
    assert!(wait_until(Duration::from_secs(5), || {
        let r = get(&c);
        assert!(
            r.status == 200 || ready(&c).1["buckets"][BUCKET]["credentials"] == "expired",
            "{} before expiry: {}",
            r.status,
            r.text()
        );
        refresh_count(&c, "error") >= 1
    }));
    // Once they expire: not ready, and requests get 503.
    assert!(
        wait_until(Duration::from_secs(5), || ready(&c).0 == 503),
        "{}",
        c.stderr()
    );
    let (_, body) = ready(&c);
    assert_eq!(body["buckets"][BUCKET]["credentials"], "expired", "{body}");
    let r = get(&c);
    assert_eq!(r.status, 503, "{}", r.text());
    // The failure was logged once, not per attempt.
    let log = c.stderr();
    assert_eq!(
        log.matches("credentials refresh failed").count(),
        1,
        "{log}"
    );
    // The endpoint recovers: so does the bucket.
    issuer.set_failing(false);
    assert!(
        wait_until(Duration::from_secs(30), || get(&c).status == 200),
        "{}",
        c.stderr()
    );
    assert_eq!(ready(&c).0, 200);
    assert!(c.stderr().contains("obtained again"));
    assert!(issuer.failures() >= 1);
    let _: &FakeServer = &ecs;
}

#[test]
fn profile_with_a_web_identity_token_file() {
    let origin = origin();
    let home = tempfile::tempdir().unwrap();
    let token_file = home.path().join("token");
    write(&token_file, "profile-web-identity-token");
    let role = "arn:aws:iam::123456789012:role/from-profile";
    let issuer = Issuer::new(&[(ACCESS_KEY_2, SECRET_KEY_2)], Duration::from_secs(3600));
    let sts = aws_fakes::sts(issuer.clone(), role, token_file.clone());
    let config_file = home.path().join("aws-config");
    write(
        &config_file,
        &format!(
            "[profile irsa]\nrole_arn = {role}\nweb_identity_token_file = {}\n\
             role_session_name = corvid-test\n",
            token_file.display()
        ),
    );
    let c = start(
        &config(&origin, "credentials = \"profile\"\nprofile = \"irsa\""),
        home.path(),
        &[
            ("AWS_CONFIG_FILE", &config_file.to_string_lossy()),
            ("AWS_ENDPOINT_URL_STS", &sts.url()),
        ],
    );
    assert_served(&c);
    assert_eq!(last_signer(&origin), ACCESS_KEY_2);
    assert_eq!(
        sts.requests()[0].form("RoleSessionName").as_deref(),
        Some("corvid-test")
    );
}

#[test]
fn check_accepts_sources_refuses_both_and_never_prints_secrets() {
    let origin = origin();
    let ok = crate::common::check(&config(&origin, "credentials = \"web_identity\""));
    assert!(ok.status.success(), "{}", ok.stderr);
    let both = crate::common::check(&config(
        &origin,
        &format!(
            "credentials = \"env\"\naccess_key = {}\nsecret_key = {}",
            toml_str(ACCESS_KEY),
            toml_str(SECRET_KEY)
        ),
    ));
    assert!(!both.status.success());
    assert!(
        both.stderr.contains("buckets[0].credentials"),
        "{}",
        both.stderr
    );
    let unknown = crate::common::check(&config(&origin, "credentials = \"vault\""));
    assert!(!unknown.status.success());
    assert!(unknown.stderr.contains("not a credentials source"));
    for out in [&ok, &both, &unknown] {
        assert!(
            !out.stdout.contains(SECRET_KEY) && !out.stderr.contains(SECRET_KEY),
            "{}{}",
            out.stdout,
            out.stderr
        );
    }
}

#[test]
fn web_identity_rereads_the_token_file_at_each_refresh() {
    let origin = origin();
    let home = tempfile::tempdir().unwrap();
    let token_file = home.path().join("token");
    write(&token_file, "token-before-rotation");
    let role = "arn:aws:iam::123456789012:role/corvid";
    let issuer = Issuer::new(
        &[(ACCESS_KEY, SECRET_KEY), (ACCESS_KEY_2, SECRET_KEY_2)],
        Duration::from_secs(3),
    );
    let sts = aws_fakes::sts(issuer.clone(), role, token_file.clone());
    let c = start(
        &config(&origin, "credentials = \"web_identity\"\nttl = \"0s\""),
        home.path(),
        &[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", &token_file.to_string_lossy()),
            ("AWS_ROLE_ARN", role),
            ("AWS_ENDPOINT_URL_STS", &sts.url()),
        ],
    );
    assert_served(&c);
    // The kubelet rotates the token; STS only accepts the current one.
    write(&token_file, "token-after-rotation");
    assert!(
        wait_until(Duration::from_secs(10), || issuer.issued() >= 2),
        "{}",
        c.stderr()
    );
    let last = sts.requests().pop().unwrap();
    assert_eq!(
        last.form("WebIdentityToken").as_deref(),
        Some("token-after-rotation")
    );
    assert!(wait_until(Duration::from_secs(5), || {
        assert_served(&c);
        last_signer(&origin) == ACCESS_KEY_2
    }));
    assert_eq!(refresh_count(&c, "error"), 0);
}

/// A reload that changes a source-based bucket's credentials settings fetches from the new
/// settings at once and keeps counting refreshes in the bucket's series.
#[test]
fn a_reload_switches_the_credentials_source() {
    let origin = origin();
    let home = tempfile::tempdir().unwrap();
    let aws = home.path().join(".aws");
    std::fs::create_dir(&aws).unwrap();
    write(
        &aws.join("credentials"),
        &format!(
            "[first]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n\
             [second]\naws_access_key_id = {ACCESS_KEY_2}\naws_secret_access_key = {SECRET_KEY_2}\n"
        ),
    );
    let first = config(&origin, "credentials = \"profile\"\nprofile = \"first\"");
    let c = start(&first, home.path(), &[]);
    assert_served(&c);
    assert_eq!(last_signer(&origin), ACCESS_KEY);
    assert_eq!(refresh_count(&c, "ok"), 1);

    let second = first.replace("profile = \"first\"", "profile = \"second\"");
    std::fs::write(c.config_path(), second).unwrap();
    c.signal(libc::SIGHUP);
    let reloaded = wait_until(Duration::from_secs(10), || {
        http::get(c.addr(), "/metrics", &[])
            .text()
            .contains("corvid_config_reloads_total{outcome=\"ok\"} 1")
    });
    assert!(reloaded, "{}", c.stderr());
    // A key not cached yet, so the origin is asked (and sees who signed).
    origin.put(BUCKET, "after-reload", BODY);
    let r = http::get(c.addr(), &format!("/{BUCKET}/after-reload"), &[]);
    assert_eq!((r.status, r.body.as_slice()), (200, BODY), "{}", r.text());
    assert_eq!(last_signer(&origin), ACCESS_KEY_2);
    assert_eq!(refresh_count(&c, "ok"), 2, "one series across the reload");
}

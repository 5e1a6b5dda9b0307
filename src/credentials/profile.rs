//! The `profile` source: the shared AWS config files.
//!
//! Files: `AWS_SHARED_CREDENTIALS_FILE` (default `~/.aws/credentials`) and `AWS_CONFIG_FILE`
//! (default `~/.aws/config`), `~` being `HOME`. The profile is the bucket's `profile` key, else
//! `AWS_PROFILE`, else `default`. In the credentials file a profile is `[name]`; in the config
//! file `[profile name]`, and the default profile `[default]` (`[profile default]` is accepted
//! too). A setting in the credentials file wins over the same one in the config file.
//!
//! What a profile may hold, in this order of precedence:
//! 1. `role_arn` + `web_identity_token_file` (+ `role_session_name`): STS web identity
//!    ([`super::sts`]);
//! 2. `aws_access_key_id` + `aws_secret_access_key` (+ `aws_session_token`): static keys;
//! 3. `credential_process`: a command run with `sh -c`, whose stdout is
//!    `{"Version": 1, "AccessKeyId", "SecretAccessKey", "SessionToken"?, "Expiration"?}`.
//!
//! `role_arn` with `source_profile` or `credential_source` (role chaining) is refused with an
//! error rather than half-supported. A profile without any of these is "not configured" (the
//! chain goes on), unless it was named explicitly and exists in neither file.
//!
//! The INI dialect ([`parse_ini`]) is the SDKs': `#` and `;` start a comment at the start of a
//! line, or after whitespace inside a value; indented lines continue a sub-section (`s3 =`
//! followed by indented `key = value`) and are ignored; keys are case-insensitive.

use std::collections::HashMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::container::lease;
use super::sts::{self, WebIdentity};
use super::{Ctx, Lease, Outcome};
use crate::s3::sigv4::Credentials;

/// How long a `credential_process` may run.
pub const PROCESS_TIMEOUT: Duration = Duration::from_secs(30);

/// Sections of one INI file: name (as written inside `[...]`, trimmed) → settings.
pub type Ini = HashMap<String, HashMap<String, String>>;

/// Parses the AWS INI dialect (see the module doc).
pub fn parse_ini(text: &str) -> Ini {
    let mut out: Ini = HashMap::new();
    let mut current: Option<String> = None;
    for raw in text.lines() {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with(['#', ';']) {
            continue;
        }
        if raw.starts_with([' ', '\t']) {
            // A sub-section's property (`s3 =` then indented lines): not used by corvid.
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix('[') {
            current = rest
                .find(']')
                .map(|end| rest[..end].split_whitespace().collect::<Vec<_>>().join(" "));
            if let Some(name) = &current {
                out.entry(name.clone()).or_default();
            }
            continue;
        }
        let (Some(section), Some((k, v))) = (&current, trimmed.split_once('=')) else {
            continue;
        };
        let value = strip_inline_comment(v.trim());
        out.entry(section.clone())
            .or_default()
            .insert(k.trim().to_ascii_lowercase(), value.to_owned());
    }
    out
}

fn strip_inline_comment(v: &str) -> &str {
    let bytes = v.as_bytes();
    for i in 1..bytes.len() {
        if matches!(bytes[i], b'#' | b';') && bytes[i - 1].is_ascii_whitespace() {
            return v[..i].trim_end();
        }
    }
    v
}

/// The settings of `profile`: the config file's section overlaid by the credentials file's.
/// `None` if neither file has it.
pub fn profile_settings(
    credentials: &Ini,
    config: &Ini,
    profile: &str,
) -> Option<HashMap<String, String>> {
    let from_config = config.get(&format!("profile {profile}")).or_else(|| {
        (profile == "default")
            .then(|| config.get("default"))
            .flatten()
    });
    let from_credentials = credentials.get(profile);
    if from_config.is_none() && from_credentials.is_none() {
        return None;
    }
    let mut merged = from_config.cloned().unwrap_or_default();
    if let Some(c) = from_credentials {
        merged.extend(c.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    Some(merged)
}

/// What a profile says to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    WebIdentity {
        role_arn: String,
        token_file: String,
        session_name: Option<String>,
    },
    Static(Credentials),
    Process(String),
    /// The profile has no credential settings.
    Nothing,
}

/// Decides what `settings` (one profile) does; `Err` for settings corvid does not support.
pub fn plan(settings: &HashMap<String, String>) -> Result<Plan, String> {
    let get = |k: &str| settings.get(k).filter(|v| !v.is_empty()).cloned();
    if let Some(role_arn) = get("role_arn") {
        if let Some(token_file) = get("web_identity_token_file") {
            return Ok(Plan::WebIdentity {
                role_arn,
                token_file,
                session_name: get("role_session_name"),
            });
        }
        return Err(
            "role_arn with source_profile or credential_source (assume-role chaining) \
                    is not supported; use web_identity_token_file, static keys or \
                    credential_process"
                .into(),
        );
    }
    if let Some(access_key) = get("aws_access_key_id") {
        let secret_key = get("aws_secret_access_key")
            .ok_or("aws_access_key_id without aws_secret_access_key")?;
        return Ok(Plan::Static(Credentials {
            access_key,
            secret_key,
            session_token: get("aws_session_token"),
        }));
    }
    if let Some(cmd) = get("credential_process") {
        return Ok(Plan::Process(cmd));
    }
    Ok(Plan::Nothing)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ProcessOutput {
    version: u32,
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
    expiration: Option<String>,
}

/// Parses a `credential_process`'s stdout (`Version` must be 1).
pub fn parse_process_output(stdout: &[u8]) -> Result<Lease, String> {
    let o: ProcessOutput = serde_json::from_slice(stdout)
        .map_err(|e| format!("credential_process output is not a credentials document: {e}"))?;
    if o.version != 1 {
        return Err(format!(
            "credential_process output has Version {}, expected 1",
            o.version
        ));
    }
    lease(
        o.access_key_id,
        o.secret_access_key,
        o.session_token,
        o.expiration,
    )
}

/// Expands a leading `~/` with `HOME`.
fn expand_home(cx: &Ctx<'_>, path: &str) -> Result<String, String> {
    match path.strip_prefix("~/") {
        Some(rest) => {
            let home = cx
                .var("HOME")
                .ok_or_else(|| format!("{path}: HOME is not set"))?;
            Ok(format!("{}/{rest}", home.trim_end_matches('/')))
        }
        None => Ok(path.to_owned()),
    }
}

#[expect(
    clippy::disallowed_methods,
    reason = "reads the AWS config files on the credentials refresh thread (or at start)"
)]
fn read_ini(cx: &Ctx<'_>, var: &str, default: &str) -> Result<Ini, String> {
    let path = expand_home(cx, &cx.var(var).unwrap_or_else(|| default.to_owned()))?;
    match std::fs::read_to_string(&path) {
        Ok(t) => Ok(parse_ini(&t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Ini::new()),
        Err(e) => Err(format!("{path}: {e}")),
    }
}

pub fn load(cx: &Ctx<'_>) -> Outcome {
    let named = cx
        .profile
        .map(str::to_owned)
        .or_else(|| cx.var("AWS_PROFILE"));
    let profile = named.clone().unwrap_or_else(|| "default".to_owned());
    if named.is_none()
        && cx.var("HOME").is_none()
        && cx.var("AWS_SHARED_CREDENTIALS_FILE").is_none()
        && cx.var("AWS_CONFIG_FILE").is_none()
    {
        return Ok(None);
    }
    let credentials = read_ini(cx, "AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials")?;
    let config = read_ini(cx, "AWS_CONFIG_FILE", "~/.aws/config")?;
    let Some(settings) = profile_settings(&credentials, &config, &profile) else {
        return match named {
            Some(p) => Err(format!("profile {p:?} is in neither AWS config file")),
            None => Ok(None),
        };
    };
    match plan(&settings).map_err(|e| format!("profile {profile:?}: {e}"))? {
        Plan::Nothing => Ok(None),
        Plan::Static(credentials) => Ok(Some(Lease {
            credentials,
            expires_at: None,
        })),
        Plan::WebIdentity {
            role_arn,
            token_file,
            session_name,
        } => {
            let token_file = expand_home(cx, &token_file)?;
            sts::assume(
                cx,
                &WebIdentity {
                    role_arn,
                    token_file,
                    session_name,
                },
            )
            .map(Some)
        }
        Plan::Process(cmd) => run_process(&cmd)
            .map(Some)
            .map_err(|e| format!("profile {profile:?}: {e}")),
    }
}

/// Runs `cmd` with `sh -c` (stdin closed, stderr passed through to corvid's), bounded by
/// [`PROCESS_TIMEOUT`], and parses what it prints.
#[expect(
    clippy::disallowed_methods,
    reason = "waits for credential_process on the credentials refresh thread (or at start)"
)]
pub fn run_process(cmd: &str) -> Result<Lease, String> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("credential_process: cannot run: {e}"))?;
    let mut stdout = child.stdout.take().ok_or("credential_process: no stdout")?;
    // Read on a helper so the timeout can be enforced on the wait.
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.by_ref().take(1 << 20).read_to_end(&mut out);
        out
    });
    let deadline = Instant::now() + PROCESS_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "credential_process did not finish within {} s",
                    PROCESS_TIMEOUT.as_secs()
                ));
            }
            Err(e) => return Err(format!("credential_process: {e}")),
        }
    };
    let out = reader.join().unwrap_or_default();
    if !status.success() {
        return Err(format!("credential_process exited with {status}"));
    }
    parse_process_output(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CREDENTIALS: &str = "\
# a comment
[default]
aws_access_key_id = AKDEFAULT
aws_secret_access_key = secret/default+1 ; inline comment
[prod]
AWS_ACCESS_KEY_ID=AKPROD
aws_secret_access_key=s#not-a-comment
aws_session_token = tok
";

    const CONFIG: &str = "\
[default]
region = us-east-1
; another comment
[profile prod]
region = eu-west-1
aws_access_key_id = AKFROMCONFIG
[profile proc]
credential_process = /usr/bin/get-creds --json
s3 =
  max_concurrent_requests = 20
[profile irsa]
role_arn = arn:aws:iam::1:role/r
web_identity_token_file = /var/run/token
[profile chained]
role_arn = arn:aws:iam::1:role/r
source_profile = default
[profile   spaced  ]
aws_access_key_id = AKSPACED
aws_secret_access_key = s
[prod]
aws_access_key_id = NOT_A_PROFILE_IN_CONFIG
";

    fn settings(name: &str) -> Option<HashMap<String, String>> {
        profile_settings(&parse_ini(CREDENTIALS), &parse_ini(CONFIG), name)
    }

    #[test]
    fn ini_dialect() {
        let c = parse_ini(CREDENTIALS);
        assert_eq!(c["default"]["aws_secret_access_key"], "secret/default+1");
        assert_eq!(
            c["prod"]["aws_access_key_id"], "AKPROD",
            "keys are case-insensitive"
        );
        assert_eq!(c["prod"]["aws_secret_access_key"], "s#not-a-comment");
        let cfg = parse_ini(CONFIG);
        assert_eq!(
            cfg["profile proc"]["credential_process"],
            "/usr/bin/get-creds --json"
        );
        assert!(!cfg["profile proc"].contains_key("max_concurrent_requests"));
        assert!(cfg.contains_key("profile spaced"));
    }

    #[test]
    fn profiles_and_precedence() {
        let d = settings("default").unwrap();
        assert_eq!(
            d["region"], "us-east-1",
            "config [default] is the default profile"
        );
        assert_eq!(d["aws_access_key_id"], "AKDEFAULT");
        let p = settings("prod").unwrap();
        assert_eq!(
            p["aws_access_key_id"], "AKPROD",
            "the credentials file wins"
        );
        assert_eq!(p["region"], "eu-west-1");
        assert_eq!(
            plan(&p).unwrap(),
            Plan::Static(Credentials {
                access_key: "AKPROD".into(),
                secret_key: "s#not-a-comment".into(),
                session_token: Some("tok".into()),
            })
        );
        assert!(settings("nope").is_none());
        assert_eq!(
            plan(&settings("proc").unwrap()).unwrap(),
            Plan::Process("/usr/bin/get-creds --json".into())
        );
        assert!(matches!(
            plan(&settings("irsa").unwrap()).unwrap(),
            Plan::WebIdentity { ref token_file, .. } if token_file == "/var/run/token"
        ));
        assert!(plan(&settings("chained").unwrap())
            .unwrap_err()
            .contains("not supported"));
        let mut half = HashMap::new();
        half.insert("aws_access_key_id".to_owned(), "a".to_owned());
        assert!(plan(&half).is_err());
        assert_eq!(plan(&HashMap::new()).unwrap(), Plan::Nothing);
        assert!(plan(&settings("spaced").unwrap()).is_ok());
    }

    #[test]
    fn process_output() {
        let l = parse_process_output(
            br#"{"Version":1,"AccessKeyId":"AK","SecretAccessKey":"S","SessionToken":"T","Expiration":"2026-12-01T16:38:15Z"}"#,
        )
        .unwrap();
        assert_eq!(l.credentials.session_token.as_deref(), Some("T"));
        assert!(l.expires_at.is_some());
        let l = parse_process_output(br#"{"Version":1,"AccessKeyId":"AK","SecretAccessKey":"S"}"#)
            .unwrap();
        assert_eq!(l.expires_at, None, "no Expiration: never expires");
        assert!(
            parse_process_output(br#"{"Version":2,"AccessKeyId":"AK","SecretAccessKey":"S"}"#)
                .unwrap_err()
                .contains("Version 2")
        );
        assert!(parse_process_output(b"garbage").is_err());
    }

    #[test]
    fn process_runs() {
        let l = run_process(
            r#"echo '{"Version": 1, "AccessKeyId": "AKPROC", "SecretAccessKey": "S"}'"#,
        )
        .unwrap();
        assert_eq!(l.credentials.access_key, "AKPROC");
        assert!(run_process("exit 3").unwrap_err().contains("exit"));
    }
}

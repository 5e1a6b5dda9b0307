//! The `imds` source: the EC2 instance metadata service, IMDSv2 only.
//!
//! `PUT /latest/api/token` (`X-aws-ec2-metadata-token-ttl-seconds`) gives a session token;
//! `GET /latest/meta-data/iam/security-credentials/` with it names the role, and `GET .../<role>`
//! gives `{Code: "Success", AccessKeyId, SecretAccessKey, Token, Expiration}`. There is no
//! IMDSv1 fallback: a refused or unanswered PUT is an error. Each step has a 1 s timeout, so a
//! container whose hop limit drops the PUT fails fast. `AWS_EC2_METADATA_DISABLED=true` turns
//! the source off (not configured); `AWS_EC2_METADATA_SERVICE_ENDPOINT` replaces
//! `http://169.254.169.254`.

use std::time::Duration;

use serde::Deserialize;

use super::container::{first_line, lease};
use super::fetch::{self, Url};
use super::{Ctx, Lease, Outcome};

const TIMEOUT: Duration = Duration::from_secs(1);
const ENDPOINT: &str = "http://169.254.169.254";
/// The session token's lifetime: one fetch needs seconds; 6 h is the SDKs' default.
const TOKEN_TTL: &str = "21600";

pub fn load(cx: &Ctx<'_>) -> Outcome {
    if cx
        .var("AWS_EC2_METADATA_DISABLED")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    {
        return Ok(None);
    }
    let base = cx
        .var("AWS_EC2_METADATA_SERVICE_ENDPOINT")
        .unwrap_or_else(|| ENDPOINT.to_owned());
    let base = Url::parse(base.trim_end_matches('/'))?;
    let get = |method: &str, path: &str, headers: &[(&str, &str)]| {
        let res = fetch::request(method, &base.with_path(path), headers, b"", TIMEOUT)
            .map_err(|e| format!("{method} {path}: {e}"))?;
        if res.status != 200 {
            return Err(format!(
                "{method} {path} answered {}: {}",
                res.status,
                first_line(&res.text())
            ));
        }
        Ok(res.text())
    };
    let token = get(
        "PUT",
        "/latest/api/token",
        &[("X-aws-ec2-metadata-token-ttl-seconds", TOKEN_TTL)],
    )?;
    let token = token.trim();
    let auth = [("X-aws-ec2-metadata-token", token)];
    let roles = get("GET", "/latest/meta-data/iam/security-credentials/", &auth)?;
    let role = roles
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .ok_or("the instance has no IAM role")?
        .to_owned();
    if role.contains(['/', '?', '#', ' ']) {
        return Err(format!("unexpected role name {role:?}"));
    }
    let doc = get(
        "GET",
        &format!("/latest/meta-data/iam/security-credentials/{role}"),
        &auth,
    )?;
    parse(doc.as_bytes()).map(Some)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Document {
    code: String,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    token: Option<String>,
    expiration: Option<String>,
}

/// The role's credentials document; `Code` other than `Success` is an error.
pub fn parse(body: &[u8]) -> Result<Lease, String> {
    let d: Document =
        serde_json::from_slice(body).map_err(|e| format!("not a credentials document: {e}"))?;
    if d.code != "Success" {
        return Err(format!("IMDS credentials Code {:?}", d.code));
    }
    lease(
        d.access_key_id.unwrap_or_default(),
        d.secret_access_key.unwrap_or_default(),
        d.token,
        d.expiration,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document() {
        let l = parse(br#"{"Code":"Success","LastUpdated":"2026-12-01T10:00:00Z","Type":"AWS-HMAC","AccessKeyId":"ASIA2","SecretAccessKey":"x","Token":"t","Expiration":"2026-12-01T16:38:15Z"}"#).unwrap();
        assert_eq!(l.credentials.access_key, "ASIA2");
        assert!(l.expires_at.is_some());
        assert!(parse(br#"{"Code":"AssumeRoleUnauthorizedAccess"}"#)
            .unwrap_err()
            .contains("AssumeRoleUnauthorizedAccess"));
        assert!(parse(b"nope").is_err());
    }

    #[test]
    fn disabled() {
        let vars = |k: &str| (k == "AWS_EC2_METADATA_DISABLED").then(|| "TRUE".to_owned());
        let cx = Ctx {
            vars: &vars,
            region: "r",
            profile: None,
            bucket: "b",
        };
        assert_eq!(load(&cx).unwrap(), None);
    }
}

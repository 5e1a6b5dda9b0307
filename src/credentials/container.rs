//! The `ecs` source: the ECS task role endpoint and EKS Pod Identity.
//!
//! `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` means `http://169.254.170.2<uri>`;
//! `AWS_CONTAINER_CREDENTIALS_FULL_URI` is used as given if it is `https://`, or `http://` to a
//! loopback host, the ECS host 169.254.170.2 or the EKS Pod Identity hosts 169.254.170.23 /
//! `fd00:ec2::23` ([`allowed_full_uri`], the SDKs' rule: plain HTTP elsewhere could hand the
//! credentials to anyone on the path). The `Authorization` header comes from
//! `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` (read again each time: EKS rotates it), else
//! `AWS_CONTAINER_AUTHORIZATION_TOKEN`. The answer is JSON
//! `{AccessKeyId, SecretAccessKey, Token, Expiration}`.

use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;

use super::fetch::{self, Url};
use super::{expiry, Ctx, Lease, Outcome};
use crate::s3::sigv4::Credentials;

const TIMEOUT: Duration = Duration::from_secs(2);
const ECS_HOST: &str = "http://169.254.170.2";

#[expect(
    clippy::disallowed_methods,
    reason = "reads the token file on the credentials refresh thread (or at start), never a worker"
)]
pub fn load(cx: &Ctx<'_>) -> Outcome {
    let url = if let Some(rel) = cx.var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
        let sep = if rel.starts_with('/') { "" } else { "/" };
        Url::parse(&format!("{ECS_HOST}{sep}{rel}"))?
    } else if let Some(full) = cx.var("AWS_CONTAINER_CREDENTIALS_FULL_URI") {
        let url = Url::parse(&full)?;
        if !allowed_full_uri(&url) {
            return Err(format!(
                "AWS_CONTAINER_CREDENTIALS_FULL_URI must be https, or http to a loopback host or \
                 the ECS / EKS Pod Identity hosts (169.254.170.2, 169.254.170.23, fd00:ec2::23); \
                 not {}",
                url.authority()
            ));
        }
        url
    } else {
        return Ok(None);
    };
    let token = match cx.var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE") {
        Some(path) => Some(
            std::fs::read_to_string(&path)
                .map_err(|e| format!("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE {path}: {e}"))?
                .trim()
                .to_owned(),
        ),
        None => cx.var("AWS_CONTAINER_AUTHORIZATION_TOKEN"),
    };
    if token
        .as_ref()
        .is_some_and(|t| t.contains(['\r', '\n']) || t.is_empty())
    {
        return Err("the container authorization token is empty or has a line break".into());
    }
    let mut headers = vec![("Accept", "application/json")];
    if let Some(t) = &token {
        headers.push(("Authorization", t.as_str()));
    }
    let res = fetch::request("GET", &url, &headers, b"", TIMEOUT)
        .map_err(|e| format!("{}: {e}", url.authority()))?;
    if res.status != 200 {
        return Err(format!(
            "{} answered {}: {}",
            url.authority(),
            res.status,
            first_line(&res.text())
        ));
    }
    parse(&res.body).map(Some)
}

/// Whether a FULL_URI may be used (see the module doc).
pub fn allowed_full_uri(url: &Url) -> bool {
    if url.https {
        return true;
    }
    if url.host == "localhost" {
        return true;
    }
    match url.host.parse::<IpAddr>() {
        Ok(ip) => {
            ip.is_loopback()
                || ip == IpAddr::from([169, 254, 170, 2])
                || ip == IpAddr::from([169, 254, 170, 23])
                || ip == IpAddr::from([0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23])
        }
        Err(_) => false,
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Document {
    access_key_id: String,
    secret_access_key: String,
    token: Option<String>,
    expiration: Option<String>,
}

/// The ECS credentials document.
pub fn parse(body: &[u8]) -> Result<Lease, String> {
    let d: Document =
        serde_json::from_slice(body).map_err(|e| format!("not a credentials document: {e}"))?;
    lease(d.access_key_id, d.secret_access_key, d.token, d.expiration)
}

/// A lease from the fields every JSON source shares; an `Expiration` must parse.
pub fn lease(
    access_key: String,
    secret_key: String,
    token: Option<String>,
    expiration: Option<String>,
) -> Result<Lease, String> {
    if access_key.is_empty() || secret_key.is_empty() {
        return Err("the credentials document has an empty key".into());
    }
    let expires_at = match expiration.filter(|e| !e.is_empty()) {
        None => None,
        Some(e) => Some(expiry::parse(&e).ok_or_else(|| format!("bad Expiration {e:?}"))?),
    };
    Ok(Lease {
        credentials: Credentials {
            access_key,
            secret_key,
            session_token: token.filter(|t| !t.is_empty()),
        },
        expires_at,
    })
}

/// The first line of an error body, shortened (for error messages).
pub fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_uri_rule() {
        for ok in [
            "https://example.com/creds",
            "http://127.0.0.1:8080/creds",
            "http://127.1.2.3/creds",
            "http://localhost/creds",
            "http://[::1]/creds",
            "http://169.254.170.2/v2/credentials",
            "http://169.254.170.23/v1/credentials",
            "http://[fd00:ec2::23]/v1/credentials",
        ] {
            assert!(allowed_full_uri(&Url::parse(ok).unwrap()), "{ok}");
        }
        for bad in [
            "http://example.com/creds",
            "http://10.0.0.1/creds",
            "http://169.254.169.254/creds",
            "http://[fd00:ec2::24]/",
        ] {
            assert!(!allowed_full_uri(&Url::parse(bad).unwrap()), "{bad}");
        }
    }

    #[test]
    fn document() {
        let l = parse(
            br#"{"RoleArn":"arn:aws:iam::1:role/r","AccessKeyId":"ASIA1","SecretAccessKey":"s/+","Token":"t","Expiration":"2026-12-01T16:38:15Z"}"#,
        )
        .unwrap();
        assert_eq!(l.credentials.access_key, "ASIA1");
        assert_eq!(l.credentials.session_token.as_deref(), Some("t"));
        assert_eq!(l.expires_at, expiry::parse("2026-12-01T16:38:15Z"));
        assert!(parse(b"{}").is_err());
        assert!(
            parse(br#"{"AccessKeyId":"a","SecretAccessKey":"b","Expiration":"soon"}"#)
                .unwrap_err()
                .contains("Expiration")
        );
    }
}

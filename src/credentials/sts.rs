//! The `web_identity` source (EKS IRSA, and profiles with `role_arn` +
//! `web_identity_token_file`): STS `AssumeRoleWithWebIdentity`.
//!
//! Configured by `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN` (+ `AWS_ROLE_SESSION_NAME`,
//! default `corvid-<unix seconds>`). The token file is read again at every refresh (the
//! kubelet rotates it). The request is the unsigned form POST the SDKs send
//! (`Action=AssumeRoleWithWebIdentity&Version=2011-06-15&...`) to `AWS_ENDPOINT_URL_STS`, else
//! `AWS_ENDPOINT_URL`, else `https://sts.<bucket region>.amazonaws.com`. The XML answer is read
//! with a tiny extractor ([`parse_response`]): the elements are flat and unique, and the error
//! document's `Code` and `Message` become the error.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::fetch::{self, Url};
use super::{expiry, Ctx, Lease, Outcome};
use crate::s3::sigv4::{uri_encode, Credentials};

/// Timeout of the STS request's connect and of each read and write.
const TIMEOUT: Duration = Duration::from_secs(5);

/// What one `AssumeRoleWithWebIdentity` needs.
#[derive(Debug, Clone)]
pub struct WebIdentity {
    pub role_arn: String,
    pub token_file: String,
    pub session_name: Option<String>,
}

/// The env-configured source.
pub fn load_from_env(cx: &Ctx<'_>) -> Outcome {
    let (Some(token_file), Some(role_arn)) = (
        cx.var("AWS_WEB_IDENTITY_TOKEN_FILE"),
        cx.var("AWS_ROLE_ARN"),
    ) else {
        return Ok(None);
    };
    let id = WebIdentity {
        role_arn,
        token_file,
        session_name: cx.var("AWS_ROLE_SESSION_NAME"),
    };
    assume(cx, &id).map(Some)
}

/// The STS endpoint for `region`, as the SDKs pick it.
pub fn endpoint(cx: &Ctx<'_>) -> String {
    cx.var("AWS_ENDPOINT_URL_STS")
        .or_else(|| cx.var("AWS_ENDPOINT_URL"))
        .unwrap_or_else(|| format!("https://sts.{}.amazonaws.com", cx.region))
}

/// Reads the token file and calls STS.
#[expect(
    clippy::disallowed_methods,
    reason = "reads the token file on the credentials refresh thread (or at start), never a worker"
)]
pub fn assume(cx: &Ctx<'_>, id: &WebIdentity) -> Result<Lease, String> {
    let token = std::fs::read_to_string(&id.token_file)
        .map_err(|e| format!("web identity token file {}: {e}", id.token_file))?;
    let token = token.trim();
    if token.is_empty() {
        return Err(format!(
            "web identity token file {} is empty",
            id.token_file
        ));
    }
    let session = id.session_name.clone().unwrap_or_else(|| {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        format!("corvid-{secs}")
    });
    let url = Url::parse(&endpoint(cx))?;
    let body = form_body(&id.role_arn, &session, token);
    let res = fetch::request(
        "POST",
        &url,
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Accept", "text/xml"),
        ],
        body.as_bytes(),
        TIMEOUT,
    )
    .map_err(|e| format!("STS {}: {e}", url.authority()))?;
    parse_response(res.status, &res.text())
}

/// The form body of `AssumeRoleWithWebIdentity` (the token is a secret: never logged).
pub fn form_body(role_arn: &str, session_name: &str, token: &str) -> String {
    let mut out = String::from("Action=AssumeRoleWithWebIdentity&Version=2011-06-15");
    for (k, v) in [
        ("RoleArn", role_arn),
        ("RoleSessionName", session_name),
        ("WebIdentityToken", token),
    ] {
        out.push('&');
        out.push_str(k);
        out.push('=');
        uri_encode(v.as_bytes(), true, &mut out);
    }
    out
}

/// The credentials of a 200 answer, or the error STS gave.
pub fn parse_response(status: u16, xml: &str) -> Result<Lease, String> {
    if status != 200 {
        let code = element(xml, "Code").unwrap_or_default();
        let message = element(xml, "Message").unwrap_or_default();
        return Err(if code.is_empty() && message.is_empty() {
            format!("STS answered {status}")
        } else {
            format!("STS answered {status}: {code}: {message}")
        });
    }
    let creds = element(xml, "Credentials").ok_or("STS answer without <Credentials>")?;
    let need = |name: &str| {
        element(&creds, name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("STS answer without <{name}>"))
    };
    let expiration = need("Expiration")?;
    Ok(Lease {
        credentials: Credentials {
            access_key: need("AccessKeyId")?,
            secret_key: need("SecretAccessKey")?,
            session_token: Some(need("SessionToken")?),
        },
        expires_at: Some(
            expiry::parse(&expiration)
                .ok_or_else(|| format!("STS answer: bad <Expiration> {expiration:?}"))?,
        ),
    })
}

/// The text inside the first `<name>...</name>` (namespace prefixes ignored), entities decoded.
pub fn element(xml: &str, name: &str) -> Option<String> {
    let mut from = 0;
    while let Some(i) = xml[from..].find('<') {
        let start = from + i + 1;
        let end = start + xml[start..].find('>')?;
        let tag = &xml[start..end];
        from = end + 1;
        if tag.starts_with(['/', '?', '!']) || tag.ends_with('/') {
            continue;
        }
        let tag_name = tag.split_whitespace().next().unwrap_or("");
        let local = tag_name.rsplit(':').next().unwrap_or("");
        if local != name {
            continue;
        }
        let close = format!("</{tag_name}>");
        let inner_end = from + xml[from..].find(&close)?;
        return Some(unescape(xml[from..inner_end].trim()));
    }
    None
}

fn unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&#43;", "+")
        .replace("&#x2B;", "+")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>system:serviceaccount:ns:sa</SubjectFromWebIdentityToken>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::123456789012:assumed-role/r/corvid-1</Arn>
      <AssumedRoleId>AROA:corvid-1</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <SessionToken>FwoGZX&amp;IvYXdz</SessionToken>
      <SecretAccessKey>wJalr/K7MDENG+bPxRfiCY</SecretAccessKey>
      <Expiration>2026-12-01T16:38:15Z</Expiration>
      <AccessKeyId>ASIAEXAMPLE</AccessKeyId>
    </Credentials>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata><RequestId>ad4156e9</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>"#;

    #[test]
    fn success() {
        let l = parse_response(200, OK).unwrap();
        assert_eq!(l.credentials.access_key, "ASIAEXAMPLE");
        assert_eq!(l.credentials.secret_key, "wJalr/K7MDENG+bPxRfiCY");
        assert_eq!(
            l.credentials.session_token.as_deref(),
            Some("FwoGZX&IvYXdz")
        );
        assert_eq!(l.expires_at, expiry::parse("2026-12-01T16:38:15Z"));
        assert!(!format!("{l:?}").contains("wJalr"), "Debug redacts");
    }

    #[test]
    fn error_document() {
        let xml = r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error><Type>Sender</Type><Code>InvalidIdentityToken</Code>
  <Message>No OpenIDConnect provider found in your account</Message></Error>
  <RequestId>x</RequestId></ErrorResponse>"#;
        let e = parse_response(400, xml).unwrap_err();
        assert_eq!(
            e,
            "STS answered 400: InvalidIdentityToken: No OpenIDConnect provider found in your account"
        );
        assert_eq!(parse_response(503, "").unwrap_err(), "STS answered 503");
        assert!(parse_response(200, "<x/>")
            .unwrap_err()
            .contains("Credentials"));
        let no_exp = OK.replace("<Expiration>2026-12-01T16:38:15Z</Expiration>", "");
        assert!(parse_response(200, &no_exp)
            .unwrap_err()
            .contains("Expiration"));
    }

    #[test]
    fn form() {
        assert_eq!(
            form_body("arn:aws:iam::1:role/r", "corvid-1", "a.b+c/d="),
            "Action=AssumeRoleWithWebIdentity&Version=2011-06-15\
             &RoleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fr&RoleSessionName=corvid-1\
             &WebIdentityToken=a.b%2Bc%2Fd%3D"
        );
    }

    #[test]
    fn endpoints() {
        let vars = |k: &str| (k == "AWS_ENDPOINT_URL").then(|| "http://127.0.0.1:1".to_owned());
        let cx = Ctx {
            vars: &vars,
            region: "eu-west-1",
            profile: None,
            bucket: "b",
        };
        assert_eq!(endpoint(&cx), "http://127.0.0.1:1");
        let none = |_: &str| None;
        let cx = Ctx { vars: &none, ..cx };
        assert_eq!(endpoint(&cx), "https://sts.eu-west-1.amazonaws.com");
        let sts = |k: &str| {
            matches!(k, "AWS_ENDPOINT_URL_STS" | "AWS_ENDPOINT_URL").then(|| k.to_owned())
        };
        let cx = Ctx { vars: &sts, ..cx };
        assert_eq!(endpoint(&cx), "AWS_ENDPOINT_URL_STS");
    }
}

//! The `env` source: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`.
//! Configured when the access key is set; a key without its secret is an error. Such keys have
//! no expiry: they are read once and never refreshed.

use super::{Ctx, Lease, Outcome};
use crate::s3::sigv4::Credentials;

pub fn load(cx: &Ctx<'_>) -> Outcome {
    let Some(access_key) = cx.var("AWS_ACCESS_KEY_ID") else {
        return Ok(None);
    };
    let secret_key = cx
        .var("AWS_SECRET_ACCESS_KEY")
        .ok_or("AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not")?;
    Ok(Some(Lease {
        credentials: Credentials {
            access_key,
            secret_key,
            session_token: cx.var("AWS_SESSION_TOKEN"),
        },
        expires_at: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cx_with<'a>(vars: &'a dyn Fn(&str) -> Option<String>) -> Ctx<'a> {
        Ctx {
            vars,
            region: "us-east-1",
            profile: None,
            bucket: "b",
        }
    }

    #[test]
    fn env_keys() {
        let none = |_: &str| None;
        assert_eq!(load(&cx_with(&none)).unwrap(), None);
        let half = |k: &str| (k == "AWS_ACCESS_KEY_ID").then(|| "AK".to_owned());
        assert!(load(&cx_with(&half))
            .unwrap_err()
            .contains("AWS_SECRET_ACCESS_KEY"));
        let full = |k: &str| match k {
            "AWS_ACCESS_KEY_ID" => Some("AK".to_owned()),
            "AWS_SECRET_ACCESS_KEY" => Some("SK".to_owned()),
            "AWS_SESSION_TOKEN" => Some(String::new()),
            _ => None,
        };
        let l = load(&cx_with(&full)).unwrap().unwrap();
        assert_eq!(l.credentials.access_key, "AK");
        assert_eq!(l.credentials.session_token, None, "empty means unset");
        assert_eq!(l.expires_at, None);
    }
}

//! What a GET on a bucket asks for, read from its query string (pure): a listing (V2 or V1)
//! with the parameters forwarded to the origin, GetBucketLocation, or a sub-resource corvid
//! does not serve.
//!
//! # Rules
//!
//! * `list-type=2` is ListObjectsV2; no `list-type` (and no sub-resource) is ListObjects V1,
//!   as S3 reads `GET /bucket`. Any other `list-type` is `400`.
//! * Forwarded, per version, exactly the parameters S3 defines for it: V2 `prefix`,
//!   `delimiter`, `max-keys`, `continuation-token`, `start-after`, `encoding-type`,
//!   `fetch-owner`; V1 `prefix`, `delimiter`, `max-keys`, `marker`, `encoding-type`. Anything
//!   else is dropped like on object routes (a query token, `x-id`, cache busters), so it
//!   neither reaches the origin nor splits the cache.
//! * An empty `delimiter` or `prefix` is dropped: S3 reads it as absent.
//! * Values are checked where S3 defines them: `max-keys` a non-negative integer,
//!   `encoding-type` only `url`, `fetch-owner` `true`/`false`; otherwise `400`. Names and
//!   values are decoded as S3 decodes a query: `+` is a space, then `%XX` once (so a literal
//!   `+` in a prefix is `%2B`, as every SDK sends it); a forwarded parameter given twice, a value that is not UTF-8, or a `prefix` with
//!   NUL (it is part of the cache key, `cache::key::listing_key`) is `400`.
//! * `location` is GetBucketLocation. A name in [`SUB_RESOURCES`] is a bucket sub-resource
//!   (ACLs, policies, versions, multipart uploads, ...): [`Operation::Unsupported`] — corvid
//!   is a read-only cache of objects and their listings, not a bucket administration API.

use crate::error::{Error, Kind};
use crate::router::query_decode_into;

/// Bucket sub-resources S3 defines (besides `location`), each refused as not implemented.
pub const SUB_RESOURCES: &[&str] = &[
    "accelerate",
    "acl",
    "analytics",
    "attributes",
    "cors",
    "encryption",
    "intelligent-tiering",
    "inventory",
    "lifecycle",
    "logging",
    "metadataTable",
    "metrics",
    "notification",
    "object-lock",
    "ownershipControls",
    "policy",
    "policyStatus",
    "publicAccessBlock",
    "replication",
    "requestPayment",
    "restore",
    "select",
    "session",
    "tagging",
    "torrent",
    "uploads",
    "versioning",
    "versions",
    "website",
    "delete",
    "legal-hold",
];

/// Parameters forwarded for ListObjectsV2, sorted.
const V2_PARAMS: [&str; 8] = [
    "continuation-token",
    "delimiter",
    "encoding-type",
    "fetch-owner",
    "list-type",
    "max-keys",
    "prefix",
    "start-after",
];

/// Parameters forwarded for ListObjects (V1), sorted.
const V1_PARAMS: [&str; 5] = ["delimiter", "encoding-type", "marker", "max-keys", "prefix"];

/// A listing request: the decoded parameters forwarded to the origin, sorted by name (each
/// at most once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct List {
    pub v2: bool,
    pub params: Vec<(&'static str, String)>,
}

impl List {
    /// The `prefix` parameter (`""` when absent).
    pub fn prefix(&self) -> &str {
        self.params
            .iter()
            .find(|(n, _)| *n == "prefix")
            .map_or("", |(_, v)| v.as_str())
    }

    /// The parameters as borrowed pairs (what `s3::request` signs and sends).
    pub fn pairs(&self) -> Vec<(&str, &str)> {
        self.params.iter().map(|(n, v)| (*n, v.as_str())).collect()
    }
}

/// What a GET on a bucket asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    List(List),
    /// GetBucketLocation (`?location`).
    Location,
    /// A bucket sub-resource corvid does not serve (its name as S3 spells it).
    Unsupported(&'static str),
}

fn bad(message: &'static str) -> Error {
    Error::client(Kind::BadRequest, message)
}

/// Form-decodes one query component: `+` is a space, then `%XX` escapes (how S3 reads a
/// query; AWS SDK for Go v1 — rclone — sends a space in a prefix as `+`).
fn decode(raw: &str) -> Result<String, Error> {
    let mut out = Vec::new();
    query_decode_into(raw.as_bytes(), &mut out)?;
    String::from_utf8(out).map_err(|_| bad("query parameter is not valid UTF-8"))
}

/// Reads the query of a GET on a bucket (see the module docs).
pub fn classify(query: Option<&str>) -> Result<Operation, Error> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = decode(raw_name)?;
        if let Some(sub) = SUB_RESOURCES.iter().find(|s| **s == name) {
            return Ok(Operation::Unsupported(sub));
        }
        if name == "location" {
            return Ok(Operation::Location);
        }
        let value = decode(raw_value)?;
        pairs.push((name, value));
    }
    let list_type = pairs.iter().find(|(n, _)| n == "list-type");
    let v2 = match list_type.map(|(_, v)| v.as_str()) {
        None => false,
        Some("2") => true,
        Some(_) => {
            return Err(bad(
                "list-type must be 2 (ListObjectsV2) or absent (ListObjects)",
            ))
        }
    };
    let known: &[&'static str] = if v2 { &V2_PARAMS } else { &V1_PARAMS };
    let mut params: Vec<(&'static str, String)> = Vec::new();
    for (name, value) in pairs {
        let Some(&name) = known.iter().find(|k| **k == name) else {
            continue;
        };
        if params.iter().any(|(n, _)| *n == name) {
            return Err(bad("query parameter given more than once"));
        }
        check_value(name, &value)?;
        // S3 reads an empty delimiter or prefix as none (rclone sends `delimiter=`): dropped,
        // so the origin sees what S3 would act on and both spellings share a cache entry.
        if value.is_empty() && matches!(name, "delimiter" | "prefix") {
            continue;
        }
        params.push((name, value));
    }
    params.sort_unstable_by(|a, b| a.0.cmp(b.0));
    Ok(Operation::List(List { v2, params }))
}

fn check_value(name: &str, value: &str) -> Result<(), Error> {
    match name {
        "max-keys" if value.parse::<u32>().is_err() => {
            Err(bad("max-keys must be a non-negative integer"))
        }
        "encoding-type" if value != "url" => Err(bad("encoding-type must be url")),
        "fetch-owner" if !matches!(value, "true" | "false") => {
            Err(bad("fetch-owner must be true or false"))
        }
        "prefix" if value.contains('\0') => Err(bad("prefix must not contain NUL")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(q: &str) -> List {
        match classify(Some(q)).unwrap() {
            Operation::List(l) => l,
            other => panic!("{q}: {other:?}"),
        }
    }

    fn owned(p: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        p.iter().map(|(n, v)| (*n, v.to_string())).collect()
    }

    #[test]
    fn v2_parameters_decoded_sorted_and_filtered() {
        let l = list(
            "list-type=2&prefix=a%20b%2Bc/%C3%A9&delimiter=%2F&max-keys=7&continuation-token=t%3D%3D\
             &start-after=x&encoding-type=url&fetch-owner=true&token=jwt&x-id=ListObjectsV2&marker=m",
        );
        assert!(l.v2);
        assert_eq!(
            l.params,
            owned(&[
                ("continuation-token", "t=="),
                ("delimiter", "/"),
                ("encoding-type", "url"),
                ("fetch-owner", "true"),
                ("list-type", "2"),
                ("max-keys", "7"),
                ("prefix", "a b+c/é"),
                ("start-after", "x"),
            ])
        );
        assert_eq!(l.prefix(), "a b+c/é");
        // `+` is a space in a query (S3's reading; the Go SDK sends spaces so).
        assert_eq!(list("prefix=data%2Fdir+0%2F").prefix(), "data/dir 0/");
    }

    #[test]
    fn v1_is_the_default_and_keeps_its_own_parameters() {
        assert_eq!(
            classify(None).unwrap(),
            Operation::List(List {
                v2: false,
                params: vec![]
            })
        );
        let l = list("prefix=p&marker=m%2B&start-after=s&continuation-token=c&fetch-owner=true");
        assert!(!l.v2);
        assert_eq!(l.params, owned(&[("marker", "m+"), ("prefix", "p")]));
        assert_eq!(list("delimiter=/").prefix(), "");
        // Empty delimiter and prefix are none (rclone sends `delimiter=`).
        assert_eq!(
            list("list-type=2&delimiter=&prefix=&max-keys=1000").params,
            owned(&[("list-type", "2"), ("max-keys", "1000")])
        );
    }

    #[test]
    fn location_and_sub_resources() {
        assert_eq!(classify(Some("location")).unwrap(), Operation::Location);
        assert_eq!(classify(Some("location=")).unwrap(), Operation::Location);
        assert_eq!(
            classify(Some("acl")).unwrap(),
            Operation::Unsupported("acl")
        );
        assert_eq!(
            classify(Some("versions&prefix=a")).unwrap(),
            Operation::Unsupported("versions")
        );
        assert_eq!(
            classify(Some("uploads=")).unwrap(),
            Operation::Unsupported("uploads")
        );
    }

    #[test]
    fn bad_values_are_400() {
        for q in [
            "list-type=1",
            "list-type=",
            "list-type=2&max-keys=-1",
            "max-keys=ten",
            "encoding-type=base64",
            "list-type=2&fetch-owner=yes",
            "prefix=a&prefix=b",
            "prefix=%00",
            "prefix=%FF",
            "prefix=%zz",
            "x=%4",
        ] {
            assert_eq!(
                classify(Some(q)).unwrap_err().kind(),
                Kind::BadRequest,
                "{q}"
            );
        }
        // A parameter of the other version is dropped, not checked.
        assert!(list("fetch-owner=yes").params.is_empty());
    }
}

//! Differential test: corvid's hand-rolled SigV4 against the `aws-sigv4` crate.
//!
//! Random credentials, regions, buckets, object keys (arbitrary unicode, spaces, `+`, reserved
//! characters, dot segments, long keys), S3 query parameters, conditional/range headers,
//! timestamps (including seconds either side of UTC midnight) and optional session tokens.
//! The URL given to `aws-sigv4` is built from our `canonical_object_path` + `canonical_query`,
//! i.e. exactly what corvid sends upstream, so both sides sign the same bytes; `aws-sigv4` is
//! configured the way the AWS SDK configures it for S3 (single encoding, no path normalization,
//! `x-amz-content-sha256`, session token signed).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SessionTokenMode, SignableBody,
    SignableRequest, SigningSettings, UriPathNormalizationMode,
};
use aws_sigv4::sign::v4::SigningParams;
use aws_smithy_runtime_api::client::identity::Identity;
use corvid::s3::sigv4::{
    canonical_object_path, canonical_query, Credentials, SignedHeaders, Signer, SigningRequest,
    UNSIGNED_PAYLOAD,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Case {
    access_key: String,
    secret_key: String,
    session_token: Option<String>,
    region: String,
    bucket: Option<String>,
    key: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    method: &'static str,
    /// Seconds since the epoch of the first signature.
    t1: u64,
    /// Offset of a second signature with the same `Signer`, to exercise the key cache.
    dt: u64,
}

struct Built {
    uri: String,
    query: String,
    /// Lowercase names, including host.
    headers: Vec<(String, String)>,
    url: String,
}

fn build(case: &Case) -> Built {
    let uri = canonical_object_path(case.bucket.as_deref(), &case.key);
    let pairs: Vec<(&str, &str)> = case
        .query
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let query = canonical_query(&pairs);
    let host = match &case.bucket {
        Some(_) => format!("s3.{}.amazonaws.com", case.region),
        None => format!("bucket.s3.{}.amazonaws.com", case.region),
    };
    let mut url = format!("https://{host}{uri}");
    if !query.is_empty() {
        url.push('?');
        url.push_str(&query);
    }
    let mut headers = vec![("host".to_owned(), host)];
    headers.extend(case.headers.iter().cloned());
    Built {
        uri,
        query,
        headers,
        url,
    }
}

fn ours(signer: &Signer, case: &Case, b: &Built, t: SystemTime, cached: bool) -> SignedHeaders {
    let headers: Vec<(&str, &str)> = b
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let req = SigningRequest {
        method: case.method,
        canonical_uri: &b.uri,
        canonical_query: &b.query,
        headers: &headers,
    };
    if cached {
        signer.sign(&req, t)
    } else {
        signer.sign_uncached(&req, t)
    }
}

/// `(name, value)` of every header `aws-sigv4` wants added.
fn theirs(case: &Case, b: &Built, t: SystemTime) -> Vec<(String, String)> {
    let identity: Identity = aws_credential_types::Credentials::new(
        &case.access_key,
        &case.secret_key,
        case.session_token.clone(),
        None,
        "corvid-differential",
    )
    .into();
    let mut settings = SigningSettings::default();
    settings.percent_encoding_mode = PercentEncodingMode::Single;
    settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    settings.session_token_mode = SessionTokenMode::Include;
    let params = SigningParams::builder()
        .identity(&identity)
        .region(&case.region)
        .name("s3")
        .time(t)
        .settings(settings)
        .build()
        .unwrap()
        .into();
    let req = SignableRequest::new(
        case.method,
        b.url.as_str(),
        b.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
        SignableBody::UnsignedPayload,
    )
    .expect("URL built from canonical path/query must parse");
    let out = sign(req, &params).expect("aws-sigv4 signs");
    out.output()
        .headers()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.to_owned()))
        .collect()
}

fn header<'a>(hs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    hs.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

fn check_one(signer: &Signer, case: &Case, b: &Built, t: SystemTime) -> Result<(), TestCaseError> {
    let cached = ours(signer, case, b, t, true);
    let uncached = ours(signer, case, b, t, false);
    prop_assert_eq!(&cached, &uncached, "cached vs uncached");
    let aws = theirs(case, b, t);
    prop_assert_eq!(
        Some(cached.authorization.as_str()),
        header(&aws, "authorization"),
        "Authorization differs for {}",
        b.url
    );
    prop_assert_eq!(Some(cached.amz_date.as_str()), header(&aws, "x-amz-date"));
    prop_assert_eq!(cached.content_sha256, UNSIGNED_PAYLOAD);
    prop_assert_eq!(
        Some(cached.content_sha256),
        header(&aws, "x-amz-content-sha256")
    );
    prop_assert_eq!(
        cached.security_token.as_deref(),
        header(&aws, "x-amz-security-token")
    );
    Ok(())
}

fn check(case: &Case) -> Result<(), TestCaseError> {
    let b = build(case);
    let signer = Signer::new(
        Credentials {
            access_key: case.access_key.clone(),
            secret_key: case.secret_key.clone(),
            session_token: case.session_token.clone(),
        },
        &case.region,
        "s3",
    );
    let t1 = UNIX_EPOCH + Duration::from_secs(case.t1) + Duration::from_millis(case.t1 % 1000);
    let t2 = t1 + Duration::from_secs(case.dt);
    // t1 fills the cache; t2 (often on the next UTC day) must refresh it, and t1 again must
    // not be served t2's key.
    check_one(&signer, case, &b, t1)?;
    check_one(&signer, case, &b, t2)?;
    check_one(&signer, case, &b, t1)?;
    Ok(())
}

// ----- strategies -------------------------------------------------------------------------------

fn object_key() -> impl Strategy<Value = String> {
    prop_oneof![
        // Arbitrary printable unicode.
        4 => "\\PC{0,40}",
        // Anything at all, control characters included: S3 keys are just UTF-8.
        1 => any::<String>(),
        // Heavy on characters that need (or must not get) encoding, and on path-like shapes.
        4 => "[a-zA-Z0-9 +%?#&=/.~_*'()!$,;:@\\[\\]\"<>^`{|}\\\\-]{0,60}",
        1 => "(\\.{1,2}/|/|//|[a-z]{1,5}/){0,8}[a-z. ]{0,5}",
        // Long keys (S3 allows up to 1024 bytes).
        1 => "[a-zA-Z0-9/ +é日]{300,1000}",
    ]
}

fn query() -> impl Strategy<Value = Vec<(String, String)>> {
    let name = prop_oneof![
        Just("versionId".to_owned()),
        Just("response-content-type".to_owned()),
        Just("response-content-disposition".to_owned()),
        Just("response-cache-control".to_owned()),
        Just("partNumber".to_owned()),
        Just("x-id".to_owned()),
        "[a-zA-Z0-9_.~ +=&/-]{1,12}",
        "\\PC{1,6}",
    ];
    let value = prop_oneof![
        "[a-zA-Z0-9._-]{0,32}",
        Just("text/plain; charset=utf-8".to_owned()),
        Just("attachment; filename=\"a b+c.txt\"".to_owned()),
        "\\PC{0,20}",
    ];
    prop::collection::vec((name, value), 0..5)
}

fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
    let one = prop_oneof![
        (0u64..1 << 40, prop::option::of(0u64..1 << 40)).prop_map(|(a, b)| (
            "range".to_owned(),
            match b {
                Some(b) => format!("bytes={a}-{}", a + b),
                None => format!("bytes={a}-"),
            }
        )),
        "\"[0-9a-f]{32}\"".prop_map(|v| ("if-none-match".to_owned(), v)),
        "\"[0-9a-f]{32}(-[0-9]{1,3})?\"".prop_map(|v| ("if-match".to_owned(), v)),
        Just((
            "if-modified-since".to_owned(),
            "Sun, 30 Aug 2015 12:36:00 GMT".to_owned()
        )),
        // Visible ASCII with runs of spaces, to exercise trimming/collapsing.
        ("x-corvid-[a-z]{1,3}", "[ -~]{0,24}"),
        // Words separated and surrounded by runs of spaces, so odd and even runs both occur.
        (
            "x-corvid-[a-z]{1,3}",
            prop::collection::vec(("[!-~]{0,4}", " {0,4}"), 0..6)
                .prop_map(|parts| parts.into_iter().map(|(w, s)| w + &s).collect::<String>())
        ),
    ];
    prop::collection::vec(one, 0..5)
}

fn region() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("us-east-1".to_owned()),
        Just("eu-west-3".to_owned()),
        Just("ap-southeast-2".to_owned()),
        "[a-z]{2}-[a-z]{4,9}-[1-9]",
    ]
}

/// Times from 1970 to 2100, half of them within 10 s of a UTC midnight.
fn time() -> impl Strategy<Value = u64> {
    const END: u64 = 4_102_444_800; // 2100-01-01
    prop_oneof![
        0..END,
        (1u64..END / 86_400, 0u64..20).prop_map(|(day, off)| day * 86_400 - 10 + off),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        "[A-Z0-9]{16,20}",
        // Secrets longer than an HMAC block (and than the signer's stack buffer) too.
        prop_oneof![4 => "[A-Za-z0-9/+]{40}", 1 => "[ -~]{0,200}"],
        prop::option::of("[A-Za-z0-9/+=]{16,400}"),
        region(),
        prop::option::of("[a-z0-9][a-z0-9.-]{1,40}[a-z0-9]"),
        object_key(),
        query(),
        headers(),
        prop_oneof![Just("GET"), Just("HEAD")],
        time(),
        prop_oneof![Just(0u64), 1u64..30, Just(86_400u64), 0u64..3 * 86_400],
    )
        .prop_map(
            |(
                access_key,
                secret_key,
                session_token,
                region,
                bucket,
                key,
                query,
                headers,
                method,
                t1,
                dt,
            )| {
                Case {
                    access_key,
                    secret_key,
                    session_token,
                    region,
                    bucket,
                    key,
                    query,
                    headers,
                    method,
                    t1,
                    dt,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn matches_aws_sigv4(case in case()) {
        check(&case)?;
    }
}

/// A fixed request signed with one `Signer` at 23:59:59 and 00:00:00 the next day: the second
/// signature must use the new day's key (a stale cache would still produce a well-formed but
/// wrong signature, which only the comparison with aws-sigv4 catches).
#[test]
fn cache_refreshes_across_midnight() {
    let case = Case {
        access_key: "AKIDEXAMPLE".into(),
        secret_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
        session_token: Some("token/with+chars=".into()),
        region: "us-east-1".into(),
        bucket: Some("my-bucket".into()),
        key: "photos/2024/a b+c.jpg".into(),
        query: vec![("versionId".into(), "3/L4kqtJl".into())],
        headers: vec![("range".into(), "bytes=0-1023".into())],
        method: "GET",
        t1: 1_709_251_199, // 2024-02-29T23:59:59Z
        dt: 1,
    };
    check(&case).unwrap();
    let b = build(&case);
    let signer = Signer::new(
        Credentials {
            access_key: case.access_key.clone(),
            secret_key: case.secret_key.clone(),
            session_token: case.session_token.clone(),
        },
        "us-east-1",
        "s3",
    );
    let before = UNIX_EPOCH + Duration::from_secs(case.t1);
    let after = before + Duration::from_secs(1);
    let a = ours(&signer, &case, &b, before, true);
    let z = ours(&signer, &case, &b, after, true);
    assert!(a
        .authorization
        .contains("/20240229/us-east-1/s3/aws4_request"));
    assert!(z
        .authorization
        .contains("/20240301/us-east-1/s3/aws4_request"));
    assert_eq!(
        Some(z.authorization.as_str()),
        header(&theirs(&case, &b, after), "authorization")
    );
}

//! Signing cost of one typical S3 GET: path-style, a 40-byte key with a space, host, range
//! header and a session token. Compares corvid's signer with its day-key cache, without it, and
//! the `aws-sigv4` crate on the same request.

use std::hint::black_box;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SessionTokenMode, SignableBody,
    SignableRequest, SigningSettings, UriPathNormalizationMode,
};
use aws_sigv4::sign::v4::SigningParams;
use aws_smithy_runtime_api::client::identity::Identity;
use corvid::s3::sigv4::{canonical_object_path, Credentials, Signer, SigningRequest};
use criterion::{criterion_group, criterion_main, Criterion};

const ACCESS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";
const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const TOKEN: &str =
    "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQDexampletokenexampletoken\
                     exampletokenexampletokenexampletokenexampletokenexampletokenexampletoken==";
const REGION: &str = "us-east-1";
const HOST: &str = "s3.us-east-1.amazonaws.com";
const RANGE: &str = "bytes=1048576-2097151";
// 40 bytes, one space.
const KEY: &str = "datasets/2024-06/part-00017 final.parque";

fn bench(c: &mut Criterion) {
    assert_eq!(KEY.len(), 40);
    let now = UNIX_EPOCH + Duration::from_secs(1_718_000_000);
    let uri = canonical_object_path(Some("analytics-bucket"), KEY);
    let headers = [("host", HOST), ("range", RANGE)];
    let req = SigningRequest {
        method: "GET",
        canonical_uri: &uri,
        canonical_query: "",
        headers: &headers,
    };
    let signer = Signer::new(
        Credentials {
            access_key: ACCESS_KEY.into(),
            secret_key: SECRET_KEY.into(),
            session_token: Some(TOKEN.into()),
        },
        REGION,
        "s3",
    );

    let mut g = c.benchmark_group("sigv4_get");
    g.bench_function("corvid_cached", |b| {
        b.iter(|| signer.sign(black_box(&req), black_box(now)))
    });
    g.bench_function("corvid_uncached", |b| {
        b.iter(|| signer.sign_uncached(black_box(&req), black_box(now)))
    });

    let identity: Identity = aws_credential_types::Credentials::new(
        ACCESS_KEY,
        SECRET_KEY,
        Some(TOKEN.into()),
        None,
        "bench",
    )
    .into();
    let url = format!("https://{HOST}{uri}");
    let aws_auth = |t: SystemTime| {
        let mut settings = SigningSettings::default();
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        settings.session_token_mode = SessionTokenMode::Include;
        let params = SigningParams::builder()
            .identity(&identity)
            .region(REGION)
            .name("s3")
            .time(t)
            .settings(settings)
            .build()
            .unwrap()
            .into();
        let request = SignableRequest::new(
            "GET",
            url.as_str(),
            headers.iter().copied(),
            SignableBody::UnsignedPayload,
        )
        .unwrap();
        sign(request, &params).unwrap().into_parts()
    };
    // Same request, same signature: the comparison is apples to apples.
    let (aws_out, _) = aws_auth(now);
    let aws_authz = aws_out
        .headers()
        .find(|(n, _)| n.eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.to_owned());
    assert_eq!(aws_authz, Some(signer.sign(&req, now).authorization));
    g.bench_function("aws_sigv4", |b| b.iter(|| aws_auth(black_box(now))));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

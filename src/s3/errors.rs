//! S3 error answers: what an origin's status and XML error body mean for corvid's client.
//!
//! Sans-IO, like the rest of `s3`: [`parse`] scans the few elements corvid uses out of S3's
//! XML error body, [`retry_after`] validates a `Retry-After` value, and [`origin_error`] turns
//! an origin status (with the parsed body, two headers and the bucket's configuration) into the
//! client's [`Error`]. Reading the body — bounded in bytes and time, so that the connection
//! returns to the pool — happens at the edge, in the object path's `origin_error` module.
//!
//! # The mapping
//! Every origin status other than 200/206/304 (which are passed through) is answered as
//! follows. Every error row carries `"origin_code"` in the JSON body when the origin's XML body
//! had a `<Code>`; error bodies over 64 KiB, or slower than 2 s, are not read (then there is
//! no code).
//!
//! | origin answer | client status | `"error"` | message / headers |
//! |---|---|---|---|
//! | `3xx` (S3 `301 PermanentRedirect`, `307 TemporaryRedirect`) | 502 | `bad_gateway` | names the region (`<Region>`, `<BucketRegion>`, `x-amz-bucket-region`) and/or `<Endpoint>` the origin gave, and the configured region |
//! | `400` that is a region error: `<Region>`/`<BucketRegion>`/`x-amz-bucket-region` naming another region than configured (e.g. `AuthorizationHeaderMalformed`, also with the region only in its message), an `<Endpoint>`, or `IllegalLocationConstraintException` | 502 | `bad_gateway` | as for `3xx` |
//! | other `400` (e.g. `InvalidArgument`) | 400 | `origin_bad_request` | S3's code and message |
//! | `403` | 403 | `forbidden` | |
//! | `404` | 404 | `not_found` | |
//! | `412` | 412 | `precondition_failed` | |
//! | `416` | 416 | `range_not_satisfiable` | |
//! | `500` (`InternalError`) | 500 | `origin_internal_error` | S3's code and message |
//! | `503` (`SlowDown`, `ServiceUnavailable`) | 503 | `origin_unavailable` | S3's code and message; `Retry-After` copied when it is valid delta-seconds or an HTTP-date |
//! | any other status | 502 | `bad_gateway` | the status, S3's code and message |
//! | no answer in time | 504 | `gateway_timeout` | |
//! | unreachable, or an answer that is not HTTP | 502 | `bad_gateway` | |
//!
//! For a stale cache entry being revalidated, `cache.stale_if_error` lets the stale copy stand
//! in for any of these with a 5xx status (the object path's `revalidate`).

use std::fmt::Write as _;

use memchr::memmem;

use crate::error::{Error, Kind};
use crate::http::response::UpstreamHead;

/// Longest S3 error code passed on (S3's longest are ~40 characters).
const MAX_CODE: usize = 64;
/// Longest piece of S3's `<Message>` quoted in corvid's message.
const MAX_MESSAGE: usize = 200;
/// Longest region name accepted as a hint (AWS's are ~15 characters).
const MAX_REGION: usize = 64;
/// Longest endpoint accepted as a hint (a DNS name).
const MAX_ENDPOINT: usize = 255;
/// Longest `Retry-After` value copied (an IMF-fixdate has 29 characters).
const MAX_RETRY_AFTER: usize = 64;
/// Longest delta-seconds copied (ten digits: centuries).
const MAX_DELTA_DIGITS: usize = 10;
/// Longest entity reference decoded (`&#x10FFFF;` has 8 characters between `&` and `;`).
const MAX_ENTITY: usize = 10;

/// The elements of an S3 XML error body that corvid uses; each is `None` when the body does not
/// have it (complete and non-empty). Values are entity-decoded and trimmed, nothing more.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3ErrorBody {
    /// `<Code>`, e.g. `SlowDown`, `NoSuchKey`, `PermanentRedirect`.
    pub code: Option<String>,
    /// `<Message>`: one human sentence.
    pub message: Option<String>,
    /// `<Region>`: the bucket's region (`AuthorizationHeaderMalformed`, some redirects).
    pub region: Option<String>,
    /// `<Endpoint>`: where the bucket must be addressed (`PermanentRedirect`,
    /// `TemporaryRedirect`).
    pub endpoint: Option<String>,
    /// `<BucketRegion>`: the bucket's region (some S3-compatible stores).
    pub bucket_region: Option<String>,
}

/// Scans an S3 error body. Tolerant: it rejects nothing — a body that is not XML, truncated, or
/// lacks an element gives `None` for that element. The first complete `<Name>…</Name>` of each
/// name counts; attributes are ignored, `<![CDATA[…]]>` is unwrapped and the five XML entities
/// and numeric character references are decoded. Linear in the body's length.
pub fn parse(body: &[u8]) -> S3ErrorBody {
    S3ErrorBody {
        code: element(body, "Code"),
        message: element(body, "Message"),
        region: element(body, "Region"),
        endpoint: element(body, "Endpoint"),
        bucket_region: element(body, "BucketRegion"),
    }
}

/// The decoded, trimmed text of the first complete, non-empty `<name>…</name>`.
fn element(xml: &[u8], name: &str) -> Option<String> {
    let open = format!("<{name}");
    let close = format!("</{name}>");
    let mut from = 0;
    while let Some(i) = memmem::find(&xml[from..], open.as_bytes()) {
        let after = from + i + open.len();
        from = after;
        let start = match xml.get(after)? {
            b'>' => after + 1,
            // Attributes; a self-closing `<Name .../>` is empty.
            b if b.is_ascii_whitespace() => {
                let gt = after + memchr::memchr(b'>', &xml[after..])?;
                if xml[gt - 1] == b'/' {
                    continue;
                }
                gt + 1
            }
            // `<Name/>` is empty; `<NameSuffix>` is another element.
            _ => continue,
        };
        let end = start + memmem::find(&xml[start..], close.as_bytes())?;
        let text = decode(&String::from_utf8_lossy(&xml[start..end]));
        let text = text.trim();
        if !text.is_empty() {
            return Some(text.to_string());
        }
        from = end + close.len();
    }
    None
}

/// Element text with CDATA sections unwrapped and entity references decoded; an unknown or
/// malformed reference is kept as written.
fn decode(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find(['&', '<']) {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if let Some(cdata) = rest.strip_prefix("<![CDATA[") {
            let end = cdata.find("]]>").unwrap_or(cdata.len());
            out.push_str(&cdata[..end]);
            rest = cdata.get(end + 3..).unwrap_or("");
            continue;
        }
        let reference = rest[1..]
            .find(';')
            .filter(|&semi| semi <= MAX_ENTITY)
            .and_then(|semi| Some((entity(&rest[1..1 + semi])?, semi)));
        match reference {
            Some((c, semi)) => {
                out.push(c);
                rest = &rest[semi + 2..];
            }
            None => {
                out.push_str(&rest[..1]);
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The character an entity reference (between `&` and `;`) stands for.
fn entity(name: &str) -> Option<char> {
    let code = match name {
        "amp" => return Some('&'),
        "lt" => return Some('<'),
        "gt" => return Some('>'),
        "quot" => return Some('"'),
        "apos" => return Some('\''),
        _ => {
            let num = name.strip_prefix('#')?;
            match num.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => num.parse::<u32>().ok()?,
            }
        }
    };
    char::from_u32(code)
}

/// `value` when it is a valid `Retry-After` (RFC 9110 §10.2.3): delta-seconds or an HTTP-date
/// (trimmed). Anything else — which a header must never carry through — is `None`.
pub fn retry_after(value: &str) -> Option<&str> {
    let v = value.trim_matches([' ', '\t']);
    if v.is_empty() || v.len() > MAX_RETRY_AFTER {
        return None;
    }
    if v.bytes().all(|b| b.is_ascii_digit()) {
        return (v.len() <= MAX_DELTA_DIGITS).then_some(v);
    }
    let printable = v.bytes().all(|b| b == b' ' || b.is_ascii_graphic());
    (printable && crate::http::date::parse(v).is_some()).then_some(v)
}

/// The origin response headers that bear on an error answer.
#[derive(Debug, Clone, Copy, Default)]
pub struct OriginHeaders<'a> {
    /// `Retry-After`, as sent.
    pub retry_after: Option<&'a str>,
    /// `x-amz-bucket-region`: S3 names the bucket's region on redirects and region errors
    /// (the only hint a HEAD, which has no body, gets).
    pub bucket_region: Option<&'a str>,
}

impl<'a> OriginHeaders<'a> {
    pub fn of(head: &'a UpstreamHead) -> Self {
        OriginHeaders {
            retry_after: head.header("retry-after"),
            bucket_region: head.header("x-amz-bucket-region"),
        }
    }
}

/// What the bucket is configured with, for messages that name a misconfiguration.
#[derive(Debug, Clone, Copy)]
pub struct Configured<'a> {
    /// The bucket's name at the origin.
    pub bucket: &'a str,
    pub region: &'a str,
}

/// The client's error for an origin answer with `status` (anything but 200/206/304): see the
/// table in the module doc. `body` is the parsed error body, `None` when it was not read.
pub fn origin_error(
    status: u16,
    body: Option<&S3ErrorBody>,
    headers: &OriginHeaders<'_>,
    configured: &Configured<'_>,
) -> Error {
    let empty = S3ErrorBody::default();
    let body = body.unwrap_or(&empty);
    let code = body.code.as_deref().map(|c| clean(c, MAX_CODE));
    let said = detail(code.as_deref(), body.message.as_deref());
    let hint = Misdirection::of(body, code.as_deref(), headers, configured);
    let region_error = status == 400
        && (hint.region.is_some()
            || hint.endpoint.is_some()
            || matches!(
                code.as_deref(),
                Some("IllegalLocationConstraintException" | "PermanentRedirect")
            ));
    let e = match status {
        300..=399 => hint.error(status, code.as_deref(), configured),
        400 if region_error => hint.error(status, code.as_deref(), configured),
        400 => Error::upstream(
            Kind::OriginBadRequest,
            format!("the origin refused corvid's request with status 400{said}"),
        ),
        403 => Error::upstream(Kind::Forbidden, "the origin refused access to this object"),
        404 => Error::upstream(Kind::NotFound, "no such object"),
        412 => Error::upstream(
            Kind::PreconditionFailed,
            "a precondition of the request failed",
        ),
        416 => Error::upstream(
            Kind::RangeNotSatisfiable,
            "the requested range is not satisfiable",
        ),
        500 => Error::upstream(
            Kind::OriginInternal,
            format!("the origin failed with status 500{said}"),
        ),
        503 => {
            let e = Error::upstream(
                Kind::OriginUnavailable,
                format!("the origin is unavailable or throttling, status 503{said}"),
            );
            match headers.retry_after.and_then(retry_after) {
                Some(after) => e.with_retry_after(after),
                None => e,
            }
        }
        s => Error::upstream(
            Kind::BadGateway,
            format!("the origin answered with status {s}{said}"),
        ),
    };
    match code {
        Some(code) => e.with_origin_code(code),
        None => e,
    }
}

/// ` (Code: Message)`, ` (Code)`, ` (Message)` or nothing: what the origin said, for a message.
fn detail(code: Option<&str>, message: Option<&str>) -> String {
    let message = message.map(|m| clean(m, MAX_MESSAGE));
    match (code, message.as_deref()) {
        (Some(c), Some(m)) => format!(" ({c}: {m})"),
        (Some(s), None) | (None, Some(s)) => format!(" ({s})"),
        (None, None) => String::new(),
    }
}

/// Where the origin says the bucket is, when that is not what corvid is configured with.
struct Misdirection {
    /// A region other than the configured one.
    region: Option<String>,
    endpoint: Option<String>,
}

impl Misdirection {
    fn of(
        body: &S3ErrorBody,
        code: Option<&str>,
        headers: &OriginHeaders<'_>,
        configured: &Configured<'_>,
    ) -> Self {
        // `AuthorizationHeaderMalformed` names the region in its message, also when some
        // stores leave the `<Region>` element out: "... the region 'us-east-1' is wrong;
        // expecting 'eu-west-1'".
        let expecting = body
            .message
            .as_deref()
            .filter(|_| code == Some("AuthorizationHeaderMalformed"))
            .and_then(expected_region);
        let region = [
            body.region.as_deref(),
            body.bucket_region.as_deref(),
            headers.bucket_region,
            expecting,
        ]
        .into_iter()
        .flatten()
        .map(str::trim)
        .find(|r| is_region(r) && !r.eq_ignore_ascii_case(configured.region))
        .map(str::to_string);
        let endpoint = body
            .endpoint
            .as_deref()
            .filter(|e| is_endpoint(e))
            .map(str::to_string);
        Misdirection { region, endpoint }
    }

    /// The 502 naming the likely misconfiguration.
    fn error(&self, status: u16, code: Option<&str>, c: &Configured<'_>) -> Error {
        let b = clean(c.bucket, MAX_ENDPOINT);
        let configured = clean(c.region, MAX_REGION);
        let mut m = String::from("the origin says ");
        let _ = match (&self.region, &self.endpoint) {
            (Some(r), Some(e)) => write!(
                m,
                "bucket {b} is in region {r} (endpoint {e}), configured {configured}"
            ),
            (Some(r), None) => write!(m, "bucket {b} is in region {r}, configured {configured}"),
            (None, Some(e)) => write!(
                m,
                "bucket {b} must be addressed at endpoint {e} (configured region {configured})"
            ),
            (None, None) => write!(
                m,
                "bucket {b} is elsewhere (status {status}), configured region {configured}"
            ),
        };
        if let Some(code) = code {
            let _ = write!(m, " ({code})");
        }
        m.push_str(": check the bucket's region/endpoint");
        Error::upstream(Kind::BadGateway, m)
    }
}

/// The region in "... expecting 'eu-west-1'" (S3's `AuthorizationHeaderMalformed` message).
fn expected_region(message: &str) -> Option<&str> {
    let rest = &message[message.find("expecting")? + "expecting".len()..];
    let rest = rest.trim_start().strip_prefix(['\'', '"'])?;
    let end = rest.find(['\'', '"'])?;
    Some(&rest[..end])
}

/// A plausible region name: `eu-west-1`, also S3-compatible stores' own (`garage`, `fr-par`).
fn is_region(r: &str) -> bool {
    !r.is_empty()
        && r.len() <= MAX_REGION
        && r.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A plausible endpoint: a host name (or `host:port`), maybe with a scheme and path.
fn is_endpoint(e: &str) -> bool {
    !e.is_empty() && e.len() <= MAX_ENDPOINT && e.bytes().all(|b| b.is_ascii_graphic())
}

/// `s` fit for a one-line message: control characters become spaces, runs of whitespace one
/// space, and at most `max` characters are kept (`…` marks a cut).
fn clean(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max * 4));
    let mut space = false;
    for (n, c) in s.trim().chars().enumerate() {
        if n == max {
            out.push('…');
            break;
        }
        if c.is_whitespace() || c.is_control() {
            space = true;
            continue;
        }
        if space {
            out.push(' ');
            space = false;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CONFIGURED: Configured<'static> = Configured {
        bucket: "my-assets-prod",
        region: "us-east-1",
    };

    // Error bodies in the shape S3 sends them (the element order and wording of AWS's error
    // responses; request and host ids shortened).
    const SLOW_DOWN: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message><RequestId>B3EB633B8A7B895D</RequestId><HostId>ifOa15QzsrV56CmsZiEA0OBcsntOwpfv</HostId></Error>";
    const SERVICE_UNAVAILABLE: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>ServiceUnavailable</Code><Message>Please reduce your request rate.</Message><RequestId>4442587FB7D0A2F9</RequestId><HostId>Uuag1LuByRx9e6j5Onimru9pO4ZVKnJ2</HostId></Error>";
    const INTERNAL_ERROR: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InternalError</Code><Message>We encountered an internal error. Please try again.</Message><RequestId>656c76696e6727732072657175657374</RequestId><HostId>Uuag1LuByRx9e6j5Onimru9pO4ZVKnJ2</HostId></Error>";
    const PERMANENT_REDIRECT: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>PermanentRedirect</Code><Message>The bucket you are attempting to access must be addressed using the specified endpoint. Please send all future requests to this endpoint.</Message><Endpoint>my-assets-prod.s3.eu-west-1.amazonaws.com</Endpoint><Bucket>my-assets-prod</Bucket><RequestId>V85ZRZSGS2E2PYWQ</RequestId><HostId>odPY3GnLB9rDuzQJSnPEB55FL</HostId></Error>";
    const TEMPORARY_REDIRECT: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>TemporaryRedirect</Code><Message>Please re-send this request to the specified temporary endpoint. Continue to use the original request endpoint for future requests.</Message><Endpoint>my-assets-prod.s3-eu-west-1.amazonaws.com</Endpoint><Bucket>my-assets-prod</Bucket><RequestId>5D0A1A2C9E3B8F44</RequestId><HostId>Zkbsyj</HostId></Error>";
    const AUTH_MALFORMED: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AuthorizationHeaderMalformed</Code><Message>The authorization header is malformed; the region 'us-east-1' is wrong; expecting 'eu-central-1'</Message><Region>eu-central-1</Region><RequestId>531B68B3613F5C96</RequestId><HostId>TMnOREh0Ms0touCRX0XkJinw7xqsF0v</HostId></Error>";
    const AUTH_MALFORMED_NO_REGION: &str = "<Error><Code>AuthorizationHeaderMalformed</Code><Message>The authorization header is malformed; the region 'us-east-1' is wrong; expecting 'ap-southeast-2'</Message><RequestId>X</RequestId></Error>";
    const AUTH_MALFORMED_OTHER: &str = "<Error><Code>AuthorizationHeaderMalformed</Code><Message>The authorization header is malformed; a non-empty Access Key (AKID) must be provided in the credential.</Message><RequestId>X</RequestId></Error>";
    const ILLEGAL_LOCATION: &str = "<Error><Code>IllegalLocationConstraintException</Code><Message>The eu-south-1 location constraint is incompatible for the region specific endpoint this request was sent to.</Message><RequestId>asdf</RequestId><HostId>asdf</HostId></Error>";
    const NO_SUCH_KEY: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message><Key>a/b.txt</Key><RequestId>4442587FB7D0A2F9</RequestId><HostId>Uuag1LuByRx9e6j5</HostId></Error>";
    const NO_SUCH_BUCKET: &str = "<Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message><BucketName>my-assets-prod</BucketName><RequestId>R</RequestId><HostId>H</HostId></Error>";
    const ACCESS_DENIED: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code><Message>Access Denied</Message><RequestId>54C9A5B0A0C8D5B1</RequestId><HostId>h</HostId></Error>";
    const INVALID_ARGUMENT: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InvalidArgument</Code><Message>Invalid version id specified</Message><ArgumentName>versionId</ArgumentName><ArgumentValue>not-a-version</ArgumentValue><RequestId>R</RequestId><HostId>H</HostId></Error>";
    const PRECONDITION_FAILED: &str = "<Error><Code>PreconditionFailed</Code><Message>At least one of the pre-conditions you specified did not hold</Message><Condition>If-Match</Condition><RequestId>R</RequestId><HostId>H</HostId></Error>";
    const INVALID_RANGE: &str = "<Error><Code>InvalidRange</Code><Message>The requested range is not satisfiable</Message><RangeRequested>bytes=100-200</RangeRequested><ActualObjectSize>10</ActualObjectSize><RequestId>R</RequestId><HostId>H</HostId></Error>";
    const NOT_IMPLEMENTED: &str = "<Error><Code>NotImplemented</Code><Message>A header you provided implies functionality that is not implemented</Message><Header>Transfer-Encoding</Header><RequestId>R</RequestId><HostId>H</HostId></Error>";
    /// A store that names the bucket's region in its own element.
    const BUCKET_REGION: &str = "<Error><Code>IncorrectEndpoint</Code><Message>wrong region</Message><BucketRegion>eu-north-1</BucketRegion></Error>";

    fn parsed(code: &str, message: &str) -> S3ErrorBody {
        S3ErrorBody {
            code: Some(code.into()),
            message: Some(message.into()),
            ..S3ErrorBody::default()
        }
    }

    #[test]
    fn parses_real_s3_error_bodies() {
        let redirect = S3ErrorBody {
            endpoint: Some("my-assets-prod.s3.eu-west-1.amazonaws.com".into()),
            ..parsed("PermanentRedirect", "The bucket you are attempting to access must be addressed using the specified endpoint. Please send all future requests to this endpoint.")
        };
        let auth = S3ErrorBody {
            region: Some("eu-central-1".into()),
            ..parsed("AuthorizationHeaderMalformed", "The authorization header is malformed; the region 'us-east-1' is wrong; expecting 'eu-central-1'")
        };
        let cases: [(&str, S3ErrorBody); 9] = [
            (SLOW_DOWN, parsed("SlowDown", "Please reduce your request rate.")),
            (
                INTERNAL_ERROR,
                parsed(
                    "InternalError",
                    "We encountered an internal error. Please try again.",
                ),
            ),
            (PERMANENT_REDIRECT, redirect),
            (AUTH_MALFORMED, auth),
            (
                NO_SUCH_KEY,
                parsed("NoSuchKey", "The specified key does not exist."),
            ),
            (ACCESS_DENIED, parsed("AccessDenied", "Access Denied")),
            (
                INVALID_ARGUMENT,
                parsed("InvalidArgument", "Invalid version id specified"),
            ),
            (
                BUCKET_REGION,
                S3ErrorBody {
                    bucket_region: Some("eu-north-1".into()),
                    ..parsed("IncorrectEndpoint", "wrong region")
                },
            ),
            // Pretty-printed, with attributes and a namespace.
            (
                "<?xml version=\"1.0\"?>\r\n<Error xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\r\n  <Code lang=\"en\">\r\n    SlowDown\r\n  </Code>\r\n  <Message>\n Please reduce\n your request rate. </Message>\n</Error>\n",
                parsed("SlowDown", "Please reduce\n your request rate."),
            ),
        ];
        for (body, want) in cases {
            assert_eq!(parse(body.as_bytes()), want, "{body}");
        }
    }

    #[test]
    fn parsing_is_tolerant_of_anything() {
        let code = |b: &[u8]| parse(b).code;
        let cases: [(&[u8], Option<&str>); 16] = [
            (b"", None),
            (b"not xml at all", None),
            (
                b"<html><body><h1>503 Service Unavailable</h1></body></html>",
                None,
            ),
            (
                b"\x00\xff\xfe<Code>\xffSlow\xfeDown</Code>",
                Some("\u{fffd}Slow\u{fffd}Down"),
            ),
            // Truncated inside the element: nothing is guessed.
            (b"<Error><Code>SlowDo", None),
            (b"<Error><Code>SlowDown</Co", None),
            (b"<Error><Code", None),
            (
                b"<Error><Code>SlowDown</Code><Message>Please red",
                Some("SlowDown"),
            ),
            // Empty and self-closing elements are absent; a later complete one counts.
            (
                b"<Code></Code><Code>  </Code><Code/><Code a='1'/><Code>X</Code>",
                Some("X"),
            ),
            // A longer name is another element.
            (b"<CodeName>no</CodeName><Code>yes</Code>", Some("yes")),
            (b"<Error><Code>A</Code><Code>B</Code></Error>", Some("A")),
            (b"<Code><![CDATA[Slow<Down>]]></Code>", Some("Slow<Down>")),
            (b"<Code><![CDATA[unterminated</Code>", Some("unterminated")),
            (b"<Code>&#83;low&#x44;own</Code>", Some("SlowDown")),
            (
                b"<Code>a &bogus; &amp &#xZZ; &#1114112; &</Code>",
                Some("a &bogus; &amp &#xZZ; &#1114112; &"),
            ),
            (b"<Code>&lt;&gt;&amp;&quot;&apos;</Code>", Some("<>&\"'")),
        ];
        for (body, want) in cases {
            assert_eq!(
                code(body).as_deref(),
                want,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let m = parse(b"<Message>Tom &amp; Jerry&apos;s &lt;bucket&gt; &#x1F980;</Message>");
        assert_eq!(m.message.as_deref(), Some("Tom & Jerry's <bucket> 🦀"));
        assert_eq!(parse(b"<Region>eu-west-1</Region>").bucket_region, None);
        assert_eq!(
            parse(b"<BucketRegion>eu-west-1</BucketRegion>").region,
            None
        );
    }

    #[test]
    fn huge_bodies_parse_in_linear_time() {
        // A megabyte of filler before the code, and a message of a megabyte: found, and the
        // message is cut when it is quoted.
        let mut body = b"<Error>".to_vec();
        body.extend(std::iter::repeat_n(b'<', 1 << 20));
        body.extend_from_slice(b"<Code>SlowDown</Code><Message>");
        body.extend(std::iter::repeat_n(b'x', 1 << 20));
        body.extend_from_slice(b"</Message></Error>");
        let t0 = std::time::Instant::now();
        let p = parse(&body);
        assert!(t0.elapsed() < std::time::Duration::from_secs(2));
        assert_eq!(p.code.as_deref(), Some("SlowDown"));
        assert_eq!(p.message.as_ref().map(String::len), Some(1 << 20));
        let e = origin_error(503, Some(&p), &OriginHeaders::default(), &CONFIGURED);
        assert!(e.message().len() < 400, "{}", e.message());
        // Many unterminated openings: still one pass per element name.
        let body = "<Code".repeat(200_000);
        assert_eq!(parse(body.as_bytes()), S3ErrorBody::default());
    }

    /// (status, body, x-amz-bucket-region, retry-after) → (client status, "error", origin_code,
    /// Retry-After, words the message must contain).
    #[test]
    // One tuple per row keeps the table readable; a struct would triple its length.
    #[allow(clippy::type_complexity, reason = "a table of test cases")]
    fn statuses_map_as_the_table_says() {
        let cases: [(u16, Option<&str>, Option<&str>, Option<&str>, u16, &str, Option<&str>, Option<&str>, &[&str]); 26] = [
            (503, Some(SLOW_DOWN), None, Some("7"), 503, "origin_unavailable", Some("SlowDown"), Some("7"), &["503", "SlowDown", "reduce your request rate"]),
            (503, Some(SERVICE_UNAVAILABLE), None, None, 503, "origin_unavailable", Some("ServiceUnavailable"), None, &["ServiceUnavailable"]),
            (503, Some(SLOW_DOWN), None, Some("Wed, 21 Oct 2015 07:28:00 GMT"), 503, "origin_unavailable", Some("SlowDown"), Some("Wed, 21 Oct 2015 07:28:00 GMT"), &[]),
            (503, Some(SLOW_DOWN), None, Some("soon"), 503, "origin_unavailable", Some("SlowDown"), None, &[]),
            (503, None, None, Some("3"), 503, "origin_unavailable", None, Some("3"), &["503"]),
            (500, Some(INTERNAL_ERROR), None, Some("3"), 500, "origin_internal_error", Some("InternalError"), None, &["500", "InternalError", "Please try again"]),
            (500, Some("<html>oops</html>"), None, None, 500, "origin_internal_error", None, None, &["500"]),
            (400, Some(INVALID_ARGUMENT), None, None, 400, "origin_bad_request", Some("InvalidArgument"), None, &["400", "InvalidArgument", "Invalid version id"]),
            (400, Some(AUTH_MALFORMED_OTHER), None, None, 400, "origin_bad_request", Some("AuthorizationHeaderMalformed"), None, &["non-empty Access Key"]),
            // The header naming the configured region is no hint.
            (400, Some(INVALID_ARGUMENT), Some("us-east-1"), None, 400, "origin_bad_request", Some("InvalidArgument"), None, &[]),
            (400, None, None, None, 400, "origin_bad_request", None, None, &["400"]),
            // Region errors.
            (400, Some(AUTH_MALFORMED), Some("eu-central-1"), None, 502, "bad_gateway", Some("AuthorizationHeaderMalformed"), None, &["bucket my-assets-prod is in region eu-central-1, configured us-east-1", "check the bucket's region/endpoint"]),
            (400, Some(AUTH_MALFORMED_NO_REGION), None, None, 502, "bad_gateway", Some("AuthorizationHeaderMalformed"), None, &["region ap-southeast-2, configured us-east-1"]),
            (400, Some(ILLEGAL_LOCATION), None, None, 502, "bad_gateway", Some("IllegalLocationConstraintException"), None, &["configured region us-east-1", "IllegalLocationConstraintException", "check the bucket's region/endpoint"]),
            (400, Some(BUCKET_REGION), None, None, 502, "bad_gateway", Some("IncorrectEndpoint"), None, &["region eu-north-1"]),
            (400, Some("<Error><Code>X</Code></Error>"), Some("sa-east-1"), None, 502, "bad_gateway", Some("X"), None, &["region sa-east-1"]),
            (301, Some(PERMANENT_REDIRECT), Some("eu-west-1"), None, 502, "bad_gateway", Some("PermanentRedirect"), None, &["bucket my-assets-prod is in region eu-west-1 (endpoint my-assets-prod.s3.eu-west-1.amazonaws.com), configured us-east-1 (PermanentRedirect): check the bucket's region/endpoint"]),
            (301, Some(PERMANENT_REDIRECT), None, None, 502, "bad_gateway", Some("PermanentRedirect"), None, &["must be addressed at endpoint my-assets-prod.s3.eu-west-1.amazonaws.com (configured region us-east-1)"]),
            // A HEAD gets no body: the header is the hint.
            (301, None, Some("eu-west-1"), None, 502, "bad_gateway", None, None, &["region eu-west-1, configured us-east-1"]),
            (301, None, None, None, 502, "bad_gateway", None, None, &["status 301", "configured region us-east-1", "check the bucket's region/endpoint"]),
            (307, Some(TEMPORARY_REDIRECT), None, None, 502, "bad_gateway", Some("TemporaryRedirect"), None, &["endpoint my-assets-prod.s3-eu-west-1.amazonaws.com"]),
            // Today's statuses, now with the code.
            (403, Some(ACCESS_DENIED), None, None, 403, "forbidden", Some("AccessDenied"), None, &["refused access"]),
            (404, Some(NO_SUCH_KEY), None, None, 404, "not_found", Some("NoSuchKey"), None, &["no such object"]),
            (404, Some(NO_SUCH_BUCKET), None, Some("5"), 404, "not_found", Some("NoSuchBucket"), None, &[]),
            (412, Some(PRECONDITION_FAILED), None, None, 412, "precondition_failed", Some("PreconditionFailed"), None, &[]),
            (416, Some(INVALID_RANGE), None, None, 416, "range_not_satisfiable", Some("InvalidRange"), None, &[]),
        ];
        for (status, body, region, after, want, kind, code, want_after, words) in cases {
            let p = body.map(|b| parse(b.as_bytes()));
            let h = OriginHeaders {
                retry_after: after,
                bucket_region: region,
            };
            let e = origin_error(status, p.as_ref(), &h, &CONFIGURED);
            let what = format!("{status} {body:?}: {e}");
            assert_eq!(e.status(), want, "{what}");
            assert_eq!(e.kind().name(), kind, "{what}");
            assert_eq!(e.origin_code(), code, "{what}");
            assert_eq!(e.retry_after(), want_after, "{what}");
            for w in words {
                assert!(e.message().contains(w), "{what}: wants {w:?}");
            }
            let v: serde_json::Value = serde_json::from_str(&e.json_body("id")).unwrap();
            assert_eq!(v["origin_code"].as_str(), code, "{what}");
        }
        for status in [302, 409, 429, 501, 502, 504, 418] {
            let p = parse(NOT_IMPLEMENTED.as_bytes());
            let e = origin_error(status, Some(&p), &OriginHeaders::default(), &CONFIGURED);
            assert_eq!(
                (e.status(), e.kind().name()),
                (502, "bad_gateway"),
                "{status}"
            );
            assert!(e.message().contains(&status.to_string()), "{e}");
            assert_eq!(e.origin_code(), Some("NotImplemented"));
        }
    }

    #[test]
    fn retry_after_is_copied_only_when_valid() {
        let valid = [
            ("120", "120"),
            (" 5\t", "5"),
            ("0", "0"),
            ("9999999999", "9999999999"),
            (
                "Wed, 21 Oct 2015 07:28:00 GMT",
                "Wed, 21 Oct 2015 07:28:00 GMT",
            ),
            (
                "Sunday, 06-Nov-94 08:49:37 GMT",
                "Sunday, 06-Nov-94 08:49:37 GMT",
            ),
            ("Sun Nov  6 08:49:37 1994", "Sun Nov  6 08:49:37 1994"),
        ];
        for (v, want) in valid {
            assert_eq!(retry_after(v), Some(want), "{v:?}");
        }
        let invalid = [
            "",
            "  ",
            "-1",
            "+5",
            "1.5",
            "1e3",
            "soon",
            "120 seconds",
            "99999999999999999999",
            "120\r\nSet-Cookie: x=1",
            "Wed, 21 Oct 2015 07:28:00",
            "Wed, 32 Oct 2015 07:28:00 GMT",
            "Wed, 21 Oct 2015 07:28:00 GMT\r\nX: y",
            "Wed, 21 Oct 2015 07:28:00 GMT\u{0}",
        ];
        for v in invalid {
            assert_eq!(retry_after(v), None, "{v:?}");
        }
    }

    #[test]
    fn messages_stay_one_short_line() {
        let body = S3ErrorBody {
            code: Some("Slow\r\nDown\u{7}".into()),
            message: Some(format!("line one\r\n\tline two {}", "y".repeat(10_000))),
            endpoint: Some("evil\r\nhost".into()),
            region: Some("eu west 1".into()),
            bucket_region: None,
        };
        for status in [301, 400, 500, 503, 599] {
            let e = origin_error(status, Some(&body), &OriginHeaders::default(), &CONFIGURED);
            assert!(
                !e.message().chars().any(char::is_control),
                "{status}: {:?}",
                e.message()
            );
            assert!(e.message().chars().count() < 400, "{status}");
            assert_eq!(e.origin_code(), Some("Slow Down"));
            // Neither the spaced region nor the broken endpoint is taken as a hint.
            assert!(!e.message().contains("evil"), "{}", e.message());
        }
        assert_eq!(clean("  a \r\n b  ", 10), "a b");
        assert_eq!(clean("abcdef", 3), "abc…");
    }

    proptest! {
        #[test]
        fn any_body_maps_to_a_sane_error(
            body in proptest::collection::vec(any::<u8>(), 0..512),
            status in 300u16..600,
        ) {
            let p = parse(&body);
            let h = OriginHeaders { retry_after: Some("1"), bucket_region: None };
            let e = origin_error(status, Some(&p), &h, &CONFIGURED);
            prop_assert!(matches!(e.status(), 400 | 403 | 404 | 412 | 416 | 500 | 502 | 503));
            prop_assert!(!e.message().chars().any(char::is_control));
        }

        #[test]
        fn any_element_text_survives_escaping(text in "[ -~é🦀]{1,40}") {
            let escaped = text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
            let p = parse(format!("<Error><Message>{escaped}</Message></Error>").as_bytes());
            let want = text.trim();
            prop_assert_eq!(p.message.as_deref(), (!want.is_empty()).then_some(want));
        }
    }
}

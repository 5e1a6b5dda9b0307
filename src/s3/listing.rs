//! One page of an origin's ListObjectsV2 answer, read (pure: bytes in, keys out), and the query
//! that asks for it. Cache warming (`crate::warm`) walks a prefix with these: page after page,
//! each asking from the previous page's `NextContinuationToken`.
//!
//! # What is read, and why so little
//! Only what warming needs: each `<Contents>`'s `Key`, `Size` and `ETag`, and the page's
//! `IsTruncated`, `NextContinuationToken` and `EncodingType`. `CommonPrefixes` are skipped
//! (warming lists without a delimiter), as is everything else (`Owner`, `StorageClass`, …).
//! Element names are matched without their namespace prefix (`s3:Key` is `Key`), so a
//! gateway that writes prefixed names reads the same as S3.
//!
//! # XML subset
//! A ListObjectsV2 answer is flat and machine-written, so the reader is a small tag scanner,
//! not a general XML parser: start, end and empty tags (attributes ignored), character data
//! with the five predefined entities and numeric character references, `CDATA` sections,
//! and comments, processing instructions and the declaration skipped. Anything malformed — an
//! unclosed tag, a mismatched end tag, an unknown entity, a `Size` that is not a number, a
//! `Contents` without a `Key` — is an error, never a guess: a page read wrong would warm the
//! wrong keys.
//!
//! # `encoding-type=url`
//! Warming asks for it ([`page_query`]), since XML 1.0 cannot carry every byte a key may hold
//! (control characters). An answer that says `<EncodingType>url</EncodingType>` has its keys
//! decoded here the way the AWS SDKs do (botocore's `unquote_plus`): `+` is a space, then
//! `%XX` escapes; a literal `+` arrives as `%2B`. An answer without it (an origin that ignores
//! the parameter) has its keys taken as they are.

use crate::error::{Error, Kind};

/// Keys asked for per page: S3's maximum.
pub const MAX_KEYS: &str = "1000";

/// One object of a listing page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The object key, decoded.
    pub key: String,
    pub size: u64,
    pub etag: Option<String>,
}

/// One ListObjectsV2 answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Page {
    pub objects: Vec<Listed>,
    /// More keys follow: ask again with [`Page::next_token`].
    pub truncated: bool,
    pub next_token: Option<String>,
}

/// The decoded query of a ListObjectsV2 request for the page of `prefix` after `token`
/// (none: the first page), asking for URL-encoded keys.
pub fn page_query<'a>(prefix: &'a str, token: Option<&'a str>) -> Vec<(&'a str, &'a str)> {
    let mut q = vec![
        ("list-type", "2"),
        ("encoding-type", "url"),
        ("max-keys", MAX_KEYS),
        ("prefix", prefix),
    ];
    if let Some(t) = token {
        q.push(("continuation-token", t));
    }
    q
}

fn bad(message: impl Into<std::borrow::Cow<'static, str>>) -> Error {
    Error::upstream(Kind::BadGateway, message)
}

/// Reads one ListObjectsV2 answer body (see the module docs).
pub fn parse_page(xml: &[u8]) -> Result<Page, Error> {
    let text = std::str::from_utf8(xml).map_err(|_| bad("the listing is not UTF-8"))?;
    let mut page = Page::default();
    let mut url_encoded = false;
    let mut raw: Vec<(String, u64, Option<String>)> = Vec::new();
    // The open elements, innermost last, and the text of the innermost one.
    let mut open: Vec<&str> = Vec::new();
    let mut chars = String::new();
    // The `Contents` being read: key, size, etag.
    let mut current: Option<(Option<String>, Option<u64>, Option<String>)> = None;
    let mut saw_root = false;
    let mut rest = text;
    while !rest.is_empty() {
        let Some(lt) = rest.find('<') else {
            if !rest.trim().is_empty() && open.is_empty() {
                return Err(bad("the listing has text outside its root element"));
            }
            unescape_into(rest, &mut chars)?;
            break;
        };
        unescape_into(&rest[..lt], &mut chars)?;
        rest = &rest[lt..];
        if let Some(after) = rest.strip_prefix("<![CDATA[") {
            let end = after
                .find("]]>")
                .ok_or_else(|| bad("the listing has an unclosed CDATA section"))?;
            chars.push_str(&after[..end]);
            rest = &after[end + 3..];
            continue;
        }
        if let Some(after) = rest.strip_prefix("<!--") {
            let end = after
                .find("-->")
                .ok_or_else(|| bad("the listing has an unclosed comment"))?;
            rest = &after[end + 3..];
            continue;
        }
        if rest.starts_with("<?") || rest.starts_with("<!") {
            let end = rest
                .find('>')
                .ok_or_else(|| bad("the listing has an unclosed declaration"))?;
            rest = &rest[end + 1..];
            continue;
        }
        let end = rest
            .find('>')
            .ok_or_else(|| bad("the listing has an unclosed tag"))?;
        let tag = &rest[1..end];
        rest = &rest[end + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            let name = local_name(name.trim());
            if open.pop() != Some(name) {
                return Err(bad(format!("the listing has a stray </{name}>")));
            }
            let value = std::mem::take(&mut chars);
            match (open.as_slice(), name) {
                ([_root, "Contents"], "Key") => {
                    if let Some(c) = current.as_mut() {
                        c.0 = Some(value);
                    }
                }
                ([_root, "Contents"], "Size") => {
                    let size = value
                        .trim()
                        .parse()
                        .map_err(|_| bad(format!("the listing has a bad Size {value:?}")))?;
                    if let Some(c) = current.as_mut() {
                        c.1 = Some(size);
                    }
                }
                ([_root, "Contents"], "ETag") => {
                    if let Some(c) = current.as_mut() {
                        c.2 = Some(value);
                    }
                }
                ([_root], "Contents") => {
                    let Some((Some(key), size, etag)) = current.take() else {
                        return Err(bad("the listing has a Contents without a Key"));
                    };
                    let size =
                        size.ok_or_else(|| bad("the listing has a Contents without a Size"))?;
                    raw.push((key, size, etag));
                }
                ([_root], "IsTruncated") => page.truncated = value.trim() == "true",
                ([_root], "NextContinuationToken") => page.next_token = Some(value),
                ([_root], "EncodingType") => url_encoded = value.trim() == "url",
                _ => {}
            }
            continue;
        }
        let empty = tag.ends_with('/');
        let tag = tag.strip_suffix('/').unwrap_or(tag);
        let name = local_name(tag.split_ascii_whitespace().next().unwrap_or(""));
        if name.is_empty() {
            return Err(bad("the listing has a tag without a name"));
        }
        if open.is_empty() {
            if saw_root {
                return Err(bad("the listing has two root elements"));
            }
            saw_root = true;
            if name != "ListBucketResult" {
                return Err(bad(format!(
                    "the origin answered <{name}>, not a ListBucketResult"
                )));
            }
        }
        chars.clear();
        if empty {
            continue;
        }
        if open.len() == 1 && name == "Contents" {
            current = Some((None, None, None));
        }
        open.push(name);
    }
    if !open.is_empty() || !saw_root {
        return Err(bad("the listing ended before its root element closed"));
    }
    for (key, size, etag) in raw {
        let key = if url_encoded { url_decode(&key)? } else { key };
        page.objects.push(Listed { key, size, etag });
    }
    if page.truncated && page.next_token.as_deref().is_none_or(str::is_empty) {
        return Err(bad(
            "the listing is truncated but gives no NextContinuationToken",
        ));
    }
    Ok(page)
}

/// `name` without a namespace prefix.
fn local_name(name: &str) -> &str {
    name.rsplit_once(':').map_or(name, |(_, local)| local)
}

/// Appends character data with its entity and character references replaced.
fn unescape_into(s: &str, out: &mut String) -> Result<(), Error> {
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let semi = after
            .find(';')
            .filter(|&i| i <= 10)
            .ok_or_else(|| bad("the listing has an unterminated entity"))?;
        let entity = &after[..semi];
        let c = match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = entity
                    .strip_prefix("#x")
                    .or_else(|| entity.strip_prefix("#X"))
                {
                    u32::from_str_radix(hex, 16).ok()
                } else if let Some(dec) = entity.strip_prefix('#') {
                    dec.parse().ok()
                } else {
                    None
                };
                code.and_then(char::from_u32)
                    .ok_or_else(|| bad(format!("the listing has an unknown entity &{entity};")))?
            }
        };
        out.push(c);
        rest = &after[semi + 1..];
    }
    out.push_str(rest);
    Ok(())
}

/// A key of an `encoding-type=url` answer, decoded as the AWS SDKs do: `+` is a space, then
/// `%XX` escapes (strict; the result must be UTF-8).
pub fn url_decode(s: &str) -> Result<String, Error> {
    let plus = s.replace('+', " ");
    let bytes = plus.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = plus
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| bad("the listing has a malformed URL-encoded key"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad("the listing has a URL-encoded key that is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(key: &str, size: u64, etag: &str) -> Listed {
        Listed {
            key: key.into(),
            size,
            etag: Some(etag.into()),
        }
    }

    /// An S3 answer (as AWS writes it: namespace, declaration, owner, storage class).
    const AWS: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>bucket</Name><Prefix>photos%2F</Prefix><KeyCount>3</KeyCount><MaxKeys>1000</MaxKeys>
  <EncodingType>url</EncodingType>
  <IsTruncated>true</IsTruncated>
  <NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken>
  <Contents>
    <Key>photos%2Fa+b%2Bc.jpg</Key>
    <LastModified>2024-01-01T00:00:00.000Z</LastModified>
    <ETag>&quot;0123&quot;</ETag>
    <Size>1024</Size>
    <Owner><ID>x</ID><DisplayName>Key</DisplayName></Owner>
    <StorageClass>STANDARD</StorageClass>
  </Contents>
  <Contents><Key>photos%2Fcaf%C3%A9%20%25.txt</Key><ETag>"e"</ETag><Size>0</Size></Contents>
  <Contents><Key>photos%2F%E2%9C%93%0A</Key><ETag>"f-2"</ETag><Size>99</Size></Contents>
  <CommonPrefixes><Prefix>photos%2Fdir%2F</Prefix></CommonPrefixes>
</ListBucketResult>"#;

    #[test]
    fn aws_answer_url_encoded() {
        let p = parse_page(AWS.as_bytes()).unwrap();
        assert_eq!(
            p.objects,
            vec![
                obj("photos/a b+c.jpg", 1024, "\"0123\""),
                obj("photos/café %.txt", 0, "\"e\""),
                obj("photos/✓\n", 99, "\"f-2\""),
            ]
        );
        assert!(p.truncated);
        assert_eq!(
            p.next_token.as_deref(),
            Some("1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=")
        );
    }

    #[test]
    fn keys_taken_as_they_are_without_encoding_type() {
        // s3s-fs ignores encoding-type: its keys arrive as XML text, and its token is a key.
        let xml = "<ListBucketResult><IsTruncated>false</IsTruncated>\
            <Contents><Key>a+b %41 &amp; &lt;x&gt; &#233;&#x2713;</Key><Size>5</Size></Contents>\
            <Contents><Key><![CDATA[c<d>]]></Key><Size>6</Size><ETag>\"z\"</ETag></Contents>\
            </ListBucketResult>";
        let p = parse_page(xml.as_bytes()).unwrap();
        assert_eq!(p.objects[0].key, "a+b %41 & <x> é✓");
        assert_eq!(p.objects[0].etag, None);
        assert_eq!(p.objects[1], obj("c<d>", 6, "\"z\""));
        assert!(!p.truncated);
        assert_eq!(p.next_token, None);
    }

    #[test]
    fn empty_and_prefixed_answers() {
        let p = parse_page(b"<ListBucketResult/>").unwrap();
        assert_eq!(p, Page::default());
        let p = parse_page(
            b"<s3:ListBucketResult xmlns:s3='x'><!-- c --><s3:KeyCount>0</s3:KeyCount>\
              <s3:IsTruncated>false</s3:IsTruncated></s3:ListBucketResult>",
        )
        .unwrap();
        assert_eq!(p, Page::default());
        let p = parse_page(
            b"<ListBucketResult><Contents><Key>k</Key><Size>1</Size></Contents></ListBucketResult>",
        )
        .unwrap();
        assert_eq!(p.objects.len(), 1);
    }

    #[test]
    fn top_level_fields_are_not_confused_with_nested_ones() {
        // A `Key` or `Prefix` outside `Contents` is not an object; a `Size` in an unknown
        // element inside `Contents` is not its size.
        let xml = "<ListBucketResult><Prefix>p</Prefix><Key>not-an-object</Key>\
            <CommonPrefixes><Prefix>p/d/</Prefix></CommonPrefixes>\
            <Contents><Key>k</Key><Owner><Size>x</Size></Owner><Size>3</Size></Contents>\
            <IsTruncated>false</IsTruncated></ListBucketResult>";
        let p = parse_page(xml.as_bytes()).unwrap();
        assert_eq!(
            p.objects,
            vec![Listed {
                key: "k".into(),
                size: 3,
                etag: None
            }]
        );
    }

    #[test]
    fn malformed_answers_are_errors() {
        for bad in [
            "",
            "not xml",
            "<Error><Code>AccessDenied</Code></Error>",
            "<ListBucketResult>",
            "<ListBucketResult></Other>",
            "<ListBucketResult><Contents><Size>1</Size></Contents></ListBucketResult>",
            "<ListBucketResult><Contents><Key>k</Key></Contents></ListBucketResult>",
            "<ListBucketResult><Contents><Key>k</Key><Size>-1</Size></Contents></ListBucketResult>",
            "<ListBucketResult><Contents><Key>a &nbsp; b</Key><Size>1</Size></Contents></ListBucketResult>",
            "<ListBucketResult><Contents><Key>a & b</Key><Size>1</Size></Contents></ListBucketResult>",
            "<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>",
            "<ListBucketResult/><ListBucketResult/>",
            "<ListBucketResult><EncodingType>url</EncodingType><Contents><Key>%zz</Key><Size>1</Size></Contents></ListBucketResult>",
            "<ListBucketResult><EncodingType>url</EncodingType><Contents><Key>%FF</Key><Size>1</Size></Contents></ListBucketResult>",
            "<ListBucketResult><![CDATA[x</ListBucketResult>",
            "<ListBucketResult><",
        ] {
            assert!(parse_page(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert!(parse_page(b"<ListBucketResult>\xff</ListBucketResult>").is_err());
    }

    #[test]
    fn url_decoding() {
        assert_eq!(url_decode("a+b%2Bc%20d").unwrap(), "a b+c d");
        assert_eq!(url_decode("%E2%9C%93").unwrap(), "✓");
        assert_eq!(url_decode("100%25").unwrap(), "100%");
        for bad in ["%", "%2", "%g0", "%C3"] {
            assert!(url_decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn query_of_a_page() {
        assert_eq!(
            page_query("p/", None),
            vec![
                ("list-type", "2"),
                ("encoding-type", "url"),
                ("max-keys", "1000"),
                ("prefix", "p/")
            ]
        );
        let q = page_query("", Some("tok en"));
        assert_eq!(q.last(), Some(&("continuation-token", "tok en")));
    }

    #[test]
    fn never_panics_on_garbage() {
        for s in [
            "<",
            ">",
            "<a",
            "</",
            "<!",
            "<?",
            "&",
            "&#;",
            "&#x110000;",
            "<a/>x",
            "<<>>",
        ] {
            let _ = parse_page(s.as_bytes());
        }
    }
}

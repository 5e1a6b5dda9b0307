//! A local S3 origin: s3s-fs on a tokio runtime in its own std thread, with
//! SigV4 verification on, wrapped in a thin hyper service that counts and
//! records request heads, can inject faults, rewrites chosen objects' response header fields
//! ([`Overrides`]) and evaluates conditional GET/HEAD requests (RFC 9110 §13.2.2) like S3.
//!
//! Tokio lives only here (dev-only); corvid itself never sees it.
//!
//! s3s-fs quirks worth knowing when writing tests:
//! * objects are plain files at `<dir>/<bucket>/<key>`, and the metadata
//!   sidecar is ONE file named after base64(bucket)+base64(key), so keys
//!   longer than ~160 bytes fail with 500 InternalError (ENAMETOOLONG);
//!   keys ending in `/` become directories, `.`/`..`/empty segments are
//!   resolved as paths. [`KeyMappingFs`] works around all of this by storing
//!   such keys under a hash (see there).
//! * bucket names are validated AWS-style (3-63 chars, lower case, ...);
//!   short names like "b" get 400 InvalidBucketName.
//! * Content-Type, Cache-Control, Content-Disposition, Content-Encoding,
//!   Content-Language, Expires and x-amz-meta-* are stored in a JSON sidecar
//!   and returned on GET/HEAD; without a stored Content-Type none is sent.
//! * GET streams the file in 4 KiB reads, so very large objects are served
//!   at tens-to-hundreds of MiB/s, not at disk speed.
//! * GET/HEAD ignore every conditional header (If-Match, If-None-Match,
//!   If-Modified-Since, If-Unmodified-Since): s3s passes them to s3s-fs, which
//!   never answers 304 or 412. The wrapper evaluates them instead ([`precondition`]).
//! * `Expires` must be a valid HTTP-date at PUT (s3s parses it); an invalid one such
//!   as `Expires: 0` can only come from an [`Overrides`].
//!
//! `Date` is stamped by the wrapper on every answer (hyper's own automatic `Date` is off), so
//! that an [`Overrides`] can remove it: `Overrides::new().remove("date")` really sends no
//! `Date`, which tests on an advanced manual clock need (see [`super::InProcess`]).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use s3s::auth::SimpleAuth;
use s3s::service::{S3Service, S3ServiceBuilder};

use s3s::dto;
use s3s::{S3Request, S3Response, S3Result};
use sha2::{Digest, Sha256};

use super::http::RawResponse;
use super::s3client::S3Client;

pub const ACCESS_KEY: &str = "AKIACORVIDTEST000001";
/// Contains `/` and `+` like real AWS secrets, so escaping bugs show up.
pub const SECRET_KEY: &str = "corvid/Test+Secret/Key0000000000000000000";
pub const REGION: &str = "us-east-1";

/// How many request heads are remembered (oldest dropped first).
const RECENT_LIMIT: usize = 1000;

/// One request head as the origin received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// Raw (still percent-encoded) path.
    pub path: String,
    /// Raw query string without `?`, if any.
    pub query: Option<String>,
    /// Header names lower-cased (hyper normalises them), values lossy UTF-8.
    pub headers: Vec<(String, String)>,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        super::http::header_values(&self.headers, name).next()
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        super::http::header_values(&self.headers, name).collect()
    }

    /// The `(bucket, key)` of a path-style object request (percent-decoded), None for bucket
    /// and service requests.
    pub fn object(&self) -> Option<(String, String)> {
        object_of(&self.path)
    }
}

/// The `(bucket, key)` a path-style request path names, percent-decoded.
fn object_of(raw_path: &str) -> Option<(String, String)> {
    let path = percent_encoding::percent_decode_str(raw_path).decode_utf8_lossy();
    let (bucket, key) = path.strip_prefix('/')?.split_once('/')?;
    (!key.is_empty()).then(|| (bucket.to_owned(), key.to_owned()))
}

/// How the origin rewrites one object's response header fields, after s3s answered (and so
/// after the signature was verified): on 200 and 206 answers to GET and HEAD, and on the 304s
/// the wrapper's conditional evaluation sends, which also sees the rewritten `ETag` and
/// `Last-Modified`. Install with [`Origin::set_headers`] (one object) or
/// [`Origin::set_bucket_headers`] (every object of a bucket); replacing them between requests
/// models an origin whose metadata changed.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// Field name (lower case) and the lines it gets, replacing any the answer had.
    set: Vec<(String, Vec<String>)>,
    /// Field names (lower case) taken out of the answer.
    remove: Vec<String>,
}

impl Overrides {
    pub fn new() -> Overrides {
        Overrides::default()
    }

    /// `name: value`, replacing every line of `name` the answer had.
    pub fn set(self, name: &str, value: &str) -> Overrides {
        self.set_lines(name, &[value])
    }

    /// One line of `name` per value, in order (e.g. two `Cache-Control` lines).
    pub fn set_lines(mut self, name: &str, values: &[&str]) -> Overrides {
        let name = name.to_ascii_lowercase();
        self.remove.retain(|n| *n != name);
        self.set.retain(|(n, _)| *n != name);
        self.set
            .push((name, values.iter().map(|v| (*v).to_owned()).collect()));
        self
    }

    /// No `name` line at all (e.g. no `ETag`).
    pub fn remove(mut self, name: &str) -> Overrides {
        let name = name.to_ascii_lowercase();
        self.set.retain(|(n, _)| *n != name);
        self.remove.push(name);
        self
    }

    fn apply(&self, headers: &mut hyper::HeaderMap) {
        for name in &self.remove {
            headers.remove(name.as_str());
        }
        for (name, values) in &self.set {
            let name = hyper::header::HeaderName::from_bytes(name.as_bytes())
                .unwrap_or_else(|e| panic!("override header name {name:?}: {e}"));
            headers.remove(&name);
            for v in values {
                let v = hyper::header::HeaderValue::from_str(v)
                    .unwrap_or_else(|e| panic!("override {name}: {v:?}: {e}"));
                headers.append(name.clone(), v);
            }
        }
    }
}

/// Header fields a 304 carries over from the 200 it stands for (RFC 9110 §15.4.5: those a
/// 200 would carry that describe the representation's metadata, not its content).
const NOT_MODIFIED_FIELDS: [&str; 8] = [
    "etag",
    "last-modified",
    "cache-control",
    "expires",
    "date",
    "age",
    "vary",
    "x-amz-version-id",
];

/// The members of an `If-Match` / `If-None-Match` list.
fn entity_tags(list: &str) -> Vec<&str> {
    list.split(',').map(str::trim).collect()
}

/// RFC 9110 §13.2.2: the preconditions of a GET/HEAD request (`req`) evaluated, in the order
/// the RFC gives, against the selected representation's `etag` and `last_modified`: `None` to
/// send the answer, else 412 or 304 instead. Invalid dates are ignored (§13.1.3, §13.1.4), as
/// is an If-Modified-Since later than now.
pub fn precondition(
    req: &hyper::HeaderMap,
    etag: Option<&str>,
    last_modified: Option<&str>,
) -> Option<u16> {
    let field = |name: &str| req.get(name).and_then(|v| v.to_str().ok());
    let date = |name: &str| field(name).and_then(|v| httpdate::parse_http_date(v).ok());
    let modified = last_modified.and_then(|v| httpdate::parse_http_date(v).ok());
    // §8.8.3.2: strong comparison needs two strong tags; weak comparison ignores `W/`.
    let strong_match = |list: &str| {
        let tags = entity_tags(list);
        tags == ["*"] || etag.is_some_and(|e| !e.starts_with("W/") && tags.contains(&e))
    };
    let weak_match = |list: &str| {
        let bare = |t: &str| t.trim_start_matches("W/").to_owned();
        let tags = entity_tags(list);
        tags == ["*"] || etag.is_some_and(|e| tags.iter().any(|t| bare(t) == bare(e)))
    };
    if let Some(list) = field("if-match") {
        if !strong_match(list) {
            return Some(412);
        }
    } else if let (Some(since), Some(m)) = (date("if-unmodified-since"), modified) {
        if m > since {
            return Some(412);
        }
    }
    if let Some(list) = field("if-none-match") {
        return weak_match(list).then_some(304);
    }
    match (date("if-modified-since"), modified) {
        (Some(since), Some(m)) if since <= std::time::SystemTime::now() && m <= since => Some(304),
        _ => None,
    }
}

/// A canned failure the origin returns instead of calling s3s.
#[derive(Clone, Debug)]
struct Fault {
    remaining: u32,
    reply: FaultReply,
}

/// The answer of an injected fault ([`Origin::fail_next_with`]): a status, a body (by default
/// S3-style XML with the code `InjectedFault`), extra headers, and how the body is framed.
#[derive(Clone, Debug)]
pub struct FaultReply {
    pub status: u16,
    pub body: String,
    pub headers: Vec<(String, String)>,
    /// Send the body chunked (in two chunks) instead of with a Content-Length, as S3 does
    /// for most error answers.
    pub chunked: bool,
    /// Send the first half of the body, then wait this long before the rest (chunked).
    pub stall: Option<Duration>,
}

impl FaultReply {
    /// `status` with the default `InjectedFault` XML body.
    pub fn status(status: u16) -> Self {
        Self::xml(
            status,
            &format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InjectedFault</Code><Message>injected {status}</Message></Error>"
            ),
        )
    }

    /// `status` with `body` as `application/xml`.
    pub fn xml(status: u16, body: &str) -> Self {
        FaultReply {
            status,
            body: body.to_owned(),
            headers: vec![("content-type".into(), "application/xml".into())],
            chunked: false,
            stall: None,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn chunked(mut self) -> Self {
        self.chunked = true;
        self
    }

    pub fn stall(mut self, d: Duration) -> Self {
        self.stall = Some(d);
        self.chunked = true;
        self
    }

    fn response(&self) -> s3s::HttpResponse {
        let mut builder = hyper::Response::builder().status(self.status);
        for (n, v) in &self.headers {
            builder = builder.header(n.as_str(), v.as_str());
        }
        let body = if self.chunked {
            let bytes = bytes::Bytes::from(self.body.clone());
            let half = bytes.len() / 2;
            s3s::Body::http_body(Chunks {
                first: Some(bytes.slice(..half)),
                stall: self.stall.map(|d| Box::pin(tokio::time::sleep(d))),
                rest: Some(bytes.slice(half..)),
            })
        } else {
            s3s::Body::from(self.body.clone())
        };
        builder.body(body).expect("fault response")
    }
}

/// A body of unknown length (so hyper sends it chunked) in two pieces, maybe with a stall
/// between them.
struct Chunks {
    first: Option<bytes::Bytes>,
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
    rest: Option<bytes::Bytes>,
}

impl hyper::body::Body for Chunks {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        use std::task::Poll;
        if let Some(first) = self.first.take().filter(|b| !b.is_empty()) {
            return Poll::Ready(Some(Ok(hyper::body::Frame::data(first))));
        }
        if let Some(stall) = self.stall.as_mut() {
            if stall.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.stall = None;
        }
        Poll::Ready(
            self.rest
                .take()
                .filter(|b| !b.is_empty())
                .map(|b| Ok(hyper::body::Frame::data(b))),
        )
    }
}

#[derive(Default)]
struct StatsInner {
    counts: HashMap<String, u64>,
    recent: VecDeque<RecordedRequest>,
    fault: Option<Fault>,
    delay: Duration,
    /// Answers turned into 304/412 by conditional evaluation, by status.
    conditional: HashMap<u16, u64>,
    /// Response header rewrites by (bucket, key).
    overrides: HashMap<(String, String), Overrides>,
    /// Response header rewrites for every object of a bucket, applied before the key's own.
    bucket_overrides: HashMap<String, Overrides>,
    /// Requests being answered now (from arrival to the response head, the delay included),
    /// and the most there were at once since the last reset.
    in_flight: u64,
    peak_in_flight: u64,
}

/// Counts a request as in flight until dropped (its response head is ready, or it failed).
struct InFlight(Arc<Stats>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.lock().in_flight -= 1;
    }
}

impl StatsInner {
    /// The rewrites for one object: its bucket's, then its own (which win on a shared name).
    fn overrides_for(&self, object: &(String, String)) -> Vec<Overrides> {
        [
            self.bucket_overrides.get(&object.0),
            self.overrides.get(object),
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect()
    }
}

#[derive(Default)]
struct Stats(Mutex<StatsInner>);

impl Stats {
    fn lock(&self) -> std::sync::MutexGuard<'_, StatsInner> {
        // A panicking test thread must not make every later assertion fail
        // with a poison error that hides the real one.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Keys s3s-fs cannot store as-is (too long for its sidecar file names, or
/// not a clean relative path) are stored under `~corvid-mapped/<sha256>`.
/// The mapping happens after signature verification, so clients (corvid)
/// still sign and send the real key; only the on-disk name changes.
/// ListObjects shows mapped names for such keys.
pub fn storage_key(key: &str) -> String {
    let clean = key.len() <= 100
        && !key.is_empty()
        && !key.starts_with('/')
        && !key.ends_with('/')
        && key.split('/').all(|seg| {
            !seg.is_empty() && seg != "." && seg != ".." && !seg.starts_with(".bucket-")
        });
    if clean {
        key.to_owned()
    } else {
        format!(
            "~corvid-mapped/{}",
            hex::encode(Sha256::digest(key.as_bytes()))
        )
    }
}

/// s3s-fs with [`storage_key`] applied to object operations.
pub struct KeyMappingFs {
    inner: s3s_fs::FileSystem,
}

impl KeyMappingFs {
    pub fn new(root: &Path) -> Self {
        KeyMappingFs {
            inner: s3s_fs::FileSystem::new(root).expect("s3s-fs root"),
        }
    }
}

/// A key as an `encoding-type=url` listing carries it (Python's `urllib.parse.quote`, as moto).
fn listing_encode(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~')
        .remove(b'/');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

fn map_key<T>(mut req: S3Request<T>, key: impl FnOnce(&mut T) -> &mut String) -> S3Request<T> {
    let k = key(&mut req.input);
    *k = storage_key(k);
    req
}

#[async_trait::async_trait]
impl s3s::S3 for KeyMappingFs {
    async fn create_bucket(
        &self,
        req: S3Request<dto::CreateBucketInput>,
    ) -> S3Result<S3Response<dto::CreateBucketOutput>> {
        self.inner.create_bucket(req).await
    }

    async fn delete_bucket(
        &self,
        req: S3Request<dto::DeleteBucketInput>,
    ) -> S3Result<S3Response<dto::DeleteBucketOutput>> {
        self.inner.delete_bucket(req).await
    }

    async fn head_bucket(
        &self,
        req: S3Request<dto::HeadBucketInput>,
    ) -> S3Result<S3Response<dto::HeadBucketOutput>> {
        self.inner.head_bucket(req).await
    }

    async fn list_buckets(
        &self,
        req: S3Request<dto::ListBucketsInput>,
    ) -> S3Result<S3Response<dto::ListBucketsOutput>> {
        self.inner.list_buckets(req).await
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<dto::ListObjectsV2Input>,
    ) -> S3Result<S3Response<dto::ListObjectsV2Output>> {
        // s3s-fs echoes `encoding-type=url` but leaves the keys as they are; S3 (and moto)
        // URL-encode them then, and SDKs decode them (`+` is a space there). Encoded here as
        // moto does (Python's `quote`: all but unreserved characters and `/`), so that the
        // origin answers such a listing as S3 does.
        let url = req
            .input
            .encoding_type
            .as_ref()
            .is_some_and(|e| e.as_str() == "url");
        let mut resp = self.inner.list_objects_v2(req).await?;
        if url {
            let out = &mut resp.output;
            let keys = out
                .contents
                .iter_mut()
                .flatten()
                .filter_map(|o| o.key.as_mut());
            let prefixes = out
                .common_prefixes
                .iter_mut()
                .flatten()
                .filter_map(|p| p.prefix.as_mut());
            for s in keys
                .chain(prefixes)
                .chain(out.prefix.as_mut())
                .chain(out.start_after.as_mut())
                .chain(out.delimiter.as_mut())
            {
                *s = listing_encode(s);
            }
        }
        Ok(resp)
    }

    async fn get_object(
        &self,
        req: S3Request<dto::GetObjectInput>,
    ) -> S3Result<S3Response<dto::GetObjectOutput>> {
        self.inner.get_object(map_key(req, |i| &mut i.key)).await
    }

    async fn head_object(
        &self,
        req: S3Request<dto::HeadObjectInput>,
    ) -> S3Result<S3Response<dto::HeadObjectOutput>> {
        self.inner.head_object(map_key(req, |i| &mut i.key)).await
    }

    async fn put_object(
        &self,
        req: S3Request<dto::PutObjectInput>,
    ) -> S3Result<S3Response<dto::PutObjectOutput>> {
        self.inner.put_object(map_key(req, |i| &mut i.key)).await
    }

    async fn delete_object(
        &self,
        req: S3Request<dto::DeleteObjectInput>,
    ) -> S3Result<S3Response<dto::DeleteObjectOutput>> {
        self.inner.delete_object(map_key(req, |i| &mut i.key)).await
    }
}

/// hyper service in front of s3s: record, maybe delay/fail, then delegate.
#[derive(Clone)]
struct Recorder {
    inner: S3Service,
    stats: Arc<Stats>,
}

type BoxFut = Pin<Box<dyn Future<Output = Result<s3s::HttpResponse, s3s::HttpError>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for Recorder {
    type Response = s3s::HttpResponse;
    type Error = s3s::HttpError;
    type Future = BoxFut;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let rec = RecordedRequest {
            method: req.method().as_str().to_owned(),
            path: req.uri().path().to_owned(),
            query: req.uri().query().map(str::to_owned),
            headers: req
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
        };
        // s3s-fs ignores conditional headers on GET/HEAD; real S3 honours them. They are
        // evaluated here (RFC 9110 §13.2.2), on the answer s3s produced after this object's
        // overrides, so the origin behaves like S3 on the wire.
        let conditionals = req.headers().clone();
        let read = matches!(req.method().as_str(), "GET" | "HEAD");
        let stats = self.stats.clone();
        let (fault, delay, overrides) = {
            let mut s = self.stats.lock();
            *s.counts.entry(rec.method.clone()).or_default() += 1;
            s.in_flight += 1;
            s.peak_in_flight = s.peak_in_flight.max(s.in_flight);
            let overrides = match rec.object() {
                Some(object) if read => s.overrides_for(&object),
                _ => Vec::new(),
            };
            if s.recent.len() == RECENT_LIMIT {
                s.recent.pop_front();
            }
            s.recent.push_back(rec);
            let fault = match &mut s.fault {
                Some(f) if f.remaining > 0 => {
                    f.remaining -= 1;
                    Some(f.reply.clone())
                }
                _ => None,
            };
            (fault, s.delay, overrides)
        };
        let inner = self.inner.clone();
        let in_flight = InFlight(self.stats.clone());
        Box::pin(async move {
            let _in_flight = in_flight;
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if let Some(fault) = fault {
                let mut resp = fault.response();
                stamp_date(resp.headers_mut());
                return Ok(resp);
            }
            let mut resp = hyper::service::Service::call(&inner, req).await?;
            stamp_date(resp.headers_mut());
            let status = resp.status().as_u16();
            if !read || !matches!(status, 200 | 206) {
                return Ok(resp);
            }
            for o in &overrides {
                o.apply(resp.headers_mut());
            }
            if status != 200 {
                return Ok(resp);
            }
            let validator = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok());
            let Some(status) =
                precondition(&conditionals, validator("etag"), validator("last-modified"))
            else {
                return Ok(resp);
            };
            *stats.lock().conditional.entry(status).or_default() += 1;
            let mut answer = hyper::Response::builder()
                .status(status)
                .body(s3s::Body::empty())
                .expect("conditional response");
            for name in NOT_MODIFIED_FIELDS {
                for v in resp.headers().get_all(name) {
                    answer.headers_mut().append(name, v.clone());
                }
            }
            for o in &overrides {
                o.apply(answer.headers_mut());
            }
            Ok(answer)
        })
    }
}

/// The `Date` every answer carries (RFC 9110 §6.6.1), stamped here rather than by hyper so
/// that an [`Overrides`] can take it out again.
fn stamp_date(headers: &mut hyper::HeaderMap) {
    if !headers.contains_key(hyper::header::DATE) {
        let now = httpdate::fmt_http_date(std::time::SystemTime::now());
        let value = hyper::header::HeaderValue::from_str(&now).expect("an HTTP-date is ASCII");
        headers.insert(hyper::header::DATE, value);
    }
}

/// Options for [`Origin::start_with`].
#[derive(Clone, Debug)]
pub struct OriginConfig {
    /// Where to listen; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Data directory; `None` uses a fresh temp dir removed on drop.
    pub dir: Option<PathBuf>,
    pub access_key: String,
    pub secret_key: String,
    /// More key pairs the origin accepts besides `access_key`/`secret_key` (credential
    /// rotation tests).
    pub extra_keys: Vec<(String, String)>,
}

impl Default for OriginConfig {
    fn default() -> Self {
        OriginConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            dir: None,
            access_key: ACCESS_KEY.to_owned(),
            secret_key: SECRET_KEY.to_owned(),
            extra_keys: Vec::new(),
        }
    }
}

enum DataDir {
    Temp(tempfile::TempDir),
    Fixed(PathBuf),
}

impl DataDir {
    fn path(&self) -> &Path {
        match self {
            DataDir::Temp(t) => t.path(),
            DataDir::Fixed(p) => p,
        }
    }
}

struct Running {
    shutdown: tokio::sync::oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

/// The in-process S3 origin.
pub struct Origin {
    addr: SocketAddr,
    data: DataDir,
    access_key: String,
    secret_key: String,
    extra_keys: Vec<(String, String)>,
    stats: Arc<Stats>,
    running: Option<Running>,
}

impl Origin {
    /// Starts on 127.0.0.1:<free port> with [`ACCESS_KEY`]/[`SECRET_KEY`]
    /// and a fresh temp data dir.
    pub fn start() -> Origin {
        Self::start_with(OriginConfig::default())
    }

    /// Starts on a specific port (e.g. one a previous origin used).
    pub fn start_on(port: u16) -> Origin {
        Self::start_with(OriginConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
            ..OriginConfig::default()
        })
    }

    pub fn start_with(cfg: OriginConfig) -> Origin {
        let data = match cfg.dir {
            Some(p) => {
                std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("create {p:?}: {e}"));
                DataDir::Fixed(p)
            }
            None => DataDir::Temp(
                tempfile::Builder::new()
                    .prefix("corvid-origin-")
                    .tempdir()
                    .expect("origin temp dir"),
            ),
        };
        let mut origin = Origin {
            addr: cfg.listen,
            data,
            access_key: cfg.access_key,
            secret_key: cfg.secret_key,
            extra_keys: cfg.extra_keys,
            stats: Arc::new(Stats::default()),
            running: None,
        };
        origin.spawn_server(cfg.listen);
        origin
    }

    fn spawn_server(&mut self, listen: SocketAddr) {
        // Bind synchronously so the port is known (and bind errors surface)
        // before start() returns; std sets SO_REUSEADDR on Unix, which lets
        // a restarted origin reclaim its old port despite TIME_WAIT.
        let listener =
            StdListener::bind(listen).unwrap_or_else(|e| panic!("origin bind {listen}: {e}"));
        listener.set_nonblocking(true).expect("nonblocking");
        self.addr = listener.local_addr().expect("local_addr");

        let mut builder = S3ServiceBuilder::new(KeyMappingFs::new(self.data.path()));
        let mut auth = SimpleAuth::from_single(self.access_key.as_str(), self.secret_key.as_str());
        for (ak, sk) in &self.extra_keys {
            auth.register(ak.clone(), sk.as_str().into());
        }
        builder.set_auth(auth);
        let service = Recorder {
            inner: builder.build(),
            stats: self.stats.clone(),
        };

        let (tx, rx) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(format!("origin-{}", self.addr.port()))
            .spawn(move || serve(listener, service, rx))
            .expect("spawn origin thread");
        self.running = Some(Running {
            shutdown: tx,
            thread,
        });
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    /// An independent (aws-sigv4) client for this origin.
    pub fn client(&self) -> S3Client {
        S3Client::new(self.addr, &self.access_key, &self.secret_key)
    }

    pub fn create_bucket(&self, name: &str) {
        self.client().create_bucket(name);
    }

    pub fn put(&self, bucket: &str, key: &str, body: &[u8]) {
        self.put_with(bucket, key, body, None, &[]);
    }

    /// PUT with Content-Type and extra headers (x-amz-meta-*, cache-control,
    /// content-disposition, ...), all covered by the signature. Large bodies
    /// (hundreds of MiB) go out in one write with an UNSIGNED-PAYLOAD hash;
    /// the socket timeout is raised for them.
    pub fn put_with(
        &self,
        bucket: &str,
        key: &str,
        body: &[u8],
        content_type: Option<&str>,
        headers: &[(&str, &str)],
    ) {
        let client = self.client().with_timeout(Duration::from_secs(120));
        client.put_object(bucket, key, body, content_type, headers);
    }

    /// Signed GET straight to the origin (bypassing corvid).
    pub fn get(&self, bucket: &str, key: &str) -> RawResponse {
        self.client().get_object(bucket, key, &[])
    }

    pub fn delete(&self, bucket: &str, key: &str) {
        let r = self.client().delete_object(bucket, key);
        assert!(
            matches!(r.status, 200 | 204),
            "delete {bucket}/{key}: {}",
            r.status
        );
    }

    /// Requests seen with this method (e.g. "GET", "HEAD", "PUT").
    pub fn count(&self, method: &str) -> u64 {
        self.stats.lock().counts.get(method).copied().unwrap_or(0)
    }

    /// Conditional answers (304 or 412) the origin gave instead of the object.
    pub fn conditional_count(&self, status: u16) -> u64 {
        self.stats
            .lock()
            .conditional
            .get(&status)
            .copied()
            .unwrap_or(0)
    }

    /// Requests seen, all methods.
    pub fn total_count(&self) -> u64 {
        self.stats.lock().counts.values().sum()
    }

    /// Recent request heads, oldest first (at most 1000).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.stats.lock().recent.iter().cloned().collect()
    }

    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.stats.lock().recent.back().cloned()
    }

    /// Recorded requests of one method, oldest first.
    pub fn requests_with(&self, method: &str) -> Vec<RecordedRequest> {
        self.stats
            .lock()
            .recent
            .iter()
            .filter(|r| r.method == method)
            .cloned()
            .collect()
    }

    /// Zeroes counters and forgets recorded requests (e.g. after seeding).
    pub fn reset_counts(&self) {
        let mut s = self.stats.lock();
        s.counts.clear();
        s.recent.clear();
        s.peak_in_flight = s.in_flight;
    }

    /// The most requests the origin was answering at once (from arrival to response head, a
    /// [`Origin::set_delay`] included) since the start or the last [`Origin::reset_counts`].
    pub fn peak_in_flight(&self) -> u64 {
        self.stats.lock().peak_in_flight
    }

    /// The next `n` requests get `status` with an S3-style XML error body
    /// instead of reaching s3s (they are still counted and recorded).
    pub fn fail_next(&self, n: u32, status: u16) {
        self.fail_next_with(n, FaultReply::status(status));
    }

    /// The next `n` requests get `reply` (status, body, headers) instead of reaching s3s.
    pub fn fail_next_with(&self, n: u32, reply: FaultReply) {
        self.stats.lock().fault = Some(Fault {
            remaining: n,
            reply,
        });
    }

    /// From the next request on, GET/HEAD answers for `bucket`/`key` (200, 206 and 304) have
    /// their header fields rewritten by `overrides`, replacing any set before.
    pub fn set_headers(&self, bucket: &str, key: &str, overrides: Overrides) {
        self.stats
            .lock()
            .overrides
            .insert((bucket.to_owned(), key.to_owned()), overrides);
    }

    /// Back to s3s's own header fields for `bucket`/`key` (the bucket's rewrites, if any,
    /// still apply).
    pub fn clear_headers(&self, bucket: &str, key: &str) {
        self.stats
            .lock()
            .overrides
            .remove(&(bucket.to_owned(), key.to_owned()));
    }

    /// Like [`Origin::set_headers`] for every object of `bucket`, replacing bucket-wide
    /// rewrites set before. They are applied first, then the object's own, so where both
    /// rewrite a field the object's wins. `Overrides::new().remove("date")` here is what tests
    /// on an advanced manual clock use (see [`super::InProcess`]).
    pub fn set_bucket_headers(&self, bucket: &str, overrides: Overrides) {
        self.stats
            .lock()
            .bucket_overrides
            .insert(bucket.to_owned(), overrides);
    }

    /// Back to s3s's own header fields for the objects of `bucket` (their own rewrites, if
    /// any, still apply).
    pub fn clear_bucket_headers(&self, bucket: &str) {
        self.stats.lock().bucket_overrides.remove(bucket);
    }

    /// Recorded requests for one object (any method), oldest first.
    pub fn requests_for(&self, bucket: &str, key: &str) -> Vec<RecordedRequest> {
        self.stats
            .lock()
            .recent
            .iter()
            .filter(|r| r.object().is_some_and(|(b, k)| b == bucket && k == key))
            .cloned()
            .collect()
    }

    /// Delay every response head by `d` (zero disables).
    pub fn set_delay(&self, d: Duration) {
        self.stats.lock().delay = d;
    }

    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Stops serving: the listener is closed and open connections are
    /// dropped before this returns, so the port refuses connections
    /// afterwards. Data (and counters) are kept for [`Origin::restart`].
    pub fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            let _ = r.shutdown.send(());
            r.thread.join().expect("origin thread panicked");
        }
    }

    /// Starts again on the same port with the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn_server(self.addr);
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            let _ = r.shutdown.send(());
            // Don't turn an in-progress panic into an abort via a second one.
            let _ = r.thread.join();
        }
    }
}

fn serve(listener: StdListener, service: Recorder, mut stop: tokio::sync::oneshot::Receiver<()>) {
    // `Date` comes from the wrapper (`stamp_date`), so that overrides can remove it.
    let mut http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    http.http1().auto_date_header(false);
    http.http2().auto_date_header(false);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("origin-worker")
        .enable_all()
        .build()
        .expect("origin runtime");
    rt.block_on(async {
        let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
        loop {
            tokio::select! {
                _ = &mut stop => break,
                accepted = listener.accept() => {
                    let Ok((sock, _)) = accepted else { continue };
                    let _ = sock.set_nodelay(true);
                    let (svc, http) = (service.clone(), http.clone());
                    tokio::spawn(async move {
                        // auto = HTTP/1.1 (and h2 prior knowledge); errors
                        // here are client disconnects, which tests provoke
                        // on purpose.
                        let _ = http.serve_connection(TokioIo::new(sock), svc).await;
                    });
                }
            }
        }
        // listener dropped here: the port closes before connections do.
    });
    // Dropping the runtime cancels every connection task, closing their
    // sockets; the bound keeps a stuck blocking file read from hanging stop().
    rt.shutdown_timeout(Duration::from_secs(5));
}

/// Deterministic pseudo-random bytes (xorshift), so large test objects are
/// incompressible and reproducible without a rand dependency.
pub fn pattern_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

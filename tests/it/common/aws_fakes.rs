//! Local fakes of the AWS credential endpoints, behaving as AWS documents them:
//!
//! * [`FakeServer`]: a tiny HTTP/1.1 server on 127.0.0.1 (one thread, `Connection: close`)
//!   recording every request and answering through a handler.
//! * [`Issuer`]: the credentials the fakes hand out — a list of key pairs given in turn (the
//!   last one repeated), a lifetime, and a switch that makes every fetch fail.
//! * [`imds`]: IMDSv2 — tokens from `PUT /latest/api/token` (which needs the TTL header), a
//!   `GET` without a valid token is `401`.
//! * [`sts`]: `AssumeRoleWithWebIdentity` — checks the form fields and that the token equals
//!   the token file's current contents; answers STS XML (or the STS error XML).
//! * [`ecs`]: the container endpoint — checks `Authorization` against a file's contents.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One request as a fake received it.
#[derive(Clone, Debug)]
pub struct FakeRequest {
    pub method: String,
    pub path: String,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl FakeRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A field of an `application/x-www-form-urlencoded` body, decoded.
    pub fn form(&self, name: &str) -> Option<String> {
        self.body.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == name).then(|| {
                percent_encoding::percent_decode_str(&v.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            })
        })
    }
}

type Handler = dyn Fn(&FakeRequest) -> (u16, String) + Send + Sync;

/// A local HTTP server answering with a handler; stops on drop.
pub struct FakeServer {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<FakeRequest>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeServer {
    pub fn start(handler: impl Fn(&FakeRequest) -> (u16, String) + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake");
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let (reqs, halt) = (Arc::clone(&requests), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if halt.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let _ = serve_one(conn, &*handler, &reqs);
            }
        });
        FakeServer {
            addr,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<FakeRequest> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_one(
    conn: TcpStream,
    handler: &Handler,
    requests: &Mutex<Vec<FakeRequest>>,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
        return Ok(());
    };
    let (method, path) = (method.to_owned(), path.to_owned());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    let req = FakeRequest {
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let (status, body) = handler(&req);
    requests.lock().unwrap().push(req);
    let mut conn = conn;
    write!(
        conn,
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    conn.flush()
}

/// What the fakes hand out; shared with the test, which changes it while corvid runs.
#[derive(Clone)]
pub struct Issuer(Arc<Mutex<IssuerState>>);

struct IssuerState {
    pairs: Vec<(String, String)>,
    ttl: Duration,
    failing: bool,
    issued: usize,
    failures: usize,
}

/// A key pair and its session token, as handed out.
pub struct Issued {
    pub access_key: String,
    pub secret_key: String,
    pub token: String,
    /// ISO 8601, UTC.
    pub expiration: String,
}

impl Issuer {
    /// Hands out `pairs` in turn (the last repeated), each valid for `ttl`.
    pub fn new(pairs: &[(&str, &str)], ttl: Duration) -> Issuer {
        Issuer(Arc::new(Mutex::new(IssuerState {
            pairs: pairs
                .iter()
                .map(|(a, s)| (a.to_string(), s.to_string()))
                .collect(),
            ttl,
            failing: false,
            issued: 0,
            failures: 0,
        })))
    }

    pub fn set_failing(&self, failing: bool) {
        self.0.lock().unwrap().failing = failing;
    }

    /// Credentials handed out so far.
    pub fn issued(&self) -> usize {
        self.0.lock().unwrap().issued
    }

    /// Fetches refused so far.
    pub fn failures(&self) -> usize {
        self.0.lock().unwrap().failures
    }

    /// The next credentials, or `None` while failing.
    pub fn issue(&self) -> Option<Issued> {
        let mut s = self.0.lock().unwrap();
        if s.failing {
            s.failures += 1;
            return None;
        }
        let (ak, sk) = s.pairs[s.issued.min(s.pairs.len() - 1)].clone();
        s.issued += 1;
        Some(Issued {
            token: format!("session-token-{}", s.issued),
            access_key: ak,
            secret_key: sk,
            expiration: iso8601(SystemTime::now() + s.ttl),
        })
    }
}

/// `2026-12-01T16:38:15Z`.
pub fn iso8601(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let (y, m, d) = corvid::s3::sigv4::civil_from_days(secs.div_euclid(86_400));
    let r = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        r / 3600,
        r / 60 % 60,
        r % 60
    )
}

fn json_doc(c: &Issued, imds: bool) -> String {
    let mut v = serde_json::json!({
        "AccessKeyId": c.access_key,
        "SecretAccessKey": c.secret_key,
        "Token": c.token,
        "Expiration": c.expiration,
    });
    if imds {
        v["Code"] = "Success".into();
        v["Type"] = "AWS-HMAC".into();
    } else {
        v["RoleArn"] = "arn:aws:iam::123456789012:role/corvid".into();
    }
    v.to_string()
}

/// The role name the fake IMDS reports.
pub const IMDS_ROLE: &str = "corvid-role";

/// A fake IMDSv2.
pub fn imds(issuer: Issuer) -> FakeServer {
    let tokens: Mutex<Vec<String>> = Mutex::new(Vec::new());
    FakeServer::start(move |r| {
        if r.method == "PUT" && r.path == "/latest/api/token" {
            let Some(ttl) = r.header("x-aws-ec2-metadata-token-ttl-seconds") else {
                return (400, String::new());
            };
            if !ttl.parse::<u32>().is_ok_and(|t| (1..=21600).contains(&t)) {
                return (400, String::new());
            }
            let mut t = tokens.lock().unwrap();
            let token = format!("imds-token-{}", t.len());
            t.push(token.clone());
            return (200, token);
        }
        if r.method != "GET" {
            return (405, String::new());
        }
        let valid = r
            .header("x-aws-ec2-metadata-token")
            .is_some_and(|t| tokens.lock().unwrap().iter().any(|k| k == t));
        if !valid {
            return (401, String::new());
        }
        match r.path.as_str() {
            "/latest/meta-data/iam/security-credentials/" => (200, IMDS_ROLE.to_owned()),
            p if p == format!("/latest/meta-data/iam/security-credentials/{IMDS_ROLE}") => {
                match issuer.issue() {
                    Some(c) => (200, json_doc(&c, true)),
                    None => (500, String::new()),
                }
            }
            _ => (404, String::new()),
        }
    })
}

/// A fake STS for `AssumeRoleWithWebIdentity`, expecting `role_arn` and the contents of
/// `token_file` (read at each request).
pub fn sts(issuer: Issuer, role_arn: &str, token_file: PathBuf) -> FakeServer {
    let role_arn = role_arn.to_owned();
    FakeServer::start(move |r| {
        let error = |status: u16, code: &str, message: &str| {
            (
                status,
                format!(
                    "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error>\
                     <Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>\
                     <RequestId>fake</RequestId></ErrorResponse>"
                ),
            )
        };
        if r.method != "POST"
            || r.form("Action").as_deref() != Some("AssumeRoleWithWebIdentity")
            || r.form("Version").as_deref() != Some("2011-06-15")
            || r.header("content-type") != Some("application/x-www-form-urlencoded")
        {
            return error(400, "InvalidAction", "bad action or version");
        }
        if r.form("RoleArn").as_deref() != Some(role_arn.as_str())
            || r.form("RoleSessionName").is_none_or(|s| s.is_empty())
        {
            return error(400, "ValidationError", "bad RoleArn or RoleSessionName");
        }
        let expected = std::fs::read_to_string(&token_file).unwrap_or_default();
        if r.form("WebIdentityToken").as_deref() != Some(expected.trim()) {
            return error(
                400,
                "InvalidIdentityToken",
                "the token is not the current one",
            );
        }
        match issuer.issue() {
            None => error(400, "IDPCommunicationError", "the provider is down"),
            Some(c) => (
                200,
                format!(
                    "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
                     <AssumeRoleWithWebIdentityResult><Credentials>\
                     <SessionToken>{}</SessionToken><SecretAccessKey>{}</SecretAccessKey>\
                     <Expiration>{}</Expiration><AccessKeyId>{}</AccessKeyId>\
                     </Credentials></AssumeRoleWithWebIdentityResult>\
                     <ResponseMetadata><RequestId>fake</RequestId></ResponseMetadata>\
                     </AssumeRoleWithWebIdentityResponse>",
                    c.token, c.secret_key, c.expiration, c.access_key
                ),
            ),
        }
    })
}

/// A fake container credentials endpoint at `/creds`, expecting `Authorization` to equal the
/// contents of `token_file` (read at each request).
pub fn ecs(issuer: Issuer, token_file: PathBuf) -> FakeServer {
    FakeServer::start(move |r| {
        let expected = std::fs::read_to_string(&token_file).unwrap_or_default();
        if r.header("authorization") != Some(expected.trim()) {
            return (403, "{\"message\":\"bad token\"}".into());
        }
        if r.method != "GET" || r.path != "/creds" {
            return (404, String::new());
        }
        match issuer.issue() {
            Some(c) => (200, json_doc(&c, false)),
            None => (500, "{\"message\":\"down\"}".into()),
        }
    })
}

//! moto (PyPI `moto[server]`) as a second, independently written S3 origin: `moto_server` as a
//! child process on a free loopback port, seeded through the aws-sigv4 [`S3Client`].
//!
//! The server is `$CORVID_MOTO_SERVER`, else `target/moto-venv/bin/moto_server` (what
//! `scripts/test.sh` installs). Where neither exists the test fails and says so: a missing
//! origin is never a silent skip.
//!
//! moto quirks worth knowing when writing tests (moto 5.2):
//! * it does not verify SigV4 (any credentials pass), unlike [`super::Origin`];
//! * it stores `Cache-Control`, `Expires` and `Content-Type` given at PUT and returns them on
//!   GET/HEAD;
//! * it answers If-None-Match and If-Modified-Since with 304, but evaluates them
//!   independently: a non-matching If-None-Match together with a satisfied
//!   If-Modified-Since still gets a 304 (RFC 9110 §13.2.2 says 200);
//! * its 304 carries `ETag` and, in a versioned bucket, `x-amz-version-id` — no
//!   `Last-Modified`, `Cache-Control` or `Expires` (Werkzeug strips entity fields from 304s);
//! * every answer has `Connection: close`.

use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::http;
use super::origin::{ACCESS_KEY, SECRET_KEY};
use super::s3client::S3Client;

/// How long [`Moto::start`] waits for the server to answer (Python start-up is slow).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `moto_server`; killed on drop.
pub struct Moto {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// Where `moto_server` is: `$CORVID_MOTO_SERVER`, else the venv `scripts/test.sh` creates.
fn moto_server() -> PathBuf {
    let path = std::env::var_os("CORVID_MOTO_SERVER").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/moto-venv/bin/moto_server"),
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "moto_server not found at {}: run scripts/test.sh once (it creates target/moto-venv \
         with `pip install 'moto[server]'`), or point CORVID_MOTO_SERVER at a moto_server",
        path.display()
    );
    path
}

impl Moto {
    /// Starts `moto_server` on 127.0.0.1:<free port> and waits until it answers.
    pub fn start() -> Moto {
        let dir = tempfile::Builder::new()
            .prefix("corvid-moto-")
            .tempdir()
            .expect("moto temp dir");
        let log = dir.path().join("moto.log");
        let port = super::free_port();
        let child = Command::new(moto_server())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(File::create(&log).expect("moto log"))
            .stderr(File::create(&log).expect("moto log"))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn moto_server: {e}"));
        let mut moto = Moto {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
            _dir: dir,
        };
        moto.wait_answering();
        moto
    }

    fn wait_answering(&mut self) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("moto_server exited at start with {status}:\n{}", self.log());
            }
            let probe = http::try_request(self.addr, "GET", "/", &[], Duration::from_secs(1));
            if probe.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "moto_server not answering on {} after {STARTUP_TIMEOUT:?}:\n{}",
                self.addr,
                self.log()
            );
            // Polling, not synchronisation: nothing to wait on for another process listening.
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What moto wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// An independent (aws-sigv4) client signing with the harness keys.
    pub fn client(&self) -> S3Client {
        S3Client::new(self.addr, ACCESS_KEY, SECRET_KEY)
    }

    pub fn create_bucket(&self, name: &str) {
        self.client().create_bucket(name);
    }

    /// Turns versioning on, so every PUT makes a new `x-amz-version-id`.
    pub fn enable_versioning(&self, bucket: &str) {
        let body = br#"<VersioningConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Status>Enabled</Status></VersioningConfiguration>"#;
        let r = self.client().send(
            "PUT",
            &format!("{}?versioning", S3Client::object_path(bucket, "")),
            &[],
            body,
        );
        assert_eq!(r.status, 200, "enable versioning on {bucket}: {}", r.text());
    }

    /// PUT with Content-Type and metadata headers (`cache-control`, `expires`, ...); returns
    /// the answer (its `x-amz-version-id` in a versioned bucket).
    pub fn put_with(
        &self,
        bucket: &str,
        key: &str,
        body: &[u8],
        content_type: Option<&str>,
        headers: &[(&str, &str)],
    ) -> http::RawResponse {
        self.client()
            .put_object(bucket, key, body, content_type, headers)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

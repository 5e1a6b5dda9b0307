//! Test PKI (rcgen) and a TLS-terminating TCP forwarder (tokio-rustls).
//!
//! The terminator lets corvid talk HTTPS to the plain-HTTP origin: it
//! decrypts and forwards bytes unchanged, so the origin still verifies the
//! SigV4 signature corvid computed for the https URL.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    // Explicit provider: does not depend on which rustls crypto features
    // happen to be unified into the test build.
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A throwaway certificate authority.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A leaf certificate and its key, PEM-encoded.
#[derive(Clone, Debug)]
pub struct CertPair {
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCa {
    pub fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "corvid test CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("ca key");
        let cert = params.self_signed(&key).expect("self-sign ca");
        TestCa { cert, key }
    }

    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// A server certificate for "localhost" and 127.0.0.1 signed by this CA.
    pub fn server_cert(&self) -> CertPair {
        self.leaf(&["localhost"], &[IpAddr::V4(Ipv4Addr::LOCALHOST)])
    }

    /// A server certificate for arbitrary DNS names / IPs.
    pub fn leaf(&self, dns: &[&str], ips: &[IpAddr]) -> CertPair {
        let mut params =
            CertificateParams::new(dns.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("leaf params");
        for ip in ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        params
            .distinguished_name
            .push(DnType::CommonName, dns.first().copied().unwrap_or("test"));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("sign leaf");
        CertPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// rustls client config trusting only this CA.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.der().clone()).expect("add CA root");
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .expect("protocol versions")
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

/// rustls server config from PEM strings.
pub fn server_config(pair: &CertPair) -> Arc<rustls::ServerConfig> {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(pair.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .expect("parse cert pem");
    let key = PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes()).expect("parse key pem");
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server cert"),
    )
}

/// CA + server cert/key written as PEM files, e.g. for corvid's own HTTPS
/// listener (`cert_file` / `key_file`), plus a client config trusting them.
pub struct ServerCertFiles {
    _dir: tempfile::TempDir,
    pub ca_pem: PathBuf,
    pub cert_pem: PathBuf,
    pub key_pem: PathBuf,
    pub client_config: Arc<rustls::ClientConfig>,
}

pub fn generate_server_cert_files() -> ServerCertFiles {
    let ca = TestCa::new();
    let pair = ca.server_cert();
    let dir = tempfile::Builder::new()
        .prefix("corvid-tls-")
        .tempdir()
        .expect("tls temp dir");
    let write = |name: &str, content: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, content).expect("write pem");
        p
    };
    ServerCertFiles {
        ca_pem: write("ca.pem", &ca.cert_pem()),
        cert_pem: write("server.pem", &pair.cert_pem),
        key_pem: write("server.key", &pair.key_pem),
        client_config: ca.client_config(),
        _dir: dir,
    }
}

struct Running {
    shutdown: tokio::sync::oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

/// TLS front for a plain TCP backend (typically the [`super::Origin`]).
pub struct TlsTerminator {
    addr: SocketAddr,
    ca: TestCa,
    ca_path: PathBuf,
    _dir: tempfile::TempDir,
    connections: Arc<AtomicU64>,
    running: Option<Running>,
}

impl TlsTerminator {
    pub fn start(backend: SocketAddr) -> TlsTerminator {
        assert!(backend.ip().is_loopback(), "backend must be loopback");
        let ca = TestCa::new();
        let dir = tempfile::Builder::new()
            .prefix("corvid-tlsterm-")
            .tempdir()
            .expect("temp dir");
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, ca.cert_pem()).expect("write ca pem");
        let acceptor = tokio_rustls::TlsAcceptor::from(server_config(&ca.server_cert()));

        let listener = StdListener::bind("127.0.0.1:0").expect("bind tls terminator");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local_addr");
        let connections = Arc::new(AtomicU64::new(0));
        let conns = connections.clone();
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();

        let thread = std::thread::Builder::new()
            .name(format!("tls-term-{}", addr.port()))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tls runtime");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                    loop {
                        tokio::select! {
                            _ = &mut rx => break,
                            accepted = listener.accept() => {
                                let Ok((sock, _)) = accepted else { continue };
                                conns.fetch_add(1, Ordering::SeqCst);
                                let acceptor = acceptor.clone();
                                tokio::spawn(async move {
                                    let _ = sock.set_nodelay(true);
                                    // Handshake failures (e.g. a client
                                    // that distrusts the CA) just drop the
                                    // connection, as a real server would.
                                    let Ok(mut tls) = acceptor.accept(sock).await else { return };
                                    let Ok(mut up) = tokio::net::TcpStream::connect(backend).await else { return };
                                    let _ = up.set_nodelay(true);
                                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                                });
                            }
                        }
                    }
                });
                rt.shutdown_timeout(Duration::from_secs(2));
            })
            .expect("spawn tls thread");

        TlsTerminator {
            addr,
            ca,
            ca_path,
            _dir: dir,
            connections,
            running: Some(Running {
                shutdown: tx,
                thread,
            }),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:PORT` (the certificate also covers `localhost`).
    pub fn endpoint(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// `https://localhost:PORT`, to exercise SNI/hostname verification.
    pub fn endpoint_localhost(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// PEM file of the CA that signed the terminator's certificate.
    pub fn ca_pem_path(&self) -> &Path {
        &self.ca_path
    }

    pub fn ca(&self) -> &TestCa {
        &self.ca
    }

    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        self.ca.client_config()
    }

    /// TCP connections accepted so far (to assert connection reuse).
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            let _ = r.shutdown.send(());
            let _ = r.thread.join();
        }
    }
}

impl Drop for TlsTerminator {
    fn drop(&mut self) {
        self.stop();
    }
}

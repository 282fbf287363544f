//! Certificates made for one test run: a private CA and server certificates
//! it signs for loopback addresses, so a test can stand up a real TLS server
//! (HTTPS receiver, SMTP with STARTTLS) and trust it only through the CA
//! file, exactly as an operator trusts a private relay; and a client that
//! trusts such a CA, to talk HTTPS to a TLS-terminating edge.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::ServerName;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A CA that exists for one test.
pub struct TestCa {
    /// The CA certificate, PEM: what a `ca_file` holds.
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A server certificate and its key.
pub struct ServerCert {
    /// The chain (leaf only; the CA is the trust anchor), PEM.
    pub cert_pem: String,
    /// PKCS#8 key, PEM.
    pub key_pem: String,
    der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl TestCa {
    /// A fresh CA named `name`.
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        TestCa {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for `names` (IP addresses or DNS names).
    pub fn server_cert(&self, names: &[&str]) -> ServerCert {
        self.leaf(names, vec![ExtendedKeyUsagePurpose::ServerAuth])
    }

    /// A server certificate for `names` whose validity ended in 2021.
    pub fn expired_server_cert(&self, names: &[&str]) -> ServerCert {
        self.server_cert_valid(names, (2020, 1, 1), (2021, 1, 1))
    }

    /// A server certificate for `names` valid from one day (year, month,
    /// day) to another.
    pub fn server_cert_valid(
        &self,
        names: &[&str],
        from: (i32, u8, u8),
        to: (i32, u8, u8),
    ) -> ServerCert {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("leaf params");
        params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
        params.not_after = rcgen::date_time_ymd(to.0, to.1, to.2);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A certificate a client presents (`--client-cert-auth`).
    pub fn client_cert(&self, name: &str) -> ServerCert {
        self.leaf(&[name], vec![ExtendedKeyUsagePurpose::ClientAuth])
    }

    /// A certificate good for both ends, for `names`: etcd's JSON gateway
    /// dials its own gRPC server with the server certificate, so under
    /// `--client-cert-auth` that one must also be a client certificate.
    pub fn server_client_cert(&self, names: &[&str]) -> ServerCert {
        self.leaf(
            names,
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )
    }

    fn leaf(&self, names: &[&str], usages: Vec<ExtendedKeyUsagePurpose>) -> ServerCert {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, "switchyard test");
        params.extended_key_usages = usages;
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> ServerCert {
        let key = KeyPair::generate().expect("server key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("server certificate");
        ServerCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }

    /// The CA as the only trust anchor.
    pub fn roots(&self) -> Arc<rustls::RootCertStore> {
        let mut roots = rustls::RootCertStore::empty();
        let der = CertificateDer::from_pem_slice(self.pem.as_bytes()).expect("CA PEM");
        roots.add(der).expect("CA as a trust anchor");
        Arc::new(roots)
    }

    /// Writes the CA certificate to `dir/NAME` and returns the path.
    pub fn write_pem(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, &self.pem).expect("write CA file");
        path
    }
}

impl ServerCert {
    /// The certificate, DER: what a TLS client sees as the peer's.
    pub fn der(&self) -> &CertificateDer<'static> {
        &self.der
    }

    /// A rustls server config presenting this certificate (ring provider),
    /// h2 or HTTP/1.1 by ALPN.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.server_config_with(None)
    }

    /// [`ServerCert::server_config`] that requires every client to present
    /// a certificate `ca` signed (an instance behind mTLS).
    pub fn server_config_requiring_client(&self, ca: &TestCa) -> Arc<rustls::ServerConfig> {
        self.server_config_with(Some(ca))
    }

    fn server_config_with(&self, client_ca: Option<&TestCa>) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let b = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("protocol versions");
        let b = match client_ca {
            None => b.with_no_client_auth(),
            Some(ca) => {
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    ca.roots(),
                    provider,
                )
                .build()
                .expect("client verifier");
                b.with_client_cert_verifier(verifier)
            }
        };
        let mut cfg = b
            .with_single_cert(vec![self.der.clone()], self.key())
            .expect("server certificate and key");
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(cfg)
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }

    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.server_config())
    }

    /// Writes `NAME.crt` and `NAME.key` into `dir` (for a server in another
    /// process) and returns their paths.
    pub fn write_pem(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, &self.cert_pem).expect("write certificate");
        std::fs::write(&key, &self.key_pem).expect("write key");
        (cert, key)
    }
}

/// A TLS client trusting one test CA, speaking HTTP/1.1 or HTTP/2 as ALPN
/// decides: what a browser or an SDK does in front of the edge.
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<rustls::ClientConfig>,
}

impl TlsClient {
    /// Offers `alpn` (for example `["h2", "http/1.1"]`; empty: no ALPN).
    pub fn trusting(ca: &TestCa, alpn: &[&str]) -> TlsClient {
        Self::with_versions(ca, alpn, rustls::DEFAULT_VERSIONS)
    }

    /// [`TlsClient::trusting`] speaking TLS 1.2 only, as older clients do.
    pub fn tls12_only(ca: &TestCa, alpn: &[&str]) -> TlsClient {
        Self::with_versions(ca, alpn, &[&rustls::version::TLS12])
    }

    /// [`TlsClient::trusting`] presenting `cert` as its client certificate
    /// (a peer edge, or an impostor with a certificate of another CA).
    pub fn with_client_cert(ca: &TestCa, alpn: &[&str], cert: &ServerCert) -> TlsClient {
        Self::build(ca, alpn, rustls::DEFAULT_VERSIONS, Some(cert))
    }

    fn with_versions(
        ca: &TestCa,
        alpn: &[&str],
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> TlsClient {
        Self::build(ca, alpn, versions, None)
    }

    fn build(
        ca: &TestCa,
        alpn: &[&str],
        versions: &[&'static rustls::SupportedProtocolVersion],
        cert: Option<&ServerCert>,
    ) -> TlsClient {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let b = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .expect("protocol versions")
            .with_root_certificates(ca.roots());
        let mut cfg = match cert {
            None => b.with_no_client_auth(),
            Some(c) => b
                .with_client_auth_cert(vec![c.der.clone()], c.key())
                .expect("client certificate and key"),
        };
        cfg.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        TlsClient {
            config: Arc::new(cfg),
        }
    }

    /// Connects to `addr` asking for `server_name` (a DNS name is sent as
    /// SNI; an IP address sends none) and shakes hands.
    pub async fn connect(&self, addr: SocketAddr, server_name: &str) -> Result<HttpsConn, String> {
        let name = ServerName::try_from(server_name.to_string()).map_err(|e| e.to_string())?;
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let tls = tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake with {addr} as {server_name}: {e}"))?;
        let (_, state) = tls.get_ref();
        let peer = state
            .peer_certificates()
            .and_then(|c| c.first())
            .cloned()
            .ok_or("the server presented no certificate")?;
        let alpn = state.alpn_protocol().map(|p| p.to_vec());
        let io = hyper_util::rt::TokioIo::new(tls);
        let sender = if alpn.as_deref() == Some(b"h2") {
            let (s, conn) =
                hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                    .await
                    .map_err(|e| format!("h2 handshake: {e}"))?;
            tokio::spawn(conn);
            Sender::H2(s)
        } else {
            let (s, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| format!("http/1.1 handshake: {e}"))?;
            tokio::spawn(conn);
            Sender::H1(s)
        };
        Ok(HttpsConn {
            peer,
            alpn,
            sender,
            authority: server_name.to_string(),
        })
    }
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

/// One client connection over TLS; requests go one after another on it.
pub struct HttpsConn {
    /// The certificate the server presented.
    pub peer: CertificateDer<'static>,
    /// The protocol ALPN chose, if any.
    pub alpn: Option<Vec<u8>>,
    sender: Sender,
    authority: String,
}

/// An answer read whole.
#[derive(Debug)]
pub struct HttpsReply {
    pub status: u16,
    pub version: http::Version,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl HttpsConn {
    /// `GET path` with `Host: host` on this connection.
    pub async fn get(&mut self, host: &str, path: &str) -> Result<HttpsReply, String> {
        self.get_with(host, path, &[]).await
    }

    /// `GET path` with `Host: host` and `headers` on this connection.
    pub async fn get_with(
        &mut self,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<HttpsReply, String> {
        let mut req = http::Request::get(format!("https://{}{path}", self.authority));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = match self.sender {
            // HTTP/1.1 names the service in Host; h2 in :authority, which
            // hyper takes from the URI.
            Sender::H1(_) => req.uri(path).header(http::header::HOST, host),
            Sender::H2(_) => req.uri(format!("https://{host}{path}")),
        }
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
        let resp = match &mut self.sender {
            Sender::H1(s) => {
                s.ready().await.map_err(|e| e.to_string())?;
                s.send_request(req).await
            }
            Sender::H2(s) => {
                s.ready().await.map_err(|e| e.to_string())?;
                s.send_request(req).await
            }
        }
        .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let version = resp.version();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(HttpsReply {
            status,
            version,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

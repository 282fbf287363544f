//! Certificates made for one test run: a private CA and server certificates
//! it signs for loopback addresses, so a test can stand up a real TLS server
//! (HTTPS receiver, SMTP with STARTTLS) and trust it only through the CA
//! file, exactly as an operator trusts a private relay.

use std::path::{Path, PathBuf};
use std::sync::Arc;

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

    /// Writes the CA certificate to `dir/NAME` and returns the path.
    pub fn write_pem(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, &self.pem).expect("write CA file");
        path
    }
}

impl ServerCert {
    /// A rustls server config presenting this certificate (ring provider).
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()));
        let cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(vec![self.der.clone()], key)
            .expect("server certificate and key");
        Arc::new(cfg)
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

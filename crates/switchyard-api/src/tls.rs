//! TLS for the control plane's API, one place for both ends: the rustls
//! configs the plane serves with and its clients (edges, `switchyard ctl`, the
//! lab, the etcd store) verify with, built on the ring provider so nothing
//! needs cmake or aws-lc-rs.
//!
//! Clients trust Mozilla's root store as shipped in the binary (webpki-roots)
//! plus a private CA named explicitly (`control_ca_file`, `--ca-file`), as
//! notification receivers do: a control plane often runs in minimal
//! containers with no system CA bundle, and a shipped set behaves the same
//! everywhere.

use std::error::Error as StdError;
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why a PEM file cannot be used; every variant names the file, and the
/// caller prefixes the config field (`control.tls.cert_file: …`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PemError {
    #[error("cannot read {path:?}: {reason}")]
    Read { path: String, reason: String },
    #[error("{path:?} holds no PEM {what}")]
    Empty { path: String, what: &'static str },
    #[error("{path:?} is not usable: {reason}")]
    Bad { path: String, reason: String },
    #[error("{path:?} is not a usable CA certificate file: {reason}")]
    BadCa { path: String, reason: String },
}

fn read(path: &str) -> Result<Vec<u8>, PemError> {
    std::fs::read(path).map_err(|e| PemError::Read {
        path: path.into(),
        reason: e.to_string(),
    })
}

/// The certificates of a PEM file (a chain, or CAs to trust).
pub fn read_certs(path: &str) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PemError::Bad {
            path: path.into(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(PemError::Empty {
            path: path.into(),
            what: "certificate (-----BEGIN CERTIFICATE-----)",
        });
    }
    Ok(certs)
}

/// CA certificates to trust, each checked to be usable as a trust anchor now,
/// so a wrong file fails at start rather than at the first connection.
pub fn read_ca_file(path: &str) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let bad = |reason: String| PemError::BadCa {
        path: path.into(),
        reason,
    };
    let certs = read_certs(path).map_err(|e| match e {
        PemError::Bad { reason, .. } => bad(reason),
        e => e,
    })?;
    let mut store = RootCertStore::empty();
    for c in &certs {
        store.add(c.clone()).map_err(|e| bad(e.to_string()))?;
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn read_key(path: &str) -> Result<PrivateKeyDer<'static>, PemError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => PemError::Empty {
            path: path.into(),
            what: "private key (-----BEGIN PRIVATE KEY-----)",
        },
        e => PemError::Bad {
            path: path.into(),
            reason: e.to_string(),
        },
    })
}

/// A certificate chain and its key, as a client or a server presents them.
#[derive(Debug)]
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Identity {
        Identity {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

/// The ring provider, named explicitly so nothing depends on a process-wide
/// default being installed (and aws-lc-rs never gets pulled in).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client config trusting the shipped roots plus `extra` (a private CA,
/// already read), presenting `identity` when the server asks for one (etcd
/// with `--client-cert-auth`).
pub fn client_config(
    extra: &[CertificateDer<'static>],
    identity: Option<&Identity>,
) -> Result<ClientConfig, rustls::Error> {
    let mut roots = RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for c in extra {
        roots.add(c.clone())?;
    }
    let b = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    match identity {
        None => Ok(b.with_no_client_auth()),
        Some(id) => b.with_client_auth_cert(id.chain.clone(), id.key.clone_key()),
    }
}

/// A server config presenting `identity`; the key is checked against the
/// certificate here, so a mismatched pair fails at start.
pub fn server_config(identity: &Identity) -> Result<ServerConfig, rustls::Error> {
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// A reqwest client builder speaking TLS with `config`. Every client of the
/// plane goes through here: reqwest is built without a crypto provider of its
/// own, so one without a preconfigured TLS config could not make HTTPS calls.
pub fn reqwest_builder(config: ClientConfig) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .no_proxy()
}

/// The rustls error somewhere in `e`'s chain, also when wrapped in
/// `io::Error`s (whose `source` skips the error they wrap).
pub fn find_tls_error<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(t) = c.downcast_ref::<rustls::Error>() {
            return Some(t);
        }
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                cur = Some(inner);
                continue;
            }
        }
        cur = c.source();
    }
    None
}

/// What a person should read about a failed handshake with the control plane:
/// rustls' words, and for the usual certificate problems what to do.
pub fn explain(e: &rustls::Error) -> String {
    use rustls::{CertificateError, Error};
    match e {
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => format!(
            "TLS: {e}: the control plane's certificate is not issued by a trusted CA \
             (for a private CA, set [edge] control_ca_file or ctl --ca-file)"
        ),
        Error::InvalidCertificate(CertificateError::NotValidForName)
        | Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. }) => {
            format!("TLS: {e}: the control plane's certificate does not name the host in the URL")
        }
        _ => format!("TLS: {e}"),
    }
}

/// `chain(e)`, led by the TLS explanation when a handshake failed.
pub fn describe(e: &(dyn StdError + 'static)) -> String {
    let all = switchyard_model::error::chain(e);
    match find_tls_error(e) {
        Some(t) => format!("{}; {all}", explain(t)),
        None => all,
    }
}

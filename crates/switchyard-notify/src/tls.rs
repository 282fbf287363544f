//! Whom notifications trust over TLS, for HTTPS receivers and SMTP STARTTLS
//! alike: Mozilla's root store as shipped in the binary (webpki-roots), plus
//! a receiver's own `ca_file` for a private relay.
//!
//! A shipped store rather than the system's: the control plane often runs in
//! minimal containers with no CA bundle at all, and then "https works on my
//! machine" would fail only in production. The set updates with the build,
//! and a private CA is named explicitly where it is needed.

use std::error::Error as StdError;
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// Why a `ca_file` cannot be used; every variant names the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaFileError {
    #[error("cannot read {path:?}: {reason}")]
    Read { path: String, reason: String },
    #[error("{path:?} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    Empty { path: String },
    #[error("{path:?} is not a usable CA certificate file: {reason}")]
    Bad { path: String, reason: String },
}

/// The certificates of a PEM file, each checked to be usable as a trust
/// anchor now, so a wrong file fails when the config is checked rather than
/// at the first page.
pub fn read_ca_file(path: &str) -> Result<Vec<CertificateDer<'static>>, CaFileError> {
    let bytes = std::fs::read(path).map_err(|e| CaFileError::Read {
        path: path.into(),
        reason: e.to_string(),
    })?;
    let bad = |reason: String| CaFileError::Bad {
        path: path.into(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(CaFileError::Empty { path: path.into() });
    }
    let mut store = RootCertStore::empty();
    for c in &certs {
        store.add(c.clone()).map_err(|e| bad(e.to_string()))?;
    }
    Ok(certs)
}

/// The ring provider, named explicitly so nothing depends on a process-wide
/// default being installed (and aws-lc-rs never gets pulled in).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client config trusting the shipped roots plus `extra` (a receiver's
/// `ca_file`, already read).
pub fn client_config(extra: &[CertificateDer<'static>]) -> Result<ClientConfig, rustls::Error> {
    let mut roots = RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for c in extra {
        roots.add(c.clone())?;
    }
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
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

/// What a person should read about a failed handshake: rustls' words, and
/// for a certificate nobody trusts, what to do about it.
pub fn explain(e: &rustls::Error) -> String {
    use rustls::{CertificateError, Error};
    match e {
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => format!(
            "{e}: the receiver's certificate is not issued by a trusted CA \
             (for a private CA, set the receiver's ca_file)"
        ),
        _ => e.to_string(),
    }
}

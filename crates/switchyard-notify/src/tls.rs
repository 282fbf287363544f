//! Whom notifications trust over TLS, for HTTPS receivers and SMTP STARTTLS
//! alike: Mozilla's root store as shipped in the binary (webpki-roots), plus
//! a receiver's own `ca_file` for a private relay.
//!
//! A shipped store rather than the system's: the control plane often runs in
//! minimal containers with no CA bundle at all, and then "https works on my
//! machine" would fail only in production. The set updates with the build,
//! and a private CA is named explicitly where it is needed.
//!
//! The pieces are the ones the control plane's own TLS uses
//! (`switchyard_api::tls`); only the advice given on a refused handshake
//! is a receiver's own.

use rustls::ClientConfig;
use rustls_pki_types::CertificateDer;

pub use switchyard_api::tls::{find_tls_error, provider, read_ca_file, PemError as CaFileError};

/// A client config trusting the shipped roots plus `extra` (a receiver's
/// `ca_file`, already read).
pub fn client_config(extra: &[CertificateDer<'static>]) -> Result<ClientConfig, rustls::Error> {
    switchyard_api::tls::client_config(extra, None)
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

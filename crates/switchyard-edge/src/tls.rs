//! TLS termination on a zone's `edge_tls` listener: the certificates of
//! `[edge.tls]`, chosen per handshake by the name the client asks for (SNI),
//! and replaced while the edge runs when their files change. A replacement
//! takes effect for new handshakes only; connections already established
//! keep the session they have. A set of files that does not load (unreadable,
//! expired, key of another certificate…) is refused as a whole and the
//! certificates in use keep serving, as a refused config does.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use switchyard_api::tls::PemError;
use switchyard_model::config::EdgeTls;

use crate::metrics::{CertificateLabels, HandshakeFailureLabels, HandshakeLabels, TlsReloadLabels};
use crate::state::Edge;

/// One certificate's files as read in one pass: their paths and contents (or
/// why they could not be read). Two reads compare equal when nothing changed,
/// so the watcher loads only what is new, and the set built from them is
/// built from exactly these bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FilePair {
    cert_path: PathBuf,
    key_path: PathBuf,
    cert: Result<Vec<u8>, String>,
    key: Result<Vec<u8>, String>,
}

/// Every certificate's files, in the order of `[[edge.tls.certificate]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Files(Vec<FilePair>);

impl Files {
    /// Reads every file `tls` names, relative paths from `dir` (the config
    /// file's folder).
    pub fn read(tls: &EdgeTls, dir: &Path) -> Files {
        let read = |p: &Path| std::fs::read(p).map_err(|e| e.to_string());
        let resolve = |p: &str| dir.join(p);
        Files(
            tls.certificates
                .iter()
                .map(|c| {
                    let cert_path = resolve(&c.cert_file);
                    let key_path = resolve(&c.key_file);
                    FilePair {
                        cert: read(&cert_path),
                        key: read(&key_path),
                        cert_path,
                        key_path,
                    }
                })
                .collect(),
        )
    }
}

/// What is wrong with one certificate file, named by its config field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct CertError {
    /// `edge.tls.certificate[N].cert_file` or `….key_file`.
    pub field: String,
    pub problem: CertProblem,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertProblem {
    /// Unreadable, or not the PEM expected.
    #[error(transparent)]
    Pem(PemError),
    #[error("{path:?} is not a usable X.509 certificate: {reason}")]
    Unparsable { path: String, reason: String },
    #[error("{path:?} is not valid before {not_before} (now {now})")]
    NotYetValid {
        path: String,
        not_before: String,
        now: String,
    },
    #[error("{path:?} expired at {not_after} (now {now})")]
    Expired {
        path: String,
        not_after: String,
        now: String,
    },
    #[error("{key:?} is not usable with the certificate in {cert:?}: {reason}")]
    KeyMismatch {
        key: String,
        cert: String,
        reason: String,
    },
    #[error(
        "{path:?} has no DNS name in its subjectAltName, so no client could ask for it; \
         only the first certificate (the default) may have none"
    )]
    NoName { path: String },
    #[error("{path:?} names {name:?}, which {other} already serves")]
    DuplicateName {
        path: String,
        name: String,
        other: String,
    },
}

impl CertProblem {
    /// The `reason` label of `switchyard_tls_reloads_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            CertProblem::Pem(PemError::Read { .. }) => "unreadable",
            CertProblem::Pem(_) | CertProblem::Unparsable { .. } => "bad_pem",
            CertProblem::NotYetValid { .. } => "not_yet_valid",
            CertProblem::Expired { .. } => "expired",
            CertProblem::KeyMismatch { .. } => "key_mismatch",
            CertProblem::NoName { .. } => "no_name",
            CertProblem::DuplicateName { .. } => "duplicate_name",
        }
    }
}

/// The certificates one listener presents, indexed by the DNS names of their
/// subjectAltName: exact names first, then one-label wildcards (`*.a.test`
/// serves `x.a.test`, not `a.test` nor `y.x.a.test`), then the default.
#[derive(Debug)]
pub struct CertSet {
    files: Files,
    default: Arc<CertifiedKey>,
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// By the part after `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    names: Vec<String>,
    /// Each certificate file and when it expires (Unix seconds).
    expiry: Vec<(String, i64)>,
}

impl CertSet {
    /// Builds the set from `files`, or names every problem at once.
    pub fn build(files: Files) -> Result<CertSet, Vec<CertError>> {
        let mut errs = Vec::new();
        let mut loaded = Vec::new();
        let now = x509_parser::time::ASN1Time::now();
        for (i, f) in files.0.iter().enumerate() {
            let field = |name: &str| format!("edge.tls.certificate[{i}].{name}");
            match load_pair(f, &now) {
                Ok(pair) => loaded.push((i, pair)),
                Err((which, problem)) => errs.push(CertError {
                    field: field(which),
                    problem,
                }),
            }
        }
        let mut exact: HashMap<String, (usize, Arc<CertifiedKey>)> = HashMap::new();
        let mut wildcard = HashMap::new();
        let mut names = Vec::new();
        for (i, Loaded { key, dns, .. }) in &loaded {
            let path = files.0[*i].cert_path.display().to_string();
            if dns.is_empty() && *i != 0 {
                errs.push(CertError {
                    field: format!("edge.tls.certificate[{i}].cert_file"),
                    problem: CertProblem::NoName { path: path.clone() },
                });
            }
            for name in dns {
                let (map, k) = match name.strip_prefix("*.") {
                    Some(rest) => (&mut wildcard, rest.to_string()),
                    None => (&mut exact, name.clone()),
                };
                if let Some((other, _)) = map.get(&k) {
                    // A certificate naming a name twice is harmless.
                    if other != i {
                        errs.push(CertError {
                            field: format!("edge.tls.certificate[{i}].cert_file"),
                            problem: CertProblem::DuplicateName {
                                path: path.clone(),
                                name: name.clone(),
                                other: format!("edge.tls.certificate[{other}]"),
                            },
                        });
                    }
                    continue;
                }
                map.insert(k, (*i, key.clone()));
                names.push(name.clone());
            }
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        let Some((_, Loaded { key: default, .. })) = loaded.first() else {
            // Validation requires one certificate; an empty list cannot get here.
            return Err(Vec::new());
        };
        let strip = |m: HashMap<String, (usize, Arc<CertifiedKey>)>| {
            m.into_iter().map(|(k, (_, v))| (k, v)).collect()
        };
        let expiry = loaded
            .iter()
            .map(|(i, l)| (files.0[*i].cert_path.display().to_string(), l.not_after))
            .collect();
        Ok(CertSet {
            expiry,
            default: default.clone(),
            exact: strip(exact),
            wildcard: strip(wildcard),
            names,
            files,
        })
    }

    /// The certificate for a client that asked for `name`.
    fn pick(&self, name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = name else {
            return self.default.clone();
        };
        // rustls hands over the name already lower-cased and validated.
        if let Some(k) = self.exact.get(name) {
            return k.clone();
        }
        if let Some((_, parent)) = name.split_once('.') {
            if let Some(k) = self.wildcard.get(parent) {
                return k.clone();
            }
        }
        self.default.clone()
    }

    /// The DNS names the set serves, as the certificates list them.
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

/// One certificate and its key, checked: parsable, valid now, and the key
/// fits. The error names which file of the pair is at fault.
fn load_pair(
    f: &FilePair,
    now: &x509_parser::time::ASN1Time,
) -> Result<Loaded, (&'static str, CertProblem)> {
    let cert_path = f.cert_path.display().to_string();
    let key_path = f.key_path.display().to_string();
    let cert_err = |p| ("cert_file", p);
    let cert_bytes = f.cert.as_ref().map_err(|reason| {
        cert_err(CertProblem::Pem(PemError::Read {
            path: cert_path.clone(),
            reason: reason.clone(),
        }))
    })?;
    let chain = CertificateDer::pem_slice_iter(cert_bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            cert_err(CertProblem::Pem(PemError::Bad {
                path: cert_path.clone(),
                reason: e.to_string(),
            }))
        })?;
    let Some(leaf) = chain.first() else {
        return Err(cert_err(CertProblem::Pem(PemError::Empty {
            path: cert_path,
            what: "certificate (-----BEGIN CERTIFICATE-----)",
        })));
    };
    let (_, x509) = x509_parser::parse_x509_certificate(leaf).map_err(|e| {
        cert_err(CertProblem::Unparsable {
            path: cert_path.clone(),
            reason: e.to_string(),
        })
    })?;
    let validity = x509.validity();
    if *now < validity.not_before {
        return Err(cert_err(CertProblem::NotYetValid {
            path: cert_path,
            not_before: validity.not_before.to_string(),
            now: now.to_string(),
        }));
    }
    if *now > validity.not_after {
        return Err(cert_err(CertProblem::Expired {
            path: cert_path,
            not_after: validity.not_after.to_string(),
            now: now.to_string(),
        }));
    }
    let not_after = validity.not_after.timestamp();
    let dns: Vec<String> = match x509.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => {
            return Err(cert_err(CertProblem::Unparsable {
                path: cert_path,
                reason: format!("subjectAltName: {e}"),
            }))
        }
    };
    let key_bytes = f.key.as_ref().map_err(|reason| {
        (
            "key_file",
            CertProblem::Pem(PemError::Read {
                path: key_path.clone(),
                reason: reason.clone(),
            }),
        )
    })?;
    let key = PrivateKeyDer::from_pem_slice(key_bytes).map_err(|e| {
        let p = match e {
            rustls_pki_types::pem::Error::NoItemsFound => PemError::Empty {
                path: key_path.clone(),
                what: "private key (-----BEGIN PRIVATE KEY-----)",
            },
            e => PemError::Bad {
                path: key_path.clone(),
                reason: e.to_string(),
            },
        };
        ("key_file", CertProblem::Pem(p))
    })?;
    let provider = switchyard_api::tls::provider();
    let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| {
        (
            "key_file",
            CertProblem::KeyMismatch {
                key: key_path.clone(),
                cert: cert_path.clone(),
                reason: e.to_string(),
            },
        )
    })?;
    Ok(Loaded {
        key: Arc::new(certified),
        dns,
        not_after,
    })
}

/// A certificate that loaded, and the DNS names it serves.
struct Loaded {
    key: Arc<CertifiedKey>,
    dns: Vec<String>,
    /// notAfter, Unix seconds.
    not_after: i64,
}

/// What the TLS listener presents: a server config per certificate set,
/// swapped whole on a reload, so the next handshake on every worker uses the
/// new set. Each config has its own session cache: a client resuming a
/// session of the old set (which skips the certificate) finds nothing and
/// gets a full handshake with the new certificate, so after a reload every
/// new connection is shown the new one.
#[derive(Debug)]
pub struct Certificates {
    config: ArcSwap<rustls::ServerConfig>,
    set: ArcSwap<CertSet>,
}

impl Certificates {
    pub fn new(set: CertSet) -> anyhow::Result<Arc<Certificates>> {
        let set = Arc::new(set);
        Ok(Arc::new(Certificates {
            config: ArcSwap::from_pointee(server_config(&set)?),
            set: ArcSwap::new(set),
        }))
    }

    /// The acceptor for one new connection.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.load_full())
    }

    fn swap(&self, set: CertSet) -> Result<(), rustls::Error> {
        let set = Arc::new(set);
        self.config.store(Arc::new(server_config(&set)?));
        self.set.store(set);
        Ok(())
    }

    /// Sets `switchyard_tls_certificate_expiry_seconds` to the certificates
    /// in use, so an alert can fire before one runs out.
    pub fn publish_expiry(&self, edge: &Edge) {
        let family = &edge.metrics.tls_certificate_expiry;
        family.clear();
        for (file, not_after) in &self.set.load().expiry {
            family
                .get_or_create(&CertificateLabels {
                    cert_file: file.clone(),
                })
                .set(*not_after);
        }
    }
}

/// TLS 1.2 and 1.3, h2 and http/1.1 by ALPN, certificates from `set`.
fn server_config(set: &Arc<CertSet>) -> Result<rustls::ServerConfig, rustls::Error> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(switchyard_api::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(BySni(set.clone())));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Picks a certificate of one set per handshake.
#[derive(Debug)]
struct BySni(Arc<CertSet>);

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.pick(hello.server_name()))
    }
}

/// The folder relative certificate paths start from.
fn config_dir(config_path: &Path) -> &Path {
    config_path.parent().unwrap_or(Path::new("."))
}

/// Every problem of `[edge.tls]`'s files, as `field: problem` (for
/// `switchyard validate`); `dir` is the config file's folder.
pub fn check(tls: &EdgeTls, dir: &Path) -> Vec<String> {
    match CertSet::build(Files::read(tls, dir)) {
        Ok(_) => Vec::new(),
        Err(errs) => errs.iter().map(|e| e.to_string()).collect(),
    }
}

/// Loads `[edge.tls]` for start-up: every problem, one per line, or the set.
pub fn load(tls: &EdgeTls, config_path: &Path) -> anyhow::Result<CertSet> {
    CertSet::build(Files::read(tls, config_dir(config_path))).map_err(|errs| {
        anyhow::anyhow!(
            "{}: [edge.tls] cannot be used:\n  {}",
            config_path.display(),
            errs.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n  ")
        )
    })
}

/// Reads the certificate files every `poll_interval` and whenever the config is
/// reloaded, and swaps in a set that changed and loads; one that does not
/// load is logged and counted once per change, and the old set keeps serving.
pub async fn watch(edge: Arc<Edge>, certs: Arc<Certificates>) {
    // The last files tried, loaded or refused: unchanged files are not
    // tried (nor logged) again until they change or a reload asks for it.
    let mut tried = certs.set.load().files.clone();
    loop {
        let poll = edge.snapshot().config.edge.tls.as_ref().map_or(
            Duration::from_millis(switchyard_model::config::DEFAULT_TLS_POLL_INTERVAL_MS),
            |t| t.poll_interval,
        );
        let asked = tokio::select! {
            _ = tokio::time::sleep(poll) => false,
            _ = edge.tls_reload.notified() => true,
        };
        let Some(tls) = edge.snapshot().config.edge.tls.clone() else {
            continue;
        };
        let files = Files::read(&tls, config_dir(&edge.config_path));
        if files == tried && !asked {
            continue;
        }
        tried = files.clone();
        if files == certs.set.load().files {
            continue;
        }
        let count = |result: &str, reason: &str| {
            edge.metrics
                .tls_reloads
                .get_or_create(&TlsReloadLabels {
                    result: result.into(),
                    reason: reason.into(),
                })
                .inc();
        };
        match CertSet::build(files).map(|set| (set.names().to_vec(), certs.swap(set))) {
            Ok((names, Ok(()))) => {
                tracing::info!(?names, "TLS certificates reloaded; new handshakes use them");
                certs.publish_expiry(&edge);
                count("accepted", "");
            }
            Ok((_, Err(e))) => {
                tracing::error!(error = %e, "new TLS certificates refused; the ones in use keep serving");
                count("refused", "config");
            }
            Err(errs) => {
                let reasons: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
                tracing::error!(
                    ?reasons,
                    "new TLS certificates refused; the ones in use keep serving"
                );
                count(
                    "refused",
                    errs.first().map_or("unknown", |e| e.problem.reason()),
                );
            }
        }
    }
}

/// Counts a completed handshake by protocol version and ALPN.
pub fn count_handshake(edge: &Edge, conn: &rustls::ServerConnection) {
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "1.2",
        _ => "other",
    };
    let alpn = match conn.alpn_protocol() {
        Some(b"h2") => "h2",
        Some(b"http/1.1") => "http/1.1",
        _ => "none",
    };
    edge.metrics
        .tls_handshakes
        .get_or_create(&HandshakeLabels {
            version: version.into(),
            alpn: alpn.into(),
        })
        .inc();
}

/// Counts a failed handshake by why it failed.
pub fn count_failure(edge: &Edge, reason: &'static str) {
    edge.metrics
        .tls_handshake_failures
        .get_or_create(&HandshakeFailureLabels {
            reason: reason.into(),
        })
        .inc();
}

/// Why a handshake failed, as the `reason` label of
/// `switchyard_tls_handshake_failures_total`.
pub fn failure_reason(e: &std::io::Error) -> &'static str {
    use rustls::Error;
    if let Some(t) = switchyard_api::tls::find_tls_error(e) {
        return match t {
            // Not a TLS record at all: most often plain HTTP sent to the TLS port.
            Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType) => "not_tls",
            Error::InvalidMessage(_)
            | Error::InappropriateMessage { .. }
            | Error::InappropriateHandshakeMessage { .. } => "bad_message",
            Error::PeerIncompatible(_) => "incompatible",
            Error::NoApplicationProtocol => "no_alpn",
            // The client refused the handshake, usually our certificate.
            Error::AlertReceived(_) => "alert_received",
            Error::PeerMisbehaved(_) => "misbehaved",
            _ => "other",
        };
    }
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => "eof",
        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe => "reset",
        _ => "io",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_model::config::TlsCertificateFiles;
    use switchyard_testkit::{ServerCert, TestCa};

    fn tls(dir: &Path, certs: &[(&str, &ServerCert)]) -> EdgeTls {
        EdgeTls {
            poll_interval: Duration::from_secs(2),
            certificates: certs
                .iter()
                .map(|(name, c)| {
                    c.write_pem(dir, name);
                    TlsCertificateFiles {
                        cert_file: format!("{name}.crt"),
                        key_file: format!("{name}.key"),
                    }
                })
                .collect(),
        }
    }

    fn build(dir: &Path, t: &EdgeTls) -> Result<CertSet, Vec<String>> {
        CertSet::build(Files::read(t, dir))
            .map_err(|errs| errs.iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn exact_names_win_over_wildcards_and_the_first_is_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("tls unit CA");
        let shop = ca.server_cert(&["shop.test"]);
        let wild = ca.server_cert(&["*.api.test", "*.api.test"]);
        let eu = ca.server_cert(&["EU.api.test"]);
        let set = build(
            dir.path(),
            &tls(dir.path(), &[("shop", &shop), ("wild", &wild), ("eu", &eu)]),
        )
        .unwrap();
        let got = |name: Option<&str>| set.pick(name).cert[0].clone();
        assert_eq!(&got(Some("eu.api.test")), eu.der());
        assert_eq!(&got(Some("us.api.test")), wild.der());
        // A wildcard covers one label only, and not its parent.
        assert_eq!(&got(Some("a.us.api.test")), shop.der());
        assert_eq!(&got(Some("api.test")), shop.der());
        assert_eq!(&got(Some("nobody.test")), shop.der());
        assert_eq!(&got(None), shop.der());
    }

    #[test]
    fn every_problem_is_named_by_its_field_and_file_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("tls unit CA");
        let future = ca.server_cert_valid(&["later.test"], (2090, 1, 1), (2091, 1, 1));
        let ip_only = ca.server_cert(&["127.0.0.1"]);
        let a = ca.server_cert(&["a.test"]);
        let a_again = ca.server_cert(&["a.test"]);
        let mut t = tls(
            dir.path(),
            &[
                ("future", &future),
                ("ip", &ip_only),
                ("a", &a),
                ("again", &a_again),
            ],
        );
        t.certificates.push(TlsCertificateFiles {
            cert_file: "a.crt".into(),
            key_file: "missing.key".into(),
        });
        std::fs::write(dir.path().join("garbage.crt"), "not a certificate").unwrap();
        t.certificates.push(TlsCertificateFiles {
            cert_file: "garbage.crt".into(),
            key_file: "a.key".into(),
        });
        let errs = build(dir.path(), &t).unwrap_err();
        let d = dir.path().display();
        let want = [
            format!("edge.tls.certificate[0].cert_file: \"{d}/future.crt\" is not valid before"),
            format!("edge.tls.certificate[4].key_file: cannot read \"{d}/missing.key\""),
            format!("edge.tls.certificate[5].cert_file: \"{d}/garbage.crt\" holds no PEM certificate"),
            format!("edge.tls.certificate[1].cert_file: \"{d}/ip.crt\" has no DNS name"),
            format!("edge.tls.certificate[3].cert_file: \"{d}/again.crt\" names \"a.test\", which edge.tls.certificate[2] already serves"),
        ];
        assert_eq!(errs.len(), want.len(), "{errs:#?}");
        for (e, w) in errs.iter().zip(&want) {
            assert!(e.starts_with(w.as_str()), "{e:?} should start with {w:?}");
        }
    }
}

//! The edge's TLS material, loaded and checked in one place: the
//! certificates of `[edge.tls]` that the zone's `edge_tls` listener chooses
//! per handshake by the name the client asks for (SNI); `[edge.peer_tls]`,
//! the deployment's edge CA and this edge's certificate, presented to peers
//! on that listener and as a client certificate when forwarding; and each
//! service's `[service.upstream_tls]`, how the edge verifies (and, with a
//! client certificate, authenticates to) its instances.
//!
//! Everything is replaced while the edge runs when the files change. A
//! replacement takes effect for new handshakes only; connections already
//! established keep the session they have. A set of files that does not
//! load (unreadable, expired, key of another certificate…) is refused as a
//! whole and the material in use keeps serving, as a refused config does.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use switchyard_api::tls::PemError;
use switchyard_model::config::{EdgeTls, PeerTls, TlsCertificateFiles};
use switchyard_model::{Config, Service, UpstreamProtocol};

use crate::metrics::{
    CertificateLabels, HandshakeFailureLabels, HandshakeLabels, TlsReloadLabels, UpstreamTlsLabels,
};
use crate::state::Edge;

/// One certificate's files as read in one pass: their paths and contents (or
/// why they could not be read). Two reads compare equal when nothing changed,
/// so the watcher loads only what is new, and the set built from them is
/// built from exactly these bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FilePair {
    /// The config table the pair comes from (`edge.tls.certificate[0]`,
    /// `edge.peer_tls`, `service.NAME.upstream_tls`), for error messages.
    field: String,
    cert_path: PathBuf,
    key_path: PathBuf,
    cert: Result<Vec<u8>, String>,
    key: Result<Vec<u8>, String>,
}

impl FilePair {
    fn read(field: String, files: &TlsCertificateFiles, dir: &Path) -> FilePair {
        let cert_path = dir.join(&files.cert_file);
        let key_path = dir.join(&files.key_file);
        FilePair {
            field,
            cert: read(&cert_path),
            key: read(&key_path),
            cert_path,
            key_path,
        }
    }
}

/// A CA file as read in one pass.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CaFile {
    /// `edge.peer_tls.ca_file`, `service.NAME.upstream_tls.ca_file`.
    field: String,
    path: PathBuf,
    bytes: Result<Vec<u8>, String>,
}

impl CaFile {
    fn read(field: String, file: &str, dir: &Path) -> CaFile {
        let path = dir.join(file);
        CaFile {
            field,
            bytes: read(&path),
            path,
        }
    }
}

fn read(p: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(p).map_err(|e| e.to_string())
}

/// One service's `[service.upstream_tls]` files.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UpstreamFiles {
    service: String,
    ca: CaFile,
    client: Option<FilePair>,
    server_name: Option<String>,
}

/// Every TLS file the config names, read in one pass.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Files {
    /// `[[edge.tls.certificate]]` in order, then `[edge.peer_tls]`'s
    /// certificate: the listener serves it to peers by its server name.
    listener: Vec<FilePair>,
    /// `[edge.peer_tls]`'s CA and server name.
    peer: Option<(CaFile, String)>,
    upstream: Vec<UpstreamFiles>,
}

impl Files {
    /// Reads every file `config` names, relative paths from `dir` (the
    /// config file's folder).
    pub fn read(config: &Config, dir: &Path) -> Files {
        Files::read_parts(
            config.edge.tls.as_ref(),
            config.edge.peer_tls.as_ref(),
            &config.services,
            dir,
        )
    }

    fn read_parts(
        tls: Option<&EdgeTls>,
        peer: Option<&PeerTls>,
        services: &[Service],
        dir: &Path,
    ) -> Files {
        let mut listener: Vec<FilePair> = tls
            .map(|t| t.certificates.as_slice())
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(i, c)| FilePair::read(format!("edge.tls.certificate[{i}]"), c, dir))
            .collect();
        let peer = peer.map(|p| {
            listener.push(FilePair::read("edge.peer_tls".into(), &p.identity, dir));
            (
                CaFile::read("edge.peer_tls.ca_file".into(), &p.ca_file, dir),
                p.server_name.clone(),
            )
        });
        let upstream = services
            .iter()
            .filter_map(|s| {
                let t = s.upstream_tls.as_ref()?;
                let field = format!("service.{}.upstream_tls", s.name);
                Some(UpstreamFiles {
                    service: s.name.clone(),
                    ca: CaFile::read(format!("{field}.ca_file"), &t.ca_file, dir),
                    client: t
                        .client_cert
                        .as_ref()
                        .map(|c| FilePair::read(field.clone(), c, dir)),
                    server_name: t.server_name.clone(),
                })
            })
            .collect();
        Files {
            listener,
            peer,
            upstream,
        }
    }
}

/// What is wrong with one certificate file, named by its config field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct CertError {
    /// `edge.tls.certificate[N].cert_file`, `edge.peer_tls.ca_file`, …
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
    #[error(
        "{path:?} does not name {name:?} (edge.peer_tls.server_name), so no peer edge could verify it"
    )]
    PeerNameMissing { path: String, name: String },
    #[error("{path:?} is not usable: {reason}")]
    Unusable { path: String, reason: String },
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
            CertProblem::PeerNameMissing { .. } => "peer_name_missing",
            CertProblem::Unusable { .. } => "unusable",
        }
    }
}

/// The certificates one listener presents, indexed by the DNS names of their
/// subjectAltName: exact names first, then one-label wildcards (`*.a.test`
/// serves `x.a.test`, not `a.test` nor `y.x.a.test`), then the default.
/// With `[edge.peer_tls]` it also holds the edge CA that client
/// certificates are verified against.
#[derive(Debug)]
pub struct CertSet {
    default: Arc<CertifiedKey>,
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// By the part after `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    names: Vec<String>,
    /// Each certificate file and when it expires (Unix seconds).
    expiry: Vec<(String, i64)>,
    /// The peer CA: a client certificate is asked for (not required) and,
    /// when one is shown, must be signed by it.
    peer_roots: Option<Arc<RootCertStore>>,
}

/// What the client side of the edge speaks TLS with: to one service's
/// instances, or to peer edges.
#[derive(Debug)]
pub struct ClientSide {
    /// ALPN `http/1.1`.
    http1: Arc<rustls::ClientConfig>,
    /// ALPN `h2`: h2c's counterpart over TLS.
    h2: Arc<rustls::ClientConfig>,
    /// Asked for by SNI and verified; `None`: the address connected to.
    pub server_name: Option<ServerName<'static>>,
}

impl ClientSide {
    fn new(
        roots: Arc<RootCertStore>,
        identity: Option<Arc<CertifiedKey>>,
        server_name: Option<&str>,
    ) -> Result<ClientSide, String> {
        let server_name = server_name
            .map(|n| ServerName::try_from(n.to_string()).map_err(|e| format!("{n:?}: {e}")))
            .transpose()?;
        let config = |alpn: &[u8]| -> Result<Arc<rustls::ClientConfig>, String> {
            let b = rustls::ClientConfig::builder_with_provider(switchyard_api::tls::provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots.clone());
            let mut cfg = match &identity {
                Some(id) => b.with_client_cert_resolver(Arc::new(OneIdentity(id.clone()))),
                None => b.with_no_client_auth(),
            };
            cfg.alpn_protocols = vec![alpn.to_vec()];
            Ok(Arc::new(cfg))
        };
        Ok(ClientSide {
            http1: config(b"http/1.1")?,
            h2: config(b"h2")?,
            server_name,
        })
    }

    /// The config for `protocol`: HTTP/1.1 or h2 by ALPN.
    pub fn config(&self, protocol: UpstreamProtocol) -> Arc<rustls::ClientConfig> {
        match protocol {
            UpstreamProtocol::Http1 => self.http1.clone(),
            UpstreamProtocol::H2c => self.h2.clone(),
        }
    }
}

/// Presents one certificate whenever a server asks for one.
#[derive(Debug)]
struct OneIdentity(Arc<CertifiedKey>);

impl ResolvesClientCert for OneIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The client sides in use: per service with `[service.upstream_tls]`, and
/// to peer edges with `[edge.peer_tls]`. Swapped whole on a reload.
#[derive(Debug, Default)]
pub struct ClientSides {
    pub upstream: HashMap<String, Arc<ClientSide>>,
    pub peer: Option<Arc<ClientSide>>,
}

/// Everything one read of the files yields, checked.
#[derive(Debug)]
pub struct Material {
    /// `None` without `[edge.tls]` (no TLS listener).
    pub listener: Option<CertSet>,
    pub clients: ClientSides,
}

impl Material {
    /// Builds everything from `files`, or names every problem at once.
    pub fn build(files: &Files) -> Result<Material, Vec<CertError>> {
        let mut errs = Vec::new();
        let peer_roots = files
            .peer
            .as_ref()
            .and_then(|(ca, _)| load_ca(ca).map_err(|e| errs.push(e)).ok());
        let listener =
            match CertSet::build(&files.listener, files.peer.as_ref(), peer_roots.clone()) {
                Ok(set) => set,
                Err(mut e) => {
                    errs.append(&mut e);
                    None
                }
            };
        let mut clients = ClientSides::default();
        if let (Some(set), Some(roots), Some((_, name))) = (&listener, &peer_roots, &files.peer) {
            let id = set.exact.get(name).cloned();
            match ClientSide::new(roots.clone(), id, Some(name)) {
                Ok(c) => clients.peer = Some(Arc::new(c)),
                Err(reason) => errs.push(CertError {
                    field: "edge.peer_tls".into(),
                    problem: CertProblem::Unusable {
                        path: files
                            .listener
                            .last()
                            .map_or(String::new(), |f| f.cert_path.display().to_string()),
                        reason,
                    },
                }),
            }
        }
        let now = x509_parser::time::ASN1Time::now();
        for u in &files.upstream {
            let roots = load_ca(&u.ca).map_err(|e| errs.push(e)).ok();
            let id = match &u.client {
                None => None,
                Some(pair) => match load_pair(pair, &now) {
                    Ok(l) => Some(l.key),
                    Err((which, problem)) => {
                        errs.push(CertError {
                            field: format!("{}.{which}", pair.field),
                            problem,
                        });
                        continue;
                    }
                },
            };
            let Some(roots) = roots else { continue };
            match ClientSide::new(roots, id, u.server_name.as_deref()) {
                Ok(c) => {
                    clients.upstream.insert(u.service.clone(), Arc::new(c));
                }
                Err(reason) => errs.push(CertError {
                    field: format!("service.{}.upstream_tls", u.service),
                    problem: CertProblem::Unusable {
                        path: u.ca.path.display().to_string(),
                        reason,
                    },
                }),
            }
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        Ok(Material { listener, clients })
    }
}

/// A CA file's certificates as trust anchors.
fn load_ca(f: &CaFile) -> Result<Arc<RootCertStore>, CertError> {
    let path = f.path.display().to_string();
    let err = |p: PemError| CertError {
        field: f.field.clone(),
        problem: CertProblem::Pem(p),
    };
    let bytes = f.bytes.as_ref().map_err(|reason| {
        err(PemError::Read {
            path: path.clone(),
            reason: reason.clone(),
        })
    })?;
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            err(PemError::BadCa {
                path: path.clone(),
                reason: e.to_string(),
            })
        })?;
    if certs.is_empty() {
        return Err(err(PemError::Empty {
            path,
            what: "certificate (-----BEGIN CERTIFICATE-----)",
        }));
    }
    let mut roots = RootCertStore::empty();
    for c in certs {
        roots.add(c).map_err(|e| {
            err(PemError::BadCa {
                path: path.clone(),
                reason: e.to_string(),
            })
        })?;
    }
    Ok(Arc::new(roots))
}

impl CertSet {
    /// Builds the listener's set from `files` (none: no listener), or names
    /// every problem at once. With `peer`, the last pair is the peer
    /// certificate and must name the peer server name.
    fn build(
        files: &[FilePair],
        peer: Option<&(CaFile, String)>,
        peer_roots: Option<Arc<RootCertStore>>,
    ) -> Result<Option<CertSet>, Vec<CertError>> {
        if files.is_empty() {
            return Ok(None);
        }
        let mut errs = Vec::new();
        let mut loaded = Vec::new();
        let now = x509_parser::time::ASN1Time::now();
        for (i, f) in files.iter().enumerate() {
            match load_pair(f, &now) {
                Ok(pair) => loaded.push((i, pair)),
                Err((which, problem)) => errs.push(CertError {
                    field: format!("{}.{which}", f.field),
                    problem,
                }),
            }
        }
        if let Some((_, name)) = peer {
            let last = files.len() - 1;
            if let Some((_, l)) = loaded.iter().find(|(i, _)| *i == last) {
                if !l.dns.iter().any(|d| d == name) {
                    errs.push(CertError {
                        field: "edge.peer_tls.cert_file".into(),
                        problem: CertProblem::PeerNameMissing {
                            path: files[last].cert_path.display().to_string(),
                            name: name.clone(),
                        },
                    });
                }
            }
        }
        let mut exact: HashMap<String, (usize, Arc<CertifiedKey>)> = HashMap::new();
        let mut wildcard = HashMap::new();
        let mut names = Vec::new();
        for (i, Loaded { key, dns, .. }) in &loaded {
            let path = files[*i].cert_path.display().to_string();
            let field = format!("{}.cert_file", files[*i].field);
            if dns.is_empty() && *i != 0 {
                errs.push(CertError {
                    field: field.clone(),
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
                            field: field.clone(),
                            problem: CertProblem::DuplicateName {
                                path: path.clone(),
                                name: name.clone(),
                                other: files[*other].field.clone(),
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
            return Err(Vec::new());
        };
        let strip = |m: HashMap<String, (usize, Arc<CertifiedKey>)>| {
            m.into_iter().map(|(k, (_, v))| (k, v)).collect()
        };
        let expiry = loaded
            .iter()
            .map(|(i, l)| (files[*i].cert_path.display().to_string(), l.not_after))
            .collect();
        Ok(Some(CertSet {
            expiry,
            default: default.clone(),
            exact: strip(exact),
            wildcard: strip(wildcard),
            names,
            peer_roots,
        }))
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

/// TLS 1.2 and 1.3, h2 and http/1.1 by ALPN, certificates from `set`. With
/// a peer CA, a client certificate is asked for but not required, so
/// ordinary clients connect as before and peer edges prove who they are.
fn server_config(set: &Arc<CertSet>) -> Result<rustls::ServerConfig, rustls::Error> {
    let provider = switchyard_api::tls::provider();
    let b = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let b = match &set.peer_roots {
        Some(roots) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| rustls::Error::General(format!("peer CA: {e}")))?;
            b.with_client_cert_verifier(verifier)
        }
        None => b.with_no_client_auth(),
    };
    let mut cfg = b.with_cert_resolver(Arc::new(BySni(set.clone())));
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

/// Every problem of the TLS files `config` names, as `field: problem` (for
/// `switchyard validate`); `dir` is the config file's folder.
pub fn check(config: &Config, dir: &Path) -> Vec<String> {
    match Material::build(&Files::read(config, dir)) {
        Ok(_) => Vec::new(),
        Err(errs) => errs.iter().map(|e| e.to_string()).collect(),
    }
}

/// Loads the TLS material for start-up: every problem, one per line, or
/// the material and the files it was built from.
pub fn load(config: &Config, config_path: &Path) -> anyhow::Result<(Material, Files)> {
    let files = Files::read(config, config_dir(config_path));
    let m = Material::build(&files).map_err(|errs| {
        anyhow::anyhow!(
            "{}: TLS files cannot be used:\n  {}",
            config_path.display(),
            errs.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n  ")
        )
    })?;
    Ok((m, files))
}

/// Reads the TLS files every `poll_interval` and whenever the config is
/// reloaded, and swaps in material that changed and loads; material that
/// does not load is logged and counted once per change, and the old keeps
/// serving. `loaded` are the files in use at start.
pub async fn watch(edge: Arc<Edge>, certs: Option<Arc<Certificates>>, loaded: Files) {
    // The last files tried, loaded or refused: unchanged files are not
    // tried (nor logged) again until they change or a reload asks for it.
    let mut tried = loaded.clone();
    let mut current = loaded;
    loop {
        let poll = edge.snapshot().config.edge.tls.as_ref().map_or(
            Duration::from_millis(switchyard_model::config::DEFAULT_TLS_POLL_INTERVAL_MS),
            |t| t.poll_interval,
        );
        let asked = tokio::select! {
            _ = tokio::time::sleep(poll) => false,
            _ = edge.tls_reload.notified() => true,
        };
        let files = Files::read(&edge.snapshot().config, config_dir(&edge.config_path));
        if files == tried && !asked {
            continue;
        }
        tried = files.clone();
        if files == current {
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
        let refused = |errs: Vec<CertError>| {
            let reasons: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
            tracing::error!(
                ?reasons,
                "new TLS certificates refused; the ones in use keep serving"
            );
            count(
                "refused",
                errs.first().map_or("unknown", |e| e.problem.reason()),
            );
        };
        let m = match Material::build(&files) {
            Ok(m) => m,
            Err(errs) => {
                refused(errs);
                continue;
            }
        };
        // The listener's addresses are fixed at start: a set appearing or
        // going away with no listener to serve it waits for a restart.
        match (&certs, m.listener) {
            (Some(certs), Some(set)) => {
                let names = set.names().to_vec();
                if let Err(e) = certs.swap(set) {
                    tracing::error!(error = %e, "new TLS certificates refused; the ones in use keep serving");
                    count("refused", "config");
                    continue;
                }
                certs.publish_expiry(&edge);
                tracing::info!(?names, "TLS certificates reloaded; new handshakes use them");
            }
            (None, Some(_)) => {
                tracing::warn!("[edge.tls] appeared; the TLS listener starts with the next restart")
            }
            (Some(_), None) | (None, None) => {}
        }
        edge.client_tls.store(Arc::new(m.clients));
        tracing::info!("TLS material reloaded; new connections use it");
        count("accepted", "");
        current = files;
    }
}

/// The peer edge a connection's verified client certificate names: its
/// first DNS name, else its subject. Only a listener with `[edge.peer_tls]`
/// asks for certificates, and rustls ends a handshake whose certificate the
/// peer CA did not sign, so a certificate here is a peer's.
pub fn peer_edge(conn: &rustls::ServerConnection) -> Option<crate::proxy::PeerEdge> {
    let leaf = conn.peer_certificates()?.first()?;
    let name = match x509_parser::parse_x509_certificate(leaf) {
        Ok((_, x)) => x
            .subject_alternative_name()
            .ok()
            .flatten()
            .and_then(|san| {
                san.value.general_names.iter().find_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                    _ => None,
                })
            })
            .unwrap_or_else(|| x.subject().to_string()),
        Err(_) => String::new(),
    };
    Some(crate::proxy::PeerEdge { name })
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

/// Why a handshake with an instance or a peer edge failed, as the `reason`
/// label of `switchyard_upstream_tls_failures_total`.
pub fn upstream_failure_reason(e: &rustls::Error) -> &'static str {
    use rustls::{AlertDescription, CertificateError, Error};
    match e {
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => "unknown_issuer",
        Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => "name_mismatch",
        Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => "expired",
        Error::InvalidCertificate(_) => "bad_certificate",
        // The server wanted a client certificate (TLS 1.3 says so after the
        // handshake, when the first request is sent) or refused ours.
        Error::AlertReceived(AlertDescription::CertificateRequired) => "certificate_required",
        Error::AlertReceived(
            AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown,
        ) => "certificate_refused",
        Error::AlertReceived(_) => "alert_received",
        Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType) => "not_tls",
        Error::NoApplicationProtocol => "no_alpn",
        Error::PeerIncompatible(_) => "incompatible",
        _ => "other",
    }
}

/// Whether a client-side TLS error of this reason, seen after the connect,
/// still means the target never took the request: under TLS 1.3 its verdict
/// on our certificate. `alert_received` and `other` may come mid-exchange
/// (during the connect itself every reason is a handshake failure).
pub fn is_handshake_failure(reason: &str) -> bool {
    !matches!(reason, "alert_received" | "other")
}

/// Counts a failed handshake with an instance (`target = "instance"`) or a
/// peer edge (`"edge"`).
pub fn count_upstream_failure(edge: &Edge, service: &str, target: &str, reason: &str) {
    edge.metrics
        .upstream_tls_failures
        .get_or_create(&UpstreamTlsLabels {
            service: service.into(),
            target: target.into(),
            reason: reason.into(),
        })
        .inc();
}

#[cfg(test)]
mod tests {
    use super::*;
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
        Material::build(&Files::read_parts(Some(t), None, &[], dir))
            .map(|m| m.listener.expect("a listener set"))
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

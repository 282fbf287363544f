//! The etcd store over mutual TLS, against a real etcd started with
//! `--cert-file --key-file --client-cert-auth --trusted-ca-file`: the
//! conformance suite passes with `[control.etcd_tls]` as an operator writes
//! it, and a client without a certificate, or one that does not trust the
//! cluster's CA, is refused.

use std::path::Path;

use switchyard_control::server::check;
use switchyard_control::store::etcd::EtcdStore;
use switchyard_control::store::{conformance, Store, StoreError};
use switchyard_model::ControlTables;
use switchyard_testkit::etcd::{Etcd, EtcdTls};
use switchyard_testkit::TestCa;

/// A CA, etcd's certificate (for 127.0.0.1) and a client certificate for
/// the control plane, all in `dir`.
struct Pki {
    tls: EtcdTls,
    client_cert: String,
    client_key: String,
}

fn pki(dir: &Path) -> Pki {
    let ca = TestCa::new("switchyard etcd test CA");
    let ca_file = ca.write_pem(dir, "ca.pem");
    let (cert, key) = ca
        .server_client_cert(&["127.0.0.1", "localhost"])
        .write_pem(dir, "etcd");
    let (client_cert, client_key) = ca
        .client_cert("switchyard-control")
        .write_pem(dir, "control");
    Pki {
        tls: EtcdTls {
            ca: ca_file,
            cert,
            key,
        },
        client_cert: client_cert.display().to_string(),
        client_key: client_key.display().to_string(),
    }
}

/// `[control.etcd_tls]` read and checked as the control plane does at start.
fn etcd_tls(table: &str) -> Result<rustls::ClientConfig, Vec<String>> {
    let tables = ControlTables {
        etcd_tls: Some(toml::from_str(table).unwrap()),
        ..ControlTables::default()
    };
    check(&tables, Path::new("/")).map(|s| s.etcd_tls.expect("the table is set"))
}

fn store(etcd: &Etcd, tls: Option<rustls::ClientConfig>, prefix: &str) -> EtcdStore {
    EtcdStore::with_tls(vec![etcd.endpoint.clone()], prefix, tls)
}

#[tokio::test]
async fn etcd_passes_the_conformance_suite_over_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let etcd = Etcd::start_tls(&p.tls).await;
    assert!(etcd.endpoint.starts_with("https://"));
    let tls = etcd_tls(&format!(
        "ca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}",
        p.tls.ca.display().to_string(),
        p.client_cert,
        p.client_key
    ))
    .unwrap();
    conformance::run(&store(&etcd, Some(tls), "/switchyard-mtls/")).await;
}

#[tokio::test]
async fn a_client_without_a_certificate_or_the_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let etcd = Etcd::start_tls(&p.tls).await;

    let no_cert = etcd_tls(&format!("ca_file = {:?}", p.tls.ca.display().to_string())).unwrap();
    match store(&etcd, Some(no_cert), "/x/").load().await {
        Err(e @ StoreError::Unavailable(_)) => {
            let m = e.to_string();
            assert!(m.contains(&etcd.endpoint), "names the endpoint: {m}");
            assert!(m.to_lowercase().contains("certificate"), "says why: {m}");
        }
        other => panic!("a client without a certificate must be refused, got {other:?}"),
    }

    // The shipped roots do not know the test CA.
    match store(&etcd, None, "/x/").load().await {
        Err(e @ StoreError::Unavailable(_)) => {
            assert!(e.to_string().contains("UnknownIssuer"), "{e}")
        }
        other => panic!("an unknown issuer must be refused, got {other:?}"),
    }
}

#[test]
fn unusable_tls_files_are_named_with_their_field() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let errs = etcd_tls(&format!(
        "ca_file = \"/nonexistent/ca.pem\"\ncert_file = {:?}",
        p.client_cert
    ))
    .unwrap_err();
    assert!(
        errs.iter()
            .any(|e| e.starts_with("control.etcd_tls.ca_file: ")
                && e.contains("/nonexistent/ca.pem")),
        "{errs:?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.starts_with("control.etcd_tls.key_file: required")),
        "{errs:?}"
    );
    // A key file given as the certificate: no certificate in it.
    let tables = ControlTables {
        tls: Some(
            toml::from_str(&format!(
                "cert_file = {:?}\nkey_file = {:?}",
                p.client_key, p.client_key
            ))
            .unwrap(),
        ),
        ..ControlTables::default()
    };
    let errs = check(&tables, Path::new("/")).err().expect("refused");
    assert!(
        errs.iter().any(|e| e.starts_with("control.tls.cert_file: ")
            && e.contains(&p.client_key)
            && e.contains("no PEM certificate")),
        "{errs:?}"
    );
}

#[test]
fn relative_certificate_paths_are_read_beside_the_config_not_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki(dir.path());
    let name = |f: &str| {
        Path::new(f)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    let tables = ControlTables {
        etcd_tls: Some(
            toml::from_str(&format!(
                "ca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}",
                name(&p.tls.ca.display().to_string()),
                name(&p.client_cert),
                name(&p.client_key)
            ))
            .unwrap(),
        ),
        ..ControlTables::default()
    };
    check(&tables, dir.path()).expect("read from the config's directory");
    let elsewhere = tempfile::tempdir().unwrap();
    let errs = check(&tables, elsewhere.path()).err().expect("not there");
    assert!(
        errs.iter()
            .any(|e| e.starts_with("control.etcd_tls.ca_file: ")
                && e.contains(&elsewhere.path().display().to_string())),
        "{errs:?}"
    );
}

//! TLS beyond the client side (issue 14): the edge speaks TLS, and mTLS,
//! to a service's instances (`[service.upstream_tls]`), and edges forward
//! to each other over mTLS (`[edge.peer_tls]`), so that a request counts as
//! forwarded only when a peer edge's certificate vouches for it.

use std::process::Command;
use std::time::Duration;

use switchyard_testkit::{eventually, TestCa, TlsClient, Topology, FORWARD_SECRET, HOST};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// The value of one counter line of `/metrics`, 0 when absent.
fn counter(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A certificate for every instance of `lab`, by IP address (what the edge
/// verifies when `server_name` is not set), plus `extra` names.
fn instance_cert(ca: &TestCa, lab: &Topology, extra: &[&str]) -> switchyard_testkit::ServerCert {
    let mut names: Vec<String> = lab
        .zones()
        .iter()
        .flat_map(|z| (1..=lab.per_zone).map(move |i| (z.clone(), i)))
        .map(|(z, i)| lab.instance(&z, i).1.ip().to_string())
        .collect();
    names.extend(extra.iter().map(|s| s.to_string()));
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    ca.server_cert(&names)
}

#[tokio::test(flavor = "multi_thread")]
async fn instances_served_over_tls_are_reached_by_http1_and_by_h2_through_alpn() {
    let ca = TestCa::new("instance CA");
    // HTTP/1.1, the instance's IP address verified.
    let lab = Topology::new(BIN, &[("r1", &["a"])])
        .service_toml("[service.upstream_tls]\nca_file = \"instances-ca.pem\"");
    ca.write_pem(lab.dir(), "instances-ca.pem");
    let ups = lab
        .start_tls_upstreams(instance_cert(&ca, &lab, &[]).server_config())
        .await;
    let a = lab.start_edge("a").await;
    for _ in 0..4 {
        let r = a.get("/items/1").send().await.unwrap();
        assert_eq!(r.status, 200, "{r:?}");
    }
    assert!(ups.values().all(|u| u.tls_handshakes() >= 1));
    assert!(ups
        .values()
        .all(|u| u.last_version().is_none_or(|v| v == http::Version::HTTP_11)));
    // Health checks go over TLS as well, and pass.
    for u in ups.keys() {
        eventually(
            "the health checks pass",
            Duration::from_secs(10),
            || async {
                let i = a.instance(u).await;
                (i.check.state == switchyard_api::edge::CheckState::Up)
                    .then_some(())
                    .ok_or(format!("{i:?}"))
            },
        )
        .await;
    }

    // h2c's counterpart over TLS is h2 by ALPN; a name instead of the address.
    let lab = Topology::new(BIN, &[("r1", &["a"])]).service_toml(
        "upstream_protocol = \"h2c\"\n[service.upstream_tls]\nca_file = \"instances-ca.pem\"\nserver_name = \"Instances.Svc.Internal\"",
    );
    ca.write_pem(lab.dir(), "instances-ca.pem");
    let cert = ca.server_cert(&["instances.svc.internal"]);
    let ups = lab.start_tls_upstreams(cert.server_config()).await;
    let a = lab.start_edge("a").await;
    for _ in 0..4 {
        let r = a.get("/items/1").send().await.unwrap();
        assert_eq!(r.status, 200, "{r:?}");
    }
    assert!(
        ups.values()
            .any(|u| u.last_version() == Some(http::Version::HTTP_2)),
        "h2 over TLS"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mtls_to_instances_works_with_the_client_certificate_and_fails_classified_without() {
    let ca = TestCa::new("instance CA");
    let clients = TestCa::new("edge client CA");
    let edge_cert = clients.client_cert("edge.svc.internal");

    let lab = Topology::new(BIN, &[("r1", &["a"])]).service_toml(
        "[service.upstream_tls]\nca_file = \"instances-ca.pem\"\ncert_file = \"edge.crt\"\nkey_file = \"edge.key\"",
    );
    ca.write_pem(lab.dir(), "instances-ca.pem");
    edge_cert.write_pem(lab.dir(), "edge");
    let server = instance_cert(&ca, &lab, &[]).server_config_requiring_client(&clients);
    let _ups = lab.start_tls_upstreams(server.clone()).await;
    let a = lab.start_edge("a").await;
    let r = a.get("/items/1").send().await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");

    // The same instances, an edge with no client certificate.
    let lab = Topology::new(BIN, &[("r1", &["a"])])
        .service_toml("[service.upstream_tls]\nca_file = \"instances-ca.pem\"");
    ca.write_pem(lab.dir(), "instances-ca.pem");
    let server = instance_cert(&ca, &lab, &[]).server_config_requiring_client(&clients);
    let ups = lab.start_tls_upstreams(server).await;
    let a = lab.start_edge("a").await;
    let r = a.get("/items/1").send().await.unwrap();
    assert_eq!(r.status, 502, "{r:?}");
    assert_eq!(
        r.header("x-switchyard-error").as_deref(),
        Some("upstream_connect"),
        "a refused handshake is a connect failure: {r:?}"
    );
    assert!(r.body.contains("TLS handshake"), "{}", r.body);
    assert!(ups.values().all(|u| u.requests() == 0));
    let m = a.metrics().await;
    let series = "switchyard_upstream_tls_handshake_failures_total{service=\"svc\",target=\"instance\",reason=\"certificate_required\"}";
    assert!(counter(&m, series) >= 1.0, "{series} in\n{m}");
    // Retried on the other instance, like a refused connect.
    assert!(
        counter(
            &m,
            "switchyard_retries_total{service=\"svc\",outcome=\"sent\"}"
        ) >= 1.0,
        "{m}"
    );
    // The health checks see it too, and take the instances out of rotation.
    eventually(
        "the health checks fail on TLS",
        Duration::from_secs(10),
        || async {
            let i = a.instance("a-1").await;
            (i.check.last_error.as_deref() == Some("tls: certificate_required"))
                .then_some(())
                .ok_or(format!("{i:?}"))
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_ca_file_is_refused_at_start_naming_the_field_and_the_path() {
    let lab = Topology::new(BIN, &[("r1", &["a"])]).service_toml(
        "[service.upstream_tls]\nca_file = \"garbage.pem\"\ncert_file = \"missing.crt\"\nkey_file = \"missing.key\"",
    );
    std::fs::write(lab.dir().join("garbage.pem"), "not a certificate").unwrap();
    lab.assert_refused(
        "a",
        &[
            "service.svc.upstream_tls.ca_file: ",
            "garbage.pem",
            "service.svc.upstream_tls.cert_file: ",
            "missing.crt",
        ],
    );
    // No insecure default: the CA is required.
    let lab = Topology::new(BIN, &[("r1", &["a"])])
        .service_toml("[service.upstream_tls]\nserver_name = \"not a name\"");
    let out = Command::new(BIN)
        .arg("validate")
        .arg(lab.write_config())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("service.svc.upstream_tls.ca_file: required"),
        "{err}"
    );
    assert!(
        err.contains("service.svc.upstream_tls.server_name: must be a DNS name or an IP address, got \"not a name\""),
        "{err}"
    );
}

/// Two regions whose edges forward to each other over mTLS.
struct PeerLab {
    lab: Topology,
    public: TestCa,
    edges: TestCa,
}

fn peer_lab(secret: bool) -> PeerLab {
    let public = TestCa::new("public CA");
    let edges = TestCa::new("edge CA");
    let mut lab = Topology::new(BIN, &[("r1", &["a"]), ("r2", &["b"])])
        .edge_tls("[[edge.tls.certificate]]\ncert_file = \"shop.crt\"\nkey_file = \"shop.key\"")
        .peer_tls("ca_file = \"edge-ca.pem\"\ncert_file = \"peer.crt\"\nkey_file = \"peer.key\"\nserver_name = \"edges.internal\"");
    if !secret {
        lab = lab.without_forward_secret();
    }
    public
        .server_cert(&["shop.test"])
        .write_pem(lab.dir(), "shop");
    edges.write_pem(lab.dir(), "edge-ca.pem");
    edges
        .server_client_cert(&["edges.internal"])
        .write_pem(lab.dir(), "peer");
    PeerLab { lab, public, edges }
}

/// Where a request was served: `region/zone/instance`.
fn served_by(headers: &http::HeaderMap) -> String {
    headers
        .get("x-switchyard-upstream")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forward_over_mtls_is_trusted_and_the_same_headers_from_anyone_else_are_not() {
    let PeerLab { lab, public, edges } = peer_lab(true);
    let _ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    let b = lab.start_edge("b").await;
    let b_tls = b.listen_tls.unwrap();

    // A request for r2 arriving in r1 is forwarded to b's TLS listener.
    let r = a
        .get("/items/1")
        .header("x-switchyard-home-region", "r2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert!(served_by(&r.headers).starts_with("r2/b/"), "{r:?}");
    let m = b.metrics().await;
    assert!(
        counter(
            &m,
            "switchyard_tls_handshakes_total{version=\"1.3\",alpn=\"http/1.1\"}"
        ) >= 1.0,
        "the forward came over TLS:\n{m}"
    );

    // What a forwarding edge sends, for a user of r1: served where it
    // lands when a peer certificate vouches for it ...
    let forwarded = [
        ("x-switchyard-forwarded", "r1"),
        ("x-switchyard-forward-auth", FORWARD_SECRET),
        ("x-switchyard-home-region", "r1"),
    ];
    let peer = edges.server_client_cert(&["edges.internal"]);
    let mut c = TlsClient::with_client_cert(&edges, &["http/1.1"], &peer)
        .connect(b_tls, "edges.internal")
        .await
        .unwrap();
    let r = c.get_with(HOST, "/items/1", &forwarded).await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        served_by(&r.headers).starts_with("r2/b/"),
        "trusted, so not steered again: {r:?}"
    );

    // ... and steered home like any request when none does: on the TLS
    // listener without a certificate, and on the plain listener.
    let mut c = TlsClient::trusting(&public, &["h2"])
        .connect(b_tls, "shop.test")
        .await
        .unwrap();
    let r = c.get_with(HOST, "/items/1", &forwarded).await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert!(served_by(&r.headers).starts_with("r1/a/"), "{r:?}");
    let mut plain = b.get("/items/1");
    for (k, v) in forwarded {
        plain = plain.header(k, v);
    }
    let r = plain.send().await.unwrap();
    assert!(served_by(&r.headers).starts_with("r1/a/"), "{r:?}");

    // A certificate of another CA does not get through the handshake.
    let impostor_ca = TestCa::new("impostor CA");
    let impostor = impostor_ca.server_client_cert(&["edges.internal"]);
    let refused = match TlsClient::with_client_cert(&edges, &["http/1.1"], &impostor)
        .connect(b_tls, "edges.internal")
        .await
    {
        // TLS 1.3: the server's verdict arrives with the first response.
        Ok(mut c) => c.get_with(HOST, "/items/1", &forwarded).await.err(),
        Err(e) => Some(e),
    };
    assert!(
        refused.is_some(),
        "a certificate of another CA was accepted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn with_peer_tls_and_a_forward_secret_a_peer_certificate_alone_is_not_enough() {
    let PeerLab { lab, edges, .. } = peer_lab(true);
    let _ups = lab.start_upstreams().await;
    let b = lab.start_edge("b").await;
    let peer = edges.server_client_cert(&["edges.internal"]);
    let mut c = TlsClient::with_client_cert(&edges, &["http/1.1"], &peer)
        .connect(b.listen_tls.unwrap(), "edges.internal")
        .await
        .unwrap();
    let _a = lab.start_edge("a").await;
    let r = c
        .get_with(
            HOST,
            "/items/1",
            &[
                ("x-switchyard-forwarded", "r1"),
                ("x-switchyard-home-region", "r1"),
            ],
        )
        .await
        .unwrap();
    assert!(served_by(&r.headers).starts_with("r1/a/"), "{r:?}");

    // Without a forward secret, the certificate is what counts.
    let PeerLab { lab, edges, .. } = peer_lab(false);
    let _ups = lab.start_upstreams().await;
    let b = lab.start_edge("b").await;
    let _a = lab.start_edge("a").await;
    let peer = edges.server_client_cert(&["edges.internal"]);
    let mut c = TlsClient::with_client_cert(&edges, &["http/1.1"], &peer)
        .connect(b.listen_tls.unwrap(), "edges.internal")
        .await
        .unwrap();
    let r = c
        .get_with(
            HOST,
            "/items/1",
            &[
                ("x-switchyard-forwarded", "r1"),
                ("x-switchyard-home-region", "r1"),
            ],
        )
        .await
        .unwrap();
    assert!(served_by(&r.headers).starts_with("r2/b/"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_certificate_replaced_on_disk_is_used_for_new_connections() {
    let ca = TestCa::new("instance CA");
    let clients = TestCa::new("edge client CA");
    let stranger = TestCa::new("another CA");
    let lab = Topology::new(BIN, &[("r1", &["a"])]).service_toml(
        "[service.upstream_tls]\nca_file = \"instances-ca.pem\"\ncert_file = \"edge.crt\"\nkey_file = \"edge.key\"",
    );
    ca.write_pem(lab.dir(), "instances-ca.pem");
    // A certificate the instances do not accept: signed by another CA.
    stranger
        .client_cert("edge.svc.internal")
        .write_pem(lab.dir(), "edge");
    let server = instance_cert(&ca, &lab, &[]).server_config_requiring_client(&clients);
    let _ups = lab.start_tls_upstreams(server).await;
    let a = lab.start_edge("a").await;
    let r = a.get("/items/1").send().await.unwrap();
    assert_eq!(r.status, 502, "{r:?}");
    let m = a.metrics().await;
    let refused = "switchyard_upstream_tls_handshake_failures_total{service=\"svc\",target=\"instance\",reason=\"certificate_refused\"}";
    assert!(counter(&m, refused) >= 1.0, "{refused} in\n{m}");

    // The right one, written aside and renamed over, key first.
    let good = clients.client_cert("edge.svc.internal");
    for (name, text) in [("edge.key", &good.key_pem), ("edge.crt", &good.cert_pem)] {
        let tmp = lab.dir().join(format!("{name}.new"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, lab.dir().join(name)).unwrap();
    }
    eventually(
        "requests succeed with the new certificate",
        Duration::from_secs(10),
        || async {
            let r = a.get("/items/1").send().await.map_err(|e| e.to_string())?;
            (r.status == 200).then_some(()).ok_or(format!("{r:?}"))
        },
    )
    .await;
    let m = a.metrics().await;
    assert!(
        counter(
            &m,
            "switchyard_tls_reloads_total{result=\"accepted\",reason=\"\"}"
        ) >= 1.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_reload_turns_on_upstream_tls_for_running_instances() {
    let ca = TestCa::new("instance CA");
    let lab = Topology::new(BIN, &[("r1", &["a"])]);
    let mut ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    assert_eq!(a.get("/items/1").send().await.unwrap().status, 200);

    // The instances move to TLS; the config follows, reloaded at once.
    let cert = instance_cert(&ca, &lab, &[]);
    for u in ups.values_mut() {
        u.stop().await;
        *u = switchyard_testkit::Upstream::start_tls(&u.name.clone(), u.addr, cert.server_config())
            .await;
    }
    ca.write_pem(lab.dir(), "instances-ca.pem");
    let lab = lab.service_toml("[service.upstream_tls]\nca_file = \"instances-ca.pem\"");
    lab.write_config();
    let r = switchyard_testkit::Req::post(lab.admin_addr("a"), "/reload")
        .bearer(switchyard_testkit::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    let r = a.get("/items/1").send().await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert!(ups.values().any(|u| u.tls_handshakes() >= 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plain_http_instance_behind_upstream_tls_is_a_classified_connect_failure() {
    let ca = TestCa::new("instance CA");
    let lab = Topology::new(BIN, &[("r1", &["a"])])
        .service_toml("[service.upstream_tls]\nca_file = \"instances-ca.pem\"");
    ca.write_pem(lab.dir(), "instances-ca.pem");
    let ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    let r = a.get("/items/1").send().await.unwrap();
    assert_eq!(r.status, 502, "{r:?}");
    assert_eq!(
        r.header("x-switchyard-error").as_deref(),
        Some("upstream_connect")
    );
    assert!(ups.values().all(|u| u.requests() == 0));
    let m = a.metrics().await;
    let series = "switchyard_upstream_tls_handshake_failures_total{service=\"svc\",target=\"instance\",reason=\"not_tls\"}";
    assert!(counter(&m, series) >= 1.0, "{series} in\n{m}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_whose_certificate_the_edge_ca_did_not_sign_is_never_forwarded_to() {
    let PeerLab { lab, .. } = peer_lab(true);
    // r1 forwards to r2 through an address where an impostor listens with
    // a certificate for the right name from another CA.
    let impostor = TestCa::new("impostor CA").server_cert(&["edges.internal"]);
    let via = lab.aux_addr(9);
    let impostor_server =
        switchyard_testkit::Upstream::start_tls("impostor", via, impostor.server_config()).await;
    let text = lab.config_text().replacen(
        "[[region]]\nname = \"r1\"\n",
        &format!("[[region]]\nname = \"r1\"\nforward_via = {{ r2 = [\"{via}\"] }}\n"),
        1,
    );
    let cfg = lab.dir().join("via.toml");
    std::fs::write(&cfg, text).unwrap();
    let _ups = lab.start_upstreams().await;
    let a = switchyard_testkit::EdgeProcess::start(
        lab.bin(),
        &cfg,
        "a",
        lab.edge_addr("a"),
        lab.admin_addr("a"),
        lab.dir(),
    )
    .await;

    // The handshake fails on the peer's certificate: nothing is sent, and
    // with no other way to r2 the request is served here (failing open).
    let r = a
        .get("/items/1")
        .header("x-switchyard-home-region", "r2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert!(served_by(&r.headers).starts_with("r1/a/"), "{r:?}");
    assert_eq!(impostor_server.requests(), 0);
    let m = a.metrics().await;
    let series = "switchyard_upstream_tls_handshake_failures_total{service=\"svc\",target=\"edge\",reason=\"unknown_issuer\"}";
    assert!(counter(&m, series) >= 1.0, "{series} in\n{m}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_certificate_that_does_not_name_the_peer_server_name_is_refused_at_start() {
    let PeerLab { lab, edges, .. } = peer_lab(true);
    edges
        .server_client_cert(&["other.internal"])
        .write_pem(lab.dir(), "peer");
    std::fs::write(lab.dir().join("edge-ca.pem"), "").unwrap();
    lab.assert_refused(
        "a",
        &[
            "edge.peer_tls.cert_file: ",
            "peer.crt\" does not name \"edges.internal\"",
            "edge.peer_tls.ca_file: ",
            "edge-ca.pem\" holds no PEM certificate",
        ],
    );
}

//! The edge terminates TLS on each zone's `edge_tls` listener: a certificate
//! per server name, h2 or HTTP/1.1 by ALPN, certificates replaced on disk
//! while clients keep going, and a bad certificate refused with its reason,
//! at start and on reload, with the old one still serving.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchyard_testkit::{eventually, sample, TestCa, TlsClient, Topology, HOST};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// `[edge.tls]` with one `[[edge.tls.certificate]]` per `NAME.crt`/`NAME.key`
/// pair, by paths relative to the config file.
fn certificates(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| {
            format!("[[edge.tls.certificate]]\ncert_file = \"{n}.crt\"\nkey_file = \"{n}.key\"\n")
        })
        .collect()
}

/// Replaces a file the way deployment tools do: written aside, renamed over.
fn replace(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn each_server_name_gets_its_certificate_and_alpn_picks_the_protocol() {
    let ca = TestCa::new("edge tls test CA");
    let lab = Topology::new(BIN, &[("r1", &["a"])])
        .edge_tls(&certificates(&["shop", "api"]))
        .edge_toml("client_header_timeout_ms = 1000");
    let tls_ip = lab.edge_tls_addr("a").ip().to_string();
    // The first is the default: it also names the listener's address, for
    // clients that connect by IP and so send no server name.
    let shop = ca.server_cert(&["shop.test", &tls_ip]);
    let api = ca.server_cert(&["api.test", "*.api.test"]);
    shop.write_pem(lab.dir(), "shop");
    api.write_pem(lab.dir(), "api");
    let _ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    let addr = a.listen_tls.expect("a TLS listener");

    let h2 = TlsClient::trusting(&ca, &["h2", "http/1.1"]);
    for (name, want) in [
        ("shop.test", &shop),
        ("api.test", &api),
        ("eu.api.test", &api),
        (tls_ip.as_str(), &shop),
    ] {
        let mut c = h2.connect(addr, name).await.unwrap();
        assert!(&c.peer == want.der(), "{name} got another certificate");
        assert_eq!(c.alpn.as_deref(), Some(&b"h2"[..]), "{name}");
        let r = c.get(HOST, "/items/1").await.unwrap();
        assert_eq!(r.status, 200, "{name}: {r:?}");
        assert_eq!(r.version, http::Version::HTTP_2);
    }
    let h1 = TlsClient::trusting(&ca, &["http/1.1"]);
    let mut c = h1.connect(addr, "api.test").await.unwrap();
    assert_eq!(c.alpn.as_deref(), Some(&b"http/1.1"[..]));
    let r = c.get(HOST, "/items/1").await.unwrap();
    assert_eq!(
        (r.status, r.version),
        (200, http::Version::HTTP_11),
        "{r:?}"
    );
    // Several requests on one connection.
    let r = c.get(HOST, "/items/2").await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    // TLS 1.2 as well.
    let mut c = TlsClient::tls12_only(&ca, &["h2", "http/1.1"])
        .connect(addr, "api.test")
        .await
        .unwrap();
    assert!(&c.peer == api.der());
    assert_eq!(c.get(HOST, "/items/1").await.unwrap().status, 200);
    // A client that offers no ALPN speaks HTTP/1.1.
    let mut c = TlsClient::trusting(&ca, &[])
        .connect(addr, "shop.test")
        .await
        .unwrap();
    assert_eq!(c.alpn, None);
    assert_eq!(c.get(HOST, "/items/1").await.unwrap().status, 200);

    // A client that opens TCP and never starts the handshake is closed by
    // the header timeout, and so is one speaking plain HTTP to the TLS port.
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET /items/1 HTTP/1.1\r\nhost: svc.test\r\n\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
        .await
        .expect("the edge closes a connection that never shakes hands");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    assert!(started.elapsed() >= Duration::from_millis(700));
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut rest)).await;
    assert!(!String::from_utf8_lossy(&rest).contains("200 OK"));

    let m = a.metrics().await;
    for (series, at_least) in [
        (
            "switchyard_tls_handshakes_total{version=\"1.3\",alpn=\"h2\"}",
            4.0,
        ),
        (
            "switchyard_tls_handshakes_total{version=\"1.3\",alpn=\"http/1.1\"}",
            1.0,
        ),
        (
            "switchyard_tls_handshakes_total{version=\"1.3\",alpn=\"none\"}",
            1.0,
        ),
        (
            "switchyard_tls_handshakes_total{version=\"1.2\",alpn=\"h2\"}",
            1.0,
        ),
        (
            "switchyard_tls_handshake_failures_total{reason=\"timeout\"}",
            1.0,
        ),
        (
            "switchyard_tls_handshake_failures_total{reason=\"not_tls\"}",
            1.0,
        ),
    ] {
        assert!(sample(&m, series) >= at_least, "{series} in\n{m}");
    }
    let expiry = m
        .lines()
        .find(|l| {
            l.starts_with("switchyard_tls_certificate_expiry_seconds{") && l.contains("api.crt")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<i64>().ok())
        .unwrap_or_else(|| panic!("no expiry of api.crt in\n{m}"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(expiry > now + 86_400, "{expiry}");
    // The plain listener still speaks plain HTTP.
    assert_eq!(a.get("/items/1").send().await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_replaced_on_disk_under_load_fails_no_request() {
    let ca = TestCa::new("edge tls test CA");
    let lab = Topology::new(BIN, &[("r1", &["a"])]).edge_tls(&certificates(&["shop"]));
    let old = ca.server_cert(&["shop.test"]);
    old.write_pem(lab.dir(), "shop");
    let _ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    let addr = a.listen_tls.unwrap();
    let client = TlsClient::trusting(&ca, &["h2", "http/1.1"]);

    // One connection opened before the swap and used throughout it.
    let mut long = client.connect(addr, "shop.test").await.unwrap();
    assert!(&long.peer == old.der());

    // Load: four clients, h2 and HTTP/1.1, each opening a new connection
    // every five requests and recording which certificate it was shown.
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let mut load = Vec::new();
    for i in 0..4 {
        let alpn: &[&str] = if i % 2 == 0 { &["h2"] } else { &["http/1.1"] };
        let client = TlsClient::trusting(&ca, alpn);
        let (stop, seen, failures) = (stop.clone(), seen.clone(), failures.clone());
        load.push(tokio::spawn(async move {
            let mut sent = 0;
            while !stop.load(Ordering::Relaxed) {
                let mut c = match client.connect(addr, "shop.test").await {
                    Ok(c) => c,
                    Err(e) => {
                        failures.lock().unwrap().push(e);
                        continue;
                    }
                };
                seen.lock().unwrap().push(c.peer.clone());
                for _ in 0..5 {
                    match c.get(HOST, "/items/1").await {
                        Ok(r) if r.status == 200 => sent += 1,
                        Ok(r) => failures.lock().unwrap().push(format!("{r:?}")),
                        Err(e) => failures.lock().unwrap().push(e),
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            sent
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let new = ca.server_cert(&["shop.test"]);
    replace(&lab.dir().join("shop.key"), &new.key_pem);
    replace(&lab.dir().join("shop.crt"), &new.cert_pem);
    eventually(
        "new connections get the new certificate",
        Duration::from_secs(10),
        || async {
            let c = client.connect(addr, "shop.test").await?;
            (&c.peer == new.der())
                .then_some(())
                .ok_or("still the old one".to_string())
        },
    )
    .await;
    // The connection from before the swap keeps going.
    let r = long.get(HOST, "/items/1").await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut sent = 0;
    for t in load {
        sent += t.await.unwrap();
    }
    let failures = std::mem::take(&mut *failures.lock().unwrap());
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );
    assert!(sent > 100, "only {sent} requests sent");
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert!(seen.iter().any(|c| c == old.der()));
    assert!(seen.iter().any(|c| c == new.der()));
    let m = a.metrics().await;
    assert!(
        sample(
            &m,
            "switchyard_tls_reloads_total{result=\"accepted\",reason=\"\"}"
        ) >= 1.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_certificate_is_refused_at_start_and_on_reload_the_old_one_keeps_serving() {
    let ca = TestCa::new("edge tls test CA");
    let lab = Topology::new(BIN, &[("r1", &["a"])]).edge_tls(&certificates(&["shop", "old"]));
    let shop = ca.server_cert(&["shop.test"]);
    let other = ca.server_cert(&["other.test"]);
    let (_, shop_key) = shop.write_pem(lab.dir(), "shop");
    // The key of another certificate, and an expired certificate.
    std::fs::write(&shop_key, &other.key_pem).unwrap();
    ca.expired_server_cert(&["old.test"])
        .write_pem(lab.dir(), "old");
    lab.assert_refused(
        "a",
        &[
            "edge.tls.certificate[0].key_file: ",
            "shop.key",
            "is not usable with the certificate in",
            "edge.tls.certificate[1].cert_file: ",
            "old.crt",
            "expired at",
        ],
    );

    // Good files: the edge starts and serves.
    shop.write_pem(lab.dir(), "shop");
    ca.server_cert(&["old.test"]).write_pem(lab.dir(), "old");
    let _ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    let addr = a.listen_tls.unwrap();
    let client = TlsClient::trusting(&ca, &["h2", "http/1.1"]);
    let mut before = client.connect(addr, "shop.test").await.unwrap();

    // A bad replacement is refused with its reason; the old one keeps
    // serving new and established connections.
    replace(&shop_key, &other.key_pem);
    eventually(
        "the refusal is counted",
        Duration::from_secs(10),
        || async {
            let m = a.metrics().await;
            (sample(
                &m,
                "switchyard_tls_reloads_total{result=\"refused\",reason=\"key_mismatch\"}",
            ) >= 1.0)
                .then_some(())
                .ok_or(m)
        },
    )
    .await;
    assert!(
        a.log().contains("new TLS certificates refused")
            && a.log().contains("edge.tls.certificate[0].key_file"),
        "{}",
        a.log()
    );
    let mut after = client.connect(addr, "shop.test").await.unwrap();
    assert!(&after.peer == shop.der());
    assert_eq!(after.get(HOST, "/items/1").await.unwrap().status, 200);
    assert_eq!(before.get(HOST, "/items/1").await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reads_the_certificates_at_once() {
    let ca = TestCa::new("edge tls test CA");
    // Polled once an hour: only the signal can bring the new certificate in.
    let lab = Topology::new(BIN, &[("r1", &["a"])]).edge_tls(&format!(
        "poll_interval_ms = 3600000\n{}",
        certificates(&["shop"])
    ));
    let old = ca.server_cert(&["shop.test"]);
    old.write_pem(lab.dir(), "shop");
    let _ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    let addr = a.listen_tls.unwrap();
    let client = TlsClient::trusting(&ca, &["h2"]);

    let new = ca.server_cert(&["shop.test"]);
    replace(&lab.dir().join("shop.key"), &new.key_pem);
    replace(&lab.dir().join("shop.crt"), &new.cert_pem);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let c = client.connect(addr, "shop.test").await.unwrap();
    assert!(&c.peer == old.der(), "reloaded without being asked");

    let hup = Command::new("kill")
        .args(["-HUP", &a.pid().unwrap().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    eventually(
        "new connections get the new certificate",
        Duration::from_secs(5),
        || async {
            let mut c = client.connect(addr, "shop.test").await?;
            if &c.peer != new.der() {
                return Err("still the old one".into());
            }
            let r = c.get(HOST, "/items/1").await?;
            (r.status == 200).then_some(()).ok_or(format!("{r:?}"))
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_waiting_for_a_handshake_count_against_the_connection_limits() {
    let ca = TestCa::new("edge tls test CA");
    let lab = Topology::new(BIN, &[("r1", &["a"])])
        .edge_tls(&certificates(&["shop"]))
        .edge_toml("max_client_connections = 100\nmax_connections_per_client = 2");
    ca.server_cert(&["shop.test"]).write_pem(lab.dir(), "shop");
    let _ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    let addr = a.listen_tls.unwrap();
    let client = TlsClient::trusting(&ca, &["h2"]);

    // Two connections that never start a handshake take this client's places.
    let _held = [
        tokio::net::TcpStream::connect(addr).await.unwrap(),
        tokio::net::TcpStream::connect(addr).await.unwrap(),
    ];
    eventually("both are held", Duration::from_secs(5), || async {
        let m = a.metrics().await;
        (sample(&m, "switchyard_client_connections{listener=\"proxy\"}") >= 2.0)
            .then_some(())
            .ok_or(m)
    })
    .await;
    let refused = client.connect(addr, "shop.test").await;
    assert!(refused.is_err(), "a third connection got through");
    let m = a.metrics().await;
    assert!(
        sample(
            &m,
            "switchyard_connections_refused_total{listener=\"proxy_tls\",limit=\"per_client\"}"
        ) >= 1.0,
        "{m}"
    );
    // The places are shared with the plain listener, which answers a
    // refused connection 503 before it reads anything.
    let mut plain = tokio::net::TcpStream::connect(a.listen).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn instances_are_told_the_scheme_the_client_spoke_and_a_client_cannot_claim_it() {
    let ca = TestCa::new("edge tls proto CA");
    let lab = Topology::new(BIN, &[("r1", &["a"])]).edge_tls(&certificates(&["shop"]));
    let tls_ip = lab.edge_tls_addr("a").ip().to_string();
    ca.server_cert(&["shop.test", &tls_ip])
        .write_pem(lab.dir(), "shop");
    let ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    let seen = |want: &str| {
        ups.values()
            .filter_map(|u| u.last_header("x-forwarded-proto"))
            .any(|v| v == want)
    };
    let mut c = TlsClient::trusting(&ca, &["http/1.1"])
        .connect(a.listen_tls.unwrap(), "shop.test")
        .await
        .unwrap();
    assert_eq!(c.get(HOST, "/items/1").await.unwrap().status, 200);
    assert!(seen("https"), "the instance hears https");
    // A plain request claiming https is told what it spoke.
    for u in ups.values() {
        u.clear_last_headers();
    }
    let r = a
        .get("/items/1")
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(
        seen("http") && !seen("https"),
        "the client's claim is replaced"
    );
}

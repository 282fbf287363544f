//! The tools `scripts/bench-proxies` measures with are honest: a backend's
//! `--capacity` is a real limit (requests past it wait their turn), it
//! streams and swallows bodies of any size, and `switchyard load` speaks
//! HTTPS to a TLS-terminating edge over keep-alive connections and reports
//! successes apart from failures.

use std::time::{Duration, Instant};

use switchyard_testkit::bench::load;
use switchyard_testkit::{BackendProcess, Req, TestCa, Topology, HOST};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

#[tokio::test(flavor = "multi_thread")]
async fn requests_past_the_capacity_wait_for_a_slot() {
    let lab = Topology::new(BIN, &[("r1", &["a"])]);
    let b = BackendProcess::start(
        BIN.as_ref(),
        lab.aux_addr(5),
        lab.dir(),
        &["--capacity", "3", "--service-ms", "500"],
    )
    .await;
    // Five at once against three slots of 500 ms: three are served at
    // once, the last two only when those are done (at about 1 s; the
    // bounds leave 200 ms for a busy machine to start them all).
    let sends = (0..5).map(|_| async {
        let t = Instant::now();
        let r = Req::get(b.addr, "/items/1").send().await.unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        t.elapsed()
    });
    let mut took = futures_util::future::join_all(sends).await;
    took.sort();
    let ms: Vec<u128> = took.iter().map(Duration::as_millis).collect();
    assert!(
        ms.iter().all(|&m| m >= 495),
        "every request is served for 500 ms: {ms:?}"
    );
    assert!(ms[2] < 800, "three fit in the capacity: {ms:?}");
    assert!(
        ms[3] >= 800 && ms[4] >= 800,
        "two waited for a slot: {ms:?}"
    );

    // `/health` does not queue behind the service work.
    let addr = b.addr;
    let slow = tokio::spawn(async move {
        futures_util::future::join_all((0..3).map(|_| Req::get(addr, "/x").send())).await;
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t = Instant::now();
    let h = Req::get(addr, "/health").send().await.unwrap();
    assert_eq!(h.status, 200);
    assert!(
        t.elapsed() < Duration::from_millis(400),
        "/health took {:?} while every slot was busy for 500 ms",
        t.elapsed()
    );
    slow.await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_backend_streams_downloads_and_counts_uploads() {
    let lab = Topology::new(BIN, &[("r1", &["a"])]);
    let b = BackendProcess::start(BIN.as_ref(), lab.aux_addr(6), lab.dir(), &[]).await;
    let r = Req::get(b.addr, "/bytes/3000001").send().await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 3_000_001);
    assert_eq!(r.header("content-length").as_deref(), Some("3000001"));
    let r = Req::put(b.addr, "/upload")
        .body(vec![7u8; 2_000_000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.json()["received"], 2_000_000, "{r:?}");
    let r = Req::get(b.addr, "/bytes/lots").send().await.unwrap();
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"].as_str().unwrap().contains("\"lots\""),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn open_loop_reports_successes_apart_from_errors() {
    let lab = Topology::new(BIN, &[("r1", &["a"])]);
    let b = BackendProcess::start(
        BIN.as_ref(),
        lab.aux_addr(7),
        lab.dir(),
        &["--error-percent", "50", "--delay-ms", "20"],
    )
    .await;
    let addr = b.addr.to_string();
    let r = load(
        BIN.as_ref(),
        &["--target", &addr, "--rate", "200", "--duration", "1"],
    )
    .await
    .unwrap();
    let n = |k: &str| r[k].as_u64().unwrap_or_else(|| panic!("{k} in {r}"));
    assert_eq!(n("requests"), 200, "{r}");
    assert_eq!(n("ok") + n("errors"), 200, "{r}");
    assert!(n("ok") > 50 && n("errors") > 50, "about half fail: {r}");
    assert_eq!(n("timeouts"), 0, "{r}");
    let status = |c: &str| r["statuses"][c].as_u64().unwrap_or(0);
    assert_eq!(
        (status("200"), status("500")),
        (n("ok"), n("errors")),
        "{r}"
    );
    assert!(r["ok_p99_ms"].as_f64().unwrap() >= 20.0, "{r}");
}

#[tokio::test(flavor = "multi_thread")]
async fn load_speaks_https_to_a_tls_edge_over_keep_alive_connections() {
    let ca = TestCa::new("bench CA");
    let other = TestCa::new("a CA nobody trusts");
    let lab = Topology::new(BIN, &[("r1", &["a"])]).edge_tls(
        "[[edge.tls.certificate]]\ncert_file = \"bench.crt\"\nkey_file = \"bench.key\"\n",
    );
    ca.server_cert(&[HOST]).write_pem(lab.dir(), "bench");
    let ca_file = ca.write_pem(lab.dir(), "ca.pem");
    let other_file = other.write_pem(lab.dir(), "other.pem");
    let _ups = lab.start_upstreams().await;
    let edge = lab.start_edge("a").await;
    let target = edge.listen_tls.expect("a TLS listener").to_string();
    let tls = |ca: &std::path::Path| {
        [
            "--target".to_string(),
            target.clone(),
            "--host".into(),
            HOST.into(),
            "--tls".into(),
            "--tls-ca".into(),
            ca.display().to_string(),
        ]
    };
    let run = |ca: &std::path::Path, extra: &[&str]| {
        let args: Vec<String> = tls(ca)
            .into_iter()
            .chain(extra.iter().map(|s| s.to_string()))
            .collect();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            load(BIN.as_ref(), &args).await.unwrap()
        }
    };
    let n = |r: &serde_json::Value, k: &str| r[k].as_u64().unwrap_or_else(|| panic!("{k} in {r}"));

    let closed = run(&ca_file, &["--connections", "4", "--duration", "1"]).await;
    assert_eq!(closed["tls"], true, "{closed}");
    assert!(n(&closed, "ok") > 20, "{closed}");
    assert_eq!(n(&closed, "errors"), 0, "{closed}");
    assert_eq!(
        n(&closed, "connections_opened"),
        4,
        "one handshake per connection: {closed}"
    );

    let open = run(&ca_file, &["--rate", "50", "--duration", "1"]).await;
    assert_eq!((n(&open, "ok"), n(&open, "errors")), (50, 0), "{open}");
    // A warm-up is sent but not counted.
    let warm = run(
        &ca_file,
        &["--rate", "50", "--duration", "1", "--warmup", "0.5"],
    )
    .await;
    assert_eq!((n(&warm, "ok"), n(&warm, "errors")), (50, 0), "{warm}");
    let answered: u64 = warm["statuses"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(answered, 50, "{warm}");
    assert!(warm["duration_s"].as_f64().unwrap() < 1.4, "{warm}");

    let fresh = run(
        &ca_file,
        &[
            "--connections",
            "2",
            "--duration",
            "1",
            "--new-connection-per-request",
        ],
    )
    .await;
    assert!(n(&fresh, "ok") > 2, "{fresh}");
    assert!(
        n(&fresh, "connections_opened") >= n(&fresh, "ok"),
        "a handshake per request: {fresh}"
    );

    // Trusting only another CA, nothing gets through: the client checks.
    let refused = run(&other_file, &["--connections", "2", "--duration", "0.5"]).await;
    assert_eq!(n(&refused, "ok"), 0, "{refused}");
    assert!(n(&refused, "errors") > 0, "{refused}");

    let metrics = edge.metrics().await;
    assert!(
        metrics.contains("switchyard_tls_handshakes_total{"),
        "the edge terminated TLS: {metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edge_without_observation_serves_and_records_nothing_per_request() {
    let lab = Topology::new(BIN, &[("r1", &["a"])]).instances_per_zone(1);
    let ups = lab.start_upstreams().await;
    let a = lab.start_edge_with("a", &["--without-observation"]).await;
    for _ in 0..5 {
        assert_eq!(a.get("/items/1").send().await.unwrap().status, 200);
    }
    ups["a-1"].set_status(500);
    for _ in 0..3 {
        assert_eq!(a.get("/items/1").send().await.unwrap().status, 500);
    }
    let m = a.metrics().await;
    for series in [
        "switchyard_requests_total{",
        "switchyard_request_duration_seconds_bucket{",
        "switchyard_upstream_errors_total{",
    ] {
        assert!(!m.contains(series), "{series} recorded: {m}");
    }
    // Signals are cut every second: wait for two cuts, then none may hold
    // a request.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let snaps = Req::get(a.admin, "/signals/recent")
        .send()
        .await
        .unwrap()
        .json();
    let requests: u64 = snaps
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["series"].as_array().unwrap().clone())
        .map(|s| s["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(requests, 0, "{snaps}");
    assert!(a.log().contains("observation off"), "{}", a.log());
}

/// `scripts/bench-dns` compares like with like: NSD, Knot and BIND, started
/// from the zone file it writes, answer every query of its mix exactly as
/// `switchyard dns` answers it from the config (rcode, flags, records,
/// TTLs, the SOA), and a client subnet moves Switchyard's answer to the
/// other region. Only the check: the measuring runs (half a minute of two
/// saturated cores even with `--quick`) would slow every test beside them,
/// and their numbers are not a pass or a fail.
#[test]
fn the_dns_benchmarks_servers_answer_its_queries_alike() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/bench-dns");
    let out = std::process::Command::new("python3")
        .args([script, "--check-only", "--bin", BIN])
        .output()
        .expect("python3 runs the script");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench-dns --check-only: {stderr}");
    assert!(
        stderr.contains("every server answers the query mix alike"),
        "{stderr}"
    );
}

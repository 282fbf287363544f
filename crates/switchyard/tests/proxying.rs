//! The proxy's contract with clients and instances: protocols, headers,
//! limits, and a JSON answer naming the reason for every failure.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use switchyard_testkit::{eventually, Req, Topology};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

async fn raw(addr: std::net::SocketAddr, request: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_a_status_and_a_json_reason() {
    let lab = Topology::new(BIN, &[("r1", &["a"])])
        .edge_toml("max_body_bytes = 1024\nmax_header_bytes = 4096");
    let _ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;

    let r = Req::get(a.listen, "/")
        .host("nobody.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "unknown_service");
    assert!(r.json()["reason"].as_str().unwrap().contains("nobody.test"));

    let r = a
        .put("/items/1")
        .body(vec![b'x'; 2000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"], "payload_too_large");

    let r = a
        .get("/items/1")
        .header("x-big", &"y".repeat(6000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 431);
    assert_eq!(r.json()["error"], "headers_too_large");

    let r = raw(a.listen, "GET /items/1 HTTP/1.0\r\n\r\n").await;
    assert!(
        r.starts_with("HTTP/1.0 400") || r.starts_with("HTTP/1.1 400"),
        "{r}"
    );
    assert!(r.contains("\"error\":\"bad_request\""), "{r}");

    let r = raw(a.listen, "THIS IS NOT HTTP\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_failures_map_to_502_and_504_by_cause() {
    let lab = Topology::new(BIN, &[("r1", &["a"])])
        .instances_per_zone(1)
        .min_healthy(0.01)
        .service_toml("[service.timeouts]\nheader_ms = 300\ntotal_ms = 1000\n");
    let mut ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    ups["a-1"].set_delay(Duration::from_millis(800));
    let r = a.get("/items/1").send().await.unwrap();
    assert_eq!(r.status, 504, "{}", r.body);
    assert_eq!(r.json()["error"], "upstream_timeout");
    ups.get_mut("a-1").unwrap().stop().await;
    let r = a.get("/items/1").send().await.unwrap();
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(r.json()["error"], "upstream_connect");
    assert!(r.json()["reason"]
        .as_str()
        .unwrap()
        .contains(&ups["a-1"].addr.to_string()));
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarding_headers_are_passed_on_and_every_answer_names_its_server() {
    let lab = Topology::new(BIN, &[("r1", &["a"])]).instances_per_zone(1);
    let ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = a
        .get("/items/1")
        .header("traceparent", tp)
        .header("x-forwarded-for", "10.9.8.7")
        .send()
        .await
        .unwrap();
    assert_eq!(r.upstream(), "r1/a/a-1");
    let up = &ups["a-1"];
    assert_eq!(up.last_header("traceparent").as_deref(), Some(tp));
    assert_eq!(
        up.last_header("x-forwarded-for").as_deref(),
        Some("10.9.8.7, 127.0.0.1")
    );
    assert_eq!(up.last_header("host").as_deref(), Some("svc.test"));
    // Without one, the edge starts a trace.
    a.get("/items/1").send().await.unwrap();
    let started = up.last_header("traceparent").unwrap();
    assert_eq!(started.len(), 55, "{started}");
    assert!(started.starts_with("00-"));
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_cleartext_clients_are_served() {
    let lab = Topology::new(BIN, &[("r1", &["a"])]);
    let _ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let req = http::Request::get(format!("http://{}/items/1", a.listen))
        .header("host", "svc.test")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["x-switchyard-upstream"]
        .to_str()
        .unwrap()
        .starts_with("r1/a/"));
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("a-"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_protocol_is_told_right_when_the_first_bytes_arrive_in_pieces() {
    let lab = Topology::new(BIN, &[("r1", &["a"])]);
    let _ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    // Each first piece is also the start of the h2 preface, so the edge
    // cannot tell the protocol from it and must wait for the rest.
    let mut s = tokio::net::TcpStream::connect(a.listen).await.unwrap();
    s.write_all(b"P").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.write_all(
        b"UT /items/1 HTTP/1.1\r\nHost: svc.test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");

    // The h2 preface in two pieces, then an empty SETTINGS frame: the edge
    // answers with its own SETTINGS frame (type 4), not an HTTP/1 error.
    let mut s = tokio::net::TcpStream::connect(a.listen).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.write_all(b"\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let mut frame = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut frame))
        .await
        .expect("the edge answered")
        .unwrap();
    assert_eq!(frame[3], 4, "not a SETTINGS frame: {frame:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_and_per_second_signals_describe_the_traffic() {
    let lab = Topology::new(BIN, &[("r1", &["a"])]).instances_per_zone(1);
    let ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    for _ in 0..5 {
        a.get("/items/1").send().await.unwrap();
    }
    ups["a-1"].set_status(500);
    a.get("/items/1").send().await.unwrap();
    let m = a.metrics().await;
    assert!(m.contains("switchyard_requests_total{service=\"svc\",route_kind=\"read\",zone=\"a\",instance=\"a-1\",code=\"2xx\"} 5"), "{m}");
    assert!(
        m.contains("switchyard_request_duration_seconds_bucket{"),
        "{m}"
    );
    assert!(m.contains("switchyard_upstream_errors_total{service=\"svc\",zone=\"a\",instance=\"a-1\",class=\"status_5xx\"} 1"), "{m}");
    eventually(
        "a signal snapshot holds the requests",
        Duration::from_secs(5),
        || async {
            let snaps = Req::get(a.admin, "/signals/recent")
                .send()
                .await
                .unwrap()
                .json();
            let series: Vec<_> = snaps
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|s| s["series"].as_array().unwrap().clone())
                .collect();
            let total: u64 = series
                .iter()
                .filter(|s| s["instance"] == "a-1")
                .map(|s| s["requests"].as_u64().unwrap())
                .sum();
            let errors: u64 = series
                .iter()
                .filter_map(|s| s["errors"]["status_5xx"].as_u64())
                .sum();
            (total == 6 && errors == 1)
                .then_some(())
                .ok_or(format!("{total} requests, {errors} errors: {snaps}"))
        },
    )
    .await;
    // The live stream sends one JSON line per interval.
    let mut s = tokio::net::TcpStream::connect(a.admin).await.unwrap();
    s.write_all(b"GET /signals HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 8192];
    let mut got = String::new();
    while !got.contains("\"source_zone\":\"a\"") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "stream closed: {got}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(got.contains("application/x-ndjson"), "{got}");
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_written_to_a_file_carry_no_colour_codes() {
    let lab = Topology::new(BIN, &[("r1", &["a"])]).instances_per_zone(1);
    let _ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    assert_eq!(a.get("/items/1").send().await.unwrap().status, 200);
    let log = a.log();
    assert!(log.contains("INFO"), "the edge logged something: {log}");
    assert!(!log.contains('\u{1b}'), "escape codes in a file: {log:?}");
}

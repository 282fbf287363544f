//! Bodies stream through the edge: uploads and downloads far larger than
//! anything it may hold, a bounded replay copy that decides which requests
//! can be retried, an access log line for every request, and a client that
//! stalls mid-body. Every test runs a real edge process against real
//! upstreams on loopback sockets.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use switchyard_testkit::upstream::{download_chunk, Digest};
use switchyard_testkit::{eventually, Topology, HOST};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");
const MIB: u64 = 1024 * 1024;

/// The edge's resident memory, from `/proc/PID/status`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS in /proc/PID/status");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("VmRSS in kB");
    kib * 1024
}

/// Samples the edge's RSS every 10 ms until dropped; the highest seen.
struct PeakRss {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl PeakRss {
    fn watch(pid: u32) -> PeakRss {
        let (peak, stop) = (
            Arc::new(AtomicU64::new(rss(pid))),
            Arc::new(AtomicBool::new(false)),
        );
        let (p, s) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        PeakRss { peak, stop }
    }

    fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for PeakRss {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

type Body = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

/// `n` bytes of the download pattern, generated as the connection pulls them.
fn generated(n: u64) -> (Body, Digest) {
    let chunk = download_chunk();
    let size = chunk.len() as u64;
    let mut digest = Digest::default();
    for i in 0..n.div_ceil(size) {
        digest.update(&chunk[..(n - i * size).min(size) as usize]);
    }
    let frames = (0..n.div_ceil(size)).map(move |i| {
        let len = (n - i * size).min(size) as usize;
        Ok(Frame::data(chunk.slice(..len)))
    });
    (
        StreamBody::new(futures_util::stream::iter(frames)).boxed(),
        digest,
    )
}

fn client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Body> {
    Client::builder(TokioExecutor::new()).build_http()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_100_mib_upload_and_download_stream_through_in_bounded_memory() {
    let lab = Topology::new(BIN, &[("r1", &["a"])])
        .instances_per_zone(1)
        .edge_toml("max_body_bytes = 209715200")
        .service_toml("[service.timeouts]\ntotal_ms = 120000\n");
    let ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    assert_eq!(a.get("/items/1").send().await.unwrap().status, 200);
    let pid = a.pid().expect("edge running");
    let before = rss(pid);
    let watch = PeakRss::watch(pid);

    let (body, digest) = generated(100 * MIB);
    let req = http::Request::put(format!("http://{}/items/big", a.listen))
        .header("host", HOST)
        .body(body)
        .unwrap();
    let resp = client()
        .request(req)
        .await
        .expect("the upload went through");
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.unwrap();
    assert_eq!(
        ups["a-1"].last_body(),
        Some((100 * MIB, digest)),
        "the instance got every byte"
    );
    let grew = watch.peak().saturating_sub(before);
    eprintln!("edge RSS grew by {} KiB during the upload", grew / 1024);
    assert!(
        grew < 32 * MIB,
        "the edge's RSS grew by {} MiB during a 100 MiB upload",
        grew / MIB
    );

    let req = http::Request::get(format!("http://{}/download/{}", a.listen, 100 * MIB))
        .header("host", HOST)
        .body(Body::default())
        .unwrap();
    let resp = client().request(req).await.expect("the download began");
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let (mut got, mut d) = (0u64, Digest::default());
    while let Some(f) = body.frame().await {
        if let Some(data) = f.expect("the download went through").data_ref() {
            got += data.len() as u64;
            d.update(data);
        }
    }
    assert_eq!((got, d), (100 * MIB, generated(100 * MIB).1));

    let grew = watch.peak().saturating_sub(before);
    eprintln!("edge RSS grew by {} KiB after the download", grew / 1024);
    assert!(
        grew < 32 * MIB,
        "the edge's RSS grew by {} MiB after a 100 MiB download",
        grew / MIB
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_over_the_limit_mid_stream_gets_413_and_the_upstream_request_is_aborted() {
    let lab = Topology::new(BIN, &[("r1", &["a"])])
        .instances_per_zone(1)
        .edge_toml("max_body_bytes = 1048576");
    let ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    // Over h2, so the answer is not lost to a reset of a connection the
    // client is still writing to; no length, so only counting can tell.
    let client: Client<_, Body> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let (body, _) = generated(2 * MIB);
    let req = http::Request::put(format!("http://{}/items/1", a.listen))
        .header("host", HOST)
        .body(body)
        .unwrap();
    let resp = client.request(req).await.expect("an answer");
    assert_eq!(resp.status(), 413);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(
        String::from_utf8_lossy(&body).contains("payload_too_large"),
        "{body:?}"
    );
    let seen = ups["a-1"].body_bytes_seen();
    assert!(
        seen > 64 * 1024,
        "the body streamed before the limit: {seen}"
    );
    assert_eq!(
        ups["a-1"].last_body(),
        None,
        "the upstream request was aborted"
    );
    let m = a.metrics().await;
    assert!(m.contains("code=\"4xx\"} 1"), "{m}");
    assert!(!m.contains("switchyard_upstream_errors_total{"), "{m}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_response_body_that_stalls_past_the_total_timeout_is_cut_and_counted() {
    let lab = Topology::new(BIN, &[("r1", &["a"])])
        .instances_per_zone(1)
        .service_toml("[service.timeouts]\nheader_ms = 500\ntotal_ms = 1000\n");
    let _ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    let t = std::time::Instant::now();
    let req = http::Request::get(format!("http://{}/trickle/1000", a.listen))
        .header("host", HOST)
        .body(Body::default())
        .unwrap();
    let resp = client().request(req).await.expect("the head arrives");
    assert_eq!(resp.status(), 200, "the head is passed on before the body");
    assert!(
        t.elapsed() < Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    let mut body = resp.into_body();
    let mut got = 0;
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(5), body.frame()).await {
            Err(_) => panic!("the body was not cut"),
            Ok(Some(Ok(f))) => got += f.data_ref().map_or(0, |d| d.len()),
            Ok(Some(Err(e))) => break format!("{e:?}"),
            Ok(None) => panic!("the body ended cleanly"),
        }
    };
    assert_eq!(got, 1000, "{ended}");
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    eventually(
        "the cut counts against the instance",
        Duration::from_secs(3),
        || async {
            let m = a.metrics().await;
            m.contains("switchyard_upstream_errors_total{service=\"svc\",zone=\"a\",instance=\"a-1\",class=\"upstream_timeout\"} 1")
                .then_some(())
                .ok_or(m)
        },
    )
    .await;
}

/// Sends PUTs of `size` bytes until `stop` says enough, returning how many.
async fn put_until(
    a: &switchyard_testkit::EdgeProcess,
    size: usize,
    mut stop: impl FnMut(&switchyard_testkit::Reply) -> bool,
) -> usize {
    let body = Bytes::from(vec![7u8; size]);
    for n in 1..=30 {
        let r = a.put("/items/1").body(body.clone()).send().await.unwrap();
        if stop(&r) {
            return n;
        }
    }
    panic!("no PUT did what the test waits for");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_put_whose_body_fit_the_replay_copy_is_retried_with_the_same_body() {
    let lab = Topology::new(BIN, &[("r1", &["a"])])
        .min_healthy(0.01)
        .edge_toml("retry_buffer_bytes = 262144");
    let ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    ups["a-1"].set_write_status(503);

    // 200 KiB: more than the default 64 KiB, within the configured copy.
    let size = 200 * 1024;
    put_until(&a, size, |r| {
        assert_eq!(r.status, 200, "every PUT ends well: {}", r.body);
        assert_eq!(r.upstream(), "r1/a/a-2");
        ups["a-1"].requests() > 0
    })
    .await;
    let sent = Digest::of(&vec![7u8; size]);
    assert_eq!(ups["a-1"].last_body(), Some((size as u64, sent)));
    assert_eq!(ups["a-2"].last_body(), Some((size as u64, sent)));
    let m = a.metrics().await;
    assert!(
        m.contains("switchyard_retries_total{service=\"svc\",outcome=\"sent\"}"),
        "{m}"
    );
    assert!(!m.contains("outcome=\"body_too_large\""), "{m}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_put_whose_body_outgrew_the_replay_copy_is_not_retried_and_that_is_counted() {
    let lab = Topology::new(BIN, &[("r1", &["a"])])
        .min_healthy(0.01)
        .edge_toml("retry_buffer_bytes = 262144");
    let ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    ups["a-1"].set_write_status(503);

    let size = 300 * 1024;
    put_until(&a, size, |r| {
        if r.upstream() == "r1/a/a-1" {
            assert_eq!(r.status, 503, "the instance's answer, not retried");
            return true;
        }
        assert_eq!(r.status, 200, "{}", r.body);
        false
    })
    .await;
    assert_eq!(
        ups["a-1"].last_body(),
        Some((size as u64, Digest::of(&vec![7u8; size])))
    );
    let m = a.metrics().await;
    assert!(
        m.contains("switchyard_retries_total{service=\"svc\",outcome=\"body_too_large\"} 1"),
        "{m}"
    );
    assert!(!m.contains("outcome=\"sent\""), "{m}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_request_gets_an_access_log_line_with_its_request_id() {
    let lab = Topology::new(BIN, &[("r1", &["a"])])
        .instances_per_zone(1)
        .edge_toml("access_log = \"access.log\"");
    let ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;

    let r = a
        .get("/items/1")
        .header("x-request-id", "client-id-42")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-request-id").as_deref(), Some("client-id-42"));
    assert_eq!(
        ups["a-1"].last_header("x-request-id").as_deref(),
        Some("client-id-42")
    );
    // An id too long to be sane is replaced by one of the edge's own.
    let put = a
        .put("/items/2")
        .header("x-request-id", &"x".repeat(300))
        .body("hello")
        .send()
        .await
        .unwrap();
    let generated = put.header("x-request-id").unwrap();
    assert_eq!(generated.len(), 32, "{generated}");
    assert_eq!(
        ups["a-1"].last_header("x-request-id").as_deref(),
        Some(generated.as_str())
    );
    let missing = switchyard_testkit::Req::get(a.listen, "/")
        .host("nobody.test")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status, 404);
    let missing_id = missing
        .header("x-request-id")
        .expect("errors carry one too");

    let path = lab.dir().join("access.log");
    eventually("three access-log lines", Duration::from_secs(5), || async {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        (text.lines().count() == 3).then_some(()).ok_or(text)
    })
    .await;
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    let get = &lines[0];
    assert_eq!(get["request_id"], "client-id-42");
    assert!(get["time"].as_str().unwrap().ends_with('Z'), "{get}");
    assert!(get["client"].as_str().unwrap().starts_with("127."), "{get}");
    assert_eq!(get["method"], "GET");
    assert_eq!(get["host"], HOST);
    assert_eq!(get["path"], "/items/1");
    assert_eq!(get["status"], 200);
    assert_eq!(get["service"], "svc");
    assert_eq!(get["route"], "get-item");
    assert_eq!(
        (&get["region"], &get["zone"], &get["instance"]),
        (&"r1".into(), &"a".into(), &"a-1".into())
    );
    assert_eq!(get["bytes_in"], 0);
    assert_eq!(get["bytes_out"], r.body.len() as u64);
    assert_eq!(get["retries"], 0);
    assert!(
        get["error"].is_null() && get["error_class"].is_null(),
        "{get}"
    );
    let (total, upstream) = (
        get["duration_ms"].as_f64().unwrap(),
        get["upstream_ms"].as_f64().unwrap(),
    );
    assert!(0.0 < upstream && upstream <= total, "{get}");

    assert_eq!(lines[1]["request_id"], generated.as_str());
    assert_eq!(
        (&lines[1]["method"], &lines[1]["bytes_in"]),
        (&"PUT".into(), &5.into())
    );
    assert_eq!(lines[1]["route"], "put-item");

    let err = &lines[2];
    assert_eq!(err["request_id"], missing_id.as_str());
    assert_eq!(err["status"], 404);
    assert_eq!(err["error"], "unknown_service");
    assert_eq!(err["error_class"], "bad_request");
    assert!(
        err["service"].is_null() && err["upstream_ms"].is_null(),
        "{err}"
    );
}

/// Reads one response head, or panics after 5 s.
async fn read_head(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !out.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("a response")
            .unwrap();
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&out));
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_that_stalls_mid_stream_gets_408_and_is_not_held_against_the_instance() {
    let lab = Topology::new(BIN, &[("r1", &["a"])])
        .instances_per_zone(1)
        .edge_toml("client_body_timeout_ms = 800");
    let ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;

    let mut s = TcpStream::connect(a.listen).await.unwrap();
    let head = format!("PUT /items/1 HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 1000000\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&vec![b'x'; 200 * 1024]).await.unwrap();
    // Streaming: the instance has the first bytes while the rest is due.
    eventually(
        "the instance receives the body as it arrives",
        Duration::from_secs(3),
        || async {
            let seen = ups["a-1"].body_bytes_seen();
            (seen >= 128 * 1024)
                .then_some(())
                .ok_or(format!("{seen} bytes"))
        },
    )
    .await;
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(head.contains("request_timeout"), "{head}");
    assert_eq!(ups["a-1"].last_body(), None, "no body arrived whole");
    let m = a.metrics().await;
    assert!(!m.contains("switchyard_upstream_errors_total{"), "{m}");
    assert_eq!(a.status().await.services[0].limits.inflight, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_forwarded_to_its_home_region_streams_through_both_edges() {
    let lab = Topology::new(BIN, &[("r1", &["a"]), ("r2", &["b"])])
        .instances_per_zone(1)
        .edge_toml("max_body_bytes = 209715200")
        .service_toml("[service.timeouts]\ntotal_ms = 120000\n");
    let ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    let _b = lab.start_edge("b").await;
    assert_eq!(a.get("/items/1").send().await.unwrap().status, 200);
    let pid = a.pid().expect("edge running");
    let before = rss(pid);
    let watch = PeakRss::watch(pid);

    let (body, digest) = generated(64 * MIB);
    let req = http::Request::put(format!("http://{}/items/big", a.listen))
        .header("host", HOST)
        .header("x-switchyard-home-region", "r2")
        .body(body)
        .unwrap();
    let resp = client()
        .request(req)
        .await
        .expect("the upload went through");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-switchyard-upstream"], "r2/b/b-1");
    resp.into_body().collect().await.unwrap();
    assert_eq!(ups["b-1"].last_body(), Some((64 * MIB, digest)));
    let grew = watch.peak().saturating_sub(before);
    assert!(
        grew < 32 * MIB,
        "the forwarding edge's RSS grew by {} MiB for a 64 MiB upload",
        grew / MIB
    );
}

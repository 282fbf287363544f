//! HTTP/2 to instances, gRPC and WebSockets through the edge: plain HTTP
//! over h2c to instances (`upstream_protocol = "h2c"`); a real tonic client
//! speaking h2c to a real edge process, which speaks h2c to a real tonic
//! instance; and a real WebSocket client and echo server joined by the edge
//! after `101 Switching Protocols`.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use switchyard_api::edge::CheckState;
use switchyard_testkit::grpc::{CountRequest, FeedClient, GrpcCode, GrpcServer};
use switchyard_testkit::websocket::{self, EchoServer, WsMessage};
use switchyard_testkit::{eventually, sample, Topology, HOST};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

fn grpc_lab() -> Topology {
    Topology::new(BIN, &[("r1", &["a"])])
        .instances_per_zone(1)
        .service_toml("upstream_protocol = \"h2c\"")
}

#[tokio::test(flavor = "multi_thread")]
async fn an_h2c_service_multiplexes_requests_on_one_connection_per_instance() {
    let lab = Topology::new(BIN, &[("r1", &["a"])])
        .instances_per_zone(1)
        .service_toml("upstream_protocol = \"h2c\"");
    let ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    assert_eq!(a.get("/items/1").send().await.unwrap().status, 200);
    assert_eq!(ups["a-1"].last_version(), Some(http::Version::HTTP_2));

    // 30 requests at once, held 300 ms each by the instance, on one client
    // connection (so one edge worker): HTTP/1.1 would need 30 connections.
    ups["a-1"].set_delay(Duration::from_millis(300));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let before = ups["a-1"].connections();
    let calls = (0..30).map(|i| {
        let req = http::Request::get(format!("http://{}/items/{i}", a.listen))
            .header("host", HOST)
            .body(http_body_util::Empty::new())
            .unwrap();
        client.request(req)
    });
    for r in futures_util::future::join_all(calls).await {
        let r = r.expect("answered");
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-switchyard-upstream"], "r1/a/a-1");
    }
    let opened = ups["a-1"].connections() - before;
    assert!(
        opened <= 2,
        "{opened} connections opened for 30 concurrent requests"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_connect_to_an_h2c_instance_is_retried_on_another() {
    let lab = Topology::new(BIN, &[("r1", &["a", "b"])])
        .instances_per_zone(1)
        .min_healthy(0.01)
        .service_toml("upstream_protocol = \"h2c\"");
    let mut ups = lab.start_upstreams().await;
    ups.get_mut("a-1").unwrap().stop().await;
    let a = lab.start_edge("a").await;
    let r = a.get("/items/1").send().await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.zone(), "b");
    assert_eq!(ups["b-1"].last_version(), Some(http::Version::HTTP_2));
    assert!(a
        .metrics()
        .await
        .contains("switchyard_retries_total{service=\"svc\",outcome=\"sent\"}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_refused_by_an_h2c_instance_is_sent_to_another_even_a_write() {
    // REFUSED_STREAM says the instance processed nothing (RFC 9113 §8.7),
    // so even a PUT, which a 503 would never send twice, may go elsewhere.
    let lab = Topology::new(BIN, &[("r1", &["a", "b"])])
        .instances_per_zone(1)
        .min_healthy(0.01)
        .service_toml("upstream_protocol = \"h2c\"");
    let ups = lab.start_upstreams().await;
    ups["a-1"].set_refuse_streams(true);
    let a = lab.start_edge("a").await;
    for req in [a.get("/items/1"), a.put("/items/1").body("v=1")] {
        let r = req.send().await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.zone(), "b");
    }
    assert_eq!(
        ups["a-1"].requests(),
        0,
        "the refused instance processed nothing"
    );
    assert_eq!(ups["b-1"].last_body().map(|(len, _)| len), Some(3));
    let m = a.metrics().await;
    assert!(
        m.contains("switchyard_retries_total{service=\"svc\",outcome=\"sent\"} 2"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn te_trailers_reaches_the_instance_and_other_te_values_do_not() {
    let lab = Topology::new(BIN, &[("r1", &["a"])]).instances_per_zone(1);
    let ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    let r = a
        .get("/items/1")
        .header("te", "gzip, Trailers;q=0.5")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(ups["a-1"].last_header("te").as_deref(), Some("trailers"));
    a.get("/items/1").header("te", "gzip").send().await.unwrap();
    assert_eq!(ups["a-1"].last_header("te"), None, "te is hop-by-hop");
}

/// The access log's lines once there are `n`, parsed.
async fn access_log(lab: &Topology, n: usize) -> Vec<serde_json::Value> {
    let path = lab.dir().join("access.log");
    eventually(
        &format!("{n} access-log lines"),
        Duration::from_secs(5),
        || async {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            (text.lines().count() == n).then_some(()).ok_or(text)
        },
    )
    .await;
    std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_streams_both_ways_through_the_edge_with_their_trailers() {
    let lab = grpc_lab().edge_toml("access_log = \"access.log\"");
    let (name, addr) = lab.instance("a", 1);
    let server = GrpcServer::start(&name, addr).await;
    let a = lab.start_edge("a").await;
    let mut client = FeedClient::connect(a.listen, HOST).await;

    let counted = client
        .count(200, GrpcCode::Ok)
        .await
        .expect("a server-streaming call through the edge succeeds");
    let seqs: Vec<u32> = counted.items.iter().map(|i| i.seq).collect();
    assert_eq!(
        seqs,
        (1..=200).collect::<Vec<_>>(),
        "every message, in order"
    );
    assert_eq!(
        counted
            .trailers
            .get("grpc-status")
            .map(|v| v.to_str().unwrap()),
        Some("0"),
        "the trailers reach the client: {:?}",
        counted.trailers
    );

    let (total, _) = client
        .sum(300)
        .await
        .expect("a client-streaming call through the edge succeeds");
    assert_eq!((total.items, total.sum), (300, 300 * 301 / 2));

    // A conversation: each message waits for the answer to the one before.
    let seen = tokio::time::timeout(Duration::from_secs(5), client.ping_pong(20))
        .await
        .expect("the edge passes each message on as it comes")
        .expect("a bidirectional call through the edge succeeds");
    assert_eq!(seen, (1..=20).collect::<Vec<_>>());

    // A status sent in the trailers after messages reaches the client with
    // its message and metadata.
    let st = client
        .count(3, GrpcCode::FailedPrecondition)
        .await
        .expect_err("the call ends with the server's status");
    assert_eq!(st.code(), GrpcCode::FailedPrecondition, "{st:?}");
    assert_eq!(st.message(), format!("{name} says no"));
    assert_eq!(
        st.metadata()
            .get("x-served-by")
            .map(|v| v.to_str().unwrap()),
        Some(name.as_str())
    );
    assert!(server.calls() >= 3);
    let m = a.metrics().await;
    assert_eq!(
        sample(
            &m,
            "switchyard_grpc_responses_total{service=\"svc\",code=\"OK\"}"
        ),
        3.0,
        "{m}"
    );
    let lines = access_log(&lab, 4).await;
    let paths: Vec<&str> = lines.iter().map(|l| l["path"].as_str().unwrap()).collect();
    assert_eq!(
        paths,
        [
            "/switchyard.test.Feed/Count",
            "/switchyard.test.Feed/Sum",
            "/switchyard.test.Feed/Echo",
            "/switchyard.test.Feed/Count"
        ]
    );
    let statuses: Vec<_> = lines.iter().map(|l| l["grpc_status"].clone()).collect();
    assert_eq!(statuses, [json!(0), json!(0), json!(0), json!(9)]);
    for l in &lines {
        assert_eq!(l["status"], 200, "{l}");
        assert_eq!(l["instance"], "a-1", "{l}");
        assert_eq!(l["error"], serde_json::Value::Null, "{l}");
    }
    assert!(
        lines[0]["bytes_out"].as_u64().unwrap() > 200 * 1024,
        "every message went out: {}",
        lines[0]
    );
    assert!(
        lines[1]["bytes_in"].as_u64().unwrap() > 300 * 1024,
        "every message came in: {}",
        lines[1]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grpc_call_forwarded_to_another_region_keeps_its_streams_and_trailers() {
    let lab = Topology::new(BIN, &[("r1", &["a"]), ("r2", &["b"])])
        .instances_per_zone(1)
        .service_toml("upstream_protocol = \"h2c\"");
    let mut servers = Vec::new();
    for z in ["a", "b"] {
        let (name, addr) = lab.instance(z, 1);
        servers.push(GrpcServer::start(&name, addr).await);
    }
    let a = lab.start_edge("a").await;
    let b = lab.start_edge("b").await;
    let out = json!({"services": {"svc": {"regions": {"r1": {"state": "out"}}}}});
    a.put_controls(&out).await;
    b.put_controls(&out).await;
    let mut client = FeedClient::connect(a.listen, HOST).await;

    let counted = client.count(100, GrpcCode::Ok).await.expect("served");
    assert_eq!(counted.items.len(), 100);
    assert_eq!(
        counted
            .headers
            .get("x-served-by")
            .map(|v| v.to_str().unwrap()),
        Some("b-1"),
        "served in r2: {:?}",
        counted.headers
    );
    assert_eq!(
        counted
            .trailers
            .get("grpc-status")
            .map(|v| v.to_str().unwrap()),
        Some("0")
    );
    let (total, md) = client.sum(100).await.expect("served");
    assert_eq!((total.items, total.sum), (100, 5050));
    assert_eq!(
        md.get("x-served-by").map(|v| v.to_str().unwrap()),
        Some("b-1")
    );
    let st = client.count(2, GrpcCode::Internal).await.unwrap_err();
    assert_eq!(st.code(), GrpcCode::Internal, "{st:?}");
    assert_eq!(st.message(), "b-1 says no");
    assert_eq!(servers[0].calls(), 0, "nothing was served in r1");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grpc_server_failure_counts_against_the_instance_and_a_client_error_does_not() {
    let lab = grpc_lab();
    let (name, addr) = lab.instance("a", 1);
    let _server = GrpcServer::start(&name, addr).await;
    let a = lab.start_edge("a").await;
    let mut client = FeedClient::connect(a.listen, HOST).await;
    let errors = "switchyard_upstream_errors_total{service=\"svc\",zone=\"a\",instance=\"a-1\",class=\"status_5xx\"}";

    // NOT_FOUND is an answer about the request, as a 404 is; as a
    // trailers-only answer and after messages alike.
    for n in [0, 2, 0] {
        let st = client.count(n, GrpcCode::NotFound).await.unwrap_err();
        assert_eq!(st.code(), GrpcCode::NotFound, "{st:?}");
    }
    let m = a.metrics().await;
    assert_eq!(sample(&m, errors), 0.0, "{m}");
    assert_eq!(a.instance("a-1").await.consecutive_5xx, 0);

    // UNAVAILABLE is the instance failing, as a 503 is.
    for n in [0, 2, 0] {
        let st = client.count(n, GrpcCode::Unavailable).await.unwrap_err();
        assert_eq!(st.code(), GrpcCode::Unavailable, "{st:?}");
        assert_eq!(st.message(), format!("{name} says no"));
    }
    let m = a.metrics().await;
    assert_eq!(sample(&m, errors), 3.0, "{m}");
    assert_eq!(
        sample(
            &m,
            "switchyard_grpc_responses_total{service=\"svc\",code=\"UNAVAILABLE\"}"
        ),
        3.0,
        "{m}"
    );
    assert_eq!(
        a.instance("a-1").await.consecutive_5xx,
        3,
        "outlier detection saw three failures in a row"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grpc_stream_the_edge_cuts_at_the_total_timeout_ends_with_a_status() {
    let lab = grpc_lab()
        .edge_toml("access_log = \"access.log\"")
        .service_toml("[service.timeouts]\nheader_ms = 500\ntotal_ms = 1000");
    let (name, addr) = lab.instance("a", 1);
    let _server = GrpcServer::start(&name, addr).await;
    let a = lab.start_edge("a").await;
    let mut client = FeedClient::connect(a.listen, HOST).await;
    let st = client
        .count_with(CountRequest {
            n: 3,
            fail: 0,
            stall: true,
        })
        .await
        .expect_err("the edge cuts the stalled stream");
    assert_eq!(st.code(), GrpcCode::DeadlineExceeded, "{st:?}");
    assert!(
        st.message().contains("within 1000 ms"),
        "the edge's reason: {st:?}"
    );
    assert_eq!(
        st.metadata()
            .get("x-switchyard-error")
            .map(|v| v.to_str().unwrap()),
        Some("upstream_timeout")
    );
    let m = a.metrics().await;
    assert_eq!(
        sample(
            &m,
            "switchyard_upstream_errors_total{service=\"svc\",zone=\"a\",instance=\"a-1\",class=\"upstream_timeout\"}"
        ),
        1.0,
        "{m}"
    );
    let line = &access_log(&lab, 1).await[0];
    assert_eq!(
        (&line["grpc_status"], &line["error"]),
        (&json!(4), &json!("upstream_timeout")),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_edge_refuses_a_grpc_call_with_a_grpc_status() {
    let lab = grpc_lab().edge_toml("access_log = \"access.log\"");
    let (name, addr) = lab.instance("a", 1);
    let server = GrpcServer::start(&name, addr).await;
    let a = lab.start_edge("a").await;
    let mut client = FeedClient::connect(a.listen, HOST).await;
    client.count(1, GrpcCode::Ok).await.expect("served");

    // Shed: RESOURCE_EXHAUSTED, which no HTTP status maps to, with the
    // edge's reason as the message.
    a.put_controls(&json!({"services": {"svc": {"shed_level": 2}}}))
        .await;
    let st = client.count(1, GrpcCode::Ok).await.unwrap_err();
    assert_eq!(st.code(), GrpcCode::ResourceExhausted, "{st:?}");
    assert!(st.message().starts_with("shed:"), "{st:?}");
    assert_eq!(
        st.metadata()
            .get("x-switchyard-error")
            .map(|v| v.to_str().unwrap()),
        Some("shed")
    );
    let shed = &access_log(&lab, 2).await[1];
    assert_eq!(
        (&shed["status"], &shed["grpc_status"], &shed["error"]),
        (&json!(503), &json!(8), &json!("shed")),
        "{shed}"
    );

    // The instance gone: UNAVAILABLE, naming why.
    a.put_controls(&json!({"services": {"svc": {"shed_level": 0}}}))
        .await;
    drop(server);
    let mut last = None;
    for _ in 0..50 {
        match client.count(1, GrpcCode::Ok).await {
            Err(st) if st.code() == GrpcCode::Unavailable => {
                last = Some(st);
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let st = last.expect("the call failed with UNAVAILABLE once the instance was gone");
    assert!(
        st.metadata().get("x-switchyard-error").is_some(),
        "the edge's own answer, not a transport error: {st:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_websocket_echoes_through_the_edge_is_counted_and_closed_after_the_drain() {
    let lab = Topology::new(BIN, &[("r1", &["a"])])
        .instances_per_zone(1)
        .edge_toml("access_log = \"access.log\"")
        .service_toml("[service.health_check]\nenabled = false");
    let (name, addr) = lab.instance("a", 1);
    let server = EchoServer::start(&name, addr).await;
    let mut a = lab.start_edge("a").await;

    let mut ws = websocket::connect(a.listen, HOST, "/items/chat")
        .await
        .expect("the edge switches protocols");
    let hello = ws.next().await.expect("a greeting").expect("a message");
    assert_eq!(hello, WsMessage::text(format!("hello from {name}")));
    for i in 0..20 {
        let m = WsMessage::text(format!("message {i}"));
        ws.send(m.clone()).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), m);
    }
    ws.send(WsMessage::binary(vec![7u8; 100_000]))
        .await
        .unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        WsMessage::binary(vec![7u8; 100_000])
    );
    let m = a.metrics().await;
    assert_eq!(
        sample(&m, "switchyard_upgrades_total{service=\"svc\"}"),
        1.0,
        "{m}"
    );
    assert_eq!(
        sample(&m, "switchyard_upgraded_connections{service=\"svc\"}"),
        1.0,
        "{m}"
    );
    // The tunnel holds no request slot: ordinary requests are not counted
    // in flight behind it.
    assert_eq!(
        sample(&m, "switchyard_inflight{service=\"svc\"}"),
        0.0,
        "{m}"
    );
    let line = &access_log(&lab, 1).await[0];
    assert_eq!(
        (&line["status"], &line["path"], &line["instance"]),
        (&json!(101), &json!("/items/chat"), &json!("a-1")),
        "{line}"
    );

    // SIGTERM: the WebSocket keeps working through the drain, then the
    // edge closes it and exits.
    let pid = a.pid().expect("running");
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let m = WsMessage::text("still there while draining");
    ws.send(m.clone()).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), m);
    let closed = tokio::time::timeout(Duration::from_secs(8), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(WsMessage::Close(_))) => break,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the edge closed the WebSocket at the drain deadline"
    );
    assert!(
        a.terminate(Duration::from_secs(5)).await.is_some(),
        "the edge exited"
    );
    eventually(
        "the instance's side is closed",
        Duration::from_secs(5),
        || async {
            (server.open() == 0)
                .then_some(())
                .ok_or(format!("{} open", server.open()))
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_websocket_is_closed_after_the_upgrade_idle_timeout() {
    let lab = Topology::new(BIN, &[("r1", &["a"])])
        .instances_per_zone(1)
        .edge_toml("upgrade_idle_timeout_ms = 1500")
        .service_toml("[service.health_check]\nenabled = false");
    let (name, addr) = lab.instance("a", 1);
    let _server = EchoServer::start(&name, addr).await;
    let a = lab.start_edge("a").await;
    let mut ws = websocket::connect(a.listen, HOST, "/")
        .await
        .expect("the edge switches protocols");
    ws.next().await.unwrap().unwrap();
    // Traffic keeps it open past the timeout…
    for _ in 0..7 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        ws.send(WsMessage::text("ping")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), WsMessage::text("ping"));
    }
    // …silence closes it.
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(WsMessage::Close(_))) => break,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the idle WebSocket was closed");
    let m = a.metrics().await;
    assert_eq!(
        sample(
            &m,
            "switchyard_upgrade_closes_total{service=\"svc\",outcome=\"idle\"}"
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        sample(&m, "switchyard_upgraded_connections{service=\"svc\"}"),
        0.0,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upgraded_connection_keeps_its_place_under_the_connection_ceilings() {
    let lab = Topology::new(BIN, &[("r1", &["a"])])
        .instances_per_zone(1)
        .edge_toml("max_client_connections = 100\nmax_connections_per_client = 2")
        .service_toml("[service.health_check]\nenabled = false");
    let (name, addr) = lab.instance("a", 1);
    let _server = EchoServer::start(&name, addr).await;
    let a = lab.start_edge("a").await;
    let mut first = websocket::connect(a.listen, HOST, "/").await.unwrap();
    let _second = websocket::connect(a.listen, HOST, "/").await.unwrap();
    first.next().await.unwrap().unwrap();
    assert!(
        websocket::connect(a.listen, HOST, "/").await.is_err(),
        "a third connection from the same client is refused while two WebSockets are open"
    );
    first.close(None).await.unwrap();
    drop(first);
    eventually("a place is free again", Duration::from_secs(5), || async {
        websocket::connect(a.listen, HOST, "/")
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grpc_health_check_takes_out_an_instance_that_says_it_is_not_serving() {
    // A gRPC server answers any GET with HTTP 200, so only the health
    // protocol's own verdict tells a draining server from a serving one.
    let lab = Topology::new(BIN, &[("r1", &["a"])])
        .instances_per_zone(2)
        .min_healthy(0.01)
        .service_toml(
            "upstream_protocol = \"h2c\"\n[service.health_check]\ninterval_ms = 100\ngrpc_service = \"switchyard.test.Feed\"",
        );
    let mut servers = Vec::new();
    for i in 1..=2 {
        let (name, addr) = lab.instance("a", i);
        servers.push(GrpcServer::start(&name, addr).await);
    }
    let a = lab.start_edge("a").await;
    let within = Duration::from_secs(10);
    a.wait_check("a-1", CheckState::Up, within).await;
    a.wait_check("a-2", CheckState::Up, within).await;
    assert!(
        servers[0].health_checks() > 0,
        "checked with the health protocol"
    );

    servers[0].set_serving(false);
    let down = a.wait_check("a-1", CheckState::Down, within).await;
    assert_eq!(down.last_error.as_deref(), Some("not serving"));
    let before = servers[0].calls();
    let mut client = FeedClient::connect(a.listen, HOST).await;
    for _ in 0..10 {
        let counted = client.count(1, GrpcCode::Ok).await.expect("served");
        assert_eq!(
            counted
                .headers
                .get("x-served-by")
                .map(|v| v.to_str().unwrap()),
            Some("a-2")
        );
    }
    assert_eq!(
        servers[0].calls(),
        before,
        "no call reached the draining server"
    );

    servers[0].set_serving(true);
    a.wait_check("a-1", CheckState::Up, within).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grpc_health_check_of_a_service_the_server_does_not_know_fails_with_the_status() {
    let lab = Topology::new(BIN, &[("r1", &["a"])])
        .instances_per_zone(1)
        .service_toml(
            "upstream_protocol = \"h2c\"\n[service.health_check]\ninterval_ms = 100\ngrpc_service = \"no.such.Service\"",
        );
    let (name, addr) = lab.instance("a", 1);
    let _server = GrpcServer::start(&name, addr).await;
    let a = lab.start_edge("a").await;
    let down = a
        .wait_check("a-1", CheckState::Down, Duration::from_secs(10))
        .await;
    assert_eq!(down.last_error.as_deref(), Some("grpc status 5"));
}

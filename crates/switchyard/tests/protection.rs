//! The edge protecting itself and the service: shedding by priority,
//! read-only mode, and injected faults for drills.

use std::time::{Duration, Instant};

use serde_json::json;
use switchyard_testkit::{eventually, Req, Topology};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

#[tokio::test(flavor = "multi_thread")]
async fn over_the_concurrency_limit_sheddable_goes_first_and_critical_last() {
    let lab = Topology::new(BIN, &[("r1", &["a"])])
        .service_toml("[service.limits]\nmax_concurrency = 10\n");
    let ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    for u in ups.values() {
        u.set_delay(Duration::from_millis(1500));
    }
    // Eight slow critical requests hold eight of ten slots.
    let mut held = Vec::new();
    for i in 0..8 {
        held.push(tokio::spawn(a.get(&format!("/items/{i}")).send()));
    }
    eventually(
        "eight requests in flight",
        Duration::from_secs(5),
        || async {
            let n = a.status().await.services[0].limits.inflight;
            (n == 8).then_some(()).ok_or(format!("{n} in flight"))
        },
    )
    .await;
    let t = Instant::now();
    let shed = a.get("/recommendations").send().await.unwrap();
    assert_eq!(shed.status, 503, "{}", shed.body);
    assert!(
        t.elapsed() < Duration::from_millis(1000),
        "a shed request is answered at once"
    );
    assert_eq!(shed.json()["error"], "shed");
    assert_eq!(shed.header("retry-after").as_deref(), Some("1"));
    let critical = a.get("/items/x").send().await.unwrap();
    assert_eq!(
        critical.status, 200,
        "critical is still admitted: {}",
        critical.body
    );
    for h in held {
        assert_eq!(h.await.unwrap().unwrap().status, 200);
    }
    assert!(a.metrics().await.contains(
        "switchyard_shed_total{service=\"svc\",priority=\"sheddable\",reason=\"concurrency\"} 1"
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_shed_level_control_sheds_by_priority_and_never_critical() {
    let lab = Topology::new(BIN, &[("r1", &["a"])]);
    let _ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    a.put_controls(&json!({"services": {"svc": {"shed_level": 2}}}))
        .await;
    assert_eq!(a.get("/recommendations").send().await.unwrap().status, 503);
    assert_eq!(
        a.put("/items/1").body("{}").send().await.unwrap().status,
        503
    );
    assert_eq!(a.get("/items/1").send().await.unwrap().status, 200);
    a.put_controls(&json!({"services": {"svc": {"shed_level": 1}}}))
        .await;
    assert_eq!(
        a.put("/items/1").body("{}").send().await.unwrap().status,
        200
    );
    assert_eq!(a.get("/recommendations").send().await.unwrap().status, 503);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rate_ceiling_sheds_sheddable_traffic_and_keeps_a_reserve_for_critical() {
    let lab =
        Topology::new(BIN, &[("r1", &["a"])]).service_toml("[service.limits]\nmax_rps = 20\n");
    let _ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    let mut shed = 0;
    for _ in 0..40 {
        let r = a.get("/recommendations").send().await.unwrap();
        if r.status == 503 {
            assert!(
                r.json()["reason"].as_str().unwrap().contains("rate"),
                "{}",
                r.body
            );
            shed += 1;
        }
    }
    assert!(
        shed >= 15,
        "only {shed} of 40 were shed over a 20 rps ceiling"
    );
    assert_eq!(
        a.get("/items/1").send().await.unwrap().status,
        200,
        "the reserve admits critical"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn read_only_mode_refuses_writes_and_keeps_reads() {
    let lab = Topology::new(BIN, &[("r1", &["a"]), ("r2", &["b"])]);
    let _ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    assert_eq!(
        a.put("/items/1").body("{}").send().await.unwrap().status,
        200
    );
    a.put_controls(&json!({"services": {"svc": {"read_only": true}}}))
        .await;
    let w = a.put("/items/1").body("{}").send().await.unwrap();
    assert_eq!(w.status, 503);
    assert_eq!(w.json()["error"], "read_only");
    assert_eq!(w.header("retry-after").as_deref(), Some("1"));
    assert_eq!(a.get("/items/1").send().await.unwrap().status, 200);
    // Read-only for one region only.
    a.put_controls(&json!({"services": {"svc": {"regions": {"r2": {"read_only": true}}}}}))
        .await;
    assert_eq!(
        a.put("/items/1").body("{}").send().await.unwrap().status,
        200
    );
    a.put_controls(&json!({"services": {"svc": {"regions": {"r1": {"read_only": true}}}}}))
        .await;
    assert_eq!(
        a.put("/items/1").body("{}").send().await.unwrap().status,
        503
    );
    assert!(a
        .metrics()
        .await
        .contains("switchyard_read_only_rejections_total{service=\"svc\"} 2"));
}

#[tokio::test(flavor = "multi_thread")]
async fn injected_faults_hit_only_their_route_and_zone() {
    let lab = Topology::new(BIN, &[("r1", &["a", "b"])]);
    let _ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    let b = lab.start_edge("b").await;
    let faults = json!({"faults": [
        {"service": "svc", "route": "get-item", "zone": "a", "abort_status": 503, "abort_percent": 100.0},
        {"service": "svc", "route": "recommendations", "delay_ms": 300, "delay_percent": 100.0}
    ]});
    for e in [&a, &b] {
        assert_eq!(e.put_controls(&faults).await.status, 200);
    }
    let r = a.get("/items/1").send().await.unwrap();
    // An injected abort stands for a broken zone, so it is not retried away.
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["error"], "fault");
    assert_eq!(
        b.get("/items/1").send().await.unwrap().status,
        200,
        "zone b is not faulted"
    );
    let t = Instant::now();
    assert_eq!(b.get("/recommendations").send().await.unwrap().status, 200);
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "delay injected: {:?}",
        t.elapsed()
    );
    // The delay stands for a slow instance: the signals detection reads
    // show it, as the user saw it.
    eventually(
        "the edge's signals carry the injected delay",
        Duration::from_secs(5),
        || async {
            let recent = Req::get(b.admin, "/signals/recent")
                .send()
                .await
                .unwrap()
                .json();
            let p99 = recent
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|s| s["series"].as_array().cloned().unwrap_or_default())
                .filter(|x| x["route"] == "recommendations")
                .filter_map(|x| x["p99_ms"].as_f64())
                .fold(0.0, f64::max);
            (p99 >= 300.0).then_some(()).ok_or(format!("p99 {p99} ms"))
        },
    )
    .await;
    // Faults are off again once the controls no longer name them.
    a.put_controls(&json!({})).await;
    assert_eq!(a.get("/items/1").send().await.unwrap().status, 200);
    assert_eq!(
        Req::get(a.admin, "/status").send().await.unwrap().json()["controls"]["faults"],
        json!([])
    );
}

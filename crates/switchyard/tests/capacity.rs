//! Keeping capacity: outlier ejection and return, and the floor that no
//! combination of ejection and shifts may break.

use std::time::Duration;

use serde_json::json;
use switchyard_api::edge::{EjectReason, Health};
use switchyard_model::CapacityMode;
use switchyard_testkit::{eventually, Topology};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

const FAST_EJECTION: &str =
    "[service.ejection]\nbase_ejection_ms = 1000\nmax_ejection_percent = 50\ninterval_ms = 500\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_instance_is_ejected_then_returns_after_its_recheck() {
    let lab = Topology::new(BIN, &[("r1", &["a", "b"])]).service_toml(FAST_EJECTION);
    let ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    ups["a-1"].set_status(500);
    ups["a-1"].set_health(500);
    a.drive_until_health("a-1", Health::Ejected, Duration::from_secs(5))
        .await;
    let i = a.instance("a-1").await;
    assert_eq!(i.last_ejection_reason, Some(EjectReason::Consecutive5xx));
    let before = ups["a-1"].requests();
    for _ in 0..20 {
        let r = a.get("/items/1").send().await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.upstream(), "r1/a/a-2");
    }
    assert_eq!(
        ups["a-1"].requests(),
        before,
        "an ejected instance gets no traffic"
    );
    // Its ejection ends after a second, but a failing health check keeps it out.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_ne!(a.instance("a-1").await.health, Health::Healthy);
    ups["a-1"].set_status(200);
    ups["a-1"].set_health(200);
    // Requests keep flowing meanwhile; the re-check alone brings it back.
    a.drive_until_health("a-1", Health::Healthy, Duration::from_secs(8))
        .await;
    assert!(
        a.instance("a-1").await.ejections >= 2,
        "the failed recheck counted as an ejection"
    );
    assert!(a.metrics().await.contains(
        "switchyard_ejections_total{service=\"svc\",instance=\"a-1\",reason=\"consecutive_5xx\"} 1"
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn ejection_stops_at_the_floor() {
    // Two instances, floor 1: the first to fail may go, the second must stay.
    let lab = Topology::new(BIN, &[("r1", &["a"])])
        .min_healthy(0.5)
        .service_toml(FAST_EJECTION);
    let ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    ups["a-1"].set_status(500);
    a.drive_until_health("a-1", Health::Ejected, Duration::from_secs(5))
        .await;
    ups["a-2"].set_status(500);
    for _ in 0..20 {
        let r = a.get("/items/1").send().await.unwrap();
        assert_eq!(r.upstream(), "r1/a/a-2");
    }
    assert_eq!(a.instance("a-2").await.health, Health::Healthy);
    let m = a.metrics().await;
    assert!(
        m.contains("switchyard_ejections_refused_total{service=\"svc\",instance=\"a-2\",reason=\"capacity_guard\"}"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shift_that_would_break_the_floor_fails_open_and_below_it_the_edge_panics() {
    let lab = Topology::new(BIN, &[("r1", &["a", "b"])])
        .instances_per_zone(1)
        .min_healthy(0.5)
        .service_toml(FAST_EJECTION);
    let ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    ups["a-1"].set_status(500);
    ups["a-1"].set_health(500);
    a.drive_until_health("a-1", Health::Ejected, Duration::from_secs(5))
        .await;
    assert_eq!(
        a.get("/items/1").send().await.unwrap().upstream(),
        "r1/b/b-1"
    );
    // Shifting zone b now would leave nothing serving: the shift fails open.
    let r = a
        .put_controls(&json!({"services": {"svc": {"zones": {"b": {"weight": 0.0}}}}}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        a.get("/items/1").send().await.unwrap().upstream(),
        "r1/b/b-1"
    );
    assert_eq!(
        a.status().await.services[0].mode,
        CapacityMode::ShiftFailedOpen
    );
    // Raise the floor to every instance: with a-1 out, the edge panics and
    // routes to every instance rather than overload the one left.
    std::fs::write(
        lab.config_path(),
        lab.config_text()
            .replace("min_healthy = 0.5", "min_healthy = 1"),
    )
    .unwrap();
    let r = switchyard_testkit::Req::post(a.admin, "/reload")
        .bearer(switchyard_testkit::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let st = a.status().await;
    assert_eq!(st.services[0].mode, CapacityMode::Panic, "{st:?}");
    assert!(st.services[0].panic);
    let mut zones = std::collections::BTreeSet::new();
    for _ in 0..40 {
        zones.insert(a.get("/items/1").send().await.unwrap().zone());
    }
    assert!(
        zones.contains("a"),
        "panic routing includes the ejected instance: {zones:?}"
    );
    eventually("the panic gauge is set", Duration::from_secs(3), || async {
        let m = a.metrics().await;
        m.contains("switchyard_panic{service=\"svc\",region=\"r1\"} 1")
            .then_some(())
            .ok_or(m)
    })
    .await;
}

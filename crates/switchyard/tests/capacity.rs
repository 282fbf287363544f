//! Keeping capacity: outlier ejection and return, and the floor that no
//! combination of ejection and shifts may break.

use std::time::Duration;

use http::Method;
use serde_json::json;
use switchyard_api::edge::CheckState;
use switchyard_api::edge::{EjectReason, Health};
use switchyard_model::CapacityMode;
use switchyard_testkit::{eventually, Topology, Traffic};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

// These tests judge outlier ejection alone: active health checks would take
// an instance whose health endpoint fails out of rotation before its
// requests could eject it.
const FAST_EJECTION: &str =
    "[service.ejection]\nbase_ejection_ms = 1000\nmax_ejection_percent = 50\ninterval_ms = 500\n\
     [service.health_check]\nenabled = false\n";

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

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_zone_leaves_rotation_whatever_the_ejection_cap_and_its_edge_fails_nothing() {
    // Four instances, floor two. The ejection cap (10 % of four, at least
    // one) would keep one of zone a's dead instances in rotation; dead is not
    // an outlier, so the health checks take both out.
    let lab = Topology::new(BIN, &[("r1", &["a", "b"])]).min_healthy(0.5);
    let mut ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    let traffic = Traffic::start(
        &[a.listen],
        "svc.test",
        &[(Method::GET, "/items/1"), (Method::POST, "/items/1")],
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    for name in ["a-1", "a-2"] {
        ups.get_mut(name).unwrap().stop().await;
    }
    eventually(
        "both dead instances are down",
        Duration::from_secs(5),
        || async {
            let st = a.status().await;
            let svc = st.service("svc").unwrap();
            // The first may also have been ejected (which shows first).
            ["a-1", "a-2"]
                .iter()
                .all(|n| svc.instance(n).unwrap().check.state == CheckState::Down)
                .then_some(())
                .ok_or(format!("{:?}", svc.instances))
        },
    )
    .await;
    let known = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sent = traffic.stop().await;
    let after: Vec<_> = sent.iter().filter(|s| s.at >= known).collect();
    assert!(after.len() >= 50, "only {} requests", after.len());
    let failed: Vec<_> = after.iter().filter(|s| !s.ok()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} failed: {failed:?}",
        failed.len(),
        after.len()
    );
    assert!(after.iter().all(|s| s.zone() == Some("b")));
    assert!(
        after.iter().any(|s| s.method == Method::POST),
        "writes were part of the load"
    );
    let st = a.status().await;
    let svc = st.service("svc").unwrap();
    assert_eq!(
        svc.mode,
        CapacityMode::Normal,
        "two of four serve: the floor holds"
    );
    assert_eq!(svc.serving, 2);
    for n in ["a-1", "a-2"] {
        let i = svc.instance(n).unwrap();
        assert_ne!(i.health, Health::Healthy);
        assert_eq!(i.check.last_error.as_deref(), Some("connect"));
    }
    let m = a.metrics().await;
    assert!(
        m.contains("switchyard_instance_down{service=\"svc\",instance=\"a-1\"} 1"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_failing_its_checks_returns_once_they_pass_again() {
    let lab = Topology::new(BIN, &[("r1", &["a", "b"])]).min_healthy(0.25);
    let ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    ups["a-1"].set_health(503);
    eventually("a-1 is down", Duration::from_secs(5), || async {
        let i = a.instance("a-1").await;
        (i.health == Health::Down)
            .then_some(())
            .ok_or(format!("{i:?}"))
    })
    .await;
    assert_eq!(
        a.instance("a-1").await.check.last_error.as_deref(),
        Some("status 503")
    );
    let before = ups["a-1"].requests();
    for _ in 0..20 {
        let r = a.get("/items/1").send().await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(
            r.upstream(),
            "r1/a/a-2",
            "the own zone's other instance serves"
        );
    }
    assert_eq!(
        ups["a-1"].requests(),
        before,
        "a down instance gets no traffic"
    );
    ups["a-1"].set_health(200);
    eventually("a-1 is back", Duration::from_secs(5), || async {
        let i = a.instance("a-1").await;
        (i.health == Health::Healthy && i.check.state == CheckState::Up)
            .then_some(())
            .ok_or(format!("{i:?}"))
    })
    .await;
    let m = a.metrics().await;
    assert!(
        m.contains("switchyard_instance_down{service=\"svc\",instance=\"a-1\"} 0"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_instance_is_ejected_within_two_analysis_intervals() {
    // Default thresholds, a shorter interval to keep the test short. Power
    // of two choices sends the slow instance few requests (about one per
    // 400 ms answer); they must still be enough to judge it.
    let interval = Duration::from_secs(4);
    let lab = Topology::new(BIN, &[("r1", &["a"])])
        .min_healthy(0.5)
        .service_toml(&format!(
            "[service.ejection]\ninterval_ms = {}\n",
            interval.as_millis()
        ));
    let ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    ups["a-1"].set_delay(Duration::from_millis(400));
    let traffic = Traffic::start(&[a.listen; 8], "svc.test", &[(Method::GET, "/items/1")]);
    eventually(
        "a-1 is ejected as a latency outlier",
        2 * interval + Duration::from_millis(500),
        || async {
            let i = a.instance("a-1").await;
            (i.health == Health::Ejected)
                .then_some(())
                .ok_or(format!("{i:?}; a-1 served {}", ups["a-1"].requests()))
        },
    )
    .await;
    traffic.stop().await;
    let i = a.instance("a-1").await;
    assert_eq!(i.last_ejection_reason, Some(EjectReason::Latency));
    assert_eq!(a.instance("a-2").await.health, Health::Healthy);
}

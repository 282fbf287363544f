//! The control plane with real edges: one command moves traffic on every
//! edge, rules refuse what is unsafe, tokens are scoped, and acknowledged
//! changes survive kill -9.

use std::time::Duration;

use http::Method;
use serde_json::json;
use switchyard_api::{Applied, ErrorBody, History, OpRequest};
use switchyard_model::{Actor, AuditKind, CheckOutcome, Controls, Op, RegionState};
use switchyard_testkit::{eventually, ControlProcess, EdgeProcess, Etcd, Topology, Traffic};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

async fn zone_of(e: &EdgeProcess) -> String {
    e.get("/items/1").send().await.unwrap().zone()
}

/// Within 3 s the edge serves from `zone` (or, for `avoids_zone`, from
/// anywhere else).
async fn serves_zone(e: &EdgeProcess, zone: &str, what: &str) {
    eventually(what, Duration::from_secs(3), || async {
        let z = zone_of(e).await;
        (z == zone).then_some(()).ok_or(z)
    })
    .await;
}

async fn avoids_zone(e: &EdgeProcess, zone: &str, what: &str) {
    eventually(what, Duration::from_secs(3), || async {
        let z = zone_of(e).await;
        (z != zone).then_some(()).ok_or(z)
    })
    .await;
}

/// `switchyard ctl --json` output read as the typed answer it prints.
fn typed<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("not the answer ({e}): {v}"))
}

fn shift(zone: &str) -> Op {
    Op::Shift {
        service: "svc".into(),
        zone: zone.into(),
        for_: Duration::from_secs(3600),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_shift_command_moves_every_edge_and_the_end_of_it_moves_them_back() {
    let lab = Topology::new(BIN, &[("r1", &["a", "b", "c"])]).with_control_plane();
    let _ups = lab.start_upstreams().await;
    let cp = lab.start_control().await;
    let edges = [lab.start_edge("a").await, lab.start_edge("b").await];
    let (code, v, out) = cp.ctl(
        "operate-token",
        &[
            "shift",
            "a",
            "--service",
            "svc",
            "--for",
            "1h",
            "--reason",
            "gray failure",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(typed::<Applied>(v).accepted);
    for e in &edges {
        avoids_zone(e, "a", "the shift reaches the edge").await;
    }
    let st = cp.api(None).status().await.unwrap();
    let zone_a = &st.services[0].regions[0].zones[0];
    assert_eq!(zone_a.weight, 0.0);
    assert_eq!(zone_a.shift_reason.as_deref(), Some("gray failure"));
    let (code, _, out) = cp.ctl("operate-token", &["unshift", "a", "--service", "svc"]);
    assert_eq!(code, 0, "{out}");
    serves_zone(&edges[0], "a", "the edge of zone a serves its zone again").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unsafe_changes_are_refused_naming_the_rule_and_audited() {
    let lab = Topology::new(BIN, &[("r1", &["a", "b", "c"])]).with_control_plane();
    let cp = lab.start_control().await;
    assert_eq!(
        cp.ctl(
            "operate-token",
            &["shift", "a", "--service", "svc", "--reason", "first"]
        )
        .0,
        0
    );
    let refused = cp.ctl_refused(
        "operate-token",
        &["shift", "b", "--service", "svc", "--reason", "second"],
    );
    assert_eq!(refused.error, "refused");
    assert!(refused.refused_by("one_zone_per_region"), "{refused:?}");
    let (_, h, _) = cp.ctl("read-token", &["history"]);
    let h: History = typed(h);
    let last = h.entries.last().unwrap();
    assert!(!last.accepted);
    assert!(last
        .rule
        .as_deref()
        .unwrap()
        .contains("one_zone_per_region"));
    assert_eq!(last.actor, Actor::person("operate-user"));
    // An admin may force it past the rules; that too is audited.
    let (code, _, out) = cp.ctl(
        "admin-token",
        &[
            "shift",
            "b",
            "--service",
            "svc",
            "--reason",
            "forced",
            "--force",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let (_, h, _) = cp.ctl("read-token", &["history"]);
    let h: History = typed(h);
    let last = h.entries.last().unwrap();
    assert!(
        last.detail["forced_past"]
            .as_array()
            .is_some_and(|a| !a.is_empty()),
        "{last:?}"
    );
    let m = cp.api(None).metrics().await.unwrap();
    assert!(
        m.contains("switchyard_control_refusals_total{rule=\"one_zone_per_region\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("switchyard_control_changes_total{by=\"person\",result=\"accepted\"} 2"),
        "{m}"
    );
    // A drill acts through a person's token and is audited as the drill.
    let op = Op::ShedLevel {
        service: "svc".into(),
        level: 1,
    };
    let req = OpRequest::new(op.clone(), "practice").drill("zone-gray");
    cp.api(Some("operate-token")).apply(&req).await.unwrap();
    let h = cp.api(None).history(1).await.unwrap();
    let last = h.entries.last().unwrap();
    assert_eq!(
        last.actor,
        Actor::Drill {
            name: "zone-gray".into(),
            token: "operate-user".into()
        }
    );
    assert_eq!(
        (last.kind, last.op.as_ref()),
        (AuditKind::Change, Some(&op))
    );
    let m = cp.api(None).metrics().await.unwrap();
    assert!(
        m.contains("switchyard_control_changes_total{by=\"drill\",result=\"accepted\"} 1"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_scoped_and_bad_input_is_named() {
    let lab = Topology::new(BIN, &[("r1", &["a", "b", "c"])]).with_control_plane();
    let cp = lab.start_control().await;
    let operate = cp.api(Some("operate-token"));
    let req = OpRequest::new(shift("a"), "x");
    let e = cp.api(None).apply(&req).await.unwrap_err();
    assert_eq!(e.status(), Some(401), "{e}");
    let e = cp.api(Some("read-token")).apply(&req).await.unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");
    let r = operate
        .raw(
            Method::POST,
            "/v1/ops",
            Some(r#"{"op": {"op": "shift", "service": 1}}"#),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.body);
    let e = operate
        .apply(&OpRequest::new(shift("nowhere"), "x"))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(404), "{e}");
    assert!(e.to_string().contains("unknown zone"), "{e}");
    let forever = json!({
        "op": {"op": "shift", "service": "svc", "zone": "a", "for": "forever"},
        "reason": "x"
    });
    let r = operate
        .raw(Method::POST, "/v1/ops", Some(&forever.to_string()))
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.body);
    let replace = Op::Replace {
        controls: Controls::default(),
    };
    let e = operate
        .apply(&OpRequest::new(replace, "x"))
        .await
        .unwrap_err();
    assert_eq!(
        e.status(),
        Some(403),
        "replacing the controls is for admins: {e}"
    );
    assert_eq!(
        cp.api(None).controls().await.unwrap().version,
        0,
        "nothing changed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_acknowledged_change_survives_kill_9_and_edges_keep_routing_meanwhile() {
    let lab = Topology::new(BIN, &[("r1", &["a", "b", "c"])]).with_control_plane();
    let _ups = lab.start_upstreams().await;
    let mut cp = lab.start_control().await;
    let a = lab.start_edge("a").await;
    assert_eq!(
        cp.ctl(
            "operate-token",
            &["readonly", "svc", "on", "--reason", "store impaired"]
        )
        .0,
        0
    );
    eventually(
        "read-only reaches the edge",
        Duration::from_secs(3),
        || async {
            let s = a.put("/items/1").body("{}").send().await.unwrap().status;
            (s == 503).then_some(()).ok_or(s.to_string())
        },
    )
    .await;
    cp.kill9();
    // Static stability: without the control plane the edge serves as before.
    assert_eq!(
        a.put("/items/1").body("{}").send().await.unwrap().status,
        503
    );
    assert_eq!(a.get("/items/1").send().await.unwrap().status, 200);
    cp.restart().await;
    let c = cp.api(None).controls().await.unwrap();
    assert!(c.controls.services["svc"].read_only, "{c:?}");
    assert_eq!(c.version, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn failover_previews_then_moves_the_service_and_failback_returns_it() {
    let lab = Topology::new(BIN, &[("r1", &["a"]), ("r2", &["b"])]).with_control_plane();
    let _ups = lab.start_upstreams().await;
    // The default hourly removal budget (34 %): a failover moves half the
    // service's traffic, which the budget does not count; the move
    // capacity rule judges it (r2 holds half of the instances: enough).
    let cfg = lab.dir().join("default-budget.toml");
    std::fs::write(
        &cfg,
        lab.config_text()
            .replace("max_removal_per_hour = 0.6\n", ""),
    )
    .unwrap();
    let cp = ControlProcess::start(lab.bin(), &cfg, lab.control_addr(), lab.dir()).await;
    let a = lab.start_edge("a").await;
    let _b = lab.start_edge("b").await;
    let failover = Op::Failover {
        service: "svc".into(),
        to: "r2".into(),
    };
    let p = cp
        .api(Some("read-token"))
        .preview(&OpRequest::new(failover, ""))
        .await
        .unwrap();
    assert_eq!(p.serving_instances_after, 2);
    assert_eq!(p.total_instances, 4);
    // Every rule that judged it, with the numbers it judged on, not only
    // the refusals (there are none).
    let rule = |name: &str| {
        p.rules
            .iter()
            .find(|r| r.rule == name)
            .unwrap_or_else(|| panic!("no verdict of {name} in {:?}", p.rules))
    };
    assert!(rule("move_capacity").passed, "{:?}", p.rules);
    assert!(
        rule("move_capacity")
            .message
            .contains("hold 2 of its 4 instances"),
        "{:?}",
        p.rules
    );
    assert!(rule("serving_regions").passed, "{:?}", p.rules);
    assert!(
        rule("serving_regions")
            .message
            .contains("keeps 1 serving region of 2"),
        "{:?}",
        p.rules
    );
    let (code, _, out) = cp.ctl(
        "operate-token",
        &[
            "failover", "svc", "--to", "r2", "--yes", "--reason", "drill",
        ],
    );
    assert_eq!(code, 0, "{out}");
    eventually(
        "r1's edge forwards to r2",
        Duration::from_secs(3),
        || async {
            let u = a.get("/items/1").send().await.unwrap().upstream();
            u.starts_with("r2/").then_some(()).ok_or(u)
        },
    )
    .await;
    assert_eq!(cp.ctl("operate-token", &["failback", "svc"]).0, 0);
    eventually(
        "r1 serves its own again",
        Duration::from_secs(3),
        || async {
            let u = a.get("/items/1").send().await.unwrap().upstream();
            u.starts_with("r1/").then_some(()).ok_or(u)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gray_zone_is_found_and_shifted_away_by_the_playbook() {
    let lab = Topology::new(BIN, &[("r1", &["a", "b", "c"])])
        .with_control_plane()
        .playbooks("auto");
    let ups = lab.start_upstreams().await;
    let cp = lab.start_control().await;
    let api = cp.api(None);
    let edges = lab.start_edges(&["a", "b", "c"]).await;
    let addrs: Vec<_> = edges.iter().map(|e| e.listen).collect();
    let traffic = Traffic::start(&addrs, "svc.test", &[(Method::GET, "/items/1")]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Zone a's instances fail their requests while /health stays green.
    ups["a-1"].set_status(500);
    ups["a-2"].set_status(500);
    eventually(
        "the playbook shifts zone a away",
        Duration::from_secs(15),
        || async {
            let c = api.controls().await.unwrap().controls;
            c.service("svc")
                .and_then(|s| s.zones.get("a"))
                .filter(|z| z.weight == 0.0)
                .map(|_| ())
                .ok_or(format!("{c:?}"))
        },
    )
    .await;
    eventually(
        "zone a's edge serves from other zones",
        Duration::from_secs(3),
        || async {
            let r = edges[0].get("/items/1").send().await.unwrap();
            (r.status == 200 && r.zone() != "a")
                .then_some(())
                .ok_or(format!("{} {}", r.status, r.zone()))
        },
    )
    .await;
    let f = api.findings().await.unwrap();
    assert!(f.findings.iter().any(|x| x.scope == "zone:a"), "{f:?}");
    let h = api.history(50).await.unwrap();
    let acted = h
        .entries
        .iter()
        .find(|e| e.actor.is_playbook())
        .expect("the playbook's change is audited");
    assert!(
        acted.accepted_change(|op| matches!(op, Op::Shift { zone, .. } if zone == "a")),
        "{acted:?}"
    );
    // Ten seconds on, the playbook checks that its users' errors dropped,
    // and says so in a typed outcome.
    eventually(
        "the playbook verifies its shift",
        Duration::from_secs(15),
        || async {
            let h = api.history(50).await.unwrap();
            let v = h.entries.into_iter().find(|e| {
                e.kind == AuditKind::Verification && matches!(e.op, Some(Op::Shift { .. }))
            });
            match v {
                Some(v) if v.check_outcome() == Some(CheckOutcome::Passed) && v.accepted => Ok(()),
                Some(v) => Err(format!("not verified: {v:?}")),
                None => Err("no verification yet".into()),
            }
        },
    )
    .await;
    traffic.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_failing_across_a_region_turn_on_read_only_there_until_they_work_again() {
    let lab = Topology::new(BIN, &[("r1", &["a", "b", "c"])])
        .route_heartbeats()
        .with_control_plane()
        .playbooks("auto");
    let ups = lab.start_upstreams().await;
    let cp = lab.start_control().await;
    let api = cp.api(None);
    let edges = lab.start_edges(&["a", "b", "c"]).await;
    let addrs: Vec<_> = edges.iter().map(|e| e.listen).collect();
    let traffic = Traffic::start(
        &addrs,
        "svc.test",
        &[
            (Method::GET, "/items/1"),
            (Method::GET, "/items/2"),
            (Method::PUT, "/items/3"),
        ],
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The database behind every instance turns writes away; reads work.
    for u in ups.values() {
        u.set_write_status(503);
    }
    let read_only = || async {
        let c = api.controls().await.unwrap().controls;
        c.service("svc")
            .and_then(|s| s.regions.get("r1"))
            .is_some_and(|r| r.read_only)
    };
    eventually(
        "the playbook turns read-only mode on in r1",
        Duration::from_secs(15),
        || async {
            read_only()
                .await
                .then_some(())
                .ok_or("not read-only".to_string())
        },
    )
    .await;
    eventually(
        "writes are refused at the edge, reads served",
        Duration::from_secs(3),
        || async {
            let w = edges[0].put("/items/9").send().await.unwrap();
            let r = edges[0].get("/items/9").send().await.unwrap();
            (w.status == 503 && w.body.contains("read_only") && r.status == 200)
                .then_some(())
                .ok_or(format!("write {} {} / read {}", w.status, w.body, r.status))
        },
    )
    .await;
    let c = api.controls().await.unwrap().controls;
    let svc = &c.services["svc"];
    assert!(svc.zones.is_empty(), "no zone shifted: {svc:?}");
    assert_eq!(
        svc.regions["r1"].state,
        RegionState::In,
        "not evacuated: {svc:?}"
    );
    let f = api.findings().await.unwrap();
    assert!(
        f.findings
            .iter()
            .any(|x| x.scope == "region:r1" && x.kind == "write_path"),
        "{f:?}"
    );
    // Read-only mode turned the writes away, but the write heartbeats still
    // fail: the mode holds for as long as the write path is broken.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(read_only().await, "read-only held while writes still fail");
    for u in ups.values() {
        u.set_write_status(0);
    }
    eventually(
        "read-only mode ends once writes work for the hold",
        Duration::from_secs(20),
        || async {
            (!read_only().await)
                .then_some(())
                .ok_or("still read-only".to_string())
        },
    )
    .await;
    let w = edges[1].put("/items/9").send().await.unwrap();
    assert_eq!(w.status, 200, "{}", w.body);
    traffic.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_alertmanager_alert_naming_a_zone_is_a_finding_and_bad_payloads_are_named() {
    let lab = Topology::new(BIN, &[("r1", &["a", "b", "c"])])
        .with_control_plane()
        .playbooks("recommend");
    let cp = lab.start_control().await;
    let (api, operate) = (cp.api(None), cp.api(Some("operate-token")));
    let alert = json!({
        "version": "4", "groupKey": "g", "truncatedAlerts": 0, "status": "firing", "receiver": "switchyard",
        "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
        "alerts": [{"status": "firing", "labels": {"alertname": "StoreSlow", "switchyard_zone": "b", "service": "svc"},
                    "annotations": {}, "startsAt": "2026-11-21T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "http://prom", "fingerprint": "f1"}]
    });
    let e = api
        .ingest_alertmanager(&alert.to_string())
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(401), "ingest needs a token: {e}");
    let ingested = operate
        .ingest_alertmanager(&alert.to_string())
        .await
        .unwrap();
    assert_eq!(ingested.with_scope, 1);
    eventually("the alert is a finding", Duration::from_secs(5), || async {
        let f = api.findings().await.unwrap();
        f.findings
            .iter()
            .any(|x| x.scope == "zone:b" && x.kind == "alert:StoreSlow")
            .then_some(())
            .ok_or(format!("{f:?}"))
    })
    .await;
    // In recommend mode the playbook says what it would do, and does nothing.
    eventually(
        "the playbook recommends a shift",
        Duration::from_secs(5),
        || async {
            let h = api.history(50).await.unwrap();
            h.entries
                .iter()
                .any(|e| {
                    e.kind == AuditKind::Recommendation
                        && matches!(&e.op, Some(Op::Shift { service, zone, .. })
                            if service == "svc" && zone == "b")
                })
                .then_some(())
                .ok_or(format!("{h:?}"))
        },
    )
    .await;
    assert_eq!(api.controls().await.unwrap().version, 0);
    let bad = alert
        .to_string()
        .replace("\"version\":\"4\"", "\"version\":\"3\"");
    let e = operate.ingest_alertmanager(&bad).await.unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
    assert!(e.to_string().contains("version"), "{e}");
    operate
        .ingest_heartbeat(&json!({"source": "billing", "at_ms": 5}))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn two_control_planes_on_one_etcd_act_as_one_and_either_may_die() {
    let etcd = Etcd::start().await;
    let lab = Topology::new(BIN, &[("r1", &["a", "b", "c"])])
        .with_control_plane()
        .etcd_store(&etcd.endpoint);
    let _ups = lab.start_upstreams().await;
    let one = lab.start_control().await;
    let mut two = lab.start_another_control(8).await;
    // The edges follow the first control plane only.
    let edges = [lab.start_edge("a").await, lab.start_edge("b").await];
    let (code, _, out) = two.ctl(
        "operate-token",
        &["shift", "a", "--service", "svc", "--reason", "via two"],
    );
    assert_eq!(code, 0, "{out}");
    for e in &edges {
        avoids_zone(
            e,
            "a",
            "a change made at the second plane reaches edges following the first",
        )
        .await;
    }
    let (_, h, _) = one.ctl("read-token", &["history"]);
    let h: History = typed(h);
    assert!(
        h.entries
            .iter()
            .any(|e| e.reason == "via two" && e.accepted),
        "the first plane's history holds the second's change: {h:?}"
    );
    // The rules see the shared state: the first plane refuses a second
    // shifted zone in the region, though it never saw the first shift made.
    let refused = one.ctl_refused(
        "operate-token",
        &["shift", "b", "--service", "svc", "--reason", "via one"],
    );
    assert!(refused.refused_by("one_zone_per_region"), "{refused:?}");
    // One plane dies; the other carries on, and the dead one comes back to
    // the state as it is now, not as it left it.
    two.kill9();
    let (code, _, out) = one.ctl("operate-token", &["unshift", "a", "--service", "svc"]);
    assert_eq!(code, 0, "{out}");
    serves_zone(&edges[0], "a", "the edge of zone a serves its zone again").await;
    two.restart().await;
    let c1 = one.api(None).controls().await.unwrap();
    let c2 = two.api(None).controls().await.unwrap();
    assert_eq!(c1.version, c2.version, "{c1:?} / {c2:?}");
    assert_eq!(c1.controls, c2.controls);
    assert!(
        c2.controls
            .service("svc")
            .is_none_or(|s| s.zones.is_empty()),
        "{c2:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plane_on_an_empty_store_takes_no_edge_back_until_an_admin_adopts_it() {
    let lab = Topology::new(BIN, &[("r1", &["a", "b", "c"])]).with_control_plane();
    let _ups = lab.start_upstreams().await;
    let mut cp = lab.start_control().await;
    let edges = [lab.start_edge("a").await, lab.start_edge("b").await];
    let (code, _, out) = cp.ctl(
        "operate-token",
        &["shift", "a", "--service", "svc", "--reason", "gray zone"],
    );
    assert_eq!(code, 0, "{out}");
    avoids_zone(&edges[0], "a", "the shift reaches the edge").await;
    let held = edges[0].status().await.controls;
    let store = held
        .origin
        .clone()
        .expect("the plane's controls name their store")
        .store;
    cp.kill9();

    // Restarted on a mistyped path: an empty store at version 0.
    let typo = lab.dir().join("typo.toml");
    std::fs::write(&typo, lab.config_text().replace("control.db", "contrl.db")).unwrap();
    let mut wrong = ControlProcess::start(lab.bin(), &typo, lab.control_addr(), lab.dir()).await;
    let refused = wrong.ctl_refused(
        "operate-token",
        &[
            "shift",
            "b",
            "--service",
            "svc",
            "--reason",
            "on the wrong store",
        ],
    );
    assert_eq!(refused.error, "store_behind", "{refused:?}");
    assert!(
        refused.reasons[0].contains(&format!("of store {store}"))
            && refused.reasons[0].contains("--adopt"),
        "{refused:?}"
    );
    // Nothing was pushed: the edges keep the shift and the version.
    tokio::time::sleep(Duration::from_secs(2)).await;
    avoids_zone(&edges[0], "a", "the edge keeps its shift").await;
    let still = edges[1].status().await.controls;
    assert_eq!(
        (still.version, still.origin.as_ref()),
        (held.version, held.origin.as_ref())
    );
    wrong.kill9();

    // An admin says this store is the one: its controls replace the edges'.
    let adopted = ControlProcess::start_with(
        lab.bin(),
        &typo,
        lab.control_addr(),
        lab.dir(),
        &["--adopt"],
    )
    .await;
    serves_zone(
        &edges[0],
        "a",
        "the adopted store's controls (no shift) reach the edge",
    )
    .await;
    let now = edges[1].status().await.controls;
    let origin = now.origin.expect("origin");
    assert!(origin.supersedes.contains(&store), "{origin:?}");
    let (_, h, _) = adopted.ctl("read-token", &["history"]);
    let h: History = typed(h);
    assert!(
        h.entries.iter().any(|e| e.accepted
            && matches!(&e.actor, Actor::Person { name } if name.contains("--adopt"))
            && e.reason.contains(&store)),
        "the adoption is audited: {h:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_safety_rules_remember_across_a_kill_9() {
    let lab = Topology::new(BIN, &[("r1", &["a", "b", "c"])]).with_control_plane();
    let _ups = lab.start_upstreams().await;
    // A flip wait of ten minutes: no restart may shorten it.
    let cfg = lab.dir().join("slow-flips.toml");
    std::fs::write(
        &cfg,
        lab.config_text()
            .replace("flip_wait_ms = 0", "flip_wait_ms = 600000"),
    )
    .unwrap();
    let mut cp = ControlProcess::start(lab.bin(), &cfg, lab.control_addr(), lab.dir()).await;
    let (code, _, out) = cp.ctl(
        "operate-token",
        &["shift", "a", "--service", "svc", "--reason", "gray"],
    );
    assert_eq!(code, 0, "{out}");
    let unshift = ["unshift", "a", "--service", "svc", "--reason", "too soon"];
    assert!(cp
        .ctl_refused("operate-token", &unshift)
        .refused_by("flip_wait"));
    cp.kill9();
    cp.restart().await;
    let (code, v, out) = cp.ctl("operate-token", &unshift);
    assert_eq!(code, 1, "a restart grants no early flip: {out}");
    let refused: ErrorBody = typed(v);
    assert!(refused.refused_by("flip_wait"), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_ends_the_watch_streams_and_the_plane_exits() {
    let lab = Topology::new(BIN, &[("r1", &["a", "b"])]).with_control_plane();
    let _ups = lab.start_upstreams().await;
    let mut cp = lab.start_control().await;
    let edges = [lab.start_edge("a").await, lab.start_edge("b").await];
    for e in &edges {
        eventually(
            "the edge watches the plane",
            Duration::from_secs(5),
            || async {
                e.status()
                    .await
                    .control_plane
                    .connected
                    .then_some(())
                    .ok_or("not connected".to_string())
            },
        )
        .await;
    }
    let exited = cp.terminate(Duration::from_secs(10)).await;
    assert!(
        exited.is_some_and(|s| s.success()),
        "SIGTERM with edges watching must drain and exit: {exited:?}"
    );
    eventually(
        "the edges see the plane gone",
        Duration::from_secs(5),
        || async {
            let s = edges[0].status().await;
            (!s.control_plane.connected)
                .then_some(())
                .ok_or("still connected".to_string())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plane_started_without_its_etcd_serves_its_snapshot_and_says_so() {
    let mut etcd = Etcd::start().await;
    let lab = Topology::new(BIN, &[("r1", &["a", "b", "c"])])
        .with_control_plane()
        .etcd_store(&etcd.endpoint);
    let _ups = lab.start_upstreams().await;
    let mut cp = lab.start_control().await;
    let (code, _, out) = cp.ctl(
        "operate-token",
        &["shift", "a", "--service", "svc", "--reason", "gray"],
    );
    assert_eq!(code, 0, "{out}");
    let before = cp.api(None).controls().await.unwrap();
    cp.kill9();
    etcd.kill9();
    // The store is gone: the plane starts anyway, on what it last published.
    cp.restart().await;
    let api = cp.api(Some("operate-token"));
    let now = api.controls().await.unwrap();
    assert_eq!(
        (now.version, &now.controls.services),
        (before.version, &before.controls.services)
    );
    let status = api.status().await.unwrap();
    assert!(
        status
            .problem
            .as_deref()
            .is_some_and(|p| p.contains("unreachable") && p.contains("snapshot")),
        "{status:?}"
    );
    // An edge starting now gets that state from it.
    let edge = lab.start_edge("b").await;
    eventually(
        "the edge follows the snapshot",
        Duration::from_secs(5),
        || async {
            let c = edge.status().await.controls;
            (c.version == before.version)
                .then_some(())
                .ok_or(format!("{c:?}"))
        },
    )
    .await;
    // The store is back: the plane serves its state and says nothing more.
    etcd.restart();
    eventually(
        "the plane takes the store's state again",
        Duration::from_secs(20),
        || async {
            let s = api.status().await.map_err(|e| e.to_string())?;
            s.problem
                .is_none()
                .then_some(())
                .ok_or(format!("{:?}", s.problem))
        },
    )
    .await;
    let (code, _, out) = cp.ctl("operate-token", &["unshift", "a", "--service", "svc"]);
    assert_eq!(code, 0, "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_retried_with_its_idempotency_key_is_applied_once() {
    let lab = Topology::new(BIN, &[("r1", &["a", "b", "c"])]).with_control_plane();
    let _ups = lab.start_upstreams().await;
    let cp = lab.start_control().await;
    let api = cp.api(Some("operate-token"));
    let req = OpRequest::new(shift("a"), "gray");
    let first = api.apply_once(&req, "retry-1", 1).await.unwrap();
    assert!(first.changed);
    // The same change again (a retry after a lost answer): a shift renewed
    // would be a new version, but the key says it was applied already.
    let again = api.apply_once(&req, "retry-1", 1).await.unwrap();
    assert_eq!((again.changed, again.version), (false, first.version));
    let h = api.history(50).await.unwrap();
    let shifts = h
        .entries
        .iter()
        .filter(|e| e.accepted && matches!(&e.op, Some(Op::Shift { .. })))
        .count();
    assert_eq!(shifts, 1, "{h:?}");
    // Another key is another change.
    let other = api.apply_once(&req, "retry-2", 1).await.unwrap();
    assert!(other.changed && other.version > first.version, "{other:?}");
}

//! Controls and config over time: sources, static stability without the
//! control plane, last-known-good across restarts, and refusals that change nothing.

use std::process::Command;
use std::time::Duration;

use serde_json::json;
use switchyard_testkit::{eventually, Req, Topology, WatchServer, ADMIN_TOKEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

fn shift_a() -> serde_json::Value {
    json!({"version": 7, "services": {"svc": {"zones": {"a": {"weight": 0.0, "reason": "cp"}}}}})
}

async fn served_zone(e: &switchyard_testkit::EdgeProcess) -> String {
    e.get("/items/1").send().await.unwrap().zone()
}

#[tokio::test(flavor = "multi_thread")]
async fn losing_the_control_plane_changes_nothing_and_a_restart_uses_last_known_good() {
    let lab0 = Topology::new(BIN, &[("r1", &["a", "b"])]);
    let cp_addr = lab0.aux_addr(5);
    let lab = lab0.edge_toml(&format!("control_url = \"http://{cp_addr}\""));
    let _ups = lab.start_upstreams().await;
    let cp = WatchServer::start(cp_addr, shift_a()).await;
    let mut a = lab.start_edge("a").await;
    eventually(
        "the watch stream's shift is applied",
        Duration::from_secs(5),
        || async {
            let z = served_zone(&a).await;
            (z == "b").then_some(()).ok_or(z)
        },
    )
    .await;
    assert!(a.status().await.control_plane.connected);

    cp.stop();
    eventually(
        "the edge notices the control plane is gone",
        Duration::from_secs(5),
        || async {
            let s = a.status().await;
            (!s.control_plane.connected)
                .then_some(())
                .ok_or(format!("{s:?}"))
        },
    )
    .await;
    for _ in 0..10 {
        assert_eq!(
            served_zone(&a).await,
            "b",
            "routing must not change without the control plane"
        );
    }

    a.kill9();
    a.restart().await;
    let s = a.status().await;
    assert_eq!(s.controls.source, "last-known-good", "{s:?}");
    assert_eq!(s.controls.version, 7);
    assert_eq!(served_zone(&a).await, "b");

    // The control plane returns with new state; the edge catches up in full.
    let cp = WatchServer::start(cp_addr, json!({"version": 8})).await;
    eventually(
        "the reconnected edge receives the full state",
        Duration::from_secs(10),
        || async {
            let z = served_zone(&a).await;
            (z == "a").then_some(()).ok_or(z)
        },
    )
    .await;
    let mut v9 = shift_a();
    v9["version"] = json!(9);
    cp.push(v9);
    eventually(
        "a pushed change arrives",
        Duration::from_secs(5),
        || async {
            let z = served_zone(&a).await;
            (z == "b").then_some(()).ok_or(z)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_controls_survive_kill_9() {
    let lab = Topology::new(BIN, &[("r1", &["a", "b"])]);
    let _ups = lab.start_upstreams().await;
    let mut a = lab.start_edge("a").await;
    assert_eq!(a.put_controls(&shift_a()).await.status, 200);
    a.kill9();
    a.restart().await;
    assert_eq!(served_zone(&a).await, "b");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_controls_are_refused_with_reasons_and_change_nothing() {
    let lab = Topology::new(BIN, &[("r1", &["a", "b"])]);
    let _ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    a.put_controls(&shift_a()).await;
    let before = Req::get(a.admin, "/controls").send().await.unwrap().body;

    let r = a
        .put_controls(&json!({"services": {"svc": {"zones": {"nowhere": {"weight": 3}}}}}))
        .await;
    assert_eq!(r.status, 400);
    let reasons = r.json()["reasons"].clone();
    assert!(
        reasons
            .to_string()
            .contains("services.svc.zones.nowhere: unknown zone"),
        "{reasons}"
    );
    assert!(
        reasons
            .to_string()
            .contains("services.svc.zones.nowhere.weight: must be a weight between 0 and 1, got 3"),
        "{reasons}"
    );

    let r = Req::put(a.admin, "/controls")
        .bearer(ADMIN_TOKEN)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 400);
    assert!(
        r.json()["reasons"][0].as_str().unwrap().contains("line 1"),
        "{}",
        r.body
    );

    let r = Req::put(a.admin, "/controls")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 401);
    let r = Req::put(a.admin, "/controls")
        .bearer("wrong-token")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 401);

    assert_eq!(
        Req::get(a.admin, "/controls").send().await.unwrap().body,
        before
    );
    assert_eq!(served_zone(&a).await, "b");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_reload_that_fails_validation_keeps_the_running_config() {
    let lab = Topology::new(BIN, &[("r1", &["a"])]);
    let _ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    // A keep-alive connection opened before the reloads must keep working.
    let mut conn = tokio::net::TcpStream::connect(a.listen).await.unwrap();
    let ask = b"GET /items/1 HTTP/1.1\r\nhost: svc.test\r\n\r\n";
    conn.write_all(ask).await.unwrap();
    assert!(read_response(&mut conn).await.starts_with("HTTP/1.1 200"));

    let bad = lab.config_text().replace("min_healthy = 0.5\n", "");
    std::fs::write(lab.config_path(), bad).unwrap();
    let r = Req::post(a.admin, "/reload")
        .bearer(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.body.contains("service.svc.min_healthy: required"),
        "{}",
        r.body
    );
    tokio::time::sleep(Duration::from_millis(1200)).await; // the file watcher sees it too
    assert_eq!(a.status().await.services[0].floor, 1);
    assert_eq!(a.get("/items/1").send().await.unwrap().status, 200);

    // A valid change is picked up by the file watcher without a restart.
    std::fs::write(
        lab.config_path(),
        lab.config_text()
            .replace("min_healthy = 0.5", "min_healthy = 1"),
    )
    .unwrap();
    eventually(
        "the new floor is in force",
        Duration::from_secs(5),
        || async {
            let f = a.status().await.services[0].floor;
            (f == 2).then_some(()).ok_or(f.to_string())
        },
    )
    .await;
    conn.write_all(ask).await.unwrap();
    assert!(
        read_response(&mut conn).await.starts_with("HTTP/1.1 200"),
        "the old connection still works"
    );
    let m = a.metrics().await;
    assert!(
        m.contains("switchyard_updates_total{source=\"config\",result=\"refused\"}"),
        "{m}"
    );
}

async fn read_response(conn: &mut tokio::net::TcpStream) -> String {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn validate_prints_every_error_and_exits_2() {
    let lab = Topology::new(BIN, &[("r1", &["a"])]).without_floor();
    let text = lab
        .config_text()
        .replace("zone = \"a\"\naddr", "zone = \"q\"\naddr");
    std::fs::write(lab.config_path(), text).unwrap();
    let out = Command::new(BIN)
        .arg("validate")
        .arg(lab.config_path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid (3 problems)"), "{err}");
    assert!(err.contains("service.svc.min_healthy: required"), "{err}");
    assert!(
        err.contains("service.svc.instance.a-1.zone: unknown zone \"q\""),
        "{err}"
    );
    assert!(
        err.contains("service.svc.instance.a-2.zone: unknown zone \"q\""),
        "{err}"
    );

    let ok = Command::new(BIN)
        .args(["validate", "--json"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/switchyard.toml"
        ))
        .output()
        .unwrap();
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["summary"]["instances"], 12);
}

/// The `[control.*]` tables are checked by `validate` too, with the rest of
/// the file, rather than first when the control plane starts.
#[test]
fn validate_checks_the_control_tables_with_the_rest_of_the_file() {
    let lab = Topology::new(BIN, &[("r1", &["a"])])
        .with_control_plane()
        .control_toml("[control.notify.retry]\nattempts = 0\n[control.detect]\nwindow_seconds = 3\n[control.console]\nreports_dir = \"\"");
    let control_only = lab.config_text().replace(
        "failback_hold_ms = 3000",
        "failback_hold_ms = 3000\nevacuation_steps = 0",
    );
    let validate = |text: &str, json: bool| {
        std::fs::write(lab.config_path(), text).unwrap();
        let mut c = Command::new(BIN);
        c.arg("validate").arg(lab.config_path());
        if json {
            c.arg("--json");
        }
        c.output().unwrap()
    };
    let control_problems = [
        "control.detect: unknown field `window_seconds`",
        "control.notify.retry.attempts: must be at least 1",
        "control.playbook.evacuation_steps: at least 1",
        "control.console.reports_dir: must not be empty",
    ];

    // The rest is valid: the control tables alone make the file invalid.
    let out = validate(&control_only, false);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid (4 problems)"), "{err}");
    for p in control_problems {
        assert!(err.contains(p), "{p} in {err}");
    }

    // Every problem of the file at once, the model's and the control plane's.
    let both = control_only.replace("min_healthy = 0.5\n", "");
    let out = validate(&both, true);
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], false);
    let errors: Vec<&str> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(errors.len(), 5, "{errors:?}");
    assert!(
        errors[0].starts_with("service.svc.min_healthy: required"),
        "{errors:?}"
    );
    for p in control_problems {
        assert!(errors.iter().any(|e| e.starts_with(p)), "{p} in {errors:?}");
    }
}

#[test]
fn an_edge_refuses_to_start_on_a_config_without_a_floor() {
    let lab = Topology::new(BIN, &[("r1", &["a"])]).without_floor();
    let cfg = lab.write_config();
    let out = Command::new(BIN)
        .args(["edge", "--zone", "a", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("service.svc.min_healthy: required"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_controls_file_is_watched_and_a_bad_one_is_refused() {
    let lab =
        Topology::new(BIN, &[("r1", &["a", "b"])]).edge_toml("controls_file = \"controls.json\"");
    let _ups = lab.start_upstreams().await;
    let file = lab.dir().join("controls.json");
    std::fs::write(&file, shift_a().to_string()).unwrap();
    let a = lab.start_edge("a").await;
    assert_eq!(served_zone(&a).await, "b", "the file is read at start");
    assert_eq!(a.status().await.controls.source, "file");
    std::fs::write(
        &file,
        "{\"services\": {\"svc\": {\"zones\": {\"a\": {\"weight\": 7}}}}}",
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(served_zone(&a).await, "b", "a refused file changes nothing");
    std::fs::write(&file, "{\"version\": 9}").unwrap();
    eventually(
        "the edited file is applied",
        Duration::from_secs(5),
        || async {
            let z = served_zone(&a).await;
            (z == "a").then_some(()).ok_or(z)
        },
    )
    .await;
    assert!(a
        .metrics()
        .await
        .contains("switchyard_updates_total{source=\"file\",result=\"refused\"} 1"));
}

/// A second edge of a zone would overwrite its last-known-good file, and one
/// on the same address would share the port unseen: both refuse to start.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_edge_of_the_zone_or_on_its_address_refuses_to_start() {
    let lab = Topology::new(BIN, &[("r1", &["a", "b"])]);
    let _ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    // What a second edge says and how it exits; killed if it keeps running.
    let second = |zone: &str, extra: &[String]| {
        let mut child = Command::new(BIN)
            .args(["edge", "--config"])
            .arg(lab.config_path())
            .args(["--zone", zone, "--admin", "127.0.0.1:0"])
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run switchyard edge");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        child.wait_with_output().unwrap()
    };
    let out = second("a", &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a second edge of zone a started: {err}"
    );
    assert!(err.contains("another edge of zone a is running"), "{err}");
    assert!(err.contains("a.lock is held); refusing to start"), "{err}");
    let out = second("b", &["--listen".into(), a.listen.to_string()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "zone b started on a's address: {err}"
    );
    assert!(
        err.contains(&format!("another edge is listening on {}", a.listen)),
        "{err}"
    );
    // The first edge never noticed.
    assert_eq!(a.get("/items/1").send().await.unwrap().status, 200);
}

/// The controls file says version 8; the operator accepts version 9 through
/// the admin API. After a restart the edge serves 9: the file, read after
/// the last-known-good, is older and is refused.
#[tokio::test(flavor = "multi_thread")]
async fn an_acknowledged_change_newer_than_the_controls_file_survives_a_restart() {
    let lab =
        Topology::new(BIN, &[("r1", &["a", "b"])]).edge_toml("controls_file = \"controls.json\"");
    let _ups = lab.start_upstreams().await;
    std::fs::write(
        lab.dir().join("controls.json"),
        json!({"version": 8}).to_string(),
    )
    .unwrap();
    let mut a = lab.start_edge("a").await;
    assert_eq!(a.status().await.controls.version, 8);
    let mut v9 = shift_a();
    v9["version"] = json!(9);
    assert_eq!(a.put_controls(&v9).await.status, 200);
    assert_eq!(served_zone(&a).await, "b");

    a.kill9();
    a.restart().await;
    let s = a.status().await;
    assert_eq!(
        (s.controls.version, s.controls.source.as_str()),
        (9, "last-known-good"),
        "{s:?}"
    );
    assert_eq!(served_zone(&a).await, "b");
    assert!(a
        .metrics()
        .await
        .contains("switchyard_updates_total{source=\"file\",result=\"refused\"} 1"));

    // An older document through the admin API is refused and changes nothing.
    let r = a.put_controls(&json!({"version": 3})).await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("older than"), "{}", r.body);
    assert_eq!(a.status().await.controls.version, 9);
    assert_eq!(served_zone(&a).await, "b");
}

/// A torn or empty last-known-good file is not "no controls": the edge says
/// so (error log, `/status`, a metric) and takes the controls file.
#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_last_known_good_file_is_reported_and_the_controls_file_wins() {
    let lab =
        Topology::new(BIN, &[("r1", &["a", "b"])]).edge_toml("controls_file = \"controls.json\"");
    let _ups = lab.start_upstreams().await;
    std::fs::write(lab.dir().join("controls.json"), shift_a().to_string()).unwrap();
    let state = lab.dir().join("state");
    std::fs::create_dir_all(&state).unwrap();
    for garbage in ["{\"saved_at_ms\": 1, \"sou", ""] {
        std::fs::write(state.join("a.controls.lkg.json"), garbage).unwrap();
        let mut a = lab.start_edge("a").await;
        let s = a.status().await;
        let err = s.controls.last_known_good_error.clone();
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("a.controls.lkg.json")),
            "{s:?}"
        );
        assert_eq!(
            (s.controls.version, s.controls.source.as_str()),
            (7, "file")
        );
        assert_eq!(served_zone(&a).await, "b");
        assert!(a
            .metrics()
            .await
            .contains("switchyard_last_known_good_unusable 1"));
        assert!(a.log().contains("last-known-good controls are unusable"));
        a.kill9();
    }
}

fn admin_write(a: &switchyard_testkit::EdgeProcess, method: &str, body: &str) -> Req {
    Req::new(method.parse().unwrap(), a.admin, "/controls")
        .bearer(ADMIN_TOKEN)
        .body(body.to_string())
}

/// The README's read-only switch is a merge (`PATCH`), so it keeps an active
/// zonal shift; `If-Match` makes a write conditional on the version it was
/// based on; a document that is not a JSON object is refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_patch_keeps_what_it_does_not_name_and_if_match_refuses_a_stale_write() {
    let lab = Topology::new(BIN, &[("r1", &["a", "b"])]);
    let _ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    assert_eq!(a.put_controls(&shift_a()).await.status, 200);

    let r = admin_write(&a, "PATCH", r#"{"services":{"svc":{"read_only":true}}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["version"], 8, "a patch without a version bumps it");
    let s = a.status().await;
    assert!(s.services[0].read_only, "{s:?}");
    assert_eq!(served_zone(&a).await, "b", "the shift is still in force");
    assert_eq!(a.put("/items/1").send().await.unwrap().status, 503);

    let before = Req::get(a.admin, "/controls").send().await.unwrap();
    assert_eq!(before.header("etag").as_deref(), Some("\"8\""));
    for method in ["PUT", "PATCH"] {
        let r = admin_write(&a, method, r#"{"version": 20}"#)
            .header("if-match", "\"7\"")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status, 412, "{method}: {}", r.body);
        assert_eq!(r.json()["current_version"], 8, "{}", r.body);
        assert_eq!(r.header("etag").as_deref(), Some("\"8\""));
    }
    for (method, body) in [("PUT", "[]"), ("PATCH", "[1]"), ("PATCH", "\"x\"")] {
        let r = admin_write(&a, method, body).send().await.unwrap();
        assert_eq!(r.status, 400, "{method} {body}: {}", r.body);
        assert!(
            r.body.contains("a controls document is a JSON object"),
            "{}",
            r.body
        );
    }
    assert_eq!(
        Req::get(a.admin, "/controls").send().await.unwrap().body,
        before.body,
        "refused writes change nothing"
    );

    let r = admin_write(&a, "PATCH", r#"{"services":{"svc":{"read_only":null}}}"#)
        .header("if-match", "8")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["version"], 9);
    assert!(!a.status().await.services[0].read_only);
    assert_eq!(served_zone(&a).await, "b");
}

/// A control plane whose store was wiped comes back at a low version: the
/// edge refuses what it sends, loudly, and keeps its newer set.
#[tokio::test(flavor = "multi_thread")]
async fn an_older_watch_stream_is_refused_loudly_and_changes_nothing() {
    let lab0 = Topology::new(BIN, &[("r1", &["a", "b"])]);
    let cp_addr = lab0.aux_addr(5);
    let lab = lab0.edge_toml(&format!("control_url = \"http://{cp_addr}\""));
    let _ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    assert_eq!(a.put_controls(&shift_a()).await.status, 200);
    let _cp = WatchServer::start(cp_addr, json!({"version": 0})).await;
    eventually(
        "the stale watch stream is refused",
        Duration::from_secs(10),
        || async {
            let m = a.metrics().await;
            m.contains("switchyard_updates_total{source=\"control-plane\",result=\"refused\"}")
                .then_some(())
                .ok_or(m)
        },
    )
    .await;
    assert_eq!(a.status().await.controls.version, 7);
    assert_eq!(served_zone(&a).await, "b");
    assert!(
        a.log()
            .contains("is older than version 7, which is in force"),
        "{}",
        a.log()
    );
}

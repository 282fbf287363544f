//! The control plane's API against input nobody should send: bad control
//! tables, absurd durations, huge fields, strangers, changes that change
//! nothing, and many writes at once — each answered clearly, each leaving
//! the controls as they were.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use http::Method;
use serde_json::json;
use switchyard_api::{OpRequest, SilenceRequest};
use switchyard_model::Op;
use switchyard_testkit::Topology;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

fn lab() -> Topology {
    Topology::new(BIN, &[("r1", &["a", "b", "c"])]).with_control_plane()
}

fn read_only(on: bool) -> Op {
    Op::ReadOnly {
        service: "svc".into(),
        region: None,
        on,
    }
}

#[test]
fn every_bad_field_of_every_control_table_is_named_with_its_value() {
    let lab = lab()
        .control_toml("[control.detect]\nopen_m = 0\nchi_p = 2.0\n[control.incidents]\nkeep_s = 0");
    let text = lab
        .config_text()
        .replace(
            "max_removal_per_hour = 0.6",
            "max_removal_per_hour = -3.0\nmax_shift_ms = 0",
        )
        .replace(
            "failback_hold_ms = 3000",
            "failback_hold_ms = 3000\nshift_for_ms = 0",
        );
    std::fs::write(lab.config_path(), &text).unwrap();
    let out = Command::new(BIN)
        .args(["validate", "--json"])
        .arg(lab.config_path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let errors: Vec<&str> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    for (path, value) in [
        ("control.safety.max_removal_per_hour:", "got -3"),
        ("control.safety.max_shift_ms:", "got 0"),
        ("control.playbook.shift_for_ms:", "got 0"),
        ("control.detect.open_m:", "got 0"),
        ("control.detect.chi_p:", "got 2"),
        ("control.incidents.keep_s:", "got 0"),
    ] {
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with(path) && e.contains(value)),
            "{path} … {value} in {errors:?}"
        );
    }
    assert_eq!(errors.len(), 6, "{errors:?}");

    // The control plane refuses to start on the same problems.
    let mut child = Command::new(BIN)
        .args(["control", "--config"])
        .arg(lab.config_path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(10) {
            child.kill().unwrap();
            panic!("the control plane started on an invalid config");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(2));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("control.safety.max_removal_per_hour"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn silences_made_at_once_each_get_their_own_id() {
    let lab = lab();
    let cp = lab.start_control().await;
    let api = cp.api(Some("operate-token"));
    let mut made = tokio::task::JoinSet::new();
    for i in 0..20 {
        let api = api.clone();
        made.spawn(async move {
            let req = SilenceRequest {
                service: Some("svc".into()),
                severity: None,
                scope_prefix: None,
                duration: "1h".into(),
                reason: format!("maintenance {i}"),
            };
            api.add_silence(&req).await.unwrap().id
        });
    }
    let ids: BTreeSet<String> = made.join_all().await.into_iter().collect();
    assert_eq!(ids.len(), 20, "{ids:?}");
    let stored: BTreeSet<String> = api
        .silences()
        .await
        .unwrap()
        .silences
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(stored, ids);
}

#[tokio::test(flavor = "multi_thread")]
async fn absurd_durations_are_refused_naming_for_and_never_wrap() {
    let lab = lab();
    let cp = lab.start_control().await;
    let operate = cp.api(Some("operate-token"));
    for (for_, want) in [
        ("2305843009213697552s", "for: "),
        // Beyond the rules' longest shift (72 h by default).
        ("100d", "control.safety.max_shift_ms"),
    ] {
        let req = json!({
            "op": {"op": "shift", "service": "svc", "zone": "a", "for": for_},
            "reason": "x"
        });
        let r = operate
            .raw(Method::POST, "/v1/ops", Some(&req.to_string()))
            .await
            .unwrap();
        assert_eq!(r.status, 400, "{for_}: {}", r.body);
        assert!(
            r.body.contains("for: ") && r.body.contains(want),
            "{for_}: {}",
            r.body
        );
    }
    let silence = json!({"for": "2305843009213697552s", "reason": "x"});
    let r = operate
        .raw(Method::POST, "/v1/silences", Some(&silence.to_string()))
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("for: "), "{}", r.body);
    assert!(operate.silences().await.unwrap().silences.is_empty());
    let c = operate.controls().await.unwrap();
    assert_eq!(c.version, 0, "nothing changed: {c:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn fields_and_bodies_over_their_limits_are_refused_naming_the_limit() {
    let lab = lab();
    let cp = lab.start_control().await;
    let operate = cp.api(Some("operate-token"));
    let shift = |reason: String| {
        let op = Op::Shift {
            service: "svc".into(),
            zone: "a".into(),
            for_: Duration::from_secs(60),
        };
        OpRequest::new(op, reason)
    };
    let e = operate
        .apply(&shift("x".repeat(1500 * 1024)))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(413), "{e}");
    assert!(e.to_string().contains("body: at most"), "{e}");
    let e = operate.apply(&shift("x".repeat(2048))).await.unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
    assert!(
        e.to_string()
            .contains("reason: at most 1024 bytes, got 2048"),
        "{e}"
    );
    let opened = operate
        .open_incident(&switchyard_api::OpenIncident {
            service: "svc".into(),
            title: "slow".into(),
            severity: None,
        })
        .await
        .unwrap();
    let e = operate
        .note(&opened.id, &"n".repeat(5000))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
    assert!(e.to_string().contains("text: at most 4096 bytes"), "{e}");
    assert_eq!(operate.controls().await.unwrap().version, 0);
    assert!(operate
        .incident(&opened.id)
        .await
        .unwrap()
        .timeline
        .iter()
        .all(|e| e.text.len() < 5000));
}

#[tokio::test(flavor = "multi_thread")]
async fn setting_what_is_already_set_commits_nothing() {
    let lab = lab();
    let cp = lab.start_control().await;
    let operate = cp.api(Some("operate-token"));
    // Turning off what was never on.
    let a = operate
        .apply(&OpRequest::new(read_only(false), "x"))
        .await
        .unwrap();
    assert!(!a.changed && a.version == 0, "{a:?}");
    let a = operate
        .apply(&OpRequest::new(read_only(true), "store impaired"))
        .await
        .unwrap();
    assert!(a.changed && a.version == 1, "{a:?}");
    let again = operate
        .apply(&OpRequest::new(read_only(true), "still impaired"))
        .await
        .unwrap();
    assert!(!again.changed, "{again:?}");
    assert_eq!(again.version, 1);
    let h = operate.history(50).await.unwrap();
    assert_eq!(h.entries.len(), 1, "only the real change is audited: {h:?}");
    assert_eq!(operate.controls().await.unwrap().version, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn strangers_are_turned_away_before_their_body_is_read_and_force_is_audited() {
    let lab = lab();
    let cp = lab.start_control().await;
    let stranger = cp.api(None);
    for path in [
        "/v1/ops",
        "/v1/silences",
        "/v1/incidents",
        "/v1/ingest/heartbeat",
    ] {
        let r = stranger
            .raw(Method::POST, path, Some("{garbage"))
            .await
            .unwrap();
        assert_eq!(r.status, 401, "{path}: {}", r.body);
    }
    let failover = Op::Failover {
        service: "svc".into(),
        to: "r1".into(),
    };
    let e = stranger
        .preview(&OpRequest::new(failover.clone(), ""))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(401), "{e}");
    let p = cp
        .api(Some("read-token"))
        .preview(&OpRequest::new(failover, ""))
        .await
        .unwrap();
    assert!(p.allowed, "{p:?}");

    // Force is audited even when no rule had to be overridden.
    let admin = cp.api(Some("admin-token"));
    let op = Op::Shift {
        service: "svc".into(),
        zone: "a".into(),
        for_: Duration::from_secs(60),
    };
    admin
        .apply(&OpRequest::new(op, "forced anyway").force(true))
        .await
        .unwrap();
    let h = admin.history(1).await.unwrap();
    assert_eq!(h.entries[0].detail["forced"], true, "{h:?}");

    // A whole document is audited with what it changed.
    let mut controls = admin.controls().await.unwrap().controls;
    controls.services.get_mut("svc").unwrap().read_only = true;
    let replace = Op::Replace { controls };
    admin
        .apply(&OpRequest::new(replace, "restore"))
        .await
        .unwrap();
    let h = admin.history(1).await.unwrap();
    let diff = h.entries[0].detail["diff"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        diff,
        vec![json!({"path": "services.svc.read_only", "before": false, "after": true})],
        "{h:?}"
    );
}

//! Incidents end to end with real processes: a gray zone becomes one
//! incident whose timeline the control plane fills in, people are told
//! through real HTTP receivers (one of which fails at first), people take it
//! from there, and the incident survives kill -9 of the control plane. A
//! fault that comes back reopens its incident (across a restart too), and a
//! playbook action that did not help escalates and pages.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::Method;
use serde_json::Value;
use switchyard_api::{
    Client, IncidentQuery, IncidentSummary, OpenIncident, ServiceHealth, SilenceRequest,
    StageChange, StatusChange,
};
use switchyard_model::incident::{EntryKind, Stage, Status};
use switchyard_model::notice::Silence;
use switchyard_model::{AuditKind, CheckOutcome, Op};
use switchyard_testkit::receiver::Receiver;
use switchyard_testkit::{eventually, Topology, Traffic};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

async fn incidents(api: &Client) -> Vec<IncidentSummary> {
    api.incidents(&IncidentQuery::default())
        .await
        .unwrap()
        .incidents
}

fn status(status: &str, note: &str) -> StatusChange {
    StatusChange {
        status: status.into(),
        note: note.into(),
    }
}

fn stage(stage: &str, note: &str) -> StageChange {
    StageChange {
        stage: Some(stage.into()),
        note: note.into(),
    }
}

fn open(service: &str, title: &str, severity: Option<&str>) -> OpenIncident {
    OpenIncident {
        service: service.into(),
        title: title.into(),
        severity: severity.map(str::to_string),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gray_zone_is_one_incident_told_mitigated_resolved_and_kept() {
    let hook: SocketAddr = "127.0.9.41:9000".parse().unwrap();
    let chat: SocketAddr = "127.0.9.42:9000".parse().unwrap();
    let webhook = Receiver::start(hook).await;
    let slack = Receiver::start(chat).await;
    // The on-call webhook is down at first: the first two attempts fail.
    webhook.fail_first(2, 503);
    // A short group interval: this story is about delivery and retries; the
    // interval has a test of its own in switchyard-notify.
    let notify = format!(
        "[control.incidents]\nresolve_after_ms = 15000\n\
         [control.notify]\ngroup_wait_ms = 500\ngroup_interval_ms = 1000\n[control.notify.retry]\nattempts = 4\ninitial_backoff_ms = 100\n\
         [[control.notify.receiver]]\nname = \"oncall\"\nkind = \"webhook\"\nurl = \"{}\"\n\
         [[control.notify.receiver]]\nname = \"chat\"\nkind = \"slack\"\nurl = \"{}\"\n\
         [[control.notify.route]]\nreceivers = [\"oncall\", \"chat\"]\n",
        webhook.url("/hook"),
        slack.url("/slack")
    );
    let lab = Topology::new(BIN, &[("r1", &["a", "b", "c"])])
        .with_control_plane()
        .playbooks("auto")
        .control_toml(&notify);
    let ups = lab.start_upstreams().await;
    let mut cp = lab.start_control().await;
    let api = cp.api(Some("operate-token"));
    let edges = lab.start_edges(&["a", "b", "c"]).await;
    let addrs: Vec<_> = edges.iter().map(|e| e.listen).collect();
    let traffic = Traffic::start(&addrs, "svc.test", &[(Method::GET, "/items/1")]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        incidents(&api).await.is_empty(),
        "a healthy start opens nothing"
    );

    // Zone a's instances fail their requests while /health stays green.
    ups["a-1"].set_status(500);
    ups["a-2"].set_status(500);
    eventually(
        "one incident opens, the zone is shifted and it is mitigated",
        Duration::from_secs(30),
        || async {
            let list = incidents(&api).await;
            match &list[..] {
                [i] if i.stages.contains_key(&Stage::Mitigated) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let id = incidents(&api).await[0].id.clone();
    // The zone is fixed; the playbook fails back later, the incident resolves.
    ups["a-1"].set_status(200);
    ups["a-2"].set_status(200);
    eventually(
        "the incident recovers and resolves",
        Duration::from_secs(40),
        || async {
            let i = api.incident(&id).await.unwrap();
            (i.status == Status::Resolved)
                .then_some(())
                .ok_or(format!("{:?} {:?}", i.status, i.stages))
        },
    )
    .await;
    traffic.stop().await;
    let i = api.incident(&id).await.unwrap();
    assert_eq!(i.service, "svc");
    assert_eq!(
        i.scopes,
        ["zone:a"],
        "one incident for the zone: {:?}",
        i.findings
    );
    let st = |s: Stage| {
        *i.stages
            .get(&s)
            .unwrap_or_else(|| panic!("no stage {s:?}: {:?}", i.stages))
    };
    assert!(st(Stage::Occurred) <= st(Stage::Detected));
    assert!(st(Stage::Detected) <= st(Stage::Notified));
    assert!(st(Stage::Detected) <= st(Stage::Mitigated));
    assert!(st(Stage::Mitigated) <= st(Stage::Recovered));
    // Every delivery attempt is in the timeline: two failures, then delivered.
    let attempts: Vec<&Value> = i
        .timeline
        .iter()
        .filter(|e| e.kind == EntryKind::Notification && e.detail["receiver"] == "oncall")
        .map(|e| &e.detail)
        .collect();
    assert!(attempts.len() >= 3, "{attempts:?}");
    assert_eq!(attempts[0]["ok"], false);
    assert_eq!(attempts[0]["status"], 503);
    assert_eq!(attempts[1]["ok"], false);
    assert_eq!(attempts[2]["ok"], true);
    // What the receivers got: the webhook's JSON and Slack's text.
    eventually(
        "the webhook is told of the opening and the resolution",
        Duration::from_secs(5),
        || async {
            let delivered: Vec<Value> = webhook
                .requests()
                .iter()
                .filter(|r| r.answered == 200)
                .map(|r| r.json())
                .collect();
            let told = |status: &str| {
                delivered.iter().any(|b| {
                    b["incident"]["id"] == id.as_str() && b["incident"]["status"] == status
                })
            };
            (told("mitigating") || told("identified"))
                .then_some(())
                .filter(|_| told("resolved"))
                .ok_or(format!("{delivered:?}"))
        },
    )
    .await;
    let chat_bodies: Vec<Value> = slack.requests().iter().map(|r| r.json()).collect();
    assert!(
        chat_bodies
            .iter()
            .all(|b| b["text"].as_str().is_some_and(|t| t.contains("svc"))),
        "{chat_bodies:?}"
    );

    // People: bad ids, bad moves and the stages in order.
    let e = api.incident("nope").await.unwrap_err();
    assert_eq!(e.status(), Some(404), "{e}");
    let e = api
        .set_status(&id, &status("investigating", ""))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(409), "{e}");
    assert!(
        e.body().unwrap().reasons[0].contains("stays resolved"),
        "{e}"
    );
    let e = api.stage(&id, &stage("reviewed", "")).await.unwrap_err();
    assert_eq!(e.status(), Some(409), "{e}");
    api.stage(&id, &stage("analysed", "store link flaky"))
        .await
        .unwrap();
    let e = api.stage(&id, &stage("sideways", "")).await.unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");

    // kill -9: the incident and its timeline are still there.
    let before = api.incident(&id).await.unwrap();
    cp.kill9();
    cp.restart().await;
    let after = api.incident(&id).await.unwrap();
    assert_eq!(after.stages, before.stages);
    assert_eq!(after.timeline, before.timeline);

    // The postmortem from the command line.
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .args([
            "incident",
            "--url",
            &format!("http://{}", cp.addr),
            "postmortem",
            &id,
            "--out",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let md = std::fs::read_to_string(dir.path().join("postmortem.md")).unwrap();
    assert!(md.contains(&format!("# Postmortem: {id}")));
    assert!(md.contains("zone:a"));
    assert!(dir.path().join("errors.png").exists());

    // The status feed says the service is fine again.
    let feed = api.service_feed("svc").await.unwrap();
    assert_eq!(feed.service, "svc");
    assert!(feed.incident.is_none(), "{feed:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn people_open_incidents_and_silence_notifications() {
    let hook: SocketAddr = "127.0.9.43:9000".parse().unwrap();
    let webhook = Receiver::start(hook).await;
    let notify = format!(
        "[control.notify]\ngroup_wait_ms = 200\n\
         [[control.notify.receiver]]\nname = \"oncall\"\nkind = \"webhook\"\nurl = \"{}\"\n\
         [[control.notify.route]]\nreceivers = [\"oncall\"]\nmin_severity = \"SEV2\"\n",
        webhook.url("/hook")
    );
    let lab = Topology::new(BIN, &[("r1", &["a", "b", "c"])])
        .with_control_plane()
        .control_toml(&notify);
    let cp = lab.start_control().await;
    let api = cp.api(Some("operate-token"));
    let e = cp
        .api(None)
        .open_incident(&open("svc", "x", None))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(401), "opening needs a token: {e}");
    let e = api
        .open_incident(&open("nope", "x", None))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(404), "{e}");
    let e = api
        .open_incident(&open("svc", " ", Some("SEV9")))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
    assert_eq!(
        e.body().unwrap().reasons.len(),
        2,
        "every problem at once: {e}"
    );
    // A silence for the service holds its notifications back, and says so.
    // Raw, to see the 201 the typed client folds into success.
    let req = SilenceRequest {
        service: Some("svc".into()),
        severity: None,
        scope_prefix: None,
        duration: "1h".into(),
        reason: "planned maintenance".into(),
    };
    let r = api
        .raw(
            Method::POST,
            "/v1/silences",
            Some(&serde_json::to_string(&req).unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    let silence = serde_json::from_str::<Silence>(&r.body).unwrap().id;
    let opened = api
        .open_incident(&open("svc", "checkout slow in EU", Some("SEV2")))
        .await
        .unwrap();
    assert!(opened.created, "{opened:?}");
    let id = opened.id;
    eventually(
        "the silence is in the timeline",
        Duration::from_secs(5),
        || async {
            let i = api.incident(&id).await.unwrap();
            i.timeline
                .iter()
                .any(|e| e.text.contains(&format!("silenced by {silence}")))
                .then_some(())
                .ok_or(format!("{:?}", i.timeline))
        },
    )
    .await;
    assert!(webhook.requests().is_empty(), "silenced");
    let i = api.ack(&id, "on it").await.unwrap();
    assert!(i.stages.contains_key(&Stage::Acknowledged), "{i:?}");
    let e = api.ack(&id, "").await.unwrap_err();
    assert_eq!(e.status(), Some(409), "acknowledged once: {e}");
    // The silence lifted, the next change is told.
    let removed = api.remove_silence(&silence).await.unwrap();
    assert_eq!(removed.removed, silence);
    api.set_status(&id, &status("mitigating", "shifted eu-west-b"))
        .await
        .unwrap();
    eventually(
        "the webhook hears of it",
        Duration::from_secs(5),
        || async {
            webhook
                .requests()
                .iter()
                .any(|r| r.json()["incident"]["status"] == "mitigating")
                .then_some(())
                .ok_or("nothing yet".to_string())
        },
    )
    .await;
    let feed = api.status_feed().await.unwrap();
    let svc = &feed.services[0];
    assert_eq!(
        svc.incident.as_ref().map(|i| i.id.as_str()),
        Some(id.as_str()),
        "{feed:?}"
    );
    assert_ne!(svc.status, ServiceHealth::Operational, "{feed:?}");
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

/// Every event the webhook was told about incident `id`.
fn told(webhook: &Receiver, id: &str) -> Vec<String> {
    webhook
        .requests()
        .iter()
        .filter(|r| r.answered == 200)
        .map(|r| r.json())
        .filter(|b| b["incident"]["id"] == id)
        .flat_map(|b| {
            b["events"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|e| e["event"].as_str().map(str::to_string))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fault_that_comes_back_reopens_its_incident_even_after_a_restart() {
    let webhook = Receiver::start("127.0.9.44:9000".parse().unwrap()).await;
    let toml = format!(
        "[control.incidents]\nresolve_after_ms = 2000\n\
         [control.notify]\ngroup_wait_ms = 300\ngroup_interval_ms = 1000\n\
         [[control.notify.receiver]]\nname = \"oncall\"\nkind = \"webhook\"\nurl = \"{}\"\n\
         [[control.notify.route]]\nreceivers = [\"oncall\"]\n",
        webhook.url("/hook")
    );
    let lab = Topology::new(BIN, &[("r1", &["a", "b", "c"])])
        .with_control_plane()
        .control_toml(&toml);
    let ups = lab.start_upstreams().await;
    let mut cp = lab.start_control().await;
    let api = cp.api(Some("operate-token"));
    let edges = lab.start_edges(&["a", "b", "c"]).await;
    let addrs: Vec<_> = edges.iter().map(|e| e.listen).collect();
    let traffic = Traffic::start(&addrs, "svc.test", &[(Method::GET, "/items/1")]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let fail = |status: u16| {
        ups["a-1"].set_status(status);
        ups["a-2"].set_status(status);
    };

    fail(500);
    eventually("an incident opens", Duration::from_secs(30), || async {
        match &incidents(&api).await[..] {
            [_] => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let id = incidents(&api).await[0].id.clone();
    fail(200);
    eventually("the incident resolves", Duration::from_secs(40), || async {
        let i = api.incident(&id).await.unwrap();
        (i.status == Status::Resolved)
            .then_some(())
            .ok_or(format!("{:?}", i.status))
    })
    .await;

    // The control plane restarts, then the same fault comes back.
    cp.kill9();
    cp.restart().await;
    let back = now_ms();
    fail(500);
    eventually(
        "the resolved incident is reopened, not a new one opened",
        Duration::from_secs(40),
        || async {
            let list = incidents(&api).await;
            let i = api.incident(&id).await.unwrap();
            match (&list[..], i.reopened_ms.last()) {
                ([one], Some(t)) if one.id == id && *t >= back => Ok(()),
                _ => Err(format!("{list:?} {:?}", i.reopened_ms)),
            }
        },
    )
    .await;
    fail(200);
    traffic.stop().await;
    let i = api.incident(&id).await.unwrap();
    assert_ne!(i.status, Status::Resolved, "{:?}", i.status);
    assert!(!i.stages.contains_key(&Stage::Recovered) || i.stages[&Stage::Recovered] >= back);
    assert!(
        i.timeline.iter().any(|e| e.kind == EntryKind::Reopened
            && e.at_ms >= back
            && e.text.starts_with("reopened: finding zone:a")),
        "{:?}",
        i.timeline
    );
    // People hear that it is back, about the same incident, and were told
    // of its opening once.
    eventually(
        "the webhook is told it reopened",
        Duration::from_secs(20),
        || async {
            let events = told(&webhook, &id);
            events
                .iter()
                .any(|e| e.starts_with("reopened: finding zone:a"))
                .then_some(())
                .ok_or(format!("{events:?}"))
        },
    )
    .await;
    assert_eq!(
        told(&webhook, &id)
            .iter()
            .filter(|e| *e == "opened")
            .count(),
        1
    );
    assert!(
        webhook
            .requests()
            .iter()
            .all(|r| r.json()["incident"]["id"] == id.as_str()),
        "one incident only"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_playbook_action_that_did_not_help_escalates_and_pages() {
    let webhook = Receiver::start("127.0.9.45:9000".parse().unwrap()).await;
    let toml = format!(
        "[control.notify]\ngroup_wait_ms = 300\n\
         [[control.notify.receiver]]\nname = \"oncall\"\nkind = \"webhook\"\nurl = \"{}\"\n\
         [[control.notify.route]]\nreceivers = [\"oncall\"]\n",
        webhook.url("/hook")
    );
    let lab = Topology::new(BIN, &[("r1", &["a", "b", "c"])])
        .with_control_plane()
        .playbooks("auto")
        .control_toml(&toml);
    let ups = lab.start_upstreams().await;
    let cp = lab.start_control().await;
    let api = cp.api(Some("operate-token"));
    let edges = lab.start_edges(&["a", "b", "c"]).await;
    let addrs: Vec<_> = edges.iter().map(|e| e.listen).collect();
    let traffic = Traffic::start(&addrs, "svc.test", &[(Method::GET, "/items/1")]);
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Zone a fails first; the playbook shifts it away…
    ups["a-1"].set_status(500);
    ups["a-2"].set_status(500);
    eventually(
        "the playbook shifts zone a",
        Duration::from_secs(30),
        || async {
            let h = api.history(50).await.unwrap();
            h.entries
                .iter()
                .any(|e| {
                    e.actor.is_playbook()
                        && e.accepted_change(|o| matches!(o, Op::Shift { zone, .. } if zone == "a"))
                })
                .then_some(())
                .ok_or("not yet".to_string())
        },
    )
    .await;
    // …but the fault is in what every zone shares: the users it moved fail
    // just the same where they went.
    for z in ["b", "c"] {
        for n in 1..=2 {
            ups[format!("{z}-{n}").as_str()].set_status(500);
        }
    }
    eventually(
        "the shift's check fails, typed, in the audit log",
        Duration::from_secs(30),
        || async {
            let h = api.history(100).await.unwrap();
            let v = h.entries.iter().find(|e| {
                e.kind == AuditKind::Verification
                    && matches!(&e.op, Some(Op::Shift { zone, .. }) if zone == "a")
            });
            match v {
                Some(v) if v.check_outcome() == Some(CheckOutcome::Failed) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let h = api.history(100).await.unwrap();
    let v = h
        .entries
        .iter()
        .find(|e| e.kind == AuditKind::Verification)
        .unwrap();
    let check = v.check.as_ref().expect("typed");
    assert_eq!(check.users.to_string(), "users of r1");
    assert!(
        !v.accepted && v.rule.as_deref() == Some("not-verified"),
        "{v:?}"
    );
    assert!(
        check.after.ratio().unwrap() >= check.before.ratio().unwrap(),
        "{check:?}"
    );

    let id = incidents(&api).await[0].id.clone();
    let i = api.incident(&id).await.unwrap();
    let esc = i
        .timeline
        .iter()
        .find(|e| e.kind == EntryKind::Escalation)
        .unwrap_or_else(|| panic!("{:?}", i.timeline));
    assert!(
        esc.text
            .starts_with("escalated: shift svc away from zone a"),
        "{}",
        esc.text
    );
    eventually(
        "on-call is paged with the action and the numbers",
        Duration::from_secs(10),
        || async {
            let events = told(&webhook, &id);
            events
                .iter()
                .any(|e| {
                    e.starts_with("escalated: shift svc away from zone a")
                        && e.contains("did not help (users of r1: ")
                })
                .then_some(())
                .ok_or(format!("{events:?}"))
        },
    )
    .await;
    for u in ups.values() {
        u.set_status(200);
    }
    traffic.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_application_heartbeat_opens_a_paging_incident_that_resolves_when_it_beats_again()
{
    let webhook = Receiver::start("127.0.9.46:9000".parse().unwrap()).await;
    let toml = format!(
        "[control.incidents]\nresolve_after_ms = 2000\nalarm_grace_ms = 1000\n\
         [control.notify]\ngroup_wait_ms = 300\ngroup_interval_ms = 1000\n\
         [[control.notify.receiver]]\nname = \"oncall\"\nkind = \"webhook\"\nurl = \"{}\"\n\
         [[control.notify.route]]\nreceivers = [\"oncall\"]\nmin_severity = \"SEV2\"\n",
        webhook.url("/hook")
    );
    let lab = Topology::new(BIN, &[("r1", &["a", "b", "c"])])
        .with_control_plane()
        .control_toml(&toml);
    let _ups = lab.start_upstreams().await;
    let cp = lab.start_control().await;
    let api = cp.api(Some("operate-token"));
    let edges = lab.start_edges(&["a", "b", "c"]).await;
    let addrs: Vec<_> = edges.iter().map(|e| e.listen).collect();
    let traffic = Traffic::start(&addrs, "svc.test", &[(Method::GET, "/items/1")]);
    let beat = |api: Client| async move {
        api.ingest_heartbeat(
            &serde_json::json!({"source": "svc/app-1", "at_ms": now_ms(), "interval_ms": 200}),
        )
        .await
        .unwrap();
    };
    for _ in 0..10 {
        beat(api.clone()).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(incidents(&api).await.is_empty(), "beating: nothing to tell");

    // The application stops beating; its users' traffic through the edges
    // is fine, so only the heartbeat's alarm can say something is wrong.
    eventually(
        "a SEV2 incident opens for the silent heartbeat",
        Duration::from_secs(15),
        || async {
            match &incidents(&api).await[..] {
                [one] if one.severity == switchyard_model::notice::Severity::Sev2 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let id = incidents(&api).await[0].id.clone();
    let i = api.incident(&id).await.unwrap();
    assert!(i.title.contains("heartbeat of svc/app-1"), "{}", i.title);
    assert_eq!(i.scopes, vec!["heartbeat:svc/app-1".to_string()]);
    assert!(
        i.alarms[0].opened && i.alarms[0].end_ms.is_none(),
        "{:?}",
        i.alarms
    );
    eventually("people are paged", Duration::from_secs(10), || async {
        let events = told(&webhook, &id);
        events
            .iter()
            .any(|e| e == "opened")
            .then_some(())
            .ok_or(format!("{events:?}"))
    })
    .await;

    // It beats again: the alarm stops, the incident recovers and resolves.
    let beating = {
        let api = api.clone();
        tokio::spawn(async move {
            loop {
                beat(api.clone()).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    eventually("the incident resolves", Duration::from_secs(20), || async {
        let i = api.incident(&id).await.unwrap();
        (i.status == Status::Resolved)
            .then_some(())
            .ok_or(format!("{:?} {:?}", i.status, i.alarms))
    })
    .await;
    beating.abort();
    let i = api.incident(&id).await.unwrap();
    assert!(i.alarms[0].end_ms.is_some(), "{:?}", i.alarms);
    assert_eq!(incidents(&api).await.len(), 1, "one incident");
    traffic.stop().await;
}

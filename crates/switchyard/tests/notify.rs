//! Notifications from a running control plane to receivers that track
//! state: PagerDuty over HTTPS (its certificate from a CA trusted through
//! `ca_file`) follows one incident from trigger to acknowledge to resolve
//! under one dedup_key, and Alertmanager is sent the firing incident again
//! every `resend_ms` until it resolves, so it never resolves it on its own.

use std::net::SocketAddr;
use std::time::Duration;

use switchyard_api::{OpenIncident, StatusChange};
use switchyard_model::incident::EntryKind;
use switchyard_testkit::receiver::Receiver;
use switchyard_testkit::{eventually, TestCa, Topology};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

fn actions(pd: &Receiver) -> Vec<String> {
    pd.requests()
        .iter()
        .map(|r| r.json()["event_action"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn pagerduty_follows_the_incident_and_alertmanager_is_kept_firing_until_resolved() {
    let ca = TestCa::new("switchyard test CA");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write_pem(dir.path(), "ca.pem");
    let pd_addr: SocketAddr = "127.0.9.81:9443".parse().unwrap();
    let pd = Receiver::start_tls(pd_addr, &ca.server_cert(&["127.0.9.81"])).await;
    pd.always(202);
    let am = Receiver::start("127.0.9.82:9093".parse().unwrap()).await;
    // No group interval: this story is about what each message says.
    let notify = format!(
        "[control.notify]\ngroup_wait_ms = 200\ngroup_interval_ms = 0\n\
         [[control.notify.receiver]]\nname = \"pager\"\nkind = \"pagerduty\"\nurl = \"{}\"\n\
         ca_file = {:?}\nrouting_key = \"R0UTINGKEY\"\n\
         [[control.notify.receiver]]\nname = \"am\"\nkind = \"alertmanager\"\nurl = \"{}\"\nresend_ms = 1000\n\
         [[control.notify.route]]\nreceivers = [\"pager\", \"am\"]\n",
        pd.url("/v2/enqueue"),
        ca_file.display().to_string(),
        am.url("/api/v2/alerts"),
    );
    let lab = Topology::new(BIN, &[("r1", &["a", "b", "c"])])
        .with_control_plane()
        .control_toml(&notify);
    let cp = lab.start_control().await;
    let api = cp.api(Some("operate-token"));
    let id = api
        .open_incident(&OpenIncident {
            service: "svc".into(),
            title: "checkout failing in EU".into(),
            severity: Some("SEV1".into()),
        })
        .await
        .unwrap()
        .id;

    eventually(
        "PagerDuty is triggered",
        Duration::from_secs(10),
        || async {
            (actions(&pd).first().map(String::as_str) == Some("trigger"))
                .then_some(())
                .ok_or(format!("{:?}", actions(&pd)))
        },
    )
    .await;
    let trigger = pd.requests()[0].json();
    assert_eq!(trigger["routing_key"], "R0UTINGKEY");
    assert_eq!(trigger["dedup_key"], id.as_str());
    assert_eq!(trigger["payload"]["severity"], "critical");
    assert_eq!(
        trigger["payload"]["summary"],
        "[SEV1] svc: checkout failing in EU"
    );

    // While it fires, Alertmanager hears of it again and again.
    eventually(
        "Alertmanager gets the alert re-sent",
        Duration::from_secs(10),
        || async {
            let n = am.requests().len();
            (n >= 3).then_some(()).ok_or(format!("{n} posts"))
        },
    )
    .await;
    for r in am.requests() {
        let alert = &r.json()[0];
        assert_eq!(alert["labels"]["incident"], id.as_str());
        assert!(alert.get("endsAt").is_none(), "still firing: {alert}");
    }

    api.ack(&id, "on it").await.unwrap();
    eventually(
        "PagerDuty is acknowledged",
        Duration::from_secs(10),
        || async {
            actions(&pd)
                .iter()
                .any(|a| a == "acknowledge")
                .then_some(())
                .ok_or(format!("{:?}", actions(&pd)))
        },
    )
    .await;

    api.set_status(
        &id,
        &StatusChange {
            status: "resolved".into(),
            note: "fixed".into(),
        },
    )
    .await
    .unwrap();
    eventually("PagerDuty is resolved", Duration::from_secs(10), || async {
        (actions(&pd).last().map(String::as_str) == Some("resolve"))
            .then_some(())
            .ok_or(format!("{:?}", actions(&pd)))
    })
    .await;
    eventually(
        "Alertmanager hears that it ended",
        Duration::from_secs(10),
        || async {
            am.requests()
                .iter()
                .any(|r| r.json()[0].get("endsAt").is_some())
                .then_some(())
                .ok_or("no endsAt yet".to_string())
        },
    )
    .await;
    let sent = am.requests().len();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(am.requests().len(), sent, "no re-send once resolved");

    // One PagerDuty alert throughout.
    assert!(pd
        .requests()
        .iter()
        .all(|r| r.json()["dedup_key"] == id.as_str()));
    let a = actions(&pd);
    let ack = a.iter().position(|x| x == "acknowledge").unwrap();
    assert!(a[..ack].iter().all(|x| x == "trigger"), "{a:?}");
    assert_eq!(a.iter().filter(|x| *x == "resolve").count(), 1, "{a:?}");

    // Re-sends are counted, not written into the timeline one by one.
    let i = api.incident(&id).await.unwrap();
    let am_lines = i
        .timeline
        .iter()
        .filter(|e| e.kind == EntryKind::Notification && e.text.contains("delivered"))
        .filter(|e| e.detail["receiver"] == "am")
        .count();
    assert!(
        am_lines < sent,
        "{am_lines} timeline lines for {sent} posts: {:#?}",
        i.timeline
    );
}

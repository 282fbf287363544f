//! HTTPS receivers and PagerDuty, against real TLS servers on loopback
//! (127.0.9.6x) whose certificates are made by a CA that exists only for
//! the test: trusted through a receiver's `ca_file`, refused without it.

use std::net::SocketAddr;

use switchyard_model::time::now_ms;
use switchyard_notify::{
    deliver, Attempt, Delivery, Grouped, Notice, NotifyConfig, ReceiverConfig, ReceiverKind,
    RetryConfig, Severity,
};
use switchyard_testkit::{Receiver, TestCa};

fn addr(x: u8) -> SocketAddr {
    SocketAddr::from(([127, 0, 9, x], 9443))
}

fn retry(attempts: u32) -> RetryConfig {
    RetryConfig {
        attempts,
        initial_backoff_ms: 50,
        max_backoff_ms: 200,
        timeout_ms: 3000,
    }
}

fn config(receivers: Vec<ReceiverConfig>, attempts: u32) -> NotifyConfig {
    let cfg = NotifyConfig {
        retry: retry(attempts),
        receivers,
        ..NotifyConfig::default()
    };
    assert_eq!(cfg.validate(|_| None), Ok(()));
    cfg
}

fn notice(id: &str, severity: Severity) -> Notice {
    let now = now_ms();
    Notice {
        incident_id: id.into(),
        service: "catalog".into(),
        severity,
        status: "investigating".into(),
        title: "Errors in zone eu-1a".into(),
        summary: "5xx from zone eu-1a".into(),
        scopes: vec!["zone:eu/eu-1a".into()],
        event: "opened".into(),
        at_ms: now,
        started_at_ms: now,
        ended_at_ms: None,
        url: Some(format!("http://127.0.0.1:7000/v1/incidents/{id}")),
        urgent: false,
        acknowledged: false,
    }
}

async fn send(cfg: &NotifyConfig, g: &Grouped, name: &str) -> (Delivery, Vec<Attempt>) {
    let mut seen = Vec::new();
    let mut out = deliver(cfg, g, &[name.to_string()], |a| seen.push(a.clone())).await;
    (out.remove(0), seen)
}

#[tokio::test]
async fn an_https_receiver_is_reached_through_its_ca_file_and_refused_without_it() {
    let ca = TestCa::new("switchyard private relay CA");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write_pem(dir.path(), "relay-ca.pem");
    let r = Receiver::start_tls(addr(61), &ca.server_cert(&["127.0.9.61"])).await;
    let url = r.url("/hook");
    assert!(url.starts_with("https://127.0.9.61:9443/"), "{url}");

    // Trusted through ca_file: delivered, the body as for plain http.
    let mut trusted = ReceiverConfig::http("relay", ReceiverKind::Webhook, url.clone());
    trusted.ca_file = Some(ca_file.display().to_string());
    let cfg = config(vec![trusted], 3);
    let g = Grouped::single(notice("inc-1", Severity::Sev2));
    let (d, _) = send(&cfg, &g, "relay").await;
    assert!(d.delivered, "{:#?}", d.attempts);
    assert_eq!(d.attempts.len(), 1);
    assert_eq!(d.attempts[0].status, Some(200));
    let got = r.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].path, "/hook");
    assert_eq!(got[0].json()["incident"]["id"], "inc-1");

    // The same server without ca_file: the shipped roots do not know the
    // CA; one attempt (a certificate does not change between tries) and an
    // error that says what is wrong and what to do.
    let cfg = config(
        vec![ReceiverConfig::http("relay", ReceiverKind::Webhook, url)],
        3,
    );
    let (d, seen) = send(&cfg, &g, "relay").await;
    assert!(!d.delivered);
    assert_eq!(d.attempts.len(), 1, "{:#?}", d.attempts);
    assert_eq!(seen, d.attempts);
    let e = d.attempts[0].error.as_deref().unwrap();
    assert!(
        e.starts_with("TLS handshake failed: invalid peer certificate")
            && e.contains("UnknownIssuer"),
        "{e}"
    );
    assert!(e.contains("set the receiver's ca_file"), "{e}");
    assert!(e.ends_with("; not retried"), "{e}");
    assert_eq!(d.attempts[0].status, None);
    assert_eq!(r.requests().len(), 1, "nothing was posted without trust");
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused_even_with_the_ca() {
    let ca = TestCa::new("switchyard private relay CA");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write_pem(dir.path(), "ca.pem");
    let r = Receiver::start_tls(addr(62), &ca.server_cert(&["relay.internal"])).await;
    let mut rc = ReceiverConfig::http("relay", ReceiverKind::Slack, r.url("/slack"));
    rc.ca_file = Some(ca_file.display().to_string());
    let cfg = config(vec![rc], 2);
    let (d, _) = send(
        &cfg,
        &Grouped::single(notice("inc-2", Severity::Sev3)),
        "relay",
    )
    .await;
    assert!(!d.delivered);
    let e = d.attempts[0].error.as_deref().unwrap();
    assert!(
        e.starts_with("TLS handshake failed: invalid peer certificate"),
        "{e}"
    );
    assert!(r.requests().is_empty());
}

/// A PagerDuty stand-in: a TLS server at `/v2/enqueue` answering 202 as the
/// Events API does.
async fn pagerduty(x: u8, ca: &TestCa) -> Receiver {
    let r = Receiver::start_tls(addr(x), &ca.server_cert(&[&format!("127.0.9.{x}")])).await;
    r.always(202);
    r
}

#[tokio::test]
async fn pagerduty_gets_trigger_acknowledge_and_resolve_for_one_dedup_key() {
    let ca = TestCa::new("pagerduty stand-in CA");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write_pem(dir.path(), "ca.pem");
    let pd = pagerduty(63, &ca).await;
    let mut rc = ReceiverConfig::http("pager", ReceiverKind::Pagerduty, pd.url("/v2/enqueue"));
    rc.ca_file = Some(ca_file.display().to_string());
    rc.routing_key = Some("R0UTINGKEY0123456789abcdef012345".into());
    let cfg = config(vec![rc], 2);

    // Opened, SEV1: trigger with the full payload.
    let mut n = notice("inc-7", Severity::Sev1);
    let (d, _) = send(&cfg, &Grouped::single(n.clone()), "pager").await;
    assert!(d.delivered, "{:#?}", d.attempts);
    assert_eq!(d.attempts[0].status, Some(202));
    assert_eq!(d.attempts[0].kind, "pagerduty");
    // A person acknowledged it.
    n.acknowledged = true;
    n.event = "acknowledged by ana".into();
    let (d, _) = send(&cfg, &Grouped::single(n.clone()), "pager").await;
    assert!(d.delivered);
    // It escalated after all: page again.
    n.urgent = true;
    n.event = "escalated".into();
    send(&cfg, &Grouped::single(n.clone()), "pager").await;
    // Resolved.
    n.urgent = false;
    n.status = "resolved".into();
    n.ended_at_ms = Some(n.at_ms + 60_000);
    n.event = "resolved".into();
    send(&cfg, &Grouped::single(n.clone()), "pager").await;

    let got = pd.requests();
    assert_eq!(got.len(), 4);
    for req in &got {
        assert_eq!(req.method, "POST");
        assert_eq!(req.path, "/v2/enqueue");
        assert_eq!(req.header("content-type"), Some("application/json"));
        let v = req.json();
        assert_eq!(v["routing_key"], "R0UTINGKEY0123456789abcdef012345");
        assert_eq!(v["dedup_key"], "inc-7");
    }
    let actions: Vec<String> = got
        .iter()
        .map(|r| r.json()["event_action"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(actions, ["trigger", "acknowledge", "trigger", "resolve"]);
    let trigger = got[0].json();
    let p = &trigger["payload"];
    assert_eq!(p["summary"], "[SEV1] catalog: Errors in zone eu-1a");
    assert_eq!(p["source"], "zone:eu/eu-1a");
    assert_eq!(p["severity"], "critical");
    assert_eq!(p["component"], "catalog");
    assert!(p["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        trigger["links"][0]["href"],
        "http://127.0.0.1:7000/v1/incidents/inc-7"
    );
    // Acknowledge and resolve carry only what the API reads.
    for i in [1, 3] {
        let v = got[i].json();
        let mut keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(keys, ["dedup_key", "event_action", "routing_key"]);
    }
}

#[tokio::test]
async fn pagerduty_severity_follows_the_incident_and_a_refusal_is_not_retried() {
    let ca = TestCa::new("pagerduty stand-in CA");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write_pem(dir.path(), "ca.pem");
    let pd = pagerduty(64, &ca).await;
    let mut rc = ReceiverConfig::http("pager", ReceiverKind::Pagerduty, pd.url("/v2/enqueue"));
    rc.ca_file = Some(ca_file.display().to_string());
    rc.routing_key = Some("key".into());
    let cfg = config(vec![rc], 3);
    for (i, sev) in Severity::ALL.into_iter().enumerate() {
        send(
            &cfg,
            &Grouped::single(notice(&format!("inc-{i}"), sev)),
            "pager",
        )
        .await;
    }
    let sev: Vec<String> = pd
        .requests()
        .iter()
        .map(|r| {
            r.json()["payload"]["severity"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(sev, ["critical", "error", "warning", "info"]);

    // PagerDuty answers 400 to an invalid event (a wrong routing key):
    // sending it again would be refused again.
    pd.always(400);
    let (d, _) = send(
        &cfg,
        &Grouped::single(notice("inc-9", Severity::Sev2)),
        "pager",
    )
    .await;
    assert!(!d.delivered);
    assert_eq!(d.attempts.len(), 1);
    assert!(d.attempts[0]
        .error
        .as_deref()
        .unwrap()
        .starts_with("HTTP 400 Bad Request"));
}

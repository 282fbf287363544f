//! Delivery against real HTTP receivers on loopback (127.0.9.x, one address
//! per test): retries and backoff, give-up rules, payload shapes as received,
//! and routing, silences and grouping end to end.
//!
//! Timing assertions only ever say "at least" (backoff) or compare two
//! events of the same run, never "within N ms", so a loaded machine cannot
//! make them flake.

use std::net::SocketAddr;
use std::time::Duration;

use switchyard_model::time::now_ms;
use switchyard_notify::{
    deliver, route, Attempt, Delivery, Grouped, Grouper, Notice, NotifyConfig, ReceiverConfig,
    ReceiverKind, RetryConfig, RouteConfig, Severity, Silence, SilenceConfig,
};
use switchyard_testkit::Receiver;

fn addr(x: u8) -> SocketAddr {
    SocketAddr::from(([127, 0, 9, x], 9000))
}

fn receiver(name: &str, kind: ReceiverKind, url: String) -> ReceiverConfig {
    ReceiverConfig::http(name, kind, url)
}

fn config(receivers: Vec<ReceiverConfig>, retry: RetryConfig) -> NotifyConfig {
    let cfg = NotifyConfig {
        retry,
        receivers,
        ..NotifyConfig::default()
    };
    assert_eq!(cfg.validate(|_| None), Ok(()));
    cfg
}

fn retry(attempts: u32, initial_backoff_ms: u64, timeout_ms: u64) -> RetryConfig {
    RetryConfig {
        attempts,
        initial_backoff_ms,
        max_backoff_ms: 5000,
        timeout_ms,
    }
}

fn notice(id: &str, service: &str, severity: Severity, event: &str) -> Notice {
    let now = now_ms();
    Notice {
        incident_id: id.into(),
        service: service.into(),
        severity,
        status: "investigating".into(),
        title: format!("Errors in {service}"),
        summary: "5xx from zone eu-1a".into(),
        scopes: vec!["zone:eu/eu-1a".into()],
        event: event.into(),
        at_ms: now,
        started_at_ms: now,
        ended_at_ms: None,
        url: Some(format!("http://127.0.0.1:7000/incidents/{id}")),
        urgent: false,
        acknowledged: false,
    }
}

/// Delivers and also returns what `on_attempt` saw, in the order it saw it.
async fn send(cfg: &NotifyConfig, g: &Grouped, names: &[&str]) -> (Vec<Delivery>, Vec<Attempt>) {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let mut seen = Vec::new();
    let out = deliver(cfg, g, &names, |a| seen.push(a.clone())).await;
    (out, seen)
}

/// Every attempt returned was also reported, and nothing else was.
fn assert_reported(out: &[Delivery], seen: &[Attempt]) {
    let returned: usize = out.iter().map(|d| d.attempts.len()).sum();
    assert_eq!(returned, seen.len());
    for d in out {
        let mine: Vec<&Attempt> = seen.iter().filter(|a| a.receiver == d.receiver).collect();
        assert_eq!(mine, d.attempts.iter().collect::<Vec<_>>());
    }
}

#[tokio::test]
async fn fails_twice_then_succeeds_after_backing_off() {
    let r = Receiver::start(addr(11)).await;
    r.fail_first(2, 503);
    let cfg = config(
        vec![receiver("oncall", ReceiverKind::Webhook, r.url("/hook"))],
        retry(5, 200, 3000),
    );
    let g = Grouped::single(notice("inc-1", "catalog", Severity::Sev2, "opened"));
    let (out, seen) = send(&cfg, &g, &["oncall"]).await;
    assert_reported(&out, &seen);

    assert_eq!(out.len(), 1);
    let d = &out[0];
    assert!(d.delivered);
    let a = &d.attempts;
    assert_eq!(a.len(), 3, "{a:#?}");
    assert_eq!(a.iter().map(|a| a.attempt).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(
        a.iter().map(|a| a.ok).collect::<Vec<_>>(),
        [false, false, true]
    );
    assert_eq!(
        a.iter().map(|a| a.status).collect::<Vec<_>>(),
        [Some(503), Some(503), Some(200)]
    );
    assert!(a
        .iter()
        .all(|a| a.kind == "webhook" && a.receiver == "oncall"));
    let e = a[0].error.as_deref().unwrap();
    assert!(
        e.starts_with("HTTP 503") && e.contains("retrying in 200 ms"),
        "{e}"
    );
    assert_eq!(a[2].error, None);
    assert_eq!(a[2].next_retry_ms, None);
    // Backoff: 200 ms after the first failure, doubled after the second.
    assert!(a[1].at_ms >= a[0].at_ms + 200, "{a:#?}");
    assert!(a[2].at_ms >= a[1].at_ms + 400, "{a:#?}");
    assert!(a[1].at_ms >= a[0].next_retry_ms.unwrap());
    assert!(a[2].at_ms >= a[1].next_retry_ms.unwrap());

    let got = r.requests();
    assert_eq!(got.len(), 3);
    assert!(got[1].at - got[0].at >= Duration::from_millis(200));
    for req in &got {
        assert_eq!(req.method, "POST");
        assert_eq!(req.path, "/hook");
        assert_eq!(req.header("content-type"), Some("application/json"));
        assert_eq!(req.json()["incident"]["id"], "inc-1");
    }
}

#[tokio::test]
async fn a_receiver_that_always_fails_gets_exactly_the_configured_attempts() {
    let r = Receiver::start(addr(12)).await;
    r.always(500);
    let cfg = config(
        vec![receiver("oncall", ReceiverKind::Webhook, r.url("/hook"))],
        retry(4, 20, 3000),
    );
    let g = Grouped::single(notice("inc-2", "catalog", Severity::Sev2, "opened"));
    let (out, seen) = send(&cfg, &g, &["oncall"]).await;
    assert_reported(&out, &seen);

    let d = &out[0];
    assert!(!d.delivered);
    assert_eq!(d.attempts.len(), 4);
    assert!(d.attempts.iter().all(|a| !a.ok && a.status == Some(500)));
    let last = d.attempts.last().unwrap();
    assert_eq!(last.next_retry_ms, None);
    assert!(
        last.error
            .as_deref()
            .unwrap()
            .contains("giving up after 4 attempts"),
        "{last:?}"
    );
    assert_eq!(r.requests().len(), 4);
}

#[tokio::test]
async fn a_dead_address_records_a_connection_error_per_attempt() {
    // Nothing listens on 127.0.9.13.
    let cfg = config(
        vec![receiver(
            "gone",
            ReceiverKind::Webhook,
            format!("http://{}/hook", addr(13)),
        )],
        retry(3, 20, 2000),
    );
    let g = Grouped::single(notice("inc-3", "catalog", Severity::Sev1, "opened"));
    let (out, seen) = send(&cfg, &g, &["gone"]).await;
    assert_reported(&out, &seen);

    let d = &out[0];
    assert!(!d.delivered);
    assert_eq!(d.attempts.len(), 3);
    for a in &d.attempts {
        assert!(!a.ok);
        assert_eq!(a.status, None);
        let e = a.error.as_deref().unwrap();
        assert!(e.starts_with("connect error: "), "{e}");
        assert!(e.to_lowercase().contains("refused"), "{e}");
    }
    assert!(d.attempts[1].next_retry_ms.is_some());
    assert_eq!(d.attempts[2].next_retry_ms, None);
}

#[tokio::test]
async fn bad_request_is_not_retried() {
    let r = Receiver::start(addr(14)).await;
    r.always(400);
    let cfg = config(
        vec![receiver("oncall", ReceiverKind::Webhook, r.url("/hook"))],
        retry(5, 20, 3000),
    );
    let g = Grouped::single(notice("inc-4", "catalog", Severity::Sev2, "opened"));
    let (out, seen) = send(&cfg, &g, &["oncall"]).await;
    assert_reported(&out, &seen);

    let d = &out[0];
    assert!(!d.delivered);
    assert_eq!(d.attempts.len(), 1);
    let a = &d.attempts[0];
    assert_eq!(a.status, Some(400));
    assert_eq!(a.next_retry_ms, None);
    let e = a.error.as_deref().unwrap();
    assert!(e.contains("not retried"), "{e}");
    assert!(
        e.contains("refused by test receiver"),
        "the answer is kept: {e}"
    );
    assert_eq!(r.requests().len(), 1);
}

#[tokio::test]
async fn too_many_requests_is_retried() {
    let r = Receiver::start(addr(24)).await;
    r.fail_first(1, 429);
    let cfg = config(
        vec![receiver("oncall", ReceiverKind::Webhook, r.url("/hook"))],
        retry(5, 20, 3000),
    );
    let g = Grouped::single(notice("inc-5", "catalog", Severity::Sev2, "opened"));
    let (out, _) = send(&cfg, &g, &["oncall"]).await;
    assert!(out[0].delivered);
    assert_eq!(
        out[0].attempts.iter().map(|a| a.status).collect::<Vec<_>>(),
        [Some(429), Some(200)]
    );
}

#[tokio::test]
async fn each_kind_of_receiver_gets_its_shape() {
    let hook = Receiver::start(addr(15)).await;
    let chat = Receiver::start(addr(16)).await;
    let am = Receiver::start(addr(25)).await;
    let cfg = config(
        vec![
            receiver("hook", ReceiverKind::Webhook, hook.url("/hook")),
            receiver("chat", ReceiverKind::Slack, chat.url("/services/T0/B0/x")),
            receiver("am", ReceiverKind::Alertmanager, am.url("/api/v2/alerts")),
        ],
        retry(3, 20, 3000),
    );
    let mut n = notice("inc-6", "catalog", Severity::Sev2, "resolved");
    n.status = "resolved".into();
    n.ended_at_ms = Some(n.started_at_ms + 60_000);
    let g = Grouped::single(n);
    let (out, seen) = send(&cfg, &g, &["hook", "chat", "am"]).await;
    assert_reported(&out, &seen);
    assert_eq!(
        out.iter()
            .map(|d| (d.receiver.as_str(), d.delivered))
            .collect::<Vec<_>>(),
        [("hook", true), ("chat", true), ("am", true)]
    );
    let kinds: Vec<&str> = out.iter().map(|d| d.attempts[0].kind.as_str()).collect();
    assert_eq!(kinds, ["webhook", "slack", "alertmanager"]);

    let w = hook.requests()[0].json();
    assert_eq!(w["version"], "1");
    assert_eq!(w["incident"]["severity"], "SEV2");
    assert_eq!(w["incident"]["status"], "resolved");
    assert!(w["incident"]["ended_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(w["events"][0]["event"], "resolved");

    let s = chat.requests()[0].clone();
    assert_eq!(s.path, "/services/T0/B0/x");
    assert_eq!(s.header("content-type"), Some("application/json"));
    let s = s.json();
    let text = s["text"].as_str().unwrap();
    for part in ["SEV2", "catalog", "resolved", "Errors in catalog"] {
        assert!(text.contains(part), "{part} in {text}");
    }
    let blocks = s["blocks"].as_array().unwrap();
    assert!(!blocks.is_empty());
    assert!(blocks
        .iter()
        .all(|b| b["type"] == "section" && b["text"]["type"] == "mrkdwn"));

    let a = am.requests()[0].clone();
    assert_eq!(a.path, "/api/v2/alerts");
    let a = a.json();
    let alerts = a.as_array().expect("an array of alerts");
    assert_eq!(alerts.len(), 1);
    let alert = &alerts[0];
    assert_eq!(alert["labels"]["alertname"], "SwitchyardIncident");
    assert_eq!(alert["labels"]["incident"], "inc-6");
    assert_eq!(alert["labels"]["service"], "catalog");
    assert_eq!(alert["labels"]["severity"], "SEV2");
    assert_eq!(alert["labels"]["scope"], "zone:eu/eu-1a");
    assert_eq!(alert["annotations"]["status"], "resolved");
    assert!(alert["startsAt"].is_string());
    assert!(alert["endsAt"].is_string(), "resolved incidents end");
    assert_eq!(
        alert["generatorURL"],
        "http://127.0.0.1:7000/incidents/inc-6"
    );
}

#[tokio::test]
async fn routes_by_service_and_min_severity_with_continue() {
    let pager = Receiver::start(addr(17)).await;
    let chat = Receiver::start(addr(18)).await;
    let everyone = Receiver::start(addr(19)).await;
    let mut cfg = config(
        vec![
            receiver("pager", ReceiverKind::Webhook, pager.url("/p")),
            receiver("chat", ReceiverKind::Slack, chat.url("/c")),
            receiver("everyone", ReceiverKind::Webhook, everyone.url("/e")),
        ],
        retry(3, 20, 3000),
    );
    cfg.routes = vec![
        RouteConfig {
            services: vec!["catalog".into()],
            min_severity: Some("SEV2".into()),
            receivers: vec!["pager".into()],
            continue_matching: true,
        },
        RouteConfig {
            services: vec!["catalog".into()],
            receivers: vec!["chat".into()],
            ..RouteConfig::default()
        },
        RouteConfig {
            receivers: vec!["everyone".into()],
            ..RouteConfig::default()
        },
    ];
    assert_eq!(cfg.validate(|_| None), Ok(()));

    let cases = [
        ("inc-a", "catalog", Severity::Sev1, vec!["pager", "chat"]),
        ("inc-b", "catalog", Severity::Sev3, vec!["chat"]),
        ("inc-c", "search", Severity::Sev1, vec!["everyone"]),
    ];
    for (id, service, sev, expected) in cases {
        let n = notice(id, service, sev, "opened");
        let routed = route(&cfg, &n, &[], now_ms());
        assert_eq!(routed.receivers, expected, "{id}");
        assert_eq!(routed.silenced_by, None);
        let (out, _) = send(
            &cfg,
            &Grouped::single(n),
            &routed
                .receivers
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        )
        .await;
        assert!(out.iter().all(|d| d.delivered), "{out:#?}");
    }

    let ids = |r: &Receiver, key: &dyn Fn(&serde_json::Value) -> String| {
        r.requests()
            .iter()
            .map(|q| key(&q.json()))
            .collect::<Vec<_>>()
    };
    let webhook_id = |v: &serde_json::Value| v["incident"]["id"].as_str().unwrap().to_string();
    let slack_text = |v: &serde_json::Value| v["text"].as_str().unwrap().to_string();
    assert_eq!(ids(&pager, &webhook_id), ["inc-a"]);
    assert_eq!(ids(&everyone, &webhook_id), ["inc-c"]);
    let texts = ids(&chat, &slack_text);
    assert_eq!(texts.len(), 2);
    assert!(texts[0].starts_with("[SEV1] catalog"), "{texts:?}");
    assert!(texts[1].starts_with("[SEV3] catalog"), "{texts:?}");
}

#[tokio::test]
async fn a_silence_suppresses_and_names_itself_and_an_expired_one_does_not() {
    let r = Receiver::start(addr(20)).await;
    let now = now_ms();
    let mut cfg = config(
        vec![receiver("oncall", ReceiverKind::Webhook, r.url("/hook"))],
        retry(3, 20, 3000),
    );
    cfg.routes = vec![RouteConfig {
        receivers: vec!["oncall".into()],
        ..RouteConfig::default()
    }];
    cfg.silences = vec![SilenceConfig {
        id: "maint-1".into(),
        service: Some("catalog".into()),
        severity: None,
        scope_prefix: None,
        until_ms: now + 3_600_000,
        reason: "planned maintenance".into(),
        created_by: "ops".into(),
    }];
    assert_eq!(cfg.validate(|_| None), Ok(()));
    let expired = Silence {
        id: "old".into(),
        service: Some("catalog".into()),
        severity: None,
        scope_prefix: Some("zone:eu".into()),
        until_ms: now - 1,
        reason: "yesterday's work".into(),
        created_by: "ops".into(),
    };

    let n = notice("inc-s", "catalog", Severity::Sev1, "opened");
    let mut silences = vec![expired.clone()];
    silences.extend(cfg.static_silences());
    let routed = route(&cfg, &n, &silences, now);
    assert_eq!(routed.silenced_by.as_deref(), Some("maint-1"));
    assert!(routed.receivers.is_empty());
    let (out, seen) = send(&cfg, &Grouped::single(n.clone()), &[]).await;
    assert!(out.is_empty() && seen.is_empty());

    let routed = route(&cfg, &n, &[expired], now);
    assert_eq!(routed.silenced_by, None);
    assert_eq!(routed.receivers, ["oncall"]);
    let (out, _) = send(&cfg, &Grouped::single(n), &["oncall"]).await;
    assert!(out[0].delivered);
    let got = r.requests();
    assert_eq!(
        got.len(),
        1,
        "only the unsilenced notice reached the receiver"
    );
    assert_eq!(got[0].json()["incident"]["id"], "inc-s");
}

#[tokio::test]
async fn a_burst_of_three_notices_is_delivered_as_one_message() {
    let r = Receiver::start(addr(21)).await;
    let mut cfg = config(
        vec![receiver("oncall", ReceiverKind::Webhook, r.url("/hook"))],
        retry(3, 20, 3000),
    );
    cfg.routes = vec![RouteConfig {
        receivers: vec!["oncall".into()],
        ..RouteConfig::default()
    }];

    // The grouper's clock is injected: the burst spans 900 ms of a 2 s wait.
    let t = now_ms();
    let mut grouper = Grouper::new(cfg.group_wait_ms);
    let mut n1 = notice("inc-g", "catalog", Severity::Sev3, "opened");
    n1.at_ms = t;
    let mut n2 = n1.clone();
    n2.severity = Severity::Sev2;
    n2.event = "severity: SEV2".into();
    n2.at_ms = t + 300;
    let mut n3 = n2.clone();
    n3.status = "mitigating".into();
    n3.event = "status: mitigating".into();
    n3.at_ms = t + 900;
    grouper.push(n1, t);
    grouper.push(n2, t + 300);
    grouper.push(n3, t + 900);
    assert!(grouper.due(t + 1999).is_empty());
    let due = grouper.due(t + 2000);
    assert_eq!(due.len(), 1);

    for g in &due {
        let routed = route(&cfg, &g.notice, &[], t + 2000);
        let names: Vec<&str> = routed.receivers.iter().map(String::as_str).collect();
        let (out, _) = send(&cfg, g, &names).await;
        assert!(out.iter().all(|d| d.delivered));
    }

    let got = r.requests();
    assert_eq!(got.len(), 1, "one message for the burst");
    let body = got[0].json();
    assert_eq!(body["incident"]["status"], "mitigating");
    assert_eq!(body["incident"]["severity"], "SEV2");
    let events: Vec<&str> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["opened", "severity: SEV2", "status: mitigating"]);
}

#[tokio::test]
async fn a_slow_receiver_does_not_hold_up_the_others() {
    let slow = Receiver::start(addr(22)).await;
    slow.set_delay(Duration::from_secs(5));
    let fast = Receiver::start(addr(23)).await;
    let cfg = config(
        vec![
            receiver("slow", ReceiverKind::Webhook, slow.url("/hook")),
            receiver("fast", ReceiverKind::Webhook, fast.url("/hook")),
        ],
        retry(2, 200, 1000),
    );
    let g = Grouped::single(notice("inc-p", "catalog", Severity::Sev1, "opened"));
    let (out, seen) = send(&cfg, &g, &["slow", "fast"]).await;
    assert_reported(&out, &seen);

    let (s, f) = (&out[0], &out[1]);
    assert_eq!((s.receiver.as_str(), f.receiver.as_str()), ("slow", "fast"));
    assert!(f.delivered);
    assert_eq!(f.attempts.len(), 1);
    assert!(!s.delivered);
    assert_eq!(s.attempts.len(), 2);
    for a in &s.attempts {
        assert_eq!(a.status, None);
        assert!(
            a.error
                .as_deref()
                .unwrap()
                .starts_with("timed out after 1000 ms"),
            "{a:?}"
        );
    }
    // Sequential delivery would have started "fast" only after both of the
    // slow receiver's attempts; in parallel it went before the second.
    assert!(f.attempts[0].at_ms < s.attempts[1].at_ms, "{out:#?}");
    // Reported as it happened: the fast success came before the slow failure.
    assert_eq!(seen[0].receiver, "fast", "{seen:#?}");
}

#[tokio::test]
async fn an_unknown_receiver_name_is_recorded_not_dropped() {
    let cfg = config(Vec::new(), retry(3, 20, 1000));
    let g = Grouped::single(notice("inc-u", "catalog", Severity::Sev2, "opened"));
    let (out, seen) = send(&cfg, &g, &["nobody"]).await;
    assert_reported(&out, &seen);
    assert!(!out[0].delivered);
    assert_eq!(out[0].attempts.len(), 1);
    assert!(out[0].attempts[0]
        .error
        .as_deref()
        .unwrap()
        .contains("no receiver named \"nobody\""));
}

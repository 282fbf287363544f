//! The bodies each kind of receiver expects, built from one grouped message.
//! Pure functions returning JSON values (or, for e-mail, subject and text),
//! so their shapes are unit-tested and the delivery code never looks inside
//! them.

use serde_json::{json, Value};
use switchyard_model::time::{human_utc, rfc3339_ms};

use crate::config::ReceiverKind;
use crate::group::Grouped;
use crate::types::Severity;

/// Slack refuses a section whose text is longer than this.
const SLACK_SECTION_MAX: usize = 3000;

/// PagerDuty refuses a summary longer than this.
const PAGERDUTY_SUMMARY_MAX: usize = 1024;

/// The JSON body for an HTTP receiver of `kind`; `routing_key` is only read
/// by PagerDuty's. `None` for e-mail, which is text (see [`email`]).
pub fn render(kind: ReceiverKind, g: &Grouped, routing_key: &str) -> Option<Value> {
    match kind {
        ReceiverKind::Webhook => Some(webhook(g)),
        ReceiverKind::Slack => Some(slack(g)),
        ReceiverKind::Alertmanager => Some(alertmanager(g)),
        ReceiverKind::Pagerduty => Some(pagerduty(g, routing_key)),
        ReceiverKind::Email => None,
    }
}

/// PagerDuty's `event_action` for the incident's current state: resolved
/// resolves; acknowledged by a person acknowledges, unless this message is
/// an escalation, which triggers again so the pager goes off; anything else
/// (opened, severity or status changed) triggers, which PagerDuty merges
/// into the open alert of the same `dedup_key`.
pub fn pagerduty_action(g: &Grouped) -> &'static str {
    let n = &g.notice;
    if n.ended_at_ms.is_some() {
        "resolve"
    } else if n.acknowledged && !n.urgent {
        "acknowledge"
    } else {
        "trigger"
    }
}

/// PagerDuty's four severities, most severe first, for SEV1..SEV4.
pub fn pagerduty_severity(s: Severity) -> &'static str {
    match s {
        Severity::Sev1 => "critical",
        Severity::Sev2 => "error",
        Severity::Sev3 => "warning",
        Severity::Sev4 => "info",
    }
}

/// An Events API v2 event. The incident id is the `dedup_key`, so every
/// message about one incident lands on one PagerDuty alert. Acknowledge and
/// resolve carry only the key and the action, as the API expects.
pub fn pagerduty(g: &Grouped, routing_key: &str) -> Value {
    let n = &g.notice;
    let action = pagerduty_action(g);
    let mut v = json!({
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": n.incident_id,
    });
    if action != "trigger" {
        return v;
    }
    let summary = format!("[{}] {}: {}", n.severity, n.service, n.title);
    v["payload"] = json!({
        "summary": truncate(&summary, PAGERDUTY_SUMMARY_MAX),
        // Where it happens: the first affected scope (a zone, a region, a
        // link), else the service.
        "source": n.scopes.first().cloned().unwrap_or_else(|| n.service.clone()),
        "severity": pagerduty_severity(n.severity),
        "timestamp": time(n.started_at_ms),
        "component": n.service,
        "class": "switchyard-incident",
        "custom_details": {
            "status": n.status,
            "summary": n.summary,
            "scopes": n.scopes,
            "events": g.events.iter().map(|(at, e)| format!("{} {e}", time(*at))).collect::<Vec<_>>(),
        },
    });
    v["client"] = json!("Switchyard");
    if let Some(url) = &n.url {
        v["client_url"] = json!(url);
        v["links"] = json!([{ "href": url, "text": format!("Incident {}", n.incident_id) }]);
    }
    v
}

/// An e-mail's subject and plain-text body: what the Slack message says,
/// without markup.
pub fn email(g: &Grouped) -> (String, String) {
    let n = &g.notice;
    let subject = format!("[{}] {} — {}: {}", n.severity, n.service, n.status, n.title);
    let mut body = format!(
        "{}\n\nService: {}\nSeverity: {}\nStatus: {}\nStarted: {}\n",
        n.title,
        n.service,
        n.severity,
        n.status,
        human(n.started_at_ms)
    );
    if let Some(end) = n.ended_at_ms {
        body.push_str(&format!("Ended: {}\n", human(end)));
    }
    if !n.scopes.is_empty() {
        body.push_str(&format!("Scopes: {}\n", n.scopes.join(", ")));
    }
    if !n.summary.trim().is_empty() {
        body.push_str(&format!("\n{}\n", n.summary));
    }
    body.push_str("\nEvents:\n");
    for (at, event) in &g.events {
        body.push_str(&format!("  {} {event}\n", human(*at)));
    }
    body.push_str(&format!("\nIncident {}", n.incident_id));
    if let Some(url) = &n.url {
        body.push_str(&format!(": {url}"));
    }
    body.push('\n');
    (subject, body)
}

/// Switchyard's own document. `version` lets consumers notice a future
/// change of shape instead of misreading it.
pub fn webhook(g: &Grouped) -> Value {
    let n = &g.notice;
    json!({
        "version": "1",
        "incident": {
            "id": n.incident_id,
            "service": n.service,
            "severity": n.severity,
            "status": n.status,
            "title": n.title,
            "summary": n.summary,
            "scopes": n.scopes,
            "started_at": time(n.started_at_ms),
            "ended_at": n.ended_at_ms.map(time),
            "url": n.url,
        },
        "events": g.events.iter().map(|(at, event)| json!({
            "at": time(*at),
            "event": event,
        })).collect::<Vec<_>>(),
    })
}

/// A Slack incoming-webhook message: `text` is what notifications and
/// clients without blocks show, the blocks are the readable version.
pub fn slack(g: &Grouped) -> Value {
    let n = &g.notice;
    let events = g
        .events
        .iter()
        .map(|(_, e)| e.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    let text = format!(
        "[{}] {} — {}: {} ({events})",
        n.severity, n.service, n.status, n.title
    );

    let mut head = format!(
        "*[{}] {}: {}*\nStatus: *{}* · started {}",
        n.severity,
        esc(&n.service),
        esc(&n.title),
        esc(&n.status),
        human(n.started_at_ms)
    );
    if let Some(end) = n.ended_at_ms {
        head.push_str(&format!(" · ended {}", human(end)));
    }
    let mut blocks = vec![section(&head)];
    if !n.summary.trim().is_empty() {
        blocks.push(section(&esc(&n.summary)));
    }
    let mut list = String::from("*Events*");
    for (at, event) in &g.events {
        list.push_str(&format!("\n• {} {}", human(*at), esc(event)));
    }
    blocks.push(section(&list));
    let mut foot = Vec::new();
    if !n.scopes.is_empty() {
        foot.push(format!("Scopes: {}", esc(&n.scopes.join(", "))));
    }
    match &n.url {
        // `|` and `>` would end Slack's link syntax early.
        Some(url) if !url.contains(['|', '>']) => {
            foot.push(format!("<{url}|Incident {}>", esc(&n.incident_id)))
        }
        _ => foot.push(format!("Incident {}", esc(&n.incident_id))),
    }
    blocks.push(section(&foot.join("\n")));

    json!({ "text": truncate(&text, SLACK_SECTION_MAX), "blocks": blocks })
}

/// The array Alertmanager's `POST /api/v2/alerts` accepts, one alert per
/// incident. `endsAt` is only set once the incident has ended: a future or
/// absent `endsAt` keeps the alert firing, a past one resolves it.
pub fn alertmanager(g: &Grouped) -> Value {
    let n = &g.notice;
    let mut labels = json!({
        "alertname": "SwitchyardIncident",
        "incident": n.incident_id,
        "service": n.service,
        "severity": n.severity,
    });
    // Alertmanager treats an empty label as absent, so leave it out.
    if let Some(scope) = n.scopes.first() {
        labels["scope"] = json!(scope);
    }
    let mut alert = json!({
        "labels": labels,
        "annotations": {
            "summary": n.title,
            "description": n.summary,
            "status": n.status,
        },
        "startsAt": time(n.started_at_ms),
        "generatorURL": n.url.clone().unwrap_or_default(),
    });
    if let Some(end) = n.ended_at_ms {
        alert["endsAt"] = json!(time(end));
    }
    json!([alert])
}

fn section(text: &str) -> Value {
    json!({
        "type": "section",
        "text": { "type": "mrkdwn", "text": truncate(text, SLACK_SECTION_MAX) },
    })
}

/// Slack's mrkdwn gives `&`, `<` and `>` meaning; anything from an incident
/// is text, not markup.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn truncate(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max_chars - 1).collect();
    out.push('…');
    out
}

fn ms(at: u64) -> i64 {
    i64::try_from(at).unwrap_or(i64::MAX)
}

fn time(at: u64) -> String {
    rfc3339_ms(ms(at))
}

fn human(at: u64) -> String {
    human_utc(ms(at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Notice;

    const T0: u64 = 1_795_255_200_000; // 2026-11-21T10:00:00Z

    fn grouped(resolved: bool) -> Grouped {
        Grouped {
            notice: Notice {
                incident_id: "inc-7".into(),
                service: "catalog".into(),
                severity: Severity::Sev2,
                status: if resolved { "resolved" } else { "mitigating" }.into(),
                title: "Errors in zone eu-1a".into(),
                summary: "5xx from <eu-1a> & rising".into(),
                scopes: vec!["zone:eu/eu-1a".into(), "instance:eu-1a-2".into()],
                event: "status: mitigating".into(),
                at_ms: T0 + 1500,
                started_at_ms: T0,
                ended_at_ms: resolved.then_some(T0 + 60_000),
                url: Some("http://127.0.0.1:7000/incidents/inc-7".into()),
                urgent: false,
                acknowledged: false,
            },
            events: vec![
                (T0, "opened".into()),
                (T0 + 1000, "severity: SEV2".into()),
                (T0 + 1500, "status: mitigating".into()),
            ],
        }
    }

    #[test]
    fn webhook_shape() {
        let v = webhook(&grouped(false));
        assert_eq!(
            v,
            json!({
                "version": "1",
                "incident": {
                    "id": "inc-7",
                    "service": "catalog",
                    "severity": "SEV2",
                    "status": "mitigating",
                    "title": "Errors in zone eu-1a",
                    "summary": "5xx from <eu-1a> & rising",
                    "scopes": ["zone:eu/eu-1a", "instance:eu-1a-2"],
                    "started_at": "2026-11-21T10:00:00Z",
                    "ended_at": null,
                    "url": "http://127.0.0.1:7000/incidents/inc-7",
                },
                "events": [
                    {"at": "2026-11-21T10:00:00Z", "event": "opened"},
                    {"at": "2026-11-21T10:00:01Z", "event": "severity: SEV2"},
                    {"at": "2026-11-21T10:00:01.500Z", "event": "status: mitigating"},
                ],
            })
        );
        let v = webhook(&grouped(true));
        assert_eq!(v["incident"]["ended_at"], "2026-11-21T10:01:00Z");
    }

    #[test]
    fn slack_shape() {
        let v = slack(&grouped(false));
        let text = v["text"].as_str().unwrap();
        assert_eq!(
            text,
            "[SEV2] catalog — mitigating: Errors in zone eu-1a \
             (opened; severity: SEV2; status: mitigating)"
        );
        let blocks = v["blocks"].as_array().unwrap();
        assert!(blocks.len() >= 3);
        for b in blocks {
            assert_eq!(b["type"], "section");
            assert_eq!(b["text"]["type"], "mrkdwn");
            assert!(b["text"]["text"].as_str().unwrap().len() <= SLACK_SECTION_MAX);
        }
        let all: String = blocks
            .iter()
            .map(|b| b["text"]["text"].as_str().unwrap())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            all.contains("*[SEV2] catalog: Errors in zone eu-1a*"),
            "{all}"
        );
        assert!(all.contains("Status: *mitigating*"), "{all}");
        assert!(all.contains("&lt;eu-1a&gt; &amp; rising"), "escaped: {all}");
        assert!(
            all.contains("• 2026-11-21 10:00:01 UTC severity: SEV2"),
            "{all}"
        );
        assert!(all.contains("<http://127.0.0.1:7000/incidents/inc-7|Incident inc-7>"));
        assert!(!all.contains("ended"));
        let resolved = slack(&grouped(true)).to_string();
        assert!(resolved.contains("ended 2026-11-21 10:01:00 UTC"));
    }

    #[test]
    fn slack_sections_stay_under_the_limit() {
        let mut g = grouped(false);
        g.notice.summary = "x".repeat(10_000);
        let v = slack(&g);
        let s = v["blocks"][1]["text"]["text"].as_str().unwrap();
        assert_eq!(s.chars().count(), SLACK_SECTION_MAX);
        assert!(s.ends_with('…'));
    }

    #[test]
    fn alertmanager_shape_firing_and_resolved() {
        let v = alertmanager(&grouped(false));
        assert_eq!(
            v,
            json!([{
                "labels": {
                    "alertname": "SwitchyardIncident",
                    "incident": "inc-7",
                    "service": "catalog",
                    "severity": "SEV2",
                    "scope": "zone:eu/eu-1a",
                },
                "annotations": {
                    "summary": "Errors in zone eu-1a",
                    "description": "5xx from <eu-1a> & rising",
                    "status": "mitigating",
                },
                "startsAt": "2026-11-21T10:00:00Z",
                "generatorURL": "http://127.0.0.1:7000/incidents/inc-7",
            }])
        );
        let mut g = grouped(true);
        g.notice.scopes.clear();
        g.notice.url = None;
        let v = alertmanager(&g);
        assert_eq!(v[0]["endsAt"], "2026-11-21T10:01:00Z");
        assert_eq!(v[0]["generatorURL"], "");
        assert!(v[0]["labels"].get("scope").is_none());
    }

    #[test]
    fn render_picks_the_shape_by_kind() {
        let g = grouped(false);
        assert_eq!(render(ReceiverKind::Webhook, &g, ""), Some(webhook(&g)));
        assert_eq!(render(ReceiverKind::Slack, &g, ""), Some(slack(&g)));
        assert_eq!(
            render(ReceiverKind::Alertmanager, &g, ""),
            Some(alertmanager(&g))
        );
        assert_eq!(
            render(ReceiverKind::Pagerduty, &g, "key"),
            Some(pagerduty(&g, "key"))
        );
        assert_eq!(render(ReceiverKind::Email, &g, ""), None);
    }

    #[test]
    fn pagerduty_trigger_acknowledge_resolve() {
        let g = grouped(false);
        assert_eq!(
            pagerduty(&g, "R0UTING"),
            json!({
                "routing_key": "R0UTING",
                "event_action": "trigger",
                "dedup_key": "inc-7",
                "payload": {
                    "summary": "[SEV2] catalog: Errors in zone eu-1a",
                    "source": "zone:eu/eu-1a",
                    "severity": "error",
                    "timestamp": "2026-11-21T10:00:00Z",
                    "component": "catalog",
                    "class": "switchyard-incident",
                    "custom_details": {
                        "status": "mitigating",
                        "summary": "5xx from <eu-1a> & rising",
                        "scopes": ["zone:eu/eu-1a", "instance:eu-1a-2"],
                        "events": [
                            "2026-11-21T10:00:00Z opened",
                            "2026-11-21T10:00:01Z severity: SEV2",
                            "2026-11-21T10:00:01.500Z status: mitigating",
                        ],
                    },
                },
                "client": "Switchyard",
                "client_url": "http://127.0.0.1:7000/incidents/inc-7",
                "links": [{"href": "http://127.0.0.1:7000/incidents/inc-7", "text": "Incident inc-7"}],
            })
        );
        let mut acked = grouped(false);
        acked.notice.acknowledged = true;
        assert_eq!(
            pagerduty(&acked, "R0UTING"),
            json!({"routing_key": "R0UTING", "event_action": "acknowledge", "dedup_key": "inc-7"})
        );
        acked.notice.urgent = true;
        assert_eq!(
            pagerduty_action(&acked),
            "trigger",
            "an escalation pages again"
        );
        let mut resolved = grouped(true);
        resolved.notice.acknowledged = true;
        assert_eq!(
            pagerduty(&resolved, "R0UTING"),
            json!({"routing_key": "R0UTING", "event_action": "resolve", "dedup_key": "inc-7"})
        );
        let sev: Vec<&str> = Severity::ALL.into_iter().map(pagerduty_severity).collect();
        assert_eq!(sev, ["critical", "error", "warning", "info"]);
        let mut long = grouped(false);
        long.notice.title = "x".repeat(5000);
        long.notice.scopes.clear();
        let v = pagerduty(&long, "k");
        assert_eq!(
            v["payload"]["summary"].as_str().unwrap().chars().count(),
            PAGERDUTY_SUMMARY_MAX
        );
        assert_eq!(v["payload"]["source"], "catalog");
    }

    #[test]
    fn email_subject_and_text() {
        let (subject, body) = email(&grouped(true));
        assert_eq!(subject, "[SEV2] catalog — resolved: Errors in zone eu-1a");
        for want in [
            "Severity: SEV2\n",
            "Started: 2026-11-21 10:00:00 UTC\n",
            "Ended: 2026-11-21 10:01:00 UTC\n",
            "Scopes: zone:eu/eu-1a, instance:eu-1a-2\n",
            "5xx from <eu-1a> & rising",
            "  2026-11-21 10:00:01 UTC severity: SEV2\n",
            "Incident inc-7: http://127.0.0.1:7000/incidents/inc-7\n",
        ] {
            assert!(body.contains(want), "{want:?} in\n{body}");
        }
    }
}

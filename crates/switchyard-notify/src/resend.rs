//! Keeping Alertmanager's alerts firing. Alertmanager resolves an alert on
//! its own once `resolve_timeout` (5 min by default) passes without hearing
//! of it again, so an incident that lasts longer than that, with no news in
//! between, would show as resolved there while it is not. Prometheus re-sends
//! every firing alert for this reason; so do we, for receivers with a
//! `resend_ms`, until the incident resolves.
//!
//! Pure, with the clock passed in, like the [`Grouper`](crate::Grouper).

use std::collections::BTreeMap;

use crate::config::NotifyConfig;
use crate::group::Grouped;

/// The last message each re-sending receiver got about each firing incident.
#[derive(Debug, Default)]
pub struct Resender {
    /// (incident id, receiver) → (sent at, message).
    firing: BTreeMap<(String, String), (u64, Grouped)>,
}

impl Resender {
    pub fn new() -> Resender {
        Resender::default()
    }

    /// `g` went to `receivers` at `now_ms`. A resolved incident is forgotten
    /// for every receiver (its last message already said so); a firing one
    /// is remembered for the receivers that re-send.
    pub fn sent(&mut self, cfg: &NotifyConfig, g: &Grouped, receivers: &[String], now_ms: u64) {
        let id = &g.notice.incident_id;
        if g.notice.ended_at_ms.is_some() {
            self.forget(id);
            return;
        }
        for name in receivers {
            if cfg
                .receiver(name)
                .and_then(|r| r.resend_every_ms())
                .is_some()
            {
                self.firing
                    .insert((id.clone(), name.clone()), (now_ms, g.clone()));
            }
        }
    }

    /// Stops re-sending anything about `incident_id` (it was silenced, or
    /// resolved by other means).
    pub fn forget(&mut self, incident_id: &str) {
        self.firing.retain(|(id, _), _| id != incident_id);
    }

    /// The messages to send again now, each with its one receiver, counted
    /// as sent at `now_ms`. A receiver no longer in `cfg` (or no longer
    /// re-sending) is dropped.
    pub fn due(&mut self, cfg: &NotifyConfig, now_ms: u64) -> Vec<(Grouped, String)> {
        let mut out = Vec::new();
        self.firing.retain(|(_, name), (at, g)| {
            let Some(every) = cfg.receiver(name).and_then(|r| r.resend_every_ms()) else {
                return false;
            };
            if now_ms >= at.saturating_add(every) {
                *at = now_ms;
                out.push((g.clone(), name.clone()));
            }
            true
        });
        out
    }

    /// Incidents × receivers being kept firing.
    pub fn len(&self) -> usize {
        self.firing.len()
    }

    pub fn is_empty(&self) -> bool {
        self.firing.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ReceiverConfig, ReceiverKind};
    use crate::types::{Notice, Severity};

    fn cfg() -> NotifyConfig {
        let mut am = ReceiverConfig::http(
            "am",
            ReceiverKind::Alertmanager,
            "http://127.0.0.1:9093/api/v2/alerts",
        );
        am.resend_ms = Some(60_000);
        let mut off = am.clone();
        off.name = "am-off".into();
        off.resend_ms = Some(0);
        let hook = ReceiverConfig::http("hook", ReceiverKind::Webhook, "http://127.0.0.1:9/");
        NotifyConfig {
            receivers: vec![am, off, hook],
            ..NotifyConfig::default()
        }
    }

    fn g(id: &str, at: u64, resolved: bool) -> Grouped {
        Grouped::single(Notice {
            incident_id: id.into(),
            service: "catalog".into(),
            severity: Severity::Sev2,
            status: if resolved { "resolved" } else { "mitigating" }.into(),
            title: "t".into(),
            summary: "s".into(),
            scopes: vec![],
            event: "e".into(),
            at_ms: at,
            started_at_ms: 0,
            ended_at_ms: resolved.then_some(at),
            url: None,
            urgent: false,
            acknowledged: false,
        })
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_firing_incident_is_sent_again_every_interval_until_it_resolves() {
        let c = cfg();
        let mut r = Resender::new();
        r.sent(
            &c,
            &g("a", 1000, false),
            &names(&["am", "am-off", "hook"]),
            1000,
        );
        assert_eq!(r.len(), 1, "only the receiver that re-sends");
        assert!(r.due(&c, 60_999).is_empty());
        let due = r.due(&c, 61_000);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].1, "am");
        assert_eq!(due[0].0.notice.incident_id, "a");
        assert!(r.due(&c, 61_500).is_empty(), "counted as sent");
        // A newer message restarts the interval and is what is re-sent.
        r.sent(&c, &g("a", 90_000, false), &names(&["am"]), 90_000);
        assert!(r.due(&c, 121_000).is_empty());
        let due = r.due(&c, 150_000);
        assert_eq!(due[0].0.notice.at_ms, 90_000);
        // Resolved, to whomever: nothing more.
        r.sent(&c, &g("a", 160_000, true), &names(&["hook"]), 160_000);
        assert!(r.is_empty());
        assert!(r.due(&c, 1_000_000).is_empty());
    }

    #[test]
    fn forgetting_and_receivers_gone_from_the_config() {
        let c = cfg();
        let mut r = Resender::new();
        r.sent(&c, &g("a", 0, false), &names(&["am"]), 0);
        r.sent(&c, &g("b", 0, false), &names(&["am"]), 0);
        r.forget("a");
        let due = r.due(&c, 60_000);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].0.notice.incident_id, "b");
        let none = NotifyConfig::default();
        assert!(r.due(&none, 200_000).is_empty());
        assert!(r.is_empty());
    }
}

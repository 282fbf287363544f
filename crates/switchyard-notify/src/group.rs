//! Grouping: the notices one incident produces in a short burst (opened,
//! severity raised, mitigating) become one message, not three pages; and
//! once a message about an incident went out, the next one waits for the
//! group interval, so a finding that flaps (monitoring, mitigating,
//! monitoring…) is one update per interval, not a message per flap. A
//! notice that raises the severity, or is marked urgent (an escalation), is
//! not held for the interval: it is what paging is for.
//!
//! The clock is passed in, so the caller decides how often to ask what is
//! due and tests need no sleeping.

use std::collections::BTreeMap;

use crate::types::{Notice, Severity};

/// One message's worth of an incident: its latest state plus every event
/// that was waiting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grouped {
    /// The latest notice: current status, severity, summary.
    pub notice: Notice,
    /// `(at_ms, event)` for every notice in the group, oldest first.
    pub events: Vec<(u64, String)>,
}

impl Grouped {
    /// A message of a single notice, for callers that send without waiting.
    pub fn single(notice: Notice) -> Grouped {
        Grouped {
            events: vec![(notice.at_ms, notice.event.clone())],
            notice,
        }
    }
}

#[derive(Debug)]
struct Pending {
    /// When the first notice of the group was pushed (caller's clock).
    first_ms: u64,
    latest: Notice,
    events: Vec<(u64, String)>,
    /// One of the notices is urgent.
    urgent: bool,
}

/// The last message sent about an incident.
#[derive(Debug, Clone, Copy)]
struct Sent {
    at_ms: u64,
    severity: Severity,
}

/// Holds notices per incident until the group wait has passed since the
/// first of them, and the group interval since the last message.
#[derive(Debug)]
pub struct Grouper {
    wait_ms: u64,
    interval_ms: u64,
    /// Keyed by incident id; ordered so `due` answers deterministically.
    pending: BTreeMap<String, Pending>,
    /// Incidents told within the last interval.
    sent: BTreeMap<String, Sent>,
}

impl Grouper {
    /// `wait_ms` is `group_wait_ms` from the config; 0 sends each notice on
    /// the next `due`. No group interval: see [`Grouper::with_interval`].
    pub fn new(wait_ms: u64) -> Grouper {
        Grouper::with_interval(wait_ms, 0)
    }

    /// `interval_ms` is `group_interval_ms`: after a message about an
    /// incident, the next waits this long unless it raises the severity.
    pub fn with_interval(wait_ms: u64, interval_ms: u64) -> Grouper {
        Grouper {
            wait_ms,
            interval_ms,
            pending: BTreeMap::new(),
            sent: BTreeMap::new(),
        }
    }

    /// When the group of `id` may go out.
    fn due_at(&self, id: &str, p: &Pending) -> u64 {
        let waited = p.first_ms.saturating_add(self.wait_ms);
        match self.sent.get(id) {
            Some(s) if !p.urgent && p.latest.severity <= s.severity => {
                waited.max(s.at_ms.saturating_add(self.interval_ms))
            }
            _ => waited,
        }
    }

    /// Adds a notice received at `now_ms`. The wait starts at the first
    /// pending notice of its incident and is not extended by later ones, so a
    /// steady trickle of updates cannot hold a message back forever.
    pub fn push(&mut self, notice: Notice, now_ms: u64) {
        let event = (notice.at_ms, notice.event.clone());
        match self.pending.get_mut(&notice.incident_id) {
            Some(p) => {
                p.urgent |= notice.urgent;
                // Events may be reported out of order; the one that happened
                // last is the incident's current state (ties: pushed last).
                if notice.at_ms >= p.latest.at_ms {
                    p.latest = notice;
                }
                p.events.push(event);
            }
            None => {
                self.pending.insert(
                    notice.incident_id.clone(),
                    Pending {
                        first_ms: now_ms,
                        urgent: notice.urgent,
                        latest: notice,
                        events: vec![event],
                    },
                );
            }
        }
    }

    /// Takes every group whose first notice has waited `wait_ms` or more
    /// and whose incident was last told `interval_ms` ago or more (or that
    /// raises its severity), oldest group first.
    pub fn due(&mut self, now_ms: u64) -> Vec<Grouped> {
        let interval = self.interval_ms;
        self.sent
            .retain(|_, s| now_ms.saturating_sub(s.at_ms) < interval);
        let ready: Vec<String> = self
            .pending
            .iter()
            .filter(|(id, p)| self.due_at(id, p) <= now_ms)
            .map(|(id, _)| id.clone())
            .collect();
        self.take(ready, now_ms)
    }

    /// Takes every pending group regardless of the wait (on shutdown, so
    /// nothing already known is lost).
    pub fn drain(&mut self) -> Vec<Grouped> {
        let all: Vec<String> = self.pending.keys().cloned().collect();
        self.take(all, 0)
    }

    /// When the next group becomes due, so a caller can sleep until then.
    pub fn next_due_ms(&self) -> Option<u64> {
        self.pending.iter().map(|(id, p)| self.due_at(id, p)).min()
    }

    /// The last message about `incident_id` reached nobody (silenced, or no
    /// route matched): the next one need not wait for the interval.
    pub fn untold(&mut self, incident_id: &str) {
        self.sent.remove(incident_id);
    }

    /// Incidents with notices waiting.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    fn take(&mut self, ids: Vec<String>, now_ms: u64) -> Vec<Grouped> {
        let mut out: Vec<(u64, Grouped)> = ids
            .into_iter()
            .filter_map(|id| self.pending.remove(&id))
            .map(|mut p| {
                if self.interval_ms > 0 {
                    self.sent.insert(
                        p.latest.incident_id.clone(),
                        Sent {
                            at_ms: now_ms,
                            severity: p.latest.severity,
                        },
                    );
                }
                // Stable: events at the same instant keep the order pushed.
                p.events.sort_by_key(|(at, _)| *at);
                (
                    p.first_ms,
                    Grouped {
                        notice: p.latest,
                        events: p.events,
                    },
                )
            })
            .collect();
        out.sort_by_key(|(first, _)| *first);
        out.into_iter().map(|(_, g)| g).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Severity;

    fn n(id: &str, at: u64, event: &str, sev: Severity, status: &str) -> Notice {
        Notice {
            incident_id: id.into(),
            service: "catalog".into(),
            severity: sev,
            status: status.into(),
            title: "errors in eu-1a".into(),
            summary: "s".into(),
            scopes: vec![],
            event: event.into(),
            at_ms: at,
            started_at_ms: 1000,
            ended_at_ms: None,
            url: None,
            urgent: false,
            acknowledged: false,
        }
    }

    #[test]
    fn a_burst_is_one_message_with_the_latest_state_and_every_event() {
        let mut g = Grouper::new(2000);
        g.push(
            n("a", 1000, "opened", Severity::Sev3, "investigating"),
            1000,
        );
        g.push(
            n("a", 1200, "severity: SEV2", Severity::Sev2, "investigating"),
            1200,
        );
        g.push(
            n(
                "a",
                1900,
                "status: mitigating",
                Severity::Sev2,
                "mitigating",
            ),
            1900,
        );
        assert!(g.due(2999).is_empty(), "still within the wait");
        assert_eq!(g.next_due_ms(), Some(3000));
        let out = g.due(3000);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].notice.status, "mitigating");
        assert_eq!(out[0].notice.severity, Severity::Sev2);
        assert_eq!(
            out[0].events,
            [
                (1000, "opened".to_string()),
                (1200, "severity: SEV2".to_string()),
                (1900, "status: mitigating".to_string()),
            ]
        );
        assert!(g.is_empty());
        assert!(g.due(10_000).is_empty(), "sent once");
    }

    #[test]
    fn incidents_are_grouped_apart_and_a_new_group_starts_after_sending() {
        let mut g = Grouper::new(100);
        g.push(n("b", 50, "opened", Severity::Sev1, "investigating"), 50);
        g.push(n("a", 10, "opened", Severity::Sev1, "investigating"), 10);
        assert_eq!(g.len(), 2);
        let out = g.due(120);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].notice.incident_id, "a");
        g.push(n("a", 130, "resolved", Severity::Sev1, "resolved"), 130);
        let out = g.due(150);
        assert_eq!(out.len(), 1, "b is due, a's new group is not");
        assert_eq!(out[0].notice.incident_id, "b");
        let out = g.drain();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].events, [(130, "resolved".to_string())]);
    }

    #[test]
    fn after_a_message_the_next_waits_for_the_interval_unless_it_raises_the_severity() {
        let mut g = Grouper::with_interval(1000, 30_000);
        g.push(n("a", 0, "opened", Severity::Sev3, "identified"), 0);
        assert_eq!(g.due(1000).len(), 1);
        // A finding flapping: monitoring, mitigating, monitoring, mitigating.
        for (k, t) in [5_000u64, 11_000, 17_000, 23_000].into_iter().enumerate() {
            let status = if k % 2 == 0 {
                "monitoring"
            } else {
                "mitigating"
            };
            g.push(
                n("a", t, &format!("status: {status}"), Severity::Sev3, status),
                t,
            );
            assert!(g.due(t + 1000).is_empty(), "held at {t}");
        }
        assert_eq!(g.next_due_ms(), Some(31_000));
        let out = g.due(31_000);
        assert_eq!(out.len(), 1, "one update for four flaps");
        assert_eq!(out[0].events.len(), 4);
        assert_eq!(out[0].notice.status, "mitigating");
        // A severity raise pages after the group wait, interval or not…
        g.push(
            n("a", 35_000, "severity raised", Severity::Sev2, "mitigating"),
            35_000,
        );
        assert_eq!(g.next_due_ms(), Some(36_000));
        assert_eq!(g.due(36_000).len(), 1);
        // …and so does an urgent notice at a severity that cannot rise.
        g.push(
            n(
                "a",
                36_200,
                "status: monitoring",
                Severity::Sev2,
                "monitoring",
            ),
            36_200,
        );
        let mut esc = n("a", 36_500, "escalated", Severity::Sev2, "monitoring");
        esc.urgent = true;
        g.push(esc, 36_500);
        assert_eq!(g.next_due_ms(), Some(37_200));
        assert_eq!(g.due(37_200).len(), 1);
        // Another incident is not held by the first one's interval.
        g.push(
            n("b", 37_000, "opened", Severity::Sev4, "identified"),
            37_000,
        );
        assert_eq!(g.due(38_000).len(), 1);
        // A message that reached nobody does not hold the next one back.
        g.push(
            n(
                "b",
                39_000,
                "status: mitigating",
                Severity::Sev4,
                "mitigating",
            ),
            39_000,
        );
        assert!(g.due(40_000).is_empty());
        g.untold("b");
        assert_eq!(g.due(40_000).len(), 1);
        // Once the interval has passed, a notice waits only the group wait.
        g.push(
            n("a", 70_000, "resolved", Severity::Sev2, "resolved"),
            70_000,
        );
        assert_eq!(g.due(71_000).len(), 1);
    }

    #[test]
    fn out_of_order_notices_keep_the_latest_state() {
        let mut g = Grouper::new(0);
        g.push(
            n("a", 200, "status: mitigating", Severity::Sev2, "mitigating"),
            5,
        );
        g.push(n("a", 100, "opened", Severity::Sev2, "investigating"), 6);
        let out = g.due(6);
        assert_eq!(out[0].notice.status, "mitigating");
        assert_eq!(out[0].events[0].1, "opened");
    }
}

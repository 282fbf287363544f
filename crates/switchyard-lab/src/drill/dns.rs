//! What the lab's DNS servers answered during a drill, and the numbers made
//! of it: when a server's probes found a region's edges gone, when every
//! server stopped answering that region's clients with it, when clients
//! followed, and how the region got its clients back.
//!
//! A watcher asks each server's `/status` every 100 ms and keeps a sample
//! whenever what it sees changes; the numbers are pure functions of those
//! samples and of the clients' timeline, so they can be checked without a
//! lab.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use switchyard_api::dns::DnsStatus;
use switchyard_report::{Action as ActionRecord, Finding, Second};
use tokio::time::Instant;

use crate::topology::{Topology, HOST};

/// One server's view when it changed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DnsSample {
    pub(crate) at_s: f64,
    pub(crate) server: String,
    /// Zones whose edge the server's probes see dead.
    pub(crate) dead: BTreeSet<String>,
    /// Client region → (region answered, share) for the lab's service.
    pub(crate) answers: BTreeMap<String, Vec<(String, f64)>>,
}

impl DnsSample {
    /// The share of `region`'s own clients answered with `region`; `None`
    /// when the server showed no answers for them (not known, not zero).
    pub(crate) fn own_share(&self, region: &str) -> Option<f64> {
        self.answers
            .get(region)
            .map(|c| c.iter().filter(|(r, _)| r == region).map(|(_, w)| w).sum())
    }
}

pub(crate) struct DnsWatch {
    samples: Arc<Mutex<Vec<DnsSample>>>,
    task: tokio::task::JoinHandle<()>,
}

const SERVICE: &str = "catalog";

impl DnsWatch {
    pub(crate) fn start(topo: &Topology, start: Instant) -> DnsWatch {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let servers = topo.dns_servers();
        let out = samples.clone();
        let task = tokio::spawn(async move {
            let mut last: BTreeMap<String, DnsSample> = BTreeMap::new();
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                for (name, _, admin) in &servers {
                    let Some(st) = crate::http::get_json::<DnsStatus>(
                        *admin,
                        "/status",
                        Duration::from_millis(500),
                    )
                    .await
                    else {
                        continue;
                    };
                    let s = sample(&st, start.elapsed().as_secs_f64());
                    let changed = last
                        .get(name)
                        .is_none_or(|p| p.dead != s.dead || p.answers != s.answers);
                    if changed {
                        last.insert(name.clone(), s.clone());
                        out.lock().expect("dns samples").push(s);
                    }
                }
            }
        });
        DnsWatch { samples, task }
    }

    pub(crate) fn finish(self) -> Vec<DnsSample> {
        self.task.abort();
        std::mem::take(&mut *self.samples.lock().expect("dns samples"))
    }
}

fn sample(st: &DnsStatus, at_s: f64) -> DnsSample {
    DnsSample {
        at_s,
        server: st.server.clone(),
        dead: st
            .edges
            .iter()
            .filter(|(_, alive)| !**alive)
            .map(|(z, _)| z.clone())
            .collect(),
        answers: st
            .service(SERVICE)
            .map(|a| {
                a.by_region
                    .iter()
                    .map(|(r, cs)| {
                        (
                            r.clone(),
                            cs.iter().map(|c| (c.region.clone(), c.weight)).collect(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// Each server's samples, in time order.
fn by_server(samples: &[DnsSample]) -> BTreeMap<&str, Vec<&DnsSample>> {
    let mut m: BTreeMap<&str, Vec<&DnsSample>> = BTreeMap::new();
    for s in samples {
        m.entry(s.server.as_str()).or_default().push(s);
    }
    m
}

/// Episodes in which a server saw every edge of a region dead, as findings
/// of the DNS servers' probes, and the moments their answers gave the
/// region's clients away and took them back, as actions.
pub(crate) fn findings_and_actions(
    samples: &[DnsSample],
    topo: &Topology,
) -> (Vec<Finding>, Vec<ActionRecord>) {
    let mut findings = Vec::new();
    let mut actions = Vec::new();
    for (server, ss) in by_server(samples) {
        for r in &topo.regions {
            let mut down = false;
            // Since the probes last saw every edge dead, until the share
            // is whole again: the share moves by the return ramp.
            let mut returning = false;
            let mut share = 1.0;
            for s in &ss {
                let all_dead = r.zones.iter().all(|z| s.dead.contains(z));
                if all_dead && !down {
                    findings.push(Finding {
                        scope: format!("region:{}", r.name),
                        kind: "ingress_lost".into(),
                        at_s: s.at_s,
                        evidence: json!({"detector": format!("dns {server} probes"), "edges_dead": r.zones}),
                    });
                }
                returning = all_dead || returning;
                down = all_dead;
                let Some(now) = s.own_share(&r.name) else {
                    continue;
                };
                let what = if share > 0.0 && now == 0.0 {
                    Some(format!(
                        "dns {server}: stop answering {HOST} with {} for its clients",
                        r.name
                    ))
                } else if share == 0.0 && now > 0.0 {
                    Some(format!(
                        "dns {server}: answer {} to {:.0} % of its clients again",
                        r.name,
                        now * 100.0
                    ))
                } else if share < 1.0 && now >= 1.0 {
                    Some(format!(
                        "dns {server}: answer {} to all its clients again",
                        r.name
                    ))
                } else {
                    None
                };
                // An answer moves for the probes or for the controls (an
                // evacuation, a failover): say which.
                let why = if all_dead {
                    format!("its probes see every edge of {} dead", r.name)
                } else if returning {
                    format!(
                        "{}'s edges answer its probes again; its clients come back over the return ramp",
                        r.name
                    )
                } else {
                    format!("the controls for {}", r.name)
                };
                if now >= 1.0 {
                    returning = false;
                }
                if let Some(what) = what {
                    actions.push(ActionRecord {
                        what,
                        why,
                        at_s: s.at_s,
                        accepted: true,
                        refused_by: None,
                    });
                }
                share = now;
            }
        }
    }
    (findings, actions)
}

/// What the DNS metrics are computed from.
pub(crate) struct DnsRun<'a> {
    pub(crate) samples: &'a [DnsSample],
    pub(crate) servers: usize,
    /// The region whose ingress the drill breaks (its `region:` scope).
    pub(crate) region: &'a str,
    pub(crate) zones: &'a [String],
    /// The client groups whose users are in that region.
    pub(crate) groups: &'a [String],
    pub(crate) fault_at: f64,
    pub(crate) restored_at: Option<f64>,
}

impl DnsRun<'_> {
    /// When a server's probes first saw every edge of the region dead.
    pub(crate) fn detected_at(&self) -> Option<f64> {
        self.samples
            .iter()
            .filter(|s| s.at_s >= self.fault_at)
            .find(|s| self.zones.iter().all(|z| s.dead.contains(z)))
            .map(|s| s.at_s)
    }

    /// When the last server stopped answering the region's clients with it.
    pub(crate) fn moved_at(&self) -> Option<f64> {
        let per = by_server(self.samples);
        if per.len() < self.servers {
            return None;
        }
        per.values()
            .map(|ss| {
                ss.iter()
                    .filter(|s| s.at_s >= self.fault_at)
                    .find(|s| s.own_share(self.region) == Some(0.0))
                    .map(|s| s.at_s)
            })
            .collect::<Option<Vec<f64>>>()
            .and_then(|v| v.into_iter().reduce(f64::max))
    }

    /// After the fault and before the restore, the end of the last second
    /// in which one of the region's groups still sent a request to the
    /// region's edges.
    pub(crate) fn clients_moved_at(&self, timeline: &[Second]) -> Option<f64> {
        let until = self.restored_at.unwrap_or(f64::INFINITY);
        let last = timeline
            .iter()
            .filter(|s| f64::from(s.t) >= self.fault_at.floor() && f64::from(s.t) < until)
            .filter(|s| self.entered(s).0 > 0)
            .map(|s| f64::from(s.t) + 1.0)
            .reduce(f64::max);
        Some(last.unwrap_or(self.fault_at))
    }

    /// (requests of the region's groups sent to the region, all of theirs).
    fn entered(&self, s: &Second) -> (u64, u64) {
        self.groups
            .iter()
            .filter_map(|g| s.entered.get(g))
            .fold((0, 0), |(home, all), m| {
                (
                    home + m.get(self.region).copied().unwrap_or(0),
                    all + m.values().sum::<u64>(),
                )
            })
    }

    /// Failed requests due from `from` until the restore (or the end).
    pub(crate) fn failed_from(&self, timeline: &[Second], from: f64) -> u64 {
        let until = self.restored_at.unwrap_or(f64::INFINITY);
        timeline
            .iter()
            .filter(|s| f64::from(s.t) >= from.ceil() && f64::from(s.t) < until)
            .map(|s| s.failures)
            .sum()
    }

    /// After the restore, each server's share for the region's clients over
    /// time: (when the last server answered all of them with the region
    /// again, the fewest rises any server took, the falls on all servers).
    pub(crate) fn return_shape(&self) -> (Option<f64>, usize, usize) {
        let Some(restored) = self.restored_at else {
            return (None, 0, 0);
        };
        let mut back = Some(restored);
        let mut steps = usize::MAX;
        let mut falls = 0;
        let per = by_server(self.samples);
        if per.len() < self.servers {
            return (None, 0, 0);
        }
        for ss in per.values() {
            let mut prev = ss
                .iter()
                .rev()
                .filter(|s| s.at_s < restored)
                .find_map(|s| s.own_share(self.region))
                .unwrap_or(1.0);
            let mut rises = 0;
            let mut full = None;
            for s in ss.iter().filter(|s| s.at_s >= restored) {
                let Some(now) = s.own_share(self.region) else {
                    continue;
                };
                if now > prev + 1e-9 {
                    rises += 1;
                } else if now < prev - 1e-9 {
                    falls += 1;
                }
                if full.is_none() && now >= 1.0 - 1e-9 {
                    full = Some(s.at_s);
                }
                prev = now;
            }
            steps = steps.min(rises);
            back = match (back, full) {
                (Some(b), Some(f)) => Some(b.max(f)),
                _ => None,
            };
        }
        (back.map(|b| b - restored), steps, falls)
    }

    /// After the restore, the first second from which the region's groups
    /// sent at least 95 % of their requests to the region for 3 seconds in
    /// a row.
    pub(crate) fn clients_returned_at(&self, timeline: &[Second]) -> Option<f64> {
        let restored = self.restored_at?;
        let home: Vec<(u32, bool)> = timeline
            .iter()
            .filter(|s| f64::from(s.t) >= restored.ceil())
            .map(|s| {
                let (h, all) = self.entered(s);
                (s.t, all > 0 && h as f64 >= 0.95 * all as f64)
            })
            .collect();
        home.windows(3)
            .find(|w| w.iter().all(|(_, ok)| *ok))
            .map(|w| f64::from(w[0].0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(at_s: f64, server: &str, dead: &[&str], share: f64) -> DnsSample {
        let mut own = vec![];
        if share > 0.0 {
            own.push(("r1".to_string(), share));
        }
        if share < 1.0 {
            own.push(("r2".to_string(), 1.0 - share));
        }
        DnsSample {
            at_s,
            server: server.into(),
            dead: dead.iter().map(|z| z.to_string()).collect(),
            answers: [("r1".to_string(), own)].into(),
        }
    }

    fn second(t: u32, home: u64, away: u64, failures: u64) -> Second {
        Second {
            t,
            requests: home + away,
            failures,
            entered: [(
                "g1".to_string(),
                [("r1".to_string(), home), ("r2".to_string(), away)].into(),
            )]
            .into(),
            ..Default::default()
        }
    }

    #[test]
    fn ingress_loss_and_return_are_timed_from_every_servers_answers() {
        let zones = vec!["r1a".to_string(), "r1b".to_string()];
        let groups = vec!["g1".to_string()];
        let samples = vec![
            s(0.1, "ns1", &[], 1.0),
            s(0.1, "ns2", &[], 1.0),
            s(10.6, "ns1", &["r1a"], 1.0),
            s(11.2, "ns1", &["r1a", "r1b"], 0.0),
            s(11.4, "ns2", &["r1a", "r1b"], 0.0),
            // Back: ns1 rises in three steps, ns2 in two with a dip.
            s(30.5, "ns1", &[], 0.25),
            s(35.5, "ns1", &[], 0.5),
            s(40.5, "ns1", &[], 1.0),
            s(30.6, "ns2", &[], 0.5),
            s(31.0, "ns2", &[], 0.25),
            s(41.0, "ns2", &[], 1.0),
        ];
        let run = DnsRun {
            samples: &samples,
            servers: 2,
            region: "r1",
            zones: &zones,
            groups: &groups,
            fault_at: 10.0,
            restored_at: Some(30.0),
        };
        assert_eq!(run.detected_at(), Some(11.2));
        assert_eq!(run.moved_at(), Some(11.4));
        let mut timeline: Vec<Second> = (0..50).map(|t| second(t, 10, 0, 0)).collect();
        for (t, s) in timeline.iter_mut().enumerate().take(30).skip(10) {
            *s = second(t as u32, 0, 10, 0);
        }
        timeline[10] = second(10, 6, 4, 6);
        timeline[11] = second(11, 3, 7, 3);
        timeline[12] = second(12, 1, 9, 1);
        timeline[31] = second(31, 3, 7, 0);
        assert_eq!(run.clients_moved_at(&timeline), Some(13.0));
        assert_eq!(run.failed_from(&timeline, 13.0), 0);
        assert_eq!(run.failed_from(&timeline, 10.0), 10);
        let (back, steps, falls) = run.return_shape();
        assert_eq!(back, Some(11.0));
        assert_eq!(steps, 2, "the fewest rises of any server");
        assert_eq!(falls, 1, "ns2 dipped once");
        assert_eq!(run.clients_returned_at(&timeline), Some(32.0));
    }

    #[test]
    fn a_server_that_never_moved_means_not_moved() {
        let zones = vec!["r1a".to_string()];
        let samples = vec![s(11.0, "ns1", &["r1a"], 0.0), s(0.0, "ns2", &[], 1.0)];
        let run = DnsRun {
            samples: &samples,
            servers: 2,
            region: "r1",
            zones: &zones,
            groups: &[],
            fault_at: 10.0,
            restored_at: None,
        };
        assert_eq!(run.detected_at(), Some(11.0));
        assert_eq!(run.moved_at(), None);
    }

    #[test]
    fn findings_and_actions_name_the_server_and_the_region() {
        let topo = Topology::default_topology();
        let dead = ["us-east-a", "us-east-b", "us-east-c"];
        let share = |at_s: f64, dead: &[&str], own: f64| {
            let mut x = s(at_s, "ns1", dead, 1.0);
            let mut c = vec![];
            if own > 0.0 {
                c.push(("us-east".to_string(), own));
            }
            if own < 1.0 {
                c.push(("eu-west".to_string(), 1.0 - own));
            }
            x.answers = [("us-east".to_string(), c)].into();
            x
        };
        let samples = vec![
            share(1.0, &[], 1.0),
            share(11.0, &dead, 0.0),
            share(30.5, &[], 0.1),
            share(50.0, &[], 1.0),
            // An evacuation by the controls, every edge alive.
            share(60.0, &[], 0.0),
        ];
        let (f, a) = findings_and_actions(&samples, &topo);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].scope, "region:us-east");
        assert_eq!(f[0].at_s, 11.0);
        let what: Vec<&str> = a.iter().map(|a| a.what.as_str()).collect();
        assert_eq!(
            what,
            [
                "dns ns1: stop answering catalog.lab with us-east for its clients",
                "dns ns1: answer us-east to 10 % of its clients again",
                "dns ns1: answer us-east to all its clients again",
                "dns ns1: stop answering catalog.lab with us-east for its clients",
            ]
        );
        let why: Vec<&str> = a.iter().map(|a| a.why.as_str()).collect();
        assert_eq!(
            why,
            [
                "its probes see every edge of us-east dead",
                "us-east's edges answer its probes again; its clients come back over the return ramp",
                "us-east's edges answer its probes again; its clients come back over the return ramp",
                "the controls for us-east",
            ],
            "each move says whether the probes or the controls made it"
        );
    }
}

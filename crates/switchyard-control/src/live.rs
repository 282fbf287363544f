//! What the plane observes of the edges, second by second, for the live
//! view (`GET /v1/live`, the console's overview): per service and zone
//! served, the requests, failures and worst p99 of each second; per edge,
//! when it was last heard from and which config it runs.
//!
//! Pure over the snapshots it is given and the `now` it is asked at, so
//! it can be tested without a clock; the detection loop feeds it.

use std::collections::BTreeMap;

use switchyard_api::live::{
    EdgeHealth, EdgeSeen, TrafficPoint, ZoneTraffic, EDGE_STALE_MS, RECENT_SECONDS, SPARK_SECONDS,
};
use switchyard_model::signals::Snapshot;
use switchyard_model::Config;

#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Second {
    requests: u64,
    failures: u64,
    p99_ms: f64,
}

#[derive(Debug, Default)]
struct Heard {
    at_ms: u64,
    config_version: Option<String>,
    config_refused: Option<String>,
}

/// Seconds are kept a little longer than a frame shows, so a late edge's
/// snapshot still lands in its own second.
const KEEP_SECONDS: u64 = SPARK_SECONDS + 5;

#[derive(Debug, Default)]
pub struct Live {
    /// (service, zone served) → second (epoch s) → totals.
    seconds: BTreeMap<(String, String), BTreeMap<u64, Second>>,
    /// Edge zone → last signal.
    heard: BTreeMap<String, Heard>,
}

impl Live {
    pub fn ingest(&mut self, s: &Snapshot, received_ms: u64) {
        let heard = self.heard.entry(s.source_zone.clone()).or_default();
        heard.at_ms = heard.at_ms.max(received_ms);
        heard.config_version = s.config_version.clone();
        heard.config_refused = s
            .config_refused
            .as_ref()
            .map(|r| format!("{}: {}", r.version, r.reason));
        // The snapshot covers the interval that ends at `at_ms`: its
        // requests belong to the second that interval mostly fell in.
        let second = s.at_ms.saturating_sub(s.interval_ms / 2) / 1000;
        for series in s.series.iter().filter(|x| x.requests > 0) {
            let key = (series.service.clone(), series.target_zone.clone());
            let q = self.seconds.entry(key).or_default();
            let slot = q.entry(second).or_default();
            slot.requests += series.requests;
            slot.failures += series.failures();
            slot.p99_ms = slot.p99_ms.max(series.p99_ms);
            while q
                .first_key_value()
                .is_some_and(|(t, _)| *t + KEEP_SECONDS < second)
            {
                q.pop_first();
            }
        }
    }

    /// Every zone of every service, with what it served: the last
    /// [`RECENT_SECONDS`] complete seconds as `recent` (the second now
    /// running is still arriving from the edges, so it is left out).
    pub fn traffic(&self, config: &Config, now_ms: u64) -> Vec<ZoneTraffic> {
        let now_s = now_ms / 1000;
        let mut out = Vec::new();
        for svc in &config.services {
            for zone in config.zones() {
                let q = self.seconds.get(&(svc.name.clone(), zone.name.clone()));
                let seconds: Vec<(u64, Second)> = q
                    .map(|q| {
                        q.range(now_s.saturating_sub(SPARK_SECONDS)..now_s)
                            .map(|(t, s)| (*t, *s))
                            .collect()
                    })
                    .unwrap_or_default();
                let points = seconds
                    .iter()
                    .map(|(t, s)| point(*t * 1000, s, 1))
                    .collect();
                let recent_from = now_s.saturating_sub(RECENT_SECONDS);
                let recent = seconds.iter().filter(|(t, _)| *t >= recent_from).fold(
                    Second::default(),
                    |a, (_, s)| Second {
                        requests: a.requests + s.requests,
                        failures: a.failures + s.failures,
                        p99_ms: a.p99_ms.max(s.p99_ms),
                    },
                );
                out.push(ZoneTraffic {
                    service: svc.name.clone(),
                    region: zone.region.clone(),
                    zone: zone.name.clone(),
                    recent: (recent.requests > 0)
                        .then(|| point(recent_from * 1000, &recent, RECENT_SECONDS)),
                    points,
                });
            }
        }
        out
    }

    /// Every configured edge, by what its signals said last.
    pub fn edges(&self, config: &Config, now_ms: u64) -> Vec<EdgeSeen> {
        config
            .zones()
            .map(|z| {
                let h = self.heard.get(&z.name);
                let age = h.map(|h| now_ms.saturating_sub(h.at_ms));
                EdgeSeen {
                    zone: z.name.clone(),
                    region: z.region.clone(),
                    health: match age {
                        None => EdgeHealth::Unknown,
                        Some(a) if a <= EDGE_STALE_MS => EdgeHealth::Up,
                        Some(_) => EdgeHealth::Silent,
                    },
                    last_signal_ms_ago: age,
                    config_version: h.and_then(|h| h.config_version.clone()),
                    config_refused: h.and_then(|h| h.config_refused.clone()),
                }
            })
            .collect()
    }
}

fn point(at_ms: u64, s: &Second, seconds: u64) -> TrafficPoint {
    TrafficPoint {
        at_ms,
        requests: s.requests,
        failures: s.failures,
        rps: s.requests as f64 / seconds as f64,
        error_ratio: if s.requests == 0 {
            0.0
        } else {
            s.failures as f64 / s.requests as f64
        },
        p99_ms: s.p99_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap as Map;
    use switchyard_model::signals::Series;

    fn config() -> Config {
        switchyard_model::Config::from_toml(
            r#"
[[region]]
name = "r1"
[[region.zone]]
name = "a"
edge = "127.0.0.1:8001"
admin = "127.0.0.1:9001"
[[region.zone]]
name = "b"
edge = "127.0.0.1:8002"
admin = "127.0.0.1:9002"

[[service]]
name = "svc"
hosts = ["svc.test"]
min_healthy = 0.5
[[service.instance]]
name = "i1"
zone = "a"
addr = "127.0.0.1:7001"
[[service.instance]]
name = "i2"
zone = "b"
addr = "127.0.0.1:7002"
"#,
            |_| None,
        )
        .expect("valid config")
    }

    fn snapshot(
        from: &str,
        at_ms: u64,
        to: &str,
        requests: u64,
        failed: u64,
        p99: f64,
    ) -> Snapshot {
        let mut errors = Map::new();
        if failed > 0 {
            errors.insert("status_5xx".to_string(), failed);
        }
        Snapshot {
            at_ms,
            interval_ms: 1000,
            region: "r1".into(),
            source_zone: from.into(),
            series: vec![Series {
                service: "svc".into(),
                route: "default".into(),
                target_zone: to.into(),
                instance: "i".into(),
                write: false,
                forwarded_in: false,
                requests,
                errors,
                p50_ms: p99 / 2.0,
                p90_ms: p99,
                p99_ms: p99,
                max_ms: p99,
            }],
            probes: Vec::new(),
            config_version: Some("c0123".into()),
            config_refused: None,
        }
    }

    #[test]
    fn a_zone_sums_what_every_edge_sent_it_and_keeps_the_worst_p99() {
        let c = config();
        let mut l = Live::default();
        for t in [10_000u64, 11_000, 12_000] {
            l.ingest(&snapshot("a", t + 1000, "b", 40, 0, 20.0), t + 1000);
            l.ingest(&snapshot("b", t + 1000, "b", 60, 10, 90.0), t + 1000);
        }
        let traffic = l.traffic(&c, 13_500);
        let b = traffic.iter().find(|z| z.zone == "b").unwrap();
        let recent = b.recent.as_ref().expect("b served requests");
        assert_eq!(recent.requests, 300);
        assert_eq!(recent.failures, 30);
        assert!((recent.rps - 100.0).abs() < 1e-9);
        assert!((recent.error_ratio - 0.1).abs() < 1e-9);
        assert_eq!(recent.p99_ms, 90.0);
        assert_eq!(b.points.len(), 3);
    }

    #[test]
    fn a_zone_that_served_nothing_is_unknown_not_healthy() {
        let c = config();
        let mut l = Live::default();
        l.ingest(&snapshot("a", 11_000, "b", 40, 0, 20.0), 11_000);
        let traffic = l.traffic(&c, 12_500);
        let a = traffic.iter().find(|z| z.zone == "a").unwrap();
        assert!(a.recent.is_none(), "{a:?}");
        // And an old second no longer counts as recent.
        let later = l.traffic(&c, 30_000);
        assert!(later.iter().all(|z| z.recent.is_none()), "{later:?}");
    }

    #[test]
    fn an_edge_is_up_silent_or_unknown_by_its_last_signal() {
        let c = config();
        let mut l = Live::default();
        l.ingest(&snapshot("a", 10_000, "a", 1, 0, 1.0), 10_000);
        let edges = l.edges(&c, 12_000);
        assert_eq!(edges[0].health, EdgeHealth::Up);
        assert_eq!(edges[0].config_version.as_deref(), Some("c0123"));
        assert_eq!(edges[1].health, EdgeHealth::Unknown);
        let later = l.edges(&c, 10_000 + EDGE_STALE_MS + 1);
        assert_eq!(later[0].health, EdgeHealth::Silent);
    }
}

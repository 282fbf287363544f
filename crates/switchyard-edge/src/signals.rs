//! Per-second signals for detection: what this edge observed of every
//! (service, route, target zone, instance) it sent traffic to. Snapshots are
//! kept for a minute and streamed from the admin API as JSON lines.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
pub use switchyard_model::signals::{ErrorClass, Probe, Series, Snapshot};
use tokio::sync::broadcast;

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    pub service: String,
    pub route: String,
    pub target_zone: String,
    pub instance: String,
    pub write: bool,
    /// The request came from another region's edge.
    pub forwarded_in: bool,
}

struct Acc {
    requests: u64,
    errors: BTreeMap<ErrorClass, u64>,
    latency: Histogram<u64>,
}

pub struct Signals {
    region: String,
    zone: String,
    current: Mutex<HashMap<SeriesKey, Acc>>,
    recent: Mutex<VecDeque<Snapshot>>,
    probes: Mutex<Vec<Probe>>,
    tx: broadcast::Sender<Snapshot>,
}

const KEEP: usize = 60;

impl Signals {
    pub fn new(region: &str, zone: &str) -> Self {
        Signals {
            region: region.into(),
            zone: zone.into(),
            current: Mutex::new(HashMap::new()),
            recent: Mutex::new(VecDeque::with_capacity(KEEP)),
            probes: Mutex::new(Vec::new()),
            tx: broadcast::channel(KEEP).0,
        }
    }

    /// `error` is `None` for a success, else the class of failure.
    pub fn record(&self, key: SeriesKey, latency: Duration, error: Option<ErrorClass>) {
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let acc = cur.entry(key).or_insert_with(|| Acc {
            requests: 0,
            errors: BTreeMap::new(),
            latency: Histogram::new_with_bounds(1, 120_000_000, 2)
                .expect("static bounds are valid"),
        });
        acc.requests += 1;
        if let Some(e) = error {
            *acc.errors.entry(e).or_default() += 1;
        }
        acc.latency.saturating_record(latency.as_micros() as u64);
    }

    /// Adds the result of an active probe to the current interval.
    pub fn record_probe(&self, p: Probe) {
        self.probes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(p);
    }

    /// Closes the interval and publishes its snapshot, with the version of
    /// the config that ran and the last config refused.
    pub fn rotate(
        &self,
        at_ms: u64,
        interval: Duration,
        config_version: Option<String>,
        config_refused: Option<switchyard_model::signals::ConfigRefusal>,
    ) -> Snapshot {
        let taken = std::mem::take(&mut *self.current.lock().unwrap_or_else(|e| e.into_inner()));
        let mut series: Vec<(SeriesKey, Acc)> = taken.into_iter().collect();
        series.sort_by(|a, b| a.0.cmp(&b.0));
        let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        let snap = Snapshot {
            at_ms,
            interval_ms: interval.as_millis() as u64,
            region: self.region.clone(),
            source_zone: self.zone.clone(),
            series: series
                .into_iter()
                .map(|(k, a)| Series {
                    service: k.service,
                    route: k.route,
                    target_zone: k.target_zone,
                    instance: k.instance,
                    write: k.write,
                    forwarded_in: k.forwarded_in,
                    requests: a.requests,
                    errors: a
                        .errors
                        .into_iter()
                        .map(|(k, v)| (k.as_str().to_string(), v))
                        .collect(),
                    p50_ms: ms(&a.latency, 0.5),
                    p90_ms: ms(&a.latency, 0.9),
                    p99_ms: ms(&a.latency, 0.99),
                    max_ms: a.latency.max() as f64 / 1000.0,
                })
                .collect(),
            probes: std::mem::take(&mut *self.probes.lock().unwrap_or_else(|e| e.into_inner())),
            config_version,
            config_refused,
        };
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() == KEEP {
            recent.pop_front();
        }
        recent.push_back(snap.clone());
        let _ = self.tx.send(snap.clone());
        snap
    }

    pub fn recent(&self) -> Vec<Snapshot> {
        self.recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Snapshot> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_counts_requests_errors_and_percentiles_per_series() {
        let s = Signals::new("r1", "z1");
        let key = |inst: &str| SeriesKey {
            service: "svc".into(),
            route: "get".into(),
            target_zone: "z1".into(),
            instance: inst.into(),
            write: false,
            forwarded_in: false,
        };
        for i in 0..100 {
            s.record(
                key("a"),
                Duration::from_millis(i + 1),
                (i % 10 == 0).then_some(ErrorClass::Status5xx),
            );
        }
        s.record(
            key("b"),
            Duration::from_millis(5),
            Some(ErrorClass::UpstreamConnect),
        );
        let snap = s.rotate(1000, Duration::from_secs(1), None, None);
        assert_eq!(snap.series.len(), 2);
        let a = &snap.series[0];
        assert_eq!((a.requests, a.errors["status_5xx"]), (100, 10));
        assert!((a.p50_ms - 50.0).abs() < 1.0, "{}", a.p50_ms);
        assert!((a.p99_ms - 99.0).abs() < 1.5, "{}", a.p99_ms);
        assert_eq!(snap.series[1].errors["upstream_connect"], 1);
        assert!(s
            .rotate(2000, Duration::from_secs(1), None, None)
            .series
            .is_empty());
        assert_eq!(s.recent().len(), 2);
    }
}

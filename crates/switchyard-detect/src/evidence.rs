//! What the active heartbeats say of a place, apart from its traffic.
//!
//! A zone shifted away, a region evacuated or an instance ejected gets no
//! traffic, so passive signals say nothing about it: no data is not good
//! news. The edges keep sending every route's heartbeat to every instance
//! of their region whatever the controls say, so heartbeats are the
//! evidence that keeps a finding open while its place still fails, and
//! that lets it close, and traffic return, once the place is healthy.
//!
//! Each verdict has hysteresis: a place is `Bad` at the same margins that
//! open findings from traffic, `Clean` only well inside them (half the
//! margin), and in between, like with too few heartbeats, `Unknown`.

use serde::Serialize;

use crate::engine::DetectConfig;
use crate::stats;

/// Heartbeats into one place over a window.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Beats {
    pub n: u64,
    pub failed: u64,
    /// Sum of the heartbeats' latencies, in ms.
    pub lat_sum_ms: f64,
}

impl Beats {
    pub fn record(&mut self, ok: bool, latency_ms: f64) {
        self.n += 1;
        self.failed += u64::from(!ok);
        self.lat_sum_ms += latency_ms;
    }

    pub fn add(&mut self, o: &Beats) {
        self.n += o.n;
        self.failed += o.failed;
        self.lat_sum_ms += o.lat_sum_ms;
    }

    pub fn fail_ratio(&self) -> f64 {
        self.failed as f64 / self.n.max(1) as f64
    }

    pub fn mean_ms(&self) -> f64 {
        self.lat_sum_ms / self.n.max(1) as f64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Evidence {
    /// Too few heartbeats, or between the clean and the bad margins.
    Unknown,
    Clean,
    Bad,
}

/// Real traffic into a place over a canary's seconds, and its verdict.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Canary {
    pub requests: u64,
    pub failures: u64,
    /// The request-weighted p99 of its instances, in ms.
    pub mean_p99_ms: f64,
    pub verdict: Evidence,
}

/// An absolute failure share of heartbeats that is bad whatever the peers
/// show: half the heartbeats failing is no baseline.
const ABSOLUTE_BAD: f64 = 0.5;

/// Errors: the place's heartbeat failure share against its peers' mean.
/// `peers` with too few heartbeats are left out; with none left the
/// baseline is zero failures.
pub fn errors(mine: &Beats, peers: &[Beats], cfg: &DetectConfig) -> Evidence {
    if mine.n < cfg.probe_min {
        return Evidence::Unknown;
    }
    let peer: Vec<f64> = peers
        .iter()
        .filter(|p| p.n >= cfg.probe_min)
        .map(Beats::fail_ratio)
        .collect();
    let base = stats::mean(&peer).unwrap_or(0.0);
    let excess = mine.fail_ratio() - base;
    // Heartbeats are fewer than requests, so one failure is noise: the
    // margin is the larger of the traffic margin and five points.
    let margin = cfg.error_excess.max(0.05);
    if mine.failed >= 2 && (excess >= margin || mine.fail_ratio() >= ABSOLUTE_BAD) {
        Evidence::Bad
    } else if excess <= margin / 2.0 && mine.fail_ratio() < ABSOLUTE_BAD / 2.0 {
        Evidence::Clean
    } else {
        Evidence::Unknown
    }
}

/// Latency: the place's mean heartbeat latency against the median of its
/// peers' means, with the traffic detector's margins (`latency_excess_ms`
/// and `latency_ratio`). Without peers to compare with there is no verdict.
pub fn latency(mine: &Beats, peers: &[Beats], cfg: &DetectConfig) -> Evidence {
    if mine.n < cfg.probe_min {
        return Evidence::Unknown;
    }
    let peer: Vec<f64> = peers
        .iter()
        .filter(|p| p.n >= cfg.probe_min)
        .map(Beats::mean_ms)
        .collect();
    let Some(med) = stats::median(&peer) else {
        return Evidence::Unknown;
    };
    let l = mine.mean_ms();
    if l - med >= cfg.latency_excess_ms && l >= cfg.latency_ratio * med {
        Evidence::Bad
    } else if l - med < cfg.latency_excess_ms / 2.0 {
        Evidence::Clean
    } else {
        Evidence::Unknown
    }
}

/// A region from its zones' verdicts: bad when at least half its zones are,
/// clean only when at least half are known and none is bad or unknown
/// beyond that.
pub fn region(zones: &[Evidence]) -> Evidence {
    let need = zones.len().div_ceil(2).max(1);
    let bad = zones.iter().filter(|e| **e == Evidence::Bad).count();
    let clean = zones.iter().filter(|e| **e == Evidence::Clean).count();
    if bad >= need {
        Evidence::Bad
    } else if bad == 0 && clean >= need {
        Evidence::Clean
    } else {
        Evidence::Unknown
    }
}

/// Both kinds at once: what a place is for failing back into.
pub fn both(errors: Evidence, latency: Evidence) -> Evidence {
    match (errors, latency) {
        (Evidence::Bad, _) | (_, Evidence::Bad) => Evidence::Bad,
        (Evidence::Clean, Evidence::Clean) => Evidence::Clean,
        _ => Evidence::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beats(n: u64, failed: u64, ms: f64) -> Beats {
        Beats {
            n,
            failed,
            lat_sum_ms: ms * n as f64,
        }
    }

    #[test]
    fn too_few_heartbeats_say_nothing() {
        let cfg = DetectConfig::default();
        assert_eq!(
            errors(&beats(3, 0, 5.0), &[], &cfg),
            Evidence::Unknown,
            "no data is not good news"
        );
        assert_eq!(latency(&beats(50, 0, 5.0), &[], &cfg), Evidence::Unknown);
    }

    #[test]
    fn errors_are_bad_clean_or_in_between() {
        let cfg = DetectConfig::default();
        let peers = [beats(60, 0, 5.0), beats(60, 1, 5.0)];
        assert_eq!(errors(&beats(60, 18, 5.0), &peers, &cfg), Evidence::Bad);
        assert_eq!(errors(&beats(60, 0, 5.0), &peers, &cfg), Evidence::Clean);
        assert_eq!(
            errors(&beats(60, 3, 5.0), &peers, &cfg),
            Evidence::Unknown,
            "between half the margin and the margin"
        );
        // Peers failing as much: not this place's fault, but not clean either.
        let sick = [beats(60, 40, 5.0)];
        assert_eq!(errors(&beats(60, 40, 5.0), &sick, &cfg), Evidence::Bad);
    }

    #[test]
    fn latency_uses_the_traffic_margins_with_hysteresis() {
        let cfg = DetectConfig::default();
        let peers = [beats(60, 0, 5.0), beats(60, 0, 6.0)];
        assert_eq!(latency(&beats(60, 0, 110.0), &peers, &cfg), Evidence::Bad);
        assert_eq!(
            latency(&beats(60, 0, 30.0), &peers, &cfg),
            Evidence::Unknown
        );
        assert_eq!(latency(&beats(60, 0, 12.0), &peers, &cfg), Evidence::Clean);
    }

    #[test]
    fn a_region_needs_half_its_zones() {
        use Evidence::*;
        assert_eq!(region(&[Bad, Bad, Clean]), Bad);
        assert_eq!(region(&[Clean, Clean, Unknown]), Clean);
        assert_eq!(region(&[Clean, Bad, Clean]), Unknown);
        assert_eq!(region(&[Unknown, Unknown, Clean]), Unknown);
    }
}

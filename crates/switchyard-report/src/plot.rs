//! What each plot shows, as plain data taken from the report. Drawing lives in
//! `draw.rs`; keeping the two apart lets the numbers be checked without pixels.

use std::collections::BTreeSet;

use crate::types::{Cell, DrillReport, Second};

/// The plots of a report: file stem (`rps` gives `rps.png` and `rps.svg`),
/// caption in `report.md`, and how to build it. One list, so the Markdown and
/// the files cannot drift apart.
pub(crate) const PLOTS: [PlotFile; 4] = [
    PlotFile {
        stem: "rps",
        caption: "Requests per second by serving zone",
        build: zone_rps,
    },
    PlotFile {
        stem: "errors",
        caption: "Client error rate by region",
        build: error_rate,
    },
    PlotFile {
        stem: "p99",
        caption: "p99 latency by region",
        build: p99,
    },
    PlotFile {
        stem: "entry",
        caption:
            "Where each client group entered: share of its requests by region of the edge called",
        build: entry,
    },
];

pub(crate) struct PlotFile {
    pub stem: &'static str,
    pub caption: &'static str,
    pub build: fn(&DrillReport) -> Plot,
}

/// One chart: lines over time, event markers, and an optional bound.
#[derive(Debug, Clone, PartialEq)]
pub struct Plot {
    pub title: String,
    pub y_label: String,
    /// Unit appended to the bound in the legend, e.g. `" %"`.
    pub y_unit: &'static str,
    /// Each value covers its second: from `t` to `t + 1`.
    pub series: Vec<Series>,
    pub markers: Vec<Marker>,
    /// The steady-state limit, drawn as a horizontal dashed line.
    pub bound: Option<f64>,
    /// The x axis always starts at 0 and ends here (seconds).
    pub x_max: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    /// `(t, value)`; `None` where there is nothing to show for that second
    /// (for example an error rate with no requests), drawn as a gap rather
    /// than as a made-up zero.
    pub points: Vec<(f64, Option<f64>)>,
    /// Drawn on top and thicker: the "all regions" line.
    pub emphasized: bool,
}

/// A moment of the drill drawn as a vertical line with a label.
#[derive(Debug, Clone, PartialEq)]
pub struct Marker {
    pub kind: MarkerKind,
    pub at_s: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkerKind {
    Fault,
    Detected,
    Mitigated,
    Restored,
    Recovered,
    /// Incidents: the onset estimated from the signals, and the first
    /// notification delivered.
    Occurred,
    Notified,
}

impl MarkerKind {
    pub fn word(self) -> &'static str {
        match self {
            MarkerKind::Fault => "fault",
            MarkerKind::Detected => "detected",
            MarkerKind::Mitigated => "mitigated",
            MarkerKind::Restored => "restored",
            MarkerKind::Recovered => "recovered",
            MarkerKind::Occurred => "occurred",
            MarkerKind::Notified => "notified",
        }
    }
}

impl Marker {
    pub fn label(&self) -> String {
        format!("{} {:.1} s", self.kind.word(), self.at_s)
    }
}

impl Plot {
    /// Largest value any line or the bound reaches (0 when there are none).
    pub fn y_data_max(&self) -> f64 {
        let values = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().filter_map(|&(_, v)| v));
        values.chain(self.bound).fold(0.0, f64::max)
    }

    pub fn has_data(&self) -> bool {
        self.series
            .iter()
            .any(|s| s.points.iter().any(|(_, v)| v.is_some()))
    }
}

/// The config rollout plot, drawn only for runs that followed one.
pub(crate) const ROLLOUT_PLOT: PlotFile = PlotFile {
    stem: "rollout",
    caption: "Config rollout: how many edges ran each config version",
    build: config_versions,
};

/// Edges running each config version, second by second: a rollout's waves
/// show as steps, a rollback as the new version's line falling to zero.
pub(crate) fn config_versions(report: &DrillReport) -> Plot {
    let versions: BTreeSet<&str> = report
        .config_versions
        .iter()
        .flat_map(|s| s.zones.values().map(String::as_str))
        .collect();
    let label = |v: &str| {
        let role = report.rollouts.iter().find_map(|r| {
            if r.to == v {
                Some("new")
            } else if r.from == v {
                Some("old")
            } else {
                None
            }
        });
        match role {
            Some(role) => format!("{v} ({role})"),
            None => v.to_string(),
        }
    };
    let series = versions
        .into_iter()
        .map(|v| {
            let points = report
                .config_versions
                .iter()
                .map(|s| {
                    let n = s.zones.values().filter(|x| x.as_str() == v).count();
                    (f64::from(s.t), Some(n as f64))
                })
                .collect();
            Series::new(label(v), points)
        })
        .collect();
    Plot {
        title: format!("{}: edges on each config version", report.scenario),
        y_label: "edges".into(),
        y_unit: "",
        series,
        markers: markers(report),
        bound: None,
        x_max: x_max(report),
    }
}

/// Requests served per second by each zone: shows traffic leaving a zone.
pub(crate) fn zone_rps(report: &DrillReport) -> Plot {
    let zones = keys(&report.timeline, |s| &s.zones);
    let series = zones
        .into_iter()
        // `none` holds requests no instance answered; a line of zeros for it
        // would only add noise.
        .filter(|zone| zone != "none" || served_by(report, zone) > 0)
        .map(|zone| {
            // A zone absent from a second served nothing in it.
            let points = per_second(report, |s| {
                Some(s.zones.get(&zone).map_or(0, |c| c.requests) as f64)
            });
            Series::new(zone, points)
        })
        .collect();
    Plot {
        title: format!("{}: requests per second by serving zone", report.scenario),
        y_label: "requests served (req/s)".into(),
        y_unit: " req/s",
        series,
        markers: markers(report),
        bound: None,
        x_max: x_max(report),
    }
}

/// Client error rate per region of the edge called, and over all regions.
pub(crate) fn error_rate(report: &DrillReport) -> Plot {
    let mut series: Vec<Series> = keys(&report.timeline, |s| &s.regions)
        .into_iter()
        .map(|region| {
            let points = per_second(report, |s| s.regions.get(&region).and_then(cell_error_pct));
            Series::new(region, points)
        })
        .collect();
    let total = per_second(report, |s| percent(s.failures, s.requests));
    series.push(Series {
        emphasized: true,
        ..Series::new("all regions".into(), total)
    });
    Plot {
        title: format!("{}: client error rate by region", report.scenario),
        y_label: "failed requests (%)".into(),
        y_unit: " %",
        series,
        markers: markers(report),
        bound: Some(report.steady_state.max_error_rate * 100.0),
        x_max: x_max(report),
    }
}

/// p99 latency per region of the edge called.
pub(crate) fn p99(report: &DrillReport) -> Plot {
    let series = keys(&report.timeline, |s| &s.regions)
        .into_iter()
        .map(|region| {
            let points = per_second(report, |s| s.regions.get(&region).and_then(cell_p99));
            Series::new(region, points)
        })
        .collect();
    Plot {
        title: format!("{}: p99 latency by region", report.scenario),
        y_label: "p99 latency (ms)".into(),
        y_unit: " ms",
        series,
        markers: markers(report),
        bound: Some(report.steady_state.max_p99_ms),
        x_max: x_max(report),
    }
}

/// For each client group, the share of its requests each second that went to
/// each region's edges: where DNS (or the topology) sent its users. Lines
/// only for the regions a group ever entered.
pub(crate) fn entry(report: &DrillReport) -> Plot {
    let pairs: BTreeSet<(String, String)> = report
        .timeline
        .iter()
        .flat_map(|s| {
            s.entered
                .iter()
                .flat_map(|(g, m)| m.keys().map(move |r| (g.clone(), r.clone())))
        })
        .collect();
    let series = pairs
        .into_iter()
        .map(|(group, region)| {
            let points = per_second(report, |s| {
                let m = s.entered.get(&group)?;
                let total: u64 = m.values().sum();
                percent(m.get(&region).copied().unwrap_or(0), total)
            });
            Series::new(format!("{group}: {region}"), points)
        })
        .collect();
    Plot {
        title: format!("{}: where each client group entered", report.scenario),
        y_label: "share of the group's requests (%)".into(),
        y_unit: " %",
        series,
        markers: markers(report),
        bound: None,
        x_max: x_max(report),
    }
}

impl Series {
    fn new(name: String, points: Vec<(f64, Option<f64>)>) -> Self {
        Series {
            name,
            points,
            emphasized: false,
        }
    }
}

/// Every key that appears in any second, in a stable (sorted) order so that
/// a name keeps its colour from run to run.
fn keys<'a>(
    timeline: &'a [Second],
    map: impl Fn(&'a Second) -> &'a std::collections::BTreeMap<String, Cell>,
) -> BTreeSet<String> {
    timeline
        .iter()
        .flat_map(|s| map(s).keys().cloned())
        .collect()
}

fn served_by(report: &DrillReport, zone: &str) -> u64 {
    report
        .timeline
        .iter()
        .filter_map(|s| s.zones.get(zone))
        .map(|c| c.requests)
        .sum()
}

/// One point per second; non-finite values become gaps so they cannot break
/// the axis range.
fn per_second(
    report: &DrillReport,
    value: impl Fn(&Second) -> Option<f64>,
) -> Vec<(f64, Option<f64>)> {
    report
        .timeline
        .iter()
        .map(|s| (f64::from(s.t), value(s).filter(|v| v.is_finite())))
        .collect()
}

/// A rate needs requests: with none the second has no error rate at all.
fn percent(failures: u64, requests: u64) -> Option<f64> {
    (requests > 0).then(|| failures as f64 / requests as f64 * 100.0)
}

fn cell_error_pct(cell: &Cell) -> Option<f64> {
    percent(cell.failures, cell.requests)
}

/// A p99 over zero requests is not a measurement.
fn cell_p99(cell: &Cell) -> Option<f64> {
    (cell.requests > 0).then_some(cell.p99_ms)
}

pub(crate) fn markers(report: &DrillReport) -> Vec<Marker> {
    [
        (MarkerKind::Fault, report.fault_at_s),
        (MarkerKind::Detected, report.detected_at_s),
        (MarkerKind::Mitigated, report.mitigated_at_s),
        (MarkerKind::Restored, report.restored_at_s),
        (MarkerKind::Recovered, report.recovered_at_s),
    ]
    .into_iter()
    .filter_map(|(kind, at)| {
        at.filter(|t| t.is_finite())
            .map(|at_s| Marker { kind, at_s })
    })
    .collect()
}

/// The run's length, stretched to include the last second and every marker.
fn x_max(report: &DrillReport) -> f64 {
    let end_of_last_second = report
        .timeline
        .iter()
        .map(|s| f64::from(s.t) + 1.0)
        .fold(0.0, f64::max);
    let last_marker = markers(report).iter().map(|m| m.at_s).fold(0.0, f64::max);
    [report.duration_s, end_of_last_second, last_marker]
        .into_iter()
        .filter(|v| v.is_finite())
        .fold(1.0, f64::max)
}

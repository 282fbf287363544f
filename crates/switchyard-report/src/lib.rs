//! The drill report: the JSON contract that tools and tests rely on (see the
//! design's "Drill report contract"), and its rendering for people.
#![forbid(unsafe_code)]

mod draw;
mod markdown;
mod plot;
pub mod types;

use std::io;
use std::path::{Path, PathBuf};

pub use markdown::render_markdown;
pub use types::*;

/// Charts for other reports (incident postmortems): lines over time with
/// event markers and a bound, written as PNG and SVG with the bundled font.
pub mod chart {
    pub use crate::draw::{svg_string, write_plot};
    pub use crate::plot::{Marker, MarkerKind, Plot, Series};
}

/// The numbers of the entry plot (each client group's share of requests per
/// region entered, per second), to check without pixels.
pub fn entry_plot(report: &DrillReport) -> chart::Plot {
    plot::entry(report)
}

/// The numbers of the rollout plot (edges on each config version per
/// second), to check without pixels.
pub fn rollout_plot(report: &DrillReport) -> chart::Plot {
    plot::config_versions(report)
}

/// Writes the report for people into `dir` (created if needed):
///
/// - `report.md`: verdict, summary, expectations, findings, actions, and the
///   plots embedded;
/// - `rps.png` / `rps.svg`: requests per second served by each zone;
/// - `errors.png` / `errors.svg`: client error rate per region and overall;
/// - `p99.png` / `p99.svg`: p99 latency per region;
/// - `entry.png` / `entry.svg`: per client group, the share of its requests
///   sent to each region's edges;
/// - `rollout.png` / `rollout.svg`, for a run that followed a config
///   rollout: how many edges ran each config version, second by second.
///
/// Returns the path of `report.md`. Existing files of those names are
/// replaced. Text in the plots uses a font bundled in this crate, so no
/// system fonts are needed.
pub fn write_report(report: &DrillReport, dir: &Path) -> io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    for plot in &plot::PLOTS {
        draw::write_plot(&(plot.build)(report), dir, plot.stem)?;
    }
    if !report.config_versions.is_empty() {
        let p = &plot::ROLLOUT_PLOT;
        draw::write_plot(&(p.build)(report), dir, p.stem)?;
    }
    // Written last, so a report.md never points at plots that failed.
    let path = dir.join("report.md");
    std::fs::write(&path, render_markdown(report))?;
    Ok(path)
}

//! The evaluation corpus: every synthetic case over several seeds, plus any
//! recorded traces, scored — the numbers behind `docs/detection.md`.

use serde::Serialize;

use crate::engine::DetectConfig;
use crate::score::score;
use crate::synth::{generate, CASES};
use crate::trace::Trace;

#[derive(Debug, Clone, Default, Serialize)]
pub struct CaseResult {
    pub case: String,
    pub runs: usize,
    /// Times to detect of the runs that detected the label, in seconds.
    pub ttd_s: Vec<f64>,
    pub detected: usize,
    /// Labels over all runs (0 for fault-free cases).
    pub labelled: usize,
    pub true_findings: usize,
    pub false_findings: usize,
    pub false_zone_or_region: usize,
}

impl CaseResult {
    pub fn median_ttd(&self) -> Option<f64> {
        let mut v = self.ttd_s.clone();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    }

    pub fn max_ttd(&self) -> Option<f64> {
        self.ttd_s.iter().copied().reduce(f64::max)
    }

    pub fn precision(&self) -> f64 {
        let all = self.true_findings + self.false_findings;
        if all == 0 {
            1.0
        } else {
            self.true_findings as f64 / all as f64
        }
    }

    pub fn recall(&self) -> f64 {
        if self.labelled == 0 {
            1.0
        } else {
            self.detected as f64 / self.labelled as f64
        }
    }
}

fn add(r: &mut CaseResult, t: &Trace, cfg: &DetectConfig) {
    let f = t.replay(cfg);
    let s = score(&f, &t.labels, 5_000);
    r.runs += 1;
    r.labelled += s.labels.len();
    for l in &s.labels {
        if let Some(x) = l.ttd_s {
            r.detected += 1;
            r.ttd_s.push(x);
        }
    }
    r.true_findings += s.true_findings;
    r.false_findings += s.false_findings.len();
    r.false_zone_or_region += s.false_at("zone") + s.false_at("region");
}

/// Scores every synthetic case over `seeds`, then each recorded trace.
pub fn run(cfg: &DetectConfig, seeds: &[u64], recorded: &[(String, Trace)]) -> Vec<CaseResult> {
    let mut out = Vec::new();
    for case in CASES {
        let mut r = CaseResult {
            case: case.to_string(),
            ..Default::default()
        };
        for &seed in seeds {
            let t = generate(case, seed, 90, 100).expect("corpus cases exist");
            add(&mut r, &t, cfg);
        }
        out.push(r);
    }
    for (name, t) in recorded {
        let mut r = CaseResult {
            case: name.clone(),
            ..Default::default()
        };
        add(&mut r, t, cfg);
        out.push(r);
    }
    out
}

/// The corpus as a Markdown table.
pub fn table(results: &[CaseResult]) -> String {
    let f = |v: Option<f64>| v.map(|x| format!("{x:.1}")).unwrap_or_else(|| "—".into());
    let mut s = String::from("| case | runs | detected | median TTD (s) | worst TTD (s) | precision | recall | false zone/region findings |\n|---|---|---|---|---|---|---|---|\n");
    for r in results {
        s.push_str(&format!(
            "| {} | {} | {}/{} | {} | {} | {:.2} | {:.2} | {} |\n",
            r.case,
            r.runs,
            r.detected,
            r.labelled,
            f(r.median_ttd()),
            f(r.max_ttd()),
            r.precision(),
            r.recall(),
            r.false_zone_or_region
        ));
    }
    s
}

//! Scoring findings against a trace's labels: time to detect, whether the
//! fault was localized to the right scope, and the findings that were wrong.

use serde::Serialize;

use crate::engine::Finding;
use crate::trace::Label;

#[derive(Debug, Clone, Serialize)]
pub struct LabelScore {
    pub scope: String,
    pub kind: Option<String>,
    /// Seconds from the fault's start to the first matching finding.
    pub ttd_s: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Score {
    pub labels: Vec<LabelScore>,
    /// Findings that match a label.
    pub true_findings: usize,
    /// Findings that match no label, by scope level (`zone`, `region`, …).
    pub false_findings: Vec<String>,
    pub precision: f64,
    pub recall: f64,
}

impl Score {
    pub fn false_at(&self, level: &str) -> usize {
        self.false_findings
            .iter()
            .filter(|s| s.starts_with(&format!("{level}:")))
            .count()
    }
}

/// Localization is what counts: a zone that fails outright may be found
/// both as `errors` and as `unreachable`, and both are right.
fn matches(f: &Finding, l: &Label, slack_ms: u64) -> bool {
    f.scope == l.scope && f.detected_ms + 1000 >= l.start_ms && f.detected_ms <= l.end_ms + slack_ms
}

/// Scores `findings` against `labels`. A finding counts for a label when it
/// has the label's scope and was detected while the fault lasted
/// (plus `slack_ms` for lag).
pub fn score(findings: &[Finding], labels: &[Label], slack_ms: u64) -> Score {
    // An SLO burn says which route burns its budget in which region, not
    // where a fault is: it is no localization and is not scored as one
    // (the corpus checks apart that healthy runs raise none).
    let findings: Vec<&Finding> = findings
        .iter()
        .filter(|f| !f.kind.starts_with("slo_burn:"))
        .collect();
    let label_scores: Vec<LabelScore> = labels
        .iter()
        .map(|l| LabelScore {
            scope: l.scope.clone(),
            kind: l.kind.clone(),
            ttd_s: findings
                .iter()
                .filter(|f| matches(f, l, slack_ms))
                .map(|f| f.detected_ms.saturating_sub(l.start_ms) as f64 / 1000.0)
                .reduce(f64::min),
        })
        .collect();
    let true_findings = findings
        .iter()
        .filter(|f| labels.iter().any(|l| matches(f, l, slack_ms)))
        .count();
    let false_findings: Vec<String> = findings
        .iter()
        .filter(|f| !labels.iter().any(|l| matches(f, l, slack_ms)))
        .map(|f| format!("{} ({})", f.scope, f.kind))
        .collect();
    let detected = label_scores.iter().filter(|l| l.ttd_s.is_some()).count();
    Score {
        precision: if findings.is_empty() {
            1.0
        } else {
            true_findings as f64 / findings.len() as f64
        },
        recall: if labels.is_empty() {
            1.0
        } else {
            detected as f64 / labels.len() as f64
        },
        labels: label_scores,
        true_findings,
        false_findings,
    }
}

//! Signal traces: what the edges published, one JSON record per line, with
//! labels saying what was really wrong and when. The lab records them, the
//! synthetic generator makes them, and replay runs the engine over them.

use serde::{Deserialize, Serialize};
use switchyard_model::signals::Snapshot;

use crate::engine::{DetectConfig, Engine, Finding};

/// The ground truth of a trace: a fault of `scope` (and `kind`, if given)
/// from `start_ms` until `end_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Label {
    pub scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub start_ms: u64,
    pub end_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Record {
    /// Free-form description: scenario, seed, topology.
    Meta(serde_json::Value),
    Snapshot(Snapshot),
    Label(Label),
}

#[derive(Debug, Clone, Default)]
pub struct Trace {
    pub meta: Vec<serde_json::Value>,
    pub snapshots: Vec<Snapshot>,
    pub labels: Vec<Label>,
}

impl Trace {
    /// Parses NDJSON; an error names the line.
    pub fn parse(text: &str) -> Result<Trace, String> {
        let mut t = Trace::default();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let r: Record =
                serde_json::from_str(line).map_err(|e| format!("line {}: {e}", i + 1))?;
            match r {
                Record::Meta(m) => t.meta.push(m),
                Record::Snapshot(s) => t.snapshots.push(s),
                Record::Label(l) => t.labels.push(l),
            }
        }
        t.snapshots.sort_by_key(|s| s.at_ms);
        Ok(t)
    }

    pub fn to_ndjson(&self) -> String {
        let mut out = String::new();
        let mut push = |r: Record| {
            out.push_str(&serde_json::to_string(&r).expect("records serialize"));
            out.push('\n');
        };
        for m in &self.meta {
            push(Record::Meta(m.clone()));
        }
        for l in &self.labels {
            push(Record::Label(l.clone()));
        }
        for s in &self.snapshots {
            push(Record::Snapshot(s.clone()));
        }
        out
    }

    /// Runs a fresh engine over the trace with the trace's own clock.
    pub fn replay(&self, cfg: &DetectConfig) -> Vec<Finding> {
        let mut e = Engine::new(cfg.clone());
        for s in &self.snapshots {
            e.tick(s.at_ms);
            e.ingest(s);
        }
        if let Some(last) = self.snapshots.last() {
            e.tick(last.at_ms + 2000 + cfg.lag_ms);
        }
        e.findings().to_vec()
    }
}

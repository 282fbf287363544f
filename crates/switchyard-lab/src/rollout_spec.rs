//! A scenario's `rollout` step: which config to roll out, derived from the
//! one the control plane runs, and what the drill expects the plane to
//! answer. A refusal the scenario expects is what the drill is about, not
//! an error.

use serde::Deserialize;
use switchyard_model::config_diff::RiskKind;

/// What the plane should answer the start request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutExpect {
    /// 201: the rollout runs.
    Started,
    /// Any 4xx answer (needs_acknowledgement, a rule, a conflict).
    Refused,
}

impl RolloutExpect {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutExpect::Started => "started",
            RolloutExpect::Refused => "refused",
        }
    }
}

/// `action = "rollout"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutSpec {
    /// Textual replacements on the running config, in order: every
    /// occurrence of the first string becomes the second. Each must occur.
    #[serde(default)]
    pub replace: Vec<(String, String)>,
    /// Instances whose `[[service.instance]]` block is taken out (the
    /// lab's addresses are not known to the scenario, so removal is by
    /// name rather than by text).
    #[serde(default)]
    pub remove_instances: Vec<String>,
    /// Risk kinds acknowledged (`floor_lowered`, `capacity_removed`, …).
    #[serde(default)]
    pub accept: Vec<String>,
    /// The canary zone; the plane's default (first zone) when absent.
    #[serde(default)]
    pub canary: Option<String>,
    #[serde(default = "started")]
    pub expect: RolloutExpect,
    /// Words every one of which must appear in the refusal's reasons or
    /// rules (`floor_lowered`, `max_removal_per_hour`).
    #[serde(default)]
    pub expect_reasons: Vec<String>,
    #[serde(default = "drill_reason")]
    pub reason: String,
}

fn started() -> RolloutExpect {
    RolloutExpect::Started
}

fn drill_reason() -> String {
    "drill: staged config change".into()
}

impl RolloutSpec {
    /// Problems with the step's own fields, each naming it; `zones` and
    /// `instances` are the topology's.
    pub fn problems(&self, zones: &[String], instances: &[String]) -> Vec<String> {
        let mut errs = Vec::new();
        if self.replace.is_empty() && self.remove_instances.is_empty() {
            errs.push(
                "replace: a rollout must change the config (give replace or remove_instances)"
                    .into(),
            );
        }
        for (i, (from, to)) in self.replace.iter().enumerate() {
            if from.is_empty() {
                errs.push(format!("replace[{i}]: the text to replace is empty"));
            } else if from == to {
                errs.push(format!("replace[{i}]: {from:?} is replaced by itself"));
            }
        }
        for n in &self.remove_instances {
            if !instances.contains(n) {
                errs.push(format!("remove_instances: unknown instance {n:?}"));
            }
        }
        for a in &self.accept {
            if let Err(e) = RiskKind::parse(a) {
                errs.push(format!("accept: {e}"));
            }
        }
        if let Some(c) = &self.canary {
            if !zones.contains(c) {
                errs.push(format!(
                    "canary: unknown zone {c:?} (known: {})",
                    zones.join(", ")
                ));
            }
        }
        if !self.expect_reasons.is_empty() && self.expect != RolloutExpect::Refused {
            errs.push("expect_reasons: only a refusal has reasons (expect = \"refused\")".into());
        }
        errs
    }

    /// The config to roll out: `running` with the replacements made and the
    /// instances taken out. Errors name what did not match.
    pub fn derive(&self, running: &str) -> Result<String, String> {
        let mut text = running.to_string();
        for (i, (from, to)) in self.replace.iter().enumerate() {
            if !text.contains(from.as_str()) {
                return Err(format!(
                    "replace[{i}]: {from:?} does not occur in the running config"
                ));
            }
            text = text.replace(from.as_str(), to);
        }
        for n in &self.remove_instances {
            text = remove_instance(&text, n).ok_or_else(|| {
                format!("remove_instances: no instance {n:?} in the running config")
            })?;
        }
        Ok(text)
    }
}

/// `text` without the `[[service.instance]]` block named `name`: from its
/// header to the next table header (or the end).
fn remove_instance(text: &str, name: &str) -> Option<String> {
    let header = "[[service.instance]]\n";
    let mut from = 0;
    while let Some(at) = text[from..].find(header).map(|i| i + from) {
        let body = at + header.len();
        let end = text[body..]
            .find("\n[")
            .map(|i| body + i + 1)
            .unwrap_or(text.len());
        let named = text[body..end]
            .lines()
            .any(|l| l.trim() == format!("name = {name:?}"));
        if named {
            return Some(format!("{}{}", &text[..at], &text[end..]));
        }
        from = end;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUNNING: &str = "[[service]]\nname = \"catalog\"\nmin_healthy = 0.5\n\
        [[service.instance]]\nname = \"a-1\"\nzone = \"a\"\naddr = \"127.0.0.1:1\"\n\
        [[service.instance]]\nname = \"a-2\"\nzone = \"a\"\naddr = \"127.0.0.1:2\"\n\
        [[service.instance]]\nname = \"a-10\"\nzone = \"a\"\naddr = \"127.0.0.1:3\"\n\n[control]\nlisten = \"x\"\n";

    fn spec(replace: &[(&str, &str)], remove: &[&str]) -> RolloutSpec {
        RolloutSpec {
            replace: replace
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            remove_instances: remove.iter().map(|s| s.to_string()).collect(),
            accept: Vec::new(),
            canary: None,
            expect: RolloutExpect::Started,
            expect_reasons: Vec::new(),
            reason: drill_reason(),
        }
    }

    #[test]
    fn replacements_and_removals_make_the_new_config() {
        let s = spec(
            &[("min_healthy = 0.5", "min_healthy = 0.2")],
            &["a-1", "a-10"],
        );
        let t = s.derive(RUNNING).unwrap();
        assert!(t.contains("min_healthy = 0.2") && !t.contains("0.5"), "{t}");
        assert!(!t.contains("\"a-1\"") && !t.contains("\"a-10\""), "{t}");
        assert!(t.contains("name = \"a-2\"\nzone = \"a\"\naddr = \"127.0.0.1:2\"\n"));
        // The last instance's block ends at the next table, which stays.
        assert!(
            t.ends_with("addr = \"127.0.0.1:2\"\n[control]\nlisten = \"x\"\n"),
            "{t}"
        );
    }

    #[test]
    fn what_does_not_match_is_named() {
        let e = spec(&[("min_healthy = 0.9", "x")], &[])
            .derive(RUNNING)
            .unwrap_err();
        assert!(e.starts_with("replace[0]: \"min_healthy = 0.9\""), "{e}");
        let e = spec(&[], &["b-1"]).derive(RUNNING).unwrap_err();
        assert_eq!(
            e,
            "remove_instances: no instance \"b-1\" in the running config"
        );
    }
}

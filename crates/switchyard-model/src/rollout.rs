//! A staged rollout of configuration: the record the control plane keeps of
//! one, as its API, its store and the CLI show it. The plan (which members
//! go in which wave), the verdict at each wave and every step are here; the
//! engine that moves it on lives in the control plane.
//!
//! A *member* is what runs a config: an edge, named by the zone it serves,
//! or a DNS server, named `dns:<name>`.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::canary::{Judgement, Verdict};
use crate::config::Config;
use crate::config_diff::Difference;

/// One wave: the members that take the new config together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wave {
    /// `canary us-east-a`, `rest of us-east`, `eu-west`, `dns`.
    pub name: String,
    pub members: Vec<String>,
}

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    /// A wave is going out or baking, or waiting to (see `waiting_for`).
    Running,
    /// Held by a person (or by the engine when the evidence ran out):
    /// nothing moves until resumed or aborted. Members keep what they run.
    Paused,
    /// Every wave passed: the new config is everyone's.
    Succeeded,
    /// A wave failed its analysis (or a member refused or never took the
    /// config): every member went back to the old config by itself.
    RolledBack,
    /// Stopped by a person: every member went back to the old config.
    Aborted,
}

impl RolloutState {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Running => "running",
            RolloutState::Paused => "paused",
            RolloutState::Succeeded => "succeeded",
            RolloutState::RolledBack => "rolled_back",
            RolloutState::Aborted => "aborted",
        }
    }

    /// Over: nothing more happens to it.
    pub fn is_done(self) -> bool {
        matches!(
            self,
            RolloutState::Succeeded | RolloutState::RolledBack | RolloutState::Aborted
        )
    }
}

/// The verdict on one wave, with its numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaveVerdict {
    pub wave: usize,
    pub at_ms: u64,
    pub verdict: Verdict,
    /// One sentence with the numbers.
    pub reason: String,
    /// What the new-config members were compared with: `old-config
    /// members` while some are left, else `the same members before`.
    pub baseline: String,
    #[serde(default)]
    pub judgement: Option<Judgement>,
}

/// One step, for `rollout status` and the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub at_ms: u64,
    pub text: String,
}

/// The settings a rollout runs with: the plane's `[control.rollout]`,
/// overridden per rollout where its request says so.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutSettings {
    /// How long each wave bakes once all its members run the new config.
    pub bake_ms: u64,
    /// How long a wave may wait for enough traffic to judge, past its bake
    /// time, before the rollout pauses for a person.
    pub max_extra_wait_ms: u64,
    /// How long members may take to report the new config before the wave
    /// counts as failed.
    pub take_timeout_ms: u64,
}

impl Default for RolloutSettings {
    fn default() -> RolloutSettings {
        RolloutSettings {
            bake_ms: 60_000,
            max_extra_wait_ms: 120_000,
            take_timeout_ms: 30_000,
        }
    }
}

/// One rollout, from its request to its end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub id: String,
    /// The config version every member ran before.
    pub from: String,
    /// The config version going out.
    pub to: String,
    pub by: String,
    pub reason: String,
    pub created_ms: u64,
    pub updated_ms: u64,
    pub state: RolloutState,
    /// Every risky difference the diff found.
    pub differences: Vec<Difference>,
    /// The kinds a person acknowledged (`--accept`).
    pub accepted: Vec<String>,
    pub settings: RolloutSettings,
    pub waves: Vec<Wave>,
    /// The wave going out or baking; `waves.len()` once all passed.
    pub wave: usize,
    /// When the current wave's members were told to take the new config.
    #[serde(default)]
    pub assigned_ms: Option<u64>,
    /// When the last of them reported running it: the bake starts here.
    #[serde(default)]
    pub taken_ms: Option<u64>,
    /// Why it is not moving on now, when it is not.
    #[serde(default)]
    pub waiting_for: Option<String>,
    pub verdicts: Vec<WaveVerdict>,
    pub steps: Vec<Step>,
    /// The incident its failure opened or joined.
    #[serde(default)]
    pub incident: Option<String>,
}

impl Rollout {
    /// A rollout of `to` over `from`, running, before its first wave.
    pub fn new(
        id: String,
        (from, to): (String, String),
        (by, reason): (String, String),
        now_ms: u64,
        settings: RolloutSettings,
        waves: Vec<Wave>,
    ) -> Rollout {
        Rollout {
            id,
            from,
            to,
            by,
            reason,
            created_ms: now_ms,
            updated_ms: now_ms,
            state: RolloutState::Running,
            differences: Vec::new(),
            accepted: Vec::new(),
            settings,
            waves,
            wave: 0,
            assigned_ms: None,
            taken_ms: None,
            waiting_for: None,
            verdicts: Vec::new(),
            steps: Vec::new(),
            incident: None,
        }
    }

    /// The members on the new config: every wave up to the current one,
    /// once it was assigned.
    pub fn members_on_new(&self) -> BTreeSet<String> {
        let upto = if self.assigned_ms.is_some() {
            self.wave + 1
        } else {
            self.wave
        };
        self.waves
            .iter()
            .take(upto)
            .flat_map(|w| w.members.iter().cloned())
            .collect()
    }

    pub fn step(&mut self, at_ms: u64, text: String) {
        self.updated_ms = self.updated_ms.max(at_ms);
        self.steps.push(Step { at_ms, text });
    }

    pub fn wave_name(&self) -> &str {
        self.waves
            .get(self.wave)
            .map(|w| w.name.as_str())
            .unwrap_or("done")
    }
}

/// The waves for `config`: one canary edge, the rest of its region, then
/// every other region one at a time (in the config's order), then the DNS
/// servers. `canary` picks the canary zone; by default the first zone of
/// the first region. Each edge serves one zone, so the canary edge is its
/// zone: the "rest of its zone" wave of the issue is empty and left out.
pub fn plan_waves(
    config: &Config,
    canary: Option<&str>,
    dns_servers: &[String],
) -> Result<Vec<Wave>, String> {
    let zones: Vec<(&str, &str)> = config
        .regions
        .iter()
        .flat_map(|r| r.zones.iter().map(|z| (r.name.as_str(), z.name.as_str())))
        .collect();
    let (canary_region, canary_zone) = match canary {
        Some(c) => *zones.iter().find(|(_, z)| *z == c).ok_or_else(|| {
            format!(
                "canary: no zone {c:?} in the config (zones: {})",
                zones.iter().map(|(_, z)| *z).collect::<Vec<_>>().join(", ")
            )
        })?,
        None => *zones.first().ok_or("the config has no zones")?,
    };
    let mut waves = vec![Wave {
        name: format!("canary {canary_zone}"),
        members: vec![canary_zone.to_string()],
    }];
    let rest: Vec<String> = zones
        .iter()
        .filter(|(r, z)| *r == canary_region && *z != canary_zone)
        .map(|(_, z)| z.to_string())
        .collect();
    if !rest.is_empty() {
        waves.push(Wave {
            name: format!("rest of {canary_region}"),
            members: rest,
        });
    }
    for r in config.regions.iter().filter(|r| r.name != canary_region) {
        waves.push(Wave {
            name: r.name.clone(),
            members: r.zones.iter().map(|z| z.name.clone()).collect(),
        });
    }
    if !dns_servers.is_empty() {
        waves.push(Wave {
            name: "dns".into(),
            members: dns_servers.iter().map(|n| format!("dns:{n}")).collect(),
        });
    }
    Ok(waves)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab() -> Config {
        Config::from_toml(
            r#"
[[region]]
name = "us-east"
[[region.zone]]
name = "us-east-a"
edge = "127.1.1.1:8080"
admin = "127.1.1.1:9090"
[[region.zone]]
name = "us-east-b"
edge = "127.1.2.1:8080"
admin = "127.1.2.1:9090"
[[region]]
name = "eu-west"
[[region.zone]]
name = "eu-west-a"
edge = "127.2.1.1:8080"
admin = "127.2.1.1:9090"
[[service]]
name = "svc"
hosts = ["svc"]
min_healthy = 0.5
[[service.instance]]
name = "a1"
zone = "us-east-a"
addr = "127.1.1.11:8000"
"#,
            |_| None,
        )
        .unwrap()
    }

    #[test]
    fn waves_go_canary_then_its_region_then_each_other_region_then_dns() {
        let w = plan_waves(&lab(), None, &["ns1".into()]).unwrap();
        let names: Vec<_> = w.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(
            names,
            ["canary us-east-a", "rest of us-east", "eu-west", "dns"]
        );
        assert_eq!(w[1].members, ["us-east-b"]);
        assert_eq!(w[3].members, ["dns:ns1"]);
    }

    #[test]
    fn a_named_canary_leads_and_an_unknown_one_is_named_back() {
        let w = plan_waves(&lab(), Some("eu-west-a"), &[]).unwrap();
        let names: Vec<_> = w.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(names, ["canary eu-west-a", "us-east"]);
        let e = plan_waves(&lab(), Some("mars-a"), &[]).unwrap_err();
        assert!(e.contains("mars-a") && e.contains("us-east-b"), "{e}");
    }
}

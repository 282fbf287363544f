//! The rollout API's requests and answers (`/v1/rollouts`).

use serde::{Deserialize, Serialize};
use switchyard_model::config_diff::Difference;
use switchyard_model::rollout::{Rollout, RolloutSettings, Wave};

/// `POST /v1/rollouts`: a new config to roll out, or (`dry_run`) to see
/// what rolling it out would mean.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartRollout {
    /// The whole config file, as text.
    pub config: String,
    /// Risky kinds of difference the person acknowledges
    /// (`capacity_removed`, `floor_lowered`, …).
    #[serde(default)]
    pub accept: Vec<String>,
    pub reason: String,
    /// The canary zone; by default the first zone of the first region.
    #[serde(default)]
    pub canary: Option<String>,
    /// Bake time per wave (`90s`, `5m`), instead of `[control.rollout]`'s.
    #[serde(default)]
    pub bake: Option<String>,
    /// Check and plan only: nothing starts.
    #[serde(default)]
    pub dry_run: bool,
}

/// What rolling a config out means: the answer to a dry run, and the
/// plan a started rollout follows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutPlan {
    pub from: String,
    pub to: String,
    pub differences: Vec<Difference>,
    /// The kinds among them that need `accept` and were not given it.
    pub needs_accept: Vec<String>,
    pub waves: Vec<Wave>,
    pub settings: RolloutSettings,
}

/// `GET /v1/rollouts`: newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutList {
    pub rollouts: Vec<Rollout>,
}

/// `POST /v1/rollouts/{id}/pause|resume|abort`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutAction {
    Pause,
    Resume,
    Abort,
}

impl RolloutAction {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutAction::Pause => "pause",
            RolloutAction::Resume => "resume",
            RolloutAction::Abort => "abort",
        }
    }

    pub fn parse(s: &str) -> Option<RolloutAction> {
        match s {
            "pause" => Some(RolloutAction::Pause),
            "resume" => Some(RolloutAction::Resume),
            "abort" => Some(RolloutAction::Abort),
            _ => None,
        }
    }
}

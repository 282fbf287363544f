//! Config rollouts in a drill: the `rollout` step — a config derived from
//! the one the control plane runs, started through the typed client, the
//! plane's answer recorded whether it started the rollout or refused it — and
//! a follower that looks at the rollouts and at every edge's config version
//! four times a second, for the report's version timeline.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchyard_api::rollout::StartRollout;
use switchyard_api::Client;
use switchyard_model::canary::Verdict;
use switchyard_model::rollout::Rollout;
use switchyard_report::{ConfigSecond, RolloutRun};
use tokio::time::Instant;

use super::Run;
use crate::rollout_spec::{RolloutExpect, RolloutSpec};

/// How often the follower looks: a wave's edges take a new config within
/// a few hundred milliseconds of each other.
const LOOK_EVERY: Duration = Duration::from_millis(250);

/// What the plane answered one `rollout` step.
#[derive(Debug, Clone)]
pub(crate) struct StepAnswer {
    /// The rollout's id when it started.
    pub(crate) id: Option<String>,
    /// Whether the answer was the one the scenario expected (and, for a
    /// refusal, named every word it expected).
    pub(crate) as_expected: bool,
}

/// One look: seconds from the start of the run, and each edge's version.
type Look = (f64, BTreeMap<String, String>);

#[derive(Default)]
struct Seen {
    looks: Vec<Look>,
    /// Rollout id → when its canary was first seen running its config.
    canary_took: BTreeMap<String, f64>,
    rollouts: BTreeMap<String, Rollout>,
    ids: Vec<String>,
}

/// Follows the edges' config versions and the rollouts started so far.
pub(crate) struct Follower {
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
    api: Client,
}

impl Follower {
    pub(crate) fn start(api: Client, edges: Vec<(String, SocketAddr)>, start: Instant) -> Follower {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let task = tokio::spawn(follow(api.clone(), edges, start, seen.clone()));
        Follower { seen, task, api }
    }

    fn add(&self, id: String) {
        self.seen.lock().expect("follower lock").ids.push(id);
    }

    /// Stops looking, takes each rollout's last record from the plane, and
    /// gives the rollouts and the version timeline of seconds `0..secs`.
    pub(crate) async fn finish(
        self,
        t0_ms: u64,
        secs: usize,
    ) -> (Vec<RolloutRun>, Vec<ConfigSecond>) {
        self.task.abort();
        let _ = self.task.await;
        let seen = std::mem::take(&mut *self.seen.lock().expect("follower lock"));
        let mut runs = Vec::new();
        for id in &seen.ids {
            let r = match self.api.rollout(id).await {
                Ok(r) => r,
                Err(_) => match seen.rollouts.get(id) {
                    Some(r) => r.clone(),
                    None => continue,
                },
            };
            runs.push(run_of(&r, t0_ms, seen.canary_took.get(id).copied()));
        }
        (runs, per_second(&seen.looks, secs))
    }
}

async fn follow(
    api: Client,
    edges: Vec<(String, SocketAddr)>,
    start: Instant,
    seen: Arc<Mutex<Seen>>,
) {
    let mut tick = tokio::time::interval(LOOK_EVERY);
    loop {
        tick.tick().await;
        let mut versions = BTreeMap::new();
        for (zone, admin) in &edges {
            let v = crate::lab::edge_status_at(*admin)
                .await
                .and_then(|s| s.config)
                .map_or_else(|| "?".to_string(), |c| c.version);
            versions.insert(zone.clone(), v);
        }
        let at_s = start.elapsed().as_secs_f64();
        let ids = seen.lock().expect("follower lock").ids.clone();
        let mut rollouts = Vec::new();
        for id in ids {
            if let Ok(r) = api.rollout(&id).await {
                rollouts.push(r);
            }
        }
        let mut s = seen.lock().expect("follower lock");
        for r in rollouts {
            let canary = r.waves.first().and_then(|w| w.members.first());
            if canary.and_then(|c| versions.get(c)) == Some(&r.to) {
                s.canary_took.entry(r.id.clone()).or_insert(at_s);
            }
            s.rollouts.insert(r.id.clone(), r);
        }
        s.looks.push((at_s, versions));
    }
}

/// When the rollout ended, by the step that ended it.
fn ended_ms(r: &Rollout) -> Option<u64> {
    if !r.state.is_done() {
        return None;
    }
    r.steps
        .iter()
        .find(|s| {
            s.text.starts_with("rollout done")
                || s.text.starts_with("rolled back")
                || s.text.contains("aborted")
        })
        .map_or(Some(r.updated_ms), |s| Some(s.at_ms))
}

fn run_of(r: &Rollout, t0_ms: u64, canary_took_at_s: Option<f64>) -> RolloutRun {
    let at_s = |ms: u64| ms.saturating_sub(t0_ms) as f64 / 1000.0;
    RolloutRun {
        id: r.id.clone(),
        from: r.from.clone(),
        to: r.to.clone(),
        state: r.state.as_str().into(),
        canary: r
            .waves
            .first()
            .and_then(|w| w.members.first())
            .cloned()
            .unwrap_or_default(),
        waves: r.waves.iter().map(|w| w.name.clone()).collect(),
        waves_passed: r
            .verdicts
            .iter()
            .filter(|v| v.verdict == Verdict::Pass)
            .count(),
        started_at_s: at_s(r.created_ms),
        canary_took_at_s,
        ended_at_s: ended_ms(r).map(at_s),
        verdicts: r
            .verdicts
            .iter()
            .map(|v| {
                format!(
                    "wave {} ({}) at {:.1} s: {} — {}",
                    v.wave + 1,
                    r.waves.get(v.wave).map_or("?", |w| w.name.as_str()),
                    at_s(v.at_ms),
                    v.verdict.as_str(),
                    v.reason
                )
            })
            .collect(),
        incident: r.incident.clone(),
    }
}

/// One entry per second: the last look in it, or the one before when a
/// second had none (seconds before the first look are left out).
fn per_second(looks: &[Look], secs: usize) -> Vec<ConfigSecond> {
    let mut out = Vec::new();
    let mut last: Option<&BTreeMap<String, String>> = None;
    let mut i = 0;
    for t in 0..secs {
        while i < looks.len() && looks[i].0 < (t + 1) as f64 {
            last = Some(&looks[i].1);
            i += 1;
        }
        if let Some(z) = last {
            out.push(ConfigSecond {
                t: t as u32,
                zones: z.clone(),
            });
        }
    }
    out
}

/// Whether the reasons (and rules) of a refusal name every expected word.
fn names_all(said: &str, words: &[String]) -> bool {
    words.iter().all(|w| said.contains(w.as_str()))
}

impl Run<'_> {
    /// A `rollout` step: derive the config, ask the plane, record its
    /// answer. A refusal is data; only an answer other than the expected
    /// one counts against the drill (`rollout_steps_unexpected`).
    pub(super) async fn rollout(&mut self, spec: &RolloutSpec, why: String) {
        let what = describe(spec);
        let running = match self.lab.api.config_assignment().await {
            Ok(a) => a.base.text,
            Err(e) => {
                self.rollout_answer(
                    what,
                    why,
                    None,
                    Some(format!("drill: the running config could not be read: {e}")),
                    false,
                );
                return;
            }
        };
        let config = match spec.derive(&running) {
            Ok(c) => c,
            Err(e) => {
                self.rollout_answer(what, why, None, Some(format!("drill: {e}")), false);
                return;
            }
        };
        let req = StartRollout {
            config,
            accept: spec.accept.clone(),
            reason: spec.reason.clone(),
            canary: spec.canary.clone(),
            bake: None,
            dry_run: false,
        };
        match self.lab.api.start_rollout(&req).await {
            Ok(r) => {
                let what = format!(
                    "{what}: rollout {} started, {} → {}, waves {}",
                    r.id,
                    r.from,
                    r.to,
                    r.waves
                        .iter()
                        .map(|w| w.name.as_str())
                        .collect::<Vec<_>>()
                        .join(" → ")
                );
                if let Some(f) = &self.follower {
                    f.add(r.id.clone());
                }
                let ok = spec.expect == RolloutExpect::Started;
                self.rollout_answer(what, why, Some(r.id), None, ok);
            }
            Err(e) => {
                let said = match (e.status(), e.body()) {
                    (Some(s), Some(b)) => {
                        let rules: Vec<&str> = b.rules.iter().map(|r| r.rule.as_str()).collect();
                        let rules = if rules.is_empty() {
                            String::new()
                        } else {
                            format!(" (rules: {})", rules.join(", "))
                        };
                        format!(
                            "control plane {s} {}: {}{rules}",
                            b.error,
                            b.reasons.join("; ")
                        )
                    }
                    _ => format!("control plane: {e}"),
                };
                let ok = spec.expect == RolloutExpect::Refused
                    && e.status().is_some_and(|s| (400..500).contains(&s))
                    && names_all(&said, &spec.expect_reasons);
                self.rollout_answer(what, why, None, Some(said), ok);
            }
        }
    }

    fn rollout_answer(
        &mut self,
        what: String,
        why: String,
        id: Option<String>,
        refused: Option<String>,
        as_expected: bool,
    ) {
        self.record(what, why, refused.is_none(), refused);
        self.rollout_answers.push(StepAnswer { id, as_expected });
    }
}

fn describe(spec: &RolloutSpec) -> String {
    let mut parts: Vec<String> = spec
        .replace
        .iter()
        .map(|(a, b)| format!("{:?} → {:?}", a.trim(), b.trim()))
        .collect();
    if !spec.remove_instances.is_empty() {
        parts.push(format!("remove {}", spec.remove_instances.join(", ")));
    }
    let accept = if spec.accept.is_empty() {
        String::new()
    } else {
        format!(", accepting {}", spec.accept.join(", "))
    };
    format!(
        "roll out config ({}{accept}; expect {})",
        parts.join("; "),
        spec.expect.as_str()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look(at_s: f64, v: &str) -> Look {
        (at_s, [("a".to_string(), v.to_string())].into())
    }

    #[test]
    fn each_second_takes_its_last_look_or_keeps_the_one_before() {
        let looks = [look(0.3, "c1"), look(0.8, "c2"), look(2.1, "c3")];
        let s = per_second(&looks, 4);
        let v: Vec<(u32, &str)> = s.iter().map(|c| (c.t, c.zones["a"].as_str())).collect();
        assert_eq!(v, [(0, "c2"), (1, "c2"), (2, "c3"), (3, "c3")]);
        let late = [look(1.5, "c1")];
        assert_eq!(per_second(&late, 3).first().map(|c| c.t), Some(1));
    }

    #[test]
    fn a_refusal_is_as_expected_only_when_it_names_every_word() {
        let said =
            "control plane 409 needs_acknowledgement: floor_lowered at service.catalog.min_healthy";
        assert!(names_all(said, &["floor_lowered".into()]));
        assert!(!names_all(
            said,
            &["floor_lowered".into(), "capacity_removed".into()]
        ));
        assert!(names_all(said, &[]));
    }
}

//! Runs rollouts: starts one from a person's request (checked, diffed,
//! planned), moves the running one on once a second on the leader (the
//! rules are in [`crate::rollout`]), and carries out what the rules say:
//! the members' config assignment, the audit log, the incident a failure
//! opens. The rollout is kept in the store after every step, so a plane
//! that takes over (or restarts) carries it on; the assignment it implies
//! is put back first, so no member is left on a config nobody tracks.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use switchyard_detect::canary::CanaryConfig;
use switchyard_model::config_diff::{self, RiskKind};
use switchyard_model::rollout::{plan_waves, Rollout, RolloutSettings, RolloutState};
use switchyard_model::signals::Snapshot;
use switchyard_model::ConfigDoc;
use switchyard_model::{Actor, AuditEntry, AuditKind, Config};

use crate::configs::Assignment;
use crate::incidents::Incidents;
use crate::plane::ControlPlane;
use crate::rollout::{advance, by_hand, Blocker, Effect, Hand, JudgeRequest, Samples};
use crate::store::{Fence, Store, StoreError};

/// The store's kind for rollouts.
pub const ROLLOUT: &str = "rollout";

/// `[control.rollout]`: the waves' timings; `[control.rollout.canary]`:
/// the analysis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RolloutConfig {
    /// How long each wave bakes once all its members run the new config.
    pub bake_ms: u64,
    /// How much longer a wave may wait for enough traffic to judge before
    /// the rollout pauses for a person.
    pub max_extra_wait_ms: u64,
    /// How long members may take to report running the new config.
    pub take_timeout_ms: u64,
    pub canary: CanaryConfig,
}

impl Default for RolloutConfig {
    fn default() -> RolloutConfig {
        let s = RolloutSettings::default();
        RolloutConfig {
            bake_ms: s.bake_ms,
            max_extra_wait_ms: s.max_extra_wait_ms,
            take_timeout_ms: s.take_timeout_ms,
            canary: CanaryConfig::default(),
        }
    }
}

impl RolloutConfig {
    /// Every problem, each as `path.field: message`.
    pub fn validate(&self, path: &str) -> Vec<String> {
        let mut errs = Vec::new();
        if self.bake_ms < 1000 {
            errs.push(format!(
                "{path}.bake_ms: at least 1000 (a wave must be watched), got {}",
                self.bake_ms
            ));
        }
        if self.take_timeout_ms < 1000 {
            errs.push(format!(
                "{path}.take_timeout_ms: at least 1000, got {}",
                self.take_timeout_ms
            ));
        }
        // The last edge wave is compared with its members' traffic before
        // it went out, over as long as it baked: the plane keeps that long.
        let keep = crate::rollout::Samples::KEEP_MS / 2;
        if self.bake_ms.saturating_add(self.max_extra_wait_ms) > keep {
            errs.push(format!(
                "{path}.bake_ms: with max_extra_wait_ms at most {keep} in all (the plane keeps {} min of traffic to compare a wave with), got {} + {}",
                crate::rollout::Samples::KEEP_MS / 60_000,
                self.bake_ms,
                self.max_extra_wait_ms
            ));
        }
        errs.extend(self.canary.validate(&format!("{path}.canary")));
        errs
    }

    pub fn settings(&self) -> RolloutSettings {
        RolloutSettings {
            bake_ms: self.bake_ms,
            max_extra_wait_ms: self.max_extra_wait_ms,
            take_timeout_ms: self.take_timeout_ms,
        }
    }
}

/// Why a rollout did not start, for the API's status codes.
#[derive(Debug)]
pub enum StartError {
    /// The request or the config is wrong: every problem.
    Invalid(Vec<String>),
    /// Risky differences nobody acknowledged; the plan says which.
    NeedsAccept(Box<switchyard_api::rollout::RolloutPlan>),
    /// Another rollout runs or is paused, or the config already runs.
    Conflict(String),
    /// A safety rule refuses it whatever was acknowledged: (rule, why).
    Refused(Vec<(&'static str, String)>),
    Store(StoreError),
}

/// The running rollout as the leader holds it.
#[derive(Default)]
struct Active {
    /// Read from the store since this plane began to act.
    loaded: bool,
    rollout: Option<Rollout>,
    fails_in_row: u32,
}

pub struct Rollouts {
    pub config: RolloutConfig,
    samples: Mutex<Samples>,
    active: tokio::sync::Mutex<Active>,
}

impl Rollouts {
    pub fn new(config: RolloutConfig) -> Rollouts {
        Rollouts {
            config,
            samples: Mutex::new(Samples::default()),
            active: tokio::sync::Mutex::new(Active::default()),
        }
    }

    fn samples(&self) -> std::sync::MutexGuard<'_, Samples> {
        self.samples.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every plane follows the edges, so a new leader can judge at once.
    pub fn ingest(&self, s: &Snapshot) {
        self.samples().ingest(s);
    }

    /// What a DNS server reports running, read from its status.
    pub fn ingest_dns(&self, member: String, running: switchyard_api::configs::RunningConfig) {
        let refused = running.refused.map(|r| (r.version, r.reason));
        self.samples()
            .report(member, running.version, refused, crate::plane::now_ms());
    }

    /// What each member last reported running (edges, by zone).
    pub fn reported(&self) -> BTreeMap<String, crate::rollout::Reported> {
        self.samples().reported().clone()
    }

    /// The rollout `id` as this plane holds it while it runs (with its
    /// latest words), else the store's.
    pub async fn get<S: Store>(
        &self,
        plane: &ControlPlane<S>,
        id: &str,
    ) -> Result<Option<Rollout>, StoreError> {
        if let Some(r) = self
            .active
            .lock()
            .await
            .rollout
            .as_ref()
            .filter(|r| r.id == id)
        {
            return Ok(Some(r.clone()));
        }
        get(plane, id).await
    }

    /// Every rollout, newest first, the running one as held here.
    pub async fn list<S: Store>(
        &self,
        plane: &ControlPlane<S>,
    ) -> Result<Vec<Rollout>, StoreError> {
        let mut all = list(plane).await?;
        if let Some(r) = self.active.lock().await.rollout.as_ref() {
            for x in all.iter_mut().filter(|x| x.id == r.id) {
                *x = r.clone();
            }
        }
        Ok(all)
    }

    /// This plane stopped acting: the next takeover reads the store.
    pub async fn step_down(&self) {
        *self.active.lock().await = Active::default();
    }

    /// Checks and plans a rollout of `req.config` from the config every
    /// member runs now.
    pub async fn plan<S: Store>(
        &self,
        plane: &ControlPlane<S>,
        req: &switchyard_api::rollout::StartRollout,
    ) -> Result<(switchyard_api::rollout::RolloutPlan, ConfigDoc), StartError> {
        let mut errs = Vec::new();
        if req.reason.trim().is_empty() {
            errs.push("reason: required (why this config goes out)".to_string());
        }
        let new = match Config::from_toml(&req.config, |k| std::env::var(k).ok()) {
            Ok(c) => Some(c),
            Err(e) => {
                errs.extend(e.reasons().into_iter().map(|r| format!("config: {r}")));
                None
            }
        };
        let mut accepted = BTreeSet::new();
        for a in &req.accept {
            match RiskKind::parse(a) {
                Ok(k) => {
                    accepted.insert(k);
                }
                Err(e) => errs.push(format!("accept: {e}")),
            }
        }
        let mut settings = self.config.settings();
        if let Some(b) = &req.bake {
            match switchyard_model::ops::human_duration::parse(b) {
                Ok(d)
                    if d.as_millis() as u64 + settings.max_extra_wait_ms
                        > crate::rollout::Samples::KEEP_MS / 2 =>
                {
                    errs.push(format!(
                        "bake: at most {} s with the extra wait of {} s (the traffic the plane keeps to compare a wave with), got {b:?}",
                        (crate::rollout::Samples::KEEP_MS / 2 - settings.max_extra_wait_ms) / 1000,
                        settings.max_extra_wait_ms / 1000
                    ))
                }
                Ok(d) if d.as_millis() >= 1000 => settings.bake_ms = d.as_millis() as u64,
                Ok(_) => errs.push(format!("bake: at least 1s, got {b:?}")),
                Err(e) => errs.push(format!("bake: {e}")),
            }
        }
        let current = plane.assignment();
        let old =
            Config::from_toml(&current.base.text, |k| std::env::var(k).ok()).map_err(|e| {
                StartError::Invalid(vec![format!(
                    "the config every member runs ({}) no longer validates here: {}",
                    current.base.version,
                    e.reasons().join("; ")
                )])
            })?;
        let dns: Vec<String> = old
            .dns
            .as_ref()
            .map(|d| d.servers.iter().map(|s| s.name.clone()).collect())
            .unwrap_or_default();
        let waves = match plan_waves(&old, req.canary.as_deref(), &dns) {
            Ok(w) => w,
            Err(e) => {
                errs.push(e);
                Vec::new()
            }
        };
        let Some(new) = new.filter(|_| errs.is_empty()) else {
            return Err(StartError::Invalid(errs));
        };
        // The controls in force must fit the new config, or every edge
        // would refuse it (or the controls) the moment it arrives.
        if let Err(e) = plane.current().controls.validate(&new) {
            return Err(StartError::Invalid(
                e.iter()
                    .map(|x| format!("the controls in force do not fit the new config: {x}"))
                    .collect(),
            ));
        }
        let doc = ConfigDoc::new(req.config.clone());
        let differences = config_diff::diff(&old, &new);
        let needs: BTreeSet<&'static str> = differences
            .iter()
            .filter(|d| d.kind.needs_ack() && !accepted.contains(&d.kind))
            .map(|d| d.kind.as_str())
            .collect();
        let plan = switchyard_api::rollout::RolloutPlan {
            from: current.base.version.clone(),
            to: doc.version.clone(),
            differences,
            needs_accept: needs.into_iter().map(str::to_string).collect(),
            waves,
            settings,
        };
        Ok((plan, doc))
    }

    /// Starts a rollout: planned, acknowledged where it must be, and the
    /// only one.
    pub async fn start<S: Store>(
        &self,
        plane: &ControlPlane<S>,
        req: &switchyard_api::rollout::StartRollout,
        who: &str,
        now_ms: u64,
    ) -> Result<Rollout, StartError> {
        let (plan, doc) = self.plan(plane, req).await?;
        if !plan.needs_accept.is_empty() {
            return Err(StartError::NeedsAccept(Box::new(plan)));
        }
        let refusals = removal_refusals(plane, &req.config, now_ms);
        if !refusals.is_empty() {
            return Err(StartError::Refused(refusals));
        }
        if plan.from == plan.to {
            return Err(StartError::Conflict(format!(
                "every member already runs {}",
                plan.to
            )));
        }
        let mut active = self.active.lock().await;
        self.load(plane, &mut active, now_ms).await;
        if let Some(r) = &active.rollout {
            return Err(StartError::Conflict(format!(
                "rollout {} is {} (wave {}): pause does not end it; abort it or let it finish first",
                r.id,
                r.state.as_str(),
                r.wave_name()
            )));
        }
        plane
            .store()
            .put_doc(
                crate::configs::VERSIONS,
                &doc.version,
                &serde_json::to_value(&doc).expect("a config doc serializes"),
            )
            .await
            .map_err(StartError::Store)?;
        let id = next_id(plane).await.map_err(StartError::Store)?;
        let mut accepted: Vec<String> = req.accept.clone();
        accepted.sort();
        accepted.dedup();
        let mut r = Rollout::new(
            id.clone(),
            (plan.from, plan.to),
            (who.to_string(), req.reason.trim().to_string()),
            now_ms,
            plan.settings,
            plan.waves,
        );
        r.differences = plan.differences;
        r.accepted = accepted;
        let risky: Vec<String> = r
            .differences
            .iter()
            .map(|d| format!("{} ({})", d.path, d.kind.as_str()))
            .collect();
        let text = format!(
            "started by {who}: {} → {}{}{}",
            r.from,
            r.to,
            if risky.is_empty() {
                String::new()
            } else {
                format!("; differences: {}", risky.join(", "))
            },
            if r.accepted.is_empty() {
                String::new()
            } else {
                format!("; accepted: {}", r.accepted.join(", "))
            }
        );
        r.step(now_ms, text.clone());
        plane
            .store()
            .put_doc_if(ROLLOUT, &id, &to_json(&r), None, Fence::Leader)
            .await
            .map_err(StartError::Store)?;
        self.audit(plane, &r, now_ms, text).await;
        show(plane, Some(&r));
        active.rollout = Some(r.clone());
        active.fails_in_row = 0;
        Ok(r)
    }

    /// A person's pause, resume or abort of the rollout `id`.
    pub async fn hand<S: Store>(
        &self,
        plane: &ControlPlane<S>,
        incidents: &Incidents,
        id: &str,
        hand: Hand,
        who: &str,
        now_ms: u64,
    ) -> Result<Rollout, HandError> {
        let mut active = self.active.lock().await;
        self.load(plane, &mut active, now_ms).await;
        // Changed on a copy: held (and shown) only once it is stored.
        let Some(mut r) = active.rollout.clone().filter(|r| r.id == id) else {
            return match get(plane, id).await.map_err(HandError::Store)? {
                Some(r) => Err(HandError::Refused(format!(
                    "rollout {id} is over ({})",
                    r.state.as_str()
                ))),
                None => Err(HandError::NotFound),
            };
        };
        let effects = by_hand(&mut r, hand, who, now_ms).map_err(HandError::Refused)?;
        self.carry_out(plane, incidents, &mut active, r, effects, now_ms)
            .await
            .map_err(HandError::Store)
    }

    /// One round on the leader: the running rollout moves on.
    pub async fn tick<S: Store>(
        &self,
        plane: &ControlPlane<S>,
        incidents: &Incidents,
        blockers: &[Blocker],
        now_ms: u64,
    ) {
        let mut active = self.active.lock().await;
        self.load(plane, &mut active, now_ms).await;
        let Some(mut r) = active.rollout.clone() else {
            return;
        };
        let reported = self.reported();
        let canary_cfg = self.config.canary.clone();
        let mut judge = |q: &JudgeRequest| {
            if q.canary.iter().all(|m| m.starts_with("dns:")) {
                return dns_wave();
            }
            let s = self.samples();
            let canary = s.group(&q.canary, q.canary_window);
            let baseline = s.group(&q.baseline, q.baseline_window);
            switchyard_detect::canary::judge(&canary, &baseline, &canary_cfg)
        };
        let mut fails = active.fails_in_row;
        let before = r.clone();
        let effects = advance(&mut r, now_ms, &reported, blockers, &mut judge, &mut fails);
        active.fails_in_row = fails;
        if r == before {
            return;
        }
        // Only its words changed ("baking: 12 of 60 s"): held here, shown
        // by this plane's reads, not worth a store write every second.
        if effects.is_empty() && same_but_words(&r, &before) {
            active.rollout = Some(r);
            return;
        }
        if let Err(e) = self
            .carry_out(plane, incidents, &mut active, r, effects, now_ms)
            .await
        {
            tracing::warn!(error = %e, "rollout step not carried out; tried again next round");
        }
    }

    /// Reads the running rollout from the store the first time after this
    /// plane began to act, and puts back the assignment it implies.
    async fn load<S: Store>(&self, plane: &ControlPlane<S>, active: &mut Active, now_ms: u64) {
        if active.loaded {
            return;
        }
        let docs = match plane.store().list_docs(ROLLOUT).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read rollouts; trying again");
                return;
            }
        };
        active.loaded = true;
        let mut r = docs
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_value::<Rollout>(v).ok())
            .find(|r| !r.state.is_done());
        if let Some(r) = r.as_mut() {
            // What was seen before the takeover is not all here: the bake
            // starts again, on this plane's own observations.
            if r.taken_ms.is_some() {
                r.taken_ms = Some(now_ms);
                r.step(
                    now_ms,
                    format!(
                        "control plane {} took over at wave {} ({}): the bake starts again",
                        plane.leadership.me.id,
                        r.wave + 1,
                        r.wave_name()
                    ),
                );
            }
            if let Err(e) = self.assign_for(plane, r).await {
                tracing::warn!(error = %e, rollout = %r.id, "cannot put back the rollout's assignment");
                active.loaded = false;
                return;
            }
        }
        show(plane, r.as_ref());
        active.rollout = r;
        active.fails_in_row = 0;
    }

    /// The assignment the rollout's state implies, unless it is in force.
    async fn assign_for<S: Store>(
        &self,
        plane: &ControlPlane<S>,
        r: &Rollout,
    ) -> Result<(), StoreError> {
        let members = r.members_on_new();
        let cur = plane.assignment();
        let to = plane.config_doc(&r.to).await?.ok_or_else(|| {
            StoreError::Corrupt(format!(
                "rollout {}: config {} is not in the store",
                r.id, r.to
            ))
        })?;
        let (base, target, members) = match r.state {
            RolloutState::Succeeded => (to, None, BTreeSet::new()),
            RolloutState::RolledBack | RolloutState::Aborted => {
                (cur.base.clone(), None, BTreeSet::new())
            }
            RolloutState::Running | RolloutState::Paused if members.is_empty() => {
                (cur.base.clone(), None, BTreeSet::new())
            }
            RolloutState::Running | RolloutState::Paused => (cur.base.clone(), Some(to), members),
        };
        if cur.base == base && cur.target == target && cur.members == members {
            return Ok(());
        }
        plane
            .assign(Assignment {
                revision: cur.revision + 1,
                base,
                target,
                members,
            })
            .await
            .map(|_| ())
    }

    /// Carries out the rules' effects and keeps the rollout in the store.
    async fn carry_out<S: Store>(
        &self,
        plane: &ControlPlane<S>,
        incidents: &Incidents,
        active: &mut Active,
        mut r: Rollout,
        effects: Vec<Effect>,
        now_ms: u64,
    ) -> Result<Rollout, StoreError> {
        let before_verdicts = active
            .rollout
            .as_ref()
            .filter(|a| a.id == r.id)
            .map_or(0, |a| a.verdicts.len());
        // The members move first: a rollout stored as further along than
        // the members are would judge members that never got the config.
        if effects.iter().any(|e| {
            matches!(
                e,
                Effect::Assign(_) | Effect::Finish | Effect::RollBack { .. }
            )
        }) {
            self.assign_for(plane, &r).await?;
        }
        for e in &effects {
            if let Effect::RollBack { why } = e {
                r.incident = self.open_incident(plane, incidents, &r, why, now_ms).await;
            }
        }
        let stored = plane.store().get_doc_rev(ROLLOUT, &r.id).await?;
        plane
            .store()
            .put_doc_if(
                ROLLOUT,
                &r.id,
                &to_json(&r),
                stored.map(|d| d.rev),
                Fence::Leader,
            )
            .await?;
        for e in effects {
            if let Effect::Audit(text) = e {
                self.audit(plane, &r, now_ms, text).await;
            }
        }
        active.rollout = (!r.state.is_done()).then(|| r.clone());
        if r.state.is_done() {
            active.fails_in_row = 0;
        }
        show(plane, active.rollout.as_ref());
        let m = &plane.metrics;
        for v in r.verdicts.iter().skip(before_verdicts) {
            m.rollout_verdicts
                .get_or_create(&crate::metrics::VerdictLabels {
                    verdict: v.verdict.as_str().into(),
                })
                .inc();
        }
        if r.state.is_done() {
            m.rollouts
                .get_or_create(&crate::metrics::OutcomeLabels {
                    outcome: r.state.as_str().into(),
                })
                .inc();
        }
        Ok(r)
    }

    async fn audit<S: Store>(
        &self,
        plane: &ControlPlane<S>,
        r: &Rollout,
        now_ms: u64,
        text: String,
    ) {
        let entry = AuditEntry {
            at_ms: now_ms,
            actor: Actor::Rollout { id: r.id.clone() },
            kind: AuditKind::Rollout,
            op: None,
            action: format!("rollout {}: {text}", r.id),
            reason: r.reason.clone(),
            accepted: true,
            rule: None,
            version: None,
            detail: serde_json::json!({
                "rollout": r.id,
                "from": r.from,
                "to": r.to,
                "state": r.state,
                "wave": r.wave,
                "verdict": r.verdicts.last(),
            }),
            check: None,
        };
        let services = plane
            .config()
            .services
            .iter()
            .map(|s| s.name.clone())
            .collect();
        if let Err(e) = plane.record_for(entry, services).await {
            tracing::warn!(error = %e, rollout = %r.id, "rollout step not in the audit log");
        }
    }

    /// A failed rollout is an incident of the services it hurt (every
    /// service when it cannot tell), opened or joined, so people are told.
    async fn open_incident<S: Store>(
        &self,
        plane: &ControlPlane<S>,
        incidents: &Incidents,
        r: &Rollout,
        why: &str,
        now_ms: u64,
    ) -> Option<String> {
        let hurt: BTreeSet<String> = r
            .verdicts
            .last()
            .and_then(|v| v.judgement.as_ref())
            .map(|j| {
                j.metrics
                    .iter()
                    .filter(|m| m.verdict == switchyard_model::canary::Verdict::Fail)
                    .filter_map(|m| m.route.split('/').next().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let services: Vec<String> = if hurt.is_empty() {
            plane
                .config()
                .services
                .iter()
                .map(|s| s.name.clone())
                .collect()
        } else {
            hurt.into_iter().collect()
        };
        let who = format!("rollout {}", r.id);
        let title = format!("config rollout {} rolled back: {why}", r.id);
        let mut first = None;
        for svc in services {
            let hand = incidents.by_hand().await;
            let (id, _) = hand
                .tracker()
                .open_by_hand(&svc, &title, &who, None, now_ms);
            if let Err(e) = hand.write(plane, &id).await {
                tracing::warn!(error = %e, incident = %id, "the rollout's incident is not stored");
                continue;
            }
            first.get_or_insert(id);
        }
        first
    }
}

#[derive(Debug)]
pub enum HandError {
    NotFound,
    Refused(String),
    Store(StoreError),
}

/// The removal-rate rule on the instances the new config drops, service by
/// service (against the config every member runs now).
fn removal_refusals<S: Store>(
    plane: &ControlPlane<S>,
    new_text: &str,
    now_ms: u64,
) -> Vec<(&'static str, String)> {
    let env = |k: &str| std::env::var(k).ok();
    let (Ok(old), Ok(new)) = (
        Config::from_toml(&plane.assignment().base.text, env),
        Config::from_toml(new_text, env),
    ) else {
        // Checked by `plan` already.
        return Vec::new();
    };
    old.services
        .iter()
        .filter_map(|o| {
            let n = new.services.iter().find(|n| n.name == o.name)?;
            let earlier = plane.removed_within_hour(&o.name, now_ms);
            crate::safety::config_removal_rate(&plane.safety, o, n, earlier)
        })
        .map(|r| (r.rule, r.message))
        .collect()
}

/// The verdict on a wave of DNS servers. They carry no requests the plane
/// sees, so there is nothing to compare: the wave passes on its bake, as
/// long as every server reported the new config and nothing opened (both
/// checked by the rules before this is asked).
fn dns_wave() -> switchyard_model::canary::Judgement {
    switchyard_model::canary::Judgement {
        verdict: switchyard_model::canary::Verdict::Pass,
        metrics: Vec::new(),
        reason: "DNS servers carry no request signals: every server runs the new config and nothing opened during the bake".into(),
    }
}

/// The running rollout in the plane's gauges.
fn show<S: Store>(plane: &ControlPlane<S>, r: Option<&Rollout>) {
    let m = &plane.metrics;
    m.rollout_wave.set(r.map_or(0, |r| r.wave as i64 + 1));
    m.rollout_paused.set(i64::from(
        r.is_some_and(|r| r.state == RolloutState::Paused),
    ));
}

fn same_but_words(a: &Rollout, b: &Rollout) -> bool {
    let mut a = a.clone();
    a.waiting_for = b.waiting_for.clone();
    a == *b
}

fn to_json(r: &Rollout) -> serde_json::Value {
    serde_json::to_value(r).expect("a rollout serializes")
}

/// `r1`, `r2`, …: the next number after the highest stored.
async fn next_id<S: Store>(plane: &ControlPlane<S>) -> Result<String, StoreError> {
    let n = plane
        .store()
        .list_docs(ROLLOUT)
        .await?
        .iter()
        .filter_map(|(id, _)| id.strip_prefix('r').and_then(|n| n.parse::<u64>().ok()))
        .max()
        .unwrap_or(0);
    Ok(format!("r{}", n + 1))
}

/// Every rollout in the store, newest first.
pub async fn list<S: Store>(plane: &ControlPlane<S>) -> Result<Vec<Rollout>, StoreError> {
    let mut all: Vec<Rollout> = plane
        .store()
        .list_docs(ROLLOUT)
        .await?
        .into_iter()
        .filter_map(|(_, v)| serde_json::from_value(v).ok())
        .collect();
    all.sort_by_key(|r| std::cmp::Reverse(r.created_ms));
    Ok(all)
}

pub async fn get<S: Store>(
    plane: &ControlPlane<S>,
    id: &str,
) -> Result<Option<Rollout>, StoreError> {
    Ok(plane
        .store()
        .get_doc(ROLLOUT, id)
        .await?
        .and_then(|v| serde_json::from_value(v).ok()))
}

/// What holds a rollout back: open findings and incidents, each with the
/// members (zones) it is on.
pub fn blockers(
    config: &Config,
    findings: &[switchyard_model::Finding],
    incidents: &[switchyard_model::incident::Incident],
) -> Vec<Blocker> {
    let mut out = Vec::new();
    for f in findings.iter().filter(|f| f.end_ms.is_none()) {
        out.push(Blocker {
            what: format!("finding {} ({}) on {}", f.scope, f.kind, f.service),
            members: members_of(config, &f.scope),
        });
    }
    for i in incidents {
        out.push(Blocker {
            what: format!("incident {} ({})", i.id, i.service),
            members: i
                .scopes
                .iter()
                .flat_map(|s| members_of(config, s))
                .collect(),
        });
    }
    out
}

/// The zones a scope is on: `zone:Z` → Z; `region:R` → R's zones;
/// `instance:I` → I's zone; `link:A->B` → both regions' zones.
fn members_of(config: &Config, scope: &str) -> BTreeSet<String> {
    let (level, name) = scope.split_once(':').unwrap_or(("", ""));
    let region = |r: &str| -> Vec<String> {
        config
            .regions
            .iter()
            .filter(|x| x.name == r)
            .flat_map(|x| x.zones.iter().map(|z| z.name.clone()))
            .collect()
    };
    match level {
        "zone" => BTreeSet::from([name.to_string()]),
        "region" => region(name).into_iter().collect(),
        "instance" => config
            .services
            .iter()
            .flat_map(|s| s.instances.iter())
            .filter(|i| i.name == name)
            .map(|i| i.zone.clone())
            .collect(),
        "link" => name.split("->").flat_map(|r| region(r.trim())).collect(),
        _ => BTreeSet::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked_with_their_paths_all_at_once() {
        let t: toml::Table = toml::from_str(
            "bake_ms = 600000\nmax_extra_wait_ms = 600000\ntake_timeout_ms = 10\n[canary]\nalpha = 0.7\nmin_seconds = 0\n",
        )
        .unwrap();
        let c: RolloutConfig = t.try_into().unwrap();
        let errs = c.validate("control.rollout");
        assert_eq!(errs.len(), 4, "{errs:#?}");
        assert!(errs[0].starts_with("control.rollout.take_timeout_ms"));
        assert!(errs[1].starts_with("control.rollout.bake_ms: with max_extra_wait_ms"));
        assert!(errs[2].starts_with("control.rollout.canary.alpha"));
        assert!(errs[3].starts_with("control.rollout.canary.min_seconds"));
        let unknown: Result<RolloutConfig, _> = toml::from_str::<toml::Table>("bake = 5")
            .unwrap()
            .try_into();
        assert!(unknown
            .unwrap_err()
            .to_string()
            .contains("unknown field `bake`"));
        assert!(RolloutConfig::default().validate("x").is_empty());
    }
}

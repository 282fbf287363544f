//! The rollout engine's rules: what a running rollout does next, given the
//! time, what each member reports running, what is open, and the canary
//! analysis. Pure over its inputs with an injected clock, so every rule is
//! a unit test; `rollout_run` does the I/O (store, assignment, audit).
//!
//! One wave at a time: its members are told to take the new config; once
//! all of them report running it, the wave bakes for the bake time while
//! its members are compared with the members still on the old config (the
//! last wave, with no one left on the old config, is compared with its own
//! members before it went out). A failed analysis, a refusal, a member that
//! never takes the config or a finding on a member running the new config
//! rolls every member back. Not enough traffic to tell extends the bake,
//! then pauses the rollout for a person: no evidence is not a pass.

use std::collections::{BTreeMap, BTreeSet};

use switchyard_model::canary::{Judgement, Second, Verdict};
use switchyard_model::rollout::{Rollout, RolloutState, WaveVerdict};
use switchyard_model::signals::Snapshot;

/// What one member last reported of its config.
#[derive(Debug, Clone, PartialEq)]
pub struct Reported {
    pub version: Option<String>,
    /// A config it refused: (version, why).
    pub refused: Option<(String, String)>,
    pub at_ms: u64,
}

/// What the engine asks the canary analysis: `canary` members over
/// `canary_window` against `baseline` members over `baseline_window`
/// (half-open Unix ms ranges).
#[derive(Debug, Clone, PartialEq)]
pub struct JudgeRequest {
    pub canary: BTreeSet<String>,
    pub canary_window: (u64, u64),
    pub baseline: BTreeSet<String>,
    pub baseline_window: (u64, u64),
    /// Words for the report: what the baseline is.
    pub baseline_is: &'static str,
}

/// Something open that holds a rollout back.
#[derive(Debug, Clone, PartialEq)]
pub struct Blocker {
    /// `finding zone:us-east-a (errors)`, `incident INC-…`.
    pub what: String,
    /// The members it is on, when it names places (a zone finding); empty
    /// when it is service-wide.
    pub members: BTreeSet<String>,
}

/// What the caller must do after [`advance`].
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Put these members on the new config, the rest on the old.
    Assign(BTreeSet<String>),
    /// Every member on the new config: it becomes the base.
    Finish,
    /// Every member back on the old config.
    RollBack { why: String },
    /// A step worth a line in the audit log and the incident timelines.
    Audit(String),
}

/// Failed analyses in a row that roll back during the bake. One look a
/// second at a 1 % level would fail a healthy canary now and then; two in a
/// row, each on all the data so far, keeps the early stop honest while a
/// broken canary is still caught within seconds.
pub const FAILS_IN_A_ROW: u32 = 2;

/// Moves a running rollout on as far as `now_ms` allows.
pub fn advance(
    r: &mut Rollout,
    now_ms: u64,
    reported: &BTreeMap<String, Reported>,
    blockers: &[Blocker],
    judge: &mut dyn FnMut(&JudgeRequest) -> Judgement,
    fails_in_row: &mut u32,
) -> Vec<Effect> {
    let mut out = Vec::new();
    if r.state != RolloutState::Running {
        return out;
    }
    let Some(wave) = r.waves.get(r.wave).cloned() else {
        return finish(r, now_ms, out);
    };
    let on_new = r.members_on_new();
    let Some(assigned) = r.assigned_ms else {
        // Never start a wave while something is open: its errors would be
        // blamed on the config, or hide what the config does.
        if let Some(b) = blockers.first() {
            wait(r, format!("{} is open; wave {} waits", b.what, wave.name));
            return out;
        }
        r.waiting_for = None;
        r.assigned_ms = Some(now_ms);
        r.taken_ms = None;
        *fails_in_row = 0;
        let text = format!(
            "wave {} of {} ({}) going out to {}",
            r.wave + 1,
            r.waves.len(),
            wave.name,
            wave.members.join(", ")
        );
        r.step(now_ms, text.clone());
        out.push(Effect::Assign(r.members_on_new()));
        out.push(Effect::Audit(text));
        return out;
    };
    if r.taken_ms.is_none() {
        for m in &wave.members {
            if let Some((v, why)) = reported.get(m).and_then(|x| x.refused.clone()) {
                if v == r.to {
                    return roll_back(r, now_ms, format!("{m} refused the new config: {why}"));
                }
            }
        }
        let missing: Vec<&String> = wave
            .members
            .iter()
            .filter(|m| reported.get(*m).and_then(|x| x.version.as_deref()) != Some(&r.to))
            .collect();
        if missing.is_empty() {
            r.taken_ms = Some(now_ms);
            r.waiting_for = None;
            let text = format!(
                "wave {} ({}) runs {}; baking {} s",
                r.wave + 1,
                wave.name,
                r.to,
                r.settings.bake_ms / 1000
            );
            r.step(now_ms, text);
        } else if now_ms.saturating_sub(assigned) >= r.settings.take_timeout_ms {
            let names: Vec<&str> = missing.iter().map(|m| m.as_str()).collect();
            return roll_back(
                r,
                now_ms,
                format!(
                    "{} did not report running {} within {} s",
                    names.join(", "),
                    r.to,
                    r.settings.take_timeout_ms / 1000
                ),
            );
        } else {
            let names: Vec<&str> = missing.iter().map(|m| m.as_str()).collect();
            wait(
                r,
                format!("waiting for {} to take {}", names.join(", "), r.to),
            );
        }
        return out;
    }
    let taken = r.taken_ms.expect("checked above");
    // A finding on a place that runs the new config is the config's until
    // shown otherwise.
    if let Some(b) = blockers.iter().find(|b| !b.members.is_disjoint(&on_new)) {
        return roll_back(
            r,
            now_ms,
            format!("{} on members running the new config", b.what),
        );
    }
    let wave_members: BTreeSet<String> = wave.members.iter().cloned().collect();
    // DNS servers carry no requests: no baseline for edges.
    let old: BTreeSet<String> = all_members(r)
        .difference(&on_new)
        .filter(|m| !m.starts_with("dns:"))
        .cloned()
        .collect();
    let baked = now_ms.saturating_sub(taken);
    let req = if old.is_empty() {
        JudgeRequest {
            canary: wave_members.clone(),
            canary_window: (taken, now_ms),
            baseline: wave_members,
            baseline_window: (assigned.saturating_sub(baked.max(1)), assigned),
            baseline_is: "the same members before",
        }
    } else {
        JudgeRequest {
            canary: wave_members,
            canary_window: (taken, now_ms),
            baseline: old,
            baseline_window: (taken, now_ms),
            baseline_is: "old-config members",
        }
    };
    let j = judge(&req);
    if j.verdict == Verdict::Fail {
        *fails_in_row += 1;
        if *fails_in_row >= FAILS_IN_A_ROW {
            let why = format!("wave {} ({}) failed: {}", r.wave + 1, wave.name, j.reason);
            verdict(r, now_ms, &req, j);
            return roll_back(r, now_ms, why);
        }
    } else {
        *fails_in_row = 0;
    }
    if baked < r.settings.bake_ms {
        r.waiting_for = Some(format!(
            "wave {} ({}) baking: {} of {} s",
            r.wave + 1,
            wave.name,
            baked / 1000,
            r.settings.bake_ms / 1000
        ));
        return out;
    }
    if let Some(b) = blockers.first() {
        wait(r, format!("{} is open; wave {} holds", b.what, wave.name));
        return out;
    }
    match j.verdict {
        Verdict::Pass => {
            let text = format!(
                "wave {} ({}) passed after {} s: {}",
                r.wave + 1,
                wave.name,
                baked / 1000,
                j.reason
            );
            verdict(r, now_ms, &req, j);
            r.step(now_ms, text.clone());
            out.push(Effect::Audit(text));
            r.wave += 1;
            r.assigned_ms = None;
            r.taken_ms = None;
            r.waiting_for = None;
            if r.wave == r.waves.len() {
                return finish(r, now_ms, out);
            }
            // The next wave goes out on the next tick, if nothing is open.
            out
        }
        Verdict::Wait if baked >= r.settings.bake_ms + r.settings.max_extra_wait_ms => {
            let text = format!(
                "wave {} ({}) paused: not enough traffic to judge after {} s ({}); resume to wait longer, abort to go back",
                r.wave + 1,
                wave.name,
                baked / 1000,
                j.reason
            );
            verdict(r, now_ms, &req, j);
            r.state = RolloutState::Paused;
            r.waiting_for = Some(text.clone());
            r.step(now_ms, text.clone());
            out.push(Effect::Audit(text));
            out
        }
        _ => {
            r.waiting_for = Some(format!(
                "wave {} ({}) needs more traffic to judge: {}",
                r.wave + 1,
                wave.name,
                j.reason
            ));
            out
        }
    }
}

fn all_members(r: &Rollout) -> BTreeSet<String> {
    r.waves
        .iter()
        .flat_map(|w| w.members.iter().cloned())
        .collect()
}

fn wait(r: &mut Rollout, why: String) {
    r.waiting_for = Some(why);
}

fn verdict(r: &mut Rollout, now_ms: u64, req: &JudgeRequest, j: Judgement) {
    r.verdicts.push(WaveVerdict {
        wave: r.wave,
        at_ms: now_ms,
        verdict: j.verdict,
        reason: j.reason.clone(),
        baseline: req.baseline_is.to_string(),
        judgement: Some(j),
    });
}

fn finish(r: &mut Rollout, now_ms: u64, mut out: Vec<Effect>) -> Vec<Effect> {
    r.state = RolloutState::Succeeded;
    r.waiting_for = None;
    let text = format!("rollout done: every member runs {}", r.to);
    r.step(now_ms, text.clone());
    out.push(Effect::Finish);
    out.push(Effect::Audit(text));
    out
}

fn roll_back(r: &mut Rollout, now_ms: u64, why: String) -> Vec<Effect> {
    r.state = RolloutState::RolledBack;
    r.waiting_for = None;
    let text = format!("rolled back to {}: {why}", r.from);
    r.step(now_ms, text.clone());
    vec![Effect::RollBack { why }, Effect::Audit(text)]
}

/// A person's hand on a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hand {
    Pause,
    Resume,
    Abort,
}

/// Applies a person's pause, resume or abort; the error says why it cannot
/// be (a rollout that is over, a resume of one that runs).
pub fn by_hand(r: &mut Rollout, hand: Hand, who: &str, now_ms: u64) -> Result<Vec<Effect>, String> {
    if r.state.is_done() {
        return Err(format!("rollout {} is over ({})", r.id, r.state.as_str()));
    }
    match (hand, r.state) {
        (Hand::Pause, RolloutState::Running) => {
            r.state = RolloutState::Paused;
            let text = format!("paused by {who} at wave {} ({})", r.wave + 1, r.wave_name());
            r.waiting_for = Some(text.clone());
            r.step(now_ms, text.clone());
            Ok(vec![Effect::Audit(text)])
        }
        (Hand::Resume, RolloutState::Paused) => {
            r.state = RolloutState::Running;
            r.waiting_for = None;
            // The bake starts again: what it saw before the pause was
            // judged already, and a paused wave may have sat for hours.
            if r.taken_ms.is_some() {
                r.taken_ms = Some(now_ms);
            }
            let text = format!(
                "resumed by {who} at wave {} ({})",
                r.wave + 1,
                r.wave_name()
            );
            r.step(now_ms, text.clone());
            Ok(vec![Effect::Audit(text)])
        }
        (Hand::Abort, _) => {
            r.state = RolloutState::Aborted;
            r.waiting_for = None;
            let why = format!("aborted by {who}");
            let text = format!("rolled back to {}: {why}", r.from);
            r.step(now_ms, text.clone());
            Ok(vec![Effect::RollBack { why }, Effect::Audit(text)])
        }
        (Hand::Pause, _) => Err(format!("rollout {} is already paused", r.id)),
        (Hand::Resume, _) => Err(format!("rollout {} is not paused", r.id)),
    }
}

/// Per member, per `service/route`, per second: what the members' edges
/// saw, kept for [`Samples::KEEP_MS`] so a wave can be compared with the
/// time before it.
#[derive(Debug, Default)]
pub struct Samples {
    by_member: BTreeMap<String, BTreeMap<String, BTreeMap<u64, Acc>>>,
    reported: BTreeMap<String, Reported>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Acc {
    requests: u64,
    failed: u64,
    p50_weighted: f64,
    p99: f64,
}

impl Samples {
    /// Longer than a bake plus its extra wait, for the before-window of the
    /// last wave.
    pub const KEEP_MS: u64 = 15 * 60_000;

    /// One edge's snapshot: its traffic, and the config it reports.
    pub fn ingest(&mut self, s: &Snapshot) {
        let member = s.source_zone.clone();
        self.reported.insert(
            member.clone(),
            Reported {
                version: s.config_version.clone(),
                refused: s
                    .config_refused
                    .as_ref()
                    .map(|x| (x.version.clone(), x.reason.clone())),
                at_ms: s.at_ms,
            },
        );
        let sec = s.at_ms.saturating_sub(1) / 1000 * 1000;
        let routes = self.by_member.entry(member).or_default();
        for x in &s.series {
            // Users' requests only: what another region forwarded in is
            // judged where its users entered.
            if x.forwarded_in || x.requests == 0 {
                continue;
            }
            let a = routes
                .entry(format!("{}/{}", x.service, x.route))
                .or_default()
                .entry(sec)
                .or_default();
            a.requests += x.requests;
            a.failed += x.failures();
            a.p50_weighted += x.p50_ms * x.requests as f64;
            a.p99 = a.p99.max(x.p99_ms);
        }
        let cutoff = s.at_ms.saturating_sub(Self::KEEP_MS);
        for routes in self.by_member.values_mut() {
            for secs in routes.values_mut() {
                secs.retain(|t, _| *t >= cutoff);
            }
        }
    }

    /// What a DNS server reports running (`dns:NAME`): DNS servers send no
    /// signals, the plane reads their status.
    pub fn report(
        &mut self,
        member: String,
        version: String,
        refused: Option<(String, String)>,
        at_ms: u64,
    ) {
        self.reported.insert(
            member,
            Reported {
                version: Some(version),
                refused,
                at_ms,
            },
        );
    }

    pub fn reported(&self) -> &BTreeMap<String, Reported> {
        &self.reported
    }

    /// The members' seconds in `[from, to)`, per route, summed over the
    /// members second by second.
    pub fn group(
        &self,
        members: &BTreeSet<String>,
        (from, to): (u64, u64),
    ) -> BTreeMap<String, Vec<Second>> {
        let mut sum: BTreeMap<String, BTreeMap<u64, Acc>> = BTreeMap::new();
        for m in members {
            for (route, secs) in self.by_member.get(m).into_iter().flatten() {
                for (t, a) in secs.range(from..to) {
                    let s = sum.entry(route.clone()).or_default().entry(*t).or_default();
                    s.requests += a.requests;
                    s.failed += a.failed;
                    s.p50_weighted += a.p50_weighted;
                    s.p99 = s.p99.max(a.p99);
                }
            }
        }
        sum.into_iter()
            .map(|(route, secs)| {
                let v = secs
                    .into_iter()
                    .map(|(t, a)| Second {
                        at_ms: t,
                        requests: a.requests,
                        failed: a.failed,
                        p50_ms: a.p50_weighted / a.requests.max(1) as f64,
                        p99_ms: a.p99,
                    })
                    .collect();
                (route, v)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_model::rollout::{RolloutSettings, Wave};

    fn rollout() -> Rollout {
        let wave = |name: &str, m: &str| Wave {
            name: name.into(),
            members: vec![m.into()],
        };
        Rollout::new(
            "r1".into(),
            ("cold".into(), "cnew".into()),
            ("ann".into(), "test".into()),
            0,
            RolloutSettings {
                bake_ms: 10_000,
                max_extra_wait_ms: 5_000,
                take_timeout_ms: 3_000,
            },
            vec![
                wave("canary a", "a"),
                wave("rest of r1", "b"),
                wave("r2", "c"),
            ],
        )
    }

    /// Members on a version, as their snapshots would say.
    fn running(pairs: &[(&str, &str)]) -> BTreeMap<String, Reported> {
        pairs
            .iter()
            .map(|(m, v)| {
                (
                    m.to_string(),
                    Reported {
                        version: Some(v.to_string()),
                        refused: None,
                        at_ms: 0,
                    },
                )
            })
            .collect()
    }

    fn judged(v: Verdict) -> Judgement {
        Judgement {
            verdict: v,
            metrics: Vec::new(),
            reason: format!("judged {}", v.as_str()),
        }
    }

    /// Runs the rollout second by second with every member taking what it
    /// is assigned at once and the analysis answering `verdict`; returns
    /// the effects and the requests the analysis saw.
    fn drive(
        r: &mut Rollout,
        until_ms: u64,
        verdict: Verdict,
        blockers: &[Blocker],
    ) -> (Vec<(u64, Effect)>, Vec<JudgeRequest>) {
        let mut effects = Vec::new();
        let mut asked = Vec::new();
        let mut fails = 0;
        let mut on_new: BTreeSet<String> = BTreeSet::new();
        let mut now = r.updated_ms;
        while now <= until_ms && r.state == RolloutState::Running {
            let rep: BTreeMap<String, Reported> = ["a", "b", "c"]
                .iter()
                .map(|m| {
                    let v = if on_new.contains(*m) { "cnew" } else { "cold" };
                    running(&[(m, v)]).into_iter().next().unwrap()
                })
                .collect();
            let mut judge = |q: &JudgeRequest| {
                asked.push(q.clone());
                judged(verdict)
            };
            for e in advance(r, now, &rep, blockers, &mut judge, &mut fails) {
                if let Effect::Assign(m) = &e {
                    on_new = m.clone();
                }
                effects.push((now, e));
            }
            now += 1000;
        }
        (effects, asked)
    }

    #[test]
    fn a_good_config_goes_wave_by_wave_each_after_its_bake() {
        let mut r = rollout();
        let (effects, asked) = drive(&mut r, 200_000, Verdict::Pass, &[]);
        assert_eq!(r.state, RolloutState::Succeeded, "{:?}", r.steps);
        let assigns: Vec<(u64, Vec<String>)> = effects
            .iter()
            .filter_map(|(t, e)| match e {
                Effect::Assign(m) => Some((*t, m.iter().cloned().collect())),
                _ => None,
            })
            .collect();
        // Out at 0; taken at 1 s; baked 10 s; the next wave a tick later.
        assert_eq!(assigns[0], (0, vec!["a".to_string()]));
        assert_eq!(assigns[1], (12_000, vec!["a".to_string(), "b".to_string()]));
        assert_eq!(assigns[2].1, ["a", "b", "c"]);
        assert!(matches!(effects.last(), Some((_, Effect::Audit(_)))));
        assert!(effects.iter().any(|(_, e)| *e == Effect::Finish));
        // The canary is compared with the members on the old config...
        assert_eq!(asked[0].baseline, BTreeSet::from(["b".into(), "c".into()]));
        // ...and the last wave, with nobody left on it, with itself before.
        let last = asked.last().unwrap();
        assert_eq!(last.canary, BTreeSet::from(["c".into()]));
        assert_eq!(last.baseline, last.canary);
        assert!(last.baseline_window.1 <= last.canary_window.0);
        assert_eq!(r.verdicts.len(), 3);
    }

    #[test]
    fn the_last_edge_wave_before_the_dns_servers_is_compared_with_itself_before() {
        let mut r = rollout();
        r.waves.push(Wave {
            name: "dns".into(),
            members: vec!["dns:ns1".into()],
        });
        let mut fails = 0;
        let mut asked = Vec::new();
        let all_new = running(&[("a", "cnew"), ("b", "cnew"), ("c", "cnew")]);
        r.wave = 2;
        let mut judge = |q: &JudgeRequest| {
            asked.push(q.clone());
            judged(Verdict::Pass)
        };
        advance(&mut r, 0, &all_new, &[], &mut judge, &mut fails);
        advance(&mut r, 1_000, &all_new, &[], &mut judge, &mut fails);
        advance(&mut r, 2_000, &all_new, &[], &mut judge, &mut fails);
        assert_eq!(asked[0].canary, BTreeSet::from(["c".into()]));
        assert_eq!(asked[0].baseline, asked[0].canary, "not the DNS server");
        assert_eq!(asked[0].baseline_is, "the same members before");
    }

    #[test]
    fn a_failing_canary_rolls_back_on_the_second_failure_in_a_row() {
        let mut r = rollout();
        let (effects, _) = drive(&mut r, 60_000, Verdict::Fail, &[]);
        assert_eq!(r.state, RolloutState::RolledBack);
        let (at, why) = effects
            .iter()
            .find_map(|(t, e)| match e {
                Effect::RollBack { why } => Some((*t, why.clone())),
                _ => None,
            })
            .unwrap();
        // Taken at 1 s, judged failing at 2 s and 3 s.
        assert_eq!(at, 3_000);
        assert!(
            why.contains("canary a") && why.contains("judged fail"),
            "{why}"
        );
        assert_eq!(r.verdicts[0].verdict, Verdict::Fail);
        assert!(
            !effects
                .iter()
                .any(|(_, e)| matches!(e, Effect::Assign(m) if m.len() > 1)),
            "no wave after the canary went out"
        );
    }

    #[test]
    fn not_enough_traffic_waits_past_the_bake_then_pauses_for_a_person() {
        let mut r = rollout();
        drive(&mut r, 60_000, Verdict::Wait, &[]);
        assert_eq!(r.state, RolloutState::Paused);
        assert_eq!(r.wave, 0, "the canary never passed");
        assert!(r
            .waiting_for
            .as_deref()
            .unwrap()
            .contains("not enough traffic"));
        // Taken at 1 s: paused once bake (10 s) + extra (5 s) passed.
        assert_eq!(r.steps.last().unwrap().at_ms, 16_000);
        // A person resumes: the bake starts again from then.
        by_hand(&mut r, Hand::Resume, "ann", 100_000).unwrap();
        assert_eq!(r.taken_ms, Some(100_000));
        assert!(by_hand(&mut r, Hand::Resume, "ann", 100_000).is_err());
    }

    #[test]
    fn an_open_finding_holds_the_next_wave_and_one_on_the_canary_rolls_back() {
        let elsewhere = Blocker {
            what: "finding zone:c (errors)".into(),
            members: BTreeSet::from(["c".into()]),
        };
        let mut r = rollout();
        let (effects, _) = drive(
            &mut r,
            30_000,
            Verdict::Pass,
            std::slice::from_ref(&elsewhere),
        );
        assert!(effects.is_empty(), "nothing goes out: {effects:?}");
        assert!(r.waiting_for.as_deref().unwrap().contains("zone:c"));
        // Nothing open: out; then a finding on the canary.
        let mut r = rollout();
        drive(&mut r, 3_000, Verdict::Pass, &[]);
        let on_canary = Blocker {
            what: "finding zone:a (errors)".into(),
            members: BTreeSet::from(["a".into()]),
        };
        let (effects, _) = drive(&mut r, 30_000, Verdict::Pass, &[on_canary]);
        assert_eq!(r.state, RolloutState::RolledBack);
        assert!(effects
            .iter()
            .any(|(_, e)| matches!(e, Effect::RollBack { why } if why.contains("zone:a"))));
    }

    #[test]
    fn a_member_that_refuses_or_never_takes_the_config_rolls_back() {
        let mut r = rollout();
        let mut fails = 0;
        let mut judge = |_: &JudgeRequest| judged(Verdict::Pass);
        advance(&mut r, 0, &BTreeMap::new(), &[], &mut judge, &mut fails);
        let mut refused = running(&[("a", "cold")]);
        refused.get_mut("a").unwrap().refused = Some(("cnew".into(), "zone a moved".into()));
        let e = advance(&mut r, 1_000, &refused, &[], &mut judge, &mut fails);
        assert!(
            matches!(&e[0], Effect::RollBack { why } if why.contains("zone a moved")),
            "{e:?}"
        );
        let mut r = rollout();
        advance(&mut r, 0, &BTreeMap::new(), &[], &mut judge, &mut fails);
        let old = running(&[("a", "cold")]);
        assert!(advance(&mut r, 2_000, &old, &[], &mut judge, &mut fails).is_empty());
        assert!(r.waiting_for.as_deref().unwrap().contains("waiting for a"));
        let e = advance(&mut r, 3_000, &old, &[], &mut judge, &mut fails);
        assert!(
            matches!(&e[0], Effect::RollBack { why } if why.contains("a did not report")),
            "{e:?}"
        );
    }

    #[test]
    fn people_pause_resume_and_abort_and_an_ended_rollout_stays_ended() {
        let mut r = rollout();
        assert!(by_hand(&mut r, Hand::Pause, "ann", 1).is_ok());
        assert!(by_hand(&mut r, Hand::Pause, "ann", 2).is_err());
        let mut fails = 0;
        let mut judge = |_: &JudgeRequest| judged(Verdict::Pass);
        assert!(advance(&mut r, 3, &BTreeMap::new(), &[], &mut judge, &mut fails).is_empty());
        let e = by_hand(&mut r, Hand::Abort, "bob", 4).unwrap();
        assert!(matches!(&e[0], Effect::RollBack { why } if why == "aborted by bob"));
        assert_eq!(r.state, RolloutState::Aborted);
        assert!(by_hand(&mut r, Hand::Resume, "ann", 5).is_err());
    }
}

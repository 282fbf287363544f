//! A drill's steps: the scenario's timeline expanded into single changes,
//! and each applied as an operator would. Changes to the controls are
//! operations (`switchyard_model::Op`) sent to the control plane as the
//! drill, through the safety rules like anyone's; a lab without a control
//! plane applies the same operation itself and hands the result to every
//! edge. Faults outside the controls (processes, links, stores) are made
//! directly.

use switchyard_api::OpRequest;
use switchyard_model::ops::ApplyContext;
use switchyard_model::{CapacityMode, Fault, Op};

use super::Run;
use crate::catalog::InstanceFault;
use crate::link::LinkSettings;
use crate::scenario::{Action, Occurrence, Scenario};
use crate::store::{StoreLatency, WritesKnob};

/// The lab's demo service: the one service every scenario acts on.
const SERVICE: &str = "catalog";

/// One scheduled change, after expanding multi-step actions.
#[derive(Debug, Clone)]
pub(super) struct Step {
    pub(super) at_s: f64,
    pub(super) action: Action,
    /// For evacuation steps: the region weight to set.
    weight: Option<f64>,
    fault: bool,
    pub(super) restore: bool,
}

/// The scenario's timeline as single changes in time order: repeated and
/// ramped steps become one change per occurrence, evacuations one per
/// weight, capacity removals one per zone. Only a step's first change starts
/// the fault and only its last is the restore. Fails (before the lab starts)
/// when a ramp cannot be applied, which `Scenario::parse` already refuses.
pub(super) fn plan(s: &Scenario) -> Result<Vec<Step>, String> {
    let mut out = Vec::new();
    for (i, st) in s.steps.iter().enumerate() {
        let occurrences = st.occurrences().map_err(|e| format!("step[{i}].{e}"))?;
        for o in occurrences {
            expand(o, &mut out);
        }
    }
    // Stable: changes due at the same moment keep the scenario's order.
    out.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    Ok(out)
}

/// One occurrence of a step as the changes it makes.
fn expand(o: Occurrence, out: &mut Vec<Step>) {
    match &o.action {
        Action::EvacuateRegion { steps, step_s, .. } => {
            for k in 1..=*steps {
                out.push(Step {
                    at_s: o.at_s + (k - 1) as f64 * step_s,
                    action: o.action.clone(),
                    weight: Some(1.0 - k as f64 / *steps as f64),
                    fault: o.fault && k == 1,
                    restore: false,
                });
            }
        }
        Action::RemoveCapacity { zones, interval_s } => {
            for (k, z) in zones.iter().enumerate() {
                out.push(Step {
                    at_s: o.at_s + k as f64 * interval_s,
                    action: Action::RemoveCapacity {
                        zones: vec![z.clone()],
                        interval_s: *interval_s,
                    },
                    weight: None,
                    fault: o.fault && k == 0,
                    restore: false,
                });
            }
        }
        _ => out.push(Step {
            at_s: o.at_s,
            action: o.action,
            weight: None,
            fault: o.fault,
            restore: o.restore,
        }),
    }
}

/// The operation a step makes on the controls, if it is one.
fn op_for(step: &Step) -> anyhow::Result<Option<Op>> {
    Ok(Some(match &step.action {
        Action::EvacuateRegion { target, .. } => Op::RegionWeight {
            service: SERVICE.into(),
            region: target.clone(),
            weight: step.weight.unwrap_or(0.0),
        },
        Action::RestoreRegion { target } => Op::RegionBack {
            service: SERVICE.into(),
            region: target.clone(),
        },
        Action::Controls { controls } => Op::Replace {
            controls: serde_json::from_str(controls)
                .map_err(|e| anyhow::anyhow!("controls step: {e}"))?,
        },
        Action::Fault {
            route,
            zone,
            delay_ms,
            delay_jitter_ms,
            delay_percent,
            abort_status,
            abort_percent,
        } => Op::InjectFault {
            fault: Fault {
                service: SERVICE.into(),
                route: route.clone(),
                zone: zone.clone(),
                delay_ms: *delay_ms,
                delay_jitter_ms: *delay_jitter_ms,
                delay_percent: *delay_percent,
                abort_status: *abort_status,
                abort_percent: *abort_percent,
            },
        },
        Action::ClearFaults => Op::ClearFaults { service: None },
        Action::RemoveCapacity { zones, .. } => Op::Shift {
            service: SERVICE.into(),
            zone: zones[0].clone(),
            for_: std::time::Duration::from_secs(30 * 60),
        },
        _ => return Ok(None),
    }))
}

impl Run<'_> {
    pub(super) async fn apply(&mut self, step: &Step) -> anyhow::Result<()> {
        let why = format!("scenario step at {:.0} s", step.at_s);
        if let Some(op) = op_for(step)? {
            self.send(op, why).await;
        } else {
            self.act(&step.action, why).await?;
        }
        if step.fault && self.fault_at.is_none() {
            self.fault_at = Some(self.now_s());
        }
        if step.restore {
            self.restored_at = Some(self.now_s());
        }
        Ok(())
    }

    /// One operation, as the drill: through the control plane's rules when
    /// the lab has one, straight to every edge otherwise.
    async fn send(&mut self, op: Op, why: String) {
        let what = op.describe();
        if self.lab.topo.control_plane {
            let req = OpRequest::new(op, format!("drill: {why}")).drill(self.scenario.clone());
            let refused = match self.lab.api.apply(&req).await {
                Ok(_) => None,
                Err(e) => Some(match e.status() {
                    Some(s) => format!(
                        "control plane {s}: {}",
                        e.body().map(|b| b.reasons.join("; ")).unwrap_or_default()
                    ),
                    None => e.to_string(),
                }),
            };
            self.record(what, why, refused.is_none(), refused);
            return;
        }
        let shift_zone = match &op {
            Op::Shift { zone, .. } => Some(zone.clone()),
            _ => None,
        };
        let applied = op.apply(
            &ApplyContext {
                config: &self.config,
                now_ms: switchyard_model::time::now_ms(),
                reason: "drill: remove capacity",
            },
            &mut self.controls,
        );
        if let Err(e) = applied {
            self.record(what, why, false, Some(e.to_string()));
            return;
        }
        self.controls.version += 1;
        let answers = self
            .lab
            .put_controls(&self.lab.edge_zones(), &self.controls)
            .await;
        let refused: Vec<String> = answers
            .iter()
            .filter(|a| a.status != 200)
            .map(|a| format!("edge {}: {} {}", a.zone, a.status, a.body.trim()))
            .collect();
        self.record(
            what,
            why,
            refused.is_empty(),
            (!refused.is_empty()).then(|| refused.join("; ")),
        );
        // The edges accept a shift but keep the floor: see what they did.
        if let Some(z) = shift_zone {
            self.edges_kept_the_floor(&z).await;
        }
    }

    async fn edges_kept_the_floor(&mut self, zone: &str) {
        let Some(svc) = self
            .lab
            .edge_status(zone)
            .await
            .and_then(|st| st.services.into_iter().next())
        else {
            return;
        };
        if svc.mode != CapacityMode::Normal {
            let mode = serde_json::to_value(svc.mode).expect("serializable");
            let last = self.actions.last_mut().expect("just recorded");
            last.accepted = false;
            last.refused_by = Some(format!(
                "capacity_guard: shifting {zone} would leave fewer serving instances than the floor ({}); edges serve in mode {}",
                svc.floor,
                mode.as_str().unwrap_or("?")
            ));
        }
    }

    /// Faults and changes outside the controls.
    async fn act(&mut self, action: &Action, why: String) -> anyhow::Result<()> {
        match action {
            Action::KillInstance { target } => {
                self.lab.procs.kill(target)?;
                self.record(format!("kill instance {target}"), why, true, None);
            }
            Action::RestartInstance { target } => {
                self.lab.procs.restart(target)?;
                self.record(format!("restart instance {target}"), why, true, None);
            }
            Action::KillZone { target } => {
                for (n, _) in self.lab.topo.instances(target) {
                    self.lab.procs.kill(&n)?;
                }
                self.record(
                    format!("kill every instance of zone {target}"),
                    why,
                    true,
                    None,
                );
            }
            Action::RestartZone { target } => {
                for (n, _) in self.lab.topo.instances(target) {
                    self.lab.procs.restart(&n)?;
                }
                self.record(
                    format!("restart every instance of zone {target}"),
                    why,
                    true,
                    None,
                );
            }
            Action::KillEdges { target } => {
                for z in self.lab.region_zones(target)? {
                    self.lab.procs.kill(&format!("edge-{z}"))?;
                }
                self.record(
                    format!("kill every edge of region {target}"),
                    why,
                    true,
                    None,
                );
            }
            Action::RestartEdges { target } => {
                for z in self.lab.region_zones(target)? {
                    self.lab.procs.restart(&format!("edge-{z}"))?;
                }
                self.record(
                    format!("restart every edge of region {target}"),
                    why,
                    true,
                    None,
                );
            }
            Action::Link { target, .. } => {
                let s = action.link_settings().expect("a link action");
                self.lab.set_link(target, s.clone())?;
                let what = format!(
                    "link {target}: {}",
                    serde_json::to_string(&s).expect("serializable")
                );
                self.record(what, why, true, None);
            }
            Action::RestoreLink { target } => {
                self.lab.set_link(target, LinkSettings::default())?;
                self.record(format!("link {target} restored"), why, true, None);
            }
            Action::StoreWrites {
                target,
                reject,
                reject_percent,
            } => {
                let percent = WritesKnob {
                    reject: *reject,
                    reject_percent: *reject_percent,
                }
                .percent()
                .map_err(|e| anyhow::anyhow!(e))?;
                self.lab.store_writes(target, percent).await?;
                let what = match percent {
                    p if p >= 100.0 => format!("store of {target} rejects writes"),
                    p if p > 0.0 => format!("store of {target} rejects {p} % of writes"),
                    _ => format!("store of {target} accepts writes"),
                };
                self.record(what, why, true, None);
            }
            Action::StoreLatency {
                target,
                delay_ms,
                jitter_ms,
                writes_only,
            } => {
                let l = StoreLatency {
                    delay_ms: *delay_ms,
                    jitter_ms: *jitter_ms,
                    writes_only: *writes_only,
                };
                self.lab.store_latency(target, &l).await?;
                let on = if *writes_only { "writes" } else { "requests" };
                let what = if delay_ms + jitter_ms == 0 {
                    format!("store of {target} at full speed")
                } else {
                    format!("store of {target}: {on} +{delay_ms} ms (jitter {jitter_ms} ms)")
                };
                self.record(what, why, true, None);
            }
            a @ Action::InstanceFault { target, .. } => {
                let f = a.instance_fault().expect("an instance_fault step");
                self.lab.instance_fault(target, &f).await?;
                let what = format!(
                    "instance {target}: +{} ms (jitter {} ms), {} % answered {}",
                    f.delay_ms, f.jitter_ms, f.error_percent, f.error_status
                );
                self.record(what, why, true, None);
            }
            Action::ClearInstanceFault { target } => {
                self.lab
                    .instance_fault(target, &InstanceFault::default())
                    .await?;
                self.record(format!("instance {target}: fault cleared"), why, true, None);
            }
            Action::PauseInstance { target } => {
                self.lab.procs.pause(target)?;
                self.record(format!("pause instance {target}"), why, true, None);
            }
            Action::ResumeInstance { target } => {
                self.lab.procs.resume(target)?;
                self.record(format!("resume instance {target}"), why, true, None);
            }
            Action::Load { factor } => {
                self.rec.set_multiplier(*factor);
                self.record(format!("offered load x{factor}"), why, true, None);
            }
            Action::PushConfigWithoutFloor => self.push_config_without_floor(why).await?,
            Action::Rollout(spec) => self.rollout(spec, why).await,
            other => anyhow::bail!("{other:?} is an operation on the controls, not an action"),
        }
        Ok(())
    }

    async fn push_config_without_floor(&mut self, why: String) -> anyhow::Result<()> {
        let good = std::fs::read_to_string(&self.lab.config_path)?;
        let state = self.lab.dir.join("state").display().to_string();
        let bad = self.lab.topo.switchyard_config(&state, None);
        let answers = self.lab.push_config(&bad).await?;
        // Put the good file back so later reloads see it again.
        std::fs::write(&self.lab.config_path, good)?;
        for a in answers {
            // The edges answer with the shared error body: its reasons name
            // the missing field.
            let reason = serde_json::from_str::<switchyard_api::ErrorBody>(&a.body)
                .map(|b| b.reasons.join("; "))
                .unwrap_or(a.body.clone());
            let ok = a.status == 200;
            self.record(
                format!("reload edge {} with a config without min_healthy", a.zone),
                why.clone(),
                ok,
                (!ok).then_some(format!("config validation: {reason}")),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned(steps: &str) -> Vec<Step> {
        let text = format!(
            "name = \"t\"\nduration_s = 60\n[steady_state]\nmax_error_rate = 0.01\nmax_p99_ms = 100\n{steps}"
        );
        let s = Scenario::parse(&text).unwrap_or_else(|e| panic!("{e}"));
        plan(&s).unwrap()
    }

    fn latency(s: &Step) -> u64 {
        match &s.action {
            Action::Link { latency_ms, .. } => *latency_ms,
            other => panic!("not a link step: {other:?}"),
        }
    }

    #[test]
    fn a_repeated_cut_is_one_fault_and_one_restore() {
        // A cut of 2 s every 6 s, three times: a cut step and a restore step
        // both repeated.
        let p = planned(
            r#"
[[step]]
at_s = 10
action = "link"
target = "us-east-a->store"
cut = true
fault = true
repeat = { every_s = 6, times = 3 }
[[step]]
at_s = 12
action = "restore_link"
target = "us-east-a->store"
restore = true
repeat = { every_s = 6, times = 3 }
"#,
        );
        let at: Vec<f64> = p.iter().map(|s| s.at_s).collect();
        assert_eq!(at, [10.0, 12.0, 16.0, 18.0, 22.0, 24.0]);
        let kinds: Vec<&str> = p.iter().map(|s| s.action.name()).collect();
        assert_eq!(
            kinds,
            [
                "link",
                "restore_link",
                "link",
                "restore_link",
                "link",
                "restore_link"
            ]
        );
        let faults: Vec<f64> = p.iter().filter(|s| s.fault).map(|s| s.at_s).collect();
        let restores: Vec<f64> = p.iter().filter(|s| s.restore).map(|s| s.at_s).collect();
        assert_eq!(faults, [10.0], "only the first cut starts the fault");
        assert_eq!(restores, [24.0], "only the last restore ends it");
    }

    #[test]
    fn a_ramp_raises_its_field_each_time() {
        let p = planned(
            r#"
[[step]]
at_s = 10
action = "link"
target = "us-east-a->store"
latency_ms = 20
jitter_ms = 5
fault = true
ramp = { field = "latency_ms", by = 15, every_s = 5, times = 4 }
"#,
        );
        let at: Vec<f64> = p.iter().map(|s| s.at_s).collect();
        assert_eq!(at, [10.0, 15.0, 20.0, 25.0]);
        assert_eq!(p.iter().map(latency).collect::<Vec<_>>(), [20, 35, 50, 65]);
        // The other fields stay as written.
        assert!(p
            .iter()
            .all(|s| matches!(s.action, Action::Link { jitter_ms: 5, .. })));
        assert_eq!(p.iter().filter(|s| s.fault).count(), 1);
        assert!(p[0].fault);
    }

    #[test]
    fn a_ramp_of_a_share_and_a_falling_ramp() {
        let p = planned(
            r#"
[[step]]
at_s = 5
action = "store_writes"
target = "us-east"
reject_percent = 2.5
ramp = { field = "reject_percent", by = 2.5, every_s = 10, times = 3 }
[[step]]
at_s = 40
action = "instance_fault"
target = "us-east-a-1"
delay_ms = 300
ramp = { field = "delay_ms", by = -100, every_s = 2, times = 4 }
"#,
        );
        let shares: Vec<f64> = p
            .iter()
            .filter_map(|s| match &s.action {
                Action::StoreWrites { reject_percent, .. } => *reject_percent,
                _ => None,
            })
            .collect();
        assert_eq!(shares, [2.5, 5.0, 7.5]);
        let delays: Vec<u64> = p
            .iter()
            .filter_map(|s| match &s.action {
                Action::InstanceFault { delay_ms, .. } => Some(*delay_ms),
                _ => None,
            })
            .collect();
        assert_eq!(delays, [300, 200, 100, 0]);
    }

    #[test]
    fn repeated_multi_step_actions_mark_only_their_first_change() {
        let p = planned(
            r#"
[[step]]
at_s = 10
action = "remove_capacity"
zones = ["us-east-a", "us-east-b"]
interval_s = 1
fault = true
repeat = { every_s = 20, times = 2 }
"#,
        );
        let at: Vec<f64> = p.iter().map(|s| s.at_s).collect();
        assert_eq!(at, [10.0, 11.0, 30.0, 31.0]);
        let faults: Vec<f64> = p.iter().filter(|s| s.fault).map(|s| s.at_s).collect();
        assert_eq!(faults, [10.0]);
    }

    #[test]
    fn steps_due_together_keep_the_scenario_order() {
        let p = planned(
            r#"
[[step]]
at_s = 10
action = "pause_instance"
target = "us-east-a-1"
fault = true
[[step]]
at_s = 5
action = "instance_fault"
target = "us-east-a-2"
error_percent = 10
repeat = { every_s = 5, times = 2 }
[[step]]
at_s = 14
action = "resume_instance"
target = "us-east-a-1"
restore = true
"#,
        );
        let seq: Vec<(f64, &str)> = p.iter().map(|s| (s.at_s, s.action.name())).collect();
        assert_eq!(
            seq,
            [
                (5.0, "instance_fault"),
                (10.0, "pause_instance"),
                (10.0, "instance_fault"),
                (14.0, "resume_instance"),
            ]
        );
    }
}

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
use crate::link::LinkSettings;
use crate::scenario::{Action, Scenario};

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

pub(super) fn plan(s: &Scenario) -> Vec<Step> {
    let mut out = Vec::new();
    for st in &s.steps {
        match &st.action {
            Action::EvacuateRegion { steps, step_s, .. } => {
                for k in 1..=*steps {
                    out.push(Step {
                        at_s: st.at_s + (k - 1) as f64 * step_s,
                        action: st.action.clone(),
                        weight: Some(1.0 - k as f64 / *steps as f64),
                        fault: st.fault && k == 1,
                        restore: false,
                    });
                }
            }
            Action::RemoveCapacity { zones, interval_s } => {
                for (k, z) in zones.iter().enumerate() {
                    out.push(Step {
                        at_s: st.at_s + k as f64 * interval_s,
                        action: Action::RemoveCapacity {
                            zones: vec![z.clone()],
                            interval_s: *interval_s,
                        },
                        weight: None,
                        fault: st.fault && k == 0,
                        restore: false,
                    });
                }
            }
            a => out.push(Step {
                at_s: st.at_s,
                action: a.clone(),
                weight: None,
                fault: st.fault,
                restore: st.restore,
            }),
        }
    }
    out.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    out
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
            Action::StoreWrites { target, reject } => {
                self.lab.store_writes(target, *reject).await?;
                let verb = if *reject { "rejects" } else { "accepts" };
                self.record(format!("store of {target} {verb} writes"), why, true, None);
            }
            Action::Load { factor } => {
                self.rec.set_multiplier(*factor);
                self.record(format!("offered load x{factor}"), why, true, None);
            }
            Action::PushConfigWithoutFloor => self.push_config_without_floor(why).await?,
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

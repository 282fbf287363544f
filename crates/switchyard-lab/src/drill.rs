//! Runs a drill: starts the lab, offers load, applies the scenario's steps on
//! schedule, watches the edges, stops early when a stop condition holds, and
//! writes the report: what users felt, second by second, and whether each
//! expectation held.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use switchyard_detect::{DetectConfig, Engine, Event};
use switchyard_model::{Controls, Fault, RegionState, ZoneControl};
use switchyard_report::{
    Action as ActionRecord, DrillReport, Expectation, Finding, Second, SteadyState,
};
use tokio::time::Instant;

use crate::lab::Lab;
use crate::link::LinkSettings;
use crate::load::Recorder;
use crate::scenario::{holds, Action, Scenario};

pub struct Options {
    /// Also write the signal trace (with the fault as its label) here.
    pub record: Option<PathBuf>,
    /// The `switchyard` binary the lab starts its processes from.
    pub bin: PathBuf,
    /// Where the lab keeps its config, state and logs.
    pub dir: PathBuf,
    /// Show a progress bar (otherwise a status line every 5 s).
    pub progress: bool,
}

/// One scheduled change, after expanding multi-step actions.
#[derive(Debug, Clone)]
struct Planned {
    at_s: f64,
    action: Action,
    /// For evacuation steps: the region weight to set.
    weight: Option<f64>,
    fault: bool,
    restore: bool,
}

fn plan(s: &Scenario) -> Vec<Planned> {
    let mut out = Vec::new();
    for st in &s.steps {
        match &st.action {
            Action::EvacuateRegion { steps, step_s, .. } => {
                for k in 1..=*steps {
                    out.push(Planned {
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
                    out.push(Planned {
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
            a => out.push(Planned {
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

struct Run<'a> {
    lab: &'a mut Lab,
    rec: Arc<Recorder>,
    controls: Controls,
    actions: Vec<ActionRecord>,
    findings: Vec<Finding>,
    seen_ejections: BTreeMap<String, u64>,
    fault_at: Option<f64>,
    restored_at: Option<f64>,
    replication_max: u64,
}

impl Run<'_> {
    fn now_s(&self) -> f64 {
        self.rec.start().elapsed().as_secs_f64()
    }

    fn record(&mut self, what: String, why: String, accepted: bool, refused_by: Option<String>) {
        let at_s = self.now_s();
        self.actions.push(ActionRecord {
            what,
            why,
            at_s,
            accepted,
            refused_by,
        });
    }

    /// Sends the drill's controls: through the control plane when the lab has
    /// one (as an admin's planned change, forced past the rules and audited),
    /// straight to every edge otherwise.
    async fn push_controls(&mut self, what: String, why: String) {
        if self.lab.topo.control_plane {
            let body = serde_json::json!({"controls": self.controls, "reason": format!("drill: {why}"), "force": true});
            let r = self
                .lab
                .control(http::Method::PUT, "/v1/controls", Some(body))
                .await;
            let (ok, refused) = match r {
                Ok((200, _)) => (true, None),
                Ok((s, v)) => (false, Some(format!("control plane {s}: {}", v["reasons"]))),
                Err(e) => (false, Some(format!("control plane unreachable: {e}"))),
            };
            self.record(what, why, ok, refused);
            return;
        }
        self.controls.version += 1;
        let doc = serde_json::to_value(&self.controls).expect("controls serialize");
        let answers = self.lab.put_controls(&self.lab.edge_zones(), &doc).await;
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
    }

    async fn apply(&mut self, p: &Planned) -> anyhow::Result<()> {
        let why = format!("scenario step at {:.0} s", p.at_s);
        // Playbooks change the controls too: start from what is in force.
        if self.lab.topo.control_plane {
            if let Ok((200, v)) = self
                .lab
                .control(http::Method::GET, "/v1/controls", None)
                .await
            {
                if let Ok(c) = serde_json::from_value::<Controls>(v["controls"].clone()) {
                    self.controls = c;
                }
            }
        }
        match &p.action {
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
                let s = p.action.link_settings().expect("a link action");
                self.lab.set_link(target, s.clone())?;
                self.record(
                    format!(
                        "link {target}: {}",
                        serde_json::to_string(&s).expect("serializable")
                    ),
                    why,
                    true,
                    None,
                );
            }
            Action::RestoreLink { target } => {
                self.lab.set_link(target, LinkSettings::default())?;
                self.record(format!("link {target} restored"), why, true, None);
            }
            Action::StoreWrites { target, reject } => {
                self.lab.store_writes(target, *reject).await?;
                self.record(
                    format!(
                        "store of {target} {} writes",
                        if *reject { "rejects" } else { "accepts" }
                    ),
                    why,
                    true,
                    None,
                );
            }
            Action::EvacuateRegion { target, .. } => {
                let w = p.weight.unwrap_or(0.0);
                let rc = self
                    .controls
                    .services
                    .entry("catalog".into())
                    .or_default()
                    .regions
                    .entry(target.clone())
                    .or_default();
                rc.weight = w;
                rc.state = if w <= 0.0 {
                    RegionState::Out
                } else {
                    RegionState::In
                };
                self.push_controls(
                    format!(
                        "region {target} weight {w:.2}{}",
                        if w <= 0.0 { " (out)" } else { "" }
                    ),
                    why,
                )
                .await;
            }
            Action::RestoreRegion { target } => {
                self.controls
                    .services
                    .entry("catalog".into())
                    .or_default()
                    .regions
                    .remove(target);
                self.push_controls(format!("region {target} back in"), why)
                    .await;
            }
            Action::Controls { controls } => {
                let doc: Controls = serde_json::from_str(controls)
                    .map_err(|e| anyhow::anyhow!("controls step: {e}"))?;
                let version = self.controls.version;
                self.controls = doc;
                self.controls.version = self.controls.version.max(version);
                self.push_controls(format!("controls set to {controls}"), why)
                    .await;
            }
            Action::Fault {
                route,
                zone,
                delay_ms,
                delay_jitter_ms,
                delay_percent,
                abort_status,
                abort_percent,
            } => {
                self.controls.faults.push(Fault {
                    service: "catalog".into(),
                    route: route.clone(),
                    zone: zone.clone(),
                    delay_ms: *delay_ms,
                    delay_jitter_ms: *delay_jitter_ms,
                    delay_percent: *delay_percent,
                    abort_status: *abort_status,
                    abort_percent: *abort_percent,
                });
                let f = serde_json::to_string(self.controls.faults.last().expect("just pushed"))
                    .expect("serializable");
                self.push_controls(format!("inject fault {f}"), why).await;
            }
            Action::ClearFaults => {
                self.controls.faults.clear();
                self.push_controls("clear faults".into(), why).await;
            }
            Action::Load { factor } => {
                self.rec.set_multiplier(*factor);
                self.record(format!("offered load x{factor}"), why, true, None);
            }
            Action::PushConfigWithoutFloor => {
                let good = std::fs::read_to_string(&self.lab.config_path)?;
                let state = self.lab.dir.join("state").display().to_string();
                let bad = self.lab.topo.switchyard_config(&state, None);
                let answers = self.lab.push_config(&bad).await?;
                // Put the good file back so later reloads see it again.
                std::fs::write(&self.lab.config_path, good)?;
                for a in answers {
                    let reason = serde_json::from_str::<serde_json::Value>(&a.body)
                        .ok()
                        .and_then(|v| {
                            v["reasons"].as_array().map(|r| {
                                r.iter()
                                    .filter_map(|x| x.as_str())
                                    .collect::<Vec<_>>()
                                    .join("; ")
                            })
                        })
                        .unwrap_or(a.body.clone());
                    let ok = a.status == 200;
                    self.record(
                        format!("reload edge {} with a config without min_healthy", a.zone),
                        why.clone(),
                        ok,
                        (!ok).then_some(format!("config validation: {reason}")),
                    );
                }
            }
            Action::RemoveCapacity { zones, .. } if self.lab.topo.control_plane => {
                // As an operator would: one shift at a time, through the rules.
                let z = zones[0].clone();
                let body = serde_json::json!({"service": "catalog", "zone": z, "for": "30m", "reason": "drill: remove capacity"});
                let r = self
                    .lab
                    .control(http::Method::POST, "/v1/shift", Some(body))
                    .await;
                let (ok, refused) = match r {
                    Ok((200, _)) => (true, None),
                    Ok((s, v)) => (
                        false,
                        Some(format!(
                            "control plane {s}: {}",
                            v["reasons"]
                                .as_array()
                                .map(|a| a
                                    .iter()
                                    .filter_map(|x| x.as_str())
                                    .collect::<Vec<_>>()
                                    .join("; "))
                                .unwrap_or_default()
                        )),
                    ),
                    Err(e) => (false, Some(format!("control plane unreachable: {e}"))),
                };
                self.record(format!("shift zone {z} away"), why.clone(), ok, refused);
            }
            Action::RemoveCapacity { zones, .. } => {
                let z = zones[0].clone();
                self.controls
                    .services
                    .entry("catalog".into())
                    .or_default()
                    .zones
                    .insert(
                        z.clone(),
                        ZoneControl {
                            weight: 0.0,
                            expires_at_ms: None,
                            reason: Some("drill: remove capacity".into()),
                        },
                    );
                self.push_controls(format!("zone {z} weight 0"), why.clone())
                    .await;
                // The edges accept the document but keep the floor: see what they did.
                if let Some(st) = self.lab.edge_status(&z).await {
                    let mode = st["services"][0]["mode"].as_str().unwrap_or("").to_string();
                    if mode != "normal" {
                        let floor = st["services"][0]["floor"].clone();
                        let last = self.actions.last_mut().expect("just recorded");
                        last.accepted = false;
                        last.refused_by = Some(format!(
                            "capacity_guard: shifting {z} would leave fewer serving instances than the floor ({floor}); edges serve in mode {mode}"
                        ));
                    }
                }
            }
        }
        if p.fault && self.fault_at.is_none() {
            self.fault_at = Some(self.now_s());
        }
        if p.restore {
            self.restored_at = Some(self.now_s());
        }
        Ok(())
    }

    /// Looks at every edge: instances they ejected are findings (instance
    /// scope) and data-plane actions. Also tracks replication queues.
    async fn observe(&mut self) {
        for z in self.lab.edge_zones() {
            let Some(st) = self.lab.edge_status(&z).await else {
                continue;
            };
            let Some(insts) = st["services"][0]["instances"].as_array() else {
                continue;
            };
            for i in insts {
                let name = i["name"].as_str().unwrap_or("").to_string();
                let ejections = i["ejections"].as_u64().unwrap_or(0);
                if i["health"] == "ejected"
                    && self.seen_ejections.get(&name).copied().unwrap_or(0) < ejections
                {
                    self.seen_ejections.insert(name.clone(), ejections);
                    let at_s = self.now_s();
                    self.findings.push(Finding {
                        scope: format!("instance:{name}"),
                        kind: "errors".into(),
                        at_s,
                        evidence: json!({"seen_by_edge": z, "reason": i["last_ejection_reason"], "ejections": ejections}),
                    });
                    self.actions.push(ActionRecord {
                        what: format!("eject instance {name}"),
                        why: format!(
                            "outlier ejection by the edges ({})",
                            i["last_ejection_reason"].as_str().unwrap_or("?")
                        ),
                        at_s,
                        accepted: true,
                        refused_by: None,
                    });
                }
            }
        }
        for r in self.lab.topo.regions.clone() {
            if let Some(v) = self.lab.replication(&r.name).await {
                self.replication_max = self
                    .replication_max
                    .max(v["queue_len"].as_u64().unwrap_or(0));
            }
        }
    }
}

pub use switchyard_model::time::now_ms as wall_ms;

fn rate(s: &Second) -> f64 {
    if s.requests == 0 {
        0.0
    } else {
        s.failures as f64 / s.requests as f64
    }
}

/// One line of what clients see, for the live status.
pub fn status_line(s: &Second) -> String {
    let mut line = format!(
        "t={:>3}s {:>5} req/s  fail {:>5.1}%  p99 {:>6.1} ms",
        s.t,
        s.requests,
        rate(s) * 100.0,
        s.p99_ms
    );
    for (r, c) in &s.regions {
        let fr = if c.requests == 0 {
            0.0
        } else {
            c.failures as f64 / c.requests as f64 * 100.0
        };
        line.push_str(&format!(
            " | {r} {}/s {fr:.1}% {:.0}ms",
            c.requests, c.p99_ms
        ));
    }
    if s.shed + s.read_only > 0 {
        line.push_str(&format!(" | shed {} read-only {}", s.shed, s.read_only));
    }
    line
}

pub async fn run(scenario: &Scenario, opts: &Options) -> anyhow::Result<DrillReport> {
    let topo = scenario.topology().map_err(|e| anyhow::anyhow!(e))?;
    let bar = if opts.progress && std::io::stderr().is_terminal() {
        let b = indicatif::ProgressBar::new(scenario.duration_s.ceil() as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos:>3}/{len}s {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        b.set_prefix(scenario.name.clone());
        b.set_message("starting the lab");
        Some(b)
    } else {
        eprintln!(
            "{}: starting the lab in {}",
            scenario.name,
            opts.dir.display()
        );
        None
    };
    let mut lab = Lab::start(topo, &opts.dir, &opts.bin).await?;
    // Let connections and pools warm before the clock starts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Detection runs here, on the edges' signals, until the control plane
    // hosts it; every snapshot can also be recorded as a trace.
    let (sig_tx, mut sig_rx) = tokio::sync::mpsc::unbounded_channel();
    let followers: Vec<_> = lab
        .edge_zones()
        .iter()
        .map(|z| {
            tokio::spawn(switchyard_control::signals::follow(
                lab.topo.admin_addr(z),
                sig_tx.clone(),
            ))
        })
        .collect();
    drop(sig_tx);
    let mut engine = Engine::new(DetectConfig::default());
    let mut trace = switchyard_detect::trace::Trace::default();
    let rec = Recorder::new(Instant::now());
    let t0_ms = wall_ms();
    let stop = Arc::new(AtomicBool::new(false));
    let load = lab.start_load(&rec, &stop);
    let steps = plan(scenario);
    let mut next_step = 0;
    let mut run = Run {
        lab: &mut lab,
        rec: rec.clone(),
        controls: Controls::default(),
        actions: Vec::new(),
        findings: Vec::new(),
        seen_ejections: BTreeMap::new(),
        fault_at: None,
        restored_at: None,
        replication_max: 0,
    };
    let mut aborted = None;
    let mut bad_run = 0u32;
    let mut last_sec = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        let t = run.now_s();
        if t >= scenario.duration_s {
            break;
        }
        while next_step < steps.len() && steps[next_step].at_s <= t {
            let p = steps[next_step].clone();
            next_step += 1;
            if let Err(e) = run.apply(&p).await {
                run.record(
                    format!("{:?}", p.action),
                    format!("scenario step at {:.0} s", p.at_s),
                    false,
                    Some(e.to_string()),
                );
            }
        }
        while let Ok(snap) = sig_rx.try_recv() {
            engine.ingest(&snap);
            if opts.record.is_some() {
                trace.snapshots.push(snap);
            }
        }
        for ev in engine.tick(wall_ms()) {
            if let Event::Opened(f) = ev {
                let at_s = f.detected_ms.saturating_sub(t0_ms) as f64 / 1000.0;
                run.findings.push(Finding {
                    scope: f.scope.clone(),
                    kind: f.kind.clone(),
                    at_s,
                    evidence: json!({"detector": "switchyard-detect", "service": f.service, "since_s": f.start_ms.saturating_sub(t0_ms) as f64 / 1000.0, "numbers": f.evidence}),
                });
            }
        }
        let sec = t as usize;
        if sec > last_sec {
            last_sec = sec;
            run.observe().await;
            // The second before last is complete: requests due in it have had time to finish or time out... mostly.
            if let Some(s) = rec.timeline(sec).last().cloned() {
                let line = status_line(&s);
                match &bar {
                    Some(b) => {
                        b.set_position(sec as u64);
                        b.set_message(line);
                    }
                    None if sec.is_multiple_of(5) => eprintln!("{}: {line}", scenario.name),
                    None => {}
                }
                if let Some(st) = &scenario.stop {
                    if s.requests > 0 && rate(&s) > st.max_error_rate {
                        bad_run += 1;
                    } else {
                        bad_run = 0;
                    }
                    if bad_run >= st.for_s {
                        aborted = Some(format!(
                            "stop condition: error rate above {:.1} % for {} s in a row at t={} s",
                            st.max_error_rate * 100.0,
                            st.for_s,
                            s.t
                        ));
                        break;
                    }
                }
            }
        }
    }
    if aborted.is_some() {
        // Undo the fault: run every restore step that has not run yet.
        for p in steps[next_step..].iter().filter(|p| p.restore) {
            let _ = run.apply(p).await;
        }
    }
    let duration = run.now_s();
    for f in followers {
        f.abort();
    }
    stop.store(true, Ordering::Relaxed);
    for l in load {
        let _ = l.await;
    }
    run.observe().await;
    let replication_end = {
        let mut n = 0;
        for r in run.lab.topo.regions.clone() {
            n += run
                .lab
                .replication(&r.name)
                .await
                .and_then(|v| v["queue_len"].as_u64())
                .unwrap_or(0);
        }
        n
    };
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let secs = duration.floor() as usize;
    let timeline = rec.timeline(secs);
    let mut incidents = Vec::new();
    let mut notifications = Vec::new();
    if run.lab.topo.control_plane {
        if let Ok((200, h)) = run
            .lab
            .control(http::Method::GET, "/v1/history?limit=1000", None)
            .await
        {
            for e in h["entries"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| e["who"] == "playbook")
            {
                run.actions.push(ActionRecord {
                    what: format!("playbook: {}", e["action"].as_str().unwrap_or("")),
                    why: e["reason"].as_str().unwrap_or("").to_string(),
                    at_s: e["at_ms"].as_u64().unwrap_or(0).saturating_sub(t0_ms) as f64 / 1000.0,
                    accepted: e["accepted"] == true,
                    refused_by: e["rule"].as_str().map(str::to_string),
                });
            }
            run.actions.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
        }
        // The incidents opened during the run, as the control plane has them.
        if let Ok((200, list)) = run
            .lab
            .control(http::Method::GET, "/v1/incidents", None)
            .await
        {
            for i in list["incidents"].as_array().into_iter().flatten() {
                if i["created_ms"].as_u64().unwrap_or(0) < t0_ms {
                    continue;
                }
                let id = i["id"].as_str().unwrap_or("");
                if let Ok((200, full)) = run
                    .lab
                    .control(http::Method::GET, &format!("/v1/incidents/{id}"), None)
                    .await
                {
                    incidents.push(full);
                }
            }
        }
        notifications = run
            .lab
            .inbox
            .received()
            .into_iter()
            .map(|n| {
                json!({
                    "at_s": n.at_ms.saturating_sub(t0_ms) as f64 / 1000.0,
                    "receiver": n.receiver,
                    "incident": n.body["incident"]["id"],
                    "status": n.body["incident"]["status"],
                    "events": n.body["events"],
                    "body": n.body,
                })
            })
            .collect();
    }
    let (actions, findings, fault_at, restored_at, replication_max) = (
        run.actions,
        run.findings,
        run.fault_at,
        run.restored_at,
        run.replication_max,
    );
    run.lab.procs.stop_all();
    drop(lab);

    if let Some(path) = &opts.record {
        trace
            .meta
            .push(json!({"source": "lab", "scenario": scenario.name, "t0_ms": t0_ms}));
        if let Some(f) = fault_at {
            for scope in &scenario.fault_scope {
                trace.labels.push(switchyard_detect::trace::Label {
                    scope: scope.clone(),
                    kind: None,
                    start_ms: t0_ms + (f * 1000.0) as u64,
                    end_ms: t0_ms + (restored_at.unwrap_or(duration) * 1000.0) as u64,
                });
            }
        }
        std::fs::write(path, trace.to_ndjson())?;
    }
    let steady = SteadyState {
        max_error_rate: scenario.steady_state.max_error_rate,
        max_p99_ms: scenario.steady_state.max_p99_ms,
    };
    let mut report = DrillReport {
        scenario: scenario.name.clone(),
        passed: false,
        requests_total: timeline.iter().map(|s| s.requests).sum(),
        requests_failed: timeline.iter().map(|s| s.failures).sum(),
        requests_shed: timeline.iter().map(|s| s.shed).sum(),
        requests_read_only: timeline.iter().map(|s| s.read_only).sum(),
        fault_at_s: fault_at,
        detected_at_s: None,
        mitigated_at_s: None,
        restored_at_s: restored_at,
        recovered_at_s: None,
        duration_s: duration,
        steady_state: steady.clone(),
        findings,
        actions,
        expectations: Vec::new(),
        aborted,
        timeline,
        started_at_ms: t0_ms,
        incidents,
        notifications,
    };
    report.detected_at_s = report
        .findings
        .iter()
        .filter(|f| {
            scenario.fault_scope.contains(&f.scope) && fault_at.is_some_and(|t| f.at_s >= t)
        })
        .map(|f| f.at_s)
        .reduce(f64::min);
    report.mitigated_at_s = fault_at.map(|f| mitigated_at(&report.timeline, f, &steady));
    report.recovered_at_s = restored_at.and_then(|r| {
        report
            .timeline
            .iter()
            .find(|s| {
                s.t as f64 >= r.floor()
                    && rate(s) <= steady.max_error_rate
                    && s.p99_ms <= steady.max_p99_ms
            })
            .map(|s| (s.t as f64).max(r))
    });
    let window = (
        fault_at.map(|f| f as usize).unwrap_or(0),
        restored_at.map(|r| r.ceil() as usize).unwrap_or(secs),
    );
    let metric = |m: &str| -> Option<f64> {
        let total = report.requests_total.max(1) as f64;
        Some(match m {
            "failed_ratio" => report.requests_failed as f64 / total,
            "requests_failed" => report.requests_failed as f64,
            "requests_total" => report.requests_total as f64,
            "shed_ratio" => report.requests_shed as f64 / total,
            "read_only_ratio" => report.requests_read_only as f64 / total,
            "ttd_s" => report.ttd_s()?,
            "ttm_s" => report.ttm_s()?,
            "recovery_s" => report.recovered_at_s? - report.restored_at_s?,
            "p99_ms" => rec.p99_between(window.0, window.1),
            // A playbook's check of its own action is not an action.
            "refused_actions" => report
                .actions
                .iter()
                .filter(|a| !a.accepted && !a.what.starts_with("playbook: verify"))
                .count() as f64,
            "accepted_actions" => report.actions.iter().filter(|a| a.accepted).count() as f64,
            "replication_queue_max" => replication_max as f64,
            "playbook_shifts" => report
                .actions
                .iter()
                .filter(|a| a.accepted && a.what.starts_with("playbook: shift"))
                .count() as f64,
            "playbook_evacuations" => report
                .actions
                .iter()
                .filter(|a| {
                    a.accepted
                        && a.what.starts_with("playbook: region")
                        && a.what.contains("weight")
                })
                .count() as f64,
            "incidents_opened" => report.incidents.len() as f64,
            "notifications_delivered" => report.notifications.len() as f64,
            "playbook_read_only" => report
                .actions
                .iter()
                .filter(|a| a.accepted && a.what.starts_with("playbook: read-only mode on"))
                .count() as f64,
            "playbook_actions" => report
                .actions
                .iter()
                .filter(|a| {
                    a.accepted
                        && a.what.starts_with("playbook:")
                        && !a.what.starts_with("playbook: verify")
                })
                .count() as f64,
            "replication_queue_end" => replication_end as f64,
            _ => return None,
        })
    };
    report.expectations = scenario
        .expectations
        .iter()
        .map(|e| {
            let name = format!("{} {} {}", e.metric, e.op, e.value);
            match metric(&e.metric) {
                Some(v) => Expectation {
                    held: holds(v, &e.op, e.value),
                    detail: format!("measured {}", fmt_num(v)),
                    name,
                },
                None => Expectation {
                    name,
                    held: false,
                    detail: "not measured in this run".into(),
                },
            }
        })
        .collect();
    report.passed = report.aborted.is_none() && report.expectations.iter().all(|e| e.held);
    Ok(report)
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e12 {
        format!("{v:.0}")
    } else if v.abs() < 0.1 {
        format!("{v:.4}")
    } else {
        format!("{v:.2}")
    }
}

/// The first moment after the fault when the client error rate is back under
/// the bound: the fault time itself when it never went above, otherwise the
/// end of the first run of bad seconds.
pub fn mitigated_at(timeline: &[Second], fault_at: f64, steady: &SteadyState) -> f64 {
    let from = fault_at.floor() as usize;
    let bad = |s: &Second| s.requests > 0 && rate(s) > steady.max_error_rate;
    let Some(first_bad) = timeline.iter().skip(from).position(bad).map(|i| i + from) else {
        return fault_at;
    };
    match timeline.iter().skip(first_bad).position(|s| !bad(s)) {
        Some(i) => (first_bad + i) as f64,
        None => timeline.len() as f64,
    }
}

/// Writes the JSON report and, if asked, the Markdown report with plots.
pub fn write_outputs(
    report: &DrillReport,
    json_path: Option<&Path>,
    report_dir: Option<&Path>,
) -> anyhow::Result<()> {
    if let Some(p) = json_path {
        if let Some(d) = p.parent() {
            if !d.as_os_str().is_empty() {
                std::fs::create_dir_all(d)?;
            }
        }
        std::fs::write(p, serde_json::to_vec_pretty(report)?)?;
    }
    if let Some(d) = report_dir {
        switchyard_report::write_report(report, d)?;
        // Each incident's postmortem next to the report, from its record.
        for v in &report.incidents {
            let i: switchyard_incident::Incident = serde_json::from_value(v.clone())
                .map_err(|e| anyhow::anyhow!("an incident of the run cannot be read: {e}"))?;
            switchyard_incident::postmortem::write(&i, &d.join("incidents").join(&i.id))?;
        }
    }
    Ok(())
}

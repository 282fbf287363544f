//! Runs a drill in phases: set up (start the lab, warm it, offer load,
//! follow the edges), step (apply the scenario's changes on schedule and
//! observe what the edges and the control plane see, second by second,
//! until the end or a stop condition), tear down (restore, stop the load,
//! take the control plane's record, stop the lab) and score (what users
//! felt, and whether each expectation held).
//!
//! Findings come from the lab's control plane — the detection that acts in
//! production — not from a second engine beside it; the drill only follows
//! the edges' signals itself to record a trace when asked.

mod dns;
mod rollout;
mod score;
mod steps;

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use switchyard_api::edge::{CheckState, Health};
use switchyard_model::{AuditEntry, Config, Controls};
use switchyard_report::{Action as ActionRecord, AlarmFired, DrillReport, Finding, Second};
use tokio::time::Instant;

use crate::lab::Lab;
use crate::load::Recorder;
use crate::scenario::Scenario;

pub use score::mitigated_at;

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

/// A drill in progress: the lab, the clock, and everything seen so far.
struct Run<'a> {
    scenario: String,
    lab: &'a mut Lab,
    /// The lab's config, for applying operations without a control plane.
    config: Config,
    rec: Arc<Recorder>,
    /// The controls the drill last sent, when the lab has no control plane.
    controls: Controls,
    actions: Vec<ActionRecord>,
    findings: Vec<Finding>,
    /// Findings already taken from the control plane: (scope, kind, detected).
    seen_findings: BTreeSet<(String, String, u64)>,
    seen_ejections: BTreeMap<String, u32>,
    edge_ejections: usize,
    /// Instances some edge's health checks hold out of rotation now.
    seen_down: BTreeSet<String>,
    /// Alarms seen firing, by (service, name).
    alarms: BTreeMap<(String, String), AlarmFired>,
    /// Alarms firing at the last look: one absent in between fires anew.
    alarms_now: BTreeSet<(String, String)>,
    fault_at: Option<f64>,
    restored_at: Option<f64>,
    replication_max: u64,
    t0_ms: u64,
    /// Follows rollouts and the edges' config versions, when the scenario
    /// starts a rollout.
    follower: Option<rollout::Follower>,
    /// What the plane answered each `rollout` step.
    rollout_answers: Vec<rollout::StepAnswer>,
}

/// What the run saw, for scoring: besides the report's own fields, the
/// control plane's audit entries (typed), the incidents it opened and the
/// replication queues.
#[derive(Debug, Default)]
pub(crate) struct Observed {
    /// Whether the lab ran a control plane: without one there are no audit
    /// entries, incidents or alarms, and metrics made of them are not
    /// measured rather than zero.
    pub(crate) control_plane: bool,
    /// Unix ms of the run's second 0, to place audit entries on its clock.
    pub(crate) t0_ms: u64,
    /// Every audit entry of the run, whoever made it, oldest first.
    pub(crate) audit_entries: Vec<AuditEntry>,
    /// When each incident of the run was opened (Unix ms).
    pub(crate) incidents_created_ms: Vec<u64>,
    /// Zone → region, to count shifted zones per region.
    pub(crate) region_of_zone: BTreeMap<String, String>,
    pub(crate) replication_max: u64,
    pub(crate) replication_end: u64,
    /// Outlier ejections the edges made during the run.
    pub(crate) edge_ejections: usize,
    /// What the lab's DNS servers answered, each change (none without DNS).
    pub(crate) dns_samples: Vec<dns::DnsSample>,
    pub(crate) dns_servers: usize,
    /// Region → its zones, and client group → its users' region.
    pub(crate) region_zones: BTreeMap<String, Vec<String>>,
    pub(crate) group_regions: BTreeMap<String, String>,
    /// What the plane answered each `rollout` step.
    pub(crate) rollout_answers: Vec<rollout::StepAnswer>,
}

impl Observed {
    /// The playbooks' entries: their changes, refusals and checks.
    pub(crate) fn playbook_entries(&self) -> impl Iterator<Item = &AuditEntry> {
        self.audit_entries.iter().filter(|e| e.actor.is_playbook())
    }
}

impl Run<'_> {
    fn now_s(&self) -> f64 {
        self.rec.start().elapsed().as_secs_f64()
    }

    fn at_s(&self, wall_ms: u64) -> f64 {
        wall_ms.saturating_sub(self.t0_ms) as f64 / 1000.0
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

    /// Looks at every edge (instances they ejected are findings of instance
    /// scope and data-plane actions), at the control plane's findings, and
    /// at the replication queues.
    async fn observe(&mut self) {
        self.observe_edges().await;
        if self.lab.topo.control_plane {
            self.observe_findings().await;
        }
        for r in self.lab.topo.regions.clone() {
            if let Some(v) = self.lab.replication(&r.name).await {
                self.replication_max = self.replication_max.max(v.queue_len);
            }
        }
    }

    async fn observe_edges(&mut self) {
        let mut down_now = BTreeSet::new();
        for z in self.lab.edge_zones() {
            let Some(st) = self.lab.edge_status(&z).await else {
                continue;
            };
            let Some(svc) = st.services.first() else {
                continue;
            };
            for i in &svc.instances {
                let reason = i.last_ejection_reason.map_or("?", |r| r.as_str());
                if i.health == Health::Ejected
                    && self.seen_ejections.get(&i.name).copied().unwrap_or(0) < i.ejections
                {
                    self.seen_ejections.insert(i.name.clone(), i.ejections);
                    self.edge_ejections += 1;
                    self.edge_acted(
                        &i.name,
                        if reason == "latency" {
                            "latency"
                        } else {
                            "errors"
                        },
                        json!({"seen_by_edge": z, "reason": reason, "ejections": i.ejections}),
                        format!("eject instance {}", i.name),
                        format!("outlier ejection by the edges ({reason})"),
                    );
                }
                if i.check.state == CheckState::Down {
                    down_now.insert(i.name.clone());
                    if !self.seen_down.contains(&i.name) {
                        self.seen_down.insert(i.name.clone());
                        let error = i.check.last_error.as_deref().unwrap_or("?");
                        self.edge_acted(
                            &i.name,
                            "down",
                            json!({"seen_by_edge": z, "health_check": error}),
                            format!("take instance {} out of rotation", i.name),
                            format!("failing its health checks ({error})"),
                        );
                    }
                }
            }
        }
        // Back in rotation everywhere: a later failure is news again.
        self.seen_down.retain(|n| down_now.contains(n));
    }

    /// An instance the edges took out of rotation: what they found and
    /// what they did, now.
    fn edge_acted(
        &mut self,
        instance: &str,
        kind: &str,
        evidence: serde_json::Value,
        what: String,
        why: String,
    ) {
        let at_s = self.now_s();
        self.findings.push(Finding {
            scope: format!("instance:{instance}"),
            kind: kind.into(),
            at_s,
            evidence,
        });
        self.actions.push(ActionRecord {
            what,
            why,
            at_s,
            accepted: true,
            refused_by: None,
        });
    }

    /// New findings of the control plane's detection since the last look.
    async fn observe_findings(&mut self) {
        let Ok(view) = self.lab.api.findings().await else {
            return;
        };
        for f in view.findings {
            if f.detected_ms < self.t0_ms
                || !self
                    .seen_findings
                    .insert((f.scope.clone(), f.kind.clone(), f.detected_ms))
            {
                continue;
            }
            self.findings.push(Finding {
                at_s: self.at_s(f.detected_ms),
                evidence: json!({"detector": "control plane", "service": f.service, "since_s": self.at_s(f.start_ms), "numbers": f.evidence}),
                scope: f.scope,
                kind: f.kind,
            });
        }
        self.observe_alarms(view.alarms);
    }

    /// The control plane shows the alarms firing now, not their history:
    /// the drill keeps when each was first and last seen, and how many
    /// separate times it fired.
    fn observe_alarms(&mut self, alarms: Vec<switchyard_model::Alarm>) {
        let mut now = BTreeSet::new();
        for a in alarms.into_iter().filter(|a| a.at_ms >= self.t0_ms) {
            let key = (a.service.clone(), a.name.clone());
            let at_s = self.at_s(a.at_ms);
            let again = !self.alarms_now.contains(&key);
            let seen = self
                .alarms
                .entry(key.clone())
                .or_insert_with(|| AlarmFired {
                    name: a.name,
                    service: a.service,
                    severity: a.severity,
                    first_at_s: at_s,
                    last_at_s: at_s,
                    episodes: 0,
                    detail: a.detail,
                });
            seen.last_at_s = at_s;
            if again {
                seen.episodes += 1;
            }
            now.insert(key);
        }
        self.alarms_now = now;
    }
}

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
    // Where each group's users went in: DNS steering, live.
    for (g, m) in &s.entered {
        let total: u64 = m.values().sum();
        let shares: Vec<String> = m
            .iter()
            .map(|(r, n)| format!("{r} {:.0}%", *n as f64 * 100.0 / total.max(1) as f64))
            .collect();
        line.push_str(&format!(" | {g} in {}", shares.join(" ")));
    }
    line
}

/// Runs the scenario on a fresh lab and scores it.
pub async fn run(scenario: &Scenario, opts: &Options) -> anyhow::Result<DrillReport> {
    let topo = scenario.topology().map_err(|e| anyhow::anyhow!(e))?;
    // Planned before anything starts: a step that cannot be expanded
    // refuses the drill rather than breaking it halfway.
    let steps = steps::plan(scenario).map_err(|e| anyhow::anyhow!(e))?;
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
    let config = Config::from_toml(&std::fs::read_to_string(&lab.config_path)?, |k| {
        std::env::var(k).ok()
    })
    .map_err(|e| anyhow::anyhow!("the lab's own config: {e}"))?;
    let recorder = opts.record.as_ref().map(|_| TraceRecorder::start(&lab));
    let rec = Recorder::new(Instant::now());
    let stop = Arc::new(AtomicBool::new(false));
    let load = lab.start_load(&rec, &stop);
    let dns_watch = lab
        .topo
        .dns
        .then(|| dns::DnsWatch::start(&lab.topo, rec.start()));
    let mut run = Run {
        scenario: scenario.name.clone(),
        lab: &mut lab,
        config,
        rec: rec.clone(),
        controls: Controls::default(),
        actions: Vec::new(),
        findings: Vec::new(),
        seen_findings: BTreeSet::new(),
        seen_ejections: BTreeMap::new(),
        edge_ejections: 0,
        seen_down: BTreeSet::new(),
        alarms: BTreeMap::new(),
        alarms_now: BTreeSet::new(),
        fault_at: None,
        restored_at: None,
        replication_max: 0,
        t0_ms: switchyard_model::time::now_ms(),
        follower: None,
        rollout_answers: Vec::new(),
    };
    let rolls_out = scenario
        .steps
        .iter()
        .any(|s| matches!(s.action, crate::scenario::Action::Rollout(_)));
    if rolls_out && run.lab.topo.control_plane {
        let edges = run
            .lab
            .edge_zones()
            .into_iter()
            .map(|z| {
                let admin = run.lab.topo.admin_addr(&z);
                (z, admin)
            })
            .collect();
        run.follower = Some(rollout::Follower::start(
            run.lab.api.clone(),
            edges,
            rec.start(),
        ));
    }
    let aborted = run.step(scenario, &steps, bar.as_ref()).await;
    let duration = run.now_s();
    stop.store(true, Ordering::Relaxed);
    for l in load {
        let _ = l.await;
    }
    let (mut observed, incidents, notifications) = run.tear_down().await;
    let secs = duration.floor() as usize;
    let (rollouts, config_versions) = match run.follower.take() {
        Some(f) => f.finish(run.t0_ms, secs).await,
        None => (Vec::new(), Vec::new()),
    };
    observed.rollout_answers = std::mem::take(&mut run.rollout_answers);
    if let Some(w) = dns_watch {
        observed.dns_samples = w.finish();
        let (f, a) = dns::findings_and_actions(&observed.dns_samples, &run.lab.topo);
        run.findings.extend(f);
        run.findings.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
        run.actions.extend(a);
        run.actions.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    }
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let mut alarms: Vec<AlarmFired> = std::mem::take(&mut run.alarms).into_values().collect();
    alarms.sort_by(|a, b| a.first_at_s.total_cmp(&b.first_at_s));
    let (actions, findings, fault_at, restored_at, t0_ms) = (
        std::mem::take(&mut run.actions),
        std::mem::take(&mut run.findings),
        run.fault_at,
        run.restored_at,
        run.t0_ms,
    );
    run.lab.procs.stop_all();
    drop(lab);
    if let (Some(path), Some(r)) = (&opts.record, recorder) {
        r.write(
            path,
            scenario,
            t0_ms,
            fault_at,
            restored_at.unwrap_or(duration),
        )?;
    }
    let report = DrillReport {
        scenario: scenario.name.clone(),
        passed: false,
        requests_total: 0,
        requests_failed: 0,
        requests_shed: 0,
        requests_read_only: 0,
        fault_at_s: fault_at,
        detected_at_s: None,
        mitigated_at_s: None,
        restored_at_s: restored_at,
        recovered_at_s: None,
        duration_s: duration,
        steady_state: switchyard_report::SteadyState {
            max_error_rate: scenario.steady_state.max_error_rate,
            max_p99_ms: scenario.steady_state.max_p99_ms,
        },
        findings,
        actions,
        expectations: Vec::new(),
        aborted,
        timeline: rec.timeline(secs),
        started_at_ms: t0_ms,
        incidents,
        notifications,
        alarms,
        rollouts,
        config_versions,
    };
    Ok(score::score(scenario, report, &rec, &observed))
}

impl Run<'_> {
    /// Applies the steps on schedule and observes once a second, until the
    /// scenario's end or its stop condition; returns why it stopped early.
    async fn step(
        &mut self,
        scenario: &Scenario,
        steps: &[steps::Step],
        bar: Option<&indicatif::ProgressBar>,
    ) -> Option<String> {
        let mut next_step = 0;
        let mut bad_run = 0u32;
        let mut last_sec = 0usize;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let aborted = loop {
            tick.tick().await;
            let t = self.now_s();
            if t >= scenario.duration_s {
                break None;
            }
            while next_step < steps.len() && steps[next_step].at_s <= t {
                let p = steps[next_step].clone();
                next_step += 1;
                if let Err(e) = self.apply(&p).await {
                    self.record(
                        format!("{:?}", p.action),
                        format!("scenario step at {:.0} s", p.at_s),
                        false,
                        Some(e.to_string()),
                    );
                }
            }
            let sec = t as usize;
            if sec <= last_sec {
                continue;
            }
            last_sec = sec;
            self.observe().await;
            // The second before last is complete: requests due in it have
            // had time to finish or time out... mostly.
            let Some(s) = self.rec.timeline(sec).last().cloned() else {
                continue;
            };
            let line = status_line(&s);
            match bar {
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
                    break Some(format!(
                        "stop condition: error rate above {:.1} % for {} s in a row at t={} s",
                        st.max_error_rate * 100.0,
                        st.for_s,
                        s.t
                    ));
                }
            }
        };
        if aborted.is_some() {
            // Undo the fault: run every restore step that has not run yet.
            for p in steps[next_step..].iter().filter(|p| p.restore) {
                let _ = self.apply(p).await;
            }
        }
        aborted
    }

    /// After the load stopped: a last look, the replication queues left, and
    /// the control plane's record of the run (the playbooks' actions, the
    /// incidents it opened, what it told people).
    async fn tear_down(&mut self) -> (Observed, Vec<serde_json::Value>, Vec<serde_json::Value>) {
        self.observe().await;
        let mut replication_end = 0;
        for r in self.lab.topo.regions.clone() {
            replication_end += self
                .lab
                .replication(&r.name)
                .await
                .map_or(0, |v| v.queue_len);
        }
        let mut observed = Observed {
            control_plane: self.lab.topo.control_plane,
            t0_ms: self.t0_ms,
            region_of_zone: self
                .lab
                .topo
                .zones()
                .map(|(r, z)| (z.to_string(), r.to_string()))
                .collect(),
            replication_max: self.replication_max,
            replication_end,
            edge_ejections: self.edge_ejections,
            dns_servers: self.lab.topo.dns_servers().len(),
            region_zones: self
                .lab
                .topo
                .regions
                .iter()
                .map(|r| (r.name.clone(), r.zones.clone()))
                .collect(),
            group_regions: self
                .lab
                .topo
                .clients
                .iter()
                .map(|c| (c.name.clone(), c.region.clone()))
                .collect(),
            ..Observed::default()
        };
        if !self.lab.topo.control_plane {
            return (observed, Vec::new(), Vec::new());
        }
        // The lab's control plane is new for each drill: its whole history
        // is the run's.
        if let Ok(h) = self.lab.api.history(1000).await {
            for e in h.entries.iter().filter(|e| e.actor.is_playbook()) {
                self.actions.push(ActionRecord {
                    what: format!("playbook: {}", e.action),
                    why: e.reason.clone(),
                    at_s: self.at_s(e.at_ms),
                    accepted: e.accepted,
                    refused_by: e.rule.clone(),
                });
            }
            self.actions.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
            observed.audit_entries = h.entries;
        }
        // The incidents opened during the run, as the control plane has them.
        let mut incidents = Vec::new();
        if let Ok(list) = self.lab.api.incidents(&Default::default()).await {
            for i in list.incidents.iter().filter(|i| i.created_ms >= self.t0_ms) {
                observed.incidents_created_ms.push(i.created_ms);
                if let Ok(full) = self.lab.api.incident(&i.id).await {
                    incidents.push(serde_json::to_value(full).expect("an incident serializes"));
                }
            }
        }
        let notifications = self
            .lab
            .inbox
            .received()
            .into_iter()
            .map(|n| {
                json!({
                    "at_s": self.at_s(n.at_ms),
                    "receiver": n.receiver,
                    "incident": n.body["incident"]["id"],
                    "status": n.body["incident"]["status"],
                    "events": n.body["events"],
                    "body": n.body,
                })
            })
            .collect();
        (observed, incidents, notifications)
    }
}

/// Follows every edge's signals and keeps them as a trace, for `--record`.
struct TraceRecorder {
    rx: tokio::sync::mpsc::UnboundedReceiver<switchyard_model::signals::Snapshot>,
    followers: Vec<tokio::task::JoinHandle<()>>,
}

impl TraceRecorder {
    fn start(lab: &Lab) -> TraceRecorder {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let followers = lab
            .edge_zones()
            .iter()
            .map(|z| {
                tokio::spawn(switchyard_api::signals::follow(
                    lab.topo.admin_addr(z),
                    tx.clone(),
                ))
            })
            .collect();
        TraceRecorder { rx, followers }
    }

    /// The snapshots with the fault as the trace's label.
    fn write(
        mut self,
        path: &Path,
        scenario: &Scenario,
        t0_ms: u64,
        fault_at: Option<f64>,
        until_s: f64,
    ) -> anyhow::Result<()> {
        for f in &self.followers {
            f.abort();
        }
        let mut trace = switchyard_detect::trace::Trace::default();
        while let Ok(snap) = self.rx.try_recv() {
            trace.snapshots.push(snap);
        }
        trace
            .meta
            .push(json!({"source": "lab", "scenario": scenario.name, "t0_ms": t0_ms}));
        if let Some(f) = fault_at {
            for scope in &scenario.fault_scope {
                trace.labels.push(switchyard_detect::trace::Label {
                    scope: scope.clone(),
                    kind: None,
                    start_ms: t0_ms + (f * 1000.0) as u64,
                    end_ms: t0_ms + (until_s * 1000.0) as u64,
                });
            }
        }
        std::fs::write(path, trace.to_ndjson())?;
        Ok(())
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

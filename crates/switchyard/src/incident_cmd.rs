//! `switchyard incident`: incidents from the control plane — list, show,
//! open by hand, acknowledge, move the status, set the people's stages,
//! notes, severity, silences, durations over a period, and the postmortem.
//! Exit codes as `ctl`: 0 done, 1 refused (an invalid transition) or the
//! store failed, 2 bad input or unknown id, 3 control plane unreachable.

use std::path::PathBuf;
use std::process::ExitCode;

use std::time::Duration;

use serde::Serialize;
use switchyard_api::{
    Client, ClientError, IncidentQuery, OpenIncident, SeverityChange, SilenceRequest, StageChange,
    StatsQuery, StatusChange,
};
use switchyard_model::incident::{Incident, Stage};
use switchyard_model::ops::human_duration;

use crate::ctl_cmd::{block_on, failed, print_json, report, service_or_only, utc, Endpoint};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    endpoint: Endpoint,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Subcommand)]
enum Cmd {
    /// Incidents, newest last.
    List {
        /// `open`, `all`, or one status.
        #[arg(long, default_value = "all")]
        status: String,
        /// Only this service's incidents.
        #[arg(long)]
        service: Option<String>,
    },
    /// One incident with its stages and timeline.
    Show {
        /// The incident's id (see `incident list`).
        id: String,
    },
    /// Open an incident by hand (joins the service's open one if any).
    Open {
        /// The service; required when the control plane knows several.
        #[arg(long)]
        service: Option<String>,
        /// What is wrong, as people will read it.
        #[arg(long)]
        title: String,
        /// SEV1 … SEV4; otherwise the rules decide.
        #[arg(long)]
        severity: Option<String>,
    },
    /// Acknowledge: a person has it.
    Ack {
        /// The incident's id.
        id: String,
        /// A note for the timeline.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Move the status: investigating, identified, mitigating, monitoring, resolved.
    Status {
        /// The incident's id.
        id: String,
        /// The new status.
        status: String,
        /// A note for the timeline.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Record a people's stage once resolved: analysed, shared, reviewed.
    Stage {
        /// The incident's id.
        id: String,
        /// analysed, shared or reviewed.
        stage: String,
        /// A note for the timeline.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Add a note to the timeline.
    Note {
        /// The incident's id.
        id: String,
        /// The note.
        text: String,
    },
    /// Set the severity by hand (the rules no longer change it).
    Severity {
        /// The incident's id.
        id: String,
        /// SEV1 … SEV4.
        severity: String,
        /// Why, for the timeline.
        #[arg(long)]
        reason: String,
    },
    /// TTD, time to acknowledge, TTM and TTR over the incidents of a period.
    Stats {
        /// How far back, e.g. `7d`, `24h`.
        #[arg(long, default_value = "30d", value_parser = human_duration::parse)]
        since: Duration,
    },
    /// Write the postmortem (Markdown and plots) from what was recorded.
    Postmortem {
        /// The incident's id.
        id: String,
        /// Directory for postmortem.md and its plots.
        #[arg(long, default_value = "postmortem")]
        out: PathBuf,
    },
    /// Silences: hold notifications back for a while.
    #[command(subcommand)]
    Silence(SilenceCmd),
}

#[derive(clap::Subcommand)]
enum SilenceCmd {
    /// The silences in force.
    List,
    /// Hold back notifications matching every filter given.
    Add {
        /// Only this service's notifications.
        #[arg(long)]
        service: Option<String>,
        /// Only notifications of this severity (SEV1 … SEV4).
        #[arg(long)]
        severity: Option<String>,
        /// Only findings whose scope starts with this (`zone:us-east-a`).
        #[arg(long)]
        scope_prefix: Option<String>,
        /// How long: 90s, 30m, 2h, 3d.
        #[arg(long = "for")]
        for_: String,
        /// Why, shown with the silence.
        #[arg(long)]
        reason: String,
    },
    /// End a silence made through the API.
    Rm {
        /// The silence's id (see `incident silence list`).
        id: String,
    },
}

pub fn run(args: Args) -> ExitCode {
    let c = match args.endpoint.client() {
        Ok(c) => c,
        Err(code) => return code,
    };
    block_on(go(&c, args.cmd, args.endpoint.json))
}

/// Prints an answer: as JSON, or as people read it.
fn done<T: Serialize>(
    r: Result<T, ClientError>,
    json_out: bool,
    show: impl FnOnce(&T),
) -> ExitCode {
    report("incident", r, json_out, show)
}

fn print_incident(v: &Incident) {
    println!(
        "{}  {}  {}  {}",
        v.id,
        v.severity.as_str(),
        v.status.as_str(),
        v.title
    );
    println!("  severity reason: {}", v.severity_reason);
    println!("  scopes: {}", v.scopes.join(", "));
    println!(
        "  impact: {:.2} % of traffic, {} failed requests, routes {:?}",
        v.impact.traffic_share * 100.0,
        v.impact.failed,
        v.impact.routes
    );
    for a in &v.alarms {
        println!(
            "  alarm {} ({}) on {}: {} to {}{}",
            a.name,
            a.severity,
            a.scope,
            utc(Some(a.since_ms)),
            a.end_ms.map_or("still firing".into(), |e| utc(Some(e))),
            if a.opened {
                ", opened the incident"
            } else {
                ""
            }
        );
    }
    println!("  stages:");
    for s in Stage::ALL {
        println!("    {:<13} {}", s.as_str(), utc(v.stages.get(&s).copied()));
    }
    println!("  timeline:");
    for e in &v.timeline {
        let kind = serde_json::to_value(e.kind).expect("serializable");
        println!(
            "    {}  {:<16} {:<10} {}",
            utc(Some(e.at_ms)),
            kind.as_str().unwrap_or(""),
            e.who,
            e.text
        );
    }
}

fn print_silence(x: &switchyard_model::notice::Silence) {
    println!(
        "{}  until {}  service {}  severity {}  scope {}  by {}: {}",
        x.id,
        utc(Some(x.until_ms)),
        x.service.as_deref().unwrap_or("any"),
        x.severity
            .map(|s| s.to_string())
            .unwrap_or_else(|| "any".into()),
        x.scope_prefix.as_deref().unwrap_or("any"),
        x.created_by,
        x.reason
    );
}

async fn go(c: &Client, cmd: Cmd, json_out: bool) -> ExitCode {
    match cmd {
        Cmd::List { status, service } => {
            let q = IncidentQuery {
                status: Some(status),
                service,
            };
            done(c.incidents(&q).await, json_out, |v| {
                println!(
                    "{:<28} {:<5} {:<13} {:<21} title",
                    "id", "sev", "status", "occurred"
                );
                for i in &v.incidents {
                    println!(
                        "{:<28} {:<5} {:<13} {:<21} {}",
                        i.id,
                        i.severity.as_str(),
                        i.status.as_str(),
                        utc(i.stages.get(&Stage::Occurred).copied()),
                        i.title
                    );
                }
            })
        }
        Cmd::Show { id } => done(c.incident(&id).await, json_out, print_incident),
        Cmd::Open {
            service,
            title,
            severity,
        } => {
            let service = match service_or_only(c, "incident", json_out, service).await {
                Ok(s) => s,
                Err(code) => return code,
            };
            let req = OpenIncident {
                service,
                title,
                severity,
            };
            done(c.open_incident(&req).await, json_out, |o| {
                if o.created {
                    println!("opened {}", o.id);
                } else {
                    println!("joined the open incident {}", o.id);
                }
            })
        }
        Cmd::Ack { id, note } => done(c.ack(&id, &note).await, json_out, print_incident),
        Cmd::Status { id, status, note } => {
            let req = StatusChange { status, note };
            done(c.set_status(&id, &req).await, json_out, print_incident)
        }
        Cmd::Stage { id, stage, note } => {
            let req = StageChange {
                stage: Some(stage),
                note,
            };
            done(c.stage(&id, &req).await, json_out, print_incident)
        }
        Cmd::Note { id, text } => done(c.note(&id, &text).await, json_out, print_incident),
        Cmd::Severity {
            id,
            severity,
            reason,
        } => {
            let req = SeverityChange { severity, reason };
            done(c.severity(&id, &req).await, json_out, print_incident)
        }
        Cmd::Stats { since } => {
            let from = switchyard_model::time::now_ms().saturating_sub(since.as_millis() as u64);
            let q = StatsQuery {
                from_ms: Some(from),
                to_ms: None,
            };
            done(c.stats(&q).await, json_out, |v| {
                println!("incidents: {}", v.incidents);
                for (d, name) in [
                    (v.ttd_s, "time to detect"),
                    (v.tta_s, "time to acknowledge"),
                    (v.ttm_s, "time to mitigate"),
                    (v.ttr_s, "time to recover"),
                ] {
                    match d {
                        Some((median, mean, worst)) => println!(
                            "{name:<20} median {median:.1} s  mean {mean:.1} s  worst {worst:.1} s"
                        ),
                        None => println!("{name:<20} —"),
                    }
                }
            })
        }
        Cmd::Postmortem { id, out } => {
            let incident = match c.incident(&id).await {
                Ok(i) => i,
                Err(e) => return failed("incident", json_out, &e),
            };
            match switchyard_incident::postmortem::write(&incident, &out) {
                Ok(path) if json_out => {
                    print_json(&serde_json::json!({"id": id, "postmortem": path}));
                    ExitCode::SUCCESS
                }
                Ok(path) => {
                    println!("postmortem of {id} written to {}", path.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!(
                        "switchyard incident: cannot write into {}: {e}",
                        out.display()
                    );
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Silence(SilenceCmd::List) => done(c.silences().await, json_out, |v| {
            if v.silences.is_empty() {
                println!("no silence in force");
            }
            v.silences.iter().for_each(print_silence);
        }),
        Cmd::Silence(SilenceCmd::Add {
            service,
            severity,
            scope_prefix,
            for_,
            reason,
        }) => {
            let req = SilenceRequest {
                service,
                severity,
                scope_prefix,
                duration: for_,
                reason,
            };
            done(c.add_silence(&req).await, json_out, print_silence)
        }
        Cmd::Silence(SilenceCmd::Rm { id }) => done(c.remove_silence(&id).await, json_out, |r| {
            println!("removed {}", r.removed)
        }),
    }
}

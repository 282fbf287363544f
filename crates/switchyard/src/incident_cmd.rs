//! `switchyard incident`: incidents from the control plane — list, show,
//! open by hand, acknowledge, move the status, set the people's stages,
//! notes, severity, silences, durations over a period, and the postmortem.
//! Exit codes as `ctl`: 0 done, 1 refused (an invalid transition) or the
//! store failed, 2 bad input or unknown id, 3 control plane unreachable.

use std::path::PathBuf;
use std::process::ExitCode;

use http::Method;
use serde_json::{json, Value};

use crate::ctl_cmd::{block_on, exit_for, Ctl};

#[derive(clap::Args)]
pub struct Args {
    /// The control plane's URL.
    #[arg(long, env = "SWITCHYARD_URL", default_value = "http://127.0.0.1:7000")]
    url: String,
    /// Bearer token (or SWITCHYARD_TOKEN); needed to change anything.
    #[arg(long, env = "SWITCHYARD_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print the answer as JSON.
    #[arg(long, global = true)]
    json: bool,
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
        #[arg(long)]
        service: Option<String>,
    },
    /// One incident with its stages and timeline.
    Show { id: String },
    /// Open an incident by hand (joins the service's open one if any).
    Open {
        #[arg(long, default_value = "catalog")]
        service: String,
        #[arg(long)]
        title: String,
        /// SEV1 … SEV4; otherwise the rules decide.
        #[arg(long)]
        severity: Option<String>,
    },
    /// Acknowledge: a person has it.
    Ack {
        id: String,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Move the status: investigating, identified, mitigating, monitoring, resolved.
    Status {
        id: String,
        status: String,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Record a people's stage once resolved: analysed, shared, reviewed.
    Stage {
        id: String,
        stage: String,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Add a note to the timeline.
    Note { id: String, text: String },
    /// Set the severity by hand (the rules no longer change it).
    Severity {
        id: String,
        severity: String,
        #[arg(long)]
        reason: String,
    },
    /// TTD, time to acknowledge, TTM and TTR over the incidents of a period.
    Stats {
        /// How far back, e.g. `7d`, `24h`.
        #[arg(long, default_value = "30d")]
        since: String,
    },
    /// Write the postmortem (Markdown and plots) from what was recorded.
    Postmortem {
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
    List,
    Add {
        #[arg(long)]
        service: Option<String>,
        #[arg(long)]
        severity: Option<String>,
        #[arg(long)]
        scope_prefix: Option<String>,
        #[arg(long = "for")]
        for_: String,
        #[arg(long)]
        reason: String,
    },
    Rm {
        id: String,
    },
}

pub fn run(args: Args) -> ExitCode {
    let c = Ctl::new(&args.url, args.token.clone());
    block_on("incident", go(&c, args.cmd, args.json))
}

fn ms(v: &Value) -> String {
    v.as_u64()
        .map(|t| switchyard_model::time::human_utc(t as i64))
        .unwrap_or_else(|| "—".into())
}

fn fail(s: http::StatusCode, v: &Value, json_out: bool) -> ExitCode {
    if json_out {
        println!("{v}");
    } else {
        eprintln!("refused ({}):", s.as_u16());
        for r in v["reasons"].as_array().into_iter().flatten() {
            eprintln!("  {}", r.as_str().unwrap_or_default());
        }
    }
    exit_for(s)
}

fn print_incident(v: &Value) {
    println!(
        "{}  {}  {}  {}",
        v["id"].as_str().unwrap_or(""),
        v["severity"].as_str().unwrap_or(""),
        v["status"].as_str().unwrap_or(""),
        v["title"].as_str().unwrap_or("")
    );
    println!(
        "  severity reason: {}",
        v["severity_reason"].as_str().unwrap_or("")
    );
    println!(
        "  scopes: {}",
        v["scopes"]
            .as_array()
            .map(|a| a
                .iter()
                .filter_map(|x| x.as_str())
                .collect::<Vec<_>>()
                .join(", "))
            .unwrap_or_default()
    );
    println!(
        "  impact: {:.2} % of traffic, {} failed requests, routes {}",
        v["impact"]["traffic_share"].as_f64().unwrap_or(0.0) * 100.0,
        v["impact"]["failed"],
        v["impact"]["routes"]
    );
    println!("  stages:");
    for s in [
        "occurred",
        "detected",
        "notified",
        "acknowledged",
        "mitigated",
        "recovered",
        "analysed",
        "shared",
        "reviewed",
    ] {
        println!("    {s:<13} {}", ms(&v["stages"][s]));
    }
    println!("  timeline:");
    for e in v["timeline"].as_array().into_iter().flatten() {
        println!(
            "    {}  {:<16} {:<10} {}",
            ms(&e["at_ms"]),
            e["kind"].as_str().unwrap_or(""),
            e["who"].as_str().unwrap_or(""),
            e["text"].as_str().unwrap_or("")
        );
    }
}

async fn go(c: &Ctl, cmd: Cmd, json_out: bool) -> Result<ExitCode, String> {
    let post =
        |path: String, body: Value| async move { c.call(Method::POST, &path, Some(body)).await };
    let (s, v) = match cmd {
        Cmd::List { status, service } => {
            let mut q = format!("/v1/incidents?status={status}");
            if let Some(svc) = service {
                q.push_str(&format!("&service={svc}"));
            }
            let (s, v) = c.call(Method::GET, &q, None).await?;
            if s.is_success() && !json_out {
                println!(
                    "{:<28} {:<5} {:<13} {:<21} title",
                    "id", "sev", "status", "occurred"
                );
                for i in v["incidents"].as_array().into_iter().flatten() {
                    println!(
                        "{:<28} {:<5} {:<13} {:<21} {}",
                        i["id"].as_str().unwrap_or(""),
                        i["severity"].as_str().unwrap_or(""),
                        i["status"].as_str().unwrap_or(""),
                        ms(&i["stages"]["occurred"]),
                        i["title"].as_str().unwrap_or("")
                    );
                }
                return Ok(ExitCode::SUCCESS);
            }
            (s, v)
        }
        Cmd::Show { id } => {
            let (s, v) = c.call(Method::GET, &format!("/v1/incidents/{id}"), None).await?;
            if s.is_success() && !json_out {
                print_incident(&v);
                return Ok(ExitCode::SUCCESS);
            }
            (s, v)
        }
        Cmd::Open {
            service,
            title,
            severity,
        } => {
            post(
                "/v1/incidents".into(),
                json!({"service": service, "title": title, "severity": severity}),
            )
            .await?
        }
        Cmd::Ack { id, note } => post(format!("/v1/incidents/{id}/ack"), json!({"note": note})).await?,
        Cmd::Status { id, status, note } => {
            post(
                format!("/v1/incidents/{id}/status"),
                json!({"status": status, "note": note}),
            )
            .await?
        }
        Cmd::Stage { id, stage, note } => {
            post(
                format!("/v1/incidents/{id}/stage"),
                json!({"stage": stage, "note": note}),
            )
            .await?
        }
        Cmd::Note { id, text } => post(format!("/v1/incidents/{id}/note"), json!({"text": text})).await?,
        Cmd::Severity {
            id,
            severity,
            reason,
        } => {
            post(
                format!("/v1/incidents/{id}/severity"),
                json!({"severity": severity, "reason": reason}),
            )
            .await?
        }
        Cmd::Stats { since } => {
            let d = switchyard_control::api::parse_duration(&since).map_err(|e| e.to_string());
            let d = match d {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("switchyard incident: --since: {e}");
                    return Ok(ExitCode::from(2));
                }
            };
            let from = switchyard_control::plane::now_ms().saturating_sub(d.as_millis() as u64);
            let (s, v) = c
                .call(Method::GET, &format!("/v1/incidents/stats?from_ms={from}"), None)
                .await?;
            if s.is_success() && !json_out {
                println!("incidents: {}", v["incidents"]);
                for (k, name) in [
                    ("ttd_s", "time to detect"),
                    ("tta_s", "time to acknowledge"),
                    ("ttm_s", "time to mitigate"),
                    ("ttr_s", "time to recover"),
                ] {
                    match v[k].as_array() {
                        Some(a) => println!(
                            "{name:<20} median {:.1} s  mean {:.1} s  worst {:.1} s",
                            a[0].as_f64().unwrap_or(0.0),
                            a[1].as_f64().unwrap_or(0.0),
                            a[2].as_f64().unwrap_or(0.0)
                        ),
                        None => println!("{name:<20} —"),
                    }
                }
                return Ok(ExitCode::SUCCESS);
            }
            (s, v)
        }
        Cmd::Postmortem { id, out } => {
            let (s, v) = c.call(Method::GET, &format!("/v1/incidents/{id}"), None).await?;
            if !s.is_success() {
                return Ok(fail(s, &v, json_out));
            }
            let incident: switchyard_incident::Incident = serde_json::from_value(v)
                .map_err(|e| format!("the control plane sent an incident this version cannot read: {e}"))?;
            let path = switchyard_incident::postmortem::write(&incident, &out)
                .map_err(|e| format!("cannot write into {}: {e}", out.display()))?;
            if json_out {
                println!("{}", json!({"id": id, "postmortem": path}));
            } else {
                println!("postmortem of {id} written to {}", path.display());
            }
            return Ok(ExitCode::SUCCESS);
        }
        Cmd::Silence(SilenceCmd::List) => {
            let (s, v) = c.call(Method::GET, "/v1/silences", None).await?;
            if s.is_success() && !json_out {
                for x in v["silences"].as_array().into_iter().flatten() {
                    println!(
                        "{}  until {}  service {}  severity {}  by {}: {}",
                        x["id"].as_str().unwrap_or(""),
                        ms(&x["until_ms"]),
                        x["service"].as_str().unwrap_or("any"),
                        x["severity"].as_str().unwrap_or("any"),
                        x["created_by"].as_str().unwrap_or(""),
                        x["reason"].as_str().unwrap_or("")
                    );
                }
                return Ok(ExitCode::SUCCESS);
            }
            (s, v)
        }
        Cmd::Silence(SilenceCmd::Add {
            service,
            severity,
            scope_prefix,
            for_,
            reason,
        }) => {
            post(
                "/v1/silences".into(),
                json!({"service": service, "severity": severity, "scope_prefix": scope_prefix, "for": for_, "reason": reason}),
            )
            .await?
        }
        Cmd::Silence(SilenceCmd::Rm { id }) => c.call(Method::DELETE, &format!("/v1/silences/{id}"), None).await?,
    };
    if !s.is_success() {
        return Ok(fail(s, &v, json_out));
    }
    if json_out {
        println!("{v}");
    } else if v.get("timeline").is_some() {
        print_incident(&v);
    } else {
        println!("{v}");
    }
    Ok(exit_for(s))
}

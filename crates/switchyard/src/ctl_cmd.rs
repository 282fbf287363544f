//! `switchyard ctl`: the operator's one command against the control plane.
//! Every subcommand takes `--json`; exit codes: 0 done, 1 refused by a rule
//! or the store, 2 bad input or unknown target, 3 control plane unreachable.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

#[derive(clap::Args)]
pub struct CtlArgs {
    /// The control plane's URL.
    #[arg(long, env = "SWITCHYARD_URL", default_value = "http://127.0.0.1:7000")]
    url: String,
    /// Bearer token (or SWITCHYARD_TOKEN).
    #[arg(long, env = "SWITCHYARD_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print the answer as JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: CtlCmd,
}

#[derive(clap::Subcommand)]
enum CtlCmd {
    /// Regions, zones, weights, shifts and read-only state, as a table.
    Status,
    /// Shift a service away from a zone for a while (a lease that expires).
    Shift {
        zone: String,
        #[arg(long, default_value = "catalog")]
        service: String,
        #[arg(long = "for", default_value = "1h")]
        for_: String,
        #[arg(long)]
        reason: String,
        /// Past the safety rules (admin token; audited).
        #[arg(long)]
        force: bool,
    },
    /// End a shift.
    Unshift {
        zone: String,
        #[arg(long, default_value = "catalog")]
        service: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Move a service to one region; shows a preview first.
    Failover {
        service: String,
        #[arg(long)]
        to: String,
        #[arg(long, default_value = "")]
        reason: String,
        /// Do not ask; for scripts.
        #[arg(long)]
        yes: bool,
        #[arg(long)]
        force: bool,
    },
    /// Every region of a service back in.
    Failback {
        service: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Read-only mode on or off, for a service or one region of it.
    Readonly {
        service: String,
        #[arg(value_parser = ["on", "off"])]
        state: String,
        #[arg(long)]
        region: Option<String>,
        #[arg(long)]
        reason: String,
    },
    /// The audit log: who changed what, why, accepted or refused by which rule.
    History {
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
}

pub(crate) struct Ctl {
    pub(crate) url: String,
    pub(crate) token: Option<String>,
    pub(crate) client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl Ctl {
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(StatusCode, Value), String> {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.url.trim_end_matches('/')));
        if let Some(t) = &self.token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        let req = b
            .header("content-type", "application/json")
            .body(Full::new(
                body.map(|v| Bytes::from(v.to_string())).unwrap_or_default(),
            ))
            .map_err(|e| e.to_string())?;
        let resp =
            tokio::time::timeout(std::time::Duration::from_secs(10), self.client.request(req))
                .await
                .map_err(|_| format!("{} did not answer within 10 s", self.url))?
                .map_err(|e| format!("cannot reach the control plane at {}: {e}", self.url))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| json!({"raw": String::from_utf8_lossy(&bytes)}));
        Ok((status, v))
    }
}

pub(crate) fn exit_for(status: StatusCode) -> ExitCode {
    match status.as_u16() {
        200..=299 => ExitCode::SUCCESS,
        400 | 404 => ExitCode::from(2),
        _ => ExitCode::FAILURE,
    }
}

fn show(json_out: bool, status: StatusCode, v: &Value) -> ExitCode {
    if json_out {
        println!("{v}");
    } else if status.is_success() {
        println!("done: version {}", v["version"]);
    } else {
        eprintln!("refused ({}):", status.as_u16());
        for r in v["reasons"].as_array().into_iter().flatten() {
            eprintln!("  {}", r.as_str().unwrap_or_default());
        }
    }
    exit_for(status)
}

pub fn ctl(args: CtlArgs) -> ExitCode {
    let c = Ctl::new(&args.url, args.token.clone());
    block_on("ctl", run(&c, args.cmd, args.json))
}

impl Ctl {
    pub(crate) fn new(url: &str, token: Option<String>) -> Ctl {
        Ctl {
            url: url.to_string(),
            token,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }
}

/// Runs a command's work; an error from it means the control plane could
/// not be reached (exit 3).
pub(crate) fn block_on(
    what: &str,
    work: impl std::future::Future<Output = Result<ExitCode, String>>,
) -> ExitCode {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(work) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("switchyard {what}: {e}");
            ExitCode::from(3)
        }
    }
}

async fn run(c: &Ctl, cmd: CtlCmd, json_out: bool) -> Result<ExitCode, String> {
    Ok(match cmd {
        CtlCmd::Status => {
            let (s, v) = c.call(Method::GET, "/v1/status", None).await?;
            if json_out || !s.is_success() {
                println!("{v}");
                return Ok(exit_for(s));
            }
            println!("controls version {}", v["version"]);
            for svc in v["services"].as_array().into_iter().flatten() {
                println!(
                    "service {}  read-only {}  shed level {}",
                    svc["service"].as_str().unwrap_or(""),
                    svc["read_only"],
                    svc["shed_level"]
                );
                println!(
                    "  {:<10} {:<6} {:>6} {:>8} {:>5} | {:<12} {:>6} {:>9}  shift",
                    "region", "state", "weight", "failover", "floor", "zone", "weight", "instances"
                );
                for r in svc["regions"].as_array().into_iter().flatten() {
                    for (i, z) in r["zones"].as_array().into_iter().flatten().enumerate() {
                        let left = if i == 0 {
                            format!(
                                "{:<10} {:<6} {:>6} {:>8} {:>5}",
                                r["region"].as_str().unwrap_or(""),
                                r["state"].as_str().unwrap_or(""),
                                r["weight"].to_string(),
                                r["failover"].to_string(),
                                r["floor"].to_string()
                            )
                        } else {
                            " ".repeat(39)
                        };
                        let shift = match z["shift_expires_at_ms"].as_u64() {
                            Some(t) => format!(
                                "until {} s from now ({})",
                                t.saturating_sub(switchyard_control::plane::now_ms()) / 1000,
                                z["shift_reason"].as_str().unwrap_or("")
                            ),
                            None => "-".into(),
                        };
                        println!(
                            "  {left} | {:<12} {:>6} {:>9}  {shift}",
                            z["zone"].as_str().unwrap_or(""),
                            z["weight"].to_string(),
                            z["instances"].to_string()
                        );
                    }
                }
            }
            ExitCode::SUCCESS
        }
        CtlCmd::Shift {
            zone,
            service,
            for_,
            reason,
            force,
        } => {
            let (s, v) = c
                .call(Method::POST, "/v1/shift", Some(json!({"service": service, "zone": zone, "for": for_, "reason": reason, "force": force})))
                .await?;
            show(json_out, s, &v)
        }
        CtlCmd::Unshift {
            zone,
            service,
            reason,
        } => {
            let (s, v) = c
                .call(
                    Method::DELETE,
                    &format!("/v1/shift/{service}/{zone}"),
                    Some(json!({"reason": reason})),
                )
                .await?;
            show(json_out, s, &v)
        }
        CtlCmd::Failover {
            service,
            to,
            reason,
            yes,
            force,
        } => {
            let (s, preview) = c
                .call(
                    Method::POST,
                    "/v1/failover",
                    Some(json!({"service": service, "to": to, "preview": true})),
                )
                .await?;
            if !s.is_success() {
                return Ok(show(json_out, s, &preview));
            }
            if !json_out {
                println!(
                    "fail {service} over to {to}: {} of {} instances would serve ({:.0} %)",
                    preview["serving_instances_after"],
                    preview["total_instances"],
                    preview["capacity_after"].as_f64().unwrap_or(0.0) * 100.0
                );
                let refusals = preview["refusals"].as_array().cloned().unwrap_or_default();
                if refusals.is_empty() {
                    println!("  every safety rule allows it");
                }
                for r in &refusals {
                    println!(
                        "  {} refuses: {}",
                        r["rule"].as_str().unwrap_or(""),
                        r["message"].as_str().unwrap_or("")
                    );
                }
            }
            if !yes {
                if !std::io::stdin().is_terminal() {
                    if json_out {
                        println!("{preview}");
                    }
                    eprintln!("not confirmed: add --yes to fail over without asking");
                    return Ok(ExitCode::from(2));
                }
                print!("proceed? [y/N] ");
                let _ = std::io::stdout().flush();
                let mut answer = String::new();
                let _ = std::io::stdin().read_line(&mut answer);
                if !matches!(answer.trim(), "y" | "yes") {
                    println!("nothing changed");
                    return Ok(ExitCode::SUCCESS);
                }
            }
            let (s, v) = c
                .call(
                    Method::POST,
                    "/v1/failover",
                    Some(json!({"service": service, "to": to, "reason": reason, "force": force})),
                )
                .await?;
            show(json_out, s, &v)
        }
        CtlCmd::Failback { service, reason } => {
            let (s, v) = c
                .call(
                    Method::POST,
                    "/v1/failback",
                    Some(json!({"service": service, "reason": reason})),
                )
                .await?;
            show(json_out, s, &v)
        }
        CtlCmd::Readonly {
            service,
            state,
            region,
            reason,
        } => {
            let (s, v) = c
                .call(Method::POST, "/v1/readonly", Some(json!({"service": service, "region": region, "on": state == "on", "reason": reason})))
                .await?;
            show(json_out, s, &v)
        }
        CtlCmd::History { limit } => {
            let (s, v) = c
                .call(Method::GET, &format!("/v1/history?limit={limit}"), None)
                .await?;
            if json_out || !s.is_success() {
                println!("{v}");
                return Ok(exit_for(s));
            }
            for e in v["entries"].as_array().into_iter().flatten() {
                println!(
                    "{}  {:<10} {:<8} {}  — {}{}",
                    e["at_ms"],
                    e["who"].as_str().unwrap_or(""),
                    if e["accepted"] == true {
                        "accepted"
                    } else {
                        "REFUSED"
                    },
                    e["action"].as_str().unwrap_or(""),
                    e["reason"].as_str().unwrap_or(""),
                    e["rule"]
                        .as_str()
                        .map(|r| format!(" [{r}]"))
                        .unwrap_or_default()
                );
            }
            ExitCode::SUCCESS
        }
    })
}

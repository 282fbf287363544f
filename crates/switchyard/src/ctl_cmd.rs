//! `switchyard ctl`: the operator's one command against the control plane.
//! Every subcommand takes `--json`, `--url`, `--token` and `--ca-file` (before or after
//! it); text output shows times in UTC. Exit codes: 0 done (or nothing to
//! change), 1 refused by the server (a rule, a token, the store), 2 bad
//! input or unknown target, 3 control plane unreachable.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;
use switchyard_api::{Client, ClientError, OpRequest};
use switchyard_model::ops::human_duration;
use switchyard_model::Op;

/// Where the control plane is and how to talk to it: shared by every
/// command that is a client of its API. Global, so they may come before or
/// after the subcommand (`ctl status --json`, `ctl --json status`).
#[derive(clap::Args)]
pub(crate) struct Endpoint {
    /// The control plane's URL (or SWITCHYARD_URL).
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_URL",
        default_value = "http://127.0.0.1:7000"
    )]
    url: String,
    /// Bearer token (or SWITCHYARD_TOKEN); needed to change anything and
    /// to preview a change.
    #[arg(long, global = true, env = "SWITCHYARD_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A private CA (PEM) to trust for an https:// control plane, besides
    /// the shipped roots (or SWITCHYARD_CA_FILE).
    #[arg(long, global = true, env = "SWITCHYARD_CA_FILE")]
    ca_file: Option<String>,
    /// Print the answer (or the error body) as JSON instead of text.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

impl Endpoint {
    /// The client, or exit code 2 when the CA file cannot be used.
    pub(crate) fn client(&self) -> Result<Client, ExitCode> {
        let ca = match &self.ca_file {
            None => Vec::new(),
            Some(p) => switchyard_api::tls::read_ca_file(p).map_err(|e| {
                eprintln!("--ca-file: {e}");
                ExitCode::from(2)
            })?,
        };
        Client::with_roots(&self.url, self.token.clone(), Duration::from_secs(10), &ca).map_err(
            |e| {
                eprintln!("--ca-file: {e}");
                ExitCode::from(2)
            },
        )
    }
}

#[derive(clap::Args)]
pub struct CtlArgs {
    #[command(flatten)]
    endpoint: Endpoint,
    #[command(subcommand)]
    cmd: CtlCmd,
}

#[derive(clap::Subcommand)]
enum CtlCmd {
    /// Regions, zones, weights, shifts and read-only state, as a table.
    Status,
    /// Shift a service away from a zone for a while (a lease that expires).
    Shift {
        /// The zone to take out of service.
        zone: String,
        /// The service; required when the control plane knows several.
        #[arg(long)]
        service: Option<String>,
        /// How long: 90s, 30m, 1h, 2h30m, 3d (at most the rules' max_shift_ms).
        #[arg(long = "for", default_value = "1h", value_parser = human_duration::parse)]
        for_: Duration,
        /// Why, for the audit log and every edge's state (at most 1 KiB).
        #[arg(long)]
        reason: String,
        /// Past the safety rules (admin token; audited).
        #[arg(long)]
        force: bool,
    },
    /// End a shift.
    Unshift {
        /// The shifted zone to bring back.
        zone: String,
        /// The service; required when the control plane knows several.
        #[arg(long)]
        service: Option<String>,
        /// Why, for the audit log.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Send a share of a shifted zone's traffic back as a canary, keeping
    /// the shift's lease; `unshift` once the canary looks healthy.
    Canary {
        /// The shifted zone.
        zone: String,
        /// The service; required when the control plane knows several.
        #[arg(long)]
        service: Option<String>,
        /// Share of the zone's traffic, above 0 and at most 50.
        #[arg(long, default_value_t = 5.0)]
        percent: f64,
        /// Why, for the audit log.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Move a service to one region; shows a preview first.
    Failover {
        /// The service to move.
        service: String,
        /// The region that keeps serving it.
        #[arg(long)]
        to: String,
        /// Why, for the audit log.
        #[arg(long, default_value = "")]
        reason: String,
        /// Do not ask; for scripts.
        #[arg(long)]
        yes: bool,
        /// Past the safety rules (admin token; audited).
        #[arg(long)]
        force: bool,
    },
    /// Every region of a service back in.
    Failback {
        /// The service to bring back to every region.
        service: String,
        /// Why, for the audit log.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Read-only mode on or off, for a service or one region of it.
    Readonly {
        /// The service whose writes are turned away.
        service: String,
        /// `on` or `off`.
        #[arg(value_parser = ["on", "off"])]
        state: String,
        /// Only this region (default: the whole service).
        #[arg(long)]
        region: Option<String>,
        /// Why, for the audit log.
        #[arg(long)]
        reason: String,
    },
    /// The audit log: who changed what, why, accepted or refused by which rule.
    History {
        /// How many entries, newest last (without --since/--until/--after).
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Every entry at or after this time (RFC 3339 in UTC, or Unix
        /// ms), fetched page by page.
        #[arg(long, value_parser = instant)]
        since: Option<u64>,
        /// Every entry at or before this time (RFC 3339 in UTC, or Unix ms).
        #[arg(long, value_parser = instant)]
        until: Option<u64>,
        /// Every entry after this audit sequence number (0: all of them).
        #[arg(long)]
        after: Option<u64>,
        /// Only entries of this service (with --limit).
        #[arg(long, conflicts_with_all = ["since", "until", "after"])]
        service: Option<String>,
        /// Only entries by this actor: a kind (person, playbook, drill,
        /// rollout) or a name (with --limit).
        #[arg(long, conflicts_with_all = ["since", "until", "after"])]
        actor: Option<String>,
        /// Only entries of this kind: change, recommendation,
        /// verification, dns_push, rollout (with --limit).
        #[arg(long, conflicts_with_all = ["since", "until", "after"])]
        kind: Option<String>,
    },
}

/// Prints a failed call and says which kind of failure it was: the error
/// body as JSON with `--json`; otherwise the status, the server's error
/// code and every reason it gave (or why it could not be reached).
pub(crate) fn failed(what: &str, json_out: bool, e: &ClientError) -> ExitCode {
    match (json_out, e.body()) {
        (true, Some(b)) => println!("{}", serde_json::to_string(b).expect("serializable")),
        (_, Some(b)) => {
            let status = e.status().unwrap_or(0);
            let kind = match status {
                400 | 413 => "bad input",
                401 | 403 => "not allowed",
                404 => "not found",
                409 => "refused",
                _ => "failed",
            };
            eprintln!("switchyard {what}: {kind} ({status} {}):", b.error);
            for r in &b.reasons {
                eprintln!("  {r}");
            }
        }
        (_, None) => eprintln!("switchyard {what}: {e}"),
    }
    ExitCode::from(e.exit_code())
}

/// The service a command acts on: the one given, or the control plane's
/// only one. With several and none given, a guess could shift the wrong
/// service, so it is bad input (exit 2) naming the choices.
pub(crate) async fn service_or_only(
    c: &Client,
    what: &str,
    json_out: bool,
    given: Option<String>,
) -> Result<String, ExitCode> {
    if let Some(s) = given {
        return Ok(s);
    }
    let status = c.status().await.map_err(|e| failed(what, json_out, &e))?;
    match status.services.as_slice() {
        [only] => Ok(only.service.clone()),
        all => {
            let names: Vec<&str> = all.iter().map(|s| s.service.as_str()).collect();
            eprintln!(
                "switchyard {what}: --service is required: the control plane has {} services ({})",
                names.len(),
                names.join(", ")
            );
            Err(ExitCode::from(2))
        }
    }
}

/// Prints an answer as JSON.
/// A time as people read it (UTC), or `—` for none.
pub(crate) fn utc(t: Option<u64>) -> String {
    t.map(|t| switchyard_model::time::human_utc(t as i64))
        .unwrap_or_else(|| "—".into())
}

/// Prints an answer of `switchyard WHAT`: as JSON, or as people read it;
/// a failure as [`failed`] does.
pub(crate) fn report<T: Serialize>(
    what: &str,
    r: Result<T, ClientError>,
    json_out: bool,
    show: impl FnOnce(&T),
) -> ExitCode {
    match r {
        Ok(v) if json_out => {
            print_json(&v);
            ExitCode::SUCCESS
        }
        Ok(v) => {
            show(&v);
            ExitCode::SUCCESS
        }
        Err(e) => failed(what, json_out, &e),
    }
}

pub(crate) fn print_json<T: Serialize>(v: &T) {
    println!("{}", serde_json::to_string(v).expect("serializable"));
}

pub fn ctl(args: CtlArgs) -> ExitCode {
    let c = match args.endpoint.client() {
        Ok(c) => c,
        Err(code) => return code,
    };
    block_on(run(&c, args.cmd, args.endpoint.json))
}

/// Runs a command's work on a small runtime of its own.
pub(crate) fn block_on(work: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(work)
}

/// One operation: `done: version N`, or why not.
async fn apply(c: &Client, req: OpRequest, json_out: bool) -> ExitCode {
    // One key per command: a try whose answer was lost is sent again and
    // applied at most once.
    let key = format!(
        "ctl-{}-{}",
        std::process::id(),
        switchyard_model::time::now_ms()
    );
    match c.apply_once(&req, &key, 3).await {
        Ok(a) if json_out => {
            print_json(&a);
            ExitCode::SUCCESS
        }
        Ok(a) if a.changed => {
            println!("done: version {}", a.version);
            ExitCode::SUCCESS
        }
        Ok(a) => {
            println!("nothing to change: version {} already says so", a.version);
            ExitCode::SUCCESS
        }
        Err(e) => failed("ctl", json_out, &e),
    }
}

async fn run(c: &Client, cmd: CtlCmd, json_out: bool) -> ExitCode {
    match cmd {
        CtlCmd::Status => match c.status().await {
            Ok(v) if json_out => {
                print_json(&v);
                ExitCode::SUCCESS
            }
            Ok(v) => {
                print_status(&v);
                ExitCode::SUCCESS
            }
            Err(e) => failed("ctl", json_out, &e),
        },
        CtlCmd::Shift {
            zone,
            service,
            for_,
            reason,
            force,
        } => {
            let service = match service_or_only(c, "ctl", json_out, service).await {
                Ok(s) => s,
                Err(code) => return code,
            };
            let op = Op::Shift {
                service,
                zone,
                for_,
            };
            apply(c, OpRequest::new(op, reason).force(force), json_out).await
        }
        CtlCmd::Unshift {
            zone,
            service,
            reason,
        } => {
            let service = match service_or_only(c, "ctl", json_out, service).await {
                Ok(s) => s,
                Err(code) => return code,
            };
            apply(
                c,
                OpRequest::new(Op::Unshift { service, zone }, reason),
                json_out,
            )
            .await
        }
        CtlCmd::Canary {
            zone,
            service,
            percent,
            reason,
        } => {
            let service = match service_or_only(c, "ctl", json_out, service).await {
                Ok(s) => s,
                Err(code) => return code,
            };
            let op = Op::ZoneCanary {
                service,
                zone,
                percent,
            };
            apply(c, OpRequest::new(op, reason), json_out).await
        }
        CtlCmd::Failover {
            service,
            to,
            reason,
            yes,
            force,
        } => {
            let req = OpRequest::new(Op::Failover { service, to }, reason).force(force);
            let preview = match c.preview(&req).await {
                Ok(p) => p,
                Err(e) => return failed("ctl", json_out, &e),
            };
            if !json_out {
                println!(
                    "{}: {} of {} instances would serve ({:.0} %)",
                    preview.op,
                    preview.serving_instances_after,
                    preview.total_instances,
                    preview.capacity_after * 100.0
                );
                if preview.refusals.is_empty() {
                    println!("  every safety rule allows it");
                }
                for r in &preview.rules {
                    let verdict = if r.passed { "passes" } else { "refuses" };
                    println!("  {} {verdict}: {}", r.rule, r.message);
                }
                for line in dns_lines(&preview.dns) {
                    println!("{line}");
                }
            }
            if !yes {
                if !std::io::stdin().is_terminal() {
                    if json_out {
                        print_json(&preview);
                    }
                    eprintln!("not confirmed: add --yes to fail over without asking");
                    return ExitCode::from(2);
                }
                print!("proceed? [y/N] ");
                let _ = std::io::stdout().flush();
                let mut answer = String::new();
                let _ = std::io::stdin().read_line(&mut answer);
                if !matches!(answer.trim(), "y" | "yes") {
                    println!("nothing changed");
                    return ExitCode::SUCCESS;
                }
            }
            apply(c, req, json_out).await
        }
        CtlCmd::Failback { service, reason } => {
            apply(
                c,
                OpRequest::new(Op::Failback { service }, reason),
                json_out,
            )
            .await
        }
        CtlCmd::Readonly {
            service,
            state,
            region,
            reason,
        } => {
            let op = Op::ReadOnly {
                service,
                region,
                on: state == "on",
            };
            apply(c, OpRequest::new(op, reason), json_out).await
        }
        CtlCmd::History {
            limit: _,
            since,
            until,
            after,
            ..
        } if since.is_some() || until.is_some() || after.is_some() => {
            let mut range = switchyard_api::HistoryRange {
                since_ms: since,
                until_ms: until,
                after: after.unwrap_or(0),
                limit: 1000,
            };
            let mut all = Vec::new();
            loop {
                match c.history_page(&range).await {
                    Ok(p) => {
                        if !json_out {
                            for r in &p.records {
                                print_entry(&r.entry);
                            }
                        } else {
                            all.extend(p.records);
                        }
                        match p.next_after {
                            Some(n) => range.after = n,
                            None => break,
                        }
                    }
                    Err(e) => return failed("ctl", json_out, &e),
                }
            }
            if json_out {
                print_json(&switchyard_api::HistoryPage {
                    records: all,
                    next_after: None,
                });
            }
            ExitCode::SUCCESS
        }
        CtlCmd::History {
            limit,
            service,
            actor,
            kind,
            ..
        } => match c
            .history_where(
                limit,
                &switchyard_api::HistoryFilter {
                    service,
                    actor,
                    kind,
                },
            )
            .await
        {
            Ok(h) if json_out => {
                print_json(&h);
                ExitCode::SUCCESS
            }
            Ok(h) => {
                for e in &h.entries {
                    print_entry(e);
                }
                ExitCode::SUCCESS
            }
            Err(e) => failed("ctl", json_out, &e),
        },
    }
}

fn print_entry(e: &switchyard_model::AuditEntry) {
    println!(
        "{}  {:<10} {:<8} {}  — {}{}",
        switchyard_model::time::rfc3339_ms(e.at_ms as i64),
        e.actor.to_string(),
        if e.accepted { "accepted" } else { "REFUSED" },
        e.action,
        e.reason,
        e.rule
            .as_ref()
            .map(|r| format!(" [{r}]"))
            .unwrap_or_default()
    );
}

/// `--since` / `--until`: Unix ms or RFC 3339, checked before any request.
fn instant(s: &str) -> Result<u64, String> {
    switchyard_model::time::parse_instant(s)
}

fn print_status(v: &switchyard_api::StatusView) {
    println!("controls version {}", v.version);
    let now = switchyard_model::time::now_ms();
    for svc in &v.services {
        println!(
            "service {}  read-only {}  shed level {}",
            svc.service,
            on_off(svc.read_only),
            svc.shed_level
        );
        println!(
            "  {:<10} {:<6} {:>6} {:>8} {:>9} {:>5} | {:<12} {:>6} {:>9}  shift",
            "region",
            "state",
            "weight",
            "failover",
            "read-only",
            "floor",
            "zone",
            "weight",
            "instances"
        );
        for r in &svc.regions {
            for (i, z) in r.zones.iter().enumerate() {
                let left = if i == 0 {
                    let state = serde_json::to_value(r.state).expect("serializable");
                    format!(
                        "{:<10} {:<6} {:>6} {:>8} {:>9} {:>5}",
                        r.region,
                        state.as_str().unwrap_or(""),
                        r.weight,
                        on_off(r.failover),
                        on_off(r.read_only),
                        r.floor
                    )
                } else {
                    " ".repeat(49)
                };
                let shift = match z.shift_expires_at_ms {
                    Some(t) => format!(
                        "until {} (in {}){}",
                        switchyard_model::time::human_utc(t as i64),
                        human_duration::format(Duration::from_secs(t.saturating_sub(now) / 1000)),
                        z.shift_reason
                            .as_deref()
                            .filter(|r| !r.is_empty())
                            .map(|r| format!(": {r}"))
                            .unwrap_or_default()
                    ),
                    None => "-".into(),
                };
                println!(
                    "  {left} | {:<12} {:>6} {:>9}  {shift}",
                    z.zone, z.weight, z.instances
                );
            }
        }
    }
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

/// The preview's DNS part: which names' answers move, for which clients,
/// and which regions drop out of them.
fn dns_lines(moves: &[switchyard_api::DnsMove]) -> Vec<String> {
    if moves.is_empty() {
        return Vec::new();
    }
    let mut out = vec!["  DNS answers move too:".to_string()];
    for m in moves {
        let clients = match &m.client_region {
            Some(r) => format!("clients in {r}"),
            None => "clients no geo prefix places, and pushed zones".to_string(),
        };
        let dropped = if m.dropped.is_empty() {
            String::new()
        } else {
            format!(" ({} drops out)", m.dropped.join(", "))
        };
        out.push(format!(
            "    {} for {clients}: {} -> {}{dropped}",
            m.names.join(", "),
            m.before.join(" + "),
            m.after.join(" + "),
        ));
    }
    out
}

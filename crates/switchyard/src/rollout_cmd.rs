//! `switchyard rollout`: roll a new config out in waves that watch users
//! and roll back on their own — start (or only plan), status, history,
//! pause, resume, abort. Exit codes as `ctl`: 0 done, 1 refused (risky
//! differences not acknowledged, another rollout in the way, a transition
//! not allowed), 2 bad input or unknown id, 3 control plane unreachable.
//! `status --wait` exits 0 when the rollout succeeded and 1 when it was
//! rolled back, aborted or paused.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use switchyard_api::rollout::{RolloutAction, RolloutPlan, StartRollout};
use switchyard_api::{Client, ClientError};
use switchyard_model::rollout::{Rollout, RolloutState};

use crate::ctl_cmd::{block_on, failed, print_json, report, utc, Endpoint};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    endpoint: Endpoint,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Subcommand)]
enum Cmd {
    /// Roll FILE out: checked, diffed against the running config, then
    /// wave by wave with a canary analysis at each.
    Start {
        /// The new config file.
        file: PathBuf,
        /// Why it goes out, for the audit log.
        #[arg(long)]
        reason: String,
        /// Acknowledge a risky kind of difference (repeatable):
        /// capacity_removed, floor_lowered, …
        #[arg(long = "accept", value_name = "KIND")]
        accept: Vec<String>,
        /// The canary zone (default: the first zone of the first region).
        #[arg(long)]
        canary: Option<String>,
        /// Bake time per wave, e.g. 90s, 5m.
        #[arg(long)]
        bake: Option<String>,
        /// Show the differences and the waves; start nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// One rollout (default: the newest) with its waves, verdicts and steps.
    Status {
        id: Option<String>,
        /// Follow it until it ends.
        #[arg(long)]
        wait: bool,
    },
    /// Every rollout, newest first.
    History,
    /// Hold the rollout where it is; members keep what they run.
    Pause { id: String },
    /// Carry on (the wave's bake starts again).
    Resume { id: String },
    /// Stop it and put every member back on the old config.
    Abort { id: String },
}

pub fn run(args: Args) -> ExitCode {
    let c = match args.endpoint.client() {
        Ok(c) => c,
        Err(code) => return code,
    };
    block_on(go(&c, args.cmd, args.endpoint.json))
}

fn print_plan(p: &RolloutPlan) {
    println!("{} → {}", p.from, p.to);
    if p.differences.is_empty() {
        println!("  no risky differences");
    }
    for d in &p.differences {
        let ack = if d.kind.needs_ack() {
            "needs --accept"
        } else {
            "risky"
        };
        println!(
            "  {:<18} {:<14} {}: {} → {} ({})",
            d.kind.as_str(),
            ack,
            d.path,
            d.before,
            d.after,
            d.why
        );
    }
    println!("  waves (bake {} s each):", p.settings.bake_ms / 1000);
    for (i, w) in p.waves.iter().enumerate() {
        println!("    {}. {:<20} {}", i + 1, w.name, w.members.join(", "));
    }
    if !p.needs_accept.is_empty() {
        println!(
            "  to start it: --accept {}",
            p.needs_accept.join(" --accept ")
        );
    }
}

fn print_rollout(r: &Rollout) {
    println!(
        "{}  {}  {} → {}  by {}: {}",
        r.id,
        r.state.as_str(),
        r.from,
        r.to,
        r.by,
        r.reason
    );
    if let Some(w) = &r.waiting_for {
        println!("  now: {w}");
    }
    for (i, w) in r.waves.iter().enumerate() {
        let mark = if i < r.wave || r.state == RolloutState::Succeeded {
            "done"
        } else if i == r.wave && !r.state.is_done() {
            "now"
        } else {
            ""
        };
        println!(
            "  wave {}. {:<20} {:<5} {}",
            i + 1,
            w.name,
            mark,
            w.members.join(", ")
        );
    }
    for v in &r.verdicts {
        println!(
            "  verdict wave {}: {} against {}: {}",
            v.wave + 1,
            v.verdict.as_str(),
            v.baseline,
            v.reason
        );
    }
    if let Some(i) = &r.incident {
        println!("  incident: {i}");
    }
    println!("  steps:");
    for s in &r.steps {
        println!("    {}  {}", utc(Some(s.at_ms)), s.text);
    }
}

fn answer<T: serde::Serialize>(
    r: Result<T, ClientError>,
    json_out: bool,
    show: impl FnOnce(&T),
) -> ExitCode {
    report("rollout", r, json_out, show)
}

async fn go(c: &Client, cmd: Cmd, json_out: bool) -> ExitCode {
    match cmd {
        Cmd::Start {
            file,
            reason,
            accept,
            canary,
            bake,
            dry_run,
        } => {
            let config = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("switchyard rollout: cannot read {}: {e}", file.display());
                    return ExitCode::from(2);
                }
            };
            let req = StartRollout {
                config,
                accept,
                reason,
                canary,
                bake,
                dry_run,
            };
            if dry_run {
                return answer(c.plan_rollout(&req).await, json_out, print_plan);
            }
            answer(c.start_rollout(&req).await, json_out, |r| {
                println!("rollout {} started", r.id);
                print_rollout(r)
            })
        }
        Cmd::Status { id, wait } => {
            let id = match id {
                Some(id) => id,
                None => match c.rollouts().await {
                    Ok(l) => match l.rollouts.first() {
                        Some(r) => r.id.clone(),
                        None => {
                            eprintln!("switchyard rollout: no rollout yet");
                            return ExitCode::from(2);
                        }
                    },
                    Err(e) => return failed("rollout", json_out, &e),
                },
            };
            if !wait {
                return answer(c.rollout(&id).await, json_out, print_rollout);
            }
            // Waves done out of all, and what it waits for now: a bar on a
            // terminal, a line per change in a log, nothing with --json.
            use std::io::IsTerminal;
            let bar = (!json_out && std::io::stderr().is_terminal()).then(|| {
                let b = indicatif::ProgressBar::new(0);
                b.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{prefix} [{bar:20}] {pos}/{len} waves {msg}",
                    )
                    .expect("a valid template")
                    .progress_chars("=> "),
                );
                b.set_prefix(id.clone());
                b
            });
            let mut last = String::new();
            loop {
                let r = match c.rollout(&id).await {
                    Ok(r) => r,
                    Err(e) => return failed("rollout", json_out, &e),
                };
                let now = r.waiting_for.clone().unwrap_or_default();
                match &bar {
                    Some(b) => {
                        b.set_length(r.waves.len() as u64);
                        b.set_position(r.wave.min(r.waves.len()) as u64);
                        b.set_message(now);
                    }
                    None if !json_out && now != last && !now.is_empty() => {
                        eprintln!("{}  {now}", utc(Some(switchyard_model::time::now_ms())));
                        last = now;
                    }
                    None => {}
                }
                if r.state.is_done() || r.state == RolloutState::Paused {
                    if let Some(b) = &bar {
                        b.finish_and_clear();
                    }
                    let ok = r.state == RolloutState::Succeeded;
                    if json_out {
                        print_json(&r);
                    } else {
                        print_rollout(&r);
                    }
                    return if ok {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    };
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        Cmd::History => answer(c.rollouts().await, json_out, |l| {
            println!(
                "{:<6} {:<12} {:<21} {:<20} {:<20} reason",
                "id", "state", "started", "from", "to"
            );
            for r in &l.rollouts {
                println!(
                    "{:<6} {:<12} {:<21} {:<20} {:<20} {}",
                    r.id,
                    r.state.as_str(),
                    utc(Some(r.created_ms)),
                    r.from,
                    r.to,
                    r.reason
                );
            }
        }),
        Cmd::Pause { id } => answer(
            c.rollout_action(&id, RolloutAction::Pause).await,
            json_out,
            print_rollout,
        ),
        Cmd::Resume { id } => answer(
            c.rollout_action(&id, RolloutAction::Resume).await,
            json_out,
            print_rollout,
        ),
        Cmd::Abort { id } => answer(
            c.rollout_action(&id, RolloutAction::Abort).await,
            json_out,
            print_rollout,
        ),
    }
}

//! `switchyard`: one binary, one subcommand per part.
#![forbid(unsafe_code)]

mod backend;
mod ctl_cmd;
mod detect_cmd;
mod incident_cmd;
mod lab_cmd;
mod load;
mod propagation;
mod rollout_cmd;
mod sla_cmd;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

// Many small short-lived allocations per proxied request: mimalloc spends
// noticeably less CPU on them than the system allocator (see docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "Keeps a multi-region service serving when part of it fails"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Exit when standard input closes: a supervisor that dies takes its
    /// children with it, even under kill -9.
    #[arg(long, global = true, hide = true)]
    exit_on_stdin_eof: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check a config file and print every problem; exit 2 if it is invalid.
    Validate {
        file: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run the edge (data plane) of one zone.
    Edge {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        zone: String,
        /// Listen here instead of the zone's `edge` address.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Serve TLS here instead of the zone's `edge_tls` address (needs
        /// `[edge.tls]`).
        #[arg(long)]
        listen_tls: Option<SocketAddr>,
        /// Serve the admin API here instead of the zone's `admin` address.
        #[arg(long)]
        admin: Option<SocketAddr>,
        /// Proxy worker threads (default: one per core).
        #[arg(long)]
        workers: Option<usize>,
        /// Record no per-request metrics, signals or outlier state (so no
        /// outlier ejection and nothing for detection). Exists only to
        /// measure what observation costs; never for production.
        #[arg(long)]
        without_observation: bool,
    },
    /// Run an authoritative DNS server (`[[dns.server]]`): it answers each
    /// service's public name with the edges that should get the client.
    Dns {
        #[arg(long)]
        config: PathBuf,
        /// The `[[dns.server]]` to run (may be left out when there is one).
        #[arg(long)]
        name: Option<String>,
        /// Listen here (UDP and TCP) instead of the server's `listen`
        /// addresses; may be given several times.
        #[arg(long)]
        listen: Vec<SocketAddr>,
        /// Serve the admin API here instead of the server's `admin` address.
        #[arg(long)]
        admin: Option<SocketAddr>,
    },
    /// Run a simple HTTP backend (a stand-in service instance).
    Backend(backend::Args),
    /// The whole topology on this machine: `lab up`, `lab link`, and the
    /// lab's own processes.
    #[command(subcommand)]
    Lab(lab_cmd::LabCmd),
    /// Run a chaos drill on the lab and report what users felt.
    Drill(lab_cmd::DrillArgs),
    /// Run the control plane; `control backup` and `control restore` copy
    /// its store to a file and back.
    #[command(subcommand_negates_reqs = true, args_conflicts_with_subcommands = true)]
    Control {
        /// The config whose `[control]` section names the store and listen address.
        #[arg(long, required = true)]
        config: Option<PathBuf>,
        /// Make this store's controls replace what the edges hold when it is
        /// behind them (an empty, restored or other store). Audited; without
        /// it such a plane publishes nothing and refuses every change.
        #[arg(long)]
        adopt: bool,
        #[command(subcommand)]
        store: Option<StoreCmd>,
    },
    /// The operator's one command: status, shift, failover, read-only, history.
    Ctl(ctl_cmd::CtlArgs),
    /// Incidents: list, show, open, acknowledge, status, stages, silences,
    /// durations, and the postmortem written from what was recorded.
    Incident(incident_cmd::Args),
    /// Roll a new config out in waves with canary analysis: start (or
    /// --dry-run), status, history, pause, resume, abort.
    Rollout(rollout_cmd::Args),
    /// Measure how long a control change takes to reach every edge.
    BenchPropagation(propagation::Args),
    /// Detection: replay and score traces, synthetic cases, the corpus, the benchmark.
    #[command(subcommand)]
    Detect(detect_cmd::DetectCmd),
    /// Generate HTTP load: open loop at a fixed rate, closed loop to
    /// saturation, or idle connections.
    Load(load::Args),
    /// Availability of a composition, and measured availability and error budget from recorded signals.
    Sla(sla_cmd::Args),
}

#[derive(Subcommand)]
enum StoreCmd {
    /// Copy the whole store (controls with version and origin, every audit
    /// entry, every document) to one JSON file, as of one instant.
    Backup {
        /// The config whose `control.store` is backed up.
        #[arg(long)]
        config: PathBuf,
        /// The backup file to write (atomically).
        #[arg(long)]
        out: PathBuf,
        /// Replace the file if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Put a backup into the config's store, which must be empty. The store
    /// keeps the backup's identity and versions: a plane on it whose edges
    /// hold newer controls holds back until started with `--adopt`.
    Restore {
        /// The config whose `control.store` (empty) is restored into.
        #[arg(long)]
        config: PathBuf,
        /// The backup file, as written by `control backup`.
        #[arg(long)]
        from: PathBuf,
    },
}

/// Says every so often how far a long backup or restore has got.
fn progress(verb: &'static str) -> impl Fn(usize) + Send + Sync {
    let last = std::sync::Mutex::new(std::time::Instant::now());
    move |n| {
        let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
        if last.elapsed() >= std::time::Duration::from_secs(2) {
            eprintln!("switchyard control {verb}: {n} audit entries so far");
            *last = std::time::Instant::now();
        }
    }
}

fn store_cmd(cmd: StoreCmd) -> ExitCode {
    use switchyard_control::backup;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (verb, done) = match cmd {
        StoreCmd::Backup { config, out, force } => {
            let p = progress("backup");
            (
                "backup",
                rt.block_on(backup::backup(&config, &out, force, &p))
                    .map(|f| format!("wrote {}: {}", out.display(), summary(&f))),
            )
        }
        StoreCmd::Restore { config, from } => {
            let p = progress("restore");
            (
                "restore",
                rt.block_on(backup::restore(&config, &from, &p)).map(|f| {
                    format!(
                        "restored {} into the store of {}: {}. A plane on it whose edges hold \
                         newer controls of this store holds back until started with --adopt",
                        from.display(),
                        config.display(),
                        summary(&f)
                    )
                }),
            )
        }
    };
    match done {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("switchyard control {verb}: {e}");
            ExitCode::from(2)
        }
    }
}

fn summary(f: &switchyard_control::backup::BackupFile) -> String {
    let origin = f
        .state
        .docs
        .iter()
        .find(|d| d.kind == "meta" && d.id == "origin")
        .and_then(|d| d.body.get("store").and_then(|s| s.as_str()))
        .unwrap_or("none yet");
    format!(
        "store {origin} at version {}, {} audit entries, {} documents, taken {} from {}",
        f.state.controls.as_ref().map_or(0, |c| c.version),
        f.state.audit.len(),
        f.state.docs.len(),
        switchyard_model::time::rfc3339_ms(f.taken_at_ms as i64),
        f.source
    )
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a person at a terminal: escape codes in a log file or
    // a collector are noise (and NO_COLOR turns them off everywhere).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.exit_on_stdin_eof {
        std::thread::spawn(|| {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
            std::process::exit(0);
        });
    }
    match cli.cmd {
        Cmd::Validate { file, json } => validate(&file, json),
        Cmd::Edge {
            config,
            zone,
            listen,
            listen_tls,
            admin,
            workers,
            without_observation,
        } => {
            init_logs(cli.log_format);
            // Proxy workers run their own runtimes; this one only carries the
            // admin API and background work.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            match rt.block_on(switchyard_edge::run(switchyard_edge::EdgeOptions {
                config_path: config,
                zone,
                listen,
                listen_tls,
                admin_listen: admin,
                workers,
                without_observation,
            })) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("switchyard edge: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        Cmd::Dns {
            config,
            name,
            listen,
            admin,
        } => {
            init_logs(cli.log_format);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            match rt.block_on(switchyard_dns::run(switchyard_dns::DnsOptions {
                config_path: config,
                name,
                listen,
                admin,
            })) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("switchyard dns: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        Cmd::Backend(args) => {
            init_logs(cli.log_format);
            backend::main(args)
        }
        Cmd::Lab(cmd) => {
            init_logs(cli.log_format);
            lab_cmd::lab(cmd)
        }
        Cmd::Drill(args) => lab_cmd::drill(args),
        Cmd::Detect(cmd) => detect_cmd::detect(cmd),
        Cmd::Ctl(args) => ctl_cmd::ctl(args),
        Cmd::Incident(args) => incident_cmd::run(args),
        Cmd::Rollout(args) => rollout_cmd::run(args),
        Cmd::BenchPropagation(args) => propagation::main(args),
        Cmd::Control {
            store: Some(cmd), ..
        } => store_cmd(cmd),
        Cmd::Control {
            config: Some(config),
            adopt,
            store: None,
        } => {
            init_logs(cli.log_format);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            match rt.block_on(switchyard_control::server::run(&config, adopt)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("switchyard control: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        Cmd::Control { config: None, .. } => {
            unreachable!("clap requires --config without a subcommand")
        }
        Cmd::Load(args) => load::main(args),
        Cmd::Sla(args) => sla_cmd::sla(args),
    }
}

/// Runs a subcommand's async body on a multi-threaded runtime; an error is
/// printed with the subcommand's name and exits 1.
fn block_on(name: &str, fut: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard {name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The whole file's problems, each as `path: message`: the model's, and
/// those of the `[control.*]` tables the control plane checks itself
/// (through its own check, so the two cannot disagree). Those tables are
/// checked even when the rest is invalid, so one run names every problem.
/// Files the config names (certificates) are read, relative paths of
/// `[edge]` from `dir`, as the edge resolves them.
fn check_file(text: &str, dir: &std::path::Path) -> Result<switchyard_model::Config, Vec<String>> {
    use switchyard_model::config::raw;
    use switchyard_model::{Config, ConfigError};
    let raw = raw::Config::parse(text).map_err(|e| e.reasons())?;
    let mut control = raw
        .control
        .as_ref()
        .and_then(|c| switchyard_control::server::check(&c.tables(), dir).err())
        .unwrap_or_default();
    if let Some(ca) = &raw.edge.control_ca_file {
        let path = dir.join(ca);
        if let Err(e) = switchyard_api::tls::read_ca_file(&path.to_string_lossy()) {
            control.push(format!("edge.control_ca_file: {e}"));
        }
    }
    // `[[dns.push]]` reads key files: checked here, also when the rest is
    // invalid; whether its zones hold a service name needs the valid rest.
    let push = match raw.dns.as_ref().map(|d| {
        switchyard_dns::provider::config::validate(
            &d.push,
            "dns.push",
            |f| std::fs::read_to_string(dir.join(f)),
            |k| std::env::var(k).ok(),
        )
    }) {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => {
            control.extend(ConfigError::Invalid(e).reasons());
            None
        }
    };
    match Config::validate(raw, |k| std::env::var(k).ok()) {
        Ok(c) => {
            control.extend(switchyard_edge::tls::check(&c, dir));
            if let Some(Err(e)) = push
                .as_ref()
                .map(|t| switchyard_dns::provider::config::check_names(&c, t))
            {
                control.extend(ConfigError::Invalid(e).reasons());
            }
            if control.is_empty() {
                Ok(c)
            } else {
                Err(control)
            }
        }
        Err(e) => Err([ConfigError::Invalid(e).reasons(), control].concat()),
    }
}

fn validate(file: &PathBuf, json: bool) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("switchyard validate: cannot read {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let dir = file.parent().unwrap_or(std::path::Path::new("."));
    match check_file(&text, dir) {
        Ok(c) => {
            let summary = switchyard_model::config::summary(&c);
            if json {
                println!(
                    "{}",
                    serde_json::json!({"valid": true, "file": file, "summary": summary})
                );
            } else {
                let parts: Vec<String> = summary.iter().map(|(k, v)| format!("{v} {k}")).collect();
                println!("{}: valid ({})", file.display(), parts.join(", "));
            }
            ExitCode::SUCCESS
        }
        Err(reasons) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"valid": false, "file": file, "errors": reasons})
                );
            } else {
                eprintln!(
                    "{}: invalid ({} problem{})",
                    file.display(),
                    reasons.len(),
                    if reasons.len() == 1 { "" } else { "s" }
                );
                for r in reasons {
                    eprintln!("  {r}");
                }
            }
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// Every subcommand and option of `cmd` (and below) that `--help`
    /// would show without a word about it.
    fn undocumented(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
        for a in cmd.get_arguments() {
            let id = a.get_id().as_str();
            if a.is_hide_set() || id == "help" || id == "version" {
                continue;
            }
            if a.get_help().is_none() && a.get_long_help().is_none() {
                out.push(format!("{path} {id}"));
            }
        }
        for sub in cmd.get_subcommands() {
            let p = format!("{path} {}", sub.get_name());
            if sub.get_name() != "help" && sub.get_about().is_none() {
                out.push(p.clone());
            }
            undocumented(sub, &p, out);
        }
    }

    #[test]
    fn every_ctl_and_incident_subcommand_and_option_has_help() {
        let cli = Cli::command();
        let mut missing = Vec::new();
        for name in ["ctl", "incident"] {
            let cmd = cli.find_subcommand(name).expect("subcommand");
            undocumented(cmd, name, &mut missing);
        }
        assert!(missing.is_empty(), "without help text: {missing:?}");
    }
}

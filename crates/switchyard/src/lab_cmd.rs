//! `switchyard lab …` and `switchyard drill …`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use switchyard_lab::drill::{self, status_line};
use switchyard_lab::load::Recorder;
use switchyard_lab::scenario::{Scenario, BUILTIN};
use switchyard_lab::{Lab, Topology};

#[derive(clap::Subcommand)]
pub enum LabCmd {
    /// Start the whole topology on this machine and show what clients see.
    Up {
        /// Topology file (default: built in, 2 regions x 3 zones x 2 instances).
        #[arg(long)]
        topology: Option<PathBuf>,
        /// Where config, state and logs go (default: a new temporary folder).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Stop by itself after this many seconds (default: run until Ctrl-C).
        #[arg(long = "for")]
        for_s: Option<u64>,
        /// The lab's admin API (links).
        #[arg(long, default_value = switchyard_lab::admin::DEFAULT_ADDR)]
        admin: SocketAddr,
        /// Drill reports the console lists (default: docs/drills when run
        /// from the repository).
        #[arg(long)]
        reports: Option<PathBuf>,
    },
    /// Degrade, cut or restore a link of a running lab.
    Link {
        name: String,
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
        #[arg(long, default_value_t = 0)]
        jitter_ms: u64,
        #[arg(long, default_value_t = 0.0)]
        fail_percent: f64,
        #[arg(long, default_value_t = 0.0)]
        reset_percent: f64,
        #[arg(long, default_value_t = 0)]
        bandwidth_kbps: u64,
        #[arg(long)]
        cut: bool,
        #[arg(long, default_value = switchyard_lab::admin::DEFAULT_ADDR)]
        admin: SocketAddr,
    },
    /// A catalog instance (started by the lab).
    Catalog {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        name: String,
        #[arg(long)]
        zone: String,
        /// The store, usually through the zone's link.
        #[arg(long)]
        store: SocketAddr,
    },
    /// A region's store (started by the lab).
    Store {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        region: String,
        /// Where to replicate writes, usually through the region link.
        #[arg(long)]
        peer: Option<SocketAddr>,
    },
}

#[derive(clap::Args)]
pub struct DrillArgs {
    /// A built-in scenario name or a scenario file; `--list` shows the built-ins.
    scenario: Option<String>,
    /// Write the JSON report here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write a Markdown report with plots (PNG and SVG) into this folder.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Where the lab keeps config, state and logs (default: a temporary folder).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// List the built-in scenarios.
    #[arg(long)]
    list: bool,
    /// Record the edges' signals, labelled with the fault, as a trace for
    /// `switchyard detect replay`.
    #[arg(long)]
    record: Option<PathBuf>,
}

fn lab_dir(dir: Option<PathBuf>) -> anyhow::Result<(PathBuf, Option<tempfile::TempDir>)> {
    match dir {
        Some(d) => Ok((d, None)),
        None => {
            let t = tempfile::Builder::new()
                .prefix("switchyard-lab-")
                .tempdir()?;
            Ok((t.path().to_path_buf(), Some(t)))
        }
    }
}

pub fn lab(cmd: LabCmd) -> ExitCode {
    match cmd {
        LabCmd::Up {
            topology,
            dir,
            for_s,
            admin,
            reports,
        } => crate::block_on("lab up", up(topology, dir, for_s, admin, reports)),
        LabCmd::Link {
            name,
            latency_ms,
            jitter_ms,
            fail_percent,
            reset_percent,
            bandwidth_kbps,
            cut,
            admin,
        } => {
            let body = serde_json::json!({
                "latency_ms": latency_ms, "jitter_ms": jitter_ms, "fail_percent": fail_percent,
                "reset_percent": reset_percent, "bandwidth_kbps": bandwidth_kbps, "cut": cut,
            });
            crate::block_on("lab link", async move {
                let (status, body) = switchyard_lab::http::call(
                    admin,
                    http::Method::PUT,
                    // Link names hold `->`; `>` may not stand in a path.
                    &format!("/links/{}", name.replace('>', "%3E")),
                    bytes::Bytes::from(body.to_string()),
                    Duration::from_secs(3),
                )
                .await?;
                println!("{}", String::from_utf8_lossy(&body));
                if !status.is_success() {
                    anyhow::bail!("the lab refused: {status}");
                }
                Ok(())
            })
        }
        LabCmd::Catalog {
            listen,
            name,
            zone,
            store,
        } => crate::block_on(
            "lab catalog",
            switchyard_lab::catalog::run(
                listen,
                switchyard_lab::catalog::Catalog {
                    name,
                    zone,
                    store,
                    store_timeout: Duration::from_secs(1),
                },
            ),
        ),
        LabCmd::Store {
            listen,
            region,
            peer,
        } => crate::block_on(
            "lab store",
            switchyard_lab::store::run(listen, &region, peer),
        ),
    }
}

async fn up(
    topology: Option<PathBuf>,
    dir: Option<PathBuf>,
    for_s: Option<u64>,
    admin: SocketAddr,
    reports: Option<PathBuf>,
) -> anyhow::Result<()> {
    let mut topo = match &topology {
        None => Topology::default_topology(),
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))?;
            Topology::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
        }
    };
    let reports = reports.or_else(|| {
        let d = PathBuf::from("docs/drills");
        d.is_dir().then_some(d)
    });
    if let Some(r) = reports {
        let r = std::fs::canonicalize(&r)
            .map_err(|e| anyhow::anyhow!("--reports {}: {e}", r.display()))?;
        topo.reports_dir = Some(r.display().to_string());
    }
    let (dir, _keep) = lab_dir(dir)?;
    eprintln!(
        "starting the lab ({} regions, {} zones) in {}",
        topo.regions.len(),
        topo.zones().count(),
        dir.display()
    );
    let lab = Lab::start(topo, &dir, &std::env::current_exe()?).await?;
    let _admin = switchyard_lab::admin::serve_admin(admin, lab.links.clone()).await?;
    println!(
        "{}lab admin http://{admin}/links  (switchyard lab link NAME --latency-ms 100 | --cut)\n",
        lab.describe()
    );
    let rec = Recorder::new(tokio::time::Instant::now());
    let stop = Arc::new(AtomicBool::new(false));
    let load = lab.start_load(&rec, &stop);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut sec = 0usize;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                sec += 1;
                if let Some(s) = rec.timeline(sec).last() {
                    println!("{}", status_line(s));
                }
                if for_s.is_some_and(|f| sec as u64 >= f) {
                    break;
                }
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    eprintln!("stopping: load, edges, instances, stores");
    stop.store(true, Ordering::Relaxed);
    for l in load {
        let _ = l.await;
    }
    drop(lab);
    eprintln!("all lab processes stopped");
    Ok(())
}

pub fn drill(args: DrillArgs) -> ExitCode {
    if args.list || args.scenario.is_none() {
        for (name, text) in BUILTIN {
            let s = Scenario::parse(text).expect("built-in scenarios parse");
            println!("{name:<20} {:>3.0} s  {}", s.duration_s, s.description);
        }
        return if args.list {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(2)
        };
    }
    let name = args.scenario.expect("checked above");
    let scenario = match Scenario::load(&name) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("switchyard drill: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = rt.block_on(async {
        let (dir, _keep) = lab_dir(args.dir.clone())?;
        let opts = drill::Options {
            record: args.record.clone(),
            bin: std::env::current_exe()?,
            dir,
            progress: true,
        };
        let report = drill::run(&scenario, &opts).await?;
        drill::write_outputs(&report, args.json.as_deref(), args.report.as_deref())?;
        Ok::<_, anyhow::Error>(report)
    });
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("switchyard drill: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let f = |v: Option<f64>| v.map(|x| format!("{x:.1} s")).unwrap_or_else(|| "-".into());
    println!(
        "{}: {} — {} requests, {} failed ({:.2} %), {} shed, {} read-only; fault at {}, TTD {}, TTM {}, recovered at {}",
        report.scenario,
        if report.passed { "PASSED" } else { "FAILED" },
        report.requests_total,
        report.requests_failed,
        report.requests_failed as f64 * 100.0 / report.requests_total.max(1) as f64,
        report.requests_shed,
        report.requests_read_only,
        f(report.fault_at_s),
        f(report.ttd_s()),
        f(report.ttm_s()),
        f(report.recovered_at_s),
    );
    for e in &report.expectations {
        println!(
            "  {} {} ({})",
            if e.held { "held  " } else { "FAILED" },
            e.name,
            e.detail
        );
    }
    if let Some(a) = &report.aborted {
        println!("  aborted: {a}");
    }
    if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

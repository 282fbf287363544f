//! `switchyard detect …`: replay traces, make synthetic ones, score the
//! corpus, and measure the engine's throughput.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use switchyard_detect::corpus;
use switchyard_detect::score::score;
use switchyard_detect::synth::{generate, CASES};
use switchyard_detect::trace::Trace;
use switchyard_detect::{DetectConfig, Engine};
use switchyard_model::signals::{ErrorClass, Series, Snapshot};

#[derive(clap::Subcommand)]
pub enum DetectCmd {
    /// Run the detectors over a trace and score the findings against its labels.
    Replay {
        trace: PathBuf,
        /// Detector settings (JSON); defaults otherwise.
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Write a synthetic trace of one corpus case.
    Synth {
        /// One of the corpus cases (`--list` to see them).
        case: Option<String>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 90)]
        seconds: u64,
        /// Requests per second each edge sends.
        #[arg(long, default_value_t = 100)]
        rps: u64,
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long)]
        list: bool,
    },
    /// Score the whole corpus: synthetic cases over several seeds, plus recorded traces.
    Corpus {
        #[arg(long, default_value_t = 5)]
        seeds: u64,
        /// Recorded traces to add.
        #[arg(long)]
        trace: Vec<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Measure how many signal series per second the engine keeps up with.
    Bench {
        #[arg(long, default_value_t = 10_000)]
        series: usize,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        #[arg(long)]
        json: bool,
    },
}

fn load(p: &PathBuf) -> Result<Trace, String> {
    let text =
        std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
    Trace::parse(&text).map_err(|e| format!("{}: {e}", p.display()))
}

pub fn detect(cmd: DetectCmd) -> ExitCode {
    match run(cmd) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("switchyard detect: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(cmd: DetectCmd) -> Result<ExitCode, String> {
    match cmd {
        DetectCmd::Replay {
            trace,
            config,
            json,
        } => {
            let t = load(&trace)?;
            let cfg = match config {
                None => DetectConfig::default(),
                Some(p) => {
                    let text = std::fs::read_to_string(&p)
                        .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
                    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))?
                }
            };
            let findings = t.replay(&cfg);
            let s = score(&findings, &t.labels, 5_000);
            if json {
                println!("{}", serde_json::json!({"findings": findings, "score": s}));
                return Ok(ExitCode::SUCCESS);
            }
            let t0 = t.snapshots.first().map(|s| s.at_ms).unwrap_or(0);
            println!(
                "{} snapshots, {} labels, {} findings",
                t.snapshots.len(),
                t.labels.len(),
                findings.len()
            );
            for f in &findings {
                println!(
                    "  {:>7.1} s  {:<28} {:<12} since {:.1} s{}  {}",
                    f.detected_ms.saturating_sub(t0) as f64 / 1000.0,
                    f.scope,
                    f.kind,
                    f.start_ms.saturating_sub(t0) as f64 / 1000.0,
                    f.end_ms
                        .map(|e| format!(", until {:.1} s", e.saturating_sub(t0) as f64 / 1000.0))
                        .unwrap_or_default(),
                    f.evidence
                );
            }
            for l in &s.labels {
                println!(
                    "label {} ({}): {}",
                    l.scope,
                    l.kind.as_deref().unwrap_or("any"),
                    l.ttd_s
                        .map(|x| format!("detected in {x:.1} s"))
                        .unwrap_or_else(|| "NOT detected".into())
                );
            }
            println!(
                "precision {:.2}, recall {:.2}, wrong findings: {:?}",
                s.precision, s.recall, s.false_findings
            );
            Ok(ExitCode::SUCCESS)
        }
        DetectCmd::Synth {
            case,
            seed,
            seconds,
            rps,
            out,
            list,
        } => {
            if list || case.is_none() {
                for c in CASES {
                    println!("{c}");
                }
                return Ok(if list {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(2)
                });
            }
            let case = case.expect("checked");
            let t = generate(&case, seed, seconds, rps)
                .ok_or_else(|| format!("unknown case {case:?}; known: {}", CASES.join(", ")))?;
            match out {
                Some(p) => std::fs::write(&p, t.to_ndjson())
                    .map_err(|e| format!("cannot write {}: {e}", p.display()))?,
                None => print!("{}", t.to_ndjson()),
            }
            Ok(ExitCode::SUCCESS)
        }
        DetectCmd::Corpus { seeds, trace, json } => {
            let recorded: Vec<(String, Trace)> = trace
                .iter()
                .map(|p| {
                    Ok((
                        format!(
                            "lab: {}",
                            p.file_stem()
                                .map(|s| s.to_string_lossy().into_owned())
                                .unwrap_or_default()
                        ),
                        load(p)?,
                    ))
                })
                .collect::<Result<_, String>>()?;
            let seeds: Vec<u64> = (1..=seeds).collect();
            let results = corpus::run(&DetectConfig::default(), &seeds, &recorded);
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&results).expect("serializable")
                );
            } else {
                print!("{}", corpus::table(&results));
            }
            Ok(ExitCode::SUCCESS)
        }
        DetectCmd::Bench {
            series,
            seconds,
            json,
        } => {
            let r = bench(series, seconds);
            if json {
                println!("{}", serde_json::json!(r));
            } else {
                println!(
                    "{} series/s for {} s of signals: {:.3} s of CPU per second of signals on one core ({:.1} % of real time, {:.0} series/s at most)",
                    series, seconds, r.1, r.1 * 100.0, series as f64 / r.1
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Feeds `series` series per second (100 edges, instances spread over 12
/// zones in 2 regions, with probes) and returns (series, seconds of engine
/// time per second of signals).
fn bench(series: usize, seconds: u64) -> (usize, f64) {
    let edges = 100usize;
    let per_edge = series.div_ceil(edges);
    let zones: Vec<(String, String)> = (0..12)
        .map(|z| (if z < 6 { "r1" } else { "r2" }.to_string(), format!("z{z}")))
        .collect();
    let mut snaps: Vec<Vec<Snapshot>> = Vec::new();
    for t in 0..seconds {
        let mut v = Vec::new();
        for e in 0..edges {
            let (region, zone) = &zones[e % zones.len()];
            let series: Vec<Series> = (0..per_edge)
                .map(|i| {
                    let inst = format!("i{}", (e * per_edge + i) % 2000);
                    Series {
                        service: format!("svc{}", i % 10),
                        route: format!("route{}", i % 4),
                        target_zone: zones[(e + i) % 6 + if region == "r1" { 0 } else { 6 }]
                            .1
                            .clone(),
                        instance: inst,
                        write: i % 4 == 3,
                        forwarded_in: false,
                        requests: 20 + (i as u64 % 7),
                        errors: if (i + t as usize).is_multiple_of(13) {
                            [(ErrorClass::Status5xx.to_string(), 1)].into()
                        } else {
                            Default::default()
                        },
                        p50_ms: 3.0,
                        p90_ms: 6.0,
                        p99_ms: 9.0 + (i % 5) as f64,
                        max_ms: 20.0,
                    }
                })
                .collect();
            v.push(Snapshot {
                at_ms: 1_000_000 + t * 1000 + 100 + (e as u64 * 7) % 800,
                interval_ms: 1000,
                region: region.clone(),
                source_zone: zone.clone(),
                series,
                probes: vec![],
                config_version: None,
                config_refused: None,
            });
        }
        snaps.push(v);
    }
    let mut engine = Engine::new(DetectConfig::default());
    let start = Instant::now();
    for v in &snaps {
        for s in v {
            engine.ingest(s);
            engine.tick(s.at_ms);
        }
    }
    let per_second = start.elapsed().as_secs_f64() / seconds as f64;
    (series, per_second)
}

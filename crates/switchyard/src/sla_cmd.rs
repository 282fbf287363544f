//! `switchyard sla`: the availability a composition of parts promises, and
//! the availability and error budget measured from recorded signals.
//!
//! Exit codes: 0 every objective met, 1 an objective not met, 2 bad input
//! (the error names the file and the line or path; nothing goes to stdout).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::{json, Value};
use switchyard_detect::trace::Trace;
use switchyard_incident::sla::{self, Composition, Evaluation, Measured, SignalsReport};
use switchyard_model::time::rfc3339_ms;

/// Objective for measured availability when neither `--objective` nor a
/// composition names one.
const DEFAULT_OBJECTIVE: f64 = 0.999;

#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  switchyard sla examples/composition.toml\n  switchyard sla --signals trace.ndjson --objective 0.999 --json\n\nExit codes: 0 objectives met, 1 an objective not met, 2 bad input."
)]
pub struct Args {
    /// Composition file (TOML): components that are leaves (`availability`),
    /// `series`, `parallel` or `k_of_n`, a `top` and an optional `objective`.
    composition: Option<PathBuf>,
    /// A recorded signal trace (NDJSON, as `switchyard detect synth` or the
    /// lab write them): measured availability and error budget per service
    /// and region.
    #[arg(long, value_name = "TRACE")]
    signals: Option<PathBuf>,
    /// Objective for the measured availability (default: the composition's
    /// `objective`, else 0.999).
    #[arg(long)]
    objective: Option<f64>,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    json: bool,
}

pub fn sla(args: Args) -> ExitCode {
    match run(&args) {
        Ok(code) => code,
        Err(problems) => {
            for p in problems {
                eprintln!("switchyard sla: {p}");
            }
            ExitCode::from(2)
        }
    }
}

fn read(p: &Path) -> Result<String, Vec<String>> {
    std::fs::read_to_string(p).map_err(|e| vec![format!("cannot read {}: {e}", p.display())])
}

fn run(args: &Args) -> Result<ExitCode, Vec<String>> {
    if args.composition.is_none() && args.signals.is_none() {
        return Err(vec![
            "nothing to do: give a composition file, --signals TRACE, or both".into(),
        ]);
    }
    if let Some(o) = args.objective {
        if !(o > 0.0 && o < 1.0) {
            return Err(vec![format!("--objective: must be in (0, 1), got {o}")]);
        }
    }

    // Everything is read and checked before anything is printed.
    let composition = match &args.composition {
        None => None,
        Some(path) => {
            let text = read(path)?;
            let c = Composition::from_toml(&text).map_err(|e| {
                let reasons = e.reasons();
                let mut out = vec![format!(
                    "{}: invalid composition ({} problem{})",
                    path.display(),
                    reasons.len(),
                    if reasons.len() == 1 { "" } else { "s" }
                )];
                out.extend(
                    reasons
                        .into_iter()
                        .map(|r| format!("{}: {}", path.display(), r.replace('\n', "\n    "))),
                );
                out
            })?;
            Some((path, c.evaluate()))
        }
    };
    let signals = match &args.signals {
        None => None,
        Some(path) => {
            let text = read(path)?;
            let trace =
                Trace::parse(&text).map_err(|e| vec![format!("{}: {e}", path.display())])?;
            if trace.snapshots.is_empty() {
                return Err(vec![format!(
                    "{}: no snapshots in the trace",
                    path.display()
                )]);
            }
            let objective = args
                .objective
                .or(composition.as_ref().and_then(|(_, e)| e.objective))
                .unwrap_or(DEFAULT_OBJECTIVE);
            Some((path, sla::measure(&trace.snapshots, objective)))
        }
    };

    let composition_ok = composition
        .as_ref()
        .is_none_or(|(_, e)| e.meets_objective != Some(false));
    let signals_ok = signals.as_ref().is_none_or(|(_, r)| r.meets_objective());
    let ok = composition_ok && signals_ok;

    if args.json {
        let mut out = serde_json::Map::new();
        if let Some((path, e)) = &composition {
            out.insert("composition".into(), with_file(path, e));
        }
        if let Some((path, r)) = &signals {
            out.insert("signals".into(), with_file(path, r));
        }
        out.insert("ok".into(), json!(ok));
        println!("{}", Value::Object(out));
    } else {
        let mut first = true;
        if let Some((path, e)) = &composition {
            print_composition(path, e);
            first = false;
        }
        if let Some((path, r)) = &signals {
            if !first {
                println!();
            }
            print_signals(path, r);
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn with_file(path: &Path, v: &impl serde::Serialize) -> Value {
    let mut v = serde_json::to_value(v).expect("reports serialize");
    if let Value::Object(m) = &mut v {
        m.insert("file".into(), json!(path.display().to_string()));
    }
    v
}

/// Decimals enough to show every availability's nines (plus two digits),
/// one count for a whole table so its column lines up.
fn decimals(availabilities: impl IntoIterator<Item = f64>) -> usize {
    let most = availabilities
        .into_iter()
        .filter_map(|a| sla::nines(1.0 - a))
        .fold(0.0f64, f64::max);
    ((most.ceil() as usize) + 2).clamp(4, 12)
}

/// `a` with `d` decimals, cut rather than rounded so a value under the
/// objective never prints as the objective (rounded two digits further
/// first, so arithmetic noise does not cut 0.9995 to 0.999499).
fn fmt_availability(a: f64, d: usize) -> String {
    let s = format!("{a:.prec$}", prec = d + 2);
    s[..s.len() - 2].to_string()
}

fn fmt_objective(o: Option<f64>) -> String {
    o.map(|o| {
        format!(
            "{o} ({} nines)",
            trim(sla::nines(1.0 - o).unwrap_or(0.0), 2)
        )
    })
    .unwrap_or_else(|| "none".into())
}

fn trim(x: f64, decimals: usize) -> String {
    let s = format!("{x:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn verdict(m: Option<bool>) -> &'static str {
    match m {
        Some(true) => "meets",
        Some(false) => "MISSES",
        None => "-",
    }
}

/// Left-aligns the first column, right-aligns the others except those
/// listed in `left`.
fn print_table(header: &[&str], rows: &[Vec<String>], left: &[usize]) {
    let cols = header.len();
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate().take(cols) {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = width[i].saturating_sub(c.chars().count());
            if i > 0 {
                s.push_str("  ");
            }
            if i == 0 || left.contains(&i) {
                s.push_str(c);
                if i + 1 < cells.len() {
                    s.push_str(&" ".repeat(pad));
                }
            } else {
                s.push_str(&" ".repeat(pad));
                s.push_str(c);
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

fn print_composition(path: &Path, e: &Evaluation) {
    println!(
        "composition {}: top {:?}, objective {}",
        path.display(),
        e.top,
        fmt_objective(e.objective)
    );
    let d = decimals(e.components.iter().map(|c| c.availability));
    println!(
        "{} availability {} ({} nines): {} down per 30-day month, {} per year{}",
        e.top,
        fmt_availability(e.availability, d),
        e.components[0]
            .nines
            .map(|n| trim(n, 2))
            .unwrap_or_else(|| "inf".into()),
        e.components[0].downtime_month,
        e.components[0].downtime_year,
        match e.meets_objective {
            Some(true) => ", meets the objective",
            Some(false) => ", MISSES the objective",
            None => "",
        }
    );
    println!();
    let rows: Vec<Vec<String>> = e
        .components
        .iter()
        .map(|c| {
            let n = c.parts.len();
            let kind = match c.kind.as_str() {
                "leaf" => "leaf".to_string(),
                "k_of_n" => format!("{} of {n}", c.k.unwrap_or(0)),
                k => format!("{k} of {n}"),
            };
            vec![
                format!("{}{}", c.name, if c.used_by_top { "" } else { " (unused)" }),
                kind,
                fmt_availability(c.availability, d),
                c.nines
                    .map(|n| format!("{n:.2}"))
                    .unwrap_or_else(|| "inf".into()),
                c.downtime_month.clone(),
                c.downtime_year.clone(),
                verdict(c.meets_objective).into(),
            ]
        })
        .collect();
    print_table(
        &[
            "component",
            "kind",
            "availability",
            "nines",
            "downtime/month",
            "downtime/year",
            "objective",
        ],
        &rows,
        &[1, 6],
    );
}

fn print_signals(path: &Path, r: &SignalsReport) {
    println!(
        "signals {}: {} snapshots, {} to {} ({}), objective {}",
        path.display(),
        r.snapshots,
        rfc3339_ms(r.window_start_ms as i64),
        rfc3339_ms(r.window_end_ms as i64),
        sla::human_duration(r.window_s),
        fmt_objective(Some(r.objective)),
    );
    println!();
    let all = || {
        r.services
            .iter()
            .flat_map(|s| std::iter::once(&s.measured).chain(s.regions.iter().map(|g| &g.measured)))
    };
    let d = decimals(all().flat_map(|m| {
        m.availability
            .into_iter()
            .chain(m.worst_minute.as_ref().map(|w| w.availability))
    }));
    let mut rows = Vec::new();
    for s in &r.services {
        rows.push(measured_row(s.service.clone(), &s.measured, d));
        for g in &s.regions {
            rows.push(measured_row(format!("  {}", g.region), &g.measured, d));
        }
    }
    print_table(
        &[
            "service/region",
            "requests",
            "failed",
            "shed",
            "read-only",
            "availability",
            "window",
            "budget",
            "spent",
            "remaining",
            "objective",
            "worst minute",
        ],
        &rows,
        &[10, 11],
    );
}

fn measured_row(name: String, m: &Measured, d: usize) -> Vec<String> {
    let pct = |x: Option<f64>| {
        x.map(|x| format!("{:.1} %", x * 100.0))
            .unwrap_or_else(|| "-".into())
    };
    vec![
        name,
        m.requests.to_string(),
        m.failed.to_string(),
        m.shed.to_string(),
        m.read_only.to_string(),
        m.availability
            .map(|a| fmt_availability(a, d))
            .unwrap_or_else(|| "-".into()),
        sla::human_duration(m.window_s),
        format!("{:.1}", m.budget),
        pct(m.budget_spent),
        format!(
            "{:.1} ({})",
            m.budget_remaining,
            pct(m.budget_remaining_fraction)
        ),
        verdict(m.meets_objective).into(),
        m.worst_minute
            .as_ref()
            .map(|w| {
                format!(
                    "{} {} ({} of {})",
                    rfc3339_ms(w.start_ms as i64),
                    fmt_availability(w.availability, d),
                    w.failed,
                    w.requests
                )
            })
            .unwrap_or_else(|| "-".into()),
    ]
}

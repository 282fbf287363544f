//! The postmortem, written from what the system recorded, in a fixed
//! template: summary; impact; timeline (every stage); anomalous metrics
//! with their thresholds; error window; failure points; metrics before and
//! after; trends of related dependencies; candidate fixes and the chosen
//! one; action items. What the system cannot know (why, what to change) is
//! left for people, marked as such; nothing is invented.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use switchyard_model::check::CheckOutcome;
use switchyard_model::time::human_utc;
use switchyard_report::chart::{write_plot, Marker, MarkerKind, Plot, Series};

use crate::incident::{Entry, EntryKind, Incident, Point, Stage};

const FOR_PEOPLE: &str = "_For the reviewers to fill in._";

fn secs(ms: Option<u64>, from: u64) -> String {
    ms.map(|t| format!("{:+.1} s", (t as f64 - from as f64) / 1000.0))
        .unwrap_or_else(|| "—".into())
}

fn pct(x: f64) -> String {
    format!("{:.2} %", x * 100.0)
}

/// A verification entry's verdict: its typed check, or for entries written
/// before checks were typed, the `helped` flag they carried.
fn verdict(e: &Entry) -> Option<CheckOutcome> {
    if e.kind != EntryKind::Verification {
        return None;
    }
    serde_json::from_value(e.detail["outcome"].clone())
        .ok()
        .or_else(|| {
            e.detail["helped"].as_bool().map(|h| {
                if h {
                    CheckOutcome::Passed
                } else {
                    CheckOutcome::Failed
                }
            })
        })
}

/// Mean error rate, requests per second and worst p99 over points in `[from, to)`.
pub fn window_stats(points: &[Point], from_ms: u64, to_ms: u64) -> Option<(f64, f64, f64)> {
    let p: Vec<&Point> = points
        .iter()
        .filter(|p| p.at_ms >= from_ms && p.at_ms < to_ms)
        .collect();
    if p.is_empty() {
        return None;
    }
    let q: u64 = p.iter().map(|x| x.requests).sum();
    let f: u64 = p.iter().map(|x| x.failed).sum();
    let p99 = p.iter().map(|x| x.p99_ms).fold(0.0, f64::max);
    Some((
        if q == 0 { 0.0 } else { f as f64 / q as f64 },
        q as f64 / p.len() as f64,
        p99,
    ))
}

/// Heartbeats per route over points in `[from, to)`: (route, sent, failed).
fn heartbeat_stats(points: &[Point], from_ms: u64, to_ms: u64) -> Vec<(String, u64, u64)> {
    let mut m: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    for p in points
        .iter()
        .filter(|p| p.at_ms >= from_ms && p.at_ms < to_ms)
    {
        for (r, (n, f)) in &p.heartbeats {
            let e = m.entry(r.clone()).or_default();
            e.0 += n;
            e.1 += f;
        }
    }
    m.into_iter().map(|(r, (n, f))| (r, n, f)).collect()
}

/// The plots: (stem, caption, plot).
fn plots(i: &Incident) -> Vec<(&'static str, &'static str, Plot)> {
    let Some(t0) = i.series.first().map(|p| p.at_ms) else {
        return Vec::new();
    };
    let x = |ms: u64| (ms as f64 - t0 as f64) / 1000.0;
    let x_max = i.series.last().map(|p| x(p.at_ms) + 1.0).unwrap_or(1.0);
    let markers: Vec<Marker> = [
        (MarkerKind::Occurred, Stage::Occurred),
        (MarkerKind::Detected, Stage::Detected),
        (MarkerKind::Notified, Stage::Notified),
        (MarkerKind::Mitigated, Stage::Mitigated),
        (MarkerKind::Recovered, Stage::Recovered),
    ]
    .into_iter()
    .filter_map(|(k, s)| {
        i.stages.get(&s).map(|t| Marker {
            kind: k,
            at_s: x(*t),
        })
    })
    .filter(|m| m.at_s >= 0.0 && m.at_s <= x_max)
    .collect();
    let zones: std::collections::BTreeSet<&String> =
        i.series.iter().flat_map(|p| p.zones.keys()).collect();
    let mut errors = vec![Series {
        name: "all".into(),
        points: i
            .series
            .iter()
            .map(|p| {
                (
                    x(p.at_ms),
                    (p.requests > 0).then(|| p.failed as f64 / p.requests as f64 * 100.0),
                )
            })
            .collect(),
        emphasized: true,
    }];
    let mut p99 = vec![Series {
        name: "all".into(),
        points: i
            .series
            .iter()
            .map(|p| (x(p.at_ms), (p.requests > 0).then_some(p.p99_ms)))
            .collect(),
        emphasized: true,
    }];
    for z in zones {
        errors.push(Series {
            name: z.clone(),
            points: i
                .series
                .iter()
                .map(|p| {
                    let v = p
                        .zones
                        .get(z)
                        .filter(|c| c.0 > 0)
                        .map(|c| c.1 as f64 / c.0 as f64 * 100.0);
                    (x(p.at_ms), v)
                })
                .collect(),
            emphasized: false,
        });
        p99.push(Series {
            name: z.clone(),
            points: i
                .series
                .iter()
                .map(|p| (x(p.at_ms), p.zones.get(z).filter(|c| c.0 > 0).map(|c| c.2)))
                .collect(),
            emphasized: false,
        });
    }
    let routes: std::collections::BTreeSet<&String> =
        i.series.iter().flat_map(|p| p.heartbeats.keys()).collect();
    let heartbeats: Vec<Series> = routes
        .into_iter()
        .map(|r| Series {
            name: format!("{r} heartbeat"),
            points: i
                .series
                .iter()
                .map(|p| {
                    let v = p
                        .heartbeats
                        .get(r)
                        .filter(|h| h.0 > 0)
                        .map(|h| h.1 as f64 / h.0 as f64 * 100.0);
                    (x(p.at_ms), v)
                })
                .collect(),
            emphasized: false,
        })
        .collect();
    let plot =
        |title: &str, y: &str, unit: &'static str, series: Vec<Series>, bound: Option<f64>| Plot {
            title: title.into(),
            y_label: y.into(),
            y_unit: unit,
            series,
            markers: markers.clone(),
            bound,
            x_max,
        };
    vec![
        (
            "errors",
            "Failed requests by zone (the bound is the error window's)",
            plot("Error rate", "failed requests (%)", " %", errors, Some(1.0)),
        ),
        (
            "p99",
            "p99 latency by zone",
            plot("p99 latency", "ms", " ms", p99, None),
        ),
        (
            "heartbeats",
            "Heartbeat failures by route: the dependencies behind each route",
            plot(
                "Heartbeats failing",
                "failed heartbeats (%)",
                " %",
                heartbeats,
                None,
            ),
        ),
    ]
}

/// The Markdown text, with the plots it refers to named `STEM.png`.
pub fn render(i: &Incident) -> String {
    let mut s = String::new();
    let occurred = i
        .stages
        .get(&Stage::Occurred)
        .copied()
        .unwrap_or(i.created_ms);
    let at = |ms: u64| format!("{} ({})", human_utc(ms as i64), secs(Some(ms), occurred));
    let _ = writeln!(s, "# Postmortem: {} — {}\n", i.id, i.title);
    let _ = writeln!(
        s,
        "Written by `switchyard incident postmortem` from what the control plane recorded. Sections marked {FOR_PEOPLE} are left for the reviewers; everything else is measured.\n"
    );

    // Summary.
    let _ = writeln!(s, "## Summary\n");
    let kinds: Vec<String> = i
        .findings
        .iter()
        .map(|f| format!("{} ({})", f.scope, f.kind))
        .collect();
    let first_help = i
        .timeline
        .iter()
        .find(|e| verdict(e) == Some(CheckOutcome::Passed))
        .map(|e| e.text.clone());
    let _ = writeln!(s, "- **Service**: {}", i.service);
    let _ = writeln!(
        s,
        "- **Severity**: {} — {}",
        i.severity.as_str(),
        i.severity_reason
    );
    let _ = writeln!(s, "- **Status**: {}", i.status);
    let _ = writeln!(s, "- **Opened by**: {}", i.opened_by);
    let _ = writeln!(
        s,
        "- **What was found**: {}",
        if kinds.is_empty() {
            "no finding (opened by hand)".to_string()
        } else {
            kinds.join(", ")
        }
    );
    let _ = writeln!(s, "- **Onset**: {}", human_utc(occurred as i64));
    let _ = writeln!(
        s,
        "- **Mitigation**: {}",
        first_help.unwrap_or_else(|| "no action was verified to help".into())
    );
    // An action that did not help is the first thing a reviewer should see:
    // the automation's plan failed and people were paged for it.
    for e in i
        .timeline
        .iter()
        .filter(|e| e.kind == EntryKind::Escalation)
    {
        let sev = e.detail["severity_to"].as_str().unwrap_or("unchanged");
        let _ = writeln!(
            s,
            "- **Escalated** at {} to {sev}: {}",
            secs(Some(e.at_ms), occurred),
            e.text.trim_start_matches("escalated: ")
        );
    }
    if !i.reopened_ms.is_empty() {
        let when: Vec<String> = i
            .reopened_ms
            .iter()
            .map(|t| secs(Some(*t), occurred))
            .collect();
        let _ = writeln!(
            s,
            "- **Reopened** {} time(s), at {}: the fault came back after the incident was resolved",
            i.reopened_ms.len(),
            when.join(", ")
        );
    }
    let _ = writeln!(
        s,
        "- **Duration** (onset to recovery): {}\n",
        i.between(Stage::Occurred, Stage::Recovered)
            .map(|d| format!("{d:.1} s"))
            .unwrap_or_else(|| "not recovered".into())
    );

    // Impact.
    let m = &i.impact;
    let _ = writeln!(s, "## Impact\n");
    let _ = writeln!(s, "| measure | value |\n|---|---|");
    let _ = writeln!(
        s,
        "| share of the service's traffic affected | {} |",
        pct(m.traffic_share)
    );
    let _ = writeln!(
        s,
        "| routes failing in the affected places | {}{} |",
        if m.routes.is_empty() {
            "none".to_string()
        } else {
            m.routes.join(", ")
        },
        if m.critical_route {
            " (a critical route)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        s,
        "| requests to the affected places on those routes | {} |",
        m.requests
    );
    let _ = writeln!(s, "| failed requests | {} |", m.failed);
    let _ = writeln!(
        s,
        "| month's error budget burned | {} |",
        pct(m.budget_burned)
    );
    let _ = writeln!(s, "| duration | {:.1} s |\n", m.duration_ms as f64 / 1000.0);

    // Timeline.
    let _ = writeln!(s, "## Timeline\n");
    let _ = writeln!(s, "| stage | when | set by |\n|---|---|---|");
    for st in Stage::ALL {
        let when = i
            .stages
            .get(&st)
            .map(|t| at(*t))
            .unwrap_or_else(|| "—".into());
        let by = if st.by_people() || st == Stage::Acknowledged {
            "people"
        } else {
            "the system"
        };
        let _ = writeln!(s, "| {} | {} | {} |", st.as_str(), when, by);
    }
    let d = |a, b| {
        i.between(a, b)
            .map(|x| format!("{x:.1} s"))
            .unwrap_or_else(|| "—".into())
    };
    let _ = writeln!(
        s,
        "\nTime to detect {} · to acknowledge (from notified) {} · to mitigate {} · to recover {}.\n",
        d(Stage::Occurred, Stage::Detected),
        d(Stage::Notified, Stage::Acknowledged),
        d(Stage::Occurred, Stage::Mitigated),
        d(Stage::Occurred, Stage::Recovered)
    );
    let _ = writeln!(s, "Every event recorded:\n");
    let _ = writeln!(s, "| when | from onset | who | what |\n|---|---|---|---|");
    let mut events = i.timeline.clone();
    events.sort_by_key(|e| e.at_ms);
    for e in &events {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:?}: {} |",
            human_utc(e.at_ms as i64),
            secs(Some(e.at_ms), occurred),
            e.who,
            e.kind,
            e.text.replace('|', "\\|")
        );
    }

    // Anomalous metrics.
    let _ = writeln!(s, "\n## Anomalous metrics and their thresholds\n");
    if i.findings.is_empty() && i.alarms.is_empty() {
        let _ = writeln!(s, "No detector finding or alarm is attached.\n");
    }
    for a in &i.alarms {
        let _ = writeln!(
            s,
            "- **alarm {} ({})** on {}, from {} to {}{}: {}",
            a.name,
            a.severity,
            a.scope,
            at(a.since_ms),
            a.end_ms.map(at).unwrap_or_else(|| "still firing".into()),
            if a.opened {
                ", opened the incident"
            } else {
                ""
            },
            a.detail
        );
    }
    for f in &i.findings {
        let _ = writeln!(
            s,
            "- **{} ({})**, from {} to {}:",
            f.scope,
            f.kind,
            at(f.start_ms),
            f.end_ms.map(at).unwrap_or_else(|| "still open".into())
        );
        for (k, v) in evidence_lines(&f.evidence, i) {
            let _ = writeln!(s, "  - {k}: {v}");
        }
    }

    // Error window.
    let _ = writeln!(s, "\n## Error window\n");
    match i.error_window {
        Some((a, b)) => {
            let peak = i
                .series
                .iter()
                .filter(|p| p.requests > 0)
                .map(|p| (p.failed as f64 / p.requests as f64, p.at_ms))
                .fold((0.0, 0), |acc, x| if x.0 > acc.0 { x } else { acc });
            let _ = writeln!(
                s,
                "Failed requests above the 1 % bound from {} to {} ({:.0} s); the worst second was {} at {}.\n",
                at(a),
                at(b),
                (b - a) as f64 / 1000.0,
                pct(peak.0),
                at(peak.1)
            );
        }
        None => {
            let _ = writeln!(s, "The service's failed requests never rose above the 1 % bound in any second (retries and the mitigation kept clients whole, or the failure was in latency only).\n");
        }
    }

    // Failure points.
    let _ = writeln!(s, "## Failure points\n");
    for sc in &i.scopes {
        let instances: Vec<String> = i
            .findings
            .iter()
            .filter(|f| &f.scope == sc)
            .flat_map(|f| {
                f.evidence["instances_affected"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .chain(
                        f.evidence["impaired"]
                            .as_array()
                            .cloned()
                            .unwrap_or_default(),
                    )
                    .filter_map(|v| v.as_str().map(str::to_string))
            })
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let _ = writeln!(
            s,
            "- `{sc}`{}",
            if instances.is_empty() {
                String::new()
            } else {
                format!(": {}", instances.join(", "))
            }
        );
    }
    if i.scopes.is_empty() {
        let _ = writeln!(s, "None localized by the system. {FOR_PEOPLE}");
    }

    // Before and after.
    let recovered = i.stages.get(&Stage::Recovered).copied();
    let before = window_stats(&i.series, occurred.saturating_sub(60_000), occurred);
    let during = window_stats(&i.series, occurred, recovered.unwrap_or(u64::MAX));
    let after = recovered.and_then(|r| window_stats(&i.series, r, r + 60_000));
    let _ = writeln!(s, "\n## Metrics before and after\n");
    let _ = writeln!(
        s,
        "| window | failed requests | requests/s | worst p99 |\n|---|---|---|---|"
    );
    for (name, w) in [
        ("60 s before the onset", before),
        ("onset to recovery", during),
        ("60 s after recovery", after),
    ] {
        match w {
            Some((e, rps, p99)) => {
                let _ = writeln!(s, "| {name} | {} | {rps:.0} | {p99:.1} ms |", pct(e));
            }
            None => {
                let _ = writeln!(s, "| {name} | no data | — | — |");
            }
        }
    }

    // Dependencies.
    let _ = writeln!(s, "\n## Trends of related dependencies\n");
    let _ = writeln!(s, "Each route's heartbeat exercises the route's own path through its dependencies (the store behind it), on every instance, every second.\n");
    let _ = writeln!(
        s,
        "| route heartbeat | before | during | after |\n|---|---|---|---|"
    );
    let hb = |from, to| heartbeat_stats(&i.series, from, to);
    let b = hb(occurred.saturating_sub(60_000), occurred);
    let du = hb(occurred, recovered.unwrap_or(u64::MAX));
    let af = recovered.map(|r| hb(r, r + 60_000)).unwrap_or_default();
    let routes: std::collections::BTreeSet<String> = b
        .iter()
        .chain(du.iter())
        .chain(af.iter())
        .map(|x| x.0.clone())
        .collect();
    let cell = |v: &[(String, u64, u64)], r: &str| {
        v.iter()
            .find(|x| x.0 == r)
            .map(|x| format!("{} of {} failed", x.2, x.1))
            .unwrap_or_else(|| "—".into())
    };
    for r in &routes {
        let _ = writeln!(
            s,
            "| {r} | {} | {} | {} |",
            cell(&b, r),
            cell(&du, r),
            cell(&af, r)
        );
    }
    if routes.is_empty() {
        let _ = writeln!(s, "| (no heartbeats recorded) | — | — | — |");
    }

    // Plots.
    let ps = plots(i);
    if !ps.is_empty() {
        let _ = writeln!(s, "\n## Plots\n");
        for (stem, caption, _) in &ps {
            let _ = writeln!(s, "![{caption}]({stem}.png)\n\n_{caption}._\n");
        }
    }

    // Fixes and actions.
    let _ = writeln!(s, "## Candidate fixes and the chosen one\n");
    let actions: Vec<&crate::incident::Entry> = events
        .iter()
        .filter(|e| e.kind == EntryKind::Action)
        .collect();
    if actions.is_empty() {
        let _ = writeln!(s, "No control change was made during the incident.\n");
    } else {
        let _ = writeln!(
            s,
            "Mitigations applied during the incident (data plane first):\n"
        );
        for a in actions {
            let verdict = events
                .iter()
                .find(|v| v.kind == EntryKind::Verification && v.text.starts_with(a.text.as_str()))
                .map(|v| v.text.clone())
                .unwrap_or_else(|| "not verified".into());
            let _ = writeln!(
                s,
                "- {} by {} at {} — {}",
                a.text,
                a.who,
                at(a.at_ms),
                verdict
            );
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(
        s,
        "Candidate fixes of the cause, the one chosen and why: {FOR_PEOPLE}\n"
    );
    let _ = writeln!(s, "## Action items\n");
    let mut items = Vec::new();
    if !i.stages.contains_key(&Stage::Acknowledged) {
        items.push(
            "Nobody acknowledged the incident: check the paging route and the on-call rota."
                .to_string(),
        );
    }
    if !i.stages.contains_key(&Stage::Notified) {
        items.push(
            "No notification was delivered: check the receivers and routes in `[control.notify]`."
                .to_string(),
        );
    }
    let failed_attempts = events
        .iter()
        .filter(|e| e.kind == EntryKind::Notification && e.detail["ok"] == false)
        .count();
    if failed_attempts > 0 {
        items.push(format!(
            "{failed_attempts} notification attempt(s) failed before delivery: see the timeline."
        ));
    }
    for v in events
        .iter()
        .filter(|e| verdict(e) == Some(CheckOutcome::Failed))
    {
        items.push(format!(
            "A mitigation did not help and the incident was escalated: {}. Why did the playbook's choice not fit the fault?",
            v.text
        ));
    }
    if !i.reopened_ms.is_empty() {
        items.push(format!(
            "The fault came back {} time(s) after the incident was resolved: was it ever fixed, or only kept away from users?",
            i.reopened_ms.len()
        ));
    }
    for (route, n, f) in &af {
        if *f > 0 {
            items.push(format!(
                "The {route} heartbeat still failed {f} of {n} times in the 60 s after recovery: the mitigation kept users away from the fault; the fault itself was still there."
            ));
        }
    }
    for it in &items {
        let _ = writeln!(s, "- [ ] {it} (from the record)");
    }
    let _ = writeln!(s, "- [ ] {FOR_PEOPLE}");
    s
}

/// The numbers of a finding's evidence worth reading, with the thresholds
/// they were judged against where the evidence carries them.
fn evidence_lines(e: &serde_json::Value, _i: &Incident) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let num = |v: &serde_json::Value| v.as_f64();
    if let (Some(r), Some(m)) = (num(&e["error_rate"]), num(&e["peer_median"])) {
        out.push((
            "error rate".into(),
            format!("{} against the peers' median {} (an outlier needs at least +2 points, chi-squared p ≤ 0.005 and robust z ≥ 3)", pct(r), pct(m)),
        ));
    }
    if let Some(p) = num(&e["chi_squared_p"]) {
        out.push(("chi-squared p".into(), format!("{p:.2e} (threshold 0.005)")));
    }
    if let Some(z) = num(&e["mad_z"]) {
        out.push(("robust z (MAD)".into(), format!("{z:.1} (threshold 3)")));
    }
    if let (Some(l), Some(m)) = (num(&e["p99_ms"]), num(&e["peer_median_p99_ms"])) {
        out.push((
            "p99".into(),
            format!(
                "{l:.1} ms against the peers' median {m:.1} ms (an outlier needs +40 ms and 1.5×)"
            ),
        ));
    }
    if let Some(t) = num(&e["threshold"]) {
        out.push(("threshold".into(), pct(t)));
    }
    if let Some(z) = e["zones"].as_object() {
        for (zone, v) in z {
            if let Some(w) = num(&v["write_fail_ratio"]) {
                out.push((
                    format!("zone {zone}"),
                    format!(
                        "writes failing {} (reads {})",
                        pct(w),
                        num(&v["read_fail_ratio"])
                            .map(pct)
                            .unwrap_or_else(|| "not measured".into())
                    ),
                ));
            } else if let Some(r) = num(&v["error_rate"]) {
                out.push((format!("zone {zone}"), format!("error rate {}", pct(r))));
            }
        }
    }
    if let Some(h) = e["heartbeat_fail_ratio"].as_object() {
        for (inst, v) in h {
            if let Some(f) = num(v) {
                out.push((
                    format!("heartbeats of {inst}"),
                    format!("{} failing (threshold 50 %)", pct(f)),
                ));
            }
        }
    }
    if let Some(src) = e["source"].as_str() {
        out.push(("source".into(), src.to_string()));
    }
    if out.is_empty() {
        out.push(("evidence".into(), format!("`{e}`")));
    }
    out
}

/// The plot `stem` of the postmortem (as its Markdown names it,
/// `STEM.png`) as an SVG document; `None` when it has no such plot.
pub fn plot_svg(i: &Incident, stem: &str) -> Option<io::Result<String>> {
    plots(i)
        .into_iter()
        .find(|(s, _, _)| *s == stem)
        .map(|(_, _, plot)| switchyard_report::chart::svg_string(&plot))
}

/// Writes `postmortem.md` and its plots (PNG and SVG) into `dir`.
pub fn write(i: &Incident, dir: &Path) -> io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    for (stem, _, plot) in plots(i) {
        write_plot(&plot, dir, stem)?;
    }
    let path = dir.join("postmortem.md");
    std::fs::write(&path, render(i))?;
    Ok(path)
}

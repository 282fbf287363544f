//! `report.md`: the drill report for people. It states only what the report
//! holds; a missing value is shown as "—", never guessed.

use std::fmt::Write as _;

use crate::plot::{PLOTS, ROLLOUT_PLOT};
use crate::types::{Action, AlarmFired, DrillReport, Expectation, Finding, RolloutRun};

const MISSING: &str = "—";

/// Renders the Markdown text of `report.md`. The images it links to
/// (`rps.png`, `errors.png`, `p99.png`, `entry.png` and their `.svg` twins) are written by
/// [`crate::write_report`].
pub fn render_markdown(report: &DrillReport) -> String {
    let mut md = String::new();
    let verdict = if report.passed { "PASSED" } else { "FAILED" };
    // Writing to a String cannot fail.
    let _ = writeln!(
        md,
        "# Drill report: {} — {verdict}\n",
        inline(&report.scenario)
    );
    if let Some(reason) = &report.aborted {
        let _ = writeln!(md, "**Aborted:** {}\n", inline(reason));
    }
    summary(&mut md, report);
    expectations(&mut md, &report.expectations);
    plots(&mut md, report);
    rollouts(&mut md, &report.rollouts);
    findings(&mut md, &report.findings);
    alarms(&mut md, &report.alarms);
    actions(&mut md, &report.actions);
    incidents(&mut md, report);
    md
}

/// The incidents the control plane opened, with their stages on the run's
/// clock, and what the receivers were told.
fn incidents(md: &mut String, r: &DrillReport) {
    if r.incidents.is_empty() && r.notifications.is_empty() {
        return;
    }
    md.push_str(
        "## Incidents

",
    );
    let at = |v: &serde_json::Value| {
        v.as_u64()
            .map(|t| format!("{:.1} s", (t as f64 - r.started_at_ms as f64) / 1000.0))
            .unwrap_or_else(|| "—".into())
    };
    if r.incidents.is_empty() {
        md.push_str(
            "None opened.

",
        );
    } else {
        md.push_str("| incident | severity | status | scopes | occurred | detected | notified | mitigated | recovered | postmortem |
|---|---|---|---|---|---|---|---|---|---|
");
        for i in &r.incidents {
            let id = i["id"].as_str().unwrap_or("");
            let scopes: Vec<&str> = i["scopes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str())
                .collect();
            let st = &i["stages"];
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | [postmortem](incidents/{id}/postmortem.md) |",
                code(id),
                cell(i["severity"].as_str().unwrap_or("")),
                cell(i["status"].as_str().unwrap_or("")),
                cell(&scopes.join(", ")),
                at(&st["occurred"]),
                at(&st["detected"]),
                at(&st["notified"]),
                at(&st["mitigated"]),
                at(&st["recovered"]),
            );
        }
        md.push('\n');
    }
    let _ = writeln!(
        md,
        "Notifications received by the lab's inbox: {} ({} webhook, {} Slack-compatible).\n",
        r.notifications.len(),
        r.notifications
            .iter()
            .filter(|n| n["receiver"] == "webhook")
            .count(),
        r.notifications
            .iter()
            .filter(|n| n["receiver"] == "slack")
            .count(),
    );
}

fn summary(md: &mut String, r: &DrillReport) {
    let rows = [
        ("Duration", seconds(Some(r.duration_s))),
        ("Requests total", r.requests_total.to_string()),
        ("Requests failed", r.requests_failed.to_string()),
        ("Requests shed", r.requests_shed.to_string()),
        ("Requests read-only", r.requests_read_only.to_string()),
        ("Failed (% of total)", failed_percent(r)),
        ("Fault at", seconds(r.fault_at_s)),
        ("Time to detect (TTD)", seconds(r.ttd_s())),
        ("Time to mitigate (TTM)", seconds(r.ttm_s())),
        ("Restored at", seconds(r.restored_at_s)),
        ("Recovered at", seconds(r.recovered_at_s)),
        (
            "Steady state",
            format!(
                "error rate ≤ {} %, p99 ≤ {} ms",
                number(r.steady_state.max_error_rate * 100.0),
                number(r.steady_state.max_p99_ms)
            ),
        ),
    ];
    md.push_str("## Summary\n\n| | |\n|---|---|\n");
    for (name, value) in rows {
        let _ = writeln!(md, "| {name} | {value} |");
    }
    md.push('\n');
}

fn expectations(md: &mut String, expectations: &[Expectation]) {
    md.push_str("## Expectations\n\n");
    if expectations.is_empty() {
        md.push_str("None.\n\n");
        return;
    }
    md.push_str("| Expectation | Held | Detail |\n|---|:-:|---|\n");
    for e in expectations {
        let held = if e.held { "✓" } else { "✗" };
        let _ = writeln!(md, "| {} | {held} | {} |", code(&e.name), cell(&e.detail));
    }
    md.push('\n');
}

fn plots(md: &mut String, report: &DrillReport) {
    md.push_str("## Plots\n\n");
    md.push_str(
        "Dashed vertical lines mark the fault, its detection, mitigation, \
         restore and recovery where the report has them; the dashed horizontal \
         line is the steady-state bound. Each step is one second. A gap in an \
         error-rate or p99 line is a second without requests there.\n\n",
    );
    for plot in &PLOTS {
        let _ = writeln!(md, "![{}]({}.png)\n", plot.caption, plot.stem);
    }
    let rollout = (!report.config_versions.is_empty()).then_some(&ROLLOUT_PLOT);
    if let Some(plot) = rollout {
        let _ = writeln!(md, "![{}]({}.png)\n", plot.caption, plot.stem);
    }
    let svgs: Vec<String> = PLOTS
        .iter()
        .chain(rollout)
        .map(|plot| format!("[{0}.svg]({0}.svg)", plot.stem))
        .collect();
    let _ = writeln!(md, "Vector (SVG) versions: {}.\n", svgs.join(", "));
}

/// The config rollouts the drill started; nothing when it started none.
fn rollouts(md: &mut String, rollouts: &[RolloutRun]) {
    if rollouts.is_empty() {
        return;
    }
    md.push_str("## Config rollouts\n\n");
    md.push_str(
        "| rollout | from → to | state | waves passed | started | canary took it | ended | incident |\n|---|---|---|---|---|---|---|---|\n",
    );
    for r in rollouts {
        let _ = writeln!(
            md,
            "| {} | {} → {} | {} | {} of {} | {} | {} | {} | {} |",
            code(&r.id),
            code(&r.from),
            code(&r.to),
            cell(&r.state),
            r.waves_passed,
            r.waves.len(),
            seconds(Some(r.started_at_s)),
            seconds(r.canary_took_at_s),
            seconds(r.ended_at_s),
            r.incident.as_deref().map_or(MISSING.to_string(), code),
        );
    }
    md.push('\n');
    for r in rollouts.iter().filter(|r| !r.verdicts.is_empty()) {
        let _ = writeln!(md, "Verdicts of {}:\n", code(&r.id));
        for v in &r.verdicts {
            let _ = writeln!(md, "- {}", inline(v));
        }
        md.push('\n');
    }
}

fn findings(md: &mut String, findings: &[Finding]) {
    md.push_str("## Findings\n\n");
    if findings.is_empty() {
        md.push_str("None.\n\n");
        return;
    }
    md.push_str("| Scope | Kind | At | Evidence |\n|---|---|--:|---|\n");
    for f in findings {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            code(&f.scope),
            cell(&f.kind),
            seconds(Some(f.at_s)),
            code(&f.evidence.to_string())
        );
    }
    md.push('\n');
}

/// Which alarms fired and when. A run without alarms says so only when the
/// section has something to say, like the incidents.
fn alarms(md: &mut String, alarms: &[AlarmFired]) {
    if alarms.is_empty() {
        return;
    }
    md.push_str("## Alarms\n\n");
    md.push_str(
        "| Alarm | Service | Severity | First fired | Last seen | Times fired | Detail |\n|---|---|---|--:|--:|--:|---|\n",
    );
    for a in alarms {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} |",
            code(&a.name),
            cell(&a.service),
            cell(&a.severity),
            seconds(Some(a.first_at_s)),
            seconds(Some(a.last_at_s)),
            a.episodes,
            code(&a.detail.to_string())
        );
    }
    md.push('\n');
}

fn actions(md: &mut String, actions: &[Action]) {
    md.push_str("## Actions\n\n");
    if actions.is_empty() {
        md.push_str("None.\n\n");
        return;
    }
    md.push_str("| At | What | Why | Outcome |\n|--:|---|---|---|\n");
    for a in actions {
        let outcome = match (a.accepted, &a.refused_by) {
            (true, _) => "accepted".to_string(),
            (false, Some(rule)) => format!("refused by {}", code(rule)),
            (false, None) => "refused".to_string(),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {outcome} |",
            seconds(Some(a.at_s)),
            code(&a.what),
            cell(&a.why)
        );
    }
    md.push('\n');
}

fn seconds(value: Option<f64>) -> String {
    match value {
        Some(s) if s.is_finite() => format!("{s:.1} s"),
        _ => MISSING.into(),
    }
}

fn failed_percent(r: &DrillReport) -> String {
    if r.requests_total == 0 {
        return MISSING.into();
    }
    let pct = r.requests_failed as f64 / r.requests_total as f64 * 100.0;
    format!("{pct:.2} %")
}

/// Bounds as written in the scenario: `1`, `0.5`, `250`, not `1.000`.
fn number(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Text inside a table cell: a `|` would end the cell and a newline the row.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\r', '\n'], " ")
}

/// Text inside a heading or a paragraph: keep it on one line.
fn inline(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

/// A code span in a table cell. The fence is one backtick longer than the
/// longest run inside, so backticks in the value cannot close it early.
fn code(s: &str) -> String {
    let longest_run = s.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest_run + 1);
    let body = cell(s);
    // A span that starts or ends with a backtick needs padding to parse.
    let pad = if body.starts_with('`') || body.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{body}{pad}{fence}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_spans_survive_backticks_and_pipes() {
        assert_eq!(code("a|b"), "`a\\|b`");
        assert_eq!(code("x `y` z"), "``x `y` z``");
        assert_eq!(code("`q`"), "`` `q` ``");
    }

    #[test]
    fn missing_values_are_dashes() {
        assert_eq!(seconds(None), "—");
        assert_eq!(seconds(Some(f64::NAN)), "—");
        assert_eq!(seconds(Some(2.5)), "2.5 s");
        assert_eq!(number(0.01 * 100.0), "1");
        assert_eq!(number(250.0), "250");
    }
}

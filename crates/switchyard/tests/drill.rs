//! Drills end to end through the binary: a short drill writes the report
//! contract, a failing one says which expectation failed, and no lab process
//! outlives a drill, also when the drill itself is killed.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// Every drill uses the lab's fixed address plan, so they take turns.
static LAB: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn lab_turn() -> std::sync::MutexGuard<'static, ()> {
    LAB.lock().unwrap_or_else(|e| e.into_inner())
}

fn scenario(dir: &Path, expect: &str) -> std::path::PathBuf {
    let p = dir.join("short.toml");
    std::fs::write(
        &p,
        format!(
            r#"
name = "short-instance-kill"
description = "CI's drill: one instance killed for five seconds."
duration_s = 12
fault_scope = "instance:us-east-a-1"
[steady_state]
max_error_rate = 0.02
max_p99_ms = 500
[stop]
max_error_rate = 0.9
for_s = 5
[[step]]
at_s = 4
action = "kill_instance"
target = "us-east-a-1"
fault = true
[[step]]
at_s = 9
action = "restart_instance"
target = "us-east-a-1"
restore = true
{expect}
"#
        ),
    )
    .unwrap();
    p
}

/// Children of `pid`, from /proc.
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) {
            let fields: Vec<&str> = stat
                .rsplit_once(')')
                .map(|x| x.1)
                .unwrap_or("")
                .split_whitespace()
                .collect();
            if fields.get(1).and_then(|x| x.parse::<u32>().ok()) == Some(pid) {
                out.push(p);
            }
        }
    }
    out
}

/// Processes whose command line mentions `needle` (the lab's folder: every
/// edge gets its config from there).
fn processes_mentioning(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|p| alive(*p))
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .collect()
}

fn alive(pid: u32) -> bool {
    // A zombie has exited; it only waits for its new parent to reap it.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .map(|x| !x.1.trim_start().starts_with('Z'))
                .unwrap_or(false)
        })
        .unwrap_or(false)
}

#[test]
fn a_short_drill_reports_what_users_felt() {
    let _turn = lab_turn();
    let dir = tempfile::tempdir().unwrap();
    let sc = scenario(
        dir.path(),
        "[[expect]]\nmetric = \"failed_ratio\"\nop = \"<=\"\nvalue = 0.02\n",
    );
    let json = dir.path().join("out/report.json");
    let report_dir = dir.path().join("report");
    let out = Command::new(BIN)
        .arg("drill")
        .arg(&sc)
        .arg("--json")
        .arg(&json)
        .arg("--report")
        .arg(&report_dir)
        .arg("--dir")
        .arg(dir.path().join("lab"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("short-instance-kill: PASSED"), "{stdout}");
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    for field in [
        "scenario",
        "passed",
        "requests_total",
        "requests_failed",
        "requests_shed",
        "requests_read_only",
        "fault_at_s",
        "detected_at_s",
        "mitigated_at_s",
        "findings",
        "actions",
        "timeline",
    ] {
        assert!(r.get(field).is_some(), "missing {field}");
    }
    assert_eq!(r["passed"], true);
    let total = r["requests_total"].as_u64().unwrap();
    assert!(total > 1500, "two groups at 100/s for 12 s: {total}");
    let fault = r["fault_at_s"].as_f64().unwrap();
    assert!((4.0..5.0).contains(&fault), "{fault}");
    assert_eq!(r["actions"][0]["what"], "kill instance us-east-a-1");
    // The edges ejected the dead instance: that is the finding that matches.
    let detected = r["detected_at_s"]
        .as_f64()
        .expect("the edges found the dead instance");
    assert!(detected >= fault && detected < fault + 5.0, "{detected}");
    let timeline = r["timeline"].as_array().unwrap();
    assert!(timeline.len() >= 11);
    let served: u64 = timeline[6]["zones"]
        .as_object()
        .unwrap()
        .values()
        .map(|c| c["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(served, timeline[6]["requests"].as_u64().unwrap());
    assert!(report_dir.join("report.md").exists());
    // The clients found their edges through DNS: each group entered its
    // own region's edges.
    let entered = &timeline[6]["entered"];
    assert!(
        entered["americas"]["us-east"].as_u64().unwrap() > 50,
        "{entered}"
    );
    assert!(
        entered["europe"]["eu-west"].as_u64().unwrap() > 50,
        "{entered}"
    );
    for plot in ["rps", "errors", "p99", "entry"] {
        assert!(
            report_dir.join(format!("{plot}.png")).exists(),
            "{plot}.png"
        );
        assert!(
            report_dir.join(format!("{plot}.svg")).exists(),
            "{plot}.svg"
        );
    }
}

#[test]
fn a_failed_expectation_exits_non_zero_and_says_which() {
    let _turn = lab_turn();
    let dir = tempfile::tempdir().unwrap();
    let sc = scenario(
        dir.path(),
        "[[expect]]\nmetric = \"requests_total\"\nop = \"<\"\nvalue = 10\n",
    );
    let out = Command::new(BIN)
        .arg("drill")
        .arg(&sc)
        .arg("--dir")
        .arg(dir.path().join("lab"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("FAILED requests_total < 10 (measured"),
        "{stdout}"
    );
    let lab = dir.path().join("lab").display().to_string();
    assert_eq!(
        processes_mentioning(&lab),
        Vec::<u32>::new(),
        "edges left behind by a failed drill"
    );
}

#[test]
fn no_lab_process_outlives_a_killed_drill() {
    let _turn = lab_turn();
    let dir = tempfile::tempdir().unwrap();
    let sc = scenario(dir.path(), "");
    kill_the_drill_and_look(dir.path(), &sc, Duration::ZERO, None);
}

/// A paused (SIGSTOP) instance cannot read its stdin closing; the kernel
/// wakes the orphaned process group (SIGHUP, SIGCONT) when the drill dies.
#[test]
fn no_paused_instance_outlives_a_killed_drill() {
    let _turn = lab_turn();
    let dir = tempfile::tempdir().unwrap();
    let sc = dir.path().join("pause.toml");
    std::fs::write(
        &sc,
        r#"
name = "pause-then-die"
duration_s = 30
[steady_state]
max_error_rate = 0.5
max_p99_ms = 5000
[[step]]
at_s = 1
action = "pause_instance"
target = "us-east-a-1"
fault = true
[[step]]
at_s = 25
action = "resume_instance"
target = "us-east-a-1"
restore = true
"#,
    )
    .unwrap();
    kill_the_drill_and_look(
        dir.path(),
        &sc,
        Duration::from_secs(3),
        Some("--name\0us-east-a-1\0"),
    );
}

/// Starts a drill, waits for its lab (and `settle` more, then checks that
/// the process whose command line holds `stopped` is stopped), kills the
/// drill with SIGKILL and expects every lab process to end.
fn kill_the_drill_and_look(dir: &Path, sc: &Path, settle: Duration, stopped: Option<&str>) {
    let mut drill = Command::new(BIN)
        .arg("drill")
        .arg(sc)
        .arg("--dir")
        .arg(dir.join("lab"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait for the lab to be up: 2 stores, 12 instances, a control plane, 6
    // edges, 2 DNS servers.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut kids = Vec::new();
    while Instant::now() < deadline {
        kids = children(drill.id());
        if kids.len() >= 23 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(kids.len(), 23, "the lab processes: {kids:?}");
    std::thread::sleep(settle);
    if let Some(needle) = stopped {
        let state = |p: &u32| {
            let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmd)
                .contains(needle)
                .then(|| std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default())
        };
        let stat = kids.iter().find_map(state).expect("the paused instance");
        let after = stat
            .rsplit_once(')')
            .map(|x| x.1.trim_start())
            .unwrap_or("");
        assert!(after.starts_with('T'), "not stopped: {stat}");
    }
    drill.kill().unwrap();
    drill.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while kids.iter().any(|p| alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let left: Vec<u32> = kids.into_iter().filter(|p| alive(*p)).collect();
    assert!(
        left.is_empty(),
        "still running after the drill was killed: {left:?}"
    );
}

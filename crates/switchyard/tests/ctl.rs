//! `switchyard ctl` and `switchyard incident` as an operator runs them: the
//! real binary against a real control plane, reading what it prints and the
//! exit code a script would branch on.

use std::process::Command;

use switchyard_testkit::{ControlProcess, Topology};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// `switchyard ARGS` exactly as given: (exit code, stdout, stderr).
fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("SWITCHYARD_URL")
        .env_remove("SWITCHYARD_TOKEN")
        .output()
        .expect("run switchyard");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn url(cp: &ControlProcess) -> String {
    format!("http://{}", cp.addr)
}

/// No Unix-millisecond timestamp (13 digits, 2001–2286) in `text`, ids
/// (which may hold one to sort by) aside.
fn no_epoch_ms(text: &str) -> bool {
    !text
        .split_whitespace()
        .filter(|w| !w.starts_with("silence-"))
        .flat_map(|w| w.split(|c: char| !c.is_ascii_digit()))
        .any(|n| n.len() == 13)
}

fn lab() -> Topology {
    Topology::new(BIN, &[("r1", &["a", "b", "c"]), ("r2", &["d", "e"])]).with_control_plane()
}

#[tokio::test(flavor = "multi_thread")]
async fn flags_after_the_subcommand_and_a_status_with_regional_read_only_in_utc() {
    let lab = lab();
    let cp = lab.start_control().await;
    let u = url(&cp);
    let (code, out, err) = run(&[
        "ctl",
        "readonly",
        "svc",
        "on",
        "--region",
        "r2",
        "--reason",
        "store",
        "--url",
        &u,
        "--token",
        "operate-token",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("done: version 1"), "{out}");
    // The service is the plane's only one: no --service needed.
    let (code, out, err) = run(&[
        "ctl",
        "shift",
        "a",
        "--for",
        "30m",
        "--reason",
        "gray",
        "--url",
        &u,
        "--token",
        "operate-token",
    ]);
    assert_eq!(code, 0, "{out}{err}");

    let (code, out, err) = run(&["ctl", "status", "--url", &u]);
    assert_eq!(code, 0, "{err}");
    assert!(
        !out.trim_start().starts_with('{'),
        "no JSON without --json: {out}"
    );
    assert!(out.contains("read-only"), "{out}");
    let row = |region: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(region))
            .unwrap_or_else(|| panic!("no row for {region}: {out}"))
            .to_string()
    };
    // region, state, weight, failover, read-only, floor
    let r1: Vec<String> = row("r1").split_whitespace().map(String::from).collect();
    let r2: Vec<String> = row("r2").split_whitespace().map(String::from).collect();
    assert_eq!(r1[4], "off", "{out}");
    assert_eq!(r2[4], "on", "{out}");
    assert!(out.contains(" UTC (in "), "shift expiry in UTC: {out}");
    assert!(no_epoch_ms(&out), "{out}");

    // --json after the subcommand, too.
    let (code, out, _) = run(&["ctl", "status", "--json", "--url", &u]);
    assert_eq!(code, 0);
    let v: switchyard_api::StatusView = serde_json::from_str(&out).unwrap();
    assert!(v.services[0].regions[1].read_only);
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_codes_tell_refused_from_bad_input_from_unreachable_with_the_servers_reason() {
    let lab = lab();
    let cp = lab.start_control().await;
    let u = url(&cp);
    let ctl = |args: &[&str]| {
        let mut all = vec!["ctl"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--url", &u, "--token", "operate-token"]);
        run(&all)
    };
    assert_eq!(ctl(&["shift", "a", "--reason", "x"]).0, 0);
    // A second zone of r1: one zone per region at a time.
    let (code, _, err) = ctl(&["shift", "b", "--reason", "x"]);
    assert_eq!(code, 1, "refused by the server: {err}");
    assert!(err.contains("refused (409"), "{err}");
    assert!(
        err.contains("one_zone_per_region: "),
        "the rule's own words: {err}"
    );
    let (code, _, err) = ctl(&["shift", "nowhere", "--reason", "x"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown zone \"nowhere\""), "{err}");
    let (code, _, err) = ctl(&["shift", "b", "--for", "forever", "--reason", "x"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = ctl(&["shift", "d", "--for", "100d", "--reason", "x"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("op.for: "), "{err}");
    let (code, _, err) = run(&[
        "ctl",
        "shift",
        "d",
        "--reason",
        "x",
        "--url",
        &u,
        "--token",
        "read-token",
    ]);
    assert_eq!(code, 1, "a token too weak is refused by the server: {err}");
    assert!(err.contains("this needs Operate"), "{err}");
    let (code, _, err) = run(&["ctl", "status", "--url", "http://127.0.0.1:9"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("cannot reach the control plane"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_service_must_be_named_when_the_plane_has_several() {
    let lab = lab();
    let other = format!(
        "[[service]]\nname = \"other\"\nhosts = [\"other.test\"]\nmin_healthy = 0.5\nregion_preference = [\"r1\"]\n\
         [[service.route]]\nname = \"all\"\npath_prefix = \"/\"\nkind = \"read\"\npriority = \"critical\"\n\
         [[service.instance]]\nname = \"o-1\"\nzone = \"a\"\naddr = \"{}\"\n\
         [[service.instance]]\nname = \"o-2\"\nzone = \"b\"\naddr = \"{}\"\n",
        lab.aux_addr(9),
        lab.aux_addr(10)
    );
    let lab = lab.control_toml(&other);
    let cp = lab.start_control().await;
    let u = url(&cp);
    let (code, out, err) = run(&[
        "ctl",
        "shift",
        "a",
        "--reason",
        "x",
        "--url",
        &u,
        "--token",
        "operate-token",
    ]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("--service is required"), "{err}");
    assert!(err.contains("svc") && err.contains("other"), "{err}");
    assert_eq!(cp.api(None).controls().await.unwrap().version, 0);
    let (code, out, err) = run(&[
        "ctl",
        "shift",
        "a",
        "--service",
        "other",
        "--reason",
        "x",
        "--url",
        &u,
        "--token",
        "operate-token",
    ]);
    assert_eq!(code, 0, "{out}{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn incidents_read_as_text_and_stats_count_the_acknowledgement() {
    let lab = lab();
    let cp = lab.start_control().await;
    let u = url(&cp);
    let incident = |args: &[&str]| {
        let mut all = vec!["incident"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--url", &u, "--token", "operate-token"]);
        run(&all)
    };
    let (code, out, err) = incident(&["open", "--title", "checkout slow"]);
    assert_eq!(code, 0, "{out}{err}");
    let id = out
        .trim()
        .strip_prefix("opened ")
        .unwrap_or_else(|| panic!("not text: {out}"))
        .to_string();
    let (code, out, err) = incident(&["ack", &id, "--note", "on it"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = incident(&["stats"]);
    assert_eq!(code, 0, "{err}");
    let tta = out
        .lines()
        .find(|l| l.starts_with("time to acknowledge"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(tta.contains("median"), "{out}");

    let (code, out, err) = incident(&["silence", "add", "--for", "2h", "--reason", "deploy"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        !out.trim_start().starts_with('{'),
        "no JSON without --json: {out}"
    );
    assert!(out.contains(" UTC") && no_epoch_ms(&out), "{out}");
    let (code, out, _) = incident(&["silence", "list"]);
    assert_eq!(code, 0);
    assert!(out.contains("deploy") && no_epoch_ms(&out), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn rollout_plans_refuses_starts_and_reports_as_a_script_reads_it() {
    let lab = Topology::new(BIN, &[("r1", &["a", "b"])])
        .min_healthy(0.5)
        .with_control_plane();
    let cp = lab.start_control().await;
    let u = url(&cp);
    let file = lab.dir().join("lower-floor.toml");
    std::fs::write(
        &file,
        lab.config_text()
            .replace("min_healthy = 0.5", "min_healthy = 0.1"),
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let auth = ["--url", &u, "--token", "operate-token"];
    // A dry run names the risk and the waves, and starts nothing.
    let (code, out, err) = run(&[
        &[
            "rollout",
            "start",
            f,
            "--reason",
            "fewer",
            "--dry-run",
            "--json",
        ][..],
        &auth[..],
    ]
    .concat());
    assert_eq!(code, 0, "{out}{err}");
    let plan: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(plan["needs_accept"], serde_json::json!(["floor_lowered"]));
    assert_eq!(plan["waves"][0]["name"], "canary a");
    // Unacknowledged: refused, exit 1, every reason on stderr.
    let (code, out, err) =
        run(&[&["rollout", "start", f, "--reason", "fewer"][..], &auth[..]].concat());
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("service.svc.min_healthy (floor_lowered)"),
        "{err}"
    );
    assert!(err.contains("accept"), "{err}");
    // A file that is not there is bad input.
    let (code, _, err) = run(&[
        &["rollout", "start", "/nonexistent.toml", "--reason", "x"][..],
        &auth[..],
    ]
    .concat());
    assert_eq!(code, 2, "{err}");
    // Acknowledged it starts; then aborted, and `status` says so.
    let (code, out, err) = run(&[
        &[
            "rollout",
            "start",
            f,
            "--reason",
            "fewer",
            "--accept",
            "floor_lowered",
        ][..],
        &auth[..],
    ]
    .concat());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("rollout r1 started"), "{out}");
    let (code, out, err) = run(&[&["rollout", "abort", "r1"][..], &auth[..]].concat());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("r1  aborted"), "{out}");
    let (code, out, err) = run(&["rollout", "status", "--wait", "--json", "--url", &u]);
    assert_eq!(code, 1, "an aborted rollout is not a success: {out}{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["state"], "aborted");
    let (code, out, _) = run(&["rollout", "history", "--url", &u]);
    assert_eq!(code, 0);
    assert!(out.contains("r1") && out.contains("aborted"), "{out}");
    assert!(no_epoch_ms(&out), "{out}");
    // Unknown ids are bad input.
    let (code, _, err) = run(&[&["rollout", "pause", "r9"][..], &auth[..]].concat());
    assert_eq!(code, 2, "{err}");
}

//! Scenario files: every built-in parses, and bad files are refused with
//! messages that name the field and the value.

use switchyard_lab::scenario::{Scenario, BUILTIN};

#[test]
fn every_built_in_scenario_parses_and_is_under_a_minute() {
    assert_eq!(BUILTIN.len(), 9);
    for (name, text) in BUILTIN {
        let s = Scenario::parse(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(&s.name, name);
        assert!(s.duration_s < 60.0, "{name} runs {} s", s.duration_s);
        assert!(
            s.steps.iter().any(|st| st.fault),
            "{name} has no fault step"
        );
        assert!(!s.expectations.is_empty(), "{name} expects nothing");
    }
}

const BASE: &str = r#"
name = "t"
duration_s = 20
[steady_state]
max_error_rate = 0.01
max_p99_ms = 100
"#;

fn refused(extra: &str) -> String {
    Scenario::parse(&format!("{BASE}{extra}")).expect_err("should be refused")
}

#[test]
fn unknown_actions_fields_and_targets_are_named() {
    let e = refused("[[step]]\nat_s = 1\naction = \"explode\"\n");
    assert!(e.contains("unknown variant `explode`"), "{e}");
    let e = refused("[[step]]\nat_s = 1\naction = \"kill_instance\"\ntarget = \"nope\"\n");
    assert!(
        e.contains("step[0].target: unknown instance \"nope\""),
        "{e}"
    );
    let e = refused(
        "[[step]]\nat_s = 1\naction = \"kill_instance\"\ntarget = \"us-east-a-1\"\ncolour = 3\n",
    );
    assert!(e.contains("unknown field `colour`"), "{e}");
    let e = refused("[[step]]\naction = \"clear_faults\"\n");
    assert!(e.contains("at_s: required"), "{e}");
    let e = refused("surprise = true\n");
    assert!(e.contains("unknown field `surprise`"), "{e}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let e = refused(
        "[[step]]\nat_s = 99\naction = \"link\"\ntarget = \"us-east->mars\"\nfail_percent = 150\n\
         [[expect]]\nmetric = \"happiness\"\nop = \"~\"\nvalue = 1\n",
    );
    for want in [
        "step[0].at_s: 99 is outside the run (0..20)",
        "step[0].target: unknown link \"us-east->mars\"",
        "fail_percent must be a percentage between 0 and 100, got 150",
        "expect[0].metric: unknown metric \"happiness\"",
        "expect[0].op: \"~\" is not one of",
    ] {
        assert!(e.contains(want), "missing {want:?} in:\n{e}");
    }
}

#[test]
fn a_missing_file_names_the_built_ins() {
    let e = Scenario::load("/no/such/scenario.toml").unwrap_err();
    assert!(
        e.contains("instance-kill") && e.contains("region-partition"),
        "{e}"
    );
}

//! Scenario files: every built-in parses, and bad files are refused with
//! messages that name the field and the value.

use switchyard_lab::scenario::{Scenario, BUILTIN};

#[test]
fn every_built_in_scenario_parses_and_is_under_two_minutes() {
    // Drills that judge a failback must outlast the fault, its clean
    // evidence and the 30 s hold, so some take more than a minute.
    assert_eq!(BUILTIN.len(), 21);
    for (name, text) in BUILTIN {
        let s = Scenario::parse(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(&s.name, name);
        assert!(s.duration_s <= 120.0, "{name} runs {} s", s.duration_s);
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
    let e = refused("[[step]]\nat_s = 1\naction = \"kill_edges\"\ntarget = \"us-east-a\"\n");
    assert!(
        e.contains("step[0].target: unknown region \"us-east-a\""),
        "kill_edges takes a region: {e}"
    );
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

fn step(body: &str) -> String {
    format!("[[step]]\nat_s = 5\n{body}\n")
}

#[test]
fn instance_and_store_faults_name_their_fields() {
    let e = refused(&step(
        "action = \"instance_fault\"\ntarget = \"us-east-a-9\"\ndelay_ms = 70000\nerror_status = 200\nerror_percent = 120",
    ));
    for want in [
        "step[0].target: unknown instance \"us-east-a-9\"",
        "step[0].delay_ms: at most 60000, got 70000",
        "step[0].error_status: an HTTP error status (400..599), got 200",
        "step[0].error_percent: a percentage between 0 and 100, got 120",
    ] {
        assert!(e.contains(want), "missing {want:?} in:\n{e}");
    }
    let e = refused(&step("action = \"pause_instance\"\ntarget = \"nope\""));
    assert!(
        e.contains("step[0].target: unknown instance \"nope\""),
        "{e}"
    );
    let e = refused(&step(
        "action = \"store_writes\"\ntarget = \"us-east\"\nreject_percent = 150",
    ));
    assert!(
        e.contains("step[0].reject_percent: a percentage between 0 and 100, got 150"),
        "{e}"
    );
    let e = refused(&step(
        "action = \"store_writes\"\ntarget = \"us-east\"\nreject = true\nreject_percent = 30",
    ));
    assert!(
        e.contains("step[0].reject_percent: 30 contradicts reject = true"),
        "{e}"
    );
    let e = refused(&step("action = \"store_writes\"\ntarget = \"us-east\""));
    assert!(
        e.contains("step[0].reject: required unless reject_percent is given"),
        "{e}"
    );
    let e = refused(&step(
        "action = \"store_latency\"\ntarget = \"mars\"\njitter_ms = 90000",
    ));
    for want in [
        "step[0].target: unknown region \"mars\"",
        "step[0].jitter_ms: at most 60000, got 90000",
    ] {
        assert!(e.contains(want), "missing {want:?} in:\n{e}");
    }
}

#[test]
fn the_new_fault_actions_parse() {
    let s = Scenario::parse(&format!(
        "{BASE}{}{}{}{}{}{}",
        step("action = \"instance_fault\"\ntarget = \"us-east-a-1\"\ndelay_ms = 200\njitter_ms = 50"),
        step("action = \"instance_fault\"\ntarget = \"us-east-a-2\"\nerror_status = 503\nerror_percent = 20"),
        step("action = \"clear_instance_fault\"\ntarget = \"us-east-a-1\""),
        step("action = \"pause_instance\"\ntarget = \"eu-west-b-2\""),
        step("action = \"store_writes\"\ntarget = \"us-east\"\nreject_percent = 7"),
        step("action = \"store_latency\"\ntarget = \"eu-west\"\ndelay_ms = 40\nwrites_only = true"),
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.steps.len(), 6);
    assert_eq!(s.undone_within_s, 60.0, "the default");
}

#[test]
fn repeat_and_ramp_are_checked_with_their_paths() {
    let link = "action = \"link\"\ntarget = \"us-east-a->store\"\nlatency_ms = 10\n";
    let e = refused(&step(&format!(
        "{link}ramp = {{ field = \"target\", by = 1, every_s = 1, times = 2 }}"
    )));
    assert!(
        e.contains("step[0].ramp.field: \"target\" is not a numeric field of action link (numeric fields: latency_ms, jitter_ms, fail_percent, reset_percent, bandwidth_kbps)"),
        "{e}"
    );
    let e = refused(&step(
        "action = \"kill_instance\"\ntarget = \"us-east-a-1\"\nramp = { field = \"delay_ms\", by = 1, every_s = 1, times = 2 }",
    ));
    assert!(
        e.contains("is not a numeric field of action kill_instance (it has none)"),
        "{e}"
    );
    let e = refused(&step(&format!(
        "{link}ramp = {{ field = \"latency_ms\", by = 2.5, every_s = 1, times = 2 }}"
    )));
    assert!(
        e.contains("step[0].ramp.by: latency_ms is a whole number, so the ramp cannot add 2.5"),
        "{e}"
    );
    let e = refused(&step(&format!(
        "{link}ramp = {{ field = \"latency_ms\", by = -5, every_s = 1, times = 4 }}"
    )));
    assert!(
        e.contains("step[0].ramp: latency_ms would fall to -5"),
        "{e}"
    );
    let e = refused(&step(&format!(
        "{link}repeat = {{ every_s = 0, times = 0 }}"
    )));
    for want in [
        "step[0].repeat.every_s: at least 0.1 s, got 0",
        "step[0].repeat.times: between 1 and 1000, got 0",
    ] {
        assert!(e.contains(want), "missing {want:?} in:\n{e}");
    }
    let e = refused(&step(&format!(
        "{link}repeat = {{ every_s = 6, times = 4 }}"
    )));
    assert!(
        e.contains("step[0].repeat: its last occurrence (of 4, 6 s apart) at 23 s is outside the run (0..20)"),
        "{e}"
    );
    // A ramp is checked at its far end too: 40 + 3 × 25 % is no percentage.
    let e = refused(&step(
        "action = \"link\"\ntarget = \"us-east-a->store\"\nfail_percent = 40\nramp = { field = \"fail_percent\", by = 25, every_s = 2, times = 4 }",
    ));
    assert!(
        e.contains("step[0]: fail_percent must be a percentage between 0 and 100, got 115 (at the ramp's last occurrence, 11 s)"),
        "{e}"
    );
    let e = refused(&step(&format!(
        "{link}repeat = {{ every_s = 1, times = 2 }}\nramp = {{ field = \"latency_ms\", by = 1, every_s = 1, times = 2 }}"
    )));
    assert!(
        e.contains("step[0]: repeat and ramp cannot be combined"),
        "{e}"
    );
    let e = refused(&step(&format!(
        "{link}ramp = {{ field = \"latency_ms\", by = 0, every_s = 1, times = 2 }}"
    )));
    assert!(e.contains("step[0].ramp.by: a number other than 0"), "{e}");
    let e = refused(&step(&format!("{link}repeat = {{ every = 3 }}")));
    assert!(e.contains("repeat: unknown field `every`"), "{e}");
}

#[test]
fn undone_within_s_must_be_a_sensible_window() {
    let e = Scenario::parse(&format!("undone_within_s = 0{BASE}")).unwrap_err();
    assert!(
        e.contains("undone_within_s: between 0 and 3600 seconds, got 0"),
        "{e}"
    );
}

#[test]
fn the_step_examples_in_the_docs_parse() {
    let docs =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/drills.md"))
            .unwrap();
    let base = BASE.replace("duration_s = 20", "duration_s = 60");
    let mut checked = 0;
    for block in docs.split("```toml\n").skip(1) {
        let block = block.split("```").next().unwrap();
        // Whole scenarios name files that exist only on the reader's disk.
        if block.contains("name =") || !block.contains("[[step]]") {
            continue;
        }
        Scenario::parse(&format!("{base}{block}"))
            .unwrap_or_else(|e| panic!("{e}\nin the docs' example:\n{block}"));
        checked += 1;
    }
    assert!(checked >= 4, "{checked} examples");
}

#[test]
fn a_rollout_step_is_checked_field_by_field() {
    let e = refused("[[step]]\nat_s = 1\naction = \"rollout\"\n");
    assert!(
        e.contains("step[0].replace: a rollout must change the config"),
        "{e}"
    );
    let e = refused(
        r#"[[step]]
at_s = 1
action = "rollout"
replace = [["min_healthy = 0.5", "min_healthy = 0.5"], ["", "x"]]
remove_instances = ["mars-a-1"]
accept = ["floor_lowerd"]
canary = "mars-a"
expect_reasons = ["floor_lowered"]
"#,
    );
    for want in [
        "step[0].replace[0]: \"min_healthy = 0.5\" is replaced by itself",
        "step[0].replace[1]: the text to replace is empty",
        "step[0].remove_instances: unknown instance \"mars-a-1\"",
        "step[0].accept: unknown risk kind \"floor_lowerd\"",
        "step[0].canary: unknown zone \"mars-a\"",
        "step[0].expect_reasons: only a refusal has reasons",
    ] {
        assert!(e.contains(want), "{want:?} missing from: {e}");
    }
    let e = refused(
        "[[step]]\nat_s = 1\naction = \"rollout\"\nreplace = [[\"a\", \"b\"]]\nexpect = \"maybe\"\n",
    );
    assert!(e.contains("step at 1 s") && e.contains("maybe"), "{e}");
    let e = refused(
        "[[step]]\nat_s = 1\naction = \"rollout\"\nreplace = [[\"a\", \"b\"]]\nbake = \"1s\"\n",
    );
    assert!(e.contains("unknown field `bake`"), "{e}");
    // A good one parses, with its defaults.
    let s = Scenario::parse(&format!(
        "{BASE}[[step]]\nat_s = 1\naction = \"rollout\"\nreplace = [[\"a\", \"b\"]]\naccept = [\"floor_lowered\"]\n"
    ))
    .unwrap();
    match &s.steps[0].action {
        switchyard_lab::scenario::Action::Rollout(r) => {
            assert_eq!(r.replace, [("a".to_string(), "b".to_string())]);
            assert_eq!(
                r.expect,
                switchyard_lab::rollout_spec::RolloutExpect::Started
            );
        }
        other => panic!("{other:?}"),
    }
}

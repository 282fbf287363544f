//! `switchyard control backup` / `restore` and the audit export, with real
//! processes: a restored store never takes edges back until an admin adopts
//! it, bad backup files change nothing, and the history pages through
//! everything in a time window with each change's diff.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use switchyard_api::{ErrorBody, History, HistoryPage, HistoryRange};
use switchyard_model::Actor;
use switchyard_testkit::{eventually, ControlProcess, EdgeProcess, Etcd, Topology};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// `switchyard control ARGS`: (exit code, stdout, stderr).
fn control(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("control")
        .args(args)
        .output()
        .expect("run switchyard control");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn typed<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("not the answer ({e}): {v}"))
}

async fn zone_of(e: &EdgeProcess) -> String {
    e.get("/items/1").send().await.unwrap().zone()
}

async fn serving(e: &EdgeProcess, zone: &str, avoided: bool, what: &str) {
    eventually(what, Duration::from_secs(5), || async {
        let z = zone_of(e).await;
        ((z == zone) != avoided).then_some(()).ok_or(z)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restored_backup_holds_back_until_adopted_and_then_reaches_the_edges() {
    let lab = Topology::new(BIN, &[("r1", &["a", "b", "c"])]).with_control_plane();
    let _ups = lab.start_upstreams().await;
    let mut cp = lab.start_control().await;
    let edges = [lab.start_edge("a").await, lab.start_edge("b").await];
    let config = lab.config_path();
    let (code, _, out) = cp.ctl(
        "operate-token",
        &["shift", "a", "--service", "svc", "--reason", "gray zone"],
    );
    assert_eq!(code, 0, "{out}");
    serving(&edges[0], "a", true, "the shift reaches the edge").await;

    // A backup of the live store, then a newer change the backup lacks.
    let file = lab.dir().join("backup.json");
    let (code, out, err) = control(&["backup", "--config", path(&config), "--out", path(&file)]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("at version 1"), "{out}");
    let (code, out, err) = control(&["backup", "--config", path(&config), "--out", path(&file)]);
    assert_eq!(code, 2, "an existing file is not replaced: {out}");
    assert!(err.contains("--force"), "{err}");
    let (code, _, out) = cp.ctl("operate-token", &["unshift", "a", "--service", "svc"]);
    assert_eq!(code, 0, "{out}");
    serving(&edges[0], "a", false, "the unshift reaches the edge").await;
    // Each edge follows on its own: the other one may be a moment behind.
    eventually(
        "both edges hold version 2",
        Duration::from_secs(5),
        || async {
            let v = edges[1].status().await.controls.version;
            (v == 2).then_some(()).ok_or(format!("version {v}"))
        },
    )
    .await;
    let held = edges[1].status().await.controls;
    let store = held.origin.clone().expect("origin").store;
    cp.kill9();

    // The store is lost; the backup goes into a fresh one.
    let fresh = lab.dir().join("fresh.toml");
    std::fs::write(
        &fresh,
        lab.config_text().replace("control.db", "restored.db"),
    )
    .unwrap();
    let (code, out, err) = control(&["restore", "--config", path(&fresh), "--from", path(&file)]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("store {store} at version 1")),
        "{out}"
    );
    // Only into an empty store: a second restore names what is there.
    let (code, _, err) = control(&["restore", "--config", path(&fresh), "--from", path(&file)]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("not empty")
            && err.contains("controls at version 1")
            && err.contains("meta/origin"),
        "{err}"
    );

    // A plane on it holds back: the edges hold version 2 of the same store.
    let mut restored =
        ControlProcess::start(lab.bin(), &fresh, lab.control_addr(), lab.dir()).await;
    let refused = restored.ctl_refused(
        "operate-token",
        &[
            "shift",
            "b",
            "--service",
            "svc",
            "--reason",
            "on the restored store",
        ],
    );
    assert_eq!(refused.error, "store_behind", "{refused:?}");
    assert!(
        refused.reasons[0].contains("version 2 of this store"),
        "{refused:?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    serving(&edges[0], "a", false, "the edge keeps what it holds").await;
    assert_eq!(edges[1].status().await.controls.version, 2);
    restored.kill9();

    // An admin adopts it: the backup's controls (zone a shifted) win.
    let adopted = ControlProcess::start_with(
        lab.bin(),
        &fresh,
        lab.control_addr(),
        lab.dir(),
        &["--adopt"],
    )
    .await;
    serving(&edges[0], "a", true, "the adopted backup reaches the edge").await;
    let origin = edges[1].status().await.controls.origin.expect("origin");
    assert!(origin.supersedes.contains(&store), "{origin:?}");
    let (_, h, _) = adopted.ctl("read-token", &["history"]);
    let h: History = typed(h);
    let adoption = h
        .entries
        .iter()
        .find(|e| {
            e.accepted && matches!(&e.actor, Actor::Person { name } if name.contains("--adopt"))
        })
        .unwrap_or_else(|| panic!("the adoption is audited: {h:?}"));
    assert!(
        adoption.detail["diff"]
            .as_array()
            .is_some_and(|d| d.iter().any(|x| x["path"] == "origin.store")),
        "with its diff: {adoption:?}"
    );
    assert!(
        h.entries.iter().any(|e| e.reason == "gray zone"),
        "the backup's audit log came along: {h:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_backup_files_are_refused_naming_the_problem_and_change_nothing() {
    let lab = Topology::new(BIN, &[("r1", &["a", "b", "c"])]).with_control_plane();
    let cp = lab.start_control().await;
    let (code, _, out) = cp.ctl(
        "operate-token",
        &["shift", "a", "--service", "svc", "--reason", "x"],
    );
    assert_eq!(code, 0, "{out}");
    let file = lab.dir().join("good.json");
    let (code, out, err) = control(&[
        "backup",
        "--config",
        path(&lab.config_path()),
        "--out",
        path(&file),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let good = std::fs::read_to_string(&file).unwrap();
    let fresh = lab.dir().join("fresh.toml");
    std::fs::write(&fresh, lab.config_text().replace("control.db", "fresh.db")).unwrap();
    let fresh_db = lab.dir().join("fresh.db");

    let truncated = lab.dir().join("truncated.json");
    std::fs::write(&truncated, &good[..good.len() / 2]).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
    v["format"] = 99.into();
    let future = lab.dir().join("future.json");
    std::fs::write(&future, v.to_string()).unwrap();
    let no_format = lab.dir().join("other.json");
    std::fs::write(&no_format, r#"{"controls": {}}"#).unwrap();
    for (f, says) in [
        (&truncated, "truncated"),
        (&future, "format 99 is not one this build reads"),
        (&no_format, "no `format` field"),
    ] {
        let (code, out, err) = control(&["restore", "--config", path(&fresh), "--from", path(f)]);
        assert_eq!(code, 2, "{out}{err}");
        assert!(
            err.contains(path(f)) && err.contains(says) && err.contains("nothing was restored"),
            "{err}"
        );
        assert!(
            !fresh_db.exists(),
            "a refused restore leaves no store behind"
        );
    }
    // --force replaces; the file is whole either way.
    let (code, _, err) = control(&[
        "backup",
        "--config",
        path(&lab.config_path()),
        "--out",
        path(&truncated),
        "--force",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&truncated).unwrap()).unwrap();
    assert_eq!(v["format"], 1);
    assert_eq!(v["state"]["controls"]["version"], 1);
    // A mistyped store path is not backed up as an empty store.
    let (code, _, err) = control(&[
        "backup",
        "--config",
        path(&fresh),
        "--out",
        path(&lab.dir().join("empty.json")),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no such SQLite store"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_etcd_store_backs_up_and_restores_into_another_cluster() {
    let (from, to) = (Etcd::start().await, Etcd::start().await);
    let lab = Topology::new(BIN, &[("r1", &["a", "b", "c"])])
        .with_control_plane()
        .etcd_store(&from.endpoint);
    let mut cp = lab.start_control().await;
    let ops: [&[&str]; 3] = [
        &["shift", "a", "--service", "svc", "--reason", "drill"],
        &["readonly", "svc", "on", "--reason", "store impaired"],
        &["readonly", "svc", "off", "--reason", "store back"],
    ];
    for op in ops {
        let (code, _, out) = cp.ctl("operate-token", op);
        assert_eq!(code, 0, "{out}");
    }
    let before = cp.api(None).controls().await.unwrap();
    let history_before = cp.api(None).history(100).await.unwrap();
    let file = lab.dir().join("etcd.json");
    let (code, out, err) = control(&[
        "backup",
        "--config",
        path(&lab.config_path()),
        "--out",
        path(&file),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    cp.kill9();

    let other = lab.dir().join("other.toml");
    std::fs::write(
        &other,
        lab.config_text().replace(&from.endpoint, &to.endpoint),
    )
    .unwrap();
    let (code, out, err) = control(&["restore", "--config", path(&other), "--from", path(&file)]);
    assert_eq!(code, 0, "{out}{err}");
    let again = ControlProcess::start(lab.bin(), &other, lab.control_addr(), lab.dir()).await;
    let after = again.api(None).controls().await.unwrap();
    assert_eq!(
        (after.version, &after.controls),
        (before.version, &before.controls)
    );
    let history_after = again.api(None).history(100).await.unwrap();
    assert!(
        history_after.entries.starts_with(&history_before.entries),
        "{history_before:?}\n{history_after:?}"
    );
    // The restored store goes on from its version.
    let (code, _, out) = again.ctl("operate-token", &["unshift", "a", "--service", "svc"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        again.api(None).controls().await.unwrap().version,
        before.version + 1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_history_pages_through_a_time_window_with_each_changes_diff() {
    let lab = Topology::new(BIN, &[("r1", &["a", "b", "c"])]).with_control_plane();
    let cp = lab.start_control().await;
    let ops: [&[&str]; 2] = [
        &["readonly", "svc", "on", "--reason", "store impaired"],
        &["readonly", "svc", "off", "--reason", "store back"],
    ];
    let mut middle = 0;
    for round in 0..3 {
        for (i, op) in ops.iter().enumerate() {
            let (code, _, out) = cp.ctl("operate-token", op);
            assert_eq!(code, 0, "{out}");
            if round == 1 && i == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                middle = switchyard_model::time::now_ms();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    let api = cp.api(Some("read-token"));
    // Pages of two, following the cursor: all six, none twice.
    let mut range = HistoryRange {
        limit: 2,
        ..HistoryRange::default()
    };
    let mut seqs = Vec::new();
    let mut pages = 0;
    loop {
        let p = api.history_page(&range).await.unwrap();
        pages += 1;
        assert!(p.records.len() <= 2);
        seqs.extend(p.records.iter().map(|r| r.seq));
        match p.next_after {
            Some(n) => range.after = n,
            None => break,
        }
    }
    assert_eq!(seqs, vec![1, 2, 3, 4, 5, 6]);
    assert!(pages >= 3, "{pages}");

    // `ctl history --since` takes everything after the instant, each
    // accepted change with its diff.
    let since = switchyard_model::time::rfc3339_ms(middle as i64);
    let (code, v, out) = cp.ctl("read-token", &["history", "--since", &since]);
    assert_eq!(code, 0, "{out}");
    let page: HistoryPage = typed(v);
    let seqs: Vec<u64> = page.records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, vec![4, 5, 6]);
    let off = &page.records[0].entry;
    assert_eq!(off.reason, "store back");
    let diff = off.detail["diff"].as_array().expect("a diff");
    assert!(
        diff.iter().any(
            |d| d["path"].as_str().is_some_and(|p| p.contains("read_only")) && d["before"] == true
        ),
        "{diff:?}"
    );
    let (code, v, _) = cp.ctl("read-token", &["history", "--until", &middle.to_string()]);
    assert_eq!(code, 0);
    let page: HistoryPage = typed(v);
    assert_eq!(page.records.len(), 3);

    // Bad input names the parameter; the old form answers as before.
    let bad = switchyard_testkit::Req::get(cp.addr, "/v1/history?since=yesterday")
        .bearer("read-token")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status, 400);
    let body: ErrorBody = typed(bad.json());
    assert!(
        body.reasons[0].starts_with("since: \"yesterday\""),
        "{body:?}"
    );
    let (code, _, err) = cp.ctl("read-token", &["history", "--since", "yesterday"]);
    assert_eq!(code, 2, "bad input, checked before asking: {err}");
    assert!(err.contains("RFC 3339"), "{err}");
    let old = api.history(4).await.unwrap();
    assert_eq!(old.entries.len(), 4);
}

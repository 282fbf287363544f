//! The running `switchyard dns` keeping an outside zone in step: a real
//! BIND 9 updated through RFC 2136 with TSIG after a failover made through
//! the control plane's API, every push that sent changes or failed in the
//! control plane's history, and a refused key visible in `/status`, the
//! metrics and the history.

use std::time::{Duration, Instant};

use switchyard_api::OpRequest;
use switchyard_model::{AuditEntry, AuditKind, Op};
use switchyard_testkit::{eventually, Bind, BindKey, ControlProcess, Topology};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// Two regions of one zone each (`a` in r1, `b` in r2), a control plane and
/// one DNS server that pushes zone `test` to `bind` with `key` (written as
/// tsig-keygen writes it). The server does not probe (no edge runs).
fn lab(bind: &Bind, key: &BindKey) -> Topology {
    lab_resyncing(bind, key, 30)
}

fn lab_resyncing(bind: &Bind, key: &BindKey, resync_s: u64) -> Topology {
    let lab = Topology::new(BIN, &[("r1", &["a"]), ("r2", &["b"])])
        .with_control_plane()
        .with_dns(1)
        .dns_probe_interval_ms(0);
    let key_file = lab.dir().join("push.key");
    std::fs::write(
        &key_file,
        format!(
            "key \"{}\" {{\n\talgorithm {};\n\tsecret \"{}\";\n}};\n",
            key.name, key.algorithm, key.secret
        ),
    )
    .unwrap();
    lab.dns_toml(&format!(
        "control_token = \"operate-token\"\n\
         [[dns.push]]\nzone = \"test\"\nresync_s = {resync_s}\n\
         [dns.push.rfc2136]\nserver = \"{}\"\nkey_file = \"push.key\"\ntimeout_ms = 2000",
        bind.addr
    ))
}

fn edge_ip(lab: &Topology, zone: &str) -> Vec<String> {
    vec![lab.edge_addr(zone).ip().to_string()]
}

async fn dns_pushes(cp: &ControlProcess) -> Vec<AuditEntry> {
    cp.api(None)
        .history(200)
        .await
        .expect("history")
        .entries
        .into_iter()
        .filter(|e| e.kind == AuditKind::DnsPush)
        .collect()
}

/// Polls `dig` against BIND until `name` holds `want`.
async fn bind_holds(bind: &Bind, want: &[String], within: Duration) {
    eventually("BIND holds the pushed addresses", within, || async {
        let got = bind.dig_short("svc.test", "A");
        (got == want).then_some(()).ok_or(format!("{got:?}"))
    })
    .await;
}

#[tokio::test]
async fn a_failover_moves_the_outside_zones_records_and_the_history_says_so() {
    // Before Switchyard: the name points somewhere stale, `www` is someone else's.
    let bind = Bind::start(
        "test",
        &["svc 300 IN A 203.0.113.1", "www 300 IN A 203.0.113.80"],
    )
    .await;
    let lab = lab(&bind, &bind.update_key);
    let cp = lab.start_control().await;
    let ns = lab.start_dns(1).await;
    ns.following().await;
    let valid = std::process::Command::new(BIN)
        .arg("validate")
        .arg(lab.config_path())
        .output()
        .unwrap();
    assert!(valid.status.success(), "{valid:?}");

    // The first push: the default client's answer (r1, the first region).
    bind_holds(&bind, &edge_ip(&lab, "a"), Duration::from_secs(5)).await;
    assert_eq!(
        bind.dig("svc.test", "A"),
        [format!("svc.test. 30 IN A {}", edge_ip(&lab, "a")[0])],
        "the TTL of the server's answers"
    );
    eventually(
        "the first push is in the history",
        Duration::from_secs(5),
        || async {
            let p = dns_pushes(&cp).await;
            (p.len() == 1).then_some(()).ok_or(format!("{p:#?}"))
        },
    )
    .await;

    // A failover through the API: BIND gets r2's edge within seconds.
    let t = Instant::now();
    cp.api(Some("operate-token"))
        .apply(&OpRequest::new(
            Op::Failover {
                service: "svc".into(),
                to: "r2".into(),
            },
            "drill",
        ))
        .await
        .expect("failover accepted");
    bind_holds(&bind, &edge_ip(&lab, "b"), Duration::from_secs(5)).await;
    let moved = t.elapsed();
    eprintln!("failover to BIND answering r2's edge: {moved:?}");
    assert_eq!(bind.dig_short("www.test", "A"), ["203.0.113.80"]);

    eventually(
        "the failover's push is in the history",
        Duration::from_secs(5),
        || async {
            let p = dns_pushes(&cp).await;
            (p.len() == 2).then_some(()).ok_or(format!("{p:#?}"))
        },
    )
    .await;
    let entries = dns_pushes(&cp).await;
    let to = |e: &AuditEntry| e.detail["summary"]["changes"][0]["to"]["addrs"][0].clone();
    // The first push replaced the stale record with r1's edge.
    let first = entries
        .iter()
        .find(|e| to(e) == edge_ip(&lab, "a")[0])
        .unwrap_or_else(|| panic!("{entries:#?}"));
    assert_eq!(
        first.detail["summary"]["changes"][0]["from"]["addrs"][0],
        "203.0.113.1"
    );
    let e = entries
        .iter()
        .find(|e| to(e) == edge_ip(&lab, "b")[0])
        .unwrap_or_else(|| panic!("{entries:#?}"));
    assert!(e.accepted, "{e:#?}");
    assert_eq!(e.actor.to_string(), "operate-user");
    assert!(
        e.action
            .contains("1 RRset changed in zone test. by server ns1"),
        "{e:#?}"
    );
    let change = &e.detail["summary"]["changes"][0];
    assert_eq!(change["name"], "svc.test.");
    assert_eq!(change["from"]["addrs"][0], edge_ip(&lab, "a")[0]);
    assert_eq!(change["to"]["addrs"][0], edge_ip(&lab, "b")[0]);

    let status = ns.status().await;
    assert_eq!(status.pushes.len(), 1, "{status:#?}");
    assert_eq!(status.pushes[0].zone, "test.");
    assert_eq!(status.pushes[0].result, "sent");
    assert!(ns
        .metrics()
        .await
        .contains("switchyard_dns_push_total{target=\"test.\",result=\"sent\"} 2"));
}

#[tokio::test]
async fn a_wrong_key_is_refused_by_bind_and_shown_in_status_metrics_and_history() {
    let bind = Bind::start("test", &["svc 300 IN A 203.0.113.1"]).await;
    let unknown = BindKey {
        name: "no-such-key.".into(),
        ..bind.update_key.clone()
    };
    let lab = lab(&bind, &unknown);
    let cp = lab.start_control().await;
    let ns = lab.start_dns(1).await;
    ns.following().await;

    eventually(
        "the refusal is in /status",
        Duration::from_secs(5),
        || async {
            let s = ns.status().await;
            match s.pushes.first() {
                Some(p) if p.result == "failed" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let p = ns.status().await.pushes[0].clone();
    assert_eq!(p.error_kind.as_deref(), Some("rejected"));
    let err = p.error.unwrap();
    assert!(
        err.contains("NOTAUTH/BADKEY") && err.contains("`no-such-key.`"),
        "{err}"
    );
    assert!(ns
        .metrics()
        .await
        .contains("switchyard_dns_push_total{target=\"test.\",result=\"rejected\"}"));
    assert!(ns.log().contains("dns push failed"), "{}", ns.log());

    eventually(
        "the refusal is in the history",
        Duration::from_secs(5),
        || async {
            let p = dns_pushes(&cp).await;
            (p.len() == 1).then_some(()).ok_or(format!("{p:#?}"))
        },
    )
    .await;
    let e = &dns_pushes(&cp).await[0];
    assert!(!e.accepted, "{e:#?}");
    assert!(e.reason.contains("NOTAUTH/BADKEY"), "{e:#?}");
    assert!(
        e.action.contains("zone test. by server ns1 failed"),
        "{e:#?}"
    );
    // The old record stands.
    assert_eq!(bind.dig_short("svc.test", "A"), ["203.0.113.1"]);

    // Retries after a refusal are not recorded again: one entry per error.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(dns_pushes(&cp).await.len(), 1);
    assert!(ns
        .metrics()
        .await
        .contains("switchyard_dns_push_total{target=\"test.\",result=\"rejected\"} 2"));
}

#[test]
fn validate_names_every_push_problem_with_its_path() {
    let lab = Topology::new(BIN, &[("r1", &["a"]), ("r2", &["b"])])
        .with_dns(2)
        .dns_toml(
            "[[dns.push]]\nzone = \"elsewhere.example\"\nattempts = 0\n\
             [dns.push.rfc2136]\nserver = \"bind.example:53\"\nkey_file = \"missing.key\"",
        );
    let config = lab.write_config();
    let out = std::process::Command::new(BIN)
        .arg("validate")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "dns.push: 2 servers and none has push = true",
        "dns.push[0].attempts: must be at least 1",
        "dns.push[0].rfc2136.server: \"bind.example:53\" is not an IP address with a port",
        "dns.push[0].rfc2136.key_file: cannot read \"missing.key\"",
    ] {
        assert!(err.contains(want), "{want:?} in {err}");
    }
}

#[tokio::test]
async fn the_push_event_endpoint_needs_an_operate_token_and_a_whole_event() {
    let lab = Topology::new(BIN, &[("r1", &["a"]), ("r2", &["b"])]).with_control_plane();
    let cp = lab.start_control().await;
    let ev = switchyard_api::dns::DnsPushEvent {
        server: "ns1".into(),
        zone: "example.test.".into(),
        provider: "rfc2136 192.0.2.53:53 key k.".into(),
        ok: false,
        changes: 1,
        error: Some("NOTAUTH/BADKEY".into()),
        summary: serde_json::json!({"result": "failed"}),
    };
    for (token, status) in [(None, 401), (Some("read-token"), 403)] {
        let err = cp.api(token).dns_push_event(&ev).await.unwrap_err();
        assert_eq!(err.status(), Some(status), "{token:?}: {err}");
    }
    let empty = switchyard_api::dns::DnsPushEvent {
        zone: " ".into(),
        ..ev.clone()
    };
    let err = cp
        .api(Some("operate-token"))
        .dns_push_event(&empty)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
    assert!(err.to_string().contains("zone: required"), "{err}");
    assert!(dns_pushes(&cp).await.is_empty());

    cp.api(Some("operate-token"))
        .dns_push_event(&ev)
        .await
        .expect("recorded");
    let entries = dns_pushes(&cp).await;
    assert_eq!(entries.len(), 1);
    assert!(!entries[0].accepted);
    assert_eq!(entries[0].reason, "NOTAUTH/BADKEY");
    assert_eq!(entries[0].detail["summary"]["result"], "failed");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_failover_preview_says_which_dns_answers_move() {
    let lab = Topology::new(BIN, &[("r1", &["a"]), ("r2", &["b"])])
        .with_control_plane()
        .with_dns(1)
        .dns_probe_interval_ms(0);
    let cp = lab.start_control().await;
    let url = format!("http://{}", cp.addr);
    // Not confirmed (stdin is no terminal): the preview only, nothing changes.
    let out = std::process::Command::new(BIN)
        .args(["ctl", "failover", "svc", "--to", "r2", "--reason", "drill"])
        .args(["--url", &url, "--token", "operate-token"])
        .env_remove("SWITCHYARD_URL")
        .env_remove("SWITCHYARD_TOKEN")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    let want = [
        "  DNS answers move too:",
        "    svc.test for clients no geo prefix places, and pushed zones: r1 -> r2 (r1 drops out)",
        "    svc.test for clients in r1: r1 -> r2 (r1 drops out)",
    ];
    let lines: Vec<&str> = text.lines().collect();
    for w in want {
        assert!(lines.contains(&w), "{w:?} in:\n{text}");
    }
    // r2's clients were answered r2 and still are: not listed.
    assert!(!text.contains("clients in r2"), "{text}");

    // The typed preview carries the same.
    let p = cp
        .api(Some("operate-token"))
        .preview(&OpRequest::new(
            Op::Failover {
                service: "svc".into(),
                to: "r2".into(),
            },
            "drill",
        ))
        .await
        .unwrap();
    assert_eq!(p.dns.len(), 2, "{p:#?}");
    assert_eq!(p.dns[1].client_region.as_deref(), Some("r1"));
    assert_eq!(p.dns[1].dropped, ["r1"]);
    assert_eq!(p.dns[1].names, ["svc.test"]);

    // Without [dns], the preview says nothing of DNS.
    let plain = Topology::new(BIN, &[("r1", &["a"]), ("r2", &["b"])]).with_control_plane();
    let cp2 = plain.start_control().await;
    let p = cp2
        .api(Some("operate-token"))
        .preview(&OpRequest::new(
            Op::Failover {
                service: "svc".into(),
                to: "r2".into(),
            },
            "drill",
        ))
        .await
        .unwrap();
    assert!(p.dns.is_empty());
}

#[tokio::test]
async fn a_change_made_at_bind_behind_switchyards_back_is_undone_on_resync() {
    use switchyard_dns::provider::rfc2136::{Rfc2136, Rfc2136Config, TsigAlg, TsigKey};
    use switchyard_dns::provider::{push, Desired, PushOptions, PushOutcome};

    let bind = Bind::start("test", &[]).await;
    let lab = lab_resyncing(&bind, &bind.update_key, 1);
    let _cp = lab.start_control().await;
    let ns = lab.start_dns(1).await;
    ns.following().await;
    bind_holds(&bind, &edge_ip(&lab, "a"), Duration::from_secs(5)).await;

    // Someone edits the record by hand (here: another signed UPDATE).
    let k = &bind.update_key;
    let key = TsigKey::new(&k.name, TsigAlg::parse(&k.algorithm).unwrap(), &k.secret).unwrap();
    let by_hand = Rfc2136::new(Rfc2136Config::new(bind.addr, key)).unwrap();
    let mut d = Desired::new("test").unwrap();
    d.set("svc.test", 30, ["203.0.113.9".parse().unwrap()])
        .unwrap();
    let r = push(&by_hand, &d, &PushOptions::default()).await;
    assert!(matches!(r.outcome, PushOutcome::Sent { .. }), "{r:?}");
    assert_eq!(bind.dig_short("svc.test", "A"), ["203.0.113.9"]);

    // No answer changed at Switchyard; the resync alone puts it back.
    let t = Instant::now();
    bind_holds(&bind, &edge_ip(&lab, "a"), Duration::from_secs(4)).await;
    eprintln!("drift undone after {:?}", t.elapsed());
}

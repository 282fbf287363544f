//! The control plane over HTTPS with a private CA, as real processes: an
//! edge that trusts the CA follows the plane and gets its controls, one that
//! does not refuses it and says why, `switchyard ctl --ca-file` works
//! where plain `ctl` is refused, and a follower plane passes a leader-only
//! request to the leader over HTTPS.

use std::process::Command;
use std::time::Duration;

use switchyard_api::{Applied, OpRequest, SilenceRequest};
use switchyard_model::Op;
use switchyard_testkit::{eventually, EdgeProcess, Etcd, TestCa, Topology};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

fn shift_a() -> OpRequest {
    OpRequest::new(
        Op::Shift {
            service: "svc".into(),
            zone: "a".into(),
            for_: Duration::from_secs(3600),
        },
        "tls test",
    )
}

async fn zone_of(e: &EdgeProcess) -> String {
    e.get("/items/1").send().await.unwrap().zone()
}

/// `switchyard ctl --json ARGS` against `url`: (exit code, stdout + stderr).
fn ctl(url: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .args(["ctl", "--json", "--url", url])
        .args(args)
        .env_remove("SWITCHYARD_CA_FILE")
        .output()
        .expect("run switchyard ctl");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edge_trusting_the_private_ca_follows_the_https_plane() {
    let ca = TestCa::new("switchyard control test CA");
    let (lab, _) =
        Topology::new(BIN, &[("r1", &["a", "b", "c"])]).with_https_control_plane(&ca, true);
    let _ups = lab.start_upstreams().await;
    let cp = lab.start_control().await;
    let edge = lab.start_edge("b").await;
    eventually(
        "the edge connects over HTTPS",
        Duration::from_secs(5),
        || async {
            let s = edge.status().await;
            s.control_plane
                .connected
                .then_some(())
                .ok_or(format!("{:?}", s.control_plane))
        },
    )
    .await;
    let applied: Applied = cp
        .api(Some("operate-token"))
        .apply(&shift_a())
        .await
        .unwrap();
    assert!(applied.accepted, "{applied:?}");
    eventually(
        "the shift reaches the edge",
        Duration::from_secs(3),
        || async {
            let z = zone_of(&edge).await;
            (z != "a").then_some(()).ok_or(z)
        },
    )
    .await;
    assert_eq!(edge.status().await.controls.version, applied.version);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edge_without_the_ca_refuses_the_plane_and_says_why() {
    let ca = TestCa::new("switchyard control test CA");
    let (lab, _) =
        Topology::new(BIN, &[("r1", &["a", "b", "c"])]).with_https_control_plane(&ca, false);
    let _ups = lab.start_upstreams().await;
    let cp = lab.start_control().await;
    let edge = lab.start_edge("b").await;
    // A change the edge must not get: it cannot verify who sends it.
    let applied = cp
        .api(Some("operate-token"))
        .apply(&shift_a())
        .await
        .unwrap();
    assert!(applied.accepted);
    eventually(
        "the edge logs why it refuses the plane",
        Duration::from_secs(5),
        || async {
            let log = edge.log();
            log.contains("UnknownIssuer")
                .then_some(())
                .ok_or("no UnknownIssuer in the edge's log yet".to_string())
        },
    )
    .await;
    assert!(
        edge.log().contains("not issued by a trusted CA"),
        "{}",
        edge.log()
    );
    let s = edge.status().await;
    assert!(!s.control_plane.connected, "{s:?}");
    assert_eq!(
        s.controls.version, 0,
        "no controls from an unverified plane"
    );
    assert_eq!(zone_of(&edge).await, "b", "it keeps serving as it was");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edge_whose_ca_file_cannot_be_read_says_so_and_keeps_serving() {
    let ca = TestCa::new("switchyard control test CA");
    let (lab, _) =
        Topology::new(BIN, &[("r1", &["a", "b", "c"])]).with_https_control_plane(&ca, false);
    let lab = lab.edge_toml("control_ca_file = \"/nonexistent/ca.pem\"");
    let _ups = lab.start_upstreams().await;
    let _cp = lab.start_control().await;
    let edge = lab.start_edge("b").await;
    eventually(
        "the edge names the file",
        Duration::from_secs(5),
        || async {
            let log = edge.log();
            (log.contains("edge.control_ca_file: cannot read")
                && log.contains("/nonexistent/ca.pem"))
            .then_some(())
            .ok_or(log)
        },
    )
    .await;
    assert!(!edge.status().await.control_plane.connected);
    assert_eq!(zone_of(&edge).await, "b");
}

#[tokio::test(flavor = "multi_thread")]
async fn ctl_verifies_the_https_plane_with_its_ca_file() {
    let ca = TestCa::new("switchyard control test CA");
    let (lab, ca_file) =
        Topology::new(BIN, &[("r1", &["a", "b", "c"])]).with_https_control_plane(&ca, true);
    let cp = lab.start_control().await;
    let url = format!("https://{}", cp.addr);
    let ca_arg = ca_file.display().to_string();

    // Clients that connect and never start their handshake hold up no one.
    let mut stalled = Vec::new();
    for _ in 0..3 {
        stalled.push(tokio::net::TcpStream::connect(cp.addr).await.unwrap());
    }
    let (code, out) = ctl(&url, &["--ca-file", &ca_arg, "status"]);
    assert_eq!(code, 0, "{out}");
    drop(stalled);
    let (code, out) = ctl(
        &url,
        &[
            "--ca-file",
            &ca_arg,
            "--token",
            "operate-token",
            "shift",
            "a",
            "--service",
            "svc",
            "--reason",
            "over https",
        ],
    );
    assert_eq!(code, 0, "{out}");

    // Without the CA: unreachable (3), naming the problem.
    let (code, out) = ctl(&url, &["status"]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("UnknownIssuer") && out.contains("--ca-file"),
        "{out}"
    );

    // The right CA, but a certificate for another name.
    let elsewhere = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other_url = format!("https://{}", elsewhere.local_addr().unwrap());
    let acceptor = ca.server_cert(&["10.9.9.9"]).acceptor();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = elsewhere.accept().await {
            let _ = acceptor.accept(tcp).await;
        }
    });
    let (code, out) = ctl(&other_url, &["--ca-file", &ca_arg, "status"]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("does not name the host"), "{out}");

    // A CA file that is no CA file is bad input, named.
    let (code, out) = ctl(&url, &["--ca-file", "/nonexistent/ca.pem", "status"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("--ca-file") && out.contains("/nonexistent/ca.pem"),
        "{out}"
    );

    // The environment variable does what the flag does.
    let out = Command::new(BIN)
        .args(["ctl", "--json", "--url", &url, "status"])
        .env("SWITCHYARD_CA_FILE", &ca_arg)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn validate_reads_the_certificate_files_and_names_each_bad_one() {
    let ca = TestCa::new("switchyard control test CA");
    let (lab, _) = Topology::new(BIN, &[("r1", &["a"])]).with_https_control_plane(&ca, true);
    let text = lab
        .config_text()
        .replace("control-ca.pem", "missing-ca.pem")
        .replace("control.key\"", "control.crt\"");
    std::fs::write(lab.config_path(), text).unwrap();
    let out = Command::new(BIN)
        .arg("validate")
        .arg(lab.config_path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for field in [
        "edge.control_ca_file: cannot read",
        "control.tls.ca_file: cannot read",
        "control.tls.key_file: ",
    ] {
        assert!(err.contains(field), "{field:?} in {err}");
    }
    assert!(err.contains("missing-ca.pem"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_follower_plane_passes_leader_only_requests_on_over_https() {
    let etcd = Etcd::start().await;
    let ca = TestCa::new("switchyard control test CA");
    let (lab, _) = Topology::new(BIN, &[("r1", &["a", "b", "c"])])
        .etcd_store(&etcd.endpoint)
        .with_https_control_plane(&ca, true);
    let first = lab.start_control().await;
    let second = lab.start_another_control(1).await;
    let planes = [
        first.api(Some("operate-token")),
        second.api(Some("operate-token")),
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    // One plane leads, and the other has heard of it: a follower learns
    // the leader at its next election round, and until then answers 503.
    let leader = loop {
        let mut acting = Vec::new();
        let mut views = Vec::new();
        for (i, p) in planes.iter().enumerate() {
            if let Ok(l) = p.leader().await {
                if l.acting {
                    acting.push(i);
                }
                views.push(l);
            }
        }
        if let ([i], 2) = (&acting[..], views.len()) {
            if views[1 - i].leader.as_ref() == Some(&views[*i].me) {
                break *i;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "one plane should lead: {acting:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let follower = &planes[1 - leader];
    let silence = follower
        .add_silence(&SilenceRequest {
            service: Some("svc".into()),
            severity: None,
            scope_prefix: None,
            duration: "1h".into(),
            reason: "passed on over https".into(),
        })
        .await
        .unwrap_or_else(|e| panic!("the follower passes it to the leader: {e}"));
    let at_leader = planes[leader].silences().await.unwrap();
    assert!(
        at_leader.silences.iter().any(|s| s.id == silence.id),
        "{at_leader:?}"
    );
}

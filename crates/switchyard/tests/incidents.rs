//! Incidents end to end with real processes: a gray zone becomes one
//! incident whose timeline the control plane fills in, people are told
//! through real HTTP receivers (one of which fails at first), people take it
//! from there, and the incident survives kill -9 of the control plane.

use std::net::SocketAddr;
use std::time::Duration;

use http::Method;
use serde_json::{json, Value};
use switchyard_testkit::receiver::Receiver;
use switchyard_testkit::{eventually, Req, Topology, Traffic};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

async fn incidents(cp: SocketAddr) -> Vec<Value> {
    Req::get(cp, "/v1/incidents").send().await.unwrap().json()["incidents"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn incident(cp: SocketAddr, id: &str) -> Value {
    Req::get(cp, &format!("/v1/incidents/{id}"))
        .send()
        .await
        .unwrap()
        .json()
}

async fn post(cp: SocketAddr, path: &str, body: Value) -> (u16, Value) {
    let r = Req::post(cp, path)
        .bearer("operate-token")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let v = serde_json::from_str(&r.body).unwrap_or(Value::Null);
    (r.status.as_u16(), v)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gray_zone_is_one_incident_told_mitigated_resolved_and_kept() {
    let hook: SocketAddr = "127.0.9.41:9000".parse().unwrap();
    let chat: SocketAddr = "127.0.9.42:9000".parse().unwrap();
    let webhook = Receiver::start(hook).await;
    let slack = Receiver::start(chat).await;
    // The on-call webhook is down at first: the first two attempts fail.
    webhook.fail_first(2, 503);
    let notify = format!(
        "[control.incidents]\nresolve_after_ms = 15000\n\
         [control.notify]\ngroup_wait_ms = 500\n[control.notify.retry]\nattempts = 4\ninitial_backoff_ms = 100\n\
         [[control.notify.receiver]]\nname = \"oncall\"\nkind = \"webhook\"\nurl = \"{}\"\n\
         [[control.notify.receiver]]\nname = \"chat\"\nkind = \"slack\"\nurl = \"{}\"\n\
         [[control.notify.route]]\nreceivers = [\"oncall\", \"chat\"]\n",
        webhook.url("/hook"),
        slack.url("/slack")
    );
    let lab = Topology::new(BIN, &[("r1", &["a", "b", "c"])])
        .with_control_plane()
        .playbooks("auto")
        .control_toml(&notify);
    let ups = lab.start_upstreams().await;
    let mut cp = lab.start_control().await;
    let edges = [
        lab.start_edge("a").await,
        lab.start_edge("b").await,
        lab.start_edge("c").await,
    ];
    let addrs: Vec<_> = edges.iter().map(|e| e.listen).collect();
    let traffic = Traffic::start(&addrs, "svc.test", &[(Method::GET, "/items/1")]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        incidents(cp.addr).await.is_empty(),
        "a healthy start opens nothing"
    );

    // Zone a's instances fail their requests while /health stays green.
    ups["a-1"].set_status(500);
    ups["a-2"].set_status(500);
    eventually(
        "one incident opens, the zone is shifted and it is mitigated",
        Duration::from_secs(30),
        || async {
            let list = incidents(cp.addr).await;
            match &list[..] {
                [i] if i["stages"]["mitigated"].is_u64() => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let id = incidents(cp.addr).await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The zone is fixed; the playbook fails back later, the incident resolves.
    ups["a-1"].set_status(200);
    ups["a-2"].set_status(200);
    eventually(
        "the incident recovers and resolves",
        Duration::from_secs(40),
        || async {
            let i = incident(cp.addr, &id).await;
            (i["status"] == "resolved")
                .then_some(())
                .ok_or(format!("{} {}", i["status"], i["stages"]))
        },
    )
    .await;
    traffic.stop().await;
    let i = incident(cp.addr, &id).await;
    assert_eq!(i["service"], "svc");
    assert_eq!(i["scopes"], json!(["zone:a"]), "one incident for the zone");
    let st = |s: &str| {
        i["stages"][s]
            .as_u64()
            .unwrap_or_else(|| panic!("no stage {s}: {}", i["stages"]))
    };
    assert!(st("occurred") <= st("detected"));
    assert!(st("detected") <= st("notified"));
    assert!(st("detected") <= st("mitigated"));
    assert!(st("mitigated") <= st("recovered"));
    // Every delivery attempt is in the timeline: two failures, then delivered.
    let attempts: Vec<&Value> = i["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "notification" && e["detail"]["receiver"] == "oncall")
        .collect();
    assert!(attempts.len() >= 3, "{attempts:?}");
    assert_eq!(attempts[0]["detail"]["ok"], false);
    assert_eq!(attempts[0]["detail"]["status"], 503);
    assert_eq!(attempts[1]["detail"]["ok"], false);
    assert_eq!(attempts[2]["detail"]["ok"], true);
    // What the receivers got: the webhook's JSON and Slack's text.
    eventually(
        "the webhook is told of the opening and the resolution",
        Duration::from_secs(5),
        || async {
            let delivered: Vec<Value> = webhook
                .requests()
                .iter()
                .filter(|r| r.answered == 200)
                .map(|r| r.json())
                .collect();
            let told = |status: &str| {
                delivered.iter().any(|b| {
                    b["incident"]["id"] == id.as_str() && b["incident"]["status"] == status
                })
            };
            (told("mitigating") || told("identified"))
                .then_some(())
                .filter(|_| told("resolved"))
                .ok_or(format!("{delivered:?}"))
        },
    )
    .await;
    let chat_bodies: Vec<Value> = slack.requests().iter().map(|r| r.json()).collect();
    assert!(
        chat_bodies
            .iter()
            .all(|b| b["text"].as_str().is_some_and(|t| t.contains("svc"))),
        "{chat_bodies:?}"
    );

    // People: bad ids, bad moves and the stages in order.
    let r = Req::get(cp.addr, "/v1/incidents/nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 404, "{}", r.body);
    let (code, v) = post(
        cp.addr,
        &format!("/v1/incidents/{id}/status"),
        json!({"status": "investigating"}),
    )
    .await;
    assert_eq!(code, 409, "{v}");
    assert!(
        v["reasons"][0].as_str().unwrap().contains("stays resolved"),
        "{v}"
    );
    let (code, v) = post(
        cp.addr,
        &format!("/v1/incidents/{id}/stage"),
        json!({"stage": "reviewed"}),
    )
    .await;
    assert_eq!(code, 409, "{v}");
    let (code, v) = post(
        cp.addr,
        &format!("/v1/incidents/{id}/stage"),
        json!({"stage": "analysed", "note": "store link flaky"}),
    )
    .await;
    assert_eq!(code, 200, "{v}");
    let (code, v) = post(
        cp.addr,
        &format!("/v1/incidents/{id}/stage"),
        json!({"stage": "sideways"}),
    )
    .await;
    assert_eq!(code, 400, "{v}");

    // kill -9: the incident and its timeline are still there.
    let before = incident(cp.addr, &id).await;
    cp.kill9();
    cp.restart().await;
    let after = incident(cp.addr, &id).await;
    assert_eq!(after["stages"], before["stages"]);
    assert_eq!(after["timeline"], before["timeline"]);

    // The postmortem from the command line.
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .args([
            "incident",
            "--url",
            &format!("http://{}", cp.addr),
            "postmortem",
            &id,
            "--out",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let md = std::fs::read_to_string(dir.path().join("postmortem.md")).unwrap();
    assert!(md.contains(&format!("# Postmortem: {id}")));
    assert!(md.contains("zone:a"));
    assert!(dir.path().join("errors.png").exists());

    // The status feed says the service is fine again.
    let feed = Req::get(cp.addr, "/v1/status-feed/svc")
        .send()
        .await
        .unwrap()
        .json();
    assert_eq!(feed["service"], "svc");
    assert!(feed["incident"].is_null(), "{feed}");
}

#[tokio::test(flavor = "multi_thread")]
async fn people_open_incidents_and_silence_notifications() {
    let hook: SocketAddr = "127.0.9.43:9000".parse().unwrap();
    let webhook = Receiver::start(hook).await;
    let notify = format!(
        "[control.notify]\ngroup_wait_ms = 200\n\
         [[control.notify.receiver]]\nname = \"oncall\"\nkind = \"webhook\"\nurl = \"{}\"\n\
         [[control.notify.route]]\nreceivers = [\"oncall\"]\nmin_severity = \"SEV2\"\n",
        webhook.url("/hook")
    );
    let lab = Topology::new(BIN, &[("r1", &["a", "b", "c"])])
        .with_control_plane()
        .control_toml(&notify);
    let cp = lab.start_control().await;
    let r = Req::post(cp.addr, "/v1/incidents")
        .body(json!({"service": "svc", "title": "x"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 401, "opening needs a token");
    let (code, v) = post(
        cp.addr,
        "/v1/incidents",
        json!({"service": "nope", "title": "x"}),
    )
    .await;
    assert_eq!(code, 404, "{v}");
    let (code, v) = post(
        cp.addr,
        "/v1/incidents",
        json!({"service": "svc", "title": " ", "severity": "SEV9"}),
    )
    .await;
    assert_eq!(code, 400, "{v}");
    assert_eq!(
        v["reasons"].as_array().unwrap().len(),
        2,
        "every problem at once: {v}"
    );
    // A silence for the service holds its notifications back, and says so.
    let (code, v) = post(
        cp.addr,
        "/v1/silences",
        json!({"service": "svc", "for": "1h", "reason": "planned maintenance"}),
    )
    .await;
    assert_eq!(code, 201, "{v}");
    let silence = v["id"].as_str().unwrap().to_string();
    let (code, v) = post(
        cp.addr,
        "/v1/incidents",
        json!({"service": "svc", "title": "checkout slow in EU", "severity": "SEV2"}),
    )
    .await;
    assert_eq!(code, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    eventually(
        "the silence is in the timeline",
        Duration::from_secs(5),
        || async {
            let i = incident(cp.addr, &id).await;
            i["timeline"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| {
                    e["text"]
                        .as_str()
                        .is_some_and(|t| t.contains(&format!("silenced by {silence}")))
                })
                .then_some(())
                .ok_or(i["timeline"].to_string())
        },
    )
    .await;
    assert!(webhook.requests().is_empty(), "silenced");
    let (code, v) = post(
        cp.addr,
        &format!("/v1/incidents/{id}/ack"),
        json!({"note": "on it"}),
    )
    .await;
    assert_eq!(code, 200, "{v}");
    assert!(v["stages"]["acknowledged"].is_u64());
    let (code, _) = post(cp.addr, &format!("/v1/incidents/{id}/ack"), json!({})).await;
    assert_eq!(code, 409, "acknowledged once");
    // The silence lifted, the next change is told.
    let r = Req::new(Method::DELETE, cp.addr, &format!("/v1/silences/{silence}"))
        .bearer("operate-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let (code, v) = post(
        cp.addr,
        &format!("/v1/incidents/{id}/status"),
        json!({"status": "mitigating", "note": "shifted eu-west-b"}),
    )
    .await;
    assert_eq!(code, 200, "{v}");
    eventually(
        "the webhook hears of it",
        Duration::from_secs(5),
        || async {
            webhook
                .requests()
                .iter()
                .any(|r| r.json()["incident"]["status"] == "mitigating")
                .then_some(())
                .ok_or("nothing yet".to_string())
        },
    )
    .await;
    let feed = Req::get(cp.addr, "/v1/status-feed")
        .send()
        .await
        .unwrap()
        .json();
    assert_eq!(feed["services"][0]["incident"]["id"], id.as_str(), "{feed}");
    assert_ne!(feed["services"][0]["status"], "operational", "{feed}");
}

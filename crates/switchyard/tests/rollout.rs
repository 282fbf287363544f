//! Staged config rollouts with real edges, a real control plane and real
//! traffic: waves and bake times honoured, a broken canary caught and
//! rolled back with an incident, risky differences refused without an
//! acknowledgement, and a plane killed mid-rollout carrying it on.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchyard_api::rollout::StartRollout;
use switchyard_api::Client;
use switchyard_model::canary::Verdict;
use switchyard_model::incident::EntryKind;
use switchyard_model::rollout::{Rollout, RolloutState};
use switchyard_model::AuditKind;
use switchyard_testkit::{eventually, sample, EdgeProcess, Req, Topology, HOST};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// Two regions, r1 with zones a and b, r2 with c; bakes short enough for
/// a test, enough traffic (see [`Traffic`]) to judge within them.
fn topology() -> Topology {
    bakes_short(Topology::new(BIN, &[("r1", &["a", "b"]), ("r2", &["c"])]).with_control_plane())
}

fn bakes_short(t: Topology) -> Topology {
    t.min_healthy(0.5).control_toml(
            "[control.rollout]\nbake_ms = 3000\ntake_timeout_ms = 15000\nmax_extra_wait_ms = 20000\n[control.rollout.canary]\nmin_requests = 40\nmin_seconds = 2\n",
        )
}

/// The config with `table` added to the service (before its routes).
fn with_service_table(text: &str, table: &str) -> String {
    let at = text
        .find("[[service.route]]")
        .expect("the service has routes");
    format!("{}{table}\n{}", &text[..at], &text[at..])
}

/// Requests to every edge, 50 a second each, counted per zone.
struct Traffic {
    counts: Arc<Mutex<BTreeMap<String, (u64, u64)>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    fn start(edges: &[(String, SocketAddr)]) -> Traffic {
        let counts = Arc::new(Mutex::new(BTreeMap::new()));
        let tasks = edges
            .iter()
            .map(|(zone, addr)| {
                let (zone, addr, counts) = (zone.clone(), *addr, counts.clone());
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(Duration::from_millis(20));
                    loop {
                        tick.tick().await;
                        let ok = Req::get(addr, "/items/1")
                            .host(HOST)
                            .send()
                            .await
                            .is_ok_and(|r| r.status.is_success());
                        let mut c = counts.lock().unwrap();
                        let e = c.entry(zone.clone()).or_insert((0, 0));
                        if ok {
                            e.0 += 1;
                        } else {
                            e.1 += 1;
                        }
                    }
                })
            })
            .collect();
        Traffic { counts, tasks }
    }

    /// To the edges of `zones`.
    fn to_edges(lab: &Topology, zones: &[&str]) -> Traffic {
        let edges: Vec<(String, SocketAddr)> = zones
            .iter()
            .map(|z| (z.to_string(), lab.edge_addr(z)))
            .collect();
        Traffic::start(&edges)
    }

    /// (ok, failed) per zone so far.
    fn counts(&self) -> BTreeMap<String, (u64, u64)> {
        self.counts.lock().unwrap().clone()
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn versions(edges: &[EdgeProcess], zones: &[&str]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (e, z) in edges.iter().zip(zones) {
        let running = e
            .status()
            .await
            .config
            .expect("the edge reports its config");
        out.insert(z.to_string(), running.version);
    }
    out
}

async fn settled(api: &Client, edges: &[EdgeProcess], zones: &[&str]) -> String {
    let base = api.config_assignment().await.unwrap().base.version;
    eventually(
        "every edge runs the plane's config",
        Duration::from_secs(10),
        || async {
            let v = versions(edges, zones).await;
            v.values()
                .all(|x| *x == base)
                .then_some(())
                .ok_or(format!("{v:?} vs {base}"))
        },
    )
    .await;
    base
}

fn start_req(config: String, reason: &str) -> StartRollout {
    StartRollout {
        config,
        accept: Vec::new(),
        reason: reason.into(),
        canary: None,
        bake: None,
        dry_run: false,
    }
}

async fn ended(api: &Client, id: &str, within: Duration) -> Rollout {
    eventually("the rollout ends", within, || async {
        let r = api.rollout(id).await.unwrap();
        r.state
            .is_done()
            .then_some(())
            .ok_or(format!("{:?}: {:?}", r.state, r.waiting_for))
    })
    .await;
    api.rollout(id).await.unwrap()
}

/// Follows the rollout to its end, noting which zones ever ran `to`.
async fn follow(
    api: &Client,
    edges: &[EdgeProcess],
    zones: &[&str],
    r: &Rollout,
    within: Duration,
) -> (Rollout, BTreeMap<String, std::time::Instant>) {
    let mut took = BTreeMap::new();
    let deadline = std::time::Instant::now() + within;
    loop {
        for (z, x) in versions(edges, zones).await {
            if x == r.to {
                took.entry(z).or_insert_with(std::time::Instant::now);
            }
        }
        let now = api.rollout(&r.id).await.unwrap();
        if now.state.is_done() {
            return (now, took);
        }
        assert!(std::time::Instant::now() < deadline, "{now:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_harmless_config_goes_out_wave_by_wave_each_after_its_bake_and_ends_on_every_edge() {
    let zones = ["a", "b", "c"];
    let lab = topology().with_dns(1).dns_probe_interval_ms(0);
    let _ups = lab.start_upstreams().await;
    let mut cp = lab.start_control().await;
    let edges = lab.start_edges(&zones).await;
    let ns = lab.start_dns(1).await;
    let api = cp.api(Some("operate-token"));
    let from = settled(&api, &edges, &zones).await;
    let _traffic = Traffic::to_edges(&lab, &zones);
    // A raised floor is no risk, and shows in the plane's status.
    let text = with_service_table(
        &lab.config_text()
            .replace("min_healthy = 0.5", "min_healthy = 0.75"),
        "[service.timeouts]\ntotal_ms = 30000",
    );
    assert_eq!(r1_floor(&api).await, 2, "half of r1's 4 instances");
    let r = api
        .start_rollout(&start_req(text, "more patience for slow items"))
        .await
        .unwrap();
    let names: Vec<&str> = r.waves.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["canary a", "rest of r1", "r2", "dns"]);
    assert_eq!(r.waves[3].members, ["dns:ns1"]);
    assert_ne!(r.to, from);
    let (done, took) = follow(&api, &edges, &zones, &r, Duration::from_secs(90)).await;
    assert_eq!(done.state, RolloutState::Succeeded, "{:#?}", done.steps);
    let (a, b, c) = (took["a"], took["b"], took["c"]);
    // Each wave baked (3 s) before the next went out.
    assert!(
        b.duration_since(a) >= Duration::from_millis(2800),
        "{:?}",
        b - a
    );
    assert!(
        c.duration_since(b) >= Duration::from_millis(2800),
        "{:?}",
        c - b
    );
    assert_eq!(done.verdicts.len(), 4, "{:#?}", done.verdicts);
    assert!(done.verdicts.iter().all(|v| v.verdict == Verdict::Pass));
    assert_eq!(done.verdicts[2].baseline, "the same members before");
    // The DNS server went last, once every edge had passed.
    let ns_runs = ns.status().await.config.unwrap().version;
    assert_eq!(ns_runs, r.to);
    assert!(
        done.verdicts[3].reason.contains("DNS servers"),
        "{:#?}",
        done.verdicts[3]
    );
    let v = versions(&edges, &zones).await;
    assert!(v.values().all(|x| *x == r.to), "{v:?}");
    assert_eq!(api.config_assignment().await.unwrap().base.version, r.to);
    let history = api.history(200).await.unwrap();
    let steps: Vec<&str> = history
        .entries
        .iter()
        .filter(|e| e.kind == AuditKind::Rollout)
        .map(|e| e.action.as_str())
        .collect();
    assert!(
        steps
            .iter()
            .any(|s| s.contains("wave 1 of 4 (canary a) going out")),
        "{steps:#?}"
    );
    assert!(
        steps.iter().any(|s| s.contains("rollout done")),
        "{steps:#?}"
    );
    // The plane's own rules follow what every edge runs, also after a
    // restart on its older file: the store's base wins.
    assert_eq!(r1_floor(&api).await, 3);
    cp.kill9();
    cp.restart().await;
    let api = cp.api(Some("operate-token"));
    assert_eq!(r1_floor(&api).await, 3);
    assert_eq!(api.config_assignment().await.unwrap().base.version, r.to);
}

async fn r1_floor(api: &Client) -> usize {
    let s = api.status().await.unwrap();
    s.services[0]
        .regions
        .iter()
        .find(|r| r.region == "r1")
        .unwrap()
        .floor
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_that_breaks_the_canary_is_rolled_back_before_any_other_wave_with_an_incident() {
    let zones = ["a", "b", "c"];
    let lab = topology();
    let ups = lab.start_upstreams().await;
    for u in ups.values() {
        u.set_delay(Duration::from_millis(40));
    }
    let cp = lab.start_control().await;
    let edges = lab.start_edges(&zones).await;
    let api = cp.api(Some("operate-token"));
    let from = settled(&api, &edges, &zones).await;
    let traffic = Traffic::to_edges(&lab, &zones);
    // Far too short for a 40 ms service: every request the canary sends
    // times out.
    let text = with_service_table(&lab.config_text(), "[service.timeouts]\nheader_ms = 10");
    let mut req = start_req(text, "tighter timeouts");
    let plan = api.plan_rollout(&req).await.unwrap();
    assert!(
        plan.differences.iter().any(|d| d.path.contains("timeouts")),
        "the diff names the cut: {:#?}",
        plan.differences
    );
    // Acknowledged: this test is about the canary catching it.
    req.accept = plan.needs_accept.clone();
    let r = api.start_rollout(&req).await.unwrap();
    let (r, took) = follow(&api, &edges, &zones, &r, Duration::from_secs(60)).await;
    let others_took = took.contains_key("b") || took.contains_key("c");
    assert!(!others_took, "no wave after the canary went out");
    assert_eq!(r.state, RolloutState::RolledBack, "{:#?}", r.steps);
    // Caught by the analysis (naming the route), or by detection if that
    // was quicker (on a loaded machine it may localize the canary's errors
    // to its region): either way, on members running the new config.
    let back = r
        .steps
        .iter()
        .find(|s| s.text.contains("rolled back"))
        .unwrap_or_else(|| panic!("{:#?}", r.steps));
    assert!(
        back.text.contains("get-item") || back.text.contains("on members running the new config"),
        "{}",
        back.text
    );
    if let Some(v) = r.verdicts.last() {
        assert_eq!(v.verdict, Verdict::Fail);
        assert!(
            v.reason.contains("get-item"),
            "names the route: {}",
            v.reason
        );
    }
    settled(&api, &edges, &zones).await;
    assert_eq!(api.config_assignment().await.unwrap().base.version, from);
    // Only the canary's users felt it.
    let c = traffic.counts();
    assert!(c["a"].1 > 0, "{c:?}");
    assert_eq!(c["b"].1 + c["c"].1, 0, "{c:?}");
    let metrics = cp
        .api(None)
        .raw(http::Method::GET, "/metrics", None)
        .await
        .unwrap()
        .body;
    assert_eq!(
        sample(
            &metrics,
            "switchyard_control_rollouts_total{outcome=\"rolled_back\"}"
        ),
        1.0
    );
    let failed_verdicts = r
        .verdicts
        .iter()
        .filter(|v| v.verdict == Verdict::Fail)
        .count();
    assert_eq!(
        sample(
            &metrics,
            "switchyard_control_rollout_verdicts_total{verdict=\"fail\"}"
        ),
        failed_verdicts as f64
    );
    assert_eq!(sample(&metrics, "switchyard_control_rollout_wave"), 0.0);
    // The failure is an incident whose timeline shows the change first.
    let id = r.incident.clone().expect("an incident");
    let i = api.incident(&id).await.unwrap();
    // Opened by the rollback, or joined when detection opened it first.
    assert!(
        i.title.contains(&r.id) || i.timeline.iter().any(|e| e.text.contains(&r.id)),
        "{i:#?}"
    );
    let changes: Vec<&str> = i
        .timeline
        .iter()
        .filter(|e| e.kind == EntryKind::ConfigChange)
        .map(|e| e.text.as_str())
        .collect();
    assert!(
        changes.iter().any(|t| t.contains("going out")),
        "the wave that went out is on the timeline: {:#?}",
        i.timeline
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lowered_floor_without_acknowledgement_is_refused_naming_it_and_changes_nothing() {
    let zones = ["a", "b", "c"];
    let lab = topology();
    let _ups = lab.start_upstreams().await;
    let cp = lab.start_control().await;
    let edges = lab.start_edges(&zones).await;
    let api = cp.api(Some("operate-token"));
    let from = settled(&api, &edges, &zones).await;
    let before = api.config_assignment().await.unwrap();
    let text = lab
        .config_text()
        .replace("min_healthy = 0.5", "min_healthy = 0.1");
    let e = api
        .start_rollout(&start_req(text.clone(), "fewer instances needed"))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(409), "{e}");
    let reasons = e.body().unwrap().reasons.join("\n");
    assert!(reasons.contains("floor_lowered"), "{reasons}");
    assert!(reasons.contains("min_healthy"), "{reasons}");
    assert!(
        reasons.contains("0.5") && reasons.contains("0.1"),
        "{reasons}"
    );
    // Nothing started, nothing assigned.
    assert!(api.rollouts().await.unwrap().rollouts.is_empty());
    assert_eq!(api.config_assignment().await.unwrap(), before);
    // A config that does not validate is named, with its path.
    let e = api
        .start_rollout(&start_req(
            lab.config_text()
                .replace("min_healthy = 0.5", "min_healthy = 7"),
            "typo",
        ))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
    assert!(
        e.body()
            .unwrap()
            .reasons
            .iter()
            .any(|r| r.contains("min_healthy")),
        "{e}"
    );
    // A bake longer than the plane can compare is named.
    let mut long = start_req(text.clone(), "slow");
    long.bake = Some("2h".into());
    let e = api.start_rollout(&long).await.unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
    assert!(
        e.body().unwrap().reasons[0].starts_with("bake: at most"),
        "{e}"
    );
    // What a person writes, not what a script can send.
    let e = api
        .start_rollout(&start_req(text.clone(), &"x".repeat(2000)))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
    assert!(
        e.body().unwrap().reasons[0].starts_with("reason: at most"),
        "{e}"
    );
    // Reads are open, starting needs a token.
    let e = cp
        .api(None)
        .start_rollout(&start_req(text.clone(), "x"))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(401), "{e}");
    // Acknowledged or not, capacity leaves at the removal rule's pace: four
    // of six instances at once is more than the hour allows (0.6 here).
    let mut fewer = text.clone();
    for (z, i) in [("a", 1), ("a", 2), ("b", 1), ("c", 1)] {
        let (name, addr) = lab.instance(z, i);
        let block =
            format!("[[service.instance]]\nname = {name:?}\nzone = {z:?}\naddr = \"{addr}\"\n");
        assert!(fewer.contains(&block), "{fewer}");
        fewer = fewer.replace(&block, "");
    }
    let mut req = start_req(fewer, "fewer instances needed");
    req.accept = vec!["floor_lowered".into(), "capacity_removed".into()];
    let e = api.start_rollout(&req).await.unwrap_err();
    assert_eq!(e.status(), Some(409), "{e}");
    let body = e.body().unwrap();
    assert!(body.refused_by("removal_rate"), "{body:?}");
    assert!(
        body.reasons[0].contains("removes 4 of its 6 instances"),
        "{body:?}"
    );
    assert!(api.rollouts().await.unwrap().rollouts.is_empty());
    // Acknowledged, the floor alone starts.
    let mut req = start_req(text, "fewer instances needed");
    req.accept = vec!["floor_lowered".into()];
    let r = api.start_rollout(&req).await.unwrap();
    assert_eq!(r.accepted, ["floor_lowered"]);
    assert_eq!(r.from, from);
    // Only one at a time.
    let e = api
        .start_rollout(&start_req(
            with_service_table(&lab.config_text(), "[service.timeouts]\ntotal_ms = 30000"),
            "another",
        ))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(409), "{e}");
    let r = api
        .rollout_action(&r.id, switchyard_api::rollout::RolloutAction::Abort)
        .await
        .unwrap();
    assert_eq!(r.state, RolloutState::Aborted);
    settled(&api, &edges, &zones).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_control_plane_killed_mid_rollout_carries_it_on_after_a_restart() {
    let zones = ["a", "b", "c"];
    let lab = topology();
    let _ups = lab.start_upstreams().await;
    let mut cp = lab.start_control().await;
    let mut edges = lab.start_edges(&zones).await;
    let api = cp.api(Some("operate-token"));
    let from = settled(&api, &edges, &zones).await;
    let _traffic = Traffic::to_edges(&lab, &zones);
    let text = with_service_table(&lab.config_text(), "[service.timeouts]\ntotal_ms = 30000");
    let r = api
        .start_rollout(&start_req(text, "more patience"))
        .await
        .unwrap();
    // Killed while the canary bakes: the plane saw it take the config.
    eventually("the canary bakes", Duration::from_secs(20), || async {
        let now = api.rollout(&r.id).await.unwrap();
        now.taken_ms
            .is_some()
            .then_some(())
            .ok_or(format!("{:?}", now.waiting_for))
    })
    .await;
    cp.kill9();
    // Static stability: each edge keeps what it runs, and serves.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let v = versions(&edges, &zones).await;
    assert_eq!(v["a"], r.to);
    assert_eq!(
        (v["b"].as_str(), v["c"].as_str()),
        (from.as_str(), from.as_str())
    );
    for e in &edges {
        assert!(e.get("/items/1").send().await.unwrap().status.is_success());
    }
    // The canary's edge restarted with no plane to ask comes back on the
    // version it had reported, not on its file's.
    edges[0].kill9();
    edges[0].restart().await;
    let running = edges[0].status().await.config.unwrap();
    assert_eq!(running.version, r.to, "{running:?}");
    assert_eq!(running.source, "last-known-good");
    cp.restart().await;
    let api = cp.api(Some("operate-token"));
    let done = ended(&api, &r.id, Duration::from_secs(90)).await;
    assert_eq!(done.state, RolloutState::Succeeded, "{:#?}", done.steps);
    assert!(
        done.steps.iter().any(|s| s.text.contains("took over")),
        "{:#?}",
        done.steps
    );
    let v = versions(&edges, &zones).await;
    assert!(v.values().all(|x| *x == r.to), "{v:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rollout_asked_of_a_follower_outlives_the_leader_that_ran_it() {
    let etcd = switchyard_testkit::etcd::Etcd::start().await;
    let zones = ["a", "b", "c"];
    let lab = bakes_short(
        Topology::new(BIN, &[("r1", &["a", "b"]), ("r2", &["c"])])
            .with_control_planes(&[9])
            .etcd_store(&etcd.endpoint),
    );
    let _ups = lab.start_upstreams().await;
    let mut procs = [
        lab.start_control().await,
        lab.start_another_control(9).await,
    ];
    let edges = lab.start_edges(&zones).await;
    let apis: Vec<Client> = procs.iter().map(|p| p.api(Some("operate-token"))).collect();
    let leader = eventually_leader(&apis).await;
    let follower = 1 - leader;
    settled(&apis[leader], &edges, &zones).await;
    let _traffic = Traffic::to_edges(&lab, &zones);
    let text = with_service_table(&lab.config_text(), "[service.timeouts]\ntotal_ms = 30000");
    // Asked of the follower, run by the leader.
    let r = apis[follower]
        .start_rollout(&start_req(text, "more patience"))
        .await
        .unwrap();
    eventually("the canary bakes", Duration::from_secs(20), || async {
        let now = apis[follower].rollout(&r.id).await.unwrap();
        now.taken_ms
            .is_some()
            .then_some(())
            .ok_or(format!("{:?}", now.waiting_for))
    })
    .await;
    procs[leader].kill9();
    let done = ended(&apis[follower], &r.id, Duration::from_secs(90)).await;
    assert_eq!(done.state, RolloutState::Succeeded, "{:#?}", done.steps);
    assert!(
        done.steps.iter().any(|s| s.text.contains("took over")),
        "{:#?}",
        done.steps
    );
    let v = versions(&edges, &zones).await;
    assert!(v.values().all(|x| *x == r.to), "{v:?}");
}

async fn eventually_leader(apis: &[Client]) -> usize {
    let mut found = None;
    for _ in 0..150 {
        for (i, a) in apis.iter().enumerate() {
            if a.leader().await.is_ok_and(|l| l.acting) {
                found = Some(i);
            }
        }
        if found.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    found.expect("a plane leads within 15 s")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_the_canary_refuses_rolls_back_naming_the_refusal() {
    let zones = ["a", "b", "c"];
    let lab = topology();
    let _ups = lab.start_upstreams().await;
    let cp = lab.start_control().await;
    let edges = lab.start_edges(&zones).await;
    let api = cp.api(Some("operate-token"));
    let from = settled(&api, &edges, &zones).await;
    // Valid on its own, but it moves the canary's admin listener: an edge
    // cannot take that without a restart, and says so.
    let admin = lab.admin_addr("a").to_string();
    let moved = lab.config_text().replacen(
        &format!("admin = \"{admin}\""),
        "admin = \"127.250.0.1:9090\"",
        1,
    );
    assert_ne!(moved, lab.config_text());
    let r = api
        .start_rollout(&start_req(moved, "move a's admin"))
        .await
        .unwrap();
    let done = ended(&api, &r.id, Duration::from_secs(30)).await;
    assert_eq!(done.state, RolloutState::RolledBack, "{:#?}", done.steps);
    let back = done.steps.last().unwrap();
    assert!(
        back.text.contains("a refused the new config") && back.text.contains("restart"),
        "{}",
        back.text
    );
    let v = versions(&edges, &zones).await;
    assert!(v.values().all(|x| *x == from), "{v:?}");
}

//! Configs distributed by the control plane to real edges: an edge runs the
//! config assigned to its zone and says which, keeps the last one it took
//! on disk and comes back on it with the plane gone, and keeps out one it
//! cannot run.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::rr::RecordType;
use switchyard_control::configs::Assignment;
use switchyard_control::store::etcd::EtcdStore;
use switchyard_control::store::sqlite::SqliteStore;
use switchyard_model::{Config, ConfigDoc};
use switchyard_testkit::client::Req;
use switchyard_testkit::{eventually, sample, ControlProcess, EdgeProcess, Topology};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// A host only a config that names it serves: what a request can tell of
/// which config an edge runs.
const NEW_HOST: &str = "new.test";

fn with_new_host(text: &str) -> String {
    let old = format!("hosts = [{:?}]", switchyard_testkit::HOST);
    assert!(text.contains(&old), "the topology's service hosts changed");
    text.replace(
        &old,
        &format!("hosts = [{:?}, {NEW_HOST:?}]", switchyard_testkit::HOST),
    )
}

async fn serves_new_host(e: &EdgeProcess) -> bool {
    Req::get(e.listen, "/items/1")
        .host(NEW_HOST)
        .send()
        .await
        .is_ok_and(|r| r.status.is_success())
}

/// Within 10 s the edge runs `version`.
async fn runs(e: &EdgeProcess, version: &str, what: &str) {
    eventually(what, Duration::from_secs(10), || async {
        let s = e.status().await;
        let c = s.config.ok_or("no config in the status")?;
        (c.version == version)
            .then_some(())
            .ok_or(format!("runs {} from {}", c.version, c.source))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edge_following_a_plane_runs_the_planes_config_and_reports_its_version() {
    let lab = Topology::new(BIN, &[("r1", &["a", "b"])]).with_control_plane();
    let _ups = lab.start_upstreams().await;
    lab.write_config();
    // The plane's own file serves one more host than the edge's.
    let plane_text = with_new_host(&lab.config_text());
    let plane_dir = lab.dir().join("plane");
    std::fs::create_dir_all(&plane_dir).unwrap();
    let plane_cfg = plane_dir.join("switchyard.toml");
    std::fs::write(&plane_cfg, &plane_text).unwrap();
    let cp = ControlProcess::start(lab.bin(), &plane_cfg, lab.control_addr(), &plane_dir).await;
    let base = ConfigDoc::new(plane_text);
    let a = cp.api(None).config_assignment().await.unwrap();
    assert_eq!((a.revision, &a.base, &a.target), (1, &base, &None));
    assert_eq!(cp.api(None).config_doc(&base.version).await.unwrap(), base);

    let missing = cp
        .api(None)
        .config_doc("c0000000000000000")
        .await
        .unwrap_err();
    assert!(
        matches!(
            missing,
            switchyard_api::ClientError::Api { status: 404, .. }
        ),
        "{missing:?}"
    );

    let e = lab.start_edge("a").await;
    let file_version = switchyard_model::config_version(&lab.config_text());
    assert_ne!(file_version, base.version);
    runs(&e, &base.version, "the edge runs the plane's base").await;
    let s = e.status().await.config.unwrap();
    assert_eq!((s.source.as_str(), s.refused), ("control-plane", None));
    assert!(serves_new_host(&e).await, "the plane's config is in force");
    let m = e.metrics().await;
    assert_eq!(
        sample(
            &m,
            &format!(
                "switchyard_edge_config_info{{version=\"{}\"}}",
                base.version
            )
        ),
        1.0,
        "{m}"
    );
    assert!(
        !m.contains(&file_version),
        "the file's version is gone: {m}"
    );
    // The signals carry the version too.
    eventually(
        "the signals name the config",
        Duration::from_secs(5),
        || async {
            let r = Req::get(e.admin, "/signals/recent").send().await?;
            let last = r.json().as_array().and_then(|a| a.last().cloned());
            let v = last.as_ref().and_then(|l| l["config_version"].as_str());
            (v == Some(base.version.as_str()))
                .then_some(())
                .ok_or(format!("{last:?}"))
        },
    )
    .await;
    let s = e.status().await.config.unwrap();
    assert_eq!(s.file_version.as_deref(), Some(file_version.as_str()));

    // SIGHUP with the file unchanged (as sent to reload certificates)
    // keeps the plane's config; a changed file takes over, and the config
    // kept from the plane is dropped, so a restart would run the file.
    let hup = || {
        let ok = std::process::Command::new("kill")
            .args(["-HUP", &e.pid().unwrap().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    };
    hup();
    eventually("the SIGHUP is handled", Duration::from_secs(5), || async {
        e.log()
            .contains("the config file is unchanged")
            .then_some(())
            .ok_or("not yet".into())
    })
    .await;
    assert_eq!(e.status().await.config.unwrap().version, base.version);
    let kept = lab.dir().join("state").join("a.config.lkg.json");
    assert!(kept.exists(), "the plane's config is kept");
    let edited = format!("{}# edited\n", lab.config_text());
    std::fs::write(lab.config_path(), &edited).unwrap();
    hup();
    let edited = ConfigDoc::new(edited);
    runs(&e, &edited.version, "the edited file runs").await;
    assert_eq!(e.status().await.config.unwrap().source, "file");
    assert!(!serves_new_host(&e).await);
    assert!(!kept.exists(), "the kept config is dropped");
}

type Plane = Arc<switchyard_control::plane::ControlPlane<SqliteStore>>;

/// The lab's control plane served in this process on its address, so the
/// test can assign as the rollout engine will; the edges and DNS servers
/// are real processes following it. Also the config's text.
async fn plane_in_process(lab: &Topology) -> (switchyard_control::server::Running, Plane, String) {
    let path = lab.write_config();
    let text = lab.config_text();
    let config = Config::from_toml(&text, |k| std::env::var(k).ok()).unwrap();
    let settings = switchyard_control::server::settings(&config, &path).unwrap();
    let store = SqliteStore::open(&lab.dir().join("control.db")).unwrap();
    let (running, plane) = switchyard_control::server::serve(
        Arc::new(config),
        text.clone(),
        settings,
        store,
        lab.control_addr(),
        false,
        None,
    )
    .await
    .unwrap();
    (running, plane, text)
}

/// A watcher that records the versions of the `config` events it gets,
/// and `controls` for each controls event, in order.
struct Recorder {
    url: String,
    zone: &'static str,
    got: std::sync::Mutex<Vec<String>>,
}

impl switchyard_api::watch::Follower for Recorder {
    fn control_urls(&self) -> Vec<String> {
        vec![self.url.clone()]
    }
    fn identity(&self) -> Vec<(&'static str, String)> {
        vec![("zone", self.zone.to_string())]
    }
    fn connected(&self, _up: bool) {}
    fn controls(&self, _controls: switchyard_model::Controls) {
        self.got.lock().unwrap().push("controls".into());
    }
    fn config(&self, doc: ConfigDoc) {
        self.got.lock().unwrap().push(doc.version);
    }
}

impl Recorder {
    fn follow(url: String, zone: &'static str) -> (Arc<Recorder>, tokio::task::JoinHandle<()>) {
        let r = Arc::new(Recorder {
            url,
            zone,
            got: Default::default(),
        });
        let f = r.clone();
        let task = tokio::spawn(async move { switchyard_api::watch::follow(&*f).await });
        (r, task)
    }

    /// The config versions sent, checking that the first came before
    /// the first controls.
    fn got(&self) -> Vec<String> {
        let all = self.got.lock().unwrap().clone();
        if let Some(first) = all.first() {
            assert_ne!(
                first, "controls",
                "controls came before the config: {all:?}"
            );
        }
        all.into_iter().filter(|v| v != "controls").collect()
    }
}

/// An edge address moved: an edge can only take that with a restart.
fn moving_zone_a(lab: &Topology, text: &str) -> String {
    let old = format!("edge = \"{}\"", lab.edge_addr("a"));
    assert!(text.contains(&old));
    text.replace(&old, &format!("edge = \"{}\"", lab.aux_addr(9)))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_assignment_moves_only_its_members_refusals_are_kept_out_and_a_restart_keeps_the_config()
{
    let lab = Topology::new(BIN, &[("r1", &["a", "b"])]).with_control_plane();
    let _ups = lab.start_upstreams().await;
    let (running, plane, text) = plane_in_process(&lab).await;
    let base = ConfigDoc::new(text.clone());
    // What the plane sends, watched as zones a and b.
    let url = format!("http://{}", lab.control_addr());
    let (watch_a, task_a) = Recorder::follow(url.clone(), "a");
    let (watch_b, task_b) = Recorder::follow(url, "b");
    let mut ea = lab.start_edge("a").await;
    let eb = lab.start_edge("b").await;
    for e in [&ea, &eb] {
        runs(e, &base.version, "the edge runs the base").await;
        eventually("the edge follows", Duration::from_secs(5), || async {
            e.status()
                .await
                .control_plane
                .connected
                .then_some(())
                .ok_or("not connected".into())
        })
        .await;
        assert!(!serves_new_host(e).await);
    }

    // Zone a alone takes the new config.
    let new = ConfigDoc::new(with_new_host(&text));
    let cur = plane.assignment();
    plane
        .assign(Assignment {
            revision: cur.revision + 1,
            base: base.clone(),
            target: Some(new.clone()),
            members: BTreeSet::from(["a".to_string()]),
        })
        .await
        .unwrap();
    runs(&ea, &new.version, "zone a runs the target").await;
    assert!(serves_new_host(&ea).await, "the target is in force on a");
    assert!(!serves_new_host(&eb).await, "b is not a member");
    assert_eq!(eb.status().await.config.unwrap().version, base.version);
    assert!(
        eb.log().matches("config applied").count() == 0,
        "b was sent nothing to apply: {}",
        eb.log()
    );

    // A config a cannot run (its own address moved) is kept out; a keeps
    // serving on what it ran, and says what it refused and why.
    let bad = ConfigDoc::new(moving_zone_a(&lab, &with_new_host(&text)));
    let cur = plane.assignment();
    plane
        .assign(Assignment {
            revision: cur.revision + 1,
            target: Some(bad.clone()),
            ..(*cur).clone()
        })
        .await
        .unwrap();
    eventually("a says it refused", Duration::from_secs(10), || async {
        let c = ea.status().await.config.unwrap();
        match c.refused {
            Some(r) if r.version == bad.version => {
                assert!(r.reason.contains("changed its addresses"), "{r:?}");
                assert_eq!(c.version, new.version);
                Ok(())
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(serves_new_host(&ea).await, "a still runs the config it had");
    eventually(
        "a's signals carry the refusal",
        Duration::from_secs(5),
        || async {
            let r = Req::get(ea.admin, "/signals/recent").send().await?;
            let last = r.json().as_array().and_then(|a| a.last().cloned());
            let v = last
                .as_ref()
                .and_then(|l| l["config_refused"]["version"].as_str());
            (v == Some(bad.version.as_str()))
                .then_some(())
                .ok_or(format!("{last:?}"))
        },
    )
    .await;

    // Each watcher was sent its config first, then only its own changes:
    // b, never a member, nothing after its base.
    eventually(
        "a's watcher got every change of a's config",
        Duration::from_secs(5),
        || async {
            let got = watch_a.got();
            (got == [base.version.as_str(), &new.version, &bad.version])
                .then_some(())
                .ok_or(format!("{got:?}"))
        },
    )
    .await;
    assert_eq!(watch_b.got(), [base.version.as_str()]);
    task_a.abort();
    task_b.abort();

    // Back to the config a runs; then a dies, the plane goes, and a comes
    // back on the config it had taken, not its file's.
    let cur = plane.assignment();
    plane
        .assign(Assignment {
            revision: cur.revision + 1,
            target: Some(new.clone()),
            ..(*cur).clone()
        })
        .await
        .unwrap();
    ea.kill9();
    running.shutdown().await;
    ea.restart().await;
    let s = ea.status().await;
    let c = s.config.unwrap();
    assert_eq!(
        (c.version.as_str(), c.source.as_str()),
        (new.version.as_str(), "last-known-good")
    );
    assert!(!s.control_plane.connected);
    assert!(serves_new_host(&ea).await, "the kept config is in force");
    assert!(
        ea.log().contains(&base.version) && ea.log().contains(&new.version),
        "the start names both the file's and the kept version: {}",
        ea.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dns_server_runs_the_config_assigned_to_it_and_comes_back_on_it() {
    let lab = Topology::new(BIN, &[("r1", &["a"])])
        .with_control_plane()
        .with_dns(1)
        .dns_probe_interval_ms(0);
    let (running, plane, text) = plane_in_process(&lab).await;
    let mut ns = lab.start_dns(1).await;
    let base = ConfigDoc::new(text.clone());
    let ttl = |ns: &switchyard_testkit::DnsProcess| {
        let q = ns.ask("svc.test.", RecordType::A);
        async move { q.udp().await.answers[0].ttl }
    };
    eventually(
        "the server runs the base",
        Duration::from_secs(10),
        || async {
            let c = ns.status().await.config.ok_or("no config in the status")?;
            // The plane's base is this very text: nothing to apply.
            (c.version == base.version && ns.status().await.control_plane_connected)
                .then_some(())
                .ok_or(format!("{c:?}"))
        },
    )
    .await;
    assert_eq!(ttl(&ns).await, 30);

    let seven = ConfigDoc::new(text.replace(
        "probe_interval_ms = 0\n",
        "probe_interval_ms = 0\nttl_s = 7\n",
    ));
    assert_ne!(seven, base);
    let cur = plane.assignment();
    plane
        .assign(Assignment {
            revision: cur.revision + 1,
            base: base.clone(),
            target: Some(seven.clone()),
            members: BTreeSet::from([format!("dns:{}", ns.name)]),
        })
        .await
        .unwrap();
    eventually(
        "the server answers with the new TTL",
        Duration::from_secs(10),
        || async {
            let t = ttl(&ns).await;
            (t == 7).then_some(()).ok_or(t.to_string())
        },
    )
    .await;
    let m = ns.metrics().await;
    assert_eq!(
        sample(
            &m,
            &format!(
                "switchyard_dns_config_info{{version=\"{}\"}}",
                seven.version
            )
        ),
        1.0,
        "{m}"
    );

    ns.kill9();
    running.shutdown().await;
    ns.restart().await;
    let c = ns.status().await.config.unwrap();
    assert_eq!(
        (c.version.as_str(), c.source.as_str()),
        (seven.version.as_str(), "last-known-good")
    );
    assert_eq!(ttl(&ns).await, 7);
}

/// A plane of the lab on a shared etcd store, in this process, on `listen`.
async fn etcd_plane(
    lab: &Topology,
    listen: std::net::SocketAddr,
) -> (
    switchyard_control::server::Running,
    Arc<switchyard_control::plane::ControlPlane<EtcdStore>>,
) {
    let path = lab.write_config();
    let text = lab.config_text();
    let config = Config::from_toml(&text, |k| std::env::var(k).ok()).unwrap();
    let settings = switchyard_control::server::settings(&config, &path).unwrap();
    let endpoint = lab
        .config_text()
        .lines()
        .find_map(|l| {
            Some(
                l.strip_prefix("store = \"etcd:")?
                    .trim_end_matches('"')
                    .to_string(),
            )
        })
        .expect("an etcd store");
    let store = EtcdStore::new(vec![endpoint], switchyard_control::backup::ETCD_PREFIX);
    switchyard_control::server::serve(Arc::new(config), text, settings, store, listen, false, None)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edge_following_a_plane_that_does_not_lead_gets_what_the_leader_assigned() {
    let etcd = switchyard_testkit::etcd::Etcd::start().await;
    let lab = Topology::new(BIN, &[("r1", &["a"])])
        .with_control_planes(&[1])
        .etcd_store(&etcd.endpoint);
    let _ups = lab.start_upstreams().await;
    // The plane at aux_addr(1) starts first and leads; the edge follows
    // the one at control_addr(), first in its list, which does not.
    let (leader_run, leader) = etcd_plane(&lab, lab.aux_addr(1)).await;
    eventually("the first plane leads", Duration::from_secs(10), || async {
        leader
            .leadership
            .acting(switchyard_model::time::now_ms())
            .then_some(())
            .ok_or("not yet".into())
    })
    .await;
    let (follower_run, follower) = etcd_plane(&lab, lab.control_addr()).await;
    assert_eq!(*follower.assignment(), *leader.assignment());
    let e = lab.start_edge("a").await;
    let base = ConfigDoc::new(lab.config_text());
    runs(&e, &base.version, "the edge runs the base").await;
    eventually(
        "the edge follows the plane that does not lead",
        Duration::from_secs(5),
        || async {
            let w = (follower.watchers(), leader.watchers());
            (w == (1, 0)).then_some(()).ok_or(format!("{w:?}"))
        },
    )
    .await;

    let new = ConfigDoc::new(with_new_host(&lab.config_text()));
    let next = Assignment {
        revision: leader.assignment().revision + 1,
        base: base.clone(),
        target: Some(new.clone()),
        members: BTreeSet::from(["a".to_string()]),
    };
    // Only the leader writes the assignment.
    let refused = follower.assign(next.clone()).await.unwrap_err();
    assert!(
        matches!(refused, switchyard_control::store::StoreError::NotLeader(_)),
        "{refused:?}"
    );
    assert_eq!(follower.assignment().target, None);
    leader.assign(next).await.unwrap();
    runs(&e, &new.version, "the edge runs what the leader assigned").await;
    assert_eq!(follower.assignment().target, Some(new));
    assert!(serves_new_host(&e).await);
    follower_run.shutdown().await;
    leader_run.shutdown().await;
}

//! High availability with real processes: three control planes on a real
//! three-member etcd cluster, edges following any of them. Exactly one plane
//! acts — one shift, one incident, each notification once — another takes
//! over within the lease when the leader is killed, losing one etcd member
//! changes nothing, and without quorum no plane acts while the edges serve
//! unchanged and writes are refused at once. A leader that stalls past
//! its lease (SIGSTOP) wakes up a follower: it answers with the incident as
//! the new leader left it in the store and writes nothing back.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::Method;
use switchyard_api::{Client, ClientError, IncidentQuery, OpRequest, OpenIncident, StatusChange};
use switchyard_control::backup::ETCD_PREFIX;
use switchyard_control::store::etcd::EtcdStore;
use switchyard_control::store::Store;
use switchyard_model::incident::Status;
use switchyard_model::{AuditKind, Op};
use switchyard_testkit::etcd::Etcd;
use switchyard_testkit::receiver::Receiver;
use switchyard_testkit::{eventually, ControlProcess, Topology, Traffic};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// The planes that say they act now, by index; `None` for a dead one.
async fn acting(planes: &[Option<Client>]) -> Vec<usize> {
    let mut out = Vec::new();
    for (i, p) in planes.iter().enumerate() {
        if let Some(api) = p {
            if api.leader().await.is_ok_and(|l| l.acting) {
                out.push(i);
            }
        }
    }
    out
}

async fn one_leader(planes: &[Option<Client>], within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let a = acting(planes).await;
        if let [i] = a[..] {
            return i;
        }
        assert!(
            Instant::now() < deadline,
            "exactly one control plane should act within {within:?}; acting: {a:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Accepted changes made by playbooks whose operation matches `f`.
async fn playbook_changes(api: &Client, f: impl Fn(&Op) -> bool) -> usize {
    api.history(500)
        .await
        .unwrap()
        .entries
        .iter()
        .filter(|e| {
            e.actor.is_playbook()
                && e.kind == AuditKind::Change
                && e.accepted
                && e.op.as_ref().is_some_and(&f)
        })
        .count()
}

fn is_shift(op: &Op) -> bool {
    matches!(op, Op::Shift { zone, .. } if zone == "a")
}

fn is_unshift(op: &Op) -> bool {
    matches!(op, Op::Unshift { zone, .. } if zone == "a")
}

#[tokio::test(flavor = "multi_thread")]
async fn three_planes_on_three_etcd_members_act_once_and_outlive_their_leader_and_quorum() {
    let mut etcd = Etcd::cluster(3).await;
    let endpoints: Vec<String> = etcd.iter().map(|m| m.endpoint.clone()).collect();
    let hook_addr: SocketAddr = "127.0.9.61:9000".parse().unwrap();
    let hook = Receiver::start(hook_addr).await;
    let notify = format!(
        "[control.incidents]\nresolve_after_ms = 5000\n\
         [control.notify]\ngroup_wait_ms = 300\ngroup_interval_ms = 1000\n\
         [[control.notify.receiver]]\nname = \"oncall\"\nkind = \"webhook\"\nurl = \"{}\"\n\
         [[control.notify.route]]\nreceivers = [\"oncall\"]\n",
        hook.url("/hook"),
    );
    let lab = Topology::new(BIN, &[("r1", &["a", "b", "c"])])
        .with_control_planes(&[8, 9])
        .etcd_store(&endpoints.join(","))
        .playbooks("auto")
        .control_toml(&notify);
    let ups = lab.start_upstreams().await;
    let mut procs: Vec<ControlProcess> = vec![
        lab.start_control().await,
        lab.start_another_control(8).await,
        lab.start_another_control(9).await,
    ];
    let mut planes: Vec<Option<Client>> = procs
        .iter()
        .map(|p| Some(p.api(Some("operate-token"))))
        .collect();
    let edges = lab.start_edges(&["a", "b", "c"]).await;
    let addrs: Vec<_> = edges.iter().map(|e| e.listen).collect();
    let leader = one_leader(&planes, Duration::from_secs(15)).await;

    // A gray zone: zone a's instances fail while their health stays green.
    let traffic = Traffic::start(&addrs, "svc.test", &[(Method::GET, "/items/1")]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    ups["a-1"].set_status(500);
    ups["a-2"].set_status(500);
    let any = planes[leader].clone().unwrap();
    eventually(
        "the zone is shifted and an incident opens",
        Duration::from_secs(30),
        || async {
            let shifts = playbook_changes(&any, is_shift).await;
            let open = any
                .incidents(&IncidentQuery::default())
                .await
                .unwrap()
                .incidents
                .len();
            (shifts >= 1 && open >= 1)
                .then_some(())
                .ok_or(format!("{shifts} shifts, {open} incidents"))
        },
    )
    .await;
    // Long enough for a second plane acting to have doubled everything.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(playbook_changes(&any, is_shift).await, 1, "one shift");
    let list = any.incidents(&IncidentQuery::default()).await.unwrap();
    assert_eq!(list.incidents.len(), 1, "one incident: {list:?}");
    let id = list.incidents[0].id.clone();

    // The leader dies mid-incident; another takes over within the lease.
    procs[leader].kill9();
    planes[leader] = None;
    let killed = Instant::now();
    let second = one_leader(&planes, Duration::from_secs(10)).await;
    assert_ne!(second, leader);
    eprintln!("takeover after the leader's death: {:?}", killed.elapsed());
    let api = planes[second].clone().unwrap();
    // The zone heals: the new leader fails back once and resolves the same
    // incident the old one opened.
    ups["a-1"].set_status(200);
    ups["a-2"].set_status(200);
    eventually(
        "the new leader fails back and resolves the incident",
        Duration::from_secs(60),
        || async {
            let i = api.incident(&id).await.unwrap();
            let back = playbook_changes(&api, is_unshift).await;
            (i.status == Status::Resolved && back >= 1)
                .then_some(())
                .ok_or(format!("{:?}, {back} failbacks", i.status))
        },
    )
    .await;
    assert_eq!(
        playbook_changes(&api, is_shift).await,
        1,
        "no shift doubled"
    );
    assert_eq!(playbook_changes(&api, is_unshift).await, 1, "one failback");
    let all = api.incidents(&IncidentQuery::default()).await.unwrap();
    assert_eq!(all.incidents.len(), 1, "still one incident: {all:?}");
    // Each message reached the receiver once: a second plane notifying
    // would have sent the same message twice.
    let bodies: Vec<String> = hook
        .requests()
        .iter()
        .filter(|r| r.answered == 200)
        .map(|r| r.json()["events"].to_string())
        .collect();
    assert!(!bodies.is_empty(), "people were told");
    let mut distinct = bodies.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        bodies.len(),
        "a message sent twice: {bodies:#?}"
    );

    // One etcd member lost: the same plane keeps acting.
    etcd[2].kill9();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        acting(&planes).await,
        vec![second],
        "one member down changes nothing"
    );

    // Quorum lost: no plane acts, edges serve unchanged, writes refused at once.
    etcd[1].kill9();
    eventually(
        "no plane acts without quorum",
        Duration::from_secs(10),
        || async {
            let a = acting(&planes).await;
            a.is_empty().then_some(()).ok_or(format!("acting: {a:?}"))
        },
    )
    .await;
    let during = Traffic::start(&addrs, "svc.test", &[(Method::GET, "/items/1")]);
    let asked = Instant::now();
    let shed = OpRequest::new(
        Op::ShedLevel {
            service: "svc".into(),
            level: 1,
        },
        "no quorum",
    );
    match api.apply(&shed).await {
        Err(ClientError::Api { status: 503, .. }) => {}
        other => panic!("expected 503 without quorum, got {other:?}"),
    }
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "refused at once, not after a timeout: {:?}",
        asked.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sent = during.stop().await;
    assert!(
        !sent.is_empty() && sent.iter().all(|s| s.ok()),
        "edges serve unchanged without quorum: {} of {} failed",
        sent.iter().filter(|s| !s.ok()).count(),
        sent.len()
    );

    // Quorum back: a leader again, and changes go through.
    etcd[1].restart();
    etcd[2].restart();
    one_leader(&planes, Duration::from_secs(30)).await;
    eventually(
        "writes go through again",
        Duration::from_secs(20),
        || async {
            api.apply(&shed)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        },
    )
    .await;
    traffic.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leader_that_stalled_past_its_lease_wakes_with_the_new_leaders_incidents() {
    let etcd = Etcd::start().await;
    // Its own topology: another 127.x octet than the test above.
    let lab = Topology::new(BIN, &[("r1", &["a"])])
        .with_control_planes(&[8])
        .etcd_store(&etcd.endpoint);
    let procs = [
        lab.start_control().await,
        lab.start_another_control(8).await,
    ];
    let planes: Vec<Option<Client>> = procs
        .iter()
        .map(|p| Some(p.api(Some("operate-token"))))
        .collect();
    let old = one_leader(&planes, Duration::from_secs(15)).await;
    let new = 1 - old;
    let (old_api, new_api) = (planes[old].clone().unwrap(), planes[new].clone().unwrap());
    let id = old_api
        .open_incident(&OpenIncident {
            service: "svc".into(),
            title: "checkout fails for some users".into(),
            severity: None,
        })
        .await
        .unwrap()
        .id;
    assert_ne!(
        old_api.incident(&id).await.unwrap().status,
        Status::Resolved
    );

    // The leader freezes (a GC pause, a stalled VM) past its 6 s lease.
    procs[old].pause();
    let paused = Instant::now();
    eventually(
        "the other plane takes over",
        Duration::from_secs(15),
        || async {
            let acting = new_api.leader().await.is_ok_and(|l| l.acting);
            acting.then_some(()).ok_or("not acting yet".to_string())
        },
    )
    .await;
    eprintln!("takeover after the leader froze: {:?}", paused.elapsed());
    let resolved = new_api
        .set_status(
            &id,
            &StatusChange {
                status: "resolved".into(),
                note: "fixed while the old leader was frozen".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(resolved.status, Status::Resolved);
    procs[old].resume();

    // Awake, it no longer acts and answers from the store, not from the
    // open copy it held when it froze.
    let seen = old_api.incident(&id).await.unwrap();
    assert_eq!(seen.status, Status::Resolved, "{seen:?}");
    let listed = old_api.incidents(&IncidentQuery::default()).await.unwrap();
    assert!(
        listed
            .incidents
            .iter()
            .all(|i| i.id != id || i.status == Status::Resolved),
        "{listed:?}"
    );
    let feed = old_api.service_feed("svc").await.unwrap();
    assert_eq!(feed.incident, None, "no open incident: {feed:?}");
    assert!(!old_api.leader().await.unwrap().acting);

    // Nothing it held was written back over the new leader's copy.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(acting(&planes).await, vec![new]);
    for api in [&old_api, &new_api] {
        let i = api.incident(&id).await.unwrap();
        assert_eq!(i.status, Status::Resolved, "{i:?}");
    }

    // The store's copy changes behind the new leader's back (another
    // writer): the leader's next write of the copy it holds is refused,
    // the store's copy replaces it, and the conflict is counted.
    let store = EtcdStore::new(vec![etcd.endpoint.clone()], ETCD_PREFIX);
    let mut edited = store.get_doc("incident", &id).await.unwrap().unwrap();
    edited["title"] = "edited elsewhere".into();
    store.put_doc("incident", &id, &edited).await.unwrap();
    match new_api.note(&id, "lost in the conflict").await {
        Err(e) if e.status() == Some(409) => {
            let body = e.body().map(|b| b.reasons.join("; ")).unwrap_or_default();
            assert!(body.contains("changed by another control plane"), "{body}");
        }
        other => panic!("expected 409, got {other:?}"),
    }
    let notes = |i: &switchyard_model::incident::Incident| -> Vec<String> {
        i.timeline.iter().map(|e| e.text.clone()).collect()
    };
    let i = new_api.incident(&id).await.unwrap();
    assert_eq!(i.title, "edited elsewhere");
    assert!(!notes(&i).iter().any(|t| t.contains("lost")), "{i:?}");
    let m = new_api.metrics().await.unwrap();
    // At least this note's conflict: the tracker's own once-a-second write
    // of the incident may also have met the edited copy first.
    assert!(
        switchyard_testkit::sample(&m, "switchyard_control_incident_conflicts_total") >= 1.0,
        "{m}"
    );
    // From the store's copy, the next change goes in.
    new_api.note(&id, "made after the conflict").await.unwrap();
    let i = new_api.incident(&id).await.unwrap();
    assert_eq!(i.title, "edited elsewhere");
    assert!(
        notes(&i)
            .iter()
            .any(|t| t.contains("made after the conflict")),
        "{i:?}"
    );
}

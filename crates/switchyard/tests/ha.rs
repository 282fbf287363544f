//! High availability with real processes: three control planes on a real
//! three-member etcd cluster, edges following any of them. Exactly one plane
//! acts — one shift, one incident, each notification once — another takes
//! over within the lease when the leader is killed, losing one etcd member
//! changes nothing, and without quorum no plane acts while the edges serve
//! unchanged and writes are refused at once.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::Method;
use switchyard_api::{Client, ClientError, IncidentQuery, OpRequest};
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

//! Both store backends against the conformance suite, plus what only a
//! real backend can show: SQLite keeping a change across a reopen, and two
//! control planes sharing one real etcd never both committing from the same
//! version.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use switchyard_control::store::etcd::EtcdStore;
use switchyard_control::store::sqlite::SqliteStore;
use switchyard_control::store::{conformance, AuditEntry, Fence, Store, StoreError};
use switchyard_model::Controls;
use switchyard_testkit::etcd::{free_port, Etcd};

fn entry(action: &str) -> AuditEntry {
    conformance::entry(action, true)
}

fn shedding(level: u8) -> Controls {
    let mut c = Controls::default();
    c.services.entry("catalog".into()).or_default().shed_level = level;
    c
}

#[tokio::test]
async fn sqlite_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("state/controls.db")).unwrap();
    conformance::run(&store).await;
}

#[tokio::test]
async fn sqlite_keeps_an_acknowledged_change_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("controls.db");
    {
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(
            store
                .commit(0, &shedding(3), &entry("shed 3"))
                .await
                .unwrap(),
            1
        );
    }
    let store = SqliteStore::open(&path).unwrap();
    let got = store
        .load()
        .await
        .unwrap()
        .expect("the change survived the reopen");
    assert_eq!(got.version, 1);
    assert_eq!(got.controls, shedding(3));
    let h = store.history(10).await.unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].version, Some(1));
}

/// A store on a test's etcd member.
fn store_on(e: &Etcd, prefix: &str) -> EtcdStore {
    EtcdStore::new(vec![e.endpoint.clone()], prefix)
}

#[tokio::test]
async fn etcd_passes_the_conformance_suite() {
    let etcd = Etcd::start().await;
    conformance::run(&store_on(&etcd, "/switchyard-conformance/")).await;
}

/// A dump restores into a fresh store of either backend, from either,
/// with versions, sequence numbers and documents as they were.
#[tokio::test]
async fn a_dump_restores_into_an_empty_store_of_either_backend() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start().await;
    let sqlite = SqliteStore::open(&dir.path().join("a.db")).unwrap();
    conformance::run(&sqlite).await;
    let on_etcd = store_on(&etcd, "/restored/");
    conformance::restore_into(&sqlite, &on_etcd).await;
    let back = SqliteStore::open(&dir.path().join("b.db")).unwrap();
    conformance::restore_into(&on_etcd, &back).await;
}

/// etcd is read a thousand keys at a time: a log longer than one page is
/// dumped whole and in order, and progress is told along the way.
#[tokio::test]
async fn an_etcd_audit_log_longer_than_a_page_is_dumped_whole() {
    let etcd = Etcd::start().await;
    let store = store_on(&etcd, "/long/");
    for i in 0..1_050 {
        store.append_audit(&entry(&format!("e{i}"))).await.unwrap();
    }
    let told = std::sync::Mutex::new(Vec::new());
    let dump = store.dump(&|n| told.lock().unwrap().push(n)).await.unwrap();
    let seqs: Vec<u64> = dump.audit.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=1_050).collect::<Vec<u64>>());
    assert_eq!(dump.audit[1_049].entry.action, "e1049");
    assert_eq!(*told.lock().unwrap(), vec![1_000, 1_050]);
    let page = store.audit_page(999, 3).await.unwrap();
    assert_eq!(
        page.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![1_000, 1_001, 1_002]
    );
}

#[tokio::test]
async fn two_stores_on_one_etcd_never_both_commit_from_the_same_version() {
    let etcd = Etcd::start().await;
    let (a, b) = (store_on(&etcd, "/shared/"), store_on(&etcd, "/shared/"));
    let mut version = 0;
    for round in 0..20u8 {
        let (ca, cb) = (shedding(round % 4), shedding((round + 1) % 4));
        let (ea, eb) = (entry(&format!("a{round}")), entry(&format!("b{round}")));
        let (ra, rb) = tokio::join!(a.commit(version, &ca, &ea), b.commit(version, &cb, &eb));
        let (won, lost, winner) = match (ra, rb) {
            (Ok(v), Err(e)) => (v, e, ca),
            (Err(e), Ok(v)) => (v, e, cb),
            other => panic!(
                "round {round}: exactly one commit from version {version} must win, got {other:?}"
            ),
        };
        assert_eq!(won, version + 1);
        match lost {
            StoreError::Conflict { expected, found } => {
                assert_eq!((expected, found), (version, version + 1), "round {round}")
            }
            other => panic!("round {round}: the loser must get a conflict, got {other:?}"),
        }
        // Both see the winner's controls, whichever store they ask.
        for s in [&a, &b] {
            let got = s.load().await.unwrap().unwrap();
            assert_eq!((got.version, &got.controls), (won, &winner));
        }
        version = won;
    }
    let h = a.history(100).await.unwrap();
    let versions: Vec<Option<u64>> = h.iter().map(|e| e.version).collect();
    let expected: Vec<Option<u64>> = (1..=20).map(Some).collect();
    assert_eq!(
        versions, expected,
        "one audit entry per accepted change, in order"
    );
}

async fn append_25(s: &EtcdStore, name: &str) {
    for i in 0..25 {
        s.append_audit(&entry(&format!("{name}{i:02}")))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn audit_entries_from_two_stores_at_once_are_all_kept_in_commit_order() {
    let etcd = Etcd::start().await;
    let (a, b) = (
        store_on(&etcd, "/audit-race/"),
        store_on(&etcd, "/audit-race/"),
    );
    tokio::join!(append_25(&a, "a"), append_25(&b, "b"));
    let h = b.history(1000).await.unwrap();
    assert_eq!(h.len(), 50, "no entry lost or overwritten");
    // Each writer appends in sequence, so its own entries must appear in the
    // order it wrote them, however the two interleave.
    for name in ["a", "b"] {
        let mine: Vec<&str> = h
            .iter()
            .map(|e| e.action.as_str())
            .filter(|x| x.starts_with(name))
            .collect();
        let written: Vec<String> = (0..25).map(|i| format!("{name}{i:02}")).collect();
        assert_eq!(mine, written);
    }
    let newest: Vec<String> = a
        .history(3)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    let all: Vec<String> = h.into_iter().map(|e| e.action).collect();
    assert_eq!(newest, all[47..]);
}

#[tokio::test]
async fn a_dead_first_endpoint_fails_over_to_the_next() {
    let etcd = Etcd::start().await;
    let dead = format!("127.0.0.1:{}", free_port());
    let store = EtcdStore::new(vec![dead, etcd.endpoint.clone()], "/failover/");
    assert_eq!(
        store
            .commit(0, &shedding(1), &entry("shed 1"))
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.load().await.unwrap().unwrap().version, 1);
}

#[tokio::test]
async fn etcd_unreachable_is_unavailable() {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let store = EtcdStore::new(vec![format!("http://{addr}")], "/nowhere/");
    match store.load().await {
        Err(e @ StoreError::Unavailable(_)) => {
            assert!(e.retryable());
            assert!(
                e.to_string().contains(&addr.to_string()),
                "names the endpoint: {e}"
            );
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
    match store.commit(0, &shedding(1), &entry("shed 1")).await {
        Err(e @ StoreError::Unavailable(_)) => assert!(e.retryable()),
        other => panic!("expected unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn a_member_without_a_leader_refuses_at_once_instead_of_hanging() {
    let mut cluster = Etcd::cluster(3).await;
    let survivor = cluster.remove(0);
    let store = store_on(&survivor, "/leaderless/");
    assert_eq!(
        store
            .commit(0, &shedding(1), &entry("shed 1"))
            .await
            .unwrap(),
        1
    );
    drop(cluster);
    // The survivor gives up on a leader within a few election timeouts.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let asked = Instant::now();
        match store.load().await {
            Err(StoreError::Unavailable(m)) if m.contains("no leader") => {
                assert!(asked.elapsed() < Duration::from_secs(2), "refused at once");
                break;
            }
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
            other => panic!("the survivor never lost its leader: {other:?}"),
        }
    }
    // Refused before it was proposed, so the store knows it did not apply.
    let asked = Instant::now();
    match store.commit(1, &shedding(2), &entry("shed 2")).await {
        Err(e @ StoreError::Unavailable(_)) => {
            assert!(e.to_string().contains("no leader"), "{e}");
            assert!(!e.to_string().contains("may or may not"), "{e}");
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
    assert!(asked.elapsed() < Duration::from_secs(2), "refused at once");
}

#[tokio::test]
async fn one_plane_leads_until_it_resigns_or_stops_renewing() {
    use switchyard_control::store::Candidate;
    let etcd = Etcd::start().await;
    let (a, b) = (store_on(&etcd, "/elect/"), store_on(&etcd, "/elect/"));
    let me = |id: &str| Candidate {
        id: id.into(),
        url: format!("http://{id}"),
    };
    let ttl = Duration::from_secs(2);
    let t = a.campaign(&me("a"), ttl).await.unwrap();
    assert!(t.leading, "{t:?}");
    // Renewing keeps it; the other learns who leads.
    assert!(a.campaign(&me("a"), ttl).await.unwrap().leading);
    let t = b.campaign(&me("b"), ttl).await.unwrap();
    assert!(!t.leading);
    assert_eq!(t.leader, Some(me("a")));
    // A clean stop hands over at once.
    a.resign().await.unwrap();
    let t = b.campaign(&me("b"), ttl).await.unwrap();
    assert!(t.leading, "{t:?}");
    // A leader that stops renewing (dead, or cut off) loses the lead when
    // its lease expires, and not before.
    assert!(!a.campaign(&me("a"), ttl).await.unwrap().leading);
    let stopped = Instant::now();
    loop {
        let t = a.campaign(&me("a"), ttl).await.unwrap();
        if t.leading {
            break;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(8),
            "the lease never expired"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        stopped.elapsed() >= Duration::from_millis(1500),
        "taken over before the lease could expire: {:?}",
        stopped.elapsed()
    );
}

#[tokio::test]
async fn a_write_sent_but_never_answered_is_an_unknown_outcome_not_unavailable() {
    // Takes the request and never answers, like a member that applied the
    // write and then lost the connection.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            conns.push(s);
        }
    });
    let store = EtcdStore::new(vec![format!("http://{addr}")], "/silent/");
    match store.commit(0, &shedding(1), &entry("shed 1")).await {
        Err(e @ StoreError::Unknown(_)) => {
            assert!(
                e.to_string().contains("may or may not have been applied"),
                "{e}"
            )
        }
        other => panic!("expected an unknown outcome, got {other:?}"),
    }
    held.abort();
}

/// A file made before documents had revisions opens with every document
/// at revision 1, and conditional puts work on it from there.
#[tokio::test]
async fn sqlite_gives_documents_of_an_old_file_a_revision() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    {
        // The schema as it was before revisions.
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE controls (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL, body TEXT NOT NULL);
             CREATE TABLE audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL);
             CREATE TABLE docs (kind TEXT NOT NULL, id TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (kind, id));
             INSERT INTO docs (kind, id, body) VALUES ('incident', 'old', '{\"n\":1}');",
        )
        .unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    let got = store.get_doc_rev("incident", "old").await.unwrap().unwrap();
    assert_eq!((got.rev, got.body), (1, serde_json::json!({"n": 1})));
    let r = store
        .put_doc_if(
            "incident",
            "old",
            &serde_json::json!({"n": 2}),
            Some(1),
            Fence::Leader,
        )
        .await
        .unwrap();
    assert_eq!(r, 2);
    drop(store);
    // Opening it again migrates nothing twice and keeps the revisions.
    let store = SqliteStore::open(&path).unwrap();
    let got = store.get_doc_rev("incident", "old").await.unwrap().unwrap();
    assert_eq!((got.rev, got.body), (2, serde_json::json!({"n": 2})));
    match store
        .put_doc_if(
            "incident",
            "old",
            &serde_json::json!({"n": 9}),
            Some(1),
            Fence::None,
        )
        .await
    {
        Err(StoreError::DocConflict { found, .. }) => assert_eq!(found, Some(2)),
        other => panic!("expected a conflict, got {other:?}"),
    }
}

/// Two planes on one etcd: A leads and writes an incident, stalls past its
/// lease, B takes over and resolves it. A's fenced writes are refused as
/// NotLeader — even one made from the revision B wrote — and B's copy
/// stays.
#[tokio::test]
async fn a_plane_that_lost_the_lead_writes_no_incident() {
    use switchyard_control::store::Candidate;
    let etcd = Etcd::start().await;
    let (a, b) = (store_on(&etcd, "/fence/"), store_on(&etcd, "/fence/"));
    let me = |id: &str| Candidate {
        id: id.into(),
        url: format!("http://{id}"),
    };
    let ttl = Duration::from_secs(2);
    let open = serde_json::json!({"status": "open"});
    let resolved = serde_json::json!({"status": "resolved"});
    let stale = serde_json::json!({"status": "open", "by": "a"});
    assert!(a.campaign(&me("a"), ttl).await.unwrap().leading);
    let r1 = a
        .put_doc_if("incident", "i-1", &open, None, Fence::Leader)
        .await
        .unwrap();
    // B is not the leader yet: its fenced write is refused.
    assert!(!b.campaign(&me("b"), ttl).await.unwrap().leading);
    match b
        .put_doc_if("incident", "i-1", &resolved, Some(r1), Fence::Leader)
        .await
    {
        Err(StoreError::NotLeader(what)) => assert!(what.contains("incident/i-1"), "{what}"),
        other => panic!("a follower's fenced write must be refused, got {other:?}"),
    }
    // A stalls: no renewal. B takes over once A's lease has expired.
    let stalled = Instant::now();
    while !b.campaign(&me("b"), ttl).await.unwrap().leading {
        assert!(
            stalled.elapsed() < Duration::from_secs(10),
            "B never took over"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let read = b.get_doc_rev("incident", "i-1").await.unwrap().unwrap();
    assert_eq!(read.rev, r1);
    let r2 = b
        .put_doc_if("incident", "i-1", &resolved, Some(r1), Fence::Leader)
        .await
        .unwrap();
    // A wakes and writes what it held, from the revision it read and even
    // from the one B wrote: refused, because A no longer leads.
    for expected in [Some(r1), Some(r2), None] {
        match a
            .put_doc_if("incident", "i-1", &stale, expected, Fence::Leader)
            .await
        {
            Err(e @ StoreError::NotLeader(_)) => {
                assert!(!e.retryable(), "{e}");
                assert!(e.to_string().contains("no longer leads"), "{e}");
            }
            other => panic!("the old leader's write must be refused, got {other:?}"),
        }
    }
    // Campaigning again gets A a new lease, not the leadership.
    assert!(!a.campaign(&me("a"), ttl).await.unwrap().leading);
    assert!(matches!(
        a.put_doc_if("incident", "i-1", &stale, Some(r2), Fence::Leader)
            .await,
        Err(StoreError::NotLeader(_))
    ));
    let kept = b.get_doc_rev("incident", "i-1").await.unwrap().unwrap();
    assert_eq!((kept.rev, kept.body), (r2, resolved.clone()));
    // A leader that resigned holds no lease: refused without asking etcd.
    b.resign().await.unwrap();
    assert!(matches!(
        b.put_doc_if("incident", "i-1", &stale, Some(r2), Fence::Leader)
            .await,
        Err(StoreError::NotLeader(_))
    ));
    assert_eq!(a.get_doc("incident", "i-1").await.unwrap(), Some(resolved));
}

//! Both store backends against the conformance suite, plus what only a
//! real backend can show: SQLite keeping a change across a reopen, and two
//! control planes sharing one real etcd never both committing from the same
//! version.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use switchyard_control::store::etcd::EtcdStore;
use switchyard_control::store::sqlite::SqliteStore;
use switchyard_control::store::{conformance, AuditEntry, Store, StoreError};
use switchyard_model::Controls;

fn entry(action: &str) -> AuditEntry {
    AuditEntry {
        at_ms: 7,
        who: "test".into(),
        action: action.into(),
        reason: "store tests".into(),
        accepted: true,
        rule: None,
        version: None,
        detail: serde_json::Value::Null,
    }
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

/// One member of a real etcd cluster on free loopback ports, killed on drop.
struct Etcd {
    child: Child,
    endpoint: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

fn etcd_binary() -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("etcd"))
        .find(|p| p.is_file());
    // Never skip: a missing server would otherwise hide that the etcd backend
    // was not tested at all.
    found.unwrap_or_else(|| {
        panic!(
            "the etcd tests need a real etcd server, and `etcd` is not on PATH; install Debian's \
             etcd-server (`apt-get install etcd-server`), or run scripts/test, which installs it"
        )
    })
}

/// A port nothing listens on right now. The OS may hand a released port out
/// again, so the ones already given to a test here are remembered: tests run
/// in parallel and must not start two members on one port.
fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if GIVEN.lock().unwrap().insert(port) {
            return port;
        }
    }
}

impl Etcd {
    async fn start() -> Etcd {
        Etcd::cluster(1).await.pop().unwrap()
    }

    /// `n` members forming one cluster, all serving.
    async fn cluster(n: usize) -> Vec<Etcd> {
        let binary = etcd_binary();
        for attempt in 1.. {
            let mut members = Etcd::spawn(&binary, n);
            match Etcd::wait_ready(&mut members).await {
                Ok(()) => return members,
                // Something outside these tests took a port between our probe
                // and etcd's bind; new ports will do.
                Err(e) if attempt < 3 && e.contains("address already in use") => continue,
                Err(e) => panic!("{e}"),
            }
        }
        unreachable!()
    }

    fn spawn(binary: &Path, n: usize) -> Vec<Etcd> {
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let initial_cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        ports
            .iter()
            .enumerate()
            .map(|(i, (client, peer))| {
                let dir = tempfile::tempdir().unwrap();
                let endpoint = format!("http://127.0.0.1:{client}");
                let peer_url = format!("http://127.0.0.1:{peer}");
                let log = dir.path().join("etcd.log");
                let child = Command::new(binary)
                    .args(["--name", &format!("m{i}"), "--data-dir"])
                    .arg(dir.path().join("data"))
                    .args(["--listen-client-urls", &endpoint])
                    .args(["--advertise-client-urls", &endpoint])
                    .args(["--listen-peer-urls", &peer_url])
                    .args(["--initial-advertise-peer-urls", &peer_url])
                    .args(["--initial-cluster", &initial_cluster])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(&log).unwrap())
                    .spawn()
                    .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
                Etcd {
                    child,
                    endpoint,
                    log,
                    _dir: dir,
                }
            })
            .collect()
    }

    async fn wait_ready(members: &mut [Etcd]) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        for m in members {
            let probe = EtcdStore::new(vec![m.endpoint.clone()], "/readiness/");
            loop {
                if let Some(status) = m.child.try_wait().unwrap() {
                    return Err(format!(
                        "etcd at {} exited ({status}) before serving:\n{}",
                        m.endpoint,
                        tail(&m.log)
                    ));
                }
                match probe.load().await {
                    Ok(_) => break,
                    Err(e) if Instant::now() > deadline => {
                        return Err(format!(
                            "etcd at {} did not serve within 30s ({e}):\n{}",
                            m.endpoint,
                            tail(&m.log)
                        ))
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }
        Ok(())
    }

    fn store(&self, prefix: &str) -> EtcdStore {
        EtcdStore::new(vec![self.endpoint.clone()], prefix)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[tokio::test]
async fn etcd_passes_the_conformance_suite() {
    let etcd = Etcd::start().await;
    conformance::run(&etcd.store("/switchyard-conformance/")).await;
}

#[tokio::test]
async fn two_stores_on_one_etcd_never_both_commit_from_the_same_version() {
    let etcd = Etcd::start().await;
    let (a, b) = (etcd.store("/shared/"), etcd.store("/shared/"));
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
    let (a, b) = (etcd.store("/audit-race/"), etcd.store("/audit-race/"));
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
    let store = survivor.store("/leaderless/");
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

//! The lab's clients find their edges through real `switchyard dns`
//! servers: a user keeps its answer for the TTL, asks again at once when an
//! edge refuses it, and asks the second server when the first is gone.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use switchyard_api::OpRequest;
use switchyard_lab::resolve::{users_of, Resolver, User};
use switchyard_model::Op;
use switchyard_testkit::{eventually, Topology};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

fn ips(addrs: &[SocketAddr]) -> Vec<IpAddr> {
    addrs.iter().map(|a| a.ip()).collect()
}

fn all_on(users: &[Arc<User>], ip: IpAddr) -> Result<(), String> {
    let seen: Vec<Vec<IpAddr>> = users.iter().map(|u| ips(&u.addrs())).collect();
    seen.iter()
        .all(|a| a == &[ip])
        .then_some(())
        .ok_or(format!("{seen:?}"))
}

#[tokio::test]
async fn lab_users_keep_answers_for_the_ttl_ask_again_when_refused_and_use_the_second_server() {
    // No edge runs, so the servers do not probe: every edge counts alive.
    let lab = Topology::new(BIN, &[("r1", &["a"]), ("r2", &["b"])])
        .with_control_plane()
        .with_dns(2)
        .dns_probe_interval_ms(0);
    let cp = lab.start_control().await;
    let mut ns1 = lab.start_dns(1).await;
    let ns2 = lab.start_dns(2).await;
    ns1.following().await;
    ns2.following().await;
    let (a, b) = (lab.edge_addr("a").ip(), lab.edge_addr("b").ip());

    let resolver = Resolver {
        servers: vec![ns1.listen, ns2.listen],
        source: lab.client_ip("r1"),
        name: "svc.test".into(),
        port: 8080,
        timeout: Duration::from_millis(300),
    };
    let first = resolver.resolve(None).await.unwrap();
    assert_eq!(ips(&first.addrs), [a], "r1's client gets r1's edge");
    assert_eq!(first.addrs[0].port(), 8080);
    assert_eq!(first.ttl, Duration::from_secs(30));
    assert_eq!(first.server, ns1.listen);

    // Four users, each with a /24 of its own that no geo prefix places:
    // clients of the service's first region, r1.
    let base = match lab.unplaced_client_ip(0) {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(_) => unreachable!("the testkit's clients are IPv4"),
    };
    let users = users_of(base, 4);
    let mut tasks = tokio::task::JoinSet::new();
    for (k, u) in users.iter().enumerate() {
        tasks.spawn(u.clone().keep_fresh(resolver.clone(), (k + 1) as f64 / 4.0));
    }
    eventually(
        "every user has r1's edge",
        Duration::from_secs(3),
        || async { all_on(&users, a) },
    )
    .await;

    let op = Op::Failover {
        service: "svc".into(),
        to: "r2".into(),
    };
    cp.api(Some("operate-token"))
        .apply(&OpRequest::new(op, "test"))
        .await
        .unwrap_or_else(|e| panic!("failover refused: {e}"));
    eventually("the servers answer r2", Duration::from_secs(2), || async {
        let got = resolver.resolve(None).await.map_err(|e| e.to_string())?;
        (ips(&got.addrs) == [b])
            .then_some(())
            .ok_or(format!("{got:?}"))
    })
    .await;
    // The TTL (30 s) holds: the first renewal is 7.5 s away at the soonest.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    all_on(&users, a).expect("users keep their cached answer for the TTL");

    // An edge that refuses them sends them back to DNS at once.
    for u in &users {
        u.refused();
    }
    eventually(
        "refused users ask again and get r2's edge",
        Duration::from_secs(3),
        || async { all_on(&users, b) },
    )
    .await;

    // With the first server gone, lookups go to the second.
    ns1.kill9();
    let got = resolver.resolve(None).await.unwrap();
    assert_eq!(got.server, ns2.listen);
    assert_eq!(ips(&got.addrs), [b]);
    tasks.abort_all();
}

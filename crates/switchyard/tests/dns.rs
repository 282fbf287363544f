//! `switchyard dns` as a real process on real sockets: answers by client
//! subnet and resolver address, a control change reflected within a second,
//! static stability with the control plane killed, dead edges left out,
//! a region whose edges come back getting its clients back gradually,
//! the edges serving a gradual evacuation's clients where DNS sends them,
//! truncation and TCP fallback, and the negative answers.

use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::RecordType;
use switchyard_api::OpRequest;
use switchyard_model::Op;
use switchyard_testkit::dns::{addrs, prefix24};
use switchyard_testkit::{eventually, sample, DnsProcess, Topology};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");
const NAME: &str = "svc.test.";

/// Two regions of one zone each (`a` in r1, `b` in r2), a control plane,
/// one DNS server; the server does not probe (no edge runs).
fn two_regions() -> Topology {
    Topology::new(BIN, &[("r1", &["a"]), ("r2", &["b"])])
        .with_control_plane()
        .with_dns(1)
        .dns_probe_interval_ms(0)
}

/// What `ns` answers a client of `region` (by its subnet), as sorted addresses.
async fn answer_for(lab: &Topology, ns: &DnsProcess, region: &str) -> Vec<String> {
    let net = prefix24(lab.client_ip(region));
    let (addr, _) = net.split_once('/').unwrap();
    let mut a = addrs(&ns.ask(NAME, RecordType::A).subnet(addr, 24).udp().await);
    // The order rotates from query to query.
    a.sort();
    a
}

fn edge_ip(lab: &Topology, zone: &str) -> Vec<String> {
    vec![lab.edge_addr(zone).ip().to_string()]
}

async fn failover_to_r2(lab: &Topology, cp: &switchyard_testkit::ControlProcess) {
    let op = Op::Failover {
        service: "svc".into(),
        to: "r2".into(),
    };
    cp.api(Some("operate-token"))
        .apply(&OpRequest::new(op, "drill"))
        .await
        .unwrap_or_else(|e| panic!("failover refused: {e}\n{}", lab.config_text()));
}

#[tokio::test]
async fn clients_get_their_regions_edges_and_a_failover_moves_them_within_a_second() {
    let lab = two_regions().with_dns(2);
    let cp = lab.start_control().await;
    let ns = lab.start_dns(1).await;
    let ns2 = lab.start_dns(2).await;
    ns.following().await;
    ns2.following().await;
    assert_eq!(answer_for(&lab, &ns, "r1").await, edge_ip(&lab, "a"));
    assert_eq!(answer_for(&lab, &ns, "r2").await, edge_ip(&lab, "b"));
    // The subnet is echoed with the scope the answer holds for.
    let net = prefix24(lab.client_ip("r2"));
    let m = ns
        .ask(NAME, RecordType::A)
        .subnet(net.split_once('/').unwrap().0, 24)
        .udp()
        .await;
    let Some(EdnsOption::Subnet(cs)) = m.edns.as_ref().unwrap().option(EdnsCode::Subnet) else {
        panic!("no client subnet in {m:?}");
    };
    assert_eq!((cs.source_prefix(), cs.scope_prefix()), (24, 24));
    assert_eq!(m.answers[0].ttl, 30);
    // Without ECS, the resolver's own address places the client.
    let m = ns
        .ask(NAME, RecordType::A)
        .from(lab.client_ip("r2"))
        .udp()
        .await;
    assert_eq!(addrs(&m), edge_ip(&lab, "b"));

    let t = Instant::now();
    failover_to_r2(&lab, &cp).await;
    // Each server on its own, from the same state.
    for s in [&ns, &ns2] {
        eventually(
            "r1's clients are sent to r2",
            Duration::from_secs(1),
            || async {
                let a = answer_for(&lab, s, "r1").await;
                (a == edge_ip(&lab, "b"))
                    .then_some(())
                    .ok_or(format!("{a:?}"))
            },
        )
        .await;
    }
    let took = t.elapsed();
    eprintln!("failover applied and answered by both servers in {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    let m = ns.metrics().await;
    assert!(
        sample(&m, "switchyard_dns_answer_sets_changed_total") >= 1.0,
        "{m}"
    );
    assert!(
        sample(
            &m,
            "switchyard_dns_queries_total{qtype=\"A\",rcode=\"NOERROR\",region=\"r2\",transport=\"udp\"}"
        ) >= 2.0,
        "{m}"
    );
    let s = ns.status().await;
    let svc = s.service("svc").unwrap();
    assert_eq!(svc.for_region(Some("r1"))[0].region, "r2", "{s:?}");
}

#[tokio::test]
async fn answers_hold_with_the_plane_killed_and_a_restart_starts_from_last_known_good() {
    let lab = two_regions();
    let mut cp = lab.start_control().await;
    let mut ns = lab.start_dns(1).await;
    ns.following().await;
    failover_to_r2(&lab, &cp).await;
    eventually(
        "r1's clients are sent to r2",
        Duration::from_secs(2),
        || async {
            let a = answer_for(&lab, &ns, "r1").await;
            (a == edge_ip(&lab, "b"))
                .then_some(())
                .ok_or(format!("{a:?}"))
        },
    )
    .await;
    cp.kill9();
    for _ in 0..5 {
        assert_eq!(answer_for(&lab, &ns, "r1").await, edge_ip(&lab, "b"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ns.restart().await;
    let s = ns.status().await;
    assert_eq!(s.source, "last-known-good", "{s:?}");
    assert!(!s.control_plane_connected, "{s:?}");
    assert_eq!(answer_for(&lab, &ns, "r1").await, edge_ip(&lab, "b"));
    assert_eq!(answer_for(&lab, &ns, "r2").await, edge_ip(&lab, "b"));
}

#[tokio::test]
async fn dead_edges_are_left_out_and_with_none_left_every_edge_is_answered() {
    let lab = Topology::new(BIN, &[("r1", &["a", "b"]), ("r2", &["c"])])
        .instances_per_zone(1)
        .with_dns(1);
    let mut edges = lab.start_edges(&["a", "b", "c"]).await;
    let ns = lab.start_dns(1).await;
    let both = [edge_ip(&lab, "a"), edge_ip(&lab, "b")].concat();
    assert_eq!(answer_for(&lab, &ns, "r1").await, both);
    edges[0].kill9();
    eventually("a's edge is left out", Duration::from_secs(2), || async {
        let a = answer_for(&lab, &ns, "r1").await;
        (a == edge_ip(&lab, "b"))
            .then_some(())
            .ok_or(format!("{a:?}"))
    })
    .await;
    // r1 without a live edge: its clients go where its edges would forward them.
    edges[1].kill9();
    eventually("r1's clients go to r2", Duration::from_secs(2), || async {
        let a = answer_for(&lab, &ns, "r1").await;
        (a == edge_ip(&lab, "c"))
            .then_some(())
            .ok_or(format!("{a:?}"))
    })
    .await;
    edges[2].kill9();
    eventually(
        "nothing alive: every edge of r1 again",
        Duration::from_secs(2),
        || async {
            let a = answer_for(&lab, &ns, "r1").await;
            (a == both).then_some(()).ok_or(format!("{a:?}"))
        },
    )
    .await;
    let m = ns.metrics().await;
    assert!(
        sample(&m, "switchyard_dns_fail_open_total{service=\"svc\"}") >= 1.0,
        "{m}"
    );
    assert_eq!(sample(&m, "switchyard_dns_edge_up{zone=\"a\"}"), 0.0, "{m}");
}

/// Which of `subnets` (client /24s no geo prefix places, so r1's clients)
/// `ns` answers with r1's edge `a`.
async fn in_r1(lab: &Topology, ns: &DnsProcess, subnets: &[String]) -> Vec<bool> {
    let a = edge_ip(lab, "a");
    let mut out = Vec::with_capacity(subnets.len());
    for s in subnets {
        let got = addrs(&ns.ask(NAME, RecordType::A).subnet(s, 24).udp().await);
        out.push(got == a);
    }
    out
}

#[tokio::test]
async fn a_region_whose_edges_come_back_gets_its_clients_back_gradually_each_for_good() {
    let lab = Topology::new(BIN, &[("r1", &["a"]), ("r2", &["b"])])
        .instances_per_zone(1)
        .with_dns(1)
        .dns_toml("return_ramp_s = 3")
        // One address asks for 200 client subnets in a tight loop, the
        // traffic of many resolvers: not a flood to rate limit.
        .dns_toml("rrl = { responses_per_s = 0 }");
    let mut edges = lab.start_edges(&["a", "b"]).await;
    let ns = lab.start_dns(1).await;
    let subnets: Vec<String> = (0..200u32).map(|i| format!("10.1.{i}.0")).collect();
    // Never seen down: r1 has all its clients from the start.
    let all = in_r1(&lab, &ns, &subnets).await;
    assert!(all.iter().all(|b| *b), "r1 starts with {all:?}");

    edges[0].kill9();
    eventually("r1's clients go to r2", Duration::from_secs(3), || async {
        let n = in_r1(&lab, &ns, &subnets)
            .await
            .iter()
            .filter(|b| **b)
            .count();
        (n == 0).then_some(()).ok_or(format!("{n} still in r1"))
    })
    .await;
    let m = ns.metrics().await;
    assert_eq!(
        sample(&m, "switchyard_dns_region_returning{region=\"r1\"}"),
        0.0,
        "{m}"
    );

    edges[0].restart().await;
    let started = Instant::now();
    let mut counts = Vec::new();
    let mut returning_seen = None;
    let mut was = vec![false; subnets.len()];
    loop {
        let now = in_r1(&lab, &ns, &subnets).await;
        for (i, (before, after)) in was.iter().zip(&now).enumerate() {
            assert!(
                !before || *after,
                "{} went back to r2 during the ramp (counts so far {counts:?})",
                subnets[i]
            );
        }
        let n = now.iter().filter(|b| **b).count();
        if n > 0 && n < subnets.len() && returning_seen.is_none() {
            returning_seen = ns.status().await.returning.get("r1").copied();
        }
        counts.push(n);
        was = now;
        if n == subnets.len() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "r1 not back in full: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let took = started.elapsed();
    eprintln!("r1 back in {took:?}: {counts:?}");
    let steps: std::collections::BTreeSet<usize> = counts
        .iter()
        .copied()
        .filter(|n| *n > 0 && *n < subnets.len())
        .collect();
    assert!(
        steps.len() >= 3,
        "r1 came back in too few steps: {counts:?}"
    );
    assert!(took >= Duration::from_secs(2), "{took:?}: {counts:?}");
    let r = returning_seen.expect("/status shows r1 returning during the ramp");
    assert!(r.fraction > 0.0 && r.fraction < 1.0, "{r:?}");
    // Back in full: no longer shown as returning, and the gauge says 1.
    eventually("the ramp is over", Duration::from_secs(2), || async {
        let s = ns.status().await;
        s.returning
            .is_empty()
            .then_some(())
            .ok_or(format!("{:?}", s.returning))
    })
    .await;
    let m = ns.metrics().await;
    assert_eq!(
        sample(&m, "switchyard_dns_region_returning{region=\"r1\"}"),
        1.0,
        "{m}"
    );
    assert!(ns.log().contains("region returning"), "{}", ns.log());
}

#[tokio::test]
async fn an_answer_too_big_for_udp_is_truncated_and_comes_whole_over_tcp() {
    let zones: Vec<String> = (1..=40).map(|i| format!("z{i}")).collect();
    let zs: Vec<&str> = zones.iter().map(String::as_str).collect();
    let lab = Topology::new(BIN, &[("r1", &zs)])
        .instances_per_zone(1)
        .with_dns(1)
        .dns_probe_interval_ms(0);
    let ns = lab.start_dns(1).await;
    let udp = ns.ask(NAME, RecordType::A).udp().await;
    assert!(udp.metadata.truncation, "{udp:?}");
    assert!(udp.answers.is_empty());
    let tcp = ns.ask(NAME, RecordType::A).tcp().await;
    assert!(!tcp.metadata.truncation);
    assert_eq!(tcp.answers.len(), 40);
    // A client offering a bigger buffer over EDNS gets it all over UDP.
    let big = ns.ask(NAME, RecordType::A).edns(4096).udp().await;
    assert_eq!(big.answers.len(), 40);
    let m = ns.metrics().await;
    assert_eq!(sample(&m, "switchyard_dns_truncated_total"), 1.0, "{m}");
}

#[tokio::test]
async fn soa_ns_nxdomain_nodata_and_refused_over_the_wire() {
    let lab = Topology::new(BIN, &[("r1", &["a"])])
        .instances_per_zone(1)
        .with_dns(1)
        .dns_probe_interval_ms(0)
        .dns_toml("ttl_s = 15\nservice_ttl_s = { svc = 9 }\nquery_log = \"queries.log\"");
    let ns = lab.start_dns(1).await;
    let soa = ns.ask("test.", RecordType::SOA).udp().await;
    assert_eq!(soa.answers[0].record_type(), RecordType::SOA);
    assert!(soa.metadata.authoritative);
    let nsr = ns.ask("test.", RecordType::NS).tcp().await;
    assert_eq!(addrs(&nsr), ["ns1.test."]);
    // The name server's own address, in the additional section and asked for.
    let ns_ip = ns.listen.ip().to_string();
    assert_eq!(nsr.additionals[0].data.to_string(), ns_ip);
    assert_eq!(
        addrs(&ns.ask("ns1.test.", RecordType::A).udp().await),
        [ns_ip]
    );
    let nx = ns.ask("nope.test.", RecordType::A).udp().await;
    assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(nx.authorities[0].record_type(), RecordType::SOA);
    let nodata = ns.ask(NAME, RecordType::TXT).udp().await;
    assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
    assert!(nodata.answers.is_empty() && nodata.authorities.len() == 1);
    let other = ns.ask("example.org.", RecordType::A).udp().await;
    assert_eq!(other.metadata.response_code, ResponseCode::Refused);
    let a = ns.ask(NAME, RecordType::A).udp().await;
    assert_eq!(a.answers[0].ttl, 9, "the service's own TTL");
    assert_eq!(soa.answers[0].ttl, 15);
    // Garbage gets FORMERR, and the server keeps answering.
    let garbage = [0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1];
    let f = ns.ask(NAME, RecordType::A).udp_raw(&garbage).await.unwrap();
    assert_eq!(
        (f.metadata.id, f.metadata.response_code),
        (0x1234, ResponseCode::FormErr)
    );
    assert_eq!(
        addrs(&ns.ask(NAME, RecordType::A).udp().await),
        edge_ip(&lab, "a")
    );
    // Every query has its line, written off the request path.
    let log = lab.dir().join("queries.log");
    eventually(
        "the query log has every query",
        Duration::from_secs(2),
        || async {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<serde_json::Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            let nx = lines
                .iter()
                .any(|l| l["name"] == "nope.test." && l["rcode"] == "NXDOMAIN");
            let served = lines
                .iter()
                .any(|l| l["service"] == "svc" && l["region"] == "r1" && l["transport"] == "udp");
            (lines.len() == 9 && nx && served).then_some(()).ok_or(text)
        },
    )
    .await;
}

#[tokio::test]
async fn a_wrong_dns_section_is_refused_by_validate_and_dns_with_every_path() {
    let lab = Topology::new(BIN, &[("r1", &["a"])])
        .with_dns(1)
        .dns_toml("ttl_s = 0\ndefault_region = \"mars\"\nedge_addresses = { a = [\"0.0.0.0\"] }");
    let cfg = lab.write_config();
    let wants = [
        "dns.ttl_s: must be between 1 and 86400",
        "dns.default_region: unknown region \"mars\"",
        "dns.edge_addresses.a[0]: 0.0.0.0 is the unspecified address",
    ];
    for args in [vec!["validate"], vec!["dns", "--config"]] {
        let out = std::process::Command::new(BIN)
            .args(&args)
            .arg(&cfg)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} accepts it");
        let err = String::from_utf8_lossy(&out.stderr);
        for w in wants {
            assert!(err.contains(w), "{args:?}: {w:?} in {err}");
        }
    }
}

#[tokio::test]
async fn a_second_server_of_the_same_name_refuses_to_start_and_sigterm_ends_one() {
    let lab = Topology::new(BIN, &[("r1", &["a"])])
        .with_dns(1)
        .dns_probe_interval_ms(0);
    let mut ns = lab.start_dns(1).await;
    let out = std::process::Command::new(BIN)
        .args(["dns", "--name", "ns1", "--config"])
        .arg(lab.config_path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("another DNS server named ns1 is running"),
        "{err}"
    );
    // It names the lock, so an operator knows which file is held.
    assert!(err.contains("dns-ns1.lock is held"), "{err}");
    let st = ns.terminate(Duration::from_secs(2)).await;
    assert!(st.is_some_and(|s| s.success()), "{st:?}");
}

/// r1 at weight 0.5 through the plane: a gradual evacuation half done.
async fn evacuate_r1_halfway(cp: &switchyard_testkit::ControlProcess) {
    let op = Op::RegionWeight {
        service: "svc".into(),
        region: "r1".into(),
        weight: 0.5,
    };
    cp.api(Some("operate-token"))
        .apply(&OpRequest::new(op, "evacuate r1 gradually"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_gradual_evacuation_moves_its_share_of_clients_and_each_client_stays_put() {
    let lab = two_regions();
    let cp = lab.start_control().await;
    let ns = lab.start_dns(1).await;
    ns.following().await;
    evacuate_r1_halfway(&cp).await;
    eventually(
        "the weight reaches the server",
        Duration::from_secs(2),
        || async {
            let s = ns.status().await;
            let w = s.service("svc").unwrap().for_region(Some("r1"))[0].weight;
            (w == 0.5).then_some(()).ok_or(w.to_string())
        },
    )
    .await;
    // 200 client subnets no prefix places: they count as the service's
    // first region, r1.
    let mut kept = 0;
    for i in 0..200u32 {
        let subnet = format!("10.1.{}.0", i);
        let ask = || ns.ask(NAME, RecordType::A).subnet(&subnet, 24);
        let first = addrs(&ask().udp().await);
        assert_eq!(
            addrs(&ask().udp().await),
            first,
            "{subnet} moved between two queries"
        );
        if first == edge_ip(&lab, "a") {
            kept += 1;
        }
    }
    assert!((70..=130).contains(&kept), "r1 kept {kept} of 200 clients");
}

#[tokio::test]
async fn a_changed_config_is_taken_at_once_and_a_wrong_one_is_refused() {
    let lab = Topology::new(BIN, &[("r1", &["a"])])
        .with_dns(1)
        .dns_probe_interval_ms(0);
    let ns = lab.start_dns(1).await;
    let ttl = || async { ns.ask(NAME, RecordType::A).udp().await.answers[0].ttl };
    assert_eq!(ttl().await, 30);
    let edit = |from: &str, to: &str| {
        let text = lab.config_text().replace(from, to);
        assert_ne!(text, lab.config_text(), "{from:?} is in the config");
        std::fs::write(lab.config_path(), text).unwrap();
    };
    edit(
        "probe_interval_ms = 0\n",
        "probe_interval_ms = 0\nttl_s = 7\n",
    );
    eventually(
        "the new TTL is answered",
        Duration::from_secs(3),
        || async {
            let t = ttl().await;
            (t == 7).then_some(()).ok_or(t.to_string())
        },
    )
    .await;
    // Invalid, then valid but moving the server: both refused, 7 stays.
    edit(
        "probe_interval_ms = 0\n",
        "probe_interval_ms = 0\nttl_s = 0\n",
    );
    eventually(
        "the wrong config is refused",
        Duration::from_secs(3),
        || async {
            let m = ns.metrics().await;
            let refused = sample(
                &m,
                "switchyard_dns_controls_updates_total{source=\"config\",result=\"refused\"}",
            );
            (refused >= 1.0).then_some(()).ok_or(m)
        },
    )
    .await;
    let (_, (listen, _)) = lab.dns_addrs(1);
    edit(&format!("{listen}"), &format!("{}:5301", listen.ip()));
    eventually(
        "the move is refused too",
        Duration::from_secs(3),
        || async {
            let m = ns.metrics().await;
            let refused = sample(
                &m,
                "switchyard_dns_controls_updates_total{source=\"config\",result=\"refused\"}",
            );
            (refused >= 2.0).then_some(()).ok_or(m)
        },
    )
    .await;
    assert_eq!(ttl().await, 7);
    assert!(ns.log().contains("that needs a restart"), "{}", ns.log());
}

#[tokio::test]
async fn a_zonal_shift_takes_the_zones_edge_out_of_the_answers_until_it_ends() {
    let lab = Topology::new(BIN, &[("r1", &["a", "b", "c"]), ("r2", &["d"])])
        .with_control_plane()
        .with_dns(1)
        .dns_probe_interval_ms(0);
    let cp = lab.start_control().await;
    let ns = lab.start_dns(1).await;
    ns.following().await;
    let all = [edge_ip(&lab, "a"), edge_ip(&lab, "b"), edge_ip(&lab, "c")].concat();
    let rest = [edge_ip(&lab, "b"), edge_ip(&lab, "c")].concat();
    assert_eq!(answer_for(&lab, &ns, "r1").await, all);
    let operate = cp.api(Some("operate-token"));
    let shift = Op::Shift {
        service: "svc".into(),
        zone: "a".into(),
        for_: Duration::from_secs(600),
    };
    operate
        .apply(&OpRequest::new(shift, "zone a is gray"))
        .await
        .unwrap();
    eventually("a's edge is out", Duration::from_secs(1), || async {
        let a = answer_for(&lab, &ns, "r1").await;
        (a == rest).then_some(()).ok_or(format!("{a:?}"))
    })
    .await;
    let unshift = Op::Unshift {
        service: "svc".into(),
        zone: "a".into(),
    };
    operate
        .apply(&OpRequest::new(unshift, "zone a is fine"))
        .await
        .unwrap();
    eventually("a's edge is back", Duration::from_secs(1), || async {
        let a = answer_for(&lab, &ns, "r1").await;
        (a == all).then_some(()).ok_or(format!("{a:?}"))
    })
    .await;
}

/// During a gradual evacuation DNS and the edges split the region's clients
/// the same way: a client DNS answers with r1's edge is served in r1 by that
/// edge, every request of it, and one DNS sends to r2 but that reaches r1's
/// edge anyway (a cached answer, no DNS at all) is forwarded to r2. Split
/// twice, once by DNS and again per request by the edge, r1 would serve
/// about w² of these clients' traffic instead of w.
#[tokio::test(flavor = "multi_thread")]
async fn during_a_gradual_evacuation_the_edges_serve_the_clients_dns_sends_them() {
    let lab = Topology::new(BIN, &[("r1", &["a"]), ("r2", &["b"])])
        .instances_per_zone(1)
        .with_control_plane()
        .with_dns(1)
        // One address asks for 100 client subnets in a tight loop, the
        // traffic of many resolvers: not a flood to rate limit.
        .dns_toml("rrl = { responses_per_s = 0 }");
    let _ups = lab.start_upstreams().await;
    let cp = lab.start_control().await;
    let edges = lab.start_edges(&["a", "b"]).await;
    let ns = lab.start_dns(1).await;
    ns.following().await;
    evacuate_r1_halfway(&cp).await;
    eventually(
        "the weight reaches the DNS server and r1's edge",
        Duration::from_secs(3),
        || async {
            let s = ns.status().await;
            let dns = s.service("svc").unwrap().for_region(Some("r1"))[0].weight;
            let st = edges[0].status().await;
            let edge = st
                .service("svc")
                .unwrap()
                .regions
                .get("r1")
                .map(|r| r.weight);
            (dns == 0.5 && edge == Some(0.5))
                .then_some(())
                .ok_or(format!("dns {dns}, edge {edge:?}"))
        },
    )
    .await;
    // 100 clients, each in a /24 of its own that no geo prefix places (so
    // they count as r1's), each asking DNS through a resolver that sends
    // its subnet, then sending three requests to r1's edge with no home.
    let (a, b) = (edge_ip(&lab, "a"), edge_ip(&lab, "b"));
    let (mut sent_to_r1, mut served_in_r1) = (0, 0);
    let mut wrong = Vec::new();
    for i in 0..100u8 {
        let ip = lab.unplaced_client_ip(i);
        let net = prefix24(ip);
        let (subnet, _) = net.split_once('/').unwrap();
        let answer = addrs(&ns.ask(NAME, RecordType::A).subnet(subnet, 24).udp().await);
        let dns_r1 = answer == a;
        assert!(dns_r1 || answer == b, "{ip}: DNS answered {answer:?}");
        sent_to_r1 += usize::from(dns_r1);
        let mut regions = Vec::new();
        for n in 0..3 {
            let r = edges[0]
                .get(&format!("/items/{n}"))
                .from(ip)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status, 200, "{ip}: {}", r.body);
            regions.push(r.upstream().split('/').next().unwrap_or("").to_string());
        }
        let want = if dns_r1 { "r1" } else { "r2" };
        if regions.iter().any(|r| r != want) {
            wrong.push(format!(
                "{ip}: DNS sends it to {want}, served in {regions:?}"
            ));
        }
        served_in_r1 += regions.iter().filter(|r| *r == "r1").count();
    }
    eprintln!("DNS sent {sent_to_r1} of 100 clients to r1; r1's edge served {served_in_r1} of their 300 requests there");
    assert!(
        wrong.is_empty(),
        "{} of 100 clients not served where DNS sends them:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert!(
        (30..=70).contains(&sent_to_r1),
        "DNS sent {sent_to_r1} of 100 clients to r1"
    );
    assert_eq!(served_in_r1, 3 * sent_to_r1);
}

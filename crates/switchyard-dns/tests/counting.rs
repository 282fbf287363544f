//! Queries answered from precomputed bytes are counted under the same
//! labels as the full path counts them, each exactly once, also after the
//! view they were answered from is replaced.

use std::net::SocketAddr;

use hickory_proto::rr::RecordType;
use switchyard_dns::packet::{query, Transport};
use switchyard_dns::server::handle;
use switchyard_dns::Dns;
use switchyard_model::{Config, Controls, RegionControl, RegionState};

const CONFIG: &str = r#"
[[region]]
name = "r1"
zone = [{ name = "a", edge = "127.1.1.1:8080", admin = "127.1.1.1:9901" }]
[[region]]
name = "r2"
zone = [{ name = "b", edge = "127.2.1.1:8080", admin = "127.2.1.1:9901" }]
[[service]]
name = "svc"
hosts = ["svc.test"]
min_healthy = 0.5
instance = [{ name = "i1", zone = "a", addr = "127.1.1.11:8081" }]
[dns]
default_region = "r1"
[[dns.server]]
name = "ns1"
listen = ["127.0.0.1:5353"]
admin = "127.0.0.1:9953"
[[dns.zone]]
apex = "test"
ns = ["ns1.test"]
ns_addresses = { "ns1.test" = ["127.0.0.53"] }
"#;

fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn fast_answers_are_counted_once_each_under_their_labels_across_views() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_toml(CONFIG, |_| None).unwrap();
    let version = switchyard_model::config_version(CONFIG);
    let running = switchyard_api::configs::RunningConfig {
        version: version.clone(),
        source: "file".into(),
        refused: None,
        file_version: Some(version),
    };
    let dns = Dns::new(config, running, dir.path().join("c.toml"), "ns1").unwrap();
    let from: SocketAddr = "10.9.0.1:5000".parse().unwrap();
    let ask = |id: u16, name: &str, t: RecordType, transport| {
        handle(&dns, &query(id, name, t, Some(1232), None), from, transport).expect("an answer");
    };
    for id in 0..5 {
        ask(id, "svc.test.", RecordType::A, Transport::Udp);
    }
    ask(9, "svc.test.", RecordType::A, Transport::Tcp);
    ask(10, "test.", RecordType::SOA, Transport::Udp);
    ask(11, "nope.test.", RecordType::A, Transport::Udp);
    // r1 out: a new view, whose answers go to r2.
    let mut c = Controls {
        version: 2,
        ..Default::default()
    };
    c.services.entry("svc".into()).or_default().regions.insert(
        "r1".into(),
        RegionControl {
            state: RegionState::Out,
            ..Default::default()
        },
    );
    dns.apply_controls(c, "test").unwrap();
    for id in 0..3 {
        ask(id, "svc.test.", RecordType::A, Transport::Udp);
    }
    ask(12, "test.", RecordType::SOA, Transport::Udp);

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &dns.metrics.registry).unwrap();
    let q = |labels: &str| sample(&text, &format!("switchyard_dns_queries_total{{{labels}}}"));
    assert_eq!(
        q(r#"qtype="A",rcode="NOERROR",region="r1",transport="udp""#),
        5.0,
        "{text}"
    );
    assert_eq!(
        q(r#"qtype="A",rcode="NOERROR",region="r1",transport="tcp""#),
        1.0,
        "{text}"
    );
    assert_eq!(
        q(r#"qtype="A",rcode="NOERROR",region="r2",transport="udp""#),
        3.0,
        "{text}"
    );
    assert_eq!(
        q(r#"qtype="SOA",rcode="NOERROR",region="",transport="udp""#),
        2.0,
        "{text}"
    );
    assert_eq!(
        q(r#"qtype="A",rcode="NXDOMAIN",region="",transport="udp""#),
        1.0,
        "{text}"
    );
}

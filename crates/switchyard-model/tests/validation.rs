use std::time::Duration;

use switchyard_model::{Config, ConfigError, Controls};

const EXAMPLE: &str = include_str!("../../../examples/switchyard.toml");

fn no_env(_: &str) -> Option<String> {
    None
}

fn errors(text: &str) -> Vec<String> {
    match Config::from_toml(text, no_env) {
        Ok(_) => panic!("expected the config to be refused"),
        Err(e) => e.reasons(),
    }
}

#[test]
fn the_shipped_example_is_valid() {
    let c = Config::from_toml(EXAMPLE, no_env).unwrap();
    assert_eq!(c.regions.len(), 2);
    assert_eq!(c.zones().count(), 6);
    let svc = c.service("catalog").unwrap();
    assert_eq!(svc.instances.len(), 12);
    assert_eq!(svc.floor("us-east"), 3);
}

#[test]
fn a_missing_floor_is_refused_never_defaulted() {
    let text = EXAMPLE.replace("min_healthy = 0.5", "");
    assert_eq!(
        errors(&text),
        vec!["service.catalog.min_healthy: required: the fraction of instances per region that must stay in service (for example 0.5)"]
    );
}

#[test]
fn every_error_is_reported_at_once_with_its_path() {
    let text = EXAMPLE
        .replace("min_healthy = 0.5", "min_healthy = 1.5")
        .replace(
            "zone = \"us-east-b\"\n  addr = \"127.1.2.11:8081\"",
            "zone = \"us-east-q\"\n  addr = \"127.1.2.11:8081\"",
        )
        .replace("addr = \"127.2.3.12:8081\"", "addr = \"127.2.3.11:8081\"")
        .replace("edge = \"127.2.2.1:8080\"", "edge = \"127.2.1.1:8080\"")
        .replace(
            "region_preference = [\"us-east\", \"eu-west\"]",
            "region_preference = [\"us-east\", \"mars\"]",
        )
        .replace("retry_budget = 0.2", "retry_budget = 2.0");
    let errs = errors(&text);
    let expect = [
        "service.catalog.min_healthy: must be a fraction between 0 and 1, got 1.5",
        "service.catalog.instance.use-b-1.zone: unknown zone \"us-east-q\"",
        "service.catalog.instance.euw-c-2.addr: duplicate address 127.2.3.11:8081 (also at service.catalog.instance.euw-c-1.addr)",
        "region.eu-west.zone.eu-west-b.edge: duplicate address 127.2.1.1:8080 (also at region.eu-west.zone.eu-west-a.edge)",
        "service.catalog.region_preference[1]: unknown region \"mars\"",
        "service.catalog.retry_budget: must be a fraction between 0 and 1, got 2",
    ];
    for e in expect {
        assert!(errs.iter().any(|x| x == e), "missing {e:?} in {errs:#?}");
    }
    assert_eq!(errs.len(), expect.len(), "{errs:#?}");
}

#[test]
fn unknown_fields_are_refused_with_line_and_name() {
    let text = EXAMPLE.replace("min_healthy = 0.5", "min_healthy = 0.5\nmin_helthy = 0.5");
    let err = Config::from_toml(&text, no_env).unwrap_err();
    assert!(matches!(err, ConfigError::Parse(_)));
    let msg = err.to_string();
    assert!(msg.contains("unknown field `min_helthy`"), "{msg}");
    let line = EXAMPLE
        .lines()
        .position(|l| l == "min_healthy = 0.5")
        .unwrap()
        + 2;
    assert!(msg.contains(&format!("line {line}")), "{msg}");
}

#[test]
fn duplicate_names_and_hosts_are_refused() {
    let text = format!(
        "{EXAMPLE}\n[[service]]\nname = \"catalog\"\nhosts = [\"catalog.local\"]\nmin_healthy = 0.5\n[[service.instance]]\nname = \"x\"\nzone = \"us-east-a\"\naddr = \"127.1.1.13:8081\"\n"
    );
    let errs = errors(&text);
    assert!(
        errs.contains(&"service.catalog.name: duplicate service name \"catalog\"".to_string()),
        "{errs:#?}"
    );
    assert!(
        errs.contains(&"service.catalog.hosts[0]: duplicate host \"catalog.local\" (also at service.catalog.hosts[0])".to_string()),
        "{errs:#?}"
    );
}

#[test]
fn admin_token_comes_from_the_environment() {
    let c = Config::from_toml(EXAMPLE, |k| {
        (k == "SWITCHYARD_ADMIN_TOKEN").then(|| "s3cret-token".to_string())
    })
    .unwrap();
    assert_eq!(c.edge.admin_token.as_deref(), Some("s3cret-token"));
}

#[test]
fn the_forward_secret_comes_from_the_environment_and_a_short_one_is_refused() {
    let c = Config::from_toml(EXAMPLE, |k| {
        (k == "SWITCHYARD_FORWARD_SECRET").then(|| "a-long-enough-secret".to_string())
    })
    .unwrap();
    assert_eq!(
        c.edge.forward_secret.as_deref(),
        Some("a-long-enough-secret")
    );
    assert_eq!(
        Config::from_toml(EXAMPLE, no_env)
            .unwrap()
            .edge
            .forward_secret,
        None
    );
    let short = EXAMPLE.replace(
        "forward_secret_env = \"SWITCHYARD_FORWARD_SECRET\"",
        "forward_secret = \"short\"",
    );
    assert!(
        errors(&short).contains(&"edge.forward_secret: must be at least 16 characters".to_string())
    );
    let both = EXAMPLE.replace(
        "forward_secret_env = \"SWITCHYARD_FORWARD_SECRET\"",
        "forward_secret_env = \"X\"\nforward_secret = \"0123456789abcdef\"",
    );
    assert!(
        errors(&both).contains(
            &"edge.forward_secret: set either forward_secret or forward_secret_env, not both"
                .to_string()
        ),
        "{:?}",
        errors(&both)
    );
}

#[test]
fn controls_are_checked_against_the_topology() {
    let c = Config::from_toml(EXAMPLE, no_env).unwrap();
    let ok = r#"{"version":3,"services":{"catalog":{"read_only":true,"zones":{"us-east-a":{"weight":0,"expires_at_ms":99}},"regions":{"eu-west":{"state":"out"}}}}}"#;
    let ctl = Controls::from_json(ok, &c).unwrap();
    assert_eq!(
        ctl.services["catalog"].zones["us-east-a"].effective_weight(10),
        0.0
    );
    assert_eq!(
        ctl.services["catalog"].zones["us-east-a"].effective_weight(100),
        1.0
    );

    let bad = r#"{"services":{"catalog":{"shed_level":7,"zones":{"us-east-z":{"weight":2}}},"nope":{}},
                 "faults":[{"service":"catalog","route":"nope","abort_percent":10}]}"#;
    let errs = Controls::from_json(bad, &c).unwrap_err().reasons();
    for e in [
        "services.catalog.shed_level: must be 0, 1 or 2, got 7",
        "services.catalog.zones.us-east-z: unknown zone \"us-east-z\"",
        "services.catalog.zones.us-east-z.weight: must be a weight between 0 and 1, got 2",
        "services.nope: unknown service \"nope\"",
        "faults[0].route: unknown route \"nope\" of service \"catalog\"",
        "faults[0].abort_status: required when abort_percent is above 0",
    ] {
        assert!(errs.iter().any(|x| x == e), "missing {e:?} in {errs:#?}");
    }
    let unknown = Controls::from_json(r#"{"servces":{}}"#, &c)
        .unwrap_err()
        .to_string();
    assert!(unknown.contains("unknown field `servces`"), "{unknown}");
}

#[test]
fn forward_via_names_another_region_and_valid_addresses() {
    let ok = EXAMPLE.replace(
        "[[region]]\nname = \"us-east\"\n",
        "[[region]]\nname = \"us-east\"\nforward_via = { \"eu-west\" = [\"127.1.0.33:8080\"] }\n",
    );
    let c = Config::from_toml(&ok, no_env).unwrap();
    assert_eq!(
        c.region("us-east").unwrap().forward_via["eu-west"],
        vec!["127.1.0.33:8080".parse().unwrap()]
    );
    let bad = EXAMPLE.replace(
        "[[region]]\nname = \"us-east\"\n",
        "[[region]]\nname = \"us-east\"\nforward_via = { \"us-east\" = [\"nowhere\"], \"mars\" = [] }\n",
    );
    let errs = errors(&bad);
    for e in [
        "region.us-east.forward_via.us-east: \"us-east\" is not another region of this config",
        "region.us-east.forward_via.us-east[0]: not an address of the form ip:port: \"nowhere\"",
        "region.us-east.forward_via.mars: \"mars\" is not another region of this config",
        "region.us-east.forward_via.mars: at least one address is required",
    ] {
        assert!(errs.iter().any(|x| x == e), "missing {e:?} in {errs:#?}");
    }
}

#[test]
fn a_floor_of_zero_is_no_floor_and_is_refused() {
    let text = EXAMPLE.replace("min_healthy = 0.5", "min_healthy = 0.0");
    assert_eq!(
        errors(&text),
        vec!["service.catalog.min_healthy: must be above 0 (a floor of 0 lets every instance leave service), got 0"]
    );
}

#[test]
fn port_zero_is_refused_where_an_address_is_named() {
    let text = EXAMPLE.replace("edge = \"127.1.1.1:8080\"", "edge = \"127.1.1.1:0\"");
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with("region.us-east.zone.us-east-a.edge: port 0"),
        "{errs:?}"
    );
}

#[test]
fn health_check_settings_are_checked() {
    let errs = errors(
        &EXAMPLE
            .replace("interval_ms = 1000", "interval_ms = 0")
            .replace("unhealthy_threshold = 2", "unhealthy_threshold = 0"),
    );
    assert_eq!(
        errs,
        vec![
            "service.catalog.health_check.interval_ms: must be greater than 0 (to turn checks off, set enabled = false)",
            "service.catalog.health_check.unhealthy_threshold: must be at least 1",
        ]
    );
    let c = Config::from_toml(
        &EXAMPLE.replace("healthy_threshold = 2      #", "healthy_threshold = 3 #"),
        no_env,
    )
    .unwrap();
    let hc = &c.service("catalog").unwrap().health_check;
    assert_eq!((hc.unhealthy_threshold, hc.healthy_threshold), (2, 3));
}

#[test]
fn a_grpc_health_check_needs_h2c_and_a_service_name() {
    let text = EXAMPLE.replace(
        "interval_ms = 1000",
        "interval_ms = 1000\ngrpc_service = \"feed v1\"",
    );
    assert_eq!(
        errors(&text),
        vec![
            "service.catalog.health_check.grpc_service: a gRPC health check (\"feed v1\") needs upstream_protocol = \"h2c\": gRPC runs over HTTP/2",
            "service.catalog.health_check.grpc_service: \"feed v1\" is not a gRPC service name (no spaces or control characters, at most 256 bytes)",
        ]
    );
    let text = EXAMPLE.replace(
        "interval_ms = 1000",
        "interval_ms = 1000\ngrpc_service = \"\"",
    );
    let text = text.replacen(
        "min_healthy = 0.5",
        "min_healthy = 0.5\nupstream_protocol = \"h2c\"",
        1,
    );
    let c = Config::from_toml(&text, no_env).unwrap();
    let hc = &c.service("catalog").unwrap().health_check;
    assert_eq!(hc.grpc_service.as_deref(), Some(""));
}

#[test]
fn connection_ceilings_are_checked() {
    let text = EXAMPLE.replacen(
        "[edge]\n",
        "[edge]\nmax_client_connections = 100\nmax_connections_per_client = 200\n",
        1,
    );
    assert_eq!(
        errors(&text),
        vec!["edge.max_connections_per_client: must not exceed edge.max_client_connections (100), got 200"]
    );
    let text = EXAMPLE.replacen("[edge]\n", "[edge]\nmax_client_connections = 0\n", 1);
    assert_eq!(
        errors(&text),
        vec!["edge.max_client_connections: must be at least 1"]
    );
}

#[test]
fn the_http1_server_is_the_edges_own_unless_hyper_is_named() {
    use switchyard_model::config::Http1Server;
    let c = Config::from_toml(EXAMPLE, no_env).unwrap();
    assert_eq!(c.edge.http1_server, Http1Server::Switchyard);
    let text = EXAMPLE.replacen("[edge]\n", "[edge]\nhttp1_server = \"hyper\"\n", 1);
    let c = Config::from_toml(&text, no_env).unwrap();
    assert_eq!(c.edge.http1_server, Http1Server::Hyper);
    let text = EXAMPLE.replacen("[edge]\n", "[edge]\nhttp1_server = \"nginx\"\n", 1);
    assert_eq!(
        errors(&text),
        vec!["edge.http1_server: must be \"switchyard\" or \"hyper\", got \"nginx\""]
    );
}

#[test]
fn https_control_urls_and_etcd_endpoints_are_accepted_and_tls_files_need_them() {
    let with = |edge: &str, control: &str| {
        EXAMPLE.replace("[edge]\n", &format!("[edge]\n{edge}\n"))
            + &format!("\n[control]\nlisten = \"127.0.0.1:7000\"\n{control}\n")
    };
    let ok = with(
        "control_url = [\"https://cp1.example:7000\", \"http://127.0.0.1:7000\"]\ncontrol_ca_file = \"ca.pem\"",
        "store = \"etcd:https://10.0.0.1:2379,https://10.0.0.2:2379\"\n[control.etcd_tls]\nca_file = \"etcd-ca.pem\"",
    );
    let c = Config::from_toml(&ok, no_env).unwrap();
    assert_eq!(c.edge.control_ca_file.as_deref(), Some("ca.pem"));
    assert_eq!(c.edge.control_urls[0], "https://cp1.example:7000");

    let errs = errors(&with(
        "control_url = \"ftp://cp1\"\ncontrol_ca_file = \"ca.pem\"",
        "store = \"etcd:http://10.0.0.1:2379\"\n[control.etcd_tls]\nca_file = \"etcd-ca.pem\"",
    ));
    for e in [
        "edge.control_url: must be an http:// or https:// URL, got \"ftp://cp1\"",
        "edge.control_ca_file: set, but no edge.control_url is an https:// URL",
        "control.etcd_tls: set, but the etcd endpoints are not all https:// URLs: \"etcd:http://10.0.0.1:2379\"",
    ] {
        assert!(errs.iter().any(|x| x == e), "missing {e:?} in {errs:#?}");
    }
}

#[test]
fn the_retry_buffer_and_the_access_log_are_checked() {
    let c = Config::from_toml(EXAMPLE, no_env).unwrap();
    assert_eq!(c.edge.retry_buffer_bytes, 64 * 1024);
    assert_eq!(c.edge.access_log, None);
    let text = EXAMPLE.replacen(
        "[edge]\n",
        "[edge]\nretry_buffer_bytes = 0\naccess_log = \"-\"\n",
        1,
    );
    let c = Config::from_toml(&text, no_env).unwrap();
    assert_eq!(c.edge.retry_buffer_bytes, 0);
    assert_eq!(
        c.edge.access_log,
        Some(switchyard_model::config::AccessLogTarget::Stdout)
    );
    let text = EXAMPLE.replacen(
        "[edge]\n",
        "[edge]\nretry_buffer_bytes = 17000000\naccess_log = \" \"\n",
        1,
    );
    assert_eq!(
        errors(&text),
        vec![
            "edge.retry_buffer_bytes: must be between 0 and 16777216, got 17000000",
            "edge.access_log: an empty path: leave it out for no access log, or \"-\" for standard output",
        ]
    );
}

#[test]
fn tls_listeners_and_their_certificates_come_together() {
    let zone = "edge = \"127.1.1.1:8080\"    # client traffic";
    let ok = EXAMPLE
        .replace(zone, &format!("{zone}\n  edge_tls = \"127.1.1.1:8443\""))
        .replace(
            "[[region]]\nname = \"us-east\"",
            "[edge.tls]\n[[edge.tls.certificate]]\ncert_file = \"shop.crt\"\nkey_file = \"shop.key\"\n\n[[region]]\nname = \"us-east\"",
        );
    let c = Config::from_toml(&ok, no_env).unwrap();
    let tls = c.edge.tls.as_ref().unwrap();
    assert_eq!(tls.certificates[0].cert_file, "shop.crt");
    assert_eq!(
        c.zone("us-east-a").unwrap().edge_tls,
        Some("127.1.1.1:8443".parse().unwrap())
    );
    assert_eq!(c.zone("us-east-b").unwrap().edge_tls, None);

    // A listener without certificates, a second listener on a taken address.
    let errs = errors(
        &EXAMPLE
            .replace(zone, &format!("{zone}\n  edge_tls = \"127.1.1.1:8443\""))
            .replace(
                "edge = \"127.1.2.1:8080\"",
                "edge = \"127.1.2.1:8080\"\n  edge_tls = \"127.1.2.1:9901\"",
            ),
    );
    for e in [
        "region.us-east.zone.us-east-a.edge_tls: set, but there is no [edge.tls] with the certificates to present",
        "region.us-east.zone.us-east-b.admin: duplicate address 127.1.2.1:9901 (also at region.us-east.zone.us-east-b.edge_tls)",
    ] {
        assert!(errs.iter().any(|x| x == e), "missing {e:?} in {errs:#?}");
    }

    // Certificates without a listener, and incomplete certificate entries.
    let errs = errors(&EXAMPLE.replace(
        "[[region]]\nname = \"us-east\"",
        "[edge.tls]\n[[edge.tls.certificate]]\ncert_file = \"shop.crt\"\n[[edge.tls.certificate]]\ncert_file = \"\"\nkey_file = \"api.key\"\n\n[[region]]\nname = \"us-east\"",
    ));
    assert_eq!(
        errs,
        vec![
            "edge.tls.certificate[0].key_file: required",
            "edge.tls.certificate[1].cert_file: must name a file",
            "edge.tls: set, but no zone has an edge_tls address to serve TLS on",
        ]
    );
    let errs = errors(&EXAMPLE.replace(
        "[[region]]\nname = \"us-east\"",
        "[edge.tls]\npoll_interval_ms = 5\n\n[[region]]\nname = \"us-east\"",
    ));
    assert!(errs.iter().any(|e| e
        == "edge.tls.certificate: at least one [[edge.tls.certificate]] (cert_file, key_file) is required"));
    assert!(errs
        .iter()
        .any(|e| e == "edge.tls.poll_interval_ms: must be between 100 and 3600000, got 5"));
}

#[test]
fn the_upstream_protocol_and_the_upgrade_idle_timeout_are_checked() {
    let c = Config::from_toml(EXAMPLE, no_env).unwrap();
    assert_eq!(
        c.services[0].upstream_protocol,
        switchyard_model::UpstreamProtocol::Http1
    );
    assert_eq!(
        c.edge.upgrade_idle_timeout,
        std::time::Duration::from_secs(300)
    );
    let h2c = EXAMPLE.replacen(
        "[[service]]\n",
        "[[service]]\nupstream_protocol = \"h2c\"\n",
        1,
    );
    let h2c = h2c.replacen("[edge]\n", "[edge]\nupgrade_idle_timeout_ms = 1500\n", 1);
    let c = Config::from_toml(&h2c, no_env).unwrap();
    assert_eq!(
        c.services[0].upstream_protocol,
        switchyard_model::UpstreamProtocol::H2c
    );
    assert_eq!(
        c.edge.upgrade_idle_timeout,
        std::time::Duration::from_millis(1500)
    );
    let bad = EXAMPLE.replacen(
        "[[service]]\n",
        "[[service]]\nupstream_protocol = \"h2\"\n",
        1,
    );
    let bad = bad.replacen("[edge]\n", "[edge]\nupgrade_idle_timeout_ms = 0\n", 1);
    assert_eq!(
        errors(&bad),
        vec![
            "edge.upgrade_idle_timeout_ms: must be between 100 and 3600000, got 0",
            "service.catalog.upstream_protocol: must be \"http1\" or \"h2c\", got \"h2\"",
        ]
    );
}

#[test]
fn upstream_and_peer_tls_name_every_missing_or_wrong_field() {
    let text = EXAMPLE.replacen(
        "  [service.timeouts]",
        "[service.upstream_tls]\nserver_name = \"-bad-\"\ncert_file = \"edge.crt\"\n  [service.timeouts]",
        1,
    ) + "\n[edge.peer_tls]\nca_file = \"\"\ncert_file = \"peer.crt\"\nkey_file = \"peer.key\"\nserver_name = \"10.0.0.1\"\n";
    let errs = errors(&text);
    for e in [
        "service.catalog.upstream_tls.ca_file: required",
        "service.catalog.upstream_tls.server_name: must be a DNS name or an IP address, got \"-bad-\"",
        "service.catalog.upstream_tls.key_file: required",
        "edge.peer_tls.ca_file: must name a file",
        "edge.peer_tls.server_name: must be a DNS name (it is asked for by SNI), got \"10.0.0.1\"",
        "region.us-east.zone.us-east-a.edge_tls: required with [edge.peer_tls]: peer edges forward to this TLS listener",
    ] {
        assert!(errs.iter().any(|x| x == e), "missing {e:?} in {errs:#?}");
    }
    // Unknown keys are refused like anywhere else.
    let text = EXAMPLE.replacen(
        "  [service.timeouts]",
        "[service.upstream_tls]\nca_file = \"ca.pem\"\ninsecure = true\n  [service.timeouts]",
        1,
    );
    assert!(
        errors(&text).iter().any(|e| e.contains("insecure")),
        "{:?}",
        errors(&text)
    );
}

#[test]
fn a_routes_own_timeout_replaces_the_services_total_and_caps_the_others() {
    let c = Config::from_toml(
        &EXAMPLE.replace(
            "  name = \"get-item\"\n",
            "  name = \"get-item\"\n  timeout_ms = 40\n",
        ),
        no_env,
    )
    .unwrap();
    let svc = &c.services[0];
    let get = svc.routes.iter().find(|r| r.name == "get-item").unwrap();
    assert_eq!(get.timeouts.total, Duration::from_millis(40));
    assert!(get.timeouts.connect <= get.timeouts.total);
    assert!(get.timeouts.header <= get.timeouts.total);
    let put = svc.routes.iter().find(|r| r.name == "put-item").unwrap();
    assert_eq!(put.timeouts, svc.timeouts);
    let errs = errors(&EXAMPLE.replace(
        "  name = \"get-item\"\n",
        "  name = \"get-item\"\n  timeout_ms = 0\n",
    ));
    assert_eq!(
        errs,
        vec!["service.catalog.route.get-item.timeout_ms: must be greater than 0"]
    );
}

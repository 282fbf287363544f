//! Where the edge sends traffic: own zone first, away from shifted zones, to
//! another zone on retry, and to other regions by home region or evacuation.

use std::time::Duration;

use serde_json::json;
use switchyard_model::time::now_ms;
use switchyard_testkit::{eventually, Topology};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

async fn zones_seen(edge: &switchyard_testkit::EdgeProcess, n: usize) -> Vec<String> {
    let mut v = Vec::new();
    for i in 0..n {
        let r = edge.get(&format!("/items/{i}")).send().await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        v.push(r.zone());
    }
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn each_edge_serves_from_its_own_zone() {
    let lab = Topology::new(BIN, &[("r1", &["a", "b"])]);
    let _ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    let b = lab.start_edge("b").await;
    assert!(zones_seen(&a, 20).await.iter().all(|z| z == "a"));
    assert!(zones_seen(&b, 20).await.iter().all(|z| z == "b"));
    let r = a.get("/items/1").send().await.unwrap();
    assert!(r.upstream().starts_with("r1/a/a-"), "{}", r.upstream());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shifted_zone_gets_nothing_from_any_edge_of_the_region() {
    let lab = Topology::new(BIN, &[("r1", &["a", "b", "c"])]);
    let ups = lab.start_upstreams().await;
    let edges = [
        lab.start_edge("a").await,
        lab.start_edge("b").await,
        lab.start_edge("c").await,
    ];
    let shift = json!({"version": 1, "services": {"svc": {"zones": {"a": {"weight": 0.0, "reason": "test"}}}}});
    for e in &edges {
        assert_eq!(e.put_controls(&shift).await.status, 200);
    }
    let before = ups["a-1"].requests() + ups["a-2"].requests();
    for e in &edges {
        for z in zones_seen(e, 20).await {
            assert_ne!(z, "a", "edge {} sent traffic to the shifted zone", e.zone);
        }
    }
    assert_eq!(ups["a-1"].requests() + ups["a-2"].requests(), before);
    // The shift is a lease: once it expires, zone a serves its own edge again.
    let soon = json!({"version": 2, "services": {"svc": {"zones": {"a": {"weight": 0.0, "expires_at_ms": now_ms() + 300}}}}});
    edges[0].put_controls(&soon).await;
    eventually("the expired shift ends", Duration::from_secs(5), || async {
        let z = zones_seen(&edges[0], 5).await;
        z.iter()
            .all(|z| z == "a")
            .then_some(())
            .ok_or(format!("{z:?}"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_connect_is_retried_once_in_another_zone() {
    let lab = Topology::new(BIN, &[("r1", &["a", "b"])])
        .instances_per_zone(1)
        .min_healthy(0.01);
    let mut ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    ups.get_mut("a-1").unwrap().stop().await;
    let r = a.get("/items/1").send().await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.zone(), "b");
    // A request that never reached an instance is retried whatever its
    // method: a refused connect cannot have written anything. One failure is
    // far from the five that eject a-1, so the own zone is tried first.
    let r = switchyard_testkit::Req::post(a.listen, "/items/1")
        .host("svc.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.zone(), "b");
    assert!(a
        .metrics()
        .await
        .contains("switchyard_retries_total{service=\"svc\",outcome=\"sent\"}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_answer_from_an_instance_is_retried_only_when_the_method_is_idempotent() {
    let lab = Topology::new(BIN, &[("r1", &["a", "b"])])
        .instances_per_zone(1)
        .min_healthy(0.01);
    let ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    ups["a-1"].set_status(503);
    let before = ups["b-1"].requests();
    // The POST reached a-1, which may have acted on it: not sent again.
    let r = switchyard_testkit::Req::post(a.listen, "/items/1")
        .host("svc.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.zone(), "a");
    assert_eq!(ups["b-1"].requests(), before);
    let r = a.get("/items/1").send().await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.zone(), "b");
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_go_to_their_home_region_unless_this_region_is_in_failover() {
    let lab = Topology::new(BIN, &[("r1", &["a"]), ("r2", &["b"])]);
    let _ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    let _b = lab.start_edge("b").await;
    let r = from_home(&a, "r2").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.upstream().starts_with("r2/b/"), "{}", r.upstream());
    let r = a
        .get("/items/1")
        .header("cookie", "theme=dark; x-switchyard-home-region=r2")
        .send()
        .await
        .unwrap();
    assert!(
        r.upstream().starts_with("r2/b/"),
        "cookie: {}",
        r.upstream()
    );
    let r = from_home(&a, "r1").await;
    assert!(r.upstream().starts_with("r1/a/"), "{}", r.upstream());

    a.put_controls(&json!({"services": {"svc": {"regions": {"r1": {"failover": true}}}}}))
        .await;
    let r = from_home(&a, "r2").await;
    assert!(
        r.upstream().starts_with("r1/a/"),
        "failover serves locally: {}",
        r.upstream()
    );

    // The home region being out also keeps the request here.
    a.put_controls(&json!({"services": {"svc": {"regions": {"r2": {"state": "out"}}}}}))
        .await;
    let r = from_home(&a, "r2").await;
    assert!(
        r.upstream().starts_with("r1/a/"),
        "home out: {}",
        r.upstream()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_home_being_evacuated_gets_its_share_and_marks_what_it_was_forwarded() {
    let lab = Topology::new(BIN, &[("r1", &["a"]), ("r2", &["b"])]);
    let _ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    let b = lab.start_edge("b").await;
    // r2 at a quarter: its users a DNS server sent to r1 are not all sent
    // back to r2, only the quarter r2's own edges would keep.
    a.put_controls(&json!({"services": {"svc": {"regions": {"r2": {"weight": 0.25}}}}}))
        .await;
    let n = 200;
    let mut home = 0;
    for _ in 0..n {
        let r = from_home(&a, "r2").await;
        assert_eq!(r.status, 200, "{}", r.body);
        if r.upstream().starts_with("r2/b/") {
            home += 1;
        } else {
            assert!(r.upstream().starts_with("r1/a/"), "{}", r.upstream());
        }
    }
    assert!((25..=75).contains(&home), "{home} of {n} went home");
    // b served them, but their users entered at a: b's signals say so,
    // and b has no users of its own here.
    eventually(
        "b's signals mark the requests a forwarded",
        Duration::from_secs(5),
        || async {
            let snaps = switchyard_testkit::Req::get(b.admin, "/signals/recent")
                .send()
                .await
                .unwrap()
                .json();
            let (mut fwd, mut own) = (0, 0);
            for s in snaps.as_array().unwrap() {
                for x in s["series"].as_array().unwrap() {
                    let q = x["requests"].as_u64().unwrap();
                    if x["forwarded_in"] == true {
                        fwd += q;
                    } else {
                        own += q;
                    }
                }
            }
            // a's own probes of r2 are forwarded in as well.
            (fwd >= home && own == 0)
                .then_some(())
                .ok_or(format!("forwarded in {fwd}, own {own}, sent home {home}"))
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_evacuated_region_forwards_to_the_next_one_and_never_bounces() {
    let lab = Topology::new(BIN, &[("r1", &["a"]), ("r2", &["b"])]);
    let _ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    let b = lab.start_edge("b").await;
    let out = json!({"services": {"svc": {"regions": {"r1": {"state": "out"}}}}});
    a.put_controls(&out).await;
    b.put_controls(&out).await;
    for _ in 0..10 {
        let r = a.get("/items/1").send().await.unwrap();
        assert!(r.upstream().starts_with("r2/b/"), "{}", r.upstream());
    }
    // Half-evacuated: roughly half the clients stay, each with all its
    // requests (drawn by its /24, as DNS draws it).
    a.put_controls(&json!({"services": {"svc": {"regions": {"r1": {"weight": 0.5}}}}}))
        .await;
    let mut local = 0;
    for i in 0..100 {
        let client = lab.unplaced_client_ip(i);
        let mut served = Vec::new();
        for _ in 0..2 {
            let r = a.get("/items/1").from(client).send().await.unwrap();
            served.push(r.upstream().starts_with("r1/"));
        }
        assert_eq!(served[0], served[1], "{client} was split between regions");
        local += usize::from(served[0]);
    }
    assert!(
        (25..=75).contains(&local),
        "{local} of 100 clients stayed local"
    );
    // Both regions out: serving locally beats serving nobody.
    let both =
        json!({"services": {"svc": {"regions": {"r1": {"state": "out"}, "r2": {"state": "out"}}}}});
    a.put_controls(&both).await;
    let r = a.get("/items/1").send().await.unwrap();
    assert!(r.upstream().starts_with("r1/a/"), "{}", r.upstream());
}

async fn from_home(
    edge: &switchyard_testkit::EdgeProcess,
    home: &str,
) -> switchyard_testkit::Reply {
    edge.get("/items/1")
        .header("x-switchyard-home-region", home)
        .send()
        .await
        .unwrap()
}

/// An evacuated region whose destination is down: the request goes to the
/// next region that can take it, and with none left it is served here,
/// where instances are healthy, rather than failed.
#[tokio::test(flavor = "multi_thread")]
async fn an_evacuated_region_with_its_destination_down_fails_open() {
    let lab = Topology::new(BIN, &[("r1", &["a"]), ("r2", &["b"])]);
    let _ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await; // r2's edge is never started
    a.put_controls(&json!({"services": {"svc": {"regions": {"r1": {"state": "out"}}}}}))
        .await;
    for req in [
        a.get("/items/1"),
        switchyard_testkit::Req::post(a.listen, "/items/2").host("svc.test"),
    ] {
        let r = req.send().await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r.upstream().starts_with("r1/a/"), "{}", r.upstream());
    }
    assert_eq!(a.status().await.services[0].forward_failed_open, 2);
    let m = a.metrics().await;
    assert!(
        m.contains("switchyard_forward_fallbacks_total{service=\"svc\",region=\"r1\"} 2"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forward_whose_region_is_down_goes_to_the_next_region() {
    let lab = Topology::new(BIN, &[("r1", &["a"]), ("r2", &["b"]), ("r3", &["c"])]);
    let _ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    let _c = lab.start_edge("c").await; // r2's edge is never started
    a.put_controls(&json!({"services": {"svc": {"regions": {"r1": {"state": "out"}}}}}))
        .await;
    let r = a.get("/items/1").send().await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.upstream().starts_with("r3/c/"), "{}", r.upstream());
    assert_eq!(a.status().await.services[0].forward_failed_open, 0);
    assert!(a
        .metrics()
        .await
        .contains("switchyard_forward_fallbacks_total{service=\"svc\",region=\"r3\"} 1"));
}

/// `x-switchyard-forwarded` is the edges' own word, authenticated by the
/// deployment's forward secret: a client that sends it to an evacuated
/// region is still forwarded, while a real forward is believed (and served
/// where it lands even when that edge's controls lag behind).
#[tokio::test(flavor = "multi_thread")]
async fn a_client_cannot_claim_its_request_was_forwarded() {
    let lab = Topology::new(BIN, &[("r1", &["a"]), ("r2", &["b"])]);
    let ups = lab.start_upstreams().await;
    let a = lab.start_edge("a").await;
    let b = lab.start_edge("b").await;
    a.put_controls(&json!({"services": {"svc": {"regions": {"r1": {"state": "out"}}}}}))
        .await;
    let forged: [&[(&str, &str)]; 3] = [
        &[("x-switchyard-forwarded", "r2")],
        &[
            ("x-switchyard-forwarded", "r2"),
            ("x-switchyard-forward-auth", "a-guess-at-the-secret"),
        ],
        &[
            ("x-switchyard-forwarded", "r1"),
            ("x-switchyard-forward-auth", ""),
        ],
    ];
    for headers in forged {
        let mut req = a.get("/items/1");
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(
            r.upstream().starts_with("r2/b/"),
            "{headers:?} was served in the evacuated region: {}",
            r.upstream()
        );
    }
    // b's controls lag: it still thinks r2 should go to r1. The real forward
    // from a carries the secret, so b serves it instead of bouncing it back.
    b.put_controls(&json!({"services": {"svc": {"regions": {"r2": {"state": "out"}}}}}))
        .await;
    let r = a.get("/items/1").send().await.unwrap();
    assert!(r.upstream().starts_with("r2/b/"), "{}", r.upstream());
    // A client claiming the same at b is steered like any client: to r1.
    let r = b
        .get("/items/1")
        .header("x-switchyard-forwarded", "r1")
        .send()
        .await
        .unwrap();
    assert!(r.upstream().starts_with("r1/a/"), "{}", r.upstream());
    // No instance ever sees an internal header, the secret least of all.
    for u in ups.values() {
        for h in ["x-switchyard-forward-auth", "x-switchyard-forwarded"] {
            assert_eq!(u.last_header(h), None, "{h} reached an instance");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_routes_own_timeout_holds_its_requests_alone() {
    let lab = Topology::new(BIN, &[("r1", &["a"])]).route_toml("get-item", "timeout_ms = 40");
    let ups = lab.start_upstreams().await;
    // Slow, but well within the service's timeouts (and its health
    // checks'): only a route timeout can turn this into a 504.
    for u in ups.values() {
        u.set_delay(Duration::from_millis(400));
    }
    let a = lab.start_edge("a").await;
    let r = a.get("/items/1").send().await.unwrap();
    assert_eq!(r.status, 504, "cut at the route's 40 ms: {}", r.body);
    // The service's timeouts still hold for its other routes.
    let r = a.get("/recommendations").send().await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
}

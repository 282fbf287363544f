//! The lab's fault knobs on real processes: one catalog instance made slow
//! and failing while its health check stays green, one paused and resumed,
//! and a store that turns away a share of writes and slows down — each as a
//! drill step would use it, through the `switchyard lab …` processes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode};
use switchyard_lab::catalog::{self, InstanceFault};
use switchyard_lab::http::{call, CallError};
use switchyard_lab::procs::{wait_listening, Supervisor};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// A store and one catalog instance in front of it, on addresses of their
/// own (`127.9n.…`, away from the lab's plan), so tests may run side by side.
struct Pair {
    procs: Supervisor,
    store: SocketAddr,
    instance: SocketAddr,
    _dir: tempfile::TempDir,
}

async fn start(n: u8) -> Pair {
    let dir = tempfile::tempdir().unwrap();
    let store: SocketAddr = format!("127.9{n}.0.10:7001").parse().unwrap();
    let instance: SocketAddr = format!("127.9{n}.1.11:8081").parse().unwrap();
    let mut procs = Supervisor::new(BIN.as_ref(), &dir.path().join("logs")).unwrap();
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    procs
        .start(
            "store",
            args(&[
                "lab",
                "store",
                "--listen",
                &store.to_string(),
                "--region",
                "r",
            ]),
        )
        .unwrap();
    procs
        .start(
            "i-1",
            args(&[
                "lab",
                "catalog",
                "--listen",
                &instance.to_string(),
                "--name",
                "i-1",
                "--zone",
                "z",
                "--store",
                &store.to_string(),
            ]),
        )
        .unwrap();
    for a in [store, instance] {
        wait_listening(a, Duration::from_secs(10)).await.unwrap();
    }
    Pair {
        procs,
        store,
        instance,
        _dir: dir,
    }
}

/// One request; its status, body and how long it took.
async fn timed(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: &str,
) -> (StatusCode, String, Duration) {
    let t = Instant::now();
    let (s, b) = call(
        addr,
        method,
        path,
        Bytes::from(body.to_string()),
        Duration::from_secs(3),
    )
    .await
    .unwrap_or_else(|e| panic!("{path}: {e}"));
    (s, String::from_utf8_lossy(&b).into_owned(), t.elapsed())
}

#[tokio::test]
async fn one_instance_is_slow_and_failing_while_its_health_stays_green() {
    let p = start(1).await;
    let (s, _, _) = timed(p.instance, Method::PUT, "/items/a", "x").await;
    assert_eq!(s, StatusCode::OK);

    let view = catalog::set_fault(
        p.instance,
        &InstanceFault {
            delay_ms: 300,
            jitter_ms: 50,
            error_status: 503,
            error_percent: 100.0,
        },
    )
    .await
    .unwrap();
    assert_eq!(view.fault.delay_ms, 300);

    let (s, body, took) = timed(p.instance, Method::GET, "/items/a", "").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("injected_fault"), "{body}");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(1000),
        "{took:?}"
    );
    // The heartbeats take the route's real path, so they see the fault...
    let (s, _, _) = timed(p.instance, Method::GET, "/heartbeat/get-item", "").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    // ...and the health check does not: a gray failure.
    let (s, _, took) = timed(p.instance, Method::GET, "/health", "").await;
    assert_eq!(s, StatusCode::OK);
    assert!(took < Duration::from_millis(200), "{took:?}");

    // A share of errors is a share, not all or nothing.
    catalog::set_fault(
        p.instance,
        &InstanceFault {
            error_percent: 30.0,
            ..InstanceFault::default()
        },
    )
    .await
    .unwrap();
    let mut failed = 0;
    for _ in 0..300 {
        let (s, _, _) = timed(p.instance, Method::GET, "/items/a", "").await;
        if s == StatusCode::INTERNAL_SERVER_ERROR {
            failed += 1;
        } else {
            assert_eq!(s, StatusCode::OK);
        }
    }
    assert!((45..=135).contains(&failed), "{failed} of 300 at 30 %");

    let view = catalog::set_fault(p.instance, &InstanceFault::default())
        .await
        .unwrap();
    assert!(view.delayed_total >= 2, "{view:?}");
    assert_eq!(view.errors_total, 2 + failed, "{view:?}");
    let (s, _, took) = timed(p.instance, Method::GET, "/items/a", "").await;
    assert_eq!(s, StatusCode::OK);
    assert!(took < Duration::from_millis(200), "{took:?}");
    assert_eq!(
        catalog::fault_view(p.instance).await.unwrap().fault,
        InstanceFault::default()
    );
}

#[tokio::test]
async fn the_instance_knob_wants_the_token_and_sane_values() {
    let p = start(2).await;
    // Users reach instances through the edges; the knob is not theirs.
    let (s, _, _) = timed(p.instance, Method::POST, catalog::FAULTS_PATH, "{}").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let e = catalog::set_fault(
        p.instance,
        &InstanceFault {
            error_percent: 150.0,
            delay_ms: 90_000,
            ..InstanceFault::default()
        },
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("400"), "{e}");
    assert!(
        e.contains("error_percent: a percentage between 0 and 100, got 150"),
        "{e}"
    );
    assert!(e.contains("delay_ms: at most 60000, got 90000"), "{e}");
}

#[tokio::test]
async fn a_paused_instance_answers_nothing_until_resumed() {
    let mut p = start(3).await;
    p.procs.pause("i-1").unwrap();
    let r = call(
        p.instance,
        Method::GET,
        "/health",
        Bytes::new(),
        Duration::from_millis(500),
    )
    .await;
    // The kernel still accepts the connection; the process never answers.
    assert!(matches!(r, Err(CallError::Timeout(..))), "{r:?}");
    assert!(p.procs.is_running("i-1"), "paused, not dead");
    p.procs.resume("i-1").unwrap();
    let (s, _, _) = timed(p.instance, Method::GET, "/health", "").await;
    assert_eq!(s, StatusCode::OK);
    assert!(p.procs.pause("nobody").is_err());
}

#[tokio::test]
async fn a_store_turns_away_a_share_of_writes_and_slows_down() {
    let p = start(4).await;
    let knob = |body: &'static str| timed(p.store, Method::POST, "/admin/writes", body);
    let (s, _, _) = knob(r#"{"reject_percent": 50}"#).await;
    assert_eq!(s, StatusCode::OK);
    let mut rejected = 0;
    for i in 0..200 {
        let (s, _, _) = timed(p.store, Method::PUT, &format!("/kv/k{i}"), "v").await;
        if s == StatusCode::SERVICE_UNAVAILABLE {
            rejected += 1;
        } else {
            assert_eq!(s, StatusCode::OK);
        }
    }
    assert!((60..=140).contains(&rejected), "{rejected} of 200 at 50 %");
    // Reads never fail for it.
    let (s, _, _) = timed(p.store, Method::GET, "/kv/missing", "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, body, _) = timed(p.store, Method::GET, "/replication", "").await;
    let r: switchyard_lab::store::Replication = serde_json::from_str(&body).unwrap();
    assert!(r.rejecting_writes && r.reject_percent == 50.0, "{r:?}");
    assert_eq!(r.writes_rejected_total, rejected);

    // `reject = true` is still every write; a contradiction is refused.
    let (s, body, _) = knob(r#"{"reject": true, "reject_percent": 20}"#).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(body.contains("contradicts reject = true"), "{body}");
    knob(r#"{"reject": true}"#).await;
    let (s, _, _) = timed(p.store, Method::PUT, "/kv/a", "v").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    knob(r#"{"reject": false}"#).await;

    // Latency on writes only: reads stay fast.
    let (s, _, _) = timed(
        p.store,
        Method::POST,
        "/admin/latency",
        r#"{"delay_ms": 250, "writes_only": true}"#,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, took) = timed(p.store, Method::PUT, "/kv/a", "v").await;
    assert_eq!(s, StatusCode::OK);
    assert!(took >= Duration::from_millis(250), "{took:?}");
    let (s, _, took) = timed(p.store, Method::GET, "/kv/a", "").await;
    assert_eq!(s, StatusCode::OK);
    assert!(took < Duration::from_millis(200), "{took:?}");
    // Through the instance, the slow store is what users of writes feel.
    let (s, _, took) = timed(p.instance, Method::PUT, "/items/b", "v").await;
    assert_eq!(s, StatusCode::OK);
    assert!(took >= Duration::from_millis(250), "{took:?}");
    let (s, body, _) = timed(
        p.store,
        Method::POST,
        "/admin/latency",
        r#"{"delay_ms": 70000}"#,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        body.contains("delay_ms: at most 60000, got 70000"),
        "{body}"
    );
}

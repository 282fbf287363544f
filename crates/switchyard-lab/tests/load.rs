//! The load generator stays open-loop against a slow server, and its counts
//! match what the server saw.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use switchyard_lab::load::{run_group, Group, Recorder};
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_server_never_lowers_the_offered_rate() {
    let l = tokio::net::TcpListener::bind("127.78.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let served = Arc::new(AtomicU64::new(0));
    let s2 = served.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = l.accept().await.unwrap();
            let served = s2.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req| {
                    let served = served.clone();
                    async move {
                        tokio::time::sleep(Duration::from_millis(400)).await;
                        served.fetch_add(1, Ordering::Relaxed);
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(
                            b"ok",
                        ))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let rec = Recorder::new(Instant::now());
    let stop = Arc::new(AtomicBool::new(false));
    let g = Group {
        name: "g".into(),
        source: "127.200.9.1".parse().unwrap(),
        region: "r1".into(),
        edges: vec![addr],
        dns: None,
        region_of: Arc::new([(addr.ip(), "r1".to_string())].into()),
        zone_of: Arc::new([(addr.ip(), "r1-a".to_string())].into()),
        host: "x".into(),
        home: None,
        rate: 50.0,
        write_percent: 0.0,
        timeout: Duration::from_secs(5),
    };
    let task = tokio::spawn(run_group(g, rec.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    // After two seconds at 50/s, ~100 requests have left even though each
    // takes 400 ms: a closed loop on few connections would have sent far fewer.
    let sent = rec.sent();
    assert!((95..=102).contains(&sent), "sent {sent}");
    stop.store(true, Ordering::Relaxed);
    task.await.unwrap();
    let timeline = rec.timeline(3);
    let recorded: u64 = timeline.iter().map(|s| s.requests).sum();
    assert_eq!(recorded, rec.sent());
    assert_eq!(
        served.load(Ordering::Relaxed),
        rec.sent(),
        "the server saw every request"
    );
    assert_eq!(timeline.iter().map(|s| s.failures).sum::<u64>(), 0);
    assert!(
        timeline[0].p99_ms >= 400.0,
        "latency includes the server's delay: {:?}",
        timeline[0]
    );
    assert_eq!(timeline[0].regions["r1"].requests, timeline[0].requests);
    assert_eq!(
        timeline[0].entered["g"]["r1"], timeline[0].requests,
        "every request entered the region of the edge it was sent to"
    );
    assert_eq!(
        timeline[0].zones["none"].requests, timeline[0].requests,
        "no edge header: served by no known zone"
    );
}
